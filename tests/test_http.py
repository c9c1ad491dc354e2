"""The outbound HTTP client (chalicelib/http.py): the address guard (schemes, credentials,
private/loopback/link-local/IPv6-mapped addresses, names resolving to them, redirects to
them), size limits, timeouts, retries and redirects. Everything stays on loopback: names are
resolved by a monkeypatched `socket.getaddrinfo`, and a public server is simulated by a
loopback one whose address the guard is told to treat as public."""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import pytest

from chalicelib import http
from tests.support.fileserver import FileServer, unused_port

FAST = (1.0, 2.0)  # connect, read


@pytest.fixture(scope="module")
def _server():
    with FileServer() as server:
        yield server


@pytest.fixture
def server(_server):
    _server.files.clear()
    _server.requests.clear()
    _server.clear_faults()
    http.reset()
    yield _server
    http.reset()


@pytest.fixture
def private_ok(monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


class FakeDNS:
    """`socket.getaddrinfo` answering `names` from a table; IP literals and unknown names go
    to the real resolver (no network for literals)."""

    def __init__(self, names: dict[str, list[str]]):
        self.names = names
        self.asked: list[str] = []
        self.real = socket.getaddrinfo

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        host = host.decode() if isinstance(host, bytes) else host
        self.asked.append(host)
        if host not in self.names:
            return self.real(host, port, family, type, proto, flags)
        out = []
        for ip in self.names[host]:
            if ipaddress.ip_address(ip).version == 6:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)))
        return out


@pytest.fixture
def dns(monkeypatch):
    def install(names: dict[str, list[str]]) -> FakeDNS:
        fake = FakeDNS(names)
        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return fake

    return install


@pytest.fixture
def public_loopback(monkeypatch):
    """Pretend 127.0.0.1 (and only it) is a public address, so the loopback server plays a
    public host while the guard stays on for everything else."""
    real = http.address_allowed
    monkeypatch.setattr(http, "address_allowed", lambda ip: ip == "127.0.0.1" or real(ip))


# -- schemes and URL shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/crate.zip",
        "file:///etc/passwd",
        "gopher://example.org/1",
        "data:application/zip;base64,UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==",
        "javascript:alert(1)",
        "//example.org/crate.zip",
        "example.org/crate.zip",
        "http:///crate.zip",
        "https://",
    ],
)
def test_only_http_urls_with_a_host(server, url):
    with pytest.raises(http.BlockedURLError):
        http.check_url(url)
    with pytest.raises(http.BlockedURLError):
        http.get(url, timeout=FAST)


@pytest.mark.parametrize(
    "url",
    ["http://user:pw@example.org/x", "https://user@example.org/x", "http://:pw@example.org/x"],
)
def test_credentials_in_the_url_are_refused(url):
    with pytest.raises(http.BlockedURLError, match="credentials"):
        http.check_url(url)


@pytest.mark.parametrize("url", ["http://example.org/x.zip", "https://example.org:8443/a?b=c"])
def test_plain_http_urls_pass_the_url_check(url):
    http.check_url(url)


# -- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address to refuse, not to bind
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.10",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:192.168.0.1",
        "2002::1",  # 6to4: embeds an IPv4 address (issue 9, defect 8)
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "fec0::1",  # deprecated site-local
        "feff::1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2001::1",  # Teredo
    ],
)
def test_private_and_special_addresses_are_blocked(ip):
    assert http.address_allowed(ip) is False


@pytest.mark.parametrize(
    "ip",
    [
        "8.8.8.8",
        "1.1.1.1",
        "140.82.112.3",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
    ],
)
def test_public_addresses_are_allowed(ip):
    assert http.address_allowed(ip) is True


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0",
    ],
)
def test_loopback_in_any_spelling_is_not_fetched(server, host):
    server.add("/x", b"secret")
    with pytest.raises(http.BlockedURLError, match="private"):
        http.get(f"http://{host}:{port_of(server)}/x", timeout=FAST, retries=0)
    assert server.requests == []


