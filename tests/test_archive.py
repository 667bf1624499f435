"""storage.archive and tui.commands.archive_cmd: Parquet export, import and quote pruning against
real SQLite files, read back the way pandas and pyarrow users read them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from core.bus import EventBus
from core.clock import SimClock
from core.events import (
    AlertRaised,
    BreakerTripped,
    DailyPnlRecorded,
    FillReceived,
    OrderSubmitted,
    OrderUpdated,
    QuoteReceived,
    TradingStateChanged,
)
from core.model import (
    Alert,
    AlertSeverity,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Quote,
    QuoteSource,
    Side,
    TradingState,
)
from storage.archive import (
    SCHEMAS,
    ArchiveError,
    archive_path,
    archived_days,
    export_day,
    import_archive,
    import_file,
    load_quotes,
    open_dataset,
    prune_quotes,
    read_parquet_table,
)
from storage.database import Database
from storage.recorder import Recorder
from storage.rows import quote_row
from storage.schema import TABLE_COLUMNS
from tests.helpers import settings
from tui.commands.archive_cmd import (
    EndOfDayArchiver,
    run_export,
    run_import,
    run_prune,
    stop_archiver,
)

DAY = date(2026, 1, 5)
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
DAY_START = datetime(2026, 1, 5, tzinfo=UTC)
NEXT_DAY = DAY_START + timedelta(days=1)


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(tmp_path / "source.db")
    yield db
    await db.close()


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(tmp_path / "target.db")
    yield db
    await db.close()


def day_quotes() -> list[Quote]:
    return [
        Quote("AAPL", DAY_START, 99.0, 99.2, 3, 4, None, QuoteSource.STREAM),
        Quote("AAPL", T0, 100.0, 100.1, 5, 6, 100.05, QuoteSource.POLL),
        Quote("AAPL", NEXT_DAY - timedelta(microseconds=1), 101.0, 101.1, 1, 1, None),
    ]


def orders() -> list[Order]:
    market = Order("c-mkt", "AAPL", Side.BUY, 100, OrderType.MARKET, T0, reason="cross up")
    limit = Order(
        "c-lmt",
        "AAPL",
        Side.SELL,
        50,
        OrderType.LIMIT,
        T0 + timedelta(seconds=5),
        limit_price=101.5,
        reduce_only=True,
    )
    return [market, limit]


async def record_a_day(db: Database) -> None:
    """Fill the source database the way the running system does: through the bus."""
    bus = EventBus()
    recorder = Recorder(db, bus)
    for q in day_quotes():
        bus.publish(QuoteReceived(q))
    # Outside the day on both sides: must not be exported.
    bus.publish(QuoteReceived(Quote("AAPL", DAY_START - timedelta(microseconds=1), 1.0, 1.1)))
    bus.publish(QuoteReceived(Quote("AAPL", NEXT_DAY, 1.0, 1.1)))
    market, limit = orders()
    for order in (market, limit):
        await recorder.write_order(order)
        bus.publish(OrderSubmitted(order.snapshot(), order.created_at))
    market.transition(OrderStatus.FILLED, T0 + timedelta(seconds=1), "filled")
    market.apply_fill_quantity(100, 100.07, 1.0)
    market.broker_order_id = "9001"
    bus.publish(OrderUpdated(market.snapshot(), T0 + timedelta(seconds=1)))
    bus.publish(FillReceived(Fill("e-1", "c-mkt", "AAPL", Side.BUY, 60, 100.05, 0.6, T0)))
    bus.publish(FillReceived(Fill("e-2", "c-mkt", "AAPL", Side.BUY, 40, 100.1, 0.4, T0)))
    bus.publish(BreakerTripped("daily loss", -500.0, T0))
    bus.publish(AlertRaised(Alert(AlertSeverity.WARNING, "k", "msg", T0)))
    bus.publish(TradingStateChanged(TradingState.ACTIVE, TradingState.TRIPPED, "loss", T0))
    bus.publish(DailyPnlRecorded("2026-01-05", -500.0, 0.0, 1.0, -501.0, 1e5, 0.5, T0))
    await recorder.stop()


def test_schemas_match_the_database_columns() -> None:
    assert {t: tuple(s.names) for t, s in SCHEMAS.items()} == TABLE_COLUMNS


async def test_export_writes_one_typed_file_per_table_with_rows(
    source: Database, tmp_path: Path
) -> None:
    await record_a_day(source)
    out = tmp_path / "archive"
    exported = await export_day(source, DAY, out)
    files = {t: e.path for t, e in exported.items()}
    assert set(files) == set(TABLE_COLUMNS) - {"bars"}  # no bars were recorded
    assert files["quotes"] == out / "quotes" / "date=2026-01-05" / "part-0.parquet"
    assert exported["quotes"].rows == 3 and exported["fills"].rows == 2
    assert not archive_path(out, "bars", DAY).exists()
    assert not list(out.rglob("*.partial"))

    quotes = read_parquet_table(files["quotes"])
    assert quotes.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert quotes.schema.field("bid_size").type == pa.int64()
    assert quotes.num_rows == 3  # the two quotes outside the UTC day are left out
    orders_table = read_parquet_table(files["orders"])
    assert orders_table.schema.field("reduce_only").type == pa.bool_()
    assert orders_table.column("limit_price").to_pylist() == [None, 101.5]
    assert read_parquet_table(files["daily_pnl"]).column("day").to_pylist() == [DAY]

    assert await export_day(source, DAY + timedelta(days=3), out) == {}


async def test_export_then_import_round_trips(
    source: Database, target: Database, tmp_path: Path
) -> None:
    await record_a_day(source)
    files = {t: e.path for t, e in (await export_day(source, DAY, tmp_path / "archive")).items()}
    inserted = {t: (await import_file(target, t, p)).inserted for t, p in files.items()}
    assert inserted == {
        "quotes": 3,
        "orders": 2,
        "order_events": 3,
        "fills": 2,
        "daily_pnl": 1,
        "risk_events": 1,
        "alerts": 1,
        "trading_state_changes": 1,
    }

    assert await target.quotes("AAPL", DAY_START, NEXT_DAY) == day_quotes()
    assert await target.quotes("AAPL", DAY_START, NEXT_DAY) == await source.quotes(
        "AAPL", DAY_START, NEXT_DAY
    )
    assert await target.orders_since(DAY_START) == await source.orders_since(DAY_START)
    imported_market = await target.order("c-mkt")
    assert imported_market is not None
    assert imported_market.status is OrderStatus.FILLED
    assert imported_market.broker_order_id == "9001"
    assert await target.fills_since(DAY_START) == await source.fills_since(DAY_START)
    assert await target.order_events("c-mkt") == await source.order_events("c-mkt")
    assert await target.risk_events() == await source.risk_events()
    assert await target.recent_alerts(10) == await source.recent_alerts(10)
    assert await target.state_changes() == await source.state_changes()
    assert await target.daily_pnl(DAY) == await source.daily_pnl(DAY)

    # Keyed tables ignore rows they already hold.
    for table in ("orders", "fills", "order_events", "alerts", "daily_pnl"):
        assert (await import_file(target, table, files[table])).inserted == 0
    assert await target.fill_count() == 2
    # Quotes have no key: the file is skipped as a whole, its time span being present.
    again = await import_file(target, "quotes", files["quotes"])
    assert again.skipped_present and again.inserted == 0
    assert await target.count("quotes") == 3


async def test_load_quotes_for_replay(source: Database, tmp_path: Path) -> None:
    await record_a_day(source)
    exported = await export_day(source, DAY, tmp_path / "archive")
    loaded = load_quotes(exported["quotes"].path)
    assert loaded == day_quotes()
    assert all(q.ts.tzinfo is UTC for q in loaded)


async def test_import_refuses_files_of_the_wrong_shape(target: Database, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"symbol": ["AAPL"], "ts": ["not a timestamp"]}), wrong)
    with pytest.raises(ValueError, match="missing columns"):
        await import_file(target, "quotes", wrong)

    mistyped = tmp_path / "mistyped.parquet"
    columns = {f.name: pa.array([], type=f.type) for f in SCHEMAS["fills"]}
    columns["ts"] = pa.array([], type=pa.string())
    pq.write_table(pa.table(columns), mistyped)
    with pytest.raises(ValueError, match="ts is string"):
        await import_file(target, "fills", mistyped)

    with pytest.raises(ValueError, match="unknown table"):
        await import_file(target, "positions", wrong)
    assert await target.count("quotes") == 0


# --------------------------------------------------------------------------- hive layout


async def add_quotes(db: Database, *quotes: Quote) -> None:
    await db.write_batch({"quotes": [quote_row(q) for q in quotes]})


async def test_hive_partitions_read_by_pyarrow_dataset_and_pandas(
    source: Database, tmp_path: Path
) -> None:
    await record_a_day(source)
    out = tmp_path / "archive"
    for day in (DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)):
        await export_day(source, day, out)
    assert archived_days(out, "quotes") == [DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)]
    assert archived_days(out, "fills") == [DAY]

    quotes = ds.dataset(out / "quotes", partitioning="hive").to_table()
    assert quotes.num_rows == 5
    assert sorted(set(quotes.column("date").to_pylist())) == [
        "2026-01-04",
        "2026-01-05",
        "2026-01-06",
    ]
    for table in ("quotes", "orders", "order_events", "fills", "alerts", "daily_pnl"):
        read = ds.dataset(out / table, partitioning="hive").schema
        # The stable schema, whichever day's file pyarrow happened to open first.
        assert read.remove(read.get_field_index("date")).equals(SCHEMAS[table]), table

    typed = open_dataset(out, "quotes")
    assert typed.schema.field("date").type == pa.date32()
    one_day = typed.to_table(filter=ds.field("date") == pa.scalar(DAY, pa.date32()))
    assert one_day.num_rows == 3

    fills = pd.read_parquet(out / "fills")
    assert list(fills["exec_id"]) == ["e-1", "e-2"]
    assert str(fills["ts"].dtype) == "datetime64[us, UTC]"
    assert fills["quantity"].sum() == 100
    orders_frame = pd.read_parquet(out / "orders")
    assert orders_frame.set_index("client_order_id").loc["c-lmt", "reduce_only"]


async def test_import_archive_root_ignores_what_is_already_there(
    source: Database, target: Database, tmp_path: Path
) -> None:
    await record_a_day(source)
    out = tmp_path / "archive"
    for day in (DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)):
        await export_day(source, day, out)

    first = await import_archive(target, out)
    inserted: dict[str, int] = {}
    for item in first:
        inserted[item.table] = inserted.get(item.table, 0) + item.inserted
    assert inserted["quotes"] == 5 and inserted["fills"] == 2 and inserted["orders"] == 2
    assert await target.count("quotes") == 5

    again = await import_archive(target, out)
    assert sum(item.inserted for item in again) == 0
    assert {item.table for item in again if item.skipped_present} == {"quotes"}
    assert await target.count("quotes") == 5

    # One table's directory, or one partition, works the same way.
    other = await Database.open(tmp_path / "other.db")
    try:
        only_fills = await import_archive(other, out / "fills")
        assert [(i.table, i.inserted) for i in only_fills] == [("fills", 2)]
        one_day = await import_archive(other, out / "quotes" / "date=2026-01-05")
        assert [(i.table, i.inserted) for i in one_day] == [("quotes", 3)]
    finally:
        await other.close()

    with pytest.raises(ArchiveError, match="holds no archive"):
        await import_archive(target, tmp_path)


# --------------------------------------------------------------------------- pruning

KEPT_TABLES = ("orders", "order_events", "fills", "alerts", "risk_events", "daily_pnl")


async def counts(db: Database) -> dict[str, int]:
    return {t: await db.count(t) for t in ("quotes", *KEPT_TABLES)}


async def test_prune_refuses_unarchived_days_and_never_touches_orders_or_fills(
    source: Database, tmp_path: Path
) -> None:
    await record_a_day(source)  # quotes on Jan 4 (1), Jan 5 (3), Jan 6 (1)
    out = tmp_path / "archive"
    today = DAY + timedelta(days=3)
    before = await counts(source)

    with pytest.raises(ArchiveError, match=r"2026-01-04.*\n.*2026-01-05") as refused:
        await prune_quotes(source, DAY + timedelta(days=1), out, today=today)
    assert "export them first" in str(refused.value)
    assert await counts(source) == before  # nothing deleted

    await export_day(source, DAY, out)
    with pytest.raises(ArchiveError) as refused:
        await prune_quotes(source, DAY + timedelta(days=1), out, today=today)
    assert "2026-01-04" in str(refused.value) and "2026-01-05" not in str(refused.value)
    assert await counts(source) == before  # one unarchived day blocks the lot

    await export_day(source, DAY - timedelta(days=1), out)
    assert await prune_quotes(source, DAY + timedelta(days=1), out, today=today) == 4
    after = await counts(source)
    assert after["quotes"] == 1  # Jan 6 is after the cut-off
    assert {t: after[t] for t in KEPT_TABLES} == {t: before[t] for t in KEPT_TABLES}
    assert after["orders"] == 2 and after["fills"] == 2
    # Pruning again finds nothing left to do.
    assert await prune_quotes(source, DAY + timedelta(days=1), out, today=today) == 0

    with pytest.raises(ArchiveError, match="includes today"):
        await prune_quotes(source, today + timedelta(days=1), out, today=today)


async def test_prune_refuses_a_day_recorded_after_its_export(
    source: Database, tmp_path: Path
) -> None:
    out = tmp_path / "archive"
    await add_quotes(source, Quote("AAPL", T0, 1.0, 1.1))
    await export_day(source, DAY, out)
    await add_quotes(source, Quote("AAPL", T0 + timedelta(hours=1), 1.0, 1.1))
    with pytest.raises(ArchiveError, match="export the day again"):
        await prune_quotes(source, NEXT_DAY.date(), out, today=NEXT_DAY.date())
    assert await source.count("quotes") == 2

    await export_day(source, DAY, out)
    assert await prune_quotes(source, NEXT_DAY.date(), out, today=NEXT_DAY.date()) == 2


async def test_export_after_prune_never_shrinks_the_archive(
    source: Database, tmp_path: Path
) -> None:
    out = tmp_path / "archive"
    await add_quotes(source, *day_quotes())
    await export_day(source, DAY, out)
    await prune_quotes(source, NEXT_DAY.date(), out, today=NEXT_DAY.date())

    assert "quotes" not in await export_day(source, DAY, out)  # nothing left to write
    await add_quotes(source, day_quotes()[0])
    again = await export_day(source, DAY, out)
    assert again["quotes"].kept_existing and again["quotes"].rows == 3
    assert load_quotes(archive_path(out, "quotes", DAY)) == day_quotes()


# --------------------------------------------------------------------------- end of day


async def test_end_of_day_archiver_exports_finished_days_then_prunes(
    source: Database, tmp_path: Path
) -> None:
    await record_a_day(source)
    out = tmp_path / "archive"
    clock = SimClock(NEXT_DAY + timedelta(days=1, hours=13))  # Jan 7: Jan 4-6 are over
    bus = EventBus()
    archiver = EndOfDayArchiver(source, bus, clock, out, quote_retention_days=2)

    task = asyncio.create_task(archiver.run())
    try:
        await wait_until(lambda: archiver.passes == 1)  # the catch-up pass at start
        assert archiver.exported == [DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)]
        assert archiver.pruned_rows == 1  # Jan 4: before Jan 7 minus two days
        assert await source.count("quotes") == 4 and await source.count("fills") == 2

        # The next exchange-day reset (a daily P&L row) exports the day that just ended.
        await add_quotes(source, Quote("AAPL", NEXT_DAY + timedelta(days=1, hours=15), 1.0, 1.1))
        clock.advance(timedelta(days=1))
        bus.publish(DailyPnlRecorded("2026-01-07", 0.0, 0.0, 0.0, 0.0, 1e5, 0.0, clock.now()))
        await wait_until(lambda: archiver.passes == 2)
        assert archiver.exported[-1] == DAY + timedelta(days=2)
        assert archiver.pruned_rows == 4  # Jan 5 too, now
    finally:
        await stop_archiver(task)
    assert not list(out.rglob("*.partial"))


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- commands


async def test_export_import_prune_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = settings(tmp_path)
    out = tmp_path / "archive"
    assert await run_export(s, DAY, out) == 2
    assert "no database" in capsys.readouterr().err

    db = await Database.open(s.database_path)
    try:
        await record_a_day(db)
    finally:
        await db.close()

    assert await run_prune(s, DAY, out) == 2
    assert "2026-01-04" in capsys.readouterr().err

    assert await run_export(s, DAY, out) == 0
    printed = capsys.readouterr().out
    assert "quotes" in printed and "3 rows" in printed and "exported 2026-01-05" in printed

    restored = settings(tmp_path / "restored")
    assert await run_import(restored, out) == 0
    printed = capsys.readouterr().out
    assert "imported 14 rows from 8 file(s)" in printed

    assert await run_export(s, DAY - timedelta(days=1), out) == 0
    capsys.readouterr()
    assert await run_prune(s, DAY + timedelta(days=1), out) == 0
    assert "pruned 4 quotes before 2026-01-06" in capsys.readouterr().out

    assert await run_import(restored, tmp_path / "nowhere") == 2
    assert "does not exist" in capsys.readouterr().err
