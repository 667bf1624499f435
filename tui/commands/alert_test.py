"""`trading-console alert-test`: one test message through every configured channel.

Prints one line per channel kind — sent, failed and why, or not configured and
which settings are missing — and exits 0 only when every configured channel
delivered (1 otherwise, including when none is configured).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from core.alerting.channels import AlertChannel
from core.alerting.factory import build_channels, channel_setups
from core.alerting.manager import DeliveryStatus, RetryPolicy, deliver_everywhere, format_alert
from core.alerting.redaction import Redactor
from core.config import Settings
from core.model import Alert, AlertSeverity

EXIT_OK, EXIT_FAILED = 0, 1


async def run_alert_test(
    settings: Settings,
    *,
    channels: list[AlertChannel] | None = None,
    retry: RetryPolicy | None = None,
    out: Callable[[str], None] = print,
) -> int:
    chosen = build_channels(settings) if channels is None else channels
    alert = Alert(
        AlertSeverity.INFO,
        "alert_test",
        "test message from `trading-console alert-test` — this channel works",
        datetime.now(UTC),
    )
    text = format_alert(alert, source=f"Trading Console [{settings.trading_mode.upper()}]")
    # Fewer, quicker retries than in trading: the operator is waiting at the terminal.
    policy = retry or RetryPolicy(attempts=2, first_delay=1.0, send_timeout=15.0)
    try:
        results = await deliver_everywhere(
            chosen, text, policy, redact=Redactor.from_settings(settings)
        )
    finally:
        for channel in chosen:
            await channel.aclose()
    by_name = {r.channel: r for r in results}
    targets = {c.name: c.targets for c in chosen}
    failed = False
    for setup in channel_setups(settings):
        result = by_name.get(setup.name)
        if result is None:
            missing = ", ".join(setup.missing)
            line = f"not configured (set {missing})"
        elif result.status is DeliveryStatus.SENT:
            line = f"sent to {', '.join(targets[setup.name])}"
        else:
            failed = True
            line = f"FAILED: {result.detail}"
        out(f"{setup.label:<9} {line}")
    if not results:
        out("no alert channel is configured: alerts go to the log and the console only")
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK
