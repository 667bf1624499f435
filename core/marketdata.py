"""Market-data feed supervisor: validation, latest-quote cache, staleness.

Every quote from every broker passes through `MarketDataFeed.on_raw_quote`
before anything else sees it. Malformed quotes are dropped, counted per
symbol and logged; good ones are cached and published as `QuoteReceived`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from loguru import logger

from core.bus import EventBus
from core.clock import Clock
from core.events import QuoteReceived, QuoteRejected
from core.model import Quote

# After this many consecutive "jump" rejects that agree with each other, the
# market really has moved (a gap, a halt reopening): re-anchor instead of
# dropping every quote for the rest of the day.
JUMP_CONFIRMATIONS = 3


_INF = math.inf


@dataclass(slots=True)
class _SymbolState:
    last: Quote | None = None
    last_mid: float | None = None  # last.mid (None exactly when last is): one mid a quote
    jump_candidate: float | None = None
    jump_confirmations: int = 0  # 0 exactly when jump_candidate is None
    accepted: int = 0


class MarketDataFeed:
    """Validates raw quotes and keeps the latest good one per symbol."""

    def __init__(
        self,
        bus: EventBus,
        clock: Clock,
        symbols: tuple[str, ...],
        *,
        max_jump_pct: float,
        stale_after_seconds: float,
    ) -> None:
        self._bus = bus
        self._clock = clock
        self._symbols = frozenset(symbols)
        self._max_jump = max_jump_pct / 100.0
        self._stale_after = stale_after_seconds
        self._state: dict[str, _SymbolState] = {s: _SymbolState() for s in symbols}
        self.rejected: Counter[str] = Counter()

    # ------------------------------------------------------------------ intake
    def on_raw_quote(self, quote: Quote) -> bool:
        """Validate and publish; returns whether the quote was accepted."""
        # Fast path for the overwhelmingly common good quote: the same rules as
        # `_invalid_reason` in a handful of comparisons (NaN fails every one of them, so
        # `0 < bid <= ask < inf` also proves both finite). Anything it does not clear
        # takes the full check, which names the reason. Both end in the one acceptance
        # below. tests/test_hot_path.py runs this against the full check alone.
        symbol = quote.symbol
        state = self._state.get(symbol)
        bid, ask, last = quote.bid, quote.ask, quote.last
        if (
            state is not None
            and 0.0 < bid <= ask < _INF
            and (last is None or 0.0 < last < _INF)
            and quote.bid_size >= 0
            and quote.ask_size >= 0
        ):
            mid = (
                bid + ask
            ) / 2.0  # Quote.mid (model.mid_of) written out: checked in test_hot_path
            reference = state.last_mid
            if reference is not None and abs(mid - reference) / reference > self._max_jump:
                state = None  # a jump: the full check decides (it may re-anchor)
        else:
            state = None
        if state is None:
            reason = self._invalid_reason(quote)
            if reason is not None:
                self._reject(symbol, reason)
                return False
            state = self._state[symbol]
            mid = quote.mid
        # Accepted. A quote within the jump limit ends any run of jump candidates.
        if state.jump_confirmations:
            state.jump_candidate, state.jump_confirmations = None, 0
        state.last = quote
        state.last_mid = mid
        state.accepted += 1
        self._bus.publish(QuoteReceived(quote))
        return True

    def _invalid_reason(self, q: Quote) -> str | None:
        if q.symbol not in self._symbols:
            return "unknown symbol"
        values = (q.bid, q.ask) if q.last is None else (q.bid, q.ask, q.last)
        if not all(math.isfinite(v) for v in values):
            return "non-finite price"
        if q.bid <= 0 or q.ask <= 0 or (q.last is not None and q.last <= 0):
            return "price <= 0"
        if q.bid > q.ask:
            return f"crossed: bid {q.bid} > ask {q.ask}"
        if q.bid_size < 0 or q.ask_size < 0:
            return "negative size"
        return self._jump_reason(q)

    def _jump_reason(self, q: Quote) -> str | None:
        state = self._state[q.symbol]
        reference = state.last_mid  # the mid of the last accepted quote, as the fast path
        if reference is None:
            return None
        mid = q.mid
        move = abs(mid - reference) / reference
        if move <= self._max_jump:
            state.jump_candidate, state.jump_confirmations = None, 0
            return None
        candidate = state.jump_candidate
        if candidate is not None and abs(mid - candidate) / candidate <= self._max_jump:
            state.jump_confirmations += 1
        else:
            state.jump_confirmations = 1
        state.jump_candidate = mid
        if state.jump_confirmations >= JUMP_CONFIRMATIONS:
            logger.warning(
                "quote level re-anchored after {n} consistent jumps",
                symbol=q.symbol,
                n=state.jump_confirmations,
                old=reference,
                new=mid,
            )
            state.jump_candidate, state.jump_confirmations = None, 0
            return None
        return f"jump {move:.1%} from {reference:.4f}"

    def _reject(self, symbol: str, reason: str) -> None:
        self.rejected[symbol] += 1
        logger.warning("quote dropped: {reason}", symbol=symbol, reason=reason)
        self._bus.publish(QuoteRejected(symbol, reason, self._clock.now()))

    # ------------------------------------------------------------------ queries
    @property
    def accepted(self) -> Counter[str]:
        """Quotes accepted per symbol (counted per symbol state: cheaper per quote)."""
        return Counter({s: st.accepted for s, st in self._state.items() if st.accepted})

    def latest(self, symbol: str) -> Quote | None:
        state = self._state.get(symbol)
        return state.last if state else None

    def age_seconds(self, symbol: str) -> float | None:
        quote = self.latest(symbol)
        if quote is None:
            return None
        return (self._clock.now() - quote.ts).total_seconds()

    def is_stale(self, symbol: str) -> bool:
        # age_seconds written out: risk asks this for every order.
        state = self._state.get(symbol)
        quote = state.last if state else None
        if quote is None:
            return True
        return (self._clock.now() - quote.ts).total_seconds() > self._stale_after

    def stale_symbols(self) -> list[str]:
        return [s for s in sorted(self._symbols) if self.is_stale(s)]

    @property
    def symbols(self) -> frozenset[str]:
        return self._symbols
