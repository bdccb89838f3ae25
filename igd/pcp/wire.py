"""PCP wire codec (RFC 6887, specs.md section 4): `pull_*` reads bytes, `push_*` writes them.

Pure module: no sockets, no clock, no randomness; the epoch arrives as an argument.

    PcpError                           root of everything this module raises on purpose
    ├── PcpParseError (ValueError)     bad bytes from the network: `result` is the answer,
    │                                  None means drop silently (PCP-04/06)
    └── PcpBuildError (ValueError)     our own misuse: a field out of range, a message too long

Every address field is 16 octets; IPv4 travels as IPv4-mapped IPv6 (`::ffff:a.b.c.d`) and an
address is IPv4 only when all 96 prefix bits match (PCP-10). `pull_request` applies RFC 6887
section 8.2 in order: < 2 octets or R bit set -> drop; version != 2 -> UNSUPP_VERSION;
< 24 octets -> drop; > 1100 octets or not a multiple of 4 -> MALFORMED_REQUEST; unknown opcode ->
UNSUPP_OPCODE; too short for the opcode -> MALFORMED_REQUEST; then options in order (PCP-20..22).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

__all__ = [
    "ANNOUNCE_GROUP_V4",
    "CLIENT_PORT",
    "HEADER_BYTES",
    "LONG_ERROR_LIFETIME_S",
    "MAP_PAYLOAD_BYTES",
    "MAX_MESSAGE_BYTES",
    "NONCE_BYTES",
    "OPTION_LENGTHS",
    "OPTION_OPCODES",
    "PCP_VERSION",
    "PEER_PAYLOAD_BYTES",
    "SERVER_PORT",
    "SHORT_ERROR_LIFETIME_S",
    "UNSPECIFIED_V4",
    "UNSPECIFIED_V6",
    "FilterOption",
    "MapPayload",
    "Opcode",
    "OptionCode",
    "PcpBuildError",
    "PcpError",
    "PcpOption",
    "PcpParseError",
    "PcpRequest",
    "PcpResponse",
    "PeerPayload",
    "PreferFailureOption",
    "RawOption",
    "RequestHeader",
    "ResultCode",
    "ThirdPartyOption",
    "error_lifetime",
    "error_response",
    "from_ipv4",
    "is_unspecified",
    "pull_header",
    "pull_request",
    "pull_response",
    "push_announce",
    "push_request",
    "push_response",
    "push_unparsed_error",
    "to_ipv4",
]

PCP_VERSION: Final = 2
"""The only version we speak; version 0 on the same port is NAT-PMP (PCP-12)."""
SERVER_PORT: Final = 5351
"""Where the server listens (PCP-01)."""
CLIENT_PORT: Final = 5350
"""Where unsolicited ANNOUNCE responses go (PCP-51)."""
ANNOUNCE_GROUP_V4: Final = IPv4Address("224.0.0.1")
"""The all-hosts group for unsolicited ANNOUNCE (PCP-51)."""
MAX_MESSAGE_BYTES: Final = 1100
"""Largest PCP message, request or response (PCP-03)."""
HEADER_BYTES: Final = 24
"""Common request/response header (RFC 6887 sections 7.1, 7.2)."""
MAP_PAYLOAD_BYTES: Final = 36
"""MAP opcode payload (PCP-30)."""
PEER_PAYLOAD_BYTES: Final = 56
"""PEER opcode payload (PCP-45)."""
NONCE_BYTES: Final = 12
"""The 96-bit mapping nonce (RFC 6887 section 11.1)."""
OPTION_HEADER_BYTES: Final = 4
"""Option code, reserved, length (PCP-20)."""
MANDATORY_OPTION_LIMIT: Final = 128
"""Option codes below this are mandatory-to-process (PCP-21)."""
LONG_ERROR_LIFETIME_S: Final = 1800
"""Lifetime of long-lifetime error responses: 30 minutes (PCP-15)."""
SHORT_ERROR_LIFETIME_S: Final = 30
"""Lifetime of short-lifetime error responses: 30 seconds (PCP-15)."""
UNSPECIFIED_V4: Final = IPv6Address("::ffff:0.0.0.0")
"""The all-zeros IPv4 address as carried by PCP (RFC 6887 section 5)."""
UNSPECIFIED_V6: Final = IPv6Address("::")
"""The all-zeros IPv6 address (RFC 6887 section 5)."""

_REQUEST_HEADER = struct.Struct("!BBHI16s")
_RESPONSE_HEADER = struct.Struct("!BBBBII12s")
_MAP = struct.Struct("!12sB3xHH16s")
_PEER = struct.Struct("!12sB3xHH16sH2x16s")
_OPTION = struct.Struct("!BBH")
_FILTER = struct.Struct("!xBH16s")
_R_BIT = 0x80
_PAYLOAD_BYTES: Final = {1: 36, 2: 56}
"""Opcode payload sizes: MAP, PEER (PCP-30/45)."""
_U32 = 0xFFFFFFFF


class Opcode(enum.IntEnum):
    """PCP opcodes (RFC 6887 section 19.2)."""

    ANNOUNCE = 0
    MAP = 1
    PEER = 2


class OptionCode(enum.IntEnum):
    """PCP options this codec knows (RFC 6887 section 19.3)."""

    THIRD_PARTY = 1
    PREFER_FAILURE = 2
    FILTER = 3


class ResultCode(enum.IntEnum):
    """Every result code of RFC 6887 section 7.4."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


