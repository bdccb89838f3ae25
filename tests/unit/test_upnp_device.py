"""The IGD device table and RootDevice: specs.md 1.2 (SSDP set), 1.4 (DESC-*) and 2.1-2.4."""

from __future__ import annotations

import uuid

import pytest

from igd.upnp.device import (
    GATEWAY_PROFILES,
    SERVICE_ID_L3F,
    SERVICE_ID_WANCIC,
    SERVICE_ID_WANIPC,
    Action,
    AdvertisedType,
    Advertisement,
    Argument,
    Device,
    RootDevice,
    Service,
    StateVariable,
    igd_device_tree,
)

BASE = uuid.UUID("5f0c7d1e-8a4b-4c2d-9e3f-a1b2c3d4e5f6")
URN = "urn:schemas-upnp-org"

V1_ACTIONS = (
    "SetConnectionType",
    "GetConnectionTypeInfo",
    "RequestConnection",
    "RequestTermination",
    "ForceTermination",
    "GetStatusInfo",
    "GetNATRSIPStatus",
    "GetGenericPortMappingEntry",
    "GetSpecificPortMappingEntry",
    "AddPortMapping",
    "DeletePortMapping",
    "GetExternalIPAddress",
)
V2_ONLY_ACTIONS = ("AddAnyPortMapping", "DeletePortMappingRange", "GetListOfPortMappings")
ADD_ARGUMENTS = (
    ("NewRemoteHost", "RemoteHost"),
    ("NewExternalPort", "ExternalPort"),
    ("NewProtocol", "PortMappingProtocol"),
    ("NewInternalPort", "InternalPort"),
    ("NewInternalClient", "InternalClient"),
    ("NewEnabled", "PortMappingEnabled"),
    ("NewPortMappingDescription", "PortMappingDescription"),
    ("NewLeaseDuration", "PortMappingLeaseDuration"),
)


def all_services(version: int) -> list[Service]:
    return [service for device in igd_device_tree(version).walk() for service in device.services]


def wan_ip(version: int) -> Service:
    (service,) = [s for s in all_services(version) if s.kind == "WANIPConnection"]
    return service


def signature(action: Action | None) -> list[tuple[str, str, str]]:
    assert action is not None
    return [(a.name, a.direction, a.state_variable) for a in action.arguments]


ALL_SERVICES = [
    pytest.param(s, id=f"{s.kind}:{s.version}") for v in (1, 2) for s in all_services(v)
]


# ---- the table ----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_every_related_state_variable_exists(service: Service) -> None:
    """DESC-11: every argument's relatedStateVariable is in the serviceStateTable."""
    for action in service.actions:
        for argument in action.arguments:
            assert service.state_variable(argument.state_variable) is not None, argument


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_in_arguments_precede_out_arguments(service: Service) -> None:
    """DESC-11: in every argumentList all 'in' arguments come before all 'out' arguments."""
    for action in service.actions:
        directions = [argument.direction for argument in action.arguments]
        assert directions == sorted(directions, key=lambda d: d == "out"), action.name
        assert action.inputs + action.outputs == action.arguments


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_arg_type_variables_are_never_evented(service: Service) -> None:
    """DESC-12: A_ARG_TYPE_* variables have sendEvents="no"."""
    for variable in service.state_variables:
        if variable.name.startswith("A_ARG_TYPE_"):
            assert not variable.send_events


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_every_state_variable_is_used_or_evented(service: Service) -> None:
    """DESC-16: the state table describes only what exists: each variable is an argument's type
    or is evented."""
    used = {a.state_variable for action in service.actions for a in action.arguments}
    for variable in service.state_variables:
        assert variable.name in used or variable.send_events, variable.name


def test_v1_has_exactly_the_v1_actions() -> None:
    """WIP-01, DESC-16: WANIPConnection:1 lists no IGD2-only action and no optional timer."""
    assert [action.name for action in wan_ip(1).actions] == list(V1_ACTIONS)
    for name in V2_ONLY_ACTIONS:
        assert wan_ip(1).action(name) is None


