// The wtgate demo page: chat rooms with presence and a typing indicator on /chat,
// a notifications panel on its own /notifications session. Served by
// `wtgate serve --dev`; no build step, no framework.
//
// Transports: WebTransport, falling back to a WebSocket on this page's own origin
// (the dev server answers `ws://127.0.0.1:8080/NAMESPACE`, since browsers take no
// certificate hashes for WebSockets). `?transports=websocket` on the page's URL
// skips WebTransport; `?transports=webtransport` forbids the fallback.
//
// The page keeps its name, rooms, their positions and recent messages in
// sessionStorage, so a reload rejoins with `since` and shows what was missed.

import { connect } from './wtgate.js';

const $ = (id) => document.getElementById(id);
const STORE_KEY = 'wtgate-demo';
const DEFAULT_ROOM = 'lobby';
const KEEP_MESSAGES = 200;
const TYPING_SEND_EVERY = 1000; // ms between two "typing" datagrams while typing
const TYPING_SHOW_FOR = 3000; // ms a "typing…" stays after the last datagram
const TYPING_AFTER_MESSAGE = 1000; // ms after someone's message during which their "typing" is stale
const TRANSPORT_NAMES = { webtransport: 'WebTransport', websocket: 'WebSocket' };

/** The page URL's `?transports=a,b`, or undefined for the library's default (both). */
function transportsFromUrl() {
  const param = new URLSearchParams(location.search).get('transports');
  return param ? param.split(',').map((t) => t.trim()).filter(Boolean) : undefined;
}

// ---------------------------------------------------------------------------
// State kept across reloads (sessionStorage: per tab).

/**
 * @typedef {{epoch: string, seq: string}} StoredPosition u64s as decimal strings (JSON has no bigint)
 * @typedef {{key: string, from: string, text: string, ts: number, replayed?: boolean} | {note: string, warn?: boolean}} StoredLine
 * @typedef {{position: StoredPosition | null, lines: StoredLine[]}} StoredRoom
 * @typedef {{name: string | null, current: string, rooms: Record<string, StoredRoom>}} Stored
 */

/** @returns {Stored} */
function load() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORE_KEY) ?? 'null');
    if (stored && typeof stored === 'object' && stored.rooms) return stored;
  } catch (e) {
    console.warn('demo: ignoring unreadable saved state', e);
  }
  return { name: null, current: DEFAULT_ROOM, rooms: {} };
}

const stored = load();
const save = () => sessionStorage.setItem(STORE_KEY, JSON.stringify(stored));

const u64 = (s) => (Number.isSafeInteger(Number(s)) ? Number(s) : BigInt(s));
const toStored = (p) => (p === null ? null : { epoch: String(p.epoch), seq: String(p.seq) });
const fromStored = (p) => (p ? { epoch: u64(p.epoch), seq: u64(p.seq) } : null);

// ---------------------------------------------------------------------------
// What the page holds while running; `window.demo` exposes it for the tests.

/** @type {import('./wtgate.js').Client | null} */
let chat = null;
/** @type {import('./wtgate.js').Client | null} */
let notes = null;
/** @type {Map<string, import('./wtgate.js').Room>} */
const rooms = new Map();
/** room → (user → timer) of people typing */
const typing = new Map();
/** `room\nuser` → when their last message arrived: a datagram sent before it may arrive after it. */
const lastMessageAt = new Map();
const unread = new Map();
let lastTypingSent = 0;

const events = [];
const errors = [];
window.demo = {
  get chat() { return chat; },
  get notifications() { return notes; },
  rooms,
  events,
  errors,
};

// ---------------------------------------------------------------------------
// Small DOM helpers.

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-') || key.startsWith('aria-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

const timeOf = (ts) => new Date(Number(ts)).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

function showError(error) {
  const message = error instanceof Error ? error.message : String(error);
  errors.push(message);
  console.error('demo:', error);
  const banner = $('banner');
  banner.textContent = message;
  banner.hidden = false;
}

function clearError() {
  $('banner').hidden = true;
}

function setStatus(id, state, text = state) {
  const pill = $(id);
  pill.dataset.state = state;
  pill.textContent = text;
}

