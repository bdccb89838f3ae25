"""Policy: permission rules (miniupnpd syntax, default deny), the target scope, quotas, inputs.

Pure module: every decision is tested without a core, on lab addresses only.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igd.natcore.errors import (
    ConflictWithOtherMechanismError,
    InvalidDescriptionError,
    InvalidPortError,
    InvalidProtocolError,
    InvalidRequestError,
    InvalidTargetError,
    NotAuthorizedError,
    QuotaExceededError,
)
from igd.natcore.model import ADMIN, Client, IPProtocol, MappingRequest, Origin
from igd.natcore.policy import (
    DEFAULT_RULES,
    MAX_DESCRIPTION_BYTES,
    NetworkView,
    PermissionRule,
    Policy,
    PolicyConfig,
    validate_description,
    validate_port,
)

A = IPv4Address
LAN_GATEWAY = A("198.18.0.1")
WAN_ADDRESS = A("198.19.0.1")
HOST = A("198.18.0.10")
HOST2 = A("198.18.0.11")
GUEST = A("198.18.1.10")  # on lan1, another private segment (ST-33)
LAN = IPv4Interface("198.18.0.1/24")
LAN1 = IPv4Interface("198.18.1.1/24")
WAN = IPv4Interface("198.19.0.1/24")
VIEW = NetworkView(
    private=(LAN, LAN1),
    public=(WAN,),
    gateway_addresses=frozenset({LAN_GATEWAY, LAN1.ip, WAN_ADDRESS}),
)
LOOPBACK_VIEW = NetworkView(
    private=(IPv4Interface("127.0.0.1/8"),),
    public=(WAN,),
    gateway_addresses=frozenset({A("127.0.0.1"), WAN_ADDRESS}),
)

UPNP_HOST = Client(Origin.UPNP, HOST)
UPNP_HOST2 = Client(Origin.UPNP, HOST2)
OPEN = Policy(PolicyConfig(secure_mode=False))
SECURE = Policy(PolicyConfig())


def rules(*lines: str) -> Policy:
    return Policy(PolicyConfig(rules=tuple(PermissionRule.parse(line) for line in lines)))


# -- PermissionRule.parse (WIP-76, ST-21) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "allow", "external", "network", "internal"),
    [
        (
            "allow 1024-65535 198.18.0.0/24 1024-65535",
            True,
            (1024, 65535),
            "198.18.0.0/24",
            (1024, 65535),
        ),
        ("deny 22 198.18.0.10 22", False, (22, 22), "198.18.0.10/32", (22, 22)),
        ("deny 0-65535 0.0.0.0/0 22-23", False, (0, 65535), "0.0.0.0/0", (22, 23)),
        (
            "allow 1024-65535 198.18.0.0/255.255.255.0 1024-65535",
            True,
            (1024, 65535),
            "198.18.0.0/24",
            (1024, 65535),
        ),
        ("allow 0 198.18.0.0/255.255.255.128 65535", True, (0, 0), "198.18.0.0/25", (65535, 65535)),
        ("allow 5000-5000 198.18.0.10/24 80", True, (5000, 5000), "198.18.0.0/24", (80, 80)),
        (
            "  allow\t40000-40010   198.18.0.0/24\t 1-2  ",
            True,
            (40000, 40010),
            "198.18.0.0/24",
            (1, 2),
        ),
    ],
)
def test_parse_valid_rules(
    line: str,
    allow: bool,
    external: tuple[int, int],
    network: str,
    internal: tuple[int, int],
) -> None:
    """WIP-76 / ST-21: miniupnpd's `allow|deny EXT ADDR[/MASK] INT`, single ports, dotted masks."""
    rule = PermissionRule.parse(line)
    assert rule == PermissionRule(allow, external, IPv4Network(network), internal)
    assert PermissionRule.parse(str(rule)) == rule


