"""Our orders at IB: placement, status mapping, fills with commissions, resync.

Every order carries our client order id in ``orderRef``; IB's orderId and
permId are kept beside it (reported as ``broker_order_id`` "orderId/permId").
The tracker outlives connections: ib_async forgets its trades on disconnect,
so after a reconnect open orders are re-adopted by orderRef (never re-sent)
and executions missed meanwhile are delivered, each exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ib_async import LimitOrder, MarketOrder
from loguru import logger

from core.brokers.base import BrokerListener
from core.brokers.ib_errors import (
    CANCEL_NOT_FOUND,
    NOT_CONNECTED,
    ORDER_CANCELLED,
    is_warning,
)
from core.clock import Clock
from core.model import (
    BrokerOrderState,
    Fill,
    Order,
    OrderStatus,
    OrderStatusUpdate,
    OrderType,
    Side,
)

# IB statuses that mean "working" and "finished without a (full) fill".
_ACKNOWLEDGED = frozenset({"PreSubmitted", "Submitted"})
_CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
_FILL_SIDES = {"BOT": Side.BUY, "SLD": Side.SELL}


def map_ib_status(
    status: str, *, error_code: int = 0, has_fills: bool = False
) -> OrderStatus | None:
    """IB's order status → ours; None when it changes nothing we track.

    Fill-driven states (partially filled, filled) come from executions, never
    from a status message (IB may say "Filled" before the execDetails). An
    order IB ends because of an error (other than 202, IB's cancel
    confirmation) is a rejection unless part of it traded; "Inactive" means
    IB holds it but will not work it, which for us is a rejection as well.
    """
    if status in _ACKNOWLEDGED:
        return OrderStatus.SUBMITTED
    if status == "PendingCancel":
        return OrderStatus.PENDING_CANCEL
    if status in _CANCELLED:
        if error_code and error_code != ORDER_CANCELLED and not has_fills:
            return OrderStatus.REJECTED
        return OrderStatus.CANCELLED
    if status == "Inactive":
        return OrderStatus.CANCELLED if has_fills else OrderStatus.REJECTED
    return None  # PendingSubmit, ApiPending, Filled (fill-driven), ValidationError (warning)


def broker_order_id(order_id: int, perm_id: int) -> str:
    return f"{order_id}/{perm_id}" if perm_id else str(order_id)


def _filled_of(trade: Any) -> int:
    """Shares IB reports filled for an order, whichever of its records knows best."""
    candidates = [trade.orderStatus.filled, sum(f.execution.shares for f in trade.fills)]
    completed = trade.order.filledQuantity  # completed orders carry it; UNSET (huge) otherwise
    if 0 <= completed < 1e15:
        candidates.append(completed)
    return round(max(candidates))


def _state_of(ib_status: str, filled: int, quantity: float) -> OrderStatus:
    """Our view of an order IB lists (for restart recovery)."""
    if filled >= quantity > 0:
        return OrderStatus.FILLED
    mapped = map_ib_status(ib_status, has_fills=filled > 0)
    if mapped in (None, OrderStatus.SUBMITTED) and filled:
        return OrderStatus.PARTIALLY_FILLED
    if mapped is None:
        waiting = ib_status in ("PendingSubmit", "ApiPending")
        return OrderStatus.PENDING_SUBMIT if waiting else OrderStatus.SUBMITTED
    return mapped


@dataclass(slots=True)
class _Tracked:
    """One order of ours at IB: placed by this process, or adopted from IB by orderRef."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    contract: Any
    trade: Any = None  # ib_async Trade of the current connection
    ib_order_id: int = 0
    perm_id: int = 0
    filled: int = 0  # shares delivered to the core as fills
    reported: OrderStatus | None = None
    cancel_requested: bool = False

    @property
    def done(self) -> bool:
        return (
            self.reported in (OrderStatus.CANCELLED, OrderStatus.REJECTED)
            or self.filled >= self.quantity
        )

    @classmethod
    def of(cls, order: Order, contract: Any) -> _Tracked:
        return cls(order.client_order_id, order.symbol, order.side, order.quantity, contract)


@dataclass(slots=True)
class _PendingFill:
    fill: Fill
    seen_at: float


