"""Parquet audit archive of the SQLite tables: one hive partition per table per UTC day.

Layout::

    <archive>/<table>/date=YYYY-MM-DD/part-0.parquet

for quotes, bars, orders, order_events, fills, alerts, daily_pnl, risk_events and
trading_state_changes. Every file has the table's explicit schema (``SCHEMAS``:
timestamps ``timestamp[us, tz=UTC]``, booleans, dates) whatever its first rows happen
to contain, so readers agree on types across days:

- pyarrow: ``pyarrow.dataset.dataset(<archive>/quotes, partitioning="hive")`` (the
  ``date`` key then reads as text; ``open_dataset`` gives it as ``date32``);
- pandas: ``pandas.read_parquet("<archive>/quotes")``;
- DuckDB: ``read_parquet('<archive>/quotes/*/*.parquet', hive_partitioning = true)``.

A row's day is the UTC day of its time column (``DAY_COLUMNS``: orders by creation,
bars by start, daily P&L by its ``day``). Orders are exported as they stand at export
time; exporting a day again replaces its files, but never with fewer rows than the
archive already holds (the database may have been pruned since).

Import (for replay or audit) ignores rows already present: keyed tables by primary
key, event tables by their id; quotes and bars have no key, so a file is skipped
when the database already holds rows of that table within its time span.

Quotes may be pruned from SQLite once archived (``prune_quotes``); orders, fills and
every other table are never pruned.

Exports stream rows in chunks and build/write Parquet on a worker thread: a day of
quotes can be large, and the event loop is also the trading loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.model import Quote, QuoteSource
from storage.database import Database
from storage.rows import day_bounds, from_db_ts, to_db_ts
from storage.schema import ADDED_COLUMNS, DAY_COLUMNS, Row, check_table

_TS = pa.timestamp("us", tz="UTC")
_IMPORT_BATCH_ROWS = 50_000
# Rows deleted per transaction when pruning: a running console's recorder writes to the
# same file, and must never wait long for the write lock.
_PRUNE_CHUNK_ROWS = 20_000
_BUSY_TIMEOUT_S = 10.0

PARTITION_KEY = "date"
PART_FILE = "part-0.parquet"
_PARTITION_DIR = re.compile(rf"^{PARTITION_KEY}=(\d{{4}}-\d{{2}}-\d{{2}})$")
# Tables without a primary key: duplicates are recognised by time span, not by row.
KEYLESS_TABLES = frozenset({"quotes", "bars"})


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
            _f("stop_price", pa.float64(), nullable=True),
            *_text("tif", "role"),
            _f("parent_id", pa.string(), nullable=True),
            _f("oca_group", pa.string(), nullable=True),
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

TABLES: tuple[str, ...] = tuple(SCHEMAS)


class ArchiveError(Exception):
    """The archive cannot do what was asked; the message names the day, file and fix."""


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


def _batch_to_rows(
    schema: pa.Schema, batch: pa.RecordBatch | pa.Table, added: Mapping[str, object] = {}
) -> list[Row]:
    columns = []
    names = batch.schema.names
    for field in schema:
        if field.name not in names:  # a file from before the column was added
            columns.append([added[field.name]] * batch.num_rows)
            continue
        values = batch.column(field.name).to_pylist()
        convert = _arrow_to_sql(field.type)
        columns.append(values if convert is None else [convert(v) for v in values])
    return list(zip(*columns, strict=True))


def check_file_schema(table: str, file_schema: pa.Schema, path: Path) -> None:
    """Refuse a file that is not this table's archive before touching the database."""
    expected = SCHEMAS[table]
    added = ADDED_COLUMNS.get(table, {})
    missing = [f.name for f in expected if f.name not in file_schema.names and f.name not in added]
    if missing:
        raise ValueError(f"{path} is not a {table!r} archive: missing columns {missing}")
    wrong = [
        f"{f.name} is {file_schema.field(f.name).type}, expected {f.type}"
        for f in expected
        if f.name in file_schema.names and not file_schema.field(f.name).type.equals(f.type)
    ]
    if wrong:
        raise ValueError(f"{path} is not a {table!r} archive: {'; '.join(wrong)}")


# --------------------------------------------------------------------------- layout


