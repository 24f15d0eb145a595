// The chat client for trainers, members and admins (PROTOCOL §3 chat + files, §4).
// Messages are kept per conversation by `id` (repeats dropped) and shown in `seq` order;
// a message being sent is shown as pending until its `message_ack`.

import {
  ApiError, LiveSocket, Session, clock, describeError, el, toast,
} from "/static/common.js";

/** Send `typing` at most this often while the user types. */
const TYPING_SEND_MS = 2000;
/** Say "stopped typing" after this long without a key. */
const TYPING_IDLE_MS = 3000;
/** The peer's typing indicator disappears after this long without news (the server's expiry). */
const TYPING_SHOW_MS = 6000;
/** The conversation list is fetched again this often, as a backstop: a new conversation
 * arrives at once as `conversation_created`, messages as `new_message`. */
const CONVERSATIONS_POLL_MS = 30_000;
const HISTORY_PAGE = 50;
/** Typing pauses this long before a people search goes out. */
const FINDER_DEBOUNCE_MS = 200;
/** People listed before anything is typed (assigned ones always). */
const FINDER_PREVIEW = 5;
const TITLE = "Spotter · Chat";

const $ = (id) => document.getElementById(id);

const session = new Session("chat");
const state = {
  convs: new Map(), // id -> conversation (+ our bookkeeping)
  openId: null,
  pending: new Map(), // client_msg_id -> {conversation_id, content, attachment, status}
  clients: [],
  attachment: null, // uploaded, waiting to be sent: {id, url, name}
  typingSentAt: 0,
  typingActive: false,
  typingIdle: null,
  peerTyping: new Map(), // conversation id -> timer
  nodes: new Map(), // message id or "p:" + client_msg_id -> element
  pollTimer: null,
};

const socket = new LiveSocket(session, {
  onFrame: handleFrame,
  onOpen: () => joinAll(),
  onStatus: showConnection,
  onFatal: (why) => (why === "forbidden" ? showDisabled() : backToLogin("Your session has ended. Please sign in again.")),
});
session.on("expired", () => backToLogin("Your session has ended. Please sign in again."));

const me = () => session.user || {};

// ---------------------------------------------------------------- views

function show(view) {
  for (const id of ["login-view", "disabled-view", "app-view"]) $(id).hidden = id !== view;
  const inApp = view === "app-view";
  $("logout-button").hidden = !inApp;
  $("conn-status").hidden = !inApp;
  $("whoami").textContent = inApp ? `${me().display_name || me().username || ""} · ${me().role || ""}` : "";
}

function backToLogin(message) {
  socket.stop();
  session.clear();
  clearInterval(state.pollTimer);
  state.convs.clear();
  state.pending.clear();
  state.nodes.clear();
  state.openId = null;
  show("login-view");
  $("login-error").textContent = message || "";
}

function showDisabled() {
  socket.stop();
  session.clear();
  clearInterval(state.pollTimer);
  show("disabled-view");
}

function showConnection(s) {
  const node = $("conn-status");
  node.dataset.state = s;
  node.dataset.connects = socket.connects;
  node.textContent = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" }[s] || s;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  try {
    await session.login($("login-username").value.trim(), $("login-password").value);
    $("login-password").value = "";
    await startApp();
  } catch (e) {
    $("login-error").textContent = describeError(e);
  } finally {
    $("login-submit").disabled = false;
  }
});

$("logout-button").addEventListener("click", async () => {
  socket.stop();
  await session.logout();
  backToLogin("");
});
$("disabled-back").addEventListener("click", () => backToLogin(""));

async function startApp() {
  show("app-view");
  await loadConversations();
  if (me().role === "trainer") await loadClients();
  if (me().role === "admin") await loadDirectory();
  setUpFinder();
  $("my-code-button").hidden = me().role !== "member";
  socket.start();
  clearInterval(state.pollTimer);
  state.pollTimer = setInterval(() => {
    loadConversations();
    if (me().role === "trainer") loadClients();
  }, CONVERSATIONS_POLL_MS);
  await openFromLink();
}

/**
 * Deep links: `/chat/?peer=<user id>` opens (or starts) the chat with that person,
 * `/chat/?conversation=<id>` opens that conversation (`#c=<id>`, the older form, too).
 */
