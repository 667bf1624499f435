"""Protective stops held at the broker: one GTC stop for every position the console holds.

Why at the broker: a stop in the console dies with the console (host down, SSH box
rebooted, IB Gateway restarted at night). A stop resting at IB keeps working.

The rule, per symbol, re-applied (``sync``) after every fill, every exit order, every
finished stop, every reconnect and every reconciliation:

- the stop covers the position minus what a working exit order is closing: the stop
  and the exits resting at the broker never add up to more than the position, so no
  combination of them filling can flip it;
- it is placed when a position opens (a bracket's stop-loss child when the entry came
  as a bracket; otherwise right after the fill), resized in place (``modify_order``,
  same client order id) when the position changes, moved only in the protective
  direction (trailing), and cancelled when the position is flat;
- at most one change per stop is in flight: the next waits for the broker's answer
  (or ``CHANGE_TIMEOUT``), then ``sync`` looks again;
- a stop the broker rejects is not placed again for ``REJECT_BACKOFF`` (a reject
  repeats when retried at once).

Which stop belongs to which position is known by the client order id alone (suffix
``-SL``; ``-TP`` for a take-profit): after a crash the journal and the broker's open
orders give the stops back, and they are adopted, never placed twice. Nothing here
runs per quote unless a stop trails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from loguru import logger

from core.clock import Clock
from core.model import (
    BUY,
    PENDING_CANCEL,
    PENDING_SUBMIT,
    SELL,
    Order,
    OrderRole,
    Side,
)
from core.portfolio import Portfolio

# Prices are sent on a cent grid (US stocks; instruments with other ticks come with
# issue 18's contract details).
TICK = 0.01
CHANGE_TIMEOUT = timedelta(seconds=5)
REJECT_BACKOFF = timedelta(seconds=60)


class StopDesk(Protocol):
    """What the protective stops need from the execution engine."""

    @property
    def connected(self) -> bool: ...

    def closing_quantity(self, symbol: str) -> int:
        """Shares a working entry order of ``symbol`` is closing of the position."""
        ...

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
    ) -> Order | None: ...

    def modify(
        self, order: Order, quantity: int, stop_price: float | None, limit_price: float | None
    ) -> None: ...

    def cancel(self, client_order_id: str, reason: str) -> None: ...

    def stop_settled(self, symbol: str) -> None:
        """The broker answered a change to ``symbol``'s stop (or it finished)."""
        ...

    def is_unsent(self, client_order_id: str) -> bool:
        """Still queued for the sender: not at the broker yet."""
        ...

    def is_working(self, client_order_id: str) -> bool: ...


@dataclass(slots=True)
class StopPlan:
    """How one symbol's position is to be protected."""

    pct: float  # distance of the stop from the average cost, % (0: no stop)
    trailing: bool = False
    take_profit_pct: float | None = None
    stop_price: float | None = None  # a price given by the strategy (a bracket's)
    take_profit_price: float | None = None
    trail_distance: float | None = None  # a trailing bracket's initial distance, $
    best: float = math.nan  # best price since entry, for trailing
    blocked_until: datetime | None = None


