"""NAT-PMP semantics end to end over the core (memory backend, fake clock): specs.md 3, 7.9, ST-29.

`core` (conftest) has wan0 198.19.0.1/24 public and lan0 198.18.0.1/24 private. 198.19.0.1 is a
benchmarking (reserved) address, so most tests allow a private external address (WIP-03).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from support import LAN_GATEWAY, LAN_HOST, LAN_HOST2, WAN_ADDRESS, FakeClock

import igd.natpmp.handler as handler_module
from igd.natcore import (
    BackendError,
    Client,
    ConflictError,
    ConnectionNotFoundError,
    InvalidPortError,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingNotFoundError,
    MappingRequest,
    NotAuthorizedError,
    ObjectNoLongerValidError,
    Origin,
    PermissionRule,
    PolicyConfig,
    QuotaExceededError,
    SharingManager,
    is_reportable_external,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.natpmp import (
    DEFAULT_MAX_LIFETIME_S,
    ExternalAddressRequest,
    ExternalAddressResponse,
    MapRequest,
    MapResponse,
    NatPmpHandler,
    Opcode,
    ResultCode,
    description_for,
    pull_response,
    push_request,
    result_for,
)

TCP, UDP = IPProtocol.TCP, IPProtocol.UDP
LAN = IPv4Network("198.18.0.0/24")
EPOCH_AGE_S = 100
UPNP_A = Client(Origin.UPNP, LAN_HOST)
UPNP_B = Client(Origin.UPNP, LAN_HOST2)
GOLDEN = Path(__file__).parent / "natpmp_golden"


@pytest.fixture
def handler(core: SharingManager, clock: FakeClock) -> NatPmpHandler:
    return NatPmpHandler(
        core,
        epoch_origin=clock.now - EPOCH_AGE_S,
        clock=clock,
        lan_networks=[LAN],
        allow_private_external=True,
    )


async def ask(
    handler: NatPmpHandler,
    data: bytes,
    source: IPv4Address | str = LAN_HOST,
    *,
    port: int = 40000,
    destination: IPv4Address | None = LAN_GATEWAY,
) -> bytes | None:
    return await handler.handle(data, (str(source), port), destination=destination)


def udp(internal: int, suggested: int | None = None, lifetime: int = 7200) -> bytes:
    return push_request(
        MapRequest(Opcode.MAP_UDP, internal, internal if suggested is None else suggested, lifetime)
    )


def tcp(internal: int, suggested: int | None = None, lifetime: int = 7200) -> bytes:
    return push_request(
        MapRequest(Opcode.MAP_TCP, internal, internal if suggested is None else suggested, lifetime)
    )


async def map_ok(
    handler: NatPmpHandler, data: bytes, source: IPv4Address = LAN_HOST
) -> MapResponse:
    """Send a map request, expect a 16-byte SUCCESS answer."""
    response = await ask(handler, data, source)
    assert response is not None
    assert len(response) == 16
    parsed = pull_response(response)
    assert isinstance(parsed, MapResponse)
    assert parsed.result is ResultCode.SUCCESS, parsed
    return parsed


async def map_result(
    handler: NatPmpHandler, data: bytes, source: IPv4Address = LAN_HOST
) -> MapResponse:
    response = await ask(handler, data, source)
    assert response is not None
    assert len(response) == 16
    parsed = pull_response(response)
    assert isinstance(parsed, MapResponse)
    return parsed


def epoch_bytes(value: int = EPOCH_AGE_S) -> bytes:
    return struct.pack("!I", value)


def natpmp(core: SharingManager, owner: IPv4Address = LAN_HOST) -> list[Mapping]:
    return [m for m in core.owned_by(owner) if m.origin is Origin.NATPMP]


def upnp_request(
    port: int,
    internal_port: int | None = None,
    *,
    target: IPv4Address = LAN_HOST,
    protocol: IPProtocol = UDP,
) -> MappingRequest:
    return MappingRequest(
        protocol=protocol,
        external_port=port,
        internal_client=target,
        internal_port=port if internal_port is None else internal_port,
        description="upnp",
        lease=3600,
    )


# ---- opcode 0 and the epoch (PMP-08/10/27, WIP-03) ---------------------------------------------


async def test_external_address_t_pmp_01(handler: NatPmpHandler) -> None:
    response = await ask(handler, bytes.fromhex("0000"))
    assert response == bytes.fromhex("00800000") + epoch_bytes() + WAN_ADDRESS.packed


async def test_golden_natpmpc_address_request(handler: NatPmpHandler) -> None:
    data = (GOLDEN / "natpmpc-20150609-external-address.bin").read_bytes()
    assert (
        await ask(handler, data) == bytes.fromhex("00800000") + epoch_bytes() + WAN_ADDRESS.packed
    )


async def test_reserved_external_address_is_not_reported_unless_allowed(
    core: SharingManager, clock: FakeClock
) -> None:
    """WIP-03 analogue: 198.19.0.1 is a benchmarking address -> result 3, address 0."""
    strict = NatPmpHandler(core, epoch_origin=clock.now, clock=clock, lan_networks=[LAN])
    response = await ask(strict, bytes.fromhex("0000"))
    assert response == bytes.fromhex("00800003") + epoch_bytes(0) + bytes(4)
    assert strict.announcement() == response


def test_reportable_external_addresses() -> None:
    for text in ("10.0.0.1", "192.168.1.1", "100.64.0.1", "198.19.0.1", "169.254.1.1", "0.0.0.0"):
        assert not is_reportable_external(IPv4Address(text), allow_private=False)
        assert is_reportable_external(IPv4Address(text), allow_private=True)
    assert is_reportable_external(IPv4Address("8.8.8.8"), allow_private=False)


async def test_no_external_address_gives_3_t_pmp_22(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    await core.disable_sharing(core.find_connection(name="wan0").guid)
    assert core.external_address is None
    response = await ask(handler, bytes.fromhex("0000"))
    assert response == bytes.fromhex("00800003") + epoch_bytes() + bytes(4)
    parsed = await map_result(handler, udp(40001))
    assert parsed == MapResponse(
        Opcode.MAP_UDP, ResultCode.NETWORK_FAILURE, EPOCH_AGE_S, 40001, 0, 0
    )


async def test_epoch_counts_seconds_t_pmp_02(handler: NatPmpHandler, clock: FakeClock) -> None:
    clock.advance(3.7)
    response = await ask(handler, bytes.fromhex("0000"))
    assert response is not None
    assert response[4:8] == epoch_bytes(EPOCH_AGE_S + 3)


def test_epoch_wraps_and_never_goes_negative(handler: NatPmpHandler, clock: FakeClock) -> None:
    handler.epoch_origin = clock.now - 2**32 - 5
    assert handler.epoch() == 5
    handler.epoch_origin = clock.now + 10  # the wall clock stepped back
    assert handler.epoch() == 0


def test_reset_epoch_starts_again_from_zero(handler: NatPmpHandler, clock: FakeClock) -> None:
    """PMP-09: the epoch resets when state is lost; otherwise it keeps counting."""
    assert handler.epoch() == EPOCH_AGE_S
    handler.reset_epoch()
    assert handler.epoch() == 0
    clock.advance(42)
    assert handler.epoch() == 42
    handler.reset_epoch(clock.now - 7)
    assert handler.epoch() == 7


def test_announcement_is_the_address_response(handler: NatPmpHandler) -> None:
    """PMP-11: the unsolicited opcode-128 response, epoch and address included."""
    data = handler.announcement()
    assert pull_response(data) == ExternalAddressResponse(
        ResultCode.SUCCESS, EPOCH_AGE_S, WAN_ADDRESS
    )


# ---- creating mappings (PMP-14..19, ST-29) -----------------------------------------------------


async def test_map_udp_t_pmp_03(
    handler: NatPmpHandler, core: SharingManager, clock: FakeClock
) -> None:
    response = await ask(handler, udp(40001))
    assert response == bytes.fromhex("00810000") + epoch_bytes() + bytes.fromhex("9c419c4100001c20")
    mapping = core.mapping(MappingKey(UDP, 40001))
    assert mapping.origin is Origin.NATPMP
    assert mapping.owner == LAN_HOST
    assert mapping.internal_client == LAN_HOST
    assert mapping.internal_port == 40001
    assert mapping.description == "NAT-PMP UDP 40001" == description_for(UDP, 40001)
    assert mapping.expires_at == clock.now + 7200


async def test_golden_natpmpc_map_requests(handler: NatPmpHandler, core: SharingManager) -> None:
    udp_request = (GOLDEN / "natpmpc-20150609-map-udp-40001-7200.bin").read_bytes()
    tcp_request = (GOLDEN / "natpmpc-20150609-map-tcp-40002-to-41002-3600.bin").read_bytes()
    assert await map_ok(handler, udp_request) == MapResponse(
        Opcode.MAP_UDP, ResultCode.SUCCESS, EPOCH_AGE_S, 40001, 40001, 7200
    )
    assert await map_ok(handler, tcp_request) == MapResponse(
        Opcode.MAP_TCP, ResultCode.SUCCESS, EPOCH_AGE_S, 40002, 41002, 3600
    )
    assert core.mapping(MappingKey(TCP, 41002)).internal_port == 40002


async def test_tcp_is_independent_of_udp_t_pmp_04(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    await map_ok(handler, udp(40001))
    parsed = await map_ok(handler, tcp(40001))
    assert parsed.opcode is Opcode.MAP_TCP
    assert parsed.external_port == 40001
    assert {(m.protocol, m.external_port) for m in natpmp(core)} == {(UDP, 40001), (TCP, 40001)}


async def test_mapping_always_targets_the_source(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    """PMP-14, ST-29: no third-party mappings; the source is the internal client and owner."""
    await map_ok(handler, udp(40005), source=LAN_HOST2)
    mapping = core.mapping(MappingKey(UDP, 40005))
    assert (mapping.internal_client, mapping.owner) == (LAN_HOST2, LAN_HOST2)


async def test_ipv4_mapped_source_is_unwrapped(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    response = await ask(handler, udp(40006), f"::ffff:{LAN_HOST}")
    assert response is not None
    assert pull_response(response).result == ResultCode.SUCCESS
    assert core.mapping(MappingKey(UDP, 40006)).internal_client == LAN_HOST


async def test_renewal_returns_the_same_port_t_pmp_05(
    handler: NatPmpHandler, core: SharingManager, clock: FakeClock
) -> None:
    await map_ok(handler, udp(40001))
    created = core.mapping(MappingKey(UDP, 40001))
    clock.advance(3600)
    parsed = await map_ok(handler, udp(40001))
    assert (parsed.external_port, parsed.lifetime) == (40001, 7200)
    renewed = core.mapping(MappingKey(UDP, 40001))
    assert renewed.expires_at == clock.now + 7200
    assert renewed.created_at == created.created_at  # same identity (architecture 4b)
    assert len(natpmp(core)) == 1


async def test_retransmission_with_another_suggestion_t_pmp_06(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    """PMP-17: the port already assigned wins over a new, free, suggestion."""
    first = await map_ok(handler, udp(40020, 41020))
    assert first.external_port == 41020
    second = await map_ok(handler, udp(40020, 41021))
    assert second.external_port == 41020
    assert [m.external_port for m in natpmp(core)] == [41020]


async def test_port_held_by_another_client_t_pmp_07(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    await map_ok(handler, udp(40030), source=LAN_HOST2)
    parsed = await map_ok(handler, udp(40030))
    assert parsed.external_port not in (0, 40030)
    assert parsed.external_port == 40031  # the nearest free port
    assert core.mapping(MappingKey(UDP, 40030)).internal_client == LAN_HOST2


async def test_conflict_with_upnp_offers_another_port_xp_03(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    held = await core.add_mapping(upnp_request(40040, target=LAN_HOST2), UPNP_B)
    parsed = await map_ok(handler, udp(40040))
    assert parsed.external_port != 40040
    assert core.mapping(MappingKey(UDP, 40040)) == held


async def test_own_upnp_mapping_on_the_port_is_not_overwritten(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    """The core would let a client overwrite its own mapping (WIP-11); NAT-PMP must not."""
    held = await core.add_mapping(upnp_request(40041, 50000), UPNP_A)
    parsed = await map_ok(handler, udp(40010, 40041))
    assert parsed.external_port != 40041
    assert core.mapping(MappingKey(UDP, 40041)) == held


async def test_companion_port_is_reserved_t_pmp_08(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    """PMP-18: A holds TCP 40040, so B gets another UDP port, A may still have UDP 40040."""
    await map_ok(handler, tcp(40040))
    other = await map_ok(handler, udp(40040), source=LAN_HOST2)
    assert other.external_port != 40040
    mine = await map_ok(handler, udp(40040))
    assert mine.external_port == 40040


async def test_suggested_zero_uses_the_internal_port_t_pmp_09(handler: NatPmpHandler) -> None:
    parsed = await map_ok(handler, udp(40045, 0))
    assert parsed.external_port == 40045


async def test_disallowed_suggestion_gets_a_high_port(handler: NatPmpHandler) -> None:
    """PMP-16/29: rules allow external 1024-65535, so a suggested 80 becomes the nearest >= 1024."""
    parsed = await map_ok(handler, udp(40046, 80))
    assert parsed.external_port == 1024


async def test_reserved_port_is_avoided_st_22(handler: NatPmpHandler, core: SharingManager) -> None:
    core.set_policy(PolicyConfig(reserved_ports=frozenset({(UDP, 40080)})))
    parsed = await map_ok(handler, udp(40080))
    assert parsed.external_port == 40081


async def test_all_allowed_ports_busy_gives_4(handler: NatPmpHandler, core: SharingManager) -> None:
    """PMP-29: a rule allows one external port only, another client holds it."""
    core.set_policy(PolicyConfig(rules=(PermissionRule.parse("allow 40100 0.0.0.0/0 1024-65535"),)))
    assert (await map_ok(handler, udp(40001, 40100), source=LAN_HOST2)).external_port == 40100
    parsed = await map_result(handler, udp(40002, 40100))
    assert parsed == MapResponse(
        Opcode.MAP_UDP, ResultCode.OUT_OF_RESOURCES, EPOCH_AGE_S, 40002, 0, 0
    )


async def test_refused_internal_port_gives_2(handler: NatPmpHandler, core: SharingManager) -> None:
    """PMP-29: the default rules deny internal port 22 (ST-21)."""
    parsed = await map_result(handler, tcp(22))
    assert parsed == MapResponse(Opcode.MAP_TCP, ResultCode.NOT_AUTHORIZED, EPOCH_AGE_S, 22, 0, 0)
    assert core.mapping_count == 0


async def test_internal_port_zero_with_lifetime_gives_2(handler: NatPmpHandler) -> None:
    """PMP-28."""
    parsed = await map_result(handler, udp(0, 40000, 60))
    assert parsed == MapResponse(Opcode.MAP_UDP, ResultCode.NOT_AUTHORIZED, EPOCH_AGE_S, 0, 0, 0)


async def test_source_outside_the_core_private_segments_gives_2(
    core: SharingManager, clock: FakeClock
) -> None:
    """lan_networks wider than the shared segments: the core refuses the target (ST-19)."""
    wide = NatPmpHandler(
        core,
        epoch_origin=clock.now,
        clock=clock,
        lan_networks=[IPv4Network("198.18.0.0/23")],
        allow_private_external=True,
    )
    parsed = await map_result(wide, udp(40001), IPv4Address("198.18.1.10"))
    assert parsed.result is ResultCode.NOT_AUTHORIZED


async def test_quota_gives_4_st_24(handler: NatPmpHandler, core: SharingManager) -> None:
    core.set_policy(PolicyConfig(quota_per_client=2))
    await map_ok(handler, udp(40001))
    await map_ok(handler, udp(40002))
    parsed = await map_result(handler, udp(40003))
    assert parsed == MapResponse(
        Opcode.MAP_UDP, ResultCode.OUT_OF_RESOURCES, EPOCH_AGE_S, 40003, 0, 0
    )
    await map_ok(handler, udp(40001))  # a renewal is not a new mapping: still fine


async def test_backend_failure_gives_3(handler: NatPmpHandler, backend: MemoryBackend) -> None:
    backend.fail_next = 1
    parsed = await map_result(handler, udp(40001))
    assert parsed.result is ResultCode.NETWORK_FAILURE


# ---- lifetimes (PMP-19/20, ST-29) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (1, 1),
        (7200, 7200),
        (86400, 86400),
        (10_000_000, DEFAULT_MAX_LIFETIME_S),
        (2**32 - 1, 86400),
    ],
)
async def test_lifetime_is_clamped_t_pmp_20(
    handler: NatPmpHandler, core: SharingManager, clock: FakeClock, requested: int, granted: int
) -> None:
    parsed = await map_ok(handler, udp(40001, lifetime=requested))
    assert parsed.lifetime == granted
    assert core.mapping(MappingKey(UDP, 40001)).expires_at == clock.now + granted


async def test_configured_maximum_and_policy_maximum(
    core: SharingManager, clock: FakeClock
) -> None:
    short = NatPmpHandler(
        core,
        epoch_origin=clock.now,
        clock=clock,
        lan_networks=[LAN],
        max_lifetime_s=3600,
        allow_private_external=True,
    )
    assert (await map_ok(short, udp(40001, lifetime=7200))).lifetime == 3600
    core.set_policy(PolicyConfig(max_lease=600))
    assert (await map_ok(short, udp(40002, lifetime=7200))).lifetime == 600


def test_max_lifetime_must_be_positive(core: SharingManager) -> None:
    for bad in (0, -1, 2**32):
        with pytest.raises(ValueError, match="max_lifetime_s"):
            NatPmpHandler(core, epoch_origin=0, lan_networks=[LAN], max_lifetime_s=bad)


async def test_expired_mapping_is_created_again(
    handler: NatPmpHandler, core: SharingManager, clock: FakeClock
) -> None:
    await map_ok(handler, udp(40001, lifetime=10))
    clock.advance(11)
    parsed = await map_ok(handler, udp(40001, lifetime=10))
    assert (parsed.external_port, parsed.lifetime) == (40001, 10)
    assert core.mapping(MappingKey(UDP, 40001)).expires_at == clock.now + 10


async def test_other_mechanism_mapping_is_reported_not_extended(
    handler: NatPmpHandler, core: SharingManager, clock: FakeClock
) -> None:
    """PMP-17: a UPnP mapping for the same internal endpoint answers; its lease is untouched."""
    held = await core.add_mapping(upnp_request(45000, 40090), UPNP_A)
    clock.advance(600)
    parsed = await map_ok(handler, udp(40090))
    assert (parsed.external_port, parsed.lifetime) == (45000, 3000)
    assert core.mapping(MappingKey(UDP, 45000)) == held
    assert natpmp(core) == []


async def test_permanent_mapping_of_another_mechanism_reports_the_granted_lifetime(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    permanent = replace(upnp_request(45001, 40091), lease=None)
    await core.add_mapping(permanent, UPNP_A)
    parsed = await map_ok(handler, udp(40091, lifetime=600))
    assert (parsed.external_port, parsed.lifetime) == (45001, 600)


# ---- deleting (PMP-21..24, ST-29) --------------------------------------------------------------


async def test_delete_t_pmp_10(handler: NatPmpHandler, core: SharingManager) -> None:
    await map_ok(handler, udp(40001))
    expected = bytes.fromhex("00810000") + epoch_bytes() + bytes.fromhex("9c41000000000000")
    assert await ask(handler, udp(40001, 12345, 0)) == expected
    with pytest.raises(MappingNotFoundError):
        core.mapping(MappingKey(UDP, 40001))
    assert await ask(handler, udp(40001, 12345, 0)) == expected  # idempotent


async def test_golden_natpmpc_delete(handler: NatPmpHandler, core: SharingManager) -> None:
    await map_ok(handler, udp(40001))
    data = (GOLDEN / "natpmpc-20150609-delete-udp-40001.bin").read_bytes()
    parsed = await map_ok(handler, data)
    assert (parsed.internal_port, parsed.external_port, parsed.lifetime) == (40001, 0, 0)
    assert core.mapping_count == 0


async def test_delete_all_is_per_protocol_t_pmp_11(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    """PMP-22, ST-29: only the requester's NAT-PMP mappings of that protocol (not MUD-25)."""
    await map_ok(handler, udp(40050))
    await map_ok(handler, udp(40051))
    await map_ok(handler, tcp(40052))
    await map_ok(handler, udp(40053), source=LAN_HOST2)
    upnp = await core.add_mapping(upnp_request(40054), UPNP_A)
    response = await ask(handler, udp(0, 0, 0))
    assert response == bytes.fromhex("00810000") + epoch_bytes() + bytes(8)
    assert [(m.protocol, m.external_port) for m in natpmp(core)] == [(TCP, 40052)]
    assert [m.external_port for m in natpmp(core, LAN_HOST2)] == [40053]
    assert core.mapping(upnp.key) == upnp


