"""SsdpResponder on the gateway's br-lan, port 1900, probed from LAN and WAN hosts (root only).

The responder runs in a subprocess inside the gateway namespace (ssdp_serve.py); probes are
sockets made inside lan1, lan2 and wan (`Lab.socket`). Checks SSDP-30/34/43/45/46, GEN-02/03 and
ST-01/04/33: LAN searches answered with the LAN LOCATION, nothing for the WAN or for spoofed
sources, NOTIFY with TTL 2 on the LAN and never on the WAN veth.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from netns.lab import GW_LAN, GW_WAN, HOST_IF, LAN1, LAN_BRIDGE, Lab, LabProcess

from igd.netif import IP_MULTICAST_ALL
from igd.ssdp.messages import Notify, build_msearch, parse_datagram, parse_search_response

GROUP: Final = "239.255.255.250"
SSDP_PORT: Final = 1900
HTTP_PORT: Final = 5000
BOOT_ID: Final = 42
IP_RECVTTL: Final = 12
SPOOFED: Final = "198.18.5.5"
"""An extra /32 on lan1's eth0: on the LAN segment, outside the LAN subnet (ST-01/ST-33)."""
SERVE: Final = Path(__file__).with_name("ssdp_serve.py")
QUIET_S: Final = 1.5
"""Silence long enough to conclude "no reply": multicast searches here use MX 1."""
URN: Final = "urn:schemas-upnp-org"


@dataclass(frozen=True)
class Datagram:
    data: bytes
    source: tuple[str, int]
    ttl: int | None


def mreqn(group: str, ifindex: int) -> bytes:
    return socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)


