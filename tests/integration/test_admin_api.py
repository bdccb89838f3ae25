"""The admin API on a Unix socket in tmp_path (and on 127.0.0.1 with a token), over a lab core.

The core is conftest's: memory backend and store, wan0 198.19.0.1/24 public, lan0 198.18.0.1/24
private, lan1 and br0 unshared, a fake clock. Every endpoint is driven through a real aiohttp
client on the socket; every refused request is checked to change nothing in the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families
from support import LAN_HOST, LAN_HOST2, FakeClock, lab_connections

import igd.admin.routes as routes
from igd.admin.metrics import LatencyRecorder, MetricsSources, merge_request_counts
from igd.admin.routes import (
    ADMIN_APP,
    AdminServer,
    build_admin_app,
    load_openapi,
    start_admin_server,
    status_for,
)
from igd.natcore import (
    BackendError,
    Client,
    ConflictWithOtherMechanismError,
    ConnectionRemoved,
    FirewallNotAllowedError,
    IndexOutOfRangeError,
    InvalidTargetError,
    IPProtocol,
    MappingRemoved,
    MappingRequest,
    NatError,
    NotAuthorizedError,
    NotShareableError,
    ObjectNoLongerValidError,
    Origin,
    QuotaExceededError,
    RemovalReason,
    SharingManager,
    StaticConnectionSource,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend

VERSION = "9.8.7"
STARTED_AGO_S = 3725.0
STEP_TIMEOUT_S = 5.0
JSON_CT = "application/json"


def upnp_requests() -> dict[tuple[str, str, str], int]:
    return {("upnp", "AddPortMapping", "ok"): 3, ("upnp", "AddPortMapping", "718"): 1}


def ssdp_counters() -> dict[str, int]:
    return {
        "received": 40,
        "dropped_destination": 1,
        "dropped_source": 2,
        "dropped_parse": 3,
        "dropped_limit": 4,
        "ignored_own": 5,
        "ignored_notify": 6,
        "unanswered": 7,
        "replies_sent": 8,
        "notifies_sent": 9,
        "send_errors": 0,
        "receive_errors": 0,
        "internal_errors": 0,
    }


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def error(self) -> dict[str, str]:
        error: dict[str, str] = self.json["error"]
        return error


@dataclass
class Api:
    """An aiohttp client on the admin socket, and the app and core behind it."""

    session: aiohttp.ClientSession
    app: web.Application
    core: SharingManager
    socket: Path

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        content_type: str = JSON_CT,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        all_headers = dict(headers or {})
        if data is not None:
            all_headers["Content-Type"] = content_type
        async with self.session.request(method, path, data=data, headers=all_headers) as response:
            return Reply(response.status, response.headers, await response.text())

    async def ok(self, method: str, path: str, body: object = None, status: int = 200) -> Any:
        reply = await self.call(method, path, body)
        assert reply.status == status, reply.text
        assert reply.headers["Content-Type"].startswith(JSON_CT)
        return reply.json


def model(core: SharingManager) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    return (
        tuple(core.mappings()),
        core.connections(),
        core.firewall_settings,
        core.system_update_id,
        core.mapping_count,
    )


@pytest.fixture
def recorder() -> LatencyRecorder:
    latency = LatencyRecorder()
    for seconds in (0.0002, 0.0004, 0.003, 0.2):
        latency.observe(seconds)
    return latency


@pytest.fixture
async def api(
    core: SharingManager, clock: FakeClock, tmp_path: Path, recorder: LatencyRecorder
) -> AsyncIterator[Api]:
    app = build_admin_app(
        core,
        token=None,
        metrics_sources=MetricsSources(
            requests=upnp_requests,
            ssdp=ssdp_counters,
            subscriptions=lambda: 2,
            backend_latency=recorder.snapshot,
        ),
        started_at=clock.now - STARTED_AGO_S,
        version=VERSION,
        clock=clock,
    )
    socket = tmp_path / "igd.sock"
    server = await start_admin_server(app, socket_path=socket)
    connector = aiohttp.UnixConnector(path=str(socket))
    try:
        async with aiohttp.ClientSession(connector=connector, base_url="http://localhost") as s:
            yield Api(s, app, core, socket)
    finally:
        await server.close()


async def add_web(api: Api, **changes: object) -> dict[str, Any]:
    """TCP 8080 -> 198.18.0.10:80 on wan0, as the administrator."""
    body: dict[str, object] = {
        "protocol": "TCP",
        "external_port": 8080,
        "internal_client": str(LAN_HOST),
        "internal_port": 80,
        "connection": "wan0",
        "description": "web",
    }
    body.update(changes)
    result: dict[str, Any] = await api.ok("POST", "/v1/mappings", body, status=201)
    return result


async def add_upnp(core: SharingManager, port: int = 51413) -> None:
    """A LAN client's UDP mapping to itself, as the UPnP front-end would make it."""
    await core.add_mapping(
        MappingRequest(IPProtocol.UDP, port, LAN_HOST2, port, "torrent", lease=3600),
        Client(Origin.UPNP, LAN_HOST2),
    )


# ---- the listener --------------------------------------------------------------------------------


async def test_socket_is_private_to_the_daemons_user(api: Api) -> None:
    info = api.socket.stat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()


async def test_stale_socket_is_replaced_and_removed_on_close(
    core: SharingManager, tmp_path: Path
) -> None:
    socket = tmp_path / "stale.sock"
    first = await start_admin_server(_app(core), socket_path=socket)
    await first.runner.cleanup()  # a crash: the file stays behind
    assert socket.exists()
    second = await start_admin_server(_app(core), socket_path=socket)
    assert stat.S_IMODE(socket.stat().st_mode) == 0o600
    await second.close()
    assert not socket.exists()


def _app(core: SharingManager, token: str | None = None) -> web.Application:
    return build_admin_app(
        core, token=token, metrics_sources=MetricsSources(), started_at=0.0, version=VERSION
    )


