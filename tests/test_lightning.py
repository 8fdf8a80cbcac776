"""ReportCallback: snapshots from a real Lightning training (a small CNN on 8x8 digits)."""

from __future__ import annotations

import json
import types
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")

from cnnreport.errors import OptionError  # noqa: E402
from cnnreport.history.lightning import ReportCallback  # noqa: E402
from cnnreport.history.snapshots import read_snapshots  # noqa: E402
from training_models import DigitsCNN, digits, probes  # noqa: E402

FAST = dict(max_channels=4, tile_size=16)


class DigitsModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = DigitsCNN()
        self.net.conv1.requires_grad_(False)  # frozen for the whole training

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, index):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, index):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).double().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)  # state: a momentum buffer per trained parameter


class Seen(pl.Callback):
    """What Lightning itself says at each epoch's end: epoch, step, metrics, weights."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, int, dict[str, float], dict[str, torch.Tensor]]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = {k: v.item() for k, v in trainer.callback_metrics.items()}
        self.epochs.append((trainer.current_epoch, trainer.global_step, metrics, {k: v.clone() for k, v in pl_module.state_dict().items()}))


def _fit(folder, epochs, every, *, with_callback=True):
    images, labels = digits(256)
    train = DataLoader(TensorDataset(images, labels), batch_size=64)  # 4 steps an epoch
    val = DataLoader(TensorDataset(*digits(128, offset=1000)), batch_size=128)
    seen = Seen()
    callback = ReportCallback(folder, probes=probes(), every_n_epochs=every, **FAST) if with_callback else None
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[seen, callback] if callback else [seen], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and loggers
        trainer.fit(DigitsModule(), train, val)
    return seen, callback, trainer


def test_every_n_epochs_and_once_at_the_end(tmp_path):
    seen, callback, _ = _fit(tmp_path, epochs=5, every=2)
    snaps = read_snapshots(tmp_path)
    # Epochs 1 and 3 (the 2nd and 4th), then the end of training after epoch 4: steps 8, 16, 20.
    assert [(s.step, s.epoch) for s in snaps] == [(8, 1), (16, 3), (20, 4)]
    assert [(s.step, s.epoch) for s in callback.snapshots] == [(8, 1), (16, 3), (20, 4)]
    by_epoch = {epoch: (step, metrics, state) for epoch, step, metrics, state in seen.epochs}
    assert sorted(by_epoch) == [0, 1, 2, 3, 4]
    for snap in snaps:
        step, metrics, state = by_epoch[snap.epoch]
        assert snap.step == step
        record = json.loads(snap.record_path.read_text())
        assert record["metrics"] == metrics
        assert sorted(record["metrics"]) == ["train_loss", "val_acc"]
        assert json.loads(snap.report_json_path.read_text())["model"]["total_params"] == 3226
        saved = torch.load(snap.checkpoint_path, weights_only=True)
        assert saved.keys() == state.keys()
        for key in state:
            assert torch.equal(saved[key], state[key]), (snap.step, key)
    first, *_, last = (torch.load(s.checkpoint_path, weights_only=True) for s in snaps)
    assert torch.equal(first["net.conv1.weight"], last["net.conv1.weight"])  # frozen
    assert not torch.equal(first["net.conv2.weight"], last["net.conv2.weight"])
    # The history index over this folder: the frozen layer changed by exactly 0, the others not.
    from cnnreport.history.index import build_index, read_entries, write_index

    index = build_index(read_entries(tmp_path, tmp_path / "index.html"))
    assert [e.label for e in index.entries] == ["step 8", "step 16", "step 20"]
    changes = {c.layer: c.from_first for c in index.weight_changes}
    assert changes["net.conv1"] == [None, 0.0, 0.0]
    first_change, *later_changes = changes["net.conv2"]
    assert (first_change, len(later_changes)) == (None, 2)
    assert min(later_changes) > 0
    assert write_index(tmp_path) == str(tmp_path / "index.html")


def test_training_with_the_callback_is_training_without_it(tmp_path):
    seen, callback, trainer = _fit(tmp_path / "with", epochs=3, every=1)
    plain, _, plain_trainer = _fit(tmp_path / "without", epochs=3, every=1, with_callback=False)
    # The last epoch had its snapshot: the end of training adds none.
    assert [(s.step, s.epoch) for s in read_snapshots(tmp_path / "with")] == [(4, 0), (8, 1), (12, 2)]
    assert len(callback.snapshots) == 3
    assert [(e, s, m) for e, s, m, _ in seen.epochs] == [(e, s, m) for e, s, m, _ in plain.epochs]
    for (_, _, _, state), (_, _, _, plain_state) in zip(seen.epochs, plain.epochs, strict=True):
        assert state.keys() == plain_state.keys()
        for key in state:
            assert torch.equal(state[key], plain_state[key]), key
    moments = trainer.optimizers[0].state_dict()
    plain_moments = plain_trainer.optimizers[0].state_dict()
    assert moments["param_groups"] == plain_moments["param_groups"]
    assert sorted(moments["state"]) == [2, 3, 4, 5]  # conv1's weight and bias (0, 1) are frozen
    for index in moments["state"]:
        assert torch.equal(moments["state"][index]["momentum_buffer"], plain_moments["state"][index]["momentum_buffer"]), index


def test_only_global_rank_zero_writes(tmp_path):
    callback = ReportCallback(tmp_path, probes=probes(), every_n_epochs=1, **FAST)
    other_rank = types.SimpleNamespace(is_global_zero=False, current_epoch=0, global_step=4, callback_metrics={})
    module = DigitsModule()
    callback.on_train_epoch_end(other_rank, module)
    callback.on_train_end(other_rank, module)
    assert list(tmp_path.iterdir()) == []
    rank_zero = types.SimpleNamespace(is_global_zero=True, current_epoch=0, global_step=4, callback_metrics={"m": torch.tensor([0.5])})
    callback.on_train_epoch_end(rank_zero, module)
    assert [(s.step, s.epoch, s.metrics) for s in read_snapshots(tmp_path)] == [(4, 0, {"m": 0.5})]


@pytest.mark.parametrize("kwargs, message", [({"every_n_epochs": 0}, "every_n_epochs"), ({"every_n_epochs": True}, "every_n_epochs"), ({"max_chanels": 4}, "max_chanels")])
def test_bad_options_fail_when_the_callback_is_made(tmp_path, kwargs, message):
    with pytest.raises(OptionError, match=message):
        ReportCallback(tmp_path / "cb", probes=probes(), **kwargs)
    assert list(tmp_path.iterdir()) == []
