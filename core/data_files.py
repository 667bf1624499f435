"""Bar and quote files for backtests: discovery, validation, and streaming in time order.

Accepted input (a file, or a directory whose ``.csv`` / ``.parquet`` / ``.pq`` files are
all read):

- **bars**: columns ``timestamp, open, high, low, close`` and optionally ``volume``
  (missing or NaN volume counts as 0; nothing here fills on volume). ``timestamp`` is
  the bar's *start*.
- **quotes**: columns ``timestamp, bid, ask`` and optionally ``bid_size, ask_size,
  last`` — our own Parquet archive (``quotes/<day>.parquet``, whose time column is
  ``ts``) reads as is.

Column names are matched case-insensitively; ``ts``, ``datetime`` and ``date`` are
accepted for ``timestamp``. Timestamps are ISO 8601 text (``2024-01-02``,
``2024-01-02 09:30:00``, ``2024-01-02T09:30:00-05:00``) or Parquet timestamps/dates;
naive ones are taken as UTC. The symbol comes from a ``symbol`` column when there is
one, otherwise from the file name up to its first ``_`` (``AAPL.csv``,
``aapl_1min.parquet`` → ``AAPL``).

Validation reads every file once, in chunks, before anything runs. Rows must be in
time order per symbol; bars must not repeat a timestamp (quotes may: several quotes
in one microsecond are normal tick data). Prices must be finite and positive, a bar's
high/low must contain its open and close, a quote must not be crossed. Each problem
raises a ``DataFileError`` naming the file, the row (counted from 1, header excluded)
and the column.

Streaming reads the files again chunk by chunk and yields one record at a time, so a
run over millions of rows never holds them all as Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.model import Quote, QuoteSource

SUFFIXES = (".csv", ".parquet", ".pq")
TIMESTAMP_ALIASES = ("timestamp", "ts", "datetime", "date")
BAR_PRICES = ("open", "high", "low", "close")
QUOTE_PRICES = ("bid", "ask")
# Rows read at a time: big enough for vectorised checks, small enough that one chunk's
# Python values (7 columns per row while streaming) stay a few MB.
DEFAULT_CHUNK_ROWS = 20_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_SECOND = 1_000_000


class DataKind(StrEnum):
    BARS = "bars"
    QUOTES = "quotes"


class DataFileError(Exception):
    """A data file the operator must fix; the message names the file, row and column."""

    def __init__(
        self,
        path: Path,
        problem: str,
        *,
        row: int | str | None = None,
        column: str | None = None,
    ) -> None:
        where = [str(path)]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {problem}")
        self.path = path
        self.row = row
        self.column = column
        self.problem = problem


@dataclass(frozen=True, slots=True)
class BarRecord:
    """One OHLCV bar as read from a file; ``start`` is the bar's opening time (UTC)."""

    symbol: str
    start: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class DataStream:
    """Time-ordered records of one file: one symbol, or every symbol when ``only`` is None.

    A multi-symbol file that is not in time order across symbols (grouped by symbol,
    say) is read as one stream per symbol, each filtering the file's rows.
    """

    path: Path
    kind: DataKind
    symbols: tuple[str, ...]
    rows: int
    only: str | None  # filter the file's rows to this symbol
    file_symbol: str | None  # symbol from the file name (no symbol column)


@dataclass(frozen=True, slots=True)
class DataSet:
    """Validated input of a run: what it holds and how to stream it."""

    kind: DataKind
    symbols: tuple[str, ...]
    streams: tuple[DataStream, ...]
    rows: int
    first_ts: datetime
    last_ts: datetime
    # Bars only: the shortest spacing between two bars of one symbol, whole seconds.
    # Every bar then falls in its own bar interval of this length.
    bar_seconds: int | None
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def bar_streams(self) -> list[Iterator[BarRecord]]:
        if self.kind is not DataKind.BARS:
            raise ValueError(f"this data set holds {self.kind}, not bars")
        return [_iter_bars(s, self.chunk_rows) for s in self.streams]

    def quote_streams(self) -> list[Iterator[Quote]]:
        if self.kind is not DataKind.QUOTES:
            raise ValueError(f"this data set holds {self.kind}, not quotes")
        return [_iter_quotes(s, self.chunk_rows) for s in self.streams]


