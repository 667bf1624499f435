"""The heartbeat: "this process is alive" every HEARTBEAT_SECONDS, in a file and the database.

The watchdog (`trading-console watchdog`, run by cron or a systemd timer) reads
it from outside. The file holds one JSON object — ``ts`` (ISO UTC), ``pid``,
``state`` (running / stopped / crashed), ``started_at`` — written to a temporary
file and renamed, so a reader never sees half of it. A clean stop writes
``stopped`` so that a deliberate shutdown does not page anyone; a crash writes
``crashed``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from core.clock import Clock

Sleep = Callable[[float], Awaitable[None]]


class HeartbeatState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    ts: datetime
    pid: int
    state: HeartbeatState
    started_at: datetime | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "ts": self.ts.isoformat(),
                "pid": self.pid,
                "state": str(self.state),
                "started_at": None if self.started_at is None else self.started_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> HeartbeatRecord:
        """Raises ValueError when the text is not a heartbeat."""
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("heartbeat is not a JSON object")
        try:
            started = data.get("started_at")
            return cls(
                ts=datetime.fromisoformat(data["ts"]),
                pid=int(data["pid"]),
                state=HeartbeatState(data.get("state", "running")),
                started_at=None if not started else datetime.fromisoformat(started),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"heartbeat is missing a field: {exc}") from None


class HeartbeatStore(Protocol):
    """Where else the heartbeat goes (the database); implemented by storage."""

    async def write_heartbeat(self, record: HeartbeatRecord) -> None: ...


def write_heartbeat_file(path: Path, record: HeartbeatRecord) -> None:
    """Atomic replace: the watchdog may read at any moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(record.to_json() + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_heartbeat_file(path: Path) -> HeartbeatRecord | None:
    """None when the file is missing or unreadable (both mean: no sign of life)."""
    try:
        return HeartbeatRecord.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class Heartbeat:
    """Writes the heartbeat every ``interval`` seconds until stopped."""

    def __init__(
        self,
        clock: Clock,
        path: Path,
        interval: float,
        *,
        store: HeartbeatStore | None = None,
        pid: int | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self.path = path
        self.interval = interval
        self._store = store
        self.pid = os.getpid() if pid is None else pid
        self._sleep = sleep
        self._started_at = clock.now()
        self.beats = 0
        self.last: HeartbeatRecord | None = None

    async def beat(self, state: HeartbeatState = HeartbeatState.RUNNING) -> HeartbeatRecord:
        """Write one heartbeat now; a failing destination is logged, never raised."""
        record = HeartbeatRecord(self._clock.now(), self.pid, state, self._started_at)
        try:
            # Off the loop: a slow disk must not delay quotes.
            await asyncio.to_thread(write_heartbeat_file, self.path, record)
        except OSError as exc:
            logger.warning("heartbeat file {path}: {error}", path=str(self.path), error=str(exc))
        if self._store is not None:
            try:
                await self._store.write_heartbeat(record)
            except Exception as exc:
                logger.warning("heartbeat in the database failed: {error}", error=repr(exc))
        self.beats += 1
        self.last = record
        return record

    async def run(self) -> None:
        """Beat, sleep, repeat; cancel to stop (then call `mark` with the final state)."""
        while True:
            await self.beat()
            await self._sleep(self.interval)

    async def mark(self, state: HeartbeatState) -> None:
        """The last heartbeat of this process: stopped cleanly or crashed."""
        await self.beat(state)
