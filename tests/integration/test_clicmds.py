"""The operator commands against a running admin API: an in-process server on a tmp_path socket.

The server runs on the test's event loop over conftest's lab core (wan0 public, lan0 private);
each command runs as `igd ...` would, through `clicmds.main`, in a worker thread with its own
loop. Checked: human output, `--json` parseable, exit codes, errors in one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import LAN_HOST, LAN_HOST2, FakeClock

from igd import clicmds
from igd.admin.client import AdminClient, AdminError, AdminUnreachable
from igd.admin.metrics import MetricsSources
from igd.admin.routes import ADMIN_APP, AdminServer, build_admin_app, start_admin_server
from igd.natcore import (
    Client,
    FirewallSettings,
    IPProtocol,
    MappingRequest,
    Origin,
    SharingManager,
)

STEP_TIMEOUT_S = 10.0
TOKEN = "cli-t0ken"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Daemon:
    """The admin API being served, and how the CLI reaches it."""

    core: SharingManager
    app: web.Application
    server: AdminServer
    socket: Path
    capsys: pytest.CaptureFixture[str]

    async def igd(self, *argv: str, where: Sequence[str] | None = None) -> Result:
        """Run `igd ARGV --socket SOCKET` in a worker thread; its exit code and output."""
        location = ["--socket", str(self.socket)] if where is None else list(where)
        self.capsys.readouterr()
        async with asyncio.timeout(STEP_TIMEOUT_S):
            code = await asyncio.to_thread(clicmds.main, [*argv, *location])
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    async def ok(self, *argv: str) -> Result:
        result = await self.igd(*argv)
        assert result.code == 0, result
        assert result.err == ""
        return result

    async def refused(self, *argv: str, code: int = clicmds.EXIT_REFUSED) -> Result:
        result = await self.igd(*argv)
        assert result.code == code, result
        assert result.err.startswith("igd: error: ")
        assert result.err.count("\n") == 1
        return result


@pytest.fixture
async def daemon(
    core: SharingManager, clock: FakeClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Daemon]:
    app = build_admin_app(
        core,
        token=None,
        metrics_sources=MetricsSources(),
        started_at=clock.now - 90061,
        version="0.1.0",
        clock=clock,
    )
    socket = tmp_path / "igd.sock"
    server = await start_admin_server(app, socket_path=socket)
    try:
        yield Daemon(core, app, server, socket, capsys)
    finally:
        await server.close()


async def add_upnp(core: SharingManager) -> None:
    await core.add_mapping(
        MappingRequest(IPProtocol.UDP, 51413, LAN_HOST2, 51413, "torrent", lease=3600),
        Client(Origin.UPNP, LAN_HOST2),
    )


# ---- status and connections ----------------------------------------------------------------------


async def test_status(daemon: Daemon) -> None:
    await add_upnp(daemon.core)
    text = (await daemon.ok("status")).out
    lines = text.splitlines()
    assert lines[0] == "igd 0.1.0, up 1d 1:01:01"
    assert "external address  198.19.0.1" in lines
    assert "public            wan0" in lines
    assert "private           lan0" in lines
    assert "firewall          on" in lines
    assert "mappings          1 (1 enabled, 1 active): admin 0, upnp 1, natpmp 0, pcp 0" in lines
    data = (await daemon.ok("status", "--json")).json
    assert data["public_connection"] == "wan0"
    assert data["mappings"]["total"] == 1


async def test_connections(daemon: Daemon) -> None:
    lines = (await daemon.ok("connections")).out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "IFNAME",
        "STATUS",
        "MEDIA",
        "ROLE",
        "FIREWALL",
        "ADDRESSES",
        "MAPPINGS",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["wan0"] == [
        "wan0",
        "wan0",
        "connected",
        "lan",
        "public",
        "on",
        "198.19.0.1/24",
        "0",
    ]
    assert rows["lan0"][4:6] == ["private", "off"]
    assert rows["br0"][4:7] == ["-", "off", "-"]
    data = (await daemon.ok("connections", "--json")).json
    assert [c["name"] for c in data["connections"]] == ["br0", "lan0", "lan1", "wan0"]


# ---- sharing and firewall ------------------------------------------------------------------------


async def test_sharing(daemon: Daemon) -> None:
    assert (await daemon.ok("sharing", "enable", "lan1", "--private")).out == (
        "lan1: shared as private (firewall off)\n"
    )
    guarded = await daemon.refused("sharing", "disable", "lan1", "--public")
    assert guarded.err == "igd: error: lan1 is shared as private, not public; nothing changed\n"
    assert guarded.out == ""
    assert (await daemon.ok("sharing", "disable", "lan1", "--private")).out == "lan1: not shared\n"
    assert (await daemon.ok("sharing", "disable", "lan1")).out == "lan1: not shared\n"
    guarded = await daemon.refused("sharing", "disable", "lan1", "--private")
    assert "lan1 is not shared, not private" in guarded.err
    data = (await daemon.ok("sharing", "enable", "LAN1", "--public", "--json")).json
    assert data["role"] == "public"
    assert data["firewall"] is True
    assert daemon.core.public_connection() is not None
    bridge = await daemon.refused("sharing", "enable", "br0", "--public")
    assert (
        bridge.err == "igd: error: connection br0 cannot be shared publicly (R6) (not_shareable)\n"
    )
    unknown = await daemon.refused("sharing", "enable", "eth9", "--private")
    assert unknown.err == "igd: error: no connection 'eth9' (not_found)\n"


async def test_firewall(daemon: Daemon) -> None:
    assert (await daemon.ok("firewall", "enable", "lan1")).out == (
        "lan1: firewall on (effective on)\n"
    )
    data = (await daemon.ok("firewall", "disable", "lan1", "--json")).json
    assert data["firewall"] is False
    private = await daemon.refused("firewall", "enable", "lan0")
    assert private.err == "igd: error: lan0 is the private connection (R7) (firewall_not_allowed)\n"


# ---- mappings ------------------------------------------------------------------------------------


async def test_mappings(daemon: Daemon) -> None:
    assert (await daemon.ok("mappings", "list")).out == "no mappings\n"
    added = await daemon.ok(
        "mappings", "add", "tcp", "8080", str(LAN_HOST), "80", "--description", "web"
    )
    assert added.out == "added TCP 8080 -> 198.18.0.10:80 on wan0 (enabled, lease permanent)\n"
    await add_upnp(daemon.core)
    data = (
        await daemon.ok(
            "mappings",
            "add",
            "UDP",
            "5353",
            "lanhost",
            "--connection",
            "wan0",
            "--disabled",
            "--remote-host",
            "198.19.0.100",
            "--lease",
            "600",
            "--json",
        )
    ).json
    assert data["target_name"] == "lanhost"
    assert data["internal_port"] == 5353
    assert data["enabled"] is False
    assert data["remote_host"] == "198.19.0.100"
    assert data["remaining_s"] == 600
    lines = (await daemon.ok("mappings", "list")).out.splitlines()
    assert lines[0].split() == [
        "PROTO",
        "PORT",
        "REMOTE",
        "TARGET",
        "ENABLED",
        "CONNECTION",
        "ORIGIN",
        "OWNER",
        "LEASE",
        "DESCRIPTION",
    ]
    assert lines[1].split() == [
        "TCP",
        "8080",
        "*",
        "198.18.0.10:80",
        "yes",
        "wan0",
        "admin",
        "-",
        "permanent",
        "web",
    ]
    assert lines[2].split()[:9] == [
        "UDP",
        "5353",
        "198.19.0.100",
        "lanhost:5353",
        "no",
        "wan0",
        "admin",
        "-",
        "0:10:00",
    ]
    assert lines[3].split() == [
        "UDP",
        "51413",
        "*",
        "198.18.0.11:51413",
        "yes",
        "wan0",
        "upnp",
        "198.18.0.11",
        "1:00:00",
        "torrent",
    ]
    listing = (await daemon.ok("mappings", "list", "--origin", "upnp", "--json")).json
    assert [m["external_port"] for m in listing["mappings"]] == [51413]
    listing = (
        await daemon.ok("mappings", "list", "--protocol", "udp", "--disabled", "--json")
    ).json
    assert [m["external_port"] for m in listing["mappings"]] == [5353]
    owner = (await daemon.ok("mappings", "list", "--owner", str(LAN_HOST2), "--json")).json
    assert owner["count"] == 1
    on_wan = await daemon.ok("mappings", "list", "--connection", "wan0", "--enabled", "--json")
    assert on_wan.json["count"] == 2

    assert (await daemon.ok("mappings", "disable", "tcp", "8080")).out == (
        "disabled TCP 8080 -> 198.18.0.10:80 on wan0\n"
    )
    assert (await daemon.ok("mappings", "enable", "TCP", "8080")).out == (
        "enabled TCP 8080 -> 198.18.0.10:80 on wan0\n"
    )
    removed = await daemon.ok(
        "mappings", "remove", "udp", "5353", "--remote-host", "198.19.0.100", "--json"
    )
    assert removed.json["external_port"] == 5353
    assert (await daemon.ok("mappings", "remove", "udp", "51413")).out == (
        "removed UDP 51413 -> 198.18.0.11:51413 on wan0\n"
    )
    assert [m.external_port for m in daemon.core.mappings()] == [8080]


async def test_mapping_refusals(daemon: Daemon) -> None:
    await daemon.ok("mappings", "add", "tcp", "8080", str(LAN_HOST), "80")
    before = tuple(daemon.core.mappings())
    conflict = await daemon.refused("mappings", "add", "tcp", "8080", str(LAN_HOST2))
    assert conflict.err == "igd: error: TCP port 8080 is mapped to 198.18.0.10 (conflict)\n"
    outside = await daemon.refused("mappings", "add", "tcp", "9000", "198.19.0.100")
    assert outside.err.endswith("(invalid)\n")
    missing = await daemon.refused("mappings", "remove", "tcp", "9999")
    assert missing.err == "igd: error: no TCP mapping on port 9999 (not_found)\n"
    wrong_host = await daemon.refused(
        "mappings", "disable", "tcp", "8080", "--remote-host", "198.19.0.100"
    )
    assert "for remote host 198.19.0.100 (not_found)" in wrong_host.err
    bad_host = await daemon.refused("mappings", "enable", "tcp", "8080", "--remote-host", "far")
    assert bad_host.err.endswith("(bad_request)\n")
    as_json = await daemon.refused("mappings", "remove", "udp", "1", "--json")
    assert as_json.json == {
        "error": {"code": "not_found", "message": "no UDP mapping on port 1"},
        "status": 404,
    }
    assert tuple(daemon.core.mappings()) == before


# ---- events --------------------------------------------------------------------------------------


async def wait_for_stream(daemon: Daemon) -> None:
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while not daemon.app[ADMIN_APP].streams:  # noqa: ASYNC110 - polling another thread
            await asyncio.sleep(0.01)


async def test_events_follow_json(daemon: Daemon) -> None:
    follow = asyncio.create_task(daemon.igd("events", "--count", "3", "--json"))
    await wait_for_stream(daemon)
    guid = daemon.core.find_connection(name="wan0").guid
    await daemon.core.add_connection_mapping(
        guid, MappingRequest(IPProtocol.TCP, 8080, LAN_HOST, 80, "web")
    )
    await daemon.core.enable_internet_firewall(daemon.core.find_connection(name="lan1").guid)
    result = await follow
    assert result.code == 0, result
    assert result.err == ""
    events = [json.loads(line) for line in result.out.splitlines()]
    assert [e["type"] for e in events] == [
        "mapping_added",
        "number_of_entries_changed",
        "firewall_changed",
    ]
    assert events[0]["mapping"]["description"] == "web"


async def test_events_follow_text_with_kinds(daemon: Daemon) -> None:
    follow = asyncio.create_task(
        daemon.igd("events", "--kind", "mapping_removed", "--kind", "mapping_added", "--count", "2")
    )
    await wait_for_stream(daemon)
    await add_upnp(daemon.core)
    await daemon.core.set_mapping_enabled(next(daemon.core.mappings()).key, False)
    await daemon.core.remove_mapping(next(daemon.core.mappings()).key)
    result = await follow
    assert result.code == 0, result
    lines = [line.split("  ", 1)[1] for line in result.out.splitlines()]
    assert lines == [
        "mapping added: UDP 51413 -> 198.18.0.11:51413 on wan0 (upnp)",
        "mapping removed (deleted): UDP 51413 -> 198.18.0.11:51413 on wan0",
    ]


async def test_events_end_when_the_daemon_stops(daemon: Daemon) -> None:
    follow = asyncio.create_task(daemon.igd("events"))
    await wait_for_stream(daemon)
    await daemon.server.close()
    result = await follow
    assert result.code == clicmds.EXIT_UNREACHABLE
    assert result.err == "igd: error: the daemon closed the event stream\n"


# ---- reaching the daemon -------------------------------------------------------------------------


async def test_no_daemon(daemon: Daemon, tmp_path: Path) -> None:
    absent = tmp_path / "absent.sock"
    result = await daemon.igd("status", where=["--socket", str(absent)])
    assert result.code == clicmds.EXIT_UNREACHABLE
    assert result.err == (
        f"igd: error: no daemon socket at {absent}: is `igd serve` running? (see --socket)\n"
    )
    not_a_socket = tmp_path / "plain"
    not_a_socket.write_text("")
    result = await daemon.igd("connections", where=["--socket", str(not_a_socket)])
    assert result.code == clicmds.EXIT_UNREACHABLE
    assert result.err == f"igd: error: nothing listens at {not_a_socket}: is `igd serve` running?\n"
    result = await daemon.igd("status", where=["--state-dir", str(tmp_path)])
    assert result.code == 0  # <state-dir>/igd.sock is the daemon's socket


async def test_silent_or_foreign_servers(daemon: Daemon, tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.sleep(STEP_TIMEOUT_S)
        writer.close()

    async def foreign(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    for handler, argv, message in (
        (silent, ["status", "--timeout", "0.2"], "did not answer within 0.2 s"),
        (foreign, ["status"], "answered with something other than JSON"),
    ):
        path = tmp_path / f"{handler.__name__}.sock"
        server = await asyncio.start_unix_server(handler, path=str(path))
        async with server:
            result = await daemon.igd(*argv, where=["--socket", str(path)])
        assert result.code == clicmds.EXIT_UNREACHABLE
        assert message in result.err
        assert result.err.count("\n") == 1


async def test_token_on_loopback_tcp(
    core: SharingManager,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = build_admin_app(
        core, token=TOKEN, metrics_sources=MetricsSources(), started_at=0.0, version="0.1.0"
    )
    server = await start_admin_server(app, tcp_port=0)
    assert server.tcp_address is not None
    url = "http://{}:{}".format(*server.tcp_address)
    daemon = Daemon(core, app, server, tmp_path / "unused.sock", capsys)
    monkeypatch.delenv(clicmds.ENV_TOKEN, raising=False)
    try:
        result = await daemon.igd("status", where=["--url", url])
        assert result.code == clicmds.EXIT_AUTH
        assert result.err == (
            "igd: error: this listener needs 'Authorization: Bearer TOKEN' with the daemon's "
            "token (unauthenticated)\n"
        )
        token = tmp_path / "token"
        token.write_text("wrong\n")
        result = await daemon.igd("status", where=["--url", url, "--token-file", str(token)])
        assert result.code == clicmds.EXIT_AUTH
        token.write_text(f"{TOKEN}\n")
        result = await daemon.igd(
            "status", "--json", where=["--url", url, "--token-file", str(token)]
        )
        assert result.code == 0
        assert result.json["version"] == "0.1.0"
        monkeypatch.setenv(clicmds.ENV_TOKEN, TOKEN)
        monkeypatch.setenv(clicmds.ENV_URL, url)
        result = await daemon.igd("connections", "--json", where=[])
        assert result.code == 0
        assert result.json["count"] == 4
    finally:
        await server.close()


async def test_footnotes_and_replace(daemon: Daemon) -> None:
    await daemon.core.set_firewall_settings(FirewallSettings(enabled=False))
    text = (await daemon.ok("connections")).out
    assert "public   on*" in text
    assert text.endswith("* the global firewall mode overrides this flag\n")
    await daemon.ok("mappings", "add", "tcp", "8080", str(LAN_HOST), "--connection", "lan1")
    listing = (await daemon.ok("mappings", "list")).out
    assert " yes*  " in listing
    assert listing.endswith(
        "* enabled but not forwarding: its connection is not shared publicly or firewalled\n"
    )
    replaced = await daemon.ok(
        "mappings", "add", "tcp", "8080", str(LAN_HOST), "81", "--connection", "lan1", "--replace"
    )
    assert replaced.out.startswith("added TCP 8080 -> 198.18.0.10:81 on lan1")


# ---- the client's failures -----------------------------------------------------------------------


async def drain(client: AdminClient, items: list[dict[str, Any]]) -> None:
    """Read the event stream to its end into `items`."""
    async for item in client.stream("/v1/events"):
        items.append(item)


async def test_client_answers_and_failures(daemon: Daemon, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        AdminClient(socket_path=daemon.socket, url="http://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="async with"):
        await AdminClient(socket_path=daemon.socket).get("/v1/status")
    async with AdminClient(socket_path=daemon.socket) as client:
        assert "igd_info" in await client.text("/metrics")
        with pytest.raises(AdminError) as refused:
            await client.text("/metrics?x=1")
        assert refused.value.code == "bad_request"
        with pytest.raises(AdminError) as refused:
            async for _ in client.stream("/v1/events", {"kind": "everything"}):
                pass
        assert (refused.value.status, refused.value.code) == (400, "bad_request")

    async def plain_500(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\nboom")
        await writer.drain()
        writer.close()

    async def bad_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"type": "x"}\nnot json\n')
        await writer.drain()
        writer.close()

    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a"')
        await writer.drain()
        writer.close()

    for handler in (plain_500, bad_stream, cut_short):
        path = tmp_path / f"{handler.__name__}.sock"
        server = await asyncio.start_unix_server(handler, path=str(path))
        async with server, AdminClient(socket_path=path) as client:
            if handler is plain_500:
                with pytest.raises(AdminError) as error:
                    await client.get("/v1/status")
                assert (error.value.code, error.value.message) == ("http_500", "HTTP 500 Oops")
            elif handler is bad_stream:
                items: list[dict[str, Any]] = []
                with pytest.raises(AdminUnreachable, match="sent a line that is not JSON"):
                    await drain(client, items)
                assert items == [{"type": "x"}]
            else:
                with pytest.raises(AdminUnreachable, match="closed the connection"):
                    await client.get("/v1/status")
