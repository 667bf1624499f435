"""Protective stops at the broker, brackets and exits kept while disconnected.

The real TradingSystem against the real simulated venue on an injected clock; what
the venue holds (its order states and positions) is the evidence, not the engine's
own books.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from core.backend import StopState
from core.brokers.sim import SimVenue
from core.bus import EventBus
from core.config import Settings
from core.execution import QUEUED_DISCONNECTED
from core.model import (
    BrokerOrderState,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
    TargetPosition,
    TimeInForce,
    TradingState,
    role_of_order_id,
)
from core.simulation import run_simulated
from storage.database import Database
from storage.recorder import Recorder
from tests.helpers import T0, SimRig, build_rig, settings


async def run(rig: SimRig, seconds: float) -> None:
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=seconds))


def working_at_venue(venue: SimVenue, symbol: str, role: OrderRole) -> list[BrokerOrderState]:
    return [
        state
        for cid, state in venue.order_states().items()
        if state.symbol == symbol and role_of_order_id(cid) is role and state.status.is_working
    ]


def only_stop(venue: SimVenue, symbol: str) -> BrokerOrderState:
    stops = working_at_venue(venue, symbol, OrderRole.STOP_LOSS)
    assert len(stops) == 1, stops
    return stops[0]


def assert_never_over_covered(venue: SimVenue, symbol: str) -> None:
    """Stops and exits working at the venue never close more than the position."""
    position = venue.positions().get(symbol, 0)
    closing_side = Side.SELL if position > 0 else Side.BUY
    closing = sum(
        s.quantity - s.filled_quantity
        for s in venue.order_states().values()
        if s.symbol == symbol
        and s.status.is_working
        and s.side is closing_side
        and s.status is not OrderStatus.PENDING_SUBMIT
    )
    assert closing <= abs(position) or position == 0, (closing, position)


# Limits wide enough that risk never clamps the test's orders.
ROOMY = {
    "symbols": "AAPL",
    "sim_seed": 3,
    "max_position_size": 1_000_000,
    "max_order_notional": 1_000_000,
}


@dataclass
class Journaled:
    """A console 'process' on a real database and the persistent venue state file."""

    rig: SimRig
    recorder: Recorder

    def die(self) -> None:
        """What SIGKILL leaves: nothing cancelled, nothing more flushed."""
        self.recorder._order_journal.close()
        self.rig.venue.close()


async def journaled(s: Settings, db: Database, before: SimRig | None = None) -> Journaled:
    """Start a console on ``db`` (after ``before`` died, from where its clock stood)."""
    recorder = Recorder(db, bus := EventBus())
    start = T0 if before is None else before.clock.now()
    rig = build_rig(
        s, journal=recorder, bus=bus, start=start, state_file=s.data_dir / "venue.jsonl"
    )
    await rig.system.start(drive_broker=False)
    await run(rig, 2)
    return Journaled(rig, recorder)


def bracket(rig: SimRig, quantity: int, stop: float, take: float | None, **fields: object) -> Order:
    """A market (or ``fields``) bracket entry, prices as fractions of the mid."""
    mid = rig.system.feed.latest("AAPL").mid  # type: ignore[union-attr]
    parent = rig.system.execution.on_intent(
        OrderIntent(
            "AAPL",
            Side.BUY,
            quantity,
            reason="bracket",
            stop_loss=round(mid * stop, 2),
            take_profit=None if take is None else round(mid * take, 2),
            **fields,  # type: ignore[arg-type]
        )
    )
    assert parent is not None
    return parent


@pytest.fixture
def protected(tmp_path: Path) -> Settings:
    return settings(tmp_path, protective_stop_pct=2.0, **ROOMY)


async def started(s: Settings) -> SimRig:
    rig = build_rig(s)
    await rig.system.start(drive_broker=False)
    await run(rig, 2)
    return rig


async def test_a_position_gets_one_gtc_stop_at_the_broker_priced_from_its_cost(
    protected: Settings,
) -> None:
    rig = await started(protected)
    rig.system.execution.on_target(TargetPosition("AAPL", 100, "entry"))
    await run(rig, 2)
    assert rig.venue.positions() == {"AAPL": 100}
    stop = only_stop(rig.venue, "AAPL")
    cost = rig.system.portfolio.positions["AAPL"].avg_cost
    assert stop.side is Side.SELL and stop.quantity == 100
    assert stop.order_type is OrderType.STOP and stop.tif is TimeInForce.GTC
    assert stop.stop_price == math.floor(cost * 0.98 * 100) / 100
    row = next(p for p in rig.system.snapshot().positions if p.symbol == "AAPL")
    assert row.stop_state is StopState.RESTING and row.stop_price == stop.stop_price
    await rig.system.stop("test")


async def test_the_stop_follows_the_position_and_goes_when_it_is_flat(
    protected: Settings,
) -> None:
    rig = await started(protected)
    ex = rig.system.execution
    ex.on_target(TargetPosition("AAPL", 100, "entry"))
    await run(rig, 2)
    first = only_stop(rig.venue, "AAPL")
    for target in (150, 40):
        ex.on_target(TargetPosition("AAPL", target, "resize"))
        for _ in range(8):  # every quarter second: never more closing than held
            await run(rig, 0.25)
            assert_never_over_covered(rig.venue, "AAPL")
        assert rig.venue.positions() == {"AAPL": target}
        stop = only_stop(rig.venue, "AAPL")
        # Resized in place: the same order at the broker, never a second one.
        assert stop.client_order_id == first.client_order_id
        assert stop.quantity - stop.filled_quantity == target
    ex.on_target(TargetPosition("AAPL", 0, "exit"))
    await run(rig, 2)
    assert rig.venue.positions() == {}
    assert working_at_venue(rig.venue, "AAPL", OrderRole.STOP_LOSS) == []
    assert rig.system.execution.protection.stops == {}
    await rig.system.stop("test")


async def test_a_triggered_stop_closes_the_position_and_the_target_is_not_chased(
    protected: Settings,
) -> None:
    rig = await started(protected)
    rig.system.execution.on_target(TargetPosition("AAPL", 100, "entry"))
    await run(rig, 2)
    stop_id = only_stop(rig.venue, "AAPL").client_order_id
    rig.venue.shock("AAPL", -6)
    # The quote through the stop also costs more than DAILY_LOSS_LIMIT: the breaker
    # flattens at the same moment the venue triggers the stop. The exit waits for the
    # stop to give way, so only one of them fills and the position never flips.
    for _ in range(12):
        await run(rig, 0.25)
        assert rig.venue.positions().get("AAPL", 0) >= 0
    assert rig.system.risk.state is TradingState.TRIPPED
    assert rig.venue.positions() == {}
    assert rig.venue.order_states()[stop_id].status is OrderStatus.FILLED
    # Stopped out: no re-entry towards the old target of 100.
    assert rig.system.execution.target("AAPL") is None
    await run(rig, 3)
    assert rig.venue.positions() == {}
    await rig.system.stop("test")


async def test_a_bracket_releases_both_children_and_the_stop_cancels_the_take_profit(
    tmp_path: Path,
) -> None:
    rig = await started(settings(tmp_path, **ROOMY))
    mid = rig.system.feed.latest("AAPL").mid  # type: ignore[union-attr]
    bracket(rig, 50, stop=0.97, take=1.05)
    await run(rig, 2)
    assert rig.venue.positions() == {"AAPL": 50}
    stop = only_stop(rig.venue, "AAPL")
    take = working_at_venue(rig.venue, "AAPL", OrderRole.TAKE_PROFIT)
    assert len(take) == 1 and take[0].quantity == 50 and stop.quantity == 50
    assert stop.stop_price == round(mid * 0.97, 2)
    rig.venue.shock("AAPL", -6)
    await run(rig, 3)
    assert rig.venue.positions() == {}
    states = rig.venue.order_states()
    assert states[stop.client_order_id].status is OrderStatus.FILLED
    assert states[take[0].client_order_id].status is OrderStatus.CANCELLED
    await rig.system.stop("test")


async def test_a_trailing_stop_moves_up_with_the_price_and_never_back(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        protective_stop_pct=2.0,
        protective_stop_trailing=True,
        **ROOMY,
    )
    rig = await started(s)
    rig.system.execution.on_target(TargetPosition("AAPL", 100, "entry"))
    await run(rig, 2)
    start_price = only_stop(rig.venue, "AAPL").stop_price
    assert start_price is not None
    rig.venue.shock("AAPL", 5)
    await run(rig, 2)
    raised = only_stop(rig.venue, "AAPL").stop_price
    assert raised is not None and raised > start_price * 1.03
    best = rig.system.execution.protection.plans["AAPL"].best
    rig.venue.shock("AAPL", -1.5)  # down, not through the stop
    seen = []
    for _ in range(8):
        await run(rig, 0.25)
        seen.append(only_stop(rig.venue, "AAPL").stop_price)
    # It trailed the best price before the drop (2% under it) and never moved back.
    assert seen == sorted(seen) and seen[-1] == math.floor(best * 0.98 * 100) / 100
    await rig.system.stop("test")


async def test_an_exit_made_while_disconnected_is_queued_then_sent_once_after_reconnect(
    protected: Settings,
) -> None:
    rig = await started(protected)
    ex = rig.system.execution
    ex.on_target(TargetPosition("AAPL", 100, "entry"))
    await run(rig, 2)
    await rig.venue.disconnect()
    ex.on_target(TargetPosition("AAPL", 30, "exit while disconnected"))
    await run(rig, 1)
    (queued,) = [o for o in rig.system.snapshot().orders if o.queued]
    assert queued.message == QUEUED_DISCONNECTED and queued.quantity == 70
    assert rig.venue.positions() == {"AAPL": 100}  # nothing reached the venue
    # The strategy's mind changes while still disconnected: the queued exit follows.
    ex.on_target(TargetPosition("AAPL", 20, "exit further"))
    await run(rig, 1)
    await rig.venue.connect()
    await run(rig, 2)
    assert rig.venue.positions() == {"AAPL": 20}
    exits = [
        s
        for s in rig.venue.order_states().values()
        if s.side is Side.SELL and role_of_order_id(s.client_order_id) is OrderRole.ENTRY
    ]
    assert len(exits) == 1 and exits[0].quantity == 80
    assert only_stop(rig.venue, "AAPL").quantity == 20
    await rig.system.stop("test")


async def test_flatten_while_disconnected_is_sent_after_reconnect_and_new_risk_is_refused(
    protected: Settings,
) -> None:
    rig = await started(protected)
    system = rig.system
    system.execution.on_target(TargetPosition("AAPL", 100, "entry"))
    await run(rig, 2)
    await rig.venue.disconnect()
    system.execution.on_target(TargetPosition("AAPL", 300, "more while disconnected"))
    assert system.execution.held == {}  # risk-increasing: refused, not queued
    result = system.flatten("operator f while disconnected")
    assert result.ok
    assert len(system.execution.held) == 1
    await run(rig, 1)
    assert rig.venue.positions() == {"AAPL": 100}
    await rig.venue.connect()
    await run(rig, 2)
    assert rig.venue.positions() == {}
    assert working_at_venue(rig.venue, "AAPL", OrderRole.STOP_LOSS) == []
    await system.stop("test")


async def test_stops_are_adopted_after_a_restart_and_missing_ones_placed(
    tmp_path: Path,
) -> None:
    s = settings(
        tmp_path,
        protective_stop_pct=2.0,
        symbols="AAPL,MSFT",
        sim_seed=3,
        max_position_size=1_000_000,
        max_order_notional=1_000_000,
    )
    db = await Database.open(s.database_path)
    try:
        first = await journaled(s, db)
        first.rig.system.execution.on_target(TargetPosition("AAPL", 100, "entry"))
        await run(first.rig, 2)
        stop_id = only_stop(first.rig.venue, "AAPL").client_order_id
        await first.recorder.flush()
        first.die()  # SIGKILL: nothing is cancelled, the stop rests at the venue

        again = (await journaled(s, db, first.rig)).rig
        assert only_stop(again.venue, "AAPL").client_order_id == stop_id  # adopted
        assert again.system.execution.protection.placed == 0
        # A position opened now gets its own stop; closing one cancels its stop.
        again.system.execution.on_target(TargetPosition("MSFT", 20, "entry"))
        again.system.execution.on_target(TargetPosition("AAPL", 0, "exit"))
        await run(again, 3)
        assert len(working_at_venue(again.venue, "MSFT", OrderRole.STOP_LOSS)) == 1
        assert working_at_venue(again.venue, "AAPL", OrderRole.STOP_LOSS) == []
        await again.system.stop("test")
        again.venue.close()
    finally:
        await db.close()


async def _journaled_session(tmp_path: Path) -> dict[str, list[tuple[object, ...]]]:
    """One seeded sim session with every order type, journaled to a real SQLite file."""
    s = settings(tmp_path, protective_stop_pct=2.0, **ROOMY)
    db = await Database.open(s.database_path)
    try:
        bus = EventBus()
        recorder = Recorder(db, bus)
        rig = build_rig(s, journal=recorder, bus=bus)
        await rig.system.start(drive_broker=False)
        await run(rig, 2)
        ex = rig.system.execution
        mid = rig.system.feed.latest("AAPL").mid  # type: ignore[union-attr]
        ex.on_intent(
            OrderIntent(
                "AAPL",
                Side.BUY,
                30,
                reason="bracket",
                stop_loss=round(mid * 0.97, 2),
                take_profit=round(mid * 1.01, 2),
            )
        )
        await run(rig, 3)
        ex.on_target(TargetPosition("AAPL", 60, "add"))  # the stop follows
        await run(rig, 3)
        ex.on_intent(
            OrderIntent(
                "AAPL",
                Side.SELL,
                10,
                OrderType.STOP_LIMIT,
                round(mid * 0.9, 2),
                "stop-limit",
                stop_price=round(mid * 0.91, 2),
                tif=TimeInForce.GTC,
            )
        )
        rig.venue.shock("AAPL", -4)
        await run(rig, 5)
        await rig.system.stop("test")
        await recorder.stop()
    finally:
        await db.close()
    import sqlite3

    with sqlite3.connect(s.database_path) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in ("orders", "order_events", "fills")
        }


async def test_every_order_type_is_journaled_and_a_second_run_journals_the_same(
    tmp_path: Path,
) -> None:
    first = await _journaled_session(tmp_path / "a")
    types = {(row[4], row[17], row[18]) for row in first["orders"]}  # type, tif, role
    assert ("STP", "GTC", "stop_loss") in types
    assert ("LMT", "GTC", "take_profit") in types
    assert ("MKT", "DAY", "entry") in types and ("STP LMT", "GTC", "entry") in types
    children = [row for row in first["orders"] if row[19] is not None]  # parent_id
    assert len(children) == 2 and len({row[20] for row in children}) == 1  # one OCA group
    assert first["fills"]
    # The same seed and clock give the same journal, row for row.
    assert await _journaled_session(tmp_path / "b") == first


async def test_a_strategys_stop_pct_protects_its_position_with_the_policy_off(
    tmp_path: Path,
) -> None:
    rig = await started(settings(tmp_path, **ROOMY))  # PROTECTIVE_STOP_PCT off
    rig.system.execution.on_target(TargetPosition("AAPL", 50, "entry", stop_pct=3.0))
    await run(rig, 2)
    stop = only_stop(rig.venue, "AAPL")
    cost = rig.system.portfolio.positions["AAPL"].avg_cost
    assert stop.quantity == 50 and stop.stop_price == math.floor(cost * 0.97 * 100) / 100
    row = next(p for p in rig.system.snapshot().positions if p.symbol == "AAPL")
    assert row.stop_expected and row.stop_state is StopState.RESTING
    await rig.system.stop("test")


def test_the_example_strategy_asks_for_its_stop_pct() -> None:
    from datetime import UTC, datetime, timedelta

    from core.model import Bar
    from core.strategy.ma_cross import MovingAverageCross

    strategy = MovingAverageCross(
        ["AAPL"], context=None, fast=2, slow=3, stop_pct=2.5, trailing_stop=True
    )  # type: ignore[arg-type]
    t0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    outputs = [
        strategy.on_bar(Bar("AAPL", t0 + timedelta(minutes=i), t0, c, c, c, c, 1))
        for i, c in enumerate([10.0, 10.0, 10.0, 11.0, 12.0])
    ]
    targets = [o for o in outputs if isinstance(o, TargetPosition)]
    assert targets and all(t.stop_pct == 2.5 and t.trailing for t in targets)
    with pytest.raises(ValueError, match="stop_pct"):
        MovingAverageCross(["AAPL"], context=None, stop_pct=80)  # type: ignore[arg-type]


async def test_a_take_profit_fill_ends_the_bracket_and_the_books_agree_with_the_venue(
    tmp_path: Path,
) -> None:
    from core.events import OrderUpdateRefused

    rig = await started(settings(tmp_path, **ROOMY))
    bracket(rig, 200, stop=0.95, take=1.02)
    await run(rig, 3)
    assert rig.venue.positions() == {"AAPL": 200}
    rig.venue.shock("AAPL", 4)  # through the take-profit (it fills in displayed-size slices)
    await run(rig, 10)
    assert rig.venue.positions() == {}
    ex = rig.system.execution
    assert ex.protection.stops == {} and ex.protection.take_profits == {}
    for order in ex.orders.values():  # nothing left working in our books either
        assert not order.is_working, order
    assert rig.of(OrderUpdateRefused) == []
    await rig.system.stop("test")


async def test_a_bracket_cut_short_protects_what_filled_and_its_stop_ends_filled(
    tmp_path: Path,
) -> None:
    rig = await started(settings(tmp_path, sim_starting_cash=1_000_000, **ROOMY))
    quote = rig.system.feed.latest("AAPL")
    assert quote is not None
    ex = rig.system.execution
    parent = ex.on_intent(
        OrderIntent(
            "AAPL",
            Side.BUY,
            2_000,
            OrderType.LIMIT,
            round(quote.ask * 1.003, 2),  # marketable
            "bracket, partly filled",
            stop_loss=round(quote.mid * 0.95, 2),
        )
    )
    assert parent is not None
    for _ in range(40):  # the displayed size fills it in slices: stop after the first
        await run(rig, 0.1)
        if parent.filled_quantity:
            break
    ex.cancel(parent.client_order_id, "enough")
    await run(rig, 1)
    filled = parent.filled_quantity
    assert 0 < filled < 2_000 and parent.status is OrderStatus.CANCELLED
    stop = ex.protection.stops["AAPL"]
    assert stop.quantity == filled  # what the venue works for it, not the parent's 2,000
    assert only_stop(rig.venue, "AAPL").quantity == filled
    rig.venue.shock("AAPL", -8)
    await run(rig, 5)
    assert rig.venue.positions() == {}
    assert stop.status is OrderStatus.FILLED and not stop.is_working
    await rig.system.stop("test")


async def test_two_stops_restored_for_one_symbol_leave_the_one_the_broker_works(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path, protective_stop_pct=2.0, **ROOMY)
    db = await Database.open(s.database_path)
    try:
        session = await journaled(s, db)
        rig, ex = session.rig, session.rig.system.execution
        ex.on_target(TargetPosition("AAPL", 100, "entry"))
        await run(rig, 2)
        first = only_stop(rig.venue, "AAPL").client_order_id
        await session.recorder.flush()  # the database knows the first stop as working ...
        ex.on_target(TargetPosition("AAPL", -50, "flip"))
        await run(rig, 3)
        second = only_stop(rig.venue, "AAPL").client_order_id
        assert second != first
        # ... and the process dies before its cancel is recorded: the journal holds two
        # working stops for AAPL, the venue works only the second.
        session.die()

        again = (await journaled(s, db, rig)).rig
        assert only_stop(again.venue, "AAPL").client_order_id == second
        assert only_stop(again.venue, "AAPL").quantity == 50
        assert again.system.execution.protection.stops["AAPL"].client_order_id == second
        assert again.system.execution.protection.placed == 0  # adopted, not placed anew
        await again.system.stop("test")
        again.venue.close()
    finally:
        await db.close()


async def test_an_order_recorded_bigger_than_the_broker_holds_it_ends_filled_after_restart(
    tmp_path: Path,
) -> None:
    from core.events import OrderUpdated

    s = settings(tmp_path, protective_stop_pct=2.0, **ROOMY)
    db = await Database.open(s.database_path)
    try:
        session = await journaled(s, db)
        rig, ex = session.rig, session.rig.system.execution
        ex.on_target(TargetPosition("AAPL", 100, "entry"))
        await run(rig, 2)
        ex.on_target(TargetPosition("AAPL", 60, "exit"))
        await run(rig, 2)
        (exit_order,) = [
            o for o in ex.orders.values() if o.side is Side.SELL and o.reason == "exit"
        ]
        assert rig.venue.positions() == {"AAPL": 60}
        # The journal's record says more than the broker was sent (a resize that was
        # not recorded before the crash): 120, of which the broker filled its 40.
        exit_order.quantity = 120
        exit_order.status = OrderStatus.PARTIALLY_FILLED
        rig.bus.publish(OrderUpdated(exit_order.snapshot(), rig.clock.now()))
        await session.recorder.flush()
        session.die()

        again = (await journaled(s, db, rig)).rig
        restored = again.system.execution.orders[exit_order.client_order_id]
        assert restored.status is OrderStatus.FILLED and restored.quantity == 40
        assert again.system.execution.working_orders() == []
        # No phantom exit holds the stop back: the position keeps its full stop.
        assert only_stop(again.venue, "AAPL").quantity == 60
        await again.system.stop("test")
        again.venue.close()
    finally:
        await db.close()


async def test_halt_and_a_graceful_stop_leave_the_stops_at_the_broker(protected: Settings) -> None:
    rig = await started(protected)
    rig.system.execution.on_target(TargetPosition("AAPL", 100, "entry"))
    await run(rig, 2)
    stop_id = only_stop(rig.venue, "AAPL").client_order_id
    result = rig.system.halt("operator test")
    assert result.ok
    await run(rig, 1)
    assert only_stop(rig.venue, "AAPL").client_order_id == stop_id  # still resting
    await rig.system.stop("test")
    # The console is gone; the position is still protected at the venue.
    assert only_stop(rig.venue, "AAPL").client_order_id == stop_id
    assert rig.venue.positions() == {"AAPL": 100}
