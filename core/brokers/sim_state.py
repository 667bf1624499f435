"""The simulated venue's memory on disk, so it can stand in for a broker that outlives us.

An append-only JSON-lines file: one line per order the venue accepted, per status
change and per fill. Each line is flushed as written, so a SIGKILL of the process
loses nothing the venue had acknowledged; a line torn by the kill is the only one
that can be incomplete, and it is ignored on load (the venue had not acted on it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from loguru import logger


class SimStateLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO | None = None

    def load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records: list[dict[str, Any]] = []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number != len(lines):
                    raise ValueError(f"{self.path}: line {number} is corrupt") from None
                logger.warning("sim state: ignoring a torn last line", path=str(self.path))
                self._truncate_torn_tail(lines[:-1])
        return records

    def _truncate_torn_tail(self, good_lines: list[str]) -> None:
        text = "".join(f"{line}\n" for line in good_lines)
        self.path.write_text(text, encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