async def test_golden_natpmpc_delete_all_tcp(handler: NatPmpHandler, core: SharingManager) -> None:
    await map_ok(handler, udp(40050))
    await map_ok(handler, tcp(40052))
    data = (GOLDEN / "natpmpc-20150609-delete-all-tcp.bin").read_bytes()
    assert (await map_ok(handler, data)).internal_port == 0
    assert [(m.protocol, m.external_port) for m in natpmp(core)] == [(UDP, 40050)]


async def test_delete_of_an_upnp_mapping_gives_2_t_pmp_12(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    """PMP-23/24: NAT-PMP deletes only NAT-PMP mappings (not MUD-31)."""
    upnp = await core.add_mapping(upnp_request(40060), UPNP_A)
    parsed = await map_result(handler, udp(40060, 40060, 0))
    assert parsed == MapResponse(
        Opcode.MAP_UDP, ResultCode.NOT_AUTHORIZED, EPOCH_AGE_S, 40060, 0, 0
    )
    assert core.mapping(upnp.key) == upnp


async def test_delete_leaves_other_clients_alone(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    await map_ok(handler, udp(40061), source=LAN_HOST2)
    parsed = await map_ok(handler, udp(40061, 0, 0))
    assert parsed.internal_port == 40061
    assert core.mapping(MappingKey(UDP, 40061)).owner == LAN_HOST2


async def test_delete_of_the_other_protocol_keeps_this_one(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    await map_ok(handler, udp(40062))
    await map_ok(handler, tcp(40062, 0, 0))
    assert core.mapping(MappingKey(UDP, 40062)).origin is Origin.NATPMP


# ---- what is dropped or answered with an error (PMP-01/04..07, ST-03, ST-29) -------------------


@pytest.mark.parametrize(
    ("sender", "port", "reason"),
    [
        ("198.19.0.100", 40000, "not_lan"),  # the WAN side (ST-03, T-PMP-17)
        ("198.18.1.10", 40000, "not_lan"),  # another segment
        ("127.0.0.1", 40000, "not_lan"),
        ("fd77::10", 40000, "not_lan"),
        ("not-an-address", 40000, "not_lan"),
        ("198.18.0.0", 40000, "not_unicast"),  # the network address
        ("198.18.0.255", 40000, "not_unicast"),  # the subnet broadcast
        (str(LAN_HOST), 0, "source_port"),
        (str(LAN_HOST), 5351, "source_port"),  # another server's answer reflected at us
    ],
)
async def test_sources_dropped_silently(
    handler: NatPmpHandler, core: SharingManager, sender: str, port: int, reason: str
) -> None:
    assert await ask(handler, udp(40001), sender, port=port) is None
    assert await ask(handler, bytes.fromhex("0000"), sender, port=port) is None
    assert handler.stats.dropped[reason] == 2
    assert core.mapping_count == 0


async def test_wide_lan_networks_still_drop_broadcast_and_multicast(
    core: SharingManager, clock: FakeClock
) -> None:
    everything = NatPmpHandler(
        core, epoch_origin=clock.now, clock=clock, lan_networks=[IPv4Network("0.0.0.0/0")]
    )
    for sender in ("224.0.0.1", "255.255.255.255", "0.0.0.0"):
        assert await ask(everything, bytes.fromhex("0000"), sender) is None
    assert everything.stats.dropped["not_unicast"] == 3


@pytest.mark.parametrize("destination", [WAN_ADDRESS])
async def test_request_to_the_external_address_is_dropped_t_pmp_17(
    handler: NatPmpHandler, core: SharingManager, destination: IPv4Address
) -> None:
    """PMP-01, ST-03: even from a LAN source."""
    assert await ask(handler, udp(40001), destination=destination) is None
    assert handler.stats.dropped["public_destination"] == 1
    assert core.mapping_count == 0


async def test_configured_external_address_is_public_side_too(
    handler: NatPmpHandler, core: SharingManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "_external_override", IPv4Address("203.0.113.7"))
    assert await ask(handler, bytes.fromhex("0000"), destination=IPv4Address("203.0.113.7")) is None
    assert await ask(handler, bytes.fromhex("0000"), destination=None) is not None


@pytest.mark.parametrize("hex_bytes", ["0080", "0081" + "00" * 14, "0082" + "00" * 14, "01ff"])
async def test_responses_are_ignored_t_pmp_15(handler: NatPmpHandler, hex_bytes: str) -> None:
    assert await ask(handler, bytes.fromhex(hex_bytes)) is None
    assert handler.stats.dropped["response"] == 1


@pytest.mark.parametrize("hex_bytes", ["", "00", "0001", "00010000", "0002" + "00" * 9])
async def test_short_packets_are_dropped_t_pmp_16(handler: NatPmpHandler, hex_bytes: str) -> None:
    assert await ask(handler, bytes.fromhex(hex_bytes)) is None
    assert await ask(handler, bytes.fromhex("0000")) is not None  # still alive


@pytest.mark.parametrize("data", [bytes.fromhex("0100"), bytes.fromhex("0201") + bytes(58)])
async def test_bad_version_gives_1_t_pmp_13(handler: NatPmpHandler, data: bytes) -> None:
    assert await ask(handler, data) == bytes.fromhex("00000001") + epoch_bytes()
    assert handler.stats.answered[ResultCode.UNSUPP_VERSION] == 1


async def test_unknown_opcode_gives_5_t_pmp_14(handler: NatPmpHandler) -> None:
    data = bytes.fromhex("000300000102030405060708")
    assert await ask(handler, data) == bytes.fromhex("008300050102030405060708")
    assert await ask(handler, bytes.fromhex("0003") + bytes(500)) == bytes.fromhex(
        "00830005"
    ) + bytes(12)
    assert handler.stats.answered[ResultCode.UNSUPP_OPCODE] == 2


async def test_every_answer_is_at_most_16_bytes(handler: NatPmpHandler) -> None:
    """ST-29: no amplification, whatever arrives (seeded random + mutated valid requests)."""
    rng = random.Random(6886)
    corpus = [
        udp(40001),
        tcp(40002),
        bytes.fromhex("0000"),
        bytes.fromhex("0100"),
        bytes.fromhex("0007"),
    ]
    for _ in range(400):
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(0, 1200))
        else:
            mutated = bytearray(rng.choice(corpus))
            for _ in range(rng.randrange(0, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated[: rng.randrange(0, 17)]) + rng.randbytes(rng.randrange(0, 4))
        response = await ask(handler, data)
        assert response is None or len(response) <= 16
    assert handler.stats.dropped["internal_error"] == 0


# ---- robustness, stats and the error table -----------------------------------------------------


async def test_our_own_bug_is_counted_not_raised(
    handler: NatPmpHandler, core: SharingManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Mapping:
        raise RuntimeError("bug")

    monkeypatch.setattr(core, "add_mapping", broken)
    assert await ask(handler, udp(40001)) is None
    assert await ask(handler, udp(40002)) is None
    assert handler.stats.dropped["internal_error"] == 2
    assert await ask(handler, bytes.fromhex("0000")) is not None


async def test_port_taken_in_between_is_retried_xp_03(
    handler: NatPmpHandler, core: SharingManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another client takes the chosen port after it was chosen: the next port is offered."""
    original: Callable[..., Awaitable[Mapping]] = core.add_mapping
    raced = False

    async def racing(request: MappingRequest, client: Client, **kwargs: Any) -> Mapping:
        nonlocal raced
        if not raced:
            raced = True
            await original(upnp_request(request.external_port, target=LAN_HOST2), UPNP_B)
        return await original(request, client, **kwargs)

    monkeypatch.setattr(core, "add_mapping", racing)
    parsed = await map_ok(handler, udp(40070))
    assert parsed.external_port == 40071
    assert core.mapping(MappingKey(UDP, 40070)).owner == LAN_HOST2


async def test_concurrent_retransmissions_share_one_mapping(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    """A retransmission racing its original in the same core batch: one mapping (PMP-17)."""
    answers = await asyncio.gather(*(ask(handler, udp(40072)) for _ in range(3)))
    assert len(set(answers)) == 1
    assert [m.external_port for m in natpmp(core)] == [40072]


async def test_concurrent_clients_get_distinct_ports(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    first, second = await asyncio.gather(
        map_ok(handler, udp(40073)), map_ok(handler, udp(40073), source=LAN_HOST2)
    )
    assert {first.external_port, second.external_port} == {40073, 40074}
    assert core.mapping_count == 2


async def test_busy_neighbourhood_falls_back_to_the_core_search(
    handler: NatPmpHandler, core: SharingManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handler_module, "MAX_PORT_PROBES", 1)
    await map_ok(handler, udp(40075), source=LAN_HOST2)
    parsed = await map_ok(handler, udp(40075))
    assert parsed.external_port == 40076  # found by core.add_any_mapping
    assert core.mapping(MappingKey(UDP, 40076)).origin is Origin.NATPMP


async def test_disabled_mapping_is_not_revived(
    handler: NatPmpHandler, core: SharingManager
) -> None:
    """An administrator's disable wins over a renewal: result 2, no second mapping."""
    await map_ok(handler, udp(40077))
    await core.set_mapping_enabled(MappingKey(UDP, 40077), False)
    parsed = await map_result(handler, udp(40077))
    assert parsed.result is ResultCode.NOT_AUTHORIZED
    assert [m.enabled for m in natpmp(core)] == [False]


async def test_four_item_source_from_a_dual_stack_socket(handler: NatPmpHandler) -> None:
    source = (f"::ffff:{LAN_HOST}", 40000, 0, 0)
    response = await handler.handle(bytes.fromhex("0000"), source, destination=None)
    assert response is not None
    assert response[:4] == bytes.fromhex("00800000")


async def test_drops_are_logged_once_per_reason(
    handler: NatPmpHandler, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="igd.natpmp.handler"):
        for _ in range(5):
            await ask(handler, bytes.fromhex("0080"))
    assert handler.stats.dropped["response"] == 5
    assert len(caplog.records) == 1


async def test_stats_count_answers_by_result(handler: NatPmpHandler) -> None:
    await ask(handler, bytes.fromhex("0000"))
    await ask(handler, udp(40001))
    await ask(handler, tcp(22))
    assert handler.stats.answered == {ResultCode.SUCCESS: 2, ResultCode.NOT_AUTHORIZED: 1}


def test_result_table() -> None:
    """Architecture 5.3: one NatError -> NAT-PMP result table."""
    assert result_for(NotAuthorizedError("x")) is ResultCode.NOT_AUTHORIZED
    assert result_for(InvalidPortError("x")) is ResultCode.NOT_AUTHORIZED
    assert result_for(QuotaExceededError("x")) is ResultCode.OUT_OF_RESOURCES
    assert result_for(ConflictError("x")) is ResultCode.OUT_OF_RESOURCES
    assert result_for(ConnectionNotFoundError("x")) is ResultCode.NETWORK_FAILURE
    assert result_for(BackendError("x")) is ResultCode.NETWORK_FAILURE
    assert result_for(ObjectNoLongerValidError("x")) is ResultCode.NETWORK_FAILURE


async def test_requests_are_typed_for_the_endpoint(handler: NatPmpHandler) -> None:
    """The endpoint may pass destination=None when the socket cannot tell (IP_PKTINFO absent)."""
    response = await ask(handler, push_request(ExternalAddressRequest()), destination=None)
    assert response is not None
    assert len(response) == 12
