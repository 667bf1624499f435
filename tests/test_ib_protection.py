"""Protective stops and exits across IB outages: a real TradingSystem on the IbBroker, the
real ib_async client against the fake TWS over loopback. The fake's own books (its
orders and positions) are the evidence."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.brokers.ib import IbBroker, IbConfig
from core.bus import EventBus
from core.clock import SimClock
from core.execution import QUEUED_DISCONNECTED
from core.model import OrderStatus, TargetPosition
from core.system import TradingSystem
from tests.fake_tws import FakeOrder, FakeTws, wait_until
from tests.helpers import settings as make_settings
from tests.test_ib_system import T0, IbRig, _fields


@contextlib.asynccontextmanager
async def protected_rig(tmp_path: Path) -> AsyncIterator[IbRig]:
    clock = SimClock(T0)
    tws = await FakeTws(now=clock.now).start()
    s = make_settings(
        tmp_path,
        trading_mode="paper",
        symbols="AAPL,MSFT",
        ib_port=tws.port,
        ib_connect_timeout=2,
        strategy_params='{"fast": 50, "slow": 100}',  # no signals in these short runs
        protective_stop_pct=2.0,
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


def working_stops(tws: FakeTws, symbol: str) -> list[FakeOrder]:
    return [
        o for o in tws.orders if o.symbol == symbol and o.order_ref.endswith("-SL") and o.working
    ]


def position(tws: FakeTws, symbol: str) -> float:
    """The fake TWS's own position in ``symbol`` (all accounts)."""
    return sum(qty for (_, sym), (qty, _) in tws.positions.items() if sym == symbol)


async def open_position(rig: IbRig, quantity: int) -> None:
    rig.system.execution.on_target(TargetPosition("AAPL", quantity, "entry"))
    await wait_until(lambda: position(rig.tws, "AAPL") == quantity)
    await wait_until(lambda: len(working_stops(rig.tws, "AAPL")) == 1)


@pytest.mark.parametrize("outage", ["socket drop", "1100"])
async def test_an_exit_made_during_an_outage_is_sent_once_after_reconnect(
    tmp_path: Path, outage: str
) -> None:
    async with protected_rig(tmp_path) as rig:
        await open_position(rig, 100)
        (stop,) = working_stops(rig.tws, "AAPL")
        if outage == "1100":
            rig.tws.send_error(
                1100, "Connectivity between IB and Trader Workstation has been lost."
            )
        else:
            await rig.tws.close_listener()
            rig.tws.drop_connections()
        await wait_until(lambda: not rig.broker.connected)
        rig.system.execution.on_target(TargetPosition("AAPL", 40, "exit during the outage"))
        queued = [o for o in rig.system.snapshot().orders if o.queued]
        assert [(o.quantity, o.message) for o in queued] == [(60, QUEUED_DISCONNECTED)]
        placed_before = len(rig.tws.orders)
        if outage == "1100":
            rig.tws.send_error(1102, "Connectivity between IB and TWS has been restored.")
        else:
            await rig.tws.reopen()
            rig.clock.advance(1.0)
        await wait_until(lambda: rig.broker.connected)
        await wait_until(lambda: position(rig.tws, "AAPL") == 40)
        # One exit for 60, and the stop resized in place to the 40 left.
        new_orders = rig.tws.orders[placed_before:]
        exits = [o for o in new_orders if o.action == "SELL" and not o.order_ref.endswith("-SL")]
        assert [o.quantity for o in exits] == [60]
        assert working_stops(rig.tws, "AAPL") == [stop]
        await wait_until(lambda: stop.quantity == 40)
        assert rig.system.portfolio.quantity("AAPL") == 40


async def test_flatten_during_a_drop_closes_the_position_after_reconnect(tmp_path: Path) -> None:
    async with protected_rig(tmp_path) as rig:
        await open_position(rig, 100)
        await rig.tws.close_listener()
        rig.tws.drop_connections()
        await wait_until(lambda: not rig.broker.connected)
        result = rig.system.flatten("operator f during the drop")
        assert result.ok
        await rig.tws.reopen()
        rig.clock.advance(1.0)
        await wait_until(lambda: rig.broker.connected)
        await wait_until(lambda: position(rig.tws, "AAPL") == 0)
        await wait_until(lambda: working_stops(rig.tws, "AAPL") == [])
        sells = [o for o in rig.tws.orders if o.action == "SELL" and o.order_type == "MKT"]
        assert len(sells) == 1  # sent once


async def test_a_refused_stop_resize_is_sent_again(tmp_path: Path) -> None:
    async with protected_rig(tmp_path) as rig:
        await open_position(rig, 100)
        (stop,) = working_stops(rig.tws, "AAPL")
        rig.tws.reject_next_modify(201, "Order rejected - reason: test")
        rig.system.execution.on_target(TargetPosition("AAPL", 120, "add"))
        await wait_until(lambda: position(rig.tws, "AAPL") == 120)
        # The first resize was refused; the stop ends up covering the whole position.
        await wait_until(lambda: stop.quantity == 120)
        assert working_stops(rig.tws, "AAPL") == [stop]
        core_stop = rig.system.execution.protection.stops["AAPL"]
        assert core_stop.status is OrderStatus.SUBMITTED
