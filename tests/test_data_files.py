"""Bar and quote files: what loads, how it streams, and how each kind of bad file is named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from core.data_files import DataFileError, DataKind, load_data

HEADER = "timestamp,open,high,low,close,volume\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def good_rows(n: int = 3, start_minute: int = 30) -> str:
    return "".join(
        f"2024-01-02 09:{start_minute + i:02d}:00,{100 + i},{101 + i},{99 + i},{100.5 + i},{1000}\n"
        for i in range(n)
    )


def error_of(path: Path, **kwargs: int) -> DataFileError:
    with pytest.raises(DataFileError) as info:
        load_data(path, **kwargs)
    return info.value


# ---------------------------------------------------------------------------- good files


def test_symbol_from_file_name_and_bar_length(tmp_path: Path) -> None:
    write(tmp_path / "aapl_1min.csv", HEADER + good_rows(3))
    data = load_data(tmp_path / "aapl_1min.csv")
    assert data.kind is DataKind.BARS
    assert data.symbols == ("AAPL",)
    assert data.bar_seconds == 60
    assert data.rows == 3
    assert data.first_ts == datetime(2024, 1, 2, 9, 30, tzinfo=UTC)
    (stream,) = data.bar_streams()
    bars = list(stream)
    assert [b.close for b in bars] == [100.5, 101.5, 102.5]
    assert bars[1].start == datetime(2024, 1, 2, 9, 31, tzinfo=UTC)
    assert bars[0].symbol == "AAPL" and bars[0].volume == 1000


def test_directory_of_csv_and_parquet_with_date_only_and_missing_volume(tmp_path: Path) -> None:
    write(
        tmp_path / "MSFT.csv",
        "Date,Open,High,Low,Close\n2024-01-02,10,11,9,10.5\n2024-01-03,10,11,9,10\n",
    )
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(["2024-01-02", "2024-01-03"], utc=True),
            "open": [20.0, 21.0],
            "high": [22.0, 22.0],
            "low": [19.0, 20.0],
            "close": [21.0, 21.5],
            "volume": [float("nan"), 5.0],  # NaN volume counts as 0
        }
    )
    frame.to_parquet(tmp_path / "SPY.parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    data = load_data(tmp_path)
    assert data.symbols == ("MSFT", "SPY")
    assert data.bar_seconds == 86_400
    streams = data.bar_streams()
    assert [b.close for b in streams[0]] == [10.5, 10.0]
    assert [b.volume for b in streams[1]] == [0.0, 5.0]


def test_symbol_column_grouped_by_symbol_streams_each_symbol_in_time_order(
    tmp_path: Path,
) -> None:
    # Grouped by symbol: not in time order across symbols, so read per symbol.
    text = (
        "timestamp,symbol,open,high,low,close\n"
        "2024-01-02 09:30,msft,1,2,1,2\n"
        "2024-01-02 09:31,msft,2,3,2,3\n"
        "2024-01-02 09:30,IBM,5,6,5,6\n"
        "2024-01-02 09:31,IBM,6,7,6,7\n"
    )
    data = load_data(write(tmp_path / "mixed.csv", text), chunk_rows=3)
    assert data.symbols == ("IBM", "MSFT")
    got = [[(b.symbol, b.start.minute, b.close) for b in s] for s in data.bar_streams()]
    assert got == [[("IBM", 30, 6.0), ("IBM", 31, 7.0)], [("MSFT", 30, 2.0), ("MSFT", 31, 3.0)]]


def test_quotes_in_our_archive_layout(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "symbol": ["AAPL", "MSFT", "AAPL", "AAPL"],
            "ts": pd.to_datetime(
                [
                    "2026-01-05 14:30:00",
                    "2026-01-05 14:30:00.5",
                    "2026-01-05 14:30:01",
                    "2026-01-05 14:30:01",
                ],
                utc=True,
                format="ISO8601",
            ),
            "bid": [10.0, 20.0, 10.1, 10.2],
            "ask": [10.02, 20.02, 10.12, 10.22],
            "bid_size": [100, 200, 300, 400],
            "ask_size": [100, 200, 300, 400],
            "last": [None, 20.01, None, None],
            "source": ["sim"] * 4,
        }
    )
    frame.to_parquet(tmp_path / "2026-01-05.parquet")
    data = load_data(tmp_path / "2026-01-05.parquet")
    assert data.kind is DataKind.QUOTES
    assert data.bar_seconds is None
    (stream,) = data.quote_streams()  # in time order across symbols: one stream, file order
    quotes = list(stream)
    assert [q.symbol for q in quotes] == ["AAPL", "MSFT", "AAPL", "AAPL"]  # equal ts allowed
    assert quotes[1].last == 20.01 and quotes[0].last is None
    assert quotes[2].bid_size == 300


# ---------------------------------------------------------------------------- bad files


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "AAPL.csv", "timestamp,open,high,low,volume\n2024-01-02,1,1,1,1\n")
    err = error_of(path)
    assert err.column == "close" and err.row == "header"
    assert str(path) in str(err) and "'close'" in str(err) and "missing" in str(err)


def test_missing_timestamp_column(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "AAPL.csv", "when,open,high,low,close\nx,1,1,1,1\n"))
    assert err.column == "timestamp"
    assert "AAPL.csv" in str(err)


def test_nan_price_names_row_and_column(tmp_path: Path) -> None:
    rows = good_rows(4).splitlines()
    rows[2] = "2024-01-02 09:32:00,102,103,101,,1000"  # data row 3: close empty
    path = write(tmp_path / "AAPL.csv", HEADER + "\n".join(rows) + "\n")
    err = error_of(path)
    assert (err.row, err.column) == (3, "close")
    assert str(err) == f"{path}, row 3, column 'close': NaN price (empty or missing)"


def test_nan_price_in_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-02", periods=3, freq="D", tz="UTC"),
            "open": [1.0, float("nan"), 1.0],
            "high": [1.0, 1.0, 1.0],
            "low": [1.0, 1.0, 1.0],
            "close": [1.0, 1.0, 1.0],
        }
    )
    frame.to_parquet(tmp_path / "SPY.parquet")
    err = error_of(tmp_path / "SPY.parquet")
    assert (err.row, err.column) == (2, "open")
    assert "SPY.parquet" in str(err)


def test_text_where_a_price_belongs(tmp_path: Path) -> None:
    rows = good_rows(2) + "2024-01-02 09:32:00,abc,103,101,102,1000\n"
    err = error_of(write(tmp_path / "AAPL.csv", HEADER + rows))
    assert (err.row, err.column) == (3, "open")
    assert "'abc'" in str(err)


def test_unsorted_timestamps_name_the_row(tmp_path: Path) -> None:
    rows = good_rows(4).splitlines()
    rows[1], rows[2] = rows[2], rows[1]
    path = write(tmp_path / "AAPL.csv", HEADER + "\n".join(rows) + "\n")
    err = error_of(path)
    assert (err.row, err.column) == (3, "timestamp")
    assert "earlier than row 2" in str(err) and str(path) in str(err)


def test_duplicate_timestamp_across_a_chunk_boundary(tmp_path: Path) -> None:
    rows = good_rows(5).splitlines()
    rows[3] = rows[2]  # rows 3 and 4 equal; chunks of 3 rows split them
    err = error_of(write(tmp_path / "AAPL.csv", HEADER + "\n".join(rows) + "\n"), chunk_rows=3)
    assert (err.row, err.column) == (4, "timestamp")
    assert "duplicate timestamp" in str(err) and "row 3 has it too" in str(err)


def test_unsorted_within_one_symbol_of_a_symbol_column_file(tmp_path: Path) -> None:
    text = (
        "timestamp,symbol,bid,ask\n"
        "2024-01-02 09:30:02,AAPL,1,1.1\n"
        "2024-01-02 09:30:01,MSFT,1,1.1\n"  # fine: another symbol
        "2024-01-02 09:30:01,AAPL,1,1.1\n"  # earlier than AAPL's row 1
    )
    err = error_of(write(tmp_path / "quotes.csv", text))
    assert (err.row, err.column) == (3, "timestamp")
    assert "symbol AAPL" in str(err) and "earlier than row 1" in str(err)


def test_bad_timestamp_text(tmp_path: Path) -> None:
    rows = good_rows(1) + "yesterday,1,2,1,1,1\n"
    err = error_of(write(tmp_path / "AAPL.csv", HEADER + rows))
    assert (err.row, err.column) == (2, "timestamp")
    assert "'yesterday'" in str(err)


def test_high_below_close_and_crossed_quote(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "AAPL.csv", HEADER + "2024-01-02,10,10.5,9,11,0\n"))
    assert (err.row, err.column) == (1, "high")
    quotes = "timestamp,bid,ask\n2024-01-02 09:30,10,10.1\n2024-01-02 09:31,10.2,10.1\n"
    err = error_of(write(tmp_path / "MSFT.csv", quotes))
    assert (err.row, err.column) == (2, "bid")
    assert "crossed" in str(err)


def test_negative_price(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "AAPL.csv", HEADER + "2024-01-02,-1,1,-2,1,0\n"))
    assert (err.row, err.column) == (1, "open")
    assert "> 0" in str(err)


def test_one_symbol_in_two_files_and_mixed_kinds(tmp_path: Path) -> None:
    write(tmp_path / "AAPL.csv", HEADER + good_rows(2))
    write(tmp_path / "AAPL_extra.csv", HEADER + good_rows(2, start_minute=40))
    err = error_of(tmp_path)
    assert "AAPL_extra.csv" in str(err) and "also in" in str(err)
    other = tmp_path / "mixed"
    other.mkdir()
    write(other / "AAPL.csv", HEADER + good_rows(2))
    write(other / "MSFT.csv", "timestamp,bid,ask\n2024-01-02,1,2\n")
    err = error_of(other)
    assert "MSFT.csv" in str(err) and "one kind" in str(err)


def test_empty_file_and_single_bar(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "AAPL.csv", HEADER))
    assert "no data rows" in str(err)
    err = error_of(write(tmp_path / "MSFT.csv", HEADER + good_rows(1)))
    assert "bar length" in str(err)


def test_no_such_path_and_unsupported_file(tmp_path: Path) -> None:
    assert "no such file" in str(error_of(tmp_path / "missing.csv"))
    assert "unsupported" in str(error_of(write(tmp_path / "AAPL.json", "{}")))
