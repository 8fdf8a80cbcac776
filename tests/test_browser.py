"""The report the way a person reads it: loaded from disk in headless Chromium, offline.

One demo report is generated per module and each test opens it in a fresh page, counting every
request the page makes. Screenshots land in ``test-output/browser/`` (git-ignored) for people
to look at; README's ``docs/overview.png`` is a cropped copy of the overview one.

Chromium is Debian's (``/usr/bin/chromium``), driven by the Playwright package; the tests skip,
saying why, only where no Chromium binary exists (``.ci/run`` installs it with apt-get).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[test]')")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "browser"
LAPTOP = {"width": 1280, "height": 860}
HALF_SCREEN = {"width": 700, "height": 860}


def chromium_path() -> str | None:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    return found if os.path.exists(found) else None


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium binary found (looked for `chromium` on PATH and /usr/bin/chromium); install it with: apt-get install chromium")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo report on disk, and the Report object it was rendered from."""
    import cnnreport
    from cnnreport.io.demo import demo_probe_paths, load_demo_model

    out = tmp_path_factory.mktemp("browser") / "report.html"
    report = cnnreport.generate_report(load_demo_model(), [str(p) for p in demo_probe_paths()], output=str(out), progress=False)
    return out, report


class Visit:
    """A page with the report loaded, plus everything it asked the network for or complained about."""

    def __init__(self, browser, path: Path, **context_options):
        self.url = path.as_uri()
        self.context = browser.new_context(**context_options)
        self.requests: list[str] = []  # what the page asked for
        self.network: list[str] = []  # what got past the page to the network layer
        self.errors: list[str] = []
        # Every request is seen here first; anything but the file itself or a data: URI is
        # recorded and refused, so a leak fails the test instead of reaching the network.
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.goto(self.url, wait_until="load")

    def _route(self, route):
        url = route.request.url
        self.network.append(url)
        if url == self.url or url.startswith("data:"):
            route.continue_()
        else:
            route.abort()

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    def visible_rows(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#arch-table tbody tr[data-depth]",
            "rows => rows.filter(r => r.offsetParent !== null).map(r => r.querySelector('th').textContent.trim())",
        )

    def in_viewport(self, selector: str) -> bool:
        return self.page.evaluate(
            """sel => { const r = document.querySelector(sel).getBoundingClientRect();
                       return r.top >= -1 && r.top < window.innerHeight && r.bottom > 0; }""",
            selector,
        )

    def wait_until(self, expression: str, arg=None, timeout: float = 5.0) -> None:
        """Poll ``expression`` (a JS function of ``arg``) from here until it is truthy.

        Not Playwright's ``wait_for_function``: when its first check fails it polls with a
        predicate it builds by ``eval`` inside the page, which the report's Content Security
        Policy (no 'unsafe-eval', rightly) refuses, so the wait failed whenever it had to wait.
        ``page.evaluate`` runs through the DevTools protocol, which the policy does not govern.
        """
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(expression, arg):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout} s: {expression} ({arg!r})")
            time.sleep(0.02)

    def close(self):
        self.context.close()


@pytest.fixture
def visit(browser, demo):
    opened: list[Visit] = []

    def open_page(**options) -> Visit:
        options.setdefault("viewport", LAPTOP)
        v = Visit(browser, demo[0], **options)
        opened.append(v)
        return v

    yield open_page
    for v in opened:
        v.close()


# -- tests ---------------------------------------------------------------------------------


def test_loads_offline_with_no_errors_and_shows_the_model(visit, demo):
    v = visit()
    report = demo[1]
    assert v.requests and v.requests[0] == v.url
    assert v.foreign_requests() == []
    assert [u for u in v.network if u != v.url and not u.startswith("data:")] == []
    assert v.errors == []
    assert v.page.title() == report.title
    assert v.page.locator("h1").inner_text() == report.title
    # The overview's numbers come from the report, with thousands separators.
    assert f"{report.model.total_params:,}" in v.page.locator("#overview .cards").inner_text()
    # Every probe is there with its top prediction, and its thumbnail actually decoded.
    probes = v.page.locator("#overview figure.probe")
    assert probes.count() == len(report.probes)
    first = report.probes[0]
    assert first.name in probes.first.inner_text()
    assert first.predictions[0].label in probes.first.locator(".preds li.top").inner_text()
    assert v.page.eval_on_selector("#overview img", "img => img.complete && img.naturalWidth > 0")


