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
    from cnnreport.demo import demo_probe_paths, load_demo_model

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
