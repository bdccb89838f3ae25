"""NAT-PMP and PCP of `igd serve` end to end in the lab (root only; issue 5, netns part).

One module lab, one daemon (`igd serve --lan br-lan --wan wan0 --backend nftables`) in lab.gw, and
one echo server on 198.18.0.10 (lan1) for every port used here. Clients run inside the lab only:
Debian's `natpmpc` in lan1 (`-g 198.18.0.1`, never a discovered gateway), tests/pcpclient.py in an
asyncio loop of a thread that entered lan1 (`Lab.call`), and raw NAT-PMP/PCP datagrams from lab
sockets. Traffic is driven from the wan namespace (198.19.0.100) to the gateway's external address
198.19.0.1, as in test_nftables_netns.py: the echo server answers "<peer address> <data>", a probe
reports that peer, "refused" or "dropped" (no answer within NEGATIVE_S).

The announcement listeners (224.0.0.1:5350 on eth0 of lan1 and of wan) are opened before the
daemon starts, so they hold its first announcement burst whenever their test runs.

Every test uses its own ports and removes what it mapped; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final, TypeVar

import pytest
from netns.lab import (
    GW_LAN,
    GW_WAN,
    HOST_IF,
    LAN1,
    LAN2,
    WAN_HOST,
    IgdDaemon,
    Lab,
    LabProcess,
    SoapClient,
    ip_mreqn,
    receive_datagrams,
    start_echo,
    start_igd,
    tcp_probe,
    udp_probe,
)
from pcpclient import PcpClient, new_nonce

from igd.natcore import IPProtocol
from igd.natpmp import wire as pmp
from igd.pcp import wire as pcp
from igd.pcp.wire import MapPayload, PcpResponse, to_ipv4

T = TypeVar("T")

NATPMPC: Final = shutil.which("natpmpc")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        NATPMPC is None,
        reason="natpmpc not installed (Debian package natpmpc; `make test` as root)",
    ),
]

GW_LAN_IP: Final = str(GW_LAN.ip)
GW_WAN_IP: Final = str(GW_WAN.ip)
LAN1_IP: Final = str(LAN1.ip)
LAN2_IP: Final = str(LAN2.ip)
WAN_IP: Final = str(WAN_HOST.ip)
HTTP_PORT: Final = 5000
SERVER_PORT: Final = 5351
"""NAT-PMP and PCP server port (RFC 6886, RFC 6887)."""
ANNOUNCE_GROUP: Final = "224.0.0.1"
ANNOUNCE_PORT: Final = 5350
NEGATIVE_S: Final = 1.0
"""No answer within this long counts as dropped (lab round trips take microseconds)."""
NATPMPC_TIMEOUT_S: Final = 10.0
PCP_SESSION_TIMEOUT_S: Final = 10.0

# Distinct ports per test (all served by the lan1 echo server, TCP and UDP).
NATPMPC_PORT: Final = 40100
PCP_TCP_PORT: Final = 40110
PCP_UDP_PORT: Final = 40111
UPNP_VIEW_PORT: Final = 40120
ST29_TARGET_PORT: Final = 40130
ST29_TCP_PORT: Final = 40131
ST29_UDP_PORT: Final = 40132
ST29_LAN2_PORT: Final = 40133
ST29_UPNP_PORT: Final = 40134
ST29_SIZE_PORT: Final = 40135
ST30_PORT: Final = 40140
ST03_PORT: Final = 40150
ECHO_PORTS: Final = (
    NATPMPC_PORT, PCP_TCP_PORT, PCP_UDP_PORT, UPNP_VIEW_PORT, ST29_TARGET_PORT, ST29_TCP_PORT,
    ST29_UDP_PORT, ST29_UPNP_PORT, ST29_SIZE_PORT, ST30_PORT, ST03_PORT,
)  # fmt: skip

_MAPPED = re.compile(
    r"Mapped public port (\d+) protocol (TCP|UDP) to local port (\d+) liftime (\d+)"
)


# ---- The module's gateway -----------------------------------------------------------------------


@dataclass
class Env:
    lab: Lab
    daemon: IgdDaemon
    echo: LabProcess
    lan_listener: socket.socket
    """Member of 224.0.0.1 on lan1's eth0, port 5350, opened before the daemon started."""
    wan_listener: socket.socket
    """The same on the wan namespace's eth0."""


