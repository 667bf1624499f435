"""Stops, stop-limits, GTC, brackets and modifications: IbBroker with the real ib_async
client against the fake TWS over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from core.brokers.ib_order_fields import OCA_REDUCE_WITH_BLOCK
from core.clock import SimClock
from core.model import (
    Order,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from tests.fake_tws import FakeTws, wait_until
from tests.test_ib_broker import make_broker, running

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)  # Monday 09:30 New York
BUY, SELL = Side.BUY, Side.SELL
MKT, LMT, STP, STP_LMT = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT
DAY, GTC = TimeInForce.DAY, TimeInForce.GTC
# placeOrder fields (ib_async client.placeOrder, server version 178)
F_TYPE, F_LMT, F_AUX, F_TIF, F_OCA, F_REF, F_TRANSMIT, F_PARENT, F_OCA_TYPE = (
    18, 19, 20, 21, 22, 26, 27, 28, 46,
)  # fmt: skip


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


@pytest.fixture
async def tws(clock: SimClock) -> AsyncIterator[FakeTws]:
    server = FakeTws(now=clock.now)
    await server.start()
    yield server
    await server.stop()


def make_order(
    client_order_id: str,
    order_type: OrderType,
    side: Side = SELL,
    quantity: int = 100,
    *,
    stop: float | None = None,
    limit: float | None = None,
    tif: TimeInForce = DAY,
    parent: str | None = None,
    oca: str | None = None,
) -> Order:
    suffix = client_order_id.rsplit("-", 1)[-1]
    role = {"SL": OrderRole.STOP_LOSS, "TP": OrderRole.TAKE_PROFIT}.get(suffix, OrderRole.ENTRY)
    return Order(
        client_order_id=client_order_id,
        symbol="AAPL",
        side=side,
        quantity=quantity,
        order_type=order_type,
        created_at=T0,
        limit_price=limit,
        stop_price=stop,
        tif=tif,
        role=role,
        parent_id=parent,
        oca_group=oca,
    )


def bracket(n: int, *, take_profit: bool = True) -> tuple[Order, list[Order]]:
    """A BUY 100 LMT 185 entry (rests: the ask is 190.02), a GTC SELL STP 180 and a GTC
    SELL LMT 200 in one OCA group."""
    ref = f"TC-TEST-{n:04d}"
    oca = f"{ref}-OCA"
    parent = make_order(ref, LMT, BUY, limit=185.0)
    children = [make_order(f"{ref}-SL", STP, stop=180.0, tif=GTC, parent=ref, oca=oca)]
    if take_profit:
        children.append(make_order(f"{ref}-TP", LMT, limit=200.0, tif=GTC, parent=ref, oca=oca))
    return parent, children


def placed(tws: FakeTws, order_ref: str) -> list[list[str]]:
    """The placeOrder messages the fake received for ``order_ref`` (first: the placement)."""
    return [m for m in tws.requests(3) if m[F_REF] == order_ref]


# ------------------------------------------------------------------ order types


@pytest.mark.parametrize(
    ("order", "fields"),
    [
        (make_order("TC-TEST-0001", MKT, BUY), ("MKT", "", "", "DAY")),
        (make_order("TC-TEST-0002", LMT, BUY, limit=185.5), ("LMT", "185.5", "", "DAY")),
        (make_order("TC-TEST-0003", STP, stop=180.25, tif=GTC), ("STP", "", "180.25", "GTC")),
        (
            make_order("TC-TEST-0004", STP_LMT, stop=180.25, limit=180.0, tif=GTC),
            ("STP LMT", "180.0", "180.25", "GTC"),
        ),
    ],
    ids=["MKT", "LMT", "STP", "STP LMT"],
)
async def test_each_order_type_reaches_tws_with_its_fields(
    tws: FakeTws, clock: SimClock, order: Order, fields: tuple[str, str, str, str]
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.place_order(order)
        ref = order.client_order_id
        await wait_until(lambda: listener.statuses_of(ref))
        assert listener.statuses_of(ref)[0] is OrderStatus.SUBMITTED
        (message,) = placed(tws, ref)
        assert (message[F_TYPE], message[F_LMT], message[F_AUX], message[F_TIF]) == fields
        at_tws = tws.order(order_ref=ref)
        assert (at_tws.order_type, at_tws.limit_price, at_tws.aux_price, at_tws.tif) == (
            order.order_type.value,
            order.limit_price,
            order.stop_price,
            order.tif.value,
        )
        # What IB echoes back (openOrder) reads as the order again.
        state = broker.order_states()[ref]
        assert (state.order_type, state.stop_price, state.limit_price, state.tif) == (
            order.order_type,
            order.stop_price,
            order.limit_price,
            order.tif,
        )
        assert (state.side, state.quantity) == (order.side, 100)


async def test_stop_rests_until_the_last_price_reaches_it_then_fills(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.place_order(make_order("TC-TEST-0010-SL", STP, stop=185.0, tif=GTC))
        await wait_until(lambda: listener.statuses_of("TC-TEST-0010-SL"))
        stop = tws.order(order_ref="TC-TEST-0010-SL")
        assert stop.status == "PreSubmitted"  # waiting for its trigger...
        assert broker.order_states()["TC-TEST-0010-SL"].status is OrderStatus.SUBMITTED
        tws.push_tick("AAPL", bid=185.10, ask=185.12, last=185.11)  # ...not reached yet
        await asyncio.sleep(0.05)
        assert listener.fills == []
        tws.trade("AAPL", 184.50)  # through the stop: it fills at that print
        await wait_until(lambda: listener.fills)
        fill = listener.fills[0]
        assert (fill.client_order_id, fill.side, fill.quantity, fill.price) == (
            "TC-TEST-0010-SL",
            SELL,
            100,
            184.50,
        )
        await wait_until(lambda: broker.positions() == {"AAPL": -100})


async def test_stop_limit_triggers_then_works_as_a_limit(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        ref = "TC-TEST-0011-SL"
        broker.place_order(make_order(ref, STP_LMT, stop=185.0, limit=184.80, tif=GTC))
        await wait_until(lambda: listener.statuses_of(ref))
        tws.trade("AAPL", 184.50)  # triggers, but below the sell limit: no fill
        await wait_until(lambda: tws.order(order_ref=ref).status == "Submitted")
        await asyncio.sleep(0.05)
        assert listener.fills == []
        tws.trade("AAPL", 184.90)  # back above the limit: fills at the limit
        await wait_until(lambda: listener.fills)
        assert (listener.fills[0].quantity, listener.fills[0].price) == (100, 184.80)


# ------------------------------------------------------------------ brackets


async def test_bracket_goes_as_ib_expects_and_children_wait_for_the_parent(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(20)
        broker.place_bracket(parent, children)
        refs = [parent.client_order_id, *(c.client_order_id for c in children)]
        await wait_until(lambda: all(listener.statuses_of(r) for r in refs))
        (p_msg,) = placed(tws, refs[0])
        (sl_msg,) = placed(tws, refs[1])
        (tp_msg,) = placed(tws, refs[2])
        # The parent and the first child are held by TWS; the last child sends them all.
        assert [m[F_TRANSMIT] for m in (p_msg, sl_msg, tp_msg)] == ["0", "0", "1"]
        parent_id = p_msg[1]
        assert sl_msg[F_PARENT] == tp_msg[F_PARENT] == parent_id
        assert p_msg[F_PARENT] == "0"
        assert sl_msg[F_OCA] == tp_msg[F_OCA] == "TC-TEST-0020-OCA"
        assert sl_msg[F_OCA_TYPE] == tp_msg[F_OCA_TYPE] == str(OCA_REDUCE_WITH_BLOCK)
        assert (sl_msg[F_TIF], tp_msg[F_TIF]) == ("GTC", "GTC")
        # Children rest inactive until the parent fills; for us they are working.
        for ref in refs[1:]:
            at_tws = tws.order(order_ref=ref)
            assert (at_tws.status, at_tws.active) == ("PreSubmitted", False)
            assert listener.statuses_of(ref) == [OrderStatus.SUBMITTED]
        states = broker.order_states()
        assert states[refs[1]].order_type is STP and states[refs[1]].stop_price == 180.0
        assert states[refs[2]].order_type is LMT and states[refs[2]].limit_price == 200.0
        assert listener.fills == []


async def test_bracket_parent_fill_releases_both_children(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(21)
        broker.place_bracket(parent, children)
        await wait_until(lambda: listener.statuses_of("TC-TEST-0021-TP"))
        tws.fill(tws.order(order_ref="TC-TEST-0021").order_id, 100, 185.0)
        await wait_until(lambda: len(listener.fills) == 1)
        stop, take = tws.order(order_ref="TC-TEST-0021-SL"), tws.order(order_ref="TC-TEST-0021-TP")
        assert (stop.active, stop.status, stop.quantity) == (True, "PreSubmitted", 100)
        assert (take.active, take.status, take.quantity) == (True, "Submitted", 100)
        states = broker.order_states()
        assert states["TC-TEST-0021"].status is OrderStatus.FILLED
        for ref in ("TC-TEST-0021-SL", "TC-TEST-0021-TP"):
            assert (states[ref].status, states[ref].quantity) == (OrderStatus.SUBMITTED, 100)
            assert OrderStatus.CANCELLED not in listener.statuses_of(ref)


async def test_bracket_stop_trigger_cancels_the_take_profit(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(22)
        broker.place_bracket(parent, children)
        await wait_until(lambda: listener.statuses_of("TC-TEST-0022-TP"))
        tws.fill(tws.order(order_ref="TC-TEST-0022").order_id, 100, 185.0)
        await wait_until(lambda: len(listener.fills) == 1)
        tws.trade("AAPL", 179.50)
        await wait_until(lambda: OrderStatus.CANCELLED in listener.statuses_of("TC-TEST-0022-TP"))
        assert [(f.client_order_id, f.quantity, f.price) for f in listener.fills[1:]] == [
            ("TC-TEST-0022-SL", 100, 179.50)
        ]
        assert tws.order(order_ref="TC-TEST-0022-TP").status == "Cancelled"
        assert broker.order_states()["TC-TEST-0022-SL"].status is OrderStatus.FILLED
        await wait_until(lambda: broker.positions() == {})


async def test_partial_parent_fill_sizes_the_children_to_it(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(23)
        broker.place_bracket(parent, children)
        await wait_until(lambda: listener.statuses_of("TC-TEST-0023-TP"))
        parent_id = tws.order(order_ref="TC-TEST-0023").order_id
        tws.fill(parent_id, 40, 185.0)
        await wait_until(lambda: broker.order_states()["TC-TEST-0023-SL"].quantity == 40)
        states = broker.order_states()
        assert states["TC-TEST-0023"].status is OrderStatus.PARTIALLY_FILLED
        assert states["TC-TEST-0023-TP"].quantity == 40
        assert tws.order(order_ref="TC-TEST-0023-TP").active
        tws.fill(parent_id, 20, 185.0)  # the children follow each fill
        await wait_until(lambda: broker.order_states()["TC-TEST-0023-SL"].quantity == 60)
        assert broker.order_states()["TC-TEST-0023-TP"].quantity == 60
        # Each change of size is told as the sim venue tells it.
        for ref in ("TC-TEST-0023-SL", "TC-TEST-0023-TP"):
            told = [u.message for u in listener.statuses if u.client_order_id == ref]
            assert told[-2:] == ["bracket: working 40", "bracket: working 60"]


async def test_take_profit_partial_fill_reduces_the_stop_oca_type_2(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(24)
        broker.place_bracket(parent, children)
        await wait_until(lambda: listener.statuses_of("TC-TEST-0024-TP"))
        tws.fill(tws.order(order_ref="TC-TEST-0024").order_id, 100, 185.0)
        await wait_until(lambda: len(listener.fills) == 1)
        tws.fill(tws.order(order_ref="TC-TEST-0024-TP").order_id, 30, 200.0)
        # The stop is reduced by the 30 sold, not cancelled: the other 70 stay protected.
        await wait_until(lambda: broker.order_states()["TC-TEST-0024-SL"].quantity == 70)
        assert tws.order(order_ref="TC-TEST-0024-SL").status == "PreSubmitted"
        assert OrderStatus.CANCELLED not in listener.statuses_of("TC-TEST-0024-SL")
        await wait_until(lambda: listener.statuses[-1].message == "OCA: reduced to 70")
        assert listener.statuses[-1].client_order_id == "TC-TEST-0024-SL"
        assert listener.statuses[-1].status is OrderStatus.SUBMITTED


async def test_stop_child_filling_a_partial_parent_finishes_it_and_cancels_the_take_profit(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(25)
        broker.place_bracket(parent, children)
        await wait_until(lambda: listener.statuses_of("TC-TEST-0025-TP"))
        tws.fill(tws.order(order_ref="TC-TEST-0025").order_id, 40, 185.0)
        await wait_until(lambda: tws.order(order_ref="TC-TEST-0025-SL").active)
        broker.cancel_order("TC-TEST-0025")  # the rest of the entry is not wanted
        await wait_until(lambda: OrderStatus.CANCELLED in listener.statuses_of("TC-TEST-0025"))
        assert tws.order(order_ref="TC-TEST-0025-SL").is_open  # it protects the 40 bought
        tws.trade("AAPL", 179.0)
        # The stop worked the 40 IB released, not the 100 asked: the rest never works.
        await wait_until(lambda: OrderStatus.CANCELLED in listener.statuses_of("TC-TEST-0025-SL"))
        assert [f.quantity for f in listener.fills if f.client_order_id.endswith("-SL")] == [40]
        cancelled = [u for u in listener.statuses if u.client_order_id == "TC-TEST-0025-SL"][-1]
        assert "40 of 100" in cancelled.message
        await wait_until(lambda: OrderStatus.CANCELLED in listener.statuses_of("TC-TEST-0025-TP"))


async def test_cancelling_an_unfilled_parent_cancels_its_children(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(26)
        broker.place_bracket(parent, children)
        await wait_until(lambda: listener.statuses_of("TC-TEST-0026-TP"))
        broker.cancel_order("TC-TEST-0026")
        refs = ("TC-TEST-0026", "TC-TEST-0026-SL", "TC-TEST-0026-TP")
        await wait_until(
            lambda: all(OrderStatus.CANCELLED in listener.statuses_of(r) for r in refs)
        )
        assert all(tws.order(order_ref=r).status == "Cancelled" for r in refs)


async def test_bracket_without_a_stop_price_is_refused_whole(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(27)
        children[0].stop_price = None
        broker.place_bracket(parent, children)
        refs = ("TC-TEST-0027", "TC-TEST-0027-SL", "TC-TEST-0027-TP")
        await wait_until(lambda: all(listener.statuses_of(r) for r in refs))
        for ref in refs:
            assert listener.statuses_of(ref) == [OrderStatus.REJECTED]
        assert "without a stop price" in listener.statuses[-1].message
        assert tws.requests(3) == []


# ------------------------------------------------------------------ modification


async def test_modify_stop_quantity_and_price_lands_on_the_same_order_id(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        stop = make_order("TC-TEST-0030-SL", STP, stop=185.0, tif=GTC)
        broker.place_order(stop)
        await wait_until(lambda: listener.statuses_of(stop.client_order_id))
        order_id = tws.order(order_ref=stop.client_order_id).order_id
        stop.quantity, stop.stop_price = 60, 186.5
        broker.modify_order(stop)
        await wait_until(lambda: any(u.message == "modified" for u in listener.statuses))
        assert [int(m[1]) for m in tws.requests(3)] == [order_id, order_id]
        assert [oid for oid, _ in tws.modifications] == [order_id]
        at_tws = tws.order(order_id)
        assert (at_tws.quantity, at_tws.aux_price, at_tws.tif) == (60, 186.5, "GTC")
        assert len(tws.orders) == 1
        await asyncio.sleep(0.05)
        modified = [u for u in listener.statuses if u.message == "modified"]
        assert len(modified) == 1 and modified[0].status is OrderStatus.SUBMITTED
        assert modified[0].client_order_id == stop.client_order_id
        state = broker.order_states()[stop.client_order_id]
        assert (state.quantity, state.stop_price) == (60, 186.5)
        tws.trade("AAPL", 186.40)  # the moved stop triggers where the old one would not
        await wait_until(lambda: listener.fills)
        assert (listener.fills[0].quantity, listener.fills[0].price) == (60, 186.40)


async def test_modify_limit_price_of_a_working_limit(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        take = make_order("TC-TEST-0031-TP", LMT, limit=200.0, tif=GTC)
        broker.place_order(take)
        await wait_until(lambda: listener.statuses_of(take.client_order_id))
        take.limit_price = 199.5
        broker.modify_order(take)
        await wait_until(lambda: any(u.message == "modified" for u in listener.statuses))
        assert tws.order(order_ref=take.client_order_id).limit_price == 199.5
        assert broker.order_states()[take.client_order_id].limit_price == 199.5


async def test_refused_modification_is_an_error_and_the_order_keeps_working(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        stop = make_order("TC-TEST-0032-SL", STP, stop=185.0, tif=GTC)
        broker.place_order(stop)
        await wait_until(lambda: listener.statuses_of(stop.client_order_id))
        tws.reject_next_modify(201, "Order rejected - reason:price too far from the market")
        stop.stop_price = 150.0
        broker.modify_order(stop)
        await wait_until(lambda: listener.errors)
        code, message, ref = listener.errors[-1]
        assert (code, ref) == (201, stop.client_order_id)
        assert "price too far" in message
        await asyncio.sleep(0.05)
        assert listener.statuses_of(stop.client_order_id) == [OrderStatus.SUBMITTED]
        state = broker.order_states()[stop.client_order_id]
        assert (state.status, state.stop_price) == (OrderStatus.SUBMITTED, 185.0)
        # Still ours to change: the next modification goes through.
        stop.stop_price = 186.0
        broker.modify_order(stop)
        await wait_until(lambda: any(u.message == "modified" for u in listener.statuses))
        assert tws.order(order_ref=stop.client_order_id).aux_price == 186.0


async def test_modifying_a_child_after_its_parent_filled_drops_the_parent_id(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        parent, children = bracket(33)
        broker.place_bracket(parent, children)
        await wait_until(lambda: listener.statuses_of("TC-TEST-0033-TP"))
        tws.fill(tws.order(order_ref="TC-TEST-0033").order_id, 100, 185.0)
        await wait_until(lambda: listener.fills)
        stop = children[0]
        stop.stop_price = 182.0
        broker.modify_order(stop)
        await wait_until(lambda: any(u.message == "modified" for u in listener.statuses))
        (_, fields), *_ = tws.modifications
        assert fields[F_PARENT] == "0"  # IB answers 135 for a parent it no longer works
        assert fields[F_OCA] == "TC-TEST-0033-OCA"  # and refuses an OCA group revision
        assert tws.order(order_ref="TC-TEST-0033-SL").aux_price == 182.0
        assert not [e for e in listener.errors if e[2] == "TC-TEST-0033-SL"]


async def test_modify_of_a_filled_order_is_refused_locally(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        entry = make_order("TC-TEST-0034", MKT, BUY)
        broker.place_order(entry)
        await wait_until(lambda: listener.fills)
        entry.quantity = 50
        broker.modify_order(entry)
        await wait_until(lambda: listener.errors)
        assert listener.errors[-1][0] == 104 and listener.errors[-1][2] == "TC-TEST-0034"
        assert tws.modifications == []


async def test_unanswered_modification_holds_the_next_only_for_a_while(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        stop = make_order("TC-TEST-0036-SL", STP, stop=185.0, tif=GTC)
        broker.place_order(stop)
        await wait_until(lambda: listener.statuses_of(stop.client_order_id))
        tws.swallow_next_order()  # the modification is lost on the way
        stop.quantity = 60
        broker.modify_order(stop)
        await wait_until(lambda: len(tws.requests(3)) == 2)
        stop.quantity = 50
        broker.modify_order(stop)  # too soon: the first may still be answered
        await wait_until(lambda: listener.errors)
        assert listener.errors[-1][0] == 2102 and listener.errors[-1][2] == stop.client_order_id
        clock.advance(4.0)  # no answer within MODIFY_ANSWER_SECONDS: taken as lost
        tws.reject_next_modify(201, "Order rejected - reason:try later")
        broker.modify_order(stop)  # sent; refused: the order is what IB has, the lost 60 too
        await wait_until(lambda: listener.errors[-1][0] == 201)
        assert broker.order_states()[stop.client_order_id].quantity == 100
        broker.modify_order(stop)
        await wait_until(lambda: any(u.message == "modified" for u in listener.statuses))
        assert tws.order(order_ref=stop.client_order_id).quantity == 50
        assert broker.order_states()[stop.client_order_id].quantity == 50


@pytest.mark.parametrize("outage", ["socket drop", "1100"])
async def test_modify_while_disconnected_is_refused_then_works_after_reconnect(
    tws: FakeTws, clock: SimClock, outage: str
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        stop = make_order("TC-TEST-0035-SL", STP, stop=185.0, tif=GTC)
        broker.place_order(stop)
        await wait_until(lambda: listener.statuses_of(stop.client_order_id))
        if outage == "1100":  # TWS lost IB's servers; our socket to TWS stays up
            tws.send_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
        else:
            tws.drop_connections()
        await wait_until(lambda: not broker.connected)
        stop.quantity = 70
        broker.modify_order(stop)  # no exception: refused through the listener
        await wait_until(lambda: listener.errors)
        code, message, ref = listener.errors[-1]
        assert (code, ref) == (504, stop.client_order_id)
        assert "not connected" in message
        await asyncio.sleep(0.05)
        assert tws.modifications == []  # nothing went to TWS
        if outage == "1100":
            tws.send_error(1102, "Connectivity between IB and TWS has been restored.")
        else:
            clock.advance(1.0)
        await wait_until(lambda: broker.connected)
        broker.modify_order(stop)  # the core sends it again after reconnecting
        await wait_until(lambda: any(u.message == "modified" for u in listener.statuses))
        assert tws.order(order_ref=stop.client_order_id).quantity == 70


# ------------------------------------------------------------------ across sessions


async def test_gtc_stop_of_an_earlier_session_is_reported_to_a_new_one(
    tws: FakeTws, clock: SimClock
) -> None:
    first, first_listener = make_broker(tws.port, clock)
    async with running(first):
        first.place_order(make_order("TC-TEST-0040-SL", STP, stop=185.0, tif=GTC))
        first.place_order(make_order("TC-TEST-0041", LMT, BUY, limit=150.0))  # DAY
        await wait_until(lambda: len(first_listener.statuses) == 2)
    # The console is gone; a new trading day starts: the DAY order expires, the GTC stop
    # rests at IB. Then a new console (a new IbBroker, same client id) connects.
    tws.new_day()
    placements = len(tws.requests(3))
    second, listener = make_broker(tws.port, clock)
    async with running(second):
        states = second.order_states()
        stop = states["TC-TEST-0040-SL"]
        assert (stop.order_type, stop.stop_price, stop.tif) == (STP, 185.0, GTC)
        assert (stop.side, stop.quantity, stop.status) == (SELL, 100, OrderStatus.SUBMITTED)
        assert stop.broker_order_id is not None
        assert stop.broker_order_id.startswith(
            f"{tws.order(order_ref='TC-TEST-0040-SL').order_id}/"
        )
        assert states.get("TC-TEST-0041") is None or not states["TC-TEST-0041"].status.is_working
        assert len(tws.requests(3)) == placements  # adopted, never placed again
        # The adopted stop is this session's to change, and its fill comes through.
        adopted = make_order("TC-TEST-0040-SL", STP, quantity=80, stop=184.0, tif=GTC)
        second.modify_order(adopted)
        await wait_until(lambda: any(u.message == "modified" for u in listener.statuses))
        tws.trade("AAPL", 183.9)
        await wait_until(lambda: listener.fills)
        assert (listener.fills[0].client_order_id, listener.fills[0].quantity) == (
            "TC-TEST-0040-SL",
            80,
        )


async def test_adopted_stop_partly_filled_in_an_earlier_session_finishes_with_todays_fill(
    tws: FakeTws, clock: SimClock
) -> None:
    first, first_listener = make_broker(tws.port, clock)
    async with running(first):
        first.place_order(make_order("TC-TEST-0042-SL", STP, stop=185.0, tif=GTC))
        await wait_until(lambda: first_listener.statuses)
        tws.fill(tws.order(order_ref="TC-TEST-0042-SL").order_id, 30, 184.0)
        await wait_until(lambda: first_listener.fills)
    tws.new_day()  # yesterday's execution is no longer reported
    second, listener = make_broker(tws.port, clock)
    async with running(second):
        state = second.order_states()["TC-TEST-0042-SL"]
        assert (state.quantity, state.filled_quantity) == (100, 30)
        assert state.status is OrderStatus.PARTIALLY_FILLED
        tws.trade("AAPL", 183.0)
        await wait_until(lambda: listener.fills)
        assert [f.quantity for f in listener.fills] == [70]
        await wait_until(
            lambda: second.order_states()["TC-TEST-0042-SL"].status is OrderStatus.FILLED
        )
        await asyncio.sleep(0.05)
        # Done for the adapter too (30 then + 70 now): nothing more is reported or sent.
        assert OrderStatus.CANCELLED not in listener.statuses_of("TC-TEST-0042-SL")
        second.cancel_order("TC-TEST-0042-SL")
        assert listener.errors[-1][0] == 10147
        await asyncio.sleep(0.05)
        assert tws.requests(4) == []


async def test_unfilled_day_parent_expiring_takes_its_gtc_children_along(
    tws: FakeTws, clock: SimClock
) -> None:
    first, first_listener = make_broker(tws.port, clock)
    async with running(first):
        parent, children = bracket(43)
        first.place_bracket(parent, children)
        await wait_until(lambda: first_listener.statuses_of("TC-TEST-0043-TP"))
    tws.new_day()
    second, _ = make_broker(tws.port, clock)
    async with running(second):
        states = second.order_states()
        for ref in ("TC-TEST-0043", "TC-TEST-0043-SL", "TC-TEST-0043-TP"):
            assert ref not in states or not states[ref].status.is_working
        assert all(not o.is_open for o in tws.orders)


async def test_inactive_order_is_rejected_and_cancelled_for_safety(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        stop = make_order("TC-TEST-0050-SL", STP, stop=185.0, tif=GTC)
        broker.place_order(stop)
        await wait_until(lambda: listener.statuses_of(stop.client_order_id))
        order_id = tws.order(order_ref=stop.client_order_id).order_id
        tws.deactivate(order_id)
        await wait_until(lambda: OrderStatus.REJECTED in listener.statuses_of(stop.client_order_id))
        await wait_until(lambda: [m for m in tws.requests(4) if int(m[2]) == order_id])
        await asyncio.sleep(0.05)
        assert listener.errors == []  # IB's answer to that cancel (161) is no news
        assert not broker.order_states()[stop.client_order_id].status.is_working
