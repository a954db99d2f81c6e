// wtgate wire protocol, version 1: frames and their postcard encoding, by hand.
//
// Mirrors `src/protocol/` (mod.rs frames, codec.rs framing, error.rs codes); the
// normative description is `docs/PROTOCOL.md`, the bytes are pinned by
// `tests/vectors/*.json`. No I/O here: bytes in, frames out, and back.
//
// Frames are plain objects tagged by `type`, with the Rust field names:
//   { type: 'Join', req: 1, room: 'lobby', since: null }
// Value mapping (Rust → JS):
//   u16, u32          → number
//   u64               → number when ≤ Number.MAX_SAFE_INTEGER, otherwise bigint
//                       (decoding); encoders accept either a number or a bigint
//   String            → string (UTF-8 on the wire; invalid UTF-8 is malformed)
//   Bytes             → Uint8Array
//   bool              → boolean
//   Option<T>         → T or null (encoders also take undefined for None)
//   Since             → {epoch, seq} (a struct: its fields in order, no tag)
//   Vec<T>            → Array
//   ErrorCode         → number (see `ErrorCode` below; unknown numbers are kept)

/** Protocol version sent in `Hello`. */
export const PROTOCOL_VERSION = 1;

/**
 * The tail-loss probe (PROTOCOL.md §10.1): the one-byte datagram of the reserved
 * `Datagram` variant 2, which servers drop. Its packet reveals a lost request at
 * once, where QUIC would wait for its probe timeout. Rust's `protocol::PROBE_DATAGRAM`.
 */
export const PROBE_DATAGRAM = Uint8Array.of(2);

/** How long after its last write a client probes, ms (Rust's `protocol::PROBE_AFTER`). */
export const PROBE_AFTER_MS = 1;

/** Largest client frame body a server accepts by default (`Welcome.max_frame` says the real one). */
export const DEFAULT_MAX_FRAME = 64 * 1024;

/** Largest server frame this client accepts (the largest `max_frame` a server can be set to). */
export const MAX_SERVER_FRAME = 16 * 1024 * 1024;

/**
 * The most users one list of users holds (`Welcome.online`, `Joined.members`,
 * `Online`); a list this long may go on: read the rest with `OnlinePage` or
 * `MembersPage`.
 */
export const ONLINE_PAGE = 1000;

/**
 * Error codes carried in `Error` frames and used as session close codes.
 * @type {Readonly<Record<string, number>>}
 */
export const ErrorCode = Object.freeze({
  Protocol: 1,
  Unauthorized: 2,
  Forbidden: 3,
  UnsupportedVersion: 4,
  FrameTooLarge: 5,
  RateLimited: 6,
  TooManyRooms: 7,
  InvalidRoom: 8,
  NotJoined: 9,
  AlreadyJoined: 10,
  UnknownCommand: 11,
  SlowConsumer: 12,
  GoingAway: 13,
  HelloTimeout: 14,
  TooManySessions: 15,
  Internal: 16,
  TokenExpired: 17,
  Rejected: 18,
  BackendUnavailable: 19,
});

const ERROR_NAMES = new Map(Object.entries(ErrorCode).map(([name, code]) => [code, name]));

/**
 * The name of an error code, e.g. `errorName(2) === 'Unauthorized'`; `Other(n)` for unknown codes.
 * @param {number} code
 * @returns {string}
 */
export function errorName(code) {
  return ERROR_NAMES.get(code) ?? `Other(${code})`;
}

/**
 * Why bytes could not be turned into a frame. `kind` is one of
 * `'TooLarge'`, `'BadLength'`, `'UnknownVariant'`, `'Malformed'` (as `CodecError` in Rust).
 * After `UnknownVariant` on a stream the frame has been consumed and reading may go on.
 */
export class CodecError extends Error {
  /**
   * @param {'TooLarge'|'BadLength'|'UnknownVariant'|'Malformed'} kind
   * @param {string} message
   * @param {number} [tag] the unknown variant index, for `UnknownVariant`
   */
  constructor(kind, message, tag) {
    super(message);
    this.name = 'CodecError';
    this.kind = kind;
    if (tag !== undefined) this.tag = tag;
  }
}

