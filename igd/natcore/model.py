"""The ICS/ICF data model: enumerations with their exact COM values, and frozen snapshots.

Enumerations follow ics-icf-model.md section 6.3 (values from netcon.h / natupnp.h).
Snapshots (`ConnectionProps`, `Mapping`) are immutable; handles live in `sharing.py`.
Pure module: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from igd.natcore.errors import InvalidProtocolError

__all__ = [
    "ADMIN",
    "Client",
    "ConnectionCharacteristics",
    "ConnectionProps",
    "ConnectionStatus",
    "FirewallSettings",
    "IPProtocol",
    "Mapping",
    "MappingKey",
    "MappingRequest",
    "MediaType",
    "Origin",
    "PrivatePolicy",
    "SharingConnectionEnumFlags",
    "SharingConnectionType",
    "TargetType",
]


class SharingConnectionType(enum.IntEnum):
    """SHARINGCONNECTIONTYPE."""

    PUBLIC = 0  # ICSSHARINGTYPE_PUBLIC
    PRIVATE = 1  # ICSSHARINGTYPE_PRIVATE


class SharingConnectionEnumFlags(enum.IntEnum):
    """SHARINGCONNECTION_ENUM_FLAGS; only DEFAULT is documented (R13)."""

    DEFAULT = 0
    ENABLED = 1


class TargetType(enum.IntEnum):
    """ICS_TARGETTYPE."""

    NAME = 0
    IP_ADDRESS = 1


class IPProtocol(enum.IntEnum):
    """NAT_PROTOCOL_*: IANA protocol numbers."""

    TCP = 6
    UDP = 17

    @classmethod
    def parse(cls, value: IPProtocol | str | int) -> IPProtocol:
        """Strict conversion: only the members, 6/17, or exactly "TCP"/"UDP" (T13/T15)."""
        if isinstance(value, IPProtocol):
            return value
        if isinstance(value, str):
            if value in ("TCP", "UDP"):
                return cls[value]
            raise InvalidProtocolError(f"protocol must be 'TCP' or 'UDP', not {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and value in (6, 17):
            return cls(value)
        raise InvalidProtocolError(f"protocol must be TCP (6) or UDP (17), not {value!r}")


class ConnectionStatus(enum.IntEnum):
    """NETCON_STATUS."""

    DISCONNECTED = 0
    CONNECTING = 1
    CONNECTED = 2
    DISCONNECTING = 3
    HARDWARE_NOT_PRESENT = 4
    HARDWARE_DISABLED = 5
    HARDWARE_MALFUNCTION = 6
    MEDIA_DISCONNECTED = 7
    AUTHENTICATING = 8
    AUTHENTICATION_SUCCEEDED = 9
    AUTHENTICATION_FAILED = 10
    INVALID_ADDRESS = 11
    CREDENTIALS_REQUIRED = 12
    ACTION_REQUIRED = 13
    ACTION_REQUIRED_RETRY = 14
    CONNECT_FAILED = 15


class MediaType(enum.IntEnum):
    """NETCON_MEDIATYPE."""

    NONE = 0
    DIRECT = 1
    ISDN = 2
    LAN = 3
    PHONE = 4
    TUNNEL = 5
    PPPOE = 6
    BRIDGE = 7
    SHAREDACCESSHOST_LAN = 8
    SHAREDACCESSHOST_RAS = 9


SHAREABLE_MEDIA = frozenset(
    {
        MediaType.PHONE,
        MediaType.DIRECT,
        MediaType.ISDN,
        MediaType.LAN,
        MediaType.TUNNEL,
        MediaType.PPPOE,
    }
)


class ConnectionCharacteristics(enum.IntFlag):
    """NETCON_CHARACTERISTIC_FLAGS (the masks overlap, as in netcon.h)."""

    NONE = 0x0
    ALL_USERS = 0x1
    ALLOW_DUPLICATION = 0x2
    ALLOW_REMOVAL = 0x4
    ALLOW_RENAME = 0x8
    INCOMING_ONLY = 0x20
    OUTGOING_ONLY = 0x40
    BRANDED = 0x80
    SHARED = 0x100
    BRIDGED = 0x200
    FIREWALLED = 0x400
    DEFAULT = 0x800
    HOMENET_CAPABLE = 0x1000
    SHARED_PRIVATE = 0x2000
    QUARANTINED = 0x4000
    RESERVED = 0x8000
    HOSTED_NETWORK = 0x10000
    VIRTUAL_STATION = 0x20000
    WIFI_DIRECT = 0x40000
    BLUETOOTH_MASK = 0xF0000
    LAN_MASK = 0xF00000


# The flags the core computes from sharing and firewall state; the source supplies the rest.
ROLE_FLAGS = (
    ConnectionCharacteristics.SHARED
    | ConnectionCharacteristics.SHARED_PRIVATE
    | ConnectionCharacteristics.FIREWALLED
)


class PrivatePolicy(enum.Enum):
    """What `enable_sharing(PRIVATE)` does when another connection is already private (R3/S2).

    MULTIPLE (default): several private connections coexist as separate segments (a Linux gateway
    routes between them without bridging). REPLACE: the Vista+ ICS behaviour, the older private
    connection is silently un-shared, as R2 does for the public role.
    """

    MULTIPLE = "multiple"
    REPLACE = "replace"


class Origin(enum.Enum):
    """Which mechanism created a mapping."""

    ADMIN = "admin"
    UPNP = "upnp"
    NATPMP = "natpmp"
    PCP = "pcp"


@dataclass(frozen=True, slots=True)
class Client:
    """Who asks for a change: a mechanism and, for protocol clients, the requester's address."""

    origin: Origin
    address: IPv4Address | None = None

    @property
    def is_admin(self) -> bool:
        return self.origin is Origin.ADMIN


