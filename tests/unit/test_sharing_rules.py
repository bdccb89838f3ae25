"""The sharing model's rules R1-R15 and the core's S-rules (ics-icf-model.md 1.10, 6.4).

Most tests run on the `core` fixture (wan0 public, lan0 private, lan1 and br0 unshared, memory
backend and store). The memory backend's `mappings` and `connections` are the applied state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import TypeVar, cast

import pytest
from support import (
    LAN_HOST,
    LAN_HOST2,
    WAN_ADDRESS,
    FakeClock,
    config,
    drain,
    fake_resolver,
    lab_connections,
    wait_for_event,
)

from igd.natcore import (
    BackendError,
    Client,
    ConnectionAdded,
    ConnectionChanged,
    ConnectionCharacteristics,
    ConnectionProps,
    ConnectionRemoved,
    Event,
    ExternalAddressChanged,
    FirewallChanged,
    FirewallNotAllowedError,
    FirewallSettings,
    InvalidRequestError,
    IPProtocol,
    Mapping,
    MappingChanged,
    MappingKey,
    MappingRemoved,
    MappingRequest,
    MediaType,
    MemoryStore,
    NotShareableError,
    NumberOfEntriesChanged,
    ObjectNoLongerValidError,
    Origin,
    PrivatePolicy,
    RemovalReason,
    SharingCause,
    SharingChanged,
    SharingConnectionEnumFlags,
    SharingConnectionType,
    SharingManager,
    SqliteStore,
    StateStore,
    StaticConnectionSource,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend

PUBLIC = SharingConnectionType.PUBLIC
PRIVATE = SharingConnectionType.PRIVATE
TCP = IPProtocol.TCP
UDP = IPProtocol.UDP
CC = ConnectionCharacteristics
UPNP_CLIENT = Client(Origin.UPNP, LAN_HOST)
LAN1_ADDRESS = IPv4Address("198.18.1.1")
NEW_WAN = IPv4Address("198.19.0.2")
E_INVALIDARG = 0x80070057
E_NOINTERFACE = 0x80004002

E = TypeVar("E")


# --- helpers -------------------------------------------------------------------------------------


def roles(core: SharingManager) -> dict[str, SharingConnectionType | None]:
    return {
        c.name: core.configuration_for(c).sharing_connection_type for c in core.every_connection()
    }


def firewall_flags(core: SharingManager) -> dict[str, bool]:
    return {
        c.name: core.configuration_for(c).internet_firewall_enabled for c in core.every_connection()
    }


def applied_firewall(backend: MemoryBackend) -> dict[str, bool]:
    return {c.ifname: c.firewall for c in backend.connections}


def active_keys(core: SharingManager) -> set[MappingKey]:
    """What the data plane should hold: enabled mappings on a present public/firewalled link."""
    present = {c.guid for c in core.every_connection()}
    public = {c.guid for c in core.public_connections()}
    return {
        m.key
        for m in core.mappings()
        if m.enabled
        and m.connection in present
        and (
            m.connection in public
            or core.configuration_for(m.connection).effective_firewall_enabled
        )
    }


def lab_with(
    *extra: ConnectionProps, without: Iterable[str] = (), **replaced: str
) -> list[ConnectionProps]:
    """The lab's connections, minus `without`, with `name=address` re-addressed, plus `extra`."""
    gone = set(without)
    result: list[ConnectionProps] = []
    for props in lab_connections():
        if props.name in gone:
            continue
        if props.name in replaced:
            props = make_connection(props.name, addresses=[replaced[props.name]])
        result.append(props)
    return [*result, *extra]


async def update_source(
    core: SharingManager,
    source: StaticConnectionSource,
    props: list[ConnectionProps],
    kind: type[E],
) -> E:
    """Give the source a new set and wait until the core has taken it in (an event of `kind`)."""
    events = core.events(kinds={kind})
    source.update(props)
    return await wait_for_event(events, kind)


async def add_upnp_mapping(core: SharingManager, port: int) -> Mapping:
    return await core.add_mapping(
        MappingRequest(TCP, port, LAN_HOST, port, description="upnp"), UPNP_CLIENT
    )


async def open_core(
    store: StateStore,
    backend: MemoryBackend,
    source: StaticConnectionSource,
    *,
    private_policy: PrivatePolicy = PrivatePolicy.MULTIPLE,
) -> SharingManager:
    return await SharingManager.open(
        backend=backend,
        store=store,
        source=source,
        clock=FakeClock(),
        resolver=fake_resolver,
        private_policy=private_policy,
    )


