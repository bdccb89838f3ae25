"""Where connections come from: the `ConnectionSource` contract and an in-memory source.

A connection (INetConnection, ics-icf-model.md 1.4) is one network link. A source reports the
links as `ConnectionProps` snapshots; the netlink source lives in `backends/netlink.py`.
Sources never set the role flags (SHARED, SHARED_PRIVATE, FIREWALLED): the core computes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from ipaddress import IPv4Interface
from typing import Protocol

from igd.natcore.errors import BackendError
from igd.natcore.model import (
    ConnectionCharacteristics,
    ConnectionProps,
    ConnectionStatus,
    MediaType,
)

__all__ = [
    "CONNECTION_NAMESPACE",
    "CombinedConnectionSource",
    "ConnectionSource",
    "StaticConnectionSource",
    "connection_guid",
    "make_connection",
]

CONNECTION_NAMESPACE = uuid.UUID("6f1c2e0a-5b7d-4c3e-9a8f-2d4b6e8c0a1f")
"""The uuid5 namespace of connection GUIDs; fixed forever, changing it re-keys every role."""


class ConnectionSource(Protocol):
    """Reports the host's connections; `snapshot()` then `changes()` misses no change."""

    async def snapshot(self) -> tuple[ConnectionProps, ...]:
        """Every connection now, in a stable order; may raise BackendError (also after aclose)."""

    def changes(self) -> AsyncIterator[tuple[ConnectionProps, ...]]:
        """Yield a full snapshot each time it differs from the last one handed out; end on aclose.

        The first item comes at once when the set changed since the last `snapshot()` call.
        """

    async def aclose(self) -> None:
        """End every `changes()` iterator and release OS resources; idempotent."""


class StaticConnectionSource:
    """An in-memory source for tests and library use: `update()` is the only change."""

    def __init__(self, props: Iterable[ConnectionProps] = ()) -> None:
        self._props = _checked(props)
        self._delivered: tuple[ConnectionProps, ...] | None = None
        self._waiters: set[asyncio.Event] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def snapshot(self) -> tuple[ConnectionProps, ...]:
        """The current set (still answered after aclose)."""
        self._delivered = self._props
        return self._props

    def update(self, props: Iterable[ConnectionProps]) -> None:
        """Replace the set and wake every `changes()` iterator; ValueError on duplicate GUIDs."""
        self._props = _checked(props)
        for waiter in self._waiters:
            waiter.set()

    async def changes(self) -> AsyncGenerator[tuple[ConnectionProps, ...], None]:
        """Yield the set after each `update()` that changed it; updates in a burst coalesce."""
        if self._closed:
            return
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            seen = self._props
            if self._delivered is not None and seen != self._delivered:
                self._delivered = seen
                yield seen
            while True:
                await waiter.wait()
                waiter.clear()
                if self._closed:
                    return
                current = self._props
                if current != seen:
                    seen = self._delivered = current
                    yield current
        finally:
            self._waiters.discard(waiter)

    async def aclose(self) -> None:
        """End every `changes()` iterator; later ones end at once."""
        self._closed = True
        for waiter in self._waiters:
            waiter.set()


