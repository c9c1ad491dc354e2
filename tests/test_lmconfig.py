"""`.lifemonitor.yaml` validation (chalicelib/lmconfig.py), and the anonymous route that serves
it: bounded parsing (issue 9, defect 1: YAML alias bombs, deep nesting, body size)."""

from __future__ import annotations

import json
import resource
import time

import pytest

from chalicelib import lmconfig
from tests.api.helpers import assert_problem

OCTET = {"Content-Type": "application/octet-stream"}
PATH = "/integrations/github/config/validate"


def alias_bomb(levels: int = 9, fanout: int = 9) -> bytes:
    """The billion-laughs shape: each anchor repeats the previous one `fanout` times."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        refs = ", ".join(f"*a{n - 1}" for _ in range(fanout))
        lines.append(f"a{n}: &a{n} [{refs}]")
    return ("\n".join(lines) + "\n").encode()


def wide_alias_bomb(copies: int = 5000) -> bytes:
    """The observed attack: one big anchor repeated thousands of times (30 KB body)."""
    big = "x" * 10_000
    return (f"a: &a {big}\nb: [" + ", ".join("*a" for _ in range(copies)) + "]\n").encode()


def test_a_valid_configuration():
    doc = b"name: wf\npublic: true\npush:\n  branches:\n    - name: main\n"
    result = lmconfig.validate(doc)
    assert result.valid
    assert [b["name"] for b in result.data["push"]["branches"]] == ["main"]


def test_a_few_aliases_are_still_fine():
    doc = b"push:\n  branches: &refs\n    - name: main\n  tags: *refs\n"
    result = lmconfig.validate(doc)
    assert result.valid
    assert [t["name"] for t in result.data["push"]["tags"]] == ["main"]


@pytest.mark.parametrize("doc", [alias_bomb(), wide_alias_bomb()], ids=["nested", "wide"])
def test_alias_bombs_are_refused_quickly(doc):
    started = time.perf_counter()
    with pytest.raises(lmconfig.ConfigParseError, match="alias"):
        lmconfig.validate(doc)
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_refused(opener):
    depth = 5000
    if opener == "- ":
        depth = 200  # block style grows quadratically with depth
        doc = "".join("  " * n + "-\n" for n in range(depth)).encode()
    else:
        closer = "]" if opener == "[" else "}"
        doc = (opener * depth + "1" + closer * depth).encode()
    with pytest.raises(lmconfig.ConfigParseError, match="deep"):
        lmconfig.validate(doc)


@pytest.mark.parametrize(
    "doc", [b"\x89PNG\r\n", b"name: \xc3\x28", "name: \ud800".encode("utf-8", "surrogatepass")]
)
def test_undecodable_documents_are_a_parse_error(doc):
    with pytest.raises(lmconfig.ConfigParseError):
        lmconfig.validate(doc)


def test_api_refuses_an_alias_bomb_with_a_400(client):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = client.http.post(PATH, headers=OCTET, body=wide_alias_bomb())
    body = assert_problem(r, 400)
    assert "alias" in body["detail"]
    assert len(r.body) < 10_000
    # The process did not grow by the expansion (75 MB observed before the fix).
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000


def test_api_refuses_a_big_body_with_a_413(client):
    doc = b"name: " + b"x" * (lmconfig.MAX_DOCUMENT_BYTES + 1) + b"\n"
    body = assert_problem(client.http.post(PATH, headers=OCTET, body=doc), 413)
    assert str(lmconfig.MAX_DOCUMENT_BYTES) in body["detail"]


def test_api_answer_stays_small_for_a_valid_document(client):
    doc = b"name: wf\npush:\n  branches: &refs\n    - name: main\n  tags: *refs\n"
    r = client.http.post(PATH, headers=OCTET, body=doc)
    assert r.status_code == 200
    assert json.loads(r.body)["valid"] is True
