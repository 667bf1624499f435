"""Every subcommand with bad arguments: exit 2 and one line on stderr, never a traceback,
and nothing created that the command was not asked to create (the real process)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "tui.commands.cli"]


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The tree under test (PYTHONPATH) in ``cwd`` with DATA_DIR=cwd/data and only ``env``."""
    base = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*CLI, *args],
        env={**base, "DATA_DIR": str(cwd / "data"), **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


# (name, argv); in the work directory: `adir/` a directory, `afile` a file, `notdb` a file
# that is no database, `junk.parquet` a file that is no Parquet, `wrong/` an archive whose
# file has other columns.
BAD_ARGUMENTS = [
    ("unknown command", ["frob"]),
    ("replay bad date", ["replay", "--date", "2024-13-01"]),
    ("replay last date", ["replay", "--date", "9999-12-31"]),
    ("replay --db dir", ["replay", "--date", "2024-01-02", "--db", "adir"]),
    ("replay --db not a db", ["replay", "--date", "2024-01-02", "--db", "notdb"]),
    ("replay --out file", ["replay", "--date", "2024-01-02", "--db", "notdb", "--out", "afile"]),
    ("export --to file", ["export", "--date", "2024-01-02", "--to", "afile"]),
    ("export no database", ["export", "--date", "2024-01-02", "--to", "adir"]),
    ("import missing path", ["import", "no/such/archive"]),
    ("import not parquet", ["import", "junk.parquet"]),
    ("import wrong columns", ["import", "wrong/quotes/date=2024-01-02/part-0.parquet"]),
    ("prune --archive file", ["prune", "--before", "2024-01-02", "--archive", "afile"]),
    ("backtest junk data", ["backtest", "--data", "junk.parquet"]),
    ("backtest cash inf", ["backtest", "--data", "junk.parquet", "--cash", "inf"]),
    ("backtest bad param", ["backtest", "--data", "junk.parquet", "--param", "fast"]),
    ("bench zero quotes", ["bench", "--quotes", "0"]),
    ("bench nan seconds", ["bench", "--seconds", "nan"]),
    ("history bad symbol", ["history", "A B"]),
    ("history zero days", ["history", "AAPL", "--days", "0"]),
    ("history bad bar", ["history", "AAPL", "--bar", "7min"]),
    ("db without action", ["db"]),
    ("missing --env-file", ["--env-file", "missing.env", "check"]),
    ("--env-file dir", ["--env-file", "adir", "check"]),
]


def _workdir(root: Path) -> Path:
    (root / "adir").mkdir()
    (root / "afile").write_text("a file\n")
    (root / "notdb").write_bytes(b"this is not an SQLite database\n" * 4)
    (root / "junk.parquet").write_bytes(b"not parquet")
    # Real Parquet in the archive's layout, but not a quotes archive's columns.
    wrong = root / "wrong" / "quotes" / "date=2024-01-02"
    wrong.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), wrong / "part-0.parquet")
    return root


# Runs main() for each argv of a JSON list in one fresh interpreter (one start-up for all
# cases instead of one each), with stderr captured per case; an exception escaping main()
# is reported as the traceback the process would have printed.
DRIVER = """
import contextlib, io, json, sys, traceback
from loguru import logger
from tui.commands.cli import main
results = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            code = 1
            err.write(traceback.format_exc())
    logger.remove()
    results.append([code, err.getvalue()])
json.dump(results, sys.__stdout__)
"""
# A few cases also as their own process: the exit code and stderr of the real command.
OWN_PROCESS = [
    "unknown command",
    "replay --db not a db",
    "import not parquet",
    "import wrong columns",
]


def _check(name: str, argv: list[str], code: object, stderr: str) -> str | None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    # A settings-file problem is the settings block: its heading and one line.
    if argv[0] == "--env-file" and lines[:1] == [
        "trading-console: invalid settings, nothing was started:"
    ]:
        lines = lines[1:]
    if code != 2 or len(lines) != 1 or "Traceback" in stderr:
        return f"{name} {argv}: exit {code}, stderr {stderr!r}"
    if not lines[0].lstrip().startswith(argv[1] if argv[0] == "--env-file" else "trading-console"):
        return f"{name}: the line does not say who speaks: {lines[0]!r}"
    return None


