"""UPnPError tree and the NatError -> UPnP translation (2.2.4, WIP-27, WIP-75, ics-icf 2.8)."""

from __future__ import annotations

import pytest

import igd.natcore
from igd.natcore import (
    BackendError,
    ConflictError,
    ConflictWithOtherMechanismError,
    ConnectionNotFoundError,
    FirewallNotAllowedError,
    IndexOutOfRangeError,
    InvalidAddressError,
    InvalidDescriptionError,
    InvalidPortError,
    InvalidProtocolError,
    InvalidRequestError,
    InvalidTargetError,
    MappingNotFoundError,
    NatError,
    NotAuthorizedError,
    NotFoundError,
    NotShareableError,
    ObjectNoLongerValidError,
    QuotaExceededError,
    StoreError,
)
from igd.soap.envelope import build_fault
from igd.soap.errors import (
    ACTION_KINDS,
    ERRORS_BY_CODE,
    ActionFailed,
    ActionKind,
    ActionNotAuthorized,
    ArgumentValueOutOfRange,
    ConflictInMappingEntry,
    InactiveConnectionStateRequired,
    InconsistentParameters,
    InvalidAction,
    InvalidArgs,
    InvalidDeviceUUID,
    NoSuchEntryInArray,
    ReadOnly,
    UPnPError,
    WildCardNotPermittedInExtPort,
    WildCardNotPermittedInIntPort,
    WildCardNotPermittedInSrcIP,
    action_kind,
    upnp_error_for,
)

# ---- The tree ------------------------------------------------------------------------------------

EXPECTED_CODES = {
    401: ("InvalidAction", "Invalid Action", 1),
    402: ("InvalidArgs", "Invalid Args", 1),
    404: ("InvalidVar", "Invalid Var", 1),
    501: ("ActionFailed", "Action Failed", 1),
    600: ("ArgumentValueInvalid", "Argument Value Invalid", 2),
    601: ("ArgumentValueOutOfRange", "Argument Value Out of Range", 2),
    605: ("StringArgumentTooLong", "String Argument Too Long", 2),
    606: ("ActionNotAuthorized", "Action not authorized", 2),
    703: ("InactiveConnectionStateRequired", "InactiveConnectionStateRequired", 1),
    713: ("SpecifiedArrayIndexInvalid", "SpecifiedArrayIndexInvalid", 1),
    714: ("NoSuchEntryInArray", "NoSuchEntryInArray", 1),
    715: ("WildCardNotPermittedInSrcIP", "WildCardNotPermittedInSrcIP", 1),
    716: ("WildCardNotPermittedInExtPort", "WildCardNotPermittedInExtPort", 1),
    718: ("ConflictInMappingEntry", "ConflictInMappingEntry", 1),
    720: ("InvalidDeviceUUID", "InvalidDeviceUUID", 1),
    721: ("InvalidServiceID", "InvalidServiceID", 1),
    723: ("InvalidConnServiceSelection", "InvalidConnServiceSelection", 1),
    728: ("NoPortMapsAvailable", "NoPortMapsAvailable", 2),
    729: ("ConflictWithOtherMechanisms", "ConflictWithOtherMechanisms", 2),
    730: ("PortMappingNotFound", "PortMappingNotFound", 2),
    731: ("ReadOnly", "ReadOnly", 2),
    732: ("WildCardNotPermittedInIntPort", "WildCardNotPermittedInIntPort", 2),
    733: ("InconsistentParameters", "InconsistentParameters", 2),
}


def test_every_code_once_with_its_name_description_and_version() -> None:
    assert {
        code: (cls.__name__, cls.description, cls.min_version)
        for code, cls in ERRORS_BY_CODE.items()
    } == EXPECTED_CODES
    assert all(issubclass(cls, UPnPError) for cls in ERRORS_BY_CODE.values())
    assert set(ERRORS_BY_CODE.values()) == set(UPnPError.__subclasses__())


def test_root_is_action_failed_and_detail_stays_off_the_wire() -> None:
    assert (UPnPError.code, UPnPError.description) == (501, "Action Failed")
    error = ConflictInMappingEntry("port 18100/TCP held by 198.18.0.11")
    assert str(error) == "718 ConflictInMappingEntry: port 18100/TCP held by 198.18.0.11"
    assert str(InvalidArgs()) == "402 Invalid Args"
    assert b"198.18.0.11" not in build_fault(error)


