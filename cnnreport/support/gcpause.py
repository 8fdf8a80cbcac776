"""Python's cyclic garbage collector held off while a report's figures and page are made.

Making the figures and the page allocates tens of thousands of small objects (tiles,
statistics rows, template output), and every few thousand allocations the collector walks
*every* tracked object of the process: torch's and numpy's modules, the user's model, the
notebook's state. On a ResNet-50 report that was about 0.07 s of ~1 s, for nothing: this
code makes no reference cycles. Reference counting still frees every array the moment it is
dropped; the collector is switched back on (if it was on) when the block ends.

Around the user's forward passes too, but a model may make cyclic garbage on every batch:
:func:`collect_young` reclaims it after each batch, looking only at the objects made since
the last collection (cheap), not at the whole process.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def paused_gc() -> Iterator[bool]:
    """The cyclic collector off for the block, then back to how it was; yields whether it was on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield was_enabled
    finally:
        if was_enabled:
            gc.enable()


def collect_young(enabled: bool) -> None:
    """Between forward batches: collect the objects made since the last collection (a model's
    per-batch cycles among them) without walking the whole process, if the collector was on."""
    if enabled:
        gc.collect(0)


def gc_paused(function: F) -> F:
    """Run ``function`` inside :func:`paused_gc`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with paused_gc():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
