"""Replay: a session recorded by the live sim pipeline re-runs to byte-identical orders."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.bus import EventBus
from core.config import Settings
from core.simulation import run_simulated
from storage.archive import export_day
from storage.database import Database
from storage.recorder import Recorder
from tests.helpers import T0, build_rig, settings
from tui.commands.backtest_cmd import run_replay

DAY = T0.date()


def replay_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "symbols": "AAPL,MSFT",
        "bar_seconds": 10,
        "strategy_params": {"fast": 3, "slow": 8, "trade_dollars": 5_000.0},
        "daily_loss_limit": 1e9,
    }
    base.update(overrides)
    return settings(tmp_path, **base)


async def record_session(s: Settings, archive_dir: Path | None = None) -> int:
    """Run the sim pipeline for 20 simulated minutes with a Recorder writing SQLite."""
    db = await Database.open(s.database_path)
    bus = EventBus()
    recorder = Recorder(db, bus, record_quotes=True)
    rig = build_rig(s, bus=bus)
    recorder_task = asyncio.create_task(recorder.run())
    try:
        await rig.system.start(drive_broker=False)
        await run_simulated(rig.system, rig.venue, rig.clock, timedelta(minutes=20))
        await rig.system.stop("end of recording")
        await recorder.stop()
        await recorder_task
        if archive_dir is not None:
            await export_day(db, DAY, archive_dir)
        return await db.count("quotes")
    finally:
        await db.close()


async def replay(s: Settings, out: Path, **sources: Any) -> bytes:
    kwargs: dict[str, Any] = {"source_db": None, "archive_dir": None}
    kwargs.update(sources)
    assert await run_replay(s, DAY, out_dir=out, **kwargs) == 0
    return (out / "orders.jsonl").read_bytes()


async def test_replaying_a_recorded_session_twice_gives_identical_orders(tmp_path: Path) -> None:
    s = replay_settings(tmp_path)
    archive = tmp_path / "archive"
    quotes = await record_session(s, archive)
    assert quotes > 9_000  # 20 min x 4 quotes/s x 2 symbols, less nothing

    first = await replay(s, tmp_path / "r1")
    second = await replay(s, tmp_path / "r2")
    assert first == second
    orders = [json.loads(line) for line in first.decode().splitlines()]
    assert len(orders) >= 4
    ids = [o["client_order_id"] for o in orders]
    assert ids == sorted(ids)
    assert ids[0].startswith("TC-260105-143000-")  # stem from the simulated clock's start
    assert {o["symbol"] for o in orders} == {"AAPL", "MSFT"}
    assert all(o["status"] == "Filled" for o in orders[:-2])

    # The archive holds the same quotes in the same order: the same orders, to the byte.
    from_archive = await replay(s, tmp_path / "r3", archive_dir=archive)
    assert from_archive == first
    # An explicit --db is the same database.
    assert await replay(s, tmp_path / "r4", source_db=s.database_path) == first


async def test_replay_uses_the_current_strategy_settings(tmp_path: Path) -> None:
    s = replay_settings(tmp_path)
    await record_session(s)
    baseline = await replay(s, tmp_path / "a")
    changed = replay_settings(
        tmp_path, strategy_params={"fast": 2, "slow": 12, "trade_dollars": 5_000.0}
    )
    other = await replay(changed, tmp_path / "b")
    assert other != baseline
    # Risk settings apply too: a tiny order notional clamps every order to a few shares.
    tight = replay_settings(tmp_path, max_order_notional=300.0, max_position_size=1_000.0)
    clamped = [json.loads(x) for x in (await replay(tight, tmp_path / "c")).splitlines()]
    assert clamped and all(o["quantity"] * o["avg_fill_price"] <= 300.0 + 1e-6 for o in clamped)


async def test_replay_without_recorded_quotes_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = replay_settings(tmp_path)
    await record_session(s)
    code = await run_replay(
        s, date(2020, 1, 1), source_db=None, archive_dir=None, out_dir=tmp_path / "o"
    )
    assert code == 2
    assert "no quotes recorded on 2020-01-01" in capsys.readouterr().err
    code = await run_replay(
        s, DAY, source_db=tmp_path / "absent.db", archive_dir=None, out_dir=tmp_path / "o"
    )
    assert code == 2
    assert not (tmp_path / "absent.db").exists()  # a replay never creates a database
    code = await run_replay(
        s, DAY, source_db=None, archive_dir=tmp_path / "no-archive", out_dir=tmp_path / "o"
    )
    assert code == 2
    assert "no quotes archived" in capsys.readouterr().err
