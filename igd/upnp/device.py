"""The IGD device table: devices, services, actions, arguments and state variables as data.

One declarative table (architecture.md rule 5.6) drives the SSDP NT/USN set, the root description,
the SCPDs and SOAP dispatch. ``igd_device_tree(v)`` is the IGD:v tree of specs.md section 2.1;
``RootDevice`` binds a tree to its UDNs and URL paths.

Pure module: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import functools
import re
import types
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DATA_TYPES",
    "GATEWAY_PROFILES",
    "SERVICE_ID_L3F",
    "SERVICE_ID_WANCIC",
    "SERVICE_ID_WANIPC",
    "Action",
    "AdvertisedType",
    "Advertisement",
    "Argument",
    "Device",
    "RootDevice",
    "Service",
    "ServiceEndpoint",
    "StateVariable",
    "device_urn",
    "format_udn",
    "igd_device_tree",
    "service_urn",
]

URN_DOMAIN = "schemas-upnp-org"
"""Domain of every standard device and service type (DA1.1 deviceType/serviceType, IGD-01)."""

GATEWAY_PROFILES: tuple[int, ...] = (1, 2)
"""InternetGatewayDevice versions this table can describe (IGD-01; 4b: both served at once)."""

SERVICE_ID_L3F = "urn:upnp-org:serviceId:L3Forwarding1"
"""serviceId of Layer3Forwarding (IGD-02)."""
SERVICE_ID_WANCIC = "urn:upnp-org:serviceId:WANCommonIFC1"
"""serviceId of WANCommonInterfaceConfig (IGD-02)."""
SERVICE_ID_WANIPC = "urn:upnp-org:serviceId:WANIPConn1"
"""serviceId of WANIPConnection, :1 and :2 alike (IGD-02)."""

DATA_TYPES = frozenset({"string", "boolean", "ui1", "ui2", "ui4", "i1", "i2", "i4"})
"""UPnP data types this table may use (DA1.1 section 2.5); the integer ones take a range."""

_INTEGER_BOUNDS: Mapping[str, tuple[int, int]] = types.MappingProxyType(
    {
        "ui1": (0, 0xFF),
        "ui2": (0, 0xFFFF),
        "ui4": (0, 0xFFFF_FFFF),
        "i1": (-0x80, 0x7F),
        "i2": (-0x8000, 0x7FFF),
        "i4": (-0x8000_0000, 0x7FFF_FFFF),
    }
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,63}")
_ARG_TYPE_PREFIX = "A_ARG_TYPE_"

Direction = Literal["in", "out"]
Category = Literal["device", "service"]


def device_urn(kind: str, version: int) -> str:
    """``urn:schemas-upnp-org:device:{kind}:{version}`` (IGD-01)."""
    return f"urn:{URN_DOMAIN}:device:{kind}:{version}"


def service_urn(kind: str, version: int) -> str:
    """``urn:schemas-upnp-org:service:{kind}:{version}`` (WIP-01)."""
    return f"urn:{URN_DOMAIN}:service:{kind}:{version}"


def format_udn(udn: uuid.UUID) -> str:
    """``uuid:`` + the 8-4-4-4-12 lowercase form, as in ``<UDN>`` and USN prefixes (GEN-08)."""
    return f"uuid:{udn}"


def _check_name(what: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid {what} name {name!r}")


def _check_kind(what: str, kind: str, version: int) -> None:
    if not _KIND.fullmatch(kind):
        raise ValueError(f"invalid {what} kind {kind!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{what} {kind}: version must be an integer >= 1, not {version!r}")


@dataclass(frozen=True, slots=True)
class StateVariable:
    """One serviceStateTable entry; ``A_ARG_TYPE_*`` variables are never evented (DESC-12)."""

    name: str
    data_type: str
    send_events: bool = False
    allowed_values: tuple[str, ...] = ()
    allowed_range: tuple[int, int] | None = None
    default: str | None = None

    def __post_init__(self) -> None:
        _check_name("state variable", self.name)
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"{self.name}: unsupported data type {self.data_type!r}")
        if self.send_events and self.name.startswith(_ARG_TYPE_PREFIX):
            raise ValueError(f"{self.name}: A_ARG_TYPE_ variables are never evented (DESC-12)")
        if self.allowed_values:
            if self.data_type != "string":
                raise ValueError(f"{self.name}: allowedValueList is for strings only (DESC-10)")
            if len(set(self.allowed_values)) != len(self.allowed_values):
                raise ValueError(f"{self.name}: duplicate allowed values")
            if self.default is not None and self.default not in self.allowed_values:
                raise ValueError(f"{self.name}: default {self.default!r} is not an allowed value")
        if self.allowed_range is not None:
            bounds = _INTEGER_BOUNDS.get(self.data_type)
            if bounds is None:
                raise ValueError(f"{self.name}: allowedValueRange needs an integer type")
            low, high = self.allowed_range
            if not bounds[0] <= low <= high <= bounds[1]:
                raise ValueError(f"{self.name}: range {self.allowed_range} outside {bounds}")
            if self.allowed_values:
                raise ValueError(f"{self.name}: allowedValueList and allowedValueRange exclude")

    @property
    def is_integer(self) -> bool:
        """True for the ui*/i* types."""
        return self.data_type in _INTEGER_BOUNDS

    @property
    def bounds(self) -> tuple[int, int] | None:
        """Inclusive integer bounds: the allowedValueRange, else the data type's own range."""
        if self.allowed_range is not None:
            return self.allowed_range
        return _INTEGER_BOUNDS.get(self.data_type)


