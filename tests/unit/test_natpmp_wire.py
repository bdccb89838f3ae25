"""NAT-PMP codec: natpmpc golden requests, RFC 6886 error cases, exact built bytes, fuzzing."""

from __future__ import annotations

import itertools
import struct
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from igd.natpmp.wire import (
    ANNOUNCE_GAPS_S,
    EXTERNAL_ADDRESS_RESPONSE_BYTES,
    MAP_RESPONSE_BYTES,
    MAX_RESPONSE_BYTES,
    UNSUPPORTED_VERSION_RESPONSE_BYTES,
    ErrorResponse,
    ExternalAddressRequest,
    ExternalAddressResponse,
    MapRequest,
    MapResponse,
    NatPmpBuildError,
    NatPmpError,
    NatPmpParseError,
    NatPmpRequest,
    Opcode,
    ResultCode,
    UnsupportedOpcodeRequest,
    UnsupportedVersionRequest,
    pull_request,
    pull_response,
    push_external_address_response,
    push_map_response,
    push_request,
    push_unsupported_opcode_response,
    push_unsupported_version_response,
)

GOLDEN = Path(__file__).parent / "natpmp_golden"
GOLDEN_REQUESTS: dict[str, NatPmpRequest] = {
    "natpmpc-20150609-external-address.bin": ExternalAddressRequest(),
    "natpmpc-20150609-map-udp-40001-7200.bin": MapRequest(Opcode.MAP_UDP, 40001, 40001, 7200),
    "natpmpc-20150609-map-tcp-40002-to-41002-3600.bin": MapRequest(
        Opcode.MAP_TCP, 40002, 41002, 3600
    ),
    "natpmpc-20150609-delete-udp-40001.bin": MapRequest(Opcode.MAP_UDP, 40001, 0, 0),
    "natpmpc-20150609-delete-all-tcp.bin": MapRequest(Opcode.MAP_TCP, 0, 0, 0),
}
WAN = IPv4Address("198.19.0.1")
REQUEST_TYPES = (
    ExternalAddressRequest,
    MapRequest,
    UnsupportedVersionRequest,
    UnsupportedOpcodeRequest,
)


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


# ---- golden requests ----------------------------------------------------------------------------


def test_every_golden_file_is_named() -> None:
    assert sorted(p.name for p in GOLDEN.glob("*.bin")) == sorted(GOLDEN_REQUESTS)


@pytest.mark.parametrize("name", sorted(GOLDEN_REQUESTS))
def test_golden_request_decodes(name: str) -> None:
    assert pull_request(golden(name)) == GOLDEN_REQUESTS[name]


@pytest.mark.parametrize("name", sorted(GOLDEN_REQUESTS))
def test_golden_request_rebuilds_byte_exact(name: str) -> None:
    request = GOLDEN_REQUESTS[name]
    assert isinstance(request, ExternalAddressRequest | MapRequest)
    assert push_request(request) == golden(name)


def test_map_request_fields_and_delete_flag() -> None:
    request = pull_request(golden("natpmpc-20150609-delete-udp-40001.bin"))
    assert isinstance(request, MapRequest)
    assert request.is_delete
    assert not MapRequest(Opcode.MAP_UDP, 1, 1, 1).is_delete


# ---- what pull_request refuses or classifies (PMP-04..07, ST-29) ---------------------------------


@pytest.mark.parametrize(
    ("hex_bytes", "reason"),
    [
        ("", "short"),  # T-PMP-16
        ("00", "short"),  # T-PMP-16
        ("02", "short"),
        ("0001", "truncated"),
        ("00010000", "truncated"),  # T-PMP-16
        ("000200009c419c4100001c", "truncated"),  # 11 bytes
        ("0080", "response"),  # T-PMP-15
        ("0081" + "00" * 14, "response"),  # T-PMP-15
        ("00ff", "response"),
        ("0180", "response"),  # a response of another version is not answered either
        ("0282" + "00" * 58, "response"),  # a PCP MAP response
    ],
)
def test_dropped_datagrams(hex_bytes: str, reason: str) -> None:
    with pytest.raises(NatPmpParseError) as caught:
        pull_request(bytes.fromhex(hex_bytes))
    assert caught.value.reason == reason
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, NatPmpError)


@pytest.mark.parametrize("version", [1, 2, 3, 255])
def test_other_versions_are_unsupported(version: int) -> None:
    assert pull_request(bytes([version, 0])) == UnsupportedVersionRequest(version, 0)
    assert pull_request(bytes([version, 1]) + bytes(58)) == UnsupportedVersionRequest(version, 1)


def test_trailing_bytes_are_ignored() -> None:
    assert pull_request(bytes.fromhex("0000") + bytes(40)) == ExternalAddressRequest()
    data = golden("natpmpc-20150609-map-udp-40001-7200.bin") + b"\xff" * 7
    assert pull_request(data) == MapRequest(Opcode.MAP_UDP, 40001, 40001, 7200)


