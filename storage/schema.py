"""The SQLite schema: migrations, table columns and the SQL the writers use."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

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
    # 3: quotes keep one index, on ts. Every quote is recorded, and the (symbol, ts) index
    # cost a third of the insert rate (351k rows/s with both, 514k with ts alone). Reads
    # go by day (replay, export, prune) and use ts; a symbol's quotes of a time range
    # are found through ts and filtered, which is a scan of that range only.
    """
    DROP INDEX IF EXISTS ix_quotes_symbol_ts;
    """,
    # 4: stop and stop-limit orders, GTC, brackets and protective stops (issue 14).
    """
    ALTER TABLE orders ADD COLUMN stop_price REAL;
    ALTER TABLE orders ADD COLUMN tif TEXT NOT NULL DEFAULT 'DAY';
    ALTER TABLE orders ADD COLUMN role TEXT NOT NULL DEFAULT 'entry';
    ALTER TABLE orders ADD COLUMN parent_id TEXT;
    ALTER TABLE orders ADD COLUMN oca_group TEXT;
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
        " last_message reduce_only stop_price tif role parent_id oca_group",
        "order_events": "id client_order_id ts status filled_quantity avg_fill_price message",
        "fills": "exec_id client_order_id symbol side quantity price commission ts",
        "daily_pnl": "day realized unrealized commissions total peak_equity max_drawdown_pct ts",
        "risk_events": "id ts kind symbol detail",
        "alerts": "id ts severity key message delivery",
        "trading_state_changes": "id ts previous state reason",
    }.items()
}

# Columns a later migration added, with the value a row written before has: an archive
# file exported by an older version lacks them and is read with these.
ADDED_COLUMNS: dict[str, dict[str, object]] = {
    "orders": {
        "stop_price": None,
        "tif": "DAY",
        "role": "entry",
        "parent_id": None,
        "oca_group": None,
    },
}

# Tables whose ``id`` is assigned by SQLite: live writers leave it out.
AUTO_ID_TABLES = frozenset({"order_events", "risk_events", "alerts", "trading_state_changes"})

# Primary key for tables where a repeated row must replace the stored one.
UPSERT_KEYS: dict[str, str] = {"orders": "client_order_id", "daily_pnl": "day"}

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


class DatabaseRefused(RuntimeError):
    """The database file (or its directory) cannot be used: damaged, newer, not SQLite,
    not writable. Raised before anything is written; the message names the file and what
    the operator can do, and the command line turns it into exit code 2."""


class SchemaVersionError(DatabaseRefused):
    """The database was written by a newer trading-console than this one."""


def write_columns(table: str) -> tuple[str, ...]:
    """Columns a live writer supplies: everything but SQLite-assigned ids."""
    columns = TABLE_COLUMNS[table]
    return columns[1:] if table in AUTO_ID_TABLES else columns


def quoted(columns: Iterable[str]) -> str:
    # "end" is an SQL keyword; quoting every name keeps the generator simple.
    return ", ".join(f'"{c}"' for c in columns)


def insert_sql(table: str, columns: Sequence[str], *, ignore: bool) -> str:
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    marks = ", ".join("?" * len(columns))
    return f"{verb} INTO {table} ({quoted(columns)}) VALUES ({marks})"


def upsert_sql(table: str, key: str) -> str:
    columns = write_columns(table)
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != key)
    return f"{insert_sql(table, columns, ignore=False)} ON CONFLICT({key}) DO UPDATE SET {updates}"


def live_write_sql(table: str) -> str:
    if table in UPSERT_KEYS:
        return upsert_sql(table, UPSERT_KEYS[table])
    # Fills arrive again after reconnects; the exec id makes the second one a no-op.
    return insert_sql(table, write_columns(table), ignore=table == "fills")


LIVE_WRITE_SQL: dict[str, str] = {t: live_write_sql(t) for t in TABLE_COLUMNS}
IMPORT_SQL: dict[str, str] = {
    t: insert_sql(t, cols, ignore=True) for t, cols in TABLE_COLUMNS.items()
}


def check_table(table: str) -> str:
    if table not in TABLE_COLUMNS:
        known = ", ".join(TABLE_COLUMNS)
        raise ValueError(f"unknown table {table!r}; expected one of: {known}")
    return table


# --------------------------------------------------------------------------- database
