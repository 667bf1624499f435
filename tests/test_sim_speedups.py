"""The simulated venue's fast paths, checked through its public API only.

``SimVenue.advance_to`` keeps a running slot timestamp, matches through the per-book
working list, checks buying power without building ``AccountValues``, and packs
finished orders and fills (``OrderLedger``, ``FillLog``). Under a random workload
(orders from outside and from inside the listener's callbacks, cancels, price shocks,
subscription changes, disconnects, long pauses) these tests check the venue against
simple models that share none of that code:

- the quote schedule against exact integer arithmetic on the slot times;
- a run stepped in many small advances against the same run in few large ones;
- every order decision, fill and cancel answer against what the listener was told
  and what the public account reports (``account_values``, ``positions``, ``mid``);
- malformed quotes never change what trades (their draws are apart from the walk's);
- what the venue remembers of finished orders and fills, live and after a restart;
- the packed stores themselves, for values that do not pack.
"""

from __future__ import annotations

import math
import random
import shutil
from collections import deque
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.brokers.sim import (
    ERR_CANCEL_NOT_CANCELLABLE,
    ERR_CANCEL_NOT_FOUND,
    ERR_NOT_CONNECTED,
    ERR_ORDER_REJECTED,
    MAX_CATCHUP_SECONDS,
    SimVenue,
    SimVenueConfig,
)
from core.brokers.sim_book import VenueOrder
from core.brokers.sim_state import FillLog, OrderLedger, exec_id_for
from core.clock import SimClock
from core.model import (
    ALLOWED_TRANSITIONS,
    BrokerOrderState,
    Fill,
    Order,
    OrderStatus,
    OrderStatusUpdate,
    OrderType,
    Quote,
    QuoteSource,
    Side,
)

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
_US = timedelta(microseconds=1)
# The venue's price tolerance in limit checks (sim_book.PRICE_EPS).
_PRICE_EPS = 1e-9


