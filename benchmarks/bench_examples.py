"""Issue 18's targets: dataset examples over 2,000 images through a ResNet-50 at 224 px.

    python benchmarks/bench_examples.py                # 2,000 and 200 examples, ResNet-50
    python benchmarks/bench_examples.py --quick        # smoke run: small ResNet, 64 px, 200 and 40
    python benchmarks/bench_examples.py --count 5000   # another set size (the small run is a tenth)

The examples are JPEGs written once into a temporary folder: random crops, flips and colour
shifts of scikit-image's photographs at 224x224 (seeded; ImageNet-normalised when read, as a
user's would be). Every figure comes from its own child process, so peaks do not mix:

- **bare forward**: the same DataLoader (same decoding, batch size and workers) into
  ``model(batch)`` under ``torch.no_grad()``: what a plain inference loop over the set costs;
- **examples pass**: the same loop with cnnreport's reduction (``reduce_examples``: every
  convolution's output folded into per-channel top-k, counts and histograms inside its hook);
- **report with examples**: ``build_report(model, 8 photos, examples=folder)`` and the page,
  against the **report on 8 probes** alone.

Both loops run in cnnreport's automatic examples batch (4 on the CPU), or ``--batch-size``.
Time: the examples pass against the bare forward (target 1.3x). Memory: each child's peak RSS
(``ru_maxrss``) above its own RSS once the model is built, with ``MALLOC_MMAP_THRESHOLD_=131072``
as in bench_report.py (glibc then returns large blocks on free, so RSS follows live memory):
the examples pass on 2,000 and on 200 examples (target: within 10% of each other), its own
share above the bare forward in the same batches, the pass on 2,000 against the report on 8
probes (target: within its bound, read as at most 10% above its peak, the margin of the
flatness target), and the whole report with the 2,000 examples against the same.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def write_examples(folder: Path, count: int, size: int) -> None:
    """``count`` JPEGs of ``size`` px: seeded crops, flips and tints of the skimage photos."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photos = [np.asarray(getattr(data, name)())[..., :3] for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w)))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        tint = rng.uniform(0.7, 1.3, size=3)
        crop = np.clip(crop * tint, 0, 255).astype(np.uint8)
        Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"img{i:05d}.jpg", quality=90)


