"""The nftables data plane: kernel NAT (ICS) and the stateful firewall (ICF) in a table of our own.

Everything lives in one `inet` table (default name `igd`) that is ours alone: no other table, chain
or rule of the ruleset is read or touched. Its fixed part is `NFT_SKELETON` (maps, sets, chains,
the ICF policy); the rest is generated:

    map fwd4      inet_proto . inet_service             : ipv4_addr . inet_service   DNAT (public)
    map fwd4_rh   ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service   + remote host
    set open4     ifname . inet_proto . inet_service                               ICF openings
    set open4_rh  ifname . ipv4_addr . inet_proto . inet_service                   + remote host

Each active mapping is one element with a kernel timeout equal to its lease (seconds left, rounded
up, 1 to MAX_TIMEOUT_S; none when permanent), so leases run out in the kernel even when the daemon
is gone:

- on the PUBLIC connection (ICS): `fwd4` (wildcard) or `fwd4_rh` (remote host, checked first), so a
  remote-host mapping DNATs only that host; when the connection is firewalled, forwarded DNAT
  traffic passes `ct status dnat accept`. A mapping onto the gateway's own address and the same
  port is a no-op DNAT the kernel does not flag, so it also gets an `open4` element;
- on a firewalled connection that is not public (ICF without ICS ignores the target,
  ics-icf-model.md 1.11.2): `open4`/`open4_rh`, the port opened on that connection.

Rules generated from the connections (`connection_rules`), regenerated on every connection change:

    prerouting   iifname PUBLIC dnat via fwd4_rh, then fwd4;
                 hairpin: iifname PRIVATE ip daddr PUBLIC-ADDRESSES dnat via fwd4
    postrouting  ICS: iifname PRIVATE oifname PUBLIC masquerade (IPv4; kernel >= 5.5 for iifname);
                 hairpin: iifname PRIVATE oifname PRIVATE, DNATed from a public address: masquerade
    input        iifname FIREWALLED jump icf_input     forward  iifname FIREWALLED jump icf_forward

ICF policy (fixed, `icf_input` / `icf_forward`, IPv4 and IPv6): established/related accepted,
invalid dropped, DNATed (mapped) traffic accepted, `open4` ports accepted; ICMP echo-request and
the error types accepted to the gateway (ping answers; PMTU discovery works), ICMPv6 neighbour
discovery with hop limit 255 and DHCPv6 replies from link-local servers accepted; everything else
arriving unsolicited on a firewalled connection, to the gateway or through it, is dropped.
Loopback is always accepted. Base chains have policy accept: what we do not drop, others decide.

Transactions: `start` and any plan that changes connections rewrite the whole table in ONE text
batch (`add table; delete table; skeleton; rules; elements`: nftables 1.0.6 cannot declare a
concatenated map in JSON); a plan that only changes mappings is ONE JSON batch of element changes.
A removal is `add` then `delete`, so an element the kernel already timed out is no error. When an
element batch fails anyway (the kernel drifted from what we applied), the table is rewritten from
the desired state in one batch; if that fails too, BackendError carries nft's first error line and
nothing changed (kernel batches are atomic). Batches run in-process through libnftables (ctypes)
or, without the library, through the nft program (`nft -j -f -` for JSON, `nft -f -` for text);
always in one worker thread, never on the event loop.

No client-supplied text ever reaches the kernel: only numbers, addresses, protocol keywords and
validated interface names ([A-Za-z0-9_.-], at most 15 characters) that this module formats.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import json
import logging
import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final, Protocol

from igd.natcore.backends.base import AppliedConnection, Plan
from igd.natcore.errors import BackendError
from igd.natcore.model import IPProtocol, Mapping, MappingKey, SharingConnectionType

__all__ = [
    "DEFAULT_TABLE",
    "MAX_TIMEOUT_S",
    "NFT_SKELETON",
    "NFT_TIMEOUT_S",
    "Element",
    "LibNftables",
    "Nft",
    "NftCommand",
    "NftError",
    "NftablesBackend",
    "Topology",
    "connection_rules",
    "delete_table_batch",
    "element_json",
    "element_text",
    "elements_batch",
    "has_net_admin",
    "lease_timeout",
    "mapping_elements",
    "nftables_unusable_reason",
    "open_nft",
    "reload_batch",
    "skeleton",
    "topology",
    "validate_ifname",
    "validate_table",
]

log = logging.getLogger(__name__)

DEFAULT_TABLE: Final = "igd"
FAMILY: Final = "inet"
NFT_TIMEOUT_S: Final = 10.0
"""Longest one `nft` subprocess may run."""
MAX_TIMEOUT_S: Final = 2**32 - 1
"""Longest element timeout we give the kernel (136 years; the kernel refuses ~2**34 s)."""
LIBNFTABLES: Final = "libnftables.so.1"
CAP_NET_ADMIN: Final = 12
"""<linux/capability.h>: the capability nf_tables requires for every request."""
NFT_CTX_OUTPUT_JSON: Final = 1 << 4
"""<nftables/libnftables.h>: JSON output; JSON input is then tried before the text parser."""

_IFNAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,15}")
"""Interface names we format into rules: IFNAMSIZ - 1 bytes of a safe alphabet."""
_TABLE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_LOCATION: Final = re.compile(r"^\S+:\d+:\d+-\d+: ")
"""The `<input>:line:col-col: ` prefix of nft's error lines."""

