"""Channels from Settings: which are configured, which settings a half-configured one lacks."""

from __future__ import annotations

from dataclasses import dataclass

from core.alerting.channels import AlertChannel, WhatsAppChannel
from core.alerting.email import EmailChannel
from core.alerting.telegram import TelegramChannel
from core.config import Settings


@dataclass(frozen=True, slots=True)
class ChannelSetup:
    """A channel kind and, when it cannot be built, the settings still missing."""

    name: str
    label: str
    missing: tuple[str, ...]

    @property
    def configured(self) -> bool:
        return not self.missing

    @property
    def partly_configured(self) -> bool:
        """Some but not all settings given: probably a typo the operator wants to hear about."""
        return bool(self.missing) and len(self.missing) < len(_REQUIRED[self.name])


_REQUIRED: dict[str, tuple[str, ...]] = {
    "whatsapp": (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_WHATSAPP_FROM",
        "ALERT_WHATSAPP_TO",
    ),
    "telegram": ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID"),
    "email": ("SMTP_HOST", "ALERT_EMAIL_FROM", "ALERT_EMAIL_TO"),
}
_LABELS = {"whatsapp": "WhatsApp", "telegram": "Telegram", "email": "E-mail"}


def _given(settings: Settings, env_name: str) -> bool:
    value = getattr(settings, env_name.lower())
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    return bool(value)


def channel_setups(settings: Settings) -> list[ChannelSetup]:
    """One entry per channel kind, in the order the operator reads them."""
    return [
        ChannelSetup(name, _LABELS[name], tuple(k for k in keys if not _given(settings, k)))
        for name, keys in _REQUIRED.items()
    ]


def build_channels(settings: Settings, *, timeout: float = 10.0) -> list[AlertChannel]:
    """Every fully configured channel; the others are skipped (see `channel_setups`)."""
    ready = {setup.name for setup in channel_setups(settings) if setup.configured}
    channels: list[AlertChannel] = []
    if "whatsapp" in ready:
        channels.append(
            WhatsAppChannel(
                settings.twilio_account_sid,
                settings.twilio_auth_token.get_secret_value(),
                settings.twilio_whatsapp_from,
                settings.alert_whatsapp_to,
                min_severity=settings.alert_whatsapp_min_severity,
                base_url=settings.twilio_base_url,
                timeout=timeout,
            )
        )
    if "telegram" in ready:
        channels.append(
            TelegramChannel(
                settings.telegram_bot_token.get_secret_value(),
                settings.telegram_chat_id,
                min_severity=settings.alert_telegram_min_severity,
                base_url=settings.telegram_base_url,
                timeout=timeout,
            )
        )
    if "email" in ready:
        channels.append(
            EmailChannel(
                settings.smtp_host,
                settings.smtp_port,
                settings.alert_email_from,
                settings.alert_email_to,
                user=settings.smtp_user,
                password=settings.smtp_password.get_secret_value(),
                starttls=settings.smtp_starttls,
                min_severity=settings.alert_email_min_severity,
                timeout=timeout,
            )
        )
    return channels
