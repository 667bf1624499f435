"""The one clock everything time-based reads (ARCHITECTURE rule 6)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for rates and ages)."""
        ...


class LiveClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class SimClock:
    """Time that moves only when told to: replay, backtests and tests."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("SimClock needs a timezone-aware start time")
        self._start = start
        self._now = start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self._start).total_seconds()

    def advance(self, seconds: float | timedelta) -> datetime:
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if delta < timedelta(0):
            raise ValueError("SimClock cannot go backwards")
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError("SimClock cannot go backwards")
        self._now = when
