"""NAT-PMP wire codec (RFC 6886): pull requests, push responses (specs.md 3, ST-29).

Pure module: no sockets, no clock, no randomness; the epoch arrives as an argument.

    NatPmpError                        root of everything this module raises on purpose
    ├── NatPmpParseError (ValueError)  bad bytes from the network: drop, count (`reason` says why)
    └── NatPmpBuildError (ValueError)  our own misuse: a field out of its range

What `pull_request` does with each datagram, in this order:

    fewer than 2 bytes                 NatPmpParseError("short")      drop (PMP-07)
    opcode >= 128, any version         NatPmpParseError("response")   drop (PMP-05, ST-29)
    version != 0                       UnsupportedVersionRequest      answer result 1 (PMP-04)
    opcode 0                           ExternalAddressRequest         extra bytes ignored (PMP-07)
    opcode 1/2, fewer than 12 bytes    NatPmpParseError("truncated")  drop (PMP-07; RFC silent)
    opcode 1/2                         MapRequest                     extra bytes ignored (PMP-07)
    opcode 3..127                      UnsupportedOpcodeRequest       answer result 5 (PMP-06)

Response-bit packets are ignored whatever their version, ahead of the version check RFC 6886
section 3.5 lists first: a server that answers responses can be made to ping-pong with another.
Every response built here is at most `MAX_RESPONSE_BYTES` (16) long: no amplification (ST-29).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final, Literal

__all__ = [
    "ANNOUNCE_GAPS_S",
    "ANNOUNCE_GROUP",
    "ANNOUNCE_PORTS",
    "CLIENT_PORT",
    "EPOCH_MODULUS",
    "EXTERNAL_ADDRESS_REQUEST_BYTES",
    "EXTERNAL_ADDRESS_RESPONSE_BYTES",
    "MAP_REQUEST_BYTES",
    "MAP_RESPONSE_BYTES",
    "MAX_RESPONSE_BYTES",
    "NATPMP_VERSION",
    "RESPONSE_BIT",
    "SERVER_PORT",
    "UNSUPPORTED_VERSION_RESPONSE_BYTES",
    "ErrorResponse",
    "ExternalAddressRequest",
    "ExternalAddressResponse",
    "MapRequest",
    "MapResponse",
    "NatPmpBuildError",
    "NatPmpError",
    "NatPmpParseError",
    "NatPmpRequest",
    "NatPmpResponse",
    "Opcode",
    "ParseFailure",
    "ResultCode",
    "UnsupportedOpcodeRequest",
    "UnsupportedVersionRequest",
    "pull_request",
    "pull_response",
    "push_external_address_response",
    "push_map_response",
    "push_request",
    "push_unsupported_opcode_response",
    "push_unsupported_version_response",
]

# ---- Protocol constants (RFC 6886) --------------------------------------------------------------
NATPMP_VERSION: Final = 0
"""The only version this codec speaks (RFC 6886 section 3)."""
SERVER_PORT: Final = 5351
"""Requests go to the gateway's UDP 5351 (RFC 6886 section 3, PMP-01)."""
CLIENT_PORT: Final = 5350
"""Announcements go to UDP 5350 on the all-hosts group (RFC 6886 section 3.2.1, PMP-11)."""
ANNOUNCE_GROUP: Final = IPv4Address("224.0.0.1")
"""The all-hosts group announcements are sent to (RFC 6886 section 3.2.1, PMP-11)."""
ANNOUNCE_PORTS: Final = (CLIENT_PORT, SERVER_PORT)
"""Each announcement also goes to 5351 for pre-2008 clients (RFC 6886 3.2.1 note, PMP-13)."""
ANNOUNCE_GAPS_S: Final = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Delay before each of the 10 announcements: 250 ms, then doubling (RFC 6886 3.2.1, PMP-12)."""
RESPONSE_BIT: Final = 0x80
"""Response opcode = 128 + request opcode (RFC 6886 section 3.5, PMP-15)."""
EPOCH_MODULUS: Final = 2**32
"""Seconds Since Start of Epoch is an unsigned 32-bit field and wraps (RFC 6886 3.6, PMP-08)."""

# ---- Sizes ---------------------------------------------------------------------------------------
EXTERNAL_ADDRESS_REQUEST_BYTES: Final = 2
"""vers, op (RFC 6886 section 3.2)."""
MAP_REQUEST_BYTES: Final = 12
"""vers, op, reserved, internal port, suggested external port, lifetime (RFC 6886 3.3)."""
EXTERNAL_ADDRESS_RESPONSE_BYTES: Final = 12
"""vers, op, result, epoch, external address (RFC 6886 section 3.2)."""
MAP_RESPONSE_BYTES: Final = 16
"""vers, op, result, epoch, internal port, mapped external port, lifetime (RFC 6886 3.3)."""
UNSUPPORTED_VERSION_RESPONSE_BYTES: Final = 8
"""vers, op, result, epoch (RFC 6886 section 3.5, PMP-04)."""
MAX_RESPONSE_BYTES: Final = 16
"""No response is longer than this, echoes of unknown opcodes included (ST-29)."""

_U16: Final = 0xFFFF
_U32: Final = 0xFFFFFFFF
_HEADER = struct.Struct("!BB")
_MAP_REQUEST = struct.Struct("!BBHHHI")
_EXTERNAL_RESPONSE = struct.Struct("!BBHI4s")
_MAP_RESPONSE = struct.Struct("!BBHIHHI")
_ERROR_RESPONSE = struct.Struct("!BBHI")
_RESULT = struct.Struct("!H")


class Opcode(enum.IntEnum):
    """Request opcodes (RFC 6886 sections 3.2, 3.3)."""

    EXTERNAL_ADDRESS = 0
    MAP_UDP = 1
    MAP_TCP = 2


class ResultCode(enum.IntEnum):
    """Result codes (RFC 6886 section 3.5)."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    NETWORK_FAILURE = 3
    OUT_OF_RESOURCES = 4
    UNSUPP_OPCODE = 5


