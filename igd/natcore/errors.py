"""The core's exceptions: one rooted tree replacing the ICS/ICF HRESULTs (ics-icf-model.md 6.6).

    NatError                                  E_FAIL
    ├── InvalidRequestError (ValueError)      E_INVALIDARG   bad input from a caller
    │   ├── InvalidProtocolError
    │   ├── InvalidPortError
    │   ├── InvalidAddressError
    │   ├── InvalidTargetError                name that does not resolve, target out of scope
    │   └── InvalidDescriptionError
    ├── NotAuthorizedError (PermissionError)  E_ACCESSDENIED policy refuses the requester
    ├── ConflictError                         ERROR_ALREADY_EXISTS  key held by another client
    │   └── ConflictWithOtherMechanismError   held by another mechanism or a reserved port
    ├── NotFoundError (LookupError)           ERROR_FILE_NOT_FOUND
    │   ├── ConnectionNotFoundError
    │   ├── MappingNotFoundError
    │   └── IndexOutOfRangeError (IndexError)
    ├── QuotaExceededError                    E_OUTOFMEMORY  per-client quota or table full
    ├── NotShareableError                     E_NOINTERFACE  rule R6
    ├── FirewallNotAllowedError               E_INVALIDARG   rule R7
    ├── ObjectNoLongerValidError              S_OBJECT_NO_LONGER_VALID  stale handle
    └── BackendError                          E_FAIL         the data plane refused; rolled back

`hresult` is the closest COM code (for logs and a COM-shaped shim). Each front-end owns one table
that turns these classes into its wire codes (UPnP error, NAT-PMP result, PCP result).
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConflictError",
    "ConflictWithOtherMechanismError",
    "ConnectionNotFoundError",
    "FirewallNotAllowedError",
    "IndexOutOfRangeError",
    "InvalidAddressError",
    "InvalidDescriptionError",
    "InvalidPortError",
    "InvalidProtocolError",
    "InvalidRequestError",
    "InvalidTargetError",
    "MappingNotFoundError",
    "NatError",
    "NotAuthorizedError",
    "NotFoundError",
    "NotShareableError",
    "ObjectNoLongerValidError",
    "QuotaExceededError",
]


class NatError(Exception):
    """Root of every error the core raises on purpose."""

    hresult: int = 0x80004005  # E_FAIL


class InvalidRequestError(NatError, ValueError):
    hresult = 0x80070057  # E_INVALIDARG


class InvalidProtocolError(InvalidRequestError):
    pass


class InvalidPortError(InvalidRequestError):
    pass


class InvalidAddressError(InvalidRequestError):
    pass


class InvalidTargetError(InvalidRequestError):
    pass


class InvalidDescriptionError(InvalidRequestError):
    pass


class NotAuthorizedError(NatError, PermissionError):
    hresult = 0x80070005  # E_ACCESSDENIED


class ConflictError(NatError):
    hresult = 0x800700B7  # HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS)


class ConflictWithOtherMechanismError(ConflictError):
    pass


class NotFoundError(NatError, LookupError):
    hresult = 0x80070002  # HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND), T16


class ConnectionNotFoundError(NotFoundError):
    pass


class MappingNotFoundError(NotFoundError):
    pass


class IndexOutOfRangeError(NotFoundError, IndexError):
    pass


class QuotaExceededError(NatError):
    hresult = 0x8007000E  # E_OUTOFMEMORY


class NotShareableError(NatError):
    hresult = 0x80004002  # E_NOINTERFACE, as observed in the field


class FirewallNotAllowedError(NatError):
    hresult = 0x80070057  # E_INVALIDARG


class ObjectNoLongerValidError(NatError):
    hresult = 0x00000002  # S_OBJECT_NO_LONGER_VALID


class BackendError(NatError):
    hresult = 0x80004005  # E_FAIL
