"""Parquet archive of the SQLite tables: one file per table per UTC day.

Layout: ``<out_dir>/<table>/<YYYY-MM-DD>.parquet``. Every file has an explicit
schema (timestamps as ``timestamp[us, tz=UTC]``) so that pandas, DuckDB or a
later import read the same types whatever the first rows happened to contain.

Exports stream rows in chunks and build/write Parquet on a worker thread: a day
of quotes can be large, and the event loop is also the trading loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.model import Quote, QuoteSource
from storage.database import TABLE_COLUMNS, Database, Row, check_table, from_db_ts, to_db_ts

_TS = pa.timestamp("us", tz="UTC")
_IMPORT_BATCH_ROWS = 50_000


def _f(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


def _text(*names: str) -> list[pa.Field]:
    return [_f(n, pa.string()) for n in names]


def _real(*names: str) -> list[pa.Field]:
    return [_f(n, pa.float64()) for n in names]


_ID = _f("id", pa.int64())

SCHEMAS: dict[str, pa.Schema] = {
    "quotes": pa.schema(
        [
            *_text("symbol"),
            _f("ts", _TS),
            *_real("bid", "ask"),
            _f("bid_size", pa.int64()),
            _f("ask_size", pa.int64()),
            _f("last", pa.float64(), nullable=True),
            *_text("source"),
        ]
    ),
    "bars": pa.schema(
        [
            *_text("symbol"),
            _f("start", _TS),
            _f("end", _TS),
            *_real("open", "high", "low", "close"),
            _f("ticks", pa.int64()),
        ]
    ),
    "orders": pa.schema(
        [
            *_text("client_order_id", "symbol", "side"),
            _f("quantity", pa.int64()),
            *_text("order_type"),
            _f("limit_price", pa.float64(), nullable=True),
            *_text("status", "reason"),
            _f("created_at", _TS),
            _f("updated_at", _TS, nullable=True),
            _f("filled_quantity", pa.int64()),
            *_real("avg_fill_price", "commission"),
            _f("broker_order_id", pa.string(), nullable=True),
            *_text("last_message"),
            _f("reduce_only", pa.bool_()),
        ]
    ),
    "order_events": pa.schema(
        [
            _ID,
            *_text("client_order_id"),
            _f("ts", _TS),
            *_text("status"),
            _f("filled_quantity", pa.int64()),
            *_real("avg_fill_price"),
            *_text("message"),
        ]
    ),
    "fills": pa.schema(
        [
            *_text("exec_id", "client_order_id", "symbol", "side"),
            _f("quantity", pa.int64()),
            *_real("price", "commission"),
            _f("ts", _TS),
        ]
    ),
    "daily_pnl": pa.schema(
        [
            _f("day", pa.date32()),
            *_real(
                "realized", "unrealized", "commissions", "total", "peak_equity", "max_drawdown_pct"
            ),
            _f("ts", _TS),
        ]
    ),
    "risk_events": pa.schema(
        [
            _ID,
            _f("ts", _TS),
            *_text("kind"),
            _f("symbol", pa.string(), nullable=True),
            *_text("detail"),
        ]
    ),
    "alerts": pa.schema([_ID, _f("ts", _TS), *_text("severity", "key", "message", "delivery")]),
    "trading_state_changes": pa.schema([_ID, _f("ts", _TS), *_text("previous", "state", "reason")]),
}


# --------------------------------------------------------------------------- conversions


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else convert(v)


def _sql_to_arrow(type_: pa.DataType) -> Callable[[Any], Any] | None:
    """How an SQLite value becomes the Python value pyarrow expects (None: as is)."""
    if pa.types.is_timestamp(type_):
        return _optional(from_db_ts)
    if pa.types.is_date(type_):
        return _optional(date.fromisoformat)
    if pa.types.is_boolean(type_):
        return _optional(bool)
    return None


def _arrow_to_sql(type_: pa.DataType) -> Callable[[Any], Any] | None:
    if pa.types.is_timestamp(type_):
        return _optional(to_db_ts)
    if pa.types.is_date(type_):
        return _optional(date.isoformat)
    if pa.types.is_boolean(type_):
        return _optional(int)
    return None


def _rows_to_table(schema: pa.Schema, rows: Sequence[Row]) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        convert = _sql_to_arrow(field.type)
        data = list(values) if convert is None else [convert(v) for v in values]
        arrays.append(pa.array(data, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _batch_to_rows(schema: pa.Schema, batch: pa.RecordBatch | pa.Table) -> list[Row]:
    columns = []
    for field in schema:
        values = batch.column(field.name).to_pylist()
        convert = _arrow_to_sql(field.type)
        columns.append(values if convert is None else [convert(v) for v in values])
    return list(zip(*columns, strict=True))


def _check_file_schema(table: str, file_schema: pa.Schema, path: Path) -> None:
    """Refuse a file that is not this table's archive before touching the database."""
    expected = SCHEMAS[table]
    missing = [f.name for f in expected if f.name not in file_schema.names]
    if missing:
        raise ValueError(f"{path} is not a {table!r} archive: missing columns {missing}")
    wrong = [
        f"{f.name} is {file_schema.field(f.name).type}, expected {f.type}"
        for f in expected
        if not file_schema.field(f.name).type.equals(f.type)
    ]
    if wrong:
        raise ValueError(f"{path} is not a {table!r} archive: {'; '.join(wrong)}")


