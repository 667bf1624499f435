"""Positions, average cost, realized/unrealized P&L, equity, intraday peak and drawdown.

Equity is cash plus every position marked at its latest mid. Daily figures are
measured from the last daily reset, so `daily_pnl` is exactly
`equity - equity_at_reset` = realized today + change in unrealized − commissions today.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.model import Fill, Position

# Market value is re-summed from the positions every this many incremental marks.
_RECOMPUTE_EVERY = 10_000


@dataclass(frozen=True, slots=True)
class PnlSummary:
    realized: float
    unrealized: float
    commissions: float
    total: float  # realized + unrealized change since reset − commissions
    equity: float
    start_equity: float
    peak_equity: float
    drawdown_pct: float
    max_drawdown_pct: float
    gross_exposure: float
    leverage: float


class Portfolio:
    def __init__(self, starting_cash: float) -> None:
        self.cash = starting_cash
        self.positions: dict[str, Position] = {}
        self._day_realized = 0.0
        self._day_commissions = 0.0
        self._unrealized_at_reset = 0.0
        self._start_equity = starting_cash
        self._peak_equity = starting_cash
        self._max_drawdown_pct = 0.0
        # Market value is kept incrementally because every quote re-marks a position and
        # the breaker reads equity on every quote; it is recomputed exactly on each fill
        # and every _RECOMPUTE_EVERY marks so rounding cannot drift.
        self._market_value = 0.0
        self._marks_since_recompute = 0

    # ----------------------------------------------------------------- updates
    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        return pos

    def quantity(self, symbol: str) -> int:
        pos = self.positions.get(symbol)
        return pos.quantity if pos else 0

    def apply_fill(self, fill: Fill) -> float:
        """Book a fill; returns the P&L it realized (before commission)."""
        pos = self.position(fill.symbol)
        if math.isnan(pos.mark_price):
            pos.mark_price = fill.price
        signed = fill.signed_quantity
        q0 = pos.quantity
        realized = 0.0
        if q0 == 0 or (q0 > 0) == (signed > 0):
            new_qty = q0 + signed
            pos.avg_cost = (pos.avg_cost * abs(q0) + fill.price * abs(signed)) / abs(new_qty)
        else:
            closing = min(abs(signed), abs(q0))
            realized = closing * (fill.price - pos.avg_cost) * (1 if q0 > 0 else -1)
            new_qty = q0 + signed
            if new_qty == 0:
                pos.avg_cost = 0.0
            elif (new_qty > 0) != (q0 > 0):
                pos.avg_cost = fill.price  # flipped: the remainder opened at this price
        pos.quantity = new_qty
        pos.realized_pnl += realized
        pos.commissions += fill.commission
        self.cash -= signed * fill.price + fill.commission
        self._day_realized += realized
        self._day_commissions += fill.commission
        self._recompute_market_value()
        self._update_peak()
        return realized

    def _recompute_market_value(self) -> None:
        # sum(p.market_value ...) without a generator and a property per position (every
        # fill comes here): the same additions in the same order, so the same float.
        value: float = 0
        for p in self.positions.values():
            quantity = p.quantity
            value += quantity * p.mark_price if quantity else 0.0
        self._market_value = value
        self._marks_since_recompute = 0

    def mark(self, symbol: str, price: float) -> bool:
        """Re-mark ``symbol``; returns whether equity may have moved (a position is held).

        The quote path uses the answer to skip P&L limit checks when nothing changed.
        """
        pos = self.positions.get(symbol)
        if pos is None:
            return False
        previous = pos.mark_price
        pos.mark_price = price
        quantity = pos.quantity
        if not quantity:
            return False
        marks = self._marks_since_recompute = self._marks_since_recompute + 1
        # `previous != previous` is math.isnan(previous) without the call.
        if marks >= _RECOMPUTE_EVERY or previous != previous:
            self._recompute_market_value()
        else:
            self._market_value += quantity * (price - previous)
        self._update_peak()
        return True

    def _update_peak(self) -> None:
        """The intraday peak and the worst drawdown from it, after equity moved."""
        equity = self.cash + self._market_value
        peak = self._peak_equity
        if equity > peak:
            self._peak_equity = equity
        elif peak > 0:
            dd = (peak - equity) / peak * 100.0
            if dd > self._max_drawdown_pct:
                self._max_drawdown_pct = dd

    def start_new_day(self) -> None:
        """Daily reset: today's figures start from the current equity and positions."""
        self._day_realized = 0.0
        self._day_commissions = 0.0
        self._unrealized_at_reset = self.unrealized
        self._start_equity = self.equity
        self._peak_equity = self._start_equity
        self._max_drawdown_pct = 0.0

    def rebase_cash(self, cash: float) -> None:
        """Take the broker's cash as the truth; today's P&L is unchanged by the shift."""
        shift = cash - self.cash
        self.cash = cash
        self._start_equity += shift
        self._peak_equity += shift

    # ----------------------------------------------------------------- figures
    @property
    def unrealized(self) -> float:
        return sum(p.unrealized_pnl for p in self.positions.values())

    @property
    def market_value(self) -> float:
        return self._market_value

    @property
    def gross_exposure(self) -> float:
        # sum(abs(p.market_value) ...) without a generator and a property per position:
        # risk reads this for every order.
        # Same types as that sum too: int 0 with no positions, float otherwise.
        gross: float = 0
        for p in self.positions.values():
            quantity = p.quantity
            gross += abs(quantity * p.mark_price) if quantity else 0.0
        return gross

    # equity, daily_pnl and drawdown_pct are read for every quote that moves a held
    # position (the breaker check): computed from the fields, not through each other.
    @property
    def equity(self) -> float:
        return self.cash + self._market_value

    @property
    def daily_pnl(self) -> float:
        return self.cash + self._market_value - self._start_equity

    @property
    def drawdown_pct(self) -> float:
        peak = self._peak_equity
        if peak <= 0:
            return 0.0
        dd = (peak - (self.cash + self._market_value)) / peak * 100.0
        return dd if dd > 0.0 else 0.0

    def summary(self) -> PnlSummary:
        equity = self.equity
        gross = self.gross_exposure
        unrealized_change = self.unrealized - self._unrealized_at_reset
        return PnlSummary(
            realized=self._day_realized,
            unrealized=unrealized_change,
            commissions=self._day_commissions,
            total=self._day_realized + unrealized_change - self._day_commissions,
            equity=equity,
            start_equity=self._start_equity,
            peak_equity=self._peak_equity,
            drawdown_pct=self.drawdown_pct,
            max_drawdown_pct=self._max_drawdown_pct,
            gross_exposure=gross,
            leverage=gross / equity if equity > 0 else math.inf,
        )
