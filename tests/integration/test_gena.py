"""GENA on 127.0.0.1: a real control point, raw SUBSCRIBE/UNSUBSCRIBE, real NOTIFY listeners.

The UPnP HTTP app of igd.soap serves the event URLs with `GenaFrontEnd.handle` as its
event_handler; the core's private connection is `lo` 127.0.0.1/8, its public one wan0 198.19.0.1/24
(memory backend). Listeners bind 127.0.0.1 and 127.0.0.2 (a second loopback address stands for
"another LAN host"). Covers specs 7.5 T-GENA-01..12, 14..18 and landscape ST-09..ST-11; T-GENA-13
(404) belongs to the app's router. No traffic leaves the loopback.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from async_upnp_client.aiohttp import AiohttpNotifyServer, AiohttpSessionRequester
from async_upnp_client.client import UpnpService, UpnpStateVariable
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.profiles.igd import IgdDevice
from lxml import etree
from multidict import CIMultiDictProxy
from support import FakeClock

from igd.gena import EventedValues, GenaFrontEnd, GenaSettings
from igd.gena.notifier import EVENT_NS
from igd.natcore import (
    MemoryStore,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.soap.routes import UpnpHttpConfig, build_app
from igd.upnp import DeviceInfo, RootDevice

LOOPBACK = IPv4Address("127.0.0.1")
OTHER_HOST = "127.0.0.2"
WAN = "198.19.0.1"
BASE_UUID = uuid.UUID("5d1f2c3b-8e4a-4b6f-9c0d-1a2b3c4d5e6f")
SERVER = "Linux/6.1 UPnP/1.1 igd/0.1.0"
ROOTS = (RootDevice.create(1, BASE_UUID, "/igd1"), RootDevice.create(2, BASE_UUID, "/igd2"))
WANIP_EVENT = {1: "/igd1/WANIPConnection/event", 2: "/igd2/WANIPConnection/event"}
WANIP_CONTROL = {1: "/igd1/WANIPConnection/control", 2: "/igd2/WANIPConnection/control"}
STEP_TIMEOUT_S = 10.0
QUIET_S = 0.6
"""How long "nothing arrives" is watched: three moderation windows."""
FAST = GenaSettings(attempt_timeout_s=1.0, moderation_s=0.2)

ENVELOPE = (
    '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>{call}</s:Body>'
    "</s:Envelope>"
)


class FakeWan:
    """A WanStatus for the SOAP side: link up, no traffic."""

    def counters(self) -> tuple[int, int, int, int]:
        return (0, 0, 0, 0)

    def link_up(self) -> bool:
        return True

    def max_bit_rates(self) -> tuple[int, int]:
        return (0, 0)


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def source() -> StaticConnectionSource:
    return StaticConnectionSource(
        [
            make_connection("wan0", addresses=[f"{WAN}/24"]),
            make_connection("lo", addresses=["127.0.0.1/8"], loopback=True),
        ]
    )


@pytest.fixture
async def lo_core(source: StaticConnectionSource) -> AsyncIterator[SharingManager]:
    """wan0 public, lo private: the loopback is the LAN."""
    core = await SharingManager.open(backend=MemoryBackend(), store=MemoryStore(), source=source)
    try:
        await core.enable_sharing(
            core.find_connection(name="wan0").guid, SharingConnectionType.PUBLIC
        )
        await core.enable_sharing(
            core.find_connection(name="lo").guid, SharingConnectionType.PRIVATE
        )
        yield core
    finally:
        await core.aclose()


@dataclass
class Gateway:
    """The HTTP app with the GENA front, and a client session from 127.0.0.1."""

    front: GenaFrontEnd
    server: TestServer
    session: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"


@asynccontextmanager
async def gateway(
    core: SharingManager,
    *,
    settings: GenaSettings = FAST,
    clock: Callable[[], float] = time.monotonic,
    start: bool = True,
) -> AsyncIterator[Gateway]:
    """GenaFrontEnd + build_app(event_handler=front.handle) on 127.0.0.1, an ephemeral port."""
    front = GenaFrontEnd(
        core,
        ROOTS,
        settings=settings,
        link_up=lambda: True,
        allow_private_external=True,  # 198.19.0.1 is a benchmarking (private) address
        clock=clock,
    )
    config = UpnpHttpConfig(
        core=core,
        roots=ROOTS,
        device_info=DeviceInfo(
            friendly_name="igd test", manufacturer="igd", model_name="igd", model_number="0.1.0"
        ),
        wan=FakeWan(),
        lan_networks=(IPv4Network("127.0.0.0/8"),),
        allowed_hosts=frozenset({"127.0.0.1"}),
        server=SERVER,
        allow_private_external=True,
    )
    if start:
        await front.start()
    server = TestServer(build_app(config, event_handler=front.handle), host="127.0.0.1", port=0)
    await server.start_server()
    timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield Gateway(front, server, session)
    finally:
        await server.close()
        await front.stop()


@pytest.fixture
async def gw(lo_core: SharingManager) -> AsyncIterator[Gateway]:
    async with gateway(lo_core) as running:
        yield running


@asynccontextmanager
async def session_from(host: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose connections leave from `host` (another LAN host)."""
    connector = aiohttp.TCPConnector(local_addr=(host, 0))
    timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


