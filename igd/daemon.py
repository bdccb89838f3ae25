"""Composition root of `igd serve`: picks the backend, builds the core and the front-ends.

Start order: interfaces checked -> state directory (lock, device UUID, store, BOOTID) -> core
(connections, policy, backend; sharing roles assigned) -> HTTP (description, SOAP) on every LAN
address -> SSDP per LAN interface (byebye, then alive). Stop runs the same steps backwards: SSDP
byebye, HTTP closed, core closed. Every change is committed by the core when it is made, so a
`kill -9` loses nothing that was acknowledged.

Failures carry one line for the operator: ConfigError (exit 2) for a configuration the system
contradicts (no such interface, unusable state directory), DaemonError (exit 1) for the rest
(a port in use, an unreadable store).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Final, TextIO

from aiohttp import web

from igd import __version__
from igd.config import VIRTUAL_WAN, Config, ConfigError
from igd.natcore import (
    Backend,
    ConnectionSource,
    IPProtocol,
    MediaType,
    NatError,
    PolicyConfig,
    SharingConnectionType,
    SharingManager,
    SqliteStore,
    StaticConnectionSource,
    StoreError,
    make_connection,
)
from igd.natcore.backends.memory import MemoryBackend
from igd.natcore.backends.netlink import NetlinkConnectionSource
from igd.natcore.backends.nftables import NftablesBackend, nftables_unusable_reason
from igd.natcore.backends.userspace import UserspaceBackend, userspace_unusable_reason
from igd.natcore.connections import CombinedConnectionSource
from igd.natcore.store import StoreChanges
from igd.netif import (
    InterfaceError,
    ListeningPorts,
    interface_index,
    interface_ipv4,
    link_counters,
)
from igd.soap.routes import UpnpHttpConfig, build_app
from igd.ssdp.responder import SsdpResponder
from igd.ssdp.schedule import next_boot_id
from igd.upnp import DeviceInfo, RootDevice, render_documents

__all__ = [
    "BOOT_ID_COUNTER",
    "DEVICE_UUID_FILE",
    "HTTP_BACKLOG",
    "LOCK_FILE",
    "NATPMP_PORT",
    "STORE_FILE",
    "Daemon",
    "DaemonError",
    "InterfaceWan",
    "VirtualWan",
    "bump_boot_id",
    "load_device_uuid",
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
        state_dir = self._prepare_state_dir()
        base_uuid = load_device_uuid(state_dir)
        store = _open_store(state_dir / STORE_FILE)
        try:
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
        )
        config_ids = {root.version: render_documents(root, info).config_id for root in self.roots}
        await self._start_http(core, info)
        for ifname, addresses in self.lan_addresses.items():
            await self._start_ssdp(ifname, addresses, config_ids)
        self._reserve_own_ports(core)
        log.debug("started with BOOTID %d", self.boot_id)

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
        port = config.http_port if http_port is None else http_port
        if port:
            reserved.add((IPProtocol.TCP, port))
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
                backend=self._backend(),
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
        app = build_app(
            UpnpHttpConfig(
                core=core,
                roots=self.roots,
                device_info=info,
                wan=InterfaceWan(config.wan) if config.wan else VirtualWan(),
                lan_networks=_networks(addresses),
                allowed_hosts=frozenset(str(a.ip) for a in addresses),
                server=server_string(),
                allow_private_external=config.allow_private_external,
                started_at=self.clock(),
            )
        )
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

    # -- stop ----------------------------------------------------------------------------------

    async def stop(self) -> None:
        """SSDP byebye, HTTP closed, core closed (its state is already committed); idempotent."""
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()
        self.responders.clear()
        self.core = None

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
) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set), then stop cleanly."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    daemon = Daemon(config)
    try:
        await daemon.start()
        if on_ready is not None:
            on_ready(daemon)
        log.info(
            "running: backend %s, public connection %s, LAN %s, "
            "HTTP port %d, SSDP port %s, BOOTID %d, state in %s",
            daemon.backend_name,
            config.wan or f"{VIRTUAL_WAN!r} (virtual)",
            ", ".join(config.lan),
            daemon.http_port,
            ", ".join(str(r.port) for r in daemon.responders),
            daemon.boot_id,
            config.state_dir,
        )
        await stop.wait()
        log.info("stopping")
    finally:
        await daemon.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)
    log.info("stopped")


def run(config: Config, *, out: TextIO | None = None) -> None:
    """`igd serve`: print the ready line to `out` (default stdout), serve until a signal."""

    def ready(daemon: Daemon) -> None:
        stream = out if out is not None else sys.stdout
        print(ready_line(daemon.description_urls()), file=stream, flush=True)

    asyncio.run(serve(config, on_ready=ready))
