"""In-process health checks on the core's clock: data freshness, broker link, reconciliation age.

Each check is an incident with two edges: it raises one alert when it goes bad
and one when it recovers, never an alert per check. `check()` is synchronous and
reads only in-memory state, so the timer loop (or a test after advancing a
SimClock) can call it at any time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from core.config import Settings
from core.model import AlertSeverity
from core.monitoring import AlertRaiser
from core.system import TradingSystem

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class HealthLimits:
    """Thresholds, in seconds. Grace periods keep a fresh start and a short blip quiet."""

    stale_data_seconds: float = 10.0  # STALE_AFTER_SECONDS: a symbol's quotes are too old
    startup_grace_seconds: float = 30.0  # no data alerts before this long after start
    disconnected_seconds: float = 30.0  # the disconnect alert itself is immediate
    reconcile_max_age_seconds: float = 90.0  # three missed reconciliations
    check_every_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HealthLimits:
        return cls(
            stale_data_seconds=settings.stale_after_seconds,
            startup_grace_seconds=max(30.0, 3 * settings.stale_after_seconds),
            reconcile_max_age_seconds=3 * settings.reconcile_seconds,
        )


class HealthMonitor:
    """Raises one alert per incident (and one on recovery) for each check."""

    def __init__(
        self,
        system: TradingSystem,
        raiser: AlertRaiser,
        limits: HealthLimits,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._system = system
        self._raiser = raiser
        self._limits = limits
        self._sleep = sleep
        self._started_at: datetime | None = None  # first check that saw the system running
        self._disconnected_since: datetime | None = None
        self.open_incidents: dict[str, str] = {}  # check name -> what was wrong

    def check(self) -> dict[str, str]:
        """Run every check once; returns the open incidents."""
        now = self._system.clock.now()
        if not self._system.running:
            return self.open_incidents
        if self._started_at is None:
            self._started_at = now
        self._update("data", self._stale_data(now))
        self._update("broker", self._broker(now))
        self._update("reconcile", self._reconcile_age(now))
        return self.open_incidents

    async def run(self) -> None:
        while True:
            await self._sleep(self._limits.check_every_seconds)
            self.check()

    # ----------------------------------------------------------------- checks
    # Each returns None when healthy or a description of the problem.

    def _since_start(self, now: datetime) -> float:
        return 0.0 if self._started_at is None else (now - self._started_at).total_seconds()

    def _stale_data(self, now: datetime) -> str | None:
        if self._since_start(now) < self._limits.startup_grace_seconds:
            return None
        if not self._system.broker.connected:
            return None  # the broker check covers it: one cause, one alert
        stale = self._system.feed.stale_symbols()
        if not stale:
            return None
        return f"no fresh quotes for {', '.join(stale)} (> {self._limits.stale_data_seconds:g}s)"

    def _broker(self, now: datetime) -> str | None:
        if self._system.broker.connected:
            self._disconnected_since = None
            return None
        if self._disconnected_since is None:
            self._disconnected_since = now
        # The outage starts at its first disconnect report, however many reconnect attempts
        # have failed since; our own first sight of it only stands in when no report came.
        since = self._raiser.disconnected_since or self._disconnected_since
        down = (now - min(since, self._disconnected_since)).total_seconds()
        if down < self._limits.disconnected_seconds:
            return None
        return f"broker still disconnected after {down:.0f}s"

    def _reconcile_age(self, now: datetime) -> str | None:
        if not self._system.broker.connected:
            return None
        last = self._system.execution.last_reconcile_at
        age = self._since_start(now) if last is None else (now - last).total_seconds()
        if age <= self._limits.reconcile_max_age_seconds:
            return None
        return f"positions not reconciled with the broker for {age:.0f}s"

    # ----------------------------------------------------------------- incidents

    def _update(self, name: str, problem: str | None) -> None:
        was = self.open_incidents.get(name)
        if problem is not None and was is None:
            self.open_incidents[name] = problem
            severity = AlertSeverity.CRITICAL if name == "broker" else AlertSeverity.WARNING
            self._raiser.raise_alert(severity, f"health:{name}", f"Health: {problem}")
        elif problem is None and was is not None:
            del self.open_incidents[name]
            self._raiser.raise_alert(
                AlertSeverity.INFO, f"health:{name}:ok", f"Health: recovered ({was})"
            )
