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
import sys
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


# ==== Appended helpers: an igd daemon in the lab, raw HTTP/SOAP and SSDP probes, a guest segment ==
# Used by test_upnp_netns.py and test_security_catalogue.py. Nothing above this line depends on
# them; every wait below is bounded.

GUEST_ROLE: Final = "guest"
GUEST_IF: Final = "guest0"
"""The gateway's interface towards the guest segment: attached, but not a configured LAN."""
GW_GUEST: Final = IPv4Interface("198.18.7.1/24")
GUEST_HOST: Final = IPv4Interface("198.18.7.10/24")
_GUEST_NAME = re.compile(rf"^{PREFIX_BASE}-(\d+)-[0-9a-f]{{6}}-{GUEST_ROLE}$")

SSDP_GROUP: Final = "239.255.255.250"
SSDP_UDP_PORT: Final = 1900
IP_RECVTTL: Final = 12
"""<linux/in.h>: ask for the IP TTL of each received datagram as ancillary data."""
IP_MULTICAST_ALL_OPT: Final = 49
SO_TIMESTAMPNS: Final = 35
"""<asm-generic/socket.h> (SO_TIMESTAMPNS_OLD, 64-bit timespec on 64-bit hosts): kernel receive
time of each datagram as ancillary data (SCM_TIMESTAMPNS has the same value)."""
IGD_START_TIMEOUT_S: Final = 20.0
"""Longest wait for `igd serve` to print its ready line."""
IGD_STOP_TIMEOUT_S: Final = 10.0
"""Longest wait for `igd serve` to exit after SIGTERM (its stop steps are bounded by 5 s each)."""
HTTP_TIMEOUT_S: Final = 5.0
"""Longest wait for one raw HTTP exchange with the daemon."""
HTTP_MAX_RESPONSE_BYTES: Final = 1 << 20
_READY_URL = re.compile(r"IGD:(\d) (http://\S+/rootDesc\.xml)")


def remove_stale_guests() -> list[str]:
    """Remove guest namespaces (`add_guest_segment`) whose creating process is gone."""
    removed = []
    candidates = set(_list_namespaces())
    if NETNS_ETC_DIR.is_dir():
        candidates.update(entry.name for entry in NETNS_ETC_DIR.iterdir())
    for name in sorted(candidates):
        match = _GUEST_NAME.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _remove_namespace(name)
            removed.append(name)
    return removed


def add_guest_segment(lab: Lab) -> str:
    """A segment attached to gw but absent from the daemon's configuration (ST-33); its namespace.

    gw `guest0` 198.18.7.1/24 <-veth-> `<prefix>-guest` eth0 198.18.7.10/24, default via
    198.18.7.1, 224.0.0.0/4 on eth0. The namespace joins `lab.namespaces`, so `Lab.run`,
    `Lab.socket`, ... accept it and `Lab.teardown` deletes it (and its resolver directory).
    """
    remove_stale_guests()
    guest = f"{lab.prefix}-{GUEST_ROLE}"
    if guest in lab.namespaces:
        return guest
    lab._check_ns(lab.gw)
    lab.namespaces = (*lab.namespaces, guest)
    lab._add_namespace(guest)
    lab.ip(lab.gw, "link", "add", GUEST_IF, "type", "veth", "peer", "name", HOST_IF,
           "netns", guest)  # fmt: skip
    lab.ip(lab.gw, "addr", "add", str(GW_GUEST), "dev", GUEST_IF)
    lab.ip(lab.gw, "link", "set", GUEST_IF, "multicast", "on", "up")
    lab.ip(guest, "addr", "add", str(GUEST_HOST), "dev", HOST_IF)
    lab.ip(guest, "link", "set", HOST_IF, "multicast", "on", "up")
    lab.ip(guest, "route", "add", "default", "via", str(GW_GUEST.ip))
    lab.ip(guest, "route", "add", MULTICAST_ROUTE, "dev", HOST_IF)
    lab.wait_up(lab.gw, GUEST_IF)
    lab.wait_up(guest, HOST_IF)
    return guest


# ---- igd serve inside the gateway ---------------------------------------------------------------


