"""plan_outputs, one refusal at a time, with the message it gives written out in full: every
output path checked before any work, nothing written by the check itself.

Each test builds its own files in ``tmp_path``; ``protect_loaded_modules=False`` where loaded
modules are not the point, so only the inputs named in the test count.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from cnnreport.errors import OutputError
from cnnreport.render import outputs


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def plan(outs, inputs=(), **kwargs):
    kwargs.setdefault("protect_loaded_modules", False)
    return outputs.plan_outputs(outs, inputs, **kwargs)


def refusal(outs, inputs=(), **kwargs) -> str:
    with pytest.raises(OutputError) as caught:
        plan(outs, inputs, **kwargs)
    return str(caught.value)


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


# -- the plan itself ---------------------------------------------------------------------------


def test_a_plan_holds_each_output_resolved_and_its_role(tmp_path):
    (tmp_path / "real.html").write_text("old")
    (tmp_path / "link.html").symlink_to("real.html")
    result = plan([("-o", str(tmp_path / "link.html")), ("--json", None), ("--markdown", tmp_path / "r.md")])
    assert [(o.role, o.given, o.path) for o in result.outputs] == [
        ("-o", str(tmp_path / "link.html"), tmp_path / "real.html"),
        ("--markdown", str(tmp_path / "r.md"), tmp_path / "r.md"),
    ]
    assert result.partial is None
    assert result.path_of("-o") == tmp_path / "real.html"
    assert result.path_of("--markdown") == tmp_path / "r.md"
    assert result.path_of("--json") is None
    assert names(tmp_path) == ["link.html", "real.html"]


def test_path_of_gives_the_first_output_of_a_role():
    first = outputs.PlannedOutput("-o", "a", Path("/x/a"))
    second = outputs.PlannedOutput("-o", "b", Path("/x/b"))
    other = outputs.PlannedOutput("--json", "c", Path("/x/c"))
    assert outputs.OutputPlan((other, first, second)).path_of("-o") == Path("/x/a")


def test_the_partial_report_is_planned_with_its_own_role(tmp_path):
    result = plan([("-o", str(tmp_path / "r.html"))], partial=str(tmp_path / "r.partial.html"))
    assert result.partial == outputs.PlannedOutput("the partial report", str(tmp_path / "r.partial.html"), tmp_path / "r.partial.html")
    assert [o.path for o in result.outputs] == [tmp_path / "r.html"]


def test_a_relative_and_a_home_path_are_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.setenv("HOME", str(tmp_path))
    result = plan([("-o", "r.html"), ("--json", "~/r.json")])
    assert [o.path for o in result.outputs] == [tmp_path / "sub" / "r.html", tmp_path / "r.json"]
    assert [o.given for o in result.outputs] == ["r.html", "~/r.json"]


def test_the_check_writes_nothing_and_closes_what_it_opens(tmp_path):
    (tmp_path / "old.html").write_text("old")
    before = open_fds()
    plan([("-o", str(tmp_path / "old.html")), ("--json", str(tmp_path / "new.json"))])
    assert open_fds() == before
    assert names(tmp_path) == ["old.html"]
    assert (tmp_path / "old.html").read_text() == "old"


# -- outputs that cannot be written -----------------------------------------------------------


def test_an_empty_output_name_is_refused_naming_its_role():
    assert refusal([("--json", "")]) == "--json is empty; give a file name such as report.html"


def test_an_empty_partial_name_means_no_partial_report(tmp_path):
    assert plan([("-o", str(tmp_path / "r.html"))], partial="").partial is None


def test_a_link_that_loops_is_refused(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    given = str(tmp_path / "a")
    assert refusal([("-o", given)]) == f"cannot write -o {given}: it is a symbolic link that loops; remove the link or choose another name"


def test_a_name_of_255_bytes_fits_and_256_does_not(tmp_path):
    fits = "é" * 125 + ".html"  # 250 + 5 bytes, 130 characters
    assert len(os.fsencode(fits)) == 255
    assert [o.path.name for o in plan([("-o", str(tmp_path / fits))]).outputs] == [fits]
    over = "é" * 125 + "x.html"
    given = str(tmp_path / over)
    assert refusal([("-o", given)]) == f"cannot write -o {given}: the file name is 256 bytes, over this file system's 255; choose a shorter name"
    assert names(tmp_path) == []


@pytest.mark.parametrize("error", [OSError(22, "Invalid argument"), ValueError("unknown name")])
def test_without_a_name_limit_from_the_file_system_255_bytes_are_assumed(tmp_path, monkeypatch, error):
    def pathconf(path, name):
        raise error

    monkeypatch.setattr(outputs.os, "pathconf", pathconf)
    assert len(plan([("-o", str(tmp_path / ("a" * 250 + ".html")))]).outputs) == 1
    given = str(tmp_path / ("a" * 251 + ".html"))
    assert refusal([("-o", given)]) == f"cannot write -o {given}: the file name is 256 bytes, over this file system's 255; choose a shorter name"


def test_the_file_systems_own_name_limit_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs.os, "pathconf", lambda path, name: 20 if name == "PC_NAME_MAX" else 0)
    assert len(plan([("-o", str(tmp_path / ("a" * 15 + ".html")))]).outputs) == 1
    given = str(tmp_path / ("a" * 16 + ".html"))
    assert refusal([("-o", given)]) == f"cannot write -o {given}: the file name is 21 bytes, over this file system's 20; choose a shorter name"


def test_a_folder_is_refused_with_a_file_name_to_give_instead(tmp_path):
    (tmp_path / "out").mkdir()
    given = str(tmp_path / "out")
    assert refusal([("-o", given)]) == f"cannot write -o {given}: it is a folder; give a file name such as {tmp_path / 'out' / 'report.html'}"


def test_a_pipe_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    given = str(tmp_path / "pipe")
    assert refusal([("--json", given)]) == f"cannot write --json {given}: it is not a regular file (a device, pipe or socket); give a file path"


def test_a_missing_folder_is_refused(tmp_path):
    given = str(tmp_path / "no" / "r.html")
    assert refusal([("-o", given)]) == f"cannot write -o {given}: folder {tmp_path / 'no'} does not exist"


@pytest.mark.parametrize("strerror, shown", [("Permission denied", "Permission denied"), (None, "read-only today")])
def test_a_folder_where_no_file_can_be_made_is_refused(tmp_path, monkeypatch, strerror, shown):
    def mkstemp(*args, **kwargs):
        raise OSError(13, strerror) if strerror else OSError("read-only today")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp)
    given = str(tmp_path / "r.html")
    assert refusal([("-o", given)]) == f"cannot write -o {given}: {shown} in folder {tmp_path}"


def test_the_trial_file_is_made_beside_the_target_with_the_writes_prefix(tmp_path, monkeypatch):
    made = []
    real_mkstemp = outputs.tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        made.append(kwargs)
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(outputs.tempfile, "mkstemp", mkstemp)
    plan([("-o", str(tmp_path / ("x" * 100 + ".html")))])
    assert made == [{"prefix": "." + "x" * 64 + ".", "suffix": ".tmp", "dir": tmp_path}]
    assert names(tmp_path) == []


def test_a_partial_report_in_a_missing_folder_is_not_checked_here(tmp_path):
    # The partial report is written only after a failed forward pass; its own write says why it failed.
    result = plan([("-o", str(tmp_path / "r.html"))], partial=str(tmp_path / "no" / "p.html"))
    assert result.partial.path == tmp_path / "no" / "p.html"


# -- outputs that are one file -----------------------------------------------------------------


def test_two_outputs_with_one_name_are_refused_later_one_first(tmp_path):
    out = str(tmp_path / "r.html")
    assert refusal([("-o", out), ("--json", str(tmp_path / "j.json")), ("--markdown", out)]) == f"--markdown {out} and -o {out} are the same file; give each output its own name"


def test_a_hard_link_and_a_symbolic_link_are_the_file_they_name(tmp_path):
    (tmp_path / "r.html").write_text("old")
    os.link(tmp_path / "r.html", tmp_path / "hard")
    (tmp_path / "soft").symlink_to("r.html")
    a, hard, soft = (str(tmp_path / n) for n in ("r.html", "hard", "soft"))
    assert refusal([("-o", a), ("--json", hard)]) == f"--json {hard} and -o {a} are the same file; give each output its own name"
    assert refusal([("-o", soft), ("--json", a)]) == f"--json {a} and -o {soft} are the same file; give each output its own name"


def test_the_partial_report_may_not_be_an_output(tmp_path):
    out = str(tmp_path / "r.html")
    assert refusal([("-o", out)], partial=out) == f"the partial report {out} and -o {out} are the same file; give each output its own name"


def test_different_new_files_are_not_one(tmp_path):
    assert len(plan([("-o", str(tmp_path / "a.html")), ("--json", str(tmp_path / "b.html"))]).outputs) == 2


# -- outputs that are inputs -------------------------------------------------------------------


def test_an_output_that_is_an_input_file_is_refused_naming_both(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"weights")
    w = str(tmp_path / "w.pt")
    assert refusal([("-o", w)], [("--weights", None), ("--weights checkpoint", w)]) == f"-o {w} is --weights checkpoint {w}: writing there would destroy an input; choose another output name"
    assert (tmp_path / "w.pt").read_bytes() == b"weights"


def test_an_input_reached_through_a_link_is_named_as_found(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"weights")
    (tmp_path / "ln").symlink_to("w.pt")
    w, ln = str(tmp_path / "w.pt"), str(tmp_path / "ln")
    assert refusal([("-o", ln)], [("--weights", w)]) == f"-o {ln} is --weights {w}: writing there would destroy an input; choose another output name"


def test_a_new_output_collides_with_no_input(tmp_path):
    assert len(plan([("-o", str(tmp_path / "r.html"))], [("--weights", str(tmp_path / "r.html"))]).outputs) == 1


def test_an_empty_input_is_no_input(tmp_path, monkeypatch):
    # "" would be the current folder: its images would count as probes, and the output beside them refused.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.png").write_bytes(b"png")
    assert [o.path for o in plan([("-o", "p.png")], [("probe", "")], folder_suffixes=(".png",)).outputs] == [tmp_path / "p.png"]
    assert [o.path for o in plan([("-o", "q.png")], [("probe", "")], folder_suffixes=(".png",)).outputs] == [tmp_path / "q.png"]


def test_an_image_in_a_probe_folder_is_refused_naming_the_folder(tmp_path):
    probes = tmp_path / "probes"
    (probes / "sub").mkdir(parents=True)
    (probes / "sub" / "p.PNG").write_bytes(b"png")
    given = str(probes / "sub" / "p.PNG")
    assert refusal([("-o", given)], [("probe", str(probes))], folder_suffixes=(".png",)) == (
        f"-o {given} is {probes / 'sub' / 'p.PNG'}, in probe {probes}: writing there would destroy an input; choose another output name"
    )


def test_an_existing_file_of_another_suffix_in_a_probe_folder_is_no_probe(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "notes.txt").write_text("notes")
    assert len(plan([("-o", str(probes / "notes.txt"))], [("probe", str(probes))], folder_suffixes=(".PNG",)).outputs) == 1


def test_a_hard_link_to_a_probe_deep_in_its_folder_is_refused(tmp_path):
    probes = tmp_path / "probes"
    (probes / "a" / "b").mkdir(parents=True)
    (probes / "a" / "zz.txt").write_text("not a probe")
    (probes / "a" / "b" / "p.Png").write_bytes(b"png")
    os.link(probes / "a" / "b" / "p.Png", tmp_path / "out.html")
    given = str(tmp_path / "out.html")
    assert refusal([("-o", given)], [("probe", str(probes))], folder_suffixes=(".png",)) == (
        f"-o {given} is {probes / 'a' / 'b' / 'p.Png'}, in probe {probes}: writing there would destroy an input; choose another output name"
    )


def test_a_hard_link_to_a_file_of_another_suffix_in_a_probe_folder_is_no_probe(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "notes.txt").write_text("notes")
    os.link(probes / "notes.txt", tmp_path / "out.html")
    assert len(plan([("-o", str(tmp_path / "out.html"))], [("probe", str(probes))], folder_suffixes=(".png",)).outputs) == 1


def test_a_hard_link_elsewhere_is_no_probe(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "p.png").write_bytes(b"png")
    (tmp_path / "other.png").write_bytes(b"other")
    os.link(tmp_path / "other.png", tmp_path / "out.html")
    assert len(plan([("-o", str(tmp_path / "out.html"))], [("probe", str(probes))], folder_suffixes=(".png",)).outputs) == 1


def test_a_broken_link_in_a_probe_folder_does_not_hide_a_hard_linked_probe(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "p.png").write_bytes(b"png")
    for i in range(30):  # listed before p.png, most likely, whatever the folder's order
        (probes / f"gone{i}.png").symlink_to(tmp_path / f"missing{i}.png")
    os.link(probes / "p.png", tmp_path / "out.html")
    given = str(tmp_path / "out.html")
    assert refusal([("-o", given)], [("probe", str(probes))], folder_suffixes=(".png",)) == (
        f"-o {given} is {probes / 'p.png'}, in probe {probes}: writing there would destroy an input; choose another output name"
    )


@pytest.mark.parametrize("pattern", ["ck/*.pt", "ck/w?.pt", "ck/w[0-9].pt", "ck/**/w1.pt", "ck/[w]?*.pt"])
def test_a_file_a_glob_input_matches_is_refused(tmp_path, pattern):
    (tmp_path / "ck" / "deep" / "er").mkdir(parents=True)
    (tmp_path / "ck" / "w1.pt").write_bytes(b"weights")
    (tmp_path / "ck" / "deep" / "er" / "w1.pt").write_bytes(b"deep weights")
    target = tmp_path / "ck" / "w1.pt"
    given = str(tmp_path / pattern)
    assert refusal([("-o", str(target))], [("probe", given)]) == f"-o {target} is {target}, in probe {given}: writing there would destroy an input; choose another output name"


def test_a_recursive_glob_reaches_files_at_any_depth(tmp_path):
    (tmp_path / "ck" / "deep" / "er").mkdir(parents=True)
    target = tmp_path / "ck" / "deep" / "er" / "w1.pt"
    target.write_bytes(b"deep weights")
    given = str(tmp_path / "ck" / "**" / "*.pt")
    assert refusal([("-o", str(target))], [("probe", given)]) == f"-o {target} is {target}, in probe {given}: writing there would destroy an input; choose another output name"


def test_a_glob_and_a_folder_under_home_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "p.png").write_bytes(b"png")
    (tmp_path / "w1.pt").write_bytes(b"w")
    target = str(tmp_path / "w1.pt")
    assert refusal([("-o", target)], [("probe", "~/w*.pt")]) == f"-o {target} is {tmp_path / 'w1.pt'}, in probe ~/w*.pt: writing there would destroy an input; choose another output name"
    probe = str(tmp_path / "probes" / "p.png")
    assert refusal([("-o", probe)], [("probe", "~/probes")], folder_suffixes=(".png",)) == (
        f"-o {probe} is {tmp_path / 'probes' / 'p.png'}, in probe ~/probes: writing there would destroy an input; choose another output name"
    )


def test_a_missing_input_without_glob_characters_matches_nothing(tmp_path):
    (tmp_path / "r.html").write_text("old")
    assert len(plan([("-o", str(tmp_path / "r.html"))], [("--weights", str(tmp_path / "gone.pt"))]).outputs) == 1


# -- outputs the next run would read ----------------------------------------------------------


def test_a_new_image_inside_a_probe_folder_is_refused(tmp_path):
    probes = tmp_path / "probes"
    (probes / "sub").mkdir(parents=True)
    given = str(probes / "sub" / "new.JPG")
    assert refusal([("-o", given)], [("probe", str(probes))], folder_suffixes=(".jpg", ".png")) == (
        f"-o {given} is inside probe {probes} and has an input's suffix (.JPG): the next run would read it as one of its files; choose another output name or folder"
    )
    assert names(probes / "sub") == []


def test_the_folder_suffixes_are_matched_without_case(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    given = str(probes / "new.png")
    assert refusal([("-o", given)], [("probe", str(probes))], folder_suffixes=(".PNG",)).startswith(f"-o {given} is inside probe {probes}")


def test_a_partial_report_inside_an_examples_folder_is_refused(tmp_path):
    examples = tmp_path / "ex"
    examples.mkdir()
    partial = str(examples / "p.html")
    assert refusal([("-o", str(tmp_path / "r.html"))], [("--examples", str(examples))], partial=partial, folder_suffixes=(".html",)) == (
        f"the partial report {partial} is inside --examples {examples} and has an input's suffix (.html): the next run would read it as one of its files; choose another output name or folder"
    )


def test_beside_a_probe_folder_or_with_another_suffix_an_output_is_taken(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    (tmp_path / "w.pt").write_bytes(b"w")
    inputs = [("--weights", str(tmp_path / "w.pt")), ("probe", str(probes))]
    result = plan([("-o", str(tmp_path / "beside.png")), ("--json", str(probes / "r.json"))], inputs, folder_suffixes=(".png",))
    assert [o.path for o in result.outputs] == [tmp_path / "beside.png", probes / "r.json"]


def test_an_input_folder_under_home_is_expanded_for_new_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "probes").mkdir()
    given = str(tmp_path / "probes" / "n.png")
    assert refusal([("-o", given)], [("probe", "~/probes")], folder_suffixes=(".png",)).startswith(f"-o {given} is inside probe ~/probes and has")


def test_a_linked_probe_folder_is_the_folder_it_names(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "probes").symlink_to("real")
    given = str(tmp_path / "real" / "n.png")
    assert refusal([("-o", given)], [("probe", str(tmp_path / "probes"))], folder_suffixes=(".png",)).startswith(f"-o {given} is inside probe {tmp_path / 'probes'} and has")


# -- loaded modules ----------------------------------------------------------------------------


def test_loaded_module_files_lists_each_module_with_a_source_path(monkeypatch, tmp_path):
    with_file = types.ModuleType("cnnreport_test_with_file")
    with_file.__file__ = str(tmp_path / "m.py")
    no_file = types.ModuleType("cnnreport_test_no_file")
    empty = types.ModuleType("cnnreport_test_empty_file")
    empty.__file__ = ""
    odd = types.ModuleType("cnnreport_test_odd_file")
    odd.__file__ = 42
    for module in (with_file, no_file, empty, odd):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(sys.modules, "cnnreport_test_none", None)
    found = [(name, path) for name, path in outputs.loaded_module_files() if name.startswith("cnnreport_test_")]
    assert found == [("cnnreport_test_with_file", tmp_path / "m.py")]


def test_a_loaded_modules_source_is_an_input_unless_told_otherwise(monkeypatch, tmp_path):
    source = tmp_path / "m.py"
    source.write_text("X = 1\n")
    module = types.ModuleType("cnnreport_test_loaded")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    given = str(source)
    with pytest.raises(OutputError) as caught:
        outputs.plan_outputs([("-o", given)])
    assert str(caught.value) == f"-o {given} is the source of Python module cnnreport_test_loaded {given}: writing there would destroy an input; choose another output name"
    assert len(outputs.plan_outputs([("-o", given)], protect_loaded_modules=False).outputs) == 1
    assert source.read_text() == "X = 1\n"


# -- more edges ---------------------------------------------------------------------------------


def test_a_name_too_long_to_look_up_is_refused_by_its_length_even_beside_a_probe_folder(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    given = str(tmp_path / ("n" * 300 + ".html"))
    assert refusal([("-o", given)], [("probe", str(probes))], folder_suffixes=(".png",)) == (
        f"cannot write -o {given}: the file name is 305 bytes, over this file system's 255; choose a shorter name"
    )


def test_a_glob_that_matches_a_broken_link_destroys_no_input(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "gone.pt").symlink_to(tmp_path / "nowhere.pt")
    (tmp_path / "r.html").write_text("old")
    result = plan([("-o", str(tmp_path / "r.html"))], [("--weights", str(tmp_path / "ck" / "*.pt"))])
    assert [o.path for o in result.outputs] == [tmp_path / "r.html"]


def test_a_partial_report_whose_link_loops_is_refused_by_its_role(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    given = str(tmp_path / "a")
    assert refusal([("-o", str(tmp_path / "r.html"))], partial=given) == (
        f"cannot write the partial report {given}: it is a symbolic link that loops; remove the link or choose another name"
    )


def test_an_output_of_another_suffix_first_does_not_hide_an_image_after_it(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    given = str(probes / "new.png")
    assert refusal([("--json", str(probes / "r.json")), ("-o", given)], [("probe", str(probes))], folder_suffixes=(".png",)) == (
        f"-o {given} is inside probe {probes} and has an input's suffix (.png): the next run would read it as one of its files; choose another output name or folder"
    )
