"""The asyncio SSDP responder of one LAN interface: moves bytes and arms timers (specs.md 1.2, 1.3).

Every decision is in the pure modules (`matching`, `schedule`, `messages`); the socket and all its
options come from `igd.netif`. Per received datagram, in this order:

1. destination: the group (multicast search) or one of this interface's addresses (unicast
   search); anything else, e.g. the WAN address reached through the LAN port, is dropped (ST-33);
2. source: a host address of one of this interface's networks (SSDP-46, ST-01, ST-04);
3. parse (SsdpParseError: drop, count, log once); NOTIFY from others is ignored (SSDP-21);
4. `plan_replies` with the roots advertised for the address on the searcher's subnet (SSDP-45);
5. budget: bounded pending replies, a per-source and a global `ReplyLimiter` (SSDP-48, ST-04);
6. each reply is sent unicast from the SSDP port to the searcher after its delay (SSDP-34/43).

NOTIFY: the byebye set then two alive sets at start (SSDP-13/14/16), alive sets again at a random
interval below max-age/2 (SSDP-15), ssdp:update + alive on an address change (SSDP-19/22) and the
byebye set at stop (SSDP-17). Nothing raises out of the reader or timer callbacks: faults are
counted in `counters` and logged once per kind.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import Final

from igd.netif import (
    DEFAULT_MULTICAST_TTL,
    SSDP_GROUP_V4,
    SSDP_PORT,
    ReceivedDatagram,
    check_ifname,
    interface_index,
    open_ssdp_socket,
    recv_with_destination,
    send_from,
)
from igd.ssdp.matching import (
    AdvertisedRoot,
    Advertisement,
    Draw,
    ReplyLimiter,
    plan_replies,
    source_allowed,
)
from igd.ssdp.messages import (
    MAX_DATAGRAM_BYTES,
    SSDP_HOST_V4,
    Notify,
    SsdpParseError,
    http_date,
    parse_datagram,
)
from igd.ssdp.schedule import (
    DEFAULT_MAX_AGE_S,
    BootState,
    NotifyPlan,
    ScheduledDatagram,
    next_boot_id,
    next_readvertise_delay,
)
from igd.upnp import RootDevice

__all__ = [
    "GLOBAL_REPLY_BURST",
    "GLOBAL_REPLY_RATE_PER_S",
    "MAX_ADDRESSES",
    "MAX_DATAGRAMS_PER_WAKEUP",
    "MAX_PENDING_REPLIES",
    "SsdpCounters",
    "SsdpResponder",
]

MAX_PENDING_REPLIES: Final = 512
"""Search replies waiting for their delay, all sources together (5.7, SSDP-34/48)."""
GLOBAL_REPLY_RATE_PER_S: Final = 256.0
"""Replies per second refilled for all sources together (SSDP-48, ST-04)."""
GLOBAL_REPLY_BURST: Final = 512
"""Replies all sources together may get at once (SSDP-48, ST-04)."""
MAX_DATAGRAMS_PER_WAKEUP: Final = 64
"""Datagrams read per reader callback before yielding to the loop (5.7)."""
MAX_ADDRESSES: Final = 16
"""IPv4 addresses served on one interface; each multiplies the NOTIFY sets (5.7)."""
RECV_BUFFER_BYTES: Final = MAX_DATAGRAM_BYTES + 1
"""One byte more than parsed, so an oversize datagram is seen as such."""
_TIMER_SLACK_S: Final = 0.001
"""Entries due this close to now are sent in the same timer callback."""

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class SsdpCounters:
    """Monotonic counters of one responder, for metrics; read them, never write them."""

    received: int = 0
    dropped_destination: int = 0
    """Not for the group nor one of this interface's addresses, or on another interface."""
    dropped_source: int = 0
    """Source outside this interface's networks, or multicast/broadcast/port 0 (SSDP-46)."""
    dropped_parse: int = 0
    """Malformed or oversize datagrams (SsdpParseError)."""
    dropped_limit: int = 0
    """Searches refused by the pending cap or a reply limiter (SSDP-48)."""
    ignored_own: int = 0
    """Our own multicast coming back (IP_MULTICAST_LOOP), or anything from our address:port."""
    ignored_notify: int = 0
    """NOTIFY from other devices (SSDP-21)."""
    unanswered: int = 0
    """Well-formed M-SEARCH with nothing to answer: MAN, MX or ST (SSDP-32/33/35/41)."""
    replies_sent: int = 0
    notifies_sent: int = 0
    send_errors: int = 0
    receive_errors: int = 0
    internal_errors: int = 0
    """Our own bugs caught in a callback; always 0 in a healthy daemon."""

    def as_dict(self) -> dict[str, int]:
        """Name -> value, for a metrics exporter."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Advertised:
    """What one interface address advertises: per root, its AdvertisedRoot and NotifyPlan."""

    address: IPv4Interface
    roots: tuple[AdvertisedRoot, ...]
    plans: tuple[NotifyPlan, ...]

    def plan_for(self, location: str) -> NotifyPlan:
        """The plan (BOOTID/CONFIGID) of the root whose LOCATION is `location`."""
        for root, plan in zip(self.roots, self.plans, strict=True):
            if root.location == location:
                return plan
        raise LookupError(location)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A datagram waiting for its time."""

    data: bytes
    destination: tuple[str, int]
    source: IPv4Address | None
    is_reply: bool


