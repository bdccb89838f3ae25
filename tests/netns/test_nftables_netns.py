"""The nftables backend in the lab's gateway, and `igd serve --backend nftables` end to end (root).

Backend tests run NftablesBackend itself inside lab.gw: `Lab.call` runs an asyncio loop in a thread
that entered the namespace, so the libnftables context (its netlink socket belongs to the namespace
of the thread that creates it) and the backend's worker thread live there. Daemon tests start
`python -m igd serve --lan br-lan --wan wan0 --backend nftables` in lab.gw and drive it with upnpc
and raw SOAP from lan1.

Traffic: an echo server on 198.18.0.10 (lan1) answers "<peer address> <data>", so a probe sees
both whether it got through and the source address after NAT. A probe reports the peer address,
"refused" (RST / ICMP port unreachable) or "dropped" (no answer within NEGATIVE_S).

Every test builds its own lab (about 0.1 s); our table lives in lab.gw, which teardown deletes,
and every nft command runs in lab.gw: the root namespace's ruleset is never read or touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from netns.lab import (
    GW_LAN,
    GW_WAN,
    GW_WAN_IF,
    HOST_IF,
    LAN1,
    LAN_BRIDGE,
    WAN_HOST,
    IgdDaemon,
    Lab,
    LabProcess,
    SoapClient,
    start_echo,
    start_igd,
    tcp_probe,
    udp_probe,
)

from igd.natcore import BackendError, IPProtocol, Mapping, SharingConnectionType
from igd.natcore.backends import nftables
from igd.natcore.backends.base import AppliedConnection, Plan
from igd.natcore.backends.nftables import LibNftables, Nft, NftablesBackend, NftCommand

T = TypeVar("T")

GW_LAN_IP: Final = str(GW_LAN.ip)
GW_WAN_IP: Final = str(GW_WAN.ip)
LAN1_IP: Final = str(LAN1.ip)
WAN_IP: Final = str(WAN_HOST.ip)
WAN_IP2: Final = "198.19.0.101"
"""A second internet host: an extra address on the wan namespace's eth0."""
ECHO_PORT: Final = 40000
GW_SERVICE_PORT: Final = 22222
"""A port the gateway itself listens on (a stand-in for SSH or a web UI)."""
NEGATIVE_S: Final = 1.0
"""No answer within this long counts as dropped (an RST comes back in microseconds here)."""
HTTP_PORT: Final = 5000
UPNPC: Final = shutil.which("upnpc")
UPNPC_TIMEOUT_S: Final = 10.0
WAN_GUID: Final = uuid.UUID(int=0xA1)
LAN_GUID: Final = uuid.UUID(int=0xB2)


pytestmark = pytest.mark.timeout(60)


# ---- Traffic ------------------------------------------------------------------------------------


def icmp_echo(lab: Lab, ns: str, address: str, *, timeout_s: float = NEGATIVE_S) -> bool:
    """Whether `address` answers one ICMP echo request sent from `ns`."""
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"igd-lab-ping"
    total = sum(struct.unpack(f"!{len(header + payload) // 2}H", header + payload))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    packet = struct.pack("!BBHHH", 8, 0, ~total & 0xFFFF, ident, 1) + payload
    with lab.socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout_s)
        sock.sendto(packet, (address, 0))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                return False
            icmp = data[(data[0] & 0x0F) * 4 :]
            if peer[0] == address and icmp[0] == 0 and icmp[4:6] == struct.pack("!H", ident):
                return True
    return False


# ---- The backend inside lab.gw ------------------------------------------------------------------


def connections(*, sharing: bool = True, firewall: bool = True) -> tuple[AppliedConnection, ...]:
    """br-lan private and wan0 public (firewalled), as the daemon sets them up; or neither."""
    return (
        AppliedConnection(
            LAN_GUID, LAN_BRIDGE, SharingConnectionType.PRIVATE if sharing else None, False,
            (GW_LAN,),
        ),
        AppliedConnection(
            WAN_GUID, GW_WAN_IF, SharingConnectionType.PUBLIC if sharing else None, firewall,
            (GW_WAN,),
        ),
    )  # fmt: skip


