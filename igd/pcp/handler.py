"""PCP server semantics (RFC 6887, specs.md section 4, landscape ST-03/ST-30): bytes in, bytes out.

`PcpHandler.handle` turns one request datagram into the response datagram (or None: drop). It
never sends and never raises; every mapping change is a call into `igd.natcore`, which alone
decides whether a mapping may exist. Decisions this handler makes on top of the RFC:

* Requests from outside `lan_networks`, or addressed to anything but a LAN address of ours, are
  dropped silently (ST-03, XP-05).
* MAP is served for TCP and UDP over IPv4 (NAT44). The client-IP field must equal the source
  (ADDRESS_MISMATCH otherwise, PCP-09), so an IPv6 client-IP field from our IPv4 socket is an
  ADDRESS_MISMATCH; an IPv6 or foreign suggested external address means "no preference", or
  CANNOT_PROVIDE_EXTERNAL with PREFER_FAILURE (PCP-38).
* PEER is answered UNSUPP_OPCODE (PCP-48): a PEER mapping is the kernel's outbound NAT binding of
  one flow, whose external port the core neither chooses nor reports, and the core's one mapping
  per (protocol, external port) cannot hold one per peer.
* FILTER: the core can enforce exactly one remote host per mapping (`remote_host`, the UPnP
  RemoteHost of WIP-16). One FILTER for a single IPv4 peer (prefix 128, port 0) becomes that;
  prefix 0 clears it; any other filter set (a shorter prefix, a peer port, several peers) cannot
  be installed and is answered EXCESSIVE_REMOTE_PEERS - never silently ignored (ST-30, PCP-26).
  A refresh without FILTER keeps the mapping's filter; with FILTER it replaces it.
* THIRD_PARTY is NOT_AUTHORIZED unless `allow_third_party(source)`; then the core's policy still
  applies (secure mode refuses targets other than the requester) (PCP-24, ST-30).
* Nonces (PCP-36/37/59): the core does not store them, so this handler keeps a bounded table
  keyed by (protocol, external port). A refresh or delete with another nonce is NOT_AUTHORIZED
  (lifetime = the mapping's remaining lifetime). When no nonce is known for a PCP mapping - after
  a daemon restart (mappings persist in the core, nonces do not), or after eviction from the
  table - the first MAP from the mapping's owner re-establishes it; a new epoch (reset at start)
  tells clients state may have been lost, so they refresh promptly (RFC 6887 section 8.5).
* Lifetimes: 0 deletes; others are clamped to [min_lifetime_s, max_lifetime_s], 120 s and
  86400 s by default (PCP-56, RFC 6887 section 15). Error lifetimes are 30 s / 1800 s (PCP-15).
* A delete of a mapping that does not exist succeeds (PCP-60); a delete of the requester's own
  UPnP or NAT-PMP mapping is NOT_AUTHORIZED (PCP-59). Set deletes (internal port 0) remove the
  requester's PCP mappings whose nonce matches and answer NOT_AUTHORIZED if any was kept (PCP-57).
* Core errors: NotAuthorizedError -> NOT_AUTHORIZED; QuotaExceededError -> USER_EX_QUOTA when
  the requester is at its quota, else NO_RESOURCES; ConflictError -> another port, or
  CANNOT_PROVIDE_EXTERNAL with PREFER_FAILURE; no (reportable) external address or no public
  connection -> NETWORK_FAILURE; a data-plane failure -> NO_RESOURCES (PCP-39/40, XP-03, WIP-03).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from ipaddress import AddressValueError, IPv4Address, IPv4Network
from typing import Final

from igd.natcore import (
    Client,
    ConflictError,
    ConnectionNotFoundError,
    InvalidRequestError,
    IPProtocol,
    Mapping,
    MappingNotFoundError,
    MappingRequest,
    NatError,
    NotAuthorizedError,
    Origin,
    QuotaExceededError,
    SharingManager,
    is_reportable_external,
)
from igd.pcp.wire import (
    LONG_ERROR_LIFETIME_S,
    FilterOption,
    MapPayload,
    Opcode,
    PcpOption,
    PcpParseError,
    PcpRequest,
    PcpResponse,
    PreferFailureOption,
    ResultCode,
    ThirdPartyOption,
    error_response,
    from_ipv4,
    is_unspecified,
    pull_header,
    pull_request,
    push_announce,
    push_response,
    push_unparsed_error,
    to_ipv4,
)

__all__ = [
    "DEFAULT_MAX_LIFETIME_S",
    "DEFAULT_MAX_NONCES",
    "DEFAULT_MIN_LIFETIME_S",
    "PcpHandler",
    "PcpStats",
]

log = logging.getLogger(__name__)

DEFAULT_MIN_LIFETIME_S: Final = 120
"""Shortest lifetime granted to a MAP: RFC 6887 section 15 recommends 120 s (PCP-56)."""
DEFAULT_MAX_LIFETIME_S: Final = 86400
"""Longest lifetime granted: 24 h, RFC 6887 section 15's fallback maximum (PCP-56)."""
DEFAULT_MAX_NONCES: Final = 16384
"""Nonce table size: the core's default table size (PolicyConfig.max_mappings)."""

