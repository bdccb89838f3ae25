"""UPnP control actions: typed arguments in, core calls, typed outputs out (specs 2.2-2.4).

Dispatch is driven by the device table (architecture rule 5.6): the addressed service's `Action`
gives the in-arguments, whose related state variables give the data types, allowed values and
ranges; the out-arguments are formatted in SCPD order (CTRL-05). Each handler states the
semantics of one action and cites its requirement IDs.

Argument rules (CTRL-07, CTRL-11, ST-15):
- exactly the declared in-arguments, in any order (UDA asks for SCPD order; real control points
  do not all follow it, so order is not checked); a missing, unknown or duplicated argument is 402;
- values by data type through `igd.soap.types.parse_arg`: bad syntax 402, off allowedValueList
  or allowedValueRange 601 (402 for IGD:1), too long 605 (402 for IGD:1);
- ranges enforced by the action itself instead: InternalPort 0 is 732 (WIP-17), a v2 lease above
  604800 is clamped (WIP-12);
- NewProtocol: "TCP"/"UDP", and "tcp"/"udp" in any letter case as a documented tolerance (ST-15);
  anything else ("TCP ", "ICMP", "") is 601 for IGD:2, 402 for IGD:1 (WIP-20);
- NewRemoteHost: "" or "0.0.0.0" is the wildcard, else a dotted-quad IPv4 literal, else 402;
- NewInternalClient: "" or "0.0.0.0" is 715 (WIP-18), else a dotted-quad IPv4 literal; a DNS name
  is 402 and is never resolved (WIP-23, ST-20).

Visibility (WIP-71/74, ST-23, privacy): without DeviceProtection every UPnP caller is
unauthenticated, so GetGenericPortMappingEntry, GetSpecificPortMappingEntry,
GetListOfPortMappings and QueryStateVariable(PortMappingNumberOfEntries) show only the caller's
entries: those it may manage (`SharingManager.may_manage`) and any pointing at its own address.
GetGenericPortMappingEntry indexes that caller-visible list (WIP-29 contiguity holds per caller).
NewManage never widens access (WIP-31/32/73). `ControlSettings.show_all_mappings` restores the
miniupnpd view (every entry to everyone for GetGeneric/GetSpecific, and for GetList with Manage 1).

Error codes are chosen by `upnp_error_for(exc, version=, action=)` with the version of the
request's namespace, so an IGD:1 control point never sees 606 or 728..733 (WIP-75, CTRL-09).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final, Protocol, TypeVar

from lxml import etree

from igd.natcore import (
    Client,
    IPProtocol,
    MappingKey,
    MappingRequest,
    NatError,
    Origin,
    SharingManager,
    is_reportable_external,
)
from igd.natcore import (
    Mapping as NatMapping,
)
from igd.soap.envelope import CONTROL_NS, build_response
from igd.soap.errors import (
    ActionFailed,
    ActionNotAuthorized,
    InconsistentParameters,
    InvalidAction,
    InvalidArgs,
    InvalidConnServiceSelection,
    InvalidDeviceUUID,
    InvalidServiceID,
    InvalidVar,
    NoSuchEntryInArray,
    PortMappingNotFound,
    ReadOnly,
    SpecifiedArrayIndexInvalid,
    StringArgumentTooLong,
    UPnPError,
    WildCardNotPermittedInExtPort,
    WildCardNotPermittedInIntPort,
    WildCardNotPermittedInSrcIP,
    upnp_error_for,
)
from igd.soap.types import format_arg, parse_arg
from igd.upnp import SERVICE_ID_WANIPC, RootDevice, ServiceEndpoint, StateVariable

__all__ = [
    "HANDLED_ACTIONS",
    "MAX_DESCRIPTION_BYTES",
    "MAX_LEASE_V2_S",
    "MAX_LISTED_MAPPINGS",
    "PORT_LISTING_NS",
    "QUERY_STATE_VARIABLE",
    "ActionRequest",
    "Cdata",
    "ControlSettings",
    "WanStatus",
    "build_action_response",
    "build_port_listing",
    "query_state_variable",
    "run_action",
]

log = logging.getLogger(__name__)

MAX_LEASE_V2_S: Final = 604800
"""Largest WANIPConnection:2 lease; 0 and anything above are stored as this (WIP-12, ST-27)."""

MAX_DESCRIPTION_BYTES: Final = 256
"""Longest NewPortMappingDescription in UTF-8 bytes: the core's cap, answered 605 (ST-26)."""

