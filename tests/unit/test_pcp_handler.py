"""PcpHandler over the core: every ST-30 bullet, specs.md 7.10 (T-PCP-*), nonces, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any

import pytest
from support import (
    LAN_GATEWAY,
    LAN_HOST,
    LAN_HOST2,
    WAN_ADDRESS,
    FakeClock,
    fake_resolver,
    lab_connections,
)

from igd.natcore import (
    BackendError,
    Client,
    ConflictError,
    ConnectionNotFoundError,
    InvalidDescriptionError,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingNotFoundError,
    MappingRequest,
    MemoryStore,
    NatError,
    ObjectNoLongerValidError,
    Origin,
    PolicyConfig,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.pcp.handler import PcpHandler
from igd.pcp.wire import (
    UNSPECIFIED_V4,
    FilterOption,
    MapPayload,
    Opcode,
    PcpOption,
    PcpRequest,
    PcpResponse,
    PeerPayload,
    PreferFailureOption,
    RawOption,
    ResultCode,
    ThirdPartyOption,
    from_ipv4,
    pull_response,
    push_request,
)

NONCE = b"nonce-A-0001"
OTHER_NONCE = b"nonce-B-0002"
LAN = IPv4Network("198.18.0.0/24")
PEER = IPv4Address("198.19.0.100")
UDP, TCP = int(IPProtocol.UDP), int(IPProtocol.TCP)
UPNP_B = Client(Origin.UPNP, LAN_HOST2)


def make_handler(core: SharingManager, clock: FakeClock, **kwargs: Any) -> PcpHandler:
    kwargs.setdefault("allow_private_external", True)  # 198.19.0.0/15 counts as reserved
    return PcpHandler(core, epoch_origin=clock.now, clock=clock, lan_networks=[LAN], **kwargs)


@pytest.fixture
def handler(core: SharingManager, clock: FakeClock) -> PcpHandler:
    return make_handler(core, clock)


@asynccontextmanager
async def custom_core(clock: FakeClock, policy: PolicyConfig) -> AsyncIterator[SharingManager]:
    """Like the `core` fixture, with another policy."""
    core = await SharingManager.open(
        backend=MemoryBackend(),
        store=MemoryStore(),
        source=StaticConnectionSource(lab_connections()),
        clock=clock,
        resolver=fake_resolver,
        policy=policy,
    )
    await core.enable_sharing(core.find_connection(name="wan0").guid, SharingConnectionType.PUBLIC)
    await core.enable_sharing(core.find_connection(name="lan0").guid, SharingConnectionType.PRIVATE)
    try:
        yield core
    finally:
        await core.aclose()


def map_request(
    internal_port: int = 40101,
    *,
    lifetime: int = 3600,
    protocol: int = UDP,
    suggested_port: int | None = None,
    suggested_address: IPv6Address = UNSPECIFIED_V4,
    nonce: bytes = NONCE,
    client: IPv4Address = LAN_HOST,
    options: tuple[PcpOption, ...] = (),
) -> PcpRequest:
    port = internal_port if suggested_port is None else suggested_port
    return PcpRequest(
        Opcode.MAP,
        lifetime,
        from_ipv4(client),
        MapPayload(nonce, protocol, internal_port, port, suggested_address),
        options,
    )


async def ask_raw(
    handler: PcpHandler,
    data: bytes,
    source: IPv4Address | str = LAN_HOST,
    destination: IPv4Address | None = LAN_GATEWAY,
) -> bytes | None:
    return await handler.handle(data, (str(source), 5350), destination=destination)


async def ask(
    handler: PcpHandler, request: PcpRequest | bytes, source: IPv4Address = LAN_HOST
) -> PcpResponse:
    data = request if isinstance(request, bytes) else push_request(request)
    answer = await ask_raw(handler, data, source)
    assert answer is not None
    return pull_response(answer)


def assigned_port(response: PcpResponse) -> int:
    assert isinstance(response.payload, MapPayload)
    return response.payload.external_port


# ---- ANNOUNCE and epoch (PCP-50/51/54) -----------------------------------------------------------


async def test_announce(handler: PcpHandler, clock: FakeClock) -> None:
    """T-PCP-01."""
    clock.advance(42.7)
    response = await ask(handler, PcpRequest(Opcode.ANNOUNCE, 0, from_ipv4(LAN_HOST)))
    assert (response.opcode, response.result, response.lifetime, response.epoch) == (0, 0, 0, 42)
    assert response.reserved == bytes(12)
    assert response.payload is None


def test_epoch_reset_and_unsolicited_announcement(handler: PcpHandler, clock: FakeClock) -> None:
    clock.advance(100)
    assert handler.epoch() == 100
    handler.reset_epoch()
    assert handler.epoch() == 0
    assert handler.epoch_origin == clock.now
    clock.advance(3)
    announcement = pull_response(handler.announcement())
    assert (announcement.opcode, announcement.result, announcement.epoch) == (0, 0, 3)


# ---- MAP, refresh, delete with nonce (PCP-30..37, 57..60) ----------------------------------------


async def test_map_creates_a_pcp_mapping(handler: PcpHandler, core: SharingManager) -> None:
    """T-PCP-02."""
    response = await ask(handler, map_request())
    assert response.result == ResultCode.SUCCESS
    assert response.lifetime == 3600
    assert response.payload == MapPayload(NONCE, UDP, 40101, 40101, from_ipv4(WAN_ADDRESS))
    mapping = core.mapping(MappingKey(IPProtocol.UDP, 40101))
    assert (mapping.origin, mapping.owner, mapping.internal_client) == (
        Origin.PCP,
        LAN_HOST,
        LAN_HOST,
    )
    assert mapping.description == "PCP UDP 40101"
    assert NONCE.hex() not in mapping.description  # XP-02: the nonce is never disclosed
    assert handler.stats.mapped == 1
    assert handler.stats.results[0] == 1


async def test_refresh_same_nonce_keeps_port(
    handler: PcpHandler, core: SharingManager, clock: FakeClock
) -> None:
    """T-PCP-03 / PCP-36."""
    first = await ask(handler, map_request())
    created = core.mapping(MappingKey(IPProtocol.UDP, 40101))
    clock.advance(1000)
    again = await ask(handler, map_request(suggested_port=0))
    assert again.result == ResultCode.SUCCESS
    assert assigned_port(again) == assigned_port(first) == 40101
    assert again.lifetime == 3600
    refreshed = core.mapping(MappingKey(IPProtocol.UDP, 40101))
    assert refreshed.created_at == created.created_at
    assert core.mapping_count == 1
    assert handler.stats.refreshed == 1


async def test_refresh_other_nonce_not_authorized(handler: PcpHandler, clock: FakeClock) -> None:
    """T-PCP-04 / PCP-37, ST-30: lifetime = the remaining lifetime."""
    await ask(handler, map_request())
    clock.advance(600)
    response = await ask(handler, map_request(nonce=OTHER_NONCE))
    assert response.result == ResultCode.NOT_AUTHORIZED
    assert response.lifetime == 3000
    assert isinstance(response.payload, MapPayload)
    assert response.payload.nonce == OTHER_NONCE


async def test_delete_with_nonce_is_idempotent(handler: PcpHandler, core: SharingManager) -> None:
    """T-PCP-05 / PCP-57/58/60."""
    await ask(handler, map_request())
    for _ in range(2):
        response = await ask(handler, map_request(lifetime=0, suggested_port=1234))
        assert (response.result, response.lifetime) == (ResultCode.SUCCESS, 0)
        assert assigned_port(response) == 1234  # suggested port copied (PCP-58)
    assert core.mapping_count == 0
    assert handler.stats.deleted == 1
    assert handler.nonce_count == 0


async def test_delete_wrong_nonce_not_authorized(handler: PcpHandler, core: SharingManager) -> None:
    """T-PCP-06 / PCP-59, ST-30."""
    await ask(handler, map_request())
    response = await ask(handler, map_request(lifetime=0, nonce=OTHER_NONCE))
    assert response.result == ResultCode.NOT_AUTHORIZED
    assert core.mapping_count == 1


async def test_delete_of_own_upnp_mapping_not_authorized(
    handler: PcpHandler, core: SharingManager
) -> None:
    """PCP-59: PCP never deletes what it did not create."""
    own_upnp = Client(Origin.UPNP, LAN_HOST)
    await core.add_mapping(MappingRequest(IPProtocol.TCP, 40200, LAN_HOST, 40200), own_upnp)
    response = await ask(handler, map_request(40200, protocol=TCP, lifetime=0))
    assert response.result == ResultCode.NOT_AUTHORIZED
    assert core.mapping_count == 1


async def test_other_host_cannot_touch_a_mapping(handler: PcpHandler, core: SharingManager) -> None:
    """Another host with the same nonce maps its own endpoint; A's mapping is unchanged."""
    await ask(handler, map_request())
    response = await ask(handler, map_request(client=LAN_HOST2), source=LAN_HOST2)
    assert response.result == ResultCode.SUCCESS
    assert assigned_port(response) != 40101
    delete = await ask(handler, map_request(client=LAN_HOST2, lifetime=0), source=LAN_HOST2)
    assert delete.result == ResultCode.SUCCESS
    assert core.mapping(MappingKey(IPProtocol.UDP, 40101)).owner == LAN_HOST