@dataclass(frozen=True, slots=True)
class Argument:
    """One action argument and the state variable that gives its type (DESC-10)."""

    name: str
    direction: Direction
    state_variable: str

    def __post_init__(self) -> None:
        _check_name("argument", self.name)
        _check_name("state variable", self.state_variable)
        if self.direction not in ("in", "out"):
            raise ValueError(f"{self.name}: direction must be 'in' or 'out'")


@dataclass(frozen=True, slots=True)
class Action:
    """One action; all ``in`` arguments precede all ``out`` arguments (DESC-11)."""

    name: str
    arguments: tuple[Argument, ...] = ()

    def __post_init__(self) -> None:
        _check_name("action", self.name)
        names = [argument.name for argument in self.arguments]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate argument names")
        seen_out = False
        for argument in self.arguments:
            if argument.direction == "out":
                seen_out = True
            elif seen_out:
                raise ValueError(
                    f"{self.name}: 'in' argument {argument.name} after 'out' (DESC-11)"
                )

    @property
    def inputs(self) -> tuple[Argument, ...]:
        """The ``in`` arguments, in SCPD order (the order a SOAP request must use)."""
        return tuple(argument for argument in self.arguments if argument.direction == "in")

    @property
    def outputs(self) -> tuple[Argument, ...]:
        """The ``out`` arguments, in SCPD order (the order a SOAP response must use, CTRL-05)."""
        return tuple(argument for argument in self.arguments if argument.direction == "out")


@dataclass(frozen=True, slots=True)
class Service:
    """One service type: actions and state table; each relatedStateVariable exists (DESC-11)."""

    kind: str
    version: int
    service_id: str
    actions: tuple[Action, ...]
    state_variables: tuple[StateVariable, ...]

    def __post_init__(self) -> None:
        _check_kind("service", self.kind, self.version)
        if not self.service_id.startswith("urn:upnp-org:serviceId:"):
            raise ValueError(f"{self.kind}: standard serviceId expected (DESC-07)")
        action_names = [action.name for action in self.actions]
        if len(set(action_names)) != len(action_names):
            raise ValueError(f"{self.kind}: duplicate action names")
        variable_names = {variable.name for variable in self.state_variables}
        if len(variable_names) != len(self.state_variables):
            raise ValueError(f"{self.kind}: duplicate state variable names")
        for action in self.actions:
            for argument in action.arguments:
                if argument.state_variable not in variable_names:
                    raise ValueError(
                        f"{self.kind}.{action.name}.{argument.name}: no state variable "
                        f"{argument.state_variable!r} (DESC-11)"
                    )

    @property
    def service_type(self) -> str:
        """``urn:schemas-upnp-org:service:{kind}:{version}``."""
        return service_urn(self.kind, self.version)

    @property
    def evented_variables(self) -> tuple[StateVariable, ...]:
        """Variables with sendEvents="yes", in table order: the initial GENA event (EVT-08)."""
        return tuple(variable for variable in self.state_variables if variable.send_events)

    def action(self, name: str) -> Action | None:
        """The action with exactly this name, or None (CTRL-08: unknown here means 401)."""
        for action in self.actions:
            if action.name == name:
                return action
        return None

    def state_variable(self, name: str) -> StateVariable | None:
        """The state variable with exactly this name, or None."""
        for variable in self.state_variables:
            if variable.name == name:
                return variable
        return None


