"""The NAT Traversal view (IUPnPNAT, ics-icf-model.md 6.5): what LAN applications see.

Static and dynamic collections over the mappings of the public connection, and the event
manager for "external address changed" and "number of entries changed" (async iterators and
callbacks). Protocol names are strict, as on Windows: "TCP"/"UDP" only (T13, T15).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, TypeVar

from igd.natcore.errors import InvalidAddressError, InvalidRequestError, MappingNotFoundError
from igd.natcore.eventbus import Subscription
from igd.natcore.events import Event, EventsDropped, ExternalAddressChanged, NumberOfEntriesChanged
from igd.natcore.model import ADMIN, IPProtocol, Mapping, MappingKey, MappingRequest
from igd.natcore.policy import validate_port
from igd.natcore.sharing import parse_target

if TYPE_CHECKING:
    from igd.natcore.service import SharingManager

__all__ = [
    "DynamicPortMapping",
    "DynamicPortMappingCollection",
    "NATEventManager",
    "StaticPortMapping",
    "StaticPortMappingCollection",
    "UPnPNAT",
]

log = logging.getLogger(__name__)


def _remote_host(text: str) -> IPv4Address | None:
    if text in ("", "0.0.0.0"):
        return None
    try:
        return IPv4Address(text)
    except ValueError:
        raise InvalidAddressError(
            f"remote host must be empty or an IPv4 address: {text!r}"
        ) from None


class StaticPortMapping:
    """IStaticPortMapping: the fields as read at creation, and the editors."""

    def __init__(self, manager: SharingManager, mapping: Mapping) -> None:
        self._manager = manager
        self._key = mapping.key
        self._load(mapping)

    def _load(self, mapping: Mapping) -> None:
        """Take the fields of a fresh snapshot (after an edit)."""
        external = self._manager.external_address
        self.external_ip_address = "" if external is None else str(external)
        self.external_port = mapping.external_port
        self.internal_port = mapping.internal_port
        self.protocol = mapping.protocol.name
        self.internal_client = mapping.target_name or str(mapping.internal_client)
        self.enabled = mapping.enabled
        self.description = mapping.description

    async def edit_internal_client(self, client: str) -> None:
        target = parse_target(client, None)
        if not isinstance(target, IPv4Address):
            target = await self._manager.resolve_target(target)
        self._load(await self._manager.edit_mapping(self._key, ADMIN, internal_client=target))

    async def enable(self, enabled: bool) -> None:
        self._load(await self._manager.edit_mapping(self._key, ADMIN, enabled=bool(enabled)))

    async def edit_description(self, description: str) -> None:
        self._load(await self._manager.edit_mapping(self._key, ADMIN, description=description))

    async def edit_internal_port(self, port: int) -> None:
        self._load(await self._manager.edit_mapping(self._key, ADMIN, internal_port=port))


class DynamicPortMapping(StaticPortMapping):
    """IDynamicPortMapping: a static mapping plus a remote host and a lease."""

    def _load(self, mapping: Mapping) -> None:
        super()._load(mapping)
        self.remote_host = "" if mapping.remote_host is None else str(mapping.remote_host)
        self.lease_duration = mapping.remaining(self._manager.clock())

    async def renew_lease(self, desired: int) -> int:
        """RenewLease: re-add with the same key; returns the granted duration."""
        mapping = self._manager.mapping(self._key)
        renewed = await self._manager.add_mapping(
            MappingRequest(
                protocol=mapping.protocol,
                external_port=mapping.external_port,
                internal_client=mapping.internal_client,
                internal_port=mapping.internal_port,
                description=mapping.description,
                enabled=mapping.enabled,
                remote_host=mapping.remote_host,
                lease=float(desired) if desired else None,
            ),
            ADMIN,
        )
        self._load(renewed)
        return self.lease_duration


class _Collection:
    def __init__(self, manager: SharingManager) -> None:
        self._manager = manager

    def _public_mappings(self) -> Iterator[Mapping]:
        public = self._manager.public_connection()
        if public is None:
            return iter(())
        return iter(self._manager.mappings_of(public.guid))

    @property
    def count(self) -> int:
        """Count: every mapping on the public connection (static and dynamic)."""
        return sum(1 for _ in self._public_mappings())

    def __len__(self) -> int:
        return self.count

    async def _add(
        self,
        remote_host: IPv4Address | None,
        external_port: int,
        protocol: str,
        internal_port: int,
        internal_client: str,
        enabled: bool,
        description: str,
        lease: float | None,
    ) -> Mapping:
        proto = IPProtocol.parse(protocol)
        validate_port(external_port, "external port")
        validate_port(internal_port, "internal port")
        if internal_client is None or description is None:
            raise InvalidRequestError("internal client and description are required")
        target = parse_target(internal_client, None)
        name = None
        if not isinstance(target, IPv4Address):
            name, target = target, await self._manager.resolve_target(target)
        request = MappingRequest(
            protocol=proto,
            external_port=external_port,
            internal_client=target,
            internal_port=internal_port,
            description=description,
            enabled=bool(enabled),
            remote_host=remote_host,
            lease=lease,
            target_name=name,
        )
        return await self._manager.add_mapping(request, ADMIN)

    def _find(self, key: MappingKey) -> Mapping:
        mapping = self._manager.table.get(key)
        public = self._manager.public_connection()
        if mapping is None or public is None or mapping.connection != public.guid:
            raise MappingNotFoundError(
                f"no {key.protocol.name} mapping on port {key.external_port}"
            )
        return mapping


class StaticPortMappingCollection(_Collection):
    """IStaticPortMappingCollection: key (external port, protocol), wildcard remote host."""

    def item(self, external_port: int, protocol: str) -> StaticPortMapping:
        """Item: a new object on every call (T17); MappingNotFoundError (0x80070002, T16)."""
        key = MappingKey(
            IPProtocol.parse(protocol), validate_port(external_port, "port", allow_zero=True)
        )
        return StaticPortMapping(self._manager, self._find(key))

    def __getitem__(self, key: tuple[int, str]) -> StaticPortMapping:
        return self.item(*key)

    def __iter__(self) -> Iterator[StaticPortMapping]:
        """_NewEnum: a snapshot, one fresh object per mapping."""
        return iter([StaticPortMapping(self._manager, m) for m in self._public_mappings()])

    async def add(
        self,
        external_port: int,
        protocol: str,
        internal_port: int,
        internal_client: str,
        enabled: bool,
        description: str,
    ) -> StaticPortMapping:
        """Add: a permanent mapping; the same key with the same client is replaced (T14, S6)."""
        mapping = await self._add(
            None,
            external_port,
            protocol,
            internal_port,
            internal_client,
            enabled,
            description,
            None,
        )
        return StaticPortMapping(self._manager, mapping)

    async def remove(self, external_port: int, protocol: str) -> None:
        key = MappingKey(IPProtocol.parse(protocol), validate_port(external_port, "port"))
        self._find(key)
        await self._manager.remove_mapping(key)


class DynamicPortMappingCollection(_Collection):
    """IDynamicPortMappingCollection: key (remote host, external port, protocol), with leases."""

    def item(self, remote_host: str, external_port: int, protocol: str) -> DynamicPortMapping:
        key = MappingKey(
            IPProtocol.parse(protocol),
            validate_port(external_port, "port", allow_zero=True),
            _remote_host(remote_host),
        )
        return DynamicPortMapping(self._manager, self._find(key))

    def __iter__(self) -> Iterator[DynamicPortMapping]:
        return iter([DynamicPortMapping(self._manager, m) for m in self._public_mappings()])

    async def add(
        self,
        remote_host: str,
        external_port: int,
        protocol: str,
        internal_port: int,
        internal_client: str,
        enabled: bool,
        description: str,
        lease_duration: int,
    ) -> DynamicPortMapping:
        """Add with a lease in seconds; 0 is permanent."""
        if not isinstance(lease_duration, int) or lease_duration < 0:
            raise InvalidRequestError(f"lease must be seconds >= 0, not {lease_duration!r}")
        mapping = await self._add(
            _remote_host(remote_host),
            external_port,
            protocol,
            internal_port,
            internal_client,
            enabled,
            description,
            float(lease_duration) if lease_duration else None,
        )
        return DynamicPortMapping(self._manager, mapping)

    async def remove(self, remote_host: str, external_port: int, protocol: str) -> None:
        key = MappingKey(
            IPProtocol.parse(protocol),
            validate_port(external_port, "port"),
            _remote_host(remote_host),
        )
        self._find(key)
        await self._manager.remove_mapping(key)


Callback = Callable[[object], object]
_V = TypeVar("_V")


async def _values(subscription: Subscription, value: Callable[[Event], _V]) -> AsyncIterator[_V]:
    """Values drawn from a subscription that already exists (so nothing is missed)."""
    async for event in subscription:
        if not isinstance(event, EventsDropped):
            yield value(event)


class NATEventManager:
    """INATEventManager: async iterators, and callbacks set as properties (None unregisters)."""

    def __init__(self, manager: SharingManager) -> None:
        self._manager = manager
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._callbacks: dict[str, Callback | None] = {"address": None, "count": None}

    def external_ip_address_changes(self) -> AsyncIterator[str]:
        """NewExternalIPAddress: the new address ("" when there is none), from now on."""
        return _values(
            self._manager.events(kinds={ExternalAddressChanged}),
            lambda e: (
                "" if not isinstance(e, ExternalAddressChanged) or e.new is None else str(e.new)
            ),
        )

    def number_of_entries_changes(self) -> AsyncIterator[int]:
        """NewNumberOfEntries: the new total number of mappings, from now on."""
        return _values(
            self._manager.events(kinds={NumberOfEntriesChanged}),
            lambda e: e.count if isinstance(e, NumberOfEntriesChanged) else 0,
        )

    @property
    def external_ip_address_callback(self) -> Callback | None:
        return self._callbacks["address"]

    @external_ip_address_callback.setter
    def external_ip_address_callback(self, callback: Callback | None) -> None:
        self._register("address", callback, self.external_ip_address_changes)

    @property
    def number_of_entries_callback(self) -> Callback | None:
        return self._callbacks["count"]

    @number_of_entries_callback.setter
    def number_of_entries_callback(self, callback: Callback | None) -> None:
        self._register("count", callback, self.number_of_entries_changes)

    def _register(
        self,
        slot: str,
        callback: Callback | None,
        stream: Callable[[], AsyncIterator[object]],
    ) -> None:
        old = self._tasks.pop(slot, None)
        if old is not None:
            old.cancel()
        self._callbacks[slot] = callback
        if callback is not None:
            self._tasks[slot] = asyncio.get_running_loop().create_task(
                self._deliver(stream(), callback), name=f"igd-nat-callback-{slot}"
            )

    @staticmethod
    async def _deliver(stream: AsyncIterator[object], callback: Callback) -> None:
        async for value in stream:
            try:
                result = callback(value)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("NAT event callback failed")

    async def aclose(self) -> None:
        """Unregister every callback."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class UPnPNAT:
    """IUPnPNAT over the local core."""

    def __init__(self, manager: SharingManager) -> None:
        self._manager = manager
        self.nat_event_manager = NATEventManager(manager)
        self.dynamic_port_mapping_collection = DynamicPortMappingCollection(manager)
        self._static = StaticPortMappingCollection(manager)

    @property
    def static_port_mapping_collection(self) -> StaticPortMappingCollection | None:
        """None when no connection is shared publicly (COM: S_OK with a NULL collection)."""
        return self._static if self._manager.public_connection() is not None else None
