"""Search matching: every ST form against the IGD:1 and IGD:2 roots, alone and together; MAN/MX
policy; source checks; the per-source reply budget with a fake clock."""

from __future__ import annotations

import math
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igd.ssdp.matching import (
    DEFAULT_REPLY_BURST,
    DEFAULT_REPLY_RATE_PER_S,
    AdvertisedRoot,
    Advertisement,
    Reply,
    ReplyLimiter,
    forbidden_source,
    plan_replies,
    source_allowed,
)
from igd.ssdp.messages import (
    MSearch,
    SsdpParseError,
    build_search_response,
    http_date,
    parse_datagram,
)

GOLDEN = Path(__file__).parent / "ssdp_golden"
URN = "urn:schemas-upnp-org"
LOC1 = "http://198.18.0.1:5000/igd1/rootDesc.xml"
LOC2 = "http://198.18.0.1:5000/igd2/rootDesc.xml"
R1, W1, C1 = (f"uuid:00000000-0000-4000-8000-00000000001{i}" for i in range(3))
R2, W2, C2 = (f"uuid:00000000-0000-4000-8000-00000000002{i}" for i in range(3))


def igd_root(version: int, location: str, root: str, wan: str, conn: str) -> AdvertisedRoot:
    """The advertisement set of specs.md 1.2 (10 members for IGD:1, 11 for IGD:2 with FW6)."""
    v = version
    entries = [
        ("upnp:rootdevice", root),
        (root, root),
        (f"{URN}:device:InternetGatewayDevice:{v}", root),
        (wan, wan),
        (f"{URN}:device:WANDevice:{v}", wan),
        (conn, conn),
        (f"{URN}:device:WANConnectionDevice:{v}", conn),
        (f"{URN}:service:Layer3Forwarding:1", root),
        (f"{URN}:service:WANCommonInterfaceConfig:1", wan),
        (f"{URN}:service:WANIPConnection:{v}", conn),
    ]
    if version == 2:
        entries.append((f"{URN}:service:WANIPv6FirewallControl:1", conn))
    return AdvertisedRoot.from_advertisements(
        location,
        [Advertisement(nt, udn if nt == udn else f"{udn}::{nt}") for nt, udn in entries],
    )


ROOT1 = igd_root(1, LOC1, R1, W1, C1)
ROOT2 = igd_root(2, LOC2, R2, W2, C2)
CONFIGS: dict[str, tuple[AdvertisedRoot, ...]] = {
    "igd1": (ROOT1,),
    "igd2": (ROOT2,),
    "dual": (ROOT1, ROOT2),
}


def msearch(target: str, *, mx: int | None = 2, man: str | None = '"ssdp:discover"') -> MSearch:
    return MSearch(target=target, man=man, mx=mx, host=None, user_agent=None, headers=())


def high(low: float, top: float) -> float:
    return top


def answers(target: str, config: str) -> set[tuple[str, str, str]]:
    replies = plan_replies(msearch(target), CONFIGS[config], multicast=True, draw=high)
    assert len(replies) == len({(r.st, r.usn) for r in replies}), "duplicate reply"
    return {(r.st, r.usn, r.location) for r in replies}


def t(kind: str, version: int, category: str = "service") -> str:
    return f"{URN}:{category}:{kind}:{version}"


def test_advertisement_set_sizes_and_types() -> None:
    """SSDP-02: 3 + 2d + k = 10 (IGD:1) and 11 (IGD:2 with WANIPv6FirewallControl)."""
    assert len(ROOT1.advertisements) == 10
    assert len(ROOT2.advertisements) == 11
    assert ("service", "WANIPConnection", 2) in ROOT2.types
    assert ROOT1.version_of("device", "InternetGatewayDevice") == 1
    assert ROOT1.version_of("service", "WANIPv6FirewallControl") is None


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_ssdp_all_answers_every_member(config: str) -> None:
    """SSDP-37: one reply per member, ST = its NT, LOCATION of its root."""
    expected = {
        (ad.nt, ad.usn, root.location) for root in CONFIGS[config] for ad in root.advertisements
    }
    assert answers("ssdp:all", config) == expected
    assert len(expected) == {"igd1": 10, "igd2": 11, "dual": 21}[config]


