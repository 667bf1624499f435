"""loguru sinks: one daily-rotating file (text or JSON lines), plus stderr only when no
TUI owns the terminal; and a patcher that strips every configured secret from every record.

Redaction happens in the patcher, before any sink sees the record: the message,
every string field, and the exception. The exception is rendered to text here
(then redacted) and the record's exception cleared, because a traceback's last
line quotes the exception message, which may contain a token; ``diagnose`` is
off for the same reason (it prints local variables).
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO, cast

from loguru import logger

from core.alerting.redaction import Redactor, secret_values
from core.config import Settings

if TYPE_CHECKING:
    from loguru import Record

FILE_STEM = "trading-console"
EXC_FIELD = "exc_text"
_JSON_FIELD = "_json_line"
_TEXT_FIELD = "_fields_text"


def make_patcher(redact: Callable[[str], str]) -> Callable[[Record], None]:
    """A loguru patcher: redact message, string fields and the rendered exception."""

    def patch(record: Record) -> None:
        record["message"] = redact(record["message"])
        extra = record["extra"]
        for key, value in list(extra.items()):
            if isinstance(value, str):
                extra[key] = redact(value)
            elif not isinstance(value, int | float | bool | type(None)):
                extra[key] = redact(str(value))
        exception = record["exception"]
        if exception is not None:
            kind, value, tb = exception
            text = "".join(traceback.format_exception(kind, value, tb))
            extra[EXC_FIELD] = redact(text.rstrip())
            record["exception"] = None

    return patch


def install_redaction(secrets: Iterable[str]) -> Redactor:
    """Redact ``secrets`` from every record from now on, whatever the sinks."""
    redactor = Redactor(secrets)
    logger.configure(patcher=make_patcher(redactor))
    return redactor


def _fields(record: Record) -> dict[str, Any]:
    return {k: v for k, v in record["extra"].items() if not k.startswith("_") and k != EXC_FIELD}


def _text_format(record: Record) -> str:
    fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
    record["extra"][_TEXT_FIELD] = f" | {fields}" if fields else ""
    tail = "\n{extra[" + EXC_FIELD + "]}" if EXC_FIELD in record["extra"] else ""
    return (
        "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{line} | {message}"
        "{extra[" + _TEXT_FIELD + "]}" + tail + "\n"
    )


def _json_format(record: Record) -> str:
    line: dict[str, Any] = {
        "ts": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["name"],
        "function": record["function"],
        "line": record["line"],
        "message": record["message"],
        **_fields(record),
    }
    if EXC_FIELD in record["extra"]:
        line["exception"] = record["extra"][EXC_FIELD]
    # Braces in the JSON would be read as format fields: hand it over as a field.
    record["extra"][_JSON_FIELD] = json.dumps(line, default=str, ensure_ascii=False)
    return "{extra[" + _JSON_FIELD + "]}\n"


def _console_format(record: Record) -> str:
    tail = "\n{extra[" + EXC_FIELD + "]}" if EXC_FIELD in record["extra"] else ""
    return "{time:HH:mm:ss} {level: <8} {message}" + tail + "\n"


def configure_logging(
    log_dir: Path,
    *,
    console: bool,
    level: str = "INFO",
    retention_days: int = 30,
    json_lines: bool = False,
    secrets: Iterable[str] = (),
    rotation: str = "00:00",
) -> Path:
    """Log to LOG_DIR/trading-console_<date>.log (or .jsonl), rotated at midnight and
    kept ``retention_days`` (old files are removed at each rotation); stderr too when
    ``console`` (never under the TUI). ``rotation`` is loguru's: tests rotate by size."""
    log_dir.mkdir(parents=True, exist_ok=True)
    logger.remove()
    install_redaction(secrets)
    suffix = "jsonl" if json_lines else "log"
    logger.add(
        log_dir / f"{FILE_STEM}_{{time:YYYY-MM-DD}}.{suffix}",
        level=level,
        rotation=rotation,
        retention=f"{retention_days} days",
        enqueue=False,
        format=_json_format if json_lines else _text_format,
        backtrace=False,
        diagnose=False,
        encoding="utf-8",
    )
    if console:
        logger.add(sys.stderr, level=level, format=_console_format, backtrace=False, diagnose=False)
    return log_dir


def configure_logging_from_settings(settings: Settings, *, console: bool) -> Path:
    """`configure_logging` with LOG_DIR, LOG_RETENTION_DAYS, LOG_JSON and every secret."""
    return configure_logging(
        settings.log_path,
        console=console,
        retention_days=settings.log_retention_days,
        json_lines=settings.log_json,
        secrets=secret_values(settings),
    )


class _RedactingStream:
    """A text stream that strips every secret from what is written, then passes it on.

    Only for stdout/stderr: what is written there is sparse (never per quote), so the
    few substring checks per write cost nothing that matters.
    """

    def __init__(self, stream: TextIO, redact: Callable[[str], str]) -> None:
        self.stream = stream
        self.redact = redact

    def write(self, text: str) -> int:
        self.stream.write(self.redact(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _redacting(stream: TextIO, redact: Callable[[str], str]) -> TextIO:
    if isinstance(stream, _RedactingStream):
        stream.redact = redact
        return cast(TextIO, stream)
    return cast(TextIO, _RedactingStream(stream, redact))


def redact_process_output(settings: Settings) -> Redactor:
    """Keep every configured secret (and its URL-quoted and base64 forms) out of the
    terminal for the rest of the process: stdout and stderr are wrapped in a redacting
    writer, and uncaught exceptions (main thread and threads) are rendered whole, then
    redacted, so a start-up traceback whose message quotes a token prints ``***``.

    The command line calls it once, right after the settings are loaded; the TUI draws
    through ``sys.__stdout__``/``__stderr__`` and is unaffected.
    """
    redactor = Redactor(secret_values(settings))
    if not redactor.active:
        return redactor
    sys.stdout = _redacting(sys.stdout, redactor)
    sys.stderr = _redacting(sys.stderr, redactor)

    def excepthook(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(redactor(text))
        sys.stderr.flush()

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        sys.stderr.write(redactor(f"Exception in thread {name}:\n{text}"))
        sys.stderr.flush()

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    return redactor
