"""Schemathesis against the admin API's shipped OpenAPI document, on a live server on 127.0.0.1.

The server (memory backend; wan0 198.19.0.1/24 public, lan0 198.18.0.1/24 private; a frozen
clock, so no lease runs out meanwhile) runs in its own thread and event loop, on TCP 127.0.0.1
with a bearer token. Every generated request, valid or not, must get no 5xx, a status, content
type, headers and body the document describes, and a refused request must leave the model
exactly as it was. `positive_data_acceptance` is off: a request the schema allows may still be
refused by the core's policy with 422 (a target outside the LAN), which is the documented answer.
GET /v1/events is a stream and is tested in test_admin_api.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.result import Ok
from support import FakeClock, fake_resolver, lab_connections

from igd.admin.metrics import MetricsSources
from igd.admin.routes import (
    ADMIN_APP,
    AdminServer,
    build_admin_app,
    load_openapi,
    start_admin_server,
)
from igd.natcore import (
    MemoryStore,
    SharingConnectionType,
    SharingManager,
    StaticConnectionSource,
)
from igd.natcore.backends.memory import MemoryBackend

TOKEN = "schemathesis-token-7c1f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 30
START_TIMEOUT_S = 10.0
FROZEN = FakeClock()

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": MAX_EXAMPLES},
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_dict(json.loads(load_openapi()), config=CONFIG).exclude(
    path="/v1/events"
)


@dataclass
class LiveAdmin:
    """The admin API served from a thread of its own; `snapshot()` reads the model there."""

    loop: asyncio.AbstractEventLoop
    core: SharingManager
    server: AdminServer
    url: str

    def snapshot(self) -> tuple[Any, ...]:
        async def read() -> tuple[Any, ...]:
            core = self.core
            return (
                tuple(core.mappings()),
                core.connections(),
                core.firewall_settings,
                core.system_update_id,
            )

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(START_TIMEOUT_S)


async def _open() -> tuple[SharingManager, AdminServer]:
    core = await SharingManager.open(
        backend=MemoryBackend(),
        store=MemoryStore(),
        source=StaticConnectionSource(lab_connections()),
        clock=FROZEN,  # leases granted here never run out, so only requests change the model
        resolver=fake_resolver,
    )
    await core.enable_sharing(core.find_connection(name="wan0").guid, SharingConnectionType.PUBLIC)
    await core.enable_sharing(core.find_connection(name="lan0").guid, SharingConnectionType.PRIVATE)
    app = build_admin_app(
        core,
        token=TOKEN,
        metrics_sources=MetricsSources(subscriptions=lambda: 0),
        started_at=FROZEN.now,
        version="0.1.0",
        clock=FROZEN,
    )
    server = await start_admin_server(app, tcp_port=0)
    return core, server


@pytest.fixture(scope="module")
def live() -> Iterator[LiveAdmin]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="admin-live", daemon=True)
    thread.start()
    started: Future[tuple[SharingManager, AdminServer]] = asyncio.run_coroutine_threadsafe(
        _open(), loop
    )
    core, server = started.result(START_TIMEOUT_S)
    assert server.tcp_address is not None
    host, port = server.tcp_address
    try:
        yield LiveAdmin(loop, core, server, f"http://{host}:{port}")
    finally:

        async def close() -> None:
            await server.close()
            await core.aclose()

        asyncio.run_coroutine_threadsafe(close(), loop).result(START_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_S)
        loop.close()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=MAX_EXAMPLES)
def test_admin_api_conforms(case: schemathesis.Case[Any], live: LiveAdmin) -> None:
    before = live.snapshot()
    response = case.call(base_url=live.url, headers=AUTH, timeout=10)
    case.validate_response(response, headers=AUTH)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert live.snapshot() == before, f"{case.method} {case.formatted_path} changed the model"
        error = response.json()["error"]
        assert error["message"]
        assert "\n" not in error["message"]


def test_document_is_valid_openapi() -> None:
    """The shipped document loads and names every operation of the app."""
    loaded = schemathesis.openapi.from_dict(json.loads(load_openapi()))
    operations = set()
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), result
        operations.add((result.ok().method.upper(), result.ok().path))
    assert ("GET", "/v1/events") in operations
    assert ("POST", "/v1/mappings/{protocol}/{port}/enable") in operations
    assert len(operations) == 15


def test_generated_requests_were_valid_and_invalid(live: LiveAdmin) -> None:
    """After the run above: the API answered both accepted and refused requests."""
    counters = live.server.runner.app[ADMIN_APP].counters.requests
    results = {result for (_, result) in counters}
    assert "ok" in results
    assert "bad_request" in results
    assert sum(counters.values()) > 100
    assert not any(result in ("internal", "backend_error") for result in results)
