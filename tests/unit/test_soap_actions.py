"""UPnP control actions against a real core: semantics and error codes, IGD:1 and IGD:2.

Specs 2.2-2.4 (WIP-*, WCIC-*, L3F-*), 7.6-7.7 (T-IGD-*, T-WCIC-*, T-L3F-*) and landscape ST-15,
ST-18..ST-27. The `core` fixture (tests/conftest.py) has wan0 198.19.0.1/24 public and lan0
198.18.0.1/24 private on the memory backend, with a fake clock.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from lxml import etree
from support import LAN_HOST, LAN_HOST2, WAN_ADDRESS, FakeClock, fake_resolver, lab_connections

from igd.natcore import (
    IPProtocol,
    MappingKey,
    MappingRequest,
    MemoryStore,
    PolicyConfig,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
    is_reportable_external,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.soap.actions import (
    HANDLED_ACTIONS,
    MAX_LEASE_V2_S,
    PORT_LISTING_NS,
    ActionRequest,
    Cdata,
    ControlSettings,
    build_action_response,
    query_state_variable,
    run_action,
)
from igd.soap.envelope import CONTROL_NS, build_response
from igd.soap.errors import UPnPError
from igd.upnp import RootDevice, ServiceEndpoint, StateVariable

BASE_UUID = uuid.UUID("5b0c6f3e-2a44-4e59-9d1f-0c3f5a7e9b21")
ROOTS: dict[int, RootDevice] = {v: RootDevice.create(v, BASE_UUID, f"/igd{v}") for v in (1, 2)}
VERSIONS = (1, 2)
OUTSIDER = IPv4Address("198.18.0.12")

Args = Mapping[str, str] | Sequence[tuple[str, str]]


class FakeWan:
    """A WanStatus under the test's control."""

    def __init__(self) -> None:
        self.raw: tuple[int, int, int, int] = (1000, 2000, 10, 20)
        self.up = True
        self.rates: tuple[int, int] = (0, 0)
        self.fail = False

    def counters(self) -> tuple[int, int, int, int]:
        if self.fail:
            raise OSError("netlink went away")
        return self.raw

    def link_up(self) -> bool:
        if self.fail:
            raise OSError("netlink went away")
        return self.up

    def max_bit_rates(self) -> tuple[int, int]:
        return self.rates


@pytest.fixture
def wan() -> FakeWan:
    return FakeWan()


@pytest.fixture
def settings(core: SharingManager, wan: FakeWan, clock: FakeClock) -> ControlSettings:
    return ControlSettings(
        core=core, wan=wan, allow_private_external=True, started_at=clock.now - 100
    )


@asynccontextmanager
async def lab_core(clock: FakeClock, policy: PolicyConfig) -> AsyncIterator[SharingManager]:
    """Like the `core` fixture, with another policy."""
    manager = await SharingManager.open(
        backend=MemoryBackend(),
        store=MemoryStore(),
        source=StaticConnectionSource(lab_connections()),
        clock=clock,
        resolver=fake_resolver,
        policy=policy,
    )
    try:
        await manager.enable_sharing(
            manager.find_connection(name="wan0").guid, SharingConnectionType.PUBLIC
        )
        await manager.enable_sharing(
            manager.find_connection(name="lan0").guid, SharingConnectionType.PRIVATE
        )
        yield manager
    finally:
        await manager.aclose()


def endpoint_of(root: RootDevice, action: str) -> ServiceEndpoint:
    """The service of `root` holding `action`; WANIPConnection for names no service has."""
    for endpoint in root.services():
        if endpoint.service.action(action) is not None:
            return endpoint
    return next(e for e in root.services() if e.service.kind == "WANIPConnection")


async def call(
    settings: ControlSettings,
    version: int,
    action: str,
    args: Args = (),
    *,
    requester: IPv4Address = LAN_HOST,
    ns: int | None = None,
) -> dict[str, str]:
    """Run `action` on the IGD:`version` root; `ns` is the request namespace's version."""
    root = ROOTS[version]
    items = tuple(args.items()) if isinstance(args, Mapping) else tuple(args)
    request = ActionRequest(
        root=root,
        endpoint=endpoint_of(root, action),
        action=action,
        args=items,
        requester=requester,
        version=version if ns is None else ns,
    )
    return dict(await run_action(settings, request))


async def fault(
    settings: ControlSettings,
    version: int,
    action: str,
    args: Args = (),
    *,
    requester: IPv4Address = LAN_HOST,
    ns: int | None = None,
) -> int:
    """The UPnP error code `action` answers with (fails the test on success)."""
    with pytest.raises(UPnPError) as info:
        await call(settings, version, action, args, requester=requester, ns=ns)
    return info.value.code


def add_args(
    port: int | str = 40001,
    *,
    client: IPv4Address | str = LAN_HOST,
    internal_port: int | str | None = None,
    protocol: str = "TCP",
    remote: str = "",
    enabled: str = "1",
    description: str = "test",
    lease: int | str = 3600,
) -> dict[str, str]:
    """The eight AddPortMapping/AddAnyPortMapping arguments, in SCPD order."""
    return {
        "NewRemoteHost": remote,
        "NewExternalPort": str(port),
        "NewProtocol": protocol,
        "NewInternalPort": str(port if internal_port is None else internal_port),
        "NewInternalClient": str(client),
        "NewEnabled": enabled,
        "NewPortMappingDescription": description,
        "NewLeaseDuration": str(lease),
    }


def key_args(port: int | str = 40001, protocol: str = "TCP", remote: str = "") -> dict[str, str]:
    return {"NewRemoteHost": remote, "NewExternalPort": str(port), "NewProtocol": protocol}


def range_args(
    start: int = 40000, end: int = 40100, protocol: str = "TCP", manage: str = "0"
) -> dict[str, str]:
    return {
        "NewStartPort": str(start),
        "NewEndPort": str(end),
        "NewProtocol": protocol,
        "NewManage": manage,
    }


def list_args(
    start: int = 40000, end: int = 40100, protocol: str = "TCP", manage: str = "0", number: int = 0
) -> dict[str, str]:
    return {**range_args(start, end, protocol, manage), "NewNumberOfPorts": str(number)}


def valid_args(version: int, action: str) -> dict[str, str]:
    """Valid in-arguments for every action (after `add_args()` was added by LAN_HOST)."""
    table: dict[str, dict[str, str]] = {
        "SetConnectionType": {"NewConnectionType": "IP_Routed"},
        "GetGenericPortMappingEntry": {"NewPortMappingIndex": "0"},
        "GetSpecificPortMappingEntry": key_args(),
        "AddPortMapping": add_args(40002),
        "AddAnyPortMapping": add_args(40003),
        "DeletePortMapping": key_args(),
        "DeletePortMappingRange": range_args(),
        "GetListOfPortMappings": list_args(),
        "SetDefaultConnectionService": {
            "NewDefaultConnectionService": ROOTS[version].default_connection_service()
        },
    }
    return table.get(action, {})


def all_actions() -> list[tuple[int, str]]:
    return [
        (version, action.name)
        for version in VERSIONS
        for endpoint in ROOTS[version].services()
        for action in endpoint.service.actions
    ]