async function openFromLink() {
  const params = new URLSearchParams(location.search);
  const peer = Number(params.get("peer"));
  const wanted = Number(params.get("conversation")) || Number(new URLSearchParams(location.hash.slice(1)).get("c"));
  if (peer) {
    const existing = [...state.convs.values()].find((c) => c.peer && c.peer.id === peer);
    if (existing) openConversation(existing.id);
    else await startChatWith(peer);
  } else if (wanted) {
    if (!state.convs.has(wanted)) await loadConversations();
    if (state.convs.has(wanted)) openConversation(wanted);
    else toast("That conversation is not one of yours.", "error");
  }
}

// ---------------------------------------------------------------- finding people

/** Members find trainers (assigned first); trainers find their clients and members. */
function setUpFinder() {
  const role = me().role;
  if (role !== "member" && role !== "trainer") {
    $("finder-section").hidden = true;
    return;
  }
  $("finder-section").hidden = false;
  $("finder-title").textContent = role === "member" ? "Find a trainer" : "Find a client";
  $("finder-search").placeholder = role === "member" ? "Search trainers by name" : "Search members by name";
  if (!state.finderReady) {
    state.finderReady = true;
    $("finder-search").addEventListener("input", () => {
      clearTimeout(state.finderTimer);
      state.finderTimer = setTimeout(findPeople, FINDER_DEBOUNCE_MS);
    });
  }
  findPeople();
}

async function findPeople() {
  const q = $("finder-search").value.trim();
  const member = me().role === "member";
  const path = member ? "/api/trainers" : "/api/members";
  try {
    const data = await session.api("GET", `${path}?q=${encodeURIComponent(q)}`);
    if ($("finder-search").value.trim() !== q) return;
    renderFinder(member ? data.trainers || [] : data.members || [], q);
  } catch (e) {
    $("finder-results").replaceChildren(el("li", { class: "panel-note", text: describeError(e) }));
  }
}

function renderFinder(people, q) {
  const list = $("finder-results");
  list.replaceChildren();
  // Without a search: the assigned ones (or the first few), so the list stays short.
  const shown = q ? people : people.filter((p, i) => p.assigned || i < FINDER_PREVIEW);
  for (const p of shown) {
    const existing = [...state.convs.values()].find((c) => c.peer && c.peer.id === p.id);
    list.append(el("li", {
      class: "conv",
      "data-testid": `find-${p.username}`,
      dataset: { userId: p.id, assigned: String(!!p.assigned) },
      tabindex: 0,
      onclick: () => (existing ? openConversation(existing.id) : startChatWith(p.id)),
      onkeydown: (e) => { if (e.key === "Enter") (existing ? openConversation(existing.id) : startChatWith(p.id)); },
    },
    el("span", { class: `avatar${p.is_online ? " online" : ""}`, text: initial(p.display_name || p.username) }),
    el("div", { class: "body" },
      el("div", { class: "title", text: p.display_name || p.username }),
      el("div", { class: "preview", text: `${p.assigned ? (me().role === "member" ? "Your trainer" : "Your client") : p.role}${p.is_online ? " · online" : ""} · ${existing ? "Open chat" : "Start a chat"}` }))));
  }
  if (!shown.length) list.append(el("li", { class: "panel-note", text: q ? "Nobody matches." : "Nobody to show yet." }));
}

// ---------------------------------------------------------------- my check-in code

$("my-code-button").addEventListener("click", async () => {
  $("my-code").hidden = false;
  $("my-code-text").textContent = "…";
  try {
    const data = await session.api("GET", "/api/users/me/checkin-code");
    const blob = await session.blob("/api/users/me/checkin-code?format=svg");
    $("my-code-text").textContent = data.code;
    if (state.qrUrl) URL.revokeObjectURL(state.qrUrl);
    state.qrUrl = URL.createObjectURL(blob);
    $("my-code-qr").src = state.qrUrl;
  } catch (e) {
    $("my-code-text").textContent = describeError(e);
  }
});
$("my-code-close").addEventListener("click", () => ($("my-code").hidden = true));

