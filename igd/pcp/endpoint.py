"""UDP 5351 for NAT-PMP and PCP: moves datagrams between sockets and handlers (PCP-01/12, PMP-01).

The sockets arrive open, non-blocking and bound to one LAN address each (the daemon opens them
through `igd.netif`); replies leave through the socket the request came in on, so their source is
the address the client asked (PCP-02). Per received datagram:

1. drained with `add_reader` until EAGAIN, at most `MAX_DATAGRAMS_PER_WAKEUP` per wakeup;
2. budget: a token bucket per source address and at most `MAX_IN_FLIGHT` requests being served;
   over either, the datagram is dropped (PCP-08, ST-24);
3. demultiplexed on the version byte (PCP-12): 0 -> the NAT-PMP handler, anything else -> the PCP
   handler, which answers 2 and returns UNSUPP_VERSION for 1 and 3..255 (PCP-05);
4. the handler's answer, if any, is sent back to the source address and port.

Unsolicited announcements (PCP-51/52, PMP-11/12) go through the injected `announce` callable:
a burst of `announce_count` transmissions, 250 ms apart then doubling, at start and after every
external address change, which also restarts the PCP epoch (PCP-54, XP-04). Nothing raises out
of the reader callback or the tasks: faults are counted in `counters` and logged once per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from typing import Final, Protocol

from igd.natcore import Event, EventsDropped, ExternalAddressChanged
from igd.pcp.handler import PcpHandler
from igd.pcp.wire import MAX_MESSAGE_BYTES

__all__ = [
    "ANNOUNCE_FIRST_GAP_S",
    "ANNOUNCE_TRANSMISSIONS",
    "MAX_DATAGRAMS_PER_WAKEUP",
    "MAX_IN_FLIGHT",
    "RATE_BURST",
    "RATE_PER_S",
    "RECV_BUFFER_BYTES",
    "DatagramHandler",
    "EndpointCounters",
    "PortMappingEndpoint",
]

log = logging.getLogger(__name__)

RECV_BUFFER_BYTES: Final = 2048
"""Receive size: above 1100 so an oversize PCP request is seen as such (PCP-07)."""
MAX_DATAGRAMS_PER_WAKEUP: Final = 64
"""Datagrams read per reader callback before yielding to the loop."""
MAX_IN_FLIGHT: Final = 256
"""Requests being served at once; more are dropped, the client retransmits (PCP-08)."""
RATE_PER_S: Final = 20.0
"""Requests per second a single source may sustain (ST-24)."""
RATE_BURST: Final = 64.0
"""Requests a single source may send at once, e.g. a client mapping many ports (ST-24)."""
MAX_RATE_SOURCES: Final = 4096
"""Sources tracked by the rate limiter; the least recently seen is forgotten first."""
ANNOUNCE_TRANSMISSIONS: Final = 10
"""Unsolicited announcements per burst (PCP-52, PMP-12)."""
ANNOUNCE_FIRST_GAP_S: Final = 0.25
"""Gap after the first announcement; each later gap doubles (PCP-52, PMP-12)."""
NATPMP_VERSION: Final = 0


class DatagramHandler(Protocol):
    """A protocol handler: the answer to one datagram, or None (NatPmpHandler, PcpHandler)."""

    async def handle(
        self, data: bytes, source: tuple[str, int], *, destination: IPv4Address | None
    ) -> bytes | None: ...


@dataclass(slots=True)
class EndpointCounters:
    """Monotonic counters of the endpoint, for metrics; read them, never write them."""

    received: int = 0
    to_natpmp: int = 0
    to_pcp: int = 0
    dropped_empty: int = 0
    dropped_no_natpmp: int = 0
    """Version 0 while NAT-PMP is disabled."""
    dropped_rate: int = 0
    """Over the per-source token bucket (ST-24)."""
    dropped_overload: int = 0
    """Over MAX_IN_FLIGHT (PCP-08)."""
    unanswered: int = 0
    """The handler chose to drop the datagram (garbage, not from the LAN, ...)."""
    replies_sent: int = 0
    announcements_sent: int = 0
    send_errors: int = 0
    receive_errors: int = 0
    internal_errors: int = 0
    """Our own bugs caught in a callback or task; always 0 in a healthy daemon."""

    def as_dict(self) -> dict[str, int]:
        """Name -> value, for a metrics exporter."""
        return asdict(self)


class _TokenBuckets:
    """Per-source token buckets over a bounded LRU table (ST-24)."""

    def __init__(self, rate_per_s: float, burst: float, max_sources: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed


class PortMappingEndpoint:
    """NAT-PMP and PCP on UDP 5351 of each LAN address (PCP-01/02/12, PMP-01)."""

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        *,
        pcp: PcpHandler,
        natpmp: DatagramHandler | None,
        announce: Callable[[bytes], None] | None = None,
        natpmp_announcement: Callable[[], bytes | None] | None = None,
        announce_on_start: bool = True,
        announce_count: int = ANNOUNCE_TRANSMISSIONS,
        announce_first_gap_s: float = ANNOUNCE_FIRST_GAP_S,
        max_in_flight: int = MAX_IN_FLIGHT,
        rate_per_s: float = RATE_PER_S,
        rate_burst: float = RATE_BURST,
    ) -> None:
        for sock in sockets:
            if sock.type != socket.SOCK_DGRAM or sock.family != socket.AF_INET:
                raise ValueError(f"{sock!r} is not an IPv4 UDP socket")
            if sock.getblocking():
                raise ValueError(f"{sock!r} must be non-blocking")
        if announce_count < 0 or announce_first_gap_s <= 0 or max_in_flight < 1:
            raise ValueError("bad announcement or in-flight bounds")
        self._sockets = tuple(sockets)
        self.pcp = pcp
        self.natpmp = natpmp
        self._announce = announce
        self._natpmp_announcement = natpmp_announcement
        self._announce_on_start = announce_on_start
        self._announce_count = announce_count
        self._announce_first_gap_s = announce_first_gap_s
        self._max_in_flight = max_in_flight
        self._buckets = _TokenBuckets(rate_per_s, rate_burst, MAX_RATE_SOURCES)
        self.counters = EndpointCounters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._burst: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._close_events: Callable[[], None] | None = None
        self._logged: set[str] = set()

    # ---- Lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._loop is not None

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """The (address, port) each socket is bound to."""
        return tuple(_bound(sock) for sock in self._sockets)

    async def start(self) -> None:
        """Read every socket, follow external address changes, announce (PCP-51, PMP-11)."""
        if self._loop is not None:
            raise RuntimeError("PortMappingEndpoint already started")
        loop = asyncio.get_running_loop()
        added: list[socket.socket] = []
        try:
            for sock in self._sockets:
                host, _port = _bound(sock)
                destination = None if host == "0.0.0.0" else IPv4Address(host)
                loop.add_reader(sock.fileno(), self._on_readable, sock, destination)
                added.append(sock)
        except BaseException:
            for sock in added:
                loop.remove_reader(sock.fileno())
            raise
        self._loop = loop
        subscription = self.pcp.core.events(kinds={ExternalAddressChanged}, maxsize=16)
        self._close_events = subscription.close
        self._watcher = loop.create_task(self._watch(subscription), name="igd-pcp-address-watch")
        if self._announce_on_start:
            self._start_burst()

    async def stop(self) -> None:
        """Stop reading, cancel requests being served and announcements; idempotent.

        The sockets stay open: whoever opened them closes them.
        """
        loop = self._loop
        if loop is None:
            return
        self._loop = None
        for sock in self._sockets:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(sock.fileno())
        if self._close_events is not None:
            self._close_events()
            self._close_events = None
        tasks = [*self._in_flight, *(t for t in (self._burst, self._watcher) if t is not None)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._in_flight.clear()
        self._burst = self._watcher = None

    # ---- Announcements -----------------------------------------------------------------------

    def send_announcements(self) -> int:
        """Send a PCP ANNOUNCE and a NAT-PMP announcement now; the number sent (PCP-51, PMP-11)."""
        if self._announce is None:
            return 0
        payloads = [self.pcp.announcement()]
        if self._natpmp_announcement is not None:
            try:
                natpmp = self._natpmp_announcement()
            except Exception:
                self.counters.internal_errors += 1
                self._log_once("natpmp-announcement", logging.ERROR, "NAT-PMP announcement", True)
                natpmp = None
            if natpmp is not None:
                payloads.append(natpmp)
        sent = 0
        for payload in payloads:
            try:
                self._announce(payload)
            except Exception as exc:
                self.counters.send_errors += 1
                self._log_once(f"announce-{type(exc).__name__}", logging.WARNING, str(exc))
                continue
            sent += 1
        self.counters.announcements_sent += sent
        return sent

    def _start_burst(self) -> None:
        """(Re)start the announcement burst: 0, 0.25, 0.75, 1.75 ... s (PCP-52, PMP-12)."""
        if self._loop is None or self._announce is None or self._announce_count == 0:
            return
        if self._burst is not None:
            self._burst.cancel()
        self._burst = self._loop.create_task(self._announce_burst(), name="igd-pcp-announce")

    async def _announce_burst(self) -> None:
        gap = self._announce_first_gap_s
        for index in range(self._announce_count):
            if index:
                await asyncio.sleep(gap)
                gap *= 2
            self.send_announcements()

    async def _watch(self, events: AsyncIterator[Event]) -> None:
        """External address changed (or changes were lost): new epoch, announce (PCP-54, XP-04)."""
        try:
            async for event in events:
                if isinstance(event, ExternalAddressChanged | EventsDropped):
                    self.pcp.reset_epoch()
                    self._start_burst()
        except Exception:
            self.counters.internal_errors += 1
            self._log_once("watch", logging.ERROR, "external address watch failed", True)

    # ---- Receiving ---------------------------------------------------------------------------

    def _on_readable(self, sock: socket.socket, destination: IPv4Address | None) -> None:
        """Reader callback: drain a bounded number of datagrams; never raises."""
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            if self._loop is None:
                return
            try:
                data, address = sock.recvfrom(RECV_BUFFER_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters.receive_errors += 1
                self._log_once(f"recv-{exc.errno}", logging.WARNING, f"UDP 5351 receive: {exc}")
                return
            try:
                self._dispatch(sock, destination, data, (str(address[0]), int(address[1])))
            except Exception:
                self.counters.internal_errors += 1
                self._log_once("dispatch", logging.ERROR, "UDP 5351 dispatch failed", True)

    def _dispatch(
        self,
        sock: socket.socket,
        destination: IPv4Address | None,
        data: bytes,
        source: tuple[str, int],
    ) -> None:
        counters = self.counters
        counters.received += 1
        loop = self._loop
        assert loop is not None
        if not data:
            counters.dropped_empty += 1
            return
        handler: DatagramHandler
        if data[0] == NATPMP_VERSION:
            if self.natpmp is None:
                counters.dropped_no_natpmp += 1
                return
            handler = self.natpmp
        else:
            handler = self.pcp
        if not self._buckets.allow(source[0], loop.time()):
            counters.dropped_rate += 1
            return
        if len(self._in_flight) >= self._max_in_flight:
            counters.dropped_overload += 1
            return
        if handler is self.pcp:
            counters.to_pcp += 1
        else:
            counters.to_natpmp += 1
        task = loop.create_task(self._serve(handler, sock, destination, data, source))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _serve(
        self,
        handler: DatagramHandler,
        sock: socket.socket,
        destination: IPv4Address | None,
        data: bytes,
        source: tuple[str, int],
    ) -> None:
        try:
            reply = await handler.handle(data, source, destination=destination)
        except Exception:
            self.counters.internal_errors += 1
            self._log_once(f"handle-{type(handler).__name__}", logging.ERROR, "handler", True)
            return
        if reply is None:
            self.counters.unanswered += 1
            return
        if handler is self.pcp and len(reply) > MAX_MESSAGE_BYTES:
            self.counters.internal_errors += 1
            self._log_once("oversize", logging.ERROR, f"{len(reply)}-octet PCP reply not sent")
            return
        try:
            sock.sendto(reply, source)
        except OSError as exc:
            self.counters.send_errors += 1
            self._log_once(f"send-{exc.errno}", logging.WARNING, f"UDP 5351 send: {exc}")
            return
        self.counters.replies_sent += 1

    def _log_once(self, kind: str, level: int, message: str, exc_info: bool = False) -> None:
        if kind in self._logged:
            return
        self._logged.add(kind)
        log.log(level, "%s (further ones not logged)", message, exc_info=exc_info)


def _bound(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)
