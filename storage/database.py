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
import os
import sqlite3
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from loguru import logger

from core.events import DailyPnlRecorded, TradingStateChanged
from core.heartbeat import HeartbeatRecord
from core.model import (
    Bar,
    Fill,
    Order,
    OrderSnapshot,
    OrderStatus,
    Quote,
    TradingState,
)
from storage.rows import (
    HEARTBEAT_UPSERT_SQL,
    AlertRecord,
    RiskEventRecord,
    bar_from_row,
    day_bounds,
    fill_from_row,
    fill_row,
    from_db_ts,
    heartbeat_from_row,
    heartbeat_row,
    order_from_row,
    order_row,
    quote_from_row,
    to_db_ts,
)
from storage.schema import (
    DAY_COLUMNS,
    IMPORT_SQL,
    LIVE_WRITE_SQL,
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLE_COLUMNS,
    WRITE_ORDER,
    DatabaseRefused,
    Row,
    SchemaVersionError,
    check_table,
    quoted,
)

# Client order ids per IN (...) query: well under SQLite's host-parameter limit.
_IDS_PER_QUERY = 500

_SQLITE_MAGIC = b"SQLite format 3\x00"

__all__ = ["Database", "DatabaseRefused", "check_database_file", "check_directory"]


def check_directory(path: Path | str, setting: str) -> None:
    """Refuse (DatabaseRefused naming ``setting``) a directory that is a file, cannot be
    created or cannot be written; creates it when missing. A probe file is created and
    removed: a read-only mount or directory fails here, not in SQLite or the log sink."""
    path = Path(path)
    _refuse_a_file(path, setting)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe_write(path)
    except OSError as exc:
        raise _not_writable(path, setting, exc) from None


def probe_directory(path: Path | str, setting: str) -> None:
    """What check_directory refuses, leaving nothing behind (``trading-console check``):
    a missing directory is judged by the nearest existing one it would be made in."""
    path = Path(path)
    _refuse_a_file(path, setting)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        _probe_write(existing)
    except OSError as exc:
        raise _not_writable(path, setting, exc) from None


def _refuse_a_file(path: Path, setting: str) -> None:
    if path.exists() and not path.is_dir():
        raise DatabaseRefused(
            f"{setting}={path} is not a directory (it is a file): point {setting} at a "
            "directory, or move the file away"
        )


def _probe_write(directory: Path) -> None:
    """Create and remove a file: a read-only mount or directory fails here."""
    fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
    os.close(fd)
    os.unlink(probe)


def _not_writable(path: Path, setting: str, exc: OSError) -> DatabaseRefused:
    return DatabaseRefused(
        f"{setting}={path} is not writable ({exc.strerror or exc}): give this user "
        f"write access or point {setting} at a writable directory"
    )