def mapping(
    port: int = ECHO_PORT,
    *,
    protocol: IPProtocol = IPProtocol.TCP,
    client: str = LAN1_IP,
    internal_port: int = ECHO_PORT,
    remote: str | None = None,
    lease_s: float | None = None,
) -> Mapping:
    return Mapping(
        protocol=protocol,
        external_port=port,
        internal_client=IPv4Address(client),
        internal_port=internal_port,
        connection=WAN_GUID,
        description='"; flush ruleset; "',
        remote_host=None if remote is None else IPv4Address(remote),
        expires_at=None if lease_s is None else time.time() + lease_s,
    )


@dataclass
class Gateway:
    """Runs backend coroutines and nft commands inside lab.gw."""

    lab: Lab
    backends: list[NftablesBackend] = field(default_factory=list)

    def backend(self, **options: Any) -> NftablesBackend:
        created = NftablesBackend(**options)
        self.backends.append(created)
        return created

    def run(self, factory: Callable[[], Coroutine[Any, Any, T]], *, timeout_s: float = 15) -> T:
        return self.lab.call(self.lab.gw, lambda: asyncio.run(factory()), timeout_s=timeout_s)

    def start(
        self, backend: NftablesBackend, mappings: tuple[Mapping, ...] = (),
        conns: tuple[AppliedConnection, ...] | None = None,
    ) -> None:  # fmt: skip
        self.run(lambda: backend.start(mappings, connections() if conns is None else conns))

    def apply(self, backend: NftablesBackend, plan: Plan) -> None:
        self.run(lambda: backend.apply(plan))

    def nft(self, *args: str, input_text: str | None = None) -> str:
        return self.lab.run(self.lab.gw, "nft", *args, input_text=input_text).stdout

    def tables(self) -> list[str]:
        listing = json.loads(self.nft("-j", "list", "tables"))["nftables"]
        return [f"{o['table']['family']} {o['table']['name']}" for o in listing if "table" in o]

    def table(self, name: str = "igd", family: str = "inet") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads(self.nft("-j", "list", "table", family, name))[
            "nftables"
        ]
        return result

    def elements(self, name: str = "igd") -> dict[str, set[str]]:
        """Every element of our maps and sets as "key : data" text, timeouts left out."""
        found: dict[str, set[str]] = {}
        for item in self.table(name):
            declared = item.get("map") or item.get("set")
            if declared is None:
                continue
            found[declared["name"]] = {_element_text(e) for e in declared.get("elem", [])}
        return found

    def timeouts(self, name: str = "igd") -> dict[str, int | None]:
        """The timeout of each element ("key" text), None when it has none."""
        result: dict[str, int | None] = {}
        for item in self.table(name):
            declared = item.get("map") or item.get("set")
            for element in (declared or {}).get("elem", []):
                key = element[0] if isinstance(element, list) else element
                wrapped = key.get("elem", {}) if isinstance(key, dict) else {}
                result[_element_text(key)] = wrapped.get("timeout")
        return result

    def rules(self, name: str = "igd") -> dict[str, int]:
        """How many rules each chain of our table holds."""
        counts: dict[str, int] = {}
        for item in self.table(name):
            if "chain" in item:
                counts.setdefault(item["chain"]["name"], 0)
            if "rule" in item:
                counts[item["rule"]["chain"]] = counts.get(item["rule"]["chain"], 0) + 1
        return counts

    def close(self) -> None:
        for backend in self.backends:
            with contextlib.suppress(Exception):
                self.run(backend.stop)


def _value_text(value: Any) -> str:
    if isinstance(value, dict) and "elem" in value:
        return _value_text(value["elem"]["val"])
    if isinstance(value, dict) and "concat" in value:
        return " . ".join(str(part) for part in value["concat"])
    return str(value)


def _element_text(element: Any) -> str:
    if isinstance(element, list):
        return f"{_value_text(element[0])} : {_value_text(element[1])}"
    return _value_text(element)


@pytest.fixture
def gw(lab: Lab) -> Iterator[Gateway]:
    """Backends in lab.gw, stopped after the test (the lab deletes the namespace after that)."""
    gateway = Gateway(lab)
    try:
        yield gateway
    finally:
        gateway.close()


@pytest.fixture
def echo(lab: Lab) -> LabProcess:
    return start_echo(lab, lab.lan1, LAN1_IP, ECHO_PORT)


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.1)


# ---- Backend tests ------------------------------------------------------------------------------

