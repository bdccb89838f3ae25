"""SsdpResponder on the loopback: real sockets, 127.0.0.0/8 only, an ephemeral port, no root.

Each test gets a responder on `lo` and a listener that joined 239.255.255.250 on `lo` at the same
ephemeral port (bound to the group address, so unicast searches reach only the responder). The
host's `lo` is never reconfigured: joining the group on it needs no MULTICAST flag, and the
socket options keep every datagram on `lo` (SO_BINDTODEVICE, IP_MULTICAST_IF = lo's ifindex).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Final

import pytest

from igd import netif
from igd.ssdp.matching import ReplyLimiter
from igd.ssdp.messages import (
    MSearch,
    Notify,
    SearchResponse,
    build_msearch,
    parse_datagram,
    parse_search_response,
)
from igd.ssdp.responder import MAX_PENDING_REPLIES, SsdpResponder
from igd.upnp import RootDevice

GROUP: Final = "239.255.255.250"
HTTP_PORT: Final = 49152
BOOT_ID: Final = 1_800_000_000
CONFIG_IDS: Final = {1: 111, 2: 222}
SERVER: Final = "Linux/6 UPnP/1.1 igd-test/0.1"
BASE_UUID: Final = uuid.UUID("6a7c4d2e-0000-4000-8000-000000000001")
ROOTS: Final = (RootDevice.create(1, BASE_UUID, "/igd1"), RootDevice.create(2, BASE_UUID, "/igd2"))
IGD1_UDNS: Final = frozenset(f"uuid:{udn}" for udn in ROOTS[0].udns.values())
LOCALHOST: Final = IPv4Interface("127.0.0.1/8")
QUIET_S: Final = 0.3
"""A reply train is over when nothing arrives for this long (unicast replies are immediate)."""
POLL_S: Final = 0.005
URN: Final = "urn:schemas-upnp-org"
LO_INDEX: Final = socket.if_nametoindex("lo")
IP_RECVTTL: Final = 12
"""<linux/in.h>; missing from Python 3.11's socket module."""


@dataclass(frozen=True)
class Received:
    data: bytes
    ttl: int | None


def mreqn(group: str, ifindex: int) -> bytes:
    return socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)


async def drain(
    sock: socket.socket,
    *,
    count: int | None = None,
    timeout_s: float = 2.0,
    quiet_s: float = QUIET_S,
) -> list[Received]:
    """Datagrams from `sock` until `count` arrived, or (count None) a quiet gap; bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = loop.time()
    got: list[Received] = []
    while loop.time() < deadline:
        if count is not None and len(got) >= count:
            break
        try:
            data, ancillary, _, _ = sock.recvmsg(4096, 64)
        except BlockingIOError:
            if count is None and loop.time() - last >= quiet_s:
                break
            await asyncio.sleep(POLL_S)
            continue
        last = loop.time()
        ttl = next(
            (struct.unpack("@i", d[:4])[0] for lvl, k, d in ancillary if k == socket.IP_TTL), None
        )
        got.append(Received(data, ttl))
    return got


def responses(received: list[Received]) -> list[SearchResponse]:
    return [parse_search_response(item.data) for item in received]


def notifies(received: list[Received]) -> list[Notify]:
    parsed = [parse_datagram(item.data) for item in received if item.data.startswith(b"NOTIFY")]
    return [message for message in parsed if isinstance(message, Notify)]


def client(address: str = "127.0.0.1") -> socket.socket:
    """A search client on `lo`, its multicast leaving on `lo` only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn("0.0.0.0", LO_INDEX))
    sock.bind((address, 0))
    return sock


def search(st: str, port: int, *, mx: int | None = None, extra: str = "") -> bytes:
    """An M-SEARCH; `extra` header lines (CRLF-terminated) replace the built MAN/MX when given."""
    if not extra:
        return build_msearch(st, mx=mx, host=f"{GROUP}:{port}")
    return f"M-SEARCH * HTTP/1.1\r\nHOST: {GROUP}:{port}\r\n{extra}ST: {st}\r\n\r\n".encode()


