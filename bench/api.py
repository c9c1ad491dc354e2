"""Read-path benchmark: latency and SQL queries per request as the catalogue grows.

Seeds N = 100, 1,000 and 10,000 workflows (each: 2 versions, 2 suites per version,
2 instances per suite, 20 builds per instance) in PostgreSQL with set-based SQL, then
calls the API in-process (Chalice test client, middleware and auth included) and prints,
per endpoint and N, p50/p95 latency and the number of SQL statements per request.

    python bench/api.py [--sizes 100,1000,10000] [--database-url postgresql://...]

The database comes from --database-url, TEST_DATABASE_URL, or the local server; a scratch
database `lm_bench_api_<pid>` is created and dropped (concurrent runs never share one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED_SQL = [
    # workflows numbered from :start to :stop
    """INSERT INTO workflows (uuid, name, public, created, modified)
       SELECT gen_random_uuid()::text, 'wf-' || g, (g %% 2 = 0), now(), now()
       FROM generate_series(CAST(:start AS integer), CAST(:stop AS integer)) g""",
    """INSERT INTO workflow_versions (uuid, workflow_id, version, name, authors, created,
                                     modified, crate_origin)
       SELECT gen_random_uuid()::text, w.id, v::text, w.name, '[]',
              now() - (3 - v) * interval '1 day', now(), 'local file uploaded'
       FROM workflows w CROSS JOIN generate_series(1, 2) v WHERE w.id > :last_wf""",
    """INSERT INTO registry_workflow_versions (registry_id, workflow_version_id, identifier,
                                              created, modified)
       SELECT :registry_id, v.id, v.workflow_id::text, now(), now()
       FROM workflow_versions v WHERE v.workflow_id > :last_wf""",
    """INSERT INTO test_suites (uuid, workflow_version_id, roc_suite, name, created, modified)
       SELECT gen_random_uuid()::text, v.id, '#suite' || s, 'suite' || s, now(), now()
       FROM workflow_versions v CROSS JOIN generate_series(1, 2) s
       WHERE v.workflow_id > :last_wf""",
    """INSERT INTO test_instances (uuid, suite_id, roc_instance, name, resource, managed,
                                  testing_service_id, parameters, consecutive_errors,
                                  created, modified)
       SELECT gen_random_uuid()::text, s.id, '#inst' || i, 'inst' || i,
              'job/j' || s.id || '_' || i, false, :service_id, '{}', 0, now(), now()
       FROM test_suites s JOIN workflow_versions v ON v.id = s.workflow_version_id
       CROSS JOIN generate_series(1, 2) i WHERE v.workflow_id > :last_wf""",
    """INSERT INTO builds (instance_id, build_id, status, started_at, duration, url, links,
                          created, modified)
       SELECT t.id, b::text,
              (ARRAY['passed', 'failed', 'running', 'error', 'aborted'])[1 + (t.id + b) %% 5],
              now() - (21 - b) * interval '1 hour', 60 + b, 'http://ci.example/' || b, '{}',
              now(), now()
       FROM test_instances t CROSS JOIN generate_series(1, 20) b
       WHERE t.id > :last_instance""",
    # The denormalised pointers, as the refresh job maintains them.
    """WITH ranked AS (
         SELECT id, instance_id, status,
                row_number() OVER (PARTITION BY instance_id ORDER BY started_at DESC, id DESC) rn
         FROM builds WHERE instance_id > :last_instance),
       agg AS (
         SELECT instance_id,
                (array_agg(id ORDER BY rn))[1] AS latest,
                (array_agg(id ORDER BY rn) FILTER (
                   WHERE rn <= 10 AND status IN ('passed', 'failed', 'error')))[1] AS completed
         FROM ranked GROUP BY instance_id)
       UPDATE test_instances t SET latest_build_id = agg.latest,
                                   last_completed_build_id = agg.completed
       FROM agg WHERE agg.instance_id = t.id""",
]


SCRATCH_DB = f"lm_bench_api_{os.getpid()}"


def database_url(arg: str | None) -> tuple[str, object]:
    from devtools.postgres import find_postgres

    if arg:
        os.environ["TEST_DATABASE_URL"] = arg
    server = find_postgres()
    if server is None:
        sys.exit("bench/api.py needs PostgreSQL (none found)")
    return server.create_database(SCRATCH_DB), server


def seed(engine, start: int, stop: int, registry_id: int, service_id: int) -> float:
    from sqlalchemy import text

    began = time.perf_counter()
    with engine.begin() as conn:
        last_wf = conn.execute(text("SELECT coalesce(max(id), 0) FROM workflows")).scalar()
        last_instance = conn.execute(
            text("SELECT coalesce(max(id), 0) FROM test_instances")
        ).scalar()
        params = {
            "start": start,
            "stop": stop,
            "registry_id": registry_id,
            "service_id": service_id,
            "last_wf": last_wf,
            "last_instance": last_instance,
        }
        for sql in SEED_SQL:
            conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - began


class QueryCounter:
    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.count = 0
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, *args, **kwargs) -> None:
        self.count += 1


STATUSES = {"all_passing", "some_passing", "all_failing", "not_available"}


def _status_ok(status) -> bool:
    return (
        isinstance(status, dict)
        and status.get("aggregate_test_status") in STATUSES
        and isinstance(status.get("latest_builds"), list)
        and all("build_id" in b and "instance" in b for b in status["latest_builds"])
    )


def list_shape(count: int, versions: bool):
    """A list of `count` workflows, each with a status (and both versions with theirs)."""

    def check(body) -> bool:
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or len(items) != count:
            return False
        for item in items:
            if not (isinstance(item.get("uuid"), str) and _status_ok(item.get("status"))):
                return False
            if versions and not (
                len(item.get("versions") or []) == 2
                and all(_status_ok(v.get("status")) for v in item["versions"])
            ):
                return False
        return True

    return check


def page_shape(limit: int, total: int):
    """The first page of `limit` items (of `total`), with a `next` link when more follow."""

    def check(body) -> bool:
        items = body.get("items") if isinstance(body, dict) else None
        more = "cursor=" in (body.get("links") or {}).get("next", "")
        return (
            isinstance(items, list)
            and len(items) == min(limit, total)
            and all(_status_ok(i.get("status")) for i in items)
            and more == (total > limit)
        )

    return check


def keys_shape(*keys: str):
    def check(body) -> bool:
        return isinstance(body, dict) and all(k in body for k in keys)

    return check


class BadResponse(Exception):
    pass


def measure(client, path: str, headers: dict, counter: QueryCounter, runs: int, shape):
    """p50, p95 and statements of `runs` timed requests; each response's status and body
    shape are checked (outside the timed window) before it counts."""
    import json

    for _ in range(min(runs, 50)):  # warm caches, lazy imports, the specialising interpreter
        client.http.get(path, headers=headers)
    times, queries = [], []
    for _ in range(runs):
        before = counter.count
        t0 = time.perf_counter()
        r = client.http.get(path, headers=headers)
        elapsed = (time.perf_counter() - t0) * 1000
        spent = counter.count - before
        if r.status_code != 200 or not shape(json.loads(r.body)):
            raise BadResponse(f"{path}: {r.status_code} {r.body[:300]!r}")
        times.append(elapsed)
        queries.append(spent)
    times.sort()
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    return statistics.median(times), p95, max(queries)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    url, server = database_url(args.database_url)
    from devtools.bench import service_environment

    service_environment(url)
    from chalice.test import Client
    from sqlalchemy import text

    import app as app_module
    from chalicelib import logs, migrate

    # The test client applies .chalice/config.json's LOG_LEVEL=INFO inside each request;
    # configure the (once per process) logging first, at the level asked for above.
    logs.configure("WARNING")
    from chalicelib.auth import scopes as S
    from chalicelib.db import get_engine, session_scope
    from chalicelib.services import registries, status_upkeep
    from chalicelib.services.submission import testing_service

    migrate.upgrade("head")
    engine = get_engine()
    with session_scope() as s:
        creds = registries.add_registry(
            s,
            name="bench",
            type="seek",
            client_id="x",
            client_secret="y",  # noqa: S106
            api_url="https://workflowhub.example",
        )
        registry_id = creds.registry.id
        service_id = testing_service(s, "jenkins", "https://ci.example").id
    counter = QueryCounter(engine)
    rows = []
    checks = []
    done = 0
    try:
        with Client(app_module.app, stage_name="dev", project_dir=str(ROOT)) as client:
            from urllib.parse import urlencode

            r = client.http.post(
                "/oauth2/token",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                body=urlencode(
                    {
                        "grant_type": "client_credentials",
                        "client_id": creds.client_id,
                        "client_secret": creds.client_secret,
                        "scope": S.WORKFLOWHUB_REQUEST,
                    }
                ).encode(),
            )
            token = r.json_body["access_token"]
            registry_headers = {"Authorization": f"Bearer {token}"}
            for n in sizes:
                seconds = seed(engine, done + 1, n, registry_id, service_id)
                with engine.connect() as conn:
                    builds = conn.execute(text("SELECT count(*) FROM builds")).scalar()
                print(f"N={n}: seeded in {seconds:.1f} s ({builds} builds)", flush=True)
                # The seed writes builds and pointers with plain SQL: store the statuses
                # as the write paths would have, then check every stored one.
                t0 = time.perf_counter()
                with session_scope() as s:
                    status_upkeep.recompute_all(s)
                upkeep = time.perf_counter() - t0
                with engine.begin() as conn:  # the seed's ANALYZE saw no stored status yet
                    conn.execute(text("ANALYZE workflow_versions"))
                with session_scope() as s:
                    wrong = status_upkeep.mismatches(s)
                    counts = s.execute(
                        text(
                            "SELECT (SELECT count(*) FROM workflow_versions), "
                            "(SELECT count(*) FROM test_suites), "
                            "(SELECT count(*) FROM workflows WHERE public)"
                        )
                    ).one()
                checks.append((n, counts, wrong))
                print(
                    f"N={n}: stored statuses written in {upkeep:.1f} s; stored = computed "
                    f"for {counts[0]} versions and {counts[1]} suites: "
                    f"{'yes' if not wrong else 'NO ' + '; '.join(wrong[:5])}",
                    flush=True,
                )
                done = n
                with engine.connect() as conn:
                    wf_uuid = conn.execute(
                        text("SELECT uuid FROM workflows WHERE public ORDER BY id LIMIT 1")
                    ).scalar()
                    suite_uuid, inst_uuid = conn.execute(
                        text(
                            "SELECT s.uuid, t.uuid FROM test_instances t JOIN test_suites s "
                            "ON s.id = t.suite_id JOIN workflow_versions v "
                            "ON v.id = s.workflow_version_id "
                            "JOIN workflows w ON w.id = v.workflow_id "
                            "WHERE w.public ORDER BY t.id LIMIT 1"
                        )
                    ).one()
                    builds = conn.execute(text("SELECT count(*) FROM builds")).scalar()
                big = 3 if n >= 10000 else 10
                endpoints = [
                    (
                        "/registries/current/workflows?status=true&versions=true",
                        registry_headers,
                        big,
                        list_shape(n, versions=True),
                    ),
                    (
                        "/registries/current/workflows?status=true&versions=true&limit=100",
                        registry_headers,
                        50,
                        page_shape(100, n),
                    ),
                    ("/workflows?status=true", {}, big, list_shape(counts[2], versions=False)),
                    (
                        f"/workflows/{wf_uuid}/status",
                        {},
                        200,
                        keys_shape("aggregate_test_status", "latest_builds", "version"),
                    ),
                    (f"/workflows/{wf_uuid}", {}, 200, keys_shape("uuid", "version")),
                    (
                        f"/workflows/{wf_uuid}/versions",
                        registry_headers,
                        200,
                        keys_shape("workflow", "versions"),
                    ),
                    (
                        f"/suites/{suite_uuid}/status",
                        {},
                        200,
                        keys_shape("aggregate_test_status", "latest_builds"),
                    ),
                    (
                        f"/instances/{inst_uuid}/latest-builds?limit=10",
                        {},
                        200,
                        keys_shape("items"),
                    ),
                ]
                for path, headers, runs, shape in endpoints:
                    p50, p95, queries = measure(client, path, headers, counter, runs, shape)
                    rows.append(
                        (
                            n,
                            path.split("?")[0]
                            .replace(wf_uuid, "{uuid}")
                            .replace(suite_uuid, "{uuid}")
                            .replace(inst_uuid, "{uuid}")
                            + ("?" + path.split("?")[1] if "?" in path else ""),
                            p50,
                            p95,
                            queries,
                        )
                    )
                    print(
                        f"  {rows[-1][1]:<58} p50 {p50:9.2f} ms  p95 {p95:9.2f} ms  "
                        f"queries {queries}",
                        flush=True,
                    )
    finally:
        from chalicelib.db import dispose_engines

        dispose_engines()
        server.drop_database(SCRATCH_DB)
        server.stop()
    by_path: dict[str, set[int]] = {}
    for _n, path, _p50, _p95, q in rows:
        by_path.setdefault(path, set()).add(q)
    same = all(len(v) == 1 for v in by_path.values())
    status_p50 = [
        p50 for n, path, p50, _, _ in rows if n == max(sizes) and path == "/workflows/{uuid}/status"
    ]
    if status_p50:
        print(
            f"status of one workflow at N={max(sizes)}: p50 {status_p50[0]:.2f} ms (target <= 2 ms)"
        )
    wrong = sum(len(w) for *_, w in checks)
    print(
        f"stored status = computed status for every row: "
        f"{'yes' if not wrong else f'NO ({wrong} rows differ): INVALID'}"
    )
    sweep = "/registries/current/workflows?status=true&versions=true"
    for n in sizes:
        p50 = next((p for m, path, p, _, _ in rows if m == n and path == sweep), None)
        if n != 1000 and p50 is not None:
            print(f"registry sweep at N={n}: p50 {p50:.0f} ms")
    p50 = next((p for m, path, p, _, _ in rows if m == 1000 and path == sweep), None)
    if p50 is not None:
        print(f"registry sweep at N=1000: p50 {p50:.0f} ms")
    print(
        f"max SQL queries per request: {max(q for *_, q in rows)} "
        f"(same at every N: {'yes' if same else 'no'})"
    )


if __name__ == "__main__":
    main()
