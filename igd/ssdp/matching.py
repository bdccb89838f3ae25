"""M-SEARCH -> replies with delays, source checks and a per-source reply budget (specs.md 1.3).

Pure module: the caller passes the advertised roots (plain data, built from the device table for
the interface the search arrived on), whether the search was multicast, a `draw(a, b)` function
for the random delays, and `now` for the limiter.

Dual roots (architecture.md 4b): the IGD:1 and the IGD:2 trees are two logical root devices.
A search for `urn:schemas-upnp-org:<category>:<kind>:n` is answered only by the roots that
implement that type at exactly version n when one exists, otherwise by those implementing a
higher version, with ST and USN rewritten to n (SSDP-40); never for a higher n (SSDP-41).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Final

from igd.ssdp.messages import SSDP_DISCOVER, MSearch

__all__ = [
    "ALL_TARGET",
    "DEFAULT_REPLY_BURST",
    "DEFAULT_REPLY_RATE_PER_S",
    "MAX_MX_S",
    "MAX_TRACKED_SOURCES",
    "ROOTDEVICE_TARGET",
    "STANDARD_DOMAIN",
    "AdvertisedRoot",
    "Advertisement",
    "Draw",
    "Reply",
    "ReplyLimiter",
    "TypeEntry",
    "forbidden_source",
    "plan_replies",
    "source_allowed",
]

MAX_MX_S: Final = 5
"""MX above 5 s is treated as 5 s (SSDP-33); delays are drawn in [0, min(MX, 5)] (SSDP-34)."""
ALL_TARGET: Final = "ssdp:all"
"""ST answered with every advertisement (SSDP-37)."""
ROOTDEVICE_TARGET: Final = "upnp:rootdevice"
"""ST answered by each root device (SSDP-38)."""
STANDARD_DOMAIN: Final = "schemas-upnp-org"
"""The only URN domain we implement types in; vendor domains get no answer (SSDP-41/42)."""

DEFAULT_REPLY_RATE_PER_S: Final = 32.0
"""Replies refilled per second and source: a dual-root ssdp:all (21 replies) a second (SSDP-48)."""
DEFAULT_REPLY_BURST: Final = 64
"""Replies a quiet source may get at once: three ssdp:all sets of both roots (SSDP-48, ST-04)."""
MAX_TRACKED_SOURCES: Final = 4096
"""Sources the limiter remembers; beyond this the least recently seen is forgotten (5.7)."""

Draw = Callable[[float, float], float]
"""A uniform draw in [a, b], e.g. `random.Random().uniform` (injected; SSDP-34)."""

TypeEntry = tuple[str, str, int]
"""(category "device" | "service", kind e.g. "WANIPConnection", version >= 1)."""

_URN = re.compile(r"urn:([^:]+):(device|service):([^:]+):([0-9]{1,9})")
"""`urn:domain:category:kind:version` as in ST / NT (SSDP-40/42)."""


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One member of a root's advertisement set: an NT and its USN (SSDP-02/03)."""

    nt: str
    usn: str


def _standard_type(target: str) -> tuple[str, str, int] | None:
    """(category, kind, version) of a standard-domain URN, else None."""
    match = _URN.fullmatch(target)
    if match is None or match.group(1) != STANDARD_DOMAIN:
        return None
    return match.group(2), match.group(3), int(match.group(4))