MAX_LISTED_MAPPINGS: Final = 1024
"""Most entries in one NewPortListing even for NewNumberOfPorts 0 (rule 5.7: bounded output)."""

PORT_LISTING_NS: Final = "urn:schemas-upnp-org:gw:WANIPConnection"
"""Namespace of the PortMappingList fragment (WIP-33)."""
_PORT_LISTING_SCHEMA: Final = (
    f"{PORT_LISTING_NS} http://www.upnp.org/schemas/gw/WANIPConnection-v2.xsd"
)
_XSI_NS: Final = "http://www.w3.org/2001/XMLSchema-instance"

QUERY_STATE_VARIABLE: Final = "QueryStateVariable"
"""The DA1.0 action of CONTROL_NS (CTRL-13)."""

_UI4_MAX: Final = 2**32 - 1
_UI4_MOD: Final = 2**32
_BROADCAST: Final = IPv4Address("255.255.255.255")
_DOTTED_QUAD: Final = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", re.ASCII)
_PROTOCOL_WORDS: Final = frozenset({"tcp", "udp"})
# Ranges a handler enforces itself with a more specific answer than parse_arg's 601.
_RANGE_IN_HANDLER: Final = frozenset({"InternalPort", "PortMappingLeaseDuration"})
_DEVICE_PART: Final = re.compile(r"uuid:(?P<uuid>[0-9A-Fa-f-]{32,36})(?::[A-Za-z0-9:._-]*)?")

OutValue = int | bool | str
_T = TypeVar("_T")


class WanStatus(Protocol):
    """What WANCommonInterfaceConfig reports about the WAN link (WCIC-01..06)."""

    def counters(self) -> tuple[int, int, int, int]:
        """Bytes sent, bytes received, packets sent, packets received (raw, 64-bit)."""
        ...

    def link_up(self) -> bool:
        """Whether the WAN link has carrier."""
        ...

    def max_bit_rates(self) -> tuple[int, int]:
        """(upstream, downstream) in bit/s, 0 when unknown (WCIC-06)."""
        ...


class Cdata(str):
    """An out-argument value sent inside CDATA instead of escaped (the NewPortListing, WIP-33)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """Everything an action needs beyond the request: the core, the WAN, operator choices."""

    core: SharingManager
    wan: WanStatus
    allow_private_external: bool = False
    started_at: float = 0.0
    show_all_mappings: bool = False
    max_listed_mappings: int = MAX_LISTED_MAPPINGS
    enumerations: dict[IPv4Address, tuple[int, list[NatMapping]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Each client's visible list, valid while SystemUpdateID stays (GetGeneric walks it)."""


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One control call; `version` is the request namespace's, for error codes only (CTRL-09)."""

    root: RootDevice
    endpoint: ServiceEndpoint
    action: str
    args: tuple[tuple[str, str], ...]
    requester: IPv4Address
    version: int