def test_allow_private_urls_lifts_the_address_rule(server, private_ok):
    server.add("/x", b"hello", content_type="text/plain")
    r = http.get(f"{server.url}/x", timeout=FAST)
    assert (r.status, r.content, r.ok) == (200, b"hello", True)
    assert r.header("Content-Type") == "text/plain"


# -- names resolving to private addresses ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ips"),
    [
        ("intranet.example", ["10.1.2.3"]),
        ("metadata.example", ["169.254.169.254"]),
        ("loop.example", ["127.0.0.1"]),
        ("mapped.example", ["::ffff:127.0.0.1"]),
        ("v6local.example", ["fe80::1", "fd00::7"]),
        ("all-bad.example", ["192.168.0.10", "::1"]),
    ],
)
def test_names_resolving_to_private_addresses_are_blocked(server, dns, name, ips):
    fake = dns({name: ips})
    with pytest.raises(http.BlockedURLError, match=name):
        http.get(f"http://{name}:{port_of(server)}/x", timeout=FAST, retries=0)
    assert name in fake.asked
    assert server.requests == []


def test_only_the_allowed_addresses_of_a_name_are_kept(dns):
    dns({"mixed.example": ["10.0.0.1", "93.184.216.34", "::1", "2606:2800:220:1::1"]})
    kept = [info[4][0] for info in http.resolve_allowed("mixed.example", 443)]
    assert kept == ["93.184.216.34", "2606:2800:220:1::1"]


def test_allow_private_urls_keeps_every_address(dns, private_ok):
    dns({"mixed.example": ["10.0.0.1", "93.184.216.34"]})
    assert [i[4][0] for i in http.resolve_allowed("mixed.example", 80)] == [
        "10.0.0.1",
        "93.184.216.34",
    ]


def test_unresolvable_name_is_an_outbound_error(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(http.OutboundError, match=r"cannot resolve nowhere\.example") as info:
        http.get("http://nowhere.example/x", timeout=FAST, retries=0)
    assert not isinstance(info.value, http.BlockedURLError)


def test_a_public_name_is_fetched_at_the_checked_address(server, dns, public_loopback):
    fake = dns({"public.example": ["127.0.0.1"]})
    server.add("/x", b"ok", content_type="text/plain")
    r = http.get(f"http://public.example:{port_of(server)}/x", timeout=FAST)
    assert r.content == b"ok"
    [request] = server.requests
    assert request.headers["host"] == f"public.example:{port_of(server)}"
    assert fake.asked.count("public.example") == 1  # resolved once, at connect time


# -- redirects to private addresses -------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "http://private.example:{port}/target",  # a name resolving to a private address
        "http://loopback2.example:{port}/target",  # another loopback address
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://[::ffff:127.0.0.2]:{port}/target",  # IPv6-mapped loopback
        "file:///etc/passwd",
        "ftp://public.example/x",
    ],
)
def test_redirect_from_a_public_host_to_a_private_one_is_blocked(
    server, dns, public_loopback, target
):
    dns(
        {
            "public.example": ["127.0.0.1"],
            "private.example": ["10.9.9.9"],
            "loopback2.example": ["127.0.0.2"],
        }
    )
    port = port_of(server)
    server.redirect("/start", target.format(port=port))
    with pytest.raises(http.BlockedURLError):
        http.get(f"http://public.example:{port}/start", timeout=FAST, retries=0)
    assert [r.path for r in server.requests] == ["/start"]


def test_redirect_between_public_urls_is_followed(server, dns, public_loopback):
    dns({"public.example": ["127.0.0.1"], "mirror.example": ["127.0.0.1"]})
    port = port_of(server)
    server.redirect("/start", f"http://mirror.example:{port}/moved")
    server.redirect("/moved", "/final", status=301)  # relative Location
    server.add("/final", b"zip bytes")
    r = http.get(f"http://public.example:{port}/start", timeout=FAST)
    assert (r.status, r.content) == (200, b"zip bytes")
    assert r.url == f"http://mirror.example:{port}/final"
    assert r.history == [
        f"http://public.example:{port}/start",
        f"http://mirror.example:{port}/moved",
    ]


