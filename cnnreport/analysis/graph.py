"""The executed graph of one forward pass, analysed: node categories, receptive fields, and the
folded view that fits a page (module calls collapsed into groups).

Pure Python by design (no torch): :mod:`cnnreport.capture.tracing` records the graph during the
capture stage's forward pass, and everything here works on the plain
:class:`~cnnreport.capture.executed_graph.ExecutedGraph` it returns. The drawing is
:mod:`cnnreport.analysis.layout` (where nodes go) and :mod:`cnnreport.figures.graph_svg` (the SVG).
"""

from __future__ import annotations

from fractions import Fraction

from ..capture.executed_graph import ExecutedGraph, GraphNode

__all__ = ["node_category", "receptive_fields", "collapse", "fold"]


# --------------------------------------------------------------------------------------------
# Data


# --------------------------------------------------------------------------------------------
# Categories (colours)

_ACTIVATIONS = {
    "relu", "relu6", "leakyrelu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu",
    "swish", "hswish", "hardswish", "hsigmoid", "hardsigmoid", "sigmoid", "tanh", "hardtanh",
    "softmax", "logsoftmax", "softmax2d", "mish", "softplus", "softsign", "tanhshrink",
    "threshold", "glu", "logsigmoid", "softmin", "relu_", "sigmoid_", "tanh_", "hardswish_",
}  # fmt: skip
_MERGE = {"add", "add_", "cat", "concat", "concatenate", "stack", "mul", "mul_", "sub", "sub_",
          "div", "div_", "sum", "hstack", "vstack", "maximum", "minimum", "addcmul", "where"}
_SHAPE = {"view", "reshape", "flatten", "unflatten", "permute", "transpose", "getitem", "setitem",
          "squeeze", "unsqueeze", "chunk", "split", "unbind", "expand", "repeat", "narrow",
          "select", "index_select", "t", "T", "mT", "movedim", "contiguous", "pixelshuffle",
          "pixel_shuffle", "pixelunshuffle", "channelshuffle", "unfold", "fold", "tile",
          "identity", "view_as", "reshape_as", "expand_as", "flip", "roll", "pad"}


def node_category(node: GraphNode) -> str:
    """The colour class of a node: conv, pool, norm, act, linear, merge, shape, drop, io,
    group, script or other."""
    if node.kind in ("input", "output"):
        return "io"
    if node.kind == "group":
        return "group"
    t = node.type.split(".")[-1]
    low = t.lower()
    name = node.name.lower() if node.kind == "op" else ""
    key = name or low
    if "conv" in key:
        return "conv"
    if "pool" in key:
        return "pool"
    if "norm" in key:
        return "norm"
    if "dropout" in key or "droppath" in key or "stochasticdepth" in key:
        return "drop"
    if key in _ACTIVATIONS or key.endswith("lu") or "swish" in key or "sigmoid" in key:
        return "act"
    if key in ("linear", "bilinear", "matmul", "mm", "bmm", "embedding", "einsum", "addmm",
               "lazylinear", "multiheadattention"):
        return "linear"
    if key in _MERGE:
        return "merge"
    if key in _SHAPE or "upsample" in key or "interpolate" in key or "shuffle" in key:
        return "shape"
    if key in ("mean", "amax", "max", "adaptive_avg_pool2d"):
        return "pool"
    return "other"


# --------------------------------------------------------------------------------------------
# Receptive fields


def _spatial(shapes: list[list[int]]) -> int | None:
    """Spatial size along axis 0 (dimension 2 of N, C, H, W ...), when there is one."""
    if shapes and len(shapes[0]) >= 3:
        return shapes[0][2]
    return None


