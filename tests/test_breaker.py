"""The circuit breaker: decision (daily loss, re-arm, drawdown alert) and consequence."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from core.breaker import CIRCUIT_BREAKER, CircuitBreaker
from core.events import BreakerReset, BreakerTripped, DrawdownExceeded
from core.model import TradingState
from tests.test_risk import LIMITS, Rig, make


@dataclass
class RecordingOrderFlow:
    """Stands in for the execution engine: records what the breaker asked of it, in order
    (the engine's own behaviour on those calls is tested in test_execution and, with a
    real engine under the breaker, in test_system_integration)."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def clear_targets(self) -> None:
        self.calls.append(("clear_targets", ""))

    def cancel_all(self, reason: str) -> int:
        self.calls.append(("cancel_all", reason))
        return 0

    def flatten(self, reason: str) -> list[str]:
        self.calls.append(("flatten", reason))
        return []


def breaker_for(rig: Rig) -> tuple[CircuitBreaker, RecordingOrderFlow]:
    orders = RecordingOrderFlow()
    breaker = CircuitBreaker(LIMITS, rig.bus, rig.clock, rig.portfolio, rig.risk, orders)
    return breaker, orders


def test_breaker_trips_on_daily_loss_and_only_operator_or_new_day_resets() -> None:
    rig = make()
    breaker, orders = breaker_for(rig)
    rig.hold("AAPL", 100, 100.0)
    rig.quote("AAPL", 90.99, 91.01)  # -$900: within the limit
    assert breaker.check() is False
    assert rig.risk.state is TradingState.ACTIVE and orders.calls == []
    rig.quote("AAPL", 89.99, 90.01)  # -$1,000
    assert breaker.check() is True
    assert rig.risk.state is TradingState.TRIPPED
    assert any(isinstance(e, BreakerTripped) for e in rig.events)
    # the consequence: nothing desired any more, nothing working, everything closed
    assert orders.calls == [
        ("clear_targets", ""),
        ("cancel_all", CIRCUIT_BREAKER),
        ("flatten", CIRCUIT_BREAKER),
    ]
    assert breaker.check() is False  # trips once
    assert len(orders.calls) == 3
    assert rig.risk.resume() is False  # resume does not clear a trip
    rig.risk.halt("later halt")
    assert rig.risk.state is TradingState.TRIPPED
    assert breaker.reset("operator") is True
    assert rig.risk.state is TradingState.ACTIVE
    assert any(isinstance(e, BreakerReset) for e in rig.events)
    assert breaker.reset("again") is False  # not tripped any more


def test_drawdown_alert_fires_once_per_excursion() -> None:
    rig = make(LIMITS, cash=10_000)
    breaker, orders = breaker_for(rig)
    rig.hold("AAPL", 50, 100.0)
    rig.quote("AAPL", 104.99, 105.01)  # peak 10_250
    breaker.check()
    rig.quote("AAPL", 99.99, 100.01)  # -2.4 %
    breaker.check()
    breaker.check()
    assert len([e for e in rig.events if isinstance(e, DrawdownExceeded)]) == 1
    dd = next(e for e in rig.events if isinstance(e, DrawdownExceeded))
    assert dd.drawdown_pct == pytest.approx((10_250 - 10_000) / 10_250 * 100, rel=1e-3)
    assert orders.calls == []  # an alert, not a trip


def test_reset_while_beyond_limit_rearms_at_that_loss() -> None:
    rig = make()
    breaker, _ = breaker_for(rig)
    rig.hold("AAPL", 100, 100.0)
    rig.quote("AAPL", 89.99, 90.01)  # -$1,000
    assert breaker.check()
    assert breaker.reset("operator looked")
    assert breaker.check() is False  # the same loss does not re-trip at once
    rig.quote("AAPL", 89.89, 89.91)  # a further -$10
    assert breaker.check() is True
    assert "further loss" in rig.risk.trip_reason


def test_a_new_day_forgets_the_rearm_point() -> None:
    rig = make()
    breaker, _ = breaker_for(rig)
    rig.hold("AAPL", 100, 100.0)
    rig.quote("AAPL", 89.99, 90.01)  # -$1,000
    assert breaker.check()
    assert breaker.reset("operator looked")
    rig.portfolio.start_new_day()
    breaker.start_new_day()
    rig.quote("AAPL", 89.89, 89.91)  # -$10 on the new day: far within the limit
    assert breaker.check() is False
    assert breaker.loss_limit_usage() == pytest.approx(10 / LIMITS.daily_loss_limit, rel=1e-6)
