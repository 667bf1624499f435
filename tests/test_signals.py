"""Signals and shutdown against the real process (`trading-console --headless`), and the
recorder's stall watch against the real writer child.

Every wait has a deadline far above what the behaviour needs (a loaded 2-core machine),
so a test fails instead of hanging; none asserts on speed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from loguru import logger

import storage.flush_loop
from core.bus import EventBus
from core.events import FillReceived, OrderSubmitted, QuoteReceived
from core.model import AlertSeverity, Fill, Order, OrderType, Quote, Side
from storage.database import Database
from storage.recorder import Recorder
from storage.writer import WriterProcess
from tests.helpers import process_env, query_db
from tui.commands.runtime import STOP_BOUND_SECONDS

HEADLESS = [sys.executable, "-m", "tui.commands.cli", "--headless"]
START_SECONDS = 60.0  # interpreter start, imports, database creation, first quotes
# The process must be gone well within this after the first stop signal: the bound plus
# a wide margin for a loaded machine (this is a hang detector, not a speed test).
EXIT_SECONDS = STOP_BOUND_SECONDS + 45.0


def _env(tmp_path: Path) -> dict[str, str]:
    return process_env(
        tmp_path,
        drop=("SIM_", "TRADING_", "IB_"),
        SYMBOLS="AAPL,MSFT",
        SIM_QUOTES_PER_SECOND="20",
        BAR_SECONDS="1",
        STRATEGY_PARAMS='{"fast": 2, "slow": 4}',
    )


class Headless:
    """One headless process; stderr is read as it comes (the log lines)."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "data" / "trading.db"
        self.proc = subprocess.Popen(
            HEADLESS,
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as under `timeout` or a shell
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_trading(self) -> None:
        assert _wait_for(lambda: _count(self.db, "quotes") > 20, START_SECONDS), self.stderr

    def writer_pid(self) -> int:
        pids = [p for p in _children(self.proc.pid) if "storage.writer_process" in _cmdline(p)]
        assert len(pids) == 1, (pids, self.stderr)
        return pids[0]

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self) -> int:
        try:
            code = self.proc.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_SECONDS:.0f} s after the stop signal:\n{self.stderr}")
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def headless(tmp_path: Path) -> Iterator[Callable[[], Headless]]:
    started: list[Headless] = []

    def start() -> Headless:
        started.append(Headless(tmp_path))
        return started[-1]

    yield start
    for h in started:
        h.kill()


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _count(db: Path, table: str) -> int:
    rows = query_db(db, f"SELECT COUNT(*) FROM {table}")
    return int(str(rows[0][0])) if rows else 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped yet counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status


