"""The simulated venue's data: its settings, a symbol's true book, its copy of an order.

Also the venue's bracket and OCA rules (``release_children``, ``reduce_oca``,
``orphan_children``): plain functions over its orders, so that the live venue and the
restore from its state file (core.brokers.sim_state) derive the very same quantities
and cancellations from the same fills.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from core.model import (
    BUY,
    CANCELLED,
    OrderStatus,
    OrderType,
    Quote,
    QuoteSource,
    Side,
    TimeInForce,
    mid_of,
)

# A long pause (laptop sleep, debugger) must not burst millions of quotes:
# only the last minute of a gap is generated.
MAX_CATCHUP_SECONDS = 60.0

TICK = 0.01
HALF_TICK = TICK / 2
CENTS = 100  # per dollar: TICK is one cent
PRICE_EPS = 1e-9
# Quotes drawn per symbol at a time by Book.step (see there).
WALK_BLOCK = 1024
FIRST_BROKER_ORDER_ID = 1001

# IB's error codes, so code downstream treats the sim like the real thing.
ERR_NO_SECURITY_DEFINITION = 200
ERR_ORDER_REJECTED = 201
ERR_NOT_CONNECTED = 504
ERR_CANCEL_NOT_FOUND = 10147
ERR_CANCEL_NOT_CANCELLABLE = 161
ERR_MODIFY_FILLED = 104  # "Can't modify a filled order."
ERR_MODIFY_FAILED = 134  # "Modify order failed." (cancelled or rejected, or a bad new value)
ERR_MODIFY_NOT_FOUND = 135  # "Can't find order with ID ="

# An enum member read as Class.MEMBER costs ~60 ns on Python 3.11 (a descriptor call);
# the per-quote path reads this module constant instead.
_SIM = QuoteSource.SIM


@dataclass(frozen=True, slots=True)
class SimVenueConfig:
    """Settings of the simulated venue; validated on construction."""

    symbols: tuple[str, ...]
    seed: int = 7
    quotes_per_second: float = 4.0  # per symbol
    starting_cash: float = 100_000.0
    commission_per_share: float = 0.005
    commission_min: float = 1.0
    commission_max_pct: float = 1.0  # percent of the fill's value
    latency_ms: float = 0.0
    volatility_bp: float = 5.0  # stdev of one quote's step of the mid, basis points
    buying_power_multiple: float = 2.0
    bad_quote_rate: float = 0.0  # fraction of published quotes deliberately malformed
    account_id: str = "SIM-0001"
    # When set, the venue keeps its orders and fills here and reloads them on start,
    # standing in for a broker that outlives the console (restart recovery tests).
    state_file: Path | None = None

    def __post_init__(self) -> None:
        # Accept any sequence but keep the frozen value hashable and immutable.
        object.__setattr__(self, "symbols", tuple(self.symbols))
        if not self.symbols:
            raise ValueError("SimVenueConfig.symbols: give at least one symbol, e.g. ('AAPL',)")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"SimVenueConfig.symbols: duplicates in {self.symbols}")
        for name in ("quotes_per_second", "starting_cash", "buying_power_multiple"):
            if not getattr(self, name) > 0:  # also catches NaN
                raise ValueError(f"SimVenueConfig.{name} must be > 0, got {getattr(self, name)}")
        costs = ("commission_per_share", "commission_min", "commission_max_pct")
        for name in (*costs, "latency_ms", "volatility_bp"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SimVenueConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.bad_quote_rate <= 1.0:
            raise ValueError(
                f"SimVenueConfig.bad_quote_rate must be within 0..1, got {self.bad_quote_rate}"
            )


@dataclass(slots=True)
class Book:
    """The venue's true top of book for one symbol; published quotes may lie, this does not."""

    symbol: str
    walk: random.Random
    noise: random.Random  # malformed-quote draws, apart so they never perturb the walk
    walk_mid: float  # the random walk's continuous value; prices snap to the grid below
    half_spread: float
    bid: float = 0.0
    ask: float = 0.0
    bid_size: int = 0
    ask_size: int = 0
    # Orders resting at this book, in time priority (the venue's matching list for the
    # symbol): kept here so the per-quote "anything to match?" test is one attribute.
    working: list[VenueOrder] = field(default_factory=list)
    # The stops among them still waiting for their trigger (empty for a book without
    # stops, so that such a book pays nothing for them: SimOrderDesk._match_working).
    stops: list[VenueOrder] = field(default_factory=list)
    # The last trade price of the last quote, when it carried one (replayed quotes); the
    # venue's own quotes carry none, and stops then trigger on the mid (``trigger_price``).
    last: float | None = None
    # The next quotes' walk, spread and sizes, drawn a block at a time (Book.step).
    _draws: np.random.Generator | None = None
    _block: list[tuple[float, float, float, float, int, int]] = field(default_factory=list)
    _next: int = 0
    _block_mid: float = math.nan  # walk_mid where the block left off; anything else: redraw
    _block_sigma: float = math.nan

    @classmethod
    def new(cls, seed: int, index: int, symbol: str) -> Book:
        # String seeds are hashed deterministically (unlike hash()), so streams are
        # reproducible across processes and independent per symbol.
        walk = random.Random(f"{seed}:{index}:{symbol}")
        noise = random.Random(f"{seed}:{index}:{symbol}:bad")
        mid = round(walk.uniform(20.0, 500.0), 2)
        book = cls(symbol=symbol, walk=walk, noise=noise, walk_mid=mid, half_spread=0.0)
        book.redraw()
        return book

    def redraw(self) -> None:
        """A spread and displayed sizes for the book's first quote (Book.step draws the rest)."""
        rng = self.walk
        self.half_spread = self.walk_mid * rng.uniform(1.0, 5.0) / 10_000.0 / 2.0
        self.bid_size = rng.randint(1, 10) * 100
        self.ask_size = rng.randint(1, 10) * 100
        self.recentre()

    def step(self, sigma: float, ts: datetime) -> Quote:
        """Move the walk on one quote, redraw the book and return the quote that shows it.

        The walk is ``walk_mid *= exp(N(0, sigma))``; then a new spread (1-5 bp of the
        mid), displayed sizes (100-1,000) and the cent grid (``recentre``). Python's own
        generator made that ~1.2 µs a quote, half of what the rest of the core costs, so
        the draws come from NumPy a block of ``WALK_BLOCK`` quotes at a time (``_draw``)
        and a quote costs a few list reads. The block is drawn again when ``walk_mid``
        was set from outside (a shock, a restart) or sigma changed, so it always continues
        from the book's true price. tests/test_hot_path.py checks the block against the
        same draws applied one quote at a time with the plain formulas.
        """
        i = self._next
        block = self._block
        if i == len(block) or self.walk_mid != self._block_mid or sigma != self._block_sigma:
            self._draw(sigma)
            block = self._block
            i = 0
        self._next = i + 1
        mid, half_spread, bid, ask, bid_size, ask_size = block[i]
        self.walk_mid = self._block_mid = mid
        self.half_spread = half_spread
        self.bid = bid
        self.ask = ask
        self.bid_size = bid_size
        self.ask_size = ask_size
        return Quote(self.symbol, ts, bid, ask, bid_size, ask_size, None, _SIM)

    def _draw(self, sigma: float) -> None:
        draws = self._draws
        if draws is None:
            # Seeded from the book's own generator: a seed still names one stream.
            draws = self._draws = np.random.default_rng(self.walk.getrandbits(128))
        n = WALK_BLOCK
        # Multiplicative steps keep the price positive; starting the running product at
        # walk_mid multiplies in the same order as one quote at a time would.
        steps = np.exp(draws.standard_normal(n) * sigma)
        mids = np.cumprod(np.concatenate(([self.walk_mid], steps)))[1:]
        halves = mids * (1.0 + 4.0 * draws.random(n)) / 10_000.0 / 2.0
        bid_sizes = draws.integers(1, 11, n) * 100
        ask_sizes = draws.integers(1, 11, n) * 100
        # recentre() for the whole block; np.rint rounds half to even, as round() does.
        centre = np.rint(mids / HALF_TICK).astype(np.int64)
        half = np.maximum(np.rint(halves / HALF_TICK).astype(np.int64), 1)
        half += (centre - half) % 2
        centre = np.maximum(centre, half + 2)
        bids = ((centre - half) // 2) / CENTS
        asks = ((centre + half) // 2) / CENTS
        # One tuple per quote: a quote then costs one index and an unpacking.
        self._block = list(
            zip(
                mids.tolist(),
                halves.tolist(),
                bids.tolist(),
                asks.tolist(),
                bid_sizes.tolist(),
                ask_sizes.tolist(),
                strict=True,
            )
        )
        self._block_sigma = sigma

    def malformed(self, quote: Quote) -> Quote:
        """A deliberately broken copy of ``quote`` (for validation tests downstream)."""
        kind = self.noise.randrange(4)
        if kind == 0:
            return dataclasses.replace(quote, bid=math.nan)
        if kind == 1:
            return dataclasses.replace(quote, bid=-quote.bid)
        if kind == 2:
            return dataclasses.replace(quote, bid=round(quote.ask + quote.spread, 2), ask=quote.bid)
        factor = 1.5 if self.noise.random() < 0.5 else 0.5
        return dataclasses.replace(
            quote, bid=round(quote.bid * factor, 2), ask=round(quote.ask * factor, 2)
        )

    @property
    def mark(self) -> float:
        # The rule Quote.mid uses, so anyone marking at the last quote's mid values a
        # position to the same float as the venue does.
        return mid_of(self.bid, self.ask)

    @property
    def trigger_price(self) -> float:
        """The price stops trigger on: the last trade price when the last quote carried
        one, else the mid (the venue's own quotes carry no last trade)."""
        last = self.last
        return mid_of(self.bid, self.ask) if last is None else last

    def recentre(self) -> None:
        # Bid and ask sit on cents symmetrically around a half-cent grid point, so the
        # quoted mid is the true price on that grid (no rounding bias either way).
        # (Runs for every quote: comparisons instead of max(), same arithmetic.)
        centre = round(self.walk_mid / HALF_TICK)
        half = round(self.half_spread / HALF_TICK)
        if half < 1:
            half = 1
        if (centre - half) % 2:
            half += 1  # an even number of half-cents from the centre lands on a cent
        if centre < half + 2:
            centre = half + 2  # keep the bid at least one tick above zero
        # Both are an even number of half-cents, i.e. whole cents: cents / 100 is the
        # double nearest to the price, the very value round(cents * TICK, 2) gives, but
        # without round()'s decimal conversion (tests/test_hot_path.py compares them).
        self.bid = ((centre - half) // 2) / CENTS
        self.ask = ((centre + half) // 2) / CENTS


@dataclass(slots=True)
class VenueOrder:
    """The venue's own copy of an order; the caller's Order is never mutated."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: int
    order_type: OrderType
    limit_price: float | None
    status: OrderStatus = OrderStatus.PENDING_SUBMIT
    filled: int = 0
    broker_order_id: str | None = None
    row: int = -1  # its place in the venue's OrderLedger, set when the ledger takes it
    stop_price: float | None = None  # STP and STP LMT: the trigger
    tif: TimeInForce = TimeInForce.DAY
    parent_id: str | None = None  # a bracket child's parent (client order id)
    oca_group: str | None = None
    # The limit matching applies: limit_price for LMT and STP LMT, None otherwise (a
    # market order, a stop once triggered).
    match_limit: float | None = None
    # A bracket child whose parent has filled nothing yet: acknowledged, off the book.
    held: bool = False
    triggered: bool = False  # a stop whose trigger was reached: it now works as MKT / LMT
    # A stop that reached the book (or was last moved) on the untriggered side of its
    # trigger, so a later quote that triggers it has passed through the stop price.
    armed: bool = False

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled

    @property
    def waits_for_trigger(self) -> bool:
        return self.order_type.is_stop and not self.triggered

    def stop_reached(self, price: float) -> bool:
        """Whether ``price`` triggers this stop: at or above it (buy), at or below (sell)."""
        stop = self.stop_price
        assert stop is not None, "only a stop order has a trigger"
        if self.side is BUY:
            return price >= stop - PRICE_EPS
        return price <= stop + PRICE_EPS


# -- brackets and OCA groups: the rules, shared by the live venue and the restore ----------


def release_children(
    children: Iterable[VenueOrder], quantity: int
) -> list[tuple[VenueOrder, bool]]:
    """A bracket parent has filled ``quantity`` more shares: its children follow.

    Each child not finished works for that many more: a held child (its parent had
    filled nothing) is released for exactly ``quantity``, a working one grows by it. So
    a child works for what the parent filled, less what its OCA siblings filled (see
    ``reduce_oca``). Returns each child changed and whether it was released just now.
    """
    changed = []
    for child in children:
        if child.status.is_terminal:
            continue
        if child.held:
            child.held = False
            child.quantity = child.filled + quantity
            changed.append((child, True))
        else:
            child.quantity += quantity
            changed.append((child, False))
    return changed


def reduce_oca(
    members: Iterable[VenueOrder], filled: VenueOrder, quantity: int
) -> list[VenueOrder]:
    """``filled``, of an OCA group, has filled ``quantity`` shares: the others shrink by as much.

    Every other member still working (held bracket children are not: they have no
    quantity of their own yet) works for ``quantity`` fewer shares; one left with nothing
    to fill is set CANCELLED (the caller retires it and says so). Returns the members
    changed, cancelled ones included.
    """
    changed = []
    for other in members:
        if other is filled or other.held or other.status.is_terminal:
            continue
        other.quantity = max(other.quantity - quantity, other.filled)
        if other.remaining == 0:
            other.status = CANCELLED
        changed.append(other)
    return changed


def orphan_children(children: Iterable[VenueOrder]) -> list[VenueOrder]:
    """Their parent finished with nothing filled: set every child not finished CANCELLED."""
    orphans = []
    for child in children:
        if not child.status.is_terminal:
            child.status = CANCELLED
            orphans.append(child)
    return orphans
