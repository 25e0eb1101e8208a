/* django-pgjobs admin: keeps the dashboard and queue depths current without reloading.
 *
 * The element with data-pgjobs-source names a JSON view; every data-pgjobs-refresh ms
 * it is fetched and whatever of the following the page has is redrawn in place:
 * the throughput chart (#pgjobs-chart, inline SVG), the summary cards, the queue
 * table (#pgjobs-queue-rows) and cells marked data-pgjobs-depth="queue/state".
 * Text is always set with textContent: queue names are never parsed as HTML.
 */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";

  function el(tag, attrs, text) {
    var node = tag.indexOf("svg:") === 0
      ? document.createElementNS(SVG, tag.slice(4))
      : document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || seconds === "") { return "–"; }
    var s = Math.floor(Number(seconds));
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + (s % 60) + "s"; }
    if (s < 86400) { return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m"; }
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function setText(id, value) {
    var node = document.getElementById(id);
    if (node) { node.textContent = value; }
  }

  function drawChart(svg, series) {
    var width = 720, height = 200, top = 10, bottom = 22, left = 34;
    var plot = height - top - bottom;
    var most = 1;
    series.forEach(function (p) { most = Math.max(most, p.completed, p.failed); });
    var slot = (width - left) / Math.max(series.length, 1);
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    [0, 0.5, 1].forEach(function (f) {
      var y = top + plot * (1 - f);
      svg.appendChild(el("svg:line", { x1: left, x2: width, y1: y, y2: y, "class": "pgjobs-grid" }));
      svg.appendChild(el("svg:text", { x: left - 4, y: y + 4, "class": "pgjobs-axis", "text-anchor": "end" },
        Math.round(most * f)));
    });
    series.forEach(function (p, i) {
      var x = left + i * slot;
      var label = p.label;  // HH:MM on the site's clock, as every time of the admin
      [["completed", 0], ["failed", 1]].forEach(function (kind) {
        var value = p[kind[0]];
        var h = plot * value / most;
        var bar = el("svg:rect", {
          x: x + 1 + kind[1] * (slot - 2) / 2, y: top + plot - h,
          width: Math.max((slot - 2) / 2, 1), height: h, "class": "pgjobs-bar-" + kind[0]
        });
        // An estimate (stats.throughput samples busy minutes) is never shown as exact.
        var shown = (p.approximate ? "≈" : "") + value;
        bar.appendChild(el("svg:title", {}, label + ": " + shown + " " + kind[0]));
        svg.appendChild(bar);
      });
      if (i % 10 === 0) {
        svg.appendChild(el("svg:text", { x: x, y: height - 6, "class": "pgjobs-axis" }, label));
      }
    });
  }

  function queueRows(tbody, queues) {
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    queues.forEach(function (q) {
      var row = el("tr");
      var name = el("td");
      // No url: a queue name no URL can carry (written by SQL), shown as text.
      name.appendChild(q.url ? el("a", { href: q.url }, q.name) : document.createTextNode(q.name));
      row.appendChild(name);
      row.appendChild(el("td", {}, (q.paused ? "paused" : "running") + (q.blocking ? ", blocking" : "")));
      row.appendChild(el("td", {}, q.concurrency === null ? "—" : q.concurrency));
      ["waiting", "scheduled", "available", "executing", "retryable"].forEach(function (state) {
        row.appendChild(el("td", {}, q.depth[state]));
      });
      row.appendChild(el("td", {}, duration(q.oldest_available_seconds)));
      tbody.appendChild(row);
    });
  }

  function render(data) {
    var chart = document.getElementById("pgjobs-chart");
    if (chart) { drawChart(chart, data.throughput); }
    var about = data.totals.approximate ? "≈" : "";
    setText("pgjobs-completed-total", about + data.totals.completed);
    setText("pgjobs-failed-total", about + data.totals.failed);
    var sampled = document.getElementById("pgjobs-sampled");
    if (sampled) { sampled.hidden = !data.totals.approximate; }
    setText("pgjobs-oldest", duration(data.oldest_available_seconds));
    setText("pgjobs-workers", data.workers.live);
    setText("pgjobs-workers-stale", data.workers.stale ? data.workers.stale + " stale" : "");
    setText("pgjobs-updated", data.generated_at_shown);
    var tbody = document.getElementById("pgjobs-queue-rows");
    if (tbody) { queueRows(tbody, data.queues); }
    data.queues.forEach(function (q) {
      Object.keys(q.depth).forEach(function (state) {
        document.querySelectorAll("[data-pgjobs-depth]").forEach(function (cell) {
          if (cell.getAttribute("data-pgjobs-depth") === q.name + "/" + state) {
            cell.textContent = q.depth[state];
          }
        });
      });
    });
  }

  function start() {
    var root = document.querySelector("[data-pgjobs-source]");
    if (!root) { return; }
    var url = root.getAttribute("data-pgjobs-source");
    var every = Number(root.getAttribute("data-pgjobs-refresh")) || 5000;
    var initial = document.getElementById("pgjobs-initial");
    if (initial) { render(JSON.parse(initial.textContent)); }
    var busy = false;
    function refresh() {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) { render(data); root.removeAttribute("data-pgjobs-error"); })
        .catch(function (error) { root.setAttribute("data-pgjobs-error", String(error)); })
        .then(function () { busy = false; });
    }
    window.setInterval(refresh, every);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
