"""Backtest figures from an equity curve and the fills, plus the canonical orders file.

Definitions (what the report's numbers mean):
- **total return**: final equity / starting equity − 1.
- **CAGR**: (final / starting) ^ (1 / years) − 1, years = run span / 365.25 days; not
  given for runs shorter than a day (annualising hours of data says nothing).
- **max drawdown**: the largest fall from a running peak of the equity curve, as a
  fraction of that peak (the curve has one point per bar interval with data).
- **Sharpe**: mean / sample standard deviation of the curve's simple returns from one
  point to the next, times √(returns per year), where returns per year is the count of
  returns divided by the run's span in years — the observed sampling rate, so daily
  bars give ≈252 and gaps (nights, weekends) count as they happened. Risk-free rate 0.
  Not given with fewer than two returns or no variation.
- **exposure**: the fraction of the run's time with any position open, from the fill
  times (exact, independent of the curve's sampling).
- **round trips**: per symbol, from flat to flat; a fill that flips the position closes
  one trip and opens the next, its commission split by quantity. A trip's P&L is its
  realized P&L net of its commissions; a win is a trip with P&L > 0. **Win rate** is
  wins / closed trips (a trip still open at the end is not counted).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from core.model import Fill, Order

_YEAR_SECONDS = 365.25 * 86_400


@dataclass(frozen=True, slots=True)
class RoundTrip:
    symbol: str
    direction: int  # +1 long, -1 short
    opened_at: datetime
    closed_at: datetime
    max_quantity: int  # largest absolute position during the trip
    pnl: float  # realized, net of commissions
    commissions: float

    @property
    def won(self) -> bool:
        return self.pnl > 0


@dataclass(frozen=True, slots=True)
class BacktestMetrics:
    start: datetime
    end: datetime
    starting_equity: float
    final_equity: float
    total_return: float
    cagr: float | None
    max_drawdown: float  # fraction of the peak, >= 0
    sharpe: float | None
    returns_per_year: float | None  # the annualisation factor's basis
    exposure: float  # fraction of the run's time in the market
    fills: int
    round_trips: int
    wins: int
    win_rate: float | None
    commissions: float


@dataclass(slots=True)
class _OpenTrip:
    direction: int
    opened_at: datetime
    quantity: int = 0
    max_quantity: int = 0
    avg_cost: float = 0.0
    realized: float = 0.0
    commissions: float = 0.0


def round_trips(fills: Iterable[Fill]) -> list[RoundTrip]:
    """Closed round trips, in the order they closed (see the module docstring)."""
    open_trips: dict[str, _OpenTrip] = {}
    closed: list[RoundTrip] = []
    for fill in fills:
        remaining = fill.quantity
        sign = fill.side.sign
        trip = open_trips.get(fill.symbol)
        while remaining > 0:
            if trip is None:
                trip = open_trips[fill.symbol] = _OpenTrip(sign, fill.ts)
            share = remaining / fill.quantity
            if trip.direction == sign:  # opening or adding
                total = trip.quantity + remaining
                trip.avg_cost = (trip.avg_cost * trip.quantity + fill.price * remaining) / total
                trip.quantity = total
                trip.max_quantity = max(trip.max_quantity, total)
                trip.commissions += fill.commission * share
                remaining = 0
                continue
            closing = min(remaining, trip.quantity)
            trip.realized += closing * (fill.price - trip.avg_cost) * trip.direction
            trip.commissions += fill.commission * closing / fill.quantity
            trip.quantity -= closing
            remaining -= closing
            if trip.quantity == 0:
                closed.append(
                    RoundTrip(
                        fill.symbol,
                        trip.direction,
                        trip.opened_at,
                        fill.ts,
                        trip.max_quantity,
                        trip.realized - trip.commissions,
                        trip.commissions,
                    )
                )
                del open_trips[fill.symbol]
                trip = None  # a remainder flips the position: it opens the next trip
    return closed


def exposure(fills: Iterable[Fill], start: datetime, end: datetime) -> float:
    """Fraction of [start, end] during which any position was open."""
    span = (end - start).total_seconds()
    if span <= 0:
        return 0.0
    positions: dict[str, int] = {}
    open_since: datetime | None = None
    held = timedelta(0)
    for fill in fills:
        positions[fill.symbol] = positions.get(fill.symbol, 0) + fill.signed_quantity
        in_market = any(positions.values())
        if in_market and open_since is None:
            open_since = fill.ts
        elif not in_market and open_since is not None:
            held += fill.ts - open_since
            open_since = None
    if open_since is not None:
        held += max(end - open_since, timedelta(0))
    return min(1.0, held.total_seconds() / span)


def max_drawdown(equity: Sequence[float]) -> float:
    peak = -math.inf
    worst = 0.0
    for value in equity:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return worst


def sharpe(equity: Sequence[float], years: float) -> tuple[float | None, float | None]:
    """(annualised Sharpe, returns per year) of the curve's point-to-point returns."""
    returns = [b / a - 1.0 for a, b in pairwise(equity) if a > 0]
    if len(returns) < 2 or years <= 0:
        return None, None
    per_year = len(returns) / years
    mean = math.fsum(returns) / len(returns)
    variance = math.fsum((r - mean) ** 2 for r in returns) / (len(returns) - 1)
    if variance <= 0:
        return None, per_year
    return mean / math.sqrt(variance) * math.sqrt(per_year), per_year


