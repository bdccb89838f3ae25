"""SOAP 1.1 envelopes for UPnP control, pure: SOAPACTION header and body in, response bytes out.

Remote faults (bad bytes from the network) raise SoapParseError; its class carries the answer:

    SoapParseError (ValueError)   upnp_code None -> HTTP 400: no SOAPACTION (CTRL-04), body too big
    │                                               or deep, not well-formed, DOCTYPE/entities
    │                                               (CTRL-12, ST-12), not a SOAP 1.1 Envelope/Body
    ├── SoapActionError           upnp_code 401 -> fault 401: SOAPACTION not "<serviceType>#<name>"
    │                                               (ST-14), body element not that action (CTRL-03)
    └── SoapArgsError             upnp_code 402 -> fault 402: duplicated/nested/too many arguments,
                                                    stray text between arguments (ST-15)

Local misuse (our own tables handing build_* a bad name, text XML cannot carry) is ValueError.

Accepted requests: any namespace prefixes (`s:`, `SOAP-ENV:`, `u:`, `m:`), with or without XML
declaration, whitespace and comments between elements, an optional SOAP Header (ignored), attributes
anywhere (Windows sends `dt:dt="ui2"` on arguments) ignored; arguments by local name, in document
order, their text verbatim ("" when empty). Leading whitespace and trailing whitespace/NUL bytes
around the document are dropped; the rest goes to igd.upnp.xml.parse_xml (UTF-8 only, no DTD or
entities, nothing fetched, bounded size and depth).

Output policy (CTRL-05/06/12, ST-16): every value is escaped (`&`, `<`, `>`, and CR as `&#13;` so it
round-trips), so `]]>` and markup in descriptions come back as text. Characters XML 1.0 cannot carry
(NUL and other C0 controls except TAB/LF/CR, U+FFFE/U+FFFF, lone surrogates) cannot be escaped
either: build_response raises ValueError. The core already refuses control characters in
descriptions (InvalidDescriptionError), so this only fires on a bug.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol

from lxml import etree

from igd.upnp.xml import XmlError, parse_xml

__all__ = [
    "CONTROL_NS",
    "MAX_ARGUMENTS",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_SOAPACTION_CHARS",
    "SOAP_ENCODING",
    "SOAP_ENV_NS",
    "ActionCall",
    "FaultInfo",
    "SoapAction",
    "SoapActionError",
    "SoapArgsError",
    "SoapParseError",
    "build_fault",
    "build_response",
    "parse_request",
    "parse_soap_action_header",
]

SOAP_ENV_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENCODING: Final = "http://schemas.xmlsoap.org/soap/encoding/"
CONTROL_NS: Final = "urn:schemas-upnp-org:control-1-0"
"""Namespace of UPnPError details (CTRL-06) and of QueryStateVariable (CTRL-13)."""

MAX_BODY_BYTES: Final = 64 * 1024
"""Largest SOAP body parsed (GEN-10: body <= 64 KiB)."""
MAX_DEPTH: Final = 16
"""Deepest element nesting parsed; a UPnP request needs 4 (Envelope/Body/action/argument)."""
MAX_ARGUMENTS: Final = 32
"""Most arguments in one action; the largest IGD action (AddPortMapping) has 8."""
MAX_SOAPACTION_CHARS: Final = 256
"""Longest SOAPACTION header value looked at (ST-14: a 10 kB value is refused unparsed)."""

_DOMAIN: Final = r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}"
_SERVICE_TYPE: Final = (
    rf"urn:{_DOMAIN}:service:(?P<kind>[A-Za-z0-9_-]{{1,64}}):(?P<version>[1-9][0-9]{{0,3}})"
)
_ACTION_NAME: Final = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_SOAPACTION_RE: Final = re.compile(
    rf"(?P<type>{_SERVICE_TYPE}|{re.escape(CONTROL_NS)})#(?P<action>{_ACTION_NAME})", re.ASCII
)
_SERVICE_TYPE_RE: Final = re.compile(rf"{_SERVICE_TYPE}|{re.escape(CONTROL_NS)}", re.ASCII)
_ACTION_NAME_RE: Final = re.compile(_ACTION_NAME, re.ASCII)
_ARG_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_QUERY_STATE_VARIABLE: Final = "QueryStateVariable"

# XML 1.0 Char production, complemented: what no escaping can carry.
_XML_ILLEGAL_RE: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_TEXT_ESCAPES: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_BLANK: Final = " \t\r\n"
_BLANK_BYTES: Final = b" \t\r\n"
_TRAILER_BYTES: Final = b" \t\r\n\0"

_ENVELOPE_OPEN: Final = (
    f'<?xml version="1.0" encoding="utf-8"?>\n'
    f'<s:Envelope xmlns:s="{SOAP_ENV_NS}" s:encodingStyle="{SOAP_ENCODING}"><s:Body>'
)
_ENVELOPE_CLOSE: Final = "</s:Body></s:Envelope>"


class SoapParseError(ValueError):
    """Not a usable SOAP 1.1 UPnP call; answered with HTTP 400 (CTRL-04, ST-12)."""

    upnp_code: ClassVar[int | None] = None


class SoapActionError(SoapParseError):
    """SOAPACTION or the body's action element is unusable; answered with fault 401 (ST-14)."""

    upnp_code = 401


