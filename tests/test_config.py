"""Settings: defaults, environment overrides, validation, and laziness."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib.config import PROJECT_ROOT, ConfigError, get_settings


def test_defaults(monkeypatch, tmp_path):
    for name in ("LM_STAGE", "LM_SECRETS_BACKEND", "EXTERNAL_SERVER_URL", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    s = get_settings()
    assert s.stage == "dev"
    assert s.secrets_backend == "file"
    assert s.ssm_prefix == "/lifemonitor/dev/"
    assert s.database_url is None
    assert s.data_dir == (tmp_path / "data").resolve()
    assert s.embedded_database_url == f"sqlite:///{(tmp_path / 'data').resolve()}/lifemonitor.db"
    assert s.secrets_file == (tmp_path / "data").resolve() / "secrets.json"
    assert s.external_server_url == "http://127.0.0.1:8000"
    assert s.log_level == "INFO"
    assert s.secrets_ttl == 300
    assert s.token_expires_in == 86400
    assert s.allow_private_urls is False
    assert s.in_lambda is False
    assert s.is_deployed is False
    assert s.db_pool_size == 5


def test_default_data_dir_is_under_the_project(monkeypatch):
    monkeypatch.delenv("LM_DATA_DIR")
    s = get_settings()
    assert s.data_dir == (PROJECT_ROOT / ".data").resolve()
    assert s.embedded_database_url.startswith("sqlite:///")
    assert s.embedded_database_url.endswith("/.data/lifemonitor.db")


def test_prefix_follows_the_stage(monkeypatch):
    monkeypatch.setenv("LM_STAGE", "staging2")
    assert get_settings().ssm_prefix == "/lifemonitor/staging2/"


def test_explicit_prefix_gets_a_trailing_slash(monkeypatch):
    monkeypatch.setenv("LM_SSM_PREFIX", "/custom/path")
    assert get_settings().ssm_prefix == "/custom/path/"


def test_prefix_must_be_absolute(monkeypatch):
    monkeypatch.setenv("LM_SSM_PREFIX", "custom/")
    with pytest.raises(ConfigError, match="LM_SSM_PREFIX"):
        get_settings()


def test_port_changes_the_default_external_url(monkeypatch):
    monkeypatch.delenv("EXTERNAL_SERVER_URL")
    monkeypatch.setenv("PORT", "9123")
    assert get_settings().external_server_url == "http://127.0.0.1:9123"


def test_external_url_wins_over_port_and_loses_its_trailing_slash(monkeypatch):
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://lm.example.org/")
    s = get_settings()
    assert s.external_server_url == "https://lm.example.org"
    assert s.url_for("/oauth2/token") == "https://lm.example.org/oauth2/token"
    assert s.url_for("health") == "https://lm.example.org/health"


def test_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("LM_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/lm")
    monkeypatch.setenv("LM_SECRETS_BACKEND", "SSM")
    monkeypatch.setenv("LM_SECRETS_TTL", "7")
    monkeypatch.setenv("LM_TOKEN_EXPIRES_IN", "3600")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LM_CRATE_BUCKET", "crates")
    monkeypatch.setenv("LM_DB_POOL_SIZE", "3")
    s = get_settings()
    assert s.data_dir == (tmp_path / "elsewhere").resolve()
    assert s.secrets_file == (tmp_path / "elsewhere").resolve() / "secrets.json"
    assert s.database_url == "postgresql://u:p@db/lm"
    assert s.secrets_backend == "ssm"
    assert s.secrets_ttl == 7
    assert s.token_expires_in == 3600
    assert s.log_level == "DEBUG"
    assert s.crate_bucket == "crates"
    assert s.db_pool_size == 3


def test_lambda_defaults_to_ssm_and_a_tiny_pool(monkeypatch):
    monkeypatch.delenv("LM_SECRETS_BACKEND")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "lifemonitor-dev-admin")
    s = get_settings()
    assert s.in_lambda and s.is_deployed
    assert s.secrets_backend == "ssm"
    assert s.db_pool_size == 1


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("PORT", "eighty", "PORT must be an integer"),
        ("PORT", "0", "PORT must be >= 1"),
        ("LM_SECRETS_TTL", "1.5", "LM_SECRETS_TTL"),
        ("LM_SECRETS_TTL", "-1", "LM_SECRETS_TTL"),
        ("LM_TOKEN_EXPIRES_IN", "59", "LM_TOKEN_EXPIRES_IN"),
        ("LM_DB_POOL_SIZE", "0", "LM_DB_POOL_SIZE"),
        ("LM_SECRETS_BACKEND", "vault", "LM_SECRETS_BACKEND"),
        ("EXTERNAL_SERVER_URL", "lm.example.org", "EXTERNAL_SERVER_URL"),
        ("EXTERNAL_SERVER_URL", "ftp://lm.example.org", "EXTERNAL_SERVER_URL"),
        ("EXTERNAL_SERVER_URL", "https://", "EXTERNAL_SERVER_URL"),
        ("LM_LSAAI_ISSUER", "login.aai.lifescience-ri.eu/oidc", "LM_LSAAI_ISSUER"),
        ("LM_LSAAI_ISSUER", "ftp://login.example/oidc/", "LM_LSAAI_ISSUER"),
    ],
)
def test_invalid_values_raise(monkeypatch, name, value, match):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=match):
        get_settings()


def test_lsaai_login_settings(monkeypatch):
    s = get_settings()
    assert s.lsaai_client_id is None  # no LS AAI button
    assert s.lsaai_issuer == "https://login.aai.lifescience-ri.eu/oidc"
    monkeypatch.setenv("LM_LSAAI_CLIENT_ID", "  lm-client  ")
    monkeypatch.setenv("LM_LSAAI_ISSUER", "http://127.0.0.1:9/oidc/")
    s = get_settings()
    assert (s.lsaai_client_id, s.lsaai_issuer) == ("lm-client", "http://127.0.0.1:9/oidc")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("value", ["1", "true", "yes", "ON"])
def test_allow_private_urls_flag(monkeypatch, value):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", value)
    assert get_settings().allow_private_urls is True


@pytest.mark.parametrize("value", ["", "0", "no", "off"])
def test_allow_private_urls_off(monkeypatch, value):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", value)
    assert get_settings().allow_private_urls is False


@pytest.mark.parametrize("stage", ["prod", "production", "staging"])
def test_allow_private_urls_refused_on_deployed_stages(monkeypatch, stage):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("LM_STAGE", stage)
    with pytest.raises(ConfigError, match="ALLOW_PRIVATE_URLS"):
        get_settings()


def test_allow_private_urls_refused_in_lambda(monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "lifemonitor-test-api_handler")
    with pytest.raises(ConfigError, match="ALLOW_PRIVATE_URLS"):
        get_settings()


def test_changed_environment_is_honoured(monkeypatch, tmp_path):
    first = get_settings()
    assert first.stage == "test"
    assert get_settings() is first  # memoised while the environment is unchanged
    monkeypatch.setenv("LM_STAGE", "other")
    monkeypatch.setenv("LM_DATA_DIR", str(tmp_path / "d2"))
    second = get_settings()
    assert second.stage == "other"
    assert second.ssm_prefix == "/lifemonitor/other/"
    assert second.data_dir == (tmp_path / "d2").resolve()
    monkeypatch.setenv("LM_STAGE", "test")
    monkeypatch.setenv("LM_DATA_DIR", str(first.data_dir))
    assert get_settings() == first


def test_invalid_environment_then_fixed(monkeypatch):
    monkeypatch.setenv("PORT", "nope")
    with pytest.raises(ConfigError):
        get_settings()
    monkeypatch.setenv("PORT", "8001")
    assert get_settings().stage == "test"


def _import_in_subprocess(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_app_does_not_read_settings(tmp_path):
    # Every setting is invalid: importing must still work (chalice package imports app.py).
    proc = _import_in_subprocess(
        "import app; print(type(app.app).__name__)",
        LM_SECRETS_BACKEND="bogus",
        PORT="not-a-port",
        EXTERNAL_SERVER_URL="nope",
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        LM_DATA_DIR=str(tmp_path / "x"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Chalice"
    assert not Path(tmp_path / "x").exists()  # nothing created at import


def test_settings_raise_in_subprocess_with_the_same_environment():
    # Control for the test above: the same environment is indeed invalid.
    proc = _import_in_subprocess(
        "from chalicelib.config import get_settings; get_settings()",
        LM_SECRETS_BACKEND="bogus",
    )
    assert proc.returncode != 0
    assert "ConfigError" in proc.stderr


def test_email_backend(monkeypatch):
    from chalicelib.config import ConfigError, get_settings

    assert get_settings().email_backend == "log"  # the embedded default prints mails
    monkeypatch.setenv("LM_EMAIL_BACKEND", "ses")
    assert get_settings().email_backend == "ses"
    monkeypatch.setenv("LM_EMAIL_BACKEND", "smtp")
    with pytest.raises(ConfigError, match="LM_EMAIL_BACKEND"):
        get_settings()
    monkeypatch.delenv("LM_EMAIL_BACKEND")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "lifemonitor-prod-notify")
    assert get_settings().email_backend == "ses"  # Lambda sends through SES by default
    monkeypatch.setenv("LM_EMAIL_BACKEND", "log")
    with pytest.raises(ConfigError, match="development only"):
        get_settings()


def test_notification_settings(monkeypatch):
    from chalicelib.config import ConfigError, get_settings

    s = get_settings()
    assert (s.notification_retention_days, s.stale_after_days) == (90, 30)
    assert s.webhook_queue_url is None and s.webhook_disable_after == 10
    monkeypatch.setenv("LM_NOTIFICATION_RETENTION_DAYS", "0")
    with pytest.raises(ConfigError):
        get_settings()
