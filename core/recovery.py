"""Restart recovery: today's books from the journal, then the broker's word on top.

Order of work on start (before anything can trade):
1. `restore_from_journal`: replay every recorded fill into the portfolio (positions,
   cash, realized P&L, commissions), put back the day's start equity (recomputed from
   the fills and the last recorded price of each holding before the day began), the
   working orders and today's orders, and the persisted trading state (a trip or a halt
   survives a restart).
2. `reconcile_with_broker` once connected: executions the journal lacks are applied
   exactly once (de-duplicated by execution id); working orders the broker knows are
   adopted (never re-sent); journal orders the broker never received are marked so;
   broker orders the journal has no entry for, from any day, raise an alert (the
   broker's session can hold orders from before the trading day began, which step 1
   does not restore). Positions are compared
   afterwards by the usual reconciliation, which halts on a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loguru import logger

from core.brokers.base import Broker
from core.clock import Clock
from core.execution import ExecutionEngine
from core.journal import Journal, RecoveredState
from core.model import (
    AlertSeverity,
    BrokerOrderState,
    Order,
    OrderStatus,
    OrderStatusUpdate,
    TradingState,
)
from core.monitoring import AlertRaiser
from core.portfolio import Portfolio
from core.risk import RiskManager

NEVER_RECEIVED = "not received by the broker (lost before it was sent)"


@dataclass(frozen=True, slots=True)
class RecoveryParts:
    """The parts of the core that recovery rebuilds (books, orders, state) and asks
    (broker, clock), handed over by the composition root: nothing else is reached."""

    portfolio: Portfolio
    execution: ExecutionEngine
    risk: RiskManager
    broker: Broker
    alerts: AlertRaiser
    clock: Clock


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    executions_applied: int
    orders_adopted: int
    orders_never_received: int
    unknown_broker_orders: tuple[str, ...]


def restore_from_journal(parts: RecoveryParts, state: RecoveredState, day_start: datetime) -> int:
    """Rebuild the books from the journal; returns the number of fills replayed."""
    portfolio = parts.portfolio
    fills = sorted(state.fills, key=lambda f: f.ts)
    before = [f for f in fills if f.ts < day_start]
    today = [f for f in fills if f.ts >= day_start]
    for f in before:
        portfolio.apply_fill(f)
    for symbol, price in state.prices_at_day_start.items():
        portfolio.mark(symbol, price)
    portfolio.start_new_day()
    for f in today:
        portfolio.apply_fill(f)
    execution = parts.execution
    for f in fills:
        execution.mark_fill_seen(f.exec_id)
    for order in state.orders:
        execution.restore_order(order)
    if state.trading_state is not TradingState.ACTIVE:
        parts.risk.restore(state.trading_state, state.state_reason)
    if fills or state.orders:
        logger.info(
            "restored from journal: {fills} fills, {orders} orders, state {state}",
            fills=len(fills),
            orders=len(state.orders),
            state=str(state.trading_state),
        )
    return len(fills)


async def reconcile_with_broker(parts: RecoveryParts, journal: Journal) -> RecoveryReport:
    """Apply what the broker knows that the journal does not; adopt, never re-send."""
    execution = parts.execution
    broker = parts.broker
    applied = 0
    for fill in broker.executions():
        if execution.on_fill(fill):
            applied += 1
            logger.warning(
                "execution missing from the journal applied",
                exec_id=fill.exec_id,
                client_order_id=fill.client_order_id,
            )
    states = broker.order_states()
    adopted = never = 0
    for order in execution.open_orders():
        known = states.get(order.client_order_id)
        if known is None:
            never += 1
            execution.on_order_status(
                OrderStatusUpdate(
                    order.client_order_id,
                    OrderStatus.REJECTED,
                    parts.clock.now(),
                    None,
                    NEVER_RECEIVED,
                )
            )
            continue
        adopted += 1
        _adopt(parts, order, known)
    not_restored = [cid for cid in states if cid not in execution.orders]
    journaled = await journal.journaled_order_ids(not_restored) if not_restored else set()
    unknown = tuple(sorted(cid for cid in not_restored if cid not in journaled))
    for cid in unknown:
        parts.alerts.raise_alert(
            AlertSeverity.CRITICAL,
            "unknown_broker_order",
            f"Broker holds order {cid} that the journal does not know",
            client_order_id=cid,
        )
    report = RecoveryReport(applied, adopted, never, unknown)
    if applied or adopted or never or unknown:
        logger.info(
            "broker recovery: {applied} executions applied, {adopted} orders adopted, "
            "{never} never received, {unknown} unknown at broker",
            applied=applied,
            adopted=adopted,
            never=never,
            unknown=len(unknown),
        )
    return report


_WORKING_AT_BROKER = frozenset(
    {OrderStatus.PENDING_SUBMIT, OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED}
)


def _adopt(parts: RecoveryParts, order: Order, known: BrokerOrderState) -> None:
    now = parts.clock.now()
    status = known.status
    if order.status is OrderStatus.PENDING_CANCEL and status in _WORKING_AT_BROKER:
        # The cancel was asked for before the crash; whether it left is unknown, and
        # the broker still works the order: ask again (a second request is harmless).
        parts.execution.resend_cancel(order.client_order_id, known.broker_order_id)
        return
    if status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
        status = OrderStatus.SUBMITTED  # fills already drove the quantity; this is the ack
    # The broker's quantity is the order's: a change of ours that was lost with the
    # process (a resize not recorded) would otherwise leave it working here for good.
    parts.execution.on_order_status(
        OrderStatusUpdate(
            order.client_order_id,
            status,
            now,
            known.broker_order_id,
            "adopted",
            quantity=known.quantity,
        )
    )