const malformed = (message) => new CodecError('Malformed', message);

// ---------------------------------------------------------------------------
// Schemas. Variant order is wire format: the index in each list is the enum tag.
// Each field is [name, type]; types are the strings handled by `write`/`read`.

/** @typedef {'u16'|'u32'|'u64'|'bool'|'string'|'bytes'|'code'|'option<since>'|'option<vec<string>>'|'vec<string>'} FieldType */

/** @type {Array<[string, Array<[string, FieldType]>]>} */
const CLIENT_FRAMES = [
  ['Hello', [['version', 'u16'], ['token', 'string']]],
  ['Join', [['req', 'u32'], ['room', 'string'], ['since', 'option<since>']]],
  ['Leave', [['req', 'u32'], ['room', 'string']]],
  ['Publish', [['req', 'u32'], ['room', 'string'], ['body', 'bytes']]],
  ['Online', [['req', 'u32']]],
  ['AckNotification', [['req', 'u32'], ['id', 'u64']]],
  ['Refresh', [['req', 'u32'], ['token', 'string']]],
  ['Rpc', [['req', 'u32'], ['method', 'string'], ['body', 'bytes']]],
  ['OnlinePage', [['req', 'u32'], ['after', 'string'], ['limit', 'u32']]],
  ['MembersPage', [['req', 'u32'], ['room', 'string'], ['after', 'string'], ['limit', 'u32']]],
];

/** @type {Array<[string, Array<[string, FieldType]>]>} */
const SERVER_FRAMES = [
  ['Welcome', [['session', 'u64'], ['user', 'string'], ['max_frame', 'u32'], ['online', 'option<vec<string>>']]],
  ['Ack', [['req', 'u32'], ['seq', 'u64']]],
  ['Joined', [['req', 'u32'], ['room', 'string'], ['handle', 'u32'], ['epoch', 'u64'], ['seq', 'u64'], ['recovered', 'bool'], ['members', 'vec<string>']]],
  ['Left', [['req', 'u32'], ['room', 'string']]],
  ['Error', [['req', 'u32'], ['code', 'code'], ['message', 'string']]],
  ['RoomStream', [['room', 'string'], ['handle', 'u32']]],
  ['Message', [['seq', 'u64'], ['from', 'string'], ['body', 'bytes'], ['ts', 'u64']]],
  ['PresenceJoin', [['user', 'string']]],
  ['PresenceLeave', [['user', 'string']]],
  ['Online', [['req', 'u32'], ['users', 'vec<string>']]],
  ['OnlineJoin', [['user', 'string']]],
  ['OnlineLeave', [['user', 'string']]],
  ['Broadcast', [['from', 'string'], ['body', 'bytes'], ['ts', 'u64']]],
  ['GoAway', [['message', 'string']]],
  ['Notification', [['id', 'u64'], ['kind', 'string'], ['body', 'bytes'], ['ts', 'u64']]],
  ['RpcReply', [['req', 'u32'], ['body', 'bytes']]],
  ['ConnectInfo', [['data', 'bytes']]],
  ['PresenceBatch', [['joins', 'vec<string>'], ['leaves', 'vec<string>']]],
];

/** @type {Array<[string, Array<[string, FieldType]>]>} */
const DATAGRAMS = [
  ['Send', [['handle', 'u32'], ['body', 'bytes']]],
  ['Recv', [['handle', 'u32'], ['from', 'string'], ['body', 'bytes']]],
];

/**
 * The variants of each frame enum, in wire order (index = tag).
 * @type {Readonly<{client: readonly string[], server: readonly string[], datagram: readonly string[]}>}
 */
export const VARIANTS = Object.freeze({
  client: Object.freeze(CLIENT_FRAMES.map(([name]) => name)),
  server: Object.freeze(SERVER_FRAMES.map(([name]) => name)),
  datagram: Object.freeze(DATAGRAMS.map(([name]) => name)),
});

// ---------------------------------------------------------------------------
// Writing.

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const U64_MAX = (1n << 64n) - 1n;