@dataclass(frozen=True, slots=True)
class Device:
    """One device type with its services and embedded devices."""

    kind: str
    version: int
    services: tuple[Service, ...] = ()
    devices: tuple[Device, ...] = ()

    def __post_init__(self) -> None:
        _check_kind("device", self.kind, self.version)
        service_types = [service.service_type for service in self.services]
        if len(set(service_types)) != len(service_types):
            raise ValueError(f"{self.kind}: a service type listed twice")

    @property
    def device_type(self) -> str:
        """``urn:schemas-upnp-org:device:{kind}:{version}``."""
        return device_urn(self.kind, self.version)

    def walk(self) -> Iterator[Device]:
        """This device, then every embedded device, depth first in description order."""
        yield self
        for device in self.devices:
            yield from device.walk()


def _wan_ip_connection(version: int) -> Service:
    """WANIPConnection:v, R actions (no disconnect timers) and variables of specs 2.2.1/2.2.2."""
    v2 = version >= 2
    connection_types = ("Unconfigured", "IP_Routed", "IP_Bridged")
    variables = [
        StateVariable(
            "ConnectionType", "string", allowed_values=connection_types, default="IP_Routed"
        ),
        # A CSV list in general; this gateway only ever reports the single value IP_Routed.
        StateVariable(
            "PossibleConnectionTypes", "string", send_events=True, allowed_values=connection_types
        ),
        StateVariable(
            "ConnectionStatus",
            "string",
            send_events=True,
            allowed_values=(
                "Unconfigured",
                "Connecting",
                "Connected",
                "PendingDisconnect",
                "Disconnecting",
                "Disconnected",
            ),
        ),
        StateVariable("Uptime", "ui4"),
        # Only ERROR_NONE is required, and it is the only value this gateway reports (WIP-04).
        StateVariable(
            "LastConnectionError", "string", allowed_values=("ERROR_NONE",), default="ERROR_NONE"
        ),
        StateVariable("RSIPAvailable", "boolean", default="0"),  # WIP-06
        StateVariable("NATEnabled", "boolean", default="1"),  # WIP-06
        StateVariable("ExternalIPAddress", "string", send_events=True),  # WIP-60
        StateVariable("PortMappingNumberOfEntries", "ui2", send_events=True),  # WIP-60
        StateVariable("PortMappingEnabled", "boolean"),
        StateVariable(
            "PortMappingLeaseDuration",
            "ui4",
            allowed_range=(0, 604800) if v2 else None,  # WIP-12
            default="3600" if v2 else None,
        ),
        StateVariable("RemoteHost", "string"),
        StateVariable("ExternalPort", "ui2"),
        StateVariable("InternalPort", "ui2", allowed_range=(1, 65535) if v2 else None),
        StateVariable("PortMappingProtocol", "string", allowed_values=("TCP", "UDP")),
        StateVariable("InternalClient", "string"),
        StateVariable("PortMappingDescription", "string"),
    ]
    if v2:
        variables += [
            StateVariable("SystemUpdateID", "ui4", send_events=True),  # WIP-60, WIP-62
            StateVariable("A_ARG_TYPE_Manage", "boolean"),
            StateVariable("A_ARG_TYPE_PortListing", "string"),
        ]

    def arg_in(name: str, variable: str) -> Argument:
        return Argument(name, "in", variable)

    def arg_out(name: str, variable: str) -> Argument:
        return Argument(name, "out", variable)

    mapping_in = (
        arg_in("NewRemoteHost", "RemoteHost"),
        arg_in("NewExternalPort", "ExternalPort"),
        arg_in("NewProtocol", "PortMappingProtocol"),
    )
    mapping_details = (
        ("NewInternalPort", "InternalPort"),
        ("NewInternalClient", "InternalClient"),
        ("NewEnabled", "PortMappingEnabled"),
        ("NewPortMappingDescription", "PortMappingDescription"),
        ("NewLeaseDuration", "PortMappingLeaseDuration"),
    )
    add_in = mapping_in + tuple(arg_in(name, variable) for name, variable in mapping_details)
    details_out = tuple(arg_out(name, variable) for name, variable in mapping_details)
    actions = [
        Action("SetConnectionType", (arg_in("NewConnectionType", "ConnectionType"),)),
        Action(
            "GetConnectionTypeInfo",
            (
                arg_out("NewConnectionType", "ConnectionType"),
                arg_out("NewPossibleConnectionTypes", "PossibleConnectionTypes"),
            ),
        ),
        Action("RequestConnection"),
        Action("RequestTermination"),
        Action("ForceTermination"),
        Action(
            "GetStatusInfo",
            (
                arg_out("NewConnectionStatus", "ConnectionStatus"),
                arg_out("NewLastConnectionError", "LastConnectionError"),
                arg_out("NewUptime", "Uptime"),
            ),
        ),
        Action(
            "GetNATRSIPStatus",
            (
                arg_out("NewRSIPAvailable", "RSIPAvailable"),
                arg_out("NewNATEnabled", "NATEnabled"),
            ),
        ),
        Action(
            "GetGenericPortMappingEntry",
            (
                arg_in("NewPortMappingIndex", "PortMappingNumberOfEntries"),
                arg_out("NewRemoteHost", "RemoteHost"),
                arg_out("NewExternalPort", "ExternalPort"),
                arg_out("NewProtocol", "PortMappingProtocol"),
                *details_out,
            ),
        ),
        Action("GetSpecificPortMappingEntry", mapping_in + details_out),
        Action("AddPortMapping", add_in),
        Action("DeletePortMapping", mapping_in),
        Action("GetExternalIPAddress", (arg_out("NewExternalIPAddress", "ExternalIPAddress"),)),
    ]
    if v2:
        range_in = (
            arg_in("NewStartPort", "ExternalPort"),
            arg_in("NewEndPort", "ExternalPort"),
            arg_in("NewProtocol", "PortMappingProtocol"),
            arg_in("NewManage", "A_ARG_TYPE_Manage"),
        )
        actions += [
            Action("AddAnyPortMapping", (*add_in, arg_out("NewReservedPort", "ExternalPort"))),
            Action("DeletePortMappingRange", range_in),
            Action(
                "GetListOfPortMappings",
                (
                    *range_in,
                    arg_in("NewNumberOfPorts", "PortMappingNumberOfEntries"),
                    arg_out("NewPortListing", "A_ARG_TYPE_PortListing"),
                ),
            ),
        ]
    return Service("WANIPConnection", version, SERVICE_ID_WANIPC, tuple(actions), tuple(variables))


