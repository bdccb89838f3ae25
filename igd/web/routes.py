"""The status page over HTTP (issue 6): page and assets, JSON snapshot, live events, admin actions.

`StatusPage(core, ...)` serves, under `base_path` (default "/status"):

- GET  {base}/                        the page (static HTML; {base} redirects here)
- GET  {base}/static/{asset}          app.js, style.css, icon.svg (ETag, revalidated)
- GET  {base}/api/state               the JSON snapshot of `igd.web.snapshot`
- GET  {base}/api/events              Server-Sent Events: "snapshot" first, then "mappings" deltas
                                      (or a fresh "snapshot") per batch of core events, "counters"
                                      when the WAN counters move, a comment as heartbeat
- POST {base}/api/auth                204 when the bearer token is right (the page's unlock)
- POST {base}/api/mappings/{protocol}/{port}/delete[?remote_host=A]   remove a mapping
- POST {base}/api/connections/{name}/sharing   JSON {"role": "public" | "private" | null}

Reads are open to whoever reaches the app (the UPnP app's LAN-source and Host gates run first);
the page and its assets are static and may be opened from a link on another site.
The POSTs need `Authorization: Bearer <admin_token>`: without a configured token they are 403
"read-only", a missing or wrong token is 401. Against cross-site requests, every API endpoint
refuses an `Origin` other than the request's own scheme://host:port and a `Sec-Fetch-Site` of
cross-site or same-site (403); the token travels only in that header, never in a cookie, and no
answer carries CORS headers. Every answer has a strict Content-Security-Policy (no inline script,
nothing from another origin), and the page writes every value with textContent.

Each event stream holds a bounded buffer of core events (an overflow resynchronises the client
with a snapshot), at most `max_streams` streams run at once (503 beyond), a client that stops
reading is dropped after WRITE_TIMEOUT_S, and `aclose()` (wired to app shutdown by `install`)
ends every stream at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from ipaddress import IPv4Address
from typing import Final

from aiohttp import web
from yarl import URL

from igd.natcore import (
    ADMIN,
    ConnectionNotFoundError,
    Event,
    InvalidProtocolError,
    MappingKey,
    MappingNotFoundError,
    NatError,
    NotShareableError,
    ObjectNoLongerValidError,
    SharingManager,
)
from igd.web import (
    Counters,
    JsonDict,
    connection_json,
    counters_json,
    dumps,
    mapping_json,
    mapping_ops,
    parse_protocol,
    parse_role,
    snapshot,
)

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "COUNTERS_S",
    "HEARTBEAT_S",
    "MAX_STREAMS",
    "STREAM_BUFFER",
    "WRITE_TIMEOUT_S",
    "StatusPage",
    "build_web_routes",
]

log = logging.getLogger(__name__)

HEARTBEAT_S: Final = 15.0
"""An idle event stream gets a comment line this often, so proxies and clients see it alive."""
COUNTERS_S: Final = 2.0
"""How often an event stream checks the WAN counters (sent only when they moved)."""
TICK_S: Final = 1.0
"""Longest sleep of an event stream between checks for a closed client."""
COALESCE_S: Final = 0.05
"""After a first event, wait this long so a burst goes out as one message."""
WRITE_TIMEOUT_S: Final = 10.0
"""A client that does not take a message within this long is dropped."""
MAX_STREAMS: Final = 8
"""Event streams served at once (each holds one of the UPnP app's concurrent requests)."""
STREAM_BUFFER: Final = 256
"""Core events buffered per stream; more and the client gets a fresh snapshot instead."""
RETRY_MS: Final = 3000
"""The EventSource reconnection delay the stream announces."""
CLOSE_TIMEOUT_S: Final = 2.0
"""`aclose` waits this long at most for the streams to finish."""
MAX_BODY_BYTES: Final = 1024
"""Largest JSON body of an admin request."""
MIN_TOKEN_LENGTH: Final = 16
"""Shortest admin token accepted: the page is reachable from the whole LAN."""

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_ASSETS: Final = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
_INDEX: Final = "index.html"
_JSON: Final = "application/json"

CountersSource = Callable[[], Counters]


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _load_asset(name: str, content_type: str) -> _Asset:
    body = resources.files("igd.web").joinpath("static", name).read_bytes()
    return _Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _headers(**extra: str) -> dict[str, str]:
    return {**_SECURITY_HEADERS, **extra}


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=dumps(value),
        content_type=_JSON,
        headers=_headers(**{"Cache-Control": "no-store"}),
    )


