// The admin panel: users with live presence, user management, live check-in stats and
// the staff attendance feed. Speaks PROTOCOL §3 (HTTP) and §4 (the socket).

import {
  ApiError, LiveSocket, Session, ago, clock, describeError, el, toast, todayUtc,
} from "/static/common.js";
import {
  chosenDay, deskOnCheckin, initDesk, openDetail, refreshDesk, usersChanged,
} from "/static/desk.js";

const ROLES = ["admin", "trainer", "member", "staff", "device"];
const STATUSES = ["active", "inactive", "suspended", "banned"];
/** Feeds keep this many entries. */
const FEED_LIMIT = 40;
/** How often "last seen" texts are brought up to date. */
const AGO_REFRESH_MS = 30_000;
/** Unknown users or status changes seen live are fetched again after this pause. */
const RELOAD_DEBOUNCE_MS = 400;

const $ = (id) => document.getElementById(id);

const session = new Session("admin");
const state = {
  users: new Map(), // id -> user object
  rows: new Map(), // id -> <tr>
  stats: null,
  checkins: new Map(), // "id:in" / "id:out" -> feed entry
  attendance: new Map(), // key -> record
  reloadTimer: null,
};

const socket = new LiveSocket(session, {
  onFrame: handleFrame,
  onOpen: subscribeAll,
  onStatus: showConnection,
  onFatal: (why) => (why === "forbidden" ? showDisabled() : backToLogin("Your session has ended. Please sign in again.")),
});
session.on("expired", () => backToLogin("Your session has ended. Please sign in again."));

// ---------------------------------------------------------------- views

function show(view) {
  for (const id of ["login-view", "disabled-view", "app-view"]) $(id).hidden = id !== view;
  const inApp = view === "app-view";
  $("logout-button").hidden = !inApp;
  $("conn-status").hidden = !inApp;
  $("reconnect-button").hidden = !inApp;
  $("whoami").textContent = inApp && session.user ? `${session.user.display_name || session.user.username}` : "";
}

function backToLogin(message) {
  socket.stop();
  session.clear();
  show("login-view");
  $("login-error").textContent = message || "";
  $("login-username").focus();
}

function showDisabled() {
  socket.stop();
  session.clear();
  show("disabled-view");
}

function showConnection(s) {
  const node = $("conn-status");
  node.dataset.state = s;
  node.dataset.connects = socket.connects;
  node.textContent = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" }[s] || s;
}

async function startApp() {
  const user = session.user;
  if (!user || user.role !== "admin") {
    await session.logout();
    backToLogin("This panel is for administrators.");
    return;
  }
  show("app-view");
  if (!state.deskReady) {
    state.deskReady = true;
    initDesk({
      session,
      socket,
      users: () => state.users,
      onDayChange: changeDay,
      onAttendance: (r) => r.date === chosenDay() && addAttendance(r, true),
    });
  }
  drawChart();
  await loadUsers();
  socket.start();
  loadToday();
  refreshDesk();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = $("login-submit");
  $("login-error").textContent = "";
  button.disabled = true;
  try {
    await session.login($("login-username").value.trim(), $("login-password").value);
    $("login-password").value = "";
    await startApp();
  } catch (e) {
    $("login-error").textContent = describeError(e);
  } finally {
    button.disabled = false;
  }
});

$("logout-button").addEventListener("click", async () => {
  socket.stop();
  await session.logout();
  backToLogin("");
});

$("disabled-back").addEventListener("click", () => backToLogin(""));

// ---------------------------------------------------------------- socket

function subscribeAll(reconnected) {
  socket.call("subscribe_presence").catch((e) => {
    $("users-note").textContent = `presence: ${describeError(e)}`;
  });
  socket
    .call("join_general_attendance")
    .then(() => ($("attendance-note").textContent = ""))
    .catch((e) => ($("attendance-note").textContent = describeError(e)));
  if (reconnected) {
    // Events may have been missed while away; the lists are cheap to fetch again.
    loadUsers();
    loadToday();
    refreshDesk();
  }
}

