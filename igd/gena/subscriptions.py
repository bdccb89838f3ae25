"""GENA subscriptions as data: header rules, the SID table, timeouts and SEQ (specs 1.6, ST-09/10).

Pure module (architecture.md 3.5): no asyncio, aiohttp, socket, time or random. `now` is a
parameter; SIDs come from an injected `new_sid` callable; `expire(now)` and `next_deadline()`
let an adapter drive the timers.

Request rules (`parse_request`), DA1.1 section 4.1:

- SUBSCRIBE without SID is a new subscription: NT must be `upnp:event` and CALLBACK present with
  at least one valid URL, else 412 (EVT-04); TIMEOUT `Second-n`; `Second-infinite`, an absent or
  an unreadable TIMEOUT all ask for the default (EVT-03); STATEVAR is ignored (EVT-17);
- SUBSCRIBE with SID is a renewal; SID together with NT or CALLBACK is 400 (EVT-05), an empty SID
  412 (EVT-06);
- UNSUBSCRIBE needs a SID (else 412) and no NT or CALLBACK (else 400) (EVT-07);
- any of SID, NT, CALLBACK, TIMEOUT given twice is 400 (which value would count is ambiguous).

Callback rule (EVT-12/13, ST-09, CVE-2020-12695): each URL must be `http://` + a dotted-quad IPv4
literal equal to the subscriber's own address + an optional port + an optional path of printable
ASCII, at most `MAX_CALLBACK_URL_BYTES`; invalid URLs are skipped, the valid ones kept in order
(at most `GenaSettings.max_callbacks`); none valid is 412.

Table rules (ST-10, EVT-15): at most `max_per_client` subscriptions per subscriber address (412
beyond) and `max_total` in all (503 beyond); the granted timeout is the request's clamped to
[min_timeout_s, max_timeout_s], never infinite (EVT-02/03). A renewal or UNSUBSCRIBE must come
from the subscriber's own address on the same event URL; otherwise the SID is unknown (412): a
SID seen by another host does not let that host cancel or prolong a subscription.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import Final

__all__ = [
    "DEFAULT_SETTINGS",
    "GENA_HEADERS",
    "MAX_CALLBACK_URL_BYTES",
    "SEQ_MAX",
    "Cancellation",
    "GenaRequest",
    "GenaSettings",
    "GenaStats",
    "NewSubscription",
    "Refusal",
    "Renewal",
    "Subscription",
    "SubscriptionTable",
    "following_seq",
    "format_timeout",
    "parse_callback_header",
    "parse_request",
    "parse_timeout",
    "valid_callback_url",
]

SEQ_MAX: Final = 0xFFFF_FFFF
"""Largest SEQ; the next one is 1, never 0 again (EVT-10)."""

MAX_CALLBACK_URL_BYTES: Final = 256
"""Longest CALLBACK URL accepted, in bytes (ST-09)."""

MAX_CALLBACK_ENTRIES: Final = 16
"""Most `<url>` entries read from one CALLBACK header; a longer list is refused whole (rule 5.7)."""

_MAX_TIMEOUT_DIGITS: Final = 10
_HUGE_TIMEOUT_S: Final = 10**_MAX_TIMEOUT_DIGITS
_SID_ATTEMPTS: Final = 4
_EVENT_NT: Final = "upnp:event"

GENA_HEADERS: Final = ("SID", "NT", "CALLBACK", "TIMEOUT")
"""The request headers `parse_request` reads, by upper-case name."""


@dataclass(frozen=True, slots=True)
class GenaSettings:
    """Every GENA limit and timing in one place, units in the names (rule 5.7, EVT-03/15, ST-10)."""

    max_total: int = 256
    max_per_client: int = 8
    min_timeout_s: int = 1800  # EVT-03: SHOULD be >= 1800
    max_timeout_s: int = 7200
    max_callbacks: int = 4
    attempt_timeout_s: float = 5.0  # EVT-15: <= 30 s per URL
    moderation_s: float = 0.2
    max_failures: int = 3
    poll_interval_s: float = 10.0
    max_timer_sleep_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_total < 1 or self.max_per_client < 1 or self.max_callbacks < 1:
            raise ValueError("max_total, max_per_client and max_callbacks must be >= 1")
        if not 1 <= self.min_timeout_s <= self.max_timeout_s:
            raise ValueError("need 1 <= min_timeout_s <= max_timeout_s")
        if self.max_callbacks * self.attempt_timeout_s > 30.0 or self.attempt_timeout_s <= 0:
            raise ValueError("every callback URL tried must fit in 30 s (EVT-15)")
        if self.moderation_s < 0 or self.max_failures < 1:
            raise ValueError("moderation_s must be >= 0 and max_failures >= 1")
        if self.poll_interval_s <= 0 or self.max_timer_sleep_s <= 0:
            raise ValueError("poll_interval_s and max_timer_sleep_s must be positive")


DEFAULT_SETTINGS: Final = GenaSettings()
"""The defaults: 256 in all, 8 per client, 1800..7200 s, 5 s per NOTIFY attempt."""


@dataclass
class GenaStats:
    """Metrics: requests by (method, outcome), notifications by outcome; bounded key sets."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    notifications: Counter[str] = field(default_factory=Counter)


