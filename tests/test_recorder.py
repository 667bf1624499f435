"""storage.recorder on a real EventBus and a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from loguru import logger

from core.bus import EventBus
from core.events import (
    AlertRaised,
    BarClosed,
    BreakerReset,
    BreakerTripped,
    BrokerConnectionChanged,
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
    TargetChanged,
    TradingStateChanged,
)
from core.model import (
    Alert,
    AlertSeverity,
    Bar,
    Fill,
    Order,
    OrderIntent,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    TargetPosition,
    TradingState,
)
from storage.database import Database
from storage.order_journal import JournalInUse, OrderJournalFile, journal_path, read_rows
from storage.recorder import Recorder
from storage.rows import order_row
from storage.writer import WriterProcess
from storage.writer_process import encode

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tc.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    # A short busy timeout so the lock-contention tests fail fast instead of waiting 5 s.
    database = await Database.open(db_path, busy_timeout_ms=20)
    yield database
    await database.close()


@pytest.fixture(params=["in-process", "writer-process"])
async def make_recorder(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Recorder]]:
    """Every behaviour below holds for both writers: aiosqlite in this process, and the
    child process the console uses (storage.writer_process)."""
    writers: list[WriterProcess] = []

    def make(db: Database, bus: EventBus, **kwargs: object) -> Recorder:
        if request.param == "writer-process":
            writers.append(WriterProcess(db.path, busy_timeout_ms=20))
            kwargs["writer"] = writers[-1]
        return Recorder(db, bus, **kwargs)  # type: ignore[arg-type]

    yield make
    for writer in writers:
        await writer.close()


@pytest.fixture
def peek(db_path: Path) -> Iterator[Callable[[str], int]]:
    """Row counts seen by a second, plain sqlite3 connection: what is really on disk."""
    conn = sqlite3.connect(db_path, isolation_level=None)

    def count(table: str) -> int:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    yield count
    conn.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def quote(i: int) -> QuoteReceived:
    return QuoteReceived(Quote("AAPL", T0 + timedelta(milliseconds=i), 100.0, 100.1, 1, 1))


def make_order(cid: str = "c-1") -> Order:
    return Order(cid, "AAPL", Side.BUY, 100, OrderType.LIMIT, T0, limit_price=100.0)


def fill(exec_id: str = "e-1") -> FillReceived:
    return FillReceived(Fill(exec_id, "c-1", "AAPL", Side.BUY, 100, 100.0, 1.0, T0))


async def stop_task(recorder: Recorder, task: asyncio.Task[None]) -> None:
    await recorder.stop()
    await asyncio.wait_for(task, 1.0)


# --------------------------------------------------------------------------- batching


async def test_nothing_is_written_until_the_row_threshold(
    make_recorder: Callable[..., Recorder], db: Database, peek: Callable[[str], int]
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=10, flush_ms=60_000)
    task = asyncio.create_task(recorder.run())
    for i in range(9):
        bus.publish(quote(i))
    await asyncio.sleep(0.05)
    assert peek("quotes") == 0
    assert recorder.pending_rows == 9

    bus.publish(quote(9))
    # The rows are on disk a moment before the writer process's reply is handled.
    await wait_until(lambda: peek("quotes") == 10 and recorder.flushes == 1)
    assert (recorder.flushes, recorder.rows_written, recorder.pending_rows) == (1, 10, 0)

    await stop_task(recorder, task)
    assert peek("quotes") == 10  # written exactly once
    assert recorder.rows_written == 10


async def test_pending_rows_are_written_after_flush_ms(
    make_recorder: Callable[..., Recorder], db: Database, peek: Callable[[str], int]
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=1000, flush_ms=250)
    task = asyncio.create_task(recorder.run())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    published_at = loop.time()
    for i in range(3):
        bus.publish(quote(i))
    await asyncio.sleep(0.02)
    if loop.time() - published_at < 0.2:  # a loaded CI machine may oversleep; then skip this
        assert peek("quotes") == 0
    await wait_until(lambda: peek("quotes") == 3 and recorder.flushes == 1)
    await stop_task(recorder, task)
    assert peek("quotes") == 3


async def test_stop_flushes_everything_and_ends_run(
    make_recorder: Callable[..., Recorder], db: Database, peek: Callable[[str], int]
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=1000, flush_ms=60_000)
    task = asyncio.create_task(recorder.run())
    for i in range(25):
        bus.publish(quote(i))
    bus.publish(fill())
    await recorder.stop()
    assert task.done()
    assert (peek("quotes"), peek("fills")) == (25, 1)
    assert recorder.pending_rows == 0
    bus.publish(quote(99))  # unsubscribed: nothing piles up after stop
    assert recorder.pending_rows == 0


async def test_order_events_are_recorded_as_they_were_published(
    make_recorder: Callable[..., Recorder], db: Database
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=1000, flush_ms=60_000)
    order = make_order()
    bus.publish(OrderSubmitted(order.snapshot(), T0))
    order.transition(OrderStatus.SUBMITTED, T0 + timedelta(seconds=1), "acked")
    bus.publish(OrderUpdated(order.snapshot(), T0 + timedelta(seconds=1)))
    # The engine's live order moves on before anything is flushed.
    order.transition(OrderStatus.PARTIALLY_FILLED, T0 + timedelta(seconds=2), "part")
    order.apply_fill_quantity(40, 100.0, 0.5)

    await recorder.flush()
    events = await db.order_events("c-1")
    assert [(e[3], e[4], e[6]) for e in events] == [
        ("PendingSubmit", 0, "submitted"),
        ("Submitted", 0, "acked"),
    ]
    stored = await db.order("c-1")
    assert stored is not None
    assert (stored.status, stored.filled_quantity) == (OrderStatus.SUBMITTED, 0)

    bus.publish(OrderUpdated(order.snapshot(), T0 + timedelta(seconds=2)))
    await recorder.flush()
    stored = await db.order("c-1")
    assert stored == order
    assert len(await db.order_events("c-1")) == 3


# --------------------------------------------------------------------------- journal


async def test_write_order_is_on_record_when_it_returns_and_in_the_next_batch(
    make_recorder: Callable[..., Recorder], db: Database, db_path: Path, peek: Callable[[str], int]
) -> None:
    recorder = make_recorder(db, EventBus(), flush_rows=1000, flush_ms=60_000)
    order = make_order("c-journal")
    await recorder.write_order(order)
    # on record in the journal file before the caller may send it ...
    assert read_rows(journal_path(db_path)) == [order_row(order.snapshot())]
    assert peek("orders") == 0
    # ... and in the database with the next batch, after which the file is emptied
    assert await recorder.flush() == 1
    with sqlite3.connect(db_path) as other:
        row = other.execute(
            "SELECT symbol, status, limit_price FROM orders WHERE client_order_id = 'c-journal'"
        ).fetchone()
    assert row == ("AAPL", "PendingSubmit", 100.0)
    assert journal_path(db_path).stat().st_size == 0
    await recorder.stop()


async def test_orders_journaled_by_a_process_that_died_are_folded_in_on_the_next_start(
    db: Database, db_path: Path
) -> None:
    first = Recorder(db, EventBus())
    lost, later = make_order("c-lost"), make_order("c-later")
    await first.write_orders([lost, later])
    # The process dies before its next batch: only ``c-later`` reached the database,
    # and in a later state than its journal row.
    later.transition(OrderStatus.SUBMITTED, T0 + timedelta(seconds=1))
    async with db.transaction():
        await db.write_rows_in_transaction("orders", [order_row(later.snapshot())])
    first._order_journal.close()  # what the kernel does for a process that died
    second = Recorder(db, EventBus())
    state = await second.load_recovery(T0 - timedelta(hours=1))
    assert await db.order("c-lost") == lost
    stored = await db.order("c-later")
    assert stored is not None and stored.status == OrderStatus.SUBMITTED  # not rolled back
    assert {o.client_order_id for o in state.orders} == {"c-lost", "c-later"}
    assert journal_path(db_path).stat().st_size == 0
    assert await second.fold_order_journal() == 0  # nothing twice


async def test_a_second_console_on_the_same_database_is_refused_before_it_trades(
    db: Database, db_path: Path
) -> None:
    running = Recorder(db, EventBus())
    await running.write_order(make_order("c-working"))
    second = OrderJournalFile(journal_path(db_path))
    with pytest.raises(JournalInUse, match="another trading console is using this database"):
        second.open()
    with pytest.raises(JournalInUse):
        await Recorder(db, EventBus()).load_recovery(T0)  # its start-up fold empties nothing
    assert len(read_rows(journal_path(db_path))) == 1
    await running.stop()  # writes the order, empties the file and releases the lock
    second.open()
    second.close()


async def test_an_earlier_runs_journal_is_never_emptied_before_it_is_folded_in(
    make_recorder: Callable[..., Recorder], db: Database, db_path: Path
) -> None:
    dead = OrderJournalFile(journal_path(db_path))
    dead.append(
        [order_row(make_order("c-dead").snapshot())]
    )  # a console that died before its batch
    dead.close()
    recorder = make_recorder(db, EventBus())  # this run fails before it folds the file
    await recorder.write_order(make_order("c-new"))
    await recorder.flush()
    await recorder.stop()
    assert [row[0] for row in read_rows(journal_path(db_path))] == ["c-dead", "c-new"]
    assert await db.order("c-dead") is None
    # the next start folds it in
    await Recorder(db, EventBus()).load_recovery(T0)
    assert await db.order("c-dead") is not None
    assert journal_path(db_path).stat().st_size == 0


async def test_a_damaged_journal_is_folded_up_to_the_damage_and_kept_aside(
    db: Database, db_path: Path
) -> None:
    path = journal_path(db_path)
    journal = OrderJournalFile(path)
    journal.append([order_row(make_order("c-1").snapshot())])
    journal.close()
    with path.open("ab") as f:
        f.write(bytes(64))  # a zero-filled tail, as a power cut can leave
    recorder = Recorder(db, EventBus())
    assert await recorder.fold_order_journal() == 1
    assert await db.order("c-1") is not None
    [kept] = list(path.parent.glob("tc.db-orders.damaged-*"))
    assert kept.stat().st_size == len(encode([order_row(make_order("c-1").snapshot())])) + 64
    assert path.stat().st_size == 0
    await recorder.stop()


async def test_a_journal_that_is_never_found_fully_committed_sheds_its_committed_part(
    db: Database, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage.journal_compaction

    monkeypatch.setattr(storage.journal_compaction, "JOURNAL_COMPACT_BYTES", 1)
    writer = WriterProcess(db_path)
    recorder = Recorder(db, EventBus(), flush_rows=1000, flush_ms=60_000, writer=writer)
    await recorder.write_order(make_order("c-1"))
    flushing = asyncio.create_task(recorder._flusher.flush_chunk())  # one batch (flush() loops)
    await asyncio.sleep(0)  # c-1's batch is taken and on its way to the writer process
    await recorder.write_order(make_order("c-2"))  # journaled while that batch is in flight
    await flushing
    # c-1 is in the database and gone from the file; c-2 is only in the file, still locked
    assert await db.order("c-1") is not None and await db.order("c-2") is None
    assert [row[0] for row in read_rows(journal_path(db_path))] == ["c-2"]
    with pytest.raises(JournalInUse):
        OrderJournalFile(journal_path(db_path)).open()
    await recorder.write_order(make_order("c-3"))  # appends go to the new file
    assert [row[0] for row in read_rows(journal_path(db_path))] == ["c-2", "c-3"]
    await recorder.stop()
    assert await db.order("c-2") is not None and await db.order("c-3") is not None
    assert journal_path(db_path).stat().st_size == 0


def test_a_torn_last_journal_write_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "tc.db-orders"
    journal = OrderJournalFile(path)
    journal.append([order_row(make_order("c-1").snapshot())])
    journal.close()
    with path.open("ab") as f:
        f.write(b"\x00\x00\x01\x00partial")  # a frame announcing 256 bytes, cut short
    assert read_rows(path) == [order_row(make_order("c-1").snapshot())]


async def test_a_journal_write_that_fails_raises_and_queues_nothing(
    make_recorder: Callable[..., Recorder], db: Database, db_path: Path
) -> None:
    journal_path(db_path).mkdir()  # the file cannot be opened
    recorder = make_recorder(db, EventBus())
    with pytest.raises(OSError):
        await recorder.write_order(make_order())
    assert recorder.pending_rows == 0


async def test_write_order_supersedes_older_pending_snapshots(
    make_recorder: Callable[..., Recorder], db: Database
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=1000, flush_ms=60_000)
    order = make_order()
    bus.publish(OrderSubmitted(order.snapshot(), T0))
    order.transition(OrderStatus.SUBMITTED, T0 + timedelta(seconds=1))
    order.broker_order_id = "77"
    await recorder.write_order(order)
    await recorder.flush()
    assert await db.order("c-1") == order  # the older pending snapshot did not win
    assert len(await db.order_events("c-1")) == 1  # history rows are kept


async def test_write_order_runs_safely_beside_a_batch_flush(
    make_recorder: Callable[..., Recorder], db: Database, peek: Callable[[str], int]
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=100_000, flush_ms=60_000)
    for i in range(5000):
        bus.publish(quote(i))
    orders = [make_order(f"c-{i}") for i in range(5)]
    await asyncio.gather(recorder.flush(), *(recorder.write_order(o) for o in orders))
    await recorder.flush()
    assert (peek("quotes"), peek("orders")) == (5000, 5)
    assert recorder.rows_written == 5005


# --------------------------------------------------------------------------- event mapping


async def test_every_recorded_event_type_lands_in_its_table(
    make_recorder: Callable[..., Recorder], db: Database, peek: Callable[[str], int]
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus)
    intent = OrderIntent("AAPL", Side.BUY, 500, reason="signal")
    order = make_order()
    events: list[object] = [
        quote(0),
        BarClosed(Bar("AAPL", T0, T0 + timedelta(minutes=1), 1.0, 2.0, 0.5, 1.5, 9)),
        OrderSubmitted(order.snapshot(), T0),
        OrderRejected(order.snapshot(), "no margin", T0, error_code=201),
        fill(),
        IntentClamped(intent, 200, "max position", T0),
        RiskRejected(intent, "halted", T0),
        QuoteRejected("AAPL", "crossed", T0),
        DrawdownExceeded(5.5, 100_000.0, 94_500.0, T0),
        BreakerTripped("daily loss limit", -1234.5, T0),
        BreakerReset("operator", T0),
        PositionMismatch("MSFT", 10, 0, T0),
        TradingStateChanged(TradingState.ACTIVE, TradingState.HALTED, "STOP file", T0),
        DailyPnlRecorded("2026-01-05", 1.0, 2.0, 0.5, 2.5, 100.0, 0.1, T0),
        AlertRaised(Alert(AlertSeverity.CRITICAL, "breaker", "tripped", T0)),
        # Not recorded:
        TargetChanged(TargetPosition("AAPL", 100), T0),
        BrokerConnectionChanged(True, "connected", T0),
    ]
    for event in events:
        bus.publish(event)
    await recorder.stop()

    counts = {
        t: peek(t)
        for t in (
            "quotes",
            "bars",
            "orders",
            "order_events",
            "fills",
            "risk_events",
            "trading_state_changes",
            "daily_pnl",
            "alerts",
        )
    }
    assert counts == {
        "quotes": 1,
        "bars": 1,
        "orders": 1,
        "order_events": 2,
        "fills": 1,
        "risk_events": 7,
        "trading_state_changes": 1,
        "daily_pnl": 1,
        "alerts": 1,
    }
    risk = {e.kind: e for e in await db.risk_events()}
    assert list(risk) == [
        "clamped",
        "rejected",
        "quote_rejected",
        "drawdown",
        "breaker_tripped",
        "breaker_reset",
        "position_mismatch",
    ]
    assert "max position" in risk["clamped"].detail and "200" in risk["clamped"].detail
    assert risk["rejected"].symbol == "AAPL" and "halted" in risk["rejected"].detail
    assert "-1234.50" in risk["breaker_tripped"].detail
    assert risk["position_mismatch"].symbol == "MSFT"
    rejected_event = (await db.order_events("c-1"))[-1]
    assert rejected_event[6] == "rejected: no margin (code 201)"
    (alert,) = await db.recent_alerts(5)
    assert (alert.severity, alert.key, alert.delivery) == ("critical", "breaker", "")


async def test_repeated_fills_are_stored_once(
    make_recorder: Callable[..., Recorder], db: Database
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus)
    bus.publish(fill("e-1"))
    bus.publish(fill("e-1"))  # e.g. re-sent by the broker after a reconnect
    await recorder.flush()
    bus.publish(fill("e-1"))
    bus.publish(fill("e-2"))
    await recorder.flush()
    assert await db.fill_count() == 2


async def test_quotes_can_be_left_out(
    make_recorder: Callable[..., Recorder], db: Database, peek: Callable[[str], int]
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus, record_quotes=False)
    bus.publish(quote(0))
    bus.publish(fill())
    await recorder.flush()
    assert (peek("quotes"), peek("fills")) == (0, 1)


# --------------------------------------------------------------------------- failures


async def test_failed_flush_keeps_rows_for_retry(
    make_recorder: Callable[..., Recorder], db: Database, db_path: Path, peek: Callable[[str], int]
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus)
    for i in range(3):
        bus.publish(quote(i))
    bus.publish(fill())
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await recorder.flush()
        # the journal does not need the database: the order is on record in the file
        await recorder.write_order(make_order())
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await recorder.flush()
        assert recorder.pending_rows == 5
        assert recorder.write_errors == 2
        assert len(read_rows(journal_path(db_path))) == 1  # kept until it is in the database
    finally:
        blocker.rollback()
        blocker.close()
    assert await recorder.flush() == 5
    assert (peek("quotes"), peek("fills"), peek("orders")) == (3, 1, 1)
    assert journal_path(db_path).stat().st_size == 0


async def test_run_logs_write_errors_and_retries(
    make_recorder: Callable[..., Recorder], db: Database, db_path: Path, peek: Callable[[str], int]
) -> None:
    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(str(m)), level="ERROR")
    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=1, flush_ms=20)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    task = asyncio.create_task(recorder.run())
    try:
        bus.publish(fill())
        await wait_until(lambda: recorder.write_errors >= 1)
        assert not task.done()
        assert any("flush failed" in e for e in errors)
    finally:
        blocker.rollback()
        blocker.close()
        logger.remove(sink)
    await wait_until(lambda: peek("fills") == 1)
    await stop_task(recorder, task)
    assert peek("fills") == 1


async def test_pending_market_data_is_shed_beyond_the_cap_but_orders_never(
    make_recorder: Callable[..., Recorder],
    db: Database,
) -> None:
    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=1000, flush_ms=60_000, max_pending_rows=5)
    bus.publish(OrderSubmitted(make_order().snapshot(), T0))  # 2 rows: orders + order_events
    for i in range(10):
        bus.publish(quote(i))
    assert recorder.pending_rows == 5
    assert recorder.rows_dropped == 7
    await recorder.flush()
    kept = await db.quotes("AAPL", T0, T0 + timedelta(seconds=1))
    assert [q.ts for q in kept] == [T0 + timedelta(milliseconds=i) for i in (7, 8, 9)]
    assert await db.order("c-1") is not None


async def test_a_quote_backlog_is_written_in_chunks(
    make_recorder: Callable[..., Recorder], db: Database, peek: Callable[[str], int]
) -> None:
    from storage.pending import QUOTE_CHUNK

    bus = EventBus()
    recorder = make_recorder(db, bus, flush_rows=10**9, flush_ms=60_000)
    total = 3 * QUOTE_CHUNK + 7
    for i in range(total):
        bus.publish(quote(i))
    assert await recorder.flush() == total
    assert peek("quotes") == total
    assert recorder.flushes == 4
    await recorder.stop()
