"""Durability of acknowledged changes across SIGKILL (SqliteStore, WAL, synchronous=NORMAL).

Issue requirement: a child process adds mappings and is sent SIGKILL at a random point; after
restart exactly the acknowledged mappings are there.

The child is `durability_child.py` (its docstring describes the line protocol). It announces every
change with a `BEGIN ...` line before submitting it and acknowledges it with `ADD ...`/`DEL ...`
once the awaited call has returned, i.e. after the core committed it. Each line is one write(2)
on a pipe, so everything the child printed before it died reaches the test whole.

The bound on what may differ from the acknowledged state: the child runs one *step* at a time,
a step being one awaited change or an `asyncio.gather` burst of at most MAX_BURST changes on
distinct (protocol, port) slots, and starts the next step only once every change of the burst
is acknowledged. So when SIGKILL lands, the changes announced but not acknowledged are the
unfinished part of a single step: at most MAX_BURST changes, each on its own slot. Each of them
may be committed or not (killed before the commit, or after the commit but before its line was
written), so its slot may hold either its state before or after that change, and nothing else.
Every other slot must hold exactly the acknowledged state. The same holds for the persisted
SystemUpdateID (one per committed mapping change here): acknowledged <= stored <= acknowledged +
in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from support import lab_connections

from igd.natcore import (
    ADMIN,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingRequest,
    Origin,
    SharingConnectionType,
    SharingManager,
    SqliteStore,
    StaticConnectionSource,
    StoreError,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.natcore.store import StoredState

CHILD = Path(__file__).with_name("durability_child.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_BURST = 16
# Acknowledgements before the kill are drawn from 1..KILL_RANGE (the child makes several
# thousand a second), then the kill waits up to KILL_JITTER_S more, to land mid-commit.
KILL_RANGE = 6000
KILL_JITTER_S = 0.003
CHILD_DURATION_S = 20.0
# The startup test kills within this long after the spawn (interpreter start, schema, sharing).
STARTUP_WINDOW_S = 0.2
READ_TIMEOUT_S = 15.0
# IGD_DURABILITY_SEEDS="1 2 3" reruns given seeds (the seed is in every failure message).
SEEDS = [int(s) for s in os.environ.get("IGD_DURABILITY_SEEDS", "11 23 37 41 59").split()]
WAN_GUID = make_connection("wan0").guid

PUBLIC, PRIVATE = SharingConnectionType.PUBLIC, SharingConnectionType.PRIVATE

Slot = tuple[int, int]  # (protocol number, external port)


@dataclass(frozen=True, slots=True)
class Change:
    """One change as the child reported it; `client`/`iport`/`lease` are for adds only."""

    kind: str  # "ADD" or "DEL"
    slot: Slot
    client: IPv4Address | None = None
    iport: int | None = None
    lease: float | None = None

    @classmethod
    def parse(cls, words: list[str]) -> Change:
        kind, slot = words[0], (int(words[1]), int(words[2]))
        if kind == "DEL":
            assert len(words) == 3, words
            return cls(kind, slot)
        assert kind == "ADD", words
        assert len(words) == 6, words
        lease = None if words[5] == "-" else float(words[5])
        return cls(kind, slot, IPv4Address(words[3]), int(words[4]), lease)


@dataclass
class ChildRun:
    """What the child printed, replayed: the acknowledged state and the changes in flight."""

    lines: list[str]
    returncode: int | None
    started_at: float  # wall clock, before the child was started
    ended_at: float  # wall clock, after it died
    stderr: str
    acknowledged: dict[Slot, Change] = field(default_factory=dict)  # slot -> last acked ADD
    deleted: set[Slot] = field(default_factory=set)  # slots whose last acked change is a DEL
    in_flight: dict[Slot, Change] = field(default_factory=dict)
    acks: int = 0
    markers: list[str] = field(default_factory=list)

    def replay(self) -> None:
        for line in self.lines:
            words = line.split()
            if not words:
                continue
            if words[0] == "BEGIN":
                change = Change.parse(words[1:])
                assert change.slot not in self.in_flight, f"two changes in flight on {line!r}"
                self.in_flight[change.slot] = change
            elif words[0] in ("ADD", "DEL"):
                change = Change.parse(words)
                assert self.in_flight.pop(change.slot, None) == change, f"unannounced: {line!r}"
                self.acks += 1
                if change.kind == "ADD":
                    self.acknowledged[change.slot] = change
                    self.deleted.discard(change.slot)
                else:
                    self.acknowledged.pop(change.slot, None)
                    self.deleted.add(change.slot)
            else:
                self.markers.append(line)


async def run_child(
    tmp_path: Path,
    db: Path,
    args: list[str],
    kill_when: Callable[[str, int], bool],
    jitter_s: float = 0.0,
    context: str = "",
    kill_at_s: float | None = None,
) -> ChildRun:
    """Run the child until `kill_when(line, acks so far)`, SIGKILL it, read the rest of its output.

    With `kill_at_s`, the kill comes that many seconds after the start at the latest. Only whole
    lines count: a line without its newline (the child died inside that write) is dropped, which
    leaves its change announced and unacknowledged.
    """
    started_at = time.time()
    stderr_path = tmp_path / "child.stderr"
    lines: list[str] = []
    # The child imports `igd` from this checkout even when it is not installed.
    pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            str(db),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    assert proc.stdout is not None
    try:
        acks = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READ_TIMEOUT_S
        kill_at = deadline if kill_at_s is None else loop.time() + kill_at_s
        async with asyncio.timeout_at(deadline):
            while loop.time() < kill_at:
                try:
                    async with asyncio.timeout_at(kill_at):
                        raw = await proc.stdout.readline()
                except TimeoutError:
                    if kill_at_s is None:
                        raise
                    break  # kill time
                if not raw.endswith(b"\n"):
                    break  # EOF before the kill point: the child ended on its own
                line = raw.decode().rstrip("\n")
                lines.append(line)
                if line.startswith(("ADD ", "DEL ")):
                    acks += 1
                if line.startswith(("ERROR", "DONE")) or kill_when(line, acks):
                    break
        if jitter_s:
            await asyncio.sleep(jitter_s)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(READ_TIMEOUT_S):
            rest = await proc.stdout.read()
            await proc.wait()
    except TimeoutError:
        pytest.fail(
            f"{context}: no progress from the child within {READ_TIMEOUT_S} s "
            f"({len(lines)} lines read)\n{stderr_path.read_text()}"
        )
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    *whole, _partial = rest.decode().split("\n")
    lines.extend(whole)
    (tmp_path / "child.stdout").write_text("\n".join(lines) + "\n")
    run = ChildRun(lines, proc.returncode, started_at, time.time(), stderr_path.read_text())
    run.replay()
    errors = [m for m in run.markers if m.startswith("ERROR")]
    assert not errors, f"{context}: child failed: {errors}\n{run.stderr}"
    return run


def describe(mapping: Mapping | None) -> str:
    if mapping is None:
        return "absent"
    return (
        f"{mapping.internal_client}:{mapping.internal_port} expires_at={mapping.expires_at} "
        f"created_at={mapping.created_at}"
    )


def matches(mapping: Mapping | None, change: Change | None, run: ChildRun) -> bool:
    """Whether the stored row is what `change` (an ADD, or None for absent) leaves behind."""
    if change is None or mapping is None:
        return change is None and mapping is None
    if (
        mapping.internal_client != change.client
        or mapping.internal_port != change.iport
        or mapping.description != f"durability {change.slot[1]}"
        or mapping.connection != WAN_GUID
        or mapping.origin is not Origin.ADMIN
        or mapping.remote_host is not None
        or not mapping.enabled
    ):
        return False
    if change.lease is None:
        return mapping.expires_at is None
    if mapping.expires_at is None:
        return False
    granted_at = mapping.expires_at - change.lease  # the child's clock when the change ran
    return run.started_at - 1 <= granted_at <= run.ended_at + 1


def check_against_acknowledged(state: StoredState, run: ChildRun, context: str) -> None:
    stored = {(int(m.protocol), m.external_port): m for m in state.mappings}
    assert len(run.in_flight) <= MAX_BURST, f"{context}: {len(run.in_flight)} changes in flight"
    for slot, change in run.acknowledged.items():
        if slot not in run.in_flight:
            assert matches(stored.get(slot), change, run), (
                f"{context}: acknowledged ADD {slot} lost or wrong in the store: "
                f"{describe(stored.get(slot))}, acknowledged {change}"
            )
    for slot in run.deleted:
        if slot not in run.in_flight:
            assert slot not in stored, (
                f"{context}: acknowledged DEL {slot} is back: {describe(stored[slot])}"
            )
    differences = []
    for slot in sorted(set(stored) | set(run.acknowledged) | set(run.in_flight)):
        acked = run.acknowledged.get(slot)
        if matches(stored.get(slot), acked, run):
            continue
        differences.append(slot)
        pending = run.in_flight.get(slot)
        assert pending is not None, (
            f"{context}: {slot} differs from the acknowledged state and no change was in flight "
            f"there: stored {describe(stored.get(slot))}, acknowledged {acked}"
        )
        after = pending if pending.kind == "ADD" else None
        assert matches(stored.get(slot), after, run), (
            f"{context}: in-flight {pending} left {slot} in neither its before nor after state: "
            f"{describe(stored.get(slot))}"
        )
    assert len(differences) <= len(run.in_flight) <= MAX_BURST
    update_id = state.counters.get("system_update_id", 0)
    assert run.acks <= update_id <= run.acks + len(run.in_flight), (
        f"{context}: system_update_id {update_id} for {run.acks} acknowledged changes "
        f"and {len(run.in_flight)} in flight"
    )


async def open_core(db: Path, backend: MemoryBackend) -> SharingManager:
    return await SharingManager.open(
        backend=backend,
        store=SqliteStore(db),
        source=StaticConnectionSource(lab_connections()),
    )


@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkill_keeps_exactly_the_acknowledged_mappings(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    kill_after = rng.randint(1, KILL_RANGE)
    jitter = rng.uniform(0, KILL_JITTER_S)
    context = f"seed={seed} (IGD_DURABILITY_SEEDS={seed}) kill_after={kill_after} acks"
    db = tmp_path / "state" / "igd.db"
    args = ["--mode", "churn", "--seed", str(seed), "--max-burst", str(MAX_BURST)]
    args += ["--duration", str(CHILD_DURATION_S)]

    def kill_when(_line: str, acks: int) -> bool:
        return acks >= kill_after

    run = await run_child(tmp_path, db, args, kill_when, jitter, context)

    context += f", {run.acks} acknowledged, {len(run.in_flight)} in flight"
    assert run.returncode == -signal.SIGKILL, (
        f"{context}: child was not killed: {run.returncode} {run.markers}\n{run.stderr}"
    )
    assert run.acks >= kill_after, context

    store = SqliteStore(db)
    try:
        state = store.load()
    finally:
        store.close()
    check_against_acknowledged(state, run, context)

    backend = MemoryBackend()
    core = await open_core(db, backend)
    try:
        assert core.mapping_count == len(state.mappings), context
        assert list(core.mappings()) == list(state.mappings), context
        assert core.system_update_id == state.counters["system_update_id"], context
        # Every mapping is enabled and on the public wan0: all of them are active.
        assert backend.started
        assert backend.mappings == {m.key: m for m in core.mappings() if core.is_active(m)}
        assert backend.mappings == {m.key: m for m in state.mappings}, context
        # The recovered database takes writes again.
        free = next(p for p in range(1024, 65536) if core.table.at_port(IPProtocol.TCP, p) is None)
        request = MappingRequest(IPProtocol.TCP, free, IPv4Address("198.18.0.10"), 80)
        await core.add_mapping(request, ADMIN)
        assert core.mapping(MappingKey(IPProtocol.TCP, free)).internal_port == 80
        assert backend.mappings[MappingKey(IPProtocol.TCP, free)].internal_port == 80
    finally:
        await core.aclose()
    store = SqliteStore(db)
    try:
        assert len(store.load().mappings) == len(state.mappings) + 1, context
    finally:
        store.close()


@pytest.mark.parametrize("seed", SEEDS)
async def test_sigkill_during_startup_leaves_a_database_that_opens(
    tmp_path: Path, seed: int
) -> None:
    """Killed while creating the schema, sharing wan0/lan0 or making its first changes."""
    kill_at = random.Random(seed).uniform(0.0, STARTUP_WINDOW_S)
    context = f"seed={seed} (IGD_DURABILITY_SEEDS={seed}) kill_at={kill_at:.3f} s"
    db = tmp_path / "igd.db"
    args = ["--mode", "churn", "--seed", str(seed), "--max-burst", str(MAX_BURST)]

    run = await run_child(tmp_path, db, args, lambda _l, _a: False, 0.0, context, kill_at)

    context += f", {run.acks} acknowledged, markers {run.markers}"
    assert run.returncode == -signal.SIGKILL, f"{context}: {run.returncode}\n{run.stderr}"
    store = SqliteStore(db)  # creates the database when the child died before it did
    try:
        state = store.load()
    finally:
        store.close()
    check_against_acknowledged(state, run, context)
    backend = MemoryBackend()
    core = await open_core(db, backend)
    try:
        assert core.mapping_count == len(state.mappings), context
        assert backend.mappings == {m.key: m for m in core.mappings() if core.is_active(m)}
        if "READY" in run.markers:
            assert core.public_connection() is not None, context
            assert backend.mappings == {m.key: m for m in state.mappings}, context
    finally:
        await core.aclose()


async def test_leases_that_ended_while_down_are_gone_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "igd.db"
    args = ["--mode", "leases", "--max-burst", str(MAX_BURST), "--duration", "30"]

    run = await run_child(tmp_path, db, args, lambda line, _acks: line == "IDLE", context="leases")

    assert run.returncode == -signal.SIGKILL, f"{run.returncode} {run.markers}\n{run.stderr}"
    assert not run.in_flight
    permanent = {s for s, c in run.acknowledged.items() if c.lease is None}
    long_lease = {s for s, c in run.acknowledged.items() if c.lease == 3600.0}
    short_lease = {s for s, c in run.acknowledged.items() if c.lease == 1.0}
    assert (len(permanent), len(long_lease), len(short_lease)) == (10, 10, MAX_BURST)

    store = SqliteStore(db)
    try:
        before = store.load()  # load() prunes nothing
    finally:
        store.close()
    stored = {(int(m.protocol), m.external_port): m for m in before.mappings}
    # The child died before its own lease timer could expire them: the restart must do it.
    assert set(stored) == permanent | long_lease | short_lease, (
        "the child expired its 1 s leases itself before the kill; the test proves nothing"
    )
    for slot, change in run.acknowledged.items():
        assert matches(stored[slot], change, run), slot
    last_deadline = max(stored[s].expires_at or 0.0 for s in short_lease)
    await asyncio.sleep(max(0.0, last_deadline - time.time()) + 0.1)
    assert time.time() > last_deadline

    backend = MemoryBackend()
    core = await open_core(db, backend)
    try:
        kept = {(int(m.protocol), m.external_port) for m in core.mappings()}
        assert kept == permanent | long_lease
        assert core.mapping_count == len(permanent) + len(long_lease)
        assert backend.mappings == {m.key: m for m in core.mappings()}
        assert all(core.mapping(stored[s].key) == stored[s] for s in kept)
    finally:
        await core.aclose()

    store = SqliteStore(db)
    try:
        after = store.load()
    finally:
        store.close()
    # The expired leases were pruned durably; the others are untouched.
    survivors = [
        m for m in before.mappings if (int(m.protocol), m.external_port) not in short_lease
    ]
    assert list(after.mappings) == survivors


# -- a commit that fails after the backend applied the plan ----------------------------------------


class CommitFailingStore(SqliteStore):
    """SqliteStore whose next `fail_commits` commits fail as a full disk would (SQLITE_FULL).

    In WAL mode SQLite writes the transaction's pages to the WAL at COMMIT, so ENOSPC or EIO
    surface there, after `stage` succeeded; SqliteStore.commit then rolls back and raises.
    """

    fail_commits = 0

    def commit(self) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            self.rollback()
            raise StoreError("database or disk is full (injected)")
        super().commit()


@pytest.mark.parametrize("change", ["add", "remove"])
async def test_failed_commit_leaves_backend_equal_to_the_model(tmp_path: Path, change: str) -> None:
    """S9: a store failure rolls the model and the store back, so store and backend never disagree.

    Today the backend keeps the failed change: after a failed add it forwards a port that no
    listing shows and nobody can remove, and every later add of that port fails with
    BackendError; after a failed remove (or lease expiry) the mapping stays listed and stored but
    no longer forwards, and every later remove (or the lease timer, each second) fails.
    """
    store = CommitFailingStore(tmp_path / "igd.db")
    backend = MemoryBackend()
    core = await SharingManager.open(
        backend=backend, store=store, source=StaticConnectionSource(lab_connections())
    )
    try:
        await core.enable_sharing(core.find_connection(name="wan0").guid, PUBLIC)
        await core.enable_sharing(core.find_connection(name="lan0").guid, PRIVATE)
        request = MappingRequest(IPProtocol.TCP, 5000, IPv4Address("198.18.0.10"), 80)
        key = MappingKey(IPProtocol.TCP, 5000)

        async def attempt() -> None:
            if change == "add":
                await core.add_mapping(request, ADMIN)
            else:
                await core.remove_mapping(key, ADMIN)

        if change == "remove":
            await core.add_mapping(request, ADMIN)
        store.fail_commits = 1
        with pytest.raises(StoreError):
            await attempt()
        active = {m.key: m for m in core.mappings() if core.is_active(m)}
        assert backend.mappings == active, "backend and model disagree after a failed commit"
        await attempt()  # the same change, now that the disk has room again
        assert (key in backend.mappings) == (change == "add")
    finally:
        await core.aclose()
