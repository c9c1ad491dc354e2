"""Helpers for notification tests: a public workflow whose one test instance runs on an
emulated Jenkins job, builds scripted step by step and refreshed as the worker would."""

from __future__ import annotations

from dataclasses import dataclass

from emulators.crates import wtroc_metadata, zip_crate
from tests.support import api_data

RESULTS = {"pass": "SUCCESS", "fail": "FAILURE", "running": None}


@dataclass
class JenkinsWorkflow:
    uuid: str
    instance_uuid: str
    instance_id: int
    jenkins: object
    job: str
    history: list  # scripted builds so far, oldest first

    def step(self, outcome: str) -> dict:
        """A new build with this outcome appears on the CI; the instance is refreshed."""
        from chalicelib.jobs import refresh

        self.history.append(outcome)
        specs = []
        for result in reversed(self.history):  # newest first
            if result == "running":
                specs.append({"building": True})
            else:
                specs.append({"result": RESULTS[result]})
        self.jenkins.set_builds(self.job, specs)
        return refresh.process_batch([self.instance_id])


def jenkins_workflow(client, owner, jenkins, name: str, *, public: bool = True) -> JenkinsWorkflow:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    job = f"job/{name}"
    data = zip_crate(wtroc_metadata(name=name, instances=[("jenkins", jenkins.url, job)]))
    body = {"rocrate": api_data.b64(data), "version": "1", "public": public}
    r = api_data.submit(client, owner, body)
    assert r.status_code == 201, r.body
    wf = r.json_body["uuid"]
    [instance_uuid] = api_data.instance_uuids(wf)
    with session_scope() as s:
        instance_id = s.query(TestInstance.id).filter_by(uuid=instance_uuid).scalar()
    return JenkinsWorkflow(wf, instance_uuid, instance_id, jenkins, job, [])


def verify_email(user_id: int) -> None:
    from chalicelib.db import session_scope
    from chalicelib.models import User

    with session_scope() as s:
        s.get(User, user_id).email_verified = True
