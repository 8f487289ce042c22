// The live WebSocket client (docs/live-api.md). One socket for the whole HMI: pages `watch`
// tag prefixes and event kinds, the client keeps the union subscribed, reconnects with
// exponential back-off, and subscribes again after each reconnect. The browser sends the
// session cookie with the upgrade; the first message proves the page is ours (the CSRF token).

const PROTOCOL = "ironplant.live.v1";
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;

export class Live {
  /**
   * `csrf()` gives the current CSRF token; `onState(state, detail)` is told "connecting",
   * "open" or "closed"; `onAuthFailed()` when the server refuses the session.
   */
  constructor({ csrf, onState = () => {}, onAuthFailed = () => {} }) {
    this.csrf = csrf;
    this.onState = onState;
    this.onAuthFailed = onAuthFailed;
    this.ws = null;
    this.ready = false;
    this.stopped = true;
    this.backoff = BACKOFF_MIN_MS;
    this.timer = null;
    this.nextId = 1;
    this.watchers = new Set();
    // What the server currently follows for us, to send only the difference.
    this.subTags = new Set();
    this.subEvents = new Set();
    this.syncQueued = false;
    /** The latest known state of each tag: TagJson from snapshots, updated by samples. */
    this.values = new Map();
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "logged out");
    this.ws = null;
    this.ready = false;
    this.values.clear();
  }

  connect() {
    clearTimeout(this.timer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.onState("connecting");
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/api/v1/live`, [PROTOCOL]);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.ready = false;
    let authRefused = false;
    ws.onopen = () => ws.send(JSON.stringify({ op: "auth", csrf: this.csrf() }));
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === "ready") {
        this.ready = true;
        this.backoff = BACKOFF_MIN_MS;
        this.subTags.clear();
        this.subEvents.clear();
        this.onState("open");
        this.sync(true);
        return;
      }
      if (m.type === "error" && m.code === "unauthenticated") authRefused = true;
      this.dispatch(m);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      if (this.stopped) return;
      if (authRefused || ev.code === 1008) {
        // Maybe the session ended: the app checks and goes to the login if so; otherwise
        // (e.g. the CSRF token changed with a server restart) we try again.
        this.onAuthFailed();
      }
      this.retry();
    };
  }

  retry() {
    if (this.stopped) return;
    // Full jitter, so a restarted server is not hit by every HMI at the same instant.
    const wait = Math.round(this.backoff / 2 + Math.random() * this.backoff / 2);
    this.onState("closed", `reconnecting in ${Math.ceil(wait / 1000)} s`);
    this.timer = setTimeout(() => this.connect(), wait);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
  }

  /**
   * Follows `tags` (paths or prefixes) and `events` (kinds); `handler(message)` gets every
   * snapshot, samples, tags and event message (it filters what it needs). Returns the
   * function that stops watching.
   */
  watch({ tags = [], events = [] }, handler) {
    const w = { tags, events, handler };
    this.watchers.add(w);
    // Values already known are handed over at once, so a page draws without waiting.
    const known = [...this.values.values()].filter((t) => tags.some((p) => covers(p, t.path)));
    if (known.length) queueMicrotask(() => this.watchers.has(w) && handler({ type: "snapshot", id: null, tags: known, more: false, cached: true }));
    this.queueSync();
    return () => {
      this.watchers.delete(w);
      this.queueSync();
    };
  }

  queueSync() {
    if (this.syncQueued) return;
    this.syncQueued = true;
    queueMicrotask(() => { this.syncQueued = false; this.sync(false); });
  }

  /** Brings the server's subscriptions to the union of the watchers'. */
  sync(fresh) {
    if (!this.ready || !this.ws) return;
    const tags = new Set(), events = new Set();
    for (const w of this.watchers) {
      w.tags.forEach((t) => tags.add(t));
      w.events.forEach((e) => events.add(e));
    }
    const dropped = [...this.subTags].some((t) => !tags.has(t)) || [...this.subEvents].some((e) => !events.has(e));
    if (dropped && !fresh) {
      // Unsubscribing everything and subscribing the union again is simpler than matching
      // the server's per-request bookkeeping, and a snapshot of what we follow is cheap.
      this.send({ op: "unsubscribe", id: this.nextId++ });
      this.subTags.clear();
      this.subEvents.clear();
      for (const [path] of this.values) if (![...tags].some((p) => covers(p, path))) this.values.delete(path);
    }
    const newTags = [...tags].filter((t) => !this.subTags.has(t));
    const newEvents = [...events].filter((e) => !this.subEvents.has(e));
    if (!newTags.length && !newEvents.length) return;
    const req = { op: "subscribe", id: this.nextId++ };
    if (newTags.length) req.tags = newTags;
    if (newEvents.length) req.events = newEvents;
    this.send(req);
    newTags.forEach((t) => this.subTags.add(t));
    newEvents.forEach((e) => this.subEvents.add(e));
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  dispatch(m) {
    if (m.type === "snapshot" || m.type === "tags") {
      for (const t of m.tags) this.values.set(t.path, t);
    } else if (m.type === "samples") {
      for (const s of m.samples) {
        const t = this.values.get(s.path);
        this.values.set(s.path, t ? { ...t, ...s } : s);
      }
    }
    for (const w of [...this.watchers]) {
      try { w.handler(m); } catch (e) { console.error("live handler", e); }
    }
  }
}

/** Whether prefix `p` covers tag `path` by whole levels (as the server decides). */
export function covers(p, path) {
  return path === p || path.startsWith(p + "/");
}
