"""The database writer process: ``python -m storage.writer_process DB_PATH``.

Why a process: SQLite inserts are the biggest cost of recording every quote, and
Python's sqlite3 releases the GIL around each row's ``sqlite3_step``. A writer
*thread* therefore trades the GIL with the trading loop on every row, and under a
busy loop each row waits out a whole switch interval (5 ms): the recorder falls
behind and sheds market data. A child process writes on the second core instead,
and the trading loop only pays for ``marshal.dumps`` of each batch (~0.2 µs a row).

Protocol (stdin → requests, stdout → replies), each frame a 4-byte big-endian
length and a ``marshal`` payload — both ends are the same interpreter
(``sys.executable``), which is what marshal needs:

- request ``(seq, {table: [row, ...]})``: live rows (``LIVE_WRITE_SQL``), written
  table by table in ``WRITE_ORDER`` in one transaction, requests in the order sent;
- reply ``(seq, rows_written, error_class, error_text)``; ``error_class`` is None
  on success, else the exception's class name (e.g. ``OperationalError``) and
  nothing of that request was written;
- the first reply, ``(0, 0, None, None)``, says the connection is open.

Orders are not journaled here: ``storage.order_journal`` puts them on record before
they are sent, without a round trip to this process.

The child ignores SIGINT, SIGTERM and SIGHUP: Ctrl+C at the terminal, systemd's stop
and a dropped SSH connection reach the whole process group, and the console's own
graceful stop still needs its last batch written. A child that does not answer at
stop (stopped, or stuck in I/O) is killed by the parent (``WriterProcess.kill``).
End of input (the parent closed the pipe, or died) means: finish what was received,
then exit.
"""

from __future__ import annotations

import marshal
import os
import signal
import sqlite3
import struct
import sys
from collections.abc import Iterator
from typing import Any

from storage.schema import LIVE_WRITE_SQL, WRITE_ORDER

HEADER = struct.Struct(">I")
READ_BYTES = 64 * 1024
# A checkpoint copies the WAL into the database file and syncs it (milliseconds), so it
# runs only after about this many rows, like SQLite's own 1,000-page default.
CHECKPOINT_ROWS = 20_000


def encode(message: Any) -> bytes:
    payload = marshal.dumps(message)
    return HEADER.pack(len(payload)) + payload


class FrameReader:
    """Frames out of a byte stream that arrives in arbitrary pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self.extend(data)
        return list(self.frames())

    def extend(self, data: bytes) -> None:
        self._buffer += data

    def frames(self) -> Iterator[Any]:
        """Decode the complete frames buffered so far, one at a time; a frame that does
        not decode raises (ValueError, EOFError or TypeError) and stays buffered."""
        buffer = self._buffer
        while len(buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, 0)
            end = HEADER.size + size
            if len(buffer) < end:
                return
            frame = marshal.loads(bytes(buffer[HEADER.size : end]))
            del buffer[:end]  # from the front of a bytearray: no copy
            yield frame

    @property
    def leftover(self) -> int:
        """Bytes of a frame not complete yet (at the end of a file: a torn write)."""
        return len(self._buffer)


class _Writer:
    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        # The parent has created and migrated the file (WAL is persistent); these two
        # are per connection.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # SQLite checkpoints the WAL inside whichever commit crosses 1,000 pages, which
        # then waits for a sync; this connection checkpoints between batches instead.
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._in = sys.stdin.buffer.fileno()
        self._out = sys.stdout.buffer.fileno()
        self._frames = FrameReader()
        self._rows_since_checkpoint = 0

    def _reply(self, seq: int, written: int, error: BaseException | None = None) -> None:
        if error is None:
            data = encode((seq, written, None, None))
        else:
            data = encode((seq, written, type(error).__name__, str(error)))
        while data:
            data = data[os.write(self._out, data) :]

    def run(self) -> None:
        self._reply(0, 0)  # ready: the connection is open
        while True:
            # Below malloc's mmap threshold: a 1 MiB read buffer cost ~100 µs a call in
            # page faults.
            data = os.read(self._in, READ_BYTES)
            if not data:
                return  # the parent closed the pipe or died: everything sent is written
            for seq, batch in self._frames.feed(data):
                self._rows_since_checkpoint += self._write_batch(seq, batch)
            if self._rows_since_checkpoint >= CHECKPOINT_ROWS:
                self._checkpoint()
                self._rows_since_checkpoint = 0

    def _checkpoint(self) -> None:
        # PASSIVE never waits for readers or the other writer; what it cannot copy now
        # is copied after a later batch.
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            print(f"checkpoint failed: {exc}", file=sys.stderr)

    def _write_batch(self, seq: int, batch: dict[str, list[Any]]) -> int:
        written = 0
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table in WRITE_ORDER:
                    rows = batch.get(table)
                    if rows:
                        conn.executemany(LIVE_WRITE_SQL[table], rows)
                        written += len(rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._reply(seq, 0, exc)
            return 0
        self._reply(seq, written)
        return written


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if len(argv) not in (2, 3):
        print("usage: python -m storage.writer_process DB_PATH [BUSY_TIMEOUT_MS]", file=sys.stderr)
        return 2
    busy = int(argv[2]) if len(argv) == 3 else 5000
    _Writer(argv[1], busy).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
