"""Receptive fields and jumps on hand-made executed graphs, every value worked out by hand.

The recurrence (Araujo et al., "Computing receptive fields of convolutional neural networks",
Distill 2019), from the input with r = 1, j = 1:

- convolution or pooling with kernel k, stride s, dilation d: r += (k - 1) * d * j, then j *= s;
- transposed convolution of stride s: j /= s first, then r += (k - 1) * d * j;
- adaptive pooling from `in` to `out`: k = ceil(in / out), s = max(1, floor(in / out));
- resampling (a spatial size change without a kernel): j *= in / out;
- where paths meet: the largest r and the largest j over the incoming paths.

Sizes are read along axis 2 of the first input and output shape (height); widths differ from
heights in these graphs so that reading another axis gives other numbers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnreport.analysis.graph import receptive_fields
from cnnreport.capture.executed_graph import ExecutedGraph, GraphNode
from cnnreport.capture.tracing import CallRecorder


def node(id: str, attrs: dict | None = None, inp: list | None = None, out: list | None = None,
         kind: str = "module") -> GraphNode:
    return GraphNode(id=id, kind=kind, name=id, type="Layer", attrs=attrs if attrs is not None else {},
                     input_shapes=[inp] if inp else [], output_shapes=[out] if out else [])


def chain(*nodes: GraphNode) -> ExecutedGraph:
    """input -> nodes... in order, one edge each."""
    all_nodes = [GraphNode(id="in", kind="input", name="in", type="input"), *nodes]
    edges = [(a.id, b.id) for a, b in zip(all_nodes, all_nodes[1:])]
    return ExecutedGraph(nodes=all_nodes, edges=edges)


def test_conv_stack_with_strides_and_dilations():
    g = chain(
        node("a", {"kernel": 3, "stride": 1, "dilation": 1}),  # r 1 + 2*1*1 = 3, j 1
        node("b", {"kernel": 5, "stride": 2, "dilation": 1}),  # r 3 + 4*1*1 = 7, j 2
        node("c", {"kernel": 3, "stride": 3, "dilation": 2}),  # r 7 + 2*2*2 = 15, j 6
        node("d", {"kernel": 2, "stride": 2, "dilation": 3}),  # r 15 + 1*3*6 = 33, j 12
    )
    assert receptive_fields(g) == {"a": (3, 1), "b": (7, 2), "c": (15, 6), "d": (33, 12)}


def test_missing_or_empty_stride_and_dilation_count_as_one():
    g = chain(
        node("a", {"kernel": 3}),  # no stride, no dilation: r 3, j 1
        node("b", {"kernel": 3, "stride": 2}),  # r 5, j 2
        node("c", {"kernel": 3}),  # r 5 + 2*2 = 9, j 2
        node("d", {"kernel": 3, "stride": None, "dilation": None}),  # r 9 + 4 = 13, j 2
        node("e", {"kernel": 3, "stride": 0, "dilation": 0}),  # r 17, j 2
    )
    assert receptive_fields(g) == {"a": (3, 1), "b": (5, 2), "c": (9, 2), "d": (13, 2), "e": (17, 2)}


def test_kernel_geometry_given_as_strings_is_read_as_integers():
    g = chain(node("a", {"kernel": "3", "stride": "2", "dilation": "2"}))  # r 1 + 2*2 = 5, j 2
    assert receptive_fields(g) == {"a": (5, 2)}
    assert [type(v) for v in receptive_fields(g)["a"]] == [int, int]


def test_a_1x1_kernel_changes_only_the_jump():
    g = chain(node("a", {"kernel": 1, "stride": 4}), node("b", {"kernel": 3}))  # r 1, j 4; r 9
    assert receptive_fields(g) == {"a": (1, 4), "b": (9, 4)}


def test_transposed_conv_divides_the_jump_before_widening_the_field():
    g = chain(
        node("down", {"kernel": 3, "stride": 4}),  # r 3, j 4
        node("up", {"kernel": 3, "stride": 2, "dilation": 1, "transposed": True}),  # j 2, r 3 + 2*2 = 7
        node("up2", {"kernel": 2, "stride": 4, "dilation": 3, "transposed": True}),  # j 1/2, r 7 + 1*3/2 = 8.5
    )
    rf = receptive_fields(g)
    assert rf == {"down": (3, 4), "up": (7, 2), "up2": (8.5, 0.5)}
    assert [type(v) for v in rf["up2"]] == [float, float]
    assert [type(v) for v in rf["up"]] == [int, int]


def test_transposed_false_is_an_ordinary_conv():
    g = chain(node("a", {"kernel": 3, "stride": 2, "transposed": False}))
    assert receptive_fields(g) == {"a": (3, 2)}


def test_adaptive_pooling_from_its_input_and_output_sizes():
    g = chain(
        node("s", {"kernel": 3, "stride": 2}, [1, 1, 40, 41], [1, 1, 20, 21]),  # r 3, j 2
        # 20 -> 6: k ceil(20/6) = 4, s floor(20/6) = 3: r 3 + 3*2 = 9, j 6
        node("p", {"adaptive": True}, [1, 1, 20, 21], [1, 1, 6, 7]),
        # 6 -> 3: k 2, s 2: r 9 + 1*6 = 15, j 12
        node("q", {"adaptive": True}, [1, 1, 6, 5], [1, 1, 3, 2]),
        # 3 -> 1: k 3, s 3: r 15 + 2*12 = 39, j 36
        node("r", {"adaptive": True}, [1, 1, 3, 2], [1, 1, 1, 1]),
    )
    assert receptive_fields(g) == {"s": (3, 2), "p": (9, 6), "q": (15, 12), "r": (39, 36)}


def test_adaptive_pooling_to_a_larger_size_keeps_kernel_and_stride_at_one():
    # 3 -> 5: k ceil(3/5) = 1, s max(1, floor(3/5) = 0) = 1: nothing changes
    g = chain(node("a", {"kernel": 3, "stride": 2}), node("p", {"adaptive": True}, [1, 1, 3, 9], [1, 1, 5, 2]),
              node("b", {"kernel": 3}))
    assert receptive_fields(g) == {"a": (3, 2), "p": (3, 2), "b": (7, 2)}


def test_adaptive_pooling_to_the_same_size_is_a_1x1_kernel():
    g = chain(node("a", {"kernel": 3, "stride": 2}), node("p", {"adaptive": True}, [1, 1, 7, 9], [1, 1, 7, 3]))
    assert receptive_fields(g) == {"a": (3, 2), "p": (3, 2)}


def test_adaptive_pooling_with_an_exact_divisor():
    # 12 -> 4: k 3, s 3 (ceil and floor agree): r 1 + 2 = 3, j 3
    g = chain(node("p", {"adaptive": True}, [1, 1, 12, 5], [1, 1, 4, 5]))
    assert receptive_fields(g) == {"p": (3, 3)}
    # 13 -> 4: k ceil = 4, s floor = 3: r 4, j 3
    g = chain(node("p", {"adaptive": True}, [1, 1, 13, 5], [1, 1, 4, 5]))
    assert receptive_fields(g) == {"p": (4, 3)}


def test_adaptive_pooling_on_1d_inputs_reads_the_length():
    # (N, C, L): the length is axis 2. 10 -> 3: k 4, s 3: r 4, j 3
    g = chain(node("p", {"adaptive": True}, [2, 4, 10], [2, 4, 3]))
    assert receptive_fields(g) == {"p": (4, 3)}


def test_adaptive_pooling_without_spatial_sizes_is_listed_unchanged():
    # no shapes (or a flat one): the field passes through, and the node is still a pooling layer
    g = chain(node("a", {"kernel": 5, "stride": 2}), node("p", {"adaptive": True}),
              node("q", {"adaptive": True}, [1, 8], [1, 8]), node("b", {"kernel": 2}))
    assert receptive_fields(g) == {"a": (5, 2), "p": (5, 2), "q": (5, 2), "b": (7, 2)}
    # only one of the two sizes known
    g = chain(node("a", {"kernel": 5, "stride": 2}), node("p", {"adaptive": True}, [1, 1, 9, 9], None))
    assert receptive_fields(g) == {"a": (5, 2), "p": (5, 2)}
    g = chain(node("a", {"kernel": 5, "stride": 2}), node("p", {"adaptive": True}, None, [1, 1, 3, 3]))
    assert receptive_fields(g) == {"a": (5, 2), "p": (5, 2)}


def test_resampling_scales_the_jump_and_is_not_listed():
    g = chain(
        node("a", {"kernel": 3, "stride": 4}, [1, 1, 32, 30], [1, 1, 8, 7]),  # r 3, j 4
        node("up", {}, [1, 1, 8, 7], [1, 1, 16, 9]),  # j 4 * 8/16 = 2
        node("b", {"kernel": 3}, [1, 1, 16, 9], [1, 1, 16, 9]),  # r 3 + 2*2 = 7, j 2
        node("down", {}, [1, 1, 16, 9], [1, 1, 4, 9]),  # j 2 * 16/4 = 8
        node("c", {"kernel": 2}),  # r 7 + 8 = 15, j 8
    )
    assert receptive_fields(g) == {"a": (3, 4), "b": (7, 2), "c": (15, 8)}


def test_upsampling_past_the_input_gives_fractions_as_floats():
    g = chain(
        node("up", {}, [1, 1, 4, 5], [1, 1, 12, 5]),  # j 1/3
        node("b", {"kernel": 4}),  # r 1 + 3 * 1/3 = 2, j 1/3
        node("c", {"kernel": 2}),  # r 2 + 1/3 = 7/3
    )
    rf = receptive_fields(g)
    assert rf["b"] == (2, 1 / 3)
    assert type(rf["b"][0]) is int and type(rf["b"][1]) is float
    assert rf["c"] == (7 / 3, 1 / 3)
    assert set(rf) == {"b", "c"}


def test_same_size_and_rank_changes_do_not_resample():
    g = chain(
        node("a", {"kernel": 3, "stride": 2}),  # r 3, j 2
        node("same", {}, [1, 2, 6, 6], [1, 2, 6, 3]),  # height unchanged (width is not read)
        node("unsq", {}, [1, 2, 6, 6], [1, 2, 1, 6, 6]),  # a rank change: axis 2 is another axis
        node("flat", {}, [1, 2, 6, 6], [1, 72]),  # no spatial size after
        node("noin", {}, None, [1, 2, 3, 3]),  # no input shape recorded
        node("b", {"kernel": 3}),  # r 3 + 2*2 = 7, j 2
    )
    assert receptive_fields(g) == {"a": (3, 2), "b": (7, 2)}


def test_branches_take_the_largest_field_and_the_largest_jump_separately():
    # wide: r 9 at jump 1; strided: r 3 at jump 4. After the merge: r 9, j 4.
    nodes = [
        GraphNode(id="in", kind="input", name="in", type="input"),
        node("wide", {"kernel": 9}),  # r 9, j 1
        node("strided", {"kernel": 3, "stride": 4}),  # r 3, j 4
        node("add", kind="op"),
        node("after", {"kernel": 3}),  # r 9 + 2*4 = 17, j 4
    ]
    edges = [("in", "wide"), ("in", "strided"), ("wide", "add"), ("strided", "add"), ("add", "after")]
    rf = receptive_fields(ExecutedGraph(nodes=nodes, edges=edges))
    assert rf == {"wide": (9, 1), "strided": (3, 4), "after": (17, 4)}
    # the order of the edges into the merge does not matter
    edges = [("in", "strided"), ("in", "wide"), ("strided", "add"), ("wide", "add"), ("add", "after")]
    assert receptive_fields(ExecutedGraph(nodes=nodes, edges=edges))["after"] == (17, 4)


def test_nodes_not_reached_from_an_input_are_skipped_and_the_rest_goes_on():
    # a constant made inside the forward (no in-edge) comes before the convs; a conv fed only
    # by it has no field from the input
    nodes = [
        GraphNode(id="in", kind="input", name="in", type="input"),
        node("const", {}, kind="op"),
        node("orphan", {"kernel": 5}),
        node("a", {"kernel": 3}),  # r 3
        node("mul", {}, kind="op"),  # in and const: only in counts
        node("b", {"kernel": 3, "stride": 2}),  # r 5, j 2
    ]
    edges = [("const", "orphan"), ("in", "a"), ("a", "mul"), ("const", "mul"), ("mul", "b")]
    assert receptive_fields(ExecutedGraph(nodes=nodes, edges=edges)) == {"a": (3, 1), "b": (5, 2)}


def test_two_inputs_each_start_at_one():
    nodes = [
        GraphNode(id="x", kind="input", name="x", type="input"),
        GraphNode(id="y", kind="input", name="y", type="input"),
        node("a", {"kernel": 3, "stride": 2}),  # r 3, j 2
        node("b", {"kernel": 5}),  # on y: r 5, j 1
    ]
    edges = [("x", "a"), ("y", "b")]
    assert receptive_fields(ExecutedGraph(nodes=nodes, edges=edges)) == {"a": (3, 2), "b": (5, 1)}


def test_attrs_of_none_count_as_no_attributes():
    g = chain(node("a", {"kernel": 3, "stride": 2}))
    g.nodes.append(GraphNode(id="n", kind="module", name="n", type="Layer", attrs=None))
    g.nodes.append(node("b", {"kernel": 3}))
    g.edges += [("a", "n"), ("n", "b")]
    assert receptive_fields(g) == {"a": (3, 2), "b": (7, 2)}


def test_an_empty_graph_and_a_graph_without_kernels():
    assert receptive_fields(ExecutedGraph(nodes=[], edges=[])) == {}
    g = chain(node("relu", {}, [1, 1, 4, 4], [1, 1, 4, 4]))
    assert receptive_fields(g) == {}


# -- the same numbers from recorded models ---------------------------------------------------


def recorded(model: nn.Module, x: torch.Tensor) -> dict:
    model.eval()
    with torch.no_grad(), CallRecorder(model) as rec:
        model(x)
    return receptive_fields(rec.graph())


def test_recorded_1d_stack_with_upsampling():
    model = nn.Sequential(
        nn.Conv1d(1, 1, 5, stride=2, padding=2),  # 24 -> 12: r 5, j 2
        nn.Upsample(scale_factor=3),  # 12 -> 36: j 2/3
        nn.Conv1d(1, 1, 4, dilation=2),  # r 5 + 3*2*2/3 = 9, j 2/3
        nn.AdaptiveMaxPool1d(5),  # 30 -> 5: k 6, s 6: r 9 + 5 * 2/3 = 37/3, j 4
    )
    rf = recorded(model, torch.randn(1, 1, 24))
    assert rf == {"0": (5, 2), "2": (9, 2 / 3), "3": (37 / 3, 4)}  # floats of exact fractions
    assert type(rf["2"][0]) is int and type(rf["3"][1]) is int


def test_recorded_pooling_without_a_stride_steps_by_its_kernel():
    model = nn.Sequential(nn.AvgPool2d(3), nn.MaxPool2d(2, stride=1), nn.Conv2d(1, 1, 3))
    # 3x3 pool, stride 3: r 3, j 3; 2x2 stride 1: r 3 + 3 = 6, j 3; conv: r 6 + 2*3 = 12
    assert recorded(model, torch.randn(1, 1, 19, 17)) == {"0": (3, 3), "1": (6, 3), "2": (12, 3)}
