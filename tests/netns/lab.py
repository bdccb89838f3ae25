"""A network-namespace lab for root tests: a gateway, two LAN hosts and an internet host.

Follows architecture.md section 6 (read it first). Topology, every link created directly inside
the namespaces (nothing in the root namespace but the guard route):

    wan   eth0 198.19.0.100/24, default via 198.19.0.1
      | veth
    gw    wan0 198.19.0.1/24 | br-lan 198.18.0.1/24 (bridge, mcast_snooping 0, stp off)
          ip_forward=1, 224.0.0.0/4 dev br-lan, bridge-nf-call-* = 0 (when br_netfilter exists)
      | veth ports lan1p, lan2p enslaved to br-lan
    lan1  eth0 198.18.0.10/24, default via 198.18.0.1, 224.0.0.0/4 dev eth0
    lan2  eth0 198.18.0.11/24, same

Safety: `blackhole 198.18.0.0/15` is installed in the root namespace first (kept afterwards, it is
idempotent and harmless), so a lab command run outside the lab by mistake fails locally; each
namespace's resolver points at 127.0.0.1 (/etc/netns/<ns>/resolv.conf) while the lab exists;
names carry a per-run prefix `igdlab-<pid>-<hex>` so runs coexist, and labs left by a killed run
(creator pid gone) are removed by the next build. Every command has a timeout; every process
started with `spawn` is tracked; `teardown` always runs everything (kill tracked processes, kill
whatever else lives in the namespaces, delete them, remove the resolver directories) and raises
LabError at the end if anything could not be cleaned.

Use (as root; the `lab` / `module_lab` fixtures of tests/netns/conftest.py do this):

    with Lab() as lab:                       # builds; tears down on exit, even on failure
        lab.run(lab.lan1, "ip", "-br", "addr")          # a command inside a namespace
        proc = lab.spawn(lab.gw, sys.executable, "server.py")   # tracked, killed at teardown
        proc.read_line(timeout_s=5)                      # bounded wait for its output
        sock = lab.socket(lab.lan1, socket.AF_INET, socket.SOCK_DGRAM)  # a socket of that ns
        index = lab.ifindex(lab.lan1, "eth0")
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

__all__ = [
    "BRIDGE_PORTS",
    "GUARD_ROUTE",
    "GW_LAN",
    "GW_WAN",
    "GW_WAN_IF",
    "HOST_IF",
    "LAN1",
    "LAN2",
    "LAN_BRIDGE",
    "LAN_NETWORK",
    "MULTICAST_ROUTE",
    "WAN_HOST",
    "WAN_NETWORK",
    "Lab",
    "LabError",
    "LabProcess",
    "install_guard_route",
    "lab_skip_reason",
    "remove_stale_labs",
]

# ---- Addresses and names (architecture.md section 6) --------------------------------------------
LAN_NETWORK: Final = IPv4Network("198.18.0.0/24")
WAN_NETWORK: Final = IPv4Network("198.19.0.0/24")
GW_LAN: Final = IPv4Interface("198.18.0.1/24")
LAN1: Final = IPv4Interface("198.18.0.10/24")
LAN2: Final = IPv4Interface("198.18.0.11/24")
GW_WAN: Final = IPv4Interface("198.19.0.1/24")
WAN_HOST: Final = IPv4Interface("198.19.0.100/24")
GUARD_ROUTE: Final = "198.18.0.0/15"
"""Blackholed in the root namespace: lab addresses never leave through a real interface."""
MULTICAST_ROUTE: Final = "224.0.0.0/4"

LAN_BRIDGE: Final = "br-lan"
"""The gateway's LAN interface (a bridge)."""
GW_WAN_IF: Final = "wan0"
"""The gateway's WAN interface."""
HOST_IF: Final = "eth0"
"""The only interface of lan1, lan2 and wan."""
BRIDGE_PORTS: Final = {"lan1": "lan1p", "lan2": "lan2p"}
"""Gateway-side veth of each LAN host, enslaved to br-lan."""
ROLES: Final = ("gw", "lan1", "lan2", "wan")