_MAP_FWD: Final = "fwd4"
_MAP_FWD_RH: Final = "fwd4_rh"
_SET_OPEN: Final = "open4"
_SET_OPEN_RH: Final = "open4_rh"

NFT_SKELETON: Final = """\
table inet {table} {
	comment "igd: NAT and firewall of the igd daemon, rewritten by it; do not edit"

	map fwd4 {
		type inet_proto . inet_service : ipv4_addr . inet_service
		flags timeout
	}

	map fwd4_rh {
		type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
		flags timeout
	}

	set open4 {
		type ifname . inet_proto . inet_service
		flags timeout
	}

	set open4_rh {
		type ifname . ipv4_addr . inet_proto . inet_service
		flags timeout
	}

	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iif "lo" accept
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
	}

	chain icf_input {
		ct state established,related accept
		ct state invalid drop
		ct status dnat accept
		meta nfproto ipv4 iifname . meta l4proto . th dport @open4 accept
		iifname . ip saddr . meta l4proto . th dport @open4_rh accept
		icmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } accept
		icmpv6 type { echo-request, destination-unreachable, packet-too-big, time-exceeded, \
parameter-problem } accept
		icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } \
ip6 hoplimit 255 accept
		ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept
		drop
	}

	chain icf_forward {
		ct state established,related accept
		ct state invalid drop
		ct status dnat accept
		icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, \
parameter-problem } accept
		drop
	}
}
"""
"""The fixed part of our table, `{table}` being its name (see the module docstring)."""


# ---- Validation ---------------------------------------------------------------------------------


def validate_ifname(name: object) -> str:
    """An interface name safe to format into a rule; BackendError for anything else."""
    if not isinstance(name, str) or _IFNAME.fullmatch(name) is None:
        raise BackendError(
            f"interface name {name!r} cannot be used with nftables "
            "(only A-Z a-z 0-9 _ . -, at most 15 characters)"
        )
    return name


def validate_table(name: object) -> str:
    """A table name safe to format into a command; BackendError for anything else."""
    if not isinstance(name, str) or _TABLE.fullmatch(name) is None:
        raise BackendError(f"nftables table name {name!r} is not [A-Za-z][A-Za-z0-9_]{{0,31}}")
    return name


