"""Name resolution for ICS name targets (TargetType.NAME) that never blocks the event loop."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address

from igd.natcore.errors import InvalidTargetError

__all__ = ["RESOLVE_TIMEOUT_S", "resolve_ipv4"]

RESOLVE_TIMEOUT_S = 5.0


async def resolve_ipv4(name: str) -> IPv4Address:
    """The first IPv4 address of `name` (getaddrinfo in the loop's executor), bounded in time."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(
                name, None, family=socket.AF_INET, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise InvalidTargetError(f"target name {name!r} does not resolve: {exc}") from None
    for info in infos:
        return IPv4Address(info[4][0])
    raise InvalidTargetError(f"target name {name!r} has no IPv4 address")
