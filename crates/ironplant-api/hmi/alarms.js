// Alarm console (ISA-18.2 states, ISA-101 presentation): the active alarms by priority, with
// unacknowledged ones flashing (a steady hatched mark when the user asks for reduced motion),
// acknowledge / shelve / unshelve / reset with a required comment; every configured alarm; the
// alarm journal (events of kind `alarm`) with filters; the KPI report (EEMUA 191 targets).

import { get, post, qs } from "./api.js";
import { h, table, fmtTime, fmtValue, fmtAny, priorityBadge, msg, announce, openDialog, kvTable } from "./app.js";

const VIEWS = { active: "Active", all: "All configured", history: "History", kpi: "KPIs" };
const STATES = {
  normal: "Normal",
  unacknowledged: "Unacknowledged",
  acknowledged: "Acknowledged",
  rtn_unacknowledged: "Cleared, unacknowledged",
  shelved: "Shelved",
  suppressed: "Suppressed by design",
  out_of_service: "Out of service",
};
const CODES = ["raised", "acknowledged", "cleared", "shelved", "unshelved", "shelve_expired", "suppressed",
  "unsuppressed", "removed_from_service", "returned_to_service", "reset"];
const SHELVE = [["15m", "15 minutes"], ["30m", "30 minutes"], ["1h", "1 hour"], ["2h", "2 hours"], ["4h", "4 hours"], ["8h", "8 hours"]];

export async function mount(el, ctx, params) {
  const view = VIEWS[params.get("view")] ? params.get("view") : "active";
  const result = h("div", { id: "alarm-result" });
  el.append(
    h("h1", {}, "Alarms"),
    h("nav", { "aria-label": "Alarm views", class: "toolbar" },
      Object.entries(VIEWS).map(([k, label]) => h("a", {
        href: `#/alarms?view=${k}`, class: "btn tab", "aria-current": k === view ? "page" : null,
      }, label))),
    result);
  const body = h("div", {});
  el.append(body);
  const ops = { ctx, result };
  if (view === "active") return active(body, ops);
  if (view === "all") return all(body, ops);
  if (view === "history") return journal(body, ctx);
  return kpi(body);
}

function stateCell(a) {
  const unack = a.state === "unacknowledged" || a.state === "rtn_unacknowledged";
  return h("span", { class: unack ? "state-unack" : "" },
    unack ? h("span", { class: "unack-mark", "aria-hidden": "true", style: `color:var(--p${a.priority})` }) : null,
    STATES[a.state] || a.state);
}

/** The buttons of the operations that apply to `a` now, for a user allowed to operate. */
function actions(a, ops, reload) {
  if (!ops.ctx.can("ack_alarms")) return h("span", { class: "muted" }, "view only");
  const btn = (label, op, extra) => h("button", {
    type: "button", "data-op": op, "data-alarm": a.id, "aria-label": `${label}: ${a.message}`,
    onclick: () => operate(a, op, label, ops, reload),
  }, label, extra);
  const out = [];
  if (a.state === "unacknowledged" || a.state === "rtn_unacknowledged") out.push(btn("Acknowledge", "ack"));
  if (["unacknowledged", "acknowledged", "rtn_unacknowledged"].includes(a.state)) out.push(btn("Shelve", "shelve"));
  if (a.state === "shelved") out.push(btn("Unshelve", "unshelve"));
  if (a.latching && a.state === "acknowledged" && !a.condition) out.push(btn("Reset", "reset"));
  return h("div", { class: "row" }, out);
}

/** The operation's dialog: a required comment (and a duration to shelve), then the request. */
async function operate(a, op, label, ops, reload) {
  await openDialog(`${label} alarm`, (dlg, close) => {
    const err = h("div", {});
    const comment = h("textarea", { id: "alarm-comment", required: true, autofocus: true });
    const duration = op === "shelve"
      ? h("select", { id: "alarm-duration" }, SHELVE.map(([v, t]) => h("option", { value: v }, t)))
      : null;
    const submit = h("button", { type: "submit", class: "primary" }, label);
    const form = h("form", { method: "dialog" },
      h("p", {}, priorityBadge(a.priority), " ", h("strong", {}, a.message), h("br"), h("span", { class: "mono" }, a.id)),
      h("div", { class: "field" }, h("label", { for: "alarm-comment" }, "Comment (required)"), comment),
      duration ? h("div", { class: "field" }, h("label", { for: "alarm-duration" }, "Shelve for"), duration) : null,
      err,
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => close() }, "Cancel"), submit));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!comment.value.trim()) { err.replaceChildren(msg("error", "A comment is required: say why.")); comment.focus(); return; }
      submit.disabled = true;
      try {
        const body = { comment: comment.value.trim() };
        if (duration) body.duration = duration.value;
        await post(`/api/v1/alarms/${encodeURIComponent(a.id)}/${op}`, body);
        const text = `${label}: ${a.message} (${a.id}) done.`;
        ops.result.replaceChildren(msg("ok", text));
        announce(text);
        close(true);
        reload();
      } catch (e) {
        submit.disabled = false;
        err.replaceChildren(msg("error", `${label} refused: ${e.message}`));
      }
    });
    dlg.append(form);
  });
}