@pytest.mark.parametrize(
    "line",
    [
        "",
        "allow",
        "allow 1024-65535 198.18.0.0/24",
        "allow 1024-65535 198.18.0.0/24 1024-65535 extra",
        "permit 1024-65535 198.18.0.0/24 1024-65535",
        "Allow 1024-65535 198.18.0.0/24 1024-65535",
        "allow 1024- 198.18.0.0/24 1024-65535",
        "allow -1024 198.18.0.0/24 1024-65535",
        "allow 1-2-3 198.18.0.0/24 1024-65535",
        "allow 80-22 198.18.0.0/24 1024-65535",
        "allow 65536 198.18.0.0/24 1024-65535",
        "allow 0-65536 198.18.0.0/24 1024-65535",
        "allow abc 198.18.0.0/24 1024-65535",
        "allow 0x50 198.18.0.0/24 1024-65535",
        "allow 1024-65535 198.18.0.256/24 1024-65535",
        "allow 1024-65535 198.18.0.0/33 1024-65535",
        "allow 1024-65535 198.18.0.0/255.0.255.0 1024-65535",
        "allow 1024-65535 198.18.0.0/ 1024-65535",
        "allow 1024-65535 lanhost 1024-65535",
        "allow 1024-65535 198.18.0 1024-65535",
        "allow 1024-65535 198.18.0.0/24 1024-",
        "allow 1024-65535 198.18.0.0/24 5000-4000",
        "allow 1024-65535 198.18.0.0/24 -1",
        "allow 1024-65535 198.18.0.0/24 70000",
        "allow 1024-65535 198.18.0.0/24 x-y",
    ],
)
def test_parse_malformed_rules(line: str) -> None:
    """WIP-76: every malformed line is an InvalidRequestError, never a silent wrong rule."""
    with pytest.raises(InvalidRequestError):
        PermissionRule.parse(line)


def test_rule_matching_is_inclusive_on_every_field() -> None:
    rule = PermissionRule.parse("allow 5000-5010 198.18.0.0/25 6000-6001")
    assert rule.matches(5000, A("198.18.0.0"), 6000)
    assert rule.matches(5010, A("198.18.0.127"), 6001)
    assert not rule.matches(4999, HOST, 6000)
    assert not rule.matches(5011, HOST, 6000)
    assert not rule.matches(5005, A("198.18.0.128"), 6000)
    assert not rule.matches(5005, HOST, 5999)
    assert not rule.matches(5005, HOST, 6002)


# -- rule evaluation: first match, default deny (ST-21) --------------------------------------------


def test_first_matching_rule_decides() -> None:
    """WIP-76: rules are evaluated in order; the first match decides."""
    deny_first = rules(
        "deny 5000 0.0.0.0/0 5000",
        "allow 1024-65535 0.0.0.0/0 1024-65535",
    )
    assert not deny_first.allows(5000, HOST, 5000)
    assert deny_first.allows(5001, HOST, 5000)
    assert deny_first.allows(5000, HOST, 5001)
    allow_first = rules(
        "allow 1024-65535 0.0.0.0/0 1024-65535",
        "deny 5000 0.0.0.0/0 5000",
    )
    assert allow_first.allows(5000, HOST, 5000)


def test_nothing_matching_is_denied() -> None:
    """ST-21: with no matching rule the request is denied (contrast miniupnpd)."""
    assert not Policy(PolicyConfig(rules=())).allows(40000, HOST, 40000)
    only_low_half = rules("allow 1024-65535 198.18.0.0/25 1024-65535")
    assert only_low_half.allows(40000, HOST, 40000)
    assert not only_low_half.allows(40000, A("198.18.0.200"), 40000)
    assert not only_low_half.allows(1023, HOST, 40000)
    with pytest.raises(NotAuthorizedError):
        only_low_half.check_rules(UPNP_HOST, 40000, A("198.18.0.200"), 40000)
    only_low_half.check_rules(ADMIN, 40000, A("198.18.0.200"), 40000)  # admin bypasses rules


@pytest.mark.parametrize("internal_port", [22, 23, 135, 136, 137, 138, 139, 445, 3389, 5900])
def test_default_rules_deny_remote_access_services(internal_port: int) -> None:
    """ST-21: the shipped rules deny internal 22/23/135-139/445/3389/5900, whatever the port."""
    policy = Policy()
    assert policy.config.rules == DEFAULT_RULES
    for external in (1, 1023, 1024, 40000, 65535):
        assert not policy.allows(external, HOST, internal_port)
    with pytest.raises(NotAuthorizedError):
        policy.check_rules(UPNP_HOST, 40000, HOST, internal_port)


