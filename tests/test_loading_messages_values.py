"""Loading errors pinned word for word: truncated and garbage files read as a model or as
weights (trusted and not), a zip that claims to be TorchScript but is none, a damaged
``.safetensors`` file, colour codes in the text torch or a model file raise, a pickled model
whose class is gone, and a zip whose directory cannot be opened.

Where the text comes from torch or safetensors, the test asks the library itself (not
cnnreport) for its first line and spells out the rest of the message here.
"""

from __future__ import annotations

import zipfile

import pytest
import torch

from cnnreport.errors import ModelSpecError, WeightsError
from cnnreport.io.loading import (
    is_torchscript_archive,
    load_model,
    load_weights,
    read_checkpoint,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def library_line(call) -> str:
    """``Type: first non-blank line`` of what *call* raises, straight from the library."""
    with pytest.raises(Exception) as info:
        call()
    lines = [line.strip() for line in str(info.value).splitlines() if line.strip()]
    return f"{type(info.value).__name__}: {lines[0]}"


def truncated_checkpoint(tmp_path):
    """The first half of a real ``torch.save`` zip: no central directory at its end."""
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.arange(6.0)}, whole)
    data = whole.read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


def fake_torchscript(tmp_path):
    """A sound zip with a ``code/`` folder (so it looks like TorchScript) and nothing else torch needs."""
    path = tmp_path / "fake.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/code/__torch__.py", "nothing here")
        archive.writestr("archive/data.pkl", b"junk")
    return path


# -- a truncated torch.save file --------------------------------------------------------------


def test_a_truncated_checkpoint_as_the_model_names_torchs_reason(tmp_path):
    path = truncated_checkpoint(tmp_path)
    reason = library_line(lambda: torch.load(path, map_location="cpu", weights_only=True))
    assert reason.startswith("RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory")
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path))
    assert info.value.message == f"cannot read model file {path}: {reason} (not a TorchScript archive or PyTorch file, or corrupted)"
    assert info.value.hint is None


def test_a_truncated_checkpoint_as_a_trusted_model_has_no_guess_appended(tmp_path):
    path = truncated_checkpoint(tmp_path)
    reason = library_line(lambda: torch.load(path, map_location="cpu", weights_only=False))
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path), trust_checkpoint=True)
    assert info.value.message == f"cannot read model file {path}: {reason}"


def test_a_truncated_checkpoint_as_weights_names_torchs_reason(tmp_path):
    path = truncated_checkpoint(tmp_path)
    reason = library_line(lambda: torch.load(path, map_location="cpu", weights_only=True))
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert info.value.message == f"cannot read weights file {path}: {reason} (not a PyTorch checkpoint, or corrupted)"


# -- garbage bytes ----------------------------------------------------------------------------------


def test_garbage_as_the_model_gives_the_unpicklers_one_line(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a pickle")  # 'n' is pickle opcode 110, which weights_only refuses
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path))
    assert info.value.message == (
        f"cannot read model file {path}: UnpicklingError: Unsupported operand 110 "
        "(not a TorchScript archive or PyTorch file, or corrupted)"
    )


def test_garbage_read_with_trust_gives_pickles_own_message(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a pickle")
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path, trust_checkpoint=True)
    assert info.value.message == (
        f"cannot read weights file {path}: UnpicklingError: invalid load key, 'n'. (not a PyTorch checkpoint, or corrupted)"
    )
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path), trust_checkpoint=True)
    assert info.value.message == f"cannot read model file {path}: UnpicklingError: invalid load key, 'n'."


# -- a zip that looks like TorchScript -----------------------------------------------------------


def test_a_zip_with_code_that_is_no_torchscript_as_the_model(tmp_path):
    path = fake_torchscript(tmp_path)
    reason = library_line(lambda: torch.jit.load(str(path), map_location="cpu"))
    assert reason.startswith('RuntimeError: Expected hasRecord("version") to be true')
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path))
    assert info.value.message == f"cannot load TorchScript archive {path}: {reason}"