def listing(text: str) -> list[dict[str, str]]:
    """The entries of a NewPortListing fragment, by local name (WIP-33)."""
    root = etree.fromstring(text.encode())
    assert root.tag == f"{{{PORT_LISTING_NS}}}PortMappingList"
    entries = []
    for entry in root:
        assert entry.tag == f"{{{PORT_LISTING_NS}}}PortMappingEntry"
        assert all(etree.QName(child).namespace == PORT_LISTING_NS for child in entry)
        entries.append({etree.QName(child).localname: child.text or "" for child in entry})
    return entries


# ---- the table ---------------------------------------------------------------------------------


def test_every_action_of_both_profiles_has_a_handler() -> None:
    """Dispatch is complete for IGD:1 and IGD:2 (WIP-01, WCIC-01/02, L3F-01/02)."""
    wanted = {
        (e.service.kind, a.name)
        for root in ROOTS.values()
        for e in root.services()
        for a in e.service.actions
    }
    assert wanted <= HANDLED_ACTIONS


# Actions whose valid call is answered with a fault: (version, action) -> code (WIP-07/08).
VALID_CALL_FAULTS = {
    (1, "SetConnectionType"): 501,
    (2, "SetConnectionType"): 731,
    (1, "RequestTermination"): 501,
    (2, "RequestTermination"): 606,
    (1, "ForceTermination"): 501,
    (2, "ForceTermination"): 606,
}


@pytest.mark.parametrize(("version", "action"), all_actions())
async def test_valid_call_of_every_action(
    settings: ControlSettings, version: int, action: str
) -> None:
    """Each action with valid arguments: outputs exactly the SCPD out-args, in order (CTRL-05)."""
    await call(settings, version, "AddPortMapping", add_args())
    args = valid_args(version, action)
    expected_fault = VALID_CALL_FAULTS.get((version, action))
    if expected_fault is not None:
        assert await fault(settings, version, action, args) == expected_fault
        return
    outputs = await call(settings, version, action, args)
    declared = endpoint_of(ROOTS[version], action).service.action(action)
    assert declared is not None
    assert list(outputs) == [argument.name for argument in declared.outputs]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "action", ["FooBar", "GetPortMappingNumberOfEntries", "SetIdleDisconnectTime"]
)
async def test_unknown_action_is_401(settings: ControlSettings, version: int, action: str) -> None:
    """An action the addressed service lacks is 401 (CTRL-07/08, ST-15)."""
    assert await fault(settings, version, action) == 401


@pytest.mark.parametrize(
    "action", ["AddAnyPortMapping", "DeletePortMappingRange", "GetListOfPortMappings"]
)
async def test_igd2_only_actions_are_401_on_igd1(settings: ControlSettings, action: str) -> None:
    """The IGD:1 service has no IGD:2 actions (DESC-16, CTRL-08)."""
    root = ROOTS[1]
    endpoint = next(e for e in root.services() if e.service.kind == "WANIPConnection")
    request = ActionRequest(
        root, endpoint, action, tuple(valid_args(2, action).items()), LAN_HOST, 1
    )
    with pytest.raises(UPnPError) as info:
        await run_action(settings, request)
    assert info.value.code == 401


async def test_action_of_another_service_is_401(settings: ControlSettings) -> None:
    """AddPortMapping addressed to WANCommonInterfaceConfig: 401 (CTRL-08, T-SOAP-04)."""
    root = ROOTS[2]
    endpoint = next(e for e in root.services() if e.service.kind == "WANCommonInterfaceConfig")
    request = ActionRequest(
        root, endpoint, "AddPortMapping", tuple(add_args().items()), LAN_HOST, 2
    )
    with pytest.raises(UPnPError) as info:
        await run_action(settings, request)
    assert info.value.code == 401
    assert settings.core.mapping_count == 0


# ---- ST-15: the argument matrix ----------------------------------------------------------------

BAD_BY_TYPE: dict[str, tuple[str, ...]] = {
    "ui2": ("", "65536", "-1", "0x10", "1e3", " 1", "1 ", "+1", "abc", "1.0", "\u0661"),
    "ui4": ("", "4294967296", "-1", "0x10", "1e3", "1.5", "ten"),
    "boolean": ("", "2", "maybe", "on", "10"),
}
BAD_BY_VARIABLE: dict[str, tuple[tuple[str, int, int], ...]] = {
    # value, IGD:1 code, IGD:2 code
    "PortMappingProtocol": (
        ("ICMP", 402, 601),
        ("TCP ", 402, 601),
        ("", 402, 601),
        ("T", 402, 601),
        ("tcp\x00", 402, 601),
    ),
    "ConnectionType": (("Bogus", 402, 601), ("ip_routed", 402, 601)),
    "RemoteHost": tuple(
        (v, 402, 402) for v in ("router.lan", "1.2.3", "01.2.3.4", "1.2.3.4 ", "::1", "224.0.0.1")
    ),
    "InternalClient": tuple(
        (v, 402, 402) for v in ("router.lan", "localhost", "198.18.0.010", "::1", " 198.18.0.10")
    ),
}


def _variable(version: int, action: str, argument: str) -> StateVariable:
    service = endpoint_of(ROOTS[version], action).service
    declared = service.action(action)
    assert declared is not None
    name = next(a.state_variable for a in declared.inputs if a.name == argument)
    variable = service.state_variable(name)
    assert variable is not None
    return variable


def matrix() -> list[tuple[int, str, str, str, int]]:
    cases = []
    for version, action in all_actions():
        declared = endpoint_of(ROOTS[version], action).service.action(action)
        assert declared is not None
        for argument in declared.inputs:
            variable = _variable(version, action, argument.name)
            for value in BAD_BY_TYPE.get(variable.data_type, ()):
                cases.append((version, action, argument.name, value, 402))
            for value, v1, v2 in BAD_BY_VARIABLE.get(variable.name, ()):
                cases.append((version, action, argument.name, value, v1 if version == 1 else v2))
    return cases


@pytest.mark.parametrize(("version", "action", "argument", "value", "code"), matrix())
async def test_argument_matrix_wrong_values(
    settings: ControlSettings, version: int, action: str, argument: str, value: str, code: int
) -> None:
    """Wrong type or value for each argument of each action: 402 or 601, nothing changed (ST-15)."""
    await call(settings, version, "AddPortMapping", add_args())
    before = list(settings.core.mappings())
    args = {**valid_args(version, action), argument: value}
    assert await fault(settings, version, action, args) == code
    assert list(settings.core.mappings()) == before


def in_arguments() -> list[tuple[int, str, str]]:
    cases = []
    for version, action in all_actions():
        declared = endpoint_of(ROOTS[version], action).service.action(action)
        assert declared is not None
        cases += [(version, action, argument.name) for argument in declared.inputs]
    return cases


