"""The crate store (chalicelib/storage.py): the local folder backend under the data dir and
the S3 backend (moto), locations, and refusal of anything that would leave the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chalicelib import storage
from chalicelib.config import get_settings
from chalicelib.storage import StorageError

WF, V = "0f6b4a4e-5d0c-4c59-9b43-4f2d3f1c9a01", "7c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
DATA = b"PK\x05\x06" + b"\x00" * 18  # an empty zip


@pytest.fixture
def crates_dir() -> Path:
    storage.reset()
    yield get_settings().crates_dir
    storage.reset()


# -- local folder ----------------------------------------------------------------------------


def test_local_put_get_delete(crates_dir):
    location = storage.put_crate(WF, V, DATA)
    assert location == f"file:workflows/{WF}/{V}.zip"
    path = crates_dir / "workflows" / WF / f"{V}.zip"
    assert path.read_bytes() == DATA
    assert storage.get_crate(location) == DATA
    assert [p.name for p in path.parent.iterdir()] == [f"{V}.zip"]  # no temp files left
    storage.delete_crate(location)
    assert not path.exists()
    assert storage.get_crate(location) is None
    storage.delete_crate(location)  # deleting twice is fine


def test_local_put_replaces(crates_dir):
    storage.put_crate(WF, V, DATA)
    location = storage.put_crate(WF, V, b"second")
    assert storage.get_crate(location) == b"second"


def test_versions_of_a_workflow_are_kept_apart(crates_dir):
    a = storage.put_crate(WF, "a", b"A")
    b = storage.put_crate(WF, "b", b"B")
    storage.delete_crate(a)
    assert storage.get_crate(b) == b"B"


def test_nothing_stored_is_none(crates_dir):
    assert storage.get_crate(None) is None
    assert storage.get_crate("") is None
    storage.delete_crate(None)
    assert storage.get_crate(f"file:workflows/{WF}/missing.zip") is None


@pytest.mark.parametrize(
    ("workflow", "version"),
    [
        ("../escape", V),
        (WF, "../../secrets"),
        ("a/b", V),
        (WF, "x/../../y"),
        ("", V),
        (WF, ""),
        (WF, "name with space"),
        (WF, "v\x00.zip"),
        (WF, "C:\\x"),
        pytest.param("..", V),
        pytest.param(".", V),
    ],
)
def test_unsafe_key_parts_are_refused(crates_dir, workflow, version):
    with pytest.raises(StorageError):
        storage.put_crate(workflow, version, DATA)
    assert not any(crates_dir.rglob("*")) if crates_dir.exists() else True


@pytest.mark.parametrize(
    "location",
    [
        "file:../secrets.json",
        "file:../../etc/passwd",
        "file:/etc/passwd",
        "file:workflows/../../secrets.json",
        "file:workflows/./../../x",
        "file:",
        "file:.",
        "http://example.org/crate.zip",
        "workflows/x.zip",
        "S3://bucket/x",
    ],
)
def test_locations_outside_the_store_are_refused(crates_dir, location):
    secrets = crates_dir.parent / "secrets.json"
    secrets.parent.mkdir(parents=True, exist_ok=True)
    secrets.write_text("{}")
    with pytest.raises(StorageError):
        storage.get_crate(location)
    with pytest.raises(StorageError):
        storage.delete_crate(location)
    assert secrets.exists()


def test_a_symlink_out_of_the_store_is_refused(crates_dir, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not a crate")
    link = crates_dir / "workflows" / WF / "link.zip"
    link.parent.mkdir(parents=True)
    os.symlink(outside, link)
    with pytest.raises(StorageError):
        storage.get_crate(f"file:workflows/{WF}/link.zip")
    with pytest.raises(StorageError):
        storage.delete_crate(f"file:workflows/{WF}/link.zip")
    assert outside.exists()


def test_the_store_follows_the_data_dir(crates_dir, tmp_path, monkeypatch):
    location = storage.put_crate(WF, V, DATA)
    monkeypatch.setenv("LM_DATA_DIR", str(tmp_path / "elsewhere"))
    assert storage.get_crate(location) is None
    assert storage.put_crate(WF, V, b"new") == location
    assert (tmp_path / "elsewhere" / "crates" / "workflows" / WF / f"{V}.zip").exists()


# -- S3 ----------------------------------------------------------------------------------------

BUCKET = "lm-crates-test"


@pytest.fixture
def s3(monkeypatch, crates_dir):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("LM_CRATE_BUCKET", BUCKET)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        storage.reset()
        yield client
        storage.reset()


def test_s3_put_get_delete(s3, crates_dir):
    location = storage.put_crate(WF, V, DATA)
    assert location == f"s3://{BUCKET}/workflows/{WF}/{V}.zip"
    obj = s3.get_object(Bucket=BUCKET, Key=f"workflows/{WF}/{V}.zip")
    assert obj["Body"].read() == DATA
    assert obj["ContentType"] == "application/zip"
    assert storage.get_crate(location) == DATA
    assert not crates_dir.exists() or not any(crates_dir.rglob("*.zip"))  # nothing local
    storage.delete_crate(location)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
    assert storage.get_crate(location) is None


def test_s3_missing_key_is_none(s3):
    assert storage.get_crate(f"s3://{BUCKET}/workflows/{WF}/nope.zip") is None


def test_s3_missing_bucket_is_a_storage_error(s3, monkeypatch):
    with pytest.raises(StorageError):
        storage.get_crate("s3://no-such-bucket-here/workflows/x.zip")
    monkeypatch.setenv("LM_CRATE_BUCKET", "no-such-bucket-here")
    with pytest.raises(StorageError, match="cannot store crate"):
        storage.put_crate(WF, V, DATA)


def test_s3_unsafe_key_parts_are_refused(s3):
    with pytest.raises(StorageError):
        storage.put_crate("../x", V, DATA)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_local_crates_stay_readable_after_moving_to_s3(crates_dir, monkeypatch):
    import boto3
    from moto import mock_aws

    local = storage.put_crate(WF, V, b"from before")
    monkeypatch.setenv("LM_CRATE_BUCKET", BUCKET)
    with mock_aws():
        boto3.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        storage.reset()
        remote = storage.put_crate(WF, "other", b"to s3")
        assert remote.startswith("s3://")
        assert storage.get_crate(local) == b"from before"
        assert storage.get_crate(remote) == b"to s3"


def test_reset_drops_the_memoised_client(s3):
    storage.put_crate(WF, V, DATA)
    first = storage._s3()
    assert storage._s3() is first
    storage.reset()
    assert storage._s3() is not first
