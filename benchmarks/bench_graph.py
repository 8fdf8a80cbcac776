"""Benchmark of the executed-graph stage (not a test): recording overhead, layout and SVG time.

Run: ``python benchmarks/bench_graph.py [--quick]``. Prints one figure per line and the ratios
against issue 9's targets:

* recording (hooks + TorchFunctionMode) adds at most 0.5x one bare forward pass;
* layout + SVG of a 1,000-node graph takes at most 300 ms;
* zero edge crossings on ResNet-, DenseNet- and Inception-style graphs.

The reference nets are written here (torchvision does not work with the CPU torch of this
environment): a ResNet-50-shaped net (bottlenecks 3-4-6-3), a DenseNet-style net and an
Inception-style net with random weights.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnreport.analysis.graph import collapse
from cnnreport.analysis.layout import count_crossings, layout
from cnnreport.capture.executed_graph import ExecutedGraph, GraphNode
from cnnreport.capture.tracing import CallRecorder, suspend_recording  # noqa: E402
from cnnreport.figures.graph_svg import build_graph_views, render_svg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models_bench import ResNetBench  # noqa: E402


def ResNet(layers=(3, 4, 6, 3), classes: int = 1000) -> nn.Module:
    """The benchmark's bottleneck ResNet (models_bench), with any block counts."""
    return ResNetBench(layers=tuple(layers), num_classes=classes)


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseNet(nn.Module):
    def __init__(self, blocks=(6, 12, 24, 16), growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        c = 16
        self.blocks = nn.ModuleList()
        self.trans = nn.ModuleList()
        for i, n in enumerate(blocks):
            layers = nn.ModuleList()
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            self.blocks.append(layers)
            if i < len(blocks) - 1:
                self.trans.append(nn.Sequential(nn.BatchNorm2d(c), nn.Conv2d(c, c // 2, 1),
                                                nn.AvgPool2d(2)))
                c //= 2
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.stem(x)
        for i, layers in enumerate(self.blocks):
            for layer in layers:
                x = torch.cat([x, layer(x)], 1)
            if i < len(self.trans):
                x = self.trans[i](x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Inception(nn.Module):
    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(cin, c, 1)
        self.b2 = nn.Sequential(nn.Conv2d(cin, c, 1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(cin, c, 1), nn.ReLU(), nn.Conv2d(c, c, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, c, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class InceptionNet(nn.Module):
    def __init__(self, n: int = 9) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.mixed = nn.Sequential(*[Inception(32, 8) for _ in range(n)])
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.mixed(self.stem(x)).mean((2, 3)))


def timed(fn, repeat: int) -> float:
    """Median wall time of ``fn`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired(a, b, repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` times of ``a`` and ``b`` run alternately, so load from other
    processes on a shared machine hits both alike (the minimum is the least disturbed run)."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return min(ta), min(tb)


def record(model: nn.Module, x: torch.Tensor):
    with torch.no_grad(), CallRecorder(model) as rec:
        model(x)
    return rec.graph()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 at 112 px, fewer repeats")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    batch, size, repeat = (2, 112, 5) if args.quick else (8, 224, 5)

    # 1. Recording overhead on a ResNet-50-shaped net.
    model = ResNet().eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        bare, recorded = paired(lambda: model(x), lambda: record(model, x), repeat)

    # The capture stage's statistics run inside suspend_recording(): measure that path too.
    def stats_hook(module, args, output):
        with suspend_recording():
            output.mean()
            output.std()

    handles = [m.register_forward_hook(stats_hook) for m in model.modules()
               if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            hooked, hooked_rec = paired(lambda: model(x), lambda: record(model, x), repeat)
    finally:
        for h in handles:
            h.remove()
    graph = record(model, x)
    print(f"forward, resnet50-style, batch {batch} at {size}px: {bare * 1000:.0f} ms")
    print(f"forward with recording: {recorded * 1000:.0f} ms")
    print(f"recording overhead: {(recorded - bare) / bare:+.3f}x forward (target <= 0.5x)")
    print(f"forward with conv stats hooks: {hooked * 1000:.0f} ms")
    print(f"same with recording (stats suspended): {hooked_rec * 1000:.0f} ms")
    print(f"recording overhead with stats hooks: {(hooked_rec - hooked) / hooked:+.3f}x forward")
    print(f"resnet50-style graph: {len(graph.nodes)} nodes, {len(graph.edges)} edges")

    # 2. Layout + SVG, and crossings on the reference styles (about 1,000 nodes for the
    #    large DenseNet).
    small = torch.randn(1, 3, 32, 32)
    graphs = {
        "resnet50-style": graph,
        "resnet-deep(3,8,36,3)": record(ResNet((3, 8, 36, 3), 10).eval(), small),
        "densenet-style(6,12,24,16)": record(DenseNet().eval(), small),
        "densenet-1k(6,12,64,64)": record(DenseNet((6, 12, 64, 64), 4).eval(), small),
        "inception-style(x9)": record(InceptionNet().eval(), small),
    }
    worst = 0.0
    for name, g in graphs.items():
        t_layout = timed(lambda g=g: layout(g), 3)
        t_total = timed(lambda g=g: render_svg(g), 3)
        t_views = timed(lambda g=g: build_graph_views(g, link_sections=set()), 3)
        lay = layout(g)
        c = collapse(g)
        per_k = t_total * 1000 / len(g.nodes)
        worst = max(worst, per_k)
        print(f"{name}: nodes {len(g.nodes)}, edges {len(g.edges)}, dummies {len(lay.dummies)}")
        print(f"{name}: layout {t_layout * 1000:.0f} ms")
        print(f"{name}: layout+svg {t_total * 1000:.0f} ms "
              f"(= {per_k * 1000:.0f} ms per 1,000 nodes, {per_k / 0.3:.2f}x the 300 ms target)")
        print(f"{name}: both views (collapse + 2 layouts + 2 svgs) {t_views * 1000:.0f} ms")
        print(f"{name}: crossings {count_crossings(lay)} full, "
              f"{count_crossings(layout(c))} collapsed ({len(c.nodes)} nodes) (target 0)")
    print(f"worst layout+svg per 1,000 nodes: {worst * 1000:.0f} ms ({worst / 0.3:.2f}x target)")

    # 3. Outside the targets: a tangled random DAG of 1,000 nodes (no CNN looks like this),
    #    to show the cost when crossing reduction cannot reach zero.
    rng = random.Random(1)
    nodes = [GraphNode(id=f"n{i}", kind="module", name=f"n{i}", type="Conv2d",
                       output_shapes=[[1, 8, 4, 4]]) for i in range(1000)]
    edges = []
    for i in range(1, 1000):
        edges.append((f"n{max(0, i - rng.randint(1, 3))}", f"n{i}"))
        if rng.random() < 0.5:
            edges.append((f"n{max(0, i - rng.randint(1, 30))}", f"n{i}"))
    tangled = ExecutedGraph(nodes, list(dict.fromkeys(edges)))
    t_total = timed(lambda: render_svg(tangled), 3)
    print(f"tangled random DAG: nodes 1000, edges {len(tangled.edges)}, layout+svg "
          f"{t_total * 1000:.0f} ms ({t_total / 0.3:.2f}x the 300 ms target), crossings "
          f"{count_crossings(layout(tangled))}")


if __name__ == "__main__":
    main()