RUNNERS: Final[dict[str, Callable[[], Nft]]] = {"libnftables": LibNftables, "nft": NftCommand}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_dnat_tcp_and_udp_then_delete(lab: Lab, gw: Gateway, echo: LabProcess, runner: str) -> None:
    backend = gw.backend(nft_factory=RUNNERS[runner])
    gw.start(backend)
    assert backend.runner_kind == runner
    tcp, udp = mapping(), mapping(protocol=IPProtocol.UDP)
    gw.apply(backend, Plan(add=(tcp, udp)))
    assert gw.elements()["fwd4"] == {
        "tcp . 40000 : 198.18.0.10 . 40000",
        "udp . 40000 : 198.18.0.10 . 40000",
    }
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP
    assert udp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP

    gw.apply(backend, Plan(remove=(tcp, udp)))
    assert gw.elements()["fwd4"] == set()
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == "dropped"  # the WAN is firewalled
    assert udp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == "dropped"
    gw.apply(backend, Plan(connections=connections(firewall=False)))
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == "refused"  # the gateway's own RST
    assert udp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == "refused"


def test_remote_host_mapping_admits_only_that_host(lab: Lab, gw: Gateway, echo: LabProcess) -> None:
    lab.add_address(lab.wan, HOST_IF, f"{WAN_IP2}/24")
    backend = gw.backend()
    restricted = mapping(40002, remote=WAN_IP)
    gw.start(backend, (restricted,))
    assert gw.elements()["fwd4_rh"] == {"198.19.0.100 . tcp . 40002 : 198.18.0.10 . 40000"}
    assert gw.elements()["fwd4"] == set()
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, 40002, source=WAN_IP) == WAN_IP
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, 40002, source=WAN_IP2) == "dropped"
    gw.apply(backend, Plan(connections=connections(firewall=False)))
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, 40002, source=WAN_IP2) == "refused"  # not DNATed
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, 40002, source=WAN_IP) == WAN_IP


def test_lease_expires_in_the_kernel(lab: Lab, gw: Gateway, echo: LabProcess) -> None:
    backend = gw.backend()
    gw.start(backend)
    short = mapping(lease_s=1.5)
    gw.apply(backend, Plan(add=(short,)))
    assert gw.timeouts()["tcp . 40000"] == 2  # 1.5 s rounded up
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP
    wait_until(lambda: not gw.elements()["fwd4"], timeout_s=5, what="the element timed out")
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == "dropped"
    gw.apply(backend, Plan(remove=(short,)))  # already gone in the kernel: no error
    again = mapping(lease_s=600)
    gw.apply(backend, Plan(add=(again,)))
    assert gw.timeouts()["tcp . 40000"] == 600
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP


def test_sharing_masquerades_only_while_on(lab: Lab, gw: Gateway) -> None:
    lab.ip(lab.wan, "route", "del", "default")  # like the internet: no route back to 198.18/24
    start_echo(lab, lab.wan, WAN_IP, 7000)
    backend = gw.backend()
    gw.start(backend)
    assert udp_probe(lab, lab.lan1, WAN_IP, 7000) == GW_WAN_IP
    assert tcp_probe(lab, lab.lan1, WAN_IP, 7000) == GW_WAN_IP
    gw.apply(backend, Plan(connections=connections(sharing=False, firewall=False)))
    assert gw.rules()["postrouting"] == 0
    assert udp_probe(lab, lab.lan1, WAN_IP, 7000) == "dropped"
    assert tcp_probe(lab, lab.lan1, WAN_IP, 7000) == "dropped"
    gw.apply(backend, Plan(connections=connections()))
    assert tcp_probe(lab, lab.lan1, WAN_IP, 7000) == GW_WAN_IP


