"""The nftables backend without a kernel: skeleton, elements, rules, batches, runners, selection.

Everything here is pure or runs against a fake batch runner (or a fake `nft` program), so it needs
no root and never touches a ruleset. The kernel path is tests/netns/test_nftables_netns.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import threading
import uuid
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igd.config import BACKENDS, Config, ConfigError
from igd.daemon import AUTO_BACKENDS, Daemon
from igd.natcore import BackendError, IPProtocol, Mapping, SharingConnectionType
from igd.natcore.backends import nftables
from igd.natcore.backends.base import AppliedConnection, Plan
from igd.natcore.backends.memory import MemoryBackend
from igd.natcore.backends.nftables import (
    MAX_TIMEOUT_S,
    NFT_SKELETON,
    Element,
    LibNftables,
    NftablesBackend,
    NftCommand,
    NftError,
    connection_rules,
    delete_table_batch,
    element_json,
    element_text,
    elements_batch,
    has_net_admin,
    lease_timeout,
    mapping_elements,
    nftables_unusable_reason,
    open_nft,
    reload_batch,
    skeleton,
    topology,
    validate_ifname,
    validate_table,
)
from igd.natcore.backends.userspace import UserspaceBackend

NOW = 1_800_000_000.0
LAN_HOST = IPv4Address("198.18.0.10")
GW_LAN = IPv4Address("198.18.0.1")
GW_WAN = IPv4Address("198.19.0.1")
REMOTE = IPv4Address("198.19.0.100")

WAN = AppliedConnection(
    uuid.UUID(int=1), "wan0", SharingConnectionType.PUBLIC, True, (IPv4Interface("198.19.0.1/24"),)
)
LAN = AppliedConnection(
    uuid.UUID(int=2),
    "br-lan",
    SharingConnectionType.PRIVATE,
    False,
    (IPv4Interface("198.18.0.1/24"),),
)
OPEN_WAN = AppliedConnection(WAN.guid, "wan0", SharingConnectionType.PUBLIC, False, WAN.addresses)
ICF_ONLY = AppliedConnection(uuid.UUID(int=3), "eth1", None, True, (IPv4Interface("192.0.2.2/24"),))
IDLE = AppliedConnection(uuid.UUID(int=4), "idle0", None, False)
DAEMON_DEFAULT = (LAN, WAN)

GOLDEN_RULES = [
    'add rule inet igd prerouting iifname { "wan0" } '
    "dnat ip to ip saddr . meta l4proto . th dport map @fwd4_rh",
    'add rule inet igd prerouting iifname { "wan0" } dnat ip to meta l4proto . th dport map @fwd4',
    'add rule inet igd prerouting iifname { "br-lan" } ip daddr { 198.19.0.1 } '
    "dnat ip to meta l4proto . th dport map @fwd4",
    'add rule inet igd postrouting iifname { "br-lan" } oifname { "br-lan" } ct status dnat '
    "ct original ip daddr { 198.19.0.1 } masquerade",
    'add rule inet igd postrouting iifname { "br-lan" } oifname { "wan0" } '
    "meta nfproto ipv4 masquerade",
    'add rule inet igd input iifname { "wan0" } jump icf_input',
    'add rule inet igd forward iifname { "wan0" } jump icf_forward',
]


def mapping(
    port: int = 40000,
    *,
    protocol: IPProtocol = IPProtocol.TCP,
    client: IPv4Address = LAN_HOST,
    internal_port: int | None = None,
    remote: IPv4Address | None = None,
    lease: float | None = None,
    connection: AppliedConnection = WAN,
    description: str = "",
) -> Mapping:
    return Mapping(
        protocol=protocol,
        external_port=port,
        internal_client=client,
        internal_port=port if internal_port is None else internal_port,
        connection=connection.guid,
        description=description,
        remote_host=remote,
        expires_at=None if lease is None else NOW + lease,
    )


# ---- Skeleton -----------------------------------------------------------------------------------


def test_skeleton_declares_our_table_only() -> None:
    text = skeleton("igd")
    assert text.startswith("table inet igd {\n")
    assert "{table}" not in text
    assert text.count("table ") == 1
    assert "flush" not in text
    assert "ruleset" not in text


def test_skeleton_maps_sets_and_chains() -> None:
    lines = [line.strip() for line in skeleton("igd").splitlines()]
    assert "type inet_proto . inet_service : ipv4_addr . inet_service" in lines
    assert "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service" in lines
    assert "type ifname . inet_proto . inet_service" in lines
    assert "type ifname . ipv4_addr . inet_proto . inet_service" in lines
    assert lines.count("flags timeout") == 4
    assert "type nat hook prerouting priority dstnat; policy accept;" in lines
    assert "type nat hook postrouting priority srcnat; policy accept;" in lines
    assert "type filter hook input priority filter; policy accept;" in lines
    assert "type filter hook forward priority filter; policy accept;" in lines
    assert not any("policy drop" in line for line in lines)
    chains = [line.split()[1] for line in lines if line.startswith("chain ")]
    assert chains == ["prerouting", "postrouting", "input", "forward", "icf_input", "icf_forward"]


def chain_body(name: str) -> list[str]:
    lines = [line.strip() for line in skeleton("igd").splitlines()]
    start = lines.index(f"chain {name} {{")
    end = lines.index("}", start)
    return lines[start + 1 : end]


def test_icf_policy_is_stateful_and_ends_in_drop() -> None:
    for chain in ("icf_input", "icf_forward"):
        body = chain_body(chain)
        assert body[:3] == [
            "ct state established,related accept",
            "ct state invalid drop",
            "ct status dnat accept",
        ]
        assert body[-1] == "drop"
    icf_input = " ".join(chain_body("icf_input"))
    assert "@open4 accept" in icf_input
    assert "@open4_rh accept" in icf_input
    assert "icmp type { echo-request," in icf_input
    assert "nd-neighbor-solicit" in icf_input
    assert "ip6 hoplimit 255" in icf_input
    assert "echo-request" not in " ".join(chain_body("icf_forward"))
    assert chain_body("input") == ['type filter hook input priority filter; policy accept;',
                                   'iif "lo" accept']  # fmt: skip


def test_skeleton_constant_is_the_template() -> None:
    assert skeleton("other_1") == NFT_SKELETON.replace("{table}", "other_1")


@pytest.mark.parametrize(
    "name", ["", "1igd", "igd x", "igd;flush ruleset", 'igd"', "igd\n", "a" * 33, "igd-x"]
)
def test_bad_table_names_refused(name: str) -> None:
    with pytest.raises(BackendError, match="table name"):
        validate_table(name)
    with pytest.raises(BackendError):
        NftablesBackend(table=name)


# ---- Leases and elements ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "timeout"),
    [
        (None, None),
        (3.0, 3),
        (3.2, 4),
        (0.1, 1),
        (0.0, 1),
        (-5.0, 1),
        (604800.0, 604800),
        (1e15, MAX_TIMEOUT_S),
    ],
)
def test_lease_timeout_rounds_up_at_least_one(left: float | None, timeout: int | None) -> None:
    expires = None if left is None else NOW + left
    assert lease_timeout(expires, NOW) == timeout


def test_wildcard_mapping_is_one_fwd4_element() -> None:
    topo = topology(DAEMON_DEFAULT)
    (element,) = mapping_elements(mapping(lease=2.5), topo, NOW)
    assert element.set_name == "fwd4"
    assert element_text(element) == "tcp . 40000 timeout 3s : 198.18.0.10 . 40000"
    assert element_json(element) == [
        {"elem": {"val": {"concat": ["tcp", 40000]}, "timeout": 3}},
        {"concat": ["198.18.0.10", 40000]},
    ]
    assert element_json(element, key_only=True) == {"concat": ["tcp", 40000]}


@pytest.mark.parametrize(
    ("lease", "text"),
    [
        (1, "1s"),
        (59, "59s"),
        (3600, "1h"),
        (90061, "1d1h1m1s"),
        (604800, "7d"),
        (1e12, "49710d6h28m15s"),
    ],
)
def test_text_timeouts_use_units(lease: float, text: str) -> None:
    (element,) = mapping_elements(mapping(lease=lease), topology(DAEMON_DEFAULT), NOW)
    assert element_text(element) == f"tcp . 40000 timeout {text} : 198.18.0.10 . 40000"


def test_permanent_mapping_has_no_timeout() -> None:
    (element,) = mapping_elements(mapping(protocol=IPProtocol.UDP), topology(DAEMON_DEFAULT), NOW)
    assert element_text(element) == "udp . 40000 : 198.18.0.10 . 40000"
    assert element_json(element) == [
        {"concat": ["udp", 40000]},
        {"concat": ["198.18.0.10", 40000]},
    ]


def test_remote_host_mapping_goes_to_fwd4_rh() -> None:
    m = mapping(40001, internal_port=22, remote=REMOTE, lease=60)
    (element,) = mapping_elements(m, topology(DAEMON_DEFAULT), NOW)
    assert element.set_name == "fwd4_rh"
    assert element_text(element) == "198.19.0.100 . tcp . 40001 timeout 1m : 198.18.0.10 . 22"
    assert element_json(element) == [
        {"elem": {"val": {"concat": ["198.19.0.100", "tcp", 40001]}, "timeout": 60}},
        {"concat": ["198.18.0.10", 22]},
    ]


def test_mapping_onto_the_gateway_itself_also_opens_the_port() -> None:
    topo = topology(DAEMON_DEFAULT)
    dnat, opening = mapping_elements(mapping(2222, client=GW_WAN), topo, NOW)
    assert (dnat.set_name, opening.set_name) == ("fwd4", "open4")
    assert element_text(opening) == '"wan0" . tcp . 2222'
    assert element_json(opening) == {"concat": ["wan0", "tcp", 2222]}
    # a port change or another address is a real DNAT: `ct status dnat` admits it
    assert len(mapping_elements(mapping(2222, client=GW_WAN, internal_port=22), topo, NOW)) == 1
    assert len(mapping_elements(mapping(2222, client=GW_LAN), topo, NOW)) == 2
    unfirewalled = topology((LAN, OPEN_WAN))
    assert len(mapping_elements(mapping(2222, client=GW_WAN), unfirewalled, NOW)) == 1


def test_firewalled_connection_without_sharing_opens_ports() -> None:
    topo = topology((ICF_ONLY,))
    (element,) = mapping_elements(mapping(22, connection=ICF_ONLY, lease=9.5), topo, NOW)
    assert element_text(element) == '"eth1" . tcp . 22 timeout 10s'
    (restricted,) = mapping_elements(mapping(22, connection=ICF_ONLY, remote=REMOTE), topo, NOW)
    assert restricted.set_name == "open4_rh"
    assert element_text(restricted) == '"eth1" . 198.19.0.100 . tcp . 22'
    assert element_json(restricted) == {"concat": ["eth1", "198.19.0.100", "tcp", 22]}


def test_mapping_that_carries_nothing_has_no_element() -> None:
    assert mapping_elements(mapping(connection=IDLE), topology((IDLE,)), NOW) == ()
    assert mapping_elements(mapping(), topology(()), NOW) == ()  # its connection is gone


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_ports_out_of_range_refused(port: int) -> None:
    bad = mapping(40000, internal_port=port)
    with pytest.raises(BackendError, match="port"):
        mapping_elements(bad, topology(DAEMON_DEFAULT), NOW)


def test_elements_batch_removes_by_add_then_delete_and_adds() -> None:
    topo = topology(DAEMON_DEFAULT)
    old = mapping_elements(mapping(40000, lease=10), topo, NOW)
    new = mapping_elements(mapping(40000, lease=3600), topo, NOW)
    extra = mapping_elements(mapping(5, remote=REMOTE), topo, NOW)
    batch = json.loads(elements_batch("igd", old, new + extra))
    commands = batch["nftables"]
    assert [next(iter(c)) for c in commands] == ["add", "delete", "add", "add"]
    where = {"family": "inet", "table": "igd"}
    assert commands[0]["add"]["element"] == {
        **where,
        "name": "fwd4",
        "elem": [
            [
                {"elem": {"val": {"concat": ["tcp", 40000]}, "timeout": 1}},
                {"concat": ["198.18.0.10", 40000]},
            ]
        ],
    }
    assert commands[1]["delete"]["element"] == {
        **where,
        "name": "fwd4",
        "elem": [{"concat": ["tcp", 40000]}],
    }
    assert commands[2]["add"]["element"]["elem"][0][0]["elem"]["timeout"] == 3600
    assert commands[3]["add"]["element"]["name"] == "fwd4_rh"


def test_elements_batch_groups_one_command_per_set() -> None:
    topo = topology(DAEMON_DEFAULT)
    added = [e for p in range(1000, 1100) for e in mapping_elements(mapping(p), topo, NOW)]
    commands = json.loads(elements_batch("igd", [], added))["nftables"]
    assert len(commands) == 1
    assert len(commands[0]["add"]["element"]["elem"]) == 100


# ---- Connection rules ---------------------------------------------------------------------------


def test_rules_for_the_daemon_default() -> None:
    assert connection_rules("igd", topology(DAEMON_DEFAULT), hairpin=True) == GOLDEN_RULES


def test_rules_without_hairpin() -> None:
    rules = connection_rules("igd", topology(DAEMON_DEFAULT), hairpin=False)
    assert rules == [r for r in GOLDEN_RULES if "ip daddr" not in r and "ct original" not in r]


def test_rules_public_without_firewall() -> None:
    rules = connection_rules("igd", topology((LAN, OPEN_WAN)), hairpin=True)
    assert rules == [r for r in GOLDEN_RULES if "jump icf" not in r]


def test_rules_public_without_private_no_masquerade() -> None:
    rules = connection_rules("igd", topology((WAN,)), hairpin=True)
    assert rules == [GOLDEN_RULES[0], GOLDEN_RULES[1], GOLDEN_RULES[5], GOLDEN_RULES[6]]


def test_rules_public_without_address_no_hairpin() -> None:
    bare = AppliedConnection(WAN.guid, "wan0", SharingConnectionType.PUBLIC, True)
    rules = connection_rules("igd", topology((LAN, bare)), hairpin=True)
    assert not any("daddr" in r for r in rules)
    assert GOLDEN_RULES[4] in rules


def test_rules_private_only_or_nothing_shared() -> None:
    assert connection_rules("igd", topology((LAN,)), hairpin=True) == []
    assert connection_rules("igd", topology((IDLE,)), hairpin=True) == []
    assert connection_rules("igd", topology(()), hairpin=True) == []


def test_rules_firewall_only() -> None:
    assert connection_rules("igd", topology((ICF_ONLY, IDLE)), hairpin=True) == [
        'add rule inet igd input iifname { "eth1" } jump icf_input',
        'add rule inet igd forward iifname { "eth1" } jump icf_forward',
    ]


def test_rules_several_private_connections_share_one_public() -> None:
    lan2 = AppliedConnection(uuid.UUID(int=9), "lan2", SharingConnectionType.PRIVATE, False)
    rules = connection_rules("igd", topology((LAN, lan2, WAN)), hairpin=True)
    assert (
        'add rule inet igd postrouting iifname { "br-lan", "lan2" } oifname { "wan0" } '
        "meta nfproto ipv4 masquerade"
    ) in rules


def test_reload_batch_is_one_replacement_of_our_table() -> None:
    topo = topology(DAEMON_DEFAULT)
    elements = [
        *mapping_elements(mapping(40000, lease=3), topo, NOW),
        *mapping_elements(mapping(40000, protocol=IPProtocol.UDP), topo, NOW),
        *mapping_elements(mapping(40001, remote=REMOTE), topo, NOW),
    ]
    lines = reload_batch("igd", elements, topo, hairpin=True).splitlines()
    assert lines[:2] == ["add table inet igd", "delete table inet igd"]
    text = "\n".join(lines)
    assert skeleton("igd") in text + "\n"
    for rule in GOLDEN_RULES:
        assert rule in lines
    assert lines[-2:] == [
        "add element inet igd fwd4 { tcp . 40000 timeout 3s : 198.18.0.10 . 40000, "
        "udp . 40000 : 198.18.0.10 . 40000 }",
        "add element inet igd fwd4_rh { 198.19.0.100 . tcp . 40001 : 198.18.0.10 . 40001 }",
    ]
    assert "flush ruleset" not in text
    assert all(line.split()[2:4] == ["inet", "igd"] for line in lines if line.startswith("add "))


def test_delete_table_batch_tolerates_a_missing_table() -> None:
    assert delete_table_batch("igd") == "add table inet igd\ndelete table inet igd\n"


# ---- Nothing from clients reaches the kernel ----------------------------------------------------

HOSTILE = st.text(min_size=1, max_size=200) | st.sampled_from(
    [
        '"; flush ruleset; "',
        "x\nTCP:22:192.168.1.9:22:0:evil",
        "} ; delete table inet igd ; {",
        "<script>alert(1)</script>",
        "\x00\x1b[31m",
        'comment "x"',
    ]
)


@settings(max_examples=200, deadline=None)
@given(description=HOSTILE, target_name=st.none() | HOSTILE, lease=st.none() | st.floats(1, 1e6))
def test_client_text_never_in_any_batch(
    description: str, target_name: str | None, lease: float | None
) -> None:
    topo = topology(DAEMON_DEFAULT)
    plain = mapping(40000, lease=lease)
    hostile = Mapping(
        protocol=plain.protocol,
        external_port=plain.external_port,
        internal_client=plain.internal_client,
        internal_port=plain.internal_port,
        connection=plain.connection,
        description=description,
        target_name=target_name,
        expires_at=plain.expires_at,
    )
    batches: list[tuple[str, str]] = []
    for m in (plain, hostile):
        elements = mapping_elements(m, topo, NOW)
        batches.append(
            (
                reload_batch("igd", elements, topo, hairpin=True),
                elements_batch("igd", elements, elements),
            )
        )
    assert batches[0] == batches[1]  # the description and target name change nothing


# ---- Interface names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["wan0", "br-lan", "eth0.100", "wlp2s0", "a", "x" * 15, "veth_A-1"]
)
def test_safe_interface_names_accepted(name: str) -> None:
    assert validate_ifname(name) == name


INJECTED = [
    "",
    "x" * 16,
    'wan0" accept',
    'wan0" } ; flush ruleset ; { "',
    "wan 0",
    "wan0\n",
    "wan0;",
    "wan{0}",
    "wän0",
    "wan*",
    "@wan",
    "wan0\\",
]


@pytest.mark.parametrize("name", INJECTED)
def test_injected_interface_names_refused(name: str) -> None:
    with pytest.raises(BackendError, match="interface name"):
        validate_ifname(name)
    for role, firewall in ((SharingConnectionType.PUBLIC, False), (None, True),
                           (SharingConnectionType.PRIVATE, False)):  # fmt: skip
        connection = AppliedConnection(uuid.UUID(int=7), name, role, firewall)
        with pytest.raises(BackendError, match="interface name"):
            topology((connection,))


def test_odd_name_of_an_unused_connection_is_ignored() -> None:
    unused = AppliedConnection(uuid.UUID(int=8), "wän 0", None, False)
    assert connection_rules("igd", topology((*DAEMON_DEFAULT, unused)), hairpin=True) == (
        GOLDEN_RULES
    )


@pytest.mark.parametrize(
    "element",
    [
        Element("tcp", 22, 'eth0" accept', None, None, None),
        Element("tcp . 1 } ; flush ruleset ; {", 22),
        Element("icmp", 22),
        Element("tcp", 70000),
    ],
)
def test_element_with_injected_parts_refused(element: Element) -> None:
    with pytest.raises(BackendError):
        element_text(element)
    with pytest.raises(BackendError):
        element_json(element)


async def test_backend_refuses_injected_name_without_running_nft() -> None:
    nft = FakeNft()
    backend = NftablesBackend(nft_factory=lambda: nft)
    await backend.start((), DAEMON_DEFAULT)
    evil = AppliedConnection(WAN.guid, 'wan0" accept', SharingConnectionType.PUBLIC, True)
    with pytest.raises(BackendError, match="interface name"):
        await backend.apply(Plan(connections=(LAN, evil)))
    with pytest.raises(BackendError, match="interface name"):
        await NftablesBackend(nft_factory=lambda: nft).start((), (evil,))
    assert len(nft.batches) == 1
    assert backend.topology.public == ("wan0",)
    await backend.stop()


# ---- The backend over a fake runner -------------------------------------------------------------


class FakeNft:
    """Records batches; `fail` returns an error line for a batch that must fail."""

    kind = "fake"

    def __init__(self, fail: Callable[[str], str | None] | None = None) -> None:
        self.fail = fail
        self.batches: list[str] = []
        self.threads: set[str] = set()
        self.closed = False

    def run(self, commands: str) -> str:
        self.threads.add(threading.current_thread().name)
        error = self.fail(commands) if self.fail is not None else None
        if error is not None:
            raise NftError(error)
        self.batches.append(commands)
        return ""

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def backend_with(nft: FakeNft, **options: Any) -> NftablesBackend:
    return NftablesBackend(nft_factory=lambda: nft, clock=Clock(), **options)


async def test_start_is_one_reload_batch() -> None:
    nft = FakeNft()
    backend = backend_with(nft)
    await backend.start((mapping(lease=5), mapping(1, remote=REMOTE)), DAEMON_DEFAULT)
    (batch,) = nft.batches
    assert batch.startswith("add table inet igd\ndelete table inet igd\ntable inet igd {")
    assert "tcp . 40000 timeout 5s : 198.18.0.10 . 40000" in batch
    assert "198.19.0.100 . tcp . 1 : 198.18.0.10 . 1" in batch
    assert nft.threads == {"igd-nft_0"}
    assert backend.runner_kind == "fake"
    assert backend.transactions == 1
    await backend.stop()


async def test_apply_mappings_is_one_json_batch() -> None:
    nft = FakeNft()
    backend = backend_with(nft)
    await backend.start((), DAEMON_DEFAULT)
    first = mapping(lease=30)
    await backend.apply(Plan(add=(first,)))
    refreshed = mapping(lease=300)
    await backend.apply(Plan(remove=(first,), add=(refreshed,)))
    await backend.apply(Plan(remove=(refreshed,)))
    assert len(nft.batches) == 4
    add, refresh, remove = (json.loads(b)["nftables"] for b in nft.batches[1:])
    assert [next(iter(c)) for c in add] == ["add"]
    assert [next(iter(c)) for c in refresh] == ["add", "delete", "add"]
    assert [next(iter(c)) for c in remove] == ["add", "delete"]
    assert backend.mappings == {}
    await backend.stop()


async def test_apply_with_connections_rewrites_the_table() -> None:
    nft = FakeNft()
    backend = backend_with(nft, hairpin=False)
    kept = mapping(lease=100)
    await backend.start((kept,), DAEMON_DEFAULT)
    await backend.apply(Plan(connections=(LAN, OPEN_WAN)))
    batch = nft.batches[-1]
    assert batch.startswith("add table inet igd\ndelete table inet igd\n")
    assert "jump icf_input" not in batch
    assert "tcp . 40000 timeout 1m40s" in batch
    assert backend.topology.firewalled == ()
    await backend.stop()


async def test_plan_that_carries_nothing_runs_no_batch() -> None:
    nft = FakeNft()
    backend = backend_with(nft)
    await backend.start((), (IDLE,))
    idle = mapping(connection=IDLE)
    await backend.apply(Plan(add=(idle,)))
    assert len(nft.batches) == 1
    assert idle.key in backend.mappings
    await backend.stop()


async def test_failure_is_backend_error_with_first_line_and_no_change() -> None:
    nft = FakeNft()
    backend = backend_with(nft)
    kept = mapping(1)
    await backend.start((kept,), DAEMON_DEFAULT)
    nft.fail = lambda batch: "Error: Could not process rule: No buffer space available"
    with pytest.raises(BackendError, match=r"^nftables: Error: Could not process rule: No buffer"):
        await backend.apply(Plan(add=(mapping(2),)))
    with pytest.raises(BackendError, match="No buffer space"):
        await backend.apply(Plan(connections=(LAN, OPEN_WAN)))
    assert backend.mappings == {kept.key: kept}
    assert backend.topology == topology(DAEMON_DEFAULT)
    with pytest.raises(BackendError, match="No buffer space"):
        await backend.stop()
    assert not backend.started
    assert nft.closed


async def test_element_batch_failure_rewrites_the_table_from_the_desired_state() -> None:
    nft = FakeNft(
        fail=lambda batch: "Error: No such file or directory" if batch[0] == "{" else None
    )
    backend = backend_with(nft)
    await backend.start((), DAEMON_DEFAULT)
    added = mapping(3, lease=4)
    await backend.apply(Plan(add=(added,)))
    assert backend.mappings == {added.key: added}
    assert nft.batches[-1].startswith("add table inet igd\ndelete table inet igd\n")
    assert "tcp . 3 timeout 4s : 198.18.0.10 . 3" in nft.batches[-1]
    await backend.stop()


async def test_start_failure_leaves_it_stopped() -> None:
    nft = FakeNft(fail=lambda batch: "netlink: Error: cache initialization failed: EPERM")
    backend = backend_with(nft)
    with pytest.raises(BackendError, match="cache initialization failed"):
        await backend.start((), DAEMON_DEFAULT)
    with pytest.raises(BackendError, match="not started"):
        await backend.apply(Plan(add=(mapping(),)))
    await backend.stop()
    assert nft.batches == []


async def test_stop_deletes_the_table_or_keeps_it() -> None:
    nft = FakeNft()
    backend = backend_with(nft)
    await backend.start((), DAEMON_DEFAULT)
    await backend.stop()
    assert nft.batches[-1] == "add table inet igd\ndelete table inet igd\n"
    assert nft.closed
    assert not backend.started
    kept = FakeNft()
    backend = backend_with(kept, keep_on_stop=True, table="igd_test")
    await backend.start((), DAEMON_DEFAULT)
    await backend.stop()
    assert len(kept.batches) == 1
    assert "inet igd_test" in kept.batches[0]
    assert kept.closed


async def test_restart_after_stop_uses_a_new_runner() -> None:
    made: list[FakeNft] = []

    def factory() -> FakeNft:
        made.append(FakeNft())
        return made[-1]

    backend = NftablesBackend(nft_factory=factory)
    await backend.start((), DAEMON_DEFAULT)
    await backend.stop()
    await backend.start((), DAEMON_DEFAULT)
    await backend.stop()
    assert len(made) == 2
    assert all(n.closed for n in made)


async def test_cancelled_apply_still_records_what_the_kernel_committed() -> None:
    release = threading.Event()
    nft = FakeNft()

    def slow(batch: str) -> None:
        release.wait(5)
        return None

    backend = backend_with(nft)
    await backend.start((), DAEMON_DEFAULT)
    nft.fail = slow
    added = mapping(7)
    task = asyncio.create_task(backend.apply(Plan(add=(added,))))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    for _ in range(100):
        if added.key in backend.mappings:
            break
        await asyncio.sleep(0.01)
    assert backend.mappings == {added.key: added}
    await backend.stop()


async def test_remove_of_an_unknown_mapping_is_tolerated() -> None:
    nft = FakeNft()
    backend = backend_with(nft)
    await backend.start((), DAEMON_DEFAULT)
    await backend.apply(Plan(remove=(mapping(9),)))
    assert len(nft.batches) == 1
    await backend.stop()


# ---- Runners ------------------------------------------------------------------------------------


def fake_nft_program(tmp_path: Path) -> Path:
    """A stand-in for `nft`: echoes its argv and stdin; fails when stdin says so."""
    program = tmp_path / "nft"
    program.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "data = sys.stdin.read()\n"
        "if 'fail' in data:\n"
        "    sys.stderr.write('/dev/stdin:1:1-4: Error: syntax error, unexpected junk\\n')\n"
        "    sys.stderr.write('fail\\n^^^^\\n')\n"
        "    sys.exit(1)\n"
        "print(' '.join(sys.argv[1:]) + '|' + data)\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def test_nft_command_picks_json_or_text_and_reports_first_error_line(tmp_path: Path) -> None:
    nft = NftCommand(str(fake_nft_program(tmp_path)))
    assert nft.run('{"nftables": []}').startswith('-j -f -|{"nftables"')
    assert nft.run("list tables").startswith("-f -|list tables")
    with pytest.raises(NftError, match=r"^Error: syntax error, unexpected junk$"):
        nft.run("fail")
    nft.close()


def test_nft_command_missing_program(tmp_path: Path) -> None:
    nft = NftCommand(str(tmp_path / "absent"))
    with pytest.raises(NftError, match="cannot run"):
        nft.run("list tables")


def test_libnftables_reports_parse_errors_without_touching_the_kernel() -> None:
    try:
        nft = LibNftables()
    except BackendError as exc:
        pytest.skip(f"libnftables not installed: {exc}")
    try:
        with pytest.raises(NftError, match=r"^Error: syntax error"):
            nft.run("this is not an nft command")
    finally:
        nft.close()
    with pytest.raises(NftError, match="closed"):
        nft.run("list tables")


def test_open_nft_falls_back_to_the_program(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> LibNftables:
        raise BackendError("cannot load libnftables.so.1: not found")

    monkeypatch.setattr(nftables, "LibNftables", missing)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/sbin/nft")
    assert open_nft().kind == "nft"
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(BackendError, match=r"not available: cannot load .* not installed"):
        open_nft()


def test_has_net_admin_reads_effective_capabilities(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000001000\n")
    assert has_net_admin(status)
    status.write_text("Name:\tx\nCapEff:\t0000000000000400\n")
    assert not has_net_admin(status)
    assert has_net_admin(tmp_path / "missing") == (os.geteuid() == 0)


def test_unusable_reason() -> None:
    assert nftables_unusable_reason(privileged=lambda: False) == "it needs root (CAP_NET_ADMIN)"

    def absent() -> FakeNft:
        raise BackendError("nftables is not available: x")

    assert nftables_unusable_reason(absent, privileged=lambda: True) == (
        "nftables is not available: x"
    )
    refusing = FakeNft(fail=lambda batch: "Operation not permitted")
    assert nftables_unusable_reason(lambda: refusing, privileged=lambda: True) == (
        "nft list tables failed: Operation not permitted"
    )
    assert refusing.closed
    working = FakeNft()
    assert nftables_unusable_reason(lambda: working, privileged=lambda: True) is None
    assert working.batches == ["list tables"]
    assert working.closed


# ---- Backend selection in the daemon ------------------------------------------------------------


def test_nftables_is_a_backend_choice() -> None:
    assert "nftables" in BACKENDS
    assert AUTO_BACKENDS == ("nftables", "userspace")


NO_ROOT = "it needs root (CAP_NET_ADMIN)"


@pytest.mark.parametrize(
    ("backend", "wan", "problem", "relay_problem", "chosen"),
    [
        ("auto", "wan0", None, None, NftablesBackend),
        ("auto", "wan0", NO_ROOT, None, UserspaceBackend),
        ("auto", None, None, None, UserspaceBackend),
        ("auto", None, None, "no os.splice", MemoryBackend),
        ("memory", "wan0", None, None, MemoryBackend),
        ("nftables", "wan0", None, None, NftablesBackend),
        ("userspace", "wan0", None, None, UserspaceBackend),
    ],
)
def test_backend_selection(
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    wan: str | None,
    problem: str | None,
    relay_problem: str | None,
    chosen: type,
) -> None:
    """Issue 4: auto is nftables when root and nftables work, otherwise the userspace relay."""
    monkeypatch.setattr("igd.daemon.nftables_unusable_reason", lambda: problem)
    monkeypatch.setattr("igd.daemon.userspace_unusable_reason", lambda: relay_problem)
    daemon = Daemon(Config(backend=backend, wan=wan))
    assert isinstance(daemon._backend(), chosen)


@pytest.mark.parametrize(
    ("wan", "problem", "message"),
    [
        ("wan0", "it needs root (CAP_NET_ADMIN)", "nftables cannot be used here: it needs root"),
        (None, None, "nftables cannot be used here: it needs a real WAN interface"),
    ],
)
def test_nftables_asked_for_but_unusable_is_one_line(
    monkeypatch: pytest.MonkeyPatch, wan: str | None, problem: str | None, message: str
) -> None:
    monkeypatch.setattr("igd.daemon.nftables_unusable_reason", lambda: problem)
    with pytest.raises(ConfigError, match=f"^backend: {message}") as caught:
        Daemon(Config(backend="nftables", wan=wan))._backend()
    assert "\n" not in str(caught.value)
