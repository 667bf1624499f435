"""core.calendar against exchange-calendars' own answer (minute_to_session)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from core.calendar import CalendarError, TradingCalendar, _calendar


def reference_day(code: str, offset: timedelta, ts: datetime) -> date | None:
    """The session exchange-calendars puts ``ts + offset`` in (None: out of range)."""
    cal = _calendar(code)
    try:
        session = cal.minute_to_session(pd.Timestamp(ts + offset).tz_convert(UTC), "previous")
        cal.next_session(session)  # the day must have an end
    except Exception:
        return None
    return session.date()


def our_day(code: str, offset: timedelta, ts: datetime) -> date | None:
    try:
        return TradingCalendar(code, offset).trading_day(ts)
    except CalendarError:
        return None


@pytest.mark.parametrize(
    ("code", "offset"),
    [("XNYS", timedelta(0)), ("XNYS", timedelta(minutes=30)), ("XTKS", timedelta(hours=2))],
)
def test_the_trading_day_is_the_session_exchange_calendars_names(
    code: str, offset: timedelta
) -> None:
    cal = _calendar(code)
    moments = []
    rng = random.Random(7)
    first = cal.opens.iloc[0].to_pydatetime()
    span = int((cal.closes.iloc[-1].to_pydatetime() - first).total_seconds())
    moments += [first + timedelta(minutes=rng.randrange(span // 60)) for _ in range(300)]
    # Around opens and closes, where a session begins and a gap starts.
    for i in range(1, 40):
        for edge in (cal.opens.iloc[-i], cal.closes.iloc[-i - 1]):
            moments += [
                (edge + pd.Timedelta(minutes=d)).to_pydatetime() - offset for d in (-1, 0, 1)
            ]
    # Outside the calendar at both ends.
    moments += [first - timedelta(days=3), cal.closes.iloc[-1].to_pydatetime() + timedelta(days=3)]
    for ts in moments:
        assert our_day(code, offset, ts) == reference_day(code, offset, ts), ts


def test_the_day_is_cached_until_the_next_session_starts() -> None:
    calendar = TradingCalendar("XNYS")
    friday = datetime(2026, 1, 16, 15, 0, tzinfo=UTC)
    assert calendar.trading_day(friday) == date(2026, 1, 16)
    # Monday is MLK day: Friday's trading day runs until Tuesday's open.
    assert calendar.trading_day(datetime(2026, 1, 19, 20, 0, tzinfo=UTC)) == date(2026, 1, 16)
    assert calendar.trading_day(datetime(2026, 1, 20, 14, 30, tzinfo=UTC)) == date(2026, 1, 20)
    assert calendar.day_start(date(2026, 1, 20)) == datetime(2026, 1, 20, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize("code", ["XNYS", "XHKG"])  # XHKG has a lunch break
def test_is_open_agrees_with_exchange_calendars(code: str) -> None:
    cal = _calendar(code)
    calendar = TradingCalendar(code)
    rng = random.Random(11)
    first = cal.opens.iloc[0].to_pydatetime()
    last = cal.closes.iloc[-1].to_pydatetime()
    minutes = int((last - first).total_seconds()) // 60
    moments = [first + timedelta(minutes=rng.randrange(minutes)) for _ in range(500)]
    for i in range(2, 30):
        for column in (cal.opens, cal.closes, cal.break_starts, cal.break_ends):
            edge = column.iloc[-i]
            if not pd.isna(edge):
                moments += [(edge + pd.Timedelta(minutes=d)).to_pydatetime() for d in (-1, 0, 1)]
    for ts in moments:
        assert calendar.is_open(ts) == bool(cal.is_open_on_minute(pd.Timestamp(ts))), ts
    with pytest.raises(CalendarError):
        calendar.is_open(last + timedelta(days=1))
