"""`cnnreport verify` cannot be fooled by an edited report, and never crashes on one.

A match needs the checkpoint's tensors to have the fingerprint the report records; a report
that contradicts itself (its JSON block against the hashes the page shows, the file's SHA-256
recorded beside other tensors, a diff's identical_weights against its fingerprints), that
holds two provenance blocks, or one the browser would not read as data, is exit status 2 with
one line saying why. The main cases run the real CLI as a subprocess; their variants run the
same command in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cnnreport.cli.main import main
from cnnreport.io.provenance import default_provenance, fill_provenance
from cnnreport.report.diff import diff_reports
from cnnreport.report.pipeline import build_report, make_options

pytestmark = pytest.mark.slow


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))


def net(seed: int) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


PROBES = torch.linspace(0, 1, 2 * 8 * 8).reshape(2, 1, 8, 8)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two checkpoints (a.pt, b.pt), a report of a.pt in HTML and JSON (and Markdown), and a
    diff a -> b in HTML and JSON."""
    root = tmp_path_factory.mktemp("verify")
    model_a, model_b = net(0), net(1)
    ckpt_a, ckpt_b = root / "a.pt", root / "b.pt"
    torch.save(model_a.state_dict(), ckpt_a)
    torch.save(model_b.state_dict(), ckpt_b)
    prov = fill_provenance(default_provenance(), model_a, checkpoint_path=ckpt_a)
    report = build_report(model_a, PROBES, provenance=prov, progress=False, attributions=False, graph=False, title="verify me")
    report.write_html(str(root / "report.html"))
    report.write_json(str(root / "report.json"))
    report.write_markdown(str(root / "report.md"))
    provs = []
    for ckpt in (ckpt_a, ckpt_b):
        p = default_provenance()
        p.checkpoint_path, p.checkpoint_sha256 = str(ckpt), sha256_of(ckpt)
        provs.append(p)
    options = make_options(None, progress=False)
    diff = diff_reports(model_a, model_b, PROBES, options=options, old_provenance=provs[0], new_provenance=provs[1])
    diff.write_html(str(root / "diff.html"))
    diff.write_json(str(root / "diff.json"))
    return root