ParseFailure = Literal["short", "response", "truncated"]
"""Why a datagram was dropped: < 2 bytes (PMP-07), a response (PMP-05), a short map (PMP-07)."""


class NatPmpError(Exception):
    """Root of every error the NAT-PMP codec raises on purpose."""


class NatPmpParseError(NatPmpError, ValueError):
    """A received datagram is to be dropped without an answer; `reason` names why (PMP-05/07)."""

    def __init__(self, reason: ParseFailure, message: str) -> None:
        super().__init__(message)
        self.reason: ParseFailure = reason


class NatPmpBuildError(NatPmpError, ValueError):
    """A message we were asked to build has a field out of its range (a local bug)."""


# ---- Messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalAddressRequest:
    """Opcode 0: what is the external address? (RFC 6886 3.2, PMP-10)."""


@dataclass(frozen=True, slots=True)
class MapRequest:
    """Opcode 1 (UDP) or 2 (TCP): create, renew or delete a mapping (RFC 6886 3.3/3.4).

    The reserved field is ignored on reception (RFC 6886 section 3.3) and not kept.
    """

    opcode: Opcode
    """MAP_UDP or MAP_TCP."""
    internal_port: int
    suggested_external_port: int
    lifetime: int

    @property
    def is_delete(self) -> bool:
        """Lifetime 0 deletes; with internal port 0 too, all of one protocol (PMP-21/22)."""
        return self.lifetime == 0


@dataclass(frozen=True, slots=True)
class UnsupportedVersionRequest:
    """A request of another version: answered with result 1 (PMP-04)."""

    version: int
    opcode: int


@dataclass(frozen=True, slots=True)
class UnsupportedOpcodeRequest:
    """A version-0 request opcode we do not know: echoed with result 5 (PMP-06).

    `data` is the request's first `MAX_RESPONSE_BYTES` bytes, all that is echoed (ST-29).
    """

    opcode: int
    data: bytes


