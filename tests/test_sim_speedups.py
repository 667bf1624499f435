"""The simulated venue's shortcuts give exactly what the plain code they replace gives.

- ``SimVenue.advance_to`` (a running timestamp, ``Book.step``, the per-book working
  list) against the loop as it was written with the library calls, under a random
  workload of orders, cancels, price moves, subscription changes and reconnects;
- what the venue remembers of finished orders and fills (``OrderLedger``,
  ``FillLog``: packed, not kept as objects) against what its listener was told,
  against a reload of its state file, and for values that do not pack.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from core.brokers.sim import SimVenue, SimVenueConfig
from core.brokers.sim_book import Book, VenueOrder
from core.brokers.sim_state import FillLog, OrderLedger, exec_id_for
from core.clock import SimClock
from core.model import (
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


class _PlainVenue(SimVenue):
    """SimVenue with its quote loop and buying-power check as plainly written before."""

    def advance_to(self, now: datetime) -> int:
        due = self._slots_due(now)
        published = 0
        outer_time = self._venue_time
        try:
            if due > self._next_slot and not self._connected:
                self._next_slot = due
            elif due > self._next_slot:
                self._skip_long_gap(now)
                while self._next_slot < due and self._connected:
                    slot = self._next_slot
                    self._next_slot = slot + 1
                    book = self._books[slot % len(self._books)]
                    if book.symbol not in self._subscribed:
                        continue
                    if self._slot_step is None:
                        ts = self._start + timedelta(seconds=(slot + 1) / self._rate)
                    else:
                        ts = self._start + self._slot_step * (slot + 1)
                    ts = min(ts, now)
                    if self._pending and self._pending[0][0] <= ts:
                        self._deliver_due(ts)
                    self._venue_time = ts
                    self._plain_publish_quote(book, ts)
                    published += 1
            self._deliver_due(now)
        finally:
            self._venue_time = outer_time
        return published

    def _plain_publish_quote(self, book: Book, ts: datetime) -> None:
        listener = self._require_listener()
        # The book's own draws (Book.step, checked in tests/test_hot_path.py); this test
        # is about the venue loop around them.
        quote = book.step(self._sigma, ts)
        rate = self._bad_quote_rate
        if rate > 0.0 and book.noise.random() < rate:
            quote = book.malformed(quote)
        self.quotes_published += 1
        listener.on_quote(quote)
        if self._working[book.symbol]:
            self._match_working(book, ts)

    def _rejection_reason(self, order: VenueOrder) -> str | None:
        if order.quantity <= 0:
            return f"quantity must be positive, got {order.quantity}"
        book = self._book_by_symbol.get(order.symbol)
        if book is None:
            return (
                f"unknown symbol {order.symbol!r}: the sim venue trades {', '.join(self.symbols)}"
            )
        price = order.limit_price
        if order.order_type is OrderType.LIMIT and not (
            price is not None and math.isfinite(price) and price > 0
        ):
            return f"limit order needs a positive limit price, got {price}"
        position = self._positions.get(order.symbol, 0)
        signed = order.side.sign * order.quantity
        if position * signed < 0 and order.quantity <= abs(position):
            return None
        nlv = self.account_values().net_liquidation
        gross_after = self._gross_exposure() + (abs(position + signed) - abs(position)) * book.mark
        limit = self._config.buying_power_multiple * nlv
        if gross_after > limit + 1e-9:
            return (
                f"insufficient buying power: gross exposure after the order would be "
                f"{gross_after:,.2f}, limit is {limit:,.2f} "
                f"({self._config.buying_power_multiple:g}x net liquidation {nlv:,.2f})"
            )
        return None


class _Trader:
    """Records every callback; on some quotes places an order from inside the callback."""

    def __init__(self, venue: SimVenue, seed: int) -> None:
        self.venue = venue
        self.rng = random.Random(seed)
        self.events: list[tuple[str, Any]] = []
        self.placed: list[Order] = []
        self.fills: list[Fill] = []
        self.statuses: list[OrderStatusUpdate] = []

    def place(self, ts: datetime) -> None:
        rng = self.rng
        symbol = rng.choice(
            [*self.venue.symbols, "ZZZ"] if rng.random() < 0.05 else self.venue.symbols
        )
        order_type = OrderType.LIMIT if rng.random() < 0.4 else OrderType.MARKET
        limit = None
        if order_type is OrderType.LIMIT and symbol in self.venue.symbols:
            limit = round(self.venue.mid(symbol) * rng.uniform(0.998, 1.002), 2)
        order = Order(
            client_order_id=f"T-{len(self.placed):05d}",
            symbol=symbol,
            side=rng.choice([Side.BUY, Side.SELL]),
            quantity=rng.choice([0, 1, 50, 100, 250, 700, 1_500, 5_000, 10_000_000]),
            order_type=order_type,
            created_at=ts,
            limit_price=limit,
        )
        self.placed.append(order)
        self.venue.place_order(order)

    def on_quote(self, quote: Quote) -> None:
        self.events.append(("quote", quote))
        if self.rng.random() < 0.02:
            self.place(quote.ts)

    def on_order_status(self, update: OrderStatusUpdate) -> None:
        self.statuses.append(update)
        self.events.append(("status", update))

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.events.append(("fill", fill))

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        self.events.append(("error", (code, message, client_order_id)))

    def on_connection_changed(self, connected: bool, message: str) -> None:
        self.events.append(("connection", (connected, message)))

    def on_feed_switched(self, symbol: str, source: QuoteSource, reason: str) -> None:
        raise AssertionError("the sim venue never switches feeds")


async def _drive(
    venue_cls: type[SimVenue], config: SimVenueConfig, seed: int, steps: int
) -> tuple[SimVenue, _Trader]:
    clock = SimClock(T0)
    venue = venue_cls(config, clock)
    trader = _Trader(venue, seed)
    venue.set_listener(trader)
    await venue.connect()
    venue.subscribe_quotes(config.symbols)
    rng = random.Random(seed + 1)
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.25:
            trader.place(clock.now())
        elif roll < 0.33 and trader.placed:
            venue.cancel_order(rng.choice(trader.placed).client_order_id)
        elif roll < 0.34:
            venue.cancel_order("ghost")
        elif roll < 0.36:
            venue.shock(rng.choice(config.symbols), rng.uniform(-3.0, 3.0))
        elif roll < 0.38:
            symbol = rng.choice(config.symbols)
            if symbol in venue.subscribed:
                venue.unsubscribe_quotes([symbol])
            else:
                venue.subscribe_quotes([symbol])
        elif roll < 0.39:
            await venue.disconnect()
        elif roll < 0.41:
            await venue.connect()
        step = rng.choice([0.0, 0.001, 0.007, 0.05, 0.25, 0.25, 1.0, 3.3])
        if rng.random() < 0.002:
            step = 75.0  # longer than the catch-up window: slots are skipped
        clock.advance(timedelta(seconds=step))
        venue.advance_to(clock.now())
    return venue, trader


CONFIGS = [
    # rate 100/s: a whole-microsecond period (the running timestamp), as in the bench
    SimVenueConfig(("S001", "S002", "S003", "S004", "S005"), quotes_per_second=20.0),
    # rate 21/s: 47619.05 µs, timestamps from float seconds
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


@pytest.mark.parametrize("config", CONFIGS)
async def test_venue_gives_what_the_plain_loop_gives(config: SimVenueConfig) -> None:
    fast, fast_trader = await _drive(SimVenue, config, seed=3, steps=1_500)
    plain, plain_trader = await _drive(_PlainVenue, config, seed=3, steps=1_500)
    assert fast_trader.events == plain_trader.events
    # Every field of every quote, including the timestamp's tzinfo and microseconds.
    assert [repr(e) for e in fast_trader.events] == [repr(e) for e in plain_trader.events]
    assert fast.quotes_published == plain.quotes_published
    assert fast.order_states() == plain.order_states()
    assert fast.executions() == plain.executions()
    assert fast.positions() == plain.positions()
    assert fast.account_values() == plain.account_values()
    kinds = {kind for kind, _ in fast_trader.events}
    assert kinds == {"quote", "status", "fill", "error", "connection"}  # all paths ran
    assert {u.status for u in fast_trader.statuses} >= {
        OrderStatus.SUBMITTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
    }


def _expected_states(trader: _Trader) -> dict[str, BrokerOrderState]:
    """What the venue should report of each order, from what it told its listener."""
    states = {}
    for order in trader.placed:
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
        )
    return states


@pytest.mark.parametrize("config", CONFIGS)
async def test_finished_orders_and_fills_are_remembered_exactly(config: SimVenueConfig) -> None:
    venue, trader = await _drive(SimVenue, config, seed=8, steps=1_500)
    states = venue.order_states()
    assert list(states) == [o.client_order_id for o in trader.placed]  # arrival order
    assert states == _expected_states(trader)
    assert venue.fills == trader.fills
    assert venue.executions() == trader.fills
    # Only working orders stay as objects; the matching lists hold nothing finished.
    assert set(venue._orders.live) == {cid for cid, s in states.items() if not s.status.is_terminal}
    for symbol in config.symbols:
        assert all(o.status.is_working for o in venue._working[symbol])
    # A reused id is refused whether the order is working or long finished.
    for order in trader.placed[:: max(1, len(trader.placed) // 10)]:
        with pytest.raises(ValueError, match="duplicate"):
            venue.place_order(order)


async def test_a_restarted_venue_remembers_everything_from_its_state_file(tmp_path: Path) -> None:
    config = SimVenueConfig(
        ("AAPL", "MSFT"), quotes_per_second=4.0, latency_ms=50.0, state_file=tmp_path / "s.jsonl"
    )
    first, trader = await _drive(SimVenue, config, seed=5, steps=800)
    first.close()
    clock = SimClock(T0)
    second = SimVenue(config, clock)
    assert second.order_states() == first.order_states()
    assert second.fills == first.fills
    assert [repr(f) for f in second.fills] == [repr(f) for f in trader.fills]
    assert second.positions() == first.positions()
    assert second._orders.live.keys() == first._orders.live.keys()
    for symbol in config.symbols:
        assert second._working[symbol] == first._working[symbol]
    second.close()


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
