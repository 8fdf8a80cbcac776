"""Issue 4's benchmark: cnnreport against a bare forward pass and the hand-written recipe.

    python benchmarks/bench_report.py                 # the full run (the recipe takes minutes)
    python benchmarks/bench_report.py --skip-recipe   # cnnreport only
    python benchmarks/bench_report.py --quick         # smoke run: small model, 4 probes of 64 px

A ResNet-50-shaped model (bottleneck blocks [3, 4, 6, 3], 25.6 M parameters, seeded random
weights), 8 real photographs from ``skimage.data`` cut to 224x224 (seeded noise if scikit-image
is missing), every convolution layer, default options. Prints one line per figure, then one
line per target with its ratio.

Memory. tracemalloc does not see torch's CPU allocations, so two other meters are used:

* ``rss``: a thread samples the process's resident set (``/proc/self/statm``) every 0.5 ms;
  peak minus the RSS just before the call. Measured in a child process started with glibc
  told (``MALLOC_MMAP_THRESHOLD_``) to serve every block over 128 KB with ``mmap`` and give it
  back on ``free``, so RSS follows live memory instead of keeping freed heap; the timings are
  taken in the parent, whose allocator is left alone (the pinned one slows torch down).
  Catches everything (numpy, Pillow, Python objects), but can miss a peak shorter than 0.5 ms.
* ``torch``: ``torch.profiler`` with ``profile_memory=True``; the running sum of torch's own
  allocation events in time order, its maximum. Exact for tensors, blind to numpy and Pillow.

"extra" is above the model and input (both already allocated when measuring starts). The
largest single activation is the biggest output of any leaf module for the whole batch.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --------------------------------------------------------------------------------------------
# Memory meters


#: glibc tunables for the memory child: every block over 128 KB is mmap'ed and given back on
#: free (setting the threshold also turns off glibc's moving threshold), so RSS follows live memory.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[1]) * PAGE


class RssPeak:
    """Samples RSS in a thread while the block runs; ``extra`` is peak minus the starting RSS."""

    def __init__(self, interval: float = 0.0005) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "RssPeak":
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra(self) -> int:
        return self.peak - self.start


def torch_peak(fn: Callable[[], Any]) -> int:
    """Peak of torch's live CPU allocations (bytes) while ``fn`` runs, from the profiler."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        fn()
    events: list[tuple[int, int]] = []

    def walk(node: Any) -> None:
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    events.sort(key=lambda e: e[0])
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


def largest_activation(model: nn.Module, images: torch.Tensor) -> tuple[int, str]:
    """Bytes and name of the biggest leaf-module output for the whole batch."""
    best = [0, ""]
    handles = []

    def make(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                size = output.numel() * output.element_size()
                if size > best[0]:
                    best[0], best[1] = size, name

        return hook

    for name, module in model.named_modules():
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(make(name)))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return int(best[0]), str(best[1])


# --------------------------------------------------------------------------------------------
# Inputs


SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel", "retina")


