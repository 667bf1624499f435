"""Telegram alerts through the Bot API's ``sendMessage`` (stdlib HTTP on the channel's thread).

POST {base}/bot{token}/sendMessage with JSON ``{"chat_id", "text"}``; the answer is
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error_code": 401,
"description": "Unauthorized"}``. The token is part of the URL path, so reasons
built here never quote the URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from core.alerting.channels import DeliveryError, ThreadedChannel, is_permanent_http_status
from core.model import AlertSeverity

MAX_TEXT = 4096  # Telegram's limit for one message


class TelegramChannel(ThreadedChannel):
    name = "telegram"
    label = "Telegram"

    def __init__(
        self,
        bot_token: str,
        chat_id: str,
        *,
        min_severity: AlertSeverity = AlertSeverity.WARNING,
        base_url: str = "https://api.telegram.org",
        timeout: float = 10.0,
    ) -> None:
        super().__init__(self.name)
        self.min_severity = min_severity
        self.targets: tuple[str, ...] = (chat_id,)
        self._url = f"{base_url.rstrip('/')}/bot{bot_token}/sendMessage"
        self._timeout = timeout

    async def send(self, target: str, text: str) -> None:
        await self._in_thread(self._send_blocking, target, text)

    def _send_blocking(self, target: str, text: str) -> None:
        body = json.dumps(
            {"chat_id": target, "text": text[:MAX_TEXT], "disable_web_page_preview": True}
        ).encode()
        request = urllib.request.Request(
            self._url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer = _json(response.read())
        except urllib.error.HTTPError as exc:
            answer = _json(exc.read())
            description = answer.get("description") or exc.reason
            raise DeliveryError(
                f"HTTP {exc.code}: {description}", permanent=is_permanent_http_status(exc.code)
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"network: {reason}", permanent=False) from None
        if not answer.get("ok"):
            raise DeliveryError(
                f"Telegram refused: {answer.get('description', 'no description')}", permanent=True
            )


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
