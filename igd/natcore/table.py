"""The mapping table: pure, synchronous, `now` passed in.

One mapping at most per (protocol, external port): WANIPConnection's result matrix (WIP-11) makes
a second remote host on a held (protocol, port) a conflict whatever its internal client, so the
remote host is part of a mapping's identity for lookups (WIP-10) but never shares a port.

Costs, n = number of mappings: lookup by key O(1); by position and by port range O(log P) per
entry through a Fenwick tree over the 2 x 65536 (protocol, port) slots (P = 131072, 17 steps);
insert/remove O(log P); lease expiry through a heap with lazy deletion, O(log n) per lease.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

from igd.natcore.errors import (
    ConflictError,
    ConflictWithOtherMechanismError,
    IndexOutOfRangeError,
    MappingNotFoundError,
)
from igd.natcore.model import Client, IPProtocol, Mapping, MappingKey, Origin

__all__ = ["MIN_ALLOCATED_PORT", "MappingTable"]

_PORTS = 65536
_PROTOCOLS = (IPProtocol.TCP, IPProtocol.UDP)
_SLOTS = _PORTS * len(_PROTOCOLS)

# AddAny-style allocation never hands out a well-known port (WIP-26).
MIN_ALLOCATED_PORT = 1024


def _slot(protocol: IPProtocol, port: int) -> int:
    return (0 if protocol is IPProtocol.TCP else _PORTS) + port


class _Occupancy:
    """A Fenwick tree counting occupied slots: rank and select in O(log P)."""

    __slots__ = ("_top", "_tree")

    def __init__(self, size: int) -> None:
        self._tree = [0] * (size + 1)
        self._top = 1 << (size.bit_length() - 1)

    def add(self, slot: int, delta: int) -> None:
        i = slot + 1
        tree = self._tree
        size = len(tree) - 1
        while i <= size:
            tree[i] += delta
            i += i & -i

    def rank(self, slot: int) -> int:
        """Number of occupied slots strictly below `slot`."""
        total = 0
        i = slot
        tree = self._tree
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def select(self, k: int) -> int:
        """The slot of the k-th (0-based) occupied slot; k must be in range."""
        pos = 0
        remaining = k + 1
        step = self._top
        tree = self._tree
        size = len(tree) - 1
        while step:
            nxt = pos + step
            if nxt <= size and tree[nxt] < remaining:
                pos = nxt
                remaining -= tree[nxt]
            step >>= 1
        return pos


class MappingTable:
    """Every mapping the gateway holds, keyed by (protocol, external port[, remote host])."""

    def __init__(self) -> None:
        self._slots: dict[int, Mapping] = {}
        self._occupancy = _Occupancy(_SLOTS)
        self._by_owner: dict[IPv4Address, set[int]] = {}
        self._by_client: dict[IPv4Address, set[int]] = {}
        self._leases: list[tuple[float, int]] = []  # (expires_at, slot), lazily deleted

    # -- reads -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[Mapping]:
        """All mappings in key order (protocol, then external port)."""
        for slot in sorted(self._slots):
            yield self._slots[slot]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, MappingKey) and self.get(key) is not None

    def get(self, key: MappingKey) -> Mapping | None:
        """The mapping with exactly this key (the remote host must match too, WIP-10)."""
        mapping = self._slots.get(_slot(key.protocol, key.external_port))
        if mapping is None or mapping.remote_host != key.remote_host:
            return None
        return mapping

    def at_port(self, protocol: IPProtocol, external_port: int) -> Mapping | None:
        """The mapping holding (protocol, external port), whatever its remote host."""
        return self._slots.get(_slot(protocol, external_port))

    def at_index(self, index: int) -> Mapping:
        """The index-th mapping in key order (GetGenericPortMappingEntry, WIP-29)."""
        if not 0 <= index < len(self._slots):
            raise IndexOutOfRangeError(f"no mapping at index {index}")
        return self._slots[self._occupancy.select(index)]

    def index_of(self, key: MappingKey) -> int:
        if self.get(key) is None:
            raise MappingNotFoundError(f"no mapping {key}")
        return self._occupancy.rank(_slot(key.protocol, key.external_port))

    def in_range(
        self, start: int, end: int, protocol: IPProtocol | None = None
    ) -> Iterator[Mapping]:
        """Mappings with start <= external port <= end, in key order."""
        start = max(start, 0)
        end = min(end, _PORTS - 1)
        if start > end:
            return
        for proto in _PROTOCOLS if protocol is None else (protocol,):
            low = self._occupancy.rank(_slot(proto, start))
            high = self._occupancy.rank(_slot(proto, end) + 1)
            for rank in range(low, high):
                yield self._slots[self._occupancy.select(rank)]

    def owned_by(self, owner: IPv4Address) -> list[Mapping]:
        return [self._slots[slot] for slot in sorted(self._by_owner.get(owner, ()))]

    def related_to(self, address: IPv4Address) -> list[Mapping]:
        """Mappings owned by `address` or pointing at it, in key order (a client's own view)."""
        slots = self._by_owner.get(address, set()) | self._by_client.get(address, set())
        return [self._slots[slot] for slot in sorted(slots)]

    def count_for_owner(self, owner: IPv4Address) -> int:
        return len(self._by_owner.get(owner, ()))

    # -- decisions ---------------------------------------------------------------------------

    def resolve(
        self,
        key: MappingKey,
        internal_client: IPv4Address,
        client: Client,
        *,
        replace: bool = True,
    ) -> Mapping | None:
        """The existing mapping a request would overwrite, or None; raises on a conflict.

        WIP-11: same protocol, port, remote host and internal client overwrites; any other
        mapping on that (protocol, port) is a conflict, whichever connection holds it. A conflict
        with another mechanism's mapping (an administrator's included) is the more specific
        ConflictWithOtherMechanismError (UPnP 729, XP-03).
        """
        existing = self.at_port(key.protocol, key.external_port)
        if existing is None:
            return None
        same_target = (
            existing.remote_host == key.remote_host and existing.internal_client == internal_client
        )
        if same_target and replace and self.may_manage(existing, client):
            return existing
        if existing.origin is not client.origin:
            raise ConflictWithOtherMechanismError(
                f"{key.protocol.name} port {key.external_port} is held by "
                f"a {existing.origin.value} mapping"
            )
        raise ConflictError(
            f"{key.protocol.name} port {key.external_port} is mapped to {existing.internal_client}"
        )

    @staticmethod
    def may_manage(mapping: Mapping, client: Client) -> bool:
        """Whether `client` may change or remove `mapping` (WIP-71, ST-23).

        The administrator manages everything; a protocol client manages the mappings it owns or
        that point at its own address, never an administrator's.
        """
        if client.is_admin:
            return True
        if mapping.origin is Origin.ADMIN or client.address is None:
            return False
        return client.address in (mapping.owner, mapping.internal_client)

    def find_free_port(
        self,
        protocol: IPProtocol,
        wanted: int,
        acceptable: Callable[[int], bool],
        *,
        low: int = MIN_ALLOCATED_PORT,
        high: int = _PORTS - 1,
    ) -> int | None:
        """The free port nearest to `wanted` in [low, high] that `acceptable` admits.

        Searches outward (wanted, wanted+1, wanted-1, ...); ties go to the higher port.
        Bounded by the size of the range.
        """
        wanted = min(max(wanted, low), high)
        for distance in range(high - low + 1):
            up, down = wanted + distance, wanted - distance
            if up > high and down < low:
                break
            for port in (up, down) if distance else (up,):
                free = low <= port <= high and _slot(protocol, port) not in self._slots
                if free and acceptable(port):
                    return port
        return None

    # -- changes -----------------------------------------------------------------------------

    def put(self, mapping: Mapping) -> Mapping | None:
        """Insert or replace the mapping on its (protocol, port); returns the one replaced."""
        slot = _slot(mapping.protocol, mapping.external_port)
        old = self._slots.get(slot)
        if old is not None:
            self._forget_indexes(old, slot)
        else:
            self._occupancy.add(slot, 1)
        self._slots[slot] = mapping
        if mapping.owner is not None:
            self._by_owner.setdefault(mapping.owner, set()).add(slot)
        self._by_client.setdefault(mapping.internal_client, set()).add(slot)
        if mapping.expires_at is not None and (old is None or old.expires_at != mapping.expires_at):
            heapq.heappush(self._leases, (mapping.expires_at, slot))
            self._compact_leases()
        return old

    def remove(self, key: MappingKey) -> Mapping:
        """Remove and return the mapping with exactly this key."""
        mapping = self.get(key)
        if mapping is None:
            raise MappingNotFoundError(f"no mapping {key}")
        slot = _slot(key.protocol, key.external_port)
        del self._slots[slot]
        self._occupancy.add(slot, -1)
        self._forget_indexes(mapping, slot)
        return mapping

    def _forget_indexes(self, mapping: Mapping, slot: int) -> None:
        for index, address in (
            (self._by_owner, mapping.owner),
            (self._by_client, mapping.internal_client),
        ):
            if address is None:
                continue
            slots = index.get(address)
            if slots is not None:
                slots.discard(slot)
                if not slots:
                    del index[address]

    # -- leases ------------------------------------------------------------------------------

    def _live_lease(self, entry: tuple[float, int]) -> Mapping | None:
        deadline, slot = entry
        mapping = self._slots.get(slot)
        if mapping is None or mapping.expires_at != deadline:
            return None
        return mapping

    def next_deadline(self) -> float | None:
        """The earliest lease deadline, or None when no mapping has a lease."""
        leases = self._leases
        while leases and self._live_lease(leases[0]) is None:
            heapq.heappop(leases)
        return leases[0][0] if leases else None

    def expire(self, now: float) -> list[Mapping]:
        """Remove and return exactly the mappings whose lease ended at or before `now`."""
        expired: list[Mapping] = []
        leases = self._leases
        while leases and leases[0][0] <= now:
            entry = heapq.heappop(leases)
            mapping = self._live_lease(entry)
            if mapping is not None:
                expired.append(self.remove(mapping.key))
        return expired

    def _compact_leases(self) -> None:
        if len(self._leases) > 2 * len(self._slots) + 64:
            self._leases = list({e for e in self._leases if self._live_lease(e) is not None})
            heapq.heapify(self._leases)
