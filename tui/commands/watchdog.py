"""`trading-console watchdog`: is the console alive? Meant for cron or a systemd timer.

It reads the heartbeat from the file and from the database (the newer one wins)
and calls the console DOWN when there is none, when it says "crashed", when the
recorded process is gone, or when it is older than WATCHDOG_STALE_SECONDS. It
alerts on the edges only — once when the console goes down, once when it comes
back — and remembers which side it is on in DATA_DIR/watchdog.state, so running
it every minute does not re-send. A heartbeat that says "stopped" (a clean,
deliberate stop) is not an incident.

If every channel fails to deliver the DOWN alert, the state is not advanced and
the next run tries again.

Exit status: 0 the console is up (or stopped cleanly), 1 it is down.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from loguru import logger

from core.alerting.channels import AlertChannel
from core.alerting.factory import build_channels
from core.alerting.manager import DeliveryStatus, RetryPolicy, deliver_everywhere, format_alert
from core.alerting.redaction import Redactor
from core.config import Settings
from core.heartbeat import HeartbeatRecord, HeartbeatState, read_heartbeat_file
from core.model import Alert, AlertSeverity
from storage.database import read_heartbeat

STATE_FILE = "watchdog.state"
EXIT_UP, EXIT_DOWN = 0, 1


class ConsoleStatus(StrEnum):
    UP = "up"
    DOWN = "down"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Verdict:
    status: ConsoleStatus
    detail: str
    heartbeat: HeartbeatRecord | None


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this host (signal 0 checks, sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def latest_heartbeat(settings: Settings) -> HeartbeatRecord | None:
    """The newer of the file and the database heartbeat (either may be missing)."""
    found = [
        h
        for h in (
            read_heartbeat_file(settings.heartbeat_path),
            read_heartbeat(settings.database_path),
        )
        if h is not None
    ]
    return max(found, key=lambda h: h.ts) if found else None


def assess(settings: Settings, now: datetime) -> Verdict:
    """Up, down or stopped, and why, in words for the operator."""
    beat = latest_heartbeat(settings)
    if beat is None:
        return Verdict(
            ConsoleStatus.DOWN,
            f"no heartbeat ({settings.heartbeat_path} and the database have none)",
            None,
        )
    age = (now - beat.ts).total_seconds()
    when = f"last heartbeat {age:.0f}s ago"
    if beat.state is HeartbeatState.STOPPED:
        return Verdict(ConsoleStatus.STOPPED, f"stopped cleanly ({when})", beat)
    if beat.state is HeartbeatState.CRASHED:
        return Verdict(ConsoleStatus.DOWN, f"crashed (pid {beat.pid}, {when})", beat)
    if not pid_alive(beat.pid):
        return Verdict(ConsoleStatus.DOWN, f"process {beat.pid} is gone ({when})", beat)
    if age > settings.watchdog_stale_seconds:
        return Verdict(
            ConsoleStatus.DOWN,
            f"heartbeat is {age:.0f}s old (limit {settings.watchdog_stale_seconds:g}s), "
            f"process {beat.pid} still exists: hung?",
            beat,
        )
    return Verdict(ConsoleStatus.UP, f"running (pid {beat.pid}, {when})", beat)


def _state_path(settings: Settings) -> Path:
    return settings.data_dir / STATE_FILE


def read_state(path: Path) -> ConsoleStatus | None:
    try:
        return ConsoleStatus(json.loads(path.read_text(encoding="utf-8"))["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(path: Path, status: ConsoleStatus, detail: str, now: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        json.dumps({"status": str(status), "since": now.isoformat(), "detail": detail}) + "\n",
        encoding="utf-8",
    )
    os.replace(tmp, path)


def _edge_alert(previous: ConsoleStatus | None, verdict: Verdict, now: datetime) -> Alert | None:
    """The alert for a change of side, or None when nothing changed worth telling."""
    if verdict.status is ConsoleStatus.DOWN and previous is not ConsoleStatus.DOWN:
        return Alert(
            AlertSeverity.CRITICAL, "watchdog_down", f"Trading Console DOWN: {verdict.detail}", now
        )
    if verdict.status is ConsoleStatus.UP and previous is ConsoleStatus.DOWN:
        return Alert(
            AlertSeverity.INFO, "watchdog_up", f"Trading Console back: {verdict.detail}", now
        )
    return None


async def _send(
    settings: Settings, alert: Alert, channels: list[AlertChannel], retry: RetryPolicy
) -> bool:
    """Every channel gets both edges, whatever its minimum severity: whoever heard
    "down" must also hear "back". True when at least one channel delivered (or none exist)."""
    redact = Redactor.from_settings(settings)
    text = format_alert(alert, source="Watchdog")
    try:
        results = await deliver_everywhere(channels, text, retry, redact=redact)
    finally:
        for channel in channels:
            await channel.aclose()
    for result in results:
        if result.status is DeliveryStatus.SENT:
            logger.info("watchdog alert sent via {channel}", channel=result.channel)
        else:
            logger.warning(
                "watchdog alert via {channel} failed: {detail}",
                channel=result.channel,
                detail=result.detail,
            )
    return not results or any(r.status is DeliveryStatus.SENT for r in results)


def run_watchdog(
    settings: Settings,
    *,
    now: datetime | None = None,
    channels: list[AlertChannel] | None = None,
    retry: RetryPolicy | None = None,
) -> int:
    """One check; alerts on a change of side. Returns EXIT_UP (0) or EXIT_DOWN (1)."""
    now = now or datetime.now(UTC)
    verdict = assess(settings, now)
    state_path = _state_path(settings)
    previous = read_state(state_path)
    print(f"watchdog: console {verdict.status} — {verdict.detail}")
    alert = _edge_alert(previous, verdict, now)
    advance = True
    if alert is not None:
        log_level = "CRITICAL" if alert.severity is AlertSeverity.CRITICAL else "INFO"
        logger.log(log_level, "WATCHDOG {message}", message=alert.message, key=alert.key)
        chosen = build_channels(settings) if channels is None else channels
        policy = retry or RetryPolicy(attempts=3, first_delay=2.0, send_timeout=15.0)
        advance = asyncio.run(_send(settings, alert, chosen, policy))
        if not advance:
            print("watchdog: no channel delivered the alert; the next run tries again")
    if advance and previous is not verdict.status:
        write_state(state_path, verdict.status, verdict.detail, now)
    return EXIT_DOWN if verdict.status is ConsoleStatus.DOWN else EXIT_UP
