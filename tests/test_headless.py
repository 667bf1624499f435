"""`trading-console --headless` as a real process: STOP file, SIGINT, exit codes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIM_", "TRADING_"))}
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        STOP_FILE=str(tmp_path / "STOP"),
        SYMBOLS="AAPL,MSFT",
        SIM_QUOTES_PER_SECOND="20",
        BAR_SECONDS="1",
        STRATEGY_PARAMS='{"fast": 2, "slow": 4}',
    )
    env.update(extra)
    return env


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # schema not created yet


def _wait_for(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_headless_runs_halts_on_stop_file_and_stops_on_sigint(tmp_path: Path) -> None:
    db = tmp_path / "data" / "trading.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "--headless"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        count = "SELECT COUNT(*) FROM quotes"
        assert _wait_for(lambda: bool(_query(db, count)) and _query(db, count)[0][0] > 50)
        (tmp_path / "STOP").touch()
        touched = datetime.fromtimestamp((tmp_path / "STOP").stat().st_mtime).astimezone()
        halted = "SELECT ts FROM trading_state_changes WHERE state='HALTED' AND reason='STOP file'"
        assert _wait_for(lambda: bool(_query(db, halted)))
        halted_at = datetime.fromisoformat(str(_query(db, halted)[0][0]))
        assert (halted_at - touched).total_seconds() <= 1.0
        assert proc.poll() is None  # halting does not stop the process
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    stops = _query(db, "SELECT message FROM alerts WHERE key='system_stopped'")
    assert stops and "signal" in str(stops[0][0])
    working = _query(
        db,
        "SELECT COUNT(*) FROM orders WHERE status IN ('PendingSubmit','Submitted','PendingCancel')",
    )
    assert working[0][0] == 0
    assert list((tmp_path / "data" / "logs").glob("trading-console_*.log"))


def test_bad_strategy_path_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--headless"],
        cwd=tmp_path,
        env=_env(tmp_path, STRATEGY="no_such_module:Thing"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "STRATEGY" in proc.stderr and "no_such_module" in proc.stderr


def test_a_second_console_on_the_same_data_dir_exits_2_and_the_first_trades_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "data" / "trading.db"
    first = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "--headless"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        count = "SELECT COUNT(*) FROM quotes"
        assert _wait_for(lambda: bool(_query(db, count)) and _query(db, count)[0][0] > 20)
        second = subprocess.run(
            [sys.executable, "-m", "tui.cli", "--headless"],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert "another trading console is using this database" in second.stderr
        assert first.poll() is None
        before = _query(db, count)[0][0]
        assert _wait_for(lambda: _query(db, count)[0][0] > before)  # still recording
        first.send_signal(signal.SIGINT)
        _out, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
