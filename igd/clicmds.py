"""The operator's commands: they talk to the running daemon through its admin API (issue 6).

    igd status                                       version, uptime, external address, counts
    igd connections                                  connections, roles, firewall flags
    igd sharing enable CONN --public|--private       share a connection
    igd sharing disable CONN [--public|--private]    stop sharing (the flag, if given, must match)
    igd firewall enable|disable CONN                 the connection's firewall flag
    igd mappings list [--protocol P] [--origin O] [--owner ADDR] [--connection CONN]
                      [--enabled|--disabled]
    igd mappings add PROTOCOL PORT TARGET [INTERNAL_PORT] [--connection CONN] [--description TEXT]
                     [--disabled] [--remote-host ADDR] [--lease SECONDS] [--replace]
    igd mappings remove|enable|disable PROTOCOL PORT [--remote-host ADDR]
    igd events [--kind KIND]... [--count N]          follow the daemon's events
    igd check-config FILE                            validate a configuration file, no daemon

Human tables by default, `--json` for scripts (events: one object per line). The daemon is found
at --socket PATH, --url http://127.0.0.1:PORT (with --token-file or $IGD_ADMIN_TOKEN), or
$IGD_ADMIN_SOCKET / $IGD_ADMIN_URL, else `<--state-dir, default ./state>/igd.sock`.

Exit codes: 0 done; 1 the daemon refused (its error, one line) or check-config found the file
invalid; 2 bad usage; 3 the daemon could not be reached or stopped answering; 4 the daemon
refused the credentials (401); 130 interrupted. Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, cast
from urllib.parse import quote

from igd.admin.client import (
    DEFAULT_TIMEOUT_S,
    AdminClient,
    AdminError,
    AdminUnreachable,
    default_socket_path,
)

__all__ = [
    "COMMANDS",
    "EXIT_AUTH",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "add_subcommands",
    "build_parser",
    "handles",
    "main",
    "run",
]

PROG: Final = "igd"

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3
EXIT_AUTH: Final = 4
EXIT_INTERRUPTED: Final = 130

COMMANDS: Final = (
    "status",
    "connections",
    "sharing",
    "firewall",
    "mappings",
    "events",
    "check-config",
)
EVENT_KINDS: Final = (
    "mapping_added",
    "mapping_changed",
    "mapping_removed",
    "number_of_entries_changed",
    "external_address_changed",
    "sharing_changed",
    "firewall_changed",
    "connection_added",
    "connection_changed",
    "connection_removed",
)
ORIGINS: Final = ("admin", "upnp", "natpmp", "pcp")
ENV_SOCKET: Final = "IGD_ADMIN_SOCKET"
ENV_URL: Final = "IGD_ADMIN_URL"
ENV_TOKEN: Final = "IGD_ADMIN_TOKEN"
MAX_TOKEN_FILE_BYTES: Final = 4096

_HANDLER: Final = "admin_handler"


class UsageError(Exception):
    """A bad argument found after parsing (an unreadable token file); exit 2."""


class _Refused(Exception):
    """A refusal decided on this side (a role guard); exit 1."""


class _Parser(argparse.ArgumentParser):
    """One-line errors instead of the usage block, like igd.cli's parser."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# ---- argument types ------------------------------------------------------------------------------


def _protocol(text: str) -> str:
    if text.upper() not in ("TCP", "UDP"):
        raise argparse.ArgumentTypeError(f"protocol must be tcp or udp, not {text!r}")
    return text.upper()


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be an integer in 1..65535, not {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], not {text!r}")
    return value


# ---- the parser ----------------------------------------------------------------------------------