class SoapArgsError(SoapParseError):
    """Arguments unusable (duplicated, nested, too many); answered with fault 402 (ST-15)."""

    upnp_code = 402


class FaultInfo(Protocol):
    """What build_fault needs of an error: igd.soap.errors.UPnPError satisfies it (CTRL-06)."""

    @property
    def code(self) -> int: ...

    @property
    def description(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SoapAction:
    """A parsed SOAPACTION: `urn:<domain>:service:<service_kind>:<version>#<action>` (CTRL-01).

    For DA1.0 QueryStateVariable (CTRL-13) service_type is CONTROL_NS, service_kind "" and
    version 1.
    """

    service_type: str
    service_kind: str
    version: int
    action: str


@dataclass(frozen=True, slots=True)
class ActionCall:
    """One control request: the in-arguments by name, in document order (CTRL-03)."""

    service_type: str
    action: str
    args: tuple[tuple[str, str], ...]


def _preview(text: str | bytes) -> str:
    """Attacker text for an exception message: repr'd and cut to 120 characters."""
    return repr(text if len(text) <= 120 else text[:120]) + ("..." if len(text) > 120 else "")


def parse_soap_action_header(value: str | None) -> SoapAction:
    """SOAPACTION in double quotes, single quotes or none (CTRL-01/02); anything else refused."""
    if value is None:
        raise SoapParseError("no SOAPACTION header")
    if len(value) > MAX_SOAPACTION_CHARS:
        raise SoapActionError(f"SOAPACTION of {len(value)} characters")
    inner = value.strip(" \t")
    if inner[:1] in ('"', "'"):
        if len(inner) < 2 or inner[-1] != inner[0]:
            raise SoapActionError(f"unbalanced quotes in SOAPACTION {_preview(value)}")
        inner = inner[1:-1]
    match = _SOAPACTION_RE.fullmatch(inner)
    if match is None:
        raise SoapActionError(f"SOAPACTION is not '<serviceType>#<action>': {_preview(value)}")
    service_type, action = match["type"], match["action"]
    if service_type == CONTROL_NS:
        if action != _QUERY_STATE_VARIABLE:
            raise SoapActionError(f"{action!r} is not an action of {CONTROL_NS}")
        return SoapAction(service_type, "", 1, action)
    return SoapAction(service_type, match["kind"], int(match["version"]), action)


def _parse_xml(body: bytes, *, max_bytes: int) -> etree._Element:
    """Hardened parse of a body (CTRL-12, ST-12) through igd.upnp.xml, its errors as 400."""
    if len(body) > max_bytes:
        raise SoapParseError(f"body of {len(body)} bytes, at most {max_bytes}")
    try:
        return parse_xml(
            body.lstrip(_BLANK_BYTES).rstrip(_TRAILER_BYTES),
            max_bytes=max_bytes,
            max_depth=MAX_DEPTH,
        )
    except XmlError as exc:
        raise SoapParseError(_preview(str(exc))) from None


def _elements(parent: etree._Element, error: type[SoapParseError]) -> Iterator[etree._Element]:
    """Element children; comments and PIs skipped; non-blank text around them is `error`."""
    if (parent.text or "").strip(_BLANK):
        raise error(f"text in <{etree.QName(parent).localname}>")
    for child in parent:
        if (child.tail or "").strip(_BLANK):
            raise error(f"text in <{etree.QName(parent).localname}>")
        if isinstance(child.tag, str):
            yield child


def _is(element: etree._Element, namespace: str, localname: str) -> bool:
    return element.tag == f"{{{namespace}}}{localname}"


def parse_request(
    body: bytes, action: SoapAction, *, max_bytes: int = MAX_BODY_BYTES
) -> ActionCall:
    """The one action element in Body, in the SOAPACTION's namespace, and its args (CTRL-03)."""
    envelope = _parse_xml(body, max_bytes=max_bytes)
    if not _is(envelope, SOAP_ENV_NS, "Envelope"):
        raise SoapParseError(f"root element is {_preview(envelope.tag)}, not a SOAP 1.1 Envelope")
    parts = list(_elements(envelope, SoapParseError))
    if parts and _is(parts[0], SOAP_ENV_NS, "Header"):
        parts.pop(0)
    if len(parts) != 1 or not _is(parts[0], SOAP_ENV_NS, "Body"):
        raise SoapParseError("Envelope must hold an optional Header and then one Body")
    calls = list(_elements(parts[0], SoapParseError))
    if len(calls) != 1:
        raise SoapParseError(f"Body holds {len(calls)} elements, not one action")
    call = calls[0]
    name = etree.QName(call)
    if name.localname != action.action or name.namespace != action.service_type:
        raise SoapActionError(
            f"body calls {_preview(call.tag)}, SOAPACTION {action.service_type}#{action.action}"
        )
    args: list[tuple[str, str]] = []
    seen: set[str] = set()
    for element in _elements(call, SoapArgsError):
        arg = etree.QName(element).localname
        if arg in seen:
            raise SoapArgsError(f"argument {_preview(arg)} given twice")
        if len(element):
            raise SoapArgsError(f"argument {_preview(arg)} has child nodes")
        if len(args) == MAX_ARGUMENTS:
            raise SoapArgsError(f"more than {MAX_ARGUMENTS} arguments")
        seen.add(arg)
        args.append((arg, element.text or ""))
    return ActionCall(action.service_type, action.action, tuple(args))


def _text(value: str) -> str:
    """XML character data for `value`; ValueError if XML 1.0 cannot represent it (ST-16)."""
    bad = _XML_ILLEGAL_RE.search(value)
    if bad is not None:
        raise ValueError(f"U+{ord(bad.group()):04X} cannot be carried by XML 1.0")
    return value.translate(_TEXT_ESCAPES)


def build_response(service_type: str, action: str, outputs: Sequence[tuple[str, str]]) -> bytes:
    """`<u:ActionResponse>` with the out-arguments in the order given, escaped, UTF-8 (CTRL-05)."""
    if _SERVICE_TYPE_RE.fullmatch(service_type) is None:
        raise ValueError(f"not a service type: {service_type!r}")
    if _ACTION_NAME_RE.fullmatch(action) is None:
        raise ValueError(f"not an action name: {action!r}")
    parts = [_ENVELOPE_OPEN, f'<u:{action}Response xmlns:u="{service_type}">']
    for name, value in outputs:
        if _ARG_NAME_RE.fullmatch(name) is None:
            raise ValueError(f"not an argument name: {name!r}")
        parts.append(f"<{name}>{_text(value)}</{name}>")
    parts.append(f"</u:{action}Response>{_ENVELOPE_CLOSE}")
    return "".join(parts).encode()


def build_fault(error: FaultInfo) -> bytes:
    """The UPnPError fault of CTRL-06: s:Client, UPnPError, errorCode and errorDescription."""
    code = error.code
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 999:
        raise ValueError(f"not a UPnP error code: {code!r}")
    return (
        f"{_ENVELOPE_OPEN}<s:Fault><faultcode>s:Client</faultcode>"
        f"<faultstring>UPnPError</faultstring><detail>"
        f'<UPnPError xmlns="{CONTROL_NS}"><errorCode>{code}</errorCode>'
        f"<errorDescription>{_text(error.description)}</errorDescription></UPnPError>"
        f"</detail></s:Fault>{_ENVELOPE_CLOSE}"
    ).encode()
