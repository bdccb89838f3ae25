"""`igd serve` with every front-end wired: NAT-PMP, PCP, GENA, status page, admin API and CLI.

No root needed: the daemon runs as a subprocess on lo with ephemeral HTTP, SSDP and NAT-PMP/PCP
ports (the hidden `--ssdp-port 0`-like `--pcp-port 0`) and its state under tmp_path. The ports
bound are read from the daemon's "running:" log line, which is written before the ready line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin
from xml.etree import ElementTree

import aiohttp
import pytest
from aiohttp import web
from integration.test_daemon import (
    DEVICE_NS,
    HTTP_TIMEOUT_S,
    Daemon,
    SoapFault,
    Spawner,
    assert_one_line,
    http_get,
    soap,
    stored_counter,
)
from pcpclient import PcpClient, new_nonce

from igd.daemon import EPOCH_ORIGIN_COUNTER, STORE_FILE
from igd.natcore import IPProtocol
from igd.natpmp.wire import (
    ExternalAddressRequest,
    ExternalAddressResponse,
    MapRequest,
    MapResponse,
    Opcode,
    ResultCode,
    pull_response,
    push_request,
)
from igd.pcp.wire import ResultCode as PcpResult

CLI_TIMEOUT_S = 30.0
UDP_TIMEOUT_S = 3.0
GENA_TIMEOUT_S = 5.0
EXTERNAL = ("--external-ip", "198.19.0.1", "--allow-private-external")
"""NAT-PMP and PCP map only with an external address (PMP-27); the virtual WAN has none."""
RUNNING_RE = re.compile(r"running: .*NAT-PMP/PCP port (\d+), admin socket (\S+), ")


@pytest.fixture
def spawner(tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path)
    try:
        yield spawner
    finally:
        spawner.cleanup()


def running(daemon: Daemon) -> tuple[int, Path]:
    """(NAT-PMP/PCP port, admin socket) from the "running:" line, logged before the ready line."""
    match = RUNNING_RE.search(daemon.stderr)
    assert match is not None, daemon.stderr
    return int(match.group(1)), Path(match.group(2))


def natpmp(port: int, request: ExternalAddressRequest | MapRequest) -> bytes:
    """Send one NAT-PMP request from 127.0.0.1 to the daemon; the answer (bounded wait)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(UDP_TIMEOUT_S)
        sock.sendto(push_request(request), ("127.0.0.1", port))
        return sock.recv(64)


def natpmp_epoch(port: int) -> int:
    answer = pull_response(natpmp(port, ExternalAddressRequest()))
    assert isinstance(answer, ExternalAddressResponse), answer
    return answer.epoch


