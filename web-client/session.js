// One WebTransport session on one namespace: the control stream, the room streams
// the server opens, datagrams, and requests matched to replies by `req`.
//
// Mirrors `src/client/mod.rs`; reconnection and the public API live in wtgate.js.
// A Session is single-use: once closed, the caller opens a new one.

import {
  CodecError,
  ErrorCode,
  FrameDecoder,
  MAX_SERVER_FRAME,
  ONLINE_PAGE,
  PROBE_AFTER_MS,
  PROBE_DATAGRAM,
  PROTOCOL_VERSION,
  decodeDatagram,
  decodeServerFrame,
  encodeClientFrame,
  encodeDatagram,
  errorName,
  readLengthPrefix,
} from './protocol.js';

/** Largest volatile body the server relays (`max_datagram_body`, PROTOCOL.md §10; Rust's `protocol::MAX_DATAGRAM_BODY`). */
export const MAX_VOLATILE_BODY = 1024;

/** The frames a room stream carries after its `RoomStream` header. */
const ROOM_FRAMES = new Set(['Message', 'PresenceJoin', 'PresenceLeave', 'PresenceBatch']);

/** Codes after which the server closes the session (`ErrorCode::is_fatal` in Rust). */
export const FATAL_CODES = new Set([
  ErrorCode.Protocol,
  ErrorCode.Unauthorized,
  ErrorCode.UnsupportedVersion,
  ErrorCode.FrameTooLarge,
  ErrorCode.SlowConsumer,
  ErrorCode.GoingAway,
  ErrorCode.HelloTimeout,
  ErrorCode.TooManySessions,
  ErrorCode.TokenExpired,
]);

/** Codes after which reconnecting with the same credentials cannot succeed. */
export const PERMANENT_CODES = new Set([ErrorCode.Unauthorized, ErrorCode.Forbidden, ErrorCode.UnsupportedVersion]);

/**
 * Every error the library raises or emits.
 *
 * `kind` says what went wrong:
 * - `'unsupported'`: no WebTransport (or WebSocket, for that transport) in this
 *   browser, or not a secure context;
 * - `'unreachable'`: the session could not be opened (server down, UDP blocked,
 *   unknown namespace, certificate not accepted: browsers do not tell these apart);
 * - `'server'`: the server refused, with `code` (an `ErrorCode` number) and `codeName`;
 * - `'closed'`: the session ended (`code` is its close code when the server gave one);
 * - `'disconnected'`: the client is between sessions (reconnecting) or closed;
 * - `'protocol'`: the server sent something this client cannot understand;
 * - `'invalid'`: a bad argument (room name, body too large, bad hash…).
 */
export class WtgateError extends Error {
  /**
   * @param {'unsupported'|'unreachable'|'server'|'closed'|'disconnected'|'protocol'|'invalid'} kind
   * @param {string} message
   * @param {{code?: number, url?: string, cause?: unknown}} [details]
   */
  constructor(kind, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'WtgateError';
    this.kind = kind;
    if (details.code !== undefined) {
      this.code = details.code;
      this.codeName = errorName(details.code);
    }
    if (details.url !== undefined) this.url = details.url;
  }
}

const utf8 = new TextEncoder();

/**
 * A message body as bytes: strings are UTF-8 encoded, Uint8Arrays and
 * ArrayBuffers taken as they are.
 * @param {string | Uint8Array | ArrayBuffer} body
 * @returns {Uint8Array}
 */
export function toBytes(body) {
  if (typeof body === 'string') return utf8.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new WtgateError('invalid', 'a body must be a string, a Uint8Array or an ArrayBuffer');
}

/**
 * Parses certificate hashes: hex strings (64 digits, `:` separators allowed),
 * byte arrays, or `{algorithm, value}` objects as WebTransport takes them.
 * @param {Array<string | Uint8Array | {algorithm: string, value: BufferSource}>} hashes
 * @returns {Array<{algorithm: 'sha-256', value: Uint8Array}>}
 */
