"""Stops, stop-limits, GTC, brackets, OCA groups and modifications at the simulated venue.

Driven like tests/test_sim_venue.py: a real SimVenue (or ReplayVenue) on a SimClock
with a recording listener; prices are moved by hand (``set_mid`` with no volatility)
so each test knows where the book is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.backtest import bar_quotes
from core.brokers.replay import ReplayVenue
from core.brokers.sim import SimVenue, SimVenueConfig
from core.brokers.sim_book import (
    ERR_MODIFY_FAILED,
    ERR_MODIFY_FILLED,
    ERR_MODIFY_NOT_FOUND,
    ERR_ORDER_REJECTED,
)
from core.clock import SimClock
from core.data_files import BarRecord
from core.model import (
    BrokerOrderState,
    Order,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from tests.test_sim_venue import RecordingListener, make_venue, step

BUY, SELL = Side.BUY, Side.SELL
MKT, LMT, STP, STP_LMT = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT
SUBMITTED, FILLED, CANCELLED = OrderStatus.SUBMITTED, OrderStatus.FILLED, OrderStatus.CANCELLED
PARTIAL = OrderStatus.PARTIALLY_FILLED
T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def order(
    coid: str,
    side: Side,
    quantity: int,
    kind: OrderType = MKT,
    *,
    stop: float | None = None,
    limit: float | None = None,
    tif: TimeInForce = TimeInForce.DAY,
    parent: str | None = None,
    oca: str | None = None,
    symbol: str = "AAPL",
) -> Order:
    return Order(
        client_order_id=coid,
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=kind,
        created_at=T0,
        limit_price=limit,
        stop_price=stop,
        tif=tif,
        parent_id=parent,
        oca_group=oca,
    )


async def calm_venue(price: float = 100.0, **overrides: Any) -> tuple[SimVenue, SimClock, Any]:
    """A venue whose AAPL stays at ``price`` until a test moves it."""
    venue, clock, listener = await make_venue(volatility_bp=0.0, **overrides)
    venue.set_mid("AAPL", price)
    step(venue, clock, 1.0)
    return venue, clock, listener


def move(venue: SimVenue, clock: SimClock, price: float) -> None:
    """Set AAPL's price and publish quotes at it (one AAPL quote per 0.25 s)."""
    venue.set_mid("AAPL", price)
    step(venue, clock, 0.5)


def fills_of(listener: RecordingListener, coid: str) -> list[tuple[int, float]]:
    return [(f.quantity, f.price) for f in listener.fills if f.client_order_id == coid]


def messages_of(listener: RecordingListener, coid: str) -> list[tuple[OrderStatus, str]]:
    return [(u.status, u.message) for u in listener.statuses if u.client_order_id == coid]


# -- stops ----------------------------------------------------------------------------------


async def test_buy_stop_rests_until_the_price_reaches_it_then_fills_like_a_market_order() -> None:
    venue, clock, listener = await calm_venue(100.0)
    venue.place_order(order("bs", BUY, 100, STP, stop=101.0))
    venue.process_orders()
    move(venue, clock, 100.9)
    assert listener.statuses_of("bs") == [SUBMITTED] and listener.fills == []
    move(venue, clock, 101.0)  # the mid at the stop: triggered (at or above, for a buy)
    (fill,) = listener.fills
    assert fill.price == listener.quote_before(fill).ask  # a market order's price
    assert fill.quantity == 100
    assert listener.statuses_of("bs") == [SUBMITTED, FILLED]
    state = venue.order_states()["bs"]
    assert (state.order_type, state.stop_price, state.status) == (STP, 101.0, FILLED)
    assert venue.book("AAPL").stops == []  # type: ignore[union-attr]


