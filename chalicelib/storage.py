"""Where submitted RO-Crate zips are kept: S3 (`LM_CRATE_BUCKET`) when deployed, a folder
under the data dir in the embedded default. Locations are stored on the version row as
`s3://bucket/key` or `file:relative/path`."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from chalicelib.config import get_settings

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class StorageError(RuntimeError):
    pass


def _key(workflow_uuid: str, version_uuid: str) -> str:
    for part in (workflow_uuid, version_uuid):
        if not _SAFE.match(part) or part in {".", ".."}:
            raise StorageError(f"unsafe storage key part {part!r}")
    return f"workflows/{workflow_uuid}/{version_uuid}.zip"


def put_crate(workflow_uuid: str, version_uuid: str, data: bytes) -> str:
    return _put(_key(workflow_uuid, version_uuid), data)


def put_job_crate(job_uuid: str, data: bytes) -> str:
    """An uploaded crate waiting for its asynchronous registration (deleted once it ran)."""
    if not _SAFE.match(job_uuid) or job_uuid in {".", ".."}:
        raise StorageError(f"unsafe storage key part {job_uuid!r}")
    return _put(f"jobs/{job_uuid}.zip", data)


def _put(key: str, data: bytes) -> str:
    settings = get_settings()
    if settings.crate_bucket:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            _s3().put_object(
                Bucket=settings.crate_bucket, Key=key, Body=data, ContentType="application/zip"
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot store crate: {exc}") from None
        return f"s3://{settings.crate_bucket}/{key}"
    path = settings.crates_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename: a reader never sees half a zip.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".crate-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return f"file:{key}"


def get_crate(location: str | None) -> bytes | None:
    """The stored bytes, or None if they are gone."""
    if not location:
        return None
    if location.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = location[5:].partition("/")
        try:
            return _s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                return None
            raise StorageError(f"cannot read crate: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot read crate: {exc}") from None
    path = _local_path(location)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def delete_crate(location: str | None) -> None:
    if not location:
        return
    if location.startswith("s3://"):
        bucket, _, key = location[5:].partition("/")
        _s3().delete_object(Bucket=bucket, Key=key)
        return
    _local_path(location).unlink(missing_ok=True)


def remove_crates(locations: list[str]) -> None:
    """Delete crates whose rows are gone, after the commit: a leftover file is harmless,
    a missing one for a live row is not; a failure is logged, never raised."""
    import logging

    for location in locations:
        try:
            delete_crate(location)
        except Exception:
            logging.getLogger(__name__).exception("could not delete crate %s", location)


def _local_path(location: str) -> Path:
    if not location.startswith("file:"):
        raise StorageError(f"unknown crate location {location!r}")
    base = get_settings().crates_dir.resolve()
    path = (base / location[5:]).resolve()
    if base not in path.parents:
        raise StorageError("crate location escapes the crates folder")
    return path


_client = None


def _s3():
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("s3")
    return _client


def reset() -> None:
    global _client
    _client = None