/** A growable byte buffer. */
class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.len));
    this.buf = grown;
  }

  byte(b) {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  raw(bytes) {
    this.reserve(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  /** Unsigned LEB128 of a non-negative integer (number ≤ 2^53 − 1 or bigint). */
  varint(value) {
    if (typeof value === 'bigint') {
      while (value >= 0x80n) {
        this.byte(Number(value & 0x7fn) | 0x80);
        value >>= 7n;
      }
      this.byte(Number(value));
      return;
    }
    while (value >= 0x80) {
      this.byte((value % 0x80) | 0x80);
      value = Math.floor(value / 0x80);
    }
    this.byte(value);
  }

  finish() {
    return this.buf.slice(0, this.len);
  }
}

function checkUint(field, value, bits) {
  if (bits === 64) {
    if (typeof value === 'bigint') {
      if (value < 0n || value > U64_MAX) throw new RangeError(`${field}: ${value} is not a u64`);
      return value;
    }
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`${field}: ${value} is not a u64 (numbers must be safe integers; use a bigint above 2^53 - 1)`);
    }
    return value;
  }
  const max = bits === 16 ? 0xffff : 0xffffffff;
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${field}: ${value} is not a u${bits}`);
  }
  return value;
}

function writeBytes(w, field, value) {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${field}: expected a Uint8Array`);
  w.varint(value.length);
  w.raw(value);
}

function writeString(w, field, value) {
  if (typeof value !== 'string') throw new TypeError(`${field}: expected a string`);
  const bytes = utf8.encode(value);
  w.varint(bytes.length);
  w.raw(bytes);
}

function writeStrings(w, field, value) {
  if (!Array.isArray(value)) throw new TypeError(`${field}: expected an array of strings`);
  w.varint(value.length);
  for (const s of value) writeString(w, field, s);
}

/** @param {Writer} w @param {string} field @param {FieldType} type @param {unknown} value */
function write(w, field, type, value) {
  switch (type) {
    case 'u16': return w.varint(checkUint(field, value, 16));
    case 'u32':
    case 'code': return w.varint(checkUint(field, value, 32));
    case 'u64': return w.varint(checkUint(field, value, 64));
    case 'bool':
      if (typeof value !== 'boolean') throw new TypeError(`${field}: expected a boolean`);
      return w.byte(value ? 1 : 0);
    case 'string': return writeString(w, field, value);
    case 'bytes': return writeBytes(w, field, value);
    case 'vec<string>': return writeStrings(w, field, value);
    case 'option<since>':
      if (value === null || value === undefined) return w.byte(0);
      if (typeof value !== 'object') throw new TypeError(`${field}: expected {epoch, seq} or null`);
      w.byte(1);
      w.varint(checkUint(`${field}.epoch`, value.epoch, 64));
      return w.varint(checkUint(`${field}.seq`, value.seq, 64));
    case 'option<vec<string>>':
      if (value === null || value === undefined) return w.byte(0);
      w.byte(1);
      return writeStrings(w, field, value);
    default: throw new Error(`unknown field type ${type}`);
  }
}

function encodeBody(schema, enumName, frame) {
  if (frame === null || typeof frame !== 'object') throw new TypeError(`${enumName}: expected a frame object`);
  const tag = schema.findIndex(([name]) => name === frame.type);
  if (tag < 0) throw new TypeError(`${enumName}: unknown frame type ${JSON.stringify(frame.type)}`);
  const w = new Writer();
  w.varint(tag);
  for (const [field, type] of schema[tag][1]) write(w, `${frame.type}.${field}`, type, frame[field]);
  return w.finish();
}

/** Prepends the LEB128 length prefix to a body. */
function withLength(body) {
  const w = new Writer();
  w.varint(body.length);
  w.raw(body);
  return w.finish();
}

/**
 * Encodes a client frame for a stream: length prefix + postcard body.
 * @param {object} frame e.g. `{type: 'Publish', req: 3, room: 'lobby', body: bytes}`
 * @returns {Uint8Array}
 * @throws {TypeError|RangeError} when the frame does not fit its schema
 */
export function encodeClientFrame(frame) {
  return withLength(encodeBody(CLIENT_FRAMES, 'ClientFrame', frame));
}

/**
 * Encodes a server frame for a stream (used by tests; servers are written in Rust).
 * @param {object} frame
 * @returns {Uint8Array}
 */
