"""Assembly: core + storage wired together (the only place that knows both)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from typing import NoReturn

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
from storage.database import Database, DatabaseRefused, check_database_file, check_directory
from storage.order_journal import OrderJournalFile, journal_path, resolved_database_path
from storage.recorder import Recorder
from storage.writer import WriterProcess
from tui.commands.logs import install_redaction

# How long the last alerts (a crash report above all) may hold up the exit.
ALERT_DRAIN_SECONDS = 10.0


@dataclass(slots=True)
class Runtime:
    system: TradingSystem
    database: Database
    recorder: Recorder
    monitoring: MonitoringService
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_background(self) -> None:
        """The recorder's writer and the archiver: end-of-day export, quote retention
        (DATABASE_QUOTE_DAYS / QUOTE_RETENTION_DAYS) and the low-disk warning."""
        self._tasks.append(asyncio.create_task(self.recorder.run(), name="recorder"))
        from tui.commands.archive_cmd import storage_upkeep

        system = self.system
        archiver = storage_upkeep(
            system.settings, self.database, system.bus, system.clock, system.alerts.raise_alert
        )
        self._tasks.append(asyncio.create_task(archiver.run(), name="archiver"))

    async def report_crash(self, exc: BaseException, timeout: float = ALERT_DRAIN_SECONDS) -> bool:
        """Send the crash alert now and wait (bounded) for the channels. Idempotent."""
        return await self.monitoring.report_crash(exc, timeout)

    async def close(self, alert_timeout: float = ALERT_DRAIN_SECONDS) -> None:
        # An export in progress is abandoned (its partial file is removed; the next start
        # exports the day again). Alerts next: their delivery outcomes are events the
        # recorder must still store; the recorder flushes last, then its task ends.
        archivers = [t for t in self._tasks if t.get_name() == "archiver"]
        for task in archivers:
            task.cancel()
        try:
            await self.monitoring.close(alert_timeout)
        except Exception:
            logger.exception("monitoring: close failed")
        await self.recorder.stop()
        await self.database.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


def refuse_to_start(exc: DatabaseRefused) -> NoReturn:
    """Exit 2 with the one line that names the file and the fix (no traceback, no crash
    alert: nothing was started and nothing was written)."""
    print(f"trading-console: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


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
    load_strategy_class(settings.strategy)  # a bad STRATEGY fails before any file is created
    # A second console on this database stops here, before it reads or writes any of the
    # first one's files (building the sim venue reads its state file and repairs a torn
    # last line). The lock is on the database file's inode, whatever name it is given by.
    # A damaged or newer database is refused next, before anything writes to it.
    try:
        check_directory(settings.data_dir, "DATA_DIR")
        db_path = resolved_database_path(settings.database_path)
        order_journal = OrderJournalFile(journal_path(db_path), database=db_path)
        order_journal.open()
    except DatabaseRefused as exc:
        refuse_to_start(exc)
    try:
        await asyncio.to_thread(check_database_file, db_path)
        broker = build_broker(settings, clock)
        database = await Database.open(db_path, check=False)
    except DatabaseRefused as exc:
        order_journal.close()
        refuse_to_start(exc)
    except BaseException:
        order_journal.close()
        raise
    try:
        bus = EventBus()
        # Rows are written by a child process on the other core (storage.writer_process).
        writer = WriterProcess(db_path)
        recorder = Recorder(
            database,
            bus,
            record_quotes=settings.record_quotes,
            writer=writer,
            order_journal=order_journal,
        )
        system = TradingSystem(settings, broker, clock, journal=recorder, bus=bus)
        monitoring = MonitoringService(
            system, settings, channels=channels, heartbeat_store=database, retry=alert_retry
        )
        # Whatever configured logging, secrets stay out of it from here on.
        install_redaction(monitoring.redactor.secrets)
        monitoring.start()
    except BaseException:
        await database.close()  # its worker thread would keep the process alive
        order_journal.close()
        raise
    return Runtime(system, database, recorder, monitoring)