class Outcome(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def verify(report: Path, weights: Path, *extra: str, subprocess_: bool = False) -> Outcome:
    """``cnnreport verify REPORT --weights WEIGHTS``: in a subprocess when asked (the exit
    status and stderr a shell sees), else in-process through click's runner (same command,
    same exit code and stderr, without importing torch again for each case)."""
    args = ["verify", str(report), "--weights", str(weights), *extra]
    if not subprocess_:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        return Outcome(result.exit_code, result.stdout, result.stderr)
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    done = subprocess.run([sys.executable, "-m", "cnnreport.cli", *args], capture_output=True, text=True, env=env, timeout=300)
    return Outcome(done.returncode, done.stdout, done.stderr)


def refused(result: Outcome, *needles: str) -> None:
    """Exit 2, exactly one stderr line naming the reason, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cnnreport: error: "), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def edited(made: Path, name: str, new_name: str, edit) -> Path:
    text = (made / name).read_text(encoding="utf-8")
    changed = edit(text)
    assert changed != text, "the edit changed nothing: the test would prove nothing"
    path = made / new_name
    path.write_text(changed, encoding="utf-8")
    return path


def block_of(html: str) -> tuple[str, str]:
    """The provenance block's full element and its JSON text."""
    match = re.search(r'<script type="application/json" id="cnnreport-provenance">(.*?)</script>', html, re.S)
    assert match is not None
    return match.group(0), match.group(1)


def with_block(html: str, change) -> str:
    element, text = block_of(html)
    data = json.loads(text)
    change(data)
    return html.replace(element, element.replace(text, json.dumps(data)))


# -- honest reports: match and no match --------------------------------------------------------


@pytest.mark.parametrize("name", ["report.html", "report.json"])
def test_honest_report_matches_its_checkpoint_and_not_another(made, name):
    good = verify(made / name, made / "a.pt", subprocess_=name.endswith(".html"))
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("cnnreport: match: ") and "SHA-256" in good.stdout
    other = verify(made / name, made / "b.pt", subprocess_=name.endswith(".html"))
    assert other.returncode == 1, other.stderr
    assert other.stderr.count("\n") == 1 and other.stderr.startswith("cnnreport: error: no match")


@pytest.mark.parametrize("name", ["diff.html", "diff.json"])
def test_diff_matches_each_side(made, name):
    for ckpt, side in (("a.pt", "old side"), ("b.pt", "new side")):
        result = verify(made / name, made / ckpt)
        assert result.returncode == 0, result.stderr
        assert side in result.stdout


def test_markdown_view_is_refused_saying_it_carries_no_provenance(made):
    refused(verify(made / "report.md", made / "a.pt", subprocess_=True), "Markdown", "no provenance")


# -- the reported attacks --------------------------------------------------------------------------


def test_editing_only_the_checkpoint_sha256_does_not_make_other_weights_match(made):
    sha_b = sha256_of(made / "b.pt")
    page = edited(made, "report.html", "sha-only.html", lambda t: with_block(t, lambda d: d["provenance"].update(checkpoint_sha256=sha_b)))
    refused(verify(page, made / "b.pt", subprocess_=True), "checkpoint_sha256", "page shows")

    def edit_json(text):
        data = json.loads(text)
        data["provenance"]["checkpoint_sha256"] = sha_b
        return json.dumps(data)

    view = edited(made, "report.json", "sha-only.json", edit_json)
    # The JSON view shows no footer; the file's SHA-256 beside another model's fingerprint is
    # the contradiction.
    refused(verify(view, made / "b.pt"), "SHA-256", "fingerprint", "edited")


def test_fingerprint_edited_beside_the_true_files_sha256_is_a_contradiction(made):
    def edit_json(text):
        data = json.loads(text)
        data["provenance"]["model_fingerprint"] = "0" * 64
        return json.dumps(data)

    view = edited(made, "report.json", "fp-only.json", edit_json)
    refused(verify(view, made / "a.pt"), "fingerprint", "edited")


def test_block_and_footer_disagree_when_both_hashes_of_the_block_are_edited(made):
    sha_b = sha256_of(made / "b.pt")

    def to_b(data):
        from cnnreport.io.provenance import model_fingerprint

        data["provenance"].update(checkpoint_sha256=sha_b, model_fingerprint=model_fingerprint(net(1)))

    page = edited(made, "report.html", "both.html", lambda t: with_block(t, to_b))
    refused(verify(page, made / "b.pt"), "page shows")


def test_a_second_provenance_block_is_refused_whichever_comes_first(made):
    html = (made / "report.html").read_text(encoding="utf-8")
    element, _ = block_of(with_block(html, lambda d: d["provenance"].update(model_fingerprint="1" * 64)))
    before = edited(made, "report.html", "two-first.html", lambda t: t.replace("<head>", "<head>\n" + element, 1))
    after = edited(made, "report.html", "two-last.html", lambda t: t.replace("</body>", element + "</body>", 1))
    for page in (before, after):
        refused(verify(page, made / "a.pt"), "2 elements")


@pytest.mark.parametrize(
    "wrap, needle",
    [
        (lambda e: f"<noscript>{e}</noscript>", "<noscript>"),
        (lambda e: f"<!-- {e} -->", "comment"),
        (lambda e: f"<template>{e}</template>", "<template>"),
        (lambda e: f"<svg>{e}</svg>", "svg"),
        (lambda e: f"<textarea>{e}</textarea>", "<textarea>"),
    ],
    ids=["noscript", "comment", "template", "svg", "textarea"],
)
def test_a_block_the_browser_does_not_read_as_data_is_refused(made, wrap, needle):
    html = (made / "report.html").read_text(encoding="utf-8")
    element, _ = block_of(html)
    # Moved: the only block is now where a browser does not see it.
    moved = edited(made, "report.html", "moved.html", lambda t: t.replace(element, wrap(element), 1))
    refused(verify(moved, made / "a.pt"), needle)


def test_a_hidden_copy_beside_the_real_block_is_refused(made):
    html = (made / "report.html").read_text(encoding="utf-8")
    element, _ = block_of(html)
    page = edited(made, "report.html", "hidden-copy.html", lambda t: t.replace("</body>", f"<noscript>{element}</noscript></body>", 1))
    refused(verify(page, made / "a.pt"), "2 elements")


@pytest.mark.parametrize(
    "old, new",
    [
        ('<script type="application/json" id="cnnreport-provenance">', '<script type="text/plain" id="cnnreport-provenance">'),
        ('<script type="application/json" id="cnnreport-provenance">', '<script id="cnnreport-provenance">'),
        ('<script type="application/json" id="cnnreport-provenance">', '<div id="cnnreport-provenance"><script type="application/json" id="cnnreport-provenance">'),
        ('<meta name="generator"', '<!-- -- > --><meta name="generator"'),
        ("<body>", "<body></ x>"),
    ],
    ids=["other-type", "no-type", "id-twice", "odd-comment", "odd-end-tag"],
)
def test_blocks_of_another_kind_or_markup_parsers_disagree_on_are_refused(made, old, new):
    page = edited(made, "report.html", "kind.html", lambda t: t.replace(old, new, 1))
    refused(verify(page, made / "a.pt"))


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda d: d.update(provenance="a string"), "not an object"),
        (lambda d: d["provenance"].update(checkpoint_sha256=12345), "checkpoint_sha256"),
        (lambda d: d["provenance"].update(model_fingerprint=["x"]), "model_fingerprint"),
        (lambda d: d["provenance"].update(model_fingerprint="ABC"), "64 lower-case hex"),
        (lambda d: d["provenance"].update(checkpoint_path={"x": 1}), "checkpoint_path"),
        (lambda d: d.update(kind="diff"), "kind"),
        (lambda d: d.update(old={"provenance": {}}), "both"),
    ],
    ids=["provenance-string", "sha-number", "fp-list", "fp-not-hex", "path-object", "kind", "report-and-diff"],
)
def test_malformed_provenance_is_one_line_exit_2(made, change, needle):
    for name in ("report.html", "report.json"):
        if name.endswith(".json"):

            def edit(text):
                data = json.loads(text)
                change(data)
                return json.dumps(data)

        else:

            def edit(text):
                return with_block(text, change)

        refused(verify(edited(made, name, "bad-" + name, edit), made / "a.pt", subprocess_=needle == "not an object"), needle)


