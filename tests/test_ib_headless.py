"""`python -m tui.commands.cli --headless` in paper mode against the fake TWS, as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_tws import FakeTws
from tests.helpers import query_db

REPO = Path(__file__).resolve().parent.parent


class ThreadedTws:
    """The fake TWS on its own event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.tws = FakeTws()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedTws:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.tws.start(), self.loop).result(5)
        return self

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.loop.call_soon_threadsafe(lambda: fn(*args, **kwargs))

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.tws.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


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
