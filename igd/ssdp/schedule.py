"""NOTIFY schedules and the BOOTID / CONFIGID rules (specs.md 1.2: SSDP-09/10/13..19/22).

Pure module: a plan returns `(delay_s, datagram)` pairs, `delay_s` counted from the moment the
plan is asked for, in sending order (equal delays: send in list order). The asyncio responder
sends them on one interface; randomness arrives as `draw(a, b)` (e.g. `random.Random().uniform`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from igd.ssdp.matching import AdvertisedRoot, Draw, Reply
from igd.ssdp.messages import (
    BOOT_ID_MAX,
    CONFIG_ID_MAX,
    SSDP_HOST_V4,
    NotifyKind,
    build_notify,
    build_search_response,
)

__all__ = [
    "ALIVE_REPEATS",
    "DEFAULT_MAX_AGE_S",
    "FIRST_SET_JITTER_MAX_S",
    "READVERTISE_MIN_FRACTION",
    "SET_GAP_S",
    "BootState",
    "NotifyPlan",
    "ScheduledDatagram",
    "config_id_for",
    "next_boot_id",
    "next_readvertise_delay",
]

FIRST_SET_JITTER_MAX_S: Final = 0.100
"""Random wait before the first set after start or an address change (SSDP-14)."""
SET_GAP_S: Final = 0.300
"""Between consecutive sets: byebye -> alive, update -> alive, alive -> alive (SSDP-13)."""
ALIVE_REPEATS: Final = 2
"""Each alive set is sent this many times: more than once, at most three (SSDP-13)."""
DEFAULT_MAX_AGE_S: Final = 1800
"""CACHE-CONTROL max-age; SHOULD be at least 1800 s (SSDP-06)."""
READVERTISE_MIN_FRACTION: Final = 0.25
"""Re-advertise between this fraction and one half of max-age (SSDP-15), never in a burst."""


class ScheduledDatagram(NamedTuple):
    """A datagram to multicast `delay_s` seconds after the plan was made."""

    delay_s: float
    data: bytes


@dataclass(frozen=True, slots=True)
class BootState:
    """BOOTID.UPNP.ORG and CONFIGID.UPNP.ORG of the running daemon (SSDP-09/10)."""

    boot_id: int
    config_id: int

    def __post_init__(self) -> None:
        if not 0 <= self.boot_id <= BOOT_ID_MAX:
            raise ValueError(f"boot_id must be in 0..{BOOT_ID_MAX} (SSDP-09)")
        if not 0 <= self.config_id <= CONFIG_ID_MAX:
            raise ValueError(f"config_id must be in 0..{CONFIG_ID_MAX} (SSDP-10)")


def next_boot_id(previous: int | None, *, floor: int = 0) -> int:
    """BOOTID for this start: above `previous` and at least `floor`, 31-bit (SSDP-09).

    `previous` is the stored value of the last run (None on first start). Passing the wall clock
    in whole seconds as `floor` keeps the value increasing even when the store was lost. At the
    31-bit limit the count restarts at 1 (the spec leaves no larger value).
    """
    candidate = max(1 if previous is None else previous + 1, floor, 1)
    return candidate if candidate <= BOOT_ID_MAX else 1


def config_id_for(documents: Iterable[bytes]) -> int:
    """CONFIGID derived from the served descriptions: same bytes, same value (SSDP-10/11)."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(len(document).to_bytes(8, "big"))
        digest.update(document)
    return int.from_bytes(digest.digest()[:3], "big")  # 24 bits: 0..16777215


def _jitter(draw: Draw, high: float) -> float:
    drawn = draw(0.0, high)
    return min(max(drawn, 0.0), high) if math.isfinite(drawn) else 0.0


def next_readvertise_delay(max_age_s: float, draw: Draw) -> float:
    """Seconds until the next alive cycle: uniform in [max-age/4, max-age/2) (SSDP-15)."""
    if not max_age_s > 0:
        raise ValueError("max_age_s must be positive")
    half = max_age_s / 2
    low = max_age_s * READVERTISE_MIN_FRACTION
    drawn = draw(low, half)
    if not math.isfinite(drawn):
        drawn = low
    return min(max(drawn, low), math.nextafter(half, 0.0))