# ---- NOTIFY listeners --------------------------------------------------------------------------


@dataclass(frozen=True)
class Notify:
    """One request a listener received."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    at: float

    @property
    def seq(self) -> int:
        return int(self.headers["SEQ"])

    @property
    def sid(self) -> str:
        return self.headers["SID"]

    def variables(self) -> dict[str, str]:
        """Name -> value of each e:property; exactly one variable per property (EVT-09)."""
        root = etree.fromstring(self.body)
        assert root.tag == f"{{{EVENT_NS}}}propertyset"
        result: dict[str, str] = {}
        for prop in root:
            assert prop.tag == f"{{{EVENT_NS}}}property"
            assert len(prop) == 1
            result[str(prop[0].tag)] = prop[0].text or ""
        return result


@dataclass
class Listener:
    """An HTTP server on one loopback address recording every request it gets."""

    host: str
    status: int = 200
    port: int = 0
    received: asyncio.Queue[Notify] = field(default_factory=asyncio.Queue)
    on_request: Callable[[], None] | None = None

    def url(self, path: str = "/cb") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def handle(self, request: web.BaseRequest) -> web.Response:
        if self.on_request is not None:
            self.on_request()
        body = await request.read()
        self.received.put_nowait(
            Notify(request.method, request.path_qs, request.headers, body, time.monotonic())
        )
        return web.Response(status=self.status)

    async def next(self, within: float = STEP_TIMEOUT_S) -> Notify:
        async with asyncio.timeout(within):
            return await self.received.get()

    async def quiet(self, seconds: float = QUIET_S) -> None:
        """Nothing arrives for `seconds`."""
        await asyncio.sleep(seconds)
        assert self.received.empty(), self.received.get_nowait()


@asynccontextmanager
async def listening(host: str = "127.0.0.1", status: int = 200) -> AsyncIterator[Listener]:
    listener = Listener(host, status)
    server = web.Server(listener.handle)
    loop = asyncio.get_running_loop()
    tcp = await loop.create_server(server, host, 0)
    listener.port = tcp.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        tcp.close()
        await server.shutdown(1.0)
        await tcp.wait_closed()


@asynccontextmanager
async def hanging(host: str = "127.0.0.1") -> AsyncIterator[tuple[int, list[float]]]:
    """Accepts TCP and never answers; yields (port, accept times)."""
    accepted: list[float] = []
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        writers.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, host, 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (bounded) until `predicate()` holds; state changed by tasks, no event to await."""
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


# ---- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    at: float

    @property
    def sid(self) -> str:
        return self.headers["SID"]


async def gena(
    gw: Gateway,
    method: str,
    path: str,
    *,
    session: aiohttp.ClientSession | None = None,
    extra: dict[str, str] | None = None,
    **headers: str,
) -> Answer:
    """One SUBSCRIBE/UNSUBSCRIBE; header names as keyword arguments (CALLBACK=..., NT=...)."""
    sent = {**headers, **(extra or {})}
    async with (session or gw.session).request(method, gw.url(path), headers=sent) as response:
        body = await response.read()
        return Answer(response.status, response.headers, body, time.monotonic())


async def subscribe(
    gw: Gateway,
    callback: str,
    path: str = WANIP_EVENT[2],
    *,
    session: aiohttp.ClientSession | None = None,
    extra: dict[str, str] | None = None,
    **headers: str,
) -> Answer:
    return await gena(
        gw,
        "SUBSCRIBE",
        path,
        session=session,
        extra=extra,
        NT="upnp:event",
        CALLBACK=callback,
        **headers,
    )


def add_args(port: int, lease: int = 3600) -> str:
    return (
        f"<NewRemoteHost></NewRemoteHost><NewExternalPort>{port}</NewExternalPort>"
        f"<NewProtocol>TCP</NewProtocol><NewInternalPort>{port}</NewInternalPort>"
        f"<NewInternalClient>127.0.0.1</NewInternalClient><NewEnabled>1</NewEnabled>"
        f"<NewPortMappingDescription>gena</NewPortMappingDescription>"
        f"<NewLeaseDuration>{lease}</NewLeaseDuration>"
    )


def delete_args(port: int) -> str:
    return (
        f"<NewRemoteHost></NewRemoteHost><NewExternalPort>{port}</NewExternalPort>"
        "<NewProtocol>TCP</NewProtocol>"
    )