function handleFrame(frame) {
  const p = frame.payload || {};
  switch (frame.type) {
    case "presence_snapshot":
      applySnapshot(p.users || []);
      break;
    case "presence_update":
      applyPresence(p);
      break;
    case "initial_stats":
      // Authoritative (the version may restart with the server).
      if (p.stats) applyStats(p.stats);
      break;
    case "stats_update":
      if (p.stats && (!state.stats || p.stats.version > state.stats.version)) applyStats(p.stats);
      break;
    case "member_checked_in":
    case "check_in_success":
      deskOnCheckin();
      if (p.checkin && chosenDay() === todayUtc()) addCheckin(p.checkin, "in", true);
      break;
    case "member_checked_out":
    case "check_out_success":
      deskOnCheckin();
      if (p.checkin && chosenDay() === todayUtc()) addCheckin(p.checkin, "out", true);
      break;
    case "general_attendance_update":
    case "attendance_update":
      if (p.record && p.record.date === chosenDay()) addAttendance(p.record, true);
      break;
    case "error":
      if (frame.ref == null && p.code) toast(`Server: ${p.message || p.code}`, "error");
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- users

async function loadUsers() {
  try {
    const data = await session.api("GET", "/api/users/all-users");
    const seen = new Set();
    for (const u of data.users || []) {
      seen.add(u.id);
      state.users.set(u.id, u);
    }
    for (const id of [...state.users.keys()]) if (!seen.has(id)) state.users.delete(id);
    renderUsers();
    usersChanged();
    if (data.counts) {
      $("count-total").textContent = data.counts.total;
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // handled by `expired`
    $("users-note").textContent = describeError(e);
  }
}

function scheduleReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(loadUsers, RELOAD_DEBOUNCE_MS);
}

function applySnapshot(users) {
  for (const u of users) state.users.set(u.id, { ...state.users.get(u.id), ...u });
  renderUsers();
}

function applyPresence(p) {
  const u = state.users.get(p.user_id);
  if (!u) {
    scheduleReload();
    return;
  }
  u.is_online = !!p.is_online;
  if (p.last_seen !== undefined) u.last_seen = p.last_seen;
  if (p.reason === "account_status") {
    // The account was made non-active elsewhere: fetch its new status.
    u.is_online = false;
    scheduleReload();
  }
  updateRow(u);
  renderCounts();
}

function matchesFilters(u) {
  const role = $("filter-role").value;
  const online = $("filter-online").value;
  const q = $("filter-search").value.trim().toLowerCase();
  if (role && u.role !== role) return false;
  if (online && String(!!u.is_online) !== online) return false;
  if (q && !`${u.username} ${u.display_name || ""}`.toLowerCase().includes(q)) return false;
  return true;
}

function sortKey(u) {
  return `${(u.display_name || u.username).toLowerCase()}\u0000${u.username}`;
}

/** Puts the rows in order and shows only those that pass the filters; rows are reused. */
function renderUsers() {
  const body = $("users-tbody");
  const list = [...state.users.values()].sort((a, b) => sortKey(a).localeCompare(sortKey(b)));
  for (const [id, tr] of state.rows) {
    if (!state.users.has(id)) {
      tr.remove();
      state.rows.delete(id);
    }
  }
  let shown = 0;
  let previous = null;
  for (const u of list) {
    let tr = state.rows.get(u.id);
    if (!tr) {
      tr = buildRow(u);
      state.rows.set(u.id, tr);
    }
    updateRow(u);
    const visible = matchesFilters(u);
    tr.hidden = !visible;
    if (visible) shown += 1;
    const want = previous ? previous.nextSibling : body.firstChild;
    if (want !== tr) body.insertBefore(tr, want);
    previous = tr;
  }
  let empty = $("users-empty");
  if (!shown) {
    if (!empty) {
      empty = el("tr", { id: "users-empty" }, el("td", { colspan: 5, class: "empty", text: "No users match." }));
    }
    body.append(empty);
  } else if (empty) {
    empty.remove();
  }
  $("users-note").textContent = shown === list.length ? "" : `showing ${shown} of ${list.length}`;
  renderCounts();
}

function renderCounts() {
  let online = 0;
  for (const u of state.users.values()) if (u.is_online) online += 1;
  $("count-total").textContent = state.users.size;
  $("count-online").textContent = online;
  $("count-offline").textContent = state.users.size - online;
}

function optionList(values, current) {
  return values.map((v) => el("option", { value: v, selected: v === current }, v));
}

function buildRow(u) {
  const me = session.user && session.user.id === u.id;
  const roleSelect = el("select", {
    class: "role-select",
    "data-testid": `role-${u.username}`,
    "aria-label": `Role of ${u.username}`,
    disabled: me,
    title: me ? "You cannot change your own role here" : null,
  }, optionList(ROLES, u.role));
  const statusSelect = el("select", {
    class: "status-select",
    "data-testid": `status-${u.username}`,
    "aria-label": `Account status of ${u.username}`,
    disabled: me,
    title: me ? "You cannot change your own account here" : null,
  }, optionList(STATUSES, u.account_status));
  roleSelect.addEventListener("change", () => patchUser(u.id, { role: roleSelect.value }, roleSelect));
  statusSelect.addEventListener("change", () =>
    patchUser(u.id, { account_status: statusSelect.value }, statusSelect));
  const tr = el("tr", { "data-testid": `user-row-${u.username}`, dataset: { userId: u.id, username: u.username } },
    el("td", { class: "name" },
      el("button", { type: "button", class: "linkish display-name", "data-testid": `details-${u.username}`,
        title: "Presence log, check-in code, assignments", onclick: () => openDetail(state.users.get(u.id) || u) }),
      el("span", { class: "username" })),
    el("td", {}, el("span", { class: "presence", "data-testid": `presence-${u.username}` })),
    el("td", { class: "last-seen", "data-testid": `last-seen-${u.username}` }),
    el("td", {}, roleSelect),
    el("td", {}, statusSelect));
  return tr;
}

function updateRow(u) {
  const tr = state.rows.get(u.id);
  if (!tr) return;
  tr.querySelector(".display-name").textContent = u.display_name || u.username;
  tr.querySelector(".username").textContent = `@${u.username}`;
  const presence = tr.querySelector(".presence");
  presence.className = `presence ${u.is_online ? "online" : "offline"}`;
  presence.textContent = u.is_online ? "Online" : "Offline";
  presence.dataset.online = String(!!u.is_online);
  const seen = tr.querySelector(".last-seen");
  seen.textContent = u.is_online ? "now" : ago(u.last_seen);
  seen.title = u.last_seen || "";
  const role = tr.querySelector(".role-select");
  const status = tr.querySelector(".status-select");
  if (document.activeElement !== role) role.value = u.role;
  if (document.activeElement !== status) status.value = u.account_status;
  tr.classList.toggle("inactive", u.account_status !== "active");
  tr.dataset.status = u.account_status;
  tr.dataset.online = String(!!u.is_online);
  tr.hidden = !matchesFilters(u);
}

function flash(id) {
  const tr = state.rows.get(id);
  if (!tr) return;
  tr.classList.remove("flash");
  void tr.offsetWidth; // restart the animation
  tr.classList.add("flash");
}

async function patchUser(id, change, control) {
  const before = state.users.get(id);
  control.disabled = true;
  try {
    const updated = await session.api("PATCH", `/api/users/${id}`, change);
    state.users.set(id, { ...before, ...updated });
    updateRow(state.users.get(id));
    renderCounts();
    flash(id);
    const what = change.role ? `role ${updated.role}` : `account ${updated.account_status}`;
    toast(`${updated.username}: ${what}`, "ok");
  } catch (e) {
    if (before) updateRow(before);
    control.value = change.role ? before.role : before.account_status;
    toast(`Could not update ${before ? before.username : "user"}: ${describeError(e)}`, "error");
  } finally {
    control.disabled = false;
  }
}

$("create-user-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = $("create-user-submit");
  const errorBox = $("create-user-error");
  errorBox.textContent = "";
  const body = {
    username: $("new-username").value.trim(),
    password: $("new-password").value,
    role: $("new-role").value,
  };
  const displayName = $("new-display-name").value.trim();
  if (displayName) body.display_name = displayName;
  button.disabled = true;
  try {
    const user = await session.api("POST", "/api/users", body);
    state.users.set(user.id, user);
    renderUsers();
    flash(user.id);
    ev.target.reset();
    toast(`Created ${user.username}`, "ok");
  } catch (e) {
    errorBox.textContent = describeError(e);
  } finally {
    button.disabled = false;
  }
});

for (const id of ["filter-role", "filter-online"]) $(id).addEventListener("change", renderUsers);
$("filter-search").addEventListener("input", renderUsers);

setInterval(() => {
  for (const u of state.users.values()) {
    const tr = state.rows.get(u.id);
    if (tr && !u.is_online) tr.querySelector(".last-seen").textContent = ago(u.last_seen);
  }
}, AGO_REFRESH_MS);

// ---------------------------------------------------------------- check-ins

function minutes(m) {
  if (!m || !Number.isFinite(m)) return "0";
  if (m < 60) return `${Math.round(m)}`;
  return `${Math.floor(m / 60)} h ${Math.round(m % 60)}`;
}

function applyStats(stats) {
  state.stats = stats;
  $("stat-occupancy").textContent = stats.currently_checked_in ?? 0;
  $("stat-today").textContent = stats.today_check_ins ?? 0;
  $("stat-unique").textContent = stats.today_unique_members ?? 0;
  const avg = $("stat-avg");
  avg.textContent = minutes(stats.avg_visit_minutes_today);
  avg.append(el("small", { text: "min" }));
  const note = $("stats-note");
  note.textContent = `updated ${clock(stats.computed_at)}`;
  note.dataset.version = stats.version;
  const list = $("by-location");
  list.replaceChildren();
  const entries = Object.entries(stats.by_location || {}).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map(([, n]) => n));
  for (const [loc, n] of entries) {
    list.append(el("li", { "data-testid": `location-${loc}` },
      el("span", { class: "loc", text: loc || "—", title: loc }),
      el("span", { class: "bar" }, el("i", { style: `width:${(100 * n) / max}%` })),
      el("span", { class: "n", text: n })));
  }
  if (!entries.length) list.append(el("li", { class: "panel-note", text: "Nobody is checked in." }));
  drawChart();
}

