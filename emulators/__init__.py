"""Loopback emulators of the services LifeMonitor talks to (WorkflowHub, Jenkins, GitHub,
Travis, GitLab), replaying the real payloads of `../shared/fixtures`, and of the login
providers it signs people in with (WorkflowHub's Doorkeeper in `seek.py`, GitHub in
`github_oauth.py`, LifeScience Login — OpenID Connect — in `oidc.py`, all on
`oauth_provider.py`).

The tests, the benchmarks and the local stack all run them, so this package imports neither
pytest nor anything under `tests/`: only the standard library (`oidc.py` imports
`cryptography`, authlib's dependency, when it first makes its RSA keys)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The shared fixtures (`LM_SHARED_FIXTURES`, else `../shared/fixtures` beside the checkout).
SHARED_FIXTURES = Path(
    os.environ.get("LM_SHARED_FIXTURES", ROOT.parent / "shared" / "fixtures")
).resolve()
