"""Shared builders for tests: a full system on a SimVenue and a SimClock."""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from core.brokers.factory import sim_venue_config
from core.brokers.sim import SimVenue
from core.bus import EventBus
from core.clock import SimClock
from core.config import Settings, load_settings
from core.journal import Journal
from core.model import Bar, Quote
from core.strategy.base import StrategyContext, StrategyOutput
from core.strategy.ma_cross import MovingAverageCross
from core.system import TradingSystem

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)  # 09:30 New York
REPO = Path(__file__).resolve().parent.parent


def process_env(
    tmp_path: Path, *, drop: tuple[str, ...] = ("SIM_", "TRADING_"), **values: str
) -> dict[str, str]:
    """The environment of a real `trading-console` process under test: this one's, less
    the settings prefixes in ``drop`` (the test says what it wants), the tree under test
    on PYTHONPATH, DATA_DIR and STOP_FILE in ``tmp_path``, then ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        PYTHONPATH=str(REPO), DATA_DIR=str(tmp_path / "data"), STOP_FILE=str(tmp_path / "STOP")
    )
    env.update(values)
    return env


def query_db(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Read a running console's database; nothing while it (or its schema) is not there."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # schema not created yet


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "symbols": "AAPL,MSFT,SPY",
        "data_dir": tmp_path / "data",
        "stop_file": tmp_path / "STOP",
        "sim_latency_ms": 50,
    }
    base.update(overrides)
    return load_settings(env_file=None, **base)


@dataclass
class SimRig:
    system: TradingSystem
    venue: SimVenue
    clock: SimClock
    bus: EventBus
    events: list[object] = field(default_factory=list)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def build_rig(
    s: Settings,
    *,
    journal: Journal | None = None,
    bus: EventBus | None = None,
    start: datetime = T0,
    **venue_overrides: Any,
) -> SimRig:
    clock = SimClock(start)
    config = sim_venue_config(s)
    if venue_overrides:
        from dataclasses import replace

        config = replace(config, **venue_overrides)
    venue = SimVenue(config, clock)
    bus = bus or EventBus()
    rig_events: list[object] = []
    bus.subscribe_all(rig_events.append)
    system = TradingSystem(s, venue, clock, journal=journal, bus=bus)
    return SimRig(system, venue, clock, bus, rig_events)


class RecordingCross(MovingAverageCross):
    """The example strategy, remembering every quote and bar it was shown."""

    seen_quotes: ClassVar[list[Quote]] = []
    seen_bars: ClassVar[list[Bar]] = []

    def __init__(self, symbols: Sequence[str], context: StrategyContext, **params: Any) -> None:
        super().__init__(symbols, context, **params)
        type(self).seen_quotes = []
        type(self).seen_bars = []

    def on_quote(self, quote: Quote) -> StrategyOutput:
        self.seen_quotes.append(quote)
        return None

    def on_bar(self, bar: Bar) -> StrategyOutput:
        self.seen_bars.append(bar)
        return super().on_bar(bar)


def quote_is_sane(q: Quote) -> bool:
    return (
        math.isfinite(q.bid) and math.isfinite(q.ask) and q.bid > 0 and q.ask > 0 and q.bid <= q.ask
    )
