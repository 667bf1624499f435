"""The `?` screen: every key the console answers to, generated from the bindings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

DIALOG_KEYS: tuple[tuple[str, str], ...] = (
    ("y / n", "in a dialog: yes / no (buttons work too; Enter presses the focused one)"),
    ("tab", "move between panes and their tables"),
    ("arrows, pgup/pgdn", "scroll the focused table"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "close", "Close help", key_display="?"),
        Binding("enter", "close", "Close help", show=False),
        Binding("escape", "close", "Close help", show=False),
    ]

    def __init__(self, keys: Sequence[tuple[str, str]], notes: Sequence[str] = ()) -> None:
        super().__init__()
        self.keys = [*keys, *DIALOG_KEYS]
        self.notes = list(notes)

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Label("Trading Console - keys", id="help-title")
            with VerticalScroll(id="help-scroll"):
                # A grid keeps each description wrapped beside its key.
                with Grid(id="help-keys"):
                    for key, text in self.keys:
                        yield Label(key, classes="help-key", markup=False)
                        yield Label(text, classes="help-text", markup=False)
                if self.notes:
                    yield Static("\n".join(self.notes), id="help-notes", markup=False)
            yield Label("? / Enter closes this help; arrows scroll", id="help-footer")

    def action_close(self) -> None:
        self.dismiss(None)
