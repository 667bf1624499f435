"""Crash drill: SIGKILL the headless console at random moments, restart it, then audit.

    python -m tests.crash_drill --kills 20 --seed 1 --workdir /tmp/drill

Runs ``python -m tui.commands.cli --headless`` in ``--workdir`` (DATA_DIR and STOP file there)
against the sim venue, which keeps its orders and fills in ``SIM_STATE_FILE`` and so
stands in for a broker that outlives the console. Each run is killed with SIGKILL
after a seeded random delay and restarted; the last run is stopped with SIGINT. Then
the database is audited against the venue's file:

- no client order id reached the venue twice (venue "order" records, and the console's
  "submitted" order events: a re-send after a restart would add a second one);
- every venue execution is in the ``fills`` table exactly once, with the same order,
  quantity and price, and the table holds nothing the venue did not execute;
- internal positions (rebuilt from the recorded fills) equal the venue's, and the
  console itself never saw a position mismatch;
- every order the venue received is in the ``orders`` table (journal before send),
  with the fill quantity the venue reports; orders journaled but never received are
  closed without fills; nothing is left working at the end;
- ``PRAGMA integrity_check`` is ok.

The strategy is ``ChurnStrategy`` below rather than the moving-average example: it
changes every symbol's target every few quotes, so at almost any moment an order is
being journaled, is in flight to the venue, being filled or being cancelled — which
is what a random kill must hit to prove anything. Kills that land during start-up
(imports, recovery, reconciliation) are kept on purpose: recovery must survive
being interrupted too.

Exit status 0 when every check holds, 1 otherwise (the failures are printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from core.config import Settings
from core.model import Quote, TargetPosition
from core.recovery import NEVER_RECEIVED
from core.strategy.base import Strategy, StrategyOutput

REPO_ROOT = Path(__file__).resolve().parent.parent
SYMBOLS = ("AAPL", "MSFT", "SPY")
# How long a killed or stopped process may take to go away before the drill gives up.
EXIT_TIMEOUT_S = 30.0
_SIDE_SIGN = {"BUY": 1, "SELL": -1}
_TERMINAL = {"Filled", "Cancelled", "Rejected"}
_RECOVERY_LINE = re.compile(
    r"broker recovery: (\d+) executions applied, (\d+) orders adopted, "
    r"(\d+) never received, (\d+) unknown at broker"
)
# Log text that must never appear: a re-sent order, or a core task that crashed.
_FORBIDDEN_LOG_TEXT = (
    "duplicate client_order_id",
    "crashed",
    "Traceback",
    "order update refused",  # our view of an order disagreed with the broker's
    "database is locked",
)


class ChurnStrategy(Strategy):
    """Drill only: flips each symbol between long and short every ``every`` quotes.

    Target changes while an order works make the execution engine cancel and replace,
    so the venue sees placements, fills (often partial: the displayed size is finite)
    and cancels continuously.
    """

    name = "churn"
    defaults: ClassVar[dict[str, Any]] = {"every": 5, "trade_dollars": 5_000.0}

    def __init__(self, symbols: Sequence[str], context: Any, **params: Any) -> None:
        super().__init__(symbols, context, **params)
        self._every = int(self.params["every"])
        if self._every < 1:
            raise ValueError("churn needs every >= 1")
        self._seen: Counter[str] = Counter()
        self._long: dict[str, bool] = dict.fromkeys(self.symbols, False)

    def on_quote(self, quote: Quote) -> StrategyOutput:
        self._seen[quote.symbol] += 1
        if self._seen[quote.symbol] % self._every or quote.symbol not in self._long:
            return None
        long = not self._long[quote.symbol]
        self._long[quote.symbol] = long
        size = max(1, math.floor(float(self.params["trade_dollars"]) / quote.mid))
        return TargetPosition(quote.symbol, size if long else -size, "crash drill churn")


# =============================================================================== running


@dataclass(slots=True)
class Run:
    """One console process: how long it lived and what the venue received meanwhile."""

    index: int
    delay_s: float | None  # None: the final run, stopped with SIGINT
    returncode: int | None = None
    exited_early: bool = False  # ended by itself before the drill signalled it
    venue_orders: int = 0  # orders the venue received during this run
    venue_fills: int = 0
    working_at_kill: int = 0  # orders live at the venue when the process died
    log: Path = Path()


def drill_env(workdir: Path) -> dict[str, str]:
    """The environment of every run: the parent's, minus anything that is a setting."""
    settings_vars = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings_vars}
    data = workdir / "data"
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        TRADING_MODE="sim",
        DATA_DIR=str(data),
        STOP_FILE=str(workdir / "STOP"),
        SIM_STATE_FILE=str(data / "sim-venue.jsonl"),
        SYMBOLS=",".join(SYMBOLS),
        SIM_QUOTES_PER_SECOND="50",
        SIM_STARTING_CASH="1000000",
        BAR_SECONDS="1",
        STRATEGY="tests.crash_drill:ChurnStrategy",
        STRATEGY_PARAMS=json.dumps({"every": 2, "trade_dollars": 5_000.0}),
        # Limits generous enough that risk never stands between the churn and the venue:
        # the drill is about recovery, not about risk refusing orders.
        DAILY_LOSS_LIMIT="1000000000",
        MAX_POSITION_SIZE="10000000",
        MAX_ORDER_NOTIONAL="10000000",
        MAX_ORDERS_PER_MINUTE="1000000",
        MAX_LEVERAGE="50",
        DRAWDOWN_ALERT_PCT="99",
        RECONCILE_SECONDS="1",
    )
    return env


