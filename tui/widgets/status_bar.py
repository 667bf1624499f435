"""Status bar: mode, account, connection, trading state and reason, data health, time.

State is expressed as CSS classes on the bar and its labels (``-live``,
``-tripped`` ...); console.tcss decides the colours. Every state is also spelled
out in words, so nothing depends on colour.
"""

from __future__ import annotations

from collections import Counter
from datetime import tzinfo

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

from core.model import TradingMode, TradingState
from core.snapshot import SystemSnapshot
from tui.widgets.base import set_label_text

MODE_LABEL = {TradingMode.SIM: "SIM", TradingMode.PAPER: "PAPER", TradingMode.LIVE: "LIVE"}


class StatusBar(Vertical):
    def __init__(self, tz: tzinfo, *, id: str = "status") -> None:
        super().__init__(id=id)
        self._tz = tz
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
        self._set("state", f" {state} ")
        self._set("clock", snapshot.now.astimezone(self._tz).strftime("%H:%M:%S %Z"))
        self._set("reason", _state_words(snapshot))
        self._set("health", _health(snapshot))
        self._set("strategy", snapshot.strategy_name)
        self._set(
            "risk", f"risk: {snapshot.risk.clamped} clamped, {snapshot.risk.rejected} rejected"
        )


def _state_words(snapshot: SystemSnapshot) -> str:
    risk = snapshot.risk
    if risk.state is TradingState.TRIPPED:
        return f"BREAKER: {risk.trip_reason or risk.state_reason} - r to review"
    if risk.state is TradingState.HALTED:
        return f"no new risk: {risk.state_reason or 'halted'} - h to resume"
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