# =============================================================================== loading


def load_data(path: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> DataSet:
    """Find and validate the bar or quote files at ``path``; raise DataFileError if bad."""
    path = Path(path)
    files = _discover(path)
    infos = [_validate_file(f, chunk_rows) for f in files]
    kind = infos[0].kind
    for info in infos[1:]:
        if info.kind is not kind:
            raise DataFileError(
                info.path,
                f"holds {info.kind} but {infos[0].path} holds {kind}: a run reads one kind",
            )
    owner: dict[str, Path] = {}
    for info in infos:
        for symbol in info.rows_by_symbol:
            if symbol in owner:
                raise DataFileError(
                    info.path, f"symbol {symbol} is also in {owner[symbol]}: keep one file each"
                )
            owner[symbol] = info.path
    streams: list[DataStream] = []
    for info in infos:
        symbols = tuple(sorted(info.rows_by_symbol))
        if info.file_symbol is not None or info.time_ordered:
            streams.append(DataStream(info.path, kind, symbols, info.rows, None, info.file_symbol))
        else:
            streams.extend(
                DataStream(info.path, kind, (s,), info.rows_by_symbol[s], s, None) for s in symbols
            )
    bar_seconds = _bar_seconds(infos) if kind is DataKind.BARS else None
    return DataSet(
        kind=kind,
        symbols=tuple(sorted(owner)),
        streams=tuple(streams),
        rows=sum(i.rows for i in infos),
        first_ts=_from_us(min(i.first_us or 0 for i in infos)),
        last_ts=_from_us(max(i.last_us or 0 for i in infos)),
        bar_seconds=bar_seconds,
        chunk_rows=chunk_rows,
    )


def _discover(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _supported(p))
        if not files:
            raise DataFileError(path, f"no data files in this directory ({', '.join(SUFFIXES)})")
        return files
    if not path.exists():
        raise DataFileError(path, "no such file or directory")
    if not _supported(path):
        raise DataFileError(path, f"unsupported file type: use one of {', '.join(SUFFIXES)}")
    return [path]


def _supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def _bar_seconds(infos: list[_FileInfo]) -> int:
    spaced = [i for i in infos if i.min_gap_us is not None]
    if not spaced:
        raise DataFileError(
            infos[0].path, "cannot tell the bar length: give at least two bars of one symbol"
        )
    tightest = min(spaced, key=lambda i: i.min_gap_us or 0)
    gap = tightest.min_gap_us or 0
    if gap < _US_PER_SECOND:
        raise DataFileError(
            tightest.path,
            f"bars {gap / _US_PER_SECOND:g} s apart: bars shorter than 1 second are not "
            "supported (backtest the quotes instead)",
            row=tightest.min_gap_row,
            column="timestamp",
        )
    # Rounding down keeps every bar in an interval of its own (no two bars of a
    # symbol are closer than this), which is what the core's bar builder needs.
    return gap // _US_PER_SECOND


# =============================================================================== validation


@dataclass(slots=True)
class _FileInfo:
    path: Path
    kind: DataKind
    file_symbol: str | None
    rows: int = 0
    rows_by_symbol: dict[str, int] = field(default_factory=dict)
    first_us: int | None = None
    last_us: int | None = None
    time_ordered: bool = True  # across symbols, in file order
    tail_us: int | None = None  # the latest chunk's last timestamp
    min_gap_us: int | None = None
    min_gap_row: int | None = None
    # per symbol: (timestamp, row) of its latest row, for order checks across chunks
    last_seen: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Chunk:
    """One chunk's columns, parsed and validated, as numpy arrays."""

    ts: np.ndarray  # int64 microseconds since the epoch, UTC
    symbols: np.ndarray  # object array of str
    values: dict[str, np.ndarray]  # float64 arrays by column name


def _validate_file(path: Path, chunk_rows: int) -> _FileInfo:
    columns = _columns(path)
    kind = _kind(path, columns)
    file_symbol = None if "symbol" in columns else _symbol_from_name(path)
    info = _FileInfo(path, kind, file_symbol)
    offset = 0
    for frame in _read_chunks(path, chunk_rows):
        if frame.empty:
            continue
        chunk = _prepare(path, frame, offset, kind, file_symbol)
        _check_order(info, chunk, offset)
        offset += len(frame)
    if offset == 0:
        raise DataFileError(path, "no data rows")
    info.rows = offset
    return info


def _columns(path: Path) -> list[str]:
    try:
        if path.suffix.lower() == ".csv":
            names = list(pd.read_csv(path, nrows=0).columns)
        else:
            names = list(pq.ParquetFile(path).schema_arrow.names)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, pa.ArrowException) as exc:
        raise DataFileError(path, f"cannot be read: {exc}", row="header") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(path, f"cannot be read: {exc}") from None
    normalised = [str(n).strip().lower() for n in names]
    for i, name in enumerate(normalised):
        if name in normalised[:i]:
            raise DataFileError(path, "appears twice (names are case-insensitive)", column=name)
    return normalised


