"""A small asyncio PCP client (RFC 6887 client side) for the integration and netns suites.

    async with PcpClient(("127.0.0.1", port)) as client:
        nonce = new_nonce()
        reply = await client.map(IPProtocol.UDP, 40101, lifetime=3600, nonce=nonce)
        await client.map(IPProtocol.UDP, 40101, lifetime=0, nonce=nonce)  # delete

The client-IP field is the socket's own address (what the server sees as the source, PCP-09).
`exchange` sends raw bytes and returns the raw answer (or None), for malformed-input tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from igd.pcp.wire import (
    UNSPECIFIED_V4,
    MapPayload,
    Opcode,
    PcpOption,
    PcpRequest,
    PcpResponse,
    from_ipv4,
    pull_response,
    push_request,
)

__all__ = ["DEFAULT_TIMEOUT_S", "PcpClient", "new_nonce"]

DEFAULT_TIMEOUT_S: Final = 2.0
"""How long one exchange waits for an answer."""
MAX_QUEUED: Final = 64
"""Datagrams kept unread; older ones are dropped."""


def new_nonce() -> bytes:
    """A fresh random 96-bit mapping nonce (RFC 6887 section 11.1)."""
    return os.urandom(12)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(data)


class PcpClient:
    """One UDP socket talking to one PCP server; requests are answered in order, one at a time."""

    def __init__(
        self,
        server: tuple[str, int],
        *,
        local: tuple[str, int] = ("0.0.0.0", 0),
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.server = server
        self.local = local
        self.timeout_s = timeout_s
        self._transport: asyncio.DatagramTransport | None = None
        self._receiver: _Receiver | None = None
        self._lock = asyncio.Lock()
        self.client_address: IPv4Address | None = None

    async def open(self) -> None:
        """Open the socket, connected to the server, and learn our own address."""
        loop = asyncio.get_running_loop()
        transport, receiver = await loop.create_datagram_endpoint(
            _Receiver, local_addr=self.local, remote_addr=self.server
        )
        self._transport, self._receiver = transport, receiver
        self.client_address = IPv4Address(transport.get_extra_info("sockname")[0])

    async def close(self) -> None:
        """Close the socket; idempotent."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> PcpClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def local_address(self) -> tuple[str, int]:
        """(address, port) of the client socket."""
        assert self._transport is not None, "open() first"
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def exchange(self, data: bytes, *, timeout_s: float | None = None) -> bytes | None:
        """Send `data`, return the next datagram received, or None after the timeout."""
        assert self._transport is not None, "open() first"
        assert self._receiver is not None
        async with self._lock:
            queue = self._receiver.queue
            while not queue.empty():
                queue.get_nowait()
            self._transport.sendto(data)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                    return await queue.get()
            return None

    async def request(self, request: PcpRequest) -> PcpResponse:
        """Send a request and parse the answer; TimeoutError when none comes."""
        answer = await self.exchange(push_request(request))
        if answer is None:
            raise TimeoutError(f"no PCP answer from {self.server[0]}:{self.server[1]}")
        return pull_response(answer)

    def map_request(
        self,
        protocol: int,
        internal_port: int,
        *,
        lifetime: int,
        nonce: bytes,
        suggested_port: int = 0,
        suggested_address: IPv4Address | IPv6Address | None = None,
        options: Sequence[PcpOption] = (),
        client_address: IPv4Address | None = None,
    ) -> PcpRequest:
        """A MAP request from this client (RFC 6887 section 11.1)."""
        own = client_address or self.client_address
        assert own is not None, "open() first"
        if isinstance(suggested_address, IPv4Address):
            suggested: IPv6Address = from_ipv4(suggested_address)
        else:
            suggested = suggested_address or UNSPECIFIED_V4
        return PcpRequest(
            opcode=Opcode.MAP,
            lifetime=lifetime,
            client_address=from_ipv4(own),
            payload=MapPayload(nonce, protocol, internal_port, suggested_port, suggested),
            options=tuple(options),
        )

    async def map(
        self,
        protocol: int,
        internal_port: int,
        *,
        lifetime: int,
        nonce: bytes,
        suggested_port: int = 0,
        suggested_address: IPv4Address | IPv6Address | None = None,
        options: Sequence[PcpOption] = (),
    ) -> PcpResponse:
        """MAP: create, refresh (same nonce) or delete (lifetime 0) a mapping."""
        return await self.request(
            self.map_request(
                protocol,
                internal_port,
                lifetime=lifetime,
                nonce=nonce,
                suggested_port=suggested_port,
                suggested_address=suggested_address,
                options=options,
            )
        )

    async def announce(self) -> PcpResponse:
        """ANNOUNCE: the server's epoch (RFC 6887 section 14.1)."""
        assert self.client_address is not None, "open() first"
        return await self.request(PcpRequest(Opcode.ANNOUNCE, 0, from_ipv4(self.client_address)))
