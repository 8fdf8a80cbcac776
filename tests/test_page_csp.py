"""The pages' Content-Security-Policy runs only the report's own scripts, allowed by hash.

Without 'unsafe-inline' for scripts, markup that ever slipped past escaping cannot run: an
inline script appended to the file, an event-handler attribute or a javascript: URL is refused
by the browser, while the page's own scripts (allowed by the SHA-256 of their exact text) work.
"""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnreport
from cnnreport.report.diff import diff_reports
from cnnreport.report.pipeline import make_options


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


PROBES = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A report page of a ResNet-50-like model (folded graph: the graph script is on it) and a diff page."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from reference_models import resnet50_like

    root = tmp_path_factory.mktemp("csp")
    torch.manual_seed(0)
    report_path = root / "report.html"
    cnnreport.generate_report(resnet50_like().eval(), torch.rand(1, 3, 32, 32), output=str(report_path), progress=False, max_channels=2, max_probes=1)
    torch.manual_seed(1)
    old, new = Net().eval(), Net().eval()
    diff_path = root / "diff.html"
    diff_reports(old, new, PROBES, options=make_options(None, progress=False)).write_html(str(diff_path))
    return {"report": report_path, "diff": diff_path}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[tuple[str, str, str | None]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._script: dict | None = None
        self._text: list[str] = []
        self.csp = ""

    def handle_starttag(self, tag, attrs):
        self.attrs.extend((tag, name, value) for name, value in attrs)
        if tag == "meta" and dict(attrs).get("http-equiv", "").lower() == "content-security-policy":
            self.csp = dict(attrs)["content"]
        if tag == "script":
            self._script, self._text = dict(attrs), []

    def handle_data(self, data):
        if self._script is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._text)))
            self._script = None


def parsed(path: Path) -> _Tags:
    tags = _Tags()
    tags.feed(path.read_text(encoding="utf-8"))
    tags.close()
    return tags


@pytest.mark.parametrize("kind", ["report", "diff"])
def test_script_src_lists_the_hash_of_each_inline_script_and_no_unsafe_inline(pages, kind):
    tags = parsed(pages[kind])
    directives = {d.split()[0]: d.split()[1:] for d in (part.strip() for part in tags.csp.split(";")) if d}
    script_src = directives["script-src"]
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    executable = [text for attrs, text in tags.scripts if "type" not in attrs]
    assert len(executable) == (2 if kind == "report" else 1)  # the page script (+ the graph's)
    for text in executable:
        digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
        assert f"'sha256-{digest}'" in script_src
    # The data block is not executed, so it needs no hash; it is the only typed script.
    assert [attrs.get("type") for attrs, _ in tags.scripts if "type" in attrs] == ["application/json"]
    assert directives["default-src"] == ["'none'"] and directives["img-src"] == ["data:"]


@pytest.mark.parametrize("kind", ["report", "diff"])
def test_no_event_handler_attributes_or_javascript_urls(pages, kind):
    tags = parsed(pages[kind])
    assert len(tags.attrs) > 100
    handlers = [(tag, name) for tag, name, _ in tags.attrs if name.startswith("on")]
    assert handlers == []
    assert [(tag, name) for tag, name, value in tags.attrs if value and value.strip().lower().startswith("javascript:")] == []


# -- in Chromium -----------------------------------------------------------------------------------

INJECTED = (
    "<script>document.documentElement.dataset.injected = 'inline';</script>"
    "<img src=\"data:,\" onerror=\"document.documentElement.dataset.injected = 'handler'\">"
    "<a id=\"js-link\" href=\"javascript:document.documentElement.dataset.injected='url'\">x</a>"
)
WATCH = "window.__violations = []; document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.effectiveDirective));"


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["report", "diff"])
def test_page_scripts_run_and_injected_scripts_do_not(pages, kind, tmp_path):
    playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[test]')")
    from test_browser import CHROMIUM_ARGS, chromium_path

    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium binary found; install it with: apt-get install chromium")
    hostile = tmp_path / f"{kind}-injected.html"
    hostile.write_text(pages[kind].read_text(encoding="utf-8").replace("</body>", INJECTED + "</body>", 1), encoding="utf-8")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            for page_path, injected in ((pages[kind], False), (hostile, True)):
                context = browser.new_context(viewport={"width": 1280, "height": 860})
                context.add_init_script(WATCH)  # through DevTools, which the policy does not govern
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(page_path.as_uri(), wait_until="load")
                if injected:
                    page.locator("#js-link").dispatch_event("click")
                page.wait_for_timeout(200)
                # The page's own script ran: it makes every figure a button that opens the lightbox.
                zoomable = page.eval_on_selector_all("img[data-zoom]", "imgs => imgs.filter(i => i.getAttribute('role') === 'button').length")
                assert zoomable > 0
                page.locator("img[data-zoom]").first.dispatch_event("click")
                assert page.eval_on_selector("#lightbox", "d => d.open") is True
                assert page.evaluate("document.documentElement.dataset.injected || ''") == ""
                violations = page.evaluate("window.__violations")
                if injected:
                    assert "script-src-elem" in violations and "script-src-attr" in violations, violations
                else:
                    assert violations == [] and errors == []
                context.close()
        finally:
            browser.close()