def test_firewall_drops_unsolicited_and_passes_mapped(
    lab: Lab, gw: Gateway, echo: LabProcess
) -> None:
    start_echo(lab, lab.gw, "0.0.0.0", GW_SERVICE_PORT)
    backend = gw.backend()
    gw.start(backend, (mapping(),))
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, GW_SERVICE_PORT) == "dropped"
    assert udp_probe(lab, lab.wan, GW_WAN_IP, GW_SERVICE_PORT) == "dropped"
    assert tcp_probe(lab, lab.wan, GW_LAN_IP, GW_SERVICE_PORT) == "dropped"  # via wan0 too
    assert tcp_probe(lab, lab.wan, LAN1_IP, ECHO_PORT) == "dropped"  # routed, unsolicited
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP  # mapped
    assert icmp_echo(lab, lab.wan, GW_WAN_IP)  # echo-request is in the ICMP default
    assert tcp_probe(lab, lab.lan1, GW_LAN_IP, GW_SERVICE_PORT) == LAN1_IP  # LAN: no firewall
    assert tcp_probe(lab, lab.lan1, WAN_IP, 9) == "refused"  # LAN -> WAN answered (RST back)

    own = mapping(GW_SERVICE_PORT, client=GW_WAN_IP, internal_port=GW_SERVICE_PORT)
    gw.apply(backend, Plan(add=(own,)))  # a port opened on the gateway itself
    assert "wan0 . tcp . 22222" in gw.elements()["open4"]
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, GW_SERVICE_PORT) == WAN_IP
    gw.apply(backend, Plan(remove=(own,)))
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, GW_SERVICE_PORT) == "dropped"

    gw.apply(backend, Plan(connections=connections(firewall=False)))
    assert gw.rules()["input"] == 1  # only `iif lo accept`
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, GW_SERVICE_PORT) == WAN_IP
    assert tcp_probe(lab, lab.wan, LAN1_IP, ECHO_PORT) == WAN_IP  # routed, nothing in the way


def test_firewall_without_sharing_opens_mapped_ports_on_the_gateway(lab: Lab, gw: Gateway) -> None:
    start_echo(lab, lab.gw, "0.0.0.0", GW_SERVICE_PORT, GW_SERVICE_PORT + 1)
    backend = gw.backend()
    icf_only = (
        AppliedConnection(LAN_GUID, LAN_BRIDGE, None, False, (GW_LAN,)),
        AppliedConnection(WAN_GUID, GW_WAN_IF, None, True, (GW_WAN,)),
    )
    opened = mapping(GW_SERVICE_PORT, client=LAN1_IP, internal_port=1)  # ICF ignores the target
    gw.start(backend, (opened,), icf_only)
    assert gw.elements()["open4"] == {"wan0 . tcp . 22222"}
    assert gw.elements()["fwd4"] == set()
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, GW_SERVICE_PORT) == WAN_IP
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, GW_SERVICE_PORT + 1) == "dropped"


@pytest.mark.parametrize("hairpin", [True, False])
def test_hairpin(lab: Lab, gw: Gateway, echo: LabProcess, hairpin: bool) -> None:
    backend = gw.backend(hairpin=hairpin)
    gw.start(backend, (mapping(), mapping(protocol=IPProtocol.UDP)))
    if hairpin:
        assert tcp_probe(lab, lab.lan2, GW_WAN_IP, ECHO_PORT) == GW_LAN_IP
        assert udp_probe(lab, lab.lan2, GW_WAN_IP, ECHO_PORT) == GW_LAN_IP
        assert tcp_probe(lab, lab.lan1, GW_WAN_IP, ECHO_PORT) == GW_LAN_IP  # to itself
    else:
        assert tcp_probe(lab, lab.lan2, GW_WAN_IP, ECHO_PORT) == "refused"  # the gateway's port
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP


FOREIGN: Final = """\
table inet other {
	set keep { type inet_service; elements = { 1, 2, 3 }; }
	chain input { type filter hook input priority 10; policy accept; tcp dport @keep counter; }
}
"""
STALE: Final = """\
add table inet igd
add chain inet igd junk
add rule inet igd junk tcp dport 1 drop
"""