def test_default_rules_deny_privileged_ports() -> None:
    """ST-21 / WIP-72: external < 1024 is denied, and so is internal < 1024."""
    policy = Policy()
    for external in (0, 1, 80, 443, 1023):
        assert not policy.allows(external, HOST, 40000)
    assert not policy.allows(40000, HOST, 80)
    assert not policy.allows(40000, HOST, 1023)
    for port in (1024, 3388, 3390, 5899, 5901, 40000, 65535):
        assert policy.allows(port, HOST, port)
        assert policy.allows(1024, HOST, port)


def test_allowed_external_ranges_with_default_rules() -> None:
    policy = Policy()
    assert policy.allowed_external_ranges(UPNP_HOST, HOST, 40000) == [(1024, 65535)]
    assert policy.allowed_external_ranges(UPNP_HOST, HOST, 22) == []
    assert policy.allowed_external_ranges(UPNP_HOST, HOST, 80) == []
    assert policy.allowed_external_ranges(ADMIN, HOST, 22) == [(0, 65535)]


BOUNDARY_PORTS = st.sampled_from((0, 1, 1023, 1024, 5000, 5001, 5002, 40000, 65534, 65535))
RULE_PORTS = st.one_of(BOUNDARY_PORTS, st.integers(0, 65535))
RULE_NETWORKS = st.sampled_from(
    ("0.0.0.0/0", "198.18.0.0/24", "198.18.0.0/25", "198.18.0.10/32", "198.18.0.128/25")
)
INTERNAL_CLIENTS = st.sampled_from((HOST, HOST2, A("198.18.0.200")))


@st.composite
def rule_lines(draw: st.DrawFn) -> str:
    def span() -> str:
        low, high = sorted((draw(RULE_PORTS), draw(RULE_PORTS)))
        return str(low) if low == high else f"{low}-{high}"

    verb = draw(st.sampled_from(("allow", "deny")))
    return f"{verb} {span()} {draw(RULE_NETWORKS)} {span()}"


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(rule_lines(), max_size=5),
    internal_client=INTERNAL_CLIENTS,
    internal_port=RULE_PORTS,
)
def test_allowed_external_ranges_equals_brute_force(
    lines: list[str], internal_client: IPv4Address, internal_port: int
) -> None:
    """PMP-29 / WIP-76: the allocator's view of the rules equals first-match, port by port.

    The brute force decides each of the 65536 ports by painting the applicable rules from last
    to first (so the first match wins), then spot-checks `allows` at every rule boundary.
    """
    policy = rules(*lines)
    decided = bytearray(65536)  # 0: no rule matched (deny), 1: allow, 2: deny
    applicable = [
        r
        for r in reversed(policy.config.rules)
        if internal_client in r.network
        and r.internal_ports[0] <= internal_port <= r.internal_ports[1]
    ]
    for rule in applicable:
        low, high = rule.external_ports
        decided[low : high + 1] = (b"\x01" if rule.allow else b"\x02") * (high - low + 1)
    expected = {port for port in range(65536) if decided[port] == 1}

    ranges = policy.allowed_external_ranges(UPNP_HOST, internal_client, internal_port)
    assert ranges == sorted(ranges)
    got: set[int] = set()
    for low, high in ranges:
        assert 0 <= low <= high <= 65535
        span = set(range(low, high + 1))
        assert not span & got, "ranges overlap"
        got |= span
    assert got == expected

    probes = {0, 65535}
    for rule in policy.config.rules:
        for edge in rule.external_ports:
            probes.update(p for p in (edge - 1, edge, edge + 1) if 0 <= p <= 65535)
    for port in probes:
        assert policy.allows(port, internal_client, internal_port) == (port in expected)


# -- check_target: UPnProxy (ST-19), segments (ST-33), secure mode (ST-18) ------------------------


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(A("198.19.0.50"), id="public-side-host"),
        pytest.param(A("198.18.5.5"), id="outside-every-LAN"),
        pytest.param(LAN_GATEWAY, id="gateway-LAN-address"),
        pytest.param(LAN1.ip, id="gateway-other-LAN-address"),
        pytest.param(WAN_ADDRESS, id="gateway-WAN-address"),
        pytest.param(A("127.0.0.1"), id="loopback"),
        pytest.param(A("0.0.0.0"), id="unspecified"),
        pytest.param(A("255.255.255.255"), id="limited-broadcast"),
        pytest.param(A("198.18.0.0"), id="subnet-network-address"),
        pytest.param(A("198.18.0.255"), id="subnet-broadcast-address"),
        pytest.param(A("224.0.0.1"), id="multicast"),
        pytest.param(A("239.255.255.250"), id="ssdp-multicast"),
    ],
)
@pytest.mark.parametrize("origin", [Origin.UPNP, Origin.NATPMP, Origin.PCP])
def test_upnproxy_targets_are_refused_even_without_secure_mode(
    target: IPv4Address, origin: Origin
) -> None:
    """ST-19 / WIP-22: these internal clients are rejected even with secure mode off."""
    client = Client(origin, HOST)
    with pytest.raises(NotAuthorizedError):
        OPEN.check_target(target, client, VIEW)
    with pytest.raises(NotAuthorizedError):
        SECURE.check_target(target, client, VIEW)