async function fetchJson(path) {
  const response = await fetch(path, { cache: 'no-store' });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${path}: ${body.error ?? response.statusText}`);
  return body;
}

// ---------------------------------------------------------------------------
// Rendering.

function roomState(name) {
  stored.rooms[name] ??= { position: null, lines: [] };
  return stored.rooms[name];
}

function addLine(name, line) {
  const state = roomState(name);
  state.lines.push(line);
  if (state.lines.length > KEEP_MESSAGES) state.lines.splice(0, state.lines.length - KEEP_MESSAGES);
  save();
  if (name === stored.current) {
    $('messages').append(renderLine(line));
    scrollDown();
  } else if (!line.note) {
    unread.set(name, (unread.get(name) ?? 0) + 1);
    renderRooms();
  }
}

function renderLine(line) {
  if (line.note) return el('li', { class: line.warn ? 'note warn' : 'note' }, line.note);
  const mine = line.from === chat?.user;
  return el(
    'li',
    { class: [mine ? 'mine' : '', line.replayed ? 'replayed' : ''].join(' ').trim(), 'data-from': line.from, 'data-key': line.key },
    el('span', { class: 'from' }, line.from),
    el('span', { class: 'body' }, line.text),
    el('span', { class: 'time', title: new Date(line.ts).toISOString() }, timeOf(line.ts)),
  );
}

function scrollDown() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

function renderRooms() {
  const list = $('rooms');
  list.replaceChildren(
    ...[...rooms.keys()].map((name) => {
      const count = unread.get(name) ?? 0;
      const button = el(
        'button',
        { type: 'button', 'data-room': name, 'aria-current': String(name === stored.current) },
        el('span', {}, `#${name}`),
      );
      if (count > 0) button.append(el('span', { class: 'unread' }, String(count)));
      button.addEventListener('click', () => switchRoom(name));
      return el('li', {}, button);
    }),
  );
}

function renderConversation() {
  const name = stored.current;
  $('room-title').textContent = `#${name}`;
  $('messages').replaceChildren(...roomState(name).lines.map(renderLine));
  renderMembers();
  renderTyping();
  scrollDown();
}

function renderMembers() {
  const room = rooms.get(stored.current);
  $('members').replaceChildren(...(room?.members ?? []).sort().map((user) => el('li', { 'data-user': user }, user)));
}

function renderOnline(users) {
  $('online').replaceChildren(...[...(users ?? [])].sort().map((user) => el('li', { 'data-user': user }, user)));
}

function renderTyping() {
  const who = [...(typing.get(stored.current)?.keys() ?? [])].sort();
  $('typing').textContent =
    who.length === 0 ? '' : who.length === 1 ? `${who[0]} is typing…` : `${who.join(' and ')} are typing…`;
}

function switchRoom(name) {
  stored.current = name;
  unread.delete(name);
  save();
  renderRooms();
  renderConversation();
  $('composer-input').focus();
}

// ---------------------------------------------------------------------------
// Rooms.

async function joinRoom(name, since = null) {
  if (rooms.has(name)) return switchRoom(name);
  const room = await chat.join(name, { since });
  rooms.set(name, room);
  let recoveredNote = null;
  let recoveredCount = 0;

  room.on('join', (e) => {
    roomState(name).position = toStored(room.position);
    save();
    events.push({ type: 'join', room: name, rejoin: e.rejoin, recovered: e.recovered, since: e.since !== null });
    recoveredNote = null;
    recoveredCount = 0;
    if (e.since === null) return;
    if (e.recovered) {
      recoveredNote = { note: 'back: no missed messages' };
      addLine(name, recoveredNote);
    } else {
      addLine(name, { note: 'back, but missed messages could not be recovered (history is gone)', warn: true });
    }
  });

  room.on('message', (m) => {
    const key = `${m.epoch}:${m.seq}`;
    events.push({ type: 'message', room: name, from: m.from, text: m.text, seq: Number(m.seq), replayed: m.replayed });
    roomState(name).position = toStored(room.position);
    if (roomState(name).lines.some((line) => line.key === key)) return save();
    if (m.replayed && recoveredNote) {
      recoveredCount += 1;
      recoveredNote.note = `back: ${recoveredCount} missed message${recoveredCount === 1 ? '' : 's'} recovered`;
      if (name === stored.current) renderConversation();
    }
    addLine(name, { key, from: m.from, text: m.text, ts: Number(m.ts), replayed: m.replayed || undefined });
    lastMessageAt.set(`${name}\n${m.from}`, Date.now());
    stopTyping(name, m.from);
  });

  room.on('presence', (e) => {
    events.push({ type: 'presence', room: name, kind: e.kind, user: e.user ?? null });
    if (name === stored.current) renderMembers();
  });

  room.on('volatile', (v) => {
    events.push({ type: 'volatile', room: name, from: v.from, text: v.text });
    if (v.text === 'typing') startTyping(name, v.from);
  });

  room.on('error', (e) => {
    showError(e);
    rooms.delete(name);
    renderRooms();
  });

  roomState(name);
  save();
  renderRooms();
  if (name === stored.current || rooms.size === 1) switchRoom(name);
}

