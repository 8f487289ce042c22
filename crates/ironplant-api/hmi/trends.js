// Trends: several tags over a time range, one y-axis per unit, from the historian's aggregates
// at screen resolution (never more intervals than the plot has pixels: min, max and average per
// interval, drawn as a line in a band), so a 30-day range costs as little as an hour. Drag on
// the plot to zoom (fetched again at the new resolution), buttons to pan, live mode to append
// the live samples, CSV export of exactly what is drawn. The view is in the URL:
// `#/trends?tags=PATH,PATH&range=8h`.

import { get, qs } from "./api.js";
import { h, fmtValue, fmtTime, msg, announce } from "./app.js";

export const RANGES = { "1h": 3600e3, "8h": 8 * 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const COLORS = ["#0b5394", "#a61c00", "#38761d", "#7f6000", "#351c75", "#0c5460", "#85200c", "#4c1130"];
const MAX_TAGS = 8;

// ---- uPlot, loaded on first use (it is a third of the HMI's bytes) --------------------------
let uplotLoading = null;
export function loadUplot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!uplotLoading) {
    uplotLoading = new Promise((resolve, reject) => {
      document.head.append(h("link", { rel: "stylesheet", href: "/hmi/vendor/uPlot.min.css" }));
      const sc = h("script", { src: "/hmi/vendor/uPlot.iife.min.js" });
      sc.onload = () => resolve(window.uPlot);
      sc.onerror = () => { uplotLoading = null; reject(new Error("the plotting library did not load")); };
      document.head.append(sc);
    });
  }
  return uplotLoading;
}

/**
 * Min/max/avg of `tags` over [from, to) (ms) in at most `points` intervals. Returns
 * `{ x: [s...], series: [{tag, avg, min, max}], intervalMs }`, x at the middle of each interval.
 */
export async function fetchAggregates(tags, from, to, points) {
  const intervalMs = Math.max(1000, Math.ceil((to - from) / Math.max(points, 1)));
  const body = await get("/api/v1/history" + qs({
    tag: tags,
    from: new Date(from).toISOString(),
    to: new Date(to).toISOString(),
    interval: `${intervalMs}ms`,
    agg: "min,max,avg",
  }));
  const out = { x: [], series: [], intervalMs };
  (body.tags || []).forEach((t, i) => {
    const rows = t.rows || [];
    if (i === 0) out.x = rows.map((r) => (Date.parse(r.start) + intervalMs / 2) / 1000);
    out.series.push({ tag: t.tag, avg: rows.map((r) => r.avg), min: rows.map((r) => r.min), max: rows.map((r) => r.max) });
  });
  return out;
}

/** uPlot options and data for `series` (with `unit` and `color` set on each). */
export function plotConfig(uPlot, width, height, fetched, series, { legend = false, hooks = {} } = {}) {
  const units = [...new Set(series.map((s) => s.unit || ""))];
  const axes = [{ stroke: "#1a1a1a", grid: { stroke: "#d0d0d0" }, ticks: { stroke: "#a0a0a0" } }];
  units.forEach((u, i) => axes.push({
    scale: "u:" + u, side: i % 2 ? 1 : 3, label: u || "(no unit)", stroke: "#1a1a1a",
    grid: { show: i === 0, stroke: "#e0e0e0" }, ticks: { stroke: "#a0a0a0" }, size: 60,
  }));
  const scales = { x: { time: true } };
  units.forEach((u) => { scales["u:" + u] = { auto: true }; });
  const useries = [{}];
  const bands = [];
  const data = [fetched.x];
  series.forEach((s, i) => {
    const f = fetched.series[i];
    const base = useries.length;
    useries.push({ label: s.tag, scale: "u:" + (s.unit || ""), stroke: s.color, width: 1.5, points: { show: false } });
    useries.push({ label: "min", scale: "u:" + (s.unit || ""), stroke: s.color + "66", width: 0.5, points: { show: false } });
    useries.push({ label: "max", scale: "u:" + (s.unit || ""), stroke: s.color + "66", width: 0.5, points: { show: false } });
    bands.push({ series: [base + 2, base + 1], fill: s.color + "22" });
    data.push(f.avg, f.min, f.max);
  });
  const opts = {
    width, height, scales, axes, series: useries, bands,
    legend: { show: legend },
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks,
  };
  return { opts, data };
}

