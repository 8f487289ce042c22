// System: what the platform is connected to (devices, broker clients, bridges), its disk use,
// the historian's and the broker's statistics (shown as key/value tables, so fields added by a
// later version appear without a change here), its components, and the audit log for users
// allowed to read it.

import { get, qs } from "./api.js";
import { h, table, kvTable, fmtBytes, fmtTime, fmtAny, msg } from "./app.js";

const KNOWN = new Set(["version", "uptime_s", "data_dir", "components", "devices", "broker", "bridges", "historian"]);

export async function mount(el, ctx) {
  const overview = h("div", { id: "system-overview" });
  el.append(h("h1", {}, "System"), overview);
  let auditEl = null;
  if (ctx.can("read_audit")) {
    auditEl = h("div", { id: "audit" });
    el.append(h("section", { class: "panel", "aria-labelledby": "audit-title" }, h("h2", { id: "audit-title" }, "Audit log"), auditEl));
  }

  async function load() {
    let s;
    try {
      s = await get("/api/v1/system");
    } catch (e) {
      overview.replaceChildren(msg("error", e.message));
      return;
    }
    overview.replaceChildren(h("div", {},
      h("div", { class: "cards" },
        card("Version", s.version),
        card("Up for", fmtUptime(s.uptime_s)),
        card("Devices connected", `${(s.devices || []).filter((d) => d.connected).length} of ${(s.devices || []).length}`),
        s.broker ? card("Broker clients", String(s.broker.clients?.length ?? s.broker.connected ?? 0)) : null,
        s.data_dir ? card("Data directory", fmtBytes(s.data_dir.bytes), s.data_dir.path) : null),
      s.data_dir ? disk(s.data_dir) : null,
      h("div", { class: "grid2" },
        section("Devices", s.devices?.length
          ? table("Devices", ["Device", "State", "#Poll errors", "Details"], s.devices.map((d) => h("tr", {},
            h("td", { class: "mono" }, d.id), h("td", {}, d.connected ? "✓ connected" : h("strong", {}, "✕ not connected")),
            h("td", { class: "num" }, fmtAny(d.poll_errors)), h("td", {}, rest(d, ["id", "connected", "poll_errors"])))))
          : h("p", { class: "muted" }, "No device.")),
        section("Components", s.components?.length
          ? table("Components", ["Component", "Role", "Status", "#Restarts", "Last error"], s.components.map((c) => h("tr", {},
            h("td", { class: "mono" }, c.name), h("td", {}, c.role), h("td", {}, c.status), h("td", { class: "num" }, fmtAny(c.restarts)), h("td", {}, c.last_error || "—"))))
          : h("p", { class: "muted" }, "—"))),
      h("div", { class: "grid2" },
        section("Broker", s.broker ? [
          s.broker.clients?.length
            ? table("Broker clients", ["Client id", "User", "Address", "Details"], s.broker.clients.map((c) => h("tr", {},
              h("td", { class: "mono" }, c.client_id), h("td", {}, c.user || "—"), h("td", { class: "mono" }, c.address), h("td", {}, rest(c, ["client_id", "user", "address"])))))
            : h("p", { class: "muted" }, s.broker.clients === null ? "Clients are listed for admins." : "No client connected."),
          h("h3", {}, "Statistics"), kvTable("Broker statistics", s.broker.stats || rest(s.broker, ["clients", "enabled"])),
        ] : h("p", { class: "muted" }, "The broker is off.")),
        section("Historian", s.historian ? kvTable("Historian statistics", s.historian) : h("p", { class: "muted" }, "The historian is off."))),
      section("Bridges", s.bridges?.length
        ? objects("Bridges", s.bridges)
        : h("p", { class: "muted" }, "No bridge configured.")),
      // Anything a later version adds, shown rather than hidden.
      Object.entries(s).filter(([k, v]) => !KNOWN.has(k) && v && typeof v === "object").map(([k, v]) =>
        section(k.replaceAll("_", " "), Array.isArray(v) ? objects(k, v) : kvTable(k, v)))));
    document.body.dataset.ready = "system";
  }

  let next = null, records = [];
  async function loadAudit(more) {
    try {
      const r = await get("/api/v1/audit" + qs({ from: "now-24h", limit: 200, after: more ? next : null }));
      records = more ? records.concat(r.records || []) : (r.records || []);
      next = (r.records || []).length === 200 ? r.next : null;
      const keys = ["seq", "ts", "kind", "actor", "user"];
      auditEl.replaceChildren(
        h("p", { class: "muted" }, "The last 24 hours, oldest first; every record is signed and chained to the one before it."),
        records.length ? table("Audit records", ["#Seq", "Time", "Kind", "Who", "Details"], records.map((a) => h("tr", {},
          h("td", { class: "num" }, String(a.seq)),
          h("td", {}, fmtTime(typeof a.ts === "number" ? new Date(a.ts / 1000) : a.ts)),
          h("td", {}, a.kind),
          h("td", {}, a.actor || a.user || "—"),
          h("td", {}, rest(a, [...keys, "prev", "sig", "rsig"])))))
          : h("p", { class: "muted" }, "No record."),
        next ? h("button", { type: "button", onclick: () => loadAudit(true) }, "Load more") : "");
    } catch (e) {
      auditEl.replaceChildren(msg("error", e.message));
    }
  }

  await load();
  if (auditEl) await loadAudit(false);
  const timer = setInterval(() => { if (!document.hidden) load(); }, 5000);
  return () => clearInterval(timer);
}

