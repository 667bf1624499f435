"""A small synchronous, typed in-process event bus.

Publishing calls every handler subscribed to the event's exact type, in
subscription order, then every catch-all handler, before returning: the hot
path stays synchronous and the order of effects is deterministic. Handlers that
need I/O enqueue and return.

Publishing is on the hot path (every quote), so the handlers of each event type
are kept as one ready-made tuple: one dict lookup and a loop per event, no
copying. (Un)subscribing, which is rare, rebuilds the tuples; a handler that
(un)subscribes during a publish does not change who receives that event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

E = TypeVar("E")
Handler = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[Handler]] = {}
        self._all: list[tuple[Handler, frozenset[type]]] = []
        # event type -> typed handlers followed by the catch-all ones
        self._dispatch: dict[type, tuple[Handler, ...]] = {}

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> Callable[[], None]:
        """Call ``handler`` for every published ``event_type``; returns an unsubscribe function."""
        self._handlers.setdefault(event_type, []).append(handler)
        self._dispatch.clear()

        def unsubscribe() -> None:
            self._handlers[event_type].remove(handler)
            self._dispatch.clear()

        return unsubscribe

    def subscribe_all(
        self, handler: Handler, *, except_types: tuple[type, ...] = ()
    ) -> Callable[[], None]:
        """Call ``handler`` for every event (recorder, test capture) but ``except_types``
        (a type it takes on a typed subscription instead, or has no use for)."""
        entry = (handler, frozenset(except_types))
        self._all.append(entry)
        self._dispatch.clear()

        def unsubscribe() -> None:
            self._all.remove(entry)
            self._dispatch.clear()

        return unsubscribe

    def publish(self, event: object) -> None:
        event_type = type(event)
        handlers = self._dispatch.get(event_type)
        if handlers is None:
            handlers = self._dispatch[event_type] = (
                *self._handlers.get(event_type, ()),
                *(h for h, excepted in self._all if event_type not in excepted),
            )
        for handler in handlers:
            handler(event)
