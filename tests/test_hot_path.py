"""The quote path's shortcuts give exactly what the plain code they replace gives.

Each optimisation in the per-quote path (sim venue draws, feed validation, bus
dispatch, bars, breaker checks, recorder rows) is checked here against the
straightforward version: the library calls, the full validation, `quote_row`.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.bars import BarBuilder
from core.brokers.sim import TICK
from core.brokers.sim_book import WALK_BLOCK, Book
from core.bus import EventBus
from core.clock import SimClock
from core.events import IntentClamped, QuoteReceived, QuoteRejected, RiskRejected
from core.marketdata import MarketDataFeed
from core.model import Bar, Fill, OrderIntent, OrderType, Quote, QuoteSource, Side, mid_of
from core.portfolio import PnlSummary, Portfolio
from core.risk import RiskLimits, RiskManager
from storage.database import Database
from storage.recorder import Recorder
from storage.rows import quote_row

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


# ------------------------------------------------------------------ sim venue


def _reference_redraw(book: Book) -> None:
    """The venue's book redraw with round() for the cent grid (recentre divides instead)."""
    rng = book.walk
    book.half_spread = book.walk_mid * rng.uniform(1.0, 5.0) / 10_000.0 / 2.0
    book.bid_size = rng.randint(1, 10) * 100
    book.ask_size = rng.randint(1, 10) * 100
    centre = round(book.walk_mid / (TICK / 2))
    half = max(1, round(book.half_spread / (TICK / 2)))
    if (centre - half) % 2:
        half += 1
    centre = max(centre, half + 2)
    book.bid = round((centre - half) * TICK / 2, 2)
    book.ask = round((centre + half) * TICK / 2, 2)


def test_book_redraw_and_recentre_give_what_the_plain_rounding_gives() -> None:
    prices = random.Random(3)
    for seed in range(200):
        fast = Book("X", random.Random(seed), random.Random(0), 0.0, 0.0)
        slow = Book("X", random.Random(seed), random.Random(0), 0.0, 0.0)
        for _ in range(50):
            mid = prices.choice([0.01, 0.02, 0.5, 3.3, 20.0, 123.456, 499.99, 5_000.0])
            mid *= prices.uniform(0.9, 1.1)
            fast.walk_mid = slow.walk_mid = mid
            fast.redraw()
            _reference_redraw(slow)
            assert (fast.bid, fast.ask, fast.bid_size, fast.ask_size, fast.half_spread) == (
                slow.bid,
                slow.ask,
                slow.bid_size,
                slow.ask_size,
                slow.half_spread,
            )
        assert fast.walk.getstate() == slow.walk.getstate()


def _reference_steps(seed: int, mid: float, sigma: float, n: int) -> list[tuple[Any, ...]]:
    """Book.step's first ``n`` quotes, one at a time with the plain formulas, from the same
    NumPy draws (the block draws normals, uniforms, bid sizes, ask sizes, in that order)."""
    draws = np.random.default_rng(random.Random(seed).getrandbits(128))
    steps = np.exp(draws.standard_normal(n) * sigma).tolist()
    uniforms = draws.random(n).tolist()
    bid_sizes = (draws.integers(1, 11, n) * 100).tolist()
    ask_sizes = (draws.integers(1, 11, n) * 100).tolist()
    out = []
    for k in range(n):
        mid *= steps[k]
        half_spread = mid * (1.0 + 4.0 * uniforms[k]) / 10_000.0 / 2.0
        centre = round(mid / (TICK / 2))
        half = max(1, round(half_spread / (TICK / 2)))
        if (centre - half) % 2:
            half += 1
        centre = max(centre, half + 2)
        bid = round((centre - half) * TICK / 2, 2)
        ask = round((centre + half) * TICK / 2, 2)
        out.append((mid, half_spread, bid, ask, bid_sizes[k], ask_sizes[k]))
    return out