async def soap(gw: Gateway, action: str, args: str, version: int = 2) -> float:
    """One SOAP call that must succeed; returns its duration in seconds."""
    service = f"urn:schemas-upnp-org:service:WANIPConnection:{version}"
    body = ENVELOPE.format(call=f'<u:{action} xmlns:u="{service}">{args}</u:{action}>')
    headers = {"SOAPAction": f'"{service}#{action}"', "Content-Type": 'text/xml; charset="utf-8"'}
    started = time.monotonic()
    async with gw.session.post(
        gw.url(WANIP_CONTROL[version]), data=body.encode(), headers=headers
    ) as response:
        assert response.status == 200, await response.text()
    return time.monotonic() - started


# ---- (a) a real control point: async-upnp-client -----------------------------------------------


@pytest.mark.parametrize("root", ROOTS, ids=["igd1", "igd2"])
async def test_async_upnp_client_gets_initial_and_change_events(
    gw: Gateway, root: RootDevice
) -> None:
    """UpnpEventHandler: every evented variable first, then each change (T-GENA-01..03)."""
    requester = AiohttpSessionRequester(gw.session, with_sleep=False, timeout=int(STEP_TIMEOUT_S))
    notify_server = AiohttpNotifyServer(requester, source=("127.0.0.1", 0))
    await notify_server.async_start_server()
    try:
        device = await UpnpFactory(requester, non_strict=False).async_create_device(
            gw.url(root.description_path)
        )
        v2 = root.version == 2
        service = device.find_service(
            f"urn:schemas-upnp-org:service:WANIPConnection:{root.version}"
        )
        assert service is not None
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def on_event(_: UpnpService, variables: Sequence[UpnpStateVariable[Any]]) -> None:
            events.put_nowait({v.name: v.value for v in variables})

        service.on_event = on_event
        handler = notify_server.event_handler
        sid, timeout = await handler.async_subscribe(service, timeout=timedelta(seconds=300))
        assert sid.startswith("uuid:")
        assert timeout == timedelta(seconds=1800)  # clamped up (EVT-03)
        async with asyncio.timeout(STEP_TIMEOUT_S):
            initial = await events.get()
        expected: dict[str, Any] = {
            "PossibleConnectionTypes": "IP_Routed",
            "ConnectionStatus": "Connected",
            "ExternalIPAddress": WAN,
            "PortMappingNumberOfEntries": 0,
        }
        update_id = initial.pop("SystemUpdateID", None)
        assert initial == expected
        assert (update_id is not None) is v2

        igd = IgdDevice(device, None)
        port = 41000 + root.version
        await igd.async_add_port_mapping(
            IPv4Address("0.0.0.0"), port, "TCP", port, LOOPBACK, True, "gena", timedelta(hours=1)
        )
        async with asyncio.timeout(STEP_TIMEOUT_S):
            added = await events.get()
        assert added["PortMappingNumberOfEntries"] == 1
        if v2:
            assert added["SystemUpdateID"] == update_id + 1  # together (EVT-16, WIP-62)
        await igd.async_delete_port_mapping(IPv4Address("0.0.0.0"), port, "TCP")
        async with asyncio.timeout(STEP_TIMEOUT_S):
            deleted = await events.get()
        assert deleted["PortMappingNumberOfEntries"] == 0
        if v2:
            assert deleted["SystemUpdateID"] == update_id + 2
        await handler.async_unsubscribe(service)
        assert gw.front.active == 0
    finally:
        await notify_server.async_stop_server()


# ---- the answer and the initial event (EVT-01..03, EVT-08/09, ST-11) ---------------------------


async def test_initial_event_with_every_variable(gw: Gateway) -> None:
    """200 SID/TIMEOUT/CL 0; then NOTIFY SEQ 0 with exactly WIP-60's variables (T-GENA-01/02)."""
    async with listening() as listener:
        answer = await subscribe(gw, f"<{listener.url()}>", TIMEOUT="Second-1800")
        assert answer.status == 200
        assert answer.sid.startswith("uuid:")
        uuid.UUID(answer.sid.removeprefix("uuid:"))
        assert answer.headers["TIMEOUT"] == "Second-1800"
        assert answer.headers["Content-Length"] == "0"
        assert answer.body == b""
        assert answer.headers["Server"] == SERVER
        assert "Date" in answer.headers
        notify = await listener.next()
        assert (notify.method, notify.path) == ("NOTIFY", "/cb")
        assert notify.headers["NT"] == "upnp:event"
        assert notify.headers["NTS"] == "upnp:propchange"
        assert notify.headers["Content-Type"] == 'text/xml; charset="utf-8"'
        assert notify.headers["Host"] == f"127.0.0.1:{listener.port}"
        assert int(notify.headers["Content-Length"]) == len(notify.body)
        assert (notify.sid, notify.seq) == (answer.sid, 0)
        values = notify.variables()
        assert list(values) == [
            "PossibleConnectionTypes",
            "ConnectionStatus",
            "ExternalIPAddress",
            "PortMappingNumberOfEntries",
            "SystemUpdateID",
        ]
        assert values["ExternalIPAddress"] == WAN
        assert values["ConnectionStatus"] == "Connected"
        assert values["PortMappingNumberOfEntries"] == "0"
        await listener.quiet()