async def test_sell_stop_triggers_at_or_below_and_a_gap_fills_at_the_market() -> None:
    venue, clock, listener = await calm_venue(100.0)
    venue.place_order(order("ss", SELL, 100, STP, stop=99.0))
    venue.place_order(order("gap", SELL, 100, STP, stop=99.0, symbol="MSFT"))
    venue.set_mid("MSFT", 100.0)
    venue.process_orders()
    move(venue, clock, 99.01)
    assert listener.fills == []
    move(venue, clock, 98.5)
    (fill,) = listener.fills
    assert fill.client_order_id == "ss" and fill.price == listener.quote_before(fill).bid
    # The price jumps through the stop: the venue has no bar to fill at the stop inside
    # of; a triggered stop is a market order and takes the book's bid.
    venue.set_mid("MSFT", 95.0)
    step(venue, clock, 0.5)
    gap = listener.fills[-1]
    assert gap.client_order_id == "gap" and gap.price == pytest.approx(95.0, abs=0.05)
    assert gap.price < 99.0
    assert venue.positions() == {"AAPL": -100, "MSFT": -100}


async def test_a_stop_already_reached_on_arrival_triggers_on_arrival() -> None:
    venue, _clock, listener = await calm_venue(100.0)
    venue.place_order(order("now", SELL, 100, STP, stop=100.5))
    venue.place_order(order("later", SELL, 100, STP, stop=99.5))
    venue.process_orders()  # no quote in between: triggered against the book it reaches
    assert [f.client_order_id for f in listener.fills] == ["now"]
    assert listener.fills[0].price == listener.last_quote("AAPL").bid
    assert listener.statuses_of("later") == [SUBMITTED]


async def test_stop_limit_works_as_a_limit_once_triggered() -> None:
    venue, clock, listener = await calm_venue(100.0)
    venue.place_order(order("sl", BUY, 100, STP_LMT, stop=101.0, limit=101.2))
    venue.process_orders()
    move(venue, clock, 102.0)  # triggered, but the ask is beyond the limit: it rests
    assert listener.fills == [] and listener.statuses_of("sl") == [SUBMITTED]
    move(venue, clock, 100.5)  # below the stop again, but triggered: a limit at 101.2
    (fill,) = listener.fills
    assert fill.price == listener.quote_before(fill).ask and fill.price <= 101.2
    state = venue.order_states()["sl"]
    assert (state.order_type, state.stop_price, state.limit_price) == (STP_LMT, 101.0, 101.2)


async def test_stops_need_a_stop_price_and_stop_limits_a_limit() -> None:
    venue, _clock, listener = await calm_venue(100.0)
    venue.place_order(order("no-stop", SELL, 100, STP))
    venue.place_order(order("no-limit", SELL, 100, STP_LMT, stop=99.0))
    venue.process_orders()
    rejected = {u.client_order_id: u.message for u in listener.statuses}
    assert "stop order needs a positive stop price" in rejected["no-stop"]
    assert "stop-limit order needs a positive limit price" in rejected["no-limit"]


async def test_replayed_stops_trigger_on_the_last_trade_not_the_mid() -> None:
    clock = SimClock(T0)
    venue = ReplayVenue(SimVenueConfig(("AAPL",), latency_ms=0.0), clock)
    listener = RecordingListener()
    venue.set_listener(listener)
    await venue.connect()
    venue.subscribe_quotes(["AAPL"])
    venue.publish(Quote("AAPL", T0, 99.9, 100.1, 500, 500, 100.0))
    venue.place_order(order("bs", BUY, 100, STP, stop=100.5))
    venue.deliver_due()
    clock.set(T0 + timedelta(seconds=1))
    venue.publish(Quote("AAPL", clock.now(), 100.5, 100.7, 500, 500, 100.2))  # mid 100.6
    assert listener.fills == []  # the last trade (100.2) has not reached 100.5
    clock.set(T0 + timedelta(seconds=2))
    venue.publish(Quote("AAPL", clock.now(), 100.0, 100.2, 500, 500, 100.6))  # mid 100.1
    assert fills_of(listener, "bs") == [(100, 100.2)]  # triggered by the last, at the ask


