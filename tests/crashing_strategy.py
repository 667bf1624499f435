"""A strategy that raises after a few quotes: drives the crash-alert tests."""

from __future__ import annotations

from typing import ClassVar

from core.model import Quote
from core.strategy.base import Strategy, StrategyOutput

CRASH_MESSAGE = "strategy exploded on purpose"


class Boom(Strategy):
    name = "boom"
    defaults: ClassVar[dict[str, int]] = {"after": 5}

    def on_quote(self, quote: Quote) -> StrategyOutput:
        self.params["seen"] = self.params.get("seen", 0) + 1
        if self.params["seen"] >= self.params["after"]:
            raise RuntimeError(f"{CRASH_MESSAGE} on {quote.symbol}")
        return None
