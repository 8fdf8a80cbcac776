"""Provenance: model fingerprints, file hashes, and `verify` against a checkpoint."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cnnreport.cli.verify import verify as verify_command
from cnnreport.errors import OptionError, WeightsError
from cnnreport.io.provenance import (
    PROVENANCE_SCRIPT_ID,
    default_provenance,
    fill_provenance,
    model_fingerprint,
    probe_files,
    read_embedded,
    state_dict_fingerprint,
    verify_report,
)
from cnnreport.render.views import render_html, report_json
from cnnreport.report.pipeline import build_report
from cnnreport.support.hashing import file_sha256


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny().eval()


PROBES = torch.linspace(0, 1, 2 * 8 * 8).reshape(2, 1, 8, 8)


# -- fingerprints ------------------------------------------------------------------------------


def test_fingerprint_is_the_same_for_the_same_tensors_and_differs_for_any_change():
    a, b = tiny(0), tiny(0)
    base = model_fingerprint(a)
    assert len(base) == 64 and base == model_fingerprint(b)
    assert base != model_fingerprint(tiny(1))
    with torch.no_grad():
        b.conv.weight[0, 0, 0, 0] += 1e-6  # one weight, one ulp-ish step
    assert model_fingerprint(b) != base
    c = tiny(0)
    c.bn.running_mean += 0.5  # buffers are part of the state dict
    assert model_fingerprint(c) != base


def test_fingerprint_covers_dtype_shape_and_names():
    t = torch.arange(6, dtype=torch.float32)
    base = state_dict_fingerprint({"w": t})
    assert state_dict_fingerprint({"w": t.reshape(2, 3)}) != base  # same bytes, other shape
    assert state_dict_fingerprint({"v": t}) != base  # same tensor, other name
    assert state_dict_fingerprint({"w": t.double()}) != base  # same values, other dtype
    assert state_dict_fingerprint({"w": t.clone()}) == base  # values, not identity
    # Loading matches tensors by name, so the order a file stored them in does not count
    # (safetensors sorts keys, torch.save keeps the module's order): the same weights match.
    assert state_dict_fingerprint({"a": t, "b": t + 1}) == state_dict_fingerprint({"b": t + 1, "a": t})
    assert state_dict_fingerprint({"a": t, "b": t + 1}) != state_dict_fingerprint({"a": t + 1, "b": t})


def test_fingerprint_tells_dtypes_apart_even_when_the_bytes_are_the_same():
    # A float32 tensor and its int32 view hold the very same bytes, shape and byte count: only
    # the dtype in the header can tell them apart. So do float16/bfloat16, uint8/int8/bool.
    t = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float32)
    assert t.view(torch.int32).numpy().tobytes() == t.numpy().tobytes()
    assert state_dict_fingerprint({"w": t}) != state_dict_fingerprint({"w": t.view(torch.int32)})
    h = torch.tensor([1.0, 2.0], dtype=torch.float16)
    assert state_dict_fingerprint({"w": h}) != state_dict_fingerprint({"w": h.view(torch.bfloat16)})
    u = torch.tensor([0, 1, 1], dtype=torch.uint8)
    fps = {state_dict_fingerprint({"w": u.to(d)}) for d in (torch.uint8, torch.int8, torch.bool)}
    assert len(fps) == 3
    # Same values, float32 against float64: other dtype (and other bytes).
    assert state_dict_fingerprint({"w": t}) != state_dict_fingerprint({"w": t.double()})


def test_fingerprint_is_the_documented_sha256_written_out_with_struct():
    """The documented format, rebuilt with hashlib and struct (no torch bytes): the tag line,
    then per key in sorted order a JSON line [key, dtype, shape, byte count] and the raw
    little-endian bytes."""
    import struct

    state = {
        "w": torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64),
        "b": torch.tensor([3, -1], dtype=torch.int64),
        "h": torch.tensor([1.0], dtype=torch.float16),
    }
    digest = hashlib.sha256(b"cnnreport-state-dict-v1\n")
    digest.update(b'["b", "int64", [2], 16]\n' + struct.pack("<2q", 3, -1))
    digest.update(b'["h", "float16", [1], 2]\n' + struct.pack("<e", 1.0))
    digest.update(b'["w", "float64", [1, 3], 24]\n' + struct.pack("<3d", 1.0, -2.0, 0.5))
    assert state_dict_fingerprint(state) == digest.hexdigest()


def test_fingerprint_handles_bfloat16_bool_scalars_and_non_contiguous_tensors():
    sd = {
        "bf": torch.ones(3, dtype=torch.bfloat16),
        "mask": torch.tensor([True, False]),
        "step": torch.tensor(7),
        "t": torch.arange(6.0).reshape(2, 3).t(),  # non-contiguous view
        "empty": torch.zeros(0),
    }
    assert state_dict_fingerprint(sd) == state_dict_fingerprint({k: v.clone() for k, v in sd.items()})


def test_a_saved_state_dict_has_the_model_fingerprint(tmp_path):
    model = tiny(0)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = torch.load(path, weights_only=True)
    assert state_dict_fingerprint(loaded) == model_fingerprint(model)


def test_meta_tensors_have_no_fingerprint():
    with torch.device("meta"):
        model = Tiny()
    with pytest.raises(OptionError, match="meta device"):
        model_fingerprint(model)


# -- files and fill_provenance -----------------------------------------------------------------


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # several read blocks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_fill_provenance_records_fingerprint_checkpoint_and_probe_files(tmp_path):
    model = tiny(0)
    ckpt = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), ckpt)
    img = tmp_path / "a.png"
    img.write_bytes(b"not really a png, only hashed")
    prov = fill_provenance(default_provenance(), model, checkpoint_path=ckpt, probes=[str(img)])
    assert prov.model_fingerprint == model_fingerprint(model)
    assert prov.checkpoint_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert prov.checkpoint_path == str(ckpt)
    assert [(f.name, f.sha256) for f in prov.probe_files] == [("a.png", hashlib.sha256(img.read_bytes()).hexdigest())]
    assert prov.created == ""  # no timestamp unless asked: output stays reproducible


def test_fill_provenance_keeps_what_is_already_known(tmp_path):
    prov = default_provenance()
    prov.checkpoint_sha256 = "recorded-while-loading"
    prov.checkpoint_path = "given/by/user.pt"
    fill_provenance(prov, tiny(0), checkpoint_path=tmp_path / "elsewhere.pt")
    assert (prov.checkpoint_sha256, prov.checkpoint_path) == ("recorded-while-loading", "given/by/user.pt")


def test_timestamp_only_when_asked_and_source_date_epoch_wins(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    prov = fill_provenance(default_provenance(), None, timestamp=True)
    assert prov.created == "2023-11-14T22:13:20Z"


def test_probe_files_of_a_probe_batch_and_of_tensors(tmp_path):
    import numpy as np
    from PIL import Image

    from cnnreport.io.probes import load_probes

    path = tmp_path / "p.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(path)
    files = probe_files(load_probes(str(path)))
    assert [(f.name, f.sha256) for f in files] == [("p.png", hashlib.sha256(path.read_bytes()).hexdigest())]
    tensor_files = probe_files(load_probes(PROBES))
    assert len(tensor_files) == 2 and all(f.sha256 == "" for f in tensor_files)


# -- verify ------------------------------------------------------------------------------------


@pytest.fixture
def archived(tmp_path):
    """A model, its checkpoint, and the report's JSON and HTML views made from it."""
    model = tiny(0)
    ckpt = tmp_path / "epoch12.pt"
    torch.save(model.state_dict(), ckpt)
    prov = fill_provenance(default_provenance(), model, checkpoint_path=ckpt)
    report = build_report(model, PROBES, provenance=prov, progress=False, attributions=False, graph=False, title="net </script><b>x</b>")
    json_path = tmp_path / "report.json"
    json_path.write_text(report_json(report), encoding="utf-8")
    html_path = tmp_path / "report.html"
    html_path.write_text(render_html(report), encoding="utf-8")
    return model, ckpt, json_path, html_path