def test_book_step_draws_a_block_that_matches_the_plain_formulas() -> None:
    prices = random.Random(4)
    n = WALK_BLOCK + 37  # across a block boundary: the walk continues where it was
    for seed in range(40):
        sigma = prices.choice([0.0, 1e-6, 0.0005, 0.01, 0.3])
        mid = prices.choice([0.004, 0.02, 3.3, 123.456, 5_000.0])
        book = Book("X", random.Random(seed), random.Random(0), mid, 0.0)
        expected = _reference_steps(seed, mid, sigma, WALK_BLOCK)
        got = []
        for i in range(n):
            ts = T0 + timedelta(microseconds=i)
            quote = book.step(sigma, ts)
            assert quote == Quote("X", ts, book.bid, book.ask, book.bid_size, book.ask_size)
            assert quote.source is QuoteSource.SIM and quote.last is None
            got.append(
                (book.walk_mid, book.half_spread, book.bid, book.ask, book.bid_size, book.ask_size)
            )
        assert got[:WALK_BLOCK] == expected
        assert got[WALK_BLOCK][0] != got[WALK_BLOCK - 1][0] or sigma == 0.0


def test_book_step_continues_from_a_price_set_from_outside() -> None:
    # A shock or a restart sets walk_mid: the next quote must move from there, not from
    # where the drawn block had got to.
    book = Book("X", random.Random(1), random.Random(0), 100.0, 0.0)
    for i in range(10):
        book.step(0.0005, T0 + timedelta(microseconds=i))
    book.walk_mid = 50.0
    book.step(0.0005, T0 + timedelta(seconds=1))
    assert abs(book.walk_mid / 50.0 - 1.0) < 0.01
    assert 49.0 < book.bid < book.ask < 51.0


# ------------------------------------------------------------------ feed


class _ReferenceFeed(MarketDataFeed):
    """The validation as it reads in `_invalid_reason`, with no fast path, and the
    acceptance written plainly (the cache, the count, the event)."""

    def on_raw_quote(self, quote: Quote) -> bool:
        reason = self._invalid_reason(quote)
        if reason is not None:
            self._reject(quote.symbol, reason)
            return False
        state = self._state[quote.symbol]
        state.last, state.last_mid = quote, quote.mid
        state.accepted += 1
        self._bus.publish(QuoteReceived(quote))
        return True


def test_feed_fast_path_accepts_and_rejects_exactly_like_full_validation() -> None:
    rng = random.Random(11)
    fast_seen: list[object] = []
    slow_seen: list[object] = []
    feeds = []
    for cls, seen in ((MarketDataFeed, fast_seen), (_ReferenceFeed, slow_seen)):
        bus = EventBus()
        bus.subscribe_all(seen.append)
        feeds.append(cls(bus, SimClock(T0), ("A", "B"), max_jump_pct=5, stale_after_seconds=10))
    fast, slow = feeds
    specials = [math.nan, math.inf, -math.inf, 0.0, -1.0]
    mid = 100.0
    for i in range(20_000):
        mid *= math.exp(rng.gauss(0, 0.02))  # sometimes jumps beyond 5%
        if rng.random() < 0.003:
            mid *= rng.choice([0.8, 1.25])  # a gap that holds: confirmed, then re-anchored
        bid, ask = mid - 0.01, mid + 0.01
        roll = rng.random()
        if roll < 0.02:
            bid = rng.choice(specials)
        elif roll < 0.04:
            ask = rng.choice(specials)
        elif roll < 0.05:
            bid, ask = ask, bid  # crossed
        elif roll < 0.06:
            bid = ask  # locked: allowed
        last = None if rng.random() < 0.7 else rng.choice([mid, *specials])
        sizes = (-1, 100) if rng.random() < 0.01 else (100, 200)
        symbol = rng.choice(["A", "B", "B", "ZZZ"])
        quote = Quote(symbol, T0 + timedelta(seconds=i), bid, ask, *sizes, last)
        assert fast.on_raw_quote(quote) == slow.on_raw_quote(quote), quote
        assert fast.latest(quote.symbol) == slow.latest(quote.symbol)
    assert fast.accepted == slow.accepted and fast.rejected == slow.rejected
    assert [type(e) for e in fast_seen] == [type(e) for e in slow_seen]
    assert [e.reason for e in fast_seen if isinstance(e, QuoteRejected)] == [
        e.reason for e in slow_seen if isinstance(e, QuoteRejected)
    ]
    assert fast.accepted and fast.rejected  # both paths were exercised
    reasons = [e.reason for e in fast_seen if isinstance(e, QuoteRejected)]
    assert sum(r.startswith("jump") for r in reasons) > 50


