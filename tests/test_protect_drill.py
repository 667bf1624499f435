"""The protective-stop drill (tests/protect_drill.py): SIGKILLs with positions open, against
the persistent sim venue and against the fake TWS; after every restart each position
has exactly one stop at the venue for its whole quantity."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import protect_drill
from tests.protect_drill import ProtectAudit, VenueBook, check


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("venue", "kills"), [("sim", 8), ("tws", 6)])
def test_every_position_keeps_exactly_one_stop_at_the_venue_across_kills(
    tmp_path: Path, venue: str, kills: int
) -> None:
    result = protect_drill.drill(tmp_path / "drill", kills, seed=14, venue=venue)
    report = result.report()
    print(report)
    assert not result.failures, report
    assert result.kills == kills and result.audits == kills
    # The drill must have had positions to protect after restarts, and stops to adopt.
    assert result.positions_checked >= kills // 2, report
    assert result.stops_adopted > 0, report


def _book(**positions: int) -> VenueBook:
    book = VenueBook()
    for symbol, quantity in positions.items():
        book.positions[symbol] = quantity
    return book


def _stop(book: VenueBook, cid: str, symbol: str, side: str, quantity: int) -> None:
    book.sent[cid] += 1
    book.symbol[cid], book.side[cid], book.quantity[cid] = symbol, side, quantity
    book.status[cid] = "Submitted"


def test_the_audit_catches_a_missing_a_short_a_second_and_a_stray_stop() -> None:
    book = _book(AAPL=100, MSFT=-40, SPY=0, QQQ=30)
    _stop(book, "A-SL", "AAPL", "SELL", 60)  # short of the position
    _stop(book, "M1-SL", "MSFT", "BUY", 40)
    _stop(book, "M2-SL", "MSFT", "BUY", 40)  # a second one
    _stop(book, "S-SL", "SPY", "SELL", 10)  # a flat symbol's
    result = ProtectAudit()  # QQQ has none
    check(book, None, 1, result)
    text = "\n".join(result.failures)
    assert len(result.failures) == 4, text
    for symbol in ("AAPL", "MSFT", "SPY", "QQQ"):
        assert symbol in text

    good = _book(AAPL=100)
    _stop(good, "A-SL", "AAPL", "SELL", 100)
    clean = ProtectAudit()
    check(good, good, 2, clean)
    assert clean.failures == [] and clean.positions_checked == 1 and clean.stops_adopted == 1