function alarmRow(a, ops, reload) {
  const unack = a.state === "unacknowledged" || a.state === "rtn_unacknowledged";
  return h("tr", { class: `alarm-row p${a.priority}${unack ? " unack" : ""}`, "data-alarm": a.id, "data-state": a.state },
    h("td", {}, priorityBadge(a.priority)),
    h("td", {}, stateCell(a)),
    h("td", {}, fmtTime(a.active_since || a.since)),
    h("td", {},
      h("strong", {}, a.message), h("div", { class: "mono muted" }, a.id),
      a.consequence || a.response ? h("details", {}, h("summary", {}, "Consequence and response"),
        a.consequence ? h("p", {}, h("strong", {}, "Consequence: "), a.consequence) : null,
        a.response ? h("p", {}, h("strong", {}, "Response: "), a.response) : null) : null,
      a.comment ? h("div", { class: "muted" }, `Comment: ${a.comment}`) : null,
      a.shelved_until ? h("div", { class: "muted" }, `Shelved until ${fmtTime(a.shelved_until)}${a.shelved_by ? ` by ${a.shelved_by}` : ""}`) : null),
    h("td", {}, h("span", { class: "val" }, fmtValue(a.value)),
      a.limit !== null && a.limit !== undefined ? h("div", { class: "muted" }, `limit ${fmtValue(a.limit)}`) : null,
      h("div", { class: "mono muted" }, a.tag)),
    h("td", {}, actions(a, ops, reload)));
}

const HEADERS = ["Priority", "State", "Since", "Alarm", "Value and tag", "Actions"];

function active(el, ops) {
  const holder = h("div", {});
  el.append(h("p", { class: "muted" }, "Active alarms, most urgent first. Flashing: not yet acknowledged."), holder);
  const render = (list) => {
    const sorted = [...list].sort((a, b) => a.priority - b.priority || String(b.active_since || b.since).localeCompare(String(a.active_since || a.since)));
    holder.replaceChildren(sorted.length
      ? table("Active alarms", HEADERS, sorted.map((a) => alarmRow(a, ops, () => ops.ctx.alarms.refresh())), { cls: "alarms" })
      : msg("ok", "No active alarm."));
    document.body.dataset.ready = "alarms";
  };
  return ops.ctx.alarms.subscribe(render);
}

async function all(el, ops) {
  const holder = h("div", {});
  el.append(holder);
  const load = async () => {
    try {
      const r = await get("/api/v1/alarms?all=true");
      const list = (r.alarms || []).sort((a, b) => a.priority - b.priority || a.id.localeCompare(b.id));
      holder.replaceChildren(table("Every configured alarm", HEADERS, list.map((a) => alarmRow(a, ops, load))));
    } catch (e) {
      holder.replaceChildren(msg(e.code === "no_alarms" ? "info" : "error", e.message));
    }
    document.body.dataset.ready = "alarms";
  };
  await load();
  let first = true;
  // Refetch when alarms change (the shared store hears the alarm events).
  return ops.ctx.alarms.subscribe(() => { if (first) { first = false; return; } load(); });
}