# --------------------------------------------------------------------------- export


def archive_path(out_dir: Path, table: str, day: date) -> Path:
    return Path(out_dir) / table / f"{day.isoformat()}.parquet"


async def export_day(db: Database, day: date, out_dir: Path) -> dict[str, Path]:
    """Write each table's rows for UTC ``day``; tables without rows get no file."""
    written: dict[str, Path] = {}
    for table in TABLE_COLUMNS:
        path = await _export_table(db, table, day, Path(out_dir))
        if path is not None:
            written[table] = path
    return written


async def _export_table(db: Database, table: str, day: date, out_dir: Path) -> Path | None:
    schema = SCHEMAS[table]
    final = archive_path(out_dir, table, day)
    # Written under a temporary name and renamed at the end, so a file with the
    # final name is always complete.
    partial = final.with_name(final.name + ".partial")
    writer: pq.ParquetWriter | None = None
    try:
        async with contextlib.aclosing(db.iter_day_rows(table, day)) as chunks:
            async for rows in chunks:
                if writer is None:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(partial, schema)
                await asyncio.to_thread(_write_chunk, writer, schema, rows)
    except BaseException:
        if writer is not None:
            writer.close()
            partial.unlink(missing_ok=True)
        raise
    if writer is None:
        return None
    writer.close()
    partial.replace(final)
    return final


def _write_chunk(writer: pq.ParquetWriter, schema: pa.Schema, rows: Sequence[Row]) -> None:
    writer.write_table(_rows_to_table(schema, rows))


# --------------------------------------------------------------------------- import / read


def read_parquet_table(path: Path) -> pa.Table:
    return pq.read_table(path)


async def import_file(db: Database, table: str, path: Path) -> int:
    """Insert an archive file's rows into ``table`` in one transaction, ignoring rows
    whose primary key is already present; returns how many rows were new.

    Quotes and bars have no key and are appended: import a day's market data once.
    Ids of event tables are kept, which is exact for the database they came from
    (SQLite AUTOINCREMENT never reuses an id) but may skip rows when merging
    archives from different databases.
    """
    check_table(table)
    schema = SCHEMAS[table]
    parquet = await asyncio.to_thread(pq.ParquetFile, path)
    _check_file_schema(table, parquet.schema_arrow, Path(path))
    batches = parquet.iter_batches(batch_size=_IMPORT_BATCH_ROWS, columns=schema.names)
    inserted = 0
    async with db.transaction():
        while (rows := await asyncio.to_thread(_next_rows, batches, schema)) is not None:
            inserted += await db.import_rows_in_transaction(table, rows)
    return inserted


def _next_rows(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> list[Row] | None:
    batch = next(batches, None)
    return None if batch is None else _batch_to_rows(schema, batch)


def load_quotes(path: Path) -> list[Quote]:
    """A quotes archive as Quote objects, in file (time) order, for replay."""
    table = read_parquet_table(path)
    _check_file_schema("quotes", table.schema, Path(path))
    columns = [table.column(name).to_pylist() for name in SCHEMAS["quotes"].names]
    return [
        Quote(
            symbol,
            _as_utc(ts),
            bid,
            ask,
            bid_size,
            ask_size,
            last,
            QuoteSource(source),
        )
        for symbol, ts, bid, ask, bid_size, ask_size, last, source in zip(*columns, strict=True)
    ]


def _as_utc(ts: datetime) -> datetime:
    # pyarrow hands back zoneinfo("UTC"); the rest of the system uses datetime.UTC.
    return ts.astimezone(UTC)
