"""SSDP codec: golden datagrams from real clients, malformed input, exact built bytes, fuzzing."""

from __future__ import annotations

import email.utils
from pathlib import Path
from typing import TypedDict, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igd.ssdp.messages import (
    BOOT_ID_MAX,
    CONFIG_ID_MAX,
    MAX_DATAGRAM_BYTES,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    MAX_LOCATION_CHARS,
    MAX_SENT_BYTES,
    MAX_SERVER_CHARS,
    MAX_TARGET_CHARS,
    MAX_USN_CHARS,
    SSDP_HOST_V4,
    SSDP_HOST_V6_SITE,
    MSearch,
    Notify,
    NotifyKind,
    SsdpBuildError,
    SsdpParseError,
    build_msearch,
    build_notify,
    build_search_response,
    http_date,
    parse_datagram,
    parse_search_response,
)

GOLDEN = Path(__file__).parent / "ssdp_golden"
IGD1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
IGD2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
WANIP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
WANPPP1 = "urn:schemas-upnp-org:service:WANPPPConnection:1"
UUID = "uuid:4d696e69-5550-6e50-4400-000000000001"
LOCATION = "http://198.18.0.1:5000/igd2/rootDesc.xml"
SERVER = "Linux/6.1 UPnP/1.1 igd/0.1.0"

# file -> (ST, MX, HOST, USER-AGENT)
GOLDEN_SEARCHES: dict[str, tuple[str, int, str, str | None]] = {
    "miniupnpc-2.2.4-igd1.bin": (IGD1, 2, SSDP_HOST_V4, None),
    "miniupnpc-2.2.4-wanipconnection1.bin": (WANIP1, 2, SSDP_HOST_V4, None),
    "miniupnpc-2.2.4-wanpppconnection1.bin": (WANPPP1, 2, SSDP_HOST_V4, None),
    "miniupnpc-2.2.4-rootdevice.bin": ("upnp:rootdevice", 2, SSDP_HOST_V4, None),
    "async-upnp-client-0.49.0-all.bin": ("ssdp:all", 4, SSDP_HOST_V4, None),
    "async-upnp-client-0.49.0-igd2.bin": (IGD2, 4, SSDP_HOST_V4, None),
    "async-upnp-client-0.49.0-unicast-all.bin": ("ssdp:all", 4, "127.0.0.1:1900", None),
    "gssdp-1.6.2-wanipconnection1.bin": (
        WANIP1,
        3,
        SSDP_HOST_V4,
        "Linux/6.18.44-fc-v657 UPnP/1.0 GSSDP/1.6.2",
    ),
    "libtorrent-2.0.8-rootdevice.bin": ("upnp:rootdevice", 3, SSDP_HOST_V4, None),
    "mdnsresponder-wanipconnection1.doc.bin": (WANIP1, 3, SSDP_HOST_V4, None),
    "syncthing-igd2.doc.bin": (IGD2, 10, SSDP_HOST_V4, "syncthing/v1.19.2"),
    "syncthing-v6-igd2.doc.bin": (IGD2, 10, SSDP_HOST_V6_SITE, "syncthing/v1.19.2"),
    "tailscale-all.doc.bin": ("ssdp:all", 2, SSDP_HOST_V4, None),
    "tailscale-igd1.doc.bin": (IGD1, 2, SSDP_HOST_V4, None),
    "windows10-igd1.doc.bin": (IGD1, 3, SSDP_HOST_V4, "Microsoft-Windows/10.0 UPnP/1.0"),
}
GOLDEN_NOTIFIES = ["miniupnpd-notify-alive.doc.bin"]


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def golden_files() -> list[bytes]:
    return [path.read_bytes() for path in sorted(GOLDEN.glob("*.bin"))]


def search(*lines: str, end: str = "\r\n") -> bytes:
    return (end.join(["M-SEARCH * HTTP/1.1", *lines]) + end + end).encode("latin-1")


VALID = ("HOST: 239.255.255.250:1900", 'MAN: "ssdp:discover"', "MX: 2", "ST: ssdp:all")


