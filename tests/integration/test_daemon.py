"""`igd serve` as a subprocess on loopback: ready line, description, signals, persistence, errors.

No root needed: LAN lo, an ephemeral HTTP port, a high SSDP port, ephemeral NAT-PMP/PCP ports,
state under tmp_path. Every wait is bounded; every process started is killed at teardown if it is
still running. Spawner and the helpers here are shared by test_daemon_protocols and test_reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import selectors
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from urllib.parse import urljoin
from xml.etree import ElementTree

import pytest

from igd.admin import LatencyRecorder
from igd.config import Config, ConfigError
from igd.daemon import (
    BOOT_ID_COUNTER,
    DEVICE_UUID_FILE,
    EPOCH_ORIGIN_COUNTER,
    NATPMP_PORT,
    STORE_FILE,
    DaemonError,
    InterfaceWan,
    TimedBackend,
    VirtualWan,
    bump_boot_id,
    load_device_uuid,
    load_epoch_origin,
    read_admin_token,
    ready_line,
    serve,
    server_string,
)
from igd.daemon import (
    Daemon as InProcessDaemon,
)
from igd.natcore import BackendError, IPProtocol, Plan, SharingConnectionType, SqliteStore
from igd.natcore.backends.memory import MemoryBackend

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 5.0
SSDP_TIMEOUT_S = 3.0

URL_RE = re.compile(r"IGD:(\d) (http://\S+/rootDesc\.xml)")
UDN_RE = re.compile(r"<UDN>uuid:([0-9a-f-]{36})</UDN>")
DEVICE_NS = "{urn:schemas-upnp-org:device-1-0}"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"

# urllib would honour http_proxy from the environment; the daemon is on loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_udp_port() -> int:
    """A UDP port free on 0.0.0.0 right now (the daemon binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Daemon:
    """One `igd serve` subprocess and what its ready line said."""

    process: subprocess.Popen[str]
    stderr_path: Path
    ssdp_port: int
    urls: dict[int, str]
    line: str

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send `signum`; return the exit code (bounded wait)."""
        self.process.send_signal(signum)
        return self.process.wait(timeout=STOP_TIMEOUT_S)


class Spawner:
    """Starts daemons for one test and kills any still running at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.state_dir = tmp_path / "state"
        self.processes: list[subprocess.Popen[str]] = []
        self.count = 0

    def popen(
        self, *args: str, state_dir: Path | None = None, ssdp_port: int | None = None
    ) -> tuple[subprocess.Popen[str], Path, int]:
        self.count += 1
        port = free_udp_port() if ssdp_port is None else ssdp_port
        stderr_path = self.tmp_path / f"stderr-{self.count}.txt"
        argv = [sys.executable, "-m", "igd", "serve", "--lan", "lo", "--http-port", "0"]
        argv += ["--ssdp-port", str(port), "--pcp-port", "0"]
        argv += ["--state-dir", str(state_dir or self.state_dir), *args]
        with stderr_path.open("w", encoding="utf-8") as stderr:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=self.tmp_path,
            )
        self.processes.append(process)
        return process, stderr_path, port

    def start(self, *args: str, state_dir: Path | None = None) -> Daemon:
        """Start a daemon and wait (bounded) for its ready line."""
        process, stderr_path, port = self.popen(*args, state_dir=state_dir)
        line = read_line(process, stderr_path)
        urls = {int(version): url for version, url in URL_RE.findall(line)}
        assert urls, line
        return Daemon(process, stderr_path, port, urls, line)

    def fail(
        self, *args: str, state_dir: Path | None = None, ssdp_port: int | None = None
    ) -> Failed:
        """Run a daemon expected to fail at start: its exit code, stdout and stderr lines."""
        process, stderr_path, _ = self.popen(*args, state_dir=state_dir, ssdp_port=ssdp_port)
        try:
            out, _ = process.communicate(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
            pytest.fail(f"igd serve {args} did not fail within {START_TIMEOUT_S} s")
        err = stderr_path.read_text(encoding="utf-8")
        return Failed(process.returncode, out, err.splitlines())

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
            if process.stdout is not None:
                process.stdout.close()


@dataclass
class Failed:
    code: int
    stdout: str
    stderr_lines: list[str]


def read_line(process: subprocess.Popen[str], stderr_path: Path) -> str:
    """The first stdout line, within START_TIMEOUT_S; fails with stderr if the daemon died."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=START_TIMEOUT_S):
            pytest.fail(
                f"no ready line within {START_TIMEOUT_S} s; stderr: {stderr_path.read_text()}"
            )
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=STOP_TIMEOUT_S)
        pytest.fail(f"daemon exited with {process.returncode}: {stderr_path.read_text()}")
    return line.strip()


@pytest.fixture
def spawner(tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path)
    try:
        yield spawner
    finally:
        spawner.cleanup()


# ---- HTTP and SOAP helpers ----------------------------------------------------------------------


def http_get(url: str) -> tuple[int, str, str]:
    with OPENER.open(url, timeout=HTTP_TIMEOUT_S) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def control_url(description_url: str) -> tuple[str, str]:
    """(controlURL, serviceType) of the WANIPConnection service in the description."""
    _, _, body = http_get(description_url)
    root = ElementTree.fromstring(body)
    for service in root.iter(f"{DEVICE_NS}service"):
        service_type = service.findtext(f"{DEVICE_NS}serviceType") or ""
        if ":service:WANIPConnection:" in service_type:
            control = service.findtext(f"{DEVICE_NS}controlURL") or ""
            return urljoin(description_url, control), service_type
    raise AssertionError(f"no WANIPConnection in {description_url}")


class SoapFault(Exception):
    """A UPnP fault: `code` is the errorCode."""

    def __init__(self, code: int) -> None:
        super().__init__(f"UPnP error {code}")
        self.code = code


def soap(description_url: str, action: str, **arguments: str | int) -> dict[str, str]:
    """Call `action` on WANIPConnection; the output arguments, or AssertionError with the fault."""
    url, service_type = control_url(description_url)
    args = "".join(f"<{k}>{v}</{k}>" for k, v in arguments.items())
    body = (
        '<?xml version="1.0"?>'
        f'<s:Envelope xmlns:s="{SOAP_ENV}" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
        f'<s:Body><u:{action} xmlns:u="{service_type}">{args}</u:{action}></s:Body></s:Envelope>'
    ).encode()
    request = urllib.request.Request(
        url,
        data=body,
        headers={
            "Content-Type": 'text/xml; charset="utf-8"',
            "SOAPAction": f'"{service_type}#{action}"',
        },
    )
    try:
        with OPENER.open(request, timeout=HTTP_TIMEOUT_S) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode()
        code = re.search(r"<errorCode>(\d+)</errorCode>", text)
        if exc.code == 500 and code is not None:
            raise SoapFault(int(code.group(1))) from None
        raise AssertionError(f"{action}: HTTP {exc.code}: {text}") from None
    element = ElementTree.fromstring(text).find(f"{{{SOAP_ENV}}}Body")
    assert element is not None
    return {child.tag: child.text or "" for child in element[0]}


def add_mapping(description_url: str, port: int, protocol: str = "TCP") -> None:
    soap(
        description_url,
        "AddPortMapping",
        NewRemoteHost="",
        NewExternalPort=port,
        NewProtocol=protocol,
        NewInternalPort=port,
        NewInternalClient="127.0.0.1",
        NewEnabled=1,
        NewPortMappingDescription=f"test {port}",
        NewLeaseDuration=3600,
    )


def get_mapping(description_url: str, port: int, protocol: str = "TCP") -> dict[str, str]:
    return soap(
        description_url,
        "GetSpecificPortMappingEntry",
        NewRemoteHost="",
        NewExternalPort=port,
        NewProtocol=protocol,
    )


def udns(description_url: str) -> list[str]:
    return UDN_RE.findall(http_get(description_url)[2])


def search_boot_ids(ssdp_port: int, replies: int = 2) -> set[int]:
    """BOOTID.UPNP.ORG of the replies (one per root) to a unicast M-SEARCH (SSDP-36, SSDP-38)."""
    request = (
        f"M-SEARCH * HTTP/1.1\r\nHOST: 127.0.0.1:{ssdp_port}\r\n"
        'MAN: "ssdp:discover"\r\nST: upnp:rootdevice\r\n\r\n'
    ).encode()
    found: list[int] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(request, ("127.0.0.1", ssdp_port))
        deadline = time.monotonic() + SSDP_TIMEOUT_S
        while len(found) < replies and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data = sock.recv(2048)
            except TimeoutError:
                break
            match = re.search(rb"(?im)^BOOTID\.UPNP\.ORG:\s*(\d+)\s*$", data)
            assert match is not None, data
            found.append(int(match.group(1)))
    assert len(found) == replies, found
    return set(found)


def stored_counter(state_dir: Path, name: str) -> int:
    with contextlib.closing(sqlite3.connect(state_dir / STORE_FILE)) as db:
        row = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    assert row is not None
    value: int = row[0]
    return value


# ---- Start, serve, stop -------------------------------------------------------------------------


def test_ready_line_description_and_sigterm(spawner: Spawner) -> None:
    daemon = spawner.start()
    assert list(daemon.urls) == [2, 1]  # IGD:2 first
    assert daemon.urls[2].startswith("http://127.0.0.1:")
    assert daemon.urls[2].endswith("/igd2/rootDesc.xml")
    assert daemon.urls[1].endswith("/igd1/rootDesc.xml")
    assert f"upnpc -u {daemon.urls[2]} -l" in daemon.line
    for version, url in daemon.urls.items():
        status, content_type, body = http_get(url)
        assert status == 200
        assert content_type.startswith("text/xml")
        assert f"InternetGatewayDevice:{version}" in body
    assert set(udns(daemon.urls[1])).isdisjoint(udns(daemon.urls[2]))  # own UUIDs per root
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < STOP_TIMEOUT_S
    assert "Traceback" not in daemon.stderr
    assert " ERROR " not in daemon.stderr
    assert "stopped" in daemon.stderr


def ssdp_listener(ssdp_port: int) -> socket.socket:
    """A socket that receives what is multicast to the SSDP group on lo at `ssdp_port`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("239.255.255.250", ssdp_port))  # the group only: no unicast searches land here
    mreqn = struct.pack(
        "@4s4si", socket.inet_aton("239.255.255.250"), bytes(4), socket.if_nametoindex("lo")
    )
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    sock.setblocking(False)
    return sock


