"""Configuration: TOML file + command-line flags -> one frozen `Config`; errors name the key.

The same keys work in the file and as flags (`--http-port 0` is `http_port = 0`); flags win.
A file may also set the keys that have no flag (secure_mode, rules, quota_per_client,
max_mappings, reserved_ports, max_lease_s, friendly_name, natpmp_max_lifetime_s). Every value is
checked here, so the daemon starts from a `Config` that is valid as far as can be told without
touching the system (the admin token file is read by the daemon at start).

On SIGHUP the daemon loads the configuration again: the keys in LIVE_KEYS apply at once (policy
to new requests only; existing mappings stay), every other key needs a restart.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final

from igd.natcore import DEFAULT_RULES, IPProtocol, NatError, PermissionRule

__all__ = [
    "BACKENDS",
    "DEFAULT_PCP_PORT",
    "DEFAULT_SSDP_PORT",
    "LIVE_KEYS",
    "LOG_LEVELS",
    "VIRTUAL_WAN",
    "Config",
    "ConfigError",
    "changed_keys",
    "flag_for",
    "load_config",
]

BACKENDS: Final = ("auto", "memory", "nftables", "userspace")
"""Backends that exist; `auto` picks nftables when it works here, else the userspace relay."""
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
DEFAULT_SSDP_PORT: Final = 1900
"""SSDP listens on UDP 1900 (GEN-01); other values are for tests only."""
DEFAULT_PCP_PORT: Final = 5351
"""NAT-PMP and PCP listen on UDP 5351 (RFC 6886, RFC 6887); other values are for tests only."""
VIRTUAL_WAN: Final = "wan"
"""Name of the virtual public connection used when no `wan` interface is configured."""

IFNAMSIZ: Final = 16
"""Linux interface names are at most IFNAMSIZ - 1 bytes (<linux/if.h>)."""
FRIENDLY_NAME_MAX_CHARS: Final = 63
"""friendlyName SHOULD be shorter than 64 characters (DESC-05)."""
MAX_MAPPINGS_LIMIT: Final = 65536 * 2
"""At most one mapping per (protocol, external port): 2 x 65536 slots."""
NATPMP_LIFETIME_LIMIT: Final = 2**32 - 1
"""NAT-PMP lifetimes are 32-bit seconds (RFC 6886 section 3.3)."""
UNIX_PATH_MAX: Final = 107
"""Longest Unix socket path in bytes (sun_path is 108 bytes with the final NUL)."""
LIVE_KEYS: Final = frozenset(
    {
        "secure_mode",
        "rules",
        "quota_per_client",
        "max_mappings",
        "reserved_ports",
        "max_lease_s",
        "log_level",
        "natpmp_max_lifetime_s",
    }
)
"""Keys a reload (SIGHUP) applies to the running daemon; the others need a restart."""

PORTMAP_RATE_LIMIT: Final = 100_000
"""Upper bound of the per-source NAT-PMP/PCP rate and burst settings."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RESERVED = re.compile(r"(?i)(tcp|udp)/(\d{1,5})")


