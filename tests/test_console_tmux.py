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
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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

    def __init__(self, workdir: Path, width: int, height: int) -> None:
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
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not self.running(), f"still running after quit; screen:\n{self.screen()}"
        return int(self.rc_file.read_text().strip())

    def kill(self) -> None:
        self.tmux("kill-server", check=False)
        # A server that ended with its last session leaves its socket file behind.
        tmpdir = os.environ.get("TMUX_TMPDIR", "/tmp")
        Path(tmpdir, f"tmux-{os.getuid()}", self.socket).unlink(missing_ok=True)


@pytest.fixture
def tmux_console(tmp_path: Path) -> Iterator[Callable[[int, int], TmuxConsole]]:
    started: list[TmuxConsole] = []

    def start(width: int, height: int) -> TmuxConsole:
        workdir = tmp_path / f"run-{width}x{height}"
        workdir.mkdir()
        console = TmuxConsole(workdir, width, height)
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