class _Trader:
    """The venue's listener: records every callback and checks each order decision.

    On some quotes it places an order from inside the callback (stamped with the
    quote's time). When an order reaches the venue, it recomputes the venue's
    decision from public figures only (``positions``, ``mid``, ``account_values``).
    """

    def __init__(self, venue: SimVenue, seed: int, *, places: bool = True) -> None:
        self.venue = venue
        self.places = places
        self.rng = random.Random(seed)
        self.events: list[tuple[str, Any]] = []
        self.placed: dict[str, Order] = {}
        self.fills: list[Fill] = []
        self.statuses: list[OrderStatusUpdate] = []
        self.connected = False  # as the venue last said
        self.decided: set[str] = set()
        self.decisions_checked = 0
        self.near_the_limit = 0

    def place(self, ts: datetime) -> None:
        rng = self.rng
        symbols = self.venue.symbols
        symbol = rng.choice([*symbols, "ZZZ"] if rng.random() < 0.05 else symbols)
        order_type = OrderType.LIMIT if rng.random() < 0.4 else OrderType.MARKET
        limit = None
        if order_type is OrderType.LIMIT:
            if symbol in symbols:
                limit = round(self.venue.mid(symbol) * rng.uniform(0.998, 1.002), 2)
            elif rng.random() < 0.5:
                limit = -1.0
        order = Order(
            client_order_id=f"T-{len(self.placed):05d}",
            symbol=symbol,
            side=rng.choice([Side.BUY, Side.SELL]),
            quantity=rng.choice([0, 1, 50, 100, 250, 700, 1_500, 5_000, 10_000_000]),
            order_type=order_type,
            created_at=ts,
            limit_price=limit,
        )
        self.placed[order.client_order_id] = order
        self.events.append(("placed", order))
        self.venue.place_order(order)

    def on_quote(self, quote: Quote) -> None:
        self.events.append(("quote", quote))
        if self.places and self.rng.random() < 0.02:
            self.place(quote.ts)

    def on_order_status(self, update: OrderStatusUpdate) -> None:
        self.statuses.append(update)
        self.events.append(("status", update))
        cid = update.client_order_id
        if cid not in self.decided and update.status in (
            OrderStatus.SUBMITTED,
            OrderStatus.REJECTED,
        ):
            self.decided.add(cid)
            self._check_decision(self.placed[cid], update)

    def _check_decision(self, order: Order, update: OrderStatusUpdate) -> None:
        """The venue's accept/reject rules, from its documentation and public figures.

        Called as the order reaches the venue: nothing has traded since the decision.
        """
        expected = self._expected_rejection(order)
        if expected is None:
            return  # too close to the buying-power limit to call (see there)
        self.decisions_checked += 1
        if expected == (0, ""):
            assert update.status is OrderStatus.SUBMITTED, (order, update)
            assert update.broker_order_id is not None
        else:
            code, reason = expected
            assert update.status is OrderStatus.REJECTED, (order, update, expected)
            assert update.error_code == code and update.message.startswith(reason), update

    def _expected_rejection(self, order: Order) -> tuple[int, str] | None:
        venue = self.venue
        if not self.connected:
            return ERR_NOT_CONNECTED, "Not connected"
        if order.quantity <= 0:
            return ERR_ORDER_REJECTED, "quantity must be positive"
        if order.symbol not in venue.symbols:
            return ERR_ORDER_REJECTED, "unknown symbol"
        if order.order_type is OrderType.LIMIT and not (order.limit_price or 0) > 0:
            return ERR_ORDER_REJECTED, "limit order needs a positive limit price"
        positions = venue.positions()
        position = positions.get(order.symbol, 0)
        signed = order.side.sign * order.quantity
        if position * signed < 0 and order.quantity <= abs(position):
            return 0, ""  # reducing exposure is always allowed
        gross = sum(abs(q) * venue.mid(s) for s, q in positions.items())
        gross_after = gross + (abs(position + signed) - abs(position)) * venue.mid(order.symbol)
        limit = venue.config.buying_power_multiple * venue.account_values().net_liquidation
        # The venue sums its exposure in its own order: within a relative 1e-9 of the
        # limit, rounding may decide either way, and neither answer is wrong.
        if math.isclose(gross_after, limit, rel_tol=1e-9):
            self.near_the_limit += 1
            return None
        if gross_after > limit:
            return ERR_ORDER_REJECTED, "insufficient buying power"
        return 0, ""

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.events.append(("fill", fill))

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        self.events.append(("error", (code, message, client_order_id)))

    def on_connection_changed(self, connected: bool, message: str) -> None:
        self.connected = connected
        self.events.append(("connection", (connected, message)))

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        raise AssertionError("the sim venue never switches feeds")