class FractionRandom(random.Random):
    """uniform(a, b) = a + (b - a) * fraction: delays become predictable."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """Member of the group on `lo` at an ephemeral port; the responder is started on that port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    sock.setsockopt(socket.IPPROTO_IP, netif.IP_MULTICAST_ALL, 0)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    sock.bind((GROUP, 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn(GROUP, LO_INDEX))
    with sock:
        yield sock


def make_responder(
    port: int,
    addresses: tuple[IPv4Interface, ...] = (LOCALHOST,),
    *,
    rng: random.Random | None = None,
    limiter: ReplyLimiter | None = None,
) -> SsdpResponder:
    return SsdpResponder(
        "lo",
        addresses,
        ROOTS,
        HTTP_PORT,
        boot_id=BOOT_ID,
        config_ids=CONFIG_IDS,
        server=SERVER,
        port=port,
        rng=rng if rng is not None else random.Random(7),
        limiter=limiter,
    )


@pytest.fixture
async def responder(listener: socket.socket) -> AsyncIterator[SsdpResponder]:
    ssdp = make_responder(listener.getsockname()[1])
    await ssdp.start()
    try:
        yield ssdp
    finally:
        await ssdp.stop()


async def unicast(
    ssdp: SsdpResponder, payload: bytes, *, to: str = "127.0.0.1", source: str = "127.0.0.1"
) -> list[Received]:
    with client(source) as sock:
        sock.sendto(payload, (to, ssdp.port))
        return await drain(sock)


def location_of(version: int, address: str = "127.0.0.1") -> str:
    return f"http://{address}:{HTTP_PORT}/igd{version}/rootDesc.xml"


# ---- The socket ---------------------------------------------------------------------------------


def test_ssdp_socket_options_on_loopback() -> None:
    with netif.open_ssdp_socket("lo", port=0) as sock:
        assert sock.getblocking() is False
        assert sock.getsockname()[0] == "0.0.0.0"
        bound = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
        assert bound.rstrip(b"\0") == b"lo"
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 2
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1
        assert sock.getsockopt(socket.IPPROTO_IP, netif.IP_MULTICAST_ALL) == 0
        assert sock.getsockopt(socket.IPPROTO_IP, netif.IP_PKTINFO) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0


def test_recv_with_destination_and_send_from_on_loopback() -> None:
    with (
        netif.open_ssdp_socket("lo", port=0) as ssdp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
    ):
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(2.0)
        peer.sendto(b"unicast", ("127.0.0.2", ssdp.getsockname()[1]))
        deadline = time.monotonic() + 2.0
        while True:
            try:
                datagram = netif.recv_with_destination(ssdp)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "no datagram on the SSDP socket"
                time.sleep(POLL_S)
        assert datagram.data == b"unicast"
        assert datagram.destination == IPv4Address("127.0.0.2")
        assert datagram.ifindex == LO_INDEX
        netif.send_from(ssdp, b"back", datagram.source, IPv4Address("127.0.0.3"))
        data, source = peer.recvfrom(64)
    assert data == b"back"
    assert source[0] == "127.0.0.3"


def test_link_counters_grow_with_loopback_traffic() -> None:
    before = netif.link_counters("lo")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(5):
                sender.sendto(b"x" * 100, receiver.getsockname())
    after = netif.link_counters("lo")
    assert after.tx_packets >= before.tx_packets + 5
    assert after.rx_bytes >= before.rx_bytes + 500


# ---- Searches -----------------------------------------------------------------------------------


async def test_ssdp_all_gets_one_reply_per_member_of_both_roots(responder: SsdpResponder) -> None:
    """SSDP-37/44/45, 4b: 10 + 10 replies, each < 1024 bytes, LOCATION of the root it describes."""
    received = await unicast(responder, search("ssdp:all", responder.port))
    assert len(received) == 20
    assert all(len(item.data) < 1024 for item in received)
    parsed = responses(received)
    for response in parsed:
        udn = response.usn.split("::")[0]
        assert response.location == location_of(1 if udn in IGD1_UDNS else 2)
        assert response.header("EXT") == ""
        assert response.header("SERVER") == SERVER
        assert response.header("BOOTID.UPNP.ORG") == str(BOOT_ID)
        version = 1 if udn in IGD1_UDNS else 2
        assert response.header("CONFIGID.UPNP.ORG") == str(CONFIG_IDS[version])
    sts = [r.st for r in parsed]
    assert sts.count("upnp:rootdevice") == 2
    assert len(set(r.usn for r in parsed)) == 20
    assert responder.counters.replies_sent == 20


@pytest.mark.parametrize(
    ("st", "versions"),
    [
        (f"{URN}:device:InternetGatewayDevice:1", [1]),
        (f"{URN}:device:InternetGatewayDevice:2", [2]),
        (f"{URN}:service:WANIPConnection:1", [1]),
        (f"{URN}:service:WANIPConnection:2", [2]),
        (f"{URN}:service:WANCommonInterfaceConfig:1", [1, 2]),
        ("upnp:rootdevice", [1, 2]),
    ],
)
async def test_typed_search_is_answered_by_the_root_of_that_version(
    responder: SsdpResponder, st: str, versions: list[int]
) -> None:
    """4b dual roots, SSDP-38/40: ST echoed, LOCATION of the matching root only."""
    parsed = responses(await unicast(responder, search(st, responder.port)))
    assert sorted(r.location or "" for r in parsed) == [location_of(v) for v in versions]
    assert all(r.st == st for r in parsed)


async def test_unknown_or_too_new_types_get_nothing(responder: SsdpResponder) -> None:
    """SSDP-41."""
    for st in (f"{URN}:device:InternetGatewayDevice:3", "urn:example-com:device:X:1", "bogus"):
        assert await unicast(responder, search(st, responder.port)) == []
    assert responder.counters.unanswered == 3


async def test_multicast_search_is_answered_within_mx(responder: SsdpResponder) -> None:
    """SSDP-30/34/43: the destination (from IP_PKTINFO) makes it multicast: delays in [0, MX]."""
    with client() as sock:
        started = time.monotonic()
        sock.sendto(
            search(f"{URN}:device:InternetGatewayDevice:2", responder.port, mx=1),
            (
                GROUP,
                responder.port,
            ),
        )
        received = await drain(sock, count=1, timeout_s=3.0)
        elapsed = time.monotonic() - started
    assert [r.location for r in responses(received)] == [location_of(2)]
    assert elapsed < 1.5


@pytest.mark.parametrize(
    ("extra", "counter"),
    [
        ('MAN: "ssdp:discover"\r\nMX: 0\r\n', "unanswered"),
        ('MAN: "ssdp:discover"\r\nMX: -1\r\n', "unanswered"),
        ('MAN: "ssdp:discover"\r\n', "unanswered"),  # multicast without MX (SSDP-32)
        ('MAN: "ssdp:discover"\r\nMX: abc\r\n', "dropped_parse"),
        ('MAN: "ssdp:discover"\r\nMX: 1.5\r\n', "dropped_parse"),
        ("MX: 1\r\n", "unanswered"),  # no MAN (SSDP-35)
        ("MAN: ssdp:discover\r\nMX: 1\r\n", "unanswered"),  # unquoted MAN
        ('MAN: "ssdp:update"\r\nMX: 1\r\n', "unanswered"),
    ],
)
async def test_mx_and_man_edge_cases_get_no_reply_and_no_crash(
    listener: socket.socket, extra: str, counter: str
) -> None:
    """ST-05, SSDP-32/33/35: ignored, counted; the responder still answers afterwards.

    Zero delays (FractionRandom(0)) make a wrongly answered search reply at once, so a short
    quiet gap proves there is no reply.
    """
    ssdp = make_responder(listener.getsockname()[1], rng=FractionRandom(0.0))
    await ssdp.start()
    try:
        with client() as sock:
            sock.sendto(search("ssdp:all", ssdp.port, extra=extra), (GROUP, ssdp.port))
            assert await drain(sock) == []
        assert getattr(ssdp.counters, counter) == 1
        assert ssdp.counters.internal_errors == 0
        with client() as sock:
            valid = search("upnp:rootdevice", ssdp.port, extra='MAN: "ssdp:discover"\r\nMX: 1\r\n')
            sock.sendto(valid, (GROUP, ssdp.port))
            assert len(await drain(sock)) == 2
    finally:
        await ssdp.stop()


async def test_huge_mx_is_capped_at_5_seconds(listener: socket.socket) -> None:
    """ST-05, SSDP-33: MX 99999 -> delays in [0, 5]; a 2 % draw gives 0.1 s, not 2000 s."""
    ssdp = make_responder(listener.getsockname()[1], rng=FractionRandom(0.02))
    await ssdp.start()
    try:
        with client() as sock:
            extra = 'MAN: "ssdp:discover"\r\nMX: 99999\r\n'
            started = time.monotonic()
            sock.sendto(search("upnp:rootdevice", ssdp.port, extra=extra), (GROUP, ssdp.port))
            received = await drain(sock, count=2, timeout_s=4.0)
            elapsed = time.monotonic() - started
    finally:
        await ssdp.stop()
    assert len(received) == 2
    assert 0.05 < elapsed < 1.5


async def test_burst_of_100_ssdp_all_is_limited(responder: SsdpResponder) -> None:
    """ST-04, SSDP-48: one source gets its bucket (64 replies + 32/s), not 2,000 replies."""
    with client() as sock:
        started = time.monotonic()
        payload = search("ssdp:all", responder.port)
        for _ in range(100):
            sock.sendto(payload, ("127.0.0.1", responder.port))
        received = await drain(sock, quiet_s=0.5, timeout_s=5.0)
        elapsed = time.monotonic() - started
    answered = len(received) // 20
    assert len(received) % 20 == 0
    assert 3 <= answered <= 3 + int((64 + 32 * elapsed) / 20) + 1
    assert len(received) <= 64 + 32 * elapsed + 20
    assert responder.counters.dropped_limit == 100 - answered
    assert responder.counters.replies_sent == len(received)


async def test_pending_replies_are_capped(listener: socket.socket) -> None:
    """5.7: many sources with MX 5 cannot park more than MAX_PENDING_REPLIES replies."""
    ssdp = make_responder(listener.getsockname()[1], rng=FractionRandom(0.9))
    await ssdp.start()
    sockets = [client(f"127.0.1.{i}") for i in range(1, 41)]
    try:
        payload = search("ssdp:all", ssdp.port, mx=5)
        for sock in sockets:
            sock.sendto(payload, (GROUP, ssdp.port))
        deadline = time.monotonic() + 2.0
        while ssdp.counters.received - ssdp.counters.ignored_own < 40:
            assert time.monotonic() < deadline, "searches did not arrive"
            await asyncio.sleep(POLL_S)
        assert ssdp.pending_replies <= MAX_PENDING_REPLIES
        assert ssdp.pending_replies == 20 * (40 - ssdp.counters.dropped_limit)
        assert ssdp.counters.dropped_limit >= 40 - MAX_PENDING_REPLIES // 20
    finally:
        for sock in sockets:
            sock.close()
        await ssdp.stop()
    assert ssdp.pending_replies == 0


async def test_notify_from_others_is_ignored(responder: SsdpResponder) -> None:
    """SSDP-21."""
    notify = (
        b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\n"
        b"NTS: ssdp:alive\r\nUSN: uuid:x::upnp:rootdevice\r\nLOCATION: http://127.0.0.1/\r\n\r\n"
    )
    assert await unicast(responder, notify) == []
    assert responder.counters.ignored_notify == 1


async def test_garbage_and_oversize_are_dropped_and_counted(responder: SsdpResponder) -> None:
    """5.4/5.7: SsdpParseError -> drop + count, no reply, no crash."""
    for payload in (
        b"\x00\xff garbage",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n" + b"X-Pad: " + b"a" * 3000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nST: ssdp:all\r\nUSN: uuid:x\r\n\r\n",
    ):
        assert await unicast(responder, payload) == []
    assert responder.counters.dropped_parse == 4
    assert responder.counters.internal_errors == 0
    assert len(await unicast(responder, search("upnp:rootdevice", responder.port))) == 2


async def test_unicast_to_an_address_not_served_is_dropped(responder: SsdpResponder) -> None:
    """ST-33: 127.0.0.2 reaches the socket (bound to lo, 0.0.0.0) but is not a served address."""
    assert await unicast(responder, search("ssdp:all", responder.port), to="127.0.0.2") == []
    assert responder.counters.dropped_destination == 1


async def test_source_outside_the_lan_networks_is_dropped(listener: socket.socket) -> None:
    """SSDP-46, ST-01: with 127.0.0.0/30 as the LAN, 127.0.0.5 is not answered."""
    ssdp = make_responder(listener.getsockname()[1], (IPv4Interface("127.0.0.1/30"),))
    await ssdp.start()
    try:
        payload = search("ssdp:all", ssdp.port)
        assert await unicast(ssdp, payload, source="127.0.0.5") == []
        assert ssdp.counters.dropped_source == 1
        assert len(await unicast(ssdp, payload, source="127.0.0.2")) == 20
    finally:
        await ssdp.stop()


async def test_a_failing_limiter_is_counted_not_raised(listener: socket.socket) -> None:
    """5.4: a bug inside the reader callback is counted and logged; the loop survives."""

    class Broken(ReplyLimiter):
        def allow(self, source: str, now: float, cost: int = 1) -> bool:
            raise RuntimeError("boom")

    ssdp = make_responder(listener.getsockname()[1], limiter=Broken())
    await ssdp.start()
    try:
        for _ in range(2):
            assert await unicast(ssdp, search("ssdp:all", ssdp.port)) == []
        assert ssdp.counters.internal_errors == 2
        assert ssdp.running
    finally:
        await ssdp.stop()


# ---- NOTIFY -------------------------------------------------------------------------------------


async def test_startup_sends_byebye_then_alive_twice_and_stop_sends_byebye(
    listener: socket.socket,
) -> None:
    """SSDP-13/16/17, GEN-03: 20 byebye, 2 x 20 alive, TTL 2; at stop 20 byebye."""
    port = listener.getsockname()[1]
    ssdp = make_responder(port)
    await ssdp.start()
    try:
        started = await drain(listener, count=60, timeout_s=3.0)
    finally:
        await ssdp.stop()
    stopped = await drain(listener, count=20, timeout_s=2.0)
    assert all(item.ttl == 2 for item in started + stopped)
    kinds = [n.nts for n in notifies(started)]
    assert kinds == ["ssdp:byebye"] * 20 + ["ssdp:alive"] * 40
    alive = notifies(started)[20:]
    assert all(n.header("HOST") == f"{GROUP}:{port}" for n in alive)
    assert all(n.header("BOOTID.UPNP.ORG") == str(BOOT_ID) for n in alive)
    assert {n.header("LOCATION") for n in alive} == {location_of(1), location_of(2)}
    assert all(n.header("CACHE-CONTROL") == "max-age=1800" for n in alive)
    assert [n.nts for n in notifies(stopped)] == ["ssdp:byebye"] * 20
    assert {n.usn for n in notifies(stopped)} == {n.usn for n in alive}
    assert ssdp.counters.notifies_sent == 80
    assert ssdp.counters.ignored_own == ssdp.counters.received  # our own multicast, looped back


async def test_address_change_sends_update_then_alive_with_the_next_bootid(
    listener: socket.socket,
) -> None:
    """SSDP-19/22: kept address: ssdp:update (NEXTBOOTID) + alive; added: byebye + alive."""
    ssdp = make_responder(listener.getsockname()[1])
    await ssdp.start()
    try:
        await drain(listener, count=60, timeout_s=3.0)
        second = IPv4Interface("127.0.0.2/8")
        assert ssdp.update_addresses((LOCALHOST, second)) == BOOT_ID + 1
        assert ssdp.boot_id == BOOT_ID + 1
        changed = notifies(await drain(listener, count=120, timeout_s=3.0))
        updates = [n for n in changed if n.nts == "ssdp:update"]
        assert len(updates) == 20
        assert {n.header("LOCATION") for n in updates} == {location_of(1), location_of(2)}
        assert all(n.header("BOOTID.UPNP.ORG") == str(BOOT_ID) for n in updates)
        assert all(n.header("NEXTBOOTID.UPNP.ORG") == str(BOOT_ID + 1) for n in updates)
        alive = [n for n in changed if n.nts == "ssdp:alive"]
        assert len(alive) == 80
        assert all(n.header("BOOTID.UPNP.ORG") == str(BOOT_ID + 1) for n in alive)
        assert {n.header("LOCATION") for n in alive} == {
            location_of(v, a) for v in (1, 2) for a in ("127.0.0.1", "127.0.0.2")
        }
        assert sum(n.nts == "ssdp:byebye" for n in changed) == 20  # the added address
        assert ssdp.update_addresses((LOCALHOST, second)) == BOOT_ID + 1  # unchanged: no-op

        replies = responses(
            await unicast(ssdp, search("upnp:rootdevice", ssdp.port), to="127.0.0.2")
        )
        assert sorted(r.location or "" for r in replies) == [
            location_of(1, "127.0.0.2"),
            location_of(2, "127.0.0.2"),
        ]
        assert all(r.header("BOOTID.UPNP.ORG") == str(BOOT_ID + 1) for r in replies)

        assert ssdp.update_addresses((second,)) == BOOT_ID + 2
        removed = notifies(await drain(listener, count=80, timeout_s=3.0))
        assert [n.nts for n in removed].count("ssdp:byebye") == 20  # 127.0.0.1 withdrawn
        assert [n.nts for n in removed].count("ssdp:update") == 20  # 127.0.0.2 kept
        assert await unicast(ssdp, search("ssdp:all", ssdp.port)) == []  # 127.0.0.1 not served
        with pytest.raises(ValueError, match="must exceed"):
            ssdp.update_addresses((LOCALHOST,), boot_id=BOOT_ID)
    finally:
        await ssdp.stop()


async def test_alive_sets_are_repeated_before_max_age_runs_out(listener: socket.socket) -> None:
    """SSDP-15: with max-age 2 s the alive sets come again within [0.5, 1) s."""
    ssdp = SsdpResponder(
        "lo",
        (LOCALHOST,),
        ROOTS,
        HTTP_PORT,
        boot_id=BOOT_ID,
        config_ids=CONFIG_IDS,
        server=SERVER,
        port=listener.getsockname()[1],
        max_age_s=2,
        rng=random.Random(3),
    )
    await ssdp.start()
    try:
        first = notifies(await drain(listener, count=60, timeout_s=3.0))
        again = notifies(await drain(listener, count=40, timeout_s=3.0))
    finally:
        await ssdp.stop()
    assert len(first) == 60
    assert [n.nts for n in again] == ["ssdp:alive"] * 40
    assert all(n.header("CACHE-CONTROL") == "max-age=2" for n in again)


async def test_send_failures_are_counted_not_raised(listener: socket.socket) -> None:
    """5.4: a source address that is not local (198.18.0.77) fails in the kernel, locally."""
    ssdp = make_responder(listener.getsockname()[1])
    await ssdp.start()
    try:
        await drain(listener, count=60, timeout_s=3.0)
        ssdp.update_addresses((LOCALHOST, IPv4Interface("198.18.0.77/24")))
        received = await drain(listener, count=60, timeout_s=3.0)  # 127.0.0.1: update + alive
        await asyncio.sleep(0.2)
        assert len(received) == 60
        assert ssdp.counters.send_errors == 60  # 198.18.0.77: byebye + 2 x alive, all refused
        assert ssdp.counters.internal_errors == 0
        assert ssdp.running
    finally:
        await ssdp.stop()


async def test_stop_is_idempotent_and_start_twice_is_refused(listener: socket.socket) -> None:
    ssdp = make_responder(listener.getsockname()[1])
    await ssdp.start()
    with pytest.raises(RuntimeError, match="already started"):
        await ssdp.start()
    await ssdp.stop()
    await ssdp.stop()
    assert not ssdp.running


def test_constructor_refuses_bad_configuration() -> None:
    with pytest.raises(ValueError, match="config_ids"):
        SsdpResponder(
            "lo", (LOCALHOST,), ROOTS, HTTP_PORT, boot_id=1, config_ids={1: 1}, server=SERVER
        )
    with pytest.raises(ValueError, match="distinct"):
        SsdpResponder(
            "lo",
            (LOCALHOST,),
            (ROOTS[0], ROOTS[0]),
            HTTP_PORT,
            boot_id=1,
            config_ids=CONFIG_IDS,
            server=SERVER,
        )
    with pytest.raises(ValueError, match="IPv4 addresses"):
        SsdpResponder("lo", (), ROOTS, HTTP_PORT, boot_id=1, config_ids=CONFIG_IDS, server=SERVER)
    with pytest.raises(ValueError, match="boot_id"):
        SsdpResponder(
            "lo", (LOCALHOST,), ROOTS, HTTP_PORT, boot_id=-1, config_ids=CONFIG_IDS, server=SERVER
        )
    with pytest.raises(ValueError, match="server"):
        SsdpResponder(
            "lo", (LOCALHOST,), ROOTS, HTTP_PORT, boot_id=1, config_ids=CONFIG_IDS, server=""
        )


def test_search_helpers_build_what_the_tests_claim() -> None:
    parsed = parse_datagram(search("ssdp:all", 1900, extra="MX: 1\r\n"))
    assert isinstance(parsed, MSearch)
    assert parsed.man is None
    assert parsed.mx == 1
