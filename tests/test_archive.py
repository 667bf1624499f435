"""storage.archive: Parquet export and import against real SQLite files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.bus import EventBus
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
    archive_path,
    export_day,
    import_file,
    load_quotes,
    read_parquet_table,
)
from storage.database import TABLE_COLUMNS, Database
from storage.recorder import Recorder

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
        bus.publish(OrderSubmitted(order, order.created_at))
    market.transition(OrderStatus.FILLED, T0 + timedelta(seconds=1), "filled")
    market.apply_fill_quantity(100, 100.07, 1.0)
    market.broker_order_id = "9001"
    bus.publish(OrderUpdated(market, T0 + timedelta(seconds=1)))
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
    files = await export_day(source, DAY, out)
    assert set(files) == set(TABLE_COLUMNS) - {"bars"}  # no bars were recorded
    assert files["quotes"] == out / "quotes" / "2026-01-05.parquet"
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
    files = await export_day(source, DAY, tmp_path / "archive")
    inserted = {t: await import_file(target, t, p) for t, p in files.items()}
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
        assert await import_file(target, table, files[table]) == 0
    assert await target.fill_count() == 2


async def test_load_quotes_for_replay(source: Database, tmp_path: Path) -> None:
    await record_a_day(source)
    files = await export_day(source, DAY, tmp_path / "archive")
    loaded = load_quotes(files["quotes"])
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