async def test_unsafe_listeners_are_refused(core: SharingManager, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a token"):
        await start_admin_server(_app(core), tcp_port=0)
    with pytest.raises(ValueError, match="loopback only"):
        await start_admin_server(_app(core, "t0ken"), tcp_port=0, tcp_host="198.18.0.1")
    with pytest.raises(ValueError, match="socket path or a TCP port"):
        await start_admin_server(_app(core))
    for token in ("", " padded ", "new\nline"):
        with pytest.raises(ValueError, match="admin token"):
            _app(core, token)


async def test_token_on_loopback_tcp(core: SharingManager, tmp_path: Path) -> None:
    token = "s3cret-token"
    app = _app(core, token)
    server: AdminServer = await start_admin_server(
        app, tcp_port=0, socket_path=tmp_path / "both.sock"
    )
    assert server.tcp_address is not None
    host, port = server.tcp_address
    assert host == "127.0.0.1"
    before = model(core)
    try:
        async with aiohttp.ClientSession(base_url=f"http://{host}:{port}") as session:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Basic {token}"},
                {"Authorization": token},
                {"Authorization": f"Bearer {token}x"},
            ):
                for method, path in (
                    ("GET", "/v1/status"),
                    ("GET", "/metrics"),
                    ("GET", "/v1/nowhere"),
                    ("DELETE", "/v1/mappings/TCP/8080"),
                ):
                    async with session.request(method, path, headers=headers) as response:
                        assert response.status == 401, (headers, path)
                        assert response.headers["WWW-Authenticate"] == 'Bearer realm="igd"'
                        body = await response.json()
                        assert body["error"]["code"] == "unauthenticated"
            good = {"Authorization": f"Bearer {token}"}
            async with session.get("/v1/status", headers=good) as response:
                assert response.status == 200
                assert (await response.json())["version"] == VERSION
            async with session.get("/metrics", headers=good) as response:
                assert response.status == 200
        # The token holds on the Unix socket of the same app too.
        connector = aiohttp.UnixConnector(path=str(tmp_path / "both.sock"))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://localhost/v1/status") as response,
        ):
            assert response.status == 401
    finally:
        await server.close()
    assert model(core) == before


# ---- status and connections ----------------------------------------------------------------------


async def test_status(api: Api) -> None:
    await add_web(api)
    await add_upnp(api.core)
    await add_web(api, external_port=8443, enabled=False)
    status = await api.ok("GET", "/v1/status")
    assert status["version"] == VERSION
    assert status["api_version"] == 1
    assert status["uptime_s"] == pytest.approx(STARTED_AGO_S)
    assert status["external_address"] == "198.19.0.1"
    assert status["public_connection"] == "wan0"
    assert status["private_connections"] == ["lan0"]
    assert status["firewall"] == {"enabled": True, "exceptions_not_allowed": False}
    assert status["connections"] == 4
    assert status["mappings"] == {
        "total": 3,
        "enabled": 2,
        "active": 2,
        "by_origin": {"admin": 2, "upnp": 1, "natpmp": 0, "pcp": 0},
        "by_protocol": {"TCP": 2, "UDP": 1},
    }
    assert status["system_update_id"] == api.core.system_update_id


async def test_connections(api: Api) -> None:
    await add_web(api)
    listing = await api.ok("GET", "/v1/connections")
    assert listing["count"] == 4
    by_name = {c["name"]: c for c in listing["connections"]}
    assert [c["name"] for c in listing["connections"]] == ["br0", "lan0", "lan1", "wan0"]
    wan = by_name["wan0"]
    assert wan["role"] == "public"
    assert wan["firewall"] is True
    assert wan["effective_firewall"] is True
    assert wan["addresses"] == ["198.19.0.1/24"]
    assert wan["shareable"] is True
    assert wan["mappings"] == 1
    assert wan["status"] == "connected"
    assert wan["media_type"] == "lan"
    assert "shared" in wan["characteristics"]
    assert "firewalled" in wan["characteristics"]
    assert by_name["lan0"]["role"] == "private"
    assert by_name["lan0"]["firewall"] is False
    assert by_name["lan1"]["role"] is None
    assert by_name["br0"]["shareable"] is False
    assert by_name["br0"]["media_type"] == "bridge"
    for ref in ("wan0", "WAN0", "{" + wan["guid"].upper() + "}", wan["guid"]):
        assert (await api.ok("GET", f"/v1/connections/{ref}"))["guid"] == wan["guid"]


async def test_sharing_roles(api: Api) -> None:
    lan1 = await api.ok("POST", "/v1/connections/lan1/sharing", {"role": "private"})
    assert lan1["role"] == "private"
    assert api.core.role_of(api.core.find_connection(name="lan0").guid) is not None  # MULTIPLE
    await add_web(api)
    public = await api.ok("POST", "/v1/connections/lan1/sharing", {"role": "public"})
    assert public["role"] == "public"
    assert public["firewall"] is True  # R4
    wan = await api.ok("GET", "/v1/connections/wan0")
    assert wan["role"] is None  # R2: displaced
    mapping = await api.ok("GET", "/v1/mappings/TCP/8080")
    assert mapping["enabled"] is False  # R11: the administrator's mapping is disabled
    status = await api.ok("GET", "/v1/status")
    assert status["public_connection"] == "lan1"
    assert status["external_address"] == "198.18.1.1"
    gone = await api.ok("POST", "/v1/connections/lan1/sharing", {"role": None})
    assert gone["role"] is None
    again = await api.ok("POST", "/v1/connections/lan1/sharing", {"role": None})  # R12
    assert again["role"] is None


async def test_firewall_flags(api: Api) -> None:
    lan1 = await api.ok("POST", "/v1/connections/lan1/firewall", {"enabled": True})
    assert lan1["firewall"] is True
    assert lan1["effective_firewall"] is True
    wan = await api.ok("POST", "/v1/connections/wan0/firewall", {"enabled": False})
    assert wan["firewall"] is False
    wan = await api.ok("POST", "/v1/connections/wan0/firewall", {"enabled": False})
    assert wan["firewall"] is False