def test_start_reconciles_our_table_and_touches_nothing_else(lab: Lab, gw: Gateway) -> None:
    gw.nft("-f", "-", input_text=FOREIGN)
    foreign = gw.nft("list", "table", "inet", "other")
    old = gw.backend(keep_on_stop=True)
    gw.start(old, (mapping(1), mapping(2), mapping(3, remote=WAN_IP)))
    gw.run(old.stop)
    gw.nft("-f", "-", input_text=STALE)  # someone else's chain in our table
    gw.nft("add", "element", "inet", "igd", "fwd4", "{ udp . 9 : 198.18.0.99 . 9 }")  # an orphan

    backend = gw.backend()
    desired = (
        mapping(2),
        mapping(4, remote=WAN_IP),
        mapping(5, lease_s=1e12),
        mapping(6, lease_s=90),
    )
    gw.start(backend, desired)
    assert gw.elements() == {
        "fwd4": {
            "tcp . 2 : 198.18.0.10 . 40000",
            "tcp . 5 : 198.18.0.10 . 40000",
            "tcp . 6 : 198.18.0.10 . 40000",
        },
        "fwd4_rh": {"198.19.0.100 . tcp . 4 : 198.18.0.10 . 40000"},
        "open4": set(),
        "open4_rh": set(),
    }
    timeouts = gw.timeouts()
    assert timeouts["tcp . 2"] is None
    assert timeouts["tcp . 5"] == nftables.MAX_TIMEOUT_S
    assert timeouts["tcp . 6"] in (90, 91)
    assert gw.rules() == {"prerouting": 3, "postrouting": 2, "input": 2, "forward": 1,
                          "icf_input": 10, "icf_forward": 5}  # fmt: skip
    gw.start(backend, desired)  # again: still one of everything
    assert gw.rules()["prerouting"] == 3
    assert len(gw.elements()["fwd4"]) == 3
    assert gw.nft("list", "table", "inet", "other") == foreign

    gw.run(backend.stop)
    assert gw.tables() == ["inet other"]
    assert gw.nft("list", "table", "inet", "other") == foreign


