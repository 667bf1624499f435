"""Daily P&L pane: today's figures with signs, loss-limit usage as a bar, leverage, breaker."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid
from textual.widgets import Label, ProgressBar

from core.backend import SystemSnapshot
from core.model import TradingState
from tui.console.widgets.base import Pane, set_label_text
from tui.console.widgets.format import money, sign_class, signed_money, signed_pct, whole_money

# (key, title, wide): pairs share a line (left, right); wide metrics take the whole line.
# Right-hand names stay short so each figure keeps its room at 120 columns (console.tcss).
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("total", "Total P&L", False),
    ("equity", "Equity", False),
    ("realized", "Realized", False),
    ("peak", "Peak", False),
    ("unrealized", "Unrealized", False),
    ("drawdown", "Drawdown", False),
    ("commissions", "Commissions", False),
    ("max_drawdown", "Max DD", False),
    ("leverage", "Leverage", True),
    ("breaker", "Breaker", True),
    ("loss", "Loss limit", True),
)


class PnlPane(Pane):
    can_focus = True  # no table inside; focusing the pane itself shows it is selected

    def __init__(self) -> None:
        super().__init__(5, "Daily P&L", id="pnl")
        self._values: dict[str, Label] = {
            key: Label(
                "",
                id=f"pnl-{key}",
                classes="pnl-value -wide" if wide else "pnl-value",
                markup=False,
            )
            for key, _, wide in METRICS
        }
        self._shown: dict[str, tuple[str, str | None]] = {}
        self.loss_bar = ProgressBar(total=100, show_eta=False, id="pnl-loss-bar")
        self._usage_shown: float | None = None

    def compose(self) -> ComposeResult:
        with Grid(id="pnl-grid"):
            for key, title, _ in METRICS:
                yield Label(title, classes="pnl-name")
                yield self._values[key]
        yield self.loss_bar

    def text_of(self, key: str) -> str:
        """What a metric shows now, as the operator reads it."""
        return self._shown.get(key, ("", None))[0]

    def _set(self, key: str, text: str, css_class: str | None = None) -> None:
        if self._shown.get(key) == (text, css_class):
            return
        old_text, old = self._shown.get(key, ("", None))
        self._shown[key] = (text, css_class)
        label = self._values[key]
        # The value boxes are sized by the grid (console.tcss), never by their text.
        set_label_text(label, old_text, text, fixed_width=True)
        if old != css_class:
            if old:
                label.remove_class(old)
            if css_class:
                label.add_class(css_class)

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        p, risk = snapshot.pnl, snapshot.risk
        self._set("total", signed_money(p.total), sign_class(p.total))
        self._set("realized", signed_money(p.realized), sign_class(p.realized))
        self._set("unrealized", signed_money(p.unrealized), sign_class(p.unrealized))
        # Commissions are a cost: shown as a negative amount.
        self._set("commissions", signed_money(-p.commissions), sign_class(-p.commissions))
        # Whole dollars: cents of a six- or seven-figure account are noise, and a
        # 1,000,000.00 paper account would not fit beside its neighbour at 120 columns.
        self._set("equity", whole_money(p.equity))
        self._set("peak", whole_money(p.peak_equity))
        self._set("drawdown", signed_pct(-p.drawdown_pct), sign_class(-p.drawdown_pct))
        self._set("max_drawdown", signed_pct(-p.max_drawdown_pct), sign_class(-p.max_drawdown_pct))
        over = p.leverage > risk.max_leverage
        self._set(
            "leverage",
            f"{p.leverage:.2f}x gross of {risk.max_leverage:.2f}x max" + ("  OVER" if over else ""),
            "cell--alert" if over else None,
        )
        if risk.state is TradingState.TRIPPED:
            self._set("breaker", f"TRIPPED: {risk.trip_reason}", "cell--alert")
        else:
            self._set("breaker", "armed")
        usage = risk.loss_limit_usage
        self._set(
            "loss",
            f"{usage:.0%} used of -{money(risk.daily_loss_limit)} daily",
            "cell--alert" if usage >= 0.75 else None,
        )
        percent = round(min(usage, 1.0) * 100, 1)
        if percent != self._usage_shown:
            self._usage_shown = percent
            self.loss_bar.update(progress=percent)
            self.loss_bar.set_class(percent >= 75, "-danger")
