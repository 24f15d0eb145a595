// Shared by the admin panel and the chat client: the session (tokens in sessionStorage,
// refresh before expiry or on 401), HTTP calls that speak the contract's error shape,
// and a live socket that reconnects with backoff (PROTOCOL §3, §4).

/** An error from the API: `code` and `message` from `{"error":{"code","message"}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "http_" + status;
  }
}

/** Refresh this long before the access token expires (the socket warns a minute before). */
const REFRESH_MARGIN_MS = 90_000;
/** Never refresh more often than this, so a short TTL cannot spin. */
const REFRESH_MIN_DELAY_MS = 5_000;

/**
 * Tokens for one app (`admin` or `chat`), kept in sessionStorage so a reload keeps you
 * logged in but closing the tab does not. Refreshes are single-flight: refresh tokens
 * rotate on use, and reusing one would revoke the whole family.
 */
export class Session {
  constructor(app) {
    this.key = `spotter.${app}.session`;
    this.data = null;
    this.refreshing = null;
    this.refreshedAt = 0;
    this.timer = null;
    this.listeners = { change: [], expired: [] };
    try {
      this.data = JSON.parse(sessionStorage.getItem(this.key) || "null");
    } catch {
      this.data = null;
    }
    if (this.data) this.schedule();
  }

  on(event, fn) {
    this.listeners[event].push(fn);
  }

  emit(event, ...args) {
    for (const fn of this.listeners[event]) fn(...args);
  }

  get user() {
    return this.data && this.data.user;
  }

  get token() {
    return this.data && this.data.access_token;
  }

  get loggedIn() {
    return !!(this.data && this.data.access_token);
  }

  store(pair) {
    const expiresAt = Date.now() + (pair.expires_in || 900) * 1000;
    this.data = {
      access_token: pair.access_token,
      refresh_token: pair.refresh_token,
      expires_at: expiresAt,
      user: pair.user || (this.data && this.data.user) || null,
    };
    sessionStorage.setItem(this.key, JSON.stringify(this.data));
    this.schedule();
    this.emit("change", this.data);
  }

  setUser(user) {
    if (!this.data) return;
    this.data.user = user;
    sessionStorage.setItem(this.key, JSON.stringify(this.data));
  }

  clear() {
    this.data = null;
    clearTimeout(this.timer);
    sessionStorage.removeItem(this.key);
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.data) return;
    const delay = Math.max(
      REFRESH_MIN_DELAY_MS,
      this.data.expires_at - Date.now() - REFRESH_MARGIN_MS,
    );
    this.timer = setTimeout(() => this.refresh().catch(() => {}), delay);
  }

  async login(username, password) {
    const pair = await request("POST", "/api/auth/login", { username, password });
    this.store(pair);
    return pair.user;
  }

  /** Gets a new pair; on failure the session is over (`expired` is emitted). */
  refresh() {
    if (this.refreshing) return this.refreshing;
    if (!this.data || !this.data.refresh_token) {
      return Promise.reject(new ApiError(401, "unauthorized", "not logged in"));
    }
    const refreshToken = this.data.refresh_token;
    this.refreshing = request("POST", "/api/auth/refresh", { refresh_token: refreshToken })
      .then((pair) => {
        this.refreshedAt = Date.now();
        this.store(pair);
        return pair.access_token;
      })
      .catch((e) => {
        if (e.status === 401 || e.status === 403) {
          this.clear();
          this.emit("expired", e);
        }
        throw e;
      })
      .finally(() => {
        this.refreshing = null;
      });
    return this.refreshing;
  }

  /** A refresh, unless one happened moments ago (a warning about the old token). */
  refreshSoon() {
    if (Date.now() - this.refreshedAt < REFRESH_MIN_DELAY_MS) return Promise.resolve(this.token);
    return this.refresh();
  }

  async logout() {
    const data = this.data;
    this.clear();
    if (!data) return;
    try {
      await request("POST", "/api/auth/logout", { refresh_token: data.refresh_token }, data.access_token);
    } catch {
      // The tokens are forgotten either way.
    }
  }

  /** An authenticated GET of a file (a Blob); one refresh and retry on 401. */
  async blob(path) {
    if (!this.loggedIn) throw new ApiError(401, "unauthorized", "not logged in");
    try {
      return await requestBlob(path, this.token);
    } catch (e) {
      if (e.status !== 401) throw e;
      await this.refresh();
      return requestBlob(path, this.token);
    }
  }

  /** An authenticated call; one refresh and retry on 401. */
  async api(method, path, body) {
    if (!this.loggedIn) throw new ApiError(401, "unauthorized", "not logged in");
    try {
      return await request(method, path, body, this.token);
    } catch (e) {
      if (e.status !== 401) throw e;
      await this.refresh();
      return request(method, path, body, this.token);
    }
  }
}