class ProtectiveStops:
    """Places, resizes, trails and cancels each position's stop (see the module doc)."""

    def __init__(
        self,
        clock: Clock,
        portfolio: Portfolio,
        *,
        default_pct: float = 0.0,
        default_trailing: bool = False,
    ) -> None:
        self._clock = clock
        self._portfolio = portfolio
        self._desk: StopDesk | None = None
        self.default_pct = default_pct
        self.default_trailing = default_trailing
        self.stops: dict[str, Order] = {}  # symbol -> its working stop-loss
        self.take_profits: dict[str, Order] = {}  # symbol -> its working take-profit
        self.plans: dict[str, StopPlan] = {}
        # Symbols whose stop trails: the only ones that look at quotes.
        self.trailing: set[str] = set()
        self._changing: dict[str, datetime] = {}  # client order id -> change sent at
        # Orders whose last change the broker refused: our record holds the values we
        # asked for, the broker the old ones, so the change is sent again.
        self._refused: set[str] = set()
        # Further stop-losses / take-profits of one symbol found on restore (see adopt).
        self._spares: dict[str, list[Order]] = {}
        self.placed = self.modified = self.cancelled = 0
        # Nothing is placed, resized or cancelled before the start-up reconciliation has
        # run: until then the restored orders' states are the journal's, not the broker's
        # (a stop cancelled just before a crash still looks working).
        self.armed = False

    def arm(self) -> None:
        """The books agree with the broker now: put every position's stop right."""
        self.armed = True
        self.sync_all()

    def attach(self, desk: StopDesk) -> None:
        self._desk = desk

    @property
    def enabled(self) -> bool:
        """Whether anything asks for a stop or one rests: otherwise there is nothing to do."""
        return bool(
            self.default_pct > 0 or self.plans or self.stops or self.take_profits or self._spares
        )

    # ------------------------------------------------------------- plans
    def plan_for(self, symbol: str) -> StopPlan | None:
        plan = self.plans.get(symbol)
        if plan is None and self.default_pct > 0:
            plan = self.plans[symbol] = StopPlan(self.default_pct, self.default_trailing)
            self._track_trailing(symbol, plan)
        return plan

    def set_plan(
        self,
        symbol: str,
        *,
        pct: float | None = None,
        trailing: bool | None = None,
        take_profit_pct: float | None = None,
        stop_price: float | None = None,
        take_profit_price: float | None = None,
        trail_distance: float | None = None,
    ) -> None:
        """A strategy's wish for ``symbol`` (a target's stop_pct, a bracket's prices)."""
        current = self.plans.get(symbol)
        plan = StopPlan(
            self.default_pct if pct is None else pct,
            self.default_trailing if trailing is None else trailing,
            take_profit_pct,
            stop_price,
            take_profit_price,
            trail_distance,
        )
        if current is not None and not math.isnan(current.best):
            plan.best = current.best
        self.plans[symbol] = plan
        self._track_trailing(symbol, plan)

    def _track_trailing(self, symbol: str, plan: StopPlan) -> None:
        if plan.trailing:
            self.trailing.add(symbol)
        else:
            self.trailing.discard(symbol)

    # ------------------------------------------------------------- order book
    def adopt(self, order: Order) -> None:
        """A working stop-loss or take-profit of ours: restored, or just placed."""
        book = self.stops if order.role is OrderRole.STOP_LOSS else self.take_profits
        held = book.get(order.symbol)
        if held is not None and held.client_order_id != order.client_order_id:
            # Two for one position, restored from the journal (a crash came between
            # placing one and the other's cancel being recorded). Which of them the
            # broker still works is known once it has been asked: ``sync`` settles it
            # then, keeping one and cancelling the rest.
            logger.warning(
                "second {role} for {symbol}: settled once the broker has answered",
                role=str(order.role),
                symbol=order.symbol,
                client_order_id=order.client_order_id,
                kept=held.client_order_id,
            )
            self._spares.setdefault(order.symbol, []).append(order)
            return
        book[order.symbol] = order
        # Plans are not persisted: a stop restored after a restart keeps where it is
        # unless a percentage policy says where it goes.
        plan = self.plans.get(order.symbol)
        if plan is None:
            plan = self.plans[order.symbol] = StopPlan(self.default_pct, self.default_trailing)
            self._track_trailing(order.symbol, plan)
        if order.role is OrderRole.STOP_LOSS:
            if plan.stop_price is None and plan.pct <= 0:
                plan.stop_price = order.stop_price
        elif plan.take_profit_price is None and plan.take_profit_pct is None:
            plan.take_profit_price = order.limit_price

    def on_finished(self, order: Order, *, rejected: bool = False) -> None:
        """A stop-loss or take-profit filled, was cancelled or was rejected."""
        self._changing.pop(order.client_order_id, None)
        self._refused.discard(order.client_order_id)
        for book in (self.stops, self.take_profits):
            if book.get(order.symbol) is order:
                del book[order.symbol]
        spares = self._spares.get(order.symbol)
        if spares is not None and order in spares:
            spares.remove(order)
        if rejected:
            plan = self.plans.get(order.symbol)
            if plan is not None:
                plan.blocked_until = self._clock.now() + REJECT_BACKOFF
        self.sync(order.symbol)
        self._settled(order.symbol)

    def on_answer(self, order: Order) -> None:
        """The broker acknowledged a change: look again."""
        self._refused.discard(order.client_order_id)
        if self._changing.pop(order.client_order_id, None) is not None:
            self.sync(order.symbol)
        self._settled(order.symbol)

    def on_refused(self, order: Order) -> None:
        """The broker refused a change (or an error named the order): the change is
        sent again when ``sync`` next looks (at once when connected)."""
        if self._changing.pop(order.client_order_id, None) is not None:
            self._refused.add(order.client_order_id)
            self.sync(order.symbol)
        self._settled(order.symbol)

    def _settled(self, symbol: str) -> None:
        desk = self._desk
        if desk is not None:
            desk.stop_settled(symbol)

    def must_give_way(self, symbol: str, closing: int) -> bool:
        """Whether an exit closing ``closing`` shares must wait: the symbol's stop or
        take-profit at the broker could still close more than the rest of the position,
        or a change to it is unanswered. ``sync`` has asked for the change already."""
        room = abs(self._portfolio.quantity(symbol)) - closing
        desk = self._desk
        for order in (self.stops.get(symbol), self.take_profits.get(symbol)):
            if order is None or not order.is_working:
                continue
            if order.status is PENDING_CANCEL or order.client_order_id in self._changing:
                return True
            if order.status is PENDING_SUBMIT and not (
                desk and desk.is_unsent(order.client_order_id)
            ):
                return True  # at the broker, not acknowledged yet
            if order.remaining > max(room, 0):
                return True
        return False

    # ------------------------------------------------------------- the rule
    def sync_all(self) -> None:
        wanted = {s for s, p in self._portfolio.positions.items() if p.quantity}
        wanted |= set(self.stops) | set(self.take_profits) | set(self._spares)
        for symbol in sorted(wanted):
            self.sync(symbol)

    def sync(self, symbol: str) -> None:
        if not self.enabled:
            return  # every fill passes here
        desk = self._desk
        if desk is None or not self.armed or not desk.connected:
            return  # looked at again on arming and on reconnect
        if self._spares.get(symbol):
            self._settle_spares(symbol)
        position = self._portfolio.quantity(symbol)
        stop = self.stops.get(symbol)
        take = self.take_profits.get(symbol)
        if position == 0:
            self.plans.pop(symbol, None)
            self.trailing.discard(symbol)
        plan = self.plan_for(symbol) if position else None
        want = max(abs(position) - desk.closing_quantity(symbol), 0)
        side = SELL if position > 0 else BUY
        if plan is None or (plan.pct <= 0 and plan.stop_price is None):
            want = 0
        for order in (stop, take):
            if order is None:
                continue
            if want == 0 or order.side is not side:
                self._cancel(order, "position closed" if position == 0 else "not needed")
        if want == 0 or plan is None:
            return
        self._keep(symbol, plan, stop, OrderRole.STOP_LOSS, side, want, position)
        if plan.take_profit_pct is not None or plan.take_profit_price is not None:
            self._keep(symbol, plan, take, OrderRole.TAKE_PROFIT, side, want, position)

    def _keep(
        self,
        symbol: str,
        plan: StopPlan,
        order: Order | None,
        role: OrderRole,
        side: Side,
        want: int,
        position: int,
    ) -> None:
        desk = self._desk
        assert desk is not None
        if order is not None and order.side is side:
            if order.status is PENDING_CANCEL or order.client_order_id in self._changing:
                return  # the answer to the last change comes first
            if order.parent_id is not None and desk.is_working(order.parent_id):
                return  # a bracket child: the broker sizes it to its parent's fills
            price = order.stop_price if role is OrderRole.STOP_LOSS else order.limit_price
            new_price = price
            if role is OrderRole.STOP_LOSS and plan.trailing and price is not None:
                trailed = self._trailed_price(symbol, plan, position)
                if trailed is not None and _protects_more(side, trailed, price):
                    new_price = trailed
            total = order.filled_quantity + want
            refused = order.client_order_id in self._refused
            if refused or total != order.quantity or new_price != price:
                self._refused.discard(order.client_order_id)
                self._changing[order.client_order_id] = self._clock.now()
                self.modified += 1
                if role is OrderRole.STOP_LOSS:
                    desk.modify(order, total, new_price, order.limit_price)
                else:
                    desk.modify(order, total, order.stop_price, new_price)
            return
        if order is not None:
            return  # the wrong side's order is being cancelled first
        if plan.blocked_until is not None and self._clock.now() < plan.blocked_until:
            return
        price = self._initial_price(symbol, plan, role, position)
        if price is None:
            return
        oca = self._oca_group(symbol)
        if role is OrderRole.STOP_LOSS:
            placed = desk.place_exit(symbol, side, want, role, stop_price=price, oca_group=oca)
        else:
            placed = desk.place_exit(symbol, side, want, role, limit_price=price, oca_group=oca)
        if placed is not None:
            self.placed += 1
            self.adopt(placed)

    def _settle_spares(self, symbol: str) -> None:
        """One stop-loss and one take-profit per symbol: a spare takes the place of one
        that has finished, the others are cancelled (they leave ``_spares`` as they
        finish)."""
        spares = [o for o in self._spares[symbol] if o.is_working]
        self._spares[symbol] = spares
        for book in (self.stops, self.take_profits):
            main = book.get(symbol)
            if main is None or not main.is_working:
                role = OrderRole.STOP_LOSS if book is self.stops else OrderRole.TAKE_PROFIT
                promoted = next((o for o in spares if o.role is role), None)
                if promoted is not None:
                    spares.remove(promoted)
                    book[symbol] = promoted
        for order in spares:
            self._cancel(order, "duplicate protective order")

    def spares(self) -> list[Order]:
        """The spare protective orders still held (restored duplicates being settled)."""
        return [o for orders in self._spares.values() for o in orders]

    def _oca_group(self, symbol: str) -> str | None:
        """A new stop joins the take-profit's OCA group and the other way round."""
        for order in (self.stops.get(symbol), self.take_profits.get(symbol)):
            if order is not None and order.oca_group:
                return order.oca_group
        return None

    def _initial_price(
        self, symbol: str, plan: StopPlan, role: OrderRole, position: int
    ) -> float | None:
        held = self._portfolio.positions.get(symbol)
        if held is None or held.quantity == 0:
            return None
        long = position > 0
        if role is OrderRole.TAKE_PROFIT:
            if plan.take_profit_price is not None:
                return plan.take_profit_price
            assert plan.take_profit_pct is not None
            factor = 1 + plan.take_profit_pct / 100 if long else 1 - plan.take_profit_pct / 100
            return _on_grid(held.avg_cost * factor, up=long)
        if plan.stop_price is not None:
            return plan.stop_price
        factor = 1 - plan.pct / 100 if long else 1 + plan.pct / 100
        price = _on_grid(held.avg_cost * factor, up=not long)
        if plan.trailing:
            trailed = self._trailed_price(symbol, plan, position)
            if trailed is not None and _protects_more(SELL if long else BUY, trailed, price):
                price = trailed
        return price

    def _trailed_price(self, symbol: str, plan: StopPlan, position: int) -> float | None:
        best = plan.best
        if math.isnan(best):
            return None
        long = position > 0
        if plan.trail_distance is not None:
            raw = best - plan.trail_distance if long else best + plan.trail_distance
        else:
            raw = best * (1 - plan.pct / 100) if long else best * (1 + plan.pct / 100)
        return _on_grid(raw, up=not long)

    # ------------------------------------------------------------- trailing
    def on_price(self, symbol: str, price: float) -> None:
        """A trailing symbol's new price: remember the best, move the stop if it gained
        a tick (called by the pipeline only for symbols in ``trailing``)."""
        plan = self.plans.get(symbol)
        if plan is None:
            return
        position = self._portfolio.quantity(symbol)
        if position == 0:
            return
        best = plan.best
        if math.isnan(best) or (price > best if position > 0 else price < best):
            plan.best = price
            stop = self.stops.get(symbol)
            if stop is None or stop.stop_price is None:
                return
            trailed = self._trailed_price(symbol, plan, position)
            side = SELL if position > 0 else BUY
            if trailed is not None and _protects_more(side, trailed, stop.stop_price):
                self.sync(symbol)

    # ------------------------------------------------------------- timer
    def on_timer(self) -> None:
        """A change the broker never answered is given up on after CHANGE_TIMEOUT, and
        the symbol looked at again."""
        if not self._changing:
            return
        now = self._clock.now()
        late = [cid for cid, at in self._changing.items() if now - at >= CHANGE_TIMEOUT]
        for cid in late:
            del self._changing[cid]
            for book in (self.stops, self.take_profits):
                for symbol, order in list(book.items()):
                    if order.client_order_id == cid:
                        logger.warning("protective order change not answered", client_order_id=cid)
                        self.sync(symbol)

    # ------------------------------------------------------------- helpers
    def _cancel(self, order: Order, reason: str) -> None:
        if order.status is PENDING_CANCEL or not order.is_working:
            return
        desk = self._desk
        assert desk is not None
        self.cancelled += 1
        desk.cancel(order.client_order_id, reason)

    def expects_stop(self, symbol: str) -> bool:
        """Whether ``symbol``'s position is to have a stop (policy on, or a plan)."""
        plan = self.plans.get(symbol)
        if plan is None:
            return self.default_pct > 0
        return plan.pct > 0 or plan.stop_price is not None


def _protects_more(side: Side, new: float, old: float) -> bool:
    """Whether stop price ``new`` locks in more than ``old`` for a stop on ``side``:
    higher for a sell stop (protecting a long), lower for a buy stop."""
    return new >= old + TICK / 2 if side is SELL else new <= old - TICK / 2


def _on_grid(price: float, *, up: bool) -> float:
    """``price`` on the tick grid, rounded away from the market's side that would make
    the stop tighter than asked (down for a long's stop, up for a short's)."""
    steps = price / TICK
    steps = math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)
    return round(steps * TICK, 2)
