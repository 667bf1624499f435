"""Quotes pane: the latest validated quote per symbol, stale ones marked in words."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widget import Widget

from core.backend import QuoteRow, SystemSnapshot
from tui.console.widgets.base import Cell, Column, DiffTable, Pane
from tui.console.widgets.format import age, price, sign_class, signed_pct, spread

COLUMNS = (
    Column("symbol", "Symbol"),
    Column("bid", "Bid", "right", 7),
    Column("ask", "Ask", "right", 7),
    Column("last", "Last", "right", 7),
    Column("chg", "Chg%", "right", 6),
    Column("spread", "Sprd", "right", 4),
    Column("age", "Age", "right", 3),
    Column("source", "Src", width=4),
    Column("flag", "Flag", width=5),
)


def quote_cells(row: QuoteRow) -> tuple[Cell, ...]:
    flag: Cell = ("STALE", "cell--alert") if row.stale else ""
    if not row.stale and row.rejected:
        # Bad ticks dropped by validation today: worth a glance, not an alarm.
        flag = (f"{row.rejected} bad", "cell--warn")
    return (
        (row.symbol, "cell--alert") if row.stale else row.symbol,
        price(row.bid),
        price(row.ask),
        price(row.last),
        (signed_pct(row.change_pct), sign_class(row.change_pct)),
        spread(row.spread),
        (age(row.age_seconds), "cell--alert") if row.stale else age(row.age_seconds),
        row.source,
        flag,
    )


class QuotesPane(Pane):
    def __init__(self) -> None:
        super().__init__(1, "Quotes", id="quotes")
        self.table = DiffTable(COLUMNS, id="quotes-table")

    def compose(self) -> ComposeResult:
        yield self.table

    def focus_target(self) -> Widget:
        return self.table

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        self.table.sync((row.symbol, quote_cells(row)) for row in snapshot.quotes)
