"""Submission benchmark (issue 9, defect 7): time to register a crate of N test suites of
one instance each, through the API (Chalice test client), on PostgreSQL.

    python bench/submission.py [--suites 250,1000,2000] [--database-url postgresql://...]

Writing a submission should be linear in its size; before the bulk inserts it was
quadratic (250 suites 11.5 s, 1,000 64 s, 2,000 108 s in the attack run). The size limits
are lifted for the run (LM_MAX_SUITES_PER_CRATE / LM_MAX_INSTANCES_PER_CRATE).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRATCH_DB = f"lm_bench_submission_{os.getpid()}"


def crate_with_suites(count: int) -> bytes:
    """A Workflow Testing RO-Crate whose one suite is repeated `count` times."""
    from emulators.crates import with_suites, wtroc_metadata, zip_crate

    return zip_crate(with_suites(wtroc_metadata(name="big"), count))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suites", default="250,1000,2000")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    sizes = [int(s) for s in args.suites.split(",")]

    from devtools.postgres import find_postgres

    if args.database_url:
        os.environ["TEST_DATABASE_URL"] = args.database_url
    server = find_postgres()
    if server is None:
        sys.exit("bench/submission.py needs PostgreSQL (none found)")
    url = server.create_database(SCRATCH_DB)
    from devtools.bench import service_environment

    service_environment(
        url,
        LM_MAX_SUITES_PER_CRATE=str(max(sizes)),
        LM_MAX_INSTANCES_PER_CRATE=str(max(sizes)),
    )
    from chalice.test import Client

    import app as app_module
    from chalicelib import logs, migrate

    # The test client applies .chalice/config.json's LOG_LEVEL=INFO inside each request:
    # configure the (once per process) logging first, at WARNING.
    logs.configure("WARNING")
    from chalicelib.auth import apikeys
    from chalicelib.db import dispose_engines, session_scope
    from chalicelib.services import users

    migrate.upgrade("head")
    with session_scope() as s:
        key = apikeys.create(s, users.create_user(s, "bench", password="x" * 12)).key
    results = []
    try:
        with Client(app_module.app, stage_name="dev", project_dir=str(ROOT)) as client:
            for n in sizes:
                body = json.dumps(
                    {
                        "version": "1",
                        "name": f"big{n}",
                        "rocrate": base64.b64encode(crate_with_suites(n)).decode(),
                    }
                )
                t0 = time.perf_counter()
                r = client.http.post(
                    "/users/current/workflows",
                    body=body,
                    headers={"ApiKey": key, "Content-Type": "application/json"},
                )
                seconds = time.perf_counter() - t0
                if r.status_code != 201:
                    sys.exit(f"{n} suites: {r.status_code} {r.body[:300]!r}")
                results.append((n, seconds))
                print(
                    f"  {n:>5} suites of one instance: {seconds:7.2f} s "
                    f"({seconds / n * 1000:.2f} ms per suite)",
                    flush=True,
                )
    finally:
        dispose_engines()
        server.drop_database(SCRATCH_DB)
        server.stop()
    first, last = results[0], results[-1]
    growth = (last[1] / first[1]) / (last[0] / first[0])
    print(
        f"submission of {last[0]} suites: {last[1]:.2f} s "
        f"(time per suite x{growth:.2f} from {first[0]} suites; 1.0 = linear)"
    )


if __name__ == "__main__":
    main()
