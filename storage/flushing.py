"""Writing what is pending: one transaction in this process, or a batch to the writer process.

Quotes go in chunks of ``QUOTE_CHUNK`` rows, one transaction each, so a backlog
built up during a burst (or an outage) is written in bounded pieces and other
writers (alerts, the heartbeat) get the database between them. Alerts always go
through ``db`` in this process, since their row ids are needed back
(``storage.alert_rows``): in the same transaction as the batch, or, with a writer
process, in one of their own after the batch. On failure the rows stay pending for a
retry and the error is raised (``storage.flush_loop`` retries).
"""

from __future__ import annotations

from core.model import Alert
from storage.alert_rows import AlertRows, Deliveries, RowIds
from storage.database import Database
from storage.journal_compaction import JournalCompaction, Taken
from storage.pending import Batch, PendingRows
from storage.writer import WriterProcess


class Flusher:
    """Writes ``pending`` and ``alerts`` into ``db`` (or through ``writer``); counts it."""

    def __init__(
        self,
        db: Database,
        writer: WriterProcess | None,
        pending: PendingRows,
        alerts: AlertRows,
        compaction: JournalCompaction,
    ) -> None:
        self._db = db
        self._writer = writer
        self._pending = pending
        self._alerts = alerts
        self._compaction = compaction
        self.rows_written = 0
        self.flushes = 0
        self.write_errors = 0
        self.last_error: str | None = None

    @property
    def has_work(self) -> bool:
        return bool(self._pending.count or self._alerts.deliveries)

    async def flush(self) -> int:
        """Write everything pending, chunk by chunk; returns rows written."""
        written = 0
        while self._pending.count or self._alerts.deliveries:
            written += await self.flush_chunk()
        return written

    async def flush_chunk(self) -> int:
        """Write one chunk (and the alerts); returns rows written."""
        if self._writer is not None:
            return await self._flush_chunk_to_writer(self._writer)
        batch: Batch | None = None
        taken: Taken = (0, 0)
        alerts: list[Alert] = []
        deliveries: Deliveries = {}
        new_ids: RowIds = {}
        try:
            async with self._db.transaction():
                # Taken under the lock: batches commit in the order they were taken.
                batch, taken = self._take_chunk()
                alerts, deliveries = self._alerts.take()
                written = await self._db.write_batch_in_transaction(batch)
                new_ids = await self._alerts.write_in_transaction(self._db, alerts, deliveries)
                written += len(alerts)
        except BaseException as exc:
            if batch is not None:
                self._batch_failed(batch)
            self._alerts.restore(alerts, deliveries)
            self._count_write_error(exc)
            raise
        self._compaction.committed(taken)
        self._alerts.remember(new_ids)
        self.rows_written += written
        self.flushes += 1
        return written

    def _take_chunk(self) -> tuple[Batch, Taken]:
        batch = self._pending.take_chunk()
        return batch, self._compaction.taken()

    def _batch_failed(self, batch: Batch) -> None:
        self._compaction.failed()
        self._pending.restore(batch)

    def _count_write_error(self, exc: BaseException) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def _flush_chunk_to_writer(self, writer: WriterProcess) -> int:
        # The child commits batches in the order they were sent, which is the order
        # they were taken.
        batch, taken = self._take_chunk()
        self._pending.count += len(self._alerts.alerts)  # still pending: written below
        try:
            written = await writer.write_batch(batch)
        except BaseException as exc:
            self._batch_failed(batch)
            self._count_write_error(exc)
            raise
        self._compaction.committed(taken)
        self.rows_written += written
        self.flushes += 1
        if self._alerts.alerts or self._alerts.deliveries:
            written += await self._flush_alerts()
        return written

    async def _flush_alerts(self) -> int:
        alerts, deliveries = self._alerts.take()
        self._pending.count -= len(alerts)
        try:
            async with self._db.transaction():
                new_ids = await self._alerts.write_in_transaction(self._db, alerts, deliveries)
        except BaseException as exc:
            self._alerts.restore(alerts, deliveries)
            self._count_write_error(exc)
            raise
        self._alerts.remember(new_ids)
        self.rows_written += len(alerts)
        return len(alerts)
