"""UserspaceBackend contract on loopback: atomic plans, removal, remote host, limits, UDP idle.

The public connection is 127.0.0.1, the internal client an echo server on 127.0.0.2 (any
127/8 address works on Linux without configuration); every port is above 1024 and every wait is
bounded, so the tests need no privilege.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from typing import cast

import pytest

from igd.natcore import AppliedConnection, BackendError, IPProtocol, Mapping, Plan
from igd.natcore import SharingConnectionType as Role
from igd.natcore.backends import relay_tcp
from igd.natcore.backends.userspace import LOOPBACK, UserspaceBackend, userspace_unusable_reason

PUBLIC_IP = IPv4Address("127.0.0.1")
TARGET = IPv4Address("127.0.0.2")
OTHER_PEER = IPv4Address("127.0.0.3")
WAN_GUID = uuid.UUID(int=1)
WAN = AppliedConnection(WAN_GUID, "lo", Role.PUBLIC, False, (IPv4Interface("127.0.0.1/8"),))
WAN_NO_ADDRESS = AppliedConnection(WAN_GUID, "igd-wan", Role.PUBLIC, False, ())
STEP_S = 5.0
QUIET_S = 0.3
TCP, UDP = IPProtocol.TCP, IPProtocol.UDP


@dataclass(frozen=True)
class Echo:
    tcp_port: int
    udp_port: int


class _UdpEcho(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a _SelectorDatagramTransport

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.transport.sendto(data, addr)


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    """TCP and UDP echo servers on 127.0.0.2 (the internal client)."""
    server = await asyncio.start_server(_tcp_echo, str(TARGET), 0)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        _UdpEcho, local_addr=(str(TARGET), 0)
    )
    tcp_port = server.sockets[0].getsockname()[1]
    udp_port = transport.get_extra_info("sockname")[1]
    yield Echo(tcp_port, udp_port)
    transport.close()
    server.close()
    await server.wait_closed()


@pytest.fixture
async def backend() -> AsyncIterator[UserspaceBackend]:
    relay = UserspaceBackend()
    await relay.start((), (WAN,))
    yield relay
    await relay.stop()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port free right now on 127.0.0.1 for both protocols (above 1024)."""
    while True:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((str(PUBLIC_IP), 0))
            port: int = probe.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as check:
            try:
                check.bind((str(PUBLIC_IP), port))
            except OSError:
                continue
        return port


def mapping(
    protocol: IPProtocol,
    external_port: int,
    internal_port: int,
    *,
    remote_host: IPv4Address | None = None,
    enabled: bool = True,
    expires_at: float | None = None,
    target: IPv4Address = TARGET,
) -> Mapping:
    return Mapping(
        protocol=protocol,
        external_port=external_port,
        internal_client=target,
        internal_port=internal_port,
        connection=WAN_GUID,
        enabled=enabled,
        remote_host=remote_host,
        expires_at=expires_at,
    )


async def roundtrip(port: int, payload: bytes, *, local: IPv4Address | None = None) -> bytes:
    """Send `payload` through the relay on 127.0.0.1:port, half-close, read to EOF."""
    async with asyncio.timeout(STEP_S):
        reader, writer = await asyncio.open_connection(
            str(PUBLIC_IP), port, local_addr=None if local is None else (str(local), 0)
        )
        try:
            writer.write(payload)
            writer.write_eof()
            return await reader.read()
        finally:
            writer.close()


