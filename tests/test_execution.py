"""Execution engine against the real simulated venue on a simulated clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from core.events import (
    FillReceived,
    OrderRejected,
    OrderSubmitted,
    OrderUpdateRefused,
    PositionMismatch,
)
from core.execution import ORDER_HISTORY
from core.journal import NullJournal
from core.model import (
    Fill,
    InvalidOrderTransition,
    Order,
    OrderIntent,
    OrderSnapshot,
    OrderStatus,
    OrderStatusUpdate,
    OrderType,
    Side,
    TargetPosition,
)
from core.simulation import run_simulated
from tests.helpers import SimRig, build_rig, settings


async def started(tmp_path: Path, limits: Mapping[str, Any] | None = None, **venue: Any) -> SimRig:
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
    rig.system.controls.reconcile()
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


# ------------------------------------------------------------------ bounded memory


async def _round_trips(rig: SimRig, count: int, symbol: str = "AAPL") -> list[str]:
    """``count`` filled orders on ``symbol``, alternately buying 10 and going flat."""
    ex = rig.system.execution
    ids = []
    for i in range(count):
        ex.on_target(TargetPosition(symbol, 10 if i % 2 == 0 else 0, f"trip {i}"))
        ids.append(ex.working_orders()[0].client_order_id)
        await run(rig, 1)
    return ids


async def test_only_recent_finished_orders_stay_in_memory_and_counters_count_all(
    tmp_path: Path,
) -> None:
    rig = await started(tmp_path)
    ex = rig.system.execution
    assert ex.order_history is None  # no journal: `orders` is the only record, kept whole
    ex.order_history = 3
    ids = await _round_trips(rig, 8)
    ex.on_target(TargetPosition("AAPL", 10, "still working"))
    working = ex.working_orders()[0]
    await ex.drain()  # the sender forgets finished orders once a batch has gone out
    assert ex.orders_created == 9 and ex.orders_filled == 8
    assert list(ex.orders) == [*ids[-3:], working.client_order_id]
    assert working.is_working
    rows = rig.system.snapshot().orders
    assert [r.client_order_id for r in rows] == [working.client_order_id, *reversed(ids[-3:])]


async def test_late_reports_about_a_dropped_order_are_judged_like_a_held_ones(
    tmp_path: Path,
) -> None:
    rig = await started(tmp_path)
    ex = rig.system.execution
    ex.order_history = 1
    ids = await _round_trips(rig, 4)
    dropped, held = ids[0], ids[-1]
    assert dropped not in ex.orders and held in ex.orders
    portfolio = rig.system.portfolio
    position, cash = portfolio.quantity("AAPL"), portfolio.cash
    now = rig.clock.now()

    # A resent execution (IB resends the session's executions on reconnect) is ignored.
    first_fill = next(f for f in rig.venue.fills if f.client_order_id == dropped)
    assert ex.on_fill(first_fill) is False
    assert (portfolio.quantity("AAPL"), portfolio.cash) == (position, cash)

    # Repeats and acknowledgements change nothing and alert nobody, as for a held order.
    events_before = len(rig.events)
    for status in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED, OrderStatus.SUBMITTED):
        ex.on_order_status(OrderStatusUpdate(dropped, status, now))
    assert len(rig.events) == events_before

    # A contradiction is refused with the very text a held order's would get.
    for client_order_id in (held, dropped):
        ex.on_order_status(OrderStatusUpdate(client_order_id, OrderStatus.CANCELLED, now))
    held_refusal, dropped_refusal = (e.reason for e in rig.of(OrderUpdateRefused))
    assert held_refusal == f"order {held}: Filled -> Cancelled is not allowed"
    assert dropped_refusal == f"order {dropped}: Filled -> Cancelled is not allowed"
    assert ex.orders[held].status is OrderStatus.FILLED

    # A new execution for it is booked (the money is real) and reported as a contradiction.
    extra = Fill("late-1", dropped, "AAPL", Side.BUY, 1, 100.0, 0.0, now)
    assert ex.on_fill(extra) is True
    assert portfolio.quantity("AAPL") == position + 1
    assert "already finished (Filled)" in rig.of(OrderUpdateRefused)[-1].reason

    # An id that was never ours is still an unknown order, even one with our stem.
    stem = held.rpartition("-")[0]
    for stranger in ("nope", f"{stem}-9999", f"{stem}-²"):
        ex.on_order_status(OrderStatusUpdate(stranger, OrderStatus.CANCELLED, now))
        assert rig.of(OrderUpdateRefused)[-1].reason.endswith("for an unknown order")


async def test_restored_finished_orders_are_dropped_and_still_recognised(tmp_path: Path) -> None:
    rig = await started(tmp_path)
    ex = rig.system.execution
    ex.order_history = 0
    old = Order(
        "TC-250101-000000-0007",  # an earlier session's id stem
        "AAPL",
        Side.BUY,
        5,
        OrderType.MARKET,
        rig.clock.now(),
        status=OrderStatus.CANCELLED,
    )
    ex.restore_order(old)
    assert old.client_order_id in ex.orders
    await _round_trips(rig, 1)
    assert old.client_order_id not in ex.orders
    now = rig.clock.now()
    ex.on_order_status(OrderStatusUpdate(old.client_order_id, OrderStatus.CANCELLED, now))
    assert not rig.of(OrderUpdateRefused)
    ex.on_order_status(OrderStatusUpdate(old.client_order_id, OrderStatus.FILLED, now))
    assert not rig.of(OrderUpdateRefused)  # fill statuses follow fills, never the reverse
    ex.on_order_status(OrderStatusUpdate(old.client_order_id, OrderStatus.REJECTED, now))
    (refused,) = rig.of(OrderUpdateRefused)
    assert refused.reason == f"order {old.client_order_id}: Cancelled -> Rejected is not allowed"


async def test_a_journal_bounds_order_memory(tmp_path: Path) -> None:
    rig = build_rig(settings(tmp_path), journal=NullJournal())
    assert rig.system.execution.order_history == ORDER_HISTORY


async def test_one_log_line_per_sent_batch_names_every_order(tmp_path: Path) -> None:
    rig = await started(tmp_path)
    ex = rig.system.execution
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        ex.on_target(TargetPosition("AAPL", 10, "one"))
        await ex.drain()
        for symbol in ("MSFT", "SPY"):
            ex.on_target(TargetPosition(symbol, 3, f"{symbol} {{braces}}"))
        await ex.drain()
    finally:
        logger.remove(sink)
    sent = [line for line in lines if "sent" in line]
    assert sent[0] == "order sent BUY 10 AAPL"
    _, msft, spy = ex.working_orders()
    assert sent[1:] == [
        f"orders sent (2): BUY 3 MSFT {msft.client_order_id} (MSFT {{braces}}); "
        f"BUY 3 SPY {spy.client_order_id} (SPY {{braces}})"
    ]


async def test_order_events_carry_a_snapshot_that_later_changes_do_not_touch(
    tmp_path: Path,
) -> None:
    rig = await started(tmp_path)
    rig.system.execution.on_target(TargetPosition("AAPL", 10, "t"))
    await run(rig, 1)
    submitted = rig.of(OrderSubmitted)[0].order
    order = rig.system.execution.orders[submitted.client_order_id]
    # the snapshot holds every field of the order, by name
    assert OrderSnapshot._fields == tuple(f.name for f in dataclasses.fields(Order))
    assert order.status is OrderStatus.FILLED
    # taken when it was sent: the fills that came later did not change it
    assert submitted.status is OrderStatus.PENDING_SUBMIT and submitted.filled_quantity == 0
    assert order.snapshot() == tuple(getattr(order, name) for name in OrderSnapshot._fields)
    with pytest.raises(AttributeError):
        submitted.status = OrderStatus.CANCELLED  # type: ignore[misc]
