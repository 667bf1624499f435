"""AlertManager: fans `AlertRaised` out to WhatsApp / Telegram / e-mail without blocking trading.

The bus handler runs on the hot path and only decides and enqueues: per channel
it applies the minimum severity, deduplication (the same key inside the window
is counted, and the next message that goes out says "(×N)") and the rate limit,
then puts the text on that channel's bounded queue. One background task per
channel drains its queue with retries and backoff, so a channel that is down
delays nobody but itself, and a full queue drops alerts instead of growing.

Every outcome is published as `AlertDelivered` (the recorder stores it with the
alert). A channel that stops working raises one alert about itself, which goes
to the console, the log and the *other* channels, and not again until it has
delivered successfully once more.

All time-based decisions read the injected clock; waiting between retries goes
through an injectable ``sleep`` so tests run the backoff instantly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from enum import StrEnum

from loguru import logger

from core.alerting.channels import AlertChannel, DeliveryError
from core.bus import EventBus
from core.clock import Clock
from core.events import AlertDelivered, AlertRaised
from core.model import Alert, AlertSeverity
from core.monitoring import AlertRaiser

Sleep = Callable[[float], Awaitable[None]]
Redact = Callable[[str], str]

CHANNEL_FAILURE_KEY = "alert_channel_failed"
CRASH_KEY = "crash"
# Alerts that must go out even when the rate limit or the dedup window says no.
_UNLIMITED_KEYS = frozenset({CRASH_KEY})
_DEDUP_PRUNE_AT = 1_000
_RATE_WINDOW_S = 60.0


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    DUPLICATE = "suppressed (duplicate)"
    RATE_LIMITED = "suppressed (rate limit)"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one message is pushed through a channel before it counts as failed."""

    attempts: int = 4
    first_delay: float = 1.0
    max_delay: float = 30.0
    send_timeout: float = 15.0

    def delay(self, failures: int) -> float:
        """Exponential backoff after the ``failures``-th failed attempt."""
        return min(self.first_delay * 2 ** max(failures - 1, 0), self.max_delay)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    channel: str
    status: DeliveryStatus
    detail: str = ""
    attempts: int = 0
    permanent: bool = False


def _identity(text: str) -> str:
    return text


async def deliver(
    channel: AlertChannel,
    text: str,
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    redact: Redact = _identity,
) -> DeliveryResult:
    """Send ``text`` to every target of ``channel``; retry transient failures with backoff.

    A target that succeeded is not sent to again on retry; one that failed
    permanently (HTTP 4xx, refused login) is not retried at all.
    """
    pending = list(channel.targets)
    errors: dict[str, DeliveryError] = {}
    attempts = 0
    for attempt in range(1, policy.attempts + 1):
        attempts = attempt
        for target in list(pending):
            try:
                async with asyncio.timeout(policy.send_timeout):
                    await channel.send(target, text)
            except DeliveryError as exc:
                errors[target] = exc
            except TimeoutError:
                errors[target] = DeliveryError(
                    f"no answer within {policy.send_timeout:g}s", permanent=False
                )
            except Exception as exc:
                # A bug or an unexpected library error: report it, never kill the drain task.
                logger.opt(exception=exc).error("alert channel {name} crashed", name=channel.name)
                errors[target] = DeliveryError(f"{type(exc).__name__}: {exc}", permanent=True)
            else:
                pending.remove(target)
                errors.pop(target, None)
        retryable = [t for t in pending if not errors[t].permanent]
        if not retryable:
            break
        if attempt < policy.attempts:
            await sleep(policy.delay(attempt))
    if not pending:
        return DeliveryResult(channel.name, DeliveryStatus.SENT, attempts=attempts)
    return DeliveryResult(
        channel.name,
        DeliveryStatus.FAILED,
        redact(_failure_detail(channel, pending, errors, attempts)),
        attempts=attempts,
        permanent=all(errors[t].permanent for t in pending),
    )


def _failure_detail(
    channel: AlertChannel, pending: list[str], errors: dict[str, DeliveryError], attempts: int
) -> str:
    reasons = dict.fromkeys(errors[t].reason for t in pending)
    detail = "; ".join(reasons)
    if len(channel.targets) > 1:
        sent = len(channel.targets) - len(pending)
        detail = f"{detail} ({', '.join(pending)}; {sent} of {len(channel.targets)} sent)"
    if attempts > 1:
        detail = f"{detail} after {attempts} attempts"
    return detail


async def deliver_everywhere(
    channels: Iterable[AlertChannel],
    text: str,
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    redact: Redact = _identity,
) -> list[DeliveryResult]:
    """One text through every channel at once, ignoring severities (alert-test, watchdog)."""
    channels = list(channels)
    text = redact(text)
    return list(
        await asyncio.gather(
            *(deliver(c, text, policy, sleep=sleep, redact=redact) for c in channels)
        )
    )