ADMIN = Client(Origin.ADMIN)


@dataclass(frozen=True, slots=True)
class ConnectionProps:
    """INetConnectionProps / NETCON_PROPERTIES, plus the Linux link it stands for."""

    guid: uuid.UUID
    name: str
    device_name: str
    status: ConnectionStatus
    media_type: MediaType
    characteristics: ConnectionCharacteristics
    ifname: str
    ifindex: int | None = None
    addresses: tuple[IPv4Interface, ...] = ()
    is_loopback: bool = False

    @property
    def guid_string(self) -> str:
        """The COM form: "{XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX}", upper case."""
        return "{" + str(self.guid).upper() + "}"

    @property
    def shareable(self) -> bool:
        """Rule R6: a candidate for the public role."""
        return (
            self.media_type in SHAREABLE_MEDIA
            and not self.characteristics & ConnectionCharacteristics.INCOMING_ONLY
        )

    @property
    def bridged(self) -> bool:
        return self.media_type is MediaType.BRIDGE or bool(
            self.characteristics & ConnectionCharacteristics.BRIDGED
        )


@dataclass(frozen=True, slots=True, order=True)
class MappingKey:
    """Identity of a mapping: protocol + external port + remote host (WIP-10).

    `remote_host` None is the wildcard ("" or "0.0.0.0" on the UPnP wire).
    """

    protocol: IPProtocol
    external_port: int
    remote_host: IPv4Address | None = None


@dataclass(frozen=True, slots=True)
class Mapping:
    """One port mapping: INetSharingPortMappingProps, IStaticPortMapping and a UPnP entry in one.

    `expires_at` is a wall-clock deadline in seconds since the epoch; None is a permanent lease.
    `target_name` is set for ICS name targets (TargetType.NAME); `internal_client` is then the
    address the name resolved to.
    """

    protocol: IPProtocol
    external_port: int
    internal_client: IPv4Address
    internal_port: int
    connection: uuid.UUID
    description: str = ""
    enabled: bool = True
    remote_host: IPv4Address | None = None
    expires_at: float | None = None
    origin: Origin = Origin.ADMIN
    owner: IPv4Address | None = None
    target_name: str | None = None
    created_at: float = 0.0

    @property
    def key(self) -> MappingKey:
        return MappingKey(self.protocol, self.external_port, self.remote_host)

    @property
    def target_type(self) -> TargetType:
        return TargetType.IP_ADDRESS if self.target_name is None else TargetType.NAME

    @property
    def permanent(self) -> bool:
        return self.expires_at is None

    def remaining(self, now: float) -> int:
        """Seconds left on the lease, rounded up; 0 for a permanent mapping (WIP-14)."""
        if self.expires_at is None:
            return 0
        left = self.expires_at - now
        return max(1, int(-(-left // 1))) if left > 0 else 0


@dataclass(frozen=True, slots=True)
class MappingRequest:
    """What a client asks for; validated by `policy.validate_request` before it reaches the table.

    `lease` is in seconds; None asks for a permanent mapping.
    """

    protocol: IPProtocol
    external_port: int
    internal_client: IPv4Address
    internal_port: int
    description: str = ""
    enabled: bool = True
    remote_host: IPv4Address | None = None
    lease: float | None = None
    target_name: str | None = None


@dataclass(frozen=True, slots=True)
class FirewallSettings:
    """The global firewall mode that combines with each connection's flag (R9)."""

    enabled: bool = True
    exceptions_not_allowed: bool = False

    def effective(self, interface_enabled: bool) -> bool:
        """Truth table R9: shielded mode overrides the interface setting."""
        return self.enabled and (interface_enabled or self.exceptions_not_allowed)