OPTION_LENGTHS: Final[dict[OptionCode, int]] = {
    OptionCode.THIRD_PARTY: 16,
    OptionCode.PREFER_FAILURE: 0,
    OptionCode.FILTER: 20,
}
"""The exact Option Length of each known option (RFC 6887 sections 13.1-13.3, PCP-22)."""
OPTION_OPCODES: Final[dict[OptionCode, frozenset[Opcode]]] = {
    OptionCode.THIRD_PARTY: frozenset({Opcode.MAP, Opcode.PEER}),
    OptionCode.PREFER_FAILURE: frozenset({Opcode.MAP}),
    OptionCode.FILTER: frozenset({Opcode.MAP}),
}
"""Where each known option may appear; elsewhere it is MALFORMED_REQUEST (PCP-25)."""
_REPEATABLE: Final = frozenset({OptionCode.FILTER})
"""Options allowed more than once (PCP-22); the others at most once."""
_SHORT_LIFETIME: Final = frozenset(
    {
        ResultCode.NETWORK_FAILURE,
        ResultCode.NO_RESOURCES,
        ResultCode.USER_EX_QUOTA,
        ResultCode.CANNOT_PROVIDE_EXTERNAL,
    }
)
"""Short-lifetime errors (RFC 6887 section 7.4); CANNOT_PROVIDE_EXTERNAL "depends", short here."""


def error_lifetime(result: ResultCode) -> int:
    """The Lifetime field of an error response: 30 s for short errors, 30 min otherwise (PCP-15)."""
    if result is ResultCode.SUCCESS:
        raise PcpBuildError("SUCCESS is not an error")
    return SHORT_ERROR_LIFETIME_S if result in _SHORT_LIFETIME else LONG_ERROR_LIFETIME_S


# ---- Errors -------------------------------------------------------------------------------------


class PcpError(Exception):
    """Root of every error this module raises on purpose."""


class PcpParseError(PcpError, ValueError):
    """A received message is not a valid request: answer `result`, or drop when it is None.

    `request` is the request as far as it parsed (header and opcode payload, no options) when
    only the options were at fault, so the error response can copy its fields (PCP-14).
    """

    def __init__(
        self,
        message: str,
        result: ResultCode | None = None,
        request: PcpRequest | None = None,
    ) -> None:
        super().__init__(message)
        self.result = result
        self.request = request


class PcpBuildError(PcpError, ValueError):
    """A message we were asked to build has a field out of range (a local bug)."""


# ---- Addresses ----------------------------------------------------------------------------------


def from_ipv4(address: IPv4Address) -> IPv6Address:
    """The IPv4-mapped form PCP carries for an IPv4 address (PCP-10)."""
    return IPv6Address(b"\x00" * 10 + b"\xff\xff" + address.packed)