def test_v2_adds_the_three_igd2_actions() -> None:
    """WIP-01: WANIPConnection:2 = the v1 actions + AddAny, DeleteRange, GetListOf."""
    assert [action.name for action in wan_ip(2).actions] == [*V1_ACTIONS, *V2_ONLY_ACTIONS]


@pytest.mark.parametrize("version", GATEWAY_PROFILES)
def test_no_optional_disconnect_timer_actions(version: int) -> None:
    """Specs 2.2.1 PROJECT: the optional connection-timer actions are absent (so 401)."""
    for name in ("SetAutoDisconnectTime", "GetIdleDisconnectTime", "SetWarnDisconnectDelay"):
        assert wan_ip(version).action(name) is None
    for name in ("AutoDisconnectTime", "IdleDisconnectTime", "WarnDisconnectDelay"):
        assert wan_ip(version).state_variable(name) is None


@pytest.mark.parametrize("version", GATEWAY_PROFILES)
def test_wanipconnection_argument_names_and_order(version: int) -> None:
    """Specs 2.2.1: argument names, order and relatedStateVariable as in the service template."""
    service = wan_ip(version)
    add = [(name, "in", variable) for name, variable in ADD_ARGUMENTS]
    details = [(name, "out", variable) for name, variable in ADD_ARGUMENTS[3:]]
    assert signature(service.action("AddPortMapping")) == add
    assert signature(service.action("DeletePortMapping")) == add[:3]
    assert signature(service.action("GetSpecificPortMappingEntry")) == add[:3] + details
    assert signature(service.action("GetGenericPortMappingEntry")) == [
        ("NewPortMappingIndex", "in", "PortMappingNumberOfEntries"),
        *[(name, "out", variable) for name, variable in ADD_ARGUMENTS],
    ]
    assert signature(service.action("GetStatusInfo")) == [
        ("NewConnectionStatus", "out", "ConnectionStatus"),
        ("NewLastConnectionError", "out", "LastConnectionError"),
        ("NewUptime", "out", "Uptime"),
    ]
    assert signature(service.action("GetNATRSIPStatus")) == [
        ("NewRSIPAvailable", "out", "RSIPAvailable"),
        ("NewNATEnabled", "out", "NATEnabled"),
    ]
    assert signature(service.action("GetConnectionTypeInfo")) == [
        ("NewConnectionType", "out", "ConnectionType"),
        ("NewPossibleConnectionTypes", "out", "PossibleConnectionTypes"),
    ]
    assert signature(service.action("SetConnectionType")) == [
        ("NewConnectionType", "in", "ConnectionType")
    ]
    assert signature(service.action("GetExternalIPAddress")) == [
        ("NewExternalIPAddress", "out", "ExternalIPAddress")
    ]
    for name in ("RequestConnection", "RequestTermination", "ForceTermination"):
        assert signature(service.action(name)) == []


def test_igd2_action_arguments() -> None:
    """WIP-25/31/32, specs 2.2.1: NewReservedPort, the range actions and NewPortListing."""
    service = wan_ip(2)
    add = [(name, "in", variable) for name, variable in ADD_ARGUMENTS]
    assert signature(service.action("AddAnyPortMapping")) == [
        *add,
        ("NewReservedPort", "out", "ExternalPort"),
    ]
    range_in = [
        ("NewStartPort", "in", "ExternalPort"),
        ("NewEndPort", "in", "ExternalPort"),
        ("NewProtocol", "in", "PortMappingProtocol"),
        ("NewManage", "in", "A_ARG_TYPE_Manage"),
    ]
    assert signature(service.action("DeletePortMappingRange")) == range_in
    assert signature(service.action("GetListOfPortMappings")) == [
        *range_in,
        ("NewNumberOfPorts", "in", "PortMappingNumberOfEntries"),
        ("NewPortListing", "out", "A_ARG_TYPE_PortListing"),
    ]


