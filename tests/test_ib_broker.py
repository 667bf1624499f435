"""IbBroker with the real ib_async client against the fake TWS over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from core.brokers.base import BrokerConnectError
from core.brokers.ib import IbBroker, IbConfig, backoff_delay
from core.brokers.ib_orders import map_ib_status
from core.clock import SimClock
from core.model import Order, OrderStatus, OrderType, QuoteSource, Side, TradingMode
from tests.fake_tws import FakeTws, RecordingListener, wait_until

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)  # Monday 09:30 New York: XNYS open


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


@pytest.fixture
async def tws(clock: SimClock) -> AsyncIterator[FakeTws]:
    server = FakeTws(now=clock.now)
    await server.start()
    yield server
    await server.stop()


def make_broker(port: int, clock: SimClock, **overrides: Any) -> tuple[IbBroker, RecordingListener]:
    values: dict[str, Any] = {
        "symbols": ("AAPL", "MSFT"),
        "port": port,
        "connect_timeout": 2.0,
        "supervise_seconds": 0.005,
        "jitter_seed": 1,
    }
    values.update(overrides)
    broker = IbBroker(IbConfig(**values), clock)
    listener = RecordingListener()
    broker.set_listener(listener)
    return broker, listener


@contextlib.asynccontextmanager
async def running(broker: IbBroker) -> AsyncIterator[asyncio.Task[None]]:
    """connect() + run() as the TradingSystem does; always torn down."""
    await broker.connect()
    task = asyncio.ensure_future(broker.run())
    try:
        yield task
    finally:
        await broker.disconnect()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, BrokerConnectError):
            await task


def order(n: int, side: Side = Side.BUY, qty: int = 100, limit: float | None = None) -> Order:
    return Order(
        client_order_id=f"TC-TEST-{n:04d}",
        symbol="AAPL",
        side=side,
        quantity=qty,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        created_at=T0,
        limit_price=limit,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ connect


async def test_connect_synchronises_account_positions_and_values(
    tws: FakeTws, clock: SimClock
) -> None:
    tws.set_position("MSFT", 25, avg_cost=400.0)
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        assert broker.connected
        assert listener.connections[-1][0] is True
        assert "DU1234567" in listener.connections[-1][1]
        assert broker.account_id == "DU1234567"
        assert broker.positions() == {"MSFT": 25}
        values = broker.account_values()
        assert values.account_id == "DU1234567"
        assert values.net_liquidation == pytest.approx(1_000_000 + 25 * 410.0)
        assert values.cash == pytest.approx(1_000_000)
        # What ib_async asks for at startup reached the fake (and was answered).
        for msg_id in (71, 61, 5, 99, 6, 7):
            assert tws.requests(msg_id), f"request {msg_id} missing"
    assert not broker.connected
    assert listener.connections[-1][0] is False


async def test_unknown_symbol_is_a_clear_connect_error(tws: FakeTws, clock: SimClock) -> None:
    broker, _ = make_broker(tws.port, clock, symbols=("AAPL", "ZZZQ"))
    with pytest.raises(BrokerConnectError, match=r"ZZZQ.*fix SYMBOLS"):
        await broker.connect()
    assert not broker.connected
    await broker.disconnect()


async def test_live_guard_refuses_a_paper_account_in_live_mode(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock, mode=TradingMode.LIVE)
    with pytest.raises(BrokerConnectError, match="TRADING_MODE=live but account DU1234567"):
        await broker.connect()
    assert not broker.connected
    assert not tws.ready_sessions or await _gone(tws)
    assert listener.connections[-1][0] is False


async def test_live_guard_refuses_a_live_account_in_paper_mode(clock: SimClock) -> None:
    server = await FakeTws(accounts=("U7654321",)).start()
    try:
        broker, _ = make_broker(server.port, clock, mode=TradingMode.PAPER)
        with pytest.raises(BrokerConnectError, match="LIVE, real-money account"):
            await broker.connect()
    finally:
        await server.stop()


async def _gone(tws: FakeTws) -> bool:
    await wait_until(lambda: not tws.ready_sessions)
    return True


async def test_client_id_in_use_is_explained_and_retried(tws: FakeTws, clock: SimClock) -> None:
    tws.refuse_client_id(1)
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        assert not broker.connected
        connected, message = listener.connections[-1]
        assert not connected
        assert "client id 1 is already in use" in message
        assert "IB_CLIENT_ID" in message
        delay = broker.next_attempt_in
        assert delay is not None and 0.8 <= delay <= 1.0
        tws.accept_client_id(1)
        clock.advance(1.0)
        await wait_until(lambda: broker.connected)
        assert listener.connections[-1][0] is True


async def test_connection_refused_is_explained_and_retried_with_backoff(clock: SimClock) -> None:
    port = free_port()
    broker, listener = make_broker(port, clock)
    server = FakeTws(now=clock.now)
    try:
        await _refused_then_up(broker, listener, clock, server, port)
    finally:
        await server.stop()


async def _refused_then_up(
    broker: IbBroker, listener: RecordingListener, clock: SimClock, server: FakeTws, port: int
) -> None:
    async with running(broker):
        message = listener.connections[-1][1]
        assert "connection refused" in message
        assert "API enabled" in message and "7497" in message
        broker.subscribe_quotes(["AAPL"])  # as TradingSystem.start does, still disconnected
        assert 0.8 <= (broker.next_attempt_in or 0) <= 1.0
        clock.advance(1.0)
        await wait_until(lambda: len(listener.connections) == 2)
        assert 1.6 <= (broker.next_attempt_in or 0) <= 2.0  # doubled
        clock.advance(2.0)
        await wait_until(lambda: len(listener.connections) == 3)
        assert 3.2 <= (broker.next_attempt_in or 0) <= 4.0
        assert not broker.connected
        await server.start(port)
        clock.advance(4.0)
        await wait_until(lambda: broker.connected)
        await wait_until(lambda: listener.quotes)  # subscribed once connected
        assert listener.quotes[-1].symbol == "AAPL"


def test_backoff_doubles_from_one_second_to_the_cap_with_jitter() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(n, 60.0, rng) for n in range(10)]
    for n, delay in enumerate(delays):
        base = min(60.0, 2.0**n)
        assert 0.8 * base <= delay <= base
    assert delays[-1] <= 60.0
    assert len({round(d / min(60.0, 2.0**n), 6) for n, d in enumerate(delays)}) > 1  # jittered


# ------------------------------------------------------------------ market data


async def test_stream_delivers_quotes_marked_stream(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.subscribe_quotes(["AAPL", "MSFT"])
        await wait_until(lambda: {q.symbol for q in listener.quotes} == {"AAPL", "MSFT"})
        tws.push_tick("AAPL", bid=191.10, ask=191.14, last=191.12, bid_size=300, ask_size=200)
        await wait_until(lambda: listener.quotes[-1].bid == 191.10)
        q = listener.quotes[-1]
        assert (q.symbol, q.ask, q.last, q.bid_size, q.ask_size) == (
            "AAPL",
            191.14,
            191.12,
            300,
            200,
        )
        assert q.source is QuoteSource.STREAM
        assert q.ts == clock.now()


async def test_unsubscribed_symbol_outside_symbols_reports_error_200(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.subscribe_quotes(["TSLA"])
        assert listener.errors[-1][0] == 200
        assert "TSLA" in listener.errors[-1][1]


async def test_stalled_stream_fails_over_to_polling_and_back(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock, stale_after_seconds=10.0, poll_seconds=5.0)
    async with running(broker):
        broker.subscribe_quotes(["AAPL", "MSFT"])
        await wait_until(lambda: len({q.symbol for q in listener.quotes}) == 2)
        tws.stall("AAPL")
        clock.advance(6)
        tws.push_tick("MSFT", bid=410.0, ask=410.1)  # MSFT keeps streaming
        await wait_until(lambda: listener.quotes[-1].bid == 410.0)
        clock.advance(5)  # AAPL silent 11 s > 10 s, MSFT only 5 s
        await wait_until(lambda: listener.switches)
        assert listener.switches == [("AAPL", QuoteSource.POLL, listener.switches[0][2])]
        assert "no streaming update" in listener.switches[0][2]
        await wait_until(lambda: any(q.source is QuoteSource.POLL for q in listener.quotes))
        polled = [q for q in listener.quotes if q.source is QuoteSource.POLL]
        assert {q.symbol for q in polled} == {"AAPL"}
        snapshots = len([m for m in tws.requests(1) if m[17] == "1"])
        # While stalled the price moves; the next poll (5 s later on the clock) sees it.
        tws.push_tick("AAPL", bid=192.0, ask=192.04)
        clock.advance(2)
        await asyncio.sleep(0.05)
        assert len([m for m in tws.requests(1) if m[17] == "1"]) == snapshots  # not due yet
        clock.advance(3)
        await wait_until(lambda: listener.quotes[-1].bid == 192.0)
        assert listener.quotes[-1].source is QuoteSource.POLL
        # The stream resumes: back to streaming, reported as a switch.
        tws.unstall("AAPL")
        tws.push_tick("AAPL", bid=192.5, ask=192.54)
        await wait_until(lambda: len(listener.switches) == 2)
        assert listener.switches[1][:2] == ("AAPL", QuoteSource.STREAM)
        await wait_until(lambda: listener.quotes[-1].bid == 192.5)
        assert listener.quotes[-1].source is QuoteSource.STREAM
        assert broker.feed_source("MSFT") is QuoteSource.STREAM


async def test_no_failover_while_the_exchange_is_closed(tws: FakeTws) -> None:
    clock = SimClock(datetime(2026, 1, 10, 15, 0, tzinfo=UTC))  # Saturday
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.subscribe_quotes(["AAPL"])
        await wait_until(lambda: listener.quotes)
        tws.stall("AAPL")
        clock.advance(120)
        await asyncio.sleep(0.1)
        assert listener.switches == []
        assert broker.feed_source("AAPL") is QuoteSource.STREAM


# ------------------------------------------------------------------ orders


async def test_market_order_fills_with_commission_and_ib_ids(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.place_order(order(1))
        await wait_until(lambda: listener.fills)
        fill = listener.fills[0]
        assert (fill.client_order_id, fill.symbol, fill.side, fill.quantity) == (
            "TC-TEST-0001",
            "AAPL",
            Side.BUY,
            100,
        )
        assert fill.price == 190.02  # the ask
        assert fill.commission == pytest.approx(1.0)
        assert fill.exec_id == tws.executions[0].exec_id
        assert listener.statuses_of("TC-TEST-0001")[0] is OrderStatus.SUBMITTED
        ib_order = tws.order(order_ref="TC-TEST-0001")
        assert listener.statuses[0].broker_order_id == f"{ib_order.order_id}/{ib_order.perm_id}"
        assert broker.ib_order_ids("TC-TEST-0001") == (ib_order.order_id, ib_order.perm_id)
        await wait_until(lambda: broker.positions() == {"AAPL": 100})
        states = broker.order_states()
        assert states["TC-TEST-0001"].status is OrderStatus.FILLED
        assert [f.exec_id for f in broker.executions()] == [fill.exec_id]


async def test_limit_order_partial_then_full_fill(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.place_order(order(2, limit=185.0))  # below the ask: rests
        await wait_until(lambda: listener.statuses_of("TC-TEST-0002") == [OrderStatus.SUBMITTED])
        ib_id = tws.order(order_ref="TC-TEST-0002").order_id
        tws.fill(ib_id, 40, 185.0)
        await wait_until(lambda: len(listener.fills) == 1)
        assert (listener.fills[0].quantity, listener.fills[0].price) == (40, 185.0)
        assert broker.order_states()["TC-TEST-0002"].status is OrderStatus.PARTIALLY_FILLED
        tws.fill(ib_id, 60, 184.99)
        await wait_until(lambda: len(listener.fills) == 2)
        assert sum(f.quantity for f in listener.fills) == 100
        assert len({f.exec_id for f in listener.fills}) == 2
        # IB's "Filled" status is not reported: fills drive the state in the core.
        assert OrderStatus.FILLED not in listener.statuses_of("TC-TEST-0002")


async def test_fill_waits_for_its_commission_report_but_not_forever(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock, commission_wait_seconds=5.0)
    async with running(broker):
        tws.send_commissions = False
        broker.place_order(order(9))
        await wait_until(lambda: tws.executions)
        await asyncio.sleep(0.05)
        assert listener.fills == []  # held back: the commission report may still come
        clock.advance(5.0)
        await wait_until(lambda: listener.fills)
        assert listener.fills[0].commission == 0.0
        assert listener.fills[0].quantity == 100


async def test_reject_carries_ibs_code_and_message(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        tws.reject_next_order(201, "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED")
        broker.place_order(order(3))
        await wait_until(lambda: listener.statuses)
        update = listener.statuses[-1]
        assert update.status is OrderStatus.REJECTED
        assert update.error_code == 201
        assert "NOT ACCEPTED" in update.message
        assert listener.errors[-1][0] == 201 and listener.errors[-1][2] == "TC-TEST-0003"


async def test_order_while_disconnected_is_rejected_with_504(clock: SimClock) -> None:
    broker, listener = make_broker(free_port(), clock)
    async with running(broker):
        broker.place_order(order(4))
        await wait_until(lambda: listener.statuses)
        assert listener.statuses[-1].status is OrderStatus.REJECTED
        assert listener.statuses[-1].error_code == 504


async def test_cancel_working_order(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.place_order(order(5, limit=185.0))
        await wait_until(lambda: listener.statuses_of("TC-TEST-0005"))
        broker.cancel_order("TC-TEST-0005")
        await wait_until(lambda: OrderStatus.CANCELLED in listener.statuses_of("TC-TEST-0005"))
        assert listener.statuses_of("TC-TEST-0005") == [
            OrderStatus.SUBMITTED,
            OrderStatus.PENDING_CANCEL,
            OrderStatus.CANCELLED,
        ]
        assert tws.order(order_ref="TC-TEST-0005").status == "Cancelled"
        assert [e for e in listener.errors if e[0] == 202] == []  # the confirmation is no error


# ------------------------------------------------------------------ reconnect


async def test_drop_reconnect_adopts_open_order_and_applies_missed_fill_once(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.subscribe_quotes(["AAPL"])
        broker.place_order(order(6, limit=185.0, qty=100))
        await wait_until(lambda: listener.statuses_of("TC-TEST-0006"))
        ib_id = tws.order(order_ref="TC-TEST-0006").order_id
        placed = len(tws.requests(3))
        await tws.close_listener()  # TWS goes away...
        tws.drop_connections()
        await wait_until(lambda: not broker.connected)
        assert listener.connections[-1] == (False, listener.connections[-1][1])
        assert "lost" in listener.connections[-1][1]
        tws.book_execution_while_disconnected(ib_id, 30, 185.0)  # ...and fills meanwhile
        await tws.reopen()
        clock.advance(1.0)
        await wait_until(lambda: broker.connected)
        assert [f.quantity for f in listener.fills] == [30]
        assert listener.fills[0].commission == pytest.approx(1.0)
        assert len(tws.requests(3)) == placed  # adopted, never re-sent
        # The adopted order keeps working: a later fill flows and the market data is back.
        tws.fill(ib_id, 70, 185.0)
        await wait_until(lambda: len(listener.fills) == 2)
        tws.push_tick("AAPL", bid=186.0, ask=186.02)
        await wait_until(lambda: listener.quotes and listener.quotes[-1].bid == 186.0)
        # A second reconnect re-reads today's executions: nothing is delivered twice.
        tws.drop_connections()
        await wait_until(lambda: not broker.connected)
        clock.advance(1.0)
        await wait_until(lambda: broker.connected)
        await asyncio.sleep(0.05)
        assert [f.quantity for f in listener.fills] == [30, 70]


async def test_cancel_requested_while_disconnected_is_sent_after_reconnect(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        broker.place_order(order(7, limit=185.0))
        await wait_until(lambda: listener.statuses_of("TC-TEST-0007"))
        tws.drop_connections()
        await wait_until(lambda: not broker.connected)
        broker.cancel_order("TC-TEST-0007")
        clock.advance(1.0)
        await wait_until(lambda: OrderStatus.CANCELLED in listener.statuses_of("TC-TEST-0007"))
        assert tws.order(order_ref="TC-TEST-0007").status == "Cancelled"


async def test_order_lost_before_reaching_tws_is_settled_on_reconnect(
    tws: FakeTws, clock: SimClock
) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        tws.swallow_next_order()
        broker.place_order(order(8, limit=185.0))
        await wait_until(lambda: tws.requests(3))
        tws.drop_connections()
        await wait_until(lambda: not broker.connected)
        clock.advance(1.0)
        await wait_until(lambda: broker.connected)
        await wait_until(lambda: listener.statuses_of("TC-TEST-0008"))
        assert listener.statuses_of("TC-TEST-0008")[-1] is OrderStatus.REJECTED
        assert "not known to IB" in listener.statuses[-1].message


# ------------------------------------------------------------------ IB messages


async def test_farm_and_connectivity_messages(tws: FakeTws, clock: SimClock) -> None:
    broker, listener = make_broker(tws.port, clock)
    async with running(broker):
        assert listener.errors == []  # the OK farm messages at login are not errors
        tws.send_error(2103, "Market data farm connection is broken:usfarm")
        await wait_until(lambda: listener.errors)
        assert listener.errors[-1][0] == 2103
        assert "market data farm connection broken" in listener.errors[-1][1]
        tws.send_error(2104, "Market data farm connection is OK:usfarm")
        await wait_until(lambda: listener.errors[-1][0] == 2104)
        tws.send_error(1100, "Connectivity between IB and Trader Workstation has been lost.")
        await wait_until(lambda: not broker.connected)
        assert listener.connections[-1][0] is False
        assert "1100" in listener.connections[-1][1]
        tws.send_error(1102, "Connectivity between IB and TWS has been restored - data maintained.")
        await wait_until(lambda: broker.connected)
        assert listener.connections[-1][0] is True
        tws.send_error(10197, "No market data during competing live session")
        await wait_until(lambda: listener.errors[-1][0] == 10197)
        assert "logged in elsewhere" in listener.errors[-1][1]


def test_ib_status_mapping() -> None:
    assert map_ib_status("PendingSubmit") is None
    assert map_ib_status("PreSubmitted") is OrderStatus.SUBMITTED
    assert map_ib_status("Submitted") is OrderStatus.SUBMITTED
    assert map_ib_status("PendingCancel") is OrderStatus.PENDING_CANCEL
    assert map_ib_status("Filled") is None  # fills drive it
    assert map_ib_status("Cancelled") is OrderStatus.CANCELLED
    assert map_ib_status("ApiCancelled") is OrderStatus.CANCELLED
    assert map_ib_status("Cancelled", error_code=202) is OrderStatus.CANCELLED
    assert map_ib_status("Cancelled", error_code=201) is OrderStatus.REJECTED
    assert map_ib_status("Cancelled", error_code=201, has_fills=True) is OrderStatus.CANCELLED
    assert map_ib_status("Inactive") is OrderStatus.REJECTED
    assert map_ib_status("Inactive", has_fills=True) is OrderStatus.CANCELLED


def test_config_from_settings_and_validation(tmp_path: Any) -> None:
    from core.config import load_settings

    settings = load_settings(
        env_file=None,
        trading_mode="paper",
        symbols="AAPL,SPY",
        ib_port=4002,
        ib_client_id=7,
        ib_account=" DU1 ",
        data_dir=tmp_path,
    )
    config = IbConfig.from_settings(settings)
    assert (config.port, config.client_id, config.account, config.symbols) == (
        4002,
        7,
        "DU1",
        ("AAPL", "SPY"),
    )
    with pytest.raises(ValueError, match="market_data_type"):
        IbConfig(symbols=("AAPL",), market_data_type=5)
    with pytest.raises(ValueError, match="not sim"):
        IbConfig(symbols=("AAPL",), mode=TradingMode.SIM)
