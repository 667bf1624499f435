import math
from datetime import UTC, datetime, timedelta

from core.bus import EventBus
from core.clock import SimClock
from core.events import QuoteReceived, QuoteRejected
from core.marketdata import JUMP_CONFIRMATIONS, MarketDataFeed
from core.model import Quote

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def make_feed() -> tuple[MarketDataFeed, list[object], SimClock]:
    bus = EventBus()
    seen: list[object] = []
    bus.subscribe_all(seen.append)
    clock = SimClock(T0)
    feed = MarketDataFeed(bus, clock, ("AAPL",), max_jump_pct=10, stale_after_seconds=5)
    return feed, seen, clock


def q(
    bid: float, ask: float, ts: datetime = T0, symbol: str = "AAPL", last: float | None = None
) -> Quote:
    return Quote(symbol, ts, bid, ask, 100, 100, last)


def test_good_quote_is_published_and_cached() -> None:
    feed, seen, _ = make_feed()
    assert feed.on_raw_quote(q(100.0, 100.1))
    assert isinstance(seen[0], QuoteReceived)
    assert feed.latest("AAPL") == q(100.0, 100.1)


def test_malformed_quotes_are_dropped_counted_and_never_published() -> None:
    feed, seen, _ = make_feed()
    feed.on_raw_quote(q(100.0, 100.1))
    bad = [
        q(math.nan, 100.1),
        q(100.0, math.inf),
        q(-1.0, 100.1),
        q(0.0, 100.1),
        q(100.2, 100.1),  # crossed
        q(150.0, 150.1),  # +50% jump
        q(100.0, 100.1, last=math.nan),
        q(100.0, 100.1, symbol="ZZZZ"),
    ]
    for quote in bad:
        assert not feed.on_raw_quote(quote)
    received = [e for e in seen if isinstance(e, QuoteReceived)]
    rejected = [e for e in seen if isinstance(e, QuoteRejected)]
    assert len(received) == 1
    assert len(rejected) == len(bad)
    assert feed.rejected["AAPL"] == len(bad) - 1
    assert feed.latest("AAPL") == q(100.0, 100.1)


def test_consistent_jumps_reanchor_the_level() -> None:
    feed, _, _ = make_feed()
    feed.on_raw_quote(q(100.0, 100.1))
    results = [
        feed.on_raw_quote(q(130.0 + i * 0.01, 130.1 + i * 0.01)) for i in range(JUMP_CONFIRMATIONS)
    ]
    assert results == [False] * (JUMP_CONFIRMATIONS - 1) + [True]
    latest = feed.latest("AAPL")
    assert latest is not None and latest.bid > 129
    assert feed.accepted == {"AAPL": 2}
    assert feed.rejected == {"AAPL": JUMP_CONFIRMATIONS - 1}


def test_a_good_quote_between_jumps_restarts_the_confirmation_count() -> None:
    feed, _, _ = make_feed()
    feed.on_raw_quote(q(100.0, 100.1))
    jump = q(130.0, 130.1)
    assert not feed.on_raw_quote(jump)
    assert feed.on_raw_quote(q(100.0, 100.1))  # back at the level: the jump was noise
    assert [feed.on_raw_quote(jump) for _ in range(JUMP_CONFIRMATIONS)] == [False] * (
        JUMP_CONFIRMATIONS - 1
    ) + [True]
    assert feed.accepted == {"AAPL": 3}


def test_staleness_follows_the_clock() -> None:
    feed, _, clock = make_feed()
    assert feed.is_stale("AAPL")  # never quoted
    feed.on_raw_quote(q(100.0, 100.1, ts=clock.now()))
    assert not feed.is_stale("AAPL")
    clock.advance(timedelta(seconds=5.5))
    assert feed.is_stale("AAPL")
    assert feed.stale_symbols() == ["AAPL"]
