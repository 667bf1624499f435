"""The simulated venue's memory: every order and fill it has seen, in RAM and on disk.

In RAM (``OrderLedger``, ``FillLog``): the venue answers for every order and fill
of its life as a broker does (a reused client order id is refused, a late cancel
is "not cancellable (Filled)", ``order_states()`` and ``executions()`` list them
all for reconciliation). An order-heavy run finishes hundreds of thousands of
orders, so finished orders and fills are packed into byte rows (``struct``)
instead of being kept as objects: a finished order costs its id, a dict entry and
48 bytes, a fill 56 bytes; about 200 bytes for an order and its fill, where the
objects took 500.

On disk (``SimStateLog``): an append-only JSON-lines file, so the venue can stand
in for a broker that outlives us. One line per order the venue accepted (with its
type, prices, time in force, bracket parent and OCA group), per status change, per
fill, per stop triggered and per modification. Each line is flushed as written, so a
SIGKILL of the process loses nothing the venue had acknowledged; a line torn by the
kill is the only one that can be incomplete, and it is ignored on load (the venue had
not acted on it). ``restore`` rebuilds the RAM side from those lines on start.

What follows from a fill is not written but derived again on load by the rules the
venue applied (core.brokers.sim_book): a bracket parent's fill releases and sizes its
children, an OCA member's fill shrinks or cancels the others, a parent finished with
nothing filled cancels its children. So a kill between a fill and its consequences
cannot leave a file that says one without the other. Lines written before these
fields existed load with their defaults (market or limit, DAY, no parent, no group).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, ClassVar, TextIO, overload

from loguru import logger

from core.brokers.sim_account import SimAccount
from core.brokers.sim_book import (
    FIRST_BROKER_ORDER_ID,
    Book,
    VenueOrder,
    orphan_children,
    reduce_oca,
    release_children,
)
from core.model import BrokerOrderState, Fill, OrderStatus, OrderType, Side, TimeInForce

# json.dumps(record, separators=...) builds a new encoder on every call; this is the
# encoder it builds, made once (same output).
_encode = json.JSONEncoder(separators=(",", ":")).encode

EXEC_ID_PREFIX = "SIM-"


def exec_id_for(seq: int) -> str:
    """The venue's execution id of its ``seq``-th fill (unique: the journal de-duplicates by it)."""
    return f"{EXEC_ID_PREFIX}{seq:08d}"


def _exec_seq_of(exec_id: str) -> int | None:
    """The ``seq`` that ``exec_id_for`` made ``exec_id`` from; None for any other id."""
    digits = exec_id[len(EXEC_ID_PREFIX) :]
    if not (exec_id.startswith(EXEC_ID_PREFIX) and digits.isascii() and digits.isdigit()):
        return None
    seq = int(digits)
    return seq if exec_id_for(seq) == exec_id else None


_BUY, _SELL = _SIDES = (Side.BUY, Side.SELL)  # packed as 0 and 1
_MKT, _LMT, _STP, _STP_LMT = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT
_TYPES = (_MKT, _LMT, _STP, _STP_LMT)  # packed as 0..3
_TIFS = (TimeInForce.DAY, TimeInForce.GTC)  # 0, 1
# A finished order's row: meta (symbol code << 4 | tif << 3 | type << 1 | side),
# quantity, filled, broker id, limit price, stop price (NaN for none).
_ORDER_ROW = struct.Struct("<qqqqdd")
_BLANK_ORDER_ROW = bytes(_ORDER_ROW.size)
_NO_BROKER_ID = -1
_NO_PRICE = float("nan")
# Packing refuses what would not read back the same (an int beyond 64 bits, a str side).
_UNPACKABLE = (struct.error, OverflowError, TypeError, ValueError)


def _side_bit(side: Side) -> int:
    if side is _BUY:
        return 0
    if side is _SELL:
        return 1
    raise TypeError(f"not a Side: {side!r}")  # the caller keeps such a record whole


