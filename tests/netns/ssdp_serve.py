"""Run one SsdpResponder (dual IGD:1 + IGD:2 roots) on an interface; driven over stdin/stdout.

Started by tests/netns/test_ssdp_netns.py inside the gateway namespace (`Lab.spawn`). Prints one
JSON object per line: {"event": "ready", ...} once started; on the stdin line `counters` the
counters; on `stop` (or EOF, or when --lifetime-s runs out) it stops (byebye), prints
{"event": "stopped", "counters": {...}} and exits 0 (3 when the lifetime ran out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from igd.netif import interface_ipv4
from igd.ssdp.responder import SsdpResponder
from igd.upnp import RootDevice

BASE_UUID = uuid.UUID("6a7c4d2e-0000-4000-8000-0000000000aa")
SERVER = "Linux/6 UPnP/1.1 igd-lab/0.1"
CONFIG_IDS = {1: 101, 2: 202}
MAX_COMMAND_BYTES = 256


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def serve(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_COMMAND_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    roots = [RootDevice.create(1, BASE_UUID, "/igd1"), RootDevice.create(2, BASE_UUID, "/igd2")]
    addresses = interface_ipv4(args.ifname)
    responder = SsdpResponder(
        args.ifname,
        addresses,
        roots,
        args.http_port,
        boot_id=args.boot_id,
        config_ids=CONFIG_IDS,
        server=SERVER,
        port=args.port,
    )
    await responder.start()
    emit(
        "ready",
        ifname=args.ifname,
        port=responder.port,
        addresses=[str(a) for a in addresses],
        boot_id=responder.boot_id,
        udns={str(root.version): str(root.udn) for root in roots},
    )
    status = 3
    try:
        async with asyncio.timeout(args.lifetime_s):
            while True:
                line = (await reader.readline()).strip()
                if line == b"counters":
                    emit("counters", counters=responder.counters.as_dict())
                elif line == b"stop" or not line:
                    status = 0
                    break
    except TimeoutError:
        pass
    finally:
        await responder.stop()
    emit("stopped", counters=responder.counters.as_dict())
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--http-port", type=int, default=5000)
    parser.add_argument("--port", type=int, default=1900)
    parser.add_argument("--boot-id", type=int, default=1)
    parser.add_argument("--lifetime-s", type=float, default=60.0)
    return asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
