"""The GENA front: SUBSCRIBE/UNSUBSCRIBE on event URLs, the expiry timer, core events (spec 1.6).

`GenaFrontEnd.handle` is the `event_handler(request, root, endpoint)` the UPnP HTTP app calls for
SUBSCRIBE and UNSUBSCRIBE on an event URL; the app has already routed the path (so 404, EVT-14, is
not decided here) and applied its source/Host/Origin gates. Answers (DA1.1 section 4.1):

- new subscription: 200 with `SID: uuid:...`, `TIMEOUT: Second-n` (never infinite), empty body
  (EVT-02/03); the initial event starts only after those bytes were written (EVT-08);
- renewal: 200, same SID, new TIMEOUT, no initial event, SEQ continues (EVT-06);
- UNSUBSCRIBE: 200, nothing is sent for that SID afterwards (EVT-07);
- refusals from `igd.gena.subscriptions.Refusal`: 400, 412, or 503 with Retry-After (ST-09/10);
  503 also before `start()` and after `stop()`.

`start()` opens the NOTIFY session and runs three tasks: the expiry timer (EVT-11, ST-10), the
reader of the core's committed events (WIP-61..63) and a slow poll that catches value changes no
core event announces (the WAN link, WCIC-05); `refresh()` triggers the same check at once.
`stop()` ends every worker and forgets every subscription (a later renewal is 412).
Front-ends import only `igd.natcore` public names and `igd.upnp` (architecture 3.3/3.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, Final, Protocol

from aiohttp import web

from igd.gena.notifier import EventedValues, Notifier
from igd.gena.subscriptions import (
    DEFAULT_SETTINGS,
    GENA_HEADERS,
    Cancellation,
    GenaSettings,
    GenaStats,
    NewSubscription,
    Refusal,
    Renewal,
    Subscription,
    SubscriptionTable,
    format_timeout,
    parse_request,
)
from igd.natcore import Event, SharingManager
from igd.netif import peer_ipv4
from igd.upnp import RootDevice, ServiceEndpoint

__all__ = ["EVENTS_QUEUE_SIZE", "GenaFrontEnd"]

log = logging.getLogger(__name__)

EVENTS_QUEUE_SIZE: Final = 256
"""Core events buffered for the GENA front; an overflow is an EventsDropped, fully re-evented."""

_REASONS: Final = {400: "Bad Request", 412: "Precondition Failed", 503: "Service Unavailable"}


class _EventStream(Protocol):
    """What `SharingManager.events()` returns: an async iterator that can be closed."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    def close(self) -> None: ...


def _plain(status: int) -> web.Response:
    response = web.Response(status=status, text=_REASONS.get(status, "Error"))
    if status == 503:
        response.headers["Retry-After"] = "1"
    return response


def _accepted(subscription: Subscription) -> web.Response:
    """200 with SID and TIMEOUT, CONTENT-LENGTH 0 (EVT-02)."""
    return web.Response(
        status=200,
        headers={"SID": subscription.sid, "TIMEOUT": format_timeout(subscription.timeout_s)},
    )