@dataclass(frozen=True, slots=True)
class AdvertisedRoot:
    """A root device as advertised on one interface: LOCATION, its set, its types (SSDP-02/45)."""

    location: str
    advertisements: tuple[Advertisement, ...]
    types: tuple[TypeEntry, ...]

    def __post_init__(self) -> None:
        nts = {ad.nt for ad in self.advertisements}
        for ad in self.advertisements:
            if ad.nt.startswith("urn:") and not ad.usn.endswith("::" + ad.nt):
                raise ValueError(f"USN {ad.usn!r} does not end with ::{ad.nt} (SSDP-03)")
        seen: set[tuple[str, str]] = set()
        for category, kind, version in self.types:
            if category not in ("device", "service") or version < 1 or (category, kind) in seen:
                raise ValueError(f"bad or repeated type entry {(category, kind, version)!r}")
            seen.add((category, kind))
            if f"urn:{STANDARD_DOMAIN}:{category}:{kind}:{version}" not in nts:
                raise ValueError(f"type {kind}:{version} has no advertisement")

    @classmethod
    def from_advertisements(
        cls, location: str, advertisements: Iterable[Advertisement]
    ) -> AdvertisedRoot:
        """A root whose `types` are read from the standard-domain URN NTs of its set."""
        ads = tuple(advertisements)
        types: dict[tuple[str, str], int] = {}
        for ad in ads:
            parsed = _standard_type(ad.nt)
            if parsed is not None:
                category, kind, version = parsed
                if types.setdefault((category, kind), version) != version:
                    raise ValueError(f"{kind} advertised at two versions in one root")
        return cls(location, ads, tuple((c, k, v) for (c, k), v in types.items()))

    def version_of(self, category: str, kind: str) -> int | None:
        """The version at which this root implements the type, or None."""
        for entry_category, entry_kind, version in self.types:
            if entry_category == category and entry_kind == kind:
                return version
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    """One search response to send after `delay_s` seconds (SSDP-34/40/43)."""

    st: str
    usn: str
    location: str
    delay_s: float


def _matches(search: MSearch, roots: Sequence[AdvertisedRoot]) -> list[tuple[str, str, str]]:
    """(ST, USN, LOCATION) for each answer to the search target (SSDP-37..41)."""
    target = search.target
    if target == ALL_TARGET:
        return [(ad.nt, ad.usn, root.location) for root in roots for ad in root.advertisements]
    if target == ROOTDEVICE_TARGET or target.startswith("uuid:"):
        wanted = target.lower()  # UUIDs compare case-insensitively (RFC 4122 section 3)
        return [
            (ad.nt, ad.usn, root.location)
            for root in roots
            for ad in root.advertisements
            if ad.nt.lower() == wanted
        ]
    parsed = _standard_type(target)
    if parsed is None:
        return []
    category, kind, requested = parsed
    if requested < 1:
        return []
    versions = [root.version_of(category, kind) for root in roots]
    exact = [root for root, v in zip(roots, versions, strict=True) if v == requested]
    chosen = exact or [
        root for root, v in zip(roots, versions, strict=True) if v is not None and v > requested
    ]
    answers: list[tuple[str, str, str]] = []
    for root in chosen:
        version = root.version_of(category, kind)
        nt = f"urn:{STANDARD_DOMAIN}:{category}:{kind}:{version}"
        st = f"urn:{STANDARD_DOMAIN}:{category}:{kind}:{requested}"
        answers.extend(
            (st, ad.usn[: -len(nt)] + st, root.location)
            for ad in root.advertisements
            if ad.nt == nt
        )
    return answers


def plan_replies(
    search: MSearch, roots: Sequence[AdvertisedRoot], *, multicast: bool, draw: Draw
) -> list[Reply]:
    """Replies to one M-SEARCH, each with its own delay; empty when it must be ignored.

    MAN must be `"ssdp:discover"` (SSDP-35). Multicast: MX missing -> ignore (SSDP-32), MX < 1
    -> ignore (SSDP-33 project rule, ST-05), delays uniform in [0, min(MX, 5)] (SSDP-33/34).
    Unicast: MX is not consulted and every delay is 0 (SSDP-36).
    """
    if search.man != SSDP_DISCOVER:
        return []
    window = 0.0
    if multicast:
        if search.mx is None or search.mx < 1:
            return []
        window = float(min(search.mx, MAX_MX_S))
    replies: list[Reply] = []
    for st, usn, location in _matches(search, roots):
        delay = 0.0
        if window > 0.0:
            drawn = draw(0.0, window)
            delay = min(max(drawn, 0.0), window) if math.isfinite(drawn) else 0.0
        replies.append(Reply(st=st, usn=usn, location=location, delay_s=delay))
    return replies