def test_ssdp_all_keeps_root_and_set_order() -> None:
    replies = plan_replies(msearch("ssdp:all"), CONFIGS["dual"], multicast=False, draw=high)
    assert [r.usn for r in replies[:3]] == [
        f"{R1}::upnp:rootdevice",
        R1,
        f"{R1}::{t('InternetGatewayDevice', 1, 'device')}",
    ]
    assert replies[10].usn == f"{R2}::upnp:rootdevice"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("igd1", {("upnp:rootdevice", f"{R1}::upnp:rootdevice", LOC1)}),
        ("igd2", {("upnp:rootdevice", f"{R2}::upnp:rootdevice", LOC2)}),
        (
            "dual",
            {
                ("upnp:rootdevice", f"{R1}::upnp:rootdevice", LOC1),
                ("upnp:rootdevice", f"{R2}::upnp:rootdevice", LOC2),
            },
        ),
    ],
)
def test_rootdevice(config: str, expected: set[tuple[str, str, str]]) -> None:
    """SSDP-38: each root device answers once."""
    assert answers("upnp:rootdevice", config) == expected


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("udn", [R1, W1, C1, R2, W2, C2])
def test_uuid_exact(config: str, udn: str) -> None:
    """SSDP-39: ST = USN = the UDN, only from the root that holds it."""
    holder = LOC1 if udn in (R1, W1, C1) else LOC2
    present = holder in {root.location for root in CONFIGS[config]}
    assert answers(udn, config) == ({(udn, udn, holder)} if present else set())
    assert answers(udn.upper().replace("UUID:", "uuid:"), config) == answers(udn, config)


@pytest.mark.parametrize(
    "target",
    [
        "uuid:00000000-0000-4000-8000-000000000099",
        "uuid:",
        R1 + "x",
        R1[:-1],
        f"{R1}::upnp:rootdevice",
    ],
)
def test_unknown_uuid(target: str) -> None:
    assert answers(target, "dual") == set()


def rewritten(udn: str, target: str, location: str) -> tuple[str, str, str]:
    return (target, f"{udn}::{target}", location)