class _Args:
    """Parsed in-arguments with typed accessors; a wrong type is our bug (TypeError)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, OutValue]) -> None:
        self._values = values

    def text(self, name: str) -> str:
        value = self._values[name]
        if not isinstance(value, str):
            raise TypeError(f"{name} is not a string argument")
        return value

    def number(self, name: str) -> int:
        value = self._values[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} is not an integer argument")
        return value

    def flag(self, name: str) -> bool:
        value = self._values[name]
        if not isinstance(value, bool):
            raise TypeError(f"{name} is not a boolean argument")
        return value


@dataclass(frozen=True, slots=True)
class _Call:
    """What a handler sees: settings, the request, parsed arguments and the caller as a Client."""

    settings: ControlSettings
    request: ActionRequest
    args: _Args
    client: Client

    @property
    def core(self) -> SharingManager:
        return self.settings.core

    @property
    def service_version(self) -> int:
        return self.request.endpoint.service.version

    def now(self) -> float:
        return self.settings.core.clock()


Handler = Callable[[_Call], Awaitable[Mapping[str, OutValue]]]
_HANDLERS: dict[tuple[str, str], Handler] = {}


def _handles(kind: str, *actions: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for action in actions:
            _HANDLERS[(kind, action)] = handler
        return handler

    return register


# ---- argument parsing ---------------------------------------------------------------------------


def _normalise_protocol(text: str) -> str:
    """ST-15 tolerance: "tcp"/"udp" in any letter case mean TCP/UDP; other text is left alone."""
    return text.upper() if text.isascii() and text.lower() in _PROTOCOL_WORDS else text


def _parse_value(variable: StateVariable, text: str) -> OutValue:
    """One argument by its related state variable (CTRL-11): 402, 601 or 605 on bad input."""
    if variable.name == "PortMappingProtocol":
        text = _normalise_protocol(text)
    if variable.data_type == "string":
        return parse_arg("string", text, allowed_values=variable.allowed_values)
    if variable.data_type == "boolean":
        return parse_arg("boolean", text)
    allowed_range = None if variable.name in _RANGE_IN_HANDLER else variable.allowed_range
    return parse_arg(variable.data_type, text, allowed_range=allowed_range)


def _parse_inputs(request: ActionRequest) -> _Args:
    """Exactly the declared in-arguments, any order, each typed (CTRL-07, ST-15)."""
    service = request.endpoint.service
    action = service.action(request.action)
    if action is None:
        raise InvalidAction(f"{service.kind} has no action {request.action!r}")
    declared = {argument.name: argument for argument in action.inputs}
    given: dict[str, str] = {}
    for name, text in request.args:
        if name not in declared:
            raise InvalidArgs(f"{request.action} takes no argument {name[:64]!r}")
        if name in given:
            raise InvalidArgs(f"argument {name} given twice")
        given[name] = text
    missing = [name for name in declared if name not in given]
    if missing:
        raise InvalidArgs(f"{request.action} misses {', '.join(missing)}")
    values: dict[str, OutValue] = {}
    for name, argument in declared.items():  # SCPD order: the first bad argument answers
        variable = service.state_variable(argument.state_variable)
        if variable is None:  # the device table checks this on construction
            raise ValueError(f"{service.kind}.{name}: no state variable")
        values[name] = _parse_value(variable, given[name])
    return _Args(values)


def _ipv4_literal(text: str) -> IPv4Address | None:
    """A strict dotted quad (no leading zeros, no whitespace), else None; never resolved."""
    if _DOTTED_QUAD.fullmatch(text) is None:
        return None
    try:
        return IPv4Address(text)
    except ValueError:
        return None


def _remote_host(text: str) -> IPv4Address | None:
    """NewRemoteHost: "" or "0.0.0.0" is the wildcard (None), else a unicast IPv4 literal (402)."""
    if text in ("", "0.0.0.0"):
        return None
    address = _ipv4_literal(text)
    if address is None or address.is_multicast or address == _BROADCAST:
        raise InvalidArgs("NewRemoteHost must be empty or an IPv4 unicast address")
    return address


def _internal_client(text: str) -> IPv4Address:
    """NewInternalClient: wildcard 715 (WIP-18); an IPv4 literal, a DNS name 402 (WIP-23, ST-20)."""
    if text in ("", "0.0.0.0"):
        raise WildCardNotPermittedInSrcIP("NewInternalClient is empty")
    address = _ipv4_literal(text)
    if address is None:
        raise InvalidArgs("NewInternalClient must be an IPv4 address; names are not resolved")
    return address


def _protocol(text: str) -> IPProtocol:
    """The already validated NewProtocol ("TCP"/"UDP")."""
    return IPProtocol.parse(text)


def _key(call: _Call) -> MappingKey:
    """(RemoteHost, ExternalPort, Protocol) of Get/DeleteSpecific (WIP-10)."""
    args = call.args
    return MappingKey(
        _protocol(args.text("NewProtocol")),
        args.number("NewExternalPort"),
        _remote_host(args.text("NewRemoteHost")),
    )


def _lease(requested: int, service_version: int) -> float | None:
    """v2: 0 and > 604800 become 604800 (WIP-12); v1: 0 is permanent (None) (WIP-13)."""
    if service_version >= 2:
        return float(MAX_LEASE_V2_S if requested == 0 else min(requested, MAX_LEASE_V2_S))
    return None if requested == 0 else float(requested)


def _description(text: str) -> str:
    """At most MAX_DESCRIPTION_BYTES of UTF-8 (605); control characters are the core's 402."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DESCRIPTION_BYTES:
        raise StringArgumentTooLong(f"description longer than {MAX_DESCRIPTION_BYTES} bytes")
    return text


