"""IB historical-data pacing on an injected clock."""

from __future__ import annotations

import pytest

from core.brokers.ib_pacing import HistoricalPacer, PacingLimits
from core.clock import SimClock


def pacer_and_clock(**limits: float) -> tuple[HistoricalPacer, SimClock]:
    clock = SimClock()
    return HistoricalPacer(clock, PacingLimits(**limits)), clock  # type: ignore[arg-type]


def test_identical_request_waits_15_seconds() -> None:
    pacer, clock = pacer_and_clock()
    pacer.record("AAPL|1 D|1 min", "AAPL")
    assert pacer.wait_seconds("AAPL|1 D|1 min", "AAPL") == pytest.approx(15.0)
    assert pacer.wait_seconds("AAPL|2 D|1 min", "AAPL") == 0.0  # a different request is fine
    clock.advance(10)
    assert pacer.wait_seconds("AAPL|1 D|1 min", "AAPL") == pytest.approx(5.0)
    clock.advance(5)
    assert pacer.wait_seconds("AAPL|1 D|1 min", "AAPL") == 0.0


def test_at_most_five_per_contract_in_two_seconds() -> None:
    # IB: "six or more requests for the same contract within two seconds" is a violation.
    pacer, clock = pacer_and_clock()
    for i in range(5):
        assert pacer.wait_seconds(f"AAPL|{i}", "AAPL") == 0.0
        pacer.record(f"AAPL|{i}", "AAPL")
        clock.advance(0.1)
    assert pacer.wait_seconds("AAPL|5", "AAPL") == pytest.approx(2.0 - 0.5)
    assert pacer.wait_seconds("MSFT|0", "MSFT") == 0.0  # other contracts are not held up


def test_at_most_sixty_in_ten_minutes() -> None:
    pacer, clock = pacer_and_clock()
    for i in range(60):
        pacer.record(f"req{i}", f"C{i}")
        clock.advance(1)
    # The first request (t=0) leaves the 600 s window at t=600; now t=60.
    assert pacer.wait_seconds("req60", "C60") == pytest.approx(540.0)
    clock.advance(540)
    assert pacer.wait_seconds("req60", "C60") == 0.0


async def test_acquire_sleeps_on_the_clock_until_allowed() -> None:
    pacer, clock = pacer_and_clock(max_requests=3, window_seconds=100)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    for i in range(5):
        await pacer.acquire(f"r{i}", f"c{i}", sleep)
    # r0..r2 go at once; r3 waits for r0 to leave the 100 s window; r4 then fits.
    assert slept == [pytest.approx(100.0)]
    assert clock.monotonic() == pytest.approx(100.0)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        PacingLimits(max_requests=0)