async def test_delete_sets(handler: PcpHandler, core: SharingManager) -> None:
    """T-PCP-19 / PCP-57: per protocol, then all; protocol 0 with a port is malformed."""
    await ask(handler, map_request(40101))
    await ask(handler, map_request(40102))
    await ask(handler, map_request(40103, protocol=TCP))
    other = await ask(handler, map_request(40104, nonce=OTHER_NONCE))
    assert other.result == ResultCode.SUCCESS
    await core.add_mapping(
        MappingRequest(IPProtocol.UDP, 40300, LAN_HOST, 40300), Client(Origin.UPNP, LAN_HOST)
    )
    malformed = await ask(handler, map_request(5, protocol=0, lifetime=0))
    assert malformed.result == ResultCode.MALFORMED_REQUEST
    udp = await ask(handler, map_request(0, protocol=UDP, lifetime=0, suggested_port=0))
    assert udp.result == ResultCode.NOT_AUTHORIZED  # 40104 has another nonce: kept
    left = {(m.protocol, m.external_port) for m in core.mappings()}
    assert left == {(IPProtocol.TCP, 40103), (IPProtocol.UDP, 40104), (IPProtocol.UDP, 40300)}
    everything = await ask(handler, map_request(0, protocol=0, lifetime=0, suggested_port=0))
    assert everything.result == ResultCode.NOT_AUTHORIZED
    left = {(m.protocol, m.external_port) for m in core.mappings()}
    assert left == {(IPProtocol.UDP, 40104), (IPProtocol.UDP, 40300)}  # UPnP one untouched
    last = await ask(
        handler, map_request(0, protocol=0, lifetime=0, suggested_port=0, nonce=OTHER_NONCE)
    )
    assert last.result == ResultCode.SUCCESS
    assert [m.origin for m in core.mappings()] == [Origin.UPNP]


