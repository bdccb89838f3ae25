"""PortMappingEndpoint on 127.0.0.1: a real UDP socket on an ephemeral port, the test PCP client.

The core's private connection is the loopback (the LAN), wan0 198.19.0.1/24 is public; nothing
leaves the machine and no multicast is sent (announcements go to a list).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Final

import pytest
from pcpclient import PcpClient, new_nonce

from igd.natcore import (
    ConnectionProps,
    IPProtocol,
    MappingKey,
    MemoryStore,
    Origin,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.pcp.endpoint import PortMappingEndpoint
from igd.pcp.handler import PcpHandler
from igd.pcp.wire import (
    MapPayload,
    Opcode,
    PcpRequest,
    ResultCode,
    from_ipv4,
    pull_response,
    push_request,
)

WAN: Final = IPv4Address("198.19.0.1")
LOOPBACK: Final = IPv4Address("127.0.0.1")
NATPMP_REPLY: Final = bytes([0, 128, 0, 0, 0, 0, 0, 7]) + WAN.packed
QUIET_S: Final = 0.3
"""How long to wait before concluding that no answer is coming."""


def connections(wan: str = f"{WAN}/24") -> list[ConnectionProps]:
    return [
        make_connection("wan0", addresses=[wan]),
        make_connection("lo", addresses=["127.0.0.1/8"], loopback=True),
    ]


@dataclass
class FakeNatPmp:
    """Stands in for igd.natpmp.handler.NatPmpHandler: records what reaches it."""

    calls: list[tuple[bytes, tuple[str, int], IPv4Address | None]] = field(default_factory=list)

    async def handle(
        self, data: bytes, source: tuple[str, int], *, destination: IPv4Address | None
    ) -> bytes | None:
        self.calls.append((data, source, destination))
        return NATPMP_REPLY if len(data) >= 2 else None

    def announcement(self) -> bytes:
        return NATPMP_REPLY


@dataclass
class Rig:
    core: SharingManager
    source: StaticConnectionSource
    handler: PcpHandler
    natpmp: FakeNatPmp
    endpoint: PortMappingEndpoint
    sock: socket.socket
    announced: list[bytes]

    @property
    def server(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((str(LOOPBACK), 0))
    yield sock
    sock.close()


@pytest.fixture
async def rig(udp_socket: socket.socket) -> AsyncIterator[Rig]:
    source = StaticConnectionSource(connections())
    core = await SharingManager.open(backend=MemoryBackend(), store=MemoryStore(), source=source)
    endpoint: PortMappingEndpoint | None = None
    try:
        await core.enable_sharing(
            core.find_connection(name="wan0").guid, SharingConnectionType.PUBLIC
        )
        await core.enable_sharing(
            core.find_connection(name="lo").guid, SharingConnectionType.PRIVATE
        )
        handler = PcpHandler(
            core,
            epoch_origin=time.time(),
            lan_networks=[IPv4Network("127.0.0.0/8")],
            allow_private_external=True,
        )
        natpmp = FakeNatPmp()
        announced: list[bytes] = []
        endpoint = PortMappingEndpoint(
            [udp_socket],
            pcp=handler,
            natpmp=natpmp,
            announce=announced.append,
            natpmp_announcement=natpmp.announcement,
            announce_count=3,
            announce_first_gap_s=0.01,
        )
        await endpoint.start()
        yield Rig(core, source, handler, natpmp, endpoint, udp_socket, announced)
    finally:
        if endpoint is not None:
            await endpoint.stop()
        await core.aclose()


async def eventually(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Poll `condition` until it holds (TimeoutError after `timeout_s`)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling counters the endpoint owns
            await asyncio.sleep(0.005)


async def test_map_refresh_delete(rig: Rig) -> None:
    nonce = new_nonce()
    async with PcpClient(rig.server) as client:
        created = await client.map(
            IPProtocol.UDP, 40101, lifetime=3600, nonce=nonce, suggested_port=40101
        )
        assert created.result == ResultCode.SUCCESS
        assert created.payload == MapPayload(
            nonce, IPProtocol.UDP, 40101, 40101, IPv6Address(f"::ffff:{WAN}")
        )
        mapping = rig.core.mapping(MappingKey(IPProtocol.UDP, 40101))
        assert (mapping.origin, mapping.owner) == (Origin.PCP, LOOPBACK)
        refreshed = await client.map(IPProtocol.UDP, 40101, lifetime=7200, nonce=nonce)
        assert refreshed.result == ResultCode.SUCCESS
        assert refreshed.lifetime == 7200
        stolen = await client.map(IPProtocol.UDP, 40101, lifetime=7200, nonce=new_nonce())
        assert stolen.result == ResultCode.NOT_AUTHORIZED
        deleted = await client.map(IPProtocol.UDP, 40101, lifetime=0, nonce=nonce)
        assert (deleted.result, deleted.lifetime) == (ResultCode.SUCCESS, 0)
    assert rig.core.mapping_count == 0
    assert rig.endpoint.counters.replies_sent == 4
    assert rig.endpoint.counters.to_pcp == 4


async def test_announce_epoch(rig: Rig) -> None:
    async with PcpClient(rig.server) as client:
        response = await client.announce()
    assert (response.opcode, response.result, response.lifetime) == (Opcode.ANNOUNCE, 0, 0)
    assert response.epoch <= 2


async def test_version_0_goes_to_natpmp(rig: Rig) -> None:
    async with PcpClient(rig.server) as client:
        answer = await client.exchange(b"\x00\x00")
        local = client.local_address
    assert answer == NATPMP_REPLY
    assert rig.natpmp.calls == [(b"\x00\x00", local, LOOPBACK)]
    assert rig.endpoint.counters.to_natpmp == 1


@pytest.mark.parametrize("version", [1, 3, 255])
async def test_other_versions_get_unsupp_version(rig: Rig, version: int) -> None:
    async with PcpClient(rig.server) as client:
        answer = await client.exchange(bytes([version, 1]) + bytes(58))
    assert answer is not None
    response = pull_response(answer)
    assert answer[0] == 2
    assert response.result == ResultCode.UNSUPP_VERSION
    assert rig.natpmp.calls == []


async def test_garbage_is_dropped_and_counted(rig: Rig) -> None:
    async with PcpClient(rig.server) as client:
        for garbage in (b"\x02", b"\x02\x81" + bytes(58), bytes([2, 1]) + bytes(10)):
            assert await client.exchange(garbage, timeout_s=QUIET_S) is None
        oversize = await client.exchange(bytes([2, 1]) + bytes(1102))
    assert oversize is not None
    assert len(oversize) <= 1100
    assert pull_response(oversize).result == ResultCode.MALFORMED_REQUEST
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.sendto(b"", rig.server)  # asyncio's transports never send an empty datagram
    counters = rig.endpoint.counters
    await eventually(lambda: counters.dropped_empty == 1)
    assert counters.unanswered == 3
    assert counters.dropped_empty == 1
    assert rig.handler.stats.dropped_malformed == 3
    assert counters.internal_errors == 0
    assert rig.handler.stats.internal_errors == 0


async def test_announcements_at_start_and_on_address_change(rig: Rig) -> None:
    """PCP-51/52/54, PMP-11: a burst at start; a new external address resets the epoch."""
    await eventually(lambda: len(rig.announced) == 6)  # 3 x (PCP, NAT-PMP)
    assert {pull_response(a).opcode for a in rig.announced[::2]} == {Opcode.ANNOUNCE}
    assert rig.announced[1::2] == [NATPMP_REPLY] * 3
    origin = rig.handler.epoch_origin
    await asyncio.sleep(0.01)
    rig.source.update(connections(wan="198.19.0.2/24"))
    await eventually(lambda: len(rig.announced) == 12)
    assert rig.handler.epoch_origin > origin
    assert rig.endpoint.counters.announcements_sent == 12
    async with PcpClient(rig.server) as client:
        mapped = await client.map(IPProtocol.TCP, 40200, lifetime=600, nonce=new_nonce())
    assert isinstance(mapped.payload, MapPayload)
    assert mapped.payload.external_address.ipv4_mapped == IPv4Address("198.19.0.2")


async def test_rate_limit_per_source(udp_socket: socket.socket, rig: Rig) -> None:
    """ST-24: a source over its token bucket is dropped; NAT-PMP disabled drops version 0."""
    await rig.endpoint.stop()
    limited = PortMappingEndpoint(
        [udp_socket], pcp=rig.handler, natpmp=None, rate_burst=3, rate_per_s=0.001
    )
    await limited.start()
    try:
        async with PcpClient(rig.server) as client:
            natpmp = await client.exchange(b"\x00\x00", timeout_s=0.05)
            answers = [
                await client.exchange(push_announce_request(), timeout_s=0.1) for _ in range(5)
            ]
        assert natpmp is None
        assert [a is not None for a in answers] == [True, True, True, False, False]
        counters = limited.counters
        assert (counters.dropped_no_natpmp, counters.to_pcp, counters.dropped_rate) == (1, 3, 2)
    finally:
        await limited.stop()


def push_announce_request() -> bytes:
    return push_request(PcpRequest(Opcode.ANNOUNCE, 0, from_ipv4(LOOPBACK)))


async def test_stop_is_idempotent_and_leaves_the_socket_open(rig: Rig) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        await rig.endpoint.start()
    await rig.endpoint.stop()
    await rig.endpoint.stop()
    assert not rig.endpoint.running
    assert rig.sock.fileno() != -1
    assert rig.endpoint.addresses == (rig.server,)


def test_blocking_socket_refused(udp_socket: socket.socket) -> None:
    udp_socket.setblocking(True)
    with pytest.raises(ValueError, match="non-blocking"):
        PortMappingEndpoint([udp_socket], pcp=None, natpmp=None)  # type: ignore[arg-type]


class Broken:
    """A handler with a bug: every call raises."""

    async def handle(
        self, data: bytes, source: tuple[str, int], *, destination: IPv4Address | None
    ) -> bytes | None:
        raise RuntimeError("handler bug")


class Slow:
    """A handler that answers only when released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def handle(
        self, data: bytes, source: tuple[str, int], *, destination: IPv4Address | None
    ) -> bytes | None:
        await self.release.wait()
        return b"\x00\x80\x00\x00"


