"""A yes/no dialog for operator actions that change risk.

`y` and `n` answer it from the keyboard (Esc is only a convenience for "no":
tmux delays Esc, so nothing depends on it). The No button has focus, so a
stray Enter never confirms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    AUTO_FOCUS = "#confirm-no"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm_yes"),
        Binding("n", "answer(False)", "No", id="confirm_no"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(
        self, title: str, lines: Sequence[str], *, yes: str = "Yes", danger: bool = False
    ) -> None:
        super().__init__()
        self.title_text = title
        self.body_text = "\n".join(lines)
        self.yes_text = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="-danger" if self.danger else ""):
            yield Label(self.title_text, id="confirm-title", markup=False)
            yield Static(self.body_text, id="confirm-body", markup=False)
            with Horizontal(id="confirm-buttons"):
                yield Button(
                    f"{self.yes_text} (y)", id="confirm-yes", variant="error", compact=True
                )
                yield Button("No (n)", id="confirm-no", variant="primary", compact=True)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")
