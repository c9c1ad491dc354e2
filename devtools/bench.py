"""What every benchmark's in-process service runs with (bench/*.py): its scratch database,
a data dir of its own, the file secret store, a fixed public URL, quiet logs and a
database timeout long enough for seeding."""

from __future__ import annotations

import os
import tempfile


def service_environment(database_url: str, **extra: str) -> None:
    """Point the service this process runs at `database_url`; `extra` adds or overrides
    variables (e.g. ALLOW_PRIVATE_URLS for emulators on loopback)."""
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "LM_DATA_DIR": tempfile.mkdtemp(prefix="lm-bench"),
            "LM_SECRETS_BACKEND": "file",
            "EXTERNAL_SERVER_URL": "http://bench",
            "LOG_LEVEL": "WARNING",
            "LM_DB_TIMEOUT": "900",
            **extra,
        }
    )
