"""The recorder's background task: flush on time or on volume, retry with backoff.

``run`` flushes every ``flush_s``, or as soon as ``PendingRows`` sets its wake event
(``flush_rows`` rows pending, or a delivery summary arrived). A failed flush keeps
its rows (``storage.flushing``) and is retried after an exponential backoff, capped
at ``MAX_BACKOFF_S``; ``stop`` cuts a backoff short and ends the task, leaving the
final flush to its caller.

A stall watch runs beside it: when rows have waited ``STALL_SECONDS`` without a
successful write (the writer process stopped or stuck, the database locked by someone
else, a full disk), ``on_alert`` is called once with a WARNING, and once with an INFO
when writes succeed again. Meanwhile the backlog stays bounded by ``PendingRows``'s
drop policy: market data beyond the cap is dropped and counted, nothing else is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from loguru import logger

from core.model import AlertSeverity
from storage.flushing import Flusher
from storage.pending import SHEDDABLE_TABLES, PendingRows

MAX_BACKOFF_S = 5.0
# Rows waiting this long without a successful write raise the "stalled" alert; the
# watch looks once a second, so the alert comes 5-6 s into a stall.
STALL_SECONDS = 5.0
STALL_CHECK_SECONDS = 1.0

AlertSink = Callable[[AlertSeverity, str, str], object]


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
        self.on_alert: AlertSink | None = None
        self._flushing = False
        self._last_progress = time.monotonic()
        self._stalled_since: float | None = None
        self._dropped_at_stall = 0

    @property
    def stalled(self) -> bool:
        return self._stalled_since is not None

    async def run(self) -> None:
        self._task = asyncio.current_task()
        self._last_progress = time.monotonic()
        watch = asyncio.create_task(self._watch_stall(), name="recorder-stall-watch")
        try:
            while not self.stopping:
                await self._wait_for_work()
                if self.stopping:
                    break  # stop() does the final flush
                if self._flusher.has_work:
                    await self._flush_or_back_off()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def stop(self, timeout: float | None = None) -> bool:
        """End ``run()`` (a backoff too) and wait for it, unless it is the caller.

        Returns False when ``run()`` was still busy after ``timeout`` seconds (a write
        that does not come back): the caller decides what to do with the writer."""
        self.stopping = True
        self._stop_requested.set()
        self._pending.wake.set()
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            done, _ = await asyncio.wait([task], timeout=timeout)
            return bool(done)
        return True

    async def wait_ended(self, timeout: float) -> bool:
        """After ``stop()`` returned False: wait (bounded) for ``run()`` to end."""
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return True
        done, _ = await asyncio.wait([task], timeout=timeout)
        return bool(done)

    async def _wait_for_work(self) -> None:
        wake = self._pending.wake
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._flush_s):
                await wake.wait()
        wake.clear()

    async def _flush_or_back_off(self) -> None:
        self._flushing = True
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
            self._flushing = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_requested.wait()
        else:
            self._failures = 0
            self._progressed(time.monotonic())
        finally:
            self._flushing = False

    # ----------------------------------------------------------------- stall watch

    async def _watch_stall(self) -> None:
        while True:
            await asyncio.sleep(STALL_CHECK_SECONDS)
            self.check_stall(time.monotonic())

    def check_stall(self, now: float) -> None:
        """Raise the stall alert once rows have waited ``STALL_SECONDS`` unwritten."""
        if not (self._flushing or self._flusher.has_work):
            self._progressed(now)  # nothing waiting: nothing can be stalled
            return
        waited = now - self._last_progress
        if self._stalled_since is not None or waited < STALL_SECONDS:
            return
        self._stalled_since = self._last_progress
        self._dropped_at_stall = self._pending.rows_dropped
        cause = self._flusher.last_error if self._failures else None
        message = (
            f"Database writer stalled: nothing written for {waited:.0f} s, "
            f"{self._pending.count} rows waiting"
            f" ({cause or 'the writer process does not answer'}). "
            f"Above {self._pending.max_pending} waiting rows, market data "
            f"({', '.join(SHEDDABLE_TABLES)}) is dropped and counted; orders, fills and "
            "state changes are always kept."
        )
        logger.warning("recorder: {message}", message=message)
        self._alert(AlertSeverity.WARNING, "recorder_stalled", message)

    def _progressed(self, now: float) -> None:
        self._last_progress = now
        since = self._stalled_since
        if since is None:
            return
        self._stalled_since = None
        dropped = self._pending.rows_dropped - self._dropped_at_stall
        message = (
            f"Database writer recovered after {now - since:.0f} s; "
            f"{dropped} market-data rows were dropped meanwhile."
        )
        logger.info("recorder: {message}", message=message)
        self._alert(AlertSeverity.INFO, "recorder_recovered", message)

    def _alert(self, severity: AlertSeverity, key: str, message: str) -> None:
        if self.on_alert is None:
            return
        try:
            self.on_alert(severity, key, message)
        except Exception:  # an alert path failure must not end the recorder
            logger.exception("recorder: raising the {key} alert failed", key=key)
