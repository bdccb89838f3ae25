"""NetlinkConnectionSource against the kernel: the loopback as any user, a private netns as root.

The root tests build their links inside a namespace they create (`igdt-<run id>`), use only
198.18.0.0/24, install the lab blackhole 198.18.0.0/15 in the root namespace first, and delete
the namespace in the fixture finaliser whatever happens (architecture.md section 6).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from ipaddress import IPv4Interface
from typing import cast

import pytest

from igd.natcore.backends.netlink import NetlinkConnectionSource, _Monitor
from igd.natcore.connections import ConnectionSource, connection_guid
from igd.natcore.errors import BackendError
from igd.natcore.model import (
    ConnectionCharacteristics,
    ConnectionProps,
    ConnectionStatus,
    MediaType,
)

STEP_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0
LAN_ADDRESS = IPv4Interface("198.18.0.1/24")

Snapshot = tuple[ConnectionProps, ...]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating network namespaces needs root")
needs_ip = pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2's `ip` is not installed")


def by_name(snapshot: Snapshot, ifname: str) -> ConnectionProps | None:
    return next((p for p in snapshot if p.ifname == ifname), None)


async def ip(*args: str) -> None:
    """Run `ip` with a bounded wait; fail the test with its stderr on error."""
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    async with asyncio.timeout(COMMAND_TIMEOUT_S):
        _, stderr = await proc.communicate()
    assert proc.returncode == 0, f"ip {' '.join(args)}: {stderr.decode().strip()}"


async def until(
    changes: AsyncGenerator[Snapshot, None], predicate: Callable[[Snapshot], bool]
) -> Snapshot:
    """The first snapshot from `changes` that satisfies `predicate`, within STEP_TIMEOUT_S."""
    async with asyncio.timeout(STEP_TIMEOUT_S):
        async for snapshot in changes:
            if predicate(snapshot):
                return snapshot
    raise AssertionError("changes() ended before the expected snapshot")


# --- any user ----------------------------------------------------------------------------------


async def test_snapshot_has_the_loopback() -> None:
    source = NetlinkConnectionSource()
    try:
        snapshot = await source.snapshot()
    finally:
        await source.aclose()
    lo = by_name(snapshot, "lo")
    assert lo is not None
    assert lo.guid == connection_guid("lo")
    assert lo.name == "lo"
    assert lo.device_name == "loopback"
    assert IPv4Interface("127.0.0.1/8") in lo.addresses
    assert lo.media_type is MediaType.LAN
    assert lo.status is ConnectionStatus.CONNECTED
    assert lo.is_loopback
    assert lo.characteristics == ConnectionCharacteristics.ALL_USERS
    assert [p.ifindex or 0 for p in snapshot] == sorted(p.ifindex or 0 for p in snapshot)


async def test_ifnames_restricts_the_snapshot() -> None:
    source: ConnectionSource = NetlinkConnectionSource(ifnames=["lo", "igdt-absent"])
    try:
        assert [p.ifname for p in await source.snapshot()] == ["lo"]
    finally:
        await source.aclose()


async def test_changes_ends_on_aclose_and_snapshot_then_fails() -> None:
    source = NetlinkConnectionSource()
    changes = source.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.1)
    assert not pending.done()
    await source.aclose()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await pending
    assert source._monitors == set()
    with pytest.raises(BackendError, match="closed"):
        await source.snapshot()
    assert [s async for s in source.changes()] == []
    await source.aclose()


async def test_cancelled_changes_closes_its_socket() -> None:
    source = NetlinkConnectionSource()
    try:
        changes = source.changes()
        pending = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0.1)
        (monitor,) = source._monitors
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert monitor.closed
        assert source._monitors == set()
    finally:
        await source.aclose()


class _ScriptedSocket:
    """A real readable fd whose `recv_into` plays a script of results (int) and errors (errno)."""

    def __init__(self, script: list[int | OSError]) -> None:
        self._pair = socket.socketpair()
        self._pair[1].send(b"x")
        self._script = script
        self.closed = False

    def fileno(self) -> int:
        return self._pair[0].fileno()

    def recv_into(self, buffer: bytearray) -> int:
        step = self._script.pop(0) if self._script else BlockingIOError(errno.EAGAIN, "empty")
        if isinstance(step, OSError):
            if isinstance(step, BlockingIOError):
                self._pair[0].recv(1)
            raise step
        return step

    def close(self) -> None:
        self.closed = True
        for sock in self._pair:
            sock.close()


async def test_monitor_treats_enobufs_as_a_change() -> None:
    fake = _ScriptedSocket([100, OSError(errno.ENOBUFS, "No buffer space available")])
    monitor = _Monitor(cast(socket.socket, fake), asyncio.get_running_loop())
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await monitor.woken.wait()
        assert monitor.error is None
        assert not monitor.closed
    finally:
        monitor.close()
    assert fake.closed


async def test_monitor_stops_on_another_socket_error() -> None:
    fake = _ScriptedSocket([OSError(errno.EBADF, "Bad file descriptor")])
    monitor = _Monitor(cast(socket.socket, fake), asyncio.get_running_loop())
    async with asyncio.timeout(STEP_TIMEOUT_S):
        await monitor.woken.wait()
    assert monitor.error is not None
    assert monitor.error.errno == errno.EBADF
    assert monitor.closed
    assert fake.closed
    monitor.close()


# --- root: a namespace of our own --------------------------------------------------------------


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, uniquely named network namespace, deleted at teardown even on failure."""
    blackhole = subprocess.run(
        ["ip", "route", "add", "blackhole", "198.18.0.0/15"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    if blackhole.returncode != 0 and "File exists" not in blackhole.stderr:
        pytest.fail(f"cannot install the lab blackhole route: {blackhole.stderr.strip()}")
    name = f"igdt-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=COMMAND_TIMEOUT_S)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=COMMAND_TIMEOUT_S)


@pytest.fixture
async def veth(netns: str) -> str:
    """The namespace, holding a veth pair v0 (admin down) / v1 (admin down)."""
    await ip("-n", netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    return netns


@pytest.mark.netns
@needs_root
@needs_ip
async def test_link_lifecycle_in_a_namespace(veth: str) -> None:
    netns = veth
    source = NetlinkConnectionSource(netns=netns)
    try:
        first = await source.snapshot()
        v0 = by_name(first, "v0")
        assert v0 is not None
        assert v0.guid == connection_guid("v0")
        assert v0.device_name == "veth"
        assert v0.media_type is MediaType.LAN
        assert v0.status is ConnectionStatus.HARDWARE_DISABLED
        assert v0.addresses == ()
        assert not v0.is_loopback
        lo = by_name(first, "lo")
        assert lo is not None
        assert lo.is_loopback
        assert lo.status is ConnectionStatus.HARDWARE_DISABLED  # a new namespace's lo is down

        changes = source.changes()
        try:
            await ip("-n", netns, "link", "set", "v0", "up")
            snapshot = await until(changes, lambda s: _status(s, "v0") is not None)
            assert _status(snapshot, "v0") is ConnectionStatus.MEDIA_DISCONNECTED  # peer down

            await ip("-n", netns, "link", "set", "v1", "up")
            await until(changes, lambda s: _status(s, "v0") is ConnectionStatus.CONNECTED)

            await ip("-n", netns, "addr", "add", str(LAN_ADDRESS), "dev", "v0")
            snapshot = await until(changes, lambda s: LAN_ADDRESS in _addresses(s, "v0"))
            assert _status(snapshot, "v0") is ConnectionStatus.CONNECTED

            await ip("-n", netns, "link", "set", "v0", "down")
            snapshot = await until(
                changes, lambda s: _status(s, "v0") is ConnectionStatus.HARDWARE_DISABLED
            )

            await ip("-n", netns, "link", "del", "v0")
            snapshot = await until(changes, lambda s: by_name(s, "v0") is None)
            assert by_name(snapshot, "v1") is None  # deleting one end removes the pair
        finally:
            await changes.aclose()
    finally:
        await source.aclose()


def _status(snapshot: Snapshot, ifname: str) -> ConnectionStatus | None:
    props = by_name(snapshot, ifname)
    return None if props is None else props.status


def _addresses(snapshot: Snapshot, ifname: str) -> tuple[IPv4Interface, ...]:
    props = by_name(snapshot, ifname)
    return () if props is None else props.addresses


@pytest.mark.netns
@needs_root
@needs_ip
async def test_change_between_snapshot_and_changes_is_not_lost(veth: str) -> None:
    source = NetlinkConnectionSource(netns=veth)
    try:
        assert _addresses(await source.snapshot(), "v0") == ()
        await ip("-n", veth, "addr", "add", str(LAN_ADDRESS), "dev", "v0")
        changes = source.changes()
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                snapshot = await anext(changes)
            assert _addresses(snapshot, "v0") == (LAN_ADDRESS,)
        finally:
            await changes.aclose()
    finally:
        await source.aclose()


@pytest.mark.netns
@needs_root
@needs_ip
async def test_ifnames_ignores_changes_elsewhere(veth: str) -> None:
    source = NetlinkConnectionSource(netns=veth, ifnames=["v0"])
    try:
        assert [p.ifname for p in await source.snapshot()] == ["v0"]
        changes = source.changes()
        try:
            await ip("-n", veth, "link", "set", "v1", "up")  # v0 stays admin down: no change
            await asyncio.sleep(0.3)
            await ip("-n", veth, "addr", "add", str(LAN_ADDRESS), "dev", "v0")
            async with asyncio.timeout(STEP_TIMEOUT_S):
                snapshot = await anext(changes)
            assert [p.ifname for p in snapshot] == ["v0"]
            assert _addresses(snapshot, "v0") == (LAN_ADDRESS,)
        finally:
            await changes.aclose()
    finally:
        await source.aclose()


@pytest.mark.netns
@needs_root
@needs_ip
async def test_bridge_and_its_port(veth: str) -> None:
    await ip("-n", veth, "link", "add", "br0", "type", "bridge")
    await ip("-n", veth, "link", "set", "v0", "master", "br0")
    source = NetlinkConnectionSource(netns=veth)
    try:
        snapshot = await source.snapshot()
    finally:
        await source.aclose()
    br0, v0, v1 = by_name(snapshot, "br0"), by_name(snapshot, "v0"), by_name(snapshot, "v1")
    assert br0 is not None
    assert v0 is not None
    assert v1 is not None
    assert br0.media_type is MediaType.BRIDGE
    assert br0.device_name == "bridge"
    assert not br0.shareable
    assert v0.characteristics == (
        ConnectionCharacteristics.ALL_USERS | ConnectionCharacteristics.BRIDGED
    )
    assert v1.characteristics == ConnectionCharacteristics.ALL_USERS


@pytest.mark.netns
@needs_root
@needs_ip
async def test_missing_namespace_is_a_backend_error(netns: str) -> None:
    source = NetlinkConnectionSource(netns=f"{netns}-absent")
    try:
        with pytest.raises(BackendError, match="does not exist"):
            await source.snapshot()
        with pytest.raises(BackendError, match="does not exist"):
            await anext(source.changes())
    finally:
        await source.aclose()
    assert f"{netns}-absent" not in await asyncio.to_thread(os.listdir, "/run/netns")
