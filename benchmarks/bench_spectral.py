"""Issue 19's `--spectral` cost: the weight-spectrum alphas of a ResNet-50 against a default report.

    python benchmarks/bench_spectral.py                   # ResNet-50, 8 photos of 224 px, 3 runs each
    python benchmarks/bench_spectral.py --weightwatcher   # also the weightwatcher package, once, and the largest |alpha| difference
    python benchmarks/bench_spectral.py --quick           # smoke run: small model, 4 probes of 64 px

The model and probes are bench_report.py's (the ResNet-50-shaped model of models_bench.py with
seeded random weights; 8 skimage.data photographs). Timed, alternating so that a slow spell of a
shared machine lands on every side, medians of ``--repeat`` runs:

- **default report**: ``render_html(build_report(model, images, ReportOptions()))``;
- **spectral report**: the same with ``spectral=True``;
- **spectra alone**: ``layer_spectra(model)``, all that ``spectral=True`` adds (one layer per
  worker thread, each on one core), and the same one layer after another on torch's own
  threads, for comparison.

Prints seconds and the ratio to the default report; ``--weightwatcher`` times the package's
``analyze()`` with its defaults once (its own fit is a Python loop over the xmin candidates) and
prints the largest difference between its alphas and ours over the layers both fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import torch  # noqa: E402


def timed(functions: dict[str, Callable[[], Any]], repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each function ``repeat`` times, taking turns; their wall times and CPU times by name.

    The CPU time (every thread of the process) is the work itself: on a shared machine the
    wall time also holds the waits for a core, and for torch's own thread team the spinning."""
    wall: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeat):
        for name, fn in functions.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def line(label: str, values: list[float], cpu: list[float], base: float | None = None) -> str:
    median = statistics.median(values)
    ratio = f"; {median / base:.2f}x the default report" if base else ""
    return f"{label}: {median:.3f} s (median of {len(values)}; range {min(values):.3f}-{max(values):.3f}; CPU {statistics.median(cpu):.3f} s){ratio}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and 4 probes of 64 px: a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--weightwatcher", action="store_true", help="also time the weightwatcher package once and compare its alphas")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from bench_report import setup

    from cnnreport.analysis.spectral import analysed_layers, layer_spectra, layer_spectrum
    from cnnreport.render.views import render_html
    from cnnreport.report.pipeline import build_report

    model, images, source, options = setup(args.quick, None)
    with_spectra = dataclasses.replace(options, spectral=True)
    layers = layer_spectra(model)  # warm-up, and the layer count
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"model: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
        f"{len(layers)} convolution and linear layers ({sum(s.alpha is not None for s in layers)} fitted, "
        f"{sum(s.eigenvalues for s in layers):,} eigenvalues); probes: {tuple(images.shape)} from {source}"
    )
    functions = {
        "default": lambda: render_html(build_report(model, images, options)),
        "spectral": lambda: render_html(build_report(model, images, with_spectra)),
        "spectra": lambda: layer_spectra(model),
        "sequential": lambda: [layer_spectrum(name, module) for name, module in analysed_layers(model)],
    }
    for fn in functions.values():  # one warm-up run each
        fn()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times, cpu = timed(functions, args.repeat)
    base = statistics.median(times["default"])
    print(f"load average (1 min) before the timed runs: {load:.2f} on {os.cpu_count()} cores")
    print(line("default report (build_report + render_html)", times["default"], cpu["default"]))
    print(line("spectral report (spectral=True)", times["spectral"], cpu["spectral"], base))
    print(line("spectra alone (layer_spectra: a layer per worker thread)", times["spectra"], cpu["spectra"], base))
    print(line("spectra alone, one layer after another on torch's threads", times["sequential"], cpu["sequential"], base))

    if args.weightwatcher:
        import weightwatcher

        logging.getLogger("weightwatcher").setLevel(logging.ERROR)
        t0 = time.perf_counter()
        details = weightwatcher.WeightWatcher(model=model).analyze()
        elapsed = time.perf_counter() - t0
        theirs = dict(zip(details["longname"], details["alpha"]))
        ours = {s.name: s.alpha for s in layers if s.alpha is not None}
        both = sorted(set(theirs) & set(ours))
        worst = max(abs(float(theirs[n]) - ours[n]) for n in both)
        print(f"weightwatcher {weightwatcher.__version__} analyze() (1 run): {elapsed:.2f} s; layers fitted: ours {len(ours)}, its {len(theirs)}, both {len(both)}; largest |alpha difference| {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
