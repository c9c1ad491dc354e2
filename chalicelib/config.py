"""Settings, read lazily from the environment (the one place that reads it).

Never read at import time: `chalice package` imports `app.py`, and the Chalice test
client only patches `os.environ` around each request. `get_settings()` re-reads the
handful of variables on every call (cheap) and memoises the parsed object per distinct
environment, so a changed environment is always honoured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Every variable the service reads. Documented in the README.
ENV_VARS = (
    "LM_STAGE",
    "DATABASE_URL",
    "LM_DATA_DIR",
    "LM_SECRETS_BACKEND",
    "LM_SSM_PREFIX",
    "LM_SECRETS_TTL",
    "EXTERNAL_SERVER_URL",
    "PORT",
    "LOG_LEVEL",
    "LM_TOKEN_EXPIRES_IN",
    "LM_CRATE_BUCKET",
    "LM_REFRESH_QUEUE_URL",
    "ALLOW_PRIVATE_URLS",
    "AWS_LAMBDA_FUNCTION_NAME",
    "LM_DB_POOL_SIZE",
    "LM_DB_TIMEOUT",
    "LM_DB_STATEMENT_CACHE",
    "LM_REFRESH_CONCURRENCY",
    "LM_REFRESH_PER_HOST",
    "LM_LOCAL_REFRESH_INTERVAL",
    "LM_MIGRATIONS_DIR",
    "LM_NOTIFICATION_RETENTION_DAYS",
    "LM_STALE_AFTER_DAYS",
    "LM_EMAIL_BACKEND",
    "LM_EMAIL_SENDER",
    "LM_WEBHOOK_QUEUE_URL",
    "LM_WEBHOOK_DISABLE_AFTER",
    "LM_REFRESH_TOKEN_EXPIRES_IN",
    "LM_AUTH_CODE_EXPIRES_IN",
    "LM_GITHUB_CLIENT_ID",
    "LM_GITHUB_URL",
    "LM_GITHUB_API_URL",
    "LM_LSAAI_CLIENT_ID",
    "LM_LSAAI_ISSUER",
    "LM_PROVIDER_TIMEOUT",
    "LM_MAX_SUITES_PER_CRATE",
    "LM_MAX_INSTANCES_PER_CRATE",
)

#: LifeScience Login (LS AAI), the default OpenID Connect issuer of `LM_LSAAI_ISSUER`.
LSAAI_ISSUER = "https://login.aai.lifescience-ri.eu/oidc/"

#: Stages that are deployed to AWS; development-only switches are refused there.
DEPLOYED_STAGES = frozenset({"prod", "production", "staging"})


class ConfigError(ValueError):
    """The environment holds an invalid or unsafe setting."""


@dataclass(frozen=True)
class Settings:
    stage: str
    database_url: str | None  # None: the parameter store's `database/url`, else embedded
    data_dir: Path
    secrets_backend: str  # "ssm" | "file"
    ssm_prefix: str
    secrets_ttl: int
    external_server_url: str
    log_level: str
    token_expires_in: int
    crate_bucket: str | None
    refresh_queue_url: str | None
    allow_private_urls: bool
    in_lambda: bool
    db_pool_size: int
    db_timeout: int  # seconds of socket silence before a database call fails
    # Statements kept prepared per Postgres connection; 0 behind RDS Proxy (named
    # statements pin a client to one database connection there).
    db_statement_cache: int
    refresh_concurrency: int  # instances refreshed at once per process (thread pool)
    refresh_per_host: int  # CI requests in flight per host
    local_refresh_interval: int  # seconds between in-process refreshes (make run); 0: off
    migrations_dir: Path | None  # where the Alembic scripts are, if not found by themselves
    notification_retention_days: int  # notifications older than this are deleted
    stale_after_days: int  # default staleness threshold of a test instance
    email_backend: str  # "ses" (Amazon SES) | "log" (print mails to the log)
    email_sender: str | None  # verified SES sender address
    webhook_queue_url: str | None  # SQS queue of outbound webhook deliveries; unset: inline
    webhook_disable_after: int  # failed attempts in a row before an endpoint is disabled
    refresh_token_expires_in: int  # seconds a refresh token of ours stays usable
    auth_code_expires_in: int  # seconds an authorization code stays exchangeable
    github_client_id: str | None  # GitHub login (its secret: `oauth2/providers/github/...`)
    github_url: str  # GitHub's web base (authorize, token); tests point it at the emulator
    github_api_url: str  # GitHub's API base (/user, /user/emails)
    lsaai_client_id: str | None  # LS AAI login (its secret: `oauth2/providers/lsaai/...`)
    # LS AAI's OpenID Connect issuer, without the trailing slash (its endpoints come from
    # `<issuer>/.well-known/openid-configuration`); tests point it at the emulator.
    lsaai_issuer: str
    provider_timeout: int  # seconds a login provider may take to answer
    # A submitted crate with more test suites or instances than this is refused (413).
    max_suites_per_crate: int = 1000
    max_instances_per_crate: int = 5000

    @property
    def secrets_file(self) -> Path:
        return self.data_dir / "secrets.json"

    @property
    def crates_dir(self) -> Path:
        return self.data_dir / "crates"

    @property
    def embedded_database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'lifemonitor.db'}"

    @property
    def is_deployed(self) -> bool:
        return self.in_lambda or self.stage in DEPLOYED_STAGES

    def url_for(self, path: str) -> str:
        """Absolute URL of one of our own paths, from EXTERNAL_SERVER_URL."""
        return self.external_server_url.rstrip("/") + "/" + path.lstrip("/")


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, value: str | None, default: int, minimum: int = 0) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {number}")
    return number


def _base_url(name: str, value: str | None, default: str) -> str:
    url = (value or default).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
    return url


@lru_cache(maxsize=16)
def _build(env: tuple[tuple[str, str | None], ...]) -> Settings:
    e = dict(env)
    stage = e["LM_STAGE"] or "dev"
    in_lambda = bool(e["AWS_LAMBDA_FUNCTION_NAME"])
    data_dir = Path(e["LM_DATA_DIR"] or PROJECT_ROOT / ".data").expanduser().resolve()
    # Deployed stages keep the URL (it holds a password) in the parameter store instead.
    database_url = e["DATABASE_URL"] or None
    backend = (e["LM_SECRETS_BACKEND"] or ("ssm" if in_lambda else "file")).lower()
    if backend not in {"ssm", "file"}:
        raise ConfigError(f"LM_SECRETS_BACKEND must be 'ssm' or 'file', got {backend!r}")
    prefix = e["LM_SSM_PREFIX"] or f"/lifemonitor/{stage}/"
    if not prefix.startswith("/"):
        raise ConfigError(f"LM_SSM_PREFIX must start with '/', got {prefix!r}")
    port = _int("PORT", e["PORT"], 8000, minimum=1)
    external = (e["EXTERNAL_SERVER_URL"] or f"http://127.0.0.1:{port}").rstrip("/")
    if not external.startswith(("http://", "https://")):
        raise ConfigError(f"EXTERNAL_SERVER_URL must be an http(s) URL, got {external!r}")
    allow_private = _flag(e["ALLOW_PRIVATE_URLS"])
    # Deployed stages send mail through SES; the embedded default prints it to the log.
    deployed = in_lambda or stage in DEPLOYED_STAGES
    email_backend = (e["LM_EMAIL_BACKEND"] or ("ses" if deployed else "log")).lower()
    if email_backend not in {"ses", "log"}:
        raise ConfigError(f"LM_EMAIL_BACKEND must be 'ses' or 'log', got {email_backend!r}")
    settings = Settings(
        stage=stage,
        database_url=database_url,
        data_dir=data_dir,
        secrets_backend=backend,
        ssm_prefix=prefix if prefix.endswith("/") else prefix + "/",
        secrets_ttl=_int("LM_SECRETS_TTL", e["LM_SECRETS_TTL"], 300),
        external_server_url=external,
        log_level=(e["LOG_LEVEL"] or "INFO").upper(),
        token_expires_in=_int("LM_TOKEN_EXPIRES_IN", e["LM_TOKEN_EXPIRES_IN"], 86400, 60),
        crate_bucket=e["LM_CRATE_BUCKET"] or None,
        refresh_queue_url=e["LM_REFRESH_QUEUE_URL"] or None,
        allow_private_urls=allow_private,
        in_lambda=in_lambda,
        db_pool_size=_int("LM_DB_POOL_SIZE", e["LM_DB_POOL_SIZE"], 1 if in_lambda else 5, 1),
        db_timeout=_int("LM_DB_TIMEOUT", e["LM_DB_TIMEOUT"], 30, 1),
        db_statement_cache=_int("LM_DB_STATEMENT_CACHE", e["LM_DB_STATEMENT_CACHE"], 100, 0),
        refresh_concurrency=_int("LM_REFRESH_CONCURRENCY", e["LM_REFRESH_CONCURRENCY"], 8, 1),
        refresh_per_host=_int("LM_REFRESH_PER_HOST", e["LM_REFRESH_PER_HOST"], 4, 1),
        local_refresh_interval=_int(
            "LM_LOCAL_REFRESH_INTERVAL", e["LM_LOCAL_REFRESH_INTERVAL"], 60, 0
        ),
        migrations_dir=Path(e["LM_MIGRATIONS_DIR"]) if e["LM_MIGRATIONS_DIR"] else None,
        notification_retention_days=_int(
            "LM_NOTIFICATION_RETENTION_DAYS", e["LM_NOTIFICATION_RETENTION_DAYS"], 90, 1
        ),
        stale_after_days=_int("LM_STALE_AFTER_DAYS", e["LM_STALE_AFTER_DAYS"], 30, 1),
        email_backend=email_backend,
        email_sender=e["LM_EMAIL_SENDER"] or None,
        webhook_queue_url=e["LM_WEBHOOK_QUEUE_URL"] or None,
        webhook_disable_after=_int(
            "LM_WEBHOOK_DISABLE_AFTER", e["LM_WEBHOOK_DISABLE_AFTER"], 10, 1
        ),
        refresh_token_expires_in=_int(
            "LM_REFRESH_TOKEN_EXPIRES_IN", e["LM_REFRESH_TOKEN_EXPIRES_IN"], 30 * 86400, 60
        ),
        auth_code_expires_in=_int("LM_AUTH_CODE_EXPIRES_IN", e["LM_AUTH_CODE_EXPIRES_IN"], 300, 1),
        github_client_id=(e["LM_GITHUB_CLIENT_ID"] or "").strip() or None,
        github_url=_base_url("LM_GITHUB_URL", e["LM_GITHUB_URL"], "https://github.com"),
        github_api_url=_base_url(
            "LM_GITHUB_API_URL", e["LM_GITHUB_API_URL"], "https://api.github.com"
        ),
        lsaai_client_id=(e["LM_LSAAI_CLIENT_ID"] or "").strip() or None,
        lsaai_issuer=_base_url("LM_LSAAI_ISSUER", e["LM_LSAAI_ISSUER"], LSAAI_ISSUER),
        provider_timeout=_int("LM_PROVIDER_TIMEOUT", e["LM_PROVIDER_TIMEOUT"], 10, 1),
        max_suites_per_crate=_int("LM_MAX_SUITES_PER_CRATE", e["LM_MAX_SUITES_PER_CRATE"], 1000, 1),
        max_instances_per_crate=_int(
            "LM_MAX_INSTANCES_PER_CRATE", e["LM_MAX_INSTANCES_PER_CRATE"], 5000, 1
        ),
    )
    if email_backend == "log" and settings.is_deployed:
        # The log backend prints verification links (their codes) and would leak them.
        raise ConfigError("LM_EMAIL_BACKEND=log is for development only; use ses")
    if allow_private and settings.is_deployed:
        # The SSRF guard must never be lifted where real users reach the service.
        raise ConfigError("ALLOW_PRIVATE_URLS is for development and tests only")
    return settings


def get_settings() -> Settings:
    """The current settings; raises ConfigError on an invalid environment."""
    return _build(tuple((name, os.environ.get(name)) for name in ENV_VARS))
