// websocket.js and the transport choice of wtgate.js against a scripted fake
// WebSocket (and the fake WebTransport): the lanes of PROTOCOL.md §16, close codes,
// the fallback from WebTransport, its timeout and the page's memory of it.

import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { connect, ErrorCode } from '../wtgate.js';
import { encodeRoomMessage } from '../protocol.js';
import { errorCodeOfClose, websocketUrlFor } from '../websocket.js';
import { FakeTransport, FakeWebSocket, tick, welcoming, welcomingSocket } from './fake-transport.mjs';

const utf8 = (s) => new TextEncoder().encode(s);
let serial = 0;
/** A URL on a server of its own: the fallback memory is per server, and per module. */
const freshUrl = (ns = 'chat') => `https://server-${++serial}.test:4433/${ns}`;

async function until(pred, what, ms = 2000) {
  const started = Date.now();
  while (!pred()) {
    if (Date.now() - started > ms) assert.fail(`timed out waiting for ${what}`);
    await tick(5);
  }
}

/** A Join handler over lanes: the room (lane 1) first, then `Joined` on lane 0. */
function joiningSocket(ws, { epoch = 100, seq = 0, recovered = () => false, members = [], frames = () => [], handle = 1 } = {}) {
  ws.handlers.Join = (f) => {
    const write = ws.openRoom(f.room, handle);
    for (const frame of frames(f)) write(frame);
    ws.rooms = { ...(ws.rooms ?? {}), [f.room]: write };
    ws.send0({ type: 'Joined', req: f.req, room: f.room, handle, epoch, seq: typeof seq === 'function' ? seq(f) : seq, recovered: recovered(f), members });
  };
  ws.handlers.Leave = (f) => {
    ws.send0({ type: 'Left', req: f.req, room: f.room });
    ws.rooms[f.room].end();
  };
}

const message = (seq, text, from = 'bob') => ({ type: 'Message', seq, from, body: utf8(text), ts: 1_700_000_000_000 + seq });

let clients = [];
let reported = [];
const originalConsoleError = console.error;

beforeEach(() => {
  globalThis.WebTransport = FakeTransport;
  globalThis.WebSocket = FakeWebSocket;
  FakeTransport.made = [];
  FakeTransport.onCreate = welcoming('ann');
  FakeWebSocket.made = [];
  FakeWebSocket.onCreate = welcomingSocket('ann');
  clients = [];
  reported = [];
  console.error = (...args) => reported.push(args.map(String).join(' '));
});

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  console.error = originalConsoleError;
  delete globalThis.WebTransport;
  delete globalThis.WebSocket;
});

async function client(url, options = {}) {
  const c = await connect(url, { token: 'tok', reconnect: { initialDelay: 5, maxDelay: 20 }, ...options });
  clients.push(c);
  return c;
}

test('close codes map to error codes; the WebSocket URL is the WebTransport one with wss:', () => {
  assert.equal(errorCodeOfClose(1000), 0);
  assert.equal(errorCodeOfClose(4002), ErrorCode.Unauthorized);
  assert.equal(errorCodeOfClose(4012), ErrorCode.SlowConsumer);
  assert.equal(errorCodeOfClose(4017), ErrorCode.TokenExpired);
  assert.equal(errorCodeOfClose(1006), null);
  assert.equal(errorCodeOfClose(1001), null);
  assert.equal(websocketUrlFor('https://example.test:4433/chat'), 'wss://example.test:4433/chat');
  assert.equal(websocketUrlFor('https://[::1]:9/notifications?x=1'), 'wss://[::1]:9/notifications?x=1');
});

test("transports: ['websocket']: Hello on lane 0 offering wtgate.v1; no WebTransport at all", async () => {
  const url = freshUrl();
  FakeWebSocket.onCreate = welcomingSocket('ann', { online: ['ann', 'bob'] });
  const c = await client(url, { transports: ['websocket'], token: async () => 'fresh' });
  const ws = FakeWebSocket.made[0];
  assert.equal(FakeTransport.made.length, 0);
  assert.equal(ws.url, url.replace('https:', 'wss:'));
  assert.deepEqual(ws.protocols, ['wtgate.v1']);
  assert.equal(ws.binaryType, 'arraybuffer');
  assert.deepEqual(ws.received[0], { type: 'Hello', version: 1, token: 'fresh' });
  assert.deepEqual(ws.lanes, ['control']);
  assert.equal(c.transport, 'websocket');
  assert.equal(c.user, 'ann');
  assert.deepEqual(c.onlineUsers, ['ann', 'bob']);
  const connected = await new Promise((resolve) => c.once('connect', resolve));
  assert.equal(connected.transport, 'websocket');
});

