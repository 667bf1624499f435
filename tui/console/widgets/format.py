"""Text formatting shared by the panes.

Every figure an operator judges by direction (P&L, change, quantity) carries an
explicit sign, because colour alone is lost on a monochrome SSH terminal and on
colour-blind eyes. Only ASCII signs are used: the Unicode minus is an
"ambiguous width" character that some terminals draw two cells wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, tzinfo

from core.model import AlertSeverity

MISSING = "--"
SPARK_CHARS = "▁▂▃▄▅▆▇█"

SEVERITY_TAGS: dict[AlertSeverity, str] = {
    AlertSeverity.INFO: "[INFO]",
    AlertSeverity.WARNING: "[WARN]",
    AlertSeverity.CRITICAL: "[CRIT]",
}


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def signed_money(value: float | None) -> str:
    """``+1,234.50`` / ``-12.00``; zero is ``+0.00`` so the sign is never absent."""
    if value is None or _missing(value):
        return MISSING
    sign = "-" if value < 0 and round(value, 2) != 0 else "+"
    return f"{sign}{abs(value):,.2f}"


def money(value: float | None) -> str:
    if value is None or _missing(value):
        return MISSING
    return f"{value:,.2f}"


def whole_money(value: float | None) -> str:
    if value is None or _missing(value):
        return MISSING
    return f"{value:,.0f}"


def price(value: float | None) -> str:
    """Prices: 2 decimals, 4 below one dollar where cents are too coarse."""
    if value is None or _missing(value):
        return MISSING
    return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.2f}"


def spread(value: float | None) -> str:
    """Cents for ordinary stocks; four decimals only when the spread is below a cent."""
    if value is None or _missing(value):
        return MISSING
    sub_cent = 0 < abs(round(value, 6)) < 0.01  # round: 72.85 - 72.84 is 0.00999...
    return f"{value:.4f}" if sub_cent else f"{value:.2f}"


def signed_pct(value: float | None, decimals: int = 2) -> str:
    if value is None or _missing(value):
        return MISSING
    sign = "-" if value < 0 and round(value, decimals) != 0 else "+"
    return f"{sign}{abs(value):.{decimals}f}%"


def signed_qty(value: int | None) -> str:
    if value is None:
        return MISSING
    return f"{value:+d}" if value else "0"


def number(value: float | None, decimals: int = 2) -> str:
    if value is None or _missing(value):
        return MISSING
    return f"{value:,.{decimals}f}"


def age(seconds: float | None) -> str:
    """Whole seconds (then minutes, hours): a coarse value changes rarely, so the
    quote table rewrites the age cell about once a second, not every frame."""
    if seconds is None or _missing(seconds):
        return MISSING
    s = int(max(seconds, 0.0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def clock_time(ts: datetime, tz: tzinfo) -> str:
    return ts.astimezone(tz).strftime("%H:%M:%S")


def sign_class(value: float | None) -> str | None:
    """The cell style class for a signed figure; the sign itself is in the text."""
    if value is None or _missing(value) or round(value, 2) == 0:
        return None
    return "cell--positive" if value > 0 else "cell--negative"


def spark(values: Sequence[float], width: int = 16) -> str:
    """A one-line text sparkline of the last ``width`` values, for a table cell."""
    tail = [v for v in values[-width:] if not math.isnan(v)]
    if not tail:
        return ""
    low, high = min(tail), max(tail)
    span = high - low
    top = len(SPARK_CHARS) - 1
    if span <= 0:
        return SPARK_CHARS[top // 2] * len(tail)
    return "".join(SPARK_CHARS[round((v - low) / span * top)] for v in tail)
