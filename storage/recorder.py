"""The recorder: every bus event worth keeping, batched into SQLite; and the order journal.

This module assembles the parts, one job each:

- ``storage.event_rows``: the bus subscription, event → row (the hot path);
- ``storage.pending``: the rows waiting for a flush, counted and capped;
- ``storage.alert_rows``: alerts and their delivery summaries, by row id;
- ``storage.order_journaling``: journal before send, and the start-up fold;
- ``storage.journal_compaction``: when the journal file may be emptied;
- ``storage.flushing``: the two ways a batch is written (here, or the writer process);
- ``storage.flush_loop``: the background task, with retry and backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path

from loguru import logger

from core.bus import EventBus
from core.journal import RecoveredState
from core.model import AlertSeverity, Order
from storage.alert_rows import AlertRows
from storage.database import Database
from storage.event_rows import EventRows
from storage.flush_loop import FlushLoop
from storage.flushing import Flusher
from storage.journal_compaction import JournalCompaction
from storage.order_journal import OrderJournalFile, journal_path
from storage.order_journaling import OrderJournaling
from storage.pending import PendingRows
from storage.recovery import load_recovery
from storage.writer import WriterProcess


class Recorder:
    """Batched bus → SQLite writer; also the core's ``Journal`` (``write_orders``).

    Start ``run()`` as a background task; ``stop()`` after the last event worth
    keeping has been published (it unsubscribes, flushes, and ends ``run``).
    With a ``writer`` process, batches are written on another core; alerts (whose row
    ids are needed back) still go through ``db``. ``order_journal``: the journal file
    beside the database, when the caller opened it already to hold its lock from the
    start.
    """

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        *,
        flush_rows: int = 500,
        flush_ms: float = 200.0,
        record_quotes: bool = True,
        max_pending_rows: int = 200_000,
        writer: WriterProcess | None = None,
        order_journal: OrderJournalFile | None = None,
    ) -> None:
        if flush_rows < 1 or flush_ms <= 0 or max_pending_rows < 1:
            raise ValueError("flush_rows, flush_ms and max_pending_rows must be positive")
        self._db = db
        self._writer = writer
        self._order_journal = order_journal or OrderJournalFile(journal_path(Path(db.path)))
        self._pending = PendingRows(flush_rows=flush_rows, max_pending=max_pending_rows)
        self._alerts = AlertRows(self._pending)
        self._journaling = OrderJournaling(db, self._order_journal, self._pending)
        self._compaction = JournalCompaction(self._order_journal)
        self._flusher = Flusher(db, writer, self._pending, self._alerts, self._compaction)
        self._loop = FlushLoop(self._flusher, self._pending, flush_s=flush_ms / 1000.0)
        self._events = EventRows(bus, self._pending, self._alerts, record_quotes=record_quotes)

    # ----------------------------------------------------------------- figures

    @property
    def pending_rows(self) -> int:
        return self._pending.count + len(self._alerts.deliveries)

    @property
    def rows_written(self) -> int:
        return self._flusher.rows_written

    @property
    def flushes(self) -> int:
        return self._flusher.flushes

    @property
    def rows_dropped(self) -> int:
        return self._pending.rows_dropped

    @property
    def write_errors(self) -> int:
        return self._flusher.write_errors

    @property
    def last_error(self) -> str | None:
        return self._flusher.last_error

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id, when batches go through one (a forced exit kills it)."""
        return None if self._writer is None else self._writer.pid

    @property
    def stalled(self) -> bool:
        """Rows have waited ``storage.flush_loop.STALL_SECONDS`` without a write."""
        return self._loop.stalled

    def set_alert_sink(
        self, raise_alert: Callable[[AlertSeverity, str, str], object] | None
    ) -> None:
        """Where the recorder's own alerts go (a stalled writer): the core's AlertRaiser."""
        self._loop.on_alert = raise_alert

    # ----------------------------------------------------------------- journal

    async def load_recovery(self, day_start: datetime) -> RecoveredState:
        """The Journal's read side: what a restart needs back (storage.recovery).

        Orders the journal file holds and the database lacks go into the database
        first; the file is then emptied."""
        await self.fold_order_journal()
        return await load_recovery(self._db, day_start)

    async def journaled_order_ids(self, client_order_ids: Collection[str]) -> set[str]:
        """The Journal's question at start-up: which of these orders it holds, any day."""
        return await self._journaling.journaled_order_ids(client_order_ids)

    async def fold_order_journal(self) -> int:
        """Insert the journal file's orders the ``orders`` table lacks; returns how many."""
        return await self._journaling.fold()

    async def write_order(self, order: Order) -> None:
        """Record one order before it is sent; see ``write_orders``."""
        await self.write_orders([order])

    async def write_orders(self, orders: Sequence[Order]) -> None:
        """Put new orders on record before they are sent (journal before send).

        One write to the order journal file, done when this returns; the rows also
        go to the database with the next batch. Raises OSError when the write fails:
        the caller must then send none of them.
        """
        await self._journaling.write_orders(orders)

    # ----------------------------------------------------------------- batches

    async def flush(self) -> int:
        """Write everything pending; returns rows written (see storage.flushing).

        On failure the rows stay pending for a retry and the error is raised."""
        return await self._flusher.flush()

    async def run(self) -> None:
        """Flush every ``flush_ms``, or as soon as ``flush_rows`` rows are pending,
        until ``stop()``. Write errors are logged and retried with backoff."""
        await self._loop.run()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop listening, end ``run()`` and write what is pending (raises if that fails).

        ``timeout`` bounds the whole stop: a write in flight that has not come back
        within ``WRITER_ANSWER_SHARE`` of it is taken as a stuck writer process, which
        is killed (its rows are kept and go to a new child); a final flush still not
        done when the time is up raises TimeoutError. The journal file is closed and
        the writer process ends (killed if need be) in every case."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._events.unsubscribe()
        answer = None if timeout is None else timeout * WRITER_ANSWER_SHARE
        if not await self._loop.stop(answer) and self._writer is not None:
            self._writer.kill(f"did not answer within {answer:.1f} s at stop")
            await self._loop.wait_ended(_remaining(deadline, reserve=0.0) or 1.0)
        try:
            async with asyncio.timeout(_remaining(deadline, reserve=WRITER_EXIT_RESERVE_S)):
                await self.flush()
        except BaseException as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{exc!r}"
            logger.error(
                "recorder: final flush failed ({reason}), {n} rows not written",
                reason=reason,
                n=self.pending_rows,
            )
            raise
        else:
            if not self._compaction.in_flight:
                self._order_journal.clear()  # every order is in the database
        finally:
            self._order_journal.close()
            if self._writer is not None:
                left = _remaining(deadline, reserve=0.0)
                await self._writer.close(WRITER_EXIT_RESERVE_S if left is None else left)


# Of a bounded stop: how long the write in flight may take before the writer process is
# taken as stuck, and how long is kept back for the writer process to exit.
WRITER_ANSWER_SHARE = 0.4
WRITER_EXIT_RESERVE_S = 1.0


def _remaining(deadline: float | None, *, reserve: float) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic() - reserve, 0.1)