test('rooms over lanes: frames before Joined, presence, volatile both ways, leave ends the room', async () => {
  const c = await client(freshUrl(), { transports: ['websocket'], websocketUrl: 'ws://127.0.0.1:8080/chat' });
  const ws = FakeWebSocket.made[0];
  assert.equal(ws.url, 'ws://127.0.0.1:8080/chat');
  joiningSocket(ws, { epoch: 100, seq: 5, members: ['ann'], handle: 300, frames: () => [message(5, 'early'), { type: 'PresenceJoin', user: 'bob' }] });
  const room = await c.join('lobby');
  const events = [];
  room.on('join', (e) => events.push(['join', e.rejoin, e.recovered, e.seq]));
  room.on('presence', (e) => events.push(['presence', e.kind, e.user ?? null]));
  room.on('message', (m) => events.push(['message', m.seq, m.text]));
  room.on('volatile', (v) => events.push(['volatile', v.from, v.text]));
  await until(() => events.length === 4, 'the held events');
  ws.rooms.lobby(message(6, 'live'));
  ws.sendRaw(Uint8Array.of(9, 1, 2, 3)); // a reserved lane: ignored
  await tick(10);
  assert.equal(ws.readyState, 1, 'still open');
  ws.volatile({ type: 'Recv', handle: 300, from: 'bob', body: utf8('typing') });
  ws.volatile({ type: 'Recv', handle: 7, from: 'eve', body: utf8('elsewhere') });
  await until(() => events.length === 6, 'the live message and the volatile event');
  assert.deepEqual(events, [
    ['join', false, false, 5],
    ['presence', 'sync', null],
    ['message', 5, 'early'],
    ['presence', 'join', 'bob'],
    ['message', 6, 'live'],
    ['volatile', 'bob', 'typing'],
  ]);
  assert.equal(room.handle, 300);

  assert.equal(room.sendVolatile('typing'), true);
  assert.deepEqual(ws.volatileSent, [{ type: 'Send', handle: 300, body: utf8('typing') }]);
  assert.throws(() => room.sendVolatile(new Uint8Array(1025)), (e) => e.kind === 'invalid' && /at most 1024 bytes/.test(e.message));
  // A backed-up socket drops volatile events rather than queueing them.
  ws.bufferedAmount = 100_000;
  assert.equal(room.sendVolatile('typing'), true);
  ws.bufferedAmount = 0;
  assert.equal(ws.volatileSent.length, 1);

  await room.leave();
  assert.equal(room.state, 'left');
  ws.volatile({ type: 'Recv', handle: 300, from: 'bob', body: utf8('late') });
  await tick(10);
  assert.equal(events.length, 6, 'nothing after leave');
  assert.deepEqual(ws.lanes.filter((l) => l !== 'control' && l !== 'volatile'), [], 'a client sends lanes 0 and 3 only');
  assert.deepEqual(reported, []);
});

test('an unknown frame variant is skipped on lanes 0 and 1; a malformed room message closes with 4001 and reconnects', async () => {
  const c = await client(freshUrl(), { transports: ['websocket'] });
  const ws = FakeWebSocket.made[0];
  joiningSocket(ws);
  const room = await c.join('lobby');
  const seen = [];
  room.on('message', (m) => seen.push(m.text));
  const disconnects = [];
  c.on('disconnect', (e) => disconnects.push([e.code, e.willReconnect, e.reason]));
  ws.sendRaw(Uint8Array.of(0, 0x63, 1, 2)); // control: variant 99
  ws.sendRaw(Uint8Array.of(1, 1, 0x63)); // room 1: variant 99
  ws.rooms.lobby(message(1, 'after the unknown ones'));
  await until(() => seen.length === 1, 'the message');
  assert.equal(ws.readyState, 1);
  ws.sendRaw(Uint8Array.of(1, 1, 0x06, 0x01, 0x05, 0x61)); // a Message whose string runs past the end
  await until(() => FakeWebSocket.made.length === 2 && c.state === 'connected', 'the reconnection');
  assert.equal(ws.closeInfo.code, 4001);
  assert.match(ws.closeInfo.reason, /room handle 1/);
  assert.deepEqual(disconnects[0].slice(0, 2), [ErrorCode.Protocol, true]);
});

