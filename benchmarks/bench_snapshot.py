"""What leaving the model as it was costs: the snapshot of a ResNet-50 (issue 14, item 4).

    python benchmarks/bench_snapshot.py            # snapshot, restores, fingerprint, share of a report
    python benchmarks/bench_snapshot.py --quick    # the small ResNet, 2 probes

Every report copies the model's parameters, buffers and gradients once before its first
forward pass (:class:`cnnreport.snapshot.ModelSnapshot`) and compares them bit for bit after
each pass (torchinfo's, each capture batch, saliency), writing back only what differs.
Printed: the bytes copied and the resident memory they add, the first copy (cold pages, as in
a report) and a repeated one, a restore that finds nothing changed (the common case: one
comparison of every tensor), a restore after a train-mode forward moved every BatchNorm's
statistics, hashing the frozen state for the fingerprint, and the time a whole
``build_report`` spends taking and restoring, against its wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import torch  # noqa: E402
from models_bench import resnet50, small_resnet  # noqa: E402

MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median_ms(fn: Callable[[], Any], repeat: int) -> str:
    times = [timed(fn)[0] * 1000 for _ in range(repeat)]
    return f"{statistics.median(times):.1f} ms (median of {repeat}; range {min(times):.1f}-{max(times):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model, 2 probes")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from cnnreport import build_report
    from cnnreport.io.provenance import state_dict_fingerprint
    from cnnreport.model import snapshot

    model = small_resnet() if args.quick else resnet50()
    size = 64 if args.quick else 224
    torch.manual_seed(0)
    probes = torch.rand(2 if args.quick else 8, 3, size, size)
    params = sum(p.numel() for p in model.parameters())
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model: {type(model).__name__}, {params / 1e6:.2f} M parameters; probes {tuple(probes.shape)}")

    rss_before = rss()
    first, snap = timed(lambda: snapshot.ModelSnapshot(model))
    grown = rss() - rss_before
    print(f"snapshot: {snap.nbytes / MB:.1f} MB copied ({len(snap.tensors)} tensors), resident memory +{grown / MB:.1f} MB")
    print(f"snapshot, first copy (cold pages, as in a report): {first * 1000:.1f} ms")
    print(f"snapshot, repeated copy: {median_ms(lambda: snapshot.ModelSnapshot(model), args.repeat)}")
    print(f"restore, nothing changed (compare every tensor): {median_ms(snap.restore, args.repeat)}")

    def moved_then_restored() -> int:
        model.train()
        with torch.no_grad():
            model(probes[:2])  # every BatchNorm's running statistics move
        model.eval()
        return snap.restore()

    written = moved_then_restored()
    print(f"restore after a train-mode forward ({written} tensors written back, forward included): {median_ms(moved_then_restored, args.repeat)}")
    frozen = snap.frozen_state_dict()
    print(f"fingerprint of the frozen state (SHA-256, in the report's thread pool): {median_ms(lambda: state_dict_fingerprint(frozen), max(1, args.repeat // 2))}")
    del snap, frozen

    # Inside a report: the time spent taking and restoring, summed, against the report's wall
    # time (a difference of two noisy report timings would drown it on a shared machine).
    spent = {"take": 0.0, "restore": 0.0, "restores": 0}
    take, restore = snapshot.ModelSnapshot.__init__, snapshot.ModelSnapshot.restore

    def timed_take(self: Any, *a: Any, **k: Any) -> None:
        start = time.perf_counter()
        take(self, *a, **k)
        spent["take"] += time.perf_counter() - start

    def timed_restore(self: Any, *a: Any, **k: Any) -> int:
        start = time.perf_counter()
        try:
            return restore(self, *a, **k)
        finally:
            spent["restore"] += time.perf_counter() - start
            spent["restores"] += 1

    build_report(model, probes, progress=False)  # warm-up: imports, allocator
    walls, takes, restores = [], [], []
    snapshot.ModelSnapshot.__init__, snapshot.ModelSnapshot.restore = timed_take, timed_restore  # type: ignore[method-assign]
    try:
        for _ in range(max(3, args.repeat // 2 + 1)):
            spent.update(take=0.0, restore=0.0, restores=0)
            walls.append(timed(lambda: build_report(model, probes, progress=False))[0])
            takes.append(spent["take"])
            restores.append(spent["restore"])
    finally:
        snapshot.ModelSnapshot.__init__, snapshot.ModelSnapshot.restore = take, restore  # type: ignore[method-assign]
    wall, cost = statistics.median(walls), statistics.median([t + r for t, r in zip(takes, restores)])
    print(
        f"inside build_report (medians of {len(walls)}): snapshot {statistics.median(takes) * 1000:.0f} ms + "
        f"{spent['restores']} restores {statistics.median(restores) * 1000:.0f} ms = {cost * 1000:.0f} ms "
        f"of {wall:.3f} s ({100 * cost / wall:.1f}%)"
    )

if __name__ == "__main__":
    main()