def test_written_out_mids_are_mid_of() -> None:
    # The feed's fast path, the bar builder and the sim book compute a quote's mid
    # without a call; each must give mid_of's very float (exact by design: the same
    # expression), or a jump limit, a bar's high or a mark could differ by an ulp.
    rng = random.Random(23)
    feed = MarketDataFeed(
        EventBus(), SimClock(T0), ("A",), max_jump_pct=math.inf, stale_after_seconds=5
    )
    bars: list[Bar] = []
    builder = BarBuilder(1, bars.append)  # two quotes a bar: opened, then updated
    book = Book("A", random.Random(0), random.Random(0), 100.0, 0.0)
    quotes = []
    for i in range(5_000):
        bid = rng.choice([0.01, 0.03, 1.0, 99.99, 123.456, 1e-300, 1e300]) * rng.uniform(0.5, 2)
        ask = bid + rng.choice([0.0, 1e-12, 0.01, 0.07, bid])
        quote = Quote("A", T0 + timedelta(milliseconds=500 * i), bid, ask, 100, 100)
        quotes.append(quote)
        assert quote.mid == mid_of(bid, ask)
        assert feed.on_raw_quote(quote)
        assert feed._state["A"].last_mid == mid_of(bid, ask)  # what the next jump check uses
        builder.on_quote(quote)
        book.bid, book.ask = bid, ask
        assert book.mark == mid_of(bid, ask)
    builder.close_due(T0 + timedelta(hours=2))
    mids = [mid_of(q.bid, q.ask) for q in quotes]
    assert [b.open for b in bars] == mids[0::2]  # a bar's first quote
    assert [b.close for b in bars] == mids[1::2]  # the open bar's shortcut
    assert [(b.high, b.low) for b in bars] == [
        (max(pair), min(pair)) for pair in zip(mids[0::2], mids[1::2], strict=True)
    ]


# ------------------------------------------------------------------ bus


def test_bus_runs_typed_handlers_then_catch_alls_and_snapshots_per_publish() -> None:
    bus = EventBus()
    calls: list[str] = []
    bus.subscribe_all(lambda e: calls.append("all"))
    unsubscribe_typed = bus.subscribe(int, lambda e: calls.append("typed"))

    def late(e: object) -> None:
        calls.append("late")

    def subscribe_during_publish(e: object) -> None:
        calls.append("adder")
        bus.subscribe(int, late)

    unsubscribe_adder = bus.subscribe(int, subscribe_during_publish)
    bus.publish(1)
    assert calls == ["typed", "adder", "all"]  # `late` joined after this event's dispatch
    calls.clear()
    unsubscribe_adder()
    bus.publish(2)
    assert calls == ["typed", "late", "all"]
    calls.clear()
    unsubscribe_typed()
    bus.publish(3)
    bus.publish("other type")
    assert calls == ["late", "all", "all"]


def test_a_catch_all_can_leave_out_types() -> None:
    bus = EventBus()
    seen: list[object] = []
    unsubscribe = bus.subscribe_all(seen.append, except_types=(int,))
    bus.publish(1)
    bus.publish("text")
    bus.publish(2.5)
    assert seen == ["text", 2.5]
    unsubscribe()
    bus.publish("more")
    assert seen == ["text", 2.5]


# ------------------------------------------------------------------ bars


def test_bars_match_bucket_arithmetic_for_unordered_and_other_timezone_quotes() -> None:
    interval = 7
    got: list[Bar] = []
    builder = BarBuilder(interval, got.append)
    expected: list[tuple[datetime, float]] = []
    open_start: datetime | None = None
    rng = random.Random(5)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    tz = timezone(timedelta(hours=-5))
    ts = T0
    for _ in range(5_000):
        ts += timedelta(milliseconds=rng.choice([1, 250, 900, 3_000, -4_000]))
        when = ts.astimezone(tz) if rng.random() < 0.3 else ts
        start = when - (when - epoch) % timedelta(seconds=interval)
        if open_start is not None and start != open_start:
            expected.append((open_start, 0.0))
        open_start = start
        builder.on_quote(Quote("A", when, 10.0, 10.02))
    assert [b.start for b in got] == [s for s, _ in expected]
    assert all(b.end - b.start == timedelta(seconds=interval) for b in got)


