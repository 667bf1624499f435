"""Restart recovery and the exchange-calendar trading day, on real SQLite and a persistent venue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.bus import EventBus
from core.clock import SimClock
from core.config import Settings
from core.events import DailyPnlRecorded, TradingStateChanged
from core.model import OrderStatus, OrderType, Side, TargetPosition, TradingState
from core.recovery import NEVER_RECEIVED
from core.simulation import run_simulated
from storage.database import Database
from storage.recorder import Recorder
from tests.helpers import T0, SimRig, build_rig, settings


@dataclass
class Session:
    """One console 'process': a system on the shared database and venue state file."""

    rig: SimRig
    recorder: Recorder

    async def stop(self) -> None:
        await self.rig.system.stop("test stop")
        await self.recorder.stop()
        self.rig.venue.close()

    def die(self) -> None:
        """What the kernel does for a killed process: its files close, its locks go."""
        self.recorder._order_journal.close()
        self.rig.venue.close()


async def open_session(s: Settings, db: Database, start: datetime | None = None) -> Session:
    bus = EventBus()
    recorder = Recorder(db, bus)
    rig = build_rig(
        s, journal=recorder, bus=bus, start=start or T0, state_file=s.data_dir / "venue.jsonl"
    )
    await rig.system.start(drive_broker=False)
    return Session(rig, recorder)


async def run(session: Session, seconds: float) -> None:
    rig = session.rig
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=seconds))


@pytest.fixture
async def db_and_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = settings(
        tmp_path, daily_loss_limit=300, max_position_size=50_000, max_order_notional=50_000
    )
    db = await Database.open(s.database_path)
    yield db, s
    await db.close()


async def test_a_trip_survives_restart_and_the_daily_loss_is_recomputed(
    db_and_settings: tuple[Database, Settings],
) -> None:
    db, s = db_and_settings
    first = await open_session(s, db)
    await run(first, 2)
    first.rig.system.execution.on_target(TargetPosition("AAPL", 200, "entry"))
    await run(first, 2)
    first.rig.venue.shock("AAPL", -4)
    await run(first, 5)
    assert first.rig.system.risk.state is TradingState.TRIPPED
    loss = first.rig.system.portfolio.daily_pnl
    assert loss <= -300
    await first.stop()

    second = await open_session(s, db, start=first.rig.clock.now())
    system = second.rig.system
    assert system.risk.state is TradingState.TRIPPED  # a restart does not clear a trip
    assert "daily loss limit" in system.risk.state_reason
    assert system.portfolio.daily_pnl == pytest.approx(loss, abs=0.01)  # flat: all realized
    assert system.portfolio.quantity("AAPL") == 0 == second.rig.venue.positions().get("AAPL", 0)
    # still tripped: a new risk-increasing target is refused
    await run(second, 1)
    system.execution.on_target(TargetPosition("MSFT", 10, "after restart"))
    await run(second, 1)
    assert second.rig.venue.positions() == {}
    await second.stop()


async def test_an_operator_halt_survives_restart(
    db_and_settings: tuple[Database, Settings],
) -> None:
    db, s = db_and_settings
    first = await open_session(s, db)
    await run(first, 1)
    first.rig.system.halt("h")
    await run(first, 1)
    await first.stop()
    second = await open_session(s, db, start=first.rig.clock.now())
    assert second.rig.system.risk.state is TradingState.HALTED
    assert second.rig.system.risk.state_reason == "operator halt (h)"
    await second.stop()


async def test_positions_and_working_orders_come_back_and_are_adopted_not_resent(
    db_and_settings: tuple[Database, Settings],
) -> None:
    db, s = db_and_settings
    first = await open_session(s, db)
    await run(first, 2)
    ex = first.rig.system.execution
    ex.on_target(TargetPosition("SPY", 30, "entry"))
    await run(first, 1)
    bid = first.rig.system.feed.latest("MSFT").bid  # type: ignore[union-attr]
    from core.model import OrderIntent

    resting = ex.on_intent(OrderIntent("MSFT", Side.BUY, 5, OrderType.LIMIT, round(bid * 0.97, 2)))
    assert resting is not None
    await run(first, 1)
    assert resting.status is OrderStatus.SUBMITTED
    # the process dies: no graceful stop (nothing cancelled), the last batch is flushed
    await first.recorder.flush()
    first.die()

    second = await open_session(s, db, start=first.rig.clock.now())
    system = second.rig.system
    assert system.portfolio.quantity("SPY") == 30
    adopted = system.execution.orders[resting.client_order_id]
    assert adopted.status is OrderStatus.SUBMITTED and adopted.is_working
    assert system.recovery is not None and system.recovery.orders_adopted == 1
    sent = [o for o in second.rig.venue.order_states()]
    assert sent.count(resting.client_order_id) == 1  # never re-sent
    assert system.risk.state is TradingState.ACTIVE  # books agree with the broker
    await second.stop()


async def test_a_cancel_asked_for_before_a_crash_is_asked_again_and_the_order_ends_cancelled(
    db_and_settings: tuple[Database, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, s = db_and_settings
    first = await open_session(s, db)
    await run(first, 2)
    ex = first.rig.system.execution
    bid = first.rig.system.feed.latest("MSFT").bid  # type: ignore[union-attr]
    from core.model import OrderIntent

    resting = ex.on_intent(OrderIntent("MSFT", Side.BUY, 5, OrderType.LIMIT, round(bid * 0.97, 2)))
    assert resting is not None
    await run(first, 1)
    assert resting.status is OrderStatus.SUBMITTED
    # The cancel request dies with the process before it reaches the venue.
    monkeypatch.setattr(first.rig.venue, "cancel_order", lambda client_order_id: None)
    ex.cancel(resting.client_order_id, "operator cancel")
    assert resting.status is OrderStatus.PENDING_CANCEL
    await first.recorder.flush()
    first.die()

    second = await open_session(s, db, start=first.rig.clock.now())
    await run(second, 1)
    order = second.rig.system.execution.orders[resting.client_order_id]
    assert order.status is OrderStatus.CANCELLED
    assert second.rig.venue.order_states()[resting.client_order_id].status is OrderStatus.CANCELLED
    await second.stop()


async def test_fills_the_journal_missed_are_applied_once_and_unsent_orders_marked(
    db_and_settings: tuple[Database, Settings],
) -> None:
    db, s = db_and_settings
    first = await open_session(s, db)
    await run(first, 2)
    first.rig.system.execution.on_target(TargetPosition("AAPL", 50, "entry"))
    await run(first, 1)
    assert first.rig.venue.positions() == {"AAPL": 50}
    # an order journaled that never reached the broker ...
    from core.model import Order

    lost = Order("TC-lost-0001", "MSFT", Side.BUY, 3, OrderType.MARKET, first.rig.clock.now())
    await first.recorder.write_orders([lost])
    # ... then killed before the recorder's batch with the fill (or the order) was written
    first.die()
    assert await db.fill_count() == 0
    assert await db.order("TC-lost-0001") is None  # only the journal file has it

    second = await open_session(s, db, start=first.rig.clock.now())
    system = second.rig.system
    assert system.recovery is not None
    assert system.recovery.executions_applied == 1
    assert system.recovery.orders_never_received == 1
    assert system.execution.orders["TC-lost-0001"].last_message == NEVER_RECEIVED
    assert system.portfolio.quantity("AAPL") == 50
    assert system.risk.state is TradingState.ACTIVE
    await run(second, 1)
    await second.recorder.flush()
    assert await db.fill_count() == 1  # the missed execution is now journaled, once
    await second.stop()


async def test_the_trading_day_follows_the_exchange_calendar(tmp_path: Path) -> None:
    s = settings(
        tmp_path, daily_loss_limit=300, max_position_size=50_000, max_order_notional=50_000
    )
    friday = datetime(2026, 1, 16, 15, 0, tzinfo=UTC)  # the session before MLK day
    rig = build_rig(s, start=friday)
    await rig.system.start(drive_broker=False)
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=2))
    rig.system.risk.enter_tripped("test trip")

    def tick_at(when: datetime) -> None:
        assert isinstance(rig.clock, SimClock)
        rig.clock.set(when)
        rig.system.on_timer()

    tick_at(datetime(2026, 1, 17, 5, 0, tzinfo=UTC))  # New York midnight: not a new day
    tick_at(datetime(2026, 1, 19, 14, 31, tzinfo=UTC))  # Monday, MLK day: exchange closed
    assert rig.system.risk.state is TradingState.TRIPPED
    assert not [e for e in rig.of(DailyPnlRecorded)]
    tick_at(datetime(2026, 1, 20, 14, 30, tzinfo=UTC))  # Tuesday's open: the next session
    assert rig.system.risk.state is TradingState.ACTIVE
    (closed,) = rig.of(DailyPnlRecorded)
    assert closed.day == "2026-01-16"
    assert rig.of(TradingStateChanged)[-1].reason == "new trading day"
    await rig.system.stop()


async def test_a_restart_the_next_trading_day_knows_yesterdays_orders_at_the_broker(
    db_and_settings: tuple[Database, Settings],
) -> None:
    # The broker's session (here: the sim venue's state file) still lists the orders of
    # the day before; the journal restores only today's, but it knows them all.
    db, s = db_and_settings
    first = await open_session(s, db)
    await run(first, 2)
    first.rig.system.execution.on_target(TargetPosition("AAPL", 20, "entry"))
    await run(first, 2)
    yesterday = set(first.rig.venue.order_states())
    assert yesterday
    await first.stop()

    second = await open_session(s, db, start=first.rig.clock.now() + timedelta(days=1))
    system = second.rig.system
    assert not yesterday & set(system.execution.orders)  # not restored: another day
    assert system.recovery is not None
    assert system.recovery.unknown_broker_orders == ()
    assert not [a for a in system.alerts.recent if a.key == "unknown_broker_order"]
    await second.stop()


async def test_an_order_at_the_broker_the_journal_never_saw_raises_an_alert(
    db_and_settings: tuple[Database, Settings],
) -> None:
    db, s = db_and_settings
    first = await open_session(s, db)
    await run(first, 1)
    from core.model import Order

    stray = Order("OTHER-0001", "MSFT", Side.BUY, 1, OrderType.MARKET, first.rig.clock.now())
    first.rig.venue.place_order(stray)  # sent by something else: never journaled
    await run(first, 1)
    await first.stop()

    second = await open_session(s, db, start=first.rig.clock.now() + timedelta(days=1))
    assert second.rig.system.recovery is not None
    assert second.rig.system.recovery.unknown_broker_orders == ("OTHER-0001",)
    alerts = [a for a in second.rig.system.alerts.recent if a.key == "unknown_broker_order"]
    assert [a.message for a in alerts] == [
        "Broker holds order OTHER-0001 that the journal does not know"
    ]
    await second.stop()
