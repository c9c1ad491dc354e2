"""Refresh benchmark: instances refreshed per second against an emulated Jenkins with
latency, next to a LifeMonitor-style baseline, plus GitHub's rate cost of an idle cycle.

* **Our refresh (the main run)** — the deployed shape: the scheduler's claim
  (`claim_due`: due instances leased with ``FOR UPDATE SKIP LOCKED``) turned into SQS
  messages (`build_messages`: one host, 25 instances each), taken in batches of 10 by P
  worker processes — P worker Lambdas — through the worker's real entry point
  `handle_sqs_records`, each with ``LM_REFRESH_CONCURRENCY`` = ``LM_REFRESH_PER_HOST`` = C
  (default 8, the production default). N instances seeded in PostgreSQL, one Jenkins
  service. The bound is P x C / latency: P x C requests in flight, each taking the latency.
  Timed from the claim to the last write.
* **One process** — `dispatch_due()` inline (what `make run` and `admin refresh` do) at
  C = 4, 8, 16, 32 on subsets: how far one interpreter (one GIL) carries, and, at C equal to
  the main run's, the wall and CPU time of the three phases and SQL statements per instance.
* **Baseline** — LifeMonitor's way: sequential, ``GET job/X/api/json`` and then one
  ``GET job/X/<n>/api/json`` per build, through a keep-alive `requests.Session`, no
  database writes (which favours it); run on a sample and extrapolated (it is sequential,
  so its rate does not depend on N).
* **Emulated Jenkins** — `emulators.jenkins.JenkinsEmulator`, subclassed to answer
  any ``job/<name>`` with ~10 generated builds (one of a few build sequences, rendered by
  the emulator once per sequence and query, then renamed), with a raised listen backlog
  and Nagle off (two writes per answer would otherwise wait ~40 ms for a delayed ACK).
  It runs in a **separate process** so that it never competes with a worker for its GIL;
  its request counters, peak requests in flight and CPU are printed.
* **Worker memory** — peak RSS (`ru_maxrss`) of each worker process.
* **GitHub idle cycle** — `emulators.github.GithubEmulator` with a token in the
  file-backed parameter store; G instances are refreshed twice (`run_refresh`); the second
  cycle (nothing changed: conditional requests, authorised 304s) must spend 0 units.

    python bench/refresh.py [--instances 10000] [--latency 0.05] [--workers 4]
                            [--concurrency 8] [--sweep 4,8,16,32] [--profile [N]]
                            [--database-url postgresql://...]

The database comes from --database-url, TEST_DATABASE_URL, or the local server; a scratch
database `lm_bench_refresh` (--database-name) is created and dropped. Rates count only the
instances refreshed without error. The last line is the verdict: the speedup over the
baseline, or `INVALID: …` when any instance errored, any message failed or the stored builds
differ from the emulator's (`--fail-every K` makes the emulator fail every K-th job, to see
it). The line before splits the speedup into its causes: requests per instance (11 -> 1)
and requests in flight (1 -> P x C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DB_NAME = "lm_bench_refresh"
BUILDS = 10  # builds per emulated job (LifeMonitor's window)

# Minimal valid rows: one workflow, version, suite and instance per g; the instance's
# resource is `format(:fmt, suite id)`.
SEED_SQL = [
    """INSERT INTO workflows (uuid, name, public, created, modified)
       SELECT gen_random_uuid()::text, :tag || '-' || g, true, now(), now()
       FROM generate_series(1, CAST(:n AS integer)) g""",
    """INSERT INTO workflow_versions (uuid, workflow_id, version, name, authors, created,
                                     modified)
       SELECT gen_random_uuid()::text, w.id, '1', w.name, '[]', now(), now()
       FROM workflows w WHERE w.id > :last_wf""",
    """INSERT INTO test_suites (uuid, workflow_version_id, roc_suite, name, created, modified)
       SELECT gen_random_uuid()::text, v.id, '#suite', 'suite', now(), now()
       FROM workflow_versions v WHERE v.workflow_id > :last_wf""",
    """INSERT INTO test_instances (uuid, suite_id, roc_instance, name, resource, managed,
                                  testing_service_id, parameters, consecutive_errors,
                                  created, modified)
       SELECT gen_random_uuid()::text, s.id, '#inst', 'inst', format(:fmt, s.id), false,
              :service_id, '{}', 0, now(), now()
       FROM test_suites s JOIN workflow_versions v ON v.id = s.workflow_version_id
       WHERE v.workflow_id > :last_wf""",
]

# Build sequences of the emulated jobs, newest first (Jenkins' short specs).
SEQUENCES = [
    [{"result": "SUCCESS"}] * BUILDS,
    [{"result": "FAILURE"}] + [{"result": "SUCCESS"}] * (BUILDS - 1),
    [{"building": True}, {"result": "UNSTABLE"}] + [{"result": "SUCCESS"}] * (BUILDS - 2),
    [{"result": "ABORTED"}, {"result": "FAILURE"}] + [{"result": "SUCCESS"}] * (BUILDS - 2),
]


def template_of(name: str) -> int:
    """Index in SEQUENCES of the builds the emulator serves for job ``name``."""
    import zlib

    return zlib.crc32(name.encode()) % len(SEQUENCES)


def faulty(name: str, fail_every: int) -> bool:
    """`--fail-every K`: the emulator answers 500 for job ``j<n>`` when K divides n."""
    digits = name.lstrip("j")
    return fail_every > 0 and digits.isdigit() and int(digits) % fail_every == 0


def expected_builds(resource: str) -> frozenset[tuple[str, str]]:
    """(build id, status) of the builds the emulator serves for ``job/<name>``, mapped as
    the Jenkins adapter documents it (`map_status`)."""
    from chalicelib.testing.jenkins import map_status

    seq = SEQUENCES[template_of(resource.rsplit("/", 1)[-1])]
    return frozenset(
        (str(BUILDS - i), map_status(spec.get("building", False), spec.get("result")))
        for i, spec in enumerate(seq)
    )


# --- the emulated Jenkins (own process) ----------------------------------------------------


def make_bench_jenkins(latency: float, backlog: int, fail_every: int = 0):
    """A JenkinsEmulator that answers any ``job/<name>``: the emulator renders a template
    job of the name's sequence once per query string, and the name is substituted in the
    bytes (the real per-request rendering deep-copies every build: too slow for 600 req/s
    in Python, and what is measured is our client, not the emulator)."""
    from dataclasses import replace

    from emulators.base import Reply, Request
    from emulators.jenkins import JenkinsEmulator, normalise

    class BenchJenkins(JenkinsEmulator):
        def __init__(self) -> None:
            super().__init__(latency=latency, replay=False)
            self.templates = [f"benchtpl{chr(97 + i)}" for i in range(len(SEQUENCES))]
            for name, seq in zip(self.templates, SEQUENCES, strict=True):
                self.set_builds(
                    f"job/{name}", [{**b, "sha": f"{i:040x}"} for i, b in enumerate(seq)]
                )
            self.rendered: dict[tuple, Reply] = {}
            self.count = Counter()
            self.in_flight = self.peak_in_flight = self.peak_threads = 0
            self.stats_lock = threading.Lock()

        def start(self):
            super().start()
            # socketserver listens with a backlog of 5: 32+ clients connecting at once
            # would see dropped SYNs (1 s retransmits). Linux lets listen() raise it.
            self._server.socket.listen(backlog)
            # BaseHTTPRequestHandler sends the headers and the body in two writes: with
            # Nagle on, the body waits for the client's delayed ACK (~40 ms a request).
            self._server.RequestHandlerClass.disable_nagle_algorithm = True
            return self

        def setup_routes(self) -> None:
            self.route("GET", r"/__bench/stats", self._stats)
            super().setup_routes()

        def _dispatch(self, h) -> None:
            with self.stats_lock:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                self.peak_threads = max(self.peak_threads, threading.active_count())
            try:
                super()._dispatch(h)
            finally:
                with self.stats_lock:
                    self.in_flight -= 1
            with self._lock:
                self.requests.clear()  # counted below instead of kept (10^5 requests)

        def _stats(self, req: Request) -> Reply:
            with self.stats_lock:
                return Reply(
                    200,
                    {
                        "requests": dict(self.count),
                        "peak_in_flight": self.peak_in_flight,
                        "peak_threads": self.peak_threads,
                        "backlog": backlog,
                        "cpu_seconds": sum(os.times()[:2]),
                    },
                )

        def _renamed(self, req: Request, kind: str, handler) -> Reply:
            path = normalise(req.match["job"])
            name = path.rsplit("/", 1)[-1]
            if faulty(name, fail_every):
                with self.stats_lock:
                    self.count["fault"] += 1
                return Reply(500, b"injected fault", content_type="text/plain")
            template = self.templates[template_of(name)]
            ref = req.match["ref"] if kind == "build" else None
            key = (kind, template, ref, tuple(sorted((k, tuple(v)) for k, v in req.query.items())))
            with self.stats_lock:
                self.count[kind] += 1
                reply = self.rendered.get(key)
            if reply is None:
                match = {"job": f"job/{template}", "ref": ref}
                reply = handler(replace(req, match=match))
                with self.stats_lock:
                    self.rendered[key] = reply
            body = reply.body
            if isinstance(body, bytes) and reply.status == 200:
                body = body.replace(template.encode(), name.encode())
            return Reply(reply.status, body, reply.headers, reply.content_type)

        def _job_api(self, req: Request) -> Reply:
            return self._renamed(req, "job", super()._job_api)

        def _build_api(self, req: Request) -> Reply:
            return self._renamed(req, "build", super()._build_api)

    return BenchJenkins()


def serve_jenkins(latency: float, backlog: int, fail_every: int = 0) -> None:
    """`--serve-jenkins`: run the emulator until stdin closes; the first line out is its
    URL."""
    emulator = make_bench_jenkins(latency, backlog, fail_every).start()
    print(emulator.url, flush=True)
    sys.stdin.read()
    emulator.stop()


class JenkinsProcess:
    def __init__(self, latency: float, backlog: int = 1024, fail_every: int = 0) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-jenkins",
                "--latency",
                str(latency),
                "--backlog",
                str(backlog),
                "--fail-every",
                str(fail_every),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            sys.exit("the Jenkins emulator did not start")

    def stats(self) -> dict:
        import requests

        return requests.get(f"{self.url}/__bench/stats", timeout=10).json()

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- database ------------------------------------------------------------------------------


def database_url(arg: str | None, name: str = DB_NAME) -> tuple[str, object]:
    from devtools.postgres import PostgresUnavailable, find_postgres

    if arg:
        os.environ["TEST_DATABASE_URL"] = arg
    try:
        # A URL given is the one to use: never another server instead.
        server = find_postgres("env" if arg else None)
    except PostgresUnavailable as exc:
        sys.exit(f"bench/refresh.py needs PostgreSQL: {exc}")
    if server is None:
        sys.exit("bench/refresh.py needs PostgreSQL (TEST_POSTGRES asks for SQLite)")
    return server.create_database(name), server


def seed(engine, n: int, service_id: int, fmt: str, tag: str) -> list[int]:
    """n instances of the service; returns their ids."""
    from sqlalchemy import text

    with engine.begin() as conn:
        last_wf = conn.execute(text("SELECT coalesce(max(id), 0) FROM workflows")).scalar()
        params = {"n": n, "tag": tag, "last_wf": last_wf, "fmt": fmt, "service_id": service_id}
        for sql in SEED_SQL:
            conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})
        ids = list(
            conn.execute(
                text("SELECT id FROM test_instances WHERE testing_service_id = :s ORDER BY id"),
                {"s": service_id},
            ).scalars()
        )
    vacuum(engine)
    return ids


def vacuum(engine) -> None:
    raw = engine.raw_connection()  # VACUUM runs outside a transaction
    try:
        raw.rollback()  # the pool's pre-ping opened a transaction
        raw.driver_connection.autocommit = True
        cursor = raw.driver_connection.cursor()
        cursor.execute("VACUUM ANALYZE")
        cursor.close()
    finally:
        raw.driver_connection.autocommit = False
        raw.close()


def reset(engine, service_id: int) -> None:
    """Back to never refreshed: no builds, everything due, no lease."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE builds"))
        conn.execute(
            text(
                "UPDATE test_instances SET latest_build_id = NULL, last_completed_build_id = NULL,"
                " next_check_at = NULL, lease_until = NULL, last_checked_at = NULL, etag = NULL,"
                " last_error = NULL, consecutive_errors = 0, transition_build_id = NULL,"
                " stale_since = NULL WHERE testing_service_id = :s"
            ),
            {"s": service_id},
        )
    vacuum(engine)


