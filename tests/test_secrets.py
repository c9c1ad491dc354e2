"""The parameter store: the file backend and the SSM backend (moto)."""

from __future__ import annotations

import json
import stat

import pytest
from moto import mock_aws

from chalicelib import secrets
from chalicelib.config import get_settings
from chalicelib.secrets import FileSecretStore, SecretError, SsmSecretStore, get_secrets

# --- file backend -----------------------------------------------------------------------


def test_file_round_trip(tmp_path):
    store = FileSecretStore(tmp_path / "s" / "secrets.json", "/lifemonitor/test/")
    assert store.get("a/b") is None
    assert store.all() == {}
    store.put("a/b", "one")
    store.put("c", "two")
    store.put("a/b", "three")  # overwrite
    assert store.get("a/b") == "three"
    assert store.all() == {"a/b": "three", "c": "two"}
    store.delete("c")
    assert store.all() == {"a/b": "three"}
    on_disk = json.loads((tmp_path / "s" / "secrets.json").read_text())
    assert on_disk == {"/lifemonitor/test/a/b": "three"}


def test_file_is_owner_only(tmp_path):
    path = tmp_path / "secrets.json"
    store = FileSecretStore(path, "/lifemonitor/test/")
    store.put("k", "v")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.put("k2", "v2")  # rewritten: still 0600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # No temporary files are left next to it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secrets.json"]


def test_two_stages_share_one_file(tmp_path):
    path = tmp_path / "secrets.json"
    test = FileSecretStore(path, "/lifemonitor/test/")
    dev = FileSecretStore(path, "/lifemonitor/dev/")
    test.put("k", "test-value")
    dev.put("k", "dev-value")
    dev.put("only-dev", "x")
    assert test.all() == {"k": "test-value"}
    assert dev.all() == {"k": "dev-value", "only-dev": "x"}
    test.delete("k")
    assert test.all() == {}
    assert dev.get("k") == "dev-value"
    assert json.loads(path.read_text()) == {
        "/lifemonitor/dev/k": "dev-value",
        "/lifemonitor/dev/only-dev": "x",
    }


def test_file_is_parsed_again_only_when_it_changed(tmp_path, monkeypatch):
    """Reads are served from the parsed file until it changes — by this store, another
    store on the same file (another process), or a hand edit."""
    path = tmp_path / "secrets.json"
    store = FileSecretStore(path, "/lifemonitor/test/")
    other = FileSecretStore(path, "/lifemonitor/test/")
    store.put("k", "one")
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr(secrets.json, "loads", lambda text: parsed.append(1) or real_loads(text))
    assert [store.get("k") for _ in range(5)] == ["one"] * 5
    assert len(parsed) <= 1
    other.put("k", "two")  # write-then-rename: a new file
    assert store.get("k") == "two"
    path.write_text(json.dumps({"/lifemonitor/test/k": "hand-edited!"}))  # in place
    assert store.get("k") == "hand-edited!"
    store.all()["k"] = "mutated copy"
    assert store.get("k") == "hand-edited!"


@pytest.mark.parametrize("key", ["", "/abs", "trailing/", "a//b", "sp ace", "a/../b?", "é"])
def test_file_rejects_invalid_keys(tmp_path, key):
    path = tmp_path / "secrets.json"
    store = FileSecretStore(path, "/lifemonitor/test/")
    with pytest.raises(ValueError, match="invalid secret key"):
        store.put(key, "v")
    with pytest.raises(ValueError, match="invalid secret key"):
        store.get(key)
    with pytest.raises(ValueError, match="invalid secret key"):
        store.delete(key)
    assert not path.exists()


def test_file_delete_of_missing_key_is_fine(tmp_path):
    path = tmp_path / "secrets.json"
    store = FileSecretStore(path, "/lifemonitor/test/")
    store.delete("missing")  # no file at all
    assert not path.exists()
    store.put("k", "v")
    store.delete("missing")
    assert store.all() == {"k": "v"}