def _mapping_request(call: _Call, *, any_port: bool) -> MappingRequest:
    """The shared in-arguments of AddPortMapping/AddAnyPortMapping (WIP-11..27)."""
    args = call.args
    external_port = args.number("NewExternalPort")
    if external_port == 0 and not any_port:
        raise WildCardNotPermittedInExtPort("NewExternalPort 0")  # WIP-19
    internal_port = args.number("NewInternalPort")
    if internal_port == 0:
        raise WildCardNotPermittedInIntPort("NewInternalPort 0")  # WIP-17 (402 for IGD:1)
    return MappingRequest(
        protocol=_protocol(args.text("NewProtocol")),
        external_port=external_port,
        internal_client=_internal_client(args.text("NewInternalClient")),
        internal_port=internal_port,
        description=_description(args.text("NewPortMappingDescription")),
        enabled=args.flag("NewEnabled"),
        remote_host=_remote_host(args.text("NewRemoteHost")),
        lease=_lease(args.number("NewLeaseDuration"), call.service_version),
    )


# ---- visibility and entries ---------------------------------------------------------------------


def _live(mapping: NatMapping, now: float) -> bool:
    """False for a lease that ran out and waits for the sweep (never reported as permanent)."""
    return mapping.expires_at is None or mapping.expires_at > now


def _visible(call: _Call, mapping: NatMapping, *, manage: bool = True) -> bool:
    """The caller's own entries (ST-23); everything with show_all_mappings (and Manage)."""
    if call.settings.show_all_mappings and manage:
        return True
    return (
        call.core.may_manage(mapping, call.client)
        or mapping.internal_client == call.request.requester
    )


def _candidates(call: _Call) -> Iterable[NatMapping]:
    """Every mapping with show_all_mappings, else only those related to the caller (cheap)."""
    if call.settings.show_all_mappings:
        return call.core.mappings()
    return call.core.mappings_related_to(call.request.requester)


_MAX_CACHED_ENUMERATIONS: Final = 256


def _enumeration(call: _Call) -> list[NatMapping]:
    """The caller's visible list, reused across one GetGeneric walk (O(1) per entry, not O(n))."""
    cache = call.settings.enumerations
    stamp = call.core.system_update_id
    cached = cache.get(call.request.requester)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    visible = _visible_mappings(call, _candidates(call))
    if len(cache) >= _MAX_CACHED_ENUMERATIONS:
        cache.clear()
    cache[call.request.requester] = (stamp, visible)
    return visible


def _visible_mappings(call: _Call, mappings: Iterable[NatMapping]) -> list[NatMapping]:
    now = call.now()
    return [m for m in mappings if _live(m, now) and _visible(call, m)]


def _entry(mapping: NatMapping, now: float) -> dict[str, OutValue]:
    """The eight entry values; LeaseDuration is the remaining lease, 0 if permanent (WIP-14)."""
    return {
        "NewRemoteHost": "" if mapping.remote_host is None else str(mapping.remote_host),
        "NewExternalPort": mapping.external_port,
        "NewProtocol": mapping.protocol.name,
        "NewInternalPort": mapping.internal_port,
        "NewInternalClient": str(mapping.internal_client),
        "NewEnabled": mapping.enabled,
        "NewPortMappingDescription": mapping.description,
        "NewLeaseDuration": min(mapping.remaining(now), _UI4_MAX),
    }


