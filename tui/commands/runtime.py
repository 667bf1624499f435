"""Assembly: core + storage wired together (the only place that knows both)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
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

# The stop, from the first stop signal or `q` to the end of the process, never takes
# longer than this: the phases below get their share of it, and a watchdog thread
# ends the process at the bound whatever is still running (README "Running headless").
STOP_BOUND_SECONDS = 15.0
SYSTEM_STOP_SECONDS = 7.0  # the core: strategy off, working orders cancelled, broker closed
ALERT_CLOSE_SECONDS = 3.0  # the last alerts out through the channels, the last heartbeat
DATABASE_CLOSE_SECONDS = 1.0  # kept back for closing the database
# A third stop signal (repeats within SIGNAL_REPEAT_SECONDS of the last one counted
# count once: `timeout -s INT` signals the process, then its whole group) forces the exit.
FORCE_AFTER_SIGNALS = 3
SIGNAL_REPEAT_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_FORCED = 1


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP through the event loop, for the life of the process.

    The first calls ``on_stop`` (the graceful stop); later ones say the stop is under
    way and bounded; the third forces the exit (``force``). The handlers are never
    removed before the process ends, so a signal during the stop cannot raise
    KeyboardInterrupt out of ``asyncio.run`` and leave the writer process behind.
    """

    def __init__(self, on_stop: Callable[[str], None], force: Callable[[str], None]) -> None:
        self.on_stop = on_stop
        self._force = force
        self.count = 0
        self.first: str | None = None
        self._last_counted = 0.0

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> StopSignals:
        loop = loop or asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.received, sig)
        return self

    def received(self, sig: int) -> None:
        name = signal.Signals(sig).name
        now = time.monotonic()
        if self.count and now - self._last_counted < SIGNAL_REPEAT_SECONDS:
            logger.info("{name} received again: the stop is under way", name=name)
            return
        self.count += 1
        self._last_counted = now
        if self.count == 1:
            self.first = name
            logger.warning(
                "{name} received: stopping (working orders cancelled, records flushed; "
                "at most {bound:.0f} s)",
                name=name,
                bound=STOP_BOUND_SECONDS,
            )
            self.on_stop(f"signal {name}")
        elif self.count < FORCE_AFTER_SIGNALS:
            logger.warning(
                "{name} received: the stop is under way and ends within {bound:.0f} s; "
                "{more} more forces the exit",
                name=name,
                bound=STOP_BOUND_SECONDS,
                more=FORCE_AFTER_SIGNALS - self.count,
            )
        else:
            self._force(f"{name} received {self.count} times")