@pytest.mark.parametrize(("version", "action", "argument"), in_arguments())
async def test_argument_matrix_missing_and_duplicated(
    settings: ControlSettings, version: int, action: str, argument: str
) -> None:
    """Each argument missing, or given twice: 402 and no side effect (CTRL-07, ST-15)."""
    await call(settings, version, "AddPortMapping", add_args())
    before = list(settings.core.mappings())
    args = valid_args(version, action)
    missing = {k: v for k, v in args.items() if k != argument}
    assert await fault(settings, version, action, missing) == 402
    duplicated = [*args.items(), (argument, args[argument])]
    assert await fault(settings, version, action, duplicated) == 402
    assert list(settings.core.mappings()) == before


@pytest.mark.parametrize(("version", "action"), all_actions())
async def test_unknown_argument_is_402(
    settings: ControlSettings, version: int, action: str
) -> None:
    """An argument the action does not declare: 402, also for actions without arguments (ST-15)."""
    args = {**valid_args(version, action), "NewBogus": "1"}
    assert await fault(settings, version, action, args) == 402
    assert settings.core.mapping_count == 0


@pytest.mark.parametrize("version", VERSIONS)
async def test_argument_order_is_not_checked(settings: ControlSettings, version: int) -> None:
    """Arguments in reverse SCPD order are accepted (leniency, documented)."""
    await call(settings, version, "AddPortMapping", list(reversed(add_args().items())))
    assert settings.core.mapping_count == 1


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("spelling", ["tcp", "Tcp", "tCP"])
async def test_lowercase_protocol_is_tolerated(
    settings: ControlSettings, version: int, spelling: str
) -> None:
    """ "tcp" in any letter case means TCP (documented ST-15 tolerance); reported as "TCP"."""
    await call(settings, version, "AddPortMapping", add_args(protocol=spelling))
    entry = await call(
        settings, version, "GetGenericPortMappingEntry", {"NewPortMappingIndex": "0"}
    )
    assert entry["NewProtocol"] == "TCP"


@pytest.mark.parametrize("version", VERSIONS)
async def test_boolean_spellings(settings: ControlSettings, version: int) -> None:
    """NewEnabled takes 0/1/true/false/yes/no and is reported 0/1 (CTRL-11, WIP-35)."""
    for port, text, expected in ((40001, "true", "1"), (40002, "No", "0"), (40003, "yes", "1")):
        await call(settings, version, "AddPortMapping", add_args(port, enabled=text))
        entry = await call(settings, version, "GetSpecificPortMappingEntry", key_args(port))
        assert entry["NewEnabled"] == expected


# ---- AddPortMapping ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_add_then_get_specific(settings: ControlSettings, version: int) -> None:
    """T-IGD-03: the entry as added; lease counts down (WIP-10, WIP-14)."""
    await call(settings, version, "AddPortMapping", add_args(internal_port=8080))
    entry = await call(settings, version, "GetSpecificPortMappingEntry", key_args())
    assert entry == {
        "NewInternalPort": "8080",
        "NewInternalClient": str(LAN_HOST),
        "NewEnabled": "1",
        "NewPortMappingDescription": "test",
        "NewLeaseDuration": "3600",
    }


@pytest.mark.parametrize("version", VERSIONS)
async def test_add_overwrites_own_mapping(settings: ControlSettings, version: int) -> None:
    """T-IGD-05: same key and client overwrites port, description; count unchanged (WIP-11)."""
    await call(settings, version, "AddPortMapping", add_args())
    await call(
        settings, version, "AddPortMapping", add_args(internal_port=40002, description="new")
    )
    entry = await call(settings, version, "GetSpecificPortMappingEntry", key_args())
    assert (entry["NewInternalPort"], entry["NewPortMappingDescription"]) == ("40002", "new")
    assert settings.core.mapping_count == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_add_conflict_with_another_client_is_718(
    settings: ControlSettings, version: int
) -> None:
    """T-IGD-06: B asks for A's port: 718 in both profiles (WIP-11, WIP-24, ST-27)."""
    await call(settings, version, "AddPortMapping", add_args())
    args = add_args(client=LAN_HOST2)
    assert await fault(settings, version, "AddPortMapping", args, requester=LAN_HOST2) == 718
    assert settings.core.mapping(MappingKey(IPProtocol.TCP, 40001)).internal_client == LAN_HOST


@pytest.mark.parametrize("version", VERSIONS)
async def test_same_port_other_protocol_is_independent(
    settings: ControlSettings, version: int
) -> None:
    """40001/UDP beside 40001/TCP (miniupnpd reference 3b)."""
    await call(settings, version, "AddPortMapping", add_args())
    await call(settings, version, "AddPortMapping", add_args(protocol="UDP"))
    assert settings.core.mapping_count == 2


@pytest.mark.parametrize(("version", "code"), [(1, 718), (2, 606)])
async def test_secure_mode(settings: ControlSettings, version: int, code: int) -> None:
    """ST-18, T-IGD-07: a mapping to another host is refused, nothing created (WIP-70/71/75)."""
    args = add_args(client=LAN_HOST2)
    assert await fault(settings, version, "AddPortMapping", args) == code
    assert settings.core.mapping_count == 0


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("client", ["", "0.0.0.0"])
async def test_wildcard_internal_client_is_715(
    settings: ControlSettings, version: int, client: str
) -> None:
    """T-IGD-08: an empty NewInternalClient is 715, not the requester (WIP-18)."""
    assert await fault(settings, version, "AddPortMapping", add_args(client=client)) == 715
    assert settings.core.mapping_count == 0


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["lanhost", "router.lan", "localhost", "lanhost."])
async def test_hostnames_are_402_and_never_resolved(
    settings: ControlSettings, version: int, name: str
) -> None:
    """ST-20: a DNS name as NewInternalClient is 402 with no resolver call (WIP-23)."""
    asked: list[str] = []

    async def recorder(host: str) -> IPv4Address:
        asked.append(host)
        return await fake_resolver(host)

    settings.core.resolver = recorder
    assert await fault(settings, version, "AddPortMapping", add_args(client=name)) == 402
    any_code = 402 if version == 2 else 401  # IGD:1 has no AddAnyPortMapping
    assert await fault(settings, version, "AddAnyPortMapping", add_args(client=name)) == any_code
    assert asked == []
    assert settings.core.mapping_count == 0


@pytest.mark.parametrize("version", VERSIONS)
async def test_external_port_0_is_716(settings: ControlSettings, version: int) -> None:
    """T-IGD-09: AddPortMapping with NewExternalPort 0 (WIP-19)."""
    args = add_args(0, internal_port=40001)
    assert await fault(settings, version, "AddPortMapping", args) == 716


@pytest.mark.parametrize(("version", "code"), [(1, 402), (2, 732)])
async def test_internal_port_0(settings: ControlSettings, version: int, code: int) -> None:
    """T-IGD-10: NewInternalPort 0 is 732 for IGD:2, 402 for IGD:1 (WIP-17)."""
    args = add_args(internal_port=0)
    assert await fault(settings, version, "AddPortMapping", args) == code


@pytest.mark.parametrize(("version", "code"), [(1, 402), (2, 601)])
async def test_icmp_protocol(settings: ControlSettings, version: int, code: int) -> None:
    """T-IGD-11: NewProtocol ICMP is 601 for IGD:2, 402 for IGD:1 (WIP-20)."""
    assert await fault(settings, version, "AddPortMapping", add_args(protocol="ICMP")) == code


