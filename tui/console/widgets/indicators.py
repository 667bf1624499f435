"""Indicators pane: the strategy's values, signal and target per symbol, and a price sparkline.

The table carries a short text trend per symbol; below it a Sparkline widget
draws the longer bar-close history of the highlighted symbol.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Label, Sparkline

from core.backend import IndicatorRow, SystemSnapshot
from tui.console.widgets.base import Cell, Column, DiffTable, Pane, set_label_text
from tui.console.widgets.format import number, signed_qty, spark

TREND_POINTS = 12

_SIGNAL_CLASS = {"long": "cell--positive", "short": "cell--negative"}


def indicator_columns(names: list[str]) -> list[Column]:
    return [
        Column("symbol", "Symbol"),
        *(Column(f"v:{name}", name, "right", 7) for name in names),
        Column("signal", "Signal", width=10),  # "warming up"
        Column("target", "Target", "right", 6),
        Column("trend", "Trend", width=TREND_POINTS),
    ]


def indicator_cells(row: IndicatorRow, names: list[str]) -> tuple[Cell, ...]:
    values = dict(row.values)
    return (
        row.symbol,
        *(number(values.get(name)) for name in names),
        (row.signal, _SIGNAL_CLASS.get(row.signal)),
        signed_qty(row.target),
        spark(row.history, TREND_POINTS),
    )


class IndicatorsPane(Pane):
    def __init__(self) -> None:
        super().__init__(2, "Indicators", id="indicators")
        self.table = DiffTable(id="indicators-table")
        self.sparkline = Sparkline([], id="indicators-sparkline")
        self.caption = Label("", id="indicators-caption", markup=False)
        self._names: list[str] = []
        self._selected: str | None = None  # symbol whose history the sparkline draws
        self._drawn: tuple[str | None, tuple[float, ...]] = (None, ())
        self._caption_text = ""

    def compose(self) -> ComposeResult:
        yield self.table
        with Horizontal(id="indicators-chart"):
            yield self.caption
            yield self.sparkline

    def focus_target(self) -> Widget:
        return self.table

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._selected = event.row_key.value

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        rows = snapshot.indicators
        if not rows:
            return
        if not self.table.has_columns:
            # The strategy names its indicators; they are fixed for the session.
            self._names = [name for name, _ in rows[0].values]
            self.table.set_columns(indicator_columns(self._names))
        self.table.sync((row.symbol, indicator_cells(row, self._names)) for row in rows)
        self._update_sparkline(rows)

    def _update_sparkline(self, rows: tuple[IndicatorRow, ...]) -> None:
        chosen = next((r for r in rows if r.symbol == self._selected), rows[0])
        if self._drawn != (chosen.symbol, chosen.history):
            self._drawn = (chosen.symbol, chosen.history)
            self.sparkline.data = list(chosen.history)
        if chosen.history:
            low, high = min(chosen.history), max(chosen.history)
            text = f"{chosen.symbol} {len(chosen.history)} bars {number(low)}-{number(high)}"
        else:
            text = f"{chosen.symbol}: no bars yet"
        if text != self._caption_text:
            set_label_text(self.caption, self._caption_text, text)
            self._caption_text = text
