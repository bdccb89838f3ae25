"""NAT-PMP benchmark: our daemon against Debian's miniupnpd, side by side, in a netns lab.

    sudo .venv/bin/python bench/natpmp.py [--quick] [--only igd|igd-nolimit|miniupnpd]

Root only. The companion of bench/soap.py, built on its pieces: for each daemon in turn, a fresh
lab (tests/netns/lab.py: gw, lan1, lan2, wan) is built, the daemon is started in the gateway
namespace, and one client process started from this file inside lan1 (198.18.0.10) sends RFC 6886
requests to 198.18.0.1:5351, timing each with time.perf_counter from the first transmission to
the matching answer:

1. external-address requests (opcode 0), sequential;
2. map + unmap pairs (opcode 2, TCP; unmap = lifetime 0), sequential: requests/s, p50, p99;
3. the same with 16 concurrent clients, each its own socket and its own LAN address
   (198.18.0.100-115, added to lan1), all in one asyncio process;
4. a fill of N (500) distinct TCP ports, then one "delete all" (internal port 0, lifetime 0):
   the fill's seconds and the delete's milliseconds, cross-checked over SOAP
   (GetGenericPortMappingEntry from 198.18.0.10: N entries before, none after).

NAT-PMP runs over UDP: a request is sent at 0, 250 and 750 ms and counted as lost at 1.75 s
(RFC 6886 3.1's doubling, cut to 3 tries; the delete-all gets 7). Retransmissions and losses are
counted, and each phase stops at a deadline, so a run stays bounded (about 2.5 min, --quick 30 s).
Phases are 3.5 s apart (1 s with --quick), so a per-source rate limiter starts each one full.

Daemons, in this order:
- igd: `python -m igd serve --lan br-lan --wan wan0 --allow-private-external --config FILE`,
  FILE = bench/soap.py's (quota_per_client 2000, default 128) plus `natpmp = true` (the default).
  --allow-private-external: the lab WAN 198.19.0.1 is reserved, and the external-address request
  would get result 3 without it.
- miniupnpd: exactly bench/soap.py's (miniupnpd-reference.md section 5: enable_natpmp=yes, the
  alias of enable_pcp_pmp; STUN against a tiny responder on the WAN host), daemonized, no log.
- igd-nolimit: igd again, with the per-source token bucket of UDP 5351 (20 requests/s after a
  burst of 64, ST-24; no setting exists) opened in-process, so the 1-source figures show the
  NAT-PMP path rather than the limiter. Not a shipped setup.

Every process is bounded in time and torn down with its lab, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

_REPO: Final = Path(__file__).resolve().parent.parent
for _path in (_REPO, _REPO / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from netns.lab import (  # noqa: E402  (tests/ is put on sys.path just above)
    GW_LAN,
    GW_WAN_IF,
    HOST_IF,
    LAN1,
    LAN_BRIDGE,
    WAN_HOST,
    Lab,
    LabError,
    LabProcess,
    lab_skip_reason,
)

from bench import soap  # noqa: E402  (and so is the repository root)

# ---- Parameters ---------------------------------------------------------------------------------

NATPMP_PORT: Final = 5351
CLIENTS: Final = 16
ALIAS_BASE: Final = 100
"""The concurrent clients use 198.18.0.100 .. 198.18.0.115, added to lan1's eth0."""
FIRST_TIMEOUT_S: Final = 0.25
"""RFC 6886 3.1: the first retransmission after 250 ms, each later one after twice as long."""
TRIES: Final = 3
"""Transmissions of one request before it counts as lost (250 + 500 + 1000 ms at most)."""
DELETE_ALL_TRIES: Final = 7
"""The delete-all may take seconds (miniupnpd 2.3.1: ~4 s for 500): up to 31.75 s."""
LIFETIME_S: Final = 3600
SEQ_BASE: Final = 30000
CONC_BASE: Final = 40000
FILL_BASE: Final = 20000
WARM_BASE: Final = 50000
OPCODE_EXTERNAL: Final = 0
OPCODE_MAP_TCP: Final = 2
RESULT_SUCCESS: Final = 0
IGD_NAME: Final = soap.IGD_NAME
NOLIMIT_NAME: Final = "igd-nolimit"
MINI_NAME: Final = soap.MINI_NAME
NO_LIMIT: Final = 1e9
"""Rate and burst of igd's per-source token bucket in the igd-nolimit run (shipped: 20/s, 64)."""