# ---- Nonce table: restart and bounds -------------------------------------------------------------


async def test_nonce_re_established_by_owner_after_restart(
    core: SharingManager, clock: FakeClock
) -> None:
    before = make_handler(core, clock)
    await ask(before, map_request())
    after = make_handler(core, clock)  # a restarted daemon: mappings kept, nonces gone
    assert after.nonce_count == 0
    stranger = await ask(after, map_request(client=LAN_HOST2), source=LAN_HOST2)
    assert assigned_port(stranger) != 40101  # B never adopts A's mapping
    adopted = await ask(after, map_request(nonce=OTHER_NONCE))
    assert (adopted.result, assigned_port(adopted)) == (ResultCode.SUCCESS, 40101)
    replay = await ask(after, map_request(nonce=NONCE))
    assert replay.result == ResultCode.NOT_AUTHORIZED


async def test_nonce_table_is_bounded(core: SharingManager, clock: FakeClock) -> None:
    handler = make_handler(core, clock, max_nonces=2)
    for port in (40101, 40102, 40103):
        await ask(handler, map_request(port))
    assert handler.nonce_count == 2
    response = await ask(handler, map_request(40101, nonce=OTHER_NONCE))
    assert response.result == ResultCode.SUCCESS  # evicted: the owner re-establishes it


# ---- Lifetimes (PCP-15/56) -----------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "granted"), [(10, 120), (10_000_000, 86400), (600, 600)])
async def test_lifetime_clamped(handler: PcpHandler, requested: int, granted: int) -> None:
    """T-PCP-20, ST-30."""
    response = await ask(handler, map_request(lifetime=requested))
    assert (response.result, response.lifetime) == (ResultCode.SUCCESS, granted)


async def test_custom_lifetime_bounds(core: SharingManager, clock: FakeClock) -> None:
    handler = make_handler(core, clock, min_lifetime_s=300, max_lifetime_s=900)
    assert (await ask(handler, map_request(40101, lifetime=1))).lifetime == 300
    assert (await ask(handler, map_request(40102, lifetime=5000))).lifetime == 900
    with pytest.raises(ValueError, match="min_lifetime_s"):
        make_handler(core, clock, min_lifetime_s=0)