@pytest.mark.parametrize("version", GATEWAY_PROFILES)
def test_wanipconnection_state_variables(version: int) -> None:
    """Specs 2.2.2, WIP-60: names, types and evented flags; v2-only variables only in v2."""
    expected = {
        "ConnectionType": ("string", False),
        "PossibleConnectionTypes": ("string", True),
        "ConnectionStatus": ("string", True),
        "Uptime": ("ui4", False),
        "LastConnectionError": ("string", False),
        "RSIPAvailable": ("boolean", False),
        "NATEnabled": ("boolean", False),
        "ExternalIPAddress": ("string", True),
        "PortMappingNumberOfEntries": ("ui2", True),
        "PortMappingEnabled": ("boolean", False),
        "PortMappingLeaseDuration": ("ui4", False),
        "RemoteHost": ("string", False),
        "ExternalPort": ("ui2", False),
        "InternalPort": ("ui2", False),
        "PortMappingProtocol": ("string", False),
        "InternalClient": ("string", False),
        "PortMappingDescription": ("string", False),
    }
    if version == 2:
        expected |= {
            "SystemUpdateID": ("ui4", True),
            "A_ARG_TYPE_Manage": ("boolean", False),
            "A_ARG_TYPE_PortListing": ("string", False),
        }
    service = wan_ip(version)
    actual = {v.name: (v.data_type, v.send_events) for v in service.state_variables}
    assert actual == expected


def test_wanipconnection_allowed_values_and_ranges() -> None:
    """Specs 2.2.2, WIP-12/17: allowed values; lease 0..604800 and InternalPort 1..65535 in v2."""
    for version in GATEWAY_PROFILES:
        service = wan_ip(version)
        protocol = service.state_variable("PortMappingProtocol")
        assert protocol is not None
        assert protocol.allowed_values == ("TCP", "UDP")
        status = service.state_variable("ConnectionStatus")
        assert status is not None
        assert {"Unconfigured", "Connected", "Disconnected"} <= set(status.allowed_values)
        connection_type = service.state_variable("ConnectionType")
        assert connection_type is not None
        assert connection_type.default == "IP_Routed"
    lease_v1, lease_v2 = (wan_ip(v).state_variable("PortMappingLeaseDuration") for v in (1, 2))
    assert lease_v1 is not None
    assert lease_v1.allowed_range is None
    assert lease_v2 is not None
    assert lease_v2.allowed_range == (0, 604800)
    port_v1, port_v2 = (wan_ip(v).state_variable("InternalPort") for v in (1, 2))
    assert port_v1 is not None
    assert port_v1.allowed_range is None
    assert port_v2 is not None
    assert port_v2.allowed_range == (1, 65535)
    assert port_v2.bounds == (1, 65535)
    external = wan_ip(2).state_variable("ExternalPort")
    assert external is not None
    assert external.bounds == (0, 65535)


def test_wan_common_interface_config() -> None:
    """WCIC-01/02/05: GetCommonLinkProperties, the four counters, PhysicalLinkStatus evented."""
    (service,) = [s for s in all_services(2) if s.kind == "WANCommonInterfaceConfig"]
    assert service.service_type == f"{URN}:service:WANCommonInterfaceConfig:1"
    assert signature(service.action("GetCommonLinkProperties")) == [
        ("NewWANAccessType", "out", "WANAccessType"),
        ("NewLayer1UpstreamMaxBitRate", "out", "Layer1UpstreamMaxBitRate"),
        ("NewLayer1DownstreamMaxBitRate", "out", "Layer1DownstreamMaxBitRate"),
        ("NewPhysicalLinkStatus", "out", "PhysicalLinkStatus"),
    ]
    for counter in ("TotalBytesSent", "TotalBytesReceived", "TotalPacketsSent"):
        assert signature(service.action(f"Get{counter}")) == [(f"New{counter}", "out", counter)]
        variable = service.state_variable(counter)
        assert variable is not None
        assert variable.data_type == "ui4"
    assert signature(service.action("GetTotalPacketsReceived")) == [
        ("NewTotalPacketsReceived", "out", "TotalPacketsReceived")
    ]
    assert [v.name for v in service.evented_variables] == ["PhysicalLinkStatus"]
    link = service.state_variable("PhysicalLinkStatus")
    assert link is not None
    assert {"Up", "Down"} <= set(link.allowed_values)
    access = service.state_variable("WANAccessType")
    assert access is not None
    assert access.allowed_values == ("DSL", "POTS", "Cable", "Ethernet")