def _client_options() -> argparse.ArgumentParser:
    """Options shared by the commands that talk to the daemon."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--socket", type=Path, metavar="PATH", help=f"the admin socket (${ENV_SOCKET})"
    )
    where.add_argument(
        "--url",
        metavar="URL",
        help=f"the admin API on loopback TCP, http://127.0.0.1:PORT (${ENV_URL})",
    )
    where.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the daemon's state directory (default: state)",
    )
    common.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the admin token (${ENV_TOKEN} holds the token itself)",
    )
    common.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"wait at most this long for an answer (default: {DEFAULT_TIMEOUT_S:g})",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    return common


def add_subcommands(subparsers: Any) -> None:
    """Add the operator commands to `igd`'s subparsers (an argparse _SubParsersAction)."""
    common = _client_options()

    status = subparsers.add_parser("status", parents=[common], help="the running daemon's status")
    status.set_defaults(**{_HANDLER: _status})

    connections = subparsers.add_parser(
        "connections", parents=[common], help="connections, sharing roles, firewall flags"
    )
    connections.set_defaults(**{_HANDLER: _connections})

    sharing = subparsers.add_parser("sharing", help="share a connection or stop sharing it")
    sharing_actions = sharing.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=type(sharing)
    )
    for action, text in (("enable", "share CONN"), ("disable", "stop sharing CONN")):
        parser = sharing_actions.add_parser(action, parents=[common], help=text)
        parser.add_argument("connection", metavar="CONN", help="name, interface name or GUID")
        role = parser.add_mutually_exclusive_group(required=action == "enable")
        role.add_argument("--public", dest="role", action="store_const", const="public")
        role.add_argument("--private", dest="role", action="store_const", const="private")
        parser.set_defaults(**{_HANDLER: _sharing})

    firewall = subparsers.add_parser("firewall", help="a connection's firewall flag")
    firewall_actions = firewall.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=type(firewall)
    )
    for action in ("enable", "disable"):
        parser = firewall_actions.add_parser(action, parents=[common], help=f"{action} it")
        parser.add_argument("connection", metavar="CONN", help="name, interface name or GUID")
        parser.set_defaults(**{_HANDLER: _firewall})

    _add_mapping_commands(subparsers, common)

    events = subparsers.add_parser(
        "events", parents=[common], help="follow the daemon's events (Ctrl-C stops)"
    )
    events.add_argument(
        "--kind", action="append", choices=EVENT_KINDS, metavar="KIND", help="only these kinds"
    )
    events.add_argument("--count", type=_positive, metavar="N", help="stop after N events")
    events.set_defaults(**{_HANDLER: _events})

    check = subparsers.add_parser(
        "check-config", help="validate a configuration file (no daemon needed)"
    )
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--json", action="store_true", help="print JSON instead of text")
    check.set_defaults(**{_HANDLER: _check_config})


def _add_mapping_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    mappings = subparsers.add_parser("mappings", help="list, add, remove, enable, disable mappings")
    actions = mappings.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=type(mappings)
    )
    listing = actions.add_parser("list", parents=[common], help="list mappings")
    listing.add_argument("--protocol", type=_protocol, metavar="P", help="tcp or udp")
    listing.add_argument("--origin", choices=ORIGINS, help="the mechanism that made them")
    listing.add_argument("--owner", metavar="ADDR", help="the LAN client that asked for them")
    listing.add_argument("--connection", metavar="CONN", help="on this connection")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--enabled", dest="enabled", action="store_const", const=True)
    state.add_argument("--disabled", dest="enabled", action="store_const", const=False)
    listing.set_defaults(**{_HANDLER: _mappings_list})

    add = actions.add_parser("add", parents=[common], help="add a mapping as the administrator")
    add.add_argument("protocol", type=_protocol, metavar="PROTOCOL", help="tcp or udp")
    add.add_argument("external_port", type=_port, metavar="PORT", help="the external port")
    add.add_argument("target", metavar="TARGET", help="the LAN host: an IPv4 address or a name")
    add.add_argument(
        "internal_port", type=_port, nargs="?", metavar="INTERNAL_PORT", help="default: PORT"
    )
    add.add_argument("--connection", metavar="CONN", help="default: the public connection")
    add.add_argument("--description", default="", metavar="TEXT")
    add.add_argument("--disabled", action="store_true", help="add it disabled")
    add.add_argument("--remote-host", metavar="ADDR", help="only this remote host may use it")
    add.add_argument("--lease", type=_positive, metavar="SECONDS", help="default: permanent")
    add.add_argument("--replace", action="store_true", help="overwrite the same mapping")
    add.set_defaults(**{_HANDLER: _mappings_add})

    for action, text in (
        ("remove", "remove a mapping"),
        ("enable", "enable a mapping"),
        ("disable", "disable a mapping (kept, forwards nothing)"),
    ):
        parser = actions.add_parser(action, parents=[common], help=text)
        parser.add_argument("protocol", type=_protocol, metavar="PROTOCOL", help="tcp or udp")
        parser.add_argument("external_port", type=_port, metavar="PORT")
        parser.add_argument("--remote-host", metavar="ADDR", help="the mapping for this host")
        parser.set_defaults(**{_HANDLER: _mapping_change})


def build_parser() -> argparse.ArgumentParser:
    """A standalone `igd` parser with only the operator commands (tests, tools)."""
    parser = _Parser(prog=PROG, description="Operate a running igd daemon.")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    add_subcommands(commands)
    return parser


