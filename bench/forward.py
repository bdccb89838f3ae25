"""Forwarding benchmark: the userspace relay against socat, and kernel DNAT against routing.

    python bench/forward.py [--quick] [--mib N] [--repeats N] [--udp-seconds S] [--no-netns]

Prints figures and ratios, never fails. Three parts, each in the same run as its peer:

1. TCP on 127.0.0.1: one connection carrying N MiB from a source to a sink, through
   - nothing (the loopback ceiling), the userspace relay (UserspaceBackend, splice), socat with
     its default 8 KiB buffer, socat -b 262144.
   GB/s is 10^9 bytes per second at the sink; CPU-s/GiB is the relay process's user + system
   time per 2^30 bytes (getrusage in our relay, wait4 for socat). Best of the repeats.
2. UDP on 127.0.0.1: 64-byte datagrams for S seconds at each offered rate (paced 100k/s,
   150k/s, then flat out) through our relay, then socat; the figure is datagrams per second
   that reached the sink, with the loss, the relay's CPU-seconds and datagrams per CPU-second
   (its capacity on an idle core; the source, relay and sink share two cores here).
3. Kernel path (root only, a netns lab from tests/netns/lab.py): from the wan host to lan1
   through the gw namespace, direct (plain routing, no NAT) and through a minimal nft DNAT
   ruleset in gw (198.19.0.1:40001 -> 198.18.0.10:40000; our own table, not the nftables
   backend), interleaved, plus our userspace relay in gw for scale.

The source sends with sendfile from a memfd and the sink splices into /dev/null, so they spend
little CPU; each runs in its own process, as does every relay. Goals are printed next to the
figures: relay >= 2x socat default; >= 100k datagrams/s at 64 B; DNAT within 10 % of direct.
Internal roles (`_relay`, `_sink`, `_source`, `_udp_sink`, `_udp_source`) are this script run
as a child.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import json
import os
import platform
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from netns.lab import Lab, LabProcess

HERE: Final = Path(__file__).resolve()
TESTS: Final = HERE.parent.parent / "tests"
LOCAL: Final = "127.0.0.1"
GB: Final = 1e9
GIB: Final = float(1 << 30)
MIB: Final = 1 << 20
CHILD_TIMEOUT_S: Final = 10.0
TRANSFER_TIMEOUT_S: Final = 60.0
SOURCE_CHUNK_BYTES: Final = 8 * MIB
SINK_PIPE_BYTES: Final = MIB
DATAGRAM_BYTES: Final = 64
UDP_QUIET_S: Final = 0.5
GOAL_VS_SOCAT: Final = 2.0
GOAL_UDP_PPS: Final = 100_000.0
UDP_RATES: Final = (100_000.0, 150_000.0, 0.0)
"""Offered datagrams per second, paced; 0 is flat out."""
GOAL_KERNEL_RATIO: Final = 0.90
NAT_TABLE: Final = "igdbench"
LAB_SINK_PORT: Final = 40000
LAB_DNAT_PORT: Final = 40001
LAB_RELAY_PORT: Final = 40002
SO_RCVBUFFORCE: Final = 33  # <asm-generic/socket.h>; the socket module lacks it


# ---- Child roles ---------------------------------------------------------------------------


def _emit(value: dict[str, object]) -> None:
    print(json.dumps(value), flush=True)


def role_sink(host: str, port: int) -> None:
    """Accept one connection, splice everything into /dev/null, report bytes and seconds."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((host, port))
        server.listen(1)
        _emit({"port": server.getsockname()[1]})
        conn, _ = server.accept()
        started = time.perf_counter()
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, SINK_PIPE_BYTES)
        devnull = os.open(os.devnull, os.O_WRONLY)
        total = 0
        while moved := os.splice(conn.fileno(), write_fd, SINK_PIPE_BYTES):
            total += moved
            while moved:
                moved -= os.splice(read_fd, devnull, moved)
        elapsed = time.perf_counter() - started
        conn.close()
    _emit({"bytes": total, "seconds": elapsed})


def role_source(host: str, port: int, total: int) -> None:
    """Connect and send `total` bytes with sendfile from a memfd, then half-close."""
    memfd = os.memfd_create("bench-source")
    os.write(memfd, os.urandom(SOURCE_CHUNK_BYTES))
    with socket.create_connection((host, port)) as sock:
        left = total
        offset = 0
        while left:
            sent = os.sendfile(sock.fileno(), memfd, offset, min(left, SOURCE_CHUNK_BYTES - offset))
            left -= sent
            offset = (offset + sent) % SOURCE_CHUNK_BYTES
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
    _emit({"sent": total})