# ------------------------------------------------------------------ portfolio


def test_mark_reports_whether_equity_can_have_moved() -> None:
    p = Portfolio(10_000.0)
    assert not p.mark("AAPL", 10.0)  # no position yet
    p.apply_fill(Fill("E1", "C1", "AAPL", Side.BUY, 100, 10.0, 1.0, T0))
    equity = p.equity
    assert p.mark("AAPL", 11.0) and p.equity == equity + 100.0
    assert p.daily_pnl == p.equity - 10_000.0
    p.apply_fill(Fill("E2", "C2", "AAPL", Side.SELL, 100, 11.0, 1.0, T0))
    assert not p.mark("AAPL", 12.0)  # flat again: equity cannot move
    peak = 10_000.0 + 100.0 - 1.0
    assert p.drawdown_pct == (peak - p.equity) / peak * 100.0  # the second commission
    p.apply_fill(Fill("E3", "C3", "AAPL", Side.BUY, 10, 12.0, 0.0, T0))
    assert p.mark("AAPL", 2_000.0) and p.drawdown_pct == 0.0  # a new peak


# ------------------------------------------------------------------ recorder


def _reference_quote_row(q: Quote) -> tuple[Any, ...]:
    """A quote's row the plain way: attribute reads, isoformat() in UTC, str(source)."""
    ts = q.ts if q.ts.tzinfo is not None else q.ts.replace(tzinfo=UTC)  # naive is UTC
    text = ts.astimezone(UTC).isoformat(timespec="microseconds")
    return (q.symbol, text, q.bid, q.ask, q.bid_size, q.ask_size, q.last, str(q.source))


async def test_recorder_quote_rows_are_the_plain_rows_of_the_quotes(tmp_path: Path) -> None:
    # The recorder's quote handler (storage.event_rows) writes quote_row and
    # PendingRows.add out; quote_row looks its source text up: quote_row gives the plain
    # rows, and the handler's rows that reach the database are those too.
    import sqlite3

    quotes = []
    ts = T0 - timedelta(microseconds=3)
    for i in range(3_000):
        ts += timedelta(microseconds=[1, 999_999, 123_457, 1_000_000, 1_000][i % 5])
        quotes.append(Quote("A", ts, 1.0 + i / 1e4, 1.01, 100, 200, None, QuoteSource.SIM))
    quotes.append(Quote("B", ts.astimezone(timezone(timedelta(hours=2))), 2.0, 2.5, 1, 2))
    quotes.append(Quote("C", ts.replace(tzinfo=None), 2.0, 2.5, 1, 2, 2.2, QuoteSource.POLL))
    quotes.append(Quote("D", ts, 3.0, 3.5, 1, 2, None, QuoteSource.REPLAY))
    quotes.append(Quote("E", ts, 3.0, 3.5, 0, 0, 3.25, QuoteSource.STREAM))
    expected = [_reference_quote_row(q) for q in quotes]
    assert [quote_row(q) for q in quotes] == expected
    db = await Database.open(tmp_path / "t.db")
    try:
        bus = EventBus()
        recorder = Recorder(db, bus, flush_rows=1_000_000)
        for q in quotes:
            bus.publish(QuoteReceived(q))
        assert recorder.pending_rows == len(quotes)
        await recorder.stop()
    finally:
        await db.close()
    conn = sqlite3.connect(tmp_path / "t.db")
    try:
        columns = "symbol, ts, bid, ask, bid_size, ask_size, last, source"
        stored = conn.execute(f"SELECT {columns} FROM quotes ORDER BY rowid").fetchall()
    finally:
        conn.close()
    assert stored == expected


# ------------------------------------------------------------------ portfolio (written out)


