"""The Telegram Bot API's sendMessage on 127.0.0.1.

``POST /bot{token}/sendMessage`` with JSON ``{"chat_id", "text"}``; answers
``{"ok": true, "result": {...}}``, or ``{"ok": false, "error_code": 401,
"description": "Unauthorized"}`` for an unknown token.
"""

from __future__ import annotations

import itertools
import json
import time

from tests.fake_http import FakeHttpServer, JsonBody, Received

BOT_TOKEN = "123456789:AAH-bot-5ecret-token-xyz"
CHAT_ID = "424242"


class FakeTelegram(FakeHttpServer):
    def __init__(self, bot_token: str = BOT_TOKEN, lifetime: float = 60.0) -> None:
        super().__init__(lifetime)
        self.bot_token = bot_token
        self._ids = itertools.count(1)

    @property
    def messages(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def error_body(self, status: int) -> JsonBody:
        description = "Internal Server Error" if status >= 500 else "Bad Request: chat not found"
        return {"ok": False, "error_code": status, "description": description}

    def handle(self, req: Received) -> tuple[int, JsonBody]:
        if req.path != f"/bot{self.bot_token}/sendMessage":
            if req.path.endswith("/sendMessage"):
                return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            payload = json.loads(req.body)
        except ValueError:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request"}
        req.fields = payload
        if not payload.get("text"):
            return 400, {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: message text is empty",
            }
        return 200, {
            "ok": True,
            "result": {
                "message_id": next(self._ids),
                "from": {"id": 123456789, "is_bot": True, "first_name": "Console"},
                "chat": {"id": int(payload["chat_id"]), "type": "private"},
                "date": int(time.time()),
                "text": payload["text"],
            },
        }