// ---------------------------------------------------------------- full-size images

function openLightbox(src) {
  $("lightbox-img").src = src;
  $("lightbox").hidden = false;
}
$("lightbox").addEventListener("click", () => ($("lightbox").hidden = true));
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    $("lightbox").hidden = true;
    $("my-code").hidden = true;
  }
});

// ---------------------------------------------------------------- conversations

function conv(id) {
  return state.convs.get(Number(id));
}

/**
 * The highest seq this client has seen: rejoins ask for what comes after it. For an open
 * conversation only messages actually held count (the list's `last_message` may be newer
 * than what was received, and a gap must be filled, not skipped).
 */
function lastSeq(c) {
  return c.maxSeq || 0;
}

async function loadConversations() {
  try {
    const data = await session.api("GET", "/api/chat/conversations");
    for (const c of data.conversations || []) {
      const known = state.convs.get(c.id);
      if (known) {
        known.peer = c.peer;
        if (!known.last_message || (c.last_message && c.last_message.seq >= known.last_message.seq)) {
          known.last_message = c.last_message;
          // Nothing is held for a closed conversation: the list is what has been seen.
          if (!known.loaded && c.last_message) known.maxSeq = Math.max(known.maxSeq || 0, c.last_message.seq);
        }
        if (c.id !== state.openId) known.unread_count = c.unread_count;
        known.last_read_seq = Math.max(known.last_read_seq || 0, c.last_read_seq || 0);
      } else {
        state.convs.set(c.id, {
          ...c,
          maxSeq: (c.last_message && c.last_message.seq) || 0,
          messages: new Map(),
          loaded: false,
          hasMore: false,
          peerRead: 0,
          joined: false,
        });
        if (socket.connected) join(state.convs.get(c.id));
      }
    }
    $("side-note").textContent = "";
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    $("side-note").textContent = describeError(e);
  }
  renderConversations();
}

async function loadClients() {
  try {
    const data = await session.api("GET", "/api/trainer/clients");
    state.clients = data.clients || [];
  } catch (e) {
    state.clients = [];
    $("side-note").textContent = `clients: ${describeError(e)}`;
  }
  renderClients();
}

async function loadDirectory() {
  try {
    const data = await session.api("GET", "/api/users/all-users");
    const select = $("directory-select");
    select.replaceChildren();
    for (const u of (data.users || []).filter((u) => u.id !== me().id && u.role !== "device")) {
      select.append(el("option", { value: u.id }, `${u.display_name || u.username} (${u.role})`));
    }
    $("directory-section").hidden = false;
  } catch {
    $("directory-section").hidden = true;
  }
}

$("directory-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = Number($("directory-select").value);
  if (id) startChatWith(id);
});

async function startChatWith(peerId) {
  try {
    const res = await session.api("POST", "/api/chat/conversations", { peer_id: peerId });
    const id = res.id ?? res.conversation_id ?? (res.conversation && res.conversation.id);
    await loadConversations();
    if (me().role === "trainer") loadClients();
    if (id) openConversation(id);
    if (!$("finder-section").hidden) findPeople();
  } catch (e) {
    toast(`Cannot start the chat: ${describeError(e)}`, "error");
  }
}

function peerName(c) {
  return (c.peer && (c.peer.display_name || c.peer.username)) || "Conversation";
}

