"""The UPnP HTTP front: descriptions by GET, SOAP control by POST, on aiohttp (DESC, CTRL-01..14).

`build_app(config)` is the app factory the daemon runs (architecture 2, 3.6: the only aiohttp
module of igd.soap). Every request passes these gates first, in this order:

1. source (GEN-02, ST-02, ST-33): the peer must be an IPv4 address (IPv4-mapped IPv6 accepted)
   inside one of `lan_networks`; otherwise 403 and the connection is closed;
2. Host (GEN-09, ST-06, DNS rebinding): an IP literal, either the address the connection arrived
   on or one of `allowed_hosts` (IPv6 in brackets, zone ids ignored), with no port or our own
   port; a name such as `evil.example` is 403. HTTP/1.0 requests may omit Host (GEN-06);
3. Origin (ST-07): any `Origin` header is 403 (except under `origin_checked_paths`, whose
   handlers check it themselves); no response ever carries CORS headers;
4. load: at most `max_concurrent_requests` requests run at once, others get 503 (GEN-10).

Control (CTRL-01..14): POST only (other methods 405 `Allow: POST`); no SOAPACTION 400; a
Content-Type other than text/xml (or a charset other than UTF-8) 415, an absent one tolerated;
a SOAPACTION that does not parse, or names another service kind or a higher version than the one
addressed, is fault 401 (CTRL-08/09); the answer uses the request's namespace; body parse errors
400, argument errors fault 402; UPnPError faults 500; an unexpected exception or a handler running
past ACTION_TIMEOUT_S is fault 501 and logged, never a traceback (CTRL-10). Event URLs answer
GET and the like with 405 `Allow: SUBSCRIBE, UNSUBSCRIBE` (DESC-15) and hand SUBSCRIBE and
UNSUBSCRIBE to the optional `event_handler` (501 without one). Unknown paths are 404.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Final

from aiohttp import web

from igd.natcore import SharingManager
from igd.netif import peer_ipv4
from igd.soap.actions import (
    QUERY_STATE_VARIABLE,
    ActionRequest,
    ControlSettings,
    WanStatus,
    build_action_response,
    query_state_variable,
    run_action,
)
from igd.soap.envelope import (
    CONTROL_NS,
    SoapAction,
    SoapActionError,
    SoapParseError,
    build_fault,
    parse_request,
    parse_soap_action_header,
)
from igd.soap.errors import ERRORS_BY_CODE, ActionFailed, InvalidAction, UPnPError
from igd.upnp import (
    CONTENT_TYPE,
    DeviceInfo,
    RootDevice,
    ServiceEndpoint,
    render_documents,
    service_urn,
)

__all__ = [
    "ACTION_TIMEOUT_S",
    "KEEPALIVE_TIMEOUT_S",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_FIELD_SIZE",
    "MAX_HEADERS",
    "MAX_LINE_SIZE",
    "UPNP_STATS",
    "EventHandler",
    "UpnpHttpConfig",
    "UpnpStats",
    "WanStatus",
    "build_app",
    "host_allowed",
]

log = logging.getLogger(__name__)

MAX_LINE_SIZE: Final = 4096
"""Longest request line and header line accepted, in bytes (GEN-10: headers <= 8 KiB)."""
MAX_FIELD_SIZE: Final = 4096
"""Longest header field accepted, in bytes (GEN-10)."""
MAX_HEADERS: Final = 64
"""Most header fields in one request (GEN-10)."""
KEEPALIVE_TIMEOUT_S: Final = 30.0
"""Idle keep-alive connections are closed after this many seconds (GEN-10: <= 30 s)."""
ACTION_TIMEOUT_S: Final = 25.0
"""An action still running after this is answered 501, inside the 30 s of CTRL-10."""
MAX_CONCURRENT_REQUESTS: Final = 64
"""Default bound on requests handled at once; more get 503 (GEN-10, rule 5.7)."""

_EXT_HEADER: Final = "EXT"
_ALLOW_CONTROL: Final = "POST"
_ALLOW_EVENT: Final = "SUBSCRIBE, UNSUBSCRIBE"
_GENA_METHODS: Final = frozenset({"SUBSCRIBE", "UNSUBSCRIBE"})
_UNKNOWN: Final = "(unknown)"

EventHandler = Callable[[web.Request, RootDevice, ServiceEndpoint], Awaitable[web.StreamResponse]]
"""SUBSCRIBE/UNSUBSCRIBE on an event URL, for the GENA front-end to supply."""


@dataclass(frozen=True)
class UpnpHttpConfig:
    """Everything the UPnP HTTP front needs; the daemon builds it from Config and the core."""

    core: SharingManager
    roots: tuple[RootDevice, ...]
    device_info: DeviceInfo
    wan: WanStatus
    lan_networks: tuple[IPv4Network, ...]
    allowed_hosts: frozenset[str]
    server: str
    allow_private_external: bool = False
    started_at: float = 0.0
    max_body_bytes: int = 16384
    show_all_mappings: bool = False
    max_concurrent_requests: int = MAX_CONCURRENT_REQUESTS
    origin_checked_paths: tuple[str, ...] = ()
    """Path prefixes whose handlers check Origin themselves (the status page's API)."""


@dataclass
class UpnpStats:
    """Metrics: (kind, action|"(unknown)", "ok"|code), HTTP statuses, refusals by gate; bounded."""

    actions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)


