"""SnapshotBuilder: what the console shows, built from the core's state on demand.

The console asks 4-10 times a second (ARCHITECTURE rule 2); the core never waits
for it. Parts that change with every quote (quotes, positions, P&L) are rebuilt on
each call; the order list and the alert list are rebuilt only when they changed
since the last snapshot (the execution engine's change count, the alert history's
newest entry), so a pane can skip them when it is handed the very same tuple.
The values built (SystemSnapshot and its rows) are defined in core.backend.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from itertools import islice

from core.backend import (
    IndicatorRow,
    OrderRow,
    PositionRow,
    QuoteRow,
    RiskView,
    StopState,
    SystemSnapshot,
)
from core.breaker import CircuitBreaker
from core.brokers.base import Broker
from core.bus import EventBus
from core.clock import Clock
from core.events import BarClosed
from core.execution import QUEUED_DISCONNECTED, ExecutionEngine
from core.marketdata import MarketDataFeed
from core.model import Alert, Order, OrderStatus, Position, TradingMode
from core.portfolio import Portfolio
from core.risk import RiskManager
from core.strategy.base import Strategy

SPARKLINE_POINTS = 60
ORDER_ROWS = 200


class SnapshotBuilder:
    def __init__(
        self,
        *,
        mode: TradingMode,
        symbols: tuple[str, ...],
        bus: EventBus,
        clock: Clock,
        broker: Broker,
        feed: MarketDataFeed,
        portfolio: Portfolio,
        risk: RiskManager,
        breaker: CircuitBreaker,
        execution: ExecutionEngine,
        strategy: Strategy,
        alerts: deque[Alert],
        day_open_mids: Mapping[str, float],
    ) -> None:
        self._mode = mode
        self._symbols = symbols
        self._clock = clock
        self._broker = broker
        self._feed = feed
        self._portfolio = portfolio
        self._risk = risk
        self._breaker = breaker
        self._execution = execution
        self._strategy = strategy
        self._alerts = alerts
        self._day_open_mids = day_open_mids
        # Recent bar closes per symbol, oldest first: the indicator pane's sparkline.
        self._history: dict[str, deque[float]] = {
            s: deque(maxlen=SPARKLINE_POINTS) for s in symbols
        }
        self._orders: tuple[OrderRow, ...] = ()
        self._orders_at = -1  # the execution engine's change count they were built at
        self._alert_rows: tuple[Alert, ...] = ()
        self._alerts_at: tuple[int, int] = (0, 0)  # (length, id of the newest) then
        bus.subscribe(BarClosed, self._on_bar)

    def _on_bar(self, event: BarClosed) -> None:
        bar = event.bar
        history = self._history.get(bar.symbol)
        if history is not None:
            history.append(bar.close)

    def build(self) -> SystemSnapshot:
        account = self._broker.account_values()
        risk = self._risk
        feed = self._feed
        return SystemSnapshot(
            now=self._clock.now(),
            mode=self._mode,
            account_id=account.account_id,
            broker_name=self._broker.name,
            connected=self._broker.connected,
            risk=RiskView(
                state=risk.state,
                state_reason=risk.state_reason,
                halt_reason=risk.halt_reason,
                trip_reason=risk.trip_reason,
                daily_loss_limit=self._breaker.limits.daily_loss_limit,
                loss_limit_usage=self._breaker.loss_limit_usage(),
                max_leverage=risk.limits.max_leverage,
                clamped=risk.clamped_count,
                rejected=risk.rejected_count,
            ),
            pnl=self._portfolio.summary(),
            quotes=tuple(self._quote_row(s) for s in self._symbols),
            indicators=tuple(self._indicator_row(s) for s in self._symbols),
            positions=self._position_rows(self._broker.positions()),
            orders=self._order_rows(),
            working_orders=self._execution.working_count,
            alerts=self._alert_list(),
            stale_symbols=tuple(feed.stale_symbols()),
            quotes_accepted=sum(feed.accepted.values()),
            quotes_rejected=sum(feed.rejected.values()),
            strategy_name=type(self._strategy).__name__,
        )

    def _quote_row(self, symbol: str) -> QuoteRow:
        feed = self._feed
        q = feed.latest(symbol)
        if q is None:
            return QuoteRow(symbol, None, None, None, None, None, None, "-", True, 0)
        open_mid = self._day_open_mids.get(symbol)
        change = (q.mid / open_mid - 1.0) * 100.0 if open_mid else None
        return QuoteRow(
            symbol=symbol,
            bid=q.bid,
            ask=q.ask,
            last=q.last,
            change_pct=change,
            spread=q.spread,
            age_seconds=feed.age_seconds(symbol),
            source=str(q.source),
            stale=feed.is_stale(symbol),
            rejected=feed.rejected[symbol],
        )

    def _indicator_row(self, symbol: str) -> IndicatorRow:
        view = self._strategy.indicator_view(symbol)
        return IndicatorRow(
            symbol=symbol,
            values=tuple(view.values.items()),
            signal=view.signal,
            target=self._execution.target(symbol) if view.target is None else view.target,
            history=tuple(self._history[symbol]),
        )

    def _position_rows(self, broker_positions: dict[str, int]) -> tuple[PositionRow, ...]:
        portfolio = self._portfolio
        symbols = sorted(
            {s for s, p in portfolio.positions.items() if p.quantity or p.realized_pnl}
            | set(broker_positions)
        )
        rows = []
        protection = self._execution.protection
        stops = protection.stops
        for s in symbols:
            # A read: a symbol only the broker holds gets a flat row, not a new position
            # in the books (Portfolio.position would add one).
            p = portfolio.positions.get(s) or Position(s)
            broker_qty = broker_positions.get(s, 0)
            stop = stops.get(s)
            rows.append(
                PositionRow(
                    symbol=s,
                    quantity=p.quantity,
                    avg_cost=p.avg_cost,
                    market_value=p.market_value,
                    unrealized=p.unrealized_pnl,
                    realized=p.realized_pnl,
                    broker_quantity=broker_qty,
                    reconciled=broker_qty == p.quantity,
                    stop_price=None if stop is None else stop.stop_price,
                    stop_state=_stop_state(stop),
                    stop_quantity=0 if stop is None else stop.remaining,
                    stop_expected=protection.expects_stop(s),
                )
            )
        return tuple(rows)

    def _order_rows(self) -> tuple[OrderRow, ...]:
        execution = self._execution
        if execution.changes == self._orders_at:
            return self._orders
        # The newest first, without copying every order held.
        newest = islice(reversed(execution.orders.values()), ORDER_ROWS)
        held = execution.held
        self._orders = tuple(
            OrderRow(
                client_order_id=o.client_order_id,
                created_at=o.created_at,
                symbol=o.symbol,
                side=o.side,
                quantity=o.quantity,
                filled=o.filled_quantity,
                order_type=o.order_type,
                limit_price=o.limit_price,
                avg_fill_price=o.avg_fill_price,
                status=o.status,
                message=o.last_message,
                stop_price=o.stop_price,
                tif=o.tif,
                role=o.role,
                queued=o.client_order_id in held and o.last_message == QUEUED_DISCONNECTED,
            )
            for o in newest
        )
        self._orders_at = execution.changes
        return self._orders

    def _alert_list(self) -> tuple[Alert, ...]:
        alerts = self._alerts
        at = (len(alerts), id(alerts[-1]) if alerts else 0)
        if at != self._alerts_at:
            self._alert_rows = tuple(reversed(alerts))  # newest first
            self._alerts_at = at
        return self._alert_rows


def _stop_state(stop: Order | None) -> StopState:
    """RESTING once the broker has acknowledged it (PENDING while sent, not yet answered)."""
    if stop is None or not stop.is_working:
        return StopState.NONE
    return StopState.PENDING if stop.status is OrderStatus.PENDING_SUBMIT else StopState.RESTING
