"""NAT-PMP semantics over igd.natcore: one datagram in, at most one 16-byte datagram out (3).

`NatPmpHandler.handle` never sends and never raises; the UDP endpoint (igd/pcp/endpoint.py, the
one socket on 5351) hands it version-0 datagrams with their source and destination and sends back
what it returns. Mappings are `Origin.NATPMP`, owned by and pointing at the source address (PMP-14).

The one NatError -> NAT-PMP result table (architecture.md 5.3, RFC 6886 section 3.5):

    NotAuthorizedError, InvalidRequestError          2 NOT_AUTHORIZED   (PMP-23/24/29, ST-22)
    QuotaExceededError, ConflictError                4 OUT_OF_RESOURCES (ST-24; a conflict is
                                                                         only final after retries)
    ConnectionNotFoundError, BackendError, the rest  3 NETWORK_FAILURE  (PMP-27)

Dropped without an answer, counted in `stats.dropped` (ST-03, PMP-01/05/07): sources outside the
LAN networks or not unicast, source ports 0 and 5351 (a reflected server's answer), datagrams
addressed to a public-side address, undecodable datagrams, and our own bugs ("internal_error").
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Final

from igd.natcore import (
    Client,
    ConflictError,
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
from igd.natpmp.wire import (
    EPOCH_MODULUS,
    MAX_RESPONSE_BYTES,
    SERVER_PORT,
    ExternalAddressRequest,
    MapRequest,
    NatPmpParseError,
    Opcode,
    ResultCode,
    UnsupportedOpcodeRequest,
    UnsupportedVersionRequest,
    pull_request,
    push_external_address_response,
    push_map_response,
    push_unsupported_opcode_response,
    push_unsupported_version_response,
)

__all__ = [
    "DEFAULT_MAX_LIFETIME_S",
    "MAX_MAP_ATTEMPTS",
    "MAX_PORT_PROBES",
    "MIN_OFFERED_PORT",
    "NatPmpHandler",
    "NatPmpStats",
    "SourceAddress",
    "description_for",
    "result_for",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_LIFETIME_S: Final = 86400
"""Longest lifetime granted; shorter requests are never raised (PMP-19 PROJECT, ST-29)."""
MIN_OFFERED_PORT: Final = 1024
"""A port we pick ourselves is high-numbered (PMP-16; the core's AddAny floor, WIP-26)."""
MAX_PORT_PROBES: Final = 2048
"""Ports examined around the wanted one before the core's own search takes over (ST-24)."""
MAX_MAP_ATTEMPTS: Final = 3
"""Tries when another client takes the chosen port in between (XP-03); then the core picks."""

_BROADCAST: Final = IPv4Address("255.255.255.255")
SourceAddress = tuple[str, int] | tuple[str, int, int, int]
"""A datagram's source as asyncio gives it: (host, port), or 4 items from an AF_INET6 socket."""

_PROTOCOLS: Final = {Opcode.MAP_UDP: IPProtocol.UDP, Opcode.MAP_TCP: IPProtocol.TCP}
_COMPANION: Final = {IPProtocol.UDP: IPProtocol.TCP, IPProtocol.TCP: IPProtocol.UDP}
_HIGHEST_PORT: Final = 65535


def result_for(exc: NatError) -> ResultCode:
    """The NAT-PMP result for a core error (RFC 6886 3.5; the table in the module docstring)."""
    if isinstance(exc, NotAuthorizedError | InvalidRequestError):
        return ResultCode.NOT_AUTHORIZED
    if isinstance(exc, QuotaExceededError | ConflictError):
        return ResultCode.OUT_OF_RESOURCES
    return ResultCode.NETWORK_FAILURE


def description_for(protocol: IPProtocol, internal_port: int) -> str:
    """The description of our mappings, `NAT-PMP <proto> <internal port>` (XP-02 listings)."""
    return f"NAT-PMP {protocol.name} {internal_port}"


@dataclass(slots=True)
class NatPmpStats:
    """Counters: answers by result code, drops by reason (architecture.md 5.4)."""

    answered: Counter[ResultCode] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


class NatPmpHandler:
    """NAT-PMP server semantics (RFC 6886) over a SharingManager; no sockets, no sending."""

    def __init__(
        self,
        core: SharingManager,
        *,
        epoch_origin: float,
        clock: Callable[[], float] = time.time,
        lan_networks: Sequence[IPv4Network],
        max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S,
        allow_private_external: bool = False,
    ) -> None:
        if isinstance(max_lifetime_s, bool) or not 1 <= max_lifetime_s < EPOCH_MODULUS:
            raise ValueError(f"max_lifetime_s must be in 1..{EPOCH_MODULUS - 1}")
        self.core = core
        self.epoch_origin = epoch_origin
        """Wall-clock start of the epoch: persist it with the mappings; reset iff they are lost."""
        self.clock = clock
        self.lan_networks: tuple[IPv4Network, ...] = tuple(lan_networks)
        """Sources outside these networks are dropped (ST-03); replace it when the LAN changes."""
        self.max_lifetime_s = max_lifetime_s
        self.allow_private_external = allow_private_external
        self.stats = NatPmpStats()
        self._logged: set[str] = set()

    # -- epoch and announcements ---------------------------------------------------------------

    def epoch(self) -> int:
        """Seconds since `epoch_origin`, wrapping at 2**32; 0 if the clock went back (PMP-08)."""
        elapsed = self.clock() - self.epoch_origin
        return int(elapsed) % EPOCH_MODULUS if elapsed > 0 else 0

    def reset_epoch(self, origin: float | None = None) -> None:
        """Start a new epoch (now by default): only when mapping state was lost (PMP-09, ST-29)."""
        self.epoch_origin = self.clock() if origin is None else origin

    def announcement(self) -> bytes:
        """The unsolicited opcode-128 datagram for 224.0.0.1:5350 and :5351 (PMP-11/13)."""
        return self._external_address_response()[1]

    # -- the datagram path ---------------------------------------------------------------------

    async def handle(
        self, data: bytes, source: SourceAddress, *, destination: IPv4Address | None
    ) -> bytes | None:
        """The response datagram for one request, or None to drop it; never raises (ST-17/29)."""
        try:
            answer = await self._handle(data, source, destination)
        except Exception:  # our own bug: keep serving, count it, log it with its traceback once
            self._drop("internal_error", exc_info=True)
            return None
        if answer is None:
            return None
        result, response = answer
        if len(response) > MAX_RESPONSE_BYTES:  # cannot happen: every builder is bounded
            self._drop("oversize")
            return None
        self.stats.answered[result] += 1
        return response

    async def _handle(
        self, data: bytes, source: SourceAddress, destination: IPv4Address | None
    ) -> tuple[ResultCode, bytes] | None:
        client_address = self._lan_source(source)
        if client_address is None:
            return None
        if destination is not None and self._is_public_side(destination):
            self._drop("public_destination")  # PMP-01, ST-03, XP-05
            return None
        try:
            request = pull_request(data)
        except NatPmpParseError as exc:
            self._drop(exc.reason)
            return None
        if isinstance(request, UnsupportedVersionRequest):
            return ResultCode.UNSUPP_VERSION, push_unsupported_version_response(self.epoch())
        if isinstance(request, UnsupportedOpcodeRequest):
            return ResultCode.UNSUPP_OPCODE, push_unsupported_opcode_response(request.data)
        if isinstance(request, ExternalAddressRequest):
            return self._external_address_response()
        return await self._map(request, client_address)

    def _drop(self, reason: str, *, exc_info: bool = False) -> None:
        """Count a datagram left unanswered; the first of each reason is logged (5.4)."""
        self.stats.dropped[reason] += 1
        if reason not in self._logged:
            self._logged.add(reason)
            level = logging.ERROR if exc_info else logging.INFO
            log.log(
                level,
                "NAT-PMP: dropped a datagram (%s); counted, logged once",
                reason,
                exc_info=exc_info,
            )

    def _lan_source(self, source: SourceAddress) -> IPv4Address | None:
        """The requester's IPv4 address if it may be answered (ST-03, PMP-01), else None."""
        host, port = source[0], source[1]
        if port in (0, SERVER_PORT):  # nobody to answer, or another server reflecting (ST-29)
            self._drop("source_port")
            return None
        try:
            parsed = ip_address(host.split("%", 1)[0])
        except ValueError:
            self._drop("not_lan")
            return None
        if isinstance(parsed, IPv6Address):
            mapped = parsed.ipv4_mapped
            if mapped is None:
                self._drop("not_lan")
                return None
            parsed = mapped
        address = parsed
        network = next((net for net in self.lan_networks if address in net), None)
        if network is None:
            self._drop("not_lan")
            return None
        if (
            address.is_multicast
            or address.is_unspecified
            or address == _BROADCAST
            or (
                network.prefixlen < 31
                and address in (network.network_address, network.broadcast_address)
            )
        ):
            self._drop("not_unicast")
            return None
        return address

    def _is_public_side(self, destination: IPv4Address) -> bool:
        if destination == self.core.external_address:
            return True
        return any(iface.ip == destination for iface in self.core.network_view().public)

    # -- opcode 0 ------------------------------------------------------------------------------

    def _external_address_response(self) -> tuple[ResultCode, bytes]:
        """Result 0 and the address, or 3 with 0.0.0.0 when none may be reported (PMP-10/27)."""
        address = self.core.external_address
        epoch = self.epoch()
        if address is None or not is_reportable_external(
            address, allow_private=self.allow_private_external
        ):
            result = ResultCode.NETWORK_FAILURE
            return result, push_external_address_response(epoch, None, result)
        return ResultCode.SUCCESS, push_external_address_response(epoch, address)

    # -- opcodes 1 and 2 -----------------------------------------------------------------------

    async def _map(self, request: MapRequest, source: IPv4Address) -> tuple[ResultCode, bytes]:
        protocol = _PROTOCOLS[request.opcode]
        client = Client(Origin.NATPMP, source)
        try:
            if request.lifetime == 0:
                if request.internal_port == 0:  # PMP-22: this protocol only (not MUD-25)
                    await self.core.remove_owned(client, protocol=protocol, origin=Origin.NATPMP)
                    return self._map_answer(request, ResultCode.SUCCESS)
                return self._map_answer(request, await self._delete(request, protocol, client))
            if request.internal_port == 0:  # PMP-28
                return self._map_answer(request, ResultCode.NOT_AUTHORIZED)
            if self.core.external_address is None:  # PMP-27
                return self._map_answer(request, ResultCode.NETWORK_FAILURE)
            lifetime = min(request.lifetime, self.max_lifetime_s)  # PMP-19, ST-29
            mapping = await self._create(request, protocol, client, lifetime)
        except NatError as exc:
            result = result_for(exc)
            log.debug("NAT-PMP map from %s refused (%s): %s", source, result.name, exc)
            return self._map_answer(request, result)
        granted = self._granted(mapping, lifetime)
        return self._map_answer(request, ResultCode.SUCCESS, mapping.external_port, granted)

    def _map_answer(
        self, request: MapRequest, result: ResultCode, external_port: int = 0, lifetime: int = 0
    ) -> tuple[ResultCode, bytes]:
        """Internal port echoed even on failure; port and lifetime 0 unless SUCCESS (PMP-15)."""
        return result, push_map_response(
            request.opcode, result, self.epoch(), request.internal_port, external_port, lifetime
        )

    def _granted(self, mapping: Mapping, lifetime: int) -> int:
        """The lifetime to report: never more than granted nor than the lease left (PMP-19)."""
        if mapping.expires_at is None:
            return lifetime
        return max(1, min(lifetime, mapping.remaining(self.core.clock())))

    async def _delete(
        self, request: MapRequest, protocol: IPProtocol, client: Client
    ) -> ResultCode:
        """Lifetime 0: remove the requester's NAT-PMP mapping(s) of that internal port (PMP-21).

        Nothing to remove is success; only another mechanism's mapping there is 2 (PMP-23/24).
        """
        source = client.address
        assert source is not None
        targeted = [
            m
            for m in self.core.owned_by(source)
            if m.protocol is protocol
            and m.internal_port == request.internal_port
            and m.internal_client == source
        ]
        ours = [m for m in targeted if m.origin is Origin.NATPMP]
        if not ours:
            return ResultCode.NOT_AUTHORIZED if targeted else ResultCode.SUCCESS
        for mapping in ours:
            with contextlib.suppress(MappingNotFoundError):  # expired meanwhile: gone either way
                await self.core.remove_mapping(mapping.key, client)
        return ResultCode.SUCCESS

    def _existing(
        self, protocol: IPProtocol, source: IPv4Address, internal_port: int
    ) -> Mapping | None:
        """The mapping already serving (source, protocol, internal port), NAT-PMP's first.

        PMP-17: a retransmitted or renewed request gets the port already assigned, whatever port
        it suggests. Ours is returned even when disabled or just expired; another mechanism's
        only while live and enabled. Only the source's own mappings are looked at (the core
        indexes by owner; an administrator's mapping to the source is not found).
        """
        now = self.core.clock()
        found: Mapping | None = None
        for mapping in self.core.owned_by(source):
            if (
                mapping.protocol is protocol
                and mapping.internal_port == internal_port
                and mapping.internal_client == source
                and mapping.remote_host is None
            ):
                if mapping.origin is Origin.NATPMP:
                    return mapping  # even if its lease ran out and the sweep is due: revive it
                live = mapping.expires_at is None or mapping.expires_at > now
                if found is None and live and mapping.enabled:
                    found = mapping
        return found

    async def _create(
        self, request: MapRequest, protocol: IPProtocol, client: Client, lifetime: int
    ) -> Mapping:
        """Refresh the existing mapping, else the suggested port, else another one (PMP-16/17)."""
        source = client.address
        assert source is not None
        internal_port = request.internal_port

        def asking(external_port: int) -> MappingRequest:
            return MappingRequest(
                protocol=protocol,
                external_port=external_port,
                internal_client=source,
                internal_port=internal_port,
                description=description_for(protocol, internal_port),
                lease=lifetime,
            )

        wanted = request.suggested_external_port or internal_port
        for _ in range(MAX_MAP_ATTEMPTS):
            existing = self._existing(protocol, source, internal_port)
            if existing is not None and existing.origin is not Origin.NATPMP:
                return existing  # another mechanism's: reported as it is, never extended
            if existing is not None and not existing.enabled:
                raise NotAuthorizedError(f"the administrator disabled {existing.key}")
            try:
                if existing is not None:  # renewal keeps the port and identity (PMP-17/20)
                    return await self.core.add_mapping(asking(existing.external_port), client)
                port = self._pick_port(protocol, wanted, client, internal_port)
                if port is None:
                    break
                return await self.core.add_mapping(asking(port), client, replace=False)
            except ConflictError:
                continue  # taken in between by someone else (XP-03): look again
        # The core's bounded search over free slots: no companion reservation, never a conflict.
        return await self.core.add_any_mapping(asking(0), client)

    def _pick_port(
        self, protocol: IPProtocol, wanted: int, client: Client, internal_port: int
    ) -> int | None:
        """The suggested port if it can be had, else the nearest one >= 1024 (PMP-16/18, XP-03).

        A port is acceptable when a permission rule allows it, it is not reserved (ST-22), no
        mapping holds it, and the other protocol's same port is free or already points at this
        client (the companion reservation, PMP-18). NotAuthorizedError when no rule allows any
        port (PMP-29); None when MAX_PORT_PROBES ports were busy.
        """
        source = client.address
        assert source is not None
        policy = self.core.policy
        ranges = policy.allowed_external_ranges(client, source, internal_port)
        if not ranges:
            raise NotAuthorizedError(f"no permission rule allows {source}:{internal_port}")
        companion = _COMPANION[protocol]

        def acceptable(port: int) -> bool:
            if not any(low <= port <= high for low, high in ranges):
                return False
            if policy.is_reserved(protocol, port) or self._holder(protocol, port) is not None:
                return False
            holder = self._holder(companion, port)
            return holder is None or holder.internal_client == source

        if 1 <= wanted <= _HIGHEST_PORT and acceptable(wanted):
            return wanted
        start = min(max(wanted, MIN_OFFERED_PORT), _HIGHEST_PORT)
        outward = (  # start, start+1, start-1, start+2, ... within [1024, 65535]
            port
            for distance in range(_HIGHEST_PORT)
            for port in ((start + distance, start - distance) if distance else (start,))
            if MIN_OFFERED_PORT <= port <= _HIGHEST_PORT
        )
        return next((p for p in itertools.islice(outward, MAX_PORT_PROBES) if acceptable(p)), None)

    def _holder(self, protocol: IPProtocol, port: int) -> Mapping | None:
        """The mapping on (protocol, port) whatever its remote host, or None."""
        return next(iter(self.core.mappings_in_range(port, port, protocol)), None)