def receive(sock: socket.socket, *, count: int | None = None, quiet_s: float = QUIET_S,
            timeout_s: float = 6.0) -> list[Datagram]:  # fmt: skip
    """Datagrams until `count` arrived, or a quiet gap of `quiet_s`; never beyond `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    got: list[Datagram] = []
    while count is None or len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(min(remaining, quiet_s) if count is None else remaining)
        try:
            data, ancillary, _, source = sock.recvmsg(4096, 64)
        except TimeoutError:
            break
        ttl = next(
            (struct.unpack("@i", d[:4])[0] for _, kind, d in ancillary if kind == socket.IP_TTL),
            None,
        )
        got.append(Datagram(data, (source[0], source[1]), ttl))
    return got


def searcher(lab: Lab, ns: str, address: str) -> socket.socket:
    """A search client in `ns`, bound to `address`, multicasting on eth0 without loopback."""
    sock = lab.socket(ns)
    sock.setsockopt(
        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn("0.0.0.0", lab.ifindex(ns, HOST_IF))
    )
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    sock.bind((address, 0))
    return sock


def group_listener(lab: Lab, ns: str) -> socket.socket:
    """Member of the SSDP group on eth0 of `ns`, port 1900, reporting the TTL of each datagram."""
    sock = lab.socket(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, HOST_IF.encode())
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    sock.bind((GROUP, SSDP_PORT))
    sock.setsockopt(
        socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn(GROUP, lab.ifindex(ns, HOST_IF))
    )
    return sock


def start_responder(lab: Lab) -> LabProcess:
    process = lab.spawn(
        lab.gw, sys.executable, str(SERVE), "--ifname", LAN_BRIDGE, "--http-port",
        str(HTTP_PORT), "--boot-id", str(BOOT_ID), "--lifetime-s", "100",
    )  # fmt: skip
    ready = process.read_json(timeout_s=15.0)
    assert ready["event"] == "ready", ready
    assert ready["addresses"] == [str(GW_LAN)]
    return process


def counters(process: LabProcess) -> dict[str, int]:
    process.send_line("counters")
    answer = process.read_json()
    assert answer["event"] == "counters"
    values = answer["counters"]
    assert isinstance(values, dict)
    return {str(name): int(value) for name, value in values.items()}


def notifies(datagrams: list[Datagram]) -> list[tuple[Notify, Datagram]]:
    result = []
    for datagram in datagrams:
        if datagram.data.startswith(b"NOTIFY"):
            message = parse_datagram(datagram.data)
            assert isinstance(message, Notify)
            result.append((message, datagram))
    return result


def location_of(version: int) -> str:
    return f"http://{GW_LAN.ip}:{HTTP_PORT}/igd{version}/rootDesc.xml"


@dataclass
class SsdpLab:
    lab: Lab
    responder: LabProcess
    wan_listener: socket.socket


@pytest.fixture(scope="module")
def ssdp_lab(module_lab: Lab) -> Iterator[SsdpLab]:
    """The module lab with a responder on br-lan; a WAN listener joined before it started."""
    wan_listener = group_listener(module_lab, module_lab.wan)
    try:
        responder = start_responder(module_lab)
        try:
            yield SsdpLab(module_lab, responder, wan_listener)
        finally:
            responder.stop()
    finally:
        wan_listener.close()


# ---- LAN ----------------------------------------------------------------------------------------


def test_multicast_search_from_lan_gets_replies_with_the_lan_location(ssdp_lab: SsdpLab) -> None:
    """SSDP-30/37/43/45: 20 replies from 198.18.0.1:1900, LOCATION on 198.18.0.1, < 1024 B."""
    lab = ssdp_lab.lab
    with searcher(lab, lab.lan1, str(LAN1.ip)) as sock:
        sock.sendto(build_msearch("ssdp:all", mx=1), (GROUP, SSDP_PORT))
        replies = receive(sock, count=20, timeout_s=4.0)
        assert receive(sock, quiet_s=0.5) == []  # nothing beyond the set
    assert len(replies) == 20
    assert {reply.source for reply in replies} == {(str(GW_LAN.ip), SSDP_PORT)}
    assert all(len(reply.data) < 1024 for reply in replies)
    locations = {parse_search_response(reply.data).location for reply in replies}
    assert locations == {location_of(1), location_of(2)}


def test_unicast_search_from_lan_is_answered_at_once(ssdp_lab: SsdpLab) -> None:
    """SSDP-36, 4b: IGD:1 search -> the IGD:1 root only, within a second."""
    lab = ssdp_lab.lab
    st = f"{URN}:device:InternetGatewayDevice:1"
    with searcher(lab, lab.lan2, "198.18.0.11") as sock:
        started = time.monotonic()
        sock.sendto(
            build_msearch(st, mx=None, host=f"{GW_LAN.ip}:{SSDP_PORT}"), (str(GW_LAN.ip), SSDP_PORT)
        )
        replies = receive(sock, count=1, timeout_s=2.0)
        elapsed = time.monotonic() - started
        assert receive(sock, quiet_s=0.5) == []
    assert len(replies) == 1
    response = parse_search_response(replies[0].data)
    assert (response.st, response.location) == (st, location_of(1))
    assert elapsed < 1.0


def test_spoofed_source_outside_the_lan_subnet_is_dropped(ssdp_lab: SsdpLab) -> None:
    """SSDP-46, ST-01/ST-33: a search from 198.18.5.5 on the LAN wire gets nothing."""
    lab = ssdp_lab.lab
    lab.add_address(lab.lan1, HOST_IF, f"{SPOOFED}/32")
    try:
        before = counters(ssdp_lab.responder)["dropped_source"]
        with searcher(lab, lab.lan1, SPOOFED) as sock:
            sock.sendto(build_msearch("ssdp:all", mx=1), (GROUP, SSDP_PORT))
            sock.sendto(build_msearch("ssdp:all", mx=None), (str(GW_LAN.ip), SSDP_PORT))
            assert receive(sock) == []
        assert counters(ssdp_lab.responder)["dropped_source"] == before + 2
    finally:
        lab.ip(lab.lan1, "addr", "del", f"{SPOOFED}/32", "dev", HOST_IF)


def test_lan_search_to_the_wan_address_is_dropped(ssdp_lab: SsdpLab) -> None:
    """ST-33: 198.19.0.1:1900 reached through br-lan (weak host model) is not a served address."""
    lab = ssdp_lab.lab
    before = counters(ssdp_lab.responder)["dropped_destination"]
    with searcher(lab, lab.lan1, str(LAN1.ip)) as sock:
        sock.sendto(build_msearch("ssdp:all", mx=None), (str(GW_WAN.ip), SSDP_PORT))
        assert receive(sock) == []
    assert counters(ssdp_lab.responder)["dropped_destination"] == before + 1


# ---- WAN ----------------------------------------------------------------------------------------


def test_wan_searches_get_nothing_and_nothing_listens_on_the_wan(ssdp_lab: SsdpLab) -> None:
    """GEN-02, ST-01: multicast on the WAN veth unanswered; unicast to 198.19.0.1:1900 refused."""
    lab = ssdp_lab.lab
    with searcher(lab, lab.wan, "198.19.0.100") as sock:
        sock.sendto(build_msearch("ssdp:all", mx=1), (GROUP, SSDP_PORT))
        assert receive(sock) == []
    with searcher(lab, lab.wan, "198.19.0.100") as sock:
        sock.connect((str(GW_WAN.ip), SSDP_PORT))
        sock.send(build_msearch("ssdp:all", mx=None))
        sock.settimeout(3.0)
        with pytest.raises(ConnectionRefusedError):  # ICMP port unreachable: no socket there
            sock.recv(4096)
    sockets = lab.run(lab.gw, "ss", "-H", "-u", "-a", "-n").stdout.splitlines()
    local = [line.split()[3] for line in sockets if line.split()[3].endswith(f":{SSDP_PORT}")]
    assert local == [f"0.0.0.0%{LAN_BRIDGE}:{SSDP_PORT}"]


def test_no_ssdp_datagram_ever_reached_the_wan(ssdp_lab: SsdpLab) -> None:
    """GEN-01/02: the WAN listener (joined before the responder started) got nothing from it."""
    gateway = {str(GW_LAN.ip), str(GW_WAN.ip)}
    received = receive(ssdp_lab.wan_listener, quiet_s=0.5)
    leaked = [d for d in received if d.source[0] in gateway or d.data.startswith(b"NOTIFY")]
    assert leaked == []


# ---- NOTIFY lifecycle (own lab: it stops the responder) -----------------------------------------


def test_notify_lifecycle_on_lan_with_ttl_2_and_never_on_wan(lab: Lab) -> None:
    """SSDP-13/16/17, GEN-03, ST-04: byebye, alive x2 on the LAN with TTL 2; byebye at stop."""
    with group_listener(lab, lab.lan2) as lan, group_listener(lab, lab.wan) as wan:
        responder = start_responder(lab)
        started = notifies(receive(lan, count=60, timeout_s=5.0))
        responder.send_line("stop")
        stopped_event = responder.read_json()
        assert stopped_event["event"] == "stopped"
        assert responder.wait() == 0
        stopped = notifies(receive(lan, count=20, timeout_s=3.0))
        on_wan = receive(wan, quiet_s=0.5)
    assert [m.nts for m, _ in started] == ["ssdp:byebye"] * 20 + ["ssdp:alive"] * 40
    assert [m.nts for m, _ in stopped] == ["ssdp:byebye"] * 20
    for message, datagram in started + stopped:
        assert datagram.ttl == 2
        assert datagram.source == (str(GW_LAN.ip), SSDP_PORT)
        assert message.header("HOST") == f"{GROUP}:{SSDP_PORT}"
        assert message.header("BOOTID.UPNP.ORG") == str(BOOT_ID)
    assert {m.header("LOCATION") for m, _ in started[20:]} == {location_of(1), location_of(2)}
    assert on_wan == []