def test_reserved_field_is_ignored() -> None:
    data = bytes.fromhex("0002ffff9c42a02a00000e10")
    assert pull_request(data) == MapRequest(Opcode.MAP_TCP, 40002, 41002, 3600)


def test_unknown_opcode_keeps_at_most_16_bytes() -> None:
    data = bytes.fromhex("0003") + bytes(range(100))
    request = pull_request(data)
    assert request == UnsupportedOpcodeRequest(3, data[:16])


def classify(data: bytes) -> NatPmpRequest | str:
    """The request, or the drop reason."""
    try:
        return pull_request(data)
    except NatPmpParseError as exc:
        return exc.reason


def test_every_two_byte_header_is_classified() -> None:
    """All 65,536 (version, opcode) pairs, as 2-byte and 12-byte datagrams."""
    for version in range(256):
        for opcode in range(256):
            for data in (bytes([version, opcode]), bytes([version, opcode]) + bytes(10)):
                outcome = classify(data)
                if opcode >= 128:
                    assert outcome == "response"
                elif version:
                    assert outcome == UnsupportedVersionRequest(version, opcode)
                elif opcode == 0:
                    assert outcome == ExternalAddressRequest()
                elif opcode in (1, 2):
                    expected = (
                        "truncated" if len(data) == 2 else MapRequest(Opcode(opcode), 0, 0, 0)
                    )
                    assert outcome == expected
                else:
                    assert outcome == UnsupportedOpcodeRequest(opcode, data)


# ---- built responses, byte-exact ----------------------------------------------------------------


def test_external_address_response_t_pmp_01() -> None:
    data = push_external_address_response(0x01020304, WAN)
    assert data == bytes.fromhex("0080000001020304c6130001")
    assert len(data) == EXTERNAL_ADDRESS_RESPONSE_BYTES


def test_external_address_failure_zeroes_the_address() -> None:
    """PMP-10: on failure the address field is zero on transmission."""
    data = push_external_address_response(7, WAN, ResultCode.NETWORK_FAILURE)
    assert data == bytes.fromhex("008000030000000700000000")
    assert push_external_address_response(7, None, ResultCode.NETWORK_FAILURE) == data


def test_map_response_t_pmp_03() -> None:
    data = push_map_response(Opcode.MAP_UDP, ResultCode.SUCCESS, 1234, 40001, 40001, 7200)
    assert data == bytes.fromhex("00810000000004d29c419c4100001c20")
    assert len(data) == MAP_RESPONSE_BYTES


def test_map_response_tcp_opcode_is_130() -> None:
    data = push_map_response(Opcode.MAP_TCP, ResultCode.SUCCESS, 0, 1, 2, 3)
    assert data[:2] == b"\x00\x82"


def test_map_failure_zeroes_port_and_lifetime_but_echoes_internal_port() -> None:
    """PMP-15."""
    data = push_map_response(Opcode.MAP_TCP, ResultCode.OUT_OF_RESOURCES, 9, 40040, 40040, 60)
    assert data == bytes.fromhex("00820004000000099c68000000000000")


def test_delete_response_t_pmp_10() -> None:
    data = push_map_response(Opcode.MAP_UDP, ResultCode.SUCCESS, 5, 40001)
    assert data == bytes.fromhex("00810000000000059c41000000000000")


def test_unsupported_version_response_t_pmp_13() -> None:
    data = push_unsupported_version_response(0x0A0B0C0D)
    assert data == bytes.fromhex("000000010a0b0c0d")
    assert len(data) == UNSUPPORTED_VERSION_RESPONSE_BYTES


def test_unsupported_opcode_echo_t_pmp_14() -> None:
    request = bytes.fromhex("000300000102030405060708")
    assert push_unsupported_opcode_response(request) == bytes.fromhex("008300050102030405060708")


@pytest.mark.parametrize(
    ("request_hex", "response_hex"),
    [
        ("0003", "00830005"),
        ("007f01", "00ff0005"),
        ("0004ffff", "00840005"),
        ("0005" + "11" * 30, "00850005" + "11" * 12),
    ],
)
def test_unsupported_opcode_echo_is_padded_and_cut(request_hex: str, response_hex: str) -> None:
    response = push_unsupported_opcode_response(bytes.fromhex(request_hex))
    assert response == bytes.fromhex(response_hex)
    assert len(response) <= MAX_RESPONSE_BYTES


@pytest.mark.parametrize("request_hex", ["", "00", "0083", "0103"])
def test_only_requests_are_echoed(request_hex: str) -> None:
    with pytest.raises(NatPmpBuildError):
        push_unsupported_opcode_response(bytes.fromhex(request_hex))


