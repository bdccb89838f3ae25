"""Test support shared by every suite: lab addresses, a fake clock, lab connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from typing import TypeVar

import pytest

from igd.natcore import (
    ConnectionProps,
    Event,
    InvalidTargetError,
    MediaType,
    SharingConfiguration,
    SharingManager,
    make_connection,
)

LAN_GATEWAY = IPv4Address("198.18.0.1")
LAN_HOST = IPv4Address("198.18.0.10")
LAN_HOST2 = IPv4Address("198.18.0.11")
WAN_ADDRESS = IPv4Address("198.19.0.1")


class FakeClock:
    """Wall-clock seconds under the test's control."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def lab_connections() -> list[ConnectionProps]:
    return [
        make_connection("wan0", addresses=["198.19.0.1/24"]),
        make_connection("lan0", addresses=["198.18.0.1/24"]),
        make_connection("lan1", addresses=["198.18.1.1/24"]),
        make_connection("br0", addresses=[], media_type=MediaType.BRIDGE),
    ]


async def fake_resolver(name: str) -> IPv4Address:
    hosts = {"lanhost": LAN_HOST, "lanhost2": LAN_HOST2}
    if name not in hosts:
        raise InvalidTargetError(f"target name {name!r} does not resolve")
    return hosts[name]


# ---- core helpers shared by the unit suites ------------------------------------------------------

E = TypeVar("E")
T = TypeVar("T")


async def drain(items: AsyncIterator[T], quiet: float = 0.05) -> list[T]:
    """Every item already available (events are published before the change's await returns)."""
    received: list[T] = []
    while True:
        try:
            async with asyncio.timeout(quiet):
                received.append(await anext(items))
        except (TimeoutError, StopAsyncIteration):
            return received


async def wait_for_event(events: AsyncIterator[Event], kind: type[E], within: float = 1.0) -> E:
    """The next event of `kind`, skipping others; fails the test after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            async for event in events:
                if isinstance(event, kind):
                    return event
    except TimeoutError:
        pytest.fail(f"no {kind.__name__} within {within} s")
    pytest.fail(f"the event stream ended before a {kind.__name__}")


def config(core: SharingManager, name: str) -> SharingConfiguration:
    return core.configuration_for(core.find_connection(name=name))