def test_every_subcommand_with_bad_arguments_exits_2_with_one_line(tmp_path: Path) -> None:
    work = _workdir(tmp_path)
    before = sorted(p.name for p in work.iterdir())
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps([argv for _name, argv in BAD_ARGUMENTS]),
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "DATA_DIR": "data"},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert driver.returncode == 0, driver.stderr
    results = json.loads(driver.stdout)
    failures = [
        _check(name, argv, code, stderr)
        for (name, argv), (code, stderr) in zip(BAD_ARGUMENTS, results, strict=True)
    ]
    own = [(name, argv) for name, argv in BAD_ARGUMENTS if name in OWN_PROCESS]
    assert len(own) == len(OWN_PROCESS)
    for name, argv in own:
        proc = run_cli(argv, work)
        failures.append(_check(f"{name} (own process)", argv, proc.returncode, proc.stderr))
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)
    # No database, no DATA_DIR, no output directory appeared for a refused command.
    assert sorted(p.name for p in work.iterdir()) == before
    assert (work / "notdb").read_bytes() == b"this is not an SQLite database\n" * 4


def test_db_init_in_live_mode_needs_no_live_flag(tmp_path: Path) -> None:
    proc = run_cli(["db", "init"], tmp_path, {"TRADING_MODE": "live"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data" / "trading.db").is_file()


def test_run_in_live_mode_still_needs_the_live_flag(tmp_path: Path) -> None:
    proc = run_cli(["--headless"], tmp_path, {"TRADING_MODE": "live"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "trading-console: TRADING_MODE=live trades real money: add --live on the command line "
        "to confirm"
    ]
    assert not (tmp_path / "data").exists()


def test_replay_skips_malformed_rows_and_says_how_many(tmp_path: Path) -> None:
    assert run_cli(["db", "init"], tmp_path).returncode == 0
    database = tmp_path / "data" / "trading.db"
    good = [
        ("AAPL", f"2024-01-02T14:30:{s:02d}.000000+00:00", 100.0, 100.1, 1, 1, None, "stream")
        for s in range(0, 40, 2)
    ]
    bad = [
        ("AAPL", "2024-01-02T14:30:01.000000+00:00", "abc", 100.1, 1, 1, None, "stream"),
        ("AAPL", "2024-01-02T14:30:03.000000+00:00", 100.0, 100.1, "x", 1, None, "stream"),
        ("AAPL", "2024-01-02T14:30:05.garbage", 100.0, 100.1, 1, 1, None, "stream"),
        ("AAPL", "2024-01-02T14:30:07.000000+00:00", 100.0, 100.1, 1, 1, "zz", "stream"),
    ]
    with sqlite3.connect(database) as conn:
        conn.executemany("INSERT INTO quotes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", good + bad)
    proc = run_cli(["replay", "--date", "2024-01-02", "--out", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "4 malformed quote rows skipped" in " ".join(proc.stdout.split())
    assert "20 quotes" in proc.stdout


@pytest.mark.parametrize("command", [["check"], ["--headless"]])
def test_strategy_params_run_refuses_check_refuses_with_the_same_line(
    tmp_path: Path, command: list[str]
) -> None:
    env = {"STRATEGY_PARAMS": '{"fast": 10, "slow": 5}'}
    proc = run_cli(command, tmp_path, env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "trading-console: STRATEGY_PARAMS: ma_cross needs 0 < fast < slow, got fast=10 slow=5"
    ]
    assert "settings OK" not in proc.stdout
    assert not (tmp_path / "data").exists()  # refused before any file was created


def test_check_refuses_a_damaged_database_as_run_does_and_leaves_it_alone(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    damaged = b"SQLite format 3\x00" + b"\xff" * 2000
    (data / "trading.db").write_bytes(damaged)
    check = run_cli(["check"], tmp_path)
    run = run_cli(["--headless"], tmp_path)
    assert check.returncode == run.returncode == 2, check.stderr + run.stderr
    assert check.stderr.strip().splitlines() == run.stderr.strip().splitlines()
    assert len(check.stderr.strip().splitlines()) == 1 and "trading.db" in check.stderr
    assert (data / "trading.db").read_bytes() == damaged