def test_content_security_policy_refuses_network_loads(visit):
    v = visit()
    # Inject a remote image and a fetch: the page's CSP must refuse both before any request.
    violations = v.page.evaluate(
        """() => new Promise(resolve => {
             const seen = [];
             document.addEventListener('securitypolicyviolation', e => seen.push(e.violatedDirective));
             const img = new Image(); img.src = 'https://example.invalid/pixel.png'; document.body.appendChild(img);
             fetch('https://example.invalid/data.json').catch(() => {});
             setTimeout(() => resolve(seen), 300);
           })"""
    )
    assert any(d.startswith("img-src") for d in violations)
    assert any(d.startswith("connect-src") or d.startswith("default-src") for d in violations)
    # Chromium reports the attempts as requests, but none reached the network layer.
    assert [u for u in v.network if "example.invalid" in u] == []


def test_sidebar_link_brings_its_section_into_view_and_highlights_it(visit, demo):
    v = visit()
    last = demo[1].sections[-1]
    assert not v.in_viewport(f"#{last.id}")
    link = v.page.locator(f".sidebar a[href='#{last.id}']")
    link.click()
    v.wait_until("sel => { const r = document.querySelector(sel).getBoundingClientRect(); return r.top >= -1 && r.top < innerHeight * 0.5; }", f"#{last.id}")
    assert v.in_viewport(f"#{last.id} summary h3")
    # The entry of the section being read is highlighted (and marked for assistive tech).
    v.wait_until("sel => document.querySelector(sel).classList.contains('current')", f".sidebar a[href='#{last.id}']")
    assert link.get_attribute("aria-current") == "location"
    assert v.page.locator(".sidebar a.current").count() == 1


def test_search_box_filters_and_folds_hide_architecture_rows(visit, demo):
    v = visit()
    rows = demo[1].layers
    assert len(v.visible_rows()) == len(rows)
    search = v.page.locator("#layer-filter")

    search.fill("conv")
    convs = [r.name for r in rows if "conv" in (r.name + " " + r.type).lower()]
    assert convs  # the demo has convolutions
    assert [t.split()[0] for t in v.visible_rows()] == convs
    assert v.page.locator("#layer-count").inner_text() == f"{len(convs)} of {len(rows)} rows"

    search.fill("features.1")  # matches names, so features.10 too
    assert [t.split()[0] for t in v.visible_rows()] == [r.name for r in rows if "features.1" in r.name]

    search.fill("no such layer")
    assert v.visible_rows() == []
    assert v.page.locator("#layer-no-match").is_visible()

    search.press("Escape")  # clears the filter
    assert len(v.visible_rows()) == len(rows)

    # Folding a container hides exactly the rows nested below it.
    container = next(r for r in rows if not r.is_leaf and r.depth > 0)
    nested = [r for r in rows if r.name.startswith(container.name + ".")]
    v.page.locator(f"#{container.row_id} .fold").click()
    assert len(v.visible_rows()) == len(rows) - len(nested)
    assert v.page.locator(f"#{container.row_id} .fold").get_attribute("aria-expanded") == "false"
    v.page.locator(f"#{container.row_id} .fold").click()
    assert len(v.visible_rows()) == len(rows)


def test_layer_section_opens_and_closes(visit, demo):
    v = visit()
    section = demo[1].sections[0]
    details = v.page.locator(f"#{section.id} > details")
    body = v.page.locator(f"#{section.id} .layer-body")
    assert details.evaluate("d => d.open") is True
    v.page.locator(f"#{section.id} > details > summary").click()
    assert details.evaluate("d => d.open") is False
    assert not body.is_visible()
    v.page.locator(f"#{section.id} > details > summary").click()
    assert details.evaluate("d => d.open") is True
    assert body.is_visible()
    # "Collapse all" closes every section; following a link into one opens it again.
    v.page.locator("[data-details='close']").click()
    assert v.page.eval_on_selector_all(".layer > details", "ds => ds.filter(d => d.open).length") == 0
    v.page.locator(f".sidebar a[href='#{section.id}']").click()
    assert details.evaluate("d => d.open") is True


