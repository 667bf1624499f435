"""The simulated venue against a SimClock and a recording listener (its real peer)."""

from __future__ import annotations

import asyncio
import itertools
import math
from datetime import timedelta
from typing import Any

import pytest

from core.brokers.base import Broker
from core.brokers.sim import (
    ERR_CANCEL_NOT_CANCELLABLE,
    ERR_CANCEL_NOT_FOUND,
    ERR_NO_SECURITY_DEFINITION,
    ERR_NOT_CONNECTED,
    ERR_ORDER_REJECTED,
    MAX_CATCHUP_SECONDS,
    SimVenue,
    SimVenueConfig,
)
from core.clock import SimClock
from core.model import (
    Fill,
    Order,
    OrderStatus,
    OrderStatusUpdate,
    OrderType,
    Quote,
    QuoteSource,
    Side,
)

SYMBOLS = ("AAPL", "MSFT")


class RecordingListener:
    """Captures every broker callback, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.quotes: list[Quote] = []
        self.statuses: list[OrderStatusUpdate] = []
        self.fills: list[Fill] = []
        self.errors: list[tuple[int, str, str | None]] = []
        self.connections: list[tuple[bool, str]] = []

    def on_quote(self, quote: Quote) -> None:
        self.quotes.append(quote)
        self.events.append(("quote", quote))

    def on_order_status(self, update: OrderStatusUpdate) -> None:
        self.statuses.append(update)
        self.events.append(("status", update))

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.events.append(("fill", fill))

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        self.errors.append((code, message, client_order_id))
        self.events.append(("error", (code, message, client_order_id)))

    def on_connection_changed(self, connected: bool, message: str) -> None:
        self.connections.append((connected, message))
        self.events.append(("connection", connected))

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        self.events.append(("feed", (symbol, source, reason)))

    def statuses_of(self, client_order_id: str) -> list[OrderStatus]:
        return [u.status for u in self.statuses if u.client_order_id == client_order_id]

    def last_quote(self, symbol: str) -> Quote:
        return next(q for q in reversed(self.quotes) if q.symbol == symbol)

    def quote_before(self, fill: Fill) -> Quote:
        """The last quote of the fill's symbol published before the fill."""
        position = self.events.index(("fill", fill))
        return next(
            q
            for kind, q in reversed(self.events[:position])
            if kind == "quote" and q.symbol == fill.symbol
        )


async def make_venue(
    subscribe: tuple[str, ...] = SYMBOLS, **overrides: Any
) -> tuple[SimVenue, SimClock, RecordingListener]:
    config = SimVenueConfig(symbols=overrides.pop("symbols", SYMBOLS), **overrides)
    clock = SimClock()
    venue = SimVenue(config, clock)
    listener = RecordingListener()
    venue.set_listener(listener)
    await venue.connect()
    venue.subscribe_quotes(subscribe)
    return venue, clock, listener


def step(venue: SimVenue, clock: SimClock, seconds: float) -> int:
    clock.advance(seconds)
    return venue.advance_to(clock.now())


def make_order(
    clock: SimClock,
    coid: str,
    side: Side,
    quantity: int,
    symbol: str = "AAPL",
    order_type: OrderType = OrderType.MARKET,
    limit_price: float | None = None,
) -> Order:
    return Order(
        client_order_id=coid,
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=order_type,
        created_at=clock.now(),
        limit_price=limit_price,
    )


def expected_commission(quantity: int, price: float) -> float:
    return min(max(quantity * 0.005, 1.0), 0.01 * quantity * price)


def run_until_done(
    venue: SimVenue, clock: SimClock, listener: RecordingListener, coid: str
) -> None:
    for _ in range(400):
        step(venue, clock, 0.25)
        if listener.statuses_of(coid) and listener.statuses_of(coid)[-1].is_terminal:
            return
    raise AssertionError(f"order {coid} never finished: {listener.statuses_of(coid)}")


# -- quotes -------------------------------------------------------------------


async def test_same_seed_gives_same_quotes_and_other_seed_differs() -> None:
    runs = []
    for seed in (7, 7, 8):
        venue, clock, listener = await make_venue(seed=seed)
        step(venue, clock, 5.0)
        runs.append(listener.quotes)
    assert len(runs[0]) == 40
    assert runs[0] == runs[1]
    assert [(q.bid, q.ask) for q in runs[0]] != [(q.bid, q.ask) for q in runs[2]]


