"""Settings: one typed, validated, frozen object built from the environment and `.env`.

Every field carries a description; `.env.example` and `trading-console check`
are both derived from the same fields so they cannot drift apart. A bad value
becomes a `ConfigError` whose lines each name the key, the value given and
what is allowed; the command line turns that into exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.calendar import known_calendar
from core.model import AlertSeverity, TradingMode

DEFAULT_STRATEGY = "core.strategy.ma_cross:MovingAverageCross"


class ConfigError(Exception):
    """Invalid settings; ``lines`` holds one operator-readable message per bad key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Settings(BaseSettings):
    """Everything the console can be told, from env vars (upper-case names) or `.env`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    # --- mode and instruments -------------------------------------------------
    trading_mode: TradingMode = Field(
        TradingMode.SIM, description="sim (built-in simulator), paper (IB paper) or live (IB live)"
    )
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        ("AAPL", "MSFT", "SPY", "NVDA", "AMZN"),
        description="comma-separated symbols to trade",
    )

    # --- strategy -------------------------------------------------------------
    strategy: str = Field(
        DEFAULT_STRATEGY, description="strategy class as a dotted path, module:Class"
    )
    strategy_params: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict, description='strategy parameters as JSON, e.g. {"fast": 5}'
    )
    bar_seconds: int = Field(10, gt=0, description="length of the time bars strategies see, s")

    # --- risk limits ------------------------------------------------------------
    max_position_size: float = Field(
        25_000.0, gt=0, description="max absolute position value per instrument, $"
    )
    max_leverage: float = Field(
        2.0, ge=1.0, description="max gross exposure divided by equity (>= 1)"
    )
    daily_loss_limit: float = Field(
        2_000.0, gt=0, description="daily loss that trips the circuit breaker, $ (positive)"
    )
    max_order_notional: float = Field(20_000.0, gt=0, description="max value of one order, $")
    max_orders_per_minute: int = Field(
        30, gt=0, description="risk-increasing orders allowed per rolling minute"
    )
    price_collar_pct: float = Field(
        5.0, gt=0, description="limit prices further than this % from the mid are rejected"
    )
    drawdown_alert_pct: float = Field(
        3.0, gt=0, description="alert when equity falls this % below the intraday peak"
    )
    max_quote_jump_pct: float = Field(
        10.0, gt=0, description="quotes whose mid jumps more than this % are dropped as bad"
    )
    stale_after_seconds: float = Field(
        10.0, gt=0, description="a symbol with no quote for this long is stale: no new risk"
    )
    reconcile_tolerance_shares: int = Field(
        0, ge=0, description="position difference vs the broker tolerated before halting"
    )
    daily_reset_offset_minutes: int = Field(
        0,
        ge=0,
        le=720,
        description="the trading day (daily P&L, breaker reset) starts this long before the open",
    )

    # --- simulator ------------------------------------------------------------
    sim_seed: int = Field(7, description="random seed of the simulated market")
    sim_quotes_per_second: float = Field(
        4.0, gt=0, le=10_000, description="simulated quotes per second, per symbol"
    )
    sim_starting_cash: float = Field(100_000.0, gt=0, description="simulated account cash, $")
    sim_commission_per_share: float = Field(
        0.005, ge=0, description="simulated commission per share, $"
    )
    sim_commission_min: float = Field(1.0, ge=0, description="simulated minimum per order, $")
    sim_commission_max_pct: float = Field(
        1.0, ge=0, description="simulated commission cap, % of trade value"
    )
    sim_latency_ms: float = Field(50.0, ge=0, description="simulated order latency, ms")
    sim_volatility_bp: float = Field(
        5.0, gt=0, description="stdev of each simulated price step, basis points"
    )

    reconcile_seconds: float = Field(
        30.0, gt=0, description="how often positions are reconciled with the broker, s"
    )

    # --- Interactive Brokers (paper / live) -------------------------------------
    ib_host: str = Field("127.0.0.1", description="TWS / IB Gateway host")
    ib_port: int = Field(
        7497, gt=0, lt=65536, description="7497 paper TWS, 4002 paper Gateway, 7496/4001 live"
    )
    ib_client_id: int = Field(1, ge=0, description="API client id (unique per connection)")
    ib_account: str = Field("", description="account id to trade (empty: the only one)")
    ib_market_data_type: int = Field(
        1, ge=1, le=4, description="1 live, 2 frozen, 3 delayed, 4 delayed-frozen"
    )
    ib_readonly: bool = Field(False, description="connect read-only (no orders)")
    ib_connect_timeout: float = Field(10.0, gt=0, description="seconds to wait for TWS")
    ib_primary_exchange: str = Field("", description="optional primary exchange, e.g. NASDAQ")
    poll_seconds: float = Field(
        5.0, gt=0, description="snapshot polling period for a symbol whose stream stalled, s"
    )
    reconnect_max_seconds: float = Field(
        60.0, gt=0, description="longest wait between reconnect attempts, s"
    )
    exchange_calendar: str = Field(
        "XNYS", description="exchange calendar for sessions (exchange-calendars code)"
    )

    # --- alerts and monitoring ----------------------------------------------------
    twilio_account_sid: str = Field("", description="Twilio account SID (ACxxxx)")
    twilio_auth_token: SecretStr = Field(SecretStr(""), description="Twilio auth token")
    twilio_whatsapp_from: str = Field("", description="sender, e.g. whatsapp:+14155238886")
    alert_whatsapp_to: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated recipients, e.g. whatsapp:+15551234567"
    )
    twilio_base_url: str = Field(
        "", description="optional Twilio-compatible base URL (relay or test server)"
    )
    telegram_bot_token: SecretStr = Field(SecretStr(""), description="Telegram bot token")
    telegram_chat_id: str = Field("", description="Telegram chat id to alert")
    telegram_base_url: str = Field(
        "https://api.telegram.org", description="Telegram Bot API base URL"
    )
    smtp_host: str = Field("", description="SMTP server for e-mail alerts")
    smtp_port: int = Field(587, gt=0, lt=65536, description="SMTP port (STARTTLS)")
    smtp_user: str = Field("", description="SMTP user name")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP password")
    smtp_starttls: bool = Field(True, description="use STARTTLS")
    alert_email_from: str = Field("", description="From address of alert e-mails")
    alert_email_to: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated e-mail recipients"
    )
    alert_whatsapp_min_severity: AlertSeverity = Field(
        AlertSeverity.CRITICAL, description="lowest severity sent to WhatsApp"
    )
    alert_telegram_min_severity: AlertSeverity = Field(
        AlertSeverity.WARNING, description="lowest severity sent to Telegram"
    )
    alert_email_min_severity: AlertSeverity = Field(
        AlertSeverity.WARNING, description="lowest severity sent by e-mail"
    )
    alert_dedup_seconds: float = Field(
        300.0, ge=0, description="same alert key inside this window is counted, not re-sent"
    )
    alert_max_per_minute: int = Field(
        10, gt=0, description="per-channel limit of messages per minute"
    )
    heartbeat_seconds: float = Field(10.0, gt=0, description="heartbeat period, s")
    heartbeat_file: Path | None = Field(
        None, description="heartbeat file (default DATA_DIR/heartbeat)"
    )
    watchdog_stale_seconds: float = Field(
        60.0, gt=0, description="watchdog alerts when the heartbeat is older than this, s"
    )
    log_retention_days: int = Field(30, gt=0, description="days of log files to keep")
    log_json: bool = Field(False, description="write the log file as JSON lines")

    sim_state_file: Path | None = Field(
        None,
        description="where the simulated venue keeps its orders and fills across restarts "
        "(default DATA_DIR/sim-venue.jsonl)",
    )

    # --- paths and recording -----------------------------------------------------
    data_dir: Path = Field(Path("data"), description="where the database, logs and archive live")
    database_file: Path | None = Field(
        None, description="SQLite file (default DATA_DIR/trading.db)"
    )
    log_dir: Path | None = Field(None, description="log directory (default DATA_DIR/logs)")
    stop_file: Path = Field(Path("STOP"), description="touch this file to halt trading")
    record_quotes: bool = Field(True, description="store every validated quote in the database")
    archive_dir: Path | None = Field(
        None,
        description="export each finished UTC day here as Parquet (hive layout) at the daily "
        "reset; empty: no automatic export",
    )
    quote_retention_days: int = Field(
        0,
        ge=0,
        description="after the automatic export, delete quotes older than this many days from "
        "SQLite (archived days only; 0 keeps them all)",
    )
    ui_refresh_hz: float = Field(
        4.0, gt=0, le=30, description="how often the console panes refresh, per second"
    )

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list | tuple):
            cleaned = tuple(str(s).strip().upper() for s in value if str(s).strip())
            if not cleaned:
                raise ValueError("at least one symbol is required, e.g. AAPL,MSFT")
            for symbol in cleaned:
                if not all(c.isalnum() or c in ".-" for c in symbol):
                    raise ValueError(f"{symbol!r} is not a ticker (letters, digits, . or -)")
            if len(set(cleaned)) != len(cleaned):
                raise ValueError("symbols must not repeat")
            return cleaned
        return value

    @field_validator("alert_whatsapp_to", "alert_email_to", mode="before")
    @classmethod
    def _split_recipients(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("alert_whatsapp_to")
    @classmethod
    def _check_whatsapp(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for number in value:
            if not number.startswith("whatsapp:+"):
                raise ValueError(f"{number!r}: recipients look like whatsapp:+15551234567")
        return value

    @field_validator("strategy_params", mode="before")
    @classmethod
    def _parse_params(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ValueError('a JSON object is required, e.g. {"fast": 5, "slow": 20}')
        return value

    @field_validator("strategy")
    @classmethod
    def _check_strategy_path(cls, value: str) -> str:
        module, sep, attr = value.partition(":")
        if not sep:
            module, _, attr = value.rpartition(".")
        if not module or not attr:
            raise ValueError("a dotted path module:Class is required")
        return value

    @field_validator("exchange_calendar")
    @classmethod
    def _check_calendar(cls, value: str) -> str:
        if not known_calendar(value):
            raise ValueError("an exchange-calendars code is required, e.g. XNYS, XNAS, XLON")
        return value

    @model_validator(mode="after")
    def _check_limits_consistent(self) -> Settings:
        if self.max_order_notional > self.max_position_size * 2:
            # A single order larger than a flip of the biggest allowed position can never pass.
            raise ValueError(
                "MAX_ORDER_NOTIONAL must not exceed twice MAX_POSITION_SIZE "
                f"({self.max_order_notional} > 2 x {self.max_position_size})"
            )
        return self

    @property
    def database_path(self) -> Path:
        return self.database_file or self.data_dir / "trading.db"

    @property
    def log_path(self) -> Path:
        return self.log_dir or self.data_dir / "logs"

    @property
    def sim_state_path(self) -> Path:
        return self.sim_state_file or self.data_dir / "sim-venue.jsonl"

    @property
    def heartbeat_path(self) -> Path:
        return self.heartbeat_file or self.data_dir / "heartbeat"

    def masked(self) -> dict[str, str]:
        """Effective settings as ENV_NAME -> printable value, secrets masked."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                shown = "****" if value.get_secret_value() else "(not set)"
            elif isinstance(value, tuple):
                shown = ",".join(str(v) for v in value)
            elif isinstance(value, dict):
                shown = json.dumps(value)
            elif value is None:
                shown = "(default)"
            else:
                shown = str(value)
            out[name.upper()] = shown
        return out


