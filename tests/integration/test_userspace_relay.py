"""The userspace relay on loopback with real traffic, and proof that it needs no privilege.

The public connection is an AppliedConnection holding 127.0.0.1; the internal client is an echo
server on 127.0.0.2 (any 127/8 address is local on Linux). Every port is above 1024. Run as
root, `test_relays_without_any_capability` also runs the relay in a child process stripped of
every capability (setpriv), which checks that it cannot bind port 80 before relaying.

Run as a script, this module is that child: `python test_userspace_relay.py PORT TCP UDP`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import cast

import pytest

from igd.natcore import (
    ADMIN,
    AppliedConnection,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingRequest,
    MemoryStore,
    Plan,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
    make_connection,
)
from igd.natcore.backends.userspace import UserspaceBackend

PUBLIC_IP = IPv4Address("127.0.0.1")
TARGET = IPv4Address("127.0.0.2")
WAN_GUID = uuid.UUID(int=0x1D)
WAN = AppliedConnection(
    WAN_GUID, "lo", SharingConnectionType.PUBLIC, False, (IPv4Interface("127.0.0.1/8"),)
)
BIG_BYTES = 50 * 1000 * 1000
CHUNK_BYTES = 1 << 18
CLIENTS = 32
CLIENT_BYTES = 1 << 20
STEP_S = 10.0
BIG_TIMEOUT_S = 90.0
CHILD_TIMEOUT_S = 20.0
PRIVILEGED_PORT = 80
CHILD_SCRIPT = Path(__file__).resolve()


@dataclass(frozen=True)
class Echo:
    tcp_port: int
    udp_port: int


class _UdpEcho(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.transport.sendto(data, addr)


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    """TCP and UDP echo servers on 127.0.0.2: the LAN host behind the relay."""
    server = await asyncio.start_server(_tcp_echo, str(TARGET), 0)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        _UdpEcho, local_addr=(str(TARGET), 0)
    )
    yield Echo(server.sockets[0].getsockname()[1], transport.get_extra_info("sockname")[1])
    transport.close()
    server.close()
    await server.wait_closed()


def free_port() -> int:
    """A port above 1024 free on 127.0.0.1 for TCP and UDP alike, right now."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind((str(PUBLIC_IP), 0))
            port: int = tcp.getsockname()[1]
            try:
                udp.bind((str(PUBLIC_IP), port))
            except OSError:
                continue
            return port


def mappings(port: int, echo: Echo) -> tuple[Mapping, Mapping]:
    """TCP and UDP port `port` of the public connection -> the echo servers."""
    return (
        Mapping(IPProtocol.TCP, port, TARGET, echo.tcp_port, WAN_GUID),
        Mapping(IPProtocol.UDP, port, TARGET, echo.udp_port, WAN_GUID),
    )


@pytest.fixture
async def relayed(echo: Echo) -> AsyncIterator[tuple[UserspaceBackend, int]]:
    """A started backend relaying TCP and UDP 127.0.0.1:port to the echo servers."""
    backend = UserspaceBackend()
    port = free_port()
    await backend.start(mappings(port, echo), (WAN,))
    assert all(address == PUBLIC_IP for _, address, _ in backend.stats().endpoints)
    yield backend, port
    await backend.stop()


async def echo_through(port: int, data_iter: list[bytes]) -> tuple[int, str]:
    """Send the chunks while reading the echo back; (bytes received, sha256 of them)."""
    reader, writer = await asyncio.open_connection(str(PUBLIC_IP), port)

    async def send() -> None:
        for chunk in data_iter:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    digest = hashlib.sha256()
    received = 0
    sender = asyncio.create_task(send())
    try:
        while chunk := await reader.read(CHUNK_BYTES):
            digest.update(chunk)
            received += len(chunk)
        await sender
    finally:
        sender.cancel()
        writer.close()
    return received, digest.hexdigest()


def payload(total: int, seed: int) -> tuple[list[bytes], str]:
    """`total` pseudo-random bytes in chunks, and their sha256."""
    rng = random.Random(seed)
    chunks = []
    digest = hashlib.sha256()
    left = total
    while left:
        chunk = rng.randbytes(min(left, CHUNK_BYTES))
        digest.update(chunk)
        chunks.append(chunk)
        left -= len(chunk)
    return chunks, digest.hexdigest()


async def test_50_megabytes_keep_their_integrity(
    relayed: tuple[UserspaceBackend, int],
) -> None:
    backend, port = relayed
    chunks, expected = payload(BIG_BYTES, seed=50)
    async with asyncio.timeout(BIG_TIMEOUT_S):
        received, digest = await echo_through(port, chunks)
    assert (received, digest) == (BIG_BYTES, expected)
    await asyncio.sleep(0.05)
    assert backend.stats().tcp_flows == 0  # both half-closes passed on, the flow ended cleanly
    assert backend.stats().tcp.reset == 0


async def test_32_concurrent_clients(relayed: tuple[UserspaceBackend, int]) -> None:
    backend, port = relayed
    loads = [payload(CLIENT_BYTES, seed=i) for i in range(CLIENTS)]
    async with asyncio.timeout(BIG_TIMEOUT_S):
        results = await asyncio.gather(*(echo_through(port, chunks) for chunks, _ in loads))
    assert results == [(CLIENT_BYTES, digest) for _, digest in loads]
    assert backend.stats().tcp.accepted == CLIENTS


