from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from core.bus import EventBus
from core.clock import SimClock
from core.events import IntentClamped, RiskRejected
from core.marketdata import MarketDataFeed
from core.model import Fill, OrderIntent, OrderType, Quote, Side
from core.portfolio import Portfolio
from core.risk import RiskLimits, RiskManager

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
LIMITS = RiskLimits(
    max_position_size=10_000,
    max_leverage=2.0,
    daily_loss_limit=1_000,
    max_order_notional=6_000,
    max_orders_per_minute=3,
    price_collar_pct=5,
    drawdown_alert_pct=2,
)


@dataclass
class Rig:
    risk: RiskManager
    portfolio: Portfolio
    feed: MarketDataFeed
    clock: SimClock
    bus: EventBus
    events: list[object] = field(default_factory=list)
    connected: bool = True

    def quote(self, symbol: str, bid: float, ask: float) -> None:
        self.feed.on_raw_quote(Quote(symbol, self.clock.now(), bid, ask, 500, 500))
        self.portfolio.mark(symbol, (bid + ask) / 2)

    def hold(self, symbol: str, qty: int, price: float) -> None:
        side = Side.BUY if qty > 0 else Side.SELL
        self.portfolio.apply_fill(
            Fill(f"x{symbol}{qty}", "c", symbol, side, abs(qty), price, 0, T0)
        )


def make(limits: RiskLimits = LIMITS, cash: float = 50_000) -> Rig:
    bus, clock = EventBus(), SimClock(T0)
    portfolio = Portfolio(cash)
    feed = MarketDataFeed(bus, clock, ("AAPL", "MSFT"), max_jump_pct=50, stale_after_seconds=5)
    holder: dict[str, Rig] = {}
    risk = RiskManager(limits, bus, clock, portfolio, feed, lambda: holder["rig"].connected)
    rig = Rig(risk, portfolio, feed, clock, bus)
    holder["rig"] = rig
    bus.subscribe_all(rig.events.append)
    rig.quote("AAPL", 99.99, 100.01)
    rig.quote("MSFT", 49.99, 50.01)
    return rig


def buy(qty: int, symbol: str = "AAPL", **kw: object) -> OrderIntent:
    return OrderIntent(symbol, Side.BUY, qty, **kw)  # type: ignore[arg-type]


def test_order_notional_clamps_with_reason() -> None:
    rig = make()
    approved = rig.risk.review(buy(100), 0)  # $10k > $6k per order
    assert approved == 59  # floor(6000 / 100.01)
    (event,) = [e for e in rig.events if isinstance(e, IntentClamped)]
    assert "MAX_ORDER_NOTIONAL" in event.reason and event.approved_quantity == 59


def test_position_limit_is_judged_after_the_order() -> None:
    rig = make()
    rig.hold("AAPL", 90, 100.0)
    approved = rig.risk.review(buy(50), 90)
    assert approved == 99 - 90  # floor(10000 / 100.01) = 99 shares max
    assert any(isinstance(e, IntentClamped) and "MAX_POSITION_SIZE" in e.reason for e in rig.events)


def test_nothing_fits_is_a_reject() -> None:
    rig = make()
    rig.hold("AAPL", 99, 100.0)
    assert rig.risk.review(buy(10), 99) == 0
    assert isinstance(rig.events[-1], RiskRejected)


def test_leverage_counts_other_positions() -> None:
    rig = make(cash=5_000)
    rig.hold("MSFT", 100, 50.0)  # $5k gross of a 2 x $5k budget
    approved = rig.risk.review(buy(100), 0)
    assert approved == int((2 * rig.portfolio.equity - 100 * 50.0) // 100.01) == 49
    assert any("MAX_LEVERAGE" in getattr(e, "reason", "") for e in rig.events)


def test_reduce_only_passes_every_state_and_flip_keeps_only_reduce_part() -> None:
    rig = make()
    rig.hold("AAPL", 40, 100.0)
    rig.risk.halt("test")
    sell = OrderIntent("AAPL", Side.SELL, 40)
    assert rig.risk.review(sell, 40) == 40
    flip = OrderIntent("AAPL", Side.SELL, 70)
    assert rig.risk.review(flip, 40) == 40  # the 30 that would open a short are refused
    assert rig.risk.review(buy(1), 40) == 0
    assert "HALTED" in rig.events[-1].reason  # type: ignore[attr-defined]


def test_stale_data_and_disconnect_block_new_risk() -> None:
    rig = make()
    rig.clock.advance(timedelta(seconds=6))
    assert rig.risk.review(buy(1), 0) == 0
    assert "stale" in rig.events[-1].reason  # type: ignore[attr-defined]
    rig.quote("AAPL", 99.99, 100.01)
    rig.connected = False
    assert rig.risk.review(buy(1), 0) == 0
    assert "disconnected" in rig.events[-1].reason  # type: ignore[attr-defined]


def test_order_rate_limit_rolls_over_a_minute() -> None:
    rig = make()
    assert [rig.risk.review(buy(1), i) for i in range(3)] == [1, 1, 1]
    assert rig.risk.review(buy(1), 3) == 0
    assert "MAX_ORDERS_PER_MINUTE" in rig.events[-1].reason  # type: ignore[attr-defined]
    rig.clock.advance(timedelta(seconds=60))
    rig.quote("AAPL", 99.99, 100.01)
    assert rig.risk.review(buy(1), 3) == 1


def test_price_collar_rejects_far_limits() -> None:
    rig = make()
    far = buy(1, order_type=OrderType.LIMIT, limit_price=90.0)
    assert rig.risk.review(far, 0) == 0
    assert "PRICE_COLLAR_PCT" in rig.events[-1].reason  # type: ignore[attr-defined]
    near = buy(1, order_type=OrderType.LIMIT, limit_price=99.5)
    assert rig.risk.review(near, 0) == 1


def test_zero_quantity_is_rejected() -> None:
    rig = make()
    assert rig.risk.review(buy(0), 0) == 0


def test_a_buy_stop_is_judged_at_its_stop_price_when_that_is_dearer() -> None:
    rig = make()
    # A breakout buy stop at 120 with the market at 100: $6k per order buys 50, not 59.
    stop = buy(100, order_type=OrderType.STOP, stop_price=120.0)
    assert rig.risk.review(stop, 0) == 50  # floor(6000 / 120)
    # Below the market the ask is the worse price.
    assert rig.risk.review(buy(100, order_type=OrderType.STOP, stop_price=90.0), 0) == 59
    assert rig.risk.review(buy(10, order_type=OrderType.STOP), 0) == 0  # no stop price
    assert "stop price" in rig.events[-1].reason  # type: ignore[attr-defined]


def test_a_stop_limit_is_collared_around_its_stop_and_a_protective_stop_passes_halted() -> None:
    rig = make()
    # 110 / 112 is 1.8% from its stop, though 12% from today's mid: allowed, at 112.
    far = buy(100, order_type=OrderType.STOP_LIMIT, stop_price=110.0, limit_price=112.0)
    assert rig.risk.review(far, 0) == 53  # floor(6000 / 112)
    wild = buy(100, order_type=OrderType.STOP_LIMIT, stop_price=110.0, limit_price=130.0)
    assert rig.risk.review(wild, 0) == 0
    assert "from stop 110" in rig.events[-1].reason  # type: ignore[attr-defined]
    rig.hold("AAPL", 40, 100.0)
    rig.risk.halt("test")
    protective = OrderIntent("AAPL", Side.SELL, 40, OrderType.STOP, stop_price=95.0)
    assert rig.risk.review(protective, 40) == 40  # only closes: allowed while halted