def role_udp_sink(host: str, port: int, seconds: float) -> None:
    """Count datagrams until a quiet gap after the first; report count and span."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:  # as root: beyond net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 * MIB)
        except PermissionError:  # without CAP_NET_ADMIN: up to net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MIB)
        sock.bind((host, port))
        _emit({"port": sock.getsockname()[1]})
        buffer = bytearray(2048)
        recv_into = sock.recv_into
        # A kernel receive timeout keeps each recv one syscall (settimeout would add a poll).
        _receive_timeout(sock, seconds + CHILD_TIMEOUT_S)
        count = 0
        first = last = 0.0
        with contextlib.suppress(BlockingIOError):
            recv_into(buffer)
            first = last = time.perf_counter()
            count = 1
            _receive_timeout(sock, UDP_QUIET_S)
            while True:
                recv_into(buffer)
                count += 1
                if not count & 255:
                    last = time.perf_counter()
    _emit({"received": count, "seconds": max(last - first, 1e-9)})


def _receive_timeout(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)


def role_udp_source(host: str, port: int, seconds: float, rate: float) -> None:
    """Send 64-byte datagrams for `seconds`, paced to `rate` per second (0: flat out)."""
    payload = b"x" * DATAGRAM_BYTES
    burst = 64
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        send = sock.send
        sent = 0
        started = time.perf_counter()
        deadline = started + seconds
        while True:
            for _ in range(burst):
                try:
                    send(payload)
                    sent += 1
                except OSError:  # ENOBUFS, or ECONNREFUSED before the relay is up
                    pass
            now = time.perf_counter()
            if now >= deadline:
                break
            if rate:
                ahead = started + sent / rate - now
                if ahead > 0:
                    time.sleep(ahead)
        elapsed = time.perf_counter() - started
    _emit({"sent": sent, "seconds": elapsed})


def role_relay(protocol: str, listen: str, port: int, target: str, target_port: int) -> None:
    """Run UserspaceBackend with one mapping; `usage` on stdin prints CPU seconds; EOF stops."""
    from igd.natcore import AppliedConnection, IPProtocol, Mapping, SharingConnectionType
    from igd.natcore.backends.userspace import UserspaceBackend

    async def serve() -> None:
        guid = uuid.uuid4()
        wan = AppliedConnection(
            guid, "bench", SharingConnectionType.PUBLIC, False, (IPv4Interface(f"{listen}/32"),)
        )
        mapping = Mapping(
            IPProtocol[protocol], port, IPv4Address(target), target_port, connection=guid
        )
        backend = UserspaceBackend()
        await backend.start((mapping,), (wan,))
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_stdin() -> None:
            line = sys.stdin.readline()
            if not line:
                if not done.done():
                    done.set_result(None)
                return
            usage = resource.getrusage(resource.RUSAGE_SELF)
            stats = backend.stats()
            _emit(
                {
                    "cpu": usage.ru_utime + usage.ru_stime,
                    "forwarded": stats.udp.forwarded,
                    "dropped": stats.udp.dropped_error,
                }
            )

        loop.add_reader(sys.stdin.fileno(), on_stdin)
        _emit({"port": port, "pipe_bytes": _pipe_size()})
        await done
        loop.remove_reader(sys.stdin.fileno())
        await backend.stop()

    asyncio.run(serve())


def _pipe_size() -> int:
    """The capacity of a fresh pipe: what each relay direction gets."""
    read_fd, write_fd = os.pipe()
    try:
        return fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ)
    finally:
        os.close(read_fd)
        os.close(write_fd)


ROLES: Final[dict[str, Callable[[list[str]], None]]] = {
    "_sink": lambda a: role_sink(a[0], int(a[1])),
    "_source": lambda a: role_source(a[0], int(a[1]), int(a[2])),
    "_udp_sink": lambda a: role_udp_sink(a[0], int(a[1]), float(a[2])),
    "_udp_source": lambda a: role_udp_source(a[0], int(a[1]), float(a[2]), float(a[3])),
    "_relay": lambda a: role_relay(a[0], a[1], int(a[2]), a[3], int(a[4])),
}


# ---- Parent: processes ---------------------------------------------------------------------


def _lab_module() -> None:
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


class Children:
    """Child processes in the root namespace (or a lab's), all stopped at exit."""

    def __init__(self, lab: Lab | None = None) -> None:
        _lab_module()
        self.lab = lab
        self.logs = Path(tempfile.mkdtemp(prefix="igd-bench-"))
        self.started: list[LabProcess] = []

    def spawn(self, ns: str | None, *argv: str) -> LabProcess:
        """`argv` started in `ns` (None: here), stdout a pipe, stderr to a file."""
        from netns.lab import LabProcess

        if ns is not None:
            assert self.lab is not None
            return self.lab.spawn(ns, *argv)
        stderr_path = self.logs / f"{len(self.started)}-{Path(argv[0]).name}.stderr"
        with stderr_path.open("wb") as stderr:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        process = LabProcess("-", tuple(argv), popen, stderr_path)
        self.started.append(process)
        return process

    def role(self, ns: str | None, name: str, *args: object) -> LabProcess:
        return self.spawn(ns, sys.executable, str(HERE), name, *(str(a) for a in args))

    def close(self) -> None:
        for process in self.started:
            process.stop()
        shutil.rmtree(self.logs, ignore_errors=True)


def _number(value: dict[str, object], key: str) -> float:
    number = value[key]
    assert isinstance(number, int | float), value
    return float(number)


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOCAL, 0))
        port: int = probe.getsockname()[1]
    return port