def to_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped address (all 96 prefix bits checked), else None."""
    return address.ipv4_mapped


def is_unspecified(address: IPv6Address) -> bool:
    """True for `::` and `::ffff:0.0.0.0`, the "no preference" addresses (PCP-35)."""
    return address in (UNSPECIFIED_V6, UNSPECIFIED_V4)


# ---- Messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapPayload:
    """MAP opcode data; `external_*` is suggested in a request, assigned in a response (PCP-30)."""

    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int = 0
    external_address: IPv6Address = UNSPECIFIED_V6


@dataclass(frozen=True, slots=True)
class PeerPayload:
    """PEER opcode data: MAP's fields plus the remote peer (PCP-45)."""

    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_address: IPv6Address
    remote_peer_port: int
    remote_peer_address: IPv6Address


@dataclass(frozen=True, slots=True)
class ThirdPartyOption:
    """THIRD_PARTY: the internal address the mapping is for (PCP-24)."""

    address: IPv6Address


@dataclass(frozen=True, slots=True)
class PreferFailureOption:
    """PREFER_FAILURE: the suggested external port/address or nothing (PCP-25)."""


@dataclass(frozen=True, slots=True)
class FilterOption:
    """FILTER: only this remote prefix and port (0 = any) may send in; prefix 0 clears (PCP-26)."""

    prefix_length: int
    remote_peer_port: int
    remote_peer_address: IPv6Address


@dataclass(frozen=True, slots=True)
class RawOption:
    """Any other option, by code and data (pushed as given; pulled from responses only)."""

    code: int
    data: bytes = b""


PcpOption = ThirdPartyOption | PreferFailureOption | FilterOption | RawOption
Payload = MapPayload | PeerPayload


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The common request header (RFC 6887 section 7.1), version already checked to be 2."""

    opcode: int
    lifetime: int
    client_address: IPv6Address


@dataclass(frozen=True, slots=True)
class PcpRequest:
    """A whole request; `options` holds the processed ones, unknown optional ones dropped."""

    opcode: int
    lifetime: int
    client_address: IPv6Address
    payload: Payload | None = None
    options: tuple[PcpOption, ...] = ()

    @property
    def third_party(self) -> IPv6Address | None:
        """The THIRD_PARTY address, if the option is present (PCP-24)."""
        for option in self.options:
            if isinstance(option, ThirdPartyOption):
                return option.address
        return None

    @property
    def prefer_failure(self) -> bool:
        """Whether PREFER_FAILURE is present (PCP-25)."""
        return any(isinstance(option, PreferFailureOption) for option in self.options)

    @property
    def filters(self) -> tuple[FilterOption, ...]:
        """The FILTER options in request order (PCP-26)."""
        return tuple(option for option in self.options if isinstance(option, FilterOption))


@dataclass(frozen=True, slots=True)
class PcpResponse:
    """A whole response; `reserved` is 96 bits, zero for requests that parsed (PCP-13)."""

    opcode: int
    result: int
    lifetime: int
    epoch: int
    payload: Payload | None = None
    options: tuple[PcpOption, ...] = ()
    reserved: bytes = bytes(12)


# ---- Pulling ------------------------------------------------------------------------------------


def pull_header(data: bytes) -> RequestHeader:
    """The checked common header of a request: size, R bit and version rules (PCP-04..07)."""
    size = len(data)
    if size < 2:
        raise PcpParseError(f"{size}-octet message: dropped (PCP-04)")
    if data[1] & _R_BIT:
        raise PcpParseError("R bit set in a request: dropped (PCP-04)")
    if data[0] != PCP_VERSION:
        raise PcpParseError(f"version {data[0]} is not supported", ResultCode.UNSUPP_VERSION)
    if size < HEADER_BYTES:
        raise PcpParseError(f"{size}-octet PCP message: dropped (PCP-06)")
    if size > MAX_MESSAGE_BYTES:
        raise PcpParseError(f"{size}-octet message exceeds 1100", ResultCode.MALFORMED_REQUEST)
    if size % 4:
        raise PcpParseError(
            f"{size}-octet message is not a multiple of 4", ResultCode.MALFORMED_REQUEST
        )
    _version, opcode, _reserved, lifetime, client = _REQUEST_HEADER.unpack_from(data)
    return RequestHeader(opcode=opcode, lifetime=lifetime, client_address=IPv6Address(client))


def _pull_map(data: bytes, offset: int) -> MapPayload:
    nonce, protocol, internal_port, external_port, external = _MAP.unpack_from(data, offset)
    return MapPayload(nonce, protocol, internal_port, external_port, IPv6Address(external))


def _pull_peer(data: bytes, offset: int) -> PeerPayload:
    fields = _PEER.unpack_from(data, offset)
    nonce, protocol, internal_port, external_port, external, peer_port, peer = fields
    return PeerPayload(
        nonce,
        protocol,
        internal_port,
        external_port,
        IPv6Address(external),
        peer_port,
        IPv6Address(peer),
    )


def _pull_filter(data: bytes) -> FilterOption:
    prefix_length, port, address = _FILTER.unpack(data)
    return FilterOption(prefix_length, port, IPv6Address(address))


def _filter_problem(option: FilterOption) -> str | None:
    """Why a FILTER's prefix length is invalid (PCP-26), or None."""
    if option.prefix_length > 128:
        return f"FILTER prefix length {option.prefix_length} > 128"
    if (
        option.prefix_length
        and to_ipv4(option.remote_peer_address) is not None
        and option.prefix_length < 96
    ):
        return f"FILTER prefix length {option.prefix_length} < 96 for an IPv4 peer"
    return None