def _wan_common_interface_config() -> Service:
    """WANCommonInterfaceConfig:1 with GetCommonLinkProperties and the counters (WCIC-01/02/05)."""
    counters = ("TotalBytesSent", "TotalBytesReceived", "TotalPacketsSent", "TotalPacketsReceived")
    variables = (
        StateVariable(
            "WANAccessType", "string", allowed_values=("DSL", "POTS", "Cable", "Ethernet")
        ),
        StateVariable("Layer1UpstreamMaxBitRate", "ui4"),
        StateVariable("Layer1DownstreamMaxBitRate", "ui4"),
        StateVariable(
            "PhysicalLinkStatus",
            "string",
            send_events=True,  # WCIC-05
            allowed_values=("Up", "Down", "Initializing", "Unavailable"),
        ),
        *(StateVariable(counter, "ui4") for counter in counters),  # WCIC-03: wrap at 2**32
    )
    actions = (
        Action(
            "GetCommonLinkProperties",
            tuple(
                Argument(f"New{variable.name}", "out", variable.name) for variable in variables[:4]
            ),
        ),
        *(
            Action(f"Get{counter}", (Argument(f"New{counter}", "out", counter),))
            for counter in counters
        ),
    )
    return Service("WANCommonInterfaceConfig", 1, SERVICE_ID_WANCIC, actions, variables)


