"""Interfaces, addresses, link counters and the SSDP socket: the daemon's only OS-network layer.

Lowest layer (architecture.md section 3): imports nothing from `igd`. Every socket and multicast
option of the daemon is set here (section 2), so the safety properties are checked in one place:

* an SSDP socket is bound to 0.0.0.0:port *and* to one device (SO_BINDTODEVICE), so it receives
  multicast to the group and unicast to the port only when they arrive on that interface, and
  everything it sends leaves on that interface (GEN-01/02, ST-01, ST-33);
* IP_MULTICAST_ALL is off, so it sees only the group it joined, not every group of the host;
* IP_PKTINFO tells the caller each datagram's destination address and arrival interface, which
  decides multicast vs unicast handling (SSDP-32/36) and drops datagrams for other addresses;
* IP_MULTICAST_TTL defaults to 2 (GEN-03); IP_MULTICAST_LOOP is on so same-host peers hear us.

Interface queries go through pyroute2 (netlink). Its synchronous `IPRoute` cannot run inside a
running event loop, so `interface_ipv4` runs the query in a short-lived worker thread when called
from one; it is cheap (a few ms) and meant for start-up validation, not a hot path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, ip_address
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

__all__ = [
    "DEFAULT_MULTICAST_TTL",
    "SSDP_GROUP_V4",
    "SSDP_PORT",
    "DatagramReceiver",
    "InterfaceError",
    "LinkCounters",
    "ReceivedDatagram",
    "check_ifname",
    "interface_index",
    "interface_ipv4",
    "link_counters",
    "open_ssdp_socket",
    "parse_pktinfo",
    "recv_with_destination",
    "send_from",
]

SSDP_GROUP_V4: Final = IPv4Address("239.255.255.250")
"""The IPv4 SSDP multicast group (GEN-01)."""
SSDP_PORT: Final = 1900
"""The SSDP port (GEN-01, SSDP-12)."""
DEFAULT_MULTICAST_TTL: Final = 2
"""IP TTL of multicast SSDP (GEN-03)."""

IFNAMSIZ: Final = 16
"""Linux interface names are at most IFNAMSIZ - 1 bytes (<linux/if.h>)."""
NETLINK_TIMEOUT_S: Final = 5.0
"""Longest wait for one netlink query run in a worker thread."""
RECV_ANCILLARY_BYTES: Final = 256
"""Control buffer for recvmsg: room for IP_PKTINFO (12 bytes) plus a few other messages."""

# <linux/in.h> options missing from Python 3.11's socket module.
IP_PKTINFO: Final = 8
IP_MULTICAST_ALL: Final = 49
_IN_PKTINFO = struct.Struct("@i4s4s")
"""struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }."""
_IP_MREQN = struct.Struct("@4s4si")
"""struct ip_mreqn { in_addr imr_multiaddr; in_addr imr_address; int imr_ifindex; }."""

_IFF_UP: Final = 0x1
_SYS_CLASS_NET = Path("/sys/class/net")

T = TypeVar("T")


class InterfaceError(ValueError):
    """An interface is missing, misnamed, has no IPv4 address or cannot carry SSDP."""


# ---- Interface names and addresses --------------------------------------------------------------


def check_ifname(ifname: str) -> str:
    """`ifname` when it is a valid Linux interface name, else InterfaceError (dev_valid_name)."""
    if (
        not isinstance(ifname, str)
        or not 0 < len(ifname.encode()) < IFNAMSIZ
        or ifname in (".", "..")
        or any(char in "/:" or char.isspace() for char in ifname)
    ):
        raise InterfaceError(f"invalid interface name {ifname!r}")
    return ifname


def interface_index(ifname: str) -> int:
    """The ifindex of `ifname` in the caller's network namespace; InterfaceError if absent."""
    try:
        return socket.if_nametoindex(check_ifname(ifname))
    except OSError:
        raise InterfaceError(f"interface {ifname} does not exist") from None