async def test_initial_event_only_after_the_answer(gw: Gateway) -> None:
    """When the NOTIFY arrives, the whole 200 already sits in the subscriber's socket (EVT-08)."""
    peeked: list[bytes] = []
    async with listening() as listener:
        with socket.create_connection(("127.0.0.1", gw.server.port), timeout=STEP_TIMEOUT_S) as s:

            def peek() -> None:
                try:
                    peeked.append(s.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT))
                except BlockingIOError:
                    peeked.append(b"")

            listener.on_request = peek
            s.sendall(
                f"SUBSCRIBE {WANIP_EVENT[2]} HTTP/1.1\r\nHost: 127.0.0.1:{gw.server.port}\r\n"
                f"NT: upnp:event\r\nCALLBACK: <{listener.url()}>\r\n\r\n".encode()
            )
            notify = await listener.next()
            assert notify.seq == 0
            assert len(peeked) == 1
            head = peeked[0]
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert head.endswith(b"\r\n\r\n")  # headers complete, empty body
            assert f"SID: {notify.sid}\r\n".encode() in head


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/igd1/WANIPConnection/event", None),
        ("/igd2/WANCommonInterfaceConfig/event", {"PhysicalLinkStatus": "Up"}),
        (
            "/igd2/Layer3Forwarding/event",
            {"DefaultConnectionService": ROOTS[1].default_connection_service()},
        ),
        (
            "/igd1/Layer3Forwarding/event",
            {"DefaultConnectionService": ROOTS[0].default_connection_service()},
        ),
    ],
)
async def test_initial_event_of_each_service(
    gw: Gateway, path: str, expected: dict[str, str] | None
) -> None:
    """WCIC PhysicalLinkStatus, L3F DefaultConnectionService, IGD:1 without SystemUpdateID
    (T-GENA-14/15, WIP-60)."""
    async with listening() as listener:
        answer = await subscribe(gw, f"<{listener.url()}>", path)
        assert answer.status == 200
        values = (await listener.next()).variables()
        if expected is None:
            assert set(values) == {
                "PossibleConnectionTypes",
                "ConnectionStatus",
                "ExternalIPAddress",
                "PortMappingNumberOfEntries",
            }
        else:
            assert values == expected


# ---- (b)/(c) CallStranger: callbacks (EVT-04, EVT-11..13, ST-09) -------------------------------


async def test_callback_to_another_host_is_refused_and_gets_nothing(
    gw: Gateway, lo_core: SharingManager
) -> None:
    """A callback naming another LAN host is 412; that host receives nothing (ST-09, EVT-13)."""
    async with listening(OTHER_HOST) as other:
        answer = await subscribe(gw, f"<{other.url()}>")
        assert answer.status == 412
        assert "SID" not in answer.headers
        assert gw.front.active == 0
        await soap(gw, "AddPortMapping", add_args(42000))
        await other.quiet()
    assert gw.front.stats.requests[("SUBSCRIBE", "no-valid-callback")] == 1


def _long_url(port: int) -> str:
    base = f"http://127.0.0.1:{port}/"
    return base + "a" * (257 - len(base))


@pytest.mark.parametrize(
    "make_callback",
    [
        lambda port: f"<https://127.0.0.1:{port}/cb>",
        lambda port: "<file:///etc/passwd>",
        lambda port: f"<ftp://127.0.0.1:{port}/cb>",
        lambda port: f"<http://localhost:{port}/cb>",
        lambda port: "<http://203.0.113.5/x>",
        lambda port: f"<http://198.19.0.100:{port}/x>",
        lambda port: f"<{_long_url(port)}>",
        lambda port: f"http://127.0.0.1:{port}/cb",
        lambda port: "",
    ],
    ids=[
        "https",
        "file",
        "ftp",
        "hostname",
        "internet",
        "wan",
        "257-bytes",
        "no-brackets",
        "empty",
    ],
)
async def test_invalid_callbacks_are_412(gw: Gateway, make_callback: Callable[[int], str]) -> None:
    """https, file:, hostnames, other hosts, > 256 bytes: 412 each (ST-09, EVT-04/13)."""
    async with listening() as listener:
        answer = await subscribe(gw, make_callback(listener.port))
        assert answer.status == 412
        await listener.quiet(0.2)
    assert gw.front.active == 0


