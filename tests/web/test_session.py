"""The signed cookie session: round trip, forgery, expiry, cookie attributes, CSRF and
the `next` check."""

from __future__ import annotations

import time

import pytest

from chalicelib.errors import ForbiddenError
from chalicelib.web import session as S


def cookie_header(set_cookie: str) -> dict[str, str]:
    return {"cookie": set_cookie.split(";")[0]}


def test_round_trip_keeps_values_and_user():
    s = S.WebSession()
    S.login(s, 42, "alice")
    s["pending"] = {"provider": "github"}
    loaded = S.load_session(cookie_header(S.session_cookie(s)))
    assert loaded.user_id == 42
    assert loaded["pending"] == {"provider": "github"}
    assert loaded["username"] == "alice"
    assert not loaded.modified


def test_no_cookie_is_an_empty_session():
    assert S.load_session({}) == {}
    assert S.load_session({"cookie": "other=1; x"}) == {}
    assert S.load_session(None) == {}


def test_forged_cookie_is_an_empty_session():
    s = S.WebSession()
    S.login(s, 1)
    value = S.session_cookie(s).split(";")[0].split("=", 1)[1]
    payload, _, _sig = value.rpartition(".")
    # Another user id with the old signature, a random signature, plain garbage.
    forged = S.WebSession()
    S.login(forged, 2)
    other = S.session_cookie(forged).split(";")[0].split("=", 1)[1]
    for bad in (
        other.split(".")[0] + value[len(value.split(".")[0]) :],
        payload + ".AAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "garbage",
        "",
    ):
        loaded = S.load_session({"cookie": f"{S.COOKIE_NAME}={bad}"})
        assert loaded.user_id is None, bad
        assert loaded == {}


def test_cookie_signed_with_another_key_is_refused():
    from chalicelib.secrets import get_secrets

    s = S.WebSession()
    S.login(s, 7)
    header = cookie_header(S.session_cookie(s))
    get_secrets().put(S.SIGNING_KEY_NAME, "a-brand-new-key-after-rotation-0123456789")
    assert S.load_session(header).user_id is None


def test_stale_cookie_is_an_empty_session(monkeypatch):
    s = S.WebSession()
    S.login(s, 5)
    header = cookie_header(S.session_cookie(s))
    later = time.time() + S.MAX_AGE + 10
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: later)
    assert S.load_session(header) == {}


def test_an_old_but_valid_session_is_signed_again(monkeypatch):
    s = S.WebSession()
    S.login(s, 5)
    header = cookie_header(S.session_cookie(s))
    later = time.time() + S.RENEW_AFTER + 10
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: later)
    monkeypatch.setattr(S.time, "time", lambda: later)
    loaded = S.load_session(header)
    assert loaded.user_id == 5 and loaded.modified


def test_cookie_attributes_local_and_deployed(monkeypatch):
    s = S.WebSession(a=1)
    local = S.session_cookie(s)
    assert local.startswith(f"{S.COOKIE_NAME}=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in local
    assert "Secure" not in local  # http://lm.test, a test stage
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://lm.example/api")
    secure = S.session_cookie(s)
    assert "; Secure" in secure and "Path=/api" in secure


@pytest.mark.parametrize("stage", ["test", "prod"])
def test_key_is_created_on_first_use_in_every_stage(monkeypatch, stage):
    from chalicelib.secrets import get_secrets

    monkeypatch.setenv("LM_STAGE", stage)
    if stage == "prod":
        monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://lm.example")
        monkeypatch.setenv("LM_EMAIL_BACKEND", "ses")
    get_secrets().delete(S.SIGNING_KEY_NAME)
    S.session_cookie(S.WebSession(a=1))
    assert len(get_secrets().get(S.SIGNING_KEY_NAME) or "") >= 32


def test_concurrent_first_uses_agree_on_one_key():
    from concurrent.futures import ThreadPoolExecutor

    from chalicelib.secrets import get_secrets

    get_secrets().delete(S.SIGNING_KEY_NAME)
    S._serializers.clear()
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: S._signing_key(), range(16)))
    assert keys == {get_secrets().get(S.SIGNING_KEY_NAME)}


def test_key_is_created_once_for_local_stages():
    from chalicelib.secrets import get_secrets

    S.session_cookie(S.WebSession(a=1))
    key = get_secrets().get(S.SIGNING_KEY_NAME)
    assert key and len(key) >= 32
    S.session_cookie(S.WebSession(a=2))
    assert get_secrets().get(S.SIGNING_KEY_NAME) == key


def test_empty_session_deletes_the_cookie():
    assert "Max-Age=0" in S.session_cookie(S.WebSession())


def test_modified_tracks_every_mutation():
    s = S.WebSession(a=1)
    assert not s.modified
    s.get("a")
    assert not s.modified
    s["b"] = 2
    assert s.modified
    for mutate in (
        lambda x: x.pop("a"),
        lambda x: x.update(c=1),
        lambda x: x.clear(),
        lambda x: x.setdefault("z", 1),
        lambda x: x.__delitem__("a"),
    ):
        t = S.WebSession(a=1)
        mutate(t)
        assert t.modified


def test_user_id_is_an_int_or_none():
    assert S.WebSession(user_id="3").user_id is None
    assert S.WebSession(user_id=True).user_id is None
    assert S.WebSession(user_id=3).user_id == 3


def test_csrf_token_checked_and_rotated_by_login_and_logout():
    s = S.WebSession()
    token = S.csrf_token(s)
    assert S.csrf_token(s) == token
    S.check_csrf(s, token)
    for bad in (None, "", token + "x", token[:-1]):
        with pytest.raises(ForbiddenError):
            S.check_csrf(s, bad)
    with pytest.raises(ForbiddenError):
        S.check_csrf(S.WebSession(), "anything")  # no session, no token
    S.login(s, 1)
    with pytest.raises(ForbiddenError):
        S.check_csrf(s, token)
    after_login = S.csrf_token(s)
    S.logout(s)
    assert s.user_id is None
    with pytest.raises(ForbiddenError):
        S.check_csrf(s, after_login)


def test_login_drops_what_the_session_held():
    s = S.WebSession(pending="x", user_id=9)
    S.login(s, 1)
    assert "pending" not in s and s.user_id == 1


@pytest.mark.parametrize(
    "url",
    [
        "//evil.example/x",
        "https://evil.example/",
        "http:evil.example",
        "javascript:alert(1)",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "evil.example",
        "",
        None,
        "/ok\r\nSet-Cookie: x=1",
        "data:text/html,x",
    ],
)
def test_safe_next_refuses_other_origins(url):
    assert S.safe_next(url) == "/account/profile"
    assert S.safe_next(url, default="/") == "/"


@pytest.mark.parametrize(
    "url", ["/dashboard", "/account/profile?currentView=apiKeysTab", "/workflow/abc#x"]
)
def test_safe_next_keeps_our_paths(url):
    assert S.safe_next(url) == url
