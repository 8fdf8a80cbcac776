/* The page's only script: ours, inline, no library. Every feature degrades to plain HTML
   (links still jump, <details> still fold) if it fails. */
(function () {
  "use strict";
  var doc = document;
  var srcdoc = location.href.indexOf("about:srcdoc") === 0;
  function all(selector, root) { return Array.prototype.slice.call((root || doc).querySelectorAll(selector)); }
  function typing(el) { return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.isContentEditable); }

  // Open every <details> that hides an element, so a link into a collapsed section still lands.
  function reveal(el) {
    for (var node = el; node; node = node.parentElement) {
      if (node.tagName === "DETAILS") node.open = true;
    }
    if (el && el.classList && el.classList.contains("layer")) {
      var own = el.querySelector(":scope > details");
      if (own) own.open = true;
    }
    if (el && el.tagName === "TR" && (el.classList.contains("folded") || el.classList.contains("filtered"))) {
      archReset();
    }
  }
  // Sections far away are not laid out (content-visibility), so the first jump to one lands
  // where its placeholder was; jump again each frame until it stays put.
  function settle(el) {
    if (!el) return;
    var tries = 0, last = null;
    (function again() {
      var top = el.getBoundingClientRect().top;
      if (last !== null && Math.abs(top - last) < 1) return;
      el.scrollIntoView({ block: "start" });
      last = el.getBoundingClientRect().top;
      if (++tries < 12) window.requestAnimationFrame(again);
    })();
  }
  function targetOf(hash) {
    if (!hash || hash.length < 2) return null;
    try { return doc.getElementById(decodeURIComponent(hash.slice(1))); } catch (e) { return null; }
  }

  // ---- Architecture table: filter by name or type, fold nesting --------------------------
  var table = doc.getElementById("arch-table");
  var rows = table ? all("tbody tr[data-depth]", table) : [];
  var filter = doc.getElementById("layer-filter");
  var counter = doc.getElementById("layer-count");
  var noMatch = doc.getElementById("layer-no-match");
  function isFolded(row) {
    var b = row.querySelector(".fold");
    return !!b && b.getAttribute("aria-expanded") === "false";
  }
  // One pass decides every row: a search shows the rows that match whatever is folded;
  // otherwise a row is hidden when any container above it is folded.
  function archRefresh() {
    var q = filter ? filter.value.trim().toLowerCase() : "";
    var foldDepth = Infinity, shown = 0;
    rows.forEach(function (row) {
      var depth = +row.getAttribute("data-depth");
      if (depth <= foldDepth) foldDepth = Infinity;
      var hiddenByFold = foldDepth !== Infinity;
      if (!hiddenByFold && isFolded(row)) foldDepth = depth;
      var miss = q !== "" && row.getAttribute("data-search").indexOf(q) === -1;
      row.classList.toggle("filtered", miss);
      row.classList.toggle("folded", q === "" && hiddenByFold);
      if (!miss && !(q === "" && hiddenByFold)) shown += 1;
    });
    if (counter) counter.textContent = shown === rows.length ? rows.length + " rows" : shown + " of " + rows.length + " rows";
    if (noMatch) noMatch.hidden = shown !== 0;
  }
  function setFolds(predicate) {
    all(".fold", table).forEach(function (b) {
      var depth = +b.closest("tr").getAttribute("data-depth");
      b.setAttribute("aria-expanded", predicate(depth) ? "false" : "true");
    });
    archRefresh();
  }
  function archReset() {
    if (filter) filter.value = "";
    setFolds(function () { return false; });
  }
  if (table) {
    if (filter) {
      filter.addEventListener("input", archRefresh);
      filter.addEventListener("keydown", function (e) {
        if (e.key === "Escape" && filter.value) { filter.value = ""; archRefresh(); e.preventDefault(); }
      });
    }
    table.addEventListener("click", function (e) {
      var b = e.target.closest && e.target.closest(".fold");
      if (!b) return;
      b.setAttribute("aria-expanded", isFolded(b.closest("tr")) ? "true" : "false");
      archRefresh();
    });
    all("[data-fold]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var top = btn.getAttribute("data-fold") === "top";
        setFolds(function (depth) { return top && depth >= 1; });
      });
    });
  }

  // ---- Layer sections: expand / collapse all ---------------------------------------------
  all("[data-details]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var open = btn.getAttribute("data-details") === "open";
      all(".layer > details").forEach(function (d) { d.open = open; });
    });
  });

  // ---- Lightbox: a native modal <dialog> (focus trapped, Escape closes) ------------------
  // This script is shared with the diff page: each feature checks its markup is there.
  var box = doc.getElementById("lightbox");
  if (!box || typeof box.showModal !== "function" || !box.querySelector(".lb-stage")) box = null;
  var stage = box && box.querySelector(".lb-stage"), caption = box && box.querySelector(".lb-caption"), pos = box && box.querySelector(".lb-pos");
  var zooms = box ? all("img.zoom") : [];
  var shown = -1;
  zooms.forEach(function (img, i) {
    img.tabIndex = 0;
    img.setAttribute("role", "button");
    img.setAttribute("aria-haspopup", "dialog");
    img.setAttribute("data-zoom", String(i));
  });
  function visible(img) { return !img.closest("details:not([open])"); }
  function show(i, tileIndex) {
    var img = zooms[i], holder = img.closest(".mosaic-box");
    // A mosaic is cloned with its tiles, so channel indices stay readable when enlarged.
    var node = holder ? holder.cloneNode(true) : img.cloneNode(false);
    var copy = holder ? node.querySelector("img") : node;
    copy.removeAttribute("tabindex"); copy.removeAttribute("role"); copy.removeAttribute("aria-haspopup");
    copy.removeAttribute("data-zoom"); copy.classList.remove("zoom");
    var w = +img.getAttribute("width") || img.naturalWidth || 1, h = +img.getAttribute("height") || img.naturalHeight || 1;
    node.style.setProperty("--ar", String(w / h));
    var tiles = holder ? all(".tile", node) : [], extra = "";
    if (tileIndex != null && tiles[tileIndex]) { tiles[tileIndex].classList.add("picked"); extra = tiles[tileIndex].title; }
    stage.textContent = "";
    stage.appendChild(node);
    caption.textContent = img.alt + (extra ? " — " + extra : "");
    // The figure's colour bar (with its own range) travels with it.
    var legend = img.closest("figure") && img.closest("figure").querySelector(".legend");
    if (legend) { caption.appendChild(doc.createTextNode(" ")); caption.appendChild(legend.cloneNode(true)); }
    pos.textContent = (i + 1) + " / " + zooms.length;
    shown = i;
  }
  function openBox(img, tileIndex) {
    show(+img.getAttribute("data-zoom"), tileIndex);
    if (!box.open) box.showModal();
    box.querySelector(".lb-close").focus();
  }
  function step(delta) {
    for (var i = shown + delta; i >= 0 && i < zooms.length; i += delta) {
      if (visible(zooms[i])) { show(i); return; }
    }
  }
  if (box) box.addEventListener("close", function () {
    stage.textContent = "";
    // Focus goes back to the figure last shown, which scrolls it into view.
    if (shown >= 0 && visible(zooms[shown])) zooms[shown].focus();
    shown = -1;
  });
  if (box) box.addEventListener("click", function (e) {
    var t = e.target;
    if (t === box || t === stage || (t.classList && t.classList.contains("lb-close"))) { box.close(); return; }
    var s = t.getAttribute && t.getAttribute("data-step");
    if (s) step(+s);
  });
  if (box) box.addEventListener("keydown", function (e) {
    if (e.key === "ArrowRight") { step(1); e.preventDefault(); }
    else if (e.key === "ArrowLeft") { step(-1); e.preventDefault(); }
    else if (e.key === "Tab") {
      // A modal dialog lets Tab leave for the browser's own controls; keep it in the box.
      var stops = all("button", box), first = stops[0], last = stops[stops.length - 1];
      if (e.shiftKey && doc.activeElement === first) { last.focus(); e.preventDefault(); }
      else if (!e.shiftKey && doc.activeElement === last) { first.focus(); e.preventDefault(); }
    }
  });

  // ---- Narrow windows: the contents menu -------------------------------------------------
  var nav = doc.querySelector(".sidebar") || doc.createElement("nav"), toggle = nav.querySelector(".toc-toggle");
  function menu(open) {
    if (!toggle) return;
    nav.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  }
  if (toggle) toggle.addEventListener("click", function () { menu(!nav.classList.contains("open")); });

  // ---- One click handler for the page: figures, tiles, in-page links ----------------------
  doc.addEventListener("click", function (e) {
    var t = e.target;
    if (!t.closest || (box && box.contains(t))) return;
    var tile = t.closest(".tile");
    if (tile && box) { openBox(tile.parentNode.querySelector("img.zoom"), all(".tile", tile.parentNode).indexOf(tile)); return; }
    if (box && t.tagName === "IMG" && t.classList.contains("zoom")) { openBox(t); return; }
    var link = t.closest("a[href^='#']");
    if (link) {
      var dest = targetOf(link.getAttribute("href"));
      // In a notebook's frame (srcdoc) "#x" resolves against the notebook's own address, so
      // following it would load that page into the frame: move within this document instead.
      if (srcdoc) {
        e.preventDefault();
        if (dest) location.hash = link.getAttribute("href");
      }
      reveal(dest);
      window.requestAnimationFrame(function () { settle(dest); });
      if (nav.contains(link)) menu(false);
    } else if (nav.classList.contains("open") && !nav.contains(t)) {
      menu(false);
    }
  });
  doc.addEventListener("keydown", function (e) {
    var a = doc.activeElement;
    if (box && (e.key === "Enter" || e.key === " ") && a && a.classList && a.classList.contains("zoom")) { e.preventDefault(); openBox(a); return; }
    if (e.key === "Escape" && toggle && nav.classList.contains("open")) { menu(false); toggle.focus(); return; }
    if (e.key === "/" && filter && !typing(a) && !(box && box.open)) { e.preventDefault(); filter.focus(); }
  });
  function revealHash() { var el = targetOf(location.hash); reveal(el); settle(el); }
  window.addEventListener("hashchange", revealHash);
  revealHash();

  // ---- Sidebar: highlight the section being read -----------------------------------------
  // The current section is the last one whose top has passed a line 30% down the window;
  // computed at most once per frame, so scrolling a long report stays smooth.
  var links = all(".sidebar a[href^='#']").filter(function (a) { return targetOf(a.getAttribute("href")); });
  var targets = links.map(function (a) { return targetOf(a.getAttribute("href")); });
  var current = null, queued = false;
  function highlight() {
    queued = false;
    var line = window.innerHeight * 0.3, pick = 0;
    for (var i = 0; i < targets.length; i++) {
      if (targets[i].getBoundingClientRect().top <= line) pick = i;
    }
    if (window.innerHeight + window.scrollY >= doc.documentElement.scrollHeight - 2) pick = targets.length - 1;
    var link = links[pick];
    if (!link || link === current) return;
    if (current) { current.classList.remove("current"); current.removeAttribute("aria-current"); }
    current = link;
    link.classList.add("current");
    link.setAttribute("aria-current", "location");
    // Keep the highlighted entry visible inside a long sidebar without moving the page.
    if (nav.scrollHeight > nav.clientHeight) {
      var top = link.offsetTop, bottom = top + link.offsetHeight;
      if (top < nav.scrollTop + 40 || bottom > nav.scrollTop + nav.clientHeight - 40) nav.scrollTop = top - nav.clientHeight / 3;
    }
  }
  function queue() { if (!queued) { queued = true; window.requestAnimationFrame(highlight); } }
  window.addEventListener("scroll", queue, { passive: true });
  window.addEventListener("resize", queue);
  doc.addEventListener("toggle", queue, true);
  highlight();

  // ---- Print: every section expanded, then back as the reader left them ------------------
  var closedBeforePrint = [];
  window.addEventListener("beforeprint", function () {
    closedBeforePrint = all("details:not([open])");
    closedBeforePrint.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    closedBeforePrint.forEach(function (d) { d.open = false; });
    closedBeforePrint = [];
  });
})();
