"""SQLite persistence over aiosqlite: schema, migrations and queries.

One connection, WAL mode, autocommit at the driver level (``isolation_level=None``)
so that every transaction is an explicit ``BEGIN IMMEDIATE … COMMIT`` taken under
one asyncio lock. aiosqlite runs every call on its own thread in submission order,
but two coroutines could still interleave statements *inside* one open transaction;
the lock is what prevents that.

Timestamps are stored as fixed-width ISO-8601 UTC text
(``2026-01-05T14:30:00.000000+00:00``) so that text order is time order.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
from loguru import logger

from core.events import DailyPnlRecorded, TradingStateChanged
from core.heartbeat import HeartbeatRecord, HeartbeatState
from core.model import (
    Alert,
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

Row = tuple[Any, ...]

# Each entry is one schema version: applying MIGRATIONS[i] takes a database from
# user_version i to i + 1. Never edit a released entry; append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE quotes (
        symbol TEXT NOT NULL, ts TEXT NOT NULL, bid REAL NOT NULL, ask REAL NOT NULL,
        bid_size INTEGER NOT NULL, ask_size INTEGER NOT NULL, last REAL, source TEXT NOT NULL
    );
    CREATE INDEX ix_quotes_symbol_ts ON quotes (symbol, ts);
    CREATE INDEX ix_quotes_ts ON quotes (ts);

    CREATE TABLE bars (
        symbol TEXT NOT NULL, start TEXT NOT NULL, "end" TEXT NOT NULL, open REAL NOT NULL,
        high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, ticks INTEGER NOT NULL
    );
    CREATE INDEX ix_bars_symbol_start ON bars (symbol, start);
    CREATE INDEX ix_bars_start ON bars (start);

    CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, side TEXT NOT NULL,
        quantity INTEGER NOT NULL, order_type TEXT NOT NULL, limit_price REAL,
        status TEXT NOT NULL, reason TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT,
        filled_quantity INTEGER NOT NULL, avg_fill_price REAL NOT NULL,
        commission REAL NOT NULL, broker_order_id TEXT, last_message TEXT NOT NULL,
        reduce_only INTEGER NOT NULL
    );
    CREATE INDEX ix_orders_created_at ON orders (created_at);
    CREATE INDEX ix_orders_status ON orders (status);

    CREATE TABLE order_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL, ts TEXT NOT NULL,
        status TEXT NOT NULL, filled_quantity INTEGER NOT NULL, avg_fill_price REAL NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX ix_order_events_order ON order_events (client_order_id);
    CREATE INDEX ix_order_events_ts ON order_events (ts);

    CREATE TABLE fills (
        exec_id TEXT PRIMARY KEY, client_order_id TEXT NOT NULL, symbol TEXT NOT NULL,
        side TEXT NOT NULL, quantity INTEGER NOT NULL, price REAL NOT NULL,
        commission REAL NOT NULL, ts TEXT NOT NULL
    );
    CREATE INDEX ix_fills_ts ON fills (ts);
    CREATE INDEX ix_fills_order ON fills (client_order_id);

    CREATE TABLE daily_pnl (
        day TEXT PRIMARY KEY, realized REAL NOT NULL, unrealized REAL NOT NULL,
        commissions REAL NOT NULL, total REAL NOT NULL, peak_equity REAL NOT NULL,
        max_drawdown_pct REAL NOT NULL, ts TEXT NOT NULL
    );

    CREATE TABLE risk_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, kind TEXT NOT NULL,
        symbol TEXT, detail TEXT NOT NULL
    );
    CREATE INDEX ix_risk_events_ts ON risk_events (ts);
    CREATE INDEX ix_risk_events_kind ON risk_events (kind, ts);

    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, severity TEXT NOT NULL,
        key TEXT NOT NULL, message TEXT NOT NULL, delivery TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ix_alerts_ts ON alerts (ts);

    CREATE TABLE trading_state_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, previous TEXT NOT NULL,
        state TEXT NOT NULL, reason TEXT NOT NULL
    );
    CREATE INDEX ix_trading_state_changes_ts ON trading_state_changes (ts);
    """,
    # 2: the heartbeat (one row, overwritten) read by the watchdog, and a lookup for
    # delivery updates of alerts this process no longer holds a row id for.
    """
    CREATE TABLE heartbeat (
        id INTEGER PRIMARY KEY CHECK (id = 1), ts TEXT NOT NULL, pid INTEGER NOT NULL,
        state TEXT NOT NULL, started_at TEXT
    );
    CREATE INDEX ix_alerts_key_ts ON alerts (key, ts);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)

# Every column of every table, in schema order (what archive export/import carries).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    table: tuple(columns.split())
    for table, columns in {
        "quotes": "symbol ts bid ask bid_size ask_size last source",
        "bars": "symbol start end open high low close ticks",
        "orders": "client_order_id symbol side quantity order_type limit_price status reason"
        " created_at updated_at filled_quantity avg_fill_price commission broker_order_id"
        " last_message reduce_only",
        "order_events": "id client_order_id ts status filled_quantity avg_fill_price message",
        "fills": "exec_id client_order_id symbol side quantity price commission ts",
        "daily_pnl": "day realized unrealized commissions total peak_equity max_drawdown_pct ts",
        "risk_events": "id ts kind symbol detail",
        "alerts": "id ts severity key message delivery",
        "trading_state_changes": "id ts previous state reason",
    }.items()
}

# Tables whose ``id`` is assigned by SQLite: live writers leave it out.
_AUTO_ID_TABLES = frozenset({"order_events", "risk_events", "alerts", "trading_state_changes"})

# Primary key for tables where a repeated row must replace the stored one.
_UPSERT_KEYS: dict[str, str] = {"orders": "client_order_id", "daily_pnl": "day"}

# Which column puts a row into a UTC day for archiving.
DAY_COLUMNS: dict[str, str] = {
    "quotes": "ts",
    "bars": "start",
    "orders": "created_at",
    "order_events": "ts",
    "fills": "ts",
    "daily_pnl": "day",
    "risk_events": "ts",
    "alerts": "ts",
    "trading_state_changes": "ts",
}

# The order in which a batch is written: orders before their events.
WRITE_ORDER: tuple[str, ...] = tuple(TABLE_COLUMNS)


class SchemaVersionError(RuntimeError):
    """The database was written by a newer trading-console than this one."""


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    ts: datetime
    severity: str
    key: str
    message: str
    delivery: str


@dataclass(frozen=True, slots=True)
class RiskEventRecord:
    id: int
    ts: datetime
    kind: str
    symbol: str | None
    detail: str


# --------------------------------------------------------------------------- timestamps


def to_db_ts(ts: datetime) -> str:
    """Fixed-width ISO-8601 UTC text; naive datetimes are taken to be UTC already."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    elif ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="microseconds")


def from_db_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _opt_ts(text: str | None) -> datetime | None:
    return None if text is None else from_db_ts(text)


def day_bounds(day: date) -> tuple[str, str]:
    """Half-open [start, end) text bounds of a UTC day."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return to_db_ts(start), to_db_ts(start + timedelta(days=1))


# --------------------------------------------------------------------------- rows
# Column order matches the write columns (TABLE_COLUMNS minus auto ids).


def quote_row(q: Quote) -> Row:
    return (q.symbol, to_db_ts(q.ts), q.bid, q.ask, q.bid_size, q.ask_size, q.last, str(q.source))


def bar_row(b: Bar) -> Row:
    return (b.symbol, to_db_ts(b.start), to_db_ts(b.end), b.open, b.high, b.low, b.close, b.ticks)


def order_row(o: Order) -> Row:
    return (
        o.client_order_id,
        o.symbol,
        str(o.side),
        o.quantity,
        str(o.order_type),
        o.limit_price,
        str(o.status),
        o.reason,
        to_db_ts(o.created_at),
        None if o.updated_at is None else to_db_ts(o.updated_at),
        o.filled_quantity,
        o.avg_fill_price,
        o.commission,
        o.broker_order_id,
        o.last_message,
        int(o.reduce_only),
    )


def order_event_row(o: Order, ts: datetime, message: str) -> Row:
    return (
        o.client_order_id,
        to_db_ts(ts),
        str(o.status),
        o.filled_quantity,
        o.avg_fill_price,
        message,
    )


def fill_row(f: Fill) -> Row:
    return (
        f.exec_id,
        f.client_order_id,
        f.symbol,
        str(f.side),
        f.quantity,
        f.price,
        f.commission,
        to_db_ts(f.ts),
    )


def daily_pnl_row(e: DailyPnlRecorded) -> Row:
    return (
        e.day,
        e.realized,
        e.unrealized,
        e.commissions,
        e.total,
        e.peak_equity,
        e.max_drawdown_pct,
        to_db_ts(e.ts),
    )


def risk_event_row(ts: datetime, kind: str, symbol: str | None, detail: str) -> Row:
    return (to_db_ts(ts), kind, symbol, detail)


def alert_row(a: Alert, delivery: str = "") -> Row:
    return (to_db_ts(a.ts), str(a.severity), a.key, a.message, delivery)


def heartbeat_row(h: HeartbeatRecord) -> Row:
    started = None if h.started_at is None else to_db_ts(h.started_at)
    return (to_db_ts(h.ts), h.pid, str(h.state), started)


def _heartbeat_from_row(r: Sequence[Any]) -> HeartbeatRecord:
    return HeartbeatRecord(from_db_ts(r[0]), int(r[1]), HeartbeatState(r[2]), _opt_ts(r[3]))


_HEARTBEAT_UPSERT_SQL = (
    "INSERT INTO heartbeat (id, ts, pid, state, started_at) VALUES (1, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET ts = excluded.ts, pid = excluded.pid, "
    "state = excluded.state, started_at = excluded.started_at"
)


def read_heartbeat(path: Path | str) -> HeartbeatRecord | None:
    """The heartbeat row, read synchronously and read-only (for the watchdog, which must
    neither create nor migrate the console's database). None when absent or unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
        try:
            row = conn.execute(
                "SELECT ts, pid, state, started_at FROM heartbeat WHERE id = 1"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # older schema without the table, or locked beyond the timeout
    try:
        return None if row is None else _heartbeat_from_row(row)
    except (ValueError, TypeError):
        return None


def state_change_row(e: TradingStateChanged) -> Row:
    return (to_db_ts(e.ts), str(e.previous), str(e.state), e.reason)


def _order_from_row(r: Sequence[Any]) -> Order:
    return Order(
        client_order_id=r[0],
        symbol=r[1],
        side=Side(r[2]),
        quantity=r[3],
        order_type=OrderType(r[4]),
        limit_price=r[5],
        status=OrderStatus(r[6]),
        reason=r[7],
        created_at=from_db_ts(r[8]),
        updated_at=_opt_ts(r[9]),
        filled_quantity=r[10],
        avg_fill_price=r[11],
        commission=r[12],
        broker_order_id=r[13],
        last_message=r[14],
        reduce_only=bool(r[15]),
    )


def _fill_from_row(r: Sequence[Any]) -> Fill:
    return Fill(r[0], r[1], r[2], Side(r[3]), r[4], r[5], r[6], from_db_ts(r[7]))


def _quote_from_row(r: Sequence[Any]) -> Quote:
    return Quote(r[0], from_db_ts(r[1]), r[2], r[3], r[4], r[5], r[6], QuoteSource(r[7]))


def _bar_from_row(r: Sequence[Any]) -> Bar:
    return Bar(r[0], from_db_ts(r[1]), from_db_ts(r[2]), r[3], r[4], r[5], r[6], r[7])


# --------------------------------------------------------------------------- SQL text


def write_columns(table: str) -> tuple[str, ...]:
    """Columns a live writer supplies: everything but SQLite-assigned ids."""
    columns = TABLE_COLUMNS[table]
    return columns[1:] if table in _AUTO_ID_TABLES else columns


def _quoted(columns: Iterable[str]) -> str:
    # "end" is an SQL keyword; quoting every name keeps the generator simple.
    return ", ".join(f'"{c}"' for c in columns)


def _insert_sql(table: str, columns: Sequence[str], *, ignore: bool) -> str:
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    marks = ", ".join("?" * len(columns))
    return f"{verb} INTO {table} ({_quoted(columns)}) VALUES ({marks})"


def _upsert_sql(table: str, key: str) -> str:
    columns = write_columns(table)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != key)
    return f"{_insert_sql(table, columns, ignore=False)} ON CONFLICT({key}) DO UPDATE SET {updates}"


def _live_write_sql(table: str) -> str:
    if table in _UPSERT_KEYS:
        return _upsert_sql(table, _UPSERT_KEYS[table])
    # Fills arrive again after reconnects; the exec id makes the second one a no-op.
    return _insert_sql(table, write_columns(table), ignore=table == "fills")


_LIVE_WRITE_SQL: dict[str, str] = {t: _live_write_sql(t) for t in TABLE_COLUMNS}
# A new order's journal row: a plain INSERT, so a reused client order id fails loudly
# instead of overwriting the record of an order the broker already has.
_NEW_ORDER_SQL = _insert_sql("orders", write_columns("orders"), ignore=False)
_IMPORT_SQL: dict[str, str] = {
    t: _insert_sql(t, cols, ignore=True) for t, cols in TABLE_COLUMNS.items()
}


def check_table(table: str) -> str:
    if table not in TABLE_COLUMNS:
        known = ", ".join(TABLE_COLUMNS)
        raise ValueError(f"unknown table {table!r}; expected one of: {known}")
    return table


# --------------------------------------------------------------------------- database


class Database:
    """The trading console's SQLite file. Build with ``await Database.open(path)``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        migrations: Sequence[str] = MIGRATIONS,
        busy_timeout_ms: int = 5000,
    ) -> Database:
        """Open (creating if needed) and migrate; ``migrations`` is overridable for tests."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await _configure(conn, path, busy_timeout_ms)
            await _migrate(conn, path, migrations)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path)

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def schema_version(self) -> int:
        return await _user_version(self._conn)

    async def journal_mode(self) -> str:
        row = await self._fetchone("PRAGMA journal_mode")
        return str(row[0])

    # ----------------------------------------------------------------- transactions

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One write transaction at a time. Not re-entrant: the methods below that
        take it themselves (upsert_order, insert_fill, write_batch) must not be
        called inside it; use the ``*_in_transaction`` writers there instead."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._rollback_quietly()
                raise

    async def _rollback_quietly(self) -> None:
        # The original error is the one worth seeing; a failing rollback is only logged.
        try:
            await self._conn.rollback()
        except sqlite3.Error:
            logger.exception("database {path}: rollback failed", path=self.path)

    async def write_rows_in_transaction(self, table: str, rows: Sequence[Row]) -> int:
        """Live write of ``rows`` (write_columns order) inside an open ``transaction()``:
        plain insert, upsert for orders/daily_pnl, insert-or-ignore for fills."""
        self._require_transaction()
        if not rows:
            return 0
        cursor = await self._conn.executemany(_LIVE_WRITE_SQL[table], rows)
        return max(cursor.rowcount, 0)

    async def import_rows_in_transaction(self, table: str, rows: Sequence[Row]) -> int:
        """Insert full rows (TABLE_COLUMNS order, ids included), ignoring primary-key
        duplicates; returns how many were new. Tables without a key (quotes, bars)
        simply append."""
        self._require_transaction()
        if not rows:
            return 0
        cursor = await self._conn.executemany(_IMPORT_SQL[check_table(table)], rows)
        return max(cursor.rowcount, 0)

    async def write_batch(self, batch: Mapping[str, Sequence[Row]]) -> int:
        """Write several tables' rows in one transaction, one executemany per table."""
        async with self.transaction():
            return await self.write_batch_in_transaction(batch)

    async def write_batch_in_transaction(self, batch: Mapping[str, Sequence[Row]]) -> int:
        """The body of ``write_batch`` for callers that hold ``transaction()``."""
        written = 0
        for table in WRITE_ORDER:
            rows = batch.get(table)
            if rows:
                await self.write_rows_in_transaction(table, rows)
                written += len(rows)
        return written

    def _require_transaction(self) -> None:
        if not self._lock.locked() or not self._conn.in_transaction:
            raise RuntimeError("write_*_in_transaction needs an open Database.transaction()")

    async def insert_new_order_in_transaction(self, row: Row) -> None:
        """Journal a new order; raises sqlite3.IntegrityError when its id exists already."""
        self._require_transaction()
        await self._conn.execute(_NEW_ORDER_SQL, row)

    async def insert_alerts_in_transaction(self, rows: Sequence[Row]) -> list[int]:
        """Insert alert rows (write_columns order) one by one inside an open
        ``transaction()``; returns their row ids, so delivery updates can find them."""
        self._require_transaction()
        ids: list[int] = []
        for row in rows:
            cursor = await self._conn.execute(_LIVE_WRITE_SQL["alerts"], row)
            ids.append(int(cursor.lastrowid or 0))
        return ids

    async def update_alert_delivery_in_transaction(
        self, updates: Sequence[tuple[int, str]]
    ) -> None:
        """Set the per-channel delivery summary of alerts by row id: (id, delivery)."""
        self._require_transaction()
        if updates:
            await self._conn.executemany(
                "UPDATE alerts SET delivery = ? WHERE id = ?", [(d, i) for i, d in updates]
            )

    async def update_alert_delivery_by_match_in_transaction(
        self, ts: datetime, key: str, message: str, delivery: str
    ) -> bool:
        """Fallback for an alert whose row id is unknown: the newest row with the same
        time, key and message. True when a row was updated."""
        self._require_transaction()
        cursor = await self._conn.execute(
            "UPDATE alerts SET delivery = ? WHERE id = (SELECT MAX(id) FROM alerts "
            "WHERE key = ? AND ts = ? AND message = ?)",
            (delivery, key, to_db_ts(ts), message),
        )
        return cursor.rowcount > 0

    # ----------------------------------------------------------------- single writes

    async def write_heartbeat(self, record: HeartbeatRecord) -> None:
        """Overwrite the one heartbeat row (implements core.heartbeat.HeartbeatStore)."""
        async with self.transaction():
            await self._conn.execute(_HEARTBEAT_UPSERT_SQL, heartbeat_row(record))

    async def heartbeat(self) -> HeartbeatRecord | None:
        row = await self._fetchone("SELECT ts, pid, state, started_at FROM heartbeat WHERE id = 1")
        return None if row is None else _heartbeat_from_row(row)

    async def upsert_order(self, order: Order) -> None:
        async with self.transaction():
            await self.write_rows_in_transaction("orders", [order_row(order)])

    async def insert_fill(self, fill: Fill) -> bool:
        """Store a fill unless its exec id is already known; True when it was new."""
        async with self.transaction():
            return await self.write_rows_in_transaction("fills", [fill_row(fill)]) == 1

    # ----------------------------------------------------------------- queries

    async def order(self, client_order_id: str) -> Order | None:
        row = await self._fetchone(
            f"SELECT {_quoted(TABLE_COLUMNS['orders'])} FROM orders WHERE client_order_id = ?",
            (client_order_id,),
        )
        return None if row is None else _order_from_row(row)

    async def orders_since(self, ts: datetime) -> list[Order]:
        """Orders created at or after ``ts``, oldest first."""
        rows = await self._fetchall(
            f"SELECT {_quoted(TABLE_COLUMNS['orders'])} FROM orders "
            "WHERE created_at >= ? ORDER BY created_at, client_order_id",
            (to_db_ts(ts),),
        )
        return [_order_from_row(r) for r in rows]

    async def working_orders(self) -> list[Order]:
        """Journaled orders not in a terminal state: what to match against the broker
        after a crash."""
        terminal = [str(s) for s in OrderStatus if s.is_terminal]
        marks = ", ".join("?" * len(terminal))
        rows = await self._fetchall(
            f"SELECT {_quoted(TABLE_COLUMNS['orders'])} FROM orders "
            f"WHERE status NOT IN ({marks}) ORDER BY created_at",
            terminal,
        )
        return [_order_from_row(r) for r in rows]

    async def fills_since(self, ts: datetime) -> list[Fill]:
        rows = await self._fetchall(
            f"SELECT {_quoted(TABLE_COLUMNS['fills'])} FROM fills WHERE ts >= ? ORDER BY ts",
            (to_db_ts(ts),),
        )
        return [_fill_from_row(r) for r in rows]

    async def fill_count(self) -> int:
        row = await self._fetchone("SELECT COUNT(*) FROM fills")
        return int(row[0])

    async def order_events(self, client_order_id: str) -> list[Row]:
        """Raw order_events rows for one order (id, client_order_id, ts, status,
        filled_quantity, avg_fill_price, message), oldest first."""
        return await self._fetchall(
            f"SELECT {_quoted(TABLE_COLUMNS['order_events'])} FROM order_events "
            "WHERE client_order_id = ? ORDER BY id",
            (client_order_id,),
        )

    async def recent_alerts(self, limit: int = 50) -> list[AlertRecord]:
        """Newest first."""
        rows = await self._fetchall(
            f"SELECT {_quoted(TABLE_COLUMNS['alerts'])} FROM alerts ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AlertRecord(r[0], from_db_ts(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    async def state_changes(self) -> list[TradingStateChanged]:
        """Every trading-state change, oldest first (the tripped state survives restarts)."""
        rows = await self._fetchall(
            "SELECT ts, previous, state, reason FROM trading_state_changes ORDER BY id"
        )
        return [
            TradingStateChanged(TradingState(r[1]), TradingState(r[2]), r[3], from_db_ts(r[0]))
            for r in rows
        ]

    async def risk_events(self, kind: str | None = None) -> list[RiskEventRecord]:
        columns = _quoted(TABLE_COLUMNS["risk_events"])
        if kind is None:
            rows = await self._fetchall(f"SELECT {columns} FROM risk_events ORDER BY id")
        else:
            rows = await self._fetchall(
                f"SELECT {columns} FROM risk_events WHERE kind = ? ORDER BY id", (kind,)
            )
        return [RiskEventRecord(r[0], from_db_ts(r[1]), r[2], r[3], r[4]) for r in rows]

    async def daily_pnl(self, day: date | str) -> DailyPnlRecorded | None:
        row = await self._fetchone(
            f"SELECT {_quoted(TABLE_COLUMNS['daily_pnl'])} FROM daily_pnl WHERE day = ?",
            (str(day),),
        )
        if row is None:
            return None
        day_text, realized, unrealized, commissions, total, peak, drawdown, ts = row
        return DailyPnlRecorded(
            day_text, realized, unrealized, commissions, total, peak, drawdown, from_db_ts(ts)
        )

    async def quotes(self, symbol: str, start: datetime, end: datetime) -> list[Quote]:
        """Quotes with ``start <= ts < end``, in time order."""
        rows = await self._fetchall(
            f"SELECT {_quoted(TABLE_COLUMNS['quotes'])} FROM quotes "
            "WHERE symbol = ? AND ts >= ? AND ts < ? ORDER BY ts, rowid",
            (symbol, to_db_ts(start), to_db_ts(end)),
        )
        return [_quote_from_row(r) for r in rows]

    async def bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        """Bars that start in ``[start, end)``, in time order."""
        rows = await self._fetchall(
            f"SELECT {_quoted(TABLE_COLUMNS['bars'])} FROM bars "
            "WHERE symbol = ? AND start >= ? AND start < ? ORDER BY start, rowid",
            (symbol, to_db_ts(start), to_db_ts(end)),
        )
        return [_bar_from_row(r) for r in rows]

    async def count(self, table: str) -> int:
        row = await self._fetchone(f"SELECT COUNT(*) FROM {check_table(table)}")
        return int(row[0])

    async def iter_day_rows(
        self, table: str, day: date, chunk_rows: int = 50_000
    ) -> AsyncGenerator[list[Row], None]:
        """All columns of ``table``'s rows that fall on UTC ``day``, in chunks, so a
        day of quotes never has to sit in memory at once."""
        column = DAY_COLUMNS[check_table(table)]
        params: tuple[str, ...]
        if column == "day":
            where, params = "day = ?", (day.isoformat(),)
        else:
            where, params = f'"{column}" >= ? AND "{column}" < ?', day_bounds(day)
        sql = (
            f"SELECT {_quoted(TABLE_COLUMNS[table])} FROM {table} "
            f'WHERE {where} ORDER BY "{column}", rowid'
        )
        async with self._conn.execute(sql, params) as cursor:
            while rows := await cursor.fetchmany(chunk_rows):
                yield [tuple(r) for r in rows]

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._conn.execute(sql, params) as cursor:
            return [tuple(r) for r in await cursor.fetchall()]

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._conn.execute(sql, params) as cursor:
            return await cursor.fetchone()


# --------------------------------------------------------------------------- open / migrate


async def _configure(conn: aiosqlite.Connection, path: Path, busy_timeout_ms: int) -> None:
    async with conn.execute("PRAGMA journal_mode=WAL") as cursor:
        row = await cursor.fetchone()
    mode = str(row[0]) if row else "?"
    if mode.lower() != "wal":
        # Some filesystems (network mounts) refuse WAL; SQLite still works, only slower.
        logger.warning(
            "database {path}: WAL unavailable, journal_mode={mode}", path=path, mode=mode
        )
    # NORMAL is durable across application crashes in WAL mode; only an OS crash or
    # power loss can lose the last commits, and it never corrupts the file.
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _migrate(conn: aiosqlite.Connection, path: Path, migrations: Sequence[str]) -> None:
    current = await _user_version(conn)
    known = len(migrations)
    if current > known:
        raise SchemaVersionError(
            f"database {path} has schema version {current}, but this trading-console only "
            f"knows versions up to {known}: upgrade trading-console or use another database file"
        )
    for version in range(current + 1, known + 1):
        await _apply_migration(conn, version, migrations[version - 1])
        logger.info("database {path}: migrated to schema version {v}", path=path, v=version)


async def _apply_migration(conn: aiosqlite.Connection, version: int, script: str) -> None:
    # user_version lives in the file header and is written by the same transaction,
    # so a failed migration leaves both schema and version where they were.
    try:
        await conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\n;PRAGMA user_version = {version};\nCOMMIT;"
        )
    except sqlite3.Error:
        await conn.rollback()
        raise


async def init_database(path: Path | str) -> int:
    """Create or migrate the database at ``path``; returns its schema version.
    For ``trading-console db init`` (run it with ``asyncio.run``)."""
    db = await Database.open(path)
    try:
        return await db.schema_version()
    finally:
        await db.close()