// ---- The page -------------------------------------------------------------------------------

export async function mount(el, ctx, params) {
  const tagsBody = await get("/api/v1/tags");
  const numeric = (tagsBody.tags || []).filter((t) => t.value_type === "float" || t.value_type === "int");
  const meta = new Map(numeric.map((t) => [t.path, t]));

  let tags = (params.get("tags") || "").split(",").filter((p) => meta.has(p)).slice(0, MAX_TAGS);
  let rangeName = RANGES[params.get("range")] ? params.get("range") : "1h";
  let win = null; // {from, to} in ms; null: the preset ending now
  let live = params.get("live") !== "0";
  let plot = null;
  let shown = null; // what is drawn: {x, series, intervalMs}
  let loadSeq = 0;

  const status = h("p", { id: "trend-status", class: "muted", role: "status" });
  const error = h("div", {});
  const plotEl = h("div", { class: "plot", id: "trend-plot", role: "img", "aria-label": "Trend plot" });
  const legendBody = h("tbody", {});
  const legend = h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Legend" }, h("table", { class: "legend" },
    h("caption", { class: "sr-only" }, "Tags on the trend, their units and values"),
    h("thead", {}, h("tr", {}, ["Tag", "Unit", "At cursor (avg, min–max)", "Latest"].map((x) => h("th", { scope: "col" }, x)), h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Links")))),
    legendBody));

  // Tag picker: a text field with the numeric tags as suggestions.
  const options = h("datalist", { id: "trend-tag-list" }, numeric.map((t) => h("option", { value: t.path }, t.description || "")));
  const pick = h("input", { id: "trend-tag", list: "trend-tag-list", autocomplete: "off", size: 48 });
  const addBtn = h("button", { type: "button", id: "trend-add" }, "Add to trend");
  const pickErr = h("span", { class: "muted", role: "status" });
  const add = () => {
    const p = pick.value.trim();
    if (!meta.has(p)) { pickErr.textContent = p ? `No numeric tag ${p}.` : "Type or choose a tag."; return; }
    if (tags.includes(p)) { pickErr.textContent = "Already on the trend."; return; }
    if (tags.length >= MAX_TAGS) { pickErr.textContent = `At most ${MAX_TAGS} tags.`; return; }
    pickErr.textContent = "";
    tags.push(p);
    pick.value = "";
    changed();
  };
  addBtn.addEventListener("click", add);
  pick.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); add(); } });

  const rangeButtons = Object.keys(RANGES).map((r) => h("button", {
    type: "button", "aria-pressed": String(r === rangeName), "data-range": r,
    // A preset is "the last N up to now": it follows the live values again.
    onclick: () => { rangeName = r; win = null; live = true; liveBox.checked = true; changed(); },
  }, r));
  const liveBox = h("input", { type: "checkbox", id: "trend-live", checked: live ? true : null });
  liveBox.addEventListener("change", () => { live = liveBox.checked; if (live) win = null; changed(); });
  const pan = (dir) => {
    const w = currentWindow();
    const step = (w.to - w.from) / 2 * dir;
    win = { from: w.from + step, to: Math.min(w.to + step, Date.now()) };
    if (win.to - win.from < 1000) win.from = win.to - 1000;
    live = false; liveBox.checked = false;
    changed();
  };
  const earlier = h("button", { type: "button", onclick: () => pan(-1) }, "◀ Earlier");
  const later = h("button", { type: "button", onclick: () => pan(1) }, "Later ▶");
  const reset = h("button", { type: "button", onclick: () => { win = null; changed(); } }, "Reset zoom");
  const csv = h("button", { type: "button", id: "trend-csv", onclick: () => exportCsv() }, "Export CSV");
  const chips = h("ul", { class: "chips", "aria-label": "Tags on the trend" });

  el.append(
    h("h1", {}, "Trends"),
    h("section", { class: "panel", "aria-label": "Trend settings" },
      h("div", { class: "row" },
        h("div", { class: "field" }, h("label", { for: "trend-tag" }, "Add a tag"), pick), addBtn, pickErr, options),
      chips,
      h("div", { class: "toolbar" },
        h("div", { class: "group", role: "group", "aria-label": "Time range" }, rangeButtons),
        earlier, later, reset,
        h("label", { class: "check" }, liveBox, " Live"),
        csv)),
    error, plotEl, status,
    h("p", { class: "muted" }, "Drag across the plot to zoom in; each line is the average per interval, the band its minimum and maximum."),
    legend);

  function currentWindow() {
    if (win) return win;
    const to = Date.now();
    return { from: to - RANGES[rangeName], to };
  }

  function writeUrl() {
    const q = qs({ tags: tags.join(","), range: rangeName, live: live ? null : "0" });
    history.replaceState(null, "", "#/trends" + q);
  }

  function renderChips() {
    chips.replaceChildren(...tags.map((p, i) => h("li", { class: "chip" },
      h("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}`, "aria-hidden": "true" }),
      h("span", { class: "mono" }, p),
      h("button", { type: "button", "aria-label": `Remove ${p}`, onclick: () => { tags = tags.filter((t) => t !== p); changed(); } }, "✕"))));
  }

  function renderLegend(idx) {
    legendBody.replaceChildren(...tags.map((p, i) => {
      const s = shown?.series[i];
      const at = s && idx !== null && idx !== undefined ? `${fmtValue(s.avg[idx])} (${fmtValue(s.min[idx])}–${fmtValue(s.max[idx])})` : "—";
      const lv = ctx.live.values.get(p);
      return h("tr", {},
        h("td", {}, h("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}`, "aria-hidden": "true" }), h("span", { class: "mono" }, p)),
        h("td", {}, meta.get(p)?.unit || "—"),
        h("td", { class: "num" }, at),
        h("td", { class: "num" }, lv ? fmtValue(lv.value) : "—"),
        h("td", {}, h("a", { href: `#/trends?tags=${encodeURIComponent(p)}&range=${rangeName}` }, "only this")));
    }));
  }

  async function load() {
    const seq = ++loadSeq;
    rangeButtons.forEach((b) => b.setAttribute("aria-pressed", String(!win && b.dataset.range === rangeName)));
    renderChips();
    writeUrl();
    error.replaceChildren();
    if (!tags.length) {
      plot?.destroy(); plot = null; shown = null;
      plotEl.replaceChildren(h("p", { class: "muted", style: "padding:1rem" }, "Choose a tag above to draw its trend."));
      status.textContent = "";
      renderLegend(null);
      document.body.dataset.ready = "trends";
      return;
    }
    const t0 = performance.now();
    status.textContent = "Loading…";
    for (const k of ["renderMs", "fetchMs", "points", "range"]) delete status.dataset[k];
    const uPlot = await loadUplot();
    const w = currentWindow();
    // Room for one axis per unit; the rest of the width are the points we may ask for.
    const units = new Set(tags.map((p) => meta.get(p)?.unit || ""));
    const width = Math.max(300, plotEl.clientWidth - 2);
    const plotWidth = Math.max(100, width - 60 * units.size);
    let fetched;
    const f0 = performance.now();
    try {
      fetched = await fetchAggregates(tags, w.from, w.to, plotWidth);
      status.dataset.fetchMs = String(Math.round(performance.now() - f0));
    } catch (e) {
      if (seq !== loadSeq) return;
      error.replaceChildren(msg("error", e.message));
      status.textContent = "";
      return;
    }
    if (seq !== loadSeq) return;
    const series = tags.map((p, i) => ({ tag: p, unit: meta.get(p)?.unit || "", color: COLORS[i % COLORS.length] }));
    const { opts, data } = plotConfig(uPlot, width, 360, fetched, series, {
      hooks: {
        setSelect: [(u) => {
          if (u.select.width > 4) {
            const from = u.posToVal(u.select.left, "x") * 1000;
            const to = u.posToVal(u.select.left + u.select.width, "x") * 1000;
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            win = { from, to: Math.min(to, Date.now()) };
            live = false; liveBox.checked = false;
            changed();
          }
        }],
        setCursor: [(u) => renderLegend(u.cursor.idx)],
      },
    });
    shown = fetched;
    plot?.destroy();
    plotEl.replaceChildren();
    plot = new uPlot(opts, data, plotEl);
    plot.setScale("x", { min: w.from / 1000, max: w.to / 1000 });
    await new Promise((r) => requestAnimationFrame(r));
    if (seq !== loadSeq) return;
    const ms = Math.round(performance.now() - t0);
    const n = fetched.x.length;
    status.dataset.renderMs = String(ms);
    status.dataset.points = String(n);
    status.dataset.range = win ? "zoomed" : rangeName;
    status.textContent = `${fmtTime(new Date(w.from))} – ${fmtTime(new Date(w.to))}: ${n} intervals of ${fmtInterval(fetched.intervalMs)} per tag, for a plot ${plotWidth} px wide; loaded and drawn in ${ms} ms.`;
    plotEl.setAttribute("aria-label", `Trend of ${tags.join(", ")} from ${fmtTime(new Date(w.from))} to ${fmtTime(new Date(w.to))}; the values are in the table below.`);
    renderLegend(null);
    document.body.dataset.ready = "trends";
    appended = 0;
  }

  // Live mode: samples of the shown tags are appended; a fresh aggregate query now and then
  // keeps the resolution (and the point count) where it should be.
  let appended = 0;
  let redraw = null;
  let liveUnwatch = null;
  function followLive() {
    liveUnwatch?.();
    liveUnwatch = null;
    if (!live || !tags.length) return;
    liveUnwatch = ctx.live.watch({ tags: [...tags] }, (m) => {
      if (m.type !== "samples" || !plot || !shown || win) return;
      for (const sm of m.samples) {
        const i = tags.indexOf(sm.path);
        if (i < 0 || typeof sm.value !== "number" || !sm.ts) continue;
        const x = Date.parse(sm.ts) / 1000;
        if (x <= shown.x[shown.x.length - 1]) continue;
        shown.x.push(x);
        shown.series.forEach((s, j) => {
          const v = j === i ? sm.value : null;
          s.avg.push(v); s.min.push(v); s.max.push(v);
        });
        appended++;
      }
      if (!redraw) redraw = setTimeout(drawLive, 1000);
    });
  }
  function drawLive() {
    redraw = null;
    if (!plot || !shown) return;
    if (appended > 2 * shown.x.length || appended > 2000) { load(); return; }
    const w = currentWindow();
    const data = [shown.x];
    shown.series.forEach((s) => data.push(s.avg, s.min, s.max));
    plot.setData(data, false);
    plot.setScale("x", { min: w.from / 1000, max: w.to / 1000 });
    renderLegend(null);
  }
  const refresh = setInterval(() => { if (live && !win && tags.length) load(); }, 60000);

  function changed() {
    followLive();
    load();
  }

  function exportCsv() {
    if (!shown) return;
    const header = ["time"];
    tags.forEach((p) => header.push(`${p} avg`, `${p} min`, `${p} max`));
    const lines = [header.map(csvCell).join(",")];
    shown.x.forEach((x, i) => {
      const row = [new Date(x * 1000).toISOString()];
      shown.series.forEach((s) => row.push(s.avg[i] ?? "", s.min[i] ?? "", s.max[i] ?? ""));
      lines.push(row.map(csvCell).join(","));
    });
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    const a = h("a", { href: URL.createObjectURL(blob), download: `trend-${new Date().toISOString().slice(0, 19).replaceAll(":", "")}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    announce(`Exported ${shown.x.length} rows as CSV`);
  }

  // Redraw at the new width when the window is resized (tablet rotation).
  let resizeTimer = null;
  const onResize = () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(load, 300); };
  window.addEventListener("resize", onResize);

  changed();

  return () => {
    loadSeq++;
    liveUnwatch?.();
    clearInterval(refresh);
    clearTimeout(redraw);
    clearTimeout(resizeTimer);
    window.removeEventListener("resize", onResize);
    plot?.destroy();
  };
}

function csvCell(v) {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

function fmtInterval(ms) {
  if (ms < 60e3) return `${Math.round(ms / 100) / 10} s`;
  if (ms < 3600e3) return `${Math.round(ms / 6e3) / 10} min`;
  return `${Math.round(ms / 360e3) / 10} h`;
}
