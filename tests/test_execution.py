"""Execution engine against the real simulated venue on a simulated clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.events import FillReceived, OrderRejected, OrderUpdateRefused, PositionMismatch
from core.model import (
    Fill,
    InvalidOrderTransition,
    OrderIntent,
    OrderStatus,
    OrderStatusUpdate,
    OrderType,
    Side,
    TargetPosition,
)
from core.simulation import run_simulated
from tests.helpers import SimRig, build_rig, settings


async def started(
    tmp_path: Path, limits: dict[str, object] | None = None, **venue: object
) -> SimRig:
    rig = build_rig(settings(tmp_path, **(limits or {})), **venue)
    await rig.system.start(drive_broker=False)
    await run(rig, 2)
    return rig


async def run(rig: SimRig, seconds: float) -> None:
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=seconds))


async def test_target_becomes_delta_order_and_fills(tmp_path: Path) -> None:
    rig = await started(tmp_path)
    rig.system.execution.on_target(TargetPosition("AAPL", 30, "t1"))
    await run(rig, 1)
    assert rig.system.portfolio.quantity("AAPL") == 30
    rig.system.execution.on_target(TargetPosition("AAPL", 10, "t2"))
    await run(rig, 1)
    orders = list(rig.system.execution.orders.values())
    assert [(o.side, o.quantity, o.status) for o in orders] == [
        (Side.BUY, 30, OrderStatus.FILLED),
        (Side.SELL, 20, OrderStatus.FILLED),
    ]
    assert orders[1].reduce_only
    assert rig.venue.positions() == {"AAPL": 10}


async def test_new_target_cancels_working_order_before_replacing(tmp_path: Path) -> None:
    rig = await started(tmp_path)
    ex = rig.system.execution
    bid = rig.system.feed.latest("MSFT").bid  # type: ignore[union-attr]
    first = ex.on_intent(OrderIntent("MSFT", Side.BUY, 5, OrderType.LIMIT, round(bid * 0.97, 2)))
    assert first is not None
    await run(rig, 1)
    assert first.status is OrderStatus.SUBMITTED
    ex.on_target(TargetPosition("MSFT", 8, "replace"))
    # never two working orders on one symbol: the old one must be cancelled first
    assert [o.client_order_id for o in ex.working_orders()] == [first.client_order_id]
    assert first.status is OrderStatus.PENDING_CANCEL
    await run(rig, 1)
    assert first.status is OrderStatus.CANCELLED
    assert rig.venue.positions() == {"MSFT": 8}
    assert len(ex.orders) == 2


async def test_partial_fills_accumulate_quantity_and_average_price(tmp_path: Path) -> None:
    roomy = {"max_position_size": 1e6, "max_order_notional": 1e6, "sim_starting_cash": 1e6}
    rig = await started(tmp_path, roomy)
    ex = rig.system.execution
    sym = "AAPL"
    qty = 3_000  # displayed sizes are 100..1000 shares
    ex.on_target(TargetPosition(sym, qty, "big"))
    await run(rig, 5)
    order = next(iter(ex.orders.values()))
    fills = [e.fill for e in rig.of(FillReceived)]
    assert len(fills) >= 2, "order should need several displayed sizes"
    assert order.filled_quantity == sum(f.quantity for f in fills) == order.quantity
    vwap = sum(f.quantity * f.price for f in fills) / order.filled_quantity
    assert order.avg_fill_price == pytest.approx(vwap)
    assert order.status is OrderStatus.FILLED


async def test_duplicate_fill_is_applied_once(tmp_path: Path) -> None:
    rig = await started(tmp_path)
    ex = rig.system.execution
    ex.on_target(TargetPosition("AAPL", 10, "t"))
    await run(rig, 1)
    fill = rig.venue.fills[-1]
    assert ex.on_fill(fill) is False
    replay = Fill(fill.exec_id, fill.client_order_id, "AAPL", Side.BUY, 10, 1.0, 1.0, fill.ts)
    assert ex.on_fill(replay) is False
    assert rig.system.portfolio.quantity("AAPL") == 10


async def test_broker_reject_is_recorded_with_reason(tmp_path: Path) -> None:
    rig = await started(tmp_path, buying_power_multiple=0.01)
    rig.system.execution.on_target(TargetPosition("SPY", 20, "t"))
    await run(rig, 1)
    (rejected,) = rig.of(OrderRejected)
    assert "buying power" in rejected.reason.lower()
    order = rejected.order
    assert order.status is OrderStatus.REJECTED and order.last_message == rejected.reason
    assert not rig.system.execution.working_orders()
    assert any("Order rejected" in a.message for a in rig.system.alerts.recent)


async def test_invalid_transition_is_refused_not_applied(tmp_path: Path) -> None:
    rig = await started(tmp_path)
    ex = rig.system.execution
    ex.on_target(TargetPosition("AAPL", 5, "t"))
    await run(rig, 1)
    order = next(iter(ex.orders.values()))
    assert order.status is OrderStatus.FILLED
    with pytest.raises(InvalidOrderTransition):
        order.transition(OrderStatus.SUBMITTED, rig.clock.now())
    ex.on_order_status(
        OrderStatusUpdate(order.client_order_id, OrderStatus.CANCELLED, rig.clock.now())
    )
    assert order.status is OrderStatus.FILLED
    ex.on_order_status(OrderStatusUpdate("nope", OrderStatus.SUBMITTED, rig.clock.now()))
    assert len(rig.of(OrderUpdateRefused)) == 2


async def test_reconcile_reports_each_mismatch_and_halts(tmp_path: Path) -> None:
    rig = await started(tmp_path)
    rig.system.execution.on_target(TargetPosition("AAPL", 10, "t"))
    await run(rig, 1)
    assert rig.system.execution.reconcile() == ()
    # the broker books a trade we never heard of
    rig.system.portfolio.position("MSFT").quantity = 3
    rig.system.reconcile()
    mismatches = rig.of(PositionMismatch)
    assert [(m.symbol, m.internal_quantity, m.broker_quantity) for m in mismatches] == [
        ("MSFT", 3, 0)
    ]
    assert rig.system.risk.state_reason == "reconciliation mismatch"


async def test_cancel_before_send_never_reaches_broker(tmp_path: Path) -> None:
    rig = await started(tmp_path)
    ex = rig.system.execution
    order = ex.on_intent(OrderIntent("AAPL", Side.BUY, 1))
    assert order is not None
    ex.cancel(order.client_order_id)
    await run(rig, 1)
    assert order.status is OrderStatus.CANCELLED
    assert rig.venue.fills == []


async def test_periodic_reconcile_waits_for_books_in_motion_then_halts(tmp_path: Path) -> None:
    rig = build_rig(settings(tmp_path, reconcile_seconds=1))
    await rig.system.start(drive_broker=False)
    await run(rig, 2)
    rig.system.execution.on_target(TargetPosition("AAPL", 10, "t"))
    await run(rig, 0.5)
    assert rig.venue.positions() == {"AAPL": 10}
    # a difference right after a fill may be the broker's position report trailing
    rig.system.portfolio.position("AAPL").quantity = 11
    await run(rig, 2)
    assert rig.system.risk.state_reason != "reconciliation mismatch"
    await run(rig, 5)  # settled: the difference is real
    assert rig.system.risk.state_reason == "reconciliation mismatch"
    assert rig.of(PositionMismatch)[-1].symbol == "AAPL"