# -- time in force and the state file -------------------------------------------------------


async def test_resting_gtc_stops_and_brackets_survive_a_restart_from_the_state_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "venue.jsonl"
    venue, clock, _listener = await calm_venue(100.0, state_file=state, latency_ms=0.0)
    venue.place_order(order("buy", BUY, 100))
    venue.place_order(order("prot-SL", SELL, 100, STP, stop=88.0, tif=TimeInForce.GTC))
    venue.place_bracket(
        order("P2", BUY, 50, LMT, limit=90.0),
        [
            order("P2-SL", SELL, 50, STP, stop=85.0, tif=TimeInForce.GTC, parent="P2", oca="B2"),
            order("P2-TP", SELL, 50, LMT, limit=99.0, tif=TimeInForce.GTC, parent="P2", oca="B2"),
        ],
    )
    venue.process_orders()
    step(venue, clock, 1.0)
    before = venue.order_states()
    venue.close()
    assert before["prot-SL"] == BrokerOrderState(
        "prot-SL", "AAPL", SELL, 100, 0, SUBMITTED, "1002", STP, 88.0, None, TimeInForce.GTC
    )

    # The console is killed and restarts against the same venue state.
    clock2 = SimClock(clock.now())
    again = SimVenue(venue.config, clock2)
    assert again.order_states() == before
    listener2 = RecordingListener()
    again.set_listener(listener2)
    await again.connect()
    again.subscribe_quotes(["AAPL"])
    # The bracket children are still held: the TP's limit is crossed, nothing fills.
    again.set_mid("AAPL", 100.0)
    step(again, clock2, 1.0)
    assert listener2.fills == []
    # The parent fills; its children are released; the GTC stops trigger on the drop.
    again.set_mid("AAPL", 89.0)
    step(again, clock2, 0.5)
    assert fills_of(listener2, "P2") and not fills_of(listener2, "P2-SL")
    again.set_mid("AAPL", 84.0)
    step(again, clock2, 0.5)
    assert sum(q for q, _ in fills_of(listener2, "prot-SL")) == 100
    assert sum(q for q, _ in fills_of(listener2, "P2-SL")) == 50
    assert listener2.statuses_of("P2-TP")[-1] is CANCELLED
    assert again.positions() == {}
    after = again.order_states()
    again.close()
    # And a third start reads back what the second one did.
    third = SimVenue(venue.config, SimClock(clock2.now()))
    assert third.order_states() == after
    assert third.positions() == {}
    third.close()


def test_a_state_file_from_before_stops_loads_with_the_defaults(tmp_path: Path) -> None:
    state = tmp_path / "old.jsonl"
    lines = [
        {"t": "order", "id": "L1", "symbol": "AAPL", "side": "BUY", "qty": 10, "type": "LMT",
         "limit": 90.0},
        {"t": "status", "id": "L1", "status": "Submitted", "broker_id": "1001"},
        {"t": "order", "id": "M1", "symbol": "AAPL", "side": "SELL", "qty": 5, "type": "MKT",
         "limit": None},
        {"t": "status", "id": "M1", "status": "Submitted", "broker_id": "1002"},
        {"t": "fill", "exec_id": "SIM-00000001", "id": "M1", "symbol": "AAPL", "side": "SELL",
         "qty": 5, "price": 100.0, "commission": 1.0, "ts": T0.isoformat(), "mid": 100.0},
    ]  # fmt: skip
    state.write_text("".join(json.dumps(line) + "\n" for line in lines))
    venue = SimVenue(SimVenueConfig(("AAPL",), state_file=state), SimClock(T0))
    assert venue.order_states() == {
        "L1": BrokerOrderState("L1", "AAPL", BUY, 10, 0, SUBMITTED, "1001", LMT, None, 90.0),
        "M1": BrokerOrderState("M1", "AAPL", SELL, 5, 5, FILLED, "1002", MKT, None, None),
    }
    assert venue.order_states()["L1"].tif is TimeInForce.DAY
    assert venue.positions() == {"AAPL": -5}
    venue.close()


