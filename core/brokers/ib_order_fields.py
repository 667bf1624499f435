"""Our orders in IB's terms and back: order fields, statuses, prices.

Order types (``ib_order_of``): MKT; LMT (``lmtPrice``); STP (``auxPrice`` = the stop
price); STP LMT (both); ``tif`` DAY or GTC as the order says; ``orderRef`` = our client
order id.

Brackets follow IB's attached-order recipe (tws-api bracket_order.html): the parent
goes with ``transmit=False``, every child names the parent's orderId in ``parentId``
and carries the order's OCA group, and only the last child has ``transmit=True``, so
TWS sends the whole bracket at once and none of it can execute before all of it is
at IB. The children rest (PreSubmitted) until the parent fills.

OCA type 2, "reduce remaining orders with block" (``OCA_REDUCE_WITH_BLOCK``): a
(partial) fill of one child reduces the others by as much, so what rests never
exceeds the position. Type 1 ("cancel with block") would cancel the take-profit on
the stop's first partial fill, or the stop on the take-profit's (30 of 100 filled
would leave the other 70 without their stop). "With block" is IB's overfill
protection: only one order of the group is routed at a time; type 3 ("reduce, no
block") would let a stop and a take-profit racing in a fast market both fill and
flip the position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ib_async import Order as IbOrder
from ib_async.util import UNSET_DOUBLE

from core.brokers.ib_errors import ORDER_CANCELLED
from core.model import (
    BrokerOrderState,
    Fill,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

OCA_REDUCE_WITH_BLOCK = 2  # see the module docstring
# A modification TWS has not answered within this long is taken as lost: the next one
# goes (before, it is refused with 2102). Below the core's 5 s wait for an answer, so
# the core's next try after that wait is sent.
MODIFY_ANSWER_SECONDS = 4.0

# IB statuses that mean "working" and "finished without a (full) fill".
ACKNOWLEDGED = frozenset({"PreSubmitted", "Submitted"})
CANCELLED = frozenset({"Cancelled", "ApiCancelled"})
IB_DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
FILL_SIDES = {"BOT": Side.BUY, "SLD": Side.SELL}
_PRICE_EPS = 0.005  # half a cent: IB may echo a price re-rounded; ours are on cents


def map_ib_status(
    status: str, *, error_code: int = 0, has_fills: bool = False
) -> OrderStatus | None:
    """IB's order status → ours; None when it changes nothing we track.

    Fill-driven states (partially filled, filled) come from executions, never
    from a status message (IB may say "Filled" before the execDetails). An
    order IB ends because of an error (other than 202, IB's cancel
    confirmation) is a rejection unless part of it traded. "PreSubmitted" (a
    stop waiting for its trigger, a bracket child waiting for its parent) is
    working: SUBMITTED. "Inactive" is IB's "received but no longer active
    because it was rejected or cancelled" (ib_async counts it done): for us a
    rejection, or a cancellation when part of it traded; the tracker also
    asks IB to cancel such an order, so that one IB still holds cannot come
    back to life beside the order the core places instead.
    """
    if status in ACKNOWLEDGED:
        return OrderStatus.SUBMITTED
    if status == "PendingCancel":
        return OrderStatus.PENDING_CANCEL
    if status in CANCELLED:
        if error_code and error_code != ORDER_CANCELLED and not has_fills:
            return OrderStatus.REJECTED
        return OrderStatus.CANCELLED
    if status == "Inactive":
        return OrderStatus.CANCELLED if has_fills else OrderStatus.REJECTED
    return None  # PendingSubmit, ApiPending, Filled (fill-driven), ValidationError (warning)


def broker_order_id(order_id: int, perm_id: int) -> str:
    return f"{order_id}/{perm_id}" if perm_id else str(order_id)


def ib_price(value: Any) -> float | None:
    """An IB price field as a price; None when unset (UNSET_DOUBLE, empty, 0)."""
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(price) or price <= 0 or price >= UNSET_DOUBLE:
        return None
    return price


def order_type_of(ib_type: str) -> OrderType:
    """IB's orderType → ours (an order type we never send reads as MKT)."""
    try:
        return OrderType(ib_type)
    except ValueError:
        return OrderType.MARKET


def tif_of(ib_tif: str) -> TimeInForce:
    """IB's tif → ours: only GTC outlives the day (IOC, OPG, GTD... end with it)."""
    return TimeInForce.GTC if ib_tif == "GTC" else TimeInForce.DAY


