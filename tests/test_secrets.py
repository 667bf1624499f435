"""No configured secret, in plain, URL-quoted or base64 form, leaves the process.

Real `trading-console --headless` processes whose strategy raises an exception
quoting the secrets in every form: once at start-up (a traceback on stderr) and
once in the running core (the crash alert to a fake Twilio). Then stdout, stderr,
every file under DATA_DIR (logs, database, heartbeat, journal) and every outbound
message are searched for each form.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus

import pytest

from core.alerting.redaction import MASK, Redactor
from core.model import Quote
from core.strategy.base import Strategy, StrategyContext, StrategyOutput
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, WHATSAPP_FROM, FakeTwilio
from tests.helpers import settings

REPO = Path(__file__).resolve().parent.parent
TO = "whatsapp:+15551234567"
# Characters every encoding changes: space, slash, plus, ampersand, equals, non-ASCII.
SMTP_SECRET = "p4ss w/rd+&=ü~7Kq"


def forms(secret: str) -> dict[str, str]:
    data = secret.encode()
    return {
        "plain": secret,
        "quote": quote(secret),
        "quote(safe='')": quote(secret, safe=""),
        "quote_plus": quote_plus(secret),
        "base64": base64.b64encode(data).decode(),
        "urlsafe base64": base64.urlsafe_b64encode(data).decode(),
    }


def leak_text() -> str:
    """Every form of both secrets, as a careless exception message would carry them."""
    secrets = (os.environ["SMTP_PASSWORD"], os.environ["TWILIO_AUTH_TOKEN"])
    return " | ".join(f"{name}={form}" for s in secrets for name, form in forms(s).items())


class LeakAtStart(Strategy):
    """Fails while the system is assembled: the exception escapes main as a traceback."""

    name = "leak_at_start"

    def __init__(self, symbols: Sequence[str], context: StrategyContext, **params: Any) -> None:
        raise RuntimeError(f"cannot start: {leak_text()}")


class LeakOnQuote(Strategy):
    """Crashes in the running core: the crash alert quotes the exception."""

    name = "leak_on_quote"
    defaults: ClassVar[dict[str, int]] = {}

    def on_quote(self, quote: Quote) -> StrategyOutput:
        raise RuntimeError(f"exploded: {leak_text()}")


def test_redactor_removes_every_form(tmp_path: Path) -> None:
    s = settings(tmp_path, smtp_password=SMTP_SECRET, twilio_auth_token=AUTH_TOKEN)
    redact = Redactor.from_settings(s)
    for secret in (SMTP_SECRET, AUTH_TOKEN):
        for name, form in forms(secret).items():
            assert redact(f"<{form}>") == f"<{MASK}>", name


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def _run(tmp_path: Path, strategy: str, twilio: FakeTwilio) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIM_", "TRADING_"))}
    env.update(
        PYTHONPATH=str(REPO),
        DATA_DIR=str(tmp_path / "data"),
        STOP_FILE=str(tmp_path / "STOP"),
        SYMBOLS="AAPL,MSFT",
        SIM_QUOTES_PER_SECOND="50",
        STRATEGY=strategy,
        SMTP_PASSWORD=SMTP_SECRET,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_WHATSAPP_FROM=WHATSAPP_FROM,
        ALERT_WHATSAPP_TO=TO,
        TWILIO_BASE_URL=twilio.url,
    )
    return subprocess.run(
        [sys.executable, "-m", "tui.commands.cli", "--headless"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )


def _assert_no_secret_anywhere(
    tmp_path: Path,
    proc: subprocess.CompletedProcess[bytes],
    outbound: list[str],
    *,
    expect_files: bool,
) -> None:
    places: dict[str, bytes] = {"stdout": proc.stdout, "stderr": proc.stderr}
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    if expect_files:
        assert any(p.suffix == ".log" for p in files) and any(p.name == "trading.db" for p in files)
    places |= {str(p.relative_to(tmp_path)): p.read_bytes() for p in files}
    places |= {f"outbound message {i}": body.encode() for i, body in enumerate(outbound)}
    leaks = [
        (where, secret_name, form_name)
        for secret_name, secret in (("SMTP_PASSWORD", SMTP_SECRET), ("AUTH_TOKEN", AUTH_TOKEN))
        for form_name, form in forms(secret).items()
        for where, data in places.items()
        if form.encode() in data
    ]
    assert leaks == []


def test_start_up_traceback_is_redacted(tmp_path: Path, twilio: FakeTwilio) -> None:
    proc = _run(tmp_path, "tests.test_secrets:LeakAtStart", twilio)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0
    # The exception did reach stderr (so the scan below looks at a real traceback)...
    assert "Traceback" in stderr and "cannot start: plain=***" in stderr, stderr[-3000:]
    # ...with every form of both secrets masked, and nowhere else either.
    outbound = [m.fields["Body"] for m in twilio.messages]
    # Whether DATA_DIR has files yet depends on how far start-up got: scan what is there.
    _assert_no_secret_anywhere(tmp_path, proc, outbound, expect_files=False)


def test_core_crash_alert_and_records_are_redacted(tmp_path: Path, twilio: FakeTwilio) -> None:
    proc = _run(tmp_path, "tests.test_secrets:LeakOnQuote", twilio)
    assert proc.returncode == 1, proc.stderr.decode()[-3000:]
    bodies = [m.fields["Body"] for m in twilio.messages]
    assert any("CRASH" in b and "exploded: plain=***" in b for b in bodies), bodies
    _assert_no_secret_anywhere(tmp_path, proc, bodies, expect_files=True)
