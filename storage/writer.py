"""The recorder's side of the writer process (``storage.writer_process``).

``WriterProcess`` starts ``python -m storage.writer_process DB_PATH`` and sends it
batches; each call resolves when the child has committed the batch (or failed it,
writing none of it). A child that died is started again on the next call, so one
crash costs the batches in flight at that moment, which the recorder keeps and
retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import marshal
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from loguru import logger

from storage.schema import Row
from storage.writer_process import HEADER, encode

# Linux lets a pipe grow to 1 MiB (the default is 64 KiB): a whole batch of quotes
# then fits, and sending it never waits for the child to read.
_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1 << 20
_EXIT_WAIT_S = 30.0


class WriterProcessError(RuntimeError):
    """The writer process could not be started or died.

    A write that failed in SQLite raises the child's sqlite3 error class instead."""


class WriterProcess:
    """One child process that writes the recorder's rows into ``path``."""

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._process: asyncio.subprocess.Process | None = None
        self._replies: dict[int, asyncio.Future[tuple[int, str | None, str | None]]] = {}
        self._seq = 0
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._closing = False
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The current child's process id (None before the first start or after close)."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        async with self._start_lock:
            if self.running and self._reader is not None and not self._reader.done():
                return
            await self._spawn()

    async def _spawn(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "storage.writer_process",
            str(self.path),
            str(self._busy_timeout_ms),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        _grow_pipe(process.stdin)
        self._process = process
        self.starts += 1
        ready = asyncio.get_running_loop().create_future()
        self._replies = {0: ready}
        self._reader = asyncio.create_task(self._read_replies(process), name="writer-replies")
        self._stderr = asyncio.create_task(self._log_stderr(process), name="writer-stderr")
        try:
            await ready
        except WriterProcessError:
            await self._reap(process)
            raise
        logger.debug("writer process {pid} started for {path}", pid=process.pid, path=self.path)

    async def write_batch(self, batch: Mapping[str, Sequence[Row]]) -> int:
        """Write live rows of several tables in one transaction; returns rows written.

        Raises the child's sqlite3 error class (a locked database, say) when SQLite
        failed the batch, WriterProcessError when the child died with it."""
        body = {t: rows for t, rows in batch.items() if rows}
        try:
            reply = await self._send(body)
        except WriterProcessError:
            # The child was gone before it read the request, so nothing of it was
            # written: a new child may take it (once).
            await self._forget_dead_child()
            reply = await self._send(body)
        written, error_class, error_text = await reply
        if error_class is None:
            return written
        error_type = getattr(sqlite3, error_class, None)
        if isinstance(error_type, type) and issubclass(error_type, sqlite3.Error):
            raise error_type(error_text)
        raise WriterProcessError(f"writer process: {error_class}: {error_text}")

    async def _send(
        self, body: Mapping[str, Sequence[Row]]
    ) -> asyncio.Future[tuple[int, str | None, str | None]]:
        await self.start()
        process = self._process
        assert process is not None and process.stdin is not None
        self._seq += 1
        seq = self._seq
        reply = asyncio.get_running_loop().create_future()
        self._replies[seq] = reply
        try:
            process.stdin.write(encode((seq, body)))
            await process.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._replies.pop(seq, None)
            if reply.done():
                reply.exception()  # the reader failed it too: this error is the one raised
            else:
                reply.cancel()
            raise WriterProcessError(f"writer process: sending failed: {exc!r}") from exc
        return reply

    async def _forget_dead_child(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await self._reap(process)

    async def _read_replies(self, process: asyncio.subprocess.Process) -> None:
        stdout = process.stdout
        assert stdout is not None
        error: BaseException | None = None
        try:
            while True:
                header = await stdout.readexactly(HEADER.size)
                (size,) = HEADER.unpack(header)
                seq, written, error_class, error_text = marshal.loads(
                    await stdout.readexactly(size)
                )
                future = self._replies.pop(seq, None)
                if future is not None and not future.done():
                    future.set_result((written, error_class, error_text))
        except asyncio.IncompleteReadError:
            code = await process.wait()
            error = WriterProcessError(f"writer process exited with code {code}")
        except BaseException as exc:  # a garbled reply: nothing after it can be trusted
            error = exc
            raise
        finally:
            pending, self._replies = self._replies, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(
                        error or WriterProcessError("writer process reply reader stopped")
                    )
            if isinstance(error, WriterProcessError) and not self._closing:
                logger.error("{error}; it is started again on the next write", error=error)

    async def _log_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            logger.warning("writer process: {line}", line=line.decode(errors="replace").rstrip())

    def kill(self, why: str) -> None:
        """Kill a child that does not answer (SIGKILL also ends a SIGSTOPped one).

        The batch in flight then fails with WriterProcessError (none of it is committed:
        SQLite rolls the open transaction back) and the recorder keeps its rows; the
        next write starts a new child."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        logger.error("writer process {pid} {why}: killed", pid=process.pid, why=why)
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    async def close(self, timeout: float = _EXIT_WAIT_S) -> None:
        """Let the child finish what it was sent, then wait (up to ``timeout``) for it to
        exit; one that has not exited by then is killed."""
        process = self._process
        if process is None:
            return
        self._process = None
        self._closing = True
        try:
            if process.stdin is not None and not process.stdin.is_closing():
                process.stdin.close()
            await self._reap(process, timeout)
        finally:
            self._closing = False

    async def _reap(
        self, process: asyncio.subprocess.Process, timeout: float = _EXIT_WAIT_S
    ) -> None:
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await process.wait()
        except TimeoutError:
            logger.error(
                "writer process {pid} did not exit within {s:.1f} s: killed",
                pid=process.pid,
                s=timeout,
            )
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        for task in (self._reader, self._stderr):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _grow_pipe(stdin: asyncio.StreamWriter) -> None:
    pipe = stdin.get_extra_info("pipe")
    if pipe is None or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