class _ReferencePortfolio(Portfolio):
    """`mark` and `gross_exposure` as they read before they were written out."""

    def mark(self, symbol: str, price: float) -> bool:
        pos = self.positions.get(symbol)
        if pos is None:
            return False
        previous = pos.mark_price
        pos.mark_price = price
        if not pos.quantity:
            return False
        self._marks_since_recompute += 1
        if self._marks_since_recompute >= 10_000 or math.isnan(previous):
            self._recompute_market_value()
        else:
            self._market_value += pos.quantity * (price - previous)
        self._update_peak()
        return True

    def _recompute_market_value(self) -> None:
        self._market_value = sum(p.market_value for p in self.positions.values())
        self._marks_since_recompute = 0

    @property
    def gross_exposure(self) -> float:
        return sum(abs(p.market_value) for p in self.positions.values())


def _same_summary(a: PnlSummary, b: PnlSummary) -> bool:
    return asdict(a) == pytest.approx(asdict(b), rel=1e-12, abs=1e-9)


def test_mark_and_gross_exposure_match_the_plain_code() -> None:
    # Not bit for bit: the plain code sums with sum(), which from Python 3.12 on is a
    # compensated sum, while the portfolio adds term by term; either is within a few
    # ulps of the exact total, so a tight relative tolerance (plus a nano-dollar for
    # totals near zero) says "the same figure" on every Python.
    rng = random.Random(13)
    fast, slow = Portfolio(50_000.0), _ReferencePortfolio(50_000.0)
    assert fast.gross_exposure == slow.gross_exposure and type(fast.gross_exposure) is int
    prices = {"A": 20.0, "B": 300.0, "C": 0.5}
    for i in range(30_000):  # crosses the every-10,000-marks recompute
        symbol = rng.choice("ABC")
        if rng.random() < 0.01:
            side = rng.choice([Side.BUY, Side.SELL])
            fill = Fill(f"E{i}", f"C{i}", symbol, side, rng.randint(1, 50), prices[symbol], 1.0, T0)
            fast.apply_fill(fill)
            slow.apply_fill(fill)
        prices[symbol] *= math.exp(rng.gauss(0, 0.01))
        assert fast.mark(symbol, prices[symbol]) == slow.mark(symbol, prices[symbol])
        assert fast.gross_exposure == pytest.approx(slow.gross_exposure, rel=1e-12, abs=1e-9)
        assert fast.market_value == pytest.approx(slow.market_value, rel=1e-12, abs=1e-9)
        if i % 97 == 0:
            assert _same_summary(fast.summary(), slow.summary())
    assert _same_summary(fast.summary(), slow.summary())
    assert fast.summary().max_drawdown_pct > 0  # peaks and drawdowns were exercised


# ------------------------------------------------------------------ risk


def _reference_review(risk: RiskManager, intent: OrderIntent, position: int) -> tuple[int, str]:
    """The pre-trade decision as `RiskManager.review` made it when every limit's text was
    built up front: (approved quantity, binding reason), without side effects."""
    sign = intent.side.sign
    reduce_part = min(intent.quantity, abs(position)) if position * sign < 0 else 0
    if reduce_part == intent.quantity:
        return intent.quantity, ""
    blocked = risk._blocked_reason(intent.symbol)
    caps: list[tuple[int, str]] = []
    if blocked:
        caps.append((0, blocked))
    else:
        quote = risk._feed.latest(intent.symbol)
        assert quote is not None
        price = quote.ask if intent.side is Side.BUY else quote.bid
        lim = risk.limits
        if intent.order_type is OrderType.LIMIT:
            if intent.limit_price is None or intent.limit_price <= 0:
                caps = [(0, "limit order without a positive limit price")]
            else:
                off = abs(intent.limit_price - quote.mid) / quote.mid * 100.0
                if off > lim.price_collar_pct:
                    caps = [
                        (
                            0,
                            f"PRICE_COLLAR_PCT: limit {intent.limit_price:.4f} is {off:.2f}% "
                            f"from mid {quote.mid:.4f} (max {lim.price_collar_pct}%)",
                        )
                    ]
                elif sign > 0:
                    price = max(price, intent.limit_price)
                else:
                    price = min(price, intent.limit_price)
        if not caps:
            portfolio = risk._portfolio
            max_shares = math.floor(lim.max_position_size / price)
            caps.append(
                (
                    max_shares - sign * position,
                    f"MAX_POSITION_SIZE ${lim.max_position_size:,.0f} "
                    f"({max_shares} sh at {price:.2f})",
                )
            )
            caps.append(
                (
                    math.floor(lim.max_order_notional / price),
                    f"MAX_ORDER_NOTIONAL ${lim.max_order_notional:,.0f}",
                )
            )
            equity = portfolio.equity
            held = portfolio.positions.get(intent.symbol)
            own_gross = abs(held.market_value) if held else 0.0
            room = lim.max_leverage * equity - (portfolio.gross_exposure - own_gross)
            max_abs_after = math.floor(room / price) if equity > 0 else 0
            caps.append(
                (
                    max_abs_after - sign * position,
                    f"MAX_LEVERAGE {lim.max_leverage}x of equity ${equity:,.0f}",
                )
            )
    approved, binding = intent.quantity, ""
    for cap, reason in caps:
        if cap < approved:
            approved, binding = max(cap, 0), reason
    return max(approved, reduce_part), binding


