"""What we change in pg8000's behaviour, and why: it is pure Python (one wheel for x86_64 and
arm64 Lambdas), and its per-statement costs dominate our short requests and refresh writes.

* timestamps are parsed by `datetime.fromisoformat` (C) instead of `strptime`;
* the `%s` → `$n` placeholder rewrite is remembered per SQL text;
* a statement is sent in one round trip instead of three (pipelined extended protocol);
* optionally, statements are kept prepared on the server per connection (no parse or plan
  on re-execution) — off behind RDS Proxy, where named statements pin connections;
* returning a read-only (AUTOCOMMIT) connection to the pool costs no round trip.

Everything here is installed once per engine by `chalicelib.db` and applies to the pinned
pg8000 release only (requirements.txt): another release keeps its own behaviour, which is
slower but correct.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

PINNED = "1.31.6"
# Longer SQL texts (multi-row inserts: one text per row count) are neither remembered nor
# kept prepared: the caches stay small whatever the workload.
MAX_KEPT_SQL = 8192


def install(engine: Any, *, statement_cache: int) -> None:
    """Apply every speed-up to this pg8000 engine; `statement_cache` named statements are
    kept per connection (0: none)."""
    import pg8000
    from sqlalchemy import event

    event.listen(engine, "connect", _fast_timestamps)
    if pg8000.__version__ != PINNED:
        return
    _cache_placeholder_rewrite()
    _pipeline_statements()
    _fast_autocommit_reset(engine.dialect)
    if statement_cache > 0:

        def keep_statements(dbapi_conn, _record) -> None:
            dbapi_conn.lm_statements = _Statements(statement_cache)

        event.listen(engine, "connect", keep_statements)


def _fast_timestamps(dbapi_conn, _record) -> None:
    """pg8000 parses every timestamp with strptime (~50 µs each, most of a big list's
    time); `datetime.fromisoformat` reads Postgres' text format in C. Anything it cannot
    read (infinity, BC dates) falls back to pg8000's own converter."""
    from datetime import datetime

    from pg8000 import converters

    def make(fallback):
        def convert(data: str):
            try:
                return datetime.fromisoformat(data)
            except ValueError:
                return fallback(data)

        return convert

    dbapi_conn.register_in_adapter(1184, make(converters.timestamptz_in))  # timestamptz
    dbapi_conn.register_in_adapter(1114, make(converters.timestamp_in))  # timestamp
    # json/jsonb: lists arrive as one JSON document of megabytes; orjson reads it several
    # times faster than json.loads, which stays for what orjson refuses (huge integers).
    import json

    import orjson

    def json_in(data: str):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)

    dbapi_conn.register_in_adapter(114, json_in)  # json
    dbapi_conn.register_in_adapter(3802, json_in)  # jsonb


def _cache_placeholder_rewrite() -> None:
    """pg8000 rewrites `%s` placeholders to `$n` with a pure-Python scan of the SQL text on
    every execute (~0.5 ms for a join; most of a short read's CPU). The result depends on
    the text alone for the "format" style SQLAlchemy uses, and SQLAlchemy's statement
    cache hands us the same few texts again and again: remember them (bounded)."""
    from functools import lru_cache

    from pg8000 import legacy

    original = legacy.convert_paramstyle
    if getattr(original, "lm_cached", False):
        return

    @lru_cache(maxsize=1024)
    def rewrite(query: str) -> str:
        return original("format", query, ())[0]

    def convert_paramstyle(style, query, args):
        if style == "format" and len(query) <= MAX_KEPT_SQL:
            return rewrite(query), args
        return original(style, query, args)

    convert_paramstyle.lm_cached = True  # type: ignore[attr-defined]
    legacy.convert_paramstyle = convert_paramstyle