@pytest.mark.parametrize(
    "build",
    [
        lambda: push_map_response(Opcode.MAP_UDP, ResultCode.SUCCESS, 0, 65536, 1, 1),
        lambda: push_map_response(Opcode.MAP_UDP, ResultCode.SUCCESS, 0, 1, -1, 1),
        lambda: push_map_response(Opcode.MAP_UDP, ResultCode.SUCCESS, 0, 1, 1, 2**32),
        lambda: push_map_response(Opcode.MAP_UDP, ResultCode.SUCCESS, 2**32, 1, 1, 1),
        lambda: push_map_response(Opcode.EXTERNAL_ADDRESS, ResultCode.SUCCESS, 0, 1, 1, 1),
        lambda: push_map_response(Opcode.MAP_UDP, ResultCode.SUCCESS, 0, True, 1, 1),
        lambda: push_external_address_response(0, None),
        lambda: push_external_address_response(-1, WAN),
        lambda: push_unsupported_version_response(2**32),
        lambda: push_request(MapRequest(Opcode.MAP_UDP, 70000, 0, 0)),
        lambda: push_request(MapRequest(Opcode.EXTERNAL_ADDRESS, 1, 1, 1)),
    ],
)
def test_out_of_range_fields_are_our_bug(build: object) -> None:
    assert callable(build)
    with pytest.raises(NatPmpBuildError):
        build()


def test_announcement_gaps_double_from_250_ms() -> None:
    """PMP-12: ten packets, the second 250 ms after the first, then doubling."""
    assert len(ANNOUNCE_GAPS_S) == 10
    assert ANNOUNCE_GAPS_S[:2] == (0.0, 0.25)
    assert all(b == 2 * a for a, b in itertools.pairwise(ANNOUNCE_GAPS_S[1:]))


# ---- pull_response (the client side, for tests) -------------------------------------------------


def test_pull_response_shapes() -> None:
    assert pull_response(push_external_address_response(3, WAN)) == ExternalAddressResponse(
        ResultCode.SUCCESS, 3, WAN
    )
    assert pull_response(push_unsupported_version_response(4)) == ErrorResponse(0, 0, 1, 4)
    assert pull_response(bytes.fromhex("00830005")) == ErrorResponse(0, 0x83, 5, None)
    assert pull_response(bytes.fromhex("0081000000000001")) == ErrorResponse(0, 0x81, 0, 1)
    with pytest.raises(NatPmpParseError):
        pull_response(b"\x00\x80\x00")


# ---- property tests -----------------------------------------------------------------------------

u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
map_opcodes = st.sampled_from([Opcode.MAP_UDP, Opcode.MAP_TCP])
results = st.sampled_from(list(ResultCode))
addresses = st.integers(0, 2**32 - 1).map(IPv4Address)


@given(map_opcodes, u16, u16, u32)
def test_map_request_round_trip(opcode: Opcode, internal: int, suggested: int, life: int) -> None:
    request = MapRequest(opcode, internal, suggested, life)
    data = push_request(request)
    assert len(data) == 12
    assert pull_request(data) == request


@given(u32, addresses, results)
def test_external_address_response_round_trip(
    epoch: int, address: IPv4Address, result: ResultCode
) -> None:
    data = push_external_address_response(epoch, address, result)
    expected = address if result is ResultCode.SUCCESS else IPv4Address(0)
    assert pull_response(data) == ExternalAddressResponse(result, epoch, expected)
    assert len(data) <= MAX_RESPONSE_BYTES


@given(map_opcodes, results, u32, u16, u16, u32)
def test_map_response_round_trip(
    opcode: Opcode, result: ResultCode, epoch: int, internal: int, external: int, life: int
) -> None:
    data = push_map_response(opcode, result, epoch, internal, external, life)
    ok = result is ResultCode.SUCCESS
    assert pull_response(data) == MapResponse(
        opcode,
        result,
        epoch,
        internal,
        external if ok else 0,
        life if ok else 0,
    )
    assert len(data) <= MAX_RESPONSE_BYTES


def _check_any(data: bytes) -> None:
    """Only NatPmpParseError or a request; every answer we could build stays <= 16 bytes."""
    request = classify(data)
    if isinstance(request, str):
        assert request in ("short", "response", "truncated")
        return
    assert isinstance(request, REQUEST_TYPES)
    if isinstance(request, UnsupportedOpcodeRequest):
        response = push_unsupported_opcode_response(request.data)
        assert len(response) <= MAX_RESPONSE_BYTES
        assert response[1] == request.opcode | 0x80
        assert struct.unpack_from("!H", response, 2)[0] == ResultCode.UNSUPP_OPCODE
    elif isinstance(request, MapRequest):
        assert push_request(request) == bytes(data[:2]) + b"\x00\x00" + bytes(data[4:12])


@settings(max_examples=1000)
@given(st.binary(max_size=64))
def test_fuzz_random_datagrams(data: bytes) -> None:
    _check_any(data)


@settings(max_examples=1000)
@given(
    st.sampled_from(sorted(GOLDEN_REQUESTS)),
    st.lists(st.tuples(st.integers(0, 15), st.integers(0, 255)), max_size=4),
    st.integers(0, 16),
    st.binary(max_size=8),
)
def test_fuzz_mutated_golden(
    name: str, flips: list[tuple[int, int]], keep: int, tail: bytes
) -> None:
    data = bytearray(golden(name))
    for position, value in flips:
        if position < len(data):
            data[position] = value
    _check_any(bytes(data[:keep]) + tail)
