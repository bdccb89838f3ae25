"""The admin API: a local JSON API of the running daemon over the ICS/ICF model (issue 6).

`build_admin_app(...)` is the aiohttp application (the only aiohttp server module of igd.admin);
`start_admin_server(...)` serves it on a Unix socket created with mode 0600 and/or on a loopback
TCP port, which needs a bearer token. The API is described by `openapi.json` beside this module,
served at GET /v1/openapi.json. Every change is made as the administrator (`igd.natcore.ADMIN`).

    GET    /v1/status                                   version, uptime, external address, counts
    GET    /v1/connections                              every present connection
    GET    /v1/connections/{connection}                 by name, interface name or GUID
    POST   /v1/connections/{connection}/sharing         {"role": "public" | "private" | null}
    POST   /v1/connections/{connection}/firewall        {"enabled": true | false}
    GET    /v1/mappings?protocol=&origin=&owner=&connection=&enabled=
    POST   /v1/mappings                                 201, Location: /v1/mappings/TCP/8080
    GET    /v1/mappings/{protocol}/{port}[?remote_host=]
    DELETE /v1/mappings/{protocol}/{port}[?remote_host=]
    POST   /v1/mappings/{protocol}/{port}/enable        (and /disable)
    GET    /v1/events[?kind=...&limit=N]                newline-delimited JSON, see below
    GET    /v1/counters                                 request, SSDP, GENA and lease counters
    GET    /v1/openapi.json                             the document
    GET    /metrics                                     Prometheus text (igd.admin.metrics)

Errors are `{"error": {"code": ..., "message": ...}}`, one sentence, and change nothing:

    400 bad_request             body not JSON or not an object, unknown/missing field, wrong type,
                                value outside the document's schema, unknown query parameter
    401 unauthenticated         a token is configured and `Authorization: Bearer TOKEN` is not there
    403 not_authorized          NotAuthorizedError (policy)
    404 not_found               NotFoundError, unknown path
    405 method_not_allowed      with Allow
    409 conflict                ConflictError; also quota_exceeded, not_shareable,
                                firewall_not_allowed
    410 gone                    ObjectNoLongerValidError (the connection went away meanwhile)
    413 too_large               body over MAX_BODY_BYTES
    415 unsupported_media_type  a body that is not application/json
    422 invalid                 InvalidRequestError: the core refused a well-formed value
    500 backend_error, internal BackendError (rolled back), our own bug (logged)
    503 busy                    MAX_EVENT_STREAMS streams are already open

Events: GET /v1/events answers 200 `application/x-ndjson`, one JSON object per line. The first
line is `{"type": "subscribed", ...}`: events committed after it are in the stream. Then one line
per event (`mapping_added`, `mapping_changed`, `mapping_removed`, `number_of_entries_changed`,
`external_address_changed`, `sharing_changed`, `firewall_changed`, `connection_added`,
`connection_changed`, `connection_removed`, and `events_dropped` when this reader fell behind),
and `{"type": "heartbeat"}` after EVENT_HEARTBEAT_S of silence. `kind` (repeatable) filters,
`limit` ends the stream after that many events; the stream also ends when the daemon stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from igd.admin.metrics import (
    METRICS_CONTENT_TYPE,
    AdminCounters,
    MetricsSources,
    build_registry,
    counters_document,
    render_metrics,
)
from igd.natcore import (
    BackendError,
    ConflictError,
    ConnectionAdded,
    ConnectionChanged,
    ConnectionCharacteristics,
    ConnectionNotFoundError,
    ConnectionProps,
    ConnectionRemoved,
    Event,
    EventsDropped,
    ExternalAddressChanged,
    FirewallChanged,
    FirewallNotAllowedError,
    InvalidRequestError,
    IPProtocol,
    MappingAdded,
    MappingChanged,
    MappingNotFoundError,
    MappingRemoved,
    MappingRequest,
    NatError,
    NotAuthorizedError,
    NotFoundError,
    NotShareableError,
    NumberOfEntriesChanged,
    ObjectNoLongerValidError,
    Origin,
    QuotaExceededError,
    SharingChanged,
    SharingConnectionType,
    SharingManager,
)
from igd.natcore import Mapping as NatMapping

__all__ = [
    "ADMIN_APP",
    "API_PREFIX",
    "EVENT_HEARTBEAT_S",
    "EVENT_KINDS",
    "MAX_BODY_BYTES",
    "MAX_EVENT_STREAMS",
    "AdminApp",
    "AdminServer",
    "build_admin_app",
    "load_openapi",
    "start_admin_server",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

API_PREFIX: Final = "/v1"
MAX_BODY_BYTES: Final = 16 * 1024
"""Largest request body accepted; the biggest valid one (POST /v1/mappings) is under 1 KiB."""
MAX_EVENT_STREAMS: Final = 8
"""Event streams open at once; more are answered 503 busy (architecture 5.7)."""
EVENT_QUEUE_EVENTS: Final = 1024
"""Events queued per stream before the oldest are dropped (and `events_dropped` is sent)."""
EVENT_HEARTBEAT_S: Final = 15.0
"""A heartbeat line after this much silence, so readers and proxies see a live stream."""
MAX_EVENT_LIMIT: Final = 1_000_000
MAX_LINE_SIZE: Final = 4096
MAX_FIELD_SIZE: Final = 4096
MAX_HEADERS: Final = 64
KEEPALIVE_TIMEOUT_S: Final = 30.0
SHUTDOWN_TIMEOUT_S: Final = 2.0
"""Handlers still running this long after the listener closes are cancelled."""
SOCKET_MODE: Final = 0o600
MAX_HOST_NAME_CHARS: Final = 253
"""A DNS name (RFC 1035 2.3.4), for ICS NAME targets."""

NDJSON: Final = "application/x-ndjson"

EVENT_KINDS: Final[Mapping[str, type]] = {
    "mapping_added": MappingAdded,
    "mapping_changed": MappingChanged,
    "mapping_removed": MappingRemoved,
    "number_of_entries_changed": NumberOfEntriesChanged,
    "external_address_changed": ExternalAddressChanged,
    "sharing_changed": SharingChanged,
    "firewall_changed": FirewallChanged,
    "connection_added": ConnectionAdded,
    "connection_changed": ConnectionChanged,
    "connection_removed": ConnectionRemoved,
}
"""`kind` values of GET /v1/events; events_dropped is always delivered."""

_KIND_OF: Final = {cls: name for name, cls in EVENT_KINDS.items()}
_PROTOCOLS: Final = {"TCP": IPProtocol.TCP, "UDP": IPProtocol.UDP}
_PROTOCOL_SPELLINGS: Final = {**_PROTOCOLS, "tcp": IPProtocol.TCP, "udp": IPProtocol.UDP}
_ROLES: Final = {"public": SharingConnectionType.PUBLIC, "private": SharingConnectionType.PRIVATE}
_ROLE_NAMES: Final = {role: name for name, role in _ROLES.items()}
_ORIGINS: Final = {origin.value: origin for origin in Origin}
_HOST_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_DIGITS: Final = re.compile(r"[0-9]{1,5}")

# NatError -> (HTTP status, error code), most specific first; the front-end's one table (5.3).
_NAT_ERRORS: Final[tuple[tuple[type[NatError], int, str], ...]] = (
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (QuotaExceededError, 409, "quota_exceeded"),
    (NotShareableError, 409, "not_shareable"),
    (FirewallNotAllowedError, 409, "firewall_not_allowed"),
    (NotAuthorizedError, 403, "not_authorized"),
    (InvalidRequestError, 422, "invalid"),
    (ObjectNoLongerValidError, 410, "gone"),
    (BackendError, 500, "backend_error"),
    (NatError, 500, "internal"),
)

# aiohttp's own refusals -> error codes.
_HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthenticated",
    403: "not_authorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def status_for(exc: NatError) -> tuple[int, str]:
    """The HTTP status and error code of a core refusal."""
    for cls, status, code in _NAT_ERRORS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"  # pragma: no cover - NatError is the last row


class ApiError(Exception):
    """A request the API refuses before or instead of asking the core."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---- JSON views of the model -------------------------------------------------------------------


