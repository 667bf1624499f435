"""E-mail alerts over SMTP (STARTTLS by default) with the standard library, on the channel's thread.

One message to all recipients per alert. 5xx replies and refused logins are
permanent; 4xx replies, disconnects and network errors are retried.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from core.alerting.channels import DeliveryError, ThreadedChannel
from core.model import AlertSeverity

SUBJECT_MAX = 120


class EmailChannel(ThreadedChannel):
    name = "email"
    label = "E-mail"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: tuple[str, ...],
        *,
        user: str = "",
        password: str = "",
        starttls: bool = True,
        min_severity: AlertSeverity = AlertSeverity.WARNING,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(self.name)
        self.min_severity = min_severity
        self.targets: tuple[str, ...] = (", ".join(recipients),)
        self._recipients = recipients
        self._host, self._port = host, port
        self._sender = sender
        self._user, self._password = user, password
        self._starttls = starttls
        self._timeout = timeout
        self._ssl_context = ssl_context

    async def send(self, target: str, text: str) -> None:
        await self._in_thread(self._send_blocking, text)

    def _message(self, text: str) -> EmailMessage:
        first_line = text.splitlines()[0] if text else "Trading Console alert"
        message = EmailMessage()
        message["Subject"] = first_line[:SUBJECT_MAX]
        message["From"] = self._sender
        message["To"] = ", ".join(self._recipients)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain="trading-console")
        message.set_content(text)
        return message

    def _send_blocking(self, text: str) -> None:
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                smtp.ehlo()
                if self._starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                    smtp.ehlo()
                if self._user:
                    smtp.login(self._user, self._password)
                smtp.send_message(self._message(text))
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP login refused ({exc.smtp_code}): check SMTP_USER / SMTP_PASSWORD",
                permanent=True,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"SMTP server: {exc}", permanent=True) from None
        except smtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(sorted(exc.recipients))
            raise DeliveryError(f"recipients refused: {refused}", permanent=True) from None
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            message = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {message}".strip(), permanent=exc.smtp_code >= 500
            ) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS: {exc.reason or exc}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"network: {type(exc).__name__}: {exc}", permanent=False) from None
