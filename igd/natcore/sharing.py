"""ICS handles: Connection, SharingConfiguration and PortMapping (ics-icf-model.md 6.4).

Handles are cheap (an identity and the manager); reads return snapshots; writes are coroutines
that return once the change is validated, persisted and applied.
"""

from __future__ import annotations

import uuid
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from igd.natcore.errors import (
    InvalidAddressError,
    InvalidRequestError,
    MappingNotFoundError,
    ObjectNoLongerValidError,
)
from igd.natcore.model import (
    ConnectionProps,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingRequest,
    SharingConnectionEnumFlags,
    SharingConnectionType,
    TargetType,
)

if TYPE_CHECKING:
    from igd.natcore.service import SharingManager

__all__ = ["Connection", "PortMapping", "SharingConfiguration", "parse_target"]


def parse_target(target: str | IPv4Address, target_type: TargetType | None) -> IPv4Address | str:
    """An ICS target: an IPv4 address, or a name for TargetType.NAME (inferred when None)."""
    if isinstance(target, IPv4Address):
        if target_type is TargetType.NAME:
            raise InvalidRequestError("a NAME target must be a host name, not an address")
        return target
    if not isinstance(target, str) or not target:
        raise InvalidAddressError(f"target must be an address or a host name, not {target!r}")
    if target_type is None:
        try:
            return IPv4Address(target)
        except ValueError:
            return target
    if target_type is TargetType.IP_ADDRESS:
        try:
            return IPv4Address(target)
        except ValueError:
            raise InvalidAddressError(f"{target!r} is not an IPv4 address") from None
    return target


class Connection:
    """INetConnection: a handle on one network link."""

    __slots__ = ("_manager", "guid")

    def __init__(self, manager: SharingManager, guid: uuid.UUID) -> None:
        self._manager = manager
        self.guid = guid

    def props(self) -> ConnectionProps:
        """GetProperties: a snapshot (ObjectNoLongerValidError once the link is gone)."""
        return self._manager.connection_props(self.guid)

    @property
    def name(self) -> str:
        return self.props().name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Connection) and other.guid == self.guid

    def __hash__(self) -> int:
        return hash(self.guid)

    def __repr__(self) -> str:
        return f"Connection({self.guid})"


class PortMapping:
    """INetSharingPortMapping: a handle keyed by (protocol, external port, remote host)."""

    __slots__ = ("_manager", "key")

    def __init__(self, manager: SharingManager, key: MappingKey) -> None:
        self._manager = manager
        self.key = key

    @property
    def properties(self) -> Mapping:
        """INetSharingPortMappingProps as a snapshot."""
        try:
            return self._manager.mapping(self.key)
        except LookupError:
            raise ObjectNoLongerValidError(f"mapping {self.key} no longer exists") from None

    async def enable(self) -> None:
        """Enable: the mapping starts forwarding."""
        await self._manager.set_mapping_enabled(self.key, True)

    async def disable(self) -> None:
        """Disable: kept and listed, forwards nothing."""
        await self._manager.set_mapping_enabled(self.key, False)

    async def delete(self) -> None:
        """Delete: the same as SharingConfiguration.remove_port_mapping(self)."""
        await self._manager.remove_mapping(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortMapping) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"PortMapping({self.key.protocol.name} {self.key.external_port})"


class SharingConfiguration:
    """INetSharingConfiguration for one connection."""

    __slots__ = ("_manager", "connection")

    def __init__(self, manager: SharingManager, connection: Connection) -> None:
        self._manager = manager
        self.connection = connection

    @property
    def sharing_enabled(self) -> bool:
        return self._manager.role_of(self.connection.guid) is not None

    @property
    def sharing_connection_type(self) -> SharingConnectionType | None:
        """PUBLIC or PRIVATE; None when the connection is not shared."""
        return self._manager.role_of(self.connection.guid)

    async def enable_sharing(self, sharing_type: SharingConnectionType) -> None:
        await self._manager.enable_sharing(self.connection.guid, sharing_type)

    async def disable_sharing(self) -> None:
        await self._manager.disable_sharing(self.connection.guid)

    @property
    def internet_firewall_enabled(self) -> bool:
        """The interface-level ICF flag."""
        return self._manager.firewall_flag(self.connection.guid)

    @property
    def effective_firewall_enabled(self) -> bool:
        """The flag combined with the global mode (R9)."""
        return self._manager.effective_firewall(self.connection.guid)

    async def enable_internet_firewall(self) -> None:
        await self._manager.enable_internet_firewall(self.connection.guid)

    async def disable_internet_firewall(self) -> None:
        await self._manager.disable_internet_firewall(self.connection.guid)

    def port_mappings(
        self, flags: SharingConnectionEnumFlags = SharingConnectionEnumFlags.DEFAULT
    ) -> tuple[PortMapping, ...]:
        """EnumPortMappings; ENABLED (an extension) lists only enabled mappings."""
        try:
            flags = SharingConnectionEnumFlags(flags)
        except ValueError:
            raise InvalidRequestError(f"unknown enumeration flags {flags!r} (R13)") from None
        return tuple(
            PortMapping(self._manager, m.key)
            for m in self._manager.mappings_of(self.connection.guid)
            if flags is SharingConnectionEnumFlags.DEFAULT or m.enabled
        )

    def port_mapping(self, ip_protocol: IPProtocol | str, external_port: int) -> PortMapping:
        """The mapping of this connection on (protocol, external port); MappingNotFoundError."""
        protocol = IPProtocol.parse(ip_protocol)
        for mapping in self._manager.mappings_of(self.connection.guid):
            if mapping.protocol is protocol and mapping.external_port == external_port:
                return PortMapping(self._manager, mapping.key)
        raise MappingNotFoundError(f"no {protocol.name} mapping on port {external_port}")

    async def add_port_mapping(
        self,
        name: str,
        ip_protocol: IPProtocol | str | int,
        external_port: int,
        internal_port: int,
        target: str | IPv4Address,
        target_type: TargetType | None = None,
        options: int = 0,
        *,
        enabled: bool = False,
    ) -> PortMapping:
        """AddPortMapping: a new mapping, disabled unless `enabled` (R10); a held key conflicts.

        A NAME target is resolved without blocking the loop; the name is kept with the address.
        """
        if options != 0:
            raise InvalidRequestError("options are reserved and must be 0")
        protocol = IPProtocol.parse(ip_protocol)
        parsed = parse_target(target, target_type)
        if isinstance(parsed, IPv4Address):
            address, name_target = parsed, None
        else:
            address, name_target = await self._manager.resolve_target(parsed), parsed
        request = MappingRequest(
            protocol=protocol,
            external_port=external_port,
            internal_client=address,
            internal_port=internal_port,
            description=name,
            enabled=enabled,
            target_name=name_target,
        )
        mapping = await self._manager.add_connection_mapping(self.connection.guid, request)
        return PortMapping(self._manager, mapping.key)

    async def remove_port_mapping(
        self, mapping: PortMapping | tuple[IPProtocol | str, int]
    ) -> None:
        """RemovePortMapping, by handle or by (protocol, external port)."""
        handle = mapping if isinstance(mapping, PortMapping) else self.port_mapping(*mapping)
        await handle.delete()
