"""Reading provenance back, pinned on small pages and JSON views written out in the test, and
``verify_report`` against checkpoints whose SHA-256 and fingerprint are computed here with
hashlib.

Each case calls :func:`read_embedded` or :func:`verify_report` directly, so every check
reaches the parsing and comparing code it is about.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch

from cnnreport.errors import ProvenanceError, WeightsError
from cnnreport.io.provenance import read_embedded, verify_report

FP = "a" * 64
SHA = "b" * 64
OPEN = '<script type="application/json" id="cnnreport-provenance">'


def report_data(**prov) -> dict:
    return {"kind": "report", "provenance": {"cnnreport_version": "0.1", **prov}}


def page(data, shown: dict[str, str] | None = None, before: str = "", after: str = "") -> str:
    """A page like cnnreport's: the JSON block in the head, the hashes shown in the footer."""
    text = data if isinstance(data, str) else json.dumps(data)
    footer = "".join(f'<dd><code data-provenance="{k}">{v}</code></dd>' for k, v in (shown or {}).items())
    return (
        f"<!doctype html><html><head>{OPEN}{text}</script><title>t</title></head>"
        f"<body>{before}<footer>{footer}</footer>{after}</body></html>"
    )


def write(tmp_path: Path, text: str, name: str = "report.html") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path) -> str:
    with pytest.raises(ProvenanceError) as info:
        read_embedded(path)
    return info.value.one_line()


# -- pages that are read --------------------------------------------------------------------------


def test_a_page_gives_its_block_with_the_hashes_it_shows(tmp_path):
    data = report_data(model_fingerprint=FP, checkpoint_sha256=SHA)
    path = write(tmp_path, page(data, {"model_fingerprint": FP, "checkpoint_sha256": f"  {SHA}\n"}))
    assert read_embedded(path) == data


def test_a_page_without_hashes_needs_to_show_none(tmp_path):
    data = report_data()
    assert read_embedded(write(tmp_path, page(data))) == data


def test_a_block_without_kind_is_a_report_by_its_provenance(tmp_path):
    data = {"provenance": {}}
    assert read_embedded(write(tmp_path, page(data))) == {"provenance": {}, "kind": "report"}


def test_a_diff_page_shows_each_sides_hashes(tmp_path):
    data = {"old": {"provenance": {"model_fingerprint": FP}}, "new": {"provenance": {"checkpoint_sha256": SHA}}}
    path = write(tmp_path, page(data, {"old.model_fingerprint": FP, "new.checkpoint_sha256": SHA}))
    assert read_embedded(path) == {**data, "kind": "diff"}


def test_a_json_view_is_read_with_a_byte_order_mark_and_leading_space(tmp_path):
    data = report_data(model_fingerprint=FP)
    path = tmp_path / "report.json"
    path.write_bytes(b"\xef\xbb\xbf \n" + json.dumps(data).encode())
    assert read_embedded(path) == data


def test_comments_and_other_scripts_without_the_id_are_fine(tmp_path):
    data = report_data()
    text = page(data, before="<!-- a note --><script>var x = 1;</script><template><p>t</p></template><svg></svg>")
    assert read_embedded(write(tmp_path, text)) == data


def test_a_shown_hash_inside_a_template_does_not_count(tmp_path):
    data = report_data()
    text = page(data, before=f'<template><code data-provenance="model_fingerprint">{FP}</code></template>')
    assert read_embedded(write(tmp_path, text)) == data


# -- what cannot be read at all ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["report.md", "REPORT.MD", "notes.markdown"])
def test_a_markdown_view_is_refused_by_its_suffix(tmp_path, name):
    path = write(tmp_path, "# report", name)
    assert refused(path) == (
        f"{path} is a Markdown view, which carries no provenance; verify the HTML report or its JSON view (--json) instead"
    )


def test_a_missing_report_and_a_folder(tmp_path):
    assert refused(tmp_path / "none.html") == f"report {tmp_path / 'none.html'} not found"
    assert refused(tmp_path) == f"report {tmp_path} is not a file"


def test_text_that_is_neither_a_page_nor_json(tmp_path):
    path = write(tmp_path, "plain words", "r.txt")
    assert refused(path) == (
        f"{path} is neither a cnnreport HTML page nor a JSON view (a Markdown view carries no provenance)"
    )


def test_a_page_without_a_block(tmp_path):
    path = write(tmp_path, "<html><body>hello</body></html>")
    assert refused(path) == (
        f"{path} carries no cnnreport provenance block (id='cnnreport-provenance'); was it made by cnnreport 0.1 or later?"
    )


# -- markup cnnreport never writes ------------------------------------------------------------------


