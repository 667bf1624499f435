"""`trading-console` (the default command): the Textual console on an assembled runtime."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from core.model import Alert, AlertSeverity
from storage.rows import AlertRecord
from tui.commands.runtime import SYSTEM_STOP_SECONDS, Runtime
from tui.console.app import EXIT_CRASH, EXIT_OK, TradingConsoleApp


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
    """Run the console on an assembled runtime; returns 0 on a clean stop, 1 on a crash.

    SIGTERM, SIGHUP and SIGINT do what `q` + yes does (runtime.StopSignals): Textual's
    own exit then leaves the alternate screen and turns mouse tracking off; a forced
    exit (a third signal, or the stop bound reached) puts the terminal back itself."""
    app: TradingConsoleApp | None = None
    early_stop: list[str] = []

    def stop(reason: str) -> None:
        if app is None:
            early_stop.append(reason)  # before the App exists: it is never started
        else:
            app.request_stop(reason)

    runtime.stop_signals(stop)
    history = alerts_from_records(await runtime.database.recent_alerts(200))
    app = TradingConsoleApp(
        runtime.system,
        alert_history=history,
        stop_timeout=SYSTEM_STOP_SECONDS,
        on_stopping=runtime.begin_stop,
    )
    runtime.restore_terminal = app.restore_terminal_now
    if early_stop:
        return EXIT_OK
    try:
        await app.run_async()
    finally:
        if runtime.system.running:
            # The UI left without the quit path (an exception in a widget): still
            # cancel working orders and record the day before the caller closes storage.
            with contextlib.suppress(Exception):
                await runtime.stop_system("console exited")
    if runtime.system.fatal_error is not None:
        return EXIT_CRASH
    return EXIT_CRASH if app.return_code not in (None, EXIT_OK) else EXIT_OK
