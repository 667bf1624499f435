"""A fake TWS / IB Gateway that speaks the API socket protocol over loopback.

The real ``ib_async`` client connects to it exactly as it would to TWS: the
``API\\0`` + version-range handshake, a length-prefixed server-version reply,
then 4-byte big-endian length-prefixed messages whose fields are NUL-terminated.
Every outgoing message's field layout follows ``ib_async/decoder.py`` for the
server version announced here (178, ib_async 2.1's ``MaxClientVersion``);
every incoming message is parsed after ``ib_async/client.py``.

Scripting API for tests (all synchronous unless noted; call from the loop the
server runs on):

    tws = FakeTws(); await tws.start(); tws.port
    tws.push_tick("AAPL", bid=.., ask=.., last=..)   # streaming ticks
    tws.stall("AAPL"); tws.unstall("AAPL")           # stream goes quiet, snapshots still work
    tws.fill(order_id, qty, price)                   # (partial) execution
    tws.trade("AAPL", 185.0)                         # a print: triggers stops, reaches limits
    tws.new_day()                                    # DAY orders expire, GTC ones rest on
    tws.deactivate(order_id)                         # IB makes an order Inactive
    tws.reject_next_modify(201, "...")               # next modification is refused
    tws.drop_connections()                           # like TWS closing the socket
    tws.book_execution_while_disconnected(...)       # fill that no client sees live
    tws.set_position("AAPL", 100)                    # broker-side position change
    tws.send_error(code, message, req_id=-1)
    tws.refuse_client_id(1)                          # answer startApi with 326
    tws.reject_next_order(201, "...")                # next placeOrder is rejected
    tws.swallow_next_order()                         # next placeOrder is lost in transit
    tws.enforce_history_pacing = True                # refuse reqHistoricalData like IB (162)
    tws.refuse_history(3)                            # refuse the next 3 with a pacing violation
    await tws.stop()

Orders as TWS handles them (tws-api order_submission.html, bracket_order.html, oca.html,
modifying_orders.html; message codes from message_codes.html):

- Types MKT, LMT, STP (``auxPrice`` = stop), STP LMT; tif DAY or GTC. A stop rests
  PreSubmitted until the last price reaches it (buy: last >= stop, sell: last <= stop;
  ``push_tick(last=...)`` and ``trade()`` move the last price), then works as a market
  order (filled at the touch, or at the ``trade()`` price that triggered it) or, for
  STP LMT, as a limit order.
- ``transmit=False`` orders are held by TWS (no status) until an order with
  ``transmit=True`` sends them: the last child of a bracket sends its parent and its
  siblings. Children (``parentId``) rest PreSubmitted until their parent fills; each
  parent fill releases them for what it filled (a partial fill sizes them to it).
  Cancelling a parent that has not filled cancels its children.
- OCA groups (``ocaGroup``, ``ocaType``): a fill of one member cancels the others
  (type 1) or reduces them by as much (types 2, 3; cancelled at zero). Bracket children
  without an ``ocaGroup`` are not grouped: that is the client's to ask for.
- placeOrder with the orderId of an open order of the same client modifies it (size,
  prices, tif), answered with openOrder + orderStatus. Refused, the order works as
  before: a filled one 104, a finished one 103, another action or contract 105,
  another order type 329, another OCA group 201 "OCA group revision is not allowed"
  (reported against IB by nautilus_trader issue 2978), a ``parentId`` naming a parent
  that is no longer open 135 "Can't find order with id" (ib_insync issue 647: a
  bracket child modified after its parent filled).
- Orders outlive their client's connection (a console restart): reqOpenOrders gives a
  client back its open orders of earlier sessions with orderRef, type, prices, tif
  (only that client id: reqAllOpenOrders lists everyone's). ``new_day()`` expires DAY
  orders and forgets the executions reqExecutions reports.
- ``tws.modifications`` lists every modification received (orderId, fields).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SERVER_VERSION = 178
DEFAULT_PRICES: dict[str, tuple[float, float, float]] = {
    "AAPL": (189.98, 190.02, 190.00),
    "MSFT": (409.95, 410.05, 410.00),
    "SPY": (474.99, 475.01, 475.00),
    "NVDA": (499.90, 500.10, 500.00),
    "AMZN": (154.97, 155.03, 155.00),
}
COMMISSION_PER_SHARE = 0.005
COMMISSION_MIN = 1.0
# IB's error 162 texts (https://interactivebrokers.github.io/tws-api/message_codes.html,
# historical_limitations.html): a pacing violation cancels the request; a request with no
# bars (weekend, holiday, before the open) ends with "no data".
HMDS_ERROR = 162
PACING_VIOLATION_TEXT = (
    "Historical Market Data Service error message:Historical data request pacing violation"
)
NO_DATA_TEXT = "Historical Market Data Service error message:HMDS query returned no data: "

# Incoming message ids (ib_async/client.py).
IN_REQ_MKT_DATA = 1
IN_CANCEL_MKT_DATA = 2
IN_PLACE_ORDER = 3
IN_CANCEL_ORDER = 4
IN_REQ_OPEN_ORDERS = 5
IN_REQ_ACCOUNT_UPDATES = 6
IN_REQ_EXECUTIONS = 7
IN_REQ_IDS = 8
IN_REQ_CONTRACT_DETAILS = 9
IN_REQ_ALL_OPEN_ORDERS = 16
IN_REQ_HISTORICAL_DATA = 20
IN_CANCEL_HISTORICAL_DATA = 25
IN_REQ_CURRENT_TIME = 49
IN_REQ_MARKET_DATA_TYPE = 59
IN_REQ_POSITIONS = 61
IN_REQ_ACCOUNT_SUMMARY = 62
IN_START_API = 71
IN_REQ_ACCOUNT_UPDATES_MULTI = 76
IN_REQ_COMPLETED_ORDERS = 99

# Tick types (TWS API tick_types).
TICK_BID_SIZE, TICK_BID, TICK_ASK, TICK_ASK_SIZE, TICK_LAST, TICK_LAST_SIZE = 0, 1, 2, 3, 4, 5


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def encode(*fields: object) -> bytes:
    """One API message: 4-byte big-endian length, then each field NUL-terminated."""
    payload = b"".join(_text(f).encode() + b"\0" for f in fields)
    return struct.pack(">I", len(payload)) + payload


def _ib_time(ts: datetime) -> str:
    # parseIBDatetime: "YYYYmmdd HH:MM:SS <zone>" (two spaces) carries its own timezone.
    return ts.astimezone(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


@dataclass
class FakeOrder:
    order_id: int
    client_id: int
    perm_id: int
    symbol: str
    con_id: int
    action: str  # BUY / SELL
    quantity: float
    order_type: str  # MKT / LMT / STP / STP LMT
    limit_price: float | None
    order_ref: str
    account: str
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_price: float = 0.0
    last_fill_price: float = 0.0
    aux_price: float | None = None  # the stop price
    tif: str = "DAY"
    oca_group: str = ""
    oca_type: int = 0
    parent_id: int = 0
    transmitted: bool = True  # False: held by TWS (transmit=False) until its bracket goes
    active: bool = True  # False: a bracket child waiting for its parent's fill
    triggered: bool = False  # a stop whose price has been reached

    @property
    def remaining(self) -> float:
        return self.quantity - self.filled

    @property
    def is_open(self) -> bool:
        return self.transmitted and self.status in ("PreSubmitted", "Submitted", "PendingCancel")

    @property
    def is_stop(self) -> bool:
        return self.order_type in ("STP", "STP LMT")

    @property
    def working(self) -> bool:
        """Open and able to execute (not a child still waiting for its parent)."""
        return self.is_open and self.active


@dataclass
class FakeExecution:
    exec_id: str
    order: FakeOrder
    shares: float
    price: float
    time: datetime
    cum_qty: float
    avg_price: float
    commission: float


@dataclass
class _Session:
    writer: asyncio.StreamWriter
    client_id: int = -1
    ready: bool = False
    streams: dict[int, str] = field(default_factory=dict)  # reqId -> symbol (streaming)
    wants_positions: bool = False
    account_updates: str = ""  # account subscribed with reqAccountUpdates
    received: list[list[str]] = field(default_factory=list)

    def send(self, *fields: object) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(*fields))


class FakeTws:
    """An in-process TWS stand-in; see the module docstring for the scripting API."""

    def __init__(
        self,
        *,
        accounts: Iterable[str] = ("DU1234567",),
        prices: dict[str, tuple[float, float, float]] | None = None,
        auto_fill_market: bool = True,
        first_order_id: int = 1,
        server_version: int = SERVER_VERSION,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.accounts = tuple(accounts)
        # Execution times come from here: tests pass their SimClock's now.
        self.now = now or (lambda: datetime.now(UTC))
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        self.con_ids = {symbol: 265598 + i * 1000 for i, symbol in enumerate(self.prices)}
        self.auto_fill_market = auto_fill_market
        self.server_version = server_version
        self.next_order_id = first_order_id
        self.orders: list[FakeOrder] = []
        self.executions: list[FakeExecution] = []
        self.positions: dict[tuple[str, str], tuple[float, float]] = {}  # (acct, sym) -> qty, avg
        self.cash = 1_000_000.0
        self.stalled: set[str] = set()
        self.refused_client_ids: set[int] = set()
        self.sessions: list[_Session] = []
        self.messages: list[list[str]] = []  # every request received, in order
        self.connections = 0
        self._next_perm_id = 900_001
        self._next_exec = 1
        self._reject_next: tuple[int, str] | None = None
        self._reject_next_modify: tuple[int, str] | None = None
        self.modifications: list[tuple[int, list[str]]] = []  # (orderId, placeOrder fields)
        self._swallow_next = False
        self.send_commissions = True  # False: IB is late with commission reports
        # IB's historical pacing, on ``now``: an identical request within 15 s, or the 6th
        # request for one contract within 2 s, is refused with 162 (every request counts).
        self.enforce_history_pacing = False
        self.history_log: list[tuple[datetime, str, str]] = []  # (now, contract, request)
        self.history_refusals: list[tuple[str, str]] = []  # (request, reason) refused
        self._refuse_history = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self, port: int = 0) -> FakeTws:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def close_listener(self) -> None:
        """Stop accepting connections (TWS shut down) but keep the script state."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def reopen(self) -> None:
        """Listen again on the same port (TWS restarted)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    @property
    def ready_sessions(self) -> list[_Session]:
        return [s for s in self.sessions if s.ready]

    # ------------------------------------------------------------------ scripting
    def primary_account(self) -> str:
        return self.accounts[0]

    def push_tick(
        self,
        symbol: str,
        *,
        bid: float | None = None,
        ask: float | None = None,
        last: float | None = None,
        bid_size: int = 100,
        ask_size: int = 100,
    ) -> None:
        """Move the market and stream it to subscribers (unless the symbol is stalled).

        A new ``last`` triggers the resting stops it reaches (filled at the touch)."""
        old_bid, old_ask, old_last = self.prices[symbol]
        new = (
            old_bid if bid is None else bid,
            old_ask if ask is None else ask,
            old_last if last is None else last,
        )
        self.prices[symbol] = new
        if symbol not in self.stalled:
            for session in self.ready_sessions:
                for req_id, sym in session.streams.items():
                    if sym == symbol:
                        self._send_quote(session, req_id, symbol, bid_size, ask_size)
        if last is not None:
            for order in [o for o in self.orders if o.symbol == symbol and o.is_stop]:
                if order.working and not order.triggered:
                    self._work(order, None)

    def trade(self, symbol: str, price: float) -> list[FakeExecution]:
        """A trade prints at ``price``: the quotes move to it (bid and ask a cent either
        side), resting stops it reaches trigger (a STP fills at ``price``, a STP LMT then
        works as a limit) and resting limits it reaches (buy: price <= limit, sell:
        price >= limit) fill at their limit. Returns the executions it caused."""
        before = len(self.executions)
        self._set_market(symbol, round(price - 0.01, 2), round(price + 0.01, 2), price)
        for order in [o for o in self.orders if o.symbol == symbol]:
            if order.working:
                self._work(order, price)
        return self.executions[before:]

    def _set_market(self, symbol: str, bid: float, ask: float, last: float) -> None:
        """Move the market and stream it, without working any order."""
        self.prices[symbol] = (bid, ask, last)
        if symbol in self.stalled:
            return
        for session in self.ready_sessions:
            for req_id, sym in session.streams.items():
                if sym == symbol:
                    self._send_quote(session, req_id, symbol)

    def new_day(self) -> None:
        """A new trading day: open DAY orders expire (Cancelled), GTC orders rest on, and
        reqExecutions no longer reports the earlier day's executions."""
        for order in self.orders:
            if order.is_open and order.tif != "GTC":
                order.status = "Cancelled"
                self._tell(order)
                self._cancel_children(order)
        self.executions.clear()

    def deactivate(self, order_id: int, code: int = 0, message: str = "") -> None:
        """IB makes an open order Inactive (with error ``code`` first, when given)."""
        order = self.order(order_id)
        order.status = "Inactive"
        session = self._session_of(order.client_id)
        if session is not None:
            if code:
                self._error(session, order_id, code, message)
            self._send_order_status(session, order)

    def stall(self, symbol: str) -> None:
        self.stalled.add(symbol)

    def unstall(self, symbol: str) -> None:
        self.stalled.discard(symbol)

    def refuse_client_id(self, client_id: int) -> None:
        self.refused_client_ids.add(client_id)

    def accept_client_id(self, client_id: int) -> None:
        self.refused_client_ids.discard(client_id)

    def reject_next_order(self, code: int, message: str) -> None:
        self._reject_next = (code, message)

    def reject_next_modify(self, code: int, message: str) -> None:
        """The next modification (placeOrder of an open orderId) is refused with ``code``."""
        self._reject_next_modify = (code, message)

    def swallow_next_order(self) -> None:
        """The next placeOrder (an order or a modification) is lost on the way."""
        self._swallow_next = True

    def refuse_history(self, count: int) -> None:
        """Refuse the next ``count`` reqHistoricalData with a pacing violation (162)."""
        self._refuse_history = count

    def send_error(self, code: int, message: str, req_id: int = -1) -> None:
        for session in self.ready_sessions:
            self._error(session, req_id, code, message)

    def drop_connections(self) -> None:
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                session.writer.close()
        self.sessions.clear()

    def order(self, order_id: int | None = None, *, order_ref: str | None = None) -> FakeOrder:
        for o in reversed(self.orders):
            if (order_id is not None and o.order_id == order_id) or (
                order_ref is not None and o.order_ref == order_ref
            ):
                return o
        raise KeyError(f"no order {order_id or order_ref}")

    def fill(self, order_id: int, quantity: float, price: float) -> FakeExecution:
        """Execute ``quantity`` of an open order at ``price`` and tell its client (if any).

        A bracket parent's fill releases its children for as much; a fill of an OCA
        group's member cancels or reduces the others (see the module docstring)."""
        order = self.order(order_id)
        if not order.working or quantity <= 0 or quantity > order.remaining + 1e-9:
            raise ValueError(f"cannot fill {quantity} of {order}")
        total = order.filled + quantity
        order.avg_price = (order.avg_price * order.filled + price * quantity) / total
        order.filled = total
        order.last_fill_price = price
        order.status = "Filled" if order.remaining <= 1e-9 else "Submitted"
        exec_id = f"0000e0d5.{self._next_exec:08x}.01.01"
        self._next_exec += 1
        commission = max(COMMISSION_MIN, COMMISSION_PER_SHARE * quantity)
        execution = FakeExecution(
            exec_id,
            order,
            quantity,
            price,
            self.now(),
            order.filled,
            order.avg_price,
            commission,
        )
        self.executions.append(execution)
        signed = quantity if order.action == "BUY" else -quantity
        self.cash -= signed * price + commission
        self._move_position(order.account, order.symbol, signed, price)
        session = self._session_of(order.client_id)
        if session is not None:
            self._send_execution(session, -1, execution)
            self._send_order_status(session, order)
        self._release_children(order, quantity)
        self._apply_oca(order, quantity)
        return execution

    def _release_children(self, parent: FakeOrder, quantity: float) -> None:
        for child in self.orders:
            if child.parent_id != parent.order_id or child.client_id != parent.client_id:
                continue
            if not child.is_open:
                continue
            if child.active:
                child.quantity += quantity
            else:
                child.active = True
                child.quantity = child.filled + quantity
            if not child.is_stop:
                child.status = "Submitted"
            self._tell(child, open_order=True)
            self._work(child, None)

    def _apply_oca(self, order: FakeOrder, quantity: float) -> None:
        if not order.oca_group:
            return
        for other in self.orders:
            if other is order or other.oca_group != order.oca_group or not other.is_open:
                continue
            if other.account != order.account:
                continue
            if order.oca_type in (2, 3):
                other.quantity = max(other.filled, other.quantity - quantity)
            if order.oca_type not in (2, 3) or other.remaining <= 1e-9:
                other.status = "Cancelled"
                self._tell(other)
            else:
                self._tell(other, open_order=True)

    def _work(self, order: FakeOrder, trade_price: float | None) -> None:
        """Let a working order execute what the market allows: a stop triggers when the
        last price reaches it; a market order (or triggered STP) fills at the touch, or
        at ``trade_price``; a limit fills when the touch (or trade) reaches its limit."""
        bid, ask, last = self.prices[order.symbol]
        buy = order.action == "BUY"
        if order.is_stop and not order.triggered:
            stop = order.aux_price or 0.0
            if not (last >= stop if buy else last <= stop):
                return
            order.triggered = True
            order.status = "Submitted"
            self._tell(order)
        if trade_price is None and not self.auto_fill_market:
            return
        if order.order_type in ("MKT", "STP"):
            price = (ask if buy else bid) if trade_price is None else trade_price
            self.fill(order.order_id, order.remaining, price)
            return
        limit = order.limit_price
        if limit is None:
            return
        if trade_price is not None:
            if trade_price <= limit if buy else trade_price >= limit:
                self.fill(order.order_id, order.remaining, limit)
        elif ask <= limit if buy else bid >= limit:
            self.fill(order.order_id, order.remaining, ask if buy else bid)

    def _tell(self, order: FakeOrder, *, open_order: bool = False) -> None:
        """Send an order's state to its client, if connected (openOrder, then orderStatus)."""
        session = self._session_of(order.client_id)
        if session is None:
            return
        if open_order:
            self._send_open_order(session, order)
        self._send_order_status(session, order)

    def book_execution_while_disconnected(
        self, order_id: int, quantity: float, price: float
    ) -> FakeExecution:
        """A fill that happens while the order's client is not connected."""
        if self._session_of(self.order(order_id).client_id) is not None:
            raise RuntimeError("the order's client is still connected")
        return self.fill(order_id, quantity, price)

    def cancel_at_broker(self, order_id: int) -> None:
        """TWS cancels an order by itself (operator in TWS, end of day)."""
        order = self.order(order_id)
        order.status = "Cancelled"
        self._tell(order)
        self._cancel_children(order)

    def _cancel_children(self, parent: FakeOrder) -> None:
        """A parent cancelled before any fill takes its waiting children with it."""
        if parent.filled:
            return
        for child in self.orders:
            ours = child.parent_id == parent.order_id and child.client_id == parent.client_id
            if ours and child.is_open:
                child.status = "Cancelled"
                self._tell(child)

    def set_position(self, symbol: str, quantity: float, avg_cost: float | None = None) -> None:
        """Set the broker-side position directly (a trade made outside the console)."""
        account = self.primary_account()
        price = self.prices.get(symbol, (0.0, 0.0, 100.0))[2]
        self.positions[(account, symbol)] = (quantity, price if avg_cost is None else avg_cost)
        self._broadcast_position(account, symbol)

    def requests(self, msg_id: int) -> list[list[str]]:
        return [m for m in self.messages if m and m[0] == str(msg_id)]

    # ------------------------------------------------------------------ connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self.sessions.append(session)
        self.connections += 1
        try:
            if await reader.readexactly(4) != b"API\0":
                return
            (size,) = struct.unpack(">I", await reader.readexactly(4))
            await reader.readexactly(size)  # "v157..178": we answer with our version
            connect_time = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"
            session.send(self.server_version, connect_time)
            while True:
                (size,) = struct.unpack(">I", await reader.readexactly(4))
                payload = (await reader.readexactly(size)).decode()
                fields = payload.split("\0")[:-1]
                self.messages.append(fields)
                session.received.append(fields)
                self._handle(session, fields)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
            with contextlib.suppress(Exception):
                writer.close()

    def _session_of(self, client_id: int) -> _Session | None:
        for session in self.ready_sessions:
            if session.client_id == client_id:
                return session
        return None

    # ------------------------------------------------------------------ requests
    def _handle(self, s: _Session, f: list[str]) -> None:
        msg_id = int(f[0])
        handler: Callable[[_Session, list[str]], None] | None = {
            IN_START_API: self._on_start_api,
            IN_REQ_POSITIONS: self._on_req_positions,
            IN_REQ_OPEN_ORDERS: self._on_req_open_orders,
            IN_REQ_ALL_OPEN_ORDERS: self._on_req_all_open_orders,
            IN_REQ_COMPLETED_ORDERS: self._on_req_completed_orders,
            IN_REQ_ACCOUNT_UPDATES: self._on_req_account_updates,
            IN_REQ_ACCOUNT_UPDATES_MULTI: self._on_req_account_updates_multi,
            IN_REQ_ACCOUNT_SUMMARY: self._on_req_account_summary,
            IN_REQ_EXECUTIONS: self._on_req_executions,
            IN_REQ_CONTRACT_DETAILS: self._on_req_contract_details,
            IN_REQ_MKT_DATA: self._on_req_mkt_data,
            IN_CANCEL_MKT_DATA: self._on_cancel_mkt_data,
            IN_PLACE_ORDER: self._on_place_order,
            IN_CANCEL_ORDER: self._on_cancel_order,
            IN_REQ_HISTORICAL_DATA: self._on_req_historical_data,
            IN_REQ_IDS: lambda s, f: s.send(9, 1, self.next_order_id),
            IN_REQ_CURRENT_TIME: lambda s, f: s.send(49, 1, int(datetime.now(UTC).timestamp())),
        }.get(msg_id)
        if handler is not None:
            handler(s, f)
        # Anything else (market data type, cancels of finished requests) needs no answer.

    def _on_start_api(self, s: _Session, f: list[str]) -> None:
        # [71, 2, clientId, optCapab]
        client_id = int(f[2])
        if client_id in self.refused_client_ids or self._session_of(client_id) is not None:
            self._error(
                s,
                -1,
                326,
                "Unable to connect as the client id is already in use. "
                "Retry with a unique client id.",
            )
            s.writer.close()
            return
        s.client_id = client_id
        s.ready = True
        own = [o.order_id for o in self.orders if o.client_id == client_id]
        self.next_order_id = max([self.next_order_id, *(i + 1 for i in own)])
        s.send(9, 1, self.next_order_id)
        s.send(15, 1, ",".join(self.accounts))
        for code, text in (
            (2104, "Market data farm connection is OK:usfarm"),
            (2106, "HMDS data farm connection is OK:ushmds"),
            (2158, "Sec-def data farm connection is OK:secdefnj"),
        ):
            self._error(s, -1, code, text)

    def _on_req_positions(self, s: _Session, f: list[str]) -> None:
        s.wants_positions = True
        for (account, symbol), _ in self.positions.items():
            self._send_position(s, account, symbol)
        s.send(62, 1)

    def _on_req_open_orders(self, s: _Session, f: list[str]) -> None:
        for order in self.orders:
            if order.client_id == s.client_id and order.is_open:
                self._send_open_order(s, order)
                self._send_order_status(s, order)
        s.send(53, 1)

    def _on_req_all_open_orders(self, s: _Session, f: list[str]) -> None:
        for order in self.orders:
            if order.is_open:
                self._send_open_order(s, order)
                self._send_order_status(s, order)
        s.send(53, 1)

    def _on_req_completed_orders(self, s: _Session, f: list[str]) -> None:
        for order in self.orders:
            if order.transmitted and not order.is_open:
                self._send_completed_order(s, order)
        s.send(102)

    def _account_tags(self) -> list[tuple[str, str, str]]:
        gross = sum(abs(q) * self.prices[sym][2] for (_, sym), (q, _) in self.positions.items())
        net = sum(q * self.prices[sym][2] for (_, sym), (q, _) in self.positions.items())
        nlv = self.cash + net
        return [
            ("AccountType", "INDIVIDUAL", ""),
            ("NetLiquidation", f"{nlv:.2f}", "USD"),
            ("TotalCashValue", f"{self.cash:.2f}", "USD"),
            ("BuyingPower", f"{4 * nlv - gross:.2f}", "USD"),
            ("GrossPositionValue", f"{gross:.2f}", "USD"),
        ]

    def _on_req_account_updates(self, s: _Session, f: list[str]) -> None:
        # [6, 2, subscribe, acctCode]
        account = f[3]
        s.account_updates = account if f[2] == "1" else ""
        if not s.account_updates:
            return
        for tag, value, currency in self._account_tags():
            s.send(6, 2, tag, value, currency, account)
        for (acct, symbol), (qty, avg) in self.positions.items():
            if acct == account:
                price = self.prices[symbol][2]
                c = self._contract_fields(symbol)
                s.send(7, 8, c[0], c[1], c[2], "", 0.0, "", "", "NASDAQ", "USD", symbol, symbol,
                       qty, price, qty * price, avg, (price - avg) * qty, 0.0, account)  # fmt: skip
        s.send(8, 1, datetime.now(UTC).strftime("%H:%M"))
        s.send(54, 1, account)

    def _on_req_account_updates_multi(self, s: _Session, f: list[str]) -> None:
        # [76, 1, reqId, account, modelCode, ledgerAndNLV]
        req_id, account, model = int(f[2]), f[3], f[4]
        for tag, value, currency in self._account_tags():
            s.send(73, 1, req_id, account, model, tag, value, currency)
        s.send(74, 1, req_id)

    def _on_req_account_summary(self, s: _Session, f: list[str]) -> None:
        # [62, 1, reqId, group, tags]
        req_id = int(f[2])
        for account in self.accounts:
            for tag, value, currency in self._account_tags():
                s.send(63, 1, req_id, account, tag, value, currency)
        s.send(64, 1, req_id)

    def _on_req_executions(self, s: _Session, f: list[str]) -> None:
        # [7, 3, reqId, clientId, acctCode, time, symbol, secType, exchange, side]
        req_id = int(f[2])
        for execution in self.executions:
            if execution.order.client_id == s.client_id:
                self._send_execution(s, req_id, execution)
        s.send(55, 1, req_id)

    def _contract_fields(self, symbol: str) -> tuple[int, str, str]:
        return self.con_ids[symbol], symbol, "STK"

    def _on_req_contract_details(self, s: _Session, f: list[str]) -> None:
        # [9, 8, reqId, conId, symbol, secType, lastTrade, strike, right, multiplier,
        #  exchange, primaryExchange, currency, localSymbol, tradingClass, ...]
        req_id, symbol, sec_type = int(f[2]), f[4], f[5]
        if symbol not in self.con_ids or sec_type not in ("STK", ""):
            self._error(s, req_id, 200, "No security definition has been found for the request")
            return
        exchange = f[10] or "SMART"
        primary = f[11] or "NASDAQ"
        s.send(
            10, req_id, symbol, "STK", "", 0.0, "", exchange, "USD", symbol, "NMS", symbol,
            self.con_ids[symbol], 0.01, "", "ACTIVETIM,LMT,MKT", "SMART,NASDAQ,NYSE", 1, 0,
            f"{symbol} INC", primary, "", "Technology", "Computers", "Computers",
            "US/Eastern", "20260105:0400-20260105:2000", "20260105:0930-20260105:1600",
            "", "", 0,  # evRule, evMultiplier, numSecIds
            1, "", "", "26,26", "", "COMMON", 1, 1, 1,
        )  # fmt: skip
        s.send(52, 1, req_id)

    # ------------------------------------------------------------------ market data
    def _send_quote(
        self, s: _Session, req_id: int, symbol: str, bid_size: int = 100, ask_size: int = 100
    ) -> None:
        bid, ask, last = self.prices[symbol]
        # tickPrice: [1, version, reqId, tickType, price, size, attrMask]
        s.send(1, 6, req_id, TICK_BID, bid, bid_size, 0)
        s.send(1, 6, req_id, TICK_ASK, ask, ask_size, 0)
        s.send(1, 6, req_id, TICK_LAST, last, 1, 0)

    def _on_req_mkt_data(self, s: _Session, f: list[str]) -> None:
        # [1, 11, reqId, conId, symbol, secType, ..., tradingClass(14), dnc(15),
        #  genericTickList(16), snapshot(17), regulatorySnapshot(18), options(19)]
        req_id, symbol, snapshot = int(f[2]), f[4], f[17] == "1"
        if symbol not in self.prices:
            self._error(s, req_id, 200, "No security definition has been found for the request")
            return
        if snapshot:
            self._send_quote(s, req_id, symbol)
            s.send(57, 1, req_id)
            return
        s.streams[req_id] = symbol
        if symbol not in self.stalled:
            self._send_quote(s, req_id, symbol)

    def _on_cancel_mkt_data(self, s: _Session, f: list[str]) -> None:
        s.streams.pop(int(f[2]), None)

    def _on_req_historical_data(self, s: _Session, f: list[str]) -> None:
        # [20, reqId, contract(2..13), includeExpired, endDateTime, barSize, duration,
        #  useRTH, whatToShow, formatDate, keepUpToDate, chartOptions]
        req_id, symbol = int(f[1]), f[3]
        end_text, bar_size, duration, format_date = f[15], f[16], f[17], f[20]
        if symbol not in self.prices:
            self._error(s, req_id, 200, "No security definition has been found for the request")
            return
        end = (
            datetime.strptime(end_text[:17], "%Y%m%d %H:%M:%S").replace(tzinfo=UTC)
            if end_text
            else datetime.now(UTC)
        )
        request = "|".join((symbol, end_text, bar_size, duration, f[18], f[19]))
        refusal = self._history_refusal(symbol, request)
        if refusal is not None:
            self.history_refusals.append((request, refusal))
            self._error(s, req_id, HMDS_ERROR, PACING_VIOLATION_TEXT)
            return
        bars = list(_history_bars(self.prices[symbol][2], end, duration, bar_size))
        if not bars:
            self._error(s, req_id, HMDS_ERROR, NO_DATA_TEXT + f"{symbol} {end_text}")
            return
        fields: list[object] = [17, req_id, "", "", len(bars)]
        for ts, o, h, low, c, v in bars:
            date = str(int(ts.timestamp())) if format_date == "2" else ts.strftime("%Y%m%d")
            fields += [date, o, h, low, c, v, (h + low) / 2, 10]
        s.send(*fields)

    def _history_refusal(self, symbol: str, request: str) -> str | None:
        now = self.now()
        earlier = list(self.history_log)
        self.history_log.append((now, symbol, request))
        if self._refuse_history > 0:
            self._refuse_history -= 1
            return "scripted"
        if not self.enforce_history_pacing:
            return None
        if any(r == request and (now - t).total_seconds() < 15 for t, _, r in earlier):
            return "identical request within 15 s"
        recent = [t for t, c, _ in earlier if c == symbol and (now - t).total_seconds() < 2]
        if len(recent) >= 5:
            return "6th request for the contract within 2 s"
        return None

    # ------------------------------------------------------------------ orders
    def _on_place_order(self, s: _Session, f: list[str]) -> None:
        # [3, orderId, contract(2..13), secIdType, secId, action(16), totalQuantity(17),
        #  orderType(18), lmtPrice(19), auxPrice(20), tif(21), ocaGroup(22), account(23),
        #  openClose, origin, orderRef(26), transmit(27), parentId(28), blockOrder,
        #  sweepToFill, displaySize, triggerMethod, outsideRth, hidden(34), "", discretionary,
        #  goodAfterTime, goodTillDate, faGroup, faMethod, faPercentage(41), modelCode,
        #  shortSaleSlot, designatedLocation, exemptCode(45), ocaType(46), ...]
        order_id, symbol = int(f[1]), f[3]
        if self._swallow_next:
            self._swallow_next = False
            return
        existing = self._own_order(s.client_id, order_id)
        if existing is not None and existing.transmitted:
            self._on_modify(s, existing, f)
            return
        if self._reject_next is not None:
            code, text = self._reject_next
            self._reject_next = None
            self._error(s, order_id, code, text)
            return
        if symbol not in self.prices:
            self._error(s, order_id, 200, "No security definition has been found for the request")
            return
        order = FakeOrder(
            order_id=order_id,
            client_id=s.client_id,
            perm_id=self._next_perm_id,
            symbol=symbol,
            con_id=self.con_ids[symbol],
            action=f[16],
            quantity=float(f[17]),
            order_type=f[18],
            limit_price=float(f[19]) if f[19] else None,
            order_ref=f[26],
            account=f[23] or self.primary_account(),
            aux_price=float(f[20]) if f[20] else None,
            tif=f[21] or "DAY",
            oca_group=f[22],
            oca_type=int(f[46] or 0),
            parent_id=int(f[28] or 0),
            transmitted=False,
        )
        self._next_perm_id += 1
        self.next_order_id = max(self.next_order_id, order_id + 1)
        self.orders.append(order)
        if f[27] != "1":
            return  # transmit=False: TWS holds it until its bracket is transmitted
        held = [
            o
            for o in self.orders
            if o.client_id == s.client_id
            and not o.transmitted
            and o is not order
            and order.parent_id
            and (o.order_id == order.parent_id or o.parent_id == order.parent_id)
        ]
        group = [*sorted(held, key=lambda o: o.parent_id != 0), order]  # the parent first
        for o in group:
            self._transmit(s, o)
        for o in group:  # then they execute what the market allows
            if o.working:
                self._work(o, None)

    def _transmit(self, s: _Session, order: FakeOrder) -> None:
        order.transmitted = True
        parent = self._own_order(order.client_id, order.parent_id) if order.parent_id else None
        if parent is not None and not parent.filled:
            order.active = False  # a child: rests until its parent fills
        self._send_open_order(s, order)
        self._send_order_status(s, order)
        if not order.active or order.is_stop:
            return  # PreSubmitted: waiting for the parent, or for the stop's trigger
        order.status = "Submitted"
        self._send_open_order(s, order)
        self._send_order_status(s, order)

    def _on_modify(self, s: _Session, order: FakeOrder, f: list[str]) -> None:
        order_id = order.order_id
        self.modifications.append((order_id, f))
        refusal: tuple[int, str] | None = None
        parent_id = int(f[28] or 0)
        parent = self._own_order(order.client_id, parent_id) if parent_id else None
        if self._reject_next_modify is not None:
            refusal, self._reject_next_modify = self._reject_next_modify, None
        elif order.status == "Filled":
            refusal = (104, "Cannot modify a filled order.")
        elif not order.is_open:
            refusal = (103, "Duplicate order id")
        elif f[16] != order.action or f[3] != order.symbol:
            refusal = (105, "Order being modified does not match original order.")
        elif f[18] != order.order_type:
            refusal = (329, "Order modify failed. Cannot change to the new order type.")
        elif f[22] != order.oca_group:
            refusal = (201, "Order rejected - reason:OCA group revision is not allowed.")
        elif parent_id and (parent is None or not parent.is_open):
            refusal = (135, f"Can't find order with id ={parent_id}")
        if refusal is not None:
            self._error(s, order_id, *refusal)
            return
        order.quantity = float(f[17])
        order.limit_price = float(f[19]) if f[19] else None
        order.aux_price = float(f[20]) if f[20] else None
        order.tif = f[21] or order.tif
        self._send_open_order(s, order)
        self._send_order_status(s, order)
        if order.working:
            self._work(order, None)

    def _own_order(self, client_id: int, order_id: int) -> FakeOrder | None:
        for o in reversed(self.orders):
            if o.order_id == order_id and o.client_id == client_id:
                return o
        return None

    def _on_cancel_order(self, s: _Session, f: list[str]) -> None:
        # [4, 1, orderId, manualCancelOrderTime]
        order_id = int(f[2])
        try:
            order = self.order(order_id)
        except KeyError:
            order = None
        if order is None or order.client_id != s.client_id:
            self._error(
                s,
                order_id,
                10147,
                f"OrderId {order_id} that needs to be cancelled is not found.",
            )
            return
        if not order.is_open:
            self._error(
                s,
                order_id,
                161,
                f"Cancel attempted when order is not in a cancellable state. "
                f"Order permId = {order.perm_id}",
            )
            return
        order.status = "Cancelled"
        self._send_order_status(s, order)
        self._error(s, order_id, 202, "Order Canceled - reason:")
        self._cancel_children(order)

    # ------------------------------------------------------------------ positions
    def _move_position(self, account: str, symbol: str, signed: float, price: float) -> None:
        qty, avg = self.positions.get((account, symbol), (0.0, 0.0))
        new = qty + signed
        if new == 0:
            avg = 0.0
        elif qty == 0 or (qty > 0) != (new > 0):
            avg = price
        elif abs(new) > abs(qty):
            avg = (avg * abs(qty) + price * abs(signed)) / abs(new)
        self.positions[(account, symbol)] = (new, avg)
        self._broadcast_position(account, symbol)

    def _broadcast_position(self, account: str, symbol: str) -> None:
        for session in self.ready_sessions:
            if session.wants_positions:
                self._send_position(session, account, symbol)

    def _send_position(self, s: _Session, account: str, symbol: str) -> None:
        qty, avg = self.positions[(account, symbol)]
        con_id, sym, sec_type = self._contract_fields(symbol)
        # position: [61, 3, account, conId, symbol, secType, lastTrade, strike, right,
        #            multiplier, exchange, currency, localSymbol, tradingClass, pos, avgCost]
        s.send(61, 3, account, con_id, sym, sec_type, "", 0.0, "", "", "NASDAQ", "USD", sym, sym,
               qty, avg)  # fmt: skip

    # ------------------------------------------------------------------ outgoing
    def _error(self, s: _Session, req_id: int, code: int, message: str) -> None:
        # error: [4, 2, reqId, code, message, advancedOrderRejectJson (server >= 166)]
        s.send(4, 2, req_id, code, message, "")

    def _send_order_status(self, s: _Session, o: FakeOrder) -> None:
        # orderStatus: [3, orderId, status, filled, remaining, avgFillPrice, permId,
        #               parentId, lastFillPrice, clientId, whyHeld, mktCapPrice]
        why_held = "" if o.active else "child"
        s.send(3, o.order_id, o.status, o.filled, o.remaining, o.avg_price, o.perm_id,
               o.parent_id, o.last_fill_price, o.client_id, why_held, 0.0)  # fmt: skip

    def _order_core(self, o: FakeOrder) -> list[object]:
        lmt = o.limit_price if o.limit_price is not None else ""
        aux = o.aux_price if o.aux_price is not None else ""
        return [o.action, o.quantity, o.order_type, lmt, aux, o.tif, o.oca_group, o.account, "O",
                0, o.order_ref]  # fmt: skip

    def _send_open_order(self, s: _Session, o: FakeOrder) -> None:
        # Field order: ib_async decoder.openOrder for server version 178.
        c = self._contract_fields(o.symbol)
        fields: list[object] = [5, o.order_id, c[0], c[1], c[2], "", 0.0, "", "", "SMART",
                                "USD", o.symbol, o.symbol]  # fmt: skip
        fields += self._order_core(o)
        fields += [o.client_id, o.perm_id, 0, 0, 0.0, "", "", "", "", ""]
        # modelCode .. deltaNeutralAuxPrice (29): ocaType is the 20th, parentId the 24th
        fields += ["", "", "", "", "", 0, "", 0, 0, "", "", "", "", "", "", 0, 0, 0, "",
                   o.oca_type, 0, 0, "", o.parent_id, 0, "", 0, "", ""]  # fmt: skip
        fields += [0, 0, "", "", "", "", ""]  # continuousUpdate .. comboLegsDescrip
        fields += [0, 0, 0]  # combo legs, order combo legs, smart combo params
        fields += ["", "", ""]  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        fields += [""]  # hedgeType
        fields += [0, "", "", 0, 0]  # optOutSmartRouting, clearing*, notHeld, dnc present
        fields += [""]  # algoStrategy
        fields += [0, 0, o.status] + [""] * 12 + ["", "", 0, 0]  # solicited .. randomizePrice
        fields += [0]  # conditions
        fields += ["", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, "", 0]
        fields += ["", "", ""]  # duration, postToAts, autoCancelParent
        fields += ["", "", "", "", ""]  # minTradeQty .. midOffsetAtHalf
        s.send(*fields)

    def _send_completed_order(self, s: _Session, o: FakeOrder) -> None:
        # Field order: ib_async decoder.completedOrder for server version 178.
        c = self._contract_fields(o.symbol)
        fields: list[object] = [101, c[0], c[1], c[2], "", 0.0, "", "", "SMART", "USD",
                                o.symbol, o.symbol]  # fmt: skip
        fields += self._order_core(o)
        fields += [o.perm_id, 0, 0, 0.0, "", "", "", ""]
        # modelCode .. deltaNeutralAuxPrice (23): ocaType is the 18th
        fields += ["", "", "", "", "", 0, "", "", "", "", "", "", "", "", 0, 0, "", o.oca_type,
                   0, "", 0, "", ""]  # fmt: skip
        fields += [0, 0, "", "", ""]  # continuousUpdate .. comboLegsDescrip
        fields += [0, 0, 0]
        fields += ["", "", ""]
        fields += [""]  # hedgeType
        fields += ["", "", 0, 0]  # clearingAccount, clearingIntent, notHeld, dnc present
        fields += [""]  # algoStrategy
        fields += [0, o.status, 0, 0]  # solicited, status, randomizeSize, randomizePrice
        fields += [0]  # conditions
        fields += ["", "", "", 0, 0, "", o.filled, 0, 0, "", 0, 0, 0, "", o.status]
        fields += ["", "", "", "", ""]
        s.send(*fields)

    def _send_execution(self, s: _Session, req_id: int, e: FakeExecution) -> None:
        # execDetails (server 178): [11, reqId, orderId, contract(11), execId, time,
        #   acctNumber, exchange, side, shares, price, permId, clientId, liquidation,
        #   cumQty, avgPrice, orderRef, evRule, evMultiplier, modelCode, lastLiquidity,
        #   pendingPriceRevision]
        o = e.order
        c = self._contract_fields(o.symbol)
        side = "BOT" if o.action == "BUY" else "SLD"
        s.send(11, req_id, o.order_id, c[0], c[1], c[2], "", 0.0, "", "", "NASDAQ", "USD",
               o.symbol, o.symbol, e.exec_id, _ib_time(e.time), o.account, "NASDAQ", side,
               e.shares, e.price, o.perm_id, o.client_id, 0, e.cum_qty, e.avg_price,
               o.order_ref, "", "", "", 1, 0)  # fmt: skip
        # commissionReport: [59, 1, execId, commission, currency, realizedPNL, yield,
        #                    yieldRedemptionDate]
        if self.send_commissions:
            s.send(59, 1, e.exec_id, e.commission, "USD", "", "", "")