def _query_ipv4(ifname: str) -> tuple[IPv4Interface, ...]:
    """Blocking netlink dump of the IPv4 addresses of `ifname` (kernel order, primary first)."""
    with IPRoute() as ipr:
        indexes = ipr.link_lookup(ifname=ifname)
        if not indexes:
            raise InterfaceError(f"interface {ifname} does not exist")
        found: list[IPv4Interface] = []
        for message in ipr.addr("dump", family=socket.AF_INET, index=indexes[0]):
            if message["index"] != indexes[0]:
                continue
            local = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
            if local is None:
                continue
            address = IPv4Interface(f"{local}/{message['prefixlen']}")
            if address not in found:
                found.append(address)
    return tuple(found)


def _off_loop(function: Callable[[], T]) -> T:
    """`function()`, in a worker thread when this thread runs an event loop (pyroute2 sync API)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function()
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="igd-netif")
    try:
        return pool.submit(function).result(timeout=NETLINK_TIMEOUT_S)
    finally:
        pool.shutdown(wait=False)


def interface_ipv4(ifname: str) -> tuple[IPv4Interface, ...]:
    """IPv4 addresses (with prefix) of `ifname`, primary first; InterfaceError if none (GEN-02).

    Blocking (a few ms); callable with or without a running event loop.
    """
    check_ifname(ifname)
    try:
        addresses = _off_loop(lambda: _query_ipv4(ifname))
    except NetlinkError as exc:
        raise InterfaceError(f"interface {ifname}: netlink error {exc.code}") from None
    except concurrent.futures.TimeoutError:
        raise InterfaceError(f"interface {ifname}: netlink query timed out") from None
    if not addresses:
        raise InterfaceError(f"interface {ifname} has no IPv4 address")
    return addresses


# ---- Link counters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkCounters:
    """Kernel counters of one link (64-bit; the SOAP layer wraps them to ui4) and its state."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    up: bool
    """Administratively up and operationally up (or UNKNOWN with carrier, like lo)."""
    speed_mbps: int | None
    """Link speed from sysfs; None when the driver reports none (lo, veth, bridges: -1/EINVAL)."""