def _port(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise BackendError(f"port {value!r} is not in 1..65535")
    return value


def _address(value: object) -> IPv4Address:
    if not isinstance(value, IPv4Address):
        raise BackendError(f"{value!r} is not an IPv4 address")
    return value


def _keyword(value: object) -> str:
    if value not in ("tcp", "udp"):
        raise BackendError(f"protocol keyword {value!r} is not tcp or udp")
    assert isinstance(value, str)
    return value


def _protocol(value: object) -> str:
    if value is IPProtocol.TCP:
        return "tcp"
    if value is IPProtocol.UDP:
        return "udp"
    raise BackendError(f"protocol {value!r} is not TCP or UDP")


# ---- Pure model: topology, elements, rules ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topology:
    """What rules and element placement depend on, computed once per connection state."""

    connections: tuple[AppliedConnection, ...] = ()
    public: tuple[str, ...] = ()
    private: tuple[str, ...] = ()
    firewalled: tuple[str, ...] = ()
    public_addresses: tuple[IPv4Address, ...] = ()
    gateway_addresses: frozenset[IPv4Address] = frozenset()

    def connection(self, guid: uuid.UUID) -> AppliedConnection | None:
        """The connection with this GUID, if present."""
        for connection in self.connections:
            if connection.guid == guid:
                return connection
        return None


def topology(connections: Iterable[AppliedConnection]) -> Topology:
    """Roles, firewalled interfaces and addresses; BackendError for a name unsafe in a rule."""
    connections = tuple(connections)
    public: list[str] = []
    private: list[str] = []
    firewalled: list[str] = []
    public_addresses: list[IPv4Address] = []
    gateway: set[IPv4Address] = set()
    for connection in connections:
        gateway.update(_address(a.ip) for a in connection.addresses)
        if connection.role is None and not connection.firewall:
            continue  # carries nothing: its name never reaches a rule
        ifname = validate_ifname(connection.ifname)
        if connection.role is SharingConnectionType.PUBLIC:
            public.append(ifname)
            public_addresses.extend(a.ip for a in connection.addresses)
        elif connection.role is SharingConnectionType.PRIVATE:
            private.append(ifname)
        if connection.firewall:
            firewalled.append(ifname)
    return Topology(
        connections=connections,
        public=tuple(dict.fromkeys(public)),
        private=tuple(dict.fromkeys(private)),
        firewalled=tuple(dict.fromkeys(firewalled)),
        public_addresses=tuple(dict.fromkeys(public_addresses)),
        gateway_addresses=frozenset(gateway),
    )


def lease_timeout(expires_at: float | None, now: float) -> int | None:
    """Kernel timeout of a lease: seconds left rounded up, 1..MAX_TIMEOUT_S; None when permanent."""
    if expires_at is None:
        return None
    return max(1, min(MAX_TIMEOUT_S, math.ceil(expires_at - now)))


def _duration(seconds: int) -> str:
    """`1d2h3m4s` (zero units left out): nft's text parser refuses `100000000s`."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = zip((days, hours, minutes, secs), "dhms", strict=True)
    return "".join(f"{value}{unit}" for value, unit in units if value) or "0s"


@dataclass(frozen=True, slots=True)
class Element:
    """One element of our maps or sets; which one follows from `ifname` and `remote`.

    No interface: a DNAT map element (`target` set), `fwd4` or, with a remote host, `fwd4_rh`.
    An interface: an ICF opening, `open4` or `open4_rh`.
    """

    protocol: str
    port: int
    ifname: str | None = None
    remote: IPv4Address | None = None
    target: tuple[IPv4Address, int] | None = None
    timeout_s: int | None = None

    @property
    def set_name(self) -> str:
        if self.ifname is None:
            return _MAP_FWD if self.remote is None else _MAP_FWD_RH
        return _SET_OPEN if self.remote is None else _SET_OPEN_RH

    def key_parts(self) -> list[str | int]:
        """The key, in the set's concatenation order, as JSON values."""
        parts: list[str | int] = []
        if self.ifname is not None:
            parts.append(self.ifname)
        if self.remote is not None:
            parts.append(str(self.remote))
        parts += [self.protocol, self.port]
        return parts


def mapping_elements(mapping: Mapping, topo: Topology, now: float) -> tuple[Element, ...]:
    """The elements that carry `mapping` on its connection (none when it carries nothing)."""
    connection = topo.connection(mapping.connection)
    if connection is None:
        return ()
    protocol = _protocol(mapping.protocol)
    port = _port(mapping.external_port)
    target = (_address(mapping.internal_client), _port(mapping.internal_port))
    remote = None if mapping.remote_host is None else _address(mapping.remote_host)
    timeout = lease_timeout(mapping.expires_at, now)
    elements: list[Element] = []
    if connection.role is SharingConnectionType.PUBLIC:
        elements.append(Element(protocol, port, None, remote, target, timeout))
        opens = (
            connection.firewall and target[0] in topo.gateway_addresses and target[1] == port
        )  # a no-op DNAT leaves no `ct status dnat` for the firewall to see
    else:
        opens = connection.firewall
    if opens:
        ifname = validate_ifname(connection.ifname)
        elements.append(Element(protocol, port, ifname, remote, None, timeout))
    return tuple(elements)


def _ifnames(names: Sequence[str]) -> str:
    return "{ " + ", ".join(f'"{validate_ifname(n)}"' for n in names) + " }"


def _addresses(addresses: Sequence[IPv4Address]) -> str:
    return "{ " + ", ".join(str(_address(a)) for a in addresses) + " }"


def connection_rules(table: str, topo: Topology, *, hairpin: bool) -> list[str]:
    """The `add rule` commands derived from the connections (see the module docstring)."""
    table = validate_table(table)
    rules: list[str] = []

    def add(chain: str, rule: str) -> None:
        rules.append(f"add rule {FAMILY} {table} {chain} {rule}")

    if topo.public:
        public = _ifnames(topo.public)
        add(
            "prerouting",
            f"iifname {public} dnat ip to ip saddr . meta l4proto . th dport map @{_MAP_FWD_RH}",
        )
        add("prerouting", f"iifname {public} dnat ip to meta l4proto . th dport map @{_MAP_FWD}")
    if topo.public and topo.private:
        public, private = _ifnames(topo.public), _ifnames(topo.private)
        if hairpin and topo.public_addresses:
            addresses = _addresses(topo.public_addresses)
            add(
                "prerouting",
                f"iifname {private} ip daddr {addresses} "
                f"dnat ip to meta l4proto . th dport map @{_MAP_FWD}",
            )
            add(
                "postrouting",
                f"iifname {private} oifname {private} ct status dnat "
                f"ct original ip daddr {addresses} masquerade",
            )
        add("postrouting", f"iifname {private} oifname {public} meta nfproto ipv4 masquerade")
    if topo.firewalled:
        firewalled = _ifnames(topo.firewalled)
        add("input", f"iifname {firewalled} jump icf_input")
        add("forward", f"iifname {firewalled} jump icf_forward")
    return rules


def skeleton(table: str) -> str:
    """The fixed declaration of our table named `table`."""
    return NFT_SKELETON.replace("{table}", validate_table(table))


def element_text(element: Element, *, timeout_s: int | None = None) -> str:
    """One element in nft's text syntax (`timeout_s` overrides the element's own)."""
    parts: list[str] = []
    if element.ifname is not None:
        parts.append(f'"{validate_ifname(element.ifname)}"')
    if element.remote is not None:
        parts.append(str(_address(element.remote)))
    parts += [_keyword(element.protocol), str(_port(element.port))]
    text = " . ".join(parts)
    timeout = element.timeout_s if timeout_s is None else timeout_s
    if timeout is not None:
        text += f" timeout {_duration(timeout)}"
    if element.target is not None:
        address, port = element.target
        text += f" : {_address(address)} . {_port(port)}"
    return text


def element_json(element: Element, *, timeout_s: int | None = None, key_only: bool = False) -> Any:
    """One element as libnftables JSON: the key (`key_only`), else key, timeout and map data."""
    if element.ifname is not None:
        validate_ifname(element.ifname)
    if element.remote is not None:
        _address(element.remote)
    _keyword(element.protocol)
    _port(element.port)
    key: Any = {"concat": element.key_parts()}
    if key_only:
        return key
    timeout = element.timeout_s if timeout_s is None else timeout_s
    if timeout is not None:
        key = {"elem": {"val": key, "timeout": int(timeout)}}
    if element.target is None:
        return key
    address, port = element.target
    return [key, {"concat": [str(_address(address)), _port(port)]}]


def _by_set(elements: Iterable[Element]) -> dict[str, list[Element]]:
    groups: dict[str, list[Element]] = {}
    for element in elements:
        groups.setdefault(element.set_name, []).append(element)
    return groups


def reload_batch(table: str, elements: Iterable[Element], topo: Topology, *, hairpin: bool) -> str:
    """One text batch that replaces our table with exactly this state (start and reconcile)."""
    table = validate_table(table)
    lines = [f"add table {FAMILY} {table}", f"delete table {FAMILY} {table}", skeleton(table)]
    lines += connection_rules(table, topo, hairpin=hairpin)
    for name, group in _by_set(elements).items():
        body = ", ".join(element_text(e) for e in group)
        lines.append(f"add element {FAMILY} {table} {name} {{ {body} }}")
    return "\n".join(lines) + "\n"


def elements_batch(table: str, removed: Sequence[Element], added: Sequence[Element]) -> str:
    """One JSON batch: `removed` go (added first: one timed out is no error), then `added` come."""
    table = validate_table(table)

    def command(verb: str, name: str, elem: list[Any]) -> dict[str, Any]:
        return {verb: {"element": {"family": FAMILY, "table": table, "name": name, "elem": elem}}}

    commands: list[dict[str, Any]] = []
    removed_sets = _by_set(removed)
    for name, group in removed_sets.items():
        commands.append(command("add", name, [element_json(e, timeout_s=1) for e in group]))
    for name, group in removed_sets.items():
        commands.append(command("delete", name, [element_json(e, key_only=True) for e in group]))
    for name, group in _by_set(added).items():
        commands.append(command("add", name, [element_json(e) for e in group]))
    return json.dumps({"nftables": commands}, separators=(",", ":"))


def delete_table_batch(table: str) -> str:
    """One text batch that removes our table if it exists (nft 1.0.6 has no `destroy`)."""
    table = validate_table(table)
    return f"add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"


# ---- Running batches ----------------------------------------------------------------------------


class NftError(Exception):
    """nft refused a batch; the message is nft's first error line."""


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return _LOCATION.sub("", line.strip())
    return "failed without a message"


class Nft(Protocol):
    """Something that runs one nft batch (text or JSON) as one kernel transaction."""

    kind: str

    def run(self, commands: str) -> str:
        """Run the batch; its output (JSON for list commands); NftError on failure."""
        ...

    def close(self) -> None:
        """Release what it holds."""
        ...


class LibNftables:
    """libnftables in-process via ctypes: one context, JSON output, used by one thread at a time.

    The context's netlink socket lives in the network namespace of the thread that creates it.
    """

    kind = "libnftables"

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL(LIBNFTABLES)
        except OSError as exc:
            raise BackendError(f"cannot load {LIBNFTABLES}: {exc}") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).restype = ctypes.c_char_p
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise BackendError("libnftables: nft_ctx_new failed")
        if lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
            lib.nft_ctx_free(ctx)
            raise BackendError("libnftables: cannot buffer output")
        lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
        self._lib = lib
        self._ctx: int | None = ctx

    def run(self, commands: str) -> str:
        if self._ctx is None:
            raise NftError("the libnftables context is closed")
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        output = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        errors = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(_first_line(errors.decode(errors="replace")))
        return str(output.decode(errors="replace"))

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