class _Statements:
    """One connection's named server-side statements, least recently used first, and the
    names to close with the next statement (evicted, or left by a failed parse)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple, tuple[bytes, Any, Any]] = OrderedDict()
        self.closing: list[bytes] = []
        self.names = itertools.count()


# Errors after which a kept statement is not to be used again: the schema under it changed
# ("cached plan must not change result type"), or the server lost it.
_STALE_STATEMENT = {"0A000", "26000"}


def _pipeline_statements() -> None:
    """pg8000 runs every statement with parameters in three round trips: Parse + Sync, then
    Describe + Sync, then Bind + Execute + Sync, each waiting for the server's answer. The
    protocol lets a client send the messages at once and read the answers in order (parse
    and bind complete, row description, rows, ready): one round trip instead of three. An
    error in any step still arrives before the final ReadyForQuery and is raised the same
    way. With a statement cache on the connection (`lm_statements`), a statement seen
    before is only bound and executed: no parse, no plan once Postgres settles on a generic
    plan. COPY (a `stream`) keeps pg8000's own path."""
    from pg8000 import core

    original = core.CoreConnection.execute_unnamed
    if getattr(original, "lm_pipelined", False):
        return

    def execute_unnamed(self, statement, vals=(), oids=(), stream=None):
        if stream is not None:
            return original(self, statement, vals=vals, oids=oids, stream=stream)
        cache: _Statements | None = getattr(self, "lm_statements", None)
        if cache is not None and len(statement) > MAX_KEPT_SQL:
            cache = None  # sent unnamed, still in one round trip
        key = (statement, tuple(oids))
        kept = cache.entries.get(key) if cache is not None else None
        try:
            if cache is not None:
                for name in cache.closing:  # "not an error" if it does not exist
                    self._send_message(core.CLOSE, core.STATEMENT + name)
                cache.closing.clear()
            if kept is not None:
                name, columns, input_funcs = kept
                cache.entries.move_to_end(key)
                context = core.Context(statement, columns=columns, input_funcs=input_funcs)
            else:
                name = (
                    core.NULL_BYTE
                    if cache is None
                    else f"lm_{next(cache.names)}".encode("ascii") + core.NULL_BYTE
                )
                context = core.Context(statement)
                self.send_PARSE(name, statement, oids)
                self.send_DESCRIBE_STATEMENT(name)
            self.send_BIND(name, core.make_params(self.py_types, vals))
            self.send_EXECUTE()
            core._write(self._sock, core.SYNC_MSG)
            core._flush(self._sock)
        except AttributeError:
            if self._sock is None:
                raise core.InterfaceError("connection is closed") from None
            raise
        try:
            self.handle_messages(context)
        except core.DatabaseError as exc:
            if cache is not None:
                code = exc.args[0].get("C") if exc.args and isinstance(exc.args[0], dict) else None
                if kept is None:
                    cache.closing.append(name)  # the parse may have succeeded
                elif code in _STALE_STATEMENT:
                    cache.entries.pop(key, None)
                    cache.closing.append(name)
            raise
        if cache is not None and kept is None:
            cache.entries[key] = (name, context.columns, context.input_funcs)
            if len(cache.entries) > cache.size:
                cache.closing.append(cache.entries.popitem(last=False)[1][0])
        return context

    execute_unnamed.lm_pipelined = True  # type: ignore[attr-defined]
    core.CoreConnection.execute_unnamed = execute_unnamed


def _fast_autocommit_reset(dialect) -> None:
    """A connection used in AUTOCOMMIT (read-only requests) goes back to the pool through
    `reset_isolation_level`, which pg8000's dialect implements as two extra round trips
    (`SET SESSION CHARACTERISTICS …` and `COMMIT`) on every request — and a session `SET`
    pins the connection behind RDS Proxy. Turning autocommit on never touched the session's
    isolation level, so turning it off restores the default; any other level (autocommit
    off) still takes the dialect's full reset."""
    if getattr(dialect.reset_isolation_level, "lm_fast", False):
        return
    full_reset = dialect.reset_isolation_level

    def reset_isolation_level(dbapi_conn) -> None:
        if dbapi_conn.autocommit:
            dbapi_conn.autocommit = False
        else:
            full_reset(dbapi_conn)

    reset_isolation_level.lm_fast = True  # type: ignore[attr-defined]
    dialect.reset_isolation_level = reset_isolation_level
