"""Reports in Jupyter: the page inline in a sandboxed frame, ``cnnreport.show``, and progress.

A report shows itself in an output cell as the whole page inside
``<iframe sandbox="allow-scripts" srcdoc="...">``: its scripts run in the frame, whose origin is
opaque, so they cannot reach the notebook's page and the notebook's page runs none of them.
One real notebook is built here with nbformat and executed headless by nbclient on an
ipykernel kernel; its output cell is then opened in Chromium, frame and all.
"""

from __future__ import annotations

import html
import importlib.util
import io
import os
import re
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnreport

ROOT = Path(__file__).resolve().parent.parent


class Net(nn.Module):
    """Three named layers a reader can find on the page: two convolutions and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(3, 4, 3, padding=1)
        self.deep_conv = nn.Conv2d(4, 5, 3, padding=1)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.deep_conv(torch.relu(self.stem_conv(x)))).mean((2, 3)))


def tiny_model(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net().eval()


# Not square (20 x 12), so a page that swapped height and width would not match.
PROBES = torch.rand(3, 3, 20, 12, generator=torch.Generator().manual_seed(0))
# Quotes, a tag and an entity: the page holds them escaped, and the frame's attribute escapes the page again.
TITLE = 'tiny "quoted" <b>net</b> & co\'s'


class Tags(HTMLParser):
    """Every start tag with its attributes, as a browser reads them (entities decoded)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if a.get("id")}


@pytest.fixture(scope="module")
def report():
    return cnnreport.build_report(tiny_model(), PROBES, progress=False, title=TITLE)


def assert_framed_page(markup: str, page: str) -> None:
    """``markup`` is one sandboxed frame holding exactly ``page``, and nothing that runs."""
    outer = Tags(markup)
    assert [tag for tag, _ in outer.tags] == ["div", "iframe"]  # no <script>, no <style>, no second frame
    frame = outer.tags[1][1]
    assert frame["sandbox"].split() == ["allow-scripts"]  # scripts, and no allow-same-origin (nor popups, top navigation, forms)
    assert "src" not in frame
    assert frame["srcdoc"] == page
    assert "<script" not in markup.lower()  # the page's scripts are inside the attribute, as text


# -- the frame -----------------------------------------------------------------------------


def test_repr_html_is_the_whole_page_in_a_sandboxed_frame(report):
    assert_framed_page(report._repr_html_(), report.to_html())


def test_srcdoc_unescapes_to_the_page_byte_for_byte(report):
    page = report.to_html()
    srcdoc = re.fullmatch(r'.*<iframe [^>]*srcdoc="([^"]*)"></iframe></div>', report._repr_html_(), re.S)
    assert srcdoc is not None
    assert html.unescape(srcdoc.group(1)) == page
    # The page's own escaped title (&#34; and &lt;) comes back as it was, not decoded twice.
    assert "tiny &#34;quoted&#34; &lt;b&gt;net&lt;/b&gt; &amp; co&#39;s" in html.unescape(srcdoc.group(1))


def test_diff_report_shows_in_the_same_kind_of_frame():
    diff = cnnreport.diff_reports(tiny_model(0), tiny_model(1), PROBES, title="diff <of> two", options=cnnreport.ReportOptions(progress=False))
    assert_framed_page(diff._repr_html_(), diff.to_html())


def test_the_text_beside_the_frame_is_one_short_line(report):
    pretty = pytest.importorskip("IPython.lib.pretty", reason="IPython is not installed (pip install -e '.[test]')")
    text = pretty.pretty(report)
    assert text == f"<cnnreport Report {TITLE!r}: 4 layers, 3 probes, {len(report.alerts)} alerts>"


# -- show ----------------------------------------------------------------------------------