def test_every_golden_file_is_listed() -> None:
    on_disk = {path.name for path in GOLDEN.glob("*.bin")}
    assert on_disk == set(GOLDEN_SEARCHES) | set(GOLDEN_NOTIFIES)


@pytest.mark.parametrize("name", sorted(GOLDEN_SEARCHES))
def test_golden_msearch_parses(name: str) -> None:
    target, mx, host, user_agent = GOLDEN_SEARCHES[name]
    message = parse_datagram(golden(name))
    assert isinstance(message, MSearch)
    assert (message.target, message.mx, message.host) == (target, mx, host)
    assert message.man == '"ssdp:discover"'
    assert message.user_agent == user_agent
    assert message.header("st") == target


def test_golden_notify_parses_as_notify() -> None:
    message = parse_datagram(golden("miniupnpd-notify-alive.doc.bin"))
    assert isinstance(message, Notify)
    assert (message.nt, message.nts) == ("upnp:rootdevice", "ssdp:alive")
    assert message.usn == "uuid:6b4c0b38-3f0a-4d6e-9c55-6f4d3a1c2b10::upnp:rootdevice"
    assert message.header("BootID.UPnP.org") == "1700000000"


def test_header_names_are_case_insensitive() -> None:
    """T-SSDP-13: lower-case names are valid."""
    message = parse_datagram(search("host: x", 'man: "ssdp:discover"', "mx: 1", "st: ssdp:all"))
    assert isinstance(message, MSearch)
    assert (message.target, message.mx, message.man) == ("ssdp:all", 1, '"ssdp:discover"')
    assert message.headers[0] == ("HOST", "x")


def test_lf_only_line_ends() -> None:
    message = parse_datagram(search(*VALID, end="\n"))
    assert isinstance(message, MSearch)
    assert message.target == "ssdp:all"


def test_blanks_around_values_and_trailing_blank_lines() -> None:
    data = (
        b'M-SEARCH * HTTP/1.1\r\nST:\t ssdp:all \t\r\nMX:  3\r\nMAN:"ssdp:discover"\r\n\r\n\r\n\n'
    )
    message = parse_datagram(data)
    assert isinstance(message, MSearch)
    assert (message.target, message.mx, message.man) == ("ssdp:all", 3, '"ssdp:discover"')


def test_terminated_lines_without_final_blank_line() -> None:
    message = parse_datagram(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\nMX: 1\r\n")
    assert isinstance(message, MSearch)
    assert message.host is None
    assert message.man is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0", 0), ("-1", -1), ("99999", 99999), ("03", 3), (" 5 ", 5), ("120", 120)],
)
def test_mx_is_kept_as_sent(raw: str, expected: int) -> None:
    """ST-05: MX 0, -1 and 99999 parse; the policy (matching) decides."""
    message = parse_datagram(search("ST: ssdp:all", f"MX:{raw}"))
    assert isinstance(message, MSearch)
    assert message.mx == expected


def test_missing_mx_is_none() -> None:
    message = parse_datagram(search("ST: ssdp:all"))
    assert isinstance(message, MSearch)
    assert message.mx is None


@pytest.mark.parametrize("raw", ["abc", "", "1.5", "5.0", "+3", "0x10", "3s", "- 1", "\xb2"])
def test_non_numeric_mx_is_malformed(raw: str) -> None:
    """ST-05 / SSDP-33: a non-numeric MX is a malformed search, dropped as such."""
    with pytest.raises(SsdpParseError, match="MX"):
        parse_datagram(search("ST: ssdp:all", f"MX: {raw}".rstrip()))


MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "only blank line": b"\r\n\r\n",
    "garbage 1500": bytes(range(256)) * 5 + b"\x00" * 220,
    "too big": search(*VALID, "X-PAD: " + "a" * 1000, "X-PAD2: " + "b" * 1000),
    "truncated mid-line": b'M-SEARCH * HTTP/1.1\r\nMAN: "ssdp:discover"\r\nST: ssdp:al',
    "truncated start line": b"M-SEARCH * HTT",
    "no ST": search('MAN: "ssdp:discover"', "MX: 1"),
    "empty ST": search("ST:", "MX: 1"),
    "duplicate header": search("ST: ssdp:all", "st: upnp:rootdevice", "MX: 1"),
    "duplicate MX": search("ST: ssdp:all", "MX: 1", "Mx: 5"),
    "lower-case method": search(*VALID).replace(b"M-SEARCH", b"m-search"),
    "other method": search(*VALID).replace(b"M-SEARCH", b"GET"),
    "target not *": search(*VALID).replace(b" * ", b" / "),
    "HTTP/2": search(*VALID).replace(b"HTTP/1.1", b"HTTP/2.0"),
    "trailing space in start line": search(*VALID).replace(b"HTTP/1.1", b"HTTP/1.1 "),
    "double space in start line": search(*VALID).replace(b"M-SEARCH *", b"M-SEARCH  *"),
    "a response": b"HTTP/1.1 200 OK\r\nST: ssdp:all\r\nUSN: uuid:x\r\n\r\n",
    "no colon": search("ST ssdp:all"),
    "space before colon": search("ST : ssdp:all"),
    "empty name": search(": value", "ST: ssdp:all"),
    "obs-fold": search("ST: ssdp:all", " continued"),
    "NUL in value": search("ST: ssdp:\x00all"),
    "bare CR in value": search("ST: ssdp:all\rX: 1"),
    "CR CR LF": b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\r\n\r\n",
    "body after headers": search(*VALID) + b"hello",
    "non-ASCII name": search("S\xc3\x9f: 1", "ST: ssdp:all"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_datagrams_raise_parse_error(name: str) -> None:
    """T-SSDP-15 / GEN-10: malformed input is a SsdpParseError, nothing else."""
    with pytest.raises(SsdpParseError):
        parse_datagram(MALFORMED[name])


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(SsdpParseError, ValueError)
    assert issubclass(SsdpBuildError, ValueError)


def test_header_count_limit() -> None:
    filler = [f"X-H{i}: {i}" for i in range(MAX_HEADERS - 1)]
    assert isinstance(parse_datagram(search("ST: ssdp:all", *filler)), MSearch)
    with pytest.raises(SsdpParseError, match="header lines"):
        parse_datagram(search("ST: ssdp:all", *filler, "X-ONE-TOO-MANY: 1"))


def test_line_length_limit() -> None:
    value = "a" * (MAX_LINE_BYTES - len("USER-AGENT: "))
    parsed = parse_datagram(search("ST: ssdp:all", f"USER-AGENT: {value}"))
    assert isinstance(parsed, MSearch)
    assert parsed.user_agent == value
    with pytest.raises(SsdpParseError, match="line longer"):
        parse_datagram(search("ST: ssdp:all", f"USER-AGENT: {value}a"))


def test_datagram_size_limit() -> None:
    pad = MAX_DATAGRAM_BYTES - len(search("ST: ssdp:all", "X-A: ", "X-B: "))
    exact = search("ST: ssdp:all", "X-A: " + "a" * (pad // 2), "X-B: " + "b" * (pad - pad // 2))
    assert len(exact) == MAX_DATAGRAM_BYTES
    assert isinstance(parse_datagram(exact), MSearch)
    with pytest.raises(SsdpParseError, match="exceeds"):
        parse_datagram(exact + b"\n")


def test_latin1_user_agent_is_kept() -> None:
    parsed = parse_datagram(search("ST: ssdp:all", "USER-AGENT: Caf\xe9/1.0 UPnP/1.1 x/1"))
    assert isinstance(parsed, MSearch)
    assert parsed.user_agent == "Caf\xe9/1.0 UPnP/1.1 x/1"


# ---- Building -----------------------------------------------------------------------------------


class Common(TypedDict):
    location: str
    max_age_s: int
    server: str
    boot_id: int
    config_id: int


COMMON = Common(location=LOCATION, max_age_s=1800, server=SERVER, boot_id=7, config_id=42)


def test_build_alive_exact_bytes() -> None:
    data = build_notify("alive", "upnp:rootdevice", f"{UUID}::upnp:rootdevice", **COMMON)
    assert data == (
        b"NOTIFY * HTTP/1.1\r\n"
        b"HOST: 239.255.255.250:1900\r\n"
        b"CACHE-CONTROL: max-age=1800\r\n"
        b"LOCATION: http://198.18.0.1:5000/igd2/rootDesc.xml\r\n"
        b"SERVER: Linux/6.1 UPnP/1.1 igd/0.1.0\r\n"
        b"NT: upnp:rootdevice\r\n"
        b"USN: uuid:4d696e69-5550-6e50-4400-000000000001::upnp:rootdevice\r\n"
        b"NTS: ssdp:alive\r\n"
        b"BOOTID.UPNP.ORG: 7\r\n"
        b"CONFIGID.UPNP.ORG: 42\r\n"
        b"\r\n"
    )


def test_build_byebye_exact_bytes() -> None:
    """SSDP-18: no CACHE-CONTROL, LOCATION or SERVER."""
    data = build_notify("byebye", UUID, UUID, **COMMON)
    assert data == (
        b"NOTIFY * HTTP/1.1\r\n"
        b"HOST: 239.255.255.250:1900\r\n"
        b"NT: uuid:4d696e69-5550-6e50-4400-000000000001\r\n"
        b"USN: uuid:4d696e69-5550-6e50-4400-000000000001\r\n"
        b"NTS: ssdp:byebye\r\n"
        b"BOOTID.UPNP.ORG: 7\r\n"
        b"CONFIGID.UPNP.ORG: 42\r\n"
        b"\r\n"
    )


def test_build_update_exact_bytes() -> None:
    """SSDP-19: LOCATION, old BOOTID and NEXTBOOTID."""
    data = build_notify("update", IGD2, f"{UUID}::{IGD2}", next_boot_id=8, **COMMON)
    assert data == (
        b"NOTIFY * HTTP/1.1\r\n"
        b"HOST: 239.255.255.250:1900\r\n"
        b"LOCATION: http://198.18.0.1:5000/igd2/rootDesc.xml\r\n"
        b"NT: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n"
        b"USN: uuid:4d696e69-5550-6e50-4400-000000000001::"
        b"urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n"
        b"NTS: ssdp:update\r\n"
        b"BOOTID.UPNP.ORG: 7\r\n"
        b"CONFIGID.UPNP.ORG: 42\r\n"
        b"NEXTBOOTID.UPNP.ORG: 8\r\n"
        b"\r\n"
    )


def test_build_search_response_exact_bytes() -> None:
    """SSDP-44, in the header order of miniupnpd-reference.md 7 / the UDA example."""
    data = build_search_response(
        IGD1, f"{UUID}::{IGD1}", date="Sun, 06 Nov 1994 08:49:37 GMT", **COMMON
    )
    assert data == (
        b"HTTP/1.1 200 OK\r\n"
        b"CACHE-CONTROL: max-age=1800\r\n"
        b"DATE: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b"EXT:\r\n"
        b"LOCATION: http://198.18.0.1:5000/igd2/rootDesc.xml\r\n"
        b"SERVER: Linux/6.1 UPnP/1.1 igd/0.1.0\r\n"
        b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
        b"USN: uuid:4d696e69-5550-6e50-4400-000000000001::"
        b"urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
        b"BOOTID.UPNP.ORG: 7\r\n"
        b"CONFIGID.UPNP.ORG: 42\r\n"
        b"\r\n"
    )


def test_nls_headers_are_optional() -> None:
    data = build_search_response(IGD1, f"{UUID}::{IGD1}", date=http_date(0), nls=True, **COMMON)
    assert b'OPT: "http://schemas.upnp.org/upnp/1/0/"; ns=01\r\n01-NLS: 7\r\nBOOTID' in data
    alive = build_notify("alive", IGD1, f"{UUID}::{IGD1}", nls=True, **COMMON)
    assert b"01-NLS: 7\r\n" in alive


def test_build_msearch_shapes() -> None:
    assert build_msearch("ssdp:all") == (
        b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
        b"MX: 2\r\nST: ssdp:all\r\n\r\n"
    )
    unicast = build_msearch(IGD1, mx=None, host="198.18.0.1:1900", user_agent="test/1 UPnP/1.1")
    assert b"MX" not in unicast
    assert b"USER-AGENT: test/1 UPnP/1.1\r\n" in unicast


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (784111777, "Sun, 06 Nov 1994 08:49:37 GMT"),  # RFC 9110 section 5.6.7 example
        (951782400.9, "Tue, 29 Feb 2000 00:00:00 GMT"),
        (2**31, "Tue, 19 Jan 2038 03:14:08 GMT"),
        (253402300799, "Fri, 31 Dec 9999 23:59:59 GMT"),
    ],
)
def test_http_date_known_values(epoch: float, expected: str) -> None:
    assert http_date(epoch) == expected


@given(st.integers(min_value=0, max_value=4_102_444_800))
def test_http_date_matches_email_utils(epoch: int) -> None:
    assert http_date(epoch) == email.utils.formatdate(epoch, usegmt=True)


@pytest.mark.parametrize("epoch", [-1, 253402300800, float("nan"), float("inf")])
def test_http_date_range(epoch: float) -> None:
    with pytest.raises(SsdpBuildError):
        http_date(epoch)


BAD_BUILDS: dict[str, Common] = {
    "CRLF in location": {**COMMON, "location": "http://x/\r\nX-Evil: 1"},
    "space in location": {**COMMON, "location": "http://x/a b"},
    "empty location": {**COMMON, "location": ""},
    "long location": {**COMMON, "location": "http://x/" + "a" * MAX_LOCATION_CHARS},
    "LF in server": {**COMMON, "server": "a\nb"},
    "non-ASCII server": {**COMMON, "server": "Caf\xe9/1"},
    "long server": {**COMMON, "server": "s" * (MAX_SERVER_CHARS + 1)},
    "server with outer space": {**COMMON, "server": " a/1"},
    "boot id too big": {**COMMON, "boot_id": BOOT_ID_MAX + 1},
    "negative boot id": {**COMMON, "boot_id": -1},
    "bool boot id": {**COMMON, "boot_id": True},
    "config id too big": {**COMMON, "config_id": CONFIG_ID_MAX + 1},
    "max-age 0": {**COMMON, "max_age_s": 0},
    "max-age huge": {**COMMON, "max_age_s": 2**31},
}


@pytest.mark.parametrize("name", sorted(BAD_BUILDS))
def test_builders_reject_bad_fields(name: str) -> None:
    fields = BAD_BUILDS[name]
    with pytest.raises(SsdpBuildError):
        build_notify("alive", IGD1, f"{UUID}::{IGD1}", **fields)
    with pytest.raises(SsdpBuildError):
        build_search_response(IGD1, f"{UUID}::{IGD1}", date=http_date(0), **fields)


def test_builders_reject_bad_targets_and_kinds() -> None:
    with pytest.raises(SsdpBuildError):
        build_notify("alive", "a" * (MAX_TARGET_CHARS + 1), UUID, **COMMON)
    with pytest.raises(SsdpBuildError):
        build_notify("alive", IGD1, "u" * (MAX_USN_CHARS + 1), **COMMON)
    with pytest.raises(SsdpBuildError):
        build_notify(cast(NotifyKind, "hello"), IGD1, UUID, **COMMON)
    with pytest.raises(SsdpBuildError, match="next_boot_id"):
        build_notify("update", IGD1, UUID, **COMMON)
    with pytest.raises(SsdpBuildError, match="next_boot_id"):
        build_notify("update", IGD1, UUID, next_boot_id=7, **COMMON)
    with pytest.raises(SsdpBuildError, match="next_boot_id"):
        build_notify("alive", IGD1, UUID, next_boot_id=8, **COMMON)
    with pytest.raises(SsdpBuildError):
        build_search_response(IGD1, UUID, date="x\r\ny", **COMMON)
    with pytest.raises(SsdpBuildError):
        build_msearch("ssdp:all", mx=0)


MAXIMAL = Common(
    location="http://[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535/"
    + "p" * (MAX_LOCATION_CHARS - 55),
    max_age_s=2**31 - 1,
    server="S" * MAX_SERVER_CHARS,
    boot_id=BOOT_ID_MAX - 1,
    config_id=CONFIG_ID_MAX,
)
MAX_NT = "urn:" + "n" * (MAX_TARGET_CHARS - 4)
MAX_USN = "uuid:" + "u" * 36 + "::" + MAX_NT


@pytest.mark.parametrize("kind", ["alive", "byebye", "update"])
def test_maximal_notify_stays_below_1024_bytes(kind: NotifyKind) -> None:
    """Architecture 4b: every datagram we send is below 1,024 bytes, even at every limit."""
    assert len(MAXIMAL["location"]) == MAX_LOCATION_CHARS
    assert len(MAX_USN) == MAX_USN_CHARS
    data = build_notify(
        kind,
        MAX_NT,
        MAX_USN,
        next_boot_id=BOOT_ID_MAX if kind == "update" else None,
        host=SSDP_HOST_V6_SITE,
        nls=True,
        **MAXIMAL,
    )
    assert len(data) <= MAX_SENT_BYTES < 1024


def test_maximal_search_response_stays_below_1024_bytes() -> None:
    data = build_search_response(MAX_NT, MAX_USN, date=http_date(253402300799), nls=True, **MAXIMAL)
    assert len(data) <= MAX_SENT_BYTES < 1024


# ---- Round trips (Hypothesis) -------------------------------------------------------------------

_PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
nt_values = st.text(_PRINTABLE, min_size=1, max_size=MAX_TARGET_CHARS)
usn_values = st.text(_PRINTABLE, min_size=1, max_size=MAX_USN_CHARS)
locations = st.text(_PRINTABLE, min_size=1, max_size=MAX_LOCATION_CHARS)
servers = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=MAX_SERVER_CHARS
).filter(lambda s: s == s.strip())
boot_ids = st.integers(min_value=0, max_value=BOOT_ID_MAX - 1)
config_ids = st.integers(min_value=0, max_value=CONFIG_ID_MAX)
max_ages = st.integers(min_value=1, max_value=2**31 - 1)


