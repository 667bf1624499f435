"""IB market data per symbol: a streaming subscription, snapshot polling when it stalls.

A symbol whose stream has been silent for ``stale_after`` seconds while its
exchange is open is polled with snapshot requests every ``poll_seconds`` and
its quotes are marked ``poll``; the first streaming update afterwards switches
it back. Every switch is reported through ``on_feed_switched`` (the core turns
it into an event and an alert). All ages are read from the injected clock.

ib_async keeps one Ticker per contract, shared by the stream and the
snapshots, and reports changes as the *set* of tickers touched by one network
packet (``pendingTickersEvent``). While a snapshot for a symbol is in flight,
updates of its ticker are attributed to the snapshot; the poll task emits
the polled quote itself when the snapshot completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from loguru import logger

from core.brokers.base import BrokerListener
from core.calendar import TradingCalendar
from core.clock import Clock
from core.model import Quote, QuoteSource

# IB answers a snapshot within ~11 s at worst (it waits for all fields);
# longer means the request is lost and the next poll should try again.
SNAPSHOT_TIMEOUT_SECONDS = 12.0


class ExchangeHours(Protocol):
    def is_open(self, ts: datetime) -> bool: ...


class AlwaysOpen:
    """For markets without a calendar (and tests that do not care)."""

    def is_open(self, ts: datetime) -> bool:
        return True


class CalendarHours:
    """Regular trading hours from exchange-calendars (XNYS by default)."""

    def __init__(self, calendar_name: str) -> None:
        self._name = calendar_name
        self._calendar: TradingCalendar | None = None

    def is_open(self, ts: datetime) -> bool:
        try:
            with warnings.catch_warnings():
                # exchange-calendars trips pandas' deprecation notices; not ours to act on.
                warnings.simplefilter("ignore")
                if self._calendar is None:
                    # Built on first use: building one takes ~0.5 s (cached per process).
                    self._calendar = TradingCalendar(self._name)
                return self._calendar.is_open(ts)
        except Exception:
            # Outside the calendar's range (or a bad name): assume open. Polling a
            # closed market costs a few requests; missing a stalled feed costs money.
            logger.warning("exchange calendar cannot answer; assuming open", calendar=self._name)
            return True


def quote_from_ticker(symbol: str, ticker: Any, ts: datetime, source: QuoteSource) -> Quote | None:
    """A raw Quote from an ib_async Ticker; None until both sides have been received.

    IB's "no value" encodings (nan before the first tick, -1 for no last trade)
    become "absent"; everything else is passed on for the core to validate.
    """
    bid, ask = ticker.bid, ticker.ask
    if bid != bid or ask != ask:  # nan: that side has not arrived yet
        return None
    last = ticker.last
    if last != last or last == -1:
        last = None

    def size(value: float) -> int:
        return int(value) if math.isfinite(value) and value > 0 else 0

    return Quote(
        symbol=symbol,
        ts=ts,
        bid=float(bid),
        ask=float(ask),
        bid_size=size(ticker.bidSize),
        ask_size=size(ticker.askSize),
        last=None if last is None else float(last),
        source=source,
    )


@dataclass(slots=True)
class _SymbolFeed:
    symbol: str
    contract: Any
    source: QuoteSource = QuoteSource.STREAM
    last_stream: float = 0.0  # clock.monotonic() of the last streaming update
    next_poll: float = 0.0
    snapshot_in_flight: bool = False
    subscribed: bool = False


class IbMarketData:
    """Streaming subscriptions with per-symbol snapshot polling failover."""

    def __init__(
        self,
        ib: Any,
        clock: Clock,
        listener: Callable[[], BrokerListener],
        *,
        stale_after_seconds: float,
        poll_seconds: float,
        hours: ExchangeHours,
    ) -> None:
        self._ib = ib
        self._clock = clock
        self._listener = listener
        self._stale_after = stale_after_seconds
        self._poll_every = poll_seconds
        self._hours = hours
        self._feeds: dict[str, _SymbolFeed] = {}
        self._by_con_id: dict[int, _SymbolFeed] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------- subscriptions
    def subscribe(self, symbol: str, contract: Any) -> None:
        feed = self._feeds.get(symbol)
        if feed is None:
            feed = _SymbolFeed(symbol, contract)
            self._feeds[symbol] = feed
            self._by_con_id[contract.conId] = feed
        if not feed.subscribed:
            self._ib.reqMktData(contract, "", False, False)
            feed.subscribed = True
            # The stream gets a full stale period from (re)subscription before it counts as stalled.
            feed.last_stream = self._clock.monotonic()

    def resubscribe(self) -> None:
        """After a reconnect (ib_async forgot every ticker) or IB's 1101 "data lost"."""
        for feed in self._feeds.values():
            if feed.subscribed:
                with contextlib.suppress(Exception):
                    self._ib.cancelMktData(feed.contract)
            feed.subscribed = False
            self.subscribe(feed.symbol, feed.contract)

    def on_disconnected(self) -> None:
        for feed in self._feeds.values():
            feed.subscribed = False
            feed.snapshot_in_flight = False
        for task in list(self._tasks):
            task.cancel()

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def symbols(self) -> list[str]:
        return list(self._feeds)

    def source(self, symbol: str) -> QuoteSource | None:
        feed = self._feeds.get(symbol)
        return feed.source if feed else None

    def symbol_of(self, con_id: int) -> str | None:
        feed = self._by_con_id.get(con_id)
        return feed.symbol if feed else None

    # ------------------------------------------------------------- hot path
    def on_pending_tickers(self, tickers: Iterable[Any]) -> None:
        """ib_async's set of tickers changed by one packet → one Quote per symbol."""
        listener = self._listener()
        ts = self._clock.now()
        now = self._clock.monotonic()
        for ticker in tickers:
            feed = self._by_con_id.get(ticker.contract.conId)
            if feed is None or feed.snapshot_in_flight:
                continue
            feed.last_stream = now
            if feed.source is QuoteSource.POLL:
                self._switch(feed, QuoteSource.STREAM, "streaming resumed")
            quote = quote_from_ticker(feed.symbol, ticker, ts, QuoteSource.STREAM)
            if quote is not None:
                listener.on_quote(quote)

    # ------------------------------------------------------------- supervision
    def supervise(self) -> None:
        """Stall detection and poll scheduling; called by the broker's run loop."""
        if not self._feeds:
            return
        now = self._clock.monotonic()
        is_open = self._hours.is_open(self._clock.now())
        for feed in self._feeds.values():
            if not feed.subscribed:
                continue
            if feed.source is QuoteSource.STREAM:
                silent = now - feed.last_stream
                if is_open and silent > self._stale_after:
                    self._switch(
                        feed,
                        QuoteSource.POLL,
                        f"no streaming update for {silent:.0f}s; polling every "
                        f"{self._poll_every:g}s",
                    )
                    feed.next_poll = now
            elif not is_open:
                self._switch(feed, QuoteSource.STREAM, "exchange closed: polling stopped")
                feed.last_stream = now
            if (
                feed.source is QuoteSource.POLL
                and not feed.snapshot_in_flight
                and now >= feed.next_poll
            ):
                feed.next_poll = now + self._poll_every
                feed.snapshot_in_flight = True
                task = asyncio.ensure_future(self._poll(feed))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _poll(self, feed: _SymbolFeed) -> None:
        try:
            tickers = await asyncio.wait_for(
                self._ib.reqTickersAsync(feed.contract), SNAPSHOT_TIMEOUT_SECONDS
            )
        except (TimeoutError, ConnectionError) as exc:
            logger.warning("snapshot failed: {exc!r}", symbol=feed.symbol, exc=exc)
            return
        finally:
            feed.snapshot_in_flight = False
        if feed.source is not QuoteSource.POLL or not tickers:
            return  # streaming came back while the snapshot was in flight
        quote = quote_from_ticker(feed.symbol, tickers[0], self._clock.now(), QuoteSource.POLL)
        if quote is not None:
            self._listener().on_quote(quote)

    def _switch(self, feed: _SymbolFeed, source: QuoteSource, reason: str) -> None:
        feed.source = source
        logger.warning(
            "feed switched to {source}: {reason}", symbol=feed.symbol, source=source, reason=reason
        )
        self._listener().on_feed_switched(feed.symbol, source, reason)
