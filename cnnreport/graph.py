"""The executed graph of one forward pass: grouping, receptive fields, layout and SVG.

Pure Python by design (no torch, no Graphviz): :mod:`cnnreport.tracing` records the graph during
the capture stage's forward pass, and everything here works on the plain
:class:`ExecutedGraph` it returns.

The drawing is a layered (Sugiyama) layout written here:

1. **layering** by longest path from the inputs, with dummy vertices on edges that span several
   layers, so every edge segment joins adjacent layers;
2. **crossing reduction** by barycenter sweeps down and up (the best order seen is kept) and a
   local transposition pass;
3. **horizontal placement** in the spirit of Brandes–Köpf: vertices are first *aligned* into
   vertical blocks (long-edge interiors first, then each vertex with a median neighbour, never
   two alignments crossing), then x coordinates come from sweeps in which every layer is placed
   by weighted isotonic regression under minimum-separation constraints, aligned vertices
   weighing most. Chains and long edges come out straight; branches spread around their source.

:func:`render_svg` turns a layout into deterministic inline SVG whose colours are CSS classes,
so the page's CSS variables restyle it for dark mode and print.
"""

from __future__ import annotations

import bisect
import heapq
import html
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = [
    "GraphNode",
    "GroupInfo",
    "ExecutedGraph",
    "Layout",
    "node_category",
    "receptive_fields",
    "collapse",
    "layout",
    "count_crossings",
    "render_svg",
    "build_graph_views",
]


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class GraphNode:
    """One vertex of the executed graph.

    ``kind`` is ``"module"`` (one call of a leaf module), ``"op"`` (a functional op such as
    ``add`` or ``cat``), ``"input"``, ``"output"``, or ``"group"`` (a collapsed module call, only
    in :func:`collapse`'s result). ``id`` is derived from the module path: the path itself for a
    module's first call, ``"path (call k)"`` for later calls, ``"op:scope/name#k"`` for ops.
    ``group`` is the key of the innermost enclosing non-leaf module call ("" at the top level);
    ``scope`` all enclosing keys, outermost first. ``row_id`` and ``section_id`` are the page
    anchors of the architecture-table row and layer section (see :mod:`cnnreport.report`).
    """

    id: str
    kind: str
    name: str
    type: str
    call_index: int = 1
    output_shapes: list[list[int]] = field(default_factory=list)
    params: int = 0
    group: str = ""
    row_id: str = ""
    section_id: str = ""
    scope: list[str] = field(default_factory=list)
    input_shapes: list[list[int]] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    members: int = 0  # group nodes: how many nodes of the full graph they stand for

    @property
    def label(self) -> str:
        """The node's name as the page shows it: ``block (call 2)`` for a second call."""
        if self.kind == "op":
            return self.name if self.call_index == 1 else f"{self.name} #{self.call_index}"
        return self.name if self.call_index == 1 else f"{self.name} (call {self.call_index})"


@dataclass
class GroupInfo:
    """One call of a non-leaf module: what a collapsed view draws as a single node.

    ``key`` is the module path (``"path (call k)"`` for later calls); ``token`` a short
    deterministic name (``g7``) both SVG views use in their data attributes; ``parent`` the key
    of the enclosing call ("" at the top level).
    """

    key: str
    token: str
    path: str
    type: str
    call_index: int = 1
    params: int = 0
    parent: str = ""
    row_id: str = ""
    section_id: str = ""
    output_shapes: list[list[int]] = field(default_factory=list)


@dataclass
class ExecutedGraph:
    """Nodes in execution order (a topological order) and ``(source id, target id)`` edges."""

    nodes: list[GraphNode]
    edges: list[tuple[str, str]]
    groups: dict[str, GroupInfo] = field(default_factory=dict)

    def node(self, node_id: str) -> GraphNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def in_degree(self, node_id: str) -> int:
        return sum(1 for _, t in self.edges if t == node_id)

    def predecessors(self, node_id: str) -> list[str]:
        return [s for s, t in self.edges if t == node_id]


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


# --------------------------------------------------------------------------------------------
# Layout

NODE_HEIGHT = 36.0
LAYER_GAP = 26.0
CHAR_WIDTH = 6.6  # monospace at 11px: labels are sized without a font engine
MIN_WIDTH, MAX_WIDTH = 64.0, 230.0
MAX_CHARS = int((MAX_WIDTH - 16) / CHAR_WIDTH)
GAP_REAL, GAP_DUMMY = 18.0, 12.0
MARGIN = 12.0