def price_problem(order: Order) -> str | None:
    """Why ``order`` cannot go to IB as it is (a price its type needs is missing)."""
    kind = order.order_type
    if kind.has_limit and not (order.limit_price and order.limit_price > 0):
        return f"{kind} order without a limit price"
    if kind.is_stop and not (order.stop_price and order.stop_price > 0):
        return f"{kind} order without a stop price"
    return None


def ib_order_of(order: Order, account: str) -> IbOrder:
    """The ib_async order for one of ours: type, prices, tif, orderRef, OCA group."""
    ib_order = IbOrder(
        action="BUY" if order.side is Side.BUY else "SELL",
        totalQuantity=order.quantity,
        orderType=order.order_type.value,
        tif=order.tif.value,
        orderRef=order.client_order_id,
        account=account,
    )
    if order.order_type.has_limit:
        ib_order.lmtPrice = float(order.limit_price or 0.0)
    if order.order_type.is_stop:
        ib_order.auxPrice = float(order.stop_price or 0.0)
    if order.oca_group:
        ib_order.ocaGroup = order.oca_group
        ib_order.ocaType = OCA_REDUCE_WITH_BLOCK
    return ib_order


def bracket_ib_orders(orders: Sequence[Order], ids: Sequence[int], account: str) -> list[IbOrder]:
    """The IB orders of a bracket (parent first) with their orderIds ``ids``: the
    children name the parent in ``parentId``; only the last one transmits."""
    parent = orders[0]
    ib_orders = []
    for n, (order, order_id) in enumerate(zip(orders, ids, strict=True)):
        if n and order.parent_id != parent.client_order_id:
            raise ValueError(
                f"bracket child {order.client_order_id} names parent {order.parent_id!r}, "
                f"not {parent.client_order_id}"
            )
        ib_order = ib_order_of(order, account)
        ib_order.orderId = order_id
        ib_order.parentId = ids[0] if n else 0
        ib_order.transmit = n == len(orders) - 1  # the last one sends them all
        ib_orders.append(ib_order)
    return ib_orders


def filled_of(trade: Any) -> int:
    """Shares IB reports filled for an order, whichever of its records knows best."""
    candidates = [trade.orderStatus.filled, sum(f.execution.shares for f in trade.fills)]
    completed = trade.order.filledQuantity  # completed orders carry it; UNSET (huge) otherwise
    if 0 <= completed < 1e15:
        candidates.append(completed)
    return round(max(candidates))


def state_of(ib_status: str, filled: int, quantity: float) -> OrderStatus:
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


def same_price(ib_value: Any, ours: float | None) -> bool:
    theirs = ib_price(ib_value)
    if ours is None or theirs is None:
        return ours is None and theirs is None
    return abs(theirs - ours) < _PRICE_EPS


@dataclass(slots=True)
class PendingModify:
    """A modification sent and not answered yet, and what to restore if IB refuses it."""

    quantity: int
    limit_price: float | None
    stop_price: float | None
    old_fields: tuple[Any, Any, Any, Any]  # IB's totalQuantity, lmtPrice, auxPrice, parentId
    old_status: str
    old_quantity: int
    sent_at: float  # on the clock's monotonic time

    def acknowledged_by(self, trade: Any, *, echoed: bool) -> bool:
        """Whether an IB message about the order (working) says the change is applied."""
        if echoed:  # an openOrder: trade.order now holds what IB has
            return self.matches(trade.order)
        # A status: ib_async's own "Modified", or the new size in filled + remaining.
        last = trade.log[-1].message if trade.log else ""
        size = round(trade.orderStatus.filled + trade.orderStatus.remaining)
        return last == "Modified" or (self.quantity != self.old_quantity and size == self.quantity)

    def restore(self, trade: Any) -> None:
        """IB did not apply the change: the trade goes back to what IB works."""
        o = trade.order
        o.totalQuantity, o.lmtPrice, o.auxPrice, o.parentId = self.old_fields
        if trade.orderStatus.status in (*CANCELLED, "ValidationError"):
            # ib_async ends a trade on any order error; IB keeps the order working.
            trade.orderStatus.status = self.old_status

    def matches(self, ib_order: Any) -> bool:
        """Whether IB's order carries the new values."""
        return (
            round(ib_order.totalQuantity) == self.quantity
            and (self.limit_price is None or same_price(ib_order.lmtPrice, self.limit_price))
            and (self.stop_price is None or same_price(ib_order.auxPrice, self.stop_price))
        )