@pytest.mark.parametrize("cls", list(ERRORS_BY_CODE.values()))
def test_every_error_builds_a_fault(cls: type[UPnPError]) -> None:
    body = build_fault(cls())
    assert f"<errorCode>{cls.code}</errorCode>".encode() in body
    assert f"<errorDescription>{cls.description}</errorDescription>".encode() in body


def test_action_kinds() -> None:
    assert dict(ACTION_KINDS) == {
        "AddPortMapping": ActionKind.ADD,
        "AddAnyPortMapping": ActionKind.ADD_ANY,
        "DeletePortMapping": ActionKind.DELETE,
        "DeletePortMappingRange": ActionKind.DELETE_RANGE,
        "GetSpecificPortMappingEntry": ActionKind.GET_SPECIFIC,
        "GetGenericPortMappingEntry": ActionKind.GET_GENERIC,
        "GetListOfPortMappings": ActionKind.GET_LIST,
    }
    assert action_kind("GetExternalIPAddress") is ActionKind.OTHER
    assert action_kind("addportmapping") is ActionKind.OTHER  # action names are case-sensitive


# ---- NatError -> UPnP: the whole matrix ---------------------------------------------------------

ACTIONS = (
    "AddPortMapping",
    "AddAnyPortMapping",
    "DeletePortMapping",
    "DeletePortMappingRange",
    "GetSpecificPortMappingEntry",
    "GetGenericPortMappingEntry",
    "GetListOfPortMappings",
    "GetExternalIPAddress",  # stands for every other action (OTHER: not restricted)
)


def _ALL(code: int) -> tuple[int, ...]:
    """The same code in every column (upper case: it reads as a table cell)."""
    return (code,) * len(ACTIONS)


# Columns in ACTIONS order:  Add  Any  Del  DRng GSpc GGen GLst Other
V2: dict[type[NatError], tuple[int, ...]] = {
    NatError:                        _ALL(501),
    InvalidRequestError:             _ALL(402),
    InvalidProtocolError:            _ALL(601),  # WIP-20
    InvalidPortError:                _ALL(402),
    InvalidAddressError:             _ALL(402),  # WIP-21
    InvalidTargetError:              _ALL(402),  # WIP-23
    InvalidDescriptionError:         _ALL(402),
    NotAuthorizedError:              _ALL(606),  # WIP-70
    ConflictError:                   (718, 728, 501, 501, 501, 501, 501, 718),  # WIP-11, WIP-27
    ConflictWithOtherMechanismError: (729, 729, 501, 501, 501, 501, 501, 729),  # WIP-24
    NotFoundError:                   _ALL(501),
    ConnectionNotFoundError:         _ALL(501),
    MappingNotFoundError:            (501, 501, 714, 730, 714, 713, 730, 714),  # WIP-28/31/32
    IndexOutOfRangeError:            (501, 501, 501, 501, 501, 713, 501, 713),  # WIP-29
    QuotaExceededError:              (728, 728, 501, 501, 501, 501, 501, 728),  # WIP-24
    NotShareableError:               _ALL(501),
    FirewallNotAllowedError:         _ALL(501),
    ObjectNoLongerValidError:        _ALL(501),
    BackendError:                    _ALL(501),
    StoreError:                      _ALL(501),
}  # fmt: skip
V1: dict[type[NatError], tuple[int, ...]] = {
    NatError:                        _ALL(501),
    InvalidRequestError:             _ALL(402),
    InvalidProtocolError:            _ALL(402),  # 2.2.4: 601 is "(402)" on v1
    InvalidPortError:                _ALL(402),
    InvalidAddressError:             _ALL(402),
    InvalidTargetError:              _ALL(402),
    InvalidDescriptionError:         _ALL(402),
    NotAuthorizedError:              (718, 501, 714, 714, 714, 713, 714, 501),  # WIP-75
    ConflictError:                   (718, 501, 501, 501, 501, 501, 501, 718),
    ConflictWithOtherMechanismError: (718, 501, 501, 501, 501, 501, 501, 501),
    NotFoundError:                   _ALL(501),
    ConnectionNotFoundError:         _ALL(501),
    MappingNotFoundError:            (501, 501, 714, 714, 714, 713, 714, 714),
    IndexOutOfRangeError:            (501, 501, 501, 501, 501, 713, 501, 713),
    QuotaExceededError:              (718, 501, 501, 501, 501, 501, 501, 501),
    NotShareableError:               _ALL(501),
    FirewallNotAllowedError:         _ALL(501),
    ObjectNoLongerValidError:        _ALL(501),
    BackendError:                    _ALL(501),
    StoreError:                      _ALL(501),
}  # fmt: skip

