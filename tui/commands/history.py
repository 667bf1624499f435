"""`trading-console history`: download IB historical bars into Parquet for backtests.

One connection (client id IB_CLIENT_ID + 1 by default, so a running console
keeps its own), the stock qualified like the console does, then one
reqHistoricalData per chunk (a day for minute bars, a week for hour bars, one
request for daily bars), newest first, every request through the pacer so IB
never cancels one for pacing. Bars are regular-hours TRADES bars; timestamps
are the bar start in UTC.

A chunk IB refuses (error 162 "pacing violation", any other request error, or
no answer in time) is not an empty chunk: it is retried after
``RETRY_DELAYS`` (each retry also through the pacer), and when it stays refused
nothing is saved and ``HistoryIncomplete`` names every missing span. Only IB's
"HMDS query returned no data" (a weekend, a holiday) counts as a chunk without
bars.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ib_async import IB, RequestError, StartupFetchNONE
from loguru import logger

from core.brokers.base import BrokerConnectError
from core.brokers.ib import route_ib_async_logging
from core.brokers.ib_contracts import qualify_stocks
from core.brokers.ib_errors import HMDS_ERROR, describe_connect_failure
from core.brokers.ib_pacing import HistoricalPacer
from core.clock import Clock, LiveClock
from core.config import Settings

# bar argument unit -> (IB unit word, allowed counts, chunk length per request)
_UNITS: dict[str, tuple[str, tuple[int, ...], timedelta]] = {
    "min": ("min", (1, 2, 3, 5, 10, 15, 20, 30), timedelta(days=1)),
    "hour": ("hour", (1, 2, 3, 4, 8), timedelta(weeks=1)),
    "day": ("day", (1,), timedelta(days=365)),
}
_ALIASES = {"m": "min", "min": "min", "mins": "min", "h": "hour", "hour": "hour", "hours": "hour"}
_ALIASES |= {"d": "day", "day": "day", "days": "day"}
SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
    ]
)
REQUEST_TIMEOUT_SECONDS = 60.0
# Waits before each retry of a refused chunk. IB documents the pacing rules, not a penalty
# time: the first wait outlasts the 15 s identical-request rule, then it doubles.
RETRY_DELAYS: tuple[float, ...] = (16.0, 32.0, 64.0)
_NO_DATA = "returned no data"


class HistoryIncomplete(BrokerConnectError):
    """Some chunks stayed refused after every retry; nothing was saved."""

    def __init__(self, symbol: str, gaps: list[tuple[datetime, datetime, str]], total: int):
        self.gaps = gaps
        spans = "; ".join(
            f"{a:%Y-%m-%d %H:%M} to {b:%Y-%m-%d %H:%M} UTC ({why})" for a, b, why in gaps
        )
        super().__init__(
            f"{symbol}: {len(gaps)} of {total} requests stayed refused by IB after "
            f"{len(RETRY_DELAYS) + 1} attempts, nothing saved; missing {spans}. "
            "Wait 10 minutes (IB's pacing window) and run the download again"
        )


def parse_bar(bar: str) -> tuple[str, timedelta]:
    """ "1min" / "5 mins" / "1h" / "1d" → IB's bar size setting and the chunk per request."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]+)\s*", bar)
    unit = _ALIASES.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"--bar {bar!r}: use e.g. 1min, 5mins, 1hour or 1day")
    count = int(match.group(1))
    word, allowed, chunk = _UNITS[unit]
    if count not in allowed:
        listed = ", ".join(f"{n}{word}" for n in allowed)
        raise ValueError(f"--bar {bar!r}: IB offers {listed}")
    plural = "s" if count > 1 and word != "day" else ""
    return f"{count} {word}{plural}", chunk


def _bar_slug(setting: str) -> str:
    return setting.replace(" ", "")