/** One HTTP call. Answers the parsed JSON (or null); throws ApiError on non-2xx. */
export async function request(method, path, body, token) {
  const headers = {};
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload });
  } catch (e) {
    throw new ApiError(0, "network", "The server cannot be reached.");
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = data && data.error;
    const e = new ApiError(res.status, err && err.code, err && err.message);
    e.body = data;
    throw e;
  }
  return data;
}

/** A GET that answers a Blob (CSV exports, QR codes); throws ApiError on non-2xx. */
export async function requestBlob(path, token) {
  let res;
  try {
    res = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached.");
  }
  if (!res.ok) {
    let err = null;
    try {
      err = (await res.json()).error;
    } catch {
      err = null;
    }
    throw new ApiError(res.status, err && err.code, err && err.message);
  }
  return res.blob();
}

/** Words for an error, for people. */
export function describeError(e) {
  if (!(e instanceof ApiError)) return String((e && e.message) || e);
  const nice = {
    invalid_credentials: "Wrong username or password.",
    account_inactive: "This account is not active.",
    rate_limited: "Too many attempts, wait a moment and try again.",
    unavailable: "This feature is not available right now.",
    network: "The server cannot be reached.",
  };
  return nice[e.code] || e.message || e.code;
}

/** Backoff between reconnects: 0.5 s doubling to 30 s, with jitter. */
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** A socket that stayed up this long resets the backoff. */
const STABLE_MS = 10_000;
/** Client heartbeat: keeps the user online and lets us notice a dead link. */
const HEARTBEAT_MS = 25_000;

/**
 * The live socket: `/ws?token=…`, reconnecting with backoff. Close 4001 tries one token
 * refresh and gives up (`unauthorized`) if that fails; 4003 stops for good (`forbidden`).
 * `onOpen` runs after every (re)connect so callers resubscribe.
 */
