"""storage.writer: the real child process writing into a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from loguru import logger

from core.model import Order, OrderType, Side
from storage.database import Database
from storage.rows import order_row
from storage.writer import WriterProcess, WriterProcessError
from storage.writer_process import FrameReader, encode

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def quote_rows(n: int, start: int = 0) -> list[tuple[object, ...]]:
    return [
        ("AAPL", f"2026-01-05T14:30:00.{i:06d}+00:00", 100.0, 100.1, 1, 1, None, "sim")
        for i in range(start, start + n)
    ]


def order(cid: str) -> tuple[object, ...]:
    return order_row(Order(cid, "AAPL", Side.BUY, 10, OrderType.MARKET, T0).snapshot())


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
async def db_path(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "tc.db"
    database = await Database.open(path)  # creates and migrates, as the console does
    yield path
    await database.close()


@pytest.fixture
async def writer(db_path: Path) -> AsyncIterator[WriterProcess]:
    writer = WriterProcess(db_path)
    yield writer
    await writer.close()


async def test_batches_are_committed_when_the_call_returns(
    writer: WriterProcess, db_path: Path
) -> None:
    assert await writer.write_batch({"quotes": quote_rows(250)}) == 250
    assert await writer.write_batch({"orders": [order("c-1"), order("c-2")]}) == 2
    assert (count(db_path, "quotes"), count(db_path, "orders")) == (250, 2)


async def test_a_batch_sqlite_fails_raises_its_error_and_writes_none_of_it(
    db_path: Path,
) -> None:
    writer = WriterProcess(db_path, busy_timeout_ms=50)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the timeout
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await writer.write_batch({"quotes": quote_rows(10), "orders": [order("c-1")]})
        blocker.rollback()
        assert (count(db_path, "quotes"), count(db_path, "orders")) == (0, 0)
        # the same child takes the retry
        assert await writer.write_batch({"quotes": quote_rows(10)}) == 10
        assert writer.starts == 1
    finally:
        blocker.close()
        await writer.close()


async def test_a_write_that_finds_the_child_dead_is_sent_to_a_new_one(
    writer: WriterProcess, db_path: Path
) -> None:
    await writer.write_batch({"quotes": quote_rows(10)})
    assert writer._process is not None
    os.kill(writer._process.pid, signal.SIGKILL)
    await asyncio.sleep(0.2)  # dead, whether or not the reader has noticed yet
    assert await writer.write_batch({"orders": [order("c-1")]}) == 1
    assert writer.starts == 2
    assert (count(db_path, "quotes"), count(db_path, "orders")) == (10, 1)


async def test_a_killed_child_fails_the_write_in_flight_and_is_started_again(
    writer: WriterProcess, db_path: Path
) -> None:
    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(str(m)), level="ERROR")
    try:
        await writer.start()
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the child's batch waits for the write lock
        batch = asyncio.ensure_future(writer.write_batch({"quotes": quote_rows(10)}))
        await asyncio.sleep(0.2)
        process = writer._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(WriterProcessError, match="exited with code -9"):
            await batch
        blocker.rollback()
        blocker.close()
        # the next write starts a new child
        assert await writer.write_batch({"orders": [order("c-1")]}) == 1
    finally:
        logger.remove(sink)
    assert writer.starts == 2
    assert (count(db_path, "orders"), count(db_path, "quotes")) == (1, 0)
    assert any("writer process exited" in e for e in errors)


async def test_the_child_ignores_ctrl_c_so_the_last_batch_is_still_written(
    writer: WriterProcess, db_path: Path
) -> None:
    await writer.start()
    assert writer._process is not None
    os.kill(writer._process.pid, signal.SIGINT)  # what Ctrl+C sends the whole group
    os.kill(writer._process.pid, signal.SIGTERM)  # and systemd's stop
    await asyncio.sleep(0.1)
    assert await writer.write_batch({"quotes": quote_rows(5)}) == 5
    assert writer.starts == 1


def test_when_the_console_dies_the_child_writes_what_it_received_and_exits(
    db_path: Path,
) -> None:
    # The console's end of the pipe closing (a SIGKILL closes it too) is end of input.
    child = subprocess.Popen(
        [sys.executable, "-m", "storage.writer_process", str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert child.stdin is not None
    for i in range(5):
        child.stdin.write(encode((i + 1, {"quotes": quote_rows(2_000, i * 2_000)})))
    child.stdin.write(encode((6, {"orders": [order("c-1")]})))
    child.stdin.close()
    assert child.wait(timeout=30) == 0
    assert (count(db_path, "quotes"), count(db_path, "orders")) == (10_000, 1)


def test_frames_survive_arbitrary_splits() -> None:
    messages = [(1, {"quotes": quote_rows(3)}), (2, {"orders": [order("c-1")]}), (3, 0)]
    stream = b"".join(encode(m) for m in messages)
    reader = FrameReader()
    received: list[object] = []
    for i in range(len(stream)):
        received += reader.feed(stream[i : i + 1])
    assert received == messages