# ---- Sources (SSDP-46, ST-01, ST-04) ------------------------------------------------------------

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_THIS_NETWORK = IPv4Network("0.0.0.0/8")
_LIMITED_BROADCAST = IPv4Address("255.255.255.255")


def _address(address: str | IPAddress) -> IPAddress | None:
    """The address, IPv4-mapped IPv6 unwrapped to IPv4; None when it does not parse."""
    if isinstance(address, str):
        try:
            address = ip_address(address)
        except ValueError:
            return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forbidden_source(address: str | IPAddress) -> bool:
    """True for sources never answered: unparsable, unspecified, multicast, broadcast (ST-04)."""
    parsed = _address(address)
    if parsed is None or parsed.is_unspecified or parsed.is_multicast:
        return True
    return isinstance(parsed, IPv4Address) and (
        parsed == _LIMITED_BROADCAST or parsed in _THIS_NETWORK
    )


def source_allowed(
    address: str | IPAddress, lan_networks: Iterable[IPNetwork], *, port: int | None = None
) -> bool:
    """True when a search from `address` (and `port`) may be answered (SSDP-46, ST-01, ST-04).

    The address must be a host address of one of `lan_networks` (not its network or broadcast
    address when the prefix is /30 or shorter) and not `forbidden_source`; port 0 is refused.
    """
    if port is not None and not 0 < port <= 65535:
        return False
    parsed = _address(address)
    if parsed is None or forbidden_source(parsed):
        return False
    for network in lan_networks:
        if parsed.version != network.version or parsed not in network:
            continue
        edges = (network.network_address, network.broadcast_address)
        return not (
            isinstance(network, IPv4Network) and network.prefixlen <= 30 and parsed in edges
        )
    return False


# ---- Per-source reply budget (SSDP-48, ST-04) ---------------------------------------------------


_TOKEN_SLACK: Final = 1e-9
"""Tolerance for float refill arithmetic (0.1 s at 10/s must give a whole token)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class ReplyLimiter:
    """Token bucket per source address, in replies; memory bounded by `max_sources` (SSDP-48).

    A source idle long enough to have a full bucket again is forgotten (nothing is lost);
    past `max_sources` the least recently seen source is forgotten. Not thread-safe.
    """

    rate_per_s: float = DEFAULT_REPLY_RATE_PER_S
    burst: float = DEFAULT_REPLY_BURST
    max_sources: int = MAX_TRACKED_SOURCES
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict, init=False)

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0 or not self.burst >= 1 or self.max_sources < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and max_sources >= 1 are required")

    @property
    def refill_s(self) -> float:
        """Seconds an empty bucket needs to become full again."""
        return self.burst / self.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, source: str, now: float, cost: int = 1) -> bool:
        """Spend `cost` replies of `source`'s budget at `now`; False (nothing spent) if short."""
        if cost < 0:
            raise ValueError("cost must be >= 0")
        self._forget_idle(now)
        bucket = self._buckets.pop(source, None)
        if bucket is None:
            bucket = _Bucket(tokens=self.burst, updated=now)
        elapsed = max(0.0, now - bucket.updated)  # a clock going backwards refills nothing
        bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_s)
        bucket.updated = max(bucket.updated, now)
        allowed = bucket.tokens + _TOKEN_SLACK >= cost
        if allowed:
            bucket.tokens = max(0.0, bucket.tokens - cost)
        self._buckets[source] = bucket  # most recently seen last
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return allowed

    def _forget_idle(self, now: float) -> None:
        """Drop sources, oldest first, whose bucket would be full again at `now`."""
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.updated < self.refill_s:
                return
            self._buckets.popitem(last=False)
