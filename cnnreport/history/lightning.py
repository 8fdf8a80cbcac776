"""A Lightning callback that writes a snapshot (checkpoint, report, record) every few epochs
and once at the end of training. Needs the optional extra: ``pip install cnnreport[lightning]``.

This is the only module that imports Lightning.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from .run import Run
from .snapshots import Snapshot


class ReportCallback(pl.Callback):
    """Snapshot the LightningModule at the end of every ``every_n_epochs``-th training epoch and
    at the end of training, into ``folder`` (:class:`cnnreport.Run`'s format).

    >>> trainer = Trainer(callbacks=[ReportCallback("runs/exp1", probes=probes, every_n_epochs=5)])

    A snapshot's ``step`` is ``trainer.global_step`` (optimizer steps so far) and its ``epoch``
    is Lightning's ``current_epoch`` (from 0, as ``ModelCheckpoint`` names its files); its
    metrics are ``trainer.callback_metrics`` that are single numbers, as floats. The hook is
    ``on_train_epoch_end``: Lightning calls it once per epoch after that epoch's validation, so
    the epoch's ``val_*`` metrics are there; ``on_validation_end`` would also run for the
    sanity check before training and for every ``val_check_interval`` within an epoch. At the
    end of training one more snapshot is taken unless the last epoch's already is of the same
    step. Only the global rank 0 process writes. Options are checked when the callback is made.
    """

    def __init__(self, folder: str | os.PathLike[str], probes: Any = None, *, every_n_epochs: int = 1, **options: Any) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            from ..errors import OptionError  # the one error this module raises itself

            raise OptionError(f"every_n_epochs must be a whole number >= 1, got {every_n_epochs!r}")
        self.run = Run(folder, probes, **options)
        self.every_n_epochs = every_n_epochs
        self.snapshots: list[Snapshot] = []
        self._last_epoch: int | None = None  # the last epoch Lightning ended, snapshot or not

    def _take(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        metrics = {name: value for name, value in trainer.callback_metrics.items() if not isinstance(value, torch.Tensor) or value.numel() == 1}
        self.snapshots.append(self.run.snapshot(pl_module, step=trainer.global_step, epoch=epoch, metrics=metrics))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_epoch = trainer.current_epoch
        if trainer.is_global_zero and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._take(trainer, pl_module, trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or (self.snapshots and self.snapshots[-1].step == trainer.global_step):
            return
        # By now Lightning has counted the last epoch as done (current_epoch is one past it),
        # unless training stopped inside one: the epoch is the last one that ended, if any did.
        self._take(trainer, pl_module, self._last_epoch if self._last_epoch is not None else trainer.current_epoch)
