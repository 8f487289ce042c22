// The web HMI end to end in a real browser (Debian's chromium driven by playwright-core),
// against a running `ironplant demo`: log in, live values, a 1-hour trend (and a 30-day one,
// timed), select → confirm → operate a setpoint and its read-back, a refused write and its
// reason, the over-current alarm the simulator raises at the higher speed acknowledged from
// the console, the integrity findings, what a viewer sees and what the API refuses it, CSRF
// attempts (another origin, a missing token), logout and an ended session; axe-core on every
// page, screenshots of every page (desktop and tablet width), first-load bytes and time.
//
// Usage: NODE_PATH=target/browser/node_modules \
//   IRONPLANT_HMI_URL=https://127.0.0.1:PORT IRONPLANT_HMI_OPERATOR=user:password \
//   IRONPLANT_HMI_VIEWER=user:password IRONPLANT_HMI_ADMIN=user:password \
//   IRONPLANT_HMI_SCREENSHOTS=target/hmi-screenshots IRONPLANT_HMI_LONG_TAG=<tag with 30 days> \
//   node tests/peers/browser_hmi.js
// Prints one JSON line: every step's observations (`errors` names the steps that threw).
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const URL_ = process.env.IRONPLANT_HMI_URL;
const SHOTS = process.env.IRONPLANT_HMI_SCREENSHOTS;
const LONG_TAG = process.env.IRONPLANT_HMI_LONG_TAG;
const cred = (name) => {
  const v = process.env[name] || "";
  const i = v.indexOf(":");
  if (i < 0) throw new Error(`${name} must be user:password`);
  return { user: v.slice(0, i), password: v.slice(i + 1) };
};
const SPEED = "acme/lyon/bottling/line1/filler/plc/speed_setpoint";
const PUMP = "acme/lyon/bottling/line1/tank/plc/pump_enable";
const LIVE_TAG = "acme/lyon/bottling/line1/filler/plc/motor_current";
const TREND_TAG = "acme/lyon/bottling/line1/filler/plc/speed_actual";
const ALARM = "filler_motor_overcurrent";
const DESKTOP = { width: 1280, height: 900 };
const TABLET = { width: 768, height: 1024 };

const out = { errors: {}, axe: {}, screenshots: [], console_errors: [] };

/** Runs one step; a failure is recorded and the next steps still run. */
async function step(name, fn) {
  const t0 = Date.now();
  try {
    out[name] = Object.assign(out[name] || {}, await fn());
  } catch (e) {
    out.errors[name] = String((e && e.stack) || e).split("\n").slice(0, 4).join(" | ");
  }
  (out.step_ms ||= {})[name] = Date.now() - t0;
  // Progress for whoever reads the test's output; the result is the JSON line on stdout.
  console.error(`browser_hmi: ${name} ${out.errors[name] ? "FAILED" : "ok"} in ${Date.now() - t0} ms`);
}

async function login(page, { user, password }) {
  await page.goto(URL_ + "/#/plant");
  await page.waitForSelector("#login-user", { timeout: 15000 });
  await page.fill("#login-user", user);
  await page.fill("#login-password", password);
  await page.click("form.login button[type=submit]");
  await page.waitForSelector("body[data-ready=plant]", { timeout: 20000 });
}

async function go(page, hash, ready) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.waitForFunction((r) => document.body.dataset.ready === r, ready, { timeout: 20000 });
}

let axeSource = null;
/** axe-core on the page as it is: the serious and critical violations, by rule. */
async function axe(page, name) {
  if (!axeSource) axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
  // Evaluated through the DevTools protocol: the page's CSP (no inline script) does not apply.
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(axeSource);
  const r = await page.evaluate(async () => {
    const res = await window.axe.run(document, { resultTypes: ["violations"] });
    return res.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, target: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
  });
  const bad = r.filter((v) => v.impact === "serious" || v.impact === "critical");
  out.axe[name] = { serious_or_critical: bad.length, violations: r };
}

async function shoot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  out.screenshots.push(file);
}

