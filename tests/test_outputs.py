"""Issue 14, items 1, 2 and 9: no output destroys an input, a run's outputs are one set, and an
option the rest of the command makes meaningless is refused.

The CLI runs as a subprocess (``python -m cnnreport.cli``) where exit codes, stderr and signals
matter; every case checks that each file that existed before is byte-identical after, and that
no temporary file is left.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnreport.errors import OutputError
from cnnreport.render import outputs

MODEL_SOURCE = textwrap.dedent(
    """
    import os, time
    import torch
    from torch import nn
    from helper import WIDTH  # a module the model imports: its source is an input too

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, WIDTH, 3, padding=1)
            self.fc = nn.Linear(WIDTH, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    class Slow(Net):
        # Tells the test it is inside the forward pass, then waits to be signalled.
        def forward(self, x):
            marker = os.environ.get("CNNREPORT_TEST_MARKER")
            if marker:
                open(marker, "w").close()
                time.sleep(60)
            return super().forward(x)

    class Broken(Net):
        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)))  # (N, 4, H, W) into Linear(4): fails
    """
)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (symlinks as their target text) -> a hash of its bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text("WIDTH = 4\n")
    (tmp_path / "net.py").write_text(MODEL_SOURCE)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        import helper  # noqa: F401

        importlib.reload(helper)
        spec = importlib.util.spec_from_file_location("cnnreport_test_net", tmp_path / "net.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        torch.save(module.Net().state_dict(), tmp_path / "w.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("helper", None)
    probes = tmp_path / "probes"
    probes.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(probes / f"p{i}.png")
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    (tmp_path / "report.html").write_text("<old report>")
    (tmp_path / "report.json").write_text('{"old": true}')
    return tmp_path


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")]), **(env or {}))
    return subprocess.run([sys.executable, "-m", "cnnreport.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def one_line(done: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cnnreport: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


BASE = ["generate", "net.py:Net", "--weights", "w.pt", "--probes", "probes", "--class-names", "classes.txt", "-q"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "outputs_args, needles",
    [
        (["-o", "w.pt"], ["-o w.pt", "--weights checkpoint w.pt"]),
        (["-o", "net.py"], ["-o net.py", "MODEL file net.py"]),
        (["-o", "helper.py"], ["-o helper.py", "Python module helper"]),
        (["-o", "probes/p1.png"], ["-o probes/p1.png", "probe"]),
        (["-o", "classes.txt"], ["-o classes.txt", "--class-names file"]),
        (["-o", "out.html", "--json", "out.html"], ["--json out.html", "-o out.html", "same file"]),
        (["-o", "out.html", "--markdown", "link-to-json", "--json", "out.json"], ["--markdown link-to-json", "--json out.json", "same file"]),
        (["-o", "link-to-weights"], ["-o link-to-weights", "--weights checkpoint"]),
        (["-o", "hard-link-to-probe"], ["-o hard-link-to-probe", "probe"]),
        (["-o", "probes"], ["'-o'", "directory"]),
        (["-o", "a" * 251 + ".html"], ["over this file system's"]),
        (["-o", "no/such/folder/r.html"], ["does not exist"]),
    ],
)
def test_an_output_that_is_an_input_or_unwritable_is_refused_before_any_work(ws, outputs_args, needles):
    (ws / "link-to-weights").symlink_to("w.pt")
    (ws / "out.json").write_text("{}")
    (ws / "link-to-json").symlink_to("out.json")
    os.link(ws / "probes" / "p2.png", ws / "hard-link-to-probe")
    before = snapshot(ws)
    done = cli([*BASE, *outputs_args], ws)
    one_line(done, 2, *needles)
    assert snapshot(ws) == before


@pytest.mark.slow
def test_diff_and_demo_refuse_an_output_that_is_an_input(ws):
    before = snapshot(ws)
    done = cli(["diff", "--model", "net.py:Net", "--old", "w.pt", "--new", "w.pt", "--probes", "probes", "-o", "r.html", "--json", "w.pt", "-q"], ws)
    one_line(done, 2, "--json w.pt", "--old checkpoint")
    done = cli(["demo", "-o", "d.html", "--markdown", "d.html", "-q"], ws)
    one_line(done, 2, "--markdown d.html", "-o d.html", "same file")
    assert snapshot(ws) == before


def test_the_api_refuses_to_write_over_a_probe_or_a_loaded_module(ws, monkeypatch):
    from cnnreport import generate_report

    monkeypatch.syspath_prepend(str(ws))
    import importlib

    helper = importlib.import_module("helper")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))
    before = snapshot(ws)
    with pytest.raises(OutputError, match="probe"):
        generate_report(model, str(ws / "probes"), output=str(ws / "probes" / "p0.png"))
    with pytest.raises(OutputError, match="Python module helper"):
        generate_report(model, torch.rand(1, 3, 8, 8), output=helper.__file__)
    with pytest.raises(OutputError, match="same file"):
        generate_report(model, torch.rand(1, 3, 8, 8), output=str(ws / "x.html"), json=str(ws / "x.html"))
    assert snapshot(ws) == before
    sys.modules.pop("helper", None)


@pytest.mark.slow
def test_a_long_output_name_that_fits_is_written(ws):
    name = "b" * 250 + ".html"  # 255 bytes: the temporary file's name must still fit
    done = cli([*BASE, "-o", name], ws)
    assert done.returncode == 0, done.stderr
    assert (ws / name).read_text().startswith("<!DOCTYPE html>")
    assert not [p for p in os.listdir(ws) if p.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--input-size", "5", "32", "32"], "--input-size"),
        (["--resize", "stretch"], "--resize"),
        (["--no-attributions", "--saliency"], "--saliency"),
        (["--no-attributions", "--target-class", "1"], "--target-class"),
        (["--no-attributions", "--cam-layer", "conv"], "--cam-layer"),
    ],
)
def test_an_option_the_command_makes_meaningless_is_refused(ws, extra, needle):
    before = snapshot(ws)
    done = cli([*BASE, *extra], ws)
    one_line(done, 2, needle)
    assert snapshot(ws) == before


@pytest.mark.slow
def test_options_that_cannot_apply_are_refused_in_every_command(ws):
    before = snapshot(ws)
    one_line(cli(["generate", "net.py:Net", "--weights-key", "ema", "--probes", "probes", "-q"], ws), 2, "--weights-key", "--weights")
    one_line(cli(["generate", "net.py:Net", "--input-size", "3", "8", "8", "--recursive", "-q"], ws), 2, "--recursive")
    one_line(cli(["diff", "--model", "net.py:Net", "--old", "w.pt", "--new", "w.pt", "--probes", "probes", "--input-size", "3", "8", "8", "-q"], ws), 2, "--input-size")
    one_line(cli(["demo", "--no-attributions", "--saliency", "-q"], ws), 2, "--saliency")
    assert snapshot(ws) == before


# -- one set of outputs ------------------------------------------------------------------------


def test_a_failing_view_leaves_every_output_as_it_was(ws, monkeypatch):
    """The Markdown view fails after the HTML and JSON were rendered: nothing is replaced."""
    from cnnreport import generate_report
    from cnnreport.report import document

    def broken(report):
        raise OutputError("markdown broke")

    monkeypatch.setattr(document, "render_markdown", broken)  # the view Report.write calls
    before = snapshot(ws)
    with pytest.raises(OutputError, match="markdown broke"):
        generate_report(torch.nn.Conv2d(3, 2, 3), torch.rand(1, 3, 8, 8), output=str(ws / "report.html"), json=str(ws / "report.json"), markdown=str(ws / "report.md"))
    assert snapshot(ws) == before


def test_a_rename_that_fails_puts_back_the_files_already_replaced(tmp_path, monkeypatch):
    a, b = tmp_path / "a.html", tmp_path / "b.json"
    a.write_text("old a")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if Path(dst) == b:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OutputError, match="No space left"):
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    assert a.read_text() == "old a"
    assert not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html"]


def test_a_rename_that_fails_over_existing_files_leaves_no_backup_or_temporary_file(tmp_path, monkeypatch):
    # Both outputs exist: each gets a backup before its rename. The second rename fails; the
    # first file is put back from its backup, and the second's backup must not be left behind.
    a, b = tmp_path / "a.html", tmp_path / "b.json"
    a.write_text("old a")
    b.write_text("old b")
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == b:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(OutputError, match="No space left"):
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.json"]


@pytest.mark.parametrize("failing", ["a.html", "b.json"])
def test_a_write_that_fails_while_staging_leaves_no_temporary_file(tmp_path, monkeypatch, failing):
    """The disk fills while a temporary copy is flushed (fsync fails): the run is one error,
    both outputs keep their old bytes, and neither the failed temporary file nor one already
    staged for the other output is left in the folder."""
    a, b = tmp_path / "a.html", tmp_path / "b.json"
    a.write_text("old a")
    b.write_text("old b")
    real_fsync = os.fsync
    calls = []  # the outputs are staged in order: the first fsync is a.html's, the second b.json's

    def fsync(fd):
        calls.append(fd)
        if len(calls) == ["a.html", "b.json"].index(failing) + 1:
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(outputs.os, "fsync", fsync)
    with pytest.raises(OutputError, match="No space left"):
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.json"]
    assert len(calls) == ["a.html", "b.json"].index(failing) + 1


def test_text_that_cannot_be_encoded_leaves_no_temporary_file(tmp_path):
    a = tmp_path / "a.html"
    a.write_text("old a")
    with pytest.raises(OutputError, match="cannot write"):
        outputs.write_output_set([(a, "bad \udc80 surrogate")])
    assert a.read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html"]


def test_a_signal_during_the_renames_waits_until_every_file_is_replaced(tmp_path, monkeypatch):
    a, b = tmp_path / "a.html", tmp_path / "b.json"
    a.write_text("old a")
    b.write_text("old b")
    real_replace = os.replace
    sent = []

    def replace(src, dst):
        if not sent:  # Ctrl-C arrives between the two renames
            sent.append(dst)
            os.kill(os.getpid(), signal.SIGINT)
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt) as caught:
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(caught.value.replaced_outputs) == sorted([str(a), str(b)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.json"]


def test_an_interrupt_while_writing_leaves_no_temporary_file_and_nothing_replaced(tmp_path, monkeypatch):
    a, b = tmp_path / "a.html", tmp_path / "b.json"
    a.write_text("old a")
    real_stage = outputs._stage

    def stage(target, text):
        if target.name == "b.json":
            raise KeyboardInterrupt
        return real_stage(target, text)

    monkeypatch.setattr(outputs, "_stage", stage)
    with pytest.raises(KeyboardInterrupt) as caught:
        outputs.write_output_set([(a, "new a"), (b, "new b")])
    assert caught.value.replaced_outputs == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html"]
    assert a.read_text() == "old a"


def test_sigterm_while_the_outputs_are_written_says_so_and_leaves_none(ws, monkeypatch):
    """SIGTERM between the staging of the HTML and the JSON (the CLI in-process, in the main thread)."""
    from cnnreport.cli.main import main

    real_stage = outputs._stage

    def stage(target, text):
        if target.suffix == ".json":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler raises at the next bytecode
        return real_stage(target, text)

    monkeypatch.setattr(outputs, "_stage", stage)
    monkeypatch.chdir(ws)
    before = snapshot(ws)
    old_handler = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["demo", "-o", "report.html", "--json", "report.json", "-q"], catch_exceptions=False)
    assert signal.getsignal(signal.SIGTERM) == old_handler  # the CLI put the handler back
    assert result.exit_code == 128 + signal.SIGTERM, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["cnnreport: error: interrupted by SIGTERM; no output was written (report.html, report.json left as they were)"]
    assert snapshot(ws) == before


@pytest.mark.slow
def test_sigterm_during_the_forward_pass_ends_cleanly(ws):
    marker = ws / "in-forward"
    before = snapshot(ws)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ws), os.environ.get("PYTHONPATH", "")]), CNNREPORT_TEST_MARKER=str(marker))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnreport.cli", "generate", "net.py:Slow", "--weights", "w.pt", "--probes", "probes", "-o", "report.html", "--json", "report.json", "-q"],
        cwd=ws, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 90
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert [line for line in err.splitlines() if line.strip()] == ["cnnreport: error: interrupted by SIGTERM; no output was written (report.html, report.json left as they were)"]
    marker.unlink()
    assert snapshot(ws) == before


@pytest.mark.slow
def test_when_the_partial_report_cannot_be_written_the_forward_error_still_leads(ws):
    (ws / "report.partial.html").mkdir()  # the partial report's name is taken by a folder
    before = snapshot(ws)
    done = cli(["generate", "net.py:Broken", "--weights", "w.pt", "--probes", "probes", "-o", "report.html", "-q"], ws)
    line = one_line(done, 3, "the partial report report.partial.html could not be written either")
    assert line.index("Linear") < line.index("partial report"), line  # the model's own error first
    assert snapshot(ws) == before


# -- property: every combination of outputs and inputs ----------------------------------------


def _identity(path: Path):
    real = Path(os.path.realpath(path))
    if real.exists():
        st_ = real.stat()
        return ("inode", st_.st_dev, st_.st_ino)
    return ("path", str(real))


POOL = ["fresh.html", "fresh.json", "fresh.md", "w.pt", "net.py", "probes/p0.png", "probes/p1.png", "classes.txt", "ln-w", "hl-p1", "ln-fresh", None]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.tuples(st.sampled_from(POOL), st.sampled_from(POOL), st.sampled_from(POOL)))
def test_plan_outputs_refuses_exactly_the_colliding_combinations(ws, choice):
    if not (ws / "ln-w").exists():
        (ws / "ln-w").symlink_to("w.pt")
        os.link(ws / "probes" / "p1.png", ws / "hl-p1")
        (ws / "ln-fresh").symlink_to("fresh.html")  # dangling until fresh.html exists
    inputs = [("--weights", str(ws / "w.pt")), ("MODEL", str(ws / "net.py")), ("probe", str(ws / "probes")), ("--class-names", str(ws / "classes.txt"))]
    chosen = [(role, str(ws / c)) for role, c in zip(("-o", "--json", "--markdown"), choice) if c is not None]
    input_ids = {_identity(ws / "w.pt"), _identity(ws / "net.py"), _identity(ws / "classes.txt")} | {_identity(p) for p in (ws / "probes").iterdir()}
    ids = [_identity(Path(p)) for _, p in chosen]
    should_refuse = len(set(ids)) < len(ids) or any(i in input_ids for i in ids)
    before = snapshot(ws)
    if should_refuse:
        with pytest.raises(OutputError):
            outputs.plan_outputs(chosen, inputs, folder_suffixes=(".png",), protect_loaded_modules=False)
    else:
        plan = outputs.plan_outputs(chosen, inputs, folder_suffixes=(".png",), protect_loaded_modules=False)
        assert [o.path for o in plan.outputs] == [Path(os.path.realpath(p)) for _, p in chosen]
    assert snapshot(ws) == before


def test_the_api_refuses_options_that_cannot_apply():
    from cnnreport import build_report
    from cnnreport.errors import OptionError

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))
    for bad, flag in (({"saliency": True}, "--saliency"), ({"target_class": 0}, "--target-class"), ({"cam_layer": "0"}, "--cam-layer")):
        with pytest.raises(OptionError, match=f"{flag} has no effect"):
            build_report(model, torch.rand(1, 3, 8, 8), progress=False, attributions=False, **bad)
    with pytest.raises(OptionError, match="input_size"):
        build_report(model, torch.rand(1, 3, 8, 8), input_size=(3, 8, 8), progress=False)


def test_a_built_report_refuses_to_write_over_its_own_inputs(ws, monkeypatch):
    """Report.write and write_html/json/markdown check their paths as generate_report does."""
    from cnnreport import build_report, diff_reports

    monkeypatch.syspath_prepend(str(ws))
    import importlib

    helper = importlib.import_module("helper")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU())
    probe = ws / "probes" / "p0.png"
    report = build_report(model, [str(probe)], progress=False)
    before = snapshot(ws)
    with pytest.raises(OutputError, match="probe"):
        report.write(html=str(probe))
    with pytest.raises(OutputError, match="probe"):
        report.write_json(str(probe))
    with pytest.raises(OutputError, match="Python module helper"):
        report.write_html(helper.__file__)
    with pytest.raises(OutputError, match="same file"):
        report.write(html=str(ws / "b.html"), json=str(ws / "b.html"))
    diff = diff_reports(model, model, [str(probe)])
    with pytest.raises(OutputError, match="probe"):
        diff.write_markdown(str(probe))
    assert snapshot(ws) == before
    assert report.write(html=str(ws / "ok.html"))[0].endswith("ok.html")
    sys.modules.pop("helper", None)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda d: np.save(d / "be.npy", np.arange(3 * 8 * 8, dtype=">f4").reshape(3, 8, 8) / 192.0), None),
        (lambda d: torch.save((torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(3, 8, 8) / 192.0).to_sparse(), d / "sp.pt"), None),
        (lambda d: np.save(d / "one.npy", np.float32(1.0)), "single number"),
        (lambda d: np.save(d / "five.npy", np.zeros((1, 1, 3, 8, 8), np.float32)), "has shape (1, 1, 3, 8, 8)"),
    ],
)
def test_odd_probe_arrays_are_read_exactly_or_refused_in_one_line(tmp_path, make, needle):
    from cnnreport.errors import ProbeError
    from cnnreport.io.probes import load_probes

    make(tmp_path)
    (path,) = list(tmp_path.iterdir())
    if needle is None:  # big-endian and sparse: the same numbers as a plain float32 array
        batch = load_probes(str(path), sample_ndim=3)
        expected = np.arange(3 * 8 * 8, dtype=np.float64).reshape(1, 3, 8, 8) / 192.0
        np.testing.assert_allclose(batch.inputs[0].numpy(), expected, rtol=0, atol=1e-7)
    else:
        with pytest.raises(ProbeError, match=re.escape(needle)):
            load_probes(str(path), sample_ndim=3)


def test_a_std_that_is_zero_in_float32_is_refused():
    from cnnreport.errors import OptionError
    from cnnreport.io.probes import normalisation

    for std in ([1e-300, 1e-300, 1e-300], [1e-45, 1.0, 1.0]):
        with pytest.raises(OptionError, match="--std"):
            normalisation([0.0, 0.0, 0.0], std)
    assert normalisation([0.0], [1e-30]) == ((0.0,), (1e-30,))  # small but representable: taken
