"""A crash in the core reaches the operator's phone (a fake Twilio) before the process exits.

Two ways: through the runtime in this process, and as a real `trading-console --headless`
process whose strategy raises, which must exit non-zero only after the alert went out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from core.heartbeat import HeartbeatState, read_heartbeat_file
from tests.crashing_strategy import CRASH_MESSAGE
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, WHATSAPP_FROM, FakeTwilio
from tests.helpers import settings
from tui.commands.runtime import build_runtime

REPO = Path(__file__).resolve().parent.parent
TO = "whatsapp:+15551234567"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset_log_patcher() -> Iterator[None]:
    yield
    logger.configure(patcher=lambda record: None)  # build_runtime installs redaction


def _crash_bodies(twilio: FakeTwilio) -> list[str]:
    return [m.fields["Body"] for m in twilio.messages if "CRASH" in m.fields["Body"]]


async def test_core_crash_alert_is_delivered_before_the_runtime_closes(
    tmp_path: Path, twilio: FakeTwilio
) -> None:
    s = settings(
        tmp_path,
        strategy="tests.crashing_strategy:Boom",
        sim_quotes_per_second=50,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_whatsapp_from=WHATSAPP_FROM,
        alert_whatsapp_to=TO,
        twilio_base_url=twilio.url,
    )
    runtime = await build_runtime(s)
    system = runtime.system
    recorder_task = asyncio.create_task(runtime.recorder.run())
    try:
        await system.start()
        system.start_timer()
        async with asyncio.timeout(10):
            await system.stopped.wait()
        assert isinstance(system.fatal_error, RuntimeError)
        # What tui/commands/cli.py does after a crash: stop, then close (which drains the alerts).
        await system.stop(f"crash: {system.fatal_error!r}")
    finally:
        await runtime.close(alert_timeout=5)
        recorder_task.cancel()  # recorder.stop() already ended it; like cli.py, be sure
        with contextlib.suppress(asyncio.CancelledError):
            await recorder_task
    (body,) = _crash_bodies(twilio)
    assert body.startswith(f"Trading Console [SIM] CRITICAL: CRASH: RuntimeError: {CRASH_MESSAGE}")
    beat = read_heartbeat_file(s.heartbeat_path)
    assert beat is not None and beat.state is HeartbeatState.CRASHED
    with sqlite3.connect(s.database_path) as conn:
        rows = conn.execute("SELECT delivery FROM alerts WHERE key = 'crash'").fetchall()
    assert rows == [("whatsapp: sent",)]


def test_headless_process_sends_the_crash_alert_then_exits_non_zero(
    tmp_path: Path, twilio: FakeTwilio
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIM_", "TRADING_"))}
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(tmp_path / "data"),
        STOP_FILE=str(tmp_path / "STOP"),
        SYMBOLS="AAPL,MSFT",
        SIM_QUOTES_PER_SECOND="50",
        STRATEGY="tests.crashing_strategy:Boom",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_WHATSAPP_FROM=WHATSAPP_FROM,
        ALERT_WHATSAPP_TO=TO,
        TWILIO_BASE_URL=twilio.url,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tui.commands.cli", "--headless"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    # The process waited for the fake's answer before exiting: the alert is already here.
    (body,) = _crash_bodies(twilio)
    assert f"CRASH: RuntimeError: {CRASH_MESSAGE}" in body
    assert AUTH_TOKEN not in proc.stderr
    logs = "".join(p.read_text() for p in (tmp_path / "data" / "logs").glob("*.log"))
    assert CRASH_MESSAGE in logs and AUTH_TOKEN not in logs