function renderConversations() {
  const list = $("conversation-list");
  const items = [...state.convs.values()].sort((a, b) => {
    const ta = a.last_message ? Date.parse(a.last_message.created_at) : 0;
    const tb = b.last_message ? Date.parse(b.last_message.created_at) : 0;
    return tb - ta || a.id - b.id;
  });
  list.replaceChildren();
  let totalUnread = 0;
  for (const c of items) {
    const unread = c.id === state.openId ? 0 : c.unread_count || 0;
    const typing = state.peerTyping.has(c.id);
    const preview = typing ? "typing…"
      : c.last_message ? `${c.last_message.sender_id === me().id ? "You: " : ""}${c.last_message.content}` : "No messages yet";
    totalUnread += unread;
    const username = (c.peer && c.peer.username) || String(c.id);
    list.append(el("li", {
      class: `conv${c.id === state.openId ? " active" : ""}${unread ? " unread" : ""}`,
      "data-testid": `conversation-${username}`,
      dataset: { conversationId: c.id },
      tabindex: 0,
      onclick: () => openConversation(c.id),
      onkeydown: (e) => { if (e.key === "Enter") openConversation(c.id); },
    },
    el("span", { class: "avatar", text: initial(peerName(c)) }),
    el("div", { class: "body" },
      el("div", { class: "title", text: peerName(c) }),
      el("div", { class: "preview", text: preview })),
    unread ? el("span", { class: "badge count", "data-testid": `unread-${username}`, text: unread }) : null));
  }
  if (!items.length) {
    list.append(el("li", { class: "panel-note", style: "padding:8px 10px", text: me().role === "member" ? "No conversations yet. Find a trainer below to start one." : "No conversations yet." }));
  }
  // The unread count in the tab's title, as messengers do.
  document.title = totalUnread ? `(${totalUnread}) ${TITLE}` : TITLE;
}

function renderClients() {
  const withChat = new Set([...state.convs.values()].map((c) => c.peer && c.peer.id));
  const free = state.clients.filter((cl) => !cl.conversation_id && !withChat.has(cl.id));
  $("clients-section").hidden = !free.length;
  const list = $("client-list");
  list.replaceChildren();
  for (const cl of free) {
    list.append(el("li", {
      class: "conv",
      "data-testid": `client-${cl.username}`,
      tabindex: 0,
      onclick: () => startChatWith(cl.id),
      onkeydown: (e) => { if (e.key === "Enter") startChatWith(cl.id); },
    },
    el("span", { class: "avatar", text: initial(cl.display_name || cl.username) }),
    el("div", { class: "body" },
      el("div", { class: "title", text: cl.display_name || cl.username }),
      el("div", { class: "preview", text: "Start a chat" }))));
  }
}

function initial(name) {
  return (name || "?").trim().charAt(0).toUpperCase() || "?";
}

// ---------------------------------------------------------------- socket

function joinAll() {
  for (const c of state.convs.values()) join(c);
  loadConversations();
}

async function join(c) {
  try {
    const reply = await socket.call("join_conversation", { conversation_id: c.id, since_seq: lastSeq(c) });
    c.joined = true;
    const p = reply.payload || {};
    if (p.recovered === false) {
      await resync(c);
    } else {
      for (const m of p.missed || []) addMessage(m);
    }
    resendPending(c.id);
  } catch (e) {
    if (e.code === "resync_required") await resync(c);
    else if (e.code !== "closed") $("side-note").textContent = `${peerName(c)}: ${describeError(e)}`;
  }
}

/** Too much was missed to replay: start again from the newest page of history. */
async function resync(c) {
  c.messages = new Map();
  c.loaded = false;
  for (const key of [...state.nodes.keys()]) if (!key.startsWith("p:")) state.nodes.delete(key);
  if (c.id === state.openId) await loadHistory(c);
  else await loadConversations();
  renderConversations();
}

function handleFrame(frame) {
  const p = frame.payload || {};
  switch (frame.type) {
    case "new_message":
      if (p.message) addMessage(p.message);
      break;
    case "message_ack":
      if (p.message) addMessage(p.message);
      break;
    case "conversation_created":
      // Someone opened a chat with us: show it now rather than at the next poll.
      if (!conv(p.conversation_id)) loadConversations();
      break;
    case "typing":
      if (p.user_id !== me().id) peerTyping(p.conversation_id, p.is_typing);
      break;
    case "read_receipt": {
      const c = conv(p.conversation_id);
      if (!c) break;
      if (p.user_id === me().id) {
        c.last_read_seq = Math.max(c.last_read_seq || 0, p.seq);
        if (c.last_read_seq >= lastSeq(c)) c.unread_count = 0;
        renderConversations();
      } else {
        c.peerRead = Math.max(c.peerRead || 0, p.seq);
        if (c.id === state.openId) renderMessages();
      }
      break;
    }
    case "error":
      if (p.code === "resync_required") {
        const c = conv(p.conversation_id) || conv(state.openId);
        if (c) resync(c);
      }
      break;
    default:
      break;
  }
}

