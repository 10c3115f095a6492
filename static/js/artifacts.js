// The artifact viewer's comparison modes: tabs that switch what the stage shows, the slider's
// divider (also draggable on the image) and the onion skin's opacity. Without this file the
// page shows the slider at 50% and, in <noscript>, every picture one under another.
(function () {
  "use strict";

  function setup(section) {
    var stage = section.querySelector(".compare-stage");
    var tabs = Array.prototype.slice.call(section.querySelectorAll(".compare-tab"));
    var pos = section.querySelector("#slider-pos");
    var opacity = section.querySelector("#onion-opacity");

    function select(mode, focus) {
      stage.dataset.mode = mode;
      section.dataset.mode = mode;
      tabs.forEach(function (tab) {
        var on = tab.dataset.mode === mode;
        tab.setAttribute("aria-selected", on ? "true" : "false");
        tab.tabIndex = on ? 0 : -1;
        if (on && focus) tab.focus();
      });
      stage.setAttribute("aria-labelledby", "tab-" + mode);
    }

    tabs.forEach(function (tab, index) {
      tab.addEventListener("click", function () { select(tab.dataset.mode, false); });
      // Arrow keys move between tabs, as the WAI-ARIA tabs pattern expects.
      tab.addEventListener("keydown", function (event) {
        var step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
        if (!step) return;
        event.preventDefault();
        var next = tabs[(index + step + tabs.length) % tabs.length];
        select(next.dataset.mode, true);
      });
    });

    function setPos(percent) {
      percent = Math.max(0, Math.min(100, percent));
      stage.style.setProperty("--pos", percent + "%");
      pos.value = String(Math.round(percent));
    }
    pos.addEventListener("input", function () { setPos(Number(pos.value)); });
    opacity.addEventListener("input", function () {
      stage.style.setProperty("--opacity", String(Number(opacity.value) / 100));
    });

    var dragging = false;
    function fromPointer(event) {
      var box = stage.getBoundingClientRect();
      setPos(((event.clientX - box.left) / box.width) * 100);
    }
    stage.addEventListener("pointerdown", function (event) {
      if (stage.dataset.mode !== "slider") return;
      dragging = true;
      stage.setPointerCapture(event.pointerId);
      fromPointer(event);
    });
    stage.addEventListener("pointermove", function (event) { if (dragging) fromPointer(event); });
    stage.addEventListener("pointerup", function () { dragging = false; });

    select(stage.dataset.mode || "slider", false);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("section.compare").forEach(setup);
  });
})();
