"""Who may map what: input checks, the target scope, permission rules, quotas. Pure module.

Differences from miniupnpd, on purpose (landscape.md ST-19..ST-24):
- a request that no rule matches is **denied** (miniupnpd accepts it);
- the internal client must lie on a private connection's subnet, in the requester's own segment,
  and is never the gateway itself, loopback (unless loopback is the LAN), multicast, broadcast,
  a network address or a public-side address, even with secure mode off;
- each client has a quota.
The administrator (Origin.ADMIN) bypasses secure mode, rules and quotas, not the target scope.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from igd.natcore.errors import (
    ConflictWithOtherMechanismError,
    InvalidAddressError,
    InvalidDescriptionError,
    InvalidPortError,
    InvalidProtocolError,
    InvalidRequestError,
    InvalidTargetError,
    NotAuthorizedError,
    QuotaExceededError,
)
from igd.natcore.model import Client, IPProtocol, MappingRequest

__all__ = [
    "DEFAULT_RULES",
    "MAX_DESCRIPTION_BYTES",
    "NetworkView",
    "PermissionRule",
    "Policy",
    "PolicyConfig",
    "is_reportable_external",
    "validate_description",
    "validate_port",
]

# INetSharingPortMapping names are BSTRs capped by NETCON_MAX_NAME_LEN (256); we cap the UTF-8 form.
MAX_DESCRIPTION_BYTES = 256
# Control characters, surrogates and line/paragraph separators; bidi overrides (log spoofing).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def validate_port(value: object, what: str, *, allow_zero: bool = False) -> int:
    """An int in 1..65535 (0..65535 with `allow_zero`), else InvalidPortError."""
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
        raise InvalidPortError(f"{what} must be an integer in {low}..65535, not {value!r}")
    return value


def validate_description(value: object) -> str:
    """At most 256 bytes of UTF-8 without control characters (ST-16, ST-26)."""
    if not isinstance(value, str):
        raise InvalidDescriptionError(f"description must be a string, not {type(value).__name__}")
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES or ch in _BIDI_CONTROLS for ch in value):
        raise InvalidDescriptionError(
            "description must not contain control, line-separator or bidi characters"
        )
    if len(value.encode("utf-8")) > MAX_DESCRIPTION_BYTES:
        raise InvalidDescriptionError(f"description longer than {MAX_DESCRIPTION_BYTES} bytes")
    return value


def _decimal(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 5 else None


def _parse_range(text: str, what: str) -> tuple[int, int]:
    low_text, sep, high_text = text.partition("-")
    low = _decimal(low_text)
    high = _decimal(high_text) if sep else low
    if low is None or high is None or not 0 <= low <= high <= 65535:
        raise InvalidRequestError(f"bad {what} port range {text!r}")
    return low, high


def _parse_network(text: str, line: str) -> IPv4Network:
    """ADDR, ADDR/PREFIX or ADDR/NETMASK (a dotted mask must be a netmask, not a host mask)."""
    address, slash, mask = text.partition("/")
    try:
        if slash and not mask:
            raise ValueError(text)
        if "." in mask:
            bits = int(IPv4Address(mask))
            prefix = bin(bits).count("1")
            if bits != (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF:
                raise ValueError(mask)
            mask = str(prefix)
        elif mask and _decimal(mask) is None:
            raise ValueError(mask)
        return IPv4Network(f"{address}/{mask or 32}", strict=False)
    except ValueError:
        raise InvalidRequestError(f"bad address {text!r} in rule {line!r}") from None


@dataclass(frozen=True, slots=True)
class PermissionRule:
    """One line of miniupnpd's permission syntax: `allow|deny EXT_PORTS ADDR[/MASK] INT_PORTS`.

    The address is the internal client's; the mask is a prefix length or a dotted netmask.
    """

    allow: bool
    external_ports: tuple[int, int]
    network: IPv4Network
    internal_ports: tuple[int, int]

    @classmethod
    def parse(cls, line: str) -> PermissionRule:
        words = line.split()
        if len(words) != 4 or words[0] not in ("allow", "deny"):
            raise InvalidRequestError(
                f"bad permission rule {line!r}: expected 'allow|deny EXT_PORTS ADDR/MASK INT_PORTS'"
            )
        network = _parse_network(words[2], line)
        return cls(
            allow=words[0] == "allow",
            external_ports=_parse_range(words[1], "external"),
            network=network,
            internal_ports=_parse_range(words[3], "internal"),
        )

    def matches(self, external_port: int, internal_client: IPv4Address, internal_port: int) -> bool:
        return (
            self.external_ports[0] <= external_port <= self.external_ports[1]
            and internal_client in self.network
            and self.internal_ports[0] <= internal_port <= self.internal_ports[1]
        )

    def __str__(self) -> str:
        def span(r: tuple[int, int]) -> str:
            return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"

        verb = "allow" if self.allow else "deny"
        return f"{verb} {span(self.external_ports)} {self.network} {span(self.internal_ports)}"


# ST-21: deny remote-access services on the inside, then allow unprivileged ports (WIP-72).
DEFAULT_RULES: tuple[PermissionRule, ...] = tuple(
    PermissionRule.parse(line)
    for line in (
        "deny 0-65535 0.0.0.0/0 22-23",
        "deny 0-65535 0.0.0.0/0 135-139",
        "deny 0-65535 0.0.0.0/0 445",
        "deny 0-65535 0.0.0.0/0 3389",
        "deny 0-65535 0.0.0.0/0 5900",
        "allow 1024-65535 0.0.0.0/0 1024-65535",
    )
)

# Seven days: the WANIPConnection:2 maximum lease (WIP-12).
DEFAULT_MAX_LEASE = 604800.0


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The operator's settings; the defaults are the safe ones."""

    secure_mode: bool = True
    rules: tuple[PermissionRule, ...] = DEFAULT_RULES
    quota_per_client: int = 128
    max_mappings: int = 16384
    reserved_ports: frozenset[tuple[IPProtocol, int]] = frozenset()
    max_lease: float | None = DEFAULT_MAX_LEASE