def test_broken_json_duplicate_keys_and_non_objects_are_one_line_exit_2(made):
    text = (made / "report.json").read_text(encoding="utf-8")
    cases = {
        "truncated.json": text[: len(text) // 2],
        "list.json": "[1, 2]",
        "dup.json": text.replace('"provenance": {', '"provenance": {"model_fingerprint": "' + "0" * 64 + '", ', 1),
    }
    needles = {"truncated.json": "not valid JSON", "list.json": "list", "dup.json": "twice"}
    for name, body in cases.items():
        assert body != text
        (made / name).write_text(body, encoding="utf-8")
        refused(verify(made / name, made / "a.pt"), needles[name])
    page = edited(made, "report.html", "bad-block.html", lambda t: t.replace('id="cnnreport-provenance">{', 'id="cnnreport-provenance">{,', 1))
    refused(verify(page, made / "a.pt"), "not valid JSON")


def test_diff_json_whose_identical_weights_contradicts_its_fingerprints_is_refused(made):
    def edit(text):
        data = json.loads(text)
        assert data["identical_weights"] is False  # a and b differ
        data["identical_weights"] = True
        return json.dumps(data)

    refused(verify(edited(made, "diff.json", "same.json", edit), made / "a.pt"), "identical_weights")


def test_unreadable_inputs_are_one_line_exit_2(made, tmp_path):
    refused(verify(tmp_path, made / "a.pt", subprocess_=True), "not a file")
    refused(verify(tmp_path / "missing.html", made / "a.pt"), "not found")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00 not a checkpoint " * 10)
    refused(verify(made / "report.html", garbage), "garbage.pt")
    refused(verify(made / "report.html", tmp_path), "not a file")


def test_keys_and_numbers_cnnreport_never_writes_are_refused(made):
    """An extra key could carry a second fingerprint; NaN or 1e999 are not in strict JSON."""
    other = "b" * 64
    page = edited(made, "report.html", "extra-key.html", lambda t: with_block(t, lambda d: d["provenance"].update(extra_fp=other)))
    refused(verify(page, made / "a.pt"), '"extra_fp"', "never writes")
    page = edited(made, "report.html", "extra-probe-key.html", lambda t: with_block(t, lambda d: d["provenance"]["probe_files"][0].update(fp=other)))
    refused(verify(page, made / "a.pt"), "probe_files[0]")
    text = (made / "report.json").read_text(encoding="utf-8")
    for name, body, needle in (
        ("nan.json", text.replace('"schema_version": 1', '"schema_version": NaN', 1), "NaN"),
        ("huge.json", text.replace('"schema_version": 1', '"schema_version": 1e999999', 1), "1e999999"),
    ):
        assert body != text
        (made / name).write_text(body, encoding="utf-8")
        refused(verify(made / name, made / "a.pt"), needle)