@pytest.mark.parametrize(("version", "code"), [(1, 718), (2, 606)])
@pytest.mark.parametrize(("external", "internal"), [(80, 8080), (40001, 22), (40001, 3389)])
async def test_default_deny(
    settings: ControlSettings, version: int, code: int, external: int, internal: int
) -> None:
    """ST-21, T-IGD-15: external < 1024 or internal 22/3389 denied by the shipped rules."""
    args = add_args(external, internal_port=internal)
    assert await fault(settings, version, "AddPortMapping", args) == code
    assert settings.core.mapping_count == 0


@pytest.mark.parametrize(("version", "code"), [(1, 718), (2, 606)])
@pytest.mark.parametrize(
    "target",
    [
        "8.8.8.8",  # public
        "198.19.0.50",  # WAN subnet
        "198.19.0.1",  # the gateway's WAN address
        "198.18.0.1",  # the gateway's LAN address
        "127.0.0.1",
        "255.255.255.255",
        "198.18.0.255",  # subnet broadcast
        "198.18.0.0",  # network address
        "224.0.0.1",
        "198.18.1.10",  # outside every shared LAN subnet
    ],
)
async def test_upnproxy_targets_refused_without_secure_mode(
    clock: FakeClock, wan: FakeWan, version: int, code: int, target: str
) -> None:
    """ST-19: even with secure mode off these targets are refused, nothing created."""
    async with lab_core(clock, PolicyConfig(secure_mode=False)) as core:
        settings = ControlSettings(core=core, wan=wan)
        assert await fault(settings, version, "AddPortMapping", add_args(client=target)) == code
        assert core.mapping_count == 0
        # secure mode off: another LAN host is a valid target
        await call(settings, version, "AddPortMapping", add_args(client=LAN_HOST2))
        assert core.mapping_count == 1


@pytest.mark.parametrize(("version", "code"), [(1, 718), (2, 729)])
async def test_reserved_port_is_729(
    clock: FakeClock, wan: FakeWan, version: int, code: int
) -> None:
    """ST-22: a port the gateway's own services use (WIP-24)."""
    policy = PolicyConfig(reserved_ports=frozenset({(IPProtocol.TCP, 5000)}))
    async with lab_core(clock, policy) as core:
        settings = ControlSettings(core=core, wan=wan)
        assert await fault(settings, version, "AddPortMapping", add_args(5000)) == code
        await call(settings, version, "AddPortMapping", add_args(5000, protocol="UDP"))
        if version == 2:
            reserved = await call(settings, 2, "AddAnyPortMapping", add_args(5000))
            assert reserved["NewReservedPort"] != "5000"


@pytest.mark.parametrize(("version", "code"), [(1, 718), (2, 728)])
async def test_quota_is_728(clock: FakeClock, wan: FakeWan, version: int, code: int) -> None:
    """ST-24: the per-client quota (WIP-24)."""
    async with lab_core(clock, PolicyConfig(quota_per_client=2)) as core:
        settings = ControlSettings(core=core, wan=wan)
        for port in (40001, 40002):
            await call(settings, version, "AddPortMapping", add_args(port))
        assert await fault(settings, version, "AddPortMapping", add_args(40003)) == code
        await call(settings, version, "AddPortMapping", add_args(40001, description="refresh"))
        if version == 2:
            assert await fault(settings, 2, "AddAnyPortMapping", add_args(40003)) == 728
        assert core.mapping_count == 2


# ---- leases (ST-27) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "stored"), [(0, MAX_LEASE_V2_S), (604801, MAX_LEASE_V2_S), (120, 120)]
)
async def test_v2_lease(settings: ControlSettings, requested: int, stored: int) -> None:
    """T-IGD-13/14, ST-27: IGD:2 lease 0 and > 604800 become 604800 (WIP-12)."""
    await call(settings, 2, "AddPortMapping", add_args(lease=requested))
    entry = await call(settings, 2, "GetSpecificPortMappingEntry", key_args())
    assert entry["NewLeaseDuration"] == str(stored)


async def test_v1_lease_0_is_permanent(settings: ControlSettings, clock: FakeClock) -> None:
    """T-IGD-13: IGD:1 lease 0 is static, reported 0, never expires (WIP-13)."""
    await call(settings, 1, "AddPortMapping", add_args(lease=0))
    clock.advance(10 * MAX_LEASE_V2_S)
    entry = await call(settings, 1, "GetSpecificPortMappingEntry", key_args())
    assert entry["NewLeaseDuration"] == "0"


async def test_v1_huge_lease_is_clamped_by_the_core(settings: ControlSettings) -> None:
    """A finite IGD:1 lease is clamped to the core's max_lease (WIP-13 PROJECT)."""
    await call(settings, 1, "AddPortMapping", add_args(lease=2**32 - 1))
    entry = await call(settings, 1, "GetSpecificPortMappingEntry", key_args())
    assert entry["NewLeaseDuration"] == str(MAX_LEASE_V2_S)


@pytest.mark.parametrize("version", VERSIONS)
async def test_lease_counts_down_and_expires(
    settings: ControlSettings, clock: FakeClock, version: int
) -> None:
    """T-IGD-22/23: remaining seconds reported; a run-out lease is gone at once (WIP-14)."""
    await call(settings, version, "AddPortMapping", add_args(lease=100))
    clock.advance(3)
    entry = await call(settings, version, "GetSpecificPortMappingEntry", key_args())
    assert entry["NewLeaseDuration"] == "97"
    clock.advance(97)
    assert await fault(settings, version, "GetSpecificPortMappingEntry", key_args()) == 714
    assert (
        await fault(settings, version, "GetGenericPortMappingEntry", {"NewPortMappingIndex": "0"})
        == 713
    )


@pytest.mark.parametrize("version", VERSIONS)
async def test_refresh_keeps_identity(
    settings: ControlSettings, clock: FakeClock, version: int
) -> None:
    """4b, ST-27: renewing every 20 s with 60 s leases extends and keeps the mapping."""
    for _ in range(5):
        await call(settings, version, "AddPortMapping", add_args(lease=60))
        clock.advance(20)
    entry = await call(settings, version, "GetSpecificPortMappingEntry", key_args())
    assert entry["NewLeaseDuration"] == "40"
    assert settings.core.mapping_count == 1


# ---- remote host, enabled, descriptions ---------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_specific_remote_host(settings: ControlSettings, version: int) -> None:
    """T-IGD-16: the remote host is part of the key; "0.0.0.0" is the wildcard (WIP-10/16)."""
    await call(settings, version, "AddPortMapping", add_args(remote="198.19.0.100"))
    assert await fault(settings, version, "GetSpecificPortMappingEntry", key_args()) == 714
    await call(settings, version, "GetSpecificPortMappingEntry", key_args(remote="198.19.0.100"))
    entry = await call(
        settings, version, "GetGenericPortMappingEntry", {"NewPortMappingIndex": "0"}
    )
    assert entry["NewRemoteHost"] == "198.19.0.100"
    await call(settings, version, "AddPortMapping", add_args(40002, remote="0.0.0.0"))
    entry = await call(settings, version, "GetSpecificPortMappingEntry", key_args(40002))
    generic = await call(
        settings, version, "GetGenericPortMappingEntry", {"NewPortMappingIndex": "1"}
    )
    assert generic["NewRemoteHost"] == ""
    assert entry["NewInternalClient"] == str(LAN_HOST)