class NftCommand:
    """The `nft` program as a subprocess (`nft -j -f -` for JSON, `nft -f -` for text), bounded."""

    kind = "nft"

    def __init__(self, program: str | None = None) -> None:
        found = program or shutil.which("nft")
        if found is None:
            raise BackendError("the nft program is not installed")
        self.program = found

    def run(self, commands: str) -> str:
        # `nft -j -f -` would read stdin as JSON and then find it empty for the text parser.
        json_flag = ("-j",) if commands.lstrip().startswith("{") else ()
        try:
            result = subprocess.run(
                (self.program, *json_flag, "-f", "-"),
                input=commands,
                capture_output=True,
                text=True,
                timeout=NFT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise NftError(f"nft did not finish within {NFT_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            raise NftError(f"cannot run {self.program}: {exc.strerror or exc}") from None
        if result.returncode != 0:
            raise NftError(_first_line(result.stderr or result.stdout))
        return result.stdout

    def close(self) -> None:
        return None


def open_nft() -> Nft:
    """libnftables in-process when it loads, else the nft program; BackendError when neither."""
    try:
        return LibNftables()
    except BackendError as library:
        try:
            return NftCommand()
        except BackendError as program:
            raise BackendError(f"nftables is not available: {library}; {program}") from None


def has_net_admin(status: Path = Path("/proc/self/status")) -> bool:
    """Whether this process holds CAP_NET_ADMIN (root has it), from its effective capabilities."""
    try:
        text = status.read_text()
    except OSError:
        return os.geteuid() == 0
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return os.geteuid() == 0


def nftables_unusable_reason(
    factory: Callable[[], Nft] = open_nft, *, privileged: Callable[[], bool] = has_net_admin
) -> str | None:
    """Why nftables cannot be driven from here (no privilege, not installed); None if it can."""
    if not privileged():
        return "it needs root (CAP_NET_ADMIN)"
    try:
        nft = factory()
    except BackendError as exc:
        return str(exc)
    try:
        nft.run("list tables")
    except NftError as exc:
        return f"nft list tables failed: {exc}"
    finally:
        nft.close()
    return None


# ---- The backend --------------------------------------------------------------------------------


class NftablesBackend:
    """Kernel NAT and firewall in our own nftables table; one transaction per start, plan and stop.

    `table`: our table's name (family inet). `hairpin`: LAN hosts reaching the public address get
    DNAT and masquerade back (default on). `keep_on_stop`: leave the table in the kernel at stop,
    so mappings go on working and leases still expire in the kernel, until the next start
    rewrites it (default off: stop deletes the table). `clock`: wall-clock seconds (leases).
    `nft_factory` makes the batch runner, called in the worker thread (so in the network
    namespace of the thread that runs the event loop).
    """

    name = "nftables"

    def __init__(
        self,
        *,
        table: str = DEFAULT_TABLE,
        hairpin: bool = True,
        keep_on_stop: bool = False,
        clock: Callable[[], float] = time.time,
        nft_factory: Callable[[], Nft] = open_nft,
    ) -> None:
        self.table = validate_table(table)
        self.hairpin = hairpin
        self.keep_on_stop = keep_on_stop
        self.clock = clock
        self._nft_factory = nft_factory
        self._nft: Nft | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.mappings: dict[MappingKey, Mapping] = {}
        self.topology = Topology()
        self.started = False
        self.transactions = 0

    @property
    def runner_kind(self) -> str | None:
        """Which runner runs the batches ("libnftables" or "nft"); None before the first."""
        return None if self._nft is None else self._nft.kind

    # -- life cycle ----------------------------------------------------------------------------

    async def start(
        self, mappings: tuple[Mapping, ...], connections: tuple[AppliedConnection, ...]
    ) -> None:
        """Rewrite our table to exactly this state in one transaction: no orphan, no stale rule."""
        topo = topology(connections)
        desired = {m.key: m for m in mappings}

        def commit() -> None:
            self.mappings, self.topology, self.started = desired, topo, True

        await self._transact(self._reload(desired, topo), commit)

    async def apply(self, plan: Plan) -> None:
        """Apply one plan as one transaction; BackendError and nothing changed on failure."""
        if not self.started:
            raise BackendError("the nftables backend is not started")
        desired = dict(self.mappings)
        for mapping in plan.remove:
            desired.pop(mapping.key, None)
        for mapping in plan.add:
            desired[mapping.key] = mapping
        batch: str | None
        if plan.connections is not None:
            topo = topology(plan.connections)
            batch = self._reload(desired, topo)
        else:
            topo = self.topology
            batch = self._delta(plan, topo)

        def commit() -> None:
            self.mappings, self.topology = desired, topo

        if batch is None:
            commit()
            return
        try:
            await self._transact(batch, commit)
        except BackendError as first:
            if plan.connections is not None:
                raise
            log.warning("nftables element batch failed (%s); rewriting table %s", first, self.table)
            try:
                await self._transact(self._reload(desired, topo), commit)
            except BackendError:
                raise first from None

    async def stop(self) -> None:
        """Delete our table (unless `keep_on_stop`) and release libnftables and the worker."""
        try:
            if self.started and not self.keep_on_stop:
                await self._transact(delete_table_batch(self.table))
        finally:
            self.started = False
            executor, self._executor = self._executor, None
            if executor is not None:
                await asyncio.wrap_future(executor.submit(self._close_nft))
                executor.shutdown(wait=False)

    # -- batches -------------------------------------------------------------------------------

    def _reload(self, mappings: dict[MappingKey, Mapping], topo: Topology) -> str:
        now = self.clock()
        elements = [e for m in mappings.values() for e in mapping_elements(m, topo, now)]
        return reload_batch(self.table, elements, topo, hairpin=self.hairpin)

    def _delta(self, plan: Plan, topo: Topology) -> str | None:
        """Elements out (what we applied for every key the plan touches), elements in."""
        now = self.clock()
        touched = dict.fromkeys([m.key for m in plan.remove] + [m.key for m in plan.add])
        removed = [
            e
            for key in touched
            if (applied := self.mappings.get(key)) is not None
            for e in mapping_elements(applied, topo, now)
        ]
        added = [e for m in plan.add for e in mapping_elements(m, topo, now)]
        if not removed and not added:
            return None
        return elements_batch(self.table, removed, added)

    async def _transact(self, batch: str, on_commit: Callable[[], None] | None = None) -> None:
        """Run one batch in the worker; `on_commit` runs once it committed, even if cancelled."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="igd-nft"
            )
        future = asyncio.wrap_future(self._executor.submit(self._run, batch))

        def done(finished: asyncio.Future[str]) -> None:
            if not finished.cancelled() and finished.exception() is None:
                self.transactions += 1
                if on_commit is not None:
                    on_commit()

        future.add_done_callback(done)
        try:
            await asyncio.shield(future)
        except NftError as exc:
            raise BackendError(f"nftables: {exc}") from None

    def _run(self, batch: str) -> str:
        if self._nft is None:
            self._nft = self._nft_factory()
            log.debug("nftables batches run through %s", self._nft.kind)
        return self._nft.run(batch)

    def _close_nft(self) -> None:
        nft, self._nft = self._nft, None
        if nft is not None:
            nft.close()
