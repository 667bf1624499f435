"""The Broker protocol every venue adapter implements (sim, IB).

Calls are fire-and-track: ``place_order`` and ``cancel_order`` return at once
and the outcome arrives later through the ``BrokerListener``. Quotes arrive
raw and unvalidated; the market-data feed validates them before anyone else
sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from core.model import (
    AccountValues,
    BrokerOrderState,
    Fill,
    Order,
    OrderStatusUpdate,
    Quote,
    QuoteSource,
)


class BrokerConnectError(Exception):
    """A connection problem the operator must fix (wrong account type, bad settings).

    Transient failures (TWS not running yet, network drop) are not raised: the broker
    reports them through `on_connection_changed(False, message)` and keeps retrying.
    """


class BrokerListener(Protocol):
    def on_quote(self, quote: Quote) -> None: ...

    def on_order_status(self, update: OrderStatusUpdate) -> None: ...

    def on_fill(self, fill: Fill) -> None: ...

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None: ...

    def on_connection_changed(self, connected: bool, message: str) -> None:
        """Connected: the broker has resynchronised (positions, open orders, missed fills)."""
        ...

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        """A symbol's data source changed (stream -> poll when stalled, and back)."""
        ...


class Broker(Protocol):
    name: str

    def set_listener(self, listener: BrokerListener) -> None: ...

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    @property
    def connected(self) -> bool: ...

    def subscribe_quotes(self, symbols: Sequence[str]) -> None: ...

    def place_order(self, order: Order) -> None:
        """Send ``order`` (its client_order_id travels as the broker-side reference)."""
        ...

    def place_bracket(self, parent: Order, children: Sequence[Order]) -> None:
        """Send a bracket: ``parent`` (the entry) and its ``children`` (a GTC stop-loss,
        and a take-profit limit when there is one) whose ``parent_id`` names it and who
        share one ``oca_group``. The children rest inactive until the parent fills, then
        work for what it has filled (following partial fills); a fill of one child
        reduces the other by as much (cancelled at zero). Outcomes arrive per order
        through the listener, as for ``place_order``."""
        ...

    def modify_order(self, order: Order) -> None:
        """Change a working order in place: ``order`` is the one sent before (same client
        order id) with a new ``quantity`` and/or ``stop_price`` / ``limit_price``. The
        broker acknowledges with a Submitted status (message "modified"), or reports an
        error through ``on_broker_error`` when the order cannot be modified (filled,
        cancelled, unknown); the order keeps working as it was then."""
        ...

    def cancel_order(self, client_order_id: str) -> None: ...

    def positions(self) -> dict[str, int]:
        """Broker-side signed share quantities, symbols with zero omitted."""
        ...

    def account_values(self) -> AccountValues: ...

    def order_states(self) -> dict[str, BrokerOrderState]:
        """Every order of ours the broker knows this session (working and finished)."""
        ...

    def executions(self) -> list[Fill]:
        """Every execution of ours the broker reports for the session, oldest first."""
        ...

    async def run(self) -> None:
        """Background work while connected (the sim's quote clock); may return at once."""
        ...
