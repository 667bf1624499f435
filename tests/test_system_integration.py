"""The whole pipeline on the simulated venue and a simulated clock, with a real SQLite journal."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from core.events import (
    BreakerTripped,
    FillReceived,
    IntentClamped,
    OrderSubmitted,
    QuoteRejected,
    RiskRejected,
    TradingStateChanged,
)
from core.model import OrderIntent, Side, TargetPosition, TradingState
from core.simulation import run_simulated
from storage.database import Database
from storage.recorder import Recorder
from tests.helpers import RecordingCross, build_rig, quote_is_sane, settings


async def test_three_simulated_hours_keep_the_books_straight(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        strategy="tests.helpers:RecordingCross",
        bar_seconds=30,
        daily_loss_limit=1e9,
        max_position_size=15_000,
        max_order_notional=15_000,
    )
    db = await Database.open(s.database_path)
    from core.bus import EventBus

    bus = EventBus()
    recorder = Recorder(db, bus, record_quotes=True)
    rig = build_rig(s, journal=recorder, bus=bus, bad_quote_rate=0.01)
    import asyncio

    recorder_task = asyncio.create_task(recorder.run())
    start_equity = rig.system.portfolio.equity
    await rig.system.start(drive_broker=False)
    quotes = await run_simulated(rig.system, rig.venue, rig.clock, timedelta(hours=3))
    await rig.system.stop("end of test")
    await recorder.stop()
    await recorder_task

    system, venue = rig.system, rig.venue
    assert quotes > 3 * 3600 * 4 * 3 * 0.95
    # trades happened
    fills = rig.of(FillReceived)
    assert len(rig.of(OrderSubmitted)) >= 10
    assert len(fills) >= 10
    # internal positions equal the venue's
    internal = {sym: p.quantity for sym, p in system.portfolio.positions.items() if p.quantity}
    assert internal == venue.positions()
    # equity = cash + position value, and agrees with the venue's net liquidation
    pf = system.portfolio
    assert pf.equity == pytest.approx(
        pf.cash + sum(p.quantity * p.mark_price for p in pf.positions.values())
    )
    assert pf.cash == pytest.approx(venue.account_values().cash, abs=1e-6)
    assert pf.equity == pytest.approx(venue.account_values().net_liquidation, abs=1e-6)
    # realized + unrealized - commissions = equity change
    realized = sum(p.realized_pnl for p in pf.positions.values())
    commissions = sum(p.commissions for p in pf.positions.values())
    assert commissions > 0
    assert realized + pf.unrealized - commissions == pytest.approx(pf.equity - start_equity)
    # every venue fill is in the database exactly once
    with sqlite3.connect(s.database_path) as conn:
        stored = conn.execute("SELECT exec_id FROM fills").fetchall()
        orders_in_db = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    await db.close()
    assert sorted(r[0] for r in stored) == sorted(f.exec_id for f in venue.fills)
    assert len(stored) == len({r[0] for r in stored})
    assert orders_in_db == system.execution.orders_created
    # bad quotes were generated, dropped and never reached the strategy
    assert len(rig.of(QuoteRejected)) > 100
    assert RecordingCross.seen_quotes and all(quote_is_sane(q) for q in RecordingCross.seen_quotes)
    assert len(RecordingCross.seen_quotes) == sum(system.feed.accepted.values())


async def _position_in(rig, symbol: str, quantity: int) -> None:  # type: ignore[no-untyped-def]
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=5))
    rig.system.execution.on_target(TargetPosition(symbol, quantity, "test entry"))
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=5))
    assert rig.system.portfolio.quantity(symbol) == quantity


async def test_adverse_move_trips_breaker_flattens_and_halts(tmp_path: Path) -> None:
    s = settings(
        tmp_path, daily_loss_limit=500, max_position_size=50_000, max_order_notional=50_000
    )
    rig = build_rig(s)
    await rig.system.start(drive_broker=False)
    price = rig.venue.mid("AAPL")
    qty = int(20_000 // price)
    await _position_in(rig, "AAPL", qty)
    # 8% against a ~$20k long is ~-$1,600: beyond the $500 limit
    rig.venue.shock("AAPL", -8)
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=10))
    tripped = rig.of(BreakerTripped)
    assert len(tripped) == 1 and "daily loss limit" in tripped[0].reason
    assert rig.system.risk.state is TradingState.TRIPPED
    assert rig.venue.positions() == {}
    assert rig.system.portfolio.quantity("AAPL") == 0
    # halted: a risk-increasing target is refused while tripped
    rig.system.execution.on_target(TargetPosition("MSFT", 10, "after trip"))
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=2))
    assert rig.venue.positions() == {}
    assert any("TRIPPED" in r.reason for r in rig.of(RiskRejected))
    # an explicit reset brings back ACTIVE and trading works again
    assert rig.system.reset_breaker("test").ok
    states = [e.state for e in rig.of(TradingStateChanged)]
    assert states[-2:] == [TradingState.TRIPPED, TradingState.ACTIVE]
    await rig.system.stop()


async def test_oversize_intents_are_clamped_or_rejected_with_reasons(tmp_path: Path) -> None:
    s = settings(tmp_path, max_position_size=10_000, max_order_notional=5_000)
    rig = build_rig(s)
    await rig.system.start(drive_broker=False)
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=2))
    price = rig.venue.mid("SPY")
    rig.system.execution.on_target(TargetPosition("SPY", int(100_000 // price), "too big"))
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=2))
    clamped = rig.of(IntentClamped)
    assert clamped and "MAX_ORDER_NOTIONAL" in clamped[0].reason
    assert clamped[0].approved_quantity * price <= 5_000 * 1.01
    held = rig.system.portfolio.quantity("SPY")
    assert 0 < held * price <= 5_000 * 1.01
    # a limit order far from the market is rejected by the collar, whole
    far = OrderIntent("MSFT", Side.BUY, 1, limit_price=rig.venue.mid("MSFT") * 0.5)
    from core.model import OrderType

    far = OrderIntent("MSFT", Side.BUY, 1, OrderType.LIMIT, far.limit_price)
    assert rig.system.execution.on_intent(far) is None
    assert "PRICE_COLLAR_PCT" in rig.of(RiskRejected)[-1].reason
    await rig.system.stop()


async def test_stop_file_halts_and_cancels_within_a_second(tmp_path: Path) -> None:
    s = settings(tmp_path)
    rig = build_rig(s, latency_ms=0)
    await rig.system.start(drive_broker=False)
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=2))
    # a limit order below the market stays working
    from core.model import OrderType

    bid = rig.system.feed.latest("AAPL").bid  # type: ignore[union-attr]
    order = rig.system.execution.on_intent(
        OrderIntent("AAPL", Side.BUY, 10, OrderType.LIMIT, round(bid * 0.98, 2))
    )
    assert order is not None
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=1))
    assert order.is_working
    s.stop_file.touch()
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=1))
    assert rig.system.risk.state is TradingState.HALTED
    assert rig.system.risk.state_reason == "STOP file"
    assert not order.is_working
    # removing the file does not resume; the operator does
    s.stop_file.unlink()
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=1))
    assert rig.system.risk.state is TradingState.HALTED
    assert rig.system.resume().ok
    assert rig.system.risk.state is TradingState.ACTIVE
    await rig.system.stop()