function card(label, value, sub) {
  return h("div", { class: "card" }, h("div", { class: "muted" }, label), h("div", { class: "big" }, value ?? "—"), sub ? h("div", { class: "muted mono" }, sub) : null);
}

function section(title, ...body) {
  return h("section", { class: "panel" }, h("h2", {}, title), body);
}

function disk(d) {
  const used = d.fs_total_bytes && d.fs_free_bytes !== null && d.fs_free_bytes !== undefined ? d.fs_total_bytes - d.fs_free_bytes : null;
  const pct = used !== null ? Math.round(100 * used / d.fs_total_bytes) : null;
  return section("Disk",
    h("p", {}, `Ironplant's data: ${fmtBytes(d.bytes)} in `, h("span", { class: "mono" }, d.path || "—"), "."),
    pct !== null ? [
      h("label", { for: "disk-meter" }, `File system: ${fmtBytes(used)} used of ${fmtBytes(d.fs_total_bytes)} (${pct} %), ${fmtBytes(d.fs_free_bytes)} free`),
      h("div", {}, h("meter", { id: "disk-meter", min: 0, max: 100, low: 80, high: 90, optimum: 10, value: pct, style: "width:100%;height:1.4rem" }, `${pct} %`)),
    ] : null,
    kvTable("Disk figures", d));
}

/** A compact "key value · key value" of the fields not already in columns. */
function rest(obj, skip) {
  const parts = Object.entries(obj || {}).filter(([k]) => !skip.includes(k)).map(([k, v]) => `${k.replaceAll("_", " ")}: ${fmtAny(v, k)}`);
  return parts.length ? h("span", { class: "muted" }, parts.join(" · ")) : "";
}

function objects(caption, arr) {
  const keys = [...new Set(arr.flatMap((o) => Object.keys(o || {})))];
  return table(caption, keys.map((k) => k.replaceAll("_", " ")), arr.map((o) => h("tr", {}, keys.map((k) => h("td", {}, typeof o[k] === "boolean" ? (o[k] ? "✓ yes" : "✕ no") : fmtAny(o[k], k))))));
}

function fmtUptime(s) {
  if (typeof s !== "number") return "—";
  const d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d} d ${hh} h` : hh ? `${hh} h ${m} min` : `${m} min ${s % 60} s`;
}