def test_layer3_forwarding() -> None:
    """L3F-01..03: Get/SetDefaultConnectionService; DefaultConnectionService evented."""
    (service,) = [s for s in all_services(1) if s.kind == "Layer3Forwarding"]
    assert signature(service.action("GetDefaultConnectionService")) == [
        ("NewDefaultConnectionService", "out", "DefaultConnectionService")
    ]
    assert signature(service.action("SetDefaultConnectionService")) == [
        ("NewDefaultConnectionService", "in", "DefaultConnectionService")
    ]
    assert [v.name for v in service.evented_variables] == ["DefaultConnectionService"]


@pytest.mark.parametrize("version", GATEWAY_PROFILES)
def test_device_tree_shape(version: int) -> None:
    """IGD-01/03/04: IGD:v > WANDevice:v > WANConnectionDevice:v; no PPP, LAN or FW6 service."""
    tree = igd_device_tree(version)
    shape = [
        (d.device_type, [(s.service_type, s.service_id) for s in d.services]) for d in tree.walk()
    ]
    assert shape == [
        (
            f"{URN}:device:InternetGatewayDevice:{version}",
            [(f"{URN}:service:Layer3Forwarding:1", SERVICE_ID_L3F)],
        ),
        (
            f"{URN}:device:WANDevice:{version}",
            [(f"{URN}:service:WANCommonInterfaceConfig:1", SERVICE_ID_WANCIC)],
        ),
        (
            f"{URN}:device:WANConnectionDevice:{version}",
            [(f"{URN}:service:WANIPConnection:{version}", SERVICE_ID_WANIPC)],
        ),
    ]


def test_service_ids_are_the_standard_ones() -> None:
    """IGD-02: L3Forwarding1, WANCommonIFC1, WANIPConn1 (also for WANIPConnection:2)."""
    assert SERVICE_ID_L3F == "urn:upnp-org:serviceId:L3Forwarding1"
    assert SERVICE_ID_WANCIC == "urn:upnp-org:serviceId:WANCommonIFC1"
    assert SERVICE_ID_WANIPC == "urn:upnp-org:serviceId:WANIPConn1"
    assert wan_ip(2).service_id == SERVICE_ID_WANIPC


def test_only_versions_1_and_2() -> None:
    """IGD-01: only InternetGatewayDevice:1 and :2 exist."""
    assert GATEWAY_PROFILES == (1, 2)
    for version in (0, 3):
        with pytest.raises(ValueError, match="version"):
            igd_device_tree(version)


def test_table_rejects_inconsistent_entries() -> None:
    """DESC-11/12: the dataclasses refuse a table that would break the SCPD rules."""
    with pytest.raises(ValueError, match="DESC-12"):
        StateVariable("A_ARG_TYPE_X", "string", send_events=True)
    with pytest.raises(ValueError, match="DESC-11"):
        Action("X", (Argument("NewA", "out", "A"), Argument("NewB", "in", "B")))
    with pytest.raises(ValueError, match="DESC-11"):
        Service(
            "X", 1, "urn:upnp-org:serviceId:X1", (Action("Y", (Argument("N", "in", "V"),)),), ()
        )
    with pytest.raises(ValueError, match="data type"):
        StateVariable("X", "float")
    with pytest.raises(ValueError, match="range"):
        StateVariable("X", "ui2", allowed_range=(0, 70000))
    with pytest.raises(ValueError, match="strings"):
        StateVariable("X", "ui2", allowed_values=("1",))
    with pytest.raises(ValueError, match="allowed value"):
        StateVariable("X", "string", allowed_values=("a",), default="b")
    with pytest.raises(ValueError, match="version"):
        Device("X", 0)


# ---- RootDevice ---------------------------------------------------------------------------------


@pytest.fixture(params=GATEWAY_PROFILES)
def root(request: pytest.FixtureRequest) -> RootDevice:
    version: int = request.param
    return RootDevice.create(version, BASE, f"/igd{version}")


