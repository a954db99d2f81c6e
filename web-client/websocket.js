// One session on one namespace over a WebSocket (PROTOCOL.md §16): the same frames
// as over WebTransport, one binary message each, behind a lane byte: 0 control,
// 1 room (handle + frame), 2 room end, 3 volatile. The request/reply bookkeeping,
// rooms and close handling are session.js's `Session`; this file moves the bytes.
//
// Mirrors the WebSocket side of `src/client/`; wtgate.js picks the transport.

import {
  CodecError,
  ErrorCode,
  PROTOCOL_VERSION,
  WEBSOCKET_SUBPROTOCOL,
  decodeDatagram,
  decodeServerFrame,
  encodeControlMessage,
  encodeVolatileMessage,
  parseLaneMessage,
} from './protocol.js';
import { Deadline, Session, WtgateError, expectWelcome, handshakeError, settledWithin } from './session.js';

/**
 * Volatile messages are dropped (never queued) while more than this many bytes
 * wait in the socket's send buffer: they are best effort, like datagrams.
 */
export const VOLATILE_BACKLOG = 64 * 1024;

/** Longest WebSocket close reason, in UTF-8 bytes (RFC 6455: 125 minus the code). */
const MAX_CLOSE_REASON = 123;

const OPEN = 1;

/**
 * The session's error code for a WebSocket close code (§16.4): 1000 → 0 (a normal
 * end), 4000 + n → n, anything else (1006: no close frame) → null, a lost connection.
 * @param {number} code
 * @returns {number | null}
 */
export function errorCodeOfClose(code) {
  if (code === 1000) return 0;
  if (code >= 4000 && code <= 4999) return code - 4000;
  return null;
}

/**
 * The WebSocket URL that goes with a WebTransport URL: `https:` becomes `wss:`,
 * host, port, path and query stay (the server answers WebSockets on the TCP port
 * with the WebTransport port's number, §16.1).
 * @param {string} url `https://host:port/namespace`
 * @returns {string}
 */
export function websocketUrlFor(url) {
  const u = new URL(url);
  if (u.protocol !== 'https:') throw new WtgateError('invalid', `cannot derive a WebSocket URL from ${url}: not https://`);
  u.protocol = 'wss:';
  return u.href;
}

/** `reason` cut to at most `max` UTF-8 bytes, on a character boundary. */
function cutUtf8(reason, max) {
  const encoder = new TextEncoder();
  if (encoder.encode(reason).length <= max) return reason;
  let out = '';
  let used = 0;
  for (const ch of reason) {
    const n = encoder.encode(ch).length;
    if (used + n > max) break;
    out += ch;
    used += n;
  }
  return out;
}

/** What a WebSocket that did not open tried, so the message can say it. */
function unreachableMessage(url, detail) {
  return (
    `cannot open a WebSocket to ${url} (subprotocol ${WEBSOCKET_SUBPROTOCOL}): ${detail} ` +
    'Possible causes, which browsers report alike: the server is not running or TCP to it is blocked; ' +
    'the namespace in the URL path does not exist on the server (HTTP 404); the page\'s origin is not allowed (HTTP 403); ' +
    'the server has no WebSocket endpoint there; a wss:// certificate the browser does not trust ' +
    '(serverCertificateHashes do not apply to WebSockets: a development server answers on ws://127.0.0.1 instead). ' +
    'The server\'s log and the browser console tell them apart.'
  );
}

/**
 * The socket's messages, queued until a reader takes them: the handshake awaits
 * them one by one, the session takes the rest on `start()`.
 */
class Inbox {
  #items = [];
  #waiter = null;
  #ended = false;
  #consumer = null;