def test_show_displays_the_report_once_and_writes_no_file(tmp_path, monkeypatch):
    display_module = pytest.importorskip("IPython.display", reason="IPython is not installed (pip install -e '.[test]')")
    shown: list[object] = []
    monkeypatch.setattr(display_module, "display", lambda obj: shown.append(obj))
    monkeypatch.chdir(tmp_path)
    # Nothing returned: a cell ending in show(...) would otherwise show the page twice.
    assert cnnreport.show(tiny_model(), PROBES, title="shown", progress=False, max_channels=2) is None
    assert len(shown) == 1
    assert isinstance(shown[0], cnnreport.Report)
    assert shown[0].title == "shown"
    assert shown[0].options.max_channels == 2
    assert [r.name for r in shown[0].layers][1:] == ["stem_conv", "deep_conv", "head"]
    assert sorted(os.listdir(tmp_path)) == []


def test_show_without_ipython_says_what_to_use_instead(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython.display", None)  # its import now raises ImportError
    with pytest.raises(ImportError, match=r"needs IPython; elsewhere use build_report\(\.\.\.\)\.write_html\(path\)"):
        cnnreport.show(tiny_model(), PROBES, title="no ipython", progress=False)


def test_show_is_public_api():
    assert "show" in cnnreport.__all__
    assert cnnreport.show.__doc__.startswith("Build the report of ``model`` on ``probes`` and display it inline")


# -- progress in a terminal ----------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def without_times(text: str) -> str:
    return re.sub(r" +\d+\.\ds", "", text)


def test_terminal_bar_is_todays_line(monkeypatch):
    from cnnreport.support.progress import Progress

    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = Progress(4, label="forward")
    bar.advance(1)
    bar.advance(5)  # past the total: stays at 4/4
    bar.close()
    # 24 cells: 1/4 fills 6, 4/4 fills all 24.
    assert without_times(terminal.getvalue()) == "\rforward    [######..................] 1/4\rforward    [########################] 4/4\n"


def test_no_bar_when_stderr_is_not_a_terminal_or_progress_is_off(monkeypatch):
    from cnnreport.support.progress import Progress

    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    bar = Progress(4, label="forward")
    bar.advance(4)
    bar.close()
    assert piped.getvalue() == ""

    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    off = Progress(4, enabled=False, label="forward")
    off.advance(4)
    off.close()
    assert terminal.getvalue() == ""


def test_a_report_built_in_a_terminal_draws_todays_bars(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    cnnreport.build_report(tiny_model(), PROBES, title="terminal")
    lines = without_times(terminal.getvalue()).split("\n")
    assert lines[0].split("\r")[-1] == "forward    [########################] 3/3"
    assert lines[1].split("\r")[-1].startswith("figures    [########################] ")
    assert lines[2:] == [""]


# -- a real notebook -----------------------------------------------------------------------

SETUP = f"""\
import sys
sys.path.insert(0, {str(ROOT)!r})  # this checkout's cnnreport
sys.modules["ipywidgets"] = None  # tqdm's text bar, whether ipywidgets is installed or not
import torch
from torch import nn
import cnnreport
"""

MODEL = """\
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, 4, 3, padding=1)
        self.deep_conv = nn.Conv2d(4, 5, 3, padding=1)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.relu(self.deep_conv(torch.relu(self.stem_conv(x)))).mean((2, 3)))

torch.manual_seed(0)
model = Net().eval()
probes = torch.rand(3, 3, 20, 12)
"""

SHOW = 'cnnreport.show(model, probes, title="nb tiny")'
SHOW_QUIET = 'cnnreport.show(model, probes[:2], title="nb quiet", progress=False)'


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The notebook executed headless: its cells with their outputs, the folder it ran in, the seconds it took."""
    if importlib.util.find_spec("ipykernel") is None:
        pytest.skip("ipykernel is not installed (pip install -e '.[test]'): no kernel to run a notebook on")
    import nbformat
    from nbclient import NotebookClient

    folder = tmp_path_factory.mktemp("notebook")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (SETUP, MODEL, SHOW, SHOW_QUIET)]
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    seconds = time.perf_counter() - start
    print(f"notebook executed in {seconds:.1f} s")
    return nb.cells, folder, seconds


def html_outputs(cell) -> list[str]:
    return [o["data"]["text/html"] for o in cell.outputs if o.output_type == "display_data"]


def stderr_text(cell) -> str:
    return "".join(o["text"] for o in cell.outputs if o.output_type == "stream" and o["name"] == "stderr")


def test_notebook_output_cell_holds_the_report_in_its_frame(notebook):
    cells, folder, _ = notebook
    show_cell = cells[2]
    assert [o.output_type for o in show_cell.outputs if o.output_type != "stream"] == ["display_data"]
    (framed,) = html_outputs(show_cell)
    outer = Tags(framed)
    assert [tag for tag, _ in outer.tags] == ["div", "iframe"]
    frame = outer.tags[1][1]
    assert frame["sandbox"].split() == ["allow-scripts"]
    page = Tags(frame["srcdoc"])
    # The model's layers, each convolution with its section, and the title the cell gave.
    assert {"sec-stem_conv", "sec-deep_conv", "overview", "architecture"} <= page.ids()
    rows = [a["data-search"].split()[0] for tag, a in page.tags if tag == "tr" and "data-search" in a]
    assert rows[1:] == ["stem_conv", "deep_conv", "head"]
    assert "<title>nb tiny" in frame["srcdoc"]
    (plain,) = [o["data"]["text/plain"] for o in show_cell.outputs if o.output_type == "display_data"]
    assert plain.startswith("<cnnreport Report 'nb tiny': 4 layers, 3 probes, ")
    assert sorted(os.listdir(folder)) == []  # show writes no file


def test_notebook_progress_is_a_notebook_bar_and_off_means_nothing(notebook):
    cells = notebook[0]
    progress = stderr_text(cells[2])
    # tqdm's bar in the cell (a widget where ipywidgets is installed; blocked here, so its text bar).
    assert "forward: 100%|██████████| 3/3" in progress
    assert "figures: 100%|██████████|" in progress
    assert "[####" not in progress  # not the terminal's line
    quiet = cells[3]
    assert [o.output_type for o in quiet.outputs] == ["display_data"]  # progress=False: no stream at all


# -- the output cell in a browser ----------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from test_browser import CHROMIUM_ARGS, chromium_path  # skips where playwright is not installed

    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium binary found (looked for `chromium` on PATH and /usr/bin/chromium); install it with: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


NOTEBOOK_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>the notebook</title></head>
<body><div id="cell-output">{output}</div></body></html>
"""


# Every frame records the policy violations it sees; added through DevTools, which the policy does not govern.
WATCH = "window.__violations = []; document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.effectiveDirective));"


class FramedVisit:
    def __init__(self, browser, path: Path) -> None:
        self.url = path.as_uri()
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.context.add_init_script(WATCH)
        self.console: list[str] = []
        self.requests: list[str] = []
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(self.url, wait_until="load")
        assert len(self.page.frames) == 2
        self.frame = self.page.frames[1]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_output(browser, tmp_path):
    opened: list[FramedVisit] = []

    def open_page(output: str, name: str = "notebook.html") -> FramedVisit:
        path = tmp_path / name
        path.write_text(NOTEBOOK_PAGE.format(output=output), encoding="utf-8")
        visit = FramedVisit(browser, path)
        opened.append(visit)
        return visit

    yield open_page
    for visit in opened:
        visit.close()


@pytest.mark.browser
def test_notebook_output_works_inside_its_frame(notebook, open_output):
    (framed,) = html_outputs(notebook[0][2])
    v = open_output(framed)
    frame, page = v.frame, v.page
    assert frame.url == "about:srcdoc"
    assert frame.evaluate("document.title") == "nb tiny"
    sections = frame.eval_on_selector_all("section[id]", "ss => ss.map(s => s.id)")
    assert {"overview", "architecture", "sec-stem_conv", "sec-deep_conv"} <= set(sections)

    # The page's script runs in the frame: the architecture filter narrows the rows.
    frame.locator("#layer-filter").fill("deep")
    assert frame.locator("#layer-count").inner_text() == "1 of 4 rows"
    visible = frame.eval_on_selector_all("#arch-table tbody tr[data-depth]", "rs => rs.filter(r => r.offsetParent !== null).map(r => r.querySelector('th').textContent.trim())")
    assert [t.split()[0] for t in visible] == ["deep_conv"]
    frame.locator("#layer-filter").press("Escape")

    # The lightbox (a modal <dialog>, which the sandbox allows) opens on a figure and closes on Escape.
    frame.locator("img.zoom").first.click()
    assert frame.eval_on_selector("#lightbox", "d => d.open") is True
    page.keyboard.press("Escape")
    assert frame.eval_on_selector("#lightbox", "d => d.open") is False

    # A sidebar link moves within the frame's own document; it does not load the page around it.
    top = "document.getElementById('sec-deep_conv').getBoundingClientRect().top"
    assert frame.evaluate(top) > frame.evaluate("innerHeight")  # below the fold before the click
    frame.locator(".sidebar a[href='#sec-deep_conv']").click()
    deadline = time.monotonic() + 5
    while not 0 <= frame.evaluate(top) < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 0 <= frame.evaluate(top) < 40
    assert frame.url == "about:srcdoc#sec-deep_conv"
    assert frame.locator(".sidebar a.current").get_attribute("href") == "#sec-deep_conv"
    assert page.url == v.url
    assert len(page.frames) == 2

    assert frame.evaluate("window.__violations") == []  # the page's own scripts pass its policy
    assert v.console == []
    assert v.requests == [v.url]  # nothing fetched, inside the frame or out


@pytest.mark.browser
def test_frame_is_sandboxed_and_the_notebook_page_runs_no_report_script(notebook, open_output):
    (framed,) = html_outputs(notebook[0][2])
    v = open_output(framed)
    frame, page = v.frame, v.page
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.querySelectorAll('#cell-output *').length") == 2  # the box and its frame
    # An opaque origin: the frame's scripts cannot read the notebook's page.
    assert frame.evaluate("self.origin") == "null"
    assert frame.evaluate("(() => { try { return parent.document.title; } catch (e) { return e.name; } })()") == "SecurityError"
    # Full width of the cell, 800 px tall, the reader may drag it taller; the frame fills the box.
    box = page.evaluate(
        """() => { const d = document.querySelector('.cnnreport-frame'), f = d.querySelector('iframe'), r = d.getBoundingClientRect();
                   return [r.width, r.height, d.parentElement.clientWidth, getComputedStyle(d).resize, f.offsetWidth, f.offsetHeight, d.clientWidth, d.clientHeight]; }"""
    )
    assert box == [1264, 800, 1264, "vertical", 1262, 798, 1262, 798]
    # The report's layout fits the frame's width: no sideways scroll inside it.
    assert frame.evaluate("document.scrollingElement.scrollWidth") <= frame.evaluate("window.innerWidth")


@pytest.mark.browser
def test_page_policy_holds_inside_the_frame(notebook, open_output):
    """In srcdoc the page's own CSP meta applies: its hashed scripts run, a script added to it does not."""
    (framed,) = html_outputs(notebook[0][2])
    page_html = Tags(framed).tags[1][1]["srcdoc"]
    injected = page_html.replace("</body>", '<script>document.title = "injected ran";</script></body>')
    assert injected.count("injected ran") == 1
    v = open_output(f'<iframe sandbox="allow-scripts" srcdoc="{html.escape(injected)}"></iframe>', "injected.html")
    assert v.frame.evaluate("document.title") == "nb tiny"
    # The violation event is queued as a task of its own: wait for it, then look at all of them.
    deadline = time.monotonic() + 5
    while v.frame.evaluate("window.__violations.length") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert v.frame.evaluate("window.__violations") == ["script-src-elem"]
    v.frame.locator("#layer-filter").fill("stem")
    assert v.frame.locator("#layer-count").inner_text() == "1 of 4 rows"