@pytest.fixture
async def replace_core() -> AsyncIterator[SharingManager]:
    """Like `core`, with PrivatePolicy.REPLACE (the Vista+ ICS behaviour)."""
    manager = await open_core(
        MemoryStore(),
        MemoryBackend(),
        StaticConnectionSource(lab_connections()),
        private_policy=PrivatePolicy.REPLACE,
    )
    await manager.share(manager.find_connection(name="wan0"), manager.find_connection(name="lan0"))
    yield manager
    await manager.aclose()


# --- R1, R2: one public connection ---------------------------------------------------------------


async def test_r1_at_most_one_public_connection(core: SharingManager) -> None:
    """R1 (S1): whichever connection is made public, exactly one is, and only it carries
    NCCF_SHARED."""
    for name in ("lan1", "wan0", "lan0", "wan0"):
        await config(core, name).enable_sharing(PUBLIC)
        assert [c.name for c in core.public_connections()] == [name]
        shared = [c.name for c in core.every_connection() if c.props().characteristics & CC.SHARED]
        assert shared == [name]


async def test_r2_enabling_public_displaces_the_old_public_without_error(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """R2 (S1): EnableSharing(PUBLIC) on B while A is public demotes A in the same change,
    raises nothing, and reports SharingChanged(A, None, DISPLACED); A's mappings stop."""
    wan, lan1 = config(core, "wan0"), config(core, "lan1")
    kept = await wan.add_port_mapping("kept", TCP, 8080, 80, LAN_HOST, enabled=True)
    assert kept.key in backend.mappings
    events = core.events(kinds={SharingChanged})

    await lan1.enable_sharing(PUBLIC)

    assert roles(core) == {"br0": None, "lan0": PRIVATE, "lan1": PUBLIC, "wan0": None}
    received = await drain(events)
    assert SharingChanged(wan.connection.guid, None, SharingCause.DISPLACED) in received
    assert SharingChanged(lan1.connection.guid, PUBLIC, SharingCause.EXPLICIT) in received
    assert len(received) == 2
    assert kept.properties.enabled is False
    assert backend.mappings == {}
    assert {c.ifname: c.role for c in backend.connections}["lan1"] is PUBLIC


async def test_r2_moving_the_public_role_reports_the_new_external_address(
    core: SharingManager,
) -> None:
    """R2 with WIP-63 / section 2.6: the external address is the public connection's, so
    moving the public role from wan0 (198.19.0.1) to lan1 (198.18.1.1) changes it and must be
    reported as ExternalAddressChanged, as a WAN address change is."""
    events = core.events(kinds={ExternalAddressChanged})
    lan1 = config(core, "lan1")

    await lan1.enable_sharing(PUBLIC)

    assert core.external_address == LAN1_ADDRESS
    assert await drain(events) == [
        ExternalAddressChanged(lan1.connection.guid, WAN_ADDRESS, LAN1_ADDRESS)
    ]


# --- R3: private role ----------------------------------------------------------------------------


async def test_r3_multiple_policy_keeps_several_private_connections(core: SharingManager) -> None:
    """R3 (PrivatePolicy.MULTIPLE, the default): a second EnableSharing(PRIVATE) adds a private
    connection and displaces nobody."""
    assert core.private_policy is PrivatePolicy.MULTIPLE
    events = core.events(kinds={SharingChanged})

    await config(core, "lan1").enable_sharing(PRIVATE)

    assert [c.name for c in core.private_connections()] == ["lan0", "lan1"]
    assert [c.name for c in core.public_connections()] == ["wan0"]
    assert await drain(events) == [
        SharingChanged(core.find_connection(name="lan1").guid, PRIVATE, SharingCause.EXPLICIT)
    ]
    for name in ("lan0", "lan1"):
        assert core.find_connection(name=name).props().characteristics & CC.SHARED_PRIVATE


async def test_r3_replace_policy_unshares_the_older_private(replace_core: SharingManager) -> None:
    """R3 (PrivatePolicy.REPLACE, the Vista+ behaviour): EnableSharing(PRIVATE) on lan1
    silently un-shares lan0, reported as DISPLACED."""
    core = replace_core
    lan0, lan1 = config(core, "lan0"), config(core, "lan1")
    events = core.events(kinds={SharingChanged})

    await lan1.enable_sharing(PRIVATE)

    assert [c.name for c in core.private_connections()] == ["lan1"]
    assert not lan0.sharing_enabled
    assert not lan0.connection.props().characteristics & CC.SHARED_PRIVATE
    received = await drain(events)
    assert SharingChanged(lan0.connection.guid, None, SharingCause.DISPLACED) in received
    assert SharingChanged(lan1.connection.guid, PRIVATE, SharingCause.EXPLICIT) in received
    assert len(received) == 2
    assert [c.name for c in core.public_connections()] == ["wan0"]


@pytest.mark.parametrize("policy", [PrivatePolicy.MULTIPLE, PrivatePolicy.REPLACE])
async def test_r3_public_made_private_loses_the_public_role(policy: PrivatePolicy) -> None:
    """R3 / S5: the public connection made private is no longer public: its protocol
    mappings are deleted (UNSHARED), its administrator mappings disabled, and the NAT view
    disappears."""
    backend = MemoryBackend()
    core = await open_core(
        MemoryStore(), backend, StaticConnectionSource(lab_connections()), private_policy=policy
    )
    try:
        await core.share(core.find_connection(name="wan0"), core.find_connection(name="lan0"))
        wan = config(core, "wan0")
        upnp = await add_upnp_mapping(core, 40000)
        admin = await wan.add_port_mapping("admin", TCP, 8080, 80, LAN_HOST, enabled=True)
        assert set(backend.mappings) == {upnp.key, admin.key}
        events = core.events(kinds={MappingRemoved, MappingChanged})

        await wan.enable_sharing(PRIVATE)

        assert wan.sharing_connection_type is PRIVATE
        assert core.public_connections() == ()
        assert core.nat.static_port_mapping_collection is None
        assert [m.key for m in core.mappings()] == [admin.key]
        assert admin.properties.enabled is False
        assert backend.mappings == {}
        received = await drain(events)
        assert MappingRemoved(upnp, RemovalReason.UNSHARED) in received
        changes = [e for e in received if isinstance(e, MappingChanged)]
        assert [(c.old.enabled, c.new, c.reason) for c in changes] == [
            (True, admin.properties, "unshared")
        ]
        expected_private = ["lan0", "wan0"] if policy is PrivatePolicy.MULTIPLE else ["wan0"]
        assert [c.name for c in core.private_connections()] == expected_private
    finally:
        await core.aclose()


# --- R4: public => firewall ----------------------------------------------------------------------


async def test_r4_public_enables_the_firewall_private_leaves_it(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """R4 (S3): EnableSharing(PUBLIC) turns ICF on (FirewallChanged, FIREWALLED, applied);
    EnableSharing(PRIVATE) leaves the flag as it was, on or off."""
    lan1 = config(core, "lan1")
    events = core.events(kinds={FirewallChanged})

    await lan1.enable_sharing(PUBLIC)

    assert lan1.internet_firewall_enabled
    assert lan1.connection.props().characteristics & CC.FIREWALLED
    assert applied_firewall(backend)["lan1"]
    assert await drain(events) == [FirewallChanged(lan1.connection.guid, True, True)]

    # lan1, firewalled, made private: stays firewalled. br0 (off) made private: stays off.
    await lan1.enable_sharing(PRIVATE)
    await config(core, "br0").enable_sharing(PRIVATE)
    assert lan1.internet_firewall_enabled
    assert not config(core, "br0").internet_firewall_enabled
    assert await drain(events) == []


# --- R6: shareable connections -------------------------------------------------------------------


async def test_r6_bridge_is_not_shareable(core: SharingManager) -> None:
    """R6 (S4): EnableSharing(PUBLIC) on the network bridge raises NotShareableError
    (E_NOINTERFACE) and changes nothing."""
    br0 = config(core, "br0")
    assert not br0.connection.props().shareable
    events = core.events()

    with pytest.raises(NotShareableError) as info:
        await br0.enable_sharing(PUBLIC)

    assert info.value.hresult == E_NOINTERFACE
    assert roles(core) == {"br0": None, "lan0": PRIVATE, "lan1": None, "wan0": PUBLIC}
    assert await drain(events) == []


@pytest.mark.parametrize(
    ("media_type", "characteristics", "shareable"),
    [
        (MediaType.LAN, CC.ALL_USERS, True),
        (MediaType.PHONE, CC.ALL_USERS, True),
        (MediaType.DIRECT, CC.NONE, True),
        (MediaType.ISDN, CC.NONE, True),
        (MediaType.TUNNEL, CC.NONE, True),
        (MediaType.PPPOE, CC.ALL_USERS, True),
        (MediaType.LAN, CC.ALL_USERS | CC.INCOMING_ONLY, False),
        (MediaType.PHONE, CC.INCOMING_ONLY, False),
        (MediaType.NONE, CC.ALL_USERS, False),
        (MediaType.BRIDGE, CC.ALL_USERS, False),
        (MediaType.SHAREDACCESSHOST_LAN, CC.ALL_USERS, False),
        (MediaType.SHAREDACCESSHOST_RAS, CC.ALL_USERS, False),
    ],
)
async def test_r6_shareable_media_types_and_incoming_only(
    core: SharingManager,
    source: StaticConnectionSource,
    media_type: MediaType,
    characteristics: ConnectionCharacteristics,
    shareable: bool,
) -> None:
    """R6 (section 1.4, S4): only PHONE, DIRECT, ISDN, LAN, TUNNEL and PPPOE connections without
    NCCF_INCOMING_ONLY can be made public; the others raise NotShareableError."""
    extra = make_connection(
        "x0", addresses=["198.18.5.1/24"], media_type=media_type, characteristics=characteristics
    )
    await update_source(core, source, lab_with(extra), ConnectionAdded)
    cfg = config(core, "x0")
    assert cfg.connection.props().shareable is shareable

    if shareable:
        await cfg.enable_sharing(PUBLIC)
        assert [c.name for c in core.public_connections()] == ["x0"]
    else:
        with pytest.raises(NotShareableError):
            await cfg.enable_sharing(PUBLIC)
        assert [c.name for c in core.public_connections()] == ["wan0"]
        assert not cfg.sharing_enabled


# --- R7: where ICF cannot be enabled -------------------------------------------------------------


async def test_r7_no_firewall_on_the_private_connection_or_a_bridge(
    core: SharingManager, source: StaticConnectionSource
) -> None:
    """R7 (S3): EnableInternetFirewall on the private connection, on the bridge and on a bridge
    member raises FirewallNotAllowedError (E_INVALIDARG) and leaves the flag off."""
    member = make_connection(
        "eth9", addresses=[], characteristics=CC.ALL_USERS | CC.BRIDGED, device_name="eth9"
    )
    await update_source(core, source, lab_with(member), ConnectionAdded)
    events = core.events()

    for name in ("lan0", "br0", "eth9"):
        cfg = config(core, name)
        with pytest.raises(FirewallNotAllowedError) as info:
            await cfg.enable_internet_firewall()
        assert info.value.hresult == E_INVALIDARG
        assert not cfg.internet_firewall_enabled
        assert not cfg.connection.props().characteristics & CC.FIREWALLED
    assert await drain(events) == []

    # Not private any more: allowed again.
    lan0 = config(core, "lan0")
    await lan0.disable_sharing()
    await lan0.enable_internet_firewall()
    assert lan0.internet_firewall_enabled


# --- R9: effective firewall ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("global_enabled", "shielded", "interface", "effective"),
    [
        (True, False, True, True),
        (False, False, False, False),
        (False, False, True, False),
        (True, False, False, False),
        (True, True, True, True),
        (True, True, False, True),  # shielded mode overrides the interface setting
    ],
)
async def test_r9_effective_firewall_truth_table(
    core: SharingManager,
    backend: MemoryBackend,
    global_enabled: bool,
    shielded: bool,
    interface: bool,
    effective: bool,
) -> None:
    """R9 (section 6.7): effective = global enabled and (interface or ExceptionsNotAllowed);
    the interface flag is kept as set, and the data plane gets the effective state."""
    lan1 = config(core, "lan1")
    if interface:
        await lan1.enable_internet_firewall()

    await core.set_firewall_settings(
        FirewallSettings(enabled=global_enabled, exceptions_not_allowed=shielded)
    )

    assert core.firewall_settings == FirewallSettings(global_enabled, shielded)
    assert lan1.internet_firewall_enabled is interface
    assert lan1.effective_firewall_enabled is effective
    assert applied_firewall(backend)["lan1"] is effective


async def test_r9_open_ports_follow_the_effective_firewall(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """R9 with the core's activity rule: an enabled mapping on a firewalled, unshared connection
    is applied only while the firewall is effective there; the public connection's are not
    affected by the global switch."""
    lan1 = config(core, "lan1")
    await lan1.enable_internet_firewall()
    opened = await lan1.add_port_mapping("open", TCP, 8443, 8443, LAN1_ADDRESS, enabled=True)
    public = await config(core, "wan0").add_port_mapping(
        "dnat", TCP, 8080, 80, LAN_HOST, enabled=True
    )
    assert set(backend.mappings) == {opened.key, public.key}

    await core.set_firewall_settings(FirewallSettings(enabled=False))
    assert set(backend.mappings) == {public.key}
    assert set(backend.mappings) == active_keys(core)

    await core.set_firewall_settings(FirewallSettings(enabled=True))
    assert set(backend.mappings) == {opened.key, public.key}
    await lan1.disable_internet_firewall()
    assert set(backend.mappings) == {public.key}


# --- R11, R12: DisableSharing and idempotent disables --------------------------------------------


async def test_r11_disable_sharing_disables_mappings_keeps_the_firewall(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """R11: DisableSharing on the public connection disables (does not delete) the
    administrator's mappings and does not touch its firewall."""
    wan = config(core, "wan0")
    first = await wan.add_port_mapping("a", TCP, 8080, 80, LAN_HOST, enabled=True)
    second = await wan.add_port_mapping("b", UDP, 5353, 5353, LAN_HOST2)
    assert set(backend.mappings) == {first.key}
    events = core.events(kinds={MappingChanged, MappingRemoved, FirewallChanged})

    await wan.disable_sharing()

    assert not wan.sharing_enabled
    assert wan.internet_firewall_enabled
    assert wan.port_mappings() == (first, second)
    assert first.properties.enabled is False
    assert second.properties.enabled is False
    assert backend.mappings == {}
    received = await drain(events)
    assert len(received) == 1
    changed = received[0]
    assert isinstance(changed, MappingChanged)
    assert (changed.old.enabled, changed.new, changed.reason) == (
        True,
        first.properties,
        "unshared",
    )


async def test_r12_idempotent_disables_succeed_without_events(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """R12: DisableSharing on an unshared connection and DisableInternetFirewall on an
    unfirewalled one succeed, change nothing, emit no event and leave the data plane alone."""
    events = core.events()
    plans = backend.applied_plans
    stored = core.store.load()

    for name in ("lan1", "br0"):
        cfg = config(core, name)
        await cfg.disable_sharing()
        await cfg.disable_sharing()
        await cfg.disable_internet_firewall()
    await config(core, "lan0").disable_internet_firewall()

    assert await drain(events) == []
    assert backend.applied_plans == plans
    assert core.store.load() == stored
    assert roles(core) == {"br0": None, "lan0": PRIVATE, "lan1": None, "wan0": PUBLIC}


# --- R13: enumeration flags ----------------------------------------------------------------------


async def test_r13_connection_enumerations_take_only_the_default_flag(
    core: SharingManager,
) -> None:
    """R13: EnumPublicConnections / EnumPrivateConnections require ICSSC_DEFAULT; anything
    else is E_INVALIDARG (InvalidRequestError)."""
    assert len(core.public_connections(SharingConnectionEnumFlags.DEFAULT)) == 1
    assert len(core.private_connections(SharingConnectionEnumFlags.DEFAULT)) == 1
    bad_flags = (SharingConnectionEnumFlags.ENABLED, cast(SharingConnectionEnumFlags, 5))
    for flags in bad_flags:
        for enumerate_ in (core.public_connections, core.private_connections):
            with pytest.raises(InvalidRequestError) as info:
                enumerate_(flags)
            assert info.value.hresult == E_INVALIDARG


async def test_r13_port_mapping_enumeration_rejects_unknown_flags(core: SharingManager) -> None:
    """R13 / section 6.6: EnumPortMappings takes ICSSC_DEFAULT (and the ENABLED extension); an
    undefined flag value is the core's InvalidRequestError (E_INVALIDARG), not a bare error."""
    wan = config(core, "wan0")
    on = await wan.add_port_mapping("on", TCP, 8080, 80, LAN_HOST, enabled=True)
    off = await wan.add_port_mapping("off", TCP, 8081, 81, LAN_HOST)
    assert wan.port_mappings(SharingConnectionEnumFlags.DEFAULT) == (on, off)
    assert wan.port_mappings(SharingConnectionEnumFlags.ENABLED) == (on,)

    with pytest.raises(InvalidRequestError):
        wan.port_mappings(cast(SharingConnectionEnumFlags, 5))


# --- R15: persistence ----------------------------------------------------------------------------


async def test_r15_state_survives_a_restart(tmp_path: Path) -> None:
    """R15: roles, firewall flags and mappings (admin, UPnP, with name targets and
    leases) are persisted; a core reopened on a fresh data plane restores them and applies
    exactly the active mappings."""
    path = tmp_path / "igd.sqlite3"
    first = await open_core(
        SqliteStore(path), MemoryBackend(), StaticConnectionSource(lab_connections())
    )
    try:
        await first.share(first.find_connection(name="wan0"), first.find_connection(name="lan0"))
        lan1 = config(first, "lan1")
        await lan1.enable_internet_firewall()
        wan = config(first, "wan0")
        await wan.add_port_mapping("named", TCP, 8080, 80, "lanhost", enabled=True)
        await wan.add_port_mapping("off", UDP, 5353, 5353, LAN_HOST2)
        await lan1.add_port_mapping("open", TCP, 8443, 8443, LAN1_ADDRESS, enabled=True)
        await add_upnp_mapping(first, 40000)
        before_roles, before_flags = roles(first), firewall_flags(first)
        before_mappings = tuple(first.mappings())
        before_active = active_keys(first)
    finally:
        await first.aclose()
    assert len(before_mappings) == 4
    assert len(before_active) == 3

    backend = MemoryBackend()
    second = await open_core(SqliteStore(path), backend, StaticConnectionSource(lab_connections()))
    try:
        assert roles(second) == before_roles
        assert firewall_flags(second) == before_flags
        assert tuple(second.mappings()) == before_mappings
        named = config(second, "wan0").port_mapping(TCP, 8080).properties
        assert (named.target_name, named.internal_client) == ("lanhost", LAN_HOST)
        assert set(backend.mappings) == before_active == active_keys(second)
        assert dict(backend.mappings) == {
            m.key: m for m in before_mappings if m.key in before_active
        }
        assert {c.ifname: (c.role, c.firewall) for c in backend.connections} == {
            "br0": (None, False),
            "lan0": (PRIVATE, False),
            "lan1": (None, True),
            "wan0": (PUBLIC, True),
        }
    finally:
        await second.aclose()


async def test_r15_global_firewall_settings_survive_a_restart(tmp_path: Path) -> None:
    """R15 / R9: the global firewall mode is persisted with the rest."""
    path = tmp_path / "igd.sqlite3"
    settings = FirewallSettings(enabled=False, exceptions_not_allowed=True)
    first = await open_core(
        SqliteStore(path), MemoryBackend(), StaticConnectionSource(lab_connections())
    )
    try:
        await first.set_firewall_settings(settings)
    finally:
        await first.aclose()
    second = await open_core(
        SqliteStore(path), MemoryBackend(), StaticConnectionSource(lab_connections())
    )
    try:
        assert second.firewall_settings == settings
    finally:
        await second.aclose()


async def test_r15_state_is_kept_for_an_absent_connection(tmp_path: Path) -> None:
    """R15: the state of a connection that is not present at start is kept, not applied, and
    comes back when the connection does."""
    path = tmp_path / "igd.sqlite3"
    first = await open_core(
        SqliteStore(path), MemoryBackend(), StaticConnectionSource(lab_connections())
    )
    try:
        await first.share(first.find_connection(name="wan0"), first.find_connection(name="lan0"))
        lan1 = config(first, "lan1")
        await lan1.enable_internet_firewall()
        opened = await lan1.add_port_mapping("open", TCP, 8443, 8443, LAN1_ADDRESS, enabled=True)
        lan1_guid = lan1.connection.guid
    finally:
        await first.aclose()

    backend = MemoryBackend()
    source = StaticConnectionSource(lab_with(without=["lan1"]))
    second = await open_core(SqliteStore(path), backend, source)
    try:
        assert "lan1" not in roles(second)
        assert opened.key not in backend.mappings
        assert second.mapping(opened.key).connection == lan1_guid

        await update_source(second, source, lab_connections(), ConnectionAdded)

        assert config(second, "lan1").internet_firewall_enabled
        assert opened.key in backend.mappings
    finally:
        await second.aclose()


# --- S5: protocol mappings end with the public role ----------------------------------------------


async def test_s5_protocol_mappings_are_deleted_when_the_connection_stops_being_public(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """S5: UPnP-created mappings are deleted (MappingRemoved, reason UNSHARED) when their
    connection stops being public; the administrator's are only disabled."""
    upnp = await add_upnp_mapping(core, 40000)
    assert upnp.connection == core.find_connection(name="wan0").guid
    admin = await config(core, "wan0").add_port_mapping(
        "admin", TCP, 8080, 80, LAN_HOST, enabled=True
    )
    events = core.events(kinds={MappingRemoved, NumberOfEntriesChanged})

    await config(core, "lan1").enable_sharing(PUBLIC)

    assert await drain(events) == [
        MappingRemoved(upnp, RemovalReason.UNSHARED),
        NumberOfEntriesChanged(1),
    ]
    assert [m.key for m in core.mappings()] == [admin.key]
    assert backend.mappings == {}


async def test_s5_disable_sharing_deletes_protocol_mappings(core: SharingManager) -> None:
    """S5 / R11: DisableSharing on the public connection deletes its UPnP mappings."""
    upnp = await add_upnp_mapping(core, 40000)
    events = core.events(kinds={MappingRemoved})

    await config(core, "wan0").disable_sharing()

    assert await drain(events) == [MappingRemoved(upnp, RemovalReason.UNSHARED)]
    assert tuple(core.mappings()) == ()


# --- stale handles -------------------------------------------------------------------------------


async def test_stale_connection_handle_is_no_longer_valid(
    core: SharingManager, source: StaticConnectionSource
) -> None:
    """Section 6.6: handles on a connection that went away raise ObjectNoLongerValidError
    (S_OBJECT_NO_LONGER_VALID) for every read and write that needs the link."""
    conn = core.find_connection(name="lan1")
    cfg = core.configuration_for(conn)
    await update_source(core, source, lab_with(without=["lan1"]), ConnectionRemoved)

    with pytest.raises(ObjectNoLongerValidError) as info:
        conn.props()
    assert info.value.hresult == 0x00000002
    with pytest.raises(ObjectNoLongerValidError):
        core.configuration_for(conn)
    with pytest.raises(ObjectNoLongerValidError):
        await cfg.enable_sharing(PUBLIC)
    with pytest.raises(ObjectNoLongerValidError):
        await cfg.enable_internet_firewall()
    with pytest.raises(ObjectNoLongerValidError):
        await cfg.add_port_mapping("gone", TCP, 8080, 80, LAN_HOST)
    assert [c.name for c in core.every_connection()] == ["br0", "lan0", "wan0"]
    assert tuple(core.mappings()) == ()


async def test_stale_mapping_handle_is_no_longer_valid(core: SharingManager) -> None:
    """Section 6.6: a PortMapping handle whose mapping was deleted is no longer valid."""
    mapping = await config(core, "wan0").add_port_mapping("x", TCP, 8080, 80, LAN_HOST)
    await mapping.delete()
    with pytest.raises(ObjectNoLongerValidError):
        _ = mapping.properties


# --- share(): atomic pairing ---------------------------------------------------------------------


async def test_share_disables_every_role_then_enables_the_pair(core: SharingManager) -> None:
    """Section 4.4 / 6.4: share(public, private) is the robust tools' "disable both roles, then
    enable the pair" as one change; other roles are displaced, the public gets its firewall."""
    lan1 = core.find_connection(name="lan1")
    wan = core.find_connection(name="wan0")
    br0 = core.find_connection(name="br0")
    events = core.events(kinds={SharingChanged})

    await core.share(lan1, br0)

    assert roles(core) == {"br0": PRIVATE, "lan0": None, "lan1": PUBLIC, "wan0": None}
    assert core.configuration_for(lan1).internet_firewall_enabled
    received = await drain(events)
    assert SharingChanged(wan.guid, None, SharingCause.DISPLACED) in received
    assert (
        SharingChanged(core.find_connection(name="lan0").guid, None, SharingCause.DISPLACED)
        in received
    )
    assert SharingChanged(lan1.guid, PUBLIC, SharingCause.EXPLICIT) in received
    assert SharingChanged(br0.guid, PRIVATE, SharingCause.EXPLICIT) in received
    assert len(received) == 4

    # Already in place: nothing to do.
    await core.share(lan1, br0)
    assert await drain(events) == []


async def test_share_is_all_or_nothing(
    core: SharingManager, backend: MemoryBackend, source: StaticConnectionSource
) -> None:
    """Section 6.4 / S9: when one half of share() is refused (a non-shareable public side, a
    vanished private side), no role changes, nothing is stored or applied, no event."""
    await config(core, "wan0").add_port_mapping("kept", TCP, 8080, 80, LAN_HOST, enabled=True)
    gone = core.find_connection(name="lan1")
    await update_source(core, source, lab_with(without=["lan1"]), ConnectionRemoved)
    before = (roles(core), firewall_flags(core), tuple(core.mappings()), core.store.load())
    applied = (dict(backend.mappings), backend.connections, backend.applied_plans)
    events = core.events()

    with pytest.raises(NotShareableError):
        await core.share(core.find_connection(name="br0"), core.find_connection(name="lan0"))
    with pytest.raises(ObjectNoLongerValidError):
        await core.share(core.find_connection(name="wan0"), gone)
    with pytest.raises(ObjectNoLongerValidError):
        await core.share(gone, core.find_connection(name="lan0"))

    assert (roles(core), firewall_flags(core), tuple(core.mappings()), core.store.load()) == before
    assert (dict(backend.mappings), backend.connections, backend.applied_plans) == applied
    assert await drain(events) == []


# --- S9: backend failure rolls back --------------------------------------------------------------


async def test_backend_failure_rolls_back_enable_sharing(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """S9: when the data plane refuses a change, enable_sharing raises BackendError and the
    roles, firewall flags, mappings, store and applied state are as before, with no event;
    the next change goes through."""
    kept = await config(core, "wan0").add_port_mapping(
        "kept", TCP, 8080, 80, LAN_HOST, enabled=True
    )
    upnp = await add_upnp_mapping(core, 40000)
    before = (roles(core), firewall_flags(core), tuple(core.mappings()), core.store.load())
    applied = (dict(backend.mappings), backend.connections)
    events = core.events()

    backend.fail_next = 1
    with pytest.raises(BackendError):
        await config(core, "lan1").enable_sharing(PUBLIC)

    assert (roles(core), firewall_flags(core), tuple(core.mappings()), core.store.load()) == before
    assert (dict(backend.mappings), backend.connections) == applied
    assert set(backend.mappings) == {kept.key, upnp.key}
    assert await drain(events) == []

    await config(core, "lan1").enable_sharing(PUBLIC)
    assert roles(core)["lan1"] is PUBLIC
    assert backend.mappings == {}


async def test_backend_failure_rolls_back_a_mapping_change(
    core: SharingManager, backend: MemoryBackend
) -> None:
    """S9: a refused add or enable leaves no mapping behind (model, store, data plane)."""
    wan = config(core, "wan0")
    off = await wan.add_port_mapping("off", TCP, 8081, 81, LAN_HOST)
    stored = core.store.load()

    backend.fail_next = 1
    with pytest.raises(BackendError):
        await wan.add_port_mapping("new", TCP, 8080, 80, LAN_HOST, enabled=True)
    backend.fail_next = 1
    with pytest.raises(BackendError):
        await off.enable()

    assert tuple(core.mappings()) == (off.properties,)
    assert off.properties.enabled is False
    assert core.store.load() == stored
    assert backend.mappings == {}


# --- connection events ---------------------------------------------------------------------------


async def test_connection_events_from_source_updates(
    core: SharingManager, source: StaticConnectionSource
) -> None:
    """Section 6.8: a new source snapshot is reported as ConnectionAdded / ConnectionRemoved /
    ConnectionChanged, and a new public address as ExternalAddressChanged."""
    events = core.events(
        kinds={ConnectionAdded, ConnectionRemoved, ConnectionChanged, ExternalAddressChanged}
    )
    lan2 = make_connection("lan2", addresses=["198.18.2.1/24"])
    source.update(lab_with(lan2, without=["br0"], wan0="198.19.0.2/24"))

    wan = core.find_connection(name="wan0").guid
    received: list[Event] = []
    async with asyncio.timeout(1):
        while len(received) < 4:
            received.append(await anext(events))
    assert await drain(events) == []

    added = [e for e in received if isinstance(e, ConnectionAdded)]
    removed = [e for e in received if isinstance(e, ConnectionRemoved)]
    changed = [e for e in received if isinstance(e, ConnectionChanged)]
    assert [e.props.name for e in added] == ["lan2"]
    assert [e.props.name for e in removed] == ["br0"]
    assert [(e.old.guid, e.new.guid) for e in changed] == [(wan, wan)]
    assert [str(a) for a in changed[0].old.addresses] == ["198.19.0.1/24"]
    assert [str(a) for a in changed[0].new.addresses] == ["198.19.0.2/24"]
    assert ExternalAddressChanged(wan, WAN_ADDRESS, NEW_WAN) in received
    assert core.external_address == NEW_WAN
    assert [c.name for c in core.every_connection()] == ["lan0", "lan1", "lan2", "wan0"]


async def test_connection_changed_reports_the_same_role_flags_on_both_sides(
    core: SharingManager, source: StaticConnectionSource
) -> None:
    """Section 6.4 / 6.8: characteristics are computed live (SHARED, FIREWALLED...) in every
    props the core hands out; an address change on wan0 leaves its role alone, so `old` and
    `new` of ConnectionChanged carry the same characteristics."""
    changed = await update_source(core, source, lab_with(wan0="198.19.0.2/24"), ConnectionChanged)

    assert changed.new.characteristics & (CC.SHARED | CC.FIREWALLED)
    assert changed.old.characteristics == changed.new.characteristics


async def test_removing_the_public_connection_withdraws_and_restores_its_mappings(
    core: SharingManager, backend: MemoryBackend, source: StaticConnectionSource
) -> None:
    """R15 / section 6.8: when the public connection goes away its mappings leave the data
    plane (kept in the model), the external address is gone; when it comes back, they return."""
    mapping = await config(core, "wan0").add_port_mapping(
        "m", TCP, 8080, 80, LAN_HOST, enabled=True
    )
    events = core.events(kinds={ExternalAddressChanged})

    await update_source(core, source, lab_with(without=["wan0"]), ConnectionRemoved)

    assert backend.mappings == {}
    assert core.mapping(mapping.key).enabled
    assert core.nat.static_port_mapping_collection is None
    assert core.external_address is None
    gone = await wait_for_event(events, ExternalAddressChanged)
    assert (gone.old, gone.new) == (WAN_ADDRESS, None)

    await update_source(core, source, lab_connections(), ConnectionAdded)

    assert set(backend.mappings) == {mapping.key}
    assert roles(core)["wan0"] is PUBLIC
    back = await wait_for_event(events, ExternalAddressChanged)
    assert (back.old, back.new) == (None, WAN_ADDRESS)
