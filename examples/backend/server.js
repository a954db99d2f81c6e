// An application backend for wtgate's hooks and webhooks, in plain node:http —
// the place where a NestJS gateway's handlers go (see README "Coming from NestJS").
//
//   handleConnection            → POST /wtgate/connect   (attach a display name)
//   @SubscribeMessage('joinRoom') → POST /wtgate/join    (who may join what)
//   @SubscribeMessage('message')  → POST /wtgate/publish (validate, store, enrich)
//   request/response messages   → POST /wtgate/rpc       (history.search)
//   handleDisconnect, presence  → POST /webhooks         (signed events)
//   sendNotification(userId, …) → wtgate's server API: POST /notify (not here)
//
// Run: WTGATE_HOOK_SECRET=… node examples/backend/server.js
// Env: PORT (default 3000; 0 picks one), HOST (127.0.0.1), WTGATE_HOOK_SECRET
// (else WTGATE_SECRET: wtgate signs with its token secret without --hook-secret),
// DATA_FILE (messages, default ./chat-messages.json). No npm packages needed.
//
// wtgate's configuration for it:
//   [namespaces.chat.hooks]
//   url = "http://127.0.0.1:3000/wtgate"
//   connect = true
//   join = true
//   publish = true
//   rpc = true
//   [webhooks]
//   url = "http://127.0.0.1:3000/webhooks"

import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync, writeFileSync, renameSync } from 'node:fs';
import { createServer } from 'node:http';

const SECRET = process.env.WTGATE_HOOK_SECRET || process.env.WTGATE_SECRET;
if (!SECRET) {
  console.error('set WTGATE_HOOK_SECRET (or WTGATE_SECRET): the key wtgate signs its calls with');
  process.exit(1);
}
const PORT = Number(process.env.PORT ?? 3000);
const HOST = process.env.HOST ?? '127.0.0.1';
const DATA_FILE = process.env.DATA_FILE ?? 'chat-messages.json';
/** Largest request body read, bytes. */
const MAX_BODY = 1 << 20;
/** How far a signature's timestamp may be from now, seconds (replays are refused). */
const TOLERANCE = 300;

const BANNED_WORDS = ['darn', 'heck'];
const DISPLAY_NAMES = { alice: 'Alice Liddell', bob: 'Bob the Builder' };

// ---------------------------------------------------------------------------
// Storage: one JSON file, written whole (atomically) after every message.

/** @type {Array<{id: number, room: string, user: string, name: string, text: string, ts: number}>} */
let messages = [];
try {
  messages = JSON.parse(readFileSync(DATA_FILE, 'utf8'));
} catch {
  // A new file.
}

function store(message) {
  messages.push(message);
  writeFileSync(`${DATA_FILE}.tmp`, JSON.stringify(messages));
  renameSync(`${DATA_FILE}.tmp`, DATA_FILE);
}

/** Webhook events received (deduplicated by id: delivery is at least once). */
const events = new Map();

// ---------------------------------------------------------------------------
// Signatures: `X-Wtgate-Signature: t=<unix secs>,v1=<hex HMAC-SHA256 of "t.body">`.

function verify(header, body) {
  const parts = Object.fromEntries(String(header ?? '').split(',').map((p) => p.split('=', 2)));
  const t = Number(parts.t);
  if (!Number.isInteger(t) || !/^[0-9a-f]{64}$/.test(parts.v1 ?? '')) return false;
  if (Math.abs(Date.now() / 1000 - t) > TOLERANCE) return false;
  const expected = createHmac('sha256', SECRET).update(`${t}.`).update(body).digest();
  return timingSafeEqual(expected, Buffer.from(parts.v1, 'hex'));
}

// ---------------------------------------------------------------------------
// The handlers. Each gets the parsed request ({namespace, user, session, …}) and
// returns the reply object; `refuse()` makes the client's call fail.

const refuse = (message, code) => ({ error: { message, ...(code ? { code } : {}) } });
const nameOf = (user) => DISPLAY_NAMES[user] ?? user;

const hooks = {
  // handleConnection: refuse, or attach data the client gets before Welcome.
  connect({ user }) {
    if (user === 'mallory') return refuse('mallory is banned', 4003);
    return { data: { name: nameOf(user) } };
  },

  // Who may join what; a room may also be joined without its history.
  join({ user, room }) {
    if (room.startsWith('admin-') && user !== 'admin') return refuse(`${room} is for admins`);
    if (room.startsWith('ephemeral-')) return { history: false };
    return {};
  },

  // @SubscribeMessage('message'): validate, store, enrich what members receive.
  publish({ user, room, data }) {
    const text = typeof data?.text === 'string' ? data.text : null;
    if (text === null) return refuse('a message is {"text": "…"}', 4000);
    const lower = text.toLowerCase();
    const banned = BANNED_WORDS.find((w) => lower.includes(w));
    if (banned) return refuse(`"${banned}" is not allowed here`, 4001);
    const message = { id: messages.length + 1, room, user, name: nameOf(user), text, ts: Date.now() };
    store(message);
    return { data: { text, name: message.name, id: message.id } };
  },

  // Request/response: `await client.rpc('history.search', {room, q})`.
  rpc({ user, method, data }) {
    switch (method) {
      case 'history.search': {
        const q = String(data?.q ?? '').toLowerCase();
        const hits = messages.filter((m) => (!data?.room || m.room === data.room) && m.text.toLowerCase().includes(q));
        return { data: { hits: hits.slice(-(Number(data?.limit) || 20)) } };
      }
      case 'whoami':
        return { data: { user, name: nameOf(user) } };
      default:
        return refuse(`no method ${method}`, 4004);
    }
  },
};

// handleDisconnect and friends: what happened, at least once.
function webhook(event) {
  if (events.has(event.id)) return; // a redelivery
  events.set(event.id, event);
  console.log(`webhook ${event.type} ${event.user}${event.room ? ` ${event.room}` : ''}`);
}

// ---------------------------------------------------------------------------
// HTTP.

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res, status, object) {
  const body = JSON.stringify(object);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, 'http://backend');
    if (req.method === 'GET' && url.pathname === '/events') {
      return send(res, 200, [...events.values()]);
    }
    if (req.method !== 'POST') return send(res, 405, {});
    const body = await readBody(req);
    if (!verify(req.headers['x-wtgate-signature'], body)) return send(res, 401, { error: 'bad signature' });
    const request = JSON.parse(body.toString('utf8'));
    if (url.pathname === '/webhooks') {
      webhook(request);
      return send(res, 200, {});
    }
    const hook = url.pathname.startsWith('/wtgate/') && hooks[url.pathname.slice('/wtgate/'.length)];
    if (!hook) return send(res, 404, {});
    return send(res, 200, hook(request));
  } catch (e) {
    return send(res, 500, { error: String(e?.message ?? e) });
  }
});
// Keep-alive: wtgate reuses its connections.
server.keepAliveTimeout = 65_000;
server.listen(PORT, HOST, () => {
  console.log(`listening on http://${HOST}:${server.address().port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));
