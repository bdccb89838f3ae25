"""SOAP and SSDP benchmark: our daemon against Debian's miniupnpd, side by side, in a netns lab.

    sudo .venv/bin/python bench/soap.py [--quick] [--only igd|miniupnpd]

Root only. For each daemon in turn, a fresh lab (tests/netns/lab.py: gw, lan1, lan2, wan) is
built, the daemon is started in the gateway namespace, and one client process started from this
file inside lan1 (198.18.0.10) drives it over HTTP, one TCP connection per request like
miniupnpc, timing each request with time.perf_counter:

1. GetExternalIPAddress, sequential (the HTTP + SOAP floor);
2. AddPortMapping + DeletePortMapping pairs, sequential: requests/s, p50, p99;
3. the same with 16 concurrent clients;
4. filling N (1000) mappings with sequential AddPortMapping: seconds;
5. enumerating them with GetGenericPortMappingEntry 0..N-1, then N (713 expected);
6. GetListOfPortMappings over the N: chunks of 100 ports (miniupnpd 2.3.1 crashes above 128
   entries per call, miniupnpd-reference.md 8.1), and for igd also one call;
7. DeletePortMappingRange over the N: chunks of 100, and for igd also one call (after a refill);
8. SSDP M-SEARCH (ST InternetGatewayDevice:1, MX 1) to the first reply, multicast and unicast.

Then one table: each figure for both daemons, the ratio (how many times better igd is) and
whether the goal of the issue is met. Server CPU per request comes from /proc/PID/stat.

Daemons:
- igd: `python -m igd serve --lan br-lan --wan wan0 --http-port 5000 --allow-private-external
  --config FILE` where FILE raises quota_per_client to 2000 (default 128) for the fill.
- miniupnpd (installed with apt-get when missing, its service disabled): the configuration of
  miniupnpd-reference.md section 5 (nftables backend, secure_mode, STUN against a tiny responder
  on the WAN host because 198.19.0.1 counts as reserved), listening on br-lan, HTTP port 5555,
  daemonized without logging (debug logging costs about 10x CPU, reference 4.9).

Every process is bounded in time and torn down with its lab, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

_REPO: Final = Path(__file__).resolve().parent.parent
if str(_REPO / "tests") not in sys.path:
    sys.path.insert(0, str(_REPO / "tests"))

from netns.lab import (  # noqa: E402  (tests/ is put on sys.path just above)
    GW_LAN,
    GW_WAN_IF,
    LAN1,
    LAN_BRIDGE,
    WAN_HOST,
    Lab,
    LabError,
    LabProcess,
    lab_skip_reason,
)

# ---- Parameters ---------------------------------------------------------------------------------

IGD_HTTP_PORT: Final = 5000
MINI_HTTP_PORT: Final = 5555
STUN_PORT: Final = 3478
SSDP_GROUP: Final = "239.255.255.250"
SSDP_PORT: Final = 1900
SSDP_ST: Final = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
CLIENTS: Final = 16
CHUNK: Final = 100
"""Ports per GetListOfPortMappings / DeletePortMappingRange call where chunks are used."""
FILL_BASE: Final = 20000
SEQ_BASE: Final = 30000
CONC_BASE: Final = 40000
LEASE_S: Final = 3600
REQUEST_TIMEOUT_S: Final = 15.0
"""One SOAP request, connection included (a dropped SYN is retried after 1, 3, 7 s)."""
SSDP_TIMEOUT_S: Final = 2.5
CLIENT_LIFETIME_S: Final = 900
"""The client and STUN helper processes end themselves after this, whatever happens."""
START_TIMEOUT_S: Final = 20.0
OP_TIMEOUT_S: Final = 240.0
IGD_QUOTA: Final = 2000
IGD_MAX_MAPPINGS: Final = 16384
GOAL_RATE_FACTOR: Final = 5.0
GOAL_P99_MS: Final = 20.0
GOAL_FILL_S: Final = 2.0
GOAL_DELETE_S: Final = 1.0
IGD_NAME: Final = "igd"
MINI_NAME: Final = "miniupnpd"

# miniupnpd-reference.md section 4 item 3/4: miniupnpd 2.3.1 never creates its table or chains.
MINI_NFT: Final = f"""\
table inet miniupnpd {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "{LAN_BRIDGE}" oifname "{GW_WAN_IF}" accept
        iifname "{LAN_BRIDGE}" oifname "{LAN_BRIDGE}" accept
        jump miniupnpd
    }}
    chain miniupnpd {{
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"""


def mini_config(state_dir: Path) -> str:
    """miniupnpd-reference.md section 5, with the lab's interface names."""
    return f"""\
ext_ifname={GW_WAN_IF}
listening_ip={LAN_BRIDGE}
http_port={MINI_HTTP_PORT}
enable_upnp=yes
enable_natpmp=yes
secure_mode=yes
system_uptime=yes
force_igd_desc_v1=no
lease_file={state_dir}/upnp.leases
minissdpdsocket={state_dir}/minissdpd.sock
ext_perform_stun=yes
ext_stun_host={WAN_HOST.ip}
ext_stun_port={STUN_PORT}
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
uuid={uuid.uuid4()}
notify_interval=30
min_lifetime=120
max_lifetime=86400
allow 1024-65535 198.18.0.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""


def igd_config() -> str:
    return f"quota_per_client = {IGD_QUOTA}\nmax_mappings = {IGD_MAX_MAPPINGS}\n"


@dataclass(frozen=True)
class Settings:
    getext: int  # GetExternalIPAddress requests
    pairs: int  # sequential add/delete pairs
    conc_pairs: int  # add/delete pairs per concurrent client
    mappings: int  # fill / enumerate / list / range-delete size
    ssdp_samples: int


DEFAULT: Final = Settings(getext=300, pairs=300, conc_pairs=30, mappings=1000, ssdp_samples=20)
QUICK: Final = Settings(getext=50, pairs=50, conc_pairs=5, mappings=200, ssdp_samples=6)


# ==== Client side: runs inside lan1, stdlib only ================================================


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str
    service: str  # e.g. urn:schemas-upnp-org:service:WANIPConnection:2


@dataclass
class Outcome:
    status: int  # HTTP status; 0 when no answer (timeout, refused, reset)
    body: str
    seconds: float

    @property
    def error(self) -> str | None:
        """None for 200, else the UPnP error code or what went wrong."""
        if self.status == 200:
            return None
        code = re.search(r"<errorCode>(\d+)</errorCode>", self.body)
        if code:
            return code.group(1)
        return f"http {self.status}" if self.status else self.body[:80]


async def http(
    host: str, port: int, request: bytes, timeout_s: float = REQUEST_TIMEOUT_S
) -> Outcome:
    """One request on a fresh TCP connection; time from connect() to the last body byte."""
    start = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, _, header_text = head.decode("latin-1").partition("\r\n")
            status = int(status_line.split()[1])
            length = re.search(r"(?im)^content-length:\s*(\d+)", header_text)
            if length:
                body = await reader.readexactly(int(length.group(1)))
            else:
                body = await reader.read()
            seconds = time.perf_counter() - start
            return Outcome(status, body.decode("utf-8", "replace"), seconds)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        return Outcome(0, f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def soap_request(endpoint: Endpoint, action: str, args: Sequence[tuple[str, object]]) -> bytes:
    inner = "".join(f"<{name}>{value}</{name}>" for name, value in args)
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:{action} xmlns:u="{endpoint.service}">{inner}</u:{action}></s:Body></s:Envelope>'
    ).encode()
    head = (
        f"POST {endpoint.path} HTTP/1.1\r\n"
        f"Host: {endpoint.host}:{endpoint.port}\r\n"
        'Content-Type: text/xml; charset="utf-8"\r\n'
        f'SOAPAction: "{endpoint.service}#{action}"\r\n'
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def soap(endpoint: Endpoint, action: str, *args: tuple[str, object]) -> Outcome:
    return await http(endpoint.host, endpoint.port, soap_request(endpoint, action, args))


def add_args(port: int, client: str) -> tuple[tuple[str, object], ...]:
    return (
        ("NewRemoteHost", ""),
        ("NewExternalPort", port),
        ("NewProtocol", "TCP"),
        ("NewInternalPort", port),
        ("NewInternalClient", client),
        ("NewEnabled", 1),
        ("NewPortMappingDescription", f"bench-{port}"),
        ("NewLeaseDuration", LEASE_S),
    )


def key_args(port: int) -> tuple[tuple[str, object], ...]:
    return (("NewRemoteHost", ""), ("NewExternalPort", port), ("NewProtocol", "TCP"))


def range_args(start: int, end: int, count: int | None) -> tuple[tuple[str, object], ...]:
    args: tuple[tuple[str, object], ...] = (
        ("NewStartPort", start),
        ("NewEndPort", end),
        ("NewProtocol", "TCP"),
        ("NewManage", 0),
    )
    return args if count is None else (*args, ("NewNumberOfPorts", count))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


class Recorder:
    """Latencies and errors of one measured phase, plus the client's own CPU time."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.by_action: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self._cpu = 0.0
        self._wall = 0.0
        self.wall_s = 0.0
        self.cpu_s = 0.0

    def __enter__(self) -> Recorder:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu = usage.ru_utime + usage.ru_stime
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu_s = usage.ru_utime + usage.ru_stime - self._cpu

    def note(self, outcome: Outcome, expected: str | None = None, action: str = "") -> bool:
        """Record it; True when its result (None = 200, else an error code) was expected."""
        self.latencies.append(outcome.seconds)
        self.by_action.setdefault(action, []).append(outcome.seconds)
        error = outcome.error
        if error != expected:
            label = error or "200"
            self.errors[label] = self.errors.get(label, 0) + 1
            return False
        return True

    def result(self, **extra: object) -> dict[str, object]:
        n = len(self.latencies)
        return {
            "requests": n,
            "seconds": self.wall_s,
            "rate": n / self.wall_s if self.wall_s > 0 else 0.0,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "max_ms": max(self.latencies, default=0.0) * 1000,
            "errors": self.errors,
            "client_cpu_ms_per_req": self.cpu_s * 1000 / n if n else 0.0,
            **{
                f"{action}_{pct}_ms": percentile(values, int(pct[1:])) * 1000
                for action, values in self.by_action.items()
                if action
                for pct in ("p50", "p99")
            },
            **extra,
        }


def count_listed(body: str) -> int:
    """PortMappingEntry elements in a GetListOfPortMappings answer (CDATA or escaped)."""
    return len(re.findall(r"NewExternalPort(?:>|&gt;)", body)) // 2


async def op_discover(params: dict[str, Any]) -> dict[str, object]:
    """Fetch the description (retrying until `wait_s`), find WANIPConnection's control URL."""
    url = str(params["location"])
    match = re.fullmatch(r"http://([^/:]+):(\d+)(/.*)", url)
    if not match:
        raise ValueError(f"bad location {url!r}")
    host, port, path = match.group(1), int(match.group(2)), match.group(3)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    deadline = time.monotonic() + float(params.get("wait_s", 0))
    while True:
        outcome = await http(host, port, request, timeout_s=3.0)
        if outcome.status == 200 or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    if outcome.status != 200:
        return {"ok": False, "error": f"GET {url}: {outcome.error}"}
    for block in re.findall(r"<service>(.*?)</service>", outcome.body, re.S):
        service = re.search(r"<serviceType>(urn:[^<]*:WANIPConnection:\d+)</serviceType>", block)
        control = re.search(r"<controlURL>([^<]*)</controlURL>", block)
        if service and control:
            return {
                "ok": True,
                "host": host,
                "port": port,
                "path": control.group(1),
                "service": service.group(1),
            }
    return {"ok": False, "error": f"no WANIPConnection in {url}"}


async def op_getext(endpoint: Endpoint, params: dict[str, Any]) -> dict[str, object]:
    with Recorder() as rec:
        for _ in range(int(params["count"])):
            rec.note(await soap(endpoint, "GetExternalIPAddress"))
    return rec.result()


async def op_addel(endpoint: Endpoint, params: dict[str, Any]) -> dict[str, object]:
    """`clients` concurrent clients, each adding then deleting `pairs` mappings in turn."""
    clients, pairs, base = int(params["clients"]), int(params["pairs"]), int(params["base"])
    internal = str(params["client"])
    rec = Recorder()

    async def one_client(index: int) -> None:
        for k in range(pairs):
            port = base + index * pairs + k
            added = await soap(endpoint, "AddPortMapping", *add_args(port, internal))
            rec.note(added, action="add")
            rec.note(await soap(endpoint, "DeletePortMapping", *key_args(port)), action="delete")

    with rec:
        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return rec.result(clients=clients)


async def op_fill(endpoint: Endpoint, params: dict[str, Any]) -> dict[str, object]:
    count, base, internal = int(params["count"]), int(params["base"]), str(params["client"])
    with Recorder() as rec:
        for port in range(base, base + count):
            rec.note(await soap(endpoint, "AddPortMapping", *add_args(port, internal)))
    edge = min(100, count)
    return rec.result(
        first_ms=statistics.fmean(rec.latencies[:edge]) * 1000,
        last_ms=statistics.fmean(rec.latencies[-edge:]) * 1000,
    )


async def op_generic(endpoint: Endpoint, params: dict[str, Any]) -> dict[str, object]:
    """GetGenericPortMappingEntry 0..count-1 (200 expected), then count (713 expected)."""
    count = int(params["count"])
    with Recorder() as rec:
        for index in range(count):
            rec.note(
                await soap(endpoint, "GetGenericPortMappingEntry", ("NewPortMappingIndex", index))
            )
        end_ok = rec.note(
            await soap(endpoint, "GetGenericPortMappingEntry", ("NewPortMappingIndex", count)),
            expected="713",
        )
    return rec.result(end_ok=end_ok)


async def op_list(endpoint: Endpoint, params: dict[str, Any]) -> dict[str, object]:
    """GetListOfPortMappings over [base, base+count) in calls of `chunk` ports."""
    base, count, chunk = int(params["base"]), int(params["count"]), int(params["chunk"])
    listed = 0
    with Recorder() as rec:
        for start in range(base, base + count, chunk):
            end = min(start + chunk, base + count) - 1
            number = 0 if chunk >= count else end - start + 1
            outcome = await soap(endpoint, "GetListOfPortMappings", *range_args(start, end, number))
            if rec.note(outcome):
                listed += count_listed(outcome.body)
    return rec.result(listed=listed, calls=len(rec.latencies))


async def op_delrange(endpoint: Endpoint, params: dict[str, Any]) -> dict[str, object]:
    """DeletePortMappingRange over [base, base+count) in calls of `chunk`; then check empty."""
    base, count, chunk = int(params["base"]), int(params["count"]), int(params["chunk"])
    with Recorder() as rec:
        for start in range(base, base + count, chunk):
            end = min(start + chunk, base + count) - 1
            rec.note(await soap(endpoint, "DeletePortMappingRange", *range_args(start, end, None)))
    left = await soap(endpoint, "GetGenericPortMappingEntry", ("NewPortMappingIndex", 0))
    return rec.result(empty_after=left.error == "713", calls=len(rec.latencies))


def _ssdp_once(target: str, source: str, multicast: bool) -> float | None:
    """Seconds from sending one M-SEARCH to its first matching reply; None on timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((source, 0))
        if multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        destination = (SSDP_GROUP if multicast else target, SSDP_PORT)
        message = (
            "M-SEARCH * HTTP/1.1\r\n"
            f"HOST: {destination[0]}:{SSDP_PORT}\r\n"
            'MAN: "ssdp:discover"\r\n'
            "MX: 1\r\n"
            f"ST: {SSDP_ST}\r\n\r\n"
        ).encode()
        start = time.perf_counter()
        sock.sendto(message, destination)
        deadline = start + SSDP_TIMEOUT_S
        while (remaining := deadline - time.perf_counter()) > 0:
            sock.settimeout(remaining)
            try:
                data, _ = sock.recvfrom(4096)
            except TimeoutError:
                break
            text = data.decode("latin-1")
            if text.startswith("HTTP/1.1 200") and re.search(
                rf"(?im)^ST:\s*{re.escape(SSDP_ST)}\s*$", text
            ):
                return time.perf_counter() - start
        return None
    finally:
        sock.close()


async def op_ssdp(params: dict[str, Any]) -> dict[str, object]:
    samples, multicast = int(params["samples"]), bool(params["multicast"])
    times: list[float] = []
    timeouts = 0
    for _ in range(samples):
        took = _ssdp_once(str(params["target"]), str(params["source"]), multicast)
        if took is None:
            timeouts += 1
        else:
            times.append(took * 1000)
        await asyncio.sleep(0.05)
    return {
        "median_ms": statistics.median(times) if times else None,
        "min_ms": min(times, default=None),
        "max_ms": max(times, default=None),
        "timeouts": timeouts,
    }


async def client_op(endpoint: Endpoint | None, command: dict[str, Any]) -> dict[str, object]:
    op = command["op"]
    if op == "discover":
        return await op_discover(command)
    if op == "ssdp":
        return await op_ssdp(command)
    if endpoint is None:
        raise ValueError("discover first")
    handlers: dict[str, Callable[[Endpoint, dict[str, Any]], Any]] = {
        "getext": op_getext,
        "addel": op_addel,
        "fill": op_fill,
        "generic": op_generic,
        "list": op_list,
        "delrange": op_delrange,
    }
    result: dict[str, object] = await handlers[op](endpoint, command)
    return result


def client_main() -> int:
    """JSON command per stdin line -> JSON result per stdout line, until EOF or `quit`."""
    signal.alarm(CLIENT_LIFETIME_S)
    endpoint: Endpoint | None = None
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            result = asyncio.run(client_op(endpoint, command))
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if command["op"] == "discover" and result.get("ok"):
            endpoint = Endpoint(
                str(result["host"]),
                int(str(result["port"])),
                str(result["path"]),
                str(result["service"]),
            )
        print(json.dumps(result), flush=True)
    return 0


def stun_main(bind: str, port: int) -> int:
    """Answer STUN binding requests with MAPPED-ADDRESS = the source (enough for miniupnpd 2.3.1:
    reference 4.1); runs until stdin closes or CLIENT_LIFETIME_S."""
    signal.alarm(CLIENT_LIFETIME_S)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 4096):
            return 0
        if sock not in ready:
            continue
        data, (host, sport) = sock.recvfrom(2048)
        if len(data) < 20 or data[:2] != b"\x00\x01":
            continue
        attribute = struct.pack("!HHBBH4s", 0x0001, 8, 0, 1, sport, socket.inet_aton(host))
        sock.sendto(
            struct.pack("!HH", 0x0101, len(attribute)) + data[4:20] + attribute, (host, sport)
        )


# ==== Orchestration: root namespace ==============================================================


class BenchError(RuntimeError):
    pass


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of `pid` from /proc (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_overflows(lab: Lab) -> int:
    """TcpExt ListenOverflows of the gateway namespace."""
    lines = lab.run(lab.gw, "cat", "/proc/net/netstat").stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("ListenOverflows", 0))
    return 0


@dataclass
class Run:
    """One daemon's figures: raw client results per phase, and notes."""

    name: str
    label: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Driver:
    """Sends commands to the client process in lan1, measuring the server's CPU around each."""

    def __init__(self, lab: Lab, client: LabProcess, run: Run, server_pid: int | None) -> None:
        self.lab = lab
        self.client = client
        self.run = run
        self.server_pid = server_pid

    def command(self, name: str | None, op: str, **params: object) -> dict[str, Any]:
        before = cpu_seconds(self.server_pid) if self.server_pid else None
        overflows = listen_overflows(self.lab)
        self.client.send_line(json.dumps({"op": op, **params}))
        result: dict[str, Any] = self.client.read_json(timeout_s=OP_TIMEOUT_S)
        after = cpu_seconds(self.server_pid) if self.server_pid else None
        if before is not None and after is not None and result.get("requests"):
            result["server_cpu_ms_per_req"] = (after - before) * 1000 / result["requests"]
        result["listen_overflows"] = listen_overflows(self.lab) - overflows
        if name is not None:
            self.run.results[name] = result
            if result.get("errors"):
                self.run.problems.append(f"{name}: unexpected answers {result['errors']}")
            if result.get("ok") is False:
                self.run.problems.append(f"{name}: {result.get('error')}")
        return result


def phases(driver: Driver, settings: Settings, *, one_call_forms: bool) -> None:
    """Every measurement, in order, against an already discovered daemon."""
    n, me = settings.mappings, str(LAN1.ip)
    # Warm-up (imports, caches, first connections): not measured.
    driver.command(None, "getext", count=10)
    driver.command(None, "addel", clients=1, pairs=5, base=SEQ_BASE + 5000, client=me)
    driver.command("getext", "getext", count=settings.getext)
    driver.command("addel_seq", "addel", clients=1, pairs=settings.pairs, base=SEQ_BASE, client=me)
    driver.command(
        "addel_conc", "addel", clients=CLIENTS, pairs=settings.conc_pairs, base=CONC_BASE, client=me
    )
    driver.command("fill", "fill", count=n, base=FILL_BASE, client=me)
    result = driver.command("generic", "generic", count=n)
    if result.get("requests") and not result.get("end_ok"):
        driver.run.problems.append(f"generic: index {n} did not answer 713")
    if one_call_forms:
        check_listed(driver, driver.command("list_one", "list", base=FILL_BASE, count=n, chunk=n))
    check_listed(
        driver, driver.command("list_chunks", "list", base=FILL_BASE, count=n, chunk=CHUNK)
    )
    check_empty(
        driver, driver.command("del_chunks", "delrange", base=FILL_BASE, count=n, chunk=CHUNK)
    )
    if one_call_forms:
        driver.command("refill", "fill", count=n, base=FILL_BASE, client=me)
        check_empty(driver, driver.command("del_one", "delrange", base=FILL_BASE, count=n, chunk=n))
    common = {"target": str(GW_LAN.ip), "source": me, "samples": settings.ssdp_samples}
    driver.command("ssdp_multicast", "ssdp", multicast=True, **common)
    driver.command("ssdp_unicast", "ssdp", multicast=False, **common)


def check_listed(driver: Driver, result: dict[str, Any]) -> None:
    expected = driver.run.results["fill"].get("requests", 0)
    if result.get("listed") != expected:
        driver.run.problems.append(
            f"GetListOfPortMappings listed {result.get('listed')} of {expected} mappings"
        )


def check_empty(driver: Driver, result: dict[str, Any]) -> None:
    if not result.get("empty_after"):
        driver.run.problems.append("DeletePortMappingRange left mappings behind")


def start_client(lab: Lab) -> LabProcess:
    return lab.spawn(lab.lan1, sys.executable, str(Path(__file__).resolve()), "client")


def discover(driver: Driver, location: str, wait_s: float) -> None:
    result = driver.command(None, "discover", location=location, wait_s=wait_s)
    if not result.get("ok"):
        raise BenchError(f"{driver.run.name}: {result.get('error')}")
    driver.run.notes.append(f"control {result['path']} ({result['service']})")


def bench_igd(settings: Settings) -> Run:
    run = Run(IGD_NAME, "igd")
    with tempfile.TemporaryDirectory(prefix="igd-bench-") as tmp, Lab() as lab:
        config = Path(tmp) / "bench.toml"
        config.write_text(igd_config())
        state = Path(tmp) / "state"
        state.mkdir()
        daemon = lab.spawn(
            lab.gw, sys.executable, "-m", "igd", "serve", "--lan", LAN_BRIDGE,
            "--wan", GW_WAN_IF, "--http-port", str(IGD_HTTP_PORT), "--state-dir", str(state),
            "--allow-private-external", "--config", str(config), cwd=str(_REPO),
        )  # fmt: skip
        client = None
        try:
            line = daemon.read_line(timeout_s=START_TIMEOUT_S)
            run.notes.append(line.split(" serving ")[0])
            urls = re.findall(r"IGD:(\d) (http://\S+)", line)
            location = dict(urls).get("2", f"http://{GW_LAN.ip}:{IGD_HTTP_PORT}/igd2/rootDesc.xml")
            time.sleep(0.3)  # the "running: backend ..." log line follows the ready line
            backend = re.search(r"running: backend (\w+)", daemon.stderr_text())
            run.label = f"igd ({backend.group(1) if backend else '?'} backend)"
            run.notes.append(
                f"started with --config: quota_per_client = {IGD_QUOTA} (default 128), "
                f"max_mappings = {IGD_MAX_MAPPINGS}"
            )
            client = start_client(lab)
            driver = Driver(lab, client, run, daemon.pid)
            discover(driver, location, wait_s=5)
            phases(driver, settings, one_call_forms=True)
        finally:
            if client is not None:
                client.stop()
            status = daemon.stop(timeout_s=5)
            errors = [
                text
                for text in daemon.stderr_text().splitlines()
                if re.search(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b", text)
            ]
            if status not in (0, None) or errors:
                run.problems.append(f"igd exit status {status}; log: {errors[:5]}")
    return run


def ensure_miniupnpd() -> list[str]:
    """Install Debian's miniupnpd (nftables flavour) when missing, never leaving it running
    outside the lab; the notes to print."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if shutil.which("miniupnpd", path=path):
        return []
    notes = ["miniupnpd was missing: installed miniupnpd miniupnpd-nftables with apt-get"]
    policy = Path("/usr/sbin/policy-rc.d")
    added_policy = not policy.exists()
    if added_policy:  # no service start during the install (reference 4.11)
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(
            ["debconf-set-selections"],
            input="miniupnpd miniupnpd/start_daemon boolean false\n",
            text=True,
            env=env,
            check=False,
            timeout=60,
            capture_output=True,
        )
        install = [
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "miniupnpd",
            "miniupnpd-nftables",
            "nftables",
        ]
        result = subprocess.run(
            install, env=env, check=False, timeout=600, capture_output=True, text=True
        )
        if result.returncode != 0:
            subprocess.run(
                ["apt-get", "update"], env=env, check=False, timeout=300, capture_output=True
            )
            result = subprocess.run(
                install, env=env, check=False, timeout=600, capture_output=True, text=True
            )
            if result.returncode != 0:
                raise BenchError(f"apt-get install miniupnpd failed: {result.stderr[-500:]}")
    finally:
        if added_policy:
            policy.unlink(missing_ok=True)
    if shutil.which("systemctl"):
        subprocess.run(
            ["systemctl", "disable", "--now", "miniupnpd"],
            check=False,
            timeout=60,
            capture_output=True,
        )
    root_ns = os.readlink("/proc/1/ns/net")
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            comm = (entry / "comm").read_text().strip()
            if comm == "miniupnpd" and os.readlink(entry / "ns" / "net") == root_ns:
                notes.append(
                    f"WARNING: a miniupnpd (pid {entry.name}) runs in the root namespace after "
                    "the install; stop it (systemctl stop miniupnpd)"
                )
    return notes


def mini_version() -> str:
    result = subprocess.run(
        ["miniupnpd", "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    return " ".join((result.stdout + result.stderr).split())


def bench_miniupnpd(settings: Settings) -> Run:
    run = Run(MINI_NAME, "miniupnpd")
    run.notes += ensure_miniupnpd()
    version = mini_version()
    run.label = "miniupnpd " + (version.split()[1] if len(version.split()) > 1 else "?")
    run.notes.append(version)
    if "nftables" not in version:
        run.problems.append("this miniupnpd is not the nftables flavour")
    with tempfile.TemporaryDirectory(prefix="mini-bench-") as tmp, Lab() as lab:
        state = Path(tmp)
        conf = state / "miniupnpd.conf"
        conf.write_text(mini_config(state))
        pidfile = state / "miniupnpd.pid"
        stun = lab.spawn(
            lab.wan,
            sys.executable,
            str(Path(__file__).resolve()),
            "stun",
            str(WAN_HOST.ip),
            str(STUN_PORT),
        )
        client = None
        pid: int | None = None
        try:
            if stun.read_line(timeout_s=START_TIMEOUT_S) != "ready":
                raise BenchError("the STUN responder did not start")
            lab.run(lab.gw, "nft", "-f", "-", input_text=MINI_NFT)
            # Daemonized, no log: as the reference figures (debug logging costs ~10x CPU).
            lab.run(lab.gw, "miniupnpd", "-f", str(conf), "-P", str(pidfile), timeout_s=15)
            client = start_client(lab)
            driver = Driver(lab, client, run, None)
            location = f"http://{GW_LAN.ip}:{MINI_HTTP_PORT}/rootDesc.xml"
            result = driver.command(None, "discover", location=location, wait_s=8)
            if not result.get("ok"):
                raise BenchError(f"miniupnpd did not answer: {mini_diagnosis(lab, conf)}")
            run.notes.append(f"control {result['path']} ({result['service']})")
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().split()[0])
            driver.server_pid = pid
            phases(driver, settings, one_call_forms=False)
            if pid is not None and cpu_seconds(pid) is None:
                run.problems.append("miniupnpd died during the run")
        finally:
            if client is not None:
                client.stop()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            stun.stop()
    return run


def mini_diagnosis(lab: Lab, conf: Path) -> str:
    """What `miniupnpd -d` says within a few seconds (the daemonized one logs nowhere)."""
    probe = lab.spawn(lab.gw, "miniupnpd", "-d", "-f", str(conf), "-P", "/dev/null")
    with contextlib.suppress(subprocess.TimeoutExpired):
        probe.wait(timeout_s=12)  # STUN alone may take 3 x 3 s before it gives up
    probe.stop()
    return probe.stderr_text()[-1200:] or "(no output)"


# ---- Report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str
    higher_is_better: bool
    pick: Callable[[dict[str, dict[str, Any]]], float | None]
    goal: str = ""
    goal_check: Callable[[float, float | None], bool] | None = None  # (igd value, ratio)


def pick(phase: str, key: str) -> Callable[[dict[str, dict[str, Any]]], float | None]:
    def get(results: dict[str, dict[str, Any]]) -> float | None:
        value = results.get(phase, {}).get(key)
        return float(value) if isinstance(value, int | float) else None

    return get


def rate_goal(_: float, ratio: float | None) -> bool:
    return ratio is not None and ratio >= GOAL_RATE_FACTOR


ROWS: Final = (
    Row("GetExternalIPAddress seq (HTTP+SOAP floor)", "req/s", True, pick("getext", "rate")),
    Row("Add+Delete seq", "req/s", True, pick("addel_seq", "rate"),
        f">= {GOAL_RATE_FACTOR:g}x", rate_goal),
    Row("Add+Delete seq p50", "ms", False, pick("addel_seq", "p50_ms")),
    Row("Add+Delete seq p99", "ms", False, pick("addel_seq", "p99_ms")),
    Row("  seq AddPortMapping p50", "ms", False, pick("addel_seq", "add_p50_ms")),
    Row("  seq DeletePortMapping p50", "ms", False, pick("addel_seq", "delete_p50_ms")),
    Row("Add+Delete seq server CPU", "ms/req", False, pick("addel_seq", "server_cpu_ms_per_req")),
    Row(f"Add+Delete {CLIENTS} clients", "req/s", True, pick("addel_conc", "rate"),
        f">= {GOAL_RATE_FACTOR:g}x", rate_goal),
    Row(f"Add+Delete {CLIENTS} clients p50", "ms", False, pick("addel_conc", "p50_ms")),
    Row(f"Add+Delete {CLIENTS} clients p99", "ms", False, pick("addel_conc", "p99_ms"),
        f"< {GOAL_P99_MS:g} ms", lambda v, _: v < GOAL_P99_MS),
    Row(f"Add+Delete {CLIENTS} clients max", "ms", False, pick("addel_conc", "max_ms")),
    Row(f"Add+Delete {CLIENTS} clients ListenOverflows", "", False,
        pick("addel_conc", "listen_overflows")),
    Row("fill N mappings (sequential adds)", "s", False, pick("fill", "seconds"),
        f"< {GOAL_FILL_S:g} s", lambda v, _: v < GOAL_FILL_S),
    Row("  fill: mean add, first 100", "ms", False, pick("fill", "first_ms")),
    Row("  fill: mean add, last 100", "ms", False, pick("fill", "last_ms")),
    Row("  fill: server CPU", "ms/req", False, pick("fill", "server_cpu_ms_per_req")),
    Row("GetGenericPortMappingEntry 0..N", "s", False, pick("generic", "seconds")),
    Row("  GetGeneric server CPU", "ms/req", False, pick("generic", "server_cpu_ms_per_req")),
    Row("GetListOfPortMappings, 1 call", "s", False, pick("list_one", "seconds")),
    Row(f"GetListOfPortMappings, {CHUNK}-port calls", "s", False, pick("list_chunks", "seconds")),
    Row("DeletePortMappingRange, 1 call", "s", False, pick("del_one", "seconds"),
        f"< {GOAL_DELETE_S:g} s", lambda v, _: v < GOAL_DELETE_S),
    Row(f"DeletePortMappingRange, {CHUNK}-port calls", "s", False, pick("del_chunks", "seconds"),
        f"< {GOAL_DELETE_S:g} s", lambda v, _: v < GOAL_DELETE_S),
    Row("SSDP M-SEARCH multicast, 1st reply, median", "ms", False,
        pick("ssdp_multicast", "median_ms")),
    Row("SSDP M-SEARCH unicast, 1st reply, median", "ms", False,
        pick("ssdp_unicast", "median_ms")),
)  # fmt: skip


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms" or unit == "ms/req":
        return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    if unit == "req/s":
        return f"{value:.0f} req/s"
    return f"{value:g}"


def report(runs: dict[str, Run], settings: Settings) -> list[str]:
    igd, mini = runs.get(IGD_NAME), runs.get(MINI_NAME)
    igd_label = igd.label if igd else "igd"
    mini_label = mini.label if mini else "miniupnpd"
    table: list[tuple[str, str, str, str, str]] = []
    for row in ROWS:
        metric = row.metric.replace("N mappings", f"{settings.mappings} mappings").replace(
            "0..N", f"0..{settings.mappings}"
        )
        a = row.pick(igd.results) if igd else None
        b = row.pick(mini.results) if mini else None
        ratio: float | None = None
        if a is not None and b is not None and a > 0 and b > 0:
            ratio = a / b if row.higher_is_better else b / a
        goal = ""
        if row.goal_check is not None and a is not None:
            met = row.goal_check(a, ratio)
            if row.goal_check is rate_goal and ratio is None:
                goal = f"n/a ({row.goal}: no miniupnpd figure)"
            else:
                goal = f"{'yes' if met else 'NO'} ({row.goal})"
        table.append(
            (metric, fmt(a, row.unit), fmt(b, row.unit), f"{ratio:.2f}x" if ratio else "-", goal)
        )
    header = ("metric", igd_label, mini_label, "ratio", "goal met? (igd)")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(5)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in table]
    return lines


def environment() -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"host: {platform.node()}  kernel {platform.release()}  python {platform.python_version()}",
        f"cpu: {os.cpu_count()} x {cpu}  load average {load}",
    ]


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    print(f"== {title} ...", flush=True)
    start = time.monotonic()
    yield
    print(f"   done in {time.monotonic() - start:.1f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["client"]:
        return client_main()
    if args[:1] == ["stun"]:
        return stun_main(args[1], int(args[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller N (a smoke run)")
    parser.add_argument("--only", choices=(IGD_NAME, MINI_NAME), help="measure one daemon")
    options = parser.parse_args(args)
    reason = lab_skip_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    settings = QUICK if options.quick else DEFAULT
    print("SOAP/SSDP benchmark: igd vs miniupnpd in a netns lab (LAN 198.18.0.0/24)")
    for text in environment():
        print("  " + text)
    print(
        "  WARNING: figures are noisy on a shared 2-core machine (client, daemon and other "
        "workloads share the CPUs); compare within one run, and prefer server CPU/req."
    )
    print(
        f"  N = {settings.mappings} mappings; {settings.pairs} sequential pairs; "
        f"{CLIENTS} clients x {settings.conc_pairs} pairs; {settings.ssdp_samples} SSDP samples"
        f"{' (--quick)' if options.quick else ''}"
    )
    runs: dict[str, Run] = {}
    failures: list[str] = []
    benches: list[tuple[str, Callable[[Settings], Run]]] = [
        (IGD_NAME, bench_igd),
        (MINI_NAME, bench_miniupnpd),
    ]
    for name, bench in benches:
        if options.only not in (None, name):
            continue
        try:
            with section(name):
                runs[name] = bench(settings)
        except (
            BenchError,
            LabError,
            TimeoutError,
            OSError,
            ValueError,
            subprocess.SubprocessError,
        ) as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"   FAILED: {exc}", flush=True)
    print()
    for line in report(runs, settings):
        print(line)
    print()
    print(
        "ratio: how many times better igd is (rate igd/miniupnpd; time miniupnpd/igd). "
        f"Goals (issue): >= {GOAL_RATE_FACTOR:g}x miniupnpd's add/delete rate, p99 < "
        f"{GOAL_P99_MS:g} ms with {CLIENTS} clients, {settings.mappings} mappings filled in < "
        f"{GOAL_FILL_S:g} s and range-deleted in < {GOAL_DELETE_S:g} s."
    )
    if any("memory" in run.label for run in runs.values()):
        print(
            "NOTE: igd runs its in-memory backend (no packets moved): the goals are meant for the "
            "nftables backend, these are the in-memory figures."
        )
    print(
        "SSDP: igd delays each multicast reply by a uniform draw in [0, MX] s (UDA, SSDP-34; "
        "MX 1 here: median ~500 ms expected) and answers unicast at once; miniupnpd 2.3.1 "
        "answers both after a fixed 50 ms and ignores MX."
    )
    if settings.mappings != DEFAULT.mappings:
        print(f"NOTE: --quick: N = {settings.mappings}, not 1000; the fill/delete goals scale.")
    for run in runs.values():
        for text in run.notes:
            print(f"{run.label}: {text}")
        conc = run.results.get("addel_conc", {})
        seq = run.results.get("addel_seq", {})
        if conc:
            print(
                f"{run.label}: client CPU {seq.get('client_cpu_ms_per_req', 0):.2f} ms/req "
                f"(seq), {conc.get('client_cpu_ms_per_req', 0):.2f} ms/req ({CLIENTS} clients); "
                f"server CPU {CLIENTS} clients "
                f"{conc.get('server_cpu_ms_per_req', float('nan')):.2f} ms/req"
            )
        for phase in ("ssdp_multicast", "ssdp_unicast"):
            s = run.results.get(phase)
            if s:
                print(
                    f"{run.label}: {phase}: min {fmt(s.get('min_ms'), 'ms')}, "
                    f"max {fmt(s.get('max_ms'), 'ms')}, timeouts {s.get('timeouts')}"
                )
    problems = failures + [f"{run.label}: {p}" for run in runs.values() for p in run.problems]
    for text in problems:
        print(f"PROBLEM {text}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
