"""The simulated venue's order side: latency queue, acceptance, matching, fills, account.

``SimOrderDesk`` is the base of ``SimVenue`` (core.brokers.sim), which adds the
quote generator, the connection and the subscriptions. Orders sent to the venue
wait out its latency in a queue, are accepted or refused when they reach it, and
trade against the venue's true books (``Book``), never a published quote. The
venue's memory of orders and fills is ``core.brokers.sim_state``; its cash and
positions are ``core.brokers.sim_account``. Its simplifications (504 while
disconnected, buying power without other working orders) are listed in
core.brokers.sim.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from core.brokers.base import BrokerListener
from core.brokers.sim_account import SimAccount
from core.brokers.sim_book import (
    ERR_CANCEL_NOT_CANCELLABLE,
    ERR_CANCEL_NOT_FOUND,
    ERR_NOT_CONNECTED,
    ERR_ORDER_REJECTED,
    FIRST_BROKER_ORDER_ID,
    PRICE_EPS,
    Book,
    SimVenueConfig,
    VenueOrder,
)
from core.brokers.sim_state import FillLog, OrderLedger, SimStateLog, exec_id_for, restore
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
)

_FINISHED = frozenset(s for s in OrderStatus if s.is_terminal)  # status.is_terminal, as a set


class SimOrderDesk:
    """The order side of the simulated venue, over its true books; see the module docstring."""

    def __init__(self, config: SimVenueConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._listener: BrokerListener | None = None
        self._connected = False  # orders reaching a disconnected venue are rejected
        self._books = [Book.new(config.seed, i, symbol) for i, symbol in enumerate(config.symbols)]
        self._book_by_symbol = {book.symbol: book for book in self._books}
        self._latency = timedelta(milliseconds=config.latency_ms)
        # What reaches the venue once the latency has elapsed: a heap of
        # (due, sequence, "place" | "cancel", client_order_id).
        self._pending: list[tuple[datetime, int, str, str]] = []
        self._action_seq = 0
        # Set while the venue works through events, so an order placed from a
        # listener callback is stamped with the time of the event that caused it.
        self._venue_time: datetime | None = None
        # Every order ever received: working ones whole, finished ones packed (a run can
        # finish hundreds of thousands, and the venue still answers for each of them).
        self._orders = OrderLedger()
        # Each symbol's resting orders in time priority: the lists live on the books.
        self._working: dict[str, list[VenueOrder]] = {b.symbol: b.working for b in self._books}
        self._next_broker_id = FIRST_BROKER_ORDER_ID
        self._exec_seq = 0
        self._account = SimAccount(config, self._book_by_symbol)
        self.fills = FillLog()  # every fill, oldest first; reads like a list of Fill
        self._state: SimStateLog | None = None
        if config.state_file is not None:
            self._state = SimStateLog(config.state_file)
            self._restore(self._state.load())

    def _restore(self, records: list[dict[str, Any]]) -> None:
        """Rebuild orders, fills, cash and positions from the state file."""
        restored = restore(records, self._orders, self.fills, self._book_by_symbol, self._account)
        self._next_broker_id = restored.next_broker_id
        self._exec_seq = restored.exec_seq
        for client_order_id in restored.to_place:
            self._enqueue("place", client_order_id)
        if records:
            logger.info(
                "sim venue restored {orders} orders and {fills} fills",
                orders=len(self._orders),
                fills=len(self.fills),
                path=str(self._config.state_file),
            )

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

    # -- orders --------------------------------------------------------------

    def place_order(self, order: Order) -> None:
        """Queue ``order``; its acknowledgement and fills arrive on a later advance."""
        client_order_id = order.client_order_id
        # add() raises ValueError on a duplicate id, before anything has happened.
        venue_order = VenueOrder(
            client_order_id,
            order.symbol,
            order.side,
            order.quantity,
            order.order_type,
            order.limit_price,
        )
        self._orders.add(venue_order)
        if self._state is not None:
            self._state.record_order(venue_order)
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
                self._state.record_status(order.client_order_id, "Rejected")
            update = OrderStatusUpdate(
                order.client_order_id, REJECTED, ts, message=reason, error_code=code
            )
            listener.on_order_status(update)
            return
        order.broker_order_id = str(self._next_broker_id)
        self._next_broker_id += 1
        order.status = SUBMITTED
        if self._state is not None:
            self._state.record_status(order.client_order_id, "Submitted", order.broker_order_id)
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
    # The venue's documented interface for subclasses (with SimVenue's ``book``,
    # ``streams`` and ``emit_quote``): a venue that brings its own quotes
    # (core.brokers.replay.ReplayVenue) reuses the order queue, matching and account
    # through these and no underscore member. The two hooks a subclass may override
    # (``rejection_reason``, ``match_arriving_order``) should call ``super()`` for the
    # venue's own rules.

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
            symbols = ", ".join(self._config.symbols)
            return f"unknown symbol {order.symbol!r}: the sim venue trades {symbols}"
        price = order.limit_price
        if order.order_type is LIMIT and not (
            price is not None and math.isfinite(price) and price > 0
        ):
            return f"limit order needs a positive limit price, got {price}"
        signed = order.quantity if order.side is BUY else -order.quantity  # side.sign * quantity
        return self._account.buying_power_refusal(order.symbol, signed, book.mark)

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
            self._state.record_status(client_order_id, "Cancelled")
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
        return self._account.commission(quantity, price)

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
            self._state.record_fill(fill, self._book_by_symbol[order.symbol].walk_mid)
        # fill.signed_quantity, without two property calls.
        self._account.book_fill(order.symbol, quantity if side is BUY else -quantity, price, fee)
        self.fills.append(fill, exec_seq)
        listener.on_fill(fill)
        listener.on_order_status(
            OrderStatusUpdate(order.client_order_id, order.status, ts, order.broker_order_id)
        )

    # -- account -------------------------------------------------------------

    def order_states(self) -> dict[str, BrokerOrderState]:
        return self._orders.states()

    def executions(self) -> list[Fill]:
        return list(self.fills)

    def close(self) -> None:
        if self._state is not None:
            self._state.close()

    def positions(self) -> dict[str, int]:
        return dict(self._account.positions)

    def account_values(self) -> AccountValues:
        return self._account.values()
