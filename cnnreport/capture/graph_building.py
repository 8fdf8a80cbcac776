"""Build the :class:`~cnnreport.capture.executed_graph.ExecutedGraph` from a recorded forward pass.

:class:`~cnnreport.capture.tracing.CallRecorder` records call events while the model runs; turning
them into nodes, edges and groups happens afterwards and needs no torch at all, so it lives here:
pure functions over the recorded events, the groups of the non-leaf module calls, and the
containers that were never called themselves. Nothing here mutates what the recorder holds
(``graph()`` may be called twice and must give the same graph).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..datamodel import row_id, section_id
from .executed_graph import ExecutedGraph, GraphNode, GroupInfo

if TYPE_CHECKING:  # the recorder calls these functions: a runtime import would be a cycle
    from .tracing import CallEvent

__all__ = ["UncalledContainer", "build_executed_graph", "container_scopes"]


@dataclass(frozen=True)
class UncalledContainer:
    """A non-leaf module that never ran a ``forward`` of its own (a ``ModuleList`` of blocks).

    ``count_params`` is called only for a container that becomes a group, so the parameters of
    the others are never counted.
    """

    path: str
    type: str
    count_params: Callable[[], int]


def build_executed_graph(
    events: Sequence[CallEvent],
    groups: dict[str, GroupInfo],
    containers: Iterable[UncalledContainer],
    taken_ids: Iterable[str],
    *,
    complete: bool,
) -> ExecutedGraph:
    """The executed graph of the recorded ``events`` (partial when the forward raised).

    After a ``complete`` pass, op nodes whose results reach nothing (``x.mean() > t`` feeding a
    Python ``if``) are left out: they decided the branch, they are not part of the data flow.
    Module calls always stay. After a failed pass nothing is pruned, since the failing call may
    have been about to consume them. ``groups`` are copied, never changed; ``taken_ids`` are
    the ids already in use, which a container's new group key must avoid.
    """
    if complete:
        events = _without_dead_ops(events)
    groups = {k: dataclasses.replace(g) for k, g in groups.items()}
    scopes = container_scopes(events, groups, containers, taken_ids)
    nodes: list[GraphNode] = []
    edges: list[tuple[str, str]] = []
    for ev, scope in zip(events, scopes):
        nodes.append(_graph_node(ev, scope))
        edges.extend((src, ev.id) for src in ev.inputs)
    return ExecutedGraph(nodes=nodes, edges=edges, groups=groups)


def _without_dead_ops(events: Sequence[CallEvent]) -> list[CallEvent]:
    """The events less the op events whose outputs reach no other event."""
    consumers: dict[str, int] = {}
    for ev in events:
        for src in ev.inputs:
            consumers[src] = consumers.get(src, 0) + 1
    dropped: set[str] = set()
    for ev in reversed(events):  # reverse order: a dead chain unravels in one pass
        if ev.kind == "op" and not consumers.get(ev.id):
            dropped.add(ev.id)
            for src in ev.inputs:
                consumers[src] -= 1
    return [ev for ev in events if ev.id not in dropped]


def _graph_node(ev: CallEvent, scope: tuple[str, ...]) -> GraphNode:
    """The node of one event, with its page anchors and the group keys it runs inside."""
    if ev.kind == "module":
        rid, sid = row_id(ev.path) if ev.path else "", section_id(ev.path, ev.call_index)
        if not ev.path:
            sid = ""
    elif ev.kind == "op":
        rid, sid = (row_id(ev.path) if ev.path else ""), ""
    else:
        rid, sid = "", ""
    return GraphNode(
        id=ev.id,
        kind=ev.kind,
        name=ev.name,
        type=ev.type,
        call_index=ev.call_index,
        output_shapes=[list(s) for s in ev.output_shapes],
        params=ev.params,
        group=scope[-1] if scope else "",
        row_id=rid,
        section_id=sid,
        scope=list(scope),
        input_shapes=[list(s) for s in ev.input_shapes],
        attrs=dict(ev.attrs),
    )


def container_scopes(
    events: Sequence[CallEvent],
    groups: dict[str, GroupInfo],
    containers: Iterable[UncalledContainer],
    taken_ids: Iterable[str],
) -> list[tuple[str, ...]]:
    """Scopes with containers that have no ``forward`` of their own added as groups.

    A ``ModuleList`` of blocks run by a loop in the parent's ``forward`` (DenseNet's dense
    blocks, most U-Nets) never appears on the call stack, so without this the collapsed
    view could not fold it. Such a container becomes a group when its members ran in one
    contiguous stretch of the pass; ops of the parent's ``forward`` inside that stretch
    (the ``cat`` after each dense layer) join it. Containers whose calls interleave with
    other modules' stay ungrouped. Outer containers go first; the groups they add go into
    ``groups`` (the caller's copy).
    """
    scopes = [tuple(ev.scope) for ev in events]
    taken = set(taken_ids) | set(groups)
    for container in sorted(containers, key=lambda c: (c.path.count("."), c.path)):
        found = _container_stretch(container.path + ".", events, scopes, groups)
        if found is not None:
            parent, stretch = found
            _add_container_group(container, parent, stretch, events, scopes, groups, taken)
    return scopes


def _container_stretch(
    prefix: str,
    events: Sequence[CallEvent],
    scopes: list[tuple[str, ...]],
    groups: dict[str, GroupInfo],
) -> tuple[tuple[str, ...], range] | None:
    """The scope a container's members ran under and the stretch of events they span, or
    None when the container cannot be a group (fewer than two members, members under
    different scopes, or another module's call in between)."""
    key_paths = {k: g.path for k, g in groups.items()}

    def belongs(i: int) -> bool:
        if events[i].kind == "module" and events[i].path.startswith(prefix):
            return True
        return any(key_paths.get(k, "").startswith(prefix) for k in scopes[i])

    inside = [i for i in range(len(events)) if belongs(i)]
    if len(inside) < 2:
        return None
    # The scope the container's members run under: the part of their chain before
    # the first key inside the container.
    parents = set()
    for i in inside:
        chain = scopes[i]
        cut = next(
            (n for n, k in enumerate(chain) if key_paths.get(k, "").startswith(prefix)),
            len(chain),
        )
        parents.add(chain[:cut])
    if len(parents) != 1:
        return None
    parent = parents.pop()
    first, last = inside[0], inside[-1]
    members = set(inside)
    stretch = range(first, last + 1)
    if any(i not in members and not (events[i].kind == "op" and scopes[i] == parent)
           for i in stretch):
        return None  # another module ran in between: not a contiguous block
    return parent, stretch


def _add_container_group(
    container: UncalledContainer,
    parent: tuple[str, ...],
    stretch: range,
    events: Sequence[CallEvent],
    scopes: list[tuple[str, ...]],
    groups: dict[str, GroupInfo],
    taken: set[str],
) -> None:
    """Make ``container`` a group: a new key in ``groups``, inserted into the scopes of the
    ``stretch`` of events under ``parent``, and the parent of the groups directly inside it."""
    path = container.path
    prefix = path + "."
    key, n = path, 1
    while key in taken:  # local: calling graph() twice must give the same keys
        n += 1
        key = f"{path}#{n}"
    taken.add(key)
    groups[key] = GroupInfo(
        key=key,
        token=f"g{len(groups) + 1}",
        path=path,
        type=container.type,
        call_index=1,
        params=container.count_params(),
        parent=parent[-1] if parent else "",
        row_id=row_id(path),
        section_id=section_id(path, 1),
        output_shapes=[list(s) for s in events[stretch[-1]].output_shapes],
    )
    for i in stretch:
        chain = scopes[i]
        scopes[i] = chain[: len(parent)] + (key,) + chain[len(parent) :]
    # Groups directly inside the container now have it as their parent.
    for g in groups.values():
        if g.key != key and g.parent == (parent[-1] if parent else "") and (
            g.path.startswith(prefix)
        ):
            g.parent = key
