// Keyboard shortcuts and the image view (zoom, invert, stretch). No build step, no dependencies.
(function () {
  "use strict";
  var img = document.getElementById("galaxy-image");
  var view = { zoom: 1, invert: false, stretch: false };
  function apply() {
    if (!img) return;
    img.style.transform = "scale(" + view.zoom + ")";
    var f = [];
    if (view.stretch) f.push("brightness(2.2) contrast(1.3)");  // lifts faint outer light
    if (view.invert) f.push("invert(1)");
    img.style.filter = f.join(" ");
    var inv = document.getElementById("invert"), st = document.getElementById("stretch");
    if (inv) inv.classList.toggle("on", view.invert);
    if (st) st.classList.toggle("on", view.stretch);
  }
  function zoom(factor) { view.zoom = Math.min(8, Math.max(1, view.zoom * factor)); apply(); }
  var actions = {
    "zoom-in": function () { zoom(1.5); }, "zoom-out": function () { zoom(1 / 1.5); },
    "invert": function () { view.invert = !view.invert; apply(); },
    "stretch": function () { view.stretch = !view.stretch; apply(); },
    "reset": function () { view = { zoom: 1, invert: false, stretch: false }; apply(); }
  };
  Object.keys(actions).forEach(function (id) {
    var el = document.getElementById(id);
    if (el) el.addEventListener("click", actions[id]);
  });
  var frame = document.getElementById("frame");
  if (frame) frame.addEventListener("wheel", function (e) { e.preventDefault(); zoom(e.deltaY < 0 ? 1.2 : 1 / 1.2); });
  var keys = { "+": "zoom-in", "=": "zoom-in", "-": "zoom-out", "i": "invert", "t": "stretch", "r": "reset" };
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target.tagName;
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA") return;
    if (keys[e.key]) { actions[keys[e.key]](); return; }
    var target = document.querySelector('[data-key="' + e.key + '"]');
    if (target) { e.preventDefault(); target.click(); }
  });
})();