async function leaveCurrentRoom() {
  const name = stored.current;
  const room = rooms.get(name);
  if (!room) return;
  await room.leave();
  rooms.delete(name);
  delete stored.rooms[name];
  stored.current = rooms.keys().next().value ?? DEFAULT_ROOM;
  save();
  renderRooms();
  renderConversation();
}

function startTyping(room, user) {
  if (Date.now() - (lastMessageAt.get(`${room}\n${user}`) ?? 0) < TYPING_AFTER_MESSAGE) return;
  if (!typing.has(room)) typing.set(room, new Map());
  const people = typing.get(room);
  clearTimeout(people.get(user));
  people.set(user, setTimeout(() => stopTyping(room, user), TYPING_SHOW_FOR));
  if (room === stored.current) renderTyping();
}

function stopTyping(room, user) {
  const people = typing.get(room);
  if (!people?.has(user)) return;
  clearTimeout(people.get(user));
  people.delete(user);
  if (room === stored.current) renderTyping();
}

// ---------------------------------------------------------------------------
// Notifications.

function addNotification(n) {
  const id = String(n.id);
  if (document.querySelector(`#notifications li[data-id="${CSS.escape(id)}"]`)) return;
  events.push({ type: 'notification', id, kind: n.kind, text: n.text });
  const button = el('button', { type: 'button', class: 'small ack' }, 'Mark read');
  const item = el(
    'li',
    { 'data-id': id },
    el('span', { class: 'kind' }, n.kind || 'notification'),
    button,
    el('span', { class: 'body' }, n.text),
    el('span', { class: 'time' }, timeOf(n.ts)),
  );
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await n.ack();
      item.remove();
      renderNotificationsEmpty();
    } catch (e) {
      button.disabled = false;
      showError(e);
    }
  });
  $('notifications').prepend(item);
  renderNotificationsEmpty();
}

function renderNotificationsEmpty() {
  $('no-notifications').hidden = $('notifications').children.length > 0;
}

// ---------------------------------------------------------------------------
// Connecting.

/** The status pill of a connected client says which transport it is on. */
function showConnected(client, pill) {
  setStatus(pill, 'connected', `connected · ${TRANSPORT_NAMES[client.transport]}`);
  $(pill).dataset.transport = client.transport;
  if (client === chat) {
    $('transport-note').textContent = client.transport === 'websocket'
      ? 'Messages, “typing…” and notifications travel over one WebSocket per namespace.'
      : 'Messages travel on one stream per room, “typing…” on datagrams, notifications on a second session.';
  }
}

function watchStatus(client, pill) {
  client.on('connect', () => showConnected(client, pill));
  client.on('disconnect', (e) => setStatus(pill, e.willReconnect ? 'reconnecting' : 'closed', e.willReconnect ? 'reconnecting…' : 'closed'));
  client.on('reconnecting', (e) => setStatus(pill, 'reconnecting', `reconnecting (try ${e.attempt})…`));
  client.on('close', (e) => {
    setStatus(pill, 'closed');
    if (e.error) showError(e.error);
  });
  client.on('error', showError);
  showConnected(client, pill);
}