def test_lightbox_opens_on_click_and_closes_with_escape(visit, demo):
    v = visit()
    section = demo[1].sections[0]
    mosaic = section.mosaics[0]
    tile = v.page.locator(f"#{section.id} .mosaic-box").first.locator(".tile").first
    tile.scroll_into_view_if_needed()
    # Every tile is labelled with its channel index (small, in its corner); hover brightens it.
    assert tile.evaluate("t => getComputedStyle(t).color") == "rgba(255, 255, 255, 0.82)"
    tile.hover()
    assert tile.evaluate("t => getComputedStyle(t).color") == "rgb(255, 255, 255)"
    assert tile.inner_text() == mosaic.tiles[0].label
    tile.click()
    dialog = v.page.locator("#lightbox")
    assert dialog.evaluate("d => d.open") is True
    caption = v.page.locator("#lightbox .lb-caption").inner_text()
    assert mosaic.figure.alt in caption and mosaic.tiles[0].title in caption
    # Enlarged, the mosaic keeps its labelled tiles and the clicked one is marked.
    assert v.page.locator("#lightbox .tile").count() == len(mosaic.tiles)
    assert v.page.locator("#lightbox .tile.picked").inner_text() == mosaic.tiles[0].label
    v.page.keyboard.press("Escape")
    # Closing, and the dialog's "close" event (which empties the stage and gives focus back),
    # are tasks of their own that may run after the key press returns: wait for them.
    v.wait_until("() => !document.querySelector('#lightbox').open")
    v.wait_until("() => document.querySelector('#lightbox .lb-stage').innerHTML === ''")
    # Focus returns to the figure, ready for the next key.
    v.wait_until("() => document.activeElement.classList.contains('zoom')")


def test_lightbox_works_from_the_keyboard(visit):
    v = visit()
    first = v.page.locator("img.zoom").first
    first.focus()
    v.page.keyboard.press("Enter")
    assert v.page.locator("#lightbox").evaluate("d => d.open") is True
    total = v.page.locator("img.zoom").count()
    assert v.page.locator("#lightbox .lb-pos").inner_text() == f"1 / {total}"
    v.page.keyboard.press("ArrowRight")
    assert v.page.locator("#lightbox .lb-pos").inner_text() == f"2 / {total}"
    # Tab stays inside the modal dialog.
    for _ in range(5):
        v.page.keyboard.press("Tab")
        assert v.page.evaluate("document.getElementById('lightbox').contains(document.activeElement)")
    v.page.keyboard.press("Escape")
    # Closing and the focus hand-back run as tasks after the key press (see the test above).
    v.wait_until("() => !document.querySelector('#lightbox').open")
    v.wait_until("() => document.activeElement.getAttribute('data-zoom') === '1'")


def test_headings_in_order_and_every_image_described(visit):
    v = visit()
    levels = v.page.eval_on_selector_all("h1, h2, h3, h4, h5, h6", "hs => hs.map(h => +h.tagName[1])")
    assert levels[0] == 1 and levels.count(1) == 1
    skips = [(a, b) for a, b in zip(levels, levels[1:]) if b > a + 1]
    assert skips == []
    missing = v.page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.getAttribute('alt') || '').trim()).length")
    assert missing == 0
    # Figures are reachable from the keyboard, and focus is visible.
    assert v.page.eval_on_selector_all("img.zoom", "imgs => imgs.every(i => i.tabIndex === 0)")
    v.page.locator("img.zoom").first.focus()
    outline = v.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_dark_mode_and_print_styles(visit, demo):
    dark = visit(color_scheme="dark")
    lum = dark.page.evaluate(
        "() => { const [r, g, b] = getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number); return (r + g + b) / 3; }"
    )
    assert lum < 60
    light = visit(color_scheme="light")
    section = demo[1].sections[0]
    light.page.locator(f"#{section.id} > details > summary").click()  # a reader closed one
    light.page.emulate_media(media="print")
    assert not light.page.locator(".sidebar").is_visible()
    # Printed, a closed section's content still shows and the table is not cut to a scroll box.
    assert light.page.locator(f"#{section.id} .layer-body").is_visible()
    assert light.page.eval_on_selector(".table-wrap", "w => getComputedStyle(w).overflow") == "visible"


def test_half_screen_layout_has_a_contents_menu_and_no_sideways_scroll(visit, demo):
    v = visit(viewport=HALF_SCREEN)
    assert v.page.evaluate("document.documentElement.scrollWidth") <= HALF_SCREEN["width"]
    toggle = v.page.locator(".toc-toggle")
    assert toggle.is_visible()
    assert not v.page.locator("#toc-list").is_visible()
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    target = demo[1].sections[1]
    v.page.locator(f"#toc-list a[href='#{target.id}']").click()
    assert not v.page.locator("#toc-list").is_visible()
    v.wait_until("sel => { const r = document.querySelector(sel).getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight * 0.5; }", f"#{target.id}")