def wait_bound(port: int, proto: str, timeout_s: float = CHILD_TIMEOUT_S) -> None:
    """Bounded wait until 127.0.0.1:port appears in /proc/net/{tcp,udp} (LISTEN for TCP)."""
    wanted = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and (proto == "udp" or fields[3] == "0A"):
                return
        time.sleep(0.01)
    raise TimeoutError(f"nothing bound {proto} {LOCAL}:{port} in {timeout_s} s")


def fixed(host: str, port: int) -> Callable[[int], tuple[str, int]]:
    """A `connect` for `tcp_transfer` that ignores the sink's port (a relay sits between)."""
    return lambda _sink_port: (host, port)


@dataclass(frozen=True)
class Transfer:
    gbps: float
    cpu_s_per_gib: float | None


def tcp_transfer(
    children: Children,
    total: int,
    *,
    sink_ns: str | None = None,
    sink_host: str = LOCAL,
    sink_port: int = 0,
    source_ns: str | None = None,
    connect: Callable[[int], tuple[str, int]],
    relay_cpu: Callable[[], float] | None = None,
) -> Transfer:
    """One source -> (relay) -> sink transfer; `connect(sink_port)` says where the source goes."""
    sink = children.role(sink_ns, "_sink", sink_host, sink_port)
    port = int(_number(sink.read_json(), "port"))
    host, target_port = connect(port)
    cpu_before = relay_cpu() if relay_cpu else 0.0
    source = children.role(source_ns, "_source", host, target_port, total)
    result = sink.read_json(TRANSFER_TIMEOUT_S)
    cpu = relay_cpu() - cpu_before if relay_cpu else None
    source.read_json(CHILD_TIMEOUT_S)
    source.stop()
    sink.stop()
    received = _number(result, "bytes")
    if received != total:
        raise RuntimeError(f"sink got {received:.0f} of {total} bytes")
    gbps = received / _number(result, "seconds") / GB
    return Transfer(gbps, None if cpu is None else cpu / (received / GIB))


def _child_cpu(pid: int) -> float:
    """User + system seconds of a live child, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Relay:
    """Our relay as a child process, with its CPU time on request."""

    def __init__(
        self,
        children: Children,
        protocol: str,
        listen: str,
        port: int,
        target: str,
        target_port: int,
        ns: str | None = None,
    ) -> None:
        self.process = children.role(ns, "_relay", protocol, listen, port, target, target_port)
        self.ready = self.process.read_json()

    def usage(self) -> dict[str, object]:
        self.process.send_line("usage")
        return self.process.read_json()

    def cpu(self) -> float:
        return _number(self.usage(), "cpu")

    def close(self) -> None:
        self.process.stop()


def socat_tcp(children: Children, total: int, extra: Sequence[str]) -> Transfer:
    """One transfer through a one-shot socat; its CPU from wait4 when it exits."""
    sink = children.role(None, "_sink", LOCAL, 0)
    sink_port = int(_number(sink.read_json(), "port"))
    port = free_port()
    argv = [
        "socat",
        *extra,
        f"TCP4-LISTEN:{port},bind={LOCAL},reuseaddr",
        f"TCP4:{LOCAL}:{sink_port}",
    ]
    socat = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_bound(port, "tcp")
        source = children.role(None, "_source", LOCAL, port, total)
        result = sink.read_json(TRANSFER_TIMEOUT_S)
        source.read_json(CHILD_TIMEOUT_S)
        rusage = _wait4(socat.pid, CHILD_TIMEOUT_S)
        socat.returncode = 0
    finally:
        if socat.returncode is None:
            socat.kill()
            socat.wait()
    source.stop()
    sink.stop()
    received = _number(result, "bytes")
    cpu = None if rusage is None else rusage.ru_utime + rusage.ru_stime
    gbps = received / _number(result, "seconds") / GB
    return Transfer(gbps, None if cpu is None else cpu / (received / GIB))


def _wait4(pid: int, timeout_s: float) -> resource.struct_rusage | None:
    """The exited child's rusage, waiting at most `timeout_s` (None: killed instead)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        waited, _, rusage = os.wait4(pid, os.WNOHANG)
        if waited == pid:
            return rusage
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.wait4(pid, 0)
    return None


