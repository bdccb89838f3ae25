"""Persistent state: sharing roles, firewall flags, mappings, counters; the core's only disk I/O.

A change is written in two steps so the service can apply it to the data plane in between:
`stage` opens a write transaction and writes, then `commit` makes it durable or `rollback`
discards it. `SqliteStore` keeps the state in an SQLite database (stdlib `sqlite3`, WAL mode);
`MemoryStore` keeps it in memory for tests and library use. Both satisfy `StateStore`.

One mapping at most per (protocol, external port), as in `table.py`: putting a mapping replaces
whatever held its (protocol, port), and deleting by `MappingKey` removes it only when the remote
host matches too. Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import collections.abc
import math
import os
import sqlite3
import types
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol, TypeVar

from igd.natcore.errors import NatError
from igd.natcore.model import (
    FirewallSettings,
    IPProtocol,
    Mapping,
    MappingKey,
    Origin,
    SharingConnectionType,
)

__all__ = [
    "MIGRATIONS",
    "ConnectionRecord",
    "MemoryStore",
    "SqliteStore",
    "StateStore",
    "StoreChanges",
    "StoreError",
    "StoredState",
]

_T = TypeVar("_T")

_MIN_INT64 = -(2**63)
_MAX_INT64 = 2**63 - 1
_BUSY_TIMEOUT_MS = 5000
_SYNCHRONOUS = ("NORMAL", "FULL")

# Version n of the schema is reached by applying MIGRATIONS[:n] in order; append, never edit.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE connections (
        guid TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role INTEGER NULL CHECK (role IS NULL OR role IN (0, 1)),
        firewall INTEGER NOT NULL CHECK (firewall IN (0, 1))
    );
    CREATE TABLE mappings (
        protocol INTEGER NOT NULL CHECK (protocol IN (6, 17)),
        external_port INTEGER NOT NULL CHECK (external_port BETWEEN 0 AND 65535),
        remote_host TEXT NOT NULL DEFAULT '',
        connection TEXT NOT NULL,
        internal_client TEXT NOT NULL,
        internal_port INTEGER NOT NULL CHECK (internal_port BETWEEN 0 AND 65535),
        description TEXT NOT NULL,
        enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        expires_at REAL NULL,
        origin TEXT NOT NULL,
        owner TEXT NULL,
        target_name TEXT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (protocol, external_port)
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    """,
)

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_version (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    version INTEGER NOT NULL
)
"""

_MAPPING_COLUMNS = (
    "protocol, external_port, remote_host, connection, internal_client, internal_port, "
    "description, enabled, expires_at, origin, owner, target_name, created_at"
)
_SELECT_MAPPINGS = f"SELECT {_MAPPING_COLUMNS} FROM mappings"
_ORDER_MAPPINGS = " ORDER BY protocol, external_port"
_DUE = " WHERE expires_at IS NOT NULL AND expires_at <= ?"

_FIREWALL_ENABLED = "firewall.enabled"
_FIREWALL_SHIELDED = "firewall.exceptions_not_allowed"


class StoreError(NatError):
    """The state store cannot read, write or open its data; nothing was half-applied."""


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """Persisted sharing role and ICF flag of a connection, kept while it is absent (R15)."""

    guid: uuid.UUID
    name: str
    role: SharingConnectionType | None
    firewall: bool


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything the store holds; mappings in (protocol, external port) order."""

    connections: tuple[ConnectionRecord, ...]
    mappings: tuple[Mapping, ...]
    firewall: FirewallSettings
    counters: collections.abc.Mapping[str, int]


@dataclass(frozen=True, slots=True)
class StoreChanges:
    """One atomic change; deletions apply before puts, so a key in both ends up put.

    `delete_mappings` removes a mapping only when its remote host matches the key's; `counters`
    upserts the named counters and leaves the others alone.
    """

    put_mappings: tuple[Mapping, ...] = ()
    delete_mappings: tuple[MappingKey, ...] = ()
    connections: tuple[ConnectionRecord, ...] = ()
    delete_connections: tuple[uuid.UUID, ...] = ()
    firewall: FirewallSettings | None = None
    counters: collections.abc.Mapping[str, int] | None = None

    def __bool__(self) -> bool:
        """True when the change writes anything."""
        return bool(
            self.put_mappings
            or self.delete_mappings
            or self.connections
            or self.delete_connections
            or self.firewall is not None
            or self.counters
        )


