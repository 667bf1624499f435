"""The simulated venue's order side: latency queue, acceptance, matching, fills, account.

``SimOrderDesk`` is the base of ``SimVenue`` (core.brokers.sim), which adds the
quote generator, the connection and the subscriptions. Orders sent to the venue
wait out its latency in a queue, are accepted or refused when they reach it, and
trade against the venue's true books (``Book``), never a published quote. The
venue's memory of orders and fills is ``core.brokers.sim_state``; its cash and
positions are ``core.brokers.sim_account``. Its simplifications (504 while
disconnected, buying power without other working orders) are listed in
core.brokers.sim.

Order types (IB's): MKT and LMT trade as they reach the book and against every later
quote. STP and STP LMT rest (Submitted) until their trigger is reached, then work
exactly as a MKT or as a LMT at ``limit_price`` (same fill rules, displayed size and
partial fills). A stop triggers on the **last trade price**: ``quote.last`` when the
quote carried one (replayed quotes may), else the mid of the venue's book, which is
what the venue's own synthetic quotes give (they carry no last trade). A buy stop
triggers at a price at or above its stop, a sell stop at or below; a stop already
reached when it arrives (or is modified) triggers at once. DAY and GTC orders both
rest until filled or cancelled, and across a restart from the state file (the venue
has no session close).

Brackets (``place_bracket``, or ``place_order`` of an order whose ``parent_id`` names a
working order): the children are acknowledged (Submitted) and held off the book
until the parent fills ("bracket: held until P fills"); each parent fill makes them
work for that many more shares ("bracket: working N"). A parent cancelled or rejected
with nothing filled cancels its children; one cancelled after a partial fill leaves
them for what filled.
OCA groups (orders sharing ``oca_group``, bracket children included): a member's fill
of q shares reduces every other working member by q ("OCA: reduced to N"), cancelling
one left with nothing to fill. These rules are in core.brokers.sim_book, shared with
the restore, which derives them again from the fills.

``modify_order`` goes through the same latency queue as places and cancels (so they
arrive in order) and changes a working order's quantity (never below what has
filled), stop and limit price, acknowledged as Submitted "modified". A stop that has
triggered stays triggered, as at IB: a new stop price is kept and reported but moves
nothing; a triggered stop-limit's new limit applies. Refused with IB's codes: 104 for
a filled order, 134 for a cancelled or rejected one or a bad new value, 135 for an id
the venue never received.
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
    ERR_MODIFY_FAILED,
    ERR_MODIFY_FILLED,
    ERR_MODIFY_NOT_FOUND,
    ERR_NOT_CONNECTED,
    ERR_ORDER_REJECTED,
    FIRST_BROKER_ORDER_ID,
    PRICE_EPS,
    Book,
    SimVenueConfig,
    VenueOrder,
    orphan_children,
    reduce_oca,
    release_children,
)
from core.brokers.sim_state import (
    FillLog,
    OrderLedger,
    SimStateLog,
    exec_id_for,
    link_child,
    restore,
)
from core.clock import Clock
from core.model import (
    BUY,
    CANCELLED,
    DAY,
    FILLED,
    LIMIT,
    MARKET,
    PARTIALLY_FILLED,
    PENDING_SUBMIT,
    REJECTED,
    STOP,
    SUBMITTED,
    AccountValues,
    BrokerOrderState,
    Fill,
    Order,
    OrderStatus,
    OrderStatusUpdate,
)

_FINISHED = frozenset(s for s in OrderStatus if s.is_terminal)  # status.is_terminal, as a set
# A modification waiting out the latency: the new quantity, stop price and limit price.
_Change = tuple[int, float | None, float | None]


def _discard(orders: list[VenueOrder], order: VenueOrder) -> None:
    """Remove ``order`` itself from ``orders`` (by identity; a no-op when it is not there)."""
    for i, other in enumerate(orders):
        if other is order:
            del orders[i]
            return


def _positive(price: float | None) -> bool:
    return price is not None and math.isfinite(price) and price > 0


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
        # (due, sequence, "place" | "cancel" | "modify", client_order_id, change or None).
        self._pending: list[tuple[datetime, int, str, str, _Change | None]] = []
        self._action_seq = 0
        # Set while the venue works through events, so an order placed from a
        # listener callback is stamped with the time of the event that caused it.
        self._venue_time: datetime | None = None
        # Every order ever received: working ones whole, finished ones packed (a run can
        # finish hundreds of thousands, and the venue still answers for each of them).
        self._orders = OrderLedger()
        self._next_broker_id = FIRST_BROKER_ORDER_ID
        self._exec_seq = 0
        self._account = SimAccount(config, self._book_by_symbol)
        self.fills = FillLog()  # every fill, oldest first; reads like a list of Fill
        # Brackets and OCA groups of working orders (empty unless any were placed).
        self._children: dict[str, list[VenueOrder]] = {}  # working parent -> its children
        self._oca: dict[str, list[VenueOrder]] = {}  # group -> its members
        self._refused: dict[str, str] = {}  # child received for a parent not working -> why
        self._state: SimStateLog | None = None
        if config.state_file is not None:
            self._state = SimStateLog(config.state_file)
            self._restore(self._state.load())

    def _restore(self, records: list[dict[str, Any]]) -> None:
        """Rebuild orders, fills, cash and positions from the state file."""
        restored = restore(records, self._orders, self.fills, self._book_by_symbol, self._account)
        self._next_broker_id = restored.next_broker_id
        self._exec_seq = restored.exec_seq
        self._children = restored.children
        self._oca = restored.oca_groups
        self._refused = restored.refused
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
        """Queue ``order``; its acknowledgement and fills arrive on a later advance.

        An order whose ``parent_id`` names a working order of the venue is that order's
        bracket child (see ``place_bracket``); one naming an order that is not working is
        refused when it reaches the venue.
        """
        client_order_id = order.client_order_id
        kind = order.order_type
        venue_order = VenueOrder(
            client_order_id,
            order.symbol,
            order.side,
            order.quantity,
            kind,
            order.limit_price,
        )
        if kind is not MARKET:
            if kind is not STOP:
                venue_order.match_limit = order.limit_price  # LMT, STP LMT
            venue_order.stop_price = order.stop_price
        if order.tif is not DAY:
            venue_order.tif = order.tif
        # add() raises ValueError on a duplicate id, before anything has happened.
        self._orders.add(venue_order)
        if order.parent_id is not None or order.oca_group is not None:
            self._link(venue_order, order.parent_id, order.oca_group)
        if self._state is not None:
            self._state.record_order(venue_order)
        self._enqueue("place", client_order_id)

    def place_bracket(self, parent: Order, children: Sequence[Order]) -> None:
        """Queue a bracket: ``parent``, then its ``children`` (each naming it in ``parent_id``).

        The children are acknowledged when they reach the venue but held off the book
        until the parent fills; they then work for what it has filled (see the module
        docstring). A child that does not name the parent, or an id the venue has seen,
        is a ValueError before anything is queued.
        """
        ids = [parent.client_order_id, *(child.client_order_id for child in children)]
        seen = [cid for cid in ids if cid in self._orders]
        if seen or len(set(ids)) != len(ids):
            raise ValueError(f"duplicate client_order_id in bracket {ids}: {seen or ids}")
        for child in children:
            if child.parent_id != parent.client_order_id:
                raise ValueError(
                    f"bracket child {child.client_order_id} names parent {child.parent_id!r}, "
                    f"not {parent.client_order_id!r}"
                )
        self.place_order(parent)
        for child in children:
            self.place_order(child)

    def _link(self, order: VenueOrder, parent_id: str | None, oca_group: str | None) -> None:
        if parent_id is not None:
            order.parent_id = parent_id
            reason = link_child(order, self._orders.live.get(parent_id), self._children)
            if reason is not None:
                self._refused[order.client_order_id] = reason
        if oca_group is not None:
            order.oca_group = oca_group
            self._oca.setdefault(oca_group, []).append(order)

    def cancel_order(self, client_order_id: str) -> None:
        self._enqueue("cancel", client_order_id)

    def modify_order(self, order: Order) -> None:
        """Queue a change of the working order ``order.client_order_id``: its new quantity,
        stop and limit price (see the module docstring); answered on a later advance."""
        change = (order.quantity, order.stop_price, order.limit_price)
        self._enqueue("modify", order.client_order_id, change)

    def _enqueue(self, kind: str, client_order_id: str, change: _Change | None = None) -> None:
        placed_at = self._venue_time or self._clock.now()
        self._action_seq += 1
        due = placed_at + self._latency
        heapq.heappush(self._pending, (due, self._action_seq, kind, client_order_id, change))

    def _deliver_due(self, until: datetime) -> None:
        pending = self._pending
        while pending and pending[0][0] <= until:
            due, _, kind, client_order_id, change = heapq.heappop(pending)
            self._venue_time = due
            if kind == "place":
                order = self._orders.live.get(client_order_id)
                if order is not None:  # else it was cancelled before it reached the venue
                    self._activate(order, due)
            elif change is None:
                self._cancel(client_order_id, due)
            else:
                self._modify(client_order_id, change, due)

    def _activate(self, order: VenueOrder, ts: datetime) -> None:
        listener = self._require_listener()
        if order.status is not PENDING_SUBMIT:
            return  # cancelled before it reached the venue
        rejection = self._rejection(order)
        if rejection is not None:
            reason, code = rejection
            order.status = REJECTED
            self._retire(order)
            if self._state is not None:
                self._state.record_status(order.client_order_id, "Rejected")
            update = OrderStatusUpdate(
                order.client_order_id, REJECTED, ts, message=reason, error_code=code
            )
            listener.on_order_status(update)
            if self._children:
                self._parent_finished(order, "rejected", ts)
            return
        order.broker_order_id = str(self._next_broker_id)
        self._next_broker_id += 1
        order.status = SUBMITTED
        if self._state is not None:
            self._state.record_status(order.client_order_id, "Submitted", order.broker_order_id)
        message = ""
        if order.parent_id is not None:  # a bracket child: says whether it works yet
            if order.held:
                message = f"bracket: held until {order.parent_id} fills"
            else:
                message = f"bracket: working {order.quantity}"
        listener.on_order_status(
            OrderStatusUpdate(
                order.client_order_id,
                SUBMITTED,
                ts,
                order.broker_order_id,
                message,
                quantity=None if order.held else order.quantity,
            )
        )
        if order.held:
            return  # acknowledged, inactive until its parent fills
        book = self._book_by_symbol[order.symbol]
        self._rest(order, book)
        self.match_arriving_order(book, order, ts)

    def _rest(self, order: VenueOrder, book: Book) -> None:
        """Put an accepted order on its book (a stop not yet triggered among its stops too)."""
        book.working.append(order)
        if order.stop_price is not None and order.waits_for_trigger:
            order.armed = not order.stop_reached(book.trigger_price)
            book.stops.append(order)

    def _rejection(self, order: VenueOrder) -> tuple[str, int] | None:
        """Why the venue refuses ``order`` and IB's error code; None when it accepts it."""
        if not self._connected:
            return "Not connected", ERR_NOT_CONNECTED
        if self._refused:
            refused = self._refused.pop(order.client_order_id, None)
            if refused is not None:
                return refused, ERR_ORDER_REJECTED
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

    def stop_fill_price(self, book: Book, order: VenueOrder, at_quote: bool) -> float | None:
        """Hook: the price a stop that has just triggered fills at; None to trade it against
        the book like a market (or limit) order, the venue's rule.

        ``at_quote``: the trigger came with a quote (not on arrival or modification).
        ReplayVenue's bar mode overrides this (a stop fills at its price, or at the open
        of a bar that gapped through it). A stop-limit fills at that price only within
        its limit; otherwise it rests as a limit order.
        """
        return None

    def rejection_reason(self, order: VenueOrder) -> str | None:
        """Hook: why a connected venue refuses ``order`` (IB code 201); None when it accepts.

        Checks quantity, symbol, limit and stop prices and buying power (reducing
        exposure is always allowed, and so is a bracket child: it only ever closes what
        its parent opened). A subclass may add reasons before calling ``super()``.
        """
        if order.quantity <= 0:
            return f"quantity must be positive, got {order.quantity}"
        book = self._book_by_symbol.get(order.symbol)
        if book is None:
            symbols = ", ".join(self._config.symbols)
            return f"unknown symbol {order.symbol!r}: the sim venue trades {symbols}"
        kind = order.order_type
        if kind is not MARKET:
            name = "limit" if kind is LIMIT else "stop" if kind is STOP else "stop-limit"
            if kind.has_limit and not _positive(order.limit_price):
                return f"{name} order needs a positive limit price, got {order.limit_price}"
            if kind.is_stop and not _positive(order.stop_price):
                return f"{name} order needs a positive stop price, got {order.stop_price}"
        if order.parent_id is not None:
            return None
        signed = order.quantity if order.side is BUY else -order.quantity  # side.sign * quantity
        return self._account.buying_power_refusal(order.symbol, signed, book.mark)

    # -- cancels, modifications and matching -----------------------------------

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
        self._retire(order)
        if self._state is not None:
            self._state.record_status(client_order_id, "Cancelled")
        listener.on_order_status(
            OrderStatusUpdate(client_order_id, CANCELLED, ts, order.broker_order_id, "cancelled")
        )
        if self._children:
            self._parent_finished(order, "cancelled", ts)

    def _retire(self, order: VenueOrder) -> None:
        """``order`` has just reached a terminal status: off its book, out of its group, packed."""
        self._orders.finish(order)
        book = self._book_by_symbol.get(order.symbol)
        if book is not None:
            _discard(book.working, order)
            if book.stops:
                _discard(book.stops, order)
        if order.oca_group is not None:
            self._leave_oca(order)

    def _leave_oca(self, order: VenueOrder) -> None:
        group = order.oca_group
        members = self._oca.get(group) if group is not None else None
        if members is not None:
            _discard(members, order)
            if not members:
                del self._oca[group]  # type: ignore[arg-type]  # not None when members is

    def _parent_finished(self, parent: VenueOrder, how: str, ts: datetime) -> None:
        """``parent`` was cancelled or rejected: with nothing filled, so are its children;
        after a partial fill they stay, working for what it filled."""
        children = self._children.pop(parent.client_order_id, None)
        if children is None or parent.filled:
            return
        listener = self._require_listener()
        message = f"cancelled: parent {parent.client_order_id} {how} with nothing filled"
        for child in orphan_children(children):
            self._retire(child)
            if self._state is not None:
                self._state.record_status(child.client_order_id, "Cancelled")
            listener.on_order_status(
                OrderStatusUpdate(
                    child.client_order_id, CANCELLED, ts, child.broker_order_id, message
                )
            )

    def _modify(self, client_order_id: str, change: _Change, ts: datetime) -> None:
        listener = self._require_listener()
        order = self._orders.live.get(client_order_id)
        if order is None:
            final = self._orders.finished_status(client_order_id)
            if final is None:
                code = ERR_MODIFY_NOT_FOUND
                message = f"Can't find order with ID = {client_order_id}; cannot modify"
            elif final is FILLED:
                code = ERR_MODIFY_FILLED
                message = f"Can't modify a filled order ({client_order_id})"
            else:
                code = ERR_MODIFY_FAILED
                message = f"Modify order failed: order {client_order_id} is {final}"
            listener.on_broker_error(code, message, client_order_id)
            return
        quantity, stop, limit = change
        kind = order.order_type
        problem = None
        if quantity <= 0:
            problem = f"quantity must be positive, got {quantity}"
        elif kind.has_limit and not _positive(limit):
            problem = f"a positive limit price is needed, got {limit}"
        elif kind.is_stop and not _positive(stop):
            problem = f"a positive stop price is needed, got {stop}"
        if problem is not None:
            listener.on_broker_error(
                ERR_MODIFY_FAILED,
                f"Modify order failed: {problem}; order {client_order_id} works as it was",
                client_order_id,
            )
            return
        order.quantity = max(quantity, order.filled)
        if kind.is_stop:
            order.stop_price = stop  # a triggered stop keeps it, but it moves nothing
        if kind.has_limit:
            order.limit_price = order.match_limit = limit
        if self._state is not None:
            self._state.record_modify(
                client_order_id, order.quantity, order.stop_price, order.limit_price
            )
        if order.remaining == 0:
            # Cut to what has filled: nothing is left to work. Its children (if it is a
            # bracket parent) stay, working for what it filled.
            order.status = FILLED
            self._retire(order)
            self._children.pop(client_order_id, None)
            if self._state is not None:
                self._state.record_status(client_order_id, "Filled")
            message = f"modified: quantity {order.quantity} is what has filled"
            listener.on_order_status(
                OrderStatusUpdate(
                    client_order_id,
                    FILLED,
                    ts,
                    order.broker_order_id,
                    message,
                    quantity=order.quantity,
                )
            )
            return
        listener.on_order_status(
            OrderStatusUpdate(client_order_id, SUBMITTED, ts, order.broker_order_id, "modified")
        )
        if order.status is PENDING_SUBMIT or order.held:
            return  # not on a book yet: the new values apply when it gets there
        book = self._book_by_symbol[order.symbol]
        if order.waits_for_trigger:
            order.armed = not order.stop_reached(book.trigger_price)
        # A stop moved to where the price already is triggers now; a limit moved into
        # the market trades now, as on arrival.
        self.match_arriving_order(book, order, ts)

    def _match_working(self, book: Book, ts: datetime, only: VenueOrder | None = None) -> None:
        if book.stops:
            self._match_with_stops(book, ts, only)  # the only cost of stops to a book without
            return
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

    def _match_with_stops(self, book: Book, ts: datetime, only: VenueOrder | None) -> None:
        """``_match_working`` for a book with stops waiting: trigger those reached first."""
        at_quote = only is None
        price = book.trigger_price
        for order in tuple(book.stops) if only is None else (only,):
            if order.status in _FINISHED or not order.waits_for_trigger:
                continue
            if order.stop_reached(price):
                self._trigger(order, book, ts, at_quote)
        working = book.working
        for order in (only,) if only is not None else tuple(working):
            if order.status not in _FINISHED and not order.waits_for_trigger:
                self._try_fill(order, book, ts)
        working[:] = [o for o in working if o.status not in _FINISHED]

    def _trigger(self, order: VenueOrder, book: Book, ts: datetime, at_quote: bool) -> None:
        """``order``'s stop was reached: from now on it works as a market or limit order."""
        order.triggered = True
        _discard(book.stops, order)
        working = book.working
        _discard(working, order)
        working.append(order)  # its time priority is its trigger's
        if self._state is not None:
            self._state.record_trigger(order.client_order_id)
        price = self.stop_fill_price(book, order, at_quote)
        if price is None:
            return  # it trades against the book like any market or limit order
        limit = order.match_limit
        if order.side is BUY:
            if limit is not None and price > limit + PRICE_EPS:
                return  # a stop-limit beyond its limit rests as a limit order
            quantity = min(order.remaining, book.ask_size)
            book.ask_size -= quantity
        else:
            if limit is not None and price < limit - PRICE_EPS:
                return
            quantity = min(order.remaining, book.bid_size)
            book.bid_size -= quantity
        if quantity > 0:
            self._fill(order, quantity, price, ts)

    def _try_fill(self, order: VenueOrder, book: Book, ts: datetime) -> bool:
        limit = order.match_limit
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
        if order.oca_group is not None or self._children:
            self._after_fill(order, quantity, ts)

    def _after_fill(self, order: VenueOrder, quantity: int, ts: datetime) -> None:
        """A bracket parent's children follow its fill; an OCA member's fill shrinks the others."""
        listener = self._require_listener()
        client_order_id = order.client_order_id
        children = self._children.get(client_order_id)
        if children is not None:
            if order.status is FILLED:
                del self._children[client_order_id]
            released = []
            for child, now in release_children(children, quantity):
                if child.status is PENDING_SUBMIT:
                    continue  # it goes on the book when it reaches the venue
                message = f"bracket: working {child.quantity}"
                listener.on_order_status(
                    OrderStatusUpdate(
                        child.client_order_id,
                        SUBMITTED,
                        ts,
                        child.broker_order_id,
                        message,
                        quantity=child.quantity,
                    )
                )
                if now:
                    self._rest(child, self._book_by_symbol[child.symbol])
                    released.append(child)
            for child in released:  # all on the book before any trades (OCA siblings)
                if child.status not in _FINISHED:
                    self.match_arriving_order(self._book_by_symbol[child.symbol], child, ts)
        group = order.oca_group
        members = self._oca.get(group) if group is not None else None
        if members:
            for other in reduce_oca(members, order, quantity):
                other_id = other.client_order_id
                if other.status is CANCELLED:
                    self._retire(other)
                    if self._state is not None:
                        self._state.record_status(other_id, "Cancelled")
                    message = f"OCA: cancelled, {client_order_id} filled {quantity} in {group}"
                    listener.on_order_status(
                        OrderStatusUpdate(other_id, CANCELLED, ts, other.broker_order_id, message)
                    )
                    if self._children:
                        self._parent_finished(other, "cancelled", ts)
                elif other.status is not PENDING_SUBMIT:  # else its acknowledgement says
                    message = f"OCA: reduced to {other.quantity}"
                    listener.on_order_status(
                        OrderStatusUpdate(
                            other_id,
                            SUBMITTED,
                            ts,
                            other.broker_order_id,
                            message,
                            quantity=other.quantity,
                        )
                    )
        if order.status is FILLED and group is not None:
            self._leave_oca(order)

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