def _read_sys(path: Path) -> str | None:
    """A sysfs attribute, stripped; None when the driver refuses to report it (EINVAL etc.)."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise
    except OSError:
        return None


def _sys_int(path: Path, *, base: int = 10) -> int | None:
    text = _read_sys(path)
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def ipv4_forwarding(*, proc_sys: Path = Path("/proc/sys")) -> bool | None:
    """Whether this namespace routes IPv4 (net.ipv4.ip_forward); None when it cannot be read."""
    try:
        value = (proc_sys / "net" / "ipv4" / "ip_forward").read_text(encoding="ascii")
    except OSError:
        return None
    return value.strip() == "1"


def link_counters(ifname: str) -> LinkCounters:
    """Byte/packet counters, up state and speed of `ifname` from /sys/class/net (WCIC)."""
    base = _SYS_CLASS_NET / check_ifname(ifname)
    try:
        stats = base / "statistics"
        values = {
            name: _sys_int(stats / name) or 0
            for name in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
        }
        operstate = (_read_sys(base / "operstate") or "unknown").lower()
        flags = _sys_int(base / "flags", base=16) or 0
        carrier = _sys_int(base / "carrier") == 1
        speed = _sys_int(base / "speed")
    except FileNotFoundError:
        raise InterfaceError(f"interface {ifname} does not exist") from None
    up = bool(flags & _IFF_UP) and (operstate == "up" or (operstate == "unknown" and carrier))
    return LinkCounters(
        rx_bytes=values["rx_bytes"],
        tx_bytes=values["tx_bytes"],
        rx_packets=values["rx_packets"],
        tx_packets=values["tx_packets"],
        up=up,
        speed_mbps=speed if speed is not None and speed > 0 else None,
    )


# ---- The SSDP socket ----------------------------------------------------------------------------


def _mreqn(group: IPv4Address, address: IPv4Address, ifindex: int) -> bytes:
    return _IP_MREQN.pack(group.packed, address.packed, ifindex)


def open_ssdp_socket(
    ifname: str,
    *,
    port: int = SSDP_PORT,
    group: IPv4Address | str = SSDP_GROUP_V4,
    ttl: int = DEFAULT_MULTICAST_TTL,
) -> socket.socket:
    """A non-blocking UDP socket serving SSDP on `ifname` only (GEN-01/03, SSDP-30, ST-01).

    Bound to 0.0.0.0:`port` and to the device, member of `group` on that ifindex, IP_PKTINFO on,
    IP_MULTICAST_IF = that ifindex (no address, so it survives address changes), TTL `ttl`, loop
    on, IP_MULTICAST_ALL off. SO_REUSEADDR only: SO_REUSEPORT would let another process of our
    uid share the port and take a hashed share of unicast searches. `port=0` binds an ephemeral
    port (tests). InterfaceError for a missing interface or when SO_BINDTODEVICE is refused.
    """
    if not 0 <= port <= 65535:
        raise ValueError("port must be in 0..65535")
    if not 1 <= ttl <= 255:
        raise ValueError("ttl must be in 1..255")
    group = IPv4Address(group)
    if not group.is_multicast:
        raise ValueError(f"{group} is not a multicast group")
    ifindex = interface_index(ifname)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise InterfaceError(f"interface {ifname} does not exist") from None
            raise InterfaceError(
                f"cannot bind a socket to {ifname} ({exc.strerror}; Linux >= 5.7 or CAP_NET_RAW)"
            ) from None
        sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        any_address = IPv4Address(0)
        sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _mreqn(any_address, any_address, ifindex)
        )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.bind(("0.0.0.0", port))
        sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(group, any_address, ifindex)
        )
    except BaseException:
        sock.close()
        raise
    return sock


PORT_MAPPING_PORT: Final = 5351
"""NAT-PMP and PCP server port (RFC 6886 section 3, RFC 6887 section 19.1)."""
ANNOUNCE_TTL: Final = 1
"""224.0.0.1 is link-local: announcements never cross a router (PMP-11, PCP-51)."""


def open_port_mapping_socket(
    ifname: str, address: IPv4Address, *, port: int = PORT_MAPPING_PORT
) -> socket.socket:
    """A non-blocking UDP socket for NAT-PMP/PCP on `address`:`port` of `ifname` only (ST-03).

    Bound to the address and to the device: with Linux's weak-host model a socket bound only to
    the LAN address would also take datagrams that reach that address through the WAN. Multicast
    goes out of `ifname` with TTL 1 and no loop, so announcements to 224.0.0.1 stay on the LAN.
    `port=0` binds an ephemeral port (tests). InterfaceError when the interface is missing.
    """
    if not 0 <= port <= 65535:
        raise ValueError("port must be in 0..65535")
    ifindex = interface_index(ifname)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setblocking(False)  # no SO_REUSEADDR: a second server on this port must fail
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        except OSError as exc:
            raise InterfaceError(f"cannot bind a socket to {ifname} ({exc.strerror})") from None
        any_address = IPv4Address(0)
        sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _mreqn(any_address, address, ifindex)
        )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ANNOUNCE_TTL)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock.bind((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


_PROC_NET = Path("/proc/net")
_TCP_LISTEN = "0A"
_UDP_UNCONNECTED = "07"


def _proc_address(text: str) -> IPv4Address | IPv6Address:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return IPv4Address(raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return IPv6Address(b"".join(words))


def listening_ports(protocol: str, *, proc_net: Path = _PROC_NET) -> frozenset[int]:
    """Ports of this namespace's listening TCP or unconnected UDP sockets, loopback-only excluded.

    Read from /proc/net/{tcp,tcp6,udp,udp6} (ST-22: a port a gateway service listens on is not
    for mapping). `protocol` is "tcp" or "udp".
    """
    kind = protocol.lower()
    if kind not in ("tcp", "udp"):
        raise ValueError(f"protocol must be tcp or udp, not {protocol!r}")
    state = _TCP_LISTEN if kind == "tcp" else _UDP_UNCONNECTED
    ports: set[int] = set()
    for name in (kind, f"{kind}6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != state:
                continue
            address, _, port = fields[1].partition(":")
            if not _proc_address(address).is_loopback:
                ports.add(int(port, 16))
    return frozenset(ports)


class ListeningPorts:
    """`listening_ports` cached for `ttl_s` seconds per protocol: cheap enough per request."""

    def __init__(self, *, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[int]]] = {}

    def __call__(self, protocol: object) -> frozenset[int]:
        kind = getattr(protocol, "name", str(protocol)).lower()
        now = self._clock()
        cached = self._cache.get(kind)
        if cached is None or now - cached[0] >= self._ttl_s:
            cached = (now, listening_ports(kind))
            self._cache[kind] = cached
        return cached[1]


def peer_ipv4(
    transport: asyncio.BaseTransport | None, fallback: str | None = None
) -> IPv4Address | None:
    """A connection's IPv4 peer (an IPv4-mapped IPv6 one too), read from the socket itself."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    text = peer[0] if isinstance(peer, tuple) and peer else fallback
    if not isinstance(text, str):
        return None
    try:
        address = ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return address.ipv4_mapped if isinstance(address, IPv6Address) else address


