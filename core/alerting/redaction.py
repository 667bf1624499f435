"""Keeps configured secrets out of every text that leaves the process or reaches a file.

The log patcher, outbound alert texts and delivery-failure reasons all pass
through one `Redactor`. Besides the raw values it also removes the encodings a
secret travels in: URL-quoted the three ways Python quotes (``quote`` keeping
``/``, ``quote(safe="")``, and ``quote_plus`` as in a form body or query string),
base64 (standard and URL-safe, with or without padding), and the HTTP Basic
``sid:token`` and SMTP AUTH PLAIN base64 blobs (an Authorization header in a
debug dump).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from pydantic import SecretStr

from core.config import Settings

MASK = "***"


def secret_values(settings: Settings) -> tuple[str, ...]:
    """Every non-empty SecretStr setting, plus the forms it is sent over the wire in."""
    raw = [
        value.get_secret_value()
        for name in type(settings).model_fields
        if isinstance(value := getattr(settings, name), SecretStr) and value.get_secret_value()
    ]
    derived: list[str] = []
    for secret in raw:
        derived += encoded_forms(secret)
    token = settings.twilio_auth_token.get_secret_value()
    if token and settings.twilio_account_sid:
        basic = f"{settings.twilio_account_sid}:{token}".encode()
        derived.append(base64.b64encode(basic).decode())
    if settings.smtp_password.get_secret_value() and settings.smtp_user:
        # AUTH PLAIN sends "\0user\0password" base64-encoded.
        plain = f"\0{settings.smtp_user}\0{settings.smtp_password.get_secret_value()}".encode()
        derived.append(base64.b64encode(plain).decode())
    return tuple(dict.fromkeys(raw + derived))


def encoded_forms(secret: str) -> list[str]:
    """The forms a secret is written in besides its own: URL-quoted and base64."""
    data = secret.encode()
    forms = [quote(secret), quote(secret, safe=""), quote_plus(secret)]
    for encoded in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()):
        # Padded, and unpadded as in URLs and JWT-style tokens (longest is replaced first).
        forms += [encoded, encoded.rstrip("=")]
    return [f for f in forms if f != secret]


class Redactor:
    """Replaces each secret with ``***``; longest first so a secret containing
    another is removed whole."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls(secret_values(settings))
