"""UserspaceBackend in the gateway namespace, driven from the WAN host (root only).

The backend runs on an event loop in a thread that lives in lab.gw (started through `Lab.call`:
a thread created by a thread that entered a namespace lives in it too), relaying
198.19.0.1:40000 -> 198.18.0.10:40000, TCP and UDP. The echo servers run on a second loop in
lan1; the clients are sockets made in the wan namespace. No packet filter is involved: the
relay only uses sockets. Also checked: the LAN host sees the gateway's LAN address as the peer
(a documented limit), the relay does not listen on the LAN side, and removal refuses at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any, Final, TypeVar

import pytest
from netns.lab import GW_LAN, GW_WAN, LAN1, WAN_HOST, Lab

from igd.natcore import AppliedConnection, IPProtocol, Mapping, Plan, SharingConnectionType
from igd.natcore.backends.userspace import UserspaceBackend, UserspaceStats

PORT: Final = 40000
STEP_S: Final = 10.0
PAYLOAD_BYTES: Final = 4 << 20
WAN_GUID: Final = uuid.UUID(int=0x3A)
LAN_GUID: Final = uuid.UUID(int=0x3B)
CONNECTIONS: Final = (
    AppliedConnection(WAN_GUID, "wan0", SharingConnectionType.PUBLIC, True, (GW_WAN,)),
    AppliedConnection(LAN_GUID, "br-lan", SharingConnectionType.PRIVATE, False, (GW_LAN,)),
)
T = TypeVar("T")


class NamespaceLoop:
    """An asyncio loop on a thread that lives in one lab namespace."""

    def __init__(self, lab: Lab, ns: str) -> None:
        ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        def start() -> threading.Thread:
            thread = threading.Thread(target=run, name=f"loop-{ns}", daemon=True)
            thread.start()  # created from a thread inside `ns`: it lives there too
            return thread

        self.thread = lab.call(ns, start)
        if not ready.wait(STEP_S):
            raise TimeoutError(f"no event loop in {ns}")

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the namespace's loop; its result within STEP_S."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(STEP_S)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread.join(STEP_S)


@dataclass
class EchoServers:
    """TCP and UDP echo on lan1:40000; remembers the TCP peers it saw."""

    peers: set[str] = field(default_factory=set)
    server: asyncio.Server | None = None
    transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._echo, str(LAN1.ip), PORT)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpEcho(self), local_addr=(str(LAN1.ip), PORT)
        )
        self.transport = transport

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.add(writer.get_extra_info("peername")[0])
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except ConnectionError:
            pass
        finally:
            writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, owner: EchoServers) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self.owner.transport is not None
        self.owner.transport.sendto(data, addr)


@dataclass
class RelayLab:
    lab: Lab
    gw: NamespaceLoop
    backend: UserspaceBackend
    echo: EchoServers
    mappings: tuple[Mapping, Mapping]


@pytest.fixture(scope="module")
def lan_echo(module_lab: Lab) -> Iterator[tuple[NamespaceLoop, EchoServers]]:
    loop = NamespaceLoop(module_lab, module_lab.lan1)
    servers = EchoServers()
    try:
        loop.run(servers.start())
        yield loop, servers
        loop.run(servers.stop())
    finally:
        loop.close()


@pytest.fixture
def relay_lab(module_lab: Lab, lan_echo: tuple[NamespaceLoop, EchoServers]) -> Iterator[RelayLab]:
    """A fresh backend in gw relaying 198.19.0.1:40000 to lan1:40000 (TCP and UDP)."""
    gw = NamespaceLoop(module_lab, module_lab.gw)
    backend = UserspaceBackend()
    mappings = (
        Mapping(IPProtocol.TCP, PORT, LAN1.ip, PORT, WAN_GUID),
        Mapping(IPProtocol.UDP, PORT, LAN1.ip, PORT, WAN_GUID),
    )
    try:
        gw.run(backend.start(mappings, CONNECTIONS))
        try:
            yield RelayLab(module_lab, gw, backend, lan_echo[1], mappings)
        finally:
            gw.run(backend.stop())
    finally:
        gw.close()


def wan_tcp(lab: Lab, address: IPv4Address = GW_WAN.ip, ns: str | None = None) -> socket.socket:
    sock = lab.socket(ns or lab.wan, socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(STEP_S)
    sock.connect((str(address), PORT))
    return sock


def test_tcp_from_wan_reaches_the_lan_host(relay_lab: RelayLab) -> None:
    data = bytes(range(256)) * (PAYLOAD_BYTES // 256)
    with wan_tcp(relay_lab.lab) as sock:
        assert sock.getsockname()[0] == str(WAN_HOST.ip)

        def send() -> None:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        digest = hashlib.sha256()
        received = 0
        while chunk := sock.recv(1 << 16):
            digest.update(chunk)
            received += len(chunk)
        sender.join(STEP_S)
    assert (received, digest.hexdigest()) == (len(data), hashlib.sha256(data).hexdigest())
    assert relay_lab.echo.peers == {str(GW_LAN.ip)}  # the LAN host sees the relay, not the peer


def test_udp_from_wan_reaches_the_lan_host(relay_lab: RelayLab) -> None:
    sock = relay_lab.lab.socket(relay_lab.lab.wan)
    sock.settimeout(STEP_S)
    for index in range(50):
        message = f"datagram {index}".encode()
        sock.sendto(message, (str(GW_WAN.ip), PORT))
        assert sock.recvfrom(2048) == (message, (str(GW_WAN.ip), PORT))
    sock.close()
    stats = relay_lab.gw.run(_stats(relay_lab.backend))
    assert (stats.udp_flows, stats.udp.forwarded, stats.udp.returned) == (1, 50, 50)


def test_nothing_listens_on_the_lan_side(relay_lab: RelayLab) -> None:
    lab = relay_lab.lab
    with pytest.raises(ConnectionRefusedError):
        wan_tcp(lab, GW_LAN.ip, lab.lan1).close()
    stats = relay_lab.gw.run(_stats(relay_lab.backend))
    assert {address for _, address, _ in stats.endpoints} == {GW_WAN.ip}


def test_removal_refuses_from_the_wan_at_once(relay_lab: RelayLab) -> None:
    lab = relay_lab.lab
    with wan_tcp(lab) as sock:
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        relay_lab.gw.run(relay_lab.backend.apply(Plan(remove=relay_lab.mappings)))
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(5) == b""
    with pytest.raises(ConnectionRefusedError):
        wan_tcp(lab).close()


async def _stats(backend: UserspaceBackend) -> UserspaceStats:
    return backend.stats()