# (ST, config) -> expected answers. The heart of SSDP-40/41 and the dual-root rule (4b).
TYPE_TABLE: list[tuple[str, str, set[tuple[str, str, str]]]] = [
    # InternetGatewayDevice
    (
        t("InternetGatewayDevice", 1, "device"),
        "igd1",
        {rewritten(R1, t("InternetGatewayDevice", 1, "device"), LOC1)},
    ),
    (
        t("InternetGatewayDevice", 1, "device"),
        "igd2",
        {rewritten(R2, t("InternetGatewayDevice", 1, "device"), LOC2)},
    ),
    (
        t("InternetGatewayDevice", 1, "device"),
        "dual",
        {rewritten(R1, t("InternetGatewayDevice", 1, "device"), LOC1)},
    ),
    (t("InternetGatewayDevice", 2, "device"), "igd1", set()),
    (
        t("InternetGatewayDevice", 2, "device"),
        "igd2",
        {rewritten(R2, t("InternetGatewayDevice", 2, "device"), LOC2)},
    ),
    (
        t("InternetGatewayDevice", 2, "device"),
        "dual",
        {rewritten(R2, t("InternetGatewayDevice", 2, "device"), LOC2)},
    ),
    (t("InternetGatewayDevice", 3, "device"), "dual", set()),
    # WANDevice / WANConnectionDevice (go-libp2p searches embedded devices)
    (t("WANDevice", 1, "device"), "dual", {rewritten(W1, t("WANDevice", 1, "device"), LOC1)}),
    (t("WANDevice", 1, "device"), "igd2", {rewritten(W2, t("WANDevice", 1, "device"), LOC2)}),
    (t("WANDevice", 2, "device"), "dual", {rewritten(W2, t("WANDevice", 2, "device"), LOC2)}),
    (
        t("WANConnectionDevice", 1, "device"),
        "dual",
        {rewritten(C1, t("WANConnectionDevice", 1, "device"), LOC1)},
    ),
    (
        t("WANConnectionDevice", 2, "device"),
        "dual",
        {rewritten(C2, t("WANConnectionDevice", 2, "device"), LOC2)},
    ),
    (t("WANConnectionDevice", 2, "device"), "igd1", set()),
    # WANIPConnection (goupnp, GUPnP-IGD, miniupnpc, mDNSResponder)
    (t("WANIPConnection", 1), "igd1", {rewritten(C1, t("WANIPConnection", 1), LOC1)}),
    (t("WANIPConnection", 1), "igd2", {rewritten(C2, t("WANIPConnection", 1), LOC2)}),
    (t("WANIPConnection", 1), "dual", {rewritten(C1, t("WANIPConnection", 1), LOC1)}),
    (t("WANIPConnection", 2), "igd1", set()),
    (t("WANIPConnection", 2), "igd2", {rewritten(C2, t("WANIPConnection", 2), LOC2)}),
    (t("WANIPConnection", 2), "dual", {rewritten(C2, t("WANIPConnection", 2), LOC2)}),
    (t("WANIPConnection", 3), "igd2", set()),
    (t("WANIPConnection", 3), "dual", set()),
    # Services at version 1 in both trees: both roots answer, each with its own LOCATION
    (
        t("Layer3Forwarding", 1),
        "dual",
        {
            rewritten(R1, t("Layer3Forwarding", 1), LOC1),
            rewritten(R2, t("Layer3Forwarding", 1), LOC2),
        },
    ),
    (
        t("WANCommonInterfaceConfig", 1),
        "dual",
        {
            rewritten(W1, t("WANCommonInterfaceConfig", 1), LOC1),
            rewritten(W2, t("WANCommonInterfaceConfig", 1), LOC2),
        },
    ),
    (t("Layer3Forwarding", 2), "dual", set()),
    (t("WANIPv6FirewallControl", 1), "igd1", set()),
    (t("WANIPv6FirewallControl", 1), "igd2", {rewritten(C2, t("WANIPv6FirewallControl", 1), LOC2)}),
    (t("WANIPv6FirewallControl", 1), "dual", {rewritten(C2, t("WANIPv6FirewallControl", 1), LOC2)}),
    # Not advertised, unknown, vendor, malformed (SSDP-41/42)
    (t("WANPPPConnection", 1), "dual", set()),
    (t("Nonexistent", 1), "dual", set()),
    ("urn:microsoft-com:service:OSInfo:1", "dual", set()),
    ("urn:schemas-upnp-org:device:InternetGatewayDevice", "dual", set()),
    ("urn:schemas-upnp-org:device:InternetGatewayDevice:0", "dual", set()),
    ("urn:schemas-upnp-org:device:InternetGatewayDevice:1:", "dual", set()),
    ("urn:schemas-upnp-org:device:InternetGatewayDevice:x", "dual", set()),
    ("urn:schemas-upnp-org:widget:InternetGatewayDevice:1", "dual", set()),
    ("urn:schemas-upnp-org:device:internetgatewaydevice:1", "dual", set()),
    ("urn:schemas-upnp-org:device:InternetGatewayDevice:1 ", "dual", set()),
    ("ssdp:alL", "dual", set()),
    ("upnp:rootdevices", "dual", set()),
    ("*", "dual", set()),
    ("urn:schemas-upnp-org:device:InternetGatewayDevice:9999999999", "dual", set()),
]