async def test_quote_cadence_interleaves_symbols_at_configured_rate() -> None:
    venue, clock, listener = await make_venue()
    assert step(venue, clock, 10.0) == 80
    per_symbol = {s: [q for q in listener.quotes if q.symbol == s] for s in SYMBOLS}
    assert {s: len(qs) for s, qs in per_symbol.items()} == {"AAPL": 40, "MSFT": 40}
    for quotes in per_symbol.values():
        gaps = {(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(quotes)}
        assert gaps == {0.25}
    # Staggered: the two streams alternate rather than arriving in pairs.
    assert [q.symbol for q in listener.quotes[:4]] == ["AAPL", "MSFT", "AAPL", "MSFT"]
    assert all(a.ts < b.ts for a, b in itertools.pairwise(listener.quotes))
    assert listener.quotes[-1].ts == clock.now()
    # Advancing in small steps yields the same stream as one big step.
    venue2, clock2, listener2 = await make_venue()
    for _ in range(100):
        step(venue2, clock2, 0.1)
    assert listener2.quotes == listener.quotes


async def test_quotes_are_well_formed() -> None:
    venue, clock, listener = await make_venue()
    step(venue, clock, 20.0)
    for q in listener.quotes:
        assert 0 < q.bid < q.ask
        assert q.source is QuoteSource.SIM
        assert q.bid_size % 100 == 0 and 100 <= q.bid_size <= 1000
        assert q.ask_size % 100 == 0 and 100 <= q.ask_size <= 1000
        assert q.spread / q.mid < 0.002  # a few basis points, at least a cent
    for s in SYMBOLS:
        assert 20 * 0.9 < venue.mid(s) < 500 * 1.1


async def test_true_mid_is_the_mid_of_the_venues_own_quote() -> None:
    venue, clock, listener = await make_venue()
    step(venue, clock, 3.0)
    for s in SYMBOLS:
        quote = listener.last_quote(s)
        assert venue.mid(s) == quote.mid  # same float, so marks agree with quote-based books
    venue.set_mid("AAPL", 100.0)
    assert venue.mid("AAPL") == 100.0
    venue.set_mid("AAPL", 76.4514)  # prices live on the cent grid; the mid on half-cents
    assert venue.mid("AAPL") == pytest.approx(76.45)
    venue.shock("AAPL", -10.0)
    assert venue.mid("AAPL") == pytest.approx(68.805)
    step(venue, clock, 0.5)
    assert abs(venue.mid("AAPL") / 68.805 - 1) < 0.005  # the walk continues from the shock
    assert venue.mid("AAPL") == listener.last_quote("AAPL").mid


async def test_unknown_and_unsubscribed_symbols_get_no_quotes() -> None:
    venue, clock, listener = await make_venue(subscribe=("AAPL", "NOPE"))
    assert listener.errors == [
        (
            ERR_NO_SECURITY_DEFINITION,
            "No security definition has been found for the request: NOPE",
            None,
        )
    ]
    assert venue.subscribed == frozenset({"AAPL"})
    msft_before = venue.mid("MSFT")
    step(venue, clock, 5.0)
    assert {q.symbol for q in listener.quotes} == {"AAPL"}
    assert len(listener.quotes) == 20
    assert venue.mid("MSFT") == msft_before


async def test_long_pause_does_not_burst_quotes() -> None:
    venue, clock, listener = await make_venue()
    generated = step(venue, clock, 3600.0)
    assert generated == int(MAX_CATCHUP_SECONDS * 4 * len(SYMBOLS))
    assert listener.quotes[0].ts >= clock.now() - timedelta(seconds=MAX_CATCHUP_SECONDS)
    assert step(venue, clock, 1.0) == 8


async def test_disconnected_venue_publishes_nothing_and_rejects_orders() -> None:
    venue, clock, listener = await make_venue()
    await venue.disconnect()
    assert not venue.connected
    assert listener.connections[-1][0] is False
    assert step(venue, clock, 5.0) == 0
    venue.place_order(make_order(clock, "c1", Side.BUY, 10))
    step(venue, clock, 0.1)
    assert listener.statuses[-1].status is OrderStatus.REJECTED
    assert listener.statuses[-1].error_code == ERR_NOT_CONNECTED
    await venue.connect()
    # Reconnecting does not replay the quotes missed while disconnected.
    assert step(venue, clock, 1.0) == 8
    assert listener.connections == [
        (True, listener.connections[0][1]),
        (False, listener.connections[1][1]),
        (True, listener.connections[2][1]),
    ]


async def test_missing_listener_is_a_clear_error() -> None:
    clock = SimClock()
    venue = SimVenue(SimVenueConfig(symbols=SYMBOLS), clock)
    with pytest.raises(RuntimeError, match="set_listener"):
        await venue.connect()
    venue.place_order(make_order(clock, "c1", Side.BUY, 10))
    with pytest.raises(RuntimeError, match="no listener"):
        venue.process_orders()


async def test_run_drives_the_venue_from_the_clock_and_cancels_cleanly() -> None:
    venue, clock, listener = await make_venue()
    task = asyncio.create_task(venue.run())
    clock.advance(2.0)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(listener.quotes) >= 16:
            break
    assert len(listener.quotes) == 16
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


# -- orders -------------------------------------------------------------------


async def test_market_buy_fills_at_ask_with_minimum_commission() -> None:
    venue, clock, listener = await make_venue()
    step(venue, clock, 1.0)
    order = make_order(clock, "c1", Side.BUY, 100)
    venue.place_order(order)
    assert listener.statuses == []  # fire-and-track: nothing synchronous
    quote = listener.last_quote("AAPL")
    venue.process_orders()
    assert [e[0] for e in listener.events[-3:]] == ["status", "fill", "status"]
    submitted, filled = listener.statuses
    assert submitted.status is OrderStatus.SUBMITTED and submitted.broker_order_id == "1001"
    assert filled.status is OrderStatus.FILLED and filled.broker_order_id == "1001"
    (fill,) = listener.fills
    assert fill.price == quote.ask
    assert fill.quantity == 100 and fill.side is Side.BUY and fill.symbol == "AAPL"
    assert fill.commission == 1.0  # 100 * 0.005 = 0.50 lifts to the $1 minimum
    assert fill.exec_id == "SIM-00000001"
    assert venue.fills == [fill]
    # The caller's Order is the engine's to manage; the venue keeps its own copy.
    assert order.status is OrderStatus.PENDING_SUBMIT and order.filled_quantity == 0


async def test_market_sell_fills_at_bid() -> None:
    venue, clock, listener = await make_venue()
    step(venue, clock, 1.0)
    venue.place_order(make_order(clock, "s1", Side.SELL, 100, symbol="MSFT"))
    step(venue, clock, 0.0)
    (fill,) = listener.fills
    assert fill.price == listener.last_quote("MSFT").bid
    assert venue.positions() == {"MSFT": -100}


@pytest.mark.parametrize(
    ("quantity", "price", "expected"),
    [
        (100, 50.0, 1.0),  # minimum
        (1000, 50.0, 5.0),  # per share
        (1, 20.0, 0.2),  # 1% of a $20 fill caps the $1 minimum
        (1000, 0.3, 3.0),  # 1% of $300 caps $5 per-share
    ],
)
def test_commission_formula(quantity: int, price: float, expected: float) -> None:
    venue = SimVenue(SimVenueConfig(symbols=SYMBOLS), SimClock())
    assert venue.commission(quantity, price) == pytest.approx(expected)


async def test_commission_cap_applies_to_real_fills() -> None:
    venue, clock, listener = await make_venue()
    venue.set_mid("AAPL", 20.0)
    venue.place_order(make_order(clock, "c1", Side.BUY, 1))
    step(venue, clock, 0.0)
    (fill,) = listener.fills
    assert fill.commission == pytest.approx(0.01 * fill.price)
    assert fill.commission < 1.0


async def test_partial_fills_take_displayed_size_until_filled() -> None:
    venue, clock, listener = await make_venue()
    venue.set_mid("AAPL", 20.0)
    step(venue, clock, 1.0)
    venue.place_order(make_order(clock, "big", Side.BUY, 3000))
    run_until_done(venue, clock, listener, "big")

    fills = [f for f in listener.fills if f.client_order_id == "big"]
    assert len(fills) >= 3  # sizes are at most 1000
    assert sum(f.quantity for f in fills) == 3000
    statuses = listener.statuses_of("big")
    assert statuses[0] is OrderStatus.SUBMITTED
    assert statuses[1:] == [OrderStatus.PARTIALLY_FILLED] * (len(fills) - 1) + [OrderStatus.FILLED]
    # Each fill takes min(remaining, displayed ask size) of the quote it trades on.
    remaining = 3000
    last_quote: Quote | None = None
    for kind, payload in listener.events:
        if kind == "quote" and payload.symbol == "AAPL":
            last_quote = payload
        elif kind == "fill":
            assert last_quote is not None
            assert payload.price == last_quote.ask
            assert payload.quantity == min(remaining, last_quote.ask_size)
            remaining -= payload.quantity
    assert remaining == 0
    assert venue.positions() == {"AAPL": 3000}
    assert len({f.exec_id for f in venue.fills}) == len(venue.fills)


async def test_displayed_size_is_consumed_until_the_next_quote() -> None:
    venue, clock, listener = await make_venue()
    venue.set_mid("AAPL", 20.0)
    step(venue, clock, 1.0)
    quote = listener.last_quote("AAPL")
    venue.place_order(make_order(clock, "first", Side.BUY, quote.ask_size))
    venue.place_order(make_order(clock, "second", Side.BUY, 100))
    venue.process_orders()
    assert listener.statuses_of("first")[-1] is OrderStatus.FILLED
    assert listener.statuses_of("second") == [OrderStatus.SUBMITTED]
    step(venue, clock, 0.25)  # exactly one more AAPL quote
    (second_fill,) = [f for f in listener.fills if f.client_order_id == "second"]
    assert second_fill.price == listener.last_quote("AAPL").ask
    assert second_fill.ts == listener.last_quote("AAPL").ts


async def test_limit_orders_fill_only_when_crossed() -> None:
    venue, clock, listener = await make_venue(volatility_bp=0.0)
    venue.set_mid("AAPL", 100.0)
    step(venue, clock, 1.0)
    venue.place_order(
        make_order(clock, "lb", Side.BUY, 100, order_type=OrderType.LIMIT, limit_price=99.0)
    )
    venue.place_order(
        make_order(clock, "ls", Side.SELL, 100, order_type=OrderType.LIMIT, limit_price=101.0)
    )
    step(venue, clock, 5.0)
    assert listener.statuses_of("lb") == [OrderStatus.SUBMITTED]
    assert listener.statuses_of("ls") == [OrderStatus.SUBMITTED]
    assert listener.fills == []

    venue.set_mid("AAPL", 98.0)
    step(venue, clock, 0.5)
    (buy_fill,) = listener.fills
    assert buy_fill.client_order_id == "lb"
    assert buy_fill.price <= 99.0
    assert buy_fill.price == listener.quote_before(buy_fill).ask
    assert listener.statuses_of("ls") == [OrderStatus.SUBMITTED]

    venue.set_mid("AAPL", 102.0)
    step(venue, clock, 0.5)
    sell_fill = listener.fills[-1]
    assert sell_fill.client_order_id == "ls" and sell_fill.price >= 101.0
    assert sell_fill.price == listener.quote_before(sell_fill).bid
    assert venue.positions() == {}


async def test_marketable_limit_fills_at_the_ask_not_the_limit() -> None:
    venue, clock, listener = await make_venue()
    step(venue, clock, 1.0)
    ask = listener.last_quote("AAPL").ask
    venue.place_order(
        make_order(clock, "lm", Side.BUY, 100, order_type=OrderType.LIMIT, limit_price=ask + 5.0)
    )
    venue.process_orders()
    assert listener.fills[0].price == ask


async def test_latency_delays_every_order_event() -> None:
    venue, clock, listener = await make_venue(latency_ms=250.0)
    step(venue, clock, 1.0)
    placed_at = clock.now()
    venue.place_order(make_order(clock, "c1", Side.BUY, 100))
    step(venue, clock, 0.2)
    venue.process_orders()
    assert listener.statuses == [] and listener.fills == []
    step(venue, clock, 0.05)
    assert listener.statuses_of("c1") == [OrderStatus.SUBMITTED, OrderStatus.FILLED]
    assert listener.statuses[0].ts == placed_at + timedelta(milliseconds=250)
    assert listener.fills[0].ts == placed_at + timedelta(milliseconds=250)

    venue.cancel_order("c1")
    step(venue, clock, 0.2)
    assert listener.errors == []
    step(venue, clock, 0.05)
    assert listener.errors[0][0] == ERR_CANCEL_NOT_CANCELLABLE


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"quantity": 0}, "quantity must be positive"),
        ({"quantity": -5}, "quantity must be positive"),
        ({"symbol": "ZZZZ"}, "unknown symbol 'ZZZZ'"),
        ({"order_type": OrderType.LIMIT}, "positive limit price"),
        ({"order_type": OrderType.LIMIT, "limit_price": 0.0}, "positive limit price"),
        ({"order_type": OrderType.LIMIT, "limit_price": math.nan}, "positive limit price"),
        ({"quantity": 1_000_000}, "insufficient buying power"),
    ],
)
async def test_rejections_name_the_reason(kwargs: dict[str, Any], reason: str) -> None:
    venue, clock, listener = await make_venue()
    step(venue, clock, 1.0)
    args: dict[str, Any] = {"quantity": 100} | kwargs
    venue.place_order(make_order(clock, "r1", Side.BUY, **args))
    venue.process_orders()
    (update,) = listener.statuses
    assert update.status is OrderStatus.REJECTED
    assert reason in update.message
    assert update.error_code == ERR_ORDER_REJECTED
    assert update.broker_order_id is None
    assert listener.fills == [] and venue.positions() == {}


