"""Settings: one typed, validated, frozen object built from the environment and `.env`.

Every field carries a description; `.env.example` and `trading-console check`
are both derived from the same fields so they cannot drift apart. A bad value
becomes a `ConfigError` whose lines each name the key, the value given and
what is allowed; the command line turns that into exit code 2.
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.calendar import known_calendar
from core.model import AlertSeverity, TradingMode

DEFAULT_STRATEGY = "core.strategy.ma_cross:MovingAverageCross"
# Dollar amounts above this are typos, not limits (and floats stop counting cents near 1e16).
MAX_MONEY = 1e15


_OPTIONAL_PATHS = ("heartbeat_file", "sim_state_file", "database_file", "log_dir", "archive_dir")
_FILE_PATHS = ("heartbeat_file", "sim_state_file", "database_file", "stop_file")
_DIR_PATHS = ("data_dir", "log_dir", "archive_dir")
TICKER = re.compile(r"[A-Z][A-Z0-9.\-]{0,11}")
MAX_SYMBOLS = 1_000
WHATSAPP_NUMBER = re.compile(r"whatsapp:\+[1-9]\d{6,14}")  # E.164: at most 15 digits
_TWILIO_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_TELEGRAM_CHAT = re.compile(r"-?\d{1,20}|@[A-Za-z][A-Za-z0-9_]{3,31}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")


def is_host(text: str) -> bool:
    """A DNS host name or an IPv4/IPv6 address (no scheme, port or path)."""
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        pass
    name = text.removesuffix(".")
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if labels[-1].isdigit():  # 300.1.1.1 is a bad address, not a host name
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


def is_email(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at and _EMAIL_LOCAL.fullmatch(local) and "." in domain and is_host(domain))


def url_problem(text: str) -> str | None:
    """Why ``text`` is not an http(s) URL with a host, or None when it is one."""
    if not text:
        return "empty"
    if any(c.isspace() or not c.isprintable() for c in text):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port outside 0..65535
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname or not is_host(parts.hostname):
        return "no valid host"
    if parts.query or parts.fragment:
        return "no query or fragment"
    return None


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot be a path on this system, or None."""
    if "\x00" in text:
        return "a path without NUL characters"
    if len(text) > 1024 or any(len(part) > 255 for part in text.split("/")):
        return "a path of at most 1024 characters, each name at most 255"
    return None


# utf-8-sig: a byte-order mark (Windows editors) is not read into the first key's name.
ENV_FILE_ENCODING = "utf-8-sig"
_SECRET_FIELDS = ("twilio_auth_token", "telegram_bot_token", "smtp_password")


