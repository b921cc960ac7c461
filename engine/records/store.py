"""Where call records are kept: SQLite (one file per node) or PostgreSQL (one database for a
cluster), behind one small interface, with the schema created and migrated by the engine.

``RECORDS_URL`` names the store: ``sqlite:///relative/path.db``, ``sqlite:////absolute.db``,
or ``postgresql://user:password@host:port/database`` (``postgres://`` too; any libpq URI
parameter, ``sslmode`` say, is passed on). :func:`redact` is the form fit for logs.

The schema is versioned in a table of its own; :meth:`migrate` applies what is missing in one
transaction, under a lock (SQLite's write lock, PostgreSQL's advisory lock), so workers and
nodes that start together migrate once. A database a newer engine has migrated is refused
rather than written wrongly. Calls are rows of ``calls``, one per call, keyed by a serial id
(a UUID may come back: Asterisk's dialplan chooses it).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson

from engine.errors import ConfigError, RecordsSchemaTooNew, RecordsUnavailable
from engine.records.record import JSON_FIELDS, RECORD_FIELDS, TIME_FIELDS, CallRecord

__all__ = ["SCHEMA_VERSION", "PostgresStore", "SqliteStore", "Store", "open_store", "parse_url",
           "redact"]

_INT, _REAL, _TEXT, _TIME, _JSON = "int", "real", "text", "time", "json"
_TYPES = {
    "sqlite": {_INT: "INTEGER", _REAL: "REAL", _TEXT: "TEXT", _TIME: "TEXT", _JSON: "TEXT"},
    "postgresql": {_INT: "BIGINT", _REAL: "DOUBLE PRECISION", _TEXT: "TEXT",
                   _TIME: "TIMESTAMPTZ", _JSON: "JSONB"},
}
_NOT_NULL = {"uuid", "started_at", "ended_at", "end_reason"}


def _kind(name: str) -> str:
    if name in TIME_FIELDS:
        return _TIME
    if name in JSON_FIELDS:
        return _JSON
    if name in ("duration_s", "cost_usd"):
        return _REAL
    if name in ("uuid", "node", "peer", "profile", "variant", "caller_id", "caller_name",
                "dialled", "end_reason", "error_class", "error", "model", "dialect",
                "upstream_format", "dtmf", "recording"):
        return _TEXT
    return _INT


def _create_calls(dialect: str) -> list[str]:
    types = _TYPES[dialect]
    key = ("id INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite"
           else "id BIGSERIAL PRIMARY KEY")
    columns = [key] + [f"{name} {types[_kind(name)]}" + (" NOT NULL" if name in _NOT_NULL
                                                          else "")
                       for name in RECORD_FIELDS]
    return [
        "CREATE TABLE calls (" + ", ".join(columns) + ")",
        "CREATE INDEX calls_started_at ON calls (started_at)",
        "CREATE INDEX calls_uuid ON calls (uuid)",
        "CREATE INDEX calls_end_reason ON calls (end_reason, started_at)",
    ]


MIGRATIONS: tuple[Any, ...] = (_create_calls,)
"""Migration N (from 1) takes the schema from version N-1 to N: statements per dialect."""
SCHEMA_VERSION = len(MIGRATIONS)


class Store(Protocol):
    """What the writer and ``voice-engine calls`` need of a store."""

    target: str

    def migrate(self) -> None: ...

    def write(self, records: Sequence[CallRecord]) -> None: ...

    def recent(self, *, since: dt.datetime | None = None, reason: str | None = None,
             limit: int = 50) -> list[CallRecord]: ...

    def get(self, uuid: str) -> list[CallRecord]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Target:
    dialect: str  # sqlite or postgresql
    location: str  # the file's path, or the libpq URI


def parse_url(url: str) -> Target:
    """The store ``url`` names.

    Raises:
        ConfigError: not a ``sqlite:///PATH`` or ``postgresql://`` URL.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.strip("/"):
            raise ConfigError("a SQLite URL is sqlite:///PATH (three slashes; four for an "
                              "absolute path)")
        return Target("sqlite", parts.path[1:])
    if parts.scheme in ("postgresql", "postgres"):
        if not parts.path.strip("/") and "dbname=" not in parts.query:
            raise ConfigError("name the database (postgresql://user:password@host/DATABASE)")
        return Target("postgresql", url)
    raise ConfigError("expected sqlite:///PATH or postgresql://user:password@host/database")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (also a ``password=`` parameter)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return url  # a path holds no password
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + host
    query = "&".join("password=***" if item.lower().startswith("password=") else item
                     for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def open_store(url: str, *, readonly: bool = False) -> Store:
    """The store at ``url``, connected (not migrated: see :meth:`Store.migrate`);
    ``readonly`` for readers, which never create a SQLite file.

    Raises:
        ConfigError: ``url`` is not a records URL.
        RecordsUnavailable: the database cannot be opened.
    """
    target = parse_url(url)
    if target.dialect == "sqlite":
        return SqliteStore(Path(target.location), readonly=readonly)
    return PostgresStore(target.location)


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


_INSERT_COLUMNS = ", ".join(RECORD_FIELDS)


class _Queries:
    """The reads both stores share; ``mark`` is the driver's parameter placeholder."""

    mark = "?"

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[CallRecord]:
        raise NotImplementedError

    def _since(self, moment: dt.datetime) -> Any:
        return moment

    def recent(self, *, since: dt.datetime | None = None, reason: str | None = None,
               limit: int = 50) -> list[CallRecord]:
        """The latest records, newest first, started at ``since`` or later and ended for
        ``reason`` when given."""
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append(f"started_at >= {self.mark}")
            args.append(self._since(since))
        if reason is not None:
            where.append(f"end_reason = {self.mark}")
            args.append(reason)
        sql = f"SELECT {_INSERT_COLUMNS} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY started_at DESC, id DESC LIMIT {self.mark}"
        return self._select(sql, (*args, limit))

    def get(self, uuid: str) -> list[CallRecord]:
        """Every record of ``uuid``, the latest first."""
        return self._select(f"SELECT {_INSERT_COLUMNS} FROM calls WHERE uuid = {self.mark} "
                            "ORDER BY started_at DESC, id DESC", (uuid,))


class SqliteStore(_Queries):
    """A SQLite file in WAL mode, made readable by its owner only (records hold caller numbers
    and, when enabled, transcripts). Several processes of a node may write it at once."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0, readonly: bool = False) -> None:
        self.path = path
        self.target = f"sqlite:///{path}"
        if readonly:
            # A reader never creates the file: one made by another user (root, say) would
            # keep the node from ever writing its records there.
            if not path.is_file():
                raise RecordsUnavailable(self.target, "no such file: no call has been "
                                         "recorded there yet (or RECORDS_URL points elsewhere)")
            try:
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                           timeout=busy_timeout, isolation_level=None,
                                           check_same_thread=False)
            except sqlite3.Error as exc:
                raise RecordsUnavailable(self.target, _reason(exc)) from None
            return
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise RecordsUnavailable(self.target, _reason(exc)) from None

    def migrate(self) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TABLE IF NOT EXISTS records_schema (version INTEGER NOT NULL)")
                row = db.execute("SELECT max(version) FROM records_schema").fetchone()
                version = row[0] or 0
                if version > SCHEMA_VERSION:
                    raise RecordsSchemaTooNew(version, SCHEMA_VERSION)
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[number - 1]("sqlite"):
                        db.execute(statement)
                    db.execute("INSERT INTO records_schema (version) VALUES (?)", (number,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise RecordsUnavailable(self.target, _reason(exc)) from None

    def write(self, records: Sequence[CallRecord]) -> None:
        rows = [tuple(_sqlite_value(name, getattr(r, name)) for name in RECORD_FIELDS)
                for r in records]
        marks = ", ".join("?" * len(RECORD_FIELDS))
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    f"INSERT INTO calls ({_INSERT_COLUMNS}) VALUES ({marks})", rows)
        except sqlite3.Error as exc:
            raise RecordsUnavailable(self.target, _reason(exc)) from None

    def _since(self, moment: dt.datetime) -> Any:
        return _iso(moment)

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[CallRecord]:
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise RecordsUnavailable(self.target, _reason(exc)) from None
        out = []
        for row in rows:
            values = dict(zip(RECORD_FIELDS, row, strict=True))
            for name in TIME_FIELDS:
                if values[name] is not None:
                    values[name] = dt.datetime.fromisoformat(values[name])
            for name in JSON_FIELDS:
                if values[name] is not None:
                    values[name] = orjson.loads(values[name])
            out.append(CallRecord.from_row(values))
        return out

    def close(self) -> None:
        self._db.close()


def _iso(moment: dt.datetime) -> str:
    """UTC, microseconds always shown: stored times then sort as text."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _sqlite_value(name: str, value: Any) -> Any:
    if name in TIME_FIELDS:
        return None if value is None else _iso(value)
    if name in JSON_FIELDS:
        return _json_text(value)
    return value


_PG_LOCK = 0x766F_6963_6500  # the advisory lock that serialises migrations


class PostgresStore(_Queries):
    """A PostgreSQL database, through psycopg 3 (one connection, autocommit off)."""

    mark = "%s"

    def __init__(self, url: str, *, connect_timeout: int = 5) -> None:
        import psycopg

        self._psycopg = psycopg
        self.target = redact(url)
        try:
            self._db = psycopg.connect(url, connect_timeout=connect_timeout,
                                       application_name="voice-engine")
        except psycopg.Error as exc:
            raise RecordsUnavailable(self.target, _reason(exc, url)) from None
        self._url = url

    def migrate(self) -> None:
        db = self._db
        try:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK,))
                db.execute("CREATE TABLE IF NOT EXISTS records_schema (version INTEGER NOT NULL)")
                row = db.execute("SELECT max(version) FROM records_schema").fetchone()
                version = (row[0] if row else None) or 0
                if version > SCHEMA_VERSION:
                    raise RecordsSchemaTooNew(version, SCHEMA_VERSION)
                for number in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[number - 1]("postgresql"):
                        db.execute(statement)
                    db.execute("INSERT INTO records_schema (version) VALUES (%s)", (number,))
        except self._psycopg.Error as exc:
            raise RecordsUnavailable(self.target, _reason(exc, self._url)) from None

    def write(self, records: Sequence[CallRecord]) -> None:
        from psycopg.types.json import Jsonb

        rows = []
        for record in records:
            row = []
            for name in RECORD_FIELDS:
                value = _no_nul(getattr(record, name))
                row.append(Jsonb(value) if name in JSON_FIELDS and value is not None else value)
            rows.append(row)
        marks = ", ".join(["%s"] * len(RECORD_FIELDS))
        try:
            with self._db.transaction(), self._db.cursor() as cursor:
                cursor.executemany(f"INSERT INTO calls ({_INSERT_COLUMNS}) VALUES ({marks})",
                                   rows)
        except self._psycopg.Error as exc:
            raise RecordsUnavailable(self.target, _reason(exc, self._url)) from None

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[CallRecord]:
        try:
            with self._db.transaction():
                rows = self._db.execute(sql, args).fetchall()
        except self._psycopg.Error as exc:
            raise RecordsUnavailable(self.target, _reason(exc, self._url)) from None
        return [CallRecord.from_row(dict(zip(RECORD_FIELDS, row, strict=True))) for row in rows]

    def close(self) -> None:
        self._db.close()


def _no_nul(value: Any) -> Any:
    """PostgreSQL text and JSONB cannot hold U+0000: it is dropped (from nested values too)."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    return value


def _reason(exc: BaseException, url: str | None = None) -> str:
    """One line of ``exc`` without the password of ``url``, if it somehow appears."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if url is not None:
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text