def test_verify_matches_the_checkpoint_a_report_was_made_from(archived):
    _, ckpt, json_path, html_path = archived
    for path in (json_path, html_path):
        ok, message = verify_report(path, ckpt)
        assert ok, message
        assert "recorded SHA-256" in message


def test_html_embeds_provenance_as_escaped_json(archived):
    model, _, _, html_path = archived
    html = html_path.read_text(encoding="utf-8")
    assert html.count(f'id="{PROVENANCE_SCRIPT_ID}"') == 1
    # The title's "</script>" must not end the JSON block early.
    block = html.split(f'id="{PROVENANCE_SCRIPT_ID}">', 1)[1].split("</script>", 1)[0]
    data = json.loads(block)
    assert data["provenance"]["model_fingerprint"] == model_fingerprint(model)
    assert read_embedded(html_path)["provenance"] == data["provenance"]


def test_verify_accepts_the_same_tensors_saved_in_another_file(archived, tmp_path):
    model, _, _, html_path = archived
    resaved = tmp_path / "resaved.pt"
    torch.save({"epoch": 12, "model_state_dict": model.state_dict()}, resaved)
    ok, message = verify_report(html_path, resaved)
    assert ok, message
    assert "fingerprint" in message and "file itself differs" in message


@pytest.mark.parametrize("prefix", ["module.module.", "_orig_mod.module.", "module._orig_mod.", "module.module._orig_mod."])
def test_verify_strips_stacked_wrapper_prefixes(archived, tmp_path, prefix):
    # DataParallel around DataParallel, torch.compile around DDP...: every stacked wrapper's
    # prefix comes off, as loading takes them off, and the recorded tensors are found.
    model, _, _, html_path = archived
    wrapped = tmp_path / "wrapped.pt"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, wrapped)
    ok, message = verify_report(html_path, wrapped)
    assert ok, message
    assert "holds the recorded tensors" in message and "file itself differs" in message