def archive_path(archive_dir: Path, table: str, day: date) -> Path:
    """Where ``table``'s rows of UTC ``day`` live: ``<table>/date=YYYY-MM-DD/part-0.parquet``."""
    return Path(archive_dir) / check_table(table) / f"{PARTITION_KEY}={day.isoformat()}" / PART_FILE


def archived_days(archive_dir: Path, table: str) -> list[date]:
    """The days for which ``table`` has a (complete) archive file, oldest first."""
    root = Path(archive_dir) / check_table(table)
    if not root.is_dir():
        return []
    days = []
    for child in root.iterdir():
        match = _PARTITION_DIR.match(child.name)
        if match and (child / PART_FILE).is_file():
            days.append(date.fromisoformat(match.group(1)))
    return sorted(days)


def partitioning() -> ds.Partitioning:
    """The hive partitioning with its key typed as a date (discovery would say string)."""
    return ds.partitioning(pa.schema([pa.field(PARTITION_KEY, pa.date32())]), flavor="hive")


def open_dataset(archive_dir: Path, table: str) -> ds.Dataset:
    """Every archived day of ``table`` as one pyarrow dataset: the table's schema plus
    the ``date`` partition column (date32). Filter with ``ds.field("date") == day``."""
    schema = SCHEMAS[check_table(table)].append(pa.field(PARTITION_KEY, pa.date32()))
    root = Path(archive_dir) / table
    return ds.dataset(root, schema=schema, format="parquet", partitioning=partitioning())


# --------------------------------------------------------------------------- export


@dataclass(frozen=True, slots=True)
class TableExport:
    """One table's file for one day."""

    table: str
    path: Path
    rows: int
    # The archive already held more rows than the database now does (quotes pruned
    # since the first export): the existing file was kept, not overwritten.
    kept_existing: bool = False


async def export_day(db: Database, day: date, out_dir: Path) -> dict[str, TableExport]:
    """Write each table's rows of UTC ``day``; tables without rows get no file."""
    written: dict[str, TableExport] = {}
    for table in TABLES:
        result = await _export_table(db, table, day, Path(out_dir))
        if result is not None:
            written[table] = result
    return written


async def _export_table(db: Database, table: str, day: date, out_dir: Path) -> TableExport | None:
    schema = SCHEMAS[table]
    final = archive_path(out_dir, table, day)
    # Written under a temporary name and renamed at the end, so a file with the
    # final name is always complete (a reader or prune never sees half a day).
    partial = final.with_name(final.name + ".partial")
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        async with contextlib.aclosing(db.iter_day_rows(table, day)) as chunks:
            async for chunk in chunks:
                if writer is None:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(partial, schema)
                await asyncio.to_thread(_write_chunk, writer, schema, chunk)
                rows += len(chunk)
        if writer is None:
            return None
        writer.close()
        writer = None
        existing = await asyncio.to_thread(_file_rows, final)
        if existing is not None and existing > rows:
            partial.unlink()
            return TableExport(table, final, existing, kept_existing=True)
        partial.replace(final)
    except BaseException:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    return TableExport(table, final, rows)


def _write_chunk(writer: pq.ParquetWriter, schema: pa.Schema, rows: Sequence[Row]) -> None:
    writer.write_table(_rows_to_table(schema, rows))


def _file_rows(path: Path) -> int | None:
    return pq.ParquetFile(path).metadata.num_rows if path.is_file() else None


# --------------------------------------------------------------------------- import / read


def read_parquet_table(path: Path) -> pa.Table:
    return pq.read_table(path)


@dataclass(frozen=True, slots=True)
class FileImport:
    table: str
    path: Path
    rows_in_file: int
    inserted: int
    # Quotes/bars only: the database already held rows in this file's time span.
    skipped_present: bool = False


def archive_files(path: Path) -> list[tuple[str, Path]]:
    """The (table, file) pairs under ``path``: an archive root, one table's directory,
    one ``date=`` partition or a single file. Files of the earlier flat layout
    (``<table>/YYYY-MM-DD.parquet``) are accepted too."""
    path = Path(path)
    if path.is_file():
        return [(_table_of(path), path)]
    if not path.is_dir():
        raise ArchiveError(f"{path} does not exist")
    if _PARTITION_DIR.match(path.name):
        return [(_table_of(f), f) for f in sorted(path.glob("*.parquet"))]
    if path.name in SCHEMAS:
        files = sorted(path.glob(f"{PARTITION_KEY}=*/*.parquet")) + sorted(path.glob("*.parquet"))
        return [(path.name, f) for f in files]
    found = [
        pair for table in TABLES if (path / table).is_dir() for pair in archive_files(path / table)
    ]
    if not found:
        raise ArchiveError(f"{path} holds no archive: expected <table>/date=YYYY-MM-DD/*.parquet")
    return found


