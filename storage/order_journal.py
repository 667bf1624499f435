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
that: on the next start the recorder inserts every row the table lacks (a row it has
is the same order in a later state) and empties the file. Once that is done, it is
emptied as well whenever a batch commits with nothing appended since that batch was
taken, and at a clean stop. A file that does not decode (a power cut can leave a
zero-filled tail) is copied aside before it is emptied, with an error in the log.

The console holds an exclusive lock on the file while it runs: a second console started on
the same database stops with ``JournalInUse`` before it trades (its start-up fold would
otherwise empty the first one's journal, and two consoles would trade one account's books).
The lock is keyed on the database file itself, not on a name: a ``flock`` on the database's
inode (``lock_database_file``), taken before the journal's, so a symbolic link, a hard link
or another relative path to the same file meets the same lock. The journal's path is built
from the resolved database path (``resolved_database_path``), so every name of the database
finds the same journal.

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


# The database files this process has opened for its lock, by (device, inode). They stay
# open until the process exits and are only unlocked: closing any descriptor of a file drops
# every POSIX lock this process holds on it, SQLite's own included (fcntl(2), "the close
# problem"), and the console's SQLite connection has the same file open.
_DATABASE_LOCK_FDS: dict[tuple[int, int], int] = {}
_DATABASE_LOCKS_HELD: set[tuple[int, int]] = set()


def resolved_database_path(path: Path) -> Path:
    """``path`` with every symbolic link and ``..`` resolved (the file need not exist)."""
    return Path(os.path.realpath(path))


def _in_use(detail: str) -> JournalInUse:
    return JournalInUse(
        f"another trading console is using this database: {detail}. Stop that console "
        "first, or start this one with another DATA_DIR"
    )


def lock_database_file(path: Path) -> tuple[int, int]:
    """Take the exclusive lock on the database file's inode (creating an empty file when
    there is none: SQLite treats it as a new database). Returns the key to unlock with;
    raises JournalInUse when another process, or another holder here, has it."""
    try:
        st = os.stat(path)
        key: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except FileNotFoundError:
        key = None
    fd = _DATABASE_LOCK_FDS.get(key) if key is not None else None
    if fd is None:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        _DATABASE_LOCK_FDS.setdefault(key, fd)
        fd = _DATABASE_LOCK_FDS[key]  # a race with another name of the file: keep one fd
    assert key is not None
    if key in _DATABASE_LOCKS_HELD:
        raise _in_use(f"{path} is already open in this process")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(
            f"{path} (device {key[0]}, inode {key[1]}) is locked by another process"
        ) from None
    _DATABASE_LOCKS_HELD.add(key)
    return key


def unlock_database_file(key: tuple[int, int]) -> None:
    fd = _DATABASE_LOCK_FDS.get(key)
    if fd is not None and key in _DATABASE_LOCKS_HELD:
        fcntl.flock(fd, fcntl.LOCK_UN)
        _DATABASE_LOCKS_HELD.discard(key)


def journal_path(database_path: Path) -> Path:
    """``tc.db`` → ``tc.db-orders``, beside SQLite's own ``-wal`` and ``-shm`` files."""
    return database_path.with_name(database_path.name + SUFFIX)


def read_rows(path: Path) -> list[Row]:
    """Every order row in the file, in the order written; [] when there is no file."""
    return read_journal(path)[0]


def read_journal(path: Path) -> tuple[list[Row], bool]:
    """The file's order rows up to the first frame that does not decode, and whether
    every frame decoded (a torn last write is normal after a kill, and is not damage)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], True
    reader = FrameReader()
    reader.extend(data)
    rows: list[Row] = []
    try:
        for frame in reader.frames():
            rows.extend(tuple(row) for row in frame)
    except (ValueError, EOFError, TypeError):
        return rows, False
    if reader.leftover:
        logger.warning(
            "order journal {path}: ignored a torn last write ({n} bytes)",
            path=path,
            n=reader.leftover,
        )
    return rows, True


class OrderJournalFile:
    """Appends order rows to ``path``; opened (and locked) by ``open`` or the first append."""

    def __init__(self, path: Path, *, database: Path | None = None) -> None:
        self.path = path
        # With ``database``, opening also takes the lock on that file's inode.
        self.database = database
        self._database_lock: tuple[int, int] | None = None
        self._fd: int | None = None
        self.size = 0  # bytes in the file: what a batch can compare against later
        # Rows of an earlier run were in the file when it was opened: it is not emptied
        # until they are in the database (``folded``).
        self.unfolded = False

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
        self.drop_prefix(self.size)

    def drop_prefix(self, size: int) -> None:
        """Forget the first ``size`` bytes (whole frames, all in the database now).

        Only while the file is open (and locked: a closed one may belong to another
        console by now), and never before an earlier run's rows were folded in. What
        follows them is written to a new locked file first, which then replaces this
        one by a rename: at every moment the path names a complete, locked journal."""
        fd = self._fd
        if fd is None or self.unfolded or size <= 0:
            return
        if size >= self.size:
            os.ftruncate(fd, 0)
            self.size = 0
            return
        tail = os.pread(fd, self.size - size, size)
        replacement = self.path.with_name(self.path.name + ".new")
        new_fd = self._locked(replacement, os.O_TRUNC)
        try:
            if os.write(new_fd, tail) != len(tail):
                raise OSError(f"order journal {replacement}: short write")
            os.replace(replacement, self.path)
        except BaseException:
            os.close(new_fd)
            raise
        self._fd = new_fd
        self.size = len(tail)
        os.close(fd)

    def folded(self) -> None:
        """The rows an earlier run left are in the database now: empty the file."""
        self.unfolded = False
        self.clear()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        lock, self._database_lock = self._database_lock, None
        if lock is not None:
            unlock_database_file(lock)

    def open(self) -> None:
        """Open the file and take its lock; raises JournalInUse when another holds it."""
        self._open()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.database is not None and self._database_lock is None:
                self._database_lock = lock_database_file(self.database)
            try:
                fd = self._locked(self.path)
            except BaseException:
                if self._database_lock is not None:
                    unlock_database_file(self._database_lock)
                    self._database_lock = None
                raise
            self._fd = fd
            self.size = os.fstat(fd).st_size
            self.unfolded = self.size > 0
        return self._fd

    def _locked(self, path: Path, flags: int = 0) -> int:
        # O_APPEND: every write lands at the end, whatever truncated the file last.
        # Read access for drop_prefix.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | flags, 0o600)
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
        return fd