def _plain_number(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def receptive_fields(graph: ExecutedGraph) -> dict[str, tuple[int | float, int | float]]:
    """Receptive field size and effective stride (jump) of every convolution and pooling node.

    Keys are node ids, so a module's first call is keyed by its module path and a later call by
    ``"path (call k)"``; a functional ``F.conv2d``/``F.max_pool2d`` by its op id. Values are
    ``(receptive field in input pixels, effective stride in input pixels)``, measured along
    spatial axis 0 (height): kernels are assumed square, so for a ``(3, 5)`` kernel the 3
    counts. Standard recurrence from the input (``r = 1, j = 1``): ``r += (k - 1) * d * j`` then
    ``j *= s``. Where branches meet (``add``, ``cat``) the maximum over the incoming paths is
    taken. Adaptive pooling uses ``k = ceil(in / out)``, ``s = floor(in / out)``; resampling
    (``interpolate``, ``Upsample``, any node whose spatial size changes without a kernel) scales
    the jump by ``in / out``; a transposed convolution divides the jump by its stride. A number
    that is not whole (only after upsampling beyond the input resolution) is returned as float.
    """
    preds: dict[str, list[str]] = {}
    for s, t in graph.edges:
        preds.setdefault(t, []).append(s)
    state: dict[str, tuple[Fraction, Fraction]] = {}
    result: dict[str, tuple[int | float, int | float]] = {}
    for node in graph.nodes:
        if node.kind == "input":
            state[node.id] = (Fraction(1), Fraction(1))
            continue
        incoming = [state[p] for p in preds.get(node.id, ()) if p in state]
        if not incoming:
            continue
        r = max(x[0] for x in incoming)
        j = max(x[1] for x in incoming)
        attrs = node.attrs or {}
        in_size = _spatial(node.input_shapes)
        out_size = _spatial(node.output_shapes)
        is_kernel = False
        if "kernel" in attrs:
            k, s = int(attrs["kernel"]), int(attrs.get("stride", 1) or 1)
            d = int(attrs.get("dilation", 1) or 1)
            if attrs.get("transposed"):
                j = j / s
                r = r + (k - 1) * d * j
            else:
                r = r + (k - 1) * d * j
                j = j * s
            is_kernel = True
        elif attrs.get("adaptive"):
            if in_size and out_size:
                k = -(-in_size // out_size)
                s = max(1, in_size // out_size)
                r = r + (k - 1) * j
                j = j * s
            is_kernel = True
        elif (
            in_size
            and out_size
            and in_size != out_size
            and len(node.input_shapes[0]) == len(node.output_shapes[0])
        ):
            j = j * Fraction(in_size, out_size)  # resampling without a kernel
        state[node.id] = (r, j)
        if is_kernel:
            result[node.id] = (_plain_number(r), _plain_number(j))
    return result


# --------------------------------------------------------------------------------------------
# Collapsing


def _visible(node: GraphNode, expanded: set[str]) -> str:
    for key in node.scope:
        if key not in expanded:
            return key
    return node.id


def _count_visible(graph: ExecutedGraph, expanded: set[str]) -> int:
    return len({_visible(n, expanded) for n in graph.nodes})


def collapse(graph: ExecutedGraph, node_budget: int = 60) -> ExecutedGraph:
    """A view of ``graph`` with at most about ``node_budget`` nodes, grouping by module calls.

    Starting from every top-level module call shown as one node, it repeatedly expands *all*
    visible groups of one module type at once (the type whose expansion adds the fewest nodes,
    as long as the total stays within the budget), so repeated blocks such as ResNet
    bottlenecks end up at the same level of detail: one node each. The choice follows the
    model's structure rather than a fixed depth. A group that would hold a single node shows
    that node itself. Edges between groups are kept (one per pair), edges inside a group
    disappear; a skip connection between different groups stays visible. When the whole graph
    fits the budget it is returned with all groups expanded (as an equal copy).
    """
    return fold(graph, _expanded_for_budget(graph, node_budget))


def _expanded_for_budget(graph: ExecutedGraph, node_budget: int) -> set[str]:
    """The groups :func:`collapse` opens to fit ``node_budget`` (see there)."""
    groups = graph.groups
    expanded: set[str] = set()
    while True:
        visible_groups: dict[str, list[str]] = {}
        for key in sorted({_visible(n, expanded) for n in graph.nodes}):
            if key in groups and key not in expanded:
                visible_groups.setdefault(groups[key].type, []).append(key)
        if not visible_groups:
            break
        best: tuple[int, str] | None = None
        for type_name, keys in visible_groups.items():
            count = _count_visible(graph, expanded | set(keys))
            if count <= node_budget and (best is None or (count, type_name) < best):
                best = (count, type_name)
        if best is None:
            # Groups that hold a single node are free to open even over the budget.
            singles = [
                k
                for keys in visible_groups.values()
                for k in keys
                if sum(1 for n in graph.nodes if _visible(n, expanded) == k) == 1
            ]
            if not singles:
                break
            expanded |= set(singles)
            continue
        expanded |= set(visible_groups[best[1]])
    return expanded


def fold(graph: ExecutedGraph, expanded: set[str]) -> ExecutedGraph:
    """``graph`` with every group not in ``expanded`` drawn as one node."""
    groups = graph.groups
    mapping = {n.id: _visible(n, expanded) for n in graph.nodes}
    members: dict[str, list[GraphNode]] = {}
    for n in graph.nodes:
        members.setdefault(mapping[n.id], []).append(n)
    # A group standing for one node shows the node itself.
    for key, ms in members.items():
        if key in groups and len(ms) == 1:
            mapping[ms[0].id] = ms[0].id
    nodes: list[GraphNode] = []
    seen: set[str] = set()
    for n in graph.nodes:
        vid = mapping[n.id]
        if vid in seen:
            continue
        seen.add(vid)
        if vid == n.id:
            nodes.append(n)
            continue
        info = groups[vid]
        depth = n.scope.index(vid)
        inner = members[vid]
        nodes.append(
            GraphNode(
                id=vid,
                kind="group",
                name=info.path,
                type=info.type,
                call_index=info.call_index,
                output_shapes=[list(s) for s in info.output_shapes]
                or [list(s) for s in inner[-1].output_shapes],
                params=info.params,
                group=info.parent,
                row_id=info.row_id,
                section_id=info.section_id,
                scope=list(n.scope[:depth]),
                input_shapes=[list(s) for s in inner[0].input_shapes],
                members=len(inner),
            )
        )
    edges: list[tuple[str, str]] = []
    seen_edges: set[tuple[str, str]] = set()
    for s, t in graph.edges:
        e = (mapping.get(s, s), mapping.get(t, t))
        if e[0] != e[1] and e not in seen_edges:
            seen_edges.add(e)
            edges.append(e)
    return ExecutedGraph(nodes=nodes, edges=edges, groups=dict(groups))
