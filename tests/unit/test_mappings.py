"""The protocol mapping API of SharingManager, end to end over the memory backend and store.

`core` (conftest) has wan0 198.19.0.1/24 public and lan0 198.18.0.1/24 private; `backend.mappings`
is the applied state; `clock` is the fake wall clock the core reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Any, cast

import pytest
from support import LAN_HOST, LAN_HOST2, FakeClock, fake_resolver, lab_connections

from igd.natcore import (
    BackendError,
    Client,
    ConflictError,
    ConflictWithOtherMechanismError,
    ConnectionNotFoundError,
    Event,
    IndexOutOfRangeError,
    InvalidDescriptionError,
    InvalidPortError,
    InvalidProtocolError,
    InvalidRequestError,
    IPProtocol,
    Mapping,
    MappingAdded,
    MappingChanged,
    MappingKey,
    MappingNotFoundError,
    MappingRemoved,
    MappingRequest,
    MemoryStore,
    NatError,
    NotAuthorizedError,
    NumberOfEntriesChanged,
    Origin,
    PolicyConfig,
    QuotaExceededError,
    RemovalReason,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.natcore.eventbus import Subscription

TCP, UDP = IPProtocol.TCP, IPProtocol.UDP
PEER = IPv4Address("198.19.0.9")
UPNP_A = Client(Origin.UPNP, LAN_HOST)
UPNP_B = Client(Origin.UPNP, LAN_HOST2)
NATPMP_A = Client(Origin.NATPMP, LAN_HOST)
NATPMP_B = Client(Origin.NATPMP, LAN_HOST2)
MAX_LEASE = 604800.0


def req(
    port: int = 40001,
    *,
    internal_client: IPv4Address = LAN_HOST,
    internal_port: int | None = None,
    protocol: IPProtocol = TCP,
    lease: float | None = None,
    description: str = "",
    remote_host: IPv4Address | None = None,
    enabled: bool = True,
) -> MappingRequest:
    return MappingRequest(
        protocol=protocol,
        external_port=port,
        internal_client=internal_client,
        internal_port=port if internal_port is None else internal_port,
        description=description,
        enabled=enabled,
        remote_host=remote_host,
        lease=lease,
    )


def key(
    port: int, protocol: IPProtocol = TCP, remote_host: IPv4Address | None = None
) -> MappingKey:
    return MappingKey(protocol, port, remote_host)


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused change must leave alone."""

    table: tuple[Mapping, ...]
    applied: dict[MappingKey, Mapping]
    stored: tuple[Mapping, ...]
    update_id: int


def snapshot(core: SharingManager) -> Snapshot:
    backend = cast(MemoryBackend, core.backend)
    return Snapshot(
        table=tuple(core.mappings()),
        applied=dict(backend.mappings),
        stored=core.store.load().mappings,
        update_id=core.system_update_id,
    )


def active(core: SharingManager) -> dict[MappingKey, Mapping]:
    return {m.key: m for m in core.mappings() if core.is_active(m)}


async def drain(subscription: Subscription) -> list[Event]:
    """The events published so far (they are queued before a change's caller resumes)."""
    subscription.close()
    return [event async for event in subscription]


async def wait_until_count(core: SharingManager, count: int) -> None:
    """The lease timer sweeps at least every second of real time; bounded wait."""
    async with asyncio.timeout(3):
        # The core has no "swept" hook: polling is the point here.
        while core.mapping_count != count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def open_core(
    policy: PolicyConfig, clock: FakeClock | None = None
) -> AsyncIterator[SharingManager]:
    """A core like conftest's, with a non-default policy."""
    manager = await SharingManager.open(
        backend=MemoryBackend(),
        store=MemoryStore(),
        source=StaticConnectionSource(lab_connections()),
        policy=policy,
        clock=clock or FakeClock(),
        resolver=fake_resolver,
    )
    try:
        await manager.enable_sharing(
            manager.find_connection(name="wan0").guid, SharingConnectionType.PUBLIC
        )
        await manager.enable_sharing(
            manager.find_connection(name="lan0").guid, SharingConnectionType.PRIVATE
        )
        yield manager
    finally:
        await manager.aclose()


# -- add and refresh (WIP-11, WIP-14, ST-27) ------------------------------------------------------


async def test_add_creates_applies_and_announces(
    core: SharingManager, backend: MemoryBackend, clock: FakeClock
) -> None:
    """WIP-61/62: an add is applied, counted, evented; SystemUpdateID moves by one."""
    events = core.events()
    before = core.system_update_id
    m = await core.add_mapping(req(40001, lease=3600, description="game"), UPNP_A)
    assert m == Mapping(
        protocol=TCP,
        external_port=40001,
        internal_client=LAN_HOST,
        internal_port=40001,
        connection=core.find_connection(name="wan0").guid,
        description="game",
        expires_at=clock() + 3600,
        origin=Origin.UPNP,
        owner=LAN_HOST,
        created_at=clock(),
    )
    assert core.mapping(key(40001)) == m
    assert core.mapping_count == 1
    assert backend.mappings == {m.key: m}
    assert core.store.load().mappings == (m,)
    assert core.system_update_id == before + 1
    assert m.remaining(clock()) == 3600
    assert await drain(events) == [MappingAdded(m), NumberOfEntriesChanged(1)]