async def test_reducing_orders_bypass_buying_power_but_adding_ones_do_not() -> None:
    venue, clock, listener = await make_venue(starting_cash=100_000.0)
    venue.set_mid("AAPL", 100.0)
    venue.place_order(make_order(clock, "b1", Side.BUY, 1500))  # 150k on 100k cash
    run_until_done(venue, clock, listener, "b1")
    assert listener.statuses_of("b1")[-1] is OrderStatus.FILLED

    venue.shock("AAPL", -60.0)  # now gross exposure far exceeds 2x NLV
    values = venue.account_values()
    assert values.buying_power < 0
    venue.place_order(make_order(clock, "add", Side.BUY, 1))
    venue.place_order(make_order(clock, "cut", Side.SELL, 500))
    venue.place_order(make_order(clock, "flip", Side.SELL, 5000))  # goes short: adds risk
    venue.process_orders()
    assert listener.statuses_of("add") == [OrderStatus.REJECTED]
    assert listener.statuses_of("cut")[0] is OrderStatus.SUBMITTED
    assert listener.statuses_of("flip") == [OrderStatus.REJECTED]


async def test_cancel_working_order_and_unknown_order() -> None:
    venue, clock, listener = await make_venue(volatility_bp=0.0)
    venue.set_mid("AAPL", 100.0)
    step(venue, clock, 1.0)
    venue.place_order(
        make_order(clock, "w1", Side.BUY, 100, order_type=OrderType.LIMIT, limit_price=90.0)
    )
    step(venue, clock, 1.0)
    venue.cancel_order("w1")
    venue.cancel_order("ghost")
    assert listener.statuses_of("w1") == [OrderStatus.SUBMITTED] and listener.errors == []
    venue.process_orders()
    assert listener.statuses_of("w1") == [OrderStatus.SUBMITTED, OrderStatus.CANCELLED]
    assert listener.statuses[-1].broker_order_id == "1001"
    ((code, message, coid),) = listener.errors
    assert (code, coid) == (ERR_CANCEL_NOT_FOUND, "ghost") and "cannot cancel" in message

    # A cancelled order no longer trades, even when the market crosses its limit.
    venue.set_mid("AAPL", 80.0)
    step(venue, clock, 2.0)
    assert listener.fills == []
    venue.cancel_order("w1")
    venue.process_orders()
    assert listener.errors[-1][:1] == (ERR_CANCEL_NOT_CANCELLABLE,)
    assert listener.errors[-1][2] == "w1"


