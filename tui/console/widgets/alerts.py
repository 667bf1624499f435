"""Alerts pane: stored history plus live alerts, newest first, severity as a text tag."""

from __future__ import annotations

from datetime import date, tzinfo

from textual.app import ComposeResult
from textual.widget import Widget

from core.backend import SystemSnapshot
from core.model import Alert, AlertSeverity
from tui.console.widgets.base import Cell, Column, DiffTable, Pane, seq_sort_key
from tui.console.widgets.format import SEVERITY_TAGS

COLUMNS = (
    Column("time", "Time", width=8),
    Column("severity", "Sev", width=6),
    Column("message", "Message", width=40),
    Column("seq", "#", "right", 3),  # the sort key, kept out of the way
)

_SEVERITY_CLASS = {
    AlertSeverity.INFO: "cell--dim",
    AlertSeverity.WARNING: "cell--warn",
    AlertSeverity.CRITICAL: "cell--alert",
}


def alert_cells(alert: Alert, seq: int, tz: tzinfo, today: date) -> tuple[Cell, ...]:
    local = alert.ts.astimezone(tz)
    # History spans days: an alert from another day shows its date instead of seconds.
    when = local.strftime("%H:%M:%S") if local.date() == today else local.strftime("%m-%d %H:%M")
    return (
        when,
        (SEVERITY_TAGS[alert.severity], _SEVERITY_CLASS[alert.severity]),
        alert.message,
        str(seq),
    )


class AlertsPane(Pane):
    def __init__(self, tz: tzinfo) -> None:
        super().__init__(6, "Alerts", id="alerts")
        self._tz = tz
        # Alerts have no id, but the core hands out the same immutable objects
        # every snapshot; holding them here keeps their id() unique while mapped.
        self._known: dict[int, tuple[Alert, int]] = {}
        self._next = 1
        self.table = DiffTable(
            COLUMNS, sort_column="seq", sort_key=seq_sort_key, sort_reverse=True, id="alerts-table"
        )

    def compose(self) -> ComposeResult:
        yield self.table

    def focus_target(self) -> Widget:
        return self.table

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        alerts = snapshot.alerts
        for alert in reversed(alerts):  # oldest first, so newer alerts get higher numbers
            if id(alert) not in self._known:
                self._known[id(alert)] = (alert, self._next)
                self._next += 1
        if len(self._known) > len(alerts):
            live = {id(a) for a in alerts}
            self._known = {k: v for k, v in self._known.items() if k in live}
        today = snapshot.now.astimezone(self._tz).date()
        rows = []
        for alert in alerts:
            seq = self._known[id(alert)][1]
            rows.append((f"a{seq}", alert_cells(alert, seq, self._tz, today)))
        self.table.sync(rows)
