"""UPnP control errors: wire codes on the classes; the one NatError -> UPnP table (2.2.4, CTRL-07).

    UPnPError                            code  v  defined by
    ├── InvalidAction                    401   1  DA1.1 Table 3-3 (no such action in this service)
    ├── InvalidArgs                      402   1  DA1.1 (missing/extra args, bad syntax)
    ├── InvalidVar                       404   1  DA1.0 QueryStateVariable (CTRL-13)
    ├── ActionFailed                     501   1  DA1.1 (backend failure, internal error)
    ├── ArgumentValueInvalid             600   2  DA1.1
    ├── ArgumentValueOutOfRange          601   2  DA1.1 (allowedValueRange/allowedValueList)
    ├── StringArgumentTooLong            605   2  DA1.1
    ├── ActionNotAuthorized              606   2  DA1.1 / WANIP2 (policy refuses)
    ├── InactiveConnectionStateRequired  703   1  WANIPConnection SetConnectionType
    ├── SpecifiedArrayIndexInvalid       713   1  WANIPConnection GetGenericPortMappingEntry
    ├── NoSuchEntryInArray               714   1  WANIPConnection Get/DeleteSpecific
    ├── WildCardNotPermittedInSrcIP      715   1  WANIPConnection Add*
    ├── WildCardNotPermittedInExtPort    716   1  WANIPConnection Add*
    ├── ConflictInMappingEntry           718   1  WANIPConnection AddPortMapping
    ├── InvalidDeviceUUID                720   1  Layer3Forwarding SetDefaultConnectionService
    ├── InvalidServiceID                 721   1  Layer3Forwarding SetDefaultConnectionService
    ├── InvalidConnServiceSelection      723   1  Layer3Forwarding SetDefaultConnectionService
    ├── NoPortMapsAvailable              728   2  WANIP2 Add*
    ├── ConflictWithOtherMechanisms      729   2  WANIP2 Add*
    ├── PortMappingNotFound              730   2  WANIP2 Delete...Range, GetListOf...
    ├── ReadOnly                         731   2  WANIP2 SetConnectionType
    ├── WildCardNotPermittedInIntPort    732   2  WANIP2 Add*
    └── InconsistentParameters           733   2  WANIP2 start port > end port

`v` (`min_version`) is the first service version whose control points know the code. Only `code`
and `description` reach the wire (CTRL-06); the message given to the constructor is for logs and
never leaves the process, so attacker text cannot reach a fault.

`upnp_error_for(exc, version=, action=)` is the front-end's single translation step (architecture
rule 5.3). It runs three tables in order:

1. NatError -> IGD:2 error, most specific class first, with per-action overrides (2.2.4, WIP-27,
   WIP-31/32): NotAuthorized 606, Conflict 718 (728 on AddAnyPortMapping, which never returns 718),
   ConflictWithOtherMechanism 729, QuotaExceeded 728, MappingNotFound 714 (730 on
   DeletePortMappingRange/GetListOfPortMappings, 713 on GetGenericPortMappingEntry),
   IndexOutOfRange 713, InvalidProtocol 601, other InvalidRequest 402, anything else 501.
   A UPnPError raised by an action handler enters here unchanged.
2. IGD:1 downgrade (version < 2), because IGD:1 control points only know `min_version == 1` codes
   (2.2.4 v1 column, ics-icf 2.8, WIP-75, WIP-07/08/17): 600/601/605/732/733 -> 402; 606 -> 718 on
   AddPortMapping, 714 on Delete*/GetSpecific*/GetListOfPortMappings, 713 on
   GetGenericPortMappingEntry, 501 elsewhere (SetConnectionType, ForceTermination, ...); 728 and
   729 -> 718 on AddPortMapping, the only IGD:1 code telling an Add "not as asked" (clients such as
   libtorrent then retry another port: right for 729, harmless for 728), 501 elsewhere; 730 -> 714;
   731 -> 501.
3. Safety net: a code outside the action's error table for that version (WANIP2 Tables 2-36..2-50,
   plus the Device Architecture codes every action may return) becomes 501 ActionFailed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

from igd.natcore import (
    BackendError,
    ConflictError,
    ConflictWithOtherMechanismError,
    IndexOutOfRangeError,
    InvalidProtocolError,
    InvalidRequestError,
    MappingNotFoundError,
    NatError,
    NotAuthorizedError,
    QuotaExceededError,
)

__all__ = [
    "ACTION_KINDS",
    "ERRORS_BY_CODE",
    "ActionFailed",
    "ActionKind",
    "ActionNotAuthorized",
    "ArgumentValueInvalid",
    "ArgumentValueOutOfRange",
    "ConflictInMappingEntry",
    "ConflictWithOtherMechanisms",
    "InactiveConnectionStateRequired",
    "InconsistentParameters",
    "InvalidAction",
    "InvalidArgs",
    "InvalidConnServiceSelection",
    "InvalidDeviceUUID",
    "InvalidServiceID",
    "InvalidVar",
    "NoPortMapsAvailable",
    "NoSuchEntryInArray",
    "PortMappingNotFound",
    "ReadOnly",
    "SpecifiedArrayIndexInvalid",
    "StringArgumentTooLong",
    "UPnPError",
    "WildCardNotPermittedInExtPort",
    "WildCardNotPermittedInIntPort",
    "WildCardNotPermittedInSrcIP",
    "action_kind",
    "upnp_error_for",
]


class UPnPError(Exception):
    """Root of the errors answered as a SOAP fault (CTRL-06); bare, it means 501 Action Failed."""

    code: ClassVar[int] = 501
    description: ClassVar[str] = "Action Failed"
    min_version: ClassVar[int] = 1

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        head = f"{self.code} {self.description}"
        return f"{head}: {self.detail}" if self.detail else head


class InvalidAction(UPnPError):
    """401: no action by that name in the addressed service (CTRL-07, CTRL-08)."""

    code = 401
    description = "Invalid Action"


class InvalidArgs(UPnPError):
    """402: missing, extra, duplicated or ill-typed arguments (CTRL-07, CTRL-11, WIP-21)."""

    code = 402
    description = "Invalid Args"


class InvalidVar(UPnPError):
    """404: QueryStateVariable for an unknown variable (CTRL-13)."""

    code = 404
    description = "Invalid Var"


class ActionFailed(UPnPError):
    """501: the current state or the data plane prevents the action (CTRL-07)."""

    code = 501
    description = "Action Failed"


class ArgumentValueInvalid(UPnPError):
    """600: the argument value is invalid (DA1.1 Table 3-3)."""

    code = 600
    description = "Argument Value Invalid"
    min_version = 2


class ArgumentValueOutOfRange(UPnPError):
    """601: outside allowedValueRange or not in allowedValueList (CTRL-11, WIP-07, WIP-20)."""

    code = 601
    description = "Argument Value Out of Range"
    min_version = 2


class StringArgumentTooLong(UPnPError):
    """605: a string argument is longer than the device accepts (DA1.1 Table 3-3)."""

    code = 605
    description = "String Argument Too Long"
    min_version = 2


class ActionNotAuthorized(UPnPError):
    """606: the security policy refuses the caller (WIP-70..74)."""

    code = 606
    description = "Action not authorized"
    min_version = 2


class InactiveConnectionStateRequired(UPnPError):
    """703: SetConnectionType while the connection is not Disconnected/Unconfigured (WIP-07)."""

    code = 703
    description = "InactiveConnectionStateRequired"


class SpecifiedArrayIndexInvalid(UPnPError):
    """713: GetGenericPortMappingEntry index >= PortMappingNumberOfEntries (WIP-29)."""

    code = 713
    description = "SpecifiedArrayIndexInvalid"


class NoSuchEntryInArray(UPnPError):
    """714: no mapping with that (RemoteHost, ExternalPort, Protocol) (WIP-10, WIP-28)."""

    code = 714
    description = "NoSuchEntryInArray"


class WildCardNotPermittedInSrcIP(UPnPError):
    """715: empty NewInternalClient (WIP-18)."""

    code = 715
    description = "WildCardNotPermittedInSrcIP"


class WildCardNotPermittedInExtPort(UPnPError):
    """716: NewExternalPort 0 on AddPortMapping (WIP-19)."""

    code = 716
    description = "WildCardNotPermittedInExtPort"


class ConflictInMappingEntry(UPnPError):
    """718: (ExternalPort, Protocol[, RemoteHost]) is mapped to another client (WIP-11, WIP-24)."""

    code = 718
    description = "ConflictInMappingEntry"


class InvalidDeviceUUID(UPnPError):
    """720: SetDefaultConnectionService names an unknown device (Layer3Forwarding:1)."""

    code = 720
    description = "InvalidDeviceUUID"


class InvalidServiceID(UPnPError):
    """721: SetDefaultConnectionService names an unknown service (Layer3Forwarding:1)."""

    code = 721
    description = "InvalidServiceID"


class InvalidConnServiceSelection(UPnPError):
    """723: SetDefaultConnectionService names a non-connection service (Layer3Forwarding:1)."""

    code = 723
    description = "InvalidConnServiceSelection"


class NoPortMapsAvailable(UPnPError):
    """728: no free port or the mapping table/quota is full (WIP-24)."""

    code = 728
    description = "NoPortMapsAvailable"
    min_version = 2


class ConflictWithOtherMechanisms(UPnPError):
    """729: the port is held by another mechanism (static, NAT-PMP, PCP, local service) (WIP-24)."""

    code = 729
    description = "ConflictWithOtherMechanisms"
    min_version = 2


class PortMappingNotFound(UPnPError):
    """730: nothing (visible) in the range (WIP-31, WIP-32)."""

    code = 730
    description = "PortMappingNotFound"
    min_version = 2


class ReadOnly(UPnPError):
    """731: SetConnectionType on a read-only ConnectionType (WIP-07)."""

    code = 731
    description = "ReadOnly"
    min_version = 2


class WildCardNotPermittedInIntPort(UPnPError):
    """732: NewInternalPort 0 (WIP-17)."""

    code = 732
    description = "WildCardNotPermittedInIntPort"
    min_version = 2


class InconsistentParameters(UPnPError):
    """733: NewStartPort > NewEndPort (WIP-31, WIP-32)."""

    code = 733
    description = "InconsistentParameters"
    min_version = 2


def _by_code() -> Mapping[int, type[UPnPError]]:
    table = {cls.code: cls for cls in UPnPError.__subclasses__()}
    return MappingProxyType(dict(sorted(table.items())))


ERRORS_BY_CODE: Final[Mapping[int, type[UPnPError]]] = _by_code()
"""Every concrete UPnPError class by its wire code (e.g. to answer a SoapParseError's upnp_code)."""


class ActionKind(enum.Enum):
    """How an action's errors are translated; every action not listed in ACTION_KINDS is OTHER."""

    ADD = "AddPortMapping"
    ADD_ANY = "AddAnyPortMapping"
    DELETE = "DeletePortMapping"
    DELETE_RANGE = "DeletePortMappingRange"
    GET_SPECIFIC = "GetSpecificPortMappingEntry"
    GET_GENERIC = "GetGenericPortMappingEntry"
    GET_LIST = "GetListOfPortMappings"
    OTHER = ""


ACTION_KINDS: Final[Mapping[str, ActionKind]] = MappingProxyType(
    {kind.value: kind for kind in ActionKind if kind is not ActionKind.OTHER}
)


def action_kind(action: str) -> ActionKind:
    """The translation kind of a WANIPConnection action name; OTHER for every other action."""
    return ACTION_KINDS.get(action, ActionKind.OTHER)


_K = ActionKind

# Step 1: NatError -> IGD:2 error. Looked up along the exception's MRO, most specific class first;
# at each class the (kind, class) override wins over the class default (2.2.4, ics-icf 2.8).
_CORE_DEFAULT: Final[Mapping[type[NatError], type[UPnPError]]] = MappingProxyType(
    {
        NatError: ActionFailed,
        BackendError: ActionFailed,
        InvalidRequestError: InvalidArgs,
        InvalidProtocolError: ArgumentValueOutOfRange,  # WIP-20
        NotAuthorizedError: ActionNotAuthorized,  # WIP-70
        ConflictError: ConflictInMappingEntry,  # WIP-11
        ConflictWithOtherMechanismError: ConflictWithOtherMechanisms,  # WIP-24
        QuotaExceededError: NoPortMapsAvailable,  # WIP-24
        MappingNotFoundError: NoSuchEntryInArray,  # WIP-28
        IndexOutOfRangeError: SpecifiedArrayIndexInvalid,  # WIP-29
    }
)
_CORE_BY_KIND: Final[Mapping[tuple[ActionKind, type[NatError]], type[UPnPError]]] = (
    MappingProxyType(
        {
            (_K.ADD_ANY, ConflictError): NoPortMapsAvailable,  # WIP-27: never 718
            (_K.GET_GENERIC, MappingNotFoundError): SpecifiedArrayIndexInvalid,  # WIP-29
            (_K.DELETE_RANGE, MappingNotFoundError): PortMappingNotFound,  # WIP-31
            (_K.GET_LIST, MappingNotFoundError): PortMappingNotFound,  # WIP-32
        }
    )
)

# Step 2: IGD:2-only codes -> what an IGD:1 control point understands (2.2.4 v1 column, WIP-75).
_V1_DEFAULT: Final[Mapping[type[UPnPError], type[UPnPError]]] = MappingProxyType(
    {
        ArgumentValueInvalid: InvalidArgs,
        ArgumentValueOutOfRange: InvalidArgs,  # WIP-20 v1
        StringArgumentTooLong: InvalidArgs,
        ActionNotAuthorized: ActionFailed,  # WIP-07/08 v1
        NoPortMapsAvailable: ActionFailed,
        ConflictWithOtherMechanisms: ActionFailed,
        PortMappingNotFound: NoSuchEntryInArray,
        ReadOnly: ActionFailed,  # WIP-07 v1
        WildCardNotPermittedInIntPort: InvalidArgs,  # WIP-17 v1
        InconsistentParameters: InvalidArgs,
    }
)
_V1_BY_KIND: Final[Mapping[tuple[ActionKind, type[UPnPError]], type[UPnPError]]] = MappingProxyType(
    {
        (_K.ADD, ActionNotAuthorized): ConflictInMappingEntry,  # WIP-75, WIP-22
        (_K.ADD, NoPortMapsAvailable): ConflictInMappingEntry,
        (_K.ADD, ConflictWithOtherMechanisms): ConflictInMappingEntry,
        (_K.DELETE, ActionNotAuthorized): NoSuchEntryInArray,  # WIP-75
        (_K.DELETE_RANGE, ActionNotAuthorized): NoSuchEntryInArray,
        (_K.GET_SPECIFIC, ActionNotAuthorized): NoSuchEntryInArray,  # WIP-75
        (_K.GET_GENERIC, ActionNotAuthorized): SpecifiedArrayIndexInvalid,  # WIP-75
        (_K.GET_LIST, ActionNotAuthorized): NoSuchEntryInArray,
    }
)

# Step 3: the codes each action may return (WANIP2 Tables 2-36..2-50; WANIP1 for version 1), on
# top of the Device Architecture codes every action may return. OTHER actions are not restricted.
_DA_CODES: Final[Mapping[int, frozenset[int]]] = MappingProxyType(
    {1: frozenset({401, 402, 404, 501}), 2: frozenset({401, 402, 404, 501, 600, 601, 605})}
)
_ACTION_CODES: Final[Mapping[tuple[int, ActionKind], frozenset[int]]] = MappingProxyType(
    {
        (1, _K.ADD): frozenset({715, 716, 718}),
        (1, _K.ADD_ANY): frozenset({715, 716}),
        (1, _K.DELETE): frozenset({714}),
        (1, _K.DELETE_RANGE): frozenset({714}),
        (1, _K.GET_SPECIFIC): frozenset({714}),
        (1, _K.GET_GENERIC): frozenset({713}),
        (1, _K.GET_LIST): frozenset({714}),
        (2, _K.ADD): frozenset({606, 715, 716, 718, 728, 729, 732}),
        (2, _K.ADD_ANY): frozenset({606, 715, 716, 728, 729, 732}),  # WIP-27
        (2, _K.DELETE): frozenset({606, 714}),
        (2, _K.DELETE_RANGE): frozenset({606, 730, 733}),
        (2, _K.GET_SPECIFIC): frozenset({606, 714}),
        (2, _K.GET_GENERIC): frozenset({606, 713}),
        (2, _K.GET_LIST): frozenset({606, 730, 733}),
    }
)


def _from_core(exc: NatError, kind: ActionKind) -> type[UPnPError]:
    for cls in type(exc).__mro__:
        if not (isinstance(cls, type) and issubclass(cls, NatError)):
            continue
        found = _CORE_BY_KIND.get((kind, cls)) or _CORE_DEFAULT.get(cls)
        if found is not None:
            return found
    return ActionFailed  # unreachable: NatError itself is in _CORE_DEFAULT


def upnp_error_for(exc: NatError | UPnPError, *, version: int, action: str) -> UPnPError:
    """The fault to send for `exc` raised by `action` on a service of `version` (2.2.4, WIP-75)."""
    kind = action_kind(action)
    wire = 2 if version >= 2 else 1
    cls = type(exc) if isinstance(exc, UPnPError) else _from_core(exc, kind)
    if wire == 1 and cls.min_version > 1:
        cls = _V1_BY_KIND.get((kind, cls)) or _V1_DEFAULT.get(cls, ActionFailed)
    allowed = _ACTION_CODES.get((wire, kind))
    if cls is UPnPError or (allowed is not None and cls.code not in allowed | _DA_CODES[wire]):
        cls = ActionFailed
    if isinstance(exc, UPnPError) and cls is type(exc):
        return exc
    return cls(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
