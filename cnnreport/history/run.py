"""Reports from a training loop: :class:`Run` writes one snapshot (checkpoint, report, record)
per call, leaving the model and the training around it as they were."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import OptionError, WeightsError
from ..io.provenance import default_provenance, fill_provenance
from ..report.pipeline import build_report, make_options
from .snapshots import Snapshot, check_step, clean_metrics, stem, user_mode, write_record


class Run:
    """A folder of snapshots taken while a model trains.

    >>> run = cnnreport.Run("runs/exp1", probes="probes/", max_channels=8)
    >>> for epoch in range(epochs):
    ...     train_one_epoch(model, optimizer)
    ...     run.snapshot(model, step=epoch, metrics={"val_acc": evaluate(model)})

    ``probes`` are :func:`cnnreport.build_report`'s; the other keywords are
    :class:`~cnnreport.ReportOptions` fields, checked here so that a typo fails before the first
    epoch rather than after it. ``progress`` is off unless asked for (the loop has its own bar).
    Each report's title is ``title`` (or the folder's name) followed by the step.
    """

    def __init__(self, folder: str | os.PathLike[str], probes: Any = None, *, input_size: Any = None, class_names: Any = None, **options: Any) -> None:
        options.setdefault("progress", False)
        self.options = make_options(None, **options)  # unknown names raise OptionError now
        if isinstance(probes, (str, os.PathLike)) and not os.path.exists(probes):
            raise OptionError(f"probes {os.fspath(probes)!r} not found")
        if probes is None and input_size is None:
            raise OptionError("a Run needs probes (a tensor, folder or image paths) or input_size for a synthetic input")
        self.folder = Path(folder)
        self.probes = probes
        self.input_size = input_size
        self.class_names = class_names
        self.folder.mkdir(parents=True, exist_ok=True)

    def snapshot(
        self,
        model: nn.Module,
        step: int,
        metrics: Mapping[str, Any] | None = None,
        *,
        epoch: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Snapshot:
        """Report ``model`` now and record it as the snapshot at ``step``; returns the record.

        Writes ``step-NNNNNN.pt`` (the state_dict, tensors on the CPU), unless ``checkpoint``
        names one saved already (recorded relative to the folder when inside it), then the
        report's HTML and JSON as one set, then the record. A snapshot at a step already taken
        replaces it. The model and training are left as they were: weights, buffers, hooks,
        flags, ``requires_grad``, grads (:func:`build_report`'s guarantee), the torch, numpy and
        ``random`` generators, grad mode, and anything else (an optimizer is never touched).
        """
        step = check_step(step)
        epoch = None if epoch is None else check_step(epoch, "epoch")
        values = clean_metrics(metrics)
        name = stem(step)
        with _training_state_kept():
            old_record = self.folder / f"{name}.snapshot.json"
            old_record.unlink(missing_ok=True)  # no record may point at a report being replaced
            if checkpoint is None:
                saved = self.folder / f"{name}.pt"
                _save_state_dict(model, saved)
            else:
                saved = Path(checkpoint)
                if not saved.is_file():
                    raise WeightsError(f"checkpoint {saved} not found")
            provenance = fill_provenance(default_provenance(), checkpoint_path=saved)
            title = f"{self.options.title or self.folder.resolve().name} · step {step}"
            report = build_report(
                model,
                self.probes,
                dataclasses.replace(self.options, title=title),
                input_size=self.input_size,
                class_names=self.class_names,
                provenance=provenance,
            )
            html, json_path = self.folder / f"{name}.html", self.folder / f"{name}.json"
            report.write(html=str(html), json=str(json_path))
            record = Snapshot(
                folder=self.folder,
                step=step,
                epoch=epoch,
                metrics=values,
                checkpoint=_relative(saved, self.folder),
                report_html=html.name,
                report_json=json_path.name,
                name=old_record.name,
            )
            write_record(record)
        return record


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when inside it, else absolute (posix separators)."""
    full, base = path.resolve(), folder.resolve()
    try:
        return full.relative_to(base).as_posix()
    except ValueError:
        return full.as_posix()


def _save_state_dict(model: nn.Module, path: Path) -> None:
    """``model``'s state_dict with every tensor on the CPU, replacing ``path`` atomically."""
    state = {k: v.detach().to("cpu") if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint-", suffix=".tmp")  # never *.pt: a glob of checkpoints must not catch it
    os.close(handle)
    try:
        torch.save(state, temp)
        user_mode(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _training_state_kept() -> Iterator[None]:
    """Put back what a training loop depends on besides the model: the random generators
    (torch CPU and CUDA, numpy, ``random``) and grad mode, also when the snapshot fails."""
    torch_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    numpy_rng, python_rng, grad = np.random.get_state(), random.getstate(), torch.is_grad_enabled()
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(numpy_rng)
        random.setstate(python_rng)
        torch.set_grad_enabled(grad)