def _error(status: int, error: str, message: str, **headers: str) -> web.Response:
    response = _json({"error": error, "message": message}, status)
    response.headers.update(headers)
    return response


def _sse(event: str, data: object) -> str:
    """One Server-Sent Event; `dumps` output has no newline, so one data line."""
    return f"event: {event}\ndata: {dumps(data)}\n\n"


def _same_origin(request: web.Request) -> bool:
    """No Origin, or exactly this request's scheme://host:port; no cross-site fetch metadata."""
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        theirs = URL(origin)
        ours = URL.build(scheme=request.scheme, authority=request.host)
    except (ValueError, TypeError):
        return False
    if not theirs.absolute or theirs.path not in ("", "/") or theirs.query_string:
        return False
    return (theirs.scheme, theirs.host, theirs.port) == (ours.scheme, ours.host, ours.port)


def _check_token(configured: str, header: str | None) -> bool:
    """`Authorization: Bearer <configured>`, compared in constant time."""
    if header is None:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), configured.encode())


class _Stream:
    """One event-stream client: core events taken off its subscription into a bounded buffer."""

    def __init__(self, core: SharingManager) -> None:
        self.subscription = core.events(maxsize=STREAM_BUFFER)
        self.pending: list[Event] = []
        self.overflow = False
        self.wakeup = asyncio.Event()
        self.finished = False  # the core closed the subscription
        self.ended = False  # the page is closing
        self.done = asyncio.Event()

    async def pump(self) -> None:
        """Move events into the buffer until the subscription ends."""
        try:
            async for event in self.subscription:
                if len(self.pending) >= STREAM_BUFFER:
                    self.pending.clear()
                    self.overflow = True
                self.pending.append(event)
                self.wakeup.set()
        finally:
            self.finished = True
            self.wakeup.set()

    def take(self) -> tuple[list[Event], bool]:
        """The buffered events and whether some were lost; empties the buffer."""
        events, overflow = self.pending, self.overflow
        self.pending, self.overflow = [], False
        return events, overflow

    def end(self) -> None:
        self.ended = True
        self.wakeup.set()


