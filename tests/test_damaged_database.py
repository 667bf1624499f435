"""A damaged, foreign or newer-schema database, and a DATA_DIR that cannot hold one, are
refused before anything writes to them: real damaged SQLite files, checked in-process and
through the real command line (exit 2, one line, the file's bytes and mtime unchanged)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage.database import (
    Database,
    DatabaseRefused,
    check_database_file,
    check_directory,
    probe_directory,
)
from storage.schema import SCHEMA_VERSION, SchemaVersionError
from tests.helpers import process_env

PAGE = 4096


def _make_database(path: Path, quotes: int = 20_000) -> None:
    """A real console database (every migration) with enough quotes for many pages."""
    import asyncio

    async def build() -> None:
        db = await Database.open(path)
        await db.close()

    asyncio.run(build())
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO quotes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                ("AAPL", f"2026-01-05T14:30:{i % 60:02d}.{i:06d}+00:00", 1.0, 2.0, 1, 1, None, "t")
                for i in range(quotes)
            ],
        )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the one file to damage
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _truncate(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _garbage_pages(path: Path) -> None:
    # Pages 3..8 (b-tree pages of the schema's tables and indexes) become random bytes.
    with path.open("r+b") as fh:
        fh.seek(2 * PAGE)
        fh.write(os.urandom(6 * PAGE))


def _newer_schema(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is a spreadsheet, not a database\n" * 100)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "is damaged"),
    "garbage-pages": (_garbage_pages, "is damaged"),
    "newer-schema": (_newer_schema, f"schema version {SCHEMA_VERSION + 1}"),
    "not-sqlite": (_not_sqlite, "not an SQLite database"),
}


def _fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "trading.db"
    _make_database(path)
    assert path.stat().st_size > 40 * PAGE
    return path


@pytest.fixture(scope="module")
def archive(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Parquet archive of the template's day, for import and prune to be given."""
    import asyncio
    from datetime import date

    from storage.archive import export_day

    work = tmp_path_factory.mktemp("archive")
    shutil.copyfile(template, work / "source.db")

    async def export() -> None:
        db = await Database.open(work / "source.db")
        try:
            assert await export_day(db, date(2026, 1, 5), work / "archive")
        finally:
            await db.close()

    asyncio.run(export())
    return work / "archive"


def _damaged(template: Path, directory: Path, kind: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "trading.db"
    shutil.copyfile(template, path)
    DAMAGE[kind][0](path)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # an mtime any write would change
    return path


# ----------------------------------------------------------------------------- in-process


def test_a_sound_database_passes_the_check(template: Path, tmp_path: Path) -> None:
    path = tmp_path / "trading.db"
    shutil.copyfile(template, path)
    check_database_file(path)
    check_database_file(tmp_path / "missing.db")  # a new database
    (tmp_path / "empty.db").touch()
    check_database_file(tmp_path / "empty.db")


@pytest.mark.parametrize("kind", list(DAMAGE))
async def test_open_refuses_damage_and_writes_nothing(
    template: Path, tmp_path: Path, kind: str
) -> None:
    path = _damaged(template, tmp_path / "data", kind)
    before = _fingerprint(path)
    with pytest.raises(DatabaseRefused) as refused:
        await Database.open(path)
    message = str(refused.value)
    assert str(path) in message and DAMAGE[kind][1] in message
    assert "nothing was written" in message
    if kind == "newer-schema":
        assert isinstance(refused.value, SchemaVersionError)
        assert "upgrade trading-console" in message
    else:
        assert "aside" in message and "trading-console import" in message
    assert _fingerprint(path) == before


def test_a_hard_linked_database_is_refused(template: Path, tmp_path: Path) -> None:
    path = tmp_path / "trading.db"
    shutil.copyfile(template, path)
    os.link(path, tmp_path / "other-name.db")
    with pytest.raises(DatabaseRefused, match="2 hard links"):
        check_database_file(path)


def test_check_directory_refuses_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a directory")
    with pytest.raises(DatabaseRefused, match=f"DATA_DIR={a_file} is not a directory"):
        check_directory(a_file, "DATA_DIR")
    check_directory(tmp_path / "new" / "dir", "DATA_DIR")  # created
    assert (tmp_path / "new" / "dir").is_dir()
    assert list((tmp_path / "new" / "dir").iterdir()) == []  # the probe is removed


@contextmanager
def _read_only(directory: Path) -> Iterator[None]:
    """A directory this process cannot write to, root included (chattr +i), or skip."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    if shutil.which("chattr") is None:
        pytest.skip("root without chattr: no way to make a read-only directory")
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i refused here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_check_directory_refuses_a_read_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    refused = pytest.raises(DatabaseRefused, match=f"DATA_DIR={directory} is not writable")
    with _read_only(directory), refused:
        check_directory(directory, "DATA_DIR")


# ----------------------------------------------------------------------------- the process


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = process_env(tmp_path, SYMBOLS="AAPL,MSFT", SIM_QUOTES_PER_SECOND="20")
    env.update(extra)
    return env


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.commands.cli", *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_refused(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("trading-console")]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _commands(tmp_path: Path, archive: Path) -> dict[str, list[str]]:
    return {
        "headless": ["--headless"],
        "db-init": ["db", "init"],
        "export": ["export", "--date", "2026-01-05", "--to", str(tmp_path / "out")],
        "import": ["import", str(archive)],
        "prune": ["prune", "--before", "2026-01-01", "--archive", str(archive)],
        "replay": ["replay", "--date", "2026-01-05", "--out", str(tmp_path / "replay")],
    }


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_command_refuses_a_damaged_database_untouched(
    template: Path, archive: Path, tmp_path: Path, kind: str
) -> None:
    path = _damaged(template, tmp_path / "data", kind)
    before = _fingerprint(path)
    for name, args in _commands(tmp_path, archive).items():
        done = _cli(tmp_path, *args)
        _assert_refused(done, str(path), DAMAGE[kind][1])
        assert _fingerprint(path) == before, f"{name} modified the database"
    assert not (tmp_path / "data" / "heartbeat").exists()  # the console never started


def test_data_dir_that_is_a_file_exits_2(tmp_path: Path) -> None:
    a_file = tmp_path / "data"
    a_file.write_text("not a directory")
    for args in (["--headless"], ["db", "init"], ["import", str(tmp_path)]):
        done = _cli(tmp_path, *args, LOG_DIR=str(tmp_path / "logs"))
        # The settings refuse it already (their two-line format), or storage does.
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        named = [line for line in done.stderr.splitlines() if "DATA_DIR" in line]
        assert named and str(a_file) in named[0] and "not a" in named[0], done.stderr
    assert a_file.read_text() == "not a directory"


def test_read_only_data_dir_exits_2(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    with _read_only(directory):
        done = _cli(tmp_path, "--headless", LOG_DIR=str(tmp_path / "logs"))
        checked = _cli(tmp_path, "check", LOG_DIR=str(tmp_path / "logs"))
    _assert_refused(done, "DATA_DIR", str(directory), "not writable")
    # check refuses what run refuses, with the same line
    _assert_refused(checked, "DATA_DIR", str(directory), "not writable")
    assert list(directory.iterdir()) == []


def test_probe_directory_judges_a_missing_directory_by_its_parent(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    probe_directory(tmp_path / "new" / "data", "DATA_DIR")  # writable parent: fine
    assert not (tmp_path / "new").exists()  # and nothing made
    refused = pytest.raises(DatabaseRefused, match=r"DATA_DIR=.*not writable")
    with _read_only(parent), refused:
        probe_directory(parent / "data", "DATA_DIR")
    assert list(parent.iterdir()) == []
