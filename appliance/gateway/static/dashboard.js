/* The ops dashboard: polls /v1/ops/* every few seconds and draws hand-written SVG charts.
 * No library and nothing from the internet: boxes are often offline. Every chart's <svg>
 * carries data-points (points drawn) so tests and people can tell "no data" from "broken". */
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const MAX_REFRESHES = (24 * 3600 * 1000) / REFRESH_MS; // a day, then the page asks for a reload
  const FETCH_TIMEOUT_MS = 10000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const W = 460, H = 170;
  const PAD = { left: 46, right: 10, top: 10, bottom: 22 };
  const COLOURS = ["#1a73e8", "#e37400", "#188038", "#9334e6", "#d01884", "#007b83"];
  const CHARTS = [
    { id: "box", title: "Box CPU and memory available", unit: "%", min: 0, max: 100,
      metrics: ["box.cpu_pct", "box.mem_available_pct"] },
    { id: "pressure", title: "Pressure (PSI some, avg10)", unit: "%", min: 0,
      metrics: ["box.psi_mem_some_avg10", "box.psi_cpu_some_avg10"] },
    { id: "rss", title: "Resident memory", unit: "MB", min: 0,
      metrics: ["engine.rss_mb", "gateway.rss_mb", "ops.rss_mb"] },
    { id: "engine-load", title: "Engine generations", unit: "", min: 0,
      metrics: ["engine.active", "engine.waiting"] },
    { id: "tokens", title: "Engine tokens/s", unit: "/s", min: 0,
      metrics: ["engine.tokens_per_s"] },
    { id: "requests", title: "Gateway requests and errors", unit: "/s", min: 0,
      metrics: ["gateway.requests_per_s", "gateway.errors_per_s"] },
    { id: "ttft", title: "Time to first token, p50", unit: "s", min: 0,
      metrics: ["gateway.ttft_p50_s"] },
    { id: "mqtt", title: "MQTT clients", unit: "", min: 0, metrics: ["mqtt.clients"] },
    { id: "restarts", title: "Restarts", unit: "", min: 0, metrics: [] }, // found at run time
  ];
  const RESTARTS = /^supervisor\.(.+)\.restarts$/;
  // Benchmark result keys, in order of preference (the runner's own names come first).
  const BENCH_TOKENS = ["tokens_per_s", "decode_tokens_per_s", "tokens_per_s_mean"];
  const BENCH_TTFT = ["ttft_s", "ttft_p50_s", "ttft_s_mean"];

  const token = takeToken();
  const $ = (id) => document.getElementById(id);
  const figures = new Map();

  /** The admin token from ?access_token=, removed from the address bar and history. */
  function takeToken() {
    const url = new URL(window.location.href);
    const value = url.searchParams.get("access_token");
    if (value !== null) {
      url.searchParams.delete("access_token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return value;
  }

  async function api(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const response = await fetch(path, { headers, signal: controller.signal,
                                           cache: "no-store", credentials: "omit" });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        const error = new Error((body.error && body.error.message) || response.statusText);
        error.status = response.status;
        throw error;
      }
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  const SVG_TAGS = new Set(["svg", "path", "line", "text", "circle", "title", "g"]);
  function el(name, attributes = {}, text = null) {
    const node = SVG_TAGS.has(name)
      ? document.createElementNS(SVG_NS, name) : document.createElement(name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== null) node.textContent = text;
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    const size = Math.abs(value);
    if (size >= 100) return value.toFixed(0);
    if (size >= 10) return value.toFixed(1);
    return String(Number(value.toPrecision(3)));
  }

  const pad2 = (n) => String(n).padStart(2, "0");
  function clock(ts) {
    const d = new Date(ts * 1000);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }
  function stamp(ts) {
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
      `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  /** A figure (caption + svg) per chart id, created once, its content replaced per refresh. */
  function figure(parent, id, title) {
    if (!figures.has(id)) {
      const node = el("figure", { id: "chart-" + id });
      parent.appendChild(node);
      figures.set(id, node);
    }
    const node = figures.get(id);
    node.replaceChildren();
    const caption = el("figcaption");
    caption.appendChild(el("span", {}, title));
    const legend = el("span", { class: "legend" });
    caption.appendChild(legend);
    node.appendChild(caption);
    return { node, legend };
  }

  function frame(svg, lo, hi, xLabels, unit) {
    const y = (v) => PAD.top + (H - PAD.top - PAD.bottom) * (1 - (v - lo) / (hi - lo));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      svg.appendChild(el("line", { class: "grid", x1: PAD.left, x2: W - PAD.right,
                                   y1: y(v), y2: y(v) }));
      svg.appendChild(el("text", { x: PAD.left - 4, y: y(v) + 4, "text-anchor": "end" },
                         fmt(v) + unit));
    }
    svg.appendChild(el("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top,
                                 y2: H - PAD.bottom }));
    svg.appendChild(el("line", { class: "axis", x1: PAD.left, x2: W - PAD.right,
                                 y1: H - PAD.bottom, y2: H - PAD.bottom }));
    for (const [x, label, anchor] of xLabels) {
      svg.appendChild(el("text", { x, y: H - 6, "text-anchor": anchor }, label));
    }
    return y;
  }

  function range(values, spec) {
    let lo = spec.min ?? Infinity, hi = spec.max ?? -Infinity;
    for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
    if (spec.max === undefined && hi > 0) hi = nice(hi * 1.05);
    if (hi <= lo) hi = lo + 1;
    return [lo, hi];
  }

  /** The smallest round number (1, 1.2, 1.5, 2... x 10^k) at or above ``value`` (> 0). */
  function nice(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    return [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => m * power).find((v) => v >= value);
  }

  /** "12%", "3.4/s", "850 MB": a space before worded units only. */
  const withUnit = (text, unit) => (/^[A-Za-z]/.test(unit) ? `${text} ${unit}` : text + unit);

  /** Path data; a gap of over 5 typical sample intervals breaks the line (daemon down). */
  function linePath(points, x, y) {
    const gaps = points.slice(1).map((p, i) => p[0] - points[i][0]).sort((a, b) => a - b);
    const limit = Math.max(30, 5 * (gaps.length ? gaps[Math.floor(gaps.length / 2)] : 0));
    let d = "";
    points.forEach(([ts, value], i) => {
      const xy = `${x(ts).toFixed(1)},${y(value).toFixed(1)}`;
      d += i === 0 || ts - points[i - 1][0] > limit ? `M${xy}l0.01,0` : `L${xy}`;
    });
    return d;
  }

  function lineChart(parent, spec, series, since, until) {
    const { node, legend } = figure(parent, spec.id, spec.title);
    const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                            "aria-label": spec.title, "data-chart": spec.id });
    const present = spec.metrics.filter((m) => (series[m] || []).length > 0);
    const [lo, hi] = range(present.flatMap((m) => series[m].map((p) => p[1])), spec);
    const x = (ts) => PAD.left + (W - PAD.left - PAD.right) * (ts - since) / (until - since);
    const y = frame(svg, lo, hi, [[PAD.left, clock(since), "start"],
      [(PAD.left + W - PAD.right) / 2, clock((since + until) / 2), "middle"],
      [W - PAD.right, clock(until), "end"]], spec.unit === "%" ? "%" : "");
    let drawn = 0;
    spec.metrics.forEach((metric, i) => {
      const points = series[metric] || [];
      const colour = COLOURS[i % COLOURS.length];
      const label = spec.labels ? spec.labels[i] : metric;
      const item = el("span");
      item.appendChild(el("span", { class: "swatch", "data-colour": colour }));
      item.lastChild.style.background = colour;
      const last = points.length ? points[points.length - 1][1] : null;
      item.appendChild(document.createTextNode(
        `${label} ${last === null ? "–" : withUnit(fmt(last), spec.unit)}`));
      legend.appendChild(item);
      if (!points.length) return;
      svg.appendChild(el("path", { class: "line", d: linePath(points, x, y), stroke: colour,
                                   "stroke-linecap": "round", "data-metric": metric,
                                   "data-points": points.length }));
      drawn += points.length;
    });
    if (!drawn) {
      svg.appendChild(el("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" },
                         "no data yet"));
    }
    svg.setAttribute("data-points", drawn);
    node.appendChild(svg);
  }

  function pick(results, keys) {
    for (const key of keys) if (typeof results[key] === "number") return results[key];
    return null;
  }

  /** One figure per benchmark figure of merit: a point per run, regressions in red. */
  function benchChart(parent, id, title, unit, runs, keys) {
    const { node, legend } = figure(parent, id, title);
    const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                            "aria-label": title, "data-chart": id });
    const measured = runs.map((run) => [run, pick(run.results, keys)])
      .filter(([, value]) => value !== null);
    const [lo, hi] = range(measured.map(([, v]) => v), { min: 0 });
    const span = Math.max(measured.length - 1, 1);
    const x = (i) => PAD.left + 8 + (W - PAD.left - PAD.right - 16) * i / span;
    const labels = measured.length ? [[x(0), clock(measured[0][0].ts), "start"],
      [x(measured.length - 1), clock(measured[measured.length - 1][0].ts), "end"]] : [];
    const y = frame(svg, lo, hi, labels, "");
    if (measured.length) {
      const d = measured.map(([, v], i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`)
        .join("");
      svg.appendChild(el("path", { class: "line", d, stroke: COLOURS[0], "data-metric": id,
                                   "data-points": measured.length }));
    }
    measured.forEach(([run, value], i) => {
      const dot = el("circle", { cx: x(i), cy: y(value), r: run.regression ? 5 : 3,
                                 fill: COLOURS[0] });
      if (run.regression) dot.setAttribute("class", "regression");
      dot.appendChild(el("title", {}, `${stamp(run.ts)} ${run.version}: ` +
        withUnit(fmt(value), unit) +
        (run.regression ? ` — regression: ${run.regression}` : "")));
      svg.appendChild(dot);
    });
    const regressions = measured.filter(([run]) => run.regression).length;
    legend.textContent = `${measured.length} runs, ${regressions} regressions`;
    if (!measured.length) {
      svg.appendChild(el("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" },
                         "no benchmark yet"));
    }
    svg.setAttribute("data-points", measured.length);
    svg.setAttribute("data-regressions", regressions);
    node.appendChild(svg);
  }

  function fillTable(id, rows, columns, rowClass, emptyText) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const tr = el("tr");
      tr.appendChild(el("td", { class: "none", colspan: columns.length }, emptyText));
      body.appendChild(tr);
    }
    for (const row of rows) {
      const tr = el("tr", { class: rowClass(row) });
      for (const column of columns) tr.appendChild(el("td", {}, String(column(row))));
      body.appendChild(tr);
    }
    $(id).setAttribute("data-rows", rows.length);
  }

  function showRestarts(latest) {
    const parts = Object.keys(latest).filter((n) => RESTARTS.test(n)).sort()
      .map((name) => [name.match(RESTARTS)[1], latest[name]]);
    const target = $("restarts");
    target.replaceChildren();
    if (!parts.length) return;
    target.appendChild(document.createTextNode("restarts:"));
    for (const [service, count] of parts) {
      target.appendChild(document.createTextNode(` ${service} `));
      target.appendChild(el("b", {}, fmt(count)));
    }
  }

  async function refresh() {
    const minutes = Number($("window").value) || 60;
    const latest = (await api("v1/ops/latest")).latest;
    const restarts = CHARTS.find((c) => c.id === "restarts");
    restarts.metrics = Object.keys(latest).filter((n) => RESTARTS.test(n)).sort();
    restarts.labels = restarts.metrics.map((n) => n.match(RESTARTS)[1]);
    const names = [...new Set(CHARTS.flatMap((c) => c.metrics))];
    const [series, events, benchmarks] = await Promise.all([
      api(`v1/ops/series?names=${encodeURIComponent(names.join(","))}&minutes=${minutes}`),
      api(`v1/ops/events?minutes=${Math.max(minutes, 1440)}`),
      api("v1/ops/benchmarks"),
    ]);
    for (const spec of CHARTS) {
      lineChart($("charts"), spec, series.series, series.since, series.until);
    }
    showRestarts(latest);
    fillTable("events", events.events, [
      (e) => stamp(e.ts), (e) => e.kind, (e) => e.source, (e) => e.severity, (e) => e.reason,
      (e) => e.action || "—"], (e) => e.severity, "no events in this window");
    const runs = benchmarks.benchmarks.slice().reverse(); // oldest first, as time goes
    benchChart($("bench-charts"), "bench-tokens", "Benchmark tokens/s", "/s", runs, BENCH_TOKENS);
    benchChart($("bench-charts"), "bench-ttft", "Benchmark time to first token", "s", runs,
               BENCH_TTFT);
    fillTable("benchmarks", benchmarks.benchmarks, [
      (b) => stamp(b.ts), (b) => b.trigger, (b) => b.version,
      (b) => fmt(pick(b.results, BENCH_TOKENS)), (b) => fmt(pick(b.results, BENCH_TTFT)),
      (b) => b.regression || "—"], (b) => (b.regression ? "regression" : ""),
      "no benchmark has run yet");
  }

  function setStatus(text, error = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", error);
  }

  async function update() {
    try {
      await refresh();
      setStatus(`updated ${stamp(Date.now() / 1000).slice(11)}`);
      return true;
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        setStatus(`refused (${error.status}): ${error.message}. Open ` +
          "/dashboard?access_token=<admin token> again.", true);
        return false; // a refused token will not get better by asking again
      }
      setStatus(`cannot read the box: ${error.message}`, true);
      return true;
    }
  }

  let refreshes = 0;
  async function loop() {
    refreshes += 1;
    const again = document.hidden ? true : await update();
    if (!again) return;
    if (refreshes >= MAX_REFRESHES) {
      setStatus("paused after a day: reload the page to continue", true);
      return;
    }
    setTimeout(loop, REFRESH_MS);
  }

  $("window").addEventListener("change", () => { update(); });
  loop();
})();
