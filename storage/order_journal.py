"""The order journal file: journal-before-send in one ``write(2)``, beside the database.

Why a file and not an SQLite transaction: an order must be on record before the
broker sees it, and a commit in the writer process is a round trip through a pipe,
the child's scheduler and SQLite (~170 µs at best, more behind a batch of quotes),
paid on every order while the step that made it waits. An append to this file is
one system call (~3 µs) on the trading loop.

Durability is the same as before: the database runs WAL with ``synchronous=NORMAL``,
which does not sync a commit to disk either. Both survive the process being killed
(the kernel holds the written pages); neither survives the machine losing power.

The rows are also handed to the recorder's next batch, so the ``orders`` table
holds them within one flush. The file only matters when the process dies before
that: on the next start ``fold_into`` inserts every row the table lacks (a row it
has is the same order in a later state) and empties the file. It is emptied as well
whenever a batch commits with nothing appended since that batch was taken, and at a
clean stop.

The console holds an exclusive lock on the file while it runs: a second console started on
the same database stops with ``JournalInUse`` before it trades (its start-up fold would
otherwise empty the first one's journal, and two consoles would trade one account's books).

Format: frames of a 4-byte big-endian length and a ``marshal`` payload (a list of
``order_row`` tuples), the writer process's framing. A torn last frame (killed in
the middle of a write, or a full disk) is ignored: that write raised, so its
orders were never sent.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from loguru import logger

from storage.schema import Row
from storage.writer_process import FrameReader, encode

SUFFIX = "-orders"


class JournalInUse(RuntimeError):
    """Another process (a second console on the same database) holds the order journal."""


def journal_path(database_path: Path) -> Path:
    """``tc.db`` → ``tc.db-orders``, beside SQLite's own ``-wal`` and ``-shm`` files."""
    return database_path.with_name(database_path.name + SUFFIX)


def read_rows(path: Path) -> list[Row]:
    """Every order row in the file, in the order written; [] when there is no file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    frames = FrameReader()
    rows: list[Row] = [tuple(row) for frame in frames.feed(data) for row in frame]
    if frames.leftover:
        logger.warning(
            "order journal {path}: ignored a torn last write ({n} bytes)",
            path=path,
            n=frames.leftover,
        )
    return rows


class OrderJournalFile:
    """Appends order rows to ``path``; opened (and locked) by ``open`` or the first append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.size = 0  # bytes in the file: what a batch can compare against later

    def append(self, rows: Sequence[Row]) -> None:
        """Write ``rows`` in one frame; raises OSError when they are not all on record."""
        data = encode(list(rows))
        fd = self._open()
        try:
            written = os.write(fd, data)
            if written != len(data):  # a full disk: a frame cut short is not a record
                raise OSError(f"order journal {self.path}: short write ({written}/{len(data)})")
        except OSError:
            os.ftruncate(fd, self.size)  # never leave a torn frame in front of later ones
            raise
        self.size += written

    def clear(self) -> None:
        """Empty the file: every row in it is in the database."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
        elif self.path.exists():
            os.truncate(self.path, 0)
        self.size = 0

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def open(self) -> None:
        """Open the file and take its lock; raises JournalInUse when another holds it."""
        self._open()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: every write lands at the end, whatever truncated the file last.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                # Released by the kernel when the process dies, however it dies.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise JournalInUse(
                    f"another trading console is using this database: its order journal "
                    f"{self.path} is locked. Stop that console first, or start this one "
                    "with another DATA_DIR"
                ) from None
            self._fd = fd
            self.size = os.fstat(fd).st_size
        return self._fd