@pytest.mark.parametrize(("target", "config", "expected"), TYPE_TABLE)
def test_type_search(target: str, config: str, expected: set[tuple[str, str, str]]) -> None:
    """SSDP-40/41, architecture 4b: requested version echoed; IGD:1 -> IGD:1 root, :2 -> IGD:2."""
    assert answers(target, config) == expected


def test_version_with_leading_zero_is_answered_with_canonical_st() -> None:
    assert answers(t("WANIPConnection", 1).replace(":1", ":01"), "dual") == {
        rewritten(C1, t("WANIPConnection", 1), LOC1)
    }


@pytest.mark.parametrize(
    "man", [None, "ssdp:discover", '"ssdp:notdiscover"', '"SSDP:DISCOVER"', '""', "'ssdp:discover'"]
)
@pytest.mark.parametrize("multicast", [True, False])
def test_man_must_be_exactly_ssdp_discover(man: str | None, multicast: bool) -> None:
    """SSDP-35, T-SSDP-09."""
    search = msearch("ssdp:all", man=man)
    assert plan_replies(search, CONFIGS["dual"], multicast=multicast, draw=high) == []


class RecordingDraw:
    def __init__(self, value: float | None = None) -> None:
        self.calls: list[tuple[float, float]] = []
        self.value = value

    def __call__(self, low: float, top: float) -> float:
        self.calls.append((low, top))
        return top if self.value is None else self.value


@pytest.mark.parametrize(
    ("mx", "window"),
    [
        (None, None),
        (0, None),
        (-1, None),
        (-99999, None),
        (1, 1.0),
        (2, 2.0),
        (5, 5.0),
        (6, 5.0),
        (120, 5.0),
        (99999, 5.0),
        (10**30, 5.0),
    ],
)
def test_multicast_mx_policy(mx: int | None, window: float | None) -> None:
    """SSDP-32/33/34, ST-05: missing or < 1 -> ignored; delays in [0, min(MX, 5)]."""
    draw = RecordingDraw()
    replies = plan_replies(
        msearch("upnp:rootdevice", mx=mx), CONFIGS["dual"], multicast=True, draw=draw
    )
    if window is None:
        assert replies == []
        assert draw.calls == []
    else:
        assert len(replies) == 2
        assert draw.calls == [(0.0, window)] * 2  # one independent draw per reply
        assert all(r.delay_s == window for r in replies)


@pytest.mark.parametrize("mx", [None, 0, -1, 3, 99999])
def test_unicast_ignores_mx_and_answers_at_once(mx: int | None) -> None:
    """SSDP-36, T-SSDP-12: unicast searches are answered without delay."""
    draw = RecordingDraw()
    replies = plan_replies(
        msearch("upnp:rootdevice", mx=mx), CONFIGS["dual"], multicast=False, draw=draw
    )
    assert [r.delay_s for r in replies] == [0.0, 0.0]
    assert draw.calls == []


def test_non_numeric_mx_never_reaches_matching() -> None:
    """ST-05 `MX: abc`: the datagram is malformed, so the responder drops it."""
    with pytest.raises(SsdpParseError):
        parse_datagram(
            b'M-SEARCH * HTTP/1.1\r\nMAN: "ssdp:discover"\r\nMX: abc\r\nST: ssdp:all\r\n\r\n'
        )


@pytest.mark.parametrize("value", [-3.0, 7.5, math.inf, -math.inf, math.nan])
def test_misbehaving_draw_is_clamped(value: float) -> None:
    replies = plan_replies(
        msearch("ssdp:all", mx=3), CONFIGS["igd1"], multicast=True, draw=RecordingDraw(value)
    )
    assert replies
    assert all(0.0 <= r.delay_s <= 3.0 for r in replies)