# --- observing the worker ------------------------------------------------------------------


class StatementCounter:
    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.count = 0
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, *args, **kwargs) -> None:
        self.count += 1


class PoolFullCounter(logging.Filter):
    """urllib3 discards connections beyond the pool's size with a warning: count them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "Connection pool is full" in record.getMessage():
            self.count += 1
            return False
        return True


class PhaseClock:
    """Wall and thread-CPU time of the refresh's three phases (`load_targets` per chunk,
    `fetch` per instance, `apply_many` per written group), by wrapping the module's
    functions for the duration (they are looked up at call time). Wall minus CPU is time
    spent waiting: for Postgres, for the CI — or for the GIL, when the process is CPU
    bound."""

    PHASES = ("load_targets", "fetch", "apply_many")

    def __init__(self) -> None:
        self.wall: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._saved: dict = {}

    def __enter__(self) -> PhaseClock:
        from chalicelib.jobs import refresh

        for name in self.PHASES:
            self._saved[name] = getattr(refresh, name)
            setattr(refresh, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(self, *exc) -> None:
        from chalicelib.jobs import refresh

        for name, fn in self._saved.items():
            setattr(refresh, name, fn)

    def _wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            c0, t0 = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
                with self._lock:
                    self.wall[name] += wall
                    self.cpu[name] += cpu
                    self.calls[name] += 1

        return timed

    def report(self, instances: int) -> str:
        """Per instance: each phase's wall (CPU) time, and its calls."""
        parts = []
        n = max(1, instances)
        for name in self.PHASES:
            parts.append(
                f"{name} {self.wall[name] / n * 1000:.2f} ms "
                f"(CPU {self.cpu[name] / n * 1000:.2f}; {self.calls[name]} calls)"
            )
        return ", ".join(parts)


