"""IB's pacing rules for historical data requests, on the injected clock.

IB cancels historical requests (error 162, "pacing violation") when a client
makes more than 60 requests in any 10 minutes, repeats an identical request
within 15 seconds, or makes six or more requests for the same contract within
2 seconds (IB's wording: the sixth is the violation, so at most 5 are allowed).
``HistoricalPacer`` says how long to wait before a request is allowed and records
it when sent; ``acquire`` does both with an injectable sleep so tests run on a
SimClock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.clock import Clock


@dataclass(frozen=True, slots=True)
class PacingLimits:
    max_requests: int = 60
    window_seconds: float = 600.0
    identical_gap_seconds: float = 15.0
    per_contract_max: int = 5  # the 6th within the window is IB's violation
    per_contract_window_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.per_contract_max < 1:
            raise ValueError("PacingLimits: request counts must be >= 1")
        if min(self.window_seconds, self.per_contract_window_seconds) <= 0:
            raise ValueError("PacingLimits: windows must be > 0 seconds")


class HistoricalPacer:
    """Keeps a client's historical requests inside IB's pacing limits."""

    def __init__(self, clock: Clock, limits: PacingLimits | None = None) -> None:
        self._clock = clock
        self.limits = limits or PacingLimits()
        self._sent: deque[tuple[float, str, str]] = deque()  # (monotonic, request, contract)

    def wait_seconds(self, request_key: str, contract_key: str) -> float:
        """How long until a request with these keys may be sent (0 = now)."""
        now = self._clock.monotonic()
        limits = self.limits
        self._forget(now)
        waits = [0.0]
        times = [t for t, _, _ in self._sent]
        if len(times) >= limits.max_requests:
            # The request that must age out of the window before another is allowed.
            waits.append(times[-limits.max_requests] + limits.window_seconds - now)
        same = [t for t, key, _ in self._sent if key == request_key]
        if same:
            waits.append(same[-1] + limits.identical_gap_seconds - now)
        contract = [
            t
            for t, _, c in self._sent
            if c == contract_key and now - t < limits.per_contract_window_seconds
        ]
        if len(contract) >= limits.per_contract_max:
            waits.append(
                contract[-limits.per_contract_max] + limits.per_contract_window_seconds - now
            )
        return max(waits)

    def record(self, request_key: str, contract_key: str) -> None:
        self._sent.append((self._clock.monotonic(), request_key, contract_key))

    async def acquire(
        self,
        request_key: str,
        contract_key: str,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> float:
        """Wait until the request is allowed, record it; returns the seconds waited."""
        waited = 0.0
        while (delay := self.wait_seconds(request_key, contract_key)) > 0:
            await sleep(delay)
            waited += delay
        self.record(request_key, contract_key)
        return waited

    def _forget(self, now: float) -> None:
        keep = max(self.limits.window_seconds, self.limits.identical_gap_seconds)
        while self._sent and now - self._sent[0][0] >= keep:
            self._sent.popleft()
