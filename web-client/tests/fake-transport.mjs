// A scripted stand-in for the browser's WebTransport, for testing session.js and
// wtgate.js in Node without a network: the test plays the server, frame by frame.

import {
  FrameDecoder,
  decodeClientFrame,
  decodeDatagram,
  encodeDatagram,
  encodeRoomEndMessage,
  encodeRoomMessage,
  encodeServerControlMessage,
  encodeServerFrame,
  encodeVolatileMessage,
  parseLaneMessage,
  PROBE_DATAGRAM,
} from '../protocol.js';

/** A ReadableStream plus the controller that feeds it. */
function pipe() {
  let controller;
  const readable = new ReadableStream({ start: (c) => { controller = c; } });
  return { readable, controller };
}

/**
 * One fake session. `server` callbacks decide what happens; helpers let the test
 * push frames on the control stream, open room streams and send datagrams.
 */
export class FakeTransport {
  /** Every transport made, newest last. */
  static made = [];
  /** Called with each new transport before `ready` settles; may call `refuse()`. */
  static onCreate = () => {};

  constructor(url, options) {
    this.url = url;
    this.options = options;
    /** Client frames received on the control stream, decoded. */
    this.received = [];
    /** Client datagrams, decoded (tail-loss probes apart). */
    this.datagramsSent = [];
    /** Tail-loss probes the client sent (PROTOCOL.md §10.1), with when. */
    this.probesSent = [];
    this.closeInfo = null;
    this.ready = new Promise((resolve, reject) => { this.#ready = { resolve, reject }; });
    this.closed = new Promise((resolve, reject) => { this.#closed = { resolve, reject }; });
    this.ready.catch(() => {});

    const incoming = pipe();
    this.incomingUnidirectionalStreams = incoming.readable;
    this.#incoming = incoming.controller;
    const datagramsIn = pipe();
    this.#datagramsIn = datagramsIn.controller;
    this.datagrams = {
      maxDatagramSize: 1200,
      readable: datagramsIn.readable,
      createWritable: () => new WritableStream({
        write: (chunk) => {
          if (chunk.length === 1 && chunk[0] === PROBE_DATAGRAM[0]) this.probesSent.push(Date.now());
          else this.datagramsSent.push(decodeDatagram(chunk));
        },
      }),
    };
    FakeTransport.made.push(this);
    this.handlers = {};
    queueMicrotask(() => {
      FakeTransport.onCreate(this);
      if (!this.refused && !this.stalled) this.#ready.resolve();
    });
  }

  #ready;
  #closed;
  #incoming;
  #datagramsIn;
  #control = null;
  #frames = new FrameDecoder(decodeClientFrame);
  #waiters = [];

  /** Leaves `ready` pending, as a server whose UDP is dropped on the way. */
  stall() {
    this.stalled = true;
  }

  /** Makes `ready` reject as Chrome does for an unreachable server. */
  refuse(message = 'Opening handshake failed.') {
    this.refused = true;
    const error = new Error(message);
    this.#ready.reject(error);
    this.#closed.reject(error);
  }

  async createBidirectionalStream() {
    const toClient = pipe();
    this.#control = toClient.controller;
    const writable = new WritableStream({
      write: (chunk) => {
        this.#frames.push(chunk);
        for (let frame; (frame = this.#frames.next()) !== null;) {
          this.received.push(frame);
          this.handlers[frame.type]?.(frame);
          for (const w of this.#waiters.splice(0)) w();
        }
      },
    });
    return { readable: toClient.readable, writable };
  }

  /** Resolves with the first received frame matching `pred` (waiting for it if needed). */
  async next(pred) {
    for (;;) {
      const hit = this.received.find(pred);
      if (hit) return hit;
      await new Promise((resolve) => this.#waiters.push(resolve));
    }
  }

  /** Sends a server frame (object) or raw bytes on the control stream. */
  send(frame) {
    this.#control.enqueue(frame instanceof Uint8Array ? frame : encodeServerFrame(frame));
  }

  /** Opens a room stream and returns a function that writes frames on it (`end()` finishes it). */
  openRoom(room, handle) {
    const stream = pipe();
    this.#incoming.enqueue(stream.readable);
    const write = (frame) => stream.controller.enqueue(frame instanceof Uint8Array ? frame : encodeServerFrame(frame));
    write({ type: 'RoomStream', room, handle });
    write.end = () => stream.controller.close();
    return write;
  }

  datagram(d) {
    this.#datagramsIn.enqueue(encodeDatagram(d));
  }

  /** Closes the session as the server would, with an application code. */
  serverClose(closeCode, reason = '') {
    if (this.closeInfo) return;
    this.closeInfo = { closeCode, reason };
    this.#teardown(new Error('session closed'));
    this.#closed.resolve({ closeCode, reason });
  }

  close(info = {}) {
    if (this.closeInfo) return;
    this.#ready.reject(new Error('closed before it opened'));
    this.closeInfo = { closeCode: info.closeCode ?? 0, reason: info.reason ?? '', byClient: true };
    this.#teardown(new Error('session closed'));
    this.#closed.resolve({ closeCode: this.closeInfo.closeCode, reason: this.closeInfo.reason });
  }

  #teardown(error) {
    for (const c of [this.#control, this.#incoming, this.#datagramsIn]) {
      try {
        c?.error(error);
      } catch {
        // already closed
      }
    }
  }
}

/** Answers Hello with Welcome, as a server would, for `user`. */
export function welcoming(user, { online = [user], maxFrame = 65536 } = {}) {
  return (t) => {
    t.handlers.Hello = () => t.send({ type: 'Welcome', session: FakeTransport.made.length, user, max_frame: maxFrame, online });
  };
}

export const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A scripted stand-in for the browser's WebSocket speaking the lanes of
 * PROTOCOL.md §16: the test plays the server, message by message.
 */
export class FakeWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  /** Every socket made, newest last. */
  static made = [];
  /** Called with each new socket before it opens; may call `refuse()` or `stall()`. */
  static onCreate = () => {};

  constructor(url, protocols) {
    super();
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.protocol = '';
    this.binaryType = 'blob';
    this.bufferedAmount = 0;
    /** Client frames received on lane 0, decoded. */
    this.received = [];
    /** Client `Datagram`s received on lane 3, decoded. */
    this.volatileSent = [];
    /** Lanes of every client message. */
    this.lanes = [];
    /** The client's close, `{code, reason}`. */
    this.closeInfo = null;
    this.handlers = {};
    FakeWebSocket.made.push(this);
    queueMicrotask(() => {
      FakeWebSocket.onCreate(this);
      if (this.refused || this.stalled) return;
      this.readyState = 1;
      this.protocol = this.selected ?? (protocols?.includes('wtgate.v1') ? 'wtgate.v1' : '');
      this.dispatchEvent(new Event('open'));
    });
  }

  /** Fails the connection as browsers report a refused upgrade or a dead port: 1006. */
  refuse() {
    this.refused = true;
    this.readyState = 3;
    this.dispatchEvent(new Event('error'));
    this.#fireClose(1006, '', false);
  }

  /** Never opens. */
  stall() {
    this.stalled = true;
  }

  send(data) {
    if (this.readyState === 0) throw new Error('InvalidStateError: still CONNECTING');
    if (this.readyState !== 1) return;
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const message = parseLaneMessage(bytes);
    this.lanes.push(message.lane);
    if (message.lane === 'control') {
      const frame = decodeClientFrame(message.body);
      this.received.push(frame);
      this.handlers[frame.type]?.(frame);
    } else if (message.lane === 'volatile') {
      this.volatileSent.push(decodeDatagram(message.body));
    }
  }

  /** Delivers raw bytes (or a string: a text message) from the server. */
  sendRaw(data) {
    const payload = typeof data === 'string' ? data : data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    queueMicrotask(() => {
      if (this.readyState !== 1 && this.readyState !== 2) return;
      const event = new Event('message');
      event.data = payload;
      this.dispatchEvent(event);
    });
  }

  /** A server frame on lane 0. */
  send0(frame) {
    this.sendRaw(encodeServerControlMessage(frame));
  }

  /** Opens a room on lane 1 (its RoomStream first); returns a writer, `end()` sends lane 2. */
  openRoom(room, handle) {
    const write = (frame) => this.sendRaw(encodeRoomMessage(handle, frame));
    write({ type: 'RoomStream', room, handle });
    write.end = () => this.sendRaw(encodeRoomEndMessage(handle));
    return write;
  }

  /** A `Datagram::Recv` on lane 3. */
  volatile(d) {
    this.sendRaw(encodeVolatileMessage(d));
  }

  /** The server closes with `code` (e.g. 4000 + an error code). */
  serverClose(code, reason = '') {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.#fireClose(code, reason, true));
  }

  /** The connection drops without a close frame. */
  lose() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.#fireClose(1006, '', false));
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= 2) return;
    if (this.readyState === 1 && code !== 1000 && (code < 3000 || code > 4999)) throw new Error(`InvalidAccessError: close code ${code}`);
    if (new TextEncoder().encode(reason).length > 123) throw new Error('SyntaxError: close reason longer than 123 bytes');
    const wasOpen = this.readyState === 1;
    this.closeInfo = { code, reason };
    this.readyState = 2;
    // The server echoes the code; a socket that never opened reports 1006.
    queueMicrotask(() => {
      this.readyState = 3;
      this.#fireClose(wasOpen ? code : 1006, wasOpen ? reason : '', wasOpen);
    });
  }

  #fireClose(code, reason, wasClean) {
    this.readyState = 3;
    const event = new Event('close');
    Object.assign(event, { code, reason, wasClean });
    this.dispatchEvent(event);
  }
}

/** Answers Hello (lane 0) with Welcome, as a server would, for `user`. */
export function welcomingSocket(user, { online = [user], maxFrame = 65536 } = {}) {
  return (ws) => {
    ws.handlers.Hello = () => ws.send0({ type: 'Welcome', session: FakeWebSocket.made.length, user, max_frame: maxFrame, online });
  };
}
