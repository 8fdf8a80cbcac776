"""Text from the user's files (checkpoint keys, layer names, paths recorded in a report) never
reaches the terminal raw: control characters and bidi controls are printed as escapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from click.testing import CliRunner

from cnnreport.cli.main import main
from cnnreport.errors import OptionError, terminal_safe

# What a terminal acts on: ESC (colour, cursor, OSC title), BEL, CR, backspace, DEL, the
# one-byte CSI 0x9b, and the bidi override / isolate characters.
RAW = ["\x1b", "\x07", "\x08", "\x7f", "\x9b", "\u202e", "\u2066", "\u200f"]


def test_terminal_safe_shows_each_control_as_an_escape():
    assert terminal_safe("a\x1b[31mred\x07") == "a\\x1b[31mred\\x07"
    assert terminal_safe("x\u202etxt.exe") == "x\\u202etxt.exe"
    assert terminal_safe("\x9b2J\x7f") == "\\x9b2J\\x7f"
    assert terminal_safe("C:\\models\\net.pt é ✓ 日本") == "C:\\models\\net.pt é ✓ 日本"  # printable text unchanged
    assert terminal_safe(terminal_safe("\x1b")) == "\\x1b"


def test_error_one_line_folds_whitespace_and_escapes_controls():
    err = OptionError("key 'a\x1b]0;owned\x07b'\nnot found\r\tnow", hint="rename \u202eit")
    assert err.one_line() == "key 'a\\x1b]0;owned\\x07b' not found now (rename \\u202eit)"


MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)
    """
)


def test_a_checkpoint_key_with_escape_sequences_is_printed_escaped(tmp_path):
    (tmp_path / "net.py").write_text(MODEL, encoding="utf-8")
    torch.manual_seed(0)
    state = {"conv.weight": torch.zeros(4, 3, 3, 3), "conv.bias": torch.zeros(4)}
    hostile = "conv\x1b]0;owned\x07\x1b[2J\u202ebias"
    state[hostile] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    done = subprocess.run(
        [sys.executable, "-m", "cnnreport.cli", "generate", "net.py:Net", "--weights", "w.pt", "--input-size", "3", "8", "8", "-o", "r.html", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnreport: error: "), done.stderr
    for char in RAW:
        assert char not in done.stderr
    assert "\\x1b]0;owned\\x07" in lines[0]  # the key is named, visibly
    assert not (tmp_path / "r.html").exists()


def test_verify_escapes_what_a_report_records(tmp_path):
    from cnnreport.io.provenance import model_fingerprint

    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 1)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    report = {
        "schema_version": 1,
        "provenance": {"model_fingerprint": "0" * 64, "checkpoint_path": "ck\x1b[31mpt\u202e.pt", "checkpoint_sha256": ""},
    }
    (tmp_path / "r.json").write_text(json.dumps(report), encoding="utf-8")
    assert model_fingerprint(model) != "0" * 64
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "r.json"), "--weights", str(tmp_path / "w.pt")])
    assert result.exit_code == 1, result.output
    assert "no match" in result.stderr and "ck\\x1b[31mpt\\u202e.pt" in result.stderr
    for char in RAW:
        assert char not in result.output