async def udp_exchange(
    port: int, payload: bytes, *, local: IPv4Address = PUBLIC_IP, sock: socket.socket | None = None
) -> bytes | None:
    """One datagram to 127.0.0.1:port; its echo, or None after a quiet period."""
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((str(local), 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        sock.sendto(payload, (str(PUBLIC_IP), port))
        try:
            async with asyncio.timeout(QUIET_S):
                data, source = await loop.sock_recvfrom(sock, 65535)
        except TimeoutError:
            return None
        assert source == (str(PUBLIC_IP), port)
        return data
    finally:
        if own:
            sock.close()


async def assert_ended(reader: asyncio.StreamReader) -> None:
    """The relayed stream ends: reset, or EOF without data."""
    try:
        data = await asyncio.wait_for(reader.read(), STEP_S)
    except ConnectionResetError:
        return
    assert data == b""


async def assert_turned_away(port: int, *, local: IPv4Address | None = None) -> None:
    """The relay accepts the connection but closes it (a reset) without relaying a byte."""
    try:
        data = await roundtrip(port, b"not relayed", local=local)
    except ConnectionResetError:
        return
    assert data == b""


def assert_refused(port: int) -> None:
    with socket.socket() as probe:
        probe.settimeout(STEP_S)
        assert probe.connect_ex((str(PUBLIC_IP), port)) != 0


async def wait_until(predicate: object, what: str, timeout_s: float = STEP_S) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def held_port() -> Iterator[tuple[int, socket.socket]]:
    """A TCP port on 127.0.0.1 that another program holds."""
    with socket.socket() as holder:
        holder.bind((str(PUBLIC_IP), 0))
        holder.listen()
        yield holder.getsockname()[1], holder


# ---- Atomicity ------------------------------------------------------------------------------


async def test_plan_fails_whole_when_a_port_is_taken(
    backend: UserspaceBackend, echo: Echo, held_port: tuple[int, socket.socket]
) -> None:
    taken, _ = held_port
    first = mapping(TCP, free_port(), echo.tcp_port)
    second = mapping(TCP, taken, echo.tcp_port)
    with pytest.raises(BackendError, match=f"TCP 127.0.0.1:{taken}"):
        await backend.apply(Plan(add=(first, second)))
    assert_refused(first.external_port)
    assert backend.mappings == ()
    assert backend.stats().endpoints == frozenset()


async def test_failed_plan_keeps_the_previous_state(
    backend: UserspaceBackend, echo: Echo, held_port: tuple[int, socket.socket]
) -> None:
    taken, _ = held_port
    kept = mapping(TCP, free_port(), echo.tcp_port)
    await backend.apply(Plan(add=(kept,)))
    udp_port = free_port(socket.SOCK_DGRAM)
    with pytest.raises(BackendError):
        await backend.apply(
            Plan(
                remove=(kept,),
                add=(mapping(UDP, udp_port, echo.udp_port), mapping(TCP, taken, echo.tcp_port)),
            )
        )
    assert backend.mappings == (kept,)
    assert await roundtrip(kept.external_port, b"still here") == b"still here"
    assert await udp_exchange(udp_port, b"x") is None


async def test_udp_port_taken_fails_the_plan(backend: UserspaceBackend, echo: Echo) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((str(PUBLIC_IP), 0))
        port = holder.getsockname()[1]
        tcp = mapping(TCP, free_port(), echo.tcp_port)
        with pytest.raises(BackendError, match="UDP"):
            await backend.apply(Plan(add=(tcp, mapping(UDP, port, echo.udp_port))))
    assert_refused(tcp.external_port)


async def test_contract_errors(backend: UserspaceBackend, echo: Echo) -> None:
    one = mapping(TCP, free_port(), echo.tcp_port)
    with pytest.raises(BackendError, match="not applied"):
        await backend.apply(Plan(remove=(one,)))
    await backend.apply(Plan(add=(one,)))
    with pytest.raises(BackendError, match="already applied"):
        await backend.apply(Plan(add=(one,)))
    same_port = mapping(TCP, one.external_port, echo.tcp_port, remote_host=OTHER_PEER)
    with pytest.raises(BackendError, match="mapped twice"):
        await backend.apply(Plan(add=(same_port,)))
    with pytest.raises(BackendError, match="not started"):
        await UserspaceBackend().apply(Plan(add=(one,)))
    with pytest.raises(ValueError, match="max_tcp_per_mapping"):
        UserspaceBackend(max_tcp_per_mapping=0)


# ---- Removal, refresh, change ---------------------------------------------------------------


async def test_remove_closes_listener_and_flows(backend: UserspaceBackend, echo: Echo) -> None:
    tcp = mapping(TCP, free_port(), echo.tcp_port)
    udp = mapping(UDP, free_port(socket.SOCK_DGRAM), echo.udp_port)
    await backend.apply(Plan(add=(tcp, udp)))
    reader, writer = await asyncio.open_connection(str(PUBLIC_IP), tcp.external_port)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), STEP_S) == b"ping"
    assert await udp_exchange(udp.external_port, b"dgram") == b"dgram"
    stats = backend.stats()
    assert (stats.tcp_flows, stats.udp_flows) == (1, 1)

    await backend.apply(Plan(remove=(tcp, udp)))
    stats = backend.stats()
    assert (stats.tcp_flows, stats.udp_flows, stats.endpoints) == (0, 0, frozenset())
    await assert_ended(reader)
    writer.close()
    assert_refused(tcp.external_port)
    assert await udp_exchange(udp.external_port, b"dgram") is None


