// protocol.js against the byte-exact vectors shared with the Rust codec, and
// against malformed input.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';

import {
  CodecError,
  FrameDecoder,
  VARIANTS,
  decodeClientFrame,
  decodeDatagram,
  decodeServerFrame,
  encodeClientFrame,
  encodeDatagram,
  encodeServerFrame,
  encodeControlMessage,
  encodeRoomEndMessage,
  encodeRoomMessage,
  encodeServerControlMessage,
  encodeVolatileMessage,
  errorName,
  ErrorCode,
  Lane,
  parseLaneMessage,
  readLengthPrefix,
} from '../protocol.js';
import { VECTORS_DIR, bytesToHex, hexToBytes, load, loadLanes, parseJsonLossless } from './vectors.mjs';

const FILES = {
  client_frames: { encode: encodeClientFrame, decode: decodeClientFrame, prefixed: true, variants: VARIANTS.client },
  server_frames: { encode: encodeServerFrame, decode: decodeServerFrame, prefixed: true, variants: VARIANTS.server },
  datagrams: { encode: encodeDatagram, decode: decodeDatagram, prefixed: false, variants: VARIANTS.datagram },
};

/** Decodes a whole vector's bytes: one length-prefixed frame, or one datagram. */
function decodeAll(kind, bytes) {
  const { decode, prefixed } = FILES[kind];
  if (!prefixed) return decode(bytes);
  const frames = new FrameDecoder(decode);
  frames.push(bytes);
  const frame = frames.next();
  assert.notEqual(frame, null, 'a whole frame is buffered');
  assert.equal(frames.buffered, 0, 'nothing is left over');
  return frame;
}

/** Like decodeAll, without asserting that the bytes hold exactly one frame. */
function tryDecode(kind, bytes) {
  const { decode, prefixed } = FILES[kind];
  if (!prefixed) return decode(bytes);
  const frames = new FrameDecoder(decode);
  frames.push(bytes);
  return frames.next();
}

test('the vector files are the known ones: three frame files and the WebSocket lanes', () => {
  const files = readdirSync(VECTORS_DIR).filter((f) => f.endsWith('.json')).sort();
  assert.deepEqual(files, [...Object.keys(FILES), 'websocket'].map((f) => `${f}.json`).sort());
});

for (const [kind, { encode, variants }] of Object.entries(FILES)) {
  const vectors = load(kind);

  describe(`vectors: ${kind}`, () => {
    test('every variant has at least one vector', () => {
      const covered = new Set(vectors.map((v) => v.frame.type));
      const missing = variants.filter((v) => !covered.has(v));
      assert.deepEqual(missing, [], `variants without a vector in ${kind}.json`);
      const unknown = [...covered].filter((v) => !variants.includes(v));
      assert.deepEqual(unknown, [], `vectors for variants protocol.js does not know`);
    });

    for (const v of vectors) {
      test(`${v.name}: encodes to the vector's bytes`, () => {
        assert.equal(bytesToHex(encode(v.frame)), v.hex);
      });

      test(`${v.name}: decodes to the vector's frame`, () => {
        assert.deepEqual(decodeAll(kind, hexToBytes(v.hex)), v.frame);
      });

      if (FILES[kind].prefixed) {
        test(`${v.name}: decodes when fed one byte at a time`, () => {
          const frames = new FrameDecoder(FILES[kind].decode);
          const bytes = hexToBytes(v.hex);
          let frame = null;
          for (let i = 0; i < bytes.length; i++) {
            assert.equal(frame, null, `no frame before byte ${i}`);
            frames.push(bytes.subarray(i, i + 1));
            frame = frames.next();
          }
          assert.deepEqual(frame, v.frame);
          assert.equal(frames.buffered, 0);
        });
      }
    }
  });
}