async def test_duplicate_client_order_id_is_a_programming_error() -> None:
    venue, clock, _ = await make_venue()
    venue.place_order(make_order(clock, "c1", Side.BUY, 1))
    with pytest.raises(ValueError, match="duplicate"):
        venue.place_order(make_order(clock, "c1", Side.BUY, 1))


async def test_cash_positions_and_nlv_stay_consistent() -> None:
    venue, clock, listener = await make_venue(starting_cash=250_000.0)
    trades = [
        ("AAPL", Side.BUY, 300),
        ("MSFT", Side.SELL, 200),
        ("AAPL", Side.SELL, 500),
        ("MSFT", Side.BUY, 50),
        ("AAPL", Side.BUY, 120),
    ]
    for i, (symbol, side, qty) in enumerate(trades):
        step(venue, clock, 0.7)
        venue.place_order(make_order(clock, f"t{i}", side, qty, symbol=symbol))
        run_until_done(venue, clock, listener, f"t{i}")
        assert listener.statuses_of(f"t{i}")[-1] is OrderStatus.FILLED

    assert listener.fills == venue.fills
    expected_positions = {"AAPL": 300 - 500 + 120, "MSFT": -200 + 50}
    assert venue.positions() == expected_positions
    cash = 250_000.0 - sum(f.signed_quantity * f.price + f.commission for f in venue.fills)
    for f in venue.fills:
        assert f.commission == pytest.approx(expected_commission(f.quantity, f.price))
    step(venue, clock, 3.0)
    venue.shock("MSFT", 10.0)
    values = venue.account_values()
    assert values.account_id == "SIM-0001"
    assert values.cash == pytest.approx(cash)
    market_value = sum(q * venue.mid(s) for s, q in expected_positions.items())
    gross = sum(abs(q) * venue.mid(s) for s, q in expected_positions.items())
    assert values.net_liquidation == pytest.approx(cash + market_value)
    assert values.buying_power == pytest.approx(2.0 * values.net_liquidation - gross)


