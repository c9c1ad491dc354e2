"""bench/refresh.py: its verdict cannot call a wrong run good, and it runs without the test
harness (a venv with the runtime dependencies only: no pytest, no `tests.` import)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.runtime_venv import make_runtime_venv

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "refresh.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_refresh", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def runtime_python(tmp_path_factory) -> Path:
    """The python of a venv holding requirements.txt + Chalice only."""
    began = time.perf_counter()
    python = make_runtime_venv(tmp_path_factory.mktemp("venv"))
    print(f"runtime venv made in {time.perf_counter() - began:.2f} s")
    return python


# --- the verdict ---------------------------------------------------------------------------


def _results(**main) -> dict:
    """A run of 4 workers x C=8 at 50 ms: 11 requests an instance at 4 instances/s for the
    baseline, 1 request an instance at 440 instances/s for ours."""
    return {
        "p": 4,
        "c": 8,
        "bound": 640.0,
        "sweeps": [{"c": 8, "errors": 0}],
        "main": {
            "n": 1000,
            "claimed": 1000,
            "rate": 440.0,
            "errors": 0,
            "failed_messages": 0,
            "builds_differ": 0,
            "outcomes": {"updated": 1000},
            "requests_per_instance": 1.0,
            "peak_in_flight": 32,
            **main,
        },
        "baseline": {"n": 20, "errors": 0, "rate": 4.0, "requests_per_instance": 11.0},
        "github": {
            "cycles": [
                {"units": 5, "outcomes": {"updated": 4}},
                {"units": 0, "outcomes": {"unchanged": 4}},
            ]
        },
        "peak_rss": 80.0,
    }


def test_verdict_of_a_clean_run_splits_the_speedup() -> None:
    lines = bench.verdict(_results())
    assert lines[-1] == "refresh speedup vs baseline: 110.0x (440 instances/s, bound 640/s)"
    split = lines[0]
    # 110 = 11 (requests per instance) x 32 (in flight) x 0.3125 (time per request:
    # 1 / (4 x 11) = 22.7 ms for the baseline, 32 / 440 = 72.7 ms a slot for ours).
    assert split.startswith(
        "speedup 110.0x = 11.0x from requests per instance (11.00 -> 1.00)"
        " x 32x from requests in flight (1 -> 4 x 8 = 32; peak seen 32)"
        " x 0.31 from the time per request (22.7 ms -> 72.7 ms)"
    )
    assert "INVALID" not in "\n".join(lines)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"main": {"errors": 100, "n": 900, "outcomes": {"updated": 900, "error": 100}}},
            "100 of 1000 instances errored",
        ),
        ({"main": {"failed_messages": 2}}, "2 failed messages"),
        ({"main": {"builds_differ": 1}}, "1 instances' stored builds differ from the emulator's"),
        ({"sweeps": [{"c": 8, "errors": 3}]}, "3 instances not refreshed in the one-process"),
        ({"baseline": {"errors": 1}}, "1 baseline instances failed"),
        (
            {"github": {"cycles": [{"units": 5, "outcomes": {"error": 1, "updated": 3}}]}},
            "1 GitHub instances not refreshed",
        ),
    ],
)
def test_verdict_is_invalid_on_any_error(change: dict, reason: str) -> None:
    results = _results()
    for key, value in change.items():
        if isinstance(results[key], dict):
            results[key] = {**results[key], **value}
        else:
            results[key] = value
    last = bench.verdict(results)[-1]
    assert last.startswith("INVALID: ")
    assert reason in last


def test_builds_differing_compares_with_the_emulator(db) -> None:
    from chalicelib.db import get_engine, session_scope
    from chalicelib.models import Build, TestInstance
    from chalicelib.services.submission import testing_service

    engine = get_engine()
    if engine.dialect.name != "postgresql":
        pytest.skip("the benchmark seeds with PostgreSQL SQL")
    with session_scope() as s:
        service_id = testing_service(s, "jenkins", "http://127.0.0.1:9").id
    ids = bench.seed(engine, 3, service_id, "job/j%s", "jk")
    assert bench.builds_differing(engine, service_id) == 3  # nothing stored yet

    with session_scope() as s:
        for instance in s.query(TestInstance).filter(TestInstance.id.in_(ids)):
            for build_id, status in bench.expected_builds(instance.resource):
                s.add(Build(instance_id=instance.id, build_id=build_id, status=status))
    assert bench.builds_differing(engine, service_id) == 0

    with session_scope() as s:
        builds = s.query(Build).filter(Build.instance_id == ids[0]).all()
        builds[0].status = "failed" if builds[0].status != "failed" else "passed"
        s.delete(s.query(Build).filter(Build.instance_id == ids[1]).first())
    assert bench.builds_differing(engine, service_id) == 2
    with session_scope() as s:
        s.add(Build(instance_id=ids[2], build_id="11", status="passed"))  # one too many
    assert bench.builds_differing(engine, service_id) == 3


# --- whole runs, from the runtime-only venv ------------------------------------------------


def _run(python: Path, *extra: str) -> subprocess.CompletedProcess:
    from devtools.postgres import PostgresUnavailable, find_postgres

    try:
        server = find_postgres()
    except PostgresUnavailable as exc:  # conftest has already failed the run; belt and braces
        pytest.fail(str(exc))
    if server is None:
        pytest.skip("the benchmark needs PostgreSQL (TEST_POSTGRES=sqlite)")
    small = [
        "--instances",
        "30",
        "--workers",
        "1",
        "--concurrency",
        "2",
        "--sweep",
        "2",
        "--sweep-instances",
        "20",
        "--baseline-sample",
        "12",
        "--github-instances",
        "4",
        "--latency",
        "0.001",
    ]
    name = f"lm_bench_t_{uuid.uuid4().hex[:12]}"
    proc = subprocess.run(
        [
            str(python),
            str(SCRIPT),
            *small,
            "--database-url",
            server.admin_url,
            "--database-name",
            name,
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # The scratch database is the run's own and goes with it.
    import sqlalchemy

    engine = sqlalchemy.create_engine(server.admin_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            left = conn.execute(
                sqlalchemy.text("SELECT count(*) FROM pg_database WHERE datname = :n"),
                {"n": name},
            ).scalar_one()
    finally:
        engine.dispose()
    if left:
        server.drop_database(name)
    assert left == 0, f"{name} was not dropped"
    return proc


@pytest.mark.slow
def test_run_against_an_emulator_failing_every_tenth_job_is_invalid(runtime_python) -> None:
    proc = _run(runtime_python, "--fail-every", "10")
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("INVALID: 3 of 30 instances errored"), proc.stdout
    assert "3 instances' stored builds differ from the emulator's" in last
    # Only the 27 good ones count, in the rate too.
    assert "27 of 30 instances refreshed without error" in proc.stdout


@pytest.mark.slow
def test_clean_run_is_valid(runtime_python) -> None:
    # The checks must not fire on a good run either (or INVALID would mean nothing).
    proc = _run(runtime_python)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("refresh speedup vs baseline: "), proc.stdout
    assert "30 of 30 instances refreshed without error" in proc.stdout
    assert "0 instances whose stored builds differ from the emulator's" in proc.stdout
    assert (
        lines[-3].startswith("speedup ")
        and "from requests per instance (11.00 -> 1.00)" in (lines[-3])
    )


# --- no test harness -----------------------------------------------------------------------


def test_runtime_venv_has_no_pytest(runtime_python) -> None:
    proc = subprocess.run(
        [str(runtime_python), "-c", "import pytest"], capture_output=True, check=False
    )
    assert proc.returncode == 1 and b"No module named 'pytest'" in proc.stderr


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")))
def test_bench_help_without_pytest(runtime_python, script: str) -> None:
    proc = subprocess.run(
        [str(runtime_python), str(ROOT / "bench" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")


def test_what_benchmarks_import_loads_without_pytest(runtime_python) -> None:
    # `--help` stops before the lazy imports: load what a run uses.
    code = (
        "import sys; sys.path.insert(0, '.');"
        "import devtools.postgres, emulators.jenkins, emulators.github, chalicelib.migrate,"
        " chalicelib.jobs.refresh, chalicelib.testing.jenkins;"
        "assert not [m for m in sys.modules if m == 'pytest' or m.startswith('tests')]"
    )
    proc = subprocess.run(
        [str(runtime_python), "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("folder", ["bench", "devtools", "emulators"])
def test_no_test_harness_import(folder: str) -> None:
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in ("tests", "pytest", "_pytest"), f"{path}: imports {name}"
