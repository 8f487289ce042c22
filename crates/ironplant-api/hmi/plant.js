// Plant view: the ISA-95 asset tree with every tag's live value, unit, quality and age, a
// search, and a floor plan per zone drawn from the assets' x/y, with each asset's state
// (running/stopped from a `running` or `machine_state` tag below it, alarm by priority).

import { get } from "./api.js";
import { h, s, fmtValue, fmtAge, setQuality, msg, announce } from "./app.js";
import { covers } from "./live.js";

/** Older than this, a value is marked stale (the demo polls every second). */
const STALE_MS = 60000;
const BOX_W = 150, BOX_H = 46;

export async function mount(el, ctx) {
  const [assetsBody, tagsBody] = await Promise.all([get("/api/v1/assets"), get("/api/v1/tags")]);
  const roots = assetsBody.assets || [];
  const allTags = tagsBody.tags || [];
  const meta = new Map(allTags.map((t) => [t.path, t]));

  // Tags no asset lists (every tag has a parent asset, but an asset may be hidden by scopes).
  const placed = new Set();
  const flat = [];
  const walk = (a, depth) => {
    flat.push(a);
    a.depth = depth;
    a.tags.forEach((t) => placed.add(t));
    a.children.forEach((c) => walk(c, depth + 1));
  };
  roots.forEach((a) => walk(a, 0));
  const unplaced = allTags.filter((t) => !placed.has(t.path)).map((t) => t.path);

  const rows = new Map(); // path -> { tr, val, q, age, ts }
  const summaries = new Map(); // asset path -> { details, summary, alarm }

  // ---- The tree ----
  const tagTable = (paths) => h("table", {},
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Tag"), h("th", { scope: "col", class: "num" }, "Value"),
      h("th", { scope: "col" }, "Quality"), h("th", { scope: "col", class: "num" }, "Age"))),
    h("tbody", {}, paths.map((p) => {
      const m = meta.get(p) || {};
      const val = h("span", { class: "val" }, "—");
      const q = h("span", { class: "q" }, "…");
      const age = h("span", {}, "—");
      const name = p.split("/").pop();
      const tr = h("tr", { "data-path": p },
        h("td", {}, h("span", { class: "mono" }, name), m.writable ? h("span", { class: "muted" }, " (writable)") : null,
          m.description ? h("div", { class: "desc" }, m.description) : null),
        h("td", { class: "num" }, val), h("td", {}, q), h("td", { class: "num" }, age));
      rows.set(p, { tr, val, q, age, ts: null, unit: m.unit, search: `${p} ${m.description || ""}`.toLowerCase() });
      return tr;
    })));

  const assetNode = (a) => {
    const alarm = h("span", { class: "asset-alarm" });
    const summary = h("summary", { id: "asset-" + a.path.replaceAll("/", "__") },
      h("span", {}, a.name || a.path.split("/").pop()), h("span", { class: "level" }, a.level), alarm);
    // Opened down to the cells: a small plant shows everything; devices open on demand.
    const details = h("details", { "data-asset": a.path, open: a.depth < 4 || flat.length < 40 ? true : null },
      summary,
      a.description ? h("div", { class: "desc" }, a.description) : null,
      a.tags.length ? tagTable(a.tags) : null,
      a.children.map(assetNode));
    summaries.set(a.path, { details, summary, alarm, search: `${a.path} ${a.name} ${a.description}`.toLowerCase() });
    return details;
  };

  const search = h("input", { id: "plant-search", type: "search", placeholder: "tag, asset or description", autocomplete: "off" });
  const found = h("span", { class: "muted", "aria-live": "polite" });
  const tree = h("div", { class: "tree" }, roots.map(assetNode),
    // Tags outside the asset tree (e.g. the platform's own): closed, they are rarely what one looks for.
    unplaced.length ? h("details", {}, h("summary", {}, `Other tags (${unplaced.length})`), tagTable(unplaced)) : null);

  // ---- The floor plan ----
  const zones = new Map();
  for (const a of flat) {
    const loc = a.location || {};
    if (loc.zone && typeof loc.x_m === "number" && typeof loc.y_m === "number") {
      if (!zones.has(loc.zone)) zones.set(loc.zone, []);
      zones.get(loc.zone).push(a);
    }
  }
  const zoneNames = [...zones.keys()].sort();
  const planBoxes = new Map(); // asset path -> { g, status, state }
  const planHolder = h("div", {});
  const zoneButtons = zoneNames.map((z) => h("button", { type: "button", "aria-pressed": "false", onclick: () => showZone(z) }, z));
  function showZone(z) {
    zoneButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.textContent === z)));
    planBoxes.clear();
    planHolder.replaceChildren(floorPlan(z, zones.get(z)));
    updatePlan();
  }
  function floorPlan(zone, assets) {
    const xs = assets.map((a) => a.location.x_m), ys = assets.map((a) => a.location.y_m);
    const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
    const W = 640, H = 360, pad = 70;
    const span = Math.max(maxX - minX, (maxY - minY) * W / H, 1);
    const k = (W - 2 * pad) / span;
    const px = (x) => pad + (x - minX) * k;
    const py = (y) => H - pad - (y - minY) * k; // north (greater y) up, as on a site drawing
    const placedBoxes = [];
    const svg = s("svg", { class: "floor", viewBox: `0 0 ${W} ${H}`, role: "group", "aria-label": `Floor plan of zone ${zone}` });
    for (let gx = 0; gx <= W; gx += 40) svg.append(s("line", { class: "gridline", x1: gx, y1: 0, x2: gx, y2: H }));
    for (let gy = 0; gy <= H; gy += 40) svg.append(s("line", { class: "gridline", x1: 0, y1: gy, x2: W, y2: gy }));
    for (const a of [...assets].sort((p, q) => p.location.y_m - q.location.y_m || p.location.x_m - q.location.x_m)) {
      let x = Math.min(Math.max(px(a.location.x_m) - BOX_W / 2, 2), W - BOX_W - 2);
      let y = Math.min(Math.max(py(a.location.y_m) - BOX_H / 2, 2), H - BOX_H - 2);
      // Assets a few metres apart would overlap at this scale: move the later one aside.
      for (let tries = 0; tries < 12 && placedBoxes.some((b) => Math.abs(b.x - x) < BOX_W + 4 && Math.abs(b.y - y) < BOX_H + 4); tries++) {
        y = y + BOX_H + 6 > H - BOX_H ? 2 : y + BOX_H + 6;
        if (tries === 6) x = Math.min(x + BOX_W + 6, W - BOX_W - 2);
      }
      placedBoxes.push({ x, y });
      const label = s("text", { x: x + 7, y: y + 18, class: "name" }, a.name || a.path.split("/").pop());
      const status = s("text", { x: x + 7, y: y + 36 }, "");
      // Named by its visible text (name and state), so what is read is what is seen.
      const g = s("g", { class: "asset", tabindex: "0", role: "button", "data-asset": a.path },
        s("rect", { x, y, width: BOX_W, height: BOX_H, rx: 4 }), label, status);
      const open = () => reveal(a.path);
      g.addEventListener("click", open);
      g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); open(); } });
      svg.append(g);
      planBoxes.set(a.path, { g, status, name: a.name || a.path });
    }
    return svg;
  }
  /** Opens the tree down to an asset and puts the focus on it. */
  function reveal(path) {
    const node = summaries.get(path);
    if (!node) return;
    for (let d = node.details; d; d = d.parentElement?.closest("details")) d.open = true;
    node.summary.scrollIntoView({ block: "center" });
    node.summary.focus();
  }

  /** running/stopped of an asset: its first descendant tag named machine_state or running. */
  function runState(asset) {
    let machine = null, running = null;
    for (const [p, r] of rows) {
      if (!covers(asset, p)) continue;
      const name = p.split("/").pop();
      if (name === "machine_state" && machine === null) machine = r.value;
      if (name === "running" && running === null) running = r.value;
    }
    if (typeof machine === "number") return machine === 1 ? "Running" : machine === 2 ? "Stopped (fault)" : "Stopped";
    if (typeof running === "boolean") return running ? "Running" : "Stopped";
    return null;
  }

  let alarms = [];
  function worstAlarm(asset) {
    let worst = null;
    for (const a of alarms) if (covers(asset, a.tag) && (!worst || a.priority < worst.priority)) worst = a;
    return worst;
  }
  function updatePlan() {
    for (const [path, b] of planBoxes) {
      const run = runState(path);
      const alarm = worstAlarm(path);
      b.g.setAttribute("class", `asset${run === "Running" ? " running" : ""}${alarm ? ` alarm-${alarm.priority}` : ""}`);
      const parts = [];
      if (alarm) parts.push(`⚠ P${alarm.priority} alarm`);
      if (run) parts.push(run);
      b.status.textContent = parts.join(" · ") || "no state";
    }
  }
  function updateTreeAlarms() {
    for (const [path, n] of summaries) {
      const a = worstAlarm(path);
      n.alarm.replaceChildren(a ? h("span", { class: `prio prio-${a.priority}` }, `⚠ P${a.priority}`) : "");
    }
  }

  // ---- Search ----
  function applySearch() {
    const q = search.value.trim().toLowerCase();
    let hits = 0;
    for (const r of rows.values()) {
      const hit = !q || r.search.includes(q);
      r.tr.hidden = !hit;
      if (hit && q) hits++;
    }
    for (const [, n] of summaries) {
      n.details.classList.toggle("hit", !!q && n.search.includes(q));
    }
    // Show the assets that hold a match (or match themselves), hide the others.
    const shows = (d) => {
      const own = !search.value || [...d.querySelectorAll(":scope > .scroll tr[data-path], :scope > table tr[data-path]")].some((tr) => !tr.hidden)
        || d.classList.contains("hit");
      let child = false;
      for (const c of d.querySelectorAll(":scope > details")) child = shows(c) || child;
      const visible = own || child;
      d.hidden = !visible;
      if (q && visible) d.open = true;
      return visible;
    };
    tree.querySelectorAll(":scope > details").forEach(shows);
    found.textContent = q ? `${hits} tag${hits === 1 ? "" : "s"} found` : "";
  }
  search.addEventListener("input", applySearch);

  // ---- Live values ----
  const render = (path, t) => {
    const r = rows.get(path);
    if (!r) return;
    if ("value" in t) {
      r.value = t.value;
      r.val.textContent = fmtValue(t.value, t.unit ?? r.unit);
    }
    if (t.quality) {
      setQuality(r.q, t.quality, t.quality_reason);
      r.val.classList.toggle("bad", t.quality === "Bad");
    }
    if (t.ts !== undefined) r.ts = t.ts ? Date.parse(t.ts) : null;
  };
  let firstValues = false;
  const prefixes = [...new Set([...roots.map((a) => a.path), ...unplaced.map((p) => p.split("/")[0])])];
  const unwatch = ctx.live.watch({ tags: prefixes }, (m) => {
    if (m.type === "snapshot" || m.type === "tags") m.tags.forEach((t) => render(t.path, t));
    else if (m.type === "samples") m.samples.forEach((t) => render(t.path, t));
    else return;
    if (!firstValues && [...rows.values()].some((r) => r.ts)) {
      firstValues = true;
      document.body.dataset.ready = "plant";
      document.body.dataset.readyAt = String(Math.round(performance.now()));
    }
    planDirty = true;
  });
  // Values not yet sent by the live API (the socket is still connecting) come from the REST list.
  for (const t of allTags) render(t.path, t);

  let planDirty = true;
  const tick = setInterval(() => {
    const now = Date.now();
    for (const r of rows.values()) {
      if (r.ts === null) { r.age.textContent = "—"; continue; }
      const age = now - r.ts;
      r.age.textContent = age > STALE_MS ? `stale: ${fmtAge(age)}` : fmtAge(age);
      r.age.className = age > STALE_MS ? "stale" : "";
    }
    if (planDirty) { planDirty = false; updatePlan(); }
  }, 1000);

  const unsubAlarms = ctx.alarms.subscribe((list) => {
    alarms = list.filter((a) => a.state !== "normal");
    updatePlan();
    updateTreeAlarms();
  });

  el.append(
    h("h1", {}, "Plant"),
    h("div", { class: "plant" },
      h("section", { class: "panel", "aria-labelledby": "tree-title" },
        h("h2", { id: "tree-title" }, "Assets and tags"),
        h("div", { class: "row" },
          h("div", { class: "field" }, h("label", { for: "plant-search" }, "Search"), search), found),
        tree),
      h("section", { class: "panel plan", "aria-labelledby": "plan-title" },
        h("h2", { id: "plan-title" }, "Floor plan"),
        zoneNames.length
          ? [h("div", { class: "toolbar zone-tabs", role: "group", "aria-label": "Zone" }, zoneButtons), planHolder,
             h("p", { class: "muted" }, "Grey: normal. Colour and a ⚠ mark: an active alarm under the asset, by priority. Select an asset to find it in the tree.")]
          : msg("info", "No asset has a zone with x/y coordinates: add location = { zone, x, y } to the [[asset]]s."))));
  // The zone with the most assets first.
  if (zoneNames.length) showZone([...zoneNames].sort((a, b) => zones.get(b).length - zones.get(a).length)[0]);
  announce("Plant view loaded");

  return () => {
    unwatch();
    unsubAlarms();
    clearInterval(tick);
  };
}
