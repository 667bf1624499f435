"""`python -m tui.commands.cli --headless` in paper mode against the fake TWS, as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_tws import ThreadedTws
from tests.helpers import query_db

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def threaded_tws() -> Iterator[ThreadedTws]:
    with ThreadedTws() as server:
        yield server


def test_headless_paper_mode_records_ib_quotes_and_stops_on_sigint(
    tmp_path: Path, threaded_tws: ThreadedTws
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIM_", "TRADING_", "IB_"))}
    env.update(
        TRADING_MODE="paper",
        IB_PORT=str(threaded_tws.tws.port),
        IB_CLIENT_ID="3",
        IB_CONNECT_TIMEOUT="5",
        SYMBOLS="AAPL,MSFT",
        DATA_DIR=str(tmp_path / "data"),
        STOP_FILE=str(tmp_path / "STOP"),
        STRATEGY_PARAMS='{"fast": 50, "slow": 100}',
        PYTHONPATH=str(REPO),
    )
    db = tmp_path / "data" / "trading.db"
    count_sql = "SELECT COUNT(*) FROM quotes"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.commands.cli", "--headless"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        price = 190.0
        while time.monotonic() < deadline:
            rows = query_db(db, count_sql)
            if rows and int(str(rows[0][0])) >= 20:
                break
            if proc.poll() is not None:
                break
            price += 0.01
            threaded_tws.call(
                threaded_tws.tws.push_tick, "AAPL", bid=round(price, 2), ask=round(price + 0.02, 2)
            )
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        assert int(str(query_db(db, count_sql)[0][0])) >= 20
        assert threaded_tws.tws.ready_sessions[0].client_id == 3
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    symbols = {str(r[0]) for r in query_db(db, "SELECT DISTINCT symbol FROM quotes")}
    assert symbols == {"AAPL", "MSFT"}
    stops = query_db(db, "SELECT message FROM alerts WHERE key='system_stopped'")
    assert stops and "signal" in str(stops[0][0])
