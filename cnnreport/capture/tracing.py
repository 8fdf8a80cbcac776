"""Record what one forward pass actually executed, as call events for the graph.

The capture stage runs the model once inside a :class:`CallRecorder`; the recorder sees

* every **module call**, through forward pre-hooks and forward hooks on each module (global hooks,
  filtered to the model, for ``torch.jit.script`` submodules, which refuse per-module hooks), and
* every **functional op** called from a non-leaf module's ``forward`` (``x + y``, ``torch.cat``,
  ``x.view``, ``x[0]``, ``F.interpolate`` ...), through a
  :class:`torch.overrides.TorchFunctionMode`.

Producer and consumer are linked by tensor identity: each tensor an event outputs is remembered as
"produced by" that event, and an event whose input is a remembered tensor gets an edge from its
producer. The data-dependent branch that ran is the one recorded (that is the point: ``torch.fx``
and ``torch.export`` fail on such a branch, and ``torch.jit.trace`` silently keeps one side).

Nothing here runs the model: :meth:`CallRecorder.graph` hands the recorded events to
:mod:`cnnreport.capture.graph_building`, which builds the
:class:`~cnnreport.capture.executed_graph.ExecutedGraph`, and :meth:`CallRecorder.failure_context` says where a
forward pass that raised broke off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_hooks
from torch.overrides import TorchFunctionMode

from ..datamodel import row_id, section_id
from .executed_graph import ExecutedGraph, GroupInfo
from .graph_building import UncalledContainer, build_executed_graph

__all__ = ["CallEvent", "CallRecorder", "is_passive_hook", "passive_hook", "suspend_recording"]


# --------------------------------------------------------------------------------------------
# Suspension: the capture stage's own statistics must not show up in the graph.

_LOCAL = threading.local()

# Our hooks run inside the recording mode; without this, every `t.shape` or `p.numel()` they
# ask would go through the mode's Python handler (measured: 2-3x the hooks' own cost).
_no_torch_function = getattr(torch._C, "DisableTorchFunction", contextlib.nullcontext)


@contextlib.contextmanager
def suspend_recording() -> Iterator[None]:
    """Run torch code that must not be recorded (the capture hooks' own statistics).

    Cheap by design: torch-function dispatch is switched off for the block, so its ops never
    reach the recording mode's Python handler (the capture hooks make some 18,000 calls on a
    ResNet-50; through the handler they cost 15 ms more). A thread-local counter says the same
    to the recorder's module hooks. Nests, and is harmless with no recorder active. Tensor
    subclasses (MONAI's ``MetaTensor``) act as plain tensors inside: right for statistics.
    """
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        with _no_torch_function():
            yield
    finally:
        _LOCAL.depth -= 1


def passive_hook(function: Any) -> Any:
    """Mark a hook of ours that reads what a module gets and returns but never changes it.

    The capture may take a clamp-like module's output range from its input's only when every
    hook around the module is such a hook: a user's hook could change the output."""
    target = getattr(function, "__func__", function)
    target._cnnreport_passive = True
    return function


def is_passive_hook(function: Any) -> bool:
    return bool(getattr(getattr(function, "__func__", function), "_cnnreport_passive", False))


def _suspended() -> bool:
    return getattr(_LOCAL, "depth", 0) > 0


# --------------------------------------------------------------------------------------------
# Events


@dataclass
class CallEvent:
    """One executed call: a leaf module call, a functional op, a graph input or a graph output.

    ``inputs`` are the ids of the events that produced this call's tensor inputs, in argument
    order and without repeats; ``scope`` the keys of the non-leaf module calls it ran inside,
    outermost first (the key of a module's first call is its path, later calls add
    ``" (call k)"``).
    """

    id: str
    kind: str  # "module" | "op" | "input" | "output"
    name: str
    type: str
    call_index: int = 1
    inputs: list[str] = field(default_factory=list)
    input_shapes: list[list[int]] = field(default_factory=list)
    output_shapes: list[list[int]] = field(default_factory=list)
    params: int = 0
    scope: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # module path (modules) or enclosing module path (ops)


@dataclass
class _ModInfo:
    path: str
    type: str
    leaf: bool
    script: bool
    params: int | None = None  # counted after the first call, so lazy modules are initialised


class _Frame:
    """A module call in progress (on the recorder's stack until its forward hook runs)."""

    __slots__ = ("module", "info", "kind", "key", "call_index", "args", "kwargs")

    def __init__(self, module, info, kind, key="", call_index=1, args=(), kwargs=None):
        self.module = module
        self.info = info
        self.kind = kind  # "leaf" | "scope" | "root" | "skip"
        self.key = key
        self.call_index = call_index
        self.args = args
        self.kwargs = kwargs or {}


# --------------------------------------------------------------------------------------------
# Naming of ops

# Reflected and in-place dunders, so `2 - x` reads "sub" and `x += y` reads "add_".
_BINARY = {
    "add", "sub", "mul", "matmul", "truediv", "floordiv", "div", "mod", "pow",
    "and", "or", "xor", "lshift", "rshift",
}  # fmt: skip
# Property getters that compute a new tensor; every other getter (shape, dtype, grad ...) is
# bookkeeping and never becomes a node.
_TENSOR_PROPERTIES = {"T", "mT", "H", "mH", "real", "imag"}
# Calls that return a tensor but change nothing the graph cares about: the output keeps the
# producer of the input instead of adding a node (they are noise in a CNN's picture).
_PASS_THROUGH = {
    "contiguous", "detach", "detach_", "clone", "to", "type", "float", "double", "half",
    "bfloat16", "cpu", "cuda", "requires_grad_", "data", "type_as", "as_subclass",
    "_make_subclass", "retain_grad", "pin_memory", "coalesce", "__deepcopy__",
}  # fmt: skip
# Calls never recorded at all (they answer questions, or are torch's own plumbing).
_IGNORED = {
    "size", "dim", "numel", "stride", "is_contiguous", "data_ptr", "element_size", "item",
    "tolist", "numpy", "storage_offset", "untyped_storage", "get_device", "__len__",
    "__bool__", "__format__", "__repr__", "__hash__", "__index__", "__int__", "__float__",
    "__reduce_ex__", "__array__", "__iter__", "__contains__", "is_floating_point",
    "is_complex", "nelement", "ndimension", "equal", "allclose", "_is_view",
}  # fmt: skip


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        prop = getattr(owner, "__name__", "")
        return prop if prop in _TENSOR_PROPERTIES else "__get__"
    if name.startswith("__") and name.endswith("__") and len(name) > 4:
        core = name[2:-2]
        if core.startswith("i") and core[1:] in _BINARY:
            return _canon(core[1:]) + "_"
        if core.startswith("r") and core[1:] in _BINARY:
            return _canon(core[1:])
        if core in _BINARY:
            return _canon(core)
        if core in ("getitem", "setitem", "neg", "invert", "abs"):
            return core
        return name
    if name.endswith("_with_indices"):
        name = name[: -len("_with_indices")]
    return name.lstrip("_") or name


def _canon(core: str) -> str:
    return "div" if core == "truediv" else core


def _op_type(func: Any, name: str) -> str:
    qual = getattr(func, "__qualname__", "") or ""
    module = getattr(func, "__module__", "") or ""
    if qual.startswith(("TensorBase.", "Tensor.", "getset_descriptor.")):
        return "Tensor." + name
    if module.startswith("torch.nn.functional") or module == "torch._C._nn":
        return "F." + name
    return "torch." + name


# --------------------------------------------------------------------------------------------
# Finding tensors in arbitrary Python structures


def _iter_tensors(obj: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(path, tensor)`` for every tensor inside tuples, lists, dicts and dataclasses."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
        return
    if depth > 6:  # deep enough for any real model output; stops pathological recursion
        return
    if isinstance(obj, (tuple, list)):
        names = getattr(obj, "_fields", None)  # namedtuples keep their field names
        for i, item in enumerate(obj):
            sub = f".{names[i]}" if names else f"[{i}]"
            yield from _iter_tensors(item, path + sub, depth + 1)
    elif isinstance(obj, Mapping):
        for k, item in obj.items():
            yield from _iter_tensors(item, f"{path}[{k!r}]", depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _iter_tensors(getattr(obj, f.name, None), f"{path}.{f.name}", depth + 1)


def _flat_tensors(args: Any, kwargs: Mapping | None = None) -> list[torch.Tensor]:
    """Tensors among an op's arguments; a fast path for the common flat cases."""
    out: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple, Mapping)) or (
            dataclasses.is_dataclass(a) and not isinstance(a, type)
        ):
            out.extend(t for _, t in _iter_tensors(a, "", 1))
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, torch.Tensor):
                out.append(a)
            elif isinstance(a, (list, tuple, Mapping)):
                out.extend(t for _, t in _iter_tensors(a, "", 1))
    return out


