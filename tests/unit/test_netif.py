"""igd.netif: loopback queries, one-line errors for bad names, IP_PKTINFO parsing with a fake."""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest

from igd import netif
from igd.netif import (
    IP_PKTINFO,
    InterfaceError,
    LinkCounters,
    check_ifname,
    interface_index,
    interface_ipv4,
    link_counters,
    parse_pktinfo,
    recv_with_destination,
)

MISSING = "igdt-absent0"
"""A valid interface name that no test machine has (15 bytes at most)."""

Ancillary = list[tuple[int, int, bytes]]


def pktinfo(ifindex: int, spec_dst: str, destination: str) -> bytes:
    """struct in_pktinfo as the kernel writes it."""
    return struct.pack("@i4s4s", ifindex, socket.inet_aton(spec_dst), socket.inet_aton(destination))


class FakeSocket:
    """Returns one prepared recvmsg result and records the sizes asked for."""

    def __init__(self, data: bytes, ancillary: Ancillary, flags: int = 0) -> None:
        self.result = (data, ancillary, flags, ("198.18.0.10", 40000))
        self.asked: tuple[int, int] | None = None

    def recvmsg(
        self, bufsize: int, ancbufsize: int = 0, flags: int = 0, /
    ) -> tuple[bytes, Ancillary, int, Any]:
        self.asked = (bufsize, ancbufsize)
        return self.result


# ---- interface_ipv4 ------------------------------------------------------------------------------


def test_loopback_has_127_0_0_1() -> None:
    addresses = interface_ipv4("lo")
    assert IPv4Interface("127.0.0.1/8") in addresses
    assert all(isinstance(address, IPv4Interface) for address in addresses)


async def test_interface_ipv4_works_inside_a_running_loop() -> None:
    """pyroute2's sync IPRoute refuses a running loop; netif runs it in a worker thread."""
    assert IPv4Interface("127.0.0.1/8") in interface_ipv4("lo")
    assert await asyncio.to_thread(interface_ipv4, "lo") == interface_ipv4("lo")


def test_missing_interface_is_a_one_line_interface_error() -> None:
    with pytest.raises(InterfaceError, match=rf"^interface {MISSING} does not exist$"):
        interface_ipv4(MISSING)
    assert issubclass(InterfaceError, ValueError)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "eth0:1", "has space", "x" * 16, "é" * 8])
def test_invalid_names_are_refused_before_any_lookup(name: str) -> None:
    with pytest.raises(InterfaceError, match="invalid interface name"):
        check_ifname(name)
    with pytest.raises(InterfaceError, match="invalid interface name"):
        interface_ipv4(name)
    with pytest.raises(InterfaceError, match="invalid interface name"):
        link_counters(name)


def test_interface_without_ipv4_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netif, "_query_ipv4", lambda ifname: ())
    with pytest.raises(InterfaceError, match=r"^interface lo has no IPv4 address$"):
        interface_ipv4("lo")


def test_interface_index() -> None:
    assert interface_index("lo") == socket.if_nametoindex("lo")
    with pytest.raises(InterfaceError, match="does not exist"):
        interface_index(MISSING)


# ---- link_counters -------------------------------------------------------------------------------


def test_link_counters_on_loopback() -> None:
    counters = link_counters("lo")
    assert isinstance(counters, LinkCounters)
    assert counters.up  # lo: operstate UNKNOWN, IFF_UP and carrier
    assert counters.speed_mbps is None  # lo reports no speed (EINVAL)
    values = (counters.rx_bytes, counters.tx_bytes, counters.rx_packets, counters.tx_packets)
    assert all(value >= 0 for value in values)


def test_link_counters_of_missing_interface() -> None:
    with pytest.raises(InterfaceError, match=rf"^interface {MISSING} does not exist$"):
        link_counters(MISSING)


# ---- IP_PKTINFO ----------------------------------------------------------------------------------


def test_recv_with_destination_reads_multicast_destination_and_ifindex() -> None:
    fake = FakeSocket(
        b"M-SEARCH", [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo(7, "198.18.0.1", "239.255.255.250"))]
    )
    datagram = recv_with_destination(fake, 2049)
    assert datagram.data == b"M-SEARCH"
    assert datagram.source == ("198.18.0.10", 40000)
    assert datagram.destination == IPv4Address("239.255.255.250")
    assert datagram.ifindex == 7
    assert not datagram.truncated
    assert fake.asked is not None
    assert fake.asked[0] == 2049


def test_recv_with_destination_unicast_and_other_control_messages() -> None:
    ttl = (socket.IPPROTO_IP, socket.IP_TTL, struct.pack("@i", 64))
    other_level = (socket.SOL_SOCKET, IP_PKTINFO, pktinfo(9, "1.1.1.1", "1.1.1.1"))
    info = (socket.IPPROTO_IP, IP_PKTINFO, pktinfo(3, "198.18.0.1", "198.18.0.1"))
    datagram = recv_with_destination(FakeSocket(b"x", [ttl, other_level, info]))
    assert datagram.destination == IPv4Address("198.18.0.1")
    assert datagram.ifindex == 3


