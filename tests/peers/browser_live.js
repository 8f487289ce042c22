// A real browser (Debian's chromium driven by playwright-core) uses the live WebSocket API the
// way a web HMI does: the page opens ws://HOST/api/v1/live (subprotocol "ironplant.live.v1"),
// authenticates in its first message (a browser cannot set headers on a WebSocket; the token is
// handed to the page, never put in the URL), subscribes to a prefix, and records the snapshot
// and the first change after it. It also tries a wrong token and records how it is refused.
//
// Usage: IRONPLANT_LIVE_TOKEN=... node browser_live.js WS_URL
//   (prints one JSON line: what the page observed)
const { chromium } = require("playwright-core");

async function main() {
  const url = process.argv[2];
  const token = process.env.IRONPLANT_LIVE_TOKEN;
  if (!url || !token) throw new Error("usage: IRONPLANT_LIVE_TOKEN=... node browser_live.js WS_URL");
  const browser = await chromium.launch({
    executablePath: process.env.IRONPLANT_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless=new"],
  });
  try {
    const page = await browser.newPage();
    const result = await page.evaluate(async ([url, token]) => {
      const open = () => new Promise((resolve, reject) => {
        const ws = new WebSocket(url, ["ironplant.live.v1"]);
        const queue = [], waiters = [];
        ws.onmessage = (ev) => {
          const m = JSON.parse(ev.data);
          if (waiters.length) waiters.shift()(m); else queue.push(m);
        };
        ws.closed = new Promise((r) => { ws.onclose = (ev) => r({ code: ev.code, reason: ev.reason }); });
        ws.next = () => new Promise((res, rej) => {
          if (queue.length) return res(queue.shift());
          waiters.push(res);
          setTimeout(() => rej(new Error("timed out waiting for a message")), 10000);
        });
        ws.onopen = () => resolve(ws);
        ws.onerror = () => reject(new Error("WebSocket failed"));
      });
      const out = {};

      // A wrong token: an error message saying why, then close 1008.
      const bad = await open();
      bad.send(JSON.stringify({ op: "auth", token: "ipt_wrong" }));
      const err = await bad.next();
      const closed = await bad.closed;
      out.bad_token = { type: err.type, code: err.code, close: closed.code };

      const ws = await open();
      out.protocol = ws.protocol;
      ws.send(JSON.stringify({ op: "auth", token }));
      const ready = await ws.next();
      out.ready = { type: ready.type, user: ready.user };
      ws.send(JSON.stringify({ op: "subscribe", id: 7, tags: ["acme/lyon/line1"] }));
      const snapshot = {};
      let snapId = null;
      for (;;) {
        const m = await ws.next();
        if (m.type !== "snapshot") throw new Error("expected the snapshot first, got " + JSON.stringify(m));
        snapId = m.id;
        for (const t of m.tags) snapshot[t.path] = [t.value, t.quality];
        if (!m.more) break;
      }
      out.snapshot = { id: snapId, tags: snapshot };
      // The test keeps changing the values; the first change after the snapshot:
      for (;;) {
        const m = await ws.next();
        if (m.type !== "samples") continue;
        const s = m.samples[0];
        out.change = { path: s.path, value: s.value, quality: s.quality, has_ts: typeof s.ts === "string" };
        break;
      }
      ws.close(1000, "done");
      return out;
    }, [url, token]);
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
