"""UDP relay of the userspace backend: a session per WAN peer, each with its own upstream socket.

The public socket is drained until EAGAIN by an `add_reader` callback (bounded per callback).
A datagram from a new peer opens a session: a socket connected to the internal client, so the
target's replies come back on that socket alone and leave through the public socket to the
peer they belong to. Sessions live in an LRU (`OrderedDict`, most recently active last; a
burst of datagrams from one peer costs one lookup and one reordering), so the idle sweep only
looks at the oldest sessions and stops at the first one still active; it also has a per-call
bound. Datagrams from a peer other than the mapping's remote host, or beyond the
session limits, are dropped and counted; so are datagrams the kernel would not queue (EAGAIN).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import OrderedDict
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from igd.natcore.backends.relay_tcp import FlowBudget

__all__ = [
    "DATAGRAM_BATCH",
    "MAX_DATAGRAM_BYTES",
    "UdpListener",
    "UdpRelay",
    "UdpStats",
    "datagram_buffer",
    "open_udp_listener",
]

log = logging.getLogger(__name__)

MAX_DATAGRAM_BYTES: Final = 65535
"""Largest UDP payload over IPv4 (RFC 768 length field); the receive buffer's size."""
DATAGRAM_BATCH: Final = 256
"""Datagrams read per readiness callback before yielding to other callbacks."""
RECEIVE_BUFFER_BYTES: Final = 1 << 20
"""SO_RCVBUF asked for a public socket (the kernel caps it at net.core.rmem_max): with the
default ~208 KiB, a few hundred small datagrams fill it while the loop is busy elsewhere."""

_Peer = tuple[str, int]
_Table = OrderedDict[_Peer, "UdpSession"]


@dataclass(slots=True)
class UdpStats:
    """Counters of every UDP relay of a backend (monotonic, for logs and metrics)."""

    forwarded: int = 0
    returned: int = 0
    sessions_opened: int = 0
    sessions_expired: int = 0
    dropped_remote: int = 0
    dropped_limit: int = 0
    dropped_error: int = 0
    unreachable: int = 0  # ICMP errors from the target (port unreachable, ...)