def _history_bars(
    price: float, end: datetime, duration: str, bar_size: str
) -> Iterable[tuple[datetime, float, float, float, float, int]]:
    """Deterministic regular-hours bars (14:30-21:00 UTC, weekdays) in (end - duration, end]."""
    count, unit = duration.split()
    span = timedelta(days=int(count) * {"D": 1, "W": 7, "M": 30, "Y": 365}.get(unit, 1))
    n, what = bar_size.split()
    step = timedelta(
        seconds=int(n) * {"sec": 1, "min": 60, "hour": 3600, "day": 86400}[what.rstrip("s")]
    )
    begin = end - span
    day = begin.date()
    while day <= end.date():
        if day.weekday() < 5:
            ts = datetime(day.year, day.month, day.day, 14, 30, tzinfo=UTC)
            close = ts + timedelta(hours=6, minutes=30)
            i = 0
            while ts < close:
                if begin < ts <= end:
                    o = round(price + (i % 7) * 0.01, 2)
                    c = round(price + ((i + 3) % 7) * 0.01, 2)
                    yield ts, o, max(o, c) + 0.02, min(o, c) - 0.02, c, 100 + i
                ts += step
                i += 1
        day += timedelta(days=1)


class RecordingListener:
    """A BrokerListener that remembers everything, for adapter-level tests."""

    def __init__(self) -> None:
        self.quotes: list[Any] = []
        self.statuses: list[Any] = []
        self.fills: list[Any] = []
        self.errors: list[tuple[int, str, str | None]] = []
        self.connections: list[tuple[bool, str]] = []
        self.switches: list[tuple[str, Any, str]] = []

    def on_quote(self, quote: Any) -> None:
        self.quotes.append(quote)

    def on_order_status(self, update: Any) -> None:
        self.statuses.append(update)

    def on_fill(self, fill: Any) -> None:
        self.fills.append(fill)

    def on_broker_error(self, code: int, message: str, client_order_id: str | None) -> None:
        self.errors.append((code, message, client_order_id))

    def on_connection_changed(self, connected: bool, message: str) -> None:
        self.connections.append((connected, message))

    def on_feed_switched(self, symbol: str, source: Any, reason: str) -> None:
        self.switches.append((symbol, source, reason))

    def statuses_of(self, client_order_id: str) -> list[Any]:
        return [u.status for u in self.statuses if u.client_order_id == client_order_id]


async def wait_until(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    """Poll ``predicate`` on the loop (the fake and the client share it) until true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


class ThreadedTws:
    """The fake TWS on its own event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.tws = FakeTws()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedTws:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.tws.start(), self.loop).result(5)
        return self

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.loop.call_soon_threadsafe(lambda: fn(*args, **kwargs))

    def query(self, fn: Callable[[FakeTws], Any], timeout: float = 5.0) -> Any:
        """``fn(tws)`` run on the server's own loop (a consistent look at its books)."""

        async def ask() -> Any:
            return fn(self.tws)

        return asyncio.run_coroutine_threadsafe(ask(), self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.tws.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
