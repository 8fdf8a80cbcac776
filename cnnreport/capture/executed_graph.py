"""The executed graph of one forward pass, as :class:`~cnnreport.capture.tracing.CallRecorder` returns it.

Plain dataclasses, no torch: the analysis (grouping, receptive fields, layout) and the SVG drawing
work on these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