def open_udp_listener(address: IPv4Address, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to address:port; OSError when the port cannot be had."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # No SO_REUSEADDR: on UDP it would let a second socket bind the same port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.bind((str(address), port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def datagram_buffer() -> memoryview:
    """A receive buffer for the relays of one event loop (each datagram is sent on at once)."""
    return memoryview(bytearray(MAX_DATAGRAM_BYTES))


class UdpListener:
    """A public UDP socket on one address; hands datagrams to its current relay."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.relay: UdpRelay | None = None

    def attach(self, relay: UdpRelay) -> None:
        """Serve `relay` from now on."""
        if self.relay is None:
            self.loop.add_reader(self.fd, self._on_readable)
        self.relay = relay

    def detach(self) -> None:
        """Stop reading (datagrams queue in the socket until attach or close)."""
        if self.relay is not None:
            self.loop.remove_reader(self.fd)
            self.relay = None

    def close(self) -> None:
        """Stop and close the socket."""
        self.detach()
        self.sock.close()

    def _on_readable(self) -> None:
        if self.relay is not None:
            self.relay.from_peers(self)


class UdpSession:
    """One WAN peer's flow: its upstream socket, connected to the internal client."""

    __slots__ = ("fd", "last_seen", "listener", "peer", "relay", "sock", "table")

    def __init__(
        self,
        relay: UdpRelay,
        listener: UdpListener,
        table: _Table,
        peer: _Peer,
        sock: socket.socket,
        now: float,
    ) -> None:
        self.relay = relay
        self.listener = listener
        self.table = table
        self.peer = peer
        self.sock = sock
        self.fd = sock.fileno()
        self.last_seen = now

    def from_target(self) -> None:
        """Drain the target's replies to the peer, through the public socket."""
        relay = self.relay
        stats = relay.stats
        recv_into = self.sock.recv_into
        sendto = self.listener.sock.sendto
        view = relay.view
        peer = self.peer
        count = 0
        for _ in range(DATAGRAM_BATCH):
            try:
                size = recv_into(view)
            except BlockingIOError:
                break
            except ConnectionRefusedError:  # ICMP port unreachable for an earlier datagram
                stats.unreachable += 1
                continue
            except OSError:
                stats.dropped_error += 1
                break
            try:
                sendto(view[:size], peer)
            except OSError:
                stats.dropped_error += 1
                continue
            count += 1
        if count:
            stats.returned += count
            self.last_seen = relay.loop.time()
            self.table.move_to_end(peer)

    def close(self) -> None:
        """Unregister and close the upstream socket (the table entry is the caller's)."""
        self.relay.loop.remove_reader(self.fd)
        self.sock.close()


class UdpRelay:
    """The relay of one UDP mapping: a session table per public socket, with limits."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        target: IPv4Address,
        target_port: int,
        remote_host: IPv4Address | None,
        max_flows: int,
        budget: FlowBudget,
        stats: UdpStats,
        buffer: memoryview,
    ) -> None:
        self.loop = loop
        self.target = target
        self.target_port = target_port
        self._address = (str(target), target_port)
        self._remote = None if remote_host is None else str(remote_host)
        self.max_flows = max_flows
        self.budget = budget
        self.stats = stats
        self.tables: dict[UdpListener, _Table] = {}
        self.flows = 0
        self.view = buffer  # shared by every relay of the loop: each read is used at once

    @property
    def listeners(self) -> list[UdpListener]:
        return list(self.tables)

    def set_listeners(self, listeners: list[UdpListener]) -> None:
        """Serve exactly these public sockets; sessions of a dropped one are closed."""
        for listener in list(self.tables):
            if listener not in listeners:
                self._close_table(self.tables.pop(listener))
                if listener.relay is self:
                    listener.detach()
        for listener in listeners:
            self.tables.setdefault(listener, OrderedDict())
            listener.attach(self)

    def from_peers(self, listener: UdpListener) -> None:
        """Drain the public socket: admit, then forward each datagram on its peer's session."""
        table = self.tables.get(listener)
        if table is None:
            return
        stats = self.stats
        recvfrom_into = listener.sock.recvfrom_into
        view = self.view
        remote = self._remote
        now = self.loop.time()
        last_peer: _Peer | None = None
        send = listener.sock.send  # replaced before first use: last_peer starts as None
        count = 0
        for _ in range(DATAGRAM_BATCH):
            try:
                size, peer = recvfrom_into(view)
            except BlockingIOError:
                break
            except OSError:
                stats.dropped_error += 1
                break
            if peer != last_peer:  # a burst from one peer costs one lookup
                session = table.get(peer)
                if session is None:
                    if remote is not None and peer[0] != remote:
                        stats.dropped_remote += 1
                        continue
                    session = self._open(listener, table, peer, now)
                    if session is None:
                        continue
                else:
                    table.move_to_end(peer)
                session.last_seen = now
                send = session.sock.send
                last_peer = peer
            try:
                send(view[:size])
            except OSError:  # EAGAIN, or ECONNREFUSED left by an earlier ICMP error
                stats.dropped_error += 1
                continue
            count += 1
        stats.forwarded += count

    def _open(
        self, listener: UdpListener, table: _Table, peer: _Peer, now: float
    ) -> UdpSession | None:
        if self.flows >= self.max_flows or not self.budget.take():
            self.stats.dropped_limit += 1
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self._address)
        except OSError as exc:
            sock.close()
            self.budget.give()
            self.stats.dropped_error += 1
            log.debug("no upstream socket for %s: %s", peer, exc)
            return None
        session = UdpSession(self, listener, table, peer, sock, now)
        table[peer] = session
        self.flows += 1
        self.stats.sessions_opened += 1
        self.loop.add_reader(session.fd, session.from_target)
        return session

    def expire(self, idle_before: float, limit: int) -> int:
        """Close up to `limit` sessions last active before `idle_before`; how many were closed."""
        closed = 0
        for table in self.tables.values():
            while table and closed < limit:
                peer, session = next(iter(table.items()))
                if session.last_seen >= idle_before:
                    break  # the table is in activity order: the rest are newer
                del table[peer]
                self._release(session)
                closed += 1
        self.stats.sessions_expired += closed
        return closed

    def _release(self, session: UdpSession) -> None:
        session.close()
        self.flows -= 1
        self.budget.give()

    def _close_table(self, table: _Table) -> None:
        while table:
            _, session = table.popitem(last=False)
            self._release(session)

    def close(self) -> None:
        """Stop reading and close every session at once."""
        self.set_listeners([])
