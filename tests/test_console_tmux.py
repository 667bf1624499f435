"""The real `trading-console` in a real terminal: tmux runs it, sends keys, reads the screen.

Pilot tests drive the App in-process; this one checks what they cannot: the
installed entry point starts in sim mode on a fresh directory, the keys arrive
through a terminal (tmux, as an operator over SSH would run it), the screen
says what the operator needs, and `q` ends the process with exit code 0.

Each test has its own tmux server (`tmux -L <unique socket>`, no config file),
so nothing touches the operator's sessions. Every wait polls `capture-pane`
with a deadline; nothing sleeps a fixed time and hopes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.test_signals import database_write_lock, process_gone

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(
    TMUX is None, reason="tmux is not installed (.ci/run installs it: apt-get install tmux)"
)

SYMBOLS = ("AAPL", "MSFT", "SPY", "NVDA", "AMZN")
START_SECONDS = 20.0  # interpreter start, imports, database creation: ~2-4 s here
WAIT_SECONDS = 8.0  # any one screen change after a key (the console refreshes at 4 Hz)
STOP_SECONDS = 15.0  # cancel, flush the database, close the log


def console_command() -> list[str]:
    """The `trading-console` script installed beside this interpreter (pip install -e)."""
    script = Path(sys.executable).parent / "trading-console"
    if script.exists():
        return [str(script)]
    found = shutil.which("trading-console")
    if found is None:
        pytest.fail("trading-console is not installed: pip install -e '.[test]'")
    return [found]


class TmuxConsole:
    """One `trading-console` process in a detached tmux session of a fixed size."""

    def __init__(self, workdir: Path, width: int, height: int, *, linger: bool = False) -> None:
        # linger: the pane stays after the process exits, so the terminal's modes
        # (alternate screen, mouse tracking) can still be read.
        self.linger = linger
        self.workdir = workdir
        self.width, self.height = width, height
        self.socket = f"tc-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rc_file = workdir / "exit_code"
        self.stop_file = workdir / "STOP"
        self.last_screen = ""

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert TMUX is not None
        return subprocess.run(
            [TMUX, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=check,
        )

    def start(self) -> None:
        # The environment is written into the script rather than inherited, so the
        # developer's own TRADING_MODE / IB_* / .env cannot turn this into a paper run.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "LANG": "C.UTF-8",
            "TERM": "tmux-256color",
            "DATA_DIR": str(self.workdir / "data"),
            "STOP_FILE": str(self.stop_file),
            "SYMBOLS": ",".join(SYMBOLS),
            # Hour-long bars: the example strategy never trades, so the book stays flat
            # and `q` quits without a confirmation.
            "BAR_SECONDS": "3600",
            "TEXTUAL_FPS": "10",  # as over a slow SSH link
            "TEXTUAL_ANIMATIONS": "none",
        }
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script = self.workdir / "run.sh"
        script.write_text(
            "#!/bin/sh\n"
            f"{exports}"
            f"cd {shlex.quote(str(self.workdir))}\n"
            f"{shlex.join(console_command())}\n"
            f"echo $? > {shlex.quote(str(self.rc_file))}\n"
        )
        script.chmod(0o755)
        # The session ends when the script does: that is how "the process exited" shows.
        self.tmux(
            "new-session", "-d", "-s", "console",
            "-x", str(self.width), "-y", str(self.height),
            str(script),
        )  # fmt: skip
        if self.linger:
            self.tmux("set-option", "-w", "-t", "console", "remain-on-exit", "on")

    def display(self, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", "console", fmt).stdout.strip()

    def terminal_modes(self) -> dict[str, str]:
        """What the program left the terminal in, as tmux's emulator sees it."""
        names = ("alternate_on", "mouse_any_flag", "mouse_standard_flag", "mouse_sgr_flag")
        values = self.display(" ".join(f"#{{{n}}}" for n in names)).split()
        return dict(zip(names, values, strict=True))

    def console_pid(self) -> int:
        """The trading-console process (the pane runs the script, the script runs it)."""
        shell = int(self.display("#{pane_pid}"))
        return _children(shell)[0]

    def exited(self) -> bool:
        if self.linger:
            return self.display("#{pane_dead}") == "1"
        return not self.running()

    def screen(self) -> str:
        result = self.tmux("capture-pane", "-p", "-t", "console", check=False)
        if result.returncode == 0:
            self.last_screen = result.stdout
        return self.last_screen

    def status_line(self) -> str:
        """The first status line: mode, account, connection, trading state."""
        return self.screen().splitlines()[0] if self.screen() else ""

    def keys(self, *keys: str) -> None:
        # -l: literal characters, so "?" and "y" are typed, never looked up as key names.
        for key in keys:
            self.tmux("send-keys", "-t", "console", "-l", key)

    def running(self) -> bool:
        return self.tmux("has-session", "-t", "console", check=False).returncode == 0

    def wait_for(self, what: str, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            if not self.running():
                break
            time.sleep(0.1)
        rc = self.rc_file.read_text().strip() if self.rc_file.exists() else "still running"
        pytest.fail(
            f"screen never showed {what} (exit code: {rc}); last screen:\n{self.last_screen}"
        )

    def wait_status(self, word: str, timeout: float = WAIT_SECONDS) -> str:
        """Wait until the status line shows ``word`` (the trading-state label)."""
        return self.wait_for(
            f"{word!r} in the status line",
            lambda text: bool(text) and f" {word} " in text.splitlines()[0],
            timeout,
        )

    def quit_answering_yes(self, timeout: float = WAIT_SECONDS) -> None:
        """After `q`: answer the confirmation if one appears; return once it left or asked."""
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            if "Quit the console?" in self.screen():
                self.keys("y")
                return
            time.sleep(0.1)

    def wait_exit(self, timeout: float = STOP_SECONDS) -> int:
        deadline = time.monotonic() + timeout
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.exited(), f"still running after quit; screen:\n{self.screen()}"
        return int(self.rc_file.read_text().strip())

    def kill(self) -> None:
        self.tmux("kill-server", check=False)
        # A server that ended with its last session leaves its socket file behind.
        tmpdir = os.environ.get("TMUX_TMPDIR", "/tmp")
        Path(tmpdir, f"tmux-{os.getuid()}", self.socket).unlink(missing_ok=True)


@pytest.fixture
def tmux_console(tmp_path: Path) -> Iterator[Callable[..., TmuxConsole]]:
    started: list[TmuxConsole] = []

    def start(width: int, height: int, *, linger: bool = False) -> TmuxConsole:
        workdir = tmp_path / f"run-{width}x{height}"
        workdir.mkdir()
        console = TmuxConsole(workdir, width, height, linger=linger)
        started.append(console)
        console.start()
        return console

    try:
        yield start
    finally:
        for console in started:
            console.kill()


def shows_every_symbol(text: str) -> bool:
    rows = text.splitlines()
    # A quote row: the symbol then a price, not just the name in a startup alert.
    return all(any(f" {s} " in row and "." in row for row in rows) for s in SYMBOLS)


def test_operator_keys_in_tmux_at_120x40(tmux_console: Callable[[int, int], TmuxConsole]) -> None:
    console = tmux_console(120, 40)
    screen = console.wait_for("a quote for every symbol", shows_every_symbol, START_SECONDS)
    status = screen.splitlines()[0]
    assert " SIM " in status and "connected" in status and " ACTIVE " in status, status
    for title in ("Quotes", "Daily P&L", "Orders", "Positions", "Indicators", "Alerts"):
        assert title in screen, title

    console.keys("h")  # halt: immediate, no dialog
    screen = console.wait_status("HALTED")
    assert "operator halt" in screen.splitlines()[1]

    console.keys("h")  # resume asks first
    console.wait_for("the resume dialog", lambda t: "Resume trading?" in t, WAIT_SECONDS)
    console.keys("y")
    console.wait_status("ACTIVE")

    console.keys("?")
    screen = console.wait_for("the help", lambda t: "Trading Console - keys" in t, WAIT_SECONDS)
    assert "Flatten" in screen and "Reset breaker" in screen
    console.keys("?")
    console.wait_for("the help closed", lambda t: "Trading Console - keys" not in t, WAIT_SECONDS)

    console.stop_file.touch()  # the STOP file still works while the console runs
    screen = console.wait_status("HALTED (STOP file)")
    assert "STOP file present" in screen.splitlines()[1]

    console.keys("q")  # a flat book quits at once; were anything open, it would ask: y
    console.quit_answering_yes()
    assert console.wait_exit() == 0
    assert (console.workdir / "data" / "trading.db").exists()  # it really ran here


def test_small_terminal_80x24_switches_panes(
    tmux_console: Callable[[int, int], TmuxConsole],
) -> None:
    console = tmux_console(80, 24)
    screen = console.wait_for("a quote for every symbol", shows_every_symbol, START_SECONDS)
    status = screen.splitlines()[0]
    # What matters most fits on the first line even at 80 columns.
    assert " SIM " in status and " ACTIVE " in status, status
    assert "1 Quotes" in screen and "6 Alerts" in screen  # the pane tabs

    console.keys("5")
    screen = console.wait_for("the P&L pane", lambda t: "Total P&L" in t, WAIT_SECONDS)
    assert "Loss limit" in screen and "AAPL" not in screen  # one pane at a time

    console.keys("h")
    console.wait_status("HALTED")
    console.keys("q")
    assert console.wait_exit() == 0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _writer_pid(console_pid: int) -> int:
    def is_writer(pid: int) -> bool:
        try:
            return b"storage.writer_process" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    pids = [p for p in _children(console_pid) if is_writer(p)]
    assert len(pids) == 1, pids
    return pids[0]


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db, timeout=10) as conn:
        return conn.execute(sql).fetchall()


