// Loads tests/vectors/*.json (shared with the Rust suite) and maps serde's JSON
// shape onto protocol.js's frame objects.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const VECTORS_DIR = fileURLToPath(new URL('../../tests/vectors/', import.meta.url));

/**
 * JSON.parse that keeps integers above 2^53 − 1 exact, as bigints.
 * (The reviver's `context.source` would do this, but only from Node 21.)
 * String literals are matched first so digits inside strings are left alone.
 */
export function parseJsonLossless(text) {
  const BIG = '\u0000bigint:';
  const marked = text.replace(/"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g, (token) => {
    if (token.startsWith('"') || !/^-?\d+$/.test(token)) return token;
    return Number.isSafeInteger(Number(token)) ? token : JSON.stringify(BIG + token);
  });
  return JSON.parse(marked, (_key, value) =>
    typeof value === 'string' && value.startsWith(BIG) ? BigInt(value.slice(BIG.length)) : value,
  );
}

/**
 * Maps one serde externally tagged frame (`{"Join": {"req": 1, ...}}`) to the
 * protocol.js shape (`{type: 'Join', req: 1, ...}`): byte arrays (`body`, `data`) become
 * Uint8Array; everything else already matches (numbers, bigints above 2^53 − 1,
 * null for None, arrays of strings, error codes as numbers).
 */
export function fromSerde(frame) {
  if (typeof frame === 'string') return { type: frame };
  const entries = Object.entries(frame);
  if (entries.length !== 1) throw new Error(`not an externally tagged enum: ${JSON.stringify(frame)}`);
  const [type, fields] = entries[0];
  const out = { type };
  for (const [name, value] of Object.entries(fields ?? {})) {
    out[name] = name === 'body' || name === 'data' ? Uint8Array.from(value) : value;
  }
  return out;
}

export const hexToBytes = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
export const bytesToHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * The vectors of one file, e.g. `load('server_frames')`.
 * @returns {Array<{name: string, frame: object, hex: string, serde: object}>}
 */
export function load(file) {
  const text = readFileSync(new URL(`${file}.json`, `file://${VECTORS_DIR}`), 'utf8');
  return parseJsonLossless(text).map((v) => ({ name: v.name, frame: fromSerde(v.frame), hex: v.hex, serde: v.frame }));
}

/**
 * The WebSocket lane vectors (`websocket.json`, PROTOCOL.md §16.5): `lane` is
 * `control`, `room`, `room_end` or `volatile`; `type` the frame's enum (null for
 * `room_end`); `handle` for the room lanes; `frame` mapped as in `load` (null for
 * `room_end`); `hex` the whole message.
 * @returns {Array<{name: string, lane: string, type: string|null, handle: number|null, frame: object|null, hex: string}>}
 */
export function loadLanes() {
  const text = readFileSync(new URL('websocket.json', `file://${VECTORS_DIR}`), 'utf8');
  return parseJsonLossless(text).map((v) => ({
    name: v.name,
    lane: v.lane,
    type: v.type,
    handle: v.handle,
    frame: v.frame === null ? null : fromSerde(v.frame),
    hex: v.hex,
  }));
}