def test_recv_without_pktinfo_or_with_short_pktinfo_has_no_destination() -> None:
    assert recv_with_destination(FakeSocket(b"x", [])).destination is None
    short = [(socket.IPPROTO_IP, IP_PKTINFO, b"\x01\x00\x00\x00")]
    datagram = recv_with_destination(FakeSocket(b"x", short))
    assert datagram.destination is None
    assert datagram.ifindex is None
    assert parse_pktinfo(short) is None


def test_recv_reports_truncation() -> None:
    assert recv_with_destination(FakeSocket(b"x" * 10, [], socket.MSG_TRUNC)).truncated


# ---- open_ssdp_socket: argument checks only (the socket itself: tests/integration) ------------


def test_ssdp_socket_refuses_bad_arguments() -> None:
    with pytest.raises(InterfaceError, match="does not exist"):
        netif.open_ssdp_socket(MISSING, port=0)
    with pytest.raises(ValueError, match="not a multicast group"):
        netif.open_ssdp_socket("lo", port=0, group="198.18.0.1")
    with pytest.raises(ValueError, match="ttl"):
        netif.open_ssdp_socket("lo", port=0, ttl=0)
    with pytest.raises(ValueError, match="port"):
        netif.open_ssdp_socket("lo", port=70000)


def test_port_mapping_socket_is_bound_to_the_address_and_device() -> None:
    """ST-03: the NAT-PMP/PCP socket listens on one LAN address of one interface, TTL 1 out."""
    sock = netif.open_port_mapping_socket("lo", IPv4Address("127.0.0.1"), port=0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1"
        assert port > 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == netif.ANNOUNCE_TTL
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
        assert not sock.getblocking()
    finally:
        sock.close()


def test_port_mapping_socket_on_a_missing_interface_is_a_clear_error() -> None:
    with pytest.raises(netif.InterfaceError, match="does not exist"):
        netif.open_port_mapping_socket("igdtnope0", IPv4Address("127.0.0.1"), port=0)


def test_listening_ports_parse_proc_net(tmp_path: Path) -> None:
    """ST-22: listening TCP and unconnected UDP sockets count; loopback-only ones do not."""
    header = "  sl  local_address rem_address   st tx_queue\n"
    (tmp_path / "tcp").write_text(
        header
        + "   0: 00000000:1F90 00000000:0000 0A 0\n"  # 0.0.0.0:8080 listening
        + "   1: 0100007F:1F91 00000000:0000 0A 0\n"  # 127.0.0.1:8081 loopback only
        + "   2: 010012C6:1F92 0B0012C6:D000 01 0\n"  # established, not listening
    )
    (tmp_path / "tcp6").write_text(
        header
        + "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0\n"
        + "   1: 00000000000000000000000001000000:0017 00000000000000000000000000000000:0000 0A 0\n"
    )
    (tmp_path / "udp").write_text(header + "   0: 010012C6:14EB 00000000:0000 07 0\n")
    assert netif.listening_ports("tcp", proc_net=tmp_path) == {8080, 22}
    assert netif.listening_ports("udp", proc_net=tmp_path) == {5355}
    with pytest.raises(ValueError, match="tcp or udp"):
        netif.listening_ports("icmp", proc_net=tmp_path)


def test_listening_ports_sees_a_real_listener() -> None:
    """A TCP socket listening on all addresses shows up, through the cache too."""
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]
        assert port in netif.listening_ports("tcp")
        assert port in netif.ListeningPorts()("TCP")


def test_ipv4_forwarding_reads_the_sysctl(tmp_path: Path) -> None:
    """The daemon warns when the kernel does not route (nftables NAT needs ip_forward=1)."""
    knob = tmp_path / "net" / "ipv4" / "ip_forward"
    assert netif.ipv4_forwarding(proc_sys=tmp_path) is None
    knob.parent.mkdir(parents=True)
    knob.write_text("0\n")
    assert netif.ipv4_forwarding(proc_sys=tmp_path) is False
    knob.write_text("1\n")
    assert netif.ipv4_forwarding(proc_sys=tmp_path) is True
    assert netif.ipv4_forwarding() in (True, False)


class _Transport(asyncio.BaseTransport):
    def __init__(self, peer: object) -> None:
        super().__init__()
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default


@pytest.mark.parametrize(
    ("peer", "fallback", "expected"),
    [
        (("198.18.0.10", 40000), None, IPv4Address("198.18.0.10")),
        (("::ffff:198.18.0.11", 40000, 0, 0), None, IPv4Address("198.18.0.11")),
        (("fe80::1%eth0", 40000, 0, 2), None, None),
        (None, "198.18.0.12", IPv4Address("198.18.0.12")),
        (None, None, None),
        (("not an address", 1), None, None),
    ],
)
def test_peer_ipv4(peer: object, fallback: str | None, expected: IPv4Address | None) -> None:
    """The requester identity of HTTP front-ends (secure mode, GENA callbacks) from the socket."""
    assert netif.peer_ipv4(_Transport(peer), fallback) == expected
    assert netif.peer_ipv4(None, fallback) == (None if fallback is None else IPv4Address(fallback))
