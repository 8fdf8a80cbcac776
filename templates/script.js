(function () {
  "use strict";
  // Filter the architecture table by name or type.
  var filter = document.getElementById("layer-filter");
  var rows = Array.prototype.slice.call(document.querySelectorAll("#arch-table tbody tr"));
  if (filter) {
    filter.addEventListener("input", function () {
      var q = filter.value.trim().toLowerCase();
      rows.forEach(function (row) {
        row.hidden = q !== "" && row.textContent.toLowerCase().indexOf(q) === -1;
      });
    });
  }
  // Fold a container row: hide the deeper rows that follow it.
  document.querySelectorAll("#arch-table .fold").forEach(function (button) {
    button.addEventListener("click", function () {
      var row = button.closest("tr"), depth = +row.dataset.depth;
      var open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", open ? "true" : "false");
      for (var next = row.nextElementSibling; next && +next.dataset.depth > depth; next = next.nextElementSibling) {
        next.hidden = !open;
        var inner = next.querySelector(".fold");
        if (inner) inner.setAttribute("aria-expanded", open ? "true" : "false");
      }
    });
  });
  // Lightbox: click a figure (or a tile over it) to enlarge, Escape or click to close.
  var box = document.getElementById("lightbox"), boxImg = box.querySelector("img"), boxText = box.querySelector("p");
  var lastFocus = null;
  function openBox(img, extra) {
    lastFocus = document.activeElement;
    boxImg.src = img.src; boxImg.alt = img.alt;
    boxText.textContent = img.alt + (extra ? " — " + extra : "");
    box.hidden = false; box.tabIndex = -1; box.focus();
  }
  function closeBox() { box.hidden = true; boxImg.removeAttribute("src"); if (lastFocus) lastFocus.focus(); }
  document.addEventListener("click", function (e) {
    var t = e.target;
    if (!box.hidden) { closeBox(); return; }
    if (t.classList && t.classList.contains("tile")) { openBox(t.parentNode.querySelector("img"), t.title); return; }
    if (t.tagName === "IMG" && t.classList.contains("zoom")) openBox(t);
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && !box.hidden) closeBox();
    if ((e.key === "Enter" || e.key === " ") && document.activeElement && document.activeElement.classList.contains("zoom")) {
      e.preventDefault(); openBox(document.activeElement);
    }
  });
  document.querySelectorAll("img.zoom").forEach(function (img) { img.tabIndex = 0; });
  // Highlight the sidebar entry of the section in view.
  var links = {};
  document.querySelectorAll(".sidebar a[href^='#']").forEach(function (a) { links[a.getAttribute("href").slice(1)] = a; });
  if ("IntersectionObserver" in window) {
    var current = null;
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting && links[entry.target.id]) {
          if (current) current.classList.remove("current");
          current = links[entry.target.id]; current.classList.add("current");
        }
      });
    }, { rootMargin: "0px 0px -70% 0px" });
    Object.keys(links).forEach(function (id) { var el = document.getElementById(id); if (el) observer.observe(el); });
  }
  // Following a link into a closed section opens it.
  function openTarget() {
    var el = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    var d = el && (el.tagName === "DETAILS" ? el : el.querySelector("details"));
    if (d) d.open = true;
  }
  window.addEventListener("hashchange", openTarget); openTarget();
  window.addEventListener("beforeprint", function () { document.querySelectorAll("details").forEach(function (d) { d.open = true; }); });
})();
