"""Pilot tests of what the console shows of the protection held at the broker (issue 14).

Positions: each position's protective stop (price, resting / pending, missing),
orders: type with its prices, GTC, the SL / TP role and exits queued while the
broker is disconnected. The rows are built directly and handed to the App
through the fake backend of tests/test_tui.py; the sim system shows what it has
of them today (an open position without a stop, a limit order's price).

Assertions read the cells the panes wrote and, where width matters, the
composed screen itself: what reaches the operator's terminal.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.style import Style
from textual.pilot import Pilot

from core.backend import OrderRow, PositionRow, StopState
from core.model import (
    OrderIntent,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
    TargetPosition,
    TimeInForce,
)
from tests.helpers import T0
from tests.test_tui import (
    FakeBackend,
    console,
    fake_console,
    frame,
    open_position,
    run_sim,
    table,
)
from tui.console.app import TradingConsoleApp
from tui.console.screens.confirm import ConfirmScreen
from tui.console.screens.help import HelpScreen
from tui.console.widgets import orders as orders_widget
from tui.console.widgets.orders import OrdersPane
from tui.console.widgets.positions import PositionsPane


def position(
    symbol: str,
    quantity: int,
    stop_price: float | None = None,
    stop_state: StopState = StopState.NONE,
    stop_quantity: int | None = None,
    stop_expected: bool = True,
) -> PositionRow:
    return PositionRow(
        symbol=symbol,
        quantity=quantity,
        avg_cost=190.0 if quantity else 0.0,
        market_value=quantity * 191.0,
        unrealized=quantity * 1.0,
        realized=0.0,
        broker_quantity=quantity,
        reconciled=True,
        stop_price=stop_price,
        stop_state=stop_state,
        stop_quantity=abs(quantity) if stop_quantity is None else stop_quantity,
        stop_expected=stop_expected,
    )


def order(client_order_id: str, **fields: object) -> OrderRow:
    row = OrderRow(
        client_order_id=client_order_id,
        created_at=T0,
        symbol="AAPL",
        side=Side.BUY,
        quantity=10,
        filled=0,
        order_type=OrderType.MARKET,
        limit_price=None,
        avg_fill_price=0.0,
        status=OrderStatus.SUBMITTED,
        message="",
    )
    return replace(row, **fields)  # type: ignore[arg-type]


def cell(app: TradingConsoleApp, table_id: str, row: str, column: str) -> str:
    return table(app, table_id).get_cell(row, column).plain


def style_of(app: TradingConsoleApp, table_id: str, row: str, column: str) -> Style:
    value = table(app, table_id).get_cell(row, column).style
    assert isinstance(value, Style)
    return value


def component(app: TradingConsoleApp, table_id: str, name: str) -> Style:
    return table(app, table_id).get_component_rich_style(name)


def screen_lines(app: TradingConsoleApp) -> list[str]:
    """The whole terminal as the operator sees it, one string per line (the
    compositor is private Textual API; the version is pinned)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def pane_lines(app: TradingConsoleApp, pane_id: str) -> list[str]:
    """The lines of one pane as drawn on screen, its border included."""
    region = app.query_one(f"#{pane_id}").region
    lines = screen_lines(app)[region.y : region.bottom]
    return [line[region.x : region.right] for line in lines]


async def show(app: TradingConsoleApp, pilot: Pilot[None]) -> None:
    app.refresh_now()
    await pilot.pause()


PROTECTED = (
    position("AAPL", 10, 182.40, StopState.RESTING),
    position("MSFT", -5, 410.0, StopState.PENDING),
    position("SPY", 20),  # open, no stop anywhere
    position("TSLA", 0),  # flat: nothing to protect
)


# ---------------------------------------------------------------- positions: the stop


