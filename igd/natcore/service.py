"""The core's async facade: `SharingManager` (INetSharingManager) and the protocol mapping API.

Every change runs the same path (S9): validate against the live model -> persist (staged in the
store's transaction) -> apply to the backend -> commit -> publish events. A backend or store
failure rolls the model and the store back, so store and backend never disagree.

Changes are serialised through one worker that takes every change waiting at that moment as one
batch: one store transaction and one backend plan for the batch (group commit). A change that
fails validation is undone alone; if the batch's commit fails, each change is retried on its own
so one bad change never fails the others. A caller cancelled before its change is picked up
withdraws it; once picked up, the change completes.

Reads are synchronous snapshots of the committed model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, TypeVar

from igd.natcore.backends.base import AppliedConnection, Backend, Plan
from igd.natcore.backends.resolver import resolve_ipv4
from igd.natcore.connections import ConnectionSource
from igd.natcore.errors import (
    BackendError,
    ConflictError,
    ConflictWithOtherMechanismError,
    ConnectionNotFoundError,
    FirewallNotAllowedError,
    InvalidPortError,
    InvalidRequestError,
    MappingNotFoundError,
    NatError,
    NotAuthorizedError,
    NotShareableError,
    ObjectNoLongerValidError,
    QuotaExceededError,
)
from igd.natcore.eventbus import EventBus, Subscription
from igd.natcore.events import (
    ConnectionAdded,
    ConnectionChanged,
    ConnectionRemoved,
    Event,
    ExternalAddressChanged,
    FirewallChanged,
    MappingAdded,
    MappingChanged,
    MappingRemoved,
    NumberOfEntriesChanged,
    RemovalReason,
    SharingCause,
    SharingChanged,
)
from igd.natcore.model import (
    ADMIN,
    ROLE_FLAGS,
    Client,
    ConnectionCharacteristics,
    ConnectionProps,
    FirewallSettings,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingRequest,
    Origin,
    PrivatePolicy,
    SharingConnectionEnumFlags,
    SharingConnectionType,
)
from igd.natcore.nat import UPnPNAT
from igd.natcore.policy import (
    NetworkView,
    Policy,
    PolicyConfig,
    validate_description,
    validate_port,
)
from igd.natcore.sharing import Connection, SharingConfiguration
from igd.natcore.store import ConnectionRecord, StateStore, StoreChanges
from igd.natcore.table import MappingTable

__all__ = ["SharingManager"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Largest number of waiting changes committed as one batch.
MAX_BATCH_CHANGES = 256
# Lease sweep granularity (XP-07): the timer never sleeps longer than this.
MAX_TIMER_SLEEP_S = 1.0

Resolver = Callable[[str], Awaitable[IPv4Address]]
# The ports the gateway's own services listen on, per protocol (ST-22); injected by the daemon.
LocalPorts = Callable[[IPProtocol], Collection[int]]
_Slot = tuple[IPProtocol, int]


class _Txn:
    """The changes of one batch: an undo log over the live model and the events to publish."""

    def __init__(self, core: SharingManager) -> None:
        self.core = core
        self.undo: list[Callable[[], object]] = []
        self.original_mappings: dict[_Slot, Mapping | None] = {}
        self.original_records: dict[uuid.UUID, ConnectionRecord | None] = {}
        self.original_firewall: FirewallSettings | None = None
        self.connections_changed = False
        self.events: list[Event] = []
        self.table_ops = 0
        self.mapping_changes = 0  # changes that bump SystemUpdateID (WIP-62)

    # -- mappings ----------------------------------------------------------------------------

    def _touch(self, protocol: IPProtocol, port: int) -> None:
        slot = (protocol, port)
        if slot not in self.original_mappings:
            self.original_mappings[slot] = self.core.table.at_port(protocol, port)

    def put(self, mapping: Mapping) -> Mapping | None:
        table = self.core.table
        self._touch(mapping.protocol, mapping.external_port)
        old = table.put(mapping)
        self.table_ops += 1
        if old is None:
            self.undo.append(lambda: table.remove(mapping.key))
        else:
            self.undo.append(lambda: table.put(old))
        return old

    def remove(self, key: MappingKey) -> Mapping:
        table = self.core.table
        self._touch(key.protocol, key.external_port)
        old = table.remove(key)
        self.table_ops += 1
        self.undo.append(lambda: table.put(old))
        return old

    def expire(self, now: float) -> list[Mapping]:
        table = self.core.table
        expired = table.expire(now)
        for mapping in expired:
            self.original_mappings.setdefault((mapping.protocol, mapping.external_port), mapping)
            self.undo.append(functools.partial(table.put, mapping))
        self.table_ops += len(expired)
        return expired

    # -- connections -------------------------------------------------------------------------

    def set_record(self, record: ConnectionRecord) -> None:
        records = self.core.records
        old = records.get(record.guid)
        if old == record:
            return
        self.original_records.setdefault(record.guid, old)
        records[record.guid] = record
        self.connections_changed = True

        def restore() -> None:
            if old is None:
                del records[record.guid]
            else:
                records[record.guid] = old

        self.undo.append(restore)

    def set_firewall(self, settings: FirewallSettings) -> None:
        core = self.core
        old = core.firewall_settings
        if self.original_firewall is None:
            self.original_firewall = old
        core._firewall = settings
        self.connections_changed = True
        self.undo.append(lambda: setattr(core, "_firewall", old))

    def set_connections(self, connections: dict[uuid.UUID, ConnectionProps]) -> None:
        core = self.core
        old = core._connections
        core._connections = connections
        self.connections_changed = True
        self.undo.append(lambda: setattr(core, "_connections", old))

    # -- savepoints --------------------------------------------------------------------------

    def savepoint(self) -> tuple[int, int]:
        return len(self.undo), len(self.events)

    def rollback_to(self, mark: tuple[int, int]) -> None:
        undo_len, events_len = mark
        while len(self.undo) > undo_len:
            self.undo.pop()()
        del self.events[events_len:]

    # -- what the batch amounts to -----------------------------------------------------------

    def store_changes(self, system_update_id: int) -> StoreChanges:
        table = self.core.table
        puts: list[Mapping] = []
        deletes: list[MappingKey] = []
        for (protocol, port), before in self.original_mappings.items():
            after = table.at_port(protocol, port)
            if after == before:
                continue
            if after is None:
                assert before is not None
                deletes.append(before.key)
            else:
                puts.append(after)
        records = self.core.records
        changed_records = tuple(
            record
            for guid, before in self.original_records.items()
            if (record := records.get(guid)) is not None and record != before
        )
        firewall: FirewallSettings | None = self.core.firewall_settings
        if self.original_firewall is None or firewall == self.original_firewall:
            firewall = None
        return StoreChanges(
            put_mappings=tuple(puts),
            delete_mappings=tuple(deletes),
            connections=changed_records,
            firewall=firewall,
            counters={"system_update_id": system_update_id} if self.mapping_changes else None,
        )

    def plan(self) -> Plan:
        core = self.core
        applied = core.applied
        if self.connections_changed:
            desired = {(m.protocol, m.external_port): m for m in core.table if core.is_active(m)}
            slots: Iterable[_Slot] = set(applied) | set(desired)
        else:
            slots = self.original_mappings
            desired = {}
            for slot in slots:
                mapping = core.table.at_port(*slot)
                if mapping is not None and core.is_active(mapping):
                    desired[slot] = mapping
        remove: list[Mapping] = []
        add: list[Mapping] = []
        for slot in slots:
            before, after = applied.get(slot), desired.get(slot)
            if before == after:
                continue
            if before is not None:
                remove.append(before)
            if after is not None:
                add.append(after)
        connections = core.applied_connections() if self.connections_changed else None
        if connections is not None and connections == core.applied_conns:
            connections = None
        return Plan(remove=tuple(remove), add=tuple(add), connections=connections)


_Op = Callable[[_Txn], Any]


class SharingManager:
    """INetSharingManager for a Linux gateway: connections, sharing roles, firewall, mappings.

    Build it with `await SharingManager.open(...)` (or `async with await ...open(...)`).
    """

    def __init__(
        self,
        *,
        backend: Backend,
        store: StateStore,
        source: ConnectionSource,
        policy: PolicyConfig | None = None,
        private_policy: PrivatePolicy = PrivatePolicy.MULTIPLE,
        external_address: IPv4Address | None = None,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = resolve_ipv4,
        local_ports: LocalPorts | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.source = source
        self.policy = Policy(policy or PolicyConfig())
        self.private_policy = private_policy
        self.clock = clock
        self.resolver = resolver
        self.local_ports = local_ports
        self._external_override = external_address
        self.table = MappingTable()
        self.records: dict[uuid.UUID, ConnectionRecord] = {}
        self._connections: dict[uuid.UUID, ConnectionProps] = {}
        self._firewall = FirewallSettings()
        self.applied: dict[_Slot, Mapping] = {}
        self.applied_conns: tuple[AppliedConnection, ...] = ()
        self._system_update_id = 0
        self._bus = EventBus()
        self._pending: list[tuple[_Op, asyncio.Future[Any]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._timer_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- life cycle --------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        *,
        backend: Backend,
        store: StateStore,
        source: ConnectionSource,
        policy: PolicyConfig | None = None,
        private_policy: PrivatePolicy = PrivatePolicy.MULTIPLE,
        external_address: IPv4Address | None = None,
        clock: Callable[[], float] = time.time,
        resolver: Resolver = resolve_ipv4,
        local_ports: LocalPorts | None = None,
    ) -> SharingManager:
        """Restore persisted state (dropping leases that ran out), reconcile the backend, start."""
        core = cls(
            backend=backend,
            store=store,
            source=source,
            policy=policy,
            private_policy=private_policy,
            external_address=external_address,
            clock=clock,
            resolver=resolver,
            local_ports=local_ports,
        )
        await core._start()
        return core

    async def _start(self) -> None:
        expired = self.store.prune_expired(self.clock())
        if expired:
            log.info("dropped %d mappings whose lease ended while stopped", len(expired))
        state = self.store.load()
        self.records = {record.guid: record for record in state.connections}
        self._firewall = state.firewall
        self._system_update_id = int(state.counters.get("system_update_id", 0))
        for mapping in state.mappings:
            self.table.put(mapping)
        self._connections = {c.guid: c for c in await self.source.snapshot()}
        desired = tuple(m for m in self.table if self.is_active(m))
        connections = self.applied_connections()
        await self.backend.start(desired, connections)
        self.applied = {(m.protocol, m.external_port): m for m in desired}
        self.applied_conns = connections
        self._tasks = [
            asyncio.create_task(self._lease_timer(), name="igd-lease-timer"),
            asyncio.create_task(self._watch_connections(), name="igd-connection-watch"),
        ]

    async def aclose(self) -> None:
        """Finish waiting changes, stop timers, end event streams and stop the backend."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if "nat" in self.__dict__:
            await self.nat.nat_event_manager.aclose()
        self._bus.close()
        await self.source.aclose()
        await self.backend.stop()
        self.store.close()

    async def __aenter__(self) -> SharingManager:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the change path ---------------------------------------------------------------------

    async def _submit(self, op: Callable[[_Txn], T]) -> T:
        if self._closed:
            raise ObjectNoLongerValidError("the sharing manager is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="igd-change-worker")
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = [item for item in self._pending[:MAX_BATCH_CHANGES] if not item[1].done()]
            del self._pending[:MAX_BATCH_CHANGES]
            if batch:
                await self._run_batch(batch)

    async def _run_batch(self, batch: list[tuple[_Op, asyncio.Future[Any]]]) -> None:
        txn = _Txn(self)
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        for op, future in batch:
            mark = txn.savepoint()
            count, table_ops, update_ids = len(self.table), txn.table_ops, txn.mapping_changes
            external = self.external_address
            try:
                result = op(txn)
            except Exception as exc:  # NatError for the caller; anything else is our bug
                txn.rollback_to(mark)
                txn.table_ops, txn.mapping_changes = table_ops, update_ids
                outcomes.append((future, None, exc))
                continue
            if txn.table_ops != table_ops:
                txn.mapping_changes += 1
            if len(self.table) != count:
                txn.events.append(NumberOfEntriesChanged(len(self.table)))
            if self.external_address != external:
                public = self.public_connection()
                txn.events.append(
                    ExternalAddressChanged(
                        public.guid if public else None, external, self.external_address
                    )
                )
            outcomes.append((future, result, None))
        try:
            await self._commit(txn)
        except NatError as exc:
            txn.rollback_to((0, 0))
            succeeded = [item for item, out in zip(batch, outcomes, strict=True) if out[2] is None]
            if len(succeeded) > 1:
                for item in succeeded:  # alone, so one bad change does not fail the others
                    await self._run_batch([item])
            outcomes = [(fut, None, err if err is not None else exc) for fut, _, err in outcomes]
        except asyncio.CancelledError:
            txn.rollback_to((0, 0))
            for future, _, _ in outcomes:
                if not future.done():
                    future.set_exception(BackendError("the change was interrupted"))
            raise
        except Exception as exc:  # a bug below the core: fail this batch, keep serving
            log.exception("a batch of changes failed to commit")
            txn.rollback_to((0, 0))
            outcomes = [(fut, None, err if err is not None else exc) for fut, _, err in outcomes]
        else:
            if txn.events:
                self._bus.publish(txn.events)
            self._timer_wakeup.set()
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    async def _commit(self, txn: _Txn) -> None:
        update_id = self._system_update_id + txn.mapping_changes
        changes = txn.store_changes(update_id)
        plan = txn.plan()
        if not changes and not plan:
            return
        if changes:
            self.store.stage(changes)
        try:
            if plan:
                try:
                    await self.backend.apply(plan)
                except NatError:
                    raise
                except Exception as exc:
                    log.exception("backend %s failed to apply a plan", self.backend.name)
                    raise BackendError(f"backend {self.backend.name} failed: {exc}") from exc
        except BaseException:
            if changes:
                self.store.rollback()
            raise
        if changes:
            try:
                self.store.commit()
            except BaseException:
                self.store.rollback()
                if plan:
                    await self._revert(plan)
                raise
        for mapping in plan.remove:
            self.applied.pop((mapping.protocol, mapping.external_port), None)
        for mapping in plan.add:
            self.applied[(mapping.protocol, mapping.external_port)] = mapping
        if plan.connections is not None:
            self.applied_conns = plan.connections
        self._system_update_id = update_id

    async def _revert(self, plan: Plan) -> None:
        """Undo an applied plan whose commit failed; resynchronise the backend if that fails too."""
        undo = Plan(
            remove=plan.add,
            add=plan.remove,
            connections=self.applied_conns if plan.connections is not None else None,
        )
        try:
            await self.backend.apply(undo)
        except Exception:
            log.exception("could not undo a plan on %s; resynchronising it", self.backend.name)
            await self.backend.start(tuple(self.applied.values()), self.applied_conns)

    # -- model queries -----------------------------------------------------------------------

    def is_active(self, mapping: Mapping) -> bool:
        """Whether the backend carries the mapping (S7, R9).

        Enabled, on a present connection that is public (DNAT) or firewalled (an open port), and
        the firewall is not in shielded mode, where only replies are admitted.
        """
        if not mapping.enabled or mapping.connection not in self._connections:
            return False
        record = self.records.get(mapping.connection)
        firewall = self._firewall
        if record is None or (firewall.enabled and firewall.exceptions_not_allowed):
            return False
        return record.role is SharingConnectionType.PUBLIC or firewall.effective(record.firewall)

    def applied_connections(self) -> tuple[AppliedConnection, ...]:
        """Sharing and firewall state of every present connection, as a backend sees it."""
        result = []
        for guid, props in sorted(self._connections.items(), key=lambda kv: kv[1].ifname):
            record = self.records.get(guid)
            result.append(
                AppliedConnection(
                    guid=guid,
                    ifname=props.ifname,
                    role=record.role if record else None,
                    firewall=self._firewall.effective(record.firewall if record else False),
                    addresses=props.addresses,
                )
            )
        return tuple(result)

    def network_view(self) -> NetworkView:
        private: list[IPv4Interface] = []
        public: list[IPv4Interface] = []
        gateway: set[IPv4Address] = set()
        for guid, props in self._connections.items():
            gateway.update(iface.ip for iface in props.addresses)
            role = self.role_of(guid)
            if role is SharingConnectionType.PRIVATE:
                private.extend(props.addresses)
            elif role is SharingConnectionType.PUBLIC:
                public.extend(props.addresses)
        return NetworkView(tuple(private), tuple(public), frozenset(gateway))

    def role_of(self, guid: uuid.UUID) -> SharingConnectionType | None:
        record = self.records.get(guid)
        return record.role if record else None

    def firewall_flag(self, guid: uuid.UUID) -> bool:
        record = self.records.get(guid)
        return record.firewall if record else False

    def set_policy(self, config: PolicyConfig) -> None:
        """Replace the policy; it applies to the changes made from now on (existing stay)."""
        self.policy = Policy(config)

    @property
    def firewall_settings(self) -> FirewallSettings:
        return self._firewall

    @property
    def system_update_id(self) -> int:
        """Bumped once per committed change that touched mappings (WIP-62), persisted (WIP-64)."""
        return self._system_update_id

    # -- connections -------------------------------------------------------------------------

    def connections(self) -> tuple[ConnectionProps, ...]:
        """Every present connection, with the role and firewall flags computed live."""
        return tuple(
            self.connection_props(guid)
            for guid in sorted(self._connections, key=lambda g: self._connections[g].ifname)
        )

    def connection_props(self, connection: Connection | uuid.UUID) -> ConnectionProps:
        """NetConnectionProps: a snapshot; ObjectNoLongerValidError when the link is gone."""
        guid = connection.guid if isinstance(connection, Connection) else connection
        props = self._connections.get(guid)
        if props is None:
            raise ObjectNoLongerValidError(f"connection {guid} is no longer present")
        flags = props.characteristics & ~ROLE_FLAGS
        role = self.role_of(guid)
        if role is SharingConnectionType.PUBLIC:
            flags |= ConnectionCharacteristics.SHARED
        elif role is SharingConnectionType.PRIVATE:
            flags |= ConnectionCharacteristics.SHARED_PRIVATE
        if self.firewall_flag(guid):
            flags |= ConnectionCharacteristics.FIREWALLED
        return ConnectionProps(
            guid=props.guid,
            name=props.name,
            device_name=props.device_name,
            status=props.status,
            media_type=props.media_type,
            characteristics=ConnectionCharacteristics(flags),
            ifname=props.ifname,
            ifindex=props.ifindex,
            addresses=props.addresses,
            is_loopback=props.is_loopback,
        )

    def find_connection(
        self, *, name: str | None = None, guid: uuid.UUID | None = None, ifname: str | None = None
    ) -> Connection:
        """A present connection by guid, interface name, or name (case-insensitive, sample 4.2)."""
        for props in self._connections.values():
            if (
                (guid is not None and props.guid == guid)
                or (ifname is not None and props.ifname == ifname)
                or (name is not None and props.name.casefold() == name.casefold())
            ):
                return Connection(self, props.guid)
        wanted = name or ifname or guid
        raise ConnectionNotFoundError(f"no connection {wanted!s}")

    @property
    def sharing_installed(self) -> bool:
        """SharingInstalled: this platform can share connections."""
        return True

    def every_connection(self) -> tuple[Connection, ...]:
        """EnumEveryConnection: a snapshot of the present connections, by interface name."""
        return tuple(Connection(self, props.guid) for props in self.connections())

    def public_connections(
        self, flags: SharingConnectionEnumFlags = SharingConnectionEnumFlags.DEFAULT
    ) -> tuple[Connection, ...]:
        """EnumPublicConnections: at most one (R1)."""
        return self._with_role(SharingConnectionType.PUBLIC, flags)

    def private_connections(
        self, flags: SharingConnectionEnumFlags = SharingConnectionEnumFlags.DEFAULT
    ) -> tuple[Connection, ...]:
        """EnumPrivateConnections."""
        return self._with_role(SharingConnectionType.PRIVATE, flags)

    def _with_role(
        self, role: SharingConnectionType, flags: SharingConnectionEnumFlags
    ) -> tuple[Connection, ...]:
        if flags != SharingConnectionEnumFlags.DEFAULT:
            raise InvalidRequestError("connection enumerations take ICSSC_DEFAULT only (R13)")
        return tuple(c for c in self.every_connection() if self.role_of(c.guid) is role)

    def configuration_for(self, connection: Connection | uuid.UUID) -> SharingConfiguration:
        """INetSharingConfigurationForINetConnection."""
        guid = connection.guid if isinstance(connection, Connection) else connection
        self._present(guid)
        return SharingConfiguration(self, Connection(self, guid))

    @functools.cached_property
    def nat(self) -> UPnPNAT:
        """The NAT Traversal view (IUPnPNAT) over this core."""
        return UPnPNAT(self)

    async def share(self, public: Connection, private: Connection | None = None) -> None:
        """Disable every role, then share `public` with `private`, as one change (sample 4.4)."""

        def op(txn: _Txn) -> None:
            self._present(public.guid)
            if private is not None:
                self._present(private.guid)
            for guid, record in list(self.records.items()):
                if record.role is not None and guid not in (
                    public.guid,
                    getattr(private, "guid", None),
                ):
                    self._set_role(txn, guid, None, SharingCause.DISPLACED)
            self._op_enable_sharing(txn, public.guid, SharingConnectionType.PUBLIC)
            if private is not None:
                self._op_enable_sharing(txn, private.guid, SharingConnectionType.PRIVATE)

        await self._submit(op)

    def public_connection(self) -> ConnectionProps | None:
        for guid in self._connections:
            if self.role_of(guid) is SharingConnectionType.PUBLIC:
                return self.connection_props(guid)
        return None

    @property
    def external_address(self) -> IPv4Address | None:
        """The configured address, else the public connection's first IPv4 address."""
        if self._external_override is not None:
            return self._external_override
        public = self.public_connection()
        if public is None or not public.addresses:
            return None
        return public.addresses[0].ip

    async def _watch_connections(self) -> None:
        """Follow the source; a failing change is logged and the next snapshot tried."""
        try:
            async for snapshot in self.source.changes():
                connections = {c.guid: c for c in snapshot}
                try:
                    await self._submit(
                        functools.partial(self._op_connections, connections=connections)
                    )
                except NatError as exc:
                    log.error("could not apply a connection change: %s", exc)
        except NatError as exc:
            log.error("the connection source stopped: %s", exc)

    def _op_connections(self, txn: _Txn, *, connections: dict[uuid.UUID, ConnectionProps]) -> None:
        before = {guid: self.connection_props(guid) for guid in self._connections}
        raw_before = self._connections
        txn.set_connections(connections)
        for guid, props in connections.items():
            if guid not in before:
                txn.events.append(ConnectionAdded(self.connection_props(guid)))
            elif raw_before[guid] != props:
                txn.events.append(ConnectionChanged(before[guid], self.connection_props(guid)))
        for guid, old in before.items():
            if guid not in connections:
                txn.events.append(ConnectionRemoved(old))

    # -- sharing (INetSharingConfiguration) --------------------------------------------------

    def _present(self, guid: uuid.UUID) -> ConnectionProps:
        props = self._connections.get(guid)
        if props is None:
            raise ObjectNoLongerValidError(f"connection {guid} is no longer present")
        return props

    def _record(self, guid: uuid.UUID) -> ConnectionRecord:
        record = self.records.get(guid)
        if record is not None:
            return record
        props = self._connections[guid]
        return ConnectionRecord(guid=guid, name=props.name, role=None, firewall=False)

    def _set_role(
        self, txn: _Txn, guid: uuid.UUID, role: SharingConnectionType | None, cause: SharingCause
    ) -> None:
        record = self._record(guid)
        if record.role is role:
            return
        was_public = record.role is SharingConnectionType.PUBLIC
        txn.set_record(
            ConnectionRecord(guid=guid, name=record.name, role=role, firewall=record.firewall)
        )
        txn.events.append(SharingChanged(guid, role, cause))
        if was_public:
            self._release_mappings(txn, guid)

    def _release_mappings(self, txn: _Txn, guid: uuid.UUID) -> None:
        """R11/S5: protocol mappings of the connection go, the administrator's are disabled."""
        for mapping in [m for m in self.table if m.connection == guid]:
            if mapping.origin is not Origin.ADMIN:
                txn.remove(mapping.key)
                txn.events.append(MappingRemoved(mapping, RemovalReason.UNSHARED))
            elif mapping.enabled:
                disabled = _replace(mapping, enabled=False)
                txn.put(disabled)
                txn.events.append(MappingChanged(mapping, disabled, "unshared"))

    def _set_firewall_flag(self, txn: _Txn, guid: uuid.UUID, enabled: bool) -> None:
        record = self._record(guid)
        if record.firewall is enabled:
            return
        txn.set_record(
            ConnectionRecord(guid=guid, name=record.name, role=record.role, firewall=enabled)
        )
        txn.events.append(FirewallChanged(guid, enabled, self._firewall.effective(enabled)))

    async def enable_sharing(self, guid: uuid.UUID, role: SharingConnectionType) -> None:
        """EnableSharing: R1/R2 (one public, the old one displaced), R3 (private policy), R4."""
        role = SharingConnectionType(role)
        await self._submit(lambda txn: self._op_enable_sharing(txn, guid, role))

    def _op_enable_sharing(self, txn: _Txn, guid: uuid.UUID, role: SharingConnectionType) -> None:
        props = self._present(guid)
        if role is SharingConnectionType.PUBLIC and not props.shareable:
            raise NotShareableError(f"connection {props.name} cannot be shared publicly (R6)")
        if self.role_of(guid) is role:
            return
        if role is SharingConnectionType.PUBLIC or self.private_policy is PrivatePolicy.REPLACE:
            for other, record in list(self.records.items()):
                if other != guid and record.role is role:
                    self._set_role(txn, other, None, SharingCause.DISPLACED)
        self._set_role(txn, guid, role, SharingCause.EXPLICIT)
        if role is SharingConnectionType.PUBLIC:
            self._set_firewall_flag(txn, guid, True)

    async def disable_sharing(self, guid: uuid.UUID) -> None:
        """DisableSharing: idempotent (R12); disables the connection's mappings either way (R11)."""

        def op(txn: _Txn) -> None:
            self._present(guid)
            was_public = self.role_of(guid) is SharingConnectionType.PUBLIC
            self._set_role(txn, guid, None, SharingCause.EXPLICIT)
            if not was_public:  # _set_role released them when it was public
                self._release_mappings(txn, guid)

        await self._submit(op)

    async def enable_internet_firewall(self, guid: uuid.UUID) -> None:
        """EnableInternetFirewall; refused on the private connection and on bridges (R7)."""

        def op(txn: _Txn) -> None:
            props = self._present(guid)
            if self.role_of(guid) is SharingConnectionType.PRIVATE:
                raise FirewallNotAllowedError(f"{props.name} is the private connection (R7)")
            if props.bridged:
                raise FirewallNotAllowedError(f"{props.name} is a bridge or bridge member (R7)")
            self._set_firewall_flag(txn, guid, True)

        await self._submit(op)

    async def disable_internet_firewall(self, guid: uuid.UUID) -> None:
        """DisableInternetFirewall; succeeds when the firewall was off (R12)."""

        def op(txn: _Txn) -> None:
            self._present(guid)
            self._set_firewall_flag(txn, guid, False)

        await self._submit(op)

    async def set_firewall_settings(self, settings: FirewallSettings) -> None:
        """The global firewall mode combined with each connection's flag (R9)."""

        def op(txn: _Txn) -> None:
            if settings == self._firewall:
                return
            txn.set_firewall(settings)
            txn.events.append(
                FirewallChanged(None, settings.enabled, settings.effective(settings.enabled))
            )

        await self._submit(op)

    def effective_firewall(self, guid: uuid.UUID) -> bool:
        return self._firewall.effective(self.firewall_flag(guid))

    # -- mappings: reads ---------------------------------------------------------------------

    @property
    def mapping_count(self) -> int:
        return len(self.table)

    def mappings(self) -> Iterator[Mapping]:
        """Every mapping in key order (protocol, then external port)."""
        return iter(self.table)

    def mapping(self, key: MappingKey) -> Mapping:
        """The mapping with exactly this key (WIP-10); MappingNotFoundError otherwise."""
        mapping = self.table.get(key)
        if mapping is None:
            raise MappingNotFoundError(f"no mapping {key}")
        return mapping

    def mapping_at(self, index: int) -> Mapping:
        """The index-th mapping in key order (GetGenericPortMappingEntry); IndexOutOfRangeError."""
        return self.table.at_index(index)

    def mappings_in_range(
        self, start: int, end: int, protocol: IPProtocol | None = None
    ) -> Iterator[Mapping]:
        return self.table.in_range(start, end, protocol)

    def mappings_of(self, guid: uuid.UUID) -> tuple[Mapping, ...]:
        return tuple(m for m in self.table if m.connection == guid)

    def owned_by(self, owner: IPv4Address) -> tuple[Mapping, ...]:
        return tuple(self.table.owned_by(owner))

    def mappings_related_to(self, address: IPv4Address) -> tuple[Mapping, ...]:
        """Mappings owned by or pointing at `address`, in key order: what that client may see."""
        return tuple(self.table.related_to(address))

    @staticmethod
    def may_manage(mapping: Mapping, client: Client) -> bool:
        """Whether `client` may see-as-its-own, change or remove `mapping` (WIP-71, ST-23)."""
        return MappingTable.may_manage(mapping, client)

    # -- mappings: changes -------------------------------------------------------------------

    async def add_mapping(
        self, request: MappingRequest, client: Client, *, replace: bool = True
    ) -> Mapping:
        """AddPortMapping on the public connection: policy, conflicts (WIP-11), quota, lease."""
        self.policy.check_request(request)
        return await self._submit(lambda txn: self._op_add(txn, request, client, None, replace))

    async def add_any_mapping(self, request: MappingRequest, client: Client) -> Mapping:
        """AddAnyPortMapping: the asked port when free, else the nearest free one >= 1024."""
        self.policy.check_request(request, allow_zero_external=True)
        return await self._submit(lambda txn: self._op_add_any(txn, request, client))

    async def add_connection_mapping(
        self, guid: uuid.UUID, request: MappingRequest, *, replace: bool = False
    ) -> Mapping:
        """An administrator's mapping on a given connection (ICS AddPortMapping)."""
        self.policy.check_request(request)
        return await self._submit(lambda txn: self._op_add(txn, request, ADMIN, guid, replace))

    async def remove_mapping(self, key: MappingKey, client: Client = ADMIN) -> Mapping:
        """DeletePortMapping: the exact key; only mappings the client may manage (ST-23)."""

        def op(txn: _Txn) -> Mapping:
            mapping = self.mapping(key)
            if not self.may_manage(mapping, client):
                raise NotAuthorizedError(f"{client.address} may not remove the mapping {key}")
            self._remove(txn, mapping, RemovalReason.DELETED)
            return mapping

        return await self._submit(op)

    async def remove_mappings_in_range(
        self,
        start: int,
        end: int,
        protocol: IPProtocol | None,
        client: Client,
    ) -> tuple[Mapping, ...]:
        """DeletePortMappingRange: atomically removes the client's mappings in [start, end].

        MappingNotFoundError when there is none it may remove (WIP-31: 730).
        """
        if start > end:
            raise InvalidPortError(f"start port {start} is above end port {end}")

        def op(txn: _Txn) -> tuple[Mapping, ...]:
            victims = tuple(
                m for m in self.table.in_range(start, end, protocol) if self.may_manage(m, client)
            )
            if not victims:
                raise MappingNotFoundError(f"no mapping of yours in ports {start}-{end}")
            for mapping in victims:
                self._remove(txn, mapping, RemovalReason.DELETED)
            return victims

        return await self._submit(op)

    async def remove_owned(
        self, client: Client, protocol: IPProtocol | None = None, origin: Origin | None = None
    ) -> tuple[Mapping, ...]:
        """Every mapping the client owns (optionally one protocol / one mechanism); may be none."""
        if client.address is None:
            raise NotAuthorizedError("remove_owned needs a client address")
        owner = client.address

        def op(txn: _Txn) -> tuple[Mapping, ...]:
            victims = tuple(
                m
                for m in self.table.owned_by(owner)
                if (protocol is None or m.protocol is protocol)
                and (origin is None or m.origin is origin)
            )
            for mapping in victims:
                self._remove(txn, mapping, RemovalReason.DELETED)
            return victims

        return await self._submit(op)

    async def set_mapping_enabled(
        self, key: MappingKey, enabled: bool, client: Client = ADMIN
    ) -> Mapping:
        """INetSharingPortMapping.Enable / Disable."""
        return await self.edit_mapping(key, client, enabled=enabled)

    async def edit_mapping(
        self,
        key: MappingKey,
        client: Client = ADMIN,
        *,
        enabled: bool | None = None,
        internal_client: IPv4Address | None = None,
        internal_port: int | None = None,
        description: str | None = None,
    ) -> Mapping:
        """IStaticPortMapping.Edit* and Enable: change fields of an existing mapping in place."""
        if internal_port is not None:
            validate_port(internal_port, "internal port")
        if description is not None:
            validate_description(description)

        def op(txn: _Txn) -> Mapping:
            old = self.mapping(key)
            if not self.may_manage(old, client):
                raise NotAuthorizedError(f"{client.address} may not change the mapping {key}")
            new = _replace(
                old,
                enabled=old.enabled if enabled is None else enabled,
                internal_client=old.internal_client if internal_client is None else internal_client,
                internal_port=old.internal_port if internal_port is None else internal_port,
                description=old.description if description is None else description,
                target_name=old.target_name if internal_client is None else None,
            )
            if new == old:
                return old
            if new.internal_client != old.internal_client:
                self.policy.check_target(new.internal_client, client, self.network_view())
            if (new.internal_client, new.internal_port) != (old.internal_client, old.internal_port):
                self.policy.check_rules(
                    client, new.external_port, new.internal_client, new.internal_port
                )
            txn.put(new)
            reason = "edited"
            if new.enabled != old.enabled and (new.internal_client, new.internal_port) == (
                old.internal_client,
                old.internal_port,
            ):
                reason = "enabled" if new.enabled else "disabled"
            txn.events.append(MappingChanged(old, new, reason))
            return new

        return await self._submit(op)

    async def resolve_target(self, name: str) -> IPv4Address:
        """Resolve an ICS name target without blocking the loop (InvalidTargetError if not)."""
        return await self.resolver(name)

    # -- change operations (run inside the worker) -------------------------------------------

    def _remove(self, txn: _Txn, mapping: Mapping, reason: RemovalReason) -> None:
        txn.remove(mapping.key)
        txn.events.append(MappingRemoved(mapping, reason))

    def _target_connection(self, guid: uuid.UUID | None) -> uuid.UUID:
        if guid is not None:
            self._present(guid)
            return guid
        public = self.public_connection()
        if public is None:
            raise ConnectionNotFoundError("no connection is shared publicly")
        return public.guid

    def _check_add(self, request: MappingRequest, client: Client, external_port: int) -> None:
        self.policy.check_target(request.internal_client, client, self.network_view())
        self.policy.check_rules(
            client, external_port, request.internal_client, request.internal_port
        )
        self.policy.check_reserved(request.protocol, external_port)
        if (
            self.local_ports is not None
            and self.table.at_port(request.protocol, external_port) is None
            and external_port in self.local_ports(request.protocol)
        ):
            raise ConflictWithOtherMechanismError(
                f"{request.protocol.name} port {external_port} is in use on the gateway (ST-22)"
            )

    def _op_add(
        self,
        txn: _Txn,
        request: MappingRequest,
        client: Client,
        guid: uuid.UUID | None,
        replace: bool,
    ) -> Mapping:
        connection = self._target_connection(guid)
        self._check_add(request, client, request.external_port)
        key = MappingKey(request.protocol, request.external_port, request.remote_host)
        existing = self.table.resolve(key, request.internal_client, client, replace=replace)
        return self._put_mapping(txn, request, client, connection, request.external_port, existing)

    def _op_add_any(self, txn: _Txn, request: MappingRequest, client: Client) -> Mapping:
        connection = self._target_connection(None)
        self.policy.check_target(request.internal_client, client, self.network_view())
        wanted = request.external_port
        if wanted:
            key = MappingKey(request.protocol, wanted, request.remote_host)
            try:
                self._check_add(request, client, wanted)
                existing = self.table.resolve(key, request.internal_client, client)
            except (NotAuthorizedError, ConflictError):
                pass  # another port will do (WIP-25)
            else:
                return self._put_mapping(txn, request, client, connection, wanted, existing)
        ranges = self.policy.allowed_external_ranges(
            client, request.internal_client, request.internal_port
        )
        if not ranges:
            raise NotAuthorizedError(
                f"no permission rule allows {request.internal_client}:{request.internal_port}"
            )
        busy = self.local_ports(request.protocol) if self.local_ports is not None else ()
        port = self.table.find_free_port(
            request.protocol,
            wanted or request.internal_port,
            lambda p: (
                any(low <= p <= high for low, high in ranges)
                and not self.policy.is_reserved(request.protocol, p)
                and p not in busy
            ),
        )
        if port is None:
            raise QuotaExceededError(f"no {request.protocol.name} port is free for this mapping")
        return self._put_mapping(txn, request, client, connection, port, None)

    def _put_mapping(
        self,
        txn: _Txn,
        request: MappingRequest,
        client: Client,
        connection: uuid.UUID,
        external_port: int,
        existing: Mapping | None,
    ) -> Mapping:
        if existing is None or existing.owner != client.address:
            owned = self.table.count_for_owner(client.address) if client.address else 0
            self.policy.check_quota(client, owned, len(self.table))
        now = self.clock()
        lease = self.policy.grant_lease(request.lease, client)
        mapping = Mapping(
            protocol=request.protocol,
            external_port=external_port,
            internal_client=request.internal_client,
            internal_port=request.internal_port,
            connection=connection,
            description=request.description,
            enabled=request.enabled,
            remote_host=request.remote_host,
            expires_at=None if lease is None else now + lease,
            origin=client.origin,
            owner=client.address,
            target_name=request.target_name,
            created_at=existing.created_at if existing else now,
        )
        txn.put(mapping)
        if existing is None:
            txn.events.append(MappingAdded(mapping))
        else:
            txn.events.append(MappingChanged(existing, mapping, "refreshed"))
        return mapping

    # -- leases ------------------------------------------------------------------------------

    def _op_expire(self, txn: _Txn) -> int:
        expired = txn.expire(self.clock())
        txn.events.extend(MappingRemoved(m, RemovalReason.EXPIRED) for m in expired)
        return len(expired)

    async def _lease_timer(self) -> None:
        while True:
            deadline = self.table.next_deadline()
            now = self.clock()
            if deadline is not None and deadline <= now:
                try:
                    await self._submit(self._op_expire)
                except NatError as exc:
                    log.error("lease expiry could not be applied: %s; retrying", exc)
                    await asyncio.sleep(MAX_TIMER_SLEEP_S)
                continue
            delay = (
                MAX_TIMER_SLEEP_S if deadline is None else min(deadline - now, MAX_TIMER_SLEEP_S)
            )
            self._timer_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timer_wakeup.wait()

    # -- events ------------------------------------------------------------------------------

    def events(self, kinds: Iterable[type] | None = None, maxsize: int = 256) -> Subscription:
        """An async iterator over events committed from now on (bounded, drop-oldest)."""
        return self._bus.subscribe(kinds, maxsize)


def _replace(mapping: Mapping, **changes: Any) -> Mapping:
    return dataclasses.replace(mapping, **changes)
