"""`trading-console export | import | prune`: the Parquet audit archive from the command line,
and the end-of-day export that runs inside the console when ARCHIVE_DIR is configured.

The archive format and its rules live in ``storage.archive``; this module opens the
configured database, calls it and tells the operator what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from loguru import logger

from core.bus import EventBus
from core.clock import Clock
from core.config import Settings
from core.events import DailyPnlRecorded
from core.model import AlertSeverity
from storage.archive import (
    TABLES,
    ArchiveError,
    archive_path,
    export_day,
    import_archive,
    prune_quotes_by_day,
)
from storage.database import Database, DatabaseRefused, check_directory

EXIT_OK, EXIT_USAGE = 0, 2


def _usage_error(message: object) -> int:
    print(f"trading-console: {message}", file=sys.stderr)
    return EXIT_USAGE


async def _open_existing_database(settings: Settings) -> Database:
    """DATABASE_FILE opened, refused (DatabaseRefused) when damaged or missing: export and
    prune read what the console recorded, and opening a missing path would silently
    create an empty database and report "nothing to do"."""
    path = settings.database_path
    if not path.exists():
        raise DatabaseRefused(f"no database at {path}: set DATABASE_FILE")
    return await Database.open(path)


async def run_export(settings: Settings, day: date, to: Path) -> int:
    """Write every table's rows of UTC ``day`` under ``to`` (hive layout)."""
    try:
        db = await _open_existing_database(settings)
    except DatabaseRefused as exc:
        return _usage_error(exc)
    try:
        written = await export_day(db, day, Path(to))
    finally:
        await db.close()
    if not written:
        print(f"nothing recorded on {day} (UTC) in {db.path}: no files written")
        return EXIT_OK
    for table in TABLES:
        result = written.get(table)
        if result is None:
            continue
        kept = " (kept: the archive holds more rows than the database)"
        note = kept if result.kept_existing else ""
        print(f"{table:<22} {result.rows:>10,} rows  {result.path}{note}")
    print(f"exported {day} from {db.path} to {to}")
    return EXIT_OK


async def run_import(settings: Settings, path: Path) -> int:
    """Load an archive (root, table directory, partition or file) into DATABASE_FILE,
    ignoring rows already there; for replay (``trading-console replay --db``) or audit.

    Import a foreign account's archive into a database of its own (DATABASE_FILE=...):
    the console rebuilds positions from every fill in its database on start.
    """
    if not Path(path).exists():
        return _usage_error(f"archive {path} does not exist: nothing imported, no database created")
    try:
        check_directory(settings.data_dir, "DATA_DIR")
        db = await Database.open(settings.database_path)
    except DatabaseRefused as exc:
        return _usage_error(exc)
    try:
        imported = await import_archive(db, Path(path))
    except (ArchiveError, ValueError) as exc:
        return _usage_error(exc)
    finally:
        await db.close()
    for item in imported:
        if item.skipped_present:
            status = f"skipped: {item.table} of that time already in the database"
        else:
            status = f"{item.inserted:,} of {item.rows_in_file:,} rows new"
        print(f"{item.table:<22} {status}  {item.path}")
    total = sum(item.inserted for item in imported)
    print(f"imported {total:,} rows from {len(imported)} file(s) into {settings.database_path}")
    return EXIT_OK


async def run_prune(settings: Settings, before: date, archive_dir: Path) -> int:
    """Delete quotes of UTC days before ``before`` from SQLite, refusing any such day the
    archive does not hold in full. Orders, fills and every other table are kept."""
    try:
        db = await _open_existing_database(settings)
    except DatabaseRefused as exc:
        return _usage_error(exc)
    try:
        pruned = await prune_quotes_by_day(db, before, Path(archive_dir))
    except ArchiveError as exc:
        return _usage_error(exc)
    finally:
        await db.close()
    for day, rows in pruned.items():
        where = archive_path(archive_dir, "quotes", day)
        print(f"{day}  {rows:>10,} quotes deleted (archived in {where})")
    print(f"pruned {sum(pruned.values()):,} quotes before {before} from {db.path}")
    return EXIT_OK


DiskAlert = Callable[[AlertSeverity, str, str], object]
GB = 1024**3


def quote_retention(settings: Settings) -> tuple[Path | None, int]:
    """Where finished days are archived and how many days of quotes SQLite keeps.

    QUOTE_RETENTION_DAYS (with ARCHIVE_DIR) wins when set; otherwise DATABASE_QUOTE_DAYS
    (default 7) bounds the database, archiving to ARCHIVE_DIR or DATA_DIR/archive."""
    if settings.quote_retention_days > 0:
        return settings.archive_dir, settings.quote_retention_days
    if settings.database_quote_days > 0:
        return settings.archive_dir or settings.data_dir / "archive", settings.database_quote_days
    return settings.archive_dir, 0


def storage_upkeep(
    settings: Settings, db: Database, bus: EventBus, clock: Clock, alert: DiskAlert
) -> EndOfDayArchiver:
    """The console's archiver as configured: export, quote retention and the disk check."""
    archive_dir, retention = quote_retention(settings)
    return EndOfDayArchiver(
        db,
        bus,
        clock,
        archive_dir,
        quote_retention_days=retention,
        disk_path=settings.data_dir,
        disk_free_warn_bytes=int(settings.disk_free_warn_gb * GB),
        alert=alert,
    )


