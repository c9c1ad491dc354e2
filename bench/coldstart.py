"""Cold-start figures: `import app` and the first `/health` request, each in a fresh
interpreter, against baselines measured in the same run.

Baselines: `import chalice` alone (the floor any Chalice app pays) and an *eager* import of
what the service uses (SQLAlchemy ORM, boto3, authlib, Alembic) — what `import app` would
cost if those were imported at module level instead of lazily.

    python bench/coldstart.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBES = {
    "import chalice (floor)": "import chalice.app",
    "eager imports (baseline)": (
        "import chalice.app, sqlalchemy.orm, boto3, authlib.oauth2, alembic.command, pg8000"
    ),
    "import app": "import app",
}

FIRST_REQUEST = """
import time, json
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
from chalice.test import Client
with Client(app.app, stage_name="dev", project_dir=%r) as c:
    t2 = time.perf_counter()
    r = c.http.get("/health")
    t3 = time.perf_counter()
    assert r.status_code == 200, r.body
    r = c.http.get("/health")
    t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t3 - t2, "warm": t4 - t3}))
"""


def _time_import(stmt: str, env: dict) -> float:
    code = f"import time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="lm-bench-")
    env = {
        **os.environ,
        "LM_DATA_DIR": data_dir,
        "LM_SECRETS_BACKEND": "file",
        "PYTHONDONTWRITEBYTECODE": "0",
    }
    env.pop("DATABASE_URL", None)
    # Warm the OS page cache and .pyc files once, so every probe measures imports alone.
    _time_import(PROBES["eager imports (baseline)"] + "; import app", env)
    subprocess.run(
        [sys.executable, "-m", "chalicelib.admin", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )

    print(f"python {sys.version.split()[0]}, {args.runs} fresh interpreters per probe (median, ms)")
    medians = {}
    for name, stmt in PROBES.items():
        samples = [_time_import(stmt, env) for _ in range(args.runs)]
        medians[name] = statistics.median(samples) * 1000
        print(f"  {name:<28} {medians[name]:8.1f}   (min {min(samples) * 1000:.1f})")
    app_ms = medians["import app"]
    print(f"  import app / eager baseline   {app_ms / medians['eager imports (baseline)']:.2f}x")
    print(f"  import app / chalice floor    {app_ms / medians['import chalice (floor)']:.2f}x")

    firsts, warms = [], []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", FIRST_REQUEST % str(ROOT)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        firsts.append(figures["first"] * 1000)
        warms.append(figures["warm"] * 1000)
    print(
        f"  first GET /health (embedded)  {statistics.median(firsts):8.1f}   "
        "(lazy imports + engine + query)"
    )
    print(f"  warm  GET /health             {statistics.median(warms):8.1f}")
    verdict = "met" if app_ms <= 300 else "MISSED"
    print(f"import app: {app_ms:.1f} ms (target <= 300 ms: {verdict})")


if __name__ == "__main__":
    main()