async function enter(name) {
  clearError();
  $('enter').disabled = true;
  try {
    // Validates the name (the server says what is wrong with it) before connecting.
    await fetchJson(`/dev-token?user=${encodeURIComponent(name)}`);
    const cert = await fetchJson('/cert-hash');
    // Functions: called again before every reconnection (fresh token, current certificate).
    const options = {
      token: async () => (await fetchJson(`/dev-token?user=${encodeURIComponent(name)}`)).token,
      serverCertificateHashes: async () => [(await fetchJson('/cert-hash')).hash],
      transports: transportsFromUrl(),
    };
    // The dev server's WebSocket endpoint is on this page's own listener.
    const ws = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
    const [chatResult, notesResult] = await Promise.allSettled([
      connect(`${cert.url}/chat`, { ...options, websocketUrl: `${ws}/chat` }),
      connect(`${cert.url}/notifications`, { ...options, websocketUrl: `${ws}/notifications` }),
    ]);
    if (chatResult.status === 'rejected') {
      if (notesResult.status === 'fulfilled') notesResult.value.close();
      throw chatResult.reason;
    }
    chat = chatResult.value;
    stored.name = name;
    save();
    $('login').hidden = true;
    $('app').hidden = false;
    $('who').hidden = false;
    $('me').textContent = chat.user;
    $('notify-hint').textContent = `wtgate notify --user ${chat.user} --kind mention 'Hello ${chat.user}!'`;

    watchStatus(chat, 'status-chat');
    renderOnline(chat.onlineUsers);
    chat.on('online', (e) => {
      events.push({ type: 'online', kind: e.kind, user: e.user ?? null });
      renderOnline(e.users);
    });

    if (notesResult.status === 'fulfilled') {
      notes = notesResult.value;
      watchStatus(notes, 'status-notifications');
      notes.on('notification', addNotification);
      notes.notifications.forEach(addNotification);
    } else {
      setStatus('status-notifications', 'closed', 'unavailable');
      showError(notesResult.reason);
    }
    renderNotificationsEmpty();

    const saved = Object.entries(stored.rooms);
    const toJoin = saved.length ? saved : [[DEFAULT_ROOM, { position: null }]];
    for (const [room, state] of toJoin) {
      try {
        await joinRoom(room, fromStored(state.position));
      } catch (e) {
        delete stored.rooms[room];
        save();
        showError(e);
      }
    }
    if (!rooms.has(stored.current) && rooms.size) switchRoom(rooms.keys().next().value);
    $('composer-input').focus();
  } catch (e) {
    showError(e);
    $('login').hidden = false;
    $('app').hidden = true;
  } finally {
    $('enter').disabled = false;
  }
}

// ---------------------------------------------------------------------------
// Wiring.

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  enter($('name').value.trim());
});

$('join-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = $('room-input').value.trim();
  if (!name) return;
  try {
    await joinRoom(name);
    switchRoom(name);
    $('room-input').value = '';
  } catch (e) {
    showError(e);
  }
});

$('composer').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('composer-input');
  const text = input.value;
  const room = rooms.get(stored.current);
  if (!text.trim() || !room) return;
  input.value = '';
  try {
    await room.publish(text);
    lastTypingSent = 0;
  } catch (e) {
    input.value = text; // keep what was typed
    showError(e);
  }
});

$('composer-input').addEventListener('input', () => {
  const room = rooms.get(stored.current);
  const now = Date.now();
  if (!room || now - lastTypingSent < TYPING_SEND_EVERY || !$('composer-input').value) return;
  lastTypingSent = now;
  try {
    room.sendVolatile('typing');
  } catch (e) {
    showError(e);
  }
});

$('leave-room').addEventListener('click', () => leaveCurrentRoom().catch(showError));

$('sign-out').addEventListener('click', async () => {
  sessionStorage.removeItem(STORE_KEY);
  await Promise.allSettled([chat?.close(), notes?.close()]);
  location.reload();
});

window.addEventListener('pagehide', () => {
  chat?.close();
  notes?.close();
});

if (transportsFromUrl()?.join() === 'websocket') {
  $('transport-switch').href = location.pathname;
  $('transport-switch').textContent = 'Try WebTransport again';
}

if (stored.name) {
  $('name').value = stored.name;
  enter(stored.name);
} else {
  $('name').focus();
}
