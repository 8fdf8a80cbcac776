"""The executed graph: recording, collapsing, receptive fields, layout and SVG.

Reference architectures are written here (torchvision does not work with the CPU torch in this
environment): tiny, so the whole file runs in a few seconds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnreport.analysis.graph import collapse, receptive_fields
from cnnreport.analysis.layout import count_crossings, layout
from cnnreport.capture.executed_graph import ExecutedGraph, GraphNode
from cnnreport.capture.tracing import CallRecorder, suspend_recording
from cnnreport.datamodel import row_id, section_id
from cnnreport.figures.graph_svg import build_graph_views, group_views, render_svg

# torch.jit.script is deprecated in recent torch, but users still ship scripted submodules.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

# ----------------------------------------------------------------------------------------------
# Reference nets


class BasicBlock(nn.Module):
    """ResNet basic block: in-place ReLUs and an in-place ``+=`` skip connection."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class DownBlock(nn.Module):
    """A block whose skip path has its own conv (projection shortcut) and ``torch.add``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return F.relu(torch.add(out, self.downsample(x)))


class TinyResNet(nn.Module):
    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(*[BasicBlock(8) for _ in range(blocks)])
        self.layer2 = nn.Sequential(DownBlock(8, 16), *[BasicBlock(16) for _ in range(blocks - 1)])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InceptionBlock(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(cin, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(cin, 4, 1), nn.Conv2d(4, 4, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(cin, 4, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class TinyInception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mixed1 = InceptionBlock(8)
        self.mixed2 = InceptionBlock(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.mixed2(self.mixed1(self.stem(x)))
        return self.head(x.mean((2, 3)))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1)

    def forward(self, x):
        return self.conv(F.relu(self.norm(x)))


class DenseBlock(nn.Module):
    def __init__(self, cin: int = 4, growth: int = 4, n: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class TinyDenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = DenseBlock(4, 4, 3)
        self.trans = nn.Sequential(nn.Conv2d(16, 8, 1), nn.AvgPool2d(2))
        self.block2 = DenseBlock(8, 4, 3)
        self.fc = nn.Linear(20, 3)

    def forward(self, x):
        x = self.block2(self.trans(self.block1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class HSwish(nn.Module):
    """A custom leaf: its internal ops (add, relu6, mul, div) must not become nodes."""

    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        x = x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous()
        return x.view(n, c, h, w)


class Branchy(nn.Module):
    """A data-dependent ``if``: torch.fx and torch.export fail on it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pos = nn.Conv2d(4, 4, 1)
        self.neg = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())

    def forward(self, x):
        x = self.conv(x)
        if x.mean() > 1e6:  # never true here: the `neg` branch runs
            return self.pos(x)
        return self.neg(x)


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3, padding=1)
        self.cls = nn.Linear(4, 2)
        self.seg = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        f = self.body(x)
        return {"logits": self.cls(f.mean((2, 3))), "mask": self.seg(f)}


@dataclass
class Pair:
    a: torch.Tensor
    b: torch.Tensor


