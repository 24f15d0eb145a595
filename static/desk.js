// The admin panel's front desk and people tools: find a member by name or check-in code
// (a USB scanner types the code and Enter), check in / out with one click, who is in now
// and for how long; a user's details (presence log, check-in code as a QR code, a
// trainer's members with assign / unassign); recording attendance by hand; the chosen
// day's CSV exports. admin.js owns the dashboard and calls in here.

import { ApiError, clock, describeError, el, toast, todayUtc } from "/static/common.js";

const $ = (id) => document.getElementById(id);
/** Typing pauses this long before a search goes out. */
const SEARCH_DEBOUNCE_MS = 200;
/** "In the gym now" durations are brought up to date this often. */
const DURATION_REFRESH_MS = 30_000;
/** A check-in code: 6 letters and digits without look-alikes (server: domain::checkin_codes). */
const CODE_RE = /^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{6}$/;
const STATUS_WORDS = { present: "arrived", absent: "absent", left: "left", on_leave: "on leave" };

let ctx = null; // {session, users: () => Map, onDayChange}
const desk = {
  results: [],
  inside: [],
  searchTimer: null,
  insideTimer: null,
  day: todayUtc(),
  detailUser: null,
  lastExport: null,
  qrUrl: null,
};

/** `minutes` as "35 min" or "1 h 05". */
function duration(fromIso) {
  const m = Math.max(0, Math.round((Date.now() - Date.parse(fromIso)) / 60000));
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")}`;
}

/** What a typed or scanned text is, as the server stores codes; null for a name. */
export function asCode(text) {
  const code = text.replace(/[\s-]/g, "").toUpperCase();
  return CODE_RE.test(code) ? code : null;
}

export function initDesk(context) {
  ctx = context;
  $("desk-search").addEventListener("input", () => {
    clearTimeout(desk.searchTimer);
    desk.searchTimer = setTimeout(search, SEARCH_DEBOUNCE_MS);
  });
  $("desk-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearTimeout(desk.searchTimer);
    const text = $("desk-search").value.trim();
    const code = asCode(text);
    if (code) checkInByCode(code);
    else if (desk.results.length === 1 && !desk.results[0].checked_in_at) checkIn(desk.results[0]);
    else search();
  });
  $("day-picker").value = desk.day;
  $("day-picker").max = todayUtc();
  $("day-picker").addEventListener("change", () => setDay($("day-picker").value || todayUtc()));
  $("day-today").addEventListener("click", () => setDay(todayUtc()));
  $("export-checkins").addEventListener("click", () => exportCsv("checkins"));
  $("export-attendance").addEventListener("click", () => exportCsv("attendance"));
  $("attendance-form").addEventListener("submit", recordAttendance);
  $("detail-close").addEventListener("click", closeDetail);
  $("assign-form").addEventListener("submit", assign);
  $("reconnect-button").addEventListener("click", () => ctx.socket.reconnectNow());
  setInterval(renderInside, DURATION_REFRESH_MS);
}

/** Called when the panel starts or reconnects. */
export function refreshDesk() {
  loadInside();
  if ($("desk-search").value.trim()) search();
  fillEmployees();
}

/** Live check-in frames: who is in changed. */
export function deskOnCheckin() {
  clearTimeout(desk.insideTimer);
  desk.insideTimer = setTimeout(() => {
    loadInside();
    if ($("desk-search").value.trim()) search();
  }, 150);
}

// ---------------------------------------------------------------- search and check-in

function say(text, kind) {
  const box = $("desk-message");
  box.textContent = text;
  box.dataset.kind = kind || "";
  box.className = `desk-message ${kind || ""}`;
}

async function search() {
  const q = $("desk-search").value.trim();
  if (!q) {
    desk.results = [];
    renderResults();
    return;
  }
  try {
    const data = await ctx.session.api("GET", `/api/members?q=${encodeURIComponent(q)}`);
    if ($("desk-search").value.trim() !== q) return; // typed on meanwhile
    desk.results = data.members || [];
  } catch (e) {
    desk.results = [];
    say(describeError(e), "bad");
  }
  renderResults();
}

function renderResults() {
  const list = $("desk-results");
  list.replaceChildren();
  for (const m of desk.results) {
    const active = m.account_status === "active";
    const inside = !!m.checked_in_at;
    list.append(el("li", { "data-testid": `desk-result-${m.username}`, dataset: { memberId: m.id, inside: String(inside) } },
      el("span", { class: "avatar", text: (m.display_name || m.username).charAt(0).toUpperCase() }),
      el("div", { class: "who" },
        el("b", { text: m.display_name || m.username }),
        el("span", { class: "panel-note", text: ` @${m.username}` }),
        el("div", { class: "panel-note" },
          inside ? `In since ${clock(m.checked_in_at)} (${duration(m.checked_in_at)})` : "Not in the gym",
          active ? null : el("span", { class: "badge late", text: ` ${m.account_status.toUpperCase()}` }))),
      inside
        ? el("button", { type: "button", "data-testid": `desk-checkout-${m.username}`, onclick: () => checkOut(m.id, m.display_name || m.username), text: "Check out" })
        : el("button", { type: "button", class: "primary", "data-testid": `desk-checkin-${m.username}`, disabled: !active,
          title: active ? null : `This account is ${m.account_status}`, onclick: () => checkIn(m), text: "Check in" })));
  }
  if (!desk.results.length && $("desk-search").value.trim()) {
    list.append(el("li", { class: "panel-note", text: "No member matches." }));
  }
}

