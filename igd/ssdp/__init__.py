"""SSDP front-end: pure codec (`messages`), search matching (`matching`), NOTIFY plans (`schedule`).

The asyncio responder (one per interface) only moves bytes and sleeps; every decision is here.
"""

from __future__ import annotations

from igd.ssdp.matching import (
    AdvertisedRoot,
    Advertisement,
    Draw,
    Reply,
    ReplyLimiter,
    forbidden_source,
    plan_replies,
    source_allowed,
)
from igd.ssdp.messages import (
    MSearch,
    Notify,
    SearchResponse,
    SsdpBuildError,
    SsdpError,
    SsdpParseError,
    build_msearch,
    build_notify,
    build_search_response,
    http_date,
    parse_datagram,
    parse_search_response,
)
from igd.ssdp.schedule import (
    BootState,
    NotifyPlan,
    ScheduledDatagram,
    config_id_for,
    next_boot_id,
    next_readvertise_delay,
)

__all__ = [
    "AdvertisedRoot",
    "Advertisement",
    "BootState",
    "Draw",
    "MSearch",
    "Notify",
    "NotifyPlan",
    "Reply",
    "ReplyLimiter",
    "ScheduledDatagram",
    "SearchResponse",
    "SsdpBuildError",
    "SsdpError",
    "SsdpParseError",
    "build_msearch",
    "build_notify",
    "build_search_response",
    "config_id_for",
    "forbidden_source",
    "http_date",
    "next_boot_id",
    "next_readvertise_delay",
    "parse_datagram",
    "parse_search_response",
    "plan_replies",
    "source_allowed",
]
