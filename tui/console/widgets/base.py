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
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.containers import Vertical
from textual.geometry import Size
from textual.reactive import Reactive
from textual.widget import Widget
from textual.widgets import DataTable, Label
from textual.widgets.data_table import ColumnKey

from core.backend import SystemSnapshot

# A cell is its text, or its text and a component class from the .tcss
# (e.g. "cell--negative") that decides how it looks.
Cell = str | tuple[str, str | None]
Justify = Literal["left", "right", "center"]


@dataclass(frozen=True, slots=True)
class Column:
    """A table column. ``width`` is a minimum: the header is padded to it so the
    column starts as wide as its usual values and does not grow (a growing column
    re-lays out the whole screen) when the first "--" turns into a figure."""

    key: str
    label: str
    justify: Justify = "left"
    width: int = 0

    def header(self) -> Text:
        if self.justify == "right":
            return Text(self.label.rjust(self.width))
        return Text(self.label.ljust(self.width))


def set_label_text(label: Label, old: str, new: str, *, fixed_width: bool = False) -> None:
    """Update a label, asking for a screen re-layout only when its width can change.

    A layout pass re-measures the whole screen (10-40 ms at 120x40); a label
    whose box is sized by CSS (``fixed_width``) or whose text keeps its width
    (the clock) only needs a repaint.
    """
    label.update(new, layout=not fixed_width and cell_len(new) != cell_len(old))


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

    def set_alarm(self, note: str) -> None:
        """Say what needs the operator in the pane's title ("3 Positions - 1 NO STOP"),
        and mark its tab, which is all a narrow terminal shows of the other panes.
        An empty note clears both. Panes call it only when the note changes."""
        base = f"{self.number} {self.title}"
        self.border_title = f"{base} - {note}" if note else base
        self.set_class(bool(note), "-alarm")
        for tab in self.app.query(f"#tab-{self.id}").results(Label):
            tab.update(f"{base}!" if note else base)
            tab.set_class(bool(note), "-alarm")

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
        "cell--queued",
        "cell--role",
    }

    # Widget declares virtual_size with layout=True, so every added row (a new order,
    # a new alert) made Textual re-lay out the whole screen: ~30 ms at 120x40, the
    # largest single block in the shared event loop. A table's box is sized by the
    # .tcss, never by its rows; a longer or wider table only changes its scroll range.
    # A ScrollView takes its scroll range from its own virtual_size (not from the
    # layout), so updating the scrollbars is enough. When a scrollbar has to appear
    # or vanish, `show_*_scrollbar` (layout=True) still asks for the layout it needs.
    virtual_size: Reactive[Size] = Reactive(Size(0, 0), layout=False)

    def watch_virtual_size(self, size: Size) -> None:
        if self.is_mounted:
            self._scroll_update(size)
            self.refresh()

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
        self._stable_cells: dict[tuple[Any, ...], tuple[object, int, Any]] = {}
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
            self.add_column(column.header(), key=column.key)

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
                            text = self._cell_text(cell, column)
                            # Ask the table to re-measure only a cell that outgrows its
                            # column, or that was its widest and shrinks (a "Queued
                            # (disconnected)" sent as "Working" gives the width back):
                            # measuring every changed cell costs a Rich pass each.
                            width = self.columns[ColumnKey(column.key)].content_width
                            resize = text.cell_len > width or (
                                text.cell_len < width and _cell_width(was) == width
                            )
                            self.update_cell(key, column.key, text, update_width=resize)
                            self.cell_writes += 1
                self._rendered[key] = new
            if len(seen) != len(self._rendered):
                for key in [k for k in self._rendered if k not in seen]:
                    self.remove_row(key)
                    self._forget_row(key)
                    del self._rendered[key]
            if added and self._sort_column is not None:
                self.sort(self._sort_column, key=self._sort_key, reverse=self._sort_reverse)

    # -- render cache ------------------------------------------------------
    # Textual 8's DataTable keys every render cache on one table-wide update
    # counter, so a single update_cell re-renders every visible cell through Rich
    # (~0.1 ms each: the bulk of a frame at 20 symbols). This cache keys a body
    # cell on its row key, column and style and checks the cell *object* by
    # identity: sync() replaces the object only when the text changed, so
    # unchanged cells reuse their rendered lines. A row that only moved (a new
    # order on top of a newest-first table) gets its mouse metadata relabelled
    # instead of a full re-render. Private hooks, kept in this module alone; Textual is
    # pinned for them (pyproject.toml).
    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> Any:
        column_key = self._column_locations.get_key(column_index)
        if column_key is None:  # row labels: this table has none
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        value: object
        if row_index == -1:
            # The header is redrawn with every refresh of the table; its labels never change.
            row_key = self._header_row_key
            value = self.columns[column_key].label
        else:
            found = self._row_locations.get_key(row_index)
            if found is None:
                return super()._render_cell(
                    row_index, column_index, base_style, width, cursor, hover
                )
            row_key = found
            value = self._data[row_key][column_key]
        key = (
            row_key,
            column_key,
            column_index,
            base_style,
            width,
            cursor,
            hover,
            self._show_hover_cursor,
            self._pseudo_class_state,
        )
        hit = self._stable_cells.get(key)
        if hit is not None and hit[0] is value:
            if hit[1] == row_index:
                return hit[2]
            lines: Any = _relabel_row(hit[2], row_index, column_index)
        else:
            lines = self._render_plain_cell(
                value, row_index, column_index, base_style, width, cursor, hover
            ) or super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        self._stable_cells[key] = (value, row_index, lines)
        return lines

    def _render_plain_cell(
        self,
        value: object,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool,
        hover: bool,
    ) -> list[list[Segment]] | None:
        """The segments DataTable would draw for a one-line, one-style Text cell, or None.

        DataTable renders each changed cell through a full Rich pass (Padding inside
        Styled through console.render_lines): ~0.1 ms a cell, half of a repaint when
        20 quote rows change every tick. Every cell this table writes is a single
        style, no-wrap, single-width Text on a one-line row, which comes down to
        "pad, justify, crop, style". Anything else (wide characters, spans, the
        header) returns None and goes the long way. The two renderings are compared
        character by character and style by style in
        tests/test_tui.py::test_fast_cell_rendering_matches_datatable.
        """
        if not isinstance(value, Text) or value.spans or self.cell_padding * 2 >= width:
            return None
        plain = value.plain
        if "\n" in plain or "\t" in plain or cell_len(plain) != len(plain):
            return None
        row = self.rows.get(self._row_locations.get_key(row_index))  # type: ignore[arg-type]
        if row is None or row.height != 1:
            return None
        pad = self.cell_padding
        inner = width - 2 * pad
        if len(plain) > inner:  # cropping is Rich's business (columns grow to fit anyway)
            return None
        justify = value.justify or "left"
        if justify == "left":
            text = plain.ljust(inner)
        elif justify == "right":  # Rich strips trailing space before right-justifying
            text = plain.rstrip().rjust(inner)
        else:
            return None
        fixed = row_index < self.fixed_rows or column_index < self.fixed_columns
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            fixed,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index})
        pre += component_style
        edge = pre + post_style if post_style else pre
        body_style = value.style if isinstance(value.style, Style) else Style.parse(value.style)
        body = pre + body_style
        if post_style:
            body += post_style
        if not pad:
            return [[Segment(text, body)]]
        spaces = " " * pad
        return [[Segment(spaces, edge), Segment(text, body), Segment(spaces, edge)]]

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._stable_cells.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._stable_cells.clear()

    def _forget_row(self, key: str) -> None:
        for cache_key in [k for k in self._stable_cells if k[0].value == key]:
            del self._stable_cells[cache_key]

    def rendered(self, key: str) -> tuple[Cell, ...] | None:
        """The cells last written for a row (what the operator sees), or None."""
        return self._rendered.get(key)


def _cell_width(cell: Cell) -> int:
    return cell_len(cell if isinstance(cell, str) else cell[0])


def _relabel_row(lines: Any, row_index: int, column_index: int) -> list[list[Segment]]:
    """Rendered cell lines with the mouse metadata (the row a click selects) moved to
    ``row_index``: a Style addition per segment instead of a Rich render."""
    meta = Style.from_meta({"row": row_index, "column": column_index})
    return [
        [Segment(seg.text, seg.style + meta if seg.style else meta, seg.control) for seg in line]
        for line in lines
    ]


def seq_sort_key(cell: Text) -> int:
    """Sort key for a "#" column holding a sequence number."""
    return int(cell.plain or 0)
