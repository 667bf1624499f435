"""The console in paper mode: a real IbBroker (the real ib_async client) against the fake TWS.

Issue 4 asks to "run the console in paper mode against the fake TWS in a test".
The App is handed a TradingSystem on an IbBroker connected over loopback to
`tests/fake_tws.py`, and is driven with Pilot at 120x40. The fake TWS, the
ib_async client, the core and the UI share this one event loop, as they do in
production. Time is a SimClock: the broker's reconnect backoff reads it, so a
reconnect happens when the test moves the clock, not when a wall clock allows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from core.brokers.ib import IbBroker, IbConfig
from core.clock import SimClock
from core.model import TradingState
from core.system import TradingSystem
from tests.fake_tws import FakeTws, wait_until
from tests.helpers import T0
from tests.helpers import settings as make_settings
from tui.console.app import TradingConsoleApp
from tui.console.widgets.base import DiffTable

SYMBOLS = ("AAPL", "MSFT")
ACCOUNT = "DU1234567"  # the fake TWS's paper account


@dataclass
class PaperConsole:
    app: TradingConsoleApp
    pilot: Pilot[None]
    system: TradingSystem
    broker: IbBroker
    tws: FakeTws
    clock: SimClock

    async def frame(self) -> None:
        """One refresh tick now, rather than waiting for the 4 Hz timer."""
        self.app.refresh_now()
        await self.pilot.pause()

    def screen_lines(self) -> list[str]:
        """The whole terminal as the operator sees it, one string per line."""
        # The compositor is private Textual API (the version is pinned): it is the
        # only way to read the composed screen as text in-process.
        return [strip.text for strip in self.app.screen._compositor.render_strips()]

    def status(self, name: str) -> str:
        return self.app.status_bar.text_of(name).strip()

    def quote(self, symbol: str) -> list[str]:
        table = self.app.query_one("#quotes-table", DiffTable)
        return [cell.plain for cell in table.get_row(symbol)]


@asynccontextmanager
async def paper_console(tmp_path: Path) -> AsyncIterator[PaperConsole]:
    clock = SimClock(T0)
    tws = await FakeTws(now=clock.now).start()
    s = make_settings(
        tmp_path,
        trading_mode="paper",
        symbols=",".join(SYMBOLS),
        ib_port=tws.port,
        ib_client_id=7,
        ib_connect_timeout=2,
        strategy_params='{"fast": 50, "slow": 100}',  # no strategy orders in this run
    )
    base = IbConfig.from_settings(s)
    fields: dict[str, Any] = {n: getattr(base, n) for n in IbConfig.__dataclass_fields__}
    # A fast supervision loop and a fixed jitter: reconnects come promptly and repeatably.
    broker = IbBroker(IbConfig(**{**fields, "supervise_seconds": 0.005, "jitter_seed": 1}), clock)
    system = TradingSystem(s, broker, clock)
    # start_system=True: the App connects the broker itself in on_mount, as `trading-console`
    # does in paper mode.
    app = TradingConsoleApp(system)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(lambda: all(system.feed.latest(sym) for sym in SYMBOLS))
            console = PaperConsole(app, pilot, system, broker, tws, clock)
            await console.frame()
            yield console
    finally:
        if system.running:
            await system.stop("end of test")
        await tws.stop()


async def test_paper_console_shows_account_quotes_halt_and_survives_a_dropped_tws(
    tmp_path: Path,
) -> None:
    async with paper_console(tmp_path) as c:
        # Status bar: mode, the IB account, connected.
        assert c.status("mode") == "PAPER"
        assert c.app.status_bar.has_class("-paper")
        assert c.status("account") == ACCOUNT
        assert c.status("conn") == "ib connected"
        assert c.status("state") == "ACTIVE"
        top = c.screen_lines()[0]
        assert "PAPER" in top and ACCOUNT in top and "ib connected" in top, top

        # Quotes from the fake TWS reach the quotes pane, marked as streamed.
        c.tws.push_tick("AAPL", bid=190.10, ask=190.14)
        await wait_until(lambda: c.system.feed.latest("AAPL").bid == 190.10)  # type: ignore[union-attr]
        await c.frame()
        aapl = c.quote("AAPL")
        assert aapl[1:3] == ["190.10", "190.14"] and aapl[7] == "stream", aapl
        assert c.quote("MSFT")[1] == "409.95"  # the fake TWS's opening quote
        assert "2 stream" in c.status("health")
        assert any("AAPL" in line and "190.10" in line for line in c.screen_lines())

        # h halts at once.
        await c.pilot.press("h")
        await c.pilot.pause()
        assert c.system.risk.state is TradingState.HALTED
        assert c.status("state") == "HALTED"

        # TWS goes away: the console says DISCONNECTED, in words, and keeps running.
        await c.tws.close_listener()  # no reconnect until the test reopens it
        c.tws.drop_connections()
        await wait_until(lambda: not c.broker.connected)
        await c.frame()
        assert c.status("conn") == "ib DISCONNECTED"
        assert c.status("state") == "DISCONNECTED"
        assert "reconnecting" in c.status("reason") and "HALTED" in c.status("reason")
        assert c.app.status_bar.has_class("-disconnected")
        assert c.app.screen.has_class("-disconnected")
        lines = c.screen_lines()
        assert "DISCONNECTED" in lines[0] and "BROKER DISCONNECTED" in lines[1], lines[:2]
        assert not any("Traceback" in line for line in lines)
        assert c.app.is_running and c.system.fatal_error is None

        # TWS is back: the broker reconnects (backoff reads the SimClock) and so does the bar.
        await c.tws.reopen()
        c.clock.advance(1.0)
        await wait_until(lambda: c.broker.connected)
        await c.frame()
        assert c.status("conn") == "ib connected"
        assert not c.app.status_bar.has_class("-disconnected")
        # Reconnecting does not resume trading: the operator's halt stands.
        assert c.status("state") == "HALTED"
        # Streaming resumed on the new session.
        c.tws.push_tick("AAPL", bid=191.00, ask=191.04)
        await wait_until(lambda: c.system.feed.latest("AAPL").bid == 191.00)  # type: ignore[union-attr]
        await c.frame()
        assert c.quote("AAPL")[1] == "191.00"

        # q with a flat book: the console stops the core and leaves cleanly.
        await c.pilot.press("q")
        await c.system.stopped.wait()
        await c.pilot.pause()
    assert c.app.return_code == 0
    assert not c.system.running