function addMessage(m) {
  const c = conv(m.conversation_id);
  if (!c) {
    loadConversations();
    return;
  }
  const isNew = !c.messages.has(m.id) && m.seq > (c.maxSeq || 0);
  if (m.client_msg_id && state.pending.has(m.client_msg_id) && m.sender_id === me().id) {
    state.pending.delete(m.client_msg_id);
    const node = state.nodes.get(`p:${m.client_msg_id}`);
    state.nodes.delete(`p:${m.client_msg_id}`);
    if (node) node.remove();
  }
  const gap = c.id === state.openId && c.loaded && c.maxSeq > 0 && m.seq > c.maxSeq + 1;
  if (c.loaded || c.id === state.openId) c.messages.set(m.id, m);
  c.maxSeq = Math.max(c.maxSeq || 0, m.seq);
  if (!c.last_message || m.seq >= c.last_message.seq) c.last_message = m;
  if (isNew && m.sender_id !== me().id) {
    state.peerTyping.has(c.id) && peerTyping(c.id, false);
    if (!(c.id === state.openId && viewing())) c.unread_count = (c.unread_count || 0) + 1;
  }
  if (gap) fetchAfter(c, c.maxSeq);
  if (c.id === state.openId) {
    renderMessages();
    markRead(c);
  }
  renderConversations();
}

async function fetchAfter(c, fromSeq) {
  try {
    const data = await session.api("GET", `/api/chat/history?conversation_id=${c.id}&after_seq=${Math.max(0, fromSeq - HISTORY_PAGE)}&limit=200`);
    for (const m of data.messages || []) c.messages.set(m.id, m);
    if (c.id === state.openId) renderMessages();
  } catch {
    // The next reconnect's since_seq fills it.
  }
}

function viewing() {
  return document.visibilityState === "visible";
}

function markRead(c) {
  if (!viewing() || c.id !== state.openId) return;
  const seq = lastSeq(c);
  if (seq > (c.last_read_seq || 0)) {
    c.last_read_seq = seq;
    socket.send("read_receipt", { conversation_id: c.id, seq });
  }
  c.unread_count = 0;
}

document.addEventListener("visibilitychange", () => {
  const c = conv(state.openId);
  if (c) {
    markRead(c);
    renderConversations();
  }
});

// ---------------------------------------------------------------- one conversation

async function openConversation(id) {
  const c = conv(id);
  if (!c) return;
  if (state.openId !== c.id) {
    stopTyping();
    state.nodes.clear();
    $("messages").replaceChildren();
  }
  state.openId = c.id;
  history.replaceState(null, "", `/chat/?conversation=${c.id}`);
  $("app-view").classList.add("viewing");
  $("no-conversation").hidden = true;
  $("conversation-view").hidden = false;
  $("peer-name").textContent = peerName(c);
  $("peer-role").textContent = (c.peer && c.peer.role) || "";
  $("peer-avatar").textContent = initial(peerName(c));
  renderTyping();
  renderConversations();
  if (!c.loaded) await loadHistory(c);
  else renderMessages(true);
  markRead(c);
  renderConversations();
  $("message-input").focus();
}

/** Phone layout: back from the conversation to the list. */
function closeConversation() {
  stopTyping();
  state.openId = null;
  state.nodes.clear();
  $("messages").replaceChildren();
  $("app-view").classList.remove("viewing");
  $("conversation-view").hidden = true;
  $("no-conversation").hidden = false;
  history.replaceState(null, "", "/chat/");
  renderConversations();
}
$("back-button").addEventListener("click", closeConversation);

async function loadHistory(c, beforeSeq) {
  const q = beforeSeq ? `&before_seq=${beforeSeq}` : "";
  try {
    const data = await session.api("GET", `/api/chat/history?conversation_id=${c.id}&limit=${HISTORY_PAGE}${q}`);
    for (const m of data.messages || []) {
      c.messages.set(m.id, m);
      c.maxSeq = Math.max(c.maxSeq || 0, m.seq);
    }
    c.hasMore = !!data.has_more;
    c.loaded = true;
    if (c.id === state.openId) renderMessages(!beforeSeq);
  } catch (e) {
    toast(`History: ${describeError(e)}`, "error");
  }
}