async def test_refresh_keeps_flows_and_change_resets_them(
    backend: UserspaceBackend, echo: Echo
) -> None:
    first = mapping(TCP, free_port(), echo.tcp_port, expires_at=1000.0)
    await backend.apply(Plan(add=(first,)))
    reader, writer = await asyncio.open_connection(str(PUBLIC_IP), first.external_port)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), STEP_S) == b"a"

    refreshed = mapping(TCP, first.external_port, echo.tcp_port, expires_at=2000.0)
    await backend.apply(Plan(remove=(first,), add=(refreshed,)))
    writer.write(b"b")
    assert await asyncio.wait_for(reader.readexactly(1), STEP_S) == b"b"
    assert backend.stats().tcp_flows == 1

    moved = mapping(TCP, first.external_port, echo.tcp_port, target=IPv4Address("127.0.0.4"))
    await backend.apply(Plan(remove=(refreshed,), add=(moved,)))
    assert backend.stats().tcp_flows == 0
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), STEP_S)
    writer.close()


async def test_disabled_mapping_does_not_listen(backend: UserspaceBackend, echo: Echo) -> None:
    off = mapping(TCP, free_port(), echo.tcp_port, enabled=False)
    await backend.apply(Plan(add=(off,)))
    assert backend.mappings == (off,)
    assert_refused(off.external_port)


async def test_stop_closes_everything(echo: Echo) -> None:
    relay = UserspaceBackend()
    tcp = mapping(TCP, free_port(), echo.tcp_port)
    await relay.start((tcp,), (WAN,))
    assert await roundtrip(tcp.external_port, b"up") == b"up"
    await relay.stop()
    assert_refused(tcp.external_port)


async def test_flow_control_stops_reading_without_spinning(backend: UserspaceBackend) -> None:
    """A destination that does not read stalls the source (bounded buffering, idle loop)."""
    loop = asyncio.get_running_loop()
    with socket.socket() as server, socket.socket() as client:
        server.bind((str(TARGET), 0))
        server.listen()
        server.setblocking(False)
        tcp = mapping(TCP, free_port(), server.getsockname()[1])
        await backend.apply(Plan(add=(tcp,)))
        client.setblocking(False)
        await loop.sock_connect(client, (str(PUBLIC_IP), tcp.external_port))
        stalled, _ = await asyncio.wait_for(loop.sock_accept(server), STEP_S)
        with stalled:
            chunk = b"f" * 65536
            sent = 0
            quiet_since = loop.time()
            while loop.time() - quiet_since < QUIET_S:  # fill every buffer on the way
                try:
                    sent += client.send(chunk)
                    quiet_since = loop.time()
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            assert sent < 64 << 20  # socket buffers + one pipe, not an unbounded queue
            cpu_before = time.process_time()
            await asyncio.sleep(0.5)
            assert time.process_time() - cpu_before < 0.2  # nobody polls a full pipe
            client.shutdown(socket.SHUT_WR)
            stalled.setblocking(False)
            received = 0
            async with asyncio.timeout(STEP_S):
                while data := await loop.sock_recv(stalled, 1 << 20):
                    received += len(data)
            assert received == sent


# ---- Failures on the LAN side and in the host -----------------------------------------------


async def test_a_refusing_target_resets_the_client(backend: UserspaceBackend) -> None:
    with socket.socket() as closed:
        closed.bind((str(TARGET), 0))
        nobody = closed.getsockname()[1]  # bound, never listening: connections are refused
        tcp = mapping(TCP, free_port(), nobody)
        await backend.apply(Plan(add=(tcp,)))
        await assert_turned_away(tcp.external_port)
    await wait_until(lambda: backend.stats().tcp_flows == 0, "the failed flow to end")
    assert backend.stats().tcp.connect_failed == 1