def build_port_listing(mappings: Sequence[NatMapping], now: float) -> str:
    """The PortMappingList fragment of WIP-33: p:PortMappingEntry elements, escaped by lxml."""
    nsmap: dict[str | None, str] = {"p": PORT_LISTING_NS, "xsi": _XSI_NS}
    root = etree.Element(
        f"{{{PORT_LISTING_NS}}}PortMappingList",
        {f"{{{_XSI_NS}}}schemaLocation": _PORT_LISTING_SCHEMA},
        nsmap=nsmap,  # type: ignore[arg-type]
    )
    names = (
        ("NewRemoteHost", "NewRemoteHost"),
        ("NewExternalPort", "NewExternalPort"),
        ("NewProtocol", "NewProtocol"),
        ("NewInternalPort", "NewInternalPort"),
        ("NewInternalClient", "NewInternalClient"),
        ("NewEnabled", "NewEnabled"),
        ("NewDescription", "NewPortMappingDescription"),
        ("NewLeaseTime", "NewLeaseDuration"),
    )
    for mapping in mappings:
        values = _entry(mapping, now)
        element = etree.SubElement(root, f"{{{PORT_LISTING_NS}}}PortMappingEntry")
        for tag, key in names:
            value = values[key]
            child = etree.SubElement(element, f"{{{PORT_LISTING_NS}}}{tag}")
            if isinstance(value, bool):
                child.text = "1" if value else "0"
            else:
                child.text = str(value)
    body = etree.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="utf-8"?>\n{body}'


# ---- WANIPConnection ----------------------------------------------------------------------------


@_handles("WANIPConnection", "GetExternalIPAddress")
async def _get_external_ip_address(call: _Call) -> Mapping[str, OutValue]:
    """Dotted quad, or "" when unknown or private/reserved unless allowed (WIP-02/03)."""
    address = call.core.external_address
    allowed = call.settings.allow_private_external
    text = (
        ""
        if address is None or not is_reportable_external(address, allow_private=allowed)
        else str(address)
    )
    return {"NewExternalIPAddress": text}


def _connected(call: _Call) -> bool:
    """Connected when the WAN has an address (WIP-04)."""
    return call.core.external_address is not None


@_handles("WANIPConnection", "GetStatusInfo")
async def _get_status_info(call: _Call) -> Mapping[str, OutValue]:
    """Connected/Disconnected, ERROR_NONE, seconds since the daemon started (WIP-04)."""
    if not _connected(call):
        return {
            "NewConnectionStatus": "Disconnected",
            "NewLastConnectionError": "ERROR_NONE",
            "NewUptime": 0,
        }
    uptime = int(call.now() - call.settings.started_at)
    return {
        "NewConnectionStatus": "Connected",
        "NewLastConnectionError": "ERROR_NONE",
        "NewUptime": max(0, min(uptime, _UI4_MAX)),
    }


@_handles("WANIPConnection", "GetConnectionTypeInfo")
async def _get_connection_type_info(call: _Call) -> Mapping[str, OutValue]:
    """IP_Routed, IP_Routed (WIP-05)."""
    return {"NewConnectionType": "IP_Routed", "NewPossibleConnectionTypes": "IP_Routed"}


@_handles("WANIPConnection", "SetConnectionType")
async def _set_connection_type(call: _Call) -> Mapping[str, OutValue]:
    """A valid type is 731 ReadOnly (501 for IGD:1); an invalid one was 601 already (WIP-07)."""
    raise ReadOnly("the connection type is always IP_Routed")


@_handles("WANIPConnection", "RequestConnection")
async def _request_connection(call: _Call) -> Mapping[str, OutValue]:
    """No-op when Connected: the connection is always on; 501 without a WAN address (WIP-08)."""
    if not _connected(call):
        raise ActionFailed("the WAN connection has no address")
    return {}


@_handles("WANIPConnection", "RequestTermination", "ForceTermination")
async def _terminate(call: _Call) -> Mapping[str, OutValue]:
    """Admin-only: 606 (501 for IGD:1); the WAN stays up (WIP-08, WIP-74, ST-25)."""
    raise ActionNotAuthorized("terminating the WAN connection needs the Admin role")


@_handles("WANIPConnection", "GetNATRSIPStatus")
async def _get_nat_rsip_status(call: _Call) -> Mapping[str, OutValue]:
    """RSIPAvailable 0, NATEnabled 1 (WIP-06)."""
    return {"NewRSIPAvailable": False, "NewNATEnabled": True}


@_handles("WANIPConnection", "AddPortMapping")
async def _add_port_mapping(call: _Call) -> Mapping[str, OutValue]:
    """Create or overwrite the caller's mapping; the core applies policy and WIP-11 (WIP-10..24)."""
    await call.core.add_mapping(_mapping_request(call, any_port=False), call.client)
    return {}