@pytest.mark.parametrize("version", VERSIONS)
async def test_disabled_mapping_is_listed(settings: ControlSettings, version: int) -> None:
    """T-IGD-24: NewEnabled 0 is stored and listed with Enabled 0 (WIP-35)."""
    await call(settings, version, "AddPortMapping", add_args(enabled="0"))
    entry = await call(settings, version, "GetSpecificPortMappingEntry", key_args())
    assert entry["NewEnabled"] == "0"


@pytest.mark.parametrize("version", VERSIONS)
async def test_description_round_trips_and_is_escaped(
    settings: ControlSettings, version: int
) -> None:
    """T-SOAP-11, ST-16: markup in a description comes back exactly, escaped on the wire."""
    text = "<b>&amp;\"x' ]]> <script>alert(1)</script>"
    await call(settings, version, "AddPortMapping", add_args(description=text))
    entry = await call(settings, version, "GetSpecificPortMappingEntry", key_args())
    assert entry["NewPortMappingDescription"] == text
    service_type = f"urn:schemas-upnp-org:service:WANIPConnection:{version}"
    body = build_action_response(service_type, "GetSpecificPortMappingEntry", list(entry.items()))
    assert b"<script>" not in body
    assert b"&lt;script&gt;" in body
    parsed = etree.fromstring(body)
    assert parsed.findtext(".//NewPortMappingDescription") == text


@pytest.mark.parametrize(("version", "long_code"), [(1, 402), (2, 605)])
@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("x\nTCP:22:198.18.0.9:22:0:evil", "control"),
        ("a\rb", "control"),
        ("tab\there", "control"),
        ("bell\x07", "control"),
        ("del\x7f", "control"),
        ("c1\x85", "control"),
        ("x" * 4096, "long"),
        ("é" * 129, "long"),
    ],
)
async def test_description_injection_is_refused(
    settings: ControlSettings, version: int, long_code: int, description: str, kind: str
) -> None:
    """ST-26: control characters 402, over 256 bytes 605 (402 IGD:1); never an extra mapping."""
    code = long_code if kind == "long" else 402
    assert (
        await fault(settings, version, "AddPortMapping", add_args(description=description)) == code
    )
    assert settings.core.mapping_count == 0


async def test_description_of_256_bytes_is_accepted(settings: ControlSettings) -> None:
    """The cap is inclusive: 128 two-byte characters are fine."""
    await call(settings, 2, "AddPortMapping", add_args(description="é" * 128))
    assert settings.core.mapping_count == 1


# ---- AddAnyPortMapping -------------------------------------------------------------------------


async def test_add_any_free_port(settings: ControlSettings) -> None:
    """T-IGD-26: a free port is reserved as asked (WIP-25)."""
    assert await call(settings, 2, "AddAnyPortMapping", add_args(40020)) == {
        "NewReservedPort": "40020"
    }


async def test_add_any_taken_port_gets_another(settings: ControlSettings) -> None:
    """T-IGD-27/28: another free port >= 1024; repeating one's own tuple keeps it (WIP-25)."""
    await call(
        settings, 2, "AddPortMapping", add_args(40021, client=LAN_HOST2), requester=LAN_HOST2
    )
    reserved = (await call(settings, 2, "AddAnyPortMapping", add_args(40021)))["NewReservedPort"]
    assert reserved != "40021"
    assert int(reserved) >= 1024
    entry = await call(settings, 2, "GetSpecificPortMappingEntry", key_args(reserved))
    assert entry["NewInternalClient"] == str(LAN_HOST)
    again = await call(settings, 2, "AddAnyPortMapping", add_args(reserved, internal_port=40021))
    assert again["NewReservedPort"] == reserved


async def test_add_any_port_0_allocates(settings: ControlSettings) -> None:
    """T-IGD-29: NewExternalPort 0 means any port, never an all-ports mapping (WIP-26)."""
    reserved = await call(settings, 2, "AddAnyPortMapping", add_args(0, internal_port=40030))
    assert int(reserved["NewReservedPort"]) >= 1024


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (add_args(internal_port=0), 732),
        (add_args(client=""), 715),
        (add_args(client=LAN_HOST2), 606),
        (add_args(protocol="ICMP"), 601),
        (add_args(client="router.lan"), 402),
    ],
)
async def test_add_any_errors(settings: ControlSettings, args: dict[str, str], code: int) -> None:
    """T-IGD-30: 732 / 715 / 606, never 718 (WIP-27)."""
    assert await fault(settings, 2, "AddAnyPortMapping", args) == code
    assert settings.core.mapping_count == 0


# ---- delete and ownership (ST-23) --------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_delete_then_again_is_714(settings: ControlSettings, version: int) -> None:
    """T-IGD-20: DeletePortMapping removes; a second time 714 (WIP-28)."""
    await call(settings, version, "AddPortMapping", add_args())
    await call(settings, version, "DeletePortMapping", key_args())
    assert settings.core.mapping_count == 0
    assert await fault(settings, version, "DeletePortMapping", key_args()) == 714


@pytest.mark.parametrize(("version", "code"), [(1, 714), (2, 606)])
async def test_delete_someone_elses_mapping(
    settings: ControlSettings, version: int, code: int
) -> None:
    """T-IGD-21, ST-23: A cannot delete B's mapping; it stays (WIP-70/75)."""
    await call(settings, version, "AddPortMapping", add_args(client=LAN_HOST2), requester=LAN_HOST2)
    assert await fault(settings, version, "DeletePortMapping", key_args()) == code
    assert settings.core.mapping_count == 1


async def _two_owners(settings: ControlSettings) -> None:
    """A owns 40200, 40201, 40205 TCP and 40202 UDP; B owns 40203 TCP."""
    for port in (40200, 40201, 40205):
        await call(settings, 2, "AddPortMapping", add_args(port))
    await call(settings, 2, "AddPortMapping", add_args(40202, protocol="UDP"))
    await call(
        settings, 2, "AddPortMapping", add_args(40203, client=LAN_HOST2), requester=LAN_HOST2
    )


@pytest.mark.parametrize("manage", ["0", "1"])
async def test_delete_range_removes_only_own(settings: ControlSettings, manage: str) -> None:
    """T-IGD-33/34/35: A's TCP mappings go; B's and the UDP one stay; Manage ignored (WIP-31)."""
    await _two_owners(settings)
    await call(settings, 2, "DeletePortMappingRange", range_args(40200, 40210, manage=manage))
    left = {(m.protocol, m.external_port) for m in settings.core.mappings()}
    assert left == {(IPProtocol.UDP, 40202), (IPProtocol.TCP, 40203)}