@dataclass(frozen=True, slots=True)
class NetworkView:
    """What the policy needs to know about the connections right now."""

    private: tuple[IPv4Interface, ...] = ()
    public: tuple[IPv4Interface, ...] = ()
    gateway_addresses: frozenset[IPv4Address] = field(default_factory=frozenset)

    def segment_of(self, address: IPv4Address) -> IPv4Interface | None:
        """The private interface whose subnet holds `address`, if any."""
        for iface in self.private:
            if address in iface.network:
                return iface
        return None


_BROADCAST = IPv4Address("255.255.255.255")
_SHARED_ADDRESS_SPACE = IPv4Network("100.64.0.0/10")  # RFC 6598 (CGNAT)


def is_reportable_external(address: IPv4Address, *, allow_private: bool) -> bool:
    """Whether an external address may be reported to clients: public, or allowed (WIP-03).

    Private, reserved, shared (100.64/10), loopback, link-local and other non-global addresses
    are reported as unknown unless the operator allows them: a client behind double NAT must
    not be told a mapping is reachable when it is not (ST-31).
    """
    if allow_private:
        return True
    return address.is_global and address not in _SHARED_ADDRESS_SPACE and not address.is_multicast


@dataclass(frozen=True, slots=True)
class Policy:
    """Decisions over a request; every method raises a NatError or returns quietly."""

    config: PolicyConfig = PolicyConfig()

    def check_request(self, request: MappingRequest, *, allow_zero_external: bool = False) -> None:
        """Syntax of a request (ports, description, lease) before anything else is looked at."""
        if not isinstance(request.protocol, IPProtocol):
            raise InvalidProtocolError(f"protocol must be TCP or UDP, not {request.protocol!r}")
        validate_port(request.external_port, "external port", allow_zero=allow_zero_external)
        validate_port(request.internal_port, "internal port")
        validate_description(request.description)
        if not isinstance(request.internal_client, IPv4Address):
            raise InvalidAddressError(
                f"internal client must be an IPv4 address: {request.internal_client!r}"
            )
        if request.remote_host is not None and not isinstance(request.remote_host, IPv4Address):
            raise InvalidAddressError(
                f"remote host must be an IPv4 address: {request.remote_host!r}"
            )
        lease = request.lease
        if lease is not None and (
            not isinstance(lease, int | float) or isinstance(lease, bool) or not 0 < lease < 2**32
        ):
            raise InvalidRequestError(f"lease must be positive seconds, not {lease!r}")

    def check_target(self, target: IPv4Address, client: Client, network: NetworkView) -> None:
        """The UPnProxy rules (ST-19, ST-33): where a mapping may point."""
        refuse = InvalidTargetError if client.is_admin else NotAuthorizedError
        if target.is_multicast or target.is_unspecified or target == _BROADCAST:
            raise refuse(f"{target} cannot be a mapping target")
        segment = network.segment_of(target)
        if segment is None:
            if client.is_admin and target in network.gateway_addresses:
                return  # ICF open port on the gateway itself (KB 297942)
            raise refuse(f"{target} is not on a private (LAN) connection's subnet")
        net = segment.network
        if net.prefixlen < 31 and target in (net.network_address, net.broadcast_address):
            raise refuse(f"{target} is the network or broadcast address of {net}")
        is_loopback_lan = segment.ip.is_loopback
        if target in network.gateway_addresses and not client.is_admin and not is_loopback_lan:
            raise refuse(f"{target} is the gateway itself")
        if client.is_admin:
            return
        if client.address is None or client.address not in net:
            raise NotAuthorizedError(f"{target} is not on the requester's own segment")
        if self.config.secure_mode and target != client.address:
            raise NotAuthorizedError(
                f"secure mode: {client.address} may only map to itself, not to {target}"
            )

    def check_rules(
        self, client: Client, external_port: int, internal_client: IPv4Address, internal_port: int
    ) -> None:
        """First matching rule decides; no matching rule denies (ST-21)."""
        if client.is_admin:
            return
        if not self.allows(external_port, internal_client, internal_port):
            raise NotAuthorizedError(
                f"no permission rule allows external port {external_port} "
                f"to {internal_client}:{internal_port}"
            )

    def allows(self, external_port: int, internal_client: IPv4Address, internal_port: int) -> bool:
        for rule in self.config.rules:
            if rule.matches(external_port, internal_client, internal_port):
                return rule.allow
        return False

    def allowed_external_ranges(
        self, client: Client, internal_client: IPv4Address, internal_port: int
    ) -> list[tuple[int, int]]:
        """The external port intervals the rules allow for this target, first match deciding."""
        if client.is_admin:
            return [(0, 65535)]
        undecided = [(0, 65535)]
        allowed: list[tuple[int, int]] = []
        for rule in self.config.rules:
            low, high = rule.internal_ports
            if internal_client not in rule.network or not low <= internal_port <= high:
                continue
            remaining: list[tuple[int, int]] = []
            for start, end in undecided:
                first, last = max(start, rule.external_ports[0]), min(end, rule.external_ports[1])
                if first > last:
                    remaining.append((start, end))
                    continue
                if rule.allow:
                    allowed.append((first, last))
                if start < first:
                    remaining.append((start, first - 1))
                if last < end:
                    remaining.append((last + 1, end))
            undecided = remaining
        return sorted(allowed)

    def check_reserved(self, protocol: IPProtocol, external_port: int) -> None:
        """The gateway's own services are not for mapping (ST-22)."""
        if self.is_reserved(protocol, external_port):
            raise ConflictWithOtherMechanismError(
                f"{protocol.name} port {external_port} is reserved for the gateway"
            )

    def is_reserved(self, protocol: IPProtocol, external_port: int) -> bool:
        return (protocol, external_port) in self.config.reserved_ports

    def check_quota(self, client: Client, owned: int, total: int) -> None:
        """Per-client quota and table size (ST-24)."""
        if total >= self.config.max_mappings:
            raise QuotaExceededError(f"the table is full ({self.config.max_mappings} mappings)")
        if not client.is_admin and owned >= self.config.quota_per_client:
            raise QuotaExceededError(
                f"{client.address} already holds {owned} mappings "
                f"(quota {self.config.quota_per_client})"
            )

    def grant_lease(self, requested: float | None, client: Client) -> float | None:
        """The lease granted: a protocol client's finite lease is clamped to max_lease."""
        limit = self.config.max_lease
        if client.is_admin or requested is None or limit is None:
            return requested
        return min(requested, limit)
