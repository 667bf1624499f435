"""A small synchronous, typed in-process event bus.

Publishing calls every handler subscribed to the event's exact type, in
subscription order, before returning: the hot path stays synchronous and the
order of effects is deterministic. Handlers that need I/O enqueue and return.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

E = TypeVar("E")
Handler = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = defaultdict(list)
        self._all: list[Handler] = []

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call ``handler`` for every published ``event_type``; returns an unsubscribe function."""
        self._handlers[event_type].append(handler)
        return lambda: self._handlers[event_type].remove(handler)

    def subscribe_all(self, handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for every event (recorder, test capture)."""
        self._all.append(handler)
        return lambda: self._all.remove(handler)

    def publish(self, event: object) -> None:
        handlers = self._handlers.get(type(event))
        if handlers:
            for handler in tuple(handlers):
                handler(event)
        for handler in tuple(self._all):
            handler(event)