@pytest.mark.parametrize("manage", ["0", "1"])
async def test_delete_range_of_others_only_is_730(settings: ControlSettings, manage: str) -> None:
    """ST-23: from an outsider, B's mappings are untouchable: 730, all remain (WIP-31/73)."""
    await _two_owners(settings)
    args = range_args(40200, 40210, manage=manage)
    assert await fault(settings, 2, "DeletePortMappingRange", args, requester=OUTSIDER) == 730
    assert settings.core.mapping_count == 5


@pytest.mark.parametrize(
    ("args", "code"),
    [(range_args(40100, 40000), 733), (range_args(41000, 42000), 730)],
)
async def test_delete_range_errors(
    settings: ControlSettings, args: dict[str, str], code: int
) -> None:
    """T-IGD-31/32: start > end 733, an empty range 730 (WIP-31)."""
    await call(settings, 2, "AddPortMapping", add_args())
    assert await fault(settings, 2, "DeletePortMappingRange", args) == code
    assert settings.core.mapping_count == 1


async def test_get_list_shows_own_entries_sorted(settings: ControlSettings) -> None:
    """T-IGD-38: only A's, sorted by port, entries equal GetSpecific (WIP-32/33/34, ST-23)."""
    await _two_owners(settings)
    for manage in ("0", "1"):
        result = await call(
            settings, 2, "GetListOfPortMappings", list_args(40200, 40210, manage=manage)
        )
        entries = listing(result["NewPortListing"])
        assert [e["NewExternalPort"] for e in entries] == ["40200", "40201", "40205"]
    for entry in entries:
        assert list(entry) == [
            "NewRemoteHost",
            "NewExternalPort",
            "NewProtocol",
            "NewInternalPort",
            "NewInternalClient",
            "NewEnabled",
            "NewDescription",
            "NewLeaseTime",
        ]
        specific = await call(
            settings, 2, "GetSpecificPortMappingEntry", key_args(entry["NewExternalPort"])
        )
        assert entry["NewInternalClient"] == specific["NewInternalClient"]
        assert entry["NewDescription"] == specific["NewPortMappingDescription"]
        assert entry["NewLeaseTime"] == specific["NewLeaseDuration"]
        assert entry["NewEnabled"] == specific["NewEnabled"]
    one = await call(settings, 2, "GetListOfPortMappings", list_args(40200, 40210, number=1))
    assert [e["NewExternalPort"] for e in listing(one["NewPortListing"])] == ["40200"]
    udp = await call(settings, 2, "GetListOfPortMappings", list_args(40200, 40210, "UDP"))
    assert [e["NewExternalPort"] for e in listing(udp["NewPortListing"])] == ["40202"]


@pytest.mark.parametrize(
    ("args", "requester", "code"),
    [
        (list_args(40100, 40000), LAN_HOST, 733),
        (list_args(41000, 42000), LAN_HOST, 730),
        (list_args(40200, 40210, manage="1"), OUTSIDER, 730),
    ],
)
async def test_get_list_errors(
    settings: ControlSettings, args: dict[str, str], requester: IPv4Address, code: int
) -> None:
    """T-IGD-36/37: start > end 733; nothing visible 730 (WIP-32, MUD-22)."""
    await _two_owners(settings)
    assert await fault(settings, 2, "GetListOfPortMappings", args, requester=requester) == code


async def test_get_list_escapes_descriptions(settings: ControlSettings) -> None:
    """WIP-33, ST-16: the fragment stays well-formed whatever the description holds."""
    text = "a&b<c>]]>d"
    await call(settings, 2, "AddPortMapping", add_args(40050, description=text))
    result = await call(settings, 2, "GetListOfPortMappings", list_args())
    assert "]]>" not in result["NewPortListing"]
    assert listing(result["NewPortListing"])[0]["NewDescription"] == text


async def test_get_generic_indexes_the_callers_entries(settings: ControlSettings) -> None:
    """T-IGD-18, ST-23: A sees 0..2 then 713; after a delete the list compacts (WIP-29)."""
    await _two_owners(settings)

    codes: list[int] = []

    async def ports(requester: IPv4Address) -> list[str]:
        found: list[str] = []
        for index in range(10):
            try:
                entry = await call(
                    settings,
                    2,
                    "GetGenericPortMappingEntry",
                    {"NewPortMappingIndex": str(index)},
                    requester=requester,
                )
            except UPnPError as error:
                codes.append(error.code)
                return found
            found.append(f"{entry['NewProtocol']}/{entry['NewExternalPort']}")
        return found

    assert await ports(LAN_HOST) == ["TCP/40200", "TCP/40201", "TCP/40205", "UDP/40202"]
    assert await ports(LAN_HOST2) == ["TCP/40203"]
    assert await ports(OUTSIDER) == []
    await call(settings, 2, "DeletePortMapping", key_args(40200))
    assert await ports(LAN_HOST) == ["TCP/40201", "TCP/40205", "UDP/40202"]
    assert codes == [713, 713, 713, 713]


@pytest.mark.parametrize(("version", "code"), [(1, 714), (2, 606)])
async def test_get_specific_of_someone_else(
    settings: ControlSettings, version: int, code: int
) -> None:
    """ST-23 privacy: another client's entry is not returned (WIP-74/75)."""
    await call(settings, version, "AddPortMapping", add_args(client=LAN_HOST2), requester=LAN_HOST2)
    assert await fault(settings, version, "GetSpecificPortMappingEntry", key_args()) == code


async def test_show_all_mappings_restores_the_shared_view(
    settings: ControlSettings, core: SharingManager, wan: FakeWan
) -> None:
    """show_all_mappings: everyone sees every entry (WIP-30), still deletes only its own."""
    await _two_owners(settings)
    open_view = ControlSettings(core=core, wan=wan, show_all_mappings=True)
    entry = await call(open_view, 2, "GetSpecificPortMappingEntry", key_args(40203))
    assert entry["NewInternalClient"] == str(LAN_HOST2)
    generic = await call(
        open_view, 2, "GetGenericPortMappingEntry", {"NewPortMappingIndex": "4"}, requester=OUTSIDER
    )
    assert generic["NewExternalPort"] == "40202"
    everyone = await call(
        open_view, 2, "GetListOfPortMappings", list_args(40200, 40210, manage="1")
    )
    assert len(listing(everyone["NewPortListing"])) == 4
    own = await call(open_view, 2, "GetListOfPortMappings", list_args(40200, 40210, manage="0"))
    assert len(listing(own["NewPortListing"])) == 3
    assert await fault(open_view, 2, "DeletePortMapping", key_args(40203)) == 606


async def test_mappings_of_other_mechanisms_pointing_at_the_caller_are_visible(
    settings: ControlSettings, core: SharingManager
) -> None:
    """WIP-30: an administrator's mapping to the caller is listed, and not deletable."""
    public = core.public_connection()
    assert public is not None
    await core.add_connection_mapping(
        public.guid, MappingRequest(IPProtocol.TCP, 40300, LAN_HOST, 40300, "static")
    )
    entry = await call(settings, 2, "GetSpecificPortMappingEntry", key_args(40300))
    assert entry["NewLeaseDuration"] == "0"
    assert await fault(settings, 2, "DeletePortMapping", key_args(40300)) == 606
    assert (
        await fault(
            settings, 2, "GetSpecificPortMappingEntry", key_args(40300), requester=LAN_HOST2
        )
        == 606
    )


