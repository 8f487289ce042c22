// Commands: every writable tag with its live value, operating envelope, interlocks,
// select-before-operate and two-person rule. A write goes select → confirm (old → new, the
// limits, what will be refused) → operate, and ends with the platform's own words: the
// read-back ("verified … after N ms") or the exact refusal. Two-person commands waiting for a
// second person are listed with confirm / reject, and the recent command events below.

import { get, post, del, qs, tagUrl } from "./api.js";
import { h, table, fmtTime, fmtValue, quality, setQuality, msg, announce, openDialog } from "./app.js";

export async function mount(el, ctx) {
  const canWrite = ctx.can("write_setpoints");
  const pointsEl = h("div", { id: "points" });
  const pendingEl = h("div", { id: "pending" });
  const recentEl = h("div", { id: "recent-commands" });
  el.append(
    h("h1", {}, "Commands"),
    canWrite ? "" : msg("info", `Your role (${ctx.session.role}) may not write: values and limits are shown read-only.`),
    h("section", { "aria-labelledby": "pending-title", class: "panel" }, h("h2", { id: "pending-title" }, "Waiting for a second person"), pendingEl),
    h("section", { "aria-labelledby": "points-title" }, h("h2", { id: "points-title" }, "Writable tags"), pointsEl),
    h("section", { "aria-labelledby": "recent-title", class: "panel" }, h("h2", { id: "recent-title" }, "Recent commands"), recentEl));

  const cards = new Map(); // path -> { point, val, q, il, result }
  let points = [];

  async function loadPoints() {
    const r = await get("/api/v1/commands/points");
    points = r.points || [];
    for (const p of points) {
      const c = cards.get(p.path);
      if (c) { c.point = p; renderInterlocks(c); renderValue(c, p); } else addCard(p);
    }
    if (!points.length) pointsEl.replaceChildren(msg("info", "No writable tag that you may read."));
  }

  function addCard(p) {
    const val = h("span", { class: "val now" }, "—");
    const q = h("span", { class: "q" });
    const il = h("dd", {});
    const result = h("div", { class: "result", role: "status" });
    const e = p.envelope || {};
    const limits = [
      e.min !== null && e.min !== undefined ? `min ${fmtValue(e.min)}` : null,
      e.max !== null && e.max !== undefined ? `max ${fmtValue(e.max)}` : null,
      e.max_step ? `step ≤ ${fmtValue(e.max_step)}` : null,
      e.max_rate ? `rate ≤ ${fmtValue(e.max_rate)}/s` : null,
      e.min_interval ? `one write per ${e.min_interval}` : null,
    ].filter(Boolean);
    const writeBtn = canWrite && p.can_write
      ? h("button", { type: "button", class: "primary", "data-action": "write", "aria-label": `Write ${p.path}`, onclick: () => write(cards.get(p.path)) }, "Write…")
      : null;
    const card = h("article", { class: "point", "data-path": p.path, "aria-labelledby": `pt-${cssId(p.path)}` },
      h("header", {},
        h("div", {}, h("h3", { id: `pt-${cssId(p.path)}`, class: "mono" }, p.path), p.description ? h("div", { class: "muted" }, p.description) : null),
        h("div", {}, val, " ", q)),
      h("dl", {},
        h("dt", {}, "Envelope"), h("dd", {}, limits.length ? limits.join(" · ") : "none configured"),
        p.range ? [h("dt", {}, "Range"), h("dd", {}, `${fmtValue(p.range.min)} … ${fmtValue(p.range.max)} ${p.unit || ""}`)] : null,
        h("dt", {}, "Interlocks"), il,
        h("dt", {}, "Select first"), h("dd", {}, p.select_before_operate ? `yes, valid ${p.select_before_operate}` : "no (the HMI selects anyway, for 10 s)"),
        h("dt", {}, "Second person"), h("dd", {}, p.two_person ? `yes: ${p.two_person.role} or above, within ${p.two_person.timeout}` : "no"),
        canWrite && !p.can_write ? [h("dt", {}, "You"), h("dd", {}, "may not write this tag (outside your write prefixes)")] : null),
      writeBtn, result);
    const c = { point: p, val, q, il, result, card };
    cards.set(p.path, c);
    renderValue(c, p);
    renderInterlocks(c);
    pointsEl.append(card);
  }

  function renderValue(c, t) {
    if ("value" in t) { c.point.value = t.value; c.val.textContent = fmtValue(t.value, c.point.unit); }
    if (t.quality) { c.point.quality = t.quality; c.point.quality_reason = t.quality_reason; setQuality(c.q, t.quality, t.quality_reason); }
  }

  function renderInterlocks(c) {
    const list = c.point.interlocks || [];
    c.il.replaceChildren(list.length ? h("ul", { class: "warn", style: "margin:0" }, list.map((i) => h("li", { class: i.state === "holds" ? "" : "block", style: i.state === "holds" ? "background:transparent;border-left-color:var(--ok);color:var(--text)" : "" },
      h("span", { class: `il-${i.state}` }, i.state === "holds" ? "✓ holds" : i.state === "violated" ? "✕ violated" : "? cannot be evaluated"),
      ` ${i.name}`, i.detail ? h("div", { class: "muted" }, i.detail) : null))) : "none");
  }

  /** What the platform will refuse or ask for, as far as the page can tell before selecting. */
  function warnings(p, value) {
    const out = [];
    const e = p.envelope || {};
    const n = typeof value === "number";
    if (n && e.min !== null && e.min !== undefined && value < e.min) out.push({ block: true, text: `${fmtValue(value)} is below the minimum ${fmtValue(e.min)}: the platform will refuse it.` });
    if (n && e.max !== null && e.max !== undefined && value > e.max) out.push({ block: true, text: `${fmtValue(value)} is above the maximum ${fmtValue(e.max)}: the platform will refuse it.` });
    if (n && e.max_step && typeof p.value === "number" && Math.abs(value - p.value) > e.max_step) out.push({ block: true, text: `A step of ${fmtValue(Math.abs(value - p.value))} from ${fmtValue(p.value)} is more than the maximum step ${fmtValue(e.max_step)}.` });
    if (e.max_step && p.quality !== "Good") out.push({ block: true, text: `The current value is ${p.quality}: the maximum step cannot be checked, so the write is refused to fail safe.` });
    for (const i of p.interlocks || []) if (i.state !== "holds") out.push({ block: true, text: `Interlock ${i.name} ${i.state === "violated" ? "is violated" : "cannot be evaluated"}${i.detail ? `: ${i.detail}` : ""}.` });
    if (n && e.max_rate) out.push({ text: `At most ${fmtValue(e.max_rate)} ${p.unit || "units"}/s since the last accepted command.` });
    if (e.min_interval) out.push({ text: `At most one accepted write per ${e.min_interval}.` });
    if (p.two_person) out.push({ text: `A second person (${p.two_person.role} or above) must confirm within ${p.two_person.timeout}.` });
    return out;
  }

  function parseValue(p, raw) {
    if (p.value_type === "bool") return raw === "true";
    if (p.value_type === "int") {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isInteger(n)) throw new Error("Enter a whole number.");
      return n;
    }
    if (p.value_type === "float") {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n)) throw new Error("Enter a number.");
      return n;
    }
    return raw;
  }

  /** The select → confirm → operate dialog. */
  async function write(c) {
    const p = c.point;
    await openDialog(`Write ${p.path.split("/").pop()}`, (dlg, close) => {
      const stage = h("div", {});
      dlg.append(h("p", { class: "mono" }, p.path), stage);
      let selection = null;
      const cancelSelection = async () => {
        if (!selection) return;
        selection = null;
        try { await del(`/api/v1/tags/${tagUrl(p.path)}/select`); } catch { /* it expires by itself */ }
      };
      dlg.addEventListener("close", cancelSelection);
      const done = (kind, text) => {
        c.result.replaceChildren(msg(kind, text));
        announce(text);
        stage.replaceChildren(h("div", { id: "cmd-result" }, msg(kind, text)),
          h("div", { class: "actions" }, h("button", { type: "button", id: "cmd-close", autofocus: true, onclick: () => close() }, "Close")));
        stage.querySelector("#cmd-close").focus();
      };

      // Step 1: the value and the reason; select.
      const input = p.value_type === "bool"
        ? h("select", { id: "cmd-value" }, h("option", { value: "true" }, "ON (true)"), h("option", { value: "false" }, "OFF (false)"))
        : h("input", { id: "cmd-value", inputmode: p.value_type === "string" ? null : "decimal", autocomplete: "off", value: p.value ?? "" });
      const reason = h("input", { id: "cmd-reason", autocomplete: "off", required: true });
      const warnList = h("ul", { class: "warn", "aria-live": "polite" });
      const err = h("div", {});
      const selectBtn = h("button", { type: "submit", class: "primary", id: "cmd-select" }, "Select…");
      const showWarnings = () => {
        let v;
        try { v = parseValue(p, input.value); } catch { warnList.replaceChildren(); return; }
        warnList.replaceChildren(...warnings(p, v).map((w) => h("li", { class: w.block ? "block" : "" }, w.text)));
      };
      input.addEventListener("input", showWarnings);
      const form = h("form", {},
        h("p", {}, "Current value: ", h("strong", {}, fmtValue(p.value, p.unit)), " ", quality(p.quality, p.quality_reason)),
        h("div", { class: "field" }, h("label", { for: "cmd-value" }, `New value${p.unit ? ` (${p.unit})` : ""}`), input),
        h("div", { class: "field" }, h("label", { for: "cmd-reason" }, "Reason (required, goes to the audit log)"), reason),
        warnList, err,
        h("div", { class: "actions" }, h("button", { type: "button", onclick: () => close() }, "Cancel"), selectBtn));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        err.replaceChildren();
        let value;
        try { value = parseValue(p, input.value); } catch (e) { err.replaceChildren(msg("error", e.message)); input.focus(); return; }
        if (!reason.value.trim()) { err.replaceChildren(msg("error", "Give a reason: it is recorded with the command.")); reason.focus(); return; }
        selectBtn.disabled = true;
        try {
          const r = await post(`/api/v1/tags/${tagUrl(p.path)}/select`, { value, reason: reason.value.trim() });
          selection = r.selection;
          confirmStep(value, reason.value.trim());
        } catch (e) {
          selectBtn.disabled = false;
          const text = e.message;
          err.replaceChildren(h("div", { id: "cmd-error" }, msg("error", text)));
          c.result.replaceChildren(msg("error", text));
          announce(text);
        }
      });
      stage.append(form);
      showWarnings();

      // Step 2: confirm what will happen, within the selection's validity.
      function confirmStep(value, why) {
        const left = h("span", {});
        const expires = Date.parse(selection.expires);
        const tick = () => {
          const s = Math.max(0, Math.ceil((expires - Date.now()) / 1000));
          left.textContent = s ? `${s} s` : "expired: select again";
          if (!s) clearInterval(timer);
        };
        const timer = setInterval(tick, 500);
        tick();
        dlg.addEventListener("close", () => clearInterval(timer));
        const operate = h("button", { type: "button", class: "primary", id: "cmd-operate" }, "Operate");
        const back = h("button", { type: "button", onclick: async () => { clearInterval(timer); await cancelSelection(); close(); } }, "Cancel");
        const e = p.envelope || {};
        stage.replaceChildren(
          h("p", { class: "change", id: "cmd-change" }, `${fmtValue(p.value, p.unit)} → ${fmtValue(value, p.unit)}`),
          h("dl", {},
            h("dt", {}, "Limits"), h("dd", {}, [e.min ?? null, e.max ?? null].some((x) => x !== null) ? `${fmtValue(e.min)} … ${fmtValue(e.max)}` : "none", e.max_step ? `, step ≤ ${fmtValue(e.max_step)}` : ""),
            h("dt", {}, "Reason"), h("dd", {}, why),
            h("dt", {}, "Selected"), h("dd", {}, `selection ${selection.id}, operate within `, left)),
          h("ul", { class: "warn" }, warnings(p, value).map((w) => h("li", { class: w.block ? "block" : "" }, w.text))),
          h("div", { class: "actions" }, back, operate));
        operate.focus();
        operate.addEventListener("click", async () => {
          operate.disabled = true;
          clearInterval(timer);
          const t0 = performance.now();
          stage.append(h("p", { role: "status" }, "Writing and waiting for the read-back…"));
          try {
            const r = await post(`/api/v1/tags/${tagUrl(p.path)}/write`, { value, reason: why, select: selection.id });
            selection = null;
            const cmd = r.command || {};
            if (cmd.result === "verified") {
              done("ok", `Verified: ${p.path} reads ${fmtValue(cmd.value ?? value, p.unit)} after ${cmd.after_ms} ms (command ${cmd.id}).`);
            } else if (cmd.result === "pending") {
              done("info", `Command ${cmd.id} waits for a second person (${cmd.needs_role} or above) until ${fmtTime(cmd.expires)}.`);
              loadPending();
            } else {
              done("info", `Command ${cmd.id ?? ""}: ${cmd.result}${cmd.message ? `: ${cmd.message}` : ""} (${Math.round(performance.now() - t0)} ms).`);
            }
          } catch (e) {
            selection = null;
            done("error", e.message);
          }
        });
      }
    });
  }

  // ---- Two-person commands ----
  async function loadPending() {
    let r;
    try { r = await get("/api/v1/commands"); } catch (e) { pendingEl.replaceChildren(msg("error", e.message)); return; }
    const list = r.pending || [];
    pendingEl.replaceChildren(list.length
      ? table("Commands waiting for confirmation", ["Command", "Tag", "Value", "Requested by", "Needs", "Expires", "Actions"], list.map((x) => h("tr", { "data-command": x.id },
        h("td", {}, String(x.id)), h("td", { class: "mono" }, x.tag), h("td", {}, fmtValue(x.value)), h("td", {}, x.requested_by),
        h("td", {}, `${x.needs_role} or above`), h("td", {}, fmtTime(x.expires)),
        h("td", {}, canWrite ? h("div", { class: "row" },
          h("button", { type: "button", onclick: () => decide(x, "confirm") }, "Confirm"),
          h("button", { type: "button", onclick: () => decide(x, "reject") }, "Reject")) : "—"))))
      : h("p", { class: "muted" }, "None."));
  }

  async function decide(x, action) {
    const label = action === "confirm" ? "Confirm" : "Reject";
    await openDialog(`${label} command ${x.id}`, (dlg, close) => {
      const reason = h("input", { id: "decide-reason", required: true });
      const err = h("div", {});
      const form = h("form", {},
        h("p", {}, `${x.requested_by} asks to write `, h("strong", {}, fmtValue(x.value)), " to ", h("span", { class: "mono" }, x.tag), "."),
        h("div", { class: "field" }, h("label", { for: "decide-reason" }, "Reason (required)"), reason), err,
        h("div", { class: "actions" }, h("button", { type: "button", onclick: () => close() }, "Cancel"), h("button", { type: "submit", class: "primary" }, label)));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        if (!reason.value.trim()) { err.replaceChildren(msg("error", "Give a reason.")); return; }
        try {
          const r = await post(`/api/v1/commands/${x.id}/${action}`, { reason: reason.value.trim() });
          const cmd = r.command || {};
          const text = cmd.result === "verified"
            ? `Command ${x.id} confirmed and verified after ${cmd.after_ms} ms.`
            : `Command ${x.id}: ${cmd.result}${cmd.message ? `: ${cmd.message}` : ""}.`;
          announce(text);
          close();
          // The list without the decided command, then the outcome above it.
          await loadPending();
          pendingEl.prepend(msg("ok", text));
          return;
        } catch (e) {
          err.replaceChildren(msg("error", e.message));
        }
        loadPending();
      });
      dlg.append(form);
    });
  }

  // ---- Recent command events ----
  async function loadRecent() {
    try {
      const r = await get("/api/v1/events" + qs({ kind: "command", from: "now-24h", limit: 25 }));
      const list = r.events || [];
      recentEl.replaceChildren(list.length
        ? table("Recent command events", ["Time", "Tag", "Result", "User", "Message"], list.map((e) => h("tr", {},
          h("td", {}, fmtTime(e.ts)), h("td", { class: "mono" }, e.subject || "—"), h("td", {}, e.code),
          h("td", {}, e.actor || "—"), h("td", {}, e.message))))
        : h("p", { class: "muted" }, "No command in the last 24 hours."));
    } catch (e) {
      recentEl.replaceChildren(msg("error", e.message));
    }
  }

  await Promise.all([loadPoints(), loadPending(), loadRecent()]);
  document.body.dataset.ready = "commands";

  const unwatch = ctx.live.watch({ tags: points.map((p) => p.path), events: ["command"] }, (m) => {
    if (m.type === "snapshot" || m.type === "tags") m.tags.forEach((t) => cards.has(t.path) && renderValue(cards.get(t.path), t));
    else if (m.type === "samples") m.samples.forEach((t) => cards.has(t.path) && renderValue(cards.get(t.path), t));
    else if (m.type === "event" && m.event.kind === "command") {
      clearTimeout(eventTimer);
      eventTimer = setTimeout(() => { loadPending(); loadRecent(); }, 300);
    }
  });
  let eventTimer = null;
  // Interlocks follow values the page does not watch: ask again now and then.
  const poll = setInterval(() => { if (!document.hidden) loadPoints().catch(() => {}); }, 5000);
  return () => { unwatch(); clearInterval(poll); clearTimeout(eventTimer); };
}

function cssId(path) {
  return path.replace(/[^A-Za-z0-9_-]/g, "_");
}
