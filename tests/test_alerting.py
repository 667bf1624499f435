"""Alert delivery against real peers on 127.0.0.1: the real `twilio` client posting to a fake
Twilio, urllib to a fake Telegram Bot API, smtplib (STARTTLS + AUTH) to aiosmtpd.

Time-based behaviour (dedup window, rate limit, backoff) runs on a SimClock; the
manager's ``sleep`` is a fake that records the backoff and advances the clock.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from core.alerting import (
    CHANNEL_FAILURE_KEY,
    AlertChannel,
    AlertManager,
    DeliveryError,
    EmailChannel,
    Redactor,
    RetryPolicy,
    TelegramChannel,
    WhatsAppChannel,
    build_channels,
    channel_setups,
    secret_values,
)
from core.bus import EventBus
from core.clock import SimClock
from core.events import AlertDelivered
from core.model import AlertSeverity
from core.monitoring import AlertRaiser
from storage.database import Database
from storage.recorder import Recorder
from tests.fake_telegram import BOT_TOKEN, CHAT_ID, FakeTelegram
from tests.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, WHATSAPP_FROM, FakeTwilio
from tests.helpers import T0, settings
from tui.commands.alert_test import run_alert_test

TO = "whatsapp:+15551234567"
TO2 = "whatsapp:+15557654321"
SMTP_PASSWORD = "smtp-pa55word-q1w2e3"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()  # its __enter__ is typed as returning the base FakeHttpServer
    with fake:
        yield fake


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()  # its __enter__ is typed as returning the base FakeHttpServer
    with fake:
        yield fake


def whatsapp(fake: FakeTwilio, *, token: str = AUTH_TOKEN, to: tuple[str, ...] = (TO,)) -> Any:
    return WhatsAppChannel(ACCOUNT_SID, token, WHATSAPP_FROM, to, base_url=fake.url, timeout=5)


@dataclass
class Rig:
    bus: EventBus
    clock: SimClock
    raiser: AlertRaiser
    manager: AlertManager
    sleeps: list[float] = field(default_factory=list)
    delivered: list[AlertDelivered] = field(default_factory=list)

    def statuses(self, channel: str) -> list[str]:
        return [d.status for d in self.delivered if d.channel == channel]


def rig(channels: list[Any], **kwargs: Any) -> Rig:
    bus = EventBus()
    clock = SimClock(T0)
    raiser = AlertRaiser(bus, clock)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    kwargs.setdefault("retry", RetryPolicy(attempts=4, first_delay=1.0, send_timeout=5.0))
    manager = AlertManager(bus, clock, channels, raiser=raiser, sleep=fake_sleep, **kwargs)
    r = Rig(bus, clock, raiser, manager, sleeps)
    bus.subscribe(AlertDelivered, r.delivered.append)
    manager.start()
    return r


# ----------------------------------------------------------------------------- WhatsApp


async def test_whatsapp_alert_reaches_twilio_with_from_to_and_body(twilio: FakeTwilio) -> None:
    r = rig([whatsapp(twilio, to=(TO, TO2))])
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "breaker_tripped", "CIRCUIT BREAKER TRIPPED")
    assert await r.manager.flush(5)
    assert [m.fields["To"] for m in twilio.messages] == [TO, TO2]
    first = twilio.messages[0]
    assert first.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert first.fields["From"] == WHATSAPP_FROM
    assert first.fields["Body"].startswith("Trading Console CRITICAL: CIRCUIT BREAKER TRIPPED")
    assert "2026-01-05 14:30:00 UTC" in first.fields["Body"]
    assert r.statuses("whatsapp") == ["sent"]
    await r.manager.close(1)


async def test_whatsapp_retries_on_500_with_backoff(twilio: FakeTwilio) -> None:
    twilio.fail_next(500, times=2)
    r = rig([whatsapp(twilio)])
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "k", "disconnected")
    assert await r.manager.flush(5)
    assert [q.status for q in twilio.requests] == [500, 500, 201]
    assert r.sleeps == [1.0, 2.0]  # exponential backoff on the injected clock
    assert r.statuses("whatsapp") == ["sent"]
    assert not [a for a in r.raiser.recent if a.key.startswith(CHANNEL_FAILURE_KEY)]
    await r.manager.close(1)


async def test_whatsapp_gives_up_after_the_last_attempt_and_says_so_once(
    twilio: FakeTwilio,
) -> None:
    twilio.fail_next(503, times=8)
    r = rig([whatsapp(twilio)], retry=RetryPolicy(attempts=3, first_delay=0.5))
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "a", "first")
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "b", "second")
    assert await r.manager.flush(5)
    assert len(twilio.requests) == 6
    assert r.statuses("whatsapp") == ["failed", "failed"]
    failures = [a for a in r.raiser.recent if a.key == f"{CHANNEL_FAILURE_KEY}:whatsapp"]
    assert len(failures) == 1
    assert "HTTP 503" in failures[0].message and "after 3 attempts" in failures[0].message
    await r.manager.close(1)


async def test_whatsapp_bad_credentials_fail_once_without_retry_or_loop(
    twilio: FakeTwilio, telegram: FakeTelegram
) -> None:
    tg = TelegramChannel(BOT_TOKEN, CHAT_ID, base_url=telegram.url, timeout=5)
    r = rig([whatsapp(twilio, token="wrong-token"), tg])
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "a", "first")
    assert await r.manager.flush(5)
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "b", "second")
    assert await r.manager.flush(5)
    # One request per alert: no retry on 401, and the failure alert is not sent to WhatsApp.
    assert [q.status for q in twilio.requests] == [401, 401]
    assert r.sleeps == []
    failures = [a for a in r.raiser.recent if a.key == f"{CHANNEL_FAILURE_KEY}:whatsapp"]
    assert len(failures) == 1
    assert "HTTP 401" in failures[0].message and "Authenticate" in failures[0].message
    assert "alert-test" in failures[0].message
    # ...but it does reach the operator through the channel that works.
    texts = [m.fields["text"] for m in telegram.messages]
    assert any("WhatsApp alerts are failing" in t for t in texts)
    failed = [d for d in r.delivered if d.channel == "whatsapp" and d.status == "failed"]
    assert failed and "HTTP 401" in failed[0].detail
    await r.manager.close(1)


async def test_duplicates_are_counted_and_the_next_message_says_how_many(
    twilio: FakeTwilio,
) -> None:
    r = rig([whatsapp(twilio)], dedup_seconds=300)
    for _ in range(3):
        r.raiser.raise_alert(AlertSeverity.CRITICAL, "broker_disconnected", "Broker DISCONNECTED")
        r.clock.advance(10)
    assert await r.manager.flush(5)
    assert len(twilio.messages) == 1
    assert r.statuses("whatsapp") == ["suppressed (duplicate)", "suppressed (duplicate)", "sent"]
    r.clock.advance(300)
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "broker_disconnected", "Broker DISCONNECTED")
    assert await r.manager.flush(5)
    assert len(twilio.messages) == 2
    assert "Broker DISCONNECTED (×3)" in twilio.messages[1].fields["Body"]
    # Another key is not a duplicate.
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "breaker_tripped", "BREAKER")
    assert await r.manager.flush(5)
    assert len(twilio.messages) == 3
    assert "(×" not in twilio.messages[2].fields["Body"]
    await r.manager.close(1)


async def test_rate_limit_per_channel_holds_back_and_reports_later(twilio: FakeTwilio) -> None:
    r = rig([whatsapp(twilio)], max_per_minute=2)
    for i in range(4):
        r.raiser.raise_alert(AlertSeverity.CRITICAL, f"k{i}", f"alert {i}")
    assert await r.manager.flush(5)
    assert len(twilio.messages) == 2
    assert r.statuses("whatsapp").count("suppressed (rate limit)") == 2
    r.clock.advance(61)
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "k9", "after a minute")
    assert await r.manager.flush(5)
    assert len(twilio.messages) == 3
    assert "+2 earlier alert(s) not sent: rate limit" in twilio.messages[2].fields["Body"]
    await r.manager.close(1)


async def test_minimum_severity_per_channel(twilio: FakeTwilio, telegram: FakeTelegram) -> None:
    tg = TelegramChannel(
        BOT_TOKEN, CHAT_ID, base_url=telegram.url, min_severity=AlertSeverity.WARNING
    )
    r = rig([whatsapp(twilio), tg])  # WhatsApp: critical only (the default)
    r.raiser.raise_alert(AlertSeverity.INFO, "started", "started")
    r.raiser.raise_alert(AlertSeverity.WARNING, "drawdown", "Drawdown 3.1%")
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "breaker_tripped", "BREAKER")
    assert await r.manager.flush(5)
    assert [m.fields["Body"].split("\n")[0] for m in twilio.messages] == [
        "Trading Console CRITICAL: BREAKER"
    ]
    assert [m.fields["text"].split("\n")[0] for m in telegram.messages] == [
        "Trading Console WARNING: Drawdown 3.1%",
        "Trading Console CRITICAL: BREAKER",
    ]
    await r.manager.close(1)


# ----------------------------------------------------------------------------- Telegram


async def test_telegram_send_message_format_and_bad_token(telegram: FakeTelegram) -> None:
    good = TelegramChannel(BOT_TOKEN, CHAT_ID, base_url=telegram.url)
    await good.send(CHAT_ID, "hello")
    (req,) = telegram.messages
    assert req.path == f"/bot{BOT_TOKEN}/sendMessage"
    assert req.headers["content-type"] == "application/json"
    assert (req.fields["chat_id"], req.fields["text"]) == (CHAT_ID, "hello")
    bad = TelegramChannel("999:nope", CHAT_ID, base_url=telegram.url)
    with pytest.raises(DeliveryError) as info:
        await bad.send(CHAT_ID, "hello")
    assert info.value.permanent and info.value.reason == "HTTP 401: Unauthorized"
    telegram.fail_next(502)
    with pytest.raises(DeliveryError) as info:
        await good.send(CHAT_ID, "hello")
    assert not info.value.permanent
    for channel in (good, bad):
        await channel.aclose()


# ----------------------------------------------------------------------------- e-mail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        ok = data.login == b"alerts" and data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server(tls_files: tuple[Path, Path]) -> Iterator[tuple[Inbox, int, ssl.SSLContext]]:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    inbox = Inbox()
    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=inbox.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    client_tls = ssl.create_default_context(cafile=str(cert))
    try:
        yield inbox, port, client_tls
    finally:
        controller.stop()


async def test_email_over_starttls_with_login(smtp_server: tuple[Inbox, int, Any]) -> None:
    inbox, port, client_tls = smtp_server
    channel = EmailChannel(
        "127.0.0.1",
        port,
        "console@example.com",
        ("ops@example.com", "me@example.com"),
        user="alerts",
        password=SMTP_PASSWORD,
        ssl_context=client_tls,
        timeout=5,
    )
    r = rig([channel])
    r.raiser.raise_alert(AlertSeverity.WARNING, "drawdown", "Drawdown 3.2% from intraday peak")
    assert await r.manager.flush(10)
    assert r.statuses("email") == ["sent"]
    (envelope,) = inbox.envelopes
    assert envelope.rcpt_tos == ["ops@example.com", "me@example.com"]
    mail = message_from_bytes(envelope.original_content or b"")
    assert mail["Subject"] == "Trading Console WARNING: Drawdown 3.2% from intraday peak"
    assert mail["From"] == "console@example.com"
    assert inbox.logins == [(b"alerts", SMTP_PASSWORD.encode())]
    await r.manager.close(1)


async def test_email_wrong_password_is_permanent(smtp_server: tuple[Inbox, int, Any]) -> None:
    inbox, port, client_tls = smtp_server
    channel = EmailChannel(
        "127.0.0.1",
        port,
        "console@example.com",
        ("ops@example.com",),
        user="alerts",
        password="wrong",
        ssl_context=client_tls,
        timeout=5,
    )
    r = rig([channel])
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "x", "x")
    assert await r.manager.flush(10)
    assert r.statuses("email") == ["failed"]
    # One connection, no retry: smtplib itself tries each mechanism offered (PLAIN, LOGIN).
    assert r.sleeps == [] and len(inbox.logins) == 2
    assert "SMTP login refused (535)" in r.delivered[-1].detail
    await r.manager.close(1)


# ----------------------------------------------------------------------------- never blocks


class HangingChannel:
    """A provider that never answers (until released)."""

    name = "hanging"
    label = "Hanging"
    min_severity = AlertSeverity.INFO
    targets: tuple[str, ...] = ("somewhere",)

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def send(self, target: str, text: str) -> None:
        self.calls += 1
        await self.release.wait()

    async def aclose(self) -> None:
        return None


async def test_a_hung_channel_never_blocks_the_bus_and_its_queue_is_bounded(
    twilio: FakeTwilio,
) -> None:
    hanging = HangingChannel()
    channels: list[AlertChannel] = [hanging, whatsapp(twilio)]
    r = rig(channels, queue_size=3, retry=RetryPolicy(attempts=1, send_timeout=60))
    for i in range(5):
        r.raiser.raise_alert(AlertSeverity.CRITICAL, f"k{i}", f"alert {i}")
    # Publishing only enqueues: raising returned before any channel was called, the
    # hung one or the working one (nothing reached Twilio), and the only outcomes so far
    # are the drops decided at the queue.
    assert hanging.calls == 0 and twilio.requests == []
    assert {d.status for d in r.delivered} == {"dropped"}
    # Nothing ran yet, so each queue took 3 and dropped 2: memory stays bounded.
    dropped = [d for d in r.delivered if d.status == "dropped"]
    assert [d.channel for d in dropped] == ["hanging", "whatsapp"] * 2
    assert dropped[0].detail == "queue full (3 waiting)"
    # The working channel is not held up by the hung one.
    assert await asyncio.to_thread(twilio.wait_for_requests, 3, 5.0)
    assert await r.manager.flush(0.2) is False
    assert r.statuses("whatsapp").count("sent") == 3
    assert hanging.calls == 1
    assert await r.manager.close(0.1) is False
    shutdown = [d.channel for d in r.delivered if d.detail == "shutdown before delivery"]
    assert shutdown == ["hanging"] * 3  # the one in flight and the two still queued


async def test_a_send_timeout_is_a_retryable_failure() -> None:
    hanging = HangingChannel()
    r = rig([hanging], retry=RetryPolicy(attempts=2, first_delay=0.1, send_timeout=0.05))
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "k", "x")
    assert await r.manager.flush(2)
    assert hanging.calls == 2 and r.sleeps == [0.1]
    assert "no answer within 0.05s" in r.delivered[-1].detail
    await r.manager.close(0.1)


# ----------------------------------------------------------------------------- stored status


async def test_every_alert_is_stored_with_its_delivery_per_channel(
    tmp_path: Path, twilio: FakeTwilio, telegram: FakeTelegram
) -> None:
    db = await Database.open(tmp_path / "t.db")
    try:
        bus = EventBus()
        recorder = Recorder(db, bus, flush_ms=10_000)
        clock = SimClock(T0)
        raiser = AlertRaiser(bus, clock)
        tg_bad = TelegramChannel("1:bad", CHAT_ID, base_url=telegram.url)
        manager = AlertManager(bus, clock, [whatsapp(twilio), tg_bad], raiser=raiser)
        manager.start()
        raiser.raise_alert(AlertSeverity.CRITICAL, "breaker_tripped", "BREAKER")
        await recorder.flush()  # the alert row exists before its delivery is known
        raiser.raise_alert(AlertSeverity.CRITICAL, "breaker_tripped", "BREAKER again")
        raiser.raise_alert(AlertSeverity.INFO, "system_started", "started")
        assert await manager.flush(5)
        await manager.close(1)
        await recorder.stop()
        rows = {(a.key, a.message): a.delivery for a in await db.recent_alerts(10)}
    finally:
        await db.close()
    assert rows[("breaker_tripped", "BREAKER")] == (
        "whatsapp: sent; telegram: failed (HTTP 401: Unauthorized)"
    )
    assert rows[("breaker_tripped", "BREAKER again")] == (
        "whatsapp: suppressed (duplicate) (×2 in 300s); "
        "telegram: suppressed (duplicate) (×2 in 300s)"
    )
    assert rows[("system_started", "started")] == ""  # below every channel's minimum
    failure = next(m for k, m in rows if k == f"{CHANNEL_FAILURE_KEY}:telegram")
    assert rows[(f"{CHANNEL_FAILURE_KEY}:telegram", failure)] == ""  # WhatsApp: critical only


# ----------------------------------------------------------------------------- secrets


async def test_secrets_are_redacted_from_outgoing_alerts_and_failure_reasons(
    tmp_path: Path, twilio: FakeTwilio
) -> None:
    s = settings(
        tmp_path,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        telegram_bot_token=BOT_TOKEN,
        smtp_password=SMTP_PASSWORD,
    )
    redactor = Redactor.from_settings(s)
    assert {AUTH_TOKEN, BOT_TOKEN, SMTP_PASSWORD} <= set(secret_values(s))
    r = rig([whatsapp(twilio)], redact=redactor)
    r.raiser.redact = redactor
    r.raiser.raise_alert(AlertSeverity.CRITICAL, "crash", f"CRASH: token {AUTH_TOKEN} bad")
    assert await r.manager.flush(5)
    body = twilio.messages[0].fields["Body"]
    assert AUTH_TOKEN not in body and "token *** bad" in body
    assert AUTH_TOKEN not in r.raiser.recent[-1].message
    await r.manager.close(1)


# ----------------------------------------------------------------------------- alert-test


async def test_alert_test_reports_each_channel(
    tmp_path: Path, twilio: FakeTwilio, telegram: FakeTelegram
) -> None:
    s = settings(
        tmp_path,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_whatsapp_from=WHATSAPP_FROM,
        alert_whatsapp_to=f"{TO},{TO2}",
        twilio_base_url=twilio.url,
        telegram_bot_token="1:revoked",
        telegram_chat_id=CHAT_ID,
        telegram_base_url=telegram.url,
        smtp_host="",
        alert_email_to="ops@example.com",
    )
    assert [c.name for c in build_channels(s)] == ["whatsapp", "telegram"]
    assert [x.partly_configured for x in channel_setups(s)] == [False, False, True]
    lines: list[str] = []
    code = await run_alert_test(s, out=lines.append, retry=RetryPolicy(attempts=1))
    assert code == 1
    assert lines[0] == f"WhatsApp  sent to {TO}, {TO2}"
    assert lines[1] == "Telegram  FAILED: HTTP 401: Unauthorized"
    assert lines[2] == "E-mail    not configured (set SMTP_HOST, ALERT_EMAIL_FROM)"
    assert "alert-test" in twilio.messages[0].fields["Body"]


async def test_alert_test_all_good_exits_zero(tmp_path: Path, twilio: FakeTwilio) -> None:
    s = settings(
        tmp_path,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_whatsapp_from=WHATSAPP_FROM,
        alert_whatsapp_to=TO,
        twilio_base_url=twilio.url,
    )
    lines: list[str] = []
    assert await run_alert_test(s, out=lines.append) == 0
    assert lines[0].startswith("WhatsApp  sent") and "not configured" in lines[1]
