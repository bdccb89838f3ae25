"""A Hypothesis state machine over SharingManager + MemoryBackend + FakeClock.

Each rule drives the core through a dedicated event loop (created in __init__, closed in
teardown). Rules check their own outcome against a small oracle (WIP-11, WIP-25, WIP-31, ST-23,
ST-24); the invariants check the table, the owner index, leases, the applied state and the store
after every step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from ipaddress import IPv4Address
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from support import LAN_HOST, LAN_HOST2, FakeClock, fake_resolver, lab_connections

from igd.natcore import (
    ADMIN,
    BackendError,
    Client,
    ConflictError,
    ConflictWithOtherMechanismError,
    IndexOutOfRangeError,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingNotFoundError,
    MappingRequest,
    MemoryStore,
    NatError,
    NotAuthorizedError,
    Origin,
    PolicyConfig,
    QuotaExceededError,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
)
from igd.natcore.backends.memory import MemoryBackend

T = TypeVar("T")

PEER = IPv4Address("198.19.0.9")
PORTS = (1024, 40000, 40001, 40002, 40003)
PROTOCOLS = (IPProtocol.TCP, IPProtocol.UDP)
HOSTS = (LAN_HOST, LAN_HOST2)
CLIENTS = tuple(Client(origin, host) for origin in (Origin.UPNP, Origin.NATPMP) for host in HOSTS)
WAIT_S = 3.0

clients = st.sampled_from(CLIENTS)
internals = st.sampled_from(HOSTS)
ports = st.sampled_from(PORTS)
protocols = st.sampled_from(PROTOCOLS)
remote_hosts = st.sampled_from((None, None, None, PEER))
leases = st.sampled_from((None, 5.0, 30.0, 100.0))

Snapshot = tuple[tuple[Mapping, ...], dict[MappingKey, Mapping], frozenset[Mapping], int]


class CoreMachine(RuleBasedStateMachine):
    """Secure mode on (ST-18): protocol clients map only to themselves."""

    SECURE = True
    QUOTA = 3

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.backend = MemoryBackend()
        self.store = MemoryStore()
        self.core = self.run(
            SharingManager.open(
                backend=self.backend,
                store=self.store,
                source=StaticConnectionSource(lab_connections()),
                policy=PolicyConfig(secure_mode=self.SECURE, quota_per_client=self.QUOTA),
                clock=self.clock,
                resolver=fake_resolver,
            )
        )
        self.wan = self.core.find_connection(name="wan0").guid
        self.lan1 = self.core.find_connection(name="lan1").guid
        self.run(self.core.enable_sharing(self.wan, SharingConnectionType.PUBLIC))
        lan0 = self.core.find_connection(name="lan0").guid
        self.run(self.core.enable_sharing(lan0, SharingConnectionType.PRIVATE))
        self.last_update_id = self.core.system_update_id

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.run(self.core.aclose())
        finally:
            self.loop.close()

    # -- helpers ---------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return (
            tuple(self.core.mappings()),
            dict(self.backend.mappings),
            frozenset(self.store.load().mappings),
            self.core.system_update_id,
        )

    def attempt(self, coro: Coroutine[Any, Any, T]) -> tuple[T | None, NatError | None]:
        """Run a change; a refused change (any NatError) must leave everything as it was.

        Every change these rules make touches a mapping, so a success bumps SystemUpdateID by
        exactly one (WIP-62), however many mappings it affects.
        """
        before = self.snapshot()
        error: NatError | None = None
        try:
            result = self.run(coro)
        except NatError as exc:
            error = exc
        else:
            assert self.core.system_update_id == before[3] + 1
            return result, None
        assert self.snapshot() == before, f"{error!r} left a trace"
        return None, error

    def owned(self, owner: IPv4Address) -> int:
        return sum(1 for m in self.core.mappings() if m.owner == owner)

    @staticmethod
    def takes_ownership(existing: Mapping | None, client: Client) -> bool:
        """ST-24: a new mapping, or one that changes owner, counts against the quota."""
        return existing is None or existing.owner != client.address

    # -- rules -----------------------------------------------------------------------------------

    @rule(
        client=clients,
        internal=internals,
        port=ports,
        protocol=protocols,
        remote_host=remote_hosts,
        lease=leases,
    )
    def add(
        self,
        client: Client,
        internal: IPv4Address,
        port: int,
        protocol: IPProtocol,
        remote_host: IPv4Address | None,
        lease: float | None,
    ) -> None:
        """WIP-11 / ST-18 / ST-24: outcome of AddPortMapping from the current state."""
        assert client.address is not None
        existing = self.core.table.at_port(protocol, port)
        owned = self.owned(client.address)
        request = MappingRequest(
            protocol, port, internal, port, remote_host=remote_host, lease=lease
        )
        result, error = self.attempt(self.core.add_mapping(request, client))
        if self.SECURE and internal != client.address:
            assert isinstance(error, NotAuthorizedError), error
            return
        overwrite = (
            existing is not None
            and existing.remote_host == remote_host
            and existing.internal_client == internal
            and SharingManager.may_manage(existing, client)
        )
        if existing is not None and not overwrite:
            assert isinstance(error, ConflictError), error
            other = existing.origin is not client.origin
            assert isinstance(error, ConflictWithOtherMechanismError) == other, error
        elif self.takes_ownership(existing, client) and owned >= self.QUOTA:
            assert isinstance(error, QuotaExceededError), error
        else:
            assert error is None, error
        if result is not None:
            assert self.core.mapping(result.key) == result
            assert (result.owner, result.origin) == (client.address, client.origin)
            if existing is not None:  # an overwrite keeps the creation time (ST-27 refresh)
                assert result.created_at == existing.created_at
            expected_expiry = None if lease is None else self.clock() + lease
            assert result.expires_at == expected_expiry

    @rule(client=clients, internal=internals, port=st.sampled_from((0, *PORTS)), protocol=protocols)
    def add_any(
        self, client: Client, internal: IPv4Address, port: int, protocol: IPProtocol
    ) -> None:
        """WIP-25/26: the wanted port when free or one's own, else the nearest free >= 1024."""
        assert client.address is not None
        existing = self.core.table.at_port(protocol, port) if port else None
        owned = self.owned(client.address)
        request = MappingRequest(protocol, port, internal, 40000)
        result, error = self.attempt(self.core.add_any_mapping(request, client))
        if self.SECURE and internal != client.address:
            assert isinstance(error, NotAuthorizedError), error
            return
        refresh = (
            existing is not None
            and existing.remote_host is None
            and existing.internal_client == internal
            and SharingManager.may_manage(existing, client)
        )
        if (not refresh or self.takes_ownership(existing, client)) and owned >= self.QUOTA:
            assert isinstance(error, QuotaExceededError), error
            return
        assert error is None, error
        assert result is not None
        assert result.external_port >= 1024
        if port and (existing is None or refresh):
            assert result.external_port == port
        elif existing is not None:
            assert result.external_port != port
        assert self.core.mapping(result.key) == result

    @rule(port=ports, protocol=protocols, internal=internals)
    def admin_add(self, port: int, protocol: IPProtocol, internal: IPv4Address) -> None:
        """An administrator's static mapping: a ConflictWithOtherMechanism source for clients."""
        existing = self.core.table.at_port(protocol, port)
        request = MappingRequest(protocol, port, internal, port)
        result, error = self.attempt(self.core.add_connection_mapping(self.wan, request))
        if existing is None:
            assert error is None, error
            assert result is not None
            assert result.origin is Origin.ADMIN
            assert result.owner is None
        else:
            assert isinstance(error, ConflictError), error

    @rule(data=st.data(), client=st.sampled_from((*CLIENTS, ADMIN)))
    def remove(self, data: st.DataObject, client: Client) -> None:
        """WIP-28 / ST-23: by key, from any client; missing keys come from the port pool."""
        present = list(self.core.mappings())
        pick_present: bool = bool(present) and data.draw(st.booleans())
        if pick_present:
            key = data.draw(st.sampled_from(present)).key
        else:
            key = MappingKey(data.draw(protocols), data.draw(ports), data.draw(remote_hosts))
        target = self.core.table.get(key)
        result, error = self.attempt(self.core.remove_mapping(key, client))
        if target is None:
            assert isinstance(error, MappingNotFoundError), error
        elif SharingManager.may_manage(target, client):
            assert error is None, error
            assert result == target
            assert key not in self.core.table
        else:
            assert isinstance(error, NotAuthorizedError), error

    @rule(
        client=clients,
        bounds=st.tuples(ports, ports),
        protocol=st.sampled_from((None, *PROTOCOLS)),
    )
    def remove_range(
        self, client: Client, bounds: tuple[int, int], protocol: IPProtocol | None
    ) -> None:
        """WIP-31 / ST-23: exactly the caller's mappings in range go, atomically; else 730."""
        start, end = sorted(bounds)
        victims = [
            m
            for m in self.core.mappings()
            if start <= m.external_port <= end
            and protocol in (None, m.protocol)
            and SharingManager.may_manage(m, client)
        ]
        count = self.core.mapping_count
        update_id = self.core.system_update_id
        result, error = self.attempt(
            self.core.remove_mappings_in_range(start, end, protocol, client)
        )
        if not victims:
            assert isinstance(error, MappingNotFoundError), error
            return
        assert error is None, error
        assert result is not None
        assert sorted(result, key=lambda m: (m.protocol, m.external_port)) == victims
        assert self.core.mapping_count == count - len(victims)
        assert self.core.system_update_id == update_id + 1  # WIP-62: once per change

    @rule(data=st.data())
    def toggle_enabled(self, data: st.DataObject) -> None:
        present = list(self.core.mappings())
        if not present:
            return
        target = data.draw(st.sampled_from(present))
        result, error = self.attempt(
            self.core.set_mapping_enabled(target.key, not target.enabled, ADMIN)
        )
        assert error is None, error
        assert result is not None
        assert result.enabled is not target.enabled

    @rule(seconds=st.sampled_from((1.0, 5.0, 30.0, 99.0, 100.0, 1000.0)))
    def advance_and_expire(self, seconds: float) -> None:
        """WIP-14: after the deadline the mapping is gone, and only the due ones."""
        before = list(self.core.mappings())
        self.clock.advance(seconds)
        now = self.clock()
        self.run(self.expire_due(now))
        survivors = [m for m in before if m.expires_at is None or m.expires_at > now]
        assert list(self.core.mappings()) == survivors

    async def expire_due(self, now: float) -> None:
        """Wake the lease timer and wait (bounded) until no lease is due.

        The timer sleeps up to MAX_TIMER_SLEEP_S of real time between sweeps; setting its
        wake-up event (the same one every commit sets) makes it sweep at once, so expiry runs
        through the core's own path without real-time waits.
        """
        async with asyncio.timeout(WAIT_S):
            while True:
                deadline = self.core.table.next_deadline()
                if deadline is None or deadline > now:
                    return
                self.core._timer_wakeup.set()
                await asyncio.sleep(0.001)

    @rule(via_lan1=st.booleans())
    def switch_public_away_and_back(self, via_lan1: bool) -> None:
        """S5 / R11: protocol mappings go with the public role; admin mappings are disabled."""
        if via_lan1:
            self.run(self.core.enable_sharing(self.lan1, SharingConnectionType.PUBLIC))
        else:
            self.run(self.core.disable_sharing(self.wan))
        assert self.core.public_connection() is None or via_lan1
        self.run(self.core.enable_sharing(self.wan, SharingConnectionType.PUBLIC))
        for m in self.core.mappings():
            assert m.origin is Origin.ADMIN
            assert not m.enabled
        assert self.backend.mappings == {}

    @rule(client=clients, protocol=protocols)
    def backend_fails_an_add(self, client: Client, protocol: IPProtocol) -> None:
        """A data-plane failure rolls the change back: BackendError and nothing changed."""
        assert client.address is not None
        port = next(p for p in range(41000, 42000) if not self.core.table.at_port(protocol, p))
        request = MappingRequest(protocol, port, client.address, port, lease=30.0)
        self.backend.fail_next = 1
        try:
            _, error = self.attempt(self.core.add_mapping(request, client))
        finally:
            self.backend.fail_next = 0
        if self.owned(client.address) >= self.QUOTA:
            assert isinstance(error, QuotaExceededError), error
        else:
            assert isinstance(error, BackendError), error

    @rule(data=st.data())
    def backend_fails_a_remove(self, data: st.DataObject) -> None:
        present = list(self.core.mappings())
        if not present:
            return
        target = data.draw(st.sampled_from(present))
        self.backend.fail_next = 1
        try:
            _, error = self.attempt(self.core.remove_mapping(target.key, ADMIN))
        finally:
            self.backend.fail_next = 0
        if self.core.is_active(target):
            assert isinstance(error, BackendError), error
        else:  # a disabled mapping is not applied: nothing for the backend to do
            assert error is None, error

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def one_mapping_per_protocol_and_port(self) -> None:
        slots = [(m.protocol, m.external_port) for m in self.core.mappings()]
        assert len(slots) == len(set(slots))
        assert slots == sorted(slots)

    @invariant()
    def count_matches_the_enumeration(self) -> None:
        assert self.core.mapping_count == len(list(self.core.mappings()))

    @invariant()
    def owner_counts_match_and_respect_the_quota(self) -> None:
        """ST-24."""
        for owner in HOSTS:
            recount = self.owned(owner)
            assert self.core.table.count_for_owner(owner) == recount
            assert len(self.core.owned_by(owner)) == recount
            assert recount <= self.QUOTA

    @invariant()
    def no_lease_outlives_the_clock(self) -> None:
        """WIP-14: every rule runs expiry to completion, so no remaining lease is due."""
        now = self.clock()
        assert all(m.expires_at is None or m.expires_at > now for m in self.core.mappings())

    @invariant()
    def applied_state_is_the_active_mappings(self) -> None:
        active = {m.key: m for m in self.core.mappings() if self.core.is_active(m)}
        assert self.backend.mappings == active

    @invariant()
    def positions_enumerate_the_mappings(self) -> None:
        """WIP-29: mapping_at(0..n-1) is the key-order enumeration, n is out of range."""
        mappings = list(self.core.mappings())
        assert [self.core.mapping_at(i) for i in range(len(mappings))] == mappings
        with pytest.raises(IndexOutOfRangeError):
            self.core.mapping_at(len(mappings))

    @invariant()
    def store_holds_the_table(self) -> None:
        assert frozenset(self.store.load().mappings) == frozenset(self.core.mappings())

    @invariant()
    def system_update_id_never_goes_back(self) -> None:
        assert self.core.system_update_id >= self.last_update_id
        self.last_update_id = self.core.system_update_id


class OpenCoreMachine(CoreMachine):
    """Secure mode off: a client may map to another host of its segment (ST-19/33 still hold).

    A quota of 1 makes ownership changes by overwrite (WIP-71: the target may overwrite a
    mapping someone else made for it) reach the quota quickly.
    """

    SECURE = False
    QUOTA = 1


MACHINE_SETTINGS = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = MACHINE_SETTINGS
TestOpenCoreMachine = OpenCoreMachine.TestCase
TestOpenCoreMachine.settings = MACHINE_SETTINGS
