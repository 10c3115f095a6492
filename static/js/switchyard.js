// Switchyard pages: the little behaviour htmx does not cover. Pages work without this file;
// it only makes them nicer (local times, logs that follow their tail with follow/pause and
// jump-to-end, the timeline that follows its end, earlier pipeline iterations folded away as
// new ones arrive, focus on a form's error summary, a copy button for a new token).
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

  // Log tails. A log follows new output (stays scrolled to its end) until the reader pauses
  // it with its Follow button or scrolls up to read; scrolling back to the end or "Jump to end"
  // follows again. While paused, "Jump to end" counts the lines that arrived meanwhile.
  var FOLLOW_SLACK = 24;
  // The page keeps at most this many log lines per execution so a chatty run cannot exhaust
  // the tab; the full log stays a download away.
  var MAX_LINES = 20000;
  var paused = {}; // log id -> true while the reader is not following it
  var lineCounts = {}; // log id -> lines when last drawn, for "n new"
  var unseen = {}; // log id -> lines arrived while paused

  function atEnd(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < FOLLOW_SLACK;
  }

  function lines(log) {
    var total = 0;
    log.querySelectorAll(".chunk").forEach(function (c) { total += Number(c.dataset.lines || 0); });
    return total;
  }

  function trim(log) {
    var chunks = log.querySelectorAll(".chunk");
    var total = lines(log);
    for (var i = 0; total > MAX_LINES && i < chunks.length - 1; i++) {
      total -= Number(chunks[i].dataset.lines || 0);
      chunks[i].remove();
      log.dataset.trimmed = "1";
    }
  }

  function drawTools(log) {
    var tools = document.querySelector('.log-tools[data-log="' + log.id + '"]');
    if (!tools) return;
    tools.hidden = false;
    var follow = tools.querySelector(".log-follow");
    var end = tools.querySelector(".log-end");
    follow.setAttribute("aria-pressed", paused[log.id] ? "false" : "true");
    var n = unseen[log.id] || 0;
    end.textContent = n ? "Jump to end (" + n + " new line" + (n === 1 ? "" : "s") + ")" : "Jump to end";
  }

  function follow(log) {
    paused[log.id] = false;
    unseen[log.id] = 0;
    log.scrollTop = log.scrollHeight;
    drawTools(log);
  }

  function setUpLog(log) {
    if (log.dataset.ready) return;
    log.dataset.ready = "1";
    lineCounts[log.id] = lines(log);
    log.scrollTop = log.scrollHeight; // a log opens on its tail
    log.addEventListener("scroll", function () {
      // The reader scrolled: up means they are reading (pause), back to the end means follow.
      var wasPaused = !!paused[log.id];
      var nowPaused = !atEnd(log);
      if (wasPaused !== nowPaused) {
        paused[log.id] = nowPaused;
        if (!nowPaused) unseen[log.id] = 0;
        drawTools(log);
      }
    }, { passive: true });
    drawTools(log);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest(".log-follow, .log-end");
    if (!button) return;
    var log = document.getElementById(button.getAttribute("aria-controls"));
    if (!log) return;
    if (button.classList.contains("log-end") || paused[log.id]) {
      follow(log);
    } else {
      paused[log.id] = true;
      drawTools(log);
    }
  });

  // A token shown once has a Copy button (hidden without JavaScript, where selecting the text
  // is the way). The Clipboard API needs a secure context; elsewhere fall back to execCommand.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var input = document.querySelector(button.dataset.copy);
    if (!input) return;
    input.select();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(done, function () {});
    } else if (document.execCommand && document.execCommand("copy")) {
      done();
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    localizeTimes(document);
    document.querySelectorAll(".log").forEach(setUpLog);
    document.querySelectorAll("[data-copy]").forEach(function (b) { b.hidden = false; });
    // The timeline too: its newest events (an approval waiting, the run's end) are what a
    // reader comes for; the oldest are a scroll up.
    var timeline = document.getElementById("timeline");
    if (timeline) timeline.scrollTop = timeline.scrollHeight;
    // A form that came back with errors: take the reader (and their screen reader) to the
    // summary, whose links lead to each field.
    var summary = document.getElementById("form-error");
    if (summary) summary.focus();
    // A chart wider than a phone scrolls sideways: open it on its newest runs, at the right.
    document.querySelectorAll(".chart-scroll").forEach(function (box) {
      box.scrollLeft = box.scrollWidth;
    });
  });

  var timelineFollowing = false;

  document.addEventListener("htmx:beforeSwap", function () {
    var timeline = document.getElementById("timeline");
    timelineFollowing = !!timeline && atEnd(timeline);
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
      if (!log.dataset.ready) { setUpLog(log); return; } // a new execution's log
      trim(log);
      var total = lines(log);
      var added = Math.max(0, total - (lineCounts[log.id] || 0));
      lineCounts[log.id] = total;
      if (paused[log.id]) {
        if (added) { unseen[log.id] = (unseen[log.id] || 0) + added; drawTools(log); }
      } else {
        log.scrollTop = log.scrollHeight;
      }
    });
  });
})();
