"""`igd serve` on the gateway's br-lan, driven by real clients in network namespaces (root only).

The daemon runs in lab.gw (`--lan br-lan --wan wan0 --http-port 5000`, state under a temporary
directory). From lan1, Debian's `upnpc` finds it by multicast SSDP on the lab interface (`-m eth0`:
the interface upnpc sends its M-SEARCH on) and adds, lists and deletes TCP and UDP mappings; a
client in lan2 cannot touch or see them; the WAN host gets nothing on SSDP, HTTP or SOAP; SIGTERM
stops the daemon with exit code 0 and a byebye on the LAN.

upnpc is always run with `-i`: the lab's WAN address 198.19.0.1 is in the benchmarking range
(RFC 2544, reserved), and miniupnpc 2.2 then calls the IGD "not connected?" and stops unless told
to carry on. Discovery runs cost about 3 s each (upnpc waits 2 s for answers), so only the steps
that are about discovery discover; the others use the description URL discovery returned (`-u`).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest
from netns.lab import (
    GW_LAN,
    GW_WAN,
    HOST_IF,
    LAN1,
    SSDP_GROUP,
    SSDP_UDP_PORT,
    WAN_HOST,
    IgdDaemon,
    Lab,
    SoapClient,
    build_http_request,
    closed_by_peer,
    msearch_bytes,
    read_http_reply,
    receive_datagrams,
    ssdp_group_listener,
    ssdp_searcher,
    start_igd,
    tcp_connect,
    try_connect,
)

from igd.ssdp.messages import Notify, parse_datagram

UPNPC: Final = shutil.which("upnpc")
pytestmark = pytest.mark.skipif(
    UPNPC is None, reason="upnpc not installed (Debian package miniupnpc; `make test` as root)"
)

HTTP_PORT: Final = 5000
UPNPC_TIMEOUT_S: Final = 15.0
"""upnpc's discovery takes 2-4 s here; a hung upnpc fails the test instead of the CI job."""
QUIET_S: Final = 1.5
"""Silence long enough to conclude "no reply" (the searches here use MX 1 or are unicast)."""
EXTERNAL_IP: Final = str(GW_WAN.ip)
LAN1_IP: Final = str(LAN1.ip)
WAN_IP: Final = str(WAN_HOST.ip)
_DESC_URL = re.compile(r"desc: (http://\S+/rootDesc\.xml)")


@dataclass
class Served:
    lab: Lab
    daemon: IgdDaemon