def _layer3_forwarding() -> Service:
    """Layer3Forwarding:1: Set/GetDefaultConnectionService, the variable evented (L3F-01..03)."""
    variable = "DefaultConnectionService"
    return Service(
        "Layer3Forwarding",
        1,
        SERVICE_ID_L3F,
        (
            Action("SetDefaultConnectionService", (Argument(f"New{variable}", "in", variable),)),
            Action("GetDefaultConnectionService", (Argument(f"New{variable}", "out", variable),)),
        ),
        (StateVariable(variable, "string", send_events=True),),
    )


@functools.cache
def igd_device_tree(version: int) -> Device:
    """The IGD:v tree (IGD-01/03): only what exists, no PPP, LAN or FW6 (IGD-04, DESC-16)."""
    if version not in GATEWAY_PROFILES:
        raise ValueError(f"InternetGatewayDevice version must be one of {GATEWAY_PROFILES}")
    connection_device = Device("WANConnectionDevice", version, (_wan_ip_connection(version),))
    wan_device = Device(
        "WANDevice", version, (_wan_common_interface_config(),), (connection_device,)
    )
    return Device("InternetGatewayDevice", version, (_layer3_forwarding(),), (wan_device,))


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One SSDP advertisement-set member: the NT (search ST) and USN pair (SSDP-03)."""

    nt: str
    usn: str


@dataclass(frozen=True, slots=True)
class AdvertisedType:
    """A device or service type a root implements, at ``version``, held by the device ``udn``."""

    category: Category
    kind: str
    version: int
    udn: uuid.UUID

    def urn(self, version: int | None = None) -> str:
        """The type URN at ``version`` (default: implemented); lower versions allowed (SSDP-40)."""
        return self._urn(self._version(version))

    def advertisement(self, version: int | None = None) -> Advertisement:
        """NT/USN at ``version``: a search for a lower version echoes that version (SSDP-40)."""
        urn = self._urn(self._version(version))
        return Advertisement(urn, f"{format_udn(self.udn)}::{urn}")

    def _version(self, version: int | None) -> int:
        if version is None:
            return self.version
        if isinstance(version, bool) or not 1 <= version <= self.version:
            raise ValueError(f"{self.kind}: version {version!r} not in 1..{self.version} (SSDP-41)")
        return version

    def _urn(self, version: int) -> str:
        if self.category == "device":
            return device_urn(self.kind, version)
        return service_urn(self.kind, version)


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """A service as served by one root: the device holding it, that device's UDN, its URL paths."""

    device: Device
    udn: uuid.UUID
    service: Service
    scpd_path: str
    control_path: str
    event_path: str


