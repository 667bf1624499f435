"""Silence detection: the heartbeat (file + database), `trading-console watchdog` alerting
once per edge through the real twilio client and a fake Twilio, and the in-process health
checks on a SimClock."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from core.alerting.manager import RetryPolicy
from core.clock import SimClock
from core.config import Settings
from core.health import HealthLimits, HealthMonitor
from core.heartbeat import (
    Heartbeat,
    HeartbeatRecord,
    HeartbeatState,
    read_heartbeat_file,
    write_heartbeat_file,
)
from core.model import Quote
from storage.database import Database, read_heartbeat
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, WHATSAPP_FROM, FakeTwilio
from tests.helpers import T0, build_rig, settings
from tui.commands.watchdog import EXIT_DOWN, EXIT_UP, STATE_FILE, run_watchdog

TO = "whatsapp:+15551234567"
NOW = T0 + timedelta(hours=1)
ONE_TRY = RetryPolicy(attempts=1, send_timeout=5)


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def _settings(tmp_path: Path, twilio: FakeTwilio) -> Settings:
    return settings(
        tmp_path,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_whatsapp_from=WHATSAPP_FROM,
        alert_whatsapp_to=TO,
        twilio_base_url=twilio.url,
        watchdog_stale_seconds=60,
    )


def _beat(s: Settings, age_s: float, *, pid: int | None = None, state: str = "running") -> None:
    record = HeartbeatRecord(
        NOW - timedelta(seconds=age_s), pid or os.getpid(), HeartbeatState(state), T0
    )
    write_heartbeat_file(s.heartbeat_path, record)


def _bodies(twilio: FakeTwilio) -> list[str]:
    return [m.fields["Body"].split("\n")[0] for m in twilio.messages]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    return proc.pid


# ----------------------------------------------------------------------------- watchdog


def test_stale_heartbeat_alerts_once_and_recovery_alerts_once(
    tmp_path: Path, twilio: FakeTwilio
) -> None:
    s = _settings(tmp_path, twilio)
    _beat(s, age_s=5)
    assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_UP
    assert twilio.requests == []  # up and never down: nothing to say

    _beat(s, age_s=120)  # a live pid (ours) that stopped beating: hung
    for _minute in range(3):
        assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_DOWN
    assert _bodies(twilio) == [
        "Watchdog CRITICAL: Trading Console DOWN: heartbeat is 120s old (limit 60s), "
        f"process {os.getpid()} still exists: hung?"
    ]
    state = json.loads((s.data_dir / STATE_FILE).read_text())
    assert state["status"] == "down"

    _beat(s, age_s=2)
    for _minute in range(3):
        assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_UP
    assert len(twilio.messages) == 2
    assert _bodies(twilio)[1] == (
        f"Watchdog INFO: Trading Console back: running (pid {os.getpid()}, last heartbeat 2s ago)"
    )


def test_a_vanished_process_is_down_even_with_a_fresh_heartbeat(
    tmp_path: Path, twilio: FakeTwilio
) -> None:
    s = _settings(tmp_path, twilio)
    pid = _dead_pid()
    _beat(s, age_s=3, pid=pid)
    assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_DOWN
    assert _bodies(twilio) == [
        f"Watchdog CRITICAL: Trading Console DOWN: process {pid} is gone (last heartbeat 3s ago)"
    ]


def test_no_heartbeat_at_all_is_down(tmp_path: Path, twilio: FakeTwilio) -> None:
    s = _settings(tmp_path, twilio)
    assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_DOWN
    assert "no heartbeat" in _bodies(twilio)[0]


def test_a_clean_stop_is_not_an_incident(tmp_path: Path, twilio: FakeTwilio) -> None:
    s = _settings(tmp_path, twilio)
    _beat(s, age_s=3600, pid=_dead_pid(), state="stopped")
    assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_UP
    assert twilio.requests == []


def test_undelivered_down_alert_is_tried_again_next_run(tmp_path: Path, twilio: FakeTwilio) -> None:
    s = _settings(tmp_path, twilio)
    _beat(s, age_s=3, state="crashed")
    twilio.fail_next(500)
    assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_DOWN
    assert twilio.messages == [] and not (s.data_dir / STATE_FILE).exists()
    assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_DOWN
    assert _bodies(twilio) == [
        f"Watchdog CRITICAL: Trading Console DOWN: crashed (pid {os.getpid()}, "
        "last heartbeat 3s ago)"
    ]
    assert run_watchdog(s, now=NOW, retry=ONE_TRY) == EXIT_DOWN
    assert len(twilio.messages) == 1


async def test_the_database_heartbeat_counts_when_the_file_is_missing(
    tmp_path: Path, twilio: FakeTwilio
) -> None:
    s = _settings(tmp_path, twilio)
    db = await Database.open(s.database_path)
    try:
        await db.write_heartbeat(
            HeartbeatRecord(NOW - timedelta(seconds=4), os.getpid(), HeartbeatState.RUNNING, T0)
        )
    finally:
        await db.close()
    assert not s.heartbeat_path.exists()
    # Synchronous (it runs its own loop for sending), like cron's process: off this loop.
    code = await asyncio.to_thread(run_watchdog, s, now=NOW, retry=ONE_TRY)
    assert code == EXIT_UP and twilio.requests == []


# ----------------------------------------------------------------------------- heartbeat


async def test_heartbeat_writes_file_and_database_and_the_final_state(tmp_path: Path) -> None:
    clock = SimClock(T0)
    db = await Database.open(tmp_path / "t.db")
    path = tmp_path / "hb" / "heartbeat"
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        if len(sleeps) == 3:
            raise asyncio.CancelledError

    heartbeat = Heartbeat(clock, path, 10.0, store=db, sleep=fake_sleep)
    try:
        with pytest.raises(asyncio.CancelledError):
            await heartbeat.run()
        assert heartbeat.beats == 3 and sleeps == [10.0, 10.0, 10.0]
        on_file = read_heartbeat_file(path)
        assert on_file is not None
        assert (on_file.ts, on_file.pid, on_file.state) == (
            T0 + timedelta(seconds=20),
            os.getpid(),
            HeartbeatState.RUNNING,
        )
        assert await db.heartbeat() == on_file
        await heartbeat.mark(HeartbeatState.STOPPED)
        assert read_heartbeat(tmp_path / "t.db") == read_heartbeat_file(path)
        stored = read_heartbeat(tmp_path / "t.db")
        assert stored is not None and stored.state is HeartbeatState.STOPPED
    finally:
        await db.close()


# ----------------------------------------------------------------------------- health


def _quotes(rig_system: object, clock: SimClock, symbols: tuple[str, ...]) -> None:
    for symbol in symbols:
        rig_system.pipeline.on_quote(  # type: ignore[attr-defined]
            Quote(symbol, clock.now(), 100.0, 100.02, 100, 100)
        )


async def test_health_checks_raise_once_per_incident_and_once_on_recovery(
    tmp_path: Path,
) -> None:
    rig = build_rig(settings(tmp_path))
    system, clock = rig.system, rig.clock
    await system.start(drive_broker=False)
    limits = HealthLimits(
        stale_data_seconds=10,
        startup_grace_seconds=30,
        disconnected_seconds=20,
        reconcile_max_age_seconds=90,
    )
    health = HealthMonitor(system, system.alerts, limits)

    def keys() -> list[str]:
        return [a.key for a in system.alerts.recent if a.key.startswith("health:")]

    assert health.check() == {}
    clock.advance(31)  # past the start grace, no quote ever arrived
    health.check()
    health.check()
    assert keys() == ["health:data"]
    assert "AAPL, MSFT, SPY" in system.alerts.recent[-1].message

    _quotes(system, clock, system.symbols)
    health.check()
    assert keys() == ["health:data", "health:data:ok"]

    await rig.venue.disconnect()
    clock.advance(5)
    health.check()
    clock.advance(20)
    _quotes(system, clock, system.symbols)  # keep data out of it
    health.check()
    health.check()
    assert keys()[2:] == ["health:broker"]
    # counted from the disconnect itself (5 s before the first check noticed it)
    assert "disconnected after 25s" in system.alerts.recent[-1].message

    await rig.venue.connect()
    _quotes(system, clock, system.symbols)
    health.check()
    assert keys()[3:] == ["health:broker:ok"]

    clock.advance(60)
    _quotes(system, clock, system.symbols)
    health.check()  # last reconciliation was on connect, 60s ago: fine
    clock.advance(40)
    _quotes(system, clock, system.symbols)
    health.check()
    health.check()
    assert keys()[4:] == ["health:reconcile"]
    system.controls.reconcile()
    health.check()
    assert keys()[5:] == ["health:reconcile:ok"]
    await system.stop("test")