export function encodeServerFrame(frame) {
  return withLength(encodeBody(SERVER_FRAMES, 'ServerFrame', frame));
}

/**
 * Encodes a datagram payload (no length prefix: a datagram is one frame).
 * @param {object} datagram e.g. `{type: 'Send', handle: 0, body: bytes}`
 * @returns {Uint8Array}
 */
export function encodeDatagram(datagram) {
  return encodeBody(DATAGRAMS, 'Datagram', datagram);
}

// ---------------------------------------------------------------------------
// Reading.

/** A cursor over one frame body. Every read checks the remaining length. */
class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  get remaining() {
    return this.bytes.length - this.pos;
  }

  byte() {
    if (this.pos >= this.bytes.length) throw malformed('unexpected end of frame');
    return this.bytes[this.pos++];
  }

  /**
   * Unsigned LEB128 of at most `bits` bits (16, 32 or 64), rejecting overlong
   * encodings the way postcard does (too many bytes, or excess bits in the last one).
   * Returns a number, or a bigint for u64 values above 2^53 − 1.
   */
  varint(bits) {
    const maxBytes = Math.ceil(bits / 7);
    let value = 0;
    let big = null; // switches to bigint once the value may exceed 2^53
    for (let i = 0; i < maxBytes; i++) {
      const b = this.byte();
      const low = b & 0x7f;
      if (i === maxBytes - 1 && low >> (bits - 7 * i) !== 0) {
        throw malformed(`varint exceeds u${bits}`);
      }
      if (big === null && i < 7) {
        value += low * 2 ** (7 * i);
      } else {
        if (big === null) big = BigInt(value);
        big |= BigInt(low) << BigInt(7 * i);
      }
      if ((b & 0x80) === 0) {
        if (big === null) return value;
        return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
      }
    }
    throw malformed(`varint longer than ${maxBytes} bytes for u${bits}`);
  }

  /** A length (of bytes or elements) that must fit in what is left, each item taking ≥ 1 byte. */
  length() {
    const n = this.varint(64);
    if (typeof n === 'bigint' || n > this.remaining) throw malformed(`length ${n} exceeds the ${this.remaining} bytes left`);
    return n;
  }

  bytesField() {
    const n = this.length();
    const out = this.bytes.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string() {
    const n = this.length();
    const view = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return utf8Strict.decode(view);
    } catch {
      throw malformed('invalid UTF-8 in a string');
    }
  }

  strings() {
    const n = this.length();
    const out = [];
    for (let i = 0; i < n; i++) out.push(this.string());
    return out;
  }

  optionTag() {
    const tag = this.byte();
    if (tag > 1) throw malformed(`invalid Option tag ${tag}`);
    return tag === 1;
  }
}

/** @param {Reader} r @param {FieldType} type */
function read(r, type) {
  switch (type) {
    case 'u16': return r.varint(16);
    case 'u32':
    case 'code': return r.varint(32);
    case 'u64': return r.varint(64);
    case 'bool': {
      const b = r.byte();
      if (b > 1) throw malformed(`invalid bool byte ${b}`);
      return b === 1;
    }
    case 'string': return r.string();
    case 'bytes': return r.bytesField();
    case 'vec<string>': return r.strings();
    case 'option<since>': return r.optionTag() ? { epoch: r.varint(64), seq: r.varint(64) } : null;
    case 'option<vec<string>>': return r.optionTag() ? r.strings() : null;
    default: throw new Error(`unknown field type ${type}`);
  }
}

function decodeBody(schema, enumName, body) {
  if (!(body instanceof Uint8Array)) throw new TypeError(`${enumName}: expected a Uint8Array`);
  const r = new Reader(body);
  let tag;
  try {
    tag = r.varint(32);
  } catch (e) {
    throw malformed(`${enumName}: ${e.message}`);
  }
  if (tag >= schema.length) {
    throw new CodecError('UnknownVariant', `unknown ${enumName} type ${tag}`, tag);
  }
  const [type, fields] = schema[tag];
  const frame = { type };
  try {
    for (const [field, fieldType] of fields) frame[field] = read(r, fieldType);
  } catch (e) {
    if (e instanceof CodecError) throw malformed(`${enumName}::${type}: ${e.message}`);
    throw e;
  }
  if (r.remaining !== 0) throw malformed(`${enumName}::${type}: ${r.remaining} trailing bytes after the frame`);
  return frame;
}