async def test_a_silent_target_times_out(
    backend: UserspaceBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_tcp, "CONNECT_TIMEOUT_S", 0.3)
    with socket.socket() as full, socket.socket() as queued:
        full.bind((str(TARGET), 0))
        full.listen(0)  # one queued connection fills it; later SYNs are dropped, not refused
        queued.connect(full.getsockname())
        tcp = mapping(TCP, free_port(), full.getsockname()[1])
        await backend.apply(Plan(add=(tcp,)))
        await assert_turned_away(tcp.external_port)
    assert backend.stats().tcp.connect_failed == 1


async def test_a_reset_from_the_target_resets_the_client(backend: UserspaceBackend) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket() as server:
        server.bind((str(TARGET), 0))
        server.listen()
        server.setblocking(False)
        tcp = mapping(TCP, free_port(), server.getsockname()[1])
        await backend.apply(Plan(add=(tcp,)))
        reader, writer = await asyncio.open_connection(str(PUBLIC_IP), tcp.external_port)
        accepted, _ = await asyncio.wait_for(loop.sock_accept(server), STEP_S)
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()  # an RST towards the relay
        with pytest.raises(ConnectionResetError):
            await write_until_reset(reader, writer)
        writer.close()
    await wait_until(lambda: backend.stats().tcp_flows == 0, "the reset flow to end")
    assert backend.stats().tcp.reset == 1


