"""Outbound alert channels: the protocol, delivery errors, and WhatsApp through Twilio.

A channel sends one text to one target (a phone number, a chat, a mailing).
It raises `DeliveryError` with ``permanent=True`` when retrying cannot help
(bad credentials, an invalid number: HTTP 4xx) and ``permanent=False`` for
network errors, timeouts, HTTP 5xx and 429; the manager decides about retries.

Libraries that block (twilio's requests-based client, smtplib, urllib) run on a
thread owned by the channel, never on the event loop and never on the loop's
default executor, so a hung provider cannot starve anything else.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from core.model import AlertSeverity

T = TypeVar("T")

# twilio logs every request at INFO through the standard library; keep that off the
# terminal the console owns (its WARNINGs would still reach stderr via lastResort).
_TWILIO_LOGGER = logging.getLogger("trading_console.twilio")
_TWILIO_LOGGER.setLevel(logging.ERROR)
_TWILIO_LOGGER.propagate = False


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def network_reason(exc: BaseException) -> str:
    """A short cause for a network failure ("[Errno 111] Connection refused"), without the
    URL that wrapped exceptions quote (it may carry a token in its path)."""
    match = _ERRNO.search(str(exc))
    return f"network: {type(exc).__name__}" + (f" ({match.group(0).strip()})" if match else "")


class DeliveryError(Exception):
    """A send failed. ``permanent`` errors are not retried."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def is_permanent_http_status(status: int) -> bool:
    """4xx means our request or credentials are wrong, except 408/429 (try again later)."""
    return 400 <= status < 500 and status not in (408, 429)


class AlertChannel(Protocol):
    """What the alert manager needs from a channel."""

    name: str  # short id used in settings-free places: "whatsapp", "telegram", "email"
    label: str  # for the operator: "WhatsApp"
    min_severity: AlertSeverity
    targets: tuple[str, ...]  # each gets the text once; partial success is remembered

    async def send(self, target: str, text: str) -> None:
        """Deliver ``text`` to ``target`` or raise DeliveryError."""
        ...

    async def aclose(self) -> None: ...


class ThreadedChannel:
    """Base for channels whose client library blocks: one private worker thread."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"alert-{name}")

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def aclose(self) -> None:
        # Do not wait: a send stuck in a socket ends at its own timeout.
        self._executor.shutdown(wait=False, cancel_futures=True)


class BaseUrlTwilioHttpClient(TwilioHttpClient):
    """twilio's own HTTP client with the scheme and host swapped for ``base_url``.

    Twilio builds absolute URLs (https://api.twilio.com/2010-04-01/...); a relay or
    a test server keeps the same paths under another origin, optionally below a
    path prefix (https://relay.example/twilio/2010-04-01/...).
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=_TWILIO_LOGGER)
        parts = urlsplit(base_url)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"TWILIO_BASE_URL {base_url!r}: expected e.g. https://relay.example")
        self._base = parts

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        original = urlsplit(url)
        path = self._base.path.rstrip("/") + original.path
        rewritten = urlunsplit((self._base.scheme, self._base.netloc, path, original.query, ""))
        return super().request(
            method,
            rewritten,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


class WhatsAppChannel(ThreadedChannel):
    """WhatsApp messages through Twilio's Messages API with the official client."""

    name = "whatsapp"
    label = "WhatsApp"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sender: str,
        recipients: tuple[str, ...],
        *,
        min_severity: AlertSeverity = AlertSeverity.CRITICAL,
        base_url: str = "",
        timeout: float = 10.0,
    ) -> None:
        super().__init__(self.name)
        self.min_severity = min_severity
        self.targets: tuple[str, ...] = recipients
        self._sender = sender
        http_client = (
            BaseUrlTwilioHttpClient(base_url, timeout)
            if base_url
            else TwilioHttpClient(timeout=timeout, logger=_TWILIO_LOGGER)
        )
        # environment={} keeps the client from reading TWILIO_* (edge, region) behind our back.
        self._client = Client(account_sid, auth_token, http_client=http_client, environment={})

    async def send(self, target: str, text: str) -> None:
        await self._in_thread(self._send_blocking, target, text)

    def _send_blocking(self, target: str, text: str) -> None:
        try:
            self._client.messages.create(to=target, from_=self._sender, body=text[:1600])
        except TwilioRestException as exc:
            code = f", Twilio error {exc.code}" if exc.code else ""
            reason = f"HTTP {exc.status}{code}: {exc.msg}".strip()
            raise DeliveryError(reason, permanent=is_permanent_http_status(exc.status)) from None
        except requests.RequestException as exc:
            raise DeliveryError(network_reason(exc), permanent=False) from None