def _shape(t: torch.Tensor) -> list[int]:
    try:
        return [int(s) for s in t.shape]
    except Exception:  # nested or otherwise shapeless tensors
        return []


def _param_count(module: nn.Module) -> int:
    total = 0
    try:
        for p in module.parameters():
            if isinstance(p, nn.parameter.UninitializedParameter):
                continue
            total += p.numel()
    except Exception:
        pass
    return total


def _first(v: Any) -> int | None:
    if isinstance(v, (tuple, list)):
        v = v[0] if v else None
    if isinstance(v, torch.Tensor):
        return None
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _module_attrs(module: nn.Module, type_name: str) -> dict[str, Any]:
    """Kernel geometry along spatial axis 0, for receptive fields (square kernels assumed)."""
    attrs: dict[str, Any] = {}
    k = getattr(module, "kernel_size", None)
    if k is not None and not type_name.startswith("Adaptive"):
        kernel = _first(k)
        if kernel is not None:
            attrs["kernel"] = kernel
            stride = _first(getattr(module, "stride", None))
            attrs["stride"] = stride if stride else kernel if "Pool" in type_name else 1
            attrs["dilation"] = _first(getattr(module, "dilation", 1)) or 1
            attrs["padding"] = _first(getattr(module, "padding", 0)) or 0
            if getattr(module, "transposed", False):
                attrs["transposed"] = True
    if type_name.startswith("Adaptive") and "Pool" in type_name:
        attrs["adaptive"] = True
    return attrs