class GenaFrontEnd:
    """SID table + notifier behind the app's event URLs; `handle` is its event_handler."""

    def __init__(
        self,
        core: SharingManager,
        roots: Sequence[RootDevice],
        *,
        settings: GenaSettings = DEFAULT_SETTINGS,
        external_ip: Callable[[], str] | None = None,
        link_up: Callable[[], bool] | None = None,
        allow_private_external: bool = False,
        clock: Callable[[], float] = time.monotonic,
        new_sid: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self.core = core
        self.settings = settings
        self.stats = GenaStats()
        self.table = SubscriptionTable(settings)
        self.values = EventedValues(
            core,
            external_ip=external_ip,
            link_up=link_up,
            allow_private_external=allow_private_external,
        )
        for root in roots:
            for endpoint in root.services():
                missing = self.values.missing(endpoint.service)
                if missing:
                    raise ValueError(f"{endpoint.service.kind}: no value for {missing}")
        self._clock = clock
        self._new_sid = new_sid
        self.notifier = Notifier(
            self.table, self.values, clock=clock, settings=settings, stats=self.stats
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._timer_wakeup = asyncio.Event()
        self._events: _EventStream | None = None
        self._running = False

    # -- life cycle ------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Subscriptions held now (a gauge for metrics)."""
        return len(self.table)

    async def start(self) -> None:
        """Open the NOTIFY session; run the expiry timer, the core-event reader and the poll."""
        if self._running:
            return
        await self.notifier.start()
        self._events = self.core.events(maxsize=EVENTS_QUEUE_SIZE)
        self._tasks = [
            self._spawn(self._expiry_timer(), "gena-expiry"),
            self._spawn(self._read_events(), "gena-core-events"),
            self._spawn(self._poll(), "gena-poll"),
        ]
        self._running = True

    async def stop(self) -> None:
        """Stop the tasks and every NOTIFY worker, forget every subscription (idempotent)."""
        self._running = False
        if self._events is not None:
            self._events.close()
            self._events = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.notifier.aclose()
        for subscription in self.table.subscriptions():
            self.table.remove(subscription.sid)

    async def __aenter__(self) -> GenaFrontEnd:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @staticmethod
    def _spawn(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return asyncio.create_task(coroutine, name=name)

    def refresh(self) -> None:
        """Re-read every evented value now and event the changed ones (e.g. a WAN link change)."""
        self.notifier.changed()

    def purge(self) -> tuple[Subscription, ...]:
        """Forget the subscriptions that ran out and stop their workers (EVT-11, ST-10)."""
        expired = self.table.expire(self._clock())
        for subscription in expired:
            self.notifier.end(subscription.sid)
            log.debug("GENA subscription %s expired", subscription.sid)
        self.stats.notifications["expired"] += len(expired)
        return expired

    async def _expiry_timer(self) -> None:
        while True:
            self.purge()
            deadline = self.table.next_deadline()
            delay = self.settings.max_timer_sleep_s
            if deadline is not None:
                delay = min(delay, max(deadline - self._clock(), 0.0) + 0.01)
            self._timer_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timer_wakeup.wait()

    async def _read_events(self) -> None:
        if self._events is None:
            return
        async for event in self._events:
            self.notifier.handle_event(event)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            self.notifier.changed()

    # -- the event handler -----------------------------------------------------------------------

    async def handle(
        self, request: web.Request, root: RootDevice, endpoint: ServiceEndpoint
    ) -> web.StreamResponse:
        """SUBSCRIBE or UNSUBSCRIBE on `endpoint`'s event URL (EVT-01..08, ST-09/10)."""
        method = request.method
        if not self._running:
            return self._refuse(method, 503, "not-running")
        subscriber = peer_ipv4(request.transport, request.remote)
        if subscriber is None:  # the app's source gate passed it, so the socket went away
            return self._refuse(method, 412, "no-peer")
        headers = {name: tuple(request.headers.getall(name, ())) for name in GENA_HEADERS}
        parsed = parse_request(method, headers)
        if isinstance(parsed, Refusal):
            return self._refusal(method, parsed)
        key = endpoint.event_path
        now = self._clock()
        if isinstance(parsed, NewSubscription):
            self.purge()
            result = self.table.subscribe(
                key, parsed.callbacks, subscriber, parsed.timeout_s, now, self._new_sid
            )
            if isinstance(result, Refusal):
                return self._refusal(method, result)
            response = _accepted(result)
            try:
                await response.prepare(request)
                await response.write_eof()
            except BaseException:
                self.table.remove(result.sid)  # the subscriber never learnt its SID
                raise
            self.notifier.begin(result, root, endpoint)  # EVT-08: after the 200
            self._timer_wakeup.set()
            self.stats.requests[(method, "subscribed")] += 1
            log.debug("GENA %s: %s for %s -> %s", key, result.sid, subscriber, result.callbacks)
            return response
        if isinstance(parsed, Renewal):
            result = self.table.renew(
                parsed.sid, parsed.timeout_s, now, service_key=key, subscriber=subscriber
            )
            if isinstance(result, Refusal):
                return self._refusal(method, result)
            self._timer_wakeup.set()
            self.stats.requests[(method, "renewed")] += 1
            return _accepted(result)
        assert isinstance(parsed, Cancellation)
        result = self.table.unsubscribe(parsed.sid, now, service_key=key, subscriber=subscriber)
        if isinstance(result, Refusal):
            return self._refusal(method, result)
        self.notifier.end(result.sid)
        self.stats.requests[(method, "unsubscribed")] += 1
        return web.Response(status=200)

    def _refusal(self, method: str, refusal: Refusal) -> web.Response:
        return self._refuse(method, refusal.status, refusal.value)

    def _refuse(self, method: str, status: int, reason: str) -> web.Response:
        self.stats.requests[(method, reason)] += 1
        log.debug("GENA %s refused %d: %s", method, status, reason)
        return _plain(status)
