"""Drive a TradingSystem on a SimVenue with a SimClock, as fast as the CPU allows.

The same objects trade in live sim and here; only who moves the clock differs.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from core.brokers.sim import SimVenue
from core.clock import SimClock
from core.system import TradingSystem


async def run_simulated(
    system: TradingSystem,
    venue: SimVenue,
    clock: SimClock,
    duration: timedelta,
    step: timedelta = timedelta(milliseconds=250),
) -> int:
    """Advance time step by step: venue quotes and fills, then timer work, then sends.

    Returns the number of quotes the venue generated.
    """
    end = clock.now() + duration
    quotes = 0
    while clock.now() < end:
        clock.advance(min(step, end - clock.now()))
        quotes += venue.advance_to(clock.now())
        system.on_timer()
        await system.execution.drain()
        await asyncio.sleep(0)  # background writers (the recorder) get a turn every step
        if system.fatal_error is not None:
            raise system.fatal_error
    return quotes
