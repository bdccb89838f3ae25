"""Connection sources without a kernel: the static source, GUIDs, and the link -> props mapping."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from ipaddress import IPv4Interface
from typing import Any

import pytest

from igd.natcore.backends.netlink import (
    ARPHRD_ETHER,
    ARPHRD_LOOPBACK,
    ARPHRD_NONE,
    ARPHRD_PPP,
    ARPHRD_SIT,
    IFF_LOOPBACK,
    IFF_RUNNING,
    IFF_UP,
    _props_from_dump,
    device_name_from,
    link_props,
    media_type_from,
    status_from,
)
from igd.natcore.connections import (
    CONNECTION_NAMESPACE,
    ConnectionSource,
    StaticConnectionSource,
    connection_guid,
    make_connection,
)
from igd.natcore.model import (
    ROLE_FLAGS,
    ConnectionCharacteristics,
    ConnectionProps,
    ConnectionStatus,
    MediaType,
)

UP_RUNNING = IFF_UP | IFF_RUNNING
LAN = make_connection("lan0", addresses=["198.18.0.1/24"], ifindex=2)
WAN = make_connection("wan0", addresses=["198.19.0.1/24"], ifindex=3)


async def next_item(
    iterator: AsyncIterator[tuple[ConnectionProps, ...]],
) -> tuple[ConnectionProps, ...]:
    async with asyncio.timeout(1):
        return await anext(iterator)


async def nothing_within(
    iterator: AsyncIterator[tuple[ConnectionProps, ...]], seconds: float
) -> None:
    """Assert no item comes within `seconds`; the wait cancels, so it ends the iterator."""
    task = asyncio.ensure_future(anext(iterator))
    done, _ = await asyncio.wait({task}, timeout=seconds)
    assert not done, f"unexpected item: {task.result()!r}"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- connection_guid / make_connection ---------------------------------------------------------


def test_guid_is_uuid5_of_the_ifname_under_the_project_namespace() -> None:
    guid = connection_guid("eth0")
    assert guid.version == 5
    assert guid == uuid.uuid5(CONNECTION_NAMESPACE, "eth0")


def test_guid_is_pinned_so_roles_survive_restarts() -> None:
    assert connection_guid("lo") == uuid.UUID("9d1a323c-0f1b-563c-b675-9e50091bf26f")


def test_guid_differs_per_ifname_and_a_rename_is_a_new_connection() -> None:
    assert connection_guid("eth0") == connection_guid("eth0")
    assert connection_guid("eth0") != connection_guid("eth1")
    assert connection_guid("eth0") != connection_guid("ETH0")


def test_make_connection_defaults() -> None:
    props = make_connection("eth0")
    assert props == ConnectionProps(
        guid=connection_guid("eth0"),
        name="eth0",
        device_name="eth0",
        status=ConnectionStatus.CONNECTED,
        media_type=MediaType.LAN,
        characteristics=ConnectionCharacteristics.ALL_USERS,
        ifname="eth0",
    )
    assert props.shareable
    assert not props.bridged


def test_make_connection_takes_strings_and_interfaces() -> None:
    props = make_connection(
        "lo",
        addresses=["127.0.0.1/8", IPv4Interface("198.18.0.1/24")],
        loopback=True,
        ifindex=1,
        media_type=MediaType.TUNNEL,
        status=ConnectionStatus.MEDIA_DISCONNECTED,
        characteristics=ConnectionCharacteristics.ALL_USERS | ConnectionCharacteristics.BRIDGED,
        device_name="loopback",
    )
    assert props.addresses == (IPv4Interface("127.0.0.1/8"), IPv4Interface("198.18.0.1/24"))
    assert props.is_loopback
    assert props.ifindex == 1
    assert props.device_name == "loopback"
    assert props.media_type is MediaType.TUNNEL
    assert props.status is ConnectionStatus.MEDIA_DISCONNECTED
    assert props.bridged


@pytest.mark.parametrize("bad", ["::1/128", "198.18.0.300/24", "lan", 7])
def test_make_connection_rejects_what_is_not_an_ipv4_interface(bad: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - AddressValueError and ours are both ValueError
        make_connection("eth0", addresses=[bad])


# --- StaticConnectionSource --------------------------------------------------------------------


def test_static_source_satisfies_the_protocol() -> None:
    source: ConnectionSource = StaticConnectionSource()
    assert source is not None


async def test_static_snapshot_returns_the_set_in_order() -> None:
    source = StaticConnectionSource([WAN, LAN])
    assert await source.snapshot() == (WAN, LAN)
    assert await StaticConnectionSource().snapshot() == ()


def test_static_rejects_duplicate_guids() -> None:
    with pytest.raises(ValueError, match="GUID"):
        StaticConnectionSource([LAN, make_connection("lan0", ifindex=9)])
    source = StaticConnectionSource([LAN])
    with pytest.raises(ValueError, match="GUID"):
        source.update([LAN, LAN])
    assert source._props == (LAN,)


async def test_static_update_wakes_changes() -> None:
    source = StaticConnectionSource([LAN])
    assert await source.snapshot() == (LAN,)
    changes = source.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)
    source.update([LAN, WAN])
    async with asyncio.timeout(1):
        assert await pending == (LAN, WAN)
    assert await source.snapshot() == (LAN, WAN)
    await changes.aclose()


async def test_static_burst_of_updates_coalesces_to_the_last() -> None:
    source = StaticConnectionSource([LAN])
    changes = source.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)
    source.update([WAN])
    source.update([LAN, WAN])
    assert await pending == (LAN, WAN)
    await nothing_within(changes, 0.05)
    await changes.aclose()


async def test_static_identical_update_yields_nothing() -> None:
    source = StaticConnectionSource([LAN])
    changes = source.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)
    source.update([LAN])
    await asyncio.sleep(0.05)
    assert not pending.done()
    source.update([])
    async with asyncio.timeout(1):
        assert await pending == ()
    await changes.aclose()


async def test_static_change_between_snapshot_and_changes_is_not_lost() -> None:
    source = StaticConnectionSource([LAN])
    assert await source.snapshot() == (LAN,)
    source.update([LAN, WAN])
    changes = source.changes()
    assert await next_item(changes) == (LAN, WAN)
    await changes.aclose()


async def test_static_no_initial_item_when_nothing_changed_since_snapshot() -> None:
    source = StaticConnectionSource([LAN])
    await source.snapshot()
    changes = source.changes()
    await nothing_within(changes, 0.05)
    await changes.aclose()


async def test_static_every_iterator_sees_each_change() -> None:
    source = StaticConnectionSource([LAN])
    first, second = source.changes(), source.changes()
    pending = [asyncio.ensure_future(anext(first)), asyncio.ensure_future(anext(second))]
    await asyncio.sleep(0)
    source.update([WAN])
    async with asyncio.timeout(1):
        assert await asyncio.gather(*pending) == [(WAN,), (WAN,)]
    await first.aclose()
    await second.aclose()


async def test_static_aclose_ends_iterators_and_later_ones() -> None:
    source = StaticConnectionSource([LAN])
    changes = source.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)
    await source.aclose()
    assert source.closed
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(1):
            await pending
    assert [item async for item in source.changes()] == []
    await source.aclose()
    assert source._waiters == set()


async def test_static_cancelled_iterator_unsubscribes() -> None:
    source = StaticConnectionSource([LAN])
    changes = source.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)
    assert len(source._waiters) == 1
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert source._waiters == set()


# --- the link -> props mapping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "operstate", "expected"),
    [
        (0, "UP", ConnectionStatus.HARDWARE_DISABLED),
        (IFF_RUNNING, "UNKNOWN", ConnectionStatus.HARDWARE_DISABLED),
        (0, "DOWN", ConnectionStatus.HARDWARE_DISABLED),
        (UP_RUNNING, "UP", ConnectionStatus.CONNECTED),
        (UP_RUNNING | IFF_LOOPBACK, "UNKNOWN", ConnectionStatus.CONNECTED),
        (IFF_UP, "UNKNOWN", ConnectionStatus.MEDIA_DISCONNECTED),
        (UP_RUNNING, None, ConnectionStatus.CONNECTED),
        (IFF_UP, None, ConnectionStatus.MEDIA_DISCONNECTED),
        (IFF_UP, "DOWN", ConnectionStatus.MEDIA_DISCONNECTED),
        (IFF_UP, "LOWERLAYERDOWN", ConnectionStatus.MEDIA_DISCONNECTED),
        (IFF_UP, "NOTPRESENT", ConnectionStatus.HARDWARE_NOT_PRESENT),
        (IFF_UP, "DORMANT", ConnectionStatus.CONNECTING),
        (IFF_UP, "TESTING", ConnectionStatus.CONNECTING),
        (UP_RUNNING, "SOMETHING-NEW", ConnectionStatus.CONNECTED),
    ],
)
def test_status_from(flags: int, operstate: str | None, expected: ConnectionStatus) -> None:
    assert status_from(flags, operstate) is expected


@pytest.mark.parametrize(
    ("kind", "arphrd", "flags", "expected"),
    [
        ("bridge", ARPHRD_ETHER, 0, MediaType.BRIDGE),
        (None, ARPHRD_PPP, 0, MediaType.PPPOE),
        ("ppp", ARPHRD_PPP, 0, MediaType.PPPOE),
        ("tun", ARPHRD_NONE, 0, MediaType.TUNNEL),
        ("tun", ARPHRD_ETHER, 0, MediaType.TUNNEL),  # a tap device
        ("wireguard", ARPHRD_NONE, 0, MediaType.TUNNEL),
        ("gretap", ARPHRD_ETHER, 0, MediaType.TUNNEL),
        ("ipip", 768, 0, MediaType.TUNNEL),
        ("ip6tnl", 769, 0, MediaType.TUNNEL),
        (None, ARPHRD_SIT, 0, MediaType.TUNNEL),
        (None, ARPHRD_NONE, 0, MediaType.TUNNEL),
        (None, ARPHRD_LOOPBACK, IFF_LOOPBACK, MediaType.LAN),
        ("veth", ARPHRD_ETHER, 0, MediaType.LAN),
        ("vlan", ARPHRD_ETHER, 0, MediaType.LAN),
        ("bond", ARPHRD_ETHER, 0, MediaType.LAN),
        ("macvlan", ARPHRD_ETHER, 0, MediaType.LAN),
        (None, ARPHRD_ETHER, 0, MediaType.LAN),
        (None, 32, 0, MediaType.NONE),  # infiniband
        ("can", 280, 0, MediaType.NONE),
    ],
)
def test_media_type_from(kind: str | None, arphrd: int, flags: int, expected: MediaType) -> None:
    assert media_type_from(kind, arphrd, flags) is expected


@pytest.mark.parametrize(
    ("kind", "arphrd", "flags", "expected"),
    [
        ("veth", ARPHRD_ETHER, 0, "veth"),
        ("wireguard", ARPHRD_NONE, 0, "wireguard"),
        (None, ARPHRD_LOOPBACK, IFF_LOOPBACK, "loopback"),
        (None, ARPHRD_ETHER, 0, "ethernet"),
        (None, ARPHRD_PPP, 0, "ppp"),
        (None, 32, 0, "arphrd-32"),
    ],
)
def test_device_name_from(kind: str | None, arphrd: int, flags: int, expected: str) -> None:
    assert device_name_from(kind, arphrd, flags) == expected


def test_link_props_of_the_loopback() -> None:
    props = link_props(
        ifname="lo",
        ifindex=1,
        flags=UP_RUNNING | IFF_LOOPBACK,
        operstate="UNKNOWN",
        kind=None,
        arphrd=ARPHRD_LOOPBACK,
        addresses=[IPv4Interface("127.0.0.1/8")],
    )
    assert props == make_connection(
        "lo", addresses=["127.0.0.1/8"], loopback=True, ifindex=1, device_name="loopback"
    )
    assert props.guid_string == "{9D1A323C-0F1B-563C-B675-9E50091BF26F}"


def test_link_props_bridged_port_and_never_role_flags() -> None:
    props = link_props(
        ifname="v0",
        ifindex=4,
        flags=IFF_UP,
        operstate="LOWERLAYERDOWN",
        kind="veth",
        arphrd=ARPHRD_ETHER,
        bridged=True,
    )
    assert props.characteristics == (
        ConnectionCharacteristics.ALL_USERS | ConnectionCharacteristics.BRIDGED
    )
    assert not props.characteristics & ROLE_FLAGS
    assert props.bridged
    assert props.status is ConnectionStatus.MEDIA_DISCONNECTED
    assert not props.is_loopback


# --- assembling a dump (pyroute2 messages faked as dicts keyed like their `get` paths) ----------


class _Msg(dict[Any, Any]):
    """A stand-in for a pyroute2 message: `get` with a name or a nested-path tuple."""


def _link(
    index: int,
    ifname: str,
    *,
    kind: str | None = None,
    slave_kind: str | None = None,
    **extra: Any,
) -> _Msg:
    msg = _Msg(index=index, ifname=ifname, flags=UP_RUNNING, ifi_type=ARPHRD_ETHER)
    msg["operstate"] = "UP"
    msg.update(extra)
    if kind is not None:
        msg["linkinfo", "kind"] = kind
    if slave_kind is not None:
        msg["linkinfo", "slave_kind"] = slave_kind
    return msg


def _addr(index: int, address: str, prefixlen: int, **extra: Any) -> _Msg:
    return _Msg(index=index, family=2, address=address, prefixlen=prefixlen, **extra)


def test_dump_assembly_attaches_addresses_bridges_and_sorts() -> None:
    links = [
        _link(5, "v0", master=3, kind="veth"),
        _link(3, "br0", kind="bridge"),
        _link(
            1,
            "lo",
            flags=UP_RUNNING | IFF_LOOPBACK,
            ifi_type=ARPHRD_LOOPBACK,
            operstate="UNKNOWN",
        ),
        _link(7, "wg0", ifi_type=ARPHRD_NONE, kind="wireguard"),
    ]
    addrs = [
        _addr(1, "127.0.0.1", 8),
        _addr(3, "198.18.0.1", 24),
        _addr(3, "198.18.0.2", 24),
        _addr(7, "198.19.0.9", 32, local="198.19.0.1"),
        _addr(9, "198.18.0.99", 24),  # a link that vanished between the two dumps
        _Msg(index=3, family=10, address="2001:db8::1", prefixlen=64),
    ]
    props = _props_from_dump(links, addrs, None)
    assert [p.ifname for p in props] == ["lo", "br0", "v0", "wg0"]
    lo, br0, v0, wg0 = props
    assert lo.is_loopback
    assert lo.addresses == (IPv4Interface("127.0.0.1/8"),)
    assert br0.media_type is MediaType.BRIDGE
    assert not br0.characteristics & ConnectionCharacteristics.BRIDGED
    assert br0.addresses == (IPv4Interface("198.18.0.1/24"), IPv4Interface("198.18.0.2/24"))
    assert v0.characteristics & ConnectionCharacteristics.BRIDGED
    assert v0.media_type is MediaType.LAN
    assert v0.addresses == ()
    assert wg0.media_type is MediaType.TUNNEL
    assert wg0.addresses == (IPv4Interface("198.19.0.1/32"),)


def test_dump_assembly_bridged_by_slave_kind_even_when_master_is_filtered_out() -> None:
    links = [
        _link(3, "br0", kind="bridge"),
        _link(5, "v0", master=3, slave_kind="bridge"),
        _link(6, "v1", master=4),  # a bond port, say
        _link(4, "bond0", kind="bond"),
    ]
    props = _props_from_dump(links, [], frozenset({"v0", "v1", "absent"}))
    assert [(p.ifname, p.bridged) for p in props] == [("v0", True), ("v1", False)]


# --- CombinedConnectionSource ------------------------------------------------------------------
# (imports here: this section is appended to the module)

from igd.natcore import MemoryStore, SharingManager  # noqa: E402
from igd.natcore.backends.memory import MemoryBackend  # noqa: E402
from igd.natcore.connections import CombinedConnectionSource  # noqa: E402
from igd.natcore.errors import BackendError  # noqa: E402
from igd.natcore.events import ConnectionAdded  # noqa: E402

VIRTUAL = make_connection("wan", addresses=["198.19.0.1/32"])


class FailingSource:
    """A source whose changes() fails after `after` items and whose aclose may fail."""

    def __init__(self, props: tuple[ConnectionProps, ...] = (), *, fail_close: bool = False):
        self.props = props
        self.fail_close = fail_close
        self.closed = False
        self.release = asyncio.Event()

    async def snapshot(self) -> tuple[ConnectionProps, ...]:
        return self.props

    async def changes(self) -> AsyncIterator[tuple[ConnectionProps, ...]]:
        await self.release.wait()
        raise BackendError("netlink went away")
        yield ()  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        self.closed = True
        if self.fail_close:
            raise BackendError("close failed")


def test_combined_satisfies_the_protocol_and_needs_a_source() -> None:
    source: ConnectionSource = CombinedConnectionSource([StaticConnectionSource()])
    assert source is not None
    with pytest.raises(ValueError, match="at least one"):
        CombinedConnectionSource([])


async def test_combined_snapshot_concatenates_in_source_order() -> None:
    first, second = StaticConnectionSource([LAN]), StaticConnectionSource([VIRTUAL, WAN])
    combined = CombinedConnectionSource([first, second])
    assert combined.sources == (first, second)
    assert await combined.snapshot() == (LAN, VIRTUAL, WAN)


async def test_combined_snapshot_refuses_a_guid_from_two_sources() -> None:
    combined = CombinedConnectionSource([StaticConnectionSource([LAN])] * 2)
    with pytest.raises(BackendError, match=r"lan0 .* comes from two sources"):
        await combined.snapshot()


async def test_combined_change_in_any_source_yields_the_merged_set() -> None:
    first, second = StaticConnectionSource([LAN]), StaticConnectionSource([VIRTUAL])
    combined = CombinedConnectionSource([first, second])
    await combined.snapshot()
    changes = combined.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    first.update([LAN, WAN])
    async with asyncio.timeout(1):
        assert await pending == (LAN, WAN, VIRTUAL)
    second.update([])
    assert await next_item(changes) == (LAN, WAN)
    assert await combined.snapshot() == (LAN, WAN)
    await changes.aclose()
    await combined.aclose()


async def test_combined_change_between_snapshot_and_changes_is_not_lost() -> None:
    first, second = StaticConnectionSource([LAN]), StaticConnectionSource([VIRTUAL])
    combined = CombinedConnectionSource([first, second])
    assert await combined.snapshot() == (LAN, VIRTUAL)
    second.update([VIRTUAL, WAN])
    changes = combined.changes()
    assert await next_item(changes) == (LAN, VIRTUAL, WAN)
    await changes.aclose()


async def test_combined_no_item_when_nothing_changed() -> None:
    combined = CombinedConnectionSource([StaticConnectionSource([LAN])])
    await combined.snapshot()
    changes = combined.changes()
    await nothing_within(changes, 0.05)


async def test_combined_changes_without_snapshot_start_from_now() -> None:
    first = StaticConnectionSource([LAN])
    combined = CombinedConnectionSource([first, StaticConnectionSource([VIRTUAL])])
    changes = combined.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    assert not pending.done()
    first.update([])
    async with asyncio.timeout(1):
        assert await pending == (VIRTUAL,)
    await changes.aclose()


async def test_combined_identical_merged_set_yields_nothing() -> None:
    first = StaticConnectionSource([LAN])
    combined = CombinedConnectionSource([first])
    await combined.snapshot()
    changes = combined.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    first.update([WAN])
    first.update([LAN])  # back to what was handed out before the iterator saw it
    await asyncio.sleep(0.05)
    assert not pending.done()
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending


async def test_combined_duplicate_arising_later_fails_the_iterator() -> None:
    first, second = StaticConnectionSource([LAN]), StaticConnectionSource([WAN])
    combined = CombinedConnectionSource([first, second])
    await combined.snapshot()
    changes = combined.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    second.update([WAN, LAN])
    with pytest.raises(BackendError, match="two sources"):
        async with asyncio.timeout(1):
            await pending


async def test_combined_failing_source_fails_the_iterator_with_backend_error() -> None:
    failing = FailingSource((VIRTUAL,))
    combined = CombinedConnectionSource([StaticConnectionSource([LAN]), failing])
    assert await combined.snapshot() == (LAN, VIRTUAL)
    changes = combined.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    failing.release.set()
    with pytest.raises(BackendError, match="netlink went away"):
        async with asyncio.timeout(1):
            await pending


async def test_combined_iterator_ends_when_a_source_is_closed_underneath() -> None:
    first, second = StaticConnectionSource([LAN]), StaticConnectionSource([VIRTUAL])
    combined = CombinedConnectionSource([first, second])
    await combined.snapshot()
    changes = combined.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    await second.aclose()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(1):
            await pending


async def test_combined_aclose_ends_iterators_and_closes_every_source() -> None:
    first, second = StaticConnectionSource([LAN]), StaticConnectionSource([VIRTUAL])
    combined = CombinedConnectionSource([first, second])
    await combined.snapshot()
    changes = combined.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    await combined.aclose()
    assert combined.closed
    assert first.closed
    assert second.closed
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(1):
            await pending
    assert [item async for item in combined.changes()] == []
    await combined.aclose()  # idempotent
    assert combined._wakers == set()


async def test_combined_aclose_closes_all_even_when_one_fails() -> None:
    failing, static = FailingSource(fail_close=True), StaticConnectionSource([LAN])
    combined = CombinedConnectionSource([failing, static])
    with pytest.raises(BackendError, match="close failed"):
        await combined.aclose()
    assert failing.closed
    assert static.closed


async def test_combined_cancelled_iterator_stops_following() -> None:
    first = StaticConnectionSource([LAN])
    combined = CombinedConnectionSource([first])
    await combined.snapshot()
    changes = combined.changes()
    pending = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0.01)
    assert len(first._waiters) == 1
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert combined._wakers == set()
    await asyncio.sleep(0)
    assert first._waiters == set()


async def test_combined_source_feeds_the_core() -> None:
    """The daemon's shape: real links plus a virtual public connection, one core."""
    links = StaticConnectionSource([LAN])
    combined = CombinedConnectionSource([links, StaticConnectionSource([VIRTUAL])])
    core = await SharingManager.open(backend=MemoryBackend(), store=MemoryStore(), source=combined)
    try:
        await core.share(core.find_connection(name="wan"), core.find_connection(name="lan0"))
        assert core.external_address == VIRTUAL.addresses[0].ip
        events = core.events(kinds={ConnectionAdded})
        links.update([LAN, WAN])
        async with asyncio.timeout(2):
            event = await anext(events)
        assert isinstance(event, ConnectionAdded)
        assert event.props.name == "wan0"
    finally:
        await core.aclose()
    assert combined.closed
    assert links.closed
