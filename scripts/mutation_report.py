"""Summarise one module's mutation run: counts, score, and every mutant not killed, each with
its file:line and the changed line(s), so the next engineer can apply it by hand and write the
test that fails under it.

Run by ``scripts/mutation.sh`` inside its copy of the tree, after ``mutmut run``; it reads
mutmut's results from ``mutants/<module>.meta``. Writes ``<out>/<name>.survivors.txt`` and
prints one tab-separated summary line:
``module  mutants  killed  survived  no_tests  timeout  other  score``.

Score: (killed + timeout) / mutants checked, as mutmut's own badge counts it. Mutants that no
selected test reaches ("no tests") count as not killed.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import json
import sys
from pathlib import Path

KILLED = {1, 3}  # a failing test; pytest's internal error also means the mutant was noticed
SURVIVED = {0}
NO_TESTS = {5, 33}
TIMEOUT = {24, -24, 152, 255, 36}
NOT_CHECKED = {None, 34}  # not run (another module's pattern, or skipped)


def status(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    if code in TIMEOUT:
        return "timeout"
    if code in NOT_CHECKED:
        return "not checked"
    return f"other (exit {code})"  # a crash of the worker: a segfault or a kill


def function_span(tree: ast.Module, name: str, class_name: str | None) -> tuple[int, int] | None:
    """(first line incl. decorators, last line) of the top-level function or method *name*."""
    body = tree.body
    if class_name is not None:
        classes = [n for n in body if isinstance(n, ast.ClassDef) and n.name == class_name]
        if not classes:
            return None
        body = classes[0].body
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return first, node.end_lineno or node.lineno
    return None


def locate(diff: str, file_lines: list[str], span: tuple[int, int] | None) -> tuple[int | None, list[str]]:
    """The file line of the first changed line, and the changed lines as ``- old`` / ``+ new``."""
    lines = diff.splitlines()[2:]  # drop the ---/+++ header
    old: list[str] = []
    new: list[str] = []
    for line in lines:
        if line.startswith("@@"):
            continue
        if line.startswith("-"):
            old.append(line[1:])
        elif line.startswith("+"):
            new.append(line[1:])
    orig = [line[1:] for line in lines if line[:1] in (" ", "-")]
    mutant = [line[1:] for line in lines if line[:1] in (" ", "+")]
    # the unified diff has only a few lines of context: take the original function text again
    # from the diff's context + removed lines, and find where it sits in the file
    first_changed = None
    for tag, i1, _i2, _j1, _j2 in difflib.SequenceMatcher(a=orig, b=mutant, autojunk=False).get_opcodes():
        if tag != "equal":
            first_changed = i1
            break
    # lines only re-indented or re-wrapped by the change (a closing bracket) are not the change
    old_s, new_s = [s.strip() for s in old], [s.strip() for s in new]
    for s in list(old_s):
        if s in new_s:
            old_s.remove(s)
            new_s.remove(s)
    changed = [f"- {s}" for s in old_s] + [f"+ {s}" for s in new_s]
    if old_s and not new_s:
        changed.append("+ (removed)")
    if first_changed is None or span is None:
        return (span[0] if span else None), changed
    stripped_file = [s.strip() for s in file_lines]
    stripped_orig = [s.strip() for s in orig]
    lo = max(0, span[0] - 1)
    hi = span[1]
    for j in range(lo, hi):
        if stripped_file[j : j + len(stripped_orig)] == stripped_orig:
            return j + first_changed + 1, changed
    # the hunk's context did not match line by line (a reformatted string): fall back to
    # searching the first removed line inside the function
    if old:
        target = old[0].strip()
        for j in range(lo, hi):
            if stripped_file[j] == target:
                return j + 1, changed
    return span[0], changed


def _inside_string(line: str, pos: int) -> str | None:
    """The text of the string literal character *pos* of a line of code lies in (not inside an
    f-string's braces), or None: a rough tokeniser, enough for one-line literals."""
    quote = None
    opened = 0
    depth = 0
    fstring = False
    i = 0
    while i < pos and i < len(line):
        c = line[i]
        if quote is None:
            if c in "\"'":
                quote = c
                opened = i
                fstring = i > 0 and line[i - 1] in "fF"
        elif c == "\\":
            i += 1
        elif fstring and c == "{":
            depth += 1
        elif fstring and c == "}":
            depth -= 1
        elif c == quote and depth == 0:
            quote = None
        i += 1
    if quote is None or depth != 0:
        return None
    end = line.find(quote, max(pos, opened + 1))
    return line[opened + 1 : end if end >= 0 else len(line)]


def is_message_text(changed: list[str]) -> bool:
    """A mutant that only changes the wording of a message: ``XX`` around a string with a space
    in it (a sentence, not a key or a mode name), its case, or a message made only of string
    literals replaced by None."""
    old = [c[2:] for c in changed if c.startswith("- ")]
    new = [c[2:] for c in changed if c.startswith("+ ")]
    if not old:
        return False
    if new == ["None"] or new == ["None,"] or new == ["(removed)"]:
        return all(o[:1] in "\"'" or o[:2] in ('f"', "f'") for o in old)
    if len(old) != len(new):
        return False
    for o, n in zip(old, new):
        start = 0
        while start < min(len(o), len(n)) and o[start] == n[start]:
            start += 1
        if n.replace("XX", "") != o and n.lower() != o.lower():
            return False
        literal = _inside_string(o, start)
        if literal is None or " " not in literal:
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("module", help="path of the mutated file, e.g. cnnreport/analysis/statistics.py")
    parser.add_argument("--out", required=True, type=Path, help="folder for the survivors file")
    parser.add_argument("--name", required=True, help="short name for the output file")
    parser.add_argument("--only", nargs="*", default=[], help="mutant-name patterns the run was limited to")
    parser.add_argument("--seconds", type=int, default=0, help="wall time of the run, for the survivors file")
    args = parser.parse_args()

    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    meta = json.loads((Path("mutants") / (args.module + ".meta")).read_text(encoding="utf-8"))
    codes: dict[str, int | None] = meta["exit_code_by_key"]
    if args.only:
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, p) for p in args.only)}

    source = Path(args.module).read_text(encoding="utf-8")
    file_lines = source.splitlines()
    tree = ast.parse(source)

    counts = {"killed": 0, "survived": 0, "no tests": 0, "timeout": 0, "other": 0}
    left: list[tuple[int, str, str, list[str]]] = []
    text_only = 0  # survivors that only reword a message
    for key, code in sorted(codes.items()):
        st = status(code)
        if st == "not checked":
            continue
        counts[st if st in counts else "other"] += 1
        if st in ("killed", "timeout"):
            continue
        name, class_name = orig_function_and_class_names_from_key(key)
        span = function_span(tree, name, class_name)
        try:
            diff = get_diff_for_mutant(key, path=args.module)
        except Exception as exc:  # noqa: BLE001 - report the mutant even if its diff cannot be shown
            left.append((span[0] if span else 0, key, st, [f"(no diff: {exc})"]))
            continue
        line, changed = locate(diff, file_lines, span)
        if st == "survived" and is_message_text(changed):
            st = "survived [message text]"
            text_only += 1
        left.append((line or 0, key, st, changed))

    total = sum(counts.values())
    score = 100.0 * (counts["killed"] + counts["timeout"]) / total if total else 0.0
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / f"{args.name}.survivors.txt"
    with report.open("w", encoding="utf-8") as f:
        scope = f" (only {', '.join(args.only)})" if args.only else ""
        f.write(f"# {args.module}{scope}: {total} mutants, {counts['killed']} killed, "
                f"{counts['survived']} survived, {counts['no tests']} no tests, {counts['timeout']} timeout, "
                f"{counts['other']} other; score {score:.1f}%; {args.seconds} s\n")
        rest = total - text_only
        f.write(f"# {text_only} of the survivors only reword a message (tagged [message text]); without them: "
                f"{100.0 * (counts['killed'] + counts['timeout']) / rest if rest else 0.0:.1f}% of {rest}\n")
        f.write("# Each entry: file:line  status  mutant name, then the line as it is (-) and as the mutant has it (+).\n")
        f.write("# 'no tests': no selected test calls the function in-process (only a subprocess, or none).\n\n")
        for line, key, st, changed in sorted(left):
            f.write(f"{args.module}:{line}  {st}  {key}\n")
            for c in changed:
                f.write(f"    {c}\n")
    print("\t".join([args.module, str(total), str(counts["killed"]), str(counts["survived"]),
                     str(counts["no tests"]), str(counts["timeout"]), str(counts["other"]), f"{score:.1f}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
