"""The process's heap after start-up (shared by the console, headless and the bench)."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move everything alive after start-up out of the garbage collector's sight.

    The imports (pandas, exchange-calendars, pyarrow, Textual, ib_async) leave a
    few hundred thousand long-lived objects. Every full (generation 2) collection
    walks all of them: 80-110 ms measured here, a pause that stops quotes,
    orders and the UI alike, and the main cause of event-loop lag p99 above
    target (tui/commands/bench_ui.py). Frozen objects are never scanned again; later
    collections only walk what the session itself allocates. One collection
    first, so start-up garbage is freed rather than frozen. The console runs it
    once after its first frame, headless and the bench once trading has started.
    """
    gc.collect()
    gc.freeze()