def announce_listener(lab: Lab, ns: str) -> socket.socket:
    """A socket of `ns` bound to 224.0.0.1:5350 on eth0 only, member of the group there."""
    sock = lab.socket(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, HOST_IF.encode())
    sock.bind((ANNOUNCE_GROUP, ANNOUNCE_PORT))
    sock.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        ip_mreqn(ANNOUNCE_GROUP, lab.ifindex(ns, HOST_IF)),
    )
    return sock


@pytest.fixture(scope="module")
def env(module_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Listeners, then the lan1 echo server, then the daemon; the daemon must stop cleanly."""
    lab = module_lab
    lan_listener = announce_listener(lab, lab.lan1)
    wan_listener = announce_listener(lab, lab.wan)
    echo = start_echo(lab, lab.lan1, LAN1_IP, *ECHO_PORTS)
    daemon = start_igd(
        lab,
        tmp_path_factory.mktemp("igd") / "state",
        http_port=HTTP_PORT,
        extra=("--backend", "nftables"),
    )
    try:
        yield Env(lab, daemon, echo, lan_listener, wan_listener)
    finally:
        code = daemon.terminate()
        stderr = daemon.stderr_text()
        assert code == 0, stderr
        assert "Traceback" not in stderr, stderr


# ---- Clients and probes -------------------------------------------------------------------------


def natpmpc(lab: Lab, ns: str, *args: str) -> str:
    """`natpmpc -g 198.18.0.1 ARGS` inside `ns`, bounded; its stdout (a non-zero exit fails)."""
    assert NATPMPC is not None
    result = lab.run(ns, NATPMPC, "-g", GW_LAN_IP, *args, check=False, timeout_s=NATPMPC_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def natpmpc_mapped(output: str) -> tuple[int, str, int, int]:
    """(public port, protocol, private port, lifetime) from natpmpc's "Mapped public port" line."""
    found = _MAPPED.search(output)
    assert found is not None, output
    return int(found[1]), found[2], int(found[3]), int(found[4])


def probe(lab: Lab, protocol: str, port: int) -> str:
    """From the WAN host to the gateway's external address 198.19.0.1:port."""
    if protocol == "TCP":
        return tcp_probe(lab, lab.wan, GW_WAN_IP, port)
    return udp_probe(lab, lab.wan, GW_WAN_IP, port)


def assert_not_reached(outcome: str) -> None:
    assert outcome in ("dropped", "refused"), f"the LAN echo server answered {outcome}"


def udp_exchange(
    lab: Lab, ns: str, server: tuple[str, int], data: bytes, *, timeout_s: float = NEGATIVE_S
) -> bytes | None:
    """Send `data` from an ephemeral port of `ns`; the first datagram back, or None (bounded)."""
    with lab.socket(ns) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.settimeout(timeout_s)
        sock.sendto(data, server)
        try:
            reply, _ = sock.recvfrom(2048)
        except (TimeoutError, ConnectionRefusedError):
            return None
    return reply


def natpmp_map(
    lab: Lab, ns: str, protocol: str, internal_port: int, *, external: int = 0, lifetime: int = 3600
) -> pmp.MapResponse:
    """One raw NAT-PMP map request from `ns` to 198.18.0.1:5351; its parsed answer."""
    opcode = pmp.Opcode.MAP_TCP if protocol == "TCP" else pmp.Opcode.MAP_UDP
    data = pmp.push_request(pmp.MapRequest(opcode, internal_port, external, lifetime))
    answer = udp_exchange(lab, ns, (GW_LAN_IP, SERVER_PORT), data)
    assert answer is not None, "no NAT-PMP answer"
    response = pmp.pull_response(answer)
    assert isinstance(response, pmp.MapResponse), response
    return response


def pcp_session(
    lab: Lab, ns: str, body: Callable[[PcpClient], Awaitable[T]], *, timeout_s: float = 5.0
) -> T:
    """`body(client)` with a PcpClient talking to 198.18.0.1:5351 from `ns`, in its own loop."""

    async def main() -> T:
        async with PcpClient((GW_LAN_IP, SERVER_PORT), timeout_s=timeout_s / 3) as client:
            async with asyncio.timeout(timeout_s):
                return await body(client)

    return lab.call(ns, lambda: asyncio.run(main()), timeout_s=PCP_SESSION_TIMEOUT_S)


def pcp_map(
    lab: Lab, ns: str, protocol: IPProtocol, port: int, *, nonce: bytes, lifetime: int
) -> PcpResponse:
    """A PCP MAP (create, or delete with lifetime 0) for internal `port`, suggesting the same."""

    async def body(client: PcpClient) -> PcpResponse:
        return await client.map(protocol, port, lifetime=lifetime, nonce=nonce, suggested_port=port)

    return pcp_session(lab, ns, body)


def map_payload(response: PcpResponse) -> MapPayload:
    assert isinstance(response.payload, MapPayload), response
    return response.payload


def entries_of(client: SoapClient) -> dict[tuple[str, int], dict[str, str]]:
    """This caller's view of GetGenericPortMappingEntry, by (protocol, external port)."""
    return {
        (entry["NewProtocol"], int(entry["NewExternalPort"])): entry
        for entry in client.generic_entries()
    }


def kernel_ruleset(lab: Lab) -> str:
    """`nft list ruleset` inside lab.gw (never the root namespace)."""
    return lab.run(lab.gw, "nft", "list", "ruleset").stdout


def pcp_map_bytes(client_ip: str, protocol: IPProtocol, port: int, nonce: bytes) -> bytes:
    """A raw PCP MAP request (RFC 6887 11.1) with `client_ip` in the client-IP field."""
    return pcp.push_request(
        pcp.PcpRequest(
            opcode=pcp.Opcode.MAP,
            lifetime=3600,
            client_address=pcp.from_ipv4(IPv4Address(client_ip)),
            payload=MapPayload(nonce, protocol, port, port, pcp.UNSPECIFIED_V4),
        )
    )


# ---- 1. natpmpc in lan1 -------------------------------------------------------------------------


def test_natpmpc_external_address(env: Env) -> None:
    """`natpmpc -g 198.18.0.1` in lan1 learns the external address 198.19.0.1."""
    out = natpmpc(env.lab, env.lab.lan1)
    assert f"Public IP address : {GW_WAN_IP}" in out, out


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_natpmpc_maps_and_unmaps_end_to_end(env: Env, protocol: str) -> None:
    """natpmpc maps 40100; the WAN reaches lan1's echo server through it; unmapped, it does not."""
    lab = env.lab
    assert_not_reached(probe(lab, protocol, NATPMPC_PORT))  # nothing open before
    port = str(NATPMPC_PORT)
    out = natpmpc(lab, lab.lan1, "-a", port, port, protocol.lower(), "3600")
    public, proto, private, lifetime = natpmpc_mapped(out)
    assert (proto, private, lifetime) == (protocol, NATPMPC_PORT, 3600), out
    assert public == NATPMPC_PORT, out  # the suggested port was free
    assert f"Public IP address : {GW_WAN_IP}" in out, out
    assert probe(lab, protocol, public) == WAN_IP  # echoed, from the WAN host's own address

    # natpmpc -h: "In order to remove a mapping, set it with a lifetime of 0 seconds."
    out = natpmpc(lab, lab.lan1, "-a", port, port, protocol.lower(), "0")
    assert natpmpc_mapped(out) == (0, protocol, NATPMPC_PORT, 0), out
    assert_not_reached(probe(lab, protocol, public))


# ---- 2. A PCP client in lan1 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "port"), [(IPProtocol.TCP, PCP_TCP_PORT), (IPProtocol.UDP, PCP_UDP_PORT)]
)
def test_pcp_map_wrong_nonce_delete_then_delete(env: Env, protocol: IPProtocol, port: int) -> None:
    """PCP MAP from lan1 opens the port; a delete with a wrong nonce is NOT_AUTHORIZED and changes
    nothing; a delete with the mapping's nonce closes it."""
    lab = env.lab
    name = protocol.name
    nonce = new_nonce()
    created = pcp_map(lab, lab.lan1, protocol, port, nonce=nonce, lifetime=3600)
    assert created.result == pcp.ResultCode.SUCCESS, created
    payload = map_payload(created)
    assert payload.nonce == nonce
    assert to_ipv4(payload.external_address) == IPv4Address(GW_WAN_IP), payload
    external = payload.external_port
    assert external == port, payload  # the suggested port was free
    assert 0 < created.lifetime <= 3600, created
    assert probe(lab, name, external) == WAN_IP

    wrong = pcp_map(lab, lab.lan1, protocol, port, nonce=new_nonce(), lifetime=0)
    assert wrong.result == pcp.ResultCode.NOT_AUTHORIZED, wrong
    assert probe(lab, name, external) == WAN_IP

    deleted = pcp_map(lab, lab.lan1, protocol, port, nonce=nonce, lifetime=0)
    assert deleted.result == pcp.ResultCode.SUCCESS, deleted
    assert deleted.lifetime == 0, deleted
    assert_not_reached(probe(lab, name, external))