def test_redirects_can_be_left_to_the_caller(server, private_ok):
    server.redirect("/start", "/final")
    r = http.get(f"{server.url}/start", allow_redirects=False, timeout=FAST)
    assert r.status == 302 and r.header("location") == "/final"


# -- redirect counts ---------------------------------------------------------------------------


def _chain(server, hops: int) -> str:
    for n in range(hops):
        server.redirect(f"/r{n}", f"/r{n + 1}")
    server.add(f"/r{hops}", b"end", content_type="text/plain")
    return f"{server.url}/r0"


def test_five_redirects_are_followed(server, private_ok):
    r = http.get(_chain(server, http.MAX_REDIRECTS), timeout=FAST)
    assert r.content == b"end" and len(r.history) == http.MAX_REDIRECTS


def test_too_many_redirects(server, private_ok):
    with pytest.raises(http.OutboundError, match="too many redirects"):
        http.get(_chain(server, http.MAX_REDIRECTS + 1), timeout=FAST, retries=0)
    assert len(server.requests) == http.MAX_REDIRECTS + 1


def test_redirect_loop(server, private_ok):
    server.redirect("/loop", "/loop")
    with pytest.raises(http.OutboundError, match="too many redirects"):
        http.get(f"{server.url}/loop", timeout=FAST, retries=0)


def test_see_other_after_post_becomes_a_get_without_body(server, private_ok):
    server.redirect("/submit", "/result", status=303)
    server.add("/result", b"{}", content_type="application/json")
    r = http.request("POST", f"{server.url}/submit", json={"a": 1}, timeout=FAST)
    assert r.status == 200
    assert [(q.method, q.path, q.body) for q in server.requests] == [
        ("POST", "/submit", json.dumps({"a": 1}).encode()),
        ("GET", "/result", b""),
    ]


# -- size limits ------------------------------------------------------------------------------


def test_declared_length_over_the_limit(server, private_ok):
    server.add("/big", b"x" * 2000)
    with pytest.raises(http.ResponseTooLargeError, match="1000 bytes"):
        http.get(f"{server.url}/big", max_bytes=1000, timeout=FAST)
    assert len(server.requests) == 1  # not retried


def test_streamed_body_over_the_limit(server, private_ok):
    server.add("/stream", b"y" * 50_000, chunked=True)
    with pytest.raises(http.ResponseTooLargeError):
        http.get(f"{server.url}/stream", max_bytes=10_000, timeout=FAST)
    assert len(server.requests) == 1


def test_bodies_up_to_the_limit_are_read(server, private_ok):
    server.add("/exact", b"z" * 1000)
    server.add("/stream", b"w" * 30_000, chunked=True)
    assert len(http.get(f"{server.url}/exact", max_bytes=1000, timeout=FAST).content) == 1000
    r = http.get(f"{server.url}/stream", max_bytes=30_000, timeout=FAST)
    assert r.content == b"w" * 30_000
    assert "content-length" not in r.headers


def test_truncated_body_is_an_outbound_error(server, private_ok):
    server.add("/cut", b"partial")
    server.fault("^/cut$", truncate=True)
    with pytest.raises(http.OutboundError):
        http.get(f"{server.url}/cut", timeout=FAST, retries=0)


# -- timeouts and retries ---------------------------------------------------------------------


def test_read_timeout(server, private_ok):
    server.add("/slow", b"late")
    server.fault("^/slow$", delay=1.0)
    started = time.monotonic()
    with pytest.raises(http.OutboundError, match="timed out"):
        http.get(f"{server.url}/slow", timeout=(1.0, 0.2), retries=0)
    assert time.monotonic() - started < 0.9
    assert len(server.requests) == 1


def test_timeouts_are_retried_for_gets(server, private_ok):
    server.add("/slow", b"late")
    server.fault("^/slow$", delay=0.6, times=1)
    r = http.get(f"{server.url}/slow", timeout=(1.0, 0.3), retries=1)
    assert r.content == b"late"
    assert len(server.requests) == 2