# ---- Bounds -------------------------------------------------------------------------------------
COMMAND_TIMEOUT_S: Final = 10.0
"""Longest any single lab command may run."""
UP_TIMEOUT_S: Final = 5.0
"""Longest wait for a link's operstate to become UP (veth peers come up asynchronously)."""
TERM_GRACE_S: Final = 2.0
"""After SIGTERM, wait this long before SIGKILL."""
POLL_S: Final = 0.02

PREFIX_BASE: Final = "igdlab"
_NAME = re.compile(rf"^({PREFIX_BASE}-(\d+)-[0-9a-f]{{6}})-({'|'.join(ROLES)})$")
NETNS_RUN_DIR: Final = Path("/run/netns")
NETNS_ETC_DIR: Final = Path("/etc/netns")
RESOLV_CONF: Final = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
_CLONE_NEWNET: Final = 0x40000000
_BRIDGE_NF: Final = ("iptables", "ip6tables", "arptables")

T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not be built, a command failed, or teardown left something behind."""


def lab_skip_reason() -> str | None:
    """Why the netns suite cannot run here (not root, no iproute2), or None when it can."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (CI runs them as root)"
    if shutil.which("ip") is None:
        return "network-namespace tests need iproute2's `ip`"
    if not Path("/proc/self/ns/net").exists():
        return "this kernel has no network namespaces"
    return None


def _host(*argv: str, timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """A command in the root namespace (only `ip netns` and the guard route use this)."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def install_guard_route() -> None:
    """`ip route add blackhole 198.18.0.0/15` in the root namespace; an existing one is fine."""
    result = _host("ip", "route", "add", "blackhole", GUARD_ROUTE)
    if result.returncode != 0 and "File exists" not in result.stderr:
        raise LabError(f"cannot install the guard route: {result.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _list_namespaces() -> list[str]:
    result = _host("ip", "netns", "list")
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _namespace_pids(ns: str) -> list[int]:
    result = _host("ip", "netns", "pids", ns)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def _signal_all(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _empty_namespace(ns: str) -> list[int]:
    """TERM, then KILL, every process in `ns` (bounded); the pids that survived both."""
    pids = _namespace_pids(ns)
    if not pids:
        return []
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + TERM_GRACE_S
    while pids and time.monotonic() < deadline:
        time.sleep(POLL_S)
        pids = _namespace_pids(ns)
    if pids:
        _signal_all(pids, signal.SIGKILL)
        deadline = time.monotonic() + TERM_GRACE_S
        while pids and time.monotonic() < deadline:
            time.sleep(POLL_S)
            pids = _namespace_pids(ns)
    return pids


def _remove_namespace(ns: str) -> list[str]:
    """Kill its processes, delete it and its resolver directory; the problems met."""
    problems: list[str] = []
    if (NETNS_RUN_DIR / ns).exists():
        survivors = _empty_namespace(ns)
        if survivors:
            problems.append(f"{ns}: processes {survivors} survived SIGKILL")
        result = _host("ip", "netns", "del", ns)
        if result.returncode != 0 and (NETNS_RUN_DIR / ns).exists():
            problems.append(f"{ns}: ip netns del: {result.stderr.strip()}")
    etc = NETNS_ETC_DIR / ns
    try:
        shutil.rmtree(etc)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"{etc}: {exc}")
    return problems


def remove_stale_labs() -> list[str]:
    """Remove labs whose creating process is gone (a killed run); returns the namespaces removed."""
    candidates = set(_list_namespaces())
    if NETNS_ETC_DIR.is_dir():
        candidates.update(entry.name for entry in NETNS_ETC_DIR.iterdir())
    removed = []
    for name in sorted(candidates):
        match = _NAME.match(name)
        if match and not _pid_alive(int(match.group(2))):
            _remove_namespace(name)
            removed.append(name)
    return removed


@dataclass
class LabProcess:
    """A process started in a lab namespace: line I/O with bounded waits, stderr in a file.

    stdout is a pipe: read what the process prints (`read_line`) or it may block once the pipe
    buffer (64 KiB) is full. stderr goes to a temporary file (`stderr_text`), never a pipe.
    """

    ns: str
    argv: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    stderr_path: Path
    _buffer: bytearray = field(default_factory=bytearray)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def read_line(self, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """The next stdout line (without its newline); TimeoutError, or LabError at EOF."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line from {self.argv[0]} in {timeout_s} s{self._tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise LabError(
                    f"{self.argv[0]} closed stdout (exit {self.popen.poll()}){self._tail()}"
                )
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line.decode(errors="replace")

    def read_json(self, timeout_s: float = COMMAND_TIMEOUT_S) -> dict[str, object]:
        """The next stdout line parsed as a JSON object."""
        value = json.loads(self.read_line(timeout_s))
        if not isinstance(value, dict):
            raise LabError(f"expected a JSON object, got {value!r}")
        return value

    def send_line(self, text: str) -> None:
        """Write `text` and a newline to stdin."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(text.encode() + b"\n")
        self.popen.stdin.flush()

    def stderr_text(self) -> str:
        """What the process wrote to stderr so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, timeout_s: float = COMMAND_TIMEOUT_S) -> int:
        """Its exit status, waiting at most `timeout_s` (subprocess.TimeoutExpired after)."""
        return self.popen.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = TERM_GRACE_S) -> int | None:
        """Close stdin, SIGTERM, then SIGKILL after `timeout_s`; the exit status (idempotent)."""
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                if self.popen.stdin is not None:
                    self.popen.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=timeout_s)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return self.popen.poll()

    def _tail(self) -> str:
        text = self.stderr_text().strip()
        return f"; stderr:\n{text[-2000:]}" if text else ""