class ConfigError(ValueError):
    """A configuration value is wrong; `key` names it and the message starts with it."""

    def __init__(self, key: str, problem: str, *, where: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{key}: {problem}")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything `igd serve` needs; the defaults run anywhere without root (loopback only)."""

    lan: tuple[str, ...] = ("lo",)
    wan: str | None = None  # None: a virtual public connection named VIRTUAL_WAN
    external_ip: IPv4Address | None = None
    backend: str = "auto"
    http_port: int = 0  # 0: an ephemeral port
    ssdp_port: int = DEFAULT_SSDP_PORT
    state_dir: Path = Path("state")
    igd_version: int | None = None  # None: serve IGD:1 and IGD:2 side by side (architecture 4b)
    log_level: str = "info"
    allow_private_external: bool = False  # WIP-03
    secure_mode: bool = True
    rules: tuple[PermissionRule, ...] = DEFAULT_RULES
    quota_per_client: int = 128
    max_mappings: int = 16384
    reserved_ports: frozenset[tuple[IPProtocol, int]] = field(default_factory=frozenset)
    max_lease_s: int = 604800
    friendly_name: str = "igd gateway"
    nft_table: str = "igd"  # the nftables table the daemon owns (inet family)
    natpmp: bool = True  # NAT-PMP beside PCP on pcp_port (PCP is always served)
    pcp_port: int = DEFAULT_PCP_PORT  # 0: an ephemeral port per LAN address (tests)
    natpmp_max_lifetime_s: int = 86400
    portmap_rate_per_s: int = 20  # NAT-PMP/PCP requests per second per source (ST-24)
    portmap_burst: int = 64  # requests a quiet source may send at once
    admin_socket: Path | None = None  # None: <state_dir>/igd.sock
    admin_port: int | None = None  # loopback TCP for the admin API; needs admin_token_file
    admin_token_file: Path | None = None  # its first line is the admin API's bearer token


class _Invalid(Exception):
    """A value is wrong; the message says why (the caller adds the key and where)."""


def flag_for(key: str) -> str:
    """The command-line flag of a config key (`http_port` -> `--http-port`)."""
    return "--" + key.replace("_", "-")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _port(value: object, *, allow_zero: bool) -> int:
    if not _is_int(value):
        raise _Invalid(f"expected a port number, got {value!r}")
    assert isinstance(value, int)
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise _Invalid(f"port {value} is not in {low}..65535")
    return value


def _positive(value: object, *, limit: int | None = None) -> int:
    if not _is_int(value):
        raise _Invalid(f"expected a positive integer, got {value!r}")
    assert isinstance(value, int)
    if value < 1:
        raise _Invalid(f"{value} is not positive")
    if limit is not None and value > limit:
        raise _Invalid(f"{value} is more than {limit}")
    return value


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {value!r}")
    return value


def _ifname(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected an interface name, got {value!r}")
    if (
        not 0 < len(value.encode()) < IFNAMSIZ
        or value in (".", "..")
        or any(char in "/:" or char.isspace() for char in value)
    ):
        raise _Invalid(f"{value!r} is not a valid interface name")
    return value


def _lan(value: object) -> tuple[str, ...]:
    names = tuple(_ifname(name) for name in _strings(value))
    if not names:
        raise _Invalid("at least one LAN interface is needed")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise _Invalid(f"interface {duplicates[0]} is listed twice")
    return names


def _wan(value: object) -> str:
    return _ifname(value)


def _external_ip(value: object) -> IPv4Address:
    if not isinstance(value, str | IPv4Address):
        raise _Invalid(f"expected an IPv4 address, got {value!r}")
    try:
        address = IPv4Address(value)
    except ValueError:
        raise _Invalid(f"{value!r} is not an IPv4 address") from None
    if address.is_multicast or address.is_unspecified or address == IPv4Address(0xFFFFFFFF):
        raise _Invalid(f"{address} cannot be a host's address")
    return address


def _backend(value: object) -> str:
    if value not in BACKENDS:
        raise _Invalid(f"{value!r} is not one of {', '.join(BACKENDS)}")
    assert isinstance(value, str)
    return value


def _path(value: object, what: str = "a file path") -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise _Invalid(f"expected {what}, got {value!r}")
    if "\0" in str(value):
        raise _Invalid("a path cannot contain NUL")
    return Path(value)


def _state_dir(value: object) -> Path:
    return _path(value, "a directory path")


def _admin_socket(value: object) -> Path:
    path = _path(value, "a socket path")
    if len(str(path).encode()) > UNIX_PATH_MAX:
        raise _Invalid(f"longer than {UNIX_PATH_MAX} bytes (the Unix socket path limit)")
    return path


def _igd_version(value: object) -> int:
    if not _is_int(value) or value not in (1, 2):
        raise _Invalid(f"{value!r} is not 1 or 2")
    assert isinstance(value, int)
    return value


def _log_level(value: object) -> str:
    if not isinstance(value, str) or value.lower() not in LOG_LEVELS:
        raise _Invalid(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def _rules(value: object) -> tuple[PermissionRule, ...]:
    try:
        return tuple(PermissionRule.parse(line) for line in _strings(value))
    except NatError as exc:
        raise _Invalid(str(exc)) from None


def _reserved_ports(value: object) -> frozenset[tuple[IPProtocol, int]]:
    result: set[tuple[IPProtocol, int]] = set()
    for item in _strings(value):
        match = _RESERVED.fullmatch(item.strip())
        if match is None:
            raise _Invalid(f"{item!r} is not like 'tcp/22' or 'udp/53'")
        protocol = IPProtocol.TCP if match.group(1).lower() == "tcp" else IPProtocol.UDP
        result.add((protocol, _port(int(match.group(2)), allow_zero=False)))
    return frozenset(result)


def _friendly_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected a non-empty string, got {value!r}")
    if len(value) > FRIENDLY_NAME_MAX_CHARS:
        raise _Invalid(f"longer than {FRIENDLY_NAME_MAX_CHARS} characters (DESC-05)")
    if _CONTROL.search(value):
        raise _Invalid("must not contain control characters")
    return value


def _nft_table(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,31}", value):
        raise _Invalid(
            f"{value!r} is not a table name (a letter, then up to 31 letters, digits, _)"
        )
    return value


_CONVERTERS: Final[dict[str, Callable[[object], object]]] = {
    "lan": _lan,
    "wan": _wan,
    "external_ip": _external_ip,
    "backend": _backend,
    "http_port": lambda v: _port(v, allow_zero=True),
    "ssdp_port": lambda v: _port(v, allow_zero=True),
    "state_dir": _state_dir,
    "igd_version": _igd_version,
    "log_level": _log_level,
    "allow_private_external": _bool,
    "secure_mode": _bool,
    "rules": _rules,
    "quota_per_client": _positive,
    "max_mappings": lambda v: _positive(v, limit=MAX_MAPPINGS_LIMIT),
    "reserved_ports": _reserved_ports,
    "max_lease_s": _positive,
    "friendly_name": _friendly_name,
    "nft_table": _nft_table,
    "natpmp": _bool,
    "pcp_port": lambda v: _port(v, allow_zero=True),
    "natpmp_max_lifetime_s": lambda v: _positive(v, limit=NATPMP_LIFETIME_LIMIT),
    "portmap_rate_per_s": lambda v: _positive(v, limit=PORTMAP_RATE_LIMIT),
    "portmap_burst": lambda v: _positive(v, limit=PORTMAP_RATE_LIMIT),
    "admin_socket": _admin_socket,
    "admin_port": lambda v: _port(v, allow_zero=False),
    "admin_token_file": _path,
}
KEYS: Final = tuple(f.name for f in fields(Config))
assert set(_CONVERTERS) == set(KEYS)


def _unknown(key: str) -> str:
    close = difflib.get_close_matches(key.replace("-", "_"), KEYS, n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not valid TOML: not UTF-8 text") from None


def _convert_all(values: Mapping[str, object], where: str, *, flags: bool) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in values.items():
        shown = flag_for(key) if flags else key
        converter = _CONVERTERS.get(key)
        if converter is None:
            raise ConfigError(shown, _unknown(key), where=None if flags else where)
        try:
            result[key] = converter(value)
        except _Invalid as exc:
            raise ConfigError(shown, str(exc), where=None if flags else where) from None
    return result


def load_config(path: Path | None = None, overrides: Mapping[str, object] | None = None) -> Config:
    """Read the TOML file (if any), apply the flags given (None = not given), validate every key.

    Errors from the file read "FILE: key: problem"; errors from flags read "--flag: problem".
    """
    converted: dict[str, object] = {}
    if path is not None:
        converted.update(_convert_all(_read_file(path), str(path), flags=False))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    converted.update(_convert_all(given, "command line", flags=True))
    config = Config(**converted)  # type: ignore[arg-type]
    if config.wan is not None and config.wan in config.lan:
        raise ConfigError("wan", f"{config.wan} is also a LAN interface")
    if config.wan is None and VIRTUAL_WAN in config.lan:
        raise ConfigError(
            "lan",
            f"{VIRTUAL_WAN!r} names the virtual public connection; set wan = {VIRTUAL_WAN!r} "
            "to use the interface as the WAN",
        )
    if config.admin_port is not None and config.admin_token_file is None:
        raise ConfigError(
            "admin_token_file", "needed with admin_port: the admin API on TCP requires a token"
        )
    return config


def changed_keys(old: Config, new: Config) -> tuple[str, ...]:
    """The keys whose values differ between two configurations, in declaration order."""
    return tuple(key for key in KEYS if getattr(old, key) != getattr(new, key))