def _role_name(props: ConnectionProps) -> str | None:
    """The role a connection snapshot carries in its computed characteristics."""
    if props.characteristics & ConnectionCharacteristics.SHARED:
        return "public"
    if props.characteristics & ConnectionCharacteristics.SHARED_PRIVATE:
        return "private"
    return None


def connection_view(core: SharingManager, props: ConnectionProps) -> dict[str, Any]:
    """A connection snapshot as JSON (role and firewall as the snapshot computed them)."""
    firewall = bool(props.characteristics & ConnectionCharacteristics.FIREWALLED)
    return {
        "name": props.name,
        "guid": str(props.guid),
        "ifname": props.ifname,
        "device_name": props.device_name,
        "status": props.status.name.lower(),
        "media_type": props.media_type.name.lower(),
        "role": _role_name(props),
        "firewall": firewall,
        "effective_firewall": core.firewall_settings.effective(firewall),
        "shareable": props.shareable,
        "addresses": [str(address) for address in props.addresses],
        "characteristics": sorted(flag.name.lower() for flag in props.characteristics if flag.name),
        "mappings": len(core.mappings_of(props.guid)),
    }


def _connection_name(core: SharingManager, guid: uuid.UUID | None) -> str | None:
    if guid is None:
        return None
    try:
        return core.connection_props(guid).name
    except ObjectNoLongerValidError:
        return None


