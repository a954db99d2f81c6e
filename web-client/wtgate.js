// wtgate browser client: rooms, presence, history recovery, volatile events and
// notifications over WebTransport, or a WebSocket where WebTransport does not get
// through. Promise-based, in the spirit of socket.io-client.
//
//   import { connect } from './wtgate.js';
//   const chat = await connect('https://localhost:4433/chat', { token, serverCertificateHashes: [hash] });
//   const lobby = await chat.join('lobby');
//   lobby.on('message', (m) => console.log(m.from, m.text));
//   const seq = await lobby.publish('hello');
//
// Layers: protocol.js (frames, bytes) ← session.js (one session: requests, rooms,
// and its WebTransport transport) and websocket.js (its WebSocket transport) ←
// this file (transport choice and fallback, reconnection, rooms, events). Numbers that are u64 on the wire (seq,
// epoch, ts, ids) are numbers when ≤ Number.MAX_SAFE_INTEGER and bigints above.

import { ErrorCode, errorName } from './protocol.js';
import { FATAL_CODES, PERMANENT_CODES, WtgateError, openSession, parseCertificateHashes, toBytes } from './session.js';
import { openWebSocketSession, websocketUrlFor } from './websocket.js';

export { ErrorCode, errorName, PROTOCOL_VERSION } from './protocol.js';
export { MAX_VOLATILE_BODY, WtgateError } from './session.js';

const textDecoder = new TextDecoder();

/** The transports, in the order they are tried. */
const TRANSPORTS = Object.freeze(['webtransport', 'websocket']);
/** Default `webtransportTimeout`: ms for WebTransport to open before falling back. */
const WEBTRANSPORT_TIMEOUT = 1200;
/** Default `webtransportRetry`: ms a fallback is remembered before WebTransport is tried again. */
const WEBTRANSPORT_RETRY = 5 * 60_000;

/**
 * The page's memory of fallbacks, per server (the WebTransport URL's origin): when
 * WebTransport last failed there and a WebSocket worked. While it is younger than
 * `webtransportRetry`, (re)connections to that server go straight to the WebSocket,
 * whichever Client and namespace they are for.
 * @type {Map<string, number>}
 */
const fallbacks = new Map();

/** Whether a failure of WebTransport is worth a WebSocket: anything but the server's refusal. */
const worthFallback = (error) => !(error instanceof WtgateError && error.kind === 'server');

/**
 * One error for a connection attempt that tried several transports: the server's
 * refusal when there is one (it answered), else `unreachable` (or `unsupported`
 * when no transport exists here) saying what each transport said.
 * @param {string} url @param {Array<[string, WtgateError]>} failures
 */
function combinedError(url, failures) {
  if (failures.length === 1) return failures[0][1];
  const refusal = failures.find(([, e]) => e.kind === 'server');
  if (refusal) return refusal[1];
  const kind = failures.every(([, e]) => e.kind === 'unsupported') ? 'unsupported' : 'unreachable';
  const label = { webtransport: 'WebTransport', websocket: 'WebSocket' };
  const message = failures.map(([t, e]) => `${label[t]}: ${e.message}`).join(' — then ');
  return new WtgateError(kind, `cannot connect to ${url} over any transport. ${message}`, { url, cause: failures.at(-1)[1] });
}

/** Received payloads carry `body` (bytes) and a lazily decoded `text` (UTF-8). */
const WITH_TEXT = Object.freeze({
  /** The body decoded as UTF-8 (invalid sequences become U+FFFD). */
  get text() {
    return textDecoder.decode(this.body);
  },
});
const withText = (fields) => Object.freeze(Object.assign(Object.create(WITH_TEXT), fields));

/** Reports an exception thrown by an application listener without stopping the client. */
function reportListenerError(error) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(error);
  else setTimeout(() => { throw error; }, 0);
}

/** Channels whose message is in flight: a strong reference until it is delivered. */
const pendingReleases = new Set();

/**
 * Runs `fn` in a task of its own, after the current task and its microtasks: after
 * the caller of `await connect()` / `await join()` has attached its listeners. A
 * `MessageChannel` message rather than `setTimeout(0)`, because browsers clamp
 * timers in hidden tabs to one a second (Firefox even for `setTimeout(0)`,
 * Chromium for chained timers) while posted messages are not throttled. A
 * microtask would run before the caller's continuation and lose the first events.
 */