class StateStore(Protocol):
    """What the service needs from a store: load, two-step writes, and pruning at start."""

    @property
    def in_transaction(self) -> bool:
        """True between `stage` and `commit`/`rollback`."""
        ...

    def load(self) -> StoredState:
        """The committed state; StoreError while a change is staged or on undecodable data."""
        ...

    def stage(self, changes: StoreChanges) -> None:
        """Open a transaction and write `changes` without committing; StoreError if one is open."""
        ...

    def commit(self) -> None:
        """Make the staged change durable; StoreError (and rolled back) if nothing is staged."""
        ...

    def rollback(self) -> None:
        """Discard the staged change; a no-op when nothing is staged."""
        ...

    def close(self) -> None:
        """Roll back any staged change and release the store; idempotent."""
        ...

    def prune_expired(self, now: float) -> tuple[Mapping, ...]:
        """Delete and return, committed, the mappings whose lease ended at or before `now`."""
        ...


# -- validation shared by both stores ------------------------------------------------------------


def _check_text(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StoreError(f"{what} is not encodable text: {value!r}") from exc


def _check_port(value: int, what: str) -> None:
    if not 0 <= value <= 65535:
        raise StoreError(f"{what} must be in 0..65535, not {value!r}")


def _check_time(value: float, what: str) -> None:
    if not math.isfinite(value):
        raise StoreError(f"{what} must be finite, not {value!r}")


def _check_mapping(mapping: Mapping) -> None:
    where = f"mapping {mapping.protocol.name} {mapping.external_port}"
    _check_port(mapping.external_port, f"{where}: external port")
    _check_port(mapping.internal_port, f"{where}: internal port")
    _check_text(mapping.description, f"{where}: description")
    if mapping.target_name is not None:
        _check_text(mapping.target_name, f"{where}: target name")
    if mapping.expires_at is not None:
        _check_time(mapping.expires_at, f"{where}: expires_at")
    _check_time(mapping.created_at, f"{where}: created_at")


def _check_changes(changes: StoreChanges) -> None:
    """StoreError if `changes` holds a value the database could not hold faithfully."""
    for mapping in changes.put_mappings:
        _check_mapping(mapping)
    for record in changes.connections:
        _check_text(record.name, f"connection {record.guid}: name")
    for name, value in (changes.counters or {}).items():
        _check_text(name, "counter name")
        if not _MIN_INT64 <= value <= _MAX_INT64:
            raise StoreError(f"counter {name!r} does not fit in 64 bits: {value!r}")


# -- decoding ------------------------------------------------------------------------------------


def _as_int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _as_flag(value: object) -> bool:
    number = _as_int(value)
    if number not in (0, 1):
        raise ValueError("expected 0 or 1")
    return number == 1


def _as_text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _as_time(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def _as_address(value: object) -> IPv4Address:
    return IPv4Address(_as_text(value))


def _as_guid(value: object) -> uuid.UUID:
    text = _as_text(value)
    guid = uuid.UUID(text)
    if str(guid) != text:
        raise ValueError("not a canonical lower-case UUID")
    return guid


def _as_remote_host(value: object) -> IPv4Address | None:
    text = _as_text(value)
    return None if text == "" else IPv4Address(text)


def _optional(decode: Callable[[object], _T]) -> Callable[[object], _T | None]:
    return lambda value: None if value is None else decode(value)


def _column(name: str, value: object, decode: Callable[[object], _T]) -> _T:
    try:
        return decode(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"column {name}={value!r}: {exc}") from exc


def _decode_mapping(row: tuple[object, ...]) -> Mapping:
    try:
        return Mapping(
            protocol=_column("protocol", row[0], lambda v: IPProtocol(_as_int(v))),
            external_port=_column("external_port", row[1], _as_int),
            remote_host=_column("remote_host", row[2], _as_remote_host),
            connection=_column("connection", row[3], _as_guid),
            internal_client=_column("internal_client", row[4], _as_address),
            internal_port=_column("internal_port", row[5], _as_int),
            description=_column("description", row[6], _as_text),
            enabled=_column("enabled", row[7], _as_flag),
            expires_at=_column("expires_at", row[8], _optional(_as_time)),
            origin=_column("origin", row[9], lambda v: Origin(_as_text(v))),
            owner=_column("owner", row[10], _optional(_as_address)),
            target_name=_column("target_name", row[11], _optional(_as_text)),
            created_at=_column("created_at", row[12], _as_time),
        )
    except ValueError as exc:
        raise StoreError(
            f"cannot decode mappings row (protocol={row[0]!r}, external_port={row[1]!r}): {exc}"
        ) from exc


def _decode_connection(row: tuple[object, ...]) -> ConnectionRecord:
    try:
        return ConnectionRecord(
            guid=_column("guid", row[0], _as_guid),
            name=_column("name", row[1], _as_text),
            role=_column("role", row[2], _optional(lambda v: SharingConnectionType(_as_int(v)))),
            firewall=_column("firewall", row[3], _as_flag),
        )
    except ValueError as exc:
        raise StoreError(f"cannot decode connections row (guid={row[0]!r}): {exc}") from exc


def _decode_firewall(rows: Iterable[tuple[object, ...]]) -> FirewallSettings:
    values = {_FIREWALL_ENABLED: True, _FIREWALL_SHIELDED: False}
    for key, value in rows:
        if not isinstance(key, str) or key not in values:
            raise StoreError(f"cannot decode settings row (key={key!r}): unknown setting")
        if value not in ("0", "1"):
            raise StoreError(f"cannot decode settings row (key={key!r}): bad value {value!r}")
        values[key] = value == "1"
    return FirewallSettings(
        enabled=values[_FIREWALL_ENABLED], exceptions_not_allowed=values[_FIREWALL_SHIELDED]
    )


def _decode_counters(rows: Iterable[tuple[object, ...]]) -> dict[str, int]:
    counters: dict[str, int] = {}
    for name, value in rows:
        try:
            counters[_column("name", name, _as_text)] = _column("value", value, _as_int)
        except ValueError as exc:
            raise StoreError(f"cannot decode counters row (name={name!r}): {exc}") from exc
    return counters


# -- encoding ------------------------------------------------------------------------------------


def _encode_mapping(mapping: Mapping) -> tuple[object, ...]:
    return (
        int(mapping.protocol),
        mapping.external_port,
        "" if mapping.remote_host is None else str(mapping.remote_host),
        str(mapping.connection),
        str(mapping.internal_client),
        mapping.internal_port,
        mapping.description,
        int(mapping.enabled),
        mapping.expires_at,
        mapping.origin.value,
        None if mapping.owner is None else str(mapping.owner),
        mapping.target_name,
        mapping.created_at,
    )


def _encode_key(key: MappingKey) -> tuple[object, ...]:
    remote = "" if key.remote_host is None else str(key.remote_host)
    return (int(key.protocol), key.external_port, remote)


def _encode_connection(record: ConnectionRecord) -> tuple[object, ...]:
    role = None if record.role is None else int(record.role)
    return (str(record.guid), record.name, role, int(record.firewall))


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, split where SQLite itself sees a statement end."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        yield pending  # unterminated: SQLite reports the error


# -- SQLite --------------------------------------------------------------------------------------


class SqliteStore:
    """The state in an SQLite database, written through WAL with explicit transactions.

    In WAL mode, synchronous=NORMAL keeps every committed transaction across a process crash
    (kill -9), which is the guarantee the daemon needs; synchronous=FULL also keeps it across
    power loss or an OS crash, at the cost of an fsync per commit. Opening creates the parent
    directory and applies pending `MIGRATIONS` in one transaction; a database written by a newer
    schema is refused with StoreError. One caller at a time (any thread, not concurrently).
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "NORMAL") -> None:
        """Open or create the database at `path`; ValueError for a bad `synchronous`."""
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self._path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create directory for {self.path}: {exc}") from exc
        try:
            db = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self._db: sqlite3.Connection | None = db
        try:
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {mode}")
            db.execute("PRAGMA foreign_keys = ON")
            self._migrate(db)
        except BaseException as exc:
            self.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            raise

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(_BOOTSTRAP)
            row = db.execute("SELECT version FROM schema_version WHERE id = 0").fetchone()
            version = 0 if row is None else row[0]
            if type(version) is not int or version < 0:
                raise StoreError(f"{self.path}: bad schema version {version!r}")
            latest = len(MIGRATIONS)
            if version > latest:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this code "
                    f"understands ({latest}); refusing to open it"
                )
            for number in range(version, latest):
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
            if version < latest:
                db.execute(
                    "INSERT OR REPLACE INTO schema_version (id, version) VALUES (0, ?)", (latest,)
                )
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path} is closed")
        return self._db

    @property
    def in_transaction(self) -> bool:
        """True between `stage` and `commit`/`rollback`."""
        return self._db is not None and self._db.in_transaction

    def load(self) -> StoredState:
        """The committed state; StoreError while a change is staged or on undecodable data."""
        db = self._connection()
        if db.in_transaction:
            raise StoreError("cannot load while a change is staged")
        try:
            db.execute("BEGIN")
            try:
                connections = db.execute(
                    "SELECT guid, name, role, firewall FROM connections ORDER BY guid"
                ).fetchall()
                mappings = db.execute(_SELECT_MAPPINGS + _ORDER_MAPPINGS).fetchall()
                settings = db.execute("SELECT key, value FROM settings ORDER BY key").fetchall()
                counters = db.execute("SELECT name, value FROM counters ORDER BY name").fetchall()
            finally:
                db.rollback()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from exc
        return StoredState(
            connections=tuple(_decode_connection(row) for row in connections),
            mappings=tuple(_decode_mapping(row) for row in mappings),
            firewall=_decode_firewall(settings),
            counters=types.MappingProxyType(_decode_counters(counters)),
        )

    def stage(self, changes: StoreChanges) -> None:
        """Open a transaction and write `changes` without committing; StoreError if one is open.

        A failed write rolls its own transaction back; an already staged change is left as is.
        """
        db = self._connection()
        if db.in_transaction:
            raise StoreError("a change is already staged; commit or roll it back first")
        _check_changes(changes)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot start a transaction on {self.path}: {exc}") from exc
        try:
            self._write(db, changes)
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            db.rollback()
            raise StoreError(f"cannot write to {self.path}: {exc}") from exc

    @staticmethod
    def _write(db: sqlite3.Connection, changes: StoreChanges) -> None:
        db.executemany(
            "DELETE FROM mappings WHERE protocol = ? AND external_port = ? AND remote_host = ?",
            [_encode_key(key) for key in changes.delete_mappings],
        )
        db.executemany(
            f"INSERT OR REPLACE INTO mappings ({_MAPPING_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_encode_mapping(mapping) for mapping in changes.put_mappings],
        )
        db.executemany(
            "DELETE FROM connections WHERE guid = ?",
            [(str(guid),) for guid in changes.delete_connections],
        )
        db.executemany(
            "INSERT OR REPLACE INTO connections (guid, name, role, firewall) VALUES (?, ?, ?, ?)",
            [_encode_connection(record) for record in changes.connections],
        )
        if changes.firewall is not None:
            db.executemany(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                [
                    (_FIREWALL_ENABLED, str(int(changes.firewall.enabled))),
                    (_FIREWALL_SHIELDED, str(int(changes.firewall.exceptions_not_allowed))),
                ],
            )
        if changes.counters:
            db.executemany(
                "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)",
                list(changes.counters.items()),
            )

    def commit(self) -> None:
        """Make the staged change durable; StoreError (and rolled back) if nothing is staged."""
        db = self._connection()
        if not db.in_transaction:
            raise StoreError("nothing is staged to commit")
        try:
            db.commit()
        except sqlite3.Error as exc:
            db.rollback()
            raise StoreError(f"cannot commit to {self.path}: {exc}") from exc

    def rollback(self) -> None:
        """Discard the staged change; a no-op when nothing is staged."""
        db = self._connection()
        try:
            db.rollback()
        except sqlite3.Error as exc:  # pragma: no cover - SQLite rolls back on its own
            raise StoreError(f"cannot roll back on {self.path}: {exc}") from exc

    def close(self) -> None:
        """Roll back any staged change and close the database; idempotent."""
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def prune_expired(self, now: float) -> tuple[Mapping, ...]:
        """Delete and return, committed, the mappings whose lease ended at or before `now`."""
        db = self._connection()
        if db.in_transaction:
            raise StoreError("cannot prune while a change is staged")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot start a transaction on {self.path}: {exc}") from exc
        try:
            rows = db.execute(_SELECT_MAPPINGS + _DUE + _ORDER_MAPPINGS, (now,)).fetchall()
            expired = tuple(_decode_mapping(row) for row in rows)
            db.execute("DELETE FROM mappings" + _DUE, (now,))
            db.commit()
        except BaseException as exc:
            db.rollback()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot prune {self.path}: {exc}") from exc
            raise
        return expired


# -- memory --------------------------------------------------------------------------------------


class MemoryStore:
    """The state in memory, with the same transaction contract as SqliteStore and no disk."""

    def __init__(self, initial: StoredState | None = None) -> None:
        """An empty store, or one holding `initial` as its committed state."""
        self._mappings: dict[tuple[IPProtocol, int], Mapping] = {}
        self._connections: dict[uuid.UUID, ConnectionRecord] = {}
        self._firewall = FirewallSettings()
        self._counters: dict[str, int] = {}
        self._staged: StoreChanges | None = None
        self._closed = False
        if initial is not None:
            self._apply(
                StoreChanges(
                    put_mappings=initial.mappings,
                    connections=initial.connections,
                    firewall=initial.firewall,
                    counters=initial.counters,
                )
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("memory store is closed")

    @property
    def in_transaction(self) -> bool:
        """True between `stage` and `commit`/`rollback`."""
        return self._staged is not None

    def load(self) -> StoredState:
        """The committed state; StoreError while a change is staged."""
        self._check_open()
        if self._staged is not None:
            raise StoreError("cannot load while a change is staged")
        return StoredState(
            connections=tuple(
                self._connections[guid] for guid in sorted(self._connections, key=str)
            ),
            mappings=tuple(self._mappings[slot] for slot in sorted(self._mappings)),
            firewall=self._firewall,
            counters=types.MappingProxyType(dict(sorted(self._counters.items()))),
        )

    def stage(self, changes: StoreChanges) -> None:
        """Hold `changes` until `commit`; StoreError if a change is already staged or invalid."""
        self._check_open()
        if self._staged is not None:
            raise StoreError("a change is already staged; commit or roll it back first")
        _check_changes(changes)
        self._staged = changes

    def commit(self) -> None:
        """Apply the staged change; StoreError if nothing is staged."""
        self._check_open()
        if self._staged is None:
            raise StoreError("nothing is staged to commit")
        changes, self._staged = self._staged, None
        self._apply(changes)

    def _apply(self, changes: StoreChanges) -> None:
        for key in changes.delete_mappings:
            slot = (key.protocol, key.external_port)
            held = self._mappings.get(slot)
            if held is not None and held.remote_host == key.remote_host:
                del self._mappings[slot]
        for mapping in changes.put_mappings:
            self._mappings[(mapping.protocol, mapping.external_port)] = mapping
        for guid in changes.delete_connections:
            self._connections.pop(guid, None)
        for record in changes.connections:
            self._connections[record.guid] = record
        if changes.firewall is not None:
            self._firewall = changes.firewall
        if changes.counters:
            self._counters.update(changes.counters)

    def rollback(self) -> None:
        """Discard the staged change; a no-op when nothing is staged."""
        self._check_open()
        self._staged = None

    def close(self) -> None:
        """Discard any staged change and refuse further use; idempotent."""
        self._staged = None
        self._closed = True

    def prune_expired(self, now: float) -> tuple[Mapping, ...]:
        """Delete and return the mappings whose lease ended at or before `now`."""
        self._check_open()
        if self._staged is not None:
            raise StoreError("cannot prune while a change is staged")
        due = sorted(
            slot
            for slot, mapping in self._mappings.items()
            if mapping.expires_at is not None and mapping.expires_at <= now
        )
        return tuple(self._mappings.pop(slot) for slot in due)
