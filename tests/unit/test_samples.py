"""The official ICS/ICF samples and Wine's NAT-Traversal conformance test, re-expressed.

One test (or a few) per acceptance test T1..T18 of ics-icf-model.md section 4, run on the `core`
fixture: wan0 public (198.19.0.1), lan0 private (198.18.0.1/24), lan1 and br0 unshared, on the
memory backend, whose `mappings` are what would forward traffic. The docs' 192.168.0.2 target is
the lab's 198.18.0.2.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from typing import Any, cast

import pytest
from support import (
    LAN_GATEWAY,
    LAN_HOST,
    LAN_HOST2,
    WAN_ADDRESS,
    FakeClock,
    config,
    drain,
    lab_connections,
    wait_for_event,
)

from igd.natcore import (
    ConflictError,
    ConnectionCharacteristics,
    ConnectionNotFoundError,
    ConnectionProps,
    ConnectionStatus,
    ExternalAddressChanged,
    InvalidAddressError,
    InvalidPortError,
    InvalidProtocolError,
    InvalidRequestError,
    InvalidTargetError,
    IPProtocol,
    Mapping,
    MappingKey,
    MappingNotFoundError,
    MappingRemoved,
    MediaType,
    NumberOfEntriesChanged,
    ObjectNoLongerValidError,
    RemovalReason,
    SharingCause,
    SharingChanged,
    SharingConfiguration,
    SharingConnectionEnumFlags,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
    StaticPortMapping,
    StaticPortMappingCollection,
    TargetType,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend

PUBLIC = SharingConnectionType.PUBLIC
PRIVATE = SharingConnectionType.PRIVATE
TCP = IPProtocol.TCP
UDP = IPProtocol.UDP
SHARED = ConnectionCharacteristics.SHARED
FIREWALLED = ConnectionCharacteristics.FIREWALLED

SAMPLE_TARGET = "198.18.0.2"  # the samples' 192.168.0.2, moved into the lab's LAN
SAMPLE_NAME = "Ben's Port Mapping"
NEW_WAN = IPv4Address("198.19.0.2")
E_INVALIDARG = 0x80070057
FILE_NOT_FOUND = 0x80070002  # HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND), T16


# --- helpers -------------------------------------------------------------------------------------


async def close_iterator(iterator: AsyncIterator[Any]) -> None:
    """Finalise an async generator the test abandoned, so it leaves nothing pending."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def wan_with(address: str) -> list[ConnectionProps]:
    """The lab's connections with wan0 on another address."""
    return [
        make_connection("wan0", addresses=[address]) if p.name == "wan0" else p
        for p in lab_connections()
    ]


def static_fields(m: StaticPortMapping) -> tuple[str, int, int, str, str, bool, str]:
    """The seven IStaticPortMapping properties, as MsQuic's QuicUPnP reads them."""
    return (
        m.external_ip_address,
        m.external_port,
        m.internal_port,
        m.protocol,
        m.internal_client,
        m.enabled,
        m.description,
    )


def static_collection(core: SharingManager) -> StaticPortMappingCollection:
    collection = core.nat.static_port_mapping_collection
    assert collection is not None, "wan0 is public, so the static collection must exist"
    return collection


# The C++ sample's filter (adding-and-removing-port-mappings-c-): shared or firewalled, and not a
# connection to a remote ICS host.
SAMPLE_WANTED = SHARED | FIREWALLED
SAMPLE_REMOTE = {MediaType.SHAREDACCESSHOST_LAN, MediaType.SHAREDACCESSHOST_RAS}


def sample_candidates(core: SharingManager) -> list[SharingConfiguration]:
    result = []
    for conn in core.every_connection():
        props = conn.props()
        if props.characteristics & SAMPLE_WANTED and props.media_type not in SAMPLE_REMOTE:
            result.append(core.configuration_for(conn))
    return result


async def sample_delete_port_mapping(core: SharingManager, protocol: IPProtocol, port: int) -> bool:
    """The sample's DeletePortMapping: on the first candidate, Delete() the (protocol, port) one."""
    for cfg in sample_candidates(core):
        for mapping in cfg.port_mappings(SharingConnectionEnumFlags.DEFAULT):
            props = mapping.properties
            if props.protocol is protocol and props.external_port == port:
                await mapping.delete()
                return True
        return False
    return False


async def sample_do_the_work(core: SharingManager) -> list[str]:
    """The sample's DoTheWork: an asymmetric 555 -> 444 mapping, enabled, on every candidate."""
    touched: list[str] = []
    for cfg in sample_candidates(core):
        if cfg.sharing_enabled or cfg.internet_firewall_enabled:
            mapping = await cfg.add_port_mapping(
                SAMPLE_NAME, TCP, 555, 444, SAMPLE_TARGET, TargetType.IP_ADDRESS
            )
            assert not mapping.properties.enabled
            await mapping.enable()
            touched.append(cfg.connection.name)
    return touched