class ConfigError(Exception):
    """Invalid settings; ``lines`` holds one operator-readable message per bad key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _blank_or_matching(value: str, pattern: re.Pattern[str], rule: str) -> str:
    """``value`` stripped: empty (the setting is unused) or matching ``pattern`` whole."""
    value = value.strip()
    if value and not pattern.fullmatch(value):
        raise ValueError(rule)
    return value


class Settings(BaseSettings):
    """Everything the console can be told, from env vars (upper-case names) or `.env`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding=ENV_FILE_ENCODING,
        extra="ignore",
        frozen=True,
        case_sensitive=False,
        # inf passes every "> 0" and would switch a limit off (DAILY_LOSS_LIMIT=inf never
        # trips the breaker); nan compares false with everything.
        allow_inf_nan=False,
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
    bar_seconds: int = Field(
        10, gt=0, le=86_400, description="length of the time bars strategies see, s"
    )

    # --- risk limits ------------------------------------------------------------
    max_position_size: float = Field(
        25_000.0, gt=0, le=MAX_MONEY, description="max absolute position value per instrument, $"
    )
    max_leverage: float = Field(
        2.0, ge=1.0, le=100.0, description="max gross exposure divided by equity (>= 1)"
    )
    daily_loss_limit: float = Field(
        2_000.0,
        gt=0,
        le=MAX_MONEY,
        description="daily loss that trips the circuit breaker, $ (positive)",
    )
    max_order_notional: float = Field(
        20_000.0, gt=0, le=MAX_MONEY, description="max value of one order, $"
    )
    max_orders_per_minute: int = Field(
        30, gt=0, le=1_000_000_000, description="risk-increasing orders allowed per rolling minute"
    )
    price_collar_pct: float = Field(
        5.0,
        gt=0,
        le=100.0,
        description="limit prices further than this % from the mid are rejected",
    )
    protective_stop_pct: float = Field(
        0.0,
        ge=0,
        le=50.0,
        description="a GTC stop this % from the average cost rests at the broker for every "
        "position (0: off; recommended for paper and live)",
    )
    protective_stop_trailing: bool = Field(
        False,
        description="protective stops follow the best price since entry (never moving back)",
    )
    drawdown_alert_pct: float = Field(
        3.0, gt=0, le=100.0, description="alert when equity falls this % below the intraday peak"
    )
    max_quote_jump_pct: float = Field(
        10.0,
        gt=0,
        le=1_000.0,
        description="quotes whose mid jumps more than this % are dropped as bad",
    )
    stale_after_seconds: float = Field(
        10.0,
        gt=0,
        le=86_400.0,
        description="a symbol with no quote for this long is stale: no new risk",
    )
    reconcile_tolerance_shares: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description="position difference vs the broker tolerated before halting",
    )
    daily_reset_offset_minutes: int = Field(
        0,
        ge=0,
        le=720,
        description="the trading day (daily P&L, breaker reset) starts this long before the open",
    )

    # --- simulator ------------------------------------------------------------
    sim_seed: int = Field(7, ge=0, le=2**63 - 1, description="random seed of the simulated market")
    sim_quotes_per_second: float = Field(
        4.0, gt=0, le=10_000, description="simulated quotes per second, per symbol"
    )
    sim_starting_cash: float = Field(
        100_000.0, gt=0, le=MAX_MONEY, description="simulated account cash, $"
    )
    sim_commission_per_share: float = Field(
        0.005, ge=0, le=1_000.0, description="simulated commission per share, $"
    )
    sim_commission_min: float = Field(
        1.0, ge=0, le=1_000_000.0, description="simulated minimum per order, $"
    )
    sim_commission_max_pct: float = Field(
        1.0, ge=0, le=100.0, description="simulated commission cap, % of trade value"
    )
    sim_latency_ms: float = Field(
        50.0, ge=0, le=3_600_000.0, description="simulated order latency, ms"
    )
    sim_volatility_bp: float = Field(
        5.0, gt=0, le=10_000.0, description="stdev of each simulated price step, basis points"
    )

    reconcile_seconds: float = Field(
        30.0, gt=0, le=86_400.0, description="how often positions are reconciled with the broker, s"
    )

    # --- Interactive Brokers (paper / live) -------------------------------------
    ib_host: str = Field("127.0.0.1", description="TWS / IB Gateway host")
    ib_port: int = Field(
        7497, gt=0, lt=65536, description="7497 paper TWS, 4002 paper Gateway, 7496/4001 live"
    )
    ib_client_id: int = Field(
        1,
        ge=0,
        le=2**31 - 2,
        description="API client id (unique per connection; keep it across restarts: IB binds "
        "orders, resting stops included, to the client id that placed them)",
    )
    ib_account: str = Field("", description="account id to trade (empty: the only one)")
    ib_market_data_type: int = Field(
        1, ge=1, le=4, description="1 live, 2 frozen, 3 delayed, 4 delayed-frozen"
    )
    ib_readonly: bool = Field(False, description="connect read-only (no orders)")
    ib_connect_timeout: float = Field(10.0, gt=0, le=3_600.0, description="seconds to wait for TWS")
    ib_primary_exchange: str = Field("", description="optional primary exchange, e.g. NASDAQ")
    poll_seconds: float = Field(
        5.0,
        gt=0,
        le=3_600.0,
        description="snapshot polling period for a symbol whose stream stalled, s",
    )
    reconnect_max_seconds: float = Field(
        60.0, gt=0, le=86_400.0, description="longest wait between reconnect attempts, s"
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
        300.0,
        ge=0,
        le=604_800.0,
        description="same alert key inside this window is counted, not re-sent",
    )
    alert_max_per_minute: int = Field(
        10, gt=0, le=10_000, description="per-channel limit of messages per minute"
    )
    heartbeat_seconds: float = Field(10.0, gt=0, le=3_600.0, description="heartbeat period, s")
    heartbeat_file: Path | None = Field(
        None, description="heartbeat file (default DATA_DIR/heartbeat)"
    )
    watchdog_stale_seconds: float = Field(
        60.0,
        gt=0,
        le=604_800.0,
        description="watchdog alerts when the heartbeat is older than this, s",
    )
    log_retention_days: int = Field(30, gt=0, le=36_500, description="days of log files to keep")
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
        le=36_500,
        description="after the automatic export, delete quotes older than this many days from "
        "SQLite (archived days only; 0 keeps them all)",
    )
    database_quote_days: int = Field(
        7,
        ge=0,
        le=36500,
        description="days of quotes SQLite keeps (the file grows ~21 GB a day at 2,000 "
        "quotes/s): older UTC days are exported to Parquet at the daily reset (ARCHIVE_DIR, "
        "else DATA_DIR/archive) and their quotes deleted once archived; QUOTE_RETENTION_DAYS, "
        "when set, wins; 0 keeps every quote",
    )
    disk_free_warn_gb: float = Field(
        5.0,
        ge=0,
        le=1_000_000,
        allow_inf_nan=False,
        description="a WARNING alert when free disk space under DATA_DIR falls below this "
        "many GB (checked each minute; 0 turns the check off)",
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
                if not TICKER.fullmatch(symbol):
                    raise ValueError(
                        f"{symbol!r} is not a ticker (a letter, then letters, digits, . or -; "
                        "at most 12)"
                    )
            if len(cleaned) > MAX_SYMBOLS:
                raise ValueError(f"at most {MAX_SYMBOLS} symbols, got {len(cleaned)}")
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
            if not WHATSAPP_NUMBER.fullmatch(number):
                raise ValueError(
                    f"{number!r}: whatsapp: and an E.164 number each, e.g. whatsapp:+15551234567"
                )
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

    @field_validator(*_OPTIONAL_PATHS, mode="before")
    @classmethod
    def _empty_path_is_default(cls, value: object) -> object:
        # `.env.example` documents an empty value as "none / the default"; Path("") would
        # be the working directory instead (ARCHIVE_DIR= exported into it).
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator(*_FILE_PATHS, *_DIR_PATHS, mode="before")
    @classmethod
    def _check_path_text(cls, value: object) -> object:
        if isinstance(value, str | Path):
            problem = path_problem(str(value))
            if problem:
                raise ValueError(problem)
        return value

    @field_validator(*_FILE_PATHS)
    @classmethod
    def _check_file_path(cls, value: Path | None) -> Path | None:
        if value is not None and value.is_dir():
            raise ValueError("a file path, not a directory")
        return value

    @field_validator(*_DIR_PATHS)
    @classmethod
    def _check_dir_path(cls, value: Path | None) -> Path | None:
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError("a directory path, not a file")
        return value

    @field_validator("ib_host")
    @classmethod
    def _check_ib_host(cls, value: str) -> str:
        value = value.strip()
        if not is_host(value):
            raise ValueError("a host name or IP address, e.g. 127.0.0.1")
        return value

    @field_validator("smtp_host")
    @classmethod
    def _check_smtp_host(cls, value: str) -> str:
        value = value.strip()
        if value and not is_host(value):
            raise ValueError(
                "empty (no e-mail) or a host name or IP address, e.g. smtp.example.com"
            )
        return value

    @field_validator("twilio_base_url", "telegram_base_url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        optional = info.field_name == "twilio_base_url"
        if optional and not value:
            return value
        problem = url_problem(value)
        if problem:
            empty = "empty (Twilio itself) or " if optional else ""
            raise ValueError(
                f"{empty}an http:// or https:// URL, e.g. https://relay.example ({problem})"
            )
        return value.rstrip("/")

    @field_validator("alert_email_from")
    @classmethod
    def _check_email_from(cls, value: str) -> str:
        value = value.strip()
        if value and not is_email(value):
            raise ValueError("empty or an e-mail address, e.g. alerts@example.com")
        return value

    @field_validator("alert_email_to")
    @classmethod
    def _check_email_to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if not is_email(address):
                raise ValueError(
                    f"{address!r}: comma-separated e-mail addresses, e.g. ops@example.com"
                )
        return value

    @field_validator("twilio_whatsapp_from")
    @classmethod
    def _check_whatsapp_from(cls, value: str) -> str:
        return _blank_or_matching(
            value,
            WHATSAPP_NUMBER,
            "empty or whatsapp: and an E.164 number, e.g. whatsapp:+14155238886",
        )

    @field_validator("twilio_account_sid")
    @classmethod
    def _check_twilio_sid(cls, value: str) -> str:
        return _blank_or_matching(
            value,
            _TWILIO_SID,
            "empty or AC followed by 32 hex digits (Twilio console, Account Info)",
        )

    @field_validator("telegram_chat_id")
    @classmethod
    def _check_chat_id(cls, value: str) -> str:
        return _blank_or_matching(
            value, _TELEGRAM_CHAT, "empty, a numeric chat id (e.g. 424242, -100123) or @channelname"
        )

    @field_validator("telegram_bot_token")
    @classmethod
    def _check_bot_token(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value().strip()
        if token and not re.fullmatch(r"\d{1,20}:[A-Za-z0-9_-]{1,200}", token):
            raise ValueError("empty or a bot token as BotFather gives it, digits:letters")
        return SecretStr(token)

    @field_validator("twilio_auth_token", "smtp_password")
    @classmethod
    def _check_secret_text(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        secret = value.get_secret_value()
        spaces_ok = info.field_name == "smtp_password"
        if len(secret) > 1024 or any(
            not c.isprintable() or (c.isspace() and not spaces_ok) for c in secret
        ):
            what = "printable text" if spaces_ok else "printable text without spaces"
            raise ValueError(f"{what}, at most 1024 characters")
        return value

    @field_validator("smtp_user")
    @classmethod
    def _check_smtp_user(cls, value: str) -> str:
        value = value.strip()
        if len(value) > 256 or any(not c.isprintable() or c.isspace() for c in value):
            raise ValueError("empty or a user name without spaces, at most 256 characters")
        return value

    @field_validator("ib_account")
    @classmethod
    def _check_ib_account(cls, value: str) -> str:
        if value.strip() and not re.fullmatch(r"[A-Za-z0-9]{1,32}", value.strip()):
            raise ValueError("empty or an IB account id, letters and digits, e.g. DU1234567")
        return value

    @field_validator("ib_primary_exchange")
    @classmethod
    def _check_primary_exchange(cls, value: str) -> str:
        if value.strip() and not re.fullmatch(r"[A-Za-z0-9.]{1,16}", value.strip()):
            raise ValueError("empty or an exchange code, e.g. NASDAQ, NYSE, ARCA")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_required(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("a directory path is required (empty is not the working directory)")
        return value

    @field_validator("stop_file", mode="before")
    @classmethod
    def _stop_file_required(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            # Path("") is ".", which always exists: the console would start halted.
            raise ValueError("a file path is required; the STOP file cannot be switched off")
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
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
    "literal_error": "one of the listed values",
    "path_type": "a path",
}
_BOUND_OPS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e7:
        return str(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range_rule(name: str, *, finite: bool = False) -> str | None:
    """``a number > 0 and <= 1e+15`` for a numeric field, from its constraints."""
    field = Settings.model_fields.get(name)
    if field is None or field.annotation not in (int, float):
        return None
    bounds = []
    for meta in field.metadata:
        for attr, op in _BOUND_OPS:
            bound = getattr(meta, attr, None)
            if bound is not None:
                bounds.append(f"{op} {_number(bound)}")
    kind = "a whole number" if field.annotation is int else "a number"
    if finite and field.annotation is float:
        kind = "a finite number"
    return " and ".join([f"{kind} {bounds[0]}", *bounds[1:]]) if bounds else kind


def _describe(error: Any, name: str) -> str:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        rule = _range_rule(name)
        if rule:
            return rule
        bound = next(iter(ctx.values()), "?")
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        return f"a number {op} {bound}"
    if kind == "finite_number":
        return f"{_range_rule(name, finite=True) or 'a finite number'} (inf and nan are not limits)"
    if kind in ("int_parsing", "int_from_float", "float_parsing"):
        return _range_rule(name) or _ALLOWED_BY_TYPE[kind]
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
        name = str(loc[0]) if loc else ""
        key = name.upper() if loc else "SETTINGS"
        given = error.get("input")
        if isinstance(given, dict | Settings) or not loc:
            lines.append(f"{key}: {_describe(error, name)}")
            continue
        if isinstance(given, SecretStr) or name in _SECRET_FIELDS:
            given = "****"  # a secret is never echoed, not even a malformed one
        elif isinstance(given, str) and len(given) > 80:
            given = given[:60] + f"... ({len(given)} characters)"
        lines.append(f"{key}: got {given!r} — allowed: {_describe(error, name)}")
    return lines


def read_env_file(path: Path | str) -> dict[str, str | None]:
    """The keys and values of a `.env` file; ConfigError naming the file when it cannot be
    read: missing, a directory, unreadable, or not UTF-8 (with the byte offset and line)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError([f"{path}: is a directory, not a settings file (--env-file FILE)"])
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: settings file not found (--env-file FILE)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the settings file: {exc.strerror}"]) from None
    try:
        text = data.decode(ENV_FILE_ENCODING)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [
                f"{path}: not UTF-8 text — byte 0x{data[exc.start]:02x} at offset {exc.start} "
                f"(line {line}); save the file as UTF-8"
            ]
        ) from None
    from dotenv import dotenv_values  # pydantic-settings' own reader, so both agree

    return dict(dotenv_values(stream=io.StringIO(text)))


def unknown_keys(keys: list[str]) -> tuple[list[str], list[str]]:
    """(misspellings, others) among ``keys`` that are not settings: a key close to a
    setting's name (DAILY_LOS_LIMIT) is an error line; any other unknown key a warning."""
    known = [name.upper() for name in Settings.model_fields]
    errors, warnings = [], []
    for key in keys:
        if key.upper() in known:
            continue
        close = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.8)
        if close:
            errors.append(f"{key}: not a setting — did you mean {close[0]}?")
        else:
            warnings.append(f"{key}: not a setting of trading-console, ignored")
    return errors, warnings


def load_settings(
    env_file: Path | str | None = ".env",
    *,
    must_exist: bool = False,
    warnings: list[str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from env + `.env` (+ overrides for tests); raise ConfigError when invalid.

    A missing ``env_file`` is skipped unless ``must_exist`` (the operator named it); one
    that is a directory or not UTF-8 is always an error. Keys in the file that are no
    setting are errors when they look like a misspelt one, else appended to ``warnings``.
    Environment variables are never checked that way: the environment holds everyone's.
    """
    problems: list[str] = []
    if env_file is not None and not must_exist and not Path(env_file).exists():
        env_file = None
    if env_file is not None:
        values = read_env_file(env_file)
        misspelt, others = unknown_keys(list(values))
        problems += [f"{line} (in {env_file})" for line in misspelt]
        if warnings is not None:
            warnings += [f"{line} (in {env_file})" for line in others]
    try:
        settings = Settings(
            _env_file=env_file,  # type: ignore[call-arg]
            _env_file_encoding=ENV_FILE_ENCODING,
            **overrides,
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc) + problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


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