@dataclass
class IgdDaemon:
    """`python -m igd serve` running in lab.gw: its process and its description URL per version."""

    lab: Lab
    argv: tuple[str, ...]
    process: LabProcess
    urls: dict[int, str]

    def running(self) -> bool:
        return self.process.popen.poll() is None

    def terminate(self, timeout_s: float = IGD_STOP_TIMEOUT_S) -> int:
        """SIGTERM and its exit status (bounded; SIGKILL and LabError when it does not stop)."""
        popen = self.process.popen
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)  # `ip netns exec` execs igd: the same pid
            try:
                return popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.stop()
                tail = self.process._tail()
                raise LabError(f"igd did not stop within {timeout_s} s{tail}") from None
        return popen.returncode

    def stderr_text(self) -> str:
        return self.process.stderr_text()


def start_igd(
    lab: Lab,
    state_dir: Path,
    *,
    http_port: int = 5000,
    ssdp_port: int | None = None,
    config: Path | None = None,
    extra: Sequence[str] = (),
    timeout_s: float = IGD_START_TIMEOUT_S,
) -> IgdDaemon:
    """Start `igd serve --lan br-lan --wan wan0` in lab.gw and wait (bounded) for its ready line."""
    argv = [sys.executable, "-m", "igd", "serve", "--lan", LAN_BRIDGE, "--wan", GW_WAN_IF,
            "--http-port", str(http_port), "--state-dir", str(state_dir),
            "--allow-private-external"]  # fmt: skip
    if ssdp_port is not None:
        argv += ["--ssdp-port", str(ssdp_port)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += list(extra)
    process = lab.spawn(lab.gw, *argv)
    try:
        line = process.read_line(timeout_s=timeout_s)
    except (TimeoutError, LabError):
        process.stop()
        raise
    urls = {int(version): url for version, url in _READY_URL.findall(line)}
    if not urls:
        process.stop()
        raise LabError(f"unexpected first line from igd: {line!r}{process._tail()}")
    return IgdDaemon(lab, tuple(argv), process, urls)


# ---- Raw HTTP and SOAP from a namespace ---------------------------------------------------------


@dataclass(frozen=True)
class HttpReply:
    """One HTTP response as received: status, lower-cased headers, body; `closed` if EOF seen."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    closed: bool

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def build_http_request(
    method: str,
    path: str,
    *,
    host: str | None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    content_length: bool = True,
    keep_alive: bool = False,
) -> bytes:
    """HTTP/1.1 request bytes, `Connection: close` unless `keep_alive`; `host=None`: no Host."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    if content_length and body:
        lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def tcp_connect(
    lab: Lab, ns: str, address: str, port: int, *, source: str | None = None,
    timeout_s: float = HTTP_TIMEOUT_S,
) -> socket.socket:  # fmt: skip
    """A TCP socket of `ns` connected to address:port (OSError/TimeoutError as connect raises)."""
    sock = lab.socket(ns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def try_connect(
    lab: Lab, ns: str, address: str, port: int, *, timeout_s: float = 0.3
) -> socket.socket | None:
    """Connected socket, or None when refused (RST) or dropped (no answer within `timeout_s`).

    Between lab namespaces an RST comes back in microseconds: a short timeout means "dropped".
    """
    try:
        return tcp_connect(lab, ns, address, port, timeout_s=timeout_s)
    except (ConnectionRefusedError, TimeoutError):
        return None


def read_http_reply(sock: socket.socket, *, timeout_s: float = HTTP_TIMEOUT_S) -> HttpReply:
    """Read one response (Content-Length, chunked or until EOF), bounded in time and size."""
    deadline = time.monotonic() + timeout_s
    data = bytearray()
    closed = False

    def more() -> bool:
        nonlocal closed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"incomplete HTTP response after {timeout_s} s: {bytes(data[:200])!r}"
            )
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
            return False
        data.extend(chunk)
        if len(data) > HTTP_MAX_RESPONSE_BYTES:
            raise LabError("HTTP response over 1 MiB")
        return True

    while b"\r\n\r\n" not in data:
        if not more():
            if not data:
                raise ConnectionError("the connection closed without a response")
            raise LabError(f"truncated HTTP head: {bytes(data[:200])!r}")
    head = bytes(data).partition(b"\r\n\r\n")[0]
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    _, status, *reason = status_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body_start = len(head) + 4
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(data) - body_start < length and more():
            pass
        body = bytes(data[body_start : body_start + length])
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not bytes(data).endswith(b"0\r\n\r\n") and more():
            pass
        body, chunked = b"", bytes(data[body_start:])
        while chunked:
            size_text, _, chunked = chunked.partition(b"\r\n")
            size = int(size_text.split(b";")[0], 16)
            if size == 0:
                break
            body, chunked = body + chunked[:size], chunked[size + 2 :]
    else:
        while more():
            pass
        body = bytes(data[body_start:])
    return HttpReply(int(status), reason[0] if reason else "", headers, body, closed)


def closed_by_peer(sock: socket.socket, *, timeout_s: float = 2.0) -> bool:
    """Whether the peer closes `sock` (EOF or reset) within `timeout_s`, sending nothing more."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def http_exchange(
    lab: Lab, ns: str, address: str, port: int, request: bytes, *, source: str | None = None,
    timeout_s: float = HTTP_TIMEOUT_S,
) -> HttpReply:  # fmt: skip
    """Send raw request bytes from `ns` and read the response; the socket is closed after."""
    with tcp_connect(lab, ns, address, port, source=source, timeout_s=timeout_s) as sock:
        sock.sendall(request)
        return read_http_reply(sock, timeout_s=timeout_s)


def service_type(kind: str, version: int) -> str:
    return f"urn:schemas-upnp-org:service:{kind}:{version}"


def soap_envelope(service: str, action: str, args: Sequence[tuple[str, str]]) -> bytes:
    """A SOAP 1.1 request body as UPnP control points send it (arguments escaped)."""
    from xml.sax.saxutils import escape

    arguments = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in args)
    return (
        '<?xml version="1.0"?>\r\n'
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
        f'<s:Body><u:{action} xmlns:u="{service}">{arguments}</u:{action}></s:Body>'
        "</s:Envelope>\r\n"
    ).encode()


@dataclass(frozen=True)
class SoapReply:
    """A control response: outputs by name (200), or the UPnPError code of a fault (500)."""

    http: HttpReply
    outputs: dict[str, str]
    error_code: int | None

    @property
    def status(self) -> int:
        return self.http.status

    @property
    def ok(self) -> bool:
        return self.http.status == 200 and self.error_code is None


def parse_soap_reply(reply: HttpReply) -> SoapReply:
    """Outputs of an action response, or the errorCode of a UPnPError fault, else neither."""
    from xml.etree import ElementTree

    outputs: dict[str, str] = {}
    code: int | None = None
    if reply.status in (200, 500) and reply.body.lstrip().startswith(b"<"):
        root = ElementTree.fromstring(reply.body)
        for element in root.iter():
            if element.tag.endswith("errorCode") and element.text is not None:
                code = int(element.text.strip())
        if reply.status == 200:
            body = next((e for e in root if e.tag.endswith("}Body")), None)
            response = body[0] if body is not None and len(body) else None
            for child in response if response is not None else ():
                outputs[child.tag.rpartition("}")[2]] = child.text or ""
    return SoapReply(reply, outputs, code)


@dataclass
class SoapClient:
    """UPnP control calls from `ns` to the daemon at address:port (bound to `source` if given)."""

    lab: Lab
    ns: str
    address: str = str(GW_LAN.ip)
    port: int = 5000
    source: str | None = None
    timeout_s: float = HTTP_TIMEOUT_S
    """Bound on connecting and on each exchange."""

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def exchange(self, request: bytes, *, timeout_s: float | None = None) -> HttpReply:
        return http_exchange(
            self.lab, self.ns, self.address, self.port, request, source=self.source,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
        )  # fmt: skip

    def post(
        self,
        path: str,
        body: bytes,
        *,
        soapaction: str | None,
        headers: Sequence[tuple[str, str]] = (),
        host: str | None = "",
        content_type: str | None = 'text/xml; charset="utf-8"',
        timeout_s: float | None = None,
    ) -> HttpReply:
        """A raw POST; `host=""` sends our own Host, None none; `soapaction=None` omits it."""
        fields = [] if content_type is None else [("Content-Type", content_type)]
        if soapaction is not None:
            fields.append(("SOAPAction", soapaction))
        fields += headers
        request = build_http_request(
            "POST", path, host=self.host if host == "" else host, headers=fields, body=body
        )
        return self.exchange(request, timeout_s=timeout_s)

    def call(
        self,
        action: str,
        args: Sequence[tuple[str, str]] = (),
        *,
        version: int = 2,
        kind: str = "WANIPConnection",
    ) -> SoapReply:
        """`action` on the IGD:`version` root's `kind` service (WANIPConnection:1/2, others :1)."""
        service = service_type(kind, version if kind == "WANIPConnection" else 1)
        reply = self.post(
            f"/igd{version}/{kind}/control",
            soap_envelope(service, action, args),
            soapaction=f'"{service}#{action}"',
        )
        return parse_soap_reply(reply)

    # -- WANIPConnection shorthands ------------------------------------------------------------

    def add(
        self, port: int, client: str, *, protocol: str = "TCP", internal_port: int | None = None,
        description: str = "igd-lab", version: int = 2, lease: int = 0,
    ) -> SoapReply:  # fmt: skip
        return self.call(
            "AddPortMapping",
            [("NewRemoteHost", ""), ("NewExternalPort", str(port)), ("NewProtocol", protocol),
             ("NewInternalPort", str(internal_port or port)), ("NewInternalClient", client),
             ("NewEnabled", "1"), ("NewPortMappingDescription", description),
             ("NewLeaseDuration", str(lease))],
            version=version,
        )  # fmt: skip

    def add_any(
        self, port: int, client: str, *, protocol: str = "TCP", internal_port: int | None = None,
        description: str = "igd-lab", lease: int = 3600,
    ) -> SoapReply:  # fmt: skip
        return self.call(
            "AddAnyPortMapping",
            [("NewRemoteHost", ""), ("NewExternalPort", str(port)), ("NewProtocol", protocol),
             ("NewInternalPort", str(internal_port or port)), ("NewInternalClient", client),
             ("NewEnabled", "1"), ("NewPortMappingDescription", description),
             ("NewLeaseDuration", str(lease))],
        )  # fmt: skip

    def delete(self, port: int, *, protocol: str = "TCP", version: int = 2) -> SoapReply:
        return self.call(
            "DeletePortMapping",
            [("NewRemoteHost", ""), ("NewExternalPort", str(port)), ("NewProtocol", protocol)],
            version=version,
        )

    def get_specific(self, port: int, *, protocol: str = "TCP", version: int = 2) -> SoapReply:
        return self.call(
            "GetSpecificPortMappingEntry",
            [("NewRemoteHost", ""), ("NewExternalPort", str(port)), ("NewProtocol", protocol)],
            version=version,
        )

    def list_mappings(
        self, start: int = 0, end: int = 65535, *, protocol: str = "TCP", manage: bool = False
    ) -> SoapReply:
        """GetListOfPortMappings (IGD:2 only)."""
        return self.call(
            "GetListOfPortMappings",
            [("NewStartPort", str(start)), ("NewEndPort", str(end)), ("NewProtocol", protocol),
             ("NewManage", "1" if manage else "0"), ("NewNumberOfPorts", "0")],
        )  # fmt: skip

    def generic_entries(self, *, version: int = 2, limit: int = 256) -> list[dict[str, str]]:
        """Every entry GetGenericPortMappingEntry shows this caller (index 0 until 713)."""
        entries: list[dict[str, str]] = []
        for index in range(limit):
            reply = self.call(
                "GetGenericPortMappingEntry", [("NewPortMappingIndex", str(index))], version=version
            )
            if not reply.ok:
                assert reply.error_code == 713, (index, reply.http)
                return entries
            entries.append(reply.outputs)
        raise LabError(f"more than {limit} entries")


def port_listing(reply: SoapReply) -> list[dict[str, str]]:
    """The entries of a GetListOfPortMappings NewPortListing, each as {local name: text}."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(reply.outputs["NewPortListing"].encode())
    return [
        {child.tag.rpartition("}")[2]: child.text or "" for child in entry}
        for entry in root
        if entry.tag.endswith("PortMappingEntry")
    ]


# ---- SSDP probes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedDatagram:
    """A datagram, its source and the IP TTL it arrived with (when IP_RECVTTL was set)."""

    data: bytes
    source: tuple[str, int]
    ttl: int | None
    at: float
    """time.monotonic() when it was read."""
    arrived: float | None = None
    """Wall-clock time (time.time()) the kernel received it, when SO_TIMESTAMPNS was set."""


def ip_mreqn(group: str, ifindex: int) -> bytes:
    import struct

    return socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)


def ssdp_searcher(lab: Lab, ns: str, address: str, *, port: int = 0) -> socket.socket:
    """A UDP socket of `ns` bound to address:port, multicasting on eth0 (TTL 2, no loopback)."""
    sock = lab.socket(ns)
    sock.setsockopt(
        socket.IPPROTO_IP, socket.IP_MULTICAST_IF, ip_mreqn("0.0.0.0", lab.ifindex(ns, HOST_IF))
    )
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    sock.bind((address, port))
    return sock


def ssdp_group_listener(lab: Lab, ns: str, *, port: int = SSDP_UDP_PORT) -> socket.socket:
    """Member of 239.255.255.250 on eth0 of `ns` at `port`, reporting each datagram's TTL."""
    sock = lab.socket(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, HOST_IF.encode())
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL_OPT, 0)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    sock.bind((SSDP_GROUP, port))
    sock.setsockopt(
        socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, ip_mreqn(SSDP_GROUP, lab.ifindex(ns, HOST_IF))
    )
    return sock