async def test_refresh_keeps_created_at_and_count(
    core: SharingManager, backend: MemoryBackend, clock: FakeClock
) -> None:
    """WIP-11 / ST-27: same P+EP+RH+IC overwrites; refresh extends without a count change."""
    first = await core.add_mapping(req(40001, lease=3600), UPNP_A)
    clock.advance(100)
    events = core.events()
    before = core.system_update_id
    again = await core.add_mapping(
        req(40001, lease=3600, internal_port=40002, description="new"), UPNP_A
    )
    assert again.created_at == first.created_at
    assert again.expires_at == clock() + 3600
    assert (again.internal_port, again.description) == (40002, "new")
    assert core.mapping_count == 1
    assert backend.mappings == {again.key: again}
    assert core.system_update_id == before + 1
    evs = await drain(events)
    assert evs == [MappingChanged(first, again, "refreshed")]
    assert not any(isinstance(e, NumberOfEntriesChanged) for e in evs)


async def test_specific_remote_host_is_part_of_the_key(core: SharingManager) -> None:
    """WIP-10/16 (T-IGD-16): a specific-RH mapping is not found with the wildcard key."""
    m = await core.add_mapping(req(40010, remote_host=PEER), UPNP_A)
    assert core.mapping(key(40010, remote_host=PEER)) == m
    with pytest.raises(MappingNotFoundError):
        core.mapping(key(40010))
    with pytest.raises(MappingNotFoundError):
        await core.remove_mapping(key(40010), UPNP_A)
    assert core.mapping_count == 1


