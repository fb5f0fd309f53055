/* llmqueue pages: live numbers, charts as inline SVG, the turn editor. No build step, no CDN. */
(function () {
  "use strict";

  function poll(url, ms, onData) {
    var timer = null;
    function tick() {
      if (document.hidden) { timer = setTimeout(tick, ms); return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          var again = true;
          if (data) { again = onData(data) !== false; }
          if (again) { timer = setTimeout(tick, ms); }
        })
        .catch(function () { timer = setTimeout(tick, ms * 2); });
    }
    timer = setTimeout(tick, ms);
    return function () { clearTimeout(timer); };
  }

  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? o : o[k]; }, obj);
  }

  function fmt(value, how) {
    if (value === null || value === undefined) { return "–"; }
    if (how === "percent") { return (value * 100).toFixed(1) + " %"; }
    if (how === "ms") { return value >= 10000 ? (value / 1000).toFixed(1) + " s" : Math.round(value) + " ms"; }
    if (how === "rate") { return Number(value).toFixed(value >= 10 ? 0 : value >= 1 ? 1 : 3); }
    return String(value);
  }

  function bind(root, data) {
    root.querySelectorAll("[data-bind]").forEach(function (el) {
      el.textContent = fmt(get(data, el.getAttribute("data-bind")), el.getAttribute("data-format"));
    });
  }

  function stamp(el) {
    if (el) { el.textContent = "Updated " + new Date().toLocaleTimeString(); }
  }

  /* --- charts: a line per series over the last hour ------------------------------------ */
  var SVGNS = "http://www.w3.org/2000/svg";
  function svgEl(name, attrs) {
    var el = document.createElementNS(SVGNS, name);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    return el;
  }

  function drawChart(fig, series) {
    var spec = JSON.parse(fig.getAttribute("data-chart"));
    var svg = fig.querySelector("svg");
    var W = 420, H = 170, L = 58, B = 20, T = 10;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var lines = spec.lines.map(function (line) {
      return series.map(function (row) {
        var v = row[line.field];
        return v === null || v === undefined ? null : v * (line.scale || 1);
      });
    });
    var max = 0;
    lines.forEach(function (pts) { pts.forEach(function (v) { if (v !== null && v > max) { max = v; } }); });
    max = max > 0 ? max * 1.1 : 1;
    var n = series.length, dx = (W - L - 4) / Math.max(1, n - 1);
    [0, 0.5, 1].forEach(function (f) {
      var y = T + (H - T - B) * (1 - f);
      svg.appendChild(svgEl("line", { x1: L, x2: W, y1: y, y2: y, stroke: "#d0d7de" }));
      var label = svgEl("text", { x: L - 5, y: y + 4, "text-anchor": "end", "font-size": 12, fill: "#57606a" });
      label.textContent = fmtAxis(max * f, spec.unit);
      svg.appendChild(label);
    });
    ["-60 min", "now"].forEach(function (t, i) {
      var label = svgEl("text", { x: i ? W - 2 : L, y: H - 4, "text-anchor": i ? "end" : "start", "font-size": 12, fill: "#57606a" });
      label.textContent = t;
      svg.appendChild(label);
    });
    lines.forEach(function (pts, i) {
      var d = "", pen = false;
      pts.forEach(function (v, j) {
        if (v === null) { pen = false; return; }
        var x = L + j * dx, y = T + (H - T - B) * (1 - v / max);
        d += (pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1) + " ";
        pen = true;
        var alone = (j === 0 || pts[j - 1] === null) && (j === pts.length - 1 || pts[j + 1] === null);
        if (alone) {  /* a minute with data between empty ones: a dot, as a line needs two */
          svg.appendChild(svgEl("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 3, fill: colors[i % 2] }));
        }
      });
      if (d) {
        svg.appendChild(svgEl("path", { d: d, fill: "none", stroke: colors[i % 2], "stroke-width": 2,
          "stroke-dasharray": i ? "5 3" : "none" }));
      }
    });
    var last = lines.map(function (pts) {
      for (var j = pts.length - 1; j >= 0; j--) { if (pts[j] !== null) { return pts[j]; } }
      return null;
    });
    svg.setAttribute("aria-label", spec.title + ", last 60 minutes. Latest: " + spec.lines.map(function (line, i) {
      return line.label + " " + (last[i] === null ? "no data" : fmtAxis(last[i], spec.unit));
    }).join(", ") + ". Peak " + fmtAxis(max / 1.1, spec.unit) + ".");
  }

  var colors = ["#0550ae", "#bc4c00"];

  function fmtAxis(v, unit) {
    if (unit === "ms") { return v >= 10000 ? (v / 1000).toFixed(0) + " s" : Math.round(v) + " ms"; }
    return (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(3)) + (unit ? " " + unit : "");
  }

  function fillSeriesTable(tbody, series) {
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    series.slice().reverse().forEach(function (row) {
      var tr = document.createElement("tr");
      [new Date(row.t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), row.finished,
        fmt(row.finished / 60, "rate"), fmt(row.wait_p50_ms, "ms"), fmt(row.wait_p95_ms, "ms"),
        fmt(row.upstream_p50_ms, "ms"), fmt(row.upstream_p95_ms, "ms")].forEach(function (v, i) {
        var td = document.createElement("td");
        td.textContent = v;
        if (i) { td.className = "num"; }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  function fillRows(tbody, rows, cells) {
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      cells.forEach(function (cell) {
        var td = document.createElement("td");
        td.setAttribute("data-label", cell.label);
        var value = cell.value(row);
        if (value && value.nodeType) { td.appendChild(value); } else { td.textContent = value; }
        if (cell.num) { td.className = "num"; }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  function badge(text, tone) {
    var span = document.createElement("span");
    span.className = "badge " + tone;
    span.textContent = text;
    return span;
  }

  var ENDPOINT_CELLS = [
    { label: "name", value: function (e) { return e.name; } },
    { label: "models", value: function (e) { return (e.models || []).join(", "); } },
    { label: "state", value: function (e) {
      if (!e.enabled) { return badge("disabled", "muted"); }
      return e.healthy ? badge("healthy", "ok") : badge("unhealthy", "bad");
    } },
    { label: "breaker", value: function (e) {
      return badge(e.breaker_state.replace("_", " "), e.breaker_state === "closed" ? "ok" : e.breaker_state === "open" ? "bad" : "warn");
    } },
    { label: "in flight", num: true, value: function (e) { return e.in_flight + " / " + e.max_concurrency; } },
    { label: "latency", num: true, value: function (e) { return fmt(e.latency_ms, "ms"); } }
  ];

  var PRIORITY_CELLS = [
    { label: "priority", value: function (r) { return r.priority; } },
    { label: "queued", num: true, value: function (r) { return r.queued; } },
    { label: "running", num: true, value: function (r) { return r.running; } }
  ];

  function dashboard(root) {
    var url = root.getAttribute("data-url"), ms = +root.getAttribute("data-poll-ms");
    var initial = JSON.parse(document.getElementById("dashboard-data").textContent);
    function render(data) {
      bind(root, data);
      root.querySelectorAll("[data-chart]").forEach(function (fig) { drawChart(fig, data.series); });
      var table = root.querySelector("#series-rows");
      if (table) { fillSeriesTable(table, data.series); }
      var pr = root.querySelector("#priority-rows");
      if (pr) {
        if (data.by_priority.length) { fillRows(pr, data.by_priority, PRIORITY_CELLS); }
        else {
          fillRows(pr, [{}], [{ label: "", value: function () { return "Nothing waiting."; } }]);
          pr.querySelector("td").colSpan = 3;
        }
      }
      var eps = root.querySelector("#endpoint-rows");
      if (eps && data.endpoints.length) { fillRows(eps, data.endpoints, ENDPOINT_CELLS); }
      stamp(root.querySelector(".updated"));
    }
    render(initial);
    poll(url, ms, render);
  }

  function jobPage(el) {
    var status = el.getAttribute("data-status");
    poll(el.getAttribute("data-url"), +el.getAttribute("data-poll-ms"), function (job) {
      if (job.status !== status) { window.location.reload(); return false; }
      stamp(el);
      return true;
    });
  }

  function batchPage(root) {
    var bar = root.querySelector("progress");
    poll(root.getAttribute("data-url"), +root.getAttribute("data-poll-ms"), function (counts) {
      bind(root, counts);
      bar.max = Math.max(1, counts.total);
      bar.value = counts.finished;
      stamp(root.querySelector(".updated"));
      if (counts.finished >= counts.total) {
        root.querySelectorAll("[data-when-done]").forEach(function (e) { e.hidden = false; });
        return false;
      }
      return true;
    });
  }

  function turnEditor(fs) {
    var list = fs.querySelector(".turn-list"), tpl = document.getElementById("turn-template");
    function renumber() {
      list.querySelectorAll(".turn-row").forEach(function (row, i) {
        var n = i + 1;
        row.querySelectorAll("[data-id]").forEach(function (el) { el.id = el.getAttribute("data-id") + n; });
        row.querySelectorAll("[data-for]").forEach(function (el) { el.htmlFor = el.getAttribute("data-for") + n; });
        row.querySelector(".turn-n").textContent = n;
        row.querySelector("button").setAttribute("aria-label", "Remove turn " + n);
      });
    }
    fs.querySelector(".add-turn").addEventListener("click", function () {
      list.appendChild(tpl.content.cloneNode(true));
      renumber();
      var rows = list.querySelectorAll(".turn-row");
      rows[rows.length - 1].querySelector("textarea").focus();
    });
    list.addEventListener("click", function (ev) {
      var btn = ev.target.closest(".remove-turn");
      if (!btn) { return; }
      btn.closest(".turn-row").remove();
      renumber();
      fs.querySelector(".add-turn").focus();
    });
    var kind = document.getElementById("id_kind");
    function toggle() { fs.hidden = kind && kind.value !== "chat"; }
    if (kind) { kind.addEventListener("change", toggle); toggle(); }
    renumber();
  }

  /* An attempt's place on the job's timeline: set here, as the pages' Content-Security-Policy
     refuses inline style attributes (script may still set element.style). */
  function timelineBar(span) {
    span.style.left = span.getAttribute("data-left") + "%";
    span.style.width = span.getAttribute("data-width") + "%";
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".timeline-bar span[data-left]").forEach(timelineBar);
    document.querySelectorAll("[data-dashboard]").forEach(dashboard);
    document.querySelectorAll("[data-job-poll]").forEach(jobPage);
    document.querySelectorAll("[data-batch-poll]").forEach(batchPage);
    document.querySelectorAll("fieldset.turns-editor").forEach(turnEditor);
  });
})();