async def test_error_lifetimes(core: SharingManager, clock: FakeClock) -> None:
    """PCP-15: long errors 1800 s, short errors 30 s."""
    handler = make_handler(core, clock, allow_private_external=False)
    short = await ask(handler, map_request())
    assert (short.result, short.lifetime) == (ResultCode.NETWORK_FAILURE, 30)
    long = await ask(handler, map_request(protocol=132))
    assert (long.result, long.lifetime) == (ResultCode.UNSUPP_PROTOCOL, 1800)


# ---- Header-level answers (PCP-04..13) -----------------------------------------------------------


async def test_address_mismatch(handler: PcpHandler, core: SharingManager) -> None:
    """T-PCP-07 / PCP-09, ST-30."""
    request = map_request(client=IPv4Address("198.18.0.99"))
    response = await ask(handler, request)
    assert (response.result, response.lifetime) == (ResultCode.ADDRESS_MISMATCH, 1800)
    assert response.payload == request.payload
    ipv6_client = PcpRequest(
        Opcode.ANNOUNCE, 0, IPv6Address("2001:db8::10")
    )  # an IPv6 client-IP field cannot match our IPv4 source
    assert (await ask(handler, ipv6_client)).result == ResultCode.ADDRESS_MISMATCH
    mismatched_and_bad_option = push_request(request) + bytes([100, 0, 0, 0])
    assert (await ask(handler, mismatched_and_bad_option)).result == ResultCode.ADDRESS_MISMATCH
    assert core.mapping_count == 0


@pytest.mark.parametrize("version", [1, 3])
async def test_unsupported_version(handler: PcpHandler, version: int) -> None:
    """T-PCP-08 / PCP-05/12."""
    data = bytes([version]) + push_request(map_request())[1:]
    answer = await ask_raw(handler, data)
    assert answer is not None
    assert len(answer) == 24
    assert answer[0] == 2
    assert pull_response(answer).result == ResultCode.UNSUPP_VERSION


async def test_unsupported_opcode(handler: PcpHandler) -> None:
    """T-PCP-09 / PCP-11, T-PCP-21: reserved = last 96 bits of the client-IP field."""
    data = bytearray(push_request(map_request()))
    data[1] = 5
    response = await ask(handler, bytes(data))
    assert (response.opcode, response.result) == (5, ResultCode.UNSUPP_OPCODE)
    assert response.reserved == bytes(data[12:24])


@pytest.mark.parametrize(
    ("size", "answered"), [(62, True), (1104, True), (12, False), (1, False), (0, False)]
)
async def test_sizes(handler: PcpHandler, size: int, answered: bool) -> None:
    """T-PCP-10/21 / PCP-04/06/07."""
    data = (push_request(map_request()) + bytes(2000))[:size]
    answer = await ask_raw(handler, data)
    if not answered:
        assert answer is None
        assert handler.stats.dropped_malformed == 1
        return
    assert answer is not None
    assert len(answer) <= 1100
    response = pull_response(answer)
    assert response.result == ResultCode.MALFORMED_REQUEST
    assert response.reserved == data[12:24]
    assert isinstance(response.payload, MapPayload)
    assert response.payload.nonce == NONCE


async def test_truncated_map_payload(handler: PcpHandler) -> None:
    """T-PCP-11."""
    response = await ask(handler, push_request(map_request())[:44])
    assert response.result == ResultCode.MALFORMED_REQUEST


async def test_r_bit_dropped(handler: PcpHandler) -> None:
    """T-PCP-12 / PCP-04."""
    data = bytearray(push_request(map_request()))
    data[1] |= 0x80
    assert await ask_raw(handler, bytes(data)) is None


# ---- Options (PCP-20..26, ST-30) -----------------------------------------------------------------


async def test_unknown_mandatory_and_optional_options(
    handler: PcpHandler, core: SharingManager
) -> None:
    """T-PCP-13 / PCP-21/23."""
    data = push_request(map_request())
    unsupported = await ask(handler, data + bytes([100, 0, 0, 0]))
    assert (unsupported.result, unsupported.lifetime) == (ResultCode.UNSUPP_OPTION, 1800)
    assert core.mapping_count == 0
    ignored = await ask(handler, data + bytes([200, 0, 0, 4, 1, 2, 3, 4]))
    assert ignored.result == ResultCode.SUCCESS
    assert ignored.options == ()