@_handles("WANIPConnection", "AddAnyPortMapping")
async def _add_any_port_mapping(call: _Call) -> Mapping[str, OutValue]:
    """The asked port if free, else another free port >= 1024; 0 means any (WIP-25..27)."""
    mapping = await call.core.add_any_mapping(_mapping_request(call, any_port=True), call.client)
    return {"NewReservedPort": mapping.external_port}


@_handles("WANIPConnection", "DeletePortMapping")
async def _delete_port_mapping(call: _Call) -> Mapping[str, OutValue]:
    """Exact key, the caller's own only: 714 / 606 (WIP-10, WIP-28, WIP-70, ST-23)."""
    await call.core.remove_mapping(_key(call), call.client)
    return {}


@_handles("WANIPConnection", "DeletePortMappingRange")
async def _delete_port_mapping_range(call: _Call) -> Mapping[str, OutValue]:
    """The caller's mappings in [start, end] of one protocol; Manage ignored (WIP-31, WIP-73)."""
    args = call.args
    start, end = args.number("NewStartPort"), args.number("NewEndPort")
    if start > end:
        raise InconsistentParameters("NewStartPort is above NewEndPort")
    protocol = _protocol(args.text("NewProtocol"))
    await call.core.remove_mappings_in_range(start, end, protocol, call.client)
    return {}


@_handles("WANIPConnection", "GetSpecificPortMappingEntry")
async def _get_specific_port_mapping_entry(call: _Call) -> Mapping[str, OutValue]:
    """The entry with exactly this key (WIP-10, WIP-14); another caller's is 606 (714 v1)."""
    mapping = call.core.mapping(_key(call))
    now = call.now()
    if not _live(mapping, now):
        raise NoSuchEntryInArray("the lease ran out")
    if not _visible(call, mapping):
        raise ActionNotAuthorized("the entry belongs to another client")
    entry = _entry(mapping, now)
    return {name: entry[name] for name in _DETAIL_OUTPUTS}


_DETAIL_OUTPUTS: Final = (
    "NewInternalPort",
    "NewInternalClient",
    "NewEnabled",
    "NewPortMappingDescription",
    "NewLeaseDuration",
)


@_handles("WANIPConnection", "GetGenericPortMappingEntry")
async def _get_generic_port_mapping_entry(call: _Call) -> Mapping[str, OutValue]:
    """Entry `index` of the caller-visible list in key order; past the end 713 (WIP-29/30)."""
    index = call.args.number("NewPortMappingIndex")
    visible = _enumeration(call)
    if index < len(visible) and not _live(visible[index], call.now()):
        visible = _visible_mappings(call, _candidates(call))  # a lease ran out since
    if index >= len(visible):
        raise SpecifiedArrayIndexInvalid(f"index {index} of {len(visible)} entries")
    return _entry(visible[index], call.now())


@_handles("WANIPConnection", "GetListOfPortMappings")
async def _get_list_of_port_mappings(call: _Call) -> Mapping[str, OutValue]:
    """The caller's entries in [start, end], by port, at most N (0: all); none 730 (WIP-32..34)."""
    args = call.args
    start, end = args.number("NewStartPort"), args.number("NewEndPort")
    if start > end:
        raise InconsistentParameters("NewStartPort is above NewEndPort")
    protocol = _protocol(args.text("NewProtocol"))
    manage = args.flag("NewManage")
    now = call.now()
    entries = [
        m
        for m in call.core.mappings_in_range(start, end, protocol)
        if _live(m, now) and _visible(call, m, manage=manage)
    ]
    if not entries:
        raise PortMappingNotFound("no entry of yours in the range")
    entries.sort(key=lambda m: m.external_port)
    limit = args.number("NewNumberOfPorts") or call.settings.max_listed_mappings
    entries = entries[: min(limit, call.settings.max_listed_mappings)]
    return {"NewPortListing": Cdata(build_port_listing(entries, now))}


# ---- WANCommonInterfaceConfig -------------------------------------------------------------------


def _wan_call(call: _Call, read: Callable[[WanStatus], _T]) -> _T:
    """Ask the WanStatus; a failure there is 501 and logged, never a traceback to the client."""
    try:
        return read(call.settings.wan)
    except Exception as exc:
        log.error("WAN status failed for %s: %s", call.request.action, exc)
        raise ActionFailed("the WAN status is unavailable") from exc