async def test_other_client_on_a_held_port_conflicts(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """WIP-11/24 (T-IGD-06): B asking for A's port is a 718 ConflictError; nothing changes."""
    await core.add_mapping(req(40001), UPNP_A)
    before = snapshot(core)
    events = core.events()
    with pytest.raises(ConflictError) as caught:
        await core.add_mapping(req(40001, internal_client=LAN_HOST2), UPNP_B)
    assert type(caught.value) is ConflictError
    with pytest.raises(ConflictError):
        await core.add_mapping(req(40001, remote_host=PEER), UPNP_A)
    with pytest.raises(ConflictError):
        await core.add_mapping(req(40001), UPNP_A, replace=False)
    assert snapshot(core) == before
    assert await drain(events) == []


async def test_other_mechanism_on_a_held_port_conflicts(core: SharingManager) -> None:
    """WIP-24 (729): another mechanism's mapping, or an administrator's, holds the port."""
    await core.add_mapping(req(40001, internal_client=LAN_HOST2), NATPMP_B)
    await core.add_connection_mapping(
        core.find_connection(name="wan0").guid, req(40002, internal_client=LAN_HOST2)
    )
    before = snapshot(core)
    with pytest.raises(ConflictWithOtherMechanismError):
        await core.add_mapping(req(40001), UPNP_A)
    with pytest.raises(ConflictWithOtherMechanismError):
        await core.add_mapping(req(40002), UPNP_A)
    with pytest.raises(ConflictWithOtherMechanismError):
        await core.add_mapping(req(40002, internal_client=LAN_HOST2), UPNP_B)
    assert snapshot(core) == before


async def test_secure_mode_violation_changes_nothing(core: SharingManager) -> None:
    """ST-18 / WIP-70/71 (T-IGD-07): A mapping to B is refused, with no side effect."""
    await core.add_mapping(req(40001), UPNP_A)
    before = snapshot(core)
    events = core.events()
    with pytest.raises(NotAuthorizedError):
        await core.add_mapping(req(40002, internal_client=LAN_HOST2), UPNP_A)
    with pytest.raises(NotAuthorizedError):
        await core.add_any_mapping(req(40003, internal_client=LAN_HOST2), UPNP_A)
    with pytest.raises(NotAuthorizedError):
        await core.add_mapping(req(40001, internal_client=LAN_HOST2), UPNP_A)
    assert snapshot(core) == before
    assert await drain(events) == []


@pytest.mark.parametrize(
    "target",
    [
        IPv4Address("198.18.0.1"),
        IPv4Address("198.19.0.1"),
        IPv4Address("198.19.0.50"),
        IPv4Address("198.18.1.10"),
        IPv4Address("198.18.0.255"),
        IPv4Address("127.0.0.1"),
    ],
)
async def test_upnproxy_targets_refused_without_secure_mode(target: IPv4Address) -> None:
    """ST-19 / ST-33 through the core: secure mode off still refuses these internal clients."""
    async with open_core(PolicyConfig(secure_mode=False)) as core:
        await core.add_mapping(req(40001, internal_client=LAN_HOST2), UPNP_A)  # allowed
        before = snapshot(core)
        with pytest.raises(NotAuthorizedError):
            await core.add_mapping(req(40002, internal_client=target), UPNP_A)
        assert snapshot(core) == before


async def test_default_rules_refuse_privileged_and_remote_access_ports(
    core: SharingManager,
) -> None:
    """ST-21 / WIP-72 (T-IGD-15): external 80 and internal 22 are refused by the shipped rules."""
    with pytest.raises(NotAuthorizedError):
        await core.add_mapping(req(80), UPNP_A)
    with pytest.raises(NotAuthorizedError):
        await core.add_mapping(req(40022, internal_port=22), UPNP_A)
    assert core.mapping_count == 0
    m = await core.add_connection_mapping(
        core.find_connection(name="wan0").guid, req(80, internal_port=22)
    )
    assert m.origin is Origin.ADMIN  # the administrator bypasses the rules


# -- ownership (ST-23, WIP-71) ---------------------------------------------------------------------


async def test_host_cannot_delete_or_edit_another_hosts_mapping(core: SharingManager) -> None:
    """ST-23 (T-IGD-21): B deleting or editing A's mapping is 606; A's mapping stays."""
    await core.add_mapping(req(40001), UPNP_A)
    before = snapshot(core)
    with pytest.raises(NotAuthorizedError):
        await core.remove_mapping(key(40001), UPNP_B)
    with pytest.raises(NotAuthorizedError):
        await core.remove_mapping(key(40001), NATPMP_B)
    with pytest.raises(NotAuthorizedError):
        await core.edit_mapping(key(40001), UPNP_B, description="mine now")
    with pytest.raises(NotAuthorizedError):
        await core.set_mapping_enabled(key(40001), False, UPNP_B)
    assert snapshot(core) == before
    removed = await core.remove_mapping(key(40001), UPNP_A)
    assert removed == before.table[0]
    assert core.mapping_count == 0


async def test_protocol_clients_never_touch_admin_mappings(core: SharingManager) -> None:
    """WIP-71: an administrator's mapping to A is not A's to delete."""
    await core.add_connection_mapping(core.find_connection(name="wan0").guid, req(40001))
    with pytest.raises(NotAuthorizedError):
        await core.remove_mapping(key(40001), UPNP_A)
    with pytest.raises(NotAuthorizedError):
        await core.edit_mapping(key(40001), UPNP_A, internal_port=40002)
    assert core.mapping_count == 1
    await core.remove_mapping(key(40001))
    assert core.mapping_count == 0


async def test_remove_missing_mapping(core: SharingManager) -> None:
    """WIP-28 (T-IGD-20): deleting twice is 714 the second time."""
    await core.add_mapping(req(40001), UPNP_A)
    await core.remove_mapping(key(40001), UPNP_A)
    with pytest.raises(MappingNotFoundError):
        await core.remove_mapping(key(40001), UPNP_A)
    with pytest.raises(MappingNotFoundError):
        await core.remove_mapping(key(40001, UDP), UPNP_A)


async def test_edit_by_owner(core: SharingManager, backend: MemoryBackend) -> None:
    m = await core.add_mapping(req(40001, lease=3600), UPNP_A)
    events = core.events()
    before = core.system_update_id
    same = await core.edit_mapping(key(40001), UPNP_A, description="")
    assert same == m
    assert core.system_update_id == before
    edited = await core.edit_mapping(key(40001), UPNP_A, internal_port=40005, description="x")
    assert edited == replace(m, internal_port=40005, description="x")
    assert backend.mappings == {edited.key: edited}
    assert core.system_update_id == before + 1
    disabled = await core.set_mapping_enabled(key(40001), False, UPNP_A)
    assert backend.mappings == {}
    assert core.mapping_count == 1
    assert await drain(events) == [
        MappingChanged(m, edited, "edited"),
        MappingChanged(edited, disabled, "disabled"),
    ]


async def test_range_delete_removes_only_the_callers_mappings(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """WIP-31 / ST-23 (T-IGD-33/35): only A's TCP mappings in range go; one event, one update."""
    for port in (40200, 40202, 40204):
        await core.add_mapping(req(port), UPNP_A)
    for port in (40201, 40203):
        await core.add_mapping(req(port, internal_client=LAN_HOST2), UPNP_B)
    await core.add_mapping(req(40205, protocol=UDP), UPNP_A)
    await core.add_mapping(req(40211), UPNP_A)
    events = core.events()
    before = core.system_update_id
    removed = await core.remove_mappings_in_range(40200, 40210, TCP, UPNP_A)
    assert [m.external_port for m in removed] == [40200, 40202, 40204]
    assert [(m.protocol, m.external_port) for m in core.mappings()] == [
        (TCP, 40201),
        (TCP, 40203),
        (TCP, 40211),
        (UDP, 40205),
    ]
    assert backend.mappings == active(core)
    assert core.system_update_id == before + 1  # WIP-62: once per change
    assert await drain(events) == [
        *(MappingRemoved(m, RemovalReason.DELETED) for m in removed),
        NumberOfEntriesChanged(4),
    ]


async def test_range_delete_with_nothing_of_the_callers_is_not_found(
    core: SharingManager,
) -> None:
    """WIP-31 (730, T-IGD-32/33): B's mappings in range do not count; nothing changes."""
    await core.add_mapping(req(40201, internal_client=LAN_HOST2), UPNP_B)
    before = snapshot(core)
    with pytest.raises(MappingNotFoundError):
        await core.remove_mappings_in_range(40200, 40210, TCP, UPNP_A)
    with pytest.raises(MappingNotFoundError):
        await core.remove_mappings_in_range(40200, 40210, UDP, UPNP_B)
    with pytest.raises(MappingNotFoundError):
        await core.remove_mappings_in_range(1, 65535, None, UPNP_A)
    with pytest.raises(InvalidPortError):  # WIP-31: 733
        await core.remove_mappings_in_range(40210, 40200, TCP, UPNP_B)
    assert snapshot(core) == before


async def test_range_delete_over_both_protocols(core: SharingManager) -> None:
    await core.add_mapping(req(40300), UPNP_A)
    await core.add_mapping(req(40300, protocol=UDP), UPNP_A)
    removed = await core.remove_mappings_in_range(40300, 40300, None, UPNP_A)
    assert {m.protocol for m in removed} == {TCP, UDP}
    assert core.mapping_count == 0


async def test_range_delete_is_atomic(core: SharingManager, backend: MemoryBackend) -> None:
    """WIP-31: the range delete is one change; a backend failure leaves every mapping."""
    for port in (40200, 40201, 40202):
        await core.add_mapping(req(port), UPNP_A)
    before = snapshot(core)
    events = core.events()
    backend.fail_next = 1
    with pytest.raises(BackendError):
        await core.remove_mappings_in_range(40200, 40210, TCP, UPNP_A)
    assert snapshot(core) == before
    assert await drain(events) == []
    assert len(await core.remove_mappings_in_range(40200, 40210, TCP, UPNP_A)) == 3


async def test_backend_failure_on_add_changes_nothing(
    core: SharingManager, backend: MemoryBackend
) -> None:
    await core.add_mapping(req(40001), UPNP_A)
    before = snapshot(core)
    events = core.events()
    backend.fail_next = 1
    with pytest.raises(BackendError):
        await core.add_mapping(req(40002), UPNP_A)
    assert snapshot(core) == before
    assert await drain(events) == []


# -- AddAnyPortMapping (WIP-25/26/27) -------------------------------------------------------------


async def test_add_any_keeps_a_free_wanted_port(core: SharingManager) -> None:
    """WIP-25 (T-IGD-26)."""
    m = await core.add_any_mapping(req(40020), UPNP_A)
    assert m.external_port == 40020


async def test_add_any_on_a_taken_port_gets_the_nearest_free_one(core: SharingManager) -> None:
    """WIP-25 (T-IGD-27): B holds 40021; A gets another port >= 1024 (nearest, ties higher)."""
    await core.add_mapping(req(40021, internal_client=LAN_HOST2), UPNP_B)
    m = await core.add_any_mapping(req(40021), UPNP_A)
    assert m.external_port == 40022
    await core.add_mapping(req(40023, internal_client=LAN_HOST2), UPNP_B)
    m2 = await core.add_any_mapping(req(40021, internal_port=40021), UPNP_A)
    assert m2.external_port == 40020
    assert core.mapping(key(40022)).internal_client == LAN_HOST
    assert core.mapping(key(40021)).internal_client == LAN_HOST2


async def test_add_any_repeating_its_own_tuple_overwrites(core: SharingManager) -> None:
    """WIP-25 (T-IGD-28): same P+EP+RH+IC keeps the port (ReservedPort = ExternalPort)."""
    first = await core.add_any_mapping(req(40020, lease=60), UPNP_A)
    again = await core.add_any_mapping(req(40020, lease=120), UPNP_A)
    assert again.external_port == 40020
    assert again.created_at == first.created_at
    assert core.mapping_count == 1


async def test_add_any_port_zero_allocates(core: SharingManager) -> None:
    """WIP-26 (T-IGD-29): 0 means "any port"; a free one >= 1024 is returned."""
    m = await core.add_any_mapping(req(0, internal_port=40030), UPNP_A)
    assert m.external_port == 40030
    m2 = await core.add_any_mapping(req(0, internal_port=40030), UPNP_A)
    assert m2.external_port == 40031
    assert core.mapping_count == 2


async def test_add_any_on_a_privileged_port_moves_to_1024(core: SharingManager) -> None:
    """WIP-26 / WIP-72: a wanted port the rules refuse is replaced by an allowed free one."""
    m = await core.add_any_mapping(req(80, internal_port=40040), UPNP_A)
    assert m.external_port == 1024


async def test_add_any_with_a_refused_internal_port_is_not_authorized(
    core: SharingManager,
) -> None:
    """WIP-27 / ST-21: no rule allows internal port 22 on any external port: 606, no change."""
    before = snapshot(core)
    with pytest.raises(NotAuthorizedError):
        await core.add_any_mapping(req(40022, internal_port=22), UPNP_A)
    with pytest.raises(NotAuthorizedError):
        await core.add_any_mapping(req(0, internal_port=3389), UPNP_A)
    assert snapshot(core) == before


# -- NAT-PMP style delete-all (ST-29) ------------------------------------------------------------


async def test_remove_owned_per_protocol_and_mechanism(core: SharingManager) -> None:
    """ST-29: lifetime 0 + private port 0 deletes only the requester's NAT-PMP mappings."""
    await core.add_mapping(req(40001, protocol=UDP), NATPMP_A)
    await core.add_mapping(req(40002, protocol=UDP), NATPMP_A)
    await core.add_mapping(req(40003, protocol=TCP), NATPMP_A)
    await core.add_mapping(req(40004, protocol=UDP), UPNP_A)
    await core.add_mapping(req(40005, protocol=UDP, internal_client=LAN_HOST2), NATPMP_B)
    events = core.events()
    before = core.system_update_id
    removed = await core.remove_owned(NATPMP_A, UDP, Origin.NATPMP)
    assert [(m.protocol, m.external_port) for m in removed] == [(UDP, 40001), (UDP, 40002)]
    assert [m.external_port for m in core.mappings()] == [40003, 40004, 40005]
    assert core.system_update_id == before + 1
    assert await drain(events) == [
        MappingRemoved(removed[0], RemovalReason.DELETED),
        MappingRemoved(removed[1], RemovalReason.DELETED),
        NumberOfEntriesChanged(3),
    ]
    again = core.events()
    assert await core.remove_owned(NATPMP_A, UDP, Origin.NATPMP) == ()
    assert core.system_update_id == before + 1
    assert await drain(again) == []
    removed_all = await core.remove_owned(NATPMP_A)
    assert [m.external_port for m in removed_all] == [40003, 40004]
    assert [m.external_port for m in core.mappings()] == [40005]


async def test_remove_owned_needs_an_address(core: SharingManager) -> None:
    with pytest.raises(NotAuthorizedError):
        await core.remove_owned(Client(Origin.NATPMP, None))


# -- leases (WIP-12/14, ST-27) --------------------------------------------------------------------


async def test_leases_expire_exactly(
    core: SharingManager, backend: MemoryBackend, clock: FakeClock
) -> None:
    """WIP-14 / ST-27 (T-IGD-22): at the deadline the mapping, its rule and the count go."""
    short = await core.add_mapping(req(40001, lease=30), UPNP_A)
    long = await core.add_mapping(req(40002, lease=90), UPNP_A)
    permanent = await core.add_mapping(req(40003), UPNP_A)
    events = core.events()
    before = core.system_update_id
    clock.advance(30)
    await wait_until_count(core, 2)
    assert list(core.mappings()) == [long, permanent]
    assert backend.mappings == {long.key: long, permanent.key: permanent}
    assert core.system_update_id == before + 1
    assert long.remaining(clock()) == 60
    clock.advance(1000)
    await wait_until_count(core, 1)
    assert list(core.mappings()) == [permanent]
    assert backend.mappings == {permanent.key: permanent}
    assert await drain(events) == [
        MappingRemoved(short, RemovalReason.EXPIRED),
        NumberOfEntriesChanged(2),
        MappingRemoved(long, RemovalReason.EXPIRED),
        NumberOfEntriesChanged(1),
    ]


async def test_refresh_postpones_expiry(core: SharingManager, clock: FakeClock) -> None:
    """ST-27: a refresh extends the lease; the old deadline passes harmlessly."""
    await core.add_mapping(req(40001, lease=30), UPNP_A)
    await core.add_mapping(req(40002, lease=40), UPNP_A)  # a sentinel that expires later
    clock.advance(20)
    refreshed = await core.add_mapping(req(40001, lease=30), UPNP_A)
    clock.advance(20)  # past 40001's old deadline and the sentinel's
    await wait_until_count(core, 1)
    assert list(core.mappings()) == [refreshed]
    clock.advance(10)
    await wait_until_count(core, 0)


async def test_protocol_leases_are_clamped(core: SharingManager, clock: FakeClock) -> None:
    """WIP-12 / ST-27 (T-IGD-14): > 604800 is clamped for protocol clients, not the admin."""
    m = await core.add_mapping(req(40001, lease=10**7), UPNP_A)
    assert m.expires_at == clock() + MAX_LEASE
    n = await core.add_mapping(req(40002, lease=10**7), NATPMP_A)
    assert n.expires_at == clock() + MAX_LEASE
    admin = await core.add_connection_mapping(
        core.find_connection(name="wan0").guid, req(40003, lease=10**7)
    )
    assert admin.expires_at == clock() + 10**7


async def test_configured_max_lease_clamps() -> None:
    clock = FakeClock()
    async with open_core(PolicyConfig(max_lease=120.0), clock) as core:
        m = await core.add_mapping(req(40001, lease=3600), UPNP_A)
        assert m.expires_at == clock() + 120
        clock.advance(120)
        await wait_until_count(core, 0)


# -- SystemUpdateID and event order (WIP-61/62) ---------------------------------------------------


async def test_system_update_id_moves_once_per_change(
    core: SharingManager, clock: FakeClock
) -> None:
    """WIP-62: +1 per change that touches mappings, however many; 0 for refusals and no-ops."""
    start = core.system_update_id
    for port in (40001, 40002, 40003):
        await core.add_mapping(req(port, lease=10), UPNP_A)
    assert core.system_update_id == start + 3
    with pytest.raises(ConflictError):
        await core.add_mapping(req(40001, internal_client=LAN_HOST2), UPNP_B)
    await core.edit_mapping(key(40001), UPNP_A)  # nothing to change
    assert core.system_update_id == start + 3
    await core.remove_mappings_in_range(40001, 40003, TCP, UPNP_A)
    assert core.system_update_id == start + 4
    for port in (40001, 40002):
        await core.add_mapping(req(port, lease=10), UPNP_A)
    clock.advance(10)
    await wait_until_count(core, 0)
    assert core.system_update_id == start + 7  # both leases ended in one sweep


async def test_events_follow_the_order_of_changes(core: SharingManager) -> None:
    """WIP-61: each change's events, then the new count, in commit order."""
    events = core.events()
    a = await core.add_mapping(req(40001), UPNP_A)
    b = await core.add_mapping(req(40002), UPNP_A)
    await core.remove_mapping(a.key, UPNP_A)
    assert await drain(events) == [
        MappingAdded(a),
        NumberOfEntriesChanged(1),
        MappingAdded(b),
        NumberOfEntriesChanged(2),
        MappingRemoved(a, RemovalReason.DELETED),
        NumberOfEntriesChanged(1),
    ]


async def test_positional_reads_through_the_core(core: SharingManager) -> None:
    """WIP-29/30: GetGenericPortMappingEntry sees every mechanism's mappings in key order."""
    await core.add_mapping(req(40003, protocol=UDP), UPNP_A)
    await core.add_mapping(req(40002), NATPMP_A)
    await core.add_connection_mapping(core.find_connection(name="wan0").guid, req(40001))
    ordered = list(core.mappings())
    assert [(m.protocol, m.external_port) for m in ordered] == [
        (TCP, 40001),
        (TCP, 40002),
        (UDP, 40003),
    ]
    assert [core.mapping_at(i) for i in range(3)] == ordered
    with pytest.raises(IndexOutOfRangeError):
        core.mapping_at(3)
    assert list(core.mappings_in_range(40002, 40003)) == ordered[1:]
    assert list(core.mappings_in_range(40000, 40010, UDP)) == ordered[2:]


# -- bad input (WIP-17..21, ST-26) ----------------------------------------------------------------


def bad_requests() -> list[Any]:
    return [
        pytest.param(req(0), InvalidPortError, id="external-0"),
        pytest.param(replace(req(), external_port=65536), InvalidPortError, id="external-65536"),
        pytest.param(replace(req(), external_port=-1), InvalidPortError, id="external--1"),
        pytest.param(req(internal_port=0), InvalidPortError, id="internal-0"),
        pytest.param(req(internal_port=65536), InvalidPortError, id="internal-65536"),
        pytest.param(req(internal_port=-1), InvalidPortError, id="internal--1"),
        pytest.param(req(description="x\nTCP:22"), InvalidDescriptionError, id="newline"),
        pytest.param(req(description="x" * 300), InvalidDescriptionError, id="300-bytes"),
        pytest.param(req(lease=0), InvalidRequestError, id="lease-0"),
        pytest.param(req(lease=-1), InvalidRequestError, id="lease-negative"),
    ]


@pytest.mark.parametrize(("request_", "error"), bad_requests())
async def test_bad_input_changes_nothing(
    core: SharingManager, request_: MappingRequest, error: type[InvalidRequestError]
) -> None:
    """WIP-17/19/21 / ST-26: refused before anything is looked at; table, backend, events intact."""
    await core.add_mapping(req(40001), UPNP_A)
    before = snapshot(core)
    events = core.events()
    with pytest.raises(error):
        await core.add_mapping(request_, UPNP_A)
    if request_.external_port != 0:
        with pytest.raises(error):
            await core.add_any_mapping(request_, UPNP_A)
    with pytest.raises(error):
        await core.add_connection_mapping(core.find_connection(name="wan0").guid, request_)
    assert snapshot(core) == before
    assert await drain(events) == []


async def test_add_any_bad_ports(core: SharingManager) -> None:
    for bad in (-1, 65536):
        with pytest.raises(InvalidPortError):
            await core.add_any_mapping(replace(req(), external_port=bad), UPNP_A)
    with pytest.raises(InvalidPortError):
        await core.add_any_mapping(req(0, internal_port=0), UPNP_A)
    assert core.mapping_count == 0


async def test_bad_edits_change_nothing(core: SharingManager) -> None:
    await core.add_mapping(req(40001), UPNP_A)
    before = snapshot(core)
    with pytest.raises(InvalidPortError):
        await core.edit_mapping(key(40001), UPNP_A, internal_port=0)
    with pytest.raises(InvalidPortError):
        await core.edit_mapping(key(40001), UPNP_A, internal_port=65536)
    with pytest.raises(InvalidDescriptionError):
        await core.edit_mapping(key(40001), UPNP_A, description="a\rb")
    with pytest.raises(InvalidDescriptionError):
        await core.edit_mapping(key(40001), UPNP_A, description="é" * 129)
    with pytest.raises(NotAuthorizedError):  # ST-21: internal 22 by an edit
        await core.edit_mapping(key(40001), UPNP_A, internal_port=22)
    with pytest.raises(NotAuthorizedError):  # ST-18: retarget to B by an edit
        await core.edit_mapping(key(40001), UPNP_A, internal_client=LAN_HOST2)
    assert snapshot(core) == before


@pytest.mark.parametrize("protocol", ["TCP", "tcp", "ICMP", 6])
async def test_protocol_must_be_an_ipprotocol(core: SharingManager, protocol: object) -> None:
    """WIP-20: a protocol that is not an IPProtocol member is an InvalidProtocolError (601).

    Front-ends should parse with IPProtocol.parse, but the core validates a request itself
    (check_request) and must not let a raw "TCP" or 6 reach the table, store or backend.
    """
    before = snapshot(core)
    events = core.events()
    bad = replace(req(40001), protocol=cast(IPProtocol, protocol))
    outcome: BaseException | None = None
    try:
        await core.add_mapping(bad, UPNP_A)
    except Exception as exc:
        outcome = exc
    after = snapshot(core)
    seen = await drain(events)
    # The core must still work afterwards (and leave a healthy worker for teardown).
    await core.add_mapping(req(40002), UPNP_A)
    assert after == before
    assert seen == []
    assert isinstance(outcome, InvalidProtocolError), f"got {outcome!r}"


# -- reserved ports (ST-22) and quotas (ST-24) ----------------------------------------------------


async def test_reserved_ports_are_refused() -> None:
    """ST-22: the gateway's own service port is 729 for add, avoided by add-any."""
    policy = PolicyConfig(reserved_ports=frozenset({(TCP, 5555)}))
    async with open_core(policy) as core:
        with pytest.raises(ConflictWithOtherMechanismError):
            await core.add_mapping(req(5555), UPNP_A)
        with pytest.raises(ConflictWithOtherMechanismError):
            await core.add_connection_mapping(core.find_connection(name="wan0").guid, req(5555))
        assert core.mapping_count == 0
        m = await core.add_any_mapping(req(5555), UPNP_A)
        assert m.external_port == 5556
        m2 = await core.add_any_mapping(req(0, internal_port=5555), UPNP_A)
        assert m2.external_port == 5554
        udp = await core.add_mapping(req(5555, protocol=UDP), UPNP_A)
        assert udp.external_port == 5555


async def test_per_client_quota() -> None:
    """ST-24 (728): the per-client cap refuses new mappings, not refreshes; others unaffected."""
    async with open_core(PolicyConfig(quota_per_client=2)) as core:
        await core.add_mapping(req(40001), UPNP_A)
        await core.add_mapping(req(40002), NATPMP_A)
        before = snapshot(core)
        with pytest.raises(QuotaExceededError):
            await core.add_mapping(req(40003), UPNP_A)
        with pytest.raises(QuotaExceededError):
            await core.add_any_mapping(req(0, internal_port=40003), UPNP_A)
        assert snapshot(core) == before
        await core.add_mapping(req(40001, lease=60), UPNP_A)  # a refresh is not a new mapping
        await core.add_mapping(req(40003, internal_client=LAN_HOST2), UPNP_B)
        await core.remove_mapping(key(40002), NATPMP_A)
        await core.add_mapping(req(40004), UPNP_A)
        assert core.owned_by(LAN_HOST) == (core.mapping(key(40001)), core.mapping(key(40004)))


async def test_overwrite_that_changes_the_owner_counts_against_the_quota() -> None:
    """ST-24: taking over a mapping (WIP-71 lets A overwrite one B made for A) is a new one for A.

    With secure mode off, B may create mappings pointing at A (counted against B's quota). A's
    "refresh" of such a mapping moves its ownership to A, so it must pass A's quota check;
    otherwise A ends up owning more than quota_per_client mappings.
    """
    policy = PolicyConfig(secure_mode=False, quota_per_client=2)
    async with open_core(policy) as core:
        await core.add_mapping(req(40001), UPNP_A)
        await core.add_mapping(req(40002), UPNP_A)
        await core.add_mapping(req(40003), UPNP_B)  # B's mapping, pointing at A
        before = snapshot(core)
        outcome: BaseException | None = None
        try:
            await core.add_mapping(req(40003), UPNP_A)  # A takes it over
        except NatError as exc:
            outcome = exc
        assert core.table.count_for_owner(LAN_HOST) <= 2
        assert isinstance(outcome, QuotaExceededError), f"got {outcome!r}"
        assert snapshot(core) == before


async def test_table_cap() -> None:
    """ST-24: the table-wide cap holds for the administrator too."""
    async with open_core(PolicyConfig(max_mappings=2)) as core:
        await core.add_mapping(req(40001), UPNP_A)
        await core.add_mapping(req(40002, internal_client=LAN_HOST2), UPNP_B)
        with pytest.raises(QuotaExceededError):
            await core.add_mapping(req(40003), UPNP_A)
        with pytest.raises(QuotaExceededError):
            await core.add_connection_mapping(core.find_connection(name="wan0").guid, req(40004))
        assert core.mapping_count == 2


# -- concurrent changes (group commit) -------------------------------------------------------------


async def test_concurrent_changes_run_in_order_and_count_once_each(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """WIP-62: changes batched together still bump SystemUpdateID once per change; a refused
    change in the batch fails alone."""
    events = core.events()
    before = core.system_update_id
    results = await asyncio.gather(
        core.add_mapping(req(40001), UPNP_A),
        core.add_mapping(req(40001, internal_client=LAN_HOST2), UPNP_B),
        core.add_mapping(req(40002), UPNP_A),
        return_exceptions=True,
    )
    first, refused, second = results
    assert isinstance(first, Mapping)
    assert isinstance(second, Mapping)
    assert type(refused) is ConflictError
    assert core.system_update_id == before + 2
    assert backend.mappings == {first.key: first, second.key: second}
    assert await drain(events) == [
        MappingAdded(first),
        NumberOfEntriesChanged(1),
        MappingAdded(second),
        NumberOfEntriesChanged(2),
    ]


async def test_concurrent_remove_and_add_of_one_port(core: SharingManager) -> None:
    await core.add_mapping(req(40001), UPNP_A)
    removed, added = await asyncio.gather(
        core.remove_mapping(key(40001), UPNP_A),
        core.add_mapping(req(40001, internal_client=LAN_HOST2), UPNP_B),
    )
    assert removed.owner == LAN_HOST
    assert core.mapping(key(40001)) == added
    assert added.owner == LAN_HOST2


async def test_change_cancelled_before_pickup_is_withdrawn(core: SharingManager) -> None:
    """A caller cancelled before its change is picked up withdraws it."""
    task = asyncio.create_task(core.add_mapping(req(40001), UPNP_A))
    await asyncio.sleep(0)  # the task submits its change; the worker has not run yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await core.add_mapping(req(40002), UPNP_A)  # the worker has drained the queue by now
    assert [m.external_port for m in core.mappings()] == [40002]


# -- unsharing the public connection (S5) ---------------------------------------------------------


async def test_no_public_connection_refuses_adds(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """S5 / R11: unsharing the public connection takes its protocol mappings with it."""
    await core.add_mapping(req(40001), UPNP_A)
    await core.disable_sharing(core.find_connection(name="wan0").guid)
    assert core.mapping_count == 0
    assert backend.mappings == {}
    with pytest.raises(ConnectionNotFoundError):
        await core.add_mapping(req(40001), UPNP_A)
    assert core.mapping_count == 0


async def test_st_22_ports_with_a_local_listener_are_not_mapped(clock: FakeClock) -> None:
    """ST-22: a port a gateway service listens on is refused (729) or skipped by AddAny; a port
    already held by a mapping stays refreshable even if the backend itself listens on it."""
    listening = {IPProtocol.TCP: {7000, 7100}, IPProtocol.UDP: set[int]()}
    core = await SharingManager.open(
        backend=MemoryBackend(),
        store=MemoryStore(),
        source=StaticConnectionSource(lab_connections()),
        clock=clock,
        resolver=fake_resolver,
        local_ports=lambda protocol: listening[protocol],
    )
    try:
        await core.share(core.find_connection(name="wan0"), core.find_connection(name="lan0"))
        client = Client(Origin.UPNP, LAN_HOST)
        with pytest.raises(ConflictWithOtherMechanismError, match="in use on the gateway"):
            await core.add_mapping(MappingRequest(IPProtocol.TCP, 7000, LAN_HOST, 7000), client)
        assert core.mapping_count == 0
        other = await core.add_any_mapping(
            MappingRequest(IPProtocol.TCP, 7000, LAN_HOST, 7000), client
        )
        assert other.external_port == 7001
        udp = await core.add_mapping(MappingRequest(IPProtocol.UDP, 7000, LAN_HOST, 7000), client)
        assert udp.external_port == 7000
        held = await core.add_mapping(MappingRequest(IPProtocol.TCP, 7200, LAN_HOST, 7200), client)
        listening[IPProtocol.TCP].add(7200)  # e.g. the userspace relay now listens on it
        refreshed = await core.add_mapping(
            MappingRequest(IPProtocol.TCP, 7200, LAN_HOST, 7200, lease=60), client
        )
        assert refreshed.key == held.key
    finally:
        await core.aclose()
