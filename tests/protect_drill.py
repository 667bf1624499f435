"""Protective-stop drill: SIGKILL the console with positions open, restart, audit the stops.

    python -m tests.protect_drill --kills 15 --seed 1 --workdir /tmp/protect

Like ``tests.crash_drill`` (whose process handling it reuses), but with
PROTECTIVE_STOP_PCT set and a strategy that holds positions: each run starts quiet
(``QUIET_S`` seconds without new targets), then moves every symbol's target between
short, flat and long at random until it is killed at a random moment — often while
an entry is filling, a stop is being resized or a stop is on its way to the venue.

After every restart, inside the quiet window (the console has recovered, reconciled
and put its stops right, and trades nothing new yet), the venue's own file is audited:

- every open position has exactly one protective stop (``-SL``) working at the venue,
  on the closing side, for the position's whole quantity;
- no stop works for a flat symbol, and no symbol has two;
- no client order id reached the venue twice.

The figures: kills, positions checked, and stops adopted (a stop working before the
restart still the one working after it), placed and cancelled.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from core.model import Quote, TargetPosition
from core.strategy.base import Strategy, StrategyOutput
from tests.crash_drill import EXIT_TIMEOUT_S, SYMBOLS, _spawn, drill_env, read_venue_records
from tests.fake_tws import FakeTws, ThreadedTws

QUIET_S = 2.5  # no new targets this long after the strategy starts
AUDIT_AFTER_S = 1.6  # after "trading started": recovery done, stops acknowledged
_TERMINAL = {"Filled", "Cancelled", "Rejected"}
_SIGN = {"BUY": 1, "SELL": -1}


class HoldStrategy(Strategy):
    """Drill only: quiet at first, then random targets in {-2, -1, 0, 1, 2} lots."""

    name = "hold"
    defaults: ClassVar[dict[str, Any]] = {"every": 8, "lot": 40}

    def __init__(self, symbols: Sequence[str], context: Any, **params: Any) -> None:
        super().__init__(symbols, context, **params)
        self._every = int(self.params["every"])
        self._lot = int(self.params["lot"])
        self._seen: Counter[str] = Counter()
        self._first: float | None = None
        self._rng = random.Random()  # each run differently: the drill's kills are seeded

    def on_quote(self, quote: Quote) -> StrategyOutput:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        if now - self._first < QUIET_S:
            return None
        self._seen[quote.symbol] += 1
        if self._seen[quote.symbol] % self._every:
            return None
        lots = self._rng.choice((-2, -1, 0, 1, 2))
        return TargetPosition(quote.symbol, lots * self._lot, "protect drill")


@dataclass(slots=True)
class VenueBook:
    """What the venue's file says: each order's latest quantity and status, positions."""

    sent: Counter[str] = field(default_factory=Counter)
    symbol: dict[str, str] = field(default_factory=dict)
    side: dict[str, str] = field(default_factory=dict)
    quantity: dict[str, int] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    filled: Counter[str] = field(default_factory=Counter)
    positions: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    def read(cls, state_file: Path) -> VenueBook:
        book = cls()
        for r in read_venue_records(state_file):
            kind, cid = r["t"], r.get("id", "")
            if kind == "order":
                book.sent[cid] += 1
                book.symbol[cid], book.side[cid] = r["symbol"], r["side"]
                book.quantity[cid] = int(r["qty"])
                book.status[cid] = "PendingSubmit"
            elif kind == "modify":
                book.quantity[cid] = int(r["qty"])
            elif kind == "status":
                book.status[cid] = r["status"]
            elif kind == "fill":
                book.filled[cid] += int(r["qty"])
                book.positions[r["symbol"]] += _SIGN[r["side"]] * int(r["qty"])
        return book

    def working_stops(self) -> dict[str, list[str]]:
        stops: defaultdict[str, list[str]] = defaultdict(list)
        for cid, status in self.status.items():
            working = status not in _TERMINAL and self.filled[cid] < self.quantity[cid]
            if cid.endswith("-SL") and working:
                stops[self.symbol[cid]].append(cid)
        return stops


@dataclass(slots=True)
class ProtectAudit:
    kills: int = 0
    audits: int = 0
    positions_checked: int = 0
    stops_adopted: int = 0
    stops_placed: int = 0
    stops_cancelled: int = 0
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"kills {self.kills}, audits after restart {self.audits}, positions checked "
            f"{self.positions_checked}, stops adopted {self.stops_adopted}, placed "
            f"{self.stops_placed}, cancelled {self.stops_cancelled}"
        ]
        lines += [f"  FAILED: {f}" for f in self.failures] or ["  OK: every position had one stop"]
        return "\n".join(lines)


def check(book: VenueBook, before: VenueBook | None, run: int, result: ProtectAudit) -> None:
    """The audit of one restart (see the module doc)."""
    result.audits += 1
    twice = [cid for cid, n in book.sent.items() if n > 1]
    if twice:
        result.failures.append(f"run {run}: ids sent twice: {twice[:5]}")
    stops = book.working_stops()
    for symbol, quantity in sorted(book.positions.items()):
        held = stops.get(symbol, [])
        if quantity == 0:
            if held:
                result.failures.append(f"run {run}: {symbol} flat but stops {held} work")
            continue
        result.positions_checked += 1
        if len(held) != 1:
            result.failures.append(f"run {run}: {symbol} {quantity:+d} has stops {held}")
            continue
        (cid,) = held
        remaining = book.quantity[cid] - book.filled[cid]
        closing = "SELL" if quantity > 0 else "BUY"
        if book.side[cid] != closing or remaining != abs(quantity):
            result.failures.append(
                f"run {run}: {symbol} {quantity:+d}: stop {cid} {book.side[cid]} {remaining}"
            )
    for symbol, held in stops.items():
        if symbol not in book.positions and held:
            result.failures.append(f"run {run}: {symbol} never held but stops {held} work")
    if before is not None:
        old = {cid for ids in before.working_stops().values() for cid in ids}
        result.stops_adopted += sum(1 for ids in stops.values() for cid in ids if cid in old)


def tws_book(tws: FakeTws) -> VenueBook:
    """The fake TWS's books as a VenueBook (run on its loop: ThreadedTws.query)."""
    book = VenueBook()
    for order in tws.orders:
        cid = order.order_ref
        book.sent[cid] += 1
        book.symbol[cid], book.side[cid] = order.symbol, order.action
        book.quantity[cid] = int(order.quantity)
        book.filled[cid] = int(order.filled)
        book.status[cid] = (
            order.status
            if order.is_open or order.status in _TERMINAL
            else ("Cancelled" if not order.transmitted else order.status)
        )
    for (_, symbol), (quantity, _) in tws.positions.items():
        book.positions[symbol] += int(quantity)
    return book