# ---- mappings ------------------------------------------------------------------------------------


async def test_add_and_read_a_mapping(api: Api, clock: FakeClock) -> None:
    reply = await api.call(
        "POST",
        "/v1/mappings",
        {
            "protocol": "tcp",
            "external_port": 8080,
            "internal_client": str(LAN_HOST),
            "internal_port": 80,
            "connection": "wan0",
            "description": "web",
            "enabled": True,
        },
    )
    assert reply.status == 201, reply.text
    assert reply.headers["Location"] == "/v1/mappings/TCP/8080"
    created = reply.json
    assert created == {
        "protocol": "TCP",
        "external_port": 8080,
        "remote_host": None,
        "internal_client": "198.18.0.10",
        "internal_port": 80,
        "target_name": None,
        "description": "web",
        "enabled": True,
        "active": True,
        "connection": "wan0",
        "connection_guid": str(api.core.find_connection(name="wan0").guid),
        "origin": "admin",
        "owner": None,
        "expires_at": None,
        "remaining_s": None,
        "created_at": clock.now,
    }
    assert await api.ok("GET", "/v1/mappings/TCP/8080") == created
    assert await api.ok("GET", "/v1/mappings/tcp/8080") == created
    listing = await api.ok("GET", "/v1/mappings")
    assert listing == {"mappings": [created], "count": 1}
    (mapping,) = api.core.mappings()
    assert mapping.origin is Origin.ADMIN
    assert mapping.owner is None


async def test_add_defaults_and_options(api: Api, clock: FakeClock) -> None:
    minimal = await api.ok(
        "POST",
        "/v1/mappings",
        {"protocol": "UDP", "external_port": 5000, "internal_client": str(LAN_HOST)},
        status=201,
    )
    assert minimal["connection"] == "wan0"  # the public connection
    assert minimal["internal_port"] == 5000
    assert minimal["enabled"] is True
    assert minimal["description"] == ""
    reply = await api.call(
        "POST",
        "/v1/mappings",
        {
            "protocol": "TCP",
            "external_port": 2222,
            "internal_client": "lanhost",
            "internal_port": 22,
            "enabled": False,
            "remote_host": "198.19.0.100",
            "lease_s": 600,
        },
    )
    assert reply.status == 201, reply.text
    assert reply.headers["Location"] == "/v1/mappings/TCP/2222?remote_host=198.19.0.100"
    named = reply.json
    assert named["target_name"] == "lanhost"
    assert named["internal_client"] == str(LAN_HOST)
    assert named["enabled"] is False
    assert named["active"] is False
    assert named["remote_host"] == "198.19.0.100"
    assert named["expires_at"] == clock.now + 600
    assert named["remaining_s"] == 600
    clock.advance(100)
    assert (await api.ok("GET", "/v1/mappings/TCP/2222"))["remaining_s"] == 500
    wildcard = await add_web(api, external_port=8081, remote_host="0.0.0.0")
    assert wildcard["remote_host"] is None
    on_lan1 = await add_web(api, external_port=8082, connection="lan1")
    assert on_lan1["connection"] == "lan1"
    assert on_lan1["active"] is False  # lan1 is neither shared nor firewalled


async def test_replace_overwrites_the_same_mapping(api: Api) -> None:
    await add_web(api, description="old")
    conflict = await api.call(
        "POST",
        "/v1/mappings",
        {"protocol": "TCP", "external_port": 8080, "internal_client": str(LAN_HOST)},
    )
    assert conflict.status == 409
    assert conflict.error["code"] == "conflict"
    replaced = await add_web(api, description="new", replace=True)
    assert replaced["description"] == "new"
    assert api.core.mapping_count == 1


async def test_add_without_a_public_connection(api: Api) -> None:
    await api.ok("POST", "/v1/connections/wan0/sharing", {"role": None})
    before = model(api.core)
    reply = await api.call(
        "POST",
        "/v1/mappings",
        {"protocol": "TCP", "external_port": 8080, "internal_client": str(LAN_HOST)},
    )
    assert reply.status == 409
    assert reply.error == {
        "code": "conflict",
        "message": "no connection is shared publicly: name one in 'connection'",
    }
    assert model(api.core) == before


async def test_list_filters(api: Api) -> None:
    await add_web(api)
    await add_web(api, external_port=8443, enabled=False)
    await add_upnp(api.core)

    async def ports(query: str) -> list[int]:
        listing = await api.ok("GET", f"/v1/mappings{query}")
        assert listing["count"] == len(listing["mappings"])
        return [m["external_port"] for m in listing["mappings"]]

    assert await ports("") == [8080, 8443, 51413]
    assert await ports("?protocol=UDP") == [51413]
    assert await ports("?protocol=tcp") == [8080, 8443]
    assert await ports("?origin=upnp") == [51413]
    assert await ports("?origin=admin") == [8080, 8443]
    assert await ports("?origin=pcp") == []
    assert await ports(f"?owner={LAN_HOST2}") == [51413]
    assert await ports(f"?owner={LAN_HOST}") == []
    assert await ports("?connection=wan0") == [8080, 8443, 51413]
    assert await ports("?connection=lan1") == []
    assert await ports("?enabled=false") == [8443]
    assert await ports("?enabled=true&protocol=TCP&origin=admin&connection=WAN0") == [8080]