# ---- connection state (ST-25) ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_status_and_type(settings: ControlSettings, version: int) -> None:
    """T-IGD-01/02: Connected, ERROR_NONE, uptime; IP_Routed; RSIP 0, NAT 1 (WIP-04..06)."""
    assert await call(settings, version, "GetStatusInfo") == {
        "NewConnectionStatus": "Connected",
        "NewLastConnectionError": "ERROR_NONE",
        "NewUptime": "100",
    }
    assert await call(settings, version, "GetConnectionTypeInfo") == {
        "NewConnectionType": "IP_Routed",
        "NewPossibleConnectionTypes": "IP_Routed",
    }
    assert await call(settings, version, "GetNATRSIPStatus") == {
        "NewRSIPAvailable": "0",
        "NewNATEnabled": "1",
    }


@pytest.mark.parametrize(("version", "readonly", "bogus"), [(1, 501, 402), (2, 731, 601)])
async def test_set_connection_type(
    settings: ControlSettings, version: int, readonly: int, bogus: int
) -> None:
    """T-IGD-39: a valid type is read-only 731 (501 IGD:1); Bogus 601 (402 IGD:1) (WIP-07)."""
    for value in ("IP_Routed", "IP_Bridged", "Unconfigured"):
        args = {"NewConnectionType": value}
        assert await fault(settings, version, "SetConnectionType", args) == readonly
    args = {"NewConnectionType": "Bogus"}
    assert await fault(settings, version, "SetConnectionType", args) == bogus


@pytest.mark.parametrize(("version", "code"), [(1, 501), (2, 606)])
@pytest.mark.parametrize("action", ["RequestTermination", "ForceTermination"])
async def test_termination_is_refused_and_changes_nothing(
    settings: ControlSettings, version: int, code: int, action: str
) -> None:
    """T-IGD-40, ST-25: 606 (501 IGD:1); still Connected, mappings kept (WIP-08/74)."""
    await call(settings, version, "AddPortMapping", add_args())
    assert await fault(settings, version, action) == code
    status = await call(settings, version, "GetStatusInfo")
    assert status["NewConnectionStatus"] == "Connected"
    assert settings.core.mapping_count == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_request_connection_is_a_no_op(settings: ControlSettings, version: int) -> None:
    """T-IGD-41: RequestConnection while Connected is 200 (WIP-08)."""
    assert await call(settings, version, "RequestConnection") == {}


async def test_igd2_service_called_in_the_v1_namespace_answers_v1_codes(
    settings: ControlSettings,
) -> None:
    """CTRL-09: a :1 request to the :2 service gets IGD:1 error codes (WIP-75)."""
    assert await fault(settings, 2, "ForceTermination", ns=1) == 501
    assert await fault(settings, 2, "AddPortMapping", add_args(client=LAN_HOST2), ns=1) == 718
    assert await fault(settings, 2, "AddPortMapping", add_args(internal_port=0), ns=1) == 402


@pytest.mark.parametrize("version", VERSIONS)
async def test_without_wan_address(
    settings: ControlSettings, core: SharingManager, version: int
) -> None:
    """T-IGD-25: no WAN address: "" and Disconnected; RequestConnection 501 (WIP-02/04/08)."""
    await core.disable_sharing(core.find_connection(name="wan0").guid)
    assert await call(settings, version, "GetExternalIPAddress") == {"NewExternalIPAddress": ""}
    status = await call(settings, version, "GetStatusInfo")
    assert (status["NewConnectionStatus"], status["NewUptime"]) == ("Disconnected", "0")
    assert await fault(settings, version, "RequestConnection") == 501


@pytest.mark.parametrize("version", VERSIONS)
async def test_external_address(
    settings: ControlSettings, core: SharingManager, wan: FakeWan, version: int
) -> None:
    """T-SOAP-01, WIP-02/03: reported when allowed; the lab's 198.19/16 is private otherwise."""
    assert await call(settings, version, "GetExternalIPAddress") == {
        "NewExternalIPAddress": str(WAN_ADDRESS)
    }
    strict = ControlSettings(core=core, wan=wan)
    assert await call(strict, version, "GetExternalIPAddress") == {"NewExternalIPAddress": ""}