# file -> (number of replies from the dual roots, their LOCATIONs)
GOLDEN_ANSWERS: dict[str, tuple[int, set[str]]] = {
    "miniupnpc-2.2.4-igd1.bin": (1, {LOC1}),
    "miniupnpc-2.2.4-wanipconnection1.bin": (1, {LOC1}),
    "miniupnpc-2.2.4-wanpppconnection1.bin": (0, set()),
    "miniupnpc-2.2.4-rootdevice.bin": (2, {LOC1, LOC2}),
    "async-upnp-client-0.49.0-all.bin": (21, {LOC1, LOC2}),
    "async-upnp-client-0.49.0-igd2.bin": (1, {LOC2}),
    "async-upnp-client-0.49.0-unicast-all.bin": (21, {LOC1, LOC2}),
    "gssdp-1.6.2-wanipconnection1.bin": (1, {LOC1}),
    "libtorrent-2.0.8-rootdevice.bin": (2, {LOC1, LOC2}),
    "mdnsresponder-wanipconnection1.doc.bin": (1, {LOC1}),
    "syncthing-igd2.doc.bin": (1, {LOC2}),
    "syncthing-v6-igd2.doc.bin": (1, {LOC2}),
    "tailscale-all.doc.bin": (21, {LOC1, LOC2}),
    "tailscale-igd1.doc.bin": (1, {LOC1}),
    "windows10-igd1.doc.bin": (1, {LOC1}),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_ANSWERS))
def test_golden_searches_end_to_end(name: str) -> None:
    """Real clients' datagrams -> replies whose ST is the searched one (exact-ST filters)."""
    search = parse_datagram((GOLDEN / name).read_bytes())
    assert isinstance(search, MSearch)
    replies = plan_replies(search, CONFIGS["dual"], multicast=True, draw=high)
    count, locations = GOLDEN_ANSWERS[name]
    assert len(replies) == count
    assert {r.location for r in replies} == locations
    window = min(search.mx or 0, 5)
    assert all(r.delay_s == window for r in replies)
    if search.target != "ssdp:all":
        assert all(r.st == search.target for r in replies)
    for reply in replies:
        data = build_search_response(
            reply.st,
            reply.usn,
            location=reply.location,
            max_age_s=1800,
            server="Linux/6.1 UPnP/1.1 igd/0.1.0",
            boot_id=1,
            config_id=1,
            date=http_date(0),
        )
        assert len(data) < 1024


def test_root_validation() -> None:
    with pytest.raises(ValueError, match="no advertisement"):
        AdvertisedRoot(LOC1, (Advertisement(R1, R1),), (("device", "InternetGatewayDevice", 1),))
    with pytest.raises(ValueError, match="SSDP-03"):
        AdvertisedRoot(LOC1, (Advertisement(t("WANIPConnection", 1), R1),), ())
    with pytest.raises(ValueError, match="repeated"):
        AdvertisedRoot(
            LOC1,
            (Advertisement(t("WANIPConnection", 1), f"{C1}::{t('WANIPConnection', 1)}"),),
            (("service", "WANIPConnection", 1), ("service", "WANIPConnection", 1)),
        )
    with pytest.raises(ValueError, match="bad"):
        AdvertisedRoot(LOC1, (), (("thing", "X", 1),))
    with pytest.raises(ValueError, match="two versions"):
        AdvertisedRoot.from_advertisements(
            LOC1,
            [
                Advertisement(t("WANIPConnection", 1), f"{C1}::{t('WANIPConnection', 1)}"),
                Advertisement(t("WANIPConnection", 2), f"{C1}::{t('WANIPConnection', 2)}"),
            ],
        )


def test_vendor_types_are_not_types() -> None:
    vendor = "urn:example-com:service:Thing:1"
    root = AdvertisedRoot.from_advertisements(LOC1, [Advertisement(vendor, f"{R1}::{vendor}")])
    assert root.types == ()
    assert plan_replies(msearch(vendor), [root], multicast=False, draw=high) == []
    assert len(plan_replies(msearch("ssdp:all"), [root], multicast=False, draw=high)) == 1