# --- 4.1: T1 -------------------------------------------------------------------------------------


async def test_t01_every_connection_has_a_configuration_and_props(core: SharingManager) -> None:
    """T1 (section 4.1): EnumEveryConnection yields, for each connection, a configuration
    (INetSharingConfigurationForINetConnection) and props with Name, Guid, DeviceName, Status
    and MediaType."""
    assert core.sharing_installed
    lab = {p.guid: p for p in lab_connections()}
    seen: list[str] = []
    for conn in core.every_connection():
        cfg = core.configuration_for(conn)
        props = core.connection_props(conn.guid)
        assert cfg.connection == conn
        assert props == conn.props()
        expected = lab[props.guid]
        assert (props.name, props.guid, props.device_name, props.status, props.media_type) == (
            expected.name,
            expected.guid,
            expected.device_name,
            ConnectionStatus.CONNECTED,
            expected.media_type,
        )
        assert props.guid_string == "{" + str(expected.guid).upper() + "}"
        seen.append(props.name)
    assert sorted(seen) == ["br0", "lan0", "lan1", "wan0"]
    roles = {
        c.name: core.configuration_for(c).sharing_connection_type for c in core.every_connection()
    }
    assert roles == {"br0": None, "lan0": PRIVATE, "lan1": None, "wan0": PUBLIC}


async def test_t01_connection_props_accepts_a_connection_handle(core: SharingManager) -> None:
    """T1 (section 4.1, 6.4, 6.9): NetConnectionProps(c) is called with the connection the
    enumeration yielded; `connection_props` is specified as taking `Connection | uuid.UUID`."""
    for conn in core.every_connection():
        try:
            props = cast(Any, core).connection_props(conn)
        except ObjectNoLongerValidError as exc:
            pytest.fail(f"connection_props({conn!r}) on a present connection raised {exc!r}")
        assert props == core.connection_props(conn.guid)


# --- 4.2: T2, T3 ---------------------------------------------------------------------------------


async def test_t02_role_collections_hold_at_most_one_public_connection(
    core: SharingManager,
) -> None:
    """T2 (section 4.2, R1): EnumPublicConnections never holds more than one connection, however
    often the public role is handed around; EnumEveryConnection may hold many."""
    assert len(core.every_connection()) == 4
    assert [c.name for c in core.public_connections()] == ["wan0"]
    assert [c.name for c in core.private_connections()] == ["lan0"]
    for name in ("lan1", "wan0", "lan1"):
        await config(core, name).enable_sharing(PUBLIC)
        assert [c.name for c in core.public_connections(SharingConnectionEnumFlags.DEFAULT)] == [
            name
        ]
        shared = [c.name for c in core.every_connection() if c.props().characteristics & SHARED]
        assert shared == [name]