@pytest.mark.parametrize("tag", ['<script src="x.js">', "<SCRIPT >", "<script/>", '<script type="module">'])
def test_a_script_tag_of_another_form_is_refused(tmp_path, tag):
    path = write(tmp_path, page(report_data(), before=tag + "</script>"))
    assert refused(path) == (
        f"{path} has a script tag cnnreport never writes ({tag!r}), so where its provenance block ends is "
        "not certain; the page was edited"
    )


def test_an_unclosed_script_tag_shows_its_first_60_characters(tmp_path):
    text = page(report_data()) + "<script " + "x" * 80
    path = write(tmp_path, text)
    shown = ("<script " + "x" * 80)[:60]
    assert f"({shown!r})" in refused(path)


@pytest.mark.parametrize("odd", ["</ x>", "-- >", "--!>", "<!-->", "<!--->", "</title x>", "</STYLE\t>"])
def test_markup_that_parsers_end_differently_is_refused(tmp_path, odd):
    path = write(tmp_path, page(report_data(), before=f"<p>{odd}</p>"))
    assert refused(path) == (
        f"{path} holds {(odd + '</p><footer></footer></body></html>')[:20]!r}, markup cnnreport never writes and "
        "that parsers end differently, so which provenance block a browser sees is not certain; the page was edited"
    )


@pytest.mark.parametrize("attr", ["id", "type", "data-provenance"])
def test_an_attribute_given_twice_on_a_tag_that_matters_is_refused(tmp_path, attr):
    path = write(tmp_path, page(report_data(), before=f'<div {attr}="a" {attr}="b"></div>'))
    assert refused(path) == (
        f"{path}: a <div> has two {attr!r} attributes; cnnreport never writes that, so the page was edited"
    )


def test_another_attribute_given_twice_is_harmless(tmp_path):
    data = report_data()
    assert read_embedded(write(tmp_path, page(data, before='<div class="a" class="b"></div>'))) == data


def test_two_blocks_are_refused_naming_where_each_sits(tmp_path):
    second = '<div id="cnnreport-provenance"></div>'
    path = write(tmp_path, page(report_data(), before=second))
    assert refused(path) == (
        f"{path} has 2 elements with id='cnnreport-provenance' (<script> in the page; <div> in the page); "
        "a report has one, so it was edited"
    )


def test_at_most_three_places_are_named(tmp_path):
    extra = "".join(f'<p id="cnnreport-provenance">{i}</p>' for i in range(4))
    message = refused(write(tmp_path, page(report_data(), before=extra)))
    assert "has 5 elements" in message
    assert message.count("in the page") == 3


@pytest.mark.parametrize(
    "wrap, where",
    [
        ("<template>{}</template>", "inside a <template>, whose content is not part of the page"),
        ("<svg>{}</svg>", "inside <svg>/<math>, where a <script> is not a data block"),
        ("<math>{}</math>", "inside <svg>/<math>, where a <script> is not a data block"),
        ("<!--{}-->", "inside an HTML comment"),
        ("<textarea>{}</textarea>", "inside <textarea>, which the browser reads as text"),
        ("<noscript>{}</noscript>", "inside <noscript>, which the browser reads as text"),
    ],
)
def test_a_block_where_the_browser_does_not_read_it_as_data_is_refused(tmp_path, wrap, where):
    block = f"{OPEN}{json.dumps(report_data())}</script>"
    text = "<!doctype html><html><body>" + wrap.format(block) + "</body></html>"
    path = write(tmp_path, text)
    assert refused(path) == f"{path}: its provenance block is {where}, so the browser does not read it as data"


def test_a_block_inside_a_closed_template_is_hidden_but_one_after_it_is_not(tmp_path):
    data = report_data()
    text = f"<html><body><template><p>x</p></template>{OPEN}{json.dumps(data)}</script></body></html>"
    assert read_embedded(write(tmp_path, text)) == data
    after_svg = f"<html><body><svg><g></g></svg>{OPEN}{json.dumps(data)}</script></body></html>"
    assert read_embedded(write(tmp_path, after_svg, "b.html")) == data


def test_a_block_that_is_a_list_is_no_report(tmp_path):
    path = write(tmp_path, page("[1]"))
    assert refused(path) == f"{path}: the provenance block is a JSON list, not a cnnreport report"


def test_an_escaped_copy_inside_a_title_is_text_and_a_literal_one_is_found(tmp_path):
    escaped = "&lt;p id=&quot;cnnreport-provenance&quot;&gt;"
    data = report_data()
    text = page(data).replace("<title>t</title>", f"<title>{escaped}</title>")
    assert read_embedded(write(tmp_path, text)) == data
    text = page(data).replace("<title>t</title>", '<title><p id="cnnreport-provenance"></title>')
    message = refused(write(tmp_path, text))
    assert "has 2 elements" in message
    assert "<p> inside <title>, which the browser reads as text" in message