class CombinedConnectionSource:
    """Several sources as one: their snapshots concatenated in source order, GUIDs unique.

    `changes()` follows every source and yields the merged set whenever it differs from the
    last one handed out. A GUID reported by two sources is a BackendError; the iterator ends
    when any source's iterator ends (that source was closed) and on `aclose()`, which closes
    every source.
    """

    def __init__(self, sources: Iterable[ConnectionSource]) -> None:
        self._sources = tuple(sources)
        if not self._sources:
            raise ValueError("a combined source needs at least one source")
        self._parts: list[tuple[ConnectionProps, ...]] | None = None
        self._delivered: tuple[ConnectionProps, ...] | None = None
        self._wakers: set[asyncio.Event] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sources(self) -> tuple[ConnectionSource, ...]:
        """The merged sources, in merge order."""
        return self._sources

    async def snapshot(self) -> tuple[ConnectionProps, ...]:
        """Every source's snapshot, concatenated; BackendError on a GUID reported twice."""
        parts = [await source.snapshot() for source in self._sources]
        merged = _merged(parts)
        self._parts = parts
        self._delivered = merged
        return merged

    async def changes(self) -> AsyncGenerator[tuple[ConnectionProps, ...], None]:
        """Yield the merged set after any source changed it; a burst may coalesce."""
        if self._closed:
            return
        if self._parts is None:  # never snapshotted: start from the sets as they are now
            latest = [await source.snapshot() for source in self._sources]
            seen = _merged(latest)
        else:
            latest = list(self._parts)
            seen = self._delivered if self._delivered is not None else _merged(latest)
        wake = asyncio.Event()
        self._wakers.add(wake)
        updates: dict[int, tuple[ConnectionProps, ...]] = {}
        failures: list[BaseException] = []
        ended: list[int] = []

        async def follow(index: int, source: ConnectionSource) -> None:
            try:
                async for props in source.changes():
                    updates[index] = props
                    wake.set()
            except Exception as exc:  # a BackendError from the source ends the merged stream
                failures.append(exc)
            ended.append(index)
            wake.set()

        tasks = [
            asyncio.create_task(follow(index, source), name=f"igd-combined-source-{index}")
            for index, source in enumerate(self._sources)
        ]
        try:
            while True:
                await wake.wait()
                wake.clear()
                if self._closed:
                    return
                for index, props in updates.items():
                    latest[index] = props
                updates.clear()
                if failures:
                    error = failures[0]
                    if isinstance(error, BackendError):
                        raise error
                    raise BackendError(f"a connection source failed: {error}") from error
                current = _merged(latest)
                if current != seen:
                    seen = self._delivered = current
                    self._parts = list(latest)
                    yield current
                if ended:
                    return
        finally:
            self._wakers.discard(wake)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def aclose(self) -> None:
        """End every `changes()` iterator and close every source (all of them, even on error)."""
        if self._closed:
            return
        self._closed = True
        for wake in self._wakers:
            wake.set()
        errors: list[BaseException] = []
        for source in self._sources:
            try:
                await source.aclose()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _merged(parts: Iterable[tuple[ConnectionProps, ...]]) -> tuple[ConnectionProps, ...]:
    result = tuple(props for part in parts for props in part)
    seen: set[uuid.UUID] = set()
    for props in result:
        if props.guid in seen:
            raise BackendError(f"connection {props.name} ({props.guid}) comes from two sources")
        seen.add(props.guid)
    return result


def _checked(props: Iterable[ConnectionProps]) -> tuple[ConnectionProps, ...]:
    result = tuple(props)
    guids = {p.guid for p in result}
    if len(guids) != len(result):
        raise ValueError("two connections share a GUID")
    return result


def connection_guid(ifname: str) -> uuid.UUID:
    """The GUID of the connection on `ifname`: stable across reboots; a rename is a new connection.

    Roles and port mappings are keyed by this GUID, so renaming an interface leaves them behind
    on the old name, exactly as a re-created Windows adapter loses its ICS settings.
    """
    return uuid.uuid5(CONNECTION_NAMESPACE, ifname)


def make_connection(
    ifname: str,
    *,
    addresses: Iterable[str | IPv4Interface] = (),
    media_type: MediaType = MediaType.LAN,
    status: ConnectionStatus = ConnectionStatus.CONNECTED,
    loopback: bool = False,
    ifindex: int | None = None,
    characteristics: ConnectionCharacteristics = ConnectionCharacteristics.ALL_USERS,
    device_name: str | None = None,
) -> ConnectionProps:
    """Props for `ifname` with its `connection_guid`; device_name defaults to the ifname.

    Addresses are "a.b.c.d/len" strings or IPv4Interface; anything else raises ValueError.
    """
    return ConnectionProps(
        guid=connection_guid(ifname),
        name=ifname,
        device_name=ifname if device_name is None else device_name,
        status=status,
        media_type=media_type,
        characteristics=characteristics,
        ifname=ifname,
        ifindex=ifindex,
        addresses=tuple(_interface(a) for a in addresses),
        is_loopback=loopback,
    )


def _interface(value: str | IPv4Interface) -> IPv4Interface:
    if isinstance(value, IPv4Interface):
        return value
    if isinstance(value, str):
        return IPv4Interface(value)
    raise ValueError(f"not an IPv4 interface address: {value!r}")
