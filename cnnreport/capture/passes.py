"""The capture pass: every probe batch forwarded once with the capture hooks, the graph recorder
on the first batch, Grad-CAM's backward pass, and the predictions; the model left as it was."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from ..datamodel import Prediction, ReportOptions
from ..errors import ForwardError, OptionError
from ..io.probes import (
    ProbeBatch,
)
from ..model.modules import to_model
from ..model.state import preserved_model_state
from ..support import heap
from ..support.batching import next_batch_size
from ..support.gcpause import collect_young, paused_gc
from ..support.progress import Progress
from .activations import ActivationCapture, CaptureResult, run_forward
from .predictions import _count_nonfinite, classification_scores, describe_output, probabilities, top_predictions
from .tracing import CallRecorder

_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch ops on one thread each for the block (the pool's threads are the parallelism).

    torch's thread count is a per-thread setting over a process default that threads without
    their own read, and ``set_num_threads`` sets both. So two reports may not overlap here:
    the second would save the first's 1 and put it back for good. They take turns (only the
    figures' pool is serialised, not the forward passes), and each restores what it saw.
    """
    with _THREADS_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


@dataclass
class _Outcomes:
    """What the batches' outputs said, gathered batch by batch (the pass result but the capture)."""

    predictions: list[list[Prediction]] = dataclasses.field(default_factory=list)
    graph: Any = None
    failure: dict[str, Any] | None = None
    error: ForwardError | None = None
    batch_sizes: list[int] = dataclasses.field(default_factory=list)
    class_count: int | None = None  # width of the (N, classes) scores; None: no class scores
    gradcam_missing: bool = False  # a batch had class scores, but no Grad-CAM map came back
    #: What the forward returned, in words ("returned None" ...), when it gave no class scores.
    unscored_output: str = ""
    #: NaN and Inf values in the model's outputs over every batch.
    output_nonfinite: int = 0


@dataclass(kw_only=True)
class PassResult(_Outcomes):
    """The capture pass's result: the capture's reductions and what the outputs said."""

    capture: CaptureResult


def capture_pass(
    model: nn.Module,
    batch: ProbeBatch,
    options: ReportOptions,
    detailed: list[str],
    cam_layer: str | None,
    progress: Progress,
    *,
    taper: bool = False,
) -> PassResult:
    """Forward every probe batch once with the capture hooks (and the graph recorder on the
    first batch); Grad-CAM backpropagates from the output to the CAM layer only.

    Batches of ``options.batch_size`` (default :data:`~cnnreport.support.batching.DEFAULT_BATCH`);
    with ``taper``, batches after the first may be smaller (:func:`~cnnreport.support.batching.next_batch_size`)."""
    want_cam = options.attributions and cam_layer is not None
    capture = ActivationCapture(
        model,
        set(detailed),
        max_channels=options.max_channels,
        tile_size=options.tile_size,
        cam_layer=cam_layer if want_cam else None,
        max_probes=options.max_probes,
        total_probes=len(batch),
    )
    out = _Outcomes()
    total = len(batch)
    with preserved_model_state(model) as snapshot, capture, paused_gc() as collector_was_on:
        first_probe = 0
        index = -1
        while first_probe < total:
            index += 1
            if index > 0:
                # Each batch sees the model as it was given, not as the last batch's forward
                # left it (observers, counters, in-place writes): the report does not depend on
                # the batch size.
                snapshot.restore(between_passes=True)
            size = _batch_size(options, capture, total, first_probe, index, taper)
            inputs = to_model(tuple(t[first_probe : first_probe + size] for t in batch.inputs), model)
            capture.start_batch(first_probe)
            first_probe += inputs[0].shape[0]
            out.batch_sizes.append(inputs[0].shape[0])
            # The recorder runs on the first batch even without a graph on the page: it is what
            # names the module or op where a failing forward pass broke.
            if not _forward_and_read(model, inputs, index, options, capture, want_cam, record=index == 0, out=out):
                break
            progress.advance(inputs[0].shape[0])
            collect_young(collector_was_on)
            heap.after_batch(index)
    return PassResult(capture=capture.result(), **{f.name: getattr(out, f.name) for f in dataclasses.fields(_Outcomes)})


def _batch_size(options: ReportOptions, capture: ActivationCapture, total: int, done: int, index: int, taper: bool) -> int:
    """The next batch's size: the first batch's, or with ``taper`` what the memory seen allows."""
    if not (taper and index > 0):
        return options.first_batch
    return next_batch_size(
        options.first_batch,
        probes=total,
        done=done,
        shown=min(total, options.max_probes),
        largest_per_probe=capture.largest_per_probe,
        tile_bytes=capture.tile_bytes,
    )


def _forward_and_read(model: nn.Module, inputs: tuple[torch.Tensor, ...], index: int, options: ReportOptions, capture: ActivationCapture, want_cam: bool, *, record: bool, out: _Outcomes) -> bool:
    """One batch forward (recorded on the first), its predictions and Grad-CAM's backward, into
    ``out``; False when the forward pass raised (the error and failure context are in ``out``)."""
    try:
        recorder = CallRecorder(model) if record else None
        with (recorder if recorder is not None else contextlib.nullcontext()), torch.set_grad_enabled(want_cam):
            output = run_forward(model, inputs)
    except ForwardError as exc:
        if recorder is not None:
            out.failure = recorder.failure_context()
            out.graph = _graph_of(recorder)  # the graph of everything that ran
            _name_failure(exc, out.failure)
        out.error = exc
        return False
    if recorder is not None:
        out.graph = _graph_of(recorder)
    scores = classification_scores(output)
    out.output_nonfinite += _count_nonfinite(output)
    if scores is None and index == 0:
        out.unscored_output = describe_output(output)
    del output  # the batch's outputs go before the next batch's forward
    if scores is not None:
        out.class_count = int(scores.shape[1])
        out.predictions += top_predictions(probabilities(scores), options.top_k, options.class_names)
        if want_cam:
            targets = [options.target_class] * scores.shape[0] if options.target_class is not None else scores.detach().argmax(1).tolist()
            if options.target_class is not None and not 0 <= options.target_class < scores.shape[1]:
                raise OptionError(f"--target-class {options.target_class} is outside the model's {scores.shape[1]} classes")
            if not capture.gradcam_backward(scores, targets):
                out.gradcam_missing = True
    return True


def _name_failure(error: ForwardError, failure: dict[str, Any] | None) -> None:
    """Rewrite the error's one line to name the module or op that failed and what it got."""
    if not failure or not failure.get("failed_at"):
        return
    cause = error.__cause__
    shapes = ", ".join(str(tuple(s)) for s in failure.get("input_shapes") or [] if isinstance(s, (list, tuple)))
    where = f"{failure['failed_at']} ({failure.get('failed_type') or 'op'})"
    text = f"the forward pass failed in {where}" + (f" given input {shapes}" if shapes else "")
    if failure.get("expected"):
        text += f", but it expects {failure['expected']}"
    if cause is not None:
        text += f": {type(cause).__name__}: " + " ".join(str(cause).split())
    error.message = text
    error.args = (text,)


def _graph_of(recorder: Any) -> Any:
    try:
        return recorder.graph()
    except Exception:  # a graph we cannot build must not cost the user the whole report
        return None
