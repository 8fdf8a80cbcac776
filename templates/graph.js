(function () {
  /* Collapsed/full toggle and click-to-expand of collapsed blocks; no library needed. */
  function show(box, name) {
    box.querySelectorAll("[data-g-view]").forEach(function (v) {
      v.hidden = v.getAttribute("data-g-view") !== name;
    });
    box.querySelectorAll("[data-g-show]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-g-show") === name));
    });
  }
  var collapsedView = null;
  function restore(box) {
    var view = box.querySelector('[data-g-view="collapsed"]');
    if (collapsedView && view.getAttribute("data-g-open")) {
      view.replaceChildren(collapsedView.cloneNode(true));
      view.removeAttribute("data-g-open");
    }
  }
  function expand(box, token) {
    var prepared = box.querySelector('template[data-g-opened="' + token + '"]');
    var view = box.querySelector('[data-g-view="collapsed"]');
    if (prepared && view) {
      // Open the block in place: the collapsed view with this block drawn out.
      if (!collapsedView) { collapsedView = document.createDocumentFragment(); collapsedView.append.apply(collapsedView, Array.prototype.map.call(view.childNodes, function (n) { return n.cloneNode(true); })); }
      show(box, "collapsed");
      view.replaceChildren(prepared.content.cloneNode(true));
      view.setAttribute("data-g-open", token);
      var first = view.querySelector('.g-node[data-scope~="' + token + '"]');
      if (first) { first.scrollIntoView({ block: "nearest", inline: "center" }); }
      return;
    }
    show(box, "full");
    var first = null;
    box.querySelectorAll('[data-g-view="full"] .g-node').forEach(function (n) {
      var hit = (n.getAttribute("data-scope") || "").split(" ").indexOf(token) >= 0;
      n.classList.toggle("g-hl", hit);
      if (hit && !first) { first = n; }
    });
    if (first) { first.scrollIntoView({ block: "center", inline: "center" }); }
  }
  document.querySelectorAll("[data-g-views]").forEach(function (box) {
    box.addEventListener("click", function (e) {
      var btn = e.target.closest("[data-g-show]");
      if (btn) {
        if (btn.getAttribute("data-g-show") === "collapsed") { restore(box); }
        show(box, btn.getAttribute("data-g-show"));
        return;
      }
      var group = e.target.closest("[data-group]");
      if (group && !(e.ctrlKey || e.metaKey || e.shiftKey)) {
        e.preventDefault();
        expand(box, group.getAttribute("data-group"));
      }
    });
  });
})();
