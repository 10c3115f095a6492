// Switchyard pages: the little behaviour htmx does not cover. Pages work without this file;
// it only makes them nicer (local times, logs and the timeline that follow their tail,
// earlier pipeline iterations folded away as new ones arrive).
(function () {
  "use strict";

  // Times arrive as <time datetime="ISO" title="... UTC">; show them in the viewer's zone and
  // keep UTC in the title for hover. data-format="short" is for dense tables.
  var longFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  var shortFormat = new Intl.DateTimeFormat(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  var timeOnly = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });

  function localizeTimes(root) {
    var now = new Date();
    var today = now.toDateString();
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      if (el.dataset.format === "short") {
        el.textContent = (when.toDateString() === today ? timeOnly : shortFormat).format(when);
      } else {
        // The year only when it is not this one: it is noise in a header otherwise.
        var format = when.getFullYear() === now.getFullYear() ? shortFormat : longFormat;
        el.textContent = format.format(when);
      }
      el.dataset.local = "1";
    });
  }

  // A log follows new output only while the reader is at its end; scrolling up to read
  // something stops the following until they scroll back down.
  var FOLLOW_SLACK = 24;
  // The page keeps at most this many log lines per execution so a chatty run cannot exhaust
  // the tab; the full log stays a download away.
  var MAX_LINES = 20000;
  var following = new Set();
  var seen = new Set();

  function atEnd(log) {
    return log.scrollHeight - log.scrollTop - log.clientHeight < FOLLOW_SLACK;
  }

  function trim(log) {
    var chunks = log.querySelectorAll(".chunk");
    var total = 0;
    chunks.forEach(function (c) { total += Number(c.dataset.lines || 0); });
    for (var i = 0; total > MAX_LINES && i < chunks.length - 1; i++) {
      total -= Number(chunks[i].dataset.lines || 0);
      chunks[i].remove();
      log.dataset.trimmed = "1";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    localizeTimes(document);
    document.querySelectorAll(".log").forEach(function (log) {
      log.scrollTop = log.scrollHeight; // the page opens on the tail
    });
    // The timeline too: its newest events (an approval waiting, the run's end) are what a
    // reader comes for; the oldest are a scroll up.
    var timeline = document.getElementById("timeline");
    if (timeline) timeline.scrollTop = timeline.scrollHeight;
  });

  var timelineFollowing = false;

  document.addEventListener("htmx:beforeSwap", function () {
    var timeline = document.getElementById("timeline");
    timelineFollowing = !!timeline && atEnd(timeline);
    following.clear();
    seen.clear();
    document.querySelectorAll(".log").forEach(function (log) {
      seen.add(log.id);
      if (atEnd(log)) following.add(log.id);
    });
  });

  // afterSwap runs in the same task as the swap (out-of-band ones included), before the browser
  // paints, so swapped-in times never flash their UTC text.
  document.addEventListener("htmx:afterSwap", function () {
    localizeTimes(document);
  });

  // A loop-back starts a stage again in a new iteration: collapse the earlier run of that
  // stage, as a fresh page load draws it. Only once (data-collapsed), so a group the reader
  // opens again stays open.
  function collapseSuperseded() {
    var latest = {};
    var groups = document.querySelectorAll("details.stage-group[data-stage]");
    groups.forEach(function (g) {
      var n = Number(g.dataset.iteration);
      latest[g.dataset.stage] = Math.max(latest[g.dataset.stage] || 0, n);
    });
    groups.forEach(function (g) {
      if (g.dataset.collapsed || Number(g.dataset.iteration) >= latest[g.dataset.stage]) return;
      g.open = false;
      g.dataset.collapsed = "1";
    });
  }

  document.addEventListener("htmx:afterSettle", function () {
    collapseSuperseded();
    var timeline = document.getElementById("timeline");
    if (timeline && timelineFollowing) timeline.scrollTop = timeline.scrollHeight;
    document.querySelectorAll(".log").forEach(function (log) {
      trim(log);
      // A log that just appeared (a new execution) opens on its tail like the page does.
      if (following.has(log.id) || !seen.has(log.id)) log.scrollTop = log.scrollHeight;
    });
  });
})();