class _Schedule:
    """Which quotes the venue publishes and when, in exact arithmetic.

    Slot j (for symbol j % n) is due at start + (j + 1) / rate, rate being quotes per
    second over all symbols; a slot is published when it falls due while the venue is
    connected and its symbol subscribed; a disconnected venue, a reconnect and a pause
    longer than MAX_CATCHUP_SECONDS skip the slots they pass over. With a whole rate
    and the clock on microseconds, elapsed * rate is never within the venue's 1e-9 of
    a whole number unless it is one, so its float floor and this exact one agree.
    """

    def __init__(self, config: SimVenueConfig) -> None:
        self.symbols = config.symbols
        self.rate = Fraction(config.quotes_per_second) * len(config.symbols)
        assert self.rate.denominator == 1, "the exactness argument needs a whole rate"
        self.next_slot = 0

    def _due(self, now: datetime, back: timedelta = timedelta(0)) -> int:
        return math.floor(Fraction((now - back - T0) // _US, 10**6) * self.rate)

    def slot_time(self, slot: int) -> datetime:
        return T0 + round(Fraction((slot + 1) * 10**6) / self.rate) * _US

    def connect(self, now: datetime) -> None:
        self.next_slot = max(self.next_slot, self._due(now))

    def advance(self, now: datetime, connected: bool, subscribed: set[str]) -> list[Any]:
        due = self._due(now)
        first, self.next_slot = self.next_slot, max(self.next_slot, due)
        if due <= first or not connected:
            return []
        first = max(first, self._due(now, timedelta(seconds=MAX_CATCHUP_SECONDS)))
        n = len(self.symbols)
        return [
            (self.symbols[j % n], self.slot_time(j))
            for j in range(first, due)
            if self.symbols[j % n] in subscribed
        ]


def _script(config: SimVenueConfig, seed: int, steps: int) -> list[tuple[str, Any, int]]:
    """A random workload: (action, argument, then microseconds to advance the clock)."""
    rng = random.Random(seed)
    script: list[tuple[str, Any, int]] = []
    for _ in range(steps):
        roll = rng.random()
        action: tuple[str, Any] = ("wait", None)
        if roll < 0.25:
            action = ("place", None)
        elif roll < 0.33:
            action = ("cancel", rng.random())  # which of the orders placed so far
        elif roll < 0.34:
            action = ("cancel", "ghost")
        elif roll < 0.36:
            action = ("shock", (rng.choice(config.symbols), rng.uniform(-3.0, 3.0)))
        elif roll < 0.38:
            action = ("toggle", rng.choice(config.symbols))
        elif roll < 0.39:
            action = ("disconnect", None)
        elif roll < 0.41:
            action = ("connect", None)
        step = rng.choice([0, 1_000, 7_000, 50_000, 250_000, 250_000, 1_000_000, 3_300_000])
        if rng.random() < 0.002:
            step = 75_000_000  # longer than the catch-up window: slots are skipped
        script.append((*action, step))
    return script


async def _run(
    config: SimVenueConfig,
    script: list[tuple[str, Any, int]],
    *,
    seed: int,
    pieces: int = 1,
) -> tuple[SimVenue, _Trader, SimClock]:
    """Play ``script``; each wait of at most the catch-up window is cut into up to
    ``pieces`` advances at random microseconds. Every advance is checked against the
    exact quote schedule."""
    clock = SimClock(T0)
    venue = SimVenue(config, clock)
    trader = _Trader(venue, seed)
    venue.set_listener(trader)
    schedule = _Schedule(config)
    connected, subscribed = True, set(config.symbols)
    await venue.connect()
    schedule.connect(clock.now())
    venue.subscribe_quotes(config.symbols)
    cuts = random.Random(seed + 1)
    for kind, arg, step in script:
        if kind == "place":
            trader.place(clock.now())
        elif kind == "cancel":
            placed = list(trader.placed)
            if arg == "ghost" or not placed:
                venue.cancel_order("ghost")
            else:
                venue.cancel_order(placed[int(arg * len(placed))])
        elif kind == "shock":
            trader.events.append(("shock", arg[0]))
            venue.shock(*arg)
        elif kind == "toggle":
            if arg in subscribed:
                subscribed.discard(arg)
                venue.unsubscribe_quotes([arg])
            else:
                subscribed.add(arg)
                venue.subscribe_quotes([arg])
            assert venue.subscribed == subscribed
        elif kind == "disconnect":
            await venue.disconnect()
            connected = False
        elif kind == "connect":
            await venue.connect()
            if not connected:
                schedule.connect(clock.now())
            connected = True
        assert venue.connected is connected and trader.connected is connected
        start = clock.now()
        stops = [step]
        if pieces > 1 and step <= MAX_CATCHUP_SECONDS * 1e6:
            stops = [*sorted(cuts.randrange(step + 1) for _ in range(pieces - 1)), step]
        for stop in stops:
            clock.set(start + stop * _US)
            seen = len(trader.events)
            published = venue.advance_to(clock.now())
            quotes = [q for kind, q in trader.events[seen:] if kind == "quote"]
            assert published == len(quotes)
            expected = schedule.advance(clock.now(), connected, subscribed)
            assert [(q.symbol, q.ts) for q in quotes] == expected
    assert venue.quotes_published == sum(1 for kind, _ in trader.events if kind == "quote")
    return venue, trader, clock


CONFIGS = [
    # rate 100/s: a whole-microsecond period (the running timestamp), as in the bench
    SimVenueConfig(("S001", "S002", "S003", "S004", "S005"), quotes_per_second=20.0),
    # rate 21/s: 47619.05 µs, timestamps from float seconds; some malformed quotes
    SimVenueConfig(
        ("AAPL", "MSFT", "SPY"), quotes_per_second=7.0, latency_ms=50.0, bad_quote_rate=0.05
    ),
    # rate 8/s, a slower order path and a choppier market
    SimVenueConfig(
        ("AAPL", "MSFT"),
        seed=11,
        quotes_per_second=4.0,
        latency_ms=120.0,
        starting_cash=400_000.0,
        volatility_bp=20.0,
    ),
]


def _check_orders_against_the_listeners_view(config: SimVenueConfig, trader: _Trader) -> None:
    """Replay what the listener saw through a plain model of the venue's matching.

    The model keeps each symbol's acknowledged orders in time priority and the book
    the last quote showed. A marketable order trades against the book it arrives at
    and resting orders against each quote, taking the displayed size (consumed until
    the next quote) at the touch. Where the model cannot know the book (after a shock,
    which moves the price without a quote, or when quotes may be malformed) it checks
    only what holds regardless: limits, quantities, status order and cancel answers.
    """
    clean = config.bad_quote_rate == 0.0
    status: dict[str, OrderStatus] = {}
    filled: dict[str, int] = {}
    working: dict[str, list[str]] = {s: [] for s in config.symbols}
    book: dict[str, list[Any] | None] = dict.fromkeys(config.symbols)
    expected: deque[tuple[str, str, int, float]] = deque()  # fills the model predicts
    predicted = 0

    def match(symbol: str, candidates: list[str]) -> None:
        nonlocal predicted
        view = book[symbol]
        if view is None:
            return
        for cid in candidates:
            order = trader.placed[cid]
            remaining = order.quantity - filled[cid]
            limit = order.limit_price if order.order_type is OrderType.LIMIT else None
            assert limit is None or limit > 0
            if order.side is Side.BUY:
                if limit is not None and view[1] > limit + _PRICE_EPS:
                    continue
                quantity, price, size_at = min(remaining, view[3]), view[1], 3
            else:
                if limit is not None and view[0] < limit - _PRICE_EPS:
                    continue
                quantity, price, size_at = min(remaining, view[2]), view[0], 2
            if quantity > 0:
                view[size_at] -= quantity
                expected.append(("fill", cid, quantity, price))
                predicted += 1

    def settle(cid: str) -> None:
        if status[cid].is_terminal:
            for resting in working.values():
                if cid in resting:
                    resting.remove(cid)

    for kind, item in trader.events:
        if kind == "placed":
            status[item.client_order_id] = OrderStatus.PENDING_SUBMIT
            filled[item.client_order_id] = 0
        elif kind == "shock":
            book[item] = None
        elif kind == "quote":
            assert not expected, f"predicted fills did not happen: {expected}"
            book[item.symbol] = (
                [item.bid, item.ask, item.bid_size, item.ask_size] if clean else None
            )
            match(item.symbol, list(working[item.symbol]))
        elif kind == "fill":
            cid = item.client_order_id
            order = trader.placed[cid]
            assert status[cid] in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)
            assert (item.symbol, item.side) == (order.symbol, order.side)
            assert 0 < item.quantity <= order.quantity - filled[cid]
            if order.order_type is OrderType.LIMIT:
                assert order.limit_price is not None
                sign = order.side.sign
                assert sign * item.price <= sign * order.limit_price + _PRICE_EPS
            assert item.commission == trader.venue.commission(item.quantity, item.price)
            if expected:
                assert expected.popleft() == ("fill", cid, item.quantity, item.price)
            else:
                assert book[order.symbol] is None, f"a fill the model did not predict: {item}"
            filled[cid] += item.quantity
        elif kind == "status":
            cid = item.client_order_id
            old, new = status[cid], item.status
            assert new in ALLOWED_TRANSITIONS[old], (old, item)
            if new in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED):
                # Sent right after the fill it reports, with the order's total.
                assert (new is OrderStatus.FILLED) == (filled[cid] == trader.placed[cid].quantity)
            status[cid] = new
            if new is OrderStatus.SUBMITTED:
                symbol = trader.placed[cid].symbol
                working[symbol].append(cid)
                match(symbol, [cid])
            settle(cid)
        elif kind == "error":
            code, _, cid = item
            if cid not in status:
                assert code == ERR_CANCEL_NOT_FOUND
            else:
                assert code == ERR_CANCEL_NOT_CANCELLABLE and status[cid].is_terminal
    assert not expected
    # Each order's last word is its state at the venue.
    for cid, state in trader.venue.order_states().items():
        assert (state.status, state.filled_quantity) == (status[cid], filled[cid])
    assert clean is (predicted > 0)


