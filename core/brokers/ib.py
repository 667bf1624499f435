"""Interactive Brokers (TWS / IB Gateway) through ib_async: the paper and live venue.

Only ib_async's ``*Async`` API is used, on the loop's own thread; nothing here
blocks or patches the event loop. The connection lives in ``run()``: after a
drop it reconnects with exponential backoff and jitter (1 s doubling up to
``RECONNECT_MAX_SECONDS``, forever), then resubscribes market data, re-adopts
open orders by ``orderRef`` (never re-sending them), delivers the executions
missed meanwhile (the core de-duplicates by execution id) and refreshes
positions, and only then reports ``on_connection_changed(True, ...)`` so the
core reconciles against a synchronised broker.

Failures are split the way ``core.brokers.base`` asks: what the operator must
fix (paper/live account mismatch, symbols IB does not know, IB_ACCOUNT not in
the login, several accounts without IB_ACCOUNT) raises ``BrokerConnectError``;
everything that may heal by itself (TWS not running, refused, timeout, client
id still held by a dying session) is reported through
``on_connection_changed(False, text)`` with what to check, and retried.

Unknown symbols: the configured SYMBOLS are qualified on the first successful
connection and any IB does not know raise ``BrokerConnectError`` naming them;
``subscribe_quotes`` for a symbol outside SYMBOLS reports
``on_broker_error(200, ...)``.

Orders of earlier sessions (a GTC stop resting since before a restart): ib_async's
``connectAsync`` asks ``reqOpenOrders`` and ``reqCompletedOrders`` on every connection
(not with IB_READONLY). TWS answers ``reqOpenOrders`` with the open orders placed by
this very client id, in earlier sessions too, each with its orderId, orderRef, type,
prices and tif; the tracker adopts them by orderRef and ``order_states()`` lists them,
so the core's recovery adopts a resting stop by its client order id and never places
it twice. IB binds an API order to the client id that placed it: only that client id
gets it from ``reqOpenOrders`` and may modify or cancel it (``reqAllOpenOrders`` would
list it to others, read-only), so IB_CLIENT_ID must stay the same across restarts.
Client id 0 is special (TWS's own orders): ib_async then calls
``reqAutoOpenOrders(True)`` and manual TWS orders are bound to it; the console does
not need that and, with another client id, ignores manual orders (no orderRef of ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

from ib_async import IB
from loguru import logger

from core.brokers.base import BrokerConnectError, BrokerListener
from core.brokers.ib_config import IbConfig, backoff_delay, is_paper_account
from core.brokers.ib_contracts import qualify_stocks
from core.brokers.ib_errors import (
    CLIENT_ID_IN_USE,
    CONNECTIVITY_LOST,
    CONNECTIVITY_RESTORED_DATA_LOST,
    NO_SECURITY_DEFINITION,
    NOT_CONNECTED,
    FarmState,
    describe_code,
    describe_connect_failure,
    farm_state,
    is_warning,
)
from core.brokers.ib_marketdata import CalendarHours, ExchangeHours, IbMarketData
from core.brokers.ib_orders import IbOrderTracker
from core.clock import Clock
from core.model import AccountValues, BrokerOrderState, Fill, Order, TradingMode

__all__ = ["IbBroker", "IbConfig", "backoff_delay", "is_paper_account", "route_ib_async_logging"]


class _ToLoguru(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        logger.log(record.levelname, "ib_async: {message}", message=record.getMessage())


def route_ib_async_logging(level: int = logging.WARNING) -> None:
    """Send ib_async's stdlib logging to loguru (idempotent).

    Unhandled, Python's last-resort handler prints ib_async's warnings to stderr,
    which would scribble over the console's screen; through loguru they land in
    the log file with everything else. Below WARNING it narrates every message.
    """
    ib_log = logging.getLogger("ib_async")
    ib_log.setLevel(level)
    ib_log.propagate = False
    if not any(isinstance(h, _ToLoguru) for h in ib_log.handlers):
        ib_log.addHandler(_ToLoguru())


class _HandshakeAborted(Exception):
    """TWS closed the socket or refused the client during the API handshake."""


class IbBroker:
    """The Broker protocol on ib_async; see the module docstring."""

    name = "ib"

    def __init__(
        self, config: IbConfig, clock: Clock, *, hours: ExchangeHours | None = None
    ) -> None:
        self.config = config
        self._clock = clock
        self._listener: BrokerListener | None = None
        route_ib_async_logging()
        self.ib = IB()
        self._market = IbMarketData(
            self.ib,
            clock,
            self._require_listener,
            stale_after_seconds=config.stale_after_seconds,
            poll_seconds=config.poll_seconds,
            hours=hours or CalendarHours(config.exchange_calendar),
        )
        self._orders = IbOrderTracker(
            self.ib,
            clock,
            self._require_listener,
            commission_wait_seconds=config.commission_wait_seconds,
        )
        self._rng = random.Random(config.jitter_seed)
        self._contracts: dict[str, Any] = {}
        self._wanted: list[str] = []
        self._account = config.account
        self._connected = False  # API up, synchronised, and TWS connected to IB
        self._ib_link_lost = False  # TWS reported 1100 while our socket stayed up
        self._connecting = False
        self._closing = False
        self._attempt = 0
        self._next_attempt_at: float | None = None
        self.last_failure = ""
        self._broken_farms: set[int] = set()
        self._positions: dict[str, int] = {}
        self._account_values = AccountValues(config.account, 0.0, 0.0, 0.0)
        self.ib.pendingTickersEvent += self._market.on_pending_tickers
        self.ib.orderStatusEvent += self._orders.on_order_status
        self.ib.openOrderEvent += self._orders.on_open_order
        self.ib.execDetailsEvent += self._orders.on_exec_details
        self.ib.commissionReportEvent += self._orders.on_commission_report
        self.ib.errorEvent += self._on_error
        self.ib.disconnectedEvent += self._on_disconnected

    # ------------------------------------------------------------- protocol basics
    def set_listener(self, listener: BrokerListener) -> None:
        self._listener = listener

    def _require_listener(self) -> BrokerListener:
        if self._listener is None:
            raise RuntimeError("IbBroker has no listener: call set_listener() before using it")
        return self._listener

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def account_id(self) -> str:
        return self._account

    @property
    def next_attempt_in(self) -> float | None:
        """Seconds (on the clock) until the next reconnect attempt; None when none is due."""
        if self._next_attempt_at is None:
            return None
        return max(0.0, self._next_attempt_at - self._clock.monotonic())

    def feed_source(self, symbol: str) -> Any:
        return self._market.source(symbol)

    def ib_order_ids(self, client_order_id: str) -> tuple[int, int] | None:
        """IB's (orderId, permId) for one of our orders."""
        return self._orders.ids(client_order_id)

    # ------------------------------------------------------------- connection
    async def connect(self) -> None:
        """First connection; a transient failure is reported and left to ``run()`` to retry."""
        self._require_listener()
        self._closing = False
        if self._connected or self._connecting:
            return
        await self._attempt_connect()

    async def disconnect(self) -> None:
        self._closing = True
        self._next_attempt_at = None
        await self._market.stop()
        was_connected = self._connected
        self._connected = False
        if self.ib.client.isConnected():
            self.ib.disconnect()
        if was_connected and self._listener is not None:
            self._listener.on_connection_changed(False, f"disconnected from IB {self.endpoint}")

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    async def run(self) -> None:
        """Supervise the feed, flush commission waits, reconnect when due; until disconnect()."""
        while not self._closing:
            if self._connected:
                self._market.supervise()
                self._orders.flush_commissions()
            elif (
                not self._connecting
                and self._next_attempt_at is not None
                and self._clock.monotonic() >= self._next_attempt_at
            ):
                await self._attempt_connect()  # BrokerConnectError ends run(): operator must act
            await asyncio.sleep(self.config.supervise_seconds)

    async def _attempt_connect(self) -> None:
        listener = self._require_listener()
        self._connecting = True
        self._next_attempt_at = None
        try:
            try:
                await self._open_session()
            except (OSError, TimeoutError, ConnectionError, _HandshakeAborted) as exc:
                text = (
                    str(exc)
                    if isinstance(exc, _HandshakeAborted)
                    else describe_connect_failure(
                        exc, endpoint=self.endpoint, client_id=self.config.client_id
                    )
                )
                self._schedule_retry()
                self._report_down(text)
                return
            try:
                self._choose_account()
                await self._qualify_symbols()
            except BrokerConnectError as exc:
                self._drop_session()
                listener.on_connection_changed(False, str(exc))
                raise
            except (TimeoutError, ConnectionError) as exc:
                self._drop_session()
                self._schedule_retry()
                self._report_down(f"contract lookup failed ({exc!r}); retrying")
                return
            self._synchronise()
            if not self.ib.isConnected():
                self._schedule_retry()
                self._report_down("connection to TWS lost while synchronising; retrying")
                return
            self._connected = True
            self._ib_link_lost = False
            self._attempt = 0
            self.last_failure = ""
            listener.on_connection_changed(
                True,
                f"connected to IB {self.endpoint} as client {self.config.client_id}, "
                f"account {self._account} (server v{self.ib.client.serverVersion()})",
            )
        finally:
            self._connecting = False

    async def _open_session(self) -> None:
        """ib_async's connectAsync, ended early when TWS refuses us (326) or hangs up."""
        refusals: list[tuple[int, str]] = []
        hung_up = asyncio.Event()

        def on_error(req_id: int, code: int, message: str, contract: Any) -> None:
            if req_id == -1 and not is_warning(code):
                refusals.append((code, message))

        def on_api_error(message: str) -> None:
            hung_up.set()

        self.ib.errorEvent += on_error
        self.ib.client.apiError += on_api_error
        connecting = asyncio.ensure_future(
            self.ib.connectAsync(
                self.config.host,
                self.config.port,
                self.config.client_id,
                timeout=self.config.connect_timeout,
                readonly=self.config.readonly,
                account=self.config.account,
            )
        )
        hangup = asyncio.ensure_future(hung_up.wait())
        try:
            await asyncio.wait({connecting, hangup}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.ib.errorEvent -= on_error
            self.ib.client.apiError -= on_api_error
            hangup.cancel()
        if connecting.done():
            connecting.result()  # re-raises the connection error, if any
            return
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        self._drop_session()
        for code, message in refusals:
            raise _HandshakeAborted(
                describe_code(
                    code, message, client_id=self.config.client_id, endpoint=self.endpoint
                )
            )
        raise _HandshakeAborted(
            describe_code(
                CLIENT_ID_IN_USE,
                "TWS closed the connection during the handshake",
                client_id=self.config.client_id,
                endpoint=self.endpoint,
            )
        )

    def _choose_account(self) -> None:
        accounts = self.ib.managedAccounts()
        listed = ", ".join(accounts) or "none"
        if self.config.account:
            if self.config.account not in accounts:
                raise BrokerConnectError(
                    f"IB_ACCOUNT={self.config.account} is not an account of this IB login "
                    f"(it manages: {listed}); fix IB_ACCOUNT"
                )
            account = self.config.account
        elif len(accounts) == 1:
            account = accounts[0]
        else:
            raise BrokerConnectError(
                f"this IB login manages several accounts ({listed}); set IB_ACCOUNT to the one "
                "to trade"
            )
        paper = is_paper_account(account)
        if self.config.mode is TradingMode.LIVE and paper:
            raise BrokerConnectError(
                f"TRADING_MODE=live but account {account} is a paper account (DU...): connect "
                "to the live TWS / Gateway (port 7496 / 4001) or use TRADING_MODE=paper"
            )
        if self.config.mode is TradingMode.PAPER and not paper:
            raise BrokerConnectError(
                f"TRADING_MODE=paper but account {account} is a LIVE, real-money account: "
                "connect to the paper login (port 7497 / 4002), or trade it deliberately with "
                "TRADING_MODE=live and --live"
            )
        self._account = account
        self._orders.account = account

    async def _qualify_symbols(self) -> None:
        missing = [s for s in self.config.symbols if s not in self._contracts]
        if not missing:
            return
        found, unknown = await asyncio.wait_for(
            qualify_stocks(self.ib, missing, self.config.primary_exchange),
            self.config.connect_timeout,
        )
        if unknown:
            where = "SMART/USD" + (
                f", primary {self.config.primary_exchange}" if self.config.primary_exchange else ""
            )
            raise BrokerConnectError(
                f"IB does not know {', '.join(unknown)} as a US stock ({where}): fix SYMBOLS"
                + ("" if self.config.primary_exchange else " or set IB_PRIMARY_EXCHANGE")
            )
        self._contracts.update(found)

    def _synchronise(self) -> None:
        """Resubscribe data, re-adopt orders, deliver missed fills, refresh account caches."""
        self.ib.reqMarketDataType(self.config.market_data_type)
        self._market.resubscribe()
        for symbol in self._wanted:  # asked for while TWS was not reachable yet
            contract = self._contracts.get(symbol)
            if contract is not None:
                self._market.subscribe(symbol, contract)
        self._orders.resync(self.config.client_id)
        self._refresh_caches()

    def _drop_session(self) -> None:
        # Only called while _connecting is set, so _on_disconnected ignores our own hang-up.
        with contextlib.suppress(Exception):
            self.ib.disconnect()

    def _schedule_retry(self) -> None:
        delay = backoff_delay(self._attempt, self.config.reconnect_max_seconds, self._rng)
        self._attempt += 1
        self._next_attempt_at = self._clock.monotonic() + delay

    def _report_down(self, text: str) -> None:
        retry = self.next_attempt_in
        message = text if retry is None else f"{text} — retrying in {retry:.0f}s"
        self.last_failure = message
        logger.warning("IB not connected: {message}", message=message)
        self._require_listener().on_connection_changed(False, message)

    def _on_disconnected(self) -> None:
        self._market.on_disconnected()
        if self._closing or self._connecting:
            return
        was_connected = self._connected
        self._connected = False
        self._attempt = 0
        self._schedule_retry()
        if was_connected:
            self._report_down(f"connection to TWS {self.endpoint} lost")

    # ------------------------------------------------------------- IB messages
    def _on_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        if self._orders.on_error(req_id, code, message):
            return
        listener = self._require_listener()
        text = describe_code(code, message, client_id=self.config.client_id, endpoint=self.endpoint)
        if code == CONNECTIVITY_LOST:
            self._ib_link_lost = True
            if self._connected:
                self._connected = False
                listener.on_connection_changed(False, text)
            return
        if code in (CONNECTIVITY_RESTORED_DATA_LOST, 1102):
            if code == CONNECTIVITY_RESTORED_DATA_LOST:
                self._market.resubscribe()
            if self._ib_link_lost and self.ib.isConnected() and not self._connecting:
                self._ib_link_lost = False
                self._orders.resync(self.config.client_id)
                self._refresh_caches()
                self._connected = True
                listener.on_connection_changed(True, text)
            return
        state = farm_state(code)
        if state is FarmState.BROKEN:
            self._broken_farms.add(code)
            listener.on_broker_error(code, text, None)
            return
        if state is FarmState.OK:
            if self._broken_farms:
                self._broken_farms.clear()
                listener.on_broker_error(code, text, None)
            else:
                logger.info("{text}", text=text)
            return
        symbol = self._market.symbol_of(contract.conId) if contract is not None else None
        if is_warning(code) and symbol is None:
            logger.info("IB message {code}: {message}", code=code, message=message)
            return
        listener.on_broker_error(code, f"{symbol}: {text}" if symbol else text, None)

    # ------------------------------------------------------------- market data
    def subscribe_quotes(self, symbols: Sequence[str]) -> None:
        for symbol in symbols:
            if symbol not in self.config.symbols:
                self._require_listener().on_broker_error(
                    NO_SECURITY_DEFINITION,
                    f"{symbol}: not among SYMBOLS ({', '.join(self.config.symbols)}), "
                    "so it was not looked up at IB; add it to SYMBOLS",
                    None,
                )
                continue
            if symbol not in self._wanted:
                self._wanted.append(symbol)
            contract = self._contracts.get(symbol)
            if self._connected and contract is not None:
                self._market.subscribe(symbol, contract)
        # Not connected yet: the subscription is made by _synchronise() on connect.

    # ------------------------------------------------------------- orders
    def place_order(self, order: Order) -> None:
        contract = self._contract_for(order)
        if contract is not None:
            self._orders.place(order, contract)

    def place_bracket(self, parent: Order, children: Sequence[Order]) -> None:
        """Parent and children in one go: parent ``transmit=False``, each child with the
        parent's ``parentId`` and the OCA group, the last child ``transmit=True``."""
        contract = self._contract_for(parent, *children)
        if contract is None:
            return
        if children:
            self._orders.place_bracket(parent, children, contract)
        else:
            self._orders.place(parent, contract)

    def modify_order(self, order: Order) -> None:
        """The working order of the same client order id, re-sent with ``order``'s
        quantity and prices; while disconnected refused locally (code 504)."""
        self._orders.modify(order, self._contracts.get(order.symbol), connected=self._connected)

    def _contract_for(self, *orders: Order) -> Any:
        """The contract to send ``orders`` with, or None after refusing them locally."""
        contract = self._contracts.get(orders[0].symbol)
        if self.config.readonly:
            refusal: tuple[str, int | None] = ("IB_READONLY=true: orders are not sent to IB", None)
        elif not self._connected:
            refusal = (f"not sent: {self.last_failure or 'not connected to IB'}", NOT_CONNECTED)
        elif contract is None:
            refusal = (
                f"{orders[0].symbol} is not among SYMBOLS, so IB has no contract for it",
                NO_SECURITY_DEFINITION,
            )
        else:
            return contract
        for order in orders:
            self._orders.reject_now(order, *refusal)
        return None

    def cancel_order(self, client_order_id: str) -> None:
        self._orders.cancel(client_order_id, connected=self._connected)

    def order_states(self) -> dict[str, BrokerOrderState]:
        """Our orders IB knows this session (open and completed), by client order id."""
        return self._orders.order_states(self.config.client_id)

    def executions(self) -> list[Fill]:
        """Today's executions of our orders as IB reports them (missed ones included)."""
        return self._orders.executions(self.config.client_id)

    # ------------------------------------------------------------- account
    def _refresh_caches(self) -> None:
        if not self.ib.isConnected():
            return  # keep the last known values while disconnected
        positions: dict[str, int] = {}
        for p in self.ib.positions(self._account):
            if p.contract.secType == "STK" and p.position:
                symbol = p.contract.symbol
                positions[symbol] = positions.get(symbol, 0) + round(p.position)
        self._positions = {s: q for s, q in positions.items() if q}
        values: dict[str, float] = {}
        for v in self.ib.accountValues(self._account):
            if v.currency in ("USD", "BASE") and not v.modelCode:
                with contextlib.suppress(ValueError):
                    values.setdefault(v.tag, float(v.value))
        if values:
            self._account_values = AccountValues(
                account_id=self._account,
                cash=values.get("TotalCashValue", math.nan),
                net_liquidation=values.get("NetLiquidation", math.nan),
                buying_power=values.get("BuyingPower", math.nan),
            )

    def positions(self) -> dict[str, int]:
        """From ib_async's position cache (kept live by IB); last known while disconnected."""
        if self._connected:
            self._refresh_caches()
        return dict(self._positions)

    def account_values(self) -> AccountValues:
        if self._connected:
            self._refresh_caches()
        return self._account_values