@dataclass(frozen=True)
class Settings:
    external: int  # external-address requests
    pairs: int  # sequential map/unmap pairs
    conc_pairs: int  # map/unmap pairs per concurrent client
    fill: int  # ports mapped before the delete-all
    deadline_s: float  # a phase stops sending after this
    pause_s: float  # between phases, so a per-source rate limiter starts each one full


DEFAULT: Final = Settings(
    external=500, pairs=500, conc_pairs=30, fill=500, deadline_s=30.0, pause_s=3.5
)
QUICK: Final = Settings(
    external=100, pairs=100, conc_pairs=5, fill=100, deadline_s=8.0, pause_s=1.0
)


def alias(index: int) -> str:
    return f"198.18.0.{ALIAS_BASE + index}"


IGD_NATPMP_KEYS: Final = "natpmp = true\n"
"""NAT-PMP is on by default (`--no-natpmp` turns it off); said here so the intent is visible."""


# ==== Client side: runs inside lan1 =============================================================


def map_request(opcode: int, internal: int, external: int, lifetime: int) -> bytes:
    """RFC 6886 3.3: version 0, opcode 1 (UDP) or 2 (TCP), reserved, ports, lifetime."""
    return struct.pack("!BBHHHI", 0, opcode, 0, internal, external, lifetime)


EXTERNAL_REQUEST: Final = struct.pack("!BB", 0, OPCODE_EXTERNAL)


@dataclass
class Answer:
    result: int | None  # the NAT-PMP result code; None when every try went unanswered
    seconds: float  # first transmission to the matching answer (or to giving up)
    timeouts: int  # transmissions that went unanswered
    external_port: int = 0
    lifetime: int = 0
    address: str = ""
    epoch: int = 0


Parser = Callable[[bytes], Answer | None]


def external_parser(data: bytes) -> Answer | None:
    """RFC 6886 3.2 answer: 0, 128, result, epoch, address (12 octets; result alone if short)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 128 + OPCODE_EXTERNAL:
        return None
    result = struct.unpack_from("!H", data, 2)[0]
    if len(data) < 12:
        return Answer(result, 0.0, 0)
    epoch, address = struct.unpack_from("!I4s", data, 4)
    return Answer(result, 0.0, 0, address=socket.inet_ntoa(address), epoch=epoch)


def map_parser(opcode: int, internal: int, lifetime: int) -> Parser:
    """RFC 6886 3.3 answer to this very request: opcode + 128 and the same internal port; a
    stale answer to the other half of a map/unmap pair (lifetime 0 vs not) is skipped."""

    def parse(data: bytes) -> Answer | None:
        if len(data) < 4 or data[0] != 0 or data[1] != 128 + opcode:
            return None
        result = struct.unpack_from("!H", data, 2)[0]
        if len(data) < 16:
            return Answer(result, 0.0, 0)
        epoch, port, external, granted = struct.unpack_from("!IHHI", data, 4)
        if port != internal:
            return None
        if result == RESULT_SUCCESS and (granted == 0) != (lifetime == 0):
            return None
        return Answer(result, 0.0, 0, external_port=external, lifetime=granted, epoch=epoch)

    return parse


class Channel:
    """One NAT-PMP client: a UDP socket bound to `source`, connected to the server."""

    def __init__(self, source: str, server: tuple[str, int]) -> None:
        self.source = source
        self.server = server
        self.sock = self._open()

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((self.source, 0))
        sock.connect(self.server)
        return sock

    def close(self) -> None:
        self.sock.close()

    async def exchange(self, payload: bytes, parse: Parser, tries: int = TRIES) -> Answer:
        """Send, retransmit after 250, 500 ... ms; the first matching answer or a lost Answer."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        wait = FIRST_TIMEOUT_S
        timeouts = 0
        for _ in range(tries):
            deadline = loop.time() + wait
            try:
                async with asyncio.timeout_at(deadline):
                    await loop.sock_sendall(self.sock, payload)
                    while True:
                        answer = parse(await loop.sock_recv(self.sock, 1100))
                        if answer is not None:
                            answer.seconds = time.perf_counter() - start
                            answer.timeouts = timeouts
                            return answer
            except TimeoutError:
                pass
            except ConnectionRefusedError:  # ICMP port unreachable: nobody on 5351 (yet)
                await asyncio.sleep(max(0.0, deadline - loop.time()))
            timeouts += 1
            wait *= 2
        # A fresh socket (new source port): a late answer cannot pass for the next request's.
        self.sock.close()
        self.sock = self._open()
        return Answer(None, time.perf_counter() - start, timeouts)

    async def external(self) -> Answer:
        return await self.exchange(EXTERNAL_REQUEST, external_parser)

    async def map(self, internal: int, external: int, lifetime: int, tries: int = TRIES) -> Answer:
        payload = map_request(OPCODE_MAP_TCP, internal, external, lifetime)
        parse = map_parser(OPCODE_MAP_TCP, internal, lifetime)
        return await self.exchange(payload, parse, tries)