class _Ticker:
    """A random walk of every symbol's last trade, streamed to the fake TWS."""

    def __init__(self, server: ThreadedTws, symbols: Sequence[str], seed: int) -> None:
        self._server = server
        self._rng = random.Random(seed)
        self._prices = {s: 100.0 + 50 * i for i, s in enumerate(symbols)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for symbol, price in self._prices.items():
                price = round(max(1.0, price * (1 + self._rng.gauss(0, 0.002))), 2)
                self._prices[symbol] = price
                self._server.call(
                    self._server.tws.push_tick,
                    symbol,
                    bid=round(price - 0.01, 2),
                    ask=round(price + 0.01, 2),
                    last=price,
                )


def drill(
    workdir: Path,
    kills: int,
    seed: int,
    *,
    venue: str = "sim",
    min_delay: float = QUIET_S + 0.3,
    max_delay: float = QUIET_S + 3.0,
) -> ProtectAudit:
    """The drill against the persistent sim venue (``venue="sim"``) or against the fake
    TWS (``"tws"``: one server outlives every console run, as IB does)."""
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"{workdir} is not empty; give an empty or new work directory")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    env = drill_env(workdir)
    env.update(
        STRATEGY="tests.protect_drill:HoldStrategy",
        STRATEGY_PARAMS=json.dumps({"every": 8, "lot": 40}),
        PROTECTIVE_STOP_PCT="1.5",
    )
    if venue == "sim":
        state_file = Path(env["SIM_STATE_FILE"])
        return _drill(
            workdir, env, kills, seed, lambda: VenueBook.read(state_file), min_delay, max_delay
        )
    with ThreadedTws() as server, _Ticker(server, SYMBOLS, seed):
        env.update(
            TRADING_MODE="paper",
            IB_PORT=str(server.tws.port),
            IB_CLIENT_ID="7",  # the same on every restart: IB binds orders to it
            IB_CONNECT_TIMEOUT="5",
        )
        return _drill(
            workdir, env, kills, seed, lambda: server.query(tws_book), min_delay, max_delay
        )


def _drill(
    workdir: Path,
    env: dict[str, str],
    kills: int,
    seed: int,
    read_book: Callable[[], VenueBook],
    min_delay: float,
    max_delay: float,
) -> ProtectAudit:
    rng = random.Random(seed)
    logs = workdir / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    result = ProtectAudit()
    before: VenueBook | None = None
    for index in range(kills + 1):
        final = index == kills
        log = logs / f"run-{index:02d}.log"
        proc = _spawn(workdir, env, log)
        started = time.monotonic()
        try:
            _wait_for(log, "headless trading started", started + 30.0, proc)
            time.sleep(max(0.0, AUDIT_AFTER_S))
            if index > 0:
                check(read_book(), before, index, result)
            delay = rng.uniform(min_delay, max_delay)
            time.sleep(max(0.0, started + delay - time.monotonic()))
            proc.send_signal(signal.SIGINT if final else signal.SIGKILL)
            proc.wait(timeout=EXIT_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        before = read_book()
        if not final:
            result.kills += 1
        text = log.read_text(encoding="utf-8", errors="replace")
        for needle in ("Traceback", "order update refused", "duplicate client_order_id"):
            if needle in text:
                result.failures.append(f"run {index}: {needle!r} in {log}")
    book = read_book()
    placed = [cid for cid in book.sent if cid.endswith("-SL")]
    result.stops_placed = len(placed)
    result.stops_cancelled = sum(1 for cid in placed if book.status[cid] == "Cancelled")
    return result


def _wait_for(log: Path, text: str, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(encoding="utf-8", errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the console exited ({proc.returncode}) before {text!r}: {log}")
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not in {log} within the time allowed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.protect_drill", description=__doc__)
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--venue", choices=("sim", "tws"), default="sim")
    args = parser.parse_args(argv)
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="protect-drill-"))
    print(f"protect drill: {args.kills} kills, seed {args.seed}, workdir {workdir}", flush=True)
    result = drill(workdir, args.kills, args.seed, venue=args.venue)
    print(result.report())
    return 0 if not result.failures else 1


if __name__ == "__main__":
    sys.exit(main())
