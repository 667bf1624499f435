"""Turns trading events into operator alerts and keeps the recent ones for the console.

Alerts are published as `AlertRaised` on the bus; the recorder stores them and
the `AlertManager` (core.alerting) enqueues them for WhatsApp, Telegram and
e-mail, so raising an alert never waits on a network. Health checks, the crash
report and failing alert channels raise their alerts through here as well, so
the console's alert list shows all of them.

A broker outage is one incident: the first "disconnected" report raises one
critical alert and starts the outage clock (``disconnected_since``, which the
"still disconnected" health check reads too); the reports of each failed
reconnect attempt after it are only logged; the reconnect raises one alert
with the outage's length. Connection incidents are kept in the ``alerts``
table (keys ``broker_disconnected`` / ``broker_connected``), not in
``trading_state_changes``: a disconnect does not change the trading state
(ACTIVE stays ACTIVE, HALTED stays HALTED; risk refuses risk-increasing
orders by itself while the link is down), and writing it there as a state
would make that table say the operator's state changed when it did not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

from loguru import logger

from core.bus import EventBus
from core.clock import Clock
from core.events import (
    AlertRaised,
    BreakerReset,
    BreakerTripped,
    BrokerConnectionChanged,
    BrokerErrorReported,
    DrawdownExceeded,
    FeedSwitched,
    OrderRejected,
    OrderUpdateRefused,
    PositionMismatch,
    TradingStateChanged,
)
from core.model import Alert, AlertSeverity, TradingState

# IB's data-farm and session codes: 2103/2105/2108 a farm broke, 2104/2106/2158 it is
# back, 10197 a competing live session, 354 no market data permission, 200 unknown symbol.
_BROKER_CODE_SEVERITY: dict[int, AlertSeverity] = {
    2103: AlertSeverity.WARNING,
    2105: AlertSeverity.WARNING,
    2108: AlertSeverity.WARNING,
    2157: AlertSeverity.WARNING,
    2104: AlertSeverity.INFO,
    2106: AlertSeverity.INFO,
    2158: AlertSeverity.INFO,
    10197: AlertSeverity.CRITICAL,
    354: AlertSeverity.WARNING,
    200: AlertSeverity.WARNING,
}

_LOG_LEVEL = {
    AlertSeverity.INFO: "INFO",
    AlertSeverity.WARNING: "WARNING",
    AlertSeverity.CRITICAL: "CRITICAL",
}


class AlertRaiser:
    """Subscribes to the events an operator must hear about and raises alerts for them."""

    def __init__(self, bus: EventBus, clock: Clock, history: int = 200) -> None:
        self._bus = bus
        self._clock = clock
        self.recent: deque[Alert] = deque(maxlen=history)
        # Set by the assembly to strip configured secrets (an exception text quoted in a
        # crash alert may carry a token) before the alert is shown, stored or sent.
        self.redact: Callable[[str], str] = lambda text: text
        # Start of the open broker outage (the first disconnect report), None when up.
        self.disconnected_since: datetime | None = None
        bus.subscribe(OrderRejected, self._on_order_rejected)
        bus.subscribe(OrderUpdateRefused, self._on_update_refused)
        bus.subscribe(BreakerTripped, self._on_breaker_tripped)
        bus.subscribe(BreakerReset, self._on_breaker_reset)
        bus.subscribe(DrawdownExceeded, self._on_drawdown)
        bus.subscribe(PositionMismatch, self._on_mismatch)
        bus.subscribe(TradingStateChanged, self._on_state_changed)
        bus.subscribe(BrokerConnectionChanged, self._on_connection)
        bus.subscribe(FeedSwitched, self._on_feed_switched)
        bus.subscribe(BrokerErrorReported, self._on_broker_error)

    def raise_alert(self, severity: AlertSeverity, key: str, message: str, **fields: str) -> Alert:
        message = self.redact(message)
        alert = Alert(severity, key, message, self._clock.now(), dict(fields))
        self.recent.append(alert)
        logger.log(_LOG_LEVEL[severity], "ALERT {message}", message=message, key=key, **fields)
        self._bus.publish(AlertRaised(alert))
        return alert

    def load_history(self, alerts: list[Alert]) -> None:
        """Seed the pane with stored alerts (oldest first) on start."""
        for alert in alerts:
            self.recent.append(alert)

    def _on_order_rejected(self, e: OrderRejected) -> None:
        code = f" [{e.error_code}]" if e.error_code is not None else ""
        o = e.order
        self.raise_alert(
            AlertSeverity.WARNING,
            f"order_rejected:{o.symbol}",
            f"Order rejected{code}: {o.side} {o.quantity} {o.symbol} — {e.reason}",
            client_order_id=o.client_order_id,
            symbol=o.symbol,
        )

    def _on_update_refused(self, e: OrderUpdateRefused) -> None:
        self.raise_alert(
            AlertSeverity.CRITICAL,
            "unknown_order_state",
            f"Unknown order state: {e.reason}",
            client_order_id=e.client_order_id,
        )

    def _on_breaker_tripped(self, e: BreakerTripped) -> None:
        self.raise_alert(
            AlertSeverity.CRITICAL,
            "breaker_tripped",
            f"CIRCUIT BREAKER TRIPPED: {e.reason}. Orders cancelled, positions flattened, halted.",
        )

    def _on_breaker_reset(self, e: BreakerReset) -> None:
        self.raise_alert(AlertSeverity.WARNING, "breaker_reset", f"Breaker reset: {e.reason}")

    def _on_drawdown(self, e: DrawdownExceeded) -> None:
        self.raise_alert(
            AlertSeverity.WARNING,
            "drawdown",
            f"Drawdown {e.drawdown_pct:.2f}% from intraday peak "
            f"${e.peak_equity:,.2f} (equity ${e.equity:,.2f})",
        )

    def _on_mismatch(self, e: PositionMismatch) -> None:
        self.raise_alert(
            AlertSeverity.CRITICAL,
            f"position_mismatch:{e.symbol}",
            f"Position mismatch {e.symbol}: internal {e.internal_quantity:+d}, "
            f"broker {e.broker_quantity:+d}",
            symbol=e.symbol,
        )

    def _on_state_changed(self, e: TradingStateChanged) -> None:
        if e.state is TradingState.TRIPPED:
            return  # the breaker alert says it, with the reason
        severity = AlertSeverity.INFO if e.state is TradingState.ACTIVE else AlertSeverity.WARNING
        self.raise_alert(severity, f"state:{e.state}", f"Trading {e.state}: {e.reason}")

    def _on_connection(self, e: BrokerConnectionChanged) -> None:
        # Separate keys: a reconnect right after a disconnect is news, not a duplicate.
        since = self.disconnected_since
        if e.connected:
            self.disconnected_since = None
            if since is None:
                self.raise_alert(
                    AlertSeverity.INFO, "broker_connected", f"Broker connected: {e.message}"
                )
                return
            outage = _duration((e.ts - since).total_seconds())
            self.raise_alert(
                AlertSeverity.INFO,
                "broker_connected",
                f"Broker reconnected after {outage} disconnected: {e.message}",
            )
        elif since is None:
            self.disconnected_since = e.ts
            self.raise_alert(
                AlertSeverity.CRITICAL, "broker_disconnected", f"Broker DISCONNECTED: {e.message}"
            )
        else:
            # A failed reconnect attempt of the open incident: the console's state line shows
            # it; the operator was paged once already.
            down = _duration((e.ts - since).total_seconds())
            logger.info(
                "broker still disconnected ({down}): {message}",
                down=down,
                message=self.redact(e.message),
            )

    def _on_feed_switched(self, e: FeedSwitched) -> None:
        self.raise_alert(
            AlertSeverity.WARNING,
            f"feed:{e.symbol}",
            f"Data {e.symbol}: now {e.source} ({e.reason})",
            symbol=e.symbol,
        )

    def _on_broker_error(self, e: BrokerErrorReported) -> None:
        # Order-scoped errors are alerted as rejects; here only the broker's own
        # condition messages (data farms, competing sessions) that an operator must see.
        if e.client_order_id is not None:
            return
        severity = _BROKER_CODE_SEVERITY.get(e.code)
        if severity is not None:
            self.raise_alert(severity, f"ib:{e.code}", f"Broker [{e.code}]: {e.message}")


def broker_code_log_level(code: int) -> str:
    """The log level of a broker message: INFO for the broker's "all is well" notices
    (IB's data farms back, 2104/2106/2158), WARNING for everything else."""
    return "INFO" if _BROKER_CODE_SEVERITY.get(code) is AlertSeverity.INFO else "WARNING"


def _duration(seconds: float) -> str:
    """ "27s", "4m05s", "2h03m" """
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
