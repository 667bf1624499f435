"""Positions pane: our quantity beside the broker's, with a reconciliation mark."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widget import Widget

from core.backend import PositionRow, SystemSnapshot
from tui.console.widgets.base import Cell, Column, DiffTable, Pane
from tui.console.widgets.format import MISSING, price, sign_class, signed_money, signed_qty

COLUMNS = (
    Column("symbol", "Symbol"),
    Column("qty", "Qty", "right", 4),
    Column("avg", "Avg cost", "right", 8),
    Column("value", "Mkt value", "right", 9),
    Column("unrealized", "Unreal.", "right", 7),
    Column("realized", "Real.", "right", 6),
    Column("broker", "Broker", "right", 6),
    Column("recon", "Recon", width=5),
)


def position_cells(row: PositionRow) -> tuple[Cell, ...]:
    broker = MISSING if row.broker_quantity is None else signed_qty(row.broker_quantity)
    recon: Cell = "ok" if row.reconciled else ("MISMATCH", "cell--alert")
    return (
        row.symbol,
        signed_qty(row.quantity),
        price(row.avg_cost) if row.quantity else MISSING,
        signed_money(row.market_value),
        (signed_money(row.unrealized), sign_class(row.unrealized)),
        (signed_money(row.realized), sign_class(row.realized)),
        broker if row.reconciled else (broker, "cell--alert"),
        recon,
    )


def _symbol_key(cell: object) -> str:
    return getattr(cell, "plain", str(cell))


class PositionsPane(Pane):
    def __init__(self) -> None:
        super().__init__(3, "Positions", id="positions")
        self.table = DiffTable(
            COLUMNS, sort_column="symbol", sort_key=_symbol_key, id="positions-table"
        )

    def compose(self) -> ComposeResult:
        yield self.table

    def focus_target(self) -> Widget:
        return self.table

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        self.table.sync((row.symbol, position_cells(row)) for row in snapshot.positions)
