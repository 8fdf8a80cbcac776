"""A layered (Sugiyama) layout of the executed graph, written here (no Graphviz).

1. **layering** by longest path from the inputs, with dummy vertices on edges that span several
   layers, so every edge segment joins adjacent layers;
2. **crossing reduction** by barycenter sweeps down and up (the best order seen is kept) and a
   local transposition pass;
3. **horizontal placement** in the spirit of Brandes–Köpf: vertices are first *aligned* into
   vertical blocks (long-edge interiors first, then each vertex with a median neighbour, never
   two alignments crossing), then x coordinates come from sweeps in which every layer is placed
   by weighted isotonic regression under minimum-separation constraints, aligned vertices
   weighing most. Chains and long edges come out straight; branches spread around their source.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
from dataclasses import dataclass, field

from ..capture.executed_graph import ExecutedGraph, GraphNode

NODE_HEIGHT = 36.0
LAYER_GAP = 26.0
CHAR_WIDTH = 6.6  # monospace at 11px: labels are sized without a font engine
MIN_WIDTH, MAX_WIDTH = 64.0, 230.0
MAX_CHARS = int((MAX_WIDTH - 16) / CHAR_WIDTH)
GAP_REAL, GAP_DUMMY = 18.0, 12.0
MARGIN = 12.0


FULL_PATH_CHARS = 20


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
    order, rank, fwd, fsucc, fpred = _forward_edges(graph, ids, nodes)
    # 1. Layering.
    level = _levels(order, fsucc, fpred, nodes)
    depth = max(level.values(), default=-1) + 1
    # 2. Dummy vertices on long edges.
    routes, vpred, vsucc, dummies, layers = _split_long_edges(ids, fwd, level, rank, depth)
    # 3. Crossing reduction.
    layers, pos = _reduce_crossings(layers, vpred, vsucc, depth, max_sweeps)
    # 4. Sizes.
    lines, size = _sizes(ids, nodes, dummies)
    # 5. Horizontal placement.
    xs = _place(layers, pos, vpred, vsucc, size, dummies)
    return _positioned(graph, layers, xs, size, routes, lines, dummies, depth)


def _forward_edges(graph: ExecutedGraph, ids: list[str], nodes: dict[str, GraphNode]):
    """The graph's distinct edges between known nodes (self-loops dropped), a topological
    order with each vertex's rank in it, and the edges oriented forward in that order with
    their successor and predecessor lists: ``(order, rank, fwd, fsucc, fpred)``."""
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
    return order, rank, fwd, fsucc, fpred


def _levels(order, fsucc, fpred, nodes) -> dict[str, int]:
    """Layering: longest path from the sources, then sources that are not graph inputs
    (a constant fed into one layer) move down next to their first consumer."""
    level: dict[str, int] = {}
    for v in order:
        level[v] = max((level[u] + 1 for u in fpred[v]), default=0)
    for v in reversed(order):
        if not fpred[v] and fsucc[v] and nodes[v].kind != "input":
            level[v] = min(level[w] for w in fsucc[v]) - 1
    return level


def _split_long_edges(ids, fwd, level, rank, depth):
    """Dummy vertices on every edge spanning several layers, so each segment joins adjacent
    layers: ``(routes, vpred, vsucc, dummies, layers)``, the layers in their first order
    (recorded order, a dummy just after its edge's source)."""
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
    return routes, vpred, vsucc, dummies, layers


class _LayerOrder:
    """The vertex order of every layer and each vertex's index in its layer (``pos``), as
    the barycenter sweeps change them."""

    def __init__(self, layers: list[list[str]], vsucc: dict[str, list[str]], depth: int) -> None:
        self.layers = layers
        self.vsucc = vsucc
        self.depth = depth
        self.pos: dict[str, int] = {}
        for layer in layers:
            self.reindex(layer)

    def reindex(self, layer: list[str]) -> None:
        pos = self.pos
        for i, v in enumerate(layer):
            pos[v] = i

    def sweep_layer(self, li: int, nbrs: dict[str, list[str]]) -> None:
        """Reorder layer ``li`` by the mean index of each vertex's neighbours in ``nbrs``."""
        pos = self.pos
        layer = self.layers[li]
        keyed = []
        for i, v in enumerate(layer):
            ns = nbrs[v]
            bary = sum(pos[u] for u in ns) / len(ns) if ns else float(i)
            keyed.append((bary, i, v))
        keyed.sort()
        self.layers[li] = [v for _, _, v in keyed]
        self.reindex(self.layers[li])

    def total_crossings(self) -> int:
        layers, pos, vsucc = self.layers, self.pos, self.vsucc
        total = 0
        for li in range(self.depth - 1):
            segs = [(a, b) for a in layers[li] for b in vsucc[a]]
            lower = {v: pos[v] for v in layers[li + 1]}
            total += _crossings_between({v: pos[v] for v in layers[li]}, lower, segs)
        return total


def _reduce_crossings(layers, vpred, vsucc, depth, max_sweeps):
    """Crossing reduction: barycenter sweeps, the best order seen kept, then a transposition
    pass if crossings remain: ``(layers, pos)``."""
    state = _LayerOrder(layers, vsucc, depth)
    sweep_layer = state.sweep_layer
    for li in range(1, depth):  # first pass: order each layer under its predecessors
        sweep_layer(li, vpred)
    best = state.total_crossings()
    best_layers = [list(layer) for layer in state.layers]
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
        c = state.total_crossings()
        if c < best:
            best, best_layers, stale = c, [list(layer) for layer in state.layers], 0
        else:
            stale += 1
            if stale >= 4:
                break
    layers = best_layers
    for layer in layers:
        state.reindex(layer)
    if best > 0:
        _transpose(layers, state.pos, vpred, vsucc, state.reindex)
    return layers, state.pos


def _sizes(ids, nodes, dummies):
    """Every node's two text lines and box size (width from the longer line); dummies are
    zero-width: ``(lines, size)``."""
    lines: dict[str, tuple[str, str]] = {}
    size: dict[str, tuple[float, float]] = {}
    for v in ids:
        l1, l2 = _node_lines(nodes[v])
        lines[v] = (l1, l2)
        w = min(MAX_WIDTH, max(MIN_WIDTH, math.ceil(max(len(l1), len(l2)) * CHAR_WIDTH) + 16))
        size[v] = (float(w), NODE_HEIGHT)
    for d in dummies:
        size[d] = (0.0, NODE_HEIGHT)
    return lines, size


def _positioned(graph, layers, xs, size, routes, lines, dummies, depth) -> Layout:
    """The layout with the x coordinates shifted to the margin, y from the layer index."""
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
    up, down = _align(layers, pos, vpred, vsucc, dummies)
    seps_of = functools.partial(_separations, size=size, dummies=dummies)
    root, members, left, right = _blocks(layers, up, seps_of)
    # Left-most feasible placement along a topological order of the separation constraints
    # (acyclic because alignments never cross).
    order = _block_order(members, left, right)
    if len(order) < len(members):  # cannot happen with consistent alignments; stay safe
        return _place_per_layer(layers, vpred, vsucc, up, down, size, dummies, seps_of)
    bx: dict[str, float] = {}
    for b in order:
        bx[b] = max((bx[a] + sep for a, sep in left[b].items()), default=0.0)
    _balance_blocks(bx, order, members, root, left, right, vpred, vsucc)
    return {v: bx[root[v]] for v in root}


def _align(layers, pos, vpred, vsucc, dummies) -> tuple[dict[str, str], dict[str, str]]:
    """Vertical alignment: ``(up, down)``, each vertex's aligned upper and lower neighbour.
    Long-edge interiors first, then real-to-real edges by preference, then the ends of long
    edges; an alignment that would cross (or share a vertex with) an earlier one is refused."""
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

    # (a) long-edge interiors: a dummy follows the dummy above it.
    for layer in layers:
        for v in layer:
            if v in dummies and vpred[v] and vpred[v][0] in dummies:
                try_align(vpred[v][0], v)
    # (b) real-to-real edges.
    for _, _, _, u, v in _real_alignment_candidates(layers, pos, vpred, vsucc, dummies):
        try_align(u, v)
    # (c) ends of long edges, where both ends are still free.
    for layer in layers:
        for v in layer:
            for u in vpred[v]:
                if (u in dummies) != (v in dummies):
                    try_align(u, v)
    return up, down


def _medians(ns: list[str], pos: dict[str, int]) -> list[str]:
    if not ns:
        return []
    s = sorted(ns, key=lambda a: pos[a])
    m = len(s)
    return [s[(m - 1) // 2]] if m % 2 else [s[m // 2 - 1], s[m // 2]]


def _preferred(ns: list[str], length: dict[str, int], pos: dict[str, int]) -> str | None:
    """The neighbour on the longest path, ties to the median, then to the left."""
    if not ns:
        return None
    mid = _medians(ns, pos)
    return max(ns, key=lambda a: (length[a], a in mid, -pos[a]))


def _real_alignment_candidates(layers, pos, vpred, vsucc, dummies):
    """Real-to-real edges ``(score, layer, pos, u, v)`` in the order they are tried. Each
    vertex prefers the neighbour on its longest path (counted in real nodes), so the main path
    of a block stays one straight column and the shorter branch (a projection shortcut, a 1x1
    branch) steps aside; ties go to the median. Score 0: both ends prefer each other."""
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

    pref_succ = {
        u: _preferred([w for w in vsucc[u] if w not in dummies], down_len, pos)
        for layer in layers for u in layer if u not in dummies
    }
    cand: list[tuple[int, int, int, str, str]] = []
    for li, layer in enumerate(layers):
        for v in layer:
            if v in dummies:
                continue
            real_preds = [u for u in vpred[v] if u not in dummies]
            pv = _preferred(real_preds, up_len, pos)
            for u in real_preds:
                score = (u != pv) + (v != pref_succ.get(u))
                cand.append((score, li, pos[v], u, v))
    cand.sort(key=lambda c: (c[0], c[1], c[2], pos[c[3]]))
    return cand


def _separations(layer: list[str], size, dummies) -> list[float]:
    """Minimum distance between the centres of neighbours in ``layer``."""
    out = []
    for a, b in zip(layer, layer[1:]):
        gap = GAP_DUMMY if (a in dummies or b in dummies) else GAP_REAL
        out.append((size[a][0] + size[b][0]) / 2 + gap)
    return out


def _blocks(layers, up, seps_of):
    """Blocks: every vertex joins the block of the topmost vertex of its alignment chain, and
    a block gets one x, so aligned chains are exactly straight. ``(root, members, left,
    right)``: each vertex's block, each block's vertices, and the separation each block needs
    from the blocks on its left and on its right (the largest over the layers they share)."""
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
    return root, members, left, right


def _block_order(members, left, right) -> list[str]:
    """A topological order of the blocks under the left-of constraints (shorter than
    ``members`` only if the constraints had a cycle)."""
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
    return order


def _balance_blocks(bx, order, members, root, left, right, vpred, vsucc) -> None:
    """Each block moves to the mean of its outside neighbours, as far as its neighbours in
    every layer allow (Gauss-Seidel on the separation constraints; stays feasible)."""
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
