"""Folding and collapsing the executed graph, on hand-made graphs whose folded views are
written out here node by node and edge by edge.

The graph used most (ten nodes; ``A`` and ``B`` are two calls of one block type, ``B`` holds a
sub-block, ``C`` a single node)::

    input -> stem -> A[a1 -> a2 -> a3] -> B[b1 -> B.sub[b2 -> b3]] -> C[c1] -> output
                 \\_________________________/ (stem -> b1, a skip connection)
"""

from __future__ import annotations

from cnnreport.analysis.graph import collapse, fold
from cnnreport.capture.executed_graph import ExecutedGraph, GraphNode, GroupInfo


def n(id: str, scope: list[str], kind: str = "module", inp=None, out=None) -> GraphNode:
    return GraphNode(id=id, kind=kind, name=id, type="Conv2d", scope=list(scope),
                     group=scope[-1] if scope else "", input_shapes=inp or [], output_shapes=out or [])


def blocks() -> ExecutedGraph:
    nodes = [
        n("input", [], kind="input", out=[[1, 3, 8, 8]]),
        n("stem", [], inp=[[1, 3, 8, 8]], out=[[1, 4, 8, 8]]),
        n("a1", ["A"], inp=[[1, 4, 8, 8]], out=[[1, 5, 8, 8]]),
        n("a2", ["A"], inp=[[1, 5, 8, 8]], out=[[1, 6, 8, 8]]),
        n("a3", ["A"], inp=[[1, 6, 8, 8]], out=[[1, 7, 4, 4]]),
        n("b1", ["B"], inp=[[1, 7, 4, 4], [1, 4, 8, 8]], out=[[1, 8, 4, 4]]),
        n("b2", ["B", "B.sub"], inp=[[1, 8, 4, 4]], out=[[1, 9, 4, 4]]),
        n("b3", ["B", "B.sub"], inp=[[1, 9, 4, 4]], out=[[1, 10, 2, 2]]),
        n("c1", ["C"], inp=[[1, 10, 2, 2]], out=[[1, 2]]),
        n("output", [], kind="output", inp=[[1, 2]], out=[[1, 2]]),
    ]
    edges = [("input", "stem"), ("stem", "a1"), ("a1", "a2"), ("a2", "a3"), ("a3", "b1"), ("stem", "b1"),
             ("b1", "b2"), ("b2", "b3"), ("b3", "c1"), ("c1", "output")]
    groups = {
        "A": GroupInfo(key="A", token="g1", path="body.a", type="Block", call_index=1, params=30, parent="",
                       row_id="row-A", section_id="sec-A", output_shapes=[]),
        "B": GroupInfo(key="B", token="g2", path="body.a", type="Block", call_index=2, params=40, parent="",
                       row_id="row-B", section_id="sec-B", output_shapes=[[1, 11, 2, 2]]),
        "B.sub": GroupInfo(key="B.sub", token="g3", path="B.sub", type="Inner", call_index=1, params=20,
                           parent="B", row_id="row-Bsub", section_id="sec-Bsub", output_shapes=[]),
        "C": GroupInfo(key="C", token="g4", path="C", type="Head", call_index=1, params=5, parent="",
                       row_id="row-C", section_id="sec-C", output_shapes=[[1, 2]]),
    }
    return ExecutedGraph(nodes=nodes, edges=edges, groups=groups)


def ids(graph: ExecutedGraph) -> list[str]:
    return [node.id for node in graph.nodes]


def test_fold_with_nothing_expanded_draws_each_top_level_call_as_one_node():
    g = blocks()
    f = fold(g, set())
    # C holds one node: c1 is shown, not a group of one
    assert ids(f) == ["input", "stem", "A", "B", "c1", "output"]
    assert [node.kind for node in f.nodes] == ["input", "module", "group", "group", "module", "output"]
    # edges inside a group vanish, parallel ones merge, the skip stem -> B stays
    assert f.edges == [("input", "stem"), ("stem", "A"), ("A", "B"), ("stem", "B"), ("B", "c1"), ("c1", "output")]
    assert f.groups == g.groups
    # nodes that stay are the graph's own nodes
    assert f.nodes[1] is g.nodes[1] and f.nodes[4] is g.nodes[8]


def test_a_group_node_carries_its_calls_facts():
    f = fold(blocks(), set())
    a, b = f.nodes[2], f.nodes[3]
    # the name is the module path (both calls of body.a), the id the call's key
    assert (a.id, a.name, a.type, a.call_index, a.params, a.group) == ("A", "body.a", "Block", 1, 30, "")
    assert (a.row_id, a.section_id, a.scope, a.members) == ("row-A", "sec-A", [], 3)
    # no output shape recorded for the call: its last node's; the input is its first node's
    assert a.output_shapes == [[1, 7, 4, 4]]
    assert a.input_shapes == [[1, 4, 8, 8]]
    assert (b.id, b.name, b.call_index, b.params, b.members) == ("B", "body.a", 2, 40, 3)
    assert b.output_shapes == [[1, 11, 2, 2]]  # the call's own, not b3's
    assert b.input_shapes == [[1, 7, 4, 4], [1, 4, 8, 8]]
    assert b.attrs == {}


