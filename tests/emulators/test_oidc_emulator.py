"""The emulated OpenID Connect provider (LifeScience Login, `emulators/oidc.py`), checked
independently of our client: discovery, the sign-in form, the ID token (claims, RS256
signature against its JWKS with `cryptography`, HS256 with the client secret), userinfo by
scope, every misbehaviour switch, key rotation, `python -m emulators oidc`, and that the
module loads `cryptography` only when it needs keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from emulators.oidc import DEFAULT_PASSWORD, DEFECTS, DISCOVERY_PATH, OIDCEmulator, at_hash
from tests.support.live import forms

ROOT = Path(__file__).resolve().parents[2]
CALLBACK = "http://client.example/callback"
JANE = "5a1d3c0b9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b@lifescience-ri.eu"


@pytest.fixture(scope="module")
def _oidc():
    with OIDCEmulator() as emulator:
        yield emulator


@pytest.fixture
def oidc(_oidc):
    _oidc.reset()
    _oidc.app = _oidc.register_oauth_app([CALLBACK])
    return _oidc


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def parts(jwt: str) -> tuple[dict, dict, bytes, bytes]:
    """(header, claims, signature, signing input) of a compact JWS."""
    header, claims, signature = jwt.split(".")
    return (
        json.loads(unb64(header)),
        json.loads(unb64(claims)),
        unb64(signature),
        f"{header}.{claims}".encode(),
    )


def rs256_valid(jwt: str, jwks: dict) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    header, _claims, signature, signed = parts(jwt)
    [jwk] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public = rsa.RSAPublicNumbers(
        int.from_bytes(unb64(jwk["e"]), "big"), int.from_bytes(unb64(jwk["n"]), "big")
    ).public_key()
    try:
        public.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def discovery(oidc) -> dict:
    r = requests.get(oidc.url + DISCOVERY_PATH, timeout=10)
    assert r.status_code == 200
    return r.json()


def tokens(oidc, scope="openid profile email", nonce="n-0123", person=JANE) -> dict:
    """A code through `auto_login`, exchanged: the token response."""
    oidc.auto_login = person
    params = {
        "response_type": "code",
        "client_id": oidc.app.client_id,
        "redirect_uri": CALLBACK,
        "scope": scope,
        "state": "s1",
        "nonce": nonce,
    }
    r = requests.get(f"{oidc.url}/oidc/authorize", params=params, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    token = requests.post(
        f"{oidc.url}/oidc/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "client_id": oidc.app.client_id,
            "client_secret": oidc.app.client_secret,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    return token.json()


def test_discovery_document(oidc):
    doc = discovery(oidc)
    assert doc["issuer"] == oidc.issuer == f"{oidc.url}/oidc/"
    for name, path in [
        ("authorization_endpoint", "/oidc/authorize"),
        ("token_endpoint", "/oidc/token"),
        ("userinfo_endpoint", "/oidc/userinfo"),
        ("jwks_uri", "/oidc/jwk"),
    ]:
        assert doc[name] == oidc.url + path
    assert "RS256" in doc["id_token_signing_alg_values_supported"]
    assert {"openid", "profile", "email"} <= set(doc["scopes_supported"])
    oidc.discovery_down = True
    assert requests.get(oidc.url + DISCOVERY_PATH, timeout=10).status_code == 503


def test_sign_in_form_code_id_token_and_userinfo(oidc):
    params = {
        "response_type": "code",
        "client_id": oidc.app.client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid profile email",
        "state": "s1",
        "nonce": "n-42",
    }
    page = requests.get(f"{oidc.url}/oidc/authorize", params=params, timeout=10)
    assert page.status_code == 200 and "<title>LifeScience Login</title>" in page.text
    [form] = forms(page.text)
    data = {**dict(form.fields), "authorize": "1", "login": "jdoe", "password": "nope"}
    wrong = requests.post(f"{oidc.url}/oidc/authorize", data=data, timeout=10)
    assert wrong.status_code == 401
    data["password"] = DEFAULT_PASSWORD
    r = requests.post(f"{oidc.url}/oidc/authorize", data=data, allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert query["state"] == ["s1"]
    body = requests.post(
        f"{oidc.url}/oidc/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": CALLBACK,
        },
        auth=(oidc.app.client_id, oidc.app.client_secret),  # client_secret_basic
        timeout=10,
    ).json()
    header, claims, _sig, _signed = parts(body["id_token"])
    assert header["alg"] == "RS256" and header["kid"]
    assert claims["iss"] == oidc.issuer and claims["sub"] == JANE
    assert claims["aud"] == oidc.app.client_id and claims["nonce"] == "n-42"
    assert claims["iat"] <= claims["exp"] and claims["at_hash"] == at_hash(body["access_token"])
    jwks = requests.get(discovery(oidc)["jwks_uri"], timeout=10).json()
    assert rs256_valid(body["id_token"], jwks)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    me = requests.get(f"{oidc.url}/oidc/userinfo", headers=bearer, timeout=10)
    assert me.json() == {
        "sub": JANE,
        "name": "Jane Doe",
        "given_name": "Jane",
        "family_name": "Doe",
        "preferred_username": "jdoe",
        "email": "jane.doe@uni.example",
        "email_verified": True,
    }
    assert requests.post(f"{oidc.url}/oidc/userinfo", headers=bearer, timeout=10).ok
    bad = requests.get(
        f"{oidc.url}/oidc/userinfo", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert bad.status_code == 401 and "invalid_token" in bad.headers["WWW-Authenticate"]


def test_scopes_decide_the_id_token_and_the_claims(oidc):
    plain = tokens(oidc, scope="profile")
    assert "id_token" not in plain  # OAuth2 without `openid`
    body = tokens(oidc, scope="openid")
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(f"{oidc.url}/oidc/userinfo", headers=bearer, timeout=10).json() == {
        "sub": JANE
    }
    oidc.users[JANE].email_verified = False
    body = tokens(oidc, scope="openid email")
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    info = requests.get(f"{oidc.url}/oidc/userinfo", headers=bearer, timeout=10).json()
    assert info == {"sub": JANE, "email": "jane.doe@uni.example", "email_verified": False}


@pytest.mark.parametrize("defect", DEFECTS)
def test_defects(oidc, defect):
    oidc.id_token_defect = defect
    body = tokens(oidc)
    if defect == "missing":
        assert "id_token" not in body and body["access_token"]
        return
    assert oidc.id_tokens == [body["id_token"]]
    header, claims, signature, _signed = parts(body["id_token"])
    jwks = requests.get(f"{oidc.url}/oidc/jwk", timeout=10).json()
    expected = {
        "iss": claims["iss"] != oidc.issuer,
        "aud": claims["aud"] != oidc.app.client_id and claims["azp"] == oidc.app.client_id,
        "nonce": claims["nonce"] != "n-0123",
        "sub": claims["sub"] != JANE,
        "expired": claims["exp"] < time.time() - 600,  # beyond any clock-skew leeway
        "signature": header.get("kid") and not rs256_valid(body["id_token"], jwks),
        "none": header["alg"] == "none" and signature == b"",
    }
    assert expected[defect]
    if defect not in {"signature", "none"}:
        assert rs256_valid(body["id_token"], jwks)  # well signed, wrong content


def test_hs256_with_the_client_secret(oidc):
    oidc.signing_alg = "HS256"
    header, claims, signature, signed = parts(tokens(oidc)["id_token"])
    assert header == {"alg": "HS256", "typ": "JWT"} and claims["sub"] == JANE
    expected = hmac.new(oidc.app.client_secret.encode(), signed, hashlib.sha256).digest()
    assert hmac.compare_digest(signature, expected)


def test_key_rotation(oidc):
    first = parts(tokens(oidc)["id_token"])[0]["kid"]
    kid = oidc.rotate_key()
    body = tokens(oidc)
    assert parts(body["id_token"])[0]["kid"] == kid != first
    jwks = requests.get(f"{oidc.url}/oidc/jwk", timeout=10).json()
    assert {first, kid} <= {k["kid"] for k in jwks["keys"]}
    assert rs256_valid(body["id_token"], jwks)


def test_refresh_keeps_the_person(oidc):
    body = tokens(oidc)
    refreshed = requests.post(
        f"{oidc.url}/oidc/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": oidc.app.client_id,
            "client_secret": oidc.app.client_secret,
        },
        timeout=10,
    ).json()
    assert "nonce" not in parts(refreshed["id_token"])[1]
    bearer = {"Authorization": f"Bearer {refreshed['access_token']}"}
    me = requests.get(f"{oidc.url}/oidc/userinfo", headers=bearer, timeout=10)
    assert me.json()["sub"] == JANE


def test_cryptography_is_imported_only_for_keys():
    code = (
        "import sys, emulators.oidc, emulators.__main__\n"
        "assert 'cryptography' not in sys.modules, 'imported at load'\n"
        "emulators.oidc.OIDCEmulator()._signing_key()\n"
        "assert 'cryptography' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_python_m_emulators_oidc():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulators",
            "oidc",
            "--port",
            str(port),
            "--client-id",
            "lm",
            "--client-secret",
            "s3cret-s3cret",
            "--redirect-uri",
            CALLBACK,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == f"OpenID Connect (LS AAI) emulator on http://127.0.0.1:{port}"
        doc = requests.get(f"http://127.0.0.1:{port}{DISCOVERY_PATH}", timeout=10).json()
        assert doc["issuer"] == f"http://127.0.0.1:{port}/oidc/"
        page = requests.get(
            f"http://127.0.0.1:{port}/oidc/authorize",
            params={"response_type": "code", "client_id": "lm", "redirect_uri": CALLBACK},
            timeout=10,
        )
        assert page.status_code == 200 and 'name="password"' in page.text
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