def test_failed_batch_changes_nothing_and_drift_heals(
    lab: Lab, gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = gw.backend()
    kept = mapping(1)
    gw.start(backend, (kept,))
    before = gw.elements()
    poison = '\ndelete element inet igd open4 { "nosuch0" . tcp . 1 }\n'
    original_elements, original_reload = nftables.elements_batch, nftables.reload_batch

    def poisoned_elements(table: str, removed: Any, added: Any) -> str:
        batch = json.loads(original_elements(table, removed, added))
        where = {"family": "inet", "table": table, "name": "open4"}
        batch["nftables"].append(
            {"delete": {"element": {**where, "elem": [{"concat": ["nosuch0", "tcp", 1]}]}}}
        )
        return json.dumps(batch)

    def poisoned_reload(*args: Any, **kwargs: Any) -> str:
        return str(original_reload(*args, **kwargs)) + poison

    monkeypatch.setattr(nftables, "elements_batch", poisoned_elements)
    monkeypatch.setattr(nftables, "reload_batch", poisoned_reload)
    with pytest.raises(BackendError, match=r"^nftables: .*No such file or directory"):
        gw.apply(backend, Plan(remove=(kept,), add=(mapping(2), mapping(3, remote=WAN_IP))))
    with pytest.raises(BackendError, match=r"^nftables: "):
        gw.apply(backend, Plan(connections=connections(firewall=False)))
    assert gw.elements() == before  # the kernel refused each batch as a whole
    assert gw.rules()["input"] == 2
    assert set(backend.mappings) == {kept.key}
    monkeypatch.undo()

    gw.nft("delete", "element", "inet", "igd", "fwd4", "{ tcp . 1 }")  # behind our back
    gw.apply(backend, Plan(remove=(kept,)))
    gw.nft("delete", "table", "inet", "igd")  # all of it
    gw.apply(backend, Plan(add=(mapping(7),)))  # the element batch fails; the table is rewritten
    assert gw.elements()["fwd4"] == {"tcp . 7 : 198.18.0.10 . 40000"}
    assert gw.rules()["input"] == 2


# ---- The daemon end to end ----------------------------------------------------------------------

needs_upnpc = pytest.mark.skipif(
    UPNPC is None, reason="upnpc not installed (Debian package miniupnpc; `make test` as root)"
)


@pytest.fixture
def daemons(lab: Lab, tmp_path: Path) -> Iterator[list[IgdDaemon]]:
    """The daemons a test started (stopped at the end, SIGKILLed if they do not stop)."""
    started: list[IgdDaemon] = []
    yield started
    for daemon in started:
        with contextlib.suppress(Exception):
            daemon.terminate()


def serve(lab: Lab, state_dir: Path, daemons: list[IgdDaemon]) -> IgdDaemon:
    daemon = start_igd(lab, state_dir, http_port=HTTP_PORT, extra=("--backend", "nftables"))
    daemons.append(daemon)
    return daemon


def kill_9(daemon: IgdDaemon) -> None:
    daemon.process.popen.send_signal(signal.SIGKILL)
    daemon.process.popen.wait(timeout=5)


def upnpc(lab: Lab, url: str, *args: str) -> str:
    """`upnpc -u URL ARGS` in lan1 (no discovery); its output; fails the test on a non-zero exit."""
    assert UPNPC is not None
    result = lab.run(lab.lan1, UPNPC, "-u", url, *args, timeout_s=UPNPC_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def kernel_ports(gateway: Gateway) -> set[tuple[str, int]]:
    """(protocol, external port) of every DNAT element in our table."""
    ports: set[tuple[str, int]] = set()
    for name in ("fwd4", "fwd4_rh"):
        for element in gateway.elements().get(name, set()):
            key = element.partition(" : ")[0].split(" . ")
            ports.add((key[-2].upper(), int(key[-1])))
    return ports


def listed_ports(client: SoapClient) -> list[tuple[str, int]]:
    """(protocol, external port) of every mapping the daemon reports (its store)."""
    return [
        (entry["NewProtocol"], int(entry["NewExternalPort"]))
        for entry in client.generic_entries(version=2)
    ]


@needs_upnpc
def test_daemon_upnpc_maps_tcp_and_udp_end_to_end(
    lab: Lab, gw: Gateway, echo: LabProcess, daemons: list[IgdDaemon], tmp_path: Path
) -> None:
    daemon = serve(lab, tmp_path / "state", daemons)
    url = daemon.urls[2]
    for protocol in ("TCP", "UDP"):
        out = upnpc(lab, url, "-a", LAN1_IP, str(ECHO_PORT), str(ECHO_PORT), protocol)
        assert f"external {GW_WAN_IP}:{ECHO_PORT} {protocol} is redirected" in out
    assert gw.elements()["fwd4"] == {
        "tcp . 40000 : 198.18.0.10 . 40000",
        "udp . 40000 : 198.18.0.10 . 40000",
    }
    assert gw.rules()["input"] == 2  # the public connection is firewalled (R4)
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP
    assert udp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP
    assert tcp_probe(lab, lab.lan2, GW_WAN_IP, ECHO_PORT) == GW_LAN_IP  # hairpin
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, HTTP_PORT) == "dropped"
    assert tcp_probe(lab, lab.wan, GW_LAN_IP, HTTP_PORT) == "dropped"

    for protocol in ("TCP", "UDP"):
        upnpc(lab, url, "-d", str(ECHO_PORT), protocol)
    assert gw.elements()["fwd4"] == set()
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == "dropped"
    assert udp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == "dropped"
    assert daemon.terminate() == 0
    assert "inet igd" not in gw.tables()


@needs_upnpc
def test_daemon_short_lease_expires_in_the_kernel_after_kill_9(
    lab: Lab, gw: Gateway, echo: LabProcess, daemons: list[IgdDaemon], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    daemon = serve(lab, state, daemons)
    upnpc(lab, daemon.urls[2], "-a", LAN1_IP, str(ECHO_PORT), str(ECHO_PORT), "TCP", "3")
    upnpc(lab, daemon.urls[2], "-a", LAN1_IP, str(ECHO_PORT), "40001", "TCP", "3600")
    assert gw.timeouts()["tcp . 40000"] in (2, 3)
    kill_9(daemon)
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == WAN_IP  # the kernel carries on

    def lease_ended() -> bool:
        return "tcp . 40000" not in gw.timeouts()

    wait_until(lease_ended, timeout_s=5, what="the lease ended in the kernel")
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, ECHO_PORT) == "dropped"
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, 40001) == WAN_IP

    restarted = serve(lab, state, daemons)
    client = SoapClient(lab, lab.lan1)
    assert listed_ports(client) == [("TCP", 40001)]
    assert kernel_ports(gw) == {("TCP", 40001)}
    assert restarted.terminate() == 0


