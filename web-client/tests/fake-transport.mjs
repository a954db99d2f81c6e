// A scripted stand-in for the browser's WebTransport, for testing session.js and
// wtgate.js in Node without a network: the test plays the server, frame by frame.

import {
  FrameDecoder,
  decodeClientFrame,
  decodeDatagram,
  encodeDatagram,
  encodeServerFrame,
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
    /** Client datagrams, decoded. */
    this.datagramsSent = [];
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
      createWritable: () => new WritableStream({ write: (chunk) => { this.datagramsSent.push(decodeDatagram(chunk)); } }),
    };
    FakeTransport.made.push(this);
    this.handlers = {};
    queueMicrotask(() => {
      FakeTransport.onCreate(this);
      if (!this.refused) this.#ready.resolve();
    });
  }

  #ready;
  #closed;
  #incoming;
  #datagramsIn;
  #control = null;
  #frames = new FrameDecoder(decodeClientFrame);
  #waiters = [];

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