function journal(el) {
  const period = h("select", { id: "hist-period" }, [["1h", "Last hour"], ["8h", "Last 8 hours"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"]]
    .map(([v, t]) => h("option", { value: v, selected: v === "24h" ? true : null }, t)));
  const code = h("select", { id: "hist-code" }, h("option", { value: "" }, "Any"), CODES.map((c) => h("option", { value: c }, c.replaceAll("_", " "))));
  const prio = h("select", { id: "hist-prio" }, h("option", { value: "" }, "Any"), [1, 2, 3, 4].map((p) => h("option", { value: p }, `${p}`)));
  const subject = h("input", { id: "hist-subject", placeholder: "e.g. acme/lyon/bottling/line1", size: 34 });
  const holder = h("div", {});
  const more = h("button", { type: "button", hidden: true }, "Load more");
  let next = null, rows = [];
  const form = h("form", { class: "toolbar", "aria-label": "Alarm history filters" },
    h("div", { class: "field" }, h("label", { for: "hist-period" }, "Period"), period),
    h("div", { class: "field" }, h("label", { for: "hist-code" }, "Event"), code),
    h("div", { class: "field" }, h("label", { for: "hist-prio" }, "Priority"), prio),
    h("div", { class: "field" }, h("label", { for: "hist-subject" }, "Tag or asset"), subject),
    h("button", { type: "submit", class: "primary" }, "Show"));
  const fetchPage = async (after) => {
    const r = await get("/api/v1/events" + qs({
      kind: "alarm", from: `now-${period.value}`, code: code.value, subject: subject.value.trim(), limit: 200, after,
    }));
    next = r.next;
    return r.events || [];
  };
  const render = () => {
    const p = prio.value ? Number(prio.value) : null;
    const shown = rows.filter((e) => !p || e.attributes?.priority === p);
    holder.replaceChildren(shown.length
      ? table("Alarm history", ["Time", "Priority", "Event", "Alarm", "Message", "#Value", "User", "Comment"], shown.map((e) => {
        const at = e.attributes || {};
        return h("tr", {},
          h("td", {}, fmtTime(e.ts)),
          h("td", {}, at.priority ? priorityBadge(at.priority) : "—"),
          h("td", {}, String(e.code).replaceAll("_", " ")),
          h("td", { class: "mono" }, at.alarm || e.subject || "—"),
          h("td", {}, e.message),
          h("td", { class: "num" }, fmtValue(at.value)),
          h("td", {}, e.actor || "—"),
          h("td", {}, at.comment || ""));
      }))
      : msg("info", "No alarm event matches these filters."));
    more.hidden = !next;
  };
  const run = async (ev) => {
    ev?.preventDefault();
    try {
      rows = await fetchPage();
      render();
    } catch (e) { holder.replaceChildren(msg("error", e.message)); }
    document.body.dataset.ready = "alarms";
  };
  more.addEventListener("click", async () => {
    try { rows = rows.concat(await fetchPage(next)); render(); } catch (e) { holder.replaceChildren(msg("error", e.message)); }
  });
  form.addEventListener("submit", run);
  el.append(form, holder, more);
  run();
}

async function kpi(el) {
  const period = h("select", { id: "kpi-period" }, [["8h", "Last 8 hours"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"]]
    .map(([v, t]) => h("option", { value: v, selected: v === "24h" ? true : null }, t)));
  const holder = h("div", {});
  el.append(h("div", { class: "toolbar" }, h("div", { class: "field" }, h("label", { for: "kpi-period" }, "Period"), period)), holder);
  const load = async () => {
    let k;
    try {
      k = await get("/api/v1/alarms/kpi" + qs({ from: `now-${period.value}` }));
    } catch (e) {
      holder.replaceChildren(msg("error", e.message));
      return;
    }
    const card = (label, value, target) => h("div", { class: "card" },
      h("div", { class: "muted" }, label), h("div", { class: "big" }, value), target ? h("div", { class: "muted" }, target) : null);
    const rest = Object.fromEntries(Object.entries(k).filter(([, v]) => typeof v !== "object" || v === null));
    holder.replaceChildren(
      h("div", { class: "cards" },
        card("Alarms", fmtAny(k.alarms)),
        card("Per operator per 10 min (avg)", fmtAny(k.per_operator_per_period_avg), "target ≤ 1 (≤ 2 manageable)"),
        card("Busiest 10 min per operator", fmtAny(k.per_operator_per_period_peak), "target ≤ 10"),
        card("Time in flood", `${fmtAny(k.flood_percent)} %`, "target < 1 %"),
        card("Standing alarms", fmtAny(k.standing?.length), "target < 5"),
        card("Chattering alarms", fmtAny(k.chattering?.length), "target 0"),
        card("Shelved now", fmtAny(k.shelved_now)),
        card("Out of service now", fmtAny(k.out_of_service_now))),
      h("div", { class: "grid2" },
        h("section", {}, h("h2", {}, "Priorities"), h("p", { class: "muted" }, "Target: about 5 % / 15 % / 80 % over the top three priorities."),
          objTable("Alarms per priority", k.priorities)),
        h("section", {}, h("h2", {}, "Most frequent"), objTable("The ten most frequent alarms", k.top))),
      h("div", { class: "grid2" },
        h("section", {}, h("h2", {}, "Chattering"), objTable("Chattering alarms", k.chattering)),
        h("section", {}, h("h2", {}, "Standing"), objTable("Standing alarms", k.standing))),
      h("section", {}, h("h2", {}, "Floods"), objTable("Alarm floods", k.floods)),
      h("section", {}, h("h2", {}, "All figures"), kvTable("Every figure of the report", rest)));
    document.body.dataset.ready = "alarms";
  };
  period.addEventListener("change", load);
  await load();
}

/** An array of objects as a table whose columns are their keys (fields may be added later). */
function objTable(caption, arr) {
  if (!Array.isArray(arr) || !arr.length) return h("p", { class: "muted" }, "None.");
  const keys = [...new Set(arr.flatMap((o) => (o && typeof o === "object" ? Object.keys(o) : ["value"])))];
  return table(caption, keys.map((k) => k.replaceAll("_", " ")), arr.map((o) => h("tr", {},
    keys.map((k) => {
      const v = o && typeof o === "object" ? o[k] : o;
      return h("td", { class: typeof v === "number" ? "num" : "" }, /(^|_)(ts|start|end|since)$/.test(k) && typeof v === "string" ? fmtTime(v) : fmtAny(v, k));
    }))));
}
