"""SSDP wire codec: parse received datagrams, build NOTIFY / search responses (specs.md 1.2, 1.3).

Pure module: no sockets, no clock, no randomness. Times arrive as arguments.

    SsdpError                          root of everything this package raises on purpose
    ├── SsdpParseError (ValueError)    bad bytes from the network: drop, count, log once
    └── SsdpBuildError (ValueError)    our own misuse: a field or a message over its limit

Parsing is strict about structure and lenient about style: header names are case-insensitive,
LF-only line ends are accepted, whitespace around values is optional, and blank lines after the
header block (libtorrent, Syncthing) are ignored. Everything is bounded (`MAX_*` below).
Built messages use upper-case header names in the order of the UDA examples and miniupnpd, and
are always at most `MAX_SENT_BYTES` long (architecture.md 4b).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

__all__ = [
    "BOOT_ID_MAX",
    "CONFIG_ID_MAX",
    "MAX_DATAGRAM_BYTES",
    "MAX_HEADERS",
    "MAX_LINE_BYTES",
    "MAX_LOCATION_CHARS",
    "MAX_SENT_BYTES",
    "MAX_SERVER_CHARS",
    "MAX_TARGET_CHARS",
    "MAX_USN_CHARS",
    "SSDP_DISCOVER",
    "SSDP_HOST_V4",
    "SSDP_HOST_V6_LINK",
    "SSDP_HOST_V6_SITE",
    "MSearch",
    "Notify",
    "NotifyKind",
    "SearchResponse",
    "SsdpBuildError",
    "SsdpError",
    "SsdpParseError",
    "build_msearch",
    "build_notify",
    "build_search_response",
    "http_date",
    "parse_datagram",
    "parse_search_response",
]

# ---- Limits on what we receive (architecture.md 5.7) --------------------------------------------
MAX_DATAGRAM_BYTES: Final = 2048
"""Largest datagram parsed; real M-SEARCHes are 80-200 bytes (tests/unit/ssdp_golden)."""
MAX_HEADERS: Final = 32
"""Most header lines in one message."""
MAX_LINE_BYTES: Final = 1024
"""Longest single line (start line or header line), line end excluded."""

# ---- Limits on what we send ---------------------------------------------------------------------
MAX_SENT_BYTES: Final = 1023
"""Every datagram we build stays below 1,024 bytes: upnpclient reads with recvfrom(1024) (4b)."""
MAX_LOCATION_CHARS: Final = 200
"""Longest LOCATION URL (an IPv6 literal, port and path fit in about 70)."""
MAX_SERVER_CHARS: Final = 128
"""Longest SERVER value, `OS/version UPnP/1.1 product/version` (SSDP-08)."""
MAX_TARGET_CHARS: Final = 128
"""Longest NT / ST value (the longest standard IGD type is 55 characters)."""
MAX_USN_CHARS: Final = 5 + 36 + 2 + MAX_TARGET_CHARS
"""Longest USN: `uuid:` + a 36-character UUID + `::` + an NT (SSDP-03)."""
MAX_AGE_S_MAX: Final = 2**31 - 1
"""Largest CACHE-CONTROL max-age we write (10 digits)."""
BOOT_ID_MAX: Final = 2**31 - 1
"""BOOTID.UPNP.ORG / NEXTBOOTID.UPNP.ORG: non-negative 31-bit (SSDP-09)."""
CONFIG_ID_MAX: Final = 16_777_215
"""CONFIGID.UPNP.ORG: 0..16777215, higher values are reserved for vendors (SSDP-10)."""

# ---- Protocol constants -------------------------------------------------------------------------
SSDP_HOST_V4: Final = "239.255.255.250:1900"
"""HOST of multicast messages over IPv4 (SSDP-05)."""
SSDP_HOST_V6_LINK: Final = "[FF02::C]:1900"
"""HOST of multicast messages over IPv6, link-local scope (SSDP-05)."""
SSDP_HOST_V6_SITE: Final = "[FF05::C]:1900"
"""HOST of multicast messages over IPv6, site-local scope (SSDP-05)."""
SSDP_DISCOVER: Final = '"ssdp:discover"'
"""The only MAN value of a valid M-SEARCH, quotes included (SSDP-35)."""
NLS_OPT: Final = '"http://schemas.upnp.org/upnp/1/0/"; ns=01'
"""OPT value announcing the 01-NLS header (the form miniupnpd and Windows send)."""

NotifyKind = Literal["alive", "byebye", "update"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP field name (RFC 9110 token)."""
_INTEGER = re.compile(r"-?[0-9]+")
"""An MX value we accept as a number; anything else is not numeric (SSDP-33)."""
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Control characters other than HTAB: never allowed inside a line."""
_BLANK = frozenset(b"\r\n\t ")
_VERSIONS = frozenset({"HTTP/1.1", "HTTP/1.0"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_HTTP_DATE_S = 253_402_300_799  # 9999-12-31T23:59:59Z


class SsdpError(Exception):
    """Root of every error the SSDP package raises on purpose."""


class SsdpParseError(SsdpError, ValueError):
    """A received datagram is not a well-formed SSDP message (drop it, count it)."""


class SsdpBuildError(SsdpError, ValueError):
    """A message we were asked to build has a field out of its limits (a local bug)."""


Headers = tuple[tuple[str, str], ...]
"""Header fields in received order, names upper-cased, values stripped of surrounding blanks."""


def _lookup(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None


@dataclass(frozen=True, slots=True)
class MSearch:
    """An M-SEARCH request (SSDP-31); policy (MAN, MX, ST) is applied by `matching`, not here."""

    target: str
    """ST, as sent."""
    man: str | None
    """MAN, as sent (quotes included); None when missing (SSDP-35)."""
    mx: int | None
    """MX as a signed integer, unchecked (0, negative and huge are kept); None when missing."""
    host: str | None
    user_agent: str | None
    headers: Headers

    def header(self, name: str) -> str | None:
        """The value of header `name` (any case), or None."""
        return _lookup(self.headers, name.upper())


@dataclass(frozen=True, slots=True)
class Notify:
    """A NOTIFY request from another device: parsed only so it can be ignored (SSDP-21)."""

    nt: str | None
    nts: str | None
    usn: str | None
    headers: Headers

    def header(self, name: str) -> str | None:
        """The value of header `name` (any case), or None."""
        return _lookup(self.headers, name.upper())


@dataclass(frozen=True, slots=True)
class SearchResponse:
    """A `200 OK` answer to an M-SEARCH (SSDP-44); for control-point code and tests."""

    st: str
    usn: str
    location: str | None
    headers: Headers

    def header(self, name: str) -> str | None:
        """The value of header `name` (any case), or None."""
        return _lookup(self.headers, name.upper())


# ---- Parsing ------------------------------------------------------------------------------------


def _split_message(data: bytes) -> tuple[list[str], Headers]:
    """Start line split on single spaces, and the header fields; SsdpParseError when malformed."""
    if not data:
        raise SsdpParseError("empty datagram")
    if len(data) > MAX_DATAGRAM_BYTES:
        raise SsdpParseError(f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_BYTES}")
    lines: list[bytes] = []
    position = 0
    while True:
        end = data.find(b"\n", position)
        if end < 0:
            raise SsdpParseError("header block not terminated (truncated line)")
        line = data[position:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        position = end + 1
        if len(line) > MAX_LINE_BYTES:
            raise SsdpParseError(f"line longer than {MAX_LINE_BYTES} bytes")
        if not line:
            break
        if len(lines) > MAX_HEADERS:  # start line + MAX_HEADERS header lines
            raise SsdpParseError(f"more than {MAX_HEADERS} header lines")
        lines.append(line)
        if position == len(data):  # last header line ends the datagram: no blank line
            break
    if not lines:
        raise SsdpParseError("no start line")
    if any(byte not in _BLANK for byte in data[position:]):
        raise SsdpParseError("unexpected body after the header block")
    text = [raw.decode("latin-1") for raw in lines]
    for decoded in text:
        if _CTL.search(decoded):
            raise SsdpParseError("control character inside a line")
    start = text[0].split(" ")
    if len(start) != 3 or not all(start):
        raise SsdpParseError("malformed start line")
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for decoded in text[1:]:
        name, colon, value = decoded.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise SsdpParseError("malformed header line")
        key = name.upper()
        if key in seen:
            raise SsdpParseError(f"duplicate header {key}")
        seen.add(key)
        headers.append((key, value.strip(" \t")))
    return start, tuple(headers)


def parse_datagram(data: bytes) -> MSearch | Notify:
    """Parse a received M-SEARCH or NOTIFY; anything else raises SsdpParseError (SSDP-21/31)."""
    (method, target, version), headers = _split_message(data)
    if version not in _VERSIONS:
        raise SsdpParseError("not an HTTP/1.x request")
    if target != "*":
        raise SsdpParseError("request target is not *")
    if method == "NOTIFY":
        return Notify(
            nt=_lookup(headers, "NT"),
            nts=_lookup(headers, "NTS"),
            usn=_lookup(headers, "USN"),
            headers=headers,
        )
    if method != "M-SEARCH":
        raise SsdpParseError("method is neither M-SEARCH nor NOTIFY")
    st = _lookup(headers, "ST")
    if not st:
        raise SsdpParseError("M-SEARCH without ST")
    raw_mx = _lookup(headers, "MX")
    mx: int | None = None
    if raw_mx is not None:
        if not _INTEGER.fullmatch(raw_mx):
            raise SsdpParseError("MX is not an integer")
        mx = int(raw_mx)
    return MSearch(
        target=st,
        man=_lookup(headers, "MAN"),
        mx=mx,
        host=_lookup(headers, "HOST"),
        user_agent=_lookup(headers, "USER-AGENT"),
        headers=headers,
    )


def parse_search_response(data: bytes) -> SearchResponse:
    """Parse a `HTTP/1.1 200 OK` search response (for tests and control points; SSDP-44)."""
    (version, status, reason), headers = _split_message(data)
    if version not in _VERSIONS or status != "200" or reason != "OK":
        raise SsdpParseError("not an HTTP/1.x 200 OK response")
    st = _lookup(headers, "ST")
    usn = _lookup(headers, "USN")
    if not st or not usn:
        raise SsdpParseError("search response without ST or USN")
    return SearchResponse(st=st, usn=usn, location=_lookup(headers, "LOCATION"), headers=headers)


# ---- Building -----------------------------------------------------------------------------------


def _text(name: str, value: str, max_chars: int, *, spaces: bool = False) -> str:
    """`value` checked for a header: printable ASCII, no blanks unless `spaces`, bounded."""
    if not value or len(value) > max_chars:
        raise SsdpBuildError(f"{name} must have 1..{max_chars} characters")
    low = " " if spaces else "!"
    if not all(low <= char <= "~" for char in value) or value != value.strip():
        raise SsdpBuildError(f"{name} must be printable ASCII{'' if spaces else ' without spaces'}")
    return value


def _number(name: str, value: int, maximum: int, minimum: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SsdpBuildError(f"{name} must be an integer in {minimum}..{maximum}")
    return str(value)


def _encode(start: str, fields: list[tuple[str, str]]) -> bytes:
    """Start line and fields as CRLF lines; an empty value is written `NAME:` (EXT, SSDP-44)."""
    lines = [start]
    lines.extend(f"{name}: {value}" if value else f"{name}:" for name, value in fields)
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    if len(data) > MAX_SENT_BYTES:  # unreachable with the per-field limits; kept as the guarantee
        raise SsdpBuildError(f"message of {len(data)} bytes exceeds {MAX_SENT_BYTES}")
    return data


def _nls_fields(nls: bool, boot_id: int) -> list[tuple[str, str]]:
    return [("OPT", NLS_OPT), ("01-NLS", str(boot_id))] if nls else []


def build_notify(
    kind: NotifyKind,
    nt: str,
    usn: str,
    *,
    location: str,
    max_age_s: int,
    server: str,
    boot_id: int,
    config_id: int,
    next_boot_id: int | None = None,
    host: str = SSDP_HOST_V4,
    nls: bool = False,
) -> bytes:
    """One ssdp:alive / ssdp:byebye / ssdp:update NOTIFY (SSDP-05/06/09/10/18/19).

    byebye carries no CACHE-CONTROL, LOCATION or SERVER (SSDP-18); update carries LOCATION and
    NEXTBOOTID.UPNP.ORG, which must exceed `boot_id` (SSDP-19). `nls` adds OPT and 01-NLS.
    """
    fields: list[tuple[str, str]] = [("HOST", _text("host", host, 64))]
    boot = _number("boot_id", boot_id, BOOT_ID_MAX)
    config = _number("config_id", config_id, CONFIG_ID_MAX)
    nt_text = _text("nt", nt, MAX_TARGET_CHARS)
    usn_text = _text("usn", usn, MAX_USN_CHARS)
    if kind == "alive":
        fields += [
            ("CACHE-CONTROL", f"max-age={_number('max_age_s', max_age_s, MAX_AGE_S_MAX, 1)}"),
            ("LOCATION", _text("location", location, MAX_LOCATION_CHARS)),
            ("SERVER", _text("server", server, MAX_SERVER_CHARS, spaces=True)),
        ]
    elif kind == "update":
        fields.append(("LOCATION", _text("location", location, MAX_LOCATION_CHARS)))
    elif kind != "byebye":
        raise SsdpBuildError(f"unknown NOTIFY kind {kind!r}")
    fields += [("NT", nt_text), ("USN", usn_text), ("NTS", f"ssdp:{kind}")]
    fields += _nls_fields(nls, boot_id)
    fields += [("BOOTID.UPNP.ORG", boot), ("CONFIGID.UPNP.ORG", config)]
    if kind == "update":
        if next_boot_id is None or next_boot_id <= boot_id:
            raise SsdpBuildError("ssdp:update needs next_boot_id > boot_id")
        fields.append(("NEXTBOOTID.UPNP.ORG", _number("next_boot_id", next_boot_id, BOOT_ID_MAX)))
    elif next_boot_id is not None:
        raise SsdpBuildError("next_boot_id belongs to ssdp:update only")
    return _encode("NOTIFY * HTTP/1.1", fields)


def build_search_response(
    st: str,
    usn: str,
    *,
    location: str,
    max_age_s: int,
    server: str,
    boot_id: int,
    config_id: int,
    date: str,
    nls: bool = False,
) -> bytes:
    """A `200 OK` answer to one M-SEARCH match (SSDP-44); `date` comes from `http_date`."""
    fields: list[tuple[str, str]] = [
        ("CACHE-CONTROL", f"max-age={_number('max_age_s', max_age_s, MAX_AGE_S_MAX, 1)}"),
        ("DATE", _text("date", date, 29, spaces=True)),
        ("EXT", ""),
        ("LOCATION", _text("location", location, MAX_LOCATION_CHARS)),
        ("SERVER", _text("server", server, MAX_SERVER_CHARS, spaces=True)),
        ("ST", _text("st", st, MAX_TARGET_CHARS)),
        ("USN", _text("usn", usn, MAX_USN_CHARS)),
    ]
    fields += _nls_fields(nls, boot_id)
    fields += [
        ("BOOTID.UPNP.ORG", _number("boot_id", boot_id, BOOT_ID_MAX)),
        ("CONFIGID.UPNP.ORG", _number("config_id", config_id, CONFIG_ID_MAX)),
    ]
    return _encode("HTTP/1.1 200 OK", fields)


def build_msearch(
    st: str, *, mx: int | None = 2, host: str = SSDP_HOST_V4, user_agent: str | None = None
) -> bytes:
    """An M-SEARCH (SSDP-31); `mx=None` for a unicast search (SSDP-36). For tests and probes."""
    fields: list[tuple[str, str]] = [
        ("HOST", _text("host", host, 64)),
        ("MAN", SSDP_DISCOVER),
    ]
    if mx is not None:
        fields.append(("MX", _number("mx", mx, 120, 1)))
    fields.append(("ST", _text("st", st, MAX_TARGET_CHARS)))
    if user_agent is not None:
        fields.append(
            ("USER-AGENT", _text("user_agent", user_agent, MAX_SERVER_CHARS, spaces=True))
        )
    return _encode("M-SEARCH * HTTP/1.1", fields)


def http_date(epoch_seconds: float) -> str:
    """RFC 1123 date in GMT for the DATE header (SSDP-44), locale-independent, no clock read."""
    if not 0 <= epoch_seconds <= _LAST_HTTP_DATE_S:
        raise SsdpBuildError("epoch_seconds out of range")
    moment = _EPOCH + timedelta(seconds=int(epoch_seconds))
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT"
    )
