"""Serve an emulator on a given port, for the local stack (`make start`, `make start-aux-services`):

    python -m emulators seek --port 3000 --jenkins-url http://127.0.0.1:8080/
    python -m emulators jenkins --port 8080
    python -m emulators oidc --port 9000 --client-id lm --client-secret s3cret \
        --redirect-uri http://127.0.0.1:8000/oauth2/authorized/lsaai

`seek` is the WorkflowHub emulator with the catalogue of LifeMonitor's test instance, its
crates' Jenkins test instances (`http://jenkins:8080/` in the fixtures, the compose service)
pointed at `--jenkins-url`, plus workflow 25 whose instance runs the failing job. `jenkins`
is the Jenkins emulator with the recorded jobs plus `job/test` (passing: the job workflow 21
names) and `job/failing`. `oidc` is LifeScience Login (LS AAI) as an OpenID Connect provider
(run by hand: `make start` does not), issuer `<its URL>/oidc/` (set `LM_LSAAI_ISSUER` to it),
with one client registered (its id, secret and redirect URIs from the options); its people
sign in as `jdoe` or `sam`, password `lsaai-emulator`. All run until SIGTERM or SIGINT.
Standard library only, but for `oidc`'s RSA keys (`cryptography`, authlib's dependency).
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import sys
import threading
import zipfile
from urllib.parse import urlsplit

from emulators.base import Emulator
from emulators.jenkins import JenkinsEmulator
from emulators.oidc import OIDCEmulator
from emulators.seek import DOWNLOAD, WorkflowHubEmulator, build_minimal_crate

#: The host the fixtures' crates name for Jenkins (the compose service of LifeMonitor's tests).
FIXTURE_JENKINS_HOST = "jenkins"
PASSING_JOB = "job/test"
FAILING_JOB = "job/failing"
PASSING_WORKFLOW_ID = "21"
FAILING_WORKFLOW_ID = "25"
METADATA_NAMES = ("ro-crate-metadata.json", "ro-crate-metadata.jsonld")


def point_instances_at(crate: bytes, jenkins_url: str, host: str = FIXTURE_JENKINS_HOST) -> bytes:
    """The crate zip with every test instance whose URL is on `host` moved to `jenkins_url`
    (other members copied unchanged). A crate with nothing to change comes back as is."""
    src = zipfile.ZipFile(io.BytesIO(crate))
    changed = False
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename in METADATA_NAMES:
                metadata = json.loads(data)
                for entity in metadata.get("@graph", []):
                    url = entity.get("url")
                    is_instance = "TestInstance" in str(entity.get("@type"))
                    if is_instance and isinstance(url, str) and urlsplit(url).hostname == host:
                        entity["url"] = jenkins_url.rstrip("/") + "/"
                        changed = True
                data = json.dumps(metadata, indent=2).encode()
            dst.writestr(info, data)
    return out.getvalue() if changed else crate


def local_workflowhub(jenkins_url: str) -> WorkflowHubEmulator:
    """The WorkflowHub of the local stack (not started)."""
    seek = WorkflowHubEmulator()
    if not seek.has_real_fixtures:
        # Without the shared fixtures, still the workflow the guide submits: 21, version 1,
        # tested by the passing job (a generated crate of the same shape).
        seek.add_workflow(
            PASSING_WORKFLOW_ID,
            "sort-and-change-case",
            build_minimal_crate(
                "sort-and-change-case",
                service="jenkins",
                instance_url=jenkins_url.rstrip("/") + "/",
                resource=PASSING_JOB + "/",
            ),
            access=DOWNLOAD,
        )
    for wf in list(seek.workflows.values()):
        for version in wf.versions:
            seek.set_crate(wf.id, version, point_instances_at(wf.crate(version), jenkins_url))
    seek.add_workflow(
        FAILING_WORKFLOW_ID,
        "sort-and-change-case-failing",
        build_minimal_crate(
            "sort-and-change-case-failing",
            service="jenkins",
            instance_url=jenkins_url.rstrip("/") + "/",
            resource=FAILING_JOB + "/",
        ),
        access=DOWNLOAD,
    )
    return seek


def local_jenkins() -> JenkinsEmulator:
    """The Jenkins of the local stack (not started): the recorded jobs plus one passing and
    one failing job."""
    jenkins = JenkinsEmulator()
    jenkins.set_builds(PASSING_JOB, [{"result": "SUCCESS"}, {"result": "SUCCESS"}])
    jenkins.set_builds(FAILING_JOB, [{"result": "FAILURE"}, {"result": "SUCCESS"}])
    return jenkins


def local_oidc(client_id: str, client_secret: str, redirect_uris: list[str]) -> OIDCEmulator:
    """The LifeScience Login of the local stack (not started), LifeMonitor's client on it."""
    oidc = OIDCEmulator()
    oidc.register_oauth_app(redirect_uris, client_id=client_id, client_secret=client_secret)
    return oidc


def serve(emulator: Emulator, host: str, port: int, name: str) -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        emulator.start(port=port, host=host)
    except OSError as exc:
        print(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"{name} emulator on {emulator.url}", flush=True)
    stop.wait()
    emulator.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators", description=__doc__.split("\n")[0])
    parser.add_argument("service", choices=("seek", "jenkins", "oidc"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--jenkins-url", default="http://127.0.0.1:8080/", help="seek: where test instances point"
    )
    parser.add_argument("--client-id", default="lm-lsaai-client", help="oidc: our client's id")
    parser.add_argument(
        "--client-secret", default="lm-lsaai-secret", help="oidc: our client's secret"
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        help="oidc: a redirect URI of our client (repeatable; default: "
        "http://127.0.0.1:8000/oauth2/authorized/lsaai)",
    )
    args = parser.parse_args(argv)
    if args.service == "seek":
        return serve(local_workflowhub(args.jenkins_url), args.host, args.port, "WorkflowHub")
    if args.service == "oidc":
        uris = args.redirect_uri or ["http://127.0.0.1:8000/oauth2/authorized/lsaai"]
        oidc = local_oidc(args.client_id, args.client_secret, uris)
        return serve(oidc, args.host, args.port, "OpenID Connect (LS AAI)")
    return serve(local_jenkins(), args.host, args.port, "Jenkins")


if __name__ == "__main__":
    sys.exit(main())
