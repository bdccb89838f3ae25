"""The userspace data plane: one relay per mapping, with sockets only, so no root is needed.

Each active mapping gets a listening socket (TCP) or a bound socket (UDP) on every IPv4 address
of its connection -- the connection the mapping names, else the PUBLIC one -- and relays what
arrives to `internal_client:internal_port`: TCP with `os.splice` through a pipe per direction
(relay_tcp.py), UDP with a session per peer and an idle timeout (relay_udp.py).

Listen addresses. Never the wildcard 0.0.0.0, and only addresses of this host (a socket can
bind them: a configured external address of the daemon's virtual WAN may not be). When that
leaves none for the public connection -- the virtual WAN has no address -- or there is no public
connection at all, the relay listens on 127.0.0.1 if `loopback_when_no_public_address` (so
`make run` forwards on loopback); otherwise, and for any other connection without an address,
the mapping is kept but dormant until a later plan's connections bring an address. An endpoint
equal to the mapping's own target (127.0.0.1:8080 -> 127.0.0.1:8080, as a client on the
loopback LAN asks) is skipped: it already reaches the target, and relaying it would loop.

Plans are atomic: every socket a plan needs is bound first; if one cannot be (port taken by
another program, EACCES for a port below net.ipv4.ip_unprivileged_port_start without
CAP_NET_BIND_SERVICE), the sockets opened for it are closed, BackendError is raised and the
previous state is untouched. Only then are relays replaced. A mapping that is removed --
withdrawn, disabled or expired: the core's lease timer sends the removal -- loses its listener
and every flow at once (TCP flows are reset). A refreshed mapping (removed and added with the
same target, remote host and port) keeps its listener and its flows; a changed target or remote
host starts a new relay on the same socket and resets the old flows. Disabled mappings are kept
but never listen.

Limits: `max_tcp_per_mapping` / `max_tcp_total` connections (beyond them a new connection is
reset), `max_udp_flows_per_mapping` / `max_udp_flows_total` UDP sessions (beyond them new peers'
datagrams are dropped); a UDP session ends after `udp_idle_timeout_s` without a datagram either
way (RFC 4787 REQ-5 asks a NAT for at least 120 s; 60 s is the cheaper default asked for here).
A TCP flow holds 6 descriptors (2 sockets, 2 pipes), a UDP session 1: the process's
RLIMIT_NOFILE must allow the totals (the daemon may raise its soft limit to the hard one). When
descriptors run out, accepting pauses for 0.1 s (the kernel backlog waits), and a connection
that cannot get its sockets or pipes is reset.

What this backend cannot do, by design:
- the internal client sees the gateway's address as the source, not the WAN peer's;
- no outbound sharing (ICS masquerade): LAN hosts reach the WAN only by the host's routing;
- firewall flags (ICF) are not enforced; only the mapped ports are served;
- one relay per (protocol, external port): mappings differing only by remote host conflict
  (the core keeps one mapping per protocol and port anyway);
- throughput is bounded by one event-loop thread (splice keeps TCP bytes out of Python);
- no lease timer of its own: an expired mapping stops when the core's removal arrives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Final

from igd.natcore.backends.base import AppliedConnection, Plan
from igd.natcore.backends.relay_tcp import (
    FlowBudget,
    TcpListener,
    TcpRelay,
    TcpStats,
    open_tcp_listener,
)
from igd.natcore.backends.relay_udp import (
    UdpListener,
    UdpRelay,
    UdpStats,
    datagram_buffer,
    open_udp_listener,
)
from igd.natcore.errors import BackendError
from igd.natcore.model import IPProtocol, Mapping, MappingKey, SharingConnectionType

__all__ = [
    "LOOPBACK",
    "SWEEP_BATCH",
    "UserspaceBackend",
    "UserspaceStats",
    "userspace_unusable_reason",
]

log = logging.getLogger(__name__)

LOOPBACK: Final = IPv4Address("127.0.0.1")
"""Where relays listen when the public connection has no IPv4 address."""
SWEEP_BATCH: Final = 4096
"""Most UDP sessions one idle sweep closes; the next sweep follows at once when it hit this."""
SWEEP_MIN_S: Final = 0.05
SWEEP_MAX_S: Final = 5.0

_Slot = tuple[IPProtocol, int]
_Endpoint = tuple[IPv4Address, int]


def userspace_unusable_reason() -> str | None:
    """Why this backend cannot run here (it needs Linux's splice), or None: no privilege needed."""
    if not sys.platform.startswith("linux") or not hasattr(os, "splice"):
        return "the userspace relay needs Linux and os.splice (Python >= 3.10)"
    return None


def _is_local(address: IPv4Address) -> bool:
    """Whether a socket can bind `address` here (EADDRNOTAVAIL: not an address of this host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class _Spec:
    """What shapes a relay's flows; a mapping refreshed with the same spec keeps them."""

    target: IPv4Address
    target_port: int
    remote_host: IPv4Address | None


@dataclass(frozen=True, slots=True)
class UserspaceStats:
    """A snapshot of the relays: what listens, the live flows, and the counters."""

    endpoints: frozenset[tuple[IPProtocol, IPv4Address, int]]
    tcp_flows: int
    udp_flows: int
    tcp: TcpStats
    udp: UdpStats


class UserspaceBackend:
    """Relays mapped ports in this process (TCP splice, UDP sessions); needs no privilege."""

    name = "userspace"

    def __init__(
        self,
        *,
        max_tcp_per_mapping: int = 256,
        max_udp_flows_per_mapping: int = 1024,
        udp_idle_timeout_s: float = 60.0,
        loopback_when_no_public_address: bool = True,
        max_tcp_total: int = 4096,
        max_udp_flows_total: int = 16384,
    ) -> None:
        """Limits per mapping and in total (ValueError unless positive); see the module doc."""
        for label, value in (
            ("max_tcp_per_mapping", max_tcp_per_mapping),
            ("max_udp_flows_per_mapping", max_udp_flows_per_mapping),
            ("udp_idle_timeout_s", udp_idle_timeout_s),
            ("max_tcp_total", max_tcp_total),
            ("max_udp_flows_total", max_udp_flows_total),
        ):
            if value <= 0:
                raise ValueError(f"{label} must be positive, not {value!r}")
        self.max_tcp_per_mapping = max_tcp_per_mapping
        self.max_udp_flows_per_mapping = max_udp_flows_per_mapping
        self.udp_idle_timeout_s = udp_idle_timeout_s
        self.loopback_when_no_public_address = loopback_when_no_public_address
        self._tcp_budget = FlowBudget(max_tcp_total)
        self._udp_budget = FlowBudget(max_udp_flows_total)
        self._tcp_stats = TcpStats()
        self._udp_stats = UdpStats()
        self._datagram_buffer = datagram_buffer()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mappings: dict[MappingKey, Mapping] = {}
        self._connections: tuple[AppliedConnection, ...] = ()
        self._relays: dict[_Slot, TcpRelay | UdpRelay] = {}
        self._specs: dict[_Slot, _Spec] = {}
        self._tcp_listeners: dict[_Endpoint, TcpListener] = {}
        self._udp_listeners: dict[_Endpoint, UdpListener] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    # ---- Backend contract -------------------------------------------------------------------

    async def start(
        self, mappings: tuple[Mapping, ...], connections: tuple[AppliedConnection, ...]
    ) -> None:
        """Relay exactly these mappings (closing any other relay); BackendError if one cannot."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise BackendError("userspace backend is running on another event loop")
        keyed: dict[MappingKey, Mapping] = {}
        for mapping in mappings:
            if mapping.key in keyed:
                raise BackendError(f"mapping given twice: {mapping.key}")
            keyed[mapping.key] = mapping
        started = self._loop is not None
        self._loop = loop
        try:
            self._reconcile(keyed, connections)
        except BaseException:
            if not started:
                self._loop = None
            raise
        if self._sweeper is None:
            self._schedule_sweep(self._sweep_interval_s())

    async def apply(self, plan: Plan) -> None:
        """Apply one plan atomically: every socket is bound before any relay changes."""
        if self._loop is None:
            raise BackendError("userspace backend is not started")
        mappings = dict(self._mappings)
        for mapping in plan.remove:
            if mapping.key not in mappings:
                raise BackendError(f"remove of a mapping that is not applied: {mapping.key}")
            del mappings[mapping.key]
        for mapping in plan.add:
            if mapping.key in mappings:
                raise BackendError(f"add of a mapping that is already applied: {mapping.key}")
            mappings[mapping.key] = mapping
        connections = self._connections if plan.connections is None else plan.connections
        self._reconcile(mappings, connections)

    async def stop(self) -> None:
        """Close every relay, flow and socket; nothing stays listening."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for relay in self._relays.values():
            relay.close()
        for tcp in self._tcp_listeners.values():
            tcp.close()
        for udp in self._udp_listeners.values():
            udp.close()
        self._relays.clear()
        self._specs.clear()
        self._tcp_listeners.clear()
        self._udp_listeners.clear()
        self._mappings = {}
        self._connections = ()
        self._loop = None

    # ---- Introspection ----------------------------------------------------------------------

    @property
    def mappings(self) -> tuple[Mapping, ...]:
        """The applied mappings (active or dormant)."""
        return tuple(self._mappings.values())

    def stats(self) -> UserspaceStats:
        """What listens now, the live flows and copies of the counters."""
        endpoints = {(IPProtocol.TCP, a, p) for a, p in self._tcp_listeners}
        endpoints |= {(IPProtocol.UDP, a, p) for a, p in self._udp_listeners}
        return UserspaceStats(
            endpoints=frozenset(endpoints),
            tcp_flows=self._tcp_budget.active,
            udp_flows=self._udp_budget.active,
            tcp=dataclasses.replace(self._tcp_stats),
            udp=dataclasses.replace(self._udp_stats),
        )

    # ---- Reconciliation ---------------------------------------------------------------------

    def listen_addresses(
        self,
        mapping: Mapping,
        connections: tuple[AppliedConnection, ...],
        local: dict[IPv4Address, bool] | None = None,
    ) -> tuple[IPv4Address, ...]:
        """Where `mapping` listens (module doc); `local` caches address probes within a change."""
        local = {} if local is None else local
        chosen = next((c for c in connections if c.guid == mapping.connection), None)
        if chosen is None:
            chosen = next((c for c in connections if c.role is SharingConnectionType.PUBLIC), None)
        addresses: tuple[IPv4Address, ...] = ()
        if chosen is not None:
            for address in dict.fromkeys(i.ip for i in chosen.addresses):
                if address not in local:
                    local[address] = not address.is_unspecified and _is_local(address)
                if local[address]:
                    addresses += (address,)
        public = chosen is None or chosen.role is SharingConnectionType.PUBLIC
        if not addresses and public and self.loopback_when_no_public_address:
            addresses = (LOOPBACK,)
        # A target that is the endpoint itself is reached without us (and relaying would loop).
        target = (mapping.internal_client, mapping.internal_port)
        return tuple(a for a in addresses if (a, mapping.external_port) != target)

    def _reconcile(
        self, mappings: dict[MappingKey, Mapping], connections: tuple[AppliedConnection, ...]
    ) -> None:
        """Make the relays equal to `mappings`; all-or-nothing (BackendError, nothing changed)."""
        loop = self._loop
        assert loop is not None
        wanted: dict[_Slot, tuple[_Spec, tuple[IPv4Address, ...]]] = {}
        seen: set[_Slot] = set()
        local: dict[IPv4Address, bool] = {}
        for mapping in mappings.values():
            slot = (mapping.protocol, mapping.external_port)
            if slot in seen:
                raise BackendError(
                    f"{mapping.protocol.name} port {mapping.external_port} is mapped twice "
                    "(the userspace backend keeps one relay per protocol and port)"
                )
            seen.add(slot)
            if not mapping.enabled:
                continue
            addresses = self.listen_addresses(mapping, connections, local)
            if addresses:
                spec = _Spec(mapping.internal_client, mapping.internal_port, mapping.remote_host)
                wanted[slot] = (spec, addresses)
        need_tcp: set[_Endpoint] = set()
        need_udp: set[_Endpoint] = set()
        for (protocol, port), (_, addresses) in wanted.items():
            need = need_tcp if protocol is IPProtocol.TCP else need_udp
            need.update((address, port) for address in addresses)

        # Phase 1: bind every new socket; on any failure close them and change nothing.
        new_tcp: dict[_Endpoint, TcpListener] = {}
        new_udp: dict[_Endpoint, UdpListener] = {}
        protocol_name = "TCP"
        endpoint: _Endpoint | None = None
        try:
            for endpoint in sorted(need_tcp - self._tcp_listeners.keys()):
                new_tcp[endpoint] = TcpListener(loop, open_tcp_listener(*endpoint))
            protocol_name = "UDP"
            for endpoint in sorted(need_udp - self._udp_listeners.keys()):
                new_udp[endpoint] = UdpListener(loop, open_udp_listener(*endpoint))
        except OSError as exc:
            for tcp in new_tcp.values():
                tcp.close()
            for udp in new_udp.values():
                udp.close()
            where = "?" if endpoint is None else f"{endpoint[0]}:{endpoint[1]}"
            raise BackendError(
                f"cannot listen on {protocol_name} {where}: {exc.strerror or exc}"
            ) from exc

        # Phase 2: nothing below can fail. Replace relays whose spec changed, then wire up.
        for slot in list(self._relays):
            want = wanted.get(slot)
            if want is None or want[0] != self._specs[slot]:
                self._relays.pop(slot).close()
                del self._specs[slot]
        self._tcp_listeners.update(new_tcp)
        self._udp_listeners.update(new_udp)
        for slot, (spec, addresses) in wanted.items():
            protocol, port = slot
            if protocol is IPProtocol.TCP:
                tcp_relay = self._relays.get(slot)
                if not isinstance(tcp_relay, TcpRelay):
                    tcp_relay = TcpRelay(
                        loop,
                        target=spec.target,
                        target_port=spec.target_port,
                        remote_host=spec.remote_host,
                        max_flows=self.max_tcp_per_mapping,
                        budget=self._tcp_budget,
                        stats=self._tcp_stats,
                    )
                    self._relays[slot] = tcp_relay
                    self._specs[slot] = spec
                tcp_relay.set_listeners([self._tcp_listeners[(a, port)] for a in addresses])
            else:
                udp_relay = self._relays.get(slot)
                if not isinstance(udp_relay, UdpRelay):
                    udp_relay = UdpRelay(
                        loop,
                        target=spec.target,
                        target_port=spec.target_port,
                        remote_host=spec.remote_host,
                        max_flows=self.max_udp_flows_per_mapping,
                        budget=self._udp_budget,
                        stats=self._udp_stats,
                        buffer=self._datagram_buffer,
                    )
                    self._relays[slot] = udp_relay
                    self._specs[slot] = spec
                udp_relay.set_listeners([self._udp_listeners[(a, port)] for a in addresses])
        for key in [k for k in self._tcp_listeners if k not in need_tcp]:
            self._tcp_listeners.pop(key).close()
        for key in [k for k in self._udp_listeners if k not in need_udp]:
            self._udp_listeners.pop(key).close()
        self._mappings = mappings
        self._connections = connections
        log.debug(
            "userspace relays: %d TCP, %d UDP listening sockets",
            len(self._tcp_listeners),
            len(self._udp_listeners),
        )

    # ---- UDP idle sweep ---------------------------------------------------------------------

    def _sweep_interval_s(self) -> float:
        return min(SWEEP_MAX_S, max(SWEEP_MIN_S, self.udp_idle_timeout_s / 4))

    def _schedule_sweep(self, delay_s: float) -> None:
        assert self._loop is not None
        self._sweeper = self._loop.call_later(delay_s, self._sweep)

    def _sweep(self) -> None:
        """Close UDP sessions idle for longer than the timeout, at most SWEEP_BATCH per call."""
        assert self._loop is not None
        idle_before = self._loop.time() - self.udp_idle_timeout_s
        budget = SWEEP_BATCH
        for relay in self._relays.values():
            if isinstance(relay, UdpRelay) and budget > 0:
                budget -= relay.expire(idle_before, budget)
        self._schedule_sweep(0.0 if budget <= 0 else self._sweep_interval_s())