@dataclass(slots=True)
class TrackedOrder:
    """One order of ours at IB: placed by this process, or adopted from IB by orderRef."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: int  # what the core asked for (IB may work less: bracket child, OCA group)
    contract: Any
    order_type: OrderType = OrderType.MARKET
    tif: TimeInForce = TimeInForce.DAY
    limit_price: float | None = None
    stop_price: float | None = None
    trade: Any = None  # ib_async Trade of the current connection
    ib_order_id: int = 0
    perm_id: int = 0
    filled: int = 0  # shares delivered to the core as fills
    reported: OrderStatus | None = None
    cancel_requested: bool = False
    modify: PendingModify | None = None
    quiet: bool = False  # finished, and cancelled once more for safety: IB's answer is no news
    ib_quantity: int = -1  # the size IB last said it works (-1: not heard yet)

    @property
    def done(self) -> bool:
        return (
            self.reported in (OrderStatus.CANCELLED, OrderStatus.REJECTED)
            or self.filled >= self.quantity
        )

    @classmethod
    def of(cls, order: Order, contract: Any) -> TrackedOrder:
        return cls(
            order.client_order_id,
            order.symbol,
            order.side,
            order.quantity,
            contract,
            order.order_type,
            order.tif,
            order.limit_price,
            order.stop_price,
        )

    def modified(self) -> None:
        """IB has applied the pending modification."""
        pending, self.modify = self.modify, None
        assert pending is not None
        self.quantity = self.ib_quantity = pending.quantity
        if pending.limit_price is not None:
            self.limit_price = pending.limit_price
        if pending.stop_price is not None:
            self.stop_price = pending.stop_price
        self.reported = self.reported or OrderStatus.SUBMITTED

    def undo_modify(self) -> None:
        """IB did not apply the pending modification: back to what IB works."""
        pending, self.modify = self.modify, None
        if pending is not None and self.trade is not None:
            pending.restore(self.trade)

    @classmethod
    def adopted(cls, ref: str, trade: Any) -> TrackedOrder:
        """An order IB lists with our orderRef that this process did not place."""
        o = trade.order
        order_type = order_type_of(o.orderType)
        return cls(
            ref,
            trade.contract.symbol,
            Side.BUY if o.action == "BUY" else Side.SELL,
            round(o.totalQuantity),
            trade.contract,
            order_type,
            tif_of(o.tif),
            ib_price(o.lmtPrice) if order_type.has_limit else None,
            ib_price(o.auxPrice) if order_type.is_stop else None,
            trade=trade,
        )


def broker_state_of(ref: str, trade: Any) -> BrokerOrderState:
    """What IB lists for one of our orders: its quantity, type, prices and tif as IB
    works them now (a bracket child sized to its parent's fill, a stop once moved)."""
    o = trade.order
    filled = filled_of(trade)
    order_type = order_type_of(o.orderType)
    return BrokerOrderState(
        client_order_id=ref,
        symbol=trade.contract.symbol,
        side=Side.BUY if o.action == "BUY" else Side.SELL,
        quantity=round(o.totalQuantity),
        filled_quantity=filled,
        status=state_of(trade.orderStatus.status, filled, o.totalQuantity),
        broker_order_id=broker_order_id(o.orderId, o.permId),
        order_type=order_type,
        stop_price=ib_price(o.auxPrice) if order_type.is_stop else None,
        limit_price=ib_price(o.lmtPrice) if order_type.has_limit else None,
        tif=tif_of(o.tif),
    )


def fill_of(ib_fill: Any, client_order_id: str, now: datetime) -> Fill:
    """Our Fill for an ib_async Fill (execution and commission report)."""
    execution = ib_fill.execution
    report = ib_fill.commissionReport
    ts = execution.time
    # The execution's own time (IB's clock) keeps a fill on the right trading day
    # when it is replayed after a reconnect or a restart.
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        ts = now
    return Fill(
        exec_id=execution.execId,
        client_order_id=client_order_id,
        symbol=ib_fill.contract.symbol,
        side=FILL_SIDES.get(execution.side, Side.BUY),
        quantity=round(execution.shares),
        price=float(execution.price),
        commission=float(report.commission) if report.execId == execution.execId else 0.0,
        ts=ts,
    )