def _spawn(workdir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tui.commands.cli", "--headless"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _venue_counts(state_file: Path) -> tuple[int, int, int]:
    """(orders received, fills, orders still live) according to the venue's file."""
    records = read_venue_records(state_file)
    orders = [r for r in records if r["t"] == "order"]
    status: dict[str, str] = {r["id"]: "PendingSubmit" for r in orders}
    filled: Counter[str] = Counter()
    for r in records:
        if r["t"] == "status":
            status[r["id"]] = r["status"]
        elif r["t"] == "fill":
            filled[r["id"]] += r["qty"]
    quantity = {r["id"]: r["qty"] for r in orders}
    live = sum(1 for cid, s in status.items() if s not in _TERMINAL and filled[cid] < quantity[cid])
    return len(orders), sum(1 for r in records if r["t"] == "fill"), live


def run_drill(
    workdir: Path,
    kills: int,
    seed: int,
    *,
    min_delay: float,
    max_delay: float,
    final_seconds: float,
) -> list[Run]:
    """Start, SIGKILL and restart the console ``kills`` times, then stop it with SIGINT."""
    rng = random.Random(seed)
    env = drill_env(workdir)
    state_file = Path(env["SIM_STATE_FILE"])
    logs = workdir / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    before = (0, 0, 0)
    for index in range(kills + 1):
        final = index == kills
        delay = final_seconds if final else rng.uniform(min_delay, max_delay)
        run = Run(index, None if final else delay, log=logs / f"run-{index:02d}.log")
        proc = _spawn(workdir, env, run.log)
        try:
            proc.wait(timeout=delay)
            run.exited_early = True  # it should still be running: a crash, not our kill
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT if final else signal.SIGKILL)
        try:
            run.returncode = proc.wait(timeout=EXIT_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        after = _venue_counts(state_file)
        run.venue_orders = after[0] - before[0]
        run.venue_fills = after[1] - before[1]
        run.working_at_kill = after[2]
        before = after
        runs.append(run)
        outcome = f"exit {run.returncode}" + (" (on its own!)" if run.exited_early else "")
        print(
            f"run {index:2d}: {'SIGINT' if final else 'SIGKILL'} after {delay:4.2f}s, {outcome}, "
            f"venue +{run.venue_orders} orders +{run.venue_fills} fills, "
            f"{run.working_at_kill} live at the venue",
            flush=True,
        )
    return runs


# =============================================================================== audit


def read_venue_records(state_file: Path) -> list[dict[str, Any]]:
    """The venue's JSON lines; a line torn by a kill (only ever the last) is skipped,
    as the venue itself does on load."""
    if not state_file.exists():
        return []
    records = []
    lines = state_file.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise
    return records


@dataclass(slots=True)
class Audit:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def require(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)


def _sample(items: Sequence[Any] | set[Any], n: int = 5) -> str:
    shown = sorted(items)[:n]
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return f"{', '.join(map(str, shown))}{more}"


def _positions(fills: Sequence[tuple[str, str, int]]) -> dict[str, int]:
    held: defaultdict[str, int] = defaultdict(int)
    for symbol, side, quantity in fills:
        held[symbol] += _SIDE_SIGN[side] * quantity
    return {s: q for s, q in held.items() if q}


def audit(db_path: Path, state_file: Path) -> Audit:
    """Compare the console's database with what the venue received and executed."""
    result = Audit()
    records = read_venue_records(state_file)
    venue_orders = [r for r in records if r["t"] == "order"]
    venue_fills = [r for r in records if r["t"] == "fill"]
    venue_status: dict[str, str] = {}
    for r in records:
        if r["t"] == "status":
            venue_status[r["id"]] = r["status"]

    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        db_orders = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT client_order_id, status, quantity, filled_quantity, last_message "
                "FROM orders"
            )
        }
        db_fills = {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT exec_id, client_order_id, symbol, side, quantity, price FROM fills"
            )
        }
        submitted = Counter(
            row[0]
            for row in conn.execute(
                "SELECT client_order_id FROM order_events WHERE message = 'submitted'"
            )
        )
        mismatches = conn.execute(
            "SELECT COUNT(*) FROM risk_events WHERE kind = 'position_mismatch'"
        ).fetchone()[0]
        unknown = conn.execute(
            "SELECT COUNT(*) FROM alerts WHERE key = 'unknown_broker_order'"
        ).fetchone()[0]
        quotes = conn.execute("SELECT COUNT(*) FROM quotes").fetchone()[0]
    finally:
        conn.close()

    # -- no order sent twice
    sent = Counter(r["id"] for r in venue_orders)
    twice = {cid for cid, n in sent.items() if n > 1}
    result.require(not twice, f"client order ids the venue received twice: {_sample(twice)}")
    resubmitted = {cid for cid, n in submitted.items() if n > 1}
    result.require(
        not resubmitted, f"orders the console submitted more than once: {_sample(resubmitted)}"
    )

    # -- every execution recorded exactly once, as executed
    exec_count = Counter(r["exec_id"] for r in venue_fills)
    repeated = {e for e, n in exec_count.items() if n > 1}
    result.require(not repeated, f"execution ids the venue reported twice: {_sample(repeated)}")
    venue_by_exec = {
        r["exec_id"]: (r["id"], r["symbol"], r["side"], r["qty"], r["price"]) for r in venue_fills
    }
    missing_fills = set(venue_by_exec) - set(db_fills)
    result.require(
        not missing_fills, f"venue executions missing from the database: {_sample(missing_fills)}"
    )
    phantom = set(db_fills) - set(venue_by_exec)
    result.require(not phantom, f"recorded fills the venue never executed: {_sample(phantom)}")
    differing = {e for e in set(venue_by_exec) & set(db_fills) if venue_by_exec[e] != db_fills[e]}
    result.require(
        not differing, f"recorded fills that differ from the venue's: {_sample(differing)}"
    )

    # -- positions
    internal = _positions([(f[1], f[2], f[3]) for f in db_fills.values()])
    broker = _positions([(f[1], f[2], f[3]) for f in venue_by_exec.values()])
    result.require(internal == broker, f"positions differ: database {internal}, venue {broker}")
    result.require(
        mismatches == 0, f"the console reported {mismatches} position mismatch(es) with the venue"
    )

    # -- orders: journal before send, and the journal's view of each order
    received = set(sent)
    not_journaled = received - set(db_orders)
    result.require(
        not not_journaled,
        f"orders the venue received that are not in the journal: {_sample(not_journaled)}",
    )
    result.require(unknown == 0, f"{unknown} unknown_broker_order alert(s)")
    venue_filled: Counter[str] = Counter()
    for r in venue_fills:
        venue_filled[r["id"]] += r["qty"]
    wrong_fill_qty = {
        cid for cid in received & set(db_orders) if db_orders[cid][2] != venue_filled[cid]
    }
    result.require(
        not wrong_fill_qty,
        f"orders whose recorded filled quantity differs from the venue's: "
        f"{_sample(wrong_fill_qty)}",
    )
    never = set(db_orders) - received
    bad_never = {cid for cid in never if db_orders[cid][0] not in ("Rejected", "Cancelled")}
    result.require(
        not bad_never, f"journaled orders the venue never received left open: {_sample(bad_never)}"
    )
    still_working = {cid for cid, row in db_orders.items() if row[0] not in _TERMINAL}
    result.require(
        not still_working,
        f"orders still working in the journal at the end: {_sample(still_working)}",
    )
    # A fully filled order is done even when its last status record says Submitted.
    venue_qty = {r["id"]: int(r["qty"]) for r in venue_orders}
    live_at_venue = {
        cid
        for cid in received
        if venue_status.get(cid, "PendingSubmit") not in _TERMINAL
        and venue_filled[cid] < venue_qty[cid]
    }
    result.require(
        not live_at_venue, f"orders still live at the venue at the end: {_sample(live_at_venue)}"
    )

    # -- the file itself
    result.require(integrity == ["ok"], f"PRAGMA integrity_check: {integrity}")

    result.counts.update(
        venue_orders=len(venue_orders),
        venue_fills=len(venue_fills),
        db_orders=len(db_orders),
        db_fills=len(db_fills),
        journaled_never_received=sum(1 for cid in never if db_orders[cid][3] == NEVER_RECEIVED),
        cancelled_before_send=sum(1 for cid in never if db_orders[cid][0] == "Cancelled"),
        venue_cancels=sum(1 for s in venue_status.values() if s == "Cancelled"),
        duplicate_order_ids=len(twice) + len(resubmitted),
        duplicate_exec_ids=len(repeated),
        fills_missing=len(missing_fills),
        orders_missing=len(not_journaled),
        position_mismatches=mismatches,
        quotes_recorded=quotes,
    )
    return result