/** The by-hour bar chart (UTC hours), drawn by hand on the canvas. */
function drawChart() {
  const canvas = $("chart-by-hour");
  const hours = state.dayHours || (state.stats && state.stats.by_hour) || new Array(24).fill(0);
  // The numbers behind the picture, for tests and assistive tools.
  canvas.dataset.hours = JSON.stringify(hours);
  canvas.setAttribute("aria-label", `Check-ins today by hour (UTC): ${hours.map((n, h) => `${h}h ${n}`).filter((_, h) => hours[h]).join(", ") || "none"}`);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const max = Math.max(...hours, 0);
  const top = niceMax(max);
  const left = 30;
  const bottom = 22;
  const plotW = w - left - 6;
  const plotH = h - bottom - 12;
  const font = getComputedStyle(document.documentElement).fontFamily;
  g.font = `11px ${font}`;
  g.textBaseline = "middle";
  // Grid lines with their values.
  const steps = top <= 4 ? top : 4;
  for (let i = 0; i <= steps; i += 1) {
    const v = (top * i) / steps;
    const y = 12 + plotH - (plotH * v) / top;
    g.strokeStyle = i === 0 ? "#c3cad5" : "#edf0f4";
    g.beginPath();
    g.moveTo(left, Math.round(y) + 0.5);
    g.lineTo(w - 6, Math.round(y) + 0.5);
    g.stroke();
    g.fillStyle = "#8a94a6";
    g.textAlign = "right";
    g.fillText(String(Math.round(v)), left - 6, y);
  }
  const slot = plotW / 24;
  const barW = Math.max(2, slot * 0.68);
  const nowHour = new Date().getUTCHours();
  for (let i = 0; i < 24; i += 1) {
    const v = hours[i] || 0;
    const bh = (plotH * v) / top;
    const x = left + i * slot + (slot - barW) / 2;
    const y = 12 + plotH - bh;
    g.fillStyle = i === nowHour ? "#1f6feb" : "#9bbcf3";
    if (v > 0) roundedBar(g, x, y, barW, bh);
    if (i % 3 === 0) {
      g.fillStyle = "#8a94a6";
      g.textAlign = "center";
      g.fillText(String(i).padStart(2, "0"), left + i * slot + slot / 2, h - bottom / 2);
    }
  }
  g.textAlign = "right";
  g.fillStyle = "#8a94a6";
  g.fillText("UTC", w - 6, h - bottom / 2);
  if (max === 0) {
    g.textAlign = "center";
    g.fillStyle = "#98a2b3";
    g.font = `13px ${font}`;
    g.fillText("No check-ins yet today", left + plotW / 2, 12 + plotH / 2);
  }
}