class StatusPage:
    """The status page over one core: its routes, its event streams, its admin checks."""

    def __init__(
        self,
        core: SharingManager,
        *,
        wan_counters: CountersSource | None = None,
        admin_token: str | None = None,
        base_path: str = "/status",
        title: str = "igd",
        max_streams: int = MAX_STREAMS,
        heartbeat_s: float = HEARTBEAT_S,
        counters_s: float = COUNTERS_S,
    ) -> None:
        if not base_path.startswith("/") or base_path.endswith("/") or "{" in base_path:
            raise ValueError(f"base_path must start and not end with '/': {base_path!r}")
        if admin_token is not None and (
            len(admin_token) < MIN_TOKEN_LENGTH
            or not admin_token.isascii()
            or not admin_token.isprintable()
            or any(c.isspace() for c in admin_token)
        ):
            raise ValueError(
                f"admin_token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters "
                "without spaces"
            )
        if max_streams < 0 or heartbeat_s <= 0 or counters_s <= 0:
            raise ValueError("max_streams must be >= 0, heartbeat_s and counters_s positive")
        self.core = core
        self.wan_counters = wan_counters
        self.admin_token = admin_token
        self.base_path = base_path
        self.title = title
        self.max_streams = max_streams
        self.heartbeat_s = heartbeat_s
        self.counters_s = counters_s
        self._index = _load_asset(_INDEX, "text/html; charset=utf-8")
        self._assets = {name: _load_asset(name, kind) for name, kind in _ASSETS.items()}
        self._streams: set[_Stream] = set()
        self._closing = False
        self._counters_cache: tuple[float, Counters | None] = (-math.inf, None)

    # -- wiring ----------------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """Every route of the page, under base_path."""
        base = self.base_path
        asset_routes = [
            web.get(f"{base}/static/{name}", self._asset_handler(asset))
            for name, asset in self._assets.items()
        ]
        return [
            web.get(base, self._redirect),
            web.get(f"{base}/", self._page),
            *asset_routes,
            web.get(f"{base}/api/state", self._state),
            web.get(f"{base}/api/events", self._events),
            web.post(f"{base}/api/auth", self._auth),
            web.post(f"{base}/api/mappings/{{protocol}}/{{port}}/delete", self._delete_mapping),
            web.post(f"{base}/api/connections/{{name}}/sharing", self._sharing),
        ]

    def install(self, app: web.Application) -> None:
        """Add the routes to `app` and end the event streams when it shuts down."""
        app.add_routes(self.routes())
        app.on_shutdown.append(self._on_shutdown)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End every event stream (clients see the stream close) and refuse new ones."""
        self._closing = True
        streams = tuple(self._streams)
        for stream in streams:
            stream.end()
        if streams:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.gather(*(stream.done.wait() for stream in streams))

    @property
    def stream_count(self) -> int:
        """Event streams being served now."""
        return len(self._streams)

    # -- shared helpers --------------------------------------------------------------------------

    def _counters(self) -> Counters | None:
        """The WAN counters, read at most once a second whatever the number of clients."""
        if self.wan_counters is None:
            return None
        now = asyncio.get_running_loop().time()
        read_at, value = self._counters_cache
        if now - read_at < 1.0:
            return value
        try:
            sent, received, packets_sent, packets_received = self.wan_counters()
            value = (int(sent), int(received), int(packets_sent), int(packets_received))
        except Exception:
            log.exception("reading the WAN counters failed")
            value = None
        self._counters_cache = (now, value)
        return value

    def _snapshot(self) -> JsonDict:
        return snapshot(
            self.core,
            counters=self._counters(),
            admin=self.admin_token is not None,
            title=self.title,
        )

    def _refuse_cross_origin(self, request: web.Request) -> web.Response | None:
        if _same_origin(request):
            return None
        return _error(403, "cross-origin", "requests from another origin are refused")

    def _authorise(self, request: web.Request) -> web.Response | None:
        """None when the request may change things; else the refusal (403 or 401)."""
        refusal = self._refuse_cross_origin(request)
        if refusal is not None:
            return refusal
        if self.admin_token is None:
            return _error(403, "read-only", "read-only: no admin token is configured")
        if not _check_token(self.admin_token, request.headers.get("Authorization")):
            return _error(
                401,
                "unauthorized",
                "a valid admin token is needed",
                **{"WWW-Authenticate": 'Bearer realm="igd"'},
            )
        return None

    # -- page and assets -------------------------------------------------------------------------

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=308,
            headers=_headers(Location=f"{self.base_path}/", **{"Cache-Control": "no-store"}),
        )

    @staticmethod
    def _serve(asset: _Asset, request: web.Request) -> web.Response:
        headers = _headers(ETag=asset.etag, **{"Cache-Control": "no-cache"})
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = asset.content_type
        return web.Response(body=asset.body, headers=headers)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        """The page; a link from another site (a router list, a file manager) may open it."""
        return self._serve(self._index, request)

    def _asset_handler(
        self, asset: _Asset
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return self._serve(asset, request)

        return handler

    # -- reads -----------------------------------------------------------------------------------

    async def _state(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refuse_cross_origin(request)
        return refusal or _json(self._snapshot())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: a snapshot, then deltas, counters and heartbeats until closed."""
        refusal = self._refuse_cross_origin(request)
        if refusal is not None:
            return refusal
        if self._closing or len(self._streams) >= self.max_streams:
            return _error(503, "busy", "too many live views; retry later", **{"Retry-After": "5"})
        stream = _Stream(self.core)
        self._streams.add(stream)
        pump = asyncio.create_task(stream.pump(), name="igd-web-stream")
        response = web.StreamResponse(
            headers=_headers(
                **{
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",
                }
            )
        )
        try:
            await response.prepare(request)
            await self._run_stream(request, response, stream)
            if request.transport is not None and not request.transport.is_closing():
                await response.write_eof()
        except (ConnectionError, TimeoutError):
            log.debug("event stream client went away")
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            stream.subscription.close()
            self._streams.discard(stream)
            stream.done.set()
        return response

    async def _run_stream(
        self, request: web.Request, response: web.StreamResponse, stream: _Stream
    ) -> None:
        loop = asyncio.get_running_loop()

        async def send(text: str) -> None:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await response.write(text.encode())

        counters = self._counters()
        await send(f"retry: {RETRY_MS}\n\n" + _sse("snapshot", self._snapshot()))
        last_write = loop.time()
        next_counters = last_write + self.counters_s
        while True:
            deadline = min(last_write + self.heartbeat_s, loop.time() + TICK_S)
            if self.wan_counters is not None:
                deadline = min(deadline, next_counters)
            if not stream.wakeup.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await stream.wakeup.wait()
                if stream.pending and not stream.ended:
                    await asyncio.sleep(COALESCE_S)  # let a burst arrive as one message
            stream.wakeup.clear()
            transport = request.transport
            if stream.ended or transport is None or transport.is_closing():
                return
            chunks: list[str] = []
            events, overflow = stream.take()
            if events or overflow:
                ops = None if overflow else mapping_ops(events, self.core)
                if ops is None:
                    chunks.append(_sse("snapshot", self._snapshot()))
                elif ops:
                    delta = {
                        "ops": ops,
                        "mapping_count": self.core.mapping_count,
                        "system_update_id": self.core.system_update_id,
                    }
                    chunks.append(_sse("mappings", delta))
            now = loop.time()
            if self.wan_counters is not None and now >= next_counters:
                next_counters = now + self.counters_s
                latest = self._counters()
                if latest != counters:
                    counters = latest
                    chunks.append(_sse("counters", {"counters": counters_json(latest)}))
            if not chunks and now - last_write >= self.heartbeat_s:
                chunks.append(": keep-alive\n\n")
            if chunks:
                await send("".join(chunks))
                last_write = loop.time()
            if stream.finished and not stream.pending:
                return

    # -- admin actions ---------------------------------------------------------------------------

    async def _auth(self, request: web.Request) -> web.StreamResponse:
        """204 when the token is right: lets the page unlock its buttons before using them."""
        refusal = self._authorise(request)
        return refusal or web.Response(status=204, headers=_headers())

    async def _delete_mapping(self, request: web.Request) -> web.StreamResponse:
        refusal = self._authorise(request)
        if refusal is not None:
            return refusal
        try:
            protocol = parse_protocol(request.match_info["protocol"])
        except InvalidProtocolError:
            return _error(400, "bad-request", "protocol must be TCP or UDP")
        text = request.match_info["port"]
        if not (text.isascii() and text.isdigit() and 0 < int(text) <= 65535):
            return _error(400, "bad-request", "port must be 1-65535")
        remote_text = request.query.get("remote_host", "")
        remote: IPv4Address | None = None
        if remote_text not in ("", "0.0.0.0"):
            try:
                remote = IPv4Address(remote_text)
            except ValueError:
                return _error(400, "bad-request", "remote_host must be an IPv4 address")
        key = MappingKey(protocol, int(text), remote)
        try:
            removed = await self.core.remove_mapping(key, ADMIN)
        except MappingNotFoundError:
            return _error(404, "not-found", "no such mapping")
        except NatError as exc:
            return _error(409, "refused", str(exc))
        names = {props.guid: props.name for props in self.core.connections()}
        log.info("status page: removed the mapping %s %d", protocol.name, key.external_port)
        return _json({"removed": mapping_json(removed, self.core, self.core.clock(), names)})

    async def _sharing(self, request: web.Request) -> web.StreamResponse:
        refusal = self._authorise(request)
        if refusal is not None:
            return refusal
        if request.content_type != _JSON:
            return _error(415, "unsupported", "send application/json")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, "too-large", "body too large")
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "too-large", "body too large")
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or "role" not in data:
                raise ValueError("a JSON object with 'role' is needed")
            role = parse_role(data["role"])
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, "bad-request", str(exc))
        try:
            connection = self.core.find_connection(name=request.match_info["name"])
            configuration = self.core.configuration_for(connection)
            if role is None:
                await configuration.disable_sharing()
            else:
                await configuration.enable_sharing(role)
            props = self.core.connection_props(connection)
        except (ConnectionNotFoundError, ObjectNoLongerValidError):
            return _error(404, "not-found", "no such connection")
        except NotShareableError as exc:
            return _error(409, "not-shareable", str(exc))
        except NatError as exc:
            return _error(409, "refused", str(exc))
        log.info("status page: sharing of %s set to %s", props.name, data["role"])
        return _json({"connection": connection_json(props, self.core)})


def build_web_routes(
    core: SharingManager,
    *,
    wan_counters: CountersSource | None,
    admin_token: str | None,
    base_path: str = "/status",
) -> list[web.RouteDef]:
    """The page's routes alone; prefer `StatusPage(...).install(app)`, which also ends streams."""
    page = StatusPage(core, wan_counters=wan_counters, admin_token=admin_token, base_path=base_path)
    return page.routes()
