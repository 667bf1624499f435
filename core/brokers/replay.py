"""A venue that replays recorded quotes instead of a random walk (backtest and replay).

It *is* the simulated venue — same order queue, latency, buying-power check,
matching against displayed size, IB-like commission and cash account — with
the quote source swapped: the driver (``core.backtest``) hands it each recorded
quote with ``publish`` in time order and it never generates quotes of its own.

Matching:
- ``match_on_arrival=True`` (recorded quotes, and bars with fills at the close):
  as in ``SimVenue``, a marketable order trades against the book it arrives at,
  and resting orders against every later quote.
- ``match_on_arrival=False`` (bars, fills at the next open): an order that
  arrives is acknowledged but only trades against the *next* quote published for
  its symbol. The driver decides on a bar at the bar's end, so that next quote is
  the following bar's opening quote.

A quote of size 0 means "depth unknown" (bars carry none, some feeds report
none): the book then shows ``unknown_size`` shares so the order is not left
unfilled for want of a number. Malformed quotes are passed on (the core's feed
drops them, as it would live) but never move the book orders trade against.
"""

from __future__ import annotations

import math
from datetime import datetime

from core.brokers.sim import SimVenue, SimVenueConfig
from core.brokers.sim_book import Book, VenueOrder
from core.clock import Clock
from core.model import Quote

# Shown as depth when a quote carries none: large enough that any order the risk
# limits allow fills in full.
UNKNOWN_SIZE = 1_000_000_000


class ReplayVenue(SimVenue):
    """The simulated venue, fed recorded quotes by a driver through ``publish``."""

    name = "replay"

    def __init__(
        self,
        config: SimVenueConfig,
        clock: Clock,
        *,
        match_on_arrival: bool = True,
        unknown_size: int = UNKNOWN_SIZE,
    ) -> None:
        if unknown_size <= 0:
            raise ValueError(f"ReplayVenue unknown_size must be > 0, got {unknown_size}")
        super().__init__(config, clock)
        self._match_on_arrival = match_on_arrival
        self._unknown_size = unknown_size
        # Symbols whose book holds a replayed price. Until then the book holds the
        # random walk's opening price, which must never be traded or marked against.
        self._priced: set[str] = set()

    @property
    def match_on_arrival(self) -> bool:
        return self._match_on_arrival

    # -- the driver's interface ---------------------------------------------------

    def publish(self, quote: Quote) -> None:
        """Deliver order events due by ``quote.ts``, then the quote, then match resting orders.

        Quotes for symbols the venue does not list, or not subscribed, are ignored
        (a recording may hold more symbols than the run trades).
        """
        book = self._book_by_symbol.get(quote.symbol)
        outer_time = self._venue_time
        try:
            self._deliver_due(quote.ts)
            if book is None or not self._connected or quote.symbol not in self._subscribed:
                return
            sane = _is_sane(quote)
            if sane:
                book.bid, book.ask = quote.bid, quote.ask
                book.bid_size = quote.bid_size or self._unknown_size
                book.ask_size = quote.ask_size or self._unknown_size
                self._priced.add(quote.symbol)
            self._venue_time = quote.ts
            self.quotes_published += 1
            self._require_listener().on_quote(quote)
            if sane:
                self._match_working(book, quote.ts)
        finally:
            self._venue_time = outer_time

    def deliver_due(self) -> int:
        """Deliver order events due by ``clock.now()``; returns how many were delivered."""
        before = len(self._pending)
        if not before:
            return 0  # the common case, once per replayed quote: keep it cheap
        self.process_orders()
        return before - len(self._pending)

    @property
    def pending_actions(self) -> int:
        """Places and cancels sent but not yet delivered (waiting out the latency)."""
        return len(self._pending)

    # -- SimVenue behaviour replaced ---------------------------------------------

    def advance_to(self, now: datetime) -> int:
        """No quotes of its own: only order events due by ``now`` are delivered."""
        outer_time = self._venue_time
        try:
            self._deliver_due(now)
        finally:
            self._venue_time = outer_time
        return 0

    async def run(self) -> None:
        """Nothing to drive: the backtest driver publishes the recorded quotes."""
        return None

    def _match_working(self, book: Book, ts: datetime, only: VenueOrder | None = None) -> None:
        # SimVenue calls this with ``only`` when an order arrives; in next-quote
        # mode the order waits for the next published quote instead.
        if only is not None and not self._match_on_arrival:
            return
        super()._match_working(book, ts, only)

    def _rejection_reason(self, order: VenueOrder) -> str | None:
        if order.symbol in self._book_by_symbol and order.symbol not in self._priced:
            return f"no market data replayed for {order.symbol} yet"
        return super()._rejection_reason(order)


def _is_sane(q: Quote) -> bool:
    return math.isfinite(q.bid) and math.isfinite(q.ask) and 0 < q.bid <= q.ask
