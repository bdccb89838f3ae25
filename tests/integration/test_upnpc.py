"""Debian's `upnpc` (miniupnpc) against `igd serve` on 127.0.0.1: status, add, list, delete.

The daemon runs as a subprocess on loopback (ephemeral HTTP port, a high SSDP port, state under
a temporary directory) with `--external-ip 198.19.0.1 --allow-private-external`, so upnpc sees a
connected IGD with an external address. upnpc is given the description URL (`-u`), so it does no
multicast discovery. Every upnpc call is bounded by UPNPC_TIMEOUT_S.
"""

from __future__ import annotations

import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

UPNPC = shutil.which("upnpc")
pytestmark = pytest.mark.skipif(
    UPNPC is None, reason="upnpc not installed (Debian package miniupnpc; `make test` as root)"
)

EXTERNAL_IP = "198.19.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
UPNPC_TIMEOUT_S = 20.0
URL_RE = re.compile(r"IGD:(\d) (http://\S+/rootDesc\.xml)")


@dataclass
class Served:
    """A running daemon: its process and description URL per IGD version."""

    process: subprocess.Popen[str]
    urls: dict[int, str]
    stderr_path: Path


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(directory: Path, *args: str) -> Served:
    """Start `igd serve` on lo and wait (bounded) for its ready line."""
    stderr_path = directory / "stderr.txt"
    argv = [sys.executable, "-m", "igd", "serve", "--lan", "lo", "--http-port", "0"]
    argv += [
        "--ssdp-port",
        str(_free_udp_port()),
        "--pcp-port",
        "0",
        "--state-dir",
        str(directory / "state"),
        *args,
    ]
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=START_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    urls = {int(version): url for version, url in URL_RE.findall(line)}
    if not urls:
        _stop(process)
        pytest.fail(f"igd serve did not start: {stderr_path.read_text()}")
    return Served(process, urls, stderr_path)


def _stop(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("upnpc")
    daemon = _serve(directory, "--external-ip", EXTERNAL_IP, "--allow-private-external")
    try:
        yield daemon
    finally:
        code = _stop(daemon.process)
    assert code == 0, daemon.stderr_path.read_text()
    assert "Traceback" not in daemon.stderr_path.read_text()


@pytest.fixture(params=[2, 1], ids=["igd2", "igd1"])
def url(request: pytest.FixtureRequest, served: Served) -> str:
    """The description URL of each root in turn (IGD:2, then IGD:1)."""
    version: int = request.param
    return served.urls[version]


def upnpc(url: str, *args: str) -> tuple[int, str]:
    """Run `upnpc -u URL ARGS`: (exit code, stdout + stderr)."""
    assert UPNPC is not None
    result = subprocess.run(
        [UPNPC, "-u", url, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=UPNPC_TIMEOUT_S,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def listed(output: str, protocol: str, port: int) -> bool:
    """Whether `upnpc -l` output has the mapping PROTOCOL PORT->127.0.0.1:PORT."""
    return re.search(rf"(?m)^\s*\d+ {protocol} {port}->127\.0\.0\.1:{port} ", output) is not None


def test_status(url: str) -> None:
    code, out = upnpc(url, "-s")
    assert code == 0, out
    assert "Found valid IGD" in out
    assert "Connection Type : IP_Routed" in out
    assert "Status : Connected" in out
    assert f"ExternalIPAddress = {EXTERNAL_IP}" in out


@pytest.mark.parametrize("protocol", ["TCP", "UDP"])
def test_add_list_delete(url: str, protocol: str) -> None:
    port = (41000 if url.endswith("/igd2/rootDesc.xml") else 42000) + (protocol == "UDP")
    code, out = upnpc(url, "-a", "127.0.0.1", str(port), str(port), protocol)
    assert code == 0, out
    assert (
        f"external {EXTERNAL_IP}:{port} {protocol} is redirected to internal 127.0.0.1:{port}"
        in out
    )

    code, out = upnpc(url, "-l")
    assert code == 0, out
    assert listed(out, protocol, port), out

    code, out = upnpc(url, "-d", str(port), protocol)
    assert code == 0, out
    assert "UPNP_DeletePortMapping() returned : 0" in out

    code, out = upnpc(url, "-l")
    assert code == 0, out
    assert not listed(out, protocol, port), out

    code, out = upnpc(url, "-d", str(port), protocol)  # already gone: 714 NoSuchEntryInArray
    assert code != 0
    assert "714" in out


def test_lease_duration_is_kept(served: Served) -> None:
    code, out = upnpc(served.urls[2], "-a", "127.0.0.1", "43000", "43000", "UDP", "600")
    assert code == 0, out
    assert "(duration=600)" in out
    code, out = upnpc(served.urls[2], "-d", "43000", "UDP")
    assert code == 0, out


def test_mappings_are_shared_by_both_roots(served: Served) -> None:
    code, out = upnpc(served.urls[2], "-a", "127.0.0.1", "43100", "43100", "TCP")
    assert code == 0, out
    code, out = upnpc(served.urls[1], "-l")
    assert listed(out, "TCP", 43100), out
    code, out = upnpc(served.urls[1], "-d", "43100", "TCP")
    assert code == 0, out


def test_list_of_port_mappings_igd2(served: Served) -> None:
    """`-L` asks GetListOfPortMappings for TCP, then UDP; an empty range would be 730."""
    for protocol in ("TCP", "UDP"):
        code, out = upnpc(served.urls[2], "-a", "127.0.0.1", "43200", "43200", protocol)
        assert code == 0, out
    code, out = upnpc(served.urls[2], "-L")
    assert code == 0, out
    assert "GetListOfPortMappings() returned" not in out, out  # no error code
    assert listed(out, "TCP", 43200), out
    assert listed(out, "UDP", 43200), out
    for protocol in ("TCP", "UDP"):
        upnpc(served.urls[2], "-d", "43200", protocol)


def test_add_any_port_mapping_igd2(served: Served) -> None:
    code, out = upnpc(served.urls[2], "-n", "127.0.0.1", "43300", "43300", "TCP", "600")
    assert code == 0, out
    assert f"external {EXTERNAL_IP}:43300 TCP is redirected to internal 127.0.0.1:43300" in out
    upnpc(served.urls[2], "-d", "43300", "TCP")


def test_privileged_internal_port_is_refused(url: str) -> None:
    code, out = upnpc(url, "-a", "127.0.0.1", "22", "22", "TCP")  # ST-21 default rules
    assert code != 0
    assert "606" in out or "718" in out


def test_private_external_address_is_hidden_by_default(tmp_path: Path) -> None:
    daemon = _serve(tmp_path, "--external-ip", EXTERNAL_IP)  # no --allow-private-external
    try:
        _, out = upnpc(daemon.urls[2], "-s")
    finally:
        assert _stop(daemon.process) == 0
    assert f"ExternalIPAddress = {EXTERNAL_IP}" not in out, out
    assert "GetExternalIPAddress failed. (empty string)" in out, out  # WIP-03
