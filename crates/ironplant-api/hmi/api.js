// The HMI's one door to the REST API: same-origin fetches with the session cookie, JSON in and
// out, the CSRF token on every state-changing request, and one error type that says what the
// server said (`{"error":{"code","message"}}`) in words a person can read.

let csrf = null;
let onAuthLost = () => {};

/** The CSRF token of the current session (from `POST`/`GET /api/v1/session`). */
export function setCsrf(token) { csrf = token; }
export function getCsrf() { return csrf; }
/** Called once when the server answers 401: the session is gone (expired, revoked, logged out). */
export function whenAuthLost(fn) { onAuthLost = fn; }

/** An API refusal. `body` keeps the whole answer: a refused command carries more than the error. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

const SAFE = new Set(["GET", "HEAD"]);

/**
 * `method` on `path` with an optional JSON body. Resolves with the parsed JSON (or text, for
 * non-JSON answers); rejects with an ApiError for any status >= 400 and for network failures.
 * `auth: false` keeps a 401 from ending the session (the login form's own request).
 */
export async function api(path, { method = "GET", body, auth = true, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE.has(method) && csrf) headers["X-CSRF-Token"] = csrf;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "network", `The platform cannot be reached (${e.message}). Check the connection and retry.`);
  }
  const type = res.headers.get("Content-Type") || "";
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (type.includes("json") && text) {
      try { data = JSON.parse(text); } catch { data = text; }
    } else {
      data = text;
    }
  }
  if (res.ok) return data;
  const err = data && typeof data === "object" && data.error ? data.error : null;
  if (res.status === 401 && auth) {
    onAuthLost();
    throw new ApiError(401, err?.code || "unauthenticated", "Your session has ended. Log in again.", data);
  }
  if (res.status === 403 && err?.code === "csrf") {
    // The token changes when the server restarts: fetch the current one so a retry works.
    try {
      const s = await api("/api/v1/session");
      setCsrf(s.csrf);
    } catch { /* a 401 above already sent the user to the login */ }
    throw new ApiError(403, "csrf", "The security token of this page was renewed. Please retry.", data);
  }
  if (err) throw new ApiError(res.status, err.code, err.message, data);
  // Command results (502 failed/device_error, 409 superseded) are not errors in the usual shape.
  const cmd = data && typeof data === "object" ? data.command : null;
  if (cmd) throw new ApiError(res.status, cmd.result, cmd.message || `The command ended: ${cmd.result}.`, data);
  throw new ApiError(res.status, "http_" + res.status, `The platform answered ${res.status} ${res.statusText}.`, data);
}

export const get = (path, opts) => api(path, opts);
export const post = (path, body = {}, opts = {}) => api(path, { ...opts, method: "POST", body });
export const del = (path, opts = {}) => api(path, { ...opts, method: "DELETE" });

/** A query string from an object, leaving out empty values; arrays repeat the key. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else q.append(k, v);
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

/** A tag path in a URL path: each level encoded, the slashes kept (the API's route is `{*path}`). */
export function tagUrl(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}