async def test_enable_disable_remove(api: Api) -> None:
    await add_web(api)
    await add_upnp(api.core)
    disabled = await api.ok("POST", "/v1/mappings/TCP/8080/disable")
    assert disabled["enabled"] is False
    assert disabled["active"] is False
    assert (await api.ok("POST", "/v1/mappings/TCP/8080/disable"))["enabled"] is False
    enabled = await api.ok("POST", "/v1/mappings/TCP/8080/enable", {})
    assert enabled["enabled"] is True
    assert enabled["active"] is True
    # The administrator manages every mapping, whatever its origin.
    upnp = await api.ok("POST", "/v1/mappings/UDP/51413/disable")
    assert upnp["origin"] == "upnp"
    assert upnp["enabled"] is False
    removed = await api.ok("DELETE", "/v1/mappings/UDP/51413")
    assert removed["external_port"] == 51413
    assert removed["owner"] == str(LAN_HOST2)
    removed = await api.ok("DELETE", "/v1/mappings/TCP/8080?remote_host=")
    assert removed["external_port"] == 8080
    assert api.core.mapping_count == 0
    assert (await api.call("GET", "/v1/mappings/TCP/8080")).status == 404


async def test_mapping_by_remote_host(api: Api) -> None:
    await add_web(api, remote_host="198.19.0.100")
    assert (await api.ok("GET", "/v1/mappings/TCP/8080"))["remote_host"] == "198.19.0.100"
    exact = await api.ok("GET", "/v1/mappings/TCP/8080?remote_host=198.19.0.100")
    assert exact["remote_host"] == "198.19.0.100"
    for wildcard in ("", "0.0.0.0"):
        reply = await api.call("GET", f"/v1/mappings/TCP/8080?remote_host={wildcard}")
        assert reply.status == 404
        assert (
            reply.error["message"]
            == f"no TCP mapping on port 8080 for remote host {wildcard or '*'}"
        )


# ---- every refusal: a JSON error, one line, nothing changed -------------------------------------

ADD = {"protocol": "TCP", "external_port": 9000, "internal_client": str(LAN_HOST)}
VALID_ADD = json.dumps(ADD)