async def test_finished_orders_of_every_type_read_back_exactly() -> None:
    venue, _clock, _listener = await calm_venue(100.0)
    venue.place_order(order("a", SELL, 10, STP, stop=100.5, tif=TimeInForce.GTC))
    venue.place_order(order("b", BUY, 10, STP_LMT, stop=99.0, limit=99.25))
    venue.place_order(order("c", BUY, 10, LMT, limit=90.0, tif=TimeInForce.GTC))
    venue.process_orders()
    working = venue.order_states()
    for coid in ("b", "c"):
        venue.cancel_order(coid)
    venue.process_orders()
    finished = venue.order_states()  # "a" filled on arrival; "b", "c" cancelled: packed rows
    assert finished["a"] == BrokerOrderState(
        "a", "AAPL", SELL, 10, 10, FILLED, "1001", STP, 100.5, None, TimeInForce.GTC
    )
    for coid in ("b", "c"):
        assert finished[coid] == BrokerOrderState(**{**_fields(working[coid]), "status": CANCELLED})


def _fields(state: BrokerOrderState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in state.__dataclass_fields__}


# -- brackets -------------------------------------------------------------------------------


def bracket(
    quantity: int, price: float = 100.0, kind: OrderType = MKT, limit: float | None = None
) -> tuple[Order, list[Order]]:
    """A buy of ``quantity`` with a stop-loss 5% below ``price`` and a take-profit 5% above."""
    parent = order("P", BUY, quantity, kind, limit=limit)
    gtc = TimeInForce.GTC
    children = [
        order("P-SL", SELL, quantity, STP, stop=price * 0.95, tif=gtc, parent="P", oca="P"),
        order("P-TP", SELL, quantity, LMT, limit=price * 1.05, tif=gtc, parent="P", oca="P"),
    ]
    return parent, children


def working_sizes(listener: RecordingListener, coid: str) -> list[int]:
    """The sizes a bracket child was said to work for ("bracket: working N"), in order."""
    prefix = "bracket: working "
    return [int(m[len(prefix) :]) for _, m in messages_of(listener, coid) if m.startswith(prefix)]


async def test_bracket_parent_fills_then_both_children_work_and_the_stop_cancels_the_tp() -> None:
    venue, clock, listener = await calm_venue(100.0)
    venue.place_bracket(*bracket(100))
    venue.process_orders()
    assert fills_of(listener, "P") and sum(q for q, _ in fills_of(listener, "P")) == 100
    states = venue.order_states()
    for child in ("P-SL", "P-TP"):
        assert (states[child].status, states[child].quantity) == (SUBMITTED, 100)
        # It reached the venue after the parent had filled: it works from its acknowledgement.
        assert messages_of(listener, child) == [(SUBMITTED, "bracket: working 100")]
    move(venue, clock, 100.0)
    assert venue.positions() == {"AAPL": 100}  # nothing has triggered
    move(venue, clock, 94.0)
    assert sum(q for q, _ in fills_of(listener, "P-SL")) == 100
    status, message = messages_of(listener, "P-TP")[-1]
    assert status is CANCELLED and message.startswith("OCA: cancelled, P-SL filled 100")
    assert venue.positions() == {}
    move(venue, clock, 110.0)  # the take-profit is gone: nothing sells again
    assert venue.positions() == {}