def test_unreachable_server(server, private_ok):
    with pytest.raises(http.OutboundError, match="cannot connect"):
        http.get(f"http://127.0.0.1:{unused_port()}/x", timeout=FAST, retries=0)


def test_503_with_retry_after_then_success(server, private_ok):
    server.add("/flaky", b"finally")
    server.fault("^/flaky$", status=503, headers={"Retry-After": "0.5"}, times=1)
    started = time.monotonic()
    r = http.get(f"{server.url}/flaky", timeout=FAST)
    assert (r.status, r.content) == (200, b"finally")
    assert len(server.requests) == 2
    assert time.monotonic() - started >= 0.5  # Retry-After was honoured


@pytest.mark.parametrize("status", [429, 502, 504])
def test_other_transient_statuses_are_retried(server, private_ok, status):
    server.add("/t", b"ok")
    server.fault("^/t$", status=status, headers={"Retry-After": "0"}, times=1)
    r = http.get(f"{server.url}/t", timeout=FAST, retries=1)
    assert r.status == 200 and len(server.requests) == 2


def test_persistent_503_returns_the_last_answer(server, private_ok):
    server.fault("^/down$", status=503, body={"error": "maintenance"}, headers={"Retry-After": "0"})
    r = http.get(f"{server.url}/down", timeout=FAST, retries=1)
    assert r.status == 503 and r.json() == {"error": "maintenance"}
    assert len(server.requests) == 2


def test_long_retry_after_is_not_waited_for(server, private_ok):
    server.fault("^/later$", status=503, headers={"Retry-After": "3600"})
    started = time.monotonic()
    r = http.get(f"{server.url}/later", timeout=FAST, max_retry_wait=1.0)
    assert r.status == 503 and len(server.requests) == 1
    assert time.monotonic() - started < 1.0


def test_no_retry_for_post(server, private_ok):
    server.add("/create", b"created")
    server.fault("^/create$", status=503, headers={"Retry-After": "0"}, times=1)
    r = http.request("POST", f"{server.url}/create", data=b"payload", timeout=FAST)
    assert r.status == 503
    assert len(server.requests) == 1


def test_client_errors_are_returned_not_retried(server, private_ok):
    r = http.get(f"{server.url}/missing", timeout=FAST)
    assert r.status == 404 and not r.ok
    assert len(server.requests) == 1


# -- the client itself ---------------------------------------------------------------------------


def test_malformed_json_is_an_outbound_error(server, private_ok):
    server.add("/bad.json", b"{nope", content_type="application/json")
    with pytest.raises(http.OutboundError, match="malformed JSON"):
        http.get(f"{server.url}/bad.json", timeout=FAST).json()


def test_sends_our_user_agent_and_the_given_headers(server, private_ok):
    server.add("/h", b"")
    http.get(
        f"{server.url}/h", headers={"Authorization": "Bearer t"}, params={"v": "1 2"}, timeout=FAST
    )
    [request] = server.requests
    assert request.headers["user-agent"] == http.USER_AGENT
    assert request.headers["authorization"] == "Bearer t"
    assert request.query == {"v": ["1 2"]}


