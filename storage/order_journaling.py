"""The order journal: orders on record before they are sent, and found again after a crash.

``write_orders`` (journal before send) appends the orders' rows to the order journal
file (``storage.order_journal``) in one write before it returns, and queues the same
rows for the recorder's next batch. ``fold`` runs at start-up, before recovery reads
the database: it inserts whatever the file holds that the ``orders`` table lacks
(orders journaled by a process that died before its next batch), then empties the
file. When the file is emptied during a run is ``storage.journal_compaction``'s job.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Collection, Sequence

from loguru import logger

from core.model import Order
from storage.database import Database
from storage.order_journal import OrderJournalFile, read_journal
from storage.pending import PendingRows
from storage.rows import order_row


class OrderJournaling:
    """``write_orders``, ``journaled_order_ids`` and the start-up ``fold``."""

    def __init__(self, db: Database, journal: OrderJournalFile, pending: PendingRows) -> None:
        self._db = db
        self.journal = journal
        self._pending = pending

    async def write_orders(self, orders: Sequence[Order]) -> None:
        """One write to the journal file, done when this returns; the rows also go to
        the database with the next batch. Raises OSError when the write fails: the
        caller must then send none of them."""
        rows = [order_row(order.snapshot()) for order in orders]
        try:
            self.journal.append(rows)
        except OSError:
            ids = ", ".join(o.client_order_id for o in orders)
            logger.exception("recorder: journaling orders {ids} failed", ids=ids)
            raise
        # In the same synchronous step as the append: storage.journal_compaction
        # relies on it.
        add = self._pending.add
        for row in rows:
            add("orders", row)

    async def journaled_order_ids(self, client_order_ids: Collection[str]) -> set[str]:
        """Which of these orders are on record, any day: pending or in the database."""
        pending = self._pending.order_ids() & set(client_order_ids)
        return pending | await self._db.existing_order_ids(client_order_ids)

    async def fold(self) -> int:
        """Insert the journal file's orders the ``orders`` table lacks; returns how many.

        A row the table has is the same order in a later state, and stays."""
        journal = self.journal
        journal.open()  # the lock first: nobody else appends meanwhile
        rows, intact = read_journal(journal.path)
        if not intact:
            # A power cut can leave a zero-filled tail. Keep the file for a look; the
            # broker's open orders and executions, matched by orderRef, fill the gap.
            kept = journal.path.with_name(f"{journal.path.name}.damaged-{int(time.time())}")
            shutil.copyfile(journal.path, kept)
            logger.error(
                "order journal {path} is damaged after its first {n} orders; copied to {kept}",
                path=journal.path,
                n=len(rows),
                kept=kept,
            )
        added = 0
        if rows:
            async with self._db.transaction():
                added = await self._db.import_rows_in_transaction("orders", rows)
            logger.info(
                "order journal {path}: {added} of {n} orders were not in the database yet",
                path=journal.path,
                added=added,
                n=len(rows),
            )
        journal.folded()
        return added
