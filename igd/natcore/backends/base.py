"""The contract between the core and a data plane that moves packets.

The core computes the *desired* state (which mappings are active, which connection holds which
role, where the firewall is on) and hands a backend the difference as one `Plan`. A backend
applies a plan atomically: all of it or, raising BackendError, none of it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from ipaddress import IPv4Interface
from typing import Protocol

from igd.natcore.model import Mapping, SharingConnectionType

__all__ = ["AppliedConnection", "Backend", "Plan"]


@dataclass(frozen=True, slots=True)
class AppliedConnection:
    """What a backend needs to know of one connection."""

    guid: uuid.UUID
    ifname: str
    role: SharingConnectionType | None
    firewall: bool  # effective ICF state (R9)
    addresses: tuple[IPv4Interface, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    """One atomic change: mappings to withdraw, mappings to install, and the new connection state.

    `remove` is applied before `add`; a refreshed or edited mapping appears in both.
    `connections` is None when sharing and firewall state are unchanged.
    Only active mappings (enabled, on a shared or firewalled connection) reach a backend.
    """

    remove: tuple[Mapping, ...] = ()
    add: tuple[Mapping, ...] = ()
    connections: tuple[AppliedConnection, ...] | None = None

    def __bool__(self) -> bool:
        return bool(self.remove or self.add or self.connections is not None)


class Backend(Protocol):
    """A data plane. Implementations: memory (tests, library), nftables, userspace."""

    name: str

    async def start(
        self, mappings: tuple[Mapping, ...], connections: tuple[AppliedConnection, ...]
    ) -> None:
        """Take over the data plane and make it equal to this full state (reconcile)."""

    async def apply(self, plan: Plan) -> None:
        """Apply one plan atomically; raise BackendError and change nothing on failure."""

    async def stop(self) -> None:
        """Release the data plane (the backend decides whether its rules stay)."""