PUBLIC_NAT_ERRORS = {
    obj
    for name in igd.natcore.__all__
    if isinstance(obj := getattr(igd.natcore, name), type) and issubclass(obj, NatError)
}


def test_the_matrix_covers_every_public_nat_error() -> None:
    """A new NatError in the core must get a row here (and a decision in errors.py)."""
    assert set(V1) == set(V2) == PUBLIC_NAT_ERRORS


MATRIX = [
    (error, version, action, table[error][column])
    for version, table in ((1, V1), (2, V2))
    for error in table
    for column, action in enumerate(ACTIONS)
]


@pytest.mark.parametrize(
    ("error", "version", "action", "code"),
    MATRIX,
    ids=[f"{e.__name__}-v{v}-{a}" for e, v, a, _ in MATRIX],
)
def test_translation_matrix(error: type[NatError], version: int, action: str, code: int) -> None:
    result = upnp_error_for(error("why"), version=version, action=action)
    assert type(result) is ERRORS_BY_CODE[code]
    assert result.code == code
    assert error.__name__ in result.detail
    assert "why" in result.detail


# ---- UPnPError raised by handlers, and invariants over every input ------------------------------


@pytest.mark.parametrize(
    ("error", "version", "action", "code"),
    [
        (WildCardNotPermittedInIntPort, 2, "AddPortMapping", 732),
        (WildCardNotPermittedInIntPort, 1, "AddPortMapping", 402),  # WIP-17
        (WildCardNotPermittedInExtPort, 1, "AddPortMapping", 716),  # WIP-19
        (WildCardNotPermittedInSrcIP, 1, "AddPortMapping", 715),  # WIP-18
        (ReadOnly, 2, "SetConnectionType", 731),  # WIP-07
        (ReadOnly, 1, "SetConnectionType", 501),
        (ArgumentValueOutOfRange, 2, "SetConnectionType", 601),
        (ArgumentValueOutOfRange, 1, "SetConnectionType", 402),
        (InactiveConnectionStateRequired, 1, "SetConnectionType", 703),
        (ActionNotAuthorized, 2, "ForceTermination", 606),  # WIP-08
        (ActionNotAuthorized, 1, "ForceTermination", 501),
        (ActionNotAuthorized, 1, "RequestTermination", 501),
        (ActionNotAuthorized, 1, "AddPortMapping", 718),  # WIP-22, WIP-75
        (ActionNotAuthorized, 1, "GetGenericPortMappingEntry", 713),
        (InconsistentParameters, 2, "DeletePortMappingRange", 733),  # WIP-31
        (InconsistentParameters, 2, "GetListOfPortMappings", 733),  # WIP-32
        (InconsistentParameters, 2, "AddPortMapping", 501),  # not in AddPortMapping's table
        (InvalidDeviceUUID, 1, "SetDefaultConnectionService", 720),
        (InvalidAction, 1, "FooBar", 401),
        (InvalidAction, 2, "AddPortMapping", 401),
        (UPnPError, 2, "GetExternalIPAddress", 501),
    ],
)
def test_handler_errors(error: type[UPnPError], version: int, action: str, code: int) -> None:
    assert upnp_error_for(error(), version=version, action=action).code == code


def test_an_error_kept_as_is_is_the_same_object() -> None:
    error = ConflictInMappingEntry("detail")
    assert upnp_error_for(error, version=2, action="AddPortMapping") is error
    assert upnp_error_for(error, version=1, action="AddPortMapping") is error