@given(
    kind=st.sampled_from(["alive", "byebye", "update"]),
    nt=nt_values,
    usn=usn_values,
    location=locations,
    server=servers,
    boot_id=boot_ids,
    config_id=config_ids,
    max_age_s=max_ages,
    nls=st.booleans(),
)
def test_notify_round_trip(
    kind: NotifyKind,
    nt: str,
    usn: str,
    location: str,
    server: str,
    boot_id: int,
    config_id: int,
    max_age_s: int,
    nls: bool,
) -> None:
    data = build_notify(
        kind,
        nt,
        usn,
        location=location,
        max_age_s=max_age_s,
        server=server,
        boot_id=boot_id,
        config_id=config_id,
        next_boot_id=boot_id + 1 if kind == "update" else None,
        nls=nls,
    )
    assert len(data) < 1024
    message = parse_datagram(data)
    assert isinstance(message, Notify)
    assert (message.nt, message.usn, message.nts) == (nt, usn, f"ssdp:{kind}")
    assert message.header("BOOTID.UPNP.ORG") == str(boot_id)
    assert message.header("CONFIGID.UPNP.ORG") == str(config_id)
    assert message.header("LOCATION") == (None if kind == "byebye" else location)
    assert message.header("SERVER") == (server if kind == "alive" else None)
    assert message.header("CACHE-CONTROL") == (f"max-age={max_age_s}" if kind == "alive" else None)


