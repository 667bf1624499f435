"""`download_history` with the real ib_async client against the fake TWS."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.brokers.base import BrokerConnectError
from core.brokers.ib_pacing import HistoricalPacer
from core.clock import SimClock
from tests.fake_tws import FakeTws
from tests.helpers import settings as make_settings
from tui.commands.history import download_history, parse_bar

NOW = datetime(2026, 1, 7, 21, 30, tzinfo=UTC)  # Wednesday, after the close


async def test_download_minute_bars_into_parquet(tmp_path: Path) -> None:
    tws = await FakeTws().start()
    clock = SimClock(NOW)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    try:
        s = make_settings(tmp_path, ib_port=tws.port, ib_connect_timeout=2)
        path = await download_history(
            s, "aapl", 3, "1min", tmp_path / "hist", clock=clock, sleep=sleep
        )
    finally:
        await tws.stop()
    assert path == tmp_path / "hist" / "AAPL_1min_3d.parquet"
    table = pq.read_table(path)
    assert table.column_names == ["timestamp", "open", "high", "low", "close", "volume"]
    stamps = table.column("timestamp").to_pylist()
    assert stamps == sorted(set(stamps))
    # 3 x 24 h back from Wednesday 21:30 UTC reach Sunday: Mon-Wed sessions in full.
    assert len(stamps) == 3 * 390
    assert stamps[0] == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    assert stamps[-1] == datetime(2026, 1, 7, 20, 59, tzinfo=UTC)
    requests = tws.requests(20)
    assert [r[17] for r in requests] == ["1 D"] * 3
    assert [r[16] for r in requests] == ["1 min"] * 3
    assert slept == []  # three distinct requests: within every pacing limit


async def test_unknown_symbol_and_unreachable_tws(tmp_path: Path) -> None:
    tws = await FakeTws().start()
    s = make_settings(tmp_path, ib_port=tws.port, ib_connect_timeout=2)
    try:
        with pytest.raises(BrokerConnectError, match="ZZZQ"):
            await download_history(s, "ZZZQ", 1, "1min", tmp_path, clock=SimClock(NOW))
    finally:
        await tws.stop()
    with pytest.raises(BrokerConnectError, match="connection refused"):
        await download_history(s, "AAPL", 1, "1min", tmp_path, clock=SimClock(NOW))


def test_bar_parsing() -> None:
    assert parse_bar("1min")[0] == "1 min"
    assert parse_bar("5 mins")[0] == "5 mins"
    assert parse_bar("1h")[0] == "1 hour"
    assert parse_bar("1day")[0] == "1 day"
    with pytest.raises(ValueError, match="IB offers"):
        parse_bar("7min")
    with pytest.raises(ValueError, match=r"use e\.g\."):
        parse_bar("fast")


async def test_pacer_is_shared_across_downloads(tmp_path: Path) -> None:
    tws = await FakeTws().start()
    clock = SimClock(NOW)
    pacer = HistoricalPacer(clock)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    try:
        s = make_settings(tmp_path, ib_port=tws.port, ib_connect_timeout=2)
        for _ in range(2):  # the same download twice: identical requests
            await download_history(
                s, "MSFT", 1, "1hour", tmp_path, clock=clock, sleep=sleep, pacer=pacer
            )
    finally:
        await tws.stop()
    assert slept == [pytest.approx(15.0)]
