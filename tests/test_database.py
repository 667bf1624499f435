"""storage.database against real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.events import DailyPnlRecorded, TradingStateChanged
from core.heartbeat import HeartbeatRecord, HeartbeatState
from core.model import (
    Alert,
    AlertSeverity,
    Bar,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Quote,
    QuoteSource,
    Side,
    TradingState,
)
from storage.database import Database, init_database
from storage.rows import (
    alert_row,
    bar_row,
    daily_pnl_row,
    quote_row,
    risk_event_row,
    state_change_row,
    to_db_ts,
)
from storage.schema import MIGRATIONS, SCHEMA_VERSION, TABLE_COLUMNS, SchemaVersionError

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "tc.db")
    yield database
    await database.close()


def _plain(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


def make_order(cid: str = "c-1", **changes: object) -> Order:
    order = Order(
        client_order_id=cid,
        symbol="AAPL",
        side=Side.BUY,
        quantity=100,
        order_type=OrderType.MARKET,
        created_at=T0,
        reason="ma cross up",
    )
    for name, value in changes.items():
        setattr(order, name, value)
    return order


def make_fill(exec_id: str = "e-1", ts: datetime = T0) -> Fill:
    return Fill(exec_id, "c-1", "AAPL", Side.BUY, 40, 187.25, 0.35, ts)


# --------------------------------------------------------------------------- schema


async def test_open_creates_parent_dirs_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tc.db"
    db = await Database.open(path)
    try:
        assert await db.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
        assert await db.journal_mode() == "wal"
    finally:
        await db.close()
    with _plain(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert set(TABLE_COLUMNS) <= tables
        for table, columns in TABLE_COLUMNS.items():
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            assert tuple(r[1] for r in info) == columns, table


async def test_reopen_is_a_no_op_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "tc.db"
    db = await Database.open(path)
    await db.upsert_order(make_order())
    await db.close()
    # A second run of migration 1 would fail on CREATE TABLE; reopening must skip it.
    db = await Database.open(path)
    try:
        assert await db.schema_version() == SCHEMA_VERSION
        assert await db.order("c-1") == make_order()
    finally:
        await db.close()


async def test_migrations_apply_in_order_from_an_older_version(tmp_path: Path) -> None:
    path = tmp_path / "tc.db"
    await (await Database.open(path, migrations=MIGRATIONS[:1])).close()
    extra = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);"
    db = await Database.open(path, migrations=(*MIGRATIONS[:1], extra))
    try:
        assert await db.schema_version() == 2
    finally:
        await db.close()
    with _plain(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0


async def test_failed_migration_rolls_back_schema_and_version(tmp_path: Path) -> None:
    path = tmp_path / "tc.db"
    await (await Database.open(path)).close()
    broken = "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);"
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        await Database.open(path, migrations=(*MIGRATIONS, broken))
    with _plain(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in names


async def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tc.db"
    with _plain(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 3}")
    with pytest.raises(SchemaVersionError, match=rf"version {SCHEMA_VERSION + 3}.*up to"):
        await Database.open(path)


async def test_init_database(tmp_path: Path) -> None:
    path = tmp_path / "data" / "tc.db"
    assert await init_database(path) == SCHEMA_VERSION
    assert path.exists()
    assert await init_database(path) == SCHEMA_VERSION


# --------------------------------------------------------------------------- orders and fills


async def test_order_upsert_round_trip_all_fields(db: Database) -> None:
    market = make_order("c-mkt")  # limit_price, updated_at, broker_order_id all None
    await db.upsert_order(market)
    assert await db.order("c-mkt") == market

    limit = make_order(
        "c-lmt",
        side=Side.SELL,
        order_type=OrderType.LIMIT,
        limit_price=186.5,
        status=OrderStatus.PARTIALLY_FILLED,
        updated_at=T0 + timedelta(seconds=2),
        filled_quantity=40,
        avg_fill_price=186.51,
        commission=0.35,
        broker_order_id="1042",
        last_message="partial",
        reduce_only=True,
    )
    await db.upsert_order(limit)
    assert await db.order("c-lmt") == limit

    limit.transition(OrderStatus.FILLED, T0 + timedelta(seconds=3), "done")
    limit.apply_fill_quantity(60, 186.6, 0.4)
    await db.upsert_order(limit)
    assert await db.order("c-lmt") == limit
    assert await db.count("orders") == 2
    assert await db.order("missing") is None


async def test_timestamps_are_stored_as_sortable_utc_text(db: Database, tmp_path: Path) -> None:
    eastern = timezone(timedelta(hours=-5))
    order = make_order(created_at=datetime(2026, 1, 5, 9, 30, tzinfo=eastern))
    await db.upsert_order(order)
    with _plain(tmp_path / "tc.db") as conn:
        (stored,) = conn.execute("SELECT created_at FROM orders").fetchone()
    assert stored == "2026-01-05T14:30:00.000000+00:00"
    restored = await db.order("c-1")
    assert restored is not None
    assert restored.created_at == order.created_at
    assert restored.created_at.tzinfo is UTC


async def test_orders_since_and_working_orders(db: Database) -> None:
    old = make_order("old", created_at=T0 - timedelta(days=1))
    new = make_order("new", created_at=T0 + timedelta(minutes=1))
    done = make_order("done", created_at=T0, status=OrderStatus.FILLED)
    for order in (old, new, done):
        await db.upsert_order(order)
    assert [o.client_order_id for o in await db.orders_since(T0)] == ["done", "new"]
    assert {o.client_order_id for o in await db.working_orders()} == {"old", "new"}


async def test_fills_are_deduplicated_by_exec_id(db: Database) -> None:
    fill = make_fill()
    assert await db.insert_fill(fill) is True
    assert await db.insert_fill(fill) is False
    assert await db.insert_fill(make_fill("e-2", T0 + timedelta(seconds=1))) is True
    assert await db.fill_count() == 2
    assert await db.fills_since(T0) == [fill, make_fill("e-2", T0 + timedelta(seconds=1))]
    assert await db.fills_since(T0 + timedelta(seconds=1)) == [
        make_fill("e-2", T0 + timedelta(seconds=1))
    ]


# --------------------------------------------------------------------------- batches and queries


async def test_write_batch_and_queries(db: Database) -> None:
    quotes = [
        Quote("AAPL", T0 + timedelta(seconds=i), 100.0 + i, 100.1 + i, 5, 6, None, QuoteSource.SIM)
        for i in range(3)
    ]
    other = Quote("MSFT", T0, 400.0, 400.2, 1, 1, 400.1, QuoteSource.STREAM)
    bar = Bar("AAPL", T0, T0 + timedelta(minutes=1), 100.0, 101.0, 99.5, 100.5, 42)
    alerts = [
        Alert(AlertSeverity.INFO, f"k{i}", f"m{i}", T0 + timedelta(seconds=i)) for i in range(3)
    ]
    change = TradingStateChanged(TradingState.ACTIVE, TradingState.TRIPPED, "loss limit", T0)
    pnl = DailyPnlRecorded("2026-01-05", -50.0, 10.0, 2.0, -42.0, 100_000.0, 0.5, T0)
    written = await db.write_batch(
        {
            "quotes": [quote_row(q) for q in (*quotes, other)],
            "bars": [bar_row(bar)],
            "alerts": [alert_row(a) for a in alerts],
            "trading_state_changes": [state_change_row(change)],
            "daily_pnl": [daily_pnl_row(pnl)],
            "risk_events": [
                risk_event_row(T0, "rejected", "AAPL", "too big"),
                risk_event_row(T0, "breaker_tripped", None, "loss"),
            ],
        }
    )
    assert written == 12

    # Half-open range: the quote at exactly `end` is excluded.
    assert await db.quotes("AAPL", T0, T0 + timedelta(seconds=2)) == quotes[:2]
    assert await db.quotes("MSFT", T0, T0 + timedelta(days=1)) == [other]
    assert await db.bars("AAPL", T0, T0 + timedelta(minutes=1)) == [bar]
    assert [a.key for a in await db.recent_alerts(2)] == ["k2", "k1"]
    assert await db.state_changes() == [change]
    assert await db.daily_pnl("2026-01-05") == pnl
    assert await db.daily_pnl("2026-01-06") is None
    assert [e.kind for e in await db.risk_events()] == ["rejected", "breaker_tripped"]
    (tripped,) = await db.risk_events("breaker_tripped")
    assert tripped.symbol is None and tripped.detail == "loss"

    # daily_pnl is one row per day: a second summary for the day replaces the first.
    later = DailyPnlRecorded("2026-01-05", -60.0, 0.0, 2.5, -62.5, 100_000.0, 0.7, T0)
    await db.write_batch({"daily_pnl": [daily_pnl_row(later)]})
    assert await db.daily_pnl("2026-01-05") == later
    assert await db.count("daily_pnl") == 1


async def test_in_transaction_writers_refuse_to_run_outside_a_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError, match="transaction"):
        await db.write_rows_in_transaction("quotes", [])


async def test_transaction_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(ZeroDivisionError):
        async with db.transaction():
            await db.write_rows_in_transaction("quotes", [quote_row(Quote("A", T0, 1.0, 1.1))])
            raise ZeroDivisionError
    assert await db.count("quotes") == 0
    with pytest.raises(ValueError, match="unknown table"):
        await db.count("nope")
    assert to_db_ts(T0) < to_db_ts(T0 + timedelta(microseconds=1))


# ------------------------------------------------ reads, writes and the other writer


def _hold_write_lock(path: Path, seconds: float) -> threading.Thread:
    """Another connection (as the writer process is) holds the write lock a while."""
    taken = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO quotes VALUES ('X', 't', 1, 2, 1, 1, NULL, 'sim')")
        taken.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(5)
    return thread


async def test_a_read_in_flight_does_not_make_a_write_fail_while_the_writer_process_writes(
    db: Database,
) -> None:
    # A SELECT still open on this connection when its BEGIN IMMEDIATE runs makes SQLite
    # answer "database is locked" at once instead of waiting for the other writer (the
    # final flush of a stopping console failed so).
    await db.write_batch({"quotes": [quote_row(Quote("A", T0, 1.0, 1.1))]})
    holder = _hold_write_lock(db.path, 0.3)
    try:
        count, _ = await asyncio.gather(
            db.count("quotes"),
            db.write_heartbeat(HeartbeatRecord(T0, 1, HeartbeatState.RUNNING, T0)),
        )
    finally:
        await asyncio.to_thread(holder.join)
    assert count in (1, 2)
    beat = await db.heartbeat()
    assert beat is not None and beat.state is HeartbeatState.RUNNING


async def test_a_begin_sqlite_refuses_at_once_is_retried_within_the_busy_timeout(
    db: Database,
) -> None:
    # A statement left open on the connection (here on purpose, by reaching past the
    # class) while another writer commits: SQLite answers BEGIN IMMEDIATE with
    # SQLITE_BUSY_SNAPSHOT at once, without its busy handler. The transaction retries
    # until the statement is done instead of failing the flush.
    await db.write_batch({"quotes": [quote_row(Quote("A", T0, 1.0, 1.1))] * 3})
    cursor = await db._conn.execute("SELECT * FROM quotes")
    await cursor.fetchone()
    holder = _hold_write_lock(db.path, 0.05)
    await asyncio.to_thread(holder.join)  # committed: the open read is now stale

    async def finish_the_read() -> None:
        await asyncio.sleep(0.2)
        await cursor.close()

    closer = asyncio.create_task(finish_the_read())
    await db.write_heartbeat(HeartbeatRecord(T0, 1, HeartbeatState.RUNNING, T0))
    await closer
    beat = await db.heartbeat()
    assert beat is not None and beat.state is HeartbeatState.RUNNING


async def test_a_task_cancelled_while_its_transaction_begins_leaves_no_transaction_open(
    db: Database,
) -> None:
    holder = _hold_write_lock(db.path, 0.3)
    try:
        task = asyncio.create_task(db.write_batch({"quotes": [quote_row(Quote("A", T0, 1, 2))]}))
        await asyncio.sleep(0.05)  # BEGIN IMMEDIATE is waiting for the other writer
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await asyncio.to_thread(holder.join)
    # Had the BEGIN stayed open, this would fail ("cannot start a transaction within a
    # transaction") and the other writer would wait for a lock never released.
    await db.write_batch({"quotes": [quote_row(Quote("B", T0, 1.0, 1.1))]})
    with _plain(db.path) as other:
        assert other.execute("SELECT COUNT(*) FROM quotes WHERE symbol = 'B'").fetchone()[0] == 1


async def test_a_day_export_in_progress_does_not_hold_back_writes(db: Database) -> None:
    await db.write_batch({"quotes": [quote_row(Quote("A", T0, 1.0, 1.1))] * 3})
    chunks = db.iter_day_rows("quotes", T0.date(), chunk_rows=1)
    first = await anext(chunks)  # the export's cursor is open between chunks
    holder = _hold_write_lock(db.path, 0.2)
    try:
        await db.write_heartbeat(HeartbeatRecord(T0, 1, HeartbeatState.RUNNING, T0))
    finally:
        await asyncio.to_thread(holder.join)
    rest = [row async for chunk in chunks for row in chunk]
    assert len(first) == 1 and len(rest) == 2


# ------------------------------------------------------------------ the single-console lock


def _console_env(tmp_path: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIM_", "TRADING_"))}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        DATA_DIR=str(data_dir),
        STOP_FILE=str(tmp_path / "STOP"),
        SYMBOLS="AAPL",
        SIM_QUOTES_PER_SECOND="20",
    )
    env.update(extra)
    return env


def _quote_count(db: Path) -> int:
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM quotes").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_the_lock_holds_for_every_name_of_the_database(tmp_path: Path) -> None:
    """A symlink, a hard link and another relative path to the live database all meet the
    first console's lock: exit 2 before they write anything into its database."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cli = [sys.executable, "-m", "tui.commands.cli", "--headless"]
    live = tmp_path / "data" / "trading.db"
    first = subprocess.Popen(
        cli,
        cwd=tmp_path,
        env=_console_env(tmp_path, tmp_path / "data"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while _quote_count(live) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _quote_count(live) >= 10
        (tmp_path / "alias.db").symlink_to(live)
        os.link(live, tmp_path / "hard.db")
        names = {
            "symlink": str(tmp_path / "alias.db"),
            "hard link": str(tmp_path / "hard.db"),
            "relative path": "other/../data/./trading.db",
        }
        (tmp_path / "other").mkdir()
        for what, name in names.items():
            second = subprocess.run(
                cli,
                cwd=tmp_path,
                env=_console_env(tmp_path, tmp_path / "second", DATABASE_FILE=name),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 2, (what, second.stderr[-2000:])
            assert "another trading console is using this database" in second.stderr, what
            assert "Traceback" not in second.stderr
        assert not (tmp_path / "alias.db-orders").exists()
        assert not (tmp_path / "hard.db-orders").exists()
        assert first.poll() is None
        (tmp_path / "hard.db").unlink()
        first.send_signal(signal.SIGINT)
        _out, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-2000:]
