"""What every pane shares: the titled box and a DataTable that updates by difference.

ARCHITECTURE "Update tables by difference inside one batch": a full repaint of a
50x8 DataTable costs ~55 ms of CPU, the core's work per quote ~1 us. So rows
keep stable keys, only cells whose rendered text changed are rewritten, rows are
added and removed by difference, and nothing is cleared or recomposed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Label

from core.snapshot import SystemSnapshot

# A cell is its text, or its text and a component class from the .tcss
# (e.g. "cell--negative") that decides how it looks.
Cell = str | tuple[str, str | None]
Justify = Literal["left", "right", "center"]


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    justify: Justify = "left"


def set_label_text(label: Label, old: str, new: str) -> None:
    """Update a label, asking for a screen re-layout only when its width can change.

    A layout pass re-measures the whole screen (tens of ms at 120x40); a label
    whose text keeps its width (the clock, most figures) only needs a repaint.
    """
    label.update(new, layout=cell_len(new) != cell_len(old))


class Pane(Vertical):
    """A titled box on the console; number keys 1..6 select it."""

    DEFAULT_CLASSES = "pane"
    ALLOW_MAXIMIZE = True  # `z` zooms the selected pane to the full screen

    def __init__(self, number: int, title: str, *, id: str) -> None:
        super().__init__(id=id)
        self.number = number
        self.title = title
        self.border_title = f"{number} {title}"

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        raise NotImplementedError

    def focus_target(self) -> Widget:
        """The widget a number key focuses (the pane's table, usually)."""
        return self


class DiffTable(DataTable[Text]):
    """A read-only DataTable fed whole snapshots of rows that touches only what changed.

    ``sort_key``, when given, orders the rows (e.g. newest first by a sequence
    column); the table is re-sorted only when rows were added, never per frame.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = DataTable.COMPONENT_CLASSES | {
        "cell--positive",
        "cell--negative",
        "cell--warn",
        "cell--alert",
        "cell--dim",
    }

    def __init__(
        self,
        columns: Sequence[Column] = (),
        *,
        sort_column: str | None = None,
        sort_key: Callable[[Any], Any] | None = None,
        sort_reverse: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_cursor=True)
        self._columns: tuple[Column, ...] = ()
        self._rendered: dict[str, tuple[Cell, ...]] = {}
        self._sort_column = sort_column
        self._sort_key = sort_key
        self._sort_reverse = sort_reverse
        self.cell_writes = 0  # update_cell calls so far: tests and the bench read it
        if columns:
            self.set_columns(columns)

    @property
    def has_columns(self) -> bool:
        return bool(self._columns)

    def set_columns(self, columns: Sequence[Column]) -> None:
        """Define the columns once (a strategy's indicator names are known only at runtime)."""
        if self._columns:
            raise RuntimeError("DiffTable columns are set once; live data never rebuilds them")
        self._columns = tuple(columns)
        for column in self._columns:
            self.add_column(column.label, key=column.key)

    def _cell_text(self, cell: Cell, column: Column) -> Text:
        text, style_class = (cell, None) if isinstance(cell, str) else cell
        # Text, not str: a str cell is parsed as markup, and "[CRIT]" or an IB
        # message with brackets would vanish or raise.
        style = self.get_component_rich_style(style_class) if style_class else Style()
        return Text(text, style=style, justify=column.justify, no_wrap=True)

    def sync(self, rows: Iterable[tuple[str, Sequence[Cell]]]) -> None:
        """Make the table show ``rows`` (key, cells) by adding, removing and rewriting cells."""
        columns = self._columns
        seen: set[str] = set()
        added = False
        with self.app.batch_update():
            for key, cells in rows:
                new = tuple(cells)
                seen.add(key)
                old = self._rendered.get(key)
                if old is None:
                    self.add_row(
                        *(self._cell_text(c, col) for c, col in zip(new, columns, strict=True)),
                        key=key,
                    )
                    added = True
                elif old != new:
                    for column, was, cell in zip(columns, old, new, strict=True):
                        if was != cell:
                            self.update_cell(
                                key, column.key, self._cell_text(cell, column), update_width=True
                            )
                            self.cell_writes += 1
                self._rendered[key] = new
            if len(seen) != len(self._rendered):
                for key in [k for k in self._rendered if k not in seen]:
                    self.remove_row(key)
                    del self._rendered[key]
            if added and self._sort_column is not None:
                self.sort(self._sort_column, key=self._sort_key, reverse=self._sort_reverse)

    def rendered(self, key: str) -> tuple[Cell, ...] | None:
        """The cells last written for a row (what the operator sees), or None."""
        return self._rendered.get(key)


def seq_sort_key(cell: Text) -> int:
    """Sort key for a "#" column holding a sequence number."""
    return int(cell.plain or 0)