def test_another_host_on_the_own_segment_is_allowed_without_secure_mode() -> None:
    OPEN.check_target(HOST2, UPNP_HOST, VIEW)
    OPEN.check_target(A("198.18.0.254"), UPNP_HOST, VIEW)


def test_secure_mode_maps_only_to_the_requester() -> None:
    """ST-18 / WIP-71: in secure mode the internal client must be the requester's own address."""
    SECURE.check_target(HOST, UPNP_HOST, VIEW)
    with pytest.raises(NotAuthorizedError):
        SECURE.check_target(HOST2, UPNP_HOST, VIEW)
    with pytest.raises(NotAuthorizedError):
        SECURE.check_target(HOST, UPNP_HOST2, VIEW)


def test_target_in_another_private_segment_is_refused() -> None:
    """ST-33: the target must sit in the requester's own LAN segment, secure mode or not."""
    guest = Client(Origin.UPNP, GUEST)
    OPEN.check_target(A("198.18.1.20"), guest, VIEW)
    with pytest.raises(NotAuthorizedError):
        OPEN.check_target(HOST, guest, VIEW)
    with pytest.raises(NotAuthorizedError):
        OPEN.check_target(GUEST, UPNP_HOST, VIEW)


def test_requester_outside_every_lan_is_refused() -> None:
    """ST-33: a requester on the public side (or without an address) maps nothing."""
    outsider = Client(Origin.UPNP, A("198.19.0.50"))
    with pytest.raises(NotAuthorizedError):
        OPEN.check_target(HOST, outsider, VIEW)
    with pytest.raises(NotAuthorizedError):
        OPEN.check_target(HOST, Client(Origin.UPNP, None), VIEW)


def test_no_private_connection_refuses_every_target() -> None:
    with pytest.raises(NotAuthorizedError):
        OPEN.check_target(HOST, UPNP_HOST, NetworkView(public=(WAN,)))


def test_loopback_is_allowed_when_the_lan_is_loopback() -> None:
    """ST-19 exception: a loopback LAN (a lab or a single-host setup) may map to 127/8."""
    local = Client(Origin.UPNP, A("127.0.0.1"))
    SECURE.check_target(A("127.0.0.1"), local, LOOPBACK_VIEW)
    OPEN.check_target(A("127.0.0.2"), local, LOOPBACK_VIEW)
    with pytest.raises(NotAuthorizedError):
        SECURE.check_target(A("127.0.0.2"), local, LOOPBACK_VIEW)
    for bad in (A("127.0.0.0"), A("127.255.255.255"), WAN_ADDRESS, A("0.0.0.0")):
        with pytest.raises(NotAuthorizedError):
            OPEN.check_target(bad, local, LOOPBACK_VIEW)


def test_point_to_point_segments_have_no_network_or_broadcast_address() -> None:
    view = NetworkView(private=(IPv4Interface("198.18.0.0/31"),))
    client = Client(Origin.UPNP, A("198.18.0.1"))
    OPEN.check_target(A("198.18.0.0"), client, view)
    OPEN.check_target(A("198.18.0.1"), client, view)


@pytest.mark.parametrize("target", [LAN_GATEWAY, LAN1.ip, WAN_ADDRESS])
def test_admin_may_target_the_gateway_itself(target: IPv4Address) -> None:
    """KB 297942: an ICF open port on the gateway is the administrator's to make."""
    SECURE.check_target(target, ADMIN, VIEW)


def test_admin_skips_secure_mode_and_segments() -> None:
    SECURE.check_target(HOST2, ADMIN, VIEW)
    SECURE.check_target(GUEST, ADMIN, VIEW)


