"""Typed argument codecs (CTRL-11, ST-15): the syntax table, ranges, allowed values, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igd.soap.errors import (
    ArgumentValueOutOfRange,
    InvalidArgs,
    StringArgumentTooLong,
    UPnPError,
    upnp_error_for,
)
from igd.soap.types import (
    INTEGER_RANGES,
    MAX_INTEGER_CHARS,
    MAX_STRING_CHARS,
    format_arg,
    parse_arg,
    parse_boolean,
    parse_integer,
    parse_string,
    parse_ui2,
    parse_ui4,
)

E402, E601, E605 = InvalidArgs, ArgumentValueOutOfRange, StringArgumentTooLong

# (data type, text, expected value or error class)
CTRL_11: list[tuple[str, str, int | bool | str | type[UPnPError]]] = [
    ("ui2", "0", 0),
    ("ui2", "1", 1),
    ("ui2", "18100", 18100),
    ("ui2", "65535", 65535),
    ("ui2", "00080", 80),  # leading zeros: "int ... may have leading zeros" (DA1.1 2.5)
    ("ui2", "0" * (MAX_INTEGER_CHARS - 1) + "1", 1),
    ("ui2", "0" * MAX_INTEGER_CHARS + "1", E402),  # bounded input
    ("ui2", "65536", E402),  # outside the data type: wrong type, not out of allowed range
    ("ui2", "70000", E402),  # miniupnpd wraps this to 4464 (reference 9b); we refuse
    ("ui2", "-1", E402),
    ("ui2", "-0", E402),
    ("ui2", "+5", E402),
    ("ui2", " 5", E402),
    ("ui2", "5 ", E402),
    ("ui2", "5\n", E402),
    ("ui2", "\t5", E402),
    ("ui2", "0x10", E402),
    ("ui2", "0o10", E402),
    ("ui2", "1e3", E402),
    ("ui2", "1_000", E402),
    ("ui2", "1,000", E402),
    ("ui2", "1.0", E402),
    ("ui2", "1.", E402),
    ("ui2", "", E402),
    ("ui2", "*", E402),
    ("ui2", "abc", E402),
    ("ui2", "\u0663", E402),  # ARABIC-INDIC DIGIT THREE: int() would accept it
    ("ui2", "\uff15", E402),  # FULLWIDTH DIGIT FIVE
    ("ui2", "\u00b2", E402),  # SUPERSCRIPT TWO
    ("ui4", "0", 0),
    ("ui4", "604800", 604800),
    ("ui4", "4294967295", 2**32 - 1),
    ("ui4", "4294967296", E402),
    ("ui4", "99999999999999999999", E402),
    ("ui1", "255", 255),
    ("ui1", "256", E402),
    ("ui8", "18446744073709551615", 2**64 - 1),
    ("ui8", "18446744073709551616", E402),
    ("i1", "-128", -128),
    ("i1", "127", 127),
    ("i1", "128", E402),
    ("i1", "-129", E402),
    ("i2", "-32768", -32768),
    ("i2", "32768", E402),
    ("i4", "-5", -5),
    ("i4", "-0005", -5),
    ("i4", "2147483647", 2**31 - 1),
    ("i4", "-2147483648", -(2**31)),
    ("i4", "2147483648", E402),
    ("i4", "+5", E402),  # no "+": one spelling per value keeps the accepted set small
    ("i4", "-", E402),
    ("i4", "--1", E402),
    ("i4", "- 1", E402),
    ("int", "-7", -7),
    ("i8", "-9223372036854775808", -(2**63)),
    ("i8", "9223372036854775808", E402),
    ("boolean", "0", False),
    ("boolean", "1", True),
    ("boolean", "true", True),
    ("boolean", "false", False),
    ("boolean", "yes", True),
    ("boolean", "no", False),
    ("boolean", "TRUE", True),
    ("boolean", "False", False),
    ("boolean", "YeS", True),
    ("boolean", "NO", False),
    ("boolean", "2", E402),
    ("boolean", "-1", E402),
    ("boolean", "01", E402),
    ("boolean", "", E402),
    ("boolean", " 1", E402),
    ("boolean", "1 ", E402),
    ("boolean", "on", E402),
    ("boolean", "off", E402),
    ("boolean", "y", E402),
    ("boolean", "t", E402),
    ("boolean", "truee", E402),
    ("boolean", "true" * 1000, E402),
    ("boolean", "tru\u0130", E402),  # non-ASCII that lower()s to ASCII letters
    ("string", "", ""),
    ("string", "  kept  as is  ", "  kept  as is  "),
    ("string", "a&b<c>]]>", "a&b<c>]]>"),
    ("string", "x" * MAX_STRING_CHARS, "x" * MAX_STRING_CHARS),
    ("string", "x" * (MAX_STRING_CHARS + 1), E605),
]


@pytest.mark.parametrize(("data_type", "text", "expected"), CTRL_11)
def test_ctrl_11_table(
    data_type: str, text: str, expected: int | bool | str | type[UPnPError]
) -> None:
    if isinstance(expected, type):
        with pytest.raises(UPnPError) as info:
            parse_arg(data_type, text)
        assert type(info.value) is expected
    else:
        value = parse_arg(data_type, text)
        assert value == expected
        assert type(value) is type(expected)


def test_specific_parsers_agree_with_parse_arg() -> None:
    assert parse_ui2("00080") == 80
    assert parse_ui4("604800") == 604800
    assert parse_boolean("Yes") is True
    assert parse_string("TCP", allowed_values=("TCP", "UDP")) == "TCP"
    with pytest.raises(InvalidArgs):
        parse_ui2("65536")
    with pytest.raises(InvalidArgs):
        parse_ui4("-1")


@pytest.mark.parametrize(
    ("data_type", "text", "allowed_range", "expected"),
    [
        ("ui4", "1", (1, 604800), 1),
        ("ui4", "604800", (1, 604800), 604800),
        ("ui4", "0", (1, 604800), E601),
        ("ui4", "604801", (1, 604800), E601),
        ("ui2", "65536", (1, 65535), E402),  # the data type is checked before the range
        ("ui2", "x", (1, 65535), E402),
        ("i4", "-1", (0, 10), E601),
    ],
)
def test_allowed_range(
    data_type: str,
    text: str,
    allowed_range: tuple[int, int],
    expected: int | type[UPnPError],
) -> None:
    if isinstance(expected, int):
        assert parse_arg(data_type, text, allowed_range=allowed_range) == expected
    else:
        with pytest.raises(UPnPError) as info:
            parse_arg(data_type, text, allowed_range=allowed_range)
        assert type(info.value) is expected


@pytest.mark.parametrize(
    ("data_type", "text", "allowed", "expected"),
    [
        ("string", "TCP", ("TCP", "UDP"), "TCP"),
        ("string", "UDP", ("TCP", "UDP"), "UDP"),
        ("string", "tcp", ("TCP", "UDP"), E601),  # exact match; tolerance is the action's choice
        ("string", "TCP ", ("TCP", "UDP"), E601),
        ("string", "ICMP", ("TCP", "UDP"), E601),
        ("string", "", ("TCP", "UDP"), E601),
        ("string", "IP_Routed", ("Unconfigured", "IP_Routed", "IP_Bridged"), "IP_Routed"),
        ("ui2", "0080", ("80", "443"), 80),  # integers compare by value
        ("ui2", "81", ("80", "443"), E601),
        ("ui2", "x", ("80",), E402),
    ],
)
def test_allowed_values(
    data_type: str, text: str, allowed: tuple[str, ...], expected: int | str | type[UPnPError]
) -> None:
    if isinstance(expected, type):
        with pytest.raises(UPnPError) as info:
            parse_arg(data_type, text, allowed_values=allowed)
        assert type(info.value) is expected
    else:
        assert parse_arg(data_type, text, allowed_values=allowed) == expected


def test_string_length_bound_is_a_parameter() -> None:
    assert parse_arg("string", "abcd", max_length=4) == "abcd"
    with pytest.raises(StringArgumentTooLong):
        parse_arg("string", "abcde", max_length=4)


@pytest.mark.parametrize(
    ("error", "v1", "v2"),
    [(E402, 402, 402), (E601, 402, 601), (E605, 402, 605)],
)
def test_codec_errors_on_the_wire(error: type[UPnPError], v1: int, v2: int) -> None:
    """601/605 are IGD:2-era codes; IGD:1 control points get 402 (2.2.4 v1 column)."""
    assert upnp_error_for(error(), version=1, action="AddPortMapping").code == v1
    assert upnp_error_for(error(), version=2, action="AddPortMapping").code == v2


@pytest.mark.parametrize(
    ("data_type", "value", "text"),
    [
        ("ui2", 0, "0"),
        ("ui2", 65535, "65535"),
        ("ui4", 604800, "604800"),
        ("i4", -5, "-5"),
        ("ui8", 2**64 - 1, "18446744073709551615"),
        ("boolean", True, "1"),
        ("boolean", False, "0"),
        ("string", "", ""),
        ("string", "a&b", "a&b"),  # escaping is build_response's job
    ],
)
def test_format_arg(data_type: str, value: int | bool | str, text: str) -> None:
    assert format_arg(data_type, value) == text


@pytest.mark.parametrize(
    ("data_type", "value", "error"),
    [
        ("ui2", 65536, ValueError),
        ("ui2", -1, ValueError),
        ("ui2", True, TypeError),
        ("ui2", "80", TypeError),
        ("boolean", 1, TypeError),
        ("boolean", "1", TypeError),
        ("string", 5, TypeError),
        ("float", 1, ValueError),
        ("dateTime", "x", ValueError),
    ],
)
def test_format_arg_misuse(data_type: str, value: int | bool | str, error: type[Exception]) -> None:
    with pytest.raises(error):
        format_arg(data_type, value)


@pytest.mark.parametrize("data_type", ["float", "uuid", "bin.base64", "UI2", ""])
def test_unknown_data_type_is_local_misuse(data_type: str) -> None:
    with pytest.raises(ValueError, match="data type") as info:
        parse_arg(data_type, "1")
    assert not isinstance(info.value, UPnPError)
    with pytest.raises(ValueError, match="data type"):
        parse_integer(data_type, "1")


INTEGER_TYPES = sorted(INTEGER_RANGES)


@st.composite
def typed_integers(draw: st.DrawFn) -> tuple[str, int]:
    data_type = draw(st.sampled_from(INTEGER_TYPES))
    low, high = INTEGER_RANGES[data_type]
    return data_type, draw(st.integers(low, high))


@given(typed_integers(), st.integers(0, 5))
@settings(max_examples=300, deadline=None)
def test_integer_round_trip(typed: tuple[str, int], zeros: int) -> None:
    data_type, value = typed
    text = format_arg(data_type, value)
    assert parse_arg(data_type, text) == value
    padded = ("-" + "0" * zeros + text[1:]) if value < 0 else "0" * zeros + text
    assert parse_arg(data_type, padded) == value


@given(st.booleans())
def test_boolean_round_trip(value: bool) -> None:
    assert parse_arg("boolean", format_arg("boolean", value)) is value


@given(st.sampled_from([*INTEGER_TYPES, "boolean", "string"]), st.text(max_size=40))
@settings(max_examples=500, deadline=None)
def test_any_text_gives_a_value_or_a_upnp_error(data_type: str, text: str) -> None:
    """Never another exception; accepted integers are canonical modulo leading zeros."""
    try:
        value = parse_arg(data_type, text)
    except (InvalidArgs, ArgumentValueOutOfRange, StringArgumentTooLong):
        return
    if data_type in INTEGER_RANGES:
        assert isinstance(value, int)
        assert text.lstrip("-").lstrip("0") == str(abs(value)).lstrip("0")
    elif data_type == "boolean":
        assert text.lower() in {"0", "1", "true", "false", "yes", "no"}
    else:
        assert value == text