@given(
    st_value=nt_values,
    usn=usn_values,
    location=locations,
    server=servers,
    boot_id=boot_ids,
    config_id=config_ids,
    max_age_s=max_ages,
    epoch=st.integers(min_value=0, max_value=253402300799),
)
def test_search_response_round_trip(
    st_value: str,
    usn: str,
    location: str,
    server: str,
    boot_id: int,
    config_id: int,
    max_age_s: int,
    epoch: int,
) -> None:
    data = build_search_response(
        st_value,
        usn,
        location=location,
        max_age_s=max_age_s,
        server=server,
        boot_id=boot_id,
        config_id=config_id,
        date=http_date(epoch),
    )
    assert len(data) < 1024
    response = parse_search_response(data)
    assert (response.st, response.usn, response.location) == (st_value, usn, location)
    assert response.header("EXT") == ""
    assert response.header("SERVER") == server
    assert response.header("DATE") == http_date(epoch)
    assert [name for name, _ in response.headers] == [
        "CACHE-CONTROL",
        "DATE",
        "EXT",
        "LOCATION",
        "SERVER",
        "ST",
        "USN",
        "BOOTID.UPNP.ORG",
        "CONFIGID.UPNP.ORG",
    ]


@given(
    target=nt_values,
    mx=st.none() | st.integers(min_value=1, max_value=120),
    host=st.sampled_from([SSDP_HOST_V4, SSDP_HOST_V6_SITE, "198.18.0.1:1900"]),
    user_agent=st.none() | servers,
)
def test_msearch_round_trip(target: str, mx: int | None, host: str, user_agent: str | None) -> None:
    message = parse_datagram(build_msearch(target, mx=mx, host=host, user_agent=user_agent))
    assert message == MSearch(
        target=target,
        man='"ssdp:discover"',
        mx=mx,
        host=host,
        user_agent=user_agent,
        headers=message.headers,
    )


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 404 Not Found\r\nST: a\r\nUSN: b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nUSN: b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nST: a\r\n\r\n",
        b"M-SEARCH * HTTP/1.1\r\nST: a\r\n\r\n",
    ],
)
def test_parse_search_response_rejects(data: bytes) -> None:
    with pytest.raises(SsdpParseError):
        parse_search_response(data)


