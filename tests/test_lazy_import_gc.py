"""The public names are imported on first use with the cyclic collector paused (its walks over
torch's objects cost a fresh process ~0.1 s): the collector is left as the user had it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("enabled", [True, False])
def test_the_first_use_of_a_lazy_name_leaves_the_collector_as_it_was(enabled):
    script = (
        "import gc, sys\n"
        f"gc.enable() if {enabled} else gc.disable()\n"
        "import cnnreport\n"
        "assert 'torch' not in sys.modules\n"
        "cnnreport.build_report\n"
        "print('torch' in sys.modules, gc.isenabled())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", str(enabled)]


def test_a_failed_lazy_import_turns_the_collector_back_on(monkeypatch):
    import gc
    import importlib

    import cnnreport

    def broken(name, package=None):
        raise ImportError("simulated")

    monkeypatch.setattr(importlib, "import_module", broken)
    monkeypatch.delitem(cnnreport.__dict__, "diff_reports", raising=False)
    assert gc.isenabled()
    with pytest.raises(ImportError, match="simulated"):
        cnnreport.diff_reports
    assert gc.isenabled()
