"""Everything that watches a running TradingSystem, started and stopped as one piece.

The alert manager (outbound channels), the heartbeat, the health checks and the
crash reporter. The assembly (tui/commands/runtime.py) builds it, calls `start()` once the
loop runs and `close()` before the process exits; `close()` drains the alert
queues with a deadline so the last alerts — a crash above all — get out first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from typing import Any

from loguru import logger

from core.alerting.channels import AlertChannel
from core.alerting.factory import build_channels
from core.alerting.manager import AlertManager, RetryPolicy, Sleep, send_crash_alert
from core.alerting.redaction import Redactor
from core.brokers.base import BrokerConnectError
from core.brokers.factory import BrokerUnavailable
from core.config import ConfigError, Settings
from core.health import HealthLimits, HealthMonitor
from core.heartbeat import Heartbeat, HeartbeatState, HeartbeatStore
from core.strategy.loader import StrategyLoadError
from core.system import TradingSystem

# What the operator must fix before a start (settings, strategy, IB account or symbols): the
# command line refuses them with one line and exit 2. Refusing to start is not a crash.
OPERATOR_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    StrategyLoadError,
    BrokerUnavailable,
    BrokerConnectError,
)


class MonitoringService:
    """Alert manager + heartbeat + health checks + crash report for one system."""

    def __init__(
        self,
        system: TradingSystem,
        settings: Settings,
        *,
        channels: Iterable[AlertChannel] | None = None,
        heartbeat_store: HeartbeatStore | None = None,
        retry: RetryPolicy | None = None,
        health_limits: HealthLimits | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._system = system
        self.redactor = Redactor.from_settings(settings)
        system.alerts.redact = self.redactor
        self.manager = AlertManager(
            system.bus,
            system.clock,
            build_channels(settings) if channels is None else channels,
            raiser=system.alerts,
            dedup_seconds=settings.alert_dedup_seconds,
            max_per_minute=settings.alert_max_per_minute,
            retry=retry,
            sleep=sleep,
            redact=self.redactor,
            source=f"Trading Console [{settings.trading_mode.upper()}]",
        )
        self.heartbeat = Heartbeat(
            system.clock, settings.heartbeat_path, settings.heartbeat_seconds, store=heartbeat_store
        )
        self.health = HealthMonitor(
            system, system.alerts, health_limits or HealthLimits.from_settings(settings)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._crash: BaseException | None = None  # reported crash (core task or caller's)
        self._closed = False

    def start(self) -> None:
        """Start the background tasks (needs a running loop). Idempotent."""
        if self._tasks:
            return
        self.manager.start()
        names = ", ".join(c.label for c in self.manager.channels) or "none configured"
        logger.info("alert channels: {names}", names=names)
        self._spawn(self.heartbeat.run(), "heartbeat")
        self._spawn(self.health.run(), "health")
        self._spawn(self._report_crash_when_it_happens(), "crash-watch")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _report_crash_when_it_happens(self) -> None:
        # Start sending at once, while the system is still stopping: the graceful
        # stop can take seconds and the operator should hear first.
        await self._system.stopped.wait()
        if self._system.fatal_error is not None:
            await self.report_crash(self._system.fatal_error)

    async def report_crash(self, exc: BaseException, timeout: float = 10.0) -> bool:
        """Raise the crash alert (once) and wait until the channels have it (bounded).

        For core task crashes this happens by itself; callers report crashes outside the
        core (an exception escaping the command line's own code) the same way. A refusal
        the operator must fix (``OPERATOR_ERRORS``, exit 2) is logged, not alerted as a crash.
        """
        if isinstance(exc, OPERATOR_ERRORS):
            logger.error("refused to start: {error}", error=str(exc))
            return await self.manager.flush(timeout)
        if self._crash is not None:
            return await self.manager.flush(timeout)
        self._crash = exc
        # The traceback is already logged by whoever caught it (TradingSystem for core tasks).
        logger.critical("crash: alerting the operator ({error})", error=repr(exc))
        return await send_crash_alert(self._system.alerts, self.manager, exc, timeout=timeout)

    async def close(self, timeout: float = 10.0) -> bool:
        """Final alerts out (up to ``timeout``), loops stopped, last heartbeat written.

        True when every alert was delivered or given up on before the deadline.
        """
        if self._closed:
            return True
        self._closed = True
        fatal = self._system.fatal_error or self._crash
        if fatal is not None and self._crash is None:
            # The crash watcher never ran (close() came first): report it here.
            await self.report_crash(fatal, timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        delivered = await self.manager.close(timeout)
        await self.heartbeat.mark(
            HeartbeatState.CRASHED if fatal is not None else HeartbeatState.STOPPED
        )
        return delivered