def _check_account(config: SimVenueConfig, venue: SimVenue, trader: _Trader) -> None:
    positions: dict[str, int] = {}
    cash = config.starting_cash
    for fill in trader.fills:
        # The venue books each fill the same way, in the same order: the same float.
        cash -= fill.signed_quantity * fill.price + fill.commission
        positions[fill.symbol] = positions.get(fill.symbol, 0) + fill.signed_quantity
    assert venue.positions() == {s: q for s, q in positions.items() if q}
    account = venue.account_values()
    assert account.cash == cash
    market_value = sum(q * venue.mid(s) for s, q in venue.positions().items())
    gross = sum(abs(q) * venue.mid(s) for s, q in venue.positions().items())
    # A sum over the positions: its rounding depends on the order of the terms and on
    # the Python version (3.12's sum() compensates), not on the venue's rules.
    assert account.net_liquidation == pytest.approx(cash + market_value, rel=1e-12)
    expected_bp = config.buying_power_multiple * account.net_liquidation - gross
    assert account.buying_power == pytest.approx(expected_bp, rel=1e-12, abs=1e-6)


@pytest.mark.parametrize("config", CONFIGS)
async def test_orders_fills_and_account_follow_the_venues_rules(config: SimVenueConfig) -> None:
    venue, trader, _ = await _run(config, _script(config, 3, 1_500), seed=3)
    _check_orders_against_the_listeners_view(config, trader)
    _check_account(config, venue, trader)
    assert venue.executions() == trader.fills
    kinds = {kind for kind, _ in trader.events}
    assert kinds == {"placed", "quote", "status", "fill", "error", "connection", "shock"}
    assert {u.status for u in trader.statuses} >= {
        OrderStatus.SUBMITTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
    }
    reasons = {u.message.split(":")[0] for u in trader.statuses if u.error_code is not None}
    assert {"Not connected", "insufficient buying power"} <= reasons
    assert trader.decisions_checked > 100 and trader.near_the_limit <= 2


