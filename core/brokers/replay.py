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

Stops (STP, STP LMT) trigger as in ``SimVenue``: on the quote's last trade price
when it carries one, else on its mid; a buy stop at or above its stop price, a sell
stop at or below. Recorded quotes: a triggered stop then trades like a market order
(a stop-limit like a limit) against that quote. Bars (``bar_seconds`` given: the
driver replays each bar as the quotes of ``core.backtest.bar_quotes``, whose prices
trace open, low/high, close within the bar's interval), a stop triggered by a quote:
- that is the first of its bar (the bar opened beyond the stop: it gapped through)
  fills at that price, the bar's open;
- that is later in the bar, when the stop rested on the untriggered side before it
  (the price moved through the stop inside the bar's range), fills at the stop price;
- otherwise (it reached the venue already beyond its stop, in next-quote mode) trades
  like a market order against the quote.
No spread is charged on the first two (the price is the bar's own). A stop-limit fills
at that price only within its limit, else rests as a limit order. A stop already
beyond its price when it arrives with ``match_on_arrival`` trades like a market order
at once.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from core.brokers.sim import SimVenue, SimVenueConfig
from core.brokers.sim_book import Book, VenueOrder
from core.clock import Clock
from core.model import Quote

# Shown as depth when a quote carries none: large enough that any order the risk
# limits allow fills in full.
UNKNOWN_SIZE = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # bar intervals are aligned to it, as the core's


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
        bar_seconds: int | None = None,
    ) -> None:
        if unknown_size <= 0:
            raise ValueError(f"ReplayVenue unknown_size must be > 0, got {unknown_size}")
        if bar_seconds is not None and bar_seconds <= 0:
            raise ValueError(f"ReplayVenue bar_seconds must be > 0, got {bar_seconds}")
        super().__init__(config, clock)
        self._match_on_arrival = match_on_arrival
        self._unknown_size = unknown_size
        # Bars: the quotes trace each bar's path, and stops fill by the bar rules above.
        self._bar = None if bar_seconds is None else timedelta(seconds=bar_seconds)
        self._bar_of: dict[str, int] = {}  # symbol -> interval of its last sane quote
        self._opens_bar = False  # the quote being published is its symbol's first in a bar
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
            book.last = quote.last  # what stops trigger on, when the quote carries it
            if self._bar is not None:
                interval = (quote.ts - _EPOCH) // self._bar
                self._opens_bar = self._bar_of.get(symbol) != interval
                self._bar_of[symbol] = interval
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

    def stop_fill_price(self, book: Book, order: VenueOrder, at_quote: bool) -> float | None:
        # Bars: the bar's open when it gapped through the stop, else the stop price when
        # the bar's path moved through it (see the module docstring).
        if self._bar is None or not at_quote:
            return super().stop_fill_price(book, order, at_quote)
        if self._opens_bar:
            return book.trigger_price
        if order.armed:
            return order.stop_price
        return super().stop_fill_price(book, order, at_quote)

    def rejection_reason(self, order: VenueOrder) -> str | None:
        symbol = order.symbol
        if symbol not in self._priced and self.book(symbol) is not None:
            return f"no market data replayed for {symbol} yet"
        return super().rejection_reason(order)


def _is_sane(q: Quote) -> bool:
    return math.isfinite(q.bid) and math.isfinite(q.ask) and 0 < q.bid <= q.ask