function niceMax(v) {
  if (v <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function roundedBar(g, x, y, w, h) {
  const r = Math.min(3, w / 2, h);
  g.beginPath();
  g.moveTo(x, y + h);
  g.lineTo(x, y + r);
  g.quadraticCurveTo(x, y, x + r, y);
  g.lineTo(x + w - r, y);
  g.quadraticCurveTo(x + w, y, x + w, y + r);
  g.lineTo(x + w, y + h);
  g.closePath();
  g.fill();
}

window.addEventListener("resize", () => drawChart());

function addCheckin(c, kind, live) {
  const key = `${c.id}:${kind}`;
  if (state.checkins.has(key)) return;
  const at = kind === "out" ? c.checked_out_at : c.checked_in_at;
  state.checkins.set(key, { key, kind, at, c, live });
  renderCheckins();
}

function renderCheckins() {
  const entries = [...state.checkins.values()].sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
  for (const e of entries.slice(FEED_LIMIT)) state.checkins.delete(e.key);
  const list = $("checkin-feed");
  list.replaceChildren();
  for (const e of entries.slice(0, FEED_LIMIT)) {
    const c = e.c;
    let detail = c.location ? ` · ${c.location}` : "";
    if (e.kind === "out" && c.checked_in_at && c.checked_out_at) {
      const stay = (Date.parse(c.checked_out_at) - Date.parse(c.checked_in_at)) / 60000;
      detail += ` · stayed ${minutes(stay)} min`;
    }
    list.append(el("li", { "data-testid": "checkin-entry", dataset: { kind: e.kind, memberId: c.member_id } },
      el("time", { datetime: e.at, text: clock(e.at) }),
      el("span", { class: "what" },
        el("span", { class: e.kind === "in" ? "in" : "out", text: e.kind === "in" ? "IN " : "OUT " }),
        c.member_name || `member #${c.member_id}`,
        el("span", { class: "panel-note", text: detail }))));
  }
  if (!entries.length) list.append(el("li", { class: "panel-note", text: chosenDay() === todayUtc() ? "No check-ins yet today." : "No check-ins that day." }));
}

// ---------------------------------------------------------------- attendance

const STATUS_WORDS = { present: "arrived", absent: "absent", left: "left", on_leave: "on leave" };

function addAttendance(r, live) {
  const key = `${r.employee_id}|${r.status}|${r.timestamp}`;
  if (state.attendance.has(key)) return;
  state.attendance.set(key, { ...r, live });
  renderAttendance();
}

function renderAttendance() {
  const entries = [...state.attendance.entries()].sort((a, b) => Date.parse(b[1].timestamp) - Date.parse(a[1].timestamp));
  for (const [key] of entries.slice(FEED_LIMIT)) state.attendance.delete(key);
  const list = $("attendance-feed");
  list.replaceChildren();
  for (const [, r] of entries.slice(0, FEED_LIMIT)) {
    list.append(el("li", { "data-testid": "attendance-entry", class: r.isLate ? "late" : "", dataset: { late: String(!!r.isLate), employeeId: r.employee_id } },
      el("time", { datetime: r.timestamp, text: clock(r.timestamp) }),
      el("span", { class: "what" },
        el("b", { text: r.employee_name || `employee #${r.employee_id}` }), " ",
        STATUS_WORDS[r.status] || r.status,
        r.device ? el("span", { class: "panel-note", text: ` · ${r.device}` }) : null),
      r.isLate ? el("span", { class: "badge late", "data-testid": "late-badge", text: "LATE" })
        : r.status === "present" ? el("span", { class: "badge ontime", text: "on time" }) : null));
  }
  if (!entries.length) list.append(el("li", { class: "panel-note", text: chosenDay() === todayUtc() ? "No attendance records yet today." : "No attendance records that day." }));
}

/** A feature this server does not offer (yet) is a quiet note, not an alarm. */
function featureError(e) {
  if (e instanceof ApiError && (e.status === 404 || e.status === 503)) return "not available";
  return describeError(e);
}

/** The date picker moved: the feeds and the chart show that day. */
function changeDay() {
  state.checkins.clear();
  state.attendance.clear();
  state.dayHours = null;
  loadToday();
}

/** The chosen day's check-ins and attendance (today's keep coming live). */
async function loadToday() {
  const date = chosenDay();
  const past = date !== todayUtc();
  $("checkin-title").textContent = past ? `Check-ins on ${date}` : "Recent check-ins";
  $("attendance-title").textContent = past ? `Staff attendance on ${date}` : "Staff attendance";
  $("floor-title").textContent = past ? `Check-ins by hour on ${date}` : "Check-ins by hour";
  try {
    const data = await session.api("GET", `/api/checkins?date=${date}`);
    if (chosenDay() !== date) return;
    const hours = new Array(24).fill(0);
    for (const c of data.checkins || []) {
      addCheckin(c, "in", false);
      if (c.checked_out_at) addCheckin(c, "out", false);
      hours[new Date(c.checked_in_at).getUTCHours()] += 1;
    }
    // A past day's chart comes from its list; today's from the live stats.
    state.dayHours = past ? hours : null;
    drawChart();
    $("checkin-note").textContent = "";
  } catch (e) {
    $("checkin-note").textContent = featureError(e);
  }
  renderCheckins();
  try {
    const data = await session.api("GET", `/api/attendance?date=${date}`);
    for (const r of data.records || []) addAttendance(r, false);
  } catch (e) {
    $("attendance-note").textContent = featureError(e);
  }
  renderAttendance();
}

// ---------------------------------------------------------------- start

// For the browser tests and for support staff poking at a misbehaving kiosk.
window.__spotter = { socket, session, state };

if (session.loggedIn) {
  startApp();
} else {
  show("login-view");
}