def _ui4(value: int) -> int:
    """A ui4 rate: clamped to 2**32 - 1 rather than wrapped (MUD-11)."""
    return max(0, min(int(value), _UI4_MAX))


@_handles("WANCommonInterfaceConfig", "GetCommonLinkProperties")
async def _get_common_link_properties(call: _Call) -> Mapping[str, OutValue]:
    """Ethernet, bit rates (0 unknown, WCIC-06), Up/Down from the link (WCIC-01)."""
    upstream, downstream = _wan_call(call, lambda wan: wan.max_bit_rates())
    link_up = _wan_call(call, lambda wan: wan.link_up())
    return {
        "NewWANAccessType": "Ethernet",
        "NewLayer1UpstreamMaxBitRate": _ui4(upstream),
        "NewLayer1DownstreamMaxBitRate": _ui4(downstream),
        "NewPhysicalLinkStatus": "Up" if link_up else "Down",
    }


_COUNTER_INDEX: Final = {
    "GetTotalBytesSent": 0,
    "GetTotalBytesReceived": 1,
    "GetTotalPacketsSent": 2,
    "GetTotalPacketsReceived": 3,
}


@_handles("WANCommonInterfaceConfig", *_COUNTER_INDEX)
async def _get_total(call: _Call) -> Mapping[str, OutValue]:
    """A WAN counter modulo 2**32, never a 64-bit number (WCIC-02/03)."""
    counters = _wan_call(call, lambda wan: wan.counters())
    action = call.request.action
    value = int(counters[_COUNTER_INDEX[action]]) % _UI4_MOD
    return {"New" + action.removeprefix("Get"): value}


# ---- Layer3Forwarding ---------------------------------------------------------------------------


@_handles("Layer3Forwarding", "GetDefaultConnectionService")
async def _get_default_connection_service(call: _Call) -> Mapping[str, OutValue]:
    """uuid:C:WANConnectionDevice:v,urn:upnp-org:serviceId:WANIPConn1 (L3F-01)."""
    return {"NewDefaultConnectionService": call.request.root.default_connection_service()}


@_handles("Layer3Forwarding", "SetDefaultConnectionService")
async def _set_default_connection_service(call: _Call) -> Mapping[str, OutValue]:
    """Ours: no-op; unknown device 720, unknown service 721, not a connection 723 (L3F-02)."""
    root = call.request.root
    device_part, comma, service_id = call.args.text("NewDefaultConnectionService").partition(",")
    if not comma:
        raise InvalidArgs("NewDefaultConnectionService is not '<device>,<serviceId>'")
    match = _DEVICE_PART.fullmatch(device_part)
    try:
        udn = uuid.UUID(match["uuid"]) if match else None
    except ValueError:
        udn = None
    if udn is None or udn not in root.udns.values():
        raise InvalidDeviceUUID("no such device")
    endpoint = next(
        (e for e in root.services() if e.udn == udn and e.service.service_id == service_id), None
    )
    if endpoint is None:
        raise InvalidServiceID("no such service on that device")
    if endpoint.service.service_id != SERVICE_ID_WANIPC:
        raise InvalidConnServiceSelection("not a connection service")
    return {}


# ---- dispatch -----------------------------------------------------------------------------------

HANDLED_ACTIONS: Final = frozenset(_HANDLERS)
"""(service kind, action name) of every action with a handler: all of IGD:1 and IGD:2."""


def _format_outputs(
    request: ActionRequest, values: Mapping[str, OutValue]
) -> tuple[tuple[str, str], ...]:
    """Out-arguments in SCPD order, formatted by data type (CTRL-05, CTRL-11)."""
    service = request.endpoint.service
    action = service.action(request.action)
    if action is None:
        raise ValueError(f"{request.action} vanished from {service.kind}")
    outputs = action.outputs
    if set(values) != {argument.name for argument in outputs}:
        raise ValueError(f"{request.action} produced {sorted(values)}")
    result: list[tuple[str, str]] = []
    for argument in outputs:
        variable = service.state_variable(argument.state_variable)
        if variable is None:
            raise ValueError(f"{service.kind}.{argument.name}: no state variable")
        value = values[argument.name]
        text = format_arg(variable.data_type, value)
        result.append((argument.name, Cdata(text) if isinstance(value, Cdata) else text))
    return tuple(result)


