"""loguru sinks: one rotating file, plus stderr only when no TUI owns the terminal."""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger


def configure_logging(log_dir: Path, *, console: bool, level: str = "INFO") -> Path:
    """Log to DATA_DIR/logs/trading-console_<date>.log, rotated daily, kept 30 days."""
    log_dir.mkdir(parents=True, exist_ok=True)
    logger.remove()
    path = log_dir / "trading-console_{time:YYYY-MM-DD}.log"
    logger.add(
        path,
        level=level,
        rotation="00:00",
        retention="30 days",
        enqueue=False,
        format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {message} | {extra}",
    )
    if console:
        logger.add(sys.stderr, level=level, format="{time:HH:mm:ss} {level: <8} {message}")
    return log_dir
