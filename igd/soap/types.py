"""Typed codecs for the UPnP data types IGD actions use: text in, Python value out (CTRL-11).

Input syntax (DA1.1 §2.5 "int: may have leading zeros"; "ui*: same format as int without sign"):

- integers: ASCII decimal digits only, leading zeros allowed, at most MAX_INTEGER_CHARS characters;
  unsigned types take no sign at all, signed types an optional "-" (never "+"). No whitespace, no
  "0x10", "1e3", "1_000", "1.0" or non-ASCII digits. Bad syntax or a value outside the data type
  (ui2 65536) -> InvalidArgs 402; outside the action's allowedValueRange -> ArgumentValueOutOfRange
  601 (CTRL-11, ST-15).
- boolean: "0", "1", "true", "false", "yes", "no" in any case; emitted as "0"/"1" (CTRL-11).
- string: taken verbatim (no trimming); longer than `max_length` characters -> StringArgumentTooLong
  605; not in allowedValueList -> 601 (exact, case-sensitive match: tolerance such as "tcp" for
  NewProtocol is the action's decision, made before calling parse_arg).

601/605 are IGD:2-era codes: `upnp_error_for` turns them into 402 for IGD:1 control points.
Errors in the caller's own table (unknown data type, Python value of the wrong type) are local
misuse and raise ValueError/TypeError, never a UPnPError.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Final, Literal, overload

from igd.soap.errors import ArgumentValueOutOfRange, InvalidArgs, StringArgumentTooLong

__all__ = [
    "INTEGER_RANGES",
    "MAX_INTEGER_CHARS",
    "MAX_STRING_CHARS",
    "format_arg",
    "parse_arg",
    "parse_boolean",
    "parse_integer",
    "parse_string",
    "parse_ui2",
    "parse_ui4",
]

MAX_INTEGER_CHARS: Final = 32
"""Longest accepted integer text, leading zeros included (ST-15: bounded input)."""

MAX_STRING_CHARS: Final = 4096
"""Default bound on a string argument, in characters (the body itself is at most 64 KiB, GEN-10)."""

INTEGER_RANGES: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        "ui1": (0, 2**8 - 1),
        "ui2": (0, 2**16 - 1),
        "ui4": (0, 2**32 - 1),
        "ui8": (0, 2**64 - 1),
        "i1": (-(2**7), 2**7 - 1),
        "i2": (-(2**15), 2**15 - 1),
        "i4": (-(2**31), 2**31 - 1),
        "int": (-(2**31), 2**31 - 1),
        "i8": (-(2**63), 2**63 - 1),
    }
)
"""Inclusive value range of each UPnP integer data type (DA1.1 Table 2-4)."""

_UNSIGNED: Final = re.compile(r"[0-9]+", re.ASCII)
_SIGNED: Final = re.compile(r"-?[0-9]+", re.ASCII)
_BOOLEANS: Final[Mapping[str, bool]] = MappingProxyType(
    {"0": False, "1": True, "false": False, "true": True, "no": False, "yes": True}
)

IntegerType = Literal["ui1", "ui2", "ui4", "ui8", "i1", "i2", "i4", "int", "i8"]


def _preview(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_integer(
    data_type: str, text: str, *, allowed_range: tuple[int, int] | None = None
) -> int:
    """Decimal integer of a UPnP integer type: 402 on bad syntax or type overflow, 601 off range."""
    try:
        low, high = INTEGER_RANGES[data_type]
    except KeyError:
        raise ValueError(f"not a UPnP integer data type: {data_type!r}") from None
    pattern = _UNSIGNED if low == 0 else _SIGNED
    if len(text) > MAX_INTEGER_CHARS or pattern.fullmatch(text) is None:
        raise InvalidArgs(f"{data_type} expected, got {_preview(text)}")
    value = int(text, 10)
    if not low <= value <= high:
        raise InvalidArgs(f"{value} does not fit {data_type}")
    if allowed_range is not None and not allowed_range[0] <= value <= allowed_range[1]:
        raise ArgumentValueOutOfRange(f"{value} outside {allowed_range[0]}..{allowed_range[1]}")
    return value


def parse_ui2(text: str, *, allowed_range: tuple[int, int] | None = None) -> int:
    """A ui2 (ports, NumberOfPorts): 0..65535 in decimal digits (CTRL-11)."""
    return parse_integer("ui2", text, allowed_range=allowed_range)


def parse_ui4(text: str, *, allowed_range: tuple[int, int] | None = None) -> int:
    """A ui4 (lease, index, counters): 0..4294967295 in decimal digits (CTRL-11)."""
    return parse_integer("ui4", text, allowed_range=allowed_range)


def parse_boolean(text: str) -> bool:
    """0/1/true/false/yes/no in any case (CTRL-11); anything else is 402."""
    value = _BOOLEANS.get(text.lower()) if text.isascii() and len(text) <= 5 else None
    if value is None:
        raise InvalidArgs(f"boolean expected, got {_preview(text)}")
    return value


def parse_string(
    text: str, *, allowed_values: Collection[str] = (), max_length: int = MAX_STRING_CHARS
) -> str:
    """The text itself: 605 when longer than `max_length` chars, 601 when not in allowed_values."""
    if len(text) > max_length:
        raise StringArgumentTooLong(f"{len(text)} characters, at most {max_length}")
    if allowed_values and text not in allowed_values:
        raise ArgumentValueOutOfRange(f"{_preview(text)} not in the allowed values")
    return text


@overload
def parse_arg(
    data_type: IntegerType,
    text: str,
    *,
    allowed_values: Collection[str] = (),
    allowed_range: tuple[int, int] | None = None,
    max_length: int = MAX_STRING_CHARS,
) -> int: ...
@overload
def parse_arg(
    data_type: Literal["boolean"],
    text: str,
    *,
    allowed_values: Collection[str] = (),
    allowed_range: tuple[int, int] | None = None,
    max_length: int = MAX_STRING_CHARS,
) -> bool: ...
@overload
def parse_arg(
    data_type: Literal["string"],
    text: str,
    *,
    allowed_values: Collection[str] = (),
    allowed_range: tuple[int, int] | None = None,
    max_length: int = MAX_STRING_CHARS,
) -> str: ...
@overload
def parse_arg(
    data_type: str,
    text: str,
    *,
    allowed_values: Collection[str] = (),
    allowed_range: tuple[int, int] | None = None,
    max_length: int = MAX_STRING_CHARS,
) -> int | bool | str: ...
def parse_arg(
    data_type: str,
    text: str,
    *,
    allowed_values: Collection[str] = (),
    allowed_range: tuple[int, int] | None = None,
    max_length: int = MAX_STRING_CHARS,
) -> int | bool | str:
    """Decode one in-argument by its SCPD data type and constraints (CTRL-11): 402/601/605."""
    if data_type == "string":
        return parse_string(text, allowed_values=allowed_values, max_length=max_length)
    if data_type == "boolean":
        return parse_boolean(text)
    if data_type not in INTEGER_RANGES:
        raise ValueError(f"unsupported UPnP data type: {data_type!r}")
    value = parse_integer(data_type, text, allowed_range=allowed_range)
    if allowed_values and str(value) not in {str(int(v)) for v in allowed_values}:
        raise ArgumentValueOutOfRange(f"{value} not in the allowed values")
    return value


def format_arg(data_type: str, value: int | bool | str) -> str:
    """Encode one out-argument: canonical decimal, boolean as "0"/"1", strings as is (CTRL-11)."""
    if data_type == "string":
        if not isinstance(value, str):
            raise TypeError(f"string expected, got {type(value).__name__}")
        return value
    if data_type == "boolean":
        if not isinstance(value, bool):
            raise TypeError(f"bool expected, got {type(value).__name__}")
        return "1" if value else "0"
    if data_type not in INTEGER_RANGES:
        raise ValueError(f"unsupported UPnP data type: {data_type!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"int expected for {data_type}, got {type(value).__name__}")
    low, high = INTEGER_RANGES[data_type]
    if not low <= value <= high:
        raise ValueError(f"{value} does not fit {data_type}")
    return str(value)
