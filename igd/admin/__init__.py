"""igd.admin: the operator's front-end, a local JSON API + Prometheus metrics of the running daemon.

`build_admin_app(core, token=..., metrics_sources=MetricsSources(...), started_at=..., version=...)`
and `start_admin_server(app, socket_path=..., tcp_port=...)` serve it (routes.py; the document is
openapi.json, shipped with the package); `AdminClient` (client.py) is what `igd status` and the
other operator commands use. Names resolve lazily, so the CLI does not load the server side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from igd.admin.client import AdminClient, AdminError, AdminUnreachable
    from igd.admin.metrics import LatencyRecorder, LatencySnapshot, MetricsSources
    from igd.admin.routes import AdminServer, build_admin_app, load_openapi, start_admin_server

__all__ = [
    "AdminClient",
    "AdminError",
    "AdminServer",
    "AdminUnreachable",
    "LatencyRecorder",
    "LatencySnapshot",
    "MetricsSources",
    "build_admin_app",
    "load_openapi",
    "start_admin_server",
]

_HOMES = {
    "AdminClient": "client",
    "AdminError": "client",
    "AdminUnreachable": "client",
    "LatencyRecorder": "metrics",
    "LatencySnapshot": "metrics",
    "MetricsSources": "metrics",
    "AdminServer": "routes",
    "build_admin_app": "routes",
    "load_openapi": "routes",
    "start_admin_server": "routes",
}


def __getattr__(name: str) -> Any:
    """Import the submodule holding `name` on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
