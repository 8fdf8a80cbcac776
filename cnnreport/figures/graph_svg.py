"""The architecture graph as deterministic inline SVG, and the page's folded and opened views of it.

Colours are CSS classes, so the page's CSS variables restyle it for dark mode and print. The layout
comes from :mod:`cnnreport.analysis.layout`."""

from __future__ import annotations

import html
import re
from typing import Any

from ..analysis.graph import _expanded_for_budget, collapse, fold, node_category, receptive_fields
from ..analysis.layout import NODE_HEIGHT, Layout, _fmt_shape, layout
from ..capture.executed_graph import ExecutedGraph, GraphNode

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
    port_x = _input_ports(lay)
    for i, (s, t, chain) in enumerate(lay.routes):
        _append_edge(out, lay, s, t, chain, port_x.get(i, lay.pos[t][0]))
    out.append("</g>")
    out.append('<g class="g-nodes">')
    for layer in lay.layers:
        for v in layer:
            if v in lay.dummies:
                continue
            _append_node(out, nodes[v], lay, tokens, link_sections, rfs)
    out.append("</g></svg>")
    return "\n".join(out)


def _input_ports(lay: Layout) -> dict[int, float]:
    """The x where each route (by index) lands on its target. Incoming edges of a node with
    several inputs land on separate ports across its top, ordered by where they come from."""
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
    return port_x


def _append_edge(out: list[str], lay: Layout, s: str, t: str, chain: list[str], tx: float) -> None:
    """One edge as a smooth vertical curve through its dummy vertices, landing at ``tx`` on
    the target's top, and its arrowhead."""
    pts: list[tuple[float, float]] = []
    sx, sy = lay.pos[s]
    pts.append((sx, sy + lay.size[s][1] / 2))
    for d in chain[1:-1]:
        dx, dy = lay.pos[d]
        pts.append((dx, dy - NODE_HEIGHT / 2))
        pts.append((dx, dy + NODE_HEIGHT / 2))
    ty = lay.pos[t][1] - lay.size[t][1] / 2
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


def _append_node(
    out: list[str],
    node: GraphNode,
    lay: Layout,
    tokens: dict[str, str],
    link_sections: set[str],
    rfs: dict[str, tuple[Any, Any]],
) -> None:
    """One node: its ``<g>`` with data attributes, link, tooltip, box and text lines."""
    v = node.id
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