def test_screenshots_of_overview_and_a_layer_section(visit, demo):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    section = demo[1].sections[min(1, len(demo[1].sections) - 1)]
    written = []
    for scheme in ("light", "dark"):
        v = visit(color_scheme=scheme)
        path = SCREENSHOTS / f"overview-{scheme}.png"
        v.page.screenshot(path=str(path))
        written.append(path)
        layer = v.page.locator(f"#{section.id}")
        layer.scroll_into_view_if_needed()
        path = SCREENSHOTS / f"layer-{scheme}.png"
        layer.screenshot(path=str(path))
        written.append(path)
        assert v.errors == []
    narrow = visit(viewport=HALF_SCREEN)
    path = SCREENSHOTS / "overview-narrow.png"
    narrow.page.screenshot(path=str(path))
    written.append(path)
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path


def test_a_collapsed_graph_block_opens_in_place_and_folds_again(browser, tmp_path):
    """Issue 9: repeated blocks are folded to fit the budget; a click opens one in place."""
    import sys

    import torch

    import cnnreport

    sys.path.insert(0, str(Path(__file__).parent))
    from reference_models import resnet50_like

    torch.manual_seed(0)
    out = tmp_path / "resnet50.html"
    report = cnnreport.generate_report(resnet50_like().eval(), torch.rand(1, 3, 32, 32), output=str(out), progress=False, max_channels=4)
    assert report.graph_group_svgs, "a ResNet-50 graph is folded, so blocks have opened views"
    v = Visit(browser, out, viewport=LAPTOP)
    try:
        view = v.page.locator('[data-g-view="collapsed"]')
        folded = view.locator(".g-node").count()
        group = view.locator(".g-group").nth(1)
        token = group.get_attribute("data-group")
        group.scroll_into_view_if_needed()
        group.click()
        assert view.get_attribute("data-g-open") == token
        opened = view.locator(".g-node").count()
        assert opened > folded
        assert view.locator(f'.g-node[data-scope~="{token}"]').count() >= 3  # the block's insides
        v.page.locator('[data-g-show="collapsed"]').click()
        assert view.get_attribute("data-g-open") is None
        assert view.locator(".g-node").count() == folded
        assert not v.errors and not v.foreign_requests()
    finally:
        v.close()


# -- the page at its edges: long names, a phone-sized window --------------------------------

PHONE = {"width": 400, "height": 860}

# Everything the reader could be shown but cannot reach: an element past the window's right edge
# (the page would scroll sideways), cut by an ancestor that clips (overflow hidden/clip, or a
# section's content-visibility: auto, which clips like overflow: clip), content an element
# hides itself, or a box beyond its scroll container's range. An ellipsis is allowed where the
# whole text is in a title. Returns one line per finding.
UNREACHABLE_JS = """
(vw) => {
  const bad = [];
  const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id.slice(0, 40) : '') + (typeof e.className === 'string' && e.className ? '.' + e.className.trim().split(/ +/).join('.') : '');
  const scrolls = v => v === 'auto' || v === 'scroll';
  const clipsX = s => s.overflowX === 'hidden' || s.overflowX === 'clip' || s.contentVisibility === 'auto' || /paint|strict|content/.test(s.contain);
  const titled = e => !!e.closest('[title]');
  for (const e of document.querySelectorAll('body *')) {
    if (e.closest('.visually-hidden, .skip, dialog:not([open]), svg')) continue;
    const s = getComputedStyle(e), r = e.getBoundingClientRect();
    if (!r.width || !r.height || s.visibility === 'hidden') continue;
    if (clipsX(s) && !scrolls(s.overflowX) && e.scrollWidth > e.clientWidth + 1 && !(s.textOverflow === 'ellipsis' && titled(e)))
      bad.push(`${name(e)} hides ${e.scrollWidth - e.clientWidth}px of its content`);
    if (r.left < -1) bad.push(`${name(e)} starts ${Math.round(-r.left)}px left of the page`);
    for (let p = e.parentElement; p; p = p.parentElement) {
      const ps = getComputedStyle(p), pr = p.getBoundingClientRect();
      if (scrolls(ps.overflowX)) {
        if (r.right - pr.left - p.clientLeft + p.scrollLeft > p.scrollWidth + 1) bad.push(`${name(e)} lies beyond the scroll range of ${name(p)}`);
        break;
      }
      if (p === document.body) { if (r.right > vw + 1) bad.push(`${name(e)} ends ${Math.round(r.right - vw)}px right of the window`); break; }
      if (clipsX(ps)) {
        if (r.right > pr.right - p.clientLeft + 1 && !(ps.textOverflow === 'ellipsis' && titled(p))) bad.push(`${name(e)} is cut by ${name(p)} (${Math.round(r.right - pr.right)}px)`);
        break;
      }
    }
  }
  return bad;
}
"""