def profile(n: int) -> None:
    """`--profile`: one thread (concurrency 1, so cProfile sees everything) refreshes n
    instances; prints CPU time per instance by library and the top functions."""
    import cProfile
    import pstats

    from chalicelib.jobs.refresh import dispatch_due

    set_concurrency(1)
    profiler = cProfile.Profile()
    profiler.enable()
    summary = dispatch_due(limit=n)
    profiler.disable()
    done = max(1, summary.get("claimed", 0))
    stats = pstats.Stats(profiler)
    by_area: Counter[str] = Counter()
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        by_area[_area(filename, func)] += tottime
    busy = sum(v for k, v in by_area.items() if k != "socket recv (waiting)")
    print(
        f"profile (cProfile, one thread, {done} instances; cProfile roughly doubles the "
        f"CPU): {busy / done * 1000:.1f} ms of CPU per instance, by library:"
    )
    for area, seconds in by_area.most_common(12):
        print(f"    {seconds / done * 1000:7.2f} ms  {area}")
    print("  cumulative (waits included), per instance:")
    for (filename, line, func), (_cc, ncalls, _tt, cumtime, _callers) in sorted(
        stats.stats.items(), key=lambda kv: -kv[1][3]
    ):
        if func in HOT and (
            "chalicelib" in filename or "pg8000" in filename or "sqlalchemy" in filename
        ):
            print(
                f"    {cumtime / done * 1000:7.2f} ms  {ncalls / done:6.1f} calls  "
                f"{_short(filename)}:{line}({func})"
            )
    print("  top functions by own time:")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:12]
    for (filename, line, func), (_cc, ncalls, tottime, _ct, _callers) in rows:
        print(
            f"    {tottime / done * 1000:7.2f} ms  {ncalls / done:6.1f} calls  "
            f"{_short(filename)}:{line}({func})"
        )