def _arg(args: tuple, kwargs: Mapping, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _op_attrs(name: str, args: tuple, kwargs: Mapping) -> dict[str, Any]:
    """Kernel geometry of functional convolutions and poolings (``F.conv2d``, ``F.max_pool2d``)."""
    if name.startswith(("conv1d", "conv2d", "conv3d", "conv_transpose")):
        weight = _arg(args, kwargs, 1, "weight")
        if not isinstance(weight, torch.Tensor) or weight.dim() < 3:
            return {}
        attrs = {
            "kernel": int(weight.shape[2]),
            "stride": _first(_arg(args, kwargs, 3, "stride", 1)) or 1,
            "padding": _first(_arg(args, kwargs, 4, "padding", 0)) or 0,
        }
        if name.startswith("conv_transpose"):
            attrs["transposed"] = True
            attrs["dilation"] = _first(_arg(args, kwargs, 7, "dilation", 1)) or 1
        else:
            attrs["dilation"] = _first(_arg(args, kwargs, 5, "dilation", 1)) or 1
        return attrs
    if name.startswith("adaptive_") and "pool" in name:
        return {"adaptive": True}
    if name.startswith(("max_pool", "avg_pool", "lp_pool")):
        offset = 1 if name.startswith("lp_pool") else 0  # lp_pool takes norm_type first
        kernel = _first(_arg(args, kwargs, 1 + offset, "kernel_size"))
        if kernel is None:
            return {}
        stride = _first(_arg(args, kwargs, 2 + offset, "stride"))
        attrs = {"kernel": kernel, "stride": stride or kernel, "dilation": 1, "padding": 0}
        if name.startswith("max_pool"):
            attrs["padding"] = _first(_arg(args, kwargs, 3, "padding", 0)) or 0
            attrs["dilation"] = _first(_arg(args, kwargs, 4, "dilation", 1)) or 1
        return attrs
    return {}


_EXPECTED_ATTRS = (
    # (attribute, what the layer expects of its input) for the "expected" part of a failure.
    ("in_features", "in_features"),
    ("in_channels", "in_channels"),
    ("num_features", "num_features"),
    ("normalized_shape", "normalized_shape"),
    ("num_channels", "num_channels"),
    ("embed_dim", "embed_dim"),
    ("input_size", "input_size"),
)


def _expected(module: nn.Module, type_name: str) -> str:
    """What a layer's parameters imply about its input, e.g. ``Linear(in_features=1568)``."""
    for attr, label in _EXPECTED_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, (int, tuple, list)) and not isinstance(value, bool):
            if isinstance(value, (tuple, list)):
                value = tuple(int(v) for v in value)
            if value == 0 and attr == "in_features":  # a lazy module not yet initialised
                return ""
            return f"{type_name}({label}={value})"
    return ""