async def test_only_the_valid_later_url_is_kept(gw: Gateway) -> None:
    """`<other host><own>`: 200, events only to the second URL (T-GENA-10, ST-09)."""
    async with listening(OTHER_HOST) as other, listening() as own:
        answer = await subscribe(gw, f"<{other.url()}><{own.url('/mine')}>")
        assert answer.status == 200
        notify = await own.next()
        assert (notify.path, notify.seq) == ("/mine", 0)
        await other.quiet()
        (held,) = gw.front.table.subscriptions()
        assert held.callbacks == (own.url("/mine"),)


async def test_urls_tried_in_order(gw: Gateway) -> None:
    """A first URL that refuses the connection, then one that answers: delivered (EVT-11)."""
    async with listening() as listener:
        dead = f"http://127.0.0.1:{closed_port()}/dead"
        answer = await subscribe(gw, f"<{dead}><{listener.url()}>")
        assert answer.status == 200
        notify = await listener.next()
        assert notify.seq == 0
        await eventually(lambda: gw.front.stats.notifications["sent"] == 1)
        assert gw.front.stats.notifications["attempt_failed"] == 1


async def test_another_host_subscribes_for_itself(gw: Gateway) -> None:
    """127.0.0.2 subscribing with its own address is fine (EVT-13 compares to the source)."""
    async with session_from(OTHER_HOST) as other_session, listening(OTHER_HOST) as other:
        answer = await subscribe(gw, f"<{other.url()}>", session=other_session)
        assert answer.status == 200
        assert (await other.next()).seq == 0
        (held,) = gw.front.table.subscriptions()
        assert held.subscriber == IPv4Address(OTHER_HOST)
        # the SID is not a bearer token for other hosts (EVT-06/07)
        assert (await gena(gw, "SUBSCRIBE", WANIP_EVENT[2], SID=answer.sid)).status == 412
        assert (await gena(gw, "UNSUBSCRIBE", WANIP_EVENT[2], SID=answer.sid)).status == 412
        renewed = await gena(gw, "SUBSCRIBE", WANIP_EVENT[2], session=other_session, SID=answer.sid)
        assert renewed.status == 200


# ---- (d) limits, renewal, unsubscribe, header rules (EVT-03..07, ST-10) ------------------------


async def test_per_client_and_global_limits(lo_core: SharingManager) -> None:
    """Per client 412, global 503 with Retry-After (ST-10, EVT-15)."""
    settings = GenaSettings(max_total=3, max_per_client=2, attempt_timeout_s=1.0)
    async with (
        gateway(lo_core, settings=settings) as gw,
        listening() as own,
        listening(OTHER_HOST) as other,
        session_from(OTHER_HOST) as other_session,
    ):
        for _ in range(2):
            assert (await subscribe(gw, f"<{own.url()}>")).status == 200
        refused = await subscribe(gw, f"<{own.url()}>", WANIP_EVENT[1])
        assert refused.status == 412
        assert (await subscribe(gw, f"<{other.url()}>", session=other_session)).status == 200
        full = await subscribe(gw, f"<{other.url()}>", session=other_session)
        assert full.status == 503
        assert full.headers["Retry-After"] == "1"
        assert gw.front.active == 3
        stats = gw.front.stats.requests
        assert stats[("SUBSCRIBE", "client-limit")] == 1
        assert stats[("SUBSCRIBE", "table-full")] == 1


