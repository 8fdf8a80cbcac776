"""Devices without a GPU at hand: which ``torch.device`` ``--device`` names when torch reports
CUDA devices (``torch.cuda``'s answers replaced, the device built checked), the model moved to
it (a model whose own ``.to()`` records what it was asked), and files saved on a GPU read on a
machine without one (their tensors tagged ``cuda:0`` as a GPU save writes them).
"""

from __future__ import annotations

import textwrap
import warnings
import zipfile

import pytest
import torch
from torch import nn

from cnnreport.errors import ModelSpecError, OptionError
from cnnreport.io.loading import (
    load_model,
    load_weights,
    read_checkpoint,
    resolve_device,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture
def two_gpus(monkeypatch):
    """torch says: CUDA is there, two devices, the current one is the second."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


def test_auto_takes_the_current_cuda_device_with_its_index(two_gpus):
    device = resolve_device("auto")
    assert (device.type, device.index) == ("cuda", 1)


@pytest.mark.parametrize("text, index", [("cuda", 0), ("CUDA:0", 0), ("cuda:1", 1), (" cuda:1 ", 1)])
def test_cuda_and_cuda_n_name_that_device(two_gpus, text, index):
    device = resolve_device(text)
    assert (device.type, device.index) == ("cuda", index)


@pytest.mark.parametrize("text", ["cuda:2", "cuda:10"])
def test_a_cuda_index_past_the_last_device_is_refused(two_gpus, text):
    with pytest.raises(OptionError) as info:
        resolve_device(text)
    assert info.value.message == f"--device {text}: this machine has 2 CUDA device(s)"


MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Recorder(nn.Module):
        '''Records every .to() it is asked for and stays where it is.'''

        def __init__(self, tensors: bool = True):
            super().__init__()
            if tensors:
                self.lin = nn.Linear(1, 1)
            self.asked = []

        def to(self, *args, **kwargs):
            self.asked.append((args, kwargs))
            return self
    """
)


@pytest.fixture
def recorder(tmp_path):
    path = tmp_path / "recorder.py"
    path.write_text(MODEL_FILE, encoding="utf-8")
    return f"{path}:Recorder"


def test_a_model_elsewhere_than_the_device_is_moved_there_with_a_note(two_gpus, recorder):
    loaded = load_model(recorder, device="cuda:1")
    assert loaded.model.asked == [((torch.device("cuda", 1),), {})]
    assert loaded.notes == ["moved the model to cuda:1"]


def test_a_model_already_on_the_device_is_not_moved(recorder):
    loaded = load_model(recorder, device="cpu")
    assert loaded.model.asked == []
    assert loaded.notes == []


def test_a_model_without_tensors_is_still_sent_to_the_device(recorder):
    loaded = load_model(recorder, device="cpu", model_args={"tensors": False})
    assert loaded.model.asked == [((torch.device("cpu"),), {})]
    assert loaded.notes == ["built " + recorder.rpartition(":")[0] + ":Recorder(tensors=False)"]


# -- files written on a GPU --------------------------------------------------------------------------


def pickled_data(path) -> bytes:
    """The data.pkl of a torch zip: it names each storage's device as a pickled string."""
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(name for name in archive.namelist() if name.endswith("/data.pkl")))


def save_as_if_on_gpu(obj, path, monkeypatch):
    """torch.save, with every storage tagged as a GPU save tags it."""
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(obj, path)


def state_dict():
    return {"weight": torch.tensor([[1.5]]), "bias": torch.tensor([-0.25])}


def test_weights_saved_on_a_gpu_load_into_a_model_on_the_cpu(tmp_path, monkeypatch):
    path = tmp_path / "gpu.pt"
    save_as_if_on_gpu(state_dict(), path, monkeypatch)
    assert b"X\x06\x00\x00\x00cuda:0" in pickled_data(path)  # the device, as a GPU save writes it
    assert b"cpu" not in pickled_data(path)
    model = nn.Linear(1, 1)
    assert load_weights(model, str(path)) == ["loaded 2 tensors into Linear"]
    assert model.weight.device == torch.device("cpu")
    assert (model.weight.item(), model.bias.item()) == (1.5, -0.25)