class IbOrderTracker:
    """Places and cancels orders through ib_async and reports what IB says about them."""

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
        self._orders: dict[str, _Tracked] = {}
        self._by_ib_id: dict[int, str] = {}
        self._pending: dict[str, _PendingFill] = {}  # exec id -> fill waiting for commission
        self._delivered: set[str] = set()
        self.account = ""

    # ------------------------------------------------------------- requests
    def place(self, order: Order, contract: Any) -> None:
        tracked = _Tracked.of(order, contract)
        self._orders[order.client_order_id] = tracked
        action = "BUY" if order.side is Side.BUY else "SELL"
        if order.order_type is OrderType.LIMIT:
            ib_order: Any = LimitOrder(action, order.quantity, float(order.limit_price or 0.0))
        else:
            ib_order = MarketOrder(action, order.quantity)
        ib_order.orderRef = order.client_order_id
        ib_order.account = self.account
        ib_order.tif = "DAY"
        try:
            trade = self._ib.placeOrder(contract, ib_order)
        except ConnectionError:
            self.reject_now(order, "not connected to TWS: order not sent", NOT_CONNECTED)
            return
        tracked.trade = trade
        tracked.ib_order_id = trade.order.orderId
        self._by_ib_id[tracked.ib_order_id] = order.client_order_id
        logger.info(
            "order placed at IB",
            client_order_id=order.client_order_id,
            ib_order_id=tracked.ib_order_id,
        )

    def reject_now(self, order: Order, reason: str, code: int | None) -> None:
        """Refuse ``order`` without sending it; reported on the next loop turn, after the send."""
        tracked = self._orders.setdefault(order.client_order_id, _Tracked.of(order, None))
        tracked.reported = OrderStatus.REJECTED
        update = OrderStatusUpdate(
            order.client_order_id, OrderStatus.REJECTED, self._clock.now(), None, reason, code
        )
        asyncio.get_running_loop().call_soon(self._listener().on_order_status, update)

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
        if trade.log and trade.log[-1].errorCode and trade.orderStatus.status in _CANCELLED:
            return  # ib_async ends the order for an error; on_error reports it with IB's text
        self._report(tracked, trade.orderStatus.status, "", 0)

    def on_error(self, req_id: int, code: int, message: str) -> bool:
        """An error about one of our orders; returns False when it is not about an order."""
        client_order_id = self._by_ib_id.get(req_id)
        if client_order_id is None:
            return False
        tracked = self._orders[client_order_id]
        listener = self._listener()
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

    # ------------------------------------------------------------- reconnect
    def resync(self, client_id: int) -> None:
        """After (re)connecting: adopt, deliver missed fills, then settle the rest.

        Fills go first so the core never sees a fill for an order it already closed.
        Open orders of this client id that we do not track (placed before a restart,
        restored from the journal) are adopted silently so their later fills flow;
        the core's recovery decides about them through ``order_states()``.
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
        for client_order_id in known:
            tracked = self._orders[client_order_id]
            if tracked.done or tracked.contract is None:
                continue
            trade = open_by_ref.get(client_order_id)
            if trade is not None:
                self._readopt(tracked, trade)
                continue
            finished = all_by_ref.get(client_order_id)
            if finished is not None:
                tracked.trade = finished
                self._report(tracked, finished.orderStatus.status, "finished while disconnected", 0)
                continue
            # Neither open nor completed at IB: it never reached TWS.
            status = "Cancelled" if tracked.filled else "Inactive"
            self._report(tracked, status, "not known to IB after reconnect; not re-sent", 0)

    def _adopted(self, ref: str, trade: Any) -> _Tracked:
        side = Side.BUY if trade.order.action == "BUY" else Side.SELL
        tracked = _Tracked(
            ref, trade.contract.symbol, side, round(trade.order.totalQuantity), trade.contract
        )
        tracked.trade = trade
        self._note_ids(tracked, trade)
        return tracked

    def _readopt(self, tracked: _Tracked, trade: Any) -> None:
        tracked.trade = trade
        self._note_ids(tracked, trade)
        logger.info(
            "open order re-adopted after reconnect",
            client_order_id=tracked.client_order_id,
            ib_order_id=tracked.ib_order_id,
        )
        self._report(tracked, trade.orderStatus.status, "", 0)
        if tracked.cancel_requested and not tracked.done:
            self._ib.cancelOrder(trade.order)

    # ------------------------------------------------------------- queries
    def order_states(self, client_id: int) -> dict[str, BrokerOrderState]:
        """Every order of ours IB knows this session: tracked ones and IB's own list."""
        states: dict[str, BrokerOrderState] = {}
        for trade in self._ib.trades():
            ref = trade.order.orderRef
            if not ref or (trade.order.clientId not in (client_id, 0) and ref not in self._orders):
                continue
            filled = _filled_of(trade)
            states[ref] = BrokerOrderState(
                client_order_id=ref,
                symbol=trade.contract.symbol,
                side=Side.BUY if trade.order.action == "BUY" else Side.SELL,
                quantity=round(trade.order.totalQuantity),
                filled_quantity=filled,
                status=_state_of(trade.orderStatus.status, filled, trade.order.totalQuantity),
                broker_order_id=broker_order_id(trade.order.orderId, trade.order.permId),
            )
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
                fills.append(self._fill_of(ib_fill, execution.orderRef))
        return sorted(fills, key=lambda f: f.ts)

    # ------------------------------------------------------------- helpers
    def _tracked_for(self, trade: Any) -> _Tracked | None:
        ref = trade.order.orderRef
        client_order_id = ref if ref in self._orders else self._by_ib_id.get(trade.order.orderId)
        return self._orders.get(client_order_id) if client_order_id else None

    def _note_ids(self, tracked: _Tracked, trade: Any) -> None:
        order_id = trade.order.orderId or tracked.ib_order_id
        perm_id = trade.order.permId or trade.orderStatus.permId or tracked.perm_id
        if order_id:
            tracked.ib_order_id = order_id
            self._by_ib_id[order_id] = tracked.client_order_id
        tracked.perm_id = perm_id

    def _report(self, tracked: _Tracked, ib_status: str, message: str, code: int) -> None:
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

    def _fill_of(self, ib_fill: Any, client_order_id: str) -> Fill:
        execution = ib_fill.execution
        report = ib_fill.commissionReport
        ts = execution.time
        # The execution's own time (IB's clock) keeps a fill on the right trading day
        # when it is replayed after a reconnect or a restart.
        if not isinstance(ts, datetime) or ts.tzinfo is None:
            ts = self._clock.now()
        return Fill(
            exec_id=execution.execId,
            client_order_id=client_order_id,
            symbol=ib_fill.contract.symbol,
            side=_FILL_SIDES.get(execution.side, Side.BUY),
            quantity=round(execution.shares),
            price=float(execution.price),
            commission=float(report.commission) if report.execId == execution.execId else 0.0,
            ts=ts,
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
        fill = self._fill_of(ib_fill, client_order_id)
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