def test_verify_rejects_other_weights_with_a_one_line_reason(archived, tmp_path):
    _, _, json_path, _ = archived
    other = tmp_path / "other.pt"
    torch.save(tiny(1).state_dict(), other)
    ok, message = verify_report(json_path, other)
    assert not ok
    assert message.startswith("no match") and "\n" not in message
    assert "epoch12.pt" in message  # says which checkpoint the report records


def test_verify_errors_name_the_bad_input(archived, tmp_path):
    _, ckpt, json_path, _ = archived
    with pytest.raises(WeightsError, match="not found"):
        verify_report(json_path, tmp_path / "missing.pt")
    with pytest.raises(OptionError, match="not found"):
        verify_report(tmp_path / "missing.html", ckpt)
    page = tmp_path / "page.html"
    page.write_text("<html><body>hello</body></html>")
    with pytest.raises(OptionError, match="no cnnreport provenance"):
        verify_report(page, ckpt)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"provenance": {"cnnreport_version": "0.1.0"}}))
    with pytest.raises(OptionError, match="neither a checkpoint SHA-256 nor a model fingerprint"):
        verify_report(bare, ckpt)


def test_verify_command_exit_codes(archived, tmp_path):
    _, ckpt, _, html_path = archived
    runner = CliRunner()
    good = runner.invoke(verify_command, [str(html_path), "--weights", str(ckpt)])
    assert good.exit_code == 0, good.output
    assert "match" in good.output
    other = tmp_path / "other.pt"
    torch.save(tiny(1).state_dict(), other)
    bad = runner.invoke(verify_command, [str(html_path), "--weights", str(other)])
    assert bad.exit_code == 1
    assert bad.output.count("\n") == 1 and "no match" in bad.output
    missing = runner.invoke(verify_command, [str(tmp_path / "nope.html"), "--weights", str(ckpt)])
    assert missing.exit_code == 2
    assert "Traceback" not in missing.output and "not found" in missing.output


def test_verify_matches_the_same_tensors_in_another_order_or_format_or_wrapper(tmp_path):
    from safetensors.torch import save_file

    from cnnreport.io.provenance import verify_report

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    original = tmp_path / "w.pt"
    torch.save(model.state_dict(), original)
    from cnnreport.io.loading import load_weights
    from cnnreport.io.provenance import default_provenance, fill_provenance
    from cnnreport.report.pipeline import build_report

    prov = fill_provenance(default_provenance(), model, checkpoint_path=str(original))
    report = build_report(model, torch.rand(1, 3, 8, 8), provenance=prov, progress=False)
    html = tmp_path / "r.html"
    report.write_html(str(html))
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save(dict(sorted(state.items(), reverse=True)), tmp_path / "reversed.pt")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "ddp.pt")
    for name in ("w.pt", "w.safetensors", "reversed.pt", "ddp.pt"):
        result = verify_report(html, tmp_path / name)
        assert result.ok, (name, result.message)
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    assert not verify_report(html, tmp_path / "other.pt").ok
    # The loader the CLI uses reads each of these files into the same tensors, bit for bit.
    for name in ("w.pt", "w.safetensors", "reversed.pt", "ddp.pt"):
        target = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
        notes = load_weights(target, str(tmp_path / name))
        assert "loaded 4 tensors into Sequential" in notes, (name, notes)
        got, want = target.state_dict(), model.state_dict()
        assert list(got) == list(want)
        for key in want:
            assert torch.equal(got[key], want[key]), (name, key)