class Lab:
    """The four-namespace lab; `Lab()` only names it, `build()` (or `with Lab()`) creates it."""

    def __init__(self, prefix: str | None = None) -> None:
        """Names namespaces `<prefix>-gw|lan1|lan2|wan`; default prefix `igdlab-<pid>-<hex6>`."""
        self.prefix = prefix or f"{PREFIX_BASE}-{os.getpid()}-{secrets.token_hex(3)}"
        if not re.fullmatch(r"[A-Za-z0-9-]{1,40}", self.prefix):
            raise ValueError(f"bad lab prefix {self.prefix!r}")
        self.gw = f"{self.prefix}-gw"
        self.lan1 = f"{self.prefix}-lan1"
        self.lan2 = f"{self.prefix}-lan2"
        self.wan = f"{self.prefix}-wan"
        self.namespaces: tuple[str, ...] = (self.gw, self.lan1, self.lan2, self.wan)
        self._created: list[str] = []
        self._processes: list[LabProcess] = []
        self._sockets: list[socket.socket] = []
        self._logs: Path | None = None
        self._built = False
        self._torn_down = False

    # ---- Context manager -------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.build()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.teardown()

    # ---- Building ----------------------------------------------------------------------------

    def build(self) -> Lab:
        """Create the whole topology and wait until every link is up; tears down on failure."""
        reason = lab_skip_reason()
        if reason is not None:
            raise LabError(reason)
        if self._built:
            raise LabError("lab already built")
        self._built = True
        try:
            self._logs = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
            install_guard_route()
            remove_stale_labs()
            for ns in self.namespaces:
                self._add_namespace(ns)
            self._build_links()
            self._wait_all_up()
        except BaseException:
            with contextlib.suppress(LabError):
                self.teardown()
            raise
        return self

    def _add_namespace(self, ns: str) -> None:
        etc = NETNS_ETC_DIR / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(RESOLV_CONF)
        result = _host("ip", "netns", "add", ns)
        if result.returncode != 0:
            shutil.rmtree(etc, ignore_errors=True)
            raise LabError(f"ip netns add {ns}: {result.stderr.strip()}")
        self._created.append(ns)
        self.ip(ns, "link", "set", "lo", "multicast", "on", "up")

    def _build_links(self) -> None:
        gw = self.gw
        self.ip(gw, "link", "add", LAN_BRIDGE, "type", "bridge", "mcast_snooping", "0",
                "stp_state", "0", "forward_delay", "0")  # fmt: skip
        for role, host in (("lan1", self.lan1), ("lan2", self.lan2)):
            port = BRIDGE_PORTS[role]
            self.ip(gw, "link", "add", port, "type", "veth", "peer", "name", HOST_IF, "netns", host)
            self.ip(gw, "link", "set", port, "master", LAN_BRIDGE, "multicast", "on", "up")
            address = LAN1 if role == "lan1" else LAN2
            self.ip(host, "link", "set", HOST_IF, "multicast", "on", "up")
            self.ip(host, "addr", "add", str(address), "dev", HOST_IF)
            self.ip(host, "route", "add", "default", "via", str(GW_LAN.ip))
            self.ip(host, "route", "add", MULTICAST_ROUTE, "dev", HOST_IF)
        self.ip(gw, "addr", "add", str(GW_LAN), "dev", LAN_BRIDGE)
        self.ip(gw, "link", "set", LAN_BRIDGE, "multicast", "on", "up")
        self.ip(gw, "route", "add", MULTICAST_ROUTE, "dev", LAN_BRIDGE)
        self.ip(gw, "link", "add", GW_WAN_IF, "type", "veth", "peer", "name", HOST_IF,
                "netns", self.wan)  # fmt: skip
        self.ip(gw, "addr", "add", str(GW_WAN), "dev", GW_WAN_IF)
        self.ip(gw, "link", "set", GW_WAN_IF, "multicast", "on", "up")
        self.ip(self.wan, "addr", "add", str(WAN_HOST), "dev", HOST_IF)
        self.ip(self.wan, "link", "set", HOST_IF, "multicast", "on", "up")
        self.ip(self.wan, "route", "add", "default", "via", str(GW_WAN.ip))
        self.sysctl(gw, "net.ipv4.ip_forward", "1")
        for table in _BRIDGE_NF:
            self.sysctl(gw, f"net.bridge.bridge-nf-call-{table}", "0", missing_ok=True)

    def _wait_all_up(self) -> None:
        links = [(self.gw, LAN_BRIDGE), (self.gw, GW_WAN_IF)]
        links += [(self.gw, port) for port in BRIDGE_PORTS.values()]
        links += [(ns, HOST_IF) for ns in (self.lan1, self.lan2, self.wan)]
        deadline = time.monotonic() + UP_TIMEOUT_S
        for ns, ifname in links:
            self.wait_up(ns, ifname, timeout_s=max(0.1, deadline - time.monotonic()))

    # ---- Commands inside the namespaces ------------------------------------------------------

    def _check_ns(self, ns: str) -> None:
        if ns not in self.namespaces:
            raise LabError(f"{ns!r} is not a namespace of this lab")
        if self._torn_down:
            raise LabError("the lab has been torn down")

    def run(
        self,
        ns: str,
        *argv: str,
        timeout_s: float = COMMAND_TIMEOUT_S,
        check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`argv` inside `ns` (ip netns exec), bounded; LabError on failure when `check`."""
        self._check_ns(ns)
        try:
            result = subprocess.run(
                ("ip", "netns", "exec", ns, *argv),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                input=input_text,
                stdin=None if input_text is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"[{ns}] {' '.join(argv)}: timed out after {timeout_s} s") from None
        if check and result.returncode != 0:
            raise LabError(
                f"[{ns}] {' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def ip(self, ns: str, *args: str) -> str:
        """`ip -n ns args`, bounded; its stdout; LabError on failure."""
        self._check_ns(ns)
        result = _host("ip", "-n", ns, *args)
        if result.returncode != 0:
            raise LabError(f"[{ns}] ip {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def sysctl(self, ns: str, key: str, value: str, *, missing_ok: bool = False) -> bool:
        """Set a sysctl inside `ns`; False when it does not exist and `missing_ok`."""
        result = self.run(ns, "sysctl", "-q", "-w", f"{key}={value}", check=False)
        if result.returncode == 0:
            return True
        if missing_ok and ("cannot stat" in result.stderr or "No such file" in result.stderr):
            return False
        raise LabError(f"[{ns}] sysctl {key}={value}: {result.stderr.strip()}")

    def operstate(self, ns: str, ifname: str) -> str:
        """The RFC 2863 operstate of `ifname` in `ns` (UP, DOWN, UNKNOWN, ...)."""
        links = json.loads(self.ip(ns, "-j", "link", "show", "dev", ifname))
        return str(links[0].get("operstate", "UNKNOWN"))

    def wait_up(self, ns: str, ifname: str, *, timeout_s: float = UP_TIMEOUT_S) -> None:
        """Bounded wait until `ifname` in `ns` is operationally UP; LabError after."""
        deadline = time.monotonic() + timeout_s
        state = self.operstate(ns, ifname)
        while state != "UP":
            if time.monotonic() >= deadline:
                raise LabError(f"[{ns}] {ifname} still {state} after {timeout_s} s")
            time.sleep(POLL_S)
            state = self.operstate(ns, ifname)

    def add_address(self, ns: str, ifname: str, address: str) -> None:
        """`ip addr add address dev ifname` inside `ns` (e.g. a spoofing alias in a LAN host)."""
        self.ip(ns, "addr", "add", address, "dev", ifname)

    # ---- Processes ---------------------------------------------------------------------------

    def spawn(
        self, ns: str, *argv: str, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> LabProcess:
        """Start `argv` inside `ns`, tracked and killed at teardown; stdin/stdout are pipes."""
        self._check_ns(ns)
        if self._logs is None:
            raise LabError("build the lab before spawning processes")
        stderr_path = self._logs / f"{len(self._processes)}-{Path(argv[0]).name}.stderr"
        with stderr_path.open("wb") as stderr:
            popen = subprocess.Popen(
                ("ip", "netns", "exec", ns, *argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        process = LabProcess(ns, tuple(argv), popen, stderr_path)
        self._processes.append(process)
        return process

    # ---- In-process access ------------------------------------------------------------------

    def call(
        self, ns: str, function: Callable[[], T], *, timeout_s: float = COMMAND_TIMEOUT_S
    ) -> T:
        """`function()` run in a fresh thread that entered `ns` (setns); its result or its error.

        Only the network namespace changes; sockets made there stay in `ns` for their lifetime.
        """
        self._check_ns(ns)
        outcome: list[T] = []
        failure: list[BaseException] = []

        def enter_and_call() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(NETNS_RUN_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if libc.setns(fd, _CLONE_NEWNET) != 0:
                        code = ctypes.get_errno()
                        raise OSError(code, f"setns({ns}): {os.strerror(code)}")
                finally:
                    os.close(fd)
                outcome.append(function())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=enter_and_call, name=f"lab-{ns}", daemon=True)
        thread.start()
        thread.join(timeout_s)
        if thread.is_alive():
            raise TimeoutError(f"call in {ns} did not return within {timeout_s} s")
        if failure:
            raise failure[0]
        return outcome[0]

    def socket(
        self,
        ns: str,
        family: socket.AddressFamily = socket.AF_INET,
        kind: socket.SocketKind = socket.SOCK_DGRAM,
        proto: int = 0,
    ) -> socket.socket:
        """A socket living in `ns`, usable from any thread; closed at teardown if still open."""
        sock = self.call(ns, lambda: socket.socket(family, kind, proto))
        self._sockets.append(sock)
        return sock

    def ifindex(self, ns: str, ifname: str) -> int:
        """The ifindex of `ifname` inside `ns`."""
        return self.call(ns, lambda: socket.if_nametoindex(ifname))

    # ---- Teardown ----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Close lab sockets, kill tracked processes and the rest of the namespaces, delete them.

        Idempotent; every step runs even when an earlier one fails; LabError at the end lists
        what is left.
        """
        if self._torn_down:
            return
        self._torn_down = True
        problems: list[str] = []
        for sock in self._sockets:  # an open socket would keep a deleted namespace alive
            sock.close()
        for process in self._processes:
            try:
                if process.stop() is None:
                    problems.append(f"pid {process.pid} ({process.argv[0]}) survived SIGKILL")
            except Exception as exc:
                problems.append(f"pid {process.pid}: {exc}")
        for ns in self.namespaces:
            try:
                problems += _remove_namespace(ns)
            except Exception as exc:
                problems.append(f"{ns}: {exc}")
        if self._logs is not None:
            shutil.rmtree(self._logs, ignore_errors=True)
        if problems:
            raise LabError("lab teardown incomplete: " + "; ".join(problems))

    def __repr__(self) -> str:
        state = "torn down" if self._torn_down else "built" if self._built else "not built"
        return f"Lab({self.prefix!r}, {state})"