def test_a_zip_with_code_that_is_no_torchscript_as_weights(tmp_path):
    path = fake_torchscript(tmp_path)
    reason = library_line(lambda: torch.jit.load(str(path), map_location="cpu"))
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert info.value.message == f"cannot load TorchScript archive {path}: {reason}"


def test_a_zip_whose_directory_cannot_be_opened_is_no_torchscript(tmp_path):
    path = tmp_path / "broken.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/constants.pkl", b"x")
    data = bytearray(path.read_bytes())
    start = data.find(b"PK\x01\x02")  # the central directory's first entry
    data[start + 3] = 0x07  # its signature is wrong now; the end record is still intact
    path.write_bytes(bytes(data))
    assert zipfile.is_zipfile(path) is True
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(path)
    assert is_torchscript_archive(path) is False


# -- safetensors ------------------------------------------------------------------------------------


def test_a_safetensors_name_is_read_as_safetensors_even_when_the_header_is_not(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"this is no safetensors file")  # its first 8 bytes declare a huge header
    reason = library_line(lambda: safetensors.safe_open(str(path), framework="pt", device="cpu"))
    assert reason == "SafetensorError: Error while deserializing header: header too large"
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert info.value.message == f"cannot read safetensors file {path}: {reason}"


# -- colour codes ---------------------------------------------------------------------------------


def test_colour_codes_in_a_refused_global_are_taken_out_of_the_unpicklers_line(tmp_path):
    path = tmp_path / "bold.pt"
    # a pickle naming the class "\x1b[1mevil.Net": "GLOBAL" is not followed by a plain name, so
    # it is not the usual "needs trust" case, and the line names the class without its colour
    path.write_bytes(b"\x80\x02c\x1b[1mevil\nNet\n)\x81.")
    with pytest.raises(WeightsError) as info:
        read_checkpoint(path)
    assert info.value.message == (
        f"cannot read weights file {path}: UnpicklingError: Unsupported global: GLOBAL evil.Net was not "
        "an allowed global by default. Please use `torch.serialization.add_safe_globals([evil.Net])` or the "
        "`torch.serialization.safe_globals([evil.Net])` context manager to allowlist this global if you "
        "trust this class/function. (not a PyTorch checkpoint, or corrupted)"
    )


def test_colour_codes_in_a_model_files_error_are_taken_out(tmp_path):
    path = tmp_path / "loud.py"
    path.write_text('raise ValueError("\\x1b[1;31mwidth must be even\\x1b[0m, got 3")\n', encoding="utf-8")
    with pytest.raises(ModelSpecError) as info:
        load_model(f"{path}:Net")
    assert info.value.message == f"model file {path} does not import: ValueError: width must be even, got 3 (loud.py, line 1)"


# -- a pickled model whose class is gone ------------------------------------------------------------


def test_a_trusted_model_file_naming_a_missing_module_says_what_must_be_importable(tmp_path):
    path = tmp_path / "gone.pt"
    path.write_bytes(b"\x80\x02cno_such_module_for_models\nThing\nq\x00)\x81q\x01.")
    with pytest.raises(ModelSpecError) as info:
        load_model(str(path), trust_checkpoint=True)
    assert info.value.message == f"cannot unpickle model file {path}: ModuleNotFoundError: No module named 'no_such_module_for_models'"
    assert info.value.hint == (
        "the code that defined the model class must be importable; run from the project folder, "
        "or give path/to/file.py:Name with --weights"
    )


def test_the_misfit_message_names_the_weights_file(tmp_path):
    path = tmp_path / "small.pt"
    torch.save({"weight": torch.zeros(1, 1)}, path)
    with pytest.raises(WeightsError) as info:
        load_weights(torch.nn.Linear(1, 1), str(path))
    assert info.value.message == f"weights {path} do not fit Linear: 1 missing key (bias)"
