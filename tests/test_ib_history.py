"""`download_history` with the real ib_async client against the fake TWS."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from subprocess import PIPE

import pyarrow.parquet as pq
import pytest

from core.brokers.base import BrokerConnectError
from core.brokers.ib_pacing import HistoricalPacer
from core.clock import SimClock
from tests.fake_tws import PACING_VIOLATION_TEXT, FakeTws
from tests.helpers import settings as make_settings
from tui.commands.history import RETRY_DELAYS, HistoryIncomplete, download_history, parse_bar

REPO = Path(__file__).resolve().parent.parent
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


def _sim_sleep(clock: SimClock, slept: list[float]) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    return sleep


async def test_default_pacer_never_trips_ibs_per_contract_rule(tmp_path: Path) -> None:
    # 22 one-day chunks of one contract back to back: IB refuses the 6th within 2 s.
    clock = SimClock(NOW)
    tws = await FakeTws(now=clock.now).start()
    tws.enforce_history_pacing = True
    slept: list[float] = []
    try:
        s = make_settings(tmp_path, ib_port=tws.port, ib_connect_timeout=2)
        path = await download_history(
            s, "AAPL", 22, "1min", tmp_path, clock=clock, sleep=_sim_sleep(clock, slept)
        )
    finally:
        await tws.stop()
    assert tws.history_refusals == []
    assert len(tws.history_log) == 22
    assert slept and all(0 < t <= 2.0 for t in slept)  # held back by the 2 s rule only
    # 22 x 24 h back from Wednesday 2026-01-07 reach 2025-12-16 21:30: 15 full sessions + 0.
    days = {ts.date() for ts in pq.read_table(path).column("timestamp").to_pylist()}
    assert len(days) == 16 and min(days) == date(2025, 12, 17)


async def test_refused_chunks_are_retried_with_pacing(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    tws = await FakeTws(now=clock.now).start()
    tws.enforce_history_pacing = True
    tws.refuse_history(2)  # the first request, then its first retry
    slept: list[float] = []
    try:
        s = make_settings(tmp_path, ib_port=tws.port, ib_connect_timeout=2)
        path = await download_history(
            s, "AAPL", 3, "1min", tmp_path, clock=clock, sleep=_sim_sleep(clock, slept)
        )
    finally:
        await tws.stop()
    assert [why for _, why in tws.history_refusals] == ["scripted", "scripted"]
    assert len(tws.history_log) == 5  # 3 chunks + 2 retries, none refused for pacing
    assert slept[:2] == list(RETRY_DELAYS[:2])
    assert len(pq.read_table(path)) == 3 * 390


async def test_chunks_that_stay_refused_fail_naming_the_gaps(tmp_path: Path) -> None:
    clock = SimClock(NOW)
    tws = await FakeTws(now=clock.now).start()
    tws.refuse_history(1 + len(RETRY_DELAYS))  # the newest chunk, every attempt
    try:
        s = make_settings(tmp_path, ib_port=tws.port, ib_connect_timeout=2)
        with pytest.raises(HistoryIncomplete) as info:
            await download_history(
                s, "AAPL", 3, "1min", tmp_path / "h", clock=clock, sleep=_sim_sleep(clock, [])
            )
    finally:
        await tws.stop()
    assert info.value.gaps == [
        (datetime(2026, 1, 6, 21, 30, tzinfo=UTC), NOW, f"IB 162: {PACING_VIOLATION_TEXT}")
    ]
    assert "1 of 3 requests" in str(info.value)
    assert "2026-01-06 21:30 to 2026-01-07 21:30 UTC" in str(info.value)
    assert not (tmp_path / "h").exists()  # nothing saved


def test_no_data_chunks_are_empty_not_gaps() -> None:
    # The fake answers a chunk without bars as IB does: 162 "HMDS query returned no data".
    async def run(tmp_path: Path) -> int:
        saturday = datetime(2026, 1, 10, 23, 0, tzinfo=UTC)
        clock = SimClock(saturday)
        tws = await FakeTws(now=clock.now).start()
        try:
            s = make_settings(tmp_path, ib_port=tws.port, ib_connect_timeout=2)
            path = await download_history(
                s, "AAPL", 2, "1min", tmp_path, clock=clock, sleep=_sim_sleep(clock, [])
            )
        finally:
            await tws.stop()
        assert len(tws.history_log) == 2  # not retried
        return len(pq.read_table(path))

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        assert asyncio.run(run(Path(tmp))) == 390  # Friday's session; Saturday has none


async def test_history_command_exits_non_zero_naming_the_gaps(tmp_path: Path) -> None:
    # The real command in a real process against the fake TWS on this loop; only the retry
    # waits are shortened so the test does not sit through two minutes of them.
    tws = await FakeTws().start()
    tws.refuse_history(10_000)
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "TRADING_MODE": "paper",
        "IB_PORT": str(tws.port),
        "IB_CONNECT_TIMEOUT": "2",
    }
    code = (
        "import sys; from tui.commands import history; history.RETRY_DELAYS = (0.01, 0.01); "
        "from tui.commands.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    (tmp_path / "empty.env").write_text("")
    args = ["--env-file", str(tmp_path / "empty.env"), "history", "MSFT", "--days", "1"]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, *args, "--bar", "1hour",
            env=env, cwd=REPO, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await tws.stop()
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode not in (0, None), stdout + stderr
    assert "saved" not in stdout
    assert "1 of 1 requests stayed refused" in stderr and "pacing violation" in stderr
    assert "Traceback" not in stderr
    assert not list((tmp_path / "data").glob("history/*.parquet"))
