"""The trading day on the exchange's calendar (exchange-calendars).

A trading day begins at its session's open minus a configurable offset and lasts until
the next session's start: counters, daily P&L and an automatic breaker reset happen
then — not at local midnight, and never on a weekend or holiday.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd


class CalendarError(ValueError):
    """An unknown calendar code or a moment outside the calendar's range."""


@lru_cache(maxsize=8)
def _calendar(code: str) -> xcals.ExchangeCalendar:
    try:
        return xcals.get_calendar(code)
    except xcals.errors.InvalidCalendarName:
        raise CalendarError(
            f"EXCHANGE_CALENDAR: unknown calendar {code!r}; e.g. XNYS, XNAS, XLON, XTKS"
        ) from None


def known_calendar(code: str) -> bool:
    return code in xcals.get_calendar_names(include_aliases=True)


class TradingCalendar:
    def __init__(self, code: str, reset_offset: timedelta = timedelta(0)) -> None:
        self._cal = _calendar(code)
        self.code = code
        self._offset = reset_offset
        # The current day and its bounds, so the 4 Hz timer does not search each time.
        self._day: date | None = None
        self._start: datetime | None = None
        self._next_start: datetime | None = None

    def trading_day(self, ts: datetime) -> date:
        """The session a moment belongs to: the last one whose open, less the reset
        offset, is at or before ``ts`` (cached until the next session starts)."""
        day, start, next_start = self._day, self._start, self._next_start
        if (
            day is not None
            and start is not None
            and next_start is not None
            and (start <= ts < next_start)
        ):
            return day
        opens = self._cal.opens_nanos
        index = self._session_at(ts + self._offset)
        if index < 0 or index + 1 >= len(opens):
            # Before the first session, or in the last one: its end is not known.
            raise CalendarError(f"{ts.isoformat()} is outside the {self.code} calendar")
        self._day = self._cal.sessions[index].date()
        self._start = _utc(opens[index]) - self._offset
        self._next_start = _utc(opens[index + 1]) - self._offset
        return self._day

    def day_start(self, day: date) -> datetime:
        """When the trading day ``day`` began (its open minus the offset)."""
        return self._cal.session_open(pd.Timestamp(day)).to_pydatetime() - self._offset

    def _session_at(self, ts: datetime) -> int:
        """Index of the last session that opened at or before ``ts`` (-1: none did).

        A binary search over the session opens: exchange-calendars' minute_to_session
        and is_open_on_minute build every trading minute of the calendar's 20 years
        first, ~60 MB held for the life of the process."""
        minute_ns = pd.Timestamp(ts).tz_convert(UTC).value
        return int(np.searchsorted(self._cal.opens_nanos, minute_ns, side="right")) - 1

    def is_open(self, ts: datetime) -> bool:
        """Whether ``ts`` falls in regular trading hours: from a session's open to its
        close, less a lunch break where the exchange has one (as is_open_on_minute
        answers, without building every trading minute). Raises CalendarError outside
        the calendar's range."""
        cal = self._cal
        minute_ns = pd.Timestamp(ts).tz_convert(UTC).value
        if not cal.opens_nanos[0] <= minute_ns < cal.closes_nanos[-1]:
            raise CalendarError(f"{ts.isoformat()} is outside the {self.code} calendar")
        index = self._session_at(ts)
        if minute_ns >= cal.closes_nanos[index]:
            return False
        break_start, break_end = cal.break_starts_nanos[index], cal.break_ends_nanos[index]
        return not (break_start != _NAT and break_start <= minute_ns < break_end)


_NAT = pd.NaT.value  # a session without a break has NaT as its break start and end


def _utc(nanoseconds: int) -> datetime:
    return pd.Timestamp(int(nanoseconds), tz=UTC).to_pydatetime()
