"""Shared fixtures: a lab of connections in the benchmarking ranges, a fake clock, a core."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support import FakeClock, fake_resolver, lab_connections

from igd.natcore import MemoryStore, SharingConnectionType, SharingManager, StaticConnectionSource
from igd.natcore.backends.memory import MemoryBackend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def source() -> StaticConnectionSource:
    return StaticConnectionSource(lab_connections())


@pytest.fixture
async def core(
    backend: MemoryBackend, source: StaticConnectionSource, clock: FakeClock
) -> AsyncIterator[SharingManager]:
    """A core with wan0 public and lan0 private, on the memory backend and store."""
    manager = await SharingManager.open(
        backend=backend, store=MemoryStore(), source=source, clock=clock, resolver=fake_resolver
    )
    await manager.enable_sharing(
        manager.find_connection(name="wan0").guid, SharingConnectionType.PUBLIC
    )
    await manager.enable_sharing(
        manager.find_connection(name="lan0").guid, SharingConnectionType.PRIVATE
    )
    yield manager
    await manager.aclose()
