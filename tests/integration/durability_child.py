"""Child process of test_durability.py: changes mappings on an SQLite store until it is killed.

Run as `python durability_child.py DB --mode churn|leases --seed S --max-burst B --duration D`.
It opens a SharingManager on SqliteStore(DB) + MemoryBackend + a static wan0/lan0 source (the
addresses of tests/support.py's lab, built inline so the child needs nothing but `igd`), shares
wan0 publicly and lan0 privately, then changes mappings and reports on stdout, one line per
write(2) (atomic on a pipe, so a kill never leaves half a line from a finished write):

    READY                                       sharing is set up, changes follow
    BEGIN ADD <proto> <port> <client> <iport> <lease>   about to submit (lease "-" = permanent)
    BEGIN DEL <proto> <port>                    about to submit a removal
    ADD <proto> <port> <client> <iport> <lease> the awaited add_mapping returned (acknowledged)
    DEL <proto> <port>                          the awaited remove_mapping returned
    IDLE                                        (leases mode) every change is done; waiting
    DONE                                        the duration ran out; closed cleanly
    ERROR <text>                                a change failed; exit status 1

Every change is announced by BEGIN before it is submitted, and acknowledged after its await
returns. The child never has more than one step outstanding: a step is either one awaited change
or an `asyncio.gather` burst of at most `--max-burst` changes on distinct (protocol, port)
slots, and the next step starts only when the whole burst is acknowledged. So at any moment at
most `--max-burst` changes are announced but unacknowledged.

Modes:
  churn   random steps (sequential changes and bursts of 2..max-burst; adds of free slots,
          refreshes of held ones, removes of earlier ones); leases are long (never expire here).
  leases  permanent mappings, mappings with a 3600 s lease, then a burst of mappings with a
          1 s lease; then IDLE until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import traceback
from collections.abc import Awaitable
from dataclasses import dataclass
from ipaddress import IPv4Address

from igd.natcore import (
    ADMIN,
    IPProtocol,
    MappingKey,
    MappingRequest,
    SharingConnectionType,
    SharingManager,
    SqliteStore,
    StaticConnectionSource,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend

# Long enough that no lease of the churn mode expires while the test runs.
LONG_LEASES = (600.0, 3600.0, 86400.0)
SHORT_LEASE = 1.0
# The table holds at most 16384 mappings (PolicyConfig.max_mappings); stay well below.
SOFT_LIMIT = 1500
PORTS = range(1024, 65536)
LAN_HOSTS = 253  # 198.18.0.2 .. 198.18.0.254


@dataclass(frozen=True, slots=True)
class Held:
    client: IPv4Address
    internal_port: int
    lease: float | None


def emit(line: str) -> None:
    """One line, one write(2): unbuffered, and atomic on a pipe (< PIPE_BUF)."""
    data = (line + "\n").encode()
    while data:
        written = os.write(1, data)
        data = data[written:]


def lease_text(lease: float | None) -> str:
    return "-" if lease is None else repr(lease)


class Child:
    def __init__(self, core: SharingManager, rng: random.Random) -> None:
        self.core = core
        self.rng = rng
        self.held: dict[tuple[IPProtocol, int], Held] = {}

    async def add(
        self, protocol: IPProtocol, port: int, client: IPv4Address, iport: int, lease: float | None
    ) -> None:
        fields = f"{int(protocol)} {port} {client} {iport} {lease_text(lease)}"
        emit(f"BEGIN ADD {fields}")
        request = MappingRequest(
            protocol=protocol,
            external_port=port,
            internal_client=client,
            internal_port=iport,
            description=f"durability {port}",
            lease=lease,
        )
        await self.core.add_mapping(request, ADMIN)
        emit(f"ADD {fields}")

    async def remove(self, protocol: IPProtocol, port: int) -> None:
        emit(f"BEGIN DEL {int(protocol)} {port}")
        await self.core.remove_mapping(MappingKey(protocol, port), ADMIN)
        emit(f"DEL {int(protocol)} {port}")

    # -- churn -------------------------------------------------------------------------------

    def _free_slot(self, taken: set[tuple[IPProtocol, int]]) -> tuple[IPProtocol, int]:
        while True:
            slot = (self.rng.choice((IPProtocol.TCP, IPProtocol.UDP)), self.rng.choice(PORTS))
            if slot not in self.held and slot not in taken:
                return slot

    def _plan_change(self, taken: set[tuple[IPProtocol, int]]) -> Awaitable[None]:
        """One change on a slot not in `taken`; the child's model is updated at once."""
        rng = self.rng
        candidates = [slot for slot in self.held if slot not in taken]
        remove_share = 0.3 if len(self.held) < SOFT_LIMIT else 0.8
        roll = rng.random()
        if candidates and roll < remove_share:
            slot = rng.choice(candidates)
            taken.add(slot)
            del self.held[slot]
            return self.remove(*slot)
        lease = None if rng.random() < 0.5 else rng.choice(LONG_LEASES)
        if candidates and roll < remove_share + 0.15:
            # A refresh: same slot, same internal client (WIP-11 overwrite), new lease and port.
            slot = rng.choice(candidates)
            client = self.held[slot].client
        else:
            slot = self._free_slot(taken)
            client = IPv4Address("198.18.0.2") + rng.randrange(LAN_HOSTS)
        taken.add(slot)
        iport = rng.randrange(1, 65536)
        self.held[slot] = Held(client, iport, lease)
        return self.add(slot[0], slot[1], client, iport, lease)

    async def churn(self, max_burst: int, deadline: float) -> None:
        sizes = sorted({2, 4, max(2, max_burst // 2), max_burst})
        while time.monotonic() < deadline:
            if self.rng.random() < 0.5:
                await self._plan_change(set())
            else:
                taken: set[tuple[IPProtocol, int]] = set()
                size = self.rng.choice(sizes)
                await asyncio.gather(*(self._plan_change(taken) for _ in range(size)))

    # -- leases ------------------------------------------------------------------------------

    async def leases(self, max_burst: int) -> None:
        client = IPv4Address("198.18.0.10")
        for port in range(20000, 20010):
            await self.add(IPProtocol.TCP, port, client, port, None)
        for port in range(21000, 21010):
            await self.add(IPProtocol.UDP, port, client, port, 3600.0)
        await asyncio.gather(
            *(
                self.add(IPProtocol.UDP, port, client, port, SHORT_LEASE)
                for port in range(22000, 22000 + max_burst)
            )
        )


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("db")
    parser.add_argument("--mode", choices=("churn", "leases"), default="churn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-burst", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.duration

    source = StaticConnectionSource(
        [
            make_connection("wan0", addresses=["198.19.0.1/24"]),
            make_connection("lan0", addresses=["198.18.0.1/24"]),
        ]
    )
    core = await SharingManager.open(
        backend=MemoryBackend(), store=SqliteStore(args.db), source=source
    )
    try:
        wan, lan = core.find_connection(name="wan0"), core.find_connection(name="lan0")
        await core.enable_sharing(wan.guid, SharingConnectionType.PUBLIC)
        await core.enable_sharing(lan.guid, SharingConnectionType.PRIVATE)
        child = Child(core, random.Random(args.seed))
        emit("READY")
        try:
            if args.mode == "churn":
                await child.churn(args.max_burst, deadline)
            else:
                await child.leases(args.max_burst)
                emit("IDLE")
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            emit(f"ERROR {exc!r}")
            traceback.print_exc()
            return 1
    finally:
        await core.aclose()
    emit("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