def _log_findings(runs: Sequence[Run]) -> tuple[dict[str, int], list[str]]:
    """Recovery figures from each run's log, and anything in the logs that must not be."""
    totals = Counter[str]()
    problems: list[str] = []
    for run in runs:
        text = run.log.read_text(encoding="utf-8", errors="replace") if run.log.exists() else ""
        for match in _RECOVERY_LINE.finditer(text):
            applied, adopted, never, unknown = map(int, match.groups())
            totals.update(
                recovery_executions_applied=applied,
                recovery_orders_adopted=adopted,
                recovery_never_received=never,
                recovery_unknown_at_broker=unknown,
            )
        totals["restarts_with_recovery"] += bool(_RECOVERY_LINE.search(text))
        for needle in _FORBIDDEN_LOG_TEXT:
            if needle in text:
                problems.append(f"run {run.index}: {needle!r} in {run.log}")
    return dict(totals), problems


# =============================================================================== main


@dataclass(slots=True)
class DrillResult:
    workdir: Path
    runs: list[Run]
    audit: Audit
    recovery: dict[str, int]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.audit.failures

    @property
    def kills_while_trading(self) -> int:
        """Kills that struck while the venue was receiving this run's orders."""
        return sum(r.venue_orders > 0 for r in self.runs[:-1])

    def report(self) -> str:
        killed = self.runs[:-1]
        lines = [
            f"kills: {len(killed)} SIGKILL + 1 final SIGINT in {self.seconds:.1f}s "
            f"(workdir {self.workdir})",
            f"kills while the venue was receiving orders: {self.kills_while_trading}",
            f"kills with orders live at the venue: {sum(r.working_at_kill > 0 for r in killed)}",
        ]
        lines += [f"  {k:<28} {v}" for k, v in {**self.audit.counts, **self.recovery}.items()]
        if self.audit.failures:
            lines.append("FAILED:")
            lines += [f"  - {failure}" for failure in self.audit.failures]
        else:
            lines.append(
                "OK: no order sent twice, every execution recorded once, positions agree, "
                "integrity ok, no order or fill lost"
            )
        return "\n".join(lines)


