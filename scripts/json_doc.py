"""Write the key tables of ``docs/json-view.md`` from the JSON Schemas in ``docs/schema/``.

    python scripts/json_doc.py          # rewrite the tables in docs/json-view.md
    python scripts/json_doc.py --check  # exit 1, saying so, when the file is not current

The schemas are the contract (the tests validate real reports and diffs against them); this
script makes the page say exactly what they say. Only the part between the two marker lines is
written; the prose above it is kept as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "docs" / "schema"
DOC = REPO / "docs" / "json-view.md"
BEGIN = "<!-- key tables: generated from docs/schema/*.schema.json by scripts/json_doc.py; edit the schemas, then run it -->"
END = "<!-- end of generated key tables -->"


def load(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))


def _ref_name(node: dict) -> str | None:
    ref = node.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref.startswith("#/$defs/") else None


def type_text(node: dict) -> str:
    """A property's type in words: `integer`, `list of layer`, `filters or null`..."""
    name = _ref_name(node)
    if name:
        return f"[{name}](#{name})"
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return "string" if all(isinstance(v, str) for v in node["enum"]) else " / ".join(json.dumps(v) for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(type_text(branch) for branch in node["anyOf"])
    kinds = node.get("type")
    if isinstance(kinds, list):
        return " or ".join(type_text({**node, "type": k}) for k in kinds)
    if kinds == "array":
        items = node.get("items", {})
        return f"list of {type_text(items)}" if items else "list"
    return kinds or "any"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def key_table(node: dict) -> list[str]:
    lines = ["| key | type | what it holds |", "|---|---|---|"]
    for key, prop in node["properties"].items():
        what = prop.get("description", "")
        if prop.get("enum") and len(prop["enum"]) > 1:
            what += " (one of " + ", ".join(f"`{v}`" for v in prop["enum"]) + ")"
        lines.append(f"| `{key}` | {_cell(type_text(prop))} | {_cell(what)} |")
    return lines


def _uses(schema: dict) -> dict[str, list[str]]:
    """Def name -> the paths (`sections[].stats`) where the schema uses it, in schema order."""
    uses: dict[str, list[str]] = {}

    def walk(node: dict, path: str, seen: tuple[str, ...]) -> None:
        name = _ref_name(node)
        if name:
            if name not in seen:  # a shape inside a shape is still the shape it is part of
                uses.setdefault(name, [])
                if path not in uses[name]:
                    uses[name].append(path)
                walk(schema["$defs"][name], path, seen + (name,))
            return
        for branch in node.get("anyOf", []):
            walk(branch, path, seen)
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]", seen)
        for key, prop in node.get("properties", {}).items():
            walk(prop, f"{path}.{key}" if path else key, seen)

    walk(schema, "", ())
    return uses


def section(schema: dict, heading: str, skip: set[str]) -> tuple[list[str], set[str]]:
    """The root table, then one table per object definition, in the schema's own order."""
    lines = [f"## {heading}", "", schema["description"], "", *key_table(schema), ""]
    uses = _uses(schema)
    shown = set()
    for name, node in schema["$defs"].items():
        where = ", ".join(f"`{p}`" for p in uses.get(name, []))
        if name in skip:
            lines += [f"[{name}](#{name}): as in the report above" + (f"; used at: {where}." if "properties" in node else "."), ""]
            continue
        lines += [f"### {name}", ""]
        if "properties" in node:
            lines += [f"{node['description']} Used at: {where}.", "", *key_table(node), ""]
        else:  # a value type (real, shape) used all over: its uses are in the tables
            lines += [node["description"], ""]
        shown.add(name)
    return lines, shown


def generated() -> str:
    report, diff = load("report"), load("diff")
    lines, shown = section(report, "The report (`docs/schema/report.schema.json`)", set())
    more, _ = section(diff, "The diff (`docs/schema/diff.schema.json`)", shown)
    return "\n".join([BEGIN, "", *lines, *more, END]) + "\n"


def current_doc() -> str:
    text = DOC.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} lacks the marker lines; put {BEGIN!r} and {END!r} where the tables go")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + generated().rstrip("\n") + tail


def main(argv: list[str]) -> int:
    want = current_doc()
    if "--check" in argv:
        if DOC.read_text(encoding="utf-8") != want:
            print(f"{DOC.relative_to(REPO)} is not current with docs/schema/: run python scripts/json_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(want, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