def test_a_state_dict_saved_on_a_gpu_given_as_the_model_is_named_for_what_it_is(tmp_path, monkeypatch):
    path = tmp_path / "gpu.pt"
    save_as_if_on_gpu(state_dict(), path, monkeypatch)
    assert b"X\x06\x00\x00\x00cuda:0" in pickled_data(path)  # the device, as a GPU save writes it
    assert b"cpu" not in pickled_data(path)
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path))
    assert info.value.message == f"{path} holds weights (a state dict), not a model"
    assert info.value.hint == "give the model as path/to/file.py:Name and this file as --weights"


def test_a_whole_model_saved_on_a_gpu_is_unpickled_onto_the_cpu(tmp_path, monkeypatch):
    source = nn.Linear(1, 1)
    with torch.no_grad():
        source.weight.fill_(0.75)
    path = tmp_path / "whole.pt"
    save_as_if_on_gpu(source, path, monkeypatch)
    assert b"X\x06\x00\x00\x00cuda:0" in pickled_data(path)  # the device, as a GPU save writes it
    assert b"cpu" not in pickled_data(path)
    loaded = load_model(str(path), trust_checkpoint=True)
    assert loaded.notes == ["unpickled a whole Linear from whole.pt (--trust-checkpoint)"]
    assert loaded.model.weight.device == torch.device("cpu")
    assert loaded.model.weight.item() == 0.75


def torchscript_as_if_on_gpu(path):
    """A TorchScript archive of Linear(1, 1) whose tensors are recorded as on cuda:0."""
    source = nn.Linear(1, 1)
    with torch.no_grad():
        source.weight.fill_(2.5)
        source.bias.fill_(-1.0)
    plain = path.with_name("plain.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(source), str(plain))
    with zipfile.ZipFile(plain) as archive:
        members = [(name, archive.read(name)) for name in archive.namelist()]
    # data.pkl names each storage's device as a length-prefixed string: 'cpu' becomes 'cuda:0'
    cpu, gpu = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    data = dict(members)[next(name for name, _ in members if name.endswith("/data.pkl"))]
    assert data.count(cpu) == 1  # weight and bias share the memoised string
    assert gpu not in data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, blob in members:
            archive.writestr(name, blob.replace(cpu, gpu) if name.endswith("/data.pkl") else blob)


def test_a_torchscript_model_saved_on_a_gpu_loads_onto_the_cpu(tmp_path):
    path = tmp_path / "gpu.ts"
    torchscript_as_if_on_gpu(path)
    assert b"X\x06\x00\x00\x00cuda:0" in pickled_data(path)  # the device, as a GPU save writes it
    assert b"cpu" not in pickled_data(path)
    loaded = load_model(str(path))
    assert loaded.notes == ["loaded TorchScript archive gpu.ts"]
    assert loaded.model.weight.device == torch.device("cpu")
    assert (loaded.model.weight.item(), loaded.model.bias.item()) == (2.5, -1.0)


def test_torchscript_weights_saved_on_a_gpu_are_read_onto_the_cpu(tmp_path):
    path = tmp_path / "gpu.ts"
    torchscript_as_if_on_gpu(path)
    assert b"X\x06\x00\x00\x00cuda:0" in pickled_data(path)  # the device, as a GPU save writes it
    assert b"cpu" not in pickled_data(path)
    checkpoint = read_checkpoint(path)
    assert checkpoint.notes == ["took the weights of TorchScript archive gpu.ts"]
    assert {k: (v.device.type, v.item()) for k, v in checkpoint.state_dict.items()} == {
        "weight": ("cpu", 2.5),
        "bias": ("cpu", -1.0),
    }
