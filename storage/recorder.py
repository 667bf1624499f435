"""The recorder: every bus event worth keeping, batched into SQLite; and the order journal.

The bus handler runs on the hot path, so it only turns an event into a row tuple
and appends it to a list. A background task (``run``) writes the lists in one
transaction when enough rows are pending or enough time has passed. Rows are
built at publish time because ``OrderUpdated`` carries the *live* Order object:
by flush time it may already show a later state.

``write_orders`` is the order journal (journal before send): it appends the orders'
rows to the order journal file (``storage.order_journal``) in one write before it
returns, and queues the same rows for the next batch. ``load_recovery`` first folds
into the database whatever the file holds that the ``orders`` table lacks: orders
journaled by a process that died before its next batch.

Alerts are inserted one by one so that their row ids are known: the alert
manager reports each channel's outcome later (``AlertDelivered``), and the
latest per-channel summary is written into that alert's ``delivery`` column.
Within one flush, inserts come before updates, so a delivery event published
before the recorder saw its ``AlertRaised`` (typed subscribers run before the
recorder's catch-all handler) still lands on the right row.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger

from core.bus import EventBus
from core.events import (
    AlertDelivered,
    AlertRaised,
    BarClosed,
    BreakerReset,
    BreakerTripped,
    DailyPnlRecorded,
    DrawdownExceeded,
    FillReceived,
    IntentClamped,
    OrderRejected,
    OrderSubmitted,
    OrderUpdated,
    PositionMismatch,
    QuoteReceived,
    QuoteRejected,
    RiskRejected,
    TradingStateChanged,
)
from core.journal import RecoveredState
from core.model import Alert, Order, OrderSnapshot, QuoteSource
from storage.database import Database
from storage.order_journal import OrderJournalFile, journal_path, read_journal
from storage.recovery import load_recovery
from storage.rows import (
    alert_row,
    bar_row,
    daily_pnl_row,
    fill_row,
    order_event_row,
    order_row,
    risk_event_row,
    state_change_row,
    to_db_ts,
)
from storage.schema import WRITE_ORDER, Row
from storage.writer import WriterProcess

# Market data can be re-fetched or lived without; the audit trail cannot.
# When writes keep failing, these are dropped (oldest first) to bound memory.
_SHEDDABLE_TABLES = ("quotes", "bars")
_MAX_BACKOFF_S = 5.0
# Row ids of recent alerts, for delivery updates that arrive after their insert.
_REMEMBERED_ALERTS = 2_000
# The quotes table's source column, looked up instead of str() on every quote.
_SOURCE_TEXT: dict[QuoteSource, str] = {s: str(s) for s in QuoteSource}

Batch = dict[str, list[Row]]

# The order journal file is rewritten without its committed part once that is this big,
# when orders arrive too often for it ever to be found fully committed and emptied.
JOURNAL_COMPACT_BYTES = 1 << 20

# Quote rows written per transaction (see Recorder.flush).
QUOTE_CHUNK = 2_000


def _empty_batch() -> Batch:
    return {table: [] for table in WRITE_ORDER}


class Recorder:
    """Batched bus → SQLite writer; also the core's ``Journal`` (``write_orders``).

    Start ``run()`` as a background task; ``stop()`` after the last event worth
    keeping has been published (it unsubscribes, flushes, and ends ``run``).
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
        # With a writer process, batches are written on another core; alerts (whose
        # row ids are needed back) still go through ``db``.
        self._writer = writer
        # The order journal file beside the database (``order_journal``: one the caller
        # opened already, to hold its lock from the start).
        self._order_journal = order_journal or OrderJournalFile(journal_path(Path(db.path)))
        # What the journal file may be emptied after (see ``_batch_committed``).
        self._batches_in_flight = 0
        self._restores = 0
        self._flush_rows = flush_rows
        self._flush_s = flush_ms / 1000.0
        self._max_pending = max_pending_rows
        self._pending: Batch = _empty_batch()
        self._pending_count = 0
        self._pending_alerts: list[Alert] = []
        # id(alert) -> (alert, latest delivery summary): only the newest summary matters.
        self._pending_deliveries: dict[int, tuple[Alert, str]] = {}
        self._alert_row_ids: OrderedDict[int, tuple[Alert, int]] = OrderedDict()
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._failures = 0
        self._run_task: asyncio.Task[None] | None = None
        self.rows_written = 0
        self.flushes = 0
        self.rows_dropped = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self._converters = self._build_converters()
        # Quotes are most of the traffic: they come on a typed subscription (or not at
        # all), never through the catch-all's lookup. Only quote rows go to the quotes
        # table, so running before the other handlers (not after, as the catch-all does)
        # reorders nothing there.
        unsubscribe_all = bus.subscribe_all(self._on_event, except_types=(QuoteReceived,))
        unsubscribe_quotes: Callable[[], None] | None = None
        if record_quotes:
            unsubscribe_quotes = bus.subscribe(QuoteReceived, self._on_quote)

        def unsubscribe() -> None:
            unsubscribe_all()
            if unsubscribe_quotes is not None:
                unsubscribe_quotes()

        self._unsubscribe: Callable[[], None] | None = unsubscribe

    @property
    def pending_rows(self) -> int:
        return self._pending_count + len(self._pending_deliveries)

    # ----------------------------------------------------------------- hot path

    def _on_event(self, event: object) -> None:
        # One dict lookup for the events we ignore; no awaits, no I/O.
        convert = self._converters.get(type(event))
        if convert is not None:
            convert(event)

    def _add(self, table: str, row: Row) -> None:
        self._pending[table].append(row)
        self._pending_count += 1
        if self._pending_count >= self._flush_rows:
            self._wake.set()
        if self._pending_count > self._max_pending:
            self._shed()

    def _build_converters(self) -> dict[type, Callable[[Any], None]]:
        converters: dict[type, Callable[[Any], None]] = {
            BarClosed: lambda e: self._add("bars", bar_row(e.bar)),
            OrderSubmitted: lambda e: self._add_order(e.order, e.ts, "submitted"),
            OrderUpdated: lambda e: self._add_order(e.order, e.ts, e.order.last_message),
            OrderRejected: self._on_order_rejected,
            FillReceived: lambda e: self._add("fills", fill_row(e.fill)),
            IntentClamped: self._on_intent_clamped,
            RiskRejected: self._on_risk_rejected,
            QuoteRejected: lambda e: self._risk(e.ts, "quote_rejected", e.symbol, e.reason),
            DrawdownExceeded: self._on_drawdown,
            BreakerTripped: self._on_breaker_tripped,
            BreakerReset: lambda e: self._risk(e.ts, "breaker_reset", None, e.reason),
            PositionMismatch: self._on_position_mismatch,
            TradingStateChanged: lambda e: self._add("trading_state_changes", state_change_row(e)),
            DailyPnlRecorded: lambda e: self._add("daily_pnl", daily_pnl_row(e)),
            AlertRaised: self._on_alert_raised,
            AlertDelivered: self._on_alert_delivered,
        }
        return converters

    def _on_quote(self, e: QuoteReceived) -> None:
        # Every quote passes here: `quote_row` and `_add` inlined; tests/test_hot_path.py
        # checks that the row is the one quote_row builds.
        q = e.quote
        text = to_db_ts(q.ts)  # the second's text is cached there: ~0.3 µs, not ~1 µs
        source = _SOURCE_TEXT.get(q.source)
        self._pending["quotes"].append(
            (
                q.symbol,
                text,
                q.bid,
                q.ask,
                q.bid_size,
                q.ask_size,
                q.last,
                str(q.source) if source is None else source,
            )
        )
        count = self._pending_count = self._pending_count + 1
        if count >= self._flush_rows:
            self._wake.set()
        if count > self._max_pending:
            self._shed()

    def _on_alert_raised(self, e: AlertRaised) -> None:
        self._pending_alerts.append(e.alert)
        self._pending_count += 1
        if self._pending_count >= self._flush_rows:
            self._wake.set()

    def _on_alert_delivered(self, e: AlertDelivered) -> None:
        self._pending_deliveries[id(e.alert)] = (e.alert, e.delivery)
        self._wake.set()  # rare, and the operator looks for it: no need to batch

    def _add_order(self, order: OrderSnapshot, ts: datetime, message: str) -> None:
        self._add("orders", order_row(order))
        self._add("order_events", order_event_row(order, ts, message))

    def _on_order_rejected(self, e: OrderRejected) -> None:
        code = "" if e.error_code is None else f" (code {e.error_code})"
        self._add_order(e.order, e.ts, f"rejected: {e.reason}{code}")

    def _risk(self, ts: datetime, kind: str, symbol: str | None, detail: str) -> None:
        self._add("risk_events", risk_event_row(ts, kind, symbol, detail))

    def _on_intent_clamped(self, e: IntentClamped) -> None:
        i = e.intent
        detail = f"{i.side} {i.quantity} {i.symbol} clamped to {e.approved_quantity}: {e.reason}"
        self._risk(e.ts, "clamped", i.symbol, detail)

    def _on_risk_rejected(self, e: RiskRejected) -> None:
        i = e.intent
        self._risk(e.ts, "rejected", i.symbol, f"{i.side} {i.quantity} {i.symbol}: {e.reason}")

    def _on_drawdown(self, e: DrawdownExceeded) -> None:
        detail = (
            f"drawdown {e.drawdown_pct:g} from peak equity {e.peak_equity:.2f} to {e.equity:.2f}"
        )
        self._risk(e.ts, "drawdown", None, detail)

    def _on_breaker_tripped(self, e: BreakerTripped) -> None:
        self._risk(e.ts, "breaker_tripped", None, f"{e.reason} (daily P&L {e.daily_pnl:+.2f})")

    def _on_position_mismatch(self, e: PositionMismatch) -> None:
        detail = f"internal {e.internal_quantity} vs broker {e.broker_quantity}"
        self._risk(e.ts, "position_mismatch", e.symbol, detail)

    def _shed(self) -> None:
        # Drop to 90% of the cap so that, during a long outage, the O(n) list
        # deletion happens once per many events rather than on every one.
        excess = self._pending_count - (self._max_pending - self._max_pending // 10)
        dropped = 0
        for table in _SHEDDABLE_TABLES:
            rows = self._pending[table]
            n = min(excess - dropped, len(rows))
            del rows[:n]
            dropped += n
        if dropped:
            self._pending_count -= dropped
            self.rows_dropped += dropped
            logger.warning(
                "recorder: {n} pending market-data rows dropped (cap {cap})",
                n=dropped,
                cap=self._max_pending,
            )

    # ----------------------------------------------------------------- journal

    async def load_recovery(self, day_start: datetime) -> RecoveredState:
        """The Journal's read side: what a restart needs back (storage.recovery).

        Orders the journal file holds and the database lacks go into the database
        first; the file is then emptied."""
        await self.fold_order_journal()
        return await load_recovery(self._db, day_start)

    async def journaled_order_ids(self, client_order_ids: Collection[str]) -> set[str]:
        """The Journal's question at start-up: which of these orders it holds, any day."""
        pending = {row[0] for row in self._pending["orders"]} & set(client_order_ids)
        return pending | await self._db.existing_order_ids(client_order_ids)

    async def fold_order_journal(self) -> int:
        """Insert the journal file's orders the ``orders`` table lacks; returns how many.

        A row the table has is the same order in a later state, and stays."""
        journal = self._order_journal
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

    async def write_order(self, order: Order) -> None:
        """Record one order before it is sent; see ``write_orders``."""
        await self.write_orders([order])

    async def write_orders(self, orders: Sequence[Order]) -> None:
        """Put new orders on record before they are sent (journal before send).

        One write to the order journal file, done when this returns; the rows also
        go to the database with the next batch. Raises OSError when the write fails:
        the caller must then send none of them.
        """
        rows = [order_row(order) for order in orders]
        try:
            self._order_journal.append(rows)
        except OSError:
            ids = ", ".join(o.client_order_id for o in orders)
            logger.exception("recorder: journaling orders {ids} failed", ids=ids)
            raise
        for row in rows:
            self._add("orders", row)

    # ----------------------------------------------------------------- batches

    async def flush(self) -> int:
        """Write everything pending; returns rows written.

        Quotes go in chunks of ``QUOTE_CHUNK`` rows, one transaction each, so a backlog
        built up during a burst (or an outage) is written in bounded pieces and other
        writers (alerts, the heartbeat) get the database between them. On failure the
        rows stay pending for a retry and the error is raised.
        """
        written = 0
        while self._pending_count or self._pending_deliveries:
            written += await self._flush_chunk()
        return written

    def _take_chunk(self) -> tuple[Batch, tuple[int, int]]:
        """The next batch, and what ``_batch_committed`` needs to know about it."""
        quotes = self._pending["quotes"]
        batch, self._pending = self._pending, _empty_batch()
        if len(quotes) > QUOTE_CHUNK:
            batch["quotes"], self._pending["quotes"] = quotes[:QUOTE_CHUNK], quotes[QUOTE_CHUNK:]
        self._pending_count = len(self._pending["quotes"])
        orders = batch["orders"]
        if len(orders) > 1:
            # An order changes state several times between flushes; the orders table
            # keeps only its newest snapshot, so only that is written (order_events
            # keeps every step).
            batch["orders"] = list({row[0]: row for row in orders}.values())
        self._batches_in_flight += 1
        return batch, (self._order_journal.size, self._restores)

    def _batch_committed(self, taken: tuple[int, int]) -> None:
        """Empty the journal file once every order row in it is in the database (or
        drop the part that is, when it has grown large).

        Each journal write queues its rows in the same synchronous step, so a batch
        holds every row the file had when the batch was taken, except rows of earlier
        batches: those are committed unless one is still in flight, or failed and put
        its rows back (``_restore``) after this batch was taken."""
        self._batches_in_flight -= 1
        size, restores = taken
        journal = self._order_journal
        if not size or restores != self._restores or self._batches_in_flight:
            return
        if journal.size == size:
            journal.clear()
        elif size >= JOURNAL_COMPACT_BYTES:
            # Orders keep coming while batches are in flight: drop what is in the
            # database, keep the rest (written anew; a few hundred bytes).
            journal.drop_prefix(size)

    def _count_write_error(self, exc: BaseException) -> None:
        self.write_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def _batch_failed(self, batch: Batch) -> None:
        self._batches_in_flight -= 1
        self._restore(batch)

    async def _flush_chunk(self) -> int:
        if self._writer is not None:
            return await self._flush_chunk_to_writer(self._writer)
        batch: Batch | None = None
        taken = (0, 0)
        alerts: list[Alert] = []
        deliveries: dict[int, tuple[Alert, str]] = {}
        new_ids: dict[int, tuple[Alert, int]] = {}
        try:
            async with self._db.transaction():
                # Taken under the lock: batches commit in the order they were taken.
                batch, taken = self._take_chunk()
                alerts, self._pending_alerts = self._pending_alerts, []
                deliveries, self._pending_deliveries = self._pending_deliveries, {}
                written = await self._db.write_batch_in_transaction(batch)
                new_ids = await self._write_alerts(alerts, deliveries)
                written += len(alerts)
        except BaseException as exc:
            if batch is not None:
                self._batch_failed(batch)
            self._restore_alerts(alerts, deliveries)
            self._count_write_error(exc)
            raise
        self._batch_committed(taken)
        self._remember_alert_ids(new_ids)
        self.rows_written += written
        self.flushes += 1
        return written

    async def _flush_chunk_to_writer(self, writer: WriterProcess) -> int:
        # The child commits batches in the order they were sent, which is the order
        # they were taken.
        batch, taken = self._take_chunk()
        self._pending_count += len(self._pending_alerts)  # still pending: written below
        try:
            written = await writer.write_batch(batch)
        except BaseException as exc:
            self._batch_failed(batch)
            self._count_write_error(exc)
            raise
        self._batch_committed(taken)
        self.rows_written += written
        self.flushes += 1
        if self._pending_alerts or self._pending_deliveries:
            written += await self._flush_alerts()
        return written

    async def _flush_alerts(self) -> int:
        alerts, self._pending_alerts = self._pending_alerts, []
        self._pending_count -= len(alerts)
        deliveries, self._pending_deliveries = self._pending_deliveries, {}
        try:
            async with self._db.transaction():
                new_ids = await self._write_alerts(alerts, deliveries)
        except BaseException as exc:
            self._restore_alerts(alerts, deliveries)
            self._count_write_error(exc)
            raise
        self._remember_alert_ids(new_ids)
        self.rows_written += len(alerts)
        return len(alerts)

    async def _write_alerts(
        self, alerts: list[Alert], deliveries: dict[int, tuple[Alert, str]]
    ) -> dict[int, tuple[Alert, int]]:
        """Insert alerts, then apply delivery summaries; returns the new row ids."""
        ids = await self._db.insert_alerts_in_transaction([alert_row(a) for a in alerts])
        new_ids = {id(a): (a, row_id) for a, row_id in zip(alerts, ids, strict=True)}
        by_id: list[tuple[int, str]] = []
        for key, (alert, delivery) in deliveries.items():
            known = new_ids.get(key) or self._alert_row_ids.get(key)
            # ``is`` guards against a recycled id() of an alert long gone.
            if known is not None and known[0] is alert:
                by_id.append((known[1], delivery))
            else:
                await self._db.update_alert_delivery_by_match_in_transaction(
                    alert.ts, alert.key, alert.message, delivery
                )
        await self._db.update_alert_delivery_in_transaction(by_id)
        return new_ids

    def _remember_alert_ids(self, new_ids: dict[int, tuple[Alert, int]]) -> None:
        self._alert_row_ids.update(new_ids)
        while len(self._alert_row_ids) > _REMEMBERED_ALERTS:
            self._alert_row_ids.popitem(last=False)

    def _restore_alerts(
        self, alerts: list[Alert], deliveries: dict[int, tuple[Alert, str]]
    ) -> None:
        self._pending_alerts[:0] = alerts
        self._pending_count += len(alerts)
        # A summary that arrived meanwhile is newer than the one being restored.
        self._pending_deliveries = {**deliveries, **self._pending_deliveries}

    def _restore(self, batch: Batch) -> None:
        """Put unwritten rows back in front of anything that arrived meanwhile."""
        self._restores += 1
        for table, rows in batch.items():
            if rows:
                self._pending[table][:0] = rows
                self._pending_count += len(rows)
        if self._pending_count > self._max_pending:
            self._shed()

    async def run(self) -> None:
        """Flush every ``flush_ms``, or as soon as ``flush_rows`` rows are pending,
        until ``stop()``. Write errors are logged and retried with backoff."""
        self._run_task = asyncio.current_task()
        while not self._stopping:
            await self._wait_for_work()
            if self._stopping:
                break  # stop() does the final flush
            if self._pending_count or self._pending_deliveries:
                await self._flush_or_back_off()

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._flush_s):
                await self._wake.wait()
        self._wake.clear()

    async def _flush_or_back_off(self) -> None:
        try:
            await self.flush()
        except Exception:
            self._failures += 1
            delay = min(self._flush_s * 2**self._failures, _MAX_BACKOFF_S)
            logger.exception(
                "recorder: flush failed, {n} rows kept, retry in {delay:.2f}s",
                n=self._pending_count,
                delay=delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_requested.wait()
        else:
            self._failures = 0

    async def stop(self) -> None:
        """Stop listening, end ``run()`` and write what is pending (raises if that fails)."""
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop_requested.set()
        self._wake.set()
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait([task])
        try:
            await self.flush()
        except Exception:
            logger.exception("recorder: final flush failed, {n} rows lost", n=self._pending_count)
            raise
        else:
            if not self._batches_in_flight:
                self._order_journal.clear()  # every order is in the database
        finally:
            self._order_journal.close()
            if self._writer is not None:
                await self._writer.close()
