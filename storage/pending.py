"""The rows waiting for the recorder's next flush: one list per table, counted and capped.

Rows are appended on the hot path (``storage.event_rows``, the order journal), and
taken in chunks by ``storage.flushing``. ``count`` also counts the alerts waiting in
``storage.alert_rows`` (they are written with the same batches), so one number
decides when the flush task is woken (``flush_rows``) and when market data is shed
(``max_pending``).
"""

from __future__ import annotations

import asyncio

from loguru import logger

from storage.schema import WRITE_ORDER, Row

Batch = dict[str, list[Row]]

# Market data can be re-fetched or lived without; the audit trail cannot.
# When writes keep failing, these are dropped (oldest first) to bound memory.
SHEDDABLE_TABLES = ("quotes", "bars")

# Quote rows written per transaction (see storage.flushing.Flusher.flush).
QUOTE_CHUNK = 2_000


def empty_batch() -> Batch:
    return {table: [] for table in WRITE_ORDER}


class PendingRows:
    """Rows by table, in arrival order, until a flush takes them.

    The attributes are read and written directly on the quote path
    (``storage.event_rows``): one attribute each, no property or call in between.
    """

    def __init__(self, *, flush_rows: int, max_pending: int) -> None:
        self.tables: Batch = empty_batch()
        self.count = 0  # rows in ``tables`` plus alerts waiting in AlertRows
        self.flush_rows = flush_rows
        self.max_pending = max_pending
        # Set when ``flush_rows`` rows are pending (or something the operator looks
        # for arrived): the flush task waits on it.
        self.wake = asyncio.Event()
        self.rows_dropped = 0

    def add(self, table: str, row: Row) -> None:
        self.tables[table].append(row)
        self.count += 1
        if self.count >= self.flush_rows:
            self.wake.set()
        if self.count > self.max_pending:
            self.shed()

    def order_ids(self) -> set[str]:
        """The client order ids of the order rows waiting here."""
        return {row[0] for row in self.tables["orders"]}

    def take_chunk(self) -> Batch:
        """Everything pending but quotes beyond the first ``QUOTE_CHUNK``.

        The count drops to the quotes left behind: alerts are taken by the caller
        with this batch (or counted back in when they go separately)."""
        quotes = self.tables["quotes"]
        batch, self.tables = self.tables, empty_batch()
        if len(quotes) > QUOTE_CHUNK:
            batch["quotes"], self.tables["quotes"] = quotes[:QUOTE_CHUNK], quotes[QUOTE_CHUNK:]
        self.count = len(self.tables["quotes"])
        orders = batch["orders"]
        if len(orders) > 1:
            # An order changes state several times between flushes; the orders table
            # keeps only its newest snapshot, so only that is written (order_events
            # keeps every step).
            batch["orders"] = list({row[0]: row for row in orders}.values())
        return batch

    def restore(self, batch: Batch) -> None:
        """Put unwritten rows back in front of anything that arrived meanwhile."""
        for table, rows in batch.items():
            if rows:
                self.tables[table][:0] = rows
                self.count += len(rows)
        if self.count > self.max_pending:
            self.shed()

    def shed(self) -> None:
        # Drop to 90% of the cap so that, during a long outage, the O(n) list
        # deletion happens once per many events rather than on every one.
        excess = self.count - (self.max_pending - self.max_pending // 10)
        dropped = 0
        for table in SHEDDABLE_TABLES:
            rows = self.tables[table]
            n = min(excess - dropped, len(rows))
            del rows[:n]
            dropped += n
        if dropped:
            self.count -= dropped
            self.rows_dropped += dropped
            logger.warning(
                "recorder: {n} pending market-data rows dropped (cap {cap})",
                n=dropped,
                cap=self.max_pending,
            )