test('protocol violations: a room message for a handle without RoomStream, a text message', async () => {
  for (const [what, bytes] of [
    ['no RoomStream first', Uint8Array.of(1, 5, 0x07, 0x03, 0x62, 0x6f, 0x62)],
    ['text', 'hello'],
    ['empty', new Uint8Array(0)],
    ['room end with trailing bytes', Uint8Array.of(2, 1, 0)],
  ]) {
    const c = await client(freshUrl(), { transports: ['websocket'], reconnect: false });
    const ws = FakeWebSocket.made.at(-1);
    const closed = new Promise((resolve) => c.once('close', resolve));
    await tick(5);
    ws.sendRaw(bytes);
    const info = await closed;
    assert.equal(ws.closeInfo.code, 4001, what);
    assert.equal(info.code, ErrorCode.Protocol, what);
  }
});

test('a room stream the session did not join is reported and its frames dropped until its end', async () => {
  const c = await client(freshUrl(), { transports: ['websocket'] });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const ws = FakeWebSocket.made[0];
  const secret = ws.openRoom('secret', 3);
  secret(message(1, 'not for you'));
  secret.end();
  await until(() => errors.length === 1, 'the error');
  assert.equal(errors[0].kind, 'protocol');
  assert.match(errors[0].message, /"secret"/);
  assert.equal(ws.readyState, 1, 'the session goes on');
});

test('close codes: Error + 4002 refuses connect(); 4012 and 1006 reconnect with since; 4002 later stops', async () => {
  const url = freshUrl();
  FakeWebSocket.onCreate = (ws) => {
    ws.handlers.Hello = () => {
      ws.send0({ type: 'Error', req: 0, code: ErrorCode.Unauthorized, message: 'bad token signature' });
      ws.serverClose(4002, 'bad token signature');
    };
  };
  await assert.rejects(connect(url, { token: 'x', transports: ['websocket'] }), (e) => {
    assert.equal(e.kind, 'server');
    assert.equal(e.code, ErrorCode.Unauthorized);
    assert.match(e.message, /bad token signature/);
    return true;
  });
  // A close code without the Error frame says the same.
  FakeWebSocket.onCreate = (ws) => { ws.handlers.Hello = () => ws.serverClose(4017, 'token expired'); };
  await assert.rejects(connect(url, { token: 'x', transports: ['websocket'] }), (e) => e.kind === 'server' && e.code === ErrorCode.TokenExpired);

  FakeWebSocket.onCreate = (ws) => {
    welcomingSocket('ann')(ws);
    joiningSocket(ws, { epoch: 100, seq: (f) => (f.since ? 3 : 1), recovered: (f) => f.since?.epoch === 100, frames: (f) => (f.since?.seq === 1 ? [message(2, 'missed 2'), message(3, 'missed 3')] : []) });
  };
  const c = await client(url, { transports: ['websocket'] });
  const events = [];
  c.on('disconnect', (e) => events.push(['disconnect', e.code, e.willReconnect]));
  c.on('connect', (e) => events.push(['connect', e.reconnect, e.transport]));
  const room = await c.join('lobby');
  const seen = [];
  room.on('message', (m) => seen.push([m.seq, m.text, m.replayed]));
  room.on('join', (e) => seen.push(['join', e.rejoin, e.recovered]));
  await until(() => seen.length === 1, 'the first join');
  FakeWebSocket.made.at(-1).rooms.lobby(message(1, 'live'));
  await until(() => seen.length === 2, 'the live message');

  FakeWebSocket.made.at(-1).send0({ type: 'Error', req: 0, code: ErrorCode.SlowConsumer, message: 'outbound queue full' });
  FakeWebSocket.made.at(-1).serverClose(4012, 'outbound queue full');
  await until(() => seen.length === 5, 'the replay after 4012');
  assert.deepEqual(FakeWebSocket.made.at(-1).received.find((f) => f.type === 'Join').since, { epoch: 100, seq: 1 });

  FakeWebSocket.made.at(-1).lose();
  await until(() => seen.filter((e) => e[0] === 'join').length === 3, 'the rejoin after 1006');

  FakeWebSocket.onCreate = (ws) => { ws.handlers.Hello = () => ws.serverClose(4002, 'revoked'); };
  const closed = new Promise((resolve) => c.once('close', resolve));
  FakeWebSocket.made.at(-1).serverClose(4013, 'restarting');
  const info = await closed;
  assert.equal(info.code, ErrorCode.Unauthorized);
  assert.deepEqual(seen, [
    ['join', false, false],
    [1, 'live', false],
    ['join', true, true],
    [2, 'missed 2', true],
    [3, 'missed 3', true],
    ['join', true, true],
  ]);
  assert.deepEqual(events, [
    ['connect', false, 'websocket'],
    ['disconnect', ErrorCode.SlowConsumer, true],
    ['connect', true, 'websocket'],
    ['disconnect', null, true],
    ['connect', true, 'websocket'],
    ['disconnect', ErrorCode.GoingAway, true],
  ]);
  assert.equal(c.state, 'closed');
});