_U32: Final = 0xFFFFFFFF
_SUPPORTED_PROTOCOLS: Final = frozenset({int(IPProtocol.TCP), int(IPProtocol.UDP)})


def _never(_address: IPv4Address) -> bool:
    return False


@dataclass(slots=True)
class PcpStats:
    """Monotonic counters of the handler, for metrics; read them, never write them."""

    received: int = 0
    dropped_not_lan: int = 0
    """Source or destination not on the LAN side, or the external address (ST-03)."""
    dropped_malformed: int = 0
    """Silently dropped: < 2 or < 24 octets, R bit set (PCP-04/06)."""
    mapped: int = 0
    refreshed: int = 0
    deleted: int = 0
    internal_errors: int = 0
    """Our own bugs caught in `handle`; always 0 in a healthy daemon."""
    results: Counter[int] = field(default_factory=Counter)
    """Responses sent, by result code."""

    def as_dict(self) -> dict[str, int]:
        """Name -> value, for a metrics exporter (results as `result_<NAME>`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "results"}
        for code, count in sorted(self.results.items()):
            name = ResultCode(code).name if code in ResultCode._value2member_map_ else str(code)
            values[f"result_{name}"] = count
        return values


@dataclass(frozen=True, slots=True)
class _NonceEntry:
    nonce: bytes
    internal_client: IPv4Address
    internal_port: int


class _Refused(Exception):
    """An error answer decided while serving a request."""

    def __init__(self, result: ResultCode, lifetime: int | None = None) -> None:
        super().__init__(result.name)
        self.result = result
        self.lifetime = lifetime


class PcpHandler:
    """PCP semantics over the core: MAP, ANNOUNCE, nonces, options, epoch (PCP-*, ST-30)."""

    def __init__(
        self,
        core: SharingManager,
        *,
        epoch_origin: float,
        clock: Callable[[], float] = time.time,
        lan_networks: Sequence[IPv4Network],
        min_lifetime_s: int = DEFAULT_MIN_LIFETIME_S,
        max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
        allow_third_party: Callable[[IPv4Address], bool] = _never,
        allow_private_external: bool = False,
        max_nonces: int = DEFAULT_MAX_NONCES,
    ) -> None:
        if not 0 < min_lifetime_s <= max_lifetime_s <= _U32:
            raise ValueError("need 0 < min_lifetime_s <= max_lifetime_s < 2**32")
        if max_nonces < 1:
            raise ValueError("max_nonces must be positive")
        self.core = core
        self.clock = clock
        self.lan_networks = tuple(IPv4Network(n) for n in lan_networks)
        self.min_lifetime_s = min_lifetime_s
        self.max_lifetime_s = max_lifetime_s
        self.allow_third_party = allow_third_party
        self.allow_private_external = allow_private_external
        self.max_nonces = max_nonces
        self.stats = PcpStats()
        self._epoch_origin = epoch_origin
        self._nonces: OrderedDict[tuple[IPProtocol, int], _NonceEntry] = OrderedDict()

    # ---- Epoch and announcements ------------------------------------------------------------

    @property
    def epoch_origin(self) -> float:
        """When the epoch was last 0, in `clock` seconds (PCP-54)."""
        return self._epoch_origin

    def epoch(self) -> int:
        """Epoch Time: whole seconds since `epoch_origin`, modulo 2**32 (PCP-54)."""
        return max(0, int(self.clock() - self._epoch_origin)) & _U32

    def reset_epoch(self) -> None:
        """Restart the epoch at 0: mapping state lost or external address changed (PCP-54)."""
        self._epoch_origin = self.clock()

    def announcement(self) -> bytes:
        """An unsolicited ANNOUNCE response for 224.0.0.1:5350 with the current epoch (PCP-51)."""
        return push_announce(self.epoch())

    @property
    def nonce_count(self) -> int:
        """Nonces held (bounded by `max_nonces`)."""
        return len(self._nonces)

    # ---- The request path -------------------------------------------------------------------

    async def handle(
        self, data: bytes, source: tuple[str, int], *, destination: IPv4Address | None
    ) -> bytes | None:
        """The response to one datagram, or None to drop it; never raises (PCP-04..16, ST-03)."""
        try:
            return await self._handle(data, source, destination)
        except Exception:
            self.stats.internal_errors += 1
            log.exception("PCP request from %s failed", source[0])
            return None

    async def _handle(
        self, data: bytes, source: tuple[str, int], destination: IPv4Address | None
    ) -> bytes | None:
        stats = self.stats
        stats.received += 1
        requester = self._lan_source(source[0], destination)
        if requester is None:
            stats.dropped_not_lan += 1
            return None
        epoch = self.epoch()
        try:
            header = pull_header(data)
        except PcpParseError as exc:
            return self._unparsed(data, exc, epoch)
        if to_ipv4(header.client_address) != requester:
            return self._answer_error(data, ResultCode.ADDRESS_MISMATCH, epoch)
        try:
            request = pull_request(data)
        except PcpParseError as exc:
            return self._unparsed(data, exc, epoch)
        try:
            response = await self._serve(request, requester, epoch)
        except _Refused as refusal:
            response = error_response(
                request, refusal.result, epoch=epoch, lifetime=refusal.lifetime
            )
        stats.results[response.result] += 1
        return push_response(response)

    def _lan_source(self, host: str, destination: IPv4Address | None) -> IPv4Address | None:
        """The requester's address when source and destination are on the LAN side (ST-03)."""
        try:
            address = IPv4Address(host)
        except AddressValueError:
            return None
        if not self._on_lan(address):
            return None
        if destination is not None and (
            not self._on_lan(destination) or destination == self.core.external_address
        ):
            return None
        return address

    def _on_lan(self, address: IPv4Address) -> bool:
        return any(address in network for network in self.lan_networks)

    def _unparsed(self, data: bytes, exc: PcpParseError, epoch: int) -> bytes | None:
        if exc.result is None:
            self.stats.dropped_malformed += 1
            return None
        self.stats.results[exc.result] += 1
        if exc.request is not None:
            return push_response(error_response(exc.request, exc.result, epoch=epoch))
        return push_unparsed_error(data, exc.result, epoch=epoch)

    def _answer_error(self, data: bytes, result: ResultCode, epoch: int) -> bytes:
        """An error that outranks the rest of parsing: the request's layout if it parses."""
        self.stats.results[result] += 1
        try:
            request = pull_request(data)
        except PcpParseError as exc:
            if exc.request is not None:
                return push_response(error_response(exc.request, result, epoch=epoch))
            return push_unparsed_error(data, result, epoch=epoch)
        return push_response(error_response(request, result, epoch=epoch))

    async def _serve(self, request: PcpRequest, requester: IPv4Address, epoch: int) -> PcpResponse:
        if request.opcode == Opcode.ANNOUNCE:
            return PcpResponse(Opcode.ANNOUNCE, ResultCode.SUCCESS, 0, epoch)  # PCP-50
        if request.opcode == Opcode.PEER:
            raise _Refused(ResultCode.UNSUPP_OPCODE)  # PCP-48
        assert isinstance(request.payload, MapPayload)
        return await self._map(request, request.payload, requester, epoch)

    # ---- MAP ----------------------------------------------------------------------------------

    async def _map(
        self, request: PcpRequest, payload: MapPayload, requester: IPv4Address, epoch: int
    ) -> PcpResponse:
        internal = self._internal_address(request, requester)
        if payload.protocol == 0:
            if payload.internal_port != 0:
                raise _Refused(ResultCode.MALFORMED_REQUEST)  # PCP-32, PCP-57
        elif payload.protocol not in _SUPPORTED_PROTOCOLS:
            raise _Refused(ResultCode.UNSUPP_PROTOCOL)  # PCP-33
        filter_set, remote_host = self._filter(request.filters)
        client = Client(Origin.PCP, requester)
        if request.lifetime == 0:
            return await self._delete(request, payload, internal, client, epoch)
        if payload.protocol == 0 or payload.internal_port == 0:
            raise _Refused(ResultCode.NOT_AUTHORIZED)  # PCP-32: no all-protocol/all-port maps
        protocol = IPProtocol(payload.protocol)
        external = self.core.external_address
        if external is None or not is_reportable_external(
            external, allow_private=self.allow_private_external
        ):
            raise _Refused(ResultCode.NETWORK_FAILURE)  # PCP-39, WIP-03
        suggested = payload.external_address
        if (
            request.prefer_failure
            and not is_unspecified(suggested)
            and to_ipv4(suggested) != external
        ):
            raise _Refused(ResultCode.CANNOT_PROVIDE_EXTERNAL, LONG_ERROR_LIFETIME_S)  # PCP-38
        lifetime = min(max(request.lifetime, self.min_lifetime_s), self.max_lifetime_s)
        existing = self._find(internal, protocol, payload.internal_port, client)
        try:
            if existing is not None:
                mapping = await self._refresh(
                    request, payload, existing, client, lifetime, filter_set, remote_host
                )
                self.stats.refreshed += 1
            else:
                mapping = await self._create(
                    request, payload, protocol, internal, client, lifetime, remote_host
                )
                self.stats.mapped += 1
        except NatError as exc:
            raise self._refusal(exc, client) from None
        self._remember(mapping, payload.nonce)
        remaining = mapping.remaining(self.core.clock())
        return PcpResponse(
            opcode=Opcode.MAP,
            result=ResultCode.SUCCESS,
            lifetime=min(remaining, _U32),
            epoch=epoch,
            payload=MapPayload(
                payload.nonce,
                payload.protocol,
                payload.internal_port,
                mapping.external_port,
                from_ipv4(external),
            ),
            options=_echoed(request.options),
        )

    def _internal_address(self, request: PcpRequest, requester: IPv4Address) -> IPv4Address:
        """The mapping's internal address: the source, or an allowed THIRD_PARTY (PCP-24/31)."""
        third_party = request.third_party
        if third_party is None:
            return requester
        if not self.allow_third_party(requester):
            raise _Refused(ResultCode.NOT_AUTHORIZED)
        if third_party == request.client_address:
            raise _Refused(ResultCode.MALFORMED_REQUEST)
        target = to_ipv4(third_party)
        if target is None or not self._on_lan(target):
            raise _Refused(ResultCode.NOT_AUTHORIZED)
        return target

    def _filter(self, filters: tuple[FilterOption, ...]) -> tuple[bool, IPv4Address | None]:
        """(whether FILTER was given, the one remote host it asks for) or a refusal (PCP-26)."""
        if not filters:
            return False, None
        effective: set[tuple[int, int, IPv4Address]] = set()
        for option in filters:
            if option.prefix_length == 0:
                effective.clear()  # prefix 0: remove all filters
                continue
            peer = to_ipv4(option.remote_peer_address)
            if peer is None or peer.is_unspecified:
                raise _Refused(ResultCode.MALFORMED_OPTION)  # IPv6 peer for a NAT44 mapping
            effective.add((option.prefix_length, option.remote_peer_port, peer))
        if not effective:
            return True, None
        if len(effective) == 1:
            prefix_length, port, peer = next(iter(effective))
            if prefix_length == 128 and port == 0:
                return True, peer
        raise _Refused(ResultCode.EXCESSIVE_REMOTE_PEERS)

    def _candidates(self, internal: IPv4Address, client: Client) -> list[Mapping]:
        """Mappings owned by the requester or by the internal host (no full-table scan)."""
        assert client.address is not None
        found = list(self.core.owned_by(client.address))
        if internal != client.address:
            found.extend(self.core.owned_by(internal))
        return found

    def _find(
        self, internal: IPv4Address, protocol: IPProtocol, internal_port: int, client: Client
    ) -> Mapping | None:
        """The PCP mapping of (internal address, protocol, internal port) (PCP-36)."""
        for mapping in self._candidates(internal, client):
            if (
                mapping.origin is Origin.PCP
                and mapping.internal_client == internal
                and mapping.protocol is protocol
                and mapping.internal_port == internal_port
                and self.core.may_manage(mapping, client)
            ):
                return mapping
        return None

    def _check_nonce(self, mapping: Mapping, nonce: bytes, client: Client) -> None:
        """Same nonce, or an unknown one from the owner; else NOT_AUTHORIZED (PCP-37/59)."""
        entry = self._nonce_of(mapping)
        if entry is None:
            if mapping.owner == client.address:
                return  # re-established after a restart or an eviction
        elif entry.nonce == nonce:
            return
        remaining = mapping.remaining(self.core.clock()) if not mapping.permanent else _U32
        raise _Refused(ResultCode.NOT_AUTHORIZED, min(remaining, _U32))

    async def _refresh(
        self,
        request: PcpRequest,
        payload: MapPayload,
        existing: Mapping,
        client: Client,
        lifetime: int,
        filter_set: bool,
        remote_host: IPv4Address | None,
    ) -> Mapping:
        """Same external port, new lifetime; a changed FILTER re-keys the mapping (PCP-36)."""
        self._check_nonce(existing, payload.nonce, client)
        if (
            request.prefer_failure
            and payload.external_port
            and payload.external_port != existing.external_port
        ):
            raise _Refused(ResultCode.CANNOT_PROVIDE_EXTERNAL)
        wanted_remote = remote_host if filter_set else existing.remote_host
        renewed = MappingRequest(
            protocol=existing.protocol,
            external_port=existing.external_port,
            internal_client=existing.internal_client,
            internal_port=existing.internal_port,
            description=existing.description,
            remote_host=wanted_remote,
            lease=float(lifetime),
        )
        if wanted_remote == existing.remote_host:
            return await self.core.add_mapping(renewed, client)
        await self.core.remove_mapping(existing.key, client)
        try:
            return await self.core.add_mapping(renewed, client, replace=False)
        except NatError:
            restore = MappingRequest(
                protocol=existing.protocol,
                external_port=existing.external_port,
                internal_client=existing.internal_client,
                internal_port=existing.internal_port,
                description=existing.description,
                remote_host=existing.remote_host,
                lease=float(existing.remaining(self.core.clock()) or lifetime),
            )
            try:
                await self.core.add_mapping(restore, client, replace=False)
            except NatError:
                self._forget(existing)
                log.warning("PCP mapping %s lost while changing its filter", existing.key)
            raise

    async def _create(
        self,
        request: PcpRequest,
        payload: MapPayload,
        protocol: IPProtocol,
        internal: IPv4Address,
        client: Client,
        lifetime: int,
        remote_host: IPv4Address | None,
    ) -> Mapping:
        """A new mapping: the suggested port if free, else another one (PCP-35, XP-03)."""
        suggested = payload.external_port
        new = MappingRequest(
            protocol=protocol,
            external_port=suggested,
            internal_client=internal,
            internal_port=payload.internal_port,
            description=f"PCP {protocol.name} {payload.internal_port}",
            remote_host=remote_host,
            lease=float(lifetime),
        )
        if request.prefer_failure and suggested:
            try:
                return await self.core.add_mapping(new, client, replace=False)
            except ConflictError:
                raise _Refused(ResultCode.CANNOT_PROVIDE_EXTERNAL) from None  # PCP-25
        if suggested and any(self.core.mappings_in_range(suggested, suggested, protocol)):
            # Held by someone (maybe this host over UPnP): never take it over, pick another.
            new = MappingRequest(
                protocol=new.protocol,
                external_port=0,
                internal_client=new.internal_client,
                internal_port=new.internal_port,
                description=new.description,
                remote_host=new.remote_host,
                lease=new.lease,
            )
        return await self.core.add_any_mapping(new, client)

    # ---- Deletes ------------------------------------------------------------------------------

    async def _delete(
        self,
        request: PcpRequest,
        payload: MapPayload,
        internal: IPv4Address,
        client: Client,
        epoch: int,
    ) -> PcpResponse:
        """Lifetime 0: one mapping, or the requester's set for a protocol / all (PCP-57..60)."""
        if payload.internal_port:
            await self._delete_one(payload, internal, client)
        else:
            await self._delete_set(payload, internal, client)
        return PcpResponse(
            opcode=Opcode.MAP,
            result=ResultCode.SUCCESS,
            lifetime=0,
            epoch=epoch,
            payload=payload,  # suggested external port/address copied (PCP-58)
            options=_echoed(request.options),
        )

    async def _delete_one(self, payload: MapPayload, internal: IPv4Address, client: Client) -> None:
        protocol = IPProtocol(payload.protocol)
        existing = self._find(internal, protocol, payload.internal_port, client)
        if existing is None:
            for mapping in self._candidates(internal, client):
                if (
                    mapping.origin is not Origin.PCP
                    and mapping.internal_client == internal
                    and mapping.protocol is protocol
                    and mapping.internal_port == payload.internal_port
                ):
                    raise _Refused(ResultCode.NOT_AUTHORIZED)  # not PCP's to delete (PCP-59)
            return  # nothing to delete: success (PCP-60)
        self._check_nonce(existing, payload.nonce, client)
        await self._remove(existing, client)

    async def _delete_set(self, payload: MapPayload, internal: IPv4Address, client: Client) -> None:
        kept = 0
        for mapping in self._candidates(internal, client):
            if (
                mapping.origin is not Origin.PCP
                or mapping.internal_client != internal
                or (payload.protocol and mapping.protocol != payload.protocol)
                or not self.core.may_manage(mapping, client)
            ):
                continue
            try:
                self._check_nonce(mapping, payload.nonce, client)
            except _Refused:
                kept += 1
                continue
            await self._remove(mapping, client)
        if kept:
            raise _Refused(ResultCode.NOT_AUTHORIZED)

    async def _remove(self, mapping: Mapping, client: Client) -> None:
        try:
            await self.core.remove_mapping(mapping.key, client)
        except MappingNotFoundError:
            pass  # expired or removed meanwhile: the delete is done
        except NatError as exc:
            raise self._refusal(exc, client) from None
        self._forget(mapping)
        self.stats.deleted += 1

    # ---- Nonces and errors ----------------------------------------------------------------------

    def _nonce_of(self, mapping: Mapping) -> _NonceEntry | None:
        entry = self._nonces.get((mapping.protocol, mapping.external_port))
        if entry is None:
            return None
        if (entry.internal_client, entry.internal_port) != (
            mapping.internal_client,
            mapping.internal_port,
        ):
            del self._nonces[(mapping.protocol, mapping.external_port)]  # a stale slot
            return None
        return entry

    def _remember(self, mapping: Mapping, nonce: bytes) -> None:
        key = (mapping.protocol, mapping.external_port)
        self._nonces[key] = _NonceEntry(nonce, mapping.internal_client, mapping.internal_port)
        self._nonces.move_to_end(key)
        while len(self._nonces) > self.max_nonces:
            self._nonces.popitem(last=False)

    def _forget(self, mapping: Mapping) -> None:
        self._nonces.pop((mapping.protocol, mapping.external_port), None)

    def _refusal(self, exc: NatError, client: Client) -> _Refused:
        """The one NatError -> PCP result table (architecture.md 5.3)."""
        if isinstance(exc, ConflictError):
            return _Refused(ResultCode.CANNOT_PROVIDE_EXTERNAL)
        if isinstance(exc, NotAuthorizedError):
            return _Refused(ResultCode.NOT_AUTHORIZED)
        if isinstance(exc, QuotaExceededError):
            assert client.address is not None
            owned = len(self.core.owned_by(client.address))
            if owned >= self.core.policy.config.quota_per_client:
                return _Refused(ResultCode.USER_EX_QUOTA)
            return _Refused(ResultCode.NO_RESOURCES)
        if isinstance(exc, ConnectionNotFoundError):
            return _Refused(ResultCode.NETWORK_FAILURE)
        if isinstance(exc, InvalidRequestError):
            return _Refused(ResultCode.MALFORMED_REQUEST)
        log.warning("PCP request refused by the core: %s", exc)
        return _Refused(ResultCode.NO_RESOURCES)


def _echoed(options: tuple[PcpOption, ...]) -> tuple[PcpOption, ...]:
    """The processed options a success response repeats (PCP-23)."""
    return tuple(
        option
        for option in options
        if isinstance(option, ThirdPartyOption | PreferFailureOption | FilterOption)
    )
