"""The parameter store: every secret the service uses comes through here.

Keys are paths relative to the stage prefix (``/lifemonitor/<stage>/``), e.g.
``registries/seek/client_secret``. Two backends share that interface:

* ``ssm``: SSM Parameter Store SecureString parameters, all read with one paginated
  ``get_parameters_by_path`` listing and cached per container (Powertools' provider,
  TTL from ``LM_SECRETS_TTL``). boto3 honours ``AWS_ENDPOINT_URL``, so LocalStack or a
  moto server work unchanged.
* ``file``: the embedded default, the same keys in a 0600 JSON file under the data dir.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from chalicelib.config import Settings, get_settings

_KEY = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


class SecretError(RuntimeError):
    """The parameter store could not be read or written."""


class SecretStore(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...

    def put_if_absent(self, key: str, value: str) -> str: ...

    def delete(self, key: str) -> None: ...

    def all(self) -> dict[str, str]: ...


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"invalid secret key {key!r}")
    return key


class FileSecretStore:
    """Secrets in one JSON file, readable by its owner only."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, str]] | None = None

    def _load(self) -> dict[str, str]:
        """This stage's secrets (do not mutate). Parsed again only when the file changed:
        a refresh reads CI credentials once per fetch, and a `stat` is far cheaper than
        reading and parsing the file. Writes replace the file (a new inode), so a change
        is never missed, whoever made it."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._cache
            if cached is not None and cached[0] == stamp:
                return cached[1]
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise SecretError(f"cannot read secrets file {self.path}: {exc}") from None
        values = {k[len(self.prefix) :]: v for k, v in data.items() if k.startswith(self.prefix)}
        self._cache = (stamp, values)
        return values

    def _save(self, values: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            existing = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            existing = {}
        # Keep other stages' keys; replace this stage's.
        merged = {k: v for k, v in existing.items() if not k.startswith(self.prefix)}
        merged.update({self.prefix + k: v for k, v in values.items()})
        # Write-then-rename with 0600 from the start: the secret is never world-readable.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".secrets-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(merged, fh, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One writer at a time, across threads and processes (`make start` runs the API
        and the runner apart, both writing here): each read-modify-write holds an
        exclusive lock on the file's folder (no lock file left beside the secrets)."""
        import fcntl

        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    def get(self, key: str) -> str | None:
        return self._load().get(check_key(key))

    def put(self, key: str, value: str) -> None:
        with self._writing():
            values = dict(self._load())
            values[check_key(key)] = value
            self._save(values)

    def put_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless `key` has one; the stored value either way (the first
        writer's, when two race to create a key)."""
        with self._writing():
            values = dict(self._load())
            current = values.get(check_key(key))
            if current is not None:
                return current
            values[key] = value
            self._save(values)
            return value

    def delete(self, key: str) -> None:
        with self._writing():
            values = dict(self._load())
            if values.pop(check_key(key), None) is not None:
                self._save(values)

    def all(self) -> dict[str, str]:
        return dict(self._load())


class SsmSecretStore:
    """SecureString parameters under the stage prefix, cached per container."""

    def __init__(self, prefix: str, ttl: int) -> None:
        self.prefix = prefix
        self.ttl = ttl
        self._client = None
        self._provider = None

    def _ssm(self):
        if self._client is None:
            import boto3  # lazy: boto3 costs ~150 ms of cold start

            self._client = boto3.client("ssm")
        return self._client

    def _params(self):
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SSMProvider

            self._provider = SSMProvider(boto3_client=self._ssm())
        return self._provider

    def all(self) -> dict[str, str]:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        try:
            # One paginated get_parameters_by_path listing, cached for `ttl` seconds.
            values = self._params().get_multiple(
                self.prefix.rstrip("/"), max_age=self.ttl, decrypt=True, recursive=True
            )
        except GetParameterError as exc:
            raise SecretError(f"cannot read parameters under {self.prefix}: {exc}") from None
        return {k.lstrip("/"): v for k, v in values.items()}

    def get(self, key: str) -> str | None:
        return self.all().get(check_key(key))

    def put(self, key: str, value: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._ssm().put_parameter(
                Name=self.prefix + check_key(key),
                Value=value,
                Type="SecureString",
                Overwrite=True,
            )
        except (BotoCoreError, ClientError) as exc:
            raise SecretError(f"cannot write parameter {key}: {exc}") from None
        self.invalidate()

    def put_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless the parameter exists (`Overwrite=False`, atomic in SSM); the
        stored value either way: of two Lambdas creating a key at once, both get the first
        one's."""
        from botocore.exceptions import BotoCoreError, ClientError

        name = self.prefix + check_key(key)
        try:
            self._ssm().put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=False)
            self.invalidate()
            return value
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ParameterAlreadyExists":
                raise SecretError(f"cannot write parameter {key}: {exc}") from None
        except BotoCoreError as exc:
            raise SecretError(f"cannot write parameter {key}: {exc}") from None
        self.invalidate()
        try:
            found = self._ssm().get_parameter(Name=name, WithDecryption=True)
        except (BotoCoreError, ClientError) as exc:
            raise SecretError(f"cannot read parameter {key}: {exc}") from None
        return found["Parameter"]["Value"]

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._ssm().delete_parameter(Name=self.prefix + check_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ParameterNotFound":
                raise SecretError(f"cannot delete parameter {key}: {exc}") from None
        except BotoCoreError as exc:
            raise SecretError(f"cannot delete parameter {key}: {exc}") from None
        self.invalidate()

    def invalidate(self) -> None:
        if self._provider is not None:
            self._provider.clear_cache()


_stores: dict[tuple, SecretStore] = {}
_stores_lock = threading.Lock()


def get_secrets(settings: Settings | None = None) -> SecretStore:
    """The store for the current settings, memoised per container."""
    s = settings or get_settings()
    key = (s.secrets_backend, s.ssm_prefix, str(s.secrets_file), s.secrets_ttl)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            if s.secrets_backend == "ssm":
                store = SsmSecretStore(s.ssm_prefix, s.secrets_ttl)
            else:
                store = FileSecretStore(s.secrets_file, s.ssm_prefix)
            _stores[key] = store
    return store


def reset() -> None:
    """Forget memoised stores (tests switch backends)."""
    with _stores_lock:
        _stores.clear()