def test_sigterm_sends_the_byebye_set(spawner: Spawner) -> None:
    """SSDP-17: on an orderly stop, one ssdp:byebye per advertisement of each root."""
    daemon = spawner.start()
    root_udns = {udns(url)[0] for url in daemon.urls.values()}
    with ssdp_listener(daemon.ssdp_port) as listener:
        time.sleep(0.5)  # the start-up byebye set is long gone; drop the alive sets seen so far
        with contextlib.suppress(BlockingIOError):
            while listener.recv(2048):
                pass
        assert daemon.stop() == 0
        received: list[bytes] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(listener.recv(2048))
    byebyes = [d for d in received if re.search(rb"(?im)^NTS:\s*ssdp:byebye\s*$", d)]
    assert len(byebyes) >= 20  # 10 for the IGD:1 root, 10 or 11 for the IGD:2 root (SSDP-02)
    rootdevice = {
        m.group(1).decode()
        for d in byebyes
        if (m := re.search(rb"(?im)^USN:\s*uuid:([0-9a-f-]{36})::upnp:rootdevice\s*$", d))
    }
    assert rootdevice == root_udns


def test_sigint_stops_cleanly(spawner: Spawner) -> None:
    daemon = spawner.start()
    assert daemon.stop(signal.SIGINT) == 0
    assert "Traceback" not in daemon.stderr