def test_core_subclasses_follow_their_parent() -> None:
    """Translation walks the MRO, so a future ConflictError subclass is still 718 (728 on Any)."""

    class HeldByAdminError(ConflictError):
        pass

    assert upnp_error_for(HeldByAdminError(), version=2, action="AddPortMapping").code == 718
    assert upnp_error_for(HeldByAdminError(), version=2, action="AddAnyPortMapping").code == 728


@pytest.mark.parametrize(("version", "rules"), [(0, 1), (1, 1), (2, 2), (3, 2)])
def test_versions_beyond_known_use_the_nearest_rules(version: int, rules: int) -> None:
    """0 (the control-1-0 namespace of QueryStateVariable) as IGD:1; 3+ as IGD:2."""
    got = upnp_error_for(QuotaExceededError(), version=version, action="AddPortMapping").code
    assert got == (718 if rules == 1 else 728)


ALL_INPUTS: list[NatError | UPnPError] = [cls() for cls in sorted(PUBLIC_NAT_ERRORS, key=str)]
ALL_INPUTS += [cls() for cls in ERRORS_BY_CODE.values()] + [UPnPError()]
ALL_ACTIONS = [*ACTIONS, "SetConnectionType", "ForceTermination", "QueryStateVariable", "X"]

V1_ACTION_CODES = {
    "AddPortMapping": {715, 716, 718},
    "AddAnyPortMapping": {715, 716},
    "DeletePortMapping": {714},
    "DeletePortMappingRange": {714},
    "GetSpecificPortMappingEntry": {714},
    "GetGenericPortMappingEntry": {713},
    "GetListOfPortMappings": {714},
}
V2_ACTION_CODES = {  # WANIP2 Tables 2-36..2-50
    "AddPortMapping": {606, 715, 716, 718, 728, 729, 732},
    "AddAnyPortMapping": {606, 715, 716, 728, 729, 732},
    "DeletePortMapping": {606, 714},
    "DeletePortMappingRange": {606, 730, 733},
    "GetSpecificPortMappingEntry": {606, 714},
    "GetGenericPortMappingEntry": {606, 713},
    "GetListOfPortMappings": {606, 730, 733},
}


@pytest.mark.parametrize("action", ALL_ACTIONS)
def test_invariants_over_every_input(action: str) -> None:
    for error in ALL_INPUTS:
        v1 = upnp_error_for(error, version=1, action=action)
        v2 = upnp_error_for(error, version=2, action=action)
        # IGD:1 control points only ever see codes they know (ics-icf 2.8).
        assert v1.min_version == 1, (error, action, v1)
        assert v1.code not in {600, 601, 605, 606}
        assert not 728 <= v1.code <= 733
        # Each action stays inside its error table, plus the Device Architecture codes.
        if action in V1_ACTION_CODES:
            assert v1.code in V1_ACTION_CODES[action] | {401, 402, 404, 501}, (error, v1)
            assert v2.code in V2_ACTION_CODES[action] | {401, 402, 404, 501, 600, 601, 605}
        # WIP-27: AddAnyPortMapping never answers 718.
        if action == "AddAnyPortMapping":
            assert 718 not in (v1.code, v2.code)
        # Never the bare root, never a code without a class.
        assert type(v1) is not UPnPError
        assert type(v2) is not UPnPError
        assert ERRORS_BY_CODE[v1.code] is type(v1)
        assert ERRORS_BY_CODE[v2.code] is type(v2)


def test_conflict_and_not_found_on_v2_are_specific() -> None:
    """The spec's headline rows, spelled out (2.2.4)."""
    cases = [
        (NotAuthorizedError(), "AddPortMapping", ActionNotAuthorized),
        (ConflictError(), "AddPortMapping", ConflictInMappingEntry),
        (MappingNotFoundError(), "DeletePortMapping", NoSuchEntryInArray),
        (BackendError(), "AddPortMapping", ActionFailed),
        (InvalidProtocolError(), "AddPortMapping", ArgumentValueOutOfRange),
    ]
    for exc, action, expected in cases:
        assert type(upnp_error_for(exc, version=2, action=action)) is expected