function nextTask(fn) {
  if (typeof MessageChannel !== 'function') {
    setTimeout(fn, 0);
    return;
  }
  const channel = new MessageChannel();
  pendingReleases.add(channel);
  channel.port1.onmessage = () => {
    // Closing the port also lets Node (the unit tests) exit: an open port with a
    // listener keeps its event loop alive.
    channel.port1.close();
    pendingReleases.delete(channel);
    fn();
  };
  channel.port2.postMessage(null);
}

/**
 * Calls `wake` when waiting longer is pointless: the page became visible again, or
 * the browser is back online. In a hidden page the backoff's timer fires late (once
 * a second; after five hidden minutes Chrome lets chained timers fire once a
 * minute), so a user coming back to the tab must not wait for it. Returns a
 * function that stops watching. Does nothing outside a browser page.
 */
function watchForWake(wake) {
  const doc = globalThis.document;
  const win = typeof globalThis.addEventListener === 'function' ? globalThis : null;
  const onVisibility = () => doc.visibilityState === 'visible' && wake();
  doc?.addEventListener?.('visibilitychange', onVisibility);
  win?.addEventListener('online', wake);
  return () => {
    doc?.removeEventListener?.('visibilitychange', onVisibility);
    win?.removeEventListener('online', wake);
  };
}

/** A minimal event emitter: `on` returns a function that removes the listener. */
class Emitter {
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();

  /**
   * Adds a listener.
   * @param {string} event
   * @param {(payload: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    if (typeof listener !== 'function') throw new WtgateError('invalid', 'a listener must be a function');
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * Adds a listener called at most once.
   * @param {string} event
   * @param {(payload: any) => void} listener
   * @returns {() => void} removes the listener
   */
  once(event, listener) {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /** Removes a listener. @param {string} event @param {Function} listener */
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  /** @protected @returns {boolean} whether anyone listened */
  emit(event, payload) {
    const set = this.#listeners.get(event);
    if (!set || set.size === 0) return false;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (e) {
        reportListenerError(e);
      }
    }
    return true;
  }
}

const maxU64 = (a, b) => (a >= b ? a : b);

/**
 * A joined room. Get one from {@link Client#join}.
 *
 * Events:
 * - `message`: `{room, epoch, seq, from, body, text, ts, replayed}`: a room message,
 *   in `seq` order; `replayed` is true for messages recovered through `since`;
 * - `presence`: `{kind: 'join'|'leave'|'sync', user?, members}`: a member came or
 *   went (`sync` after every join and rejoin, with the whole list);
 * - `volatile`: `{room, from, body, text}`: a datagram from another member;
 * - `join`: `{rejoin, recovered, epoch, seq, since, members}`: after the first join
 *   and after each rejoin; `recovered: false` after a `since` means messages were
 *   missed and could not be replayed: reload the room's state from your application;
 * - `error`: a {@link WtgateError}, e.g. a rejoin the server refused (the room is then left).
 */
export class Room extends Emitter {
  /** The room name. @type {string} */
  name;
  /** The room's current life (`Joined.epoch`); `seq` numbers count within it. @type {number|bigint|null} */
  epoch = null;
  /** Highest `seq` delivered in this epoch (or skipped over after `recovered: false`). @type {number|bigint} */
  lastSeq = 0;
  /** Whether the last (re)join replayed everything after `since`. */
  recovered = false;
  /** The room's handle in the current session, or null while not joined. @type {number|null} */
  handle = null;

  #client;
  /** @type {'joining'|'joined'|'rejoining'|'left'} */
  #state = 'joining';
  #members = new Set();
  #generation = 0;
  #holding = true;
  #held = [];
  #replayUpTo = -1;

  /** @private Use Client#join. */
  constructor(client, name, since) {
    super();
    this.#client = client;
    this.name = name;
    if (since !== undefined && since !== null) {
      this.epoch = since.epoch;
      this.lastSeq = since.seq;
    }
  }

  /**
   * Where this client is in the room: pass it as `since` to a later `join` (e.g.
   * after a page reload) to be replayed what was missed. Null before the first join.
   * @returns {{epoch: number|bigint, seq: number|bigint} | null}
   */
  get position() {
    return this.epoch === null ? null : { epoch: this.epoch, seq: this.lastSeq };
  }

  /** `'joining'`, `'joined'`, `'rejoining'` (while the client reconnects) or `'left'`. */
  get state() {
    return this.#state;
  }