describe('value mapping', () => {
  test('u64 decodes to a number when safe, a bigint above 2^53 - 1', () => {
    const safe = decodeServerFrame(encodeServerFrame({ type: 'Ack', req: 1, seq: Number.MAX_SAFE_INTEGER }).subarray(1));
    assert.equal(safe.seq, Number.MAX_SAFE_INTEGER);
    const above = decodeServerFrame(encodeServerFrame({ type: 'Ack', req: 1, seq: 2n ** 53n }).subarray(1));
    assert.equal(above.seq, 2n ** 53n);
  });

  test('encoders take numbers or bigints for u64 and refuse what does not fit', () => {
    const a = encodeClientFrame({ type: 'Join', req: 1, room: 'r', since: { epoch: 7, seq: 42 } });
    const b = encodeClientFrame({ type: 'Join', req: 1, room: 'r', since: { epoch: 7n, seq: 42n } });
    assert.deepEqual(a, b);
    const join = (since) => () => encodeClientFrame({ type: 'Join', req: 1, room: 'r', since });
    assert.throws(join({ epoch: 1, seq: 2 ** 53 }), RangeError);
    assert.throws(join({ epoch: 2n ** 64n, seq: 0 }), RangeError);
    assert.throws(join({ epoch: 1, seq: -1 }), RangeError);
    assert.throws(join({ epoch: 1 }), RangeError);
    assert.throws(join(42), TypeError);
    assert.throws(() => encodeClientFrame({ type: 'Join', req: 2 ** 32, room: 'r', since: null }), RangeError);
    assert.throws(() => encodeClientFrame({ type: 'Hello', version: 65536, token: '' }), RangeError);
    assert.throws(() => encodeClientFrame({ type: 'Publish', req: 1, room: 'r', body: 'text' }), TypeError);
    assert.throws(() => encodeClientFrame({ type: 'Fly', req: 1 }), TypeError);
  });

  test('undefined encodes as None like null', () => {
    assert.deepEqual(
      encodeClientFrame({ type: 'Join', req: 1, room: 'r' }),
      encodeClientFrame({ type: 'Join', req: 1, room: 'r', since: null }),
    );
  });

  test('error code names', () => {
    assert.equal(errorName(ErrorCode.Unauthorized), 'Unauthorized');
    assert.equal(errorName(16), 'Internal');
    assert.equal(errorName(1000), 'Other(1000)');
  });

  test('the lossless JSON reader keeps digits inside strings', () => {
    assert.deepEqual(parseJsonLossless('{"a":"18446744073709551615","b":18446744073709551615,"c":[1,2]}'), {
      a: '18446744073709551615',
      b: 18446744073709551615n,
      c: [1, 2],
    });
  });
});

/** Runs `fn`; it may return anything or throw a CodecError, nothing else. */
function onlyCodecErrors(fn, what) {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof CodecError, `${what}: threw ${e?.name}: ${e?.message}`);
    assert.ok(['TooLarge', 'BadLength', 'UnknownVariant', 'Malformed'].includes(e.kind), `${what}: kind ${e.kind}`);
  }
}