# Every table sits in a box that scrolls sideways, and scrolled to its right end, that box shows
# each row's last cell whole; a cell wider than the room a sticky first column leaves beside it
# could never be seen whole. Returns one line per finding.
TABLES_REACHABLE_JS = """
() => {
  const bad = [];
  for (const table of document.querySelectorAll('main table')) {
    if (!table.getBoundingClientRect().width) continue;
    let box = table.parentElement;
    while (box && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
    const label = (table.id || table.className) + ' in ' + (table.closest('section, footer')?.id || '?');
    if (!box) { bad.push(`${label}: no ancestor scrolls sideways`); continue; }
    box.scrollLeft = box.scrollWidth;
    const edge = box.getBoundingClientRect().right - box.clientLeft - (box.offsetWidth - box.clientWidth - 2 * box.clientLeft);
    for (const row of table.rows) {
      const cells = [...row.cells].filter(c => c.getBoundingClientRect().width > 0 && c.colSpan === 1);
      if (!cells.length) continue;
      const last = cells[cells.length - 1];
      if (last.getBoundingClientRect().right > edge + 1) bad.push(`${label}: last cell of "${row.textContent.trim().slice(0, 30)}" ends ${Math.round(last.getBoundingClientRect().right - edge)}px past the scrolled box`);
      const sticky = cells.filter(c => getComputedStyle(c).position === 'sticky' && getComputedStyle(c).left !== 'auto');
      const covered = sticky.reduce((w, c) => w + c.getBoundingClientRect().width, 0);
      for (const c of cells) if (!sticky.includes(c) && c.getBoundingClientRect().width > box.clientWidth - covered + 1)
        bad.push(`${label}: the ${Math.round(c.getBoundingClientRect().width)}px cell "${c.textContent.trim().slice(0, 20)}" never shows whole beside a ${Math.round(covered)}px sticky column`);
    }
    box.scrollLeft = 0;
  }
  return bad;
}
"""

LONG_WORD = "feature_extractor_stage_with_a_long_descriptive_name_"  # 4 nested: a 223-character path
LONG_ATTRIBUTE = "w" + "x" * 219  # one 220-character word: nowhere to break but anywhere

LONG_NAMES_MODEL = f'''
import torch
from torch import nn

WORD = "{LONG_WORD}"
ATTRIBUTE = "{LONG_ATTRIBUTE}"


class LongNames(nn.Module):
    """A convolution at a 220-character path (four nested ModuleDicts) and one whose
    attribute name is a single 220-character word."""

    def __init__(self):
        super().__init__()
        block = nn.Conv2d(3, 8, 3, padding=1)
        for i in range(4):
            block = nn.ModuleDict({{f"{{WORD}}{{i}}": block}})
        self.blocks = block
        setattr(self, ATTRIBUTE, nn.Conv2d(8, 8, 3, padding=1))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        m = self.blocks
        for i in reversed(range(4)):
            m = m[f"{{WORD}}{{i}}"]
        return self.fc(getattr(self, ATTRIBUTE)(torch.relu(m(x))).mean((2, 3)))


class WithHead(LongNames):
    """The same layers (other weights) and one more: filters compared, and a row added."""

    def __init__(self):
        super().__init__()
        self.calibration_head_added_in_this_pull_request = nn.Linear(10, 10)

    def forward(self, x):
        return self.calibration_head_added_in_this_pull_request(super().forward(x))
'''