async def test_malformed_options(handler: PcpHandler) -> None:
    """T-PCP-14 / PCP-20/22."""
    data = push_request(map_request())
    overrun = await ask(handler, data + bytes([200, 0, 0, 40]))
    assert overrun.result == ResultCode.MALFORMED_OPTION
    twice = await ask(handler, data + bytes([2, 0, 0, 0]) * 2)
    assert twice.result == ResultCode.MALFORMED_OPTION


async def test_prefer_failure(handler: PcpHandler, core: SharingManager) -> None:
    """T-PCP-15 / PCP-25/35, XP-03, ST-30."""
    await core.add_mapping(MappingRequest(IPProtocol.TCP, 40110, LAN_HOST2, 40110), UPNP_B)
    strict = map_request(40110, protocol=TCP, options=(PreferFailureOption(),))
    refused = await ask(handler, strict)
    assert (refused.result, refused.lifetime) == (ResultCode.CANNOT_PROVIDE_EXTERNAL, 30)
    relaxed = await ask(handler, map_request(40110, protocol=TCP))
    assert relaxed.result == ResultCode.SUCCESS
    assert assigned_port(relaxed) != 40110
    assert core.mapping(MappingKey(IPProtocol.TCP, 40110)).owner == LAN_HOST2
    exact = await ask(handler, map_request(40150, protocol=TCP, options=(PreferFailureOption(),)))
    assert (exact.result, assigned_port(exact)) == (ResultCode.SUCCESS, 40150)
    assert exact.options == (PreferFailureOption(),)  # processed options echoed (PCP-23)


async def test_prefer_failure_on_refresh_with_other_port(handler: PcpHandler) -> None:
    await ask(handler, map_request(40101))
    moved = map_request(40101, suggested_port=40999, options=(PreferFailureOption(),))
    assert (await ask(handler, moved)).result == ResultCode.CANNOT_PROVIDE_EXTERNAL


async def test_own_upnp_port_is_never_taken_over(handler: PcpHandler, core: SharingManager) -> None:
    """XP-03: a PCP MAP on a port this host holds over UPnP gets another port."""
    own_upnp = Client(Origin.UPNP, LAN_HOST)
    await core.add_mapping(MappingRequest(IPProtocol.UDP, 40120, LAN_HOST, 40120), own_upnp)
    response = await ask(handler, map_request(5000, suggested_port=40120))
    assert response.result == ResultCode.SUCCESS
    assert assigned_port(response) != 40120
    upnp = core.mapping(MappingKey(IPProtocol.UDP, 40120))
    assert (upnp.origin, upnp.internal_port) == (Origin.UPNP, 40120)


async def test_suggested_external_address(handler: PcpHandler) -> None:
    """PCP-35/38: a foreign or IPv6 suggestion means ours, or CANNOT_PROVIDE_EXTERNAL."""
    foreign = from_ipv4(IPv4Address("198.19.0.77"))
    plain = await ask(handler, map_request(40101, suggested_address=foreign))
    assert isinstance(plain.payload, MapPayload)
    assert plain.payload.external_address == from_ipv4(WAN_ADDRESS)
    ipv6 = await ask(handler, map_request(40102, suggested_address=IPv6Address("2001:db8::1")))
    assert ipv6.result == ResultCode.SUCCESS
    strict = map_request(40103, suggested_address=foreign, options=(PreferFailureOption(),))
    refused = await ask(handler, strict)
    assert (refused.result, refused.lifetime) == (ResultCode.CANNOT_PROVIDE_EXTERNAL, 1800)
    ours = map_request(40104, suggested_address=from_ipv4(WAN_ADDRESS), options=strict.options)
    assert (await ask(handler, ours)).result == ResultCode.SUCCESS


async def test_reserved_port(clock: FakeClock) -> None:
    """ST-22: the gateway's own ports: another port, or CANNOT_PROVIDE_EXTERNAL."""
    policy = PolicyConfig(reserved_ports=frozenset({(IPProtocol.UDP, 5351)}))
    async with custom_core(clock, policy) as core:
        handler = make_handler(core, clock)
        moved = await ask(handler, map_request(5351))
        assert moved.result == ResultCode.SUCCESS
        assert assigned_port(moved) != 5351
        strict = await ask(
            handler, map_request(5352, suggested_port=5351, options=(PreferFailureOption(),))
        )
        assert strict.result == ResultCode.CANNOT_PROVIDE_EXTERNAL


