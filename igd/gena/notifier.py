"""GENA NOTIFY delivery over aiohttp: evented values, the propertyset, one worker per subscription.

Values (`EventedValues`, WIP-60, WCIC-05, L3F-03): every evented variable of a service has one
small provider over the `igd.natcore` public API and the values the daemon injects:

- WANIPConnection: PossibleConnectionTypes "IP_Routed" (WIP-05); ConnectionStatus "Connected"
  while the core has an external address, else "Disconnected" (WIP-04); ExternalIPAddress from the
  injected `external_ip`, by default the core's address hidden ("") when private or reserved unless
  allowed (WIP-02/03); PortMappingNumberOfEntries the TOTAL number of mappings, clamped to ui2
  (WIP-61: an event is a broadcast to every subscriber, so it carries the gateway-wide count, as in
  miniupnpd; SOAP queries stay per caller); SystemUpdateID the core's counter mod 2**32 (WIP-62);
- WANCommonInterfaceConfig: PhysicalLinkStatus "Up"/"Down" from the injected `link_up`,
  "Unavailable" when that fails (WCIC-05);
- Layer3Forwarding: DefaultConnectionService of the root (L3F-01/03).

Delivery (EVT-08..11, EVT-15/16, ST-10/11): each subscription has its own task, so a slow or dead
subscriber delays nobody else. The first message is the initial event, with SEQ 0 and every evented
variable; `begin()` is called only once the SUBSCRIBE 200 has been written (EVT-08). Later messages
carry the variables whose value changed since the last message, plus any forced by a core event
(a mapping added or removed always events the count), and PortMappingNumberOfEntries and
SystemUpdateID always travel together (EVT-16). Messages are moderated: at most one per
`moderation_s` per subscription, built from the values current at send time, so bursts coalesce and
the "queue" of a subscriber is bounded at one pending message. The CALLBACK URLs are tried in order
until one answers 2xx (EVT-11), each attempt bounded by `attempt_timeout_s`, no redirects, no
proxies from the environment, no cookies; after `max_failures` messages in a row that no URL
accepted, the subscription is dropped. SEQ advances per message, delivered or not (EVT-10).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from lxml import etree
from yarl import URL

from igd.gena.subscriptions import (
    DEFAULT_SETTINGS,
    GenaSettings,
    GenaStats,
    Subscription,
    SubscriptionTable,
)
from igd.natcore import (
    Event,
    EventsDropped,
    MappingAdded,
    MappingRemoved,
    NumberOfEntriesChanged,
    SharingManager,
    is_reportable_external,
)
from igd.upnp import RootDevice, Service, ServiceEndpoint

__all__ = [
    "ENTRY_VARIABLES",
    "EVENT_NS",
    "NOTIFY_CONTENT_TYPE",
    "EventedValues",
    "Notifier",
    "build_propertyset",
    "forced_variables",
]

log = logging.getLogger(__name__)

EVENT_NS: Final = "urn:schemas-upnp-org:event-1-0"
"""Namespace of e:propertyset (EVT-09)."""
NOTIFY_CONTENT_TYPE: Final = 'text/xml; charset="utf-8"'
"""CONTENT-TYPE of a NOTIFY (EVT-09)."""
ENTRY_VARIABLES: Final = frozenset({"PortMappingNumberOfEntries", "SystemUpdateID"})
"""Evented together, always (EVT-16, WIP-61/62)."""

_UI2_MAX: Final = 0xFFFF
_UI4_MOD: Final = 2**32
_XML_DECLARATION: Final = b'<?xml version="1.0" encoding="utf-8"?>\n'
_ENTRY_EVENTS: Final = (MappingAdded, MappingRemoved, NumberOfEntriesChanged, EventsDropped)


def build_propertyset(values: Iterable[tuple[str, str]]) -> bytes:
    """`<e:propertyset>` with one `<e:property>` per variable, text escaped by lxml (EVT-09)."""
    root = etree.Element(f"{{{EVENT_NS}}}propertyset", nsmap={"e": EVENT_NS})
    for name, value in values:
        prop = etree.SubElement(root, f"{{{EVENT_NS}}}property")
        etree.SubElement(prop, name).text = value
    return _XML_DECLARATION + etree.tostring(root, encoding="utf-8")


def forced_variables(event: Event) -> frozenset[str]:
    """Variables a core event must carry even if their value looks unchanged (WIP-61/62)."""
    return ENTRY_VARIABLES if isinstance(event, _ENTRY_EVENTS) else frozenset()


Provider = Callable[[RootDevice], str]


class EventedValues:
    """The current text of every evented variable of a service (WIP-60, WCIC-05, L3F-03)."""

    def __init__(
        self,
        core: SharingManager,
        *,
        external_ip: Callable[[], str] | None = None,
        link_up: Callable[[], bool] | None = None,
        allow_private_external: bool = False,
    ) -> None:
        self._core = core
        self._external_ip = external_ip
        self._link_up = link_up
        self._allow_private = allow_private_external
        self._failing: set[str] = set()
        self._providers: dict[tuple[str, str], tuple[Provider, str]] = {
            ("WANIPConnection", "PossibleConnectionTypes"): (lambda _: "IP_Routed", "IP_Routed"),
            ("WANIPConnection", "ConnectionStatus"): (self._status, "Disconnected"),
            ("WANIPConnection", "ExternalIPAddress"): (self._address, ""),
            ("WANIPConnection", "PortMappingNumberOfEntries"): (self._entries, "0"),
            ("WANIPConnection", "SystemUpdateID"): (self._update_id, "0"),
            ("WANCommonInterfaceConfig", "PhysicalLinkStatus"): (self._link, "Unavailable"),
            ("Layer3Forwarding", "DefaultConnectionService"): (
                lambda root: root.default_connection_service(),
                "",
            ),
        }

    def missing(self, service: Service) -> tuple[str, ...]:
        """Evented variables of `service` without a provider (a bug if not empty)."""
        providers = self._providers
        return tuple(
            v.name for v in service.evented_variables if (service.kind, v.name) not in providers
        )

    def current(self, root: RootDevice, endpoint: ServiceEndpoint) -> dict[str, str]:
        """Name -> text for every evented variable, in table order; failures give a fallback."""
        service = endpoint.service
        result: dict[str, str] = {}
        for variable in service.evented_variables:
            key = (service.kind, variable.name)
            provider, fallback = self._providers[key]
            try:
                result[variable.name] = provider(root)
            except Exception as exc:
                if variable.name not in self._failing:
                    self._failing.add(variable.name)
                    log.error("value of %s.%s unavailable: %s", *key, exc)
                result[variable.name] = fallback
            else:
                self._failing.discard(variable.name)
        return result

    def _status(self, root: RootDevice) -> str:
        return "Connected" if self._core.external_address is not None else "Disconnected"

    def _address(self, root: RootDevice) -> str:
        if self._external_ip is not None:
            return self._external_ip()
        address = self._core.external_address
        allowed = self._allow_private
        if address is None or not is_reportable_external(address, allow_private=allowed):
            return ""
        return str(address)

    def _entries(self, root: RootDevice) -> str:
        return str(min(self._core.mapping_count, _UI2_MAX))

    def _update_id(self, root: RootDevice) -> str:
        return str(self._core.system_update_id % _UI4_MOD)

    def _link(self, root: RootDevice) -> str:
        if self._link_up is None:
            return "Up" if self._core.external_address is not None else "Down"
        return "Up" if self._link_up() else "Down"


@dataclass(eq=False)
class _Delivery:
    """The delivery state of one subscription: at most one pending message (coalesced)."""

    sid: str
    root: RootDevice
    endpoint: ServiceEndpoint
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    forced: set[str] = field(default_factory=set)
    initial: bool = True
    last: dict[str, str] = field(default_factory=dict)
    last_sent_at: float = float("-inf")
    failures: int = 0
    task: asyncio.Task[None] | None = None


class Notifier:
    """NOTIFY workers, one per subscription after its SUBSCRIBE answer (EVT-08..11, EVT-15)."""

    def __init__(
        self,
        table: SubscriptionTable,
        values: EventedValues,
        *,
        clock: Callable[[], float],
        settings: GenaSettings = DEFAULT_SETTINGS,
        stats: GenaStats | None = None,
        on_dropped: Callable[[Subscription], None] | None = None,
    ) -> None:
        self._table = table
        self._values = values
        self._clock = clock
        self._settings = settings
        self.stats = stats if stats is not None else GenaStats()
        self._on_dropped = on_dropped
        self._deliveries: dict[str, _Delivery] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def running(self) -> bool:
        """True between start() and aclose()."""
        return self._session is not None

    def __len__(self) -> int:
        return len(self._deliveries)

    async def start(self) -> None:
        """Open the client session: no env proxies, no cookies, no keep-alive, bounded."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self._settings.max_total, force_close=True, use_dns_cache=False
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=self._settings.attempt_timeout_s),
            auto_decompress=False,
        )

    async def aclose(self) -> None:
        """Stop every worker, then close the session."""
        deliveries = list(self._deliveries.values())
        self._deliveries.clear()
        tasks = [d.task for d in deliveries if d.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def begin(
        self, subscription: Subscription, root: RootDevice, endpoint: ServiceEndpoint
    ) -> None:
        """Start delivering, the initial event first; call after the 200 went out (EVT-08)."""
        if self._session is None:
            raise RuntimeError("the notifier is not started")
        if subscription.sid in self._deliveries:
            return
        delivery = _Delivery(subscription.sid, root, endpoint)
        delivery.task = asyncio.create_task(
            self._run(delivery), name=f"gena-notify-{subscription.sid}"
        )
        self._deliveries[subscription.sid] = delivery

    def end(self, sid: str) -> None:
        """Stop delivering to `sid` now, an attempt in flight included (EVT-07, EVT-11)."""
        delivery = self._deliveries.pop(sid, None)
        if delivery is not None and delivery.task is not None:
            delivery.task.cancel()

    def changed(self, forced: frozenset[str] = frozenset()) -> None:
        """Values may have changed: every worker re-reads them; `forced` ones go out anyway."""
        for delivery in self._deliveries.values():
            delivery.forced |= forced
            delivery.wakeup.set()

    def handle_event(self, event: Event) -> None:
        """One committed core event (WIP-61..63, EVT-16)."""
        self.changed(forced_variables(event))

    # -- the worker ------------------------------------------------------------------------------

    async def _run(self, delivery: _Delivery) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not delivery.initial:
                    await delivery.wakeup.wait()
                    wait = delivery.last_sent_at + self._settings.moderation_s - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                delivery.wakeup.clear()
                subscription = self._table.get(delivery.sid)
                if subscription is None or subscription.expires_at <= self._clock():
                    return  # EVT-11: stop sending once it expired; the timer forgets it
                try:
                    delivered = await self._send_pending(delivery, subscription)
                except Exception:
                    log.exception("NOTIFY to %s failed unexpectedly", delivery.sid)
                    delivered = False
                if delivered is None:
                    continue
                delivery.last_sent_at = loop.time()
                if delivered:
                    delivery.failures = 0
                    continue
                delivery.failures += 1
                if delivery.failures >= self._settings.max_failures:
                    self._drop(delivery, subscription)
                    return
        finally:
            if self._deliveries.get(delivery.sid) is delivery:
                del self._deliveries[delivery.sid]

    def _drop(self, delivery: _Delivery, subscription: Subscription) -> None:
        log.info(
            "dropping GENA subscription %s of %s after %d failed NOTIFY",
            subscription.sid,
            subscription.subscriber,
            delivery.failures,
        )
        self._deliveries.pop(delivery.sid, None)
        self._table.remove(subscription.sid)
        self.stats.notifications["dropped"] += 1
        if self._on_dropped is not None:
            self._on_dropped(subscription)

    def _pending(self, delivery: _Delivery) -> list[tuple[str, str]]:
        """The variables of the next message, in table order; [] when nothing changed."""
        current = self._values.current(delivery.root, delivery.endpoint)
        if delivery.initial:
            names = set(current)  # EVT-08: all of them
        else:
            names = {n for n, v in current.items() if delivery.last.get(n) != v}
            names |= delivery.forced & current.keys()
            if names & ENTRY_VARIABLES:
                names |= ENTRY_VARIABLES & current.keys()  # EVT-16
        delivery.initial = False
        delivery.forced.clear()
        message = [(name, value) for name, value in current.items() if name in names]
        delivery.last.update(message)
        return message

    async def _send_pending(self, delivery: _Delivery, subscription: Subscription) -> bool | None:
        """Build and send the next message: True delivered, False refused, None nothing to send."""
        message = self._pending(delivery)
        if not message:
            return None
        body = build_propertyset(message)
        seq = self._table.next_seq(subscription.sid)
        return await self._deliver(subscription, seq, body)

    async def _deliver(self, subscription: Subscription, seq: int, body: bytes) -> bool:
        """Try each CALLBACK URL in order until one answers 2xx (EVT-09/11/15)."""
        session = self._session
        if session is None:
            return False
        headers = {
            "Content-Type": NOTIFY_CONTENT_TYPE,
            "NT": "upnp:event",
            "NTS": "upnp:propchange",
            "SID": subscription.sid,
            "SEQ": str(seq),
        }
        timeout = aiohttp.ClientTimeout(total=self._settings.attempt_timeout_s)
        for url in subscription.callbacks:
            try:
                async with session.request(
                    "NOTIFY",
                    URL(url, encoded=True),
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=timeout,
                ) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                self.stats.notifications["attempt_failed"] += 1
                log.debug("NOTIFY %s SEQ %d to %s: %r", subscription.sid, seq, url, exc)
                continue
            if 200 <= status < 300:
                self.stats.notifications["sent"] += 1
                return True
            self.stats.notifications["attempt_failed"] += 1
            log.debug("NOTIFY %s SEQ %d to %s: HTTP %d", subscription.sid, seq, url, status)
        self.stats.notifications["failed"] += 1
        return False