def child(args: argparse.Namespace) -> int:
    """One measurement in this process; prints one JSON line."""
    import torch
    from bench_report import probe_images
    from models_bench import resnet50, small_resnet

    from cnnreport.datamodel import ReportOptions
    from cnnreport.io.examples import ExampleImages, example_loader
    from cnnreport.report.examples import reduce_examples
    from cnnreport.report.pipeline import select_layers

    model = (small_resnet() if args.quick else resnet50()).eval()
    size = 64 if args.quick else 224
    examples = ExampleImages(args.folder, image_size=(size, size), channels=3, mean="imagenet", std="imagenet")
    indices = list(range(args.count))
    options = ReportOptions(progress=False, example_batch_size=args.batch_size, example_workers=args.workers)
    probes, _ = probe_images(8, size)
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    if args.child == "bare":
        with torch.no_grad():
            for inputs, _, failures in example_loader(examples, indices, args.batch_size, args.workers):
                assert not failures, failures
                model(inputs)
    elif args.child == "examples":
        layers = select_layers(model, options)
        examples.files = examples.files[: args.count]
        partials, _ = reduce_examples(model, examples, layers, options)
        assert next(iter(partials.values())).examples == args.count
    elif args.child == "report":
        from cnnreport.render.views import render_html
        from cnnreport.report.pipeline import build_report

        render_html(build_report(model, probes, options))
    elif args.child == "report+examples":
        from cnnreport.render.views import render_html
        from cnnreport.report.pipeline import build_report

        examples.files = examples.files[: args.count]
        render_html(build_report(model, probes, options, examples=examples))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_above_model_mb": (peak - rss0) / 1024, "rss_model_mb": rss0 / 1024}))
    return 0


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def run_child(kind: str, folder: Path, count: int, args: argparse.Namespace, *, memory: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--folder", str(folder), "--count", str(count), "--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    if args.quick:
        cmd.append("--quick")
    # Memory runs as bench_report.py's memory child: glibc gives large blocks back on free, so
    # RSS follows live memory instead of the allocator's high-water mark (which moves by 100 MB
    # or more from run to run with its defaults). Timed runs keep glibc's defaults: with the
    # low threshold every large tensor is a fresh mapping, and its page faults cost time.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072") if memory else dict(os.environ)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small ResNet at 64 px, 200 and 40 examples")
    parser.add_argument("--count", type=int, default=0, help="examples in the large run (default 2000; quick 200); the small run is a tenth")
    parser.add_argument("--batch-size", type=int, default=0, help="examples per batch for both loops (default: cnnreport's automatic size, 4 on the CPU)")
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers (default: cnnreport's, one per spare core up to 4)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 0:
        from cnnreport.io.examples import default_workers

        args.workers = default_workers()
    if args.batch_size < 1:
        from cnnreport.support.batching import DEFAULT_BATCH  # automatic_example_batch on the CPU

        args.batch_size = DEFAULT_BATCH
    if args.child:
        return child(args)
    large = args.count or (200 if args.quick else 2000)
    small = max(1, large // 10)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "examples"
        t0 = time.perf_counter()
        write_examples(folder, large, 64 if args.quick else 224)
        print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}; {large} JPEG examples written in {time.perf_counter() - t0:.1f} s; batch {args.batch_size}, {args.workers} decoding worker(s)")
        bare = run_child("bare", folder, large, args, memory=False)
        passed = run_child("examples", folder, large, args, memory=False)
        bare_mem = run_child("bare", folder, small, args, memory=True)
        large_mem = run_child("examples", folder, large, args, memory=True)
        small_mem = run_child("examples", folder, small, args, memory=True)
        report = run_child("report", folder, small, args, memory=True)
        with_examples = run_child("report+examples", folder, large, args, memory=True)
    print(f"timed (glibc defaults): bare forward over {large} examples (DataLoader + model): {bare['seconds']:.1f} s; examples pass: {passed['seconds']:.1f} s")
    ratio = passed["seconds"] / bare["seconds"]
    print(f"target examples pass <= 1.3x the bare forward: {ratio:.2f}x  {'OK' if ratio <= 1.3 else 'OVER'}")
    print(f"peak RSS above the model: bare forward {bare_mem['peak_above_model_mb']:.0f} MB; examples pass over {large}: {large_mem['peak_above_model_mb']:.0f} MB, over {small}: {small_mem['peak_above_model_mb']:.0f} MB")
    growth = large_mem["peak_above_model_mb"] / max(small_mem["peak_above_model_mb"], 1e-9)
    print(f"target peak memory {large} vs {small} examples within 10%: {growth:.2f}x  {'OK' if abs(growth - 1) <= 0.1 else 'OVER'}")
    own = large_mem["peak_above_model_mb"] - bare_mem["peak_above_model_mb"]
    print(f"the examples pass's own share above the bare forward in the same batches: {own:.0f} MB (with the model snapshot that leaves the model as it was: one copy of its tensors)")
    bound = report["peak_above_model_mb"]
    print(f"report on 8 probes: peak {bound:.0f} MB above the model; with {large} examples: {with_examples['peak_above_model_mb']:.0f} MB, {with_examples['peak_above_model_mb'] / bound:.2f}x ({with_examples['seconds']:.1f} s, build_report + render_html)")
    within = large_mem["peak_above_model_mb"] / bound
    print(f"target examples pass over {large} within the 8-probe report's peak (at most 10% above): {within:.2f}x  {'OK' if within <= 1.1 else 'OVER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
