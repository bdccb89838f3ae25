"""Connections from Linux rtnetlink: each link is one connection (ics-icf-model.md 1.4, 1.9).

Dumps go through pyroute2's `AsyncIPRoute`. Change notification uses a plain netlink socket
bound to RTMGRP_LINK | RTMGRP_IPV4_IFADDR and read by the event loop's reader callback: the
messages are drained and dropped (any one means "take a new snapshot"), so the receive queue is
the kernel's bounded socket buffer, and an overflow (ENOBUFS) is just one more change.

The link -> props mapping is pure (`status_from`, `media_type_from`, `device_name_from`,
`link_props`) so it is tested without a kernel.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncGenerator, Collection, Iterable, Mapping
from ipaddress import IPv4Interface
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netns import create_socket

from igd.natcore.connections import connection_guid
from igd.natcore.errors import BackendError
from igd.natcore.model import (
    ConnectionCharacteristics,
    ConnectionProps,
    ConnectionStatus,
    MediaType,
)

__all__ = [
    "DEBOUNCE_S",
    "NetlinkConnectionSource",
    "device_name_from",
    "link_props",
    "media_type_from",
    "status_from",
]

# <linux/if.h> interface flags
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40

# <linux/if_arp.h> hardware types
ARPHRD_ETHER = 1
ARPHRD_PPP = 512
ARPHRD_TUNNEL = 768
ARPHRD_TUNNEL6 = 769
ARPHRD_LOOPBACK = 772
ARPHRD_SIT = 776
ARPHRD_IPGRE = 778
ARPHRD_IP6GRE = 823
ARPHRD_NONE = 0xFFFE

# <linux/rtnetlink.h> multicast groups
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10

DEBOUNCE_S = 0.05
"""After the first change message, wait this long so a burst yields one snapshot."""

_DRAIN_DATAGRAMS_MAX = 64
_RECV_BYTES = 4096
_MONITOR_RCVBUF_BYTES = 256 * 1024

_TUNNEL_KINDS = frozenset(
    {
        "tun",
        "tap",
        "wireguard",
        "ipip",
        "gre",
        "gretap",
        "ip6gre",
        "ip6gretap",
        "sit",
        "vti",
        "vti6",
        "ip6tnl",
        "xfrm",
    }
)
_TUNNEL_ARPHRD = frozenset(
    {ARPHRD_NONE, ARPHRD_TUNNEL, ARPHRD_TUNNEL6, ARPHRD_SIT, ARPHRD_IPGRE, ARPHRD_IP6GRE}
)
_ARPHRD_NAMES = {ARPHRD_ETHER: "ethernet", ARPHRD_PPP: "ppp", ARPHRD_NONE: "none"}

_OPERSTATE_STATUS = {
    "UP": ConnectionStatus.CONNECTED,
    "DOWN": ConnectionStatus.MEDIA_DISCONNECTED,
    "LOWERLAYERDOWN": ConnectionStatus.MEDIA_DISCONNECTED,
    "NOTPRESENT": ConnectionStatus.HARDWARE_NOT_PRESENT,
    "DORMANT": ConnectionStatus.CONNECTING,
    "TESTING": ConnectionStatus.CONNECTING,
}


def status_from(flags: int, operstate: str | None) -> ConnectionStatus:
    """NETCON_STATUS of a link from its IFF_* flags and RFC 2863 operstate name (IFLA_OPERSTATE).

    Admin down wins (HARDWARE_DISABLED); UNKNOWN or a missing operstate (lo, tun, dummy) follows
    IFF_RUNNING.
    """
    if not flags & IFF_UP:
        return ConnectionStatus.HARDWARE_DISABLED
    status = _OPERSTATE_STATUS.get(operstate or "UNKNOWN")
    if status is not None:
        return status
    if flags & IFF_RUNNING:
        return ConnectionStatus.CONNECTED
    return ConnectionStatus.MEDIA_DISCONNECTED


def media_type_from(kind: str | None, arphrd: int, flags: int) -> MediaType:
    """NETCON_MEDIATYPE of a link from IFLA_INFO_KIND, ifi_type (ARPHRD_*) and IFF_* flags.

    The loopback is LAN: on Linux it can serve as a one-host LAN (the default `--lan lo`).
    """
    if kind == "bridge":
        return MediaType.BRIDGE
    if kind == "ppp" or arphrd == ARPHRD_PPP:
        return MediaType.PPPOE
    if kind in _TUNNEL_KINDS or arphrd in _TUNNEL_ARPHRD:
        return MediaType.TUNNEL
    if flags & IFF_LOOPBACK or arphrd in (ARPHRD_LOOPBACK, ARPHRD_ETHER):
        return MediaType.LAN
    return MediaType.NONE


def device_name_from(kind: str | None, arphrd: int, flags: int) -> str:
    """DeviceName of a link: its rtnl kind ("veth", "bridge"...), else "loopback", "ethernet"..."""
    if kind:
        return kind
    if flags & IFF_LOOPBACK or arphrd == ARPHRD_LOOPBACK:
        return "loopback"
    return _ARPHRD_NAMES.get(arphrd, f"arphrd-{arphrd}")


def link_props(
    *,
    ifname: str,
    ifindex: int,
    flags: int,
    operstate: str | None,
    kind: str | None,
    arphrd: int,
    bridged: bool = False,
    addresses: Iterable[IPv4Interface] = (),
) -> ConnectionProps:
    """The ConnectionProps of one link; characteristics are ALL_USERS, plus BRIDGED if bridged."""
    characteristics = ConnectionCharacteristics.ALL_USERS
    if bridged:
        characteristics |= ConnectionCharacteristics.BRIDGED
    return ConnectionProps(
        guid=connection_guid(ifname),
        name=ifname,
        device_name=device_name_from(kind, arphrd, flags),
        status=status_from(flags, operstate),
        media_type=media_type_from(kind, arphrd, flags),
        characteristics=characteristics,
        ifname=ifname,
        ifindex=ifindex,
        addresses=tuple(addresses),
        is_loopback=bool(flags & IFF_LOOPBACK),
    )


class NetlinkConnectionSource:
    """A ConnectionSource over rtnetlink, optionally inside the named network namespace `netns`.

    `ifnames` restricts the source to those interfaces (None: every link). The namespace must
    exist: it is never created.
    """

    def __init__(
        self,
        *,
        ifnames: Collection[str] | None = None,
        netns: str | None = None,
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        self._ifnames = None if ifnames is None else frozenset(ifnames)
        self._netns = netns
        self._debounce_s = debounce_s
        self._ipr: Any = None
        self._lock = asyncio.Lock()
        self._monitors: set[_Monitor] = set()
        self._delivered: tuple[ConnectionProps, ...] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def snapshot(self) -> tuple[ConnectionProps, ...]:
        """Every (selected) link now, ordered by ifindex; BackendError if netlink fails."""
        result = await self._dump()
        self._delivered = result
        return result

    async def changes(self) -> AsyncGenerator[tuple[ConnectionProps, ...], None]:
        """Yield a new snapshot when links or IPv4 addresses change, at most once per debounce."""
        if self._closed:
            return
        monitor = await self._subscribe()
        try:
            seen = await self._dump_unless_closed()
            if seen is None:
                return
            if self._delivered is not None and seen != self._delivered:
                self._delivered = seen
                yield seen
            while True:
                await monitor.woken.wait()
                if not monitor.closed:
                    await asyncio.sleep(self._debounce_s)
                monitor.woken.clear()
                if monitor.error is not None:
                    raise BackendError(
                        f"netlink change subscription{self._where()} failed: {monitor.error}"
                    ) from monitor.error
                current = await self._dump_unless_closed()
                if current is None:
                    return
                if current != seen:
                    seen = self._delivered = current
                    yield current
        finally:
            self._monitors.discard(monitor)
            monitor.close()

    async def aclose(self) -> None:
        """Close the netlink sockets and end every `changes()` iterator; idempotent."""
        self._closed = True
        for monitor in tuple(self._monitors):
            monitor.close()
        self._monitors.clear()
        async with self._lock:
            self._drop_route()

    def _where(self) -> str:
        return "" if self._netns is None else f" in netns {self._netns!r}"

    async def _open_socket(self, sock_type: int) -> socket.socket:
        """A NETLINK_ROUTE socket; in a namespace, made off-loop by a pyroute2 helper process."""
        try:
            if self._netns is None:
                return socket.socket(socket.AF_NETLINK, sock_type, socket.NETLINK_ROUTE)
            sock: socket.socket = await asyncio.to_thread(
                create_socket,
                self._netns,
                socket.AF_NETLINK,
                sock_type,
                socket.NETLINK_ROUTE,
                flags=0,
            )
        except FileNotFoundError as exc:
            raise BackendError(f"network namespace {self._netns!r} does not exist") from exc
        except (OSError, RuntimeError) as exc:
            raise BackendError(f"cannot open a netlink socket{self._where()}: {exc}") from exc
        return sock

    async def _subscribe(self) -> _Monitor:
        sock = await self._open_socket(socket.SOCK_RAW)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _MONITOR_RCVBUF_BYTES)
            sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise BackendError(f"cannot subscribe to netlink{self._where()}: {exc}") from exc
        monitor = _Monitor(sock, asyncio.get_running_loop())
        if self._closed:
            monitor.close()
        else:
            self._monitors.add(monitor)
        return monitor

    async def _route(self) -> Any:
        if self._ipr is None:
            if self._netns is None:
                self._ipr = AsyncIPRoute()
            else:
                sock = await self._open_socket(socket.SOCK_DGRAM)
                self._ipr = AsyncIPRoute(fileno=sock.detach())
        return self._ipr

    def _drop_route(self) -> None:
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            ipr.close()

    async def _dump_unless_closed(self) -> tuple[ConnectionProps, ...] | None:
        """A dump, or None once the source is closed (so an iterator ends instead of failing)."""
        if self._closed:
            return None
        try:
            return await self._dump()
        except BackendError:
            if self._closed:
                return None
            raise

    async def _dump(self) -> tuple[ConnectionProps, ...]:
        async with self._lock:
            if self._closed:
                raise BackendError(f"netlink connection source{self._where()} is closed")
            try:
                ipr = await self._route()
                links = [msg async for msg in await ipr.link("dump")]
                addrs = [msg async for msg in await ipr.addr("dump", family=socket.AF_INET)]
            except (OSError, RuntimeError, NetlinkError) as exc:
                self._drop_route()
                raise BackendError(f"netlink dump{self._where()} failed: {exc}") from exc
        return _props_from_dump(links, addrs, self._ifnames)


class _Monitor:
    """One change subscription: its socket is drained by the loop's reader and sets `woken`."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._buffer = bytearray(_RECV_BYTES)
        self.woken = asyncio.Event()
        self.error: OSError | None = None
        self.closed = False
        loop.add_reader(self._fd, self._drain)

    def _drain(self) -> None:
        got = False
        for _ in range(_DRAIN_DATAGRAMS_MAX):
            try:
                self._sock.recv_into(self._buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # ENOBUFS: messages were lost, a snapshot catches up
                    self.error = exc
                    self.close()
                    return
            got = True
        if got:
            self.woken.set()

    def close(self) -> None:
        """Stop reading and close the socket; wakes the iterator so it can end. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        self._sock.close()
        self.woken.set()


def _props_from_dump(
    links: Iterable[Any], addrs: Iterable[Any], ifnames: frozenset[str] | None
) -> tuple[ConnectionProps, ...]:
    kinds: dict[int, str | None] = {}
    for link in links:
        kinds[link["index"]] = link.get(("linkinfo", "kind"))
    addresses: dict[int, list[IPv4Interface]] = {}
    for addr in addrs:
        if addr["family"] != socket.AF_INET:
            continue
        local = addr.get("local") or addr.get("address")
        if local is None:
            continue
        addresses.setdefault(addr["index"], []).append(
            IPv4Interface(f"{local}/{addr['prefixlen']}")
        )
    result = []
    for link in links:
        ifname = link.get("ifname")
        if ifname is None or (ifnames is not None and ifname not in ifnames):
            continue
        result.append(_props_from_link(link, kinds, addresses))
    result.sort(key=lambda p: p.ifindex or 0)
    return tuple(result)


def _props_from_link(
    link: Any, kinds: Mapping[int, str | None], addresses: Mapping[int, list[IPv4Interface]]
) -> ConnectionProps:
    index: int = link["index"]
    master = link.get("master")
    bridged = link.get(("linkinfo", "slave_kind")) == "bridge" or (
        master is not None and kinds.get(master) == "bridge"
    )
    return link_props(
        ifname=link.get("ifname"),
        ifindex=index,
        flags=link["flags"],
        operstate=link.get("operstate"),
        kind=link.get(("linkinfo", "kind")),
        arphrd=link["ifi_type"],
        bridged=bridged,
        addresses=addresses.get(index, ()),
    )
