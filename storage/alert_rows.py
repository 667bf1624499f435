"""Alerts and their delivery summaries, written by row id.

Alerts are inserted one by one so that their row ids are known: the alert manager
reports each channel's outcome later (``AlertDelivered``), and the latest
per-channel summary is written into that alert's ``delivery`` column. Within one
write, inserts come before updates, so a delivery event published before the
recorder saw its ``AlertRaised`` (typed subscribers run before the recorder's
catch-all handler) still lands on the right row. A summary for an alert whose row id
is no longer remembered is matched by time, key and message instead.
"""

from __future__ import annotations

from collections import OrderedDict

from core.model import Alert
from storage.database import Database
from storage.pending import PendingRows
from storage.rows import alert_row

# Row ids of recent alerts, for delivery updates that arrive after their insert.
REMEMBERED_ALERTS = 2_000

# id(alert) -> (alert, latest delivery summary): only the newest summary matters.
Deliveries = dict[int, tuple[Alert, str]]
# id(alert) -> (alert, its row id)
RowIds = dict[int, tuple[Alert, int]]


class AlertRows:
    """Alerts and delivery summaries waiting to be written, and recent alerts' row ids.

    Waiting alerts count in ``pending.count`` (they go with the batches)."""

    def __init__(self, pending: PendingRows) -> None:
        self._pending = pending
        self.alerts: list[Alert] = []
        self.deliveries: Deliveries = {}
        self._row_ids: OrderedDict[int, tuple[Alert, int]] = OrderedDict()

    def on_raised(self, alert: Alert) -> None:
        pending = self._pending
        self.alerts.append(alert)
        pending.count += 1
        if pending.count >= pending.flush_rows:
            pending.wake.set()

    def on_delivered(self, alert: Alert, delivery: str) -> None:
        self.deliveries[id(alert)] = (alert, delivery)
        self._pending.wake.set()  # rare, and the operator looks for it: no need to batch

    def take(self) -> tuple[list[Alert], Deliveries]:
        """Everything waiting; ``restore`` it if the write fails. The caller keeps
        ``pending.count`` right (``PendingRows.take_chunk`` already left alerts out)."""
        alerts, self.alerts = self.alerts, []
        deliveries, self.deliveries = self.deliveries, {}
        return alerts, deliveries

    def restore(self, alerts: list[Alert], deliveries: Deliveries) -> None:
        self.alerts[:0] = alerts
        self._pending.count += len(alerts)
        # A summary that arrived meanwhile is newer than the one being restored.
        self.deliveries = {**deliveries, **self.deliveries}

    async def write_in_transaction(
        self, db: Database, alerts: list[Alert], deliveries: Deliveries
    ) -> RowIds:
        """Insert alerts, then apply delivery summaries; returns the new row ids
        (``remember`` them once the transaction has committed)."""
        ids = await db.insert_alerts_in_transaction([alert_row(a) for a in alerts])
        new_ids = {id(a): (a, row_id) for a, row_id in zip(alerts, ids, strict=True)}
        by_id: list[tuple[int, str]] = []
        for key, (alert, delivery) in deliveries.items():
            known = new_ids.get(key) or self._row_ids.get(key)
            # ``is`` guards against a recycled id() of an alert long gone.
            if known is not None and known[0] is alert:
                by_id.append((known[1], delivery))
            else:
                await db.update_alert_delivery_by_match_in_transaction(
                    alert.ts, alert.key, alert.message, delivery
                )
        await db.update_alert_delivery_in_transaction(by_id)
        return new_ids

    def remember(self, new_ids: RowIds) -> None:
        self._row_ids.update(new_ids)
        while len(self._row_ids) > REMEMBERED_ALERTS:
            self._row_ids.popitem(last=False)