def _kind(path: Path, columns: list[str]) -> DataKind:
    if not any(a in columns for a in TIMESTAMP_ALIASES):
        raise DataFileError(
            path,
            f"missing (the file has: {', '.join(columns) or 'no columns'})",
            row="header",
            column="timestamp",
        )
    if all(c in columns for c in QUOTE_PRICES):
        return DataKind.QUOTES
    if all(c in columns for c in BAR_PRICES):
        return DataKind.BARS
    if any(c in columns for c in (*BAR_PRICES, *QUOTE_PRICES)):
        wanted = QUOTE_PRICES if any(c in columns for c in QUOTE_PRICES) else BAR_PRICES
        missing = next(c for c in wanted if c not in columns)
        raise DataFileError(
            path,
            f"missing (the file has: {', '.join(columns)})",
            row="header",
            column=missing,
        )
    raise DataFileError(
        path,
        "neither bars (timestamp, open, high, low, close[, volume]) nor quotes "
        f"(timestamp, bid, ask); the file has: {', '.join(columns)}",
        row="header",
    )


def _symbol_from_name(path: Path) -> str:
    symbol = path.name[: -len(path.suffix)].split("_")[0].strip().upper()
    if not symbol or not all(c.isalnum() or c in ".-" for c in symbol):
        raise DataFileError(
            path,
            "cannot tell the symbol: name the file after it (AAPL.csv, AAPL_1min.csv) "
            "or add a 'symbol' column",
        )
    return symbol


