"""Read back from the journal what a restart needs (core.journal.RecoveredState)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from core.journal import RecoveredState
from core.model import TradingState
from storage.database import Database

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# How far back to look for the last price of a holding before the day began
# (a long weekend plus a holiday).
_PRICE_LOOKBACK = timedelta(days=5)


async def load_recovery(db: Database, day_start: datetime) -> RecoveredState:
    fills = await db.fills_since(_EPOCH)
    orders = {o.client_order_id: o for o in await db.working_orders()}
    for order in await db.orders_since(day_start):
        orders.setdefault(order.client_order_id, order)
    state = RecoveredState(fills=fills, orders=sorted(orders.values(), key=lambda o: o.created_at))
    changes = await db.state_changes()
    if changes:
        last = changes[-1]
        state.trading_state = TradingState(last.state)
        state.state_reason = last.reason
        state.state_changed_at = last.ts
    held: dict[str, int] = defaultdict(int)
    for f in fills:
        if f.ts < day_start:
            held[f.symbol] += f.signed_quantity
    for symbol, quantity in held.items():
        if quantity == 0:
            continue
        bars = await db.bars(symbol, day_start - _PRICE_LOOKBACK, day_start)
        if bars:
            state.prices_at_day_start[symbol] = bars[-1].close
    return state