def mapping_view(core: SharingManager, mapping: NatMapping, now: float) -> dict[str, Any]:
    """A mapping as JSON; `connection` is null when its connection is not present."""
    return {
        "protocol": mapping.protocol.name,
        "external_port": mapping.external_port,
        "remote_host": None if mapping.remote_host is None else str(mapping.remote_host),
        "internal_client": str(mapping.internal_client),
        "internal_port": mapping.internal_port,
        "target_name": mapping.target_name,
        "description": mapping.description,
        "enabled": mapping.enabled,
        "active": core.is_active(mapping),
        "connection": _connection_name(core, mapping.connection),
        "connection_guid": str(mapping.connection),
        "origin": mapping.origin.value,
        "owner": None if mapping.owner is None else str(mapping.owner),
        "expires_at": mapping.expires_at,
        "remaining_s": None if mapping.expires_at is None else mapping.remaining(now),
        "created_at": mapping.created_at,
    }


def event_view(core: SharingManager, event: Event, now: float) -> dict[str, Any]:
    """One event as a JSON object with a `type` and the time it was sent."""
    if isinstance(event, EventsDropped):
        return {"type": "events_dropped", "time": now, "count": event.count}
    view: dict[str, Any] = {"type": _KIND_OF[type(event)], "time": now}
    if isinstance(event, MappingAdded):
        view["mapping"] = mapping_view(core, event.mapping, now)
    elif isinstance(event, MappingChanged):
        view["reason"] = event.reason
        view["old"] = mapping_view(core, event.old, now)
        view["new"] = mapping_view(core, event.new, now)
    elif isinstance(event, MappingRemoved):
        view["reason"] = event.reason.value
        view["mapping"] = mapping_view(core, event.mapping, now)
    elif isinstance(event, NumberOfEntriesChanged):
        view["count"] = event.count
    elif isinstance(event, ExternalAddressChanged):
        view["connection"] = _connection_name(core, event.connection)
        view["old"] = None if event.old is None else str(event.old)
        view["new"] = None if event.new is None else str(event.new)
    elif isinstance(event, SharingChanged):
        view["connection"] = _connection_name(core, event.connection)
        view["connection_guid"] = str(event.connection)
        view["role"] = None if event.role is None else _ROLE_NAMES[event.role]
        view["cause"] = event.cause.value
    elif isinstance(event, FirewallChanged):
        view["connection"] = _connection_name(core, event.connection)
        view["interface_enabled"] = event.interface_enabled
        view["effective_enabled"] = event.effective_enabled
    elif isinstance(event, ConnectionAdded | ConnectionRemoved):
        view["connection"] = connection_view(core, event.props)
    elif isinstance(event, ConnectionChanged):
        view["old"] = connection_view(core, event.old)
        view["new"] = connection_view(core, event.new)
    return view


# ---- request parsing (everything the document's schemas forbid is 400) -------------------------


def _query(request: web.Request, allowed: Iterable[str], repeatable: Iterable[str] = ()) -> None:
    """Refuse unknown query parameters and repeated ones (except `repeatable`)."""
    allowed_set, repeatable_set = set(allowed), set(repeatable)
    query = request.query
    for name in sorted(set(query.keys())):
        if name not in allowed_set:
            expected = ", ".join(sorted(allowed_set)) or "none"
            raise _bad(f"unknown query parameter {name!r} (expected: {expected})")
        if name not in repeatable_set and len(query.getall(name)) > 1:
            raise _bad(f"query parameter {name!r} given more than once")