def test_file_corrupt_raises_secret_error(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text("{not json")
    with pytest.raises(SecretError, match="cannot read secrets file"):
        FileSecretStore(path, "/lifemonitor/test/").all()


def test_get_secrets_file_backend_uses_the_data_dir():
    store = get_secrets()
    assert isinstance(store, FileSecretStore)
    settings = get_settings()
    assert store.path == settings.secrets_file
    assert store.prefix == "/lifemonitor/test/"
    assert get_secrets() is store  # memoised
    store.put("x/y", "z")
    assert json.loads(settings.secrets_file.read_text()) == {"/lifemonitor/test/x/y": "z"}


def test_get_secrets_follows_the_environment(monkeypatch, tmp_path):
    first = get_secrets()
    monkeypatch.setenv("LM_DATA_DIR", str(tmp_path / "other"))
    second = get_secrets()
    assert second is not first
    assert second.path == (tmp_path / "other").resolve() / "secrets.json"


# --- SSM backend ------------------------------------------------------------------------


@pytest.fixture
def ssm():
    with mock_aws():
        import boto3

        yield boto3.client("ssm")


def _count_listings(store: SsmSecretStore) -> list[dict]:
    calls: list[dict] = []
    store._ssm().meta.events.register(
        "before-call.ssm.GetParametersByPath",
        lambda params, **_: calls.append(json.loads(params["body"])),
    )
    return calls


def test_ssm_put_get_all_delete(ssm):
    store = SsmSecretStore("/lifemonitor/test/", 300)
    assert store.all() == {}
    store.put("registries/r1/client_secret", "s3cret")
    store.put("database/url", "postgresql://u:p@h/db")
    assert store.get("registries/r1/client_secret") == "s3cret"
    assert store.get("missing") is None
    assert store.all() == {
        "registries/r1/client_secret": "s3cret",
        "database/url": "postgresql://u:p@h/db",
    }
    store.put("database/url", "changed")
    assert store.get("database/url") == "changed"
    store.delete("database/url")
    assert store.all() == {"registries/r1/client_secret": "s3cret"}
    store.delete("database/url")  # already gone: fine


def test_ssm_values_are_secure_strings_under_the_prefix(ssm):
    store = SsmSecretStore("/lifemonitor/test/", 300)
    store.put("a/b", "value")
    params = ssm.get_parameters_by_path(Path="/", Recursive=True)["Parameters"]
    assert [(p["Name"], p["Type"]) for p in params] == [("/lifemonitor/test/a/b", "SecureString")]
    got = ssm.get_parameter(Name="/lifemonitor/test/a/b", WithDecryption=True)["Parameter"]
    assert got["Value"] == "value"


def test_ssm_stages_do_not_see_each_other(ssm):
    test = SsmSecretStore("/lifemonitor/test/", 300)
    testing = SsmSecretStore("/lifemonitor/testing/", 300)
    test.put("k", "1")
    testing.put("k", "2")
    assert test.all() == {"k": "1"}
    assert testing.all() == {"k": "2"}


def test_ssm_invalid_keys_rejected(ssm):
    store = SsmSecretStore("/lifemonitor/test/", 300)
    with pytest.raises(ValueError, match="invalid secret key"):
        store.put("a b", "v")
    with pytest.raises(ValueError, match="invalid secret key"):
        store.delete("/x")
    assert ssm.describe_parameters()["Parameters"] == []


def test_ssm_all_is_cached_within_the_ttl(ssm):
    store = SsmSecretStore("/lifemonitor/test/", 300)
    store.put("k", "v")
    calls = _count_listings(store)
    assert store.all() == {"k": "v"}
    assert store.get("k") == "v"
    assert store.all() == {"k": "v"}
    assert len(calls) == 1
    # Written behind our back: the cache still answers (it is a cache).
    ssm.put_parameter(
        Name="/lifemonitor/test/k", Value="outside", Type="SecureString", Overwrite=True
    )
    assert store.get("k") == "v"
    assert len(calls) == 1
    # Our own put invalidates it.
    store.put("k2", "v2")
    assert store.all() == {"k": "outside", "k2": "v2"}
    assert len(calls) == 2
    store.delete("k2")
    assert store.all() == {"k": "outside"}
    assert len(calls) == 3


def test_ssm_ttl_zero_does_not_cache(ssm):
    store = SsmSecretStore("/lifemonitor/test/", 0)
    calls = _count_listings(store)
    store.all()
    store.all()
    assert len(calls) == 2


def test_ssm_more_than_ten_parameters(ssm):
    store = SsmSecretStore("/lifemonitor/test/", 300)
    for i in range(23):
        ssm.put_parameter(Name=f"/lifemonitor/test/p/{i:02d}", Value=f"v{i}", Type="SecureString")
    calls = _count_listings(store)
    values = store.all()
    assert values == {f"p/{i:02d}": f"v{i}" for i in range(23)}
    assert len(calls) >= 3  # SSM pages by at most 10
    assert all(c["Path"] == "/lifemonitor/test" and c["Recursive"] for c in calls)
    assert "NextToken" not in calls[0]
    assert all(c.get("NextToken") for c in calls[1:])


def test_ssm_unreadable_raises_secret_error(monkeypatch):
    with mock_aws():
        store = SsmSecretStore("/lifemonitor/test/", 300)
        store._ssm()  # the client exists; now make listing fail

        def boom(params, **_):
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetParametersByPath"
            )

        store._ssm().meta.events.register("before-call.ssm.GetParametersByPath", boom)
        with pytest.raises(SecretError, match="cannot read parameters"):
            store.all()