async def test_peer_unsupported(handler: PcpHandler) -> None:
    """PCP-48 (PEER not served), T-PCP-16: PREFER_FAILURE in PEER is malformed."""
    payload = PeerPayload(NONCE, TCP, 5000, 0, UNSPECIFIED_V4, 443, from_ipv4(PEER))
    peer = PcpRequest(Opcode.PEER, 600, from_ipv4(LAN_HOST), payload)
    response = await ask(handler, peer)
    assert (response.result, response.payload) == (ResultCode.UNSUPP_OPCODE, payload)
    with_pf = push_request(peer) + bytes([2, 0, 0, 0])
    assert (await ask(handler, with_pf)).result == ResultCode.MALFORMED_REQUEST


async def test_third_party_refused_by_default(handler: PcpHandler) -> None:
    """T-PCP-17 / PCP-24, ST-30."""
    request = map_request(options=(ThirdPartyOption(from_ipv4(LAN_HOST2)),))
    response = await ask(handler, request)
    assert (response.result, response.lifetime) == (ResultCode.NOT_AUTHORIZED, 1800)


async def test_third_party_allowed_for_one_source(clock: FakeClock) -> None:
    """T-PCP-17: own address is malformed; secure mode still refuses; allowed, it maps B."""
    async with custom_core(clock, PolicyConfig(secure_mode=False)) as core:
        handler = make_handler(core, clock, allow_third_party=lambda a: a == LAN_HOST)
        third = (ThirdPartyOption(from_ipv4(LAN_HOST2)),)
        own = await ask(handler, map_request(options=(ThirdPartyOption(from_ipv4(LAN_HOST)),)))
        assert own.result == ResultCode.MALFORMED_REQUEST
        outside = await ask(handler, map_request(options=(ThirdPartyOption(from_ipv4(PEER)),)))
        assert outside.result == ResultCode.NOT_AUTHORIZED
        other = await ask(handler, map_request(client=LAN_HOST2, options=third), LAN_HOST2)
        assert other.result == ResultCode.NOT_AUTHORIZED  # B is not allowed third party
        allowed = await ask(handler, map_request(options=third))
        assert allowed.result == ResultCode.SUCCESS
        assert allowed.options == third
        mapping = core.mapping(MappingKey(IPProtocol.UDP, assigned_port(allowed)))
        assert (mapping.internal_client, mapping.owner) == (LAN_HOST2, LAN_HOST)
        refresh = await ask(handler, map_request(options=third))
        assert assigned_port(refresh) == assigned_port(allowed)
        assert handler.stats.refreshed == 1
    async with custom_core(clock, PolicyConfig()) as secure:
        handler = make_handler(secure, clock, allow_third_party=lambda a: True)
        refused = await ask(handler, map_request(options=third))
        assert refused.result == ResultCode.NOT_AUTHORIZED  # the core's secure mode


def filter_option(prefix: int = 128, port: int = 0, peer: IPv4Address = PEER) -> FilterOption:
    return FilterOption(prefix, port, from_ipv4(peer))


async def test_filter_single_peer_becomes_remote_host(
    handler: PcpHandler, core: SharingManager
) -> None:
    """ST-30 / PCP-26: one /32 peer, all ports, is enforced as the mapping's remote host."""
    response = await ask(handler, map_request(options=(filter_option(),)))
    assert response.result == ResultCode.SUCCESS
    assert response.options == (filter_option(),)
    assert core.mapping(MappingKey(IPProtocol.UDP, 40101, PEER)).remote_host == PEER
    kept = await ask(handler, map_request())  # refresh without FILTER keeps it
    assert kept.result == ResultCode.SUCCESS
    assert core.mapping(MappingKey(IPProtocol.UDP, 40101, PEER)).remote_host == PEER
    cleared = await ask(handler, map_request(options=(FilterOption(0, 0, UNSPECIFIED_V4),)))
    assert (cleared.result, assigned_port(cleared)) == (ResultCode.SUCCESS, 40101)
    assert core.mapping(MappingKey(IPProtocol.UDP, 40101)).remote_host is None
    again = await ask(handler, map_request(options=(filter_option(),)))
    assert (again.result, assigned_port(again)) == (ResultCode.SUCCESS, 40101)
    assert core.mapping_count == 1