export function parseCertificateHashes(hashes) {
  if (!Array.isArray(hashes)) throw new WtgateError('invalid', 'serverCertificateHashes must be an array');
  return hashes.map((h) => {
    if (typeof h === 'string') {
      const hex = h.trim().replaceAll(':', '');
      if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
        throw new WtgateError('invalid', `certificate hash ${JSON.stringify(h)} is not 64 hex digits (a SHA-256)`);
      }
      return { algorithm: 'sha-256', value: Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16)) };
    }
    if (h instanceof Uint8Array) return { algorithm: 'sha-256', value: h };
    if (h && typeof h === 'object' && 'value' in h) return { algorithm: 'sha-256', value: new Uint8Array(h.value), ...h };
    throw new WtgateError('invalid', 'a certificate hash must be a hex string, bytes or {algorithm, value}');
  });
}

const shortHex = (value) =>
  Array.from(value.slice(0, 4), (b) => b.toString(16).padStart(2, '0')).join('') + '…';

/** What a failed `new WebTransport(url)` tried, so the message can say it. */
function unreachableMessage(url, hashes, cause) {
  const trust = hashes.length
    ? `pinning certificate hash ${hashes.map((h) => shortHex(h.value)).join(', ')}`
    : 'trusting the browser\'s certificate authorities (no serverCertificateHashes)';
  const detail = cause instanceof Error ? cause.message : String(cause);
  return (
    `cannot open a WebTransport session to ${url} (${trust}): ${detail} ` +
    'Possible causes, which browsers report alike: the server is not running or UDP to it is blocked; ' +
    'the namespace in the URL path does not exist on the server (HTTP 404); ' +
    'the certificate does not match the hash, or a pinned certificate is not ECDSA or is valid for more than 14 days; ' +
    'the page\'s origin is not allowed (HTTP 403). The server\'s log and the browser console tell them apart.'
  );
}

/** Resolves once `promise` settles or `ms` pass, whichever is first; never rejects. */
export function settledWithin(promise, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    promise.then(
      () => { clearTimeout(timer); resolve(); },
      () => { clearTimeout(timer); resolve(); },
    );
  });
}

/**
 * The deadline of a handshake (transport open, `Hello`, `Welcome`), shared by both
 * transports: `race(p)` rejects with `onTimeout()`'s error once `ms` have passed.
 */
export class Deadline {
  #timer;
  #expired;