  push(data) {
    if (this.#consumer) this.#consumer(data);
    else if (this.#waiter) this.#take()(data);
    else this.#items.push(data);
  }

  end() {
    this.#ended = true;
    if (this.#waiter && !this.#consumer) this.#take()(null);
  }

  /** The next message, or null once the socket has closed. */
  next() {
    if (this.#items.length) return Promise.resolve(this.#items.shift());
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve) => { this.#waiter = resolve; });
  }

  /** From now on, every message (the queued ones first) goes to `consumer`. */
  consume(consumer) {
    this.#consumer = consumer;
    for (const data of this.#items.splice(0)) consumer(data);
  }

  #take() {
    const waiter = this.#waiter;
    this.#waiter = null;
    return waiter;
  }
}

/** A message's payload as bytes; null for a text message. */
const bytesOf = (data) => (data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null);

/** A session over one WebSocket. Create with {@link openWebSocketSession}. */
export class WebSocketSession extends Session {
  /** @type {WebSocket} */ socket;

  #inbox;
  /** The close this client started, if it did. */
  #closeSent = null;
  /** @type {Map<number, {room: string, sink: import('./session.js').RoomSink | null}>} handle → room stream, from its `RoomStream` to its end */
  #streams = new Map();

  /** @private Use openWebSocketSession(). */
  constructor(url, socket, inbox, welcome, handlers) {
    super(url, welcome, handlers);
    this.socket = socket;
    this.#inbox = inbox;
  }

  get transportName() {
    return 'websocket';
  }

  _startReading() {
    this.#inbox.consume((data) => this.#onMessage(data));
  }

  _encodeControl(frame) {
    const bytes = encodeControlMessage(frame);
    return { bytes, bodyLength: bytes.length - 1 };
  }

  async _write(bytes) {
    // send() on a closing socket drops the message silently: refuse instead.
    if (this.socket.readyState !== OPEN) throw new Error('the WebSocket is closed');
    this.socket.send(bytes);
  }

  _sendDatagram(datagram) {
    const message = encodeVolatileMessage(datagram);
    if (this.socket.readyState !== OPEN) return;
    // Backed up: drop, as a datagram would be. Never queue behind reliable frames.
    if (this.socket.bufferedAmount > VOLATILE_BACKLOG) return;
    this.socket.send(message);
  }

  _closeTransport(code, reason) {
    this.#closeSent ??= { code, reason };
    try {
      this.socket.close(code === 0 ? 1000 : 4000 + code, cutUtf8(reason, MAX_CLOSE_REASON));
    } catch {
      // Already closing: the close event reports the end.
    }
  }

  /**
   * @internal The socket closed. A close this client started is reported with the
   * code it sent, whatever the server echoed.
   */
  socketClosed(info, failure) {
    this.handleClosed(this.#closeSent && info?.code !== null ? this.#closeSent : info, failure);
  }

  #onMessage(data) {
    if (this.closed) return;
    const bytes = bytesOf(data);
    if (bytes === null) {
      this._protocolViolation('a text message (the protocol is binary)');
      return;
    }
    let message;
    try {
      message = parseLaneMessage(bytes);
      switch (message.lane) {
        case 'control': {
          const frame = decodeOrSkip(decodeServerFrame, message.body);
          if (frame !== null) this._control(frame);
          return;
        }
        case 'room':
          this.#onRoom(message.handle, message.body);
          return;
        case 'room_end': {
          const stream = this.#streams.get(message.handle);
          this.#streams.delete(message.handle);
          stream?.sink?.onEnd(null);
          return;
        }
        case 'volatile': {
          let datagram;
          try {
            datagram = decodeDatagram(message.body);
          } catch (e) {
            if (e.kind !== 'UnknownVariant') this._reportError(new WtgateError('protocol', `volatile message: ${e.message}`));
            return;
          }
          this._datagram(datagram);
          return;
        }
        default:
          return; // a reserved lane (a newer server's): ignored
      }
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
      const where = message === undefined ? 'message' : message.lane === 'room' ? `room handle ${message.handle}` : `${message.lane} lane`;
      this._protocolViolation(`${where}: ${e.message}`);
    }
  }

  /** A lane-1 message: the first one of a handle is its `RoomStream`. */
  #onRoom(handle, body) {
    const frame = decodeOrSkip(decodeServerFrame, body);
    if (frame === null) return;
    const stream = this.#streams.get(handle);
    if (stream === undefined) {
      if (frame.type !== 'RoomStream') throw new CodecError('Malformed', `a room stream starts with ${frame.type}`);
      if (frame.handle !== handle) throw new CodecError('Malformed', `RoomStream of room ${frame.room} names handle ${frame.handle}`);
      // Refused (null sink): there is no STOP_SENDING over a WebSocket; its frames
      // are dropped until its end.
      this.#streams.set(handle, { room: frame.room, sink: this._roomOpened(frame.room, frame.handle) });
      return;
    }
    if (frame.type === 'RoomStream') throw new CodecError('Malformed', `a second RoomStream for room ${stream.room}`);
    if (stream.sink !== null) this._roomFrame(stream.room, stream.sink, frame);
  }
}

/** Decodes a frame; null for an unknown variant (a newer server's), to be skipped. */
function decodeOrSkip(decode, body) {
  try {
    return decode(body);
  } catch (e) {
    if (e instanceof CodecError && e.kind === 'UnknownVariant') return null;
    throw e;
  }
}

/**
 * @typedef {object} OpenWebSocketOptions
 * @property {string} token
 * @property {number} [timeout] ms to wait for the socket and `Welcome` (default 10 000)
 */

/**
 * Opens a WebSocket to `url` offering `wtgate.v1`, sends `Hello` and waits for
 * `Welcome`. Nothing after `Welcome` is delivered until `session.start()`.
 * @param {string} url `wss://host:port/namespace` (or `ws://` on loopback)
 * @param {OpenWebSocketOptions} options
 * @param {import('./session.js').SessionHandlers} handlers
 * @returns {Promise<WebSocketSession>}
 * @throws {WtgateError} `unsupported`, `invalid`, `unreachable`, `server` (e.g. Unauthorized), `closed`, `protocol`
 */
export async function openWebSocketSession(url, options, handlers) {
  if (typeof globalThis.WebSocket !== 'function') {
    throw new WtgateError('unsupported', `cannot connect to ${url}: this environment has no WebSocket`, { url });
  }
  let socket;
  try {
    socket = new WebSocket(url, [WEBSOCKET_SUBPROTOCOL]);
  } catch (e) {
    throw new WtgateError('invalid', `cannot connect to ${url}: ${e?.message ?? e}`, { url, cause: e });
  }
  socket.binaryType = 'arraybuffer';
  const inbox = new Inbox();
  /** @type {{code: number|null, reason: string, raw: number, wasClean: boolean} | null} */
  let closedInfo = null;
  let opened = false;
  const closed = new Promise((resolve) => {
    socket.addEventListener('close', (event) => {
      closedInfo = { code: errorCodeOfClose(event.code), reason: event.reason ?? '', raw: event.code, wasClean: event.wasClean };
      inbox.end();
      resolve();
    });
  });
  socket.addEventListener('message', (event) => inbox.push(event.data));
  const open = new Promise((resolve, reject) => {
    socket.addEventListener('open', () => { opened = true; resolve(); });
    closed.then(() => reject(new Error(`the connection failed (close code ${closedInfo.raw})`)));
  });
  open.catch(() => {});
  const failure = () => (closedInfo && (closedInfo.code === null || !closedInfo.wasClean) ? new Error(`the connection was lost (WebSocket close ${closedInfo.raw})`) : null);

  const timeoutMs = options.timeout ?? 10_000;
  const deadline = new Deadline(timeoutMs, () => new WtgateError('unreachable', opened
    ? `${url}: no Welcome within ${timeoutMs} ms`
    : unreachableMessage(url, `no answer within ${timeoutMs} ms.`), { url }));
  try {
    try {
      await deadline.race(open);
    } catch (e) {
      if (e instanceof WtgateError) throw e;
      throw new WtgateError('unreachable', unreachableMessage(url, `${e.message}.`), { url, cause: e });
    }
    if (socket.protocol !== WEBSOCKET_SUBPROTOCOL) {
      throw new WtgateError('protocol', `${url} did not select the subprotocol ${WEBSOCKET_SUBPROTOCOL} (got ${JSON.stringify(socket.protocol)})`, { url });
    }
    socket.send(encodeControlMessage({ type: 'Hello', version: PROTOCOL_VERSION, token: options.token }));

    // The first control frame: Welcome (after ConnectInfo when the connect hook
    // attached data), or Error followed by the close.
    let first = null;
    let connectData = null;
    for (;;) {
      const data = await deadline.race(inbox.next());
      if (data === null) break;
      const bytes = bytesOf(data);
      if (bytes === null) throw new WtgateError('protocol', `${url}: a text message before Welcome`, { url });
      let message;
      try {
        message = parseLaneMessage(bytes);
        if (message.lane === 'unknown') continue;
        if (message.lane !== 'control') throw new CodecError('Malformed', `a ${message.lane} message before Welcome`);
        first = decodeOrSkip(decodeServerFrame, message.body);
      } catch (e) {
        if (!(e instanceof CodecError)) throw e;
        throw new WtgateError('protocol', `${url}: the server's first frame is malformed: ${e.message}`, { url });
      }
      if (first?.type === 'ConnectInfo') {
        connectData = first.data;
        first = null;
        continue;
      }
      if (first !== null) break;
    }
    if (first === null) await settledWithin(closed, 1000);
    const welcome = expectWelcome(url, first, closedInfo, failure());

    const session = new WebSocketSession(url, socket, inbox, welcome, handlers);
    session.connectData = connectData;
    closed.then(() => session.socketClosed(closedInfo, failure()));
    return session;
  } catch (e) {
    if (socket.readyState === OPEN) {
      const code = e instanceof WtgateError && e.kind === 'protocol' ? 4000 + ErrorCode.Protocol : 1000;
      socket.close(code, 'handshake failed');
    } else if (socket.readyState === 0) {
      // Still connecting (the deadline passed): the browser may warn about this close.
      socket.close();
    }
    if (!(e instanceof WtgateError)) await settledWithin(closed, 1000);
    throw handshakeError(url, e, closedInfo);
  } finally {
    deadline.clear();
  }
}