def test_markup_nested_too_deep_is_refused(tmp_path):
    inner = '<p id="cnnreport-provenance">'
    for tag in ("noembed", "xmp", "style", "title", "textarea"):
        inner = f"<{tag}>{inner}</{tag}>"
    path = write(tmp_path, page(report_data(), before=inner))
    assert refused(path) == f"{path}: markup nested too deep to read; cnnreport never writes that, so the page was edited"


def test_a_block_that_is_no_script_is_refused(tmp_path):
    text = f'<html><body><div id="cnnreport-provenance">{json.dumps(report_data())}</div></body></html>'
    path = write(tmp_path, text)
    assert refused(path) == (
        f"{path}: the element with id='cnnreport-provenance' is not a <script type=\"application/json\"> data block"
    )


def test_a_less_than_sign_in_the_block_is_refused(tmp_path):
    path = write(tmp_path, page('{"provenance": {"command_line": "a<b"}}'))
    assert refused(path) == (
        f"{path}: the provenance block contains '<', which cnnreport's JSON never does; the page was edited"
    )


def test_a_block_left_open_is_still_the_block(tmp_path):
    # an element left open runs to the end of the file: the block is found (its text, which
    # this Python's parser holds back, is then no JSON), not reported missing
    path = write(tmp_path, f"<html><body>{OPEN}" + json.dumps(report_data()))
    assert refused(path) == f"{path}: the provenance block is not valid JSON (Expecting value at line 1 column 1)"


# -- the block against the hashes the page shows -----------------------------------------------------


def test_a_recorded_hash_the_page_does_not_show(tmp_path):
    path = write(tmp_path, page(report_data(model_fingerprint=FP)))
    assert refused(path) == (
        f"{path}: the provenance block records model_fingerprint aaaaaaaaaaaa but the page does not show it "
        "(the page was edited, or made by a cnnreport older than its verify: generate it again)"
    )


def test_a_shown_hash_that_differs_from_the_block(tmp_path):
    path = write(tmp_path, page(report_data(checkpoint_sha256=SHA), {"checkpoint_sha256": "c" * 64}))
    assert refused(path) == (
        f"{path}: the provenance block records checkpoint_sha256 bbbbbbbbbbbb but the page shows "
        '"cccccccccccccccccccccccccccccccccccc...; the report was edited'
    )


def test_a_shown_hash_the_block_leaves_empty(tmp_path):
    path = write(tmp_path, page(report_data(), {"model_fingerprint": FP}))
    assert refused(path) == (
        f"{path}: the provenance block records model_fingerprint (none) but the page shows "
        '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...; the report was edited'
    )


def test_a_shown_field_the_block_does_not_know(tmp_path):
    path = write(tmp_path, page(report_data(), {"old.model_fingerprint": FP}))
    assert refused(path) == (
        f"{path}: the page shows old.model_fingerprint \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..., which its "
        "provenance block does not record; the report was edited"
    )


# -- the JSON itself ------------------------------------------------------------------------------


def json_refused(tmp_path: Path, text: str) -> str:
    return refused(write(tmp_path, text, "r.json"))


