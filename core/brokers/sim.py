"""The built-in simulated venue: synthetic quotes, order matching and a cash account.

It implements the ``Broker`` protocol so the same core runs against it as
against IB. Everything is driven by the injected clock (ARCHITECTURE rule 6):
``advance_to(now)`` generates the quotes that were due since the last call and
delivers the order events whose latency has elapsed, so replay and tests are
deterministic for a given seed; ``run()`` merely calls it in a loop in live use.

This module is the quote side (the schedule, the clock drive, connection and
subscriptions); the order side it builds on is ``core.brokers.sim_orders``.

Simplifications worth knowing:
- Quotes are published only while connected; a disconnected venue drops the
  schedule (no burst of stale quotes on reconnect). Orders that reach the
  venue while it is disconnected are rejected with IB's code 504.
- The buying-power check looks at positions plus the new order, not at other
  working orders.
- Each symbol has its own RNG (and a second one for malformed quotes), so
  one symbol's stream does not depend on which others are subscribed or on
  ``bad_quote_rate``.
- Stops trigger on the last trade price; the venue's own quotes carry none, so
  here they trigger on the mid of its true book (a buy stop at or above its stop
  price, a sell stop at or below). Order types, brackets, OCA groups and
  modifications: core.brokers.sim_orders.
- DAY and GTC orders alike rest until filled or cancelled (the venue has no
  session close), across restarts from its state file.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from loguru import logger

from core.brokers.sim_book import (
    ERR_CANCEL_NOT_CANCELLABLE,
    ERR_CANCEL_NOT_FOUND,
    ERR_MODIFY_FAILED,
    ERR_MODIFY_FILLED,
    ERR_MODIFY_NOT_FOUND,
    ERR_NO_SECURITY_DEFINITION,
    ERR_NOT_CONNECTED,
    ERR_ORDER_REJECTED,
    MAX_CATCHUP_SECONDS,
    PRICE_EPS,
    TICK,
    Book,
    SimVenueConfig,
)
from core.brokers.sim_orders import SimOrderDesk
from core.clock import Clock
from core.model import Quote

__all__ = [
    "ERR_CANCEL_NOT_CANCELLABLE",
    "ERR_CANCEL_NOT_FOUND",
    "ERR_MODIFY_FAILED",
    "ERR_MODIFY_FILLED",
    "ERR_MODIFY_NOT_FOUND",
    "ERR_NOT_CONNECTED",
    "ERR_NO_SECURITY_DEFINITION",
    "ERR_ORDER_REJECTED",
    "MAX_CATCHUP_SECONDS",
    "TICK",
    "SimVenue",
    "SimVenueConfig",
]


class SimVenue(SimOrderDesk):
    """A deterministic simulated venue implementing the Broker protocol.

    The quote generator, connection and subscriptions are here; the order side
    (queue, acceptance, matching, fills, account) is ``SimOrderDesk``.
    """

    name = "sim"

    def __init__(self, config: SimVenueConfig, clock: Clock) -> None:
        self._start = clock.now()  # before the state file is loaded, as slot times count from it
        super().__init__(config, clock)  # the books, the order side and the account
        self._rate = config.quotes_per_second * len(config.symbols)  # quote slots per second
        self._sigma = config.volatility_bp / 10_000.0  # of one quote's log step
        # Slot j is due at start + (j + 1) / rate. When that period is a whole number of
        # microseconds, integer multiples of it give the very same datetimes as the
        # float seconds do (timedelta rounds those to microseconds), at half the cost.
        period_us = 1_000_000 / self._rate
        self._slot_step: timedelta | None = (
            timedelta(microseconds=int(period_us)) if period_us.is_integer() else None
        )
        self._bad_quote_rate = config.bad_quote_rate
        self._next_slot = 0  # slot j is due at start + (j+1)/rate, for symbol j % n
        self._subscribed: set[str] = set()
        self.quotes_published = 0

    # -- connection ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        listener = self._require_listener()
        if self._connected:
            return
        self._connected = True
        # Start streaming from now: quotes missed while disconnected are not replayed.
        self._next_slot = max(self._next_slot, self._slots_due(self._clock.now()))
        listener.on_connection_changed(True, f"connected to simulated venue {self.account_id}")

    async def disconnect(self) -> None:
        listener = self._require_listener()
        if not self._connected:
            return
        self._connected = False
        listener.on_connection_changed(False, "disconnected from simulated venue")

    @property
    def account_id(self) -> str:
        return self._config.account_id

    # -- market data ---------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._config.symbols

    @property
    def subscribed(self) -> frozenset[str]:
        return frozenset(self._subscribed)

    def subscribe_quotes(self, symbols: Sequence[str]) -> None:
        for symbol in symbols:
            if symbol in self._book_by_symbol:
                self._subscribed.add(symbol)
            else:
                self._require_listener().on_broker_error(
                    ERR_NO_SECURITY_DEFINITION,
                    f"No security definition has been found for the request: {symbol}",
                    None,
                )

    def unsubscribe_quotes(self, symbols: Sequence[str]) -> None:
        self._subscribed.difference_update(symbols)

    def mid(self, symbol: str) -> float:
        """The venue's true mid, (bid+ask)/2 of its own book, which a malformed quote never shows.

        Positions, net liquidation and buying power are marked at this price.
        """
        return self._book(symbol).mark

    def set_mid(self, symbol: str, price: float) -> None:
        """Move the true price (snapped to the half-cent grid); the walk continues from here."""
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"set_mid({symbol!r}): price must be a positive number, got {price}")
        book = self._book(symbol)
        # Keep the relative spread and sizes until the next quote, which Book.step draws
        # from this price (a new block: the same shock on the same seed gives the same
        # quotes after it).
        relative = book.half_spread / book.walk_mid
        book.walk_mid = price
        book.half_spread = price * relative
        book.recentre()

    def shock(self, symbol: str, pct: float) -> None:
        """Jump the true price by ``pct`` percent (e.g. -10 for a 10% drop)."""
        if not pct > -100.0:
            raise ValueError(f"shock({symbol!r}): pct must be > -100, got {pct}")
        self.set_mid(symbol, self._book(symbol).mark * (1.0 + pct / 100.0))

    def _book(self, symbol: str) -> Book:
        try:
            return self._book_by_symbol[symbol]
        except KeyError:
            raise ValueError(
                f"unknown symbol {symbol!r}: the sim venue knows {', '.join(self.symbols)}"
            ) from None

    def _slots_due(self, now: datetime) -> int:
        """How many quote slots (0-based count) are due at or before ``now``."""
        elapsed = (now - self._start).total_seconds()
        return max(0, math.floor(elapsed * self._rate + PRICE_EPS))

    # -- the clock drive -----------------------------------------------------

    def advance_to(self, now: datetime) -> int:
        """Publish every quote due up to ``now`` and deliver due order events.

        Returns the number of quotes published.
        """
        due = self._slots_due(now)
        published = 0
        outer_time = self._venue_time  # restored for a call from inside a listener callback
        try:
            if due > self._next_slot and not self._connected:
                self._next_slot = due  # a disconnected venue streams nothing
            elif due > self._next_slot:
                self._skip_long_gap(now)
                # The per-quote loop (this and Book.step are the venue's whole cost per
                # quote). It re-reads the venue's state that a listener callback may
                # change: the next slot (a re-entrant advance_to), the connection, the
                # subscriptions, the pending orders and the listener itself.
                books = self._books
                n_symbols = len(books)
                subscribed = self._subscribed
                pending = self._pending
                start, rate, slot_step = self._start, self._rate, self._slot_step
                sigma, bad_rate = self._sigma, self._bad_quote_rate
                # With a whole-microsecond period, slot j's time start + step * (j + 1) is
                # also the previous slot's time + step: integer microseconds either way,
                # so the very same datetime, and the addition is a sixth of the cost.
                run_slot, run_ts = -2, start
                while True:
                    slot = self._next_slot
                    if slot >= due or not self._connected:
                        break
                    # Advance first so a re-entrant call cannot publish the slot twice.
                    self._next_slot = slot + 1
                    book = books[slot % n_symbols]
                    if book.symbol not in subscribed:
                        continue
                    if slot_step is None:
                        ts = start + timedelta(seconds=(slot + 1) / rate)
                    else:
                        if slot == run_slot + 1:
                            run_ts += slot_step
                        else:
                            run_ts = start + slot_step * (slot + 1)
                        run_slot = slot
                        ts = run_ts
                    if ts > now:
                        ts = now
                    if pending and pending[0][0] <= ts:
                        self._deliver_due(ts)
                    self._venue_time = ts
                    listener = self._listener
                    if listener is None:
                        listener = self._require_listener()  # raises the clear error
                    quote = book.step(sigma, ts)
                    if bad_rate > 0.0 and book.noise.random() < bad_rate:
                        quote = book.malformed(quote)
                    self.quotes_published += 1
                    published += 1
                    listener.on_quote(quote)
                    # Orders match the true book, never the malformed quote.
                    if book.working:
                        self._match_working(book, ts)
            self._deliver_due(now)
        finally:
            self._venue_time = outer_time
        return published

    def process_orders(self) -> None:
        """Deliver order events whose latency has elapsed by ``clock.now()``, without quotes."""
        self.deliver_orders_due(self._clock.now())

    def _skip_long_gap(self, now: datetime) -> None:
        elapsed = (now - self._start).total_seconds()
        # Slot j is at (j+1)/rate; keep those later than now - MAX_CATCHUP_SECONDS.
        first_kept = math.floor((elapsed - MAX_CATCHUP_SECONDS) * self._rate + PRICE_EPS)
        if first_kept > self._next_slot:
            logger.warning(
                "sim venue skipped {skipped} quote slots after a {gap:.1f}s pause",
                skipped=first_kept - self._next_slot,
                gap=elapsed - (self._next_slot + 1) / self._rate,
            )
            self._next_slot = first_kept

    async def run(self) -> None:
        """Drive the venue from the clock until cancelled (live use).

        Cancellation arrives at the sleep, between whole advances, so the venue's
        state is always consistent and there is nothing to clean up.
        """
        period = min(0.05, 1.0 / self._rate)
        while True:
            self.advance_to(self._clock.now())
            await asyncio.sleep(period)

    # -- extension points ----------------------------------------------------
    # With SimOrderDesk's, the venue's documented interface for a subclass that brings
    # its own quotes (core.brokers.replay.ReplayVenue); see there.

    def book(self, symbol: str) -> Book | None:
        """The venue's true book for ``symbol``; None for a symbol it does not list.

        Extension point: a venue that brings its own quotes sets the book's ``bid``,
        ``ask``, ``bid_size`` and ``ask_size`` before ``emit_quote``; orders trade
        against (and ``mid`` marks at) what the book shows.
        """
        return self._book_by_symbol.get(symbol)

    def streams(self, symbol: str) -> bool:
        """Whether a quote for ``symbol`` reaches the listener now: connected and subscribed."""
        return self._connected and symbol in self._subscribed

    def emit_quote(self, quote: Quote, match: Book | None = None) -> None:
        """Publish ``quote`` as the venue's own (counted in ``quotes_published``) at ``quote.ts``.

        Then, when ``match`` is given, its resting orders trade against what it shows.
        Extension point for a venue that brings its own quotes; orders placed from the
        listener's callbacks are stamped with ``quote.ts``. The venue's own quote loop
        (``advance_to``) does the same steps written out, as it runs for every quote.
        """
        ts = quote.ts
        outer_time = self._venue_time
        self._venue_time = ts
        try:
            self.quotes_published += 1
            self._require_listener().on_quote(quote)
            if match is not None and match.working:
                self._match_working(match, ts)
        finally:
            self._venue_time = outer_time
