"""Issue 14.3's sparse class-name map: the 30-byte file ``{"0": "cat", "20000000": "dog"}``.

Runs ``cnnreport generate`` on a tiny 4-class CNN with that file as ``--class-names`` in a
child process and prints its wall time, its peak RSS (``ru_maxrss`` of the child) and the size
of the page it wrote, beside the same run without class names. Before the fix the page was
389 MB; now the map stays two entries and the report holds one name per class of the model.

    python benchmarks/bench_class_map.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
    """
)


def run(folder: Path, extra: list[str]) -> tuple[float, float, float]:
    """(seconds, peak RSS MB, page MB) of one generate run in a child process."""
    out = folder / "r.html"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cnnreport.cli", "generate", "net.py:Net", "--input-size", "3", "32", "32", "-q", "-o", str(out), *extra],
        cwd=folder, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB; the largest child so far
    return seconds, max(peak, before) / 1024, out.stat().st_size / 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "net.py").write_text(MODEL)
        (folder / "sparse.json").write_text('{"0": "cat", "20000000": "dog"}')
        print(f"class-name file: {os.path.getsize(folder / 'sparse.json')} bytes")
        # The plain run first: ru_maxrss of children is a running maximum, so the second
        # line shows the larger of the two.
        for label, extra in (("no class names", []), ("sparse map", ["--class-names", "sparse.json"])):
            seconds, rss, page = run(folder, extra)
            print(f"{label:15s} {seconds:6.2f} s   peak RSS {rss:7.1f} MB   page {page:6.3f} MB")


if __name__ == "__main__":
    main()