def handles(args: argparse.Namespace) -> bool:
    """Whether `args` is one of the commands here (for igd.cli to dispatch to `run`)."""
    return callable(getattr(args, _HANDLER, None))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` with `build_parser()` and run the command; the exit code."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args)


# ---- running -------------------------------------------------------------------------------------

Handler = Callable[[AdminClient, argparse.Namespace], Awaitable[int]]


def run(args: argparse.Namespace) -> int:
    """Run a parsed operator command; the exit code. Failures are one line on stderr."""
    handler: object = getattr(args, _HANDLER, None)
    if handler is _check_config:
        return _check_config(args)
    if not callable(handler):
        return _fail(EXIT_USAGE, "no command given")
    try:
        return asyncio.run(_with_client(cast(Handler, handler), args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except UsageError as exc:
        return _fail(EXIT_USAGE, str(exc))


async def _with_client(handler: Handler, args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        async with client:
            return await handler(client, args)
    except AdminError as exc:
        if args.json:
            _emit(exc.as_json())
        code = EXIT_AUTH if exc.status == 401 else EXIT_REFUSED
        return _fail(code, f"{exc.message} ({exc.code})")
    except _Refused as exc:
        return _fail(EXIT_REFUSED, str(exc))
    except AdminUnreachable as exc:
        return _fail(EXIT_UNREACHABLE, str(exc))


def _client(args: argparse.Namespace) -> AdminClient:
    """Where the daemon is, from the flags, then the environment, then the default."""
    token = _token(args)
    url: str | None = args.url
    socket: Path | None = args.socket
    if url is None and socket is None and args.state_dir is None:
        url = os.environ.get(ENV_URL) or None
        env_socket = os.environ.get(ENV_SOCKET)
        if url is None and env_socket:
            socket = Path(env_socket)
    if url is None and socket is None:
        socket = default_socket_path(args.state_dir)
    try:
        if url is not None:
            return AdminClient(url=url, token=token, timeout_s=args.timeout)
        return AdminClient(socket_path=socket, token=token, timeout_s=args.timeout)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _token(args: argparse.Namespace) -> str | None:
    path: Path | None = args.token_file
    if path is None:
        return os.environ.get(ENV_TOKEN) or None
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--token-file: cannot read {path}: {exc.strerror or exc}") from None
    lines = data.decode("utf-8", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    if not token or len(data) > MAX_TOKEN_FILE_BYTES:
        raise UsageError(f"--token-file: {path} holds no token on its first line")
    return token


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return code


def _emit(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False), flush=True)


def _say(text: str) -> None:
    print(text, flush=True)


def _quote(segment: str) -> str:
    return quote(segment, safe="")


# ---- output helpers ------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, trailing blanks removed."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    """12:03:04, or 3d 12:03:04."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def _on(flag: object) -> str:
    return "on" if flag else "off"


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _mapping_text(mapping: Mapping[str, Any]) -> str:
    """TCP 8080 -> 198.18.0.10:80 on wan0."""
    target = mapping["target_name"] or mapping["internal_client"]
    text = f"{mapping['protocol']} {mapping['external_port']}"
    if mapping.get("remote_host"):
        text += f" from {mapping['remote_host']}"
    text += f" -> {target}:{mapping['internal_port']}"
    if mapping.get("connection"):
        text += f" on {mapping['connection']}"
    return text


def _lease(mapping: Mapping[str, Any]) -> str:
    remaining = mapping.get("remaining_s")
    return "permanent" if remaining is None else _duration(remaining)


# ---- the commands --------------------------------------------------------------------------------


async def _status(client: AdminClient, args: argparse.Namespace) -> int:
    data = await client.get("/v1/status")
    if args.json:
        _emit(data)
        return EXIT_OK
    mappings = data["mappings"]
    origins = ", ".join(f"{name} {count}" for name, count in mappings["by_origin"].items())
    rows = [
        ("external address", _dash(data["external_address"])),
        ("public", _dash(data["public_connection"])),
        ("private", ", ".join(data["private_connections"]) or "-"),
        ("firewall", _on(data["firewall"]["enabled"])),
        ("connections", str(data["connections"])),
        (
            "mappings",
            f"{mappings['total']} ({mappings['enabled']} enabled, {mappings['active']} active):"
            f" {origins}",
        ),
        ("update id", str(data["system_update_id"])),
    ]
    width = max(len(name) for name, _ in rows)
    _say(f"igd {data['version']}, up {_duration(data['uptime_s'])}")
    for name, value in rows:
        _say(f"{name.ljust(width)}  {value}")
    return EXIT_OK


async def _connections(client: AdminClient, args: argparse.Namespace) -> int:
    data = await client.get("/v1/connections")
    if args.json:
        _emit(data)
        return EXIT_OK
    rows = [
        (
            c["name"],
            c["ifname"],
            c["status"],
            c["media_type"],
            _dash(c["role"]),
            _on(c["firewall"]) + ("" if c["firewall"] == c["effective_firewall"] else "*"),
            " ".join(c["addresses"]) or "-",
            str(c["mappings"]),
        )
        for c in data["connections"]
    ]
    headers = ("NAME", "IFNAME", "STATUS", "MEDIA", "ROLE", "FIREWALL", "ADDRESSES", "MAPPINGS")
    _say(_table(headers, rows))
    if any(c["firewall"] != c["effective_firewall"] for c in data["connections"]):
        _say("* the global firewall mode overrides this flag")
    return EXIT_OK


def _connection_path(args: argparse.Namespace) -> str:
    return f"/v1/connections/{_quote(args.connection)}"


async def _sharing(client: AdminClient, args: argparse.Namespace) -> int:
    path = _connection_path(args)
    if args.action == "enable":
        data = await client.post(f"{path}/sharing", {"role": args.role})
    else:
        if args.role is not None:
            current = await client.get(path)
            if current["role"] != args.role:
                shown = "not shared" if current["role"] is None else f"shared as {current['role']}"
                raise _Refused(f"{current['name']} is {shown}, not {args.role}; nothing changed")
        data = await client.post(f"{path}/sharing", {"role": None})
    if args.json:
        _emit(data)
    elif data["role"] is None:
        _say(f"{data['name']}: not shared")
    else:
        _say(f"{data['name']}: shared as {data['role']} (firewall {_on(data['firewall'])})")
    return EXIT_OK


async def _firewall(client: AdminClient, args: argparse.Namespace) -> int:
    data = await client.post(
        f"{_connection_path(args)}/firewall", {"enabled": args.action == "enable"}
    )
    if args.json:
        _emit(data)
    else:
        _say(
            f"{data['name']}: firewall {_on(data['firewall'])}"
            f" (effective {_on(data['effective_firewall'])})"
        )
    return EXIT_OK


async def _mappings_list(client: AdminClient, args: argparse.Namespace) -> int:
    params: list[tuple[str, str]] = []
    for name in ("protocol", "origin", "owner", "connection"):
        value = getattr(args, name)
        if value is not None:
            params.append((name, value))
    if args.enabled is not None:
        params.append(("enabled", "true" if args.enabled else "false"))
    data = await client.get("/v1/mappings", params)
    if args.json:
        _emit(data)
        return EXIT_OK
    if not data["mappings"]:
        _say("no mappings")
        return EXIT_OK
    rows = [
        (
            m["protocol"],
            str(m["external_port"]),
            m["remote_host"] or "*",
            f"{m['target_name'] or m['internal_client']}:{m['internal_port']}",
            ("yes" if m["enabled"] else "no") + ("" if m["active"] or not m["enabled"] else "*"),
            _dash(m["connection"]),
            m["origin"],
            _dash(m["owner"]),
            _lease(m),
            m["description"],
        )
        for m in data["mappings"]
    ]
    headers = (
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
    )
    _say(_table(headers, rows))
    if any(m["enabled"] and not m["active"] for m in data["mappings"]):
        _say("* enabled but not forwarding: its connection is not shared publicly or firewalled")
    return EXIT_OK


async def _mappings_add(client: AdminClient, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "protocol": args.protocol,
        "external_port": args.external_port,
        "internal_client": args.target,
        "internal_port": args.internal_port or args.external_port,
        "description": args.description,
        "enabled": not args.disabled,
    }
    if args.connection is not None:
        body["connection"] = args.connection
    if args.remote_host is not None:
        body["remote_host"] = args.remote_host
    if args.lease is not None:
        body["lease_s"] = args.lease
    if args.replace:
        body["replace"] = True
    data = await client.post("/v1/mappings", body)
    if args.json:
        _emit(data)
    else:
        state = "enabled" if data["enabled"] else "disabled"
        _say(f"added {_mapping_text(data)} ({state}, lease {_lease(data)})")
    return EXIT_OK


async def _mapping_change(client: AdminClient, args: argparse.Namespace) -> int:
    path = f"/v1/mappings/{args.protocol}/{args.external_port}"
    params = None if args.remote_host is None else {"remote_host": args.remote_host}
    if args.action == "remove":
        data = await client.delete(path, params)
    else:
        data = await client.post(f"{path}/{args.action}", params=params)
    if args.json:
        _emit(data)
    else:
        done = {"remove": "removed", "enable": "enabled", "disable": "disabled"}[args.action]
        _say(f"{done} {_mapping_text(data)}")
    return EXIT_OK


async def _events(client: AdminClient, args: argparse.Namespace) -> int:
    params = [("kind", kind) for kind in args.kind or ()]
    if args.count is not None:
        params.append(("limit", str(args.count)))
    seen = 0
    async for item in client.stream("/v1/events", params):
        if item.get("type") in ("subscribed", "heartbeat"):
            continue
        if args.json:
            print(json.dumps(item, ensure_ascii=False, separators=(",", ":")), flush=True)
        else:
            _say(_event_text(item))
        seen += 1
        if args.count is not None and seen >= args.count:
            return EXIT_OK
    raise AdminUnreachable("the daemon closed the event stream")


def _event_text(event: Mapping[str, Any]) -> str:
    """One human line per event: local time, what happened."""
    when = time.strftime("%H:%M:%S", time.localtime(float(event.get("time", 0.0))))
    kind = str(event.get("type", "?"))
    return f"{when}  {_event_summary(kind, event)}"


def _event_summary(kind: str, event: Mapping[str, Any]) -> str:
    if kind == "mapping_added":
        mapping = event["mapping"]
        return f"mapping added: {_mapping_text(mapping)} ({mapping['origin']})"
    if kind == "mapping_changed":
        return f"mapping {event['reason']}: {_mapping_text(event['new'])}"
    if kind == "mapping_removed":
        return f"mapping removed ({event['reason']}): {_mapping_text(event['mapping'])}"
    if kind == "number_of_entries_changed":
        return f"mappings: {event['count']}"
    if kind == "external_address_changed":
        return f"external address: {_dash(event['old'])} -> {_dash(event['new'])}"
    if kind == "sharing_changed":
        role = event["role"] or "not shared"
        return f"sharing: {_dash(event['connection'])} {role} ({event['cause']})"
    if kind == "firewall_changed":
        where = event["connection"] or "global"
        return (
            f"firewall: {where} {_on(event['interface_enabled'])}"
            f" (effective {_on(event['effective_enabled'])})"
        )
    if kind in ("connection_added", "connection_removed"):
        connection = event["connection"]
        verb = kind.removeprefix("connection_")
        return f"connection {verb}: {connection['name']} ({connection['status']})"
    if kind == "connection_changed":
        new = event["new"]
        return f"connection changed: {new['name']} ({new['status']})"
    if kind == "events_dropped":
        return f"{event['count']} events dropped: this reader fell behind"
    return kind


def _check_config(args: argparse.Namespace) -> int:
    from igd.config import ConfigError, load_config  # here, so the other commands stay light

    path: Path = args.file
    try:
        config = load_config(path, None)
    except ConfigError as exc:
        if args.json:
            _emit(
                {"file": str(path), "valid": False, "error": {"key": exc.key, "message": str(exc)}}
            )
        message = str(exc) if exc.where else f"{path}: {exc}"
        return _fail(EXIT_REFUSED, message)
    if args.json:
        _emit({"file": str(path), "valid": True, "config": _config_json(config)})
    else:
        _say(f"{path}: ok")
    return EXIT_OK


def _config_json(config: object) -> dict[str, Any]:
    """A Config as JSON: addresses and paths as text, rules and reserved ports in file syntax."""
    from dataclasses import fields

    from igd.natcore import IPProtocol, PermissionRule

    def convert(value: object) -> Any:
        if isinstance(value, PermissionRule):
            low, high = value.external_ports
            ilow, ihigh = value.internal_ports
            verb = "allow" if value.allow else "deny"
            return f"{verb} {low}-{high} {value.network} {ilow}-{ihigh}"
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], IPProtocol):
            return f"{value[0].name.lower()}/{value[1]}"
        if isinstance(value, frozenset):
            return sorted((convert(item) for item in value), key=str)
        if isinstance(value, tuple | list):
            return [convert(item) for item in value]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    return {f.name: convert(getattr(config, f.name)) for f in fields(config)}  # type: ignore[arg-type]
