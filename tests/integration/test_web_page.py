"""The status page's HTTP surface over a real core (issue 6): JSON, live events, auth, CSRF, CSP.

The core is the shared fixture (wan0 198.19.0.1/24 public, lan0 198.18.0.1/24 private, memory
backend, fake clock); the page runs in a bare aiohttp app on 127.0.0.1 through aiohttp's test
server, with no gate in front, so its own checks are what is tested.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from ipaddress import IPv4Address
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support import LAN_HOST, LAN_HOST2, FakeClock

from igd.natcore import (
    Client,
    IPProtocol,
    MappingAdded,
    MappingKey,
    MappingRequest,
    NumberOfEntriesChanged,
    Origin,
    SharingCause,
    SharingChanged,
    SharingConnectionType,
    SharingManager,
)
from igd.web import MAX_DELTA_OPS, dumps, mapping_ops, parse_role
from igd.web.routes import CONTENT_SECURITY_POLICY, StatusPage, build_web_routes

TOKEN = "s3cret-admin-token-0123456789"
BASE = "/status"
STEP_TIMEOUT_S = 5.0
UPNP = Client(Origin.UPNP, LAN_HOST)
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp;\"'"


class Wan:
    """Counters the test can move."""

    def __init__(self) -> None:
        self.value = (1000, 2000, 10, 20)
        self.calls = 0

    def __call__(self) -> tuple[int, int, int, int]:
        self.calls += 1
        return self.value


def request(port: int, description: str = "game", lease: float | None = 3600) -> MappingRequest:
    return MappingRequest(
        protocol=IPProtocol.TCP,
        external_port=port,
        internal_client=LAN_HOST,
        internal_port=port,
        description=description,
        lease=lease,
    )


@asynccontextmanager
async def serve(page: StatusPage) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    page.install(app)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def wan() -> Wan:
    return Wan()


@pytest.fixture
def page(core: SharingManager, wan: Wan) -> StatusPage:
    """The page with an admin token and WAN counters."""
    return StatusPage(core, wan_counters=wan, admin_token=TOKEN, title="Lab")


@pytest.fixture
async def client(page: StatusPage) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with serve(page) as c:
        yield c


@pytest.fixture
async def readonly(core: SharingManager) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The page without an admin token (the default) and without counters."""
    async with serve(StatusPage(core, wan_counters=None, admin_token=None)) as c:
        yield c


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Sse:
    """A minimal Server-Sent Events reader over an aiohttp response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, wait_s: float = STEP_TIMEOUT_S) -> tuple[str, Any]:
        """The next (event, data) pair, skipping comments and the retry field."""
        async with asyncio.timeout(wait_s):
            while True:
                block = await self.response.content.readuntil(b"\n\n")
                if not block:
                    raise EOFError("the stream ended")
                event, data = "message", None
                for line in block.decode().splitlines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                if data is not None:
                    return event, data

    async def raw(self, wait_s: float = STEP_TIMEOUT_S) -> bytes:
        async with asyncio.timeout(wait_s):
            return await self.response.content.readuntil(b"\n\n")


@asynccontextmanager
async def events(
    client: TestClient[web.Request, web.Application],
) -> AsyncIterator[Sse]:
    response = await client.get(f"{BASE}/api/events")
    try:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        yield Sse(response)
    finally:
        response.close()


# ---- the page and its assets -------------------------------------------------------------------


async def test_page_is_served_with_a_strict_csp(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get(f"{BASE}/")
    assert response.status == 200
    assert response.content_type == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = await response.text()
    assert '<script src="static/app.js" defer></script>' in html
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, "no inline script"
    assert re.search(r"\son[a-z]+\s*=", html) is None, "no inline event handler"
    assert "style=" not in html, "no inline style"


async def test_base_path_redirects_and_unknown_paths(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get(BASE, allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == f"{BASE}/"
    assert (await client.get(f"{BASE}/static/../routes.py")).status == 404
    assert (await client.get(f"{BASE}/static/nope.js")).status == 404
    assert (await client.get(f"{BASE}/api/mappings/TCP/1/delete")).status == 405


@pytest.mark.parametrize(
    ("asset", "content_type"),
    [("app.js", "text/javascript"), ("style.css", "text/css"), ("icon.svg", "image/svg+xml")],
)
async def test_assets_with_etags(
    client: TestClient[web.Request, web.Application], asset: str, content_type: str
) -> None:
    response = await client.get(f"{BASE}/static/{asset}")
    assert response.status == 200
    assert response.content_type == content_type
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    etag = response.headers["ETag"]
    again = await client.get(f"{BASE}/static/{asset}", headers={"If-None-Match": etag})
    assert again.status == 304


def static_text(name: str) -> str:
    return resources.files("igd.web").joinpath("static", name).read_text(encoding="utf-8")


def test_no_external_network_resources() -> None:
    """Everything is served by the daemon: no CDN, no web font, no absolute URL anywhere."""
    for name in ("index.html", "app.js", "style.css"):
        text = static_text(name)
        assert re.search(r"(?i)(https?|wss?|ftp):", text) is None, f"{name} names an absolute URL"
        assert re.search(r"[\"'`(=]\s*//", text) is None, f"{name} has a protocol-relative URL"
        assert "@import" not in text, name
        assert "@font-face" not in text, name
    svg = static_text("icon.svg")
    assert re.findall(r"https?://[^\"']+", svg) == ["http://www.w3.org/2000/svg"]
    assert "href=" not in svg.replace('fill="url(#g)"', "")


def test_script_never_writes_markup() -> None:
    """Values reach the DOM through textContent and setAttribute only."""
    script = static_text("app.js")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "new Function" not in script
    assert 'setTimeout("' not in script
    assert 'setInterval("' not in script


# ---- the JSON snapshot -------------------------------------------------------------------------


async def test_state_json(
    client: TestClient[web.Request, web.Application],
    core: SharingManager,
    clock: FakeClock,
    wan: Wan,
) -> None:
    await core.add_mapping(request(40000), UPNP)
    await core.add_mapping(
        MappingRequest(IPProtocol.UDP, 5000, LAN_HOST2, 5001, "permanent one"), Client(Origin.ADMIN)
    )
    clock.advance(100)
    response = await client.get(f"{BASE}/api/state")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "Access-Control-Allow-Origin" not in response.headers
    state = await response.json()
    assert state["title"] == "Lab"
    assert state["admin"] is True
    assert state["external_address"] == "198.19.0.1"
    assert state["counters"] == {
        "bytes_sent": 1000,
        "bytes_received": 2000,
        "packets_sent": 10,
        "packets_received": 20,
    }
    assert state["system_update_id"] == core.system_update_id > 0
    assert state["mapping_count"] == 2
    roles = {c["name"]: c["role"] for c in state["connections"]}
    assert roles == {"wan0": "public", "lan0": "private", "lan1": None, "br0": None}
    wan0 = next(c for c in state["connections"] if c["name"] == "wan0")
    assert wan0["addresses"] == ["198.19.0.1/24"]
    assert wan0["firewall"] is True
    assert wan0["effective_firewall"] is True
    assert wan0["shareable"] is True
    assert wan0["status"] == "connected"
    tcp, udp = state["mappings"]  # key order: TCP (6) before UDP (17)
    assert tcp == {
        "id": "TCP/40000",
        "protocol": "TCP",
        "external_port": 40000,
        "remote_host": None,
        "internal_client": str(LAN_HOST),
        "internal_port": 40000,
        "target_name": None,
        "description": "game",
        "owner": str(LAN_HOST),
        "origin": "upnp",
        "enabled": True,
        "active": True,
        "permanent": False,
        "remaining": 3500,
        "connection": str(core.find_connection(name="wan0").guid),
        "connection_name": "wan0",
        "created_at": clock.now - 100,
    }
    assert udp["origin"] == "admin"
    assert udp["owner"] is None
    assert udp["permanent"] is True
    assert udp["remaining"] is None


async def test_state_without_counters_or_token(
    readonly: TestClient[web.Request, web.Application],
) -> None:
    state = await (await readonly.get(f"{BASE}/api/state")).json()
    assert state["counters"] is None
    assert state["admin"] is False
    assert state["mappings"] == []


async def test_hostile_description_is_escaped(
    client: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    """Markup in a description stays data: no raw <, > or & in any answer."""
    await core.add_mapping(request(40001, HOSTILE), UPNP)
    response = await client.get(f"{BASE}/api/state")
    body = await response.text()
    for raw in ("<", ">", "&"):
        assert raw not in body
    assert "\\u003cscript\\u003e" in body
    state = json.loads(body)
    assert state["mappings"][0]["description"] == HOSTILE
    async with events(client) as stream:
        event, data = await stream.next()
        assert event == "snapshot"
        assert data["mappings"][0]["description"] == HOSTILE
    assert json.loads(dumps({"d": HOSTILE})) == {"d": HOSTILE}


# ---- live events -------------------------------------------------------------------------------


async def test_events_deliver_added_and_removed_mappings(
    client: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    async with events(client) as stream:
        event, data = await stream.next()
        assert event == "snapshot"
        assert data["mappings"] == []
        await core.add_mapping(request(40000), UPNP)
        event, data = await stream.next()
        assert event == "mappings"
        assert data["mapping_count"] == 1
        assert data["system_update_id"] == core.system_update_id
        [op] = data["ops"]
        assert op["op"] == "put"
        assert op["mapping"]["id"] == "TCP/40000"
        assert op["mapping"]["owner"] == str(LAN_HOST)
        await core.add_mapping(request(40000, "renewed", lease=60), UPNP)
        event, data = await stream.next()
        assert [o["op"] for o in data["ops"]] == ["put"]
        assert data["ops"][0]["mapping"]["remaining"] == 60
        await core.remove_mapping(MappingKey(IPProtocol.TCP, 40000), UPNP)
        event, data = await stream.next()
        assert event == "mappings"
        assert data["mapping_count"] == 0
        assert data["ops"] == [{"op": "remove", "id": "TCP/40000", "reason": "deleted"}]


async def test_events_coalesce_a_burst(
    client: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    async with events(client) as stream:
        await stream.next()
        await asyncio.gather(*(core.add_mapping(request(41000 + i), UPNP) for i in range(20)))
        seen: set[str] = set()
        messages = 0
        while len(seen) < 20:
            event, data = await stream.next()
            assert event == "mappings"
            seen.update(op["mapping"]["id"] for op in data["ops"])
            messages += 1
        assert messages < 20


async def test_other_events_push_a_snapshot(
    client: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    async with events(client) as stream:
        await stream.next()
        lan1 = core.find_connection(name="lan1")
        await core.enable_sharing(lan1.guid, SharingConnectionType.PRIVATE)
        event, data = await stream.next()
        assert event == "snapshot"
        assert {c["name"]: c["role"] for c in data["connections"]}["lan1"] == "private"


async def test_counters_and_heartbeats(core: SharingManager, wan: Wan) -> None:
    page = StatusPage(core, wan_counters=wan, heartbeat_s=0.3, counters_s=0.2)
    async with serve(page) as client, events(client) as stream:
        event, data = await stream.next()
        assert data["counters"]["bytes_sent"] == 1000
        assert await stream.raw() == b": keep-alive\n\n"
        wan.value = (5000, 6000, 50, 60)
        event, data = await stream.next(wait_s=4)
        assert event == "counters"
        assert data["counters"]["bytes_received"] == 6000


async def test_counters_failure_is_reported_as_none(core: SharingManager) -> None:
    def broken() -> tuple[int, int, int, int]:
        raise OSError("gone")

    async with serve(StatusPage(core, wan_counters=broken)) as client:
        state = await (await client.get(f"{BASE}/api/state")).json()
        assert state["counters"] is None


async def test_stream_limit_and_close(core: SharingManager) -> None:
    page = StatusPage(core, max_streams=1)
    async with serve(page) as client, events(client) as stream:
        await stream.next()
        assert page.stream_count == 1
        busy = await client.get(f"{BASE}/api/events")
        assert busy.status == 503
        assert busy.headers["Retry-After"] == "5"
        await page.aclose()
        with pytest.raises((EOFError, asyncio.IncompleteReadError, aiohttp.ClientPayloadError)):
            await stream.next(wait_s=2)
        assert page.stream_count == 0
        assert (await client.get(f"{BASE}/api/events")).status == 503


async def test_app_shutdown_ends_streams_at_once(core: SharingManager) -> None:
    page = StatusPage(core)
    app = web.Application()
    page.install(app)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        response = await session.get(server.make_url(f"{BASE}/api/events"))
        await Sse(response).next()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.close()
        assert loop.time() - started < 3.0
        assert page.stream_count == 0
        response.close()


async def test_core_closing_ends_streams(
    client: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    async with events(client) as stream:
        await stream.next()
        await core.aclose()
        with pytest.raises((EOFError, asyncio.IncompleteReadError, aiohttp.ClientPayloadError)):
            await stream.next(wait_s=3)


async def test_client_going_away_frees_its_stream(
    client: TestClient[web.Request, web.Application], page: StatusPage
) -> None:
    async with events(client) as stream:
        await stream.next()
        assert page.stream_count == 1
    for _ in range(60):  # noticed within a tick, without any event to send
        if not page.stream_count:
            break
        await asyncio.sleep(0.05)
    assert page.stream_count == 0


# ---- admin actions: auth and CSRF --------------------------------------------------------------


async def test_read_only_without_a_token(
    readonly: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    await core.add_mapping(request(40000), UPNP)
    for path in (f"{BASE}/api/mappings/TCP/40000/delete", f"{BASE}/api/auth"):
        response = await readonly.post(path, headers=bearer())
        assert response.status == 403
        assert "read-only" in await response.text()
    assert core.mapping_count == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong-token-wrong-token-wrong"),
        bearer(TOKEN + "x"),
        bearer(""),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Cookie": f"token={TOKEN}"},
    ],
    ids=["none", "wrong", "longer", "empty", "basic", "no-scheme", "cookie"],
)
async def test_wrong_or_missing_token_is_401(
    client: TestClient[web.Request, web.Application],
    core: SharingManager,
    headers: dict[str, str],
) -> None:
    await core.add_mapping(request(40000), UPNP)
    response = await client.post(f"{BASE}/api/mappings/TCP/40000/delete", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert core.mapping_count == 1
    assert (await client.post(f"{BASE}/api/auth", headers=headers)).status == 401


async def test_right_token_deletes(
    client: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    await core.add_mapping(request(40000), UPNP)
    assert (await client.post(f"{BASE}/api/auth", headers=bearer())).status == 204
    async with events(client) as stream:
        await stream.next()
        response = await client.post(f"{BASE}/api/mappings/tcp/40000/delete", headers=bearer())
        assert response.status == 200
        assert (await response.json())["removed"]["id"] == "TCP/40000"
        assert core.mapping_count == 0
        _event, data = await stream.next()
        assert data["ops"] == [{"op": "remove", "id": "TCP/40000", "reason": "deleted"}]
    again = await client.post(f"{BASE}/api/mappings/TCP/40000/delete", headers=bearer())
    assert again.status == 404


async def test_delete_with_remote_host_and_bad_arguments(
    client: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    remote = "203.0.113.7"
    await core.add_mapping(
        MappingRequest(IPProtocol.UDP, 40002, LAN_HOST, 40002, remote_host=IPv4Address(remote)),
        UPNP,
    )
    base = f"{BASE}/api/mappings"
    for path, status in [
        (f"{base}/UDP/40002/delete", 404),  # the wildcard key is another mapping (WIP-10)
        (f"{base}/ICMP/40002/delete", 400),
        (f"{base}/UDP/0/delete", 400),
        (f"{base}/UDP/70000/delete", 400),
        (f"{base}/UDP/4e4/delete", 400),
        (f"{base}/UDP/40002/delete?remote_host=nope", 400),
        (f"{base}/UDP/40002/delete?remote_host={remote}", 200),
    ]:
        response = await client.post(path, headers=bearer())
        assert response.status == status, path
        assert response.content_type == "application/json"
    assert core.mapping_count == 0


@pytest.mark.parametrize(
    ("origin", "fetch_site", "allowed"),
    [
        (None, None, True),
        ("same", "same-origin", True),
        ("http://evil.example", None, False),
        ("http://evil.example", "cross-site", False),
        ("null", None, False),
        ("same:1", None, False),  # another port of our host
        ("https-same", None, False),
        (None, "cross-site", False),
        (None, "same-site", False),
        ("not a url", None, False),
    ],
)
async def test_origin_check(
    client: TestClient[web.Request, web.Application],
    core: SharingManager,
    origin: str | None,
    fetch_site: str | None,
    allowed: bool,
) -> None:
    """CSRF: a foreign Origin or cross-site fetch metadata is 403, even with the right token."""
    await core.add_mapping(request(40000), UPNP)
    assert client.port is not None
    host = f"127.0.0.1:{client.port}"
    headers = bearer()
    if origin == "same":
        headers["Origin"] = f"http://{host}"
    elif origin == "same:1":
        headers["Origin"] = f"http://127.0.0.1:{client.port + 1}"
    elif origin == "https-same":
        headers["Origin"] = f"https://{host}"
    elif origin is not None:
        headers["Origin"] = origin
    if fetch_site is not None:
        headers["Sec-Fetch-Site"] = fetch_site
    response = await client.post(f"{BASE}/api/mappings/TCP/40000/delete", headers=headers)
    assert response.status == (200 if allowed else 403)
    assert core.mapping_count == (0 if allowed else 1)
    if not allowed:
        assert "cross-origin" in await response.text()
        state = await client.get(f"{BASE}/api/state", headers=headers)
        assert state.status == 403
        events_response = await client.get(f"{BASE}/api/events", headers=headers)
        assert events_response.status == 403
        # The page itself may be opened from a link on another site.
        assert (await client.get(f"{BASE}/", headers=headers)).status == 200


async def test_sharing_changes(
    client: TestClient[web.Request, web.Application], core: SharingManager
) -> None:
    url = f"{BASE}/api/connections/lan1/sharing"
    response = await client.post(url, json={"role": "private"}, headers=bearer())
    assert response.status == 200
    assert (await response.json())["connection"]["role"] == "private"
    assert core.role_of(core.find_connection(name="lan1").guid) is SharingConnectionType.PRIVATE
    response = await client.post(url, json={"role": None}, headers=bearer())
    assert response.status == 200
    assert (await response.json())["connection"]["role"] is None
    for path, body, status in [
        (url, {"role": "everyone"}, 400),
        (url, {"nothing": 1}, 400),
        (url, [1], 400),
        (f"{BASE}/api/connections/nope/sharing", {"role": None}, 404),
        (f"{BASE}/api/connections/br0/sharing", {"role": "public"}, 409),
    ]:
        response = await client.post(path, json=body, headers=bearer())
        assert response.status == status, (path, body)
    response = await client.post(url, data="role=public", headers=bearer())
    assert response.status == 415
    response = await client.post(
        url,
        data=b"{" + b" " * 2000 + b"}",
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert response.status == 413
    response = await client.post(url, json={"role": "private"})
    assert response.status == 401


async def test_sharing_is_read_only_without_a_token(
    readonly: TestClient[web.Request, web.Application],
) -> None:
    response = await readonly.post(
        f"{BASE}/api/connections/lan1/sharing", json={"role": "private"}, headers=bearer()
    )
    assert response.status == 403


# ---- construction and the pure view model ------------------------------------------------------


def test_page_checks_its_arguments(core: SharingManager) -> None:
    for base in ("status", "/status/", "/{x}"):
        with pytest.raises(ValueError, match="base_path"):
            StatusPage(core, base_path=base)
    for token in ("", "short", "has a space in it!!", "non-ascii-token-é-0123456"):
        with pytest.raises(ValueError, match="admin_token"):
            StatusPage(core, admin_token=token)
    with pytest.raises(ValueError, match="positive"):
        StatusPage(core, heartbeat_s=0)


def test_build_web_routes(core: SharingManager) -> None:
    routes = build_web_routes(core, wan_counters=None, admin_token=None, base_path="/web")
    paths = {(r.method, r.path) for r in routes if isinstance(r, web.RouteDef)}
    assert ("GET", "/web/") in paths
    assert ("GET", "/web/api/events") in paths
    assert ("POST", "/web/api/mappings/{protocol}/{port}/delete") in paths
    assert ("POST", "/web/api/connections/{name}/sharing") in paths


async def test_mapping_ops_fall_back_to_a_snapshot(core: SharingManager) -> None:
    added = await core.add_mapping(request(40000), UPNP)
    ops = mapping_ops([MappingAdded(added), NumberOfEntriesChanged(1)], core)
    assert ops is not None
    assert [o["op"] for o in ops] == ["put"]
    guid = core.find_connection(name="lan1").guid
    assert mapping_ops([SharingChanged(guid, None, SharingCause.EXPLICIT)], core) is None
    assert mapping_ops([MappingAdded(added)] * (MAX_DELTA_OPS + 1), core) is None


def test_parse_role() -> None:
    assert parse_role("public") is SharingConnectionType.PUBLIC
    assert parse_role("private") is SharingConnectionType.PRIVATE
    assert parse_role(None) is None
    assert parse_role("none") is None
    bad: object
    for bad in ("PUBLIC", 0, 1, True, [], "shared"):
        with pytest.raises(ValueError, match="role"):
            parse_role(bad)