class Recorder(soap.Recorder):
    """bench/soap.py's recorder fed with NAT-PMP answers: latencies of answered requests (any
    result; a result other than 0 is counted as an error), retransmissions and losses apart."""

    def __init__(self, deadline_s: float) -> None:
        super().__init__()
        self.timeouts = 0
        self.lost = 0
        self.moved = 0  # granted external port other than the suggested one
        self.deadline = time.monotonic() + deadline_s
        self.truncated = False

    def running(self) -> bool:
        """False once the phase deadline has passed (and remember that it was cut short)."""
        if time.monotonic() < self.deadline:
            return True
        self.truncated = True
        return False

    def answer(self, answer: Answer, action: str = "") -> bool:
        """Record it; True for result 0."""
        self.timeouts += answer.timeouts
        if answer.result is None:
            self.lost += 1
            self.errors["lost"] = self.errors.get("lost", 0) + 1
            return False
        ok = answer.result == RESULT_SUCCESS
        body = "" if ok else f"NAT-PMP result {answer.result}"
        self.note(soap.Outcome(200 if ok else 0, body, answer.seconds), action=action)
        return ok

    def result(self, **extra: object) -> dict[str, object]:
        return super().result(
            timeouts=self.timeouts,
            lost=self.lost,
            moved=self.moved,
            truncated=self.truncated,
            **extra,
        )


def server() -> tuple[str, int]:
    return str(GW_LAN.ip), NATPMP_PORT


async def op_ready(params: dict[str, Any]) -> dict[str, object]:
    """External-address requests until one succeeds or `wait_s` passes (start-up, STUN)."""
    channel = Channel(str(params["source"]), server())
    deadline = time.monotonic() + float(params["wait_s"])
    last: Answer | None = None
    try:
        while True:
            last = await channel.external()
            if last.result == RESULT_SUCCESS or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        channel.close()
    return {
        "ok": last.result == RESULT_SUCCESS,
        "result": last.result,
        "address": last.address,
        "epoch": last.epoch,
    }


async def op_external(params: dict[str, Any]) -> dict[str, object]:
    channel = Channel(str(params["source"]), server())
    rec = Recorder(float(params["deadline_s"]))
    addresses: set[str] = set()
    try:
        with rec:
            for _ in range(int(params["count"])):
                if not rec.running():
                    break
                answer = await channel.external()
                if rec.answer(answer):
                    addresses.add(answer.address)
    finally:
        channel.close()
    return rec.result(addresses=sorted(addresses))


async def op_pairs(params: dict[str, Any]) -> dict[str, object]:
    """One client per source address, each mapping then unmapping `pairs` ports in turn."""
    sources, pairs, base = list(params["sources"]), int(params["pairs"]), int(params["base"])
    rec = Recorder(float(params["deadline_s"]))

    async def one_client(index: int, channel: Channel) -> None:
        for k in range(pairs):
            if not rec.running():
                return
            port = base + index * pairs + k
            mapped = await channel.map(port, port, LIFETIME_S)
            if rec.answer(mapped, "map") and mapped.external_port != port:
                rec.moved += 1
            rec.answer(await channel.map(port, 0, 0), "unmap")

    channels = [Channel(str(source), server()) for source in sources]
    try:
        with rec:
            await asyncio.gather(*(one_client(i, c) for i, c in enumerate(channels)))
    finally:
        for channel in channels:
            channel.close()
    return rec.result(clients=len(channels))


async def soap_endpoint(location: str) -> soap.Endpoint | None:
    found = await soap.op_discover({"location": location, "wait_s": 3})
    if not found.get("ok"):
        return None
    return soap.Endpoint(
        str(found["host"]), int(str(found["port"])), str(found["path"]), str(found["service"])
    )