  /** The room's users (presence), as last known. @returns {string[]} */
  get members() {
    return [...this.#members];
  }

  /**
   * Publishes a message to the room; resolves with its `seq` once the server has it.
   * @param {string | Uint8Array | ArrayBuffer} body strings are sent as UTF-8
   * @returns {Promise<number|bigint>}
   * @throws {WtgateError} `disconnected` while reconnecting, `server` (e.g. RateLimited), `invalid`
   */
  async publish(body) {
    const bytes = toBytes(body);
    return this.#client._session(this, 'publish').publish(this.name, bytes);
  }

  /**
   * Sends a volatile event (typing, cursor…) to the other members, as a datagram:
   * not acknowledged, not stored, may be lost. Returns false when not sent because
   * the room is not joined right now (e.g. while reconnecting).
   * @param {string | Uint8Array | ArrayBuffer} body at most 1024 bytes
   * @returns {boolean}
   * @throws {WtgateError} `invalid` when the body is too large
   */
  sendVolatile(body) {
    const bytes = toBytes(body);
    const session = this.#client._currentSession();
    if (this.#state !== 'joined' || session === null) return false;
    return session.sendVolatile(this.name, bytes);
  }

  /**
   * Leaves the room. No more events are emitted for it.
   * @returns {Promise<void>}
   */
  async leave() {
    if (this.#state === 'left') return;
    const session = this.#client._currentSession();
    const wasJoined = this.#state === 'joined';
    this.#markLeft();
    if (wasJoined && session !== null) {
      try {
        await session.leave(this.name);
      } catch (e) {
        // Disconnected meanwhile: the server has dropped the membership anyway.
        if (!(e instanceof WtgateError && e.kind === 'disconnected')) throw e;
      }
    }
  }

  #markLeft() {
    this.#state = 'left';
    this.#generation++;
    this.handle = null;
    this.#held = [];
    this.#client._forget(this);
  }

  /**
   * @internal Joins (or rejoins) on `session`, with `since` for recovery.
   * Events of the room stream are held until the caller has had the chance to
   * attach listeners, then delivered after the `join` event.
   */
  async _attach(session, since, rejoin) {
    const generation = ++this.#generation;
    this.#state = rejoin ? 'rejoining' : 'joining';
    this.#holding = true;
    this.#held = [];
    const current = () => generation === this.#generation;
    const sink = {
      onFrame: (frame) => current() && this.#onFrame(frame),
      onVolatile: (from, body) => current() && !this.#holding && this.emit('volatile', withText({ room: this.name, from, body })),
      onEnd: (error) => current() && this.#onEnd(error, session),
    };
    const reply = await session.join(this.name, since, sink);
    if (!current()) {
      // Left while the join was on its way: undo it on the server.
      if (this.#state === 'left') session.leave(this.name).catch(() => {});
      return;
    }
    this.handle = reply.handle;
    this.recovered = reply.recovered;
    // Recovered: the replay continues from since.seq. Otherwise the gap (or a new
    // life of the room) is accepted, and counting restarts at Joined.seq.
    if (!reply.recovered) this.lastSeq = reply.seq;
    this.epoch = reply.epoch;
    this.#replayUpTo = since === null ? -1 : reply.seq;
    this.#members = new Set(reply.members);
    this.#state = 'joined';
    nextTask(() => {
      if (!current()) return;
      this.emit('join', { rejoin, recovered: reply.recovered, epoch: reply.epoch, seq: reply.seq, since, members: this.members });
      this.emit('presence', { kind: 'sync', members: this.members });
      this.#holding = false;
      const held = this.#held;
      this.#held = [];
      for (const frame of held) this.#deliver(frame);
    });
  }

  /** @internal The session is gone; wait for the rejoin. */
  _suspend() {
    if (this.#state === 'left') return;
    this.#generation++;
    this.#state = 'rejoining';
    this.handle = null;
    this.#held = [];
  }

  /** @internal A rejoin was refused: the room is left. */
  _fail(error) {
    this.#markLeft();
    const wrapped = new WtgateError(error.kind ?? 'server', `rejoining room ${this.name} failed: ${error.message}`, { code: error.code, cause: error });
    if (!this.emit('error', wrapped)) this.#client._reportError(wrapped);
  }

  #onFrame(frame) {
    if (this.#holding) this.#held.push(frame);
    else this.#deliver(frame);
  }

  #deliver(frame) {
    switch (frame.type) {
      case 'Message': {
        this.lastSeq = maxU64(this.lastSeq, frame.seq);
        const replayed = this.#replayUpTo !== -1 && frame.seq <= this.#replayUpTo;
        this.emit('message', withText({ room: this.name, epoch: this.epoch, seq: frame.seq, from: frame.from, body: frame.body, ts: frame.ts, replayed }));
        break;
      }
      case 'PresenceJoin':
        if (!this.#members.has(frame.user)) {
          this.#members.add(frame.user);
          this.emit('presence', { kind: 'join', user: frame.user, members: this.members });
        }
        break;
      case 'PresenceLeave':
        if (this.#members.delete(frame.user)) {
          this.emit('presence', { kind: 'leave', user: frame.user, members: this.members });
        }
        break;
      case 'PresenceBatch':
        // A churning room's changes, sent together: the same events, one per user.
        for (const user of frame.leaves) this.#deliver({ type: 'PresenceLeave', user });
        for (const user of frame.joins) this.#deliver({ type: 'PresenceJoin', user });
        break;
    }
  }

  #onEnd(error, session) {
    if (session.closed || this.#state === 'left') return; // a disconnect: the client rejoins
    // The server finished or reset the stream of a room we did not leave.
    const why = error ? error.message : 'the server ended the room stream';
    this.#markLeft();
    const e = new WtgateError('closed', `room ${this.name} was closed: ${why}`, { cause: error ?? undefined });
    if (!this.emit('error', e)) this.#client._reportError(e);
  }
}

/**
 * @typedef {string | Uint8Array | {algorithm: string, value: BufferSource}} CertificateHash
 */

/**
 * @typedef {object} ConnectOptions
 * @property {string | (() => string | Promise<string>)} token HS256 token, or a function
 *   called before every (re)connection (to refresh expired tokens)
 * @property {CertificateHash[] | (() => CertificateHash[] | Promise<CertificateHash[]>)} [serverCertificateHashes]
 *   SHA-256 hashes of a self-signed certificate (hex); a function is called before
 *   every (re)connection, so a rotated certificate is picked up (WebTransport only)
 * @property {boolean | {initialDelay?: number, maxDelay?: number, maxAttempts?: number}} [reconnect]
 *   automatic reconnection (default on: 250 ms doubling up to 10 s, with jitter, forever)
 * @property {number} [timeout] ms to wait for a session and its `Welcome` (default 10 000)
 * @property {Array<'webtransport'|'websocket'>} [transports] the transports to use, in
 *   order (default both: WebTransport, then a WebSocket when it fails)
 * @property {number} [webtransportTimeout] ms WebTransport has to open before the
 *   WebSocket is tried (default 1200; only when a WebSocket may follow)
 * @property {number} [webtransportRetry] ms a fallback to the WebSocket is remembered
 *   for the server before WebTransport is tried again (default 5 minutes)
 * @property {string} [websocketUrl] the WebSocket URL (default: `url` with `wss:`)
 */

/**
 * A connection to one namespace (`https://host:port/chat`), reconnecting on its own,
 * over WebTransport or a WebSocket (`transport`).
 * Get one from {@link connect}.
 *
 * Events:
 * - `connect`: `{user, session, reconnect, transport}` after every (re)connection;
 * - `disconnect`: `{code, reason, error, willReconnect}` when a session ends;
 * - `reconnecting`: `{attempt, delay, error}` before each reconnection attempt;
 * - `close`: `{code, reason, error}` once, when the client is closed for good
 *   (by `close()`, or because reconnecting cannot succeed, e.g. Unauthorized);
 * - `online`: `{kind: 'join'|'leave'|'sync', user?, users}`: who is online in the namespace;
 * - `broadcast`: `{from, body, text, ts}`: a namespace-wide push;
 * - `notification`: `{id, kind, body, text, ts, ack()}`: from the user's inbox
 *   (`/notifications` namespace); redelivered until acknowledged, duplicates dropped;
 * - `goaway`: `{message}`: the server is shutting down; the client will reconnect;
 * - `error`: a {@link WtgateError} that is not the answer to a call (logged with
 *   console.error when nobody listens).
 */
export class Client extends Emitter {
  /** The URL of the namespace. @type {string} */
  url;
  /** The user id (the token's `sub`), from the last `Welcome`. @type {string} */
  user = '';
  /** The server's id for the current session. @type {number|bigint|null} */
  sessionId = null;
  /** The transport of the current (or last) session. @type {'webtransport'|'websocket'} */
  transport = 'webtransport';
  /** The URL a WebSocket session uses. @type {string} */
  websocketUrl;

  #options;
  /** @type {import('./session.js').Session | null} */
  #session = null;
  /** The automatic token refresh's timer. */
  #refreshTimer = undefined;
  /** The token the current session was opened with. */
  #token = null;
  /** @type {'connecting'|'connected'|'reconnecting'|'closed'} */
  #state = 'connecting';
  /** @type {Map<string, Room>} */
  #rooms = new Map();
  /** @type {Set<string> | null} */
  #online = null;
  /** Pending (unacknowledged) notifications by id. */
  #inbox = new Map();
  /** Ids already delivered, to drop redeliveries (bounded). */
  #seen = new Set();
  #wake = null;
  #closeInfo = null;

  /** @private Use connect(). */
  constructor(url, options) {
    super();
    this.url = url;
    this.#options = options;
    this.websocketUrl = options.websocketUrl ?? websocketUrlFor(url);
  }

  /** `'connecting'`, `'connected'`, `'reconnecting'` or `'closed'`. */
  get state() {
    return this.#state;
  }

  /** Users online in the namespace as last known, or null where namespace presence is off. @returns {string[] | null} */
  get onlineUsers() {
    return this.#online === null ? null : [...this.#online];
  }

  /** The joined rooms. @returns {Room[]} */
  get rooms() {
    return [...this.#rooms.values()];
  }

  /** Notifications received and not yet acknowledged, oldest first. */
  get notifications() {
    return [...this.#inbox.values()];
  }

  /**
   * Joins a room (joining a room already joined returns its Room). Listeners added
   * right after `await join()` receive every event, including replayed messages.
   * @param {string} name
   * @param {{since?: {epoch: number | bigint, seq: number | bigint} | null}} [options]
   *   `since`: the room's `position` from an earlier visit (e.g. kept in
   *   sessionStorage across a page reload), to be replayed what was missed
   * @returns {Promise<Room>}
   * @throws {WtgateError} `server` (InvalidRoom, Forbidden, TooManyRooms…), `disconnected`
   */
  async join(name, options = {}) {
    if (typeof name !== 'string' || name.length === 0) throw new WtgateError('invalid', 'a room name must be a non-empty string');
    const existing = this.#rooms.get(name);
    if (existing) return existing;
    const session = this.#requireSession(`join ${name}`);
    const room = new Room(this, name, options.since);
    this.#rooms.set(name, room);
    try {
      await room._attach(session, options.since ?? null, false);
    } catch (e) {
      if (this.#rooms.get(name) === room) this.#rooms.delete(name);
      throw e;
    }
    return room;
  }

  /** The joined room called `name`, if any. @param {string} name @returns {Room | undefined} */
  room(name) {
    return this.#rooms.get(name);
  }

  /**
   * Asks the server who is online in the namespace.
   * @returns {Promise<string[]>}
   */
  async fetchOnline() {
    return this.#requireSession('ask who is online').online();
  }

  /**
   * Calls `method` on the namespace's backend (its RPC hook) through the session,
   * as `await client.rpc('history.search', { q: 'hi' })`. `data` is sent as JSON
   * (a string or bytes as they are); resolves with the backend's reply parsed as
   * JSON, or its bytes when it is not JSON. Rejects with a `server` error carrying
   * the backend's code (`Rejected`, `BackendUnavailable`, or its own 1000–4999).
   * @param {string} method
   * @param {unknown} [data]
   * @returns {Promise<unknown>}
   */
  async rpc(method, data = null) {
    if (typeof method !== 'string' || method.length === 0) throw new WtgateError('invalid', 'rpc() needs a method name');
    const body = typeof data === 'string' || data instanceof Uint8Array || data instanceof ArrayBuffer ? toBytes(data) : toBytes(JSON.stringify(data));
    const reply = await this.#requireSession(`call ${method}`).rpc(method, body);
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(reply));
    } catch {
      return reply;
    }
  }

  /** What the namespace's connect hook attached to the current session, as JSON (or bytes), or null. @returns {unknown} */
  get connectData() {
    const data = this.#session?.connectData ?? null;
    if (data === null) return null;
    try {
      return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data));
    } catch {
      return data;
    }
  }

  /**
   * Acknowledges a notification: the server removes it from the user's inbox.
   * @param {number | bigint} id
   * @returns {Promise<void>}
   */
  async ack(id) {
    await this.#requireSession(`acknowledge notification ${id}`).ackNotification(id);
    this.#inbox.delete(String(id));
  }

  /**
   * Replaces the session's token before it expires (the server closes a session
   * whose token expired with `TokenExpired`). Without an argument, calls the
   * `token` function given to `connect()`. When `token` is a function the client
   * does this by itself a minute (at most a tenth of the token's life) before `exp`.
   * @param {string} [token]
   * @returns {Promise<void>}
   */
  async refresh(token) {
    const session = this.#requireSession('refresh the token');
    const value = token ?? (typeof this.#options.token === 'function' ? await this.#options.token() : null);
    if (typeof value !== 'string') throw new WtgateError('invalid', 'refresh() needs a token, or connect() a token function');
    await session.refresh(value);
    if (this.#session === session) this.#scheduleRefresh(session, value);
  }

  /** Plans the next automatic refresh from the token's `exp` (token functions only). */
  #scheduleRefresh(session, token) {
    clearTimeout(this.#refreshTimer);
    if (typeof this.#options.token !== 'function') return;
    const exp = tokenExpiry(token);
    if (exp === null) return;
    const left = exp * 1000 - Date.now();
    const margin = Math.min(60_000, left / 10);
    this.#refreshTimer = setTimeout(() => {
      if (this.#session !== session) return;
      this.refresh().catch((error) => this._reportError(error));
    }, Math.max(0, left - margin));
  }

  /**
   * Closes the client for good: leaves every room, ends the session, stops reconnecting.
   * @returns {Promise<void>} resolves once the session is closed
   */
  async close() {
    if (this.#state === 'closed') return;
    const session = this.#session;
    this.#finish({ code: 0, reason: 'closed by the client', error: null });
    if (session) {
      session.close();
      await Promise.race([session.ended, new Promise((r) => setTimeout(r, 2000))]);
    }
  }

  // -------------------------------------------------------------------------
  // For Room and connect(); not part of the public API.

  /** @internal */
  _currentSession() {
    return this.#session;
  }

  /** @internal The session for a room command, if the room is usable now. */
  _session(room, what) {
    if (room.state === 'left') throw new WtgateError('invalid', `cannot ${what} in room ${room.name}: it was left`);
    if (room.state !== 'joined') throw new WtgateError('disconnected', `cannot ${what} in room ${room.name} now: it is ${room.state} (the client is ${this.#state})`);
    return this.#requireSession(`${what} in room ${room.name}`);
  }

  /** @internal */
  _forget(room) {
    if (this.#rooms.get(room.name) === room) this.#rooms.delete(room.name);
  }

  /** @internal */
  _reportError(error) {
    if (!this.emit('error', error)) console.error('wtgate:', error);
  }

  /** @internal Opens the first session; rejects when it fails. */
  async _start() {
    this.#install(await this.#open(), false);
  }

  #requireSession(what) {
    if (this.#session === null) {
      throw new WtgateError('disconnected', `cannot ${what}: the client is ${this.#state}`, { url: this.url });
    }
    return this.#session;
  }

  /**
   * The transports to try now, in order: both, or only the WebSocket while a
   * fallback to it is remembered for this server (see `webtransportRetry`).
   */
  #plan() {
    const transports = this.#options.transports ?? TRANSPORTS;
    if (transports.length < 2) return transports;
    const failedAt = fallbacks.get(new URL(this.url).origin);
    const retry = this.#options.webtransportRetry ?? WEBTRANSPORT_RETRY;
    if (failedAt !== undefined && Date.now() - failedAt < retry) return transports.filter((t) => t !== 'webtransport');
    return transports;
  }

  async #open() {
    const { token, serverCertificateHashes, timeout } = this.#options;
    const tokenValue = typeof token === 'function' ? await token() : token;
    if (typeof tokenValue !== 'string') throw new WtgateError('invalid', 'the token must be a string (or a function returning one)');
    this.#token = tokenValue;
    const handlers = {
      onEvent: (frame) => this.#onEvent(frame),
      onClosed: (info) => this.#onClosed(info),
      onError: (error) => this._reportError(error),
    };
    const plan = this.#plan();
    const origin = new URL(this.url).origin;
    /** @type {Array<[string, WtgateError]>} */
    const failures = [];
    for (const [i, transport] of plan.entries()) {
      const last = i === plan.length - 1;
      // Hashes (WebTransport only) that cannot be had or parsed are the caller's
      // problem, not the transport's: they fail the attempt without a fallback.
      let hashes = null;
      if (transport === 'webtransport') {
        const given = typeof serverCertificateHashes === 'function' ? await serverCertificateHashes() : serverCertificateHashes;
        hashes = parseCertificateHashes(given ?? []);
      }
      try {
        let session;
        if (transport === 'webtransport') {
          const readyTimeout = last ? undefined : (this.#options.webtransportTimeout ?? WEBTRANSPORT_TIMEOUT);
          session = await openSession(this.url, { token: tokenValue, serverCertificateHashes: hashes, timeout, readyTimeout }, handlers);
          fallbacks.delete(origin);
        } else {
          session = await openWebSocketSession(this.websocketUrl, { token: tokenValue, timeout }, handlers);
          if (failures.some(([t]) => t === 'webtransport')) fallbacks.set(origin, Date.now());
        }
        return session;
      } catch (e) {
        failures.push([transport, e]);
        if (last || !worthFallback(e)) break;
      }
    }
    throw combinedError(this.url, failures);
  }

  #install(session, reconnect) {
    this.#session = session;
    this.transport = session.transportName;
    this.#scheduleRefresh(session, this.#token);
    this.#state = 'connected';
    this.user = session.welcome.user;
    this.sessionId = session.welcome.session;
    this.#online = session.welcome.online === null ? null : new Set(session.welcome.online);
    // After the caller of connect() has attached its listeners: `connect` and the
    // online list first, then the session's own events.
    nextTask(() => {
      if (this.#session !== session) return;
      this.emit('connect', { user: this.user, session: this.sessionId, reconnect, transport: session.transportName });
      if (this.#online !== null) this.emit('online', { kind: 'sync', users: this.onlineUsers });
      session.start();
    });
  }

  #onEvent(frame) {
    switch (frame.type) {
      case 'OnlineJoin':
      case 'OnlineLeave': {
        if (this.#online === null) this.#online = new Set();
        const joined = frame.type === 'OnlineJoin';
        const changed = joined ? !this.#online.has(frame.user) : this.#online.has(frame.user);
        if (joined) this.#online.add(frame.user);
        else this.#online.delete(frame.user);
        if (changed) this.emit('online', { kind: joined ? 'join' : 'leave', user: frame.user, users: this.onlineUsers });
        break;
      }
      case 'Broadcast':
        this.emit('broadcast', withText({ from: frame.from, body: frame.body, ts: frame.ts }));
        break;
      case 'Notification': {
        const key = String(frame.id);
        if (this.#seen.has(key)) break;
        this.#seen.add(key);
        if (this.#seen.size > 10_000) this.#seen.delete(this.#seen.values().next().value);
        const id = frame.id;
        const notification = withText({ id, kind: frame.kind, body: frame.body, ts: frame.ts, ack: () => this.ack(id) });
        this.#inbox.set(key, notification);
        this.emit('notification', notification);
        break;
      }
      case 'GoAway':
        this.emit('goaway', { message: frame.message });
        break;
      case 'Error': {
        // Not tied to a request: fatal ones are followed by the close, which reports them.
        if (!FATAL_CODES.has(frame.code)) this._reportError(new WtgateError('server', `${errorName(frame.code)}: ${frame.message}`, { code: frame.code, url: this.url }));
        break;
      }
      default:
        this._reportError(new WtgateError('protocol', `unexpected ${frame.type} on the control stream`, { url: this.url }));
    }
  }

  #onClosed({ code, reason, error, byClient }) {
    if (this.#session !== null && this.#session.closed) this.#session = null;
    if (byClient || this.#state === 'closed') return;
    for (const room of this.#rooms.values()) room._suspend();
    const reconnect = this.#options.reconnect ?? true;
    const permanent = code !== null && PERMANENT_CODES.has(code);
    const willReconnect = reconnect !== false && !permanent;
    this.emit('disconnect', { code, reason, error, willReconnect });
    if (!willReconnect) {
      this.#finish({ code, reason, error });
      return;
    }
    this.#reconnect(error);
  }

  async #reconnect(lastError) {
    const settings = typeof this.#options.reconnect === 'object' ? this.#options.reconnect : {};
    const initial = settings.initialDelay ?? 250;
    const max = settings.maxDelay ?? 10_000;
    const attempts = settings.maxAttempts ?? Infinity;
    this.#state = 'reconnecting';
    for (let attempt = 1; this.#state === 'reconnecting'; attempt++) {
      // Exponential backoff with jitter: between half and all of the nominal delay.
      const nominal = Math.min(max, initial * 2 ** Math.min(attempt - 1, 30));
      const delay = Math.round(nominal / 2 + (Math.random() * nominal) / 2);
      this.emit('reconnecting', { attempt, delay, error: lastError });
      await new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          stopWatching();
          resolve();
        };
        const timer = setTimeout(done, delay);
        const stopWatching = watchForWake(done);
        this.#wake = done;
      });
      this.#wake = null;
      if (this.#state !== 'reconnecting') return;
      let session;
      try {
        session = await this.#open();
      } catch (e) {
        lastError = e;
        const permanent = e.kind === 'unsupported' || e.kind === 'invalid' || (e.kind === 'server' && PERMANENT_CODES.has(e.code));
        if (permanent || attempt >= attempts) {
          this.#finish({ code: e.code ?? null, reason: e.message, error: e });
          return;
        }
        continue;
      }
      if (this.#state !== 'reconnecting') {
        session.close();
        return;
      }
      this.#install(session, true);
      await Promise.all(this.rooms.map((room) => this.#rejoin(room, session)));
      return;
    }
  }

  async #rejoin(room, session) {
    try {
      await room._attach(session, room.position, true);
    } catch (e) {
      // A session that died meanwhile triggers the next reconnection; anything
      // else (e.g. the token no longer allows the room) leaves the room.
      if (session.closed || (e instanceof WtgateError && e.kind === 'disconnected')) return;
      room._fail(e);
    }
  }

  #finish(info) {
    clearTimeout(this.#refreshTimer);
    this.#state = 'closed';
    this.#closeInfo = info;
    this.#session = null;
    this.#wake?.();
    for (const room of this.rooms) room._suspend();
    this.#rooms.clear();
    this.emit('close', info);
    if (info.error && !this.emit('error', info.error) && info.code !== 0) console.error('wtgate:', info.error);
  }
}

/**
 * Connects to a namespace: opens a WebTransport session to `url` (or a WebSocket
 * when WebTransport is missing, fails or has not opened within
 * `webtransportTimeout`: see `transports`), authenticates with `token`, and
 * resolves once the server has welcomed the client. Later disconnections are
 * repaired automatically (see `reconnect`), rooms rejoined with `since`.
 *
 * ```js
 * const chat = await connect('https://localhost:4433/chat', {
 *   token,                                   // from your backend
 *   serverCertificateHashes: [certHashHex],  // development certificates only
 * });
 * ```
 * @param {string} url `https://host:port/namespace`
 * @param {ConnectOptions} options
 * @returns {Promise<Client>}
 * @throws {WtgateError} `unsupported` (no transport), `unreachable` (says what
 *   was tried, over each transport), `server` with `code` (e.g. `ErrorCode.Unauthorized` for a bad
 *   token), `invalid` (bad options)
 */
/**
 * The `exp` (unix seconds) of a JWT, or null when it has none or cannot be read
 * (the server checks tokens; this only times the refresh).
 * @param {string} token
 * @returns {number | null}
 */
function tokenExpiry(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '='))).exp;
    return Number.isFinite(exp) ? exp : null;
  } catch {
    return null;
  }
}

/** Refuses transport options that cannot work, before anything is tried. */
function checkTransportOptions(options) {
  const { transports, webtransportTimeout, webtransportRetry, websocketUrl } = options;
  if (transports !== undefined) {
    const known = Array.isArray(transports) && transports.length > 0 && transports.every((t) => TRANSPORTS.includes(t));
    if (!known || new Set(transports).size !== transports.length) {
      throw new WtgateError('invalid', `transports must list 'webtransport' and/or 'websocket' once each, got ${JSON.stringify(transports)}`);
    }
  }
  for (const [name, value] of [['webtransportTimeout', webtransportTimeout], ['webtransportRetry', webtransportRetry]]) {
    if (value !== undefined && !(typeof value === 'number' && value >= 0 && Number.isFinite(value))) {
      throw new WtgateError('invalid', `${name} must be a number of milliseconds, got ${JSON.stringify(value)}`);
    }
  }
  if (websocketUrl !== undefined && (typeof websocketUrl !== 'string' || !/^wss?:\/\//.test(websocketUrl))) {
    throw new WtgateError('invalid', `websocketUrl must be ws://… or wss://…, got ${JSON.stringify(websocketUrl)}`);
  }
}

export async function connect(url, options) {
  if (typeof url !== 'string' || !/^https:\/\//.test(url)) {
    throw new WtgateError('invalid', `the URL must be https://host:port/namespace, got ${JSON.stringify(url)}`);
  }
  if (!options || (typeof options.token !== 'string' && typeof options.token !== 'function')) {
    throw new WtgateError('invalid', 'connect() needs options.token (a string or a function returning one)');
  }
  checkTransportOptions(options);
  const client = new Client(url, options);
  await client._start();
  return client;
}
