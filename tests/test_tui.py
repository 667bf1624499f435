"""Pilot tests of the console: a sim system on a SimClock is handed to the App.

Time only moves when a test runs the simulation, and panes are refreshed by
calling `refresh_now()` rather than waiting for the 4 Hz timer, so nothing here
depends on wall-clock timing.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.style import Style
from rich.text import Text
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import DataTable

from core.backend import (
    ActionResult,
    BreakerReview,
    ConsoleBackend,
    ConsoleInfo,
    OrderRow,
    PositionRow,
    RiskView,
    SystemSnapshot,
)
from core.events import RiskRejected
from core.model import (
    Alert,
    AlertSeverity,
    HaltReason,
    OrderStatus,
    OrderType,
    Side,
    TargetPosition,
    TradingMode,
    TradingState,
)
from core.portfolio import PnlSummary
from core.simulation import run_simulated
from tests.helpers import T0, SimRig, build_rig, settings
from tui.console.app import TradingConsoleApp
from tui.console.screens.confirm import ConfirmScreen
from tui.console.screens.help import HelpScreen
from tui.console.widgets.base import DiffTable
from tui.console.widgets.pnl import PnlPane

SYMBOLS = ("AAPL", "MSFT", "SPY")


@asynccontextmanager
async def console(
    tmp_path: Path,
    size: tuple[int, int] = (120, 40),
    venue: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[TradingConsoleApp, Pilot[None], SimRig]]:
    # No strategy orders unless a test asks for them: bars long, SMAs slow.
    overrides.setdefault("bar_seconds", 3600)
    rig = build_rig(settings(tmp_path, **overrides), **(venue or {}))
    await rig.system.start(drive_broker=False)
    app = TradingConsoleApp(rig.system, start_system=False)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        yield app, pilot, rig
    if rig.system.running:
        await rig.system.stop("end of test")


async def run_sim(rig: SimRig, seconds: float) -> None:
    await run_simulated(rig.system, rig.venue, rig.clock, timedelta(seconds=seconds))


async def frame(app: TradingConsoleApp, pilot: Pilot[None]) -> None:
    app.refresh_now()
    await pilot.pause()


async def open_position(app: TradingConsoleApp, pilot: Pilot[None], rig: SimRig) -> None:
    await run_sim(rig, 2)
    rig.system.execution.on_target(TargetPosition("AAPL", 10, "test"))
    await run_sim(rig, 2)
    assert rig.venue.positions() == {"AAPL": 10}
    await frame(app, pilot)


def table(app: TradingConsoleApp, table_id: str) -> DiffTable:
    return app.query_one(f"#{table_id}", DiffTable)


async def test_panes_show_quotes_for_every_symbol(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await run_sim(rig, 3)
        await frame(app, pilot)
        quotes = table(app, "quotes-table")
        assert [k.value for k in quotes.rows] == list(SYMBOLS)
        for symbol in SYMBOLS:
            cells = quotes.get_row(symbol)
            bid, ask = float(cells[1].plain.replace(",", "")), float(cells[2].plain)
            assert 0 < bid <= ask
            assert cells[7].plain == "sim"
        assert app.status_bar.text_of("state").strip() == "ACTIVE"
        assert app.status_bar.text_of("mode").strip() == "SIM"
        assert "3 sim" in app.status_bar.text_of("health")
        indicators = table(app, "indicators-table")
        assert [k.value for k in indicators.rows] == list(SYMBOLS)


async def test_h_halts_at_once_and_h_y_resumes(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await run_sim(rig, 2)
        await pilot.press("h")
        await pilot.pause()
        assert rig.system.risk.state is TradingState.HALTED
        assert app.status_bar.text_of("state").strip() == "HALTED"
        assert app.status_bar.has_class("-halted")
        assert "operator halt" in app.status_bar.text_of("reason")
        # halted: a new risk-increasing target sends nothing
        before = len(rig.system.execution.orders)
        rig.system.execution.on_target(TargetPosition("AAPL", 10, "test"))
        await run_sim(rig, 1)
        assert len(rig.system.execution.orders) == before
        assert rig.of(RiskRejected)

        await pilot.press("h")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert rig.system.risk.state is TradingState.ACTIVE
        assert app.status_bar.text_of("state").strip() == "ACTIVE"
        assert not app.status_bar.has_class("-halted")


async def test_resume_dialog_n_keeps_halted(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await pilot.press("h", "h")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("f")  # operator keys do nothing underneath a dialog
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert rig.system.risk.state is TradingState.HALTED


async def test_f_y_flattens_the_position(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await open_position(app, pilot, rig)
        assert table(app, "positions-table").get_row("AAPL")[1].plain == "+10"
        await pilot.press("h")  # flatten works in every state, halted included
        await pilot.press("f")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert "AAPL" in dialog.body_text and "+10" in dialog.body_text
        await pilot.press("y")
        await pilot.pause()
        await run_sim(rig, 2)
        assert rig.venue.positions() == {}
        assert rig.system.portfolio.quantity("AAPL") == 0
        await frame(app, pilot)
        assert table(app, "positions-table").get_row("AAPL")[1].plain == "0"


async def test_f_with_nothing_open_just_says_so(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, _rig):
        await pilot.press("f")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("Nothing to flatten" in n.message for n in app._notifications)


async def test_r_resets_only_when_tripped(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("not tripped" in n.message for n in app._notifications)

        await run_sim(rig, 1)
        rig.system.risk.enter_tripped("daily loss limit: test")
        await frame(app, pilot)
        assert app.status_bar.has_class("-tripped")
        assert app.screen.has_class("-tripped")
        assert app.query_one(PnlPane).text_of("breaker").startswith("TRIPPED")
        await pilot.press("h")  # h cannot resume a trip
        await pilot.pause()
        assert rig.system.risk.state is TradingState.TRIPPED
        await pilot.press("r")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert "daily loss limit: test" in dialog.body_text
        assert "P&L" in dialog.body_text
        await pilot.press("y")
        await pilot.pause()
        assert rig.system.risk.state is TradingState.ACTIVE
        assert not app.status_bar.has_class("-tripped")


async def test_question_mark_opens_help_listing_every_key(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, _rig):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        listed = [key for key, _ in app.screen.keys]
        for key in ("h", "f", "r", "q", "ctrl+c", "?", "1..6"):
            assert any(key in k for k in listed), key
        await pilot.press("question_mark")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_small_terminal_switches_panes_with_number_keys(tmp_path: Path) -> None:
    async with console(tmp_path, size=(80, 24)) as (app, pilot, rig):
        await run_sim(rig, 2)
        await frame(app, pilot)
        assert app.screen.has_class("-narrow")
        assert app.panes[1].display and not app.panes[3].display
        for number in (3, 4, 5, 6, 2, 1):
            await pilot.press(str(number))
            await pilot.pause()
            shown = [n for n, pane in app.panes.items() if pane.display]
            assert shown == [number]
            assert app.panes[number].region.height > 3  # on screen, not squeezed away
        await pilot.press("4")
        await pilot.pause()
        assert app.focused is table(app, "orders-table")


async def test_large_terminal_shows_every_pane(tmp_path: Path) -> None:
    async with console(tmp_path, size=(200, 60)) as (app, _pilot, _rig):
        assert app.screen.has_class("-wide")
        assert all(p.display and p.region.height > 3 for p in app.panes.values())


async def test_pnl_figures_carry_a_sign(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await open_position(app, pilot, rig)
        await run_sim(rig, 5)
        await frame(app, pilot)
        pnl = app.query_one(PnlPane)
        for key in ("total", "realized", "unrealized", "commissions"):
            assert pnl.text_of(key)[0] in "+-", (key, pnl.text_of(key))
        assert pnl.text_of("commissions").startswith("-")  # a cost
        unrealized = table(app, "positions-table").get_cell("AAPL", "unrealized").plain
        assert unrealized[0] in "+-"


async def test_quit_with_open_position_asks_and_n_stays(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await open_position(app, pilot, rig)
        await pilot.press("q")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert "LEFT OPEN" in dialog.body_text and "AAPL +10" in dialog.body_text
        assert "press f" in dialog.body_text
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and rig.system.running
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)


async def test_quit_y_cancels_working_orders_and_stops(tmp_path: Path) -> None:
    # Orders stay working: the venue delivers nothing until the sim clock moves.
    async with console(tmp_path, sim_latency_ms=500) as (app, pilot, rig):
        await run_sim(rig, 2)
        rig.system.execution.on_target(TargetPosition("MSFT", 5, "test"))
        await rig.system.execution.drain()
        assert rig.system.execution.working_orders()
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "Working orders: 1" in app.screen.body_text

        async def venue_keeps_time() -> None:
            # Lets the venue answer the cancel while the console stops.
            while not rig.system.stopped.is_set():
                rig.clock.advance(0.1)
                rig.venue.advance_to(rig.clock.now())
                await asyncio.sleep(0.001)

        driver = asyncio.create_task(venue_keeps_time())
        await pilot.press("y")
        await rig.system.stopped.wait()
        await driver
        await pilot.pause()
        assert not rig.system.running
        assert not rig.system.execution.working_orders()
        assert all(o.status.is_terminal for o in rig.system.execution.orders.values())
    assert app.return_code == 0


async def test_quit_when_flat_needs_no_confirmation(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await pilot.press("q")
        await rig.system.stopped.wait()
        await pilot.pause()
    assert app.return_code == 0
    assert not rig.system.running


async def test_tables_update_by_difference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await run_sim(rig, 2)
        await frame(app, pilot)
        quotes = table(app, "quotes-table")
        writes: list[tuple[str, str]] = []
        original = quotes.update_cell

        def counting(row_key: Any, column_key: Any, value: Any, **kw: Any) -> None:
            writes.append((str(getattr(row_key, "value", row_key)), str(column_key)))
            original(row_key, column_key, value, **kw)

        monkeypatch.setattr(quotes, "update_cell", counting)
        monkeypatch.setattr(quotes, "clear", lambda *a, **k: pytest.fail("cleared live table"))
        row_keys = list(quotes.rows)

        await frame(app, pilot)  # nothing changed: nothing rewritten
        assert writes == []

        await run_sim(rig, 1)
        await frame(app, pilot)
        assert list(quotes.rows) == row_keys  # same rows, same keys
        assert writes, "new quotes must reach the table"
        assert all(col != "symbol" for _, col in writes)  # unchanged cells untouched
        assert len(writes) < len(row_keys) * len(quotes.columns)


async def test_orders_newest_first(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        orders = table(app, "orders-table")
        await run_sim(rig, 2)
        for symbol in ("AAPL", "MSFT", "SPY"):
            rig.system.execution.on_target(TargetPosition(symbol, 5, "test"))
            await run_sim(rig, 1)
            await frame(app, pilot)
            for y in range(1, orders.row_count + 1):
                orders.render_line(y)  # as the screen would: cells get cached
        symbols = [row[1].plain for row in (orders.get_row_at(i) for i in range(orders.row_count))]
        assert symbols == ["SPY", "MSFT", "AAPL"]
        # On screen too, and a click on a line selects the order drawn there (the
        # cached AAPL cells moved down a row when SPY arrived).
        for row, symbol in enumerate(symbols):
            line = orders.render_line(row + 1)  # line 0 is the header
            assert symbol in line.text
            rows = {seg.style.meta.get("row") for seg in line if seg.style and seg.style.meta}
            assert rows == {row}


async def test_broker_reject_is_visible_in_orders_and_alerts(tmp_path: Path) -> None:
    async with console(tmp_path, venue={"buying_power_multiple": 0.001}) as (app, pilot, rig):
        await run_sim(rig, 2)
        rig.system.execution.on_target(TargetPosition("AAPL", 10, "test"))
        await run_sim(rig, 1)
        await frame(app, pilot)
        orders = table(app, "orders-table")
        key = orders.coordinate_to_cell_key(Coordinate(0, 0)).row_key
        assert orders.get_cell(key, "status").plain == "REJECTED"
        assert "insufficient buying power" in orders.get_cell(key, "message").plain
        alert = table(app, "alerts-table").get_row_at(0)
        assert alert[1].plain == "[WARN]" and "Order rejected" in alert[2].plain


async def test_alert_history_and_live_alerts_newest_first(tmp_path: Path) -> None:
    rig = build_rig(settings(tmp_path, bar_seconds=3600))
    history = [
        Alert(AlertSeverity.CRITICAL, "x", "older critical thing", T0 - timedelta(days=1)),
        Alert(AlertSeverity.INFO, "y", "oldest info", T0 - timedelta(days=2)),
    ]
    app = TradingConsoleApp(rig.system, alert_history=history, start_system=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await rig.system.start(drive_broker=False)
        await pilot.press("h")
        await frame(app, pilot)
        alerts = table(app, "alerts-table")
        rows = [alerts.get_row_at(i) for i in range(alerts.row_count)]
        messages = [r[2].plain for r in rows]
        assert messages[-2:] == ["older critical thing", "oldest info"]
        assert "HALTED" in messages[0]  # the live one is on top
        assert rows[-2][1].plain == "[CRIT]"
    await rig.system.stop("end of test")


async def test_stop_file_shows_halted(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        rig.system.settings.stop_file.touch()
        await run_sim(rig, 1)
        await frame(app, pilot)
        assert app.status_bar.text_of("state").strip() == "HALTED (STOP file)"
        reason = app.status_bar.text_of("reason")
        assert "STOP file present" in reason and str(rig.system.settings.stop_file) in reason
        assert app.screen.has_class("-halted")
        # h cannot resume while the file is there, and says why.
        await pilot.press("h", "y")
        await pilot.pause()
        assert rig.system.risk.state is TradingState.HALTED
        assert any("remove" in n.message for n in app._notifications)


async def test_tripped_state_shows_its_reason_everywhere(tmp_path: Path) -> None:
    async with console(tmp_path, size=(80, 24)) as (app, pilot, rig):
        await run_sim(rig, 1)
        rig.system.risk.enter_tripped("daily loss limit: P&L -2,100.00 <= -2,000.00")
        await frame(app, pilot)
        assert app.status_bar.text_of("state").strip() == "TRIPPED"
        reason = app.status_bar.text_of("reason")
        assert reason.startswith("BREAKER TRIPPED: daily loss limit: P&L -2,100.00")
        assert "r to review" in reason
        # Even at 80 columns the banner is whole: the reason is the first thing on line 2.
        assert len(reason) <= 80
        assert app.status_bar.has_class("-tripped") and app.screen.has_class("-tripped")
        await pilot.press("5")
        await pilot.pause()
        assert app.query_one(PnlPane).text_of("breaker").startswith("TRIPPED: daily loss")


async def test_refresh_after_exit_is_harmless(tmp_path: Path) -> None:
    # Textual unmounts the widgets before it stops the App's timers, so a refresh
    # tick can land on a closing App; it must not style cells of a dead table.
    async with console(tmp_path) as (app, pilot, rig):
        await run_sim(rig, 1)
        await frame(app, pilot)
    assert not app.is_running
    app.refresh_now()


async def test_core_crash_exits_with_code_1(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        rig.system.fatal_error = RuntimeError("boom")
        await frame(app, pilot)
        # Read while the App still runs: the operator sees the crash before it exits.
        crash_notes = [n.message for n in app._notifications if n.title == "CRASH"]
        await rig.system.stopped.wait()
        await pilot.pause()
    assert app.return_code == 1
    assert not app.is_running
    assert len(crash_notes) == 1
    assert crash_notes[0].startswith("Trading core crashed: RuntimeError('boom')")


async def test_rendered_cells_follow_updates(tmp_path: Path) -> None:
    # DiffTable caches rendered cells; what reaches the screen must still be current.
    async with console(tmp_path) as (app, pilot, rig):
        quotes = table(app, "quotes-table")
        seen = set()
        for _ in range(4):
            await run_sim(rig, 1)
            await frame(app, pilot)
            bid = quotes.get_row("AAPL")[1].plain
            assert bid in quotes.render_line(1).text  # line 0 is the header
            seen.add(bid)
        assert len(seen) > 1  # the price moved, and the screen moved with it


def _cells_of(lines: Any) -> list[tuple[str, Style | None]]:
    """Rendered lines as (character, style) pairs: equal if they look equal."""
    return [(ch, seg.style) for line in lines for seg in line for ch in seg.text]


async def test_fast_cell_rendering_matches_datatable(tmp_path: Path) -> None:
    # DiffTable draws plain one-style cells itself instead of through a Rich pass;
    # every cell must come out exactly as DataTable would have drawn it.
    async with console(tmp_path, sim_latency_ms=500) as (app, pilot, rig):
        await run_sim(rig, 2)
        rig.system.execution.on_target(TargetPosition("AAPL", 5, "test"))
        await run_sim(rig, 1)
        await frame(app, pilot)
        quotes = table(app, "quotes-table")
        quotes.add_row(*(Text(x) for x in ("  pad  ", "", "9" * 30, "x")), *([Text("")] * 5))
        await pilot.pause()  # the columns widen to the new row on idle
        compared = 0
        for table_id in ("quotes-table", "orders-table", "alerts-table", "positions-table"):
            t = table(app, table_id)
            base = t.rich_style
            for row in range(t.row_count):
                for col, column in enumerate(t.ordered_columns):
                    for width in (column.get_render_width(t), column.get_render_width(t) + 3):
                        for cursor, hover in ((False, False), (True, False), (False, True)):
                            fast = t._render_plain_cell(
                                t.get_cell_at(Coordinate(row, col)),
                                row,
                                col,
                                base,
                                width,
                                cursor,
                                hover,
                            )
                            assert fast is not None, (table_id, row, col)
                            t._cell_render_cache.clear()  # its key leaves out the width
                            slow = DataTable._render_cell(t, row, col, base, width, cursor, hover)
                            assert _cells_of(fast) == _cells_of(slow), (table_id, row, col, width)
                            compared += 1
        assert compared > 300
        # Cells the fast path does not handle go the long way.
        wide = Text("株式")
        assert quotes._render_plain_cell(wide, 0, 0, Style(), 8, False, False) is None
        spans = Text.assemble(("a", "bold"), "b")
        assert quotes._render_plain_cell(spans, 0, 0, Style(), 8, False, False) is None
        assert quotes._render_plain_cell(Text("too long"), 0, 0, Style(), 5, False, False) is None


def test_full_screen_snapshot(tmp_path: Path, snap_compare: Any) -> None:
    rig = build_rig(settings(tmp_path, bar_seconds=1, strategy_params={"fast": 2, "slow": 5}))
    app = TradingConsoleApp(rig.system, start_system=False)

    async def trade_a_while(pilot: Pilot[None]) -> None:
        await rig.system.start(drive_broker=False)
        await run_sim(rig, 20)
        await frame(app, pilot)

    assert snap_compare(app, terminal_size=(120, 40), run_before=trade_a_while)


# ---------------------------------------------------------------- the App on a fake backend
# The App depends on core.backend.ConsoleBackend only: a small fake proves which
# calls the keys make and that a refused action reaches the operator's screen.

PNL = PnlSummary(
    realized=-1_500.0,
    unrealized=-700.0,
    commissions=12.5,
    total=-2_212.5,
    equity=97_787.5,
    start_equity=100_000.0,
    peak_equity=100_000.0,
    drawdown_pct=2.2,
    max_drawdown_pct=2.2,
    gross_exposure=1_900.0,
    leverage=0.02,
)


class FakeBackend:
    """A ConsoleBackend with a settable state; records every call the App makes."""

    def __init__(self, tmp_path: Path) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse: dict[str, str] = {}  # action -> the reason it is refused with
        self.state = TradingState.ACTIVE
        self.state_reason = ""
        self.halt_reason: HaltReason | None = None
        self.trip_reason = ""
        self.positions: tuple[PositionRow, ...] = ()
        self.orders: tuple[OrderRow, ...] = ()
        self.history: list[Alert] = []
        self._info = ConsoleInfo(
            mode=TradingMode.SIM,
            symbols=("AAPL",),
            stop_file=tmp_path / "STOP",
            refresh_hz=4.0,
            exchange_calendar="XNYS",
        )

    @property
    def info(self) -> ConsoleInfo:
        return self._info

    @property
    def running(self) -> bool:
        return True

    @property
    def fatal_error(self) -> BaseException | None:
        return None

    def snapshot(self) -> SystemSnapshot:
        risk = RiskView(
            state=self.state,
            state_reason=self.state_reason,
            halt_reason=self.halt_reason,
            trip_reason=self.trip_reason,
            daily_loss_limit=2_000.0,
            loss_limit_usage=1.1 if self.state is TradingState.TRIPPED else 0.0,
            max_leverage=2.0,
            clamped=0,
            rejected=0,
        )
        return SystemSnapshot(
            now=T0,
            mode=TradingMode.SIM,
            account_id="FAKE1",
            broker_name="fake",
            connected=True,
            risk=risk,
            pnl=PNL,
            quotes=(),
            indicators=(),
            positions=self.positions,
            orders=self.orders,
            working_orders=sum(1 for o in self.orders if o.status.is_working),
            alerts=(),
            stale_symbols=(),
            quotes_accepted=0,
            quotes_rejected=0,
            strategy_name="Fake",
        )

    def load_alert_history(self, alerts: Sequence[Alert]) -> None:
        self.history = list(alerts)

    async def start(self) -> None:
        self.calls.append(("start", ""))

    def start_timer(self) -> None:
        self.calls.append(("start_timer", ""))

    async def stop(self, reason: str) -> None:
        self.calls.append(("stop", reason))

    def _act(self, action: str, detail: str, symbols: tuple[str, ...] = ()) -> ActionResult:
        self.calls.append((action, detail))
        if action in self.refuse:
            return ActionResult(False, self.refuse[action])
        return ActionResult(True, f"{action} done", symbols)

    def halt(self, detail: str) -> ActionResult:
        result = self._act("halt", detail)
        if result.ok:
            self.state, self.halt_reason = TradingState.HALTED, HaltReason.OPERATOR
            self.state_reason = HaltReason.OPERATOR.text(detail)
        return result

    def resume(self, detail: str) -> ActionResult:
        result = self._act("resume", detail)
        if result.ok:
            self.state, self.halt_reason, self.state_reason = TradingState.ACTIVE, None, ""
        return result

    def flatten(self, detail: str) -> ActionResult:
        return self._act("flatten", detail, tuple(p.symbol for p in self.positions))

    def reset_breaker(self, detail: str) -> ActionResult:
        result = self._act("reset_breaker", detail)
        if result.ok:
            self.state, self.trip_reason = TradingState.ACTIVE, ""
        return result

    def breaker_review(self) -> BreakerReview:
        tripped = self.state is TradingState.TRIPPED
        usage = 1.1 if tripped else 0.0
        return BreakerReview(tripped, self.trip_reason, PNL, 2_000.0, usage)


def actions(backend: FakeBackend) -> list[tuple[str, str]]:
    """The operator actions the App asked for (start-up calls left out)."""
    return [c for c in backend.calls if c[0] not in ("start", "start_timer")]


def notes(app: TradingConsoleApp) -> list[tuple[str, str, str]]:
    return [(n.title, n.message, n.severity) for n in app._notifications]


WORKING = OrderRow(
    client_order_id="c1",
    created_at=T0,
    symbol="AAPL",
    side=Side.BUY,
    quantity=10,
    filled=0,
    order_type=OrderType.LIMIT,
    limit_price=190.0,
    avg_fill_price=0.0,
    status=OrderStatus.SUBMITTED,
    message="",
)
LONG_AAPL = PositionRow("AAPL", 10, 190.0, 1_900.0, -5.0, 0.0, 10, True)


@asynccontextmanager
async def fake_console(
    tmp_path: Path, backend: FakeBackend | None = None, size: tuple[int, int] = (120, 40)
) -> AsyncIterator[tuple[TradingConsoleApp, Pilot[None], FakeBackend]]:
    fake = backend or FakeBackend(tmp_path)
    typed: ConsoleBackend = fake  # mypy proves the fake implements the protocol
    app = TradingConsoleApp(typed)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        yield app, pilot, fake


async def test_fake_backend_is_started_and_given_the_alert_history(tmp_path: Path) -> None:
    history = [
        Alert(AlertSeverity.INFO, "b", "newer", T0 - timedelta(hours=1)),
        Alert(AlertSeverity.INFO, "a", "older", T0 - timedelta(hours=2)),
    ]
    fake = FakeBackend(tmp_path)
    app = TradingConsoleApp(fake, alert_history=history)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert fake.calls == [("start", ""), ("start_timer", "")]
        assert [a.message for a in fake.history] == ["older", "newer"]  # oldest first
        assert app.refresh_hz == fake.info.refresh_hz


async def test_h_halts_through_the_backend_and_counts_working_orders(tmp_path: Path) -> None:
    async with fake_console(tmp_path) as (app, pilot, fake):
        fake.orders = (WORKING, replace(WORKING, client_order_id="c2", status=OrderStatus.FILLED))
        await pilot.press("h")
        await pilot.pause()
        assert actions(fake) == [("halt", "h")]
        title, message, severity = notes(app)[-1]
        assert title == "Halted" and severity == "warning"
        assert "1 working order(s) cancelled" in message
        assert app.status_bar.text_of("state").strip() == "HALTED"
        assert "operator halt (h)" in app.status_bar.text_of("reason")

        # h again: the resume dialog names the reason; y asks the backend to resume.
        await pilot.press("h")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "Halted because: operator halt (h)" in app.screen.body_text
        await pilot.press("y")
        await pilot.pause()
        assert actions(fake) == [("halt", "h"), ("resume", "h")]
        assert notes(app)[-1][:2] == ("Resumed", "Trading ACTIVE again.")
        assert app.status_bar.text_of("state").strip() == "ACTIVE"


async def test_a_refused_resume_is_shown_with_its_reason(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    fake.state, fake.halt_reason = TradingState.HALTED, HaltReason.STOP_FILE
    fake.state_reason = HaltReason.STOP_FILE.text()
    fake.refuse["resume"] = "the STOP file is present: remove it first"
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        # The status bar reads the cause from halt_reason, not from the text.
        assert app.status_bar.text_of("state").strip() == "HALTED (STOP file)"
        assert str(fake.info.stop_file) in app.status_bar.text_of("reason")
        await pilot.press("h", "y")
        await pilot.pause()
        assert actions(fake) == [("resume", "h")]
        assert notes(app)[-1] == (
            "Not resumed",
            "Not resumed: the STOP file is present: remove it first",
            "error",
        )
        assert app.status_bar.text_of("state").strip() == "HALTED (STOP file)"


async def test_a_refused_halt_is_shown_with_its_reason(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    fake.refuse["halt"] = "the core is stopping"
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await pilot.press("h")
        await pilot.pause()
        assert actions(fake) == [("halt", "h")]
        assert notes(app)[-1] == ("Not halted", "Not halted: the core is stopping", "error")
        assert app.status_bar.text_of("state").strip() == "ACTIVE"


async def test_f_y_flattens_through_the_backend(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    fake.positions = (LONG_AAPL,)
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await pilot.press("f")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "AAPL" in app.screen.body_text and "+10" in app.screen.body_text
        assert actions(fake) == []  # nothing is sent before the operator says yes
        await pilot.press("y")
        await pilot.pause()
        assert actions(fake) == [("flatten", "f")]
        assert notes(app)[-1][:2] == ("Flatten", "Flatten sent: AAPL.")

        fake.refuse["flatten"] = "broker disconnected"
        await pilot.press("f", "y")
        await pilot.pause()
        assert actions(fake)[-1] == ("flatten", "f")
        assert notes(app)[-1] == ("Not flattened", "Not flattened: broker disconnected", "error")


async def test_r_reviews_the_breaker_and_resets_through_the_backend(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    untripped = FakeBackend(tmp_path)
    async with fake_console(tmp_path, untripped) as (app, pilot, _):
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert "not tripped (state ACTIVE)" in notes(app)[-1][1]
        assert actions(untripped) == []

    fake.state = TradingState.TRIPPED
    fake.trip_reason = "daily loss limit: P&L -2,212.50 <= -2,000.00"
    fake.refuse["reset_breaker"] = "the breaker is no longer tripped"
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await pilot.press("r")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert f"Tripped because: {fake.trip_reason}" in dialog.body_text
        assert "total -2,212.50" in dialog.body_text
        assert "Daily loss limit: -2,000.00" in dialog.body_text
        assert "still beyond the limit" in dialog.body_text  # loss_limit_usage >= 1
        await pilot.press("y")
        await pilot.pause()
        assert actions(fake) == [("reset_breaker", "r")]
        assert notes(app)[-1][:2] == ("Not reset", "Not reset: the breaker is no longer tripped")

        del fake.refuse["reset_breaker"]
        await pilot.press("r", "y")
        await pilot.pause()
        assert actions(fake) == [("reset_breaker", "r"), ("reset_breaker", "r")]
        assert notes(app)[-1][:2] == ("Breaker reset", "Breaker reset: trading ACTIVE.")
        assert app.status_bar.text_of("state").strip() == "ACTIVE"


def test_the_console_imports_nothing_of_core_but_backend_and_model() -> None:
    # The import-linter contract forbids the engines by name; this says what is allowed.
    console = Path(__file__).resolve().parent.parent / "tui" / "console"
    seen: dict[str, set[str]] = {}
    for path in sorted(console.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                if name.split(".")[0] in ("core", "storage"):
                    seen.setdefault(name, set()).add(path.name)
    assert set(seen) == {"core.backend", "core.model"}, seen
