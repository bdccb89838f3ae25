"""Capture natpmpc's request datagrams on 127.0.0.1:5351 and answer them with our codec.

Run by hand from the repository root: `.venv/bin/python tests/unit/natpmp_golden/capture.py`.
natpmpc is always given `-g 127.0.0.1`, so nothing can reach a real gateway. The listener answers
every request (external address 198.19.0.1, mapping as asked) so natpmpc finishes at once, and
prints natpmpc's output: the client's reading of our responses.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from ipaddress import IPv4Address
from pathlib import Path

from igd.natpmp.wire import (
    ExternalAddressRequest,
    MapRequest,
    ResultCode,
    pull_request,
    push_external_address_response,
    push_map_response,
)

HERE = Path(__file__).parent
EPOCH = 1234
RUNS: list[tuple[str, list[str]]] = [
    ("natpmpc-20150609-external-address", []),
    ("natpmpc-20150609-map-udp-40001-7200", ["-a", "40001", "40001", "udp", "7200"]),
    ("natpmpc-20150609-map-tcp-40002-to-41002-3600", ["-a", "41002", "40002", "tcp", "3600"]),
    ("natpmpc-20150609-delete-udp-40001", ["-a", "0", "40001", "udp", "0"]),
    ("natpmpc-20150609-delete-all-tcp", ["-a", "0", "0", "tcp", "0"]),
]


def serve(sock: socket.socket, seen: list[bytes], stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            continue
        seen.append(data)
        request = pull_request(data)
        if isinstance(request, ExternalAddressRequest):
            sock.sendto(push_external_address_response(EPOCH, IPv4Address("198.19.0.1")), peer)
        elif isinstance(request, MapRequest):
            port = request.suggested_external_port if request.lifetime else 0
            sock.sendto(
                push_map_response(
                    request.opcode,
                    ResultCode.SUCCESS,
                    EPOCH,
                    request.internal_port,
                    port,
                    request.lifetime,
                ),
                peer,
            )


def main() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 5351))
    for name, args in RUNS:
        seen: list[bytes] = []
        stop = threading.Event()
        thread = threading.Thread(target=serve, args=(sock, seen, stop))
        thread.start()
        try:
            run = subprocess.run(
                ["natpmpc", "-g", "127.0.0.1", *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        finally:
            stop.set()
            thread.join()
        print(f"== {name}: exit {run.returncode}\n{run.stdout}{run.stderr}")
        for data in seen:
            print(f"   received: {data.hex(' ')}")
        if seen:  # with -a, natpmpc first asks for the address (`00 00`): keep the last one
            (HERE / f"{name}.bin").write_bytes(seen[-1])
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
