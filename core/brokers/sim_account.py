"""The simulated venue's cash account: commission, cash, positions and buying power.

Positions are marked at the venue's true mids (``Book.mark``), never at a
published quote, which may be malformed.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.brokers.sim_book import PRICE_EPS, Book, SimVenueConfig
from core.model import AccountValues


class SimAccount:
    """The venue's one account: cash and non-zero positions, booked fill by fill."""

    __slots__ = ("_books", "_config", "cash", "positions")

    def __init__(self, config: SimVenueConfig, books: Mapping[str, Book]) -> None:
        self._config = config
        self._books = books  # symbol -> the venue's true book, for the marks
        self.cash = config.starting_cash
        self.positions: dict[str, int] = {}  # non-zero holdings only

    def commission(self, quantity: int, price: float) -> float:
        """IB-like tiered fixed commission: per share, with a minimum and a % cap."""
        per_share = max(quantity * self._config.commission_per_share, self._config.commission_min)
        return min(per_share, self._config.commission_max_pct / 100.0 * quantity * price)

    def book_fill(self, symbol: str, signed: int, price: float, commission: float) -> None:
        """Apply a fill of ``signed`` shares (negative for a sale) to cash and positions."""
        self.cash -= signed * price + commission
        position = self.positions.get(symbol, 0) + signed
        if position:
            self.positions[symbol] = position
        else:
            self.positions.pop(symbol, None)  # positions() reports non-zero holdings only

    def gross_exposure(self) -> float:
        return sum(abs(qty) * self._books[s].mark for s, qty in self.positions.items())

    def net_liquidation(self) -> float:
        market_value = sum(qty * self._books[s].mark for s, qty in self.positions.items())
        return self.cash + market_value

    def values(self) -> AccountValues:
        nlv = self.net_liquidation()
        return AccountValues(
            account_id=self._config.account_id,
            cash=self.cash,
            net_liquidation=nlv,
            buying_power=self._config.buying_power_multiple * nlv - self.gross_exposure(),
        )

    def buying_power_refusal(self, symbol: str, signed: int, mark: float) -> str | None:
        """Why the account cannot take ``signed`` more shares of ``symbol`` at ``mark``.

        None when it can: within buying power after the trade, or reducing exposure
        (always allowed, fail safe).
        """
        position = self.positions.get(symbol, 0)
        if position * signed < 0 and abs(signed) <= abs(position):
            return None  # reducing exposure is always allowed (fail safe)
        nlv = self.net_liquidation()  # without building the rest of AccountValues
        gross_after = self.gross_exposure() + (abs(position + signed) - abs(position)) * mark
        limit = self._config.buying_power_multiple * nlv
        if gross_after > limit + PRICE_EPS:
            return (
                f"insufficient buying power: gross exposure after the order would be "
                f"{gross_after:,.2f}, limit is {limit:,.2f} "
                f"({self._config.buying_power_multiple:g}x net liquidation {nlv:,.2f})"
            )
        return None