def _table_of(file: Path) -> str:
    parent = file.parent
    table = parent.parent.name if _PARTITION_DIR.match(parent.name) else parent.name
    if table not in SCHEMAS:
        raise ArchiveError(
            f"{file}: cannot tell which table it belongs to; expected "
            f"<table>/date=YYYY-MM-DD/{PART_FILE} with table one of {', '.join(TABLES)}"
        )
    return table


async def import_archive(db: Database, path: Path) -> list[FileImport]:
    """Load every archive file under ``path`` (see ``archive_files``) into ``db``,
    ignoring rows already present. Each file is one transaction."""
    return [await import_file(db, table, file) for table, file in archive_files(path)]


async def import_file(db: Database, table: str, path: Path) -> FileImport:
    """Insert an archive file's rows into ``table`` in one transaction, ignoring rows
    already present.

    Keyed tables ignore rows whose primary key is present (event tables keep their
    ids, which is exact for the database they came from — SQLite AUTOINCREMENT never
    reuses an id — but may skip rows when merging archives of different databases).
    Quotes and bars have no key: the whole file is skipped when the database already
    holds rows of that table within the file's time span.
    """
    check_table(table)
    schema = SCHEMAS[table]
    path = Path(path)
    parquet = await asyncio.to_thread(pq.ParquetFile, path)
    check_file_schema(table, parquet.schema_arrow, path)
    rows_in_file = parquet.metadata.num_rows
    if table in KEYLESS_TABLES and rows_in_file:
        start, end = await asyncio.to_thread(_time_span, path, DAY_COLUMNS[table])
        present = await asyncio.to_thread(_count_between, db.path, table, start, end)
        if present:
            return FileImport(table, path, rows_in_file, 0, skipped_present=True)
    present_columns = [n for n in schema.names if n in parquet.schema_arrow.names]
    batches = parquet.iter_batches(batch_size=_IMPORT_BATCH_ROWS, columns=present_columns)
    added = ADDED_COLUMNS.get(table, {})
    inserted = 0
    async with db.transaction():
        while (rows := await asyncio.to_thread(_next_rows, batches, schema, added)) is not None:
            inserted += await db.import_rows_in_transaction(table, rows)
    return FileImport(table, path, rows_in_file, inserted)


def _next_rows(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, added: Mapping[str, object]
) -> list[Row] | None:
    batch = next(batches, None)
    return None if batch is None else _batch_to_rows(schema, batch, added)


def _time_span(path: Path, column: str) -> tuple[datetime, datetime]:
    values = pq.read_table(path, columns=[column]).column(column)
    bounds = pc.min_max(values).as_py()
    return bounds["min"], bounds["max"]


def load_quotes(path: Path) -> list[Quote]:
    """A quotes archive file as Quote objects, in file (time) order, for replay."""
    table = read_parquet_table(path)
    check_file_schema("quotes", table.schema, Path(path))
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


# --------------------------------------------------------------------------- prune
# Counting and deleting go through a connection of their own on a worker thread:
# ``Database`` offers no delete (nothing else may ever delete), and a day of quotes
# is too large to count or delete on the event loop. WAL lets this connection work
# beside the console's own, in this process or another.


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT_S * 1000)}")
    return conn