def pull_request(data: bytes) -> PcpRequest:
    """A whole request, every RFC 6887 section 8.2 rule applied; PcpParseError otherwise."""
    header = pull_header(data)
    try:
        opcode = Opcode(header.opcode)
    except ValueError:
        raise PcpParseError(f"opcode {header.opcode}", ResultCode.UNSUPP_OPCODE) from None
    payload: Payload | None = None
    offset = HEADER_BYTES
    if opcode is Opcode.MAP or opcode is Opcode.PEER:
        needed = MAP_PAYLOAD_BYTES if opcode is Opcode.MAP else PEER_PAYLOAD_BYTES
        if len(data) < offset + needed:
            raise PcpParseError(
                f"{len(data)} octets are too short for {opcode.name}", ResultCode.MALFORMED_REQUEST
            )
        payload = _pull_map(data, offset) if opcode is Opcode.MAP else _pull_peer(data, offset)
        offset += needed
    request = PcpRequest(opcode, header.lifetime, header.client_address, payload)
    options = _pull_request_options(data, offset, opcode, request)
    if not options:
        return request
    return PcpRequest(opcode, header.lifetime, header.client_address, payload, options)


def _pull_request_options(
    data: bytes, offset: int, opcode: Opcode, request: PcpRequest
) -> tuple[PcpOption, ...]:
    """Options in order: lengths, repeats, opcode fit, mandatory vs optional (PCP-20..26)."""
    options: list[PcpOption] = []
    seen: set[OptionCode] = set()
    end = len(data)

    def fail(message: str, result: ResultCode) -> PcpParseError:
        return PcpParseError(message, result, request)

    while offset < end:
        if end - offset < OPTION_HEADER_BYTES:
            raise fail("truncated option header", ResultCode.MALFORMED_OPTION)
        code, _reserved, length = _OPTION.unpack_from(data, offset)
        start = offset + OPTION_HEADER_BYTES
        padded = (length + 3) & ~3
        if start + padded > end:
            raise fail(
                f"option {code} length {length} overruns the message", ResultCode.MALFORMED_OPTION
            )
        body = data[start : start + length]
        offset = start + padded
        try:
            known = OptionCode(code)
        except ValueError:
            if code < MANDATORY_OPTION_LIMIT:
                raise fail(f"unknown mandatory option {code}", ResultCode.UNSUPP_OPTION) from None
            continue  # optional-to-process and unknown: ignored, not echoed (PCP-21)
        if length != OPTION_LENGTHS[known]:
            raise fail(f"{known.name} with length {length}", ResultCode.MALFORMED_OPTION)
        if known in seen and known not in _REPEATABLE:
            raise fail(f"{known.name} more than once", ResultCode.MALFORMED_OPTION)
        seen.add(known)
        if opcode not in OPTION_OPCODES[known]:
            raise fail(f"{known.name} in {opcode.name}", ResultCode.MALFORMED_REQUEST)
        if known is OptionCode.THIRD_PARTY:
            options.append(ThirdPartyOption(IPv6Address(body)))
        elif known is OptionCode.PREFER_FAILURE:
            options.append(PreferFailureOption())
        else:
            option = _pull_filter(body)
            problem = _filter_problem(option)
            if problem is not None:
                raise fail(problem, ResultCode.MALFORMED_OPTION)
            options.append(option)
    return tuple(options)