async def test_bracket_children_are_held_until_the_parent_fills() -> None:
    venue, clock, listener = await calm_venue(100.0)
    venue.place_bracket(*bracket(100, 100.0, LMT, limit=98.0))
    venue.process_orders()
    for child in ("P-SL", "P-TP"):
        assert messages_of(listener, child) == [(SUBMITTED, "bracket: held until P fills")]
    move(venue, clock, 106.0)  # beyond the take-profit: a working TP would sell here
    assert listener.fills == []
    venue.set_mid("AAPL", 97.0)
    step(venue, clock, 0.25)  # one quote: the parent fills; now the children work
    assert sum(q for q, _ in fills_of(listener, "P")) == 100
    assert messages_of(listener, "P-TP")[-1] == (SUBMITTED, "bracket: working 100")
    assert listener.fills[-1].client_order_id == "P"
    move(venue, clock, 106.0)
    assert sum(q for q, _ in fills_of(listener, "P-TP")) == 100
    assert listener.statuses_of("P-SL")[-1] is CANCELLED
    assert venue.positions() == {}


async def test_bracket_children_follow_partial_fills_of_the_parent() -> None:
    venue, clock, listener = await calm_venue(20.0)  # 3000 shares: more than one quote's size
    venue.place_bracket(*bracket(3000, 20.0))
    filled = 0
    for _ in range(40):
        step(venue, clock, 0.25)
        filled = sum(q for q, _ in fills_of(listener, "P"))
        if filled:
            states = venue.order_states()
            assert states["P-SL"].quantity == filled == states["P-TP"].quantity
            assert working_sizes(listener, "P-SL")[-1] == filled
        if filled == 3000:
            break
    parent_fills = [q for q, _ in fills_of(listener, "P")]
    assert len(parent_fills) >= 3 and filled == 3000
    # Each parent fill was followed by the children's new size, in that order.
    cumulative = [sum(parent_fills[: i + 1]) for i in range(len(parent_fills))]
    assert working_sizes(listener, "P-TP") == cumulative == working_sizes(listener, "P-SL")
    assert listener.fills[-1].client_order_id == "P"  # the children have not traded


async def test_a_parent_cancelled_after_a_partial_fill_leaves_children_for_what_filled() -> None:
    venue, clock, listener = await calm_venue(20.0)
    venue.place_bracket(*bracket(3000, 20.0))
    venue.process_orders()  # fills the displayed ask at once, then waits for more
    ((first, _),) = fills_of(listener, "P")
    assert first < 3000
    venue.cancel_order("P")
    venue.process_orders()
    assert listener.statuses_of("P")[-1] is CANCELLED
    states = venue.order_states()
    assert states["P-SL"].quantity == first == states["P-TP"].quantity
    assert states["P-SL"].status is SUBMITTED and states["P-TP"].status is SUBMITTED
    venue.set_mid("AAPL", 18.0)  # through the stop-loss at 19
    for _ in range(8):
        step(venue, clock, 0.25)
    assert sum(q for q, _ in fills_of(listener, "P-SL")) == first
    assert listener.statuses_of("P-TP")[-1] is CANCELLED
    assert venue.positions() == {}


async def test_a_parent_cancelled_or_rejected_with_nothing_filled_cancels_its_children() -> None:
    venue, clock, listener = await calm_venue(100.0)
    venue.place_bracket(*bracket(100, 100.0, LMT, limit=90.0))
    venue.process_orders()
    venue.cancel_order("P")
    venue.process_orders()
    for child in ("P-SL", "P-TP"):
        assert messages_of(listener, child)[-1] == (
            CANCELLED,
            "cancelled: parent P cancelled with nothing filled",
        )
    # Rejected (no limit price): its children never work either.
    parent = order("R", BUY, 100, LMT)
    child = order("R-SL", SELL, 100, STP, stop=95.0, parent="R")
    venue.place_bracket(parent, [child])
    venue.process_orders()
    assert listener.statuses_of("R") == [OrderStatus.REJECTED]
    assert messages_of(listener, "R-SL")[-1] == (
        CANCELLED,
        "cancelled: parent R rejected with nothing filled",
    )
    move(venue, clock, 80.0)
    assert listener.fills == []