def _to_utc(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


async def download_history(
    settings: Settings,
    symbol: str,
    days: int,
    bar: str,
    out_dir: Path,
    *,
    clock: Clock | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    client_id: int | None = None,
    pacer: HistoricalPacer | None = None,
) -> Path:
    """Download ``days`` of ``bar`` bars of ``symbol`` into ``out_dir``; returns the file.

    Raises ValueError for bad arguments and BrokerConnectError when TWS cannot be
    reached or does not know the symbol (both are the operator's to fix).
    """
    if days < 1:
        raise ValueError(f"--days must be >= 1, got {days}")
    setting, chunk = parse_bar(bar)
    symbol = symbol.strip().upper()
    clock = clock or LiveClock()
    pacer = pacer or HistoricalPacer(clock)
    route_ib_async_logging()
    ib = IB()
    endpoint = f"{settings.ib_host}:{settings.ib_port}"
    cid = settings.ib_client_id + 1 if client_id is None else client_id
    try:
        await ib.connectAsync(
            settings.ib_host,
            settings.ib_port,
            cid,
            timeout=settings.ib_connect_timeout,
            readonly=True,
            fetchFields=StartupFetchNONE,
        )
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise BrokerConnectError(
            describe_connect_failure(exc, endpoint=endpoint, client_id=cid)
        ) from None
    try:
        ib.reqMarketDataType(settings.ib_market_data_type)
        found, unknown = await qualify_stocks(ib, [symbol], settings.ib_primary_exchange)
        if unknown:
            raise BrokerConnectError(f"IB does not know {symbol} as a US stock (SMART/USD)")
        rows = await _fetch(ib, found[symbol], symbol, days, setting, chunk, clock, sleep, pacer)
    finally:
        ib.disconnect()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{symbol}_{_bar_slug(setting)}_{days}d.parquet"
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, path)
    return path


async def _fetch(
    ib: IB,
    contract: Any,
    symbol: str,
    days: int,
    setting: str,
    chunk: timedelta,
    clock: Clock,
    sleep: Callable[[float], Awaitable[object]],
    pacer: HistoricalPacer,
) -> list[dict[str, Any]]:
    end = clock.now()
    start = end - timedelta(days=days)
    by_time: dict[datetime, dict[str, Any]] = {}
    gaps: list[tuple[datetime, datetime, str]] = []
    requests = 0
    # Request errors raise (RequestError) instead of ending as an empty list, so a refused
    # chunk can be told from one without bars. Set after qualifying, which expects lists.
    ib.RaiseRequestErrors = True
    while end > start:
        span = min(chunk, end - start)
        duration = f"{max(1, round(span.total_seconds() / 86400))} D"
        key = f"{symbol}|{end:%Y%m%d %H:%M:%S}|{duration}|{setting}"
        requests += 1
        bars, refused = await _request_chunk(
            ib, contract, end, duration, setting, key, symbol, sleep, pacer
        )
        if refused is not None:
            gaps.append((end - span, end, refused))
        for b in bars:
            ts = _to_utc(b.date)
            if ts >= start:
                by_time[ts] = {
                    "timestamp": ts,
                    "open": float(b.open),
                    "high": float(b.high),
                    "low": float(b.low),
                    "close": float(b.close),
                    "volume": float(b.volume),
                }
        end -= span
    if gaps:
        raise HistoryIncomplete(symbol, sorted(gaps), requests)
    return [by_time[t] for t in sorted(by_time)]


async def _request_chunk(
    ib: IB,
    contract: Any,
    end: datetime,
    duration: str,
    setting: str,
    key: str,
    symbol: str,
    sleep: Callable[[float], Awaitable[object]],
    pacer: HistoricalPacer,
) -> tuple[list[Any], str | None]:
    """One chunk's bars, retried while IB refuses it; (bars, None) or ([], why refused)."""
    why = ""
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
        if delay:
            logger.warning(
                "history {key}: refused ({why}); retry {n} in {delay:g}s",
                key=key,
                why=why,
                n=attempt,
                delay=delay,
            )
            await sleep(delay)
        await pacer.acquire(key, symbol, sleep)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                bars = await ib.reqHistoricalDataAsync(
                    contract,
                    end,
                    duration,
                    setting,
                    "TRADES",
                    useRTH=True,
                    formatDate=2,
                    timeout=0,  # ours above: ib_async's would end a silent request as []
                )
            return list(bars), None
        except RequestError as exc:
            if exc.code == HMDS_ERROR and _NO_DATA in exc.message:
                return [], None  # a weekend or holiday: genuinely no bars
            why = f"IB {exc.code}: {exc.message}"
        except TimeoutError:
            why = f"no answer in {REQUEST_TIMEOUT_SECONDS:g}s"
        except ConnectionError as exc:
            why = f"connection lost ({exc})"
    return [], why