@pytest.mark.parametrize(
    ("options", "result"),
    [
        ((filter_option(prefix=120),), ResultCode.EXCESSIVE_REMOTE_PEERS),
        ((filter_option(port=443),), ResultCode.EXCESSIVE_REMOTE_PEERS),
        (
            (filter_option(), filter_option(peer=IPv4Address("198.19.0.101"))),
            ResultCode.EXCESSIVE_REMOTE_PEERS,
        ),
        ((FilterOption(128, 0, IPv6Address("2001:db8::1")),), ResultCode.MALFORMED_OPTION),
        ((filter_option(peer=IPv4Address(0)),), ResultCode.MALFORMED_OPTION),
        ((filter_option(prefix=129),), ResultCode.MALFORMED_OPTION),
        ((filter_option(prefix=64),), ResultCode.MALFORMED_OPTION),
        ((filter_option(prefix=120), FilterOption(0, 0, UNSPECIFIED_V4)), ResultCode.SUCCESS),
        ((filter_option(), filter_option()), ResultCode.SUCCESS),
    ],
    ids=["prefix-120", "peer-port", "two-peers", "ipv6", "zero", "129", "64", "cleared", "dup"],
)
async def test_filter_never_silently_ignored(
    handler: PcpHandler, core: SharingManager, options: tuple[PcpOption, ...], result: ResultCode
) -> None:
    """ST-30: what the core cannot enforce is refused, not dropped."""
    response = await ask(handler, map_request(options=options))
    assert response.result == result
    assert core.mapping_count == (1 if result == ResultCode.SUCCESS else 0)


# ---- Protocols and ports (PCP-32/33) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "internal_port", "result"),
    [
        (0, 5, ResultCode.MALFORMED_REQUEST),
        (132, 40101, ResultCode.UNSUPP_PROTOCOL),
        (0, 0, ResultCode.NOT_AUTHORIZED),
        (UDP, 0, ResultCode.NOT_AUTHORIZED),
        (TCP, 22, ResultCode.NOT_AUTHORIZED),  # the core's rules (ST-21)
    ],
)
async def test_protocol_and_port_checks(
    handler: PcpHandler, protocol: int, internal_port: int, result: ResultCode
) -> None:
    """T-PCP-18."""
    response = await ask(handler, map_request(internal_port, protocol=protocol))
    assert response.result == result


# ---- Core errors (PCP-39/40) ---------------------------------------------------------------------


async def test_network_failure_without_public_connection(
    handler: PcpHandler, core: SharingManager
) -> None:
    await core.disable_sharing(core.find_connection(name="wan0").guid)
    response = await ask(handler, map_request())
    assert (response.result, response.lifetime) == (ResultCode.NETWORK_FAILURE, 30)


async def test_private_external_address_is_network_failure_by_default(
    core: SharingManager, clock: FakeClock
) -> None:
    """WIP-03, ST-31: 198.19.0.1 is reserved space."""
    handler = make_handler(core, clock, allow_private_external=False)
    assert (await ask(handler, map_request())).result == ResultCode.NETWORK_FAILURE
    announce = await ask(handler, PcpRequest(Opcode.ANNOUNCE, 0, from_ipv4(LAN_HOST)))
    assert announce.result == ResultCode.SUCCESS


async def test_user_quota_and_table_full(clock: FakeClock) -> None:
    """PCP-40, ST-24."""
    async with custom_core(clock, PolicyConfig(quota_per_client=1)) as core:
        handler = make_handler(core, clock)
        assert (await ask(handler, map_request(40101))).result == ResultCode.SUCCESS
        over = await ask(handler, map_request(40102))
        assert (over.result, over.lifetime) == (ResultCode.USER_EX_QUOTA, 30)
        refresh = await ask(handler, map_request(40101))
        assert refresh.result == ResultCode.SUCCESS  # a refresh is not a new mapping
    async with custom_core(clock, PolicyConfig(max_mappings=1)) as core:
        handler = make_handler(core, clock)
        await core.add_mapping(MappingRequest(IPProtocol.TCP, 40500, LAN_HOST2, 40500), UPNP_B)
        full = await ask(handler, map_request(40101))
        assert (full.result, full.lifetime) == (ResultCode.NO_RESOURCES, 30)


# ---- LAN only (ST-03) and robustness -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "destination"),
    [
        ("198.19.0.100", IPv4Address("198.18.0.1")),  # from the WAN side
        ("198.18.1.10", IPv4Address("198.18.1.1")),  # a LAN we do not serve
        (str(LAN_HOST), WAN_ADDRESS),  # addressed to the external address
        (str(LAN_HOST), IPv4Address("198.19.0.5")),
        ("2001:db8::10", None),
        ("not-an-address", None),
    ],
)
async def test_requests_from_or_to_outside_the_lan_are_dropped(
    handler: PcpHandler, sender: str, destination: IPv4Address | None
) -> None:
    """ST-03, XP-05, T-PCP-26."""
    data = push_request(PcpRequest(Opcode.ANNOUNCE, 0, from_ipv4(LAN_HOST)))
    assert await ask_raw(handler, data, sender, destination) is None
    assert handler.stats.dropped_not_lan == 1