def test_group_shapes_are_copies():
    g = blocks()
    f = fold(g, set())
    f.nodes[2].output_shapes[0][1] = 99
    f.nodes[2].input_shapes[0][1] = 99
    f.nodes[3].output_shapes[0][1] = 99
    assert g.nodes[4].output_shapes == [[1, 7, 4, 4]]
    assert g.nodes[2].input_shapes == [[1, 4, 8, 8]]
    assert g.groups["B"].output_shapes == [[1, 11, 2, 2]]


def test_fold_opens_the_expanded_groups_and_shows_the_sub_block_inside():
    g = blocks()
    f = fold(g, {"A", "B"})
    assert ids(f) == ["input", "stem", "a1", "a2", "a3", "b1", "B.sub", "c1", "output"]
    sub = f.nodes[6]
    assert (sub.kind, sub.group, sub.scope, sub.members, sub.type) == ("group", "B", ["B"], 2, "Inner")
    assert sub.output_shapes == [[1, 10, 2, 2]] and sub.input_shapes == [[1, 8, 4, 4]]
    assert f.edges == [("input", "stem"), ("stem", "a1"), ("a1", "a2"), ("a2", "a3"), ("a3", "b1"), ("stem", "b1"),
                       ("b1", "B.sub"), ("B.sub", "c1"), ("c1", "output")]


def test_fold_of_an_inner_group_alone_keeps_the_outer_one_closed():
    # B.sub opened but not B: B is still one node holding all three
    f = fold(blocks(), {"B.sub"})
    assert ids(f) == ["input", "stem", "A", "B", "c1", "output"]
    assert f.nodes[3].members == 3


def test_fold_with_everything_expanded_is_the_graph():
    g = blocks()
    f = fold(g, {"A", "B", "B.sub", "C"})
    assert f.nodes == g.nodes and f.edges == g.edges


def test_parallel_edges_between_two_groups_become_one():
    g = blocks()
    g.edges.append(("a1", "b1"))  # a second edge from A into B
    assert fold(g, set()).edges == [("input", "stem"), ("stem", "A"), ("A", "B"), ("stem", "B"), ("B", "c1"),
                                    ("c1", "output")]
    assert fold(g, {"A", "B"}).edges[-1] == ("a1", "b1")


def test_edges_to_nodes_outside_the_list_keep_their_ends():
    g = blocks()
    g.edges.append(("a2", "elsewhere"))
    g.edges.append(("elsewhere", "c1"))
    f = fold(g, set())
    assert f.edges[-2:] == [("A", "elsewhere"), ("elsewhere", "c1")]


def test_collapse_opens_the_type_that_adds_fewest_nodes_within_the_budget():
    g = blocks()
    # closed: input stem A B C output = 6. Opening Head (C) adds none: 6; opening Block (A, B
    # together): input stem a1 a2 a3 b1 B.sub C output = 9.
    assert ids(collapse(g, node_budget=6)) == ["input", "stem", "A", "B", "c1", "output"]
    assert ids(collapse(g, node_budget=8)) == ["input", "stem", "A", "B", "c1", "output"]
    # at 9 both block calls open together (never A alone), then B.sub (10) does not fit
    assert ids(collapse(g, node_budget=9)) == ["input", "stem", "a1", "a2", "a3", "b1", "B.sub", "c1", "output"]
    assert ids(collapse(g, node_budget=10)) == ids(g)
    assert collapse(g, node_budget=10).edges == g.edges


def test_collapse_under_a_budget_smaller_than_the_top_level():
    # nothing fits 3 (the closed view has 6): the groups stay closed, the single one shows its node
    f = collapse(blocks(), node_budget=3)
    assert ids(f) == ["input", "stem", "A", "B", "c1", "output"]
    assert collapse(blocks()).nodes == blocks().nodes  # the default budget (60) holds all ten


def two_types(first: str, second: str, sizes: tuple[int, int] = (2, 2)) -> ExecutedGraph:
    """input -> X (type `first`, sizes[0] nodes) -> Y (type `second`, sizes[1] nodes) -> output."""
    nodes = [n("input", [], kind="input")]
    nodes += [n(f"x{i}", ["X"]) for i in range(sizes[0])]
    nodes += [n(f"y{i}", ["Y"]) for i in range(sizes[1])]
    nodes.append(n("output", [], kind="output"))
    edges = [(a.id, b.id) for a, b in zip(nodes, nodes[1:])]
    groups = {
        "X": GroupInfo(key="X", token="g1", path="X", type=first),
        "Y": GroupInfo(key="Y", token="g2", path="Y", type=second),
    }
    return ExecutedGraph(nodes=nodes, edges=edges, groups=groups)