def format_alert(alert: Alert, *, repeat: int = 1, held_back: int = 0, source: str = "") -> str:
    """The text a phone shows: severity and message first, then when and where."""
    head = f"{source} {alert.severity.upper()}".strip()
    line = f"{head}: {alert.message}"
    if repeat > 1:
        line += f" (×{repeat})"
    lines = [line, f"{alert.ts.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"]
    if held_back:
        lines.append(f"(+{held_back} earlier alert(s) not sent: rate limit)")
    return "\n".join(lines)


@dataclass(slots=True)
class _DedupEntry:
    sent_at: float
    suppressed: int = 0


@dataclass(slots=True)
class _Tracked:
    """One alert's per-channel outcomes, for the stored delivery summary."""

    alert: Alert
    statuses: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return "; ".join(f"{name}: {status}" for name, status in self.statuses.items())


@dataclass(slots=True)
class _Lane:
    """A channel with its queue, rate window, dedup table and incident flag."""

    channel: AlertChannel
    queue: asyncio.Queue[tuple[_Tracked, str]]
    sent_times: deque[float] = field(default_factory=deque)
    dedup: dict[str, _DedupEntry] = field(default_factory=dict)
    held_back: int = 0
    failing: bool = False
    in_flight: _Tracked | None = None
    task: asyncio.Task[None] | None = None