def _reject_bad_unicode(value: object, where: str) -> None:
    """Lone surrogates (legal in JSON escapes) are not text: refuse them anywhere in the body."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(f"{where} is not valid Unicode text") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_bad_unicode(key, "a field name")
            _reject_bad_unicode(item, f"field {key!r}")
    elif isinstance(value, list):
        for item in value:
            _reject_bad_unicode(item, where)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _bad(f"field {key!r} appears more than once")
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    raise _bad(f"{name} is not a JSON number")


async def _json_object(
    request: web.Request, *, required: Iterable[str] = (), optional: Iterable[str] = ()
) -> dict[str, Any]:
    """The body as a JSON object with only the fields named; an empty body is {}."""
    body = await request.read()
    if not body.strip():
        data: object = {}
    else:
        if request.content_type != "application/json":
            raise ApiError(
                415,
                "unsupported_media_type",
                f"the body must be application/json, not {request.content_type}",
            )
        try:
            data = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except ApiError:
            raise
        except ValueError as exc:
            raise _bad(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise _bad("the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise _bad(f"the body must be a JSON object, not {_json_type(data)}")
    _reject_bad_unicode(data, "the body")
    required_set, allowed = set(required), set(required) | set(optional)
    for name in data:
        if name not in allowed:
            expected = ", ".join(sorted(allowed)) or "no fields"
            raise _bad(f"unknown field {name!r} (expected: {expected})")
    for name in sorted(required_set):
        if name not in data:
            raise _bad(f"missing field {name!r}")
    return data


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _field_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(f"field {name!r} must be true or false, not {_json_type(value)}")
    return value


def _field_int(value: object, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"field {name!r} must be an integer, not {_json_type(value)}")
    if not low <= value <= high:
        raise _bad(f"field {name!r} must be in {low}..{high}, not {value}")
    return value


def _field_str(value: object, name: str, *, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _bad(f"field {name!r} must be a string, not {_json_type(value)}")
    if len(value) > max_chars:
        raise _bad(f"field {name!r} is longer than {max_chars} characters")
    return value


def _protocol(text: object, where: str) -> IPProtocol:
    protocol = _PROTOCOL_SPELLINGS.get(text) if isinstance(text, str) else None
    if protocol is None:
        shown = text if isinstance(text, str) else _json_type(text)
        raise _bad(f"{where} must be TCP or UDP, not {shown!r}")
    return protocol


def _port_text(text: str, where: str) -> int:
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise _bad(f"{where} must be an integer in 1..65535, not {text!r}")
    return int(text)


def _ipv4_text(text: str, where: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise _bad(f"{where} must be an IPv4 address, not {text!r}") from None


def _remote_host(value: object, where: str) -> IPv4Address | None:
    """null, "" or "0.0.0.0" is the wildcard; else an IPv4 address."""
    if value is None or value in ("", "0.0.0.0"):
        return None
    if not isinstance(value, str):
        raise _bad(f"{where} must be an IPv4 address or null, not {_json_type(value)}")
    return _ipv4_text(value, where)


def _target(value: object) -> IPv4Address | str:
    """internal_client: an IPv4 address, or a host name to resolve (an ICS NAME target)."""
    text = _field_str(value, "internal_client", max_chars=MAX_HOST_NAME_CHARS)
    try:
        return IPv4Address(text)
    except ValueError:
        pass
    labels = text.removesuffix(".").split(".")
    if not text or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _bad(f"field 'internal_client' must be an IPv4 address or a host name, not {text!r}")
    if all(label.isdigit() for label in labels):
        raise _bad(f"field 'internal_client' is not a valid IPv4 address: {text!r}")
    return text


class _Closable(Protocol):
    def close(self) -> None: ...


# ---- the application ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    token: str | None
    started_at: float
    version: str
    clock: Callable[[], float]


class AdminApp:
    """The handlers over one core; `app[ADMIN_APP]` of the application built for it."""

    def __init__(
        self,
        core: SharingManager,
        settings: _Settings,
        sources: MetricsSources,
        openapi: bytes,
    ) -> None:
        self.core = core
        self.settings = settings
        self.sources = sources
        self.openapi = openapi
        self.counters = AdminCounters()
        self.registry = build_registry(
            core,
            sources,
            self.counters,
            started_at=settings.started_at,
            version=settings.version,
            clock=settings.clock,
        )
        self.streams: set[_Closable] = set()

    @property
    def token(self) -> str | None:
        return self.settings.token

    def now(self) -> float:
        return self.settings.clock()

    # -- middlewares ---------------------------------------------------------------------------

    @web.middleware
    async def errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every failure becomes a JSON error; every request is counted by route and result."""
        route = request.match_info.route.name or "(unknown)"
        try:
            response = await handler(request)
            result = "ok"
        except ApiError as exc:
            result = exc.code
            response = _error_response(exc.status, exc.code, exc.message, exc.headers)
        except NatError as exc:
            status, result = status_for(exc)
            if status >= 500:
                log.error("admin %s failed: %s", route, exc)
            response = _error_response(status, result, str(exc) or type(exc).__name__)
        except web.HTTPException as exc:
            result, response = _http_error(exc)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:
            log.exception("admin %s failed", route)
            result = "internal"
            response = _error_response(500, result, "internal error; see the daemon's log")
        self.counters.requests[(route, result)] += 1
        return response

    @web.middleware
    async def auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """With a token, every request carries `Authorization: Bearer TOKEN` (else 401)."""
        token = self.token
        if token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            supplied = given.strip().encode("utf-8", "surrogateescape")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                supplied, token.encode("utf-8")
            ):
                raise ApiError(
                    401,
                    "unauthenticated",
                    "this listener needs 'Authorization: Bearer TOKEN' with the daemon's token",
                    {"WWW-Authenticate": 'Bearer realm="igd"'},
                )
        return await handler(request)

    # -- lookups -------------------------------------------------------------------------------

    def find_connection(self, ref: str) -> ConnectionProps:
        """A present connection by name (case-insensitive), interface name or GUID."""
        core = self.core
        try:
            return core.connection_props(core.find_connection(name=ref))
        except ConnectionNotFoundError:
            pass
        try:
            return core.connection_props(core.find_connection(ifname=ref))
        except ConnectionNotFoundError:
            pass
        try:
            guid = uuid.UUID(ref.strip("{}"))
        except ValueError:
            raise ConnectionNotFoundError(f"no connection {ref!r}") from None
        return core.connection_props(core.find_connection(guid=guid))

    def find_mapping(self, request: web.Request) -> NatMapping:
        """The mapping named by the path, and by ?remote_host= when given."""
        _query(request, ("remote_host",))
        protocol = _protocol(request.match_info["protocol"], "the protocol in the path")
        port = _port_text(request.match_info["port"], "the port in the path")
        candidates = tuple(self.core.mappings_in_range(port, port, protocol))
        if "remote_host" in request.query:
            wanted = _remote_host(request.query["remote_host"], "remote_host")
            candidates = tuple(m for m in candidates if m.remote_host == wanted)
        if not candidates:
            where = ""
            if "remote_host" in request.query:
                where = f" for remote host {request.query['remote_host'] or '*'}"
            raise MappingNotFoundError(f"no {protocol.name} mapping on port {port}{where}")
        return candidates[0]

    async def timed(self, operation: str, change: Awaitable[T]) -> T:
        """Await a core change, observing its latency for igd_admin_change_seconds."""
        start = time.perf_counter()
        try:
            return await change
        finally:
            self.counters.observe_change(operation, time.perf_counter() - start)

    def _json(self, data: object, status: int = 200, **headers: str) -> web.Response:
        return web.Response(
            text=_dumps(data), status=status, content_type="application/json", headers=headers
        )

    # -- handlers ------------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        _query(request, ())
        core, now = self.core, self.now()
        connections = core.connections()
        public = [c.name for c in connections if _role_name(c) == "public"]
        by_origin = dict.fromkeys(_ORIGINS, 0)
        by_protocol = dict.fromkeys(_PROTOCOLS, 0)
        enabled = active = 0
        for mapping in core.mappings():
            by_origin[mapping.origin.value] += 1
            by_protocol[mapping.protocol.name] += 1
            enabled += mapping.enabled
            active += core.is_active(mapping)
        external = core.external_address
        firewall = core.firewall_settings
        return self._json(
            {
                "version": self.settings.version,
                "api_version": 1,
                "started_at": self.settings.started_at,
                "uptime_s": max(0.0, now - self.settings.started_at),
                "external_address": None if external is None else str(external),
                "public_connection": public[0] if public else None,
                "private_connections": [c.name for c in connections if _role_name(c) == "private"],
                "firewall": {
                    "enabled": firewall.enabled,
                    "exceptions_not_allowed": firewall.exceptions_not_allowed,
                },
                "connections": len(connections),
                "mappings": {
                    "total": core.mapping_count,
                    "enabled": enabled,
                    "active": active,
                    "by_origin": by_origin,
                    "by_protocol": by_protocol,
                },
                "system_update_id": core.system_update_id,
            }
        )

    async def list_connections(self, request: web.Request) -> web.Response:
        _query(request, ())
        core = self.core
        views = [connection_view(core, props) for props in core.connections()]
        return self._json({"connections": views, "count": len(views)})

    async def get_connection(self, request: web.Request) -> web.Response:
        _query(request, ())
        props = self.find_connection(request.match_info["connection"])
        return self._json(connection_view(self.core, props))

    async def set_sharing(self, request: web.Request) -> web.Response:
        _query(request, ())
        data = await _json_object(request, required=("role",))
        role_text = data["role"]
        role: SharingConnectionType | None = None
        if role_text is not None:
            role = _ROLES.get(role_text) if isinstance(role_text, str) else None
            if role is None:
                shown = role_text if isinstance(role_text, str) else _json_type(role_text)
                raise _bad(f'field \'role\' must be "public", "private" or null, not {shown!r}')
        props = self.find_connection(request.match_info["connection"])
        if role is None:
            await self.timed("disable_sharing", self.core.disable_sharing(props.guid))
        else:
            await self.timed("enable_sharing", self.core.enable_sharing(props.guid, role))
        return self._json(connection_view(self.core, self.core.connection_props(props.guid)))

    async def set_firewall(self, request: web.Request) -> web.Response:
        _query(request, ())
        data = await _json_object(request, required=("enabled",))
        enabled = _field_bool(data["enabled"], "enabled")
        props = self.find_connection(request.match_info["connection"])
        if enabled:
            await self.timed("enable_firewall", self.core.enable_internet_firewall(props.guid))
        else:
            await self.timed("disable_firewall", self.core.disable_internet_firewall(props.guid))
        return self._json(connection_view(self.core, self.core.connection_props(props.guid)))

    async def list_mappings(self, request: web.Request) -> web.Response:
        _query(request, ("protocol", "origin", "owner", "connection", "enabled"))
        query = request.query
        protocol = _protocol(query["protocol"], "protocol") if "protocol" in query else None
        origin: Origin | None = None
        if "origin" in query:
            origin = _ORIGINS.get(query["origin"])
            if origin is None:
                expected = ", ".join(_ORIGINS)
                raise _bad(f"origin must be one of {expected}, not {query['origin']!r}")
        owner = _ipv4_text(query["owner"], "owner") if "owner" in query else None
        guid = self.find_connection(query["connection"]).guid if "connection" in query else None
        enabled: bool | None = None
        if "enabled" in query:
            if query["enabled"] not in ("true", "false"):
                raise _bad(f"enabled must be true or false, not {query['enabled']!r}")
            enabled = query["enabled"] == "true"
        core, now = self.core, self.now()
        views = [
            mapping_view(core, m, now)
            for m in core.mappings()
            if (protocol is None or m.protocol is protocol)
            and (origin is None or m.origin is origin)
            and (owner is None or m.owner == owner)
            and (guid is None or m.connection == guid)
            and (enabled is None or m.enabled is enabled)
        ]
        return self._json({"mappings": views, "count": len(views)})

    async def add_mapping(self, request: web.Request) -> web.Response:
        _query(request, ())
        data = await _json_object(
            request,
            required=("protocol", "external_port", "internal_client"),
            optional=(
                "internal_port",
                "connection",
                "description",
                "enabled",
                "remote_host",
                "lease_s",
                "replace",
            ),
        )
        protocol = _protocol(data["protocol"], "field 'protocol'")
        external_port = _field_int(data["external_port"], "external_port", 1, 65535)
        internal_port = _field_int(
            data.get("internal_port", external_port), "internal_port", 1, 65535
        )
        target = _target(data["internal_client"])
        description = _field_str(data.get("description", ""), "description", max_chars=256)
        enabled = _field_bool(data.get("enabled", True), "enabled")
        remote_host = _remote_host(data.get("remote_host"), "field 'remote_host'")
        lease_value = data.get("lease_s")
        lease = None if lease_value is None else _field_int(lease_value, "lease_s", 1, 2**32 - 1)
        replace = _field_bool(data.get("replace", False), "replace")
        connection = data.get("connection")
        if connection is None:
            public = self.core.public_connection()
            if public is None:
                raise ApiError(
                    409, "conflict", "no connection is shared publicly: name one in 'connection'"
                )
            guid = public.guid
        else:
            name = _field_str(connection, "connection", max_chars=256)
            guid = self.find_connection(name).guid
        if isinstance(target, IPv4Address):
            address, target_name = target, None
        else:
            address, target_name = await self.core.resolve_target(target), target
        mapping_request = MappingRequest(
            protocol=protocol,
            external_port=external_port,
            internal_client=address,
            internal_port=internal_port,
            description=description,
            enabled=enabled,
            remote_host=remote_host,
            lease=None if lease is None else float(lease),
            target_name=target_name,
        )
        mapping = await self.timed(
            "add_mapping",
            self.core.add_connection_mapping(guid, mapping_request, replace=replace),
        )
        location = f"{API_PREFIX}/mappings/{mapping.protocol.name}/{mapping.external_port}"
        if mapping.remote_host is not None:
            location += f"?remote_host={mapping.remote_host}"
        return self._json(mapping_view(self.core, mapping, self.now()), 201, Location=location)

    async def get_mapping(self, request: web.Request) -> web.Response:
        mapping = self.find_mapping(request)
        return self._json(mapping_view(self.core, mapping, self.now()))

    async def remove_mapping(self, request: web.Request) -> web.Response:
        mapping = self.find_mapping(request)
        removed = await self.timed("remove_mapping", self.core.remove_mapping(mapping.key))
        return self._json(mapping_view(self.core, removed, self.now()))

    async def enable_mapping(self, request: web.Request) -> web.Response:
        return await self._set_enabled(request, True)

    async def disable_mapping(self, request: web.Request) -> web.Response:
        return await self._set_enabled(request, False)

    async def _set_enabled(self, request: web.Request, enabled: bool) -> web.Response:
        await _json_object(request)
        mapping = self.find_mapping(request)
        operation = "enable_mapping" if enabled else "disable_mapping"
        changed = await self.timed(operation, self.core.set_mapping_enabled(mapping.key, enabled))
        return self._json(mapping_view(self.core, changed, self.now()))

    async def get_counters(self, request: web.Request) -> web.Response:
        _query(request, ())
        return self._json(counters_document(self.sources, self.counters))

    async def get_openapi(self, request: web.Request) -> web.Response:
        _query(request, ())
        return web.Response(body=self.openapi, content_type="application/json")

    async def metrics(self, request: web.Request) -> web.Response:
        _query(request, ())
        return web.Response(
            body=render_metrics(self.registry), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        _query(request, ("kind", "limit"), repeatable=("kind",))
        kinds: set[type] | None = None
        if "kind" in request.query:
            kinds = set()
            for name in request.query.getall("kind"):
                if name not in EVENT_KINDS:
                    raise _bad(f"unknown event kind {name!r} (expected: {', '.join(EVENT_KINDS)})")
                kinds.add(EVENT_KINDS[name])
        limit: int | None = None
        if "limit" in request.query:
            text = request.query["limit"]
            if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_EVENT_LIMIT:
                raise _bad(f"limit must be an integer in 1..{MAX_EVENT_LIMIT}, not {text!r}")
            limit = int(text)
        if len(self.streams) >= MAX_EVENT_STREAMS:
            raise ApiError(503, "busy", f"{MAX_EVENT_STREAMS} event streams are open already")
        subscription = self.core.events(kinds, EVENT_QUEUE_EVENTS)
        self.streams.add(subscription)
        self.counters.event_streams = len(self.streams)
        try:
            response = web.StreamResponse(headers={"Cache-Control": "no-store"})
            response.content_type = NDJSON
            await response.prepare(request)
            await self._write(response, {"type": "subscribed", "time": self.now()})
            sent = 0
            while limit is None or sent < limit:
                try:
                    async with asyncio.timeout(EVENT_HEARTBEAT_S):
                        event = await anext(subscription)
                except TimeoutError:
                    await self._write(response, {"type": "heartbeat", "time": self.now()})
                    continue
                except StopAsyncIteration:
                    break
                await self._write(response, event_view(self.core, event, self.now()))
                sent += 1
            await response.write_eof()
        except ConnectionError:  # the reader went away
            log.debug("an admin event reader disconnected")
        finally:
            subscription.close()
            self.streams.discard(subscription)
            self.counters.event_streams = len(self.streams)
        return response

    @staticmethod
    async def _write(response: web.StreamResponse, line: Mapping[str, Any]) -> None:
        await response.write((_dumps(line) + "\n").encode("utf-8"))

    # -- life cycle ----------------------------------------------------------------------------

    async def watch_removals(self, app: web.Application) -> AsyncIterator[None]:
        """Count MappingRemoved events (lease expiries among them) while the app runs."""
        subscription = self.core.events({MappingRemoved}, EVENT_QUEUE_EVENTS)
        task = asyncio.create_task(self._count_removals(subscription), name="igd-admin-removals")
        yield
        subscription.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _count_removals(self, subscription: AsyncIterator[Event]) -> None:
        async for event in subscription:
            if isinstance(event, MappingRemoved):
                key = (event.reason.value, event.mapping.origin.value)
                self.counters.removed[key] += 1
            elif isinstance(event, EventsDropped):
                self.counters.events_dropped += event.count

    async def close_streams(self, app: web.Application) -> None:
        """On shutdown: end every event stream, so their handlers return."""
        for stream in tuple(self.streams):
            stream.close()


def _http_error(exc: web.HTTPException) -> tuple[str, web.Response]:
    """aiohttp's own refusal (unknown path, method, oversize body) as a JSON error."""
    code = _HTTP_CODES.get(exc.status, "bad_request" if exc.status < 500 else "internal")
    headers = {}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    messages = {
        404: "no such path; see /v1/openapi.json",
        405: f"method not allowed here (allowed: {exc.headers.get('Allow', 'none')})",
        413: f"the body is larger than {MAX_BODY_BYTES} bytes",
    }
    message = messages.get(exc.status, exc.reason or f"HTTP {exc.status}")
    return code, _error_response(exc.status, code, message, headers)


ADMIN_APP: Final = web.AppKey("igd_admin", AdminApp)
"""The app's AdminApp: its counters, open streams, and the core it serves."""


def load_openapi() -> bytes:
    """The OpenAPI document shipped with the package (igd/admin/openapi.json)."""
    return importlib.resources.files("igd.admin").joinpath("openapi.json").read_bytes()


def build_admin_app(
    core: SharingManager,
    *,
    token: str | None,
    metrics_sources: MetricsSources,
    started_at: float,
    version: str,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The admin API over `core`; with `token`, every request must carry it as a bearer token."""
    if token is not None and (not token or token != token.strip() or not token.isprintable()):
        raise ValueError("the admin token must be non-empty printable text without edge spaces")
    admin = AdminApp(
        core,
        _Settings(token=token, started_at=started_at, version=version, clock=clock),
        metrics_sources,
        load_openapi(),
    )
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        handler_args={
            "max_line_size": MAX_LINE_SIZE,
            "max_field_size": MAX_FIELD_SIZE,
            "max_headers": MAX_HEADERS,
            "keepalive_timeout": KEEPALIVE_TIMEOUT_S,
        },
        middlewares=[admin.errors, admin.auth],
    )
    app[ADMIN_APP] = admin
    app.cleanup_ctx.append(admin.watch_removals)
    app.on_shutdown.append(admin.close_streams)
    v1, add = API_PREFIX, app.router.add_route
    add("GET", f"{v1}/status", admin.status, name="status")
    add("GET", f"{v1}/connections", admin.list_connections, name="list_connections")
    connection = f"{v1}/connections/{{connection:[^/]+}}"  # GUIDs may come in braces
    add("GET", connection, admin.get_connection, name="get_connection")
    add("POST", f"{connection}/sharing", admin.set_sharing, name="set_sharing")
    add("POST", f"{connection}/firewall", admin.set_firewall, name="set_firewall")
    add("GET", f"{v1}/mappings", admin.list_mappings, name="list_mappings")
    add("POST", f"{v1}/mappings", admin.add_mapping, name="add_mapping")
    mapping = f"{v1}/mappings/{{protocol}}/{{port}}"
    add("GET", mapping, admin.get_mapping, name="get_mapping")
    add("DELETE", mapping, admin.remove_mapping, name="remove_mapping")
    add("POST", f"{mapping}/enable", admin.enable_mapping, name="enable_mapping")
    add("POST", f"{mapping}/disable", admin.disable_mapping, name="disable_mapping")
    add("GET", f"{v1}/events", admin.events, name="events")
    add("GET", f"{v1}/counters", admin.get_counters, name="counters")
    add("GET", f"{v1}/openapi.json", admin.get_openapi, name="openapi")
    add("GET", "/metrics", admin.metrics, name="metrics")
    return app


# ---- serving -----------------------------------------------------------------------------------


@dataclass(slots=True)
class AdminServer:
    """A started admin listener; `await close()` stops it and removes the socket file."""

    runner: web.AppRunner
    socket_path: Path | None
    tcp_address: tuple[str, int] | None

    async def close(self) -> None:
        await self.runner.cleanup()
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()


async def start_admin_server(
    app: web.Application,
    *,
    socket_path: Path | None = None,
    tcp_port: int | None = None,
    tcp_host: str = "127.0.0.1",
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
) -> AdminServer:
    """Serve `app` on a Unix socket (0600) and/or loopback TCP (needs a token); else ValueError."""
    # A stale socket file is replaced: the daemon's state lock means no other daemon uses it.
    if socket_path is None and tcp_port is None:
        raise ValueError("the admin API needs a socket path or a TCP port")
    if tcp_port is not None:
        if app[ADMIN_APP].token is None:
            raise ValueError("the admin API on TCP needs a token")
        if not ip_address(tcp_host).is_loopback:
            raise ValueError(f"the admin API listens on loopback only, not {tcp_host}")
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout_s
    )
    await runner.setup()
    tcp_address: tuple[str, int] | None = None
    try:
        if socket_path is not None:
            site: web.BaseSite = web.UnixSite(runner, str(socket_path))
            previous = os.umask(0o177)  # the socket is born 0600: no window for other users
            try:
                await site.start()
            finally:
                os.umask(previous)
            os.chmod(socket_path, SOCKET_MODE)
        if tcp_port is not None:
            site = web.TCPSite(runner, tcp_host, tcp_port)
            await site.start()
            for address in runner.addresses:
                if isinstance(address, tuple):
                    tcp_address = (str(address[0]), int(address[1]))
    except BaseException:
        await runner.cleanup()
        raise
    return AdminServer(runner, socket_path, tcp_address)