def _count_between(db_path: Path, table: str, start: datetime, end: datetime) -> int:
    """Rows of a keyless table whose time column lies in [start, end]."""
    column = DAY_COLUMNS[table]
    conn = _connect(db_path)
    try:
        row = conn.execute(
            f'SELECT COUNT(*) FROM {check_table(table)} WHERE "{column}" >= ? AND "{column}" <= ?',
            (to_db_ts(start), to_db_ts(end)),
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


@dataclass(frozen=True, slots=True)
class _DayQuotes:
    day: date
    rows: int
    last_ts: datetime


def _quote_days_before(db_path: Path, before: date) -> list[_DayQuotes]:
    """Each UTC day before ``before`` that holds quotes, with its count and last time."""
    conn = _connect(db_path)
    try:
        first = conn.execute("SELECT MIN(ts) FROM quotes").fetchone()[0]
        if first is None:
            return []
        days: list[_DayQuotes] = []
        day = from_db_ts(first).date()
        while day < before:
            # ix_quotes_ts makes each day a range scan, not a table scan.
            count, last = conn.execute(
                "SELECT COUNT(*), MAX(ts) FROM quotes WHERE ts >= ? AND ts < ?", day_bounds(day)
            ).fetchone()
            if count:
                days.append(_DayQuotes(day, int(count), from_db_ts(last)))
            day += timedelta(days=1)
        return days
    finally:
        conn.close()


def _archived_quotes(archive_dir: Path, day: date) -> tuple[int, datetime | None] | None:
    """(rows, last ts) of the archived quotes of ``day``; None when there is no file."""
    path = archive_path(archive_dir, "quotes", day)
    if not path.is_file():
        return None
    parquet = pq.ParquetFile(path)
    check_file_schema("quotes", parquet.schema_arrow, path)
    if parquet.metadata.num_rows == 0:
        return 0, None
    _, last = _time_span(path, "ts")
    return parquet.metadata.num_rows, last


def _not_archived_reason(archive_dir: Path, held: _DayQuotes) -> str | None:
    archived = _archived_quotes(archive_dir, held.day)
    if archived is None:
        return f"{held.day}: no {archive_path(archive_dir, 'quotes', held.day)}"
    rows, last = archived
    # Fewer archived rows, or database rows later than the archive's last, mean quotes
    # were recorded after the export: deleting them would lose them.
    if rows < held.rows or last is None or last < held.last_ts:
        return (
            f"{held.day}: the archive holds {rows} quotes up to {last}, the database "
            f"{held.rows} up to {held.last_ts} (export the day again)"
        )
    return None


def _delete_day(db_path: Path, day: date) -> int:
    conn = _connect(db_path)
    deleted = 0
    try:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.execute(
                    "DELETE FROM quotes WHERE rowid IN (SELECT rowid FROM quotes "
                    "WHERE ts >= ? AND ts < ? LIMIT ?)",
                    (*day_bounds(day), _PRUNE_CHUNK_ROWS),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            deleted += cursor.rowcount
            if cursor.rowcount < _PRUNE_CHUNK_ROWS:
                return deleted
    finally:
        conn.close()


async def prune_quotes(
    db: Database, before: date, archive_dir: Path, *, today: date | None = None
) -> int:
    """Delete quotes of UTC days before ``before`` from SQLite; returns rows deleted.

    Every such day must be archived first — its quotes file holding at least the rows
    the database holds, up to the database's last quote of that day — otherwise an
    ``ArchiveError`` names the days and nothing is deleted. Today (UTC, or ``today``)
    is never pruned: it is still being recorded. Only quotes are pruned; orders, fills
    and every other table are kept forever.
    """
    pruned = await prune_quotes_by_day(db, before, archive_dir, today=today)
    return sum(pruned.values())


async def prune_quotes_by_day(
    db: Database, before: date, archive_dir: Path, *, today: date | None = None
) -> dict[date, int]:
    """``prune_quotes``, reporting the rows deleted per day."""
    today = today or datetime.now(UTC).date()
    if before > today:
        raise ArchiveError(
            f"prune --before {before}: that includes today ({today}), which is still being "
            f"recorded; give a date up to {today}"
        )
    archive_dir = Path(archive_dir)
    days = await asyncio.to_thread(_quote_days_before, db.path, before)
    problems = [
        reason
        for held in days
        if (reason := await asyncio.to_thread(_not_archived_reason, archive_dir, held))
    ]
    if problems:
        raise ArchiveError(
            "refusing to prune quotes that are not archived, nothing deleted:\n  "
            + "\n  ".join(problems)
            + f"\nexport them first: trading-console export --date YYYY-MM-DD --to {archive_dir}"
        )
    return {held.day: await asyncio.to_thread(_delete_day, db.path, held.day) for held in days}
