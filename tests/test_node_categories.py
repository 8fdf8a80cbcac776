"""The colour class of each graph node (``node_category``), pinned on hand-made nodes.

Each case names a node the way the recorder does (a module's class name as ``type``, an op's
function name as ``name``) and says which class the page colours it with, so every keyword the
classification looks for is tried once, including names that reach a rule only through its
substring or suffix test (a custom ``MyReLU``-like class, a ``fastsigmoid`` op).
"""

from __future__ import annotations

import pytest

from cnnreport.analysis.graph import node_category
from cnnreport.capture.executed_graph import GraphNode


def module(type_name: str, name: str = "layer") -> GraphNode:
    return GraphNode(id=name, kind="module", name=name, type=type_name)


def op(name: str, type_name: str = "Tensor.whatever") -> GraphNode:
    return GraphNode(id=f"op:{name}", kind="op", name=name, type=type_name)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("input", "io"), ("output", "io"), ("group", "group")],
)
def test_io_and_group_nodes_are_classed_by_kind_whatever_their_type(kind, expected):
    # the type would say "conv": the kind wins
    node = GraphNode(id="x", kind=kind, name="conv", type="Conv2d")
    assert node_category(node) == expected


@pytest.mark.parametrize(
    ("type_name", "expected"),
    [
        ("Conv2d", "conv"),
        ("torch.nn.modules.conv.ConvTranspose2d", "conv"),  # only the last dotted part counts
        ("mypkg.pooling.ReLU", "act"),  # not "pool": the package path is not read
        ("mypkg.conv.Sequential", "other"),
        ("MaxPool2d", "pool"),
        ("AdaptiveAvgPool2d", "pool"),
        ("BatchNorm2d", "norm"),
        ("LayerNorm", "norm"),
        ("Dropout2d", "drop"),
        ("DropPath", "drop"),
        ("StochasticDepth", "drop"),
        ("ReLU", "act"),
        ("Tanh", "act"),
        ("MyCustomLU", "act"),  # not in the list, but ends in "lu"
        ("MemoryEfficientSwish", "act"),  # contains "swish"
        ("GatedSigmoidUnit", "act"),  # contains "sigmoid"
        ("Linear", "linear"),
        ("Bilinear", "linear"),
        ("Embedding", "linear"),
        ("LazyLinear", "linear"),
        ("MultiheadAttention", "linear"),
        ("Identity", "shape"),
        ("Flatten", "shape"),
        ("Upsample", "shape"),
        ("ChannelShuffle", "shape"),
        ("GroupShuffleBlock", "shape"),  # contains "shuffle"
        ("Softmax", "act"),
        ("Sequential", "other"),
        ("torch.nn.modules.container.Sequential", "other"),
    ],
)
def test_module_nodes_are_classed_by_their_type(type_name, expected):
    assert node_category(module(type_name)) == expected


def test_a_module_is_classed_by_its_type_not_by_its_name():
    # a Linear layer someone called "conv" is still linear; a conv called "fc" still conv
    assert node_category(module("Linear", name="conv")) == "linear"
    assert node_category(module("Conv2d", name="fc")) == "conv"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("conv2d", "conv"),
        ("max_pool2d", "pool"),
        ("adaptive_avg_pool2d", "pool"),
        ("batch_norm", "norm"),
        ("dropout", "drop"),
        ("relu", "act"),
        ("gelu", "act"),
        ("leaky_relu", "act"),  # ends in "lu"
        ("hard_swish", "act"),  # contains "swish"
        ("fastsigmoid", "act"),  # contains "sigmoid"
        ("linear", "linear"),
        ("matmul", "linear"),
        ("mm", "linear"),
        ("bmm", "linear"),
        ("einsum", "linear"),
        ("addmm", "linear"),
        ("add", "merge"),
        ("cat", "merge"),
        ("mul", "merge"),
        ("where", "merge"),
        ("view", "shape"),
        ("flatten", "shape"),
        ("getitem", "shape"),
        ("interpolate", "shape"),
        ("upsample_bilinear2d", "shape"),  # contains "upsample"
        ("pixel_unshuffle", "shape"),  # contains "shuffle", not in the list
        ("mean", "pool"),
        ("amax", "pool"),
        ("max", "pool"),
        ("clamp", "other"),
        ("abs", "other"),
    ],
)
def test_op_nodes_are_classed_by_their_name(name, expected):
    assert node_category(op(name)) == expected


def test_an_op_is_classed_by_its_name_not_by_its_type():
    # the type of an in-place `+=` is a dunder: the op's name says what it is
    assert node_category(op("add", type_name="Tensor.__iadd__")) == "merge"
    assert node_category(op("mean", type_name="torch.conv_like")) == "pool"
    # names are compared in lower case
    assert node_category(op("Cat", type_name="x")) == "merge"


def test_an_op_without_a_name_falls_back_on_its_type():
    assert node_category(op("", type_name="torch.nn.functional.conv2d")) == "conv"
    assert node_category(op("", type_name="torch.cat")) == "merge"
