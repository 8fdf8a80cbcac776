"""Progress while a report is built: a notebook bar in Jupyter, a line on stderr in a terminal.

In a Jupyter kernel the bar is tqdm's (``tqdm.auto``: a widget where ipywidgets is installed,
else tqdm's text bar in the cell's output). Elsewhere it is one line on stderr, redrawn in
place, shown only when stderr is a terminal, so logs and pipes get nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (notebook, JupyterLab, VS Code), where cells show output."""
    if "ipykernel" not in sys.modules:  # a kernel has imported it long before any report
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and getattr(shell, "kernel", None) is not None


def _notebook_bar(total: int, label: str) -> Any:
    import warnings

    with warnings.catch_warnings():
        # Without ipywidgets tqdm.auto says so and falls back to its text bar, which serves.
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, leave=True, file=sys.stderr)


class Progress:
    """``advance(n)`` after each batch; quiet when disabled, and in a terminal also when stderr
    is not one."""

    def __init__(self, total: int, *, enabled: bool = True, label: str = "") -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self.bar = _notebook_bar(self.total, label) if enabled and in_notebook() else None
        self.enabled = enabled and self.bar is None and sys.stderr.isatty()
        self.start = time.perf_counter()

    def advance(self, n: int = 1, label: str | None = None) -> None:
        before = self.done
        self.done = min(self.total, self.done + n)
        if label:
            self.label = label
        if self.bar is not None:
            if label:
                self.bar.set_description(label, refresh=False)
            self.bar.update(self.done - before)
        if self.enabled:
            width = 24
            filled = int(width * self.done / self.total)
            elapsed = time.perf_counter() - self.start
            sys.stderr.write(
                f"\r{self.label:<10} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:5.1f}s"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
