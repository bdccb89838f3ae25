"""Fan-out of committed events to subscribers, each with its own bounded queue (drop-oldest)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from igd.natcore.events import Event, EventsDropped

__all__ = ["EventBus", "Subscription"]

DEFAULT_QUEUE_EVENTS = 256


class Subscription:
    """An async iterator over the events published since it was created."""

    def __init__(self, bus: EventBus, maxsize: int, kinds: frozenset[type] | None) -> None:
        self._bus = bus
        self._queue: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._kinds = kinds
        self._maxsize = maxsize
        self._dropped = 0
        self._closed = False

    def offer(self, event: Event) -> None:
        if self._kinds is not None and type(event) not in self._kinds:
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """End the stream once the queued events are read."""
        self._closed = True
        self._wakeup.set()
        self._bus.discard(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            return EventsDropped(dropped)
        return self._queue.popleft()


class EventBus:
    """Publish after commit; every subscriber iterates its own stream in publication order."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            for subscription in tuple(self._subscriptions):
                subscription.offer(event)

    def subscribe(
        self, kinds: Iterable[type] | None = None, maxsize: int = DEFAULT_QUEUE_EVENTS
    ) -> Subscription:
        """A stream of the events published from now on; EventsDropped marks lost ones."""
        subscription = Subscription(self, maxsize, None if kinds is None else frozenset(kinds))
        if self._closed:
            subscription.close()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def discard(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every stream once its queued events are read."""
        self._closed = True
        for subscription in tuple(self._subscriptions):
            subscription.close()
