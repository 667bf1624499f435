"""Assembly: core + storage wired together (the only place that knows both)."""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger

from core.alerting.channels import AlertChannel
from core.alerting.manager import RetryPolicy
from core.alerting.service import MonitoringService
from core.brokers.factory import build_broker
from core.bus import EventBus
from core.clock import Clock, LiveClock
from core.config import Settings
from core.strategy.loader import load_strategy_class
from core.system import TradingSystem
from storage.database import Database
from storage.recorder import Recorder
from tui.logs import install_redaction

# How long the last alerts (a crash report above all) may hold up the exit.
ALERT_DRAIN_SECONDS = 10.0


@dataclass(slots=True)
class Runtime:
    system: TradingSystem
    database: Database
    recorder: Recorder
    monitoring: MonitoringService

    async def report_crash(self, exc: BaseException, timeout: float = ALERT_DRAIN_SECONDS) -> bool:
        """Send the crash alert now and wait (bounded) for the channels. Idempotent."""
        return await self.monitoring.report_crash(exc, timeout)

    async def close(self, alert_timeout: float = ALERT_DRAIN_SECONDS) -> None:
        # Alerts first: their delivery outcomes are events the recorder must still store.
        try:
            await self.monitoring.close(alert_timeout)
        except Exception:
            logger.exception("monitoring: close failed")
        await self.recorder.stop()
        await self.database.close()


async def build_runtime(
    settings: Settings,
    clock: Clock | None = None,
    *,
    channels: list[AlertChannel] | None = None,
    alert_retry: RetryPolicy | None = None,
) -> Runtime:
    """Open the database, build the broker and the system, start the monitoring
    (alert delivery, heartbeat, health checks, crash report). Trading is not started."""
    clock = clock or LiveClock()
    broker = build_broker(settings, clock)
    load_strategy_class(settings.strategy)  # a bad STRATEGY fails before any file is created
    database = await Database.open(settings.database_path)
    try:
        bus = EventBus()
        recorder = Recorder(database, bus, record_quotes=settings.record_quotes)
        system = TradingSystem(settings, broker, clock, journal=recorder, bus=bus)
        monitoring = MonitoringService(
            system, settings, channels=channels, heartbeat_store=database, retry=alert_retry
        )
        # Whatever configured logging, secrets stay out of it from here on.
        install_redaction(monitoring.redactor.secrets)
        monitoring.start()
    except BaseException:
        await database.close()  # its worker thread would keep the process alive
        raise
    return Runtime(system, database, recorder, monitoring)