function deskLocation() {
  return $("desk-location").value || null;
}

async function checkIn(m) {
  try {
    const c = await ctx.session.api("POST", "/api/checkins", { member_id: m.id, location: deskLocation() });
    say(`✓ ${c.member_name || m.display_name} checked in${c.location ? ` · ${c.location}` : ""}`, "ok");
    $("desk-search").value = "";
    desk.results = [];
    renderResults();
    loadInside();
  } catch (e) {
    say(`${m.display_name || m.username}: ${e.message || describeError(e)}`, "bad");
  }
}

async function checkOut(memberId, name) {
  try {
    const c = await ctx.session.api("POST", "/api/checkins/checkout", { member_id: memberId });
    say(`✓ ${c.member_name || name} checked out after ${duration(c.checked_in_at)}`, "ok");
    loadInside();
    if ($("desk-search").value.trim()) search();
  } catch (e) {
    say(e.message || describeError(e), "bad");
  }
}

async function checkInByCode(code) {
  $("desk-search").value = "";
  desk.results = [];
  renderResults();
  try {
    const c = await ctx.session.api("POST", "/api/checkins/by-code", { code, location: deskLocation() });
    say(`✓ ${c.member_name} checked in${c.location ? ` · ${c.location}` : ""} (code ${code})`, "ok");
    loadInside();
  } catch (e) {
    // The server says who and why (suspended, already in, unknown code).
    const kind = e instanceof ApiError && e.status === 409 ? "warn" : "bad";
    say(`✗ ${e.message || describeError(e)}`, kind);
    const member = e.body && e.body.member;
    if (member && e.status === 409) {
      $("desk-search").value = member.username;
      search();
    }
  }
}

// ---------------------------------------------------------------- who is in now

async function loadInside() {
  try {
    const data = await ctx.session.api("GET", "/api/checkins/open");
    desk.inside = data.checkins || [];
  } catch (e) {
    say(`who is in: ${describeError(e)}`, "bad");
  }
  renderInside();
}

function renderInside() {
  $("inside-count").textContent = desk.inside.length;
  const list = $("inside-list");
  list.replaceChildren();
  for (const c of desk.inside) {
    list.append(el("li", { "data-testid": "inside-entry", dataset: { memberId: c.member_id } },
      el("span", { class: "who" }, el("b", { text: c.member_name || `member #${c.member_id}` }),
        el("span", { class: "panel-note", text: c.location ? ` · ${c.location}` : "" })),
      el("span", { class: "panel-note", "data-testid": "inside-duration", text: `since ${clock(c.checked_in_at)} · ${duration(c.checked_in_at)}` }),
      el("button", { type: "button", class: "small", "data-testid": `inside-checkout-${c.member_id}`,
        onclick: () => checkOut(c.member_id, c.member_name), text: "Check out" })));
  }
  if (!desk.inside.length) list.append(el("li", { class: "panel-note", text: "Nobody is in the gym." }));
}

// ---------------------------------------------------------------- the day

/** The chosen day (UTC) of the check-in and attendance lists. */
export function chosenDay() {
  return desk.day;
}

function setDay(day) {
  desk.day = day;
  $("day-picker").value = day;
  $("day-today").hidden = day === todayUtc();
  ctx.onDayChange(day);
}

async function exportCsv(what) {
  const day = desk.day;
  const path = `/api/${what}?date=${day}&format=csv`;
  try {
    const blob = await ctx.session.blob(path);
    const text = await blob.text();
    desk.lastExport = { what, day, text };
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a", { href: url, download: `${what}-${day}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    toast(`Exported ${what} of ${day}`);
  } catch (e) {
    toast(`Export: ${describeError(e)}`, "error");
  }
}

// ---------------------------------------------------------------- attendance by hand

function fillEmployees() {
  const select = $("att-employee");
  const current = select.value;
  const employees = [...ctx.users().values()]
    .filter((u) => u.role === "trainer" || u.role === "staff")
    .sort((a, b) => (a.display_name || a.username).localeCompare(b.display_name || b.username));
  select.replaceChildren(...employees.map((u) => el("option", { value: u.id, text: `${u.display_name || u.username} (${u.role})` })));
  if (current) select.value = current;
}

export function usersChanged() {
  fillEmployees();
  if (desk.detailUser) renderAssignOptions();
}

async function recordAttendance(ev) {
  ev.preventDefault();
  const employee = Number($("att-employee").value);
  if (!employee) return;
  const time = $("att-time").value; // "HH:MM", in UTC like every day in Spotter
  const body = { employee_id: employee, status: $("att-status").value, device: "Admin panel" };
  if (time) body.timestamp = `${desk.day}T${time}:00Z`;
  try {
    const r = await ctx.session.api("POST", "/api/attendance", body);
    toast(`${r.employee_name}: ${STATUS_WORDS[r.status] || r.status}${r.isLate ? " (late)" : ""}`);
    $("att-time").value = "";
    ctx.onAttendance(r);
  } catch (e) {
    toast(`Attendance: ${describeError(e)}`, "error");
  }
}

