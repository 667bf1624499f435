"""Target position → orders, order lifecycle, fills, reconciliation.

One working order per symbol at most: when the target changes while an order
works, that order is cancelled and the new delta is sent only once the cancel
is confirmed (cancel/replace without stacking). Orders are journaled before
they reach the broker; the send itself is fire-and-track from one sender task,
so the quote → order decision stays synchronous and never awaits I/O.

Memory stays bounded in a long, busy session: with ``order_history`` set, only the
working orders and the most recent ``order_history`` finished ones are kept as
objects (the journal holds them all). An order dropped from memory leaves one byte
(its final status) behind, so a late broker report about it is still judged like
one about a finished order, not as one about an unknown order. Execution ids are
never dropped: a broker may resend a session's executions (IB does on reconnect),
and a resent one must still be ignored.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime, timedelta

from loguru import logger

from core.brokers.base import Broker
from core.bus import EventBus
from core.clock import Clock
from core.events import (
    FillReceived,
    OrderRejected,
    OrderSubmitted,
    OrderUpdated,
    OrderUpdateRefused,
    PositionMismatch,
    ReconciliationCompleted,
)
from core.journal import Journal
from core.model import (
    BUY,
    CANCELLED,
    ENTRY,
    FILLED,
    GTC,
    LIMIT,
    MARKET,
    PENDING_CANCEL,
    PENDING_SUBMIT,
    REJECTED,
    SELL,
    STOP,
    SUBMITTED,
    Fill,
    InvalidOrderTransition,
    Order,
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderStatusUpdate,
    OrderType,
    Side,
    TargetPosition,
    role_of_order_id,
)
from core.portfolio import Portfolio
from core.protection import ProtectiveStops
from core.risk import RiskManager

# Fill-driven statuses come from our own fill accounting, never from the
# broker's status message alone (IB may report "Filled" before execDetails).
_FILL_STATUSES = frozenset({OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED})
# Statuses that say nothing new about an order that has already finished.
_NOTHING_NEW_WHEN_FINISHED = _FILL_STATUSES | {OrderStatus.SUBMITTED}
# A finished order dropped from memory is remembered by one byte: its final status.
_RETIRED_CODE = {OrderStatus.FILLED: 1, OrderStatus.CANCELLED: 2, OrderStatus.REJECTED: 3}
_RETIRED_STATUS = {code: status for status, code in _RETIRED_CODE.items()}
# What a held exit says: while the broker is disconnected (the console shows it), or
# while the position's stop is being made smaller for it.
QUEUED_DISCONNECTED = "Queued (disconnected)"
WAITING_FOR_STOP = "waiting for the stop to give way"
# Finished orders kept as objects when the system has a journal that holds them all:
# the console shows the latest 200, and a late broker report finds its order.
ORDER_HISTORY = 1_000


class ExecutionEngine:
    def __init__(
        self,
        bus: EventBus,
        clock: Clock,
        broker: Broker,
        journal: Journal,
        risk: RiskManager,
        portfolio: Portfolio,
        *,
        id_prefix: str = "TC",
        order_history: int | None = None,
        protection: ProtectiveStops | None = None,
    ) -> None:
        """``order_history``: finished orders kept as objects (None: every order).
        ``protection``: the positions' protective stops (default: none unless a strategy
        asks for one)."""
        self._bus = bus
        self._clock = clock
        self._broker = broker
        self._journal = journal
        self._risk = risk
        self._portfolio = portfolio
        start = clock.now()
        self._id_stem = f"{id_prefix}-{start:%y%m%d-%H%M%S}"
        self._seq = 0
        # Working orders and the most recent finished ones (all of them when
        # order_history is None), in the order they were created or restored.
        self.orders: dict[str, Order] = {}
        self.order_history = order_history
        self.orders_created = 0  # by this engine (restored orders not counted)
        self.orders_filled = 0  # orders that reached FILLED in this session
        # Counts every change to an order held in `orders` (new, status, fill, message):
        # the console's order list is rebuilt only when it moved.
        self.changes = 0
        self._finished: deque[str] = deque()  # ids of finished orders still in `orders`
        # Final status code (_RETIRED_CODE) of each of our own orders dropped from
        # `orders`, indexed by sequence number; other ids (restored from an earlier
        # session) by id.
        self._retired_seq = bytearray()
        self._retired_other: dict[str, OrderStatus] = {}
        # symbol -> client order id of its one working entry order (stop-losses and
        # take-profits rest beside it, in `protection`).
        self._working: dict[str, str] = {}
        self._targets: dict[str, TargetPosition] = {}
        self._cancel_before_send: set[str] = set()
        # Exits decided while the broker is disconnected: kept (not journaled, not sent)
        # until it is back and reconciled, then re-sized and sent (`release_held`).
        self.held: dict[str, Order] = {}
        # Held orders that a target made (re-sized to the target when released); an
        # intent's keeps its own quantity. Ids leave when the order is released.
        self._from_target: set[str] = set()
        # Orders queued for the sender and not yet given to the broker: a change to one
        # of them is made in place, it leaves with its new values.
        self._unsent: set[str] = set()
        self.protection = protection or ProtectiveStops(clock, portfolio)
        self.protection.attach(self)
        self._seen_exec_ids: set[str] = set()
        self._last_fill_at: dict[str, datetime] = {}
        # Each item is one order, or a bracket (the parent first, then its children).
        self._send_queue: asyncio.Queue[Order | tuple[Order, ...]] = asyncio.Queue()
        self.last_mismatches: tuple[PositionMismatch, ...] = ()
        self.last_reconcile_at: datetime | None = None

    # ------------------------------------------------------------- decisions
    def on_target(self, target: TargetPosition) -> None:
        if target.stop_pct is not None or target.trailing or target.take_profit_pct is not None:
            self.protection.set_plan(
                target.symbol,
                pct=target.stop_pct,
                trailing=target.trailing or None,
                take_profit_pct=target.take_profit_pct,
            )
        self._targets[target.symbol] = target
        self._rebalance(target.symbol)

    def on_intent(self, intent: OrderIntent) -> Order | None:
        """A strategy's explicit order; refused while another order works on the symbol.

        With ``stop_loss`` (and ``take_profit``) it is sent as a bracket when it opens a
        position from flat; otherwise the prices become the symbol's stop plan and the
        protective stop follows the fill."""
        symbol = intent.symbol
        if symbol in self._working:
            logger.info("intent skipped: order working", symbol=symbol)
            return None
        position = self._portfolio.quantity(symbol)
        approved = self._risk.review(intent, position)
        if approved <= 0:
            return None
        if intent.stop_loss is not None or intent.take_profit is not None:
            reference = intent.limit_price or intent.stop_price or self._reference_price(symbol)
            distance = None
            if intent.trailing and intent.stop_loss is not None and reference:
                distance = abs(reference - intent.stop_loss)
            self.protection.set_plan(
                symbol,
                pct=0.0,
                trailing=intent.trailing,
                stop_price=intent.stop_loss,
                take_profit_price=intent.take_profit,
                trail_distance=distance,
            )
            if position == 0 and intent.stop_loss is not None and self._broker.connected:
                return self._submit_bracket(intent, approved)
        return self._submit(intent, approved, position)

    def _reference_price(self, symbol: str) -> float | None:
        held = self._portfolio.positions.get(symbol)
        return None if held is None or held.mark_price != held.mark_price else held.mark_price

    def target(self, symbol: str) -> int | None:
        target = self._targets.get(symbol)
        return target.quantity if target else None

    def _rebalance(self, symbol: str) -> None:
        target = self._targets.get(symbol)
        if target is None:
            return
        position = self._portfolio.quantity(symbol)
        delta = target.quantity - position
        working_id = self._working.get(symbol)
        if working_id is not None:
            # Every quote of an order-driven strategy meets its working order here.
            order = self.orders[working_id]
            remaining = order.quantity - order.filled_quantity  # Order.signed_remaining
            signed = remaining if order.side is BUY else -remaining
            if signed != delta and order.status is not PENDING_CANCEL:
                self.cancel(working_id, "replaced: target changed")
            return
        if delta == 0:
            return
        side = BUY if delta > 0 else SELL
        intent = OrderIntent(symbol, side, abs(delta), MARKET, reason=target.reason)
        approved = self._risk.review(intent, position)
        if approved <= 0:
            # Not retried by itself: the next strategy target (or operator action) decides.
            del self._targets[symbol]
            return
        if approved < intent.quantity:
            # The clamp applies to the target, not just this order: chasing the rest in
            # further orders would walk around the per-order limit.
            clamped = position + approved if side is BUY else position - approved
            self._targets[symbol] = TargetPosition(symbol, clamped, f"{target.reason} (clamped)")
        self._submit(intent, approved, position, from_target=True)

    def _submit(
        self, intent: OrderIntent, quantity: int, position: int, *, from_target: bool = False
    ) -> Order:
        signed_position = position if intent.side is BUY else -position
        reduce_only = signed_position < 0 and quantity <= abs(position)
        order = self._new_order(intent, quantity, reduce_only)
        symbol = order.symbol
        self._working[symbol] = order.client_order_id
        if not self._broker.connected and reduce_only:
            # Risk let it through (it only reduces); the broker cannot take it now.
            self._hold(order, QUEUED_DISCONNECTED, from_target)
            logger.warning(
                "exit queued until the broker is back: {side} {qty} {symbol}",
                side=str(order.side),
                qty=order.quantity,
                symbol=symbol,
                client_order_id=order.client_order_id,
            )
            return order
        protection = self.protection
        if (
            position
            and (symbol in protection.stops or symbol in protection.take_profits)
            and order.side is (SELL if position > 0 else BUY)
        ):
            # An exit: the position's stop gives way first, and the exit leaves once the
            # broker has confirmed it, so stop and exit can never both fill in full.
            protection.sync(symbol)
            if protection.must_give_way(symbol, self.closing_quantity(symbol)):
                self._hold(order, WAITING_FOR_STOP, from_target)
                return order
        self._queue_for_sending(order)
        return order

    def _hold(self, order: Order, why: str, from_target: bool | None = None) -> None:
        if from_target:
            self._from_target.add(order.client_order_id)
        order.last_message = why
        self.held[order.client_order_id] = order
        self.changes += 1
        self._bus.publish(OrderUpdated(order.snapshot(), self._clock.now()))

    def _new_order(
        self,
        intent: OrderIntent,
        quantity: int,
        reduce_only: bool,
        *,
        role: OrderRole = ENTRY,
        parent_id: str | None = None,
        oca_group: str | None = None,
    ) -> Order:
        self._seq += 1
        self.orders_created += 1
        now = self._clock.now()
        suffix = "" if role is ENTRY else role.suffix
        # Positional, in Order's field order: every order passes here, and 21 keyword
        # arguments cost a microsecond more (the order-heavy bench).
        order = Order(
            f"{self._id_stem}-{self._seq:04d}{suffix}",
            intent.symbol,
            intent.side,
            quantity,
            intent.order_type,
            now,
            intent.limit_price,
            intent.reason,
            PENDING_SUBMIT,
            now,
            0,
            0.0,
            0.0,
            None,
            "",
            reduce_only,
            intent.stop_price,
            intent.tif,
            role,
            parent_id,
            oca_group,
        )
        self.orders[order.client_order_id] = order
        self.changes += 1
        return order

    def _queue_for_sending(self, group: Order | tuple[Order, ...]) -> None:
        if type(group) is Order:
            self._unsent.add(group.client_order_id)
            self._send_queue.put_nowait(group)
            return
        assert isinstance(group, tuple)
        for order in group:
            self._unsent.add(order.client_order_id)
        self._send_queue.put_nowait(group)

    def _submit_bracket(self, intent: OrderIntent, quantity: int) -> Order:
        """The entry as a bracket's parent, its stop-loss (and take-profit) as children."""
        parent = self._new_order(intent, quantity, False)
        self._working[parent.symbol] = parent.client_order_id
        oca = f"{parent.client_order_id}-OCA"
        assert intent.stop_loss is not None
        # (role, type, limit price, stop price) of each child
        exits: list[tuple[OrderRole, OrderType, float | None, float | None]] = [
            (OrderRole.STOP_LOSS, STOP, None, intent.stop_loss)
        ]
        if intent.take_profit is not None:
            exits.append((OrderRole.TAKE_PROFIT, LIMIT, intent.take_profit, None))
        children = [
            self._new_order(
                OrderIntent(
                    intent.symbol,
                    intent.side.opposite,
                    quantity,
                    order_type,
                    limit_price,
                    intent.reason,
                    stop_price=stop_price,
                    tif=GTC,
                ),
                quantity,
                True,
                role=role,
                parent_id=parent.client_order_id,
                oca_group=oca,
            )
            for role, order_type, limit_price, stop_price in exits
        ]
        for child in children:
            self.protection.adopt(child)
        self._queue_for_sending((parent, *children))
        return parent

    # ------------------------------------------------------------- the stop desk
    # What core.protection.ProtectiveStops asks of the engine (its StopDesk).
    @property
    def connected(self) -> bool:
        return self._broker.connected

    def is_unsent(self, client_order_id: str) -> bool:
        return client_order_id in self._unsent

    def is_working(self, client_order_id: str) -> bool:
        order = self.orders.get(client_order_id)
        return order is not None and order.is_working

    def stop_settled(self, symbol: str) -> None:
        """The broker answered a change to ``symbol``'s stop: a held exit may go now."""
        if self.held:
            self.release_ready(symbol)

    def closing_quantity(self, symbol: str) -> int:
        working_id = self._working.get(symbol)
        if working_id is None:
            return 0
        order = self.orders[working_id]
        position = self._portfolio.quantity(symbol)
        if position == 0 or order.side is (BUY if position > 0 else SELL):
            return 0
        return min(order.remaining, abs(position))

    def place_exit(
        self,
        symbol: str,
        side: Side,
        quantity: int,
        role: OrderRole,
        *,
        stop_price: float | None = None,
        limit_price: float | None = None,
        oca_group: str | None = None,
    ) -> Order | None:
        """A GTC protective stop-loss (or take-profit limit) closing ``quantity``."""
        order_type = STOP if role is OrderRole.STOP_LOSS else LIMIT
        reason = "protective stop" if role is OrderRole.STOP_LOSS else "take profit"
        intent = OrderIntent(
            symbol,
            side,
            quantity,
            order_type,
            limit_price,
            reason,
            stop_price=stop_price,
            tif=GTC,
        )
        position = self._portfolio.quantity(symbol)
        if self._risk.review(intent, position) < quantity:
            return None  # never: an order that only closes is allowed in every state
        order = self._new_order(intent, quantity, True, role=role, oca_group=oca_group)
        if oca_group is None:  # a group of its own, named after it (IB never reuses one)
            order.oca_group = f"{order.client_order_id}-OCA"
        self._queue_for_sending(order)
        return order

    def modify(
        self, order: Order, quantity: int, stop_price: float | None, limit_price: float | None
    ) -> None:
        """Resize or re-price a working order in place (same client order id)."""
        order.quantity = quantity
        order.stop_price = stop_price
        order.limit_price = limit_price
        now = self._clock.now()
        order.updated_at = now
        self.changes += 1
        self._bus.publish(OrderUpdated(order.snapshot(), now))
        if order.client_order_id in self._unsent:
            # Not at the broker yet: it leaves with these values. Nothing to answer.
            self.protection.on_answer(order)
            return
        self._broker.modify_order(order)

    # ------------------------------------------------------------- sending
    async def run(self) -> None:
        """Sender task: journal queued orders (one journal write for all), then send them."""
        while True:
            batch = [await self._send_queue.get()]
            while not self._send_queue.empty():
                batch.append(self._send_queue.get_nowait())
            try:
                await self._journal_and_send(batch)
            finally:
                for _ in batch:
                    self._send_queue.task_done()
            # Finished orders are forgotten here, off the quote path, as new ones go out
            # (memory grows only with new orders). This task starts after the start-up
            # recovery, which matches the broker's orders against every restored one.
            if self.order_history is not None and len(self._finished) > self.order_history:
                self._retire_finished(self.order_history)

    async def _journal_and_send(self, batch: list[Order | tuple[Order, ...]]) -> None:
        now = self._clock.now()
        sendable: list[Order | tuple[Order, ...]] = []
        orders: list[Order] = []
        for item in batch:
            if type(item) is Order:  # the common case, without a loop
                if self._still_to_send(item):
                    sendable.append(item)
                    orders.append(item)
                continue
            assert isinstance(item, tuple)
            kept = self._sendable_bracket(item)
            if kept:
                sendable.append(kept)
                orders.extend(kept)
        if not orders:
            return
        try:
            await self._journal.write_orders(orders)
        except Exception as exc:  # never send an order the journal does not hold
            logger.exception("journal write failed", orders=len(orders))
            for order in orders:
                self._reject(order, f"not sent: journal write failed ({exc})", None)
            return
        sent: list[Order] = []
        broker = self._broker
        publish = self._bus.publish
        try:
            for item in sendable:
                if type(item) is Order:
                    broker.place_order(item)
                    sent.append(item)
                    publish(OrderSubmitted(item.snapshot(), now))
                    continue
                assert isinstance(item, tuple)
                broker.place_bracket(item[0], item[1:])
                for order in item:
                    sent.append(order)
                    publish(OrderSubmitted(order.snapshot(), now))
        finally:
            _log_sent(sent)

    def _still_to_send(self, order: Order) -> bool:
        """Leaving the queue: whether ``order`` goes (not cancelled meanwhile)."""
        client_order_id = order.client_order_id
        self._unsent.discard(client_order_id)
        if client_order_id in self._cancel_before_send:
            self._cancel_before_send.discard(client_order_id)
            self._finish(order, CANCELLED, "cancelled before it was sent")
            return False
        return order.is_working

    def _sendable_bracket(self, group: tuple[Order, ...]) -> tuple[Order, ...]:
        """What of a bracket may still go: all of it, or nothing when its parent was
        cancelled before it left (its children with it)."""
        kept = [order for order in group if self._still_to_send(order)]
        if kept and kept[0].parent_id is not None:
            for child in kept:
                self._finish(child, CANCELLED, "parent cancelled before it was sent")
            return ()
        return tuple(kept)

    async def drain(self) -> None:
        """Wait until every queued order has been journaled and sent."""
        await self._send_queue.join()

    async def wait_no_working(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until no order works: cancels confirmed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._working and loop.time() < deadline:
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------- cancels
    def cancel(self, client_order_id: str, reason: str = "cancel requested") -> None:
        order = self.orders.get(client_order_id)
        if order is None or not order.is_working or order.status is OrderStatus.PENDING_CANCEL:
            return
        if self.held.pop(client_order_id, None) is not None:
            self._from_target.discard(client_order_id)
            self._finish(order, CANCELLED, f"{reason} (never sent: queued while disconnected)")
            return
        if order.status is OrderStatus.PENDING_SUBMIT and order.broker_order_id is None:
            self._cancel_before_send.add(client_order_id)
        now = self._clock.now()
        order.transition(OrderStatus.PENDING_CANCEL, now, reason)
        self.changes += 1
        self._bus.publish(OrderUpdated(order.snapshot(), now))
        if client_order_id not in self._cancel_before_send:
            self._broker.cancel_order(client_order_id)

    def resend_cancel(self, client_order_id: str, broker_order_id: str | None = None) -> bool:
        """Ask the broker again to cancel an order already waiting for its cancel: after a
        restart nobody knows whether the first request left before the process died."""
        order = self.orders.get(client_order_id)
        if order is None or order.status is not OrderStatus.PENDING_CANCEL:
            return False
        if broker_order_id:
            order.broker_order_id = broker_order_id
        self._cancel_before_send.discard(client_order_id)
        self._broker.cancel_order(client_order_id)
        return True

    def cancel_all(self, reason: str) -> int:
        """Cancel every working entry order. Protective stops stay at the broker: they
        only close, and they are what protects the positions when the console is gone."""
        ids = list(self._working.values())
        for client_order_id in ids:
            self.cancel(client_order_id, reason)
        return len(ids)

    def flatten(self, reason: str) -> list[str]:
        """Target zero everywhere; the closing orders are reduce-only so risk lets them through."""
        symbols = [s for s, p in self._portfolio.positions.items() if p.quantity != 0]
        symbols += [s for s in self._targets if s not in symbols]
        for symbol in symbols:
            self._targets[symbol] = TargetPosition(symbol, 0, reason)
        for symbol in symbols:
            self._rebalance(symbol)
        return [s for s in symbols if self._portfolio.quantity(s) != 0]

    def release_held(self) -> int:
        """The broker is back and reconciled: send each exit queued meanwhile, re-sized to
        the position now (never more than it), or drop it when nothing is left to close.
        Then the protective stops are looked at again. Returns how many were sent."""
        sent = sum(self.release_ready(order.symbol) for order in list(self.held.values()))
        self.protection.sync_all()
        return sent

    def release_ready(self, symbol: str) -> bool:
        """Send ``symbol``'s held exit if it can go now (connected, the stop out of its
        way), re-sized to the position; True when it was sent."""
        working_id = self._working.get(symbol)
        order = None if working_id is None else self.held.get(working_id)
        if order is None or not self._broker.connected:
            return False
        position = self._portfolio.quantity(symbol)
        from_target = order.client_order_id in self._from_target
        target = self._targets.get(symbol) if from_target else None
        closing = SELL if position > 0 else BUY
        wanted = order.quantity if target is None else abs(position - target.quantity)
        if target is not None and (target.quantity - position > 0) != (closing is BUY):
            wanted = 0  # the target is now on the other side of the position
        quantity = min(wanted, abs(position))
        if position == 0 or order.side is not closing or quantity <= 0:
            del self.held[order.client_order_id]
            self._from_target.discard(order.client_order_id)
            self._finish(order, CANCELLED, "not needed any more")
            return False
        if quantity != order.quantity:
            order.quantity = quantity
            self.changes += 1
        self.protection.sync(symbol)
        if self.protection.must_give_way(symbol, self.closing_quantity(symbol)):
            if order.last_message != WAITING_FOR_STOP:
                self._hold(order, WAITING_FOR_STOP)
            return False
        del self.held[order.client_order_id]
        self._from_target.discard(order.client_order_id)
        order.last_message = "sent after the stop gave way"
        # Published: the record of the order must say the quantity it leaves with.
        self.changes += 1
        self._bus.publish(OrderUpdated(order.snapshot(), self._clock.now()))
        self._queue_for_sending(order)
        return True

    def clear_targets(self) -> None:
        """Forget desired positions (on halt) so nothing is re-sent by itself on resume."""
        self._targets.clear()

    # ------------------------------------------------------------- broker reports
    def on_order_status(self, update: OrderStatusUpdate) -> None:
        order = self.orders.get(update.client_order_id)
        if order is None:
            retired = self._retired_status(update.client_order_id)
            if retired is not None:
                self._on_retired_status(update, retired)
                return
            self._refuse(update.client_order_id, f"status {update.status} for an unknown order")
            return
        if update.broker_order_id and order.broker_order_id != update.broker_order_id:
            order.broker_order_id = update.broker_order_id
        quantity = update.quantity
        if quantity is not None and quantity != order.quantity and order.is_working:
            # The broker resized it (a bracket child following its parent's fills, an
            # OCA member reduced by another's): our record follows the broker's.
            order.quantity = max(quantity, order.filled_quantity)
            self.changes += 1
            if order.filled_quantity and order.filled_quantity >= order.quantity:
                self._finish(order, FILLED, update.message or "filled")
                return
        status = update.status
        if status is REJECTED:
            self._reject(order, update.message or "rejected by broker", update.error_code)
            return
        if status in _FILL_STATUSES:
            if update.message:
                order.last_message = update.message
                self.changes += 1
            return
        if (status is SUBMITTED or status is PENDING_SUBMIT) and order.status is not PENDING_SUBMIT:
            # A late acknowledgement (or, after a restart, the broker's word that it has
            # the order) after fills or a cancel request changes nothing; for a stop it
            # answers a change (resize, trail).
            if order.role is not ENTRY:
                if update.message and update.message != order.last_message:
                    order.last_message = update.message
                    self.changes += 1
                self.protection.on_answer(order)
            return
        if status is CANCELLED:
            self._finish(order, CANCELLED, update.message or "cancelled")
            return
        self._transition(order, status, update.message)
        if order.role is not ENTRY:
            self.protection.on_answer(order)

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        order = self.orders.get(client_order_id) if client_order_id else None
        if order is not None and order.status is OrderStatus.PENDING_SUBMIT:
            self._reject(order, message, code)
        elif order is not None:
            order.last_message = f"[{code}] {message}"
            self.changes += 1
            self._bus.publish(OrderUpdated(order.snapshot(), self._clock.now()))
            if order.role is not ENTRY:
                self.protection.on_refused(order)  # a change it refused: sent again

    def on_fill(self, fill: Fill) -> bool:
        """Apply a fill exactly once (de-duplicated by execution id); returns whether new."""
        exec_id = fill.exec_id
        seen = self._seen_exec_ids
        if exec_id in seen:
            return False
        seen.add(exec_id)
        self._last_fill_at[fill.symbol] = self._clock.now()
        self._portfolio.apply_fill(fill)
        self._bus.publish(FillReceived(fill))
        order = self.orders.get(fill.client_order_id)
        if order is None:
            retired = self._retired_status(fill.client_order_id)
            if retired is not None:
                # The fill is booked (the money is real); the order it names had already
                # finished, so our view of that order was wrong: say so.
                self._refuse(
                    fill.client_order_id,
                    f"fill {exec_id} for an order that had already finished ({retired})",
                )
                return True
            self._refuse(fill.client_order_id, f"fill {exec_id} for an unknown order")
            return True
        order.apply_fill_quantity(fill.quantity, fill.price, fill.commission)
        if order.role is not ENTRY:
            # Stopped out (or took profit): the strategy's target is no longer chased;
            # its next target decides.
            self._targets.pop(order.symbol, None)
        if order.filled_quantity >= order.quantity:
            self._finish(order, FILLED, "filled")
        else:
            self._transition(order, OrderStatus.PARTIALLY_FILLED, "partially filled")
        if order.role is ENTRY:
            self.protection.sync(order.symbol)
        return True

    # ------------------------------------------------------------- helpers
    def _transition(self, order: Order, status: OrderStatus, message: str) -> bool:
        now = self._clock.now()
        try:
            changed = order.transition(status, now, message)
        except InvalidOrderTransition as exc:
            self._refuse(order.client_order_id, str(exc))
            return False
        self.changes += 1
        if changed and status in _RETIRED_CODE:  # it has finished just now
            self._finished.append(order.client_order_id)
            if status is FILLED:
                self.orders_filled += 1
        self._bus.publish(OrderUpdated(order.snapshot(), now))
        return changed

    def _finish(self, order: Order, status: OrderStatus, message: str) -> None:
        if self._transition(order, status, message) and order.status is status:
            if order.role is not ENTRY:
                self.protection.on_finished(order)
                return
            if self._working.get(order.symbol) == order.client_order_id:
                del self._working[order.symbol]
            self._rebalance(order.symbol)
            self.protection.sync(order.symbol)  # an exit that ended unfilled: back in full

    def _reject(self, order: Order, reason: str, code: int | None) -> None:
        if not self._transition(order, OrderStatus.REJECTED, reason):
            return
        logger.error(
            "order rejected: {reason}",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            code=code,
            reason=reason,
        )
        self._bus.publish(OrderRejected(order.snapshot(), reason, self._clock.now(), code))
        if order.role is not ENTRY:
            self.protection.on_finished(order, rejected=True)
            return
        if self._working.get(order.symbol) == order.client_order_id:
            del self._working[order.symbol]
        # The target stays, but it is not retried now: a broker reject repeats on retry.
        self._targets.pop(order.symbol, None)

    def _refuse(self, client_order_id: str, reason: str) -> None:
        logger.error(
            "order update refused: {reason}", client_order_id=client_order_id, reason=reason
        )
        self._bus.publish(OrderUpdateRefused(client_order_id, reason, self._clock.now()))

    # ------------------------------------------------------------- bounded memory
    def _retire_finished(self, keep: int) -> None:
        """Drop the oldest finished orders from `orders` until ``keep`` remain."""
        finished = self._finished
        while len(finished) > keep:
            client_order_id = finished.popleft()
            order = self.orders.pop(client_order_id, None)
            if order is None:
                continue
            self.changes += 1
            code = _RETIRED_CODE[order.status]
            seq = self._own_seq(client_order_id)
            if seq is None:
                self._retired_other[client_order_id] = order.status
                continue
            retired = self._retired_seq
            if seq >= len(retired):
                retired.extend(bytes(seq + 1 - len(retired)))
            retired[seq] = code

    def _own_seq(self, client_order_id: str) -> int | None:
        # Ids in broker reports are not necessarily ours: isdigit() alone admits "²".
        role = role_of_order_id(client_order_id)
        if role is not ENTRY:
            client_order_id = client_order_id[: -len(role.suffix)]
        stem, _, seq = client_order_id.rpartition("-")
        return int(seq) if stem == self._id_stem and seq.isascii() and seq.isdigit() else None

    def _retired_status(self, client_order_id: str) -> OrderStatus | None:
        """The final status of a finished order no longer in `orders`; None if unknown."""
        seq = self._own_seq(client_order_id)
        if seq is None:
            return self._retired_other.get(client_order_id)
        code = self._retired_seq[seq] if seq < len(self._retired_seq) else 0
        return _RETIRED_STATUS.get(code)

    def _on_retired_status(self, update: OrderStatusUpdate, final: OrderStatus) -> None:
        """A broker status for a finished order dropped from memory, judged as if it were
        still held: a repeat or an acknowledgement changes nothing, anything else is a
        transition the order state machine refuses."""
        if update.status in _NOTHING_NEW_WHEN_FINISHED or update.status is final:
            logger.debug(
                "late status for a finished order ignored",
                client_order_id=update.client_order_id,
                status=str(update.status),
                final=str(final),
            )
            return
        # The same text as for an order still held.
        refused = InvalidOrderTransition.between(update.client_order_id, final, update.status)
        self._refuse(update.client_order_id, str(refused))

    # ------------------------------------------------------------- recovery
    def mark_fill_seen(self, exec_id: str) -> None:
        """A fill already in the books (replayed from the journal) must not apply again."""
        self._seen_exec_ids.add(exec_id)

    def restore_order(self, order: Order) -> None:
        """Put back an order from the journal; a working one blocks its symbol as before."""
        self.orders[order.client_order_id] = order
        self.changes += 1
        if order.is_working and order.role is not ENTRY:
            self.protection.adopt(order)
        elif order.is_working:
            self._working[order.symbol] = order.client_order_id
        else:
            self._finished.append(order.client_order_id)
        seq = self._own_seq(order.client_order_id)
        if seq is not None:
            # A restart within the same second shares the id stem: continue the
            # sequence so no client order id is ever sent twice.
            self._seq = max(self._seq, seq)

    # ------------------------------------------------------------- queries
    def working_orders(self) -> list[Order]:
        """The working entry orders (one per symbol at most)."""
        return [self.orders[i] for i in self._working.values()]

    def open_orders(self) -> list[Order]:
        """Every order of ours that works at the broker: entries, stops, take-profits."""
        protection = self.protection
        return [
            *self.working_orders(),
            *protection.stops.values(),
            *protection.take_profits.values(),
            *protection.spares(),
        ]

    @property
    def working_count(self) -> int:
        return len(self._working)

    def reconcile(self, settle: timedelta = timedelta(0)) -> tuple[PositionMismatch, ...]:
        """Compare internal positions with the broker's; publish each mismatch.

        With ``settle``, symbols whose books are in motion — an order working, or a fill
        within ``settle`` — are left out: a broker's position report can trail its
        execution report, and that lag is not a mismatch.
        """
        now = self._clock.now()
        broker = self._broker.positions()
        symbols = set(broker) | {s for s, p in self._portfolio.positions.items() if p.quantity}
        if settle > timedelta(0):
            symbols -= set(self._working)
            symbols -= {s for s, at in self._last_fill_at.items() if now - at < settle}
        mismatches = tuple(
            PositionMismatch(s, self._portfolio.quantity(s), broker.get(s, 0), now)
            for s in sorted(symbols)
            if self._portfolio.quantity(s) != broker.get(s, 0)
        )
        for mismatch in mismatches:
            logger.warning(
                "position mismatch",
                symbol=mismatch.symbol,
                internal=mismatch.internal_quantity,
                broker=mismatch.broker_quantity,
            )
            self._bus.publish(mismatch)
        self.last_mismatches = mismatches
        self.last_reconcile_at = now
        self._bus.publish(ReconciliationCompleted(mismatches, now))
        return mismatches


def _log_sent(orders: list[Order]) -> None:
    """One log line per journaled batch: a line costs ~25 µs in loguru, and the order
    path sends one batch per loop turn. Each order's id, side, quantity, symbol and
    reason are in the line; a batch of one reads as it always has."""
    if not orders:
        return
    if len(orders) == 1:
        order = orders[0]
        logger.info(
            "order sent {side} {qty} {symbol}",
            client_order_id=order.client_order_id,
            side=str(order.side),
            qty=order.quantity,
            symbol=order.symbol,
            reason=order.reason,
        )
        return
    summary = "; ".join(
        f"{o.side} {o.quantity} {o.symbol} {o.client_order_id} ({o.reason})" for o in orders
    )
    # The summary goes in as a positional argument: formatted into the message, not
    # repeated as a field, and braces in a reason are not read as format fields.
    logger.info("orders sent ({count}): {}", summary, count=len(orders))
