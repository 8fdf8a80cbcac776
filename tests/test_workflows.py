"""The GitHub workflows: the project's CI and release, and the example users copy.

Parsed as YAML (as GitHub reads them), then checked for what keeps them safe: nothing installs
the unpublished name `cnnreport` from PyPI, every action is pinned to a commit, permissions
are the least each job needs, and publishing happens only through PyPI's trusted publishing.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "github-actions.yml"
CI = ROOT / ".github" / "workflows" / "ci.yml"
RELEASE = ROOT / ".github" / "workflows" / "release.yml"
ALL = [EXAMPLE, CI, RELEASE]


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean true; GitHub reads it as "on".
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def pip_install_args(script: str) -> list[list[str]]:
    """The arguments of every `pip install` in a shell script, one list per command."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        for command in re.split(r"&&|\|\||;", line):
            words = shlex.split(command, comments=True)
            if "pip" in words and "install" in words:
                found.append(words[words.index("install") + 1 :])
    return found


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_tag_in_a_comment(path):
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert lines, "no actions found: the test would prove nothing"
    for line in lines:
        assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w.-]+@[0-9a-f]{40}\s+# v\d+(\.\d+)*", line), line


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_workflow_runs_pull_request_code_with_the_base_repositorys_secrets(path):
    assert "pull_request_target" not in load(path)["on"]
    assert "write-all" not in path.read_text(encoding="utf-8")


def test_example_installs_cnnreport_from_a_pinned_commit_not_from_pypi():
    doc = load(EXAMPLE)
    source = doc["env"]["CNNREPORT"]
    # A placeholder the user must fill, or a full commit SHA: never a PyPI name or a branch.
    assert re.fullmatch(r"git\+https://github\.com/[\w.-]+/cnnreport@(COMMIT_SHA|[0-9a-f]{40})", source), source
    installs = [args for step in steps(doc) if "run" in step for args in pip_install_args(step["run"])]
    targets = [a for args in installs for a in args if not a.startswith("-") and a not in ("constraints-cpu.txt", "pip", "torch")]
    assert "$CNNREPORT" in targets
    for target in targets:
        assert not re.fullmatch(r"cnnreport([<>=!~\[].*)?", target, re.IGNORECASE), f"installs {target!r} from PyPI"
    # The placeholder is refused before anything is installed.
    install_step = next(step for step in steps(doc) if "run" in step and "$CNNREPORT" in step["run"])
    guard, install = install_step["run"].index("COMMIT_SHA"), install_step["run"].rindex('install -c constraints-cpu.txt "$CNNREPORT"')
    assert guard < install and "exit 1" in install_step["run"][guard:install]


def test_example_permissions_are_read_plus_pr_comments_only():
    doc = load(EXAMPLE)
    assert doc["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert all("permissions" not in job for job in doc["jobs"].values())
    checkouts = [s for s in steps(doc) if s.get("uses", "").startswith("actions/checkout@")]
    assert len(checkouts) == 2 and all(s["with"]["persist-credentials"] is False for s in checkouts)


def test_ci_runs_the_readme_test_command_on_push_and_pull_request_with_read_only_access():
    doc = load(CI)
    assert set(doc["on"]) == {"push", "pull_request"}
    assert doc["permissions"] == {"contents": "read"}
    runs = [s["run"].strip() for s in steps(doc) if "run" in s]
    assert runs == ["bash .ci/run"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`.ci/run` runs exactly this command" in readme


def test_release_builds_checks_and_publishes_only_through_trusted_publishing_when_enabled():
    doc = load(RELEASE)
    assert doc["on"] == {"push": {"tags": ["v*"]}}
    assert doc["permissions"] == {}
    build, publish = doc["jobs"]["build"], doc["jobs"]["publish"]
    assert build["permissions"] == {"contents": "read"}
    script = "\n".join(s.get("run", "") for s in build["steps"])
    assert "python -m build" in script and "twine check --strict dist/*" in script
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    assert "vars.PYPI_PUBLISH" in publish["if"]
    uses = [s["uses"].split("@")[0] for s in publish["steps"] if "uses" in s]
    assert uses == ["actions/download-artifact", "pypa/gh-action-pypi-publish"]
    # Trusted publishing: no stored token is handed to the publish action.
    assert all("password" not in (s.get("with") or {}) for s in publish["steps"])
    assert "secrets." not in RELEASE.read_text(encoding="utf-8")