async def soap_entries(endpoint: soap.Endpoint, limit: int) -> int | None:
    """How many entries GetGenericPortMappingEntry shows this host: a binary search for the
    first index answering 713; None on any other answer, `limit` when there are that many."""

    async def exists(index: int) -> bool | None:
        outcome = await soap.soap(
            endpoint, "GetGenericPortMappingEntry", ("NewPortMappingIndex", index)
        )
        return {None: True, "713": False}.get(outcome.error)

    low, high = 0, limit  # entries in [low, high]
    while low < high:
        middle = (low + high) // 2
        present = await exists(middle)
        if present is None:
            return None
        if present:
            low = middle + 1
        else:
            high = middle
    return low


async def op_fill(params: dict[str, Any]) -> dict[str, object]:
    """Map `count` distinct TCP ports, wait `pause_s`, then delete them all with one request;
    SOAP counts the entries this host sees before and after (when a location is given)."""
    count, base = int(params["count"]), int(params["base"])
    channel = Channel(str(params["source"]), server())
    rec = Recorder(float(params["deadline_s"]))
    endpoint = await soap_endpoint(str(params["location"])) if params.get("location") else None
    mapped = 0
    try:
        before = await soap_entries(endpoint, 2 * count) if endpoint else None
        with rec:
            for port in range(base, base + count):
                if not rec.running():
                    break
                answer = await channel.map(port, port, LIFETIME_S)
                if rec.answer(answer, "map"):
                    mapped += 1
                    rec.moved += int(answer.external_port != port)
        listed = await soap_entries(endpoint, 2 * count) if endpoint else None
        await asyncio.sleep(float(params["pause_s"]))  # a per-source rate limiter refills
        delete_all = await channel.map(0, 0, 0, tries=DELETE_ALL_TRIES)
        after = await soap_entries(endpoint, 2 * count) if endpoint else None
    finally:
        channel.close()
    edge = max(1, min(100, len(rec.latencies)))
    return rec.result(
        mapped=mapped,
        entries_before=before,
        entries_listed=listed,
        entries_after=after,
        delete_all_result=delete_all.result,
        delete_all_ms=delete_all.seconds * 1000 if delete_all.result is not None else None,
        delete_all_timeouts=delete_all.timeouts,
        first_ms=sum(rec.latencies[:edge]) / edge * 1000 if rec.latencies else None,
        last_ms=sum(rec.latencies[-edge:]) / edge * 1000 if rec.latencies else None,
    )


async def client_op(command: dict[str, Any]) -> dict[str, object]:
    handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, object]]]] = {
        "ready": op_ready,
        "external": op_external,
        "pairs": op_pairs,
        "fill": op_fill,
    }
    return await handlers[str(command["op"])](command)


def client_main() -> int:
    """JSON command per stdin line -> JSON result per stdout line, until EOF or `quit`."""
    signal.alarm(soap.CLIENT_LIFETIME_S)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            result = asyncio.run(client_op(command))
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(result), flush=True)
    return 0


# ==== Orchestration: root namespace ==============================================================