@pytest.mark.parametrize(
    ("address", "reportable"),
    [
        ("8.8.8.8", True),
        ("93.184.216.34", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("100.127.255.254", False),
        ("198.18.0.1", False),
        ("198.19.0.1", False),
        ("192.0.2.1", False),
        ("198.51.100.1", False),
        ("203.0.113.1", False),
        ("169.254.1.1", False),
        ("127.0.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
    ],
)
def test_is_reportable_external(address: str, reportable: bool) -> None:
    """WIP-03: RFC 1918, RFC 6598, TEST-NETs, benchmarking and reserved space are not reported."""
    assert is_reportable_external(IPv4Address(address), allow_private=False) is reportable
    assert is_reportable_external(IPv4Address(address), allow_private=True)


# ---- WANCommonInterfaceConfig ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_common_link_properties(
    settings: ControlSettings, wan: FakeWan, version: int
) -> None:
    """T-WCIC-01: Ethernet, bit rates clamped to ui4 (MUD-11), Up/Down (WCIC-01/06)."""
    wan.rates = (10**10, 1_000_000)
    assert await call(settings, version, "GetCommonLinkProperties") == {
        "NewWANAccessType": "Ethernet",
        "NewLayer1UpstreamMaxBitRate": str(2**32 - 1),
        "NewLayer1DownstreamMaxBitRate": "1000000",
        "NewPhysicalLinkStatus": "Up",
    }
    wan.up = False
    link = await call(settings, version, "GetCommonLinkProperties")
    assert link["NewPhysicalLinkStatus"] == "Down"


@pytest.mark.parametrize("version", VERSIONS)
async def test_counters_wrap_at_2_32(settings: ControlSettings, wan: FakeWan, version: int) -> None:
    """T-WCIC-02: ui4 counters are sent modulo 2**32, never as 64-bit numbers (WCIC-03)."""
    wan.raw = (2**32 + 5, 2**40 + 7, 2**32 - 1, 3 * 2**32)
    assert await call(settings, version, "GetTotalBytesSent") == {"NewTotalBytesSent": "5"}
    assert await call(settings, version, "GetTotalBytesReceived") == {"NewTotalBytesReceived": "7"}
    assert await call(settings, version, "GetTotalPacketsSent") == {
        "NewTotalPacketsSent": str(2**32 - 1)
    }
    assert await call(settings, version, "GetTotalPacketsReceived") == {
        "NewTotalPacketsReceived": "0"
    }


@pytest.mark.parametrize(
    "action", ["GetCommonLinkProperties", "GetTotalBytesSent", "GetTotalPacketsReceived"]
)
async def test_wan_status_failure_is_501(
    settings: ControlSettings, wan: FakeWan, action: str
) -> None:
    """A failing WanStatus is 501, never an exception out of run_action."""
    wan.fail = True
    assert await fault(settings, 2, action) == 501


# ---- Layer3Forwarding --------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_default_connection_service(settings: ControlSettings, version: int) -> None:
    """T-L3F-01/02: get the WANIPConn1 of our connection device; set it back (L3F-01/02)."""
    root = ROOTS[version]
    value = (await call(settings, version, "GetDefaultConnectionService"))[
        "NewDefaultConnectionService"
    ]
    connection_udn = root.udns["WANConnectionDevice"]
    assert value == (
        f"uuid:{connection_udn}:WANConnectionDevice:{version},urn:upnp-org:serviceId:WANIPConn1"
    )
    await call(
        settings, version, "SetDefaultConnectionService", {"NewDefaultConnectionService": value}
    )
    short = f"uuid:{connection_udn},urn:upnp-org:serviceId:WANIPConn1"
    await call(
        settings, version, "SetDefaultConnectionService", {"NewDefaultConnectionService": short}
    )


@pytest.mark.parametrize("version", VERSIONS)
async def test_set_default_connection_service_errors(
    settings: ControlSettings, version: int
) -> None:
    """T-L3F-02: wrong UUID 720, unknown serviceId 721, not a connection 723 (L3F-02)."""
    root, other = ROOTS[version], ROOTS[3 - version]
    conn = root.udns["WANConnectionDevice"]
    wan_device = root.udns["WANDevice"]
    stranger = uuid.UUID(int=7)
    cases = {
        f"uuid:{stranger}:WANConnectionDevice:{version},urn:upnp-org:serviceId:WANIPConn1": 720,
        other.default_connection_service(): 720,
        f"uuid:not-a-uuid:WANConnectionDevice:{version},urn:upnp-org:serviceId:WANIPConn1": 720,
        f"uuid:{conn}:WANConnectionDevice:{version},urn:upnp-org:serviceId:WANPPPConn1": 721,
        f"uuid:{conn}:WANConnectionDevice:{version},urn:upnp-org:serviceId:WANCommonIFC1": 721,
        f"uuid:{wan_device}:WANDevice:{version},urn:upnp-org:serviceId:WANCommonIFC1": 723,
        "garbage": 402,
    }
    for value, code in cases.items():
        args = {"NewDefaultConnectionService": value}
        assert await fault(settings, version, "SetDefaultConnectionService", args) == code, value


# ---- QueryStateVariable (CTRL-13) --------------------------------------------------------------


async def query(
    settings: ControlSettings,
    kind: str,
    args: Sequence[tuple[str, str]],
    *,
    requester: IPv4Address = LAN_HOST,
) -> str:
    root = ROOTS[2]
    endpoint = next(e for e in root.services() if e.service.kind == kind)
    request = ActionRequest(root, endpoint, "QueryStateVariable", tuple(args), requester, 2)
    return await query_state_variable(settings, request)


async def test_query_state_variable(settings: ControlSettings, wan: FakeWan) -> None:
    """T-SOAP-12: evented variables answer; the entry count is the caller's (CTRL-13)."""
    await call(settings, 2, "AddPortMapping", add_args())
    wanip = "WANIPConnection"
    assert await query(settings, wanip, [("varName", "ConnectionStatus")]) == "Connected"
    assert await query(settings, wanip, [("varName", "ExternalIPAddress")]) == str(WAN_ADDRESS)
    assert await query(settings, wanip, [("varName", "PortMappingNumberOfEntries")]) == "1"
    assert await query(settings, wanip, [("varName", "PossibleConnectionTypes")]) == "IP_Routed"
    count = await query(
        settings, wanip, [("varName", "PortMappingNumberOfEntries")], requester=LAN_HOST2
    )
    assert count == "0"
    system_update_id = await query(settings, wanip, [("varName", "SystemUpdateID")])
    assert int(system_update_id) == settings.core.system_update_id
    assert (
        await query(settings, "WANCommonInterfaceConfig", [("varName", "PhysicalLinkStatus")])
        == "Up"
    )
    service = await query(settings, "Layer3Forwarding", [("varName", "DefaultConnectionService")])
    assert service == ROOTS[2].default_connection_service()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ([("varName", "RemoteHost")], 404),  # not evented
        ([("varName", "NoSuchVar")], 404),
        ([], 402),
        ([("varName", "ConnectionStatus"), ("extra", "1")], 402),
    ],
)
async def test_query_state_variable_errors(
    settings: ControlSettings, args: list[tuple[str, str]], code: int
) -> None:
    with pytest.raises(UPnPError) as info:
        await query(settings, "WANIPConnection", args)
    assert info.value.code == code


# ---- response bytes ----------------------------------------------------------------------------


def test_build_action_response_plain_equals_build_response() -> None:
    service_type = "urn:schemas-upnp-org:service:WANIPConnection:2"
    outputs = [("NewExternalIPAddress", "198.19.0.1")]
    assert build_action_response(service_type, "GetExternalIPAddress", outputs) == build_response(
        service_type, "GetExternalIPAddress", outputs
    )


def test_build_action_response_cdata() -> None:
    """WIP-33: the listing travels in CDATA, readable by lxml and by miniupnpc's parser."""
    fragment = '<p:PortMappingList xmlns:p="urn:x">&amp;&lt;</p:PortMappingList>'
    body = build_action_response(
        "urn:schemas-upnp-org:service:WANIPConnection:2",
        "GetListOfPortMappings",
        [("NewPortListing", Cdata(fragment))],
    )
    assert f"<NewPortListing><![CDATA[{fragment}]]></NewPortListing>".encode() in body
    assert etree.fromstring(body).findtext(".//NewPortListing") == fragment
    with pytest.raises(ValueError, match="CDATA"):
        build_action_response(
            "urn:schemas-upnp-org:service:WANIPConnection:2",
            "GetListOfPortMappings",
            [("NewPortListing", Cdata("a]]>b"))],
        )


def test_query_response_uses_the_control_namespace() -> None:
    body = build_action_response(CONTROL_NS, "QueryStateVariable", [("return", "Connected")])
    assert (
        etree.fromstring(body).findtext(f".//{{{CONTROL_NS}}}QueryStateVariableResponse/return")
        == "Connected"
    )


# ---- fuzz --------------------------------------------------------------------------------------

ADD_ARGUMENT_NAMES = list(add_args())


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    version=st.sampled_from(VERSIONS),
    argument=st.sampled_from(ADD_ARGUMENT_NAMES),
    value=st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            ["0", "65535", "65536", "1024", "198.18.0.11", "198.18.0.10", "TCP", "udp"]
        ),
    ),
)
async def test_add_port_mapping_fuzz(
    settings: ControlSettings, version: int, argument: str, value: str
) -> None:
    """Any text in any AddPortMapping argument: a mapping of the caller's, or a fault; no crash."""
    code = 200
    try:
        await call(settings, version, "AddPortMapping", {**add_args(), argument: value})
    except UPnPError as error:
        code = error.code
    assert code in {200, 402, 501, 601, 605, 606, 715, 716, 718, 728, 729, 732}
    for mapping in settings.core.mappings():
        assert mapping.internal_client == LAN_HOST
        assert mapping.owner == LAN_HOST
        assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in mapping.description)
    for mapping in list(settings.core.mappings()):
        await settings.core.remove_mapping(mapping.key)