# ---- Parent: the three parts ---------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    total: int
    repeats: int
    udp_seconds: float
    netns: bool


def best(results: list[Transfer]) -> Transfer:
    return max(results, key=lambda r: r.gbps)


def ensure_socat() -> str | None:
    """socat's version line, installing the Debian package as root when missing; None if absent."""
    if shutil.which("socat") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing socat (apt-get) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "socat"]
        if subprocess.run(install, capture_output=True, env=env, check=False).returncode:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            subprocess.run(install, capture_output=True, env=env, check=False)
    if shutil.which("socat") is None:
        return None
    out = subprocess.run(["socat", "-V"], capture_output=True, text=True, check=False).stdout
    return next((line for line in out.splitlines() if "socat version" in line), "socat")


def part_tcp(settings: Settings, socat: bool) -> None:
    children = Children()
    rows: dict[str, list[Transfer]] = {}
    pipe_bytes = 0
    try:
        for _ in range(settings.repeats):
            rows.setdefault("direct (no relay)", []).append(
                tcp_transfer(children, settings.total, connect=lambda p: (LOCAL, p))
            )
            sink_port = free_port()
            port = free_port()
            relay = Relay(children, "TCP", LOCAL, port, LOCAL, sink_port)
            pipe_bytes = int(_number(relay.ready, "pipe_bytes"))
            try:
                rows.setdefault("userspace relay (splice)", []).append(
                    tcp_transfer(
                        children,
                        settings.total,
                        sink_port=sink_port,
                        connect=fixed(LOCAL, port),
                        relay_cpu=relay.cpu,
                    )
                )
            finally:
                relay.close()
            if socat:
                rows.setdefault("socat (default 8 KiB buffer)", []).append(
                    socat_tcp(children, settings.total, [])
                )
                rows.setdefault("socat -b 262144", []).append(
                    socat_tcp(children, settings.total, ["-b", "262144"])
                )
    finally:
        children.close()
    mib = settings.total // MIB
    print(
        f"\nTCP on {LOCAL}: {mib} MiB per transfer, one connection, best of {settings.repeats}"
        f" (relay pipes {pipe_bytes // 1024} KiB)"
    )
    print(f"  {'path':<32}{'GB/s':>7}{'CPU-s/GiB':>11}{'vs socat':>10}")
    socat_default = rows.get("socat (default 8 KiB buffer)")
    reference = best(socat_default).gbps if socat_default else None
    for label, results in rows.items():
        top = best(results)
        cpu = "-" if top.cpu_s_per_gib is None else f"{top.cpu_s_per_gib:.2f}"
        ratio = (
            "-"
            if reference is None or label.startswith("direct")
            else f"{top.gbps / reference:.2f}x"
        )
        line = f"  {label:<32}{top.gbps:>7.2f}{cpu:>11}{ratio:>10}"
        if label.startswith("userspace") and reference is not None:
            met = top.gbps / reference >= GOAL_VS_SOCAT
            line += f"   goal >= {GOAL_VS_SOCAT:.0f}x socat default: {'MET' if met else 'NOT MET'}"
        print(line)
    if reference is None:
        print("  (socat not available: no comparison)")


@dataclass(frozen=True)
class UdpResult:
    offered: float  # datagrams/s the source sent
    delivered: float  # datagrams/s that reached the sink
    loss: float
    cpu_s: float  # the relay's CPU seconds over the run
    received: float
    relayed: float | None  # datagrams/s our relay passed on (its own counter), None for socat

    @property
    def per_cpu_s(self) -> float:
        """Datagrams delivered per CPU-second of the relay: its capacity on an idle core."""
        return self.received / max(self.cpu_s, 1e-9)


