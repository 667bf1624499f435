"""Status bar: mode, account, connection, trading state and reason, data health, time.

State is expressed as CSS classes on the bar and its labels (``-live``,
``-tripped`` ...); console.tcss decides the colours. Every state is also spelled
out in words, so nothing depends on colour.
"""

from __future__ import annotations

from collections import Counter
from datetime import tzinfo
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

from core.backend import SystemSnapshot
from core.model import HaltReason, TradingMode, TradingState
from tui.console.widgets.base import set_label_text

MODE_LABEL = {TradingMode.SIM: "SIM", TradingMode.PAPER: "PAPER", TradingMode.LIVE: "LIVE"}


class StatusBar(Vertical):
    def __init__(self, tz: tzinfo, stop_file: Path | None = None, *, id: str = "status") -> None:
        super().__init__(id=id)
        self._tz = tz
        self._stop_file = stop_file
        names = (
            "mode",
            "account",
            "conn",
            "state",
            "strategy",
            "clock",
            "reason",
            "health",
            "risk",
        )
        self._labels = {n: Label("", id=f"status-{n}", markup=False) for n in names}
        self._shown: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        labels = self._labels
        # Most important first: a narrow terminal clips from the right.
        with Horizontal(id="status-line1"):
            for name in ("mode", "account", "conn", "state", "strategy", "clock"):
                yield labels[name]
        with Horizontal(id="status-line2"):
            for name in ("reason", "health", "risk"):
                yield labels[name]

    def text_of(self, name: str) -> str:
        return self._shown.get(name, "")

    def _set(self, name: str, text: str) -> None:
        old = self._shown.get(name)
        if old != text:
            self._shown[name] = text
            set_label_text(self._labels[name], old or "", text)

    def update_snapshot(self, snapshot: SystemSnapshot) -> None:
        mode, state = snapshot.mode, snapshot.risk.state
        self.set_class(mode is TradingMode.LIVE, "-live")
        self.set_class(mode is TradingMode.PAPER, "-paper")
        self.set_class(state is TradingState.HALTED, "-halted")
        self.set_class(state is TradingState.TRIPPED, "-tripped")
        self.set_class(not snapshot.connected, "-disconnected")
        self.set_class(bool(snapshot.stale_symbols), "-stale")
        label = MODE_LABEL[mode]
        self._set("mode", f" {label} " if mode is not TradingMode.LIVE else " LIVE - REAL MONEY ")
        self._set("account", snapshot.account_id or "no account")
        broker = snapshot.broker_name
        self._set("conn", f"{broker} connected" if snapshot.connected else f"{broker} DISCONNECTED")
        self._set("state", f" {state_label(snapshot)} ")
        self._set("clock", snapshot.now.astimezone(self._tz).strftime("%H:%M:%S %Z"))
        self._set("reason", state_words(snapshot, self._stop_file))
        self._set("health", _health(snapshot))
        self._set("strategy", snapshot.strategy_name)
        self._set(
            "risk", f"risk: {snapshot.risk.clamped} clamped, {snapshot.risk.rejected} rejected"
        )


def state_label(snapshot: SystemSnapshot) -> str:
    """The one word the operator reads first.

    TRIPPED wins (money was lost and positions were closed); then a lost broker
    connection, because while it lasts no order can be sent whatever the trading
    state says (issue 4: "trading state shows DISCONNECTED"); then HALTED, naming
    the STOP file when that is why, since only removing the file lets h resume.
    """
    risk = snapshot.risk
    if risk.state is TradingState.TRIPPED:
        return "TRIPPED"
    if not snapshot.connected:
        return "DISCONNECTED"
    if risk.state is TradingState.HALTED and risk.halt_reason is HaltReason.STOP_FILE:
        return f"HALTED ({HaltReason.STOP_FILE.value})"
    return str(risk.state)


def state_words(snapshot: SystemSnapshot, stop_file: Path | None = None) -> str:
    """Why the state is what it is and what the operator can do about it."""
    risk = snapshot.risk
    if risk.state is TradingState.TRIPPED:
        reason = risk.trip_reason or risk.state_reason
        return f"BREAKER TRIPPED: {reason} - r to review"
    if not snapshot.connected:
        underneath = f"{risk.state}" + (f": {risk.state_reason}" if risk.state_reason else "")
        return f"BROKER DISCONNECTED: no orders can be sent; reconnecting (state {underneath})"
    if risk.state is TradingState.HALTED:
        if risk.halt_reason is HaltReason.STOP_FILE:
            where = str(stop_file) if stop_file is not None else "the STOP file"
            return f"STOP file present: remove {where}, then h to resume"
        return f"HALTED: {risk.state_reason or 'operator'} - no new risk; h to resume"
    return "new orders allowed"


def _health(snapshot: SystemSnapshot) -> str:
    """Data health in words: how many symbols stream, poll or simulate; how many are stale."""
    sources = Counter(q.source for q in snapshot.quotes if q.source != "-")
    parts = [f"{n} {source}" for source, n in sorted(sources.items())]
    waiting = sum(1 for q in snapshot.quotes if q.source == "-")
    if waiting:
        parts.append(f"{waiting} no data")
    stale = len(snapshot.stale_symbols)
    parts.append(f"{stale} STALE" if stale else "0 stale")
    return "data: " + ", ".join(parts)