def test_advertisement_set_is_ten_with_exact_nt_usn(root: RootDevice) -> None:
    """SSDP-02/03/04: 3 + 2d + k = 10 (d = 2, k = 3) in the order and shapes of specs 1.2."""
    v = root.version
    r, w, c = (
        f"uuid:{root.udns[kind]}"
        for kind in ("InternetGatewayDevice", "WANDevice", "WANConnectionDevice")
    )
    expected = [
        ("upnp:rootdevice", f"{r}::upnp:rootdevice"),
        (r, r),
        (f"{URN}:device:InternetGatewayDevice:{v}", f"{r}::{URN}:device:InternetGatewayDevice:{v}"),
        (w, w),
        (f"{URN}:device:WANDevice:{v}", f"{w}::{URN}:device:WANDevice:{v}"),
        (c, c),
        (f"{URN}:device:WANConnectionDevice:{v}", f"{c}::{URN}:device:WANConnectionDevice:{v}"),
        (f"{URN}:service:Layer3Forwarding:1", f"{r}::{URN}:service:Layer3Forwarding:1"),
        (
            f"{URN}:service:WANCommonInterfaceConfig:1",
            f"{w}::{URN}:service:WANCommonInterfaceConfig:1",
        ),
        (f"{URN}:service:WANIPConnection:{v}", f"{c}::{URN}:service:WANIPConnection:{v}"),
    ]
    assert [(a.nt, a.usn) for a in root.advertisements()] == expected
    assert len({a.usn for a in root.advertisements()}) == 10


def test_usn_prefix_is_the_udn_of_the_holding_device(root: RootDevice) -> None:
    """SSDP-04: the USN prefix before '::' equals the <UDN> of the device holding the type."""
    for endpoint in root.services():
        (advertisement,) = [
            a for a in root.advertisements() if a.nt == endpoint.service.service_type
        ]
        assert advertisement.usn.split("::")[0] == f"uuid:{endpoint.udn}"
        assert endpoint.udn == root.udn_of(endpoint.device)


def test_types_expose_kind_version_and_udn(root: RootDevice) -> None:
    """SSDP-40: every implemented (category, kind, version, holder UDN), for search matching."""
    v = root.version
    assert [(t.category, t.kind, t.version) for t in root.types()] == [
        ("device", "InternetGatewayDevice", v),
        ("device", "WANDevice", v),
        ("device", "WANConnectionDevice", v),
        ("service", "Layer3Forwarding", 1),
        ("service", "WANCommonInterfaceConfig", 1),
        ("service", "WANIPConnection", v),
    ]
    assert root.types()[0].udn == root.udn


def test_lower_version_advertisement_echoes_the_requested_version() -> None:
    """SSDP-40/41: a :2 type answers a :1 search with :1 in ST and USN; :3 is refused."""
    root = RootDevice.create(2, BASE, "/igd2")
    entry = next(t for t in root.types() if t.kind == "WANIPConnection")
    c = f"uuid:{root.udns['WANConnectionDevice']}"
    assert entry.advertisement(1) == Advertisement(
        f"{URN}:service:WANIPConnection:1", f"{c}::{URN}:service:WANIPConnection:1"
    )
    assert entry.urn() == f"{URN}:service:WANIPConnection:2"
    for version in (0, 3):
        with pytest.raises(ValueError, match="SSDP-41"):
            entry.advertisement(version)
    device = AdvertisedType("device", "WANDevice", 2, BASE)
    assert device.urn(1) == f"{URN}:device:WANDevice:1"


def test_udns_are_stable_and_derived_from_the_base_uuid() -> None:
    """GEN-08: UDNs survive restarts (same base_uuid, same UDNs): uuid5(base, 'v/kind')."""
    first, again = (RootDevice.create(2, BASE, "/igd2") for _ in range(2))
    assert first.udns == again.udns
    assert first == again
    assert first.udn == uuid.uuid5(BASE, "2/InternetGatewayDevice")
    assert first.udns["WANDevice"] == uuid.uuid5(BASE, "2/WANDevice")
    other = RootDevice.create(2, uuid.UUID(int=7), "/igd2")
    assert set(other.udns.values()).isdisjoint(first.udns.values())