async def test_bad_quotes_are_malformed_but_never_move_the_true_price() -> None:
    clean, clean_clock, clean_listener = await make_venue()
    bad, bad_clock, bad_listener = await make_venue(bad_quote_rate=0.3)
    for _ in range(60):
        step(clean, clean_clock, 0.5)
        step(bad, bad_clock, 0.5)
        assert [bad.mid(s) for s in SYMBOLS] == [clean.mid(s) for s in SYMBOLS]

    kinds = {"nan": 0, "negative": 0, "crossed": 0, "jump": 0}
    malformed = 0
    for good, shown in zip(clean_listener.quotes, bad_listener.quotes, strict=True):
        if shown == good:
            continue
        malformed += 1
        if math.isnan(shown.bid):
            kinds["nan"] += 1
        elif shown.bid < 0:
            kinds["negative"] += 1
        elif shown.bid > shown.ask:
            kinds["crossed"] += 1
        else:
            assert abs(shown.mid / good.mid - 1.0) > 0.4
            kinds["jump"] += 1
    total = len(bad_listener.quotes)
    assert 0.2 < malformed / total < 0.4
    assert all(count > 0 for count in kinds.values()), kinds

    # Orders trade on the venue's true book, not on what a malformed quote showed.
    for venue, clock in ((clean, clean_clock), (bad, bad_clock)):
        venue.place_order(make_order(clock, "m1", Side.BUY, 100))
        venue.process_orders()
    assert bad_listener.fills[0].price == clean_listener.fills[0].price


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="symbols"):
        SimVenueConfig(symbols=())
    with pytest.raises(ValueError, match="quotes_per_second"):
        SimVenueConfig(symbols=SYMBOLS, quotes_per_second=0)
    with pytest.raises(ValueError, match="bad_quote_rate"):
        SimVenueConfig(symbols=SYMBOLS, bad_quote_rate=1.5)
    with pytest.raises(ValueError, match="latency_ms"):
        SimVenueConfig(symbols=SYMBOLS, latency_ms=-1)


def test_sim_venue_is_a_broker() -> None:
    broker: Broker = SimVenue(SimVenueConfig(symbols=SYMBOLS), SimClock())
    assert broker.name == "sim" and not broker.connected