def _order_bits(order: VenueOrder) -> int:
    """tif << 3 | type << 1 | side of ``order``; TypeError for a value that is not a member."""
    kind = order.order_type
    # Runs for every finished order: comparisons, not a dict (an enum's hash is Python code).
    if kind is _MKT:
        code = 0
    elif kind is _LMT:
        code = 1
    elif kind is _STP:
        code = 2
    elif kind is _STP_LMT:
        code = 3
    else:
        raise TypeError(f"not an OrderType: {kind!r}")
    tif = order.tif
    if tif is not _TIFS[0] and tif is not _TIFS[1]:
        raise TypeError(f"not a TimeInForce: {tif!r}")
    return (tif is _TIFS[1]) << 3 | code << 1 | _side_bit(order.side)


def _packed_price(price: float | None) -> float:
    """A price as its row stores it (NaN for none); ValueError for one that would not read back."""
    if price is None:
        return _NO_PRICE
    if type(price) is not float or price != price:
        raise ValueError(price)  # an int, or NaN (which reads back as None)
    return price


def _unpacked_price(value: float) -> float | None:
    return None if value != value else value


class _Codes:
    """Small integer codes for the few distinct values of a field (symbols, time zones)."""

    def __init__(self) -> None:
        self.values: list[Any] = []  # the first value seen for each code
        self.known: dict[Hashable, int] = {}  # key -> code

    def code(self, value: Any, key: Hashable) -> int:
        """The code of ``value``; values with equal keys share a code and read back as one."""
        code = self.known.get(key)
        if code is None:
            code = self.known[key] = len(self.values)
            self.values.append(value)
        return code


def _zone_key(zone: tzinfo | None) -> Hashable:
    # Equal tzinfo objects behave the same, except that datetime.timezone compares
    # offsets only and also carries a name.
    name = zone.tzname(None) if isinstance(zone, timezone) else None
    return type(zone), zone, name


class OrderLedger:
    """Every order the venue has received, in arrival order; working ones whole, finished packed.

    Working orders (pending, submitted, partially filled) are ``VenueOrder`` objects in
    ``live``. When one finishes, its fields are packed into row ``order.row`` and only
    its id and final status stay in a dict. Row k belongs to the k-th id: dicts keep
    insertion order and ids are never removed. An order whose fields would not read
    back the same from a row (a 70-bit quantity, a broker id like "007") is kept whole.
    """

    def __init__(self) -> None:
        self.live: dict[str, VenueOrder] = {}
        # Every client order id -> its final status; None while the order works.
        self._final: dict[str, OrderStatus | None] = {}
        self._rows = bytearray()  # _ORDER_ROW by row; blank while the order works
        self._symbols = _Codes()
        self._whole: dict[int, VenueOrder] = {}  # finished orders whose fields do not pack

    def __len__(self) -> int:
        return len(self._final)

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._final

    def add(self, order: VenueOrder) -> None:
        """Take a new order; a client order id seen before is a ValueError."""
        client_order_id = order.client_order_id
        final = self._final
        if client_order_id in final:
            raise ValueError(f"duplicate client_order_id {client_order_id!r}")
        order.row = len(final)
        final[client_order_id] = None
        self.live[client_order_id] = order
        self._rows += _BLANK_ORDER_ROW

    def finish(self, order: VenueOrder) -> None:
        """``order`` reached a terminal status and will not change again: pack it."""
        row = order.row
        broker_id = order.broker_order_id
        try:
            broker_number = _NO_BROKER_ID if broker_id is None else int(broker_id)
            if broker_id is not None and (broker_number < 0 or str(broker_number) != broker_id):
                raise ValueError(broker_id)  # would not read back as the same string
            symbol = self._symbols.known.get(order.symbol)
            if symbol is None:
                symbol = self._symbols.code(order.symbol, order.symbol)
            meta = symbol << 4 | _order_bits(order)
            _ORDER_ROW.pack_into(
                self._rows,
                row * _ORDER_ROW.size,
                meta,
                order.quantity,
                order.filled,
                broker_number,
                _packed_price(order.limit_price),
                _packed_price(order.stop_price),
            )
        except _UNPACKABLE:
            self._whole[row] = order
        self._final[order.client_order_id] = order.status
        del self.live[order.client_order_id]

    def finished_status(self, client_order_id: str) -> OrderStatus | None:
        """The final status of a finished order; None for a working or unknown one."""
        return self._final.get(client_order_id)

    def states(self) -> dict[str, BrokerOrderState]:
        """What the venue knows of every order, in arrival order (``Broker.order_states``)."""
        states: dict[str, BrokerOrderState] = {}
        rows = self._rows
        symbols = self._symbols.values
        for row, (client_order_id, final) in enumerate(self._final.items()):
            if final is None:
                order = self.live[client_order_id]
            else:
                whole = self._whole.get(row)
                if whole is None:
                    meta, quantity, filled, broker_number, limit, stop = _ORDER_ROW.unpack_from(
                        rows, row * _ORDER_ROW.size
                    )
                    states[client_order_id] = BrokerOrderState(
                        client_order_id,
                        symbols[meta >> 4],
                        _SIDES[meta & 1],
                        quantity,
                        filled,
                        final,
                        None if broker_number == _NO_BROKER_ID else str(broker_number),
                        _TYPES[(meta >> 1) & 3],
                        _unpacked_price(stop),
                        _unpacked_price(limit),
                        _TIFS[(meta >> 3) & 1],
                    )
                    continue
                order = whole
            states[client_order_id] = _state_of(order)
        return states