class Refusal(enum.Enum):
    """Why a GENA request is refused; `status` is the HTTP answer (EVT-04..07, ST-09/10)."""

    SID_WITH_NT_OR_CALLBACK = "sid-with-nt-or-callback"
    DUPLICATE_HEADER = "duplicate-header"
    BAD_NT = "bad-nt"
    NO_CALLBACK = "no-callback"
    NO_VALID_CALLBACK = "no-valid-callback"
    MISSING_SID = "missing-sid"
    UNKNOWN_SID = "unknown-sid"
    CLIENT_LIMIT = "client-limit"
    TABLE_FULL = "table-full"

    @property
    def status(self) -> int:
        """400, 412 or 503."""
        return _REFUSAL_STATUS[self]


_REFUSAL_STATUS: Final[Mapping[Refusal, int]] = {
    Refusal.SID_WITH_NT_OR_CALLBACK: 400,  # EVT-05/07
    Refusal.DUPLICATE_HEADER: 400,
    Refusal.BAD_NT: 412,  # EVT-04
    Refusal.NO_CALLBACK: 412,  # EVT-04
    Refusal.NO_VALID_CALLBACK: 412,  # EVT-04/12/13, ST-09
    Refusal.MISSING_SID: 412,  # EVT-06/07
    Refusal.UNKNOWN_SID: 412,  # EVT-06/07
    Refusal.CLIENT_LIMIT: 412,  # ST-10
    Refusal.TABLE_FULL: 503,  # EVT-15, ST-10
}


@dataclass(frozen=True, slots=True)
class NewSubscription:
    """SUBSCRIBE with CALLBACK and NT: the raw URLs (unvalidated) and the requested timeout."""

    callbacks: tuple[str, ...]
    timeout_s: int | None


@dataclass(frozen=True, slots=True)
class Renewal:
    """SUBSCRIBE with SID (EVT-06)."""

    sid: str
    timeout_s: int | None


@dataclass(frozen=True, slots=True)
class Cancellation:
    """UNSUBSCRIBE with SID (EVT-07)."""

    sid: str


GenaRequest = NewSubscription | Renewal | Cancellation


@dataclass(frozen=True, slots=True)
class Subscription:
    """One accepted subscription: `callbacks` are validated and ordered (EVT-11/13)."""

    sid: str
    service_key: str
    subscriber: IPv4Address
    callbacks: tuple[str, ...]
    timeout_s: int
    expires_at: float


# ---- header parsing -----------------------------------------------------------------------------

_TIMEOUT: Final = re.compile(r"second-(?:(?P<n>[0-9]+)|(?P<inf>infinite))", re.ASCII | re.I)
_CALLBACK_LIST: Final = re.compile(r"(?:[ \t]*<[^<>]*>)+[ \t]*")
_CALLBACK_ENTRY: Final = re.compile(r"<([^<>]*)>")
_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_CALLBACK_URL: Final = re.compile(
    rf"http://(?P<host>{_OCTET}(?:\.{_OCTET}){{3}})(?::(?P<port>[0-9]{{1,5}}))?"
    r"(?P<path>/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?\[\]]*)?",
    re.ASCII | re.I,
)