function sortedMessages(c) {
  return [...c.messages.values()].sort((a, b) => a.seq - b.seq);
}

function safeUrl(url) {
  try {
    const u = new URL(url, location.origin);
    return u.origin === location.origin ? u.pathname + u.search : null;
  } catch {
    return null;
  }
}

function attachmentUrl(a) {
  if (!a) return null;
  if (typeof a === "string") return safeUrl(a);
  if (a.url) return safeUrl(a.url);
  if (a.id) return `/api/files/${encodeURIComponent(a.id)}`;
  return null;
}

function messageNode(m, mine, pending) {
  const src = attachmentUrl(m.attachment);
  return el("div", {
    class: `msg${mine ? " mine" : ""}${pending ? " pending" : ""}${pending === "failed" ? " failed" : ""}`,
    "data-testid": pending ? "message-pending" : "message",
    dataset: pending ? { clientMsgId: m.client_msg_id } : { id: m.id, seq: m.seq, sender: m.sender_id },
  },
  src ? el("img", { src, alt: "image attachment", loading: "lazy", "data-testid": "message-image", title: "Open full size",
    onclick: () => openLightbox(src) }) : null,
  el("div", { class: "text", text: m.content }),
  el("div", { class: "meta" }, pending === "failed"
    ? el("button", { class: "small", type: "button", onclick: () => retry(m.client_msg_id), text: "Not sent · retry" })
    : pending ? "sending…" : clock(m.created_at)));
}

function renderMessages(scrollToEnd) {
  const c = conv(state.openId);
  if (!c) return;
  const box = $("messages");
  const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const oldHeight = box.scrollHeight;
  const oldTop = box.scrollTop;
  const firstBefore = box.querySelector(".msg");
  const children = [];
  if (c.hasMore) {
    children.push(el("button", { class: "small older", type: "button", "data-testid": "load-older", text: "Load older messages",
      onclick: () => loadHistory(c, sortedMessages(c)[0]?.seq) }));
  }
  const list = sortedMessages(c);
  let lastMineSeen = null;
  for (const m of list) {
    if (m.sender_id === me().id && m.seq <= (c.peerRead || 0)) lastMineSeen = m.id;
  }
  for (const m of list) {
    let node = state.nodes.get(m.id);
    if (!node) {
      node = messageNode(m, m.sender_id === me().id, null);
      state.nodes.set(m.id, node);
    }
    let seen = node.querySelector(".seen");
    if (m.id === lastMineSeen && !seen) {
      node.querySelector(".meta").append(el("span", { class: "seen", "data-testid": "seen", text: " · Seen" }));
    } else if (m.id !== lastMineSeen && seen) {
      seen.remove();
    }
    children.push(node);
  }
  for (const [cid, p] of state.pending) {
    if (p.conversation_id !== c.id) continue;
    let node = state.nodes.get(`p:${cid}`);
    if (!node || node.dataset.status !== p.status) {
      node = messageNode({ content: p.content, client_msg_id: cid, attachment: p.attachment }, true, p.status);
      node.dataset.status = p.status;
      state.nodes.set(`p:${cid}`, node);
    }
    children.push(node);
  }
  if (!children.length) children.push(el("div", { class: "placeholder", text: "No messages yet. Say hello!" }));
  box.replaceChildren(...children);
  if (scrollToEnd || nearEnd) box.scrollTop = box.scrollHeight;
  else if (firstBefore && box.querySelector(".msg") !== firstBefore) box.scrollTop = oldTop + (box.scrollHeight - oldHeight);
}

// ---------------------------------------------------------------- sending

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const c = conv(state.openId);
  if (!c) return;
  const input = $("message-input");
  let content = input.value.trim();
  const attachment = state.attachment;
  if (!content && attachment) content = attachment.name;
  if (!content) return;
  const clientMsgId = newId();
  state.pending.set(clientMsgId, {
    conversation_id: c.id,
    content,
    attachment: attachment ? { id: attachment.id, url: attachment.url } : null,
    attachment_id: attachment ? attachment.id : undefined,
    status: "pending",
  });
  input.value = "";
  clearAttachment();
  stopTyping();
  renderMessages(true);
  transmit(clientMsgId);
});