def test_a_key_given_twice_in_the_json(tmp_path):
    path = tmp_path / "r.json"
    message = json_refused(tmp_path, '{"provenance": {}, "provenance": {}}')
    assert message == (
        f"{path}: the key 'provenance' appears twice in one object; cnnreport never writes that, so the report was edited"
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants(tmp_path, constant):
    message = json_refused(tmp_path, '{"provenance": {}, "x": %s}' % constant)
    assert message == (
        f"{tmp_path / 'r.json'}: it holds the non-JSON constant {constant}; cnnreport never writes that, so the report was edited"
    )


def test_a_number_beyond_any_float(tmp_path):
    message = json_refused(tmp_path, '{"provenance": {}, "x": 1.5e999999999999999999999}')
    assert message == (
        f"{tmp_path / 'r.json'}: it holds the number 1.5e9999999999999999, beyond any float cnnreport writes; "
        "cnnreport never writes that, so the report was edited"
    )


def test_finite_floats_are_fine(tmp_path):
    assert read_embedded(write(tmp_path, '{"provenance": {}, "x": 2.5}', "r.json"))["x"] == 2.5


def test_broken_json_names_the_line_and_column(tmp_path):
    message = json_refused(tmp_path, '{"provenance":\n {]')
    assert message == f"{tmp_path / 'r.json'} is not valid JSON (Expecting property name enclosed in double quotes at line 2 column 3)"


def test_json_nested_too_deep(tmp_path):
    message = json_refused(tmp_path, '{"a": ' + "[" * 100000 + "]" * 100000 + "}")
    assert message == f"{tmp_path / 'r.json'} is JSON nested too deep to be a cnnreport report"


@pytest.mark.parametrize(
    "data, reason",
    [
        ({"title": "x"}, "is not a cnnreport report (no provenance in it)"),
        ({"provenance": {}, "old": {}}, "holds both a report's provenance and a diff's old/new sides; cnnreport writes one or the other"),
        ({"provenance": {}, "new": {}}, "holds both a report's provenance and a diff's old/new sides; cnnreport writes one or the other"),
        ({"kind": "diff", "provenance": {}}, "says kind \"diff\" but holds a report's provenance"),
        ({"kind": "report", "old": {"provenance": {}}, "new": {"provenance": {}}}, "says kind \"report\" but holds a diff's provenance"),
        ({"old": {"provenance": {}}}, "the diff's 'new' side is null, not an object"),
        ({"old": [], "new": {"provenance": {}}}, "the diff's 'old' side is [], not an object"),
    ],
)
def test_structures_cnnreport_never_writes(tmp_path, data, reason):
    path = tmp_path / "r.json"
    message = json_refused(tmp_path, json.dumps(data))
    sep = ": " if reason.startswith("the diff") else " "
    assert message == f"{path}{sep}{reason}"


@pytest.mark.parametrize(
    "prov, reason",
    [
        ([], "provenance is a JSON list, not an object"),
        ({"model_fingerprint": "A" * 64}, 'provenance.model_fingerprint is "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA..., not a SHA-256 (64 lower-case hex digits)'),
        ({"checkpoint_sha256": "b" * 63}, 'provenance.checkpoint_sha256 is "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb..., not a SHA-256 (64 lower-case hex digits)'),
        ({"checkpoint_sha256": 5}, "provenance.checkpoint_sha256 is 5, not a SHA-256 (64 lower-case hex digits)"),
        ({"torch_version": 2}, "provenance.torch_version is 2, not a string"),
        ({"created": None}, "provenance.created is null, not a string"),
        ({"probe_files": {}}, "provenance.probe_files is {}, not a list"),
        ({"second_fingerprint": FP}, 'provenance has the key "second_fingerprint", which cnnreport never writes, so the report was edited'),
        ({"probe_files": [{"name": "a", "sha256": ""}, {"name": "b", "extra": 1}]},
         'provenance.probe_files[1] is {"name": "b", "extra": 1}, not a probe file entry cnnreport writes, so the report was edited'),
        ({"probe_files": ["a.png"]}, 'provenance.probe_files[0] is "a.png", not a probe file entry cnnreport writes, so the report was edited'),
    ],
)
def test_malformed_provenance_fields(tmp_path, prov, reason):
    assert json_refused(tmp_path, json.dumps({"provenance": prov})) == reason


def test_an_empty_hash_and_every_known_field_are_accepted(tmp_path):
    prov = {"cnnreport_version": "1", "torch_version": "2", "python_version": "3", "model_fingerprint": "",
            "checkpoint_sha256": SHA, "checkpoint_path": "w.pt", "command_line": "c", "created": "",
            "probe_files": [{"name": "a", "sha256": "", "source": ""}]}
    assert read_embedded(write(tmp_path, json.dumps({"provenance": prov}), "r.json"))["provenance"] == prov


def test_a_diff_side_with_malformed_provenance_names_the_side(tmp_path):
    data = {"old": {"provenance": {}}, "new": {"provenance": {"model_fingerprint": 1}}}
    assert json_refused(tmp_path, json.dumps(data)) == "new.provenance.model_fingerprint is 1, not a SHA-256 (64 lower-case hex digits)"


def diff_json(old_fp: str, new_fp: str, identical) -> str:
    return json.dumps({"old": {"provenance": {"model_fingerprint": old_fp}},
                       "new": {"provenance": {"model_fingerprint": new_fp}}, "identical_weights": identical})


@pytest.mark.parametrize("old_fp, new_fp, identical", [(FP, FP, True), (FP, "c" * 64, False), ("", "", False)])
def test_identical_weights_that_restate_the_fingerprints_are_read(tmp_path, old_fp, new_fp, identical):
    path = write(tmp_path, diff_json(old_fp, new_fp, identical), "d.json")
    assert read_embedded(path)["identical_weights"] is identical


@pytest.mark.parametrize(
    "old_fp, new_fp, identical, shown",
    [(FP, FP, False, "aaaaaaaaaaaa and aaaaaaaaaaaa"), (FP, "c" * 64, True, "aaaaaaaaaaaa and cccccccccccc"),
     ("", "", True, "(none) and (none)")],
)
def test_identical_weights_that_contradict_the_fingerprints_are_refused(tmp_path, old_fp, new_fp, identical, shown):
    path = write(tmp_path, diff_json(old_fp, new_fp, identical), "d.json")
    assert refused(path) == (
        f"{path} says identical_weights is {json.dumps(identical)}, but its old and new model fingerprints are "
        f"{shown}; the report was edited"
    )


def test_identical_weights_must_be_a_boolean(tmp_path):
    data = {"old": {"provenance": {"model_fingerprint": FP}}, "new": {"provenance": {"model_fingerprint": FP}},
            "identical_weights": 1}
    assert "says identical_weights is 1" in refused(write(tmp_path, json.dumps(data), "d.json"))


# -- verify_report --------------------------------------------------------------------------------


def fingerprint_of(state: dict[str, torch.Tensor]) -> str:
    """The documented format for float32 tensors, key by key in sorted order."""
    digest = hashlib.sha256(b"cnnreport-state-dict-v1\n")
    for key in sorted(state):
        values = state[key].flatten().tolist()
        header = json.dumps([key, "float32", list(state[key].shape), 4 * len(values)])
        digest.update(header.encode() + b"\n" + struct.pack(f"<{len(values)}f", *values))
    return digest.hexdigest()


STATE = {"conv.weight": torch.tensor([[0.5, -1.0]]), "conv.bias": torch.tensor([2.0])}


@pytest.fixture
def ckpt(tmp_path) -> Path:
    path = tmp_path / "w.pt"
    torch.save(STATE, path)
    return path


def json_report(tmp_path: Path, name: str = "r.json", **prov) -> Path:
    return write(tmp_path, json.dumps(report_data(**prov)), name)


def test_verify_matches_the_file_and_its_tensors(tmp_path, ckpt):
    fp, sha = fingerprint_of(STATE), hashlib.sha256(ckpt.read_bytes()).hexdigest()
    result = verify_report(json_report(tmp_path, model_fingerprint=fp, checkpoint_sha256=sha), ckpt)
    assert result.ok is True
    assert result.message == (
        f"match: {ckpt} has the recorded SHA-256 {sha[:12]} and the recorded tensors (model fingerprint {fp[:12]})"
    )


def test_verify_matches_the_tensors_of_another_file(tmp_path, ckpt):
    fp = fingerprint_of(STATE)
    result = verify_report(json_report(tmp_path, model_fingerprint=fp, checkpoint_sha256=SHA), ckpt)
    assert result == (True, f"match: {ckpt} holds the recorded tensors (model fingerprint {fp[:12]}); though the file itself differs")
    bare = verify_report(json_report(tmp_path, "s.json", model_fingerprint=fp), ckpt)
    assert bare == (True, f"match: {ckpt} holds the recorded tensors (model fingerprint {fp[:12]}); the report records no checkpoint file")


@pytest.mark.parametrize("prefix", ["module.", "model.", "_orig_mod.", "module._orig_mod.model."])
def test_verify_strips_wrapper_prefixes_every_key_carries(tmp_path, prefix):
    path = tmp_path / "wrapped.pt"
    torch.save({prefix + k: v for k, v in STATE.items()}, path)
    result = verify_report(json_report(tmp_path, model_fingerprint=fingerprint_of(STATE)), path)
    assert result.ok is True


def test_verify_does_not_strip_a_prefix_only_some_keys_carry(tmp_path):
    path = tmp_path / "partly.pt"
    torch.save({"module.conv.weight": STATE["conv.weight"], "conv.bias": STATE["conv.bias"]}, path)
    result = verify_report(json_report(tmp_path, model_fingerprint=fingerprint_of(STATE)), path)
    assert result.ok is False


def test_verify_of_other_weights_says_what_each_side_holds(tmp_path, ckpt):
    fp, sha = fingerprint_of(STATE), hashlib.sha256(ckpt.read_bytes()).hexdigest()
    report = json_report(tmp_path, model_fingerprint=FP, checkpoint_sha256=SHA, checkpoint_path="old/w.pt")
    result = verify_report(report, ckpt)
    assert result == (False, f"no match: {ckpt} has SHA-256 {sha[:12]}, fingerprint {fp[:12]}; the report records "
                             "checkpoint bbbbbbbbbbbb from old/w.pt, fingerprint aaaaaaaaaaaa")


def test_verify_of_a_diff_names_the_side_that_matches(tmp_path, ckpt):
    fp = fingerprint_of(STATE)
    data = {"old": {"provenance": {"model_fingerprint": FP}}, "new": {"provenance": {"model_fingerprint": fp}}}
    result = verify_report(write(tmp_path, json.dumps(data), "d.json"), ckpt)
    assert result == (True, f"match (new side): {ckpt} holds the recorded tensors (model fingerprint {fp[:12]}); "
                            "the report records no checkpoint file")


def test_verify_of_a_diff_without_a_match_lists_both_sides(tmp_path, ckpt):
    fp, sha = fingerprint_of(STATE), hashlib.sha256(ckpt.read_bytes()).hexdigest()
    data = {"old": {"provenance": {"model_fingerprint": FP}}, "new": {"provenance": {"checkpoint_sha256": SHA}}}
    result = verify_report(write(tmp_path, json.dumps(data), "d.json"), ckpt)
    assert result == (False, f"no match: {ckpt} has SHA-256 {sha[:12]}, fingerprint {fp[:12]}; the report records "
                             "old: checkpoint (none), fingerprint aaaaaaaaaaaa, new: checkpoint bbbbbbbbbbbb, fingerprint (none)")


def test_the_files_sha256_beside_other_tensors_is_a_contradiction(tmp_path, ckpt):
    fp, sha = fingerprint_of(STATE), hashlib.sha256(ckpt.read_bytes()).hexdigest()
    report = json_report(tmp_path, model_fingerprint=FP, checkpoint_sha256=sha)
    with pytest.raises(ProvenanceError) as info:
        verify_report(report, ckpt)
    assert info.value.one_line() == (
        f"{report} records {ckpt}'s SHA-256 {sha[:12]} but model fingerprint aaaaaaaaaaaa, while the file's tensors "
        f"fingerprint {fp[:12]}: the report was edited, or the model was loaded from another key of the checkpoint "
        "(pass --weights-key)"
    )


def test_the_contradiction_with_a_weights_key_does_not_suggest_one(tmp_path):
    path = tmp_path / "nested.pt"
    torch.save({"ema": STATE, "model": STATE}, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    report = json_report(tmp_path, model_fingerprint=FP, checkpoint_sha256=sha)
    with pytest.raises(ProvenanceError) as info:
        verify_report(report, path, weights_key="ema")
    assert info.value.one_line().endswith(": the report was edited")
    good = json_report(tmp_path, "g.json", model_fingerprint=fingerprint_of(STATE), checkpoint_sha256=sha)
    assert verify_report(good, path, weights_key="ema").ok is True


def test_the_sha256_recorded_without_a_fingerprint_on_one_side_is_no_contradiction(tmp_path, ckpt):
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    fp = fingerprint_of(STATE)
    data = {"old": {"provenance": {"checkpoint_sha256": SHA}}, "new": {"provenance": {"model_fingerprint": fp, "checkpoint_sha256": sha}}}
    result = verify_report(write(tmp_path, json.dumps(data), "d.json"), ckpt)
    assert result.ok is True and result.message.startswith("match (new side): ")


@pytest.mark.parametrize(
    "prov, what",
    [({"checkpoint_sha256": SHA}, "a checkpoint SHA-256 but no model fingerprint"),
     ({}, "neither a checkpoint SHA-256 nor a model fingerprint")],
)
def test_a_report_without_a_fingerprint_has_nothing_to_verify(tmp_path, ckpt, prov, what):
    report = json_report(tmp_path, **prov)
    with pytest.raises(ProvenanceError) as info:
        verify_report(report, ckpt)
    assert info.value.one_line() == (
        f"{report} records {what}; nothing to verify against (verify compares the checkpoint's tensors with the fingerprint)"
    )


def test_a_missing_checkpoint_or_a_folder(tmp_path):
    report = json_report(tmp_path, model_fingerprint=FP)
    with pytest.raises(WeightsError) as info:
        verify_report(report, tmp_path / "none.pt")
    assert info.value.one_line() == f"checkpoint {tmp_path / 'none.pt'} not found"
    with pytest.raises(WeightsError) as info:
        verify_report(report, tmp_path)
    assert info.value.one_line() == f"checkpoint {tmp_path} is not a file"


def test_an_unreadable_checkpoint_says_verify_needs_its_tensors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    report = json_report(tmp_path, model_fingerprint=FP)
    with pytest.raises(WeightsError) as info:
        verify_report(report, bad)
    assert info.value.one_line().startswith(
        f"verify needs the tensors of {bad} to compare with the report's fingerprint: cannot read weights file {bad}: "
    )


# -- where the reader thinks it is -----------------------------------------------------------------


@pytest.mark.parametrize("stray", ["</template>", "</svg>", "</math>", "</template></template>"])
def test_a_stray_end_tag_does_not_hide_what_follows(tmp_path, stray):
    data = report_data(model_fingerprint=FP)
    text = f"<html><body>{stray}{OPEN}{json.dumps(data)}</script>" \
           f'<code data-provenance="model_fingerprint">{FP}</code></body></html>'
    assert read_embedded(write(tmp_path, text)) == data


def test_nested_templates_hide_until_the_outer_one_ends(tmp_path):
    block = f"{OPEN}{json.dumps(report_data())}</script>"
    text = f"<html><body><template><template></template>{block}</template></body></html>"
    path = write(tmp_path, text)
    assert refused(path) == (
        f"{path}: its provenance block is inside a <template>, whose content is not part of the page, "
        "so the browser does not read it as data"
    )


def test_a_self_closing_shown_hash_shows_nothing(tmp_path):
    data = report_data(model_fingerprint=FP)
    path = write(tmp_path, page(data, before='<code data-provenance="model_fingerprint"/>'))
    assert refused(path).startswith(f"{path}: the provenance block records model_fingerprint aaaaaaaaaaaa but the page does not show it")


def test_a_copy_inside_another_script_is_found(tmp_path):
    text = page(report_data(), before="<script>var s = '<p id=\"cnnreport-provenance\">';</script>")
    message = refused(write(tmp_path, text))
    assert "has 2 elements" in message and "<p> inside another <script>" in message


def test_a_copy_two_levels_down_is_named_by_the_outermost_place(tmp_path):
    text = page(report_data(), before='<textarea><title><p id="cnnreport-provenance"></title></textarea>')
    message = refused(write(tmp_path, text))
    assert "(<script> in the page; <p> inside <textarea>, which the browser reads as text)" in message


def test_a_copy_inside_a_comment_inside_a_textarea_is_named_by_the_textarea(tmp_path):
    text = page(report_data(), before='<textarea><!-- <p id="cnnreport-provenance"> --></textarea>')
    message = refused(write(tmp_path, text))
    assert "<p> inside <textarea>, which the browser reads as text" in message


def test_text_with_an_entity_but_no_id_is_harmless(tmp_path):
    data = report_data()
    assert read_embedded(write(tmp_path, page(data, before="<textarea>a &amp; b</textarea><!-- x &lt; y -->"))) == data


def test_a_shown_hash_ends_at_the_next_end_tag(tmp_path):
    data = report_data(model_fingerprint=FP)
    text = page(data, before=f'<code data-provenance="model_fingerprint">\n {FP} \n</code>')
    assert read_embedded(write(tmp_path, text)) == data


def test_four_stacked_wrappers_are_more_than_verify_strips(tmp_path):
    path = tmp_path / "deep.pt"
    torch.save({"module." * 4 + k: v for k, v in STATE.items()}, path)
    result = verify_report(json_report(tmp_path, model_fingerprint=fingerprint_of(STATE)), path)
    assert result.ok is False
    three = tmp_path / "three.pt"
    torch.save({"module." * 3 + k: v for k, v in STATE.items()}, three)
    assert verify_report(json_report(tmp_path, "t.json", model_fingerprint=fingerprint_of(STATE)), three).ok is True


# -- added after the measured run: survivors it showed ----------------------------------------------


def test_a_shown_hash_written_with_a_character_reference_is_its_character(tmp_path):
    data = report_data(model_fingerprint=FP)
    text = page(data, before=f'<code data-provenance="model_fingerprint">&#97;{FP[1:]}</code>')
    assert read_embedded(write(tmp_path, text)) == data


def test_a_shown_hash_split_by_a_comment_is_joined(tmp_path):
    data = report_data(model_fingerprint=FP)
    text = page(data, before=f'<code data-provenance="model_fingerprint">{FP[:10]}<!-- x -->{FP[10:]}</code>')
    assert read_embedded(write(tmp_path, text)) == data


def test_attributes_after_a_harmless_duplicate_are_still_read(tmp_path):
    data = report_data(model_fingerprint=FP)
    text = page(data, before=f'<code class="a" class="b" data-provenance="model_fingerprint">{FP}</code>')
    assert read_embedded(write(tmp_path, text)) == data


def test_a_self_closing_element_with_the_id_is_named_by_its_tag(tmp_path):
    path = write(tmp_path, page(report_data(), before='<div id="cnnreport-provenance"/>'))
    assert refused(path) == (
        f"{path} has 2 elements with id='cnnreport-provenance' (<script> in the page; <div> in the page); "
        "a report has one, so it was edited"
    )


@pytest.mark.parametrize(
    "wrap, where",
    [
        ("<svg><svg></svg>{}</svg>", "inside <svg>/<math>, where a <script> is not a data block"),
        ("<svg><g></g>{}</svg>", "inside <svg>/<math>, where a <script> is not a data block"),
        ("<template><p></p>{}</template>", "inside a <template>, whose content is not part of the page"),
    ],
)
def test_other_end_tags_inside_svg_or_a_template_keep_it_hidden(tmp_path, wrap, where):
    block = f"{OPEN}{json.dumps(report_data())}</script>"
    path = write(tmp_path, "<!doctype html><html><body>" + wrap.format(block) + "</body></html>")
    assert refused(path) == f"{path}: its provenance block is {where}, so the browser does not read it as data"


def test_an_id_written_with_a_character_reference_in_a_comment_is_found(tmp_path):
    text = page(report_data(), before='<!-- <p id="cnnreport&#45;provenance"> -->')
    message = refused(write(tmp_path, text))
    assert "has 2 elements" in message and "<p> inside an HTML comment" in message


def test_three_levels_of_raw_text_are_still_read(tmp_path):
    text = page(report_data(), before='<textarea><title><style><p id="cnnreport-provenance"></style></title></textarea>')
    message = refused(write(tmp_path, text))
    assert "has 2 elements" in message and "<p> inside <textarea>, which the browser reads as text" in message


def test_a_div_that_says_it_is_json_is_still_no_script(tmp_path):
    text = f'<html><body><div type="application/json" id="cnnreport-provenance"></div></body></html>'
    path = write(tmp_path, text)
    assert refused(path) == (
        f"{path}: the element with id='cnnreport-provenance' is not a <script type=\"application/json\"> data block"
    )


def test_a_long_script_tag_is_shown_to_60_characters(tmp_path):
    tag = "<script " + "x" * 70 + ">"
    path = write(tmp_path, page(report_data(), before=tag + "</script>"))
    assert f"({tag[:60]!r})" in refused(path)


@pytest.mark.parametrize("length, shown", [(36, None), (37, "trimmed")])
def test_a_shown_value_of_40_characters_is_whole_and_of_41_trimmed(tmp_path, length, shown):
    value = "v" * length  # as JSON ["..."]: 40 or 41 characters
    message = json_refused(tmp_path, json.dumps({"provenance": {"torch_version": [value]}}))
    text = json.dumps([value])
    expected = text if shown is None else text[:37] + "..."
    assert message == f"provenance.torch_version is {expected}, not a string"


def test_a_shown_value_is_written_in_ascii(tmp_path):
    message = json_refused(tmp_path, json.dumps({"provenance": {"torch_version": ["é"]}}))
    assert message == 'provenance.torch_version is ["\\u00e9"], not a string'


def test_identical_weights_false_without_fingerprints_is_what_they_say(tmp_path):
    data = {"old": {"provenance": {}}, "new": {"provenance": {}}, "identical_weights": False}
    assert read_embedded(write(tmp_path, json.dumps(data), "d.json"))["identical_weights"] is False


def test_verify_reads_the_weights_key_it_is_given(tmp_path):
    other = {k: v + 1 for k, v in STATE.items()}
    path = tmp_path / "two.pt"
    torch.save({"model": other, "ema": STATE}, path)
    report = json_report(tmp_path, model_fingerprint=fingerprint_of(STATE))
    assert verify_report(report, path).ok is False  # 'model' comes first
    assert verify_report(report, path, weights_key="ema").ok is True


def test_verify_of_a_pickled_checkpoint_needs_trust(tmp_path):
    module = torch.nn.Linear(2, 1)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[0.5, -1.0]]))
        module.bias.copy_(torch.tensor([2.0]))
    path = tmp_path / "whole.pt"
    torch.save(module, path)
    report = json_report(tmp_path, model_fingerprint=fingerprint_of({"weight": module.weight.detach(), "bias": module.bias.detach()}))
    with pytest.raises(WeightsError) as info:
        verify_report(report, path)
    assert info.value.one_line().startswith(f"verify needs the tensors of {path} to compare with the report's fingerprint: "
                                            f"weights file {path} holds Python objects beyond tensors")
    assert verify_report(report, path, trust_checkpoint=True).ok is True