def test_get_secrets_picks_ssm_from_the_environment(monkeypatch, ssm):
    monkeypatch.setenv("LM_SECRETS_BACKEND", "ssm")
    monkeypatch.setenv("LM_SECRETS_TTL", "60")
    store = get_secrets()
    assert isinstance(store, SsmSecretStore)
    assert store.prefix == "/lifemonitor/test/"
    assert store.ttl == 60
    assert get_secrets() is store
    store.put("x", "y")
    assert (
        ssm.get_parameter(Name="/lifemonitor/test/x", WithDecryption=True)["Parameter"]["Value"]
        == "y"
    )
    assert not get_settings().secrets_file.exists()
    monkeypatch.setenv("LM_SECRETS_BACKEND", "file")
    assert isinstance(get_secrets(), FileSecretStore)


def test_reset_forgets_stores():
    first = get_secrets()
    secrets.reset()
    assert get_secrets() is not first


# --- created once: put_if_absent ---------------------------------------------------------


def _race_file_store(path: str, value: str, start, out) -> None:
    from pathlib import Path

    start.wait(10)
    out.put(FileSecretStore(Path(path), "/lifemonitor/test/").put_if_absent("k", value))


def test_file_put_if_absent_keeps_the_first_value_across_processes(tmp_path):
    """Eight processes create one key at once: one value is stored and all of them get it;
    nothing else in the file is lost."""
    import multiprocessing

    path = tmp_path / "secrets.json"
    FileSecretStore(path, "/lifemonitor/test/").put("other", "kept")
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_race_file_store, args=(str(path), f"v{i}", start, out))
        for i in range(8)
    ]
    for p in procs:
        p.start()
    start.set()
    got = {out.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(30)
    store = FileSecretStore(path, "/lifemonitor/test/")
    assert got == {store.get("k")}
    assert store.get("other") == "kept"
    assert store.put_if_absent("k", "later") == store.get("k")


def test_ssm_put_if_absent_keeps_the_first_value(ssm):
    first = SsmSecretStore("/lifemonitor/test/", 300)
    second = SsmSecretStore("/lifemonitor/test/", 300)
    assert second.all() == {}  # cached empty: the second container saw no key yet
    assert first.put_if_absent("web/session_key", "one") == "one"
    assert second.put_if_absent("web/session_key", "two") == "one"
    assert second.get("web/session_key") == "one"
    param = ssm.get_parameter(Name="/lifemonitor/test/web/session_key", WithDecryption=True)
    assert param["Parameter"]["Value"] == "one" and param["Parameter"]["Type"] == "SecureString"


def test_ssm_put_if_absent_failure_is_a_secret_error(monkeypatch):
    with mock_aws():
        store = SsmSecretStore("/lifemonitor/test/", 300)
        from botocore.exceptions import ClientError

        def refuse(**_):
            raise ClientError({"Error": {"Code": "AccessDeniedException"}}, "PutParameter")

        monkeypatch.setattr(store._ssm(), "put_parameter", refuse)
        with pytest.raises(SecretError, match="cannot write parameter k"):
            store.put_if_absent("k", "v")