@pytest.mark.parametrize(
    "target",
    [
        A("224.0.0.1"),
        A("239.255.255.250"),
        A("0.0.0.0"),
        A("255.255.255.255"),
        A("198.18.0.0"),
        A("198.18.0.255"),
        A("198.19.0.50"),
        A("127.0.0.1"),
    ],
)
def test_admin_targets_out_of_scope_are_invalid(target: IPv4Address) -> None:
    """ST-19: the administrator bypasses secure mode and rules, not the target scope."""
    with pytest.raises(InvalidTargetError):
        SECURE.check_target(target, ADMIN, VIEW)
    with pytest.raises(InvalidTargetError):
        OPEN.check_target(target, ADMIN, VIEW)


# -- reserved ports (ST-22) and quotas (ST-24) -----------------------------------------------------


def test_reserved_ports_conflict_with_other_mechanism() -> None:
    """ST-22: the gateway's own services are refused with 729 (ConflictWithOtherMechanism)."""
    policy = Policy(
        PolicyConfig(reserved_ports=frozenset({(IPProtocol.TCP, 5555), (IPProtocol.UDP, 1900)}))
    )
    with pytest.raises(ConflictWithOtherMechanismError):
        policy.check_reserved(IPProtocol.TCP, 5555)
    with pytest.raises(ConflictWithOtherMechanismError):
        policy.check_reserved(IPProtocol.UDP, 1900)
    policy.check_reserved(IPProtocol.UDP, 5555)
    policy.check_reserved(IPProtocol.TCP, 1900)
    assert policy.is_reserved(IPProtocol.TCP, 5555)
    assert not policy.is_reserved(IPProtocol.TCP, 5556)


def test_per_client_quota() -> None:
    """ST-24: a client at its quota is refused; below it is not; the admin has no quota."""
    policy = Policy(PolicyConfig(quota_per_client=3, max_mappings=100))
    policy.check_quota(UPNP_HOST, 2, 50)
    with pytest.raises(QuotaExceededError):
        policy.check_quota(UPNP_HOST, 3, 50)
    with pytest.raises(QuotaExceededError):
        policy.check_quota(UPNP_HOST, 4, 50)
    policy.check_quota(ADMIN, 1000, 50)


def test_table_size_cap_applies_to_everyone() -> None:
    """ST-24: the global cap holds for the administrator too."""
    policy = Policy(PolicyConfig(quota_per_client=3, max_mappings=10))
    policy.check_quota(UPNP_HOST, 0, 9)
    for client in (UPNP_HOST, ADMIN):
        with pytest.raises(QuotaExceededError):
            policy.check_quota(client, 0, 10)


# -- input validation (ST-16, ST-26, WIP-17..21) --------------------------------------------------


@pytest.mark.parametrize(
    "description",
    [
        "",
        "x" * MAX_DESCRIPTION_BYTES,
        "é" * 128,  # 256 bytes
        "€" * 85,  # 255 bytes
        "🎮" * 64,  # 256 bytes
        "<script>alert(1)</script>",
        "naïve ✓ ' \" ; -- TCP:22",
        "\u00a0space\u3000",
    ],
)
def test_valid_descriptions(description: str) -> None:
    assert validate_description(description) == description


@pytest.mark.parametrize(
    "description",
    [
        pytest.param("x\nTCP:22:198.18.0.9:22:0:evil", id="ST-26-newline-injection"),
        pytest.param("x\rTCP", id="carriage-return"),
        pytest.param("tab\there", id="tab"),
        pytest.param("nul\x00", id="nul"),
        pytest.param("\x1b[31mred", id="escape"),
        pytest.param("del\x7f", id="delete"),
        pytest.param("next\x85line", id="C1-next-line"),
        pytest.param("half\ud800", id="lone-surrogate"),
        pytest.param("x" * (MAX_DESCRIPTION_BYTES + 1), id="257-bytes"),
        pytest.param("é" * 129, id="129-chars-258-bytes"),
        pytest.param("€" * 86, id="86-chars-258-bytes"),
        pytest.param("A" * 4096, id="4kB"),
        pytest.param("x" * 300, id="300-bytes"),
    ],
)
def test_invalid_descriptions(description: str) -> None:
    """ST-26: control characters and more than 256 bytes of UTF-8 are refused."""
    with pytest.raises(InvalidDescriptionError):
        validate_description(description)


