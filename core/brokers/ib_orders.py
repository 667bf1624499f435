"""Our orders at IB: placement (brackets too), modification, fills with commissions,
resync. How our orders read in IB's terms is ``core.brokers.ib_order_fields``.

Every order carries our client order id in ``orderRef``; IB's orderId and
permId are kept beside it (reported as ``broker_order_id`` "orderId/permId").
The tracker outlives connections: ib_async forgets its trades on disconnect,
so after a reconnect open orders are re-adopted by orderRef (never re-sent)
and executions missed meanwhile are delivered, each exactly once.

Modification (``modify``) sends the very IB order again (same orderId and OCA group:
IB refuses an OCA group revision) with the new size and prices. TWS's openOrder /
orderStatus echo is reported once as SUBMITTED "modified"; an error meanwhile (or a
warning meaning "not applied": 105, 110, 321, 329, 2102) goes to ``on_broker_error``
with the client order id and the order works as before (ib_async's marking the trade
cancelled is undone). A child whose parent has finished goes without ``parentId``
(IB answers 135 "Can't find order with id" for a parent it no longer works).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ib_async import Order as IbOrder
from loguru import logger

from core.brokers.base import BrokerListener
from core.brokers.ib_errors import (
    CANCEL_NOT_FOUND,
    MODIFY_FILLED,
    MODIFY_IN_PROGRESS,
    MODIFY_REFUSING_WARNINGS,
    NOT_CONNECTED,
    ORDER_CANCELLED,
    ORDER_NOT_FOUND,
    is_warning,
)
from core.brokers.ib_order_fields import (
    ACKNOWLEDGED,
    CANCELLED,
    IB_DONE,
    MODIFY_ANSWER_SECONDS,
    PendingModify,
    TrackedOrder,
    bracket_ib_orders,
    broker_order_id,
    broker_state_of,
    fill_of,
    ib_order_of,
    map_ib_status,
    price_problem,
)
from core.clock import Clock
from core.model import (
    BrokerOrderState,
    Fill,
    Order,
    OrderStatus,
    OrderStatusUpdate,
)

__all__ = ["IbOrderTracker", "broker_order_id", "map_ib_status"]


@dataclass(slots=True)
class _PendingFill:
    fill: Fill
    seen_at: float


class IbOrderTracker:
    """Places, modifies and cancels orders through ib_async and reports what IB says."""

    def __init__(
        self,
        ib: Any,
        clock: Clock,
        listener: Callable[[], BrokerListener],
        *,
        commission_wait_seconds: float,
    ) -> None:
        self._ib = ib
        self._clock = clock
        self._listener = listener
        self._commission_wait = commission_wait_seconds
        self._orders: dict[str, TrackedOrder] = {}
        self._by_ib_id: dict[int, str] = {}
        self._pending: dict[str, _PendingFill] = {}  # exec id -> fill waiting for commission
        self._delivered: set[str] = set()
        self.account = ""

    # ------------------------------------------------------------- requests
    def place(self, order: Order, contract: Any) -> None:
        problem = price_problem(order)
        if problem is not None:
            self.reject_now(order, f"not sent: {problem}", None)
            return
        self._send(order, contract, ib_order_of(order, self.account))

    def place_bracket(self, parent: Order, children: Sequence[Order], contract: Any) -> None:
        """Parent and children as one bracket (see the module docstring)."""
        orders = [parent, *children]
        problems = [f"{o.client_order_id}: {p}" for o in orders if (p := price_problem(o))]
        if problems:
            for order in orders:
                self.reject_now(order, f"bracket not sent: {'; '.join(problems)}", None)
            return
        try:
            ids = [self._ib.client.getReqId() for _ in orders]
        except ConnectionError:
            for order in orders:
                self.reject_now(order, "not connected to TWS: bracket not sent", NOT_CONNECTED)
            return
        ib_orders = bracket_ib_orders(orders, ids, self.account)
        for n, (order, ib_order) in enumerate(zip(orders, ib_orders, strict=True)):
            if self._send(order, contract, ib_order):
                continue
            for rest in orders[n + 1 :]:
                self.reject_now(rest, "not connected to TWS: bracket not sent", NOT_CONNECTED)
            for sent in orders[:n]:
                # Held by TWS untransmitted, if it got there at all: cancelled on reconnect.
                self._orders[sent.client_order_id].cancel_requested = True
            return
        for ib_order in ib_orders:
            # All transmitted now (ib_async would cancel a "PendingSubmit, not transmitted"
            # order locally only, while TWS works it).
            ib_order.transmit = True

    def _send(self, order: Order, contract: Any, ib_order: IbOrder) -> bool:
        tracked = TrackedOrder.of(order, contract)
        self._orders[order.client_order_id] = tracked
        try:
            trade = self._ib.placeOrder(contract, ib_order)
        except ConnectionError:
            self.reject_now(order, "not connected to TWS: order not sent", NOT_CONNECTED)
            return False
        tracked.trade = trade
        tracked.ib_order_id = trade.order.orderId
        self._by_ib_id[tracked.ib_order_id] = order.client_order_id
        logger.info(
            "order placed at IB",
            client_order_id=order.client_order_id,
            ib_order_id=tracked.ib_order_id,
            order_type=ib_order.orderType,
            tif=ib_order.tif,
        )
        return True

    def reject_now(self, order: Order, reason: str, code: int | None) -> None:
        """Refuse ``order`` without sending it; reported on the next loop turn, after the send."""
        tracked = self._orders.setdefault(order.client_order_id, TrackedOrder.of(order, None))
        tracked.reported = OrderStatus.REJECTED
        update = OrderStatusUpdate(
            order.client_order_id, OrderStatus.REJECTED, self._clock.now(), None, reason, code
        )
        asyncio.get_running_loop().call_soon(self._listener().on_order_status, update)

    def modify(self, order: Order, contract: Any, *, connected: bool) -> None:
        """Send ``order``'s new quantity / prices for the IB order of the same id."""
        client_order_id = order.client_order_id
        tracked = self._orders.get(client_order_id)
        trade = tracked.trade if tracked is not None else None
        if tracked is None or (trade is None and tracked.reported is None):
            self._refuse_later(ORDER_NOT_FOUND, client_order_id, "no order with this id at IB")
            return
        if tracked.done or (trade is not None and trade.orderStatus.status in IB_DONE):
            code = MODIFY_FILLED if tracked.filled >= tracked.quantity else ORDER_NOT_FOUND
            state = "filled" if code == MODIFY_FILLED else "no longer working"
            self._refuse_later(code, client_order_id, f"the order is {state} at IB")
            return
        if not connected or trade is None:
            self._refuse_later(
                NOT_CONNECTED, client_order_id, "not connected to IB; not sent (send it again)"
            )
            return
        if tracked.modify is not None:
            if self._clock.monotonic() - tracked.modify.sent_at < MODIFY_ANSWER_SECONDS:
                self._refuse_later(
                    MODIFY_IN_PROGRESS, client_order_id, "an earlier change is still unanswered"
                )
                return
            logger.warning("modification never answered by IB", client_order_id=client_order_id)
            tracked.undo_modify()
        problem = price_problem(order)
        if problem is not None:
            self._refuse_later(ORDER_NOT_FOUND, client_order_id, problem)
            return
        ib_order = trade.order
        pending = PendingModify(
            order.quantity,
            order.limit_price if order.order_type.has_limit else None,
            order.stop_price if order.order_type.is_stop else None,
            (ib_order.totalQuantity, ib_order.lmtPrice, ib_order.auxPrice, ib_order.parentId),
            trade.orderStatus.status,
            tracked.quantity,
            self._clock.monotonic(),
        )
        ib_order.totalQuantity = order.quantity
        if pending.limit_price is not None:
            ib_order.lmtPrice = float(pending.limit_price)
        if pending.stop_price is not None:
            ib_order.auxPrice = float(pending.stop_price)
        ib_order.transmit = True
        if ib_order.parentId and not self._parent_working(ib_order.parentId):
            ib_order.parentId = 0
        tracked.modify = pending
        try:
            self._ib.placeOrder(tracked.contract or contract or trade.contract, ib_order)
        except ConnectionError:
            tracked.undo_modify()
            self._refuse_later(NOT_CONNECTED, client_order_id, "not connected to TWS; not sent")
            return
        logger.info(
            "order modification sent to IB",
            client_order_id=client_order_id,
            ib_order_id=tracked.ib_order_id,
            quantity=order.quantity,
            stop_price=pending.stop_price,
            limit_price=pending.limit_price,
        )

    def _parent_working(self, parent_ib_id: int) -> bool:
        ref = self._by_ib_id.get(parent_ib_id)
        parent = self._orders.get(ref) if ref else None
        if parent is not None and parent.trade is not None:
            return not parent.done and parent.trade.orderStatus.status not in IB_DONE
        return any(t.order.orderId == parent_ib_id for t in self._ib.openTrades())

    def _refuse_later(self, code: int, client_order_id: str, reason: str) -> None:
        # On the next loop turn: the core may change the order again from its handler.
        message = f"order {client_order_id} not modified: {reason}"
        logger.warning(message, client_order_id=client_order_id, code=code)
        asyncio.get_running_loop().call_soon(
            self._listener().on_broker_error, code, message, client_order_id
        )

    def cancel(self, client_order_id: str, *, connected: bool) -> None:
        tracked = self._orders.get(client_order_id)
        if tracked is None or tracked.done:
            self._listener().on_broker_error(
                CANCEL_NOT_FOUND,
                f"cancel {client_order_id}: no working order with this id at IB",
                client_order_id,
            )
            return
        tracked.cancel_requested = True
        if not connected or tracked.trade is None:
            # Sent after the next reconnect, once the order has been re-adopted.
            logger.warning("cancel deferred until reconnected", client_order_id=client_order_id)
            return
        try:
            self._ib.cancelOrder(tracked.trade.order)
        except ConnectionError:
            logger.warning("cancel deferred: not connected", client_order_id=client_order_id)

    def ids(self, client_order_id: str) -> tuple[int, int] | None:
        """IB's (orderId, permId) of one of our orders."""
        tracked = self._orders.get(client_order_id)
        return None if tracked is None else (tracked.ib_order_id, tracked.perm_id)

    # ------------------------------------------------------------- IB events
    def on_order_status(self, trade: Any) -> None:
        tracked = self._tracked_for(trade)
        if tracked is None:
            return
        self._note_ids(tracked, trade)
        status = trade.orderStatus.status
        if trade.log and trade.log[-1].errorCode and status in (*CANCELLED, "ValidationError"):
            return  # ib_async's reaction to an error; on_error reports it with IB's text
        if tracked.modify is not None:
            self._check_modify(tracked, trade, echoed=False)
        was_done = tracked.done
        self._report(tracked, status, "", 0)
        if status == "Inactive" and not was_done and tracked.done:
            self._cancel_for_safety(tracked)
        self._settle_reduced(tracked)

    def on_open_order(self, trade: Any) -> None:
        """TWS's openOrder echo (after a placement or a modification)."""
        tracked = self._tracked_for(trade)
        if tracked is None:
            return
        self._note_ids(tracked, trade)
        if tracked.modify is not None:
            self._check_modify(tracked, trade, echoed=True)
        size = round(trade.order.totalQuantity)
        if tracked.ib_quantity < 0 or tracked.modify is not None:
            tracked.ib_quantity = size if tracked.ib_quantity < 0 else tracked.ib_quantity
        elif size != tracked.ib_quantity and not tracked.done:
            tracked.ib_quantity = size
            self._report_resized(tracked, trade, size)

    def _report_resized(self, tracked: TrackedOrder, trade: Any, size: int) -> None:
        """IB changed the size it works (a bracket child released by its parent's fill,
        an OCA member reduced by another's): a SUBMITTED update saying so, worded as
        the sim venue words it."""
        group = trade.order.ocaGroup
        sibling_filled = group and any(
            t.filled and t.trade is not None and t.trade.order.ocaGroup == group
            for t in self._orders.values()
            if t is not tracked
        )
        if sibling_filled:
            self._submitted(tracked, f"OCA: reduced to {size}", size)
        elif trade.order.parentId:
            self._submitted(tracked, f"bracket: working {size}", size)
        else:
            self._submitted(tracked, f"IB works {size} shares", size)

    def _submitted(self, tracked: TrackedOrder, message: str, quantity: int | None = None) -> None:
        self._listener().on_order_status(
            OrderStatusUpdate(
                tracked.client_order_id,
                OrderStatus.SUBMITTED,
                self._clock.now(),
                broker_order_id(tracked.ib_order_id, tracked.perm_id),
                message,
                quantity=quantity,
            )
        )

    def on_error(self, req_id: int, code: int, message: str) -> bool:
        """An error about one of our orders; returns False when it is not about an order."""
        client_order_id = self._by_ib_id.get(req_id)
        if client_order_id is None:
            return False
        tracked = self._orders[client_order_id]
        listener = self._listener()
        refuses = not is_warning(code) or code in MODIFY_REFUSING_WARNINGS
        if tracked.modify is not None and code != ORDER_CANCELLED and refuses:
            tracked.undo_modify()
            listener.on_broker_error(
                code,
                f"order {client_order_id} not modified: {message} (it works as before)",
                client_order_id,
            )
            return True
        if tracked.quiet:
            logger.info(
                "IB answered a safety cancel: {message}",
                message=message,
                code=code,
                client_order_id=client_order_id,
            )
            return True
        if is_warning(code):
            # The order stays live at IB: tell the operator, do not touch its state.
            listener.on_broker_error(code, f"order {client_order_id}: {message}", None)
            return True
        trade = tracked.trade
        status = trade.orderStatus.status if trade is not None else "Cancelled"
        already = tracked.reported in (OrderStatus.CANCELLED, OrderStatus.REJECTED)
        self._report(tracked, status, message, code)
        if not (already and code == ORDER_CANCELLED):
            listener.on_broker_error(code, message, client_order_id)
        return True

    def on_exec_details(self, trade: Any, fill: Any) -> None:
        self._collect(fill, commission_known=False)

    def on_commission_report(self, trade: Any, fill: Any, report: Any) -> None:
        pending = self._pending.pop(fill.execution.execId, None)
        if pending is not None:
            self._deliver(pending.fill, report.commission)

    def flush_commissions(self) -> None:
        """Deliver fills whose commission report has not come within the wait."""
        now = self._clock.monotonic()
        for exec_id, pending in list(self._pending.items()):
            if now - pending.seen_at >= self._commission_wait:
                del self._pending[exec_id]
                logger.warning(
                    "no commission report for {exec_id}; fill booked without commission",
                    exec_id=exec_id,
                    client_order_id=pending.fill.client_order_id,
                )
                self._deliver(pending.fill, 0.0)

    # ------------------------------------------------------------- modification answers
    def _check_modify(self, tracked: TrackedOrder, trade: Any, *, echoed: bool) -> None:
        pending = tracked.modify
        assert pending is not None
        status = trade.orderStatus.status
        if status in IB_DONE:
            tracked.modify = None  # filled or ended meanwhile: that is the answer
            return
        if status not in ACKNOWLEDGED:
            return
        if pending.acknowledged_by(trade, echoed=echoed):
            tracked.modified()
            logger.info("order modified at IB", client_order_id=tracked.client_order_id)
            self._submitted(tracked, "modified")

    def _cancel_for_safety(self, tracked: TrackedOrder) -> None:
        tracked.quiet = True
        with contextlib.suppress(ConnectionError):
            self._ib.cancelOrder(tracked.trade.order)

    def _settle_reduced(self, tracked: TrackedOrder) -> None:
        """IB says Filled with fewer shares than asked, all of them delivered: IB worked
        less than the core asked (a bracket child sized to its parent's fill, an order
        reduced by its OCA group), and the rest will never work: the order is over."""
        trade = tracked.trade
        if trade is None or tracked.done or trade.orderStatus.status != "Filled":
            return
        if tracked.filled < round(trade.orderStatus.filled):
            return  # its executions are still on the way
        self._report(
            tracked,
            "Cancelled",
            f"IB finished the order at {tracked.filled} of {tracked.quantity} shares "
            "(sized to its bracket parent's fill or reduced by its OCA group)",
            0,
        )

    # ------------------------------------------------------------- reconnect
    def resync(self, client_id: int) -> None:
        """After (re)connecting: adopt, deliver missed fills, then settle the rest.

        Fills go first so the core never sees a fill for an order it already closed.
        Open orders of this client id that we do not track (placed before a restart,
        GTC stops of an earlier session, restored from the journal) are adopted
        silently so their later fills flow; the core's recovery decides about them
        through ``order_states()``.
        """
        open_by_ref = {t.order.orderRef: t for t in self._ib.openTrades() if t.order.orderRef}
        all_by_ref = {t.order.orderRef: t for t in self._ib.trades() if t.order.orderRef}
        known = set(self._orders)
        for ref, trade in open_by_ref.items():
            if ref not in self._orders and trade.order.clientId == client_id:
                self._orders[ref] = self._adopted(ref, trade)
                logger.info("open order adopted from IB by orderRef", client_order_id=ref)
        for fill in self._ib.fills():
            self._collect(fill, commission_known=True)
        for ref in set(self._orders) - known:
            # Shares filled in an earlier session (IB reports only today's executions)
            # were booked then: they count as delivered.
            adopted = self._orders[ref]
            adopted.filled = max(adopted.filled, round(adopted.trade.orderStatus.filled))
        for client_order_id in known:
            tracked = self._orders[client_order_id]
            if tracked.done or tracked.contract is None:
                continue
            trade = open_by_ref.get(client_order_id)
            if trade is not None:
                self._readopt(tracked, trade)
                continue
            tracked.modify = None
            finished = all_by_ref.get(client_order_id)
            if finished is not None:
                tracked.trade = finished
                self._report(tracked, finished.orderStatus.status, "finished while disconnected", 0)
                self._settle_reduced(tracked)
                continue
            # Neither open nor completed at IB: it never reached TWS.
            status = "Cancelled" if tracked.filled else "Inactive"
            self._report(tracked, status, "not known to IB after reconnect; not re-sent", 0)

    def _adopted(self, ref: str, trade: Any) -> TrackedOrder:
        tracked = TrackedOrder.adopted(ref, trade)
        self._note_ids(tracked, trade)
        return tracked

    def _readopt(self, tracked: TrackedOrder, trade: Any) -> None:
        tracked.trade = trade
        self._note_ids(tracked, trade)
        logger.info(
            "open order re-adopted after reconnect",
            client_order_id=tracked.client_order_id,
            ib_order_id=tracked.ib_order_id,
        )
        pending = tracked.modify
        if pending is not None:
            if pending.matches(trade.order):
                self._check_modify(tracked, trade, echoed=True)
            else:
                tracked.modify = None
                self._listener().on_broker_error(
                    NOT_CONNECTED,
                    f"order {tracked.client_order_id} not modified: the connection dropped "
                    "before IB answered; it works as IB has it",
                    tracked.client_order_id,
                )
        self._report(tracked, trade.orderStatus.status, "", 0)
        if tracked.cancel_requested and not tracked.done:
            self._ib.cancelOrder(trade.order)

    # ------------------------------------------------------------- queries
    def order_states(self, client_id: int) -> dict[str, BrokerOrderState]:
        """Every order of ours IB knows this session: tracked ones and IB's own list.

        Type, prices, tif and quantity are IB's (what works there now: a bracket child
        sized to its parent's fill, a stop moved by a modification)."""
        states: dict[str, BrokerOrderState] = {}
        for trade in self._ib.trades():
            ref = trade.order.orderRef
            if not ref or (trade.order.clientId not in (client_id, 0) and ref not in self._orders):
                continue
            states[ref] = broker_state_of(ref, trade)
        for tracked in self._orders.values():
            if tracked.client_order_id in states or tracked.contract is None:
                continue
            if tracked.reported is None and tracked.trade is None:
                continue  # never reached IB
            states[tracked.client_order_id] = BrokerOrderState(
                client_order_id=tracked.client_order_id,
                symbol=tracked.symbol,
                side=tracked.side,
                quantity=tracked.quantity,
                filled_quantity=tracked.filled,
                status=tracked.reported or OrderStatus.PENDING_SUBMIT,
                broker_order_id=broker_order_id(tracked.ib_order_id, tracked.perm_id),
                order_type=tracked.order_type,
                stop_price=tracked.stop_price,
                limit_price=tracked.limit_price,
                tif=tracked.tif,
            )
        return states

    def executions(self, client_id: int) -> list[Fill]:
        """Every execution of an order of ours (this client id, with an orderRef), oldest first."""
        fills = []
        for ib_fill in self._ib.fills():
            execution = ib_fill.execution
            ours = execution.orderRef in self._orders or (
                execution.orderRef and execution.clientId == client_id
            )
            if ours:
                fills.append(fill_of(ib_fill, execution.orderRef, self._clock.now()))
        return sorted(fills, key=lambda f: f.ts)

    # ------------------------------------------------------------- helpers
    def _tracked_for(self, trade: Any) -> TrackedOrder | None:
        ref = trade.order.orderRef
        client_order_id = ref if ref in self._orders else self._by_ib_id.get(trade.order.orderId)
        return self._orders.get(client_order_id) if client_order_id else None

    def _note_ids(self, tracked: TrackedOrder, trade: Any) -> None:
        order_id = trade.order.orderId or tracked.ib_order_id
        perm_id = trade.order.permId or trade.orderStatus.permId or tracked.perm_id
        if order_id:
            tracked.ib_order_id = order_id
            self._by_ib_id[order_id] = tracked.client_order_id
        tracked.perm_id = perm_id

    def _report(self, tracked: TrackedOrder, ib_status: str, message: str, code: int) -> None:
        if tracked.done:
            return
        status = map_ib_status(ib_status, error_code=code, has_fills=tracked.filled > 0)
        if status is None or status is tracked.reported:
            return
        tracked.reported = status
        self._listener().on_order_status(
            OrderStatusUpdate(
                tracked.client_order_id,
                status,
                self._clock.now(),
                broker_order_id(tracked.ib_order_id, tracked.perm_id),
                message or f"IB: {ib_status}",
                code or None,
            )
        )

    def _collect(self, ib_fill: Any, *, commission_known: bool) -> None:
        execution = ib_fill.execution
        exec_id = execution.execId
        if exec_id in self._delivered or exec_id in self._pending:
            return
        ref = execution.orderRef
        client_order_id = ref if ref in self._orders else self._by_ib_id.get(execution.orderId)
        if client_order_id is None:
            # Not ours (manual TWS trade, another client): reconciliation reports the difference.
            logger.info("execution of an order not placed by this session ignored", exec_id=exec_id)
            return
        fill = fill_of(ib_fill, client_order_id, self._clock.now())
        if commission_known or ib_fill.commissionReport.execId == exec_id:
            self._deliver(fill, fill.commission)
        else:
            self._pending[exec_id] = _PendingFill(fill, self._clock.monotonic())

    def _deliver(self, fill: Fill, commission: float) -> None:
        if fill.exec_id in self._delivered:
            return
        self._delivered.add(fill.exec_id)
        tracked = self._orders[fill.client_order_id]
        tracked.filled += fill.quantity
        booked = Fill(
            fill.exec_id,
            fill.client_order_id,
            fill.symbol,
            fill.side,
            fill.quantity,
            fill.price,
            float(commission),
            fill.ts,
        )
        self._listener().on_fill(booked)
        self._settle_reduced(tracked)
