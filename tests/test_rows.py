"""storage.rows: the timestamp text is exactly isoformat()'s, whatever to_db_ts caches."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from storage.rows import from_db_ts, to_db_ts


def _reference(ts: datetime) -> str:
    """to_db_ts as it read before it cached the current second."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    elif ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="microseconds")


def test_text_is_isoformat_across_second_day_and_year_boundaries() -> None:
    edges = [
        datetime(2026, 1, 5, 14, 30, 0, tzinfo=UTC),
        datetime(2026, 1, 5, 23, 59, 59, 999_999, tzinfo=UTC),  # day boundary
        datetime(2025, 12, 31, 23, 59, 59, 999_990, tzinfo=UTC),  # year boundary
        datetime(2028, 2, 28, 23, 59, 59, 500_000, tzinfo=UTC),  # leap day follows
    ]
    for edge in edges:
        # Walk across the boundary in steps that land on both sides of each second,
        # on its first and last microsecond, and back in time again.
        for step_us in (1, 7, 250_000, 999_999, 1_000_000, 1_000_001, -3, -1_000_000):
            ts = edge - timedelta(microseconds=5 * abs(step_us))
            for _ in range(12):
                assert to_db_ts(ts) == _reference(ts), ts
                ts += timedelta(microseconds=step_us)


def test_text_is_isoformat_for_naive_and_other_timezone_inputs() -> None:
    zones = [
        None,
        timezone(timedelta(hours=-5)),
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(0)),  # UTC, but not the UTC object: takes the conversion path
        ZoneInfo("America/New_York"),
        ZoneInfo("Europe/London"),
        ZoneInfo("UTC"),
    ]
    rng = random.Random(7)
    base = datetime(2026, 3, 8, 6, 59, 58)  # around the US daylight-saving change
    for _ in range(2_000):
        local = base + timedelta(microseconds=rng.randrange(0, 4_000_000))
        tz = rng.choice(zones)
        ts = local if tz is None else local.replace(tzinfo=tz)
        # Interleave with UTC inputs of other seconds so the cached second keeps moving.
        other = datetime(2026, 3, 8, 12, 0, rng.randrange(60), rng.randrange(10**6), tzinfo=UTC)
        assert to_db_ts(ts) == _reference(ts), ts
        assert to_db_ts(other) == _reference(other), other
        assert to_db_ts(ts) == _reference(ts), ts


def test_text_is_fixed_width_and_round_trips() -> None:
    for ts in (
        datetime(2026, 1, 5, 14, 30, tzinfo=UTC),
        datetime(2026, 1, 5, 14, 30, 0, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),  # its second has no successor
        datetime.max.replace(tzinfo=UTC),
    ):
        text = to_db_ts(ts)
        assert text == _reference(ts)
        assert len(text) == len("2026-01-05T14:30:00.000000+00:00")
        assert from_db_ts(text) == ts