async def test_renewal_unsubscribe_and_their_errors(gw: Gateway) -> None:
    """Renewal keeps SID and SEQ, no new initial event; UNSUBSCRIBE stops NOTIFY (T-GENA-05..07,
    T-GENA-12)."""
    path = WANIP_EVENT[2]
    async with listening() as listener:
        first = await subscribe(gw, f"<{listener.url()}>")
        assert (await listener.next()).seq == 0
        renewed = await gena(gw, "SUBSCRIBE", path, SID=first.sid, TIMEOUT="Second-60")
        assert renewed.status == 200
        assert renewed.sid == first.sid
        assert renewed.headers["TIMEOUT"] == "Second-1800"
        assert renewed.headers["Content-Length"] == "0"
        await listener.quiet()  # no second initial event (EVT-06)
        await soap(gw, "AddPortMapping", add_args(42100))
        change = await listener.next()
        assert change.seq == 1
        assert change.variables()["PortMappingNumberOfEntries"] == "1"

        unknown = f"uuid:{uuid.uuid4()}"
        assert (await gena(gw, "SUBSCRIBE", path, SID=unknown)).status == 412
        assert (await gena(gw, "SUBSCRIBE", path, SID="")).status == 412
        callback = f"<{listener.url()}>"
        assert (await gena(gw, "SUBSCRIBE", path, SID=first.sid, CALLBACK=callback)).status == 400
        assert (await gena(gw, "SUBSCRIBE", path, SID=first.sid, NT="upnp:event")).status == 400
        other_service = "/igd2/Layer3Forwarding/event"
        assert (await gena(gw, "SUBSCRIBE", other_service, SID=first.sid)).status == 412
        assert (await gena(gw, "UNSUBSCRIBE", path, SID=first.sid, NT="upnp:event")).status == 400
        assert (await gena(gw, "UNSUBSCRIBE", path)).status == 412

        gone = await gena(gw, "UNSUBSCRIBE", path, SID=first.sid)
        assert (gone.status, gone.body) == (200, b"")
        assert (await gena(gw, "UNSUBSCRIBE", path, SID=first.sid)).status == 412
        assert (await gena(gw, "SUBSCRIBE", path, SID=first.sid)).status == 412
        await soap(gw, "DeletePortMapping", delete_args(42100))
        await listener.quiet()
    assert gw.front.active == 0


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        ("Second-infinite", "Second-1800"),
        (None, "Second-1800"),
        ("Second-60", "Second-1800"),
        ("Second-3600", "Second-3600"),
        ("Second-999999999", "Second-7200"),
        ("bogus", "Second-1800"),
    ],
)
async def test_timeout_clamped(gw: Gateway, requested: str | None, granted: str) -> None:
    """Always numeric, >= 1800, <= the maximum (T-GENA-11, EVT-02/03, ST-10)."""
    async with listening() as listener:
        extra = {} if requested is None else {"TIMEOUT": requested}
        answer = await subscribe(gw, f"<{listener.url()}>", extra=extra)
        assert answer.status == 200
        assert answer.headers["TIMEOUT"] == granted


@pytest.mark.parametrize(
    "headers",
    [
        {"NT": "upnp:event"},
        {"NT": "upnp:event", "CALLBACK": "<ftp://127.0.0.1/x>"},
        {"NT": "upnp:foo", "CALLBACK": "<{cb}>"},
        {"CALLBACK": "<{cb}>"},
    ],
    ids=["no-callback", "ftp", "bad-nt", "no-nt"],
)
async def test_new_subscription_preconditions(gw: Gateway, headers: dict[str, str]) -> None:
    """No CALLBACK, no valid URL, NT not upnp:event: 412 each (T-GENA-08, EVT-04)."""
    async with listening() as listener:
        sent = {k: v.format(cb=listener.url()) for k, v in headers.items()}
        answer = await gena(gw, "SUBSCRIBE", WANIP_EVENT[2], extra=sent)
        assert answer.status == 412
        await listener.quiet(0.2)


async def test_expired_subscriptions_purged_with_a_fake_clock(lo_core: SharingManager) -> None:
    """After TIMEOUT the SID is unknown, purged, and nothing more is sent (EVT-11, ST-10)."""
    clock = FakeClock(1000.0)
    async with gateway(lo_core, clock=clock) as gw, listening() as listener:
        answer = await subscribe(gw, f"<{listener.url()}>")
        assert (await listener.next()).seq == 0
        clock.advance(1799)
        renewed = await gena(gw, "SUBSCRIBE", WANIP_EVENT[2], SID=answer.sid)
        assert renewed.status == 200  # renewed at 2799 for 1800 s more
        clock.advance(1800)
        assert (await gena(gw, "SUBSCRIBE", WANIP_EVENT[2], SID=answer.sid)).status == 412
        await soap(gw, "AddPortMapping", add_args(42200))
        await listener.quiet()  # expired: not one more NOTIFY (EVT-11)
        assert [s.sid for s in gw.front.purge()] == [answer.sid]
        assert gw.front.active == 0
        assert gw.front.stats.notifications["expired"] == 1


async def test_expiry_timer_purges_on_its_own(lo_core: SharingManager) -> None:
    """The timer forgets a subscription when its (short, test-only) timeout runs out (ST-10)."""
    settings = GenaSettings(min_timeout_s=1, max_timeout_s=1, attempt_timeout_s=1.0)
    async with gateway(lo_core, settings=settings) as gw, listening() as listener:
        answer = await subscribe(gw, f"<{listener.url()}>")
        assert answer.headers["TIMEOUT"] == "Second-1"
        assert gw.front.active == 1
        await eventually(lambda: gw.front.active == 0)
        assert gw.front.stats.notifications["expired"] == 1


async def test_503_before_start_and_after_stop(lo_core: SharingManager) -> None:
    """Nothing can be delivered then, so nothing is accepted; stop() forgets all (EVT-15)."""
    async with gateway(lo_core, start=False) as gw, listening() as listener:
        assert (await subscribe(gw, f"<{listener.url()}>")).status == 503
        await gw.front.start()
        answer = await subscribe(gw, f"<{listener.url()}>")
        assert answer.status == 200
        assert (await listener.next()).seq == 0
        await gw.front.stop()
        assert gw.front.active == 0
        assert (await subscribe(gw, f"<{listener.url()}>")).status == 503
        assert (await gena(gw, "SUBSCRIBE", WANIP_EVENT[2], SID=answer.sid)).status == 503
        assert gw.front.stats.requests[("SUBSCRIBE", "not-running")] == 3