def test_a_side_recording_the_files_sha256_without_a_fingerprint_contradicts_it(tmp_path, ckpt):
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    fp = fingerprint_of(STATE)
    data = {"old": {"provenance": {"checkpoint_sha256": sha}}, "new": {"provenance": {"model_fingerprint": fp}}}
    report = write(tmp_path, json.dumps(data), "d.json")
    with pytest.raises(ProvenanceError) as info:
        verify_report(report, ckpt)
    assert info.value.one_line().startswith(
        f"{report} (old side) records {ckpt}'s SHA-256 {sha[:12]} but model fingerprint (none), while the file's tensors "
        f"fingerprint {fp[:12]}: the report was edited"
    )


def test_four_levels_of_raw_text_are_still_read(tmp_path):
    text = page(report_data(), before='<textarea><title><style><xmp><p id="cnnreport-provenance"></xmp></style></title></textarea>')
    message = refused(write(tmp_path, text))
    assert "has 2 elements" in message and "<p> inside <textarea>, which the browser reads as text" in message


def test_bytes_that_are_not_utf_8_are_read_as_replacement_characters(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b'{"provenance": {"command_line": "caf\xe9"}}')
    assert read_embedded(path)["provenance"]["command_line"] == "caf\ufffd"


def test_a_float_where_a_kind_belongs_is_shown_as_the_number(tmp_path):
    assert json_refused(tmp_path, json.dumps({"kind": 1.5, "provenance": {}})) == (
        f"{tmp_path / 'r.json'} says kind 1.5 but holds a report's provenance"
    )
