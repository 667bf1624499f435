"""A real TradingSystem on the IbBroker, with the real ib_async client against the fake TWS."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.brokers.ib import IbBroker, IbConfig
from core.bus import EventBus
from core.clock import SimClock
from core.events import (
    AlertRaised,
    BrokerConnectionChanged,
    FeedSwitched,
    FillReceived,
    OrderRejected,
    PositionMismatch,
)
from core.model import (
    AlertSeverity,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
    TradingState,
)
from core.system import TradingSystem
from tests.fake_tws import FakeTws, wait_until
from tests.helpers import settings as make_settings

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


@dataclass
class IbRig:
    system: TradingSystem
    broker: IbBroker
    tws: FakeTws
    clock: SimClock
    events: list[object] = field(default_factory=list)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@contextlib.asynccontextmanager
async def ib_rig(tmp_path: Path, **overrides: Any) -> AsyncIterator[IbRig]:
    """A started system on the fake TWS; ``overrides`` are more settings."""
    clock = SimClock(T0)
    tws = await FakeTws(now=clock.now).start()
    s = make_settings(
        tmp_path,
        trading_mode="paper",
        symbols="AAPL,MSFT",
        ib_port=tws.port,
        ib_connect_timeout=2,
        strategy_params='{"fast": 50, "slow": 100}',  # no signals in these short runs
        **overrides,
    )
    config = IbConfig.from_settings(s)
    broker = IbBroker(
        IbConfig(**{**_fields(config), "supervise_seconds": 0.005, "jitter_seed": 1}), clock
    )
    bus = EventBus()
    rig = IbRig(TradingSystem(s, broker, clock, bus=bus), broker, tws, clock)
    bus.subscribe_all(rig.events.append)
    try:
        await rig.system.start()
        await wait_until(lambda: all(rig.system.feed.latest(sym) for sym in ("AAPL", "MSFT")))
        yield rig
    finally:
        await rig.system.stop("test over")
        await tws.stop()


def _fields(config: IbConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in IbConfig.__dataclass_fields__}


def limit_buy(qty: int = 100, price: float = 185.0) -> OrderIntent:
    return OrderIntent("AAPL", Side.BUY, qty, OrderType.LIMIT, price, reason="test")


async def test_quotes_flow_into_the_core_as_stream(tmp_path: Path) -> None:
    async with ib_rig(tmp_path) as rig:
        rig.tws.push_tick("AAPL", bid=190.10, ask=190.14)
        await wait_until(lambda: rig.system.feed.latest("AAPL").bid == 190.10)  # type: ignore[union-attr]
        latest = rig.system.feed.latest("AAPL")
        assert latest is not None and latest.source == "stream"
        assert rig.system.snapshot().connected


async def test_stall_switch_is_an_event_and_an_alert(tmp_path: Path) -> None:
    async with ib_rig(tmp_path) as rig:
        rig.tws.stall("AAPL")
        rig.tws.push_tick("MSFT", bid=410.0, ask=410.1)
        rig.clock.advance(rig.system.settings.stale_after_seconds + 1)
        rig.tws.push_tick("MSFT", bid=410.01, ask=410.11)
        await wait_until(lambda: rig.of(FeedSwitched))
        switched = rig.of(FeedSwitched)[0]
        assert (switched.symbol, switched.source) == ("AAPL", "poll")
        assert any(isinstance(e, AlertRaised) and e.alert.key == "feed:AAPL" for e in rig.events)


async def test_fill_while_disconnected_is_applied_exactly_once(tmp_path: Path) -> None:
    async with ib_rig(tmp_path) as rig:
        placed = rig.system.execution.on_intent(limit_buy())
        assert placed is not None
        await wait_until(lambda: placed.status is OrderStatus.SUBMITTED)
        ib_id = rig.tws.order(order_ref=placed.client_order_id).order_id
        await rig.tws.close_listener()
        rig.tws.drop_connections()
        await wait_until(lambda: not rig.broker.connected)
        down = rig.of(BrokerConnectionChanged)[-1]
        assert down.connected is False
        assert rig.system.snapshot().connected is False
        # No new risk while disconnected.
        assert (
            rig.system.execution.on_intent(
                OrderIntent("MSFT", Side.BUY, 10, OrderType.LIMIT, 405.0)
            )
            is None
        )
        rig.tws.book_execution_while_disconnected(ib_id, 100, 185.0)
        await rig.tws.reopen()
        rig.clock.advance(1.0)
        await wait_until(lambda: rig.broker.connected)
        await wait_until(lambda: placed.status is OrderStatus.FILLED)
        assert len(rig.of(FillReceived)) == 1
        assert rig.system.portfolio.quantity("AAPL") == 100
        assert rig.system.risk.state is TradingState.ACTIVE  # books agree: no halt
        assert rig.of(BrokerConnectionChanged)[-1].connected is True
        # Another reconnect replays the day's executions; the core applies none twice.
        rig.tws.drop_connections()
        await wait_until(lambda: not rig.broker.connected)
        rig.clock.advance(1.0)
        await wait_until(lambda: rig.broker.connected)
        assert len(rig.of(FillReceived)) == 1
        assert rig.system.portfolio.quantity("AAPL") == 100


async def test_position_mismatch_halts_and_alerts(tmp_path: Path) -> None:
    async with ib_rig(tmp_path) as rig:
        assert rig.system.risk.state is TradingState.ACTIVE
        rig.tws.set_position("AAPL", 50)  # a trade made outside the console
        await wait_until(lambda: rig.broker.positions() == {"AAPL": 50})
        rig.clock.advance(rig.system.settings.reconcile_seconds)
        rig.system.on_timer()  # the periodic reconciliation
        mismatches = rig.of(PositionMismatch)
        assert [(m.symbol, m.internal_quantity, m.broker_quantity) for m in mismatches] == [
            ("AAPL", 0, 50)
        ]
        assert rig.system.risk.state is TradingState.HALTED
        alerts = [e.alert for e in rig.of(AlertRaised)]
        assert any(
            a.key == "position_mismatch:AAPL" and a.severity is AlertSeverity.CRITICAL
            for a in alerts
        )
        rows = {r.symbol: r for r in rig.system.snapshot().positions}
        assert rows["AAPL"].broker_quantity == 50 and not rows["AAPL"].reconciled


async def test_broker_reject_reaches_the_order_with_code(tmp_path: Path) -> None:
    async with ib_rig(tmp_path) as rig:
        rig.tws.reject_next_order(201, "Order rejected - reason:margin requirement")
        placed = rig.system.execution.on_intent(limit_buy(10))
        assert placed is not None
        await wait_until(lambda: placed.status is OrderStatus.REJECTED)
        rejected = rig.of(OrderRejected)
        assert rejected and rejected[0].error_code == 201
        assert "margin" in rejected[0].reason


@pytest.mark.parametrize("mode", ["live"])
async def test_live_mode_against_paper_account_refuses_to_start(tmp_path: Path, mode: str) -> None:
    from core.brokers.base import BrokerConnectError

    clock = SimClock(T0)
    tws = await FakeTws().start()
    try:
        s = make_settings(tmp_path, trading_mode=mode, ib_port=tws.port, ib_connect_timeout=2)
        broker = IbBroker(IbConfig.from_settings(s), clock)
        system = TradingSystem(s, broker, clock)
        with pytest.raises(BrokerConnectError, match="paper account"):
            await system.start()
    finally:
        await tws.stop()
