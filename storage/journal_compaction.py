"""When the order journal file may be emptied, or rid of its committed part.

Every row ``write_orders`` appends to the file is queued for the database in the
same synchronous step (``storage.order_journaling``), so a batch taken when the file
was ``size`` bytes long holds every row those bytes hold, except rows of earlier
batches. Once that batch commits, those bytes are all in the database unless an
earlier batch is still in flight, or failed and put its rows back after this batch
was taken. The file is then emptied if nothing was appended meanwhile; if orders
never pause, it is rewritten without the committed part once that is
``JOURNAL_COMPACT_BYTES`` or more.
"""

from __future__ import annotations

from storage.order_journal import OrderJournalFile

# The order journal file is rewritten without its committed part once that is this big,
# when orders arrive too often for it ever to be found fully committed and emptied.
JOURNAL_COMPACT_BYTES = 1 << 20

# What ``committed`` needs to know about a batch: the file's size and the number of
# failed batches when it was taken.
Taken = tuple[int, int]


class JournalCompaction:
    """Follows the batches between taken and committed (or failed)."""

    def __init__(self, journal: OrderJournalFile) -> None:
        self._journal = journal
        self.in_flight = 0
        self._failures = 0

    def taken(self) -> Taken:
        """A batch was taken; pass the result to ``committed`` when it commits."""
        self.in_flight += 1
        return self._journal.size, self._failures

    def failed(self) -> None:
        """A batch failed; its rows go back to the pending ones."""
        self.in_flight -= 1
        self._failures += 1

    def committed(self, taken: Taken) -> None:
        """A batch committed: empty or compact the journal file if that is safe now."""
        self.in_flight -= 1
        size, failures = taken
        journal = self._journal
        if not size or failures != self._failures or self.in_flight:
            return
        if journal.size == size:
            journal.clear()
        elif size >= JOURNAL_COMPACT_BYTES:
            # Orders keep coming while batches are in flight: drop what is in the
            # database, keep the rest (written anew; a few hundred bytes).
            journal.drop_prefix(size)