def pull_response(data: bytes) -> PcpResponse:
    """A response, as a client reads it (RFC 6887 section 8.3); PcpParseError if not one.

    Options a client does not know are kept as RawOption; known ones of the wrong length too.
    """
    size = len(data)
    if size < HEADER_BYTES or size > MAX_MESSAGE_BYTES or size % 4:
        raise PcpParseError(f"{size}-octet response")
    version, opcode, _reserved, result, lifetime, epoch, reserved = _RESPONSE_HEADER.unpack_from(
        data
    )
    if version != PCP_VERSION:
        raise PcpParseError(f"response version {version}")
    if not opcode & _R_BIT:
        raise PcpParseError("R bit clear in a response")
    opcode &= ~_R_BIT
    offset = HEADER_BYTES
    payload: Payload | None = None
    if opcode == Opcode.MAP and size >= offset + MAP_PAYLOAD_BYTES:
        payload = _pull_map(data, offset)
        offset += MAP_PAYLOAD_BYTES
    elif opcode == Opcode.PEER and size >= offset + PEER_PAYLOAD_BYTES:
        payload = _pull_peer(data, offset)
        offset += PEER_PAYLOAD_BYTES
    options: list[PcpOption] = []
    while offset < size:
        code, _option_reserved, length = _OPTION.unpack_from(data, offset)
        start = offset + OPTION_HEADER_BYTES
        if start + ((length + 3) & ~3) > size:
            raise PcpParseError(f"option {code} overruns the response")
        body = data[start : start + length]
        offset = start + ((length + 3) & ~3)
        options.append(_typed_option(code, body))
    return PcpResponse(opcode, result, lifetime, epoch, payload, tuple(options), reserved)


def _typed_option(code: int, body: bytes) -> PcpOption:
    if code == OptionCode.THIRD_PARTY and len(body) == 16:
        return ThirdPartyOption(IPv6Address(body))
    if code == OptionCode.PREFER_FAILURE and not body:
        return PreferFailureOption()
    if code == OptionCode.FILTER and len(body) == 20:
        return _pull_filter(body)
    return RawOption(code, body)


# ---- Pushing ------------------------------------------------------------------------------------


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise PcpBuildError(message)


def _check_u(value: int, bits: int, what: str) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << bits,
        f"{what} must fit in {bits} bits, not {value!r}",
    )


def _push_payload(payload: Payload | None) -> bytes:
    if payload is None:
        return b""
    _check(len(payload.nonce) == NONCE_BYTES, "the nonce must be 12 octets")
    _check_u(payload.protocol, 8, "protocol")
    _check_u(payload.internal_port, 16, "internal port")
    _check_u(payload.external_port, 16, "external port")
    if isinstance(payload, MapPayload):
        return _MAP.pack(
            payload.nonce,
            payload.protocol,
            payload.internal_port,
            payload.external_port,
            payload.external_address.packed,
        )
    _check_u(payload.remote_peer_port, 16, "remote peer port")
    return _PEER.pack(
        payload.nonce,
        payload.protocol,
        payload.internal_port,
        payload.external_port,
        payload.external_address.packed,
        payload.remote_peer_port,
        payload.remote_peer_address.packed,
    )