# ---- (e) SEQ, changes, dead and slow subscribers (EVT-10, EVT-15/16, ST-11) --------------------


async def test_seq_counts_each_change_with_count_and_update_id(
    gw: Gateway, lo_core: SharingManager
) -> None:
    """SEQ 0, 1, 2; count and SystemUpdateID travel together (T-GENA-03, EVT-10/16, ST-11)."""
    async with listening() as listener:
        await subscribe(gw, f"<{listener.url()}>")
        initial = await listener.next()
        start_id = int(initial.variables()["SystemUpdateID"])
        await soap(gw, "AddPortMapping", add_args(42300))
        added = await listener.next()
        assert added.seq == 1
        assert added.variables() == {
            "PortMappingNumberOfEntries": "1",
            "SystemUpdateID": str(start_id + 1),
        }
        await soap(gw, "DeletePortMapping", delete_args(42300))
        deleted = await listener.next()
        assert deleted.seq == 2
        assert deleted.variables() == {
            "PortMappingNumberOfEntries": "0",
            "SystemUpdateID": str(start_id + 2),
        }
        assert lo_core.system_update_id == start_id + 2


async def test_bursts_are_coalesced(gw: Gateway, lo_core: SharingManager) -> None:
    """Ten adds in a burst give few messages, the last carrying the final count (moderation)."""
    async with listening() as listener:
        await subscribe(gw, f"<{listener.url()}>", WANIP_EVENT[1])
        await listener.next()
        await asyncio.gather(
            *(soap(gw, "AddPortMapping", add_args(42400 + i), 1) for i in range(10))
        )
        seen: list[Notify] = []
        async with asyncio.timeout(STEP_TIMEOUT_S):
            while not seen or seen[-1].variables()["PortMappingNumberOfEntries"] != "10":
                seen.append(await listener.next())
        assert [n.seq for n in seen] == list(range(1, len(seen) + 1))
        assert len(seen) < 10
        gaps = [b.at - a.at for a, b in itertools.pairwise(seen)]
        assert all(gap >= 0.1 for gap in gaps), gaps  # moderation_s 0.2, minus jitter


async def test_lease_expiry_events_the_count(gw: Gateway, lo_core: SharingManager) -> None:
    """A lease running out events count 0 (T-GENA-04, WIP-61)."""
    async with listening() as listener:
        await subscribe(gw, f"<{listener.url()}>")
        await listener.next()
        await soap(gw, "AddPortMapping", add_args(42500, lease=1))
        assert (await listener.next()).variables()["PortMappingNumberOfEntries"] == "1"
        expired = await listener.next(within=STEP_TIMEOUT_S)
        assert expired.variables()["PortMappingNumberOfEntries"] == "0"


async def test_wan_address_change_is_evented(gw: Gateway, source: StaticConnectionSource) -> None:
    """A new WAN address is evented on WANIPConnection, with nothing else (T-GENA-17, WIP-63)."""
    async with listening() as listener:
        await subscribe(gw, f"<{listener.url()}>")
        await listener.next()
        source.update(
            [
                make_connection("wan0", addresses=["198.19.0.2/24"]),
                make_connection("lo", addresses=["127.0.0.1/8"], loopback=True),
            ]
        )
        changed = await listener.next()
        assert changed.seq == 1
        assert changed.variables() == {"ExternalIPAddress": "198.19.0.2"}


async def test_link_change_seen_by_refresh(lo_core: SharingManager) -> None:
    """PhysicalLinkStatus follows the injected link state on refresh() (WCIC-05)."""
    link = {"up": True}
    front = GenaFrontEnd(lo_core, ROOTS, link_up=lambda: link["up"], settings=FAST)
    config = UpnpHttpConfig(
        core=lo_core,
        roots=ROOTS,
        device_info=DeviceInfo(
            friendly_name="igd test", manufacturer="igd", model_name="igd", model_number="0.1.0"
        ),
        wan=FakeWan(),
        lan_networks=(IPv4Network("127.0.0.0/8"),),
        allowed_hosts=frozenset({"127.0.0.1"}),
        server=SERVER,
    )
    server = TestServer(build_app(config, event_handler=front.handle), host="127.0.0.1", port=0)
    async with front, listening() as listener:
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                gw = Gateway(front, server, session)
                await subscribe(gw, f"<{listener.url()}>", "/igd2/WANCommonInterfaceConfig/event")
                assert (await listener.next()).variables() == {"PhysicalLinkStatus": "Up"}
                link["up"] = False
                front.refresh()
                changed = await listener.next()
                assert (changed.seq, changed.variables()) == (1, {"PhysicalLinkStatus": "Down"})
                front.refresh()
                await listener.quiet()
        finally:
            await server.close()