class ReceivedDatagram(NamedTuple):
    """One received datagram with where it was going and where it arrived (IP_PKTINFO)."""

    data: bytes
    source: tuple[str, int]
    """(address, port) of the sender."""
    destination: IPv4Address | None
    """Destination address of the IP header: the group for multicast; None without IP_PKTINFO."""
    ifindex: int | None
    """Interface the datagram arrived on; None without IP_PKTINFO."""
    truncated: bool
    """True when the datagram was longer than the buffer (MSG_TRUNC): treat it as oversize."""


class DatagramReceiver(Protocol):
    """What `recv_with_destination` needs: socket.socket, or a fake in tests."""

    def recvmsg(
        self, bufsize: int, ancbufsize: int = ..., flags: int = ..., /
    ) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]: ...


def parse_pktinfo(ancillary: list[tuple[int, int, bytes]]) -> tuple[IPv4Address, int] | None:
    """(header destination address, arrival ifindex) from recvmsg ancillary data, or None."""
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= _IN_PKTINFO.size:
            ifindex, _spec_dst, destination = _IN_PKTINFO.unpack_from(payload)
            return IPv4Address(destination), ifindex
    return None


def recv_with_destination(sock: DatagramReceiver, bufsize: int = 4096) -> ReceivedDatagram:
    """One datagram (at most `bufsize` bytes) with its IP_PKTINFO; OSError as recvmsg raises."""
    data, ancillary, flags, source = sock.recvmsg(bufsize, RECV_ANCILLARY_BYTES)
    pktinfo = parse_pktinfo(ancillary)
    return ReceivedDatagram(
        data=data,
        source=(str(source[0]), int(source[1])),
        destination=pktinfo[0] if pktinfo else None,
        ifindex=pktinfo[1] if pktinfo else None,
        truncated=bool(flags & socket.MSG_TRUNC),
    )


def send_from(
    sock: socket.socket,
    data: bytes,
    destination: tuple[str, int],
    source: IPv4Address | None = None,
) -> int:
    """sendto, with the IPv4 source address chosen by IP_PKTINFO when `source` is given.

    The interface stays the socket's bound device. Raises OSError (BlockingIOError when the send
    buffer is full, EADDRNOTAVAIL / ENETUNREACH when `source` is no longer ours).
    """
    if source is None:
        return sock.sendto(data, destination)
    pktinfo = _IN_PKTINFO.pack(0, source.packed, bytes(4))
    return sock.sendmsg([data], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, destination)
