"""Fingerprints, file hashes and provenance fields pinned against hashlib and literal bytes.

The fingerprint's format is rebuilt here from its documentation: the tag line, then per key
in sorted order a JSON header line and the tensor's raw little-endian bytes (written with
struct), or a JSON line for a value that is no tensor.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnreport.datamodel import ProbeFile, Provenance
from cnnreport.errors import OptionError, WeightsError
from cnnreport.io.provenance import (
    creation_time,
    default_provenance,
    fill_provenance,
    model_fingerprint,
    probe_files,
    state_dict_fingerprint,
)

TAG = b"cnnreport-state-dict-v1\n"


def sha(*parts: bytes) -> str:
    digest = hashlib.sha256(TAG)
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def test_an_empty_state_dict_is_the_hash_of_the_tag_alone():
    assert state_dict_fingerprint({}) == hashlib.sha256(b"cnnreport-state-dict-v1\n").hexdigest()


def test_one_float32_tensor():
    fp = state_dict_fingerprint({"w": torch.tensor([1.0, -2.0])})
    assert fp == sha(b'["w", "float32", [2], 8]\n' + struct.pack("<2f", 1.0, -2.0))


def test_keys_are_hashed_in_sorted_order_whatever_the_dict_order():
    a, b = torch.tensor([1], dtype=torch.int32), torch.tensor([2], dtype=torch.int32)
    expected = sha(
        b'["a", "int32", [1], 4]\n' + struct.pack("<i", 1),
        b'["b", "int32", [1], 4]\n' + struct.pack("<i", 2),
    )
    assert state_dict_fingerprint({"b": b, "a": a}) == expected
    assert state_dict_fingerprint({"a": a, "b": b}) == expected


def test_a_non_contiguous_tensor_is_hashed_in_its_logical_order():
    t = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).t()
    assert not t.is_contiguous()
    assert state_dict_fingerprint({"t": t}) == sha(b'["t", "float32", [2, 2], 16]\n' + struct.pack("<4f", 1, 3, 2, 4))


def test_an_empty_tensor_has_a_header_and_no_bytes():
    assert state_dict_fingerprint({"e": torch.zeros(2, 0)}) == sha(b'["e", "float32", [2, 0], 0]\n')


def test_a_zero_dimensional_tensor_has_an_empty_shape():
    assert state_dict_fingerprint({"n": torch.tensor(7)}) == sha(b'["n", "int64", [], 8]\n' + struct.pack("<q", 7))


@pytest.mark.filterwarnings("ignore::UserWarning")  # quantized tensors are deprecated
def test_a_quantized_tensor_is_hashed_by_its_stored_integers():
    q = torch.quantize_per_tensor(torch.tensor([0.5, 1.0, -1.5]), scale=0.5, zero_point=0, dtype=torch.qint8)
    assert state_dict_fingerprint({"q": q}) == sha(b'["q", "qint8", [3], 3]\n' + struct.pack("<3b", 1, 2, -3))


@pytest.mark.filterwarnings("ignore::UserWarning")  # sparse invariant checks
def test_a_sparse_tensor_is_hashed_as_its_dense_values():
    sparse = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([5.0, 6.0]), (3,))
    assert state_dict_fingerprint({"s": sparse}) == sha(b'["s", "float32", [3], 12]\n' + struct.pack("<3f", 5, 0, 6))


def test_a_tensor_that_needs_grad_is_hashed_by_its_values():
    p = nn.Parameter(torch.tensor([0.25]))
    assert state_dict_fingerprint({"p": p}) == sha(b'["p", "float32", [1], 4]\n' + struct.pack("<f", 0.25))


def test_the_same_values_in_another_dtype_fingerprint_differently():
    values = [1.0, 2.0]
    f16 = state_dict_fingerprint({"w": torch.tensor(values, dtype=torch.float16)})
    f64 = state_dict_fingerprint({"w": torch.tensor(values, dtype=torch.float64)})
    assert f16 == sha(b'["w", "float16", [2], 4]\n' + struct.pack("<2e", *values))
    assert f64 == sha(b'["w", "float64", [2], 16]\n' + struct.pack("<2d", *values))


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque at 0x1234>"


@pytest.mark.parametrize(
    "value, shown",
    [
        (3, '"3"'),
        (0.5, '"0.5"'),
        ("x", '"\'x\'"'),
        (True, '"True"'),
        (None, '"None"'),
        ([1, 2], '"[1, 2]"'),
        ((1,), '"(1,)"'),
        ({"a": 1}, '"{\'a\': 1}"'),
        (Opaque(), '"Opaque"'),
    ],
)
def test_an_entry_that_is_no_tensor_counts_by_key_and_plain_repr_or_type_name(value, shown):
    line = b'["m._extra_state", "object", ' + shown.encode() + b"]\n"
    assert state_dict_fingerprint({"m._extra_state": value}) == sha(line)


def test_tensors_and_objects_are_sorted_together():
    state = {"z": 1, "a": torch.tensor([True, False])}
    expected = sha(b'["a", "bool", [2], 2]\n' + bytes([1, 0]), b'["z", "object", "1"]\n')
    assert state_dict_fingerprint(state) == expected


def test_a_model_fingerprint_is_its_state_dicts_including_buffers():
    model = nn.BatchNorm1d(1)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.bias.fill_(-1.0)
        model.running_mean.fill_(0.5)
    expected = sha(
        b'["bias", "float32", [1], 4]\n' + struct.pack("<f", -1.0),
        b'["num_batches_tracked", "int64", [], 8]\n' + struct.pack("<q", 0),
        b'["running_mean", "float32", [1], 4]\n' + struct.pack("<f", 0.5),
        b'["running_var", "float32", [1], 4]\n' + struct.pack("<f", 1.0),
        b'["weight", "float32", [1], 4]\n' + struct.pack("<f", 2.0),
    )
    assert model_fingerprint(model) == expected


def test_a_meta_tensor_is_named_in_the_error():
    with pytest.raises(OptionError) as info:
        state_dict_fingerprint({"a": torch.zeros(1), "conv.weight": torch.zeros(2, device="meta")})
    assert info.value.one_line() == (
        "cannot fingerprint the model: 'conv.weight' is on the meta device and has no values; load its weights first"
    )


# -- probe files -------------------------------------------------------------------------------


def test_probe_files_of_paths_hash_each_file_and_skip_what_is_no_file(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.npy"
    first.write_bytes(b"first bytes")
    second.write_bytes(b"")
    found = probe_files([str(first), second, str(tmp_path), str(tmp_path / "missing.png"), 7])
    assert found == [
        ProbeFile(name="a.png", sha256=hashlib.sha256(b"first bytes").hexdigest(), source=str(first)),
        ProbeFile(name="b.npy", sha256=hashlib.sha256(b"").hexdigest(), source=str(second)),
    ]


def test_probe_files_of_one_path_and_of_nothing(tmp_path):
    path = tmp_path / "one.png"
    path.write_bytes(b"\x00\x01")
    assert probe_files(str(path)) == [ProbeFile("one.png", hashlib.sha256(b"\x00\x01").hexdigest(), str(path))]
    assert probe_files(path) == [ProbeFile("one.png", hashlib.sha256(b"\x00\x01").hexdigest(), str(path))]
    assert probe_files(None) == []
    assert probe_files(torch.zeros(1, 3)) == []
    assert probe_files(42) == []


def test_probe_files_of_a_batch_take_its_recorded_hashes_and_fill_gaps():
    batch = SimpleNamespace(names=["a", 3, "c"], sha256=["h1", "h2"], sources=["s1"])
    assert probe_files(batch) == [
        ProbeFile(name="a", sha256="h1", source="s1"),
        ProbeFile(name="3", sha256="h2", source=""),
        ProbeFile(name="c", sha256="", source=""),
    ]
    bare = SimpleNamespace(names=["x"], sha256=None, sources=None)
    assert probe_files(bare) == [ProbeFile(name="x", sha256="", source="")]
    assert probe_files(SimpleNamespace(names=["y"])) == [ProbeFile(name="y", sha256="", source="")]


# -- creation time -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "epoch, expected",
    [("0", "1970-01-01T00:00:00Z"), ("86401", "1970-01-02T00:00:01Z"), (" 1700000000 ", "2023-11-14T22:13:20Z")],
)
def test_source_date_epoch_sets_the_creation_time(monkeypatch, epoch, expected):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    assert creation_time() == expected


@pytest.mark.parametrize("epoch", [None, "", "soon", "-5", "1.5"])
def test_without_a_usable_epoch_the_time_is_now_in_utc_to_the_second(monkeypatch, epoch):
    import datetime as dt

    if epoch is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    text = creation_time()
    after = dt.datetime.now(dt.timezone.utc)
    assert len(text) == 20 and text.endswith("Z") and text[10] == "T"
    moment = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert before <= moment <= after


# -- default and filled provenance -------------------------------------------------------------


def test_default_provenance_holds_the_versions(monkeypatch):
    import platform

    from cnnreport.support.version import __version__

    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])
    prov = default_provenance()
    assert prov.cnnreport_version == __version__
    assert prov.torch_version == torch.__version__
    assert prov.python_version == platform.python_version()
    assert prov.command_line == ""
    assert prov.model_fingerprint == prov.checkpoint_sha256 == prov.created == ""


def test_default_provenance_records_the_cnnreport_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/cnnreport", "model.py:Net", "--out", "r.html"])
    assert default_provenance().command_line == "/usr/bin/cnnreport model.py:Net --out r.html"
    monkeypatch.setattr(sys, "argv", [])
    assert default_provenance().command_line == ""


def blank() -> Provenance:
    return Provenance(cnnreport_version="v", torch_version="t", python_version="p")


def test_fill_provenance_adds_every_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "60")
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"weights")
    probe = tmp_path / "p.png"
    probe.write_bytes(b"probe")
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    prov = blank()
    assert fill_provenance(prov, model, checkpoint_path=ckpt, probes=[str(probe)], timestamp=True) is prov
    assert prov.model_fingerprint == sha(b'["weight", "float32", [1, 1], 4]\n' + struct.pack("<f", 0.5))
    assert prov.checkpoint_path == str(ckpt)
    assert prov.checkpoint_sha256 == hashlib.sha256(b"weights").hexdigest()
    assert prov.probe_files == [ProbeFile("p.png", hashlib.sha256(b"probe").hexdigest(), str(probe))]
    assert prov.created == "1970-01-01T00:01:00Z"


def test_fill_provenance_without_anything_adds_nothing():
    prov = fill_provenance(blank())
    assert prov == blank()
    assert fill_provenance(blank(), checkpoint_path="").checkpoint_path == ""


def test_fill_provenance_keeps_what_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "60")
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"weights")
    prov = blank()
    prov.model_fingerprint, prov.checkpoint_path, prov.checkpoint_sha256 = "fp", "elsewhere.pt", "known"
    prov.probe_files = [ProbeFile("kept", "")]
    prov.created = "yesterday"
    fill_provenance(prov, nn.Linear(1, 1), checkpoint_path=ckpt, probes=[str(ckpt)], timestamp=True)
    assert (prov.model_fingerprint, prov.checkpoint_path, prov.checkpoint_sha256) == ("fp", "elsewhere.pt", "known")
    assert prov.probe_files == [ProbeFile("kept", "")] and prov.created == "yesterday"


def test_fill_provenance_hashes_a_checkpoint_whose_path_was_set_before(tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"abc")
    prov = blank()
    prov.checkpoint_path = "shown/as.pt"
    fill_provenance(prov, checkpoint_path=os.fspath(ckpt))
    assert prov.checkpoint_path == "shown/as.pt"
    assert prov.checkpoint_sha256 == hashlib.sha256(b"abc").hexdigest()


def test_fill_provenance_of_a_missing_checkpoint_says_so(tmp_path):
    missing = tmp_path / "gone.pt"
    with pytest.raises(WeightsError) as info:
        fill_provenance(blank(), checkpoint_path=missing)
    assert info.value.one_line() == f"checkpoint {missing} not found; cannot record its SHA-256"
    with pytest.raises(WeightsError):
        fill_provenance(blank(), checkpoint_path=tmp_path)  # a folder is no checkpoint file


def test_no_timestamp_unless_asked(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "60")
    assert fill_provenance(blank()).created == ""
    assert fill_provenance(blank(), timestamp=True).created == "1970-01-01T00:01:00Z"