async def test_a_child_naming_a_parent_that_is_not_working_is_refused() -> None:
    venue, _clock, listener = await calm_venue(100.0)
    venue.place_order(order("X-SL", SELL, 100, STP, stop=95.0, parent="X"))
    venue.process_orders()
    (update,) = listener.statuses
    assert update.status is OrderStatus.REJECTED and update.error_code == ERR_ORDER_REJECTED
    assert "parent order X is not working" in update.message
    with pytest.raises(ValueError, match="names parent"):
        venue.place_bracket(order("Y", BUY, 1), [order("Y-SL", SELL, 1, STP, stop=9.0)])
    assert "Y" not in venue.order_states()


# -- OCA groups -----------------------------------------------------------------------------


async def test_an_oca_fill_reduces_the_other_members_and_cancels_one_left_with_nothing() -> None:
    venue, clock, listener = await calm_venue(20.0)
    venue.place_order(order("B", SELL, 1500, LMT, limit=30.0, oca="G"))  # far away
    venue.place_order(order("C", SELL, 2500, LMT, limit=30.0, oca="G"))
    venue.process_orders()
    venue.place_order(order("A", SELL, 1500, LMT, limit=19.0, oca="G"))  # marketable
    venue.process_orders()
    for _ in range(20):
        step(venue, clock, 0.25)
    a_fills = [q for q, _ in fills_of(listener, "A")]
    assert len(a_fills) >= 2 and sum(a_fills) == 1500
    cumulative = [sum(a_fills[: i + 1]) for i in range(len(a_fills))]
    assert [m for _, m in messages_of(listener, "C")[1:]] == [
        f"OCA: reduced to {2500 - done}" for done in cumulative
    ]
    assert [m for _, m in messages_of(listener, "B")[1:-1]] == [
        f"OCA: reduced to {1500 - done}" for done in cumulative[:-1]
    ]
    status, message = messages_of(listener, "B")[-1]
    assert status is CANCELLED and message == f"OCA: cancelled, A filled {a_fills[-1]} in G"
    states = venue.order_states()
    assert (states["C"].quantity, states["C"].status) == (1000, SUBMITTED)
    assert states["B"].status is CANCELLED


# -- modifications --------------------------------------------------------------------------


async def test_modify_changes_quantity_and_prices_through_the_latency_queue(tmp_path: Path) -> None:
    state = tmp_path / "venue.jsonl"
    venue, clock, listener = await calm_venue(100.0, latency_ms=250.0, state_file=state)
    venue.place_order(order("L", BUY, 100, LMT, limit=90.0))
    venue.place_order(order("S", SELL, 100, STP, stop=95.0, tif=TimeInForce.GTC))
    venue.modify_order(order("L", BUY, 200, LMT, limit=95.0))  # right behind its place
    venue.modify_order(order("S", SELL, 100, STP, stop=98.0, tif=TimeInForce.GTC))
    step(venue, clock, 0.2)
    assert listener.statuses == []  # still on their way
    step(venue, clock, 0.05)
    assert messages_of(listener, "L") == [(SUBMITTED, ""), (SUBMITTED, "modified")]
    states = venue.order_states()
    assert (states["L"].quantity, states["L"].limit_price) == (200, 95.0)
    assert states["S"].stop_price == 98.0
    venue.close()
    # Persisted: a restarted venue has the modified orders.
    again = SimVenue(venue.config, SimClock(clock.now()))
    assert again.order_states() == states
    again.close()
    move(venue, clock, 97.5)  # would not reach the old stop (95), reaches the new one
    assert sum(q for q, _ in fills_of(listener, "S")) == 100
    assert fills_of(listener, "L") == []  # ask 97.5x is above the new limit
    move(venue, clock, 94.0)
    assert sum(q for q, _ in fills_of(listener, "L")) == 200