export class LiveSocket {
  constructor(session, { onFrame, onOpen, onStatus, onFatal }) {
    this.session = session;
    this.onFrame = onFrame;
    this.onOpen = onOpen || (() => {});
    this.onStatus = onStatus || (() => {});
    this.onFatal = onFatal || (() => {});
    this.ws = null;
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
    this.heartbeat = null;
    this.nextRef = 1;
    this.pending = new Map();
    this.openedAt = 0;
    this.authFailures = 0;
    /** The access token this socket runs on. */
    this.socketToken = null;
    /** Authenticated connections so far (the first one and every reconnect). */
    this.connects = 0;
    session.on("change", () => this.sendToken());
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.heartbeat);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "bye");
    }
  }

  /** The user's "Reconnect" button: a new connection now, whatever the backoff says. */
  reconnectNow() {
    if (!this.session.loggedIn) return;
    this.stopped = false;
    clearTimeout(this.timer);
    this.attempt = 0;
    this.authFailures = 0;
    const old = this.ws;
    this.ws = null;
    if (old) {
      clearInterval(this.heartbeat);
      for (const [, p] of this.pending) p.reject(new ApiError(0, "closed", "reconnecting"));
      this.pending.clear();
      old.close(1000, "reconnect");
    }
    this.connect();
  }

  get connected() {
    return !!(this.ws && this.ws.readyState === WebSocket.OPEN && this.authenticated);
  }

  connect() {
    if (this.stopped || !this.session.loggedIn) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}/ws?token=${encodeURIComponent(this.session.token)}`;
    this.onStatus(this.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(url);
    this.ws = ws;
    this.socketToken = this.session.token;
    this.authenticated = false;
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.handle(frame);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.authenticated = false;
      clearInterval(this.heartbeat);
      for (const [, p] of this.pending) p.reject(new ApiError(0, "closed", "connection lost"));
      this.pending.clear();
      this.closed(ev.code);
    };
  }

  handle(frame) {
    const payload = frame.payload || {};
    if (frame.ref != null && this.pending.has(frame.ref)) {
      const p = this.pending.get(frame.ref);
      this.pending.delete(frame.ref);
      if (frame.type === "error") p.reject(new ApiError(0, payload.code, payload.message));
      else p.resolve(frame);
    }
    switch (frame.type) {
      case "authentication_success":
        this.authenticated = true;
        this.openedAt = Date.now();
        this.authFailures = 0;
        this.connects += 1;
        if (payload.user) this.session.setUser(payload.user);
        clearInterval(this.heartbeat);
        this.heartbeat = setInterval(() => this.send("heartbeat"), HEARTBEAT_MS);
        this.onStatus("live");
        this.onOpen(this.attempt > 0);
        break;
      case "token_expiring":
        if (this.socketToken !== this.session.token) {
          // The session has a newer token already: hand it to this socket.
          this.sendToken();
        } else {
          // A refresh emits `change`, which sends the new token on this socket.
          this.session.refreshSoon().catch(() => {});
        }
        break;
      default:
        break;
    }
    this.onFrame(frame);
  }

  closed(code) {
    if (this.stopped) return;
    if (code === 4003) {
      this.stopped = true;
      this.onStatus("offline");
      this.onFatal("forbidden");
      return;
    }
    if (code === 4001) {
      // Only a new token may reconnect: try one refresh, else back to the login.
      this.authFailures += 1;
      if (this.authFailures > 1) {
        this.stopped = true;
        this.onFatal("unauthorized");
        return;
      }
      this.onStatus("reconnecting");
      this.session
        .refresh()
        .then(() => this.schedule(0))
        .catch(() => {
          this.stopped = true;
          this.onFatal("unauthorized");
        });
      return;
    }
    if (this.openedAt && Date.now() - this.openedAt > STABLE_MS) this.attempt = 0;
    this.openedAt = 0;
    // 4200: the server restarts; come back at once (with jitter so not all at once).
    const delay =
      code === 4200
        ? Math.random() * 1000
        : Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.onStatus("reconnecting");
    this.schedule(delay);
  }

  schedule(delay) {
    clearTimeout(this.timer);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Sends a frame; answers its `ref`. */
  send(type, payload) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return null;
    const ref = "r" + this.nextRef++;
    const frame = { type, ref };
    if (payload !== undefined) frame.payload = payload;
    this.ws.send(JSON.stringify(frame));
    return ref;
  }

  /** Sends a frame and waits for the reply with the same `ref` (an error rejects). */
  call(type, payload, timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const ref = this.send(type, payload);
      if (!ref) {
        reject(new ApiError(0, "closed", "not connected"));
        return;
      }
      const timer = setTimeout(() => {
        if (this.pending.delete(ref)) reject(new ApiError(0, "timeout", `no answer to ${type}`));
      }, timeoutMs);
      this.pending.set(ref, {
        resolve: (f) => (clearTimeout(timer), resolve(f)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  }

  sendToken() {
    const token = this.session.token;
    if (this.connected && token && token !== this.socketToken) {
      this.socketToken = token;
      this.send("refresh_token", { token });
    }
  }
}

/** `el("div", {class: "x", dataset: {id: 1}}, child, "text")`: DOM without innerHTML. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v; // CSSOM: allowed under the pages' CSP
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** "just now", "5 min ago", "3 h ago", or a date. */
export function ago(iso) {
  if (!iso) return "never";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "—";
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(t).toLocaleDateString();
}

/** "14:05" in the viewer's time zone (24-hour: short and unambiguous on a busy screen). */
export function clock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

/** "2026-11-22": today in UTC (the server counts days in UTC). */
export function todayUtc() {
  return new Date().toISOString().slice(0, 10);
}

/** Shows a short message at the bottom of the page. */
export function toast(text, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = el("div", { id: "toasts", "aria-live": "polite" });
    document.body.append(box);
  }
  const t = el("div", { class: `toast toast-${kind}`, "data-testid": "toast", text });
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 7000 : 3500);
}