def test_risk_review_decides_and_explains_exactly_like_the_plain_checks() -> None:
    rng = random.Random(17)
    outcomes: set[str] = set()
    for case in range(3_000):
        limits = RiskLimits(
            max_position_size=rng.choice([500.0, 5_000.0, 50_000.0]),
            max_leverage=rng.choice([0.5, 1.0, 4.0]),
            daily_loss_limit=1e9,
            max_order_notional=rng.choice([300.0, 3_000.0, 30_000.0]),
            max_orders_per_minute=10**9,
            price_collar_pct=rng.choice([1.0, 5.0]),
            drawdown_alert_pct=50.0,
        )
        bus, clock = EventBus(), SimClock(T0)
        portfolio = Portfolio(rng.choice([-1_000.0, 2_000.0, 20_000.0]))
        feed = MarketDataFeed(bus, clock, ("A", "B"), max_jump_pct=50, stale_after_seconds=5)
        risk = RiskManager(limits, bus, clock, portfolio, feed, lambda: True)
        events: list[object] = []
        bus.subscribe_all(events.append)
        for symbol, mid in (("A", rng.uniform(5, 200)), ("B", rng.uniform(5, 200))):
            feed.on_raw_quote(Quote(symbol, T0, mid - 0.01, mid + 0.01, 100, 100))
            held = rng.choice([0, 0, 7, -7, 40, -40, 300])
            if held:
                side = Side.BUY if held > 0 else Side.SELL
                portfolio.apply_fill(
                    Fill(f"{symbol}{case}", "c", symbol, side, abs(held), mid, 0, T0)
                )
                portfolio.mark(symbol, mid)
        if rng.random() < 0.05:
            risk.halt("test")
        symbol = rng.choice("AB")
        position = portfolio.quantity(symbol)
        mid = feed.latest(symbol).mid  # type: ignore[union-attr]
        order_type = rng.choice([OrderType.MARKET, OrderType.LIMIT])
        limit_price = None
        if order_type is OrderType.LIMIT:
            limit_price = rng.choice([None, -1.0, mid * 0.999, mid * 1.003, mid * 0.9, mid * 1.2])
        quantity = rng.choice([0, 1, 5, 40, 80, 500])
        intent = OrderIntent(
            symbol, rng.choice([Side.BUY, Side.SELL]), quantity, order_type, limit_price
        )
        if quantity <= 0:
            expected = (0, f"quantity must be positive, got {quantity}")
        else:
            expected = _reference_review(risk, intent, position)
        events.clear()
        approved = risk.review(intent, position)
        assert approved == expected[0], (case, intent, position)
        if approved == 0:
            (rejected,) = events
            assert isinstance(rejected, RiskRejected) and rejected.reason == expected[1]
            outcomes.add("rejected")
        elif approved < quantity:
            (clamped,) = events
            assert isinstance(clamped, IntentClamped)
            assert (clamped.approved_quantity, clamped.reason) == expected
            outcomes.add(clamped.reason.split(" ")[0])
        else:
            assert events == []
            outcomes.add("approved")
    assert {"rejected", "approved", "MAX_POSITION_SIZE", "MAX_ORDER_NOTIONAL"} <= outcomes
    assert "MAX_LEVERAGE" in outcomes
