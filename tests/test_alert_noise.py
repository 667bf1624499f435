"""One incident, one alert: a real runtime (database, recorder, monitoring) on the IbBroker
with the real ib_async client against the fake TWS, and a real refused start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from subprocess import PIPE

import pytest
from loguru import logger

from core.brokers.ib import IbBroker
from core.clock import SimClock
from core.model import OrderIntent, OrderStatus, OrderType, Side
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, WHATSAPP_FROM, FakeTwilio
from tests.fake_tws import FakeTws, wait_until
from tests.helpers import settings as make_settings
from tui.commands.runtime import Runtime, build_runtime

REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _reset_log_patcher() -> Iterator[None]:
    yield
    logger.configure(patcher=lambda record: None)  # build_runtime installs redaction


@contextlib.asynccontextmanager
async def paper_runtime(tmp_path: Path) -> AsyncIterator[tuple[Runtime, FakeTws, SimClock]]:
    clock = SimClock(T0)
    tws = await FakeTws(now=clock.now).start()
    s = make_settings(
        tmp_path,
        trading_mode="paper",
        symbols="AAPL,MSFT",
        ib_port=tws.port,
        ib_connect_timeout=2,
        strategy_params='{"fast": 50, "slow": 100}',  # no signals in these short runs
    )
    runtime = await build_runtime(s, clock)
    runtime.start_background()
    try:
        await runtime.system.start()
        feed = runtime.system.feed
        await wait_until(lambda: all(feed.latest(symbol) for symbol in ("AAPL", "MSFT")))
        yield runtime, tws, clock
    finally:
        await runtime.system.stop("test over")
        await runtime.close(alert_timeout=2)
        await tws.stop()


def _alert_keys(runtime: Runtime, prefix: str) -> list[str]:
    return [a.key for a in runtime.system.alerts.recent if a.key.startswith(prefix)]


async def test_an_outage_is_one_alert_then_one_reconnected_alert(tmp_path: Path) -> None:
    async with paper_runtime(tmp_path) as (runtime, tws, clock):
        broker, health = runtime.system.broker, runtime.monitoring.health
        assert isinstance(broker, IbBroker)
        assert _alert_keys(runtime, "broker_") == ["broker_connected"]
        await tws.close_listener()  # TWS gone: every reconnect attempt is refused
        tws.drop_connections()
        await wait_until(lambda: not broker.connected)
        attempts = tws.connections
        for _ in range(6):  # 6 x 5 s: failed attempts at 1, 2, 4, 8... s after the drop
            clock.advance(5)
            await asyncio.sleep(0.3)  # run() attempts on its wall-time loop
            health.check()
        assert not broker.connected
        assert broker.last_failure.startswith("connection refused")
        assert _alert_keys(runtime, "broker_") == ["broker_connected", "broker_disconnected"]
        # The health check counted from the drop, across every failed attempt: 30 s.
        assert _alert_keys(runtime, "health:broker") == ["health:broker"]
        (health_alert,) = [a for a in runtime.system.alerts.recent if a.key == "health:broker"]
        assert "still disconnected after 30s" in health_alert.message
        await tws.reopen()
        for _ in range(20):
            if broker.connected:
                break
            clock.advance(5)
            await asyncio.sleep(0.3)
        assert broker.connected and tws.connections == attempts + 1
        reconnected = runtime.system.alerts.recent[-1]
        assert reconnected.key == "broker_connected"
        assert reconnected.message.startswith("Broker reconnected after ")
        assert _alert_keys(runtime, "broker_") == [
            "broker_connected",
            "broker_disconnected",
            "broker_connected",
        ]
    with sqlite3.connect(runtime.system.settings.database_path) as conn:
        stored = conn.execute(
            "SELECT key FROM alerts WHERE key LIKE 'broker_%' ORDER BY rowid"
        ).fetchall()
    assert stored == [("broker_connected",), ("broker_disconnected",), ("broker_connected",)]


async def test_one_reject_is_one_rejected_row(tmp_path: Path) -> None:
    async with paper_runtime(tmp_path) as (runtime, tws, _clock):
        tws.reject_next_order(201, "Order rejected - reason:Insufficient margin")
        order = runtime.system.execution.on_intent(
            OrderIntent("AAPL", Side.BUY, 10, OrderType.LIMIT, 185.0, reason="test")
        )
        assert order is not None
        await wait_until(lambda: order.status is OrderStatus.REJECTED)
        await asyncio.sleep(0.3)  # IB's Inactive status follows the error
        client_order_id = order.client_order_id
    with sqlite3.connect(runtime.system.settings.database_path) as conn:
        rows = conn.execute(
            "SELECT status FROM order_events WHERE client_order_id = ? ORDER BY rowid",
            (client_order_id,),
        ).fetchall()
        (order_status,) = conn.execute(
            "SELECT status FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
    assert [r[0] for r in rows].count("Rejected") == 1, rows
    assert order_status == "Rejected"


async def test_a_refused_start_is_not_a_crash_alert(tmp_path: Path) -> None:
    # TRADING_MODE=live --live against a paper login: the console refuses (exit 2).
    with FakeTwilio() as twilio:
        tws = await FakeTws().start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIM_", "TRADING_"))}
        env.update(
            PYTHONPATH=str(REPO),
            DATA_DIR=str(tmp_path / "data"),
            STOP_FILE=str(tmp_path / "STOP"),
            TRADING_MODE="live",
            SYMBOLS="AAPL",
            IB_PORT=str(tws.port),
            IB_CONNECT_TIMEOUT="2",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_WHATSAPP_FROM=WHATSAPP_FROM,
            ALERT_WHATSAPP_TO="whatsapp:+15551234567",
            ALERT_WHATSAPP_MIN_SEVERITY="info",
            TWILIO_BASE_URL=twilio.url,
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tui.commands.cli", "--headless", "--live",
                cwd=tmp_path, env=env, stdout=PIPE, stderr=PIPE,
            )  # fmt: skip
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            await tws.stop()
        bodies = [m.fields["Body"] for m in twilio.messages]
    assert proc.returncode == 2, err.decode()[-2000:]
    assert "paper account" in err.decode()
    assert not any("CRASH" in b for b in bodies), bodies
    db = tmp_path / "data" / "trading.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM alerts WHERE key = 'crash'").fetchone() == (
                0,
            )