UPNP_STATS: Final = web.AppKey("upnp_stats", UpnpStats)
"""The app's UpnpStats; also stored under the plain key "upnp_stats"."""


# ---- pure helpers ------------------------------------------------------------------------------


def _strip_zone(text: str) -> str:
    """An IPv6 literal without its zone id ("%eth0" or RFC 6874's "%25eth0")."""
    return text.split("%", 1)[0]


def _normalise_host(text: str) -> IPv4Address | IPv6Address:
    """An allowed_hosts entry: IPv4 or IPv6 literal, brackets and zone optional (ValueError)."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    return ip_address(_strip_zone(inner))


def _split_host(value: str) -> tuple[IPv4Address | IPv6Address, int | None] | None:
    """Host header -> (IP literal, port or None); None when it is not an IP literal (GEN-09)."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host_text, rest = value[1:end], value[end + 1 :]
        try:
            host: IPv4Address | IPv6Address = IPv6Address(_strip_zone(host_text))
        except ValueError:
            return None
    else:
        host_text, colon, port_text = value.partition(":")
        rest = colon + port_text
        if not host_text or not all(c.isdigit() or c == "." for c in host_text):
            return None
        try:
            host = IPv4Address(host_text)
        except ValueError:
            return None
    if not rest:
        return host, None
    port_text = rest[1:]
    if not rest.startswith(":") or not port_text.isascii() or not port_text.isdigit():
        return None
    if len(port_text) > 5 or int(port_text) > 65535:
        return None
    return host, int(port_text)


def host_allowed(
    value: str | None,
    allowed: frozenset[IPv4Address | IPv6Address],
    port: int | None,
) -> bool:
    """Whether a Host header names one of `allowed` with no port or `port` (GEN-09, ST-06)."""
    if value is None:
        return False
    parsed = _split_host(value.strip())
    if parsed is None:
        return False
    host, host_port = parsed
    if host not in allowed:
        return False
    return host_port is None or port is None or host_port == port


def _local_address(request: web.BaseRequest) -> tuple[IPv4Address | IPv6Address | None, int | None]:
    """The address and port the connection arrived on."""
    transport = request.transport
    sock = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sock, tuple) or len(sock) < 2:
        return None, None
    try:
        address = ip_address(_strip_zone(str(sock[0])))
    except ValueError:
        return None, int(sock[1])
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address, int(sock[1])


# ---- responses ---------------------------------------------------------------------------------


def _xml_response(body: bytes, *, status: int = 200, ext: bool = False) -> web.Response:
    headers = {"Content-Type": CONTENT_TYPE}
    if ext:
        headers[_EXT_HEADER] = ""
    return web.Response(body=body, status=status, headers=headers)


def _fault(error: UPnPError) -> web.Response:
    """HTTP 500 with the UPnPError fault of CTRL-06."""
    return _xml_response(build_fault(error), status=500)


def _plain(status: int, text: str, *, allow: str | None = None) -> web.Response:
    response = web.Response(status=status, text=text)
    if allow is not None:
        response.headers["Allow"] = allow
    return response


def _refuse(status: int, text: str) -> web.Response:
    response = _plain(status, text)
    response.force_close()
    return response


# ---- the application ---------------------------------------------------------------------------