/**
 * Decodes one server frame body (without its length prefix).
 * @param {Uint8Array} body
 * @returns {object}
 * @throws {CodecError}
 */
export function decodeServerFrame(body) {
  return decodeBody(SERVER_FRAMES, 'ServerFrame', body);
}

/**
 * Decodes one client frame body (without its length prefix); used by tests.
 * @param {Uint8Array} body
 * @returns {object}
 * @throws {CodecError}
 */
export function decodeClientFrame(body) {
  return decodeBody(CLIENT_FRAMES, 'ClientFrame', body);
}

/**
 * Decodes a datagram payload.
 * @param {Uint8Array} payload
 * @returns {object}
 * @throws {CodecError}
 */
export function decodeDatagram(payload) {
  return decodeBody(DATAGRAMS, 'Datagram', payload);
}

/**
 * The LEB128 u32 length prefix at the front of `buf`, not consumed.
 * @param {Uint8Array} buf
 * @returns {{len: number, size: number} | null} null when more bytes are needed
 * @throws {CodecError} `BadLength` when it is not a valid u32 varint
 */
export function readLengthPrefix(buf) {
  let len = 0;
  for (let i = 0; i < 5 && i < buf.length; i++) {
    const b = buf[i];
    len += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) {
      if (len > 0xffffffff) throw new CodecError('BadLength', 'invalid length prefix');
      return { len, size: i + 1 };
    }
  }
  if (buf.length >= 5) throw new CodecError('BadLength', 'invalid length prefix');
  return null;
}

/**
 * Cuts a byte stream into frame bodies: push chunks as they arrive, then take
 * whole frames with `next()`. The length is checked against `maxFrame` before a
 * body is awaited, so a hostile length cannot make it buffer without bound.
 *
 * ```js
 * const frames = new FrameDecoder(decodeServerFrame);
 * frames.push(chunk);
 * for (let f; (f = frames.next()) !== null;) handle(f);
 * ```
 */
export class FrameDecoder {
  /**
   * @param {(body: Uint8Array) => object} decode e.g. `decodeServerFrame`
   * @param {number} [maxFrame] largest accepted body, bytes
   */
  constructor(decode, maxFrame = MAX_SERVER_FRAME) {
    this.decode = decode;
    this.maxFrame = maxFrame;
    /** @type {Uint8Array} */
    this.buf = new Uint8Array(0);
  }

  /** Appends a chunk read from the stream. @param {Uint8Array} chunk */
  push(chunk) {
    if (this.buf.length === 0) {
      this.buf = chunk;
      return;
    }
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    this.buf = joined;
  }

  /** Bytes buffered but not yet returned as a frame. */
  get buffered() {
    return this.buf.length;
  }

  /**
   * The next whole frame, or null when more bytes are needed. A complete frame is
   * consumed even when it fails to decode (`CodecError`), so after
   * `UnknownVariant` the caller may carry on.
   * @returns {object | null}
   * @throws {CodecError}
   */
  next() {
    const prefix = readLengthPrefix(this.buf);
    if (prefix === null) return null;
    if (prefix.len > this.maxFrame) {
      throw new CodecError('TooLarge', `frame of ${prefix.len} bytes exceeds the limit of ${this.maxFrame}`);
    }
    const end = prefix.size + prefix.len;
    if (this.buf.length < end) return null;
    const body = this.buf.subarray(prefix.size, end);
    this.buf = this.buf.subarray(end);
    return this.decode(body);
  }
}

// ---------------------------------------------------------------------------
// The WebSocket mapping (PROTOCOL.md §16): one WebSocket message per frame, behind
// a lane byte that says which WebTransport channel it stands for. Mirrors
// `src/protocol/lane.rs`; the bytes are pinned by `tests/vectors/websocket.json`.