BAD_REQUESTS: list[tuple[str, str, str, object, int, str]] = [
    # id, method, path, body (dict, bytes or str for a raw body), status, code
    ("json-malformed", "POST", "/v1/mappings", b"{", 400, "bad_request"),
    ("json-array", "POST", "/v1/mappings", b"[]", 400, "bad_request"),
    ("json-string", "POST", "/v1/mappings", b'"TCP"', 400, "bad_request"),
    ("json-nan", "POST", "/v1/mappings", VALID_ADD.replace("9000", "NaN"), 400, "bad_request"),
    (
        "json-duplicate",
        "POST",
        "/v1/mappings",
        '{"protocol":"TCP",' + VALID_ADD[1:],
        400,
        "bad_request",
    ),
    ("json-not-utf8", "POST", "/v1/mappings", b"\xff\xfe{", 400, "bad_request"),
    (
        "json-surrogate",
        "POST",
        "/v1/mappings",
        VALID_ADD[:-1] + ', "description": "\\ud800"}',
        400,
        "bad_request",
    ),
    ("json-deep", "POST", "/v1/mappings", "[" * 5000 + "]" * 5000, 400, "bad_request"),
    ("unknown-field", "POST", "/v1/mappings", {**ADD, "colour": "red"}, 400, "bad_request"),
    (
        "missing-field",
        "POST",
        "/v1/mappings",
        {"protocol": "TCP", "external_port": 9000},
        400,
        "bad_request",
    ),
    ("port-string", "POST", "/v1/mappings", {**ADD, "external_port": "9000"}, 400, "bad_request"),
    ("port-bool", "POST", "/v1/mappings", {**ADD, "external_port": True}, 400, "bad_request"),
    ("port-float", "POST", "/v1/mappings", {**ADD, "external_port": 9000.0}, 400, "bad_request"),
    ("port-zero", "POST", "/v1/mappings", {**ADD, "external_port": 0}, 400, "bad_request"),
    ("port-high", "POST", "/v1/mappings", {**ADD, "internal_port": 65536}, 400, "bad_request"),
    ("protocol-bad", "POST", "/v1/mappings", {**ADD, "protocol": "SCTP"}, 400, "bad_request"),
    ("protocol-case", "POST", "/v1/mappings", {**ADD, "protocol": "Tcp"}, 400, "bad_request"),
    ("protocol-number", "POST", "/v1/mappings", {**ADD, "protocol": 6}, 400, "bad_request"),
    ("enabled-string", "POST", "/v1/mappings", {**ADD, "enabled": "yes"}, 400, "bad_request"),
    ("replace-null", "POST", "/v1/mappings", {**ADD, "replace": None}, 400, "bad_request"),
    ("remote-bad", "POST", "/v1/mappings", {**ADD, "remote_host": "198.19.0"}, 400, "bad_request"),
    ("remote-number", "POST", "/v1/mappings", {**ADD, "remote_host": 7}, 400, "bad_request"),
    ("lease-zero", "POST", "/v1/mappings", {**ADD, "lease_s": 0}, 400, "bad_request"),
    ("lease-float", "POST", "/v1/mappings", {**ADD, "lease_s": 1.5}, 400, "bad_request"),
    (
        "description-long",
        "POST",
        "/v1/mappings",
        {**ADD, "description": "x" * 257},
        400,
        "bad_request",
    ),
    ("description-type", "POST", "/v1/mappings", {**ADD, "description": 5}, 400, "bad_request"),
    (
        "target-bad",
        "POST",
        "/v1/mappings",
        {**ADD, "internal_client": "not a host"},
        400,
        "bad_request",
    ),
    (
        "target-digits",
        "POST",
        "/v1/mappings",
        {**ADD, "internal_client": "198.18.0"},
        400,
        "bad_request",
    ),
    ("target-empty", "POST", "/v1/mappings", {**ADD, "internal_client": ""}, 400, "bad_request"),
    ("connection-type", "POST", "/v1/mappings", {**ADD, "connection": 1}, 400, "bad_request"),
    ("too-large", "POST", "/v1/mappings", {**ADD, "description": "x" * 20000}, 413, "too_large"),
    (
        "conflict",
        "POST",
        "/v1/mappings",
        {**ADD, "external_port": 8080, "internal_client": str(LAN_HOST2)},
        409,
        "conflict",
    ),
    (
        "conflict-mechanism",
        "POST",
        "/v1/mappings",
        {**ADD, "protocol": "UDP", "external_port": 51413},
        409,
        "conflict",
    ),
    (
        "target-wan-side",
        "POST",
        "/v1/mappings",
        {**ADD, "internal_client": "198.19.0.100"},
        422,
        "invalid",
    ),
    (
        "target-broadcast",
        "POST",
        "/v1/mappings",
        {**ADD, "internal_client": "198.18.0.255"},
        422,
        "invalid",
    ),
    (
        "target-unresolved",
        "POST",
        "/v1/mappings",
        {**ADD, "internal_client": "nohost"},
        422,
        "invalid",
    ),
    (
        "description-control",
        "POST",
        "/v1/mappings",
        {**ADD, "description": "a\u0007b"},
        422,
        "invalid",
    ),
    ("connection-unknown", "POST", "/v1/mappings", {**ADD, "connection": "eth9"}, 404, "not_found"),
    ("query-on-add", "POST", "/v1/mappings?replace=true", ADD, 400, "bad_request"),
    ("query-unknown", "GET", "/v1/mappings?colour=red", None, 400, "bad_request"),
    ("query-repeated", "GET", "/v1/mappings?protocol=TCP&protocol=UDP", None, 400, "bad_request"),
    ("filter-protocol", "GET", "/v1/mappings?protocol=icmp", None, 400, "bad_request"),
    ("filter-origin", "GET", "/v1/mappings?origin=windows", None, 400, "bad_request"),
    ("filter-owner", "GET", "/v1/mappings?owner=lanhost", None, 400, "bad_request"),
    ("filter-enabled", "GET", "/v1/mappings?enabled=yes", None, 400, "bad_request"),
    ("filter-connection", "GET", "/v1/mappings?connection=eth9", None, 404, "not_found"),
    ("path-protocol", "GET", "/v1/mappings/icmp/8080", None, 400, "bad_request"),
    ("path-port-word", "GET", "/v1/mappings/TCP/http", None, 400, "bad_request"),
    ("path-port-zero", "DELETE", "/v1/mappings/TCP/0", None, 400, "bad_request"),
    ("path-port-high", "POST", "/v1/mappings/TCP/65536/enable", None, 400, "bad_request"),
    ("path-port-sign", "GET", "/v1/mappings/TCP/+8080", None, 400, "bad_request"),
    ("mapping-missing", "GET", "/v1/mappings/UDP/8080", None, 404, "not_found"),
    ("delete-missing", "DELETE", "/v1/mappings/TCP/9999", None, 404, "not_found"),
    ("enable-missing", "POST", "/v1/mappings/TCP/9999/enable", None, 404, "not_found"),
    (
        "remote-mismatch",
        "DELETE",
        "/v1/mappings/TCP/8080?remote_host=198.19.0.100",
        None,
        404,
        "not_found",
    ),
    (
        "remote-query-bad",
        "DELETE",
        "/v1/mappings/TCP/8080?remote_host=far",
        None,
        400,
        "bad_request",
    ),
    ("mapping-query-unknown", "DELETE", "/v1/mappings/TCP/8080?force=1", None, 400, "bad_request"),
    ("enable-body", "POST", "/v1/mappings/TCP/8080/disable", {"now": True}, 400, "bad_request"),
    ("sharing-role", "POST", "/v1/connections/lan1/sharing", {"role": "both"}, 400, "bad_request"),
    (
        "sharing-role-case",
        "POST",
        "/v1/connections/lan1/sharing",
        {"role": "PUBLIC"},
        400,
        "bad_request",
    ),
    ("sharing-missing", "POST", "/v1/connections/lan1/sharing", {}, 400, "bad_request"),
    ("sharing-empty-body", "POST", "/v1/connections/lan1/sharing", None, 400, "bad_request"),
    (
        "sharing-extra",
        "POST",
        "/v1/connections/lan1/sharing",
        {"role": None, "force": True},
        400,
        "bad_request",
    ),
    (
        "sharing-unknown",
        "POST",
        "/v1/connections/eth9/sharing",
        {"role": "private"},
        404,
        "not_found",
    ),
    (
        "sharing-bridge",
        "POST",
        "/v1/connections/br0/sharing",
        {"role": "public"},
        409,
        "not_shareable",
    ),
    (
        "sharing-text",
        "POST",
        "/v1/connections/lan1/sharing",
        "role=public",
        415,
        "unsupported_media_type",
    ),
    (
        "firewall-private",
        "POST",
        "/v1/connections/lan0/firewall",
        {"enabled": True},
        409,
        "firewall_not_allowed",
    ),
    (
        "firewall-bridge",
        "POST",
        "/v1/connections/br0/firewall",
        {"enabled": True},
        409,
        "firewall_not_allowed",
    ),
    (
        "firewall-type",
        "POST",
        "/v1/connections/lan1/firewall",
        {"enabled": "true"},
        400,
        "bad_request",
    ),
    ("connection-missing", "GET", "/v1/connections/eth9", None, 404, "not_found"),
    ("events-kind", "GET", "/v1/events?kind=everything", None, 400, "bad_request"),
    ("events-limit", "GET", "/v1/events?limit=0", None, 400, "bad_request"),
    ("events-limit-word", "GET", "/v1/events?limit=ten", None, 400, "bad_request"),
    ("unknown-path", "GET", "/v1/nothing", None, 404, "not_found"),
    ("unversioned", "GET", "/status", None, 404, "not_found"),
    ("method", "PUT", "/v1/status", None, 405, "method_not_allowed"),
    ("method-mappings", "PATCH", "/v1/mappings/TCP/8080", None, 405, "method_not_allowed"),
    ("status-query", "GET", "/v1/status?verbose=1", None, 400, "bad_request"),
    ("metrics-query", "GET", "/metrics?name=igd", None, 400, "bad_request"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS],
)
async def test_refusals_are_json_errors_and_change_nothing(
    api: Api, method: str, path: str, body: object, status: int, code: str
) -> None:
    await add_web(api)
    await add_upnp(api.core)
    before = model(api.core)
    if isinstance(body, bytes):
        reply = await api.call(method, path, raw=body)
    elif isinstance(body, str):
        content_type = JSON_CT if body.startswith(("{", "[")) else "text/plain"
        reply = await api.call(method, path, raw=body.encode(), content_type=content_type)
    else:
        reply = await api.call(method, path, body)
    assert (reply.status, reply.error["code"]) == (status, code), reply.text
    assert reply.headers["Content-Type"].startswith(JSON_CT)
    message = reply.error["message"]
    assert message
    assert "\n" not in message
    assert "Traceback" not in message
    assert set(reply.json) == {"error"}
    assert set(reply.error) == {"code", "message"}
    if status == 405:
        assert reply.headers["Allow"]
    assert model(api.core) == before