class _Front:
    """The app's state: configuration, rendered documents, the control table, the counters."""

    def __init__(self, config: UpnpHttpConfig, event_handler: EventHandler | None) -> None:
        if not config.roots:
            raise ValueError("at least one root device is needed")
        if config.max_body_bytes <= 0 or config.max_concurrent_requests <= 0:
            raise ValueError("max_body_bytes and max_concurrent_requests must be positive")
        self.config = config
        self.event_handler = event_handler
        self.allowed_hosts = frozenset(_normalise_host(h) for h in config.allowed_hosts)
        self.settings = ControlSettings(
            core=config.core,
            wan=config.wan,
            allow_private_external=config.allow_private_external,
            started_at=config.started_at or time.time(),
            show_all_mappings=config.show_all_mappings,
        )
        self.stats = UpnpStats()
        self.in_flight = 0

    # -- gates -----------------------------------------------------------------------------------

    def _gate(self, request: web.Request) -> web.Response | None:
        """The refusal for a request that fails a gate, else None (GEN-02/09/10, ST-02/06/07)."""
        peer = peer_ipv4(request.transport, request.remote)
        if peer is None or not any(peer in net for net in self.config.lan_networks):
            self.stats.refused["source"] += 1
            return _refuse(403, "Forbidden")
        local, port = _local_address(request)
        allowed = self.allowed_hosts if local is None else self.allowed_hosts | {local}
        host = request.headers.get("Host")
        if not (host is None and request.version < (1, 1)) and not host_allowed(
            host, allowed, port
        ):
            self.stats.refused["host"] += 1
            return _refuse(403, "Forbidden")
        if "Origin" in request.headers and not request.path.startswith(
            self.config.origin_checked_paths
        ):
            self.stats.refused["origin"] += 1
            return _refuse(403, "Forbidden")
        if self.in_flight >= self.config.max_concurrent_requests:
            self.stats.refused["busy"] += 1
            response = _plain(503, "Service Unavailable")
            response.headers["Retry-After"] = "1"
            return response
        return None

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Gates, then the handler; every status counted; no traceback ever leaves."""
        refusal = self._gate(request)
        if refusal is not None:
            self.stats.responses[refusal.status] += 1
            return refusal
        self.in_flight += 1
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.stats.responses[exc.status] += 1
            raise
        except ConnectionError:  # the peer went away mid-request: a remote fault, not ours
            self.stats.refused["peer_gone"] += 1
            return _plain(400, "Bad Request")
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            self.stats.responses[500] += 1
            return _plain(500, "Internal Server Error")
        finally:
            self.in_flight -= 1
        self.stats.responses[response.status] += 1
        return response

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """SERVER on every response (CTRL-05, SSDP-08)."""
        response.headers["Server"] = self.config.server

    # -- documents and event URLs ----------------------------------------------------------------

    @staticmethod
    async def document(body: bytes, request: web.Request) -> web.StreamResponse:
        """A root description or SCPD (DESC-01, DESC-10)."""
        return _xml_response(body)

    async def event(
        self, root: RootDevice, endpoint: ServiceEndpoint, request: web.Request
    ) -> web.StreamResponse:
        """GENA methods to the event handler; anything else 405 (DESC-15)."""
        if request.method not in _GENA_METHODS:
            return _plain(405, "Method Not Allowed", allow=_ALLOW_EVENT)
        if self.event_handler is None:
            return _plain(501, "Not Implemented")
        return await self.event_handler(request, root, endpoint)

    # -- control ---------------------------------------------------------------------------------

    def _record(self, endpoint: ServiceEndpoint, action: str, result: str) -> None:
        known = action == QUERY_STATE_VARIABLE or endpoint.service.action(action) is not None
        self.stats.actions[(endpoint.service.kind, action if known else _UNKNOWN, result)] += 1

    def _fault_for(self, endpoint: ServiceEndpoint, action: str, error: UPnPError) -> web.Response:
        self._record(endpoint, action, str(error.code))
        return _fault(error)

    async def control(
        self, root: RootDevice, endpoint: ServiceEndpoint, request: web.Request
    ) -> web.StreamResponse:
        """One SOAP call on `endpoint` (CTRL-01..14)."""
        if request.method != "POST":
            return _plain(405, "Method Not Allowed", allow=_ALLOW_CONTROL)
        header = request.headers.get("SOAPACTION")
        if header is None:
            return _plain(400, "Bad Request: no SOAPACTION")  # CTRL-04
        if "Content-Type" in request.headers and (
            request.content_type != "text/xml"
            or (request.charset is not None and request.charset.lower() != "utf-8")
        ):
            return _plain(415, "Unsupported Media Type")  # ST-07, GEN-07
        try:
            soap_action = parse_soap_action_header(header)
        except SoapActionError as exc:
            return self._fault_for(endpoint, _UNKNOWN, InvalidAction(str(exc)))
        except SoapParseError:
            return _plain(400, "Bad Request")
        if not self._addresses(soap_action, endpoint):
            return self._fault_for(endpoint, soap_action.action, InvalidAction("service mismatch"))
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        body = await request.read()  # client_max_size answers 413 for chunked bodies (ST-13)
        try:
            call = parse_request(body, soap_action, max_bytes=self.config.max_body_bytes)
        except SoapParseError as exc:
            if exc.upnp_code is None:
                return _plain(400, "Bad Request")
            return self._fault_for(endpoint, soap_action.action, ERRORS_BY_CODE[exc.upnp_code]())
        requester = peer_ipv4(request.transport, request.remote)
        if requester is None:  # the source gate let it in, so the socket went away
            return _refuse(403, "Forbidden")
        action_request = ActionRequest(
            root=root,
            endpoint=endpoint,
            action=call.action,
            args=call.args,
            requester=requester,
            version=min(soap_action.version, endpoint.service.version),
        )
        try:
            async with asyncio.timeout(ACTION_TIMEOUT_S):
                if soap_action.service_type == CONTROL_NS:
                    value = await query_state_variable(self.settings, action_request)
                    outputs: tuple[tuple[str, str], ...] = (("return", value),)
                else:
                    outputs = await run_action(self.settings, action_request)
            body = build_action_response(soap_action.service_type, call.action, outputs)
        except UPnPError as error:
            return self._fault_for(endpoint, call.action, error)
        except TimeoutError:
            log.error("%s.%s ran over %.0f s", endpoint.service.kind, call.action, ACTION_TIMEOUT_S)
            return self._fault_for(endpoint, call.action, ActionFailed("timed out"))
        except Exception:
            log.exception("%s.%s failed unexpectedly", endpoint.service.kind, call.action)
            return self._fault_for(endpoint, call.action, ActionFailed("internal error"))
        self._record(endpoint, call.action, "ok")
        return _xml_response(body, ext=True)  # CTRL-05

    @staticmethod
    def _addresses(soap_action: SoapAction, endpoint: ServiceEndpoint) -> bool:
        """The SOAPACTION names this service's kind at its version or lower (CTRL-08/09, 13)."""
        if soap_action.service_type == CONTROL_NS:
            return True
        service = endpoint.service
        return (
            soap_action.service_kind == service.kind
            and soap_action.version <= service.version
            and soap_action.service_type == service_urn(service.kind, soap_action.version)
        )


