"""Quote retention by default (DATABASE_QUOTE_DAYS) and the low-disk warning, against a
real SQLite database and real Parquet files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.bus import EventBus
from core.clock import SimClock
from core.config import load_settings
from core.model import AlertSeverity, Quote
from storage.archive import archive_path
from storage.database import Database
from storage.rows import quote_row
from tui.commands.archive_cmd import GB, EndOfDayArchiver, quote_retention, storage_upkeep

NOW = datetime(2026, 3, 20, 15, 0, tzinfo=UTC)


def test_quotes_are_bounded_by_default(tmp_path: Path) -> None:
    defaults = load_settings(env_file=None, data_dir=tmp_path)
    assert quote_retention(defaults) == (tmp_path / "archive", 7)
    explicit = load_settings(
        env_file=None, data_dir=tmp_path, archive_dir=tmp_path / "a", quote_retention_days=3
    )
    assert quote_retention(explicit) == (tmp_path / "a", 3)
    off = load_settings(env_file=None, data_dir=tmp_path, database_quote_days=0)
    assert quote_retention(off) == (None, 0)


async def test_default_upkeep_archives_then_prunes_quotes_older_than_7_days(
    tmp_path: Path,
) -> None:
    settings = load_settings(env_file=None, data_dir=tmp_path, disk_free_warn_gb=0)
    db = await Database.open(tmp_path / "trading.db")
    try:
        days_back = (30, 8, 2)  # a month-old database: older than the 7-day lookback
        rows = [
            quote_row(Quote("AAPL", NOW - timedelta(days=back) + timedelta(seconds=i), 1.0, 1.1))
            for back in days_back
            for i in range(5)
        ]
        await db.write_batch({"quotes": rows})
        archiver = storage_upkeep(settings, db, EventBus(), SimClock(NOW), lambda *a: None)
        await archiver.archive_once()
        assert archiver.pruned_rows == 10
        kept = await db.quotes("AAPL", NOW - timedelta(days=40), NOW)
        assert {q.ts.date() for q in kept} == {(NOW - timedelta(days=2)).date()}
        for back in days_back:
            day = (NOW - timedelta(days=back)).date()
            assert archive_path(tmp_path / "archive", "quotes", day).exists(), day
    finally:
        await db.close()


async def test_low_disk_space_raises_one_warning_until_it_recovers(tmp_path: Path) -> None:
    alerts: list[tuple[AlertSeverity, str, str]] = []
    db = await Database.open(tmp_path / "trading.db")
    try:

        def archiver(threshold: int) -> EndOfDayArchiver:
            return EndOfDayArchiver(
                db,
                EventBus(),
                SimClock(NOW),
                None,
                disk_path=tmp_path,
                disk_free_warn_bytes=threshold,
                alert=lambda *a: alerts.append(a),
            )

        low = archiver(10**9 * GB)  # more than any disk holds
        free = low.check_disk()
        assert free is not None and free > 0
        low.check_disk()
        assert len(alerts) == 1
        severity, key, message = alerts[0]
        assert severity is AlertSeverity.WARNING and key == "disk_low"
        assert str(tmp_path) in message and "DISK_FREE_WARN_GB" in message
        plenty = archiver(1)  # 1 byte: never low
        assert plenty.check_disk() is not None and not plenty.disk_low
        assert archiver(0).check_disk() is None  # 0 turns the check off
        assert len(alerts) == 1
    finally:
        await db.close()