# What Textual turns on (a positive control) and what a restored terminal has off.
IN_THE_CONSOLE = {"alternate_on": "1", "mouse_any_flag": "1", "mouse_sgr_flag": "1"}
RESTORED = {"alternate_on": "0", "mouse_any_flag": "0", "mouse_standard_flag": "0",
            "mouse_sgr_flag": "0"}  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_sighup_and_sigterm_stop_the_console_as_q_does(
    tmux_console: Callable[..., TmuxConsole], sig: signal.Signals
) -> None:
    console = tmux_console(120, 40, linger=True)
    console.wait_for("a quote for every symbol", shows_every_symbol, START_SECONDS)
    modes = console.terminal_modes()
    assert {k: modes[k] for k in IN_THE_CONSOLE} == IN_THE_CONSOLE, modes
    pid = console.console_pid()
    writer = _writer_pid(pid)
    os.kill(pid, sig)
    assert console.wait_exit() == 0, console.last_screen
    assert console.terminal_modes() == RESTORED
    db = console.workdir / "data" / "trading.db"
    stops = _query(db, "SELECT message FROM alerts WHERE key='system_stopped'")
    assert stops and f"signal {sig.name}" in str(stops[-1][0]), stops
    assert _query(db, "SELECT state FROM heartbeat") == [("stopped",)]
    journal = db.with_name(db.name + "-orders")
    assert not journal.exists() or journal.stat().st_size == 0  # folded into the database
    assert process_gone(writer)


def test_a_third_sigterm_during_a_stuck_stop_forces_the_exit_and_restores_the_terminal(
    tmux_console: Callable[..., TmuxConsole],
) -> None:
    console = tmux_console(120, 40, linger=True)
    console.wait_for("a quote for every symbol", shows_every_symbol, START_SECONDS)
    pid = console.console_pid()
    writer = _writer_pid(pid)
    os.kill(writer, signal.SIGSTOP)  # the stop now waits for a writer that never answers
    try:
        with database_write_lock(console.workdir / "data" / "trading.db"):
            for _ in range(3):
                os.kill(pid, signal.SIGTERM)
                time.sleep(1.5)  # counted apart (repeats within 1 s count once)
            code = console.wait_exit(timeout=60)
    finally:
        if not process_gone(writer):
            os.kill(writer, signal.SIGKILL)
    assert code == 1
    assert console.terminal_modes() == RESTORED
    assert process_gone(writer)
    logs = "".join(p.read_text() for p in (console.workdir / "data" / "logs").glob("*.log"))
    assert "forced exit (SIGTERM received 3 times)" in logs