def _routes(front: _Front, app: web.Application) -> None:
    """Documents by GET, control URLs for SOAP, event URLs (DESC-01/10/15, CTRL-01)."""
    seen: set[str] = set()

    def claim(path: str) -> str:
        if path in seen:
            raise ValueError(f"two roots serve {path}: give them distinct url_prefix values")
        seen.add(path)
        return path

    router = app.router
    for root in front.config.roots:
        documents: Mapping[str, bytes] = render_documents(root, front.config.device_info).by_path
        for path, body in documents.items():
            router.add_get(claim(path), functools.partial(front.document, body))
        for endpoint in root.services():
            router.add_route(
                "*", claim(endpoint.control_path), functools.partial(front.control, root, endpoint)
            )
            router.add_route(
                "*", claim(endpoint.event_path), functools.partial(front.event, root, endpoint)
            )


def build_app(
    config: UpnpHttpConfig, *, event_handler: EventHandler | None = None
) -> web.Application:
    """The UPnP HTTP application: bounded body and headers, gates, routes, counters (GEN-10)."""
    front = _Front(config, event_handler)
    app = web.Application(
        client_max_size=config.max_body_bytes,
        # Honoured here; aiohttp merges them over AppRunner's own keyword arguments.
        handler_args={
            "max_line_size": MAX_LINE_SIZE,
            "max_field_size": MAX_FIELD_SIZE,
            "max_headers": MAX_HEADERS,
            "keepalive_timeout": KEEPALIVE_TIMEOUT_S,
        },
        middlewares=[front.middleware],
    )
    app.on_response_prepare.append(front.on_response_prepare)
    _routes(front, app)
    app[UPNP_STATS] = front.stats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        app["upnp_stats"] = front.stats
    return app
