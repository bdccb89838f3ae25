"""Composition root of `igd serve`: picks the backend, builds the core and the front-ends.

Start order: interfaces checked, admin token read -> state directory (lock, device UUID, store,
BOOTID, NAT-PMP/PCP epoch origin) -> core (connections, policy, backend wrapped in a timer;
sharing roles assigned) -> GENA, then HTTP (description, SOAP, GENA, status page at /status/) on
every LAN address -> SSDP per LAN interface (byebye, then alive) -> NAT-PMP/PCP on UDP 5351 of
every LAN address -> the admin API on its Unix socket (and loopback TCP), last, so the socket
existing means the daemon is ready. Stop runs the same steps backwards: admin API closed,
NAT-PMP/PCP stopped, SSDP byebye, HTTP closed, GENA stopped, core closed. Every change is
committed by the core when it is made, so a `kill -9` loses nothing that was acknowledged.

SIGHUP reloads the configuration (`Daemon.reload`): the keys in `igd.config.LIVE_KEYS` apply at
once (the policy to new requests only: existing mappings stay); a change to any other key is
logged as "restart needed for: ..." and left for the next start; an invalid configuration is one
ERROR line and the running one stays.

Failures carry one line for the operator: ConfigError (exit 2) for a configuration the system
contradicts (no such interface, unusable state directory), DaemonError (exit 1) for the rest
(a port in use, an unreadable store).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import functools
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any, Final, TextIO

from aiohttp import web

from igd import __version__
from igd.admin import LatencyRecorder, MetricsSources, build_admin_app, start_admin_server
from igd.admin.metrics import RequestCounts, merge_request_counts
from igd.config import LIVE_KEYS, VIRTUAL_WAN, Config, ConfigError, changed_keys
from igd.gena import GenaFrontEnd
from igd.natcore import (
    AppliedConnection,
    Backend,
    ConnectionSource,
    IPProtocol,
    MediaType,
    NatError,
    Plan,
    PolicyConfig,
    SharingConnectionType,
    SharingManager,
    SqliteStore,
    StaticConnectionSource,
    StoreError,
    make_connection,
)
from igd.natcore import (
    Mapping as NatMapping,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.natcore.backends.netlink import NetlinkConnectionSource
from igd.natcore.backends.nftables import NftablesBackend, nftables_unusable_reason
from igd.natcore.backends.userspace import UserspaceBackend, userspace_unusable_reason
from igd.natcore.connections import CombinedConnectionSource
from igd.natcore.store import StoreChanges
from igd.natpmp import NatPmpHandler
from igd.netif import (
    InterfaceError,
    ListeningPorts,
    interface_index,
    interface_ipv4,
    ipv4_forwarding,
    link_counters,
    open_port_mapping_socket,
)
from igd.pcp.endpoint import PortMappingEndpoint
from igd.pcp.handler import PcpHandler
from igd.soap.routes import UPNP_STATS, UpnpHttpConfig, build_app
from igd.ssdp.responder import SsdpResponder
from igd.ssdp.schedule import next_boot_id
from igd.upnp import DeviceInfo, RootDevice, render_documents
from igd.web.routes import MIN_TOKEN_LENGTH, StatusPage

__all__ = [
    "ADMIN_SOCKET_FILE",
    "BOOT_ID_COUNTER",
    "DEVICE_UUID_FILE",
    "EPOCH_ORIGIN_COUNTER",
    "HTTP_BACKLOG",
    "LOCK_FILE",
    "NATPMP_PORT",
    "STATUS_PATH",
    "STORE_FILE",
    "Daemon",
    "DaemonError",
    "InterfaceWan",
    "TimedBackend",
    "VirtualWan",
    "bump_boot_id",
    "load_device_uuid",
    "load_epoch_origin",
    "read_admin_token",
    "ready_line",
    "run",
    "serve",
    "server_string",
]

log = logging.getLogger(__name__)

STORE_FILE: Final = "igd.sqlite3"
DEVICE_UUID_FILE: Final = "device-uuid"
"""Base UUID of the devices' UDNs, made once: UDNs stay the same across restarts (GEN-08)."""
LOCK_FILE: Final = "igd.lock"
"""Held (flock) while a daemon uses the state directory: two daemons never share one."""
BOOT_ID_COUNTER: Final = "boot_id"
"""Store counter holding the last BOOTID.UPNP.ORG, so it grows on every start (SSDP-09)."""
EPOCH_ORIGIN_COUNTER: Final = "epoch_origin"
"""Store counter holding the NAT-PMP/PCP epoch's start (Unix seconds), set only with new state:
the epoch keeps counting across restarts and resets only when the mappings are lost (ST-29)."""
ADMIN_SOCKET_FILE: Final = "igd.sock"
"""The admin API's Unix socket in the state directory, unless admin_socket says otherwise."""
STATUS_PATH: Final = "/status"
"""Where the status page lives on the UPnP HTTP port; presentationURL is STATUS_PATH + "/"."""
ANNOUNCE_GROUP: Final = "224.0.0.1"
"""All-hosts group: NAT-PMP/PCP announcements go to its port 5350 (PCP-51, PMP-11)."""
ANNOUNCE_PORT: Final = 5350
MAX_TOKEN_FILE_BYTES: Final = 4096
HTTP_BACKLOG: Final = 1024
"""listen() backlog: miniupnpd's 5 overflows with 16 concurrent clients (reference section 7)."""
HTTP_SHUTDOWN_TIMEOUT_S: Final = 1.0
"""How long open HTTP requests may run on after stop."""
NATPMP_PORT: Final = 5351
"""NAT-PMP/PCP (RFC 6886/6887), reserved for the gateway even before it is served (ST-22)."""
EPHEMERAL_BIND_ATTEMPTS: Final = 8
"""Tries to find one ephemeral port free on every LAN address."""
STOP_STEP_TIMEOUT_S: Final = 5.0
"""Longest wait for one stop step (SSDP, HTTP, core) before moving on."""
AUTO_BACKENDS: Final = ("nftables", "userspace")
"""What `--backend auto` tries, in order, before falling back to memory."""
MODEL_NAME: Final = "igd"
MANUFACTURER: Final = "igd project"