def test_a_tie_goes_to_the_type_name_first_in_order():
    # opening either adds one node (4 -> 5); budget 5 opens one: the type named first
    assert ids(collapse(two_types("Zeta", "Alpha"), node_budget=5)) == ["input", "X", "y0", "y1", "output"]
    assert ids(collapse(two_types("Alpha", "Zeta"), node_budget=5)) == ["input", "x0", "x1", "Y", "output"]
    assert ids(collapse(two_types("Alpha", "Zeta"), node_budget=6)) == ["input", "x0", "x1", "y0", "y1", "output"]


def test_fewer_added_nodes_win_over_the_name():
    # closed 4; opening X (Alpha, three nodes) makes 6, Y (Zeta, two) 5, both 7. At 6 either
    # fits alone: Zeta, the smaller, opens, and then Alpha no longer fits.
    g = two_types("Alpha", "Zeta", sizes=(3, 2))
    assert ids(collapse(g, node_budget=5)) == ["input", "X", "y0", "y1", "output"]
    assert ids(collapse(g, node_budget=6)) == ["input", "X", "y0", "y1", "output"]
    assert ids(collapse(g, node_budget=7)) == ["input", "x0", "x1", "x2", "y0", "y1", "output"]
    assert ids(collapse(g, node_budget=4)) == ["input", "X", "Y", "output"]


def test_two_calls_of_one_type_open_together_or_not_at_all():
    g = two_types("Block", "Block")
    assert ids(collapse(g, node_budget=5)) == ["input", "X", "Y", "output"]
    assert ids(collapse(g, node_budget=6)) == ["input", "x0", "x1", "y0", "y1", "output"]


def nested_single() -> ExecutedGraph:
    """input -> P[P.in[p0]] -> Q[q0, q1] -> output: P wraps a wrapper around one node."""
    nodes = [n("input", [], kind="input"), n("p0", ["P", "P.in"]), n("q0", ["Q"]), n("q1", ["Q"]),
             n("output", [], kind="output")]
    edges = [(a.id, b.id) for a, b in zip(nodes, nodes[1:])]
    groups = {
        "P": GroupInfo(key="P", token="g1", path="P", type="Wrap"),
        "P.in": GroupInfo(key="P.in", token="g2", path="P.in", type="Wrap2"),
        "Q": GroupInfo(key="Q", token="g3", path="Q", type="Big"),
    }
    return ExecutedGraph(nodes=nodes, edges=edges, groups=groups)


def test_single_node_groups_open_over_the_budget_but_larger_ones_stay_closed():
    g = nested_single()
    # closed: input P Q output = 4, over a budget of 3; opening Q would make 5
    f = collapse(g, node_budget=3)
    assert ids(f) == ["input", "p0", "Q", "output"]
    assert f.nodes[2].members == 2
    assert f.edges == [("input", "p0"), ("p0", "Q"), ("Q", "output")]
    assert ids(collapse(g, node_budget=5)) == ids(g)


def test_a_block_alone_after_the_input_stays_closed_over_the_budget():
    # input -> Q[q0, q1] (a graph cut short: no output node). Closed: 2 nodes; opened: 3.
    g = nested_single()
    g.nodes = [g.nodes[0], g.nodes[2], g.nodes[3]]
    g.edges = [("input", "q0"), ("q0", "q1")]
    assert ids(collapse(g, node_budget=2)) == ["input", "Q"]
    assert ids(collapse(g, node_budget=3)) == ["input", "q0", "q1"]


def test_the_default_budget_is_60_nodes():
    # input -> G[59 nodes] -> output: 61 nodes opened, 3 closed
    nodes = [n("input", [], kind="input"), *[n(f"g{i}", ["G"]) for i in range(59)], n("output", [], kind="output")]
    edges = [(a.id, b.id) for a, b in zip(nodes, nodes[1:])]
    g = ExecutedGraph(nodes=nodes, edges=edges, groups={"G": GroupInfo(key="G", token="g1", path="G", type="Stage")})
    assert ids(collapse(g)) == ["input", "G", "output"]
    assert len(collapse(g, node_budget=61).nodes) == 61
    del g.nodes[1]  # 60 nodes: the whole graph fits the default
    g.edges = [(a.id, b.id) for a, b in zip(g.nodes, g.nodes[1:])]
    assert len(collapse(g).nodes) == 60
