"""`trading-console` (the default command): the Textual console on an assembled runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from core.model import Alert, AlertSeverity
from storage.rows import AlertRecord
from tui.commands.runtime import Runtime
from tui.console.app import EXIT_CRASH, EXIT_OK, STOP_TIMEOUT_SECONDS, TradingConsoleApp


def alerts_from_records(records: Sequence[AlertRecord]) -> list[Alert]:
    """Stored alert rows back into Alerts (order kept: newest first)."""
    alerts = []
    for r in records:
        try:
            severity = AlertSeverity(r.severity)
        except ValueError:
            severity = AlertSeverity.WARNING  # an unknown level is shown, not dropped
        alerts.append(Alert(severity, r.key, r.message, r.ts))
    return alerts


async def run_console(runtime: Runtime) -> int:
    """Run the console on an assembled runtime; returns 0 on a clean stop, 1 on a crash."""
    history = alerts_from_records(await runtime.database.recent_alerts(200))
    app = TradingConsoleApp(runtime.system, alert_history=history)
    try:
        await app.run_async()
    finally:
        if runtime.system.running:
            # The UI left without the quit path (an exception in a widget): still
            # cancel working orders and record the day before the caller closes storage.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runtime.system.stop("console exited"), STOP_TIMEOUT_SECONDS)
    if runtime.system.fatal_error is not None:
        return EXIT_CRASH
    return EXIT_CRASH if app.return_code not in (None, EXIT_OK) else EXIT_OK
