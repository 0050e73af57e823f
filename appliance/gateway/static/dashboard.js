/* The ops dashboard: polls /v1/ops/* every few seconds and draws hand-written SVG charts.
 * No library and nothing from the internet: boxes are often offline. Every chart's <svg>
 * carries data-points (points drawn) so tests and people can tell "no data" from "broken".
 * Its Knowledge page (#knowledge) uploads documents to /v1/kb/*, lists, removes and searches
 * them; text from documents is only ever set as textContent. */
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

  const authHeaders = (extra = {}) =>
    (token ? { Authorization: "Bearer " + token, ...extra } : { ...extra });

  /** An Error carrying the API's status, message and code ({"error": {...}} bodies). */
  function apiError(status, body, fallback) {
    const detail = (body && body.error) || {};
    const error = new Error(detail.message || fallback || `HTTP ${status}`);
    error.status = status;
    error.code = detail.code || "";
    return error;
  }

  /** A JSON call to the box; ``json`` (if given) is sent as the request's body. */
  async function api(path, { method = "GET", json, timeout = FETCH_TIMEOUT_MS } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeout);
    try {
      const sending = json !== undefined;
      const headers = authHeaders(sending ? { "Content-Type": "application/json" } : {});
      const response = await fetch(path, { method, headers, signal: controller.signal,
                                           body: sending ? JSON.stringify(json) : undefined,
                                           cache: "no-store", credentials: "omit" });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw apiError(response.status, body, response.statusText);
      return body;
    } catch (error) {
      if (error.name === "AbortError") throw new Error(`no answer in ${timeout / 1000} s`);
      throw error;
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

  /** Rows of text (or of nodes, such as buttons, that a column makes), or ``emptyText``. */
  function fillTable(id, rows, columns, rowClass, emptyText, rowAttributes = () => ({})) {
    const body = $(id).tBodies[0];
    body.replaceChildren();
    if (!rows.length) {
      const tr = el("tr");
      tr.appendChild(el("td", { class: "none", colspan: columns.length }, emptyText));
      body.appendChild(tr);
    }
    for (const row of rows) {
      const tr = el("tr", { class: rowClass(row), ...rowAttributes(row) });
      for (const column of columns) {
        const value = column(row);
        const td = el("td");
        if (value instanceof Node) td.appendChild(value); else td.textContent = String(value);
        tr.appendChild(td);
      }
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

  /** True (and the status says so) when the token was refused: asking again will not help. */
  function refused(error) {
    if (error.status !== 401 && error.status !== 403) return false;
    setStatus(`refused (${error.status}): ${error.message}. Open ` +
      "/dashboard?access_token=<admin token> again.", true);
    return true;
  }

  async function update() {
    try {
      await refresh();
      setStatus(`updated ${stamp(Date.now() / 1000).slice(11)}`);
      return true;
    } catch (error) {
      if (refused(error)) return false; // a refused token will not get better by asking again
      setStatus(`cannot read the box: ${error.message}`, true);
      return true;
    }
  }

  // -- the Knowledge page ---------------------------------------------------------------------
  const NDJSON = "application/x-ndjson";
  const UPLOAD_STALL_MS = 5 * 60 * 1000; // an upload whose answer is silent this long failed
  const SEARCH_TIMEOUT_MS = 60000; // the query is embedded, maybe behind an upload's chunks
  const CONFIRM_MS = 4000; // how long a "Confirm" button waits for its second click
  const knowledge = { documents: [] }; // as last listed, for "chunk 2 of 7"

  function bytes(size) {
    if (!Number.isFinite(size)) return "–";
    if (size < 1024) return `${size} B`;
    if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
    return `${(size / 1024 / 1024).toFixed(1)} MB`;
  }

  function kbNotice(text, error = false) {
    const notice = $("kb-status");
    notice.textContent = text || "";
    notice.hidden = !text;
    notice.classList.toggle("error", Boolean(error));
    notice.setAttribute("data-code", (error && error.code) || "");
  }

  function showCollections(collections) {
    const list = $("kb-collections");
    list.replaceChildren();
    if (!collections.length) list.appendChild(el("li", { class: "none" }, "no collection yet"));
    for (const c of collections) {
      const item = el("li", { "data-collection": c.name });
      item.appendChild(el("b", {}, c.name));
      item.appendChild(document.createTextNode(
        ` ${c.documents} document${c.documents === 1 ? "" : "s"}, ` +
        `${c.chunks} chunk${c.chunks === 1 ? "" : "s"}`));
      list.appendChild(item);
    }
    list.setAttribute("data-collections", collections.length);
  }

  /** "Remove", then "Confirm" for a few seconds: a second click removes the document. */
  function removeButton(doc) {
    const button = el("button", { type: "button", class: "remove", "data-id": doc.id },
                      "Remove");
    let timer = null;
    button.addEventListener("click", async () => {
      if (!button.classList.contains("confirm")) {
        button.classList.add("confirm");
        button.textContent = "Confirm";
        timer = setTimeout(() => {
          button.classList.remove("confirm");
          button.textContent = "Remove";
        }, CONFIRM_MS);
        return;
      }
      clearTimeout(timer);
      button.disabled = true;
      button.textContent = "Removing…";
      try {
        await api(`v1/kb/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
        kbNotice(`removed ${doc.name} from ${doc.collection}`);
      } catch (error) {
        if (!refused(error)) kbNotice(`could not remove ${doc.name}: ${error.message}`, error);
      }
      await updateKnowledge();
    });
    return button;
  }

  const DOCUMENT_COLUMNS = [(d) => d.name, (d) => d.collection, (d) => d.kind,
    (d) => bytes(d.size), (d) => d.chunks, (d) => stamp(d.added), (d) => removeButton(d)];

  async function refreshKnowledge() {
    const [documents, collections] = await Promise.all([
      api("v1/kb/documents"), api("v1/kb/collections")]);
    knowledge.documents = documents.documents;
    fillTable("kb-documents", documents.documents, DOCUMENT_COLUMNS, () => "",
              "no document yet: add one above", (d) => ({ "data-id": d.id }));
    showCollections(collections.collections);
  }

  async function updateKnowledge() {
    try {
      await refreshKnowledge();
      if ($("kb-status").getAttribute("data-code") === "kb_unavailable") kbNotice("");
      setStatus(`knowledge updated ${stamp(Date.now() / 1000).slice(11)}`);
    } catch (error) {
      if (refused(error)) return;
      kbNotice(error.code === "kb_unavailable" ? `Knowledge base unavailable: ${error.message}`
        : `cannot read the knowledge base: ${error.message}`, error);
      if (error.code === "kb_unavailable") {
        knowledge.documents = [];
        fillTable("kb-documents", [], DOCUMENT_COLUMNS, () => "", "the knowledge base is off");
        showCollections([]);
      }
      setStatus("knowledge base: " + error.message, true);
    }
  }

  /** One line of the upload list: the file's name, a progress bar and what became of it. */
  function uploadItem(file) {
    const item = el("li", { class: "upload", "data-state": "uploading", "data-name": file.name });
    item.appendChild(el("span", { class: "name" }, file.name));
    const bar = el("progress", { "aria-label": `indexing ${file.name}` });
    item.appendChild(bar);
    const message = el("span", { class: "message" }, `uploading ${bytes(file.size)}…`);
    item.appendChild(message);
    $("kb-uploads").appendChild(item);
    return {
      progress(done, total, text) {
        bar.max = Math.max(total, 1);
        bar.value = done;
        item.setAttribute("data-state", "indexing");
        message.textContent = text;
      },
      finish(state, text) {
        item.setAttribute("data-state", state);
        message.textContent = text;
        if (state === "done" || state === "duplicate") {
          bar.max = 1;
          bar.value = 1;
        } else {
          bar.remove();
        }
      },
    };
  }

  /** POST one file; reports the NDJSON progress lines and returns the final document. */
  async function uploadFile(file, collection, line) {
    const form = new FormData();
    form.append("file", file, file.name);
    if (collection) form.append("collection", collection);
    const controller = new AbortController();
    let timer = setTimeout(() => controller.abort(), UPLOAD_STALL_MS);
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(), UPLOAD_STALL_MS);
    };
    try {
      const response = await fetch("v1/kb/documents", {
        method: "POST", body: form, headers: authHeaders({ Accept: NDJSON }),
        signal: controller.signal, cache: "no-store", credentials: "omit" });
      if (!(response.headers.get("content-type") || "").startsWith(NDJSON)) {
        // Refused before indexing started (a 4xx), or a duplicate (200): plain JSON.
        const body = await response.json().catch(() => ({}));
        if (!response.ok) throw apiError(response.status, body, response.statusText);
        return body;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "", result = null, total = 0;
      const handle = (event) => {
        if (event.event === "chunked") {
          total = event.chunks;
          line.progress(0, total, `embedding 0 of ${total} chunks…`);
        } else if (event.event === "embedded") {
          total = event.total;
          line.progress(event.done, total, `embedding ${event.done} of ${total} chunks…`);
        } else if (event.event === "done") {
          result = event.document;
        } else if (event.event === "error") {
          throw apiError(response.status, event, "indexing failed");
        }
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        alive();
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n")) >= 0) {
          const text = buffer.slice(0, end).trim();
          buffer = buffer.slice(end + 1);
          if (text) handle(JSON.parse(text));
        }
      }
      if (buffer.trim()) handle(JSON.parse(buffer));
      if (result === null) throw new Error("the answer ended before the document was indexed");
      return result;
    } catch (error) {
      if (error.name === "AbortError") {
        throw new Error(`no word from the box in ${UPLOAD_STALL_MS / 60000} minutes`);
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  async function uploadAll(event) {
    event.preventDefault();
    const input = $("kb-files");
    const files = [...input.files];
    if (!files.length) {
      kbNotice("choose one or more files first", true);
      return;
    }
    const collection = $("kb-collection").value.trim() || "default";
    $("kb-upload-button").disabled = true;
    kbNotice("");
    try {
      for (const file of files) { // one at a time: the box embeds one document at a time
        const line = uploadItem(file);
        try {
          const doc = await uploadFile(file, collection, line);
          if (doc.duplicate) {
            line.finish("duplicate", `already in ${doc.collection} as ${doc.name}: ` +
              "nothing added");
          } else {
            const replaced = (doc.replaced || []).length;
            line.finish("done", `${doc.chunks} chunk${doc.chunks === 1 ? "" : "s"} in ` +
              `${doc.collection}` + (replaced ? `, replacing the earlier version` : ""));
          }
        } catch (error) {
          line.finish("error", error.message);
          if (refused(error)) break;
          if (error.code === "kb_unavailable") {
            kbNotice(`Knowledge base unavailable: ${error.message}`, error);
          }
        }
        await updateKnowledge();
      }
    } finally {
      input.value = "";
      $("kb-upload-button").disabled = false;
    }
  }

  function showResults(results) {
    const list = $("kb-results");
    list.replaceChildren();
    for (const hit of results) {
      const item = el("li", { class: "hit", "data-document": hit.document,
                              "data-chunk": hit.chunk });
      const head = el("div", { class: "hit-head" });
      head.appendChild(el("b", { class: "hit-name" }, hit.name));
      const doc = knowledge.documents.find((d) => d.id === hit.document);
      head.appendChild(el("span", { class: "hit-chunk" },
                          `chunk ${hit.chunk + 1}${doc ? ` of ${doc.chunks}` : ""}`));
      head.appendChild(el("span", { class: "hit-collection" }, hit.collection));
      head.appendChild(el("span", { class: "hit-score" }, `score ${hit.score.toFixed(2)}`));
      head.appendChild(el("span", { class: "hit-detail" },
        `similarity ${hit.similarity.toFixed(2)}${hit.keyword ? ", keywords matched" : ""}`));
      item.appendChild(head);
      item.appendChild(el("blockquote", { class: "passage" }, hit.text));
      list.appendChild(item);
    }
    list.setAttribute("data-results", results.length);
  }

  async function search(event) {
    event.preventDefault();
    const query = $("kb-query").value.trim();
    const note = $("kb-search-status");
    note.classList.remove("error");
    if (!query) {
      note.textContent = "type a question or some words first";
      return;
    }
    const k = Math.min(Math.max(Math.round(Number($("kb-k").value)) || 5, 1), 50);
    const collection = $("kb-search-collection").value.trim();
    const request = { query, k, ...(collection ? { collection } : {}) };
    $("kb-search-button").disabled = true;
    note.textContent = "searching…";
    try {
      const { results } = await api("v1/kb/search", { method: "POST", json: request,
                                                      timeout: SEARCH_TIMEOUT_MS });
      showResults(results);
      note.textContent = results.length ? `${results.length} passage` +
        `${results.length === 1 ? "" : "s"}, best first` : "nothing found";
    } catch (error) {
      showResults([]);
      refused(error);
      note.textContent = error.code === "kb_unavailable"
        ? `Knowledge base unavailable: ${error.message}` : `search failed: ${error.message}`;
      note.classList.add("error");
    } finally {
      $("kb-search-button").disabled = false;
    }
  }

  // -- pages ----------------------------------------------------------------------------------
  const PAGES = ["ops", "knowledge"];
  let page = "ops";

  function showPage() {
    const wanted = window.location.hash.slice(1);
    page = PAGES.includes(wanted) ? wanted : "ops";
    for (const name of PAGES) {
      $("page-" + name).hidden = name !== page;
      if (name === page) $("tab-" + name).setAttribute("aria-current", "page");
      else $("tab-" + name).removeAttribute("aria-current");
    }
    $("window-label").hidden = page !== "ops";
    document.body.setAttribute("data-page", page);
    if (page === "knowledge") updateKnowledge(); else update();
  }

  let refreshes = 0;
  async function loop() {
    refreshes += 1;
    // Charts are drawn only while someone can see them.
    const again = document.hidden || page !== "ops" ? true : await update();
    if (!again) return;
    if (refreshes >= MAX_REFRESHES) {
      setStatus("paused after a day: reload the page to continue", true);
      return;
    }
    setTimeout(loop, REFRESH_MS);
  }

  $("window").addEventListener("change", () => { update(); });
  $("kb-upload").addEventListener("submit", uploadAll);
  $("kb-search").addEventListener("submit", search);
  window.addEventListener("hashchange", showPage);
  if (window.location.hash === "#knowledge") showPage(); // a link straight to the page
  loop();
})();