# --------------------------------------------------------------------------------------------
# The function mode


class _RecordingMode(TorchFunctionMode):
    """Sees every torch call while the recorder is active and hands it to the recorder."""

    def __init__(self, recorder: CallRecorder) -> None:
        super().__init__()
        self._recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        rec = self._recorder
        # Fast path: ops inside leaf modules, outside the recorded root call (after it, the
        # caller's own post-processing of the output), or inside suspend_recording().
        if rec._leaf_depth or not rec._recording or rec._done or getattr(_LOCAL, "depth", 0):
            return func(*args, **kwargs)
        try:
            out = func(*args, **kwargs)
        except BaseException:
            rec._note_failed_op(func, args, kwargs)
            raise
        rec._record_op(func, args, kwargs, out)
        return out


# --------------------------------------------------------------------------------------------
# The recorder


class CallRecorder:
    """Record the executed graph of one forward pass of ``model``.

    Use as a context manager around the forward pass the capture stage runs anyway::

        with CallRecorder(model) as rec:
            out = model(batch)
        graph = rec.graph()

    Entering registers a forward pre-hook and a forward hook on every module and enters a
    :class:`~torch.overrides.TorchFunctionMode`; leaving removes every hook and leaves the mode,
    also when the forward raised (the exception is never swallowed; :meth:`failure_context`
    then says where it broke).

    A module is a *leaf* of the graph (one node per call) when it has no child modules or is a
    ``torch.jit.ScriptModule`` (opaque: TorchScript runs outside Python). Ops inside a leaf make
    no nodes; functional ops in a non-leaf module's ``forward`` become op nodes. Only the first
    call of the root module is recorded, so a capture stage that runs several batches records
    the first one.

    Tensors are tracked by ``id()`` plus a weak reference: a dead tensor's id may be reused by a
    new tensor, and the weak reference's callback forgets the id the moment the old one dies,
    without keeping every activation alive for the whole pass (a list of strong references
    would hold all of ResNet-50's activations at once).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.events: list[CallEvent] = []
        self.groups: dict[str, GroupInfo] = {}
        self._infos: dict[int, _ModInfo] = {}
        self._script_ids: set[int] = set()
        self._handles: list[Any] = []
        self._mode: _RecordingMode | None = None
        self._entered = False
        self._recording = False
        self._done = False
        self._leaf_depth = 0
        self._stack: list[_Frame] = []
        self._scope: list[str] = []
        self._scope_paths: list[str] = []
        self._calls: dict[int, int] = {}
        self._ids: set[str] = set()
        self._op_counts: dict[tuple[str, str], int] = {}
        self._producers: dict[int, list[Any]] = {}  # id(tensor) -> [weakref, event id]
        self._last_completed = ""
        self._failed_op: dict[str, Any] | None = None
        self._seq = 0

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> CallRecorder:
        if self._entered:
            raise RuntimeError("a CallRecorder records one forward pass; make a new one")
        self._entered = True
        try:
            self._install()
        except BaseException:
            self._uninstall()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._uninstall()
        return False  # never swallow the model's exception

    def _install(self) -> None:
        script_prefixes: list[str] = []
        for path, module in self.model.named_modules():
            # Descendants of a scripted module run inside TorchScript: no Python hook fires.
            if any(path.startswith(p + ".") for p in script_prefixes):
                continue
            is_script = isinstance(module, torch.jit.ScriptModule)
            if is_script:
                script_prefixes.append(path)
                type_name = getattr(module, "original_name", None) or type(module).__name__
            else:
                type_name = type(module).__name__
            leaf = is_script or next(iter(module.children()), None) is None
            # Counted now, outside the mode; lazy modules are counted after their first call.
            lazy = any(
                isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters()
            )
            params = None if lazy else _param_count(module)
            self._infos[id(module)] = _ModInfo(path, type_name, leaf, is_script, params)
            if is_script:
                self._script_ids.add(id(module))
                continue
            self._handles.append(module.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post_hook, with_kwargs=True))
        if self._script_ids:
            # ScriptModules refuse per-module hooks but do run the global ones; filtered by id.
            self._handles.append(_module_hooks.register_module_forward_pre_hook(self._global_pre))
            self._handles.append(
                _module_hooks.register_module_forward_hook(self._global_post, with_kwargs=True)
            )
        self._mode = _RecordingMode(self)
        self._mode.__enter__()
        self._recording = True

    def _uninstall(self) -> None:
        self._recording = False
        self._producers.clear()  # the events hold all the graph needs; drop the weak refs
        mode, self._mode = self._mode, None
        try:
            if mode is not None:
                mode.__exit__(None, None, None)
        finally:
            handles, self._handles = self._handles, []
            for h in handles:
                h.remove()

    # -- module hooks ---------------------------------------------------------------------------

    def _global_pre(self, module, args):
        if id(module) in self._script_ids:
            self._pre_hook(module, args, {})

    def _global_post(self, module, args, kwargs, output):
        if id(module) in self._script_ids:
            self._post_hook(module, args, kwargs, output)

    def _pre_hook(self, module, args, kwargs):
        with _no_torch_function():
            self._pre(module, args, kwargs)

    def _post_hook(self, module, args, kwargs, output):
        with _no_torch_function():
            self._post(module, args, kwargs, output)

    def _pre(self, module, args, kwargs):
        info = self._infos.get(id(module))
        if info is None:
            return None
        if self._leaf_depth or not self._recording or self._done or _suspended():
            self._stack.append(_Frame(module, info, "skip"))
            return None
        self._seq += 1
        n = self._calls.get(id(module), 0) + 1
        self._calls[id(module)] = n
        is_root = module is self.model
        if is_root:
            self._record_inputs(args, kwargs)
        if info.leaf:
            self._leaf_depth += 1
            self._stack.append(_Frame(module, info, "leaf", "", n, args, kwargs))
        elif is_root:
            self._stack.append(_Frame(module, info, "root", "", n, args, kwargs))
        else:
            # Unique among node ids too: a block named `output` must not clash with the
            # graph's output node when the collapsed view puts both on one page.
            key = self._new_id(info.path if n == 1 else f"{info.path} (call {n})")
            parent = self._scope[-1] if self._scope else ""
            self.groups[key] = GroupInfo(
                key=key,
                token=f"g{len(self.groups) + 1}",
                path=info.path,
                type=info.type,
                call_index=n,
                params=0,
                parent=parent,
                row_id=row_id(info.path),
                section_id=section_id(info.path, n),
            )
            self._scope.append(key)
            self._scope_paths.append(info.path)
            self._stack.append(_Frame(module, info, "scope", key, n, args, kwargs))
        return None

    def _post(self, module, args, kwargs, output):
        if id(module) not in self._infos:
            return None
        # Pop to this module's frame: a call that raised and was caught by the model's own
        # code leaves its frame behind, and must not misalign every later call.
        frame = None
        while self._stack:
            frame = self._stack.pop()
            if frame.module is module:
                break
            if frame.kind == "leaf":
                self._leaf_depth -= 1
            elif frame.kind == "scope":
                self._pop_scope(frame.key)
        if frame is None or frame.module is not module or frame.kind == "skip":
            return None
        self._seq += 1
        info = frame.info
        if info.params is None:  # a lazy module: initialised (and renamed) by this call
            info.params = _param_count(module)
            if not info.script:
                info.type = type(module).__name__
        if frame.kind == "leaf":
            self._leaf_depth -= 1
            self._record_module(module, info, frame.call_index, args, kwargs, output)
        elif frame.kind == "scope":
            group = self.groups.get(frame.key)
            if group is not None:
                group.params = info.params
                group.output_shapes = [_shape(t) for _, t in _iter_tensors(output)]
            self._pop_scope(frame.key)
        if module is self.model:
            self._record_outputs(output)
            self._done = True
        else:
            self._last_completed = info.path if frame.call_index == 1 else (
                f"{info.path} (call {frame.call_index})"
            )
        return None

    def _pop_scope(self, key: str) -> None:
        if self._scope and self._scope[-1] == key:
            self._scope.pop()
            self._scope_paths.pop()

    # -- producers ------------------------------------------------------------------------------

    def _producer(self, t: torch.Tensor) -> str | None:
        entry = self._producers.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1]
        return None

    def _set_producer(self, t: torch.Tensor, event_id: str) -> None:
        key = id(t)
        entry = self._producers.get(key)
        if entry is not None and entry[0]() is t:
            entry[1] = event_id  # in-place op: the mutated tensor now comes from this event
            return
        producers = self._producers

        def forget(ref, key=key):
            current = producers.get(key)
            if current is not None and current[0] is ref:
                del producers[key]

        try:
            producers[key] = [weakref.ref(t, forget), event_id]
        except TypeError:  # a tensor type without weak references: keep it alive instead
            producers[key] = [_Strong(t), event_id]

    def _new_id(self, base: str) -> str:
        ident, n = base, 1
        while ident in self._ids:
            n += 1
            ident = f"{base}#{n}"
        self._ids.add(ident)
        return ident

    def _inputs_of(self, tensors: list[torch.Tensor]) -> list[str]:
        seen: list[str] = []
        for t in tensors:
            p = self._producer(t)
            if p is not None and p not in seen:
                seen.append(p)
        return seen

    # -- recording ------------------------------------------------------------------------------

    def _record_inputs(self, args, kwargs) -> None:
        found = list(_iter_tensors(tuple(args)))
        for k, v in (kwargs or {}).items():
            found += [(f"[{k!r}]" + p, t) for p, t in _iter_tensors(v)]
        for path, t in found:
            if self._producer(t) is not None:
                continue  # the same tensor passed twice is one input
            name = "input" if len(found) == 1 else "input" + path
            ev = CallEvent(
                id=self._new_id("input" if len(found) == 1 else "input:" + path),
                kind="input",
                name=name,
                type="Input",
                output_shapes=[_shape(t)],
            )
            self.events.append(ev)
            self._set_producer(t, ev.id)

    def _record_outputs(self, output) -> None:
        found = list(_iter_tensors(output))
        for path, t in found:
            src = self._producer(t)
            name = "output" if len(found) == 1 else "output" + path
            ev = CallEvent(
                id=self._new_id("output" if len(found) == 1 else "output:" + path),
                kind="output",
                name=name,
                type="Output",
                inputs=[src] if src else [],
                input_shapes=[_shape(t)],
                output_shapes=[_shape(t)],
            )
            self.events.append(ev)

    def _record_module(self, module, info: _ModInfo, n: int, args, kwargs, output) -> None:
        ins = _flat_tensors(args, kwargs)
        outs = [t for _, t in _iter_tensors(output)]
        path = info.path or info.type  # a bare leaf model has the empty path
        ev = CallEvent(
            id=self._new_id(path if n == 1 else f"{path} (call {n})"),
            kind="module",
            name=path,
            type=info.type,
            call_index=n,
            inputs=self._inputs_of(ins),
            input_shapes=[_shape(t) for t in ins],
            output_shapes=[_shape(t) for t in outs],
            params=info.params or 0,
            scope=tuple(self._scope),
            attrs=_module_attrs(module, info.type),
            path=info.path,
        )
        self.events.append(ev)
        for t in outs:
            self._set_producer(t, ev.id)

    def _record_op(self, func, args, kwargs, out) -> None:
        if isinstance(out, torch.Tensor):
            outs = [out]
        elif isinstance(out, (tuple, list)):
            outs = [t for t in out if isinstance(t, torch.Tensor)]
            if not outs:
                return
        else:
            outs = []
        name = _op_name(func)
        if not outs:
            if name != "setitem" or not args or not isinstance(args[0], torch.Tensor):
                return  # shape, size, item, bool(...): questions, not computations
            outs = [args[0]]  # x[idx] = y mutates x: x now comes from the setitem
        if name in _IGNORED or name == "__get__":
            return
        ins = _flat_tensors(args, kwargs)
        producers = self._inputs_of(ins)
        if not producers:
            return  # a computation on constants or parameters only: not part of the data flow
        # Only data-flow ops count as "something happened after": grad-mode switches, shape
        # questions and constants made while an exception unwinds must not hide the culprit.
        self._seq += 1
        if name in _PASS_THROUGH:
            if len(producers) == 1:
                for t in outs:
                    if self._producer(t) is None:
                        self._set_producer(t, producers[0])
                return
        group_path = self._scope_paths[-1] if self._scope_paths else ""
        scope_key = self._scope[-1] if self._scope else ""
        count_key = (scope_key, name)
        n = self._op_counts.get(count_key, 0) + 1
        self._op_counts[count_key] = n
        base = f"op:{scope_key}/{name}" if scope_key else f"op:{name}"
        ev = CallEvent(
            id=self._new_id(base if n == 1 else f"{base}#{n}"),
            kind="op",
            name=name,
            type=_op_type(func, name),
            call_index=n,
            inputs=producers,
            input_shapes=[_shape(t) for t in ins],
            output_shapes=[_shape(t) for t in outs],
            scope=tuple(self._scope),
            attrs=_op_attrs(name, args, kwargs),
            path=group_path,
        )
        self.events.append(ev)
        for t in outs:
            self._set_producer(t, ev.id)

    def _note_failed_op(self, func, args, kwargs) -> None:
        self._seq += 1
        try:
            # Reading shapes goes through the mode too: unrecorded, or it would count as a
            # later op and the failing one would no longer look like the culprit.
            with suspend_recording():
                shapes = [_shape(t) for t in _flat_tensors(args, kwargs)]
        except Exception:
            shapes = []
        name = _op_name(func)
        self._failed_op = {
            "name": name,
            "type": _op_type(func, name),
            "input_shapes": shapes,
            "seq": self._seq,
            "depth": len(self._stack),
            "scope": self._scope[-1] if self._scope else "",
        }

    # -- results --------------------------------------------------------------------------------

    def graph(self) -> ExecutedGraph:
        """The executed graph of the recorded events (partial when the forward raised).

        After a complete pass, op nodes whose results reach nothing (``x.mean() > t`` feeding
        a Python ``if``) are left out: they decided the branch, they are not part of the data
        flow. Module calls always stay. After a failed pass nothing is pruned, since the
        failing call may have been about to consume them. Built by
        :func:`~cnnreport.capture.graph_building.build_executed_graph`; the recorder's own
        state is left as it was, so a second call gives the same graph.
        """
        return build_executed_graph(
            self.events, self.groups, self._uncalled_containers(), self._ids, complete=self._done
        )

    def _uncalled_containers(self) -> list[UncalledContainer]:
        """Non-leaf modules of the model that never ran a ``forward`` of their own."""
        called = {g.path for g in self.groups.values()}
        return [
            UncalledContainer(
                path, self._infos[id(module)].type, functools.partial(_param_count, module)
            )
            for path, module in self.model.named_modules()
            if path
            and path not in called
            and id(module) in self._infos
            and not self._infos[id(module)].leaf
        ]

    def failure_context(self) -> dict[str, Any]:
        """Where a forward pass that raised broke off.

        Returns ``failed_at`` (module path, or op name for a functional op in a non-leaf
        ``forward``), ``failed_type`` (module class or ``Tensor.view``-style op), ``in_module``
        (the module whose ``forward`` ran the failing op, "" for a module failure or the root),
        ``last_completed`` (path of the last module whose forward finished), ``input_shapes``
        (what the failing call received) and ``expected`` (what the layer's parameters imply,
        e.g. ``Linear(in_features=1568)``, else ""). All empty strings when nothing failed.
        """
        ctx: dict[str, Any] = {
            "failed_at": "",
            "failed_type": "",
            "in_module": "",
            "last_completed": self._last_completed,
            "input_shapes": [],
            "expected": "",
        }
        frames = [f for f in self._stack if f.kind != "skip"]
        op = self._failed_op
        # The op is the culprit when nothing happened after it and it ran directly in the
        # innermost unfinished non-leaf call (ops inside a leaf are never seen by the mode).
        if op is not None and op["seq"] == self._seq and op["depth"] == len(self._stack):
            ctx.update(
                failed_at=op["name"],
                failed_type=op["type"],
                in_module=op["scope"],
                input_shapes=op["input_shapes"],
            )
            return ctx
        if frames:
            frame = frames[-1]
            info = frame.info
            label = info.path or info.type
            if frame.call_index > 1:
                label += f" (call {frame.call_index})"
            ctx.update(
                failed_at=label,
                failed_type=info.type,
                input_shapes=[_shape(t) for t in _flat_tensors(frame.args, frame.kwargs)],
                expected=_expected(frame.module, info.type),
            )
        return ctx


class _Strong:
    """Stands in for a weak reference where a tensor type does not support one."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


for _hook in (CallRecorder._global_pre, CallRecorder._global_post, CallRecorder._pre_hook, CallRecorder._post_hook):
    passive_hook(_hook)