NatPmpRequest = (
    ExternalAddressRequest | MapRequest | UnsupportedVersionRequest | UnsupportedOpcodeRequest
)
"""Everything `pull_request` returns; anything else raises NatPmpParseError."""


@dataclass(frozen=True, slots=True)
class ExternalAddressResponse:
    """Opcode 128 (RFC 6886 3.2); `address` is 0.0.0.0 unless the result is SUCCESS (PMP-10)."""

    result: ResultCode
    epoch: int
    address: IPv4Address


@dataclass(frozen=True, slots=True)
class MapResponse:
    """Opcode 129/130 (RFC 6886 3.3); external port and lifetime are 0 on failure (PMP-15)."""

    opcode: Opcode
    """MAP_UDP or MAP_TCP: the request's opcode, without the response bit."""
    result: ResultCode
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """A response of another shape: unsupported version (8 bytes) or an echoed opcode (PMP-04/06).

    `opcode` is the raw opcode byte (0 for the unsupported-version answer, as RFC 6886 3.5 draws
    it); `result` is the raw 16-bit result; `epoch` is None when the datagram is too short.
    """

    version: int
    opcode: int
    result: int
    epoch: int | None


NatPmpResponse = ExternalAddressResponse | MapResponse | ErrorResponse
"""Everything `pull_response` returns."""


# ---- Requests -----------------------------------------------------------------------------------


def pull_request(data: bytes) -> NatPmpRequest:
    """One received datagram -> a request, or NatPmpParseError to drop it (PMP-04..07, ST-29)."""
    if len(data) < 2:
        raise NatPmpParseError("short", f"datagram of {len(data)} bytes (PMP-07)")
    version, opcode = _HEADER.unpack_from(data)
    if opcode & RESPONSE_BIT:
        raise NatPmpParseError("response", f"opcode {opcode} is a response (PMP-05)")
    if version != NATPMP_VERSION:
        return UnsupportedVersionRequest(version, opcode)
    if opcode == Opcode.EXTERNAL_ADDRESS:
        return ExternalAddressRequest()
    if opcode in (Opcode.MAP_UDP, Opcode.MAP_TCP):
        if len(data) < MAP_REQUEST_BYTES:
            raise NatPmpParseError(
                "truncated", f"map request of {len(data)} bytes, {MAP_REQUEST_BYTES} needed"
            )
        _, _, _reserved, internal, suggested, lifetime = _MAP_REQUEST.unpack_from(data)
        return MapRequest(Opcode(opcode), internal, suggested, lifetime)
    return UnsupportedOpcodeRequest(opcode, bytes(data[:MAX_RESPONSE_BYTES]))


def push_request(request: ExternalAddressRequest | MapRequest) -> bytes:
    """The datagram a client sends for `request` (tests, and a client's side of the codec)."""
    if isinstance(request, ExternalAddressRequest):
        return _HEADER.pack(NATPMP_VERSION, Opcode.EXTERNAL_ADDRESS)
    if request.opcode not in (Opcode.MAP_UDP, Opcode.MAP_TCP):
        raise NatPmpBuildError(f"opcode {request.opcode!r} is not a map opcode")
    _check(request.internal_port, _U16, "internal port")
    _check(request.suggested_external_port, _U16, "suggested external port")
    _check(request.lifetime, _U32, "lifetime")
    return _MAP_REQUEST.pack(
        NATPMP_VERSION,
        Opcode(request.opcode),
        0,
        request.internal_port,
        request.suggested_external_port,
        request.lifetime,
    )


# ---- Responses ----------------------------------------------------------------------------------