async def test_positions_show_each_stop_and_whether_it_rests_at_the_broker(
    tmp_path: Path,
) -> None:
    fake = FakeBackend(tmp_path)
    fake.positions = PROTECTED
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await show(app, pilot)
        t = "positions-table"
        assert cell(app, t, "AAPL", "stop") == "182.40 ●"
        assert cell(app, t, "MSFT", "stop") == "410.00 …"
        assert cell(app, t, "SPY", "stop") == "NO STOP"
        assert cell(app, t, "TSLA", "stop") == "--"
        # Colour adds emphasis: resting calm green, pending amber, missing shouts.
        assert style_of(app, t, "AAPL", "stop") == component(app, t, "cell--positive")
        assert style_of(app, t, "MSFT", "stop") == component(app, t, "cell--warn")
        assert style_of(app, t, "SPY", "stop") == component(app, t, "cell--alert")
        # The unprotected row's symbol is marked too, the others are not.
        assert style_of(app, t, "SPY", "symbol") == component(app, t, "cell--alert")
        assert style_of(app, t, "AAPL", "symbol") == Style()
        assert style_of(app, t, "TSLA", "symbol") == Style()
        # The pane's title counts what is unprotected, so it shows even when the row
        # is scrolled away or another pane is zoomed.
        pane = app.query_one(PositionsPane)
        assert pane.border_title == "3 Positions - 1 NO STOP"
        assert pane.has_class("-alarm")
        assert "3 Positions - 1 NO STOP" in pane_lines(app, "positions")[0]