test('close() sends 1000 and ends the session without a reconnection', async () => {
  const c = await client(freshUrl(), { transports: ['websocket'] });
  const events = [];
  c.on('close', (e) => events.push(['close', e.code, e.error]));
  c.on('disconnect', () => events.push(['disconnect']));
  await c.close();
  await tick(20);
  assert.deepEqual(FakeWebSocket.made[0].closeInfo, { code: 1000, reason: 'bye' });
  assert.deepEqual(events, [['close', 0, null]]);
  assert.equal(FakeWebSocket.made.length, 1);
});

test('fallback: WebTransport refused → WebSocket; remembered for the server; retried after webtransportRetry', async () => {
  const url = freshUrl();
  FakeTransport.onCreate = (t) => t.refuse();
  const a = await client(url);
  assert.equal(a.transport, 'websocket');
  assert.equal(FakeTransport.made.length, 1);
  assert.equal(FakeWebSocket.made[0].url, url.replace('https:', 'wss:'));

  // Another namespace of the same server, and a reconnection: straight to the WebSocket.
  const b = await client(url.replace('/chat', '/notifications'));
  assert.equal(b.transport, 'websocket');
  FakeWebSocket.made[0].lose();
  await until(() => FakeWebSocket.made.length === 3 && a.state === 'connected', 'the reconnection');
  assert.equal(FakeTransport.made.length, 1, 'WebTransport not tried again yet');
  assert.equal(a.transport, 'websocket');

  // Another server is not affected.
  FakeTransport.onCreate = welcoming('ann');
  const other = await client(freshUrl());
  assert.equal(other.transport, 'webtransport');

  // With webtransportRetry: 0 every connection tries WebTransport first again, and
  // goes back to it once it works.
  const c = await client(url, { webtransportRetry: 0 });
  assert.equal(c.transport, 'webtransport');
  const d = await client(url);
  assert.equal(d.transport, 'webtransport', 'the success cleared the memory');
});

test('fallback after webtransportTimeout when WebTransport does not open; the attempt is closed', async () => {
  FakeTransport.onCreate = (t) => t.stall();
  const started = Date.now();
  const c = await client(freshUrl(), { webtransportTimeout: 150 });
  const took = Date.now() - started;
  assert.equal(c.transport, 'websocket');
  assert.ok(took >= 150 && took < 1000, `fell back after ${took} ms`);
  assert.ok(FakeTransport.made[0].closeInfo, 'the WebTransport attempt is closed');
  // Only WebTransport: the timeout is the general one.
  FakeTransport.onCreate = (t) => t.stall();
  const started2 = Date.now();
  await assert.rejects(connect(freshUrl(), { token: 't', transports: ['webtransport'], webtransportTimeout: 50, timeout: 400 }), (e) => e.kind === 'unreachable' && /within 400 ms/.test(e.message));
  assert.ok(Date.now() - started2 >= 400);
});

test('no fallback when the server refuses over WebTransport; no transport works: one error naming both', async () => {
  FakeTransport.onCreate = (t) => {
    t.handlers.Hello = () => {
      t.send({ type: 'Error', req: 0, code: ErrorCode.Unauthorized, message: 'bad token' });
      t.serverClose(ErrorCode.Unauthorized, 'bad token');
    };
  };
  await assert.rejects(connect(freshUrl(), { token: 'x' }), (e) => e.kind === 'server' && e.code === ErrorCode.Unauthorized);
  assert.equal(FakeWebSocket.made.length, 0, 'no WebSocket tried');

  FakeTransport.onCreate = (t) => t.refuse();
  FakeWebSocket.onCreate = (ws) => ws.refuse();
  const url = freshUrl();
  await assert.rejects(connect(url, { token: 'x' }), (e) => {
    assert.equal(e.kind, 'unreachable');
    assert.match(e.message, /WebTransport: cannot open a WebTransport session to https:\/\/server-\d+\.test:4433\/chat/);
    assert.match(e.message, /then WebSocket: cannot open a WebSocket to wss:\/\/server-\d+\.test:4433\/chat/);
    assert.match(e.message, /close code 1006/);
    return true;
  });
  // A server refusal over the WebSocket after a WebTransport failure is the answer.
  FakeWebSocket.onCreate = (ws) => { ws.handlers.Hello = () => ws.serverClose(4002, 'no'); };
  await assert.rejects(connect(freshUrl(), { token: 'x' }), (e) => e.kind === 'server' && e.code === ErrorCode.Unauthorized);

  delete globalThis.WebTransport;
  delete globalThis.WebSocket;
  await assert.rejects(connect(freshUrl(), { token: 'x' }), (e) => e.kind === 'unsupported' && /no WebTransport/.test(e.message) && /no WebSocket/.test(e.message));
  globalThis.WebSocket = FakeWebSocket;
  FakeWebSocket.onCreate = welcomingSocket('ann');
  const c = await client(freshUrl());
  assert.equal(c.transport, 'websocket', 'no WebTransport in this browser: the WebSocket');
});