async def test_dead_subscriber_dropped_without_delaying_a_live_one(
    lo_core: SharingManager,
) -> None:
    """A closed port is dropped after max_failures; a hung one times out; the live one and SOAP
    go on at once (EVT-15, ST-10, T-GENA-16)."""
    settings = GenaSettings(attempt_timeout_s=2.0, max_failures=2, moderation_s=0.2)
    async with (
        gateway(lo_core, settings=settings) as gw,
        listening() as live,
        hanging() as (hung_port, accepted),
    ):
        dead = await subscribe(gw, f"<http://127.0.0.1:{closed_port()}/dead>")
        hung = await subscribe(gw, f"<http://127.0.0.1:{hung_port}/hung>")
        await subscribe(gw, f"<{live.url()}>")
        assert (await live.next()).seq == 0
        await eventually(lambda: bool(accepted))
        # the hung subscriber holds its initial NOTIFY; SOAP and the live one are not slowed
        assert await soap(gw, "AddPortMapping", add_args(42600)) < 1.0
        added = await live.next(within=1.0)
        assert added.seq == 1
        await eventually(lambda: dead.sid not in gw.front.table)
        assert gw.front.stats.notifications["dropped"] >= 1
        # the hung one fails twice within 2 x 2 s plus moderation, then goes too
        await eventually(lambda: hung.sid not in gw.front.table)
        assert gw.front.active == 1
        assert gw.front.stats.notifications["dropped"] == 2
        await soap(gw, "DeletePortMapping", delete_args(42600))
        assert (await live.next()).seq == 2


async def test_refusing_subscriber_is_dropped(lo_core: SharingManager) -> None:
    """A callback answering non-2xx (e.g. 412: it forgot the SID) fails like a dead one (EVT-11)."""
    settings = GenaSettings(attempt_timeout_s=1.0, max_failures=1)
    async with gateway(lo_core, settings=settings) as gw, listening(status=412) as listener:
        answer = await subscribe(gw, f"<{listener.url()}>")
        assert (await listener.next()).seq == 0
        await eventually(lambda: answer.sid not in gw.front.table)
        stats = gw.front.stats.notifications
        assert (stats["attempt_failed"], stats["failed"], stats["dropped"]) == (1, 1, 1)
        await soap(gw, "AddPortMapping", add_args(42700))
        await listener.quiet()


# ---- the values (WIP-02/03/04/60, WCIC-05, L3F-03) ---------------------------------------------


async def test_evented_values_follow_the_core(
    lo_core: SharingManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Defaults from the core; injected providers win; a failing provider gives a fallback."""
    wanip, wancic, l3f = (ROOTS[1].endpoint_for_event(f"/igd2/{k}/event") for k in _KINDS)
    assert wanip is not None
    assert wancic is not None
    assert l3f is not None
    hidden = EventedValues(lo_core)
    assert hidden.current(ROOTS[1], wanip) == {
        "PossibleConnectionTypes": "IP_Routed",
        "ConnectionStatus": "Connected",
        "ExternalIPAddress": "",  # 198.19.0.1 is not global: hidden by default (WIP-03)
        "PortMappingNumberOfEntries": "0",
        "SystemUpdateID": str(lo_core.system_update_id),
    }
    assert hidden.current(ROOTS[1], wancic) == {"PhysicalLinkStatus": "Up"}
    assert hidden.current(ROOTS[1], l3f) == {
        "DefaultConnectionService": ROOTS[1].default_connection_service()
    }
    shown = EventedValues(lo_core, allow_private_external=True)
    assert shown.current(ROOTS[1], wanip)["ExternalIPAddress"] == WAN
    injected = EventedValues(lo_core, external_ip=lambda: "203.0.113.9")
    assert injected.current(ROOTS[1], wanip)["ExternalIPAddress"] == "203.0.113.9"

    def broken() -> bool:
        raise OSError("netlink went away")

    failing = EventedValues(lo_core, link_up=broken)
    with caplog.at_level("ERROR", logger="igd.gena.notifier"):
        for _ in range(3):
            assert failing.current(ROOTS[1], wancic) == {"PhysicalLinkStatus": "Unavailable"}
    assert len([r for r in caplog.records if "PhysicalLinkStatus" in r.getMessage()]) == 1

    await lo_core.disable_sharing(lo_core.find_connection(name="wan0").guid)
    values = shown.current(ROOTS[1], wanip)
    assert (values["ConnectionStatus"], values["ExternalIPAddress"]) == ("Disconnected", "")
    assert shown.current(ROOTS[1], wancic) == {"PhysicalLinkStatus": "Down"}


_KINDS = ("WANIPConnection", "WANCommonInterfaceConfig", "Layer3Forwarding")