@contextmanager
def database_write_lock(db: Path) -> Iterator[None]:
    """Another process's write transaction: the console's writes wait, then fail."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def _assert_graceful(h: Headless, sig_name: str) -> None:
    assert f"Trading stopped: signal {sig_name}" in h.stderr
    stops = query_db(h.db, "SELECT message FROM alerts WHERE key='system_stopped'")
    assert stops and sig_name in str(stops[-1][0]), stops
    assert query_db(h.db, "SELECT state FROM heartbeat") == [("stopped",)]
    working = (
        "SELECT COUNT(*) FROM orders WHERE status IN ('PendingSubmit','Submitted','PendingCancel')"
    )
    assert query_db(h.db, working) == [(0,)]
    journal = h.db.with_name(h.db.name + "-orders")
    assert not journal.exists() or journal.stat().st_size == 0  # folded into the database


# ----------------------------------------------------------------------- headless signals


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_and_sigterm_on_headless_are_a_graceful_stop(
    headless: Callable[[], Headless], sig: signal.Signals
) -> None:
    h = headless()
    h.wait_trading()
    writer = h.writer_pid()
    h.signal(sig)
    assert h.wait_exit() == 0, h.stderr
    _assert_graceful(h, sig.name)
    assert _wait_for(lambda: process_gone(writer), 10)


def test_sigint_to_the_process_then_its_group_and_more_signals_still_stop_cleanly(
    headless: Callable[[], Headless],
) -> None:
    # What `timeout -s INT` does (the process, then its group), then a second Ctrl+C and a
    # SIGTERM while the stop runs: once a KeyboardInterrupt out of asyncio.run and a hang.
    h = headless()
    h.wait_trading()
    writer = h.writer_pid()
    h.signal(signal.SIGINT)
    os.killpg(h.proc.pid, signal.SIGINT)
    time.sleep(0.05)
    h.signal(signal.SIGINT)
    h.signal(signal.SIGTERM)
    assert h.wait_exit() == 0, h.stderr
    assert "KeyboardInterrupt" not in h.stderr
    _assert_graceful(h, "SIGINT")
    assert _wait_for(lambda: process_gone(writer), 10)


def test_a_failed_final_flush_exits_1_naming_the_cause_and_the_rows_not_written(
    headless: Callable[[], Headless],
) -> None:
    h = headless()
    h.wait_trading()
    writer = h.writer_pid()
    with database_write_lock(h.db):
        h.signal(signal.SIGINT)
        code = h.wait_exit()
    assert code == 1, h.stderr
    line = next((x for x in h.lines if "final database write failed" in x), "")
    assert "database is locked" in line, h.stderr
    match = re.search(r"(\d+) rows were not written", line)
    assert match and int(match.group(1)) > 0, line
    assert _wait_for(lambda: process_gone(writer), 10)


def test_a_stalled_writer_raises_a_warning_alert_and_sigint_still_ends_the_process(
    headless: Callable[[], Headless],
) -> None:
    h = headless()
    h.wait_trading()
    writer = h.writer_pid()
    os.kill(writer, signal.SIGSTOP)
    try:
        # The alert path: the core's AlertRaiser logs "ALERT ..." (and shows it, and sends
        # it to the channels). Due 5-6 s into the stall; the deadline only stops a hang.
        assert _wait_for(lambda: "ALERT Database writer stalled" in h.stderr, 30), h.stderr
        alert = next(x for x in h.lines if "ALERT Database writer stalled" in x)
        assert "WARNING" in alert
        h.signal(signal.SIGINT)
        code = h.wait_exit()
    finally:
        if not process_gone(writer):
            os.kill(writer, signal.SIGKILL)
    assert re.search(rf"writer process {writer} did not answer .* killed", h.stderr), h.stderr
    assert process_gone(writer)
    # The stuck child's rows went to a new one: the stop is still a clean one.
    assert code == 0, h.stderr
    _assert_graceful(h, "SIGINT")


def test_a_third_signal_during_a_stuck_stop_forces_the_exit_and_kills_the_writer(
    headless: Callable[[], Headless],
) -> None:
    h = headless()
    h.wait_trading()
    writer = h.writer_pid()
    os.kill(writer, signal.SIGSTOP)  # the stop now waits for a writer that never answers
    try:
        with database_write_lock(h.db):  # and for the database (the last heartbeat)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
                h.signal(sig)
                time.sleep(1.5)  # counted apart (repeats within 1 s count once)
            code = h.wait_exit()
    finally:
        if not process_gone(writer):
            os.kill(writer, signal.SIGKILL)
    assert code == 1, h.stderr
    assert "forced exit (SIGINT received 3 times)" in h.stderr, h.stderr
    assert _wait_for(lambda: process_gone(writer), 10)


# ----------------------------------------------------------------------- the stall watch

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


async def test_a_stopped_writer_child_raises_the_alert_sheds_only_market_data_and_is_killed_at_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.flush_loop, "STALL_SECONDS", 0.5)
    monkeypatch.setattr(storage.flush_loop, "STALL_CHECK_SECONDS", 0.1)
    db = await Database.open(tmp_path / "tc.db")
    bus = EventBus()
    writer = WriterProcess(db.path)
    recorder = Recorder(db, bus, writer=writer, flush_rows=1, flush_ms=20, max_pending_rows=50)
    alerts: list[tuple[AlertSeverity, str, str]] = []
    recorder.set_alert_sink(lambda severity, key, message: alerts.append((severity, key, message)))
    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(str(m)), level="ERROR")
    task = asyncio.create_task(recorder.run())
    try:
        await writer.start()
        stuck = writer.pid
        assert stuck is not None
        os.kill(stuck, signal.SIGSTOP)
        order = Order("c-1", "AAPL", Side.BUY, 10, OrderType.MARKET, T0)
        bus.publish(OrderSubmitted(order.snapshot(), T0))
        for i in range(200):
            bus.publish(QuoteReceived(Quote("AAPL", T0 + timedelta(milliseconds=i), 1, 1.1, 1, 1)))
            await asyncio.sleep(0)
        bus.publish(FillReceived(Fill("e-1", "c-1", "AAPL", Side.BUY, 10, 1.0, 0.1, T0)))
        deadline = asyncio.get_running_loop().time() + 20
        while not alerts and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert alerts and alerts[0][:2] == (AlertSeverity.WARNING, "recorder_stalled")
        assert recorder.rows_dropped > 0  # quotes beyond the cap: dropped, counted
        await asyncio.wait_for(recorder.stop(timeout=5.0), 30)
        await asyncio.wait_for(task, 10)
    finally:
        logger.remove(sink)
        if not task.done():
            task.cancel()
        await writer.close(1.0)
        await db.close()
    assert process_gone(stuck)
    assert any(f"writer process {stuck} did not answer" in e for e in errors)
    with sqlite3.connect(tmp_path / "tc.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM orders").fetchone() == (1,)
        assert conn.execute("SELECT COUNT(*) FROM fills").fetchone() == (1,)
        quotes = conn.execute("SELECT COUNT(*) FROM quotes").fetchone()[0]
    assert quotes + recorder.rows_dropped == 200  # every quote written or counted