/**
 * The lanes of a WebSocket message (its first byte). 4–255 are reserved: a
 * receiver ignores them.
 * @type {Readonly<{Control: 0, Room: 1, RoomEnd: 2, Volatile: 3}>}
 */
export const Lane = Object.freeze({ Control: 0, Room: 1, RoomEnd: 2, Volatile: 3 });

/** The WebSocket subprotocol a client offers (`Sec-WebSocket-Protocol`). */
export const WEBSOCKET_SUBPROTOCOL = 'wtgate.v1';

function laneMessage(lane, handle, body) {
  const w = new Writer();
  w.byte(lane);
  if (handle !== null) w.varint(checkUint('handle', handle, 32));
  if (body !== null) w.raw(body);
  return w.finish();
}

/**
 * A lane-0 message carrying a client frame (no length prefix: the message has a length).
 * @param {object} frame e.g. `{type: 'Hello', version: 1, token}`
 * @returns {Uint8Array}
 */
export function encodeControlMessage(frame) {
  return laneMessage(Lane.Control, null, encodeBody(CLIENT_FRAMES, 'ClientFrame', frame));
}

/**
 * A lane-0 message carrying a server frame (used by tests; servers are written in Rust).
 * @param {object} frame
 * @returns {Uint8Array}
 */
export function encodeServerControlMessage(frame) {
  return laneMessage(Lane.Control, null, encodeBody(SERVER_FRAMES, 'ServerFrame', frame));
}

/**
 * A lane-1 message: one server frame of room `handle`'s stream (used by tests).
 * @param {number} handle @param {object} frame
 * @returns {Uint8Array}
 */
export function encodeRoomMessage(handle, frame) {
  return laneMessage(Lane.Room, handle, encodeBody(SERVER_FRAMES, 'ServerFrame', frame));
}

/**
 * A lane-2 message: room `handle`'s stream ended (used by tests).
 * @param {number} handle
 * @returns {Uint8Array}
 */
export function encodeRoomEndMessage(handle) {
  return laneMessage(Lane.RoomEnd, handle, null);
}

/**
 * A lane-3 message carrying a datagram (`Send` from clients, `Recv` from servers).
 * @param {object} datagram e.g. `{type: 'Send', handle: 0, body: bytes}`
 * @returns {Uint8Array}
 */
export function encodeVolatileMessage(datagram) {
  return laneMessage(Lane.Volatile, null, encodeBody(DATAGRAMS, 'Datagram', datagram));
}

/**
 * Splits a WebSocket message into its lane and what follows. Only the lane byte
 * and the handle are checked here; the frame is decoded by the caller
 * (`decodeServerFrame`, `decodeClientFrame`, `decodeDatagram` on `body`).
 * @param {Uint8Array} message
 * @returns {{lane: 'control', body: Uint8Array}
 *   | {lane: 'room', handle: number, body: Uint8Array}
 *   | {lane: 'room_end', handle: number}
 *   | {lane: 'volatile', body: Uint8Array}
 *   | {lane: 'unknown', value: number}}
 *   `unknown`: a reserved lane (4–255), to be ignored
 * @throws {CodecError} `Malformed`: an empty message, a truncated or overlong
 *   handle, bytes after a room end
 */
export function parseLaneMessage(message) {
  if (!(message instanceof Uint8Array)) throw new TypeError('a lane message must be a Uint8Array');
  if (message.length === 0) throw malformed('empty WebSocket message');
  const lane = message[0];
  const rest = message.subarray(1);
  const handle = () => {
    const r = new Reader(rest);
    try {
      return { handle: r.varint(32), used: r.pos };
    } catch (e) {
      throw malformed(`room handle: ${e.message}`);
    }
  };
  switch (lane) {
    case Lane.Control:
      return { lane: 'control', body: rest };
    case Lane.Room: {
      const { handle: h, used } = handle();
      return { lane: 'room', handle: h, body: rest.subarray(used) };
    }
    case Lane.RoomEnd: {
      const { handle: h, used } = handle();
      if (used !== rest.length) throw malformed('bytes after a room end');
      return { lane: 'room_end', handle: h };
    }
    case Lane.Volatile:
      return { lane: 'volatile', body: rest };
    default:
      return { lane: 'unknown', value: lane };
  }
}