class DaemonError(RuntimeError):
    """A runtime failure the operator must fix (port in use, unreadable state): one line."""


# ---- Small pieces, usable without a running daemon ----------------------------------------------


def server_string() -> str:
    """SERVER / USER-AGENT product tokens: `Linux/<release> UPnP/1.1 igd/<version>` (SSDP-08)."""
    return f"Linux/{os.uname().release} UPnP/1.1 igd/{__version__}"


def load_device_uuid(state_dir: Path) -> uuid.UUID:
    """The base UUID in `state_dir/device-uuid`, written once (atomically) when missing."""
    path = state_dir / DEVICE_UUID_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return _create_device_uuid(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise DaemonError(f"state_dir: cannot read {path}: {_reason(exc)}") from None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise DaemonError(
            f"state_dir: {path} does not hold a UUID; delete it to make a new one "
            "(control points will then see a new device)"
        ) from None


def _create_device_uuid(path: Path) -> uuid.UUID:
    value = uuid.uuid4()
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="ascii") as handle:
            handle.write(f"{value}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise DaemonError(f"state_dir: cannot write {path}: {_reason(exc)}") from None
    return value


def bump_boot_id(store: SqliteStore, now: float) -> int:
    """Next BOOTID (above the stored one, at least the clock's seconds), committed (SSDP-09)."""
    stored = store.load().counters.get(BOOT_ID_COUNTER)
    boot_id = next_boot_id(stored, floor=int(now))
    store.stage(StoreChanges(counters={BOOT_ID_COUNTER: boot_id}))
    try:
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return boot_id


def load_epoch_origin(store: SqliteStore, now: float) -> int:
    """The stored NAT-PMP/PCP epoch origin; with new state, `now`, committed (ST-29, PCP-55)."""
    stored = store.load().counters.get(EPOCH_ORIGIN_COUNTER)
    if stored is not None:
        return stored
    origin = int(now)
    store.stage(StoreChanges(counters={EPOCH_ORIGIN_COUNTER: origin}))
    try:
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return origin


def read_admin_token(path: Path) -> str:
    """The admin token: the first line of `path`, stripped; ConfigError when unusable."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError("admin_token_file", f"cannot read {path}: {_reason(exc)}") from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError("admin_token_file", f"{path} is over {MAX_TOKEN_FILE_BYTES} bytes")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError("admin_token_file", f"{path} is not UTF-8 text") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError("admin_token_file", f"{path} holds no token on its first line")
    if not token.isprintable():
        raise ConfigError("admin_token_file", f"the token in {path} is not printable text")
    return token


def _page_token(token: str | None) -> str | None:
    """The admin token if the status page accepts it (long, ASCII, no spaces), else None."""
    if token is None or len(token) < MIN_TOKEN_LENGTH or not token.isascii():
        return None
    if any(char.isspace() for char in token):
        return None
    return token


def ready_line(urls: Sequence[tuple[int, str]]) -> str:
    """The one line printed at start: each root's description URL (IGD:2 first), how to try it."""
    listed = "  ".join(f"IGD:{version} {url}" for version, url in urls)
    return f"igd {__version__} serving {listed}  (try: upnpc -u {urls[0][1]} -l)"


def _reason(exc: BaseException) -> str:
    """A short reason: the errno's text for OSError (asyncio wraps it in a longer message)."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


class VirtualWan:
    """WAN status of the virtual public connection: always up, no traffic, no known bit rate."""

    def counters(self) -> tuple[int, int, int, int]:
        """Bytes sent, bytes received, packets sent, packets received: none."""
        return (0, 0, 0, 0)

    def link_up(self) -> bool:
        """The virtual link is always up."""
        return True

    def max_bit_rates(self) -> tuple[int, int]:
        """Upstream and downstream bit rates: unknown (0)."""
        return (0, 0)


class InterfaceWan:
    """WAN status read from the kernel's counters of one interface (WANCommonInterfaceConfig)."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname

    def counters(self) -> tuple[int, int, int, int]:
        """Bytes sent, bytes received, packets sent, packets received; zeros if it vanished."""
        try:
            c = link_counters(self.ifname)
        except InterfaceError:
            return (0, 0, 0, 0)
        return (c.tx_bytes, c.rx_bytes, c.tx_packets, c.rx_packets)

    def link_up(self) -> bool:
        """Administratively and operationally up."""
        try:
            return link_counters(self.ifname).up
        except InterfaceError:
            return False

    def max_bit_rates(self) -> tuple[int, int]:
        """Upstream and downstream bit rates from the link speed; 0 when the driver has none."""
        try:
            speed = link_counters(self.ifname).speed_mbps
        except InterfaceError:
            return (0, 0)
        rate = (speed or 0) * 1_000_000
        return (rate, rate)


class TimedBackend:
    """A Backend that times each `apply` into a LatencyRecorder and forwards everything else."""

    def __init__(
        self,
        inner: Backend,
        observe: Callable[[float], None],
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self._observe = observe
        self._clock = clock

    async def start(
        self, mappings: tuple[NatMapping, ...], connections: tuple[AppliedConnection, ...]
    ) -> None:
        """Start the wrapped backend."""
        await self.inner.start(mappings, connections)

    async def apply(self, plan: Plan) -> None:
        """Apply the plan on the wrapped backend; its duration is observed, failed or not."""
        started = self._clock()
        try:
            await self.inner.apply(plan)
        finally:
            self._observe(self._clock() - started)

    async def stop(self) -> None:
        """Stop the wrapped backend."""
        await self.inner.stop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# ---- The daemon ---------------------------------------------------------------------------------


class Daemon:
    """One `igd serve`: `await start()`, then `await stop()` (idempotent, also after a failure)."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.core: SharingManager | None = None
        self.roots: tuple[RootDevice, ...] = ()
        self.lan_addresses: dict[str, tuple[IPv4Interface, ...]] = {}
        self.responders: list[SsdpResponder] = []
        self.http_port = 0
        self.boot_id = 0
        self.epoch_origin = 0
        self.pcp_ports: tuple[int, ...] = ()
        self.gena: GenaFrontEnd | None = None
        self.natpmp: NatPmpHandler | None = None
        self.pcp: PcpHandler | None = None
        self.endpoint: PortMappingEndpoint | None = None
        self.status_page: StatusPage | None = None
        self.admin_socket: Path | None = None
        self.admin_address: tuple[str, int] | None = None
        self.latency = LatencyRecorder()
        self._admin_token: str | None = None
        self._upnp_app: web.Application | None = None
        self._stack = AsyncExitStack()
        self._started = False

    # -- start ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bring everything up in order; on failure undo what started and raise."""
        if self._started:
            raise RuntimeError("the daemon was already started")
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        self.lan_addresses = {name: _lan_addresses(name) for name in config.lan}
        if config.wan is not None:
            try:
                interface_index(config.wan)
            except InterfaceError as exc:
                raise ConfigError("wan", str(exc)) from None
        if config.admin_token_file is not None:
            self._admin_token = read_admin_token(config.admin_token_file)
        state_dir = self._prepare_state_dir()
        base_uuid = load_device_uuid(state_dir)
        store = _open_store(state_dir / STORE_FILE)
        try:
            self.epoch_origin = load_epoch_origin(store, self.clock())
            self.boot_id = bump_boot_id(store, self.clock())
        except StoreError as exc:
            store.close()
            raise DaemonError(f"state_dir: {exc}") from None
        core = await self._open_core(store)
        self._stack.push_async_callback(self._step, "core", core.aclose)
        await self._assign_roles(core)
        self.core = core
        versions = (2, 1) if config.igd_version is None else (config.igd_version,)
        self.roots = tuple(RootDevice.create(v, base_uuid, f"/igd{v}") for v in versions)
        info = DeviceInfo(
            friendly_name=config.friendly_name,
            manufacturer=MANUFACTURER,
            model_name=MODEL_NAME,
            model_number=__version__,
            model_description="UPnP Internet Gateway Device for Linux",
            presentation_url=f"{STATUS_PATH}/",
        )
        config_ids = {root.version: render_documents(root, info).config_id for root in self.roots}
        sockets = self._open_port_mapping_sockets()
        await self._start_http(core, info)
        for ifname, addresses in self.lan_addresses.items():
            await self._start_ssdp(ifname, addresses, config_ids)
        await self._start_port_mapping(core, sockets)
        self._reserve_own_ports(core)
        await self._start_admin(core, state_dir)
        log.debug("started with BOOTID %d, epoch origin %d", self.boot_id, self.epoch_origin)

    def _prepare_state_dir(self) -> Path:
        state_dir = self.config.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            lock = (state_dir / LOCK_FILE).open("a")
        except OSError as exc:
            raise ConfigError("state_dir", f"cannot use {state_dir}: {_reason(exc)}") from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise DaemonError(
                f"state_dir: {state_dir} is in use by another igd (lock {LOCK_FILE})"
            ) from None
        self._stack.callback(lock.close)
        return state_dir

    def _connection_source(self) -> ConnectionSource:
        """Netlink for the configured interfaces; without a WAN, plus the virtual one."""
        config = self.config
        names = [*config.lan, *([config.wan] if config.wan else [])]
        netlink = NetlinkConnectionSource(ifnames=names)
        if config.wan is not None:
            return netlink
        addresses = [IPv4Interface(config.external_ip)] if config.external_ip else []
        virtual = make_connection(
            VIRTUAL_WAN,
            addresses=addresses,
            media_type=MediaType.LAN,
            device_name="virtual",
        )
        return CombinedConnectionSource([netlink, StaticConnectionSource([virtual])])

    def _backend(self) -> Backend:
        """The configured data plane; `auto` takes the first of AUTO_BACKENDS that works here.

        A backend asked for by name that cannot work here is a ConfigError naming why.
        """
        wanted = self.config.backend
        for name in AUTO_BACKENDS if wanted == "auto" else (wanted,):
            problem = self._backend_problem(name)
            if problem is None:
                return self._make_backend(name)
            if wanted != "auto":
                raise ConfigError("backend", f"{name} cannot be used here: {problem}")
            log.debug("backend auto: not %s, %s", name, problem)
        return MemoryBackend()

    def _backend_problem(self, name: str) -> str | None:
        """Why backend `name` cannot run here, or None."""
        if name == "nftables":
            if self.config.wan is None:
                return "it needs a real WAN interface (--wan)"
            return nftables_unusable_reason()
        if name == "userspace":
            return userspace_unusable_reason()
        return None

    def _make_backend(self, name: str) -> Backend:
        if name == "nftables":
            return NftablesBackend(clock=self.clock, table=self.config.nft_table)
        if name == "userspace":
            return UserspaceBackend()
        return MemoryBackend()

    def policy_config(self, *, http_port: int | None = None) -> PolicyConfig:
        """The operator's policy plus the gateway's own ports as reserved (ST-22)."""
        config = self.config
        reserved = set(config.reserved_ports)
        reserved.add((IPProtocol.UDP, NATPMP_PORT))
        if config.ssdp_port:
            reserved.add((IPProtocol.UDP, config.ssdp_port))
        reserved.update((IPProtocol.UDP, r.port) for r in self.responders if r.port)
        if config.pcp_port:
            reserved.add((IPProtocol.UDP, config.pcp_port))
        reserved.update((IPProtocol.UDP, port) for port in self.pcp_ports if port)
        port = config.http_port if http_port is None else http_port
        if port:
            reserved.add((IPProtocol.TCP, port))
        if config.admin_port:
            reserved.add((IPProtocol.TCP, config.admin_port))
        return PolicyConfig(
            secure_mode=config.secure_mode,
            rules=config.rules,
            quota_per_client=config.quota_per_client,
            max_mappings=config.max_mappings,
            reserved_ports=frozenset(reserved),
            max_lease=float(config.max_lease_s),
        )

    async def _open_core(self, store: SqliteStore) -> SharingManager:
        source = self._connection_source()
        try:
            return await SharingManager.open(
                backend=TimedBackend(self._backend(), self.latency.observe),
                store=store,
                source=source,
                policy=self.policy_config(),
                external_address=self.config.external_ip,
                clock=self.clock,
                local_ports=ListeningPorts(),
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await source.aclose()
            store.close()
            if isinstance(exc, NatError):
                raise DaemonError(f"cannot start the NAT core: {exc}") from None
            raise

    async def _assign_roles(self, core: SharingManager) -> None:
        """The WAN (or the virtual one) public, every LAN private, any other role dropped."""
        config = self.config
        wan = config.wan or VIRTUAL_WAN
        try:
            public = core.find_connection(ifname=wan)
            lans = [core.find_connection(ifname=name) for name in config.lan]
            await core.share(public, lans[0])
            for lan in lans[1:]:
                await core.enable_sharing(lan.guid, SharingConnectionType.PRIVATE)
        except NatError as exc:
            raise ConfigError("wan" if config.wan else "lan", str(exc)) from None

    async def _start_http(self, core: SharingManager, info: DeviceInfo) -> None:
        config = self.config
        addresses = [a for group in self.lan_addresses.values() for a in group]
        wan = InterfaceWan(config.wan) if config.wan else VirtualWan()
        gena = GenaFrontEnd(
            core,
            self.roots,
            link_up=wan.link_up,
            allow_private_external=config.allow_private_external,
        )
        await gena.start()
        self._stack.push_async_callback(self._step, "GENA", gena.stop)  # after HTTP has closed
        self.gena = gena
        app = build_app(
            UpnpHttpConfig(
                core=core,
                roots=self.roots,
                device_info=info,
                wan=wan,
                lan_networks=_networks(addresses),
                allowed_hosts=frozenset(str(a.ip) for a in addresses),
                server=server_string(),
                allow_private_external=config.allow_private_external,
                started_at=self.clock(),
                origin_checked_paths=(f"{STATUS_PATH}/api/",),
            ),
            event_handler=gena.handle,
        )
        page = StatusPage(
            core,
            wan_counters=wan.counters,
            admin_token=_page_token(self._admin_token),
            title=config.friendly_name,
            base_path=STATUS_PATH,
        )
        if self._admin_token is not None and page.admin_token is None:
            log.warning(
                "the status page is read-only: its admin actions need a token of at least %d "
                "ASCII characters without spaces",
                MIN_TOKEN_LENGTH,
            )
        page.install(app)
        self.status_page = page
        self._upnp_app = app
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        self._stack.push_async_callback(self._step, "HTTP", runner.cleanup)
        attempts = EPHEMERAL_BIND_ATTEMPTS if config.http_port == 0 else 1
        for attempt in range(attempts):
            try:
                self.http_port = await _bind_all(
                    runner, [a.ip for a in addresses], config.http_port
                )
                return
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    continue
                where = f"{exc.filename}:{config.http_port}" if exc.filename else "the LAN"
                raise DaemonError(f"http_port: cannot listen on {where}: {_reason(exc)}") from None

    async def _start_ssdp(
        self, ifname: str, addresses: tuple[IPv4Interface, ...], config_ids: dict[int, int]
    ) -> None:
        port = self.config.ssdp_port
        responder = SsdpResponder(
            ifname,
            addresses,
            self.roots,
            self.http_port,
            boot_id=self.boot_id,
            config_ids=config_ids,
            server=server_string(),
            port=port,
        )
        try:
            await responder.start()
        except (OSError, ValueError) as exc:
            raise DaemonError(
                f"ssdp_port: cannot listen on UDP port {port} on {ifname}: {_reason(exc)}"
            ) from None
        self.responders.append(responder)
        self._stack.push_async_callback(self._step, f"SSDP on {ifname}", responder.stop)

    def _open_port_mapping_sockets(self) -> list[socket.socket]:
        """UDP pcp_port on every LAN address, one socket each (PCP-02), bound before HTTP."""
        port = self.config.pcp_port
        sockets: list[socket.socket] = []
        self._stack.callback(_close_all, sockets)  # after the endpoint has stopped reading
        for ifname, addresses in self.lan_addresses.items():
            for address in addresses:
                try:
                    sockets.append(open_port_mapping_socket(ifname, address.ip, port=port))
                except (OSError, InterfaceError) as exc:
                    raise DaemonError(
                        f"pcp_port: cannot listen on UDP port {port} on {ifname} "
                        f"({address.ip}): {_reason(exc)}"
                    ) from None
        self.pcp_ports = tuple(int(sock.getsockname()[1]) for sock in sockets)
        return sockets

    async def _start_port_mapping(
        self, core: SharingManager, sockets: Sequence[socket.socket]
    ) -> None:
        """NAT-PMP and PCP on the sockets opened before: the endpoint, its handlers, announces."""
        config = self.config
        networks = _networks([a for group in self.lan_addresses.values() for a in group])
        natpmp = None
        if config.natpmp:
            natpmp = NatPmpHandler(
                core,
                epoch_origin=self.epoch_origin,
                clock=self.clock,
                lan_networks=networks,
                max_lifetime_s=config.natpmp_max_lifetime_s,
                allow_private_external=config.allow_private_external,
            )
        pcp = PcpHandler(
            core,
            epoch_origin=self.epoch_origin,
            clock=self.clock,
            lan_networks=networks,
            allow_private_external=config.allow_private_external,
        )
        endpoint = PortMappingEndpoint(
            sockets,
            pcp=pcp,
            natpmp=natpmp,
            announce=functools.partial(_announce, tuple(sockets)),
            natpmp_announcement=natpmp.announcement if natpmp is not None else None,
            rate_per_s=float(self.config.portmap_rate_per_s),
            rate_burst=float(self.config.portmap_burst),
        )
        await endpoint.start()
        self._stack.push_async_callback(self._step, "NAT-PMP/PCP", endpoint.stop)
        self.natpmp, self.pcp, self.endpoint = natpmp, pcp, endpoint

    async def _start_admin(self, core: SharingManager, state_dir: Path) -> None:
        """The admin API, last: its socket existing means the daemon is ready."""
        config = self.config
        sources = MetricsSources(
            requests=merge_request_counts(
                self._upnp_requests, self._natpmp_requests, self._pcp_requests
            ),
            ssdp=self._ssdp_counters,
            subscriptions=lambda: self.gena.active if self.gena is not None else 0,
            backend_latency=self.latency.snapshot,
        )
        app = build_admin_app(
            core,
            token=self._admin_token,
            metrics_sources=sources,
            started_at=self.clock(),
            version=__version__,
            clock=self.clock,
        )
        path = config.admin_socket or state_dir / ADMIN_SOCKET_FILE
        try:
            server = await start_admin_server(app, socket_path=path, tcp_port=config.admin_port)
        except OSError as exc:
            key = "admin_port" if exc.errno == errno.EADDRINUSE else "admin_socket"
            where = f"127.0.0.1:{config.admin_port}" if key == "admin_port" else str(path)
            raise DaemonError(f"{key}: cannot listen on {where}: {_reason(exc)}") from None
        self._stack.push_async_callback(self._step, "admin API", server.close)
        self.admin_socket = server.socket_path
        self.admin_address = server.tcp_address

    def _upnp_requests(self) -> RequestCounts:
        """UPnP actions as ("upnp", action, result), summed over the service kinds."""
        counts: Counter[tuple[str, str, str]] = Counter()
        if self._upnp_app is not None:
            for (_kind, action, result), count in self._upnp_app[UPNP_STATS].actions.items():
                counts[("upnp", action, result)] += count
        return counts

    def _natpmp_requests(self) -> RequestCounts:
        """NAT-PMP answers as ("natpmp", "request", RESULT), drops as ("natpmp", "dropped", why)."""
        counts: Counter[tuple[str, str, str]] = Counter()
        if self.natpmp is not None:
            stats = self.natpmp.stats
            for result, count in stats.answered.items():
                counts[("natpmp", "request", result.name)] += count
            for reason, count in stats.dropped.items():
                counts[("natpmp", "dropped", reason)] += count
        return counts

    def _pcp_requests(self) -> RequestCounts:
        """PCP answers as ("pcp", "request", RESULT), drops as ("pcp", "dropped", why)."""
        counts: Counter[tuple[str, str, str]] = Counter()
        if self.pcp is not None:
            for name, count in self.pcp.stats.as_dict().items():
                if name.startswith("result_"):
                    counts[("pcp", "request", name.removeprefix("result_"))] += count
                elif name.startswith("dropped_") and count:
                    counts[("pcp", "dropped", name.removeprefix("dropped_"))] += count
        return counts

    def _ssdp_counters(self) -> dict[str, int]:
        """SsdpCounters summed over the responders."""
        total: Counter[str] = Counter()
        for responder in self.responders:
            total.update(responder.counters.as_dict())
        return dict(total)

    def _reserve_own_ports(self, core: SharingManager) -> None:
        """Reserve the ports bound just now (ephemeral ones were unknown when the core opened)."""
        policy = self.policy_config(http_port=self.http_port)
        if policy != core.policy.config:
            core.set_policy(policy)

    @property
    def backend_name(self) -> str:
        """The data plane in use ("nftables", "userspace", "memory"); "" before start."""
        return self.core.backend.name if self.core is not None else ""

    # -- what it serves ------------------------------------------------------------------------

    def description_urls(self) -> tuple[tuple[int, str], ...]:
        """(IGD version, rootDesc URL) on the first LAN address, IGD:2 first."""
        first = next(iter(self.lan_addresses.values()))[0].ip
        return tuple(
            (root.version, f"http://{first}:{self.http_port}{root.description_path}")
            for root in self.roots
        )

    # -- reload --------------------------------------------------------------------------------

    def reload(self, new: Config) -> tuple[str, ...]:
        """Apply the live keys of `new` (policy for new requests only); the keys needing a restart.

        Existing mappings are never touched: a lowered quota or a stricter rule applies to the
        requests made from now on.
        """
        old = self.config
        changed = changed_keys(old, new)
        live = [key for key in changed if key in LIVE_KEYS]
        later = tuple(key for key in changed if key not in LIVE_KEYS)
        if not changed:
            log.info("reload: the configuration is unchanged")
            return ()
        self.config = dataclasses.replace(old, **{key: getattr(new, key) for key in live})
        if "log_level" in live:
            logging.getLogger().setLevel(new.log_level.upper())
        if self.core is not None:
            policy = self.policy_config(http_port=self.http_port)
            if policy != self.core.policy.config:
                self.core.set_policy(policy)
        if self.natpmp is not None:
            self.natpmp.max_lifetime_s = self.config.natpmp_max_lifetime_s
        if live:
            log.info("reload: applied %s", ", ".join(live))
        if later:
            log.warning("reload: restart needed for: %s", ", ".join(later))
        return later

    # -- stop ----------------------------------------------------------------------------------

    async def stop(self) -> None:
        """SSDP byebye, HTTP closed, core closed (its state is already committed); idempotent."""
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()
        self.responders.clear()
        self.core = None
        self.gena = self.natpmp = self.pcp = self.endpoint = None
        self.status_page = None
        self._upnp_app = None

    @staticmethod
    async def _step(what: str, close: Callable[[], Awaitable[None]]) -> None:
        """One stop step, bounded in time; a failure is logged and the next step still runs."""
        try:
            async with asyncio.timeout(STOP_STEP_TIMEOUT_S):
                await close()
        except TimeoutError:
            log.error("stopping %s took longer than %.0f s; moving on", what, STOP_STEP_TIMEOUT_S)
        except Exception:
            log.exception("stopping %s failed", what)


def _lan_addresses(ifname: str) -> tuple[IPv4Interface, ...]:
    try:
        return interface_ipv4(ifname)
    except InterfaceError as exc:
        raise ConfigError("lan", str(exc)) from None


def _close_all(sockets: Sequence[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def _announce(sockets: Sequence[socket.socket], data: bytes) -> None:
    """Multicast one announcement from every socket to 224.0.0.1:5350 (PCP-51, PMP-11).

    A NAT-PMP one (version 0) also goes to port 5351, for clients of the first drafts (PMP-13).
    Every socket is tried; the first error is raised afterwards, for the endpoint to count.
    """
    ports = (ANNOUNCE_PORT, NATPMP_PORT) if data[:1] == b"\x00" else (ANNOUNCE_PORT,)
    error: OSError | None = None
    for sock in sockets:
        for port in ports:
            try:
                sock.sendto(data, (ANNOUNCE_GROUP, port))
            except OSError as exc:
                error = error or exc
    if error is not None:
        raise error


def _open_store(path: Path) -> SqliteStore:
    try:
        return SqliteStore(path)
    except StoreError as exc:
        raise DaemonError(f"state_dir: {exc}") from None


async def _bind_all(runner: web.AppRunner, hosts: Sequence[IPv4Address], port: int) -> int:
    """One TCPSite per address, all on one port (the first one's when `port` is 0)."""
    started: list[web.TCPSite] = []
    try:
        for host in hosts:
            site = web.TCPSite(
                runner,
                str(host),
                port,
                backlog=HTTP_BACKLOG,
                reuse_address=True,
            )
            try:
                await site.start()
            except OSError as exc:
                exc.filename = str(host)
                raise
            started.append(site)
            port = site.port
    except BaseException:
        for site in started:
            await site.stop()
        raise
    return port


def _networks(addresses: Sequence[IPv4Interface]) -> tuple[IPv4Network, ...]:
    return tuple(dict.fromkeys(a.network for a in addresses))


# ---- Running it ---------------------------------------------------------------------------------


async def serve(
    config: Config,
    *,
    on_ready: Callable[[Daemon], None] | None = None,
    stop: asyncio.Event | None = None,
    reload: Callable[[], Config] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set), then stop cleanly; SIGHUP calls `reload`."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    daemon = Daemon(config)
    running = False

    def hangup() -> None:
        if not running:
            log.warning("reload: SIGHUP ignored, the daemon is not running yet")
            return
        if reload is None:
            log.warning("reload: SIGHUP ignored, there is no configuration to load again")
            return
        try:
            new = reload()
        except ConfigError as exc:
            log.error("reload: %s; the running configuration stays", exc)
            return
        try:
            daemon.reload(new)
        except Exception as exc:  # our own bug: keep serving with what was applied
            log.error("reload: failed: %s", _reason(exc))

    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        await daemon.start()
        running = True
        log.info(
            "running: backend %s, public connection %s, LAN %s, HTTP port %d, SSDP port %s, "
            "NAT-PMP/PCP port %s, admin socket %s, BOOTID %d, state in %s",
            daemon.backend_name,
            config.wan or f"{VIRTUAL_WAN!r} (virtual)",
            ", ".join(config.lan),
            daemon.http_port,
            ", ".join(str(r.port) for r in daemon.responders),
            ", ".join(str(port) for port in dict.fromkeys(daemon.pcp_ports)),
            daemon.admin_socket,
            daemon.boot_id,
            config.state_dir,
        )
        if daemon.backend_name == "nftables" and ipv4_forwarding() is False:
            log.warning(
                "net.ipv4.ip_forward is 0: mapped and shared traffic will not be routed "
                "(sysctl -w net.ipv4.ip_forward=1)"
            )
        if on_ready is not None:
            on_ready(daemon)
        await stop.wait()
        log.info("stopping")
    finally:
        await daemon.stop()
        for signum in (*signals, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    log.info("stopped")


def run(
    config: Config, *, out: TextIO | None = None, reload: Callable[[], Config] | None = None
) -> None:
    """`igd serve`: print the ready line to `out` (default stdout), serve until a signal."""

    def ready(daemon: Daemon) -> None:
        stream = out if out is not None else sys.stdout
        print(ready_line(daemon.description_urls()), file=stream, flush=True)

    asyncio.run(serve(config, on_ready=ready, reload=reload))