@pytest.mark.parametrize("config", CONFIGS)
async def test_many_small_advances_give_what_few_large_ones_give(config: SimVenueConfig) -> None:
    # Quotes sit on their slot times and order events on their latency, whatever the
    # clock's steps: the running timestamp (one advance over many slots) must give the
    # times the per-call computation gives (one advance per slot or less).
    script = _script(config, 6, 1_000)
    coarse_venue, coarse, _ = await _run(config, script, seed=6)
    fine_venue, fine, _ = await _run(config, script, seed=6, pieces=6)
    # repr: every field, including each timestamp's tzinfo and microseconds. Both runs
    # do the same arithmetic, so floats match bit for bit.
    assert [repr(e) for e in fine.events] == [repr(e) for e in coarse.events]
    assert fine_venue.order_states() == coarse_venue.order_states()
    assert fine_venue.account_values() == coarse_venue.account_values()
    assert sum(1 for kind, _ in coarse.events if kind == "fill") > 50


async def test_malformed_quotes_never_change_what_trades() -> None:
    # The malformed-quote draws come from a generator of their own: with or without
    # them the walk, the orders and every fill are the same; only some quotes differ.
    noisy_config = CONFIGS[1]
    clean_config = SimVenueConfig(**{**_fields(noisy_config), "bad_quote_rate": 0.0})
    script = _script(noisy_config, 4, 1_200)
    noisy_venue, noisy, _ = await _run(noisy_config, script, seed=4)
    clean_venue, clean, _ = await _run(clean_config, script, seed=4)
    _check_orders_against_the_listeners_view(clean_config, clean)
    assert len(noisy.events) == len(clean.events)
    malformed = 0
    for (kind, got), (clean_kind, want) in zip(noisy.events, clean.events, strict=True):
        assert kind == clean_kind
        if kind != "quote" or got == want:
            assert repr(got) == repr(want)
            continue
        malformed += 1
        assert (got.symbol, got.ts, got.bid_size, got.ask_size) == (
            want.symbol,
            want.ts,
            want.bid_size,
            want.ask_size,
        )
        broken = not (0 < got.bid <= got.ask) or math.isnan(got.bid)
        scaled = any(
            (got.bid, got.ask) == (round(want.bid * f, 2), round(want.ask * f, 2))
            for f in (0.5, 1.5)
        )
        assert broken or scaled, (got, want)
    quotes = sum(1 for kind, _ in clean.events if kind == "quote")
    assert 0.03 * quotes < malformed < 0.07 * quotes
    assert noisy_venue.order_states() == clean_venue.order_states()
    assert noisy_venue.account_values() == clean_venue.account_values()