class EndOfDayArchiver:
    """Exports each finished UTC day to ``archive_dir``, then prunes old quotes, and
    watches the free disk space under ``disk_path``.

    Runs as a background task of the console. It works once at start (catching up on
    days that ended while the console was down) and again whenever the system records
    a daily P&L row — the exchange-day reset — so the export happens at a quiet hour
    of the trading loop rather than at midnight. The hot path only sets an event.

    A day counts as exported once any table has a partition for it; days before
    ``lookback_days`` are left to ``trading-console export``. With
    ``quote_retention_days`` > 0, quotes of days older than that are then pruned from
    SQLite (only when archived; otherwise the refusal is logged and nothing deleted).
    Without ``archive_dir`` nothing is exported or pruned.

    Every ``disk_check_seconds`` (one ``statvfs``), free space below
    ``disk_free_warn_bytes`` raises one WARNING alert; another comes only after the space
    has recovered above the threshold and fallen again.
    """

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        clock: Clock,
        archive_dir: Path | None,
        *,
        quote_retention_days: int = 0,
        lookback_days: int = 7,
        disk_path: Path | None = None,
        disk_free_warn_bytes: int = 0,
        alert: DiskAlert | None = None,
        disk_check_seconds: float = 60.0,
    ) -> None:
        self._db = db
        self._clock = clock
        self._archive_dir = None if archive_dir is None else Path(archive_dir)
        self._retention = quote_retention_days
        self._lookback = lookback_days
        self._disk_path = disk_path
        self._disk_warn = disk_free_warn_bytes
        self._alert = alert
        self._disk_check_seconds = disk_check_seconds
        self.disk_low = False
        self._wake = asyncio.Event()
        self._wake.set()  # the first pass catches up at start
        self._unsubscribe = bus.subscribe(DailyPnlRecorded, lambda _e: self._wake.set())
        self.exported: list[date] = []
        self.pruned_rows = 0
        self.passes = 0  # completed passes, for whoever watches (tests, the status pane)

    async def run(self) -> None:
        try:
            while True:
                self.check_disk()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._disk_check_seconds)
                if not self._wake.is_set():
                    continue
                self._wake.clear()
                try:
                    await self.archive_once()
                except Exception:
                    # The archive must never take trading down; the next reset retries.
                    logger.exception("end-of-day archive failed", archive=str(self._archive_dir))
        finally:
            self._unsubscribe()

    def check_disk(self) -> int | None:
        """Free bytes under ``disk_path`` (None when not checked); alerts once when low."""
        if self._disk_path is None or self._disk_warn <= 0:
            return None
        try:
            free = shutil.disk_usage(self._disk_path).free
        except OSError as exc:
            logger.warning(
                "disk check of {path} failed: {error}", path=str(self._disk_path), error=str(exc)
            )
            return None
        low = free < self._disk_warn
        if low and not self.disk_low:
            message = (
                f"low disk space under DATA_DIR {self._disk_path}: {free / GB:.1f} GB free, "
                f"below DISK_FREE_WARN_GB={self._disk_warn / GB:g}; the database and logs "
                "stop when it is full: free space, or lower DATABASE_QUOTE_DAYS"
            )
            logger.warning(message)
            if self._alert is not None:
                self._alert(AlertSeverity.WARNING, "disk_low", message)
        self.disk_low = low
        return free

    def _archived(self, day: date) -> bool:
        assert self._archive_dir is not None
        return any(archive_path(self._archive_dir, t, day).exists() for t in TABLES)

    async def archive_once(self) -> list[date]:
        """Export the finished days not archived yet, then prune; returns days exported."""
        if self._archive_dir is None:
            self.passes += 1
            return []
        today = self._clock.now().date()
        exported = []
        lookback = self._lookback
        if self._retention > 0:
            # Quotes are pruned only once archived: reach back to the oldest one, so that a
            # database older than the lookback (retention switched on later) is bounded too.
            first = await self._db.first_day("quotes")
            if first is not None:
                lookback = max(lookback, (today - first).days)
        for back in range(lookback, 0, -1):
            day = today - timedelta(days=back)
            if self._archived(day):
                continue
            written = await export_day(self._db, day, self._archive_dir)
            if written:
                exported.append(day)
                rows = sum(w.rows for w in written.values())
                logger.info("archived {day}: {rows} rows", day=str(day), rows=rows)
        self.exported.extend(exported)
        if self._retention > 0:
            before = today - timedelta(days=self._retention)
            try:
                pruned = await prune_quotes_by_day(self._db, before, self._archive_dir, today=today)
            except ArchiveError as exc:
                logger.warning("quote pruning refused: {reason}", reason=str(exc))
            else:
                self.pruned_rows += sum(pruned.values())
                if pruned:
                    logger.info("pruned {n} archived quotes", n=sum(pruned.values()))
        self.passes += 1
        return exported


async def stop_archiver(task: asyncio.Task[None]) -> None:
    """Cancel the archiver's task and wait for it (an export in progress is abandoned;
    its partial file is removed and the next start exports the day again)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