def _fixed_draw(rng: random.Random) -> Draw:
    """A draw giving the same relative position in every interval: one jitter for many plans."""
    fraction = rng.random()
    return lambda low, high: low + (high - low) * fraction


def _check_addresses(addresses: Iterable[IPv4Interface]) -> tuple[IPv4Interface, ...]:
    result = tuple(addresses)
    if not 1 <= len(result) <= MAX_ADDRESSES:
        raise ValueError(f"an SSDP interface needs 1..{MAX_ADDRESSES} IPv4 addresses")
    for address in result:
        if not isinstance(address, IPv4Interface):
            raise TypeError(f"{address!r} is not an IPv4Interface")
        if address.ip.is_multicast or address.ip.is_unspecified:
            raise ValueError(f"{address} cannot be an interface address")
    if len({address.ip for address in result}) != len(result):
        raise ValueError("duplicate interface addresses")
    return result


class SsdpResponder:
    """SSDP on one LAN interface: answers searches and sends NOTIFYs for the given roots."""

    def __init__(
        self,
        ifname: str,
        addresses: Sequence[IPv4Interface],
        roots: Sequence[RootDevice],
        http_port: int,
        *,
        boot_id: int,
        config_ids: Mapping[int, int],
        server: str,
        port: int = SSDP_PORT,
        max_age_s: int = DEFAULT_MAX_AGE_S,
        ttl: int = DEFAULT_MULTICAST_TTL,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        limiter: ReplyLimiter | None = None,
        global_limiter: ReplyLimiter | None = None,
    ) -> None:
        """Validate and prepare; nothing is opened before `start` (SSDP-02/09/10/45).

        `boot_id` is this run's BOOTID (the daemon computes it with `next_boot_id` and persists
        it); `config_ids` maps each root's version to its CONFIGID; `port=0` binds an ephemeral
        port (tests); `clock` is wall time for the DATE header only.
        """
        self._ifname = check_ifname(ifname)
        self._roots = tuple(roots)
        if not self._roots:
            raise ValueError("at least one root device is required")
        versions = [root.version for root in self._roots]
        if len(set(versions)) != len(versions):
            raise ValueError("root device versions must be distinct (they key config_ids)")
        paths = [root.description_path for root in self._roots]
        if len(set(paths)) != len(paths):
            raise ValueError("root devices need distinct description paths (LOCATION)")
        missing = [version for version in versions if version not in config_ids]
        if missing:
            raise ValueError(f"config_ids has no CONFIGID for root versions {missing}")
        self._config_ids = {version: config_ids[version] for version in versions}
        if not 0 < http_port <= 65535 or not 0 <= port <= 65535:
            raise ValueError("http_port must be in 1..65535 and port in 0..65535")
        if not 1 <= ttl <= 255:
            raise ValueError("ttl must be in 1..255")
        self._http_port = http_port
        self._requested_port = port
        self._port = port
        self._server = server
        self._max_age_s = max_age_s
        self._ttl = ttl
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._limiter = limiter if limiter is not None else ReplyLimiter()
        self._global_limiter = (
            global_limiter
            if global_limiter is not None
            else ReplyLimiter(GLOBAL_REPLY_RATE_PER_S, GLOBAL_REPLY_BURST, max_sources=1)
        )
        self._addresses = _check_addresses(addresses)
        self._boot_id = boot_id
        self._advertised = self._advertise(self._addresses, boot_id)
        for advertised in self._advertised:  # SsdpBuildError now rather than in a callback
            for plan in advertised.plans:
                plan.alive_set()
        self.counters = SsdpCounters()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ifindex = 0
        self._queue: list[tuple[float, int, _Outgoing]] = []
        self._sequence = itertools.count()
        self._pending_replies = 0
        self._timer: asyncio.TimerHandle | None = None
        self._readvertise_timer: asyncio.TimerHandle | None = None
        self._logged: set[str] = set()

    # ---- Properties --------------------------------------------------------------------------

    @property
    def ifname(self) -> str:
        """The interface served."""
        return self._ifname

    @property
    def addresses(self) -> tuple[IPv4Interface, ...]:
        """The interface addresses advertised, in LOCATION preference order."""
        return self._addresses

    @property
    def port(self) -> int:
        """The bound SSDP port once started (the requested one before)."""
        return self._port

    @property
    def boot_id(self) -> int:
        """The BOOTID in use; changes on `update_addresses` (persist it, SSDP-09)."""
        return self._boot_id

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._sock is not None

    @property
    def pending_replies(self) -> int:
        """Search replies waiting for their delay."""
        return self._pending_replies

    # ---- Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the interface's SSDP socket, read searches, send byebye then alive (SSDP-16)."""
        if self._sock is not None:
            raise RuntimeError("SsdpResponder already started")
        loop = asyncio.get_running_loop()
        self._ifindex = interface_index(self._ifname)
        sock = open_ssdp_socket(self._ifname, port=self._requested_port, ttl=self._ttl)
        try:
            self._port = sock.getsockname()[1]
            self._advertised = self._advertise(self._addresses, self._boot_id)
            loop.add_reader(sock.fileno(), self._on_readable)
        except BaseException:
            sock.close()
            raise
        self._loop = loop
        self._sock = sock
        for advertised in self._advertised:
            self._schedule(self._startup(advertised), advertised.address.ip)
        self._arm_readvertise()
        _log.info(
            "SSDP on %s port %d for %s, BOOTID %d",
            self._ifname,
            self._port,
            ", ".join(str(a) for a in self._addresses),
            self._boot_id,
        )

    async def stop(self) -> None:
        """Drop pending sends, multicast the byebye set (SSDP-17), close; idempotent."""
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        loop.remove_reader(sock.fileno())
        for handle in (self._timer, self._readvertise_timer):
            if handle is not None:
                handle.cancel()
        self._timer = self._readvertise_timer = None
        self._queue.clear()
        self._pending_replies = 0
        for advertised in self._advertised:
            for plan in advertised.plans:
                for message in plan.shutdown_messages():
                    self._send(_Outgoing(message.data, self._group, advertised.address.ip, False))
        self._sock = None
        self._loop = None
        sock.close()

    def update_addresses(
        self, addresses: Sequence[IPv4Interface], *, boot_id: int | None = None
    ) -> int:
        """Advertise a new address set; returns the BOOTID now in use (SSDP-19/22).

        Unchanged set: nothing happens. Otherwise the BOOTID becomes `boot_id` (default: the
        next one); kept addresses send ssdp:update then alive, removed ones byebye, added ones
        the start-up sequence. Call it from the event loop's thread.
        """
        new_addresses = _check_addresses(addresses)
        if new_addresses == self._addresses:
            return self._boot_id
        if boot_id is not None and boot_id <= self._boot_id:
            raise ValueError("a new BOOTID must exceed the running one (SSDP-19)")
        new_boot = boot_id if boot_id is not None else next_boot_id(self._boot_id)
        new_advertised = self._advertise(new_addresses, new_boot)
        old_boot, old_advertised = self._boot_id, self._advertised
        self._addresses, self._boot_id, self._advertised = new_addresses, new_boot, new_advertised
        if self._sock is None:
            return new_boot
        draw = _fixed_draw(self._rng)
        old_by_ip = {advertised.address.ip: advertised for advertised in old_advertised}
        for new in new_advertised:
            old = old_by_ip.pop(new.address.ip, None)
            messages: list[ScheduledDatagram] = []
            if old is None:
                messages = self._startup(new)
            elif new_boot > old_boot:
                for old_plan, new_plan in zip(old.plans, new.plans, strict=True):
                    messages += old_plan.address_change_messages(new_plan, draw)
            else:  # BOOTID wrapped at 2**31 - 1: no ssdp:update can announce it
                messages = [m for p in old.plans for m in p.shutdown_messages()]
                messages += self._startup(new)
            self._schedule(messages, new.address.ip)
        for gone in old_by_ip.values():  # its address may be gone: let the kernel pick a source
            self._schedule([m for p in gone.plans for m in p.shutdown_messages()], None)
        self._arm_readvertise()
        _log.info(
            "SSDP on %s: addresses now %s, BOOTID %d",
            self._ifname,
            ", ".join(str(a) for a in new_addresses),
            new_boot,
        )
        return new_boot

    # ---- Advertisement data ------------------------------------------------------------------

    @property
    def _group(self) -> tuple[str, int]:
        return (str(SSDP_GROUP_V4), self._port)

    def _advertise(
        self, addresses: tuple[IPv4Interface, ...], boot_id: int
    ) -> tuple[_Advertised, ...]:
        """Per address: each root with that address in LOCATION, and its NOTIFY plan (SSDP-45)."""
        host = SSDP_HOST_V4 if self._port == SSDP_PORT else f"{SSDP_GROUP_V4}:{self._port}"
        result = []
        for address in addresses:
            roots = tuple(
                AdvertisedRoot(
                    location=f"http://{address.ip}:{self._http_port}{root.description_path}",
                    advertisements=tuple(
                        Advertisement(ad.nt, ad.usn) for ad in root.advertisements()
                    ),
                    types=tuple((t.category, t.kind, t.version) for t in root.types()),
                )
                for root in self._roots
            )
            plans = tuple(
                NotifyPlan.of(
                    [advertised],
                    BootState(boot_id, self._config_ids[root.version]),
                    self._server,
                    max_age_s=self._max_age_s,
                    host=host,
                )
                for advertised, root in zip(roots, self._roots, strict=True)
            )
            result.append(_Advertised(address, roots, plans))
        return tuple(result)

    def _startup(self, advertised: _Advertised) -> list[ScheduledDatagram]:
        """Byebye then alive sets of every root, with one shared jitter (SSDP-13/14/16)."""
        draw = _fixed_draw(self._rng)
        return [m for plan in advertised.plans for m in plan.startup_messages(draw)]

    def _arm_readvertise(self) -> None:
        if self._loop is None:
            return
        if self._readvertise_timer is not None:
            self._readvertise_timer.cancel()
        delay = next_readvertise_delay(self._max_age_s, self._rng.uniform)
        self._readvertise_timer = self._loop.call_later(delay, self._readvertise)

    def _readvertise(self) -> None:
        """Alive sets again before max-age runs out (SSDP-15)."""
        self._readvertise_timer = None
        try:
            for advertised in self._advertised:
                messages = [m for plan in advertised.plans for m in plan.readvertise_messages()]
                self._schedule(messages, advertised.address.ip)
            self._arm_readvertise()
        except Exception:
            self.counters.internal_errors += 1
            self._log_once("readvertise", logging.ERROR, "SSDP re-advertisement failed", True)

    # ---- Receiving ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        """Reader callback: drain a bounded number of datagrams; never raises."""
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            sock = self._sock
            if sock is None:
                return
            try:
                datagram = recv_with_destination(sock, RECV_BUFFER_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters.receive_errors += 1
                self._log_once(f"recv-{exc.errno}", logging.WARNING, f"SSDP receive: {exc}")
                return
            try:
                self._handle(datagram)
            except Exception:
                self.counters.internal_errors += 1
                self._log_once("handle", logging.ERROR, "SSDP datagram handling failed", True)

    def _handle(self, datagram: ReceivedDatagram) -> None:
        """One datagram through destination, source, parse, plan and budget checks."""
        counters = self.counters
        counters.received += 1
        host, source_port = datagram.source
        if datagram.ifindex is not None and datagram.ifindex != self._ifindex:
            counters.dropped_destination += 1
            return
        if source_port == self._port and any(str(a.ip) == host for a in self._addresses):
            counters.ignored_own += 1
            return
        destination = datagram.destination
        multicast = destination == SSDP_GROUP_V4
        if multicast:
            advertised = next((a for a in self._advertised if _in_network(host, a.address)), None)
        else:
            advertised = next((a for a in self._advertised if a.address.ip == destination), None)
        if advertised is None and not multicast:
            counters.dropped_destination += 1
            return
        networks = [address.network for address in self._addresses]
        if advertised is None or not source_allowed(host, networks, port=source_port):
            counters.dropped_source += 1
            return
        if datagram.truncated:
            counters.dropped_parse += 1
            self._log_once("oversize", logging.INFO, f"SSDP: oversize datagram from {host}")
            return
        try:
            message = parse_datagram(datagram.data)
        except SsdpParseError as exc:
            counters.dropped_parse += 1
            self._log_once("parse", logging.INFO, f"SSDP: malformed datagram from {host}: {exc}")
            return
        if isinstance(message, Notify):
            counters.ignored_notify += 1
            return
        replies = plan_replies(
            message, advertised.roots, multicast=multicast, draw=self._rng.uniform
        )
        if not replies:
            counters.unanswered += 1
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        cost = len(replies)
        if (
            self._pending_replies + cost > MAX_PENDING_REPLIES
            or not self._limiter.allow(host, now, cost)
            or not self._global_limiter.allow("*", now, cost)
        ):
            counters.dropped_limit += 1
            self._log_once("limit", logging.WARNING, f"SSDP: reply budget exceeded ({host})")
            return
        date = http_date(self._clock())
        for reply in replies:
            data = advertised.plan_for(reply.location).search_response(reply, date=date)
            outgoing = _Outgoing(data, (host, source_port), advertised.address.ip, True)
            self._enqueue(reply.delay_s, outgoing)

    # ---- Sending -----------------------------------------------------------------------------

    def _schedule(self, messages: list[ScheduledDatagram], source: IPv4Address | None) -> None:
        """Multicast `messages` at their delays, in list order for equal delays."""
        order = sorted(range(len(messages)), key=lambda index: messages[index].delay_s)
        for index in order:
            message = messages[index]
            self._enqueue(message.delay_s, _Outgoing(message.data, self._group, source, False))

    def _enqueue(self, delay_s: float, outgoing: _Outgoing) -> None:
        loop = self._loop
        if loop is None:
            return
        delay = delay_s if math.isfinite(delay_s) and delay_s > 0 else 0.0
        heapq.heappush(self._queue, (loop.time() + delay, next(self._sequence), outgoing))
        if outgoing.is_reply:
            self._pending_replies += 1
        self._arm()

    def _arm(self) -> None:
        """Keep one timer, at the earliest due datagram."""
        loop = self._loop
        if loop is None or not self._queue:
            return
        due = self._queue[0][0]
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()
        self._timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        """Timer callback: send everything due, re-arm; never raises."""
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        try:
            now = loop.time() + _TIMER_SLACK_S
            while self._queue and self._queue[0][0] <= now:
                _, _, outgoing = heapq.heappop(self._queue)
                if outgoing.is_reply:
                    self._pending_replies -= 1
                self._send(outgoing)
            self._arm()
        except Exception:
            self.counters.internal_errors += 1
            self._log_once("flush", logging.ERROR, "SSDP send queue failed", True)

    def _send(self, outgoing: _Outgoing) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            send_from(sock, outgoing.data, outgoing.destination, outgoing.source)
        except OSError as exc:
            self.counters.send_errors += 1
            self._log_once(
                f"send-{exc.errno}", logging.WARNING, f"SSDP send to {outgoing.destination}: {exc}"
            )
            return
        if outgoing.is_reply:
            self.counters.replies_sent += 1
        else:
            self.counters.notifies_sent += 1

    def _log_once(self, kind: str, level: int, message: str, exc_info: bool = False) -> None:
        if kind in self._logged:
            return
        self._logged.add(kind)
        _log.log(
            level, "%s (%s; further ones not logged)", message, self._ifname, exc_info=exc_info
        )


def _in_network(host: str, address: IPv4Interface) -> bool:
    try:
        return IPv4Address(host) in address.network
    except ValueError:
        return False