def _fields(config: SimVenueConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def _expected_states(trader: _Trader) -> dict[str, BrokerOrderState]:
    """What the venue should report of each order, from what it told its listener."""
    states = {}
    for order in trader.placed.values():
        updates = [u for u in trader.statuses if u.client_order_id == order.client_order_id]
        broker_ids = {u.broker_order_id for u in updates if u.broker_order_id is not None}
        assert len(broker_ids) <= 1
        states[order.client_order_id] = BrokerOrderState(
            order.client_order_id,
            order.symbol,
            order.side,
            order.quantity,
            sum(f.quantity for f in trader.fills if f.client_order_id == order.client_order_id),
            updates[-1].status if updates else OrderStatus.PENDING_SUBMIT,
            broker_ids.pop() if broker_ids else None,
            order.order_type,
            order.stop_price,
            order.limit_price,
            order.tif,
        )
    return states


def _probe_with_cancels(venue: SimVenue, clock: SimClock, trader: _Trader) -> dict[str, str]:
    """Cancel every order the venue was sent, and one it never was; each answer.

    A working order is cancelled; a finished one is "not cancellable" naming its final
    status; an unknown id is "not found". The answers show, through the public
    interface, which orders the venue holds as working. No quotes are published
    meanwhile (``process_orders``), so nothing trades before the cancels arrive. Orders
    not yet at the venue (still pending: they arrive before their cancel) are left out.
    """
    seen = len(trader.events)
    states = venue.order_states()
    for cid in [*states, "never-sent"]:
        venue.cancel_order(cid)
    clock.advance(timedelta(milliseconds=venue.config.latency_ms))
    venue.process_orders()
    answers: dict[str, str] = {}
    for kind, item in trader.events[seen:]:
        if kind == "status" and item.status is OrderStatus.CANCELLED:
            answers[item.client_order_id] = "cancelled"
        elif kind == "error":
            code, message, cid = item
            answers[cid] = f"{code} {message}"
    pending = {cid for cid, s in states.items() if s.status is OrderStatus.PENDING_SUBMIT}
    return {cid: answer for cid, answer in answers.items() if cid not in pending}


def _expected_cancel_answers(states: dict[str, BrokerOrderState]) -> dict[str, str]:
    answers = {}
    for cid, state in states.items():
        if state.status is OrderStatus.PENDING_SUBMIT:
            continue  # see _probe_with_cancels
        if state.status.is_terminal:
            answers[cid] = (
                f"{ERR_CANCEL_NOT_CANCELLABLE} Cancel attempted when order {cid} is not in a "
                f"cancellable state ({state.status}); cannot cancel"
            )
        else:
            answers[cid] = "cancelled"
    answers["never-sent"] = (
        f"{ERR_CANCEL_NOT_FOUND} OrderId never-sent that needs to be cancelled is not "
        "found; cannot cancel"
    )
    return answers


@pytest.mark.parametrize("config", CONFIGS)
async def test_finished_orders_and_fills_are_remembered_exactly(config: SimVenueConfig) -> None:
    venue, trader, clock = await _run(config, _script(config, 8, 1_500), seed=8)
    states = venue.order_states()
    assert list(states) == list(trader.placed)  # arrival order
    assert states == _expected_states(trader)
    assert venue.fills == trader.fills
    assert venue.executions() == trader.fills
    # A reused id is refused whether the order is working or long finished.
    for order in list(trader.placed.values())[:: max(1, len(trader.placed) // 10)]:
        with pytest.raises(ValueError, match="duplicate"):
            venue.place_order(order)
    # The orders still working are exactly the ones the venue holds as working.
    working = {cid for cid, state in states.items() if not state.status.is_terminal}
    assert working and len(working) < len(states)
    assert _probe_with_cancels(venue, clock, trader) == _expected_cancel_answers(states)


async def test_a_restarted_venue_remembers_everything_from_its_state_file(tmp_path: Path) -> None:
    config = SimVenueConfig(
        ("AAPL", "MSFT"), quotes_per_second=4.0, latency_ms=50.0, state_file=tmp_path / "s.jsonl"
    )
    first, trader, clock = await _run(config, _script(config, 5, 800), seed=5)
    first.close()
    shutil.copy(tmp_path / "s.jsonl", tmp_path / "copy.jsonl")
    second = SimVenue(config, SimClock(clock.now()))
    states = first.order_states()
    assert second.order_states() == states
    assert second.fills == first.fills
    assert [repr(f) for f in second.fills] == [repr(f) for f in trader.fills]
    assert second.positions() == first.positions()
    assert second.account_values().cash == first.account_values().cash
    # The restarted venue still works the orders that were working: pushed far through
    # every limit, each resting order trades in full (a listener that places nothing).
    listener = _Trader(second, 0, places=False)
    listener.placed = dict(trader.placed)  # orders pending at the restart arrive now
    second.set_listener(listener)
    await second.connect()
    second.subscribe_quotes(config.symbols)
    resting = {cid: s for cid, s in states.items() if not s.status.is_terminal}
    assert {s.side for s in resting.values()} == {Side.BUY, Side.SELL}
    clock = SimClock(clock.now())
    for pct, side in ((-50.0, Side.BUY), (300.0, Side.SELL)):
        for symbol in config.symbols:
            second.shock(symbol, pct)
        for _ in range(120):
            clock.advance(1.0)
            second.advance_to(clock.now())
        after = second.order_states()
        for cid, state in resting.items():
            if state.side is side and state.status is not OrderStatus.PENDING_SUBMIT:
                assert after[cid].status is OrderStatus.FILLED, (state, after[cid])
    second.close()
    # And a second restart from the first state file answers cancels as the first would.
    third = SimVenue(
        SimVenueConfig(**{**_fields(config), "state_file": tmp_path / "copy.jsonl"}),
        clock := SimClock(clock.now()),
    )
    probe = _Trader(third, 0, places=False)
    probe.placed = dict(trader.placed)
    third.set_listener(probe)
    assert _probe_with_cancels(third, clock, probe) == _expected_cancel_answers(states)
    third.close()


# ------------------------------------------------------------------ the packed stores


def test_fill_log_reads_back_every_kind_of_fill() -> None:
    new_york = ZoneInfo("America/New_York")
    zones = [
        UTC,
        timezone(timedelta(hours=-5)),
        timezone(timedelta(hours=2), "CEST"),
        timezone(timedelta(hours=2)),  # equal to CEST, but named otherwise
        new_york,
        None,
    ]
    rng = random.Random(9)
    fills = []
    for i in range(2_000):
        zone = rng.choice(zones)
        year = rng.choice([1969, 2026, 2026])
        # 01:30 on 2026-11-01 happens twice in New York: fold tells which.
        ts = datetime(year, 11, 1, 1, 30, rng.randrange(60), rng.randrange(10**6), zone)
        ts = ts.replace(fold=rng.randrange(2))
        exec_id = rng.choice(
            [exec_id_for(i + 1), exec_id_for(10**9 + i), "0001f4e1.67a2.01", "SIM-1", "SIM-٣"]
        )
        fills.append(
            Fill(
                exec_id,
                f"C{i}",
                "".join(rng.choice(["AAPL", "MSFT"])),  # equal strings, distinct objects
                rng.choice([Side.BUY, Side.SELL]),
                rng.choice([1, 100, 2**40, 2**70]),
                rng.choice([101.25, 0.01, 1e-300, -0.0, 7]),  # 7: an int price is kept whole
                rng.choice([1.0, 0.35, 0.0]),
                ts,
            )
        )
    log = FillLog()
    for fill in fills:
        log.append(fill)
    assert len(log) == len(fills)
    assert log == fills and fills == log and log == list(log)
    assert log != fills[:-1] and log != tuple(fills)
    for got, want in zip(log, fills, strict=True):
        assert repr(got) == repr(want)  # tzinfo, its name, fold and types included
        assert got.ts.fold == want.ts.fold and got.ts.utcoffset() == want.ts.utcoffset()
    assert log[-1] == fills[-1] and log[3:9:2] == fills[3:9:2]
    with pytest.raises(IndexError):
        log[len(fills)]


def test_fill_log_takes_the_venues_own_sequence_number() -> None:
    log = FillLog()
    fill = Fill(exec_id_for(7), "C1", "AAPL", Side.SELL, 100, 99.5, 1.0, T0)
    log.append(fill, 7)
    assert log == [fill] and repr(log) == f"FillLog([{fill!r}])"


def test_order_ledger_packs_finished_orders_and_keeps_odd_ones_whole() -> None:
    ledger = OrderLedger()
    orders = []
    for i, (quantity, broker_id, status) in enumerate(
        [
            (100, "1001", OrderStatus.FILLED),
            (5, None, OrderStatus.REJECTED),
            (2**70, None, OrderStatus.REJECTED),  # beyond 64 bits: kept whole
            (300, "007", OrderStatus.CANCELLED),  # would read back as "7": kept whole
            (300, "-4", OrderStatus.CANCELLED),
            (10, "1002", OrderStatus.SUBMITTED),  # still working
            (10, None, OrderStatus.PENDING_SUBMIT),
        ]
    ):
        order = VenueOrder(
            f"C{i}", "".join(["AA", "PL"]), Side.SELL, quantity, OrderType.MARKET, None
        )
        ledger.add(order)
        order.broker_order_id, order.status = broker_id, status
        order.filled = quantity // 2
        orders.append(order)
    expected = {
        o.client_order_id: BrokerOrderState(
            o.client_order_id, o.symbol, o.side, o.quantity, o.filled, o.status, o.broker_order_id
        )
        for o in orders
    }
    for order in orders:
        if order.status.is_terminal:
            ledger.finish(order)
    assert ledger.states() == expected
    assert list(ledger.states()) == list(expected)
    assert set(ledger.live) == {"C5", "C6"} and len(ledger) == len(orders)
    assert ledger.finished_status("C0") is OrderStatus.FILLED
    assert ledger.finished_status("C5") is None and ledger.finished_status("nope") is None
    assert "C3" in ledger and "nope" not in ledger
    with pytest.raises(ValueError, match="duplicate"):
        ledger.add(VenueOrder("C0", "AAPL", Side.BUY, 1, OrderType.MARKET, None))