def udp_errors(lab: Lab) -> int:
    """Udp RcvbufErrors of the gateway namespace: datagrams the kernel dropped for a full socket
    buffer (as opposed to ones the daemon read and chose not to answer)."""
    lines = lab.run(lab.gw, "cat", "/proc/net/snmp").stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("Udp:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table.get("RcvbufErrors", 0))
    return 0


def measure(driver: soap.Driver, name: str, op: str, **params: object) -> dict[str, Any]:
    """bench/soap.py's Driver.command, plus the gateway's UDP buffer drops during the phase."""
    before = udp_errors(driver.lab)
    result = driver.command(name, op, **params)
    result["udp_rcvbuf_errors"] = udp_errors(driver.lab) - before
    if result.get("truncated"):
        driver.run.notes.append(f"{name}: stopped at the phase deadline (rates stay valid)")
    return result


def add_aliases(lab: Lab) -> None:
    for index in range(CLIENTS):
        lab.add_address(lab.lan1, HOST_IF, f"{alias(index)}/24")


def wait_ready(driver: soap.Driver, wait_s: float) -> dict[str, Any]:
    return driver.command(None, "ready", source=str(LAN1.ip), wait_s=wait_s)


def phases(driver: soap.Driver, settings: Settings, location: str | None) -> None:
    """Every measurement, in order, against a daemon that answers NAT-PMP."""
    me = str(LAN1.ip)
    everyone = [alias(i) for i in range(CLIENTS)]
    deadline = settings.deadline_s
    # Warm-up (imports, ARP for the aliases, first mappings): not measured.
    driver.command(None, "external", source=me, count=5, deadline_s=5)
    driver.command(None, "pairs", sources=[me, *everyone], pairs=1, base=WARM_BASE, deadline_s=5)
    steps: list[tuple[str, str, dict[str, object]]] = [
        ("external", "external", {"source": me, "count": settings.external}),
        ("pairs_seq", "pairs", {"sources": [me], "pairs": settings.pairs, "base": SEQ_BASE}),
        (
            "pairs_conc",
            "pairs",
            {"sources": everyone, "pairs": settings.conc_pairs, "base": CONC_BASE},
        ),
        (
            "fill",
            "fill",
            {"source": me, "count": settings.fill, "base": FILL_BASE, "pause_s": settings.pause_s},
        ),
    ]
    for name, op, params in steps:
        time.sleep(settings.pause_s)
        measure(driver, name, op, deadline_s=deadline, location=location, **params)
    check_fill(driver.run, settings)


def check_fill(run: soap.Run, settings: Settings) -> None:
    fill = run.results.get("fill", {})
    if not fill:
        return
    if fill.get("delete_all_result") != RESULT_SUCCESS:
        run.problems.append(f"delete all answered {fill.get('delete_all_result')} (None: lost)")
    before, listed, after = (
        fill.get(k) for k in ("entries_before", "entries_listed", "entries_after")
    )
    if listed is None:
        run.notes.append("SOAP cross-check unavailable")
        return
    if before:
        run.problems.append(f"{before} entries were left before the fill (earlier phases)")
    if listed != (before or 0) + fill.get("mapped", 0):
        run.problems.append(
            f"SOAP lists {listed} entries after mapping {fill.get('mapped')} of {settings.fill}"
        )
    if after:
        run.problems.append(f"delete all left {after} entries behind (SOAP)")


def start_client(lab: Lab) -> LabProcess:
    return lab.spawn(lab.lan1, sys.executable, str(Path(__file__).resolve()), "client")


def bench_igd(settings: Settings, *, limiter: bool = True) -> soap.Run:
    """Our daemon as shipped; without `limiter`, started through `igd_nolimit_main`."""
    run = soap.Run(IGD_NAME if limiter else NOLIMIT_NAME, "igd")
    if limiter:
        launcher: tuple[str, ...] = ("-m", "igd")
    else:
        launcher = (str(Path(__file__).resolve()), "igd-nolimit")
    with tempfile.TemporaryDirectory(prefix="igd-natpmp-bench-") as tmp, Lab() as lab:
        config = Path(tmp) / "bench.toml"
        config.write_text(soap.igd_config() + IGD_NATPMP_KEYS)
        state = Path(tmp) / "state"
        state.mkdir()
        daemon = lab.spawn(
            lab.gw, sys.executable, *launcher, "serve", "--lan", LAN_BRIDGE,
            "--wan", GW_WAN_IF, "--http-port", str(soap.IGD_HTTP_PORT), "--state-dir", str(state),
            "--allow-private-external", "--config", str(config), cwd=str(_REPO),
        )  # fmt: skip
        client = None
        try:
            line = daemon.read_line(timeout_s=soap.START_TIMEOUT_S)
            run.notes.append(line.split(" serving ")[0])
            urls = re.findall(r"IGD:(\d) (http://\S+)", line)
            location = dict(urls).get(
                "2", f"http://{GW_LAN.ip}:{soap.IGD_HTTP_PORT}/igd2/rootDesc.xml"
            )
            time.sleep(0.3)  # the "running: backend ..." log line follows the ready line
            backend = re.search(r"running: backend (\w+)", daemon.stderr_text())
            run.label = f"igd ({backend.group(1) if backend else '?'} backend)"
            if not limiter:
                run.label = f"{run.label[:-1]}, no rate limit)"
            run.notes.append(
                f"config: quota_per_client = {soap.IGD_QUOTA} (default 128), "
                f"max_mappings = {soap.IGD_MAX_MAPPINGS}, {IGD_NATPMP_KEYS.strip()}"
            )
            add_aliases(lab)
            client = start_client(lab)
            driver = soap.Driver(lab, client, run, daemon.pid)
            ready = wait_ready(driver, wait_s=5)
            if not ready.get("ok"):
                raise soap.BenchError(
                    f"igd does not answer NAT-PMP on {GW_LAN.ip}:{NATPMP_PORT} "
                    f"(external-address request: {ready}); log: {daemon.stderr_text()[-600:]}"
                )
            run.notes.append(f"external address {ready.get('address')}")
            phases(driver, settings, location)
        finally:
            if client is not None:
                client.stop()
            status = daemon.stop(timeout_s=5)
            log = daemon.stderr_text()
            errors = [
                text
                for text in log.splitlines()
                if re.search(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b", text)
            ]
            if status not in (0, None) or errors:
                run.problems.append(f"igd exit status {status}; log: {errors[:5]}")
    return run


def bench_igd_nolimit(settings: Settings) -> soap.Run:
    return bench_igd(settings, limiter=False)


def igd_nolimit_main(argv: list[str]) -> int:
    """`igd ...` with the per-source token bucket of UDP 5351 opened wide (runs in the lab).

    igd.pcp.endpoint limits each source address to 20 requests/s after a burst of 64 (ST-24)
    and has no setting for it: this raises the keyword defaults of PortMappingEndpoint, for
    this process only, so the figures show the NAT-PMP path itself. Not a shipped setup.
    """
    from igd.cli import main as igd_main
    from igd.pcp.endpoint import PortMappingEndpoint

    defaults = getattr(PortMappingEndpoint.__init__, "__kwdefaults__", None)
    if not isinstance(defaults, dict) or not {"rate_per_s", "rate_burst"} <= defaults.keys():
        print("igd-nolimit: PortMappingEndpoint has no rate_per_s/rate_burst", file=sys.stderr)
        return 2
    defaults.update(rate_per_s=NO_LIMIT, rate_burst=NO_LIMIT)
    return igd_main(argv)


def bench_miniupnpd(settings: Settings) -> soap.Run:
    """bench/soap.py's miniupnpd start-up (its bench_miniupnpd runs the SOAP phases inline, so
    the sequence is repeated here on its pieces: config, nft skeleton, STUN, diagnosis)."""
    run = soap.Run(MINI_NAME, "miniupnpd")
    run.notes += soap.ensure_miniupnpd()
    version = soap.mini_version()
    run.label = "miniupnpd " + (version.split()[1] if len(version.split()) > 1 else "?")
    run.notes.append(version)
    with tempfile.TemporaryDirectory(prefix="mini-natpmp-bench-") as tmp, Lab() as lab:
        state = Path(tmp)
        conf = state / "miniupnpd.conf"
        conf.write_text(soap.mini_config(state))
        pidfile = state / "miniupnpd.pid"
        stun = lab.spawn(
            lab.wan,
            sys.executable,
            str(Path(soap.__file__).resolve()),
            "stun",
            str(WAN_HOST.ip),
            str(soap.STUN_PORT),
        )
        client = None
        pid: int | None = None
        try:
            if stun.read_line(timeout_s=soap.START_TIMEOUT_S) != "ready":
                raise soap.BenchError("the STUN responder did not start")
            lab.run(lab.gw, "nft", "-f", "-", input_text=soap.MINI_NFT)
            lab.run(lab.gw, "miniupnpd", "-f", str(conf), "-P", str(pidfile), timeout_s=15)
            add_aliases(lab)
            client = start_client(lab)
            driver = soap.Driver(lab, client, run, None)
            ready = wait_ready(driver, wait_s=8)
            if not ready.get("ok"):
                raise soap.BenchError(
                    f"miniupnpd does not answer NAT-PMP ({ready}): {soap.mini_diagnosis(lab, conf)}"
                )
            run.notes.append(f"external address {ready.get('address')} (from STUN)")
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().split()[0])
            driver.server_pid = pid
            location = f"http://{GW_LAN.ip}:{soap.MINI_HTTP_PORT}/rootDesc.xml"
            phases(driver, settings, location)
            if pid is not None and soap.cpu_seconds(pid) is None:
                run.problems.append("miniupnpd died during the run")
        finally:
            if client is not None:
                client.stop()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            stun.stop()
    return run


# ---- Report -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str  # as bench/soap.py's fmt: req/s, ms, ms/req, s, or "" for a count
    higher_is_better: bool | None  # None: no ratio (counts)
    pick: Callable[[dict[str, dict[str, Any]]], float | None]
    note: str = ""


PHASES: Final = ("external", "pairs_seq", "pairs_conc", "fill")


def pick_total(key: str) -> Callable[[dict[str, dict[str, Any]]], float | None]:
    """`key` summed over the phases that ran."""

    def get(results: dict[str, dict[str, Any]]) -> float | None:
        values = [results.get(phase, {}).get(key) for phase in PHASES]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        return sum(numbers) if numbers else None

    return get


pick = soap.pick
ROWS: Final = (
    Row("external address seq", "req/s", True, pick("external", "rate"), "answered/s, 1 source"),
    Row("external address seq p50", "ms", False, pick("external", "p50_ms")),
    Row("external address seq p99", "ms", False, pick("external", "p99_ms")),
    Row("  external retransmissions", "", None, pick("external", "timeouts"), "250 ms timeouts"),
    Row("map+unmap seq", "req/s", True, pick("pairs_seq", "rate"), "answered/s, 1 source"),
    Row("map+unmap seq p50", "ms", False, pick("pairs_seq", "p50_ms"),
        "map and unmap mixed: see below"),
    Row("map+unmap seq p99", "ms", False, pick("pairs_seq", "p99_ms")),
    Row("  seq map p50", "ms", False, pick("pairs_seq", "map_p50_ms")),
    Row("  seq unmap p50", "ms", False, pick("pairs_seq", "unmap_p50_ms")),
    Row("  seq server CPU", "ms/req", False, pick("pairs_seq", "server_cpu_ms_per_req"),
        "/proc/PID/stat: steadiest"),
    Row("  seq retransmissions", "", None, pick("pairs_seq", "timeouts"), "250 ms timeouts"),
    Row(f"map+unmap {CLIENTS} clients", "req/s", True, pick("pairs_conc", "rate"),
        f"{CLIENTS} sources .{ALIAS_BASE}-.{ALIAS_BASE + CLIENTS - 1}"),
    Row(f"map+unmap {CLIENTS} clients p50", "ms", False, pick("pairs_conc", "p50_ms")),
    Row(f"map+unmap {CLIENTS} clients p99", "ms", False, pick("pairs_conc", "p99_ms")),
    Row(f"map+unmap {CLIENTS} clients max", "ms", False, pick("pairs_conc", "max_ms")),
    Row(f"  {CLIENTS} clients server CPU", "ms/req", False,
        pick("pairs_conc", "server_cpu_ms_per_req")),
    Row(f"  {CLIENTS} clients retransmissions", "", None, pick("pairs_conc", "timeouts"),
        "250 ms timeouts"),
    Row("fill N ports (sequential maps)", "s", False, pick("fill", "seconds"), "1 source"),
    Row("  fill: mean map, first 100", "ms", False, pick("fill", "first_ms")),
    Row("  fill: mean map, last 100", "ms", False, pick("fill", "last_ms")),
    Row("  fill: server CPU", "ms/req", False, pick("fill", "server_cpu_ms_per_req")),
    Row("  fill retransmissions", "", None, pick("fill", "timeouts"), "250 ms timeouts"),
    Row("delete all (iport 0, lifetime 0)", "ms", False, pick("fill", "delete_all_ms"),
        "1 request removing N"),
    Row("  entries left after delete all", "", None, pick("fill", "entries_after"),
        "SOAP GetGeneric from .10"),
    Row("requests lost (3 tries), all phases", "", None, pick_total("lost")),
)  # fmt: skip


def ratio(row: Row, ours: float | None, theirs: float | None) -> str:
    """How many times better igd is: rate igd/miniupnpd, time miniupnpd/igd."""
    if row.higher_is_better is None or ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return "-"
    return f"{ours / theirs if row.higher_is_better else theirs / ours:.2f}x"


def report(runs: dict[str, soap.Run], settings: Settings) -> list[str]:
    """metric | igd | miniupnpd | ratio [| igd, no rate limit | ratio] | note."""
    igd, mini, nolimit = (runs.get(name) for name in (IGD_NAME, MINI_NAME, NOLIMIT_NAME))
    header = ["metric", igd.label if igd else "igd", mini.label if mini else "miniupnpd", "ratio"]
    if nolimit:
        header += [nolimit.label, "ratio"]
    header.append("note")
    table: list[list[str]] = []
    for row in ROWS:
        a = row.pick(igd.results) if igd else None
        b = row.pick(mini.results) if mini else None
        cells = [
            row.metric.replace("N ports", f"{settings.fill} ports"),
            soap.fmt(a, row.unit),
            soap.fmt(b, row.unit),
            ratio(row, a, b),
        ]
        if nolimit:
            c = row.pick(nolimit.results)
            cells += [soap.fmt(c, row.unit), ratio(row, c, b)]
        cells.append(row.note.replace("removing N", f"removing {settings.fill}"))
        table.append(cells)
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    lines = [" | ".join(c.ljust(widths[i]) for i, c in enumerate(header)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in table]
    return lines


def run_notes(run: soap.Run) -> list[str]:
    lines = [f"{run.label}: {text}" for text in run.notes]
    for phase in PHASES:
        result = run.results.get(phase)
        if not result:
            continue
        details = [
            f"{result.get('requests')} answered in {result.get('seconds', 0):.2f} s",
            f"{result.get('timeouts')} retransmissions, {result.get('lost')} lost",
            f"client CPU {result.get('client_cpu_ms_per_req', 0):.2f} ms/req",
        ]
        if result.get("udp_rcvbuf_errors"):
            details.append(f"gateway UDP RcvbufErrors +{result['udp_rcvbuf_errors']}")
        if result.get("moved"):
            details.append(f"{result['moved']} maps granted another external port")
        if phase == "fill":
            details.append(
                f"delete all: result {result.get('delete_all_result')}, "
                f"{result.get('delete_all_timeouts')} retransmissions"
            )
            details.append(
                f"SOAP entries before/after fill/after delete-all: {result.get('entries_before')}"
                f"/{result.get('entries_listed')}/{result.get('entries_after')}"
            )
        lines.append(f"{run.label}: {phase}: " + "; ".join(details))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["client"]:
        return client_main()
    if args[:1] == ["igd-nolimit"]:
        return igd_nolimit_main(args[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller N (a smoke run)")
    parser.add_argument(
        "--only",
        choices=(IGD_NAME, NOLIMIT_NAME, MINI_NAME),
        help="measure one daemon (igd-nolimit: ours with the per-source rate limit opened)",
    )
    options = parser.parse_args(args)
    reason = lab_skip_reason()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    settings = QUICK if options.quick else DEFAULT
    print("NAT-PMP benchmark: igd vs miniupnpd in a netns lab (LAN 198.18.0.0/24, UDP 5351)")
    for text in soap.environment():
        print("  " + text)
    print(
        "  WARNING: figures are noisy on a shared 2-core machine (client, daemon and other "
        "workloads share the CPUs); compare within one run, and prefer server CPU/req."
    )
    print(
        f"  {settings.external} external-address requests; {settings.pairs} sequential pairs; "
        f"{CLIENTS} clients x {settings.conc_pairs} pairs; fill {settings.fill} then delete all; "
        f"timeout {FIRST_TIMEOUT_S * 1000:.0f} ms doubling, {TRIES} tries; phase deadline "
        f"{settings.deadline_s:g} s{' (--quick)' if options.quick else ''}"
    )
    runs: dict[str, soap.Run] = {}
    failures: list[str] = []
    benches: list[tuple[str, Callable[[Settings], soap.Run]]] = [
        (IGD_NAME, bench_igd),
        (MINI_NAME, bench_miniupnpd),
        (NOLIMIT_NAME, bench_igd_nolimit),
    ]
    for name, bench in benches:
        if options.only not in (None, name):
            continue
        try:
            with soap.section(name):
                runs[name] = bench(settings)
        except (
            soap.BenchError,
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
        "ratio: how many times better igd is (rate igd/miniupnpd; time miniupnpd/igd). Latencies "
        "run from the first transmission to the answer, so a retransmitted request counts 250 ms "
        "or more; rates are answered requests per second of wall time."
    )
    if IGD_NAME in runs or NOLIMIT_NAME in runs:
        from igd.pcp.endpoint import RATE_BURST, RATE_PER_S  # the client stays free of igd

        print(
            f"igd limits each source address to {RATE_PER_S:g} requests/s after a burst of "
            f"{RATE_BURST:g} (igd/pcp/endpoint.py, ST-24) and drops the rest unanswered: its "
            "1-source rows measure that limit (the client retransmits after 250 ms). Each of the "
            f"{CLIENTS} concurrent clients sends {2 * settings.conc_pairs} requests, within the "
            "burst. The no-rate-limit column opens the bucket in-process (not a shipped setup)."
        )
    for run in runs.values():
        for text in run_notes(run):
            print(text)
    problems = failures + [f"{run.label}: {p}" for run in runs.values() for p in run.problems]
    for text in problems:
        print(f"PROBLEM {text}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
