"""natcore benchmark: the pure MappingTable, then SharingManager on SQLite, at N mappings.

    python bench/natcore.py [--sizes 10000 100000] [--quick]

Prints figures, never fails. For each N:

- Pure `MappingTable`: put of N mappings, lookups (get by key, at_index at random positions,
  in_range over 100 ports), remove of all N, lease refresh and expiry, and memory per mapping
  (tracemalloc: bytes the table allocates to hold N mappings, then table + Mapping objects, / N).
  Timed figures are the best of several repeats, each on a fresh table after a warm-up.
- `SharingManager` on `SqliteStore(synchronous="NORMAL")` in a temporary directory with the
  `MemoryBackend`: the table is filled to N (256 concurrent adds), then up to M mappings (at most
  1.5 s' worth) are added and removed again by one client awaiting each change (sequential) and
  by 16 and 256 concurrent clients. Concurrent changes waiting at the same moment are committed
  as one transaction (group commit): the figures show the speed-up over sequential and the mean
  changes per commit. MemoryBackend.apply copies its whole dict per plan (O(N) per commit), so
  the same figures are repeated with `InPlaceBackend` (same checks, applied in place) to show
  the cost of the core and SQLite alone.

Targets, printed next to the figures: pure table > 100k ops/s at 100k mappings; < 1 KiB/mapping.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from igd.natcore import (
    ADMIN,
    BackendError,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingRequest,
    Origin,
    Plan,
    PolicyConfig,
    SharingConnectionType,
    SharingManager,
    SqliteStore,
    StaticConnectionSource,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.natcore.table import MappingTable

PORTS = 65536
MAX_TABLE = 2 * PORTS  # (TCP, UDP) x 65536 external ports
MAX_MANAGED = 2 * (PORTS - 1)  # the service refuses external port 0
TABLE_TARGET_OPS = 100_000.0
TABLE_TARGET_AT = 100_000
MEMORY_TARGET_BYTES = 1024.0
BASE_TIME = 1_800_000_000.0
WAN = make_connection("wan0", addresses=["198.19.0.1/24"])
LAN = make_connection("lan0", addresses=["198.18.0.1/24"])


@dataclass(frozen=True, slots=True)
class Settings:
    sizes: tuple[int, ...]
    repeats: int  # timed repeats of each pure-table figure (best one is kept)
    lookups: int  # lookups per figure
    managed_ops: int  # M: changes per SharingManager figure (capped by N and free slots)
    seed: int


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    name: str
    unit: str
    target: str = ""
    higher_is_better: bool = True
    threshold: float | None = None  # the target as a number, checked at its size
    threshold_size: int | None = None  # None: at every size


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.values: dict[tuple[Row, int], str] = {}
        self.numbers: dict[tuple[Row, int], float] = {}
        self.managed_ops: dict[int, int] = {}

    def row(self, row: Row) -> None:
        if row not in self.rows:
            self.rows.append(row)

    def put(self, row: Row, size: int, value: float, note: str = "") -> None:
        self.row(row)
        self.numbers[(row, size)] = value
        self.values[(row, size)] = _fmt(value) + (f" {note}" if note else "")


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


# -- inputs ---------------------------------------------------------------------------------------


def _slot_key(slot: int) -> tuple[IPProtocol, int]:
    return (IPProtocol.TCP if slot < PORTS else IPProtocol.UDP), slot % PORTS


def make_mappings(n: int, rng: random.Random, *, leased: bool, low_port: int = 0) -> list[Mapping]:
    """N mappings on distinct random (protocol, port) slots, as the store would load them.

    Each has its own address objects and description, as decoded rows have; half are UPnP
    mappings with an owner (indexed by the table), half administrator ones; with `leased`,
    every one has a distinct deadline.
    """
    slots = rng.sample([s for s in range(MAX_TABLE) if s % PORTS >= low_port], n)
    guid = WAN.guid
    mappings = []
    for i, slot in enumerate(slots):
        protocol, port = _slot_key(slot)
        client = IPv4Address(f"198.18.{(i >> 8) & 0xFF}.{(i & 0xFF) or 1}")
        upnp = i % 2 == 0
        mappings.append(
            Mapping(
                protocol=protocol,
                external_port=port,
                internal_client=client,
                internal_port=1024 + (i % 60000),
                connection=guid,
                description=f"bench mapping {i}",
                expires_at=BASE_TIME + 3600 + i if leased or i % 2 else None,
                origin=Origin.UPNP if upnp else Origin.ADMIN,
                owner=IPv4Address(int(client)) if upnp else None,
                created_at=BASE_TIME,
            )
        )
    return mappings


def filled(mappings: Iterable[Mapping]) -> MappingTable:
    table = MappingTable()
    for mapping in mappings:
        table.put(mapping)
    return table


# -- timing ---------------------------------------------------------------------------------------


def best_rate(
    ops: int, repeats: int, run: Callable[[], object], setup: Callable[[], None]
) -> float:
    """Operations per second of the fastest of `repeats` runs (setup untimed, GC off)."""
    best = float("inf")
    for _ in range(repeats):
        setup()
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        best = min(best, elapsed)
    return ops / best


# -- pure table -----------------------------------------------------------------------------------

T_ADD = Row("table", "add (put N)", "ops/s", "> 100k ops/s @100k", True, TABLE_TARGET_OPS, 100_000)
T_GET = Row("table", "get by key", "ops/s", "> 100k ops/s @100k", True, TABLE_TARGET_OPS, 100_000)
T_INDEX = Row(
    "table", "at_index, random", "ops/s", "> 100k ops/s @100k", True, TABLE_TARGET_OPS, 100_000
)
T_RANGE = Row("table", "in_range, 100 ports", "queries/s", "(mappings/s in brackets)")
T_REMOVE = Row(
    "table", "remove (all N)", "ops/s", "> 100k ops/s @100k", True, TABLE_TARGET_OPS, 100_000
)
T_REFRESH = Row(
    "table", "lease refresh (put)", "ops/s", "> 100k ops/s @100k", True, TABLE_TARGET_OPS, 100_000
)
T_EXPIRE_ALL = Row("table", "expire, all N due", "us/lease", "", False)
T_EXPIRE_TICK = Row("table", "expire, 1% due per tick", "us/lease", "", False)
T_EXPIRE_NONE = Row("table", "expire + next_deadline, none due", "us/call", "", False)
T_MEM_EMPTY = Row("table", "memory: empty table (fixed)", "KiB", "", False)
T_MEM_TABLE = Row("table", "memory: table structures", "B/mapping", "(fixed share incl.)", False)
T_MEM_TOTAL = Row(
    "table", "memory: table + Mapping objects", "B/mapping", "< 1 KiB", False, MEMORY_TARGET_BYTES
)
T_MEM_MARGINAL = Row("table", "  same, without the fixed part", "B/mapping", "", False)


def bench_table(n: int, settings: Settings, results: Results) -> None:
    rng = random.Random(settings.seed + n)
    mappings = make_mappings(n, rng, leased=False)
    keys = [m.key for m in mappings]
    repeats = settings.repeats
    state: dict[str, MappingTable] = {}

    def fresh() -> None:
        state["table"] = MappingTable()

    def prefilled() -> None:
        state["table"] = filled(mappings)

    def add_all() -> None:
        put = state["table"].put
        for mapping in mappings:
            put(mapping)

    results.put(T_ADD, n, best_rate(n, repeats, add_all, fresh))

    table = filled(mappings)
    lookups = settings.lookups
    probe_keys = [rng.choice(keys) for _ in range(lookups)]
    positions = [rng.randrange(n) for _ in range(lookups)]
    range_queries = max(1, lookups // 20)
    starts = [(rng.choice(_PROTOCOLS), rng.randrange(PORTS - 100)) for _ in range(range_queries)]

    def get_all() -> None:
        get = table.get
        for key in probe_keys:
            get(key)

    def index_all() -> None:
        at_index = table.at_index
        for position in positions:
            at_index(position)

    found = 0

    def ranges() -> None:
        nonlocal found
        found = 0
        in_range = table.in_range
        for protocol, start in starts:
            for _ in in_range(start, start + 99, protocol):
                found += 1

    results.put(T_GET, n, best_rate(lookups, repeats, get_all, lambda: None))
    results.put(T_INDEX, n, best_rate(lookups, repeats, index_all, lambda: None))
    rate = best_rate(range_queries, repeats, ranges, lambda: None)
    results.put(T_RANGE, n, rate, f"({_fmt(rate * found / range_queries)})")

    def remove_all() -> None:
        remove = state["table"].remove
        for key in keys:
            remove(key)

    results.put(T_REMOVE, n, best_rate(n, repeats, remove_all, prefilled))

    # Leases: every mapping leased, distinct deadlines.
    leased = make_mappings(n, rng, leased=True)
    refreshed = [dataclasses.replace(m, expires_at=(m.expires_at or 0.0) + 60) for m in leased]

    def prefilled_leased() -> None:
        state["table"] = filled(leased)

    def refresh_all() -> None:
        put = state["table"].put
        for mapping in refreshed:
            put(mapping)

    results.put(T_REFRESH, n, best_rate(n, repeats, refresh_all, prefilled_leased))

    last = max(m.expires_at or 0.0 for m in leased)

    def expire_all() -> None:
        expired = state["table"].expire(last)
        assert len(expired) == n

    results.put(T_EXPIRE_ALL, n, 1e6 / best_rate(n, repeats, expire_all, prefilled_leased))

    ticks = 100
    step = (last - BASE_TIME) / ticks

    def expire_ticks() -> None:
        table = state["table"]
        for tick in range(1, ticks + 1):
            table.expire(BASE_TIME + tick * step)
            table.next_deadline()
        assert not len(table)

    results.put(T_EXPIRE_TICK, n, 1e6 / best_rate(n, repeats, expire_ticks, prefilled_leased))

    calls = lookups

    def expire_none() -> None:
        table = state["table"]
        for _ in range(calls):
            table.expire(BASE_TIME)
            table.next_deadline()

    results.put(T_EXPIRE_NONE, n, 1e6 / best_rate(calls, repeats, expire_none, prefilled_leased))

    empty_bytes, table_bytes, total_bytes = memory_per_mapping(n, settings.seed)
    results.put(T_MEM_EMPTY, n, empty_bytes / 1024)
    results.put(T_MEM_TABLE, n, table_bytes)
    results.put(T_MEM_TOTAL, n, total_bytes)
    results.put(T_MEM_MARGINAL, n, total_bytes - empty_bytes / n)


_PROTOCOLS = (IPProtocol.TCP, IPProtocol.UDP)


def memory_per_mapping(n: int, seed: int) -> tuple[float, float, float]:
    """Bytes, via tracemalloc: (empty table, table structures / N, table + Mappings / N)."""
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        empty = MappingTable()
        empty_bytes = tracemalloc.get_traced_memory()[0] - start
        del empty
        rng = random.Random(seed)
        gc.collect()
        before_inputs = tracemalloc.get_traced_memory()[0]
        mappings = make_mappings(n, rng, leased=False)
        gc.collect()
        after_inputs = tracemalloc.get_traced_memory()[0]
        table = filled(mappings)
        gc.collect()
        after_table = tracemalloc.get_traced_memory()[0]
        # The list holding the inputs is scaffolding, not part of the table's state.
        scaffolding = sys.getsizeof(mappings)
        del table
    finally:
        tracemalloc.stop()
    table_only = (after_table - after_inputs) / n
    mapping_objects = (after_inputs - before_inputs - scaffolding) / n
    return float(empty_bytes), table_only, table_only + mapping_objects


# -- SharingManager -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagerRows:
    fill: Row
    add: tuple[Row, Row, Row]  # sequential, 16 and 256 concurrent clients
    remove: tuple[Row, Row, Row]


def manager_rows(section: str) -> ManagerRows:
    note = "(x seq; changes/commit)"
    return ManagerRows(
        fill=Row(section, "fill to N, 256 concurrent", "adds/s"),
        add=(
            Row(section, "add, sequential await", "ops/s", note),
            Row(section, "add, 16 concurrent", "ops/s", note),
            Row(section, "add, 256 concurrent", "ops/s", note),
        ),
        remove=(
            Row(section, "remove, sequential await", "ops/s", note),
            Row(section, "remove, 16 concurrent", "ops/s", note),
            Row(section, "remove, 256 concurrent", "ops/s", note),
        ),
    )


CLIENTS = (1, 16, 256)
FIGURE_BUDGET_S = 1.5
M_MEMORY = manager_rows("manager")
M_INPLACE = manager_rows("inplace")
M_GET = Row("manager", "mapping(key)", "ops/s")
M_INDEX = Row("manager", "mapping_at, random", "ops/s")
M_RANGE = Row("manager", "mappings_in_range, 100 ports", "queries/s")
SECTIONS = {
    "table": "Pure MappingTable",
    "manager": "SharingManager + SqliteStore(synchronous=NORMAL) + MemoryBackend",
    "inplace": "Same, with InPlaceBackend (MemoryBackend applying in place: core + SQLite only)",
}


class InPlaceBackend(MemoryBackend):
    """MemoryBackend's checks, but applied in place: O(plan) per apply, not O(mappings).

    MemoryBackend.apply copies its whole dict to stay atomic, which costs O(N) per commit and
    dominates at 100k mappings; this one validates the plan first, then mutates.
    """

    name = "in-place"

    async def apply(self, plan: Plan) -> None:
        if not self.started:
            raise BackendError("backend is not started")
        applied = self.mappings
        removed = {m.key for m in plan.remove}
        if len(removed) != len(plan.remove) or not removed <= applied.keys():
            raise BackendError("remove of a mapping that is not applied")
        added = {m.key for m in plan.add}
        if len(added) != len(plan.add) or any(k in applied and k not in removed for k in added):
            raise BackendError("add of a mapping that is already applied")
        for key in removed:
            del applied[key]
        for mapping in plan.add:
            applied[mapping.key] = mapping
        if plan.connections is not None:
            self.connections = plan.connections
        self.applied_plans += 1


ROWS = (
    T_ADD,
    T_GET,
    T_INDEX,
    T_RANGE,
    T_REMOVE,
    T_REFRESH,
    T_EXPIRE_ALL,
    T_EXPIRE_TICK,
    T_EXPIRE_NONE,
    T_MEM_EMPTY,
    T_MEM_TABLE,
    T_MEM_TOTAL,
    T_MEM_MARGINAL,
    M_MEMORY.fill,
    *M_MEMORY.add,
    *M_MEMORY.remove,
    M_GET,
    M_INDEX,
    M_RANGE,
    M_INPLACE.fill,
    *M_INPLACE.add,
    *M_INPLACE.remove,
)


def _request(mapping: Mapping) -> MappingRequest:
    return MappingRequest(
        protocol=mapping.protocol,
        external_port=mapping.external_port,
        internal_client=mapping.internal_client,
        internal_port=mapping.internal_port,
        description=mapping.description,
        lease=None if mapping.expires_at is None else 3600.0,
    )


async def run_clients(
    clients: int,
    items: Sequence[MappingRequest | MappingKey],
    change: Callable[..., Awaitable[object]],
    budget_s: float | None = None,
) -> tuple[int, float]:
    """(changes done, seconds) for `clients` concurrent clients each awaiting one change at a time.

    With `budget_s`, clients stop taking new items once that much time has passed.
    """
    queue = iter(items)
    done = 0
    start = time.perf_counter()
    deadline = float("inf") if budget_s is None else start + budget_s

    async def client() -> None:
        nonlocal done
        for item in queue:
            await change(item)
            done += 1
            if time.perf_counter() >= deadline:
                return

    await asyncio.gather(*(client() for _ in range(clients)))
    return done, time.perf_counter() - start


async def bench_manager(
    n: int,
    settings: Settings,
    results: Results,
    directory: Path,
    backend: MemoryBackend,
    rows: ManagerRows,
    with_lookups: bool,
) -> None:
    rng = random.Random(settings.seed + 7 * n)
    m = max(1, min(settings.managed_ops, n, MAX_MANAGED - n))
    results.managed_ops[n] = m
    universe = make_mappings(n + m, rng, leased=False, low_port=1)
    base = [_request(x) for x in universe[:n]]
    extra = [_request(x) for x in universe[n:]]
    extra_keys = [MappingKey(r.protocol, r.external_port) for r in extra]
    lan_hosts = [IPv4Address("198.18.0.2") + (i % 250) for i in range(n + m)]
    # Targets must be on the private segment (198.18.0.0/24): remap the generated clients.
    base = [_retarget(r, lan_hosts[i]) for i, r in enumerate(base)]
    extra = [_retarget(r, lan_hosts[n + i]) for i, r in enumerate(extra)]

    store = SqliteStore(directory / f"bench-{n}-{uuid.uuid4().hex}.db", synchronous="NORMAL")
    core = await SharingManager.open(
        backend=backend,
        store=store,
        source=StaticConnectionSource([WAN, LAN]),
        policy=PolicyConfig(max_mappings=MAX_TABLE),
    )
    try:
        await core.enable_sharing(WAN.guid, SharingConnectionType.PUBLIC)
        await core.enable_sharing(LAN.guid, SharingConnectionType.PRIVATE)

        async def add(request: MappingRequest | MappingKey) -> object:
            assert isinstance(request, MappingRequest)
            return await core.add_mapping(request, ADMIN)

        async def remove(key: MappingRequest | MappingKey) -> object:
            assert isinstance(key, MappingKey)
            return await core.remove_mapping(key, ADMIN)

        # Warm-up: a few changes of each kind on the extra slots, undone again.
        warm = min(64, m)
        await run_clients(4, extra[:warm], add)
        await run_clients(4, extra_keys[:warm], remove)

        _, elapsed = await run_clients(256, base, add)
        results.put(rows.fill, n, n / elapsed)
        assert core.mapping_count == n

        # Each figure: add up to M of the extra mappings (at most for FIGURE_BUDGET_S), then
        # remove those again (timed likewise; the rest untimed), so every figure runs on a table
        # of N. Best of `repeats` rounds. Clients take items in order, so the first `done` are
        # exactly the ones done.
        seq_rates: dict[str, float] = {}
        for index, clients in enumerate(CLIENTS):
            best: dict[str, tuple[float, int, int]] = {}  # kind -> (rate, changes, commits)
            for _ in range(settings.repeats):
                gc.collect()
                plans = backend.applied_plans
                added, elapsed = await run_clients(clients, extra, add, FIGURE_BUDGET_S)
                commits = backend.applied_plans - plans
                rounds = [("add", added / elapsed, added, commits)]
                plans = backend.applied_plans
                added_keys = extra_keys[:added]
                removed, elapsed = await run_clients(clients, added_keys, remove, FIGURE_BUDGET_S)
                commits = backend.applied_plans - plans
                rounds.append(("remove", removed / elapsed, removed, commits))
                await run_clients(256, added_keys[removed:], remove)  # untimed: back to N
                assert core.mapping_count == n
                for kind, rate, changes, commits in rounds:
                    if rate > best.get(kind, (0.0, 0, 0))[0]:
                        best[kind] = (rate, changes, commits)
            for kind, row in (("add", rows.add[index]), ("remove", rows.remove[index])):
                rate, changes, commits = best[kind]
                ratio = rate / seq_rates.setdefault(kind, rate)
                results.put(row, n, rate, f"(x{ratio:.1f}; {changes / max(commits, 1):.1f})")
        if not with_lookups:
            return

        keys = [MappingKey(r.protocol, r.external_port) for r in base]
        lookups = settings.lookups
        probe = [rng.choice(keys) for _ in range(lookups)]
        positions = [rng.randrange(n) for _ in range(lookups)]
        starts = [
            (rng.choice(_PROTOCOLS), rng.randrange(1, PORTS - 100)) for _ in range(lookups // 20)
        ]

        def get_all() -> None:
            for key in probe:
                core.mapping(key)

        def index_all() -> None:
            for position in positions:
                core.mapping_at(position)

        def ranges() -> None:
            for protocol, start in starts:
                for _ in core.mappings_in_range(start, start + 99, protocol):
                    pass

        results.put(M_GET, n, best_rate(lookups, settings.repeats, get_all, lambda: None))
        results.put(M_INDEX, n, best_rate(lookups, settings.repeats, index_all, lambda: None))
        results.put(M_RANGE, n, best_rate(len(starts), settings.repeats, ranges, lambda: None))
    finally:
        await core.aclose()


def _retarget(request: MappingRequest, client: IPv4Address) -> MappingRequest:
    return dataclasses.replace(request, internal_client=client)


# -- report ---------------------------------------------------------------------------------------


def machine_info() -> list[str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        f"Python {platform.python_implementation()} {sys.version.split()[0]} "
        f"({platform.python_build()[1]}), SQLite {sqlite3.sqlite_version}",
        f"{platform.system()} {platform.release()} {platform.machine()}; {cpu}; "
        f"{os.cpu_count()} CPUs ({affinity} usable)"
        + (f"; load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""),
    ]


def verdict(row: Row, size: int, value: float) -> str:
    if row.threshold is None or (row.threshold_size is not None and row.threshold_size != size):
        return ""
    ok = value > row.threshold if row.higher_is_better else value < row.threshold
    return "ok" if ok else "MISS"


def render(results: Results, sizes: Sequence[int]) -> str:
    name_width = max(len(r.name) for r in results.rows) + 2
    unit_width = max(len(r.unit) for r in results.rows) + 2
    cells: dict[tuple[Row, int], str] = {}
    for row in results.rows:
        for size in sizes:
            key = (row, size)
            if key in results.values:
                mark = verdict(row, size, results.numbers[key])
                cells[key] = results.values[key] + (f"  {mark}" if mark else "")
    col = max([len(c) for c in cells.values()] + [12]) + 2
    header = f"{'':{name_width + 2}}{'':{unit_width}}" + "".join(
        f"{f'N={size:,}':>{col}}" for size in sizes
    )
    lines = [header + "   target"]
    current = ""
    for row in results.rows:
        if row.section != current:
            current = row.section
            title = SECTIONS[current]
            if current == "manager":
                ops = " / ".join(f"{results.managed_ops.get(s, 0):,}" for s in sizes)
                title += (
                    f"\n  each figure: up to M = {ops} changes (per N) or {FIGURE_BUDGET_S} s, "
                    "on a table of N; best of the repeats"
                )
            lines.append(title)
        values = "".join(f"{cells.get((row, size), '-'):>{col}}" for size in sizes)
        lines.append(f"  {row.name:{name_width}}{row.unit:{unit_width}}{values}   {row.target}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        help="table sizes N (default 10000 100000; quick: 1000 10000)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer repeats")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes or ((1000, 10000) if args.quick else (10000, 100000)))
    for size in sizes:
        if not 1 <= size <= MAX_MANAGED:
            parser.error(f"each size must be in 1..{MAX_MANAGED} (TCP and UDP ports 1-65535)")
    if args.quick:
        return Settings(sizes, repeats=2, lookups=20_000, managed_ops=1_000, seed=args.seed)
    return Settings(sizes, repeats=3, lookups=200_000, managed_ops=5_000, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    for line in machine_info():
        print(line)
    print(f"sizes {', '.join(f'{s:,}' for s in settings.sizes)}; best of {settings.repeats}")
    started = time.perf_counter()
    results = Results()
    for row in ROWS:
        results.row(row)
    bench_table(min(1000, settings.sizes[0]), settings, Results())  # warm-up
    for size in settings.sizes:
        bench_table(size, settings, results)
        print(f"  table N={size:,} done at {time.perf_counter() - started:.1f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="igd-bench-") as directory:
        for size in settings.sizes:
            for backend, rows, lookups in (
                (MemoryBackend(), M_MEMORY, True),
                (InPlaceBackend(), M_INPLACE, False),
            ):
                run = bench_manager(
                    size, settings, results, Path(directory), backend, rows, lookups
                )
                asyncio.run(run)
                print(
                    f"  manager N={size:,} ({backend.name}) done at "
                    f"{time.perf_counter() - started:.1f} s",
                    flush=True,
                )
    print()
    print(render(results, settings.sizes))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