/** The page at desktop and tablet width: screenshots of both, axe on both. */
async function capture(page, name) {
  await shoot(page, name);
  await axe(page, name);
  await page.setViewportSize(TABLET);
  await page.waitForTimeout(0);
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await shoot(page, `${name}-tablet`);
  await axe(page, `${name}-tablet`);
  out.overflow = out.overflow || {};
  // At tablet width nothing may make the page scroll sideways.
  out.overflow[name] = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  await page.setViewportSize(DESKTOP);
}

/** A fetch from inside the page (the cookie goes along; the CSRF token only if asked). */
function pageFetch(page, url, { method = "GET", body, csrf = false } = {}) {
  return page.evaluate(async ([url, method, body, csrf]) => {
    const headers = { "Content-Type": "application/json" };
    if (csrf) {
      const s = await (await fetch("/api/v1/session", { credentials: "same-origin" })).json();
      headers["X-CSRF-Token"] = s.csrf;
    }
    const r = await fetch(url, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
    let json = null;
    try { json = await r.json(); } catch { /* not JSON */ }
    return { status: r.status, json };
  }, [url, method, body, csrf]);
}

/** The tag's value once it equals `want`, or its last value after 15 s. */
async function valueBecomes(page, tag, want) {
  const end = Date.now() + 15000;
  let v = await tagValue(page, tag);
  while (v !== want && Date.now() < end) {
    await page.waitForTimeout(200);
    v = await tagValue(page, tag);
  }
  return v;
}

async function tagValue(page, tag) {
  const r = await pageFetch(page, "/api/v1/tags/" + tag);
  return r.json && r.json.value;
}

async function main() {
  if (!URL_ || !SHOTS) throw new Error("IRONPLANT_HMI_URL and IRONPLANT_HMI_SCREENSHOTS are required");
  fs.mkdirSync(SHOTS, { recursive: true });
  const operator = cred("IRONPLANT_HMI_OPERATOR");
  const viewer = cred("IRONPLANT_HMI_VIEWER");
  const admin = cred("IRONPLANT_HMI_ADMIN");
  const engineer = cred("IRONPLANT_HMI_ENGINEER");
  const browser = await chromium.launch({
    executablePath: process.env.IRONPLANT_CHROMIUM || "/usr/bin/chromium",
    // The demo's certificate comes from its own CA, which this browser does not know; the
    // context option below covers page loads and fetches, this flag the WebSocket too.
    args: ["--no-sandbox", "--headless=new", "--ignore-certificate-errors"],
  });
  const newContext = () => browser.newContext({ ignoreHTTPSErrors: true, viewport: DESKTOP, acceptDownloads: true });
  try {
    const ctx = await newContext();
    const page = await ctx.newPage();
    page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text().slice(0, 300)); });
    page.on("pageerror", (e) => out.console_errors.push(String(e).slice(0, 300)));

    await step("login_page", async () => {
      await page.goto(URL_ + "/");
      await page.waitForSelector("#login-user", { timeout: 15000 });
      await shoot(page, "login");
      await axe(page, "login");
      return { shown: true };
    });

    await step("login", async () => {
      await login(page, operator);
      const who = await page.textContent("#who");
      const s = await pageFetch(page, "/api/v1/session");
      const cookies = await ctx.cookies();
      const c = cookies.find((x) => x.name === "ironplant_session") || {};
      return { who, role: s.json && s.json.role, cookie: { httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite } };
    });

    if (out.errors.login) {
      // Nothing else can work without a session: say so at once instead of timing out on every step.
      console.log(JSON.stringify(out));
      return;
    }

    await step("live", async () => {
      const sel = `tr[data-path="${LIVE_TAG}"] .val`;
      await page.waitForFunction((s) => { const e = document.querySelector(s); return e && e.textContent !== "—"; }, sel, { timeout: 15000 });
      const first = await page.textContent(sel);
      const t0 = Date.now();
      await page.waitForFunction(([s, v]) => document.querySelector(s).textContent !== v, [sel, first], { timeout: 20000 });
      const next = await page.textContent(sel);
      const quality = await page.textContent(`tr[data-path="${LIVE_TAG}"] .q`);
      const liveState = await page.getAttribute("#live-state", "data-state");
      const plan = await page.$$eval("svg.floor .asset", (gs) => gs.map((g) => g.textContent));
      return { tag: LIVE_TAG, first, next, changed_after_ms: Date.now() - t0, quality, live_state: liveState, floor_plan: plan };
    });

    await step("search", async () => {
      await page.fill("#plant-search", "speed_actual");
      await page.waitForFunction(() => document.querySelectorAll("tr[data-path]:not([hidden])").length > 0, null, { timeout: 5000 });
      const visible = await page.$$eval("tr[data-path]", (rows) => rows.filter((r) => !r.hidden && r.offsetParent !== null).map((r) => r.dataset.path));
      await page.fill("#plant-search", "");
      return { visible };
    });
    await step("plant_capture", async () => { await capture(page, "plant"); return {}; });

    // The load of the HMI by a logged-in user, cold cache: bytes and time until live values show.
    await step("first_load", async () => {
      const p = await ctx.newPage();
      const cdp = await ctx.newCDPSession(p);
      await cdp.send("Network.enable");
      await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
      let bytes = 0, requests = 0;
      cdp.on("Network.loadingFinished", (e) => { bytes += e.encodedDataLength; requests++; });
      await p.goto(URL_ + "/#/plant");
      await p.waitForSelector("body[data-ready=plant]", { timeout: 20000 });
      const readyAt = Number(await p.evaluate(() => document.body.dataset.readyAt));
      const nav = await p.evaluate(() => {
        const n = performance.getEntriesByType("navigation")[0];
        return { dom_content_loaded_ms: Math.round(n.domContentLoadedEventEnd), load_ms: Math.round(n.loadEventEnd) };
      });
      await p.close();
      return { bytes, requests, interactive_ms: readyAt, ...nav };
    });

    await step("trend_1h", async () => {
      await go(page, "#/trends", "trends");
      await page.fill("#trend-tag", TREND_TAG);
      await page.click("#trend-add");
      await page.click('button[data-range="1h"]');
      await page.waitForFunction(() => { const s = document.querySelector("#trend-status"); return s && s.dataset.range === "1h" && s.dataset.points; }, null, { timeout: 20000 });
      const st = await page.$eval("#trend-status", (s) => ({ ...s.dataset, text: s.textContent }));
      const canvas = await page.$eval("#trend-plot canvas", (c) => c.clientWidth).catch(() => 0);
      return { points: Number(st.points), render_ms: Number(st.renderMs), status: st.text, canvas_width: canvas, url: await page.evaluate(() => location.hash) };
    });

    await step("trend_zoom", async () => {
      const box = await page.$eval("#trend-plot .u-over", (o) => { const r = o.getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height }; });
      await page.mouse.move(box.x + box.w * 0.5, box.y + box.h / 2);
      await page.mouse.down();
      await page.mouse.move(box.x + box.w * 0.7, box.y + box.h / 2, { steps: 5 });
      await page.mouse.up();
      await page.waitForFunction(() => document.querySelector("#trend-status").dataset.range === "zoomed", null, { timeout: 20000 });
      const st = await page.$eval("#trend-status", (s) => ({ ...s.dataset, text: s.textContent }));
      return { points: Number(st.points), status: st.text };
    });

    await step("trend_csv", async () => {
      await page.click('button[data-range="1h"]');
      await page.waitForFunction(() => document.querySelector("#trend-status").dataset.range === "1h", null, { timeout: 20000 });
      const [dl] = await Promise.all([page.waitForEvent("download", { timeout: 10000 }), page.click("#trend-csv")]);
      const text = fs.readFileSync(await dl.path(), "utf8");
      const lines = text.trim().split("\n");
      return { header: lines[0], rows: lines.length - 1 };
    });
    await step("trend_capture", async () => { await capture(page, "trends"); return {}; });

    // Select → confirm → operate, then the read-back shown by the page and by the API.
    await step("write", async () => {
      await go(page, "#/commands", "commands");
      const card = `article[data-path="${SPEED}"]`;
      const before = await tagValue(page, SPEED);
      const target = before === 550 ? 500 : 550;
      await page.click(`${card} button[data-action=write]`);
      await page.fill("#cmd-value", String(target));
      await page.fill("#cmd-reason", "browser test: faster run");
      await page.click("#cmd-select");
      await page.waitForSelector("#cmd-change", { timeout: 10000 });
      const change = await page.textContent("#cmd-change");
      await shoot(page, "commands-confirm");
      await axe(page, "commands-confirm");
      await page.click("#cmd-operate");
      await page.waitForSelector("#cmd-result", { timeout: 20000 });
      const result = await page.textContent("#cmd-result");
      await page.click("#cmd-close");
      await page.waitForFunction(([c, t]) => document.querySelector(`${c} .val`).textContent.startsWith(t), [card, String(target)], { timeout: 10000 });
      const shown = await page.textContent(`${card} .val`);
      const after = await tagValue(page, SPEED);
      return { before, target, change, result, shown, after };
    });

    await step("refused", async () => {
      const card = `article[data-path="${SPEED}"]`;
      await page.click(`${card} button[data-action=write]`);
      await page.fill("#cmd-value", "650");
      await page.fill("#cmd-reason", "browser test: above the envelope");
      const warning = await page.$$eval("dialog .warn li", (l) => l.map((x) => x.textContent));
      await page.click("#cmd-select");
      await page.waitForSelector("#cmd-error", { timeout: 10000 });
      const message = await page.textContent("#cmd-error");
      const onCard = await page.textContent(`${card} .result`);
      await page.keyboard.press("Escape");
      await page.waitForSelector("dialog", { state: "detached", timeout: 5000 });
      return { message, on_card: onCard, warning, value_after: await tagValue(page, SPEED) };
    });
    // Two-person rule (the demo's infeed pump): the operator's write waits; an engineer, in
    // another browser, sees it pending and confirms it; the device then reads it back. The
    // pump is switched on again the same way (the engineer asks, the admin confirms).
    await step("two_person", async () => {
      const card = `article[data-path="${PUMP}"]`;
      const before = await tagValue(page, PUMP);
      const target = !before;
      await page.click(`${card} button[data-action=write]`);
      await page.selectOption("#cmd-value", String(target));
      await page.fill("#cmd-reason", "browser test: pump maintenance");
      await page.click("#cmd-select");
      await page.waitForSelector("#cmd-operate", { timeout: 10000 });
      await page.click("#cmd-operate");
      await page.waitForSelector("#cmd-result", { timeout: 20000 });
      const requested = await page.textContent("#cmd-result");
      await page.click("#cmd-close");
      const ectx = await newContext();
      const epage = await ectx.newPage();
      try {
        await login(epage, engineer);
        await go(epage, "#/commands", "commands");
        await epage.waitForSelector("#pending tr[data-command]", { timeout: 10000 });
        const row = await epage.textContent("#pending tr[data-command]");
        await epage.click("#pending tr[data-command] button:has-text('Confirm')");
        await epage.fill("#decide-reason", "browser test: checked on site");
        await epage.click("dialog button[type=submit]");
        await epage.waitForFunction(() => !document.querySelector("dialog"), null, { timeout: 20000 });
        await epage.waitForFunction(() => /confirmed|rejected|refused|failed/.test(document.querySelector("#pending").textContent), null, { timeout: 20000 });
        const confirmed = await epage.textContent("#pending");
        // The read-back verified the write; the tag's current value follows at the device's
        // next poll.
        const after = await valueBecomes(epage, PUMP, target);
        // Back as it was: the engineer asks through the API, the admin confirms.
        const back = await pageFetch(epage, `/api/v1/tags/${PUMP}/write`, { method: "POST", body: { value: before, reason: "browser test: restore" }, csrf: true });
        const id = back.json && back.json.command && back.json.command.id;
        const actx2 = await newContext();
        const apage2 = await actx2.newPage();
        await login(apage2, admin);
        const restored = await pageFetch(apage2, `/api/v1/commands/${id}/confirm`, { method: "POST", body: { reason: "browser test: restore" }, csrf: true });
        await actx2.close();
        return {
          before, target, requested, pending_row: row, confirmed, after,
          restore: { requested: back.status, confirmed: restored.status, result: restored.json && restored.json.command && restored.json.command.result },
          value_restored: await valueBecomes(epage, PUMP, before),
        };
      } finally {
        await ectx.close();
      }
    });
    await step("commands_capture", async () => { await capture(page, "commands"); return {}; });

    // The higher speed makes the simulated motor draw more than the over-current limit.
    await step("alarm", async () => {
      await go(page, "#/alarms", "alarms");
      const row = `tr[data-alarm="${ALARM}"]`;
      const t0 = Date.now();
      await page.waitForSelector(`${row}[data-state=unacknowledged]`, { timeout: 120000 });
      const raisedAfter = Date.now() - t0;
      const flashing = await page.$eval(`${row} .unack-mark`, (m) => getComputedStyle(m).animationName);
      // Asked for less motion, the mark stands still (a hatched square instead).
      await page.emulateMedia({ reducedMotion: "reduce" });
      const reduced = await page.$eval(`${row} .unack-mark`, (m) => getComputedStyle(m).animationName);
      await page.emulateMedia({ reducedMotion: "no-preference" });
      await capture(page, "alarms");
      await page.click(`${row} button[data-op=ack]`);
      await page.fill("#alarm-comment", "browser test: speed raised on purpose");
      await page.click("dialog button[type=submit]");
      await page.waitForSelector("dialog", { state: "detached", timeout: 10000 });
      const result = await page.textContent("#alarm-result");
      await page.waitForFunction((r) => { const e = document.querySelector(r); return !e || e.dataset.state !== "unacknowledged"; }, row, { timeout: 10000 });
      const all = await pageFetch(page, "/api/v1/alarms?all=true");
      const a = (all.json.alarms || []).find((x) => x.id === ALARM) || {};
      return { raised_after_ms: raisedAfter, flashing, reduced_motion_animation: reduced, result, state: a.state, acknowledged: a.acknowledged, comment: a.comment };
    });

    await step("alarm_views", async () => {
      await go(page, "#/alarms?view=history", "alarms");
      const history = await page.$$eval("table tbody tr", (r) => r.length);
      await capture(page, "alarms-history");
      await go(page, "#/alarms?view=kpi", "alarms");
      const cards = await page.$$eval(".cards .card", (c) => c.length);
      await capture(page, "alarms-kpi");
      return { history_rows: history, kpi_cards: cards };
    });

    await step("integrity", async () => {
      await go(page, "#/integrity", "integrity");
      await page.waitForSelector("article[data-code=raised]", { timeout: 150000 });
      await page.waitForSelector("article[data-code=raised] .mini-plot canvas", { timeout: 20000 });
      const first = await page.$eval("article[data-code=raised]", (a) => ({ text: a.querySelector("p").textContent, evidence: a.querySelectorAll("table.kv tr").length }));
      await capture(page, "integrity");
      return { findings: await page.$$eval("article[data-finding]", (a) => a.length), first };
    });

    await step("system", async () => {
      await go(page, "#/system", "system");
      const devices = await page.$$eval("#system-overview table", (t) => t.length);
      const audit = await page.$("#audit");
      await capture(page, "system");
      return { tables: devices, audit_shown_to_operator: !!audit };
    });

    await step("trend_30d", async () => {
      if (!LONG_TAG) return { skipped: true };
      await go(page, "#/plant", "plant");
      const t0 = Date.now();
      await page.evaluate((t) => { location.hash = `#/trends?tags=${encodeURIComponent(t)}&range=30d&live=0`; }, LONG_TAG);
      await page.waitForFunction(() => { const s = document.querySelector("#trend-status"); return s && s.dataset.range === "30d" && s.dataset.points; }, null, { timeout: 30000 });
      const wall = Date.now() - t0;
      const st = await page.$eval("#trend-status", (s) => ({ ...s.dataset, text: s.textContent }));
      const nonEmpty = await page.evaluate(() => document.querySelector("#trend-status").textContent);
      await shoot(page, "trends-30d");
      return { tag: LONG_TAG, render_ms: Number(st.renderMs), fetch_ms: Number(st.fetchMs), wall_ms: wall, points: Number(st.points), status: nonEmpty };
    });

    // CSRF: the operator's browser, logged in, visits a page of another origin that posts a
    // write to the platform (a fetch with the cookie, and a classic form post).
    await step("csrf", async () => {
      const before = await tagValue(page, SPEED);
      const evil = "https://evil.example/";
      const target = `${URL_}/api/v1/tags/${SPEED}/write`;
      const attacker = await ctx.newPage();
      await attacker.route(evil + "**", (route) => route.fulfill({
        status: 200, contentType: "text/html",
        body: `<!doctype html><html><body>
<form id="f" method="POST" action="${target}" enctype="text/plain">
<input name='{"value": 100, "reason": "csrf", "x": "' value='"}'></form>
<script>
window.fetchResult = fetch(${JSON.stringify(target)}, {method: "POST", credentials: "include", mode: "no-cors",
  headers: {"Content-Type": "text/plain"}, body: JSON.stringify({value: 100, reason: "csrf"})})
  .then(r => "opaque:" + r.type).catch(e => "failed:" + e.message);
</script></body></html>`,
      }));
      await attacker.goto(evil);
      const fetchResult = await attacker.evaluate(() => window.fetchResult);
      const [resp] = await Promise.all([
        attacker.waitForResponse((r) => r.url().startsWith(target), { timeout: 10000 }),
        attacker.evaluate(() => document.getElementById("f").submit()),
      ]);
      const formStatus = resp.status();
      const formBody = (await resp.text()).slice(0, 300);
      await attacker.close();
      // From the HMI's own origin, but without the token: refused as well.
      const noToken = await pageFetch(page, `/api/v1/tags/${SPEED}/write`, { method: "POST", body: { value: 100, reason: "no csrf token" } });
      const after = await tagValue(page, SPEED);
      return { before, after, fetch: fetchResult, form_status: formStatus, form_body: formBody, no_token: { status: noToken.status, code: noToken.json && noToken.json.error && noToken.json.error.code } };
    });

    await step("logout", async () => {
      await go(page, "#/plant", "plant");
      await page.click("#logout");
      await page.waitForSelector("#login-user", { timeout: 10000 });
      const s = await pageFetch(page, "/api/v1/session");
      return { login_shown: true, session_status: s.status };
    });
    await ctx.close();

    // A viewer: no write or acknowledge controls, and the API refuses its write anyway.
    const vctx = await newContext();
    const vpage = await vctx.newPage();
    await step("viewer", async () => {
      await login(vpage, viewer);
      await go(vpage, "#/commands", "commands");
      const writeButtons = await vpage.$$eval("button[data-action=write]", (b) => b.length);
      const points = await vpage.$$eval("article[data-path]", (a) => a.length);
      await shoot(vpage, "commands-viewer");
      await go(vpage, "#/alarms", "alarms");
      const alarmRows = await vpage.$$eval("tr[data-alarm]", (r) => r.length);
      const ackButtons = await vpage.$$eval("button[data-op]", (b) => b.length);
      const write = await pageFetch(vpage, `/api/v1/tags/${SPEED}/write`, { method: "POST", body: { value: 300, reason: "viewer" }, csrf: true });
      const ack = await pageFetch(vpage, `/api/v1/alarms/${ALARM}/shelve`, { method: "POST", body: { comment: "viewer", duration: "1h" }, csrf: true });
      return {
        write_buttons: writeButtons, points, alarm_rows: alarmRows, ack_buttons: ackButtons,
        write: { status: write.status, code: write.json && write.json.error && write.json.error.code },
        shelve: { status: ack.status, code: ack.json && ack.json.error && ack.json.error.code },
        value_after: await tagValue(vpage, SPEED),
      };
    });
    // The session ends under the page (expired, revoked): the next call brings back the login.
    await step("session_end", async () => {
      await vctx.clearCookies();
      await vpage.evaluate(() => { location.hash = "#/system"; });
      await vpage.waitForSelector("#login-user", { timeout: 15000 });
      const notice = await vpage.textContent("form.login");
      return { login_shown: true, notice };
    });
    await vctx.close();

    // An admin sees the audit log on the system page.
    const actx = await newContext();
    const apage = await actx.newPage();
    await step("admin", async () => {
      await login(apage, admin);
      await go(apage, "#/system", "system");
      await apage.waitForSelector("#audit table", { timeout: 10000 });
      const records = await apage.$$eval("#audit tbody tr", (r) => r.length);
      await capture(apage, "system-admin");
      return { audit_rows: records };
    });
    await actx.close();
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(String((e && e.stack) || e)); process.exit(1); });
