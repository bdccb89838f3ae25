"""igd.web: the status page (issue 6), served on the LAN at the device's presentationURL.

This module is the page's pure view model: JSON-ready dicts of the core's state (`snapshot`) and
of its committed events (`mapping_ops`), and `dumps`, the JSON encoding every answer uses. It
imports only `igd.natcore` public names. `igd.web.routes` serves the page, its assets in
`static/`, the JSON snapshot, the live event stream and the admin actions, on aiohttp.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from igd.natcore import (
    ConnectionProps,
    Event,
    IPProtocol,
    Mapping,
    MappingAdded,
    MappingChanged,
    MappingKey,
    MappingRemoved,
    NumberOfEntriesChanged,
    SharingConnectionType,
    SharingManager,
)

__all__ = [
    "MAX_DELTA_OPS",
    "ROLE_NAMES",
    "Counters",
    "JsonDict",
    "connection_json",
    "counters_json",
    "dumps",
    "mapping_id",
    "mapping_json",
    "mapping_ops",
    "parse_protocol",
    "parse_role",
    "snapshot",
]

JsonDict = dict[str, Any]
Counters = tuple[int, int, int, int]
"""WAN bytes sent, bytes received, packets sent, packets received."""

MAX_DELTA_OPS: Final = 200
"""A batch of mapping events larger than this is sent as a fresh snapshot instead."""

ROLE_NAMES: Final = {
    SharingConnectionType.PUBLIC: "public",
    SharingConnectionType.PRIVATE: "private",
}
_ROLES_BY_NAME: Final = {name: role for role, name in ROLE_NAMES.items()}

# Characters that could end a <script> or start markup if JSON were ever embedded in HTML.
_HTML_SENSITIVE: Final = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def dumps(value: object) -> str:
    """Compact ASCII JSON with <, > and & escaped, so no answer can ever be read as markup."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).translate(_HTML_SENSITIVE)


def parse_role(value: object) -> SharingConnectionType | None:
    """ "public", "private", or None/"none" (not shared); ValueError for anything else."""
    if value is None or value == "none":
        return None
    if isinstance(value, str) and value in _ROLES_BY_NAME:
        return _ROLES_BY_NAME[value]
    raise ValueError(f"role must be 'public', 'private' or null, not {value!r}")


def mapping_id(key: MappingKey) -> str:
    """The page's id of a mapping: "TCP/40000", with "/<remote host>" when it is not wildcard."""
    text = f"{key.protocol.name}/{key.external_port}"
    return text if key.remote_host is None else f"{text}/{key.remote_host}"


def _names(core: SharingManager) -> dict[uuid.UUID, str]:
    return {props.guid: props.name for props in core.connections()}


def mapping_json(
    mapping: Mapping, core: SharingManager, now: float, names: dict[uuid.UUID, str]
) -> JsonDict:
    """One mapping as the page shows it; `remaining` is None for a permanent lease."""
    return {
        "id": mapping_id(mapping.key),
        "protocol": mapping.protocol.name,
        "external_port": mapping.external_port,
        "remote_host": None if mapping.remote_host is None else str(mapping.remote_host),
        "internal_client": str(mapping.internal_client),
        "internal_port": mapping.internal_port,
        "target_name": mapping.target_name,
        "description": mapping.description,
        "owner": None if mapping.owner is None else str(mapping.owner),
        "origin": mapping.origin.value,
        "enabled": mapping.enabled,
        "active": core.is_active(mapping),
        "permanent": mapping.permanent,
        "remaining": None if mapping.permanent else mapping.remaining(now),
        "connection": str(mapping.connection),
        "connection_name": names.get(mapping.connection),
        "created_at": mapping.created_at,
    }


def connection_json(props: ConnectionProps, core: SharingManager) -> JsonDict:
    """One connection with its sharing role and firewall state."""
    configuration = core.configuration_for(props.guid)
    role = configuration.sharing_connection_type
    return {
        "guid": str(props.guid),
        "name": props.name,
        "device_name": props.device_name,
        "ifname": props.ifname,
        "status": props.status.name.lower(),
        "media_type": props.media_type.name.lower(),
        "addresses": [str(address) for address in props.addresses],
        "loopback": props.is_loopback,
        "shareable": props.shareable,
        "role": None if role is None else ROLE_NAMES[role],
        "firewall": configuration.internet_firewall_enabled,
        "effective_firewall": configuration.effective_firewall_enabled,
    }


def counters_json(counters: Counters | None) -> JsonDict | None:
    """WAN counters by name; None when the daemon has none to report."""
    if counters is None:
        return None
    sent, received, packets_sent, packets_received = counters
    return {
        "bytes_sent": sent,
        "bytes_received": received,
        "packets_sent": packets_sent,
        "packets_received": packets_received,
    }


def snapshot(
    core: SharingManager,
    *,
    counters: Counters | None,
    admin: bool,
    title: str,
    mappings: Iterable[Mapping] | None = None,
) -> JsonDict:
    """Everything the page shows, as of now."""
    now = core.clock()
    names = _names(core)
    chosen = core.mappings() if mappings is None else mappings
    external = core.external_address
    settings = core.firewall_settings
    return {
        "title": title,
        "now": now,
        "admin": admin,
        "system_update_id": core.system_update_id,
        "external_address": None if external is None else str(external),
        "counters": counters_json(counters),
        "firewall": {
            "enabled": settings.enabled,
            "exceptions_not_allowed": settings.exceptions_not_allowed,
        },
        "connections": [connection_json(props, core) for props in core.connections()],
        "mapping_count": core.mapping_count,
        "mappings": [mapping_json(m, core, now, names) for m in chosen],
    }


def mapping_ops(events: Sequence[Event], core: SharingManager) -> list[JsonDict] | None:
    """The page's mapping deltas for a batch of events; None when it needs a fresh snapshot.

    Only mapping events become deltas ("put" a mapping, "remove" an id, in event order);
    NumberOfEntriesChanged is implied by them. Any other event, or too many, asks for a snapshot.
    """
    if len(events) > MAX_DELTA_OPS:
        return None
    now = core.clock()
    names = _names(core)
    ops: list[JsonDict] = []
    for event in events:
        if isinstance(event, MappingAdded):
            ops.append({"op": "put", "mapping": mapping_json(event.mapping, core, now, names)})
        elif isinstance(event, MappingChanged):
            if event.old.key != event.new.key:
                ops.append({"op": "remove", "id": mapping_id(event.old.key), "reason": "replaced"})
            ops.append({"op": "put", "mapping": mapping_json(event.new, core, now, names)})
        elif isinstance(event, MappingRemoved):
            ops.append(
                {"op": "remove", "id": mapping_id(event.mapping.key), "reason": event.reason.value}
            )
        elif not isinstance(event, NumberOfEntriesChanged):
            return None
    return ops


def parse_protocol(text: str) -> IPProtocol:
    """ "tcp"/"TCP" or "udp"/"UDP" from a URL; InvalidProtocolError otherwise."""
    return IPProtocol.parse(text.upper())