def compute_metrics(
    times: Sequence[datetime],
    equity: Sequence[float],
    fills: Sequence[Fill],
) -> BacktestMetrics:
    """The report's figures from the equity curve (time, equity) and the fills."""
    if not times or len(times) != len(equity):
        raise ValueError("the equity curve needs at least one point, with a time for each")
    start, end = times[0], times[-1]
    first, last = equity[0], equity[-1]
    years = (end - start).total_seconds() / _YEAR_SECONDS
    total_return = last / first - 1.0 if first > 0 else math.nan
    cagr = None
    if (end - start) >= timedelta(days=1) and first > 0 and last > 0:
        cagr = (last / first) ** (1.0 / years) - 1.0
    sharpe_value, per_year = sharpe(equity, years)
    trips = round_trips(fills)
    wins = sum(1 for t in trips if t.won)
    return BacktestMetrics(
        start=start,
        end=end,
        starting_equity=first,
        final_equity=last,
        total_return=total_return,
        cagr=cagr,
        max_drawdown=max_drawdown(equity),
        sharpe=sharpe_value,
        returns_per_year=per_year,
        exposure=exposure(fills, start, end),
        fills=len(fills),
        round_trips=len(trips),
        wins=wins,
        win_rate=wins / len(trips) if trips else None,
        commissions=math.fsum(f.commission for f in fills),
    )


def order_record(order: Order) -> dict[str, object]:
    """One order as plain JSON values, every field, times in ISO 8601 UTC."""
    return {
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": str(order.side),
        "quantity": order.quantity,
        "order_type": str(order.order_type),
        "limit_price": order.limit_price,
        "status": str(order.status),
        "reason": order.reason,
        "created_at": order.created_at.isoformat(),
        "updated_at": None if order.updated_at is None else order.updated_at.isoformat(),
        "filled_quantity": order.filled_quantity,
        "avg_fill_price": order.avg_fill_price,
        "commission": order.commission,
        "broker_order_id": order.broker_order_id,
        "last_message": order.last_message,
        "reduce_only": order.reduce_only,
    }


def canonical_orders(orders: Iterable[Order]) -> bytes:
    """JSON lines sorted by client order id, keys sorted: equal runs give equal bytes."""
    records = sorted((order_record(o) for o in orders), key=lambda r: str(r["client_order_id"]))
    lines = [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in records]
    return "".join(line + "\n" for line in lines).encode("utf-8")
