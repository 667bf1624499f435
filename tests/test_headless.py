"""`trading-console --headless` as a real process: STOP file, SIGINT, exit codes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from tests.helpers import process_env, query_db


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = process_env(
        tmp_path,
        SYMBOLS="AAPL,MSFT",
        SIM_QUOTES_PER_SECOND="20",
        BAR_SECONDS="1",
        STRATEGY_PARAMS='{"fast": 2, "slow": 4}',
    )
    env.update(extra)
    return env


HEADLESS = [sys.executable, "-m", "tui.commands.cli", "--headless"]


def _start_headless(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        HEADLESS,
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_headless(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A headless start expected to end by itself (refused at start-up)."""
    return subprocess.run(
        HEADLESS,
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _quote_rows(db: Path) -> int:
    rows = query_db(db, "SELECT COUNT(*) FROM quotes")
    return int(str(rows[0][0])) if rows else 0


def _wait_for(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_headless_runs_halts_on_stop_file_and_stops_on_sigint(tmp_path: Path) -> None:
    db = tmp_path / "data" / "trading.db"
    proc = _start_headless(tmp_path)
    try:
        assert _wait_for(lambda: _quote_rows(db) > 50)
        (tmp_path / "STOP").touch()
        touched = datetime.fromtimestamp((tmp_path / "STOP").stat().st_mtime).astimezone()
        halted = "SELECT ts FROM trading_state_changes WHERE state='HALTED' AND reason='STOP file'"
        assert _wait_for(lambda: bool(query_db(db, halted)))
        halted_at = datetime.fromisoformat(str(query_db(db, halted)[0][0]))
        assert (halted_at - touched).total_seconds() <= 1.0
        assert proc.poll() is None  # halting does not stop the process
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    stops = query_db(db, "SELECT message FROM alerts WHERE key='system_stopped'")
    assert stops and "signal" in str(stops[0][0])
    working = query_db(
        db,
        "SELECT COUNT(*) FROM orders WHERE status IN ('PendingSubmit','Submitted','PendingCancel')",
    )
    assert working[0][0] == 0
    assert list((tmp_path / "data" / "logs").glob("trading-console_*.log"))


def test_bad_strategy_path_exits_2(tmp_path: Path) -> None:
    proc = _run_headless(tmp_path, STRATEGY="no_such_module:Thing")
    assert proc.returncode == 2
    assert "STRATEGY" in proc.stderr and "no_such_module" in proc.stderr


def test_a_second_console_on_the_same_data_dir_exits_2_and_the_first_trades_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "data" / "trading.db"
    first = _start_headless(tmp_path)
    try:
        assert _wait_for(lambda: _quote_rows(db) > 20)
        second = _run_headless(tmp_path)
        assert second.returncode == 2, second.stderr
        assert "another trading console is using this database" in second.stderr
        assert first.poll() is None
        before = _quote_rows(db)
        assert _wait_for(lambda: _quote_rows(db) > before)  # still recording
        first.send_signal(signal.SIGINT)
        _out, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