# ---- 3. NAT-PMP mappings in the UPnP view -------------------------------------------------------


def test_natpmp_mapping_in_upnp_owner_only(env: Env) -> None:
    """A NAT-PMP mapping of lan1 is listed by GetGenericPortMappingEntry for lan1 and deletable
    there; lan2 neither sees it nor deletes it."""
    lab = env.lab
    port = str(UPNP_VIEW_PORT)
    natpmpc(lab, lab.lan1, "-a", port, port, "tcp", "3600")
    owner, other = (
        SoapClient(lab, lab.lan1, port=HTTP_PORT),
        SoapClient(lab, lab.lan2, port=HTTP_PORT),
    )
    try:
        entry = entries_of(owner).get(("TCP", UPNP_VIEW_PORT))
        assert entry is not None, entries_of(owner)
        assert entry["NewInternalClient"] == LAN1_IP, entry
        assert entry["NewInternalPort"] == port, entry
        assert entry["NewEnabled"] == "1", entry
        assert probe(lab, "TCP", UPNP_VIEW_PORT) == WAN_IP

        assert ("TCP", UPNP_VIEW_PORT) not in entries_of(other)
        assert not other.get_specific(UPNP_VIEW_PORT).ok
        refused = other.delete(UPNP_VIEW_PORT)
        assert not refused.ok, refused.outputs
        assert refused.error_code in (606, 714), refused.http  # ST-23: not authorized / no entry
        assert ("TCP", UPNP_VIEW_PORT) in entries_of(owner)
        assert probe(lab, "TCP", UPNP_VIEW_PORT) == WAN_IP

        deleted = owner.delete(UPNP_VIEW_PORT)
        assert deleted.ok, deleted.http
        assert ("TCP", UPNP_VIEW_PORT) not in entries_of(owner)
        assert_not_reached(probe(lab, "TCP", UPNP_VIEW_PORT))
    finally:
        natpmpc(lab, lab.lan1, "-a", port, port, "tcp", "0")