# ---- Fuzzing: only a message or SsdpParseError, ever --------------------------------------------


def _parse_or_error(data: bytes) -> None:
    try:
        result = parse_datagram(data)
    except SsdpParseError:
        return
    assert isinstance(result, MSearch | Notify)
    assert len(data) <= MAX_DATAGRAM_BYTES
    assert len(result.headers) <= MAX_HEADERS
    assert len({name for name, _ in result.headers}) == len(result.headers)
    for name, value in result.headers:
        assert name == name.upper()
        assert not any(char in value for char in "\r\n\x00")
    if isinstance(result, MSearch):
        assert result.target
        assert result.target == result.header("ST")


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=MAX_DATAGRAM_BYTES + 64))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_error(data)


@st.composite
def mutated_golden(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(golden_files())))
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup", "splice"]))
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif operation == "insert":
            data[at:at] = draw(
                st.sampled_from([b"\r", b"\n", b"\r\n", b":", b" ", b"\x00", b"\t", b"\xff"])
                | st.binary(max_size=8)
            )
        elif operation == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=16))]
        elif operation == "truncate":
            del data[at:]
        elif operation == "dup":
            lines = bytes(data).split(b"\r\n")
            index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines.insert(index, lines[index])
            data = bytearray(b"\r\n".join(lines))
        elif operation == "splice":
            data += draw(st.sampled_from(golden_files()))
    return bytes(data)


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_golden())
def test_fuzz_mutated_golden(data: bytes) -> None:
    _parse_or_error(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(st.sampled_from("STMXANHOstmxanho-_."), min_size=1, max_size=6),
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
        ),
        max_size=40,
    )
)
def test_fuzz_header_blocks(fields: list[tuple[str, str]]) -> None:
    data = search(*(f"{name}:{value}" for name, value in fields))
    _parse_or_error(data)