def igd_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m igd ARGS` (bounded)."""
    return subprocess.run(
        [sys.executable, "-m", "igd", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def event_sub_url(description_url: str) -> str:
    """The eventSubURL of WANIPConnection in the description."""
    _, _, body = http_get(description_url)
    for service in ElementTree.fromstring(body).iter(f"{DEVICE_NS}service"):
        if ":service:WANIPConnection:" in (service.findtext(f"{DEVICE_NS}serviceType") or ""):
            return urljoin(description_url, service.findtext(f"{DEVICE_NS}eventSubURL") or "")
    raise AssertionError(f"no WANIPConnection in {description_url}")


# ---- Start: the ready line, the status page, the admin socket -----------------------------------


def test_ready_status_page_and_admin_socket(spawner: Spawner) -> None:
    daemon = spawner.start()
    pcp_port, admin_socket = running(daemon)
    assert pcp_port != 0
    assert admin_socket == spawner.state_dir / "igd.sock"
    assert stat.S_ISSOCK(admin_socket.stat().st_mode)
    assert stat.S_IMODE(admin_socket.stat().st_mode) == 0o600
    base = daemon.urls[2].removesuffix("/igd2/rootDesc.xml")
    _, _, description = http_get(daemon.urls[2])
    assert "<presentationURL>/status/</presentationURL>" in description
    status, content_type, body = http_get(f"{base}/status/")
    assert status == 200
    assert content_type.startswith("text/html")
    assert "<html" in body.lower()
    status, content_type, body = http_get(f"{base}/status/api/state")
    assert status == 200
    assert content_type.startswith("application/json")
    state = json.loads(body)
    assert state["admin"] is False  # no admin token configured: read-only
    assert {c["name"] for c in state["connections"]} >= {"wan", "lo"}

    result = igd_cli("status", "--socket", str(admin_socket), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["public_connection"] == "wan"
    assert document["private_connections"] == ["lo"]
    result = igd_cli("status", "--state-dir", str(spawner.state_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("igd ")

    assert daemon.stop() == 0
    assert not admin_socket.exists()  # removed at stop
    assert "Traceback" not in daemon.stderr
    assert " ERROR " not in daemon.stderr


# ---- NAT-PMP and PCP -----------------------------------------------------------------------------


def test_natpmp_mapping_shows_in_upnp_and_is_deleted_there(spawner: Spawner) -> None:
    """Issue 5: a NAT-PMP mapping is listed by UPnP for its owner, who may delete it there."""
    daemon = spawner.start(*EXTERNAL)
    pcp_port, admin_socket = running(daemon)
    answer = pull_response(natpmp(pcp_port, MapRequest(Opcode.MAP_TCP, 41000, 41000, 3600)))
    assert isinstance(answer, MapResponse), answer
    assert answer.result is ResultCode.SUCCESS
    assert answer.internal_port == 41000
    external = answer.external_port
    assert external != 0
    assert 0 < answer.lifetime <= 3600

    listed = igd_cli("mappings", "list", "--socket", str(admin_socket), "--json")
    assert listed.returncode == 0, listed.stderr
    mappings = json.loads(listed.stdout)
    mappings = mappings["mappings"] if isinstance(mappings, dict) else mappings
    (mapping,) = [m for m in mappings if m["external_port"] == external]
    assert mapping["origin"] == "natpmp"
    assert mapping["protocol"] == "TCP"
    text = igd_cli("mappings", "list", "--socket", str(admin_socket))
    assert text.returncode == 0, text.stderr
    assert "natpmp" in text.stdout

    for url in daemon.urls.values():
        entry = soap(url, "GetGenericPortMappingEntry", NewPortMappingIndex=0)
        assert entry["NewExternalPort"] == str(external)
        assert entry["NewProtocol"] == "TCP"
        assert entry["NewInternalClient"] == "127.0.0.1"
        assert entry["NewInternalPort"] == "41000"
    soap(daemon.urls[2], "DeletePortMapping", NewRemoteHost="", NewExternalPort=external,
         NewProtocol="TCP")  # fmt: skip
    with pytest.raises(SoapFault) as caught:
        soap(daemon.urls[2], "GetGenericPortMappingEntry", NewPortMappingIndex=0)
    assert caught.value.code == 713
    assert daemon.stop() == 0


async def test_pcp_map_and_delete(spawner: Spawner) -> None:
    daemon = await asyncio.to_thread(spawner.start, *EXTERNAL)
    pcp_port, _ = running(daemon)
    async with PcpClient(("127.0.0.1", pcp_port), local=("127.0.0.1", 0)) as client:
        nonce = new_nonce()
        created = await client.map(IPProtocol.UDP, 41001, lifetime=3600, nonce=nonce)
        assert created.result == PcpResult.SUCCESS
        assert 0 < created.lifetime <= 3600
        entry = await asyncio.to_thread(
            soap, daemon.urls[2], "GetGenericPortMappingEntry", NewPortMappingIndex=0
        )
        assert entry["NewProtocol"] == "UDP"
        assert entry["NewInternalPort"] == "41001"
        deleted = await client.map(IPProtocol.UDP, 41001, lifetime=0, nonce=nonce)
        assert deleted.result == PcpResult.SUCCESS
        announce = await client.announce()
        assert announce.result == PcpResult.SUCCESS
    assert await asyncio.to_thread(daemon.stop) == 0


def test_epoch_counts_across_restarts_and_resets_with_new_state(
    spawner: Spawner, tmp_path: Path
) -> None:
    """ST-29, PCP-55: the epoch origin is stored with the mappings; new state, new epoch."""
    daemon = spawner.start()
    pcp_port, _ = running(daemon)
    assert natpmp_epoch(pcp_port) < 60
    assert daemon.stop() == 0
    origin = stored_counter(spawner.state_dir, EPOCH_ORIGIN_COUNTER)
    assert abs(origin - time.time()) < 60
    earlier = origin - 100_000  # as if the state had been kept for a day
    with contextlib.closing(sqlite3.connect(spawner.state_dir / STORE_FILE)) as db, db:
        db.execute("UPDATE counters SET value = ? WHERE name = ?", (earlier, EPOCH_ORIGIN_COUNTER))

    daemon = spawner.start()
    pcp_port, _ = running(daemon)
    assert 100_000 <= natpmp_epoch(pcp_port) < 100_060  # kept: it counts on

    async def pcp_epoch() -> int:
        async with PcpClient(("127.0.0.1", pcp_port), local=("127.0.0.1", 0)) as client:
            return (await client.announce()).epoch

    assert 100_000 <= asyncio.run(pcp_epoch()) < 100_060  # the same origin for PCP
    assert daemon.stop() == 0
    assert stored_counter(spawner.state_dir, EPOCH_ORIGIN_COUNTER) == earlier

    daemon = spawner.start(state_dir=tmp_path / "new-state")
    pcp_port, _ = running(daemon)
    assert natpmp_epoch(pcp_port) < 60  # lost state: a new epoch
    assert daemon.stop() == 0


def test_natpmp_can_be_turned_off(spawner: Spawner) -> None:
    daemon = spawner.start("--no-natpmp")
    pcp_port, _ = running(daemon)
    with pytest.raises(TimeoutError):
        natpmp(pcp_port, ExternalAddressRequest())

    async def pcp_result() -> int:
        async with PcpClient(("127.0.0.1", pcp_port), local=("127.0.0.1", 0)) as client:
            return (await client.announce()).result

    assert asyncio.run(pcp_result()) == PcpResult.SUCCESS
    assert daemon.stop() == 0


def test_pcp_port_in_use(spawner: Spawner) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", 0))  # no SO_REUSEADDR: the daemon cannot share it
        port = blocker.getsockname()[1]
        failed = spawner.fail("--pcp-port", str(port))
    assert_one_line(
        failed,
        1,
        re.escape(f"igd: error: pcp_port: cannot listen on UDP port {port} on lo (127.0.0.1): ")
        + "address already in use",
    )


# ---- GENA ----------------------------------------------------------------------------------------


async def test_gena_subscriber_gets_the_initial_event(spawner: Spawner) -> None:
    daemon = await asyncio.to_thread(spawner.start)
    url = await asyncio.to_thread(event_sub_url, daemon.urls[2])
    received: asyncio.Queue[tuple[dict[str, str], str]] = asyncio.Queue()

    async def callback(request: web.Request) -> web.Response:
        await received.put((dict(request.headers), await request.text()))
        return web.Response()

    app = web.Application()
    app.router.add_route("NOTIFY", "/event", callback)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        callback_port = runner.addresses[0][1]
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                "SUBSCRIBE",
                url,
                headers={
                    "CALLBACK": f"<http://127.0.0.1:{callback_port}/event>",
                    "NT": "upnp:event",
                    "TIMEOUT": "Second-300",
                },
            ) as reply,
        ):
            assert reply.status == 200, await reply.text()
            sid = reply.headers["SID"]
        async with asyncio.timeout(GENA_TIMEOUT_S):
            headers, body = await received.get()
        assert headers["SID"] == sid
        assert headers["SEQ"] == "0"
        assert "ExternalIPAddress" in body
        assert "PortMappingNumberOfEntries" in body
    finally:
        await runner.cleanup()
    assert await asyncio.to_thread(daemon.stop) == 0


# ---- The admin API on loopback TCP ---------------------------------------------------------------


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_admin_api_on_tcp_needs_the_token(spawner: Spawner, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-of-24-chars\nignored\n")
    port = free_tcp_port()
    daemon = spawner.start("--admin-port", str(port), "--admin-token-file", str(token_file))
    url = f"http://127.0.0.1:{port}"
    result = igd_cli("status", "--url", url, "--token-file", str(token_file), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["public_connection"] == "wan"
    refused = igd_cli("status", "--url", url)
    assert refused.returncode == 4, refused
    base = daemon.urls[2].removesuffix("/igd2/rootDesc.xml")
    assert json.loads(http_get(f"{base}/status/api/state")[2])["admin"] is True  # actions offered
    assert daemon.stop() == 0
    assert " ERROR " not in daemon.stderr


def test_short_token_guards_the_socket_and_leaves_the_page_read_only(
    spawner: Spawner, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("short\n")
    daemon = spawner.start("--admin-token-file", str(token_file))
    _, admin_socket = running(daemon)
    assert igd_cli("status", "--socket", str(admin_socket)).returncode == 4
    result = igd_cli("status", "--socket", str(admin_socket), "--token-file", str(token_file))
    assert result.returncode == 0, result.stderr
    base = daemon.urls[2].removesuffix("/igd2/rootDesc.xml")
    assert json.loads(http_get(f"{base}/status/api/state")[2])["admin"] is False
    assert "the status page is read-only" in daemon.stderr
    assert daemon.stop() == 0


def test_admin_port_without_token_file_and_bad_token(spawner: Spawner, tmp_path: Path) -> None:
    failed = spawner.fail("--admin-port", str(free_tcp_port()))
    assert_one_line(failed, 2, r"igd: error: admin_token_file: needed with admin_port: .*")
    empty = tmp_path / "empty-token"
    empty.write_text("\n  \n")
    failed = spawner.fail("--admin-token-file", str(empty))
    assert_one_line(
        failed,
        2,
        re.escape(f"igd: error: admin_token_file: {empty} holds no token on its first line"),
    )
    missing = tmp_path / "missing-token"
    failed = spawner.fail("--admin-token-file", str(missing))
    assert_one_line(
        failed,
        2,
        re.escape(f"igd: error: admin_token_file: cannot read {missing}: no such file") + ".*",
    )


def test_admin_socket_elsewhere(spawner: Spawner, tmp_path: Path) -> None:
    path = tmp_path / "run" / "admin.sock"
    path.parent.mkdir()
    os.chmod(path.parent, 0o700)
    daemon = spawner.start("--admin-socket", str(path))
    assert running(daemon)[1] == path
    assert not (spawner.state_dir / "igd.sock").exists()
    result = igd_cli("mappings", "list", "--socket", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert daemon.stop() == 0