# ---- 4. Security items (landscape.md) -----------------------------------------------------------


def test_st_03_natpmp_and_pcp_from_wan_are_dropped(env: Env) -> None:
    """ST-03 NAT-PMP/PCP on WAN. "Valid requests arriving on the ext interface, or addressed to
    the external IP. Expect **silently dropped** (RFC 6886 §3; R7-2014-17)."

    From the wan namespace, to 198.19.0.1:5351 and to 198.18.0.1:5351 (routed to the gateway):
    NAT-PMP external-address and map requests and a PCP MAP get no answer within a bounded wait,
    and nothing reaches the kernel. The same NAT-PMP request from lan1 is answered (control).
    """
    lab = env.lab
    requests = {
        "natpmp-address": pmp.push_request(pmp.ExternalAddressRequest()),
        "natpmp-map": pmp.push_request(
            pmp.MapRequest(pmp.Opcode.MAP_TCP, ST03_PORT, ST03_PORT, 3600)
        ),
        "pcp-map": pcp_map_bytes(WAN_IP, IPProtocol.TCP, ST03_PORT, new_nonce()),
    }
    assert udp_exchange(lab, lab.lan1, (GW_LAN_IP, SERVER_PORT), requests["natpmp-address"])
    answered = [
        (name, target, answer)
        for target in (GW_WAN_IP, GW_LAN_IP)
        for name, data in requests.items()
        if (answer := udp_exchange(lab, lab.wan, (target, SERVER_PORT), data)) is not None
    ]
    assert answered == []
    assert_not_reached(probe(lab, "TCP", ST03_PORT))
    assert str(ST03_PORT) not in kernel_ruleset(lab)