targets = st.sampled_from(
    ["ssdp:all", "upnp:rootdevice", R1, C2, "uuid:nope"]
    + [
        t(kind, v)
        for kind in ("WANIPConnection", "Layer3Forwarding", "WANIPv6FirewallControl", "X")
        for v in (0, 1, 2, 3)
    ]
    + [t(kind, v, "device") for kind in ("InternetGatewayDevice", "WANDevice") for v in (1, 2, 3)]
) | st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    target=targets,
    mx=st.none() | st.integers(min_value=-(10**6), max_value=10**6),
    man=st.sampled_from([None, '"ssdp:discover"', "ssdp:discover"]),
    multicast=st.booleans(),
    config=st.sampled_from(sorted(CONFIGS)),
    fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_plan_invariants(
    target: str, mx: int | None, man: str | None, multicast: bool, config: str, fraction: float
) -> None:
    roots = CONFIGS[config]
    replies = plan_replies(
        msearch(target, mx=mx, man=man),
        roots,
        multicast=multicast,
        draw=lambda a, b: a + (b - a) * fraction,
    )
    if man != '"ssdp:discover"' or (multicast and (mx is None or mx < 1)):
        assert replies == []
    window = min(mx, 5) if multicast and mx is not None and mx >= 1 else 0
    all_usns = {ad.usn for root in roots for ad in root.advertisements}
    for reply in replies:
        assert isinstance(reply, Reply)
        assert 0.0 <= reply.delay_s <= window
        assert reply.location in {root.location for root in roots}
        if target.startswith("urn:"):
            assert reply.st == target or reply.st == target.replace(":0", ":")
            assert reply.usn.endswith("::" + reply.st)
            assert reply.usn.split("::")[0] in {u.split("::")[0] for u in all_usns}
        else:
            assert reply.usn in all_usns


# ---- Sources (SSDP-46, ST-01, ST-04) ------------------------------------------------------------

LAN: list[IPv4Network | IPv6Network] = [
    IPv4Network("198.18.0.0/24"),
    IPv6Network("fd77::/64"),
    IPv6Network("fe80::/64"),
]


@pytest.mark.parametrize(
    "address",
    [
        "198.18.0.10",
        "198.18.0.1",
        "198.18.0.254",
        IPv4Address("198.18.0.11"),
        "::ffff:198.18.0.10",
        "fd77::10",
        "fe80::1%lan0",
        IPv6Address("fd77::1"),
    ],
)
def test_lan_sources_are_allowed(address: str | IPv4Address | IPv6Address) -> None:
    assert source_allowed(address, LAN)
    assert source_allowed(address, LAN, port=1900)
    assert not forbidden_source(address)


@pytest.mark.parametrize(
    "address",
    [
        "198.19.0.100",  # WAN side (ST-01)
        "10.9.9.9",  # spoofed, outside the LAN subnet (T-SSDP-22)
        "198.18.0.0",  # the subnet's network address
        "198.18.0.255",  # the subnet's broadcast address (ST-04)
        "255.255.255.255",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "239.255.255.250",
        "::",
        "ff02::c",
        "fd78::1",
        "::ffff:198.19.0.100",
        "not an address",
        "",
        "198.18.0.10:1900",
    ],
)
def test_other_sources_are_refused(address: str) -> None:
    assert not source_allowed(address, LAN)


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "224.0.0.251",
        "ff05::c",
        "bogus",
        "0.0.0.7",
        "::ffff:224.0.0.1",
    ],
)
def test_forbidden_sources(address: str) -> None:
    assert forbidden_source(address)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_bad_source_ports_are_refused(port: int) -> None:
    assert not source_allowed("198.18.0.10", LAN, port=port)


def test_small_prefixes_have_no_edge_addresses() -> None:
    assert source_allowed("198.18.0.7", [IPv4Network("198.18.0.7/32")])
    assert source_allowed("198.18.0.6", [IPv4Network("198.18.0.6/31")])
    assert not source_allowed("198.18.0.4", [IPv4Network("198.18.0.4/30")])
    assert source_allowed("198.18.0.5", [IPv4Network("198.18.0.4/30")])