  /** @param {number} ms @param {() => WtgateError} onTimeout */
  constructor(ms, onTimeout) {
    this.#expired = new Promise((_, reject) => {
      this.#timer = setTimeout(() => reject(onTimeout()), ms);
    });
    this.#expired.catch(() => {}); // raced; never an unhandled rejection
  }

  /** `promise`, unless the deadline passes first. @template T @param {Promise<T>} promise @returns {Promise<T>} */
  race(promise) {
    return Promise.race([promise, this.#expired]);
  }

  clear() {
    clearTimeout(this.#timer);
  }
}

/**
 * The first control frame of a session must be `Welcome`; an `Error` (a refused
 * `Hello`), a close without either, or anything else fails the handshake.
 * @param {string} url
 * @param {object | null} first the first frame, null when the control channel ended first
 * @param {{code: number|null, reason: string} | null} close how the transport closed, if it did
 * @param {unknown} failure why it closed, when it failed
 * @returns {object} the Welcome
 * @throws {WtgateError}
 */
export function expectWelcome(url, first, close, failure) {
  if (first?.type === 'Welcome') return first;
  if (first?.type === 'Error') {
    throw new WtgateError('server', `${url} refused the session: ${errorName(first.code)}: ${first.message}`, { code: first.code, url });
  }
  if (first !== null) throw new WtgateError('protocol', `${url}: expected Welcome, got ${first.type}`, { url });
  if (close?.code) throw new WtgateError('server', `${url} closed the session with ${errorName(close.code)}: ${close.reason}`, { code: close.code, url });
  const why = failure ? `: ${failure?.message ?? failure}` : '';
  throw new WtgateError('closed', `${url} closed the session before Welcome${why}`, { url });
}

/**
 * The error a failed handshake rejects with: `e` itself when it is a WtgateError,
 * else the server's close code when there is one, else `closed`.
 * @param {string} url @param {unknown} e
 * @param {{code: number|null, reason: string} | null} close
 * @returns {WtgateError}
 */
export function handshakeError(url, e, close) {
  if (e instanceof WtgateError) return e;
  if (close?.code) return new WtgateError('server', `${url} closed the session with ${errorName(close.code)}: ${close.reason}`, { code: close.code, url });
  return new WtgateError('closed', `${url}: the session failed during the handshake: ${e?.message ?? e}`, { url, cause: e });
}

/**
 * @typedef {object} SessionHandlers
 * @property {(frame: object) => void} onEvent namespace events on the control stream
 *   (`OnlineJoin`, `OnlineLeave`, `Broadcast`, `GoAway`, `Notification`, `Error` with req 0)
 * @property {(info: {code: number|null, reason: string, error: WtgateError|null, byClient: boolean}) => void} onClosed
 *   called once when the session has ended
 * @property {(error: WtgateError) => void} onError a non-fatal problem worth reporting
 */

/**
 * Receives one room's traffic: frames of its room stream and its datagrams.
 * @typedef {object} RoomSink
 * @property {(frame: object) => void} onFrame `Message`, `PresenceJoin`, `PresenceLeave`, `PresenceBatch`
 * @property {(from: string, body: Uint8Array) => void} onVolatile a datagram from another member
 * @property {(error: WtgateError|null) => void} onEnd the room stream finished (null) or failed
 */

/**
 * A live session on one namespace, after `Welcome`: requests matched to replies
 * by `req`, rooms, their frames and volatile events, and the session's end with
 * its error code. Transport-independent; `WebTransportSession` (below) and
 * `WebSocketSession` (websocket.js) move the frames, through the hooks at the end
 * of the class. Create one with {@link openSession} or `openWebSocketSession`.
 */
export class Session {
  /** @type {{session: number|bigint, user: string, max_frame: number, online: string[]|null}} */ welcome;
  /** What the namespace's connect hook attached (`ConnectInfo`), or null. @type {Uint8Array|null} */ connectData = null;
  /** Whether the session has ended. */ closed = false;
  /** Resolves once the session has ended (after `onClosed`). @type {Promise<void>} */ ended;

  #url;
  #handlers;
  #started = false;
  #nextReq = 1;
  /** @type {Map<number, {resolve: Function, reject: Function, expect: string}>} */
  #pending = new Map();
  /** @type {Map<string, RoomSink>} room name → sink, registered before `Join` is sent */
  #sinks = new Map();
  /** @type {Map<number, RoomSink>} handle → sink, from `RoomStream` and `Joined` */
  #handles = new Map();
  #closedByClient = false;
  #lastFatal = null;
  #resolveEnded;

  /** @protected */
  constructor(url, welcome, handlers) {
    this.#url = url;
    this.welcome = welcome;
    this.#handlers = handlers;
    this.ended = new Promise((resolve) => { this.#resolveEnded = resolve; });
  }

  /** `'webtransport'` or `'websocket'`. @type {'webtransport'|'websocket'} */
  get transportName() {
    throw new Error('a Session subclass names its transport');
  }

  /** The namespace URL this session was opened to. */
  get url() {
    return this.#url;
  }

  /**
   * Starts reading the control channel (after `Welcome`), the rooms and the
   * volatile events. Until then nothing is delivered, so the owner can get ready first.
   */
  start() {
    if (this.#started) return;
    this.#started = true;
    this._startReading();
  }

  /** The user id from the token. */
  get user() {
    return this.welcome.user;
  }

  /**
   * Joins `room`; its stream's frames go to `sink` from the moment the server opens
   * it, which may be before the `Joined` reply arrives.
   * @param {string} room
   * @param {{epoch: number|bigint, seq: number|bigint} | null} since
   * @param {RoomSink} sink
   * @returns {Promise<{handle: number, epoch: number|bigint, seq: number|bigint, recovered: boolean, members: string[]}>}
   */
  async join(room, since, sink) {
    if (this.#sinks.has(room)) throw new WtgateError('server', `already in room ${room}`, { code: ErrorCode.AlreadyJoined });
    this.#sinks.set(room, sink);
    try {
      const reply = await this.#request('Joined', (req) => ({ type: 'Join', req, room, since: since ?? null }));
      this.#handles.set(reply.handle, sink);
      // A room of more than a page: the rest, so `members` is everyone. The room's
      // presence frames wait in the sink's holder meanwhile.
      reply.members = await this.#readOn(reply.members, (after) => ({ type: 'MembersPage', room, after }));
      return reply;
    } catch (e) {
      if (this.#sinks.get(room) === sink) this.#sinks.delete(room);
      throw e;
    }
  }

  /**
   * Leaves `room`. Its sink gets nothing more from the moment `Leave` is sent (the
   * server's stream may still carry a few frames before it finishes).
   * @param {string} room
   */
  async leave(room) {
    const reply = this.#request('Left', (req) => ({ type: 'Leave', req, room }));
    this.#forget(room, this.#sinks.get(room));
    await reply;
  }

  /**
   * Publishes to a joined room; resolves with the message's `seq`.
   * @param {string} room @param {Uint8Array} body
   * @returns {Promise<number|bigint>}
   */
  async publish(room, body) {
    const reply = await this.#request('Ack', (req) => ({ type: 'Publish', req, room, body }));
    return reply.seq;
  }

  /**
   * Users online in the namespace: every page of them (the server answers at most
   * `ONLINE_PAGE` users a request).
   * @returns {Promise<string[]>}
   */
  async online() {
    return this.#readOn([], (after) => ({ type: 'OnlinePage', after }), true);
  }

  /**
   * A list of users read on a page at a time while pages come full: `first`, then
   * pages after its last user (from the start when `fromStart`).
   * @param {string[]} first
   * @param {(after: string) => object} page the request frame, without `req` and `limit`
   */
  async #readOn(first, page, fromStart = false) {
    const users = [...first];
    let full = fromStart || first.length >= ONLINE_PAGE;
    while (full) {
      const after = users.length ? users[users.length - 1] : '';
      const more = (await this.#request('Online', (req) => ({ ...page(after), req, limit: ONLINE_PAGE }))).users;
      users.push(...more);
      full = more.length >= ONLINE_PAGE;
    }
    return users;
  }

  /** Removes a notification from the user's inbox. @param {number|bigint} id */
  async ackNotification(id) {
    await this.#request('Ack', (req) => ({ type: 'AckNotification', req, id }));
  }

  /**
   * Replaces the session's token (same user) before it expires.
   * @param {string} token
   */
  async refresh(token) {
    await this.#request('Ack', (req) => ({ type: 'Refresh', req, token }));
  }

  /**
   * Calls `method` on the namespace's backend (its RPC hook); resolves with the
   * backend's reply body.
   * @param {string} method @param {Uint8Array} body
   * @returns {Promise<Uint8Array>}
   */
  async rpc(method, body) {
    return (await this.#request('RpcReply', (req) => ({ type: 'Rpc', req, method, body }))).body;
  }

  /**
   * Sends a volatile event to the other members of a joined room: a datagram, or
   * a lane-3 message over a WebSocket. Returns false when the room is not joined on
   * this session (nothing is sent).
   * @param {string} room @param {Uint8Array} body
   * @returns {boolean}
   * @throws {WtgateError} `invalid` when it would be too large to be delivered
   */
  sendVolatile(room, body) {
    if (body.length > MAX_VOLATILE_BODY) {
      throw new WtgateError('invalid', `a volatile body is at most ${MAX_VOLATILE_BODY} bytes (got ${body.length})`);
    }
    const sink = this.#sinks.get(room);
    const handle = [...this.#handles].find(([, s]) => s === sink)?.[0];
    if (this.closed || sink === undefined || handle === undefined) return false;
    this._sendDatagram({ type: 'Send', handle, body });
    return true;
  }

  /** Closes the session normally. Safe to call more than once. */
  close() {
    if (this.closed) return;
    this.#closedByClient = true;
    this._closeTransport(0, 'bye');
  }

  // -------------------------------------------------------------------------
  // For the transports (subclasses).

  /** @protected Dispatches a frame of the control channel (after `Welcome`). */
  _control(frame) {
    const req = frame.req;
    if (req !== undefined && req !== 0 && frame.type !== 'Welcome') {
      const waiter = this.#pending.get(req);
      if (waiter === undefined) {
        this.#handlers.onError(new WtgateError('protocol', `reply ${frame.type} to unknown request ${req}`));
        return;
      }
      this.#pending.delete(req);
      if (frame.type === 'Error') {
        waiter.reject(new WtgateError('server', `${errorName(frame.code)}: ${frame.message}`, { code: frame.code }));
      } else if (frame.type !== waiter.expect) {
        waiter.reject(new WtgateError('protocol', `expected ${waiter.expect}, got ${frame.type}`));
      } else {
        waiter.resolve(frame);
      }
      return;
    }
    if (frame.type === 'Error' || frame.type === 'GoAway') this.#lastFatal = frame;
    this.#handlers.onEvent(frame);
  }

  /**
   * @protected A room stream began with `RoomStream { room, handle }`: the sink of
   * that room, or null (reported) when this session has not joined it.
   * @returns {RoomSink | null}
   */
  _roomOpened(room, handle) {
    const sink = this.#sinks.get(room) ?? null;
    if (sink === null) {
      // Not a room we asked for (or one we left meanwhile).
      this.#handlers.onError(new WtgateError('protocol', `the server opened a stream for room ${JSON.stringify(room)}, which this session has not joined`));
      return null;
    }
    this.#handles.set(handle, sink);
    return sink;
  }

  /**
   * @protected A frame after a room stream's header: delivered while the room is
   * still joined with that sink.
   * @throws {CodecError} for a frame that does not belong on a room stream
   */
  _roomFrame(room, sink, frame) {
    if (ROOM_FRAMES.has(frame.type)) {
      if (this.#sinks.get(room) === sink) sink.onFrame(frame);
    } else {
      throw new CodecError('Malformed', `${frame.type} on the stream of room ${room}`);
    }
  }

  /** @protected A datagram (or lane-3 message) from the server. */
  _datagram(datagram) {
    if (datagram.type !== 'Recv') {
      this.#handlers.onError(new WtgateError('protocol', `datagram ${datagram.type} from the server`));
      return;
    }
    // Datagrams for a room left a moment ago may still arrive: drop them.
    this.#handles.get(datagram.handle)?.onVolatile(datagram.from, datagram.body);
  }

  /** @protected A problem worth reporting that does not end the session. */
  _reportError(error) {
    this.#handlers.onError(error);
  }

  /** @protected The server broke the protocol: close with `Protocol`. */
  _protocolViolation(message) {
    if (this.closed) return;
    this.#lastFatal = { type: 'Error', req: 0, code: ErrorCode.Protocol, message: `client: ${message}` };
    this._closeTransport(ErrorCode.Protocol, message);
  }

  /**
   * @internal Called once by the transport when it has closed, cleanly or not.
   * @param {{code: number|null, reason: string} | null} info the close code as an
   *   error code (0: closed normally; null: lost without a code) and the reason
   * @param {unknown} [failure] why the transport failed, when it did
   */
  handleClosed(info, failure) {
    if (this.closed) return;
    this.closed = true;
    // The close code is authoritative; the last Error/GoAway frame adds its message.
    let code = info?.code ?? null;
    let reason = info?.reason ?? '';
    const fatal = this.#lastFatal;
    if (fatal?.type === 'Error' && (code === null || code === fatal.code)) {
      code = fatal.code;
      reason = fatal.message;
    } else if (fatal?.type === 'GoAway' && code === null) {
      code = ErrorCode.GoingAway;
      reason = fatal.message;
    }
    const byClient = this.#closedByClient;
    let error = null;
    if (!byClient) {
      const what = code === null || code === 0
        ? `the session to ${this.#url} ended${failure ? `: ${failure.message ?? failure}` : ''}`
        : `the server closed the session to ${this.#url} with ${errorName(code)}${reason ? `: ${reason}` : ''}`;
      error = new WtgateError('closed', what, { code: code ?? undefined, url: this.#url, cause: failure ?? undefined });
    }
    const gone = new WtgateError('disconnected', `the session to ${this.#url} closed before the reply`, { cause: error ?? undefined });
    for (const waiter of this.#pending.values()) waiter.reject(gone);
    this.#pending.clear();
    for (const sink of this.#sinks.values()) sink.onEnd(error ?? gone);
    this.#sinks.clear();
    this.#handles.clear();
    this.#handlers.onClosed({ code, reason, error, byClient });
    this.#resolveEnded();
  }

  // Hooks each transport implements.

  /** @protected Starts delivering what arrives (`_control`, `_roomOpened`, …). */
  _startReading() {
    throw new Error('not implemented');
  }

  /**
   * @protected Encodes a client frame for the control channel.
   * @returns {{bytes: Uint8Array, bodyLength: number}} what to write, and the frame's body length
   */
  _encodeControl(_frame) {
    throw new Error('not implemented');
  }

  /** @protected Writes encoded control bytes; rejects when they cannot be sent. */
  async _write(_bytes) {
    throw new Error('not implemented');
  }

  /** @protected Sends a `Datagram::Send`, best effort. @throws {WtgateError} `invalid` when too large */
  _sendDatagram(_datagram) {
    throw new Error('not implemented');
  }

  /** @protected Closes the transport with error code `code` (0: normally). */
  _closeTransport(_code, _reason) {
    throw new Error('not implemented');
  }

  // -------------------------------------------------------------------------

  #forget(room, sink) {
    if (sink === undefined || this.#sinks.get(room) !== sink) return;
    this.#sinks.delete(room);
    for (const [handle, s] of this.#handles) if (s === sink) this.#handles.delete(handle);
  }

  /** Sends a command built around a fresh `req` and waits for its reply. */
  async #request(expect, build) {
    if (this.closed) throw new WtgateError('disconnected', `the session to ${this.#url} is closed`);
    let req = this.#nextReq;
    while (this.#pending.has(req)) req = req === 0xffffffff ? 1 : req + 1;
    this.#nextReq = req === 0xffffffff ? 1 : req + 1;
    const frame = build(req);
    const { bytes, bodyLength } = this._encodeControl(frame);
    if (bodyLength > this.welcome.max_frame) {
      throw new WtgateError('invalid', `${frame.type} of ${bodyLength} bytes exceeds the server's max_frame of ${this.welcome.max_frame}`);
    }
    const reply = new Promise((resolve, reject) => this.#pending.set(req, { resolve, reject, expect }));
    try {
      await this._write(bytes);
    } catch (e) {
      this.#pending.delete(req);
      throw new WtgateError('disconnected', `could not send ${frame.type}: ${e?.message ?? e}`, { cause: e });
    }
    return reply;
  }
}

/**
 * Tail-loss probes after each control write: two, so that the loss of one probe
 * (or of the ACK it draws) does not leave a lost request to QUIC's probe timeout.
 */
const PROBES_PER_WRITE = 2;

/** A session over WebTransport: a control stream, one stream per room, datagrams. */
export class WebTransportSession extends Session {
  /** @type {WebTransport} */ transport;

  #writer;
  #reader;
  #frames;
  #datagramWriter = null;
  #probeTimer = undefined;

  /** @private Use openSession(). */
  constructor(url, transport, control, welcome, handlers) {
    super(url, welcome, handlers);
    this.transport = transport;
    this.#writer = control.writer;
    this.#reader = control.reader;
    this.#frames = control.frames;
  }

  get transportName() {
    return 'webtransport';
  }

  _startReading() {
    this.#readControl();
    this.#acceptRoomStreams();
    this.#readDatagrams();
  }

  _encodeControl(frame) {
    const bytes = encodeClientFrame(frame);
    return { bytes, bodyLength: readLengthPrefix(bytes).len };
  }

  async _write(bytes) {
    await this.#writer.write(bytes);
    this.#probeTail(PROBES_PER_WRITE);
  }

  _sendDatagram(datagram) {
    const payload = encodeDatagram(datagram);
    const max = this.transport.datagrams.maxDatagramSize;
    if (payload.length > max) {
      throw new WtgateError('invalid', `a datagram of ${payload.length} bytes exceeds this connection's limit of ${max}`);
    }
    this.#datagrams().write(payload).catch((e) => {
      if (!this.closed) this._reportError(new WtgateError('closed', `datagram not sent: ${e?.message ?? e}`, { cause: e }));
    });
  }

  #datagrams() {
    if (this.#datagramWriter === null) {
      const datagrams = this.transport.datagrams;
      const writable = typeof datagrams.createWritable === 'function' ? datagrams.createWritable() : datagrams.writable;
      this.#datagramWriter = writable.getWriter();
    }
    return this.#datagramWriter;
  }

  /**
   * Sends `left` tail-loss probes (PROTOCOL.md §10.1), PROBE_AFTER_MS apart, after
   * the last write; a later write starts over (its own packet reveals a loss).
   */
  #probeTail(left) {
    clearTimeout(this.#probeTimer);
    this.#probeTimer = setTimeout(() => {
      if (this.closed) return;
      // Best effort: a probe that cannot be sent (no datagrams, a transport
      // closing under it) is no error, and must not throw from a timer.
      try {
        this.#datagrams().write(PROBE_DATAGRAM).catch(() => {});
      } catch {
        return;
      }
      if (left > 1) this.#probeTail(left - 1);
    }, PROBE_AFTER_MS);
  }

  _closeTransport(code, reason) {
    try {
      this.transport.close({ closeCode: code, reason: reason.slice(0, 200) });
    } catch {
      // Already closing: the closed handler reports the end.
    }
  }

  /** Reads the control stream until it ends. */
  async #readControl() {
    const reader = this.#reader;
    const frames = this.#frames;
    try {
      for (;;) {
        for (;;) {
          let frame;
          try {
            frame = frames.next();
          } catch (e) {
            if (e instanceof CodecError && e.kind === 'UnknownVariant') continue; // a newer server: skip
            throw e;
          }
          if (frame === null) break;
          this._control(frame);
        }
        const { value, done } = await reader.read();
        if (done) break;
        frames.push(value);
      }
      if (frames.buffered > 0) throw new CodecError('Malformed', 'the control stream ended inside a frame');
    } catch (e) {
      if (e instanceof CodecError) {
        this._protocolViolation(`control stream: ${e.message}`);
        return;
      }
      // A read error: the session is ending; the closed handler reports it.
    }
  }

  /** Accepts the room streams the server opens. */
  async #acceptRoomStreams() {
    const incoming = this.transport.incomingUnidirectionalStreams.getReader();
    try {
      for (;;) {
        const { value: stream, done } = await incoming.read();
        if (done) return;
        this.#readRoom(stream);
      }
    } catch {
      // The session ended; the closed handler reports it.
    }
  }

  async #readRoom(stream) {
    const reader = stream.getReader();
    const frames = new FrameDecoder(decodeServerFrame, MAX_SERVER_FRAME);
    let sink = null;
    let room = null;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        frames.push(value);
        for (;;) {
          let frame;
          try {
            frame = frames.next();
          } catch (e) {
            if (e instanceof CodecError && e.kind === 'UnknownVariant') continue;
            throw e;
          }
          if (frame === null) break;
          if (sink === null) {
            if (frame.type !== 'RoomStream') throw new CodecError('Malformed', `a room stream starts with ${frame.type}`);
            room = frame.room;
            sink = this._roomOpened(room, frame.handle);
            if (sink === null) {
              // Refused: stopping the stream tells the server (it treats it as a leave).
              reader.cancel().catch(() => {});
              return;
            }
          } else {
            this._roomFrame(room, sink, frame);
          }
        }
      }
      if (frames.buffered > 0) throw new CodecError('Malformed', `the stream of room ${room} ended inside a frame`);
      sink?.onEnd(null);
    } catch (e) {
      if (e instanceof CodecError) {
        this._protocolViolation(`room stream${room === null ? '' : ` ${room}`}: ${e.message}`);
        return;
      }
      // A reset stream: if the session is ending that explains it; otherwise report it.
      await settledWithin(this.transport.closed, 1000);
      if (!this.closed) {
        const error = new WtgateError('closed', `the stream of room ${room} failed: ${e?.message ?? e}`, { cause: e });
        if (sink) sink.onEnd(error);
        else this._reportError(error);
      }
    }
  }

  /** Reads datagrams until the session ends. */
  async #readDatagrams() {
    const reader = this.transport.datagrams.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        let datagram;
        try {
          datagram = decodeDatagram(value);
        } catch (e) {
          if (e.kind !== 'UnknownVariant') this._reportError(new WtgateError('protocol', `datagram: ${e.message}`));
          continue;
        }
        this._datagram(datagram);
      }
    } catch {
      // The session ended.
    }
  }
}

/**
 * @typedef {object} OpenOptions
 * @property {string} token
 * @property {Array<{algorithm: string, value: Uint8Array}>} [serverCertificateHashes] parsed hashes
 * @property {number} [timeout] ms to wait for the session and `Welcome` (default 10 000)
 * @property {number} [readyTimeout] ms to wait for the WebTransport session to open
 *   (`ready`), when a fallback is waiting (default: `timeout`)
 */

/** The `{code, reason}` of a WebTransport close (`closeCode` is the error code). */
const webTransportClose = (info) => (info ? { code: info.closeCode ?? null, reason: info.reason ?? '' } : null);

/**
 * Opens a WebTransport session to `url`, sends `Hello` and waits for `Welcome`.
 * Nothing after `Welcome` is read until the caller calls `session.start()`, so it
 * can get ready for the session's events first.
 * @param {string} url `https://host:port/namespace`
 * @param {OpenOptions} options
 * @param {SessionHandlers} handlers
 * @returns {Promise<WebTransportSession>}
 * @throws {WtgateError} `unsupported`, `invalid`, `unreachable`, `server` (e.g. Unauthorized), `closed`
 */
export async function openSession(url, options, handlers) {
  if (typeof globalThis.WebTransport !== 'function') {
    const why = globalThis.isSecureContext === false
      ? 'this page is not a secure context (WebTransport needs https:// or http://localhost)'
      : 'this browser has no WebTransport (Chromium-based browsers 97+ and Firefox 114+ have it)';
    throw new WtgateError('unsupported', `cannot connect to ${url}: ${why}`, { url });
  }
  const hashes = options.serverCertificateHashes ?? [];
  let transport;
  try {
    transport = new WebTransport(url, hashes.length ? { serverCertificateHashes: hashes } : {});
  } catch (e) {
    throw new WtgateError('invalid', `cannot connect to ${url}: ${e?.message ?? e}`, { url, cause: e });
  }
  // `closed` rejects when the session fails; observe it from the start so it is never unhandled.
  let closedInfo = null;
  let closedFailure = null;
  const closed = transport.closed.then(
    (info) => { closedInfo = info; },
    (e) => { closedFailure = e; },
  );

  const timeoutMs = options.timeout ?? 10_000;
  const deadline = new Deadline(timeoutMs, () => new WtgateError('unreachable', unreachableMessage(url, hashes, `no answer within ${timeoutMs} ms.`), { url }));
  const readyMs = Math.min(options.readyTimeout ?? timeoutMs, timeoutMs);
  const readyDeadline = new Deadline(readyMs, () => new WtgateError('unreachable', unreachableMessage(url, hashes, `the session did not open within ${readyMs} ms.`), { url }));

  try {
    try {
      await readyDeadline.race(transport.ready);
    } catch (e) {
      if (e instanceof WtgateError) throw e;
      throw new WtgateError('unreachable', unreachableMessage(url, hashes, e), { url, cause: e });
    }

    const bidi = await deadline.race(transport.createBidirectionalStream());
    const writer = bidi.writable.getWriter();
    const reader = bidi.readable.getReader();
    const frames = new FrameDecoder(decodeServerFrame, MAX_SERVER_FRAME);
    await deadline.race(writer.write(encodeClientFrame({ type: 'Hello', version: PROTOCOL_VERSION, token: options.token })));

    // The first frame: Welcome (after ConnectInfo when the connect hook attached
    // data), or Error followed by the close.
    let first = null;
    let connectData = null;
    while (first === null) {
      try {
        first = frames.next();
      } catch (e) {
        if (e.kind === 'UnknownVariant') continue;
        throw new WtgateError('protocol', `${url}: the server's first frame is malformed: ${e.message}`, { url });
      }
      if (first?.type === 'ConnectInfo') {
        connectData = first.data;
        first = null;
        continue;
      }
      if (first !== null) break;
      const { value, done } = await deadline.race(reader.read());
      if (done) break;
      frames.push(value);
    }
    if (first === null) await settledWithin(closed, 1000);
    const welcome = expectWelcome(url, first, webTransportClose(closedInfo), closedFailure);

    const session = new WebTransportSession(url, transport, { writer, reader, frames }, welcome, handlers);
    session.connectData = connectData;
    closed.then(() => session.handleClosed(webTransportClose(closedInfo), closedFailure));
    return session;
  } catch (e) {
    try {
      transport.close({ closeCode: 0, reason: 'handshake failed' });
    } catch {
      // Never opened.
    }
    if (!(e instanceof WtgateError)) await settledWithin(closed, 1000);
    throw handshakeError(url, e, webTransportClose(closedInfo));
  } finally {
    deadline.clear();
    readyDeadline.clear();
  }
}
