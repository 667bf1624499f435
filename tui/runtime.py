"""Assembly: core + storage wired together (the only place that knows both)."""

from __future__ import annotations

from dataclasses import dataclass

from core.brokers.factory import build_broker
from core.bus import EventBus
from core.clock import Clock, LiveClock
from core.config import Settings
from core.strategy.loader import load_strategy_class
from core.system import TradingSystem
from storage.database import Database
from storage.recorder import Recorder


@dataclass(slots=True)
class Runtime:
    system: TradingSystem
    database: Database
    recorder: Recorder

    async def close(self) -> None:
        await self.recorder.stop()
        await self.database.close()


async def build_runtime(settings: Settings, clock: Clock | None = None) -> Runtime:
    """Open the database, build the broker and the system; nothing is started yet."""
    clock = clock or LiveClock()
    broker = build_broker(settings, clock)
    load_strategy_class(settings.strategy)  # a bad STRATEGY fails before any file is created
    database = await Database.open(settings.database_path)
    try:
        bus = EventBus()
        recorder = Recorder(database, bus, record_quotes=settings.record_quotes)
        system = TradingSystem(settings, broker, clock, journal=recorder, bus=bus)
    except BaseException:
        await database.close()  # its worker thread would keep the process alive
        raise
    return Runtime(system, database, recorder)