def _read_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        if path.suffix.lower() == ".csv":
            with pd.read_csv(path, chunksize=chunk_rows) as reader:
                for frame in reader:
                    yield _lower(frame)
        else:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield _lower(batch.to_pandas())
    except (pd.errors.ParserError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise DataFileError(path, f"cannot be read: {exc}") from None


def _lower(frame: pd.DataFrame) -> pd.DataFrame:
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame


def _prepare(
    path: Path, frame: pd.DataFrame, offset: int, kind: DataKind, file_symbol: str | None
) -> _Chunk:
    """Parse and check one chunk; ``offset`` is the number of data rows before it."""
    n = len(frame)
    ts_column = next(a for a in TIMESTAMP_ALIASES if a in frame.columns)
    ts = _timestamps(path, frame[ts_column], offset, ts_column)
    if file_symbol is None:
        symbols = _symbols(path, frame["symbol"], offset)
    else:
        symbols = np.full(n, file_symbol, dtype=object)
    if kind is DataKind.BARS:
        values = {c: _prices(path, frame[c], offset, c) for c in BAR_PRICES}
        values["volume"] = _optional_amount(path, frame, "volume", offset)
        _check_bar_ranges(path, values, offset)
    else:
        values = {c: _prices(path, frame[c], offset, c) for c in QUOTE_PRICES}
        crossed = np.flatnonzero(values["bid"] > values["ask"])
        if crossed.size:
            i = int(crossed[0])
            raise DataFileError(
                path,
                f"crossed quote: bid {values['bid'][i]:g} > ask {values['ask'][i]:g}",
                row=offset + i + 1,
                column="bid",
            )
        for name in ("bid_size", "ask_size"):
            values[name] = _optional_amount(path, frame, name, offset)
        values["last"] = _optional_last(path, frame, offset)
    return _Chunk(ts, symbols, values)


def _timestamps(path: Path, series: pd.Series, offset: int, column: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        raise DataFileError(
            path,
            f"numbers are not timestamps (got {series.iloc[0]!r}); write ISO 8601 text "
            "such as 2024-01-02 09:30:00",
            row=offset + 1,
            column=column,
        )
    if pd.api.types.is_string_dtype(series):
        parsed = pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
    else:
        parsed = pd.to_datetime(series, utc=True, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataFileError(
            path,
            f"not a timestamp: {series.iloc[i]!r} (use ISO 8601, e.g. 2024-01-02 09:30:00)",
            row=offset + i + 1,
            column=column,
        )
    naive_utc = parsed.dt.tz_convert(None).dt.as_unit("us")
    return naive_utc.to_numpy(dtype="datetime64[us]").astype("int64")


def _symbols(path: Path, series: pd.Series, offset: int) -> np.ndarray:
    cleaned = series.astype("string").str.strip().str.upper()
    bad = np.flatnonzero((cleaned.isna() | (cleaned == "")).to_numpy())
    if bad.size:
        raise DataFileError(path, "empty symbol", row=offset + int(bad[0]) + 1, column="symbol")
    return cleaned.to_numpy(dtype=object)


def _numbers(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _prices(path: Path, series: pd.Series, offset: int, column: str) -> np.ndarray:
    values = _numbers(series)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raw = series.iloc[i]
        problem = "NaN price (empty or missing)" if pd.isna(raw) else f"not a price: {raw!r}"
        raise DataFileError(path, problem, row=offset + i + 1, column=column)
    bad = np.flatnonzero(values <= 0)
    if bad.size:
        i = int(bad[0])
        raise DataFileError(
            path, f"price must be > 0, got {values[i]:g}", row=offset + i + 1, column=column
        )
    return values


def _optional_amount(path: Path, frame: pd.DataFrame, column: str, offset: int) -> np.ndarray:
    if column not in frame.columns:
        return np.zeros(len(frame))
    raw = frame[column]
    values = _numbers(raw)
    unparsable = np.flatnonzero(np.isnan(values) & raw.notna().to_numpy())
    if unparsable.size:
        i = int(unparsable[0])
        raise DataFileError(
            path, f"not a number: {raw.iloc[i]!r}", row=offset + i + 1, column=column
        )
    values = np.nan_to_num(values, nan=0.0)
    bad = np.flatnonzero((values < 0) | ~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raise DataFileError(
            path, f"must be a number >= 0, got {values[i]:g}", row=offset + i + 1, column=column
        )
    return values


def _optional_last(path: Path, frame: pd.DataFrame, offset: int) -> np.ndarray:
    if "last" not in frame.columns:
        return np.full(len(frame), np.nan)
    values = _numbers(frame["last"])
    bad = np.flatnonzero(np.isinf(values) | (values <= 0))
    if bad.size:
        i = int(bad[0])
        raise DataFileError(
            path, f"last price must be > 0, got {values[i]:g}", row=offset + i + 1, column="last"
        )
    return values  # NaN: no last trade price


def _check_bar_ranges(path: Path, v: dict[str, np.ndarray], offset: int) -> None:
    o, h, lo, c = v["open"], v["high"], v["low"], v["close"]
    bad = np.flatnonzero(h < np.maximum(np.maximum(o, c), lo))
    if bad.size:
        i = int(bad[0])
        raise DataFileError(
            path,
            f"high {h[i]:g} is below the bar's open {o[i]:g}, close {c[i]:g} or low {lo[i]:g}",
            row=offset + i + 1,
            column="high",
        )
    bad = np.flatnonzero(lo > np.minimum(o, c))
    if bad.size:
        i = int(bad[0])
        raise DataFileError(
            path,
            f"low {lo[i]:g} is above the bar's open {o[i]:g} or close {c[i]:g}",
            row=offset + i + 1,
            column="low",
        )


def _check_order(info: _FileInfo, chunk: _Chunk, offset: int) -> None:
    """Time order per symbol (strict for bars), the bar spacing, and the file's span."""
    ts = chunk.ts
    low, high = int(ts.min()), int(ts.max())
    info.first_us = low if info.first_us is None else min(info.first_us, low)
    info.last_us = high if info.last_us is None else max(info.last_us, high)
    if info.file_symbol is None and info.time_ordered:
        # A multi-symbol file in time order across symbols streams as it is; one
        # grouped by symbol is streamed per symbol instead (see load_data).
        head = ts if info.tail_us is None else np.concatenate(([info.tail_us], ts))
        info.time_ordered = not bool(np.any(np.diff(head) < 0))
    info.tail_us = int(ts[-1])
    strict = info.kind is DataKind.BARS
    groups: dict[Any, np.ndarray] = (
        {chunk.symbols[0]: np.arange(len(ts))}
        if info.file_symbol is not None
        else pd.Series(chunk.symbols).groupby(chunk.symbols, sort=False).indices
    )
    for key, positions in groups.items():
        symbol = str(key)
        times = ts[positions]
        rows = positions + offset + 1
        seen = info.last_seen.get(symbol)
        if seen is not None:
            times = np.concatenate(([seen[0]], times))
            rows = np.concatenate(([seen[1]], rows))
        gaps = np.diff(times)
        bad = np.flatnonzero(gaps <= 0 if strict else gaps < 0)
        if bad.size:
            i = int(bad[0])
            when, before = _from_us(int(times[i + 1])), _from_us(int(times[i]))
            problem = (
                f"duplicate timestamp {when.isoformat()} (row {rows[i]} has it too)"
                if gaps[i] == 0
                else f"timestamp {when.isoformat()} is earlier than row {rows[i]}'s "
                f"{before.isoformat()}: rows must be in time order"
            )
            if info.file_symbol is None:
                problem += f" (symbol {symbol})"
            raise DataFileError(info.path, problem, row=int(rows[i + 1]), column="timestamp")
        if strict and gaps.size:
            j = int(np.argmin(gaps))
            if info.min_gap_us is None or int(gaps[j]) < info.min_gap_us:
                info.min_gap_us, info.min_gap_row = int(gaps[j]), int(rows[j + 1])
        info.last_seen[symbol] = (int(times[-1]), int(rows[-1]))
        info.rows_by_symbol[symbol] = info.rows_by_symbol.get(symbol, 0) + len(positions)


# =============================================================================== streaming


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _stream_chunks(stream: DataStream, chunk_rows: int) -> Iterator[_Chunk]:
    offset = 0
    for frame in _read_chunks(stream.path, chunk_rows):
        if frame.empty:
            continue
        chunk = _prepare(stream.path, frame, offset, stream.kind, stream.file_symbol)
        offset += len(frame)
        if stream.only is not None:
            mask = chunk.symbols == stream.only
            chunk = _Chunk(
                chunk.ts[mask], chunk.symbols[mask], {k: v[mask] for k, v in chunk.values.items()}
            )
        yield chunk


def _iter_bars(stream: DataStream, chunk_rows: int) -> Iterator[BarRecord]:
    for chunk in _stream_chunks(stream, chunk_rows):
        v = chunk.values
        for symbol, us, o, h, lo, c, vol in zip(
            chunk.symbols.tolist(),
            chunk.ts.tolist(),
            v["open"].tolist(),
            v["high"].tolist(),
            v["low"].tolist(),
            v["close"].tolist(),
            v["volume"].tolist(),
            strict=True,
        ):
            yield BarRecord(symbol, _from_us(us), o, h, lo, c, vol)


def _iter_quotes(stream: DataStream, chunk_rows: int) -> Iterator[Quote]:
    for chunk in _stream_chunks(stream, chunk_rows):
        v = chunk.values
        for symbol, us, bid, ask, bid_size, ask_size, last in zip(
            chunk.symbols.tolist(),
            chunk.ts.tolist(),
            v["bid"].tolist(),
            v["ask"].tolist(),
            v["bid_size"].astype("int64").tolist(),
            v["ask_size"].astype("int64").tolist(),
            v["last"].tolist(),
            strict=True,
        ):
            yield Quote(
                symbol,
                _from_us(us),
                bid,
                ask,
                bid_size,
                ask_size,
                None if last != last else last,  # NaN: no last trade price
                QuoteSource.REPLAY,
            )