class Reused(nn.Module):
    """One block called twice, plus a dataclass output and two inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.act = HSwish()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x, y):
        z = self.block(self.block(x) + y)
        return Pair(self.act(z), self.shuffle(z))


class WithScript(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv2d(3, 4, 1)
        self.scripted = torch.jit.script(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()))
        self.post = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.post(self.scripted(self.pre(x)) * 2)


class TutorialCNN(nn.Module):
    """The classic tutorial net, written for 28x28 input: ``view(-1, 32*7*7)``."""

    def __init__(self, wrong_linear: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)
        self.wrong_linear = wrong_linear

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1) if self.wrong_linear else x.view(-1, 32 * 7 * 7)
        return self.fc(x)


def record(model: nn.Module, *inputs) -> tuple[CallRecorder, ExecutedGraph, object]:
    model.eval()
    with torch.no_grad(), CallRecorder(model) as rec:
        out = model(*inputs)
    return rec, rec.graph(), out


def by_id(graph: ExecutedGraph) -> dict[str, GraphNode]:
    return {n.id: n for n in graph.nodes}


def preds(graph: ExecutedGraph, node_id: str) -> list[str]:
    return [s for s, t in graph.edges if t == node_id]


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks)
        for m in model.modules()
        if not isinstance(m, torch.jit.ScriptModule)
    )


# ----------------------------------------------------------------------------------------------
# Recording


def test_resnet_skip_connections_and_inplace_ops():
    rec, g, _ = record(TinyResNet(), torch.randn(2, 3, 16, 16))
    nodes = by_id(g)
    # The in-place `out += identity` is an add node with the block's input and bn2 as inputs.
    add = nodes["op:layer1.0/add_"]
    assert add.type == "Tensor.add_"
    assert sorted(preds(g, add.id)) == ["layer1.0.bn2", "maxpool"]
    # ReLU(inplace=True) mutates bn1's output: conv2 must hang off the ReLU, not bn1.
    assert preds(g, "layer1.0.conv2") == ["layer1.0.relu"]
    assert preds(g, "layer1.0.relu") == ["layer1.0.bn1"]
    # The block's ReLU runs twice: two nodes, the second labelled as such.
    second = nodes["layer1.0.relu (call 2)"]
    assert second.call_index == 2 and second.label == "layer1.0.relu (call 2)"
    assert second.section_id == section_id("layer1.0.relu", 2)
    assert preds(g, second.id) == [add.id]
    # Projection shortcut: torch.add with two in-edges, one through the downsample branch.
    assert sorted(preds(g, "op:layer2.0/add")) == ["layer2.0.conv2", "layer2.0.downsample.1"]
    # Counts: input, stem (4 modules), 2 basic blocks x (6 modules + add_), down block (5
    # modules + relu, add, relu ops), 1 basic block, avgpool, flatten (op), fc, output.
    kinds = Counter(n.kind for n in g.nodes)
    assert kinds == {"module": 4 + 2 * 6 + 5 + 6 + 2, "op": 2 + 3 + 1 + 1, "input": 1,
                     "output": 1}
    assert len(g.nodes) == 1 + 4 + 14 + 8 + 7 + 3 + 1 == 38
    # Every node has one in-edge except the input; adds have two.
    assert len(g.edges) == len(g.nodes) - 1 + 4
    assert [n.id for n in g.nodes if g.in_degree(n.id) == 2] == [
        "op:layer1.0/add_", "op:layer1.1/add_", "op:layer2.0/add", "op:layer2.1/add_"
    ]
    assert nodes["layer1.0.conv1"].row_id == row_id("layer1.0.conv1")
    assert nodes["layer1.0.conv1"].params == 8 * 8 * 9
    assert nodes["layer1.0.conv1"].scope == ["layer1", "layer1.0"]
    assert nodes["layer1.0.conv1"].group == "layer1.0"
    assert nodes["output"].output_shapes == [[2, 10]]


def test_resnet_layout_has_no_crossings_and_collapses_blocks():
    _, g, _ = record(TinyResNet(blocks=3), torch.randn(1, 3, 16, 16))
    lay = layout(g)
    assert count_crossings(lay) == 0
    small = collapse(g, node_budget=16)  # 15 nodes with one per block
    ids = [n.id for n in small.nodes]
    # Every block is one node: the budget is met by structure, not by truncation.
    assert [i for i in ids if i.startswith("layer")] == [
        "layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1", "layer2.2"
    ]
    assert all(small.node(i).kind == "group" for i in ids if i.startswith("layer"))
    assert small.node("layer1.0").members == 7
    assert ("layer1.2", "layer2.0") in small.edges
    assert count_crossings(layout(small)) == 0
    # A generous budget shows everything; a tiny one the top-level stages.
    assert len(collapse(g, node_budget=1000).nodes) == len(g.nodes)
    tiny = [n.id for n in collapse(g, node_budget=14).nodes]
    assert "layer1" in tiny and "layer2" in tiny


def test_inception_cat_has_four_in_edges():
    _, g, _ = record(TinyInception(), torch.randn(1, 3, 8, 8))
    cat = by_id(g)["op:mixed1/cat"]
    assert cat.type == "torch.cat"
    assert preds(g, cat.id) == ["mixed1.b1", "mixed1.b2.2", "mixed1.b3.1", "mixed1.b4.1"]
    assert cat.output_shapes == [[1, 16, 8, 8]]
    # stem feeds all four branches of mixed1
    assert sorted(t for s, t in g.edges if s == "stem") == [
        "mixed1.b1", "mixed1.b2.0", "mixed1.b3.0", "mixed1.b4.0"
    ]
    # per block: 8 modules + cat; plus input, stem, mean, head, output
    assert len(g.nodes) == 2 * 9 + 5
    assert len(g.edges) == 2 * (4 + 4 + 4) + 4  # fan-out, inner chains, cat in-edges; + chain
    assert count_crossings(layout(g)) == 0


def test_densenet_chain_of_growing_cats():
    _, g, _ = record(TinyDenseNet(), torch.randn(1, 3, 8, 8))
    cats = [n for n in g.nodes if n.name == "cat" and "block1" in n.scope]
    assert [n.output_shapes[0][1] for n in cats] == [8, 12, 16]
    assert [n.call_index for n in cats] == [1, 2, 3]
    # Each cat joins the previous cat (or the stem) with the new features.
    assert preds(g, cats[0].id) == ["stem", "block1.layers.0.conv"]
    assert preds(g, cats[1].id) == [cats[0].id, "block1.layers.1.conv"]
    assert preds(g, cats[2].id) == [cats[1].id, "block1.layers.2.conv"]
    # relu is functional inside a non-leaf DenseLayer: an op node of its own
    # The ModuleList run by the block's loop is a group of its own (no forward of its own, but
    # one contiguous stretch of the pass), taking the cats between its layers along.
    assert by_id(g)["op:block1.layers.0/relu"].scope == ["block1", "block1.layers",
                                                         "block1.layers.0"]
    assert [c.scope for c in cats] == [["block1", "block1.layers"]] * 2 + [["block1"]]
    assert g.groups["block1.layers"].type == "ModuleList"
    # input, stem, 2 x (3 x (norm relu conv cat)), trans.0, trans.1, pool, flatten, fc, output
    assert len(g.nodes) == 2 + 24 + 2 + 4
    # one in-edge per node but the input, a second one per cat
    assert len(g.edges) == len(g.nodes) - 1 + 6
    assert count_crossings(layout(g)) == 0
    rf = receptive_fields(g)
    assert rf["stem"] == (3, 1)
    assert rf["block1.layers.2.conv"] == (9, 1)  # longest path: stem + three 3x3 convs
    assert rf["trans.1"] == (10, 2)


def test_data_dependent_branch_records_the_branch_that_ran():
    _, g, _ = record(Branchy(), torch.randn(1, 3, 8, 8))
    names = [n.id for n in g.nodes]
    assert names == ["input", "conv", "neg.0", "neg.1", "output"]
    # `x.mean() > 1e6` is a question about the data, not a node of the graph
    assert not any(n.kind == "op" for n in g.nodes)


def test_dict_output_and_dataclass_output_with_two_inputs():
    _, g, _ = record(DictOut(), torch.randn(1, 3, 8, 8))
    nodes = by_id(g)
    assert preds(g, "output:['logits']") == ["cls"]
    assert preds(g, "output:['mask']") == ["seg"]
    assert nodes["output:['mask']"].output_shapes == [[1, 1, 8, 8]]
    assert preds(g, "cls") == ["op:mean"]

    _, g, out = record(Reused(), torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6))
    assert isinstance(out, Pair)
    ids = [n.id for n in g.nodes]
    assert ids[:2] == ["input:[0]", "input:[1]"]
    assert ids.count("block.0") == 1 and "block.0 (call 2)" in ids
    assert preds(g, "op:add") == ["block.1", "input:[1]"]
    assert preds(g, "block.0 (call 2)") == ["op:add"]
    assert preds(g, "output:.a") == ["act"] and preds(g, "output:.b") == ["shuffle"]
    # custom leaves are single nodes: none of their inner ops shows up
    assert [n.id for n in g.nodes if n.kind == "op"] == ["op:add"]
    assert g.groups["block (call 2)"].call_index == 2
    assert by_id(g)["block.1 (call 2)"].scope == ["block (call 2)"]


def test_reused_block_collapses_to_two_nodes():
    _, g, _ = record(Reused(), torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6))
    small = collapse(g, node_budget=8)
    assert [n.id for n in small.nodes] == [
        "input:[0]", "input:[1]", "block", "op:add", "block (call 2)", "act", "shuffle",
        "output:.a", "output:.b",
    ]
    # Expanding a block would add a node per call (11 in all, over the budget), so both calls
    # stay one node each, and the add between them and its second input stay visible.
    assert small.edges == [
        ("input:[0]", "block"), ("block", "op:add"), ("input:[1]", "op:add"), ("op:add", "block (call 2)"),
        ("block (call 2)", "act"), ("block (call 2)", "shuffle"), ("act", "output:.a"), ("shuffle", "output:.b"),
    ]
    groups = [n for n in small.nodes if n.kind == "group"]
    assert {n.id for n in groups} == {"block", "block (call 2)"}
    assert {n.call_index for n in groups} == {1, 2}


def test_scripted_submodule_is_one_opaque_node():
    model = WithScript()
    rec, g, _ = record(model, torch.randn(1, 3, 6, 6))
    assert [n.id for n in g.nodes] == ["input", "pre", "scripted", "op:mul", "post", "output"]
    node = by_id(g)["scripted"]
    assert node.type == "Sequential" and node.params == 4 * 4 * 9 + 4
    assert preds(g, "scripted") == ["pre"] and preds(g, "op:mul") == ["scripted"]
    from torch.nn.modules import module as hooks

    assert not hooks._global_forward_hooks and not hooks._global_forward_pre_hooks


def test_scripted_model_as_a_whole_is_one_node():
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    _, g, _ = record(scripted, torch.randn(1, 3, 4, 4))
    assert [(n.id, n.kind) for n in g.nodes] == [
        ("input", "input"), ("Sequential", "module"), ("output", "output")
    ]


def test_ops_on_the_output_after_the_forward_are_not_recorded():
    model = Branchy().eval()
    with torch.no_grad(), CallRecorder(model) as rec:
        out = model(torch.randn(1, 3, 8, 8))
        out.softmax(1).argmax(1)  # the caller's post-processing, still inside the recorder
    assert [n.id for n in rec.graph().nodes][-1] == "output"
    assert rec.events[-1].kind == "output"


def test_tensor_subclass_flows_through():
    class Tagged(torch.Tensor):
        pass

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, x):
            return self.body(x).flatten(1)

    x = torch.randn(1, 3, 4, 4).as_subclass(Tagged)
    _, g, out = record(Wrap(), x)
    assert isinstance(out, Tagged)
    assert [n.id for n in g.nodes] == ["input", "body.0", "body.1", "op:flatten", "output"]
    assert len(g.edges) == 4


def test_suspend_recording_hides_capture_statistics():
    model = TinyResNet()
    seen = []

    def stats_hook(module, args, output):
        with suspend_recording():
            seen.append(float(output.mean() + output.std()))
            _ = torch.cat([output, output]).sum()

    handles = [m.register_forward_hook(stats_hook) for m in model.modules() if
               isinstance(m, nn.Conv2d)]
    try:
        _, g, _ = record(model, torch.randn(1, 3, 8, 8))
    finally:
        for h in handles:
            h.remove()
    assert seen
    _, plain, _ = record(TinyResNet(), torch.randn(1, 3, 8, 8))
    assert [n.id for n in g.nodes] == [n.id for n in plain.nodes]
    assert g.edges == plain.edges


def test_hooks_and_mode_removed_even_when_forward_raises():
    model = TutorialCNN()
    before = hook_count(model)
    depth = torch._C._len_torch_function_stack()
    with pytest.raises(RuntimeError, match="invalid"):
        with CallRecorder(model) as rec:
            model(torch.randn(2, 3, 32, 32))
    assert hook_count(model) == before == 0
    assert torch._C._len_torch_function_stack() == depth
    # later torch calls are not recorded
    n = len(rec.events)
    torch.randn(2) + 1
    assert len(rec.events) == n
    with pytest.raises(RuntimeError):
        with rec:
            pass


def test_global_hooks_removed_when_a_scripted_model_raises():
    from torch.nn.modules import module as hooks

    model = WithScript()
    with pytest.raises(RuntimeError):
        with CallRecorder(model) as rec:
            model(torch.randn(1, 5, 6, 6))  # `pre` wants 3 channels
    assert not hooks._global_forward_hooks and not hooks._global_forward_pre_hooks
    assert hook_count(model) == 0
    assert rec.failure_context()["expected"] == "Conv2d(in_channels=3)"


def test_lazy_module_counted_after_its_first_call():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(5))
    _, g, _ = record(model, torch.randn(2, 3, 6, 6))
    node = by_id(g)["2"]
    assert node.params == 4 * 4 * 4 * 5 + 5 and node.type == "Linear"


def test_failure_context_for_view():
    model = TutorialCNN()
    with pytest.raises(RuntimeError):
        with CallRecorder(model) as rec:
            model(torch.randn(2, 3, 32, 32))
    ctx = rec.failure_context()
    assert ctx["failed_at"] == "view"
    assert ctx["failed_type"] == "Tensor.view"
    assert ctx["last_completed"] == "pool (call 2)"
    assert ctx["input_shapes"] == [[2, 32, 8, 8]]
    assert ctx["expected"] == ""
    # the partial graph holds everything that ran
    g = rec.graph()
    assert [n.id for n in g.nodes][-1] == "pool (call 2)"
    assert not any(n.kind == "output" for n in g.nodes)


def test_failure_context_for_linear_of_wrong_width():
    model = TutorialCNN(wrong_linear=True)
    with pytest.raises(RuntimeError):
        with CallRecorder(model) as rec:
            model(torch.randn(3, 3, 32, 32))
    ctx = rec.failure_context()
    assert ctx["failed_at"] == "fc"
    assert ctx["failed_type"] == "Linear"
    assert ctx["input_shapes"] == [[3, 2048]]
    assert ctx["expected"] == "Linear(in_features=1568)"
    assert ctx["last_completed"] == "pool (call 2)"


def test_failure_inside_nested_block_names_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Conv2d(5, 4, 1)))
    with pytest.raises(RuntimeError):
        with CallRecorder(model) as rec:
            model(torch.randn(1, 3, 6, 6))
    ctx = rec.failure_context()
    assert ctx["failed_at"] == "1.1" and ctx["failed_type"] == "Conv2d"
    assert ctx["expected"] == "Conv2d(in_channels=5)"
    assert ctx["input_shapes"] == [[1, 4, 4, 4]]
    assert ctx["last_completed"] == "1.0"


# ----------------------------------------------------------------------------------------------
# Receptive fields


def test_receptive_fields_hand_computed():
    three = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)])
    _, g, _ = record(three, torch.randn(1, 1, 16, 16))
    assert receptive_fields(g) == {"0": (3, 1), "1": (5, 1), "2": (7, 1)}

    # conv3 -> maxpool(2, stride 2) -> conv3 -> conv3:
    # r: 3, 3 + 1*1 = 4 (j becomes 2), 4 + 2*2 = 8, 8 + 2*2 = 12
    pooled = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1),
        nn.MaxPool2d(2),
        nn.Conv2d(1, 1, 3, padding=1),
        nn.Conv2d(1, 1, 3, padding=1),
    )
    _, g, _ = record(pooled, torch.randn(1, 1, 16, 16))
    assert receptive_fields(g) == {"0": (3, 1), "1": (4, 2), "2": (8, 2), "3": (12, 2)}

    # strided and dilated convs; functional pooling in a non-leaf forward
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 1, 7, stride=2, padding=3)  # r 7, j 2
            self.b = nn.Conv2d(1, 1, 3, dilation=2, padding=2)  # r 7 + 2*2*2 = 15

        def forward(self, x):
            return F.max_pool2d(self.b(self.a(x)), 3, 2)  # r 15 + 2*2 = 19, j 4

    _, g, _ = record(Mixed(), torch.randn(1, 1, 32, 32))
    assert receptive_fields(g) == {"a": (7, 2), "b": (15, 2), "op:max_pool2d": (19, 4)}


def test_receptive_fields_of_transposed_convs_and_adaptive_pooling_hand_computed():
    # 20x20 input; r, j start at 1, 1. The rule for a transposed conv of stride s: the jump
    # is divided by s first, then r += (k - 1) * d * j with that new jump. Adaptive pooling
    # from `in` to `out` is a kernel ceil(in / out) with stride floor(in / out).
    stack = nn.Sequential(
        nn.Conv2d(1, 1, 3, stride=2, padding=1),  # 20 -> 10: r 1 + 2*1 = 3, j 2
        nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1),  # 10 -> 20: j 2/2 = 1, r 3 + 3*1 = 6
        nn.Conv2d(1, 1, 3, stride=2, padding=1),  # 20 -> 10: r 6 + 2*1 = 8, j 2
        nn.AdaptiveAvgPool2d(3),  # 10 -> 3: k ceil(10/3) = 4, s floor(10/3) = 3: r 8 + 3*2 = 14, j 6
        nn.AdaptiveMaxPool2d(1),  # 3 -> 1: k 3, s 3: r 14 + 2*6 = 26, j 18
    )
    _, g, _ = record(stack, torch.randn(1, 1, 20, 20))
    assert receptive_fields(g) == {"0": (3, 2), "1": (6, 1), "2": (8, 2), "3": (14, 6), "4": (26, 18)}

    # A transposed conv straight on the input goes below one input pixel: fractions, as floats.
    up = nn.Sequential(
        nn.ConvTranspose2d(1, 1, 4, stride=2),  # j 1/2, r 1 + 3 * 1/2 = 2.5
        nn.ConvTranspose2d(1, 1, 3, stride=2, dilation=2),  # j 1/4, r 2.5 + 2*2 * 1/4 = 3.5
        nn.Conv2d(1, 1, 5, stride=4),  # r 3.5 + 4 * 1/4 = 4.5, j 1/4 * 4 = 1
    )
    _, g, _ = record(up, torch.randn(1, 1, 6, 6))
    rf = receptive_fields(g)
    assert rf == {"0": (2.5, 0.5), "1": (3.5, 0.25), "2": (4.5, 1)}
    assert [type(v) for pair in rf.values() for v in pair] == [float, float, float, float, float, int]

    # Functional forms: F.conv_transpose2d and F.adaptive_avg_pool2d follow the same rules.
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1, 1, 3, 3))
            self.entry = nn.Identity()  # a model with no submodule is one leaf: no op nodes

        def forward(self, x):
            x = F.conv2d(self.entry(x), self.w, stride=3)  # 15 -> 5: r 3, j 3
            x = F.conv_transpose2d(x, self.w, stride=3)  # 5 -> 15: j 1, r 3 + 2*1 = 5
            return F.adaptive_avg_pool2d(x, 2)  # 15 -> 2: k 8, s 7: r 5 + 7*1 = 12, j 7

    _, g, _ = record(Functional(), torch.randn(1, 1, 15, 15))
    assert receptive_fields(g) == {"op:conv2d": (3, 3), "op:conv_transpose2d": (5, 1), "op:adaptive_avg_pool2d": (12, 7)}


def test_receptive_field_takes_the_max_over_branches():
    _, g, _ = record(TinyInception(), torch.randn(1, 3, 8, 8))
    rf = receptive_fields(g)
    assert rf["mixed1.b3.1"] == (7, 1)  # stem 3 + 5x5: 3 + 4
    assert rf["mixed1.b2.2"] == (5, 1)
    # after the cat, mixed2's 1x1 branch sees the widest path so far (7)
    assert rf["mixed2.b1"] == (7, 1)
    assert rf["mixed2.b3.1"] == (11, 1)


# ----------------------------------------------------------------------------------------------
# SVG


HOSTILE = "<img src=x onerror=alert(1)>"


def hostile_model() -> nn.Module:
    model = nn.Module()
    inner = nn.Sequential()
    inner.add_module(HOSTILE, nn.Conv2d(3, 4, 3, padding=1))
    inner.add_module('"quote" & </svg>', nn.ReLU())
    model.add_module("body", inner)
    model.forward = lambda x: model.body(x) + 1  # type: ignore[method-assign]
    return model


def test_svg_parses_labels_every_node_and_escapes_hostile_names():
    model = hostile_model()
    _, g, _ = record(model, torch.randn(1, 3, 6, 6))
    assert by_id(g)[f"body.{HOSTILE}"].kind == "module"
    sections = {section_id(f"body.{HOSTILE}")}
    svg = render_svg(g, title="<b>graph</b>", link_sections=sections)
    assert "<img" not in svg and "</svg>" not in svg[:-6] and "<b>" not in svg
    assert "http:" not in svg and "https:" not in svg
    root = ET.fromstring(svg)
    node_groups = [e for e in root.iter("g") if "g-node" in e.get("class", "").split()]
    assert len(node_groups) == len(g.nodes)
    for e in node_groups:
        texts = [t.text for t in e.iter("text")]
        assert texts and texts[0], "every node has a label"
    labels = {e.get("data-node"): [t.text for t in e.iter("text")] for e in node_groups}
    assert labels[f"body.{HOSTILE}"][0].startswith(HOSTILE)  # escaped on the wire, intact here
    # links: the section where there is one, otherwise the table row
    hrefs = {e.get("data-node"): next(e.iter("a")).get("href") for e in node_groups
             if list(e.iter("a"))}
    assert hrefs[f"body.{HOSTILE}"] == "#" + section_id(f"body.{HOSTILE}")
    assert hrefs['body."quote" & </svg>'] == "#" + row_id('body."quote" & </svg>')
    # tooltips carry type, shapes and parameters
    tip = next(e for e in node_groups if e.get("data-node") == f"body.{HOSTILE}")
    title = next(tip.iter("title")).text
    assert "Conv2d" in title and "1×3×6×6" in title and "1×4×6×6" in title
    assert "params: 112" in title


def test_svg_is_deterministic_and_classed_by_layer_type():
    _, g1, _ = record(TinyResNet(), torch.randn(1, 3, 8, 8))
    _, g2, _ = record(TinyResNet(), torch.randn(1, 3, 8, 8))
    a, b = render_svg(g1), render_svg(g2)
    assert a == b
    root = ET.fromstring(a)
    classes = Counter(
        c for e in root.iter("g") for c in e.get("class", "").split() if c.startswith("g-k-")
    )
    assert classes["g-k-conv"] == 10 and classes["g-k-norm"] == 9
    assert classes["g-k-merge"] == 4 and classes["g-k-io"] == 2
    assert "style=" not in a and "fill=" not in a  # colours live in the page's CSS


def test_graph_views_collapsed_groups_expandable():
    _, g, _ = record(TinyResNet(blocks=3), torch.randn(1, 3, 8, 8))
    collapsed, full = build_graph_views(g, link_sections={section_id("conv1")}, node_budget=20)
    c_root, f_root = ET.fromstring(collapsed), ET.fromstring(full)
    groups = [e for e in c_root.iter("g") if e.get("data-group")]
    assert len(groups) == 6
    token = groups[0].get("data-group")
    assert token == g.groups["layer1.0"].token
    members = [e for e in f_root.iter("g") if token in (e.get("data-scope") or "").split()]
    assert len(members) == 7
    n_full = len([e for e in f_root.iter("g") if "g-node" in e.get("class", "").split()])
    assert n_full == len(g.nodes)
    same, same_full = build_graph_views(g, link_sections=set(), node_budget=500)
    assert same == same_full


def test_folded_views_show_the_whole_graphs_receptive_fields():
    # The collapsed view hides the blocks' convolutions; avgpool after them still sees as
    # far as it does in the real network, not only through the visible stem.
    _, g, _ = record(TinyResNet(blocks=3), torch.randn(1, 3, 16, 16))
    true_field = receptive_fields(g)["avgpool"]
    collapsed, _ = build_graph_views(g, node_budget=20)
    opened = group_views(g, node_budget=20)
    assert opened
    for svg in [collapsed, *opened.values()]:
        nodes = {e.get("data-node"): e for e in ET.fromstring(svg).iter("g") if e.get("data-node")}
        tooltip = "".join(nodes["avgpool"].itertext())
        assert f"receptive field: {true_field[0]}, effective stride: {true_field[1]}" in tooltip


def test_layout_of_a_hand_made_graph_and_crossing_count():
    # Two crossing edges by construction: a->d, b->c with a, b on one layer and c, d below,
    # ordered so the sweeps can untangle them.
    nodes = [GraphNode(id=i, kind="module", name=i, type="Conv2d") for i in "abcd"]
    g = ExecutedGraph(nodes=nodes, edges=[("a", "d"), ("b", "c")])
    lay = layout(g)
    assert count_crossings(lay) == 0
    assert [sorted(layer) for layer in lay.layers] == [["a", "b"], ["c", "d"]]
    # K(2,2) cannot avoid one crossing... but with shared endpoints it is not counted twice
    g2 = ExecutedGraph(nodes=nodes, edges=[("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")])
    assert count_crossings(layout(g2)) == 1


def test_graph_partial_renders_both_views_and_escapes():
    from html.parser import HTMLParser

    from cnnreport.render.views import make_environment

    # The page's environment (autoescape, strict undefined, and the inline_script global the
    # partial writes its script with, so the CSP hash matches).
    env = make_environment()
    _, g, _ = record(hostile_model(), torch.randn(1, 3, 6, 6))
    collapsed, full = build_graph_views(g, link_sections=set(), node_budget=2)
    assert collapsed != full
    page = env.get_template("_graph.html.j2").render(graph_svg=collapsed, graph_full_svg=full)
    assert "<img" not in page and "http:" not in page and "https:" not in page
    assert page.count('<div class="g-view"') == 2 and "data-g-show" in page and "<script>" in page

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: Counter = Counter()

        def handle_starttag(self, tag, attrs):
            self.tags[tag] += 1

    parser = Collect()
    parser.feed(page)
    assert parser.tags["svg"] == 2 and parser.tags["img"] == 0
    # A graph that fits its budget: one view, no toggle, no script.
    same = env.get_template("_graph.html.j2").render(graph_svg=full, graph_full_svg=full)
    assert same.count("<svg") == 1 and "<script>" not in same and "data-g-show" not in same
    empty = env.get_template("_graph.html.j2").render(graph_svg="", graph_full_svg="")
    assert "<svg" not in empty and "No graph" in empty
