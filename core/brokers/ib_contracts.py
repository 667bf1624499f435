"""Contracts for the console's symbols: US stocks routed SMART in USD."""

from __future__ import annotations

from collections.abc import Sequence

from ib_async import IB, Contract, Stock


def stock_contract(symbol: str, primary_exchange: str = "") -> Stock:
    """A SMART-routed USD stock; the primary exchange disambiguates listings (e.g. NASDAQ)."""
    return Stock(symbol, "SMART", "USD", primaryExchange=primary_exchange)


async def qualify_stocks(
    ib: IB, symbols: Sequence[str], primary_exchange: str = ""
) -> tuple[dict[str, Contract], list[str]]:
    """Qualify ``symbols`` (fills in conId); returns the contracts and the symbols IB does not know.

    Ambiguous symbols (several listings, no primary exchange given) count as unknown:
    trading the wrong listing is worse than not trading.
    """
    contracts = [stock_contract(s, primary_exchange) for s in symbols]
    results = await ib.qualifyContractsAsync(*contracts)
    found: dict[str, Contract] = {}
    missing: list[str] = []
    for symbol, result in zip(symbols, results, strict=True):
        if isinstance(result, Contract) and result.conId:
            found[symbol] = result
        else:
            missing.append(symbol)
    return found, missing
