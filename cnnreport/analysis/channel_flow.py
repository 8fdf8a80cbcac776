"""Where a layer's channel comes from: the channel flow through the executed graph.

Per-channel layers (BatchNorm, activations, dropout, pooling) map each channel to the same
channel, and concatenation only moves a channel to another index. So a channel of a ReLU in a
DenseNet unit *is* a channel some earlier convolution computed, concatenated into every later
unit's input: when it is negative everywhere, each unit's ReLU zeroes it again, and counted at
each, one dying channel reads as a hundred findings. Tracing each channel back to its origin
(the layer that computed it) lets the dead-channel check report it once, where it first dies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from ..capture.executed_graph import ExecutedGraph, GraphNode

#: Layers that map each channel to the same channel on its own: a constant channel stays
#: constant. Padding with zeros and normalisation over channels (LayerNorm, GroupNorm) mix a
#: channel with something else and are not here.
CHANNELWISE_MODULES = frozenset(
    {
        "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
        "FrozenBatchNorm2d",
        "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh",
        "Hardtanh", "Hardswish", "Hardsigmoid", "Softplus", "Softsign", "Tanhshrink", "Threshold", "LogSigmoid",
        "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout", "Identity",
        "MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
        "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "Upsample", "UpsamplingNearest2d",
        "UpsamplingBilinear2d", "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d",
        "ReplicationPad2d", "ReplicationPad3d",
    }
)
CHANNELWISE_OPS = frozenset(
    {
        "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu", "silu", "mish",
        "sigmoid", "sigmoid_", "tanh", "tanh_", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "softplus",
        "dropout", "dropout2d", "feature_dropout", "batch_norm", "instance_norm", "max_pool1d", "max_pool2d",
        "max_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
        "adaptive_max_pool2d", "adaptive_max_pool3d", "interpolate", "upsample", "clone", "contiguous", "detach",
        "clamp", "clamp_", "clip",
    }
)

Key = tuple[str, int]  # (module path, call index) of a recorded layer call


@dataclass(frozen=True)
class _Run:
    """Channels ``start .. start+length-1`` of a node are channels ``origin_start ..`` of ``origin``."""

    start: int
    length: int
    origin: str
    origin_start: int


def repeated_dead_channels(graph: ExecutedGraph | None, dead: Mapping[Key, set[int]], order: Iterable[Key]) -> dict[Key, set[int]]:
    """For each layer call of ``dead`` (its constant channels), those whose origin channel was
    already found constant at an earlier layer of ``order`` (the execution order): the same
    channel carried on, or zeroed again after a concatenation. Those are the earlier layer's
    finding. Where the graph cannot tell (no graph, a concatenation of one tensor with itself,
    inputs not traced), a layer's channels count as its own.
    """
    if graph is None:
        return {}
    origins = _channel_origins(graph)
    node_of = {(n.name, n.call_index): n.id for n in graph.nodes if n.kind == "module"}
    claimed: set[tuple[str, int]] = set()
    repeated: dict[Key, set[int]] = {}
    for key in order:
        channels = dead.get(key)
        node_id = node_of.get(key)
        if not channels or node_id is None or node_id not in origins:
            continue
        runs = origins[node_id]
        mine = {c: _origin_of(runs, c) for c in channels}
        repeated[key] = {c for c, origin in mine.items() if origin is not None and origin in claimed}
        claimed.update(origin for origin in mine.values() if origin is not None)
    return repeated


def _channel_origins(graph: ExecutedGraph) -> dict[str, list[_Run]]:
    """Every node's channels (dimension 1 of its first output) as runs of origin channels."""
    inputs: dict[str, list[str]] = {}
    for source, target in graph.edges:
        inputs.setdefault(target, []).append(source)
    origins: dict[str, list[_Run]] = {}
    for node in graph.nodes:
        width = _channels(node)
        if width is None:
            continue
        sources = inputs.get(node.id, [])
        if _channelwise(node) and len(sources) == 1 and sources[0] in origins and _width(origins[sources[0]]) == width:
            origins[node.id] = origins[sources[0]]
            continue
        if node.kind == "op" and node.name in ("cat", "concat", "concatenate"):
            joined = _concatenated(node, sources, origins)
            if joined is not None:
                origins[node.id] = joined
                continue
        origins[node.id] = [_Run(0, width, node.id, 0)]  # this node computes its channels
    return origins


def _origin_of(runs: list[_Run], channel: int) -> tuple[str, int] | None:
    for run in runs:
        if run.start <= channel < run.start + run.length:
            return run.origin, run.origin_start + channel - run.start
    return None


def _channels(node: GraphNode) -> int | None:
    shape = node.output_shapes[0] if node.output_shapes else []
    return int(shape[1]) if len(shape) >= 2 else None


def _width(runs: list[_Run]) -> int:
    return sum(run.length for run in runs)


def _channelwise(node: GraphNode) -> bool:
    if node.kind == "module":
        return node.type in CHANNELWISE_MODULES
    return node.kind == "op" and node.name in CHANNELWISE_OPS


def _concatenated(node: GraphNode, sources: list[str], origins: Mapping[str, list[_Run]]) -> list[_Run] | None:
    """The runs of a concatenation along dimension 1, or None when it is along another dimension
    or its inputs cannot be matched one to one with traced producers."""
    shapes = node.input_shapes
    out = node.output_shapes[0] if node.output_shapes else []
    if len(sources) != len(shapes) or len(out) < 2 or not all(len(s) == len(out) for s in shapes):
        return None
    if sum(s[1] for s in shapes) != out[1] or any(s[:1] + s[2:] != out[:1] + out[2:] for s in shapes):
        return None  # not along the channels
    joined: list[_Run] = []
    offset = 0
    for source, shape in zip(sources, shapes):
        runs = origins.get(source)
        if runs is None or _width(runs) != shape[1]:
            return None
        joined += [_Run(offset + run.start, run.length, run.origin, run.origin_start) for run in runs]
        offset += shape[1]
    return joined


__all__ = ["CHANNELWISE_MODULES", "CHANNELWISE_OPS", "repeated_dead_channels"]