@pytest.fixture(scope="module")
def served(module_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The module lab with `igd serve` on br-lan / wan0, stopped (bounded) afterwards."""
    daemon = start_igd(module_lab, tmp_path_factory.mktemp("igd") / "state", http_port=HTTP_PORT)
    try:
        yield Served(module_lab, daemon)
    finally:
        code = daemon.terminate()
        stderr = daemon.stderr_text()
        assert code == 0, stderr
        assert "Traceback" not in stderr, stderr


def upnpc(lab: Lab, ns: str, *args: str) -> tuple[int, str]:
    """`upnpc -i ARGS` inside `ns` (never in the root namespace): (exit code, stdout + stderr)."""
    assert UPNPC is not None
    result = lab.run(ns, UPNPC, "-i", *args, check=False, timeout_s=UPNPC_TIMEOUT_S)
    return result.returncode, result.stdout + result.stderr


def discover(lab: Lab, ns: str, *args: str) -> tuple[int, str]:
    """upnpc with multicast discovery on the namespace's lab interface (`-m eth0`)."""
    return upnpc(lab, ns, "-m", HOST_IF, *args)


def listed(output: str, protocol: str, port: int, client: str) -> bool:
    """Whether `upnpc -l` output holds the entry PROTOCOL PORT->CLIENT:PORT."""
    pattern = rf"(?m)^\s*\d+ {protocol} {port}->{re.escape(client)}:{port} "
    return re.search(pattern, output) is not None


def discovered_url(output: str) -> str:
    found = _DESC_URL.findall(output)
    assert found, output
    url: str = found[0]
    assert url.startswith(f"http://{GW_LAN.ip}:{HTTP_PORT}/igd"), output
    return url


def url_of(served: Served, version: int) -> str:
    return served.daemon.urls[version]


# ---- a LAN client with upnpc --------------------------------------------------------------------


def test_upnpc_discovers_the_gateway_by_multicast_on_the_lan(served: Served) -> None:
    """SSDP discovery from lan1 finds the LAN LOCATION; `-l` shows status and no mapping."""
    code, out = discover(served.lab, served.lab.lan1, "-l")
    assert code == 0, out
    url = discovered_url(out)
    assert url in served.daemon.urls.values()
    assert f"Local LAN ip address : {LAN1_IP}" in out
    assert "Connection Type : IP_Routed" in out
    assert "Status : Connected" in out
    assert f"ExternalIPAddress = {EXTERNAL_IP}" in out
    assert not re.search(r"(?m)^\s*\d+ (TCP|UDP) ", out), out


@pytest.mark.parametrize(("protocol", "port"), [("TCP", 40000), ("UDP", 40000)])
def test_upnpc_adds_lists_and_deletes_a_mapping(served: Served, protocol: str, port: int) -> None:
    """lan1: add (discovering the gateway), list, delete, list again; a second delete is 714."""
    lab, lan1 = served.lab, served.lab.lan1
    code, out = discover(lab, lan1, "-a", LAN1_IP, str(port), str(port), protocol)
    assert code == 0, out
    assert (
        f"external {EXTERNAL_IP}:{port} {protocol} is redirected to internal {LAN1_IP}:{port}"
    ) in out
    url = discovered_url(out)

    code, out = upnpc(lab, lan1, "-u", url, "-l")
    assert code == 0, out
    assert listed(out, protocol, port, LAN1_IP), out

    code, out = upnpc(lab, lan1, "-u", url, "-d", str(port), protocol)
    assert code == 0, out
    assert "UPNP_DeletePortMapping() returned : 0" in out

    code, out = upnpc(lab, lan1, "-u", url, "-l")
    assert code == 0, out
    assert not listed(out, protocol, port, LAN1_IP), out

    code, out = upnpc(lab, lan1, "-u", url, "-d", str(port), protocol)
    assert code != 0
    assert "714" in out, out


def test_upnpc_igd2_list_of_port_mappings(served: Served) -> None:
    """lan1 on the IGD:2 root: `-L` (GetListOfPortMappings) shows its TCP and UDP entries."""
    lab, lan1, url = served.lab, served.lab.lan1, url_of(served, 2)
    try:
        for protocol in ("TCP", "UDP"):
            code, out = upnpc(lab, lan1, "-u", url, "-a", LAN1_IP, "40010", "40010", protocol)
            assert code == 0, out
        code, out = upnpc(lab, lan1, "-u", url, "-L")
        assert code == 0, out
        assert "GetListOfPortMappings() returned" not in out, out
        assert listed(out, "TCP", 40010, LAN1_IP), out
        assert listed(out, "UDP", 40010, LAN1_IP), out
    finally:
        for protocol in ("TCP", "UDP"):
            upnpc(lab, lan1, "-u", url, "-d", "40010", protocol)


# ---- a second LAN client ------------------------------------------------------------------------


@pytest.fixture
def lan1_mapping(served: Served) -> Iterator[int]:
    """TCP 40100 -> lan1:40100, made by lan1 and removed by it afterwards."""
    lab, port = served.lab, 40100
    code, out = upnpc(lab, lab.lan1, "-u", url_of(served, 2), "-a", LAN1_IP, str(port), str(port),
                      "TCP")  # fmt: skip
    assert code == 0, out
    try:
        yield port
    finally:
        upnpc(lab, lab.lan1, "-u", url_of(served, 2), "-d", str(port), "TCP")


def test_second_client_cannot_delete_the_first_clients_mapping(
    served: Served, lan1_mapping: int
) -> None:
    """ST-23 / WIP-70/75: lan2 deleting lan1's mapping is 606 (IGD:2), 714 (IGD:1); it stays."""
    lab, port = served.lab, lan1_mapping
    code, out = upnpc(lab, lab.lan2, "-u", url_of(served, 2), "-d", str(port), "TCP")
    assert code != 0
    assert "606" in out, out
    code, out = upnpc(lab, lab.lan2, "-u", url_of(served, 1), "-d", str(port), "TCP")
    assert code != 0
    assert "714" in out, out
    code, out = upnpc(lab, lab.lan1, "-u", url_of(served, 2), "-l")
    assert listed(out, "TCP", port, LAN1_IP), out


def test_second_client_cannot_map_to_the_first_client(served: Served) -> None:
    """ST-18 secure mode: lan2 asking for a mapping to lan1 is 718 (IGD:1, found by discovery)
    and 606 (IGD:2); nothing is created."""
    lab = served.lab
    code, out = discover(lab, lab.lan2, "-a", LAN1_IP, "40101", "40101", "TCP")
    assert code != 0
    assert "718" in out, out
    assert "/igd1/" in discovered_url(out)
    code, out = upnpc(lab, lab.lan2, "-u", url_of(served, 2), "-a", LAN1_IP, "40101", "40101",
                      "TCP")  # fmt: skip
    assert code != 0
    assert "606" in out, out
    code, out = upnpc(lab, lab.lan1, "-u", url_of(served, 2), "-l")
    assert not re.search(r"(?m)^\s*\d+ TCP 40101->", out), out


def test_second_client_does_not_see_the_first_clients_mappings(
    served: Served, lan1_mapping: int
) -> None:
    """ST-23 privacy: lan2's listings (generic entries, GetList on IGD:2) show none of lan1's."""
    lab, port = served.lab, lan1_mapping
    code, out = upnpc(lab, lab.lan2, "-u", url_of(served, 1), "-l")
    assert code == 0, out
    assert f"{port}->" not in out, out
    assert "GetGenericPortMappingEntry() returned 713" in out, out
    code, out = upnpc(lab, lab.lan2, "-u", url_of(served, 2), "-L")
    assert f"{port}->" not in out, out
    assert "730" in out, out  # PortMappingNotFound: nothing of lan2's in the range
    client = SoapClient(lab, lab.lan2)
    assert client.get_specific(port).error_code == 606
    assert client.get_specific(port, version=1).error_code == 714


# ---- the WAN ------------------------------------------------------------------------------------


def test_wan_host_gets_no_ssdp_answer(served: Served) -> None:
    """GEN-02, ST-01: multicast on the WAN veth and unicast to either gateway address: nothing."""
    lab = served.lab
    with ssdp_searcher(lab, lab.wan, WAN_IP) as sock:
        sock.sendto(msearch_bytes("ssdp:all", mx="1"), (SSDP_GROUP, SSDP_UDP_PORT))
        for address in (str(GW_WAN.ip), str(GW_LAN.ip)):  # the second one is routed by gw
            sock.sendto(
                msearch_bytes("ssdp:all", mx=None, host=f"{address}:{SSDP_UDP_PORT}"),
                (address, SSDP_UDP_PORT),
            )
        assert receive_datagrams(sock, quiet_s=QUIET_S) == []


def test_wan_host_cannot_reach_http(served: Served) -> None:
    """ST-02: nothing listens on the WAN address: a connection there is refused, or dropped by
    the gateway's firewall (nftables backend). The LAN address, reachable from the WAN by routing
    through gw, is dropped by that firewall too; without one (memory backend) the connection is
    accepted, answered 403 and closed by the source gate (GEN-02)."""
    lab = served.lab
    assert try_connect(lab, lab.wan, str(GW_WAN.ip), HTTP_PORT) is None
    request = build_http_request(
        "GET", "/igd2/rootDesc.xml", host=f"{GW_LAN.ip}:{HTTP_PORT}", keep_alive=True
    )
    sock = try_connect(lab, lab.wan, str(GW_LAN.ip), HTTP_PORT)
    if sock is not None:
        with sock:
            sock.sendall(request)
            reply = read_http_reply(sock)
            assert reply.status == 403
            assert b"<root" not in reply.body
            assert closed_by_peer(sock)
    listening = lab.run(lab.gw, "ss", "-H", "-l", "-t", "-n").stdout.split("\n")
    local = sorted(line.split()[3] for line in listening if line.strip())
    assert local == [f"{GW_LAN.ip}:{HTTP_PORT}"]


def test_wan_host_soap_gets_no_200(served: Served) -> None:
    """ST-02: SOAP from the WAN host: no connection on the WAN address; through the LAN address
    no connection either (firewall) or 403 (source gate); nothing is mapped."""
    lab = served.lab
    reachable = try_connect(lab, lab.wan, str(GW_LAN.ip), HTTP_PORT)
    if reachable is not None:
        reachable.close()
    for action, args in (
        ("GetExternalIPAddress", []),
        ("AddPortMapping", [("NewRemoteHost", ""), ("NewExternalPort", "40200"),
                            ("NewProtocol", "TCP"), ("NewInternalPort", "40200"),
                            ("NewInternalClient", WAN_IP), ("NewEnabled", "1"),
                            ("NewPortMappingDescription", "wan"), ("NewLeaseDuration", "0")]),
    ):  # fmt: skip
        if reachable is not None:  # no firewall: the source gate answers
            reply = SoapClient(lab, lab.wan).call(action, args)
            assert reply.status == 403
            assert reply.outputs == {}
        assert try_connect(lab, lab.wan, str(GW_WAN.ip), HTTP_PORT) is None
    assert SoapClient(lab, lab.lan1).get_specific(40200).error_code == 714


# ---- stop ---------------------------------------------------------------------------------------


def test_sigterm_stops_cleanly_with_byebye_on_the_lan(served: Served) -> None:
    """Last of the module: SIGTERM -> exit 0, the byebye set (TTL 2) on the LAN, port closed."""
    lab = served.lab
    with ssdp_group_listener(lab, lab.lan2) as listener:
        receive_datagrams(listener, quiet_s=0.2, timeout_s=1.0)  # drop what was queued
        assert served.daemon.running()
        assert served.daemon.terminate() == 0
        received = receive_datagrams(listener, quiet_s=0.5, timeout_s=3.0)
    byebyes = []
    for datagram in received:
        if datagram.source[0] != str(GW_LAN.ip) or not datagram.data.startswith(b"NOTIFY"):
            continue
        message = parse_datagram(datagram.data)
        assert isinstance(message, Notify)
        assert message.nts == "ssdp:byebye"
        assert datagram.ttl == 2
        byebyes.append(message)
    assert len(byebyes) >= 2
    assert {m.header("HOST") for m in byebyes} == {f"{SSDP_GROUP}:{SSDP_UDP_PORT}"}
    assert any("InternetGatewayDevice:1" in (m.header("NT") or "") for m in byebyes)
    assert any("InternetGatewayDevice:2" in (m.header("NT") or "") for m in byebyes)
    with pytest.raises(ConnectionRefusedError):
        tcp_connect(lab, lab.lan1, str(GW_LAN.ip), HTTP_PORT).close()
    sockets = lab.run(lab.gw, "ss", "-H", "-a", "-u", "-n").stdout
    assert f":{SSDP_UDP_PORT}" not in sockets