async def test_backend_failure_is_500_and_rolled_back(
    api: Api, backend: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    before = model(api.core)
    backend.fail_next = 1
    reply = await api.call("POST", "/v1/mappings", ADD)
    assert reply.status == 500
    assert reply.error == {"code": "backend_error", "message": "memory backend told to fail"}
    assert model(api.core) == before


async def test_our_own_bug_is_500_without_details(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.core, "connections", broken)
    before_mappings = tuple(api.core.mappings())
    with caplog.at_level(logging.ERROR, logger="igd.admin.routes"):
        reply = await api.call("GET", "/v1/connections")
    assert reply.status == 500
    assert reply.error == {"code": "internal", "message": "internal error; see the daemon's log"}
    assert "secret internals" in caplog.text
    assert tuple(api.core.mappings()) == before_mappings


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (IndexOutOfRangeError("x"), 404, "not_found"),
        (ConflictWithOtherMechanismError("x"), 409, "conflict"),
        (QuotaExceededError("x"), 409, "quota_exceeded"),
        (NotShareableError("x"), 409, "not_shareable"),
        (FirewallNotAllowedError("x"), 409, "firewall_not_allowed"),
        (NotAuthorizedError("x"), 403, "not_authorized"),
        (InvalidTargetError("x"), 422, "invalid"),
        (ObjectNoLongerValidError("x"), 410, "gone"),
        (BackendError("x"), 500, "backend_error"),
        (NatError("x"), 500, "internal"),
    ],
)
def test_core_errors_map_to_statuses(error: NatError, status: int, code: str) -> None:
    assert status_for(error) == (status, code)


# ---- events --------------------------------------------------------------------------------------


class EventReader:
    """Lines of an open GET /v1/events response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            line = await self.response.content.readline()
        assert line.endswith(b"\n"), line
        item: dict[str, Any] = json.loads(line)
        return item

    async def at_end(self) -> bool:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            return await self.response.content.readline() == b""


async def open_events(api: Api, query: str = "") -> tuple[aiohttp.ClientResponse, EventReader]:
    response = await api.session.get(f"/v1/events{query}")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    reader = EventReader(response)
    assert (await reader.next())["type"] == "subscribed"
    return response, reader


async def test_event_stream(api: Api, clock: FakeClock) -> None:
    response, events = await open_events(api)
    async with response:
        created = await add_web(api)
        added = await events.next()
        assert added == {"type": "mapping_added", "time": clock.now, "mapping": created}
        assert await events.next() == {
            "type": "number_of_entries_changed",
            "time": clock.now,
            "count": 1,
        }
        await api.ok("POST", "/v1/mappings/TCP/8080/disable")
        changed = await events.next()
        assert changed["type"] == "mapping_changed"
        assert changed["reason"] == "disabled"
        assert changed["old"]["enabled"] is True
        assert changed["new"]["enabled"] is False
        await api.ok("DELETE", "/v1/mappings/TCP/8080")
        removed = await events.next()
        assert removed["type"] == "mapping_removed"
        assert removed["reason"] == "deleted"
        assert (await events.next())["count"] == 0
        await api.ok("POST", "/v1/connections/lan1/firewall", {"enabled": True})
        assert await events.next() == {
            "type": "firewall_changed",
            "time": clock.now,
            "connection": "lan1",
            "interface_enabled": True,
            "effective_enabled": True,
        }
        await api.ok("POST", "/v1/connections/lan1/sharing", {"role": "public"})
        kinds = [await events.next() for _ in range(3)]
        assert [k["type"] for k in kinds] == [
            "sharing_changed",
            "sharing_changed",
            "external_address_changed",
        ]
        assert kinds[0]["connection"] == "wan0"
        assert kinds[0]["role"] is None
        assert kinds[0]["cause"] == "displaced"
        assert kinds[1]["connection"] == "lan1"
        assert kinds[1]["role"] == "public"
        assert kinds[1]["connection_guid"] == str(api.core.find_connection(name="lan1").guid)
        assert kinds[2]["old"] == "198.19.0.1"
        assert kinds[2]["new"] == "198.18.1.1"
        assert kinds[2]["connection"] == "lan1"


async def test_event_kinds_and_limit(api: Api) -> None:
    response, events = await open_events(api, "?kind=mapping_removed&kind=mapping_added&limit=2")
    async with response:
        await add_web(api)
        await api.ok("POST", "/v1/mappings/TCP/8080/disable")
        await api.ok("DELETE", "/v1/mappings/TCP/8080")
        assert (await events.next())["type"] == "mapping_added"
        assert (await events.next())["type"] == "mapping_removed"
        assert await events.at_end()
    assert api.app[ADMIN_APP].streams == set()


async def test_event_heartbeat(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "EVENT_HEARTBEAT_S", 0.05)
    response, events = await open_events(api)
    async with response:
        assert (await events.next())["type"] == "heartbeat"
        await add_web(api)
        item = await events.next()
        while item["type"] == "heartbeat":
            item = await events.next()
        assert item["type"] == "mapping_added"


async def test_event_streams_are_bounded(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "MAX_EVENT_STREAMS", 1)
    response, _ = await open_events(api)
    async with response:
        busy = await api.call("GET", "/v1/events")
        assert busy.status == 503
        assert busy.error["code"] == "busy"
        metrics = await api.call("GET", "/metrics")
        assert "igd_admin_event_streams 1.0" in metrics.text
    # The reader went away: its slot comes back.
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while api.app[ADMIN_APP].streams:
            await add_web(api, external_port=9100, replace=True)  # wakes the stream to notice
            await asyncio.sleep(0.01)
    response, _ = await open_events(api)
    response.close()


async def test_event_streams_end_when_the_listener_stops(
    core: SharingManager, tmp_path: Path
) -> None:
    socket = tmp_path / "stop.sock"
    server = await start_admin_server(_app(core), socket_path=socket)
    connector = aiohttp.UnixConnector(path=str(socket))
    async with (
        aiohttp.ClientSession(connector=connector, base_url="http://localhost") as session,
        session.get("/v1/events") as response,
    ):
        reader = EventReader(response)
        assert (await reader.next())["type"] == "subscribed"
        await server.close()
        assert await reader.at_end()


async def test_events_dropped_when_the_reader_falls_behind(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "EVENT_QUEUE_EVENTS", 2)
    response, events = await open_events(api, "?kind=mapping_added")
    async with response:
        guid = api.core.find_connection(name="wan0").guid
        await asyncio.gather(  # one batch: six events published at once into a queue of two
            *(
                api.core.add_connection_mapping(
                    guid, MappingRequest(IPProtocol.TCP, port, LAN_HOST, port)
                )
                for port in range(9000, 9006)
            )
        )
        first = await events.next()
        assert first["type"] == "events_dropped"
        assert first["count"] >= 1


# ---- metrics and counters ------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the Prometheus text format."""
    result: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