HOT = {
    "load_targets",
    "fetch",
    "apply_many",
    "write_group",
    "_upsert_builds",
    "_recent_builds",
    "fetch_builds",
    "_compile_w_cache",
    "convert_paramstyle",
    "do_ping",
    "commit",
}


def _area(filename: str, func: str) -> str:
    """A library-level name for a profiled function."""
    if filename == "~":
        if "recv" in func:
            return "socket recv (waiting)"
        if "send" in func:
            return "socket send (syscalls)"
        return "builtins"
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    if "chalicelib" in parts:
        return "chalicelib"
    return "stdlib " + Path(filename).stem


def _short(filename: str) -> str:
    parts = Path(filename).parts
    for marker in ("site-packages", "main"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    return filename


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the two refreshes ---------------------------------------------------------------------


def set_concurrency(c: int) -> None:
    os.environ["LM_REFRESH_CONCURRENCY"] = str(c)
    os.environ["LM_REFRESH_PER_HOST"] = str(c)


def ours(
    n: int, c: int, statements: StatementCounter | None = None, clock: PhaseClock | None = None
) -> dict:
    """One scheduler cycle (`dispatch_due`, inline) over n due instances, concurrency c."""
    from chalicelib.jobs.refresh import dispatch_due

    set_concurrency(c)
    before_sql = statements.count if statements else 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    if clock is not None:
        with clock:
            summary = dispatch_due(limit=n)
    else:
        summary = dispatch_due(limit=n)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    outcomes = summary.get("outcomes", {})
    done = refreshed(outcomes)
    return {
        "n": done,
        "claimed": summary.get("claimed", 0),
        "seconds": elapsed,
        "rate": done / elapsed,
        "cpu": cpu,
        "outcomes": outcomes,
        "errors": summary.get("claimed", 0) - done,
        "statements": (statements.count - before_sql) / max(1, done) if statements else 0,
    }


OK_OUTCOMES = ("updated", "unchanged")  # refreshed without error; anything else is not


def refreshed(outcomes: dict[str, int]) -> int:
    """Instances refreshed without error, out of a count of outcomes."""
    return sum(outcomes.get(o, 0) for o in OK_OUTCOMES)


def baseline(jenkins_url: str, resources: list[str]) -> dict:
    """LifeMonitor's refresh of one Jenkins instance, sequentially: the job, then each
    build (python-jenkins' get_job_info + get_build_info). The rate counts the instances
    read in full; the others are errors."""
    import requests

    session = requests.Session()
    requests_made = ok = ok_requests = 0
    t0 = time.perf_counter()
    for res in resources:
        made = 0
        try:
            job = session.get(f"{jenkins_url}/{res}/api/json", params={"depth": 0}, timeout=15)
            made += 1
            job.raise_for_status()
            builds = []
            for ref in job.json()["builds"][:BUILDS]:
                r = session.get(
                    f"{jenkins_url}/{res}/{ref['number']}/api/json", params={"depth": 0}, timeout=15
                )
                made += 1
                r.raise_for_status()
                builds.append(r.json())
        except requests.RequestException:
            continue
        finally:
            requests_made += made
        if len(builds) == BUILDS:
            ok += 1
            ok_requests += made
    elapsed = time.perf_counter() - t0
    session.close()
    return {
        "n": ok,
        "errors": len(resources) - ok,
        "rate": ok / elapsed,
        "requests": requests_made,
        "requests_per_instance": ok_requests / max(1, ok),
        "seconds": elapsed,
    }


def github_idle(engine, n: int, latency: float) -> dict:
    """Refresh n GitHub instances twice; the rate units each cycle spent."""
    from sqlalchemy import text

    from chalicelib.db import session_scope
    from chalicelib.jobs.refresh import run_refresh
    from chalicelib.secrets import get_secrets
    from chalicelib.services.submission import testing_service
    from chalicelib.testing.github import token_key
    from emulators.github import GithubEmulator

    with GithubEmulator(latency=latency, replay=False) as gh:
        gh.token = "bench-token"  # noqa: S105 - the emulator's made-up token
        get_secrets().put(token_key(gh.url), gh.token)
        with session_scope() as s:
            service_id = testing_service(s, "github", gh.url).id
        ids = seed(engine, n, service_id, "repos/bench/r%s/actions/workflows/ci.yml", "gh")
        with engine.connect() as conn:
            resources = (
                conn.execute(
                    text("SELECT resource FROM test_instances WHERE testing_service_id = :s"),
                    {"s": service_id},
                )
                .scalars()
                .all()
            )
        for i, res in enumerate(resources):
            repo = "/".join(res.split("/")[1:3])
            runs = [{"conclusion": "success"}, {"conclusion": "failure"}, {}]
            if i % 4 == 0:  # a re-run: its first attempt costs one more request, once
                runs[0] = {"conclusion": "success", "attempt": 2}
            gh.set_runs(repo, "ci.yml", runs)
        cycles = []
        for _ in range(2):
            used, not_modified, sent = gh.rate_used, gh.not_modified, len(gh.requests)
            t0 = time.perf_counter()
            outcomes = Counter(r.outcome for r in run_refresh(ids))
            cycles.append(
                {
                    "units": gh.rate_used - used,
                    "seconds": time.perf_counter() - t0,
                    "requests": len(gh.requests) - sent,
                    "not_modified": gh.not_modified - not_modified,
                    "outcomes": dict(outcomes),
                }
            )
    return {"n": len(ids), "cycles": cycles}


# --- scale-out: SQS workers in their own processes ----------------------------------------

SQS_BATCH = 10  # messages per worker invocation (the worker's batch_size, chalice.md §5.1)


def _worker_process(jobs, results, concurrency: int) -> None:
    """One worker Lambda container: its own process (its own GIL and pools), taking batches
    of SQS records from the shared queue until a None, each through the real entry point
    `handle_sqs_records` (one invocation per batch)."""
    os.environ.update(
        {
            "LM_REFRESH_CONCURRENCY": str(concurrency),
            "LM_REFRESH_PER_HOST": str(concurrency),
            "LM_DB_POOL_SIZE": "2",
        }
    )
    logging.getLogger("urllib3.connectionpool").addFilter(PoolFullCounter())
    from chalicelib import http
    from chalicelib.db import get_engine
    from chalicelib.jobs.refresh import handle_sqs_records
    from chalicelib.testing import get_adapter

    get_adapter("jenkins")  # a warm container: imports, pools
    http.get_session()
    with get_engine().connect():
        pass
    # The outcome of every instance: `handle_sqs_records` looks `run_refresh` up at call
    # time, so a wrapper sees what each refresh came to (its response lists only failures).
    from chalicelib.jobs import refresh

    outcomes: Counter[str] = Counter()
    run_refresh = refresh.run_refresh

    def counted(*args, **kwargs):
        results_ = run_refresh(*args, **kwargs)
        outcomes.update(r.outcome for r in results_)
        return results_

    refresh.run_refresh = counted
    results.put("ready")
    cpu0, handed, failures, busy = cpu_seconds(), 0, 0, 0.0
    while (batch := jobs.get()) is not None:
        t0 = time.perf_counter()
        failures += len(handle_sqs_records(batch)["batchItemFailures"])
        busy += time.perf_counter() - t0
        handed += sum(len(json.loads(r["body"])["instances"]) for r in batch)
    results.put(
        {
            "instances": refreshed(outcomes),
            "handed": handed,
            "failures": failures,
            "outcomes": dict(outcomes),
            "busy": busy,
            "cpu": cpu_seconds() - cpu0,
            "rss": rss_peak_mb(),
        }
    )


def scale_out(n: int, workers: int, concurrency: int) -> dict:
    """The deployed shape: the scheduler claims due instances and turns them into SQS
    messages (`claim_due`, `build_messages`: 25 instances, one host, per message); `workers`
    worker processes with `concurrency` threads each take batches of `SQS_BATCH` messages
    from a shared queue (SQS) until it is empty. Timed from the claim to the last write."""
    import multiprocessing

    from chalicelib.db import session_scope
    from chalicelib.jobs.refresh import build_messages, claim_due
    from chalicelib.models import utcnow

    ctx = multiprocessing.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker_process, args=(jobs, results, concurrency))
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        assert results.get(timeout=120) == "ready"
    t0 = time.perf_counter()
    with session_scope() as session:
        rows = claim_due(session, utcnow(), limit=n)
    records = [
        {"messageId": str(k), "body": json.dumps(m)} for k, m in enumerate(build_messages(rows))
    ]
    for k in range(0, len(records), SQS_BATCH):
        jobs.put(records[k : k + SQS_BATCH])
    for _ in procs:
        jobs.put(None)
    reports = [results.get() for _ in procs]
    elapsed = time.perf_counter() - t0
    for proc in procs:
        proc.join(timeout=30)
    done = sum(r["instances"] for r in reports)  # refreshed without error
    outcomes: Counter[str] = Counter()
    for r in reports:
        outcomes.update(r["outcomes"])
    return {
        "n": done,
        "claimed": len(rows),
        "seconds": elapsed,
        "rate": done / elapsed,
        "messages": len(records),
        "reports": reports,
        "outcomes": dict(outcomes),
        "errors": len(rows) - done,
        "failed_messages": sum(r["failures"] for r in reports),
    }


