"""The log file: rotation settings, text and JSON lines, structured fields, no console sink
under the TUI, and no secret in it — not even inside an exception's message."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from loguru import logger

from core.alerting import secret_values
from tests.fake_telegram import BOT_TOKEN
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN
from tests.helpers import settings
from tui.commands.logs import configure_logging, configure_logging_from_settings
from tui.commands.runtime import build_runtime

SMTP_PASSWORD = "smtp-pa55word-q1w2e3"
SECRETS = (AUTH_TOKEN, SMTP_PASSWORD, BOT_TOKEN)


@pytest.fixture(autouse=True)
def _quiet_loguru() -> Iterator[None]:
    """Overrides conftest's: these tests replace every sink and the patcher themselves."""
    logger.remove()
    yield
    logger.remove()
    logger.configure(patcher=lambda record: None)


def _secret_settings(tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    return settings(
        tmp_path,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        telegram_bot_token=BOT_TOKEN,
        smtp_user="alerts",
        smtp_password=SMTP_PASSWORD,
        **extra,
    )


def _log_everything_secret() -> None:
    logger.info("connecting with token {t}", t=AUTH_TOKEN)
    logger.bind(password=SMTP_PASSWORD, symbol="AAPL").warning("smtp login")
    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    logger.info(f"Authorization: Basic {basic}")
    logger.info(f"GET https://api.telegram.org/bot{BOT_TOKEN}/sendMessage")
    try:
        raise RuntimeError(f"auth failed for {BOT_TOKEN} / {SMTP_PASSWORD}")
    except RuntimeError:
        logger.exception("channel crashed")
    try:
        raise ValueError(AUTH_TOKEN)
    except ValueError as exc:
        logger.opt(exception=exc).error("twilio said no", client_order_id="C-1")


def _contents(log_dir: Path, suffix: str) -> str:
    files = sorted(log_dir.glob(f"trading-console_*.{suffix}"))
    assert len(files) == 1, files
    return files[0].read_text(encoding="utf-8")


def test_secrets_never_reach_the_log_file(tmp_path: Path) -> None:
    s = _secret_settings(tmp_path)
    configure_logging_from_settings(s, console=False)
    _log_everything_secret()
    text = _contents(s.log_path, "log")
    for secret in secret_values(s):
        assert secret not in text
    assert text.count("***") >= 7
    # The exception is still there for whoever debugs it, minus the secrets.
    assert "RuntimeError: auth failed for *** / ***" in text
    assert "Traceback (most recent call last)" in text
    # Structured fields as key=value for grep.
    assert "symbol=AAPL" in text and "password=***" in text and "client_order_id=C-1" in text


def test_json_lines_carry_fields_and_are_redacted(tmp_path: Path) -> None:
    s = _secret_settings(tmp_path, log_json=True)
    configure_logging_from_settings(s, console=False)
    _log_everything_secret()
    text = _contents(s.log_path, "jsonl")
    assert not any(secret in text for secret in SECRETS)
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 6
    smtp = lines[1]
    assert (smtp["level"], smtp["message"], smtp["symbol"], smtp["password"]) == (
        "WARNING",
        "smtp login",
        "AAPL",
        "***",
    )
    assert lines[4]["exception"].endswith("RuntimeError: auth failed for *** / ***")
    assert lines[5]["client_order_id"] == "C-1"


def test_no_console_sink_while_the_tui_owns_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging(tmp_path / "logs", console=False)
    logger.warning("only in the file")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    configure_logging(tmp_path / "logs", console=True, secrets=[AUTH_TOKEN])
    logger.warning("headless {t}", t=AUTH_TOKEN)
    _out, err = capfd.readouterr()
    assert "headless ***" in err and AUTH_TOKEN not in err


def test_dated_file_and_retention_from_settings(tmp_path: Path) -> None:
    s = settings(tmp_path, log_retention_days=7)
    s.log_path.mkdir(parents=True)
    old, recent = s.log_path / "trading-console_old.log", s.log_path / "trading-console_new.log"
    for path, age_days in ((old, 8), (recent, 6)):
        path.write_text("x")
        stamp = time.time() - age_days * 86_400
        os.utime(path, (stamp, stamp))
    configure_logging_from_settings(s, console=False)
    logger.info("x")
    today = datetime.now().strftime("%Y-%m-%d")
    assert (s.log_path / f"trading-console_{today}.log").exists()
    assert old.exists()  # retention runs at rotation, which is midnight here
    # Same retention, rotation forced by size: files older than 7 days go.
    configure_logging(s.log_path, console=False, retention_days=7, rotation="10 B")
    logger.info("long enough to rotate")
    logger.info("again")
    assert not old.exists() and recent.exists()


async def test_the_runtime_redacts_even_when_logging_was_set_up_without_secrets(
    tmp_path: Path,
) -> None:
    # tui/commands/cli.py configures logging before it builds the runtime; the runtime
    # installs the redacting patcher itself, so the order cannot leak anything.
    s = _secret_settings(tmp_path)
    configure_logging(s.log_path, console=False)
    runtime = await build_runtime(s)
    try:
        logger.error("leaked? {a} {b} {c}", a=AUTH_TOKEN, b=SMTP_PASSWORD, c=BOT_TOKEN)
    finally:
        await runtime.close(alert_timeout=1)
    text = _contents(s.log_path, "log")
    assert "leaked? *** *** ***" in text
    assert not any(secret in text for secret in SECRETS)
