// The HMI shell: session (login, logout, expiry), the hash router, the navigation, the live
// connection, the shared alarm list, and the small DOM and formatting helpers every page uses.
// Pages are modules loaded on first visit (`mount(el, ctx, params)` returns a cleanup).

import { api, get, del, setCsrf, getCsrf, whenAuthLost, ApiError } from "./api.js";
import { Live } from "./live.js";

const PAGES = {
  plant: "Plant",
  trends: "Trends",
  alarms: "Alarms",
  commands: "Commands",
  integrity: "Integrity",
  system: "System",
};

// ---- DOM helpers ----------------------------------------------------------------------------

/** `h("button", {class, onclick, ...attrs}, ...children)`: an element; strings become text. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** The same for SVG elements. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** A message box (`kind`: error, ok, info); errors are announced by role=alert. */
export function msg(kind, text) {
  return h("div", { class: `msg ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** Tells screen readers a result (the ARIA live region of the shell). */
export function announce(text) {
  const el = document.getElementById("announce");
  el.textContent = "";
  // A new text node in a later frame is announced even when the text repeats.
  requestAnimationFrame(() => { el.textContent = text; });
}

/** A table with a caption (for screen readers), header cells and rows of cells. */
export function table(caption, headers, rows, { captionVisible = false, cls = "" } = {}) {
  // Focusable, so a keyboard user can scroll a wide table sideways (at tablet width).
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption },
    h("table", { class: cls },
      h("caption", { class: captionVisible ? "" : "sr-only" }, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.startsWith("#") ? "num" : "" }, x.replace(/^#/, ""))))),
      h("tbody", {}, rows)));
}

/** Key/value rows of an object (nested objects as JSON): for stats whose fields may grow. */
export function kvTable(caption, obj) {
  const rows = Object.entries(obj || {}).map(([k, v]) =>
    h("tr", {}, h("th", { scope: "row" }, k.replaceAll("_", " ")),
      h("td", { class: typeof v === "number" ? "num" : "" }, fmtAny(v, k))));
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption }, h("table", { class: "kv" }, h("caption", { class: "sr-only" }, caption), h("tbody", {}, rows)));
}

// ---- Formatting -----------------------------------------------------------------------------

const num = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });

export function fmtValue(v, unit) {
  let text;
  if (v === null || v === undefined) text = "—";
  else if (typeof v === "boolean") text = v ? "ON" : "OFF";
  else if (typeof v === "number") text = num.format(v);
  else if (typeof v === "object") text = JSON.stringify(v);
  else text = String(v);
  return unit && v !== null && v !== undefined && typeof v === "number" ? `${text} ${unit}` : text;
}

export function fmtAny(v, key = "") {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    if (/bytes$/.test(key)) return fmtBytes(v);
    return num.format(v);
  }
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

export function fmtBytes(b) {
  if (b === null || b === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${i ? b.toFixed(1) : b} ${units[i]}`;
}

/** A time for people: the local clock time today, else the date too. */
export function fmtTime(t) {
  if (t === null || t === undefined) return "—";
  const d = t instanceof Date ? t : new Date(typeof t === "number" ? t : String(t));
  if (isNaN(d)) return String(t);
  const pad = (n) => String(n).padStart(2, "0");
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

export function fmtAge(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return "—";
  const sec = Math.max(0, ms / 1000);
  if (sec < 10) return `${sec.toFixed(1)} s`;
  if (sec < 120) return `${Math.round(sec)} s`;
  if (sec < 7200) return `${Math.round(sec / 60)} min`;
  if (sec < 172800) return `${Math.round(sec / 3600)} h`;
  return `${Math.round(sec / 86400)} d`;
}

/** Quality as text with a symbol (never colour alone): Good / Uncertain (reason) / Bad (reason). */
export function quality(q, reason) {
  const el = h("span", {});
  setQuality(el, q, reason);
  return el;
}

export function setQuality(el, q, reason) {
  const k = q === "Good" ? "good" : q === "Uncertain" ? "uncertain" : "bad";
  const sym = k === "good" ? "✓" : k === "uncertain" ? "?" : "✕";
  el.className = `q q-${k}`;
  el.textContent = `${sym} ${q || "Bad"}${reason ? ` (${reason})` : ""}`;
}

export const PRIORITY_NAMES = { 1: "Critical", 2: "High", 3: "Medium", 4: "Low" };

export function priorityBadge(p) {
  return h("span", { class: `prio prio-${p}` }, `${p} ${PRIORITY_NAMES[p] || ""}`);
}

/** A `<dialog>` opened modally; resolves when it closes. `build(dialog, close)` fills it. */
export function openDialog(title, build) {
  const id = "dlg-" + Math.random().toString(36).slice(2);
  const dlg = h("dialog", { "aria-labelledby": id }, h("h2", { id }, title));
  document.body.append(dlg);
  return new Promise((resolve) => {
    let result;
    const close = (r) => { result = r; dlg.close(); };
    dlg.addEventListener("close", () => { dlg.remove(); resolve(result); });
    build(dlg, close);
    dlg.showModal();
    const first = dlg.querySelector("[autofocus], input, select, textarea, button");
    if (first) first.focus();
  });
}

// ---- Session --------------------------------------------------------------------------------

let session = null;
let live = null;
let current = null; // { name, cleanup }
let expiryTimer = null;

const ctx = {
  get session() { return session; },
  can: (perm) => !!session && session.permissions.includes(perm),
  get live() { return live; },
  announce,
  alarms: null,
};

/** The active alarms, shared: the nav badge, the plant view and the console follow them. */
class AlarmStore {
  constructor() {
    this.list = [];
    this.listeners = new Set();
    this.timer = null;
    this.unwatch = null;
  }
  start() {
    this.unwatch = live.watch({ events: ["alarm"] }, (m) => {
      if (m.type === "event" && m.event.kind === "alarm") this.refreshSoon();
    });
    this.refresh();
  }
  stop() {
    this.unwatch?.();
    clearTimeout(this.timer);
    this.list = [];
  }
  refreshSoon() {
    // Alarm floods come in bursts: one fetch per burst.
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 250);
  }
  async refresh() {
    try {
      const r = await get("/api/v1/alarms");
      this.list = r.alarms || [];
    } catch (e) {
      if (e.code !== "no_alarms") return;
      this.list = [];
    }
    const unack = this.list.filter((a) => a.state === "unacknowledged" || a.state === "rtn_unacknowledged").length;
    const badge = document.getElementById("alarm-badge");
    badge.hidden = this.list.length === 0;
    badge.textContent = unack ? `${this.list.length} (${unack} unack.)` : String(this.list.length);
    for (const fn of this.listeners) fn(this.list);
  }
  subscribe(fn) {
    this.listeners.add(fn);
    fn(this.list);
    return () => this.listeners.delete(fn);
  }
}

function setSession(s) {
  session = s;
  setCsrf(s.csrf);
  document.getElementById("who").textContent = `${s.user} (${s.role})`;
  document.getElementById("top").hidden = false;
  clearTimeout(expiryTimer);
  const left = Date.parse(s.expires) - Date.now();
  // Check the session when it should expire (at most every day: setTimeout's range).
  if (left > 0) expiryTimer = setTimeout(checkSession, Math.min(left + 1000, 86400000));
}

function startLive() {
  live = new Live({
    csrf: getCsrf,
    onState: (state, detail) => {
      const el = document.getElementById("live-state");
      el.dataset.state = state;
      el.textContent = state === "open" ? "Live" : state === "connecting" ? "Live: connecting" : `Live: disconnected, ${detail || "retrying"}`;
    },
    onAuthFailed: checkSession,
  });
  live.start();
  ctx.alarms = new AlarmStore();
  ctx.alarms.start();
}

async function checkSession() {
  try {
    const s = await api("/api/v1/session", { auth: false });
    setSession(s);
  } catch (e) {
    if (e.status === 401) sessionLost("Your session has expired. Log in again.");
  }
}

function sessionLost(why) {
  if (!session) return;
  session = null;
  clearTimeout(expiryTimer);
  ctx.alarms?.stop();
  live?.stop();
  live = null;
  unmount();
  showLogin(why);
}

whenAuthLost(() => sessionLost("Your session has expired. Log in again."));

function unmount() {
  if (current?.cleanup) {
    try { current.cleanup(); } catch (e) { console.error(e); }
  }
  current = null;
}

function showLogin(notice) {
  unmount();
  document.getElementById("top").hidden = true;
  document.title = "Log in · Ironplant HMI";
  const main = document.getElementById("main");
  const err = h("div", { class: "msg error", role: "alert", id: "login-error" });
  const user = h("input", { id: "login-user", name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const button = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h("form", { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Ironplant HMI"),
    notice ? msg("info", notice) : null,
    h("div", { class: "field" }, h("label", { for: "login-user" }, "User name"), user),
    h("div", { class: "field" }, h("label", { for: "login-password" }, "Password"), pass),
    err, button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    err.textContent = "";
    try {
      const s = await api("/api/v1/session", { method: "POST", body: { user: user.value, password: pass.value }, auth: false });
      pass.value = "";
      setSession(s);
      startLive();
      const target = location.hash && !location.hash.startsWith("#/login") ? location.hash : "#/plant";
      if (location.hash === target) route(); else location.hash = target;
    } catch (e) {
      err.textContent = e.code === "locked"
        ? `This account is locked for now: ${e.message}`
        : e.status === 401 ? "Wrong user name or password." : e.message;
      button.disabled = false;
      pass.focus();
    }
  });
  main.replaceChildren(form);
  user.focus();
}

async function logout() {
  try { await del("/api/v1/session"); } catch { /* the session may be gone already */ }
  sessionLost("You are logged out.");
  history.replaceState(null, "", "#/login");
}

// ---- Router ---------------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { name: path.split("/")[0] || "plant", params: new URLSearchParams(query) };
}

async function route() {
  const { name, params } = parseHash();
  if (!session) { showLogin(); return; }
  if (name === "login") { location.replace("#/plant"); return; }
  const page = PAGES[name] ? name : "plant";
  for (const a of document.querySelectorAll(".nav a")) {
    if (a.dataset.route === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  unmount();
  const main = document.getElementById("main");
  main.replaceChildren(h("p", { class: "loading" }, "Loading…"));
  document.body.dataset.page = page;
  delete document.body.dataset.ready;
  document.title = `${PAGES[page]} · Ironplant HMI`;
  const mine = (current = { name: page, cleanup: null });
  try {
    const mod = await import(`./${page}.js`);
    if (current !== mine) return;
    const el = h("div", { class: `page page-${page}` });
    main.replaceChildren(el);
    mine.cleanup = await mod.mount(el, ctx, params);
    if (current !== mine) { mine.cleanup?.(); return; }
  } catch (e) {
    if (current !== mine) return;
    console.error(e);
    main.replaceChildren(msg("error", e instanceof ApiError ? e.message : `This page failed to load: ${e.message}`));
  }
}

/** Navigations by the links keep the focus sensible: on the new page's content. */
window.addEventListener("hashchange", async () => {
  await route();
  if (session) document.getElementById("main").focus({ preventScroll: true });
});

document.getElementById("logout").addEventListener("click", logout);

async function boot() {
  try {
    const s = await api("/api/v1/session", { auth: false });
    setSession(s);
    startLive();
  } catch (e) {
    if (e.status !== 401) {
      document.getElementById("main").replaceChildren(msg("error", e.message));
      return;
    }
  }
  route();
}

boot();