def test_http_port_is_closed_after_stop(spawner: Spawner) -> None:
    daemon = spawner.start()
    url = daemon.urls[2]
    assert daemon.stop() == 0
    with pytest.raises(urllib.error.URLError):
        http_get(url)


def test_single_profile(spawner: Spawner) -> None:
    daemon = spawner.start("--igd-version", "1")
    assert list(daemon.urls) == [1]
    assert "InternetGatewayDevice:1" in http_get(daemon.urls[1])[2]
    assert daemon.stop() == 0


def test_ssdp_answers_a_unicast_search(spawner: Spawner) -> None:
    daemon = spawner.start()
    assert search_boot_ids(daemon.ssdp_port) == {stored_counter(spawner.state_dir, "boot_id")}
    assert daemon.stop() == 0


def test_own_ports_are_reserved(spawner: Spawner) -> None:
    """The daemon's HTTP (TCP), SSDP (UDP) and NAT-PMP (5351/udp) ports are not mappable (ST-22)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        configured = probe.getsockname()[1]
    daemon = spawner.start("--http-port", str(configured))
    http_port = int(daemon.urls[2].split(":")[2].split("/")[0])
    assert http_port == configured
    for port, protocol in ((http_port, "TCP"), (daemon.ssdp_port, "UDP"), (5351, "UDP")):
        for url in daemon.urls.values():  # IGD:2 answers 729, IGD:1 718 (WIP-24)
            with pytest.raises(SoapFault) as caught:
                add_mapping(url, port, protocol)
            assert caught.value.code in (718, 729)
    add_mapping(daemon.urls[2], http_port, "UDP")  # the other protocol is free
    assert daemon.stop() == 0


def test_ephemeral_http_port_is_reserved_too(spawner: Spawner) -> None:
    daemon = spawner.start()  # --http-port 0: reserved once bound
    http_port = int(daemon.urls[2].split(":")[2].split("/")[0])
    with pytest.raises(SoapFault):
        add_mapping(daemon.urls[2], http_port, "TCP")
    assert daemon.stop() == 0


# ---- Persistence across restarts -----------------------------------------------------------------


def test_restart_keeps_udns_and_bootid_grows(spawner: Spawner) -> None:
    first = spawner.start()
    first_udns = {v: udns(url) for v, url in first.urls.items()}
    first_boot = search_boot_ids(first.ssdp_port)
    assert first.stop() == 0
    stored = stored_counter(spawner.state_dir, BOOT_ID_COUNTER)
    assert first_boot == {stored}
    device_uuid = (spawner.state_dir / DEVICE_UUID_FILE).read_text()

    second = spawner.start()
    assert {v: udns(url) for v, url in second.urls.items()} == first_udns
    second_boot = search_boot_ids(second.ssdp_port)
    assert second.stop() == 0
    assert (spawner.state_dir / DEVICE_UUID_FILE).read_text() == device_uuid
    (boot,) = second_boot
    assert boot > stored
    assert stored_counter(spawner.state_dir, BOOT_ID_COUNTER) == boot


def test_mapping_survives_sigterm_and_kill_9(spawner: Spawner) -> None:
    daemon = spawner.start()
    add_mapping(daemon.urls[2], 40000)
    add_mapping(daemon.urls[1], 40001, "UDP")
    assert daemon.stop() == 0

    daemon = spawner.start()
    entry = get_mapping(daemon.urls[2], 40000)
    assert entry["NewInternalClient"] == "127.0.0.1"
    assert entry["NewInternalPort"] == "40000"
    assert entry["NewPortMappingDescription"] == "test 40000"
    assert get_mapping(daemon.urls[1], 40001, "UDP")["NewInternalPort"] == "40001"
    add_mapping(daemon.urls[2], 40002)  # acknowledged, then the process dies
    daemon.process.kill()
    assert daemon.process.wait(timeout=STOP_TIMEOUT_S) == -signal.SIGKILL

    daemon = spawner.start()
    assert get_mapping(daemon.urls[2], 40000)["NewInternalClient"] == "127.0.0.1"
    assert get_mapping(daemon.urls[2], 40002)["NewPortMappingDescription"] == "test 40002"
    assert get_mapping(daemon.urls[1], 40001, "UDP")["NewEnabled"] == "1"
    assert daemon.stop() == 0


# ---- Failures: exit code and one line on stderr --------------------------------------------------


def assert_one_line(failed: Failed, code: int, expected: str) -> None:
    assert failed.code == code, failed
    assert failed.stdout == ""
    assert len(failed.stderr_lines) == 1, failed.stderr_lines
    assert re.fullmatch(expected, failed.stderr_lines[0]), failed.stderr_lines[0]


def test_unknown_lan_interface(spawner: Spawner) -> None:
    failed = spawner.fail("--lan", "nosuch0")  # the last --lan list wins: only nosuch0
    assert_one_line(failed, 2, r"igd: error: lan: interface nosuch0 does not exist")


def test_unknown_wan_interface(spawner: Spawner) -> None:
    failed = spawner.fail("--wan", "nosuch1")
    assert_one_line(failed, 2, r"igd: error: wan: interface nosuch1 does not exist")


def test_bad_config_files(spawner: Spawner, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert_one_line(
        spawner.fail("--config", str(missing)),
        2,
        re.escape(f"igd: error: config: cannot read {missing}: No such file or directory"),
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("http_port = = 1\n")
    assert_one_line(
        spawner.fail("--config", str(bad)),
        2,
        re.escape(f"igd: error: config: {bad} is not valid TOML: ") + ".*",
    )
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("http_prot = 1\n")
    assert_one_line(
        spawner.fail("--config", str(unknown)),
        2,
        re.escape(f"igd: error: {unknown}: http_prot: unknown key (did you mean 'http_port'?)"),
    )


def test_bad_flag(spawner: Spawner) -> None:
    assert_one_line(
        spawner.fail("--backend", "bogus"),
        2,
        r"igd: error: --backend: 'bogus' is not one of auto, memory, nftables, userspace",
    )


def test_state_dir_that_is_a_file(spawner: Spawner, tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("")
    assert_one_line(
        spawner.fail(state_dir=path / "sub"),
        2,
        re.escape(f"igd: error: state_dir: cannot use {path / 'sub'}: ") + ".*",
    )


def test_state_dir_in_use(spawner: Spawner) -> None:
    daemon = spawner.start()
    assert_one_line(
        spawner.fail(),
        1,
        re.escape(f"igd: error: state_dir: {spawner.state_dir} is in use by another igd") + ".*",
    )
    assert daemon.stop() == 0


def test_http_port_in_use(spawner: Spawner) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        failed = spawner.fail("--http-port", str(port))
    assert_one_line(
        failed,
        1,
        re.escape(f"igd: error: http_port: cannot listen on 127.0.0.1:{port}: ")
        + "address already in use",
    )


def test_ssdp_port_in_use(spawner: Spawner) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("0.0.0.0", 0))  # no SO_REUSEADDR: the daemon cannot share it
        port = blocker.getsockname()[1]
        failed = spawner.fail(ssdp_port=port)
    assert_one_line(
        failed,
        1,
        re.escape(f"igd: error: ssdp_port: cannot listen on UDP port {port} on lo: ")
        + "address already in use",
    )


# ---- The daemon's small pieces, in process -------------------------------------------------------


def test_device_uuid_is_made_once(tmp_path: Path) -> None:
    first = load_device_uuid(tmp_path)
    assert (tmp_path / DEVICE_UUID_FILE).read_text() == f"{first}\n"
    assert load_device_uuid(tmp_path) == first
    (tmp_path / DEVICE_UUID_FILE).write_text(f"  {first}  \n")
    assert load_device_uuid(tmp_path) == first


def test_device_uuid_garbage_is_a_runtime_error(tmp_path: Path) -> None:
    (tmp_path / DEVICE_UUID_FILE).write_text("not a uuid\n")
    with pytest.raises(DaemonError, match=r"^state_dir: .* does not hold a UUID"):
        load_device_uuid(tmp_path)
    with pytest.raises(DaemonError, match=r"^state_dir: cannot write"):
        load_device_uuid(tmp_path / "missing-dir")


def test_boot_id_grows_and_is_at_least_the_clock(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / STORE_FILE)
    try:
        first = bump_boot_id(store, 1_800_000_000.5)
        assert first == 1_800_000_000
        assert bump_boot_id(store, 1_700_000_000.0) == first + 1  # clock went back
        assert bump_boot_id(store, 1_900_000_000.0) == 1_900_000_000
        assert store.load().counters[BOOT_ID_COUNTER] == 1_900_000_000
    finally:
        store.close()


def test_epoch_origin_is_set_once(tmp_path: Path) -> None:
    """ST-29: kept while the store is kept; a new store starts a new epoch."""
    store = SqliteStore(tmp_path / STORE_FILE)
    try:
        assert load_epoch_origin(store, 1_800_000_000.7) == 1_800_000_000
        assert load_epoch_origin(store, 1_900_000_000.0) == 1_800_000_000
        assert store.load().counters[EPOCH_ORIGIN_COUNTER] == 1_800_000_000
    finally:
        store.close()
    fresh = SqliteStore(tmp_path / "other.sqlite3")
    try:
        assert load_epoch_origin(fresh, 1_900_000_000.0) == 1_900_000_000
    finally:
        fresh.close()


def test_admin_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  abc def  \nsecond line\n")
    assert read_admin_token(path) == "abc def"
    for content, problem in (
        (b"", "holds no token on its first line"),
        (b"\n\n", "holds no token on its first line"),
        (b"a\x07b\n", "is not printable text"),
        (b"\xff\xfe\n", "is not UTF-8 text"),
        (b"x" * 5000, "is over 4096 bytes"),
    ):
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=r"^admin_token_file: ") as caught:
            read_admin_token(path)
        assert problem in str(caught.value)
        assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"^admin_token_file: cannot read .*: no such file"):
        read_admin_token(tmp_path / "missing")


async def test_timed_backend_observes_apply_and_forwards() -> None:
    inner = MemoryBackend()
    recorder = LatencyRecorder()
    ticks = iter([10.0, 10.25, 20.0, 20.5])
    timed = TimedBackend(inner, recorder.observe, clock=lambda: next(ticks))
    assert timed.name == inner.name
    await timed.start((), ())
    await timed.apply(Plan())
    inner.fail_next = 1
    with pytest.raises(BackendError):
        await timed.apply(Plan())
    snapshot = recorder.snapshot()
    assert snapshot.count == 2
    assert snapshot.sum_s == pytest.approx(0.75)
    assert timed.mappings is inner.mappings  # other attributes are the wrapped backend's
    await timed.stop()


def test_server_string_and_ready_line() -> None:
    assert re.fullmatch(r"Linux/\S+ UPnP/1\.1 igd/\d+\.\d+\.\d+\S*", server_string())
    line = ready_line([(2, "http://h:1/igd2/rootDesc.xml"), (1, "http://h:1/igd1/rootDesc.xml")])
    assert "\n" not in line
    assert line.index("IGD:2") < line.index("IGD:1")
    assert line.endswith("(try: upnpc -u http://h:1/igd2/rootDesc.xml -l)")


def test_wan_status() -> None:
    virtual = VirtualWan()
    assert virtual.counters() == (0, 0, 0, 0)
    assert virtual.link_up()
    assert virtual.max_bit_rates() == (0, 0)
    lo = InterfaceWan("lo")
    assert all(value >= 0 for value in lo.counters())
    assert lo.link_up()
    assert lo.max_bit_rates() == (0, 0)  # lo reports no speed
    gone = InterfaceWan("nosuch9")
    assert gone.counters() == (0, 0, 0, 0)
    assert not gone.link_up()
    assert gone.max_bit_rates() == (0, 0)


def test_udn_file_is_a_uuid(tmp_path: Path) -> None:
    assert uuid.UUID(str(load_device_uuid(tmp_path))).version == 4


# ---- The daemon in process (what the subprocess tests run, with coverage) ------------------------


def in_process_config(tmp_path: Path, **changes: object) -> Config:
    values: dict[str, object] = {"state_dir": tmp_path / "state", "ssdp_port": 0, "pcp_port": 0}
    values.update(changes)
    return Config(**values)  # type: ignore[arg-type]


async def test_in_process_start_and_stop(tmp_path: Path) -> None:
    config = in_process_config(tmp_path, external_ip=IPv4Address("198.19.0.1"))
    daemon = InProcessDaemon(config)
    await daemon.start()
    try:
        core = daemon.core
        assert core is not None
        assert [c.name for c in core.public_connections()] == ["wan"]
        assert [c.name for c in core.private_connections()] == ["lo"]
        assert core.role_of(core.find_connection(name="lo").guid) is SharingConnectionType.PRIVATE
        assert core.external_address == IPv4Address("198.19.0.1")
        reserved = core.policy.config.reserved_ports
        assert (IPProtocol.TCP, daemon.http_port) in reserved
        assert (IPProtocol.UDP, NATPMP_PORT) in reserved
        (responder,) = daemon.responders
        assert responder.port != 0
        assert (IPProtocol.UDP, responder.port) in reserved
        assert daemon.backend_name in ("userspace", "memory")
        assert daemon.gena is not None
        assert daemon.natpmp is not None
        assert daemon.pcp is not None
        assert daemon.endpoint is not None
        assert daemon.endpoint.running
        assert daemon.status_page is not None
        assert daemon.pcp_ports
        assert all(daemon.pcp_ports)
        assert all((IPProtocol.UDP, port) in reserved for port in daemon.pcp_ports)
        assert daemon.admin_socket == tmp_path / "state" / "igd.sock"
        assert daemon.admin_socket.exists()
        urls = daemon.description_urls()
        assert [version for version, _ in urls] == [2, 1]
        status, _, body = await asyncio.to_thread(http_get, urls[0][1])
        assert status == 200
        assert "InternetGatewayDevice:2" in body
    finally:
        await daemon.stop()
    assert daemon.core is None
    assert daemon.responders == []
    assert daemon.gena is None
    assert daemon.endpoint is None
    assert not (tmp_path / "state" / "igd.sock").exists()
    await daemon.stop()  # idempotent
    with pytest.raises(RuntimeError, match="already started"):
        await daemon.start()


async def test_in_process_failed_start_undoes_what_started(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        daemon = InProcessDaemon(in_process_config(tmp_path, http_port=port))
        with pytest.raises(DaemonError, match=r"^http_port: cannot listen on 127\.0\.0\.1:"):
            await daemon.start()
    assert daemon.core is None
    # The lock, the store and the sockets were released: the same state directory starts again.
    again = InProcessDaemon(in_process_config(tmp_path))
    await again.start()
    await again.stop()


async def test_in_process_bad_interface_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^lan: interface nosuch3 does not exist$"):
        await InProcessDaemon(in_process_config(tmp_path, lan=("nosuch3",))).start()
    with pytest.raises(ConfigError, match=r"^wan: interface nosuch4 does not exist$"):
        await InProcessDaemon(in_process_config(tmp_path, wan="nosuch4")).start()


async def test_serve_runs_until_stop_is_set(tmp_path: Path) -> None:
    stop = asyncio.Event()
    seen: list[tuple[tuple[int, str], ...]] = []

    def ready(daemon: InProcessDaemon) -> None:
        seen.append(daemon.description_urls())
        stop.set()

    async with asyncio.timeout(START_TIMEOUT_S):
        await serve(in_process_config(tmp_path, igd_version=2), on_ready=ready, stop=stop)
    assert len(seen) == 1
    assert [version for version, _ in seen[0]] == [2]