$("message-input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});

/** Sends (or sends again: the same client_msg_id is acked once, never stored twice). */
function transmit(clientMsgId) {
  const p = state.pending.get(clientMsgId);
  if (!p) return;
  const payload = { conversation_id: p.conversation_id, content: p.content, client_msg_id: clientMsgId };
  if (p.attachment_id !== undefined) payload.attachment_id = p.attachment_id;
  if (!socket.connected) return; // resent after the next join
  socket.call("send_message", payload).then((reply) => {
    const m = reply.payload && reply.payload.message;
    if (m) addMessage(m);
  }).catch((e) => {
    if (e.code === "closed" || e.code === "timeout") return; // resent after reconnect
    const still = state.pending.get(clientMsgId);
    if (still) {
      still.status = "failed";
      toast(`Message not sent: ${describeError(e)}`, "error");
      renderMessages();
    }
  });
}

function retry(clientMsgId) {
  const p = state.pending.get(clientMsgId);
  if (!p) return;
  p.status = "pending";
  renderMessages();
  transmit(clientMsgId);
}

function resendPending(conversationId) {
  for (const [cid, p] of state.pending) {
    if (p.conversation_id === conversationId && p.status === "pending") transmit(cid);
  }
}

// ---------------------------------------------------------------- typing

$("message-input").addEventListener("input", () => {
  const c = conv(state.openId);
  if (!c) return;
  const text = $("message-input").value;
  if (!text) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (now - state.typingSentAt >= TYPING_SEND_MS) {
    state.typingSentAt = now;
    state.typingActive = true;
    socket.send("typing", { conversation_id: c.id, is_typing: true });
  }
  clearTimeout(state.typingIdle);
  state.typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
});

function stopTyping() {
  clearTimeout(state.typingIdle);
  if (state.typingActive && state.openId) {
    socket.send("typing", { conversation_id: state.openId, is_typing: false });
  }
  state.typingActive = false;
  state.typingSentAt = 0;
}

function peerTyping(conversationId, isTyping) {
  const id = Number(conversationId);
  clearTimeout(state.peerTyping.get(id));
  if (isTyping) {
    state.peerTyping.set(id, setTimeout(() => peerTyping(id, false), TYPING_SHOW_MS));
  } else {
    state.peerTyping.delete(id);
  }
  renderTyping();
  renderConversations();
}

function renderTyping() {
  const c = conv(state.openId);
  $("typing-indicator").textContent = c && state.peerTyping.has(c.id) ? `${peerName(c)} is typing…` : "";
}

// ---------------------------------------------------------------- attachments

$("attach-input").addEventListener("change", async (ev) => {
  const file = ev.target.files && ev.target.files[0];
  ev.target.value = "";
  if (!file) return;
  const box = $("attachment-preview");
  box.hidden = false;
  box.replaceChildren(`Uploading ${file.name}…`);
  $("send-button").disabled = true;
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const res = await session.api("POST", "/api/files/upload", form);
    state.attachment = { id: res.id, url: safeUrl(res.url) || `/api/files/${res.id}`, name: file.name };
    box.replaceChildren(
      el("img", { src: state.attachment.url, alt: "", style: "height:48px;border-radius:6px;vertical-align:middle;margin-right:8px" }),
      file.name, " ",
      el("button", { type: "button", class: "small", "data-testid": "attachment-remove", onclick: clearAttachment, text: "Remove" }));
  } catch (e) {
    const words = { too_large: "That image is too large.", unsupported_media_type: "Only PNG, JPEG, GIF or WebP images can be sent." };
    box.replaceChildren(el("span", { class: "error-text", text: words[e.code] || describeError(e) }));
    state.attachment = null;
  } finally {
    $("send-button").disabled = false;
  }
});

function clearAttachment() {
  state.attachment = null;
  $("attachment-preview").hidden = true;
  $("attachment-preview").replaceChildren();
}

// ---------------------------------------------------------------- start

// For the browser tests and for support staff poking at a misbehaving kiosk.
window.__spotter = { socket, session, state };

if (session.loggedIn) startApp();
else show("login-view");
