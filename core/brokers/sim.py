"""The built-in simulated venue: synthetic quotes, order matching and a cash account.

It implements the ``Broker`` protocol so the same core runs against it as
against IB. Everything is driven by the injected clock (ARCHITECTURE rule 6):
``advance_to(now)`` generates the quotes that were due since the last call and
delivers the order events whose latency has elapsed, so replay and tests are
deterministic for a given seed; ``run()`` merely calls it in a loop in live use.

Simplifications worth knowing:
- Quotes are published only while connected; a disconnected venue drops the
  schedule (no burst of stale quotes on reconnect). Orders that reach the
  venue while it is disconnected are rejected with IB's code 504.
- The buying-power check looks at positions plus the new order, not at other
  working orders.
- Each symbol has its own RNG (and a second one for malformed quotes), so
  one symbol's stream does not depend on which others are subscribed or on
  ``bad_quote_rate``.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from core.brokers.base import BrokerListener
from core.brokers.sim_book import (
    ERR_CANCEL_NOT_CANCELLABLE,
    ERR_CANCEL_NOT_FOUND,
    ERR_NO_SECURITY_DEFINITION,
    ERR_NOT_CONNECTED,
    ERR_ORDER_REJECTED,
    FIRST_BROKER_ORDER_ID,
    MAX_CATCHUP_SECONDS,
    PRICE_EPS,
    TICK,
    Book,
    SimVenueConfig,
    VenueOrder,
)
from core.brokers.sim_state import FillLog, OrderLedger, SimStateLog, exec_id_for
from core.clock import Clock
from core.model import (
    BUY,
    CANCELLED,
    FILLED,
    LIMIT,
    PARTIALLY_FILLED,
    PENDING_SUBMIT,
    REJECTED,
    SUBMITTED,
    AccountValues,
    BrokerOrderState,
    Fill,
    Order,
    OrderStatus,
    OrderStatusUpdate,
    OrderType,
    Quote,
    Side,
)

_FINISHED = frozenset(s for s in OrderStatus if s.is_terminal)  # status.is_terminal, as a set

__all__ = [
    "ERR_CANCEL_NOT_CANCELLABLE",
    "ERR_CANCEL_NOT_FOUND",
    "ERR_NOT_CONNECTED",
    "ERR_NO_SECURITY_DEFINITION",
    "ERR_ORDER_REJECTED",
    "MAX_CATCHUP_SECONDS",
    "TICK",
    "SimVenue",
    "SimVenueConfig",
]


class SimVenue:
    """A deterministic simulated venue implementing the Broker protocol."""

    name = "sim"

    def __init__(self, config: SimVenueConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._listener: BrokerListener | None = None
        self._connected = False
        self._start = clock.now()
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
        self._books = [Book.new(config.seed, i, symbol) for i, symbol in enumerate(config.symbols)]
        self._book_by_symbol = {book.symbol: book for book in self._books}
        self._subscribed: set[str] = set()
        self._latency = timedelta(milliseconds=config.latency_ms)
        # What reaches the venue once the latency has elapsed: a heap of
        # (due, sequence, "place" | "cancel", client_order_id).
        self._pending: list[tuple[datetime, int, str, str]] = []
        self._action_seq = 0
        # Set while advance_to works through events, so an order placed from a
        # listener callback is stamped with the time of the event that caused it.
        self._venue_time: datetime | None = None
        # Every order ever received: working ones whole, finished ones packed (a run can
        # finish hundreds of thousands, and the venue still answers for each of them).
        self._orders = OrderLedger()
        # Each symbol's resting orders in time priority: the lists live on the books.
        self._working: dict[str, list[VenueOrder]] = {b.symbol: b.working for b in self._books}
        self._next_broker_id = FIRST_BROKER_ORDER_ID
        self._exec_seq = 0
        self._cash = config.starting_cash
        self._positions: dict[str, int] = {}
        self.fills = FillLog()  # every fill, oldest first; reads like a list of Fill
        self.quotes_published = 0
        self._state: SimStateLog | None = None
        if config.state_file is not None:
            self._state = SimStateLog(config.state_file)
            self._restore(self._state.load())

    # -- persistence ---------------------------------------------------------

    def _restore(self, records: list[dict[str, Any]]) -> None:
        """Rebuild orders, fills, cash and positions from the state file."""
        orders: dict[str, VenueOrder] = {}
        for r in records:
            kind = r["t"]
            if kind == "order":
                orders[r["id"]] = VenueOrder(
                    client_order_id=r["id"],
                    symbol=r["symbol"],
                    side=Side(r["side"]),
                    quantity=r["qty"],
                    order_type=OrderType(r["type"]),
                    limit_price=r["limit"],
                )
            elif kind == "status":
                order = orders[r["id"]]
                order.status = OrderStatus(r["status"])
                order.broker_order_id = r.get("broker_id") or order.broker_order_id
            elif kind == "fill":
                self._restore_fill(r, orders)
        for order in orders.values():
            self._orders.add(order)
            if order.broker_order_id is not None:
                self._next_broker_id = max(self._next_broker_id, int(order.broker_order_id) + 1)
            if order.status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
                self._working[order.symbol].append(order)
            elif order.status is OrderStatus.PENDING_SUBMIT:
                self._enqueue("place", order.client_order_id)  # accepted, not yet acted on
            else:
                self._orders.finish(order)
        if records:
            logger.info(
                "sim venue restored {orders} orders and {fills} fills",
                orders=len(self._orders),
                fills=len(self.fills),
                path=str(self._config.state_file),
            )

    def _restore_fill(self, r: dict[str, Any], orders: dict[str, VenueOrder]) -> None:
        fill = Fill(
            r["exec_id"],
            r["id"],
            r["symbol"],
            Side(r["side"]),
            r["qty"],
            r["price"],
            r["commission"],
            datetime.fromisoformat(r["ts"]),
        )
        order = orders[fill.client_order_id]
        order.filled += fill.quantity
        order.status = OrderStatus.FILLED if order.remaining == 0 else OrderStatus.PARTIALLY_FILLED
        self._book_account(fill.symbol, fill.signed_quantity, fill.price, fill.commission)
        self.fills.append(fill)
        self._exec_seq += 1
        book = self._book_by_symbol.get(fill.symbol)
        if book is not None:
            book.walk_mid = r["mid"]  # prices continue where the venue left off
            book.recentre()

    # -- setup ---------------------------------------------------------------

    @property
    def config(self) -> SimVenueConfig:
        return self._config

    def set_listener(self, listener: BrokerListener) -> None:
        self._listener = listener

    def _require_listener(self) -> BrokerListener:
        if self._listener is None:
            raise RuntimeError("SimVenue has no listener: call set_listener() before using it")
        return self._listener

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

    # -- orders --------------------------------------------------------------

    def place_order(self, order: Order) -> None:
        """Queue ``order``; its acknowledgement and fills arrive on a later advance."""
        client_order_id = order.client_order_id
        # add() raises ValueError on a duplicate id, before anything has happened.
        self._orders.add(
            VenueOrder(
                client_order_id,
                order.symbol,
                order.side,
                order.quantity,
                order.order_type,
                order.limit_price,
            )
        )
        if self._state is not None:
            self._state.append(
                {
                    "t": "order",
                    "id": client_order_id,
                    "symbol": order.symbol,
                    "side": str(order.side),
                    "qty": order.quantity,
                    "type": str(order.order_type),
                    "limit": order.limit_price,
                }
            )
        self._enqueue("place", client_order_id)

    def cancel_order(self, client_order_id: str) -> None:
        self._enqueue("cancel", client_order_id)

    def _enqueue(self, kind: str, client_order_id: str) -> None:
        placed_at = self._venue_time or self._clock.now()
        self._action_seq += 1
        due = placed_at + self._latency
        heapq.heappush(self._pending, (due, self._action_seq, kind, client_order_id))

    def _deliver_due(self, until: datetime) -> None:
        pending = self._pending
        while pending and pending[0][0] <= until:
            due, _, kind, client_order_id = heapq.heappop(pending)
            self._venue_time = due
            if kind == "place":
                order = self._orders.live.get(client_order_id)
                if order is not None:  # else it was cancelled before it reached the venue
                    self._activate(order, due)
            else:
                self._cancel(client_order_id, due)

    def _activate(self, order: VenueOrder, ts: datetime) -> None:
        listener = self._require_listener()
        if order.status is not PENDING_SUBMIT:
            return  # cancelled before it reached the venue
        rejection = self._rejection(order)
        if rejection is not None:
            reason, code = rejection
            order.status = REJECTED
            self._orders.finish(order)
            if self._state is not None:
                self._state.append(
                    {"t": "status", "id": order.client_order_id, "status": "Rejected"}
                )
            update = OrderStatusUpdate(
                order.client_order_id, REJECTED, ts, message=reason, error_code=code
            )
            listener.on_order_status(update)
            return
        order.broker_order_id = str(self._next_broker_id)
        self._next_broker_id += 1
        order.status = SUBMITTED
        if self._state is not None:
            self._state.append(
                {
                    "t": "status",
                    "id": order.client_order_id,
                    "status": "Submitted",
                    "broker_id": order.broker_order_id,
                }
            )
        book = self._book_by_symbol[order.symbol]
        book.working.append(order)
        listener.on_order_status(
            OrderStatusUpdate(order.client_order_id, SUBMITTED, ts, order.broker_order_id)
        )
        self.match_arriving_order(book, order, ts)

    def _rejection(self, order: VenueOrder) -> tuple[str, int] | None:
        """Why the venue refuses ``order`` and IB's error code; None when it accepts it."""
        if not self._connected:
            return "Not connected", ERR_NOT_CONNECTED
        reason = self.rejection_reason(order)
        return None if reason is None else (reason, ERR_ORDER_REJECTED)

    # -- extension points ----------------------------------------------------
    # The methods in this section are the venue's documented interface for subclasses:
    # a venue that brings its own quotes (core.brokers.replay.ReplayVenue) reuses the
    # order queue, matching and account through these and no underscore member. The
    # two hooks a subclass may override (``rejection_reason``, ``match_arriving_order``)
    # should call ``super()`` for the venue's own rules.

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

    @property
    def pending_actions(self) -> int:
        """Places and cancels sent but not yet delivered (waiting out the latency)."""
        return len(self._pending)

    def deliver_orders_due(self, until: datetime) -> None:
        """Deliver the place and cancel events whose latency has elapsed by ``until``.

        Extension point: a quote source calls this before it publishes a quote at
        ``until``, so orders reach the venue in time order with the quotes.
        """
        pending = self._pending
        if not pending or pending[0][0] > until:
            return  # nothing due: the common case, once per replayed quote
        outer_time = self._venue_time  # restored for a call from inside a listener callback
        try:
            self._deliver_due(until)
        finally:
            self._venue_time = outer_time

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

    def match_arriving_order(self, book: Book, order: VenueOrder, ts: datetime) -> None:
        """Hook: an accepted order has just reached ``book`` (and was acknowledged).

        The venue trades a marketable order against the book it arrives at, not the
        next quote. A subclass may override this to defer (ReplayVenue's next-quote
        mode leaves the order resting for the next quote) and call ``super()`` otherwise.
        """
        self._match_working(book, ts, only=order)

    def rejection_reason(self, order: VenueOrder) -> str | None:
        """Hook: why a connected venue refuses ``order`` (IB code 201); None when it accepts.

        Checks quantity, symbol, limit price and buying power (reducing exposure is
        always allowed). A subclass may add reasons of its own before calling ``super()``.
        """
        if order.quantity <= 0:
            return f"quantity must be positive, got {order.quantity}"
        book = self._book_by_symbol.get(order.symbol)
        if book is None:
            return (
                f"unknown symbol {order.symbol!r}: the sim venue trades {', '.join(self.symbols)}"
            )
        price = order.limit_price
        if order.order_type is LIMIT and not (
            price is not None and math.isfinite(price) and price > 0
        ):
            return f"limit order needs a positive limit price, got {price}"
        position = self._positions.get(order.symbol, 0)
        signed = order.quantity if order.side is BUY else -order.quantity  # side.sign * quantity
        if position * signed < 0 and order.quantity <= abs(position):
            return None  # reducing exposure is always allowed (fail safe)
        nlv = self._net_liquidation()  # without building the rest of AccountValues
        gross_after = self._gross_exposure() + (abs(position + signed) - abs(position)) * book.mark
        limit = self._config.buying_power_multiple * nlv
        if gross_after > limit + PRICE_EPS:
            return (
                f"insufficient buying power: gross exposure after the order would be "
                f"{gross_after:,.2f}, limit is {limit:,.2f} "
                f"({self._config.buying_power_multiple:g}x net liquidation {nlv:,.2f})"
            )
        return None

    # -- cancels and matching ------------------------------------------------

    def _cancel(self, client_order_id: str, ts: datetime) -> None:
        listener = self._require_listener()
        order = self._orders.live.get(client_order_id)
        if order is None:
            final = self._orders.finished_status(client_order_id)
            if final is None:
                listener.on_broker_error(
                    ERR_CANCEL_NOT_FOUND,
                    f"OrderId {client_order_id} that needs to be cancelled is not found; "
                    "cannot cancel",
                    client_order_id,
                )
            else:
                listener.on_broker_error(
                    ERR_CANCEL_NOT_CANCELLABLE,
                    f"Cancel attempted when order {client_order_id} is not in a cancellable "
                    f"state ({final}); cannot cancel",
                    client_order_id,
                )
            return
        order.status = CANCELLED
        self._orders.finish(order)
        if self._state is not None:
            self._state.append({"t": "status", "id": client_order_id, "status": "Cancelled"})
        working = self._working.get(order.symbol)
        if working is not None and order in working:
            working.remove(order)
        listener.on_order_status(
            OrderStatusUpdate(client_order_id, CANCELLED, ts, order.broker_order_id, "cancelled")
        )

    def _match_working(self, book: Book, ts: datetime, only: VenueOrder | None = None) -> None:
        working = book.working
        if only is not None:
            candidates: Sequence[VenueOrder] = (only,)
        elif working:
            # Time priority: earlier orders take the displayed size first. A copy, as a
            # fill's callbacks may place or cancel orders.
            candidates = tuple(working)
        else:
            return
        filled_any = False
        for order in candidates:
            if order.status not in _FINISHED:
                filled_any |= self._try_fill(order, book, ts)
        if filled_any:
            working[:] = [o for o in working if o.status not in _FINISHED]

    def _try_fill(self, order: VenueOrder, book: Book, ts: datetime) -> bool:
        limit = order.limit_price if order.order_type is LIMIT else None
        if order.side is BUY:
            if limit is not None and book.ask > limit + PRICE_EPS:
                return False
            quantity, price = min(order.remaining, book.ask_size), book.ask
            book.ask_size -= quantity  # displayed size is consumed until the next quote
        else:
            if limit is not None and book.bid < limit - PRICE_EPS:
                return False
            quantity, price = min(order.remaining, book.bid_size), book.bid
            book.bid_size -= quantity
        if quantity <= 0:
            return False
        self._fill(order, quantity, price, ts)
        return True

    def commission(self, quantity: int, price: float) -> float:
        """IB-like tiered fixed commission: per share, with a minimum and a % cap."""
        per_share = max(quantity * self._config.commission_per_share, self._config.commission_min)
        return min(per_share, self._config.commission_max_pct / 100.0 * quantity * price)

    def _fill(self, order: VenueOrder, quantity: int, price: float, ts: datetime) -> None:
        listener = self._require_listener()
        fee = self.commission(quantity, price)
        self._exec_seq += 1
        exec_seq = self._exec_seq
        exec_id = exec_id_for(exec_seq)  # unique: the journal de-duplicates fills by it
        side = order.side
        fill = Fill(exec_id, order.client_order_id, order.symbol, side, quantity, price, fee, ts)
        # Book the account before telling anyone, so a listener reading
        # account_values() inside on_fill sees the fill applied.
        order.filled += quantity
        if order.remaining == 0:
            order.status = FILLED
            self._orders.finish(order)
        else:
            order.status = PARTIALLY_FILLED
        if self._state is not None:
            self._state.append(
                {
                    "t": "fill",
                    "exec_id": exec_id,
                    "id": order.client_order_id,
                    "symbol": order.symbol,
                    "side": str(side),
                    "qty": quantity,
                    "price": price,
                    "commission": fee,
                    "ts": ts.isoformat(),
                    "mid": self._book_by_symbol[order.symbol].walk_mid,
                }
            )
        # fill.signed_quantity, without two property calls.
        self._book_account(order.symbol, quantity if side is BUY else -quantity, price, fee)
        self.fills.append(fill, exec_seq)
        listener.on_fill(fill)
        listener.on_order_status(
            OrderStatusUpdate(order.client_order_id, order.status, ts, order.broker_order_id)
        )

    def _book_account(self, symbol: str, signed: int, price: float, commission: float) -> None:
        self._cash -= signed * price + commission
        position = self._positions.get(symbol, 0) + signed
        if position:
            self._positions[symbol] = position
        else:
            self._positions.pop(symbol, None)  # positions() reports non-zero holdings only

    # -- account -------------------------------------------------------------

    def order_states(self) -> dict[str, BrokerOrderState]:
        return self._orders.states()

    def executions(self) -> list[Fill]:
        return list(self.fills)

    def close(self) -> None:
        if self._state is not None:
            self._state.close()

    def positions(self) -> dict[str, int]:
        return dict(self._positions)

    def _gross_exposure(self) -> float:
        return sum(abs(qty) * self._book_by_symbol[s].mark for s, qty in self._positions.items())

    def _net_liquidation(self) -> float:
        market_value = sum(qty * self._book_by_symbol[s].mark for s, qty in self._positions.items())
        return self._cash + market_value

    def account_values(self) -> AccountValues:
        nlv = self._net_liquidation()
        return AccountValues(
            account_id=self._config.account_id,
            cash=self._cash,
            net_liquidation=nlv,
            buying_power=self._config.buying_power_multiple * nlv - self._gross_exposure(),
        )