@dataclass(slots=True)
class Runtime:
    system: TradingSystem
    database: Database
    recorder: Recorder
    monitoring: MonitoringService
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Set by the console: puts the terminal back on a forced exit (Textual does it on a
    # normal one).
    restore_terminal: Callable[[], None] | None = None
    close_error: str | None = None
    # The command line arms it (the process is its own): a thread that ends the process
    # at the stop bound. Runtimes built inside a test process leave it off.
    exit_watchdog: bool = False
    _stop_started: float | None = None
    _closed: bool = False
    _closed_cleanly: threading.Event = field(default_factory=threading.Event)

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

    # ----------------------------------------------------------------- stopping
    def stop_signals(self, on_stop: Callable[[str], None]) -> StopSignals:
        """Install the stop signals (SIGINT, SIGTERM, SIGHUP) for the rest of the process."""
        return StopSignals(self._on_stop_signal(on_stop), self.force_exit).install()

    def _on_stop_signal(self, on_stop: Callable[[str], None]) -> Callable[[str], None]:
        def stop(reason: str) -> None:
            self.begin_stop()
            on_stop(reason)

        return stop

    def begin_stop(self) -> None:
        """The stop has begun (a signal, `q`, a crash, or close()): the bound runs from
        here, and a watchdog thread ends the process when it is reached. Idempotent."""
        if self._stop_started is not None:
            return
        self._stop_started = time.monotonic()
        if self.exit_watchdog:
            threading.Thread(target=self._watchdog, name="stop-watchdog", daemon=True).start()

    def stop_budget(self, share: float, *, reserve: float = 0.0) -> float:
        """Seconds a stop phase may take: its ``share``, within what is left of the bound
        (less ``reserve`` for the phases after it)."""
        self.begin_stop()
        started = self._stop_started
        assert started is not None
        left = STOP_BOUND_SECONDS - (time.monotonic() - started) - reserve
        return max(min(share, left), 0.1)

    async def stop_system(self, reason: str) -> bool:
        """The core's graceful stop (cancel working orders, strategy off), bounded."""
        budget = self.stop_budget(SYSTEM_STOP_SECONDS, reserve=4.0)
        try:
            # The core shares its waits within the budget (less a margin for its own
            # bookkeeping); the wait_for only catches a stop that is stuck past it.
            await asyncio.wait_for(self.system.stop(reason, timeout=max(budget - 1.0, 0.1)), budget)
        except Exception as exc:
            logger.opt(exception=exc).error("the core's stop did not finish cleanly")
            return False
        return True

    def _watchdog(self) -> None:
        # A daemon thread: it ends with the process, and it fires even when the event loop
        # is blocked (which no asyncio timeout could cut short).
        # A close that ended cleanly (database closed, writer process gone) leaves nothing
        # of ours that could hold the process up.
        if not self._closed_cleanly.wait(STOP_BOUND_SECONDS):
            self.force_exit(f"the stop did not finish within {STOP_BOUND_SECONDS:.0f} s")

    def force_exit(self, why: str) -> None:
        """End the process now: writer process killed, terminal restored, exit 1.

        Orders were journaled to the file before they were sent; the next start folds
        the file into the database. Rows still waiting here are lost."""
        pid = self.recorder.writer_pid
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        restore = self.restore_terminal
        if restore is not None:
            with contextlib.suppress(Exception):
                restore()
        line = (
            f"trading-console: forced exit ({why}); the writer process was killed and "
            f"{self.recorder.pending_rows} rows were not written; orders are kept in the "
            "order journal and folded in at the next start"
        )
        with contextlib.suppress(Exception):
            logger.error(line)
        with contextlib.suppress(Exception):
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        os._exit(EXIT_FORCED)

    async def report_crash(self, exc: BaseException, timeout: float = ALERT_DRAIN_SECONDS) -> bool:
        """Send the crash alert now and wait (bounded) for the channels. Idempotent."""
        return await self.monitoring.report_crash(exc, timeout)

    async def close(self, alert_timeout: float = ALERT_CLOSE_SECONDS) -> bool:
        """Alerts out, records flushed, writer process ended, database closed: bounded by
        STOP_BOUND_SECONDS, and the database is closed whatever failed before.

        Returns False when the final flush failed; ``close_error`` then says why and how
        many rows were not written."""
        if self._closed:
            return self.close_error is None
        self._closed = True
        self.begin_stop()
        # An export in progress is abandoned (its partial file is removed; the next start
        # exports the day again). Alerts next: their delivery outcomes are events the
        # recorder must still store; the recorder flushes last, then its task ends.
        # Waited for, not only cancelled: an upkeep pass cut off mid-way (a prune's
        # transaction, a query in flight) must have let go of the database before the
        # final flush writes, or that flush fails with "database is locked".
        from tui.commands.archive_cmd import stop_archiver

        archivers = [t for t in self._tasks if t.get_name() == "archiver"]
        for task in archivers:
            try:
                await asyncio.wait_for(stop_archiver(task), self.stop_budget(2.0, reserve=6.0))
            except Exception:
                logger.exception("archiver: stop failed")
        try:
            budget = self.stop_budget(alert_timeout, reserve=3.0)
            await asyncio.wait_for(self.monitoring.close(budget), budget + 1.0)
        except Exception:
            logger.exception("monitoring: close failed")
        try:
            await self.recorder.stop(self.stop_budget(60.0, reserve=DATABASE_CLOSE_SECONDS))
        except Exception as exc:
            cause = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            self.close_error = (
                f"the final database write failed ({cause}): {self.recorder.pending_rows} "
                "rows were not written (orders stay in the order journal file and are "
                "folded in at the next start)"
            )
            logger.error("{error}", error=self.close_error)
        finally:
            database_closed = False
            try:
                await asyncio.wait_for(
                    self.database.close(), self.stop_budget(DATABASE_CLOSE_SECONDS)
                )
                database_closed = True
            except Exception:
                logger.exception("database: close failed")
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 1.0)
            self._tasks.clear()
            if database_closed and self.recorder.writer_pid is None:
                self._closed_cleanly.set()
        return self.close_error is None


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
        # A stalled writer is the operator's business: console, channels, database.
        recorder.set_alert_sink(system.alerts.raise_alert)
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
