"""The JSON views against their contract: docs/schema/{report,diff}.schema.json and docs/json-view.md.

Real reports and diffs (the demo, real photos, a synthetic input, a partial report, non-finite
weights, several outputs, changed architectures) are validated against the schemas, which
refuse unknown keys and require every key; the emitted key order is the schemas' order (the
doc promises it); and the doc's key tables are the schemas' own, generated and current.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install -e '.[test]')")

import cnnreport  # noqa: E402
from cnnreport.io.demo import demo_probe_paths, load_demo_model  # noqa: E402
from cnnreport.render.diff_views import diff_json
from cnnreport.render.views import report_json  # noqa: E402
from cnnreport.report.diff import diff_reports

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "docs" / "schema"
DOC = REPO / "docs" / "json-view.md"
QUIET = dict(progress=False, max_channels=4, max_probes=4, tile_size=16)


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


def validator(name: str):
    s = schema(name)
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


def problems(name: str, instance: dict) -> list[str]:
    """Every way ``instance`` breaks the schema, as `path: message` lines (empty: it conforms)."""
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator(name).iter_errors(instance))


def out_of_order(name: str, instance) -> list[str]:
    """Objects whose keys are not in the order the schema lists them (the doc's order)."""
    root = schema(name)
    found: list[str] = []

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        return node

    def walk(node: dict, value, path: str) -> None:
        node = resolve(node)
        for branch in node.get("anyOf", []):
            branch = resolve(branch)
            if isinstance(value, dict) and "properties" in branch or isinstance(value, list) and branch.get("type") in ("array", ["array", "null"]):
                walk(branch, value, path)
                return
        if isinstance(value, dict) and "properties" in node:
            listed = [k for k in node["properties"] if k in value]
            if list(value) != listed:
                found.append(f"{path or '/'}: {list(value)} != {listed}")
            for key, sub in value.items():
                if key in node["properties"]:
                    walk(node["properties"][key], sub, f"{path}/{key}")
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                walk(node["items"], item, f"{path}/{i}")

    walk(root, instance, "")
    return found


def conforms(name: str, text: str) -> dict:
    data = json.loads(text)
    assert problems(name, data) == []
    assert out_of_order(name, data) == []
    return data


# -- real reports ------------------------------------------------------------------------------


class Small(nn.Module):
    def __init__(self, width: int = 4, extra: bool = False, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.act = act()
        self.extra = nn.Conv2d(width, width, 1) if extra else None
        self.fc = nn.Linear(width, 3)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        if self.extra is not None:
            x = self.extra(x)
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def demo_json() -> dict:
    report = cnnreport.build_report(load_demo_model(), [str(p) for p in demo_probe_paths()], progress=False)
    return conforms("report", report_json(report))


def test_the_demo_report_conforms(demo_json):
    assert demo_json["schema_version"] == 1
    assert demo_json["provenance"]["created"] == ""  # no --timestamp: present, and empty
    assert [p["sha256"] != "" for p in demo_json["provenance"]["probe_files"]] == [True] * len(demo_json["provenance"]["probe_files"])
    # What the doc lists as once missing is there, and typed as the schema says.
    section = demo_json["sections"][0]
    assert sorted(section["mosaics"][0]) == sorted(["figure", "columns", "rows", "tiles", "vmin", "vmax", "colormap", "probe", "nonfinite"])
    assert sorted(section["mosaics"][0]["tiles"][0]) == sorted(["label", "x", "y", "width", "height", "title"])
    assert sorted(demo_json["probes"][0]["thumbnail"]) == ["alt", "height", "width"]


def test_a_report_on_real_photos_with_both_attributions_conforms(photo_probes):
    from reference_models import seeded, tiny_resnet

    report = cnnreport.build_report(seeded(tiny_resnet()).eval(), photo_probes, saliency=True, class_names=[f"kind {i}" for i in range(10)], **QUIET)
    data = conforms("report", report_json(report))
    assert sorted({a["method"] for a in data["attributions"]}) == ["Grad-CAM", "Saliency"]
    assert data["probes"][0]["predictions"][0]["label"].startswith("kind ")


def test_a_report_on_a_synthetic_input_with_a_timestamp_conforms():
    report = cnnreport.build_report(Small().eval(), None, input_size=(3, 12, 12), timestamp=True, **QUIET)
    data = conforms("report", report_json(report))
    assert data["synthetic_input"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["provenance"]["created"])


def test_a_partial_report_conforms():
    class WrongWidth(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(1568, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))

    partial = cnnreport.build_report(WrongWidth(), torch.rand(2, 3, 16, 16), on_failure="partial", **QUIET)
    data = conforms("report", report_json(partial))
    assert (data["failure"]["failed_at"], data["failure"]["input_shapes"]) == ("fc", [[2, 2048]])
    assert data["failure"]["summary"].startswith("the forward pass failed in fc (Linear) given input (2, 2048)")


def test_a_report_with_non_finite_weights_conforms_with_null_and_inf():
    torch.manual_seed(0)
    model = Small().eval()
    with torch.no_grad():
        model.conv.weight[0] = float("nan")
        model.conv.weight[1] = float("inf")
    data = conforms("report", report_json(cnnreport.build_report(model, torch.rand(2, 3, 12, 12), **QUIET)))
    conv = next(s for s in data["sections"] if s["name"] == "conv")
    assert conv["weight_stats"]["nan_count"] == 3 * 3 * 3
    assert conv["weight_stats"]["inf_count"] == 3 * 3 * 3
    assert "non_finite" in [a["kind"] for a in data["alerts"]]


def test_a_report_with_spectra_conforms_with_fitted_and_unfitted_layers():
    torch.manual_seed(0)
    report = cnnreport.build_report(Small(extra=True).eval(), torch.rand(2, 3, 12, 12), spectral=True, **QUIET)
    data = conforms("report", report_json(report))
    rows = {row["name"]: row for row in data["spectral"]}
    assert list(rows) == ["conv", "extra", "fc"]
    assert isinstance(rows["conv"]["alpha"], float) and rows["conv"]["note"] == ""
    assert (rows["extra"]["alpha"], rows["extra"]["xmin"], rows["extra"]["note"]) == (None, None, "4 eigenvalues: fewer than 8 to fit")
    assert data["options"]["spectral"] is True


@pytest.mark.parametrize("name", ["TupleOutput", "DictOutput", "SegmentationOutput"])
def test_reports_of_models_with_other_outputs_conform(name):
    import reference_models

    torch.manual_seed(0)
    model = getattr(reference_models, name)().eval()
    data = conforms("report", report_json(cnnreport.build_report(model, torch.rand(2, 3, 12, 12), **QUIET)))
    assert data["model"]["class_name"] == name


# -- real diffs --------------------------------------------------------------------------------


def test_a_diff_of_two_checkpoints_conforms():
    torch.manual_seed(0)
    old, new = load_demo_model(), load_demo_model()
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.05 * torch.randn_like(p))
    diff = diff_reports(old, new, [str(p) for p in demo_probe_paths()[:3]], options=cnnreport.ReportOptions(**QUIET))
    data = conforms("diff", diff_json(diff))
    assert data["kind"] == "diff" and data["identical_weights"] is False
    assert len(data["galleries"]) >= 1 and len(data["weight_changes"]) >= 1


def test_a_diff_of_two_architectures_conforms():
    torch.manual_seed(0)
    old = Small(width=4).eval()
    new = Small(width=8, extra=True, act=nn.GELU).eval()
    diff = diff_reports(old, new, torch.rand(2, 3, 12, 12), options=cnnreport.ReportOptions(**QUIET))
    data = conforms("diff", diff_json(diff))
    statuses = {c["name"]: c["status"] for c in data["architecture"]}
    assert statuses == {"conv": "shape changed", "bn": "shape changed", "act": "type changed", "extra": "added", "fc": "shape changed"}
    assert data["param_delta"] == diff.new.model.total_params - diff.old.model.total_params


# -- the schemas refuse what they do not document ----------------------------------------------


def test_an_undocumented_or_missing_key_fails_validation(demo_json):
    extra = copy.deepcopy(demo_json)
    extra["sections"][0]["stats"]["median"] = 0.5
    assert problems("report", extra) == ["sections/0/stats: Additional properties are not allowed ('median' was unexpected)"]
    missing = copy.deepcopy(demo_json)
    del missing["probes"][0]["thumbnail"]
    assert problems("report", missing) == ["probes/0: 'thumbnail' is a required property"]
    wrong = copy.deepcopy(demo_json)
    wrong["sections"][0]["stats"]["mean"] = "nan"  # NaN is null, never a string
    assert [p.split(":")[0] for p in problems("report", wrong)] == ["sections/0/stats/mean"]


def test_keys_out_of_the_documented_order_are_found(demo_json):
    moved = copy.deepcopy(demo_json)
    moved["title"] = moved.pop("title")  # now last
    stats = moved["sections"][1]["per_probe_stats"][0]
    stats["mean"] = stats.pop("mean")
    found = out_of_order("report", moved)
    assert [line.split(":")[0] for line in found] == ["/", "/sections/1/per_probe_stats/0"]


def test_every_object_requires_every_key_it_lists():
    for name in ("report", "diff"):
        s = schema(name)
        for where, node in [("root", s), *s["$defs"].items()]:
            if "properties" in node:
                assert node["additionalProperties"] is False, (name, where)
                assert node["required"] == list(node["properties"]), (name, where)


def test_the_definitions_both_schemas_share_are_the_same():
    report, diff = schema("report")["$defs"], schema("diff")["$defs"]
    shared = sorted(set(report) & set(diff))
    assert shared == ["alert", "figure", "filters", "model", "options", "prediction", "probe_file", "provenance", "real", "shape"]
    assert {k: report[k] for k in shared} == {k: diff[k] for k in shared}


def test_the_enums_list_every_alert_kind_and_severity():
    from cnnreport.datamodel import AlertKind, Severity

    alert = schema("report")["$defs"]["alert"]["properties"]
    assert sorted(alert["kind"]["enum"]) == sorted(k.value for k in AlertKind)
    assert sorted(alert["severity"]["enum"]) == sorted(s.value for s in Severity)


def test_options_list_every_option_the_views_carry():
    assert list(schema("report")["$defs"]["options"]["properties"]) == list(cnnreport.ReportOptions().to_dict())


# -- the doc is the schemas' own ---------------------------------------------------------------


def test_the_doc_key_tables_are_current_with_the_schemas():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "json_doc.py"), "--check"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")


def doc_tables() -> dict[str, list[str]]:
    """Heading -> the keys of the table under it, read back from the Markdown."""
    tables: dict[str, list[str]] = {}
    heading = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        row = re.match(r"\| `([^`]+)` \|", line)
        if row:
            tables.setdefault(heading, []).append(row.group(1))
    return tables


def test_every_schema_key_is_in_the_doc_and_every_doc_key_in_a_schema():
    tables = doc_tables()
    expected: dict[str, list[str]] = {}
    for name in ("report", "diff"):
        s = schema(name)
        expected[f"The {name} (`docs/schema/{name}.schema.json`)"] = list(s["properties"])
        for def_name, node in s["$defs"].items():
            if "properties" in node:
                expected.setdefault(def_name, list(node["properties"]))
    assert tables == expected
    # And every key of a real report appears in a table.
    assert "thumbnail" in tables["probe"] and "columns" in tables["mosaic"] and "x" in tables["tile"] and "probe" in tables["mosaic"]


def test_the_doc_says_what_created_holds():
    text = DOC.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `created` |"))
    assert "empty string" in row and "--timestamp" in row