async def test_udp_echo(relayed: tuple[UserspaceBackend, int]) -> None:
    backend, port = relayed
    loop = asyncio.get_running_loop()
    sizes = [1, 64, 512, 1472, 8192, 65507]  # asyncio's echo does not return empty datagrams
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setblocking(False)
        client.bind((str(PUBLIC_IP), 0))
        async with asyncio.timeout(STEP_S):
            for round_ in range(20):
                for size in sizes:
                    data = bytes([round_ % 256]) * size
                    client.sendto(data, (str(PUBLIC_IP), port))
                    echoed, source = await loop.sock_recvfrom(client, 65535)
                    assert (echoed, source) == (data, (str(PUBLIC_IP), port))
    stats = backend.stats()
    assert (stats.udp_flows, stats.udp.sessions_opened) == (1, 1)
    assert stats.udp.forwarded == stats.udp.returned == 20 * len(sizes)


async def test_removal_refuses_new_connections(
    relayed: tuple[UserspaceBackend, int], echo: Echo
) -> None:
    backend, port = relayed
    reader, writer = await asyncio.open_connection(str(PUBLIC_IP), port)
    writer.write(b"before")
    assert await asyncio.wait_for(reader.readexactly(6), STEP_S) == b"before"

    await backend.apply(Plan(remove=mappings(port, echo)))
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), STEP_S) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection(str(PUBLIC_IP), port), STEP_S)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.connect((str(PUBLIC_IP), port))
        client.send(b"anyone?")
        client.settimeout(1.0)
        with pytest.raises(ConnectionRefusedError):  # ICMP port unreachable: nothing bound
            client.recv(100)
    assert backend.stats().endpoints == frozenset()


# ---- Behind the real core ------------------------------------------------------------------


class _Clock:
    """Wall-clock seconds under the test's control (the core's lease clock)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_behind_the_core_like_make_run(echo: Echo) -> None:
    """Virtual WAN without address + LAN lo, as `make run`: refresh, disable, lease expiry."""
    clock = _Clock()
    wan = make_connection("igd-wan", addresses=[])
    lan = make_connection("lo", addresses=["127.0.0.1/8"], loopback=True)
    backend = UserspaceBackend()
    core = await SharingManager.open(
        backend=backend,
        store=MemoryStore(),
        source=StaticConnectionSource([wan, lan]),
        clock=clock,
    )
    try:
        await core.enable_sharing(wan.guid, SharingConnectionType.PUBLIC)
        await core.enable_sharing(lan.guid, SharingConnectionType.PRIVATE)
        port = free_port()
        request = MappingRequest(IPProtocol.TCP, port, TARGET, echo.tcp_port, lease=60.0)
        await core.add_mapping(request, ADMIN)
        assert backend.stats().endpoints == {(IPProtocol.TCP, PUBLIC_IP, port)}

        reader, writer = await asyncio.open_connection(str(PUBLIC_IP), port)
        writer.write(b"1")
        assert await asyncio.wait_for(reader.readexactly(1), STEP_S) == b"1"
        clock.now += 30
        await core.add_mapping(request, ADMIN)  # a refresh keeps the flow
        writer.write(b"2")
        assert await asyncio.wait_for(reader.readexactly(1), STEP_S) == b"2"

        key = MappingKey(IPProtocol.TCP, port)
        await core.set_mapping_enabled(key, False)
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), STEP_S) == b""
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(str(PUBLIC_IP), port)
        await core.set_mapping_enabled(key, True)
        chunks, expected = payload(CLIENT_BYTES, seed=7)
        assert await echo_through(port, chunks) == (CLIENT_BYTES, expected)

        clock.now += 61  # the lease runs out; the core's timer removes it within ~1 s
        async with asyncio.timeout(STEP_S):
            # The core has no "swept" hook: polling is the point here.
            while backend.stats().endpoints:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(str(PUBLIC_IP), port)
    finally:
        await core.aclose()
    assert backend.stats().endpoints == frozenset()


# ---- Without privilege ----------------------------------------------------------------------


def _unprivileged_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root: the other tests of this module already run without privilege"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is needed to drop every capability"
    return None


async def test_relays_without_any_capability(echo: Echo) -> None:
    reason = _unprivileged_reason()
    if reason is not None:
        pytest.skip(reason)
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        "setpriv",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--",
        sys.executable,
        str(CHILD_SCRIPT),
        str(port),
        str(echo.tcp_port),
        str(echo.udp_port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        async with asyncio.timeout(CHILD_TIMEOUT_S):
            ready = json.loads(await child.stdout.readline())
        assert ready["cap_eff"] == 0
        assert ready["bind_80"] == "EACCES"  # the child really is unprivileged
        chunks, expected = payload(4 * CLIENT_BYTES, seed=80)
        async with asyncio.timeout(CHILD_TIMEOUT_S):
            assert await echo_through(port, chunks) == (4 * CLIENT_BYTES, expected)
    finally:
        child.stdin.close()
        try:
            async with asyncio.timeout(CHILD_TIMEOUT_S):
                assert await child.wait() == 0
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()


def _capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise RuntimeError("no CapEff in /proc/self/status")


def _bind_80() -> str:
    with socket.socket() as probe:
        try:
            probe.bind((str(PUBLIC_IP), PRIVILEGED_PORT))
        except PermissionError:
            return "EACCES"
        except OSError as exc:
            return str(exc)
    return "bound"


async def _serve_child(port: int, tcp_port: int, udp_port: int) -> None:
    """The child: relay until stdin closes."""
    backend = UserspaceBackend()
    await backend.start(mappings(port, Echo(tcp_port, udp_port)), (WAN,))
    print(json.dumps({"cap_eff": _capabilities(), "bind_80": _bind_80()}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await backend.stop()


if __name__ == "__main__":
    asyncio.run(_serve_child(*(int(arg) for arg in sys.argv[1:4])))
