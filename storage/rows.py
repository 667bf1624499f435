"""Conversions between model objects and database rows.

Timestamps are stored as fixed-width ISO-8601 UTC text
(``2026-01-05T14:30:00.000000+00:00``) so that text order is time order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from core.events import DailyPnlRecorded, TradingStateChanged
from core.heartbeat import HeartbeatRecord, HeartbeatState
from core.model import (
    Alert,
    Bar,
    Fill,
    Order,
    OrderRole,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Quote,
    QuoteSource,
    Side,
    TimeInForce,
)
from storage.schema import Row


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


_ONE_SECOND = timedelta(seconds=1)
_NEVER = datetime.max.replace(tzinfo=UTC)
# The UTC second last formatted: [start, end) and its text up to the decimal point.
# One tuple, replaced whole, so a reader on another thread never sees a torn update.
_second: tuple[datetime, datetime, str] = (_NEVER, _NEVER, "")
# The text after "HH:MM:SS." by microsecond: feeds stamp in whole ms or coarser, so a
# few texts serve every row. At most 100k entries (~8 MB): every ms and a 10 µs grid.
_FRACTIONS: dict[int, str] = {}
_MAX_FRACTIONS = 100_000


def to_db_ts(ts: datetime) -> str:
    """Fixed-width ISO-8601 UTC text; naive datetimes are taken to be UTC already."""
    # Every order, order event and fill row passes here, and isoformat() costs ~1 µs:
    # timestamps come in runs within the same second, so only the fraction is looked up
    # for those. tests/test_rows.py checks the text against isoformat() byte for byte.
    tz = ts.tzinfo
    if tz is UTC:
        start, end, prefix = _second
        if start <= ts < end:
            fraction = _FRACTIONS.get(ts.microsecond)
            if fraction is None:
                fraction = _fraction_text(ts.microsecond)
            return prefix + fraction
    elif tz is None:
        ts = ts.replace(tzinfo=UTC)
    else:
        ts = ts.astimezone(UTC)
    return _format_second(ts)


def _fraction_text(microsecond: int) -> str:
    text = f"{microsecond:06d}+00:00"
    if len(_FRACTIONS) < _MAX_FRACTIONS:
        _FRACTIONS[microsecond] = text
    return text


def _format_second(ts: datetime) -> str:
    """``ts`` (aware, UTC) the slow way; remember its second for the calls that follow."""
    global _second
    text = ts.isoformat(timespec="microseconds")
    start = ts.replace(microsecond=0)
    try:
        end = start + _ONE_SECOND
    except OverflowError:  # the last second of year 9999: nothing comes after it
        end = _NEVER
    _second = (start, end, text[: text.index(".") + 1])
    return text


def from_db_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def opt_ts(text: str | None) -> datetime | None:
    return None if text is None else from_db_ts(text)


def day_bounds(day: date) -> tuple[str, str]:
    """Half-open [start, end) text bounds of a UTC day."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return to_db_ts(start), to_db_ts(start + timedelta(days=1))


# --------------------------------------------------------------------------- rows
# Column order matches the write columns (TABLE_COLUMNS minus auto ids).


# The quotes table's source column, looked up instead of str() on every quote.
SOURCE_TEXT: dict[QuoteSource, str] = {s: str(s) for s in QuoteSource}


def quote_row(q: Quote) -> Row:
    # Every recorded quote passes here (storage.event_rows): the source text is looked
    # up rather than str() on each quote. tests/test_hot_path.py checks the rows against
    # plain attribute reads and str().
    source = q.source
    text = SOURCE_TEXT.get(source)
    return (
        q.symbol,
        to_db_ts(q.ts),
        q.bid,
        q.ask,
        q.bid_size,
        q.ask_size,
        q.last,
        str(source) if text is None else text,
    )


def bar_row(b: Bar) -> Row:
    return (b.symbol, to_db_ts(b.start), to_db_ts(b.end), b.open, b.high, b.low, b.close, b.ticks)


def order_row(o: OrderSnapshot) -> Row:
    # Every order event passes here: one unpacking of the snapshot (its fields in
    # Order's order, tests/test_execution.py checks) instead of sixteen attribute reads.
    (
        client_order_id,
        symbol,
        side,
        quantity,
        order_type,
        created_at,
        limit_price,
        reason,
        status,
        updated_at,
        filled_quantity,
        avg_fill_price,
        commission,
        broker_order_id,
        last_message,
        reduce_only,
        stop_price,
        tif,
        role,
        parent_id,
        oca_group,
    ) = o
    return (
        client_order_id,
        symbol,
        str(side),
        quantity,
        str(order_type),
        limit_price,
        str(status),
        reason,
        to_db_ts(created_at),
        None if updated_at is None else to_db_ts(updated_at),
        filled_quantity,
        avg_fill_price,
        commission,
        broker_order_id,
        last_message,
        int(reduce_only),
        stop_price,
        str(tif),
        str(role),
        parent_id,
        oca_group,
    )


def order_event_row(o: Order | OrderSnapshot, ts: datetime, message: str) -> Row:
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


def heartbeat_from_row(r: Sequence[Any]) -> HeartbeatRecord:
    return HeartbeatRecord(from_db_ts(r[0]), int(r[1]), HeartbeatState(r[2]), opt_ts(r[3]))


HEARTBEAT_UPSERT_SQL = (
    "INSERT INTO heartbeat (id, ts, pid, state, started_at) VALUES (1, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET ts = excluded.ts, pid = excluded.pid, "
    "state = excluded.state, started_at = excluded.started_at"
)


def state_change_row(e: TradingStateChanged) -> Row:
    return (to_db_ts(e.ts), str(e.previous), str(e.state), e.reason)


def order_from_row(r: Sequence[Any]) -> Order:
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
        updated_at=opt_ts(r[9]),
        filled_quantity=r[10],
        avg_fill_price=r[11],
        commission=r[12],
        broker_order_id=r[13],
        last_message=r[14],
        reduce_only=bool(r[15]),
        stop_price=r[16],
        tif=TimeInForce(r[17]),
        role=OrderRole(r[18]),
        parent_id=r[19],
        oca_group=r[20],
    )


def fill_from_row(r: Sequence[Any]) -> Fill:
    return Fill(r[0], r[1], r[2], Side(r[3]), r[4], r[5], r[6], from_db_ts(r[7]))


def quote_from_row(r: Sequence[Any]) -> Quote:
    return Quote(r[0], from_db_ts(r[1]), r[2], r[3], r[4], r[5], r[6], QuoteSource(r[7]))


def bar_from_row(r: Sequence[Any]) -> Bar:
    return Bar(r[0], from_db_ts(r[1]), from_db_ts(r[2]), r[3], r[4], r[5], r[6], r[7])


# --------------------------------------------------------------------------- SQL text