describe('malformed input', () => {
  const malformed = (hex, decode = decodeServerFrame) => {
    assert.throws(() => decode(hexToBytes(hex)), (e) => e instanceof CodecError && e.kind === 'Malformed');
  };

  test('truncated bodies', () => {
    for (const v of load('server_frames')) {
      const body = hexToBytes(v.hex).subarray(readLengthPrefix(hexToBytes(v.hex)).size);
      for (let n = 0; n < body.length; n++) {
        assert.throws(() => decodeServerFrame(body.subarray(0, n)), CodecError, `${v.name} cut at ${n}`);
      }
    }
  });

  test('trailing bytes', () => malformed('010601ff')); // Ack { req: 6, seq: 1 } + ff
  test('bool other than 0 or 1', () => malformed('020105' + '6c6f626279' + '00' + '00' + '00' + '02' + '00'));
  test('Option tag other than 0 or 1', () => malformed('01010172' + '02', decodeClientFrame));
  test('invalid UTF-8', () => malformed('0a01ff'));
  test('a length beyond the body', () => malformed('0a05616263'));
  test('u32 varint with excess bits', () => malformed('01ffffffff1f00')); // req = 2^33 - 1
  test('u64 varint of 11 bytes', () => malformed('0101' + 'ff'.repeat(10) + '01'));
  test('u64 varint with excess bits in the 10th byte', () => malformed('0101' + 'ff'.repeat(9) + '02'));
  test('u16 varint of 4 bytes', () => malformed('00ffff8300', decodeClientFrame));
  test('u16 varint with excess bits', () => malformed('00ffff0400', decodeClientFrame));
  test('empty body', () => malformed(''));

  test('unknown variants are told apart, and skipped on streams', () => {
    assert.throws(() => decodeServerFrame(hexToBytes('63')), (e) => e.kind === 'UnknownVariant' && e.tag === 99);
    assert.throws(() => decodeDatagram(hexToBytes('0700')), (e) => e.kind === 'UnknownVariant' && e.tag === 7);
    const frames = new FrameDecoder(decodeServerFrame);
    frames.push(hexToBytes('03630102' + '03010601')); // unknown frame 99, then Ack
    assert.throws(() => frames.next(), (e) => e.kind === 'UnknownVariant');
    assert.deepEqual(frames.next(), { type: 'Ack', req: 6, seq: 1 });
    assert.equal(frames.next(), null);
  });

  test('length prefix: too large before the body arrives, invalid, incomplete', () => {
    const frames = new FrameDecoder(decodeServerFrame, 1024);
    frames.push(hexToBytes('8180')); // incomplete prefix
    assert.equal(frames.next(), null);
    frames.push(hexToBytes('01')); // 2^14 + 1
    assert.throws(() => frames.next(), (e) => e.kind === 'TooLarge');
    assert.throws(() => readLengthPrefix(hexToBytes('ffffffff10')), (e) => e.kind === 'BadLength');
    assert.throws(() => readLengthPrefix(hexToBytes('ffffffff8f')), (e) => e.kind === 'BadLength');
    assert.deepEqual(readLengthPrefix(hexToBytes('ffffffff0f')), { len: 2 ** 32 - 1, size: 5 });
    assert.equal(readLengthPrefix(hexToBytes('ffff')), null);
  });

  test('random bytes and bit flips never throw anything but CodecError', () => {
    // A small deterministic PRNG (xorshift32) so a failure can be replayed.
    let state = 0x9e3779b9;
    const rand = () => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) / 2 ** 32;
    };
    const decoders = [decodeServerFrame, decodeClientFrame, decodeDatagram];
    for (let i = 0; i < 20_000; i++) {
      const bytes = Uint8Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256));
      for (const decode of decoders) onlyCodecErrors(() => decode(bytes), `random #${i}`);
      const frames = new FrameDecoder(decodeServerFrame, 64);
      frames.push(bytes);
      onlyCodecErrors(() => {
        while (frames.next() !== null);
      }, `stream #${i}`);
    }
    const all = Object.keys(FILES).flatMap((kind) => load(kind).map((v) => [kind, v]));
    for (const [kind, v] of all) {
      const bytes = hexToBytes(v.hex);
      for (let bit = 0; bit < bytes.length * 8; bit++) {
        const flipped = bytes.slice();
        flipped[bit >> 3] ^= 1 << (bit & 7);
        onlyCodecErrors(() => tryDecode(kind, flipped), `${v.name} bit ${bit}`);
      }
    }
  });
});

