"""IbConfig: the IB adapter's frozen, validated settings, and its reconnect backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass

from core.config import Settings
from core.model import TradingMode

PAPER_ACCOUNT_PREFIX = "DU"


def backoff_delay(attempt: int, cap: float, rng: random.Random) -> float:
    """Wait before reconnect attempt ``attempt`` (0-based): 1 s doubling, capped, with jitter.

    The jitter (up to 20 % shorter) keeps several consoles that lost the same
    TWS from knocking on it in lockstep.
    """
    base = min(cap, 2.0 ** min(attempt, 30))
    return base * rng.uniform(0.8, 1.0)


def is_paper_account(account: str) -> bool:
    return account.upper().startswith(PAPER_ACCOUNT_PREFIX)


@dataclass(frozen=True, slots=True)
class IbConfig:
    """Everything the IB adapter needs; validated on construction."""

    symbols: tuple[str, ...]
    mode: TradingMode = TradingMode.PAPER
    host: str = "127.0.0.1"
    port: int = 7497
    client_id: int = 1
    account: str = ""  # empty: the login's only account
    market_data_type: int = 1  # 1 live, 2 frozen, 3 delayed, 4 delayed-frozen
    readonly: bool = False
    connect_timeout: float = 10.0
    primary_exchange: str = ""
    poll_seconds: float = 5.0
    stale_after_seconds: float = 10.0
    reconnect_max_seconds: float = 60.0
    exchange_calendar: str = "XNYS"
    supervise_seconds: float = 0.1  # run() loop period (wall time); decisions read the clock
    commission_wait_seconds: float = 5.0  # a fill waits this long for its commission report
    jitter_seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", tuple(self.symbols))
        if not self.symbols:
            raise ValueError("IbConfig.symbols: give at least one symbol, e.g. ('AAPL',)")
        if self.mode is TradingMode.SIM:
            raise ValueError("IbConfig.mode: IB serves TRADING_MODE=paper or live, not sim")
        if not 0 < self.port < 65536:
            raise ValueError(f"IbConfig.port must be 1..65535, got {self.port}")
        if self.market_data_type not in (1, 2, 3, 4):
            raise ValueError(
                f"IbConfig.market_data_type must be 1, 2, 3 or 4, got {self.market_data_type}"
            )
        for name in (
            "connect_timeout",
            "poll_seconds",
            "stale_after_seconds",
            "reconnect_max_seconds",
            "supervise_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"IbConfig.{name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> IbConfig:
        return cls(
            symbols=settings.symbols,
            mode=settings.trading_mode,
            host=settings.ib_host,
            port=settings.ib_port,
            client_id=settings.ib_client_id,
            account=settings.ib_account.strip(),
            market_data_type=settings.ib_market_data_type,
            readonly=settings.ib_readonly,
            connect_timeout=settings.ib_connect_timeout,
            primary_exchange=settings.ib_primary_exchange.strip(),
            poll_seconds=settings.poll_seconds,
            stale_after_seconds=settings.stale_after_seconds,
            reconnect_max_seconds=settings.reconnect_max_seconds,
            exchange_calendar=settings.exchange_calendar,
        )

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"
