"""Outbound alerting: channels (WhatsApp via Twilio, Telegram, e-mail), the AlertManager
that delivers `AlertRaised` off the hot path, secret redaction, and the MonitoringService
that also runs the heartbeat, health checks and crash report."""

from core.alerting.channels import AlertChannel, DeliveryError, WhatsAppChannel
from core.alerting.email import EmailChannel
from core.alerting.factory import ChannelSetup, build_channels, channel_setups
from core.alerting.manager import (
    CHANNEL_FAILURE_KEY,
    CRASH_KEY,
    AlertManager,
    DeliveryResult,
    DeliveryStatus,
    RetryPolicy,
    deliver,
    deliver_everywhere,
    format_alert,
    send_crash_alert,
)
from core.alerting.redaction import Redactor, secret_values
from core.alerting.telegram import TelegramChannel

__all__ = [
    "CHANNEL_FAILURE_KEY",
    "CRASH_KEY",
    "AlertChannel",
    "AlertManager",
    "ChannelSetup",
    "DeliveryError",
    "DeliveryResult",
    "DeliveryStatus",
    "EmailChannel",
    "Redactor",
    "RetryPolicy",
    "TelegramChannel",
    "WhatsAppChannel",
    "build_channels",
    "channel_setups",
    "deliver",
    "deliver_everywhere",
    "format_alert",
    "secret_values",
    "send_crash_alert",
]
