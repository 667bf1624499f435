"""The console App: hosts the core it is handed, shows its snapshot, takes the keys.

The App knows the core only as a `core.backend.ConsoleBackend`: it reads
`snapshot()` and asks for operator actions, each answered with an `ActionResult`.
`TradingSystem` implements the protocol; tests may hand in a fake.

ARCHITECTURE rule 2, "the UI never follows the tick rate": panes refresh from
one `snapshot()` per timer tick (default 4 Hz) inside one `batch_update()`, and
each pane touches only what changed. The core and the UI share this event loop,
so every millisecond spent here is taken from quotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
from collections import deque
from collections.abc import Callable, Sequence
from datetime import tzinfo
from time import perf_counter
from typing import ClassVar

import exchange_calendars
from loguru import logger
from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Horizontal
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Footer, Label

from core.backend import ActionResult, ConsoleBackend, StopState, SystemSnapshot
from core.model import Alert, TradingState
from tui.console.screens.confirm import ConfirmScreen
from tui.console.screens.help import HelpScreen
from tui.console.widgets.alerts import AlertsPane
from tui.console.widgets.base import Pane
from tui.console.widgets.format import signed_money, signed_qty
from tui.console.widgets.indicators import IndicatorsPane
from tui.console.widgets.orders import QUEUED, OrdersPane
from tui.console.widgets.pnl import PnlPane
from tui.console.widgets.positions import NO_STOP, STOP_MARKS, PositionsPane
from tui.console.widgets.quotes import QuotesPane
from tui.console.widgets.status_bar import StatusBar
from tui.heap import freeze_startup_heap

EXIT_OK, EXIT_CRASH = 0, 1
GRID_ORDER = (1, 5, 4, 3, 2, 6)
# How long the core's stop may take before the console leaves anyway (the assembly
# passes its share of the whole stop's bound, tui.commands.runtime.SYSTEM_STOP_SECONDS).
STOP_TIMEOUT_SECONDS = 7.0
# What Textual's driver writes when it leaves application mode: mouse tracking off,
# bracketed paste off, line wrap on, kitty keys off, alternate screen left, cursor shown.
_RESTORE_TERMINAL = (
    b"\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l\x1b[?2004l\x1b[?7h\x1b[<u"
    b"\x1b[?1049l\x1b[?25h\x1b[?1004l"
)

# Actions that must not fire underneath an open dialog: App bindings stay live
# while a modal screen is shown, and `h` pressed in the flatten dialog must not halt.
_MAIN_SCREEN_ACTIONS = frozenset(
    {"halt_resume", "flatten", "reset_breaker", "quit", "help", "show_pane", "zoom"}
)


def _pane_binding(n: int, name: str) -> Binding:
    return Binding(str(n), f"show_pane({n})", name, show=False, id=f"pane_{n}", tooltip=name)


class TradingConsoleApp(App[None]):
    """The operator's console. It is handed its core as a `ConsoleBackend`; tests pass a
    sim system on a fake clock, or a fake backend."""

    CSS_PATH = "console.tcss"
    TITLE = "Trading Console"
    ENABLE_COMMAND_PALETTE = False  # every action is a key; nothing hides in a palette
    ALLOW_IN_MAXIMIZED_VIEW = "StatusBar, Footer"  # a zoomed pane still shows the state
    # Below 110 columns one pane shows at a time (number keys switch); above, all in a grid.
    HORIZONTAL_BREAKPOINTS = [  # noqa: RUF012 (Textual reads it as a class attribute)
        (0, "-narrow"),
        (110, "-wide"),
    ]
    # Letters, digits and ctrl+letter only: they reach the app reliably over SSH and tmux.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "h",
            "halt_resume",
            "Halt/Resume",
            id="halt",
            tooltip="halt: no new risk-increasing orders, working orders cancelled "
            "(immediate); resume asks for confirmation",
        ),
        Binding(
            "f",
            "flatten",
            "Flatten",
            id="flatten",
            tooltip="close every position with market orders after a confirmation "
            "listing them; works in every trading state",
        ),
        Binding(
            "r",
            "reset_breaker",
            "Reset breaker",
            id="reset_breaker",
            tooltip="only when TRIPPED: shows why it tripped and today's P&L, then back to ACTIVE",
        ),
        Binding(
            "q",
            "quit",
            "Quit",
            id="quit",
            tooltip="stop trading and leave (asks first when positions or orders are open)",
        ),
        Binding(
            "ctrl+c",
            "quit",
            "Quit",
            show=False,
            priority=True,
            id="quit_ctrl_c",
            tooltip="same as q",
        ),
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            show=False,
            priority=True,
            id="quit_ctrl_q",
            tooltip="same as q",
        ),
        Binding(
            "z",
            "zoom",
            "Zoom",
            id="zoom",
            tooltip="show the selected pane full screen (z again to go back)",
        ),
        Binding("question_mark", "help", "Help", key_display="?", id="help", tooltip="this help"),
        _pane_binding(1, "Quotes"),
        _pane_binding(2, "Indicators"),
        _pane_binding(3, "Positions"),
        _pane_binding(4, "Orders"),
        _pane_binding(5, "Daily P&L"),
        _pane_binding(6, "Alerts"),
    ]

    def __init__(
        self,
        backend: ConsoleBackend,
        *,
        refresh_hz: float | None = None,
        alert_history: list[Alert] | None = None,
        start_system: bool = True,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
        on_stopping: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._stop_timeout = stop_timeout
        self._on_stopping = on_stopping  # the assembly's stop clock (its bound) starts
        self._mounted = False
        self._stop_requested: str | None = None  # a stop signal before on_mount finished
        self.backend = backend
        self.refresh_hz = refresh_hz or backend.info.refresh_hz
        self._alert_history = list(alert_history or [])  # newest first, as stored
        self._start_system = start_system
        self.animation_level = "none"  # over SSH every animation frame costs bandwidth
        self.panes: dict[int, Pane] = {}
        self.current_pane = 1
        self.frame_costs_ms: deque[float] = deque(maxlen=10_000)
        self.last_snapshot: SystemSnapshot | None = None
        self._tick = 0
        self._every_tick: tuple[Pane, ...] = ()
        self._alternate: tuple[tuple[Pane, ...], tuple[Pane, ...]] = ((), ())
        self._refresh_timer: Timer | None = None
        self._stopping = False
        self._main_screen: Screen[object] | None = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        tz = exchange_timezone(self.backend.info.exchange_calendar)
        self.status_bar = StatusBar(tz, self.backend.info.stop_file)
        panes: list[Pane] = [
            QuotesPane(),
            IndicatorsPane(),
            PositionsPane(),
            OrdersPane(tz),
            PnlPane(),
            AlertsPane(tz),
        ]
        self.panes = {p.number: p for p in panes}
        by_number = self.panes
        self._every_tick = (by_number[1], by_number[5])  # quotes, daily P&L
        self._alternate = ((by_number[3], by_number[4]), (by_number[2], by_number[6]))
        yield self.status_bar
        with Horizontal(id="pane-tabs"):
            for pane in panes:
                yield Label(f"{pane.number} {pane.title}", id=f"tab-{pane.id}", classes="tab")
        with Container(id="panes"):
            # The wide grid fills row by row: this order puts quotes, positions and
            # indicators on the left, P&L, orders and alerts on the right (console.tcss).
            for number in GRID_ORDER:
                yield self.panes[number]
        yield Footer()

    async def on_mount(self) -> None:
        # Stored alerts first (oldest first), so this session's alerts sort after them.
        self.backend.load_alert_history(list(reversed(self._alert_history)))
        if self._start_system:
            await self.backend.start()
            self.backend.start_timer()
        self._main_screen = self.screen  # dialogs stack on top; state classes stay here
        self._select_pane(1)
        self.refresh_now()
        self._refresh_timer = self.set_interval(1.0 / self.refresh_hz, self._refresh_tick)
        self.call_after_refresh(freeze_startup_heap)
        self._mounted = True
        if self._stop_requested is not None:  # a signal came while the core was starting
            self._stop_and_exit(self._stop_requested, EXIT_OK)

    # ------------------------------------------------------------------ refresh
    def refresh_now(self) -> None:
        """One full frame: read one snapshot, hand it to every pane inside one batch.

        Operator actions and tests call this; the timer calls `_refresh_tick`.
        """
        self._refresh(tuple(self.panes.values()))

    def _refresh_tick(self) -> None:
        """A timer frame: the status bar, quotes and P&L every tick; the other panes
        take turns (positions and orders, then indicators and alerts).

        The screen repaint after a frame is the largest single block the UI puts in
        the shared loop, and it grows with the number of table rows that changed.
        Spreading the slower-moving panes over alternate ticks roughly halves the
        worst tick; those panes still refresh twice a second at the default 4 Hz.
        """
        self._tick += 1
        self._refresh((*self._every_tick, *self._alternate[self._tick % 2]))

    def _refresh(self, panes: Sequence[Pane]) -> None:
        fatal_error = self.backend.fatal_error
        if fatal_error is not None:
            self._on_core_crash(fatal_error)
            return
        main_screen = self._main_screen
        # Not mounted yet, or shutting down: Textual unmounts the widgets before it
        # stops the App's timers, and a tick then would style cells of a dead table.
        if main_screen is None or not self.is_running:
            return
        started = perf_counter()
        snapshot = self.backend.snapshot()
        with self.batch_update():
            self.status_bar.update_snapshot(snapshot)
            for pane in panes:
                pane.update_snapshot(snapshot)
            state = snapshot.risk.state
            main_screen.set_class(state is TradingState.TRIPPED, "-tripped")
            main_screen.set_class(state is TradingState.HALTED, "-halted")
            main_screen.set_class(not snapshot.connected, "-disconnected")
        self.last_snapshot = snapshot
        self.frame_costs_ms.append((perf_counter() - started) * 1000.0)

    # ------------------------------------------------------------------ panes
    def _select_pane(self, number: int) -> None:
        self.current_pane = number
        for n, pane in self.panes.items():
            pane.set_class(n == number, "-current")
            self.query_one(f"#tab-{pane.id}").set_class(n == number, "-current")

    def action_show_pane(self, number: int) -> None:
        pane = self.panes.get(number)
        if pane is None:
            return
        self._select_pane(number)
        if self.screen.maximized is not None:
            self.screen.maximize(pane, container=False)  # zoomed: switch the zoomed pane
        # Focus after the layout change so a just-shown pane can take focus.
        self.call_after_refresh(pane.focus_target().focus)

    def action_zoom(self) -> None:
        screen = self.screen
        if screen.maximized is not None:
            screen.minimize()
        else:
            pane = self.panes[self.current_pane]
            screen.maximize(pane, container=False)
            self.call_after_refresh(pane.focus_target().focus)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        # Tab moves focus between panes: keep the "current" mark with the focus.
        for node in event.widget.ancestors_with_self:
            if isinstance(node, Pane):
                if node.number != self.current_pane:
                    self._select_pane(node.number)
                return

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in _MAIN_SCREEN_ACTIONS and isinstance(self.screen, ModalScreen))

    # ------------------------------------------------------------------ operator keys
    def _ask(self, screen: ConfirmScreen, on_yes: Callable[[], None]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                on_yes()
            else:
                self.notify("Cancelled: nothing was changed.", timeout=3)

        self.push_screen(screen, answered)

    def _refused(self, title: str, result: ActionResult) -> None:
        self.notify(f"{title}: {result.message}", title=title, severity="error")

    def action_halt_resume(self) -> None:
        snapshot = self.backend.snapshot()
        risk = snapshot.risk
        if risk.state is TradingState.ACTIVE:
            # Counted before the halt cancels them: the operator reads what was cancelled.
            working = snapshot.working_orders
            result = self.backend.halt("h")
            if result.ok:
                self.notify(
                    f"Trading HALTED: no new risk-increasing orders; {working} working "
                    "order(s) cancelled. Press h to resume.",
                    title="Halted",
                    severity="warning",
                )
            else:
                self._refused("Not halted", result)
            self.refresh_now()
        elif risk.state is TradingState.HALTED:
            self._ask(
                ConfirmScreen(
                    "Resume trading?",
                    [
                        f"Halted because: {risk.state_reason or 'unknown'}",
                        "",
                        "On yes the state returns to ACTIVE and the strategy may send",
                        "new orders again on its next signal.",
                    ],
                    yes="Resume",
                ),
                self._resume,
            )
        else:
            self.notify(
                f"Breaker TRIPPED ({risk.trip_reason}): h cannot resume. "
                "Press r to review and reset the breaker.",
                title="Not resumed",
                severity="warning",
            )

    def _resume(self) -> None:
        result = self.backend.resume("h")
        if result.ok:
            self.notify("Trading ACTIVE again.", title="Resumed")
        else:
            self._refused("Not resumed", result)
        self.refresh_now()

    def action_flatten(self) -> None:
        snapshot = self.backend.snapshot()
        positions = [p for p in snapshot.positions if p.quantity]
        working = snapshot.working_orders
        if not positions and not working:
            self.notify("Nothing to flatten: no open positions or working orders.", title="Flat")
            return
        lines = ["Market orders will close:"] if positions else ["No open positions."]
        lines += [
            f"  {p.symbol:<8} {signed_qty(p.quantity):>8} sh   value {signed_money(p.market_value)}"
            f"   unrealized {signed_money(p.unrealized)}"
            for p in positions
        ]
        lines += [
            "",
            f"Working orders: {working} (re-targeted to zero / cancelled).",
            f"Trading state stays {snapshot.risk.state}; flatten works in every state.",
        ]
        self._ask(
            ConfirmScreen("Flatten all positions?", lines, yes="Flatten", danger=True),
            self._flatten,
        )

    def _flatten(self) -> None:
        result = self.backend.flatten("f")
        if result.ok:
            closing = ", ".join(result.symbols) if result.symbols else "no positions left to close"
            self.notify(f"Flatten sent: {closing}.", title="Flatten", severity="warning")
        else:
            self._refused("Not flattened", result)
        self.refresh_now()

    def action_reset_breaker(self) -> None:
        review = self.backend.breaker_review()
        if not review.tripped:
            state = self.backend.snapshot().risk.state
            self.notify(
                f"The breaker is not tripped (state {state}); nothing to reset.",
                title="Not tripped",
            )
            return
        pnl = review.pnl
        # The breaker re-checks today's P&L on every quote: a reset while the loss is
        # still beyond the limit trips again at once. Say so rather than surprise.
        still_beyond = (
            [
                "",
                "WARNING: today's loss is still beyond the limit, so the breaker will",
                "trip again on the next quote unless DAILY_LOSS_LIMIT is raised.",
            ]
            if review.still_beyond_limit
            else []
        )
        self._ask(
            ConfirmScreen(
                "Reset the circuit breaker?",
                [
                    f"Tripped because: {review.trip_reason}",
                    "",
                    f"Today's P&L:  total {signed_money(pnl.total)}   "
                    f"realized {signed_money(pnl.realized)}   "
                    f"unrealized {signed_money(pnl.unrealized)}",
                    f"Daily loss limit: -{review.daily_loss_limit:,.2f}",
                    *still_beyond,
                    "",
                    "On yes trading returns to ACTIVE (the reset is recorded) and the",
                    "strategy may open new positions.",
                ],
                yes="Reset",
                danger=True,
            ),
            self._reset_breaker,
        )

    def _reset_breaker(self) -> None:
        result = self.backend.reset_breaker("r")
        if result.ok:
            self.notify("Breaker reset: trading ACTIVE.", title="Breaker reset", severity="warning")
        else:
            self.notify(f"Not reset: {result.message}", title="Not reset")
        self.refresh_now()

    def help_keys(self) -> list[tuple[str, str]]:
        """(keys, what they do) from the bindings themselves, so help cannot drift from them."""
        grouped: dict[str, tuple[list[str], str]] = {}
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            action = binding.action.split("(")[0]
            text = f"{binding.description}: {binding.tooltip or ''}".rstrip(": ")
            if action == "show_pane":
                text = "show / focus a pane: " + ", ".join(
                    f"{p.number} {p.title}" for p in self.panes.values()
                )
            keys, _ = grouped.setdefault(action, ([], text))
            keys.append(binding.key_display or binding.key)
        rows = []
        for keys, text in grouped.values():
            label = f"{keys[0]}..{keys[-1]}" if len(keys) > 3 else " / ".join(keys)
            rows.append((label, text))
        return rows

    def action_help(self) -> None:
        notes = [
            "",
            f"STOP file: create {self.backend.info.stop_file} to halt trading "
            "(state shows HALTED (STOP file)); remove it, then h to resume.",
            f"Positions, Stop: 182.40 {STOP_MARKS[StopState.RESTING]} rests at the broker, "
            f"182.40 {STOP_MARKS[StopState.PENDING]} on its way, {NO_STOP} an open position "
            "without one (a stop quantity after it: the stop does not cover the position).",
            "Orders: SL stop-loss, TP take-profit (bracket children, protective stops); "
            f"GTC outlives the day; {QUEUED}: an exit sent once the broker is back.",
            "Narrow terminals show one pane at a time: number keys switch panes.",
            "Run inside tmux or screen over SSH: a dropped connection does not stop trading.",
        ]
        self.push_screen(HelpScreen(self.help_keys(), notes))

    async def action_quit(self) -> None:
        """Every way out (q, ctrl+c, ctrl+q) comes here: confirm if anything is open."""
        if self._stopping:
            return
        snapshot = self.backend.snapshot()
        positions = [p for p in snapshot.positions if p.quantity]
        working = snapshot.working_orders
        if not positions and not working:
            self._stop_and_exit("operator quit", EXIT_OK)
            return
        held = ", ".join(f"{p.symbol} {signed_qty(p.quantity)}" for p in positions) or "none"
        # Protective stops are GTC orders of their own: the core leaves them working.
        guarded = [p.symbol for p in positions if p.stop_state is not StopState.NONE]
        bare = [p.symbol for p in positions if p.stop_state is StopState.NONE]
        lines = [
            f"Open positions: {held}",
            f"Working orders: {working}",
            "",
            "On quit: working orders are CANCELLED; positions are LEFT OPEN at the broker.",
            *(
                [f"Their protective stops stay at the broker (GTC): {', '.join(guarded)}."]
                if guarded
                else []
            ),
            *([f"WITHOUT a stop at the broker: {', '.join(bare)}."] if bare else []),
            "To close them first, answer n and press f (flatten).",
        ]
        self._ask(
            ConfirmScreen("Quit the console?", lines, yes="Quit", danger=True),
            lambda: self._stop_and_exit("operator quit", EXIT_OK),
        )

    # ------------------------------------------------------------------ stopping
    def request_stop(self, reason: str) -> None:
        """A stop signal (SIGTERM, SIGHUP, SIGINT): the graceful stop of `q` + yes, without
        the dialog: the strategy stops, working orders are cancelled, the App exits."""
        if not self._mounted:
            self._stop_requested = self._stop_requested or reason
            return
        self._stop_and_exit(reason, EXIT_OK)

    def restore_terminal_now(self) -> None:
        """For a forced exit only (the process ends without Textual's own shutdown):
        leave the alternate screen, turn mouse tracking off, restore the tty modes."""
        driver = self._driver
        fd = getattr(driver, "fileno", None)
        if not isinstance(fd, int):
            fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        attrs = getattr(driver, "attrs_before", None)
        if attrs is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(fd, termios.TCSANOW, attrs)
        with contextlib.suppress(OSError):
            os.write(fd, _RESTORE_TERMINAL)

    def _stop_and_exit(self, reason: str, code: int, message: str | None = None) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._on_stopping is not None:
            self._on_stopping()
        self.notify("Stopping: cancelling working orders, flushing records...", title="Quit")
        self._stop_worker(reason, code, message)

    @work(exclusive=True, group="stop")
    async def _stop_worker(self, reason: str, code: int, message: str | None) -> None:
        # A worker, so the screen keeps painting while the core cancels and drains.
        try:
            await asyncio.wait_for(self.backend.stop(reason), self._stop_timeout)
        except Exception as exc:  # still leave: the operator asked to go
            logger.opt(exception=exc).error("stop did not finish cleanly")
            code = EXIT_CRASH
        self.exit(return_code=code, message=message)

    def _on_core_crash(self, error: BaseException) -> None:
        if self._stopping:
            return
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
        text = f"Trading core crashed: {error!r}. Working orders are being cancelled; see the log."
        self.notify(text, title="CRASH", severity="error", timeout=30)
        self._stop_and_exit(f"crash: {error!r}", EXIT_CRASH, text)


def exchange_timezone(exchange_calendar: str) -> tzinfo:
    """The exchange's local zone: clocks and order times read as the exchange's day."""
    # exchange-calendars caches calendars, so this is the instance the core uses.
    return exchange_calendars.get_calendar(exchange_calendar).tz