def parse_timeout(value: str | None) -> int | None:
    """Seconds from `Second-n`; None for absent, `Second-infinite` or unreadable (EVT-03)."""
    if value is None:
        return None
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None or match["n"] is None:
        return None
    digits = match["n"].lstrip("0") or "0"
    if len(digits) > _MAX_TIMEOUT_DIGITS:
        return _HUGE_TIMEOUT_S  # the table clamps it to max_timeout_s
    return int(digits)


def format_timeout(seconds: int) -> str:
    """`Second-n`, never `Second-infinite` (EVT-02/03)."""
    return f"Second-{int(seconds)}"


def parse_callback_header(value: str) -> tuple[str, ...]:
    """The URLs of `<url1><url2>...` in order (EVT-01); () when malformed or too many entries."""
    if not _CALLBACK_LIST.fullmatch(value):
        return ()
    entries = _CALLBACK_ENTRY.findall(value)
    if len(entries) > MAX_CALLBACK_ENTRIES:
        return ()
    return tuple(entries)


def valid_callback_url(url: str, subscriber: IPv4Address) -> bool:
    """`http://<subscriber's own IPv4 literal>[:port][/path]`, <= 256 bytes (EVT-13, ST-09)."""
    if len(url.encode("utf-8")) > MAX_CALLBACK_URL_BYTES:
        return False
    match = _CALLBACK_URL.fullmatch(url)
    if match is None:
        return False
    if match["port"] is not None and not 1 <= int(match["port"]) <= 0xFFFF:
        return False
    return IPv4Address(match["host"]) == subscriber


def _single(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name, ())
    return values[0] if values else None


def parse_request(method: str, headers: Mapping[str, Sequence[str]]) -> GenaRequest | Refusal:
    """Classify SUBSCRIBE/UNSUBSCRIBE by its headers (upper-case name -> values) (EVT-04..07)."""
    if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
        raise ValueError(f"not a GENA method: {method!r}")
    if any(len(headers.get(name, ())) > 1 for name in GENA_HEADERS):
        return Refusal.DUPLICATE_HEADER
    sid = _single(headers, "SID")
    nt = _single(headers, "NT")
    callback = _single(headers, "CALLBACK")
    timeout = parse_timeout(_single(headers, "TIMEOUT"))
    if method == "UNSUBSCRIBE":
        if nt is not None or callback is not None:
            return Refusal.SID_WITH_NT_OR_CALLBACK  # EVT-07: 400
        if sid is None or not sid.strip():
            return Refusal.MISSING_SID
        return Cancellation(sid.strip())
    if sid is not None:
        if nt is not None or callback is not None:
            return Refusal.SID_WITH_NT_OR_CALLBACK  # EVT-05
        if not sid.strip():
            return Refusal.MISSING_SID  # EVT-06
        return Renewal(sid.strip(), timeout)
    if nt is None or nt.strip().casefold() != _EVENT_NT:
        return Refusal.BAD_NT  # EVT-04
    if callback is None:
        return Refusal.NO_CALLBACK  # EVT-04
    urls = parse_callback_header(callback)
    if not urls:
        return Refusal.NO_VALID_CALLBACK
    return NewSubscription(urls, timeout)


def following_seq(seq: int) -> int:
    """The SEQ after `seq`: +1, wrapping from 4294967295 to 1, never back to 0 (EVT-10)."""
    return 1 if seq >= SEQ_MAX else seq + 1


# ---- the table ----------------------------------------------------------------------------------