def udp_run(
    children: Children,
    seconds: float,
    rate: float,
    relay_port: int,
    sink_port: int,
    cpu: Callable[[], float],
    relay: Relay | None = None,
) -> UdpResult:
    """Blast 64-byte datagrams at the relay on relay_port for `seconds`; count at the sink."""
    sink = children.role(None, "_udp_sink", LOCAL, sink_port, seconds)
    sink.read_json()
    cpu_before = cpu()
    forwarded_before = _number(relay.usage(), "forwarded") if relay else 0.0
    source = children.role(None, "_udp_source", LOCAL, relay_port, seconds, rate)
    sent = source.read_json(seconds + CHILD_TIMEOUT_S)
    received = sink.read_json(seconds + CHILD_TIMEOUT_S)
    cpu_s = cpu() - cpu_before
    forwarded = _number(relay.usage(), "forwarded") - forwarded_before if relay else None
    source.stop()
    sink.stop()
    count = _number(received, "received")
    span = _number(sent, "seconds")
    return UdpResult(
        offered=_number(sent, "sent") / _number(sent, "seconds"),
        delivered=count / _number(received, "seconds"),
        loss=1 - count / max(_number(sent, "sent"), 1),
        cpu_s=cpu_s,
        received=count,
        relayed=None if forwarded is None else forwarded / span,
    )


def part_udp(settings: Settings, socat: bool) -> None:
    children = Children()
    rows: list[tuple[str, float, UdpResult]] = []
    try:
        sink_port = free_port(socket.SOCK_DGRAM)
        port = free_port(socket.SOCK_DGRAM)
        relay = Relay(children, "UDP", LOCAL, port, LOCAL, sink_port)
        try:
            for rate in UDP_RATES:
                result = udp_run(
                    children, settings.udp_seconds, rate, port, sink_port, relay.cpu, relay
                )
                rows.append(("userspace relay", rate, result))
        finally:
            relay.close()
        for rate in UDP_RATES if socat else ():
            sink_port = free_port(socket.SOCK_DGRAM)
            port = free_port(socket.SOCK_DGRAM)
            argv = [
                "socat",
                "-T",
                "2",
                f"UDP4-LISTEN:{port},bind={LOCAL}",
                f"UDP4:{LOCAL}:{sink_port}",
            ]
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            try:
                wait_bound(port, "udp")
                result = udp_run(
                    children,
                    settings.udp_seconds,
                    rate,
                    port,
                    sink_port,
                    functools.partial(_child_cpu, process.pid),
                )
                rows.append(("socat", rate, result))
            finally:
                process.kill()
                process.wait()
    finally:
        children.close()
    print(
        f"\nUDP on {LOCAL}: {DATAGRAM_BYTES}-byte datagrams, one flow, {settings.udp_seconds:g} s"
        " per offered rate (paced source; 'max' = flat out)"
    )
    header = f"  {'path':<18}{'offered':>8}{'offered/s':>11}{'relayed/s':>11}{'delivered/s':>13}"
    print(header + f"{'loss':>6}{'relay CPU-s':>13}{'per CPU-s':>11}")
    for label, rate, r in rows:
        asked = "max" if not rate else f"{rate / 1000:.0f}k"
        relayed = "-" if r.relayed is None else f"{r.relayed:,.0f}"
        print(
            f"  {label:<18}{asked:>8}{r.offered:>11,.0f}{relayed:>11}{r.delivered:>13,.0f}"
            f"{r.loss:>6.0%}{r.cpu_s:>13.2f}{r.per_cpu_s:>11,.0f}"
        )
    ours = max(r.delivered for label, _, r in rows if label.startswith("userspace"))
    verdict = "MET" if ours >= GOAL_UDP_PPS else "NOT MET"
    line = f"  best delivered through the userspace relay: {ours:,.0f}/s"
    print(line + f"   goal >= {GOAL_UDP_PPS:,.0f}/s: {verdict}")
    theirs = [r.delivered for label, _, r in rows if label == "socat"]
    if theirs:
        print(f"  best delivered through socat: {max(theirs):,.0f}/s")


NFT_RULESET: Final = f"""
table ip {NAT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan0" tcp dport {LAB_DNAT_PORT} dnat to 198.18.0.10:{LAB_SINK_PORT}
    }}
}}
"""