test('a server that does not select wtgate.v1 is refused', async () => {
  FakeWebSocket.onCreate = (ws) => { ws.selected = ''; };
  await assert.rejects(connect(freshUrl(), { token: 'x', transports: ['websocket'] }), (e) => e.kind === 'protocol' && /wtgate\.v1/.test(e.message));
  assert.equal(FakeWebSocket.made[0].closeInfo.code, 4001);
});

test('transport options are checked', async () => {
  const bad = async (options, pattern) => assert.rejects(connect(freshUrl(), { token: 'x', ...options }), (e) => e.kind === 'invalid' && pattern.test(e.message));
  await bad({ transports: [] }, /transports/);
  await bad({ transports: ['websocket', 'websocket'] }, /transports/);
  await bad({ transports: ['http'] }, /transports/);
  await bad({ transports: 'websocket' }, /transports/);
  await bad({ webtransportTimeout: -1 }, /webtransportTimeout/);
  await bad({ webtransportRetry: 'soon' }, /webtransportRetry/);
  await bad({ websocketUrl: 'http://127.0.0.1:8080/chat' }, /websocketUrl/);
  assert.equal(FakeTransport.made.length + FakeWebSocket.made.length, 0);
});

test('max_frame is checked on the WebSocket too', async () => {
  FakeWebSocket.onCreate = welcomingSocket('ann', { maxFrame: 100 });
  const c = await client(freshUrl(), { transports: ['websocket'] });
  const ws = FakeWebSocket.made[0];
  joiningSocket(ws);
  const room = await c.join('lobby');
  await assert.rejects(room.publish(new Uint8Array(200)), (e) => e.kind === 'invalid' && /max_frame of 100/.test(e.message));
  ws.handlers.Publish = (f) => ws.send0({ type: 'Ack', req: f.req, seq: 1 });
  assert.equal(await room.publish(new Uint8Array(80)), 1);
});

test('a room end the client did not ask for (no Leave) closes the room with an error', async () => {
  const c = await client(freshUrl(), { transports: ['websocket'] });
  const ws = FakeWebSocket.made[0];
  joiningSocket(ws, { handle: 4 });
  const room = await c.join('lobby');
  const errors = [];
  room.on('error', (e) => errors.push(e));
  await tick(5);
  ws.rooms.lobby.end();
  await until(() => errors.length === 1, 'the room error');
  assert.equal(errors[0].kind, 'closed');
  assert.match(errors[0].message, /room lobby was closed: the server ended the room stream/);
  assert.equal(room.state, 'left');
  assert.equal(c.state, 'connected');
});

test('a RoomStream that names another handle than its lane, or a second RoomStream, is a protocol error', async () => {
  for (const [what, send] of [
    ['handle mismatch', (ws) => ws.sendRaw(encodeRoomMessage(2, { type: 'RoomStream', room: 'lobby', handle: 3 }))],
    ['second header', (ws) => { ws.openRoom('lobby', 2); ws.openRoom('lobby', 2); }],
  ]) {
    const c = await client(freshUrl(), { transports: ['websocket'], reconnect: false });
    const ws = FakeWebSocket.made.at(-1);
    ws.handlers.Join = () => {}; // the join stays pending: its sink is registered
    const joining = c.join('lobby').catch((e) => e);
    await tick(5);
    const closed = new Promise((resolve) => c.once('close', resolve));
    send(ws);
    const info = await closed;
    assert.equal(info.code, ErrorCode.Protocol, what);
    assert.equal(ws.closeInfo.code, 4001, what);
    assert.equal((await joining).kind, 'disconnected', what);
  }
});

test('over WebTransport, client.transport and the connect event say webtransport', async () => {
  const c = await client(freshUrl());
  const connected = await new Promise((resolve) => c.once('connect', resolve));
  assert.equal(c.transport, 'webtransport');
  assert.equal(connected.transport, 'webtransport');
  assert.equal(FakeWebSocket.made.length, 0);
});
