"""Structured JSON logs (Powertools' formatter) with the request id, and no secrets."""

from __future__ import annotations

import contextvars
import logging
import re
import sys

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Credentials that could reach a log line through a library's message or an exception.
_SECRET = re.compile(
    r"(?i)((?:client_secret|access_token|refresh_token|password|api_?key|authorization|"
    r"secret|token)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?)[^\s&\"',}\\]+"
)


def redact(text: str) -> str:
    return _SECRET.sub(r"\1[REDACTED]", text)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def _redacting(formatter_cls):
    """Redact the finished line — message, arguments of any type and exception text all
    end up in it — rather than guessing at the parts."""

    class Redacting(formatter_cls):
        def format(self, record: logging.LogRecord) -> str:
            return redact(super().format(record))

    return Redacting


def _install_record_factory() -> None:
    """Redact each record's message when it is made, so every handler — ours, the Lambda
    runtime's, a test runner's — sees the redacted text (arguments of any type included)."""
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it for logging's own error report
            return record
        redacted = redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return record

    logging.setLogRecordFactory(factory)


_configured = False


def configure(level: str | None = None) -> None:
    """Install the JSON handler on the root logger once per process."""
    global _configured
    if _configured:
        return
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    from chalicelib.config import get_settings

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_redacting(LambdaPowertoolsFormatter)(service="lifemonitor"))
    handler.addFilter(_ContextFilter())
    # Lambda's runtime and `chalice local` install plain handlers; ours replaces them.
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if level is None:
        from chalicelib.config import ConfigError

        try:
            level = get_settings().log_level
        except ConfigError:
            # A broken environment is reported by the request that meets it (a problem+json
            # 500, logged); logging itself must still come up.
            level = "INFO"
    root.setLevel(level)
    _install_record_factory()
    for noisy in ("botocore", "boto3", "urllib3", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = True
