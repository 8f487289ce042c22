// A real browser (Debian's chromium driven by playwright-core) speaks MQTT 3.1.1 over WebSocket
// with the platform: the page opens ws://HOST/mqtt (subprotocol "mqtt"), subscribes, receives a
// retained message published beforehand by the test, and publishes one the test waits for.
// The MQTT packets are written by hand in the page (no client library): what a web HMI sends.
//
// Usage: node browser_mqtt_ws.js WS_URL   (prints one JSON line: what the page observed)
const { chromium } = require("playwright-core");

async function main() {
  const url = process.argv[2];
  const browser = await chromium.launch({
    executablePath: process.env.IRONPLANT_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--headless=new"],
  });
  try {
    const page = await browser.newPage();
    const result = await page.evaluate(async (url) => {
      const enc = new TextEncoder();
      const str = (s) => { const b = enc.encode(s); return [b.length >> 8, b.length & 255, ...b]; };
      const packet = (type, body) => {
        const len = []; let n = body.length;
        do { let d = n % 128; n = Math.floor(n / 128); if (n > 0) d |= 128; len.push(d); } while (n > 0);
        return new Uint8Array([type, ...len, ...body]);
      };
      const ws = new WebSocket(url, ["mqtt"]);
      ws.binaryType = "arraybuffer";
      let buf = new Uint8Array(0);
      const waiters = [];
      const packets = [];
      ws.onmessage = (ev) => {
        const add = new Uint8Array(ev.data);
        const all = new Uint8Array(buf.length + add.length); all.set(buf); all.set(add, buf.length); buf = all;
        for (;;) {
          let len = 0, mul = 1, i = 1;
          for (; i < buf.length && i < 5; i++) { len += (buf[i] & 127) * mul; mul *= 128; if (!(buf[i] & 128)) break; }
          if (i >= buf.length || buf.length < i + 1 + len) break;
          packets.push({ type: buf[0], body: buf.slice(i + 1, i + 1 + len) });
          buf = buf.slice(i + 1 + len);
        }
        while (waiters.length && packets.length) waiters.shift()(packets.shift());
      };
      const next = () => new Promise((resolve, reject) => {
        if (packets.length) return resolve(packets.shift());
        waiters.push(resolve);
        setTimeout(() => reject(new Error("timed out waiting for a packet")), 5000);
      });
      await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("WebSocket failed")); });
      const out = { protocol: ws.protocol };
      // CONNECT: "MQTT", level 4, clean session, keep-alive 30 s, client id.
      ws.send(packet(0x10, [...str("MQTT"), 4, 2, 0, 30, ...str("chromium-hmi")]));
      out.connack = Array.from((await next()).body);
      // SUBSCRIBE id 1: browser/in at QoS 0.
      ws.send(packet(0x82, [0, 1, ...str("browser/in"), 0]));
      out.suback = Array.from((await next()).body);
      const pub = await next();
      const tlen = (pub.body[0] << 8) | pub.body[1];
      out.received = {
        retain: (pub.type & 1) === 1,
        topic: new TextDecoder().decode(pub.body.slice(2, 2 + tlen)),
        payload: new TextDecoder().decode(pub.body.slice(2 + tlen)),
      };
      // PUBLISH QoS 0 to browser/out, then DISCONNECT.
      ws.send(packet(0x30, [...str("browser/out"), ...enc.encode("hello from chromium")]));
      ws.send(packet(0xe0, []));
      return out;
    }, url);
    console.log(JSON.stringify(result));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
