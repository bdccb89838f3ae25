"""Test support shared by every suite: lab addresses, a fake clock, lab connections."""

from __future__ import annotations

from ipaddress import IPv4Address

from igd.natcore import ConnectionProps, InvalidTargetError, MediaType, make_connection

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