@dataclass(frozen=True, slots=True)
class NotifyPlan:
    """What one interface advertises: its roots (with that interface's LOCATIONs) and boot state."""

    roots: tuple[AdvertisedRoot, ...]
    boot: BootState
    server: str
    max_age_s: int = DEFAULT_MAX_AGE_S
    host: str = SSDP_HOST_V4
    """HOST header: SSDP_HOST_V4, or SSDP_HOST_V6_LINK / SSDP_HOST_V6_SITE on IPv6 (SSDP-05)."""
    nls: bool = False
    """Add OPT and 01-NLS headers, as miniupnpd does."""

    @classmethod
    def of(
        cls,
        roots: Sequence[AdvertisedRoot],
        boot: BootState,
        server: str,
        *,
        max_age_s: int = DEFAULT_MAX_AGE_S,
        host: str = SSDP_HOST_V4,
        nls: bool = False,
    ) -> NotifyPlan:
        """A plan from any sequence of roots."""
        return cls(tuple(roots), boot, server, max_age_s, host, nls)

    def _set(self, kind: NotifyKind, next_boot_id: int | None = None) -> list[bytes]:
        return [
            build_notify(
                kind,
                ad.nt,
                ad.usn,
                location=root.location,
                max_age_s=self.max_age_s,
                server=self.server,
                boot_id=self.boot.boot_id,
                config_id=self.boot.config_id,
                next_boot_id=next_boot_id,
                host=self.host,
                nls=self.nls,
            )
            for root in self.roots
            for ad in root.advertisements
        ]

    def alive_set(self) -> list[bytes]:
        """One ssdp:alive per member of every root's advertisement set (SSDP-01/02/05)."""
        return self._set("alive")

    def byebye_set(self) -> list[bytes]:
        """One ssdp:byebye per member of every root's advertisement set (SSDP-17/18)."""
        return self._set("byebye")

    def update_set(self, next_boot_id: int) -> list[bytes]:
        """One ssdp:update per member, announcing `next_boot_id` (SSDP-19)."""
        return self._set("update", next_boot_id)

    def readvertise_messages(self, start_s: float = 0.0) -> list[ScheduledDatagram]:
        """The alive set ALIVE_REPEATS times, SET_GAP_S apart, from `start_s` (SSDP-13/15)."""
        alive = self.alive_set()
        return [
            ScheduledDatagram(start_s + repeat * SET_GAP_S, data)
            for repeat in range(ALIVE_REPEATS)
            for data in alive
        ]

    def startup_messages(self, draw: Draw) -> list[ScheduledDatagram]:
        """After a 0-100 ms jitter the whole byebye set, then the alive sets (SSDP-13/14/16)."""
        start = _jitter(draw, FIRST_SET_JITTER_MAX_S)
        byebye = [ScheduledDatagram(start, data) for data in self.byebye_set()]
        return byebye + self.readvertise_messages(start + SET_GAP_S)

    def shutdown_messages(self) -> list[ScheduledDatagram]:
        """The byebye set, at once, with the running BOOTID (SSDP-17/18)."""
        return [ScheduledDatagram(0.0, data) for data in self.byebye_set()]

    def address_change_messages(self, new: NotifyPlan, draw: Draw) -> list[ScheduledDatagram]:
        """ssdp:update of this plan announcing `new`'s BOOTID, then `new`'s alive sets (SSDP-19/22).

        `new` carries the new LOCATIONs and a BOOTID above this plan's; call it on each interface
        that was already advertising (a new interface just gets `new.startup_messages`).
        """
        if new.boot.boot_id <= self.boot.boot_id:
            raise ValueError("the new BOOTID must be greater than the running one (SSDP-19)")
        start = _jitter(draw, FIRST_SET_JITTER_MAX_S)
        update = [ScheduledDatagram(start, data) for data in self.update_set(new.boot.boot_id)]
        return update + new.readvertise_messages(start + SET_GAP_S)

    def search_response(self, reply: Reply, *, date: str) -> bytes:
        """The datagram for one planned reply, with this plan's BOOTID/CONFIGID (SSDP-09/44)."""
        return build_search_response(
            reply.st,
            reply.usn,
            location=reply.location,
            max_age_s=self.max_age_s,
            server=self.server,
            boot_id=self.boot.boot_id,
            config_id=self.boot.config_id,
            date=date,
            nls=self.nls,
        )
