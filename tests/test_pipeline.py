"""The quote path's shortcuts (core.pipeline) give what the plain code they stand for gives.

Each test runs two systems on the same seeded venue and clock: one as built, one made
to take the plain way (a strategy whose on_quote is called on every quote; the breaker
checked after every quote, not only when equity moved; targets handed over one by one
in a tuple instead of alone), and compares what they traded.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from loguru import logger

from core.events import BreakerTripped, FillReceived, OrderSubmitted, QuoteReceived
from core.model import Quote, TargetPosition, mid_of
from core.simulation import run_simulated
from core.strategy.base import Strategy, StrategyOutput
from core.strategy.every_quote import EveryQuote
from core.strategy.ma_cross import MovingAverageCross
from tests.helpers import SimRig, build_rig, settings


class CrossCalledOnEveryQuote(MovingAverageCross):
    """The example bar strategy with an on_quote of its own that does nothing: the
    pipeline must call it on every quote (the plain path)."""

    def on_quote(self, quote: Quote) -> StrategyOutput:
        return super().on_quote(quote)


class EveryQuoteInTuples(EveryQuote):
    """EveryQuote handing its target over inside a tuple (the general output path)."""

    def on_quote(self, quote: Quote) -> StrategyOutput:
        target = super().on_quote(quote)
        return None if target is None else (target,)


class HoldAapl(Strategy):
    """Holds 200 AAPL from its first quote on."""

    def on_quote(self, quote: Quote) -> StrategyOutput:
        return TargetPosition("AAPL", 200, "hold") if quote.symbol == "AAPL" else None


def trades(rig: SimRig) -> list[tuple[Any, ...]]:
    orders = [
        ("order", e.order.symbol, str(e.order.side), e.order.quantity, e.ts)
        for e in rig.of(OrderSubmitted)
    ]
    fills = [
        ("fill", e.fill.symbol, str(e.fill.side), e.fill.quantity, e.fill.price, e.fill.ts)
        for e in rig.of(FillReceived)
    ]
    return orders + fills


async def run(tmp_path: Path, minutes: float, **overrides: Any) -> SimRig:
    s = settings(tmp_path, **overrides)
    rig = build_rig(s)
    await rig.system.start(drive_broker=False)
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(minutes=minutes))
    await rig.system.stop("end of test")
    return rig


def test_only_strategies_that_override_on_quote_are_called_per_quote() -> None:
    assert not MovingAverageCross.handles_quotes
    assert not Strategy.handles_quotes
    assert CrossCalledOnEveryQuote.handles_quotes
    assert EveryQuote.handles_quotes


async def test_skipping_a_bar_strategys_on_quote_trades_the_same(tmp_path: Path) -> None:
    common: dict[str, Any] = {
        "bar_seconds": 5,
        "strategy_params": '{"fast": 3, "slow": 8}',
        "max_position_size": 20_000,
        "max_order_notional": 20_000,
    }
    fast = await run(
        tmp_path / "a", 20, strategy="core.strategy.ma_cross:MovingAverageCross", **common
    )
    plain = await run(
        tmp_path / "b", 20, strategy="tests.test_pipeline:CrossCalledOnEveryQuote", **common
    )
    assert len(fast.of(OrderSubmitted)) >= 4  # the comparison is about real trading
    assert trades(fast) == trades(plain)
    assert fast.system.portfolio.equity == plain.system.portfolio.equity


async def test_a_target_alone_and_a_target_in_a_tuple_trade_the_same(tmp_path: Path) -> None:
    fast = await run(tmp_path / "a", 1, strategy="core.strategy.every_quote:EveryQuote")
    plain = await run(tmp_path / "b", 1, strategy="tests.test_pipeline:EveryQuoteInTuples")
    assert len(fast.of(OrderSubmitted)) >= 20
    assert trades(fast) == trades(plain)


async def test_checking_the_breaker_only_when_equity_moved_trips_as_checking_always(
    tmp_path: Path,
) -> None:
    overrides: dict[str, Any] = {
        "strategy": "tests.test_pipeline:HoldAapl",
        "daily_loss_limit": 500,
        "max_position_size": 50_000,
        "max_order_notional": 50_000,
        "max_quote_jump_pct": 20,
        "sim_quotes_per_second": 100,  # many quotes a step: the crossing one is not the last
    }

    async def trip(rig: SimRig) -> None:
        await rig.system.start(drive_broker=False)
        await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=30))
        assert rig.system.portfolio.quantity("AAPL") == 200
        rig.venue.shock("AAPL", -5)  # ~-$1,000 on the position: past the limit
        await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=10))
        await rig.system.stop("end of test")

    fast = build_rig(settings(tmp_path / "a", **overrides))
    await trip(fast)
    plain = build_rig(settings(tmp_path / "b", **overrides))
    # The plain rule: judge P&L after every accepted quote, whether equity moved or not.
    plain.bus.subscribe(QuoteReceived, lambda _: plain.system.breaker.check())
    await trip(plain)

    # The P&L in the trip's reason is that of the quote that crossed the limit: a check
    # that came later (the timer's, at the end of the step) would name another figure.
    tripped = [(e.reason, e.daily_pnl) for e in fast.of(BreakerTripped)]
    assert len(tripped) == 1
    assert tripped == [(e.reason, e.daily_pnl) for e in plain.of(BreakerTripped)]
    assert trades(fast) == trades(plain)


def test_the_pipeline_is_the_brokers_listener_and_the_strategys_context(tmp_path: Path) -> None:
    rig = build_rig(settings(tmp_path, max_quote_jump_pct=1000))
    pipeline = rig.system.pipeline
    assert rig.system.strategy.context is pipeline
    quote = Quote("AAPL", rig.clock.now(), 100.0, 100.02, 100, 100)
    pipeline.on_quote(quote)
    assert pipeline.latest_quote("AAPL") == quote
    assert pipeline.day_open_mids == {"AAPL": quote.mid}
    # The quote path writes Quote.mid out: it must give mid_of's very float (exact by
    # design, the same expression), or the day's change column could differ by an ulp.
    rng = random.Random(5)
    for _ in range(2_000):
        # within the feed's jump limit of the last quote, so every one is accepted
        bid = rng.choice([99.99, 100.0, 123.456, 101.0 / 3]) * rng.uniform(0.9, 1.1)
        ask = bid + rng.choice([0.0, 1e-12, 0.01, 0.07, bid / 10])
        pipeline.start_new_day()
        pipeline.on_quote(Quote("MSFT", rig.clock.now(), bid, ask, 100, 100))
        assert pipeline.day_open_mids == {"MSFT": mid_of(bid, ask)}


def test_the_brokers_all_is_well_notices_are_logged_at_info(tmp_path: Path) -> None:
    rig = build_rig(settings(tmp_path))
    levels: dict[int, str] = {}
    sink = logger.add(
        lambda m: levels.__setitem__(m.record["extra"]["code"], m.record["level"].name),
        filter=lambda r: r["message"].startswith("broker error"),
    )
    try:
        for code in (2104, 2106, 2158, 2103, 354):
            rig.system.pipeline.on_broker_error(code, f"message {code}", None)
    finally:
        logger.remove(sink)
    assert levels == {
        2104: "INFO",
        2106: "INFO",
        2158: "INFO",
        2103: "WARNING",
        354: "WARNING",
    }