def test_st_29_natpmp_targets_source_deletes_per_protocol_answers_small(env: Env) -> None:
    """ST-29 NAT-PMP. "Mapping always targets the source address." "Lifetime 0 + private port 0
    deletes only the requester's NAT-PMP mappings." "Bad version ⇒ result 1; unknown opcode ⇒ 5;
    response-bit packets ignored." "Response size ≤ 16 B (no amplification)."
    """
    lab = env.lab
    lan1 = SoapClient(lab, lab.lan1, port=HTTP_PORT)
    lan2 = SoapClient(lab, lab.lan2, port=HTTP_PORT)

    # Targets the source: lan1's request maps to lan1, lan2's to lan2 (NAT-PMP names no client).
    mine = natpmp_map(lab, lab.lan1, "TCP", ST29_TARGET_PORT, external=ST29_TARGET_PORT)
    assert mine.result == pmp.ResultCode.SUCCESS, mine
    assert entries_of(lan1)[("TCP", mine.external_port)]["NewInternalClient"] == LAN1_IP
    assert probe(lab, "TCP", mine.external_port) == WAN_IP  # echo server bound to 198.18.0.10
    theirs = natpmp_map(lab, lab.lan2, "TCP", ST29_LAN2_PORT, external=ST29_LAN2_PORT)
    assert theirs.result == pmp.ResultCode.SUCCESS, theirs
    assert entries_of(lan2)[("TCP", theirs.external_port)]["NewInternalClient"] == LAN2_IP

    # Delete-all per protocol, requester's NAT-PMP mappings only.
    tcp = natpmp_map(lab, lab.lan1, "TCP", ST29_TCP_PORT, external=ST29_TCP_PORT)
    udp = natpmp_map(lab, lab.lan1, "UDP", ST29_UDP_PORT, external=ST29_UDP_PORT)
    assert tcp.result == udp.result == pmp.ResultCode.SUCCESS, (tcp, udp)
    upnp = lan1.add(ST29_UPNP_PORT, LAN1_IP, lease=3600)
    assert upnp.ok, upnp.http
    assert probe(lab, "TCP", tcp.external_port) == WAN_IP
    assert probe(lab, "UDP", udp.external_port) == WAN_IP
    assert probe(lab, "TCP", ST29_UPNP_PORT) == WAN_IP

    delete_all = natpmp_map(lab, lab.lan1, "TCP", 0, lifetime=0)
    assert delete_all.result == pmp.ResultCode.SUCCESS, delete_all
    assert (delete_all.internal_port, delete_all.external_port, delete_all.lifetime) == (0, 0, 0)
    left = entries_of(lan1)
    assert ("TCP", tcp.external_port) not in left
    assert ("TCP", mine.external_port) not in left
    assert ("UDP", udp.external_port) in left  # other protocol
    assert ("TCP", ST29_UPNP_PORT) in left  # not a NAT-PMP mapping
    assert ("TCP", theirs.external_port) in entries_of(lan2)  # not the requester's
    assert_not_reached(probe(lab, "TCP", tcp.external_port))
    assert probe(lab, "UDP", udp.external_port) == WAN_IP
    assert probe(lab, "TCP", ST29_UPNP_PORT) == WAN_IP

    # Small answers: none above 16 bytes, however large the request.
    server = (GW_LAN_IP, SERVER_PORT)
    answers: dict[str, bytes | None] = {
        "address": udp_exchange(lab, lab.lan1, server, b"\x00\x00"),
        "map+padding": udp_exchange(
            lab,
            lab.lan1,
            server,
            struct.pack("!BBHHHI", 0, 2, 0, ST29_SIZE_PORT, ST29_SIZE_PORT, 60) + bytes(1000),
        ),
        "unknown-opcode": udp_exchange(lab, lab.lan1, server, b"\x00\x63" + bytes(1098)),
        "response-bit": udp_exchange(lab, lab.lan1, server, b"\x00\x80" + bytes(10)),
    }
    address = answers["address"]
    assert address is not None
    assert len(address) == 12, address
    unknown = answers["unknown-opcode"]
    assert unknown is not None
    assert len(unknown) <= 16, unknown
    assert struct.unpack_from("!BBH", unknown) == (0, 0x80 | 0x63, pmp.ResultCode.UNSUPP_OPCODE)
    assert answers["response-bit"] is None
    assert all(len(a) <= 16 for a in answers.values() if a is not None), answers

    # Bad version: result 1. Version 1 is not NAT-PMP: on the shared port it goes to PCP, which
    # answers UNSUPP_VERSION in its own 24-byte format (RFC 6887 section 9); the result field is
    # the 16 bits at offset 2 in both formats.
    bad_version = udp_exchange(lab, lab.lan1, server, b"\x01\x00" + bytes(10))
    assert bad_version is not None
    assert struct.unpack_from("!H", bad_version, 2) == (1,), bad_version

    # Clean up what is left of this test.
    for protocol, port in (("UDP", ST29_UDP_PORT), ("TCP", ST29_SIZE_PORT)):
        natpmp_map(lab, lab.lan1, protocol, port, lifetime=0)
    natpmp_map(lab, lab.lan2, "TCP", ST29_LAN2_PORT, lifetime=0)
    assert lan1.delete(ST29_UPNP_PORT).ok