def builds_differing(engine, service_id: int) -> int:
    """Instances of the service whose stored builds (id, status) are not the ones the
    emulator serves for their job."""
    from sqlalchemy import text

    stored: dict[str, set[tuple[str, str]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.resource, b.build_id, b.status FROM test_instances t"
                " LEFT JOIN builds b ON b.instance_id = t.id WHERE t.testing_service_id = :s"
            ),
            {"s": service_id},
        )
        for resource, build_id, status in rows:
            builds = stored.setdefault(resource, set())
            if build_id is not None:
                builds.add((build_id, status))
    return sum(builds != expected_builds(resource) for resource, builds in stored.items())


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument(
        "--workers", type=int, default=4, help="worker processes of the main run (worker Lambdas)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="LM_REFRESH_CONCURRENCY and LM_REFRESH_PER_HOST of each worker",
    )
    parser.add_argument(
        "--sweep",
        default="4,8,16,32",
        help="concurrency values of one in-process refresh, on subsets",
    )
    parser.add_argument(
        "--sweep-instances",
        type=int,
        default=0,
        help="instances per sweep value (default: 60 x C, at least 200)",
    )
    parser.add_argument("--baseline-sample", type=int, default=20)
    parser.add_argument("--github-instances", type=int, default=200)
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=300,
        default=0,
        metavar="N",
        help="also cProfile a one-thread refresh of N instances",
    )
    parser.add_argument("--database-url")
    parser.add_argument(
        "--database-name",
        default=DB_NAME,
        help="scratch database, created and dropped (default %(default)s)",
    )
    parser.add_argument(
        "--fail-every",
        type=int,
        default=0,
        metavar="K",
        help="fault injection: the emulated Jenkins answers 500 for every "
        "K-th job (the verdict must then say INVALID)",
    )
    parser.add_argument("--serve-jenkins", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backlog", type=int, default=1024, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_jenkins:
        serve_jenkins(args.latency, args.backlog, args.fail_every)
        return

    p, c = args.workers, args.concurrency
    sweep = [int(x) for x in args.sweep.split(",") if x.strip()]
    bound = p * c / args.latency
    url, server = database_url(args.database_url, args.database_name)
    from devtools.bench import service_environment

    service_environment(url, ALLOW_PRIVATE_URLS="1", LM_DB_POOL_SIZE="4")
    os.environ.pop("LM_REFRESH_QUEUE_URL", None)  # inline mode for the in-process runs
    pool_full = PoolFullCounter()
    logging.getLogger("urllib3.connectionpool").addFilter(pool_full)
    jenkins = JenkinsProcess(args.latency, fail_every=args.fail_every)
    print(
        f"emulated Jenkins at {jenkins.url} (own process), {args.latency * 1000:.0f} ms "
        f"per request, {BUILDS} builds per job; {os.cpu_count()} CPUs",
        flush=True,
    )

    from sqlalchemy import text

    from chalicelib import migrate
    from chalicelib.db import dispose_engines, get_engine, session_scope
    from chalicelib.services.submission import testing_service

    results: dict = {"p": p, "c": c, "bound": bound, "sweeps": []}
    try:
        migrate.upgrade("head")
        engine = get_engine()
        with session_scope() as s:
            service_id = testing_service(s, "jenkins", jenkins.url).id
        t0 = time.perf_counter()
        ids = seed(engine, args.instances, service_id, "job/j%s", "jk")
        print(
            f"seeded {len(ids)} Jenkins instances in {time.perf_counter() - t0:.1f} s", flush=True
        )
        statements = StatementCounter(engine)

        # The main run: the deployed shape, scheduler -> queue -> worker processes.
        stats0 = jenkins.stats()
        main_run = scale_out(len(ids), p, c)
        stats1 = jenkins.stats()
        results["main"] = main_run
        main_run["builds_differ"] = builds_differing(engine, service_id)
        with engine.connect() as conn:
            builds, pointed, errors = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM builds), (SELECT count(*) FROM test_instances"
                    " WHERE latest_build_id IS NOT NULL AND testing_service_id = :s),"
                    " (SELECT count(*) FROM test_instances WHERE last_error IS NOT NULL)"
                ),
                {"s": service_id},
            ).one()
        job_requests = stats1["requests"].get("job", 0) - stats0["requests"].get("job", 0)
        build_requests = stats1["requests"].get("build", 0) - stats0["requests"].get("build", 0)
        n = main_run["n"]
        main_run["requests_per_instance"] = (job_requests + build_requests) / max(1, n)
        main_run["peak_in_flight"] = stats1["peak_in_flight"]
        reports = main_run["reports"]
        cpu = sum(r["cpu"] for r in reports)
        print(
            f"our refresh, {p} worker processes x C={c} (per host {c}), "
            f"{main_run['messages']} SQS messages in batches of {SQS_BATCH}: {n} of "
            f"{main_run['claimed']} instances refreshed without error in "
            f"{main_run['seconds']:.1f} s = {main_run['rate']:.0f} instances/s "
            f"({main_run['rate'] / bound:.0%} of the bound {p} x {c} / "
            f"{args.latency * 1000:.0f} ms = {bound:.0f}/s)",
            flush=True,
        )
        print(
            f"  {builds} builds stored, {pointed} instances with a latest build, {errors} "
            f"with an error; failed messages {main_run['failed_messages']}; outcomes "
            f"{main_run['outcomes']}; {main_run['builds_differ']} instances whose stored "
            f"builds differ from the emulator's",
            flush=True,
        )
        print(
            f"  CI requests: {job_requests} job + {build_requests} build = "
            f"{(job_requests + build_requests) / max(1, n):.2f} per instance",
            flush=True,
        )
        print(
            f"  worker CPU: {cpu / max(1, n) * 1000:.2f} ms per instance; per worker "
            + ", ".join(
                f"{r['instances']} instances, {r['cpu'] / main_run['seconds']:.0%} of a core"
                for r in reports
            ),
            flush=True,
        )
        print(
            f"  emulator: peak {stats1['peak_in_flight']} requests in flight, peak "
            f"{stats1['peak_threads']} threads, CPU "
            f"{stats1['cpu_seconds'] - stats0['cpu_seconds']:.1f} s",
            flush=True,
        )
        peak = max(r["rss"] for r in reports)
        print(
            f"  worker peak memory: {peak:.0f} MB RSS (ru_maxrss of each worker: "
            + ", ".join(f"{r['rss']:.0f}" for r in reports)
            + " MB)",
            flush=True,
        )
        results["peak_rss"] = peak

        # One process: where the time goes, and how far one GIL carries.
        for value in sweep:
            reset(engine, service_id)
            count = min(len(ids), args.sweep_instances or max(200, 60 * value))
            detailed = value == c
            clock = PhaseClock() if detailed else None
            run = ours(count, value, statements if detailed else None, clock)
            results["sweeps"].append({"c": value, "errors": run["errors"]})
            b = value / args.latency
            print(
                f"one process, C={value}: {run['n']} instances in {run['seconds']:.1f} s = "
                f"{run['rate']:.0f} instances/s ({run['rate'] / b:.0%} of {b:.0f}/s; "
                f"CPU {run['cpu'] / max(1, run['n']) * 1000:.2f} ms per instance, "
                f"{run['cpu'] / run['seconds']:.0%} of one core"
                + (f"; {run['errors']} not refreshed: {run['outcomes']}" if run["errors"] else "")
                + ")",
                flush=True,
            )
            if clock is not None:
                print(
                    f"  per instance: {clock.report(run['n'])}; SQL statements per "
                    f"instance: {run['statements']:.2f}",
                    flush=True,
                )
        if pool_full.count:
            print(f"  urllib3 discarded {pool_full.count} connections (pool full)", flush=True)
        if args.profile:
            reset(engine, service_id)
            profile(min(len(ids), args.profile))

        # The baseline, on a sample (sequential: its rate does not depend on N).
        with engine.connect() as conn:
            sample = (
                conn.execute(
                    text(
                        "SELECT resource FROM test_instances WHERE testing_service_id = :s "
                        "ORDER BY id LIMIT :n"
                    ),
                    {"s": service_id, "n": args.baseline_sample},
                )
                .scalars()
                .all()
            )
        base = baseline(jenkins.url, sample)
        results["baseline"] = base
        print(
            f"baseline (LifeMonitor: sequential, job + 1 request per build, keep-alive, no "
            f"DB writes): {base['n']} of {len(sample)} instances read in full"
            + (f" ({base['errors']} errors)" if base["errors"] else "")
            + f", {base['requests']} requests in {base['seconds']:.1f} s = "
            f"{base['rate']:.2f} instances/s (extrapolated: "
            f"{len(ids) / max(base['rate'], 1e-9) / 60:.0f} min for {len(ids)})",
            flush=True,
        )

        # GitHub: what an idle cycle costs.
        gh = github_idle(engine, args.github_instances, args.latency)
        results["github"] = gh
        for i, cycle in enumerate(gh["cycles"], 1):
            print(
                f"GitHub cycle {i} ({'first' if i == 1 else 'idle'}), {gh['n']} instances: "
                f"{cycle['units']} rate-limit units, {cycle['requests']} requests, "
                f"{cycle['not_modified']} answered 304, outcomes {cycle['outcomes']}",
                flush=True,
            )
    finally:
        dispose_engines()
        jenkins.stop()
        server.drop_database(args.database_name)
        server.stop()

    for line in verdict(results):
        print(line)


