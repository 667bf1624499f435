"""Protective stops and exits across IB outages: a real TradingSystem on the IbBroker, the
real ib_async client against the fake TWS over loopback. The fake's own books (its
orders and positions) are the evidence."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from core.execution import QUEUED_DISCONNECTED
from core.model import OrderStatus, TargetPosition
from tests.fake_tws import FakeOrder, FakeTws, wait_until
from tests.test_ib_system import IbRig, ib_rig


def protected_rig(tmp_path: Path) -> contextlib.AbstractAsyncContextManager[IbRig]:
    return ib_rig(tmp_path, protective_stop_pct=2.0)


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
