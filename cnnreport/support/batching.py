"""How many probes go through the model at once when the user does not say.

Batches of :data:`DEFAULT_BATCH`. After the first, the capture knows what the page's tiles
will hold once every probe has run and how large one probe's largest activation is; where
the rest in full batches would take the pass above :data:`PEAK_ACTIVATIONS` times the largest
activation of all the probes together (issue 4's memory rule), the later batches are made
smaller. That happens for deep models whose many sections' tiles fill the room: a 100-layer
plain stack goes 4, 3, 1 instead of 4, 4. Batches whose activations are small
(:data:`TAPER_FLOOR_BYTES`) are never split: there, the tiles are the size of the
activations themselves and the memory at stake is a few megabytes, while more batches cost
time. An explicit ``--batch-size`` is always taken as given.
"""

from __future__ import annotations

import math

#: Probes in a batch by default: on a CPU a batch of 4 runs about as fast per probe as one of 8
#: (ResNet-50: ~2% slower) and holds half its memory.
DEFAULT_BATCH = 4
#: Activations of a batch alive at once in a forward pass, assumed (ResNet-50 measures 3.5, a
#: plain convolution stack 3.0).
LIVE_ACTIVATIONS = 3.5
#: The memory rule: the pass's peak within this many times the largest activation of all probes.
PEAK_ACTIVATIONS = 2.0
#: A batch whose largest activation is below this is never split.
TAPER_FLOOR_BYTES = 8 * 1024 * 1024


def next_batch_size(
    first: int,
    *,
    probes: int,
    done: int,
    shown: int,
    largest_per_probe: int,
    tile_bytes: int,
) -> int:
    """The size of the next automatic batch.

    ``first``: the first batch's size; ``probes``: all probes; ``done``: probes forwarded so
    far; ``shown``: how many of all probes get tiles (``max_probes``); ``largest_per_probe``:
    bytes of one probe's largest activation; ``tile_bytes``: bytes of tiles kept so far.
    """
    if done <= 0 or largest_per_probe <= 0 or first * largest_per_probe < TAPER_FLOOR_BYTES:
        return first
    shown_done = min(done, shown)
    final_tiles = tile_bytes * shown / shown_done if shown_done else tile_bytes
    room = PEAK_ACTIVATIONS * probes * largest_per_probe - final_tiles
    size = math.floor(room / (LIVE_ACTIVATIONS * largest_per_probe))
    return max(1, min(first, size))