// ---------------------------------------------------------------- a user's details

export async function openDetail(user) {
  desk.detailUser = user;
  const panel = $("user-detail");
  panel.hidden = false;
  panel.dataset.userId = user.id;
  $("detail-name").textContent = user.display_name || user.username;
  $("detail-sub").textContent = `@${user.username} · ${user.role} · ${user.account_status}`;
  $("detail-code").hidden = user.role !== "member";
  $("detail-trainer").hidden = user.role !== "trainer";
  $("presence-log").replaceChildren(el("li", { class: "panel-note", text: "Loading…" }));
  panel.scrollIntoView({ block: "nearest" });
  loadPresenceLog(user);
  if (user.role === "member") loadCode(user);
  if (user.role === "trainer") loadAssigned(user);
}

function closeDetail() {
  desk.detailUser = null;
  $("user-detail").hidden = true;
}

const REASONS = {
  login: "logged in", heartbeat: "heartbeat", socket: "socket", logout: "logged out",
  timeout: "timed out", account_status: "account changed", node_lost: "server lost",
};

async function loadPresenceLog(user) {
  const list = $("presence-log");
  try {
    const entries = await ctx.session.api("GET", `/api/users/${user.id}/presence-log`);
    if (desk.detailUser !== user) return;
    list.replaceChildren();
    for (const e of entries.slice(0, 50)) {
      list.append(el("li", { "data-testid": "presence-log-entry", dataset: { online: String(e.is_online), reason: e.reason } },
        el("time", { datetime: e.at, text: `${e.at.slice(0, 10)} ${clock(e.at)}` }),
        el("span", { class: `presence ${e.is_online ? "online" : "offline"}`, text: e.is_online ? "Online" : "Offline" }),
        el("span", { class: "panel-note", text: REASONS[e.reason] || e.reason })));
    }
    if (!entries.length) list.append(el("li", { class: "panel-note", text: "Never online yet." }));
  } catch (e) {
    list.replaceChildren(el("li", { class: "panel-note", text: describeError(e) }));
  }
}

async function loadCode(user) {
  $("detail-code-text").textContent = "…";
  try {
    const data = await ctx.session.api("GET", `/api/users/${user.id}/checkin-code`);
    const blob = await ctx.session.blob(`/api/users/${user.id}/checkin-code?format=svg`);
    if (desk.detailUser !== user) return;
    $("detail-code-text").textContent = data.code;
    if (desk.qrUrl) URL.revokeObjectURL(desk.qrUrl);
    desk.qrUrl = URL.createObjectURL(blob);
    $("detail-qr").src = desk.qrUrl;
  } catch (e) {
    $("detail-code-text").textContent = describeError(e);
  }
}

async function loadAssigned(user) {
  const list = $("assigned-list");
  try {
    const data = await ctx.session.api("GET", `/api/trainers/${user.id}/clients`);
    if (desk.detailUser !== user) return;
    desk.assigned = data.clients || [];
  } catch (e) {
    desk.assigned = [];
    list.replaceChildren(el("li", { class: "panel-note", text: describeError(e) }));
    return;
  }
  list.replaceChildren();
  for (const m of desk.assigned) {
    list.append(el("li", { "data-testid": `assigned-${m.username}` },
      el("span", { class: "who", text: m.display_name || m.username }),
      el("button", { type: "button", class: "small", "data-testid": `unassign-${m.username}`,
        onclick: () => unassign(user, m), text: "Remove" })));
  }
  if (!desk.assigned.length) list.append(el("li", { class: "panel-note", text: "No members assigned yet." }));
  renderAssignOptions();
}

function renderAssignOptions() {
  const taken = new Set((desk.assigned || []).map((m) => m.id));
  const members = [...ctx.users().values()]
    .filter((u) => u.role === "member" && !taken.has(u.id))
    .sort((a, b) => (a.display_name || a.username).localeCompare(b.display_name || b.username));
  $("assign-select").replaceChildren(...members.map((u) => el("option", { value: u.id, text: u.display_name || u.username })));
}

async function assign(ev) {
  ev.preventDefault();
  const trainer = desk.detailUser;
  const member = Number($("assign-select").value);
  if (!trainer || !member) return;
  try {
    await ctx.session.api("PUT", `/api/trainers/${trainer.id}/clients/${member}`);
    toast("Assigned");
    loadAssigned(trainer);
  } catch (e) {
    toast(`Assign: ${describeError(e)}`, "error");
  }
}

async function unassign(trainer, member) {
  try {
    await ctx.session.api("DELETE", `/api/trainers/${trainer.id}/clients/${member.id}`);
    loadAssigned(trainer);
  } catch (e) {
    toast(`Unassign: ${describeError(e)}`, "error");
  }
}

// For the browser tests.
window.__desk = desk;
