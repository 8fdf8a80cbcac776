"""Byte-for-byte determinism: the same model, probes and options give identical HTML, JSON and
Markdown, across runs and across processes (no timestamps, no hash()-ordered sets, no PNG time
chunks, fixed seeds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _demo(folder: Path, hash_seed: int, *extra: str) -> dict[str, bytes]:
    folder.mkdir()
    # Relative output names: the command line is part of the provenance, so both runs must
    # be given the same one. A different hash seed per run would expose set/dict-order leaks.
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "SOURCE_DATE_EPOCH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "cnnreport.cli", "demo", "-q", "-o", "A.html", "--json", "A.json", "--markdown", "A.md", *extra],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {name: (folder / name).read_bytes() for name in ("A.html", "A.json", "A.md")}


@pytest.mark.slow
def test_demo_report_is_byte_identical_across_processes(tmp_path):
    first = _demo(tmp_path / "one", 1)
    second = _demo(tmp_path / "two", 2)
    for name in first:
        assert first[name], f"{name} is empty"
        if first[name] != second[name]:
            a, b = first[name], second[name]
            at = next(i for i in range(min(len(a), len(b))) if a[i] != b[i]) if a[: len(b)] != b[: len(a)] else min(len(a), len(b))
            pytest.fail(f"{name} differs between two runs at byte {at}: {a[max(0, at - 60) : at + 60]!r} vs {b[max(0, at - 60) : at + 60]!r}")
    assert b"cnnreport-provenance" in first["A.html"]
    assert b'"created": ""' in first["A.json"]  # no timestamp unless --timestamp


@pytest.mark.slow
def test_timestamp_appears_only_when_asked(tmp_path):
    out = _demo(tmp_path / "stamped", 0, "--timestamp")
    assert b'"created": "' in out["A.json"] and b'"created": ""' not in out["A.json"]
