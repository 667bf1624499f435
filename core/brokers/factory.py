"""Pick the broker for the configured TRADING_MODE."""

from __future__ import annotations

import dataclasses

from core.brokers.base import Broker
from core.brokers.ib import IbBroker, IbConfig
from core.brokers.sim import SimVenue, SimVenueConfig
from core.clock import Clock
from core.config import Settings
from core.model import TradingMode


class BrokerUnavailable(Exception):
    """The configured mode cannot be served by this build; the message says what to do."""


def sim_venue_config(settings: Settings) -> SimVenueConfig:
    return SimVenueConfig(
        symbols=settings.symbols,
        seed=settings.sim_seed,
        quotes_per_second=settings.sim_quotes_per_second,
        starting_cash=settings.sim_starting_cash,
        commission_per_share=settings.sim_commission_per_share,
        commission_min=settings.sim_commission_min,
        commission_max_pct=settings.sim_commission_max_pct,
        latency_ms=settings.sim_latency_ms,
        volatility_bp=settings.sim_volatility_bp,
    )


def build_broker(settings: Settings, clock: Clock) -> Broker:
    if settings.trading_mode is TradingMode.SIM:
        # The venue remembers its orders and fills like a real broker would, so a
        # restarted console finds its positions where it left them.
        config = dataclasses.replace(sim_venue_config(settings), state_file=settings.sim_state_path)
        return SimVenue(config, clock)
    if settings.trading_mode in (TradingMode.PAPER, TradingMode.LIVE):
        # The paper/live account check happens on connect, against the login's accounts.
        return IbBroker(IbConfig.from_settings(settings), clock)
    raise BrokerUnavailable(
        f"TRADING_MODE={settings.trading_mode}: no broker for this mode; use sim, paper or live"
    )
