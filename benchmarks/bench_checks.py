"""Issue 19's time budget: what the new checks cost inside a default report.

    python benchmarks/bench_checks.py            # ResNet-50, 8 photos of 224 px, 7 reports
    python benchmarks/bench_checks.py --quick    # smoke run: small model, 4 probes of 64 px

A whole-process A/B of two checkouts moves by more than the 3% it should resolve on a shared
machine (a report's wall time swings 5-10% from process to process). This measures the added
work directly instead, in one process: every function issue 19 added to the default report is
wrapped in a timer, and the time spent inside them is set against the report's own wall time,
report by report. Wrapped:

- the alert checks ``check_untrained``, ``check_preprocessing``, ``check_fp16_range``,
  ``check_training_mode``, ``check_prunable`` (entries of ``ALERT_CHECKS``);
- ``repeated_dead_channels`` (a dead channel reported once, where it dies; inside
  ``check_dead_channels``);
- ``summarise_input`` (the probes' range and channel means for the preprocessing check) and
  ``training_flags`` (every module's flag as given), both in the pipeline;
- the capture's ``_record_fp16`` and ``_count_fp16_sample`` (float16 underflow counting inside
  each layer's hook; a section layer counts on its histogram sample) and
  ``_record_bn_input`` (the first BatchNorm's input statistics, for the preprocessing check);
- ``alert_groups`` (the page's folding of many alerts of one kind), in the template.

The sum is an upper bound of what they add: the alert checks run in the figure thread pool
beside the section figures, so part of their time overlaps other work. ``--spectral`` is off by
default and timed by ``bench_spectral.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import torch  # noqa: E402

SPENT: dict[str, float] = {}


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, adding its wall time under ``name`` to :data:`SPENT` at each call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] = SPENT.get(name, 0.0) + time.perf_counter() - t0

    wrapper.__name__ = getattr(fn, "__name__", name)
    return wrapper


def instrument() -> list[str]:
    """Wrap every issue-19 addition where the report looks it up; their names."""
    from cnnreport.analysis import alerts
    from cnnreport.capture import activations
    from cnnreport.render import views
    from cnnreport.report import pipeline

    new_checks = {"check_untrained", "check_preprocessing", "check_fp16_range", "check_training_mode", "check_prunable"}
    alerts.ALERT_CHECKS = tuple(timed(c.__name__, c) if c.__name__ in new_checks else c for c in alerts.ALERT_CHECKS)
    alerts.repeated_dead_channels = timed("repeated_dead_channels", alerts.repeated_dead_channels)
    pipeline.summarise_input = timed("summarise_input", pipeline.summarise_input)
    pipeline.training_flags = timed("training_flags", pipeline.training_flags)
    recorder = next(cls for cls in vars(activations).values() if isinstance(cls, type) and "_record_fp16" in vars(cls))
    recorder._record_fp16 = timed("_record_fp16 (in the hooks)", recorder._record_fp16)
    activations._count_fp16_sample = timed("_count_fp16_sample (section layers' samples)", activations._count_fp16_sample)
    recorder._record_bn_input = timed("_record_bn_input (in the first BatchNorm's hook)", recorder._record_bn_input)
    # The template looks the filter up in FILTERS, copied into its environment when that is built
    # (at the warm-up report, after this).
    views.FILTERS["alert_groups"] = timed("alert_groups (template)", views.FILTERS["alert_groups"])
    return sorted(new_checks) + ["repeated_dead_channels", "summarise_input", "training_flags", "_record_fp16 (in the hooks)", "_count_fp16_sample (section layers' samples)", "_record_bn_input (in the first BatchNorm's hook)", "alert_groups (template)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model and 4 probes of 64 px: a smoke run")
    parser.add_argument("--repeat", type=int, default=7, help="timed reports (after one warm-up)")
    args = parser.parse_args(argv)

    from bench_report import runners, setup

    model, images, source, options = setup(args.quick, None)
    _, report = runners(model, images, options)
    names = instrument()
    report()  # warm-up: imports, template compilation, first-touch pages
    SPENT.clear()
    totals, added = [], []
    for _ in range(args.repeat):
        before = sum(SPENT.values())
        t0 = time.perf_counter()
        report()
        totals.append(time.perf_counter() - t0)
        added.append(sum(SPENT.values()) - before)
    n = args.repeat
    print(f"machine: {torch.get_num_threads()} torch threads; model: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; probes: {tuple(images.shape)} from {source}")
    print(f"default report (build_report + render_html): {statistics.median(totals):.3f} s (median of {n}; range {min(totals):.3f}-{max(totals):.3f})")
    for name in names:
        spent = SPENT.get(name)
        print(f"  {name}: {1000 * spent / n:.2f} ms per report" if spent is not None else f"  {name}: not called")
    shares = [a / t for a, t in zip(added, totals)]
    print(f"time inside issue 19's additions: {1000 * statistics.median(added):.1f} ms per report (median), {100 * statistics.median(shares):.2f}% of the report (range {100 * min(shares):.2f}-{100 * max(shares):.2f}%)")
    verdict = "OK" if statistics.median(shares) <= 0.03 else "OVER"
    print(f"target growth <= 3%: {100 * statistics.median(shares):.2f}%  {verdict} (an upper bound: the checks run in the thread pool beside the figures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
