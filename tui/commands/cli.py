"""`trading-console` entry point and its subcommands.

Exit codes: 0 clean stop, 1 crash, 2 bad configuration or usage (before anything starts).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.parquet as pq
from loguru import logger

from core.brokers.base import BrokerConnectError
from core.brokers.factory import BrokerUnavailable
from core.config import TICKER, ConfigError, Settings, load_settings
from core.data_files import DataFileError
from core.model import Quote, TradingMode
from core.strategy.loader import StrategyLoadError, build_strategy
from storage.archive import ArchiveError, archive_files, check_file_schema
from storage.order_journal import JournalInUse
from storage.schema import DatabaseRefused
from tui.commands.logs import redact_process_output

EXIT_OK, EXIT_CRASH, EXIT_CONFIG = 0, 1, 2
DEFAULT_ENV_FILE = ".env"
# Days the database and archive can name: timestamps are stored as ISO text, and the
# day after the last one must still be a date (9999-12-31 + 1 overflows).
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2200, 12, 31)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `trading-console replay: --date: ... (see --help)`."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def _utc_day(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, want a date YYYY-MM-DD") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"got {text!r}, want a day from {FIRST_DAY} to {LAST_DAY}")
    return day


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, want a whole number >= 1") from None
    if not 1 <= value <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"got {text!r}, want a whole number from 1 to 1e9")
    return value


def _amount(minimum: float, *, inclusive: bool) -> Callable[[str], float]:
    op = ">=" if inclusive else ">"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
        if not ok or value > 1e15:
            raise argparse.ArgumentTypeError(
                f"got {text!r}, want a finite number {op} {minimum:g} and <= 1e15"
            )
        return value

    return parse


def _ticker(text: str) -> str:
    symbol = text.strip().upper()
    if not TICKER.fullmatch(symbol):
        raise argparse.ArgumentTypeError(f"got {text!r}, want a ticker such as AAPL or BRK.B")
    return symbol


def _bar(text: str) -> str:
    from tui.commands.history import parse_bar

    try:
        parse_bar(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--bar {text!r}: ")) from None
    return text


def _path(text: str) -> Path:
    if not text.strip() or "\x00" in text:
        raise argparse.ArgumentTypeError(f"got {text!r}, want a path")
    return Path(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trading-console",
        description="Terminal trading desk for an Interactive Brokers account (sim by default).",
    )
    parser.add_argument(
        "--env-file", type=_path, default=None, help="settings file (default ./.env if present)"
    )
    parser.add_argument(
        "--headless", action="store_true", help="run the trading core without the console UI"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="confirm real-money trading (required together with TRADING_MODE=live)",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run trading (the default)")
    sub.add_parser("check", help="validate settings and print them, secrets masked")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("init", help="create or migrate the database")
    bench = sub.add_parser("bench", help="print performance figures")
    bench.add_argument(
        "--quotes", type=_count, default=1_000_000, help="synthetic quotes to replay (default 1M)"
    )
    bench.add_argument("--symbols", type=_count, default=5, help="symbols (default 5)")
    bench.add_argument(
        "--order-heavy",
        action="store_true",
        help="a strategy that trades on every quote instead of the bar MA cross",
    )
    bench.add_argument(
        "--seconds",
        type=_amount(0.0, inclusive=False),
        default=10.0,
        help="length of each UI run",
    )
    bench.add_argument("--skip-ui", action="store_true", help="only the pipeline figures")
    history = sub.add_parser("history", help="download IB historical bars to Parquet")
    history.add_argument("symbol", type=_ticker)
    history.add_argument("--days", type=_count, default=5, help="how many days back (default 5)")
    history.add_argument(
        "--bar", type=_bar, default="1min", help="bar size: 1min, 5mins, 1h, 1day ..."
    )
    history.add_argument("--out", type=_path, default=None, help="default DATA_DIR/history")
    sub.add_parser(
        "watchdog",
        help="check the heartbeat; alert once when the console stops or comes back (cron)",
    )
    sub.add_parser("alert-test", help="send a test message through every alert channel")
    export = sub.add_parser("export", help="write a UTC day of every table as Parquet (hive)")
    export.add_argument("--date", required=True, type=_utc_day, metavar="YYYY-MM-DD")
    export.add_argument("--to", required=True, type=_path, metavar="DIR")
    imp = sub.add_parser("import", help="load a Parquet archive into the database (no dupes)")
    imp.add_argument("path", type=_path, metavar="PATH")
    prune = sub.add_parser("prune", help="delete archived quotes before a UTC day from SQLite")
    prune.add_argument("--before", required=True, type=_utc_day, metavar="YYYY-MM-DD")
    prune.add_argument("--archive", required=True, type=_path, metavar="DIR")
    _add_offline_parsers(sub)
    return parser


def _add_offline_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    backtest = sub.add_parser(
        "backtest", help="run the strategy over bar or quote files (CSV or Parquet)"
    )
    backtest.add_argument(
        "--data",
        type=_path,
        required=True,
        help="a CSV/Parquet file or a directory of them: bars (timestamp, open, high, low, "
        "close[, volume]) or quotes (timestamp, bid, ask); one file per symbol or a symbol column",
    )
    backtest.add_argument(
        "--strategy", default=None, metavar="module:Class", help="strategy (default STRATEGY)"
    )
    backtest.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="strategy parameter, repeatable; values read as JSON (5, 0.5, true), else text",
    )
    backtest.add_argument(
        "--cash",
        type=_amount(0.0, inclusive=False),
        default=None,
        help="starting cash, $ (default SIM_STARTING_CASH)",
    )
    backtest.add_argument(
        "--commission",
        type=_amount(0.0, inclusive=True),
        default=None,
        help="commission, $ per share (default SIM_COMMISSION_PER_SHARE)",
    )
    backtest.add_argument(
        "--fill-at",
        choices=("next-open", "close"),
        default="next-open",
        help="bars: market orders fill at the next bar's open (default) or this bar's close",
    )
    backtest.add_argument(
        "--out",
        type=_path,
        default=Path("backtest-results"),
        help="output directory (default ./backtest-results)",
    )
    replay = sub.add_parser(
        "replay", help="re-run a recorded day's quotes through the current strategy and risk"
    )
    replay.add_argument(
        "--date",
        type=_utc_day,
        required=True,
        metavar="YYYY-MM-DD",
        help="the UTC day to replay",
    )
    replay.add_argument(
        "--db", type=_path, default=None, help="database to read (default DATABASE_FILE)"
    )
    replay.add_argument(
        "--archive",
        type=_path,
        default=None,
        metavar="DIR",
        help="read the Parquet archive in DIR instead of the database",
    )
    replay.add_argument(
        "--out", type=_path, default=None, help="output directory (default ./replay-YYYY-MM-DD)"
    )


def _settings_or_exit(env_file: Path | None) -> Settings:
    """Settings from the environment and the env file; exit 2 listing every bad key.

    ``--env-file`` names a file that must exist; without it ./.env is read when present.
    """
    warnings: list[str] = []
    try:
        settings = load_settings(
            env_file=env_file or DEFAULT_ENV_FILE,
            must_exist=env_file is not None,
            warnings=warnings,
        )
    except ConfigError as exc:
        print("trading-console: invalid settings, nothing was started:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    for line in warnings:
        print(f"trading-console: warning: {line}", file=sys.stderr)
    return settings


class _IdleContext:
    """A strategy context with no positions or quotes, to build the strategy for a check."""

    def position(self, symbol: str) -> int:
        return 0

    def latest_quote(self, symbol: str) -> Quote | None:
        return None

    def now(self) -> datetime:
        return datetime.now(UTC)


def strategy_problem(settings: Settings) -> str | None:
    """Why the configured STRATEGY with STRATEGY_PARAMS cannot be built, as run builds it."""
    try:
        build_strategy(
            settings.strategy, settings.symbols, _IdleContext(), settings.strategy_params
        )
    except StrategyLoadError as exc:
        return str(exc)
    return None


def run_refusal(settings: Settings, *, live_confirmed: bool) -> str | None:
    """What makes `run` refuse to start before it touches any file; `check` says the same."""
    return live_guard_error(settings, confirmed=live_confirmed) or strategy_problem(settings)


def live_guard_error(settings: Settings, *, confirmed: bool) -> str | None:
    """Real money needs two deliberate signals: TRADING_MODE=live and --live."""
    live = settings.trading_mode is TradingMode.LIVE
    if live and not confirmed:
        return "TRADING_MODE=live trades real money: add --live on the command line to confirm"
    if confirmed and not live:
        return f"--live given but TRADING_MODE={settings.trading_mode}: set TRADING_MODE=live"
    return None


def cmd_check(settings: Settings, *, live_confirmed: bool) -> int:
    values = settings.masked()
    width = max(len(k) for k in values)
    for key, value in values.items():
        print(f"{key:<{width}}  {value}")
    refusal = run_refusal(settings, live_confirmed=live_confirmed)
    if refusal is None:
        from storage.database import check_database_file, probe_directory

        try:
            # As run checks them before writing, but leaving nothing behind: DATA_DIR
            # writable (a probe file, removed), the database sound (read only).
            probe_directory(settings.data_dir, "DATA_DIR")
            if settings.database_path.exists():
                check_database_file(settings.database_path)
        except DatabaseRefused as exc:
            refusal = str(exc)
    if refusal:
        print(f"trading-console: {refusal}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"\nsettings OK (database {settings.database_path}, logs {settings.log_path})")
    return EXIT_OK


async def cmd_db_init(settings: Settings) -> int:
    from storage.database import init_database

    await init_database(settings.database_path)
    print(f"database ready: {settings.database_path}")
    return EXIT_OK


async def cmd_bench(
    quotes: int, symbols: int, order_heavy: bool, seconds: float, skip_ui: bool
) -> int:
    from tui.commands.bench import bench_pipeline, print_pipeline

    if quotes <= 0 or symbols <= 0:
        print("trading-console bench: --quotes and --symbols must be positive", file=sys.stderr)
        return EXIT_CONFIG
    logger.remove()  # figures only; the runs would otherwise log every order
    print_pipeline(await bench_pipeline(quotes, symbols, order_heavy=order_heavy))
    if not skip_ui:
        from tui.commands.bench import print_ui
        from tui.commands.bench_ui import bench_ui

        for total in (80.0, 2_000.0):
            print_ui(total, await bench_ui(total, seconds=seconds))
    return EXIT_OK


def cmd_offline(settings: Settings, args: argparse.Namespace) -> int:
    """backtest / replay: simulated clock and venue, whatever TRADING_MODE says."""
    from tui.commands.backtest_cmd import ParamError, parse_params, run_backtest, run_replay

    logger.remove()  # the run logs to <out>/run.log; the terminal shows the report
    if args.command == "replay":
        out = args.out or Path(f"replay-{args.date.isoformat()}")
        return asyncio.run(
            run_replay(
                settings, args.date, source_db=args.db, archive_dir=args.archive, out_dir=out
            )
        )
    try:
        params = parse_params(args.param)
    except ParamError as exc:
        print(f"trading-console: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(
        run_backtest(
            settings,
            args.data,
            strategy=args.strategy,
            params=params,
            cash=args.cash,
            commission=args.commission,
            fill_at=args.fill_at,
            out_dir=args.out,
        )
    )


def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    from tui.commands import archive_cmd

    if args.command == "export":
        return asyncio.run(archive_cmd.run_export(settings, args.date, args.to))
    if args.command == "import":
        return asyncio.run(archive_cmd.run_import(settings, args.path))
    return asyncio.run(archive_cmd.run_prune(settings, args.before, args.archive))


def cmd_history(settings: Settings, symbol: str, days: int, bar: str, out: Path | None) -> int:
    from tui.commands.history import download_history

    try:
        path = asyncio.run(
            download_history(settings, symbol, days, bar, out or settings.data_dir / "history")
        )
    except (ValueError, BrokerConnectError) as exc:
        print(f"trading-console history: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"saved {path}")
    return EXIT_OK


async def run_headless(settings: Settings) -> int:
    """Trade until SIGINT/SIGTERM/SIGHUP; then stop the strategy, cancel working orders,
    flush. The stop is bounded (runtime.STOP_BOUND_SECONDS); a third signal forces it."""
    from tui.commands.runtime import build_runtime
    from tui.heap import freeze_startup_heap

    runtime = await build_runtime(settings)
    runtime.exit_watchdog = True  # the stop bound holds for this process
    system = runtime.system
    runtime.start_background()
    stop_requested = asyncio.Event()
    # Installed for the rest of the process: a signal during the stop is counted, never
    # a KeyboardInterrupt out of asyncio.run.
    signals = runtime.stop_signals(lambda _reason: stop_requested.set())
    exit_code = EXIT_OK
    try:
        await system.start()
        system.start_timer()
        freeze_startup_heap()
        logger.info("headless trading started; Ctrl+C, SIGTERM or SIGHUP stops gracefully")
        stop_wait = asyncio.create_task(stop_requested.wait())
        crash_wait = asyncio.create_task(system.stopped.wait())
        await asyncio.wait({stop_wait, crash_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        crash_wait.cancel()
        runtime.begin_stop()
        if system.fatal_error is not None:
            exit_code = EXIT_CRASH
            await runtime.stop_system(f"crash: {system.fatal_error!r}")
        elif not await runtime.stop_system(f"signal {signals.first or 'received'}"):
            exit_code = EXIT_CRASH
    except Exception as exc:
        # Crashes outside the core's tasks (start/stop themselves) page the operator too;
        # core task crashes are reported by the runtime's monitoring on its own.
        await runtime.report_crash(exc)
        raise
    finally:
        closed = await runtime.close()  # logs the error line itself (stderr here)
    if not closed:
        exit_code = EXIT_CRASH
    logger.info("stopped, exit {code}", code=exit_code)
    return exit_code


async def run_tui(settings: Settings) -> int:
    from tui.commands.console_cmd import run_console
    from tui.commands.runtime import build_runtime

    runtime = await build_runtime(settings)
    runtime.exit_watchdog = True  # the stop bound holds for this process
    runtime.start_background()
    exit_code = EXIT_CRASH
    try:
        exit_code = await run_console(runtime)
    except Exception as exc:
        await runtime.report_crash(exc)
        raise
    finally:
        closed = await runtime.close()
        if not closed:
            # The log goes to the file only under the console; the terminal is back now.
            print(f"trading-console: {runtime.close_error}", file=sys.stderr)
    return exit_code if closed else EXIT_CRASH


def _ignore_stop_signals() -> None:
    # The loop's handlers went with it: a late signal must not print a traceback on exit.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


# What an operator's argument or file can cause in a command that places no trade: one
# line and exit 2, never a traceback (a damaged database, a path that is a file, ...).
OPERATOR_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseRefused,
    sqlite3.DatabaseError,
    ArchiveError,
    DataFileError,
    StrategyLoadError,
    OSError,
)


def _argument_problem(settings: Settings, args: argparse.Namespace) -> str | None:
    """Paths that cannot be what the subcommand needs, found before anything is opened
    (opening a missing database would create it) or a log file is started."""
    command = args.command
    if command in ("export", "prune") and not settings.database_path.exists():
        return f"no database at {settings.database_path}: set DATABASE_FILE"
    if command == "replay" and args.db is not None and args.db.is_dir():
        return f"--db {args.db}: is a directory, want an SQLite database file"
    if command == "import":
        # Checked before the database is opened: opening it creates it.
        if not args.path.exists():
            return f"{args.path}: no such file or directory"
        try:
            for table, file in archive_files(args.path):
                check_file_schema(table, pq.read_schema(file), file)
        except (ArchiveError, ValueError) as exc:
            return str(exc)
        except (OSError, pa.ArrowException) as exc:
            return f"{args.path}: not a Parquet archive ({_one_line(exc)})"
    outputs = {
        "export": ("--to", args.__dict__.get("to")),
        "backtest": ("--out", args.__dict__.get("out")),
        "replay": ("--out", args.__dict__.get("out")),
        "history": ("--out", args.__dict__.get("out")),
        "prune": ("--archive", args.__dict__.get("archive")),
    }
    flag, path = outputs.get(command, ("", None))
    if path is not None and path.exists() and not path.is_dir():
        return f"{flag} {path}: is a file, want a directory"
    return None


def _non_trading_command(settings: Settings, args: argparse.Namespace) -> int | None:
    """Run a subcommand that places no trade (every mode, no --live); None for run."""
    from tui.commands.logs import configure_logging_from_settings

    command = args.command
    if command == "check":
        return cmd_check(settings, live_confirmed=args.live)
    if command in ("backtest", "replay"):
        return cmd_offline(settings, args)  # never touches a broker: no live guard needed
    if command == "watchdog":
        configure_logging_from_settings(settings, console=True)
        from tui.commands.watchdog import run_watchdog

        return run_watchdog(settings)
    if command == "alert-test":
        configure_logging_from_settings(settings, console=False)
        from tui.commands.alert_test import run_alert_test

        return asyncio.run(run_alert_test(settings))
    if command in ("export", "import", "prune"):
        configure_logging_from_settings(settings, console=True)
        return cmd_archive(settings, args)
    if command == "history":
        configure_logging_from_settings(settings, console=True)
        return cmd_history(settings, args.symbol, args.days, args.bar, args.out)
    if command == "bench":  # synthetic quotes on the simulator whatever TRADING_MODE says
        return asyncio.run(
            cmd_bench(args.quotes, args.symbols, args.order_heavy, args.seconds, args.skip_ui)
        )
    if command == "db":  # creates or migrates the schema; places no trade
        configure_logging_from_settings(settings, console=True)
        return asyncio.run(cmd_db_init(settings))
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings_or_exit(args.env_file)
    redact_process_output(settings)  # no secret in any traceback or line on stdout/stderr
    prefix = f"trading-console {args.command}" if args.command else "trading-console"
    problem = _argument_problem(settings, args)
    if problem:
        print(f"{prefix}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        code = _non_trading_command(settings, args)
    except OPERATOR_ERRORS as exc:
        print(f"{prefix}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    if code is not None:
        return code
    from tui.commands.logs import configure_logging_from_settings

    guard = run_refusal(settings, live_confirmed=args.live)
    if guard:
        print(f"trading-console: {guard}", file=sys.stderr)
        return EXIT_CONFIG
    # The console owns the terminal: log to the file only, never to stderr under the TUI.
    configure_logging_from_settings(settings, console=args.headless)
    try:
        if args.headless:
            return asyncio.run(run_headless(settings))
        return asyncio.run(run_tui(settings))
    except (StrategyLoadError, BrokerUnavailable, BrokerConnectError, JournalInUse) as exc:
        print(f"trading-console: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        _ignore_stop_signals()


if __name__ == "__main__":
    raise SystemExit(main())