@dataclass
class Layout:
    """Where everything goes: vertex order per layer (dummy vertices included), centres, sizes.

    ``routes`` holds, for every edge drawn, its source, target and the chain of vertices it
    passes (both ends included, dummies in between), so crossings and curves can be derived.
    """

    graph: ExecutedGraph
    layers: list[list[str]]
    pos: dict[str, tuple[float, float]]
    size: dict[str, tuple[float, float]]
    routes: list[tuple[str, str, list[str]]]
    lines: dict[str, tuple[str, str]]
    width: float
    height: float
    dummies: set[str] = field(default_factory=set)


def _fmt_shape(shape: list[int]) -> str:
    return "×".join(str(s) for s in shape) if shape else "scalar"


def _shape_text(shapes: list[list[int]]) -> str:
    if not shapes:
        return ""
    text = ", ".join(_fmt_shape(s) for s in shapes[:3])
    return text + (f" +{len(shapes) - 3}" if len(shapes) > 3 else "")


def _short(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


FULL_PATH_CHARS = 20


def _short_path(path: str) -> str:
    """The module path itself when it is short (``layer1.0.conv1``: a bare ``conv1`` would be
    ambiguous in a ResNet, where every block has one), else the tail that names it:
    ``downsample.0`` for ``layer2.0.downsample.0`` (an index alone says nothing)."""
    if len(path) <= FULL_PATH_CHARS:
        return path
    parts = path.split(".")
    n = 1
    while n < len(parts) and parts[-n].isdigit():
        n += 1
    return ".".join(parts[-n:])


def _node_lines(node: GraphNode) -> tuple[str, str]:
    """The two text lines drawn in a node: ``name · Type`` and the output shape."""
    if node.kind in ("module", "group"):
        short = _short_path(node.name) if node.name else node.type
        if node.call_index > 1:
            short += f" (call {node.call_index})"
        first = short if short == node.type else f"{short} · {node.type}"
    elif node.kind == "op":
        first = node.name if node.call_index == 1 else f"{node.name} #{node.call_index}"
    else:
        first = node.name
    second = _shape_text(node.output_shapes)
    if node.kind == "group":
        second = (second + " · " if second else "") + f"{node.members} nodes"
    return _short(first), _short(second)


def _topo_order(
    ids: list[str], succ: dict[str, list[str]], pred: dict[str, list[str]]
) -> list[str]:
    """Kahn's algorithm, taking the recorded order as the tie-break (it is already topological
    for recorded graphs; this only guards hand-made ones)."""
    index = {v: i for i, v in enumerate(ids)}
    indeg = {v: len(pred[v]) for v in ids}
    ready = [index[v] for v in ids if indeg[v] == 0]
    ready.sort()
    order: list[str] = []
    heapq.heapify(ready)
    while ready:
        v = ids[heapq.heappop(ready)]
        order.append(v)
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                heapq.heappush(ready, index[w])
    if len(order) < len(ids):  # a cycle (never from a recorded pass): keep recorded order
        placed = set(order)
        order += [v for v in ids if v not in placed]
    return order


def _crossings_between(upper_pos: dict[str, int], lower_pos: dict[str, int],
                       segments: list[tuple[str, str]]) -> int:
    """Crossings of the segments between two adjacent layers: inversions, counted with a
    Fenwick tree in O(E log V)."""
    if len(segments) < 2:
        return 0
    pairs = sorted((upper_pos[a], lower_pos[b]) for a, b in segments)
    size = max(lower_pos.values(), default=0) + 2
    tree = [0] * (size + 1)
    total = 0
    seen = 0
    for _, q in pairs:
        # count previously inserted with lower position > q
        i = q + 1
        le = 0
        while i > 0:
            le += tree[i]
            i -= i & -i
        total += seen - le
        i = q + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
        seen += 1
    return total


def _isotonic_place(desired: list[float], weights: list[float], seps: list[float]) -> list[float]:
    """Positions closest (weighted least squares) to ``desired`` keeping the order with at
    least ``seps[i]`` between vertex ``i`` and ``i + 1``: pool-adjacent-violators on the
    separation-shifted targets, exact and linear time."""
    n = len(desired)
    offset = [0.0] * n
    for i in range(1, n):
        offset[i] = offset[i - 1] + seps[i - 1]
    blocks: list[list[float]] = []  # [mean, weight, count]
    for i in range(n):
        blocks.append([desired[i] - offset[i], weights[i], 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks[-1]
            w = w1 + w2
            blocks[-1] = [(m1 * w1 + m2 * w2) / w, w, c1 + c2]
    out: list[float] = []
    for m, _, c in blocks:
        out.extend([m] * int(c))
    return [out[i] + offset[i] for i in range(n)]


def layout(graph: ExecutedGraph, *, max_sweeps: int = 24) -> Layout:
    """A layered top-to-bottom layout of ``graph`` (see the module docstring for the method).

    Deterministic: the same graph always gives the same coordinates.
    """
    ids = [n.id for n in graph.nodes]
    nodes = {n.id: n for n in graph.nodes}
    succ: dict[str, list[str]] = {v: [] for v in ids}
    pred: dict[str, list[str]] = {v: [] for v in ids}
    edges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for s, t in graph.edges:
        if s in nodes and t in nodes and s != t and (s, t) not in seen:
            seen.add((s, t))
            edges.append((s, t))
            succ[s].append(t)
            pred[t].append(s)
    order = _topo_order(ids, succ, pred)
    rank = {v: i for i, v in enumerate(order)}
    # Orient every edge forward in the topological order (only matters for cyclic input).
    fwd = [(s, t) if rank[s] < rank[t] else (t, s) for s, t in edges]
    fsucc: dict[str, list[str]] = {v: [] for v in ids}
    fpred: dict[str, list[str]] = {v: [] for v in ids}
    for s, t in fwd:
        fsucc[s].append(t)
        fpred[t].append(s)

    # 1. Layering: longest path from the sources, then sources that are not graph inputs
    #    (a constant fed into one layer) move down next to their first consumer.
    level: dict[str, int] = {}
    for v in order:
        level[v] = max((level[u] + 1 for u in fpred[v]), default=0)
    for v in reversed(order):
        if not fpred[v] and fsucc[v] and nodes[v].kind != "input":
            level[v] = min(level[w] for w in fsucc[v]) - 1
    depth = max(level.values(), default=-1) + 1

    # 2. Dummy vertices on long edges.
    routes: list[tuple[str, str, list[str]]] = []
    vpred: dict[str, list[str]] = {v: [] for v in ids}
    vsucc: dict[str, list[str]] = {v: [] for v in ids}
    dummies: set[str] = set()
    vlevel = dict(level)
    key: dict[str, tuple[float, ...]] = {v: (rank[v],) for v in ids}
    for e_index, (s, t) in enumerate(fwd):
        chain = [s]
        for lv in range(level[s] + 1, level[t]):
            d = f"\x00{e_index}:{lv}"
            dummies.add(d)
            vlevel[d] = lv
            vpred[d], vsucc[d] = [], []
            key[d] = (rank[s] + 0.5, rank[t])
            chain.append(d)
        chain.append(t)
        for a, b in zip(chain, chain[1:]):
            vsucc[a].append(b)
            vpred[b].append(a)
        routes.append((s, t, chain))

    layers: list[list[str]] = [[] for _ in range(depth)]
    for v in sorted(vlevel, key=lambda v: key[v]):
        layers[vlevel[v]].append(v)

    # 3. Crossing reduction: barycenter sweeps, best order kept.
    pos: dict[str, int] = {}

    def reindex(layer: list[str]) -> None:
        for i, v in enumerate(layer):
            pos[v] = i

    for layer in layers:
        reindex(layer)

    def sweep_layer(li: int, nbrs: dict[str, list[str]]) -> None:
        layer = layers[li]
        keyed = []
        for i, v in enumerate(layer):
            ns = nbrs[v]
            bary = sum(pos[u] for u in ns) / len(ns) if ns else float(i)
            keyed.append((bary, i, v))
        keyed.sort()
        layers[li] = [v for _, _, v in keyed]
        reindex(layers[li])

    def total_crossings() -> int:
        total = 0
        for li in range(depth - 1):
            segs = [(a, b) for a in layers[li] for b in vsucc[a]]
            lower = {v: pos[v] for v in layers[li + 1]}
            total += _crossings_between({v: pos[v] for v in layers[li]}, lower, segs)
        return total

    for li in range(1, depth):  # first pass: order each layer under its predecessors
        sweep_layer(li, vpred)
    best = total_crossings()
    best_layers = [list(layer) for layer in layers]
    stale = 0
    for it in range(max_sweeps):
        if best == 0:
            break
        if it % 2 == 0:
            for li in range(depth - 2, -1, -1):
                sweep_layer(li, vsucc)
        else:
            for li in range(1, depth):
                sweep_layer(li, vpred)
        c = total_crossings()
        if c < best:
            best, best_layers, stale = c, [list(layer) for layer in layers], 0
        else:
            stale += 1
            if stale >= 4:
                break
    layers = best_layers
    for layer in layers:
        reindex(layer)
    if best > 0:
        _transpose(layers, pos, vpred, vsucc, reindex)

    # 4. Sizes.
    lines: dict[str, tuple[str, str]] = {}
    size: dict[str, tuple[float, float]] = {}
    for v in ids:
        l1, l2 = _node_lines(nodes[v])
        lines[v] = (l1, l2)
        w = min(MAX_WIDTH, max(MIN_WIDTH, math.ceil(max(len(l1), len(l2)) * CHAR_WIDTH) + 16))
        size[v] = (float(w), NODE_HEIGHT)
    for d in dummies:
        size[d] = (0.0, NODE_HEIGHT)

    # 5. Horizontal placement.
    xs = _place(layers, pos, vpred, vsucc, size, dummies)
    min_x = min((xs[v] - size[v][0] / 2 for v in xs), default=0.0)
    max_x = max((xs[v] + size[v][0] / 2 for v in xs), default=0.0)
    shift = MARGIN - min_x
    centres: dict[str, tuple[float, float]] = {}
    pitch = NODE_HEIGHT + LAYER_GAP
    for li, layer in enumerate(layers):
        y = MARGIN + li * pitch + NODE_HEIGHT / 2
        for v in layer:
            centres[v] = (xs[v] + shift, y)
    width = max_x - min_x + 2 * MARGIN if xs else 2 * MARGIN
    height = depth * pitch - LAYER_GAP + 2 * MARGIN if depth else 2 * MARGIN
    return Layout(
        graph=graph,
        layers=layers,
        pos=centres,
        size=size,
        routes=routes,
        lines=lines,
        width=width,
        height=height,
        dummies=dummies,
    )


def _transpose(layers, pos, vpred, vsucc, reindex, max_passes: int = 4) -> None:
    """Swap neighbours in a layer while that lowers the crossings with both adjacent layers."""

    def pair_costs(u: str, v: str) -> tuple[int, int]:
        # (crossings among u's and v's edges with u left of v, the same with v left of u)
        keep = swap = 0
        for nbrs in (vpred, vsucc):
            nu, nv = nbrs[u], nbrs[v]
            if not nu or not nv:
                continue
            pu = sorted(pos[a] for a in nu)
            pv = sorted(pos[b] for b in nv)
            if pu[-1] <= pv[0]:  # already apart on this side: swapping can only add
                keep_side = 0
                swap_side = sum(1 for a in pu for b in pv if a < b)
            else:
                keep_side = sum(len(pu) - bisect.bisect_right(pu, b) for b in pv)
                swap_side = sum(len(pv) - bisect.bisect_right(pv, a) for a in pu)
            keep += keep_side
            swap += swap_side
        return keep, swap

    for _ in range(max_passes):
        improved = False
        for layer in layers:
            for i in range(len(layer) - 1):
                u, v = layer[i], layer[i + 1]
                keep, swap = pair_costs(u, v)
                if swap < keep:
                    layer[i], layer[i + 1] = v, u
                    pos[u], pos[v] = i + 1, i
                    improved = True
        if not improved:
            break


def _place(layers, pos, vpred, vsucc, size, dummies) -> dict[str, float]:
    """x coordinates: vertical alignment into blocks, then weighted isotonic sweeps."""
    up: dict[str, str] = {}  # v -> upper vertex it is aligned with
    down: dict[str, str] = {}
    aligned_pairs: dict[int, list[tuple[int, int]]] = {}
    level = {v: li for li, layer in enumerate(layers) for v in layer}

    def try_align(u: str, v: str) -> bool:
        if u in down or v in up:
            return False
        li = level[u]
        pu, pv = pos[u], pos[v]
        for a, b in aligned_pairs.get(li, ()):
            if (a - pu) * (b - pv) <= 0:  # would cross (or share) an earlier alignment
                return False
        aligned_pairs.setdefault(li, []).append((pu, pv))
        up[v], down[u] = u, v
        return True

    def medians(ns: list[str]) -> list[str]:
        if not ns:
            return []
        s = sorted(ns, key=lambda a: pos[a])
        m = len(s)
        return [s[(m - 1) // 2]] if m % 2 else [s[m // 2 - 1], s[m // 2]]

    # (a) long-edge interiors: a dummy follows the dummy above it.
    for layer in layers:
        for v in layer:
            if v in dummies and vpred[v] and vpred[v][0] in dummies:
                try_align(vpred[v][0], v)
    # (b) real-to-real edges. Each vertex prefers the neighbour on its longest path (counted
    # in real nodes), so the main path of a block stays one straight column and the shorter
    # branch (a projection shortcut, a 1x1 branch) steps aside; ties go to the median.
    down_len: dict[str, int] = {}
    for layer in reversed(layers):
        for v in layer:
            down_len[v] = max(
                (down_len[w] + (w not in dummies) for w in vsucc[v]), default=0
            )
    up_len: dict[str, int] = {}
    for layer in layers:
        for v in layer:
            up_len[v] = max((up_len[u] + (u not in dummies) for u in vpred[v]), default=0)

    def preferred(ns: list[str], length: dict[str, int]) -> str | None:
        if not ns:
            return None
        mid = medians(ns)
        return max(ns, key=lambda a: (length[a], a in mid, -pos[a]))

    pref_succ = {
        u: preferred([w for w in vsucc[u] if w not in dummies], down_len)
        for layer in layers for u in layer if u not in dummies
    }
    cand: list[tuple[int, int, int, str, str]] = []
    for li, layer in enumerate(layers):
        for v in layer:
            if v in dummies:
                continue
            real_preds = [u for u in vpred[v] if u not in dummies]
            pv = preferred(real_preds, up_len)
            for u in real_preds:
                score = (u != pv) + (v != pref_succ.get(u))
                cand.append((score, li, pos[v], u, v))
    cand.sort(key=lambda c: (c[0], c[1], c[2], pos[c[3]]))
    for _, _, _, u, v in cand:
        try_align(u, v)
    # (c) ends of long edges, where both ends are still free.
    for layer in layers:
        for v in layer:
            for u in vpred[v]:
                if (u in dummies) != (v in dummies):
                    try_align(u, v)

    def seps_of(layer: list[str]) -> list[float]:
        out = []
        for a, b in zip(layer, layer[1:]):
            gap = GAP_DUMMY if (a in dummies or b in dummies) else GAP_REAL
            out.append((size[a][0] + size[b][0]) / 2 + gap)
        return out

    # Blocks: every vertex joins the block of the topmost vertex of its alignment chain, and a
    # block gets one x, so aligned chains are exactly straight.
    root: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for layer in layers:
        for v in layer:
            root[v] = root[up[v]] if v in up else v
            members.setdefault(root[v], []).append(v)
    left: dict[str, dict[str, float]] = {b: {} for b in members}
    right: dict[str, dict[str, float]] = {b: {} for b in members}
    for layer in layers:
        for a, b, sep in zip(layer, layer[1:], seps_of(layer)):
            ra, rb = root[a], root[b]
            if sep > right[ra].get(rb, -1.0):
                right[ra][rb] = sep
                left[rb][ra] = sep
    # Left-most feasible placement along a topological order of the separation constraints
    # (acyclic because alignments never cross).
    indeg = {b: len(left[b]) for b in members}
    queue = [b for b in members if indeg[b] == 0]
    order: list[str] = []
    while queue:
        b = queue.pop()
        order.append(b)
        for c in right[b]:
            indeg[c] -= 1
            if indeg[c] == 0:
                queue.append(c)
    if len(order) < len(members):  # cannot happen with consistent alignments; stay safe
        return _place_per_layer(layers, vpred, vsucc, up, down, size, dummies, seps_of)
    bx: dict[str, float] = {}
    for b in order:
        bx[b] = max((bx[a] + sep for a, sep in left[b].items()), default=0.0)
    # Each block moves to the mean of its outside neighbours, as far as its neighbours in
    # every layer allow (Gauss-Seidel on the separation constraints; stays feasible).
    outside: dict[str, list[str]] = {}
    for b, ms in members.items():
        outside[b] = [
            root[u] for v in ms for u in (*vpred[v], *vsucc[v]) if root[u] != b
        ]
    for it in range(40):
        moved = 0.0
        for b in order if it % 2 == 0 else reversed(order):
            nbrs = outside[b]
            if not nbrs:
                continue
            target = sum(bx[c] for c in nbrs) / len(nbrs)
            lo = max((bx[a] + sep for a, sep in left[b].items()), default=-math.inf)
            hi = min((bx[c] - sep for c, sep in right[b].items()), default=math.inf)
            new = min(max(target, lo), hi) if lo <= hi else bx[b]
            moved = max(moved, abs(new - bx[b]))
            bx[b] = new
        if moved < 0.5:  # nothing moves by a visible amount any more
            break
    return {v: bx[root[v]] for v in root}


def _place_per_layer(layers, vpred, vsucc, up, down, size, dummies, seps_of) -> dict[str, float]:
    """Fallback placement: each layer by weighted isotonic regression, in sweeps."""
    x: dict[str, float] = {}
    for layer in layers:
        acc = 0.0
        for i, v in enumerate(layer):
            if i:
                acc += seps_of(layer[i - 1 : i + 1])[0]
            x[v] = acc
    layer_seps = [seps_of(layer) for layer in layers]

    def desired(v: str, direction: str) -> tuple[float, float]:
        partner = up.get(v) if direction == "down" else down.get(v)
        if partner is not None:
            return x[partner], 64.0  # aligned: stay in the block's column
        ns = vpred[v] if direction == "down" else vsucc[v]
        if ns:
            return sum(x[u] for u in ns) / len(ns), (0.5 if v in dummies else 1.0)
        return x[v], 0.25

    for it in range(8):
        down_sweep = it % 2 == 0
        for li in range(len(layers)) if down_sweep else reversed(range(len(layers))):
            layer = layers[li]
            if not layer:
                continue
            d, w = zip(*(desired(v, "down" if down_sweep else "up") for v in layer))
            for v, nx in zip(layer, _isotonic_place(list(d), list(w), layer_seps[li])):
                x[v] = nx
    return x


def count_crossings(lay: Layout) -> int:
    """Edge crossings of a layout, counted between every pair of adjacent layers (segments
    through dummy vertices included; segments sharing an end do not cross)."""
    index = {v: i for layer in lay.layers for i, v in enumerate(layer)}
    level = {v: li for li, layer in enumerate(lay.layers) for v in layer}
    by_layer: dict[int, list[tuple[str, str]]] = {}
    for _, _, chain in lay.routes:
        for a, b in zip(chain, chain[1:]):
            by_layer.setdefault(level[a], []).append((a, b))
    total = 0
    for li, segs in by_layer.items():
        upper = {v: index[v] for v in lay.layers[li]}
        lower = {v: index[v] for v in lay.layers[li + 1]} if li + 1 < len(lay.layers) else {}
        total += _crossings_between(upper, lower, segs)
    return total


# --------------------------------------------------------------------------------------------
# SVG

# Characters XML 1.0 forbids even when escaped; a module name may contain them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _esc(text: Any) -> str:
    """Escape for both SVG text and attribute values, dropping characters XML cannot hold."""
    return html.escape(_XML_INVALID.sub("\ufffd", str(text)), quote=True)


def _n(value: float) -> str:
    """Coordinates with one decimal and no trailing zero: short, and identical run to run.

    Formatting rounds exactly as ``round(value, 1)`` does (both correctly rounded); this
    form is twice as fast, and the graph views call it some 15,000 times a report."""
    text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
        return "0" if text == "-0" else text
    return text


def _tooltip(node: GraphNode, rf: tuple[Any, Any] | None) -> str:
    lines = [node.label if node.kind != "op" else f"{node.name} ({node.type})"]
    if node.kind in ("module", "group"):
        lines.append(node.type)
    if node.kind == "op" and node.group:
        lines.append(f"in {node.group}")
    if node.input_shapes and node.kind != "input":
        lines.append("input: " + "; ".join(_fmt_shape(s) for s in node.input_shapes[:6]))
    if node.output_shapes:
        lines.append("output: " + "; ".join(_fmt_shape(s) for s in node.output_shapes[:6]))
    if node.kind in ("module", "group"):
        lines.append(f"params: {node.params:,}")
    if rf is not None:
        lines.append(f"receptive field: {rf[0]}, effective stride: {rf[1]}")
    if node.kind == "group":
        lines.append(f"{node.members} nodes: click to expand")
    return "\n".join(lines)


def render_svg(
    graph: ExecutedGraph,
    *,
    title: str = "",
    link_sections: set[str] | None = None,
    lay: Layout | None = None,
    fields: dict[str, tuple[Any, Any]] | None = None,
) -> str:
    """Inline SVG markup of ``graph`` (no XML declaration, no namespace URL, no ids).

    Every node is a ``<g class="g-node g-k-CATEGORY">`` holding a link (to its layer section
    when ``section_id`` is in ``link_sections``, else to its architecture-table row), a
    ``<title>`` tooltip (type, shapes, parameters), a box and two text lines (name · type,
    output shape). ``data-scope`` lists the tokens of the groups a node belongs to and a
    collapsed group carries ``data-group`` with its own token, so the page's script can expand
    it. Colours come from CSS classes only. All text is escaped; the bytes are deterministic.

    ``fields``: :func:`receptive_fields` of the *whole* graph, for a folded view of it. A
    folded graph's own recurrence skips the convolutions inside its collapsed blocks, so the
    layers after them would show too small a receptive field.
    """
    lay = lay or layout(graph)
    link_sections = link_sections or set()
    nodes = {n.id: n for n in graph.nodes}
    tokens = {k: g.token for k, g in graph.groups.items()}
    rfs = receptive_fields(graph) if fields is None else fields
    w, h = _n(lay.width), _n(lay.height)
    out: list[str] = [
        f'<svg class="g-svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{_esc(title or "model graph")}" font-family="monospace" font-size="11">',
        f"<title>{_esc(title or 'model graph')}</title>",
        '<g class="g-edges">',
    ]
    # Edges: smooth vertical curves through the dummy vertices; incoming edges of a node with
    # several inputs land on separate ports across its top, ordered by where they come from.
    in_routes: dict[str, list[int]] = {}
    for i, (_, t, chain) in enumerate(lay.routes):
        in_routes.setdefault(t, []).append(i)
    port_x: dict[int, float] = {}
    for t, idxs in in_routes.items():
        idxs.sort(key=lambda i: lay.pos[lay.routes[i][2][-2]][0])
        k = len(idxs)
        tx, tw = lay.pos[t][0], lay.size[t][0]
        step = min(12.0, (tw - 12) / max(k, 1)) if k > 1 else 0.0
        # An edge arriving straight from above keeps the centre port, so chains stay straight.
        straight = [
            j for j, i in enumerate(idxs) if abs(lay.pos[lay.routes[i][2][-2]][0] - tx) < 0.5
        ]
        base = straight[0] if straight else (k - 1) / 2
        limit = max(0.0, tw / 2 - 6)
        for j, i in enumerate(idxs):
            port_x[i] = tx + max(-limit, min(limit, (j - base) * step))
    for i, (s, t, chain) in enumerate(lay.routes):
        pts: list[tuple[float, float]] = []
        sx, sy = lay.pos[s]
        pts.append((sx, sy + lay.size[s][1] / 2))
        for d in chain[1:-1]:
            dx, dy = lay.pos[d]
            pts.append((dx, dy - NODE_HEIGHT / 2))
            pts.append((dx, dy + NODE_HEIGHT / 2))
        tx, ty = port_x.get(i, lay.pos[t][0]), lay.pos[t][1] - lay.size[t][1] / 2
        pts.append((tx, ty - 5))
        d_attr = [f"M{_n(pts[0][0])} {_n(pts[0][1])}"]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if x0 == x1:
                d_attr.append(f"L{_n(x1)} {_n(y1)}")
            else:
                my = (y0 + y1) / 2
                d_attr.append(f"C{_n(x0)} {_n(my)} {_n(x1)} {_n(my)} {_n(x1)} {_n(y1)}")
        out.append(f'<path class="g-edge" d="{" ".join(d_attr)}"/>')
        out.append(
            f'<path class="g-arrow" d="M{_n(tx - 3.5)} {_n(ty - 6)}L{_n(tx + 3.5)} {_n(ty - 6)}'
            f'L{_n(tx)} {_n(ty)}Z"/>'
        )
    out.append("</g>")
    out.append('<g class="g-nodes">')
    for layer in lay.layers:
        for v in layer:
            if v in lay.dummies:
                continue
            node = nodes[v]
            cx, cy = lay.pos[v]
            nw, nh = lay.size[v]
            x0, y0 = cx - nw / 2, cy - nh / 2
            cat = node_category(node)
            classes = f"g-node g-k-{cat}" + (" g-group" if node.kind == "group" else "")
            attrs = [f'class="{classes}"', f'data-node="{_esc(node.id)}"']
            scope_tokens = " ".join(tokens[k] for k in node.scope if k in tokens)
            if scope_tokens:
                attrs.append(f'data-scope="{scope_tokens}"')
            if node.kind == "group" and node.id in tokens:
                attrs.append(f'data-group="{tokens[node.id]}"')
            href = ""
            if node.section_id and node.section_id in link_sections:
                href = "#" + node.section_id
            elif node.row_id:
                href = "#" + node.row_id
            l1, l2 = lay.lines[v]
            out.append(f"<g {' '.join(attrs)}>")
            if href:
                out.append(f'<a href="{_esc(href)}">')
            out.append(f"<title>{_esc(_tooltip(node, rfs.get(node.id)))}</title>")
            rx = "10" if node.kind in ("input", "output") else "4"
            out.append(
                f'<rect class="g-box" x="{_n(x0)}" y="{_n(y0)}" width="{_n(nw)}" '
                f'height="{_n(nh)}" rx="{rx}"/>'
            )
            out.append(
                f'<text class="g-l1" x="{_n(cx)}" y="{_n(cy - 3)}" text-anchor="middle">'
                f"{_esc(l1)}</text>"
            )
            if l2:
                out.append(
                    f'<text class="g-l2" x="{_n(cx)}" y="{_n(cy + 11)}" text-anchor="middle">'
                    f"{_esc(l2)}</text>"
                )
            if href:
                out.append("</a>")
            out.append("</g>")
    out.append("</g></svg>")
    return "\n".join(out)


def group_views(
    graph: ExecutedGraph,
    *,
    link_sections: set[str] | None = None,
    node_budget: int = 60,
    max_views: int = 40,
    max_bytes: int = 1_500_000,
) -> dict[str, str]:
    """For each block the collapsed view folds, the collapsed view with that block opened
    (all the way down), keyed by the block's token: the page swaps it in on a click, so a
    block expands in place. Empty when nothing is folded; stops at ``max_views`` views or
    ``max_bytes`` of SVG, and the page falls back to the full view for the rest."""
    base = _expanded_for_budget(graph, node_budget)
    folded = fold(graph, base)
    if len(folded.nodes) == len(graph.nodes):
        return {}
    views: dict[str, str] = {}
    total = 0
    fields = receptive_fields(graph)
    for node in folded.nodes:
        if node.kind != "group" or node.id not in graph.groups or len(views) >= max_views:
            continue
        inside = {key for n in graph.nodes if node.id in n.scope for key in n.scope[n.scope.index(node.id) :]}
        svg = render_svg(
            fold(graph, base | inside),
            title=f"Executed graph, {graph.groups[node.id].path or node.id} opened",
            link_sections=link_sections,
            fields=fields,
        )
        total += len(svg)
        if total > max_bytes:
            break
        views[graph.groups[node.id].token] = svg
    return views


def build_graph_views(
    graph: ExecutedGraph, *, link_sections: set[str] | None = None, node_budget: int = 60
) -> tuple[str, str]:
    """``(collapsed_svg, full_svg)`` for the report: the collapsed view fits ``node_budget``
    (see :func:`collapse`); when the whole graph fits, both strings are equal."""
    fields = receptive_fields(graph)
    full = render_svg(graph, title="Executed graph, all nodes", link_sections=link_sections, fields=fields)
    small = collapse(graph, node_budget=node_budget)
    if len(small.nodes) == len(graph.nodes):
        return full, full
    collapsed = render_svg(
        small, title="Executed graph, repeated blocks collapsed", link_sections=link_sections, fields=fields
    )
    return collapsed, full