async def test_handle_never_raises(
    handler: PcpHandler, core: SharingManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug below")

    monkeypatch.setattr(core, "add_any_mapping", broken)
    assert await ask_raw(handler, push_request(map_request())) is None
    assert handler.stats.internal_errors == 1


def test_stats_as_dict(handler: PcpHandler) -> None:
    handler.stats.results[ResultCode.SUCCESS] += 2
    handler.stats.results[99] += 1
    values = handler.stats.as_dict()
    assert values["result_SUCCESS"] == 2
    assert values["result_99"] == 1
    assert values["received"] == 0
    assert "results" not in values


async def test_raw_option_from_a_client_is_ignored_when_optional(handler: PcpHandler) -> None:
    response = await ask(handler, map_request(options=(RawOption(201, b"hello"),)))
    assert response.result == ResultCode.SUCCESS


async def test_filter_change_failure_restores_the_mapping(
    handler: PcpHandler, core: SharingManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that re-keys for a new FILTER and fails puts the old mapping back."""
    await ask(handler, map_request())
    real_add = core.add_mapping
    calls: list[IPv4Address | None] = []

    async def refuse_filtered(
        request: MappingRequest, client: Client, *, replace: bool = True
    ) -> Mapping:
        calls.append(request.remote_host)
        if request.remote_host is not None:
            raise ConflictError("taken meanwhile")
        return await real_add(request, client, replace=replace)

    monkeypatch.setattr(core, "add_mapping", refuse_filtered)
    response = await ask(handler, map_request(options=(filter_option(),)))
    assert response.result == ResultCode.CANNOT_PROVIDE_EXTERNAL
    assert calls == [PEER, None]
    restored = core.mapping(MappingKey(IPProtocol.UDP, 40101))
    assert (restored.remote_host, restored.owner) == (None, LAN_HOST)
    refresh = await ask(handler, map_request())  # the nonce still holds
    assert refresh.result == ResultCode.SUCCESS


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (BackendError("nft refused"), ResultCode.NO_RESOURCES),
        (InvalidDescriptionError("bad"), ResultCode.MALFORMED_REQUEST),
        (ConnectionNotFoundError("gone"), ResultCode.NETWORK_FAILURE),
        (ObjectNoLongerValidError("closed"), ResultCode.NO_RESOURCES),
    ],
)
async def test_core_error_table(
    handler: PcpHandler,
    core: SharingManager,
    monkeypatch: pytest.MonkeyPatch,
    error: NatError,
    result: ResultCode,
) -> None:
    """The one NatError -> PCP result table (architecture.md 5.3)."""

    async def failing(*args: object, **kwargs: object) -> Mapping:
        raise error

    monkeypatch.setattr(core, "add_any_mapping", failing)
    assert (await ask(handler, map_request())).result == result
    monkeypatch.undo()
    await ask(handler, map_request())
    monkeypatch.setattr(core, "remove_mapping", failing)
    assert (await ask(handler, map_request(lifetime=0))).result == result


async def test_delete_of_a_mapping_removed_meanwhile_succeeds(
    handler: PcpHandler, core: SharingManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ask(handler, map_request())

    async def vanished(*args: object, **kwargs: object) -> Mapping:
        raise MappingNotFoundError("expired meanwhile")

    monkeypatch.setattr(core, "remove_mapping", vanished)
    response = await ask(handler, map_request(lifetime=0))
    assert (response.result, handler.nonce_count) == (ResultCode.SUCCESS, 0)


async def test_stale_nonce_entry_is_ignored(core: SharingManager, clock: FakeClock) -> None:
    """A nonce remembered for another internal endpoint on the same port never applies."""
    first = make_handler(core, clock)
    await ask(first, map_request(40101))
    await core.remove_mapping(MappingKey(IPProtocol.UDP, 40101))  # the administrator
    second = make_handler(core, clock)
    moved = await ask(second, map_request(7000, suggested_port=40101, nonce=OTHER_NONCE))
    assert assigned_port(moved) == 40101
    adopted = await ask(first, map_request(7000, nonce=b"third-nonce!"))
    assert (adopted.result, assigned_port(adopted)) == (ResultCode.SUCCESS, 40101)