async def test_t03_name_lookup_is_case_insensitive_and_firewall_sets_the_flag(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """T3 (section 4.2, R8): the sample finds a connection by Name case-insensitively;
    EnableInternetFirewall sets InternetFirewallEnabled and NCCF_FIREWALLED."""
    conn = core.find_connection(name="LAN1")
    assert conn == core.find_connection(name="lan1")
    assert conn.props().name == "lan1"
    cfg = core.configuration_for(conn)
    assert not cfg.internet_firewall_enabled
    assert not conn.props().characteristics & FIREWALLED

    await cfg.enable_internet_firewall()

    assert cfg.internet_firewall_enabled
    assert cfg.effective_firewall_enabled
    assert conn.props().characteristics & FIREWALLED
    applied = {c.ifname: c for c in backend.connections}
    assert applied["lan1"].firewall
    with pytest.raises(ConnectionNotFoundError):
        core.find_connection(name="LAN9")


# --- 4.3: T4 - T9 --------------------------------------------------------------------------------


async def test_t04_add_port_mapping_returns_a_disabled_mapping(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """T4 (section 4.3, R10): AddPortMapping returns a mapping whose Enabled is False; it is
    listed but forwards nothing."""
    cfg = config(core, "wan0")
    mapping = await cfg.add_port_mapping(
        SAMPLE_NAME, TCP, 555, 444, SAMPLE_TARGET, TargetType.IP_ADDRESS
    )
    props = mapping.properties
    assert props.enabled is False
    assert (
        props.protocol,
        props.external_port,
        props.internal_port,
        props.internal_client,
        props.description,
        props.connection,
    ) == (TCP, 555, 444, IPv4Address(SAMPLE_TARGET), SAMPLE_NAME, cfg.connection.guid)
    assert cfg.port_mappings() == (mapping,)
    assert cfg.port_mappings(SharingConnectionEnumFlags.ENABLED) == ()
    assert mapping.key not in backend.mappings


async def test_t05_enable_makes_the_mapping_forward(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """T5 (section 4.3, R10): Enable() turns the mapping on and traffic flows: the data plane
    holds it on the public connection; Disable() withdraws it but keeps it listed."""
    cfg = config(core, "wan0")
    mapping = await cfg.add_port_mapping(
        SAMPLE_NAME, TCP, 555, 444, SAMPLE_TARGET, TargetType.IP_ADDRESS
    )
    await mapping.enable()

    assert mapping.properties.enabled is True
    assert backend.mappings[mapping.key] == mapping.properties
    applied = {c.ifname: c for c in backend.connections}
    assert applied["wan0"].role is PUBLIC

    await mapping.disable()
    assert mapping.properties.enabled is False
    assert mapping.key not in backend.mappings
    assert cfg.port_mappings() == (mapping,)


async def test_t05_sample_on_every_connection_maps_the_port_once(core: SharingManager) -> None:
    """T5 (section 4.3 step 3, 1.11.1, S6): the C++ sample adds TCP 555 -> 444 on every connection
    that is shared or firewalled. Here a (protocol, external port) is one resource of the gateway,
    held by at most one connection (the project's decision, documented in table.py): the first
    connection gets the enabled mapping, the second add is a clear conflict and changes nothing."""
    await config(core, "lan1").enable_internet_firewall()

    with pytest.raises(ConflictError, match="TCP port 555"):
        await sample_do_the_work(core)

    held = [c.name for c in core.every_connection() if core.mappings_of(c.guid)]
    assert held == ["lan1"]
    props = config(core, "lan1").port_mapping(TCP, 555).properties
    assert props.enabled
    assert core.mapping_count == 1


async def test_t06_asymmetric_ports(core: SharingManager, backend: MemoryBackend) -> None:
    """T6 (section 4.3): external and internal ports may differ (555 -> 444); the data plane
    forwards the external port to the internal one."""
    cfg = config(core, "wan0")
    tcp = await cfg.add_port_mapping(SAMPLE_NAME, TCP, 555, 444, SAMPLE_TARGET, enabled=True)
    udp = await cfg.add_port_mapping("udp", UDP, 5353, 53530, LAN_HOST, enabled=True)

    for handle, external, internal in ((tcp, 555, 444), (udp, 5353, 53530)):
        applied = backend.mappings[handle.key]
        assert (applied.external_port, applied.internal_port) == (external, internal)
    assert cfg.port_mapping(TCP, 555).properties.internal_port == 444
    assert cfg.port_mapping(UDP, 5353).properties.internal_port == 53530


async def test_t07_target_by_name(core: SharingManager, backend: MemoryBackend) -> None:
    """T7 (section 4.3, 1.11.2): ICSTT_NAME ("compnametst2" in the JScript sample) targets a
    host by name; the name is kept and the mapping forwards to the address it resolves to."""
    cfg = config(core, "wan0")
    mapping = await cfg.add_port_mapping(
        "by name", TCP, 8080, 80, "lanhost", TargetType.NAME, enabled=True
    )
    props = mapping.properties
    assert props.target_type is TargetType.NAME
    assert props.target_name == "lanhost"
    assert props.internal_client == LAN_HOST
    assert backend.mappings[mapping.key].internal_client == LAN_HOST

    inferred = await cfg.add_port_mapping("inferred name", TCP, 8081, 81, "lanhost2")
    assert inferred.properties.target_type is TargetType.NAME
    assert inferred.properties.internal_client == LAN_HOST2


@pytest.mark.parametrize(
    ("target", "target_type"),
    [
        ("198.18.0.11", TargetType.IP_ADDRESS),
        ("198.18.0.11", None),
        (IPv4Address("198.18.0.11"), TargetType.IP_ADDRESS),
        (IPv4Address("198.18.0.11"), None),
    ],
)
async def test_t07_target_by_ip_address(
    core: SharingManager,
    backend: MemoryBackend,
    target: str | IPv4Address,
    target_type: TargetType | None,
) -> None:
    """T7 (section 4.3, 6.4): ICSTT_IPADDRESS targets an address; with no target type, an IPv4
    literal is inferred to be an address."""
    mapping = await config(core, "wan0").add_port_mapping(
        "by ip", TCP, 8080, 80, target, target_type, enabled=True
    )
    props = mapping.properties
    assert props.target_type is TargetType.IP_ADDRESS
    assert props.target_name is None
    assert props.internal_client == LAN_HOST2
    assert backend.mappings[mapping.key].internal_client == LAN_HOST2


async def test_t07_unresolvable_or_mistyped_target_changes_nothing(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """T7 (section 4.3, 6.6): a name that does not resolve raises InvalidTargetError; a name
    passed as ICSTT_IPADDRESS or an address passed as ICSTT_NAME is refused; nothing changes."""
    cfg = config(core, "wan0")
    await cfg.add_port_mapping("kept", TCP, 9000, 9000, LAN_HOST, enabled=True)
    mappings, applied = tuple(core.mappings()), dict(backend.mappings)
    events = core.events()

    with pytest.raises(InvalidTargetError) as info:
        await cfg.add_port_mapping("nobody", TCP, 8080, 80, "nohost", TargetType.NAME)
    assert info.value.hresult == E_INVALIDARG
    with pytest.raises(InvalidTargetError):
        await cfg.add_port_mapping("nobody", TCP, 8080, 80, "nohost", enabled=True)
    with pytest.raises(InvalidAddressError):
        await cfg.add_port_mapping("mistyped", TCP, 8080, 80, "lanhost", TargetType.IP_ADDRESS)
    with pytest.raises(InvalidRequestError):
        await cfg.add_port_mapping("mistyped", TCP, 8080, 80, LAN_HOST, TargetType.NAME)

    assert tuple(core.mappings()) == mappings
    assert backend.mappings == applied
    with pytest.raises(MappingNotFoundError):
        cfg.port_mapping(TCP, 8080)
    assert await drain(events) == []


async def test_t08_delete_is_remove_port_mapping(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """T8 (section 4.3, 1.6): Delete() is RemovePortMapping(this); either way the mapping leaves
    the enumeration and the data plane, with the same events."""
    cfg = config(core, "wan0")
    first = await cfg.add_port_mapping(SAMPLE_NAME, TCP, 555, 444, SAMPLE_TARGET, enabled=True)
    second = await cfg.add_port_mapping(SAMPLE_NAME, TCP, 556, 444, SAMPLE_TARGET, enabled=True)
    third = await cfg.add_port_mapping(SAMPLE_NAME, TCP, 557, 444, SAMPLE_TARGET, enabled=True)
    snapshots = [first.properties, second.properties, third.properties]
    assert len(backend.mappings) == 3
    events = core.events(kinds={MappingRemoved})

    await first.delete()
    await cfg.remove_port_mapping((TCP, 556))
    await cfg.remove_port_mapping(third)

    assert cfg.port_mappings() == ()
    assert backend.mappings == {}
    assert await drain(events) == [MappingRemoved(m, RemovalReason.DELETED) for m in snapshots]
    with pytest.raises(MappingNotFoundError):
        cfg.port_mapping(TCP, 555)
    with pytest.raises(MappingNotFoundError):
        await cfg.remove_port_mapping((TCP, 555))
    with pytest.raises(ObjectNoLongerValidError):
        _ = first.properties


async def test_t09_delete_then_add_idiom_is_idempotent(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """T9 (section 4.3 steps 2-3, S6): the samples delete (protocol, port) "in case it exists
    already" before adding, because adding an existing key fails; running the whole sample twice
    ends in the same single enabled mapping."""
    states: list[tuple[tuple[Mapping, ...], dict[MappingKey, Mapping]]] = []
    for _ in range(2):
        await sample_delete_port_mapping(core, TCP, 555)
        assert await sample_do_the_work(core) == ["wan0"]
        states.append((tuple(core.mappings()), dict(backend.mappings)))

    assert states[0] == states[1]
    (mapping,) = states[1][0]
    assert (mapping.protocol, mapping.external_port, mapping.internal_port) == (TCP, 555, 444)
    assert mapping.enabled
    assert list(states[1][1].values()) == [mapping]

    # Without the delete, the add fails on the held key (S6) and changes nothing.
    with pytest.raises(ConflictError):
        await config(core, "wan0").add_port_mapping(SAMPLE_NAME, TCP, 555, 444, SAMPLE_TARGET)
    assert tuple(core.mappings()) == states[1][0]

    # The JScript flavour (delete by protocol + external + internal port) also works after it.
    for handle in config(core, "wan0").port_mappings():
        p = handle.properties
        if (p.protocol, p.external_port, p.internal_port) == (TCP, 555, 444):
            await handle.delete()
    assert await sample_delete_port_mapping(core, TCP, 555) is False
    assert backend.mappings == {}


# --- 4.4: T10 - T12 ------------------------------------------------------------------------------


async def test_t10_enable_public_silently_unshares_the_old_public(core: SharingManager) -> None:
    """T10 (section 4.4, R2, S1): EnableSharing(PUBLIC) on B while A is public succeeds and
    un-shares A in the same change, reported as SharingChanged(A, cause=DISPLACED)."""
    wan, lan1 = config(core, "wan0"), config(core, "lan1")
    events = core.events(kinds={SharingChanged})

    await lan1.enable_sharing(PUBLIC)

    assert lan1.sharing_enabled
    assert lan1.sharing_connection_type is PUBLIC
    assert not wan.sharing_enabled
    assert wan.sharing_connection_type is None
    received = await drain(events)
    assert len(received) == 2
    assert SharingChanged(wan.connection.guid, None, SharingCause.DISPLACED) in received
    assert SharingChanged(lan1.connection.guid, PUBLIC, SharingCause.EXPLICIT) in received
    assert [c.name for c in core.public_connections()] == ["lan1"]


async def test_t11_public_side_gets_the_firewall_private_keeps_its_setting(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """T11 (section 4.4, R4, S3): publicly sharing a connection enables ICF on it; privately
    sharing one leaves its firewall setting alone (on stays on, off stays off)."""
    wan, lan0, lan1 = config(core, "wan0"), config(core, "lan0"), config(core, "lan1")
    assert wan.internet_firewall_enabled  # the fixture shared wan0 publicly
    assert not lan0.internet_firewall_enabled  # and lan0 privately
    assert not lan1.internet_firewall_enabled

    await lan1.enable_sharing(PUBLIC)
    assert lan1.internet_firewall_enabled
    assert lan1.connection.props().characteristics & FIREWALLED
    assert {c.ifname: c.firewall for c in backend.connections}["lan1"]

    assert wan.internet_firewall_enabled  # displaced: the firewall is not touched (R11)
    await wan.enable_sharing(PRIVATE)
    assert wan.sharing_connection_type is PRIVATE
    assert wan.internet_firewall_enabled  # private keeps "on"
    assert not lan0.internet_firewall_enabled  # private keeps "off"


async def test_t12_disable_sharing_on_an_unshared_connection_disables_its_mappings(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """T12 (section 4.4, R11, R12): DisableSharing on a connection that is not shared succeeds
    (twice, too), disables all its mappings and leaves its firewall alone."""
    lan1 = config(core, "lan1")
    await lan1.enable_internet_firewall()
    lan1_address = lab_connections()[2].addresses[0].ip
    opened = await lan1.add_port_mapping("open port", TCP, 8443, 8443, lan1_address, enabled=True)
    assert opened.key in backend.mappings  # an open port on a firewalled connection is active

    await lan1.disable_sharing()
    await lan1.disable_sharing()

    assert not lan1.sharing_enabled
    assert opened.properties.enabled is False
    assert lan1.port_mappings() == (opened,)
    assert opened.key not in backend.mappings
    assert lan1.internet_firewall_enabled


# --- 4.5: T13 - T18 (NAT Traversal, Wine's conformance test) -------------------------------------


async def test_t13_protocol_names_are_strict(core: SharingManager) -> None:
    """T13 (section 4.5, 6.5): Add(..."udp"...) is E_INVALIDARG, Add(..."UDP"...) succeeds."""
    static = static_collection(core)
    for bad in ("udp", "Udp", "tcp", "ICMP", ""):
        with pytest.raises(InvalidProtocolError) as info:
            await static.add(5000, bad, 5000, str(LAN_HOST), True, "wine")
        assert isinstance(info.value, InvalidRequestError)
        assert info.value.hresult == E_INVALIDARG
    with pytest.raises(InvalidProtocolError):
        await core.nat.dynamic_port_mapping_collection.add(
            "", 5000, "udp", 5000, str(LAN_HOST), True, "wine", 0
        )
    assert static.count == 0

    added = await static.add(5000, "UDP", 5000, str(LAN_HOST), True, "wine")
    assert added.protocol == "UDP"
    assert static.count == 1
    assert static.item(5000, "UDP").description == "wine"


async def test_t14_adding_an_existing_key_keeps_the_count(core: SharingManager) -> None:
    """T14 (section 4.5, S6): Add of an existing (port, protocol) with the same internal client
    replaces the mapping and does not change Count (nor fire NumberOfEntries); another client
    on the held key is a conflict."""
    static = static_collection(core)
    await static.add(5000, "TCP", 5000, str(LAN_HOST), True, "first")
    assert static.count == 1
    counts = core.events(kinds={NumberOfEntriesChanged})

    replaced = await static.add(5000, "TCP", 5001, str(LAN_HOST), False, "second")

    assert static.count == 1
    assert (replaced.internal_port, replaced.enabled, replaced.description) == (
        5001,
        False,
        "second",
    )
    assert static_fields(static.item(5000, "TCP")) == static_fields(replaced)
    assert await drain(counts) == []

    with pytest.raises(ConflictError):
        await static.add(5000, "TCP", 5000, str(LAN_HOST2), True, "thief")
    assert static.count == 1
    assert static.item(5000, "TCP").internal_client == str(LAN_HOST)


async def test_t15_item_rejects_bad_arguments(core: SharingManager) -> None:
    """T15 (section 4.5): Item(port, NULL) and Item(port, "udp") are E_INVALIDARG; Item(-1, ...)
    and Item(65536, ...) are E_INVALIDARG too (InvalidPortError)."""
    static = static_collection(core)
    await static.add(5000, "UDP", 5000, str(LAN_HOST), True, "wine")

    for protocol in ("udp", None):
        with pytest.raises(InvalidProtocolError) as proto_info:
            static.item(5000, cast(str, protocol))
        assert proto_info.value.hresult == E_INVALIDARG
    for port in (-1, 65536):
        with pytest.raises(InvalidPortError) as port_info:
            static.item(port, "UDP")
        assert port_info.value.hresult == E_INVALIDARG
        with pytest.raises(InvalidPortError):
            _ = static[(port, "UDP")]
    dynamic = core.nat.dynamic_port_mapping_collection
    with pytest.raises(InvalidProtocolError):
        dynamic.item("", 5000, "udp")
    with pytest.raises(InvalidPortError):
        dynamic.item("", 65536, "UDP")


async def test_t16_item_of_a_missing_mapping_is_file_not_found(core: SharingManager) -> None:
    """T16 (section 4.5, 6.6): Item of a mapping that does not exist is 0x80070002
    (MappingNotFoundError); mappings of other connections are not in the NAT view."""
    static = static_collection(core)
    await static.add(5000, "TCP", 5000, str(LAN_HOST), True, "wine")
    lan1 = config(core, "lan1")
    await lan1.enable_internet_firewall()
    await lan1.add_port_mapping("not upnp", TCP, 6000, 6000, LAN_HOST, enabled=True)

    for port, protocol in ((5000, "UDP"), (5001, "TCP"), (0, "TCP"), (6000, "TCP")):
        with pytest.raises(MappingNotFoundError) as info:
            static.item(port, protocol)
        assert info.value.hresult == FILE_NOT_FOUND
        assert isinstance(info.value, LookupError)
    with pytest.raises(MappingNotFoundError) as dyn_info:
        core.nat.dynamic_port_mapping_collection.item("", 5001, "TCP")
    assert dyn_info.value.hresult == FILE_NOT_FOUND
    assert static.count == 1


async def test_t17_enumeration_yields_fresh_objects_retrievable_by_item(
    core: SharingManager,
) -> None:
    """T17 (section 4.5, MsQuic's QuicUPnP): every enumerated (ExternalPort, Protocol) is
    retrievable by Item, which returns a distinct object with the same seven properties; the
    enumerator ends after the last item."""
    static = static_collection(core)
    await static.add(5000, "TCP", 5000, str(LAN_HOST), True, "a")
    await static.add(5000, "UDP", 5002, "lanhost2", False, "b")
    await static.add(5001, "TCP", 80, str(LAN_HOST), True, "c")

    enumerator = iter(static)
    listed = [next(enumerator), next(enumerator), next(enumerator)]
    with pytest.raises(StopIteration):
        next(enumerator)
    assert len({id(m) for m in listed}) == 3
    assert {(m.external_port, m.protocol) for m in listed} == {
        (5000, "TCP"),
        (5000, "UDP"),
        (5001, "TCP"),
    }
    again = list(static)
    for m in listed:
        item = static.item(m.external_port, m.protocol)
        assert item is not m
        assert item is not static.item(m.external_port, m.protocol)
        assert all(item is not other for other in again)
        assert static_fields(item) == static_fields(m)
        assert m.external_ip_address == str(WAN_ADDRESS)
    by_key = {(m.external_port, m.protocol): m for m in listed}
    assert static_fields(by_key[(5000, "UDP")]) == (
        str(WAN_ADDRESS),
        5000,
        5002,
        "UDP",
        "lanhost2",
        False,
        "b",
    )
    assert len(static) == static.count == 3


async def test_t18_remove_of_the_added_key(core: SharingManager, backend: MemoryBackend) -> None:
    """T18 (section 4.5): Remove of the added (port, protocol) succeeds; the mapping is gone
    from Count, Item and the data plane; removing it again is 0x80070002."""
    static = static_collection(core)
    await static.add(5000, "TCP", 5000, str(LAN_HOST), True, "a")
    await static.add(5001, "TCP", 5001, str(LAN_HOST), True, "b")
    assert len(backend.mappings) == 2

    with pytest.raises(InvalidProtocolError):
        await static.remove(5000, "tcp")
    await static.remove(5000, "TCP")

    assert static.count == 1
    with pytest.raises(MappingNotFoundError):
        static.item(5000, "TCP")
    assert [m.external_port for m in backend.mappings.values()] == [5001]
    with pytest.raises(MappingNotFoundError) as info:
        await static.remove(5000, "TCP")
    assert info.value.hresult == FILE_NOT_FOUND


async def test_t18_no_public_connection_means_no_static_collection(core: SharingManager) -> None:
    """Section 4.5 / 6.5: with no IGD (no public connection) StaticPortMappingCollection is S_OK
    with NULL (None); the dynamic collection and the event manager are still there."""
    assert core.nat.static_port_mapping_collection is not None
    await config(core, "wan0").disable_sharing()

    assert core.nat.static_port_mapping_collection is None
    assert core.nat.dynamic_port_mapping_collection.count == 0
    assert list(core.nat.dynamic_port_mapping_collection) == []
    assert core.nat.nat_event_manager is not None

    await config(core, "lan1").enable_sharing(PUBLIC)
    assert static_collection(core).count == 0


async def test_t18_dynamic_collection_keys_on_remote_host_and_counts_down_leases(
    core: SharingManager, clock: FakeClock, backend: MemoryBackend
) -> None:
    """Section 2.5 / 6.5: the dynamic collection is keyed by (remote host, port, protocol) and
    reports the remaining lease; 0 is permanent; Remove takes the same key."""
    dynamic = core.nat.dynamic_port_mapping_collection
    added = await dynamic.add("198.19.0.77", 6000, "TCP", 6000, str(LAN_HOST), True, "d", 3600)
    assert (added.remote_host, added.lease_duration) == ("198.19.0.77", 3600)
    permanent = await dynamic.add("", 6001, "UDP", 6001, str(LAN_HOST), True, "p", 0)
    assert (permanent.remote_host, permanent.lease_duration) == ("", 0)
    assert dynamic.count == 2

    clock.advance(100)
    assert dynamic.item("198.19.0.77", 6000, "TCP").lease_duration == 3500
    with pytest.raises(MappingNotFoundError):
        dynamic.item("", 6000, "TCP")  # only the exact remote host matches (WIP-10)
    with pytest.raises(MappingNotFoundError):
        static_collection(core).item(6000, "TCP")
    assert static_collection(core).item(6001, "UDP").internal_client == str(LAN_HOST)
    with pytest.raises(InvalidRequestError):
        await dynamic.add("", 6002, "TCP", 6002, str(LAN_HOST), True, "neg", -1)

    await dynamic.remove("198.19.0.77", 6000, "TCP")
    assert dynamic.count == 1
    assert [m.external_port for m in backend.mappings.values()] == [6001]


# --- 2.6 / 6.5: the NAT event manager ------------------------------------------------------------


async def test_nat_event_iterators_deliver_entries_and_external_address(
    core: SharingManager, source: StaticConnectionSource
) -> None:
    """Section 2.6 / 6.5: number_of_entries_changes() yields the new total after each add and
    remove; external_ip_address_changes() yields the public connection's new address."""
    manager = core.nat.nat_event_manager
    static = static_collection(core)
    entries = manager.number_of_entries_changes()
    addresses = manager.external_ip_address_changes()
    # Start both iterators (an `async for` would) before changing anything.
    first_count = asyncio.ensure_future(anext(entries))
    first_address = asyncio.ensure_future(anext(addresses))
    await asyncio.sleep(0)
    try:
        await static.add(5000, "TCP", 5000, str(LAN_HOST), True, "a")
        await static.add(5001, "TCP", 5001, str(LAN_HOST), True, "b")
        await static.remove(5000, "TCP")
        async with asyncio.timeout(1):
            counts = [await first_count, await anext(entries), await anext(entries)]
        assert counts == [1, 2, 1]

        source.update(wan_with("198.19.0.2/24"))
        async with asyncio.timeout(1):
            assert await first_address == str(NEW_WAN)
        assert static.item(5001, "TCP").external_ip_address == str(NEW_WAN)
    finally:
        for task in (first_count, first_address):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close_iterator(entries)
        await close_iterator(addresses)


async def test_nat_event_iterators_subscribe_when_called(core: SharingManager) -> None:
    """Section 6.5 / 6.8: like `core.events()`, a NAT event iterator delivers every change made
    after it was obtained, even when the caller starts reading later."""
    manager = core.nat.nat_event_manager
    entries = manager.number_of_entries_changes()
    try:
        await static_collection(core).add(5000, "TCP", 5000, str(LAN_HOST), True, "a")
        try:
            async with asyncio.timeout(0.5):
                count = await anext(entries)
        except TimeoutError:
            pytest.fail("the add made after number_of_entries_changes() was never delivered")
        assert count == 1
    finally:
        await close_iterator(entries)


async def test_nat_event_callbacks_sync_and_async(
    core: SharingManager, source: StaticConnectionSource
) -> None:
    """Section 2.6 / 6.8: NumberOfEntriesCallback and ExternalIPAddressCallback accept sync or
    async callables; assigning None unregisters, as assigning a new IUnknown does in COM."""
    manager = core.nat.nat_event_manager
    static = static_collection(core)
    counts: list[object] = []
    addresses: list[object] = []
    got_count, got_address = asyncio.Event(), asyncio.Event()

    def on_count(value: object) -> None:
        counts.append(value)
        got_count.set()

    async def on_address(value: object) -> None:
        await asyncio.sleep(0)
        addresses.append(value)
        got_address.set()

    manager.number_of_entries_callback = on_count
    manager.external_ip_address_callback = on_address
    assert manager.number_of_entries_callback is on_count
    assert manager.external_ip_address_callback is on_address

    await static.add(5000, "TCP", 5000, str(LAN_HOST), True, "a")
    source.update(wan_with("198.19.0.2/24"))
    async with asyncio.timeout(1):
        await got_count.wait()
        await got_address.wait()
    assert counts == [1]
    assert addresses == [str(NEW_WAN)]

    manager.number_of_entries_callback = None
    manager.external_ip_address_callback = None
    assert manager.number_of_entries_callback is None
    events = core.events(kinds={NumberOfEntriesChanged, ExternalAddressChanged})
    await static.add(5001, "TCP", 5001, str(LAN_HOST), True, "b")
    source.update(wan_with("198.19.0.3/24"))
    await wait_for_event(events, ExternalAddressChanged)
    await asyncio.sleep(0.05)
    assert counts == [1]
    assert addresses == [str(NEW_WAN)]


async def test_nat_number_of_entries_counts_every_mapping(core: SharingManager) -> None:
    """Section 2.6: NewNumberOfEntries fires when the *total* number of mappings changes (the
    one table, as GetGenericPortMappingEntry enumerates it), while the static collection's Count
    covers the public connection only: an open port on a firewalled lan1 counts in the total."""
    manager = core.nat.nat_event_manager
    static = static_collection(core)
    lan1 = config(core, "lan1")
    await lan1.enable_internet_firewall()
    entries = manager.number_of_entries_changes()
    first = asyncio.ensure_future(anext(entries))
    await asyncio.sleep(0)
    try:
        await static.add(5000, "TCP", 5000, str(LAN_HOST), True, "a")
        await lan1.add_port_mapping("open port", TCP, 6000, 6000, LAN_GATEWAY, enabled=True)
        await static.add(5001, "TCP", 5001, str(LAN_HOST), True, "b")
        async with asyncio.timeout(1):
            reported = [await first]
        reported += await drain(entries)
        assert static.count == 2
        assert reported == [1, 2, 3]
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await close_iterator(entries)


async def test_static_mapping_editors_change_the_mapping_in_place(
    core: SharingManager, backend: MemoryBackend, clock: FakeClock
) -> None:
    """IStaticPortMapping Edit*/Enable and IDynamicPortMapping RenewLease (ics-icf 2.4, 2.5):
    the key stays, the fields change, the object reads the new values, the backend follows."""
    static = static_collection(core)
    entry = await static.add(5050, "TCP", 5050, str(LAN_HOST), True, "before")
    await entry.edit_description("after")
    await entry.edit_internal_port(6060)
    await entry.edit_internal_client("lanhost2")
    assert (entry.description, entry.internal_port, entry.internal_client) == (
        "after",
        6060,
        str(LAN_HOST2),
    )
    await entry.enable(False)
    assert not entry.enabled
    assert not any(k.external_port == 5050 for k in backend.mappings)
    fresh = static.item(5050, "TCP")
    assert (fresh.description, fresh.internal_port, fresh.enabled) == ("after", 6060, False)

    dynamic = core.nat.dynamic_port_mapping_collection
    leased = await dynamic.add("", 5151, "UDP", 5151, str(LAN_HOST), True, "leased", 60)
    assert leased.lease_duration == 60
    clock.advance(30)
    assert await leased.renew_lease(600) == 600
    assert dynamic.item("", 5151, "UDP").lease_duration == 600