describe('vectors: websocket (lanes, PROTOCOL.md §16)', () => {
  const vectors = loadLanes();
  const LANE_NUMBER = { control: Lane.Control, room: Lane.Room, room_end: Lane.RoomEnd, volatile: Lane.Volatile };
  const DECODE = { ClientFrame: decodeClientFrame, ServerFrame: decodeServerFrame, Datagram: decodeDatagram };

  /** The encoder for a vector: what the client sends, or what tests play as the server. */
  function encode(v) {
    switch (v.lane) {
      case 'control': return v.type === 'ClientFrame' ? encodeControlMessage(v.frame) : encodeServerControlMessage(v.frame);
      case 'room': return encodeRoomMessage(v.handle, v.frame);
      case 'room_end': return encodeRoomEndMessage(v.handle);
      case 'volatile': return encodeVolatileMessage(v.frame);
      default: throw new Error(`unknown lane ${v.lane} in websocket.json`);
    }
  }

  test('every lane, both directions of control, and both datagrams have a vector', () => {
    const covered = new Set(vectors.map((v) => `${v.lane}/${v.type}`));
    for (const needed of ['control/ClientFrame', 'control/ServerFrame', 'room/ServerFrame', 'room_end/null', 'volatile/Datagram']) {
      assert.ok(covered.has(needed), `no vector for ${needed}`);
    }
    const datagrams = new Set(vectors.filter((v) => v.lane === 'volatile').map((v) => v.frame.type));
    assert.deepEqual([...datagrams].sort(), ['Recv', 'Send']);
    assert.ok(vectors.some((v) => v.handle !== null && v.handle >= 128), 'a handle of more than one LEB128 byte');
  });

  for (const v of vectors) {
    test(`${v.name}: encodes to the vector's bytes`, () => {
      assert.equal(bytesToHex(encode(v)), v.hex);
    });

    test(`${v.name}: parses to the vector's lane, handle and frame`, () => {
      const bytes = hexToBytes(v.hex);
      assert.equal(bytes[0], LANE_NUMBER[v.lane]);
      const parsed = parseLaneMessage(bytes);
      assert.equal(parsed.lane, v.lane);
      if (v.lane === 'room' || v.lane === 'room_end') assert.equal(parsed.handle, v.handle);
      else assert.equal(parsed.handle, undefined);
      if (v.lane === 'room_end') {
        assert.equal(v.frame, null);
        assert.equal(parsed.body, undefined);
      } else {
        assert.deepEqual(DECODE[v.type](parsed.body), v.frame);
      }
    });
  }

  test('a control message is the length-prefixed frame without its prefix', () => {
    for (const v of vectors.filter((v) => v.lane === 'control')) {
      const prefixed = v.type === 'ClientFrame' ? encodeClientFrame(v.frame) : encodeServerFrame(v.frame);
      const body = prefixed.subarray(readLengthPrefix(prefixed).size);
      assert.equal(bytesToHex(encode(v)), '00' + bytesToHex(body), v.name);
    }
  });

  test('malformed lane messages: empty, truncated or overlong handle, bytes after a room end', () => {
    const bad = (hex, why) => assert.throws(() => parseLaneMessage(hexToBytes(hex)), (e) => e instanceof CodecError && e.kind === 'Malformed', why);
    bad('', 'empty');
    bad('01', 'room without a handle');
    bad('0180', 'room with a truncated handle');
    bad('02', 'room end without a handle');
    bad('0280', 'room end with a truncated handle');
    bad('02ffffffff1f', 'a handle above u32');
    bad('020000', 'a byte after the room end');
    assert.throws(() => encodeRoomEndMessage(2 ** 32), RangeError);
    assert.throws(() => encodeRoomMessage(-1, { type: 'PresenceJoin', user: 'x' }), RangeError);
  });

  test('reserved lanes 4-255 are reported as unknown, to be ignored', () => {
    for (const lane of [4, 17, 255]) {
      assert.deepEqual(parseLaneMessage(Uint8Array.of(lane, 1, 2, 3)), { lane: 'unknown', value: lane });
      assert.deepEqual(parseLaneMessage(Uint8Array.of(lane)), { lane: 'unknown', value: lane });
    }
  });

  test('an empty control or volatile body parses (its frame decoder then refuses it)', () => {
    assert.deepEqual(parseLaneMessage(Uint8Array.of(0)), { lane: 'control', body: new Uint8Array(0) });
    assert.throws(() => decodeServerFrame(parseLaneMessage(Uint8Array.of(0)).body), (e) => e.kind === 'Malformed');
    assert.deepEqual(parseLaneMessage(Uint8Array.of(3)), { lane: 'volatile', body: new Uint8Array(0) });
  });

  test('random lane messages never throw anything but CodecError', () => {
    let state = 0x1234567;
    const rand = () => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) / 2 ** 32;
    };
    for (let i = 0; i < 20_000; i++) {
      const bytes = Uint8Array.from({ length: Math.floor(rand() * 24) }, (_, j) => (j === 0 ? Math.floor(rand() * 6) : Math.floor(rand() * 256)));
      onlyCodecErrors(() => {
        const m = parseLaneMessage(bytes);
        if (m.lane === 'control' || m.lane === 'room') decodeServerFrame(m.body);
        if (m.lane === 'volatile') decodeDatagram(m.body);
      }, `lane message #${i}`);
    }
  });
});