def test_no_networks_means_no_sources() -> None:
    assert not source_allowed("198.18.0.10", [])


# ---- Reply budget (SSDP-48, ST-04) --------------------------------------------------------------


def test_limiter_burst_then_refill() -> None:
    limiter = ReplyLimiter(rate_per_s=10.0, burst=20)
    assert limiter.allow("a", now=100.0, cost=20)
    assert not limiter.allow("a", now=100.0, cost=1)
    assert limiter.allow("a", now=100.1, cost=1)  # 0.1 s * 10/s = 1 token
    assert not limiter.allow("a", now=100.1, cost=1)
    assert limiter.allow("a", now=102.0, cost=19)
    assert not limiter.allow("a", now=102.0, cost=1)


def test_limiter_refusal_spends_nothing() -> None:
    limiter = ReplyLimiter(rate_per_s=1.0, burst=10)
    assert not limiter.allow("a", now=0.0, cost=11)
    assert limiter.allow("a", now=0.0, cost=10)


def test_limiter_sources_are_independent_and_zero_cost_is_free() -> None:
    limiter = ReplyLimiter(rate_per_s=1.0, burst=5)
    assert limiter.allow("a", now=0.0, cost=5)
    assert limiter.allow("b", now=0.0, cost=5)
    assert not limiter.allow("a", now=0.0, cost=1)
    assert limiter.allow("a", now=0.0, cost=0)


def test_limiter_clock_going_backwards_refills_nothing() -> None:
    limiter = ReplyLimiter(rate_per_s=1.0, burst=5)
    assert limiter.allow("a", now=50.0, cost=5)
    assert not limiter.allow("a", now=10.0, cost=1)
    assert not limiter.allow("a", now=50.5, cost=1)
    assert limiter.allow("a", now=51.0, cost=1)


def test_limiter_forgets_idle_sources() -> None:
    limiter = ReplyLimiter(rate_per_s=10.0, burst=20)
    for i in range(100):
        limiter.allow(f"198.18.0.{i}", now=0.0, cost=1)
    assert len(limiter) == 100
    limiter.allow("198.18.0.200", now=limiter.refill_s, cost=1)
    assert len(limiter) == 1


def test_limiter_memory_is_bounded() -> None:
    limiter = ReplyLimiter(rate_per_s=1.0, burst=2, max_sources=50)
    for i in range(1000):
        limiter.allow(f"fd77::{i:x}", now=i * 0.001, cost=2)
        assert len(limiter) <= 50
    assert not limiter.allow("fd77::3e7", now=1.0, cost=2)  # the most recent is remembered


def test_limiter_validation() -> None:
    with pytest.raises(ValueError, match="required"):
        ReplyLimiter(rate_per_s=0.0)
    with pytest.raises(ValueError, match="required"):
        ReplyLimiter(burst=0)
    with pytest.raises(ValueError, match="cost"):
        ReplyLimiter().allow("a", now=0.0, cost=-1)


def test_amplification_burst_is_bounded() -> None:
    """ST-04: 100 ssdp:all searches in one second from one source (21 replies each, dual root)."""
    limiter = ReplyLimiter()
    search = msearch("ssdp:all")
    sent = 0
    for i in range(100):
        replies = plan_replies(search, CONFIGS["dual"], multicast=True, draw=high)
        if limiter.allow("198.18.0.10", now=i / 100, cost=len(replies)):
            sent += len(replies)
    assert sent <= DEFAULT_REPLY_BURST + DEFAULT_REPLY_RATE_PER_S
    assert sent >= 21 * 3  # a legitimate client still gets its answers
    assert limiter.allow("198.18.0.11", now=1.0, cost=21)  # other sources unaffected