def check_database_file(path: Path | str, known_version: int = SCHEMA_VERSION) -> None:
    """Refuse a database this console must not write to, before anything writes to it.

    Reads only: the header, ``PRAGMA user_version`` and ``PRAGMA quick_check`` over a
    read-only connection (quick_check reads every page once: ~1 s per GB from the page
    cache). A missing or empty file is a new database and passes."""
    path = Path(path)
    aside = (
        f"move {path} (and its -wal, -shm and -orders files) aside, then start again to "
        "create a new database and restore the recorded days from the Parquet archive "
        "with `trading-console import ARCHIVE_DIR`"
    )
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if not path.is_file():
        raise DatabaseRefused(f"database {path} is not a file: set DATABASE_FILE to a file")
    if st.st_size == 0:
        return
    if st.st_nlink > 1:
        # SQLite names the -wal file after the path: two names of one file get two WALs,
        # and the database is corrupted (sqlite.org/howtocorrupt.html, "multiple links").
        raise DatabaseRefused(
            f"database {path} has {st.st_nlink} hard links: SQLite cannot share a database "
            "through hard links; remove the other links (a symbolic link is fine)"
        )
    with path.open("rb") as fh:
        header = fh.read(len(_SQLITE_MAGIC))
    if header != _SQLITE_MAGIC:
        raise DatabaseRefused(
            f"database {path} is not an SQLite database (damaged header); nothing was "
            f"written to it: {aside}"
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > known_version:
                raise SchemaVersionError(
                    f"database {path} has schema version {version}, but this trading-console "
                    f"only knows versions up to {known_version}; nothing was written to it: "
                    "upgrade trading-console, or set DATABASE_FILE to another file"
                )
            problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        raise DatabaseRefused(
            f"database {path} is damaged ({'; '.join(problems)[:200]}); nothing was written "
            f"to it: {aside}"
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
        return None if row is None else heartbeat_from_row(row)
    except (ValueError, TypeError):
        return None


class Database:
    """The trading console's SQLite file. Build with ``await Database.open(path)``."""

    def __init__(self, conn: aiosqlite.Connection, path: Path, busy_timeout_ms: int = 5000) -> None:
        self._conn = conn
        self.path = path
        self._busy_timeout_s = busy_timeout_ms / 1000
        # Reads and write transactions on this connection take turns. A statement still
        # open when a BEGIN IMMEDIATE runs is a read transaction on an old snapshot, and
        # SQLite then answers "database is locked" at once instead of waiting
        # busy_timeout for the writer process (the final flush failed that way).
        self._lock = asyncio.Lock()
        self._writing_task: asyncio.Task[Any] | None = None

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        migrations: Sequence[str] = MIGRATIONS,
        busy_timeout_ms: int = 5000,
        check: bool = True,
    ) -> Database:
        """Open (creating if needed) and migrate; ``migrations`` is overridable for tests.

        A damaged, foreign or newer-schema file raises DatabaseRefused before anything is
        written to it (``check=False`` when the caller ran ``check_database_file``)."""
        path = Path(path)
        if check:
            await asyncio.to_thread(check_directory, path.parent, "the directory of DATABASE_FILE")
            await asyncio.to_thread(check_database_file, path, len(migrations))
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await _configure(conn, path, busy_timeout_ms)
            await _migrate(conn, path, migrations)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path, busy_timeout_ms)

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def schema_version(self) -> int:
        row = await self._fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

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
            self._writing_task = asyncio.current_task()
            try:
                # Inside the try: a task cancelled while BEGIN runs still rolls it back
                # (aiosqlite runs the two in the order they were asked for).
                await self._begin_immediate()
                yield
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._rollback_quietly()
                raise
            finally:
                self._writing_task = None

    async def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, waiting up to busy_timeout for the other writer.

        SQLite's own busy handler covers most waits, but not all: some answers come at
        once (SQLITE_BUSY_SNAPSHOT and its kin; a stopping console's flush met one, 1 in
        20 crash-drill stops). Those are retried here, with a short backoff, within the
        same bound."""
        deadline = time.monotonic() + self._busy_timeout_s
        delay = 0.005
        while True:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY)
                if code & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
                logger.debug(
                    "database {path}: BEGIN IMMEDIATE answered {name}; retrying",
                    path=self.path,
                    name=getattr(exc, "sqlite_errorname", "SQLITE_BUSY"),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """Take turns with the write transactions (see ``__init__``); a read inside the
        caller's own transaction needs no turn."""
        if self._writing_task is not None and self._writing_task is asyncio.current_task():
            yield
            return
        async with self._lock:
            yield

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
        cursor = await self._conn.executemany(LIVE_WRITE_SQL[table], rows)
        return max(cursor.rowcount, 0)

    async def import_rows_in_transaction(self, table: str, rows: Sequence[Row]) -> int:
        """Insert full rows (TABLE_COLUMNS order, ids included), ignoring primary-key
        duplicates; returns how many were new. Tables without a key (quotes, bars)
        simply append."""
        self._require_transaction()
        if not rows:
            return 0
        cursor = await self._conn.executemany(IMPORT_SQL[check_table(table)], rows)
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

    async def insert_alerts_in_transaction(self, rows: Sequence[Row]) -> list[int]:
        """Insert alert rows (write_columns order) one by one inside an open
        ``transaction()``; returns their row ids, so delivery updates can find them."""
        self._require_transaction()
        ids: list[int] = []
        for row in rows:
            cursor = await self._conn.execute(LIVE_WRITE_SQL["alerts"], row)
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
            await self._conn.execute(HEARTBEAT_UPSERT_SQL, heartbeat_row(record))

    async def heartbeat(self) -> HeartbeatRecord | None:
        row = await self._fetchone("SELECT ts, pid, state, started_at FROM heartbeat WHERE id = 1")
        return None if row is None else heartbeat_from_row(row)

    async def upsert_order(self, order: Order | OrderSnapshot) -> None:
        snapshot = order.snapshot() if isinstance(order, Order) else order
        async with self.transaction():
            await self.write_rows_in_transaction("orders", [order_row(snapshot)])

    async def insert_fill(self, fill: Fill) -> bool:
        """Store a fill unless its exec id is already known; True when it was new."""
        async with self.transaction():
            return await self.write_rows_in_transaction("fills", [fill_row(fill)]) == 1

    # ----------------------------------------------------------------- queries

    async def order(self, client_order_id: str) -> Order | None:
        row = await self._fetchone(
            f"SELECT {quoted(TABLE_COLUMNS['orders'])} FROM orders WHERE client_order_id = ?",
            (client_order_id,),
        )
        return None if row is None else order_from_row(row)

    async def existing_order_ids(self, client_order_ids: Iterable[str]) -> set[str]:
        """The ones among ``client_order_ids`` that the orders table holds."""
        ids = list(client_order_ids)
        found: set[str] = set()
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            rows = await self._fetchall(
                "SELECT client_order_id FROM orders "
                f"WHERE client_order_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            found.update(str(row[0]) for row in rows)
        return found

    async def orders_since(self, ts: datetime) -> list[Order]:
        """Orders created at or after ``ts``, oldest first."""
        rows = await self._fetchall(
            f"SELECT {quoted(TABLE_COLUMNS['orders'])} FROM orders "
            "WHERE created_at >= ? ORDER BY created_at, client_order_id",
            (to_db_ts(ts),),
        )
        return [order_from_row(r) for r in rows]

    async def working_orders(self) -> list[Order]:
        """Journaled orders not in a terminal state: what to match against the broker
        after a crash."""
        terminal = [str(s) for s in OrderStatus if s.is_terminal]
        marks = ", ".join("?" * len(terminal))
        rows = await self._fetchall(
            f"SELECT {quoted(TABLE_COLUMNS['orders'])} FROM orders "
            f"WHERE status NOT IN ({marks}) ORDER BY created_at",
            terminal,
        )
        return [order_from_row(r) for r in rows]

    async def fills_since(self, ts: datetime) -> list[Fill]:
        rows = await self._fetchall(
            f"SELECT {quoted(TABLE_COLUMNS['fills'])} FROM fills WHERE ts >= ? ORDER BY ts",
            (to_db_ts(ts),),
        )
        return [fill_from_row(r) for r in rows]

    async def fill_count(self) -> int:
        row = await self._fetchone("SELECT COUNT(*) FROM fills")
        return int(row[0])

    async def order_events(self, client_order_id: str) -> list[Row]:
        """Raw order_events rows for one order (id, client_order_id, ts, status,
        filled_quantity, avg_fill_price, message), oldest first."""
        return await self._fetchall(
            f"SELECT {quoted(TABLE_COLUMNS['order_events'])} FROM order_events "
            "WHERE client_order_id = ? ORDER BY id",
            (client_order_id,),
        )

    async def recent_alerts(self, limit: int = 50) -> list[AlertRecord]:
        """Newest first."""
        rows = await self._fetchall(
            f"SELECT {quoted(TABLE_COLUMNS['alerts'])} FROM alerts ORDER BY id DESC LIMIT ?",
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
        columns = quoted(TABLE_COLUMNS["risk_events"])
        if kind is None:
            rows = await self._fetchall(f"SELECT {columns} FROM risk_events ORDER BY id")
        else:
            rows = await self._fetchall(
                f"SELECT {columns} FROM risk_events WHERE kind = ? ORDER BY id", (kind,)
            )
        return [RiskEventRecord(r[0], from_db_ts(r[1]), r[2], r[3], r[4]) for r in rows]

    async def daily_pnl(self, day: date | str) -> DailyPnlRecorded | None:
        row = await self._fetchone(
            f"SELECT {quoted(TABLE_COLUMNS['daily_pnl'])} FROM daily_pnl WHERE day = ?",
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
            f"SELECT {quoted(TABLE_COLUMNS['quotes'])} FROM quotes "
            "WHERE symbol = ? AND ts >= ? AND ts < ? ORDER BY ts, rowid",
            (symbol, to_db_ts(start), to_db_ts(end)),
        )
        return [quote_from_row(r) for r in rows]

    async def bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        """Bars that start in ``[start, end)``, in time order."""
        rows = await self._fetchall(
            f"SELECT {quoted(TABLE_COLUMNS['bars'])} FROM bars "
            "WHERE symbol = ? AND start >= ? AND start < ? ORDER BY start, rowid",
            (symbol, to_db_ts(start), to_db_ts(end)),
        )
        return [bar_from_row(r) for r in rows]

    async def first_day(self, table: str) -> date | None:
        """The UTC day of ``table``'s oldest row (an index lookup), None when empty."""
        column = DAY_COLUMNS[check_table(table)]
        row = await self._fetchone(f'SELECT MIN("{column}") FROM {table}')
        return None if row is None or row[0] is None else date.fromisoformat(str(row[0])[:10])

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
            f"SELECT {quoted(TABLE_COLUMNS[table])} FROM {table} "
            f'WHERE {where} ORDER BY "{column}", rowid'
        )
        # Its own read-only connection: a day's export takes seconds, and its open
        # cursor must not hold back this connection's writes (see ``__init__``). WAL
        # gives it one consistent snapshot while the console goes on writing.
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        async with (
            aiosqlite.connect(uri, uri=True) as conn,
            conn.execute(sql, params) as cursor,
        ):
            while rows := await cursor.fetchmany(chunk_rows):
                yield [tuple(r) for r in rows]

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._reading(), self._conn.execute(sql, params) as cursor:
            return [tuple(r) for r in await cursor.fetchall()]

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._reading(), self._conn.execute(sql, params) as cursor:
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