@dataclass(frozen=True, slots=True)
class RootDevice:
    """One advertised root: a device tree, a UDN per device kind, the prefix of its URL paths."""

    tree: Device
    udns: Mapping[str, uuid.UUID] = field(hash=False)
    url_prefix: str

    def __post_init__(self) -> None:
        if self.url_prefix:
            segments = self.url_prefix.split("/")
            if segments[0] != "" or not all(
                _PREFIX_SEGMENT.fullmatch(segment) and segment not in (".", "..")
                for segment in segments[1:]
            ):
                raise ValueError(
                    f"url_prefix must be '' or '/segment[/...]', not {self.url_prefix!r}"
                )
        kinds = [device.kind for device in self.tree.walk()]
        if len(set(kinds)) != len(kinds):
            raise ValueError("device kinds must be unique within a root (they key the UDNs)")
        if set(self.udns) != set(kinds):
            raise ValueError(f"udns must have exactly the keys {sorted(kinds)}")
        if len(set(self.udns.values())) != len(kinds):
            raise ValueError("every device needs its own UDN")
        service_kinds = [service.kind for device in self.tree.walk() for service in device.services]
        if len(set(service_kinds)) != len(service_kinds):
            raise ValueError("service kinds must be unique within a root (they name the URL paths)")
        object.__setattr__(self, "udns", types.MappingProxyType(dict(self.udns)))

    @classmethod
    def create(cls, version: int, base_uuid: uuid.UUID, url_prefix: str) -> RootDevice:
        """The IGD:v root; UDN of each device = uuid5(base_uuid, "{v}/{kind}"), stable (GEN-08)."""
        tree = igd_device_tree(version)
        udns = {
            device.kind: uuid.uuid5(base_uuid, f"{version}/{device.kind}") for device in tree.walk()
        }
        return cls(tree, udns, url_prefix)

    @property
    def version(self) -> int:
        """Version of the root device type (the IGD profile)."""
        return self.tree.version

    @property
    def udn(self) -> uuid.UUID:
        """UDN of the root device (uuid:R of specs 1.2)."""
        return self.udns[self.tree.kind]

    @property
    def description_path(self) -> str:
        """Absolute path of the root description: the LOCATION path (DESC-01)."""
        return f"{self.url_prefix}/rootDesc.xml"

    def udn_of(self, device: Device) -> uuid.UUID:
        """UDN of a device of this tree."""
        return self.udns[device.kind]

    def services(self) -> tuple[ServiceEndpoint, ...]:
        """Every service with its holder and paths, in description order (paths unique, DESC-08)."""
        return tuple(
            ServiceEndpoint(
                device=device,
                udn=self.udns[device.kind],
                service=service,
                scpd_path=f"{self.url_prefix}/{service.kind}/scpd.xml",
                control_path=f"{self.url_prefix}/{service.kind}/control",
                event_path=f"{self.url_prefix}/{service.kind}/event",
            )
            for device in self.tree.walk()
            for service in device.services
        )

    def paths(self) -> tuple[str, ...]:
        """Every path this root serves: description, then SCPD/control/event per service."""
        result = [self.description_path]
        for endpoint in self.services():
            result += [endpoint.scpd_path, endpoint.control_path, endpoint.event_path]
        return tuple(result)

    def endpoint_for_control(self, path: str) -> ServiceEndpoint | None:
        """The service whose controlURL is exactly ``path`` (CTRL-08), else None."""
        return next((e for e in self.services() if e.control_path == path), None)

    def endpoint_for_event(self, path: str) -> ServiceEndpoint | None:
        """The service whose eventSubURL is exactly ``path`` (EVT-14), else None."""
        return next((e for e in self.services() if e.event_path == path), None)

    def endpoint_for_scpd(self, path: str) -> ServiceEndpoint | None:
        """The service whose SCPDURL is exactly ``path`` (DESC-10), else None."""
        return next((e for e in self.services() if e.scpd_path == path), None)

    def endpoint_for_service_type(self, service_type: str) -> ServiceEndpoint | None:
        """The service of exactly this type URN (implemented version only), else None."""
        return next((e for e in self.services() if e.service.service_type == service_type), None)

    def types(self) -> tuple[AdvertisedType, ...]:
        """Every device type (walk order), then every service type, with the holder's UDN."""
        devices = tuple(
            AdvertisedType("device", device.kind, device.version, self.udns[device.kind])
            for device in self.tree.walk()
        )
        services = tuple(
            AdvertisedType("service", e.service.kind, e.service.version, e.udn)
            for e in self.services()
        )
        return devices + services

    def advertisements(self) -> tuple[Advertisement, ...]:
        """The SSDP set, 3 + 2d + k members in the order of specs 1.2's table (SSDP-02/03/04)."""
        root_udn = format_udn(self.udn)
        result = [Advertisement("upnp:rootdevice", f"{root_udn}::upnp:rootdevice")]
        for entry in self.types():
            if entry.category == "device":
                udn = format_udn(entry.udn)
                result.append(Advertisement(udn, udn))
            result.append(entry.advertisement())
        return tuple(result)

    def default_connection_service(self) -> str:
        """DefaultConnectionService value: "uuid:C:WANConnectionDevice:v,<serviceId>" (L3F-01)."""
        for endpoint in self.services():
            if endpoint.service.kind == "WANIPConnection":
                return (
                    f"{format_udn(endpoint.udn)}:{endpoint.device.kind}:{endpoint.device.version},"
                    f"{endpoint.service.service_id}"
                )
        raise LookupError("this root has no WANIPConnection service")
