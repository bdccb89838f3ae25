"""PCP codec: golden packets built by hand from RFC 6887's layouts, every parse rule, fuzzing."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igd.pcp.wire import (
    HEADER_BYTES,
    LONG_ERROR_LIFETIME_S,
    MAX_MESSAGE_BYTES,
    SHORT_ERROR_LIFETIME_S,
    UNSPECIFIED_V4,
    UNSPECIFIED_V6,
    FilterOption,
    MapPayload,
    Opcode,
    PcpBuildError,
    PcpOption,
    PcpParseError,
    PcpRequest,
    PcpResponse,
    PeerPayload,
    PreferFailureOption,
    RawOption,
    ResultCode,
    ThirdPartyOption,
    error_lifetime,
    error_response,
    from_ipv4,
    is_unspecified,
    pull_header,
    pull_request,
    pull_response,
    push_announce,
    push_request,
    push_response,
    push_unparsed_error,
    to_ipv4,
)

NONCE = bytes(range(1, 13))
CLIENT = IPv4Address("198.18.0.10")
CLIENT_FIELD = bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 10])
WAN_FIELD = bytes(10) + b"\xff\xff" + bytes([198, 19, 0, 1])
ZERO_V4_FIELD = bytes(10) + b"\xff\xff" + bytes(4)

# RFC 6887 section 7.1 header + section 11.1 MAP payload, field by field.
MAP_REQUEST = (
    bytes([2, 1, 0, 0])  # version 2, R=0 opcode MAP, reserved
    + bytes([0, 0, 0x0E, 0x10])  # requested lifetime 3600
    + CLIENT_FIELD  # client IP ::ffff:198.18.0.10
    + NONCE
    + bytes([17, 0, 0, 0])  # protocol UDP, reserved 24 bits
    + bytes([0x9C, 0xA5, 0x9C, 0xA5])  # internal port 40101, suggested external port 40101
    + ZERO_V4_FIELD  # suggested external address ::ffff:0.0.0.0
)
ANNOUNCE_REQUEST = bytes([2, 0, 0, 0]) + bytes(4) + CLIENT_FIELD
PREFER_FAILURE_BYTES = bytes([2, 0, 0, 0])
THIRD_PARTY_BYTES = bytes([1, 0, 0, 16]) + bytes(10) + b"\xff\xff" + bytes([198, 18, 0, 11])
FILTER_BYTES = (
    bytes([3, 0, 0, 20])
    + bytes([0, 128, 0, 0])
    + bytes(10)
    + b"\xff\xff"
    + bytes([198, 19, 0, 100])
)
# RFC 6887 section 7.2 header + MAP payload: SUCCESS, lifetime 3600, epoch 42.
MAP_SUCCESS = (
    bytes([2, 0x81, 0, 0])
    + bytes([0, 0, 0x0E, 0x10])
    + bytes([0, 0, 0, 42])
    + bytes(12)
    + NONCE
    + bytes([17, 0, 0, 0])
    + bytes([0x9C, 0xA5, 0x9C, 0xA5])
    + WAN_FIELD
)


def map_request(*options: PcpOption, lifetime: int = 3600) -> PcpRequest:
    return PcpRequest(
        Opcode.MAP,
        lifetime,
        from_ipv4(CLIENT),
        MapPayload(NONCE, 17, 40101, 40101, UNSPECIFIED_V4),
        tuple(options),
    )


def parse_error(data: bytes) -> PcpParseError:
    with pytest.raises(PcpParseError) as info:
        pull_request(data)
    return info.value


# ---- Golden packets ------------------------------------------------------------------------------


def test_map_request_golden_bytes() -> None:
    assert len(MAP_REQUEST) == 60
    assert push_request(map_request()) == MAP_REQUEST
    assert pull_request(MAP_REQUEST) == map_request()


def test_announce_request_golden_bytes() -> None:
    request = pull_request(ANNOUNCE_REQUEST)
    assert request == PcpRequest(Opcode.ANNOUNCE, 0, from_ipv4(CLIENT))
    assert push_request(request) == ANNOUNCE_REQUEST


def test_options_golden_bytes() -> None:
    data = MAP_REQUEST + PREFER_FAILURE_BYTES + THIRD_PARTY_BYTES + FILTER_BYTES
    request = pull_request(data)
    assert request.prefer_failure
    assert request.third_party == from_ipv4(IPv4Address("198.18.0.11"))
    assert request.filters == (FilterOption(128, 0, from_ipv4(IPv4Address("198.19.0.100"))),)
    assert push_request(request) == data


def test_map_success_response_golden_bytes() -> None:
    response = PcpResponse(
        Opcode.MAP,
        ResultCode.SUCCESS,
        3600,
        42,
        MapPayload(NONCE, 17, 40101, 40101, from_ipv4(IPv4Address("198.19.0.1"))),
    )
    assert push_response(response) == MAP_SUCCESS
    assert pull_response(MAP_SUCCESS) == response


def test_announce_response_golden_bytes() -> None:
    assert push_announce(7) == bytes([2, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]) + bytes(12)
    assert push_announce(2**32 + 5)[8:12] == bytes([0, 0, 0, 5])  # epoch wraps


def test_peer_round_trip_golden() -> None:
    peer = PeerPayload(NONCE, 6, 5000, 0, UNSPECIFIED_V6, 443, from_ipv4(IPv4Address("198.19.0.9")))
    request = PcpRequest(Opcode.PEER, 600, from_ipv4(CLIENT), peer)
    data = push_request(request)
    assert len(data) == 24 + 56
    assert data[24 + 36 : 24 + 40] == bytes([0x01, 0xBB, 0, 0])  # remote port 443, reserved
    assert pull_request(data) == request


# ---- Addresses -----------------------------------------------------------------------------------


def test_ipv4_mapped_checks_all_96_prefix_bits() -> None:
    assert to_ipv4(from_ipv4(CLIENT)) == CLIENT
    assert to_ipv4(IPv6Address("::1:ffff:c612:a")) is None  # bit 80 set: not IPv4-mapped
    assert to_ipv4(IPv6Address("::c612:a")) is None  # IPv4-compatible is not IPv4-mapped
    assert to_ipv4(IPv6Address("2001:db8::1")) is None
    assert is_unspecified(UNSPECIFIED_V4)
    assert is_unspecified(UNSPECIFIED_V6)
    assert not is_unspecified(from_ipv4(CLIENT))


# ---- Header rules (RFC 6887 section 8.2) ---------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x02"], ids=["empty", "one-octet"])
def test_under_two_octets_dropped(data: bytes) -> None:
    assert parse_error(data).result is None


def test_r_bit_dropped() -> None:
    assert parse_error(bytes([2, 0x81]) + MAP_REQUEST[2:]).result is None
    assert parse_error(bytes([3, 0x80, 0, 0])).result is None  # R checked before the version


@pytest.mark.parametrize("version", [1, 3, 255])
def test_other_versions_unsupported_whatever_the_length(version: int) -> None:
    assert parse_error(bytes([version]) + MAP_REQUEST[1:]).result is ResultCode.UNSUPP_VERSION
    assert parse_error(bytes([version, 1])).result is ResultCode.UNSUPP_VERSION


def test_short_v2_dropped() -> None:
    assert parse_error(MAP_REQUEST[:12]).result is None
    assert parse_error(MAP_REQUEST[:23]).result is None


def test_oversize_and_unaligned_malformed() -> None:
    oversize = MAP_REQUEST + bytes(1104 - len(MAP_REQUEST))
    assert parse_error(oversize).result is ResultCode.MALFORMED_REQUEST
    assert parse_error(MAP_REQUEST + bytes(2)).result is ResultCode.MALFORMED_REQUEST
    at_limit = MAP_REQUEST + bytes([200, 0]) + (1100 - 64).to_bytes(2, "big") + bytes(1100 - 64)
    assert len(at_limit) == MAX_MESSAGE_BYTES
    assert pull_request(at_limit).options == ()  # an optional option filling the message


def test_pull_header_fields() -> None:
    header = pull_header(MAP_REQUEST)
    assert (header.opcode, header.lifetime, header.client_address) == (1, 3600, from_ipv4(CLIENT))


def test_unknown_opcode_unsupported() -> None:
    error = parse_error(bytes([2, 5]) + MAP_REQUEST[2:])
    assert error.result is ResultCode.UNSUPP_OPCODE
    assert error.request is None


def test_too_short_for_opcode_malformed() -> None:
    assert parse_error(MAP_REQUEST[:44]).result is ResultCode.MALFORMED_REQUEST
    peer_short = bytes([2, 2]) + MAP_REQUEST[2:]  # 36-octet payload, PEER needs 56
    assert parse_error(peer_short).result is ResultCode.MALFORMED_REQUEST


# ---- Option rules (RFC 6887 section 7.3, specs PCP-20..26) ---------------------------------------


def test_unknown_mandatory_option_unsupported_with_request_kept() -> None:
    error = parse_error(MAP_REQUEST + bytes([100, 0, 0, 0]))
    assert error.result is ResultCode.UNSUPP_OPTION
    assert error.request == map_request()


def test_unknown_optional_option_ignored() -> None:
    request = pull_request(MAP_REQUEST + bytes([200, 0, 0, 4]) + b"abcd")
    assert request.options == ()


@pytest.mark.parametrize(
    "option",
    [
        bytes([2, 0, 0, 4]) + bytes(4),  # PREFER_FAILURE with data
        bytes([1, 0, 0, 4]) + bytes(4),  # THIRD_PARTY too short
        bytes([3, 0, 0, 16]) + bytes(16),  # FILTER too short
        bytes([200, 0, 0, 40]),  # length 40 at the end of the message
        bytes([200, 0, 0, 5]) + bytes(4),  # padding missing
        PREFER_FAILURE_BYTES * 2,
        THIRD_PARTY_BYTES * 2,
    ],
    ids=["pf-data", "tp-short", "filter-short", "overrun", "no-padding", "pf-twice", "tp-twice"],
)
def test_malformed_options(option: bytes) -> None:
    error = parse_error(MAP_REQUEST + option)
    assert error.result is ResultCode.MALFORMED_OPTION
    assert error.request == map_request()


def test_filter_repeatable() -> None:
    assert len(pull_request(MAP_REQUEST + FILTER_BYTES * 3).filters) == 3


@pytest.mark.parametrize(
    ("prefix", "address", "valid"),
    [
        (0, bytes(16), True),
        (96, ZERO_V4_FIELD, True),
        (128, WAN_FIELD, True),
        (129, WAN_FIELD, False),
        (95, WAN_FIELD, False),
        (64, bytes([0x20, 0x01, 0x0D, 0xB8]) + bytes(12), True),  # IPv6 /64: valid syntax
    ],
)
def test_filter_prefix_length(prefix: int, address: bytes, valid: bool) -> None:
    option = bytes([3, 0, 0, 20, 0, prefix, 0, 0]) + address
    if valid:
        assert pull_request(MAP_REQUEST + option).filters[0].prefix_length == prefix
    else:
        assert parse_error(MAP_REQUEST + option).result is ResultCode.MALFORMED_OPTION


def test_option_outside_its_opcodes_malformed_request() -> None:
    peer = push_request(
        PcpRequest(
            Opcode.PEER,
            600,
            from_ipv4(CLIENT),
            PeerPayload(NONCE, 6, 5000, 0, UNSPECIFIED_V4, 443, from_ipv4(CLIENT)),
        )
    )
    assert parse_error(peer + PREFER_FAILURE_BYTES).result is ResultCode.MALFORMED_REQUEST
    assert parse_error(peer + FILTER_BYTES).result is ResultCode.MALFORMED_REQUEST
    assert pull_request(peer + THIRD_PARTY_BYTES).third_party is not None
    assert parse_error(ANNOUNCE_REQUEST + THIRD_PARTY_BYTES).result is (
        ResultCode.MALFORMED_REQUEST
    )


# ---- Error responses -----------------------------------------------------------------------------


def test_error_lifetimes() -> None:
    short = {
        ResultCode.NETWORK_FAILURE,
        ResultCode.NO_RESOURCES,
        ResultCode.USER_EX_QUOTA,
        ResultCode.CANNOT_PROVIDE_EXTERNAL,
    }
    for code in ResultCode:
        if code is ResultCode.SUCCESS:
            with pytest.raises(PcpBuildError):
                error_lifetime(code)
            continue
        expected = SHORT_ERROR_LIFETIME_S if code in short else LONG_ERROR_LIFETIME_S
        assert error_lifetime(code) == expected, code.name
    assert [int(code) for code in ResultCode] == list(range(14))


def test_error_response_copies_the_request_layout() -> None:
    response = error_response(map_request(), ResultCode.NOT_AUTHORIZED, epoch=9)
    data = push_response(response)
    assert data[:4] == bytes([2, 0x81, 0, 2])
    assert data[4:8] == (1800).to_bytes(4, "big")
    assert data[24:] == MAP_REQUEST[24:]  # nonce, protocol, ports, suggested address copied
    assert data[12:24] == bytes(12)


def test_unparsed_error_copies_request_and_client_ip_tail() -> None:
    data62 = MAP_REQUEST + b"\x01\x02"
    answer = push_unparsed_error(data62, ResultCode.MALFORMED_REQUEST, epoch=5)
    assert len(answer) == 60
    assert answer[:4] == bytes([2, 0x81, 0, 3])
    assert answer[12:24] == CLIENT_FIELD[4:]  # the last 96 bits of the client-IP field
    assert answer[24:] == MAP_REQUEST[24:]
    assert pull_response(answer).result == ResultCode.MALFORMED_REQUEST


def test_unparsed_error_copies_the_payload_only() -> None:
    answer = push_unparsed_error(MAP_REQUEST + bytes(1044), ResultCode.MALFORMED_REQUEST, epoch=0)
    assert answer[24:] == MAP_REQUEST[24:]
    truncated = push_unparsed_error(MAP_REQUEST[:44], ResultCode.MALFORMED_REQUEST, epoch=0)
    assert len(truncated) == HEADER_BYTES  # an incomplete payload is not copied
    unknown = push_unparsed_error(
        bytes([2, 5]) + MAP_REQUEST[2:], ResultCode.UNSUPP_OPCODE, epoch=0
    )
    assert len(unknown) == HEADER_BYTES
    assert unknown[1] == 0x85


def test_unsupported_version_answer_is_a_bare_header() -> None:
    answer = push_unparsed_error(bytes([1]) + MAP_REQUEST[1:], ResultCode.UNSUPP_VERSION, epoch=3)
    assert len(answer) == HEADER_BYTES
    assert answer[:4] == bytes([2, 0x81, 0, 1])
    assert answer[4:8] == (1800).to_bytes(4, "big")
    assert answer[8:12] == (3).to_bytes(4, "big")
    tiny = push_unparsed_error(bytes([3, 0]), ResultCode.UNSUPP_VERSION, epoch=3)
    assert tiny[:4] == bytes([2, 0x80, 0, 1])
    assert tiny[12:] == bytes(12)


# ---- Building is strict about our own mistakes ---------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        PcpRequest(Opcode.MAP, 0, UNSPECIFIED_V6, MapPayload(b"short", 17, 1)),
        PcpRequest(Opcode.MAP, -1, UNSPECIFIED_V6),
        PcpRequest(Opcode.MAP, 2**32, UNSPECIFIED_V6),
        PcpRequest(128, 0, UNSPECIFIED_V6),
        PcpRequest(Opcode.MAP, 0, UNSPECIFIED_V6, MapPayload(NONCE, 17, 65536)),
        PcpRequest(Opcode.MAP, 0, UNSPECIFIED_V6, options=(RawOption(200, bytes(1100)),)),
        PcpRequest(Opcode.MAP, 0, UNSPECIFIED_V6, options=(RawOption(256),)),
    ],
)
def test_push_rejects_bad_fields(request_: PcpRequest) -> None:
    with pytest.raises(PcpBuildError):
        push_request(request_)


def test_push_response_rejects_bad_reserved() -> None:
    with pytest.raises(PcpBuildError):
        push_response(PcpResponse(0, 0, 0, 0, reserved=b"x"))


def test_pull_response_rejects_requests_and_bad_sizes() -> None:
    for data in (
        MAP_REQUEST,
        MAP_SUCCESS[:20],
        MAP_SUCCESS + b"\x00",
        bytes([1]) + MAP_SUCCESS[1:],
    ):
        with pytest.raises(PcpParseError):
            pull_response(data)
    with pytest.raises(PcpParseError):
        pull_response(MAP_SUCCESS + bytes([200, 0, 0, 8]))  # option overruns
    raw = pull_response(MAP_SUCCESS + bytes([200, 0, 0, 2, 7, 7, 0, 0]))
    assert raw.options == (RawOption(200, b"\x07\x07"),)


# ---- Property tests ------------------------------------------------------------------------------

addresses = st.builds(IPv6Address, st.integers(min_value=0, max_value=2**128 - 1))
v4_addresses = st.builds(
    lambda n: from_ipv4(IPv4Address(n)), st.integers(min_value=0, max_value=2**32 - 1)
)
any_address = st.one_of(addresses, v4_addresses)
ports = st.integers(min_value=0, max_value=65535)
nonces = st.binary(min_size=12, max_size=12)
map_payloads = st.builds(
    MapPayload, nonces, st.integers(min_value=0, max_value=255), ports, ports, any_address
)
peer_payloads = st.builds(
    PeerPayload,
    nonces,
    st.integers(min_value=0, max_value=255),
    ports,
    ports,
    any_address,
    ports,
    any_address,
)
filters = st.one_of(
    st.builds(FilterOption, st.just(0), ports, any_address),
    st.builds(FilterOption, st.integers(min_value=96, max_value=128), ports, v4_addresses),
    st.builds(FilterOption, st.integers(min_value=1, max_value=128), ports, addresses).filter(
        lambda f: to_ipv4(f.remote_peer_address) is None
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> PcpRequest:
    opcode = draw(st.sampled_from(list(Opcode)))
    lifetime = draw(st.integers(min_value=0, max_value=2**32 - 1))
    client = draw(any_address)
    if opcode is Opcode.ANNOUNCE:
        return PcpRequest(opcode, lifetime, client)
    options: list[PcpOption] = []
    if draw(st.booleans()):
        options.append(ThirdPartyOption(draw(any_address)))
    if opcode is Opcode.MAP:
        payload: MapPayload | PeerPayload = draw(map_payloads)
        if draw(st.booleans()):
            options.append(PreferFailureOption())
        options.extend(draw(st.lists(filters, max_size=5)))
    else:
        payload = draw(peer_payloads)
    order = draw(st.permutations(options))
    return PcpRequest(opcode, lifetime, client, payload, tuple(order))


@given(requests())
def test_request_round_trip(request: PcpRequest) -> None:
    assert pull_request(push_request(request)) == request


@given(
    st.sampled_from(list(Opcode)),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.booleans(),
    st.lists(filters, max_size=3),
    st.binary(min_size=12, max_size=12),
)
def test_response_round_trip(
    opcode: Opcode,
    result: int,
    lifetime: int,
    epoch: int,
    with_payload: bool,
    filter_options: list[FilterOption],
    reserved: bytes,
) -> None:
    payload: MapPayload | PeerPayload | None = None
    if with_payload and opcode is Opcode.MAP:
        payload = MapPayload(NONCE, 6, 1, 2, from_ipv4(CLIENT))
    elif with_payload and opcode is Opcode.PEER:
        payload = PeerPayload(NONCE, 6, 1, 2, UNSPECIFIED_V4, 3, from_ipv4(CLIENT))
    options = tuple(filter_options) if payload is not None and opcode is Opcode.MAP else ()
    response = PcpResponse(opcode, result, lifetime, epoch, payload, options, reserved)
    assert pull_response(push_response(response)) == response


def _mutations() -> st.SearchStrategy[bytes]:
    seeds = [MAP_REQUEST, ANNOUNCE_REQUEST, MAP_REQUEST + FILTER_BYTES + THIRD_PARTY_BYTES]

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(min_value=1, max_value=6))):
            index = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[index] = draw(st.integers(min_value=0, max_value=255))
        tail = draw(st.binary(max_size=48))
        return bytes(data[: draw(st.integers(min_value=0, max_value=len(data)))]) + tail

    return mutate()


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(st.binary(max_size=1200), _mutations()))
def test_fuzz_pull_request_only_parses_or_raises_parse_error(data: bytes) -> None:
    """ST-17: any bytes give a PcpRequest or a PcpParseError, and its answer is well-formed."""
    error: PcpParseError | None = None
    try:
        request = pull_request(data)
    except PcpParseError as exc:
        error = exc
    if error is None:
        assert len(data) <= MAX_MESSAGE_BYTES
        assert pull_request(push_request(request)) == request
        return
    if error.result is None:
        return
    if error.request is not None:
        answer = push_response(error_response(error.request, error.result, epoch=1))
    else:
        answer = push_unparsed_error(data, error.result, epoch=1)
    assert len(answer) <= MAX_MESSAGE_BYTES
    assert pull_response(answer).result == error.result