def drill(
    workdir: Path,
    kills: int,
    seed: int,
    *,
    min_delay: float = 0.8,
    max_delay: float = 3.0,
    final_seconds: float = 3.0,
) -> DrillResult:
    """Run the drill in ``workdir`` (must be empty or absent) and audit the outcome."""
    if workdir.exists() and any(workdir.iterdir()):
        # The audit compares one database with one venue file, both from the first run on.
        raise ValueError(f"{workdir} is not empty; give an empty or new work directory")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    started = time.monotonic()
    runs = run_drill(
        workdir,
        kills,
        seed,
        min_delay=min_delay,
        max_delay=max_delay,
        final_seconds=final_seconds,
    )
    env = drill_env(workdir)
    result = audit(Path(env["DATA_DIR"]) / "trading.db", Path(env["SIM_STATE_FILE"]))
    recovery, log_problems = _log_findings(runs)
    result.failures.extend(log_problems)
    final = runs[-1]
    result.require(final.returncode == 0, f"final run exited {final.returncode}, expected 0")
    early = [r.index for r in runs if r.exited_early]
    result.require(not early, f"runs that ended by themselves before the signal: {early}")
    return DrillResult(workdir, runs, result, recovery, time.monotonic() - started)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.crash_drill",
        description="Kill the headless console with SIGKILL at random moments, restart it, "
        "then check the database against the (persistent) sim venue.",
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs before the final stop")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random kill delays")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="empty or absent directory (default: a new temp)"
    )
    parser.add_argument("--min-delay", type=float, default=0.8, help="s after start, at least")
    parser.add_argument("--max-delay", type=float, default=3.0, help="s after start, at most")
    parser.add_argument(
        "--final-seconds", type=float, default=3.0, help="how long the last run trades"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.kills < 0 or not 0 < args.min_delay <= args.max_delay:
        print("crash_drill: need --kills >= 0 and 0 < --min-delay <= --max-delay", file=sys.stderr)
        return 2
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="crash-drill-"))
    print(f"crash drill: {args.kills} kills, seed {args.seed}, workdir {workdir}", flush=True)
    try:
        result = drill(
            workdir,
            args.kills,
            args.seed,
            min_delay=args.min_delay,
            max_delay=args.max_delay,
            final_seconds=args.final_seconds,
        )
    except ValueError as exc:
        print(f"crash_drill: {exc}", file=sys.stderr)
        return 2
    print()
    print(result.report())
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
