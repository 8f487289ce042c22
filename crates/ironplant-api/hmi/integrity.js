// Integrity: the manipulation-detection findings (events of kind `integrity`,
// docs/integrity.md) with their evidence: the detector, values, limits, scores and every tag
// they name, and a small trend of those tags around the finding. Live: new findings appear at
// the top; each modelled asset's anomaly score is shown as it is published.

import { get, qs } from "./api.js";
import { h, fmtTime, fmtValue, msg, announce, kvTable, setQuality } from "./app.js";
import { loadUplot, fetchAggregates, plotConfig } from "./trends.js";

const COLORS = ["#0b5394", "#a61c00", "#38761d", "#7f6000", "#351c75"];
const AROUND_MS = 10 * 60e3;
const AUTO_TRENDS = 3;

export async function mount(el, ctx) {
  const period = h("select", { id: "int-period" }, [["1h", "Last hour"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"]]
    .map(([v, t]) => h("option", { value: v, selected: v === "7d" ? true : null }, t)));
  const onlyRaised = h("input", { type: "checkbox", id: "int-raised" });
  const list = h("div", { id: "findings" });
  const scoresEl = h("div", {});
  el.append(
    h("h1", {}, "Integrity"),
    h("p", { class: "muted" }, "Findings of the data-integrity checks: implausible values, frozen or silent sensors, sensors that disagree, balances that do not close, and readings that no longer fit the models learnt on normal operation."),
    h("section", { class: "panel", "aria-labelledby": "scores-title" }, h("h2", { id: "scores-title" }, "Anomaly scores (1 = alarm)"), scoresEl),
    h("div", { class: "toolbar" },
      h("div", { class: "field" }, h("label", { for: "int-period" }, "Period"), period),
      h("label", {}, onlyRaised, " Only findings raised")),
    list);

  const tagsBody = await get("/api/v1/tags");
  const all = tagsBody.tags || [];
  const meta = new Map(all.map((t) => [t.path, t]));
  // Longest paths first, so a tag is not mistaken for the asset it is under.
  const known = [...meta.keys()].sort((a, b) => b.length - a.length);

  // ---- Anomaly scores, live ----
  const scoreTags = all.filter((t) => t.path.includes("/_integrity/"));
  const scoreCells = new Map();
  scoresEl.replaceChildren(scoreTags.length
    ? h("div", { class: "cards" }, scoreTags.map((t) => {
      const v = h("div", { class: "big val" }, "—");
      const q = h("span", { class: "q" });
      scoreCells.set(t.path, { v, q });
      return h("div", { class: "card" }, h("div", { class: "mono muted" }, t.path.replace("/_integrity/anomaly_score", "")), v, q,
        h("div", {}, h("a", { href: `#/trends?tags=${encodeURIComponent(t.path)}&range=24h` }, "trend")));
    }))
    : h("p", { class: "muted" }, "No modelled asset."));
  const showScore = (t) => {
    const c = scoreCells.get(t.path);
    if (!c) return;
    if ("value" in t) c.v.textContent = fmtValue(t.value);
    if (t.quality) setQuality(c.q, t.quality, t.quality_reason);
  };
  scoreTags.forEach(showScore);

  /** The tags a finding names, in its attributes or its message. */
  function tagsOf(e) {
    const text = `${e.subject || ""} ${e.message || ""} ${JSON.stringify(e.attributes || {})}`;
    const found = [];
    for (const p of known) {
      if (found.length >= 5) break;
      if (text.includes(p) && !found.some((f) => f.startsWith(p + "/") || f === p) && meta.get(p).value_type !== "bool") found.push(p);
    }
    return found;
  }

  let trendsDrawn = 0;
  // The small trends follow the page's width (a tablet turned, a window resized).
  const plots = [];
  const onResize = () => {
    for (const p of plots) {
      if (!p.holder.isConnected) continue;
      p.u.setSize({ width: Math.max(280, Math.min(p.holder.clientWidth, 900)), height: 170 });
      p.place();
    }
  };
  window.addEventListener("resize", onResize);
  function finding(e) {
    const at = e.attributes || {};
    const tags = tagsOf(e);
    const attrs = { ...at };
    if (typeof attrs.since === "number") attrs.since = `${fmtTime(new Date(attrs.since / 1000))} (${attrs.since} µs)`;
    const trendEl = h("div", {});
    const raised = e.code === "raised";
    const art = h("article", { class: "point", "data-finding": at.id || "", "data-code": e.code },
      h("header", {},
        h("h3", {}, raised ? "⚠ " : "✓ ", `${e.code === "raised" ? "Raised" : e.code === "cleared" ? "Cleared" : e.code}: `, h("span", { class: "mono" }, e.subject || "platform")),
        h("span", { class: "muted" }, `${fmtTime(e.ts)} · ${e.severity} · ${at.detector || ""}`)),
      h("p", {}, e.message),
      h("details", { open: raised ? true : null }, h("summary", {}, "Evidence"), kvTable("Evidence of the finding", attrs)),
      tags.length ? h("p", {}, "Tags: ", tags.map((t, i) => [i ? ", " : "", h("a", { class: "mono", href: `#/trends?tags=${encodeURIComponent(t)}&range=1h` }, t)])) : null,
      trendEl);
    if (tags.length) {
      const draw = () => miniTrend(trendEl, tags, e);
      if (raised && trendsDrawn < AUTO_TRENDS) { trendsDrawn++; draw(); } else {
        trendEl.append(h("button", { type: "button", onclick: (ev) => { ev.target.remove(); draw(); } }, "Show the trend"));
      }
    }
    return art;
  }

  async function miniTrend(holder, tags, e) {
    const at = e.attributes || {};
    const t = Date.parse(e.ts);
    const since = typeof at.since === "number" ? at.since / 1000 : t;
    const from = Math.min(since, t) - AROUND_MS;
    const to = Math.min(t + AROUND_MS, Date.now());
    try {
      const uPlot = await loadUplot();
      const width = Math.max(280, Math.min(holder.clientWidth || 600, 900));
      const fetched = await fetchAggregates(tags, from, to, width - 60);
      const series = tags.map((p, i) => ({ tag: p, unit: meta.get(p)?.unit || "", color: COLORS[i % COLORS.length] }));
      const { opts, data } = plotConfig(uPlot, width, 170, fetched, series, {});
      opts.cursor = { drag: { x: false, y: false } };
      const box = h("div", { class: "mini-plot", role: "img", "aria-label": `Trend of ${tags.join(", ")} from ${fmtTime(new Date(from))} to ${fmtTime(new Date(to))} around the finding` });
      holder.replaceChildren(box,
        h("p", { class: "muted" }, tags.map((p, i) => [i ? " · " : "", h("span", { style: `color:${COLORS[i % COLORS.length]};font-weight:700` }, "━ "), p.split("/").pop(), meta.get(p)?.unit ? ` (${meta.get(p).unit})` : ""]),
          ` · ${fmtTime(new Date(from))} – ${fmtTime(new Date(to))}`));
      const u = new uPlot(opts, data, box);
      // Mark the moment of the finding on the time axis.
      const mark = h("div", { "aria-hidden": "true", style: "position:absolute;top:0;bottom:0;width:0;border-left:2px dashed #b00020" });
      u.over.append(mark);
      const place = () => { mark.style.left = `${u.valToPos(t / 1000, "x")}px`; };
      place();
      plots.push({ u, holder, place });
    } catch (err) {
      holder.replaceChildren(msg("error", `No trend: ${err.message}`));
    }
  }

  let events = [];
  const render = () => {
    const shown = onlyRaised.checked ? events.filter((e) => e.code === "raised") : events;
    trendsDrawn = 0;
    list.replaceChildren(...(shown.length ? shown.map(finding) : [msg("ok", "No integrity finding in this period.")]));
  };
  async function load() {
    try {
      const r = await get("/api/v1/events" + qs({ kind: "integrity", from: `now-${period.value}`, limit: 100 }));
      events = r.events || [];
      render();
    } catch (e) {
      list.replaceChildren(msg("error", e.message));
    }
    document.body.dataset.ready = "integrity";
  }
  period.addEventListener("change", load);
  onlyRaised.addEventListener("change", render);
  await load();

  const unwatch = ctx.live.watch({ tags: scoreTags.map((t) => t.path), events: ["integrity"] }, (m) => {
    if (m.type === "snapshot" || m.type === "tags") m.tags.forEach(showScore);
    else if (m.type === "samples") m.samples.forEach(showScore);
    else if (m.type === "event" && m.event.kind === "integrity") {
      events.unshift(m.event);
      if (!onlyRaised.checked || m.event.code === "raised") {
        const first = list.firstElementChild;
        if (first && first.classList.contains("msg")) first.remove();
        list.prepend(finding(m.event));
      }
      announce(`Integrity ${m.event.code}: ${m.event.message}`);
    }
  });
  return () => { unwatch(); window.removeEventListener("resize", onResize); };
}