class SubscriptionTable:
    """SID -> Subscription with limits, timeouts and SEQ counters; callers `expire(now)` first."""

    def __init__(self, settings: GenaSettings = DEFAULT_SETTINGS) -> None:
        self.settings = settings
        self._subscriptions: dict[str, Subscription] = {}
        self._seq: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._subscriptions)

    def __contains__(self, sid: object) -> bool:
        return sid in self._subscriptions

    def get(self, sid: str) -> Subscription | None:
        """The subscription with this SID, expired or not, else None."""
        return self._subscriptions.get(sid)

    def subscriptions(self, service_key: str | None = None) -> tuple[Subscription, ...]:
        """Every subscription (of one service), in creation order."""
        return tuple(
            s
            for s in self._subscriptions.values()
            if service_key is None or s.service_key == service_key
        )

    def count_for(self, subscriber: IPv4Address) -> int:
        """How many subscriptions this address holds, across all services (ST-10)."""
        return sum(1 for s in self._subscriptions.values() if s.subscriber == subscriber)

    def grant_timeout(self, requested: int | None) -> int:
        """The requested seconds clamped to [min, max]; the minimum when none asked (EVT-03)."""
        settings = self.settings
        if requested is None:
            return settings.min_timeout_s
        return max(settings.min_timeout_s, min(requested, settings.max_timeout_s))

    def subscribe(
        self,
        service_key: str,
        callback_urls: Iterable[str],
        subscriber: IPv4Address,
        requested_timeout: int | None,
        now: float,
        new_sid: Callable[[], uuid.UUID],
    ) -> Subscription | Refusal:
        """A new subscription with the valid URLs only, or why not (EVT-02/04/13/15, ST-09/10)."""
        callbacks = tuple(url for url in callback_urls if valid_callback_url(url, subscriber))
        if not callbacks:
            return Refusal.NO_VALID_CALLBACK
        if len(self._subscriptions) >= self.settings.max_total:
            return Refusal.TABLE_FULL
        if self.count_for(subscriber) >= self.settings.max_per_client:
            return Refusal.CLIENT_LIMIT
        for _ in range(_SID_ATTEMPTS):
            sid = f"uuid:{new_sid()}"
            if sid not in self._subscriptions:
                break
        else:
            raise RuntimeError("new_sid keeps returning SIDs already in use")
        timeout = self.grant_timeout(requested_timeout)
        subscription = Subscription(
            sid=sid,
            service_key=service_key,
            subscriber=subscriber,
            callbacks=callbacks[: self.settings.max_callbacks],
            timeout_s=timeout,
            expires_at=now + timeout,
        )
        self._subscriptions[sid] = subscription
        self._seq[sid] = 0
        return subscription

    def _owned(
        self, sid: str, service_key: str, subscriber: IPv4Address, now: float
    ) -> Subscription | None:
        subscription = self._subscriptions.get(sid)
        if (
            subscription is None
            or subscription.service_key != service_key
            or subscription.subscriber != subscriber
            or subscription.expires_at <= now
        ):
            return None
        return subscription

    def renew(
        self,
        sid: str,
        requested_timeout: int | None,
        now: float,
        *,
        service_key: str,
        subscriber: IPv4Address,
    ) -> Subscription | Refusal:
        """Same SID, new timeout; SEQ untouched; unknown/expired/foreign SID 412 (EVT-06)."""
        subscription = self._owned(sid, service_key, subscriber, now)
        if subscription is None:
            return Refusal.UNKNOWN_SID
        timeout = self.grant_timeout(requested_timeout)
        renewed = replace(subscription, timeout_s=timeout, expires_at=now + timeout)
        self._subscriptions[sid] = renewed
        return renewed

    def unsubscribe(
        self, sid: str, now: float, *, service_key: str, subscriber: IPv4Address
    ) -> Subscription | Refusal:
        """Remove on UNSUBSCRIBE; unknown/expired/foreign SID 412 (EVT-07)."""
        if self._owned(sid, service_key, subscriber, now) is None:
            return Refusal.UNKNOWN_SID
        removed = self.remove(sid)
        assert removed is not None
        return removed

    def remove(self, sid: str) -> Subscription | None:
        """Forget a subscription (a dead subscriber, a failed response); None if unknown."""
        self._seq.pop(sid, None)
        return self._subscriptions.pop(sid, None)

    def expire(self, now: float) -> tuple[Subscription, ...]:
        """Remove and return every subscription whose time ran out (EVT-11, ST-10)."""
        expired = tuple(s for s in self._subscriptions.values() if s.expires_at <= now)
        for subscription in expired:
            self.remove(subscription.sid)
        return expired

    def next_deadline(self) -> float | None:
        """The earliest expiry, None when empty."""
        return min((s.expires_at for s in self._subscriptions.values()), default=None)

    def next_seq(self, sid: str) -> int:
        """The SEQ of the next message for `sid`: 0 first, then +1, wrapping to 1 (EVT-10)."""
        seq = self._seq[sid]
        self._seq[sid] = following_seq(seq)
        return seq