def test_proxies_from_the_environment_are_ignored(server, private_ok, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{unused_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    server.add("/direct", b"no proxy")
    assert http.get(f"{server.url}/direct", timeout=FAST).content == b"no proxy"


def test_sessions_are_pooled_per_address_policy_and_reset(monkeypatch):
    http.reset()
    strict = http.get_session()
    assert http.get_session() is strict
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    lenient = http.get_session()
    assert lenient is not strict
    http.reset()
    assert http.get_session() is not lenient
    monkeypatch.delenv("ALLOW_PRIVATE_URLS")
    assert http.get_session() is not strict
    http.reset()


# -- credentials never follow a redirect to another origin (issue 9, defect 3) ----------------


CREDENTIALS = {
    "Authorization": "Bearer secret-token",
    "PRIVATE-TOKEN": "gl-secret",
    "Cookie": "session=secret",
    "Proxy-Authorization": "Basic c2VjcmV0",
    "X-Api-Key": "secret",
}


def _credential_headers(request) -> set[str]:
    names = {k.lower() for k in CREDENTIALS}
    return {k for k in request.headers if k.lower() in names}


@pytest.mark.parametrize(
    "target",
    [
        "http://mirror.example:{port}/final",  # another host
        "http://public.example:{other}/final",  # another port
    ],
    ids=["host", "port"],
)
def test_credentials_are_dropped_when_a_redirect_changes_origin(
    server, dns, public_loopback, target
):
    dns({"public.example": ["127.0.0.1"], "mirror.example": ["127.0.0.1"]})
    port = port_of(server)
    with FileServer() as other:
        other.add("/final", b"zip bytes")
        server.add("/final", b"zip bytes")
        server.redirect("/start", target.format(port=port, other=port_of(other)))
        r = http.get(f"http://public.example:{port}/start", headers=CREDENTIALS, timeout=FAST)
        assert (r.status, r.content) == (200, b"zip bytes")
        [first] = server.received("/start")
        assert _credential_headers(first) == {k.lower() for k in CREDENTIALS}
        [final] = server.received("/final") or other.received("/final")
        assert _credential_headers(final) == set()
        assert final.headers.get("user-agent") == http.USER_AGENT  # other headers kept


def test_credentials_are_dropped_when_a_redirect_changes_scheme():
    # https → http on the same host and port: checked on the decision itself, as no TLS
    # server runs here.
    assert http._same_origin("https://ci.example/a", "https://ci.example:443/b")
    assert not http._same_origin("https://ci.example/a", "http://ci.example:443/b")
    assert not http._same_origin("https://ci.example/a", "https://ci.example:8443/b")
    assert not http._same_origin("https://ci.example/a", "https://CI.example.org/b")
    assert http._same_origin("https://CI.example/a", "https://ci.example/b")
    headers = {"Authorization": "x", "private-token": "y", "Accept": "application/json"}
    assert http._without_credentials(headers) == {"Accept": "application/json"}


def test_credentials_are_kept_on_a_same_origin_redirect(server, private_ok):
    server.redirect("/start", "/final")
    server.add("/final", b"zip bytes", authorization="Bearer secret-token")
    r = http.get(f"{server.url}/start", headers=CREDENTIALS, timeout=FAST)
    assert (r.status, r.content) == (200, b"zip bytes")
    [final] = server.received("/final")
    assert _credential_headers(final) == {k.lower() for k in CREDENTIALS}


def test_credentials_stay_dropped_after_coming_back_to_the_first_host(server, dns, public_loopback):
    dns({"public.example": ["127.0.0.1"], "mirror.example": ["127.0.0.1"]})
    port = port_of(server)
    server.redirect("/start", f"http://mirror.example:{port}/hop")
    server.redirect("/hop", f"http://public.example:{port}/final")
    server.add("/final", b"zip bytes")
    http.get(f"http://public.example:{port}/start", headers=CREDENTIALS, timeout=FAST)
    [final] = server.received("/final")
    assert _credential_headers(final) == set()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hub.example/ga4gh/trs/v2/x.crate?token=s3cret#f",
            "https://hub.example/ga4gh/trs/v2/x.crate",
        ),
        ("https://user:pw@hub.example/x", "https://hub.example/x"),
        (
            "https://hub.example/workflows/1/ro_crate?version=1",
            "https://hub.example/workflows/1/ro_crate",
        ),
        ("https://hub.example/plain/path", "https://hub.example/plain/path"),
        ("local file uploaded", "local file uploaded"),
        ("ftp://u:p@host/x?y", "ftp://u:p@host/x?y"),  # not http(s): shown as it is
    ],
)
def test_redact_cuts_credentials_query_and_fragment(url, shown):
    from chalicelib.http import redact

    assert redact(url) == shown