def receive_datagrams(
    sock: socket.socket, *, count: int | None = None, quiet_s: float = 1.5, timeout_s: float = 6.0
) -> list[ReceivedDatagram]:
    """Datagrams until `count` arrived, or a quiet gap of `quiet_s`; never beyond `timeout_s`."""
    import struct

    deadline = time.monotonic() + timeout_s
    got: list[ReceivedDatagram] = []
    while count is None or len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(min(remaining, quiet_s) if count is None else remaining)
        try:
            data, ancillary, _, source = sock.recvmsg(65536, 256)
        except TimeoutError:
            break
        except ConnectionRefusedError:  # ICMP port unreachable for an earlier send
            continue
        ttl: int | None = None
        arrived: float | None = None
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IP and kind == socket.IP_TTL:
                ttl = struct.unpack("@i", value[:4])[0]
            elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("@qq", value[:16])
                arrived = seconds + nanoseconds / 1e9
        got.append(ReceivedDatagram(data, (source[0], source[1]), ttl, time.monotonic(), arrived))
    return got


def msearch_bytes(
    st: str, *, mx: str | None = "1", host: str = f"{SSDP_GROUP}:{SSDP_UDP_PORT}"
) -> bytes:
    """An M-SEARCH with MX given verbatim (None: no MX line), for edge cases a codec refuses."""
    lines = ["M-SEARCH * HTTP/1.1", f"HOST: {host}", 'MAN: "ssdp:discover"']
    if mx is not None:
        lines.append(f"MX: {mx}")
    lines.append(f"ST: {st}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---- LAN echo server and WAN probes -------------------------------------------------------------

PROBE_TIMEOUT_S: Final = 1.0
"""How long a probe waits before it calls a port dropped."""

ECHO_SERVER: Final = r"""
import selectors, socket, sys
host, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
selector = selectors.DefaultSelector()
for port in ports:
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, port))
    tcp.listen(128)
    selector.register(tcp, selectors.EVENT_READ, "tcp")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))
    selector.register(udp, selectors.EVENT_READ, "udp")
print("ready", flush=True)
while True:
    for key, _ in selector.select():
        sock = key.fileobj
        if key.data == "udp":
            try:
                data, peer = sock.recvfrom(2048)
                sock.sendto(peer[0].encode() + b" " + data, peer)
            except OSError:  # no route back to the peer
                pass
            continue
        conn, peer = sock.accept()
        conn.settimeout(2)
        try:
            conn.sendall(peer[0].encode() + b" " + conn.recv(1024))
        except OSError:
            pass
        finally:
            conn.close()
"""


def start_echo(lab: Lab, ns: str, host: str, *ports: int) -> LabProcess:
    """The echo server in `ns` on host:port for each port, TCP and UDP; returns once bound."""
    process = lab.spawn(ns, sys.executable, "-c", ECHO_SERVER, host, *map(str, ports))
    assert process.read_line(timeout_s=5) == "ready"
    return process


def tcp_probe(
    lab: Lab, ns: str, address: str, port: int, *, source: str | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> str:  # fmt: skip
    """The peer address the echo server saw, "refused" or "dropped"."""
    with lab.socket(ns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        if source is not None:
            sock.bind((source, 0))
        try:
            sock.connect((address, port))
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "dropped"
        sock.settimeout(3.0)
        sock.sendall(b"ping")
        reply = sock.recv(1024).decode()
    peer, _, data = reply.partition(" ")
    assert data == "ping", reply
    return peer


def udp_probe(
    lab: Lab, ns: str, address: str, port: int, *, source: str | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> str:  # fmt: skip
    """The peer address the echo server saw, "refused" (ICMP port unreachable) or "dropped"."""
    with lab.socket(ns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.bind((source or "0.0.0.0", 0))
        sock.connect((address, port))
        try:
            sock.send(b"ping")
            reply = sock.recv(2048).decode()
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "dropped"
    peer, _, data = reply.partition(" ")
    assert data == "ping", reply
    return peer