async def test_metrics(api: Api) -> None:
    await add_web(api)
    await add_upnp(api.core)
    await api.ok("POST", "/v1/mappings/TCP/8080/disable")
    await api.call("GET", "/v1/mappings/TCP/1")
    reply = await api.call("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    values = samples(reply.text)
    assert values[("igd_info", (("version", VERSION),))] == 1
    assert values[("igd_uptime_seconds", ())] == pytest.approx(STARTED_AGO_S)
    assert values[("igd_mappings", (("origin", "admin"), ("protocol", "TCP")))] == 1
    assert values[("igd_mappings", (("origin", "upnp"), ("protocol", "UDP")))] == 1
    assert values[("igd_mappings", (("origin", "pcp"), ("protocol", "TCP")))] == 0
    assert values[("igd_mappings_enabled", (("origin", "admin"), ("protocol", "TCP")))] == 0
    assert values[("igd_connections", (("role", "none"),))] == 2
    assert values[("igd_connections", (("role", "public"),))] == 1
    upnp_ok = (("action", "AddPortMapping"), ("protocol", "upnp"), ("result", "ok"))
    assert values[("igd_requests_total", upnp_ok)] == 3
    admin_add = (("action", "add_mapping"), ("protocol", "admin"), ("result", "ok"))
    assert values[("igd_requests_total", admin_add)] == 1
    missing = (("action", "get_mapping"), ("protocol", "admin"), ("result", "not_found"))
    assert values[("igd_requests_total", missing)] == 1
    assert values[("igd_ssdp_packets_received_total", ())] == 40
    assert values[("igd_ssdp_packets_sent_total", (("kind", "reply"),))] == 8
    assert values[("igd_ssdp_packets_sent_total", (("kind", "notify"),))] == 9
    for reason, count in (("destination", 1), ("source", 2), ("parse", 3), ("limit", 4)):
        assert values[("igd_ssdp_packets_dropped_total", (("reason", reason),))] == count
    assert values[("igd_ssdp_packets_ignored_total", (("reason", "unanswered"),))] == 7
    assert values[("igd_ssdp_errors_total", (("kind", "send"),))] == 0
    assert values[("igd_gena_subscriptions", ())] == 2
    assert values[("igd_backend_transaction_seconds_count", ())] == 4
    assert values[("igd_backend_transaction_seconds_bucket", (("le", "0.0005"),))] == 2
    assert values[("igd_backend_transaction_seconds_bucket", (("le", "0.005"),))] == 3
    assert values[("igd_backend_transaction_seconds_bucket", (("le", "+Inf"),))] == 4
    assert values[("igd_backend_transaction_seconds_sum", ())] == pytest.approx(0.2036)
    add_count = ("igd_admin_change_seconds_count", (("operation", "add_mapping"),))
    assert values[add_count] == 1
    assert values[("igd_admin_change_seconds_count", (("operation", "disable_mapping"),))] == 1
    assert values[("igd_system_update_id", ())] == api.core.system_update_id
    assert ("process_cpu_seconds_total", ()) in values


async def test_metrics_count_lease_expiries(api: Api, clock: FakeClock) -> None:
    await add_web(api, lease_s=10)
    await add_upnp(api.core)
    await api.ok("DELETE", "/v1/mappings/UDP/51413")
    clock.advance(11)
    removed = api.core.events({MappingRemoved})
    async with asyncio.timeout(STEP_TIMEOUT_S):  # the lease timer looks at least every second
        expired = await anext(removed)
    removed.close()
    assert isinstance(expired, MappingRemoved)
    assert expired.reason is RemovalReason.EXPIRED
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while True:
            values = samples((await api.call("GET", "/metrics")).text)
            if values[("igd_lease_expiries_total", (("origin", "admin"),))] == 1:
                break
            await asyncio.sleep(0.02)
    assert values[("igd_lease_expiries_total", (("origin", "upnp"),))] == 0
    deleted = (("origin", "upnp"), ("reason", "deleted"))
    assert values[("igd_mappings_removed_total", deleted)] == 1
    counters = await api.ok("GET", "/v1/counters")
    assert counters["lease_expiries"] == 1
    assert counters["mappings_removed"] == {"deleted": 1, "expired": 1}


async def test_absent_sources_leave_their_metrics_out(core: SharingManager, tmp_path: Path) -> None:
    socket = tmp_path / "bare.sock"
    server = await start_admin_server(_app(core), socket_path=socket)
    connector = aiohttp.UnixConnector(path=str(socket))
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get("http://localhost/metrics") as response:
                names = {name for name, _ in samples(await response.text())}
            async with session.get("http://localhost/v1/counters") as response:
                counters = await response.json()
    finally:
        await server.close()
    assert "igd_mappings" in names
    assert "igd_lease_expiries_total" in names
    for absent in (
        "igd_ssdp_packets_received_total",
        "igd_gena_subscriptions",
        "igd_backend_transaction_seconds_count",
    ):
        assert absent not in names
    assert counters["ssdp"] is None
    assert counters["subscriptions"] is None
    assert counters["backend_transactions"] is None
    assert counters["requests"] == [
        {"protocol": "admin", "action": "metrics", "result": "ok", "count": 1}
    ]


async def test_counters(api: Api) -> None:
    await api.call("GET", "/v1/nothing")
    counters = await api.ok("GET", "/v1/counters")
    assert counters["ssdp"] == ssdp_counters()
    assert counters["subscriptions"] == 2
    assert counters["backend_transactions"] == {"count": 4, "sum_s": pytest.approx(0.2036)}
    assert counters["event_streams"] == 0
    assert counters["lease_expiries"] == 0
    requests = {(r["protocol"], r["action"], r["result"]): r["count"] for r in counters["requests"]}
    assert requests == {
        ("upnp", "AddPortMapping", "ok"): 3,
        ("upnp", "AddPortMapping", "718"): 1,
        ("admin", "(unknown)", "not_found"): 1,
    }


# ---- the document --------------------------------------------------------------------------------


async def test_openapi_document_is_served_and_matches_the_routes(api: Api) -> None:
    reply = await api.call("GET", "/v1/openapi.json")
    assert reply.status == 200
    document = reply.json
    assert reply.text.encode() == load_openapi()
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = set()
    for resource in api.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        for route in resource:
            served.add((route.method, path))
    assert documented == served
    ids = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
    names = {route.name for resource in api.app.router.resources() for route in resource}
    assert ids == names


async def test_connection_events(api: Api, source: StaticConnectionSource) -> None:
    response, events = await open_events(api, "?kind=connection_added&kind=connection_removed")
    async with response:
        connections = lab_connections()
        source.update([*connections, make_connection("lan2", addresses=["198.18.2.1/24"])])
        added = await events.next()
        assert added["type"] == "connection_added"
        assert added["connection"]["name"] == "lan2"
        assert added["connection"]["role"] is None
        source.update([c for c in connections if c.name != "lan1"])
        kinds = [await events.next(), await events.next()]
        assert {(e["type"], e["connection"]["name"]) for e in kinds} == {
            ("connection_removed", "lan1"),
            ("connection_removed", "lan2"),
        }


async def test_events_of_a_vanished_connection(
    api: Api, source: StaticConnectionSource, clock: FakeClock
) -> None:
    lan1 = api.core.find_connection(name="lan1").guid
    await api.ok("POST", "/v1/connections/lan1/firewall", {"enabled": True})
    await add_web(api, connection="lan1", external_port=9000)
    response, events = await open_events(api, "?kind=mapping_removed&kind=mapping_changed")
    async with response:
        removed = api.core.events({ConnectionRemoved})
        source.update([c for c in lab_connections() if c.name != "lan1"])
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await anext(removed)
        removed.close()
        await api.ok("POST", "/v1/mappings/TCP/9000/disable")
        changed = await events.next()
        assert changed["new"]["connection"] is None
        assert changed["new"]["connection_guid"] == str(lan1)
        listing = await api.ok("GET", "/v1/mappings")
        assert listing["mappings"][0]["connection"] is None


async def test_metrics_watcher_counts_what_it_missed(
    core: SharingManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "EVENT_QUEUE_EVENTS", 2)
    app = _app(core)
    server = await start_admin_server(app, socket_path=tmp_path / "watch.sock")
    try:
        guid = core.find_connection(name="wan0").guid
        for port in range(9000, 9006):
            await core.add_connection_mapping(
                guid, MappingRequest(IPProtocol.TCP, port, LAN_HOST, port)
            )
        await core.remove_mappings_in_range(9000, 9005, IPProtocol.TCP, Client(Origin.ADMIN))
        counters = app[ADMIN_APP].counters
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while counters.events_dropped == 0:  # noqa: ASYNC110 - the watcher is another task
                await asyncio.sleep(0.01)
        assert counters.events_dropped + sum(counters.removed.values()) == 6
    finally:
        await server.close()


async def test_a_listener_that_cannot_bind_releases_everything(
    core: SharingManager, tmp_path: Path
) -> None:
    with pytest.raises(OSError, match="No such file or directory"):
        await start_admin_server(_app(core), socket_path=tmp_path / "missing" / "igd.sock")
    first = await start_admin_server(_app(core, "t0ken"), tcp_port=0)
    assert first.tcp_address is not None
    try:
        with pytest.raises(OSError, match="address already in use"):
            await start_admin_server(_app(core, "t0ken"), tcp_port=first.tcp_address[1])
    finally:
        await first.close()


def test_merged_request_sources() -> None:
    merged = merge_request_counts(upnp_requests, lambda: {("pcp", "MAP", "SUCCESS"): 2})
    assert merged() == {**upnp_requests(), ("pcp", "MAP", "SUCCESS"): 2}


def test_the_package_resolves_names_lazily() -> None:
    import igd.admin

    assert igd.admin.build_admin_app is build_admin_app
    assert igd.admin.MetricsSources is MetricsSources
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = igd.admin.nothing