def _check(value: int, limit: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise NatPmpBuildError(f"{what} must be an integer in 0..{limit}, not {value!r}")


def push_external_address_response(
    epoch: int, address: IPv4Address | None, result: ResultCode = ResultCode.SUCCESS
) -> bytes:
    """12 bytes, opcode 128, address zeroed unless SUCCESS (PMP-10); also the announcement."""
    _check(epoch, _U32, "epoch")
    result = ResultCode(result)
    if result is ResultCode.SUCCESS and address is None:
        raise NatPmpBuildError("a successful external address response needs an address")
    packed = address.packed if result is ResultCode.SUCCESS and address is not None else bytes(4)
    return _EXTERNAL_RESPONSE.pack(
        NATPMP_VERSION, RESPONSE_BIT | Opcode.EXTERNAL_ADDRESS, result, epoch, packed
    )


def push_map_response(
    opcode: Opcode,
    result: ResultCode,
    epoch: int,
    internal_port: int,
    external_port: int = 0,
    lifetime: int = 0,
) -> bytes:
    """16 bytes, opcode 128 + op; external port and lifetime forced to 0 on failure (PMP-15)."""
    if opcode not in (Opcode.MAP_UDP, Opcode.MAP_TCP):
        raise NatPmpBuildError(f"opcode {opcode!r} is not a map opcode")
    result = ResultCode(result)
    _check(epoch, _U32, "epoch")
    _check(internal_port, _U16, "internal port")
    _check(external_port, _U16, "external port")
    _check(lifetime, _U32, "lifetime")
    if result is not ResultCode.SUCCESS:
        external_port = lifetime = 0
    return _MAP_RESPONSE.pack(
        NATPMP_VERSION,
        RESPONSE_BIT | opcode,
        result,
        epoch,
        internal_port,
        external_port,
        lifetime,
    )


def push_unsupported_version_response(epoch: int) -> bytes:
    """8 bytes: version 0, opcode 0 as RFC 6886 section 3.5 draws it, result 1, epoch (PMP-04)."""
    _check(epoch, _U32, "epoch")
    return _ERROR_RESPONSE.pack(NATPMP_VERSION, 0, ResultCode.UNSUPP_VERSION, epoch)


def push_unsupported_opcode_response(request: bytes) -> bytes:
    """The request echoed with the response bit and result 5 (PMP-06), cut to 16 bytes (ST-29).

    A request shorter than 4 bytes has no result field: it is padded with zeros to 4 bytes so the
    result can be carried (RFC 6886 section 3.5 is silent on such packets).
    """
    if len(request) < 2 or request[0] != NATPMP_VERSION or request[1] & RESPONSE_BIT:
        raise NatPmpBuildError("only a version-0 request with a request opcode can be echoed")
    echo = bytearray(request[:MAX_RESPONSE_BYTES])
    if len(echo) < 4:
        echo.extend(bytes(4 - len(echo)))
    echo[1] |= RESPONSE_BIT
    _RESULT.pack_into(echo, 2, ResultCode.UNSUPP_OPCODE)
    return bytes(echo)


def pull_response(data: bytes) -> NatPmpResponse:
    """A received response -> its fields (tests, clients); NatPmpParseError under 4 bytes.

    A datagram that is not one of the two success-shaped responses comes back as ErrorResponse.
    """
    if len(data) < 4:
        raise NatPmpParseError("short", f"response of {len(data)} bytes")
    version, opcode, result = struct.unpack_from("!BBH", data)
    epoch = struct.unpack_from("!I", data, 4)[0] if len(data) >= 8 else None
    known = result in ResultCode._value2member_map_
    if version == NATPMP_VERSION and known and epoch is not None:
        if opcode == RESPONSE_BIT | Opcode.EXTERNAL_ADDRESS and len(data) >= 12:
            _, _, _, _, packed = _EXTERNAL_RESPONSE.unpack_from(data)
            return ExternalAddressResponse(ResultCode(result), epoch, IPv4Address(packed))
        if opcode in (RESPONSE_BIT | Opcode.MAP_UDP, RESPONSE_BIT | Opcode.MAP_TCP) and (
            len(data) >= MAP_RESPONSE_BYTES
        ):
            _, _, _, _, internal, external, lifetime = _MAP_RESPONSE.unpack_from(data)
            op = Opcode(opcode & ~RESPONSE_BIT)
            return MapResponse(op, ResultCode(result), epoch, internal, external, lifetime)
    return ErrorResponse(version, opcode, result, epoch)