def _push_option(option: PcpOption) -> bytes:
    if isinstance(option, ThirdPartyOption):
        code, body = int(OptionCode.THIRD_PARTY), option.address.packed
    elif isinstance(option, PreferFailureOption):
        code, body = int(OptionCode.PREFER_FAILURE), b""
    elif isinstance(option, FilterOption):
        _check_u(option.prefix_length, 8, "prefix length")
        _check_u(option.remote_peer_port, 16, "remote peer port")
        code = int(OptionCode.FILTER)
        body = _FILTER.pack(
            option.prefix_length, option.remote_peer_port, option.remote_peer_address.packed
        )
    else:
        _check_u(option.code, 8, "option code")
        _check_u(len(option.data), 16, "option length")
        code, body = option.code, option.data
    padding = bytes(-len(body) % 4)
    return _OPTION.pack(code, 0, len(body)) + body + padding


def _finish(message: bytes) -> bytes:
    _check(len(message) <= MAX_MESSAGE_BYTES, f"{len(message)}-octet message exceeds 1100")
    return message


def push_request(request: PcpRequest) -> bytes:
    """The bytes of a request (client side): header, opcode payload, padded options."""
    _check_u(request.opcode, 7, "opcode")
    _check_u(request.lifetime, 32, "lifetime")
    header = _REQUEST_HEADER.pack(
        PCP_VERSION, request.opcode, 0, request.lifetime, request.client_address.packed
    )
    body = _push_payload(request.payload) + b"".join(_push_option(o) for o in request.options)
    return _finish(header + body)


def push_response(response: PcpResponse) -> bytes:
    """The bytes of a response: version 2, R bit, reserved as given (PCP-13)."""
    _check_u(response.opcode, 7, "opcode")
    _check_u(response.result, 8, "result")
    _check_u(response.lifetime, 32, "lifetime")
    _check_u(response.epoch, 32, "epoch")
    _check(len(response.reserved) == 12, "the reserved field must be 12 octets")
    header = _RESPONSE_HEADER.pack(
        PCP_VERSION,
        response.opcode | _R_BIT,
        0,
        response.result,
        response.lifetime,
        response.epoch,
        response.reserved,
    )
    body = _push_payload(response.payload) + b"".join(_push_option(o) for o in response.options)
    return _finish(header + body)


def push_announce(epoch: int) -> bytes:
    """An ANNOUNCE response: SUCCESS, lifetime 0, this epoch (PCP-50/51)."""
    return push_response(PcpResponse(Opcode.ANNOUNCE, ResultCode.SUCCESS, 0, epoch & _U32))


def error_response(
    request: PcpRequest, result: ResultCode, *, epoch: int, lifetime: int | None = None
) -> PcpResponse:
    """The error answer to a parsed request: its layout and fields copied, no options (PCP-14)."""
    return PcpResponse(
        opcode=request.opcode,
        result=result,
        lifetime=error_lifetime(result) if lifetime is None else lifetime,
        epoch=epoch & _U32,
        payload=request.payload,
    )


def push_unparsed_error(
    data: bytes, result: ResultCode, *, epoch: int, lifetime: int | None = None
) -> bytes:
    """The error answer to a request that did not parse (PCP-05/07/11/13).

    Version 2, the request's opcode with R set, reserved = the last 96 bits of its client-IP field.
    When the request is version 2 and holds its opcode's whole payload (MAP, PEER), that payload
    is copied, so the client can match the nonce; nothing else is (options that did not parse
    would not parse in the response either), so the answer is at most 80 octets.
    """
    opcode = data[1] & ~_R_BIT if len(data) > 1 else 0
    reserved = data[12:HEADER_BYTES].ljust(12, b"\x00")
    body = b""
    if data[:1] == bytes([PCP_VERSION]) and opcode in _PAYLOAD_BYTES:
        needed = _PAYLOAD_BYTES[opcode]
        if len(data) >= HEADER_BYTES + needed:
            body = data[HEADER_BYTES : HEADER_BYTES + needed]
    header = _RESPONSE_HEADER.pack(
        PCP_VERSION,
        opcode | _R_BIT,
        0,
        result,
        error_lifetime(result) if lifetime is None else lifetime,
        epoch & _U32,
        reserved,
    )
    return header + body
