"""The protocol through which the core hands orders to durable storage.

The core defines it; whoever assembles the system (tui/commands/runtime.py) supplies an
implementation (storage.recorder.Recorder). Keeping it here keeps core free of
storage imports.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from core.model import Fill, Order, TradingState


@dataclass(slots=True)
class RecoveredState:
    """What the journal holds, as the system needs it back after a restart."""

    fills: list[Fill] = field(default_factory=list)  # every recorded fill, oldest first
    orders: list[Order] = field(default_factory=list)  # working ones and today's
    trading_state: TradingState = TradingState.ACTIVE
    state_reason: str = ""
    state_changed_at: datetime | None = None
    # last recorded mid per symbol before the trading day began
    prices_at_day_start: dict[str, float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.fills and not self.orders and self.state_changed_at is None


class Journal(Protocol):
    async def write_orders(self, orders: Sequence[Order]) -> None:
        """Put new orders on record *before* they are sent (all or none; raises on failure).

        On record means it survives the process being killed, as a database commit does
        (storage.order_journal explains why that, and not a sync to disk, is the bar)."""
        ...

    async def load_recovery(self, day_start: datetime) -> RecoveredState:
        """Read back what a restart needs: fills, working and today's orders, state."""
        ...

    async def journaled_order_ids(self, client_order_ids: Collection[str]) -> set[str]:
        """Which of these client order ids the journal holds, from any day."""
        ...


class NullJournal:
    """For runs without storage (unit tests, quick backtests)."""

    async def write_orders(self, orders: Sequence[Order]) -> None:
        return None

    async def load_recovery(self, day_start: datetime) -> RecoveredState:
        return RecoveredState()

    async def journaled_order_ids(self, client_order_ids: Collection[str]) -> set[str]:
        return set()
