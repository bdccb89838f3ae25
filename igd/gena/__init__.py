"""GENA eventing (specs 1.6): SUBSCRIBE/UNSUBSCRIBE on event URLs and NOTIFY delivery.

``subscriptions``: the pure SID table, header and CALLBACK rules, timeouts, SEQ. ``notifier``:
evented values and NOTIFY workers on aiohttp. ``routes``: ``GenaFrontEnd``, whose ``handle`` is
the ``event_handler`` of the UPnP HTTP app.
"""

from igd.gena.notifier import EventedValues, Notifier, build_propertyset
from igd.gena.routes import GenaFrontEnd
from igd.gena.subscriptions import (
    DEFAULT_SETTINGS,
    GenaSettings,
    GenaStats,
    Refusal,
    Subscription,
    SubscriptionTable,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "EventedValues",
    "GenaFrontEnd",
    "GenaSettings",
    "GenaStats",
    "Notifier",
    "Refusal",
    "Subscription",
    "SubscriptionTable",
    "build_propertyset",
]