def test_st_30_pcp_client_ip_mismatch_end_to_end(env: Env) -> None:
    """ST-30 PCP. "Client-IP field ≠ source ⇒ `ADDRESS_MISMATCH`."

    lan1 sends a MAP whose client-IP field names lan2 (198.18.0.11), then one naming the WAN
    host: both are ADDRESS_MISMATCH, no mapping exists for either host, the WAN gets nothing.
    """
    lab = env.lab
    nonce = new_nonce()

    async def body(client: PcpClient) -> list[PcpResponse]:
        assert client.client_address == IPv4Address(LAN1_IP)
        return [
            await client.request(
                client.map_request(
                    IPProtocol.TCP,
                    ST30_PORT,
                    lifetime=3600,
                    nonce=nonce,
                    suggested_port=ST30_PORT,
                    client_address=IPv4Address(spoofed),
                )
            )
            for spoofed in (LAN2_IP, WAN_IP)
        ]

    for response in pcp_session(lab, lab.lan1, body):
        assert response.result == pcp.ResultCode.ADDRESS_MISMATCH, response
    for ns in (lab.lan1, lab.lan2):
        assert ("TCP", ST30_PORT) not in entries_of(SoapClient(lab, ns, port=HTTP_PORT))
    assert_not_reached(probe(lab, "TCP", ST30_PORT))
    assert str(ST30_PORT) not in kernel_ruleset(lab)


# ---- 5. Announcements stay on the LAN -----------------------------------------------------------


def test_announcements_reach_the_lan_and_not_the_wan(env: Env) -> None:
    """Since the daemon started, lan1 (member of 224.0.0.1 on eth0, port 5350) received PCP
    ANNOUNCE and NAT-PMP announcements from 198.18.0.1; the wan namespace received nothing."""
    lan = receive_datagrams(env.lan_listener, quiet_s=1.0, timeout_s=5.0)
    assert lan, "no announcement on the LAN"
    assert {d.source[0] for d in lan} == {GW_LAN_IP}, lan
    assert {d.source[1] for d in lan} == {SERVER_PORT}, lan
    natpmp = [pmp.pull_response(d.data) for d in lan if d.data[:1] == b"\x00"]
    pcp_announces = [pcp.pull_response(d.data) for d in lan if d.data[:1] == b"\x02"]
    assert natpmp, lan
    assert pcp_announces, lan
    for announcement in natpmp:
        assert isinstance(announcement, pmp.ExternalAddressResponse), announcement
        assert announcement.result == pmp.ResultCode.SUCCESS
        assert announcement.address == IPv4Address(GW_WAN_IP)
    for response in pcp_announces:
        assert response.opcode == pcp.Opcode.ANNOUNCE, response
        assert response.result == pcp.ResultCode.SUCCESS, response

    wan = receive_datagrams(env.wan_listener, quiet_s=2.0, timeout_s=2.0)
    assert wan == [], wan