async def write_until_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Write and read until the stream fails (a reset shows on read, or on a later write)."""
    for _ in range(100):
        writer.write(b"x" * 65536)
        await asyncio.wait_for(writer.drain(), STEP_S)
        await asyncio.wait_for(reader.read(1), STEP_S)


async def test_accepting_pauses_when_descriptors_run_out() -> None:
    class Exhausted(socket.socket):
        def accept(self) -> tuple[socket.socket, object]:
            raise OSError(errno.EMFILE, "Too many open files")

    loop = asyncio.get_running_loop()
    stats = relay_tcp.TcpStats()
    relay = relay_tcp.TcpRelay(
        loop,
        target=TARGET,
        target_port=9,
        remote_host=None,
        max_flows=1,
        budget=relay_tcp.FlowBudget(1),
        stats=stats,
    )
    sock = Exhausted(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((str(PUBLIC_IP), 0))
    sock.listen()
    sock.setblocking(False)
    listener = relay_tcp.TcpListener(loop, sock)
    relay.set_listeners([listener])
    with socket.socket() as client:
        client.connect(sock.getsockname())
        await wait_until(lambda: stats.accept_paused >= 2, "a pause, then another after it")
        assert stats.accept_paused < 10  # resting, not spinning
    relay.close()
    listener.close()


async def test_an_unreachable_udp_target_drops(backend: UserspaceBackend) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind((str(TARGET), 0))
        port = closed.getsockname()[1]
    udp = mapping(UDP, free_port(socket.SOCK_DGRAM), port)  # nothing bound there: ICMP errors
    await backend.apply(Plan(add=(udp,)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind((str(PUBLIC_IP), 0))
        for _ in range(3):
            assert await udp_exchange(udp.external_port, b"?", sock=client) is None
    stats = backend.stats()
    assert (stats.udp.forwarded, stats.udp.returned, stats.udp_flows) == (3, 0, 1)
    assert stats.udp.unreachable >= 1  # the ICMP errors were read and counted, nothing broke


async def test_start_checks_its_input(echo: Echo) -> None:
    relay = UserspaceBackend()
    tcp = mapping(TCP, free_port(), echo.tcp_port)
    with pytest.raises(BackendError, match="given twice"):
        await relay.start((tcp, tcp), (WAN,))
    with socket.socket() as holder:
        holder.bind((str(PUBLIC_IP), tcp.external_port))
        holder.listen()
        with pytest.raises(BackendError):
            await relay.start((tcp,), (WAN,))
    with pytest.raises(BackendError, match="not started"):  # a failed start leaves it stopped
        await relay.apply(Plan())
    await relay.start((tcp,), (WAN,))
    await relay.start((), (WAN,))  # a second start reconciles: the relay goes
    assert_refused(tcp.external_port)
    await relay.stop()


# ---- Listen addresses -----------------------------------------------------------------------


async def test_loopback_when_the_public_connection_has_no_address(echo: Echo) -> None:
    relay = UserspaceBackend()
    tcp = mapping(TCP, free_port(), echo.tcp_port)
    await relay.start((tcp,), (WAN_NO_ADDRESS,))
    try:
        assert relay.stats().endpoints == {(TCP, LOOPBACK, tcp.external_port)}
        assert await roundtrip(tcp.external_port, b"lo") == b"lo"
    finally:
        await relay.stop()


async def test_dormant_without_address_until_one_appears(echo: Echo) -> None:
    relay = UserspaceBackend(loopback_when_no_public_address=False)
    tcp = mapping(TCP, free_port(), echo.tcp_port)
    await relay.start((tcp,), (WAN_NO_ADDRESS,))
    try:
        assert relay.stats().endpoints == frozenset()
        assert_refused(tcp.external_port)
        await relay.apply(Plan(connections=(WAN,)))
        assert await roundtrip(tcp.external_port, b"now") == b"now"
        await relay.apply(Plan(connections=(WAN_NO_ADDRESS,)))
        assert_refused(tcp.external_port)
    finally:
        await relay.stop()


async def test_a_new_public_address_moves_the_listeners(
    backend: UserspaceBackend, echo: Echo
) -> None:
    tcp = mapping(TCP, free_port(), echo.tcp_port)
    udp = mapping(UDP, free_port(socket.SOCK_DGRAM), echo.udp_port)
    await backend.apply(Plan(add=(tcp, udp)))
    assert await udp_exchange(udp.external_port, b"u") == b"u"
    moved = IPv4Address("127.0.0.9")
    renumbered = AppliedConnection(
        WAN_GUID, "lo", Role.PUBLIC, False, (IPv4Interface(f"{moved}/8"),)
    )
    await backend.apply(Plan(connections=(renumbered,)))
    assert backend.stats().endpoints == {
        (TCP, moved, tcp.external_port),
        (UDP, moved, udp.external_port),
    }
    assert backend.stats().udp_flows == 0  # its public socket is gone: the session went with it
    assert_refused(tcp.external_port)
    reader, writer = await asyncio.open_connection(str(moved), tcp.external_port)
    writer.write(b"moved")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), STEP_S) == b"moved"
    writer.close()


def test_usable_here() -> None:
    assert userspace_unusable_reason() is None


def test_listen_addresses_are_local_and_never_the_wildcard() -> None:
    relay = UserspaceBackend(loopback_when_no_public_address=False)
    wildcard = AppliedConnection(WAN_GUID, "x", Role.PUBLIC, False, (IPv4Interface("0.0.0.0/0"),))
    assert relay.listen_addresses(mapping(TCP, 5000, 5000), (wildcard,)) == ()
    addresses = ("127.0.0.1/8", "127.0.0.5/8", "127.0.0.1/8", "198.19.0.1/24")  # last: not here
    several = AppliedConnection(
        WAN_GUID, "wan0", Role.PUBLIC, True, tuple(IPv4Interface(a) for a in addresses)
    )
    assert relay.listen_addresses(mapping(TCP, 5000, 5000), (several,)) == (
        IPv4Address("127.0.0.1"),
        IPv4Address("127.0.0.5"),
    )
    foreign = AppliedConnection(
        WAN_GUID, "igd-wan", Role.PUBLIC, False, (IPv4Interface("198.19.0.1/24"),)
    )
    assert relay.listen_addresses(mapping(TCP, 5000, 5000), (foreign,)) == ()
    assert UserspaceBackend().listen_addresses(mapping(TCP, 5000, 5000), (foreign,)) == (LOOPBACK,)


def test_public_connection_when_the_mapping_names_none_present() -> None:
    relay = UserspaceBackend(loopback_when_no_public_address=False)
    lan = AppliedConnection(
        uuid.UUID(int=2), "br-lan", Role.PRIVATE, False, (IPv4Interface("127.0.0.7/8"),)
    )
    wan = AppliedConnection(
        uuid.UUID(int=3), "wan0", Role.PUBLIC, False, (IPv4Interface("127.0.0.8/8"),)
    )
    assert relay.listen_addresses(mapping(TCP, 5000, 5000), (lan, wan)) == (
        IPv4Address("127.0.0.8"),
    )
    assert relay.listen_addresses(mapping(TCP, 5000, 5000), ()) == ()
    bare_lan = AppliedConnection(WAN_GUID, "br0", Role.PRIVATE, True, ())  # ICF on the LAN
    assert UserspaceBackend().listen_addresses(mapping(TCP, 5000, 5000), (bare_lan,)) == ()


async def test_a_target_equal_to_the_endpoint_is_not_relayed(echo: Echo) -> None:
    relay = UserspaceBackend()
    with socket.socket() as service:  # a loopback client maps its own port to itself
        service.bind((str(PUBLIC_IP), 0))
        port = service.getsockname()[1]
        itself = mapping(TCP, port, port, target=PUBLIC_IP)
        await relay.start((itself,), (WAN,))
        try:
            assert relay.mappings == (itself,)
            assert relay.stats().endpoints == frozenset()
        finally:
            await relay.stop()


# ---- Remote host and limits -----------------------------------------------------------------


async def test_remote_host_restriction(backend: UserspaceBackend, echo: Echo) -> None:
    tcp = mapping(TCP, free_port(), echo.tcp_port, remote_host=OTHER_PEER)
    udp = mapping(UDP, free_port(socket.SOCK_DGRAM), echo.udp_port, remote_host=OTHER_PEER)
    await backend.apply(Plan(add=(tcp, udp)))
    assert await roundtrip(tcp.external_port, b"ok", local=OTHER_PEER) == b"ok"
    await assert_turned_away(tcp.external_port, local=PUBLIC_IP)
    assert await udp_exchange(udp.external_port, b"ok", local=OTHER_PEER) == b"ok"
    assert await udp_exchange(udp.external_port, b"no", local=PUBLIC_IP) is None
    stats = backend.stats()
    assert (stats.tcp.refused_remote, stats.udp.dropped_remote) == (1, 1)


async def test_flow_limits(echo: Echo) -> None:
    relay = UserspaceBackend(max_tcp_per_mapping=2, max_udp_flows_per_mapping=1, max_tcp_total=3)
    first = mapping(TCP, free_port(), echo.tcp_port)
    second = mapping(TCP, free_port(), echo.tcp_port)
    udp = mapping(UDP, free_port(socket.SOCK_DGRAM), echo.udp_port)
    await relay.start((first, second, udp), (WAN,))
    streams = []
    try:
        for port in (first.external_port, first.external_port, second.external_port):
            reader, writer = await asyncio.open_connection(str(PUBLIC_IP), port)
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), STEP_S) == b"x"
            streams.append(writer)
        for port in (first.external_port, second.external_port):  # per mapping, then global
            await assert_turned_away(port)
        assert relay.stats().tcp.refused_limit == 2
        assert await udp_exchange(udp.external_port, b"1", local=PUBLIC_IP) == b"1"
        assert await udp_exchange(udp.external_port, b"2", local=OTHER_PEER) is None
        assert relay.stats().udp.dropped_limit == 1
    finally:
        for writer in streams:
            writer.close()
        await relay.stop()
    assert relay.stats().tcp_flows == 0


# ---- UDP idle timeout -----------------------------------------------------------------------


async def test_udp_session_expires_when_idle(echo: Echo) -> None:
    relay = UserspaceBackend(udp_idle_timeout_s=0.3)
    udp = mapping(UDP, free_port(socket.SOCK_DGRAM), echo.udp_port)
    await relay.start((udp,), (WAN,))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind((str(PUBLIC_IP), 0))
        try:
            for _ in range(6):  # activity (either way) keeps one session alive past the timeout
                assert await udp_exchange(udp.external_port, b"k", sock=client) == b"k"
                await asyncio.sleep(0.1)
            stats = relay.stats()
            assert (stats.udp_flows, stats.udp.sessions_opened) == (1, 1)
            await wait_until(lambda: relay.stats().udp_flows == 0, "the idle session to expire")
            assert relay.stats().udp.sessions_expired == 1
            assert await udp_exchange(udp.external_port, b"again", sock=client) == b"again"
            assert relay.stats().udp.sessions_opened == 2
        finally:
            await relay.stop()
