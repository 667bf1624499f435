"""Drive a TradingSystem on a SimVenue with a SimClock, as fast as the CPU allows.

The same objects trade in live sim and here; only who moves the clock differs.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from core.brokers.sim import SimVenue
from core.clock import SimClock
from core.system import TradingSystem

# Background tasks (the recorder's flushes, the order sender's wake-ups, alert delivery)
# get a turn once per simulated second rather than every step: a turn of the event loop
# costs as much as a tenth of a step's quotes, and nothing on the trading path waits
# for one (orders are drained every step).
BACKGROUND_TURN = timedelta(seconds=1)


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
    next_turn = clock.now()
    while clock.now() < end:
        clock.advance(min(step, end - clock.now()))
        now = clock.now()
        quotes += venue.advance_to(now)
        system.on_timer()
        await system.execution.drain()  # every order a step decided on is sent in it
        if now >= next_turn:
            await asyncio.sleep(0)
            next_turn = now + BACKGROUND_TURN
        if system.fatal_error is not None:
            raise system.fatal_error
    await asyncio.sleep(0)  # and once at the end, so they see the last step
    return quotes
