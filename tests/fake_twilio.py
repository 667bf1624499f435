"""Twilio's Messages API on 127.0.0.1, for the real `twilio` client to post to.

``POST /2010-04-01/Accounts/{sid}/Messages.json`` with HTTP Basic auth (SID and
auth token) and a form body (To, From, Body); answers with a Message resource,
or Twilio's error JSON (401 code 20003 "Authenticate" for bad credentials).
"""

from __future__ import annotations

import base64
import itertools
import re
from email.utils import formatdate
from urllib.parse import parse_qs

from tests.fake_http import FakeHttpServer, JsonBody, Received

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "twilio-token-5ecret-9f8e7d6c5b4a"
WHATSAPP_FROM = "whatsapp:+14155238886"

_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC\w+)/Messages\.json$")


class FakeTwilio(FakeHttpServer):
    def __init__(
        self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN, lifetime: float = 60.0
    ) -> None:
        super().__init__(lifetime)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._sids = itertools.count(1)

    @property
    def messages(self) -> list[Received]:
        """Requests that were accepted (2xx)."""
        return [r for r in self.requests if 200 <= r.status < 300]

    def error_body(self, status: int) -> JsonBody:
        return {
            "code": 20500 if status >= 500 else 21211,
            "message": "Internal Server Error" if status >= 500 else "Invalid 'To' Phone Number",
            "more_info": "https://www.twilio.com/docs/errors",
            "status": status,
        }

    def handle(self, req: Received) -> tuple[int, JsonBody]:
        match = _PATH.match(req.path)
        if req.method != "POST" or match is None:
            return 404, {
                "code": 20404,
                "message": "The requested resource was not found",
                "status": 404,
            }
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if req.headers.get("authorization") != f"Basic {expected}" or (
            match["sid"] != self.account_sid
        ):
            return 401, {
                "code": 20003,
                "message": "Authenticate",
                "more_info": "https://www.twilio.com/docs/errors/20003",
                "status": 401,
            }
        form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
        req.fields = form
        sid = f"SM{next(self._sids):032x}"
        now = formatdate(usegmt=True)
        return 201, {
            "sid": sid,
            "account_sid": self.account_sid,
            "from": form.get("From"),
            "to": form.get("To"),
            "body": form.get("Body"),
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "num_segments": "1",
            "num_media": "0",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "messaging_service_sid": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            "subresource_uris": {},
        }