def verdict(results: dict) -> list[str]:
    """The closing lines; the last one is the verdict. Figures count only instances
    refreshed without error, and any error, failed message or stored build that differs
    from the emulator's makes the run INVALID: a fast wrong refresh is no result.

    The speedup over the baseline splits into its two causes: requests per instance
    (11 -> 1: the job's builds come in one `tree=` query) and requests in flight
    (1 -> P x C); what is left is the time per request (latency plus client overhead) of
    ours against the baseline's."""
    p, c, bound = results["p"], results["c"], results["bound"]
    main_run, base = results["main"], results["baseline"]
    cycles = results["github"]["cycles"]

    problems = []
    if main_run["errors"]:
        problems.append(
            f"{main_run['errors']} of {main_run['claimed']} instances errored "
            f"{main_run['outcomes']}"
        )
    if main_run["failed_messages"]:
        problems.append(f"{main_run['failed_messages']} failed messages")
    if main_run["builds_differ"]:
        problems.append(
            f"{main_run['builds_differ']} instances' stored builds differ from the emulator's"
        )
    sweep_errors = sum(s["errors"] for s in results["sweeps"])
    if sweep_errors:
        problems.append(f"{sweep_errors} instances not refreshed in the one-process runs")
    if base["errors"]:
        problems.append(f"{base['errors']} baseline instances failed")
    gh_errors = sum(
        n for cycle in cycles for o, n in cycle["outcomes"].items() if o not in OK_OUTCOMES
    )
    if gh_errors:
        problems.append(f"{gh_errors} GitHub instances not refreshed")

    rate, base_rate = main_run["rate"], base["rate"]
    speedup = rate / base_rate if base_rate else 0.0
    ours_rpi = main_run.get("requests_per_instance", 0.0)
    base_rpi = base.get("requests_per_instance", 0.0)
    fewer = base_rpi / ours_rpi if ours_rpi else 0.0
    in_flight = p * c
    # Seconds per request and slot: the baseline has one slot, ours P x C.
    base_per_request = 1 / (base_rate * base_rpi) if base_rate and base_rpi else 0.0
    ours_per_request = in_flight / (rate * ours_rpi) if rate and ours_rpi else 0.0
    per_request = base_per_request / ours_per_request if ours_per_request else 0.0
    idle_units = cycles[-1]["units"]
    share = rate / bound
    lines = [
        f"speedup {speedup:.1f}x = {fewer:.1f}x from requests per instance ({base_rpi:.2f} -> "
        f"{ours_rpi:.2f}) x {in_flight}x from requests in flight (1 -> {p} x {c} = "
        f"{in_flight}; peak seen {main_run.get('peak_in_flight', 0)}) x {per_request:.2f} "
        f"from the time per request ({base_per_request * 1000:.1f} ms -> "
        f"{ours_per_request * 1000:.1f} ms)",
        f"targets: speedup {speedup:.1f}x (>= 20x: {'yes' if speedup >= 20 else 'NO'}); "
        f"{share:.0%} of the bound at {p} x C={c} (>= 70%: "
        f"{'yes' if share >= 0.7 else 'NO'}); idle GitHub cycle {idle_units} units "
        f"(0: {'yes' if idle_units == 0 else 'NO'}); worker peak memory "
        f"{results['peak_rss']:.0f} MB",
    ]
    figures = f"{speedup:.1f}x ({rate:.0f} instances/s, bound {bound:.0f}/s)"
    if problems:
        lines.append(
            f"INVALID: {'; '.join(problems)} (refresh speedup vs baseline would read {figures})"
        )
    else:
        lines.append(f"refresh speedup vs baseline: {figures}")
    return lines


if __name__ == "__main__":
    main()