@pytest.fixture(scope="module")
def long_names(tmp_path_factory):
    """A report and a diff page (made by the CLI, as a user would) of models with 220-character
    module names, with probe files and checkpoints at long paths."""
    import subprocess
    import sys

    import numpy as np
    import torch
    from PIL import Image

    root = tmp_path_factory.mktemp("long-names")
    (root / "long_names_model.py").write_text(LONG_NAMES_MODEL)
    probes = root / "probe_images_of_everyday_objects_from_a_validation_set"
    probes.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(probes / f"a_rather_long_probe_file_name_number_{i}_without_any_spaces.png")
    sys.path.insert(0, str(root))
    try:
        from long_names_model import LongNames, WithHead
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    old, new = root / "checkpoint_of_the_main_branch_after_forty_two_epochs.pt", root / "checkpoint_of_the_pull_request_after_forty_three_epochs.pt"
    torch.save(LongNames().state_dict(), old)
    torch.save(WithHead().state_dict(), new)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    model = f"{root / 'long_names_model.py'}:LongNames"
    common = ["--probes", str(probes), "-q"]
    report, diff = root / "report.html", root / "diff.html"
    for args in (
        ["generate", model, "--weights", str(old), "-o", str(report), *common],
        ["diff", "--old-model", model, "--old", str(old), "--new-model", model.replace("LongNames", "WithHead"), "--new", str(new), "-o", str(diff), *common],
    ):
        done = subprocess.run([sys.executable, "-m", "cnnreport.cli", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    return {"report": report, "diff": diff}


def open_everything(page) -> None:
    """Open every fold and bring each section on screen once, so content-visibility lays it out."""
    page.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    page.evaluate("document.querySelectorAll('.layer').forEach(l => l.scrollIntoView())")
    page.evaluate("window.scrollTo(0, 0)")


@pytest.mark.parametrize("width", [PHONE["width"], LAPTOP["width"]])
@pytest.mark.parametrize("which", ["report", "diff"])
def test_long_names_wrap_and_nothing_is_cut_or_out_of_reach(browser, long_names, which, width):
    v = Visit(browser, long_names[which], viewport={"width": width, "height": 860})
    try:
        open_everything(v.page)
        assert v.page.evaluate("document.scrollingElement.scrollWidth") <= width
        assert v.page.evaluate(UNREACHABLE_JS, width) == []
        assert v.page.evaluate(TABLES_REACHABLE_JS) == []
        full = ".".join(f"{LONG_WORD}{i}" for i in reversed(range(4)))
        assert len("blocks." + full) >= 220 and len(LONG_ATTRIBUTE) == 220
        # Each long name is shown whole, wrapped onto more lines, inside its box.
        headings = {"report": ".layer summary h3 .lname", "diff": "#filters h3 code"}[which]
        shown = v.page.eval_on_selector_all(
            headings,
            """els => els.map(e => { const box = e.closest('.layer').getBoundingClientRect(), r = e.getBoundingClientRect();
                                    const line = parseFloat(getComputedStyle(e).lineHeight);
                                    return [e.textContent, Math.round(r.height / line), r.right <= box.right + 1]; })""",
        )
        assert sorted(text for text, _, _ in shown) == sorted(["blocks." + full, LONG_ATTRIBUTE])
        assert all(inside for _, _, inside in shown)
        assert all(lines >= (2 if width == PHONE["width"] else 1) for _, lines, _ in shown), shown
        assert v.errors == []
    finally:
        v.close()


def test_demo_report_at_400_px_keeps_every_table_cell_reachable(visit, demo):
    v = visit(viewport=PHONE)
    open_everything(v.page)
    assert v.page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    assert v.page.evaluate(UNREACHABLE_JS, PHONE["width"]) == []
    assert v.page.evaluate(TABLES_REACHABLE_JS) == []
    # The per-probe table scrolls inside its section: its last column can be brought into view.
    section = demo[1].sections[0]
    box = v.page.locator(f"#{section.id} .per-probe .table-scroll")
    assert box.evaluate("b => getComputedStyle(b).overflowX") == "auto"
    box.scroll_into_view_if_needed()
    assert box.evaluate("b => b.scrollWidth > b.clientWidth")  # at 400 px the table is wider than its section
    last_header = box.locator("thead th").last
    box.evaluate("b => { b.scrollLeft = b.scrollWidth; }")
    # Polled: once in a full-suite run on a loaded machine the cell had no rendered text yet
    # right after the scroll (innerText is '' until the cell is laid out).
    v.wait_until(
        "s => [...document.querySelector(s).querySelectorAll('thead th')].pop().innerText === 'zeros'",
        f"#{section.id} .per-probe .table-scroll",
    )
    assert last_header.inner_text() == "zeros"
    assert last_header.evaluate("c => c.getBoundingClientRect().right") <= box.evaluate("b => b.getBoundingClientRect().right") + 1