async def test_modify_a_stop_to_where_the_price_is_triggers_it() -> None:
    venue, _clock, listener = await calm_venue(100.0)
    venue.place_order(order("S", SELL, 100, STP, stop=95.0))
    venue.process_orders()
    venue.modify_order(order("S", SELL, 100, STP, stop=100.5))
    venue.process_orders()
    assert fills_of(listener, "S") == [(100, listener.last_quote("AAPL").bid)]


async def test_modify_refusals_name_the_reason_with_ibs_codes() -> None:
    venue, _clock, listener = await calm_venue(100.0)
    venue.place_order(order("F", BUY, 100))
    venue.place_order(order("C", BUY, 100, LMT, limit=90.0))
    venue.place_order(order("W", BUY, 100, LMT, limit=90.0))
    venue.process_orders()
    venue.cancel_order("C")
    venue.process_orders()
    venue.modify_order(order("F", BUY, 50))
    venue.modify_order(order("C", BUY, 50, LMT, limit=91.0))
    venue.modify_order(order("ghost", BUY, 50))
    venue.modify_order(order("W", BUY, 100, LMT, limit=-1.0))
    venue.process_orders()
    codes = {coid: code for code, _, coid in listener.errors}
    assert codes == {
        "F": ERR_MODIFY_FILLED,
        "C": ERR_MODIFY_FAILED,
        "ghost": ERR_MODIFY_NOT_FOUND,
        "W": ERR_MODIFY_FAILED,
    }
    messages = {coid: message for _, message, coid in listener.errors}
    assert "Can't modify a filled order" in messages["F"]
    assert "Cancelled" in messages["C"] and "Can't find order" in messages["ghost"]
    assert venue.order_states()["W"].limit_price == 90.0  # works as it was


async def test_modify_never_takes_the_quantity_below_what_has_filled() -> None:
    venue, clock, listener = await calm_venue(20.0)
    venue.place_order(order("big", BUY, 3000))
    venue.process_orders()
    ((done, _),) = fills_of(listener, "big")
    venue.modify_order(order("big", BUY, 1))
    venue.process_orders()
    state = venue.order_states()["big"]
    assert (state.quantity, state.filled_quantity, state.status) == (done, done, FILLED)
    assert messages_of(listener, "big")[-1][0] is FILLED
    step(venue, clock, 2.0)
    assert len(fills_of(listener, "big")) == 1


# -- bars: the backtest's stop rule ---------------------------------------------------------


class BarDriver:
    """A ReplayVenue in bar mode, fed bars the way core.backtest does (bar_quotes)."""

    def __init__(self, venue: ReplayVenue, clock: SimClock, listener: RecordingListener) -> None:
        self.venue, self.clock, self.listener = venue, clock, listener
        self.minute = 0

    @classmethod
    async def start(cls, *, match_on_arrival: bool = False) -> BarDriver:
        clock = SimClock(T0)
        config = SimVenueConfig(("AAPL",), latency_ms=0.0, commission_min=0.0)
        venue = ReplayVenue(config, clock, match_on_arrival=match_on_arrival, bar_seconds=60)
        listener = RecordingListener()
        venue.set_listener(listener)
        await venue.connect()
        venue.subscribe_quotes(["AAPL"])
        return cls(venue, clock, listener)

    def bar(self, o: float, h: float, low: float, c: float, spread_bps: float = 1.0) -> None:
        start = T0 + timedelta(minutes=self.minute)
        self.minute += 1
        for quote in bar_quotes(BarRecord("AAPL", start, o, h, low, c, 0.0), 60, spread_bps):
            self.clock.set(quote.ts)
            self.venue.publish(quote)
            self.venue.deliver_due()
        self.clock.set(start + timedelta(seconds=60))  # the bar's end: decisions are sent here
        self.venue.deliver_due()

    def send(self, o: Order) -> None:
        self.venue.place_order(o)
        self.venue.deliver_due()


