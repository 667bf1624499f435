"""The recorder's background task: flush on time or on volume, retry with backoff.

``run`` flushes every ``flush_s``, or as soon as ``PendingRows`` sets its wake event
(``flush_rows`` rows pending, or a delivery summary arrived). A failed flush keeps
its rows (``storage.flushing``) and is retried after an exponential backoff, capped
at ``MAX_BACKOFF_S``; ``stop`` cuts a backoff short and ends the task, leaving the
final flush to its caller.
"""

from __future__ import annotations

import asyncio
import contextlib

from loguru import logger

from storage.flushing import Flusher
from storage.pending import PendingRows

MAX_BACKOFF_S = 5.0


class FlushLoop:
    """``run()`` until ``stop()``."""

    def __init__(self, flusher: Flusher, pending: PendingRows, *, flush_s: float) -> None:
        self._flusher = flusher
        self._pending = pending
        self._flush_s = flush_s
        self._stop_requested = asyncio.Event()
        self.stopping = False
        self._failures = 0
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._task = asyncio.current_task()
        while not self.stopping:
            await self._wait_for_work()
            if self.stopping:
                break  # stop() does the final flush
            if self._flusher.has_work:
                await self._flush_or_back_off()

    async def stop(self) -> None:
        """End ``run()`` (a backoff too) and wait for it, unless it is the caller."""
        self.stopping = True
        self._stop_requested.set()
        self._pending.wake.set()
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait([task])

    async def _wait_for_work(self) -> None:
        wake = self._pending.wake
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._flush_s):
                await wake.wait()
        wake.clear()

    async def _flush_or_back_off(self) -> None:
        try:
            await self._flusher.flush()
        except Exception:
            self._failures += 1
            delay = min(self._flush_s * 2**self._failures, MAX_BACKOFF_S)
            logger.exception(
                "recorder: flush failed, {n} rows kept, retry in {delay:.2f}s",
                n=self._pending.count,
                delay=delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_requested.wait()
        else:
            self._failures = 0