async def run_action(
    settings: ControlSettings, request: ActionRequest
) -> tuple[tuple[str, str], ...]:
    """Out-arguments in SCPD order, or the UPnPError to answer (CTRL-05..08); bugs propagate."""
    service = request.endpoint.service
    try:
        args = _parse_inputs(request)
        handler = _HANDLERS.get((service.kind, request.action))
        if handler is None:  # the table grew an action without a handler: a bug, still 401
            raise InvalidAction(f"no handler for {service.kind}.{request.action}")
        call = _Call(settings, request, args, Client(Origin.UPNP, request.requester))
        values = await handler(call)
    except (NatError, UPnPError) as exc:
        raise upnp_error_for(exc, version=request.version, action=request.action) from exc
    return _format_outputs(request, values)


# ---- QueryStateVariable (CTRL-13) ---------------------------------------------------------------


async def query_state_variable(settings: ControlSettings, request: ActionRequest) -> str:
    """DA1.0 QueryStateVariable for the service's evented variables; others 404 (CTRL-13)."""
    if request.action != QUERY_STATE_VARIABLE:
        raise InvalidAction(f"{CONTROL_NS} has no action {request.action!r}")
    names = [name for name, _ in request.args]
    if names != ["varName"]:
        raise InvalidArgs("QueryStateVariable takes exactly varName")
    name = request.args[0][1]
    service = request.endpoint.service
    variable = service.state_variable(name)
    if variable is None or not variable.send_events:
        raise InvalidVar("no such evented variable")
    call = _Call(settings, request, _Args({}), Client(Origin.UPNP, request.requester))
    try:
        value = await _variable_value(call, service.kind, name)
    except NatError as exc:
        raise upnp_error_for(exc, version=request.version, action=QUERY_STATE_VARIABLE) from exc
    return format_arg(variable.data_type, value)


async def _variable_value(call: _Call, kind: str, name: str) -> OutValue:
    if kind == "WANIPConnection":
        if name == "ExternalIPAddress":
            return (await _get_external_ip_address(call))["NewExternalIPAddress"]
        if name == "ConnectionStatus":
            return (await _get_status_info(call))["NewConnectionStatus"]
        if name == "PossibleConnectionTypes":
            return "IP_Routed"
        if name == "PortMappingNumberOfEntries":
            return min(len(_visible_mappings(call, _candidates(call))), 2**16 - 1)
        if name == "SystemUpdateID":
            return call.core.system_update_id % _UI4_MOD
    if kind == "WANCommonInterfaceConfig" and name == "PhysicalLinkStatus":
        return "Up" if _wan_call(call, lambda wan: wan.link_up()) else "Down"
    if kind == "Layer3Forwarding" and name == "DefaultConnectionService":
        return call.request.root.default_connection_service()
    raise InvalidVar("no value for this variable")


# ---- response bytes -----------------------------------------------------------------------------

_CDATA_PLACEHOLDER: Final = "igd-cdata-{index}"


def build_action_response(
    service_type: str, action: str, outputs: Sequence[tuple[str, str]]
) -> bytes:
    """`build_response`, with `Cdata` values in a CDATA section as miniupnpd sends them (WIP-33)."""
    # miniupnpc's parser decodes no entities but reads CDATA; lxml output never holds "]]>".
    plain: list[tuple[str, str]] = []
    raw: dict[str, str] = {}
    for index, (name, value) in enumerate(outputs):
        if isinstance(value, Cdata):
            if "]]>" in value:
                raise ValueError("a CDATA value must not contain ']]>'")
            placeholder = _CDATA_PLACEHOLDER.format(index=index)
            raw[f"<{name}>{placeholder}</{name}>"] = f"<{name}><![CDATA[{value}]]></{name}>"
            plain.append((name, placeholder))
        else:
            plain.append((name, value))
    body = build_response(service_type, action, plain)
    if not raw:
        return body
    text = body.decode("utf-8")
    for marker, replacement in raw.items():
        if text.count(marker) != 1:
            raise ValueError("CDATA placeholder not found exactly once")
        text = text.replace(marker, replacement)
    return text.encode("utf-8")