@pytest.mark.parametrize("value", [None, 5, b"bytes", ["x"]])
def test_description_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidDescriptionError):
        validate_description(value)


@pytest.mark.parametrize("value", [1, 80, 1024, 65535])
def test_valid_ports(value: int) -> None:
    assert validate_port(value, "external port") == value


@pytest.mark.parametrize("value", [0, -1, 65536, 2**31, True, False, 80.0, "80", None])
def test_invalid_ports(value: object) -> None:
    """WIP-17/19/21: ports are integers in 1..65535; bools, floats and strings are refused."""
    with pytest.raises(InvalidPortError):
        validate_port(value, "external port")


def test_port_zero_only_where_allowed() -> None:
    """WIP-26: AddAnyPortMapping takes 0 as "any port"."""
    assert validate_port(0, "external port", allow_zero=True) == 0
    with pytest.raises(InvalidPortError):
        validate_port(-1, "external port", allow_zero=True)
    with pytest.raises(InvalidPortError):
        validate_port(65536, "external port", allow_zero=True)


@pytest.mark.parametrize("value", ["tcp", "Tcp", "ICMP", "", " TCP", "6", 1, 0, True, None, 6.0])
def test_protocol_parse_is_strict(value: object) -> None:
    """WIP-20: only exactly "TCP"/"UDP" (or 6/17) are protocols."""
    with pytest.raises(InvalidProtocolError):
        IPProtocol.parse(value)  # type: ignore[arg-type]
    assert issubclass(InvalidProtocolError, InvalidRequestError)


def test_protocol_parse_accepts_the_members() -> None:
    assert IPProtocol.parse("TCP") is IPProtocol.TCP
    assert IPProtocol.parse("UDP") is IPProtocol.UDP
    assert IPProtocol.parse(6) is IPProtocol.TCP
    assert IPProtocol.parse(17) is IPProtocol.UDP
    assert IPProtocol.parse(IPProtocol.UDP) is IPProtocol.UDP


def request(**changes: object) -> MappingRequest:
    fields: dict[str, object] = {
        "protocol": IPProtocol.TCP,
        "external_port": 40000,
        "internal_client": HOST,
        "internal_port": 40000,
    }
    fields.update(changes)
    return MappingRequest(**fields)  # type: ignore[arg-type]


def test_check_request_accepts_a_good_request() -> None:
    Policy().check_request(request(lease=3600.0, description="game"))
    Policy().check_request(request(external_port=0), allow_zero_external=True)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"external_port": 0}, InvalidPortError),
        ({"external_port": 65536}, InvalidPortError),
        ({"internal_port": 0}, InvalidPortError),
        ({"internal_port": -1}, InvalidPortError),
        ({"description": "a\nb"}, InvalidDescriptionError),
        ({"description": "x" * 300}, InvalidDescriptionError),
        ({"lease": 0.0}, InvalidRequestError),
        ({"lease": -5.0}, InvalidRequestError),
        ({"lease": float("nan")}, InvalidRequestError),
    ],
)
def test_check_request_refuses_bad_input(
    changes: dict[str, object], error: type[InvalidRequestError]
) -> None:
    with pytest.raises(error):
        Policy().check_request(request(**changes))


# -- leases (WIP-12, ST-27) -----------------------------------------------------------------------


def test_grant_lease_clamps_protocol_clients_only() -> None:
    """WIP-12 / ST-27: a protocol client's lease is clamped to max_lease (7 days by default)."""
    policy = Policy()
    assert policy.config.max_lease == 604800.0
    assert policy.grant_lease(3600.0, UPNP_HOST) == 3600.0
    assert policy.grant_lease(604800.0, UPNP_HOST) == 604800.0
    assert policy.grant_lease(604801.0, UPNP_HOST) == 604800.0
    assert policy.grant_lease(1e12, Client(Origin.NATPMP, HOST)) == 604800.0
    assert policy.grant_lease(None, UPNP_HOST) is None
    assert policy.grant_lease(1e12, ADMIN) == 1e12
    assert policy.grant_lease(None, ADMIN) is None
    short = Policy(PolicyConfig(max_lease=120.0))
    assert short.grant_lease(3600.0, UPNP_HOST) == 120.0
    unlimited = Policy(PolicyConfig(max_lease=None))
    assert unlimited.grant_lease(1e12, UPNP_HOST) == 1e12
