"""Events the core publishes after a change is committed (ics-icf-model.md 6.8).

Frozen, slotted dataclasses named in the past tense. Pure module.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address

from igd.natcore.model import ConnectionProps, Mapping, SharingConnectionType

__all__ = [
    "ConnectionAdded",
    "ConnectionChanged",
    "ConnectionRemoved",
    "Event",
    "EventsDropped",
    "ExternalAddressChanged",
    "FirewallChanged",
    "MappingAdded",
    "MappingChanged",
    "MappingRemoved",
    "NumberOfEntriesChanged",
    "RemovalReason",
    "SharingCause",
    "SharingChanged",
]


class RemovalReason(enum.Enum):
    DELETED = "deleted"
    EXPIRED = "expired"
    UNSHARED = "unshared"  # protocol mapping on a connection that stopped being public (S5)


class SharingCause(enum.Enum):
    EXPLICIT = "explicit"
    DISPLACED = "displaced"  # R2: another connection took the role


@dataclass(frozen=True, slots=True)
class MappingAdded:
    mapping: Mapping


@dataclass(frozen=True, slots=True)
class MappingChanged:
    old: Mapping
    new: Mapping
    reason: str  # "refreshed", "enabled", "disabled", "edited", "unshared"


@dataclass(frozen=True, slots=True)
class MappingRemoved:
    mapping: Mapping
    reason: RemovalReason


@dataclass(frozen=True, slots=True)
class NumberOfEntriesChanged:
    """INATNumberOfEntriesCallback: the total number of mappings changed."""

    count: int


@dataclass(frozen=True, slots=True)
class ExternalAddressChanged:
    """INATExternalIPAddressCallback: the public connection's address changed."""

    connection: uuid.UUID | None
    old: IPv4Address | None
    new: IPv4Address | None


@dataclass(frozen=True, slots=True)
class SharingChanged:
    connection: uuid.UUID
    role: SharingConnectionType | None
    cause: SharingCause


@dataclass(frozen=True, slots=True)
class FirewallChanged:
    connection: uuid.UUID | None  # None: the global setting changed
    interface_enabled: bool
    effective_enabled: bool


@dataclass(frozen=True, slots=True)
class ConnectionAdded:
    props: ConnectionProps


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    old: ConnectionProps
    new: ConnectionProps


@dataclass(frozen=True, slots=True)
class ConnectionRemoved:
    props: ConnectionProps


@dataclass(frozen=True, slots=True)
class EventsDropped:
    """A subscriber fell behind; its bounded queue dropped this many of the oldest events."""

    count: int


Event = (
    MappingAdded
    | MappingChanged
    | MappingRemoved
    | NumberOfEntriesChanged
    | ExternalAddressChanged
    | SharingChanged
    | FirewallChanged
    | ConnectionAdded
    | ConnectionChanged
    | ConnectionRemoved
    | EventsDropped
)