def probe_images(count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``count`` RGB probes ``size`` px square, ImageNet-normalised, and where they came from."""
    arrays: list[np.ndarray] = []
    source = "seeded noise"
    try:
        from PIL import Image
        from skimage import data

        for name in SKIMAGE_PHOTOS[:count]:
            img = np.asarray(getattr(data, name)())[..., :3]
            h, w = img.shape[:2]
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            crop = Image.fromarray(np.ascontiguousarray(img[top : top + s, left : left + s]))
            arrays.append(np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0)
        source = "skimage.data photos"
    except Exception:
        arrays = []
    rng = np.random.default_rng(seed)
    while len(arrays) < count:
        arrays.append(rng.random((size, size, 3), dtype=np.float32))
        if source != "seeded noise":
            source += " + seeded noise"
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    return (x - mean) / std, source


# --------------------------------------------------------------------------------------------
# The runs


def paired_median_times(first: Callable[[], Any], second: Callable[[], Any], repeat: int) -> tuple[list[float], list[float], Any]:
    """Both functions timed ``repeat`` times, alternating, so a slow spell of a shared machine
    lands on both sides of the ratio rather than on one. Returns both lists of times and the
    second function's last value."""
    a, b, value = [], [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        first()
        a.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        value = second()
        b.append(time.perf_counter() - t0)
    return a, b, value


#: What each ``--scenario`` runs: the model and the probes' count and size.
SCENARIOS = {
    "resnet50": "ResNet-50, 8 probes of 224x224 (issue 4's targets)",
    "large-probes": "ResNet-50, 8 probes of 1024x1024 (the memory rule at 21x the pixels)",
    "deep-stack": "a 100-convolution plain stack (32 channels), 8 probes of 224x224",
}


def setup(quick: bool, batch_size: int | None, settings: list[str] = (), scenario: str = "resnet50") -> tuple[nn.Module, torch.Tensor, str, Any]:
    from models_bench import plain_stack, resnet50, small_resnet

    from cnnreport.datamodel import ReportOptions

    if quick:
        model, (images, source) = small_resnet(), probe_images(4, 64)
    elif scenario == "deep-stack":
        model, (images, source) = plain_stack(100), probe_images(8, 224)
    else:
        model, (images, source) = resnet50(), probe_images(8, 1024 if scenario == "large-probes" else 224)
    options = ReportOptions(progress=False)
    if batch_size:
        options.batch_size = batch_size
    for item in settings:  # --set saliency=False: any ReportOptions field, as a Python literal
        key, _, value = item.partition("=")
        if not hasattr(options, key):
            raise SystemExit(f"--set: ReportOptions has no field {key!r}")
        setattr(options, key, ast.literal_eval(value))
    return model, images, source, options


def runners(model: nn.Module, images: torch.Tensor, options: Any) -> tuple[Callable[[], Any], Callable[[], str]]:
    from cnnreport.render.views import render_html
    from cnnreport.report.pipeline import build_report

    def forward() -> Any:
        with torch.no_grad():
            return model(images)

    def report() -> str:
        return render_html(build_report(model, images, options))

    return forward, report


def memory_child(args: argparse.Namespace) -> int:
    """Run in a child process with the pinned allocator: print the memory figures as JSON."""
    model, images, _, options = setup(args.quick, args.batch_size, args.set, args.scenario)
    forward, report = runners(model, images, options)
    batch_size = options.first_batch

    def forward_in_batches() -> None:
        # The bare forward in the report's (first) batch size: the part of the report's peak
        # that is the model's own, so the rest is what the capture adds. (Automatic batches
        # after the first can only be smaller.)
        with torch.no_grad():
            for chunk in images.split(batch_size):
                model(chunk)

    forward()
    report()  # warm: lazy imports, templates, palettes
    with RssPeak() as rss_forward:
        forward()
    with RssPeak() as rss_batched:
        forward_in_batches()
    with RssPeak() as rss_report:
        report()
    out = {
        "rss_forward": rss_forward.extra,
        "rss_batched": rss_batched.extra,
        "rss_report": rss_report.extra,
        "torch_forward": torch_peak(forward),
        "torch_batched": torch_peak(forward_in_batches),
        "torch_report": torch_peak(report),
        "batch_size": batch_size,
    }
    if not args.skip_recipe and args.scenario == "resnet50":
        from recipe import recipe_html

        with RssPeak() as rss_recipe:
            recipe_html(model, images)
        out["rss_recipe"] = rss_recipe.extra
    print("MEMORY " + json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small model and 4 probes of 64 px: a smoke run")
    parser.add_argument("--skip-recipe", action="store_true", help="do not run the matplotlib recipe")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median), forward and report alternating")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=0, help="ReportOptions.batch_size (0: the default)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a ReportOptions field (repeatable)")
    parser.add_argument("--html", default="", help="also write the report here")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="resnet50", help="; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()))
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and args.scenario != "resnet50":
        parser.error("--quick runs its own small model: leave --scenario out")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)

    model, images, source, options = setup(args.quick, args.batch_size, args.set, args.scenario)
    if args.scenario != "resnet50":
        args.skip_recipe = True  # the recipe's target is for the ResNet-50 case only
    forward, report = runners(model, images, options)
    params = sum(p.numel() for p in model.parameters())
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"model: {type(model).__name__}, {params / 1e6:.2f} M parameters, {convs} conv layers; "
        f"probes: {tuple(images.shape)} from {source}; batch_size {options.batch_size or 'automatic'}" + (f"; options {' '.join(args.set)}" if args.set else "")
    )

    # Warm up once each (thread pools, lazy imports, templates, palettes).
    forward()
    report()
    forwards, reports, html = paired_median_times(forward, report, args.repeat)
    t_forward, t_report = statistics.median(forwards), statistics.median(reports)
    html_mb = len(html.encode("utf-8")) / MB
    if args.html:
        Path(args.html).write_text(html, encoding="utf-8")

    def spread(times: list[float]) -> str:
        return f"(median of {len(times)}, alternating; range {min(times):.3f}-{max(times):.3f})"

    print(f"bare forward: {t_forward:.3f} s {spread(forwards)}")
    print(f"report wall time (build_report + render_html): {t_report:.3f} s {spread(reports)}")
    t_recipe = None
    if not args.skip_recipe:
        from recipe import recipe_html

        t0 = time.perf_counter()
        recipe = recipe_html(model, images)
        t_recipe = time.perf_counter() - t0
        print(f"recipe time (hooks + matplotlib, 1 run): {t_recipe:.1f} s, its HTML {len(recipe) / MB:.1f} MB")
        del recipe
    print(f"HTML size: {html_mb:.2f} MB")
    largest, largest_name = largest_activation(model, images)
    print(f"largest single activation: {largest / MB:.1f} MB ({largest_name}, whole batch)")

    child = [sys.executable, str(Path(__file__).resolve()), "--memory-child"] + [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--html")]
    proc = subprocess.run(child, env={**os.environ, **MALLOC_ENV}, capture_output=True, text=True)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("MEMORY ")), None)
    if line is None:
        print("memory child failed:\n" + proc.stderr[-2000:])
        return 1
    mem = json.loads(line[len("MEMORY "):])
    rep, fwd = max(mem["rss_report"], mem["torch_report"]), max(mem["rss_forward"], mem["torch_forward"])
    batched = max(mem["rss_batched"], mem["torch_batched"])
    print(f"peak extra memory, report: rss {mem['rss_report'] / MB:.1f} MB, torch {mem['torch_report'] / MB:.1f} MB")
    print(f"peak extra memory, bare forward: rss {mem['rss_forward'] / MB:.1f} MB, torch {mem['torch_forward'] / MB:.1f} MB")
    print(
        f"peak extra memory, bare forward in batches of {mem['batch_size']}: "
        f"rss {mem['rss_batched'] / MB:.1f} MB, torch {mem['torch_batched'] / MB:.1f} MB"
    )
    if "rss_recipe" in mem:
        print(f"peak extra memory, recipe: rss {mem['rss_recipe'] / MB:.1f} MB")

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    ratio = t_report / t_forward
    print(f"target report <= 3x forward: {ratio:.2f}x  {verdict(ratio <= 3)}")
    if t_recipe is not None:
        speed = t_recipe / t_report
        print(f"target >= 25x faster than recipe: {speed:.1f}x  {verdict(speed >= 25)}")
    else:
        print("target >= 25x faster than recipe: skipped (--skip-recipe)")
    print(f"target HTML <= 8 MB: {html_mb:.2f} MB  {verdict(html_mb <= 8)}")
    print(
        f"target peak extra <= 2x largest activation: {rep / largest:.2f}x  {verdict(rep <= 2 * largest)} "
        f"(the bare forward alone: {fwd / largest:.2f}x, in batches of {mem['batch_size']}: {batched / largest:.2f}x; "
        f"the report above the latter: {(rep - batched) / largest:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