def _state_of(order: VenueOrder) -> BrokerOrderState:
    return BrokerOrderState(
        order.client_order_id,
        order.symbol,
        order.side,
        order.quantity,
        order.filled,
        order.status,
        order.broker_order_id,
        order.order_type,
        order.stop_price,
        order.limit_price,
        order.tif,
    )


# A fill's row: exec seq, quantity, time (microseconds << 1 | fold),
# meta (symbol code << 16 | zone code << 1 | side), price, commission.
_FILL_ROW = struct.Struct("<qqqqdd")
_BLANK_FILL_ROW = bytes(_FILL_ROW.size)
_MICROSECOND = timedelta(microseconds=1)
_MAX_ZONES = 1 << 15
_NO_ZONE = object()


class FillLog(Sequence[Fill]):
    """Every fill of the venue, oldest first: a read-only list of Fill, stored packed.

    Reading gives Fill objects equal to the ones appended (rebuilt, so not the same
    objects). A fill whose fields do not pack exactly (an exec id of another form, a
    price that is not a float, a timestamp that is not a plain datetime) is kept whole.
    Times are stored as microseconds since 1970-01-01 on the fill's own clock face,
    with its ``fold`` and (a code for) its ``tzinfo``, so they come back identical;
    of equal tzinfo objects (a state file's reload can make one per line) the first one
    seen stands for all.
    """

    __hash__: ClassVar[None]  # type: ignore[assignment]

    def __init__(self) -> None:
        self._order_ids: list[str] = []
        self._rows = bytearray()  # _FILL_ROW by fill; blank for one kept whole
        self._symbols = _Codes()
        self._zones = _Codes()
        self._epochs: list[datetime] = []  # 1970-01-01 in each zone, by zone code
        self._whole: dict[int, Fill] = {}
        # Fills come from one clock, so their tzinfo is nearly always the last one's.
        self._last_zone: object = _NO_ZONE
        self._last_zone_code = 0
        self._last_epoch = datetime(1970, 1, 1)  # with the last zone's very tzinfo object

    def append(self, fill: Fill, exec_seq: int | None = None) -> None:
        """Add ``fill``; ``exec_seq`` when the caller made its id with ``exec_id_for(exec_seq)``."""
        index = len(self._order_ids)
        self._order_ids.append(fill.client_order_id)
        # Runs for every fill: the helpers' work is inlined (_Codes.code, _side_bit).
        try:
            seq = _exec_seq_of(fill.exec_id) if exec_seq is None else exec_seq
            ts, price, commission = fill.ts, fill.price, fill.commission
            if seq is None or type(ts) is not datetime:
                raise TypeError
            if type(price) is not float or type(commission) is not float:
                raise TypeError
            tz = ts.tzinfo
            if tz is not self._last_zone:
                zone = self._zones.code(tz, _zone_key(tz))
                if zone >= _MAX_ZONES:
                    raise ValueError(zone)
                epoch = datetime(1970, 1, 1, tzinfo=tz)
                if zone == len(self._epochs):
                    self._epochs.append(epoch)
                self._last_zone, self._last_zone_code, self._last_epoch = tz, zone, epoch
            # The same tzinfo object on both sides: clock-face arithmetic, no UTC offsets.
            micros = (ts - self._last_epoch) // _MICROSECOND
            symbol = self._symbols.known.get(fill.symbol)
            if symbol is None:
                symbol = self._symbols.code(fill.symbol, fill.symbol)
            side = fill.side
            if side is _BUY:
                meta = (symbol << 16) | (self._last_zone_code << 1)
            elif side is _SELL:
                meta = (symbol << 16) | (self._last_zone_code << 1) | 1
            else:
                raise TypeError(side)
            row = _FILL_ROW.pack(seq, fill.quantity, micros << 1 | ts.fold, meta, price, commission)
        except _UNPACKABLE:
            self._whole[index] = fill
            row = _BLANK_FILL_ROW
        self._rows += row

    def __len__(self) -> int:
        return len(self._order_ids)

    def _fill(self, index: int) -> Fill:
        whole = self._whole.get(index)
        if whole is not None:
            return whole
        seq, quantity, when, meta, price, commission = _FILL_ROW.unpack_from(
            self._rows, index * _FILL_ROW.size
        )
        ts = self._epochs[(meta >> 1) & (_MAX_ZONES - 1)] + timedelta(microseconds=when >> 1)
        if when & 1:
            ts = ts.replace(fold=1)
        return Fill(
            exec_id_for(seq),
            self._order_ids[index],
            self._symbols.values[meta >> 16],
            _SIDES[meta & 1],
            quantity,
            price,
            commission,
            ts,
        )

    @overload
    def __getitem__(self, index: int) -> Fill: ...

    @overload
    def __getitem__(self, index: slice) -> list[Fill]: ...

    def __getitem__(self, index: int | slice) -> Fill | list[Fill]:
        if isinstance(index, slice):
            return [self._fill(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        position = index + n if index < 0 else index
        if not 0 <= position < n:
            raise IndexError("fill index out of range")
        return self._fill(position)

    def __iter__(self) -> Iterator[Fill]:
        i = 0
        while i < len(self):  # like a list, sees fills appended while iterating
            yield self._fill(i)
            i += 1

    def __eq__(self, other: object) -> bool:
        # Compares like the list it replaces: equal to a list or FillLog of equal fills.
        if not isinstance(other, list | FillLog):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"FillLog({list(self)!r})"


class SimStateLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO | None = None

    def load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records: list[dict[str, Any]] = []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number != len(lines):
                    raise ValueError(f"{self.path}: line {number} is corrupt") from None
                logger.warning("sim state: ignoring a torn last line", path=str(self.path))
                self._truncate_torn_tail(lines[:-1])
        return records

    def _truncate_torn_tail(self, good_lines: list[str]) -> None:
        text = "".join(f"{line}\n" for line in good_lines)
        self.path.write_text(text, encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(_encode(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def record_order(self, order: VenueOrder) -> None:
        """The venue has received ``order`` (it is pending submit).

        The fields added for stops and brackets are written only when they differ from
        their defaults (a market DAY order's line is as it always was).
        """
        record = {
            "t": "order",
            "id": order.client_order_id,
            "symbol": order.symbol,
            "side": str(order.side),
            "qty": order.quantity,
            "type": str(order.order_type),
            "limit": order.limit_price,
        }
        if order.stop_price is not None:
            record["stop"] = order.stop_price
        if order.tif is not TimeInForce.DAY:
            record["tif"] = str(order.tif)
        if order.parent_id is not None:
            record["parent"] = order.parent_id
        if order.oca_group is not None:
            record["oca"] = order.oca_group
        self.append(record)

    def record_trigger(self, order_id: str) -> None:
        """A stop's trigger was reached: from now on it works as a market or limit order."""
        self.append({"t": "trigger", "id": order_id})

    def record_modify(
        self, order_id: str, quantity: int, stop: float | None, limit: float | None
    ) -> None:
        """A working order's quantity, stop and limit price after a modification."""
        self.append({"t": "modify", "id": order_id, "qty": quantity, "stop": stop, "limit": limit})

    def record_status(self, order_id: str, status: str, broker_id: str | None = None) -> None:
        """An order's new status (``"Submitted"`` carries the broker's order id)."""
        if broker_id is None:
            self.append({"t": "status", "id": order_id, "status": status})
        else:
            self.append({"t": "status", "id": order_id, "status": status, "broker_id": broker_id})

    def record_fill(self, fill: Fill, mid: float) -> None:
        """A fill, with the book's walk mid at the time so prices resume from it on restart."""
        self.append(
            {
                "t": "fill",
                "exec_id": fill.exec_id,
                "id": fill.client_order_id,
                "symbol": fill.symbol,
                "side": str(fill.side),
                "qty": fill.quantity,
                "price": fill.price,
                "commission": fill.commission,
                "ts": fill.ts.isoformat(),
                "mid": mid,
            }
        )


@dataclass(frozen=True, slots=True)
class Restored:
    """What ``restore`` hands back to the venue besides what it rebuilt in place."""

    next_broker_id: int  # the first broker order id not yet used
    exec_seq: int  # fills restored: the next fill's execution id follows on
    to_place: list[str]  # accepted orders not yet acted on, to queue again, oldest first
    children: dict[str, list[VenueOrder]]  # working bracket parent -> its children
    oca_groups: dict[str, list[VenueOrder]]  # group -> its members still working
    refused: dict[str, str]  # child orders not yet acted on, whose parent was not working


def link_child(
    child: VenueOrder, parent: VenueOrder | None, children: dict[str, list[VenueOrder]]
) -> str | None:
    """The venue has received ``child`` naming ``parent`` (None: an order it does not know,
    or one that finished): attach it, or say why it is to be refused.

    Attached to a working parent it is held until the parent fills, or works at once for
    what the parent has already filled. A child of a parent that is not working is
    refused when it reaches the venue (the reason returned).
    """
    parent_id = child.parent_id
    assert parent_id is not None
    if parent is None or parent.status.is_terminal:
        return f"parent order {parent_id} is not working: a bracket child needs a working parent"
    children.setdefault(parent_id, []).append(child)
    if parent.filled:
        child.quantity = parent.filled
    else:
        child.held = True
    return None


def restore(
    records: list[dict[str, Any]],
    orders: OrderLedger,
    fills: FillLog,
    books: Mapping[str, Book],
    account: SimAccount,
) -> Restored:
    """Rebuild orders, fills, cash and positions from the state file's ``records``.

    Fills ``orders``, ``fills`` and ``account``, puts working orders back on their
    ``books`` and moves each filled book's walk to where the venue left off.
    """
    by_id: dict[str, VenueOrder] = {}
    children: dict[str, list[VenueOrder]] = {}  # every bracket parent's children
    groups: dict[str, list[VenueOrder]] = {}  # every OCA group's members
    refused: dict[str, str] = {}
    exec_seq = 0
    for r in records:
        kind = r["t"]
        if kind == "order":
            order = _restore_order(r)
            by_id[order.client_order_id] = order
            if order.parent_id is not None:
                reason = link_child(order, by_id.get(order.parent_id), children)
                if reason is not None:
                    refused[order.client_order_id] = reason
            if order.oca_group is not None:
                groups.setdefault(order.oca_group, []).append(order)
        elif kind == "status":
            order = by_id[r["id"]]
            order.status = OrderStatus(r["status"])
            order.broker_order_id = r.get("broker_id") or order.broker_order_id
            if order.status.is_terminal and not order.filled:
                orphan_children(children.get(order.client_order_id, ()))
        elif kind == "fill":
            order, quantity = _restore_fill(r, by_id, fills, books, account)
            exec_seq += 1
            release_children(children.get(order.client_order_id, ()), quantity)
            if order.oca_group is not None:
                reduce_oca(groups[order.oca_group], order, quantity)
        elif kind == "trigger":
            by_id[r["id"]].triggered = True
        elif kind == "modify":
            _restore_modify(r, by_id[r["id"]])
        # Any other kind is from a later version of the venue: it changes nothing here.
    next_broker_id = FIRST_BROKER_ORDER_ID
    to_place: list[str] = []
    for order in by_id.values():
        orders.add(order)
        if order.broker_order_id is not None:
            next_broker_id = max(next_broker_id, int(order.broker_order_id) + 1)
        if order.status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
            if order.held:
                continue  # a bracket child waiting for its parent's fill: off the book
            book = books[order.symbol]
            book.working.append(order)
            if order.waits_for_trigger:
                order.armed = True
                book.stops.append(order)
        elif order.status is OrderStatus.PENDING_SUBMIT:
            to_place.append(order.client_order_id)  # accepted, not yet acted on
        else:
            orders.finish(order)
    live = orders.live
    return Restored(
        next_broker_id,
        exec_seq,
        to_place,
        {p: kids for p, kids in children.items() if p in live},
        {g: [m for m in ms if m.client_order_id in live] for g, ms in groups.items()},
        {cid: reason for cid, reason in refused.items() if cid in to_place},
    )


def _restore_order(r: dict[str, Any]) -> VenueOrder:
    kind = OrderType(r["type"])
    limit = r["limit"]
    return VenueOrder(
        client_order_id=r["id"],
        symbol=r["symbol"],
        side=Side(r["side"]),
        quantity=r["qty"],
        order_type=kind,
        limit_price=limit,
        stop_price=r.get("stop"),
        tif=TimeInForce(r.get("tif", TimeInForce.DAY)),
        parent_id=r.get("parent"),
        oca_group=r.get("oca"),
        match_limit=limit if kind.has_limit else None,
    )


def _restore_modify(r: dict[str, Any], order: VenueOrder) -> None:
    order.quantity = r["qty"]
    order.stop_price = r["stop"]
    order.limit_price = r["limit"]
    order.match_limit = order.limit_price if order.order_type.has_limit else None


def _restore_fill(
    r: dict[str, Any],
    by_id: dict[str, VenueOrder],
    fills: FillLog,
    books: Mapping[str, Book],
    account: SimAccount,
) -> tuple[VenueOrder, int]:
    """Book one fill line; returns the order it filled and by how much."""
    fill = Fill(
        r["exec_id"],
        r["id"],
        r["symbol"],
        Side(r["side"]),
        r["qty"],
        r["price"],
        r["commission"],
        datetime.fromisoformat(r["ts"]),
    )
    order = by_id[fill.client_order_id]
    order.filled += fill.quantity
    order.status = OrderStatus.FILLED if order.remaining == 0 else OrderStatus.PARTIALLY_FILLED
    account.book_fill(fill.symbol, fill.signed_quantity, fill.price, fill.commission)
    fills.append(fill)
    book = books.get(fill.symbol)
    if book is not None:
        book.walk_mid = r["mid"]  # prices continue where the venue left off
        book.recentre()
    return order, fill.quantity