def part_kernel(settings: Settings) -> None:
    _lab_module()
    from netns.lab import GW_WAN, LAN1, Lab, lab_skip_reason

    reason = lab_skip_reason() or (None if shutil.which("nft") else "nft is not installed")
    if reason is not None:
        print(f"\nKernel path: skipped ({reason})")
        return
    rows: dict[str, list[Transfer]] = {}
    with Lab() as lab:
        children = Children(lab)
        try:
            sink_ip, gw_ip = str(LAN1.ip), str(GW_WAN.ip)
            relay = Relay(children, "TCP", gw_ip, LAB_RELAY_PORT, sink_ip, LAB_SINK_PORT, lab.gw)

            def run(label: str, host: str, port: int) -> None:
                rows.setdefault(label, []).append(
                    tcp_transfer(
                        children,
                        settings.total,
                        sink_ns=lab.lan1,
                        sink_host=sink_ip,
                        sink_port=LAB_SINK_PORT,
                        source_ns=lab.wan,
                        connect=fixed(host, port),
                    )
                )

            for _ in range(settings.repeats):
                run("direct (routing, no NAT)", sink_ip, LAB_SINK_PORT)
                lab.run(lab.gw, "nft", "-f", "-", input_text=NFT_RULESET)
                run("nft DNAT in gw", gw_ip, LAB_DNAT_PORT)
                lab.run(lab.gw, "nft", "delete", "table", "ip", NAT_TABLE)
                run("userspace relay in gw", gw_ip, LAB_RELAY_PORT)
            relay.close()
        finally:
            children.close()
    mib = settings.total // MIB
    print(
        f"\nKernel path in a netns lab: wan {GW_WAN.ip}/24 -> gw -> lan1 {LAN1.ip}, veth,"
        f" {mib} MiB per transfer, best of {settings.repeats}"
    )
    print(f"  {'path':<32}{'GB/s':>7}{'vs direct':>11}")
    direct = best(rows["direct (routing, no NAT)"]).gbps
    for label, results in rows.items():
        top = best(results)
        line = f"  {label:<32}{top.gbps:>7.2f}{top.gbps / direct:>10.2f}x"
        if label.startswith("nft"):
            met = top.gbps / direct >= GOAL_KERNEL_RATIO
            line += f"   goal within 10 % of direct: {'MET' if met else 'NOT MET'}"
        print(line)


def environment(socat: str | None) -> None:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nft = shutil.which("nft")
    nft_version = (
        subprocess.run([nft, "-v"], capture_output=True, text=True, check=False).stdout.strip()
        if nft
        else "absent"
    )
    cores = len(os.sched_getaffinity(0))
    print("forward benchmark: userspace relay vs socat; kernel DNAT vs routing")
    print(f"  python {platform.python_version()} | {platform.system()} {platform.release()}")
    print(f"  cpu {cpu} | {cores} usable cores | load {os.getloadavg()[0]:.2f}")
    print(f"  {socat or 'socat absent'} | {nft_version} | euid {os.geteuid()}")
    if cores <= 2:
        print(
            f"  WARNING: {cores} shared cores: source, relay and sink compete for them and other"
            " tenants may too; expect +-20 % between runs, compare ratios within one run."
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ROLES:
        ROLES[args[0]](args[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller transfers, one repeat")
    parser.add_argument("--mib", type=int, help="MiB per TCP transfer (default 1024, quick 256)")
    parser.add_argument("--repeats", type=int, help="repeats per TCP figure (default 3, quick 1)")
    parser.add_argument("--udp-seconds", type=float, help="UDP blast length (default 3, quick 1)")
    parser.add_argument("--no-netns", action="store_true", help="skip the kernel-path part")
    options = parser.parse_args(args)
    settings = Settings(
        total=(options.mib or (256 if options.quick else 1024)) * MIB,
        repeats=options.repeats or (1 if options.quick else 3),
        udp_seconds=options.udp_seconds or (1.0 if options.quick else 3.0),
        netns=not options.no_netns,
    )
    started = time.monotonic()
    socat = ensure_socat()
    environment(socat)
    part_tcp(settings, socat is not None)
    part_udp(settings, socat is not None)
    if settings.netns:
        try:
            part_kernel(settings)
        except Exception as exc:  # a lab that cannot be built here is no reason to lose the rest
            print(f"\nKernel path: failed ({type(exc).__name__}: {exc})")
    else:
        print("\nKernel path: skipped (--no-netns)")
    print(f"\n(run time {time.monotonic() - started:.0f} s, load now {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