async def test_faults_are_counted_never_raised(udp_socket: socket.socket, rig: Rig) -> None:
    await rig.endpoint.stop()

    def refuse(data: bytes) -> None:
        raise OSError("no route to the group")

    def broken_announcement() -> bytes | None:
        raise RuntimeError("natpmp bug")

    endpoint = PortMappingEndpoint(
        [udp_socket],
        pcp=rig.handler,
        natpmp=Broken(),
        announce=refuse,
        natpmp_announcement=broken_announcement,
        announce_on_start=False,
    )
    await endpoint.start()
    try:
        assert endpoint.send_announcements() == 0
        assert endpoint.counters.send_errors == 1  # the PCP announcement
        assert endpoint.counters.internal_errors == 1  # the NAT-PMP announcement
        async with PcpClient(rig.server) as client:
            assert await client.exchange(b"\x00\x00", timeout_s=QUIET_S) is None
        assert endpoint.counters.internal_errors == 2
    finally:
        await endpoint.stop()


async def test_in_flight_bound(udp_socket: socket.socket, rig: Rig) -> None:
    """PCP-08: over MAX_IN_FLIGHT, datagrams are dropped; stop cancels what is in flight."""
    await rig.endpoint.stop()
    slow = Slow()
    endpoint = PortMappingEndpoint(
        [udp_socket], pcp=rig.handler, natpmp=slow, max_in_flight=1, announce_on_start=False
    )
    await endpoint.start()
    try:
        async with PcpClient(rig.server) as client:
            assert await client.exchange(b"\x00\x00", timeout_s=0.1) is None
            assert await client.exchange(b"\x00\x00", timeout_s=0.1) is None
            assert endpoint.counters.dropped_overload == 1
            slow.release.set()
            await eventually(lambda: endpoint.counters.replies_sent == 1)
            slow.release.clear()
            assert await client.exchange(b"\x00\x00", timeout_s=0.1) is None
    finally:
        await endpoint.stop()  # cancels the request still waiting
    assert endpoint.counters.internal_errors == 0


def test_constructor_checks(udp_socket: socket.socket) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.setblocking(False)
        with pytest.raises(ValueError, match="UDP"):
            PortMappingEndpoint([tcp], pcp=None, natpmp=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bounds"):
        PortMappingEndpoint([udp_socket], pcp=None, natpmp=None, max_in_flight=0)  # type: ignore[arg-type]