def test_daemon_remote_host_mapping(
    lab: Lab, gw: Gateway, echo: LabProcess, daemons: list[IgdDaemon], tmp_path: Path
) -> None:
    lab.add_address(lab.wan, HOST_IF, f"{WAN_IP2}/24")
    serve(lab, tmp_path / "state", daemons)
    client = SoapClient(lab, lab.lan1)
    reply = client.call(
        "AddPortMapping",
        [("NewRemoteHost", WAN_IP), ("NewExternalPort", "40002"), ("NewProtocol", "TCP"),
         ("NewInternalPort", str(ECHO_PORT)), ("NewInternalClient", LAN1_IP),
         ("NewEnabled", "1"), ("NewPortMappingDescription", "} flush ruleset {"),
         ("NewLeaseDuration", "600")],
    )  # fmt: skip
    assert reply.ok, reply.http.text()
    assert gw.elements()["fwd4_rh"] == {"198.19.0.100 . tcp . 40002 : 198.18.0.10 . 40000"}
    assert "flush" not in gw.nft("list", "ruleset")
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, 40002, source=WAN_IP) == WAN_IP
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, 40002, source=WAN_IP2) == "dropped"


def test_st_22_own_ports_are_refused_and_never_reach_the_kernel(
    lab: Lab, gw: Gateway, daemons: list[IgdDaemon], tmp_path: Path
) -> None:
    """ST-22 "Mapping the IGD HTTP port, 1900, 5351 ... => 729 (UPnP)": and nothing in nft."""
    serve(lab, tmp_path / "state", daemons)
    client = SoapClient(lab, lab.lan1)
    for port, protocol in ((HTTP_PORT, "TCP"), (1900, "UDP"), (5351, "UDP")):
        reply = client.add(port, LAN1_IP, protocol=protocol, lease=600)
        assert reply.error_code == 729, reply.http.text()
    assert kernel_ports(gw) == set()
    assert tcp_probe(lab, lab.wan, GW_WAN_IP, HTTP_PORT) == "dropped"  # and not reachable


BURST: Final = 50
SHORT_LEASES: Final = (41000, 41001, 41002)


def test_st_32_kill_9_during_a_burst_then_restart_reconciles(
    lab: Lab, gw: Gateway, daemons: list[IgdDaemon], tmp_path: Path
) -> None:
    """ST-32 "Firewall changes are atomic nft transactions in our own table. After `kill -9` and
    restart, rules are reconciled against state (no orphans, no duplicates)."
    """
    gw.nft("-f", "-", input_text=FOREIGN)
    foreign = gw.nft("list", "table", "inet", "other")
    state = tmp_path / "state"
    daemon = serve(lab, state, daemons)
    client = SoapClient(lab, lab.lan1, timeout_s=3.0)
    for port in SHORT_LEASES:
        assert client.add(port, LAN1_IP, lease=2).ok
    told: dict[int, bool | None] = {}
    go = threading.Barrier(BURST + 1)

    def add(port: int) -> None:
        go.wait()
        try:
            told[port] = client.add(port, LAN1_IP, lease=3600).ok
        except Exception:
            told[port] = None  # no answer: the daemon died first

    threads = [threading.Thread(target=add, args=(42000 + i,)) for i in range(BURST)]
    for thread in threads:
        thread.start()
    go.wait()
    deadline = time.monotonic() + 5
    while len(told) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    kill_9(daemon)  # while most of the burst is in flight
    for thread in threads:
        thread.join(10)
    acknowledged = {("TCP", port) for port, ok in told.items() if ok}
    assert acknowledged
    time.sleep(2.5)  # the short leases end while the daemon is down
    assert not kernel_ports(gw) & {("TCP", p) for p in SHORT_LEASES}  # the kernel timed them out

    restarted = serve(lab, state, daemons)
    listed = listed_ports(SoapClient(lab, lab.lan1))
    assert len(listed) == len(set(listed))
    assert acknowledged <= set(listed)  # every acknowledged mapping survived
    assert set(listed) <= {("TCP", 42000 + i) for i in range(BURST)}  # expired ones are gone
    assert kernel_ports(gw) == set(listed)  # kernel == store: no orphan, no missing element
    assert gw.rules() == {"prerouting": 3, "postrouting": 2, "input": 2, "forward": 1,
                          "icf_input": 10, "icf_forward": 5}  # fmt: skip
    assert gw.tables() == ["inet other", "inet igd"]
    assert gw.nft("list", "table", "inet", "other") == foreign
    assert restarted.terminate() == 0
    assert gw.tables() == ["inet other"]
