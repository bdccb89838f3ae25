"""The state store: SqliteStore on disk and MemoryStore, against one contract."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igd.natcore import store as store_module
from igd.natcore.errors import NatError
from igd.natcore.model import (
    FirewallSettings,
    IPProtocol,
    Mapping,
    MappingKey,
    Origin,
    SharingConnectionType,
)
from igd.natcore.store import (
    MIGRATIONS,
    ConnectionRecord,
    MemoryStore,
    SqliteStore,
    StateStore,
    StoreChanges,
    StoredState,
    StoreError,
)

WAN = uuid.UUID("6b1d2a8e-0c3f-4a57-9d2e-1f0a9b8c7d6e")
LAN = uuid.UUID("0f6e5d4c-3b2a-4190-8877-665544332211")
CLIENT = IPv4Address("192.168.1.20")
PEER = IPv4Address("203.0.113.7")
OTHER_PEER = IPv4Address("198.51.100.9")


def mapping(
    port: int = 8080,
    protocol: IPProtocol = IPProtocol.TCP,
    remote_host: IPv4Address | None = None,
    **fields: object,
) -> Mapping:
    base = Mapping(
        protocol=protocol,
        external_port=port,
        internal_client=CLIENT,
        internal_port=80,
        connection=WAN,
        remote_host=remote_host,
        created_at=1_700_000_000.0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def sample_mappings() -> tuple[Mapping, ...]:
    """Every field exercised: remote host set/unset, leases, every origin, names, owners."""
    return (
        mapping(1, description="admin, permanent, wildcard host"),
        mapping(
            22,
            remote_host=PEER,
            enabled=False,
            origin=Origin.UPNP,
            owner=CLIENT,
            expires_at=1_700_003_600.5,
            description="naïve ✓ upnp",
        ),
        mapping(
            65535,
            origin=Origin.PCP,
            owner=IPv4Address("192.168.1.21"),
            target_name="printer.lan",
            internal_port=65535,
            connection=LAN,
            expires_at=1_700_000_120.25,
        ),
        mapping(0, IPProtocol.UDP, origin=Origin.NATPMP, owner=None, internal_port=0),
        mapping(5353, IPProtocol.UDP, remote_host=OTHER_PEER, created_at=0.0, description=""),
    )


def sample_connections() -> tuple[ConnectionRecord, ...]:
    return (
        ConnectionRecord(WAN, "WAN", SharingConnectionType.PUBLIC, True),
        ConnectionRecord(LAN, "Local Area Connection", SharingConnectionType.PRIVATE, False),
        ConnectionRecord(uuid.UUID(int=7), "absent VPN", None, True),
    )


def sample_changes() -> StoreChanges:
    return StoreChanges(
        put_mappings=sample_mappings(),
        connections=sample_connections(),
        firewall=FirewallSettings(enabled=False, exceptions_not_allowed=True),
        counters={"system_update_id": 42, "boot_id": 2**40, "negative": -1},
    )


def expected_state(changes: StoreChanges) -> StoredState:
    return StoredState(
        connections=tuple(sorted(changes.connections, key=lambda r: str(r.guid))),
        mappings=tuple(sorted(changes.put_mappings, key=lambda m: (m.protocol, m.external_port))),
        firewall=changes.firewall or FirewallSettings(),
        counters=dict(sorted((changes.counters or {}).items())),
    )


def commit(store: StateStore, changes: StoreChanges) -> None:
    store.stage(changes)
    store.commit()


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """Each implementation of the contract, closed after the test."""
    opened: StateStore
    opened = SqliteStore(tmp_path / "state.db") if request.param == "sqlite" else MemoryStore()
    yield opened
    opened.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "lib" / "igd" / "state.db"


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, autocommit connection for inspecting or corrupting the file behind a store."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


# -- the shared contract -------------------------------------------------------------------------


def test_empty_store_loads_defaults(store: StateStore) -> None:
    assert store.load() == StoredState((), (), FirewallSettings(), {})
    assert not store.in_transaction


def test_round_trip_of_every_field(store: StateStore) -> None:
    changes = sample_changes()
    commit(store, changes)
    state = store.load()
    assert state == expected_state(changes)
    assert [m.key for m in state.mappings] == sorted(m.key for m in state.mappings)
    assert isinstance(state.mappings[0].protocol, IPProtocol)
    assert {type(record.role) for record in state.connections} == {
        SharingConnectionType,
        type(None),
    }
    with pytest.raises(TypeError):
        state.counters["boot_id"] = 0  # type: ignore[index]


def test_stage_then_rollback_leaves_nothing(store: StateStore) -> None:
    store.stage(sample_changes())
    assert store.in_transaction
    store.rollback()
    assert not store.in_transaction
    assert store.load() == StoredState((), (), FirewallSettings(), {})


def test_rollback_keeps_earlier_commits(store: StateStore) -> None:
    commit(store, StoreChanges(put_mappings=(mapping(1),), counters={"boot_id": 1}))
    store.stage(StoreChanges(delete_mappings=(mapping(1).key,), counters={"boot_id": 2}))
    store.rollback()
    assert store.load().mappings == (mapping(1),)
    assert store.load().counters == {"boot_id": 1}


def test_rollback_without_a_transaction_is_a_noop(store: StateStore) -> None:
    store.rollback()
    assert not store.in_transaction


def test_double_stage_raises_and_keeps_the_first(store: StateStore) -> None:
    store.stage(StoreChanges(put_mappings=(mapping(1),)))
    with pytest.raises(StoreError, match="already staged"):
        store.stage(StoreChanges(put_mappings=(mapping(2),)))
    assert store.in_transaction
    store.commit()
    assert store.load().mappings == (mapping(1),)


def test_commit_without_stage_raises(store: StateStore) -> None:
    with pytest.raises(StoreError, match="nothing is staged"):
        store.commit()


def test_empty_change_still_opens_a_transaction(store: StateStore) -> None:
    store.stage(StoreChanges())
    assert store.in_transaction
    store.commit()
    assert not store.in_transaction


def test_load_and_prune_refuse_while_staged(store: StateStore) -> None:
    store.stage(StoreChanges())
    with pytest.raises(StoreError, match="staged"):
        store.load()
    with pytest.raises(StoreError, match="staged"):
        store.prune_expired(0.0)
    store.rollback()


def test_same_protocol_and_port_with_another_remote_host_replaces(store: StateStore) -> None:
    commit(store, StoreChanges(put_mappings=(mapping(443, remote_host=PEER),)))
    replacement = mapping(443, remote_host=OTHER_PEER, internal_port=8443)
    commit(store, StoreChanges(put_mappings=(replacement,)))
    commit(store, StoreChanges(put_mappings=(mapping(443, IPProtocol.UDP),)))
    assert store.load().mappings == (replacement, mapping(443, IPProtocol.UDP))


def test_last_put_of_a_port_in_one_change_wins(store: StateStore) -> None:
    first, second = mapping(7, remote_host=PEER), mapping(7)
    commit(store, StoreChanges(put_mappings=(first, second)))
    assert store.load().mappings == (second,)


def test_delete_needs_the_matching_remote_host(store: StateStore) -> None:
    held = mapping(443, remote_host=PEER)
    commit(store, StoreChanges(put_mappings=(held, mapping(80))))
    commit(
        store,
        StoreChanges(
            delete_mappings=(
                MappingKey(IPProtocol.TCP, 443),
                MappingKey(IPProtocol.TCP, 443, OTHER_PEER),
                MappingKey(IPProtocol.UDP, 443, PEER),
                MappingKey(IPProtocol.TCP, 9999),
            )
        ),
    )
    assert store.load().mappings == (mapping(80), held)
    commit(store, StoreChanges(delete_mappings=(held.key, mapping(80).key)))
    assert store.load().mappings == ()


def test_deletions_apply_before_puts(store: StateStore) -> None:
    record = ConnectionRecord(WAN, "WAN", None, False)
    commit(
        store,
        StoreChanges(
            put_mappings=(mapping(1),),
            delete_mappings=(mapping(1).key,),
            connections=(record,),
            delete_connections=(WAN,),
        ),
    )
    state = store.load()
    assert state.mappings == (mapping(1),)
    assert state.connections == (record,)


def test_connections_are_upserted_and_deleted(store: StateStore) -> None:
    commit(store, StoreChanges(connections=sample_connections()))
    renamed = ConnectionRecord(WAN, "Uplink", None, False)
    commit(
        store,
        StoreChanges(connections=(renamed,), delete_connections=(LAN, uuid.UUID(int=99))),
    )
    assert store.load().connections == (
        ConnectionRecord(uuid.UUID(int=7), "absent VPN", None, True),
        renamed,
    )


def test_counters_upsert_by_name(store: StateStore) -> None:
    commit(store, StoreChanges(counters={"system_update_id": 1, "boot_id": 1}))
    commit(store, StoreChanges(counters={"system_update_id": 2}))
    commit(store, StoreChanges(counters={}))
    assert store.load().counters == {"boot_id": 1, "system_update_id": 2}


def test_firewall_settings_are_replaced_whole(store: StateStore) -> None:
    commit(store, StoreChanges(firewall=FirewallSettings(enabled=False)))
    assert store.load().firewall == FirewallSettings(enabled=False)
    commit(store, StoreChanges(firewall=FirewallSettings(exceptions_not_allowed=True)))
    assert store.load().firewall == FirewallSettings(exceptions_not_allowed=True)


def test_prune_expired_drops_exactly_the_due_ones(store: StateStore) -> None:
    due_early = mapping(10, expires_at=100.0)
    due_now = mapping(5, IPProtocol.UDP, expires_at=200.0)
    later = mapping(11, expires_at=200.5)
    permanent = mapping(12)
    commit(store, StoreChanges(put_mappings=(later, due_now, permanent, due_early)))
    assert store.prune_expired(200.0) == (due_early, due_now)
    assert not store.in_transaction
    assert store.prune_expired(200.0) == ()
    assert store.load().mappings == (later, permanent)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (StoreChanges(put_mappings=(mapping(65536),)), "external port"),
        (StoreChanges(put_mappings=(mapping(-1),)), "external port"),
        (StoreChanges(put_mappings=(mapping(1, internal_port=70000),)), "internal port"),
        (StoreChanges(put_mappings=(mapping(1, expires_at=float("nan")),)), "expires_at"),
        (StoreChanges(put_mappings=(mapping(1, created_at=float("inf")),)), "created_at"),
        (StoreChanges(put_mappings=(mapping(1, description="\ud800"),)), "description"),
        (StoreChanges(put_mappings=(mapping(1, target_name="\udfff"),)), "target name"),
        (StoreChanges(connections=(ConnectionRecord(WAN, "\ud800", None, True),)), "name"),
        (StoreChanges(counters={"\ud800": 1}), "counter name"),
        (StoreChanges(counters={"boot_id": 2**63}), "64 bits"),
        (StoreChanges(counters={"boot_id": -(2**63) - 1}), "64 bits"),
    ],
)
def test_unstorable_changes_are_refused_before_staging(
    store: StateStore, changes: StoreChanges, message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        store.stage(changes)
    assert not store.in_transaction
    assert store.load() == StoredState((), (), FirewallSettings(), {})


def test_closed_store_refuses_use(store: StateStore) -> None:
    store.stage(sample_changes())
    store.close()
    store.close()
    assert not store.in_transaction
    for action in (
        store.load,
        store.commit,
        store.rollback,
        lambda: store.stage(StoreChanges()),
        lambda: store.prune_expired(0.0),
    ):
        with pytest.raises(StoreError, match="closed"):
            action()


def test_store_error_is_a_nat_error() -> None:
    assert issubclass(StoreError, NatError)


@pytest.mark.parametrize(
    ("changes", "truth"),
    [
        (StoreChanges(), False),
        (StoreChanges(counters={}), False),
        (StoreChanges(put_mappings=(mapping(),)), True),
        (StoreChanges(delete_mappings=(mapping().key,)), True),
        (StoreChanges(connections=(ConnectionRecord(WAN, "WAN", None, True),)), True),
        (StoreChanges(delete_connections=(WAN,)), True),
        (StoreChanges(firewall=FirewallSettings()), True),
        (StoreChanges(counters={"boot_id": 0}), True),
    ],
)
def test_store_changes_truth(changes: StoreChanges, truth: bool) -> None:
    assert bool(changes) is truth


# -- SQLite specifics ----------------------------------------------------------------------------


def test_commit_persists_across_close_and_reopen(db_path: Path) -> None:
    store = SqliteStore(db_path)
    commit(store, sample_changes())
    store.close()
    reopened = SqliteStore(db_path)
    assert reopened.load() == expected_state(sample_changes())
    reopened.close()


def test_close_with_a_staged_change_discards_it(db_path: Path) -> None:
    store = SqliteStore(db_path)
    store.stage(sample_changes())
    store.close()
    reopened = SqliteStore(db_path)
    assert reopened.load().mappings == ()
    reopened.close()


def test_creates_the_parent_directory(db_path: Path) -> None:
    assert not db_path.parent.exists()
    SqliteStore(str(db_path)).close()
    assert db_path.is_file()


def test_unusable_directory_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create directory"):
        SqliteStore(tmp_path / "file" / "state.db")


def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(tmp_path)


def test_wal_journal_mode_is_active(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with raw(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2), ("full", 2)])
def test_synchronous_level_is_applied(db_path: Path, synchronous: str, level: int) -> None:
    store = SqliteStore(db_path, synchronous=synchronous)
    assert store._connection().execute("PRAGMA synchronous").fetchone() == (level,)
    assert store._connection().execute("PRAGMA foreign_keys").fetchone() == (1,)
    store.close()


@pytest.mark.parametrize("synchronous", ["OFF", "EXTRA", "NORMAL; DROP TABLE mappings", ""])
def test_bad_synchronous_level_is_refused(db_path: Path, synchronous: str) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(db_path, synchronous=synchronous)
    assert not db_path.exists()


def schema_version(path: Path) -> int:
    with raw(path) as db:
        row = db.execute("SELECT version FROM schema_version").fetchall()
    assert len(row) == 1
    version = row[0][0]
    assert isinstance(version, int)
    return version


def table_names(path: Path) -> set[str]:
    with raw(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def test_migrations_reach_the_latest_version_and_reopening_is_idempotent(db_path: Path) -> None:
    SqliteStore(db_path).close()
    assert schema_version(db_path) == len(MIGRATIONS)
    assert table_names(db_path) == {
        "schema_version",
        "connections",
        "mappings",
        "settings",
        "counters",
    }
    store = SqliteStore(db_path)
    commit(store, sample_changes())
    store.close()
    store = SqliteStore(db_path)
    assert schema_version(db_path) == len(MIGRATIONS)
    assert store.load() == expected_state(sample_changes())
    store.close()


def test_a_new_migration_is_applied_once_on_top(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(db_path)
    commit(store, StoreChanges(put_mappings=(mapping(1),)))
    store.close()
    extra = "CREATE TABLE audit (note TEXT DEFAULT 'a;b');\nINSERT INTO audit DEFAULT VALUES;\n"
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, extra))
    SqliteStore(db_path).close()
    store = SqliteStore(db_path)
    assert schema_version(db_path) == len(MIGRATIONS) + 1
    with raw(db_path) as db:
        assert db.execute("SELECT note FROM audit").fetchall() == [("a;b",)]
    assert store.load().mappings == (mapping(1),)
    store.close()


@pytest.mark.parametrize(
    "broken", ["CREATE TABLE audit (note TEXT); CREATE TABLE nonsense (", "SELECT 'unterminated"]
)
def test_a_failing_migration_changes_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    SqliteStore(db_path).close()
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS, broken))
    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(db_path)
    assert schema_version(db_path) == len(MIGRATIONS)
    assert "audit" not in table_names(db_path)


def test_a_newer_schema_version_is_refused(db_path: Path) -> None:
    SqliteStore(db_path).close()
    with raw(db_path) as db:
        db.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="newer than this code"):
        SqliteStore(db_path)
    assert schema_version(db_path) == len(MIGRATIONS) + 1


@pytest.mark.parametrize("version", ["one", -1, 1.5])
def test_a_garbled_schema_version_is_refused(db_path: Path, version: object) -> None:
    SqliteStore(db_path).close()
    with raw(db_path) as db:
        db.execute("UPDATE schema_version SET version = ?", (version,))
    with pytest.raises(StoreError, match="bad schema version"):
        SqliteStore(db_path)


def test_a_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not an SQLite database, just some text" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        SqliteStore(db_path)


GOOD_ROW = {
    "protocol": 6,
    "external_port": 80,
    "remote_host": "",
    "connection": str(WAN),
    "internal_client": "192.168.1.20",
    "internal_port": 80,
    "description": "",
    "enabled": 1,
    "expires_at": None,
    "origin": "admin",
    "owner": None,
    "target_name": None,
    "created_at": 0.0,
}


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("internal_client", "192.168.1.300"),
        ("internal_client", 3232235796),
        ("remote_host", "somewhere"),
        ("owner", "::1"),
        ("connection", "not-a-guid"),
        ("connection", str(WAN).upper()),
        ("protocol", 7),
        ("protocol", "tcp"),
        ("external_port", "eighty"),
        ("enabled", 2),
        ("enabled", "yes"),
        ("origin", "carrier-pigeon"),
        ("expires_at", "soon"),
        ("expires_at", float("inf")),
        ("created_at", "epoch"),
        ("description", b"bytes"),
        ("target_name", b"\x00"),
    ],
)
def test_an_undecodable_mapping_row_raises(db_path: Path, column: str, value: object) -> None:
    store = SqliteStore(db_path)
    row = {**GOOD_ROW, column: value}
    with raw(db_path) as db:
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute(
            f"INSERT INTO mappings ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
    with pytest.raises(StoreError, match=rf"mappings row \(protocol=.*column {column}="):
        store.load()
    store.close()


def test_an_undecodable_due_row_stops_pruning(db_path: Path) -> None:
    store = SqliteStore(db_path)
    commit(store, StoreChanges(put_mappings=(mapping(2, expires_at=1.0),)))
    row = {**GOOD_ROW, "expires_at": 1.0, "owner": "nobody"}
    with raw(db_path) as db:
        db.execute(
            f"INSERT INTO mappings ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
    with pytest.raises(StoreError, match="column owner='nobody'"):
        store.prune_expired(10.0)
    assert not store.in_transaction
    with raw(db_path) as db:
        assert db.execute("SELECT count(*) FROM mappings").fetchone() == (2,)
    store.close()


@pytest.mark.parametrize(
    ("table", "row", "pattern"),
    [
        ("connections", ("bogus", "WAN", None, 1), "connections row .*guid='bogus'.*column guid"),
        ("connections", (str(WAN), "WAN", 5, 1), "connections row .*column role=5"),
        ("connections", (str(WAN), b"WAN", 1, 1), "connections row .*column name"),
        ("connections", (str(WAN), "WAN", 1, 3), "connections row .*column firewall=3"),
        ("settings", ("firewall.enabled", "maybe"), "settings row .*firewall.enabled.*'maybe'"),
        ("settings", ("colour", "blue"), "settings row .*'colour'.*unknown setting"),
        ("settings", (b"k", "1"), "settings row .*key=b'k'"),
        ("counters", ("boot_id", "many"), "counters row .*boot_id.*column value"),
        ("counters", (b"n", 1), "counters row .*name=b'n'.*column name"),
    ],
)
def test_other_undecodable_rows_raise(
    db_path: Path, table: str, row: tuple[object, ...], pattern: str
) -> None:
    store = SqliteStore(db_path)
    with raw(db_path) as db:
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
    with pytest.raises(StoreError, match=pattern):
        store.load()
    store.close()


def test_a_failed_write_rolls_the_stage_back(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with raw(db_path) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON counters "
            "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
        )
    with pytest.raises(StoreError, match="refused by trigger"):
        store.stage(StoreChanges(put_mappings=(mapping(1),), counters={"boot_id": 1}))
    assert not store.in_transaction
    assert store.load().mappings == ()
    store.close()


def test_a_failed_commit_rolls_back(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with raw(db_path) as db:
        db.executescript(
            """
            CREATE TABLE parent (id INTEGER PRIMARY KEY);
            CREATE TABLE child (
                id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
            );
            CREATE TRIGGER orphan AFTER INSERT ON counters
            BEGIN INSERT INTO child VALUES (42); END;
            """
        )
    store.stage(StoreChanges(put_mappings=(mapping(1),), counters={"boot_id": 1}))
    with pytest.raises(StoreError, match="cannot commit"):
        store.commit()
    assert not store.in_transaction
    assert store.load().mappings == ()
    store.close()


def test_a_second_store_sees_only_committed_changes(db_path: Path) -> None:
    writer, reader = SqliteStore(db_path), SqliteStore(db_path)
    writer.stage(StoreChanges(put_mappings=(mapping(1),)))
    assert reader.load().mappings == ()
    writer.commit()
    assert reader.load().mappings == (mapping(1),)
    writer.close()
    reader.close()


def test_a_locked_database_makes_stage_and_prune_fail(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_BUSY_TIMEOUT_MS", 0)
    holder, blocked = SqliteStore(db_path), SqliteStore(db_path)
    holder.stage(StoreChanges())
    with pytest.raises(StoreError, match="cannot start a transaction"):
        blocked.stage(StoreChanges())
    with pytest.raises(StoreError, match="cannot start a transaction"):
        blocked.prune_expired(0.0)
    assert not blocked.in_transaction
    holder.rollback()
    blocked.stage(StoreChanges())
    blocked.rollback()
    holder.close()
    blocked.close()


def test_a_read_failure_raises_store_error(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with raw(db_path) as db:
        db.execute("DROP TABLE counters")
    with pytest.raises(StoreError, match="cannot read"):
        store.load()
    store.close()


def test_a_prune_failure_rolls_back(db_path: Path) -> None:
    store = SqliteStore(db_path)
    commit(store, StoreChanges(put_mappings=(mapping(1, expires_at=5.0),)))
    with raw(db_path) as db:
        db.execute(
            "CREATE TRIGGER keep BEFORE DELETE ON mappings "
            "BEGIN SELECT RAISE(ABORT, 'kept by trigger'); END"
        )
    with pytest.raises(StoreError, match="kept by trigger"):
        store.prune_expired(10.0)
    assert not store.in_transaction
    assert store.load().mappings == (mapping(1, expires_at=5.0),)
    store.close()


# -- MemoryStore specifics -----------------------------------------------------------------------


def test_memory_store_starts_from_an_initial_state() -> None:
    state = expected_state(sample_changes())
    store = MemoryStore(state)
    assert store.load() == state
    store.close()


def test_both_stores_agree_on_the_sample(tmp_path: Path) -> None:
    stores: tuple[StateStore, ...] = (SqliteStore(tmp_path / "state.db"), MemoryStore())
    for store in stores:
        commit(store, sample_changes())
    assert stores[0].load() == stores[1].load()
    assert stores[0].prune_expired(1_700_001_000.0) == stores[1].prune_expired(1_700_001_000.0)
    assert stores[0].load() == stores[1].load()
    for store in stores:
        store.close()


# -- model-based ---------------------------------------------------------------------------------

_hosts = st.sampled_from([None, PEER, OTHER_PEER])
_protocols = st.sampled_from([IPProtocol.TCP, IPProtocol.UDP])
_ports = st.integers(min_value=1, max_value=4)
_mappings = st.builds(
    Mapping,
    protocol=_protocols,
    external_port=_ports,
    internal_client=st.sampled_from([CLIENT, IPv4Address("192.168.1.21")]),
    internal_port=st.integers(min_value=0, max_value=65535),
    connection=st.sampled_from([WAN, LAN]),
    description=st.text(max_size=8),
    enabled=st.booleans(),
    remote_host=_hosts,
    expires_at=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    origin=st.sampled_from(Origin),
    owner=st.none() | st.just(CLIENT),
    target_name=st.none() | st.text(max_size=8),
    created_at=st.floats(allow_nan=False, allow_infinity=False),
)
_keys = st.builds(MappingKey, _protocols, _ports, _hosts)
_steps = st.lists(
    st.tuples(
        st.lists(_mappings, max_size=4).map(tuple),
        st.lists(_keys, max_size=4).map(tuple),
        st.sampled_from(["commit", "rollback", "reopen"]),
    ),
    max_size=12,
)


def _model_apply(
    model: dict[tuple[IPProtocol, int], Mapping],
    puts: tuple[Mapping, ...],
    deletes: tuple[MappingKey, ...],
) -> None:
    for key in deletes:
        held = model.get((key.protocol, key.external_port))
        if held is not None and held.remote_host == key.remote_host:
            del model[(key.protocol, key.external_port)]
    for put in puts:
        model[(put.protocol, put.external_port)] = put


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps)
def test_random_histories_match_a_dict_model(
    kind: str, steps: list[tuple[tuple[Mapping, ...], tuple[MappingKey, ...], str]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "state.db"

        def open_store() -> StateStore:
            return SqliteStore(path) if kind == "sqlite" else MemoryStore()

        store = open_store()
        model: dict[tuple[IPProtocol, int], Mapping] = {}
        for puts, deletes, ending in steps:
            store.stage(StoreChanges(put_mappings=puts, delete_mappings=deletes))
            if ending == "rollback":
                store.rollback()
            else:
                store.commit()
                _model_apply(model, puts, deletes)
            if ending == "reopen" and kind == "sqlite":
                store.close()
                store = open_store()
            assert store.load().mappings == tuple(model[slot] for slot in sorted(model))
        store.close()
