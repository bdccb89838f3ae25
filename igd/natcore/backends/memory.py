"""A backend that moves no packets and records what it was told: for tests and library use."""

from __future__ import annotations

from igd.natcore.backends.base import AppliedConnection, Plan
from igd.natcore.errors import BackendError
from igd.natcore.model import Mapping, MappingKey

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Applied state as plain data; `fail_next` makes the next apply fail, to test rollback."""

    name = "memory"

    def __init__(self) -> None:
        self.mappings: dict[MappingKey, Mapping] = {}
        self.connections: tuple[AppliedConnection, ...] = ()
        self.started = False
        self.applied_plans = 0
        self.fail_next = 0

    async def start(
        self, mappings: tuple[Mapping, ...], connections: tuple[AppliedConnection, ...]
    ) -> None:
        self.mappings = {m.key: m for m in mappings}
        self.connections = connections
        self.started = True

    async def apply(self, plan: Plan) -> None:
        if not self.started:
            raise BackendError("memory backend is not started")
        if self.fail_next:
            self.fail_next -= 1
            raise BackendError("memory backend told to fail")
        removed = {m.key for m in plan.remove}
        for key in removed:
            if key not in self.mappings:
                raise BackendError(f"remove of a mapping that is not applied: {key}")
        added: set[object] = set()
        for mapping in plan.add:
            if (
                mapping.key in self.mappings and mapping.key not in removed
            ) or mapping.key in added:
                raise BackendError(f"add of a mapping that is already applied: {mapping.key}")
            added.add(mapping.key)
        for key in removed:
            del self.mappings[key]
        for mapping in plan.add:
            self.mappings[mapping.key] = mapping
        if plan.connections is not None:
            self.connections = plan.connections
        self.applied_plans += 1

    async def stop(self) -> None:
        self.started = False
