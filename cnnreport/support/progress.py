"""A small progress line on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """``advance(n)`` after each batch; quiet when disabled or when stderr is not a terminal."""

    def __init__(self, total: int, *, enabled: bool = True, label: str = "") -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def advance(self, n: int = 1, label: str | None = None) -> None:
        self.done = min(self.total, self.done + n)
        if label:
            self.label = label
        if self.enabled:
            width = 24
            filled = int(width * self.done / self.total)
            elapsed = time.perf_counter() - self.start
            sys.stderr.write(
                f"\r{self.label:<10} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:5.1f}s"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