async def test_a_stop_short_of_the_position_shows_its_quantity(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    fake.positions = (
        position("AAPL", 10, 182.40, StopState.RESTING, stop_quantity=5),
        position("MSFT", -10, 410.0, StopState.RESTING, stop_quantity=10),  # a short's stop
        position("SPY", 0, 99.0, StopState.RESTING, stop_quantity=20),  # its position is gone
        position("NVDA", 10, 182.40, StopState.RESTING, stop_quantity=15),  # more than held
    )
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await show(app, pilot)
        t = "positions-table"
        assert cell(app, t, "AAPL", "stop") == "182.40 ● 5sh"
        # Short of the position (an exit working beside it): a warning, not an alarm.
        assert style_of(app, t, "AAPL", "stop") == component(app, t, "cell--warn")
        assert cell(app, t, "MSFT", "stop") == "410.00 ●"  # covers the whole short
        assert cell(app, t, "SPY", "stop") == "99.00 ● 20sh"  # could open a position
        assert style_of(app, t, "SPY", "stop") == component(app, t, "cell--alert")
        assert cell(app, t, "NVDA", "stop") == "182.40 ● 15sh"
        assert style_of(app, t, "NVDA", "stop") == component(app, t, "cell--alert")
        assert app.query_one(PositionsPane).border_title == "3 Positions"  # none lacks a stop


async def test_a_stop_placed_then_acknowledged_rewrites_only_its_cells(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    fake.positions = (position("AAPL", 10), position("MSFT", 5, 400.0, StopState.RESTING))
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await show(app, pilot)
        t = table(app, "positions-table")
        pane = app.query_one(PositionsPane)
        assert cell(app, "positions-table", "AAPL", "stop") == "NO STOP"
        assert pane.border_title == "3 Positions - 1 NO STOP"

        writes = t.cell_writes
        await show(app, pilot)  # equal rows: nothing is rewritten
        assert t.cell_writes == writes

        fake.positions = (
            position("AAPL", 10, 180.0, StopState.PENDING),
            fake.positions[1],
        )
        await show(app, pilot)
        assert cell(app, "positions-table", "AAPL", "stop") == "180.00 …"
        assert t.cell_writes == writes + 2  # the stop and the symbol's mark, nothing else
        assert pane.border_title == "3 Positions"
        assert not pane.has_class("-alarm")

        fake.positions = (
            position("AAPL", 10, 180.0, StopState.RESTING),
            fake.positions[1],
        )
        await show(app, pilot)
        assert cell(app, "positions-table", "AAPL", "stop") == "180.00 ●"
        assert t.cell_writes == writes + 3


async def test_reconciliation_mismatch_names_the_brokers_quantity(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    fake.positions = (
        position("AAPL", 10, 182.40, StopState.RESTING),
        replace(
            position("MSFT", 10, 400.0, StopState.RESTING), broker_quantity=8, reconciled=False
        ),
    )
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await show(app, pilot)
        t = "positions-table"
        assert cell(app, t, "AAPL", "recon") == "ok"
        assert cell(app, t, "MSFT", "recon") == "MISMATCH +8"
        assert style_of(app, t, "MSFT", "recon") == component(app, t, "cell--alert")


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_every_position_column_fits_on_screen(tmp_path: Path, size: tuple[int, int]) -> None:
    # The wide grid gives the positions pane 72 columns: the stop column must not push
    # anything out of sight, a four-figure price and a scrollbar included. At 80
    # columns the pane has the whole width.
    fake = FakeBackend(tmp_path)
    fake.positions = (
        position("AAPL", 10, 182.40, StopState.RESTING),
        replace(
            position("MSFT", -20, 1_234.56, StopState.PENDING),
            avg_cost=1_250.0,
            market_value=-24_691.20,
            unrealized=-312.45,
            realized=-234.5,
        ),
        position("SPY", 20),
        *(position(f"T{i}", 1, 50.0, StopState.RESTING) for i in range(8)),  # a scrollbar
    )
    async with fake_console(tmp_path, fake, size=size) as (app, pilot, _):
        await pilot.press("3")
        await show(app, pilot)
        lines = pane_lines(app, "positions")
        header = lines[1]
        labels = ("Sym", "Qty", "Avg cost", "Stop", "Bkr", "Mkt value", "Unreal.", "Real.")
        for label in labels:
            assert label in header, (label, header)
        aapl = next(line for line in lines if "AAPL" in line)
        assert "182.40 ●" in aapl and " ok " in aapl, aapl
        msft = next(line for line in lines if "MSFT" in line)
        for figure in ("1,250.00", "1,234.56 …", "-24,691.20", "-312.45", "-234.50"):
            assert figure in msft, (figure, msft)
        spy = next(line for line in lines if "SPY" in line)
        assert "NO STOP" in spy, spy


# ---------------------------------------------------------------- orders: type, TIF, role


ORDERS = (
    # newest first, as the snapshot hands them out
    order(
        "o5-TP",
        side=Side.SELL,
        order_type=OrderType.LIMIT,
        limit_price=110.0,
        tif=TimeInForce.GTC,
        role=OrderRole.TAKE_PROFIT,
    ),
    order(
        "o4-SL",
        side=Side.SELL,
        order_type=OrderType.STOP_LIMIT,
        stop_price=99.5,
        limit_price=99.4,
        tif=TimeInForce.GTC,
        role=OrderRole.STOP_LOSS,
    ),
    order(
        "o3-SL",
        side=Side.SELL,
        order_type=OrderType.STOP,
        stop_price=99.5,
        tif=TimeInForce.GTC,
        role=OrderRole.STOP_LOSS,
    ),
    order("o2", order_type=OrderType.LIMIT, limit_price=101.2, status=OrderStatus.FILLED),
    order("o1", status=OrderStatus.FILLED, filled=10),
)


async def test_orders_show_type_with_prices_gtc_and_role(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    fake.orders = ORDERS
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await show(app, pilot)
        t = "orders-table"
        types = {row.client_order_id: cell(app, t, row.client_order_id, "type") for row in ORDERS}
        assert types == {
            "o5-TP": "LMT 110.00 GTC",
            "o4-SL": "STP LMT 99.50/99.40 GTC",
            "o3-SL": "STP 99.50 GTC",
            "o2": "LMT 101.20",  # DAY goes without saying
            "o1": "MKT",
        }
        roles = {row.client_order_id: cell(app, t, row.client_order_id, "role") for row in ORDERS}
        assert roles == {"o5-TP": "TP", "o4-SL": "SL", "o3-SL": "SL", "o2": "", "o1": ""}
        assert style_of(app, t, "o3-SL", "role") == component(app, t, "cell--role")
        assert cell(app, t, "o3-SL", "status") == "Working"
        assert app.query_one(OrdersPane).border_title == "4 Orders"


async def test_at_80_columns_the_orders_pane_reads_as_the_broker_describes_them(
    tmp_path: Path,
) -> None:
    fake = FakeBackend(tmp_path)
    fake.orders = ORDERS
    async with fake_console(tmp_path, fake, size=(80, 24)) as (app, pilot, _):
        await pilot.press("4")
        await show(app, pilot)
        lines = pane_lines(app, "orders")
        stop_limit = next(line for line in lines if "SL" in line and "LMT" in line)
        # side, quantity, role, status, type and prices, GTC and the filled count
        for text in ("SELL", "10", "SL", "Working", "STP LMT 99.50/99.40 GTC"):
            assert text in stop_limit, (text, stop_limit)
        assert stop_limit.split("GTC")[1].split()[0] == "0"  # Filled
        take_profit = next(line for line in lines if "TP" in line)
        assert "LMT 110.00 GTC" in take_profit, take_profit


async def test_at_120_columns_the_orders_pane_shows_role_and_status(tmp_path: Path) -> None:
    # The wide grid leaves the orders pane 48 columns: what says "is this order OK"
    # (side, quantity, SL/TP, status) must be on screen without scrolling.
    fake = FakeBackend(tmp_path)
    fake.orders = ORDERS * 1 + tuple(
        order(f"x{i}", status=OrderStatus.FILLED, filled=10) for i in range(30)
    )  # enough rows for a scrollbar
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await show(app, pilot)
        lines = pane_lines(app, "orders")
        assert "Role" in lines[1] and "Status" in lines[1], lines[1]
        stop = next(line for line in lines if "SL" in line)
        assert "SELL" in stop and "Working" in stop, stop


async def test_an_exit_queued_while_disconnected_says_so(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    queued = order(
        "q1", side=Side.SELL, quantity=10, status=OrderStatus.PENDING_SUBMIT, queued=True
    )
    fake.orders = (queued, *ORDERS)
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await show(app, pilot)
        t = "orders-table"
        assert cell(app, t, "q1", "status") == "Queued (disconnected)"
        # Its own style: neither a working order's nor a reject's.
        queued_style = style_of(app, t, "q1", "status")
        assert queued_style == component(app, t, "cell--queued")
        assert queued_style.reverse  # distinct on a monochrome terminal as well
        for other in ("cell--warn", "cell--alert", "cell--positive", "cell--dim"):
            assert queued_style != component(app, t, other), other
        pane = app.query_one(OrdersPane)
        assert pane.border_title == "4 Orders - 1 queued (disconnected)"
        assert "1 queued (disconnected)" in pane_lines(app, "orders")[0]

        await pilot.press("4", "z")  # zoomed, the whole status is on screen too
        await show(app, pilot)
        assert any("Queued (disconnected)" in line for line in pane_lines(app, "orders"))
        await pilot.press("z")

        # Reconnected: the exit is sent and reads as any working order again.
        fake.orders = (replace(queued, queued=False, status=OrderStatus.SUBMITTED), *ORDERS)
        await show(app, pilot)
        assert cell(app, t, "q1", "status") == "Working"
        assert style_of(app, t, "q1", "status") == component(app, t, "cell--warn")
        assert pane.border_title == "4 Orders"
        assert not pane.has_class("-alarm")


async def test_the_status_column_gives_its_width_back_after_a_queued_exit(
    tmp_path: Path,
) -> None:
    # At 80 columns a queued exit's status pushes the order types to the edge; once
    # it is sent the column narrows again and the types are whole.
    fake = FakeBackend(tmp_path)
    queued = order("q1", side=Side.SELL, status=OrderStatus.PENDING_SUBMIT, queued=True)
    fake.orders = (queued, *ORDERS)
    async with fake_console(tmp_path, fake, size=(80, 24)) as (app, pilot, _):
        await pilot.press("4")
        await show(app, pilot)
        lines = pane_lines(app, "orders")
        assert any("Queued (disconnected)" in line for line in lines)
        assert not any("STP LMT 99.50/99.40 GTC" in line for line in lines)  # off the edge

        fake.orders = (replace(queued, queued=False, status=OrderStatus.SUBMITTED), *ORDERS)
        await show(app, pilot)
        await pilot.pause()
        lines = pane_lines(app, "orders")
        assert any("STP LMT 99.50/99.40 GTC" in line for line in lines), lines


async def test_orders_pane_formats_only_the_orders_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = orders_widget.order_cells

    def counting(row: OrderRow, seq: int, tz: object) -> object:
        made.append(row.client_order_id)
        return real(row, seq, tz)  # type: ignore[arg-type]

    monkeypatch.setattr(orders_widget, "order_cells", counting)
    fake = FakeBackend(tmp_path)
    history = tuple(
        order(f"h{i}", created_at=T0 - timedelta(seconds=i), status=OrderStatus.FILLED)
        for i in range(200)
    )
    fake.orders = history
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await show(app, pilot)
        assert len(made) == 200
        t = table(app, "orders-table")
        syncs: list[int] = []
        real_sync = t.sync

        def counting_sync(rows: Any) -> None:
            syncs.append(1)
            real_sync(rows)

        monkeypatch.setattr(t, "sync", counting_sync)
        made.clear()
        writes = t.cell_writes
        await show(app, pilot)  # the same rows: not even compared with the table
        await show(app, pilot)
        assert made == [] and syncs == [] and t.cell_writes == writes

        # A new protective stop on top: it alone is formatted; the rest are reused.
        stop = order(
            "n1-SL", side=Side.SELL, order_type=OrderType.STOP, stop_price=180.0,
            tif=TimeInForce.GTC, role=OrderRole.STOP_LOSS, status=OrderStatus.PENDING_SUBMIT,
        )  # fmt: skip
        fake.orders = (stop, *history[:199])
        await show(app, pilot)
        assert made == ["n1-SL"]
        assert t.row_count == 200
        assert cell(app, "orders-table", "n1-SL", "type") == "STP 180.00 GTC"
        # And when it is acknowledged only that order is formatted again.
        made.clear()
        fake.orders = (replace(stop, status=OrderStatus.SUBMITTED), *history[:199])
        await show(app, pilot)
        assert made == ["n1-SL"]
        assert t.cell_writes == writes + 1  # its status cell


async def test_help_explains_the_marks(tmp_path: Path) -> None:
    async with fake_console(tmp_path) as (app, pilot, _):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        notes = "\n".join(app.screen.notes)
        assert "182.40 ● rests at the broker" in notes
        assert "182.40 … on its way" in notes and "NO STOP" in notes
        assert "SL stop-loss, TP take-profit" in notes and "Queued (disconnected)" in notes


# ---------------------------------------------------------------- the sim system


async def test_sim_position_without_a_stop_policy_says_none_without_an_alarm(
    tmp_path: Path,
) -> None:
    # Protective stops are off in sim by default: nobody asked for a stop, so its
    # absence is shown as a fact ("none"), not as the NO STOP alarm.
    async with console(tmp_path) as (app, pilot, rig):
        await frame(app, pilot)
        assert table(app, "positions-table").row_count == 0
        await open_position(app, pilot, rig)
        assert cell(app, "positions-table", "AAPL", "qty") == "+10"
        assert cell(app, "positions-table", "AAPL", "stop") == "none"
        assert cell(app, "positions-table", "AAPL", "recon") == "ok"
        pane = app.query_one(PositionsPane)
        assert pane.border_title == "3 Positions"
        entry = rig.system.execution.orders
        [client_id] = list(entry)
        assert cell(app, "orders-table", client_id, "type") == "MKT"
        assert cell(app, "orders-table", client_id, "role") == ""
        assert cell(app, "orders-table", client_id, "status") == "Filled"

        rig.system.flatten("test")
        await run_sim(rig, 2)
        await frame(app, pilot)
        assert cell(app, "positions-table", "AAPL", "qty") == "0"
        assert cell(app, "positions-table", "AAPL", "stop") == "--"
        assert pane.border_title == "3 Positions"


async def test_sim_limit_order_shows_its_price(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot, rig):
        await run_sim(rig, 2)
        quote = rig.system.snapshot().quotes[0]
        assert quote.symbol == "AAPL" and quote.bid is not None
        limit = round(quote.bid * 0.99, 2)  # below the market: it rests
        placed = rig.system.execution.on_intent(
            OrderIntent("AAPL", Side.BUY, 5, OrderType.LIMIT, limit, "test")
        )
        assert placed is not None
        await run_sim(rig, 1)
        await frame(app, pilot)
        t = "orders-table"
        assert cell(app, t, placed.client_order_id, "type") == f"LMT {limit:,.2f}"
        assert cell(app, t, placed.client_order_id, "status") == "Working"
        assert cell(app, t, placed.client_order_id, "role") == ""


async def test_sim_protective_stop_is_shown_pending_then_resting(tmp_path: Path) -> None:
    async with console(tmp_path, protective_stop_pct=2.0) as (app, pilot, rig):
        await run_sim(rig, 2)
        rig.system.execution.on_target(TargetPosition("AAPL", 10, "test"))
        seen: list[str] = []
        for _ in range(300):  # 10 ms steps: the stop's acknowledgement takes 50 ms
            await run_sim(rig, 0.01)
            await frame(app, pilot)
            if "AAPL" in table(app, "positions-table").rows:
                stop_text = cell(app, "positions-table", "AAPL", "stop")
                if not seen or seen[-1] != stop_text:
                    seen.append(stop_text)
        stop = rig.system.execution.protection.stops["AAPL"]
        assert stop.stop_price is not None
        at = f"{stop.stop_price:,.2f}"
        # Once the entry fills the position has no stop for a moment, then one on its
        # way, then one resting at the broker; nothing else is ever shown.
        assert seen[-2:] == [f"{at} …", f"{at} ●"], seen
        assert set(seen) <= {"--", "NO STOP", f"{at} …", f"{at} ●"}, seen
        assert app.query_one(PositionsPane).border_title == "3 Positions"
        t = "orders-table"
        assert cell(app, t, stop.client_order_id, "role") == "SL"
        assert cell(app, t, stop.client_order_id, "type") == f"STP {at} GTC"
        assert cell(app, t, stop.client_order_id, "status") == "Working"
        assert cell(app, t, stop.client_order_id, "side") == "SELL"


async def test_sim_exit_made_while_disconnected_is_shown_queued_then_sent(
    tmp_path: Path,
) -> None:
    async with console(tmp_path, protective_stop_pct=2.0) as (app, pilot, rig):
        await open_position(app, pilot, rig)
        await run_sim(rig, 1)
        await frame(app, pilot)
        assert cell(app, "positions-table", "AAPL", "stop").endswith(" ●")
        await rig.venue.disconnect()
        rig.system.execution.on_target(TargetPosition("AAPL", 0, "exit while disconnected"))
        await run_sim(rig, 1)
        await frame(app, pilot)
        [queued] = [o for o in rig.system.snapshot().orders if o.queued]
        t = "orders-table"
        assert cell(app, t, queued.client_order_id, "status") == "Queued (disconnected)"
        assert cell(app, t, queued.client_order_id, "message") == ""  # said once is enough
        assert app.query_one(OrdersPane).border_title == "4 Orders - 1 queued (disconnected)"
        assert app.screen.has_class("-disconnected")
        assert rig.venue.positions() == {"AAPL": 10}

        await rig.venue.connect()
        await run_sim(rig, 3)
        await frame(app, pilot)
        assert rig.venue.positions() == {}
        assert cell(app, t, queued.client_order_id, "status") == "Filled"
        assert app.query_one(OrdersPane).border_title == "4 Orders"
        assert cell(app, "positions-table", "AAPL", "stop") == "--"


async def test_quit_says_which_positions_keep_a_stop_at_the_broker(tmp_path: Path) -> None:
    fake = FakeBackend(tmp_path)
    fake.positions = PROTECTED
    async with fake_console(tmp_path, fake) as (app, pilot, _):
        await pilot.press("q")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        body = dialog.body_text
        assert "positions are LEFT OPEN at the broker" in body
        assert "Their protective stops stay at the broker (GTC): AAPL, MSFT." in body
        assert "WITHOUT a stop at the broker: SPY." in body
        assert "TSLA" not in body  # flat
        await pilot.press("n")


async def test_a_narrow_terminal_marks_the_tab_of_a_pane_that_needs_the_operator(
    tmp_path: Path,
) -> None:
    # One pane at a time: whichever shows, the tabs say where an unprotected position
    # or a queued exit is.
    fake = FakeBackend(tmp_path)
    fake.positions = PROTECTED
    fake.orders = (order("q1", side=Side.SELL, queued=True), *ORDERS)
    async with fake_console(tmp_path, fake, size=(80, 24)) as (app, pilot, _):
        await show(app, pilot)
        assert app.screen.has_class("-narrow") and app.panes[1].display  # quotes shown
        tabs = screen_lines(app)[2]
        assert "3 Positions!" in tabs and "4 Orders!" in tabs, tabs
        assert "1 Quotes " in tabs and "6 Alerts" in tabs and "Alerts!" not in tabs, tabs
        assert app.query_one("#tab-positions").has_class("-alarm")

        fake.positions = (position("SPY", 20, 75.0, StopState.PENDING),)
        fake.orders = ORDERS
        await show(app, pilot)
        await pilot.pause()
        tabs = screen_lines(app)[2]
        assert "!" not in tabs, tabs
        assert not app.query_one("#tab-positions").has_class("-alarm")