_ALLOWED_BY_TYPE = {
    "int_parsing": "a whole number",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
    "literal_error": "one of the listed values",
}


def _describe(error: Any) -> str:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()), "?")
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        return f"a number {op} {bound}"
    if kind == "enum":
        return "one of: " + str(ctx.get("expected", "")).replace("'", "")
    if kind in ("value_error", "assertion_error"):
        return str(error.get("msg", "")).removeprefix("Value error, ")
    return _ALLOWED_BY_TYPE.get(kind, str(error.get("msg", "")))


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per bad key: `KEY: got 'value' — allowed: ...`."""
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ()
        key = str(loc[0]).upper() if loc else "SETTINGS"
        given = error.get("input")
        if isinstance(given, dict | Settings) or not loc:
            lines.append(f"{key}: {_describe(error)}")
            continue
        lines.append(f"{key}: got {given!r} — allowed: {_describe(error)}")
    return lines


def load_settings(env_file: Path | str | None = ".env", **overrides: Any) -> Settings:
    """Build Settings from env + `.env` (+ overrides for tests); raise ConfigError when invalid."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def render_env_example() -> str:
    """The text of `.env.example`: every setting, its description and its default."""
    lines = [
        "# Trading Console settings. Copy to .env and edit; every line shows the default.",
        "# Environment variables override this file. `trading-console check` shows what is",
        "# in force. Regenerate with: python -m core.config > .env.example",
        "",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        if isinstance(default, tuple):
            text = ",".join(str(v) for v in default)
        elif isinstance(default, dict):
            text = json.dumps(default)
        elif default is None:
            text = ""
        else:
            text = str(default.value if hasattr(default, "value") else default)
        lines.append(f"# {field.description}")
        prefix = "# " if default is None else ""  # an empty value would not mean "default"
        lines.append(f"{prefix}{name.upper()}={text}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_env_example(), end="")