def test_udns_differ_between_versions_and_devices() -> None:
    """SSDP-39, 4b: the IGD:1 and IGD:2 roots are separate devices with six distinct UDNs."""
    v1 = RootDevice.create(1, BASE, "/igd1")
    v2 = RootDevice.create(2, BASE, "/igd2")
    udns = [*v1.udns.values(), *v2.udns.values()]
    assert len(set(udns)) == 6
    assert all(u.version == 5 for u in udns)


def test_paths_are_unique_and_prefixed(root: RootDevice) -> None:
    """DESC-08: SCPDURL, controlURL and eventSubURL unique; all under the root's prefix."""
    paths = root.paths()
    assert len(paths) == 1 + 3 * 3
    assert len(set(paths)) == len(paths)
    assert all(path.startswith(f"{root.url_prefix}/") for path in paths)
    assert root.description_path == f"{root.url_prefix}/rootDesc.xml"
    other = RootDevice.create(1 if root.version == 2 else 2, BASE, "/other")
    assert set(paths).isdisjoint(other.paths())


def test_endpoint_lookup_by_path(root: RootDevice) -> None:
    """CTRL-08, EVT-14: each control/event/SCPD path leads to exactly its service; others None."""
    for endpoint in root.services():
        assert root.endpoint_for_control(endpoint.control_path) == endpoint
        assert root.endpoint_for_event(endpoint.event_path) == endpoint
        assert root.endpoint_for_scpd(endpoint.scpd_path) == endpoint
        assert root.endpoint_for_service_type(endpoint.service.service_type) == endpoint
        assert root.endpoint_for_control(endpoint.event_path) is None
    wanip = root.endpoint_for_control(f"{root.url_prefix}/WANIPConnection/control")
    assert wanip is not None
    assert wanip.device.kind == "WANConnectionDevice"
    assert root.endpoint_for_control("/WANIPConnection/control") is None
    assert root.endpoint_for_control(f"{root.url_prefix}/WANIPConnection/control/") is None


def test_empty_prefix_is_allowed() -> None:
    """A single-profile daemon may serve its root at the top level."""
    root = RootDevice.create(1, BASE, "")
    assert root.description_path == "/rootDesc.xml"
    assert root.endpoint_for_control("/WANIPConnection/control") is not None


@pytest.mark.parametrize(
    "prefix", ["igd", "/igd/", "//igd", "/../x", "/./x", "/a b", "/é", "/x?y", "/x#y", "/x%2f"]
)
def test_bad_url_prefixes_are_refused(prefix: str) -> None:
    """DESC-08: paths are plain absolute paths without traversal, query or escapes."""
    with pytest.raises(ValueError, match="url_prefix"):
        RootDevice.create(2, BASE, prefix)


def test_root_device_validates_udns() -> None:
    """SSDP-39: one distinct UDN per device of the tree, keyed by device kind."""
    tree = igd_device_tree(1)
    udns = {d.kind: uuid.uuid5(BASE, d.kind) for d in tree.walk()}
    with pytest.raises(ValueError, match="keys"):
        RootDevice(tree, {k: u for k, u in udns.items() if k != "WANDevice"}, "/x")
    with pytest.raises(ValueError, match="own UDN"):
        RootDevice(tree, dict.fromkeys(udns, BASE), "/x")
    root = RootDevice(tree, udns, "/x")
    assert hash(root) == hash(RootDevice(tree, dict(udns), "/x"))


def test_default_connection_service(root: RootDevice) -> None:
    """L3F-01: uuid:<C>:WANConnectionDevice:<v>,urn:upnp-org:serviceId:WANIPConn1."""
    c = root.udns["WANConnectionDevice"]
    assert root.default_connection_service() == (
        f"uuid:{c}:WANConnectionDevice:{root.version},urn:upnp-org:serviceId:WANIPConn1"
    )