class AlertManager:
    """Delivers alerts raised on ``bus`` to ``channels``; start() the drains, close() at exit."""

    def __init__(
        self,
        bus: EventBus,
        clock: Clock,
        channels: Iterable[AlertChannel],
        *,
        raiser: AlertRaiser | None = None,
        dedup_seconds: float = 300.0,
        max_per_minute: int = 10,
        queue_size: int = 100,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        redact: Redact = _identity,
        source: str = "Trading Console",
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._raiser = raiser
        self._dedup_s = dedup_seconds
        self._max_per_minute = max_per_minute
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._redact = redact
        self._source = source
        self._lanes = [_Lane(c, asyncio.Queue(maxsize=queue_size)) for c in channels]
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(AlertRaised, self._on_alert)
        self._closed = False

    @property
    def channels(self) -> list[AlertChannel]:
        return [lane.channel for lane in self._lanes]

    def start(self) -> None:
        """Start one drain task per channel (needs a running loop)."""
        for lane in self._lanes:
            if lane.task is None:
                lane.task = asyncio.create_task(
                    self._drain(lane), name=f"alerts-{lane.channel.name}"
                )

    # ----------------------------------------------------------------- hot path

    def _on_alert(self, event: AlertRaised) -> None:
        if self._closed:
            return
        alert = event.alert
        tracked = _Tracked(alert)
        immediate: list[tuple[str, DeliveryStatus, str]] = []
        for lane in self._lanes:
            channel = lane.channel
            if alert.severity.rank < channel.min_severity.rank:
                continue
            if alert.key == f"{CHANNEL_FAILURE_KEY}:{channel.name}":
                continue  # never report a channel's failure through that same channel
            status, text = self._admit(lane, alert)
            if status is DeliveryStatus.QUEUED:
                try:
                    lane.queue.put_nowait((tracked, self._redact(text)))
                except asyncio.QueueFull:
                    status = DeliveryStatus.DROPPED
                    text = f"queue full ({lane.queue.maxsize} waiting)"
                    logger.warning(
                        "alert dropped: {channel} queue full", channel=channel.name, key=alert.key
                    )
            tracked.statuses[channel.name] = _status_text(status, text)
            if status is not DeliveryStatus.QUEUED:
                immediate.append((channel.name, status, text))
        for name, status, detail in immediate:
            self._publish(tracked, name, status, detail)

    def _admit(self, lane: _Lane, alert: Alert) -> tuple[DeliveryStatus, str]:
        """Dedup and rate-limit one alert for one channel; QUEUED comes with the text."""
        now = self._clock.monotonic()
        unlimited = alert.key in _UNLIMITED_KEYS
        entry = lane.dedup.get(alert.key)
        if entry is not None and not unlimited and now - entry.sent_at < self._dedup_s:
            entry.suppressed += 1
            return DeliveryStatus.DUPLICATE, f"×{entry.suppressed + 1} in {self._dedup_s:g}s"
        while lane.sent_times and now - lane.sent_times[0] >= _RATE_WINDOW_S:
            lane.sent_times.popleft()
        if len(lane.sent_times) >= self._max_per_minute and not unlimited:
            lane.held_back += 1
            return DeliveryStatus.RATE_LIMITED, f"{self._max_per_minute}/min"
        repeat = 1 + (entry.suppressed if entry is not None else 0)
        text = format_alert(alert, repeat=repeat, held_back=lane.held_back, source=self._source)
        lane.held_back = 0
        lane.sent_times.append(now)
        lane.dedup[alert.key] = _DedupEntry(now)
        if len(lane.dedup) > _DEDUP_PRUNE_AT:
            expired = [k for k, e in lane.dedup.items() if now - e.sent_at >= self._dedup_s]
            for key in expired:
                del lane.dedup[key]
        return DeliveryStatus.QUEUED, text

    # ----------------------------------------------------------------- background

    async def _drain(self, lane: _Lane) -> None:
        while True:
            tracked, text = await lane.queue.get()
            lane.in_flight = tracked
            try:
                result = await deliver(
                    lane.channel, text, self._retry, sleep=self._sleep, redact=self._redact
                )
                self._settle(lane, tracked, result)
            except Exception:
                logger.exception("alert drain {name}: unexpected error", name=lane.channel.name)
            finally:
                lane.in_flight = None
                lane.queue.task_done()

    def _settle(self, lane: _Lane, tracked: _Tracked, result: DeliveryResult) -> None:
        channel = lane.channel
        tracked.statuses[channel.name] = _status_text(result.status, result.detail)
        self._publish(tracked, channel.name, result.status, result.detail)
        alert = tracked.alert
        if result.status is DeliveryStatus.SENT:
            logger.info(
                "alert sent via {channel}",
                channel=channel.name,
                key=alert.key,
                attempts=result.attempts,
            )
            if lane.failing:
                lane.failing = False
                logger.info("{label} alerts delivered again", label=channel.label)
            return
        logger.warning(
            "alert via {channel} failed: {detail}",
            channel=channel.name,
            detail=result.detail,
            key=alert.key,
        )
        if not lane.failing:
            # Once per incident: the flag clears only after a successful send.
            lane.failing = True
            self._report_channel_failure(channel, result)

    def _report_channel_failure(self, channel: AlertChannel, result: DeliveryResult) -> None:
        hint = (
            f"check the {channel.label} settings and run `trading-console alert-test`"
            if result.permanent
            else "will keep trying with the next alerts"
        )
        message = f"{channel.label} alerts are failing: {result.detail} — {hint}"
        if self._raiser is not None:
            self._raiser.raise_alert(
                AlertSeverity.WARNING, f"{CHANNEL_FAILURE_KEY}:{channel.name}", message
            )
        else:
            logger.error(message)

    def _publish(
        self, tracked: _Tracked, channel: str, status: DeliveryStatus, detail: str
    ) -> None:
        self._bus.publish(
            AlertDelivered(
                tracked.alert, channel, str(status), detail, tracked.summary(), self._clock.now()
            )
        )

    # ----------------------------------------------------------------- shutdown

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued alert has been sent or given up on; False on timeout."""
        self.start()
        try:
            async with asyncio.timeout(timeout):
                # A failing channel raises an alert for the *other* channels while we wait,
                # so go round until every lane is idle at once.
                while True:
                    for lane in self._lanes:
                        await lane.queue.join()
                    if all(lane.queue.empty() and lane.in_flight is None for lane in self._lanes):
                        return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 10.0) -> bool:
        """Stop taking alerts, deliver what is queued (up to ``timeout``), stop the drains.

        Alerts still queued at the deadline are recorded as dropped. True when all went out.
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        flushed = await self.flush(timeout) if self._lanes else True
        self._closed = True
        for lane in self._lanes:
            in_flight = lane.in_flight
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
                lane.task = None
            unsent = [in_flight] if in_flight is not None else []
            while not lane.queue.empty():
                tracked, _text = lane.queue.get_nowait()
                lane.queue.task_done()
                unsent.append(tracked)
            for tracked in unsent:
                detail = "shutdown before delivery"
                tracked.statuses[lane.channel.name] = _status_text(DeliveryStatus.DROPPED, detail)
                self._publish(tracked, lane.channel.name, DeliveryStatus.DROPPED, detail)
            await lane.channel.aclose()
        if not flushed:
            logger.warning("alerts: shut down before every alert was delivered")
        return flushed


def _status_text(status: DeliveryStatus, detail: str) -> str:
    if status in (DeliveryStatus.SENT, DeliveryStatus.QUEUED) or not detail:
        return str(status)
    return f"{status} ({detail})"


async def send_crash_alert(
    raiser: AlertRaiser, manager: AlertManager, exc: BaseException, *, timeout: float = 10.0
) -> bool:
    """Raise the CRITICAL crash alert and wait (bounded) until the channels have it.

    Call before the process exits; True when every channel finished in time.
    """
    raiser.raise_alert(
        AlertSeverity.CRITICAL,
        CRASH_KEY,
        f"CRASH: {type(exc).__name__}: {exc} — trading stopped, the process is exiting",
    )
    return await manager.flush(timeout)
