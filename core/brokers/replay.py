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
        symbol = quote.symbol
        book = self.book(symbol)
        self.deliver_orders_due(quote.ts)
        if book is None or not self.streams(symbol):
            return
        if _is_sane(quote):
            book.bid, book.ask = quote.bid, quote.ask
            book.bid_size = quote.bid_size or self._unknown_size
            book.ask_size = quote.ask_size or self._unknown_size
            self._priced.add(symbol)
            self.emit_quote(quote, match=book)
        else:
            self.emit_quote(quote)  # passed on, but the book keeps its last sane prices

    def deliver_due(self) -> int:
        """Deliver order events due by ``clock.now()``; returns how many were delivered."""
        before = self.pending_actions
        if not before:
            return 0  # the common case, once per replayed quote: keep it cheap
        self.process_orders()
        return before - self.pending_actions

    # -- SimVenue behaviour replaced (through its extension points) ---------------

    def advance_to(self, now: datetime) -> int:
        """No quotes of its own: only order events due by ``now`` are delivered."""
        self.deliver_orders_due(now)
        return 0

    async def run(self) -> None:
        """Nothing to drive: the backtest driver publishes the recorded quotes."""
        return None

    def match_arriving_order(self, book: Book, order: VenueOrder, ts: datetime) -> None:
        # In next-quote mode the order waits for the next published quote instead.
        if self._match_on_arrival:
            super().match_arriving_order(book, order, ts)

    def rejection_reason(self, order: VenueOrder) -> str | None:
        symbol = order.symbol
        if symbol not in self._priced and self.book(symbol) is not None:
            return f"no market data replayed for {symbol} yet"
        return super().rejection_reason(order)


def _is_sane(q: Quote) -> bool:
    return math.isfinite(q.bid) and math.isfinite(q.ask) and 0 < q.bid <= q.ask