async def test_backtest_stop_inside_a_bars_range_fills_at_the_stop_price() -> None:
    run = await BarDriver.start()
    run.bar(100.0, 100.5, 99.5, 100.0)
    run.send(order("buy", BUY, 100))
    run.bar(100.0, 101.0, 99.0, 100.5)  # the buy fills at this bar's open (its ask)
    run.send(order("sl", SELL, 100, STP, stop=98.0))
    run.send(order("bs", BUY, 100, STP, stop=104.0))
    run.bar(100.0, 100.8, 97.2, 99.0)  # down bar: high, then low 97.2 through the 98 stop
    assert fills_of(run.listener, "sl") == [(100, 98.0)]  # the stop price, no spread
    run.bar(99.0, 104.5, 98.9, 104.0)
    assert fills_of(run.listener, "bs") == [(100, 104.0)]


async def test_backtest_stop_a_bar_gapped_through_fills_at_the_bars_open() -> None:
    run = await BarDriver.start()
    run.bar(100.0, 100.5, 99.5, 100.0)
    run.send(order("sl", SELL, 100, STP, stop=98.0))
    run.send(order("bs", BUY, 100, STP, stop=103.0))
    run.bar(99.5, 99.9, 99.0, 99.2)  # nothing reached
    assert run.listener.fills == []
    run.bar(96.0, 97.0, 95.0, 96.5)  # opened below the sell stop: gapped through it
    assert fills_of(run.listener, "sl") == [(100, pytest.approx(96.0))]
    run.bar(105.0, 106.0, 104.0, 105.5)  # opened above the buy stop
    assert fills_of(run.listener, "bs") == [(100, pytest.approx(105.0))]


async def test_backtest_stop_limit_gapped_beyond_its_limit_rests_as_a_limit() -> None:
    run = await BarDriver.start()
    run.bar(100.0, 100.5, 99.5, 100.0, spread_bps=0.0)
    run.send(order("sl", SELL, 100, STP_LMT, stop=98.0, limit=97.0))
    run.bar(96.0, 96.5, 95.0, 96.2, spread_bps=0.0)  # gapped below the limit too
    assert run.listener.fills == []
    run.bar(96.5, 97.5, 96.4, 97.4, spread_bps=0.0)  # back up through 97: the limit trades
    assert fills_of(run.listener, "sl") == [(100, 97.5)]  # the high's bid, above the limit
    # The same for a buy: gapped above the stop and the limit, then back down to the limit.
    run.send(order("bl", BUY, 100, STP_LMT, stop=99.0, limit=100.0))
    run.bar(101.0, 101.5, 100.5, 101.2, spread_bps=0.0)
    assert fills_of(run.listener, "bl") == []
    run.bar(100.6, 100.7, 99.8, 99.9, spread_bps=0.0)  # a down bar: high, then low 99.8
    assert fills_of(run.listener, "bl") == [(100, 99.8)]


async def test_backtest_bracket_children_follow_the_bars_too() -> None:
    run = await BarDriver.start()
    run.bar(100.0, 100.5, 99.5, 100.0, spread_bps=0.0)
    run.venue.place_bracket(
        order("P", BUY, 100),
        [
            order("P-SL", SELL, 100, STP, stop=97.0, parent="P", oca="P"),
            order("P-TP", SELL, 100, LMT, limit=103.0, parent="P", oca="P"),
        ],
    )
    run.venue.deliver_due()
    run.bar(100.0, 101.0, 98.0, 100.5, spread_bps=0.0)  # entry at the open; SL not reached
    assert fills_of(run.listener, "P") == [(100, 100.0)] and fills_of(run.listener, "P-SL") == []
    run.bar(100.5, 100.6, 96.0, 96.5, spread_bps=0.0)
    assert fills_of(run.listener, "P-SL") == [(100, 97.0)]
    assert run.listener.statuses_of("P-TP")[-1] is CANCELLED
    assert run.venue.positions() == {}
