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

- request ``(seq, "batch", {table: [row, ...]})``: live rows (``LIVE_WRITE_SQL``),
  written table by table in ``WRITE_ORDER`` in one transaction;
- request ``(seq, "orders", [row, ...])``: the order journal (``NEW_ORDER_SQL``,
  a plain INSERT), in one transaction;
- reply ``(seq, rows_written, error_class, error_text)``; ``error_class`` is None
  on success, else the exception's class name (e.g. ``IntegrityError``) and
  ``rows_written`` counts the rows committed before the error (a prefix in
  ``WRITE_ORDER``), which the parent must not send again;
- the first reply, ``(0, 0, None, None)``, says the connection is open.

A journal request is the one that holds up an order: it is served before any batch
still waiting, and a batch in progress commits what it has written and lets the
journal through between slices of ``SLICE_ROWS`` rows. It never overtakes a batch
that carries rows of the same orders (an older snapshot must not land after it).

The child ignores SIGINT and SIGTERM: Ctrl+C at the terminal and systemd's stop
reach the whole process group, and the console's own graceful stop still needs
its last batch written. End of input (the parent closed the pipe, or died) means:
finish what was received, then exit.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import sqlite3
import struct
import sys
from collections import deque
from typing import Any

from storage.schema import LIVE_WRITE_SQL, NEW_ORDER_SQL, WRITE_ORDER

HEADER = struct.Struct(">I")
# Rows written between two looks for a waiting journal request: about 0.3 ms of work.
SLICE_ROWS = 100
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
        self._buffer += data
        frames: list[Any] = []
        buffer = self._buffer
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            frames.append(marshal.loads(bytes(buffer[start + HEADER.size : end])))
            start = end
        del buffer[:start]
        return frames


class _Writer:
    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        # The parent has created and migrated the file (WAL is persistent); these two
        # are per connection.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # SQLite checkpoints the WAL inside whichever commit crosses 1,000 pages; that
        # must not be an order's journal commit. This connection checkpoints after a
        # batch instead, when no journal request is waiting (``_checkpoint``).
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._in = sys.stdin.buffer.fileno()
        self._out = sys.stdout.buffer.fileno()
        self._frames = FrameReader()
        self._journals: deque[tuple[int, list[Any]]] = deque()
        # (seq, batch, ids of the orders it holds rows of: what a journal must not pass)
        self._batches: deque[tuple[int, dict[str, list[Any]], set[str]]] = deque()
        self._eof = False
        self._rows_since_checkpoint = 0

    # ------------------------------------------------------------------ input

    def _poll(self, block: bool) -> None:
        if self._eof:
            return
        ready, _, _ = select.select([self._in], [], [], None if block else 0)
        if not ready:
            return
        # Below malloc's mmap threshold: a 1 MiB read buffer cost ~100 µs a call in page
        # faults, most of an order's journal round trip.
        data = os.read(self._in, READ_BYTES)
        if not data:
            self._eof = True
            return
        for seq, kind, body in self._frames.feed(data):
            if kind == "orders":
                self._journals.append((seq, body))
            else:
                self._batches.append((seq, body, _order_ids(body)))

    def _reply(self, seq: int, written: int, error: BaseException | None = None) -> None:
        if error is None:
            data = encode((seq, written, None, None))
        else:
            data = encode((seq, written, type(error).__name__, str(error)))
        while data:
            data = data[os.write(self._out, data) :]

    # ------------------------------------------------------------------ writes

    def run(self) -> None:
        self._reply(0, 0)  # ready: the connection is open
        while True:
            self._poll(block=not (self._journals or self._batches))
            if self._eof and not (self._journals or self._batches):
                return
            self._serve_journals(blocked_by=None)
            if self._batches:
                seq, batch, ids = self._batches.popleft()
                self._rows_since_checkpoint += self._write_batch(seq, batch, ids)
                if self._rows_since_checkpoint >= CHECKPOINT_ROWS:
                    self._poll(block=False)
                    if not self._journals:
                        self._checkpoint()
                        self._rows_since_checkpoint = 0

    def _checkpoint(self) -> None:
        # PASSIVE never waits for readers or the other writer; what it cannot copy now
        # is copied after a later batch.
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            print(f"checkpoint failed: {exc}", file=sys.stderr)

    def _serve_journals(self, blocked_by: set[str] | None) -> None:
        """Write waiting journal requests, up to one that touches ``blocked_by``'s orders."""
        while self._journals:
            seq, rows = self._journals[0]
            if blocked_by and any(row[0] in blocked_by for row in rows):
                return
            if any(ids & {row[0] for row in rows} for _, _, ids in self._batches):
                return  # an earlier batch holds these orders: it goes first
            self._journals.popleft()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(NEW_ORDER_SQL, rows)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._reply(seq, 0, exc)
            else:
                self._reply(seq, len(rows))

    def _write_batch(self, seq: int, batch: dict[str, list[Any]], ids: set[str]) -> int:
        written = committed = 0
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table in WRITE_ORDER:
                    rows = batch.get(table)
                    if not rows:
                        continue
                    sql = LIVE_WRITE_SQL[table]
                    for start in range(0, len(rows), SLICE_ROWS):
                        conn.executemany(sql, rows[start : start + SLICE_ROWS])
                        written += len(rows[start : start + SLICE_ROWS])
                        self._poll(block=False)
                        if self._journals and not ids & _journal_ids(self._journals):
                            # Let the order through: what is written so far is a
                            # consistent prefix (tables in WRITE_ORDER, rows in order).
                            conn.execute("COMMIT")
                            committed = written
                            self._serve_journals(blocked_by=ids)
                            conn.execute("BEGIN IMMEDIATE")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # Rows committed before a journal break stay written: report how many, so
            # the parent retries only the rest (quotes have no key to dedupe on).
            self._reply(seq, committed, exc)
            return committed
        self._reply(seq, written)
        return written


def _order_ids(batch: dict[str, list[Any]]) -> set[str]:
    return {row[0] for row in batch.get("orders", ())}


def _journal_ids(journals: deque[tuple[int, list[Any]]]) -> set[str]:
    return {row[0] for _, rows in journals for row in rows}


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(argv) not in (2, 3):
        print("usage: python -m storage.writer_process DB_PATH [BUSY_TIMEOUT_MS]", file=sys.stderr)
        return 2
    busy = int(argv[2]) if len(argv) == 3 else 5000
    _Writer(argv[1], busy).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
