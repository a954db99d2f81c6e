// session.js and wtgate.js against a scripted fake WebTransport: the orderings and
// failures that are hard to force with a real server (room streams before
// `Joined`, malformed and unknown frames, refusals, reconnection with `since`).

import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

import { connect, ErrorCode, WtgateError } from '../wtgate.js';
import { FakeTransport, tick, welcoming } from './fake-transport.mjs';

const utf8 = (s) => new TextEncoder().encode(s);
const URL_CHAT = 'https://example.test:4433/chat';

/** Waits until `pred()` is true (polling), failing after `ms`. */
async function until(pred, what, ms = 2000) {
  const started = Date.now();
  while (!pred()) {
    if (Date.now() - started > ms) assert.fail(`timed out waiting for ${what}`);
    await tick(5);
  }
}

/** A Join handler: opens the room stream, writes `frames` on it, then answers `Joined`. */
function joining(t, { epoch = 100, seq = 0, recovered = () => false, members = [], frames = () => [], handle = 1, replyDelay = 10 } = {}) {
  t.handlers.Join = (f) => {
    const write = t.openRoom(f.room, handle);
    for (const frame of frames(f)) write(frame);
    t.rooms = { ...(t.rooms ?? {}), [f.room]: write };
    setTimeout(() => t.send({ type: 'Joined', req: f.req, room: f.room, handle, epoch, seq: typeof seq === 'function' ? seq(f) : seq, recovered: recovered(f), members }), replyDelay);
  };
}

const message = (seq, text, from = 'bob') => ({ type: 'Message', seq, from, body: utf8(text), ts: 1_700_000_000_000 + seq });

let clients = [];
let reported = [];
const originalConsoleError = console.error;

beforeEach(() => {
  globalThis.WebTransport = FakeTransport;
  FakeTransport.made = [];
  FakeTransport.onCreate = welcoming('ann');
  clients = [];
  reported = [];
  // Errors nobody listened to are logged; collect them so a test can assert on them.
  console.error = (...args) => reported.push(args.map(String).join(' '));
});

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  console.error = originalConsoleError;
  delete globalThis.WebTransport;
});

async function client(options = {}) {
  const c = await connect(URL_CHAT, { token: 'tok', reconnect: { initialDelay: 5, maxDelay: 20 }, ...options });
  clients.push(c);
  return c;
}

test('Hello carries the token; Welcome fills user, session and who is online', async () => {
  FakeTransport.onCreate = welcoming('ann', { online: ['ann', 'bob'] });
  const c = await client({ token: async () => 'fresh-token' });
  const t = FakeTransport.made[0];
  assert.deepEqual(t.received[0], { type: 'Hello', version: 1, token: 'fresh-token' });
  assert.equal(t.url, URL_CHAT);
  assert.equal(c.user, 'ann');
  assert.equal(c.state, 'connected');
  assert.deepEqual(c.onlineUsers, ['ann', 'bob']);
});

test('room frames that arrive before Joined reach listeners attached after `await join()`, after the join event', async () => {
  const c = await client();
  joining(FakeTransport.made[0], { epoch: 100, seq: 5, members: ['ann'], frames: () => [message(5, 'early'), { type: 'PresenceJoin', user: 'bob' }] });
  const room = await c.join('lobby');
  const events = [];
  room.on('join', (e) => events.push(['join', e.rejoin, e.recovered, e.seq]));
  room.on('presence', (e) => events.push(['presence', e.kind, e.user ?? null, e.members]));
  room.on('message', (m) => events.push(['message', m.seq, m.text, m.from, m.replayed, m.epoch]));
  await until(() => events.length === 4, 'four events');
  assert.deepEqual(events, [
    ['join', false, false, 5],
    ['presence', 'sync', null, ['ann']],
    ['message', 5, 'early', 'bob', false, 100],
    ['presence', 'join', 'bob', ['ann', 'bob']],
  ]);
  assert.deepEqual(room.position, { epoch: 100, seq: 5 });
  assert.equal(room.handle, 1);
  assert.equal(room.state, 'joined');
});

test('a room of more than a page: join() reads every page of members with MembersPage before it resolves', async () => {
  const c = await client();
  const t = FakeTransport.made[0];
  const user = (i) => `u${String(i).padStart(4, '0')}`;
  const everyone = Array.from({ length: 1003 }, (_, i) => user(i));
  // The first page in Joined; a presence change arrives on the room stream meanwhile.
  joining(t, { members: everyone.slice(0, 1000), frames: () => [{ type: 'PresenceLeave', user: user(1001) }] });
  const asked = [];
  t.handlers.MembersPage = (f) => {
    asked.push([f.room, f.after, f.limit]);
    const from = everyone.indexOf(f.after) + 1;
    t.send({ type: 'Online', req: f.req, users: everyone.slice(from, from + f.limit) });
  };
  const room = await c.join('big');
  assert.deepEqual(asked, [['big', user(999), 1000]]);
  const events = [];
  room.on('presence', (e) => events.push([e.kind, e.user ?? null, e.members.length]));
  await until(() => events.length === 2, 'the sync and the leave');
  assert.deepEqual(events, [['sync', null, 1003], ['leave', user(1001), 1002]]);
  assert.ok(!room.members.includes(user(1001)));
});

test('reconnects, rejoins with since, flags replayed messages; a new epoch restarts the position', async () => {
  const c = await client();
  const seen = [];
  const clientEvents = [];
  c.on('disconnect', (e) => clientEvents.push(['disconnect', e.code, e.willReconnect]));
  c.on('connect', (e) => clientEvents.push(['connect', e.reconnect]));
  joining(FakeTransport.made[0], { epoch: 100, seq: 3 });
  const room = await c.join('lobby');
  room.on('message', (m) => seen.push([m.seq, m.text, m.replayed]));
  room.on('join', (e) => seen.push(['join', e.rejoin, e.recovered, e.since && Number(e.since.seq)]));
  await tick(5);
  FakeTransport.made[0].rooms.lobby(message(4, 'live'));
  await until(() => room.lastSeq === 4, 'the live message');

  // The server drops the slow consumer; the client comes back and asks from (100, 4).
  FakeTransport.onCreate = (t) => {
    welcoming('ann')(t);
    joining(t, {
      epoch: 100,
      seq: 6,
      recovered: (f) => f.since?.epoch === 100,
      frames: (f) => (f.since?.seq === 4 ? [message(5, 'missed 5'), message(6, 'missed 6')] : []),
    });
  };
  FakeTransport.made[0].serverClose(ErrorCode.SlowConsumer, 'outbound queue full');
  await until(() => seen.filter((e) => e[0] === 6).length === 1, 'the replay');
  assert.deepEqual(FakeTransport.made[1].received.find((f) => f.type === 'Join').since, { epoch: 100, seq: 4 });
  assert.deepEqual(room.position, { epoch: 100, seq: 6 });

  // The room's history is gone after a restart: a new epoch, nothing replayed.
  FakeTransport.onCreate = (t) => {
    welcoming('ann')(t);
    joining(t, { epoch: 200, seq: 0, recovered: () => false });
  };
  FakeTransport.made[1].serverClose(ErrorCode.GoingAway, 'server shutting down');
  await until(() => seen.filter((e) => e[0] === 'join').length === 3, 'the second rejoin');
  assert.deepEqual(FakeTransport.made[2].received.find((f) => f.type === 'Join').since, { epoch: 100, seq: 6 });
  assert.deepEqual(room.position, { epoch: 200, seq: 0 });
  assert.equal(room.recovered, false);
  FakeTransport.made[2].rooms.lobby(message(1, 'new life'));
  await until(() => room.lastSeq === 1, 'a message of the new epoch');

  assert.deepEqual(seen, [
    ['join', false, false, null],
    [4, 'live', false],
    ['join', true, true, 4],
    [5, 'missed 5', true],
    [6, 'missed 6', true],
    ['join', true, false, 6],
    [1, 'new life', false],
  ]);
  assert.deepEqual(clientEvents, [
    ['connect', false],
    ['disconnect', ErrorCode.SlowConsumer, true],
    ['connect', true],
    ['disconnect', ErrorCode.GoingAway, true],
    ['connect', true],
  ]);
});

test('a refused Hello rejects connect() with the server code; Unauthorized stops reconnecting', async () => {
  FakeTransport.onCreate = (t) => {
    t.handlers.Hello = () => {
      t.send({ type: 'Error', req: 0, code: ErrorCode.Unauthorized, message: 'token expired' });
      setTimeout(() => t.serverClose(ErrorCode.Unauthorized, 'token expired'), 5);
    };
  };
  await assert.rejects(connect(URL_CHAT, { token: 'old' }), (e) => {
    assert.ok(e instanceof WtgateError);
    assert.equal(e.kind, 'server');
    assert.equal(e.code, ErrorCode.Unauthorized);
    assert.equal(e.codeName, 'Unauthorized');
    assert.match(e.message, /token expired/);
    return true;
  });

  // Connected first; after a restart the token is refused: the client gives up.
  FakeTransport.onCreate = welcoming('ann');
  const c = await client();
  const closed = new Promise((resolve) => c.on('close', resolve));
  const errors = [];
  c.on('error', (e) => errors.push(e));
  FakeTransport.onCreate = (t) => {
    t.handlers.Hello = () => {
      t.send({ type: 'Error', req: 0, code: ErrorCode.Unauthorized, message: 'bad token signature' });
      t.serverClose(ErrorCode.Unauthorized, 'bad token signature');
    };
  };
  const before = FakeTransport.made.length;
  FakeTransport.made.at(-1).serverClose(ErrorCode.GoingAway, 'restart');
  const info = await closed;
  assert.equal(info.code, ErrorCode.Unauthorized);
  assert.equal(c.state, 'closed');
  assert.equal(errors.length, 1);
  await tick(60);
  assert.equal(FakeTransport.made.length, before + 1, 'one attempt, then no more');
  await assert.rejects(c.join('lobby'), (e) => e.kind === 'disconnected');
});

test('an Error reply rejects only its own request', async () => {
  const c = await client();
  const t = FakeTransport.made[0];
  joining(t, { seq: 0 });
  const room = await c.join('lobby');
  let n = 0;
  t.handlers.Publish = (f) => {
    n += 1;
    if (n === 1) t.send({ type: 'Error', req: f.req, code: ErrorCode.RateLimited, message: 'more than 50 publishes per second' });
    else t.send({ type: 'Ack', req: f.req, seq: 41 + n });
  };
  const [first, second] = await Promise.allSettled([room.publish('a'), room.publish('b')]);
  assert.equal(first.status, 'rejected');
  assert.equal(first.reason.kind, 'server');
  assert.equal(first.reason.code, ErrorCode.RateLimited);
  assert.deepEqual(second, { status: 'fulfilled', value: 43 });
  const reqs = t.received.filter((f) => f.type !== 'Hello').map((f) => f.req);
  assert.equal(new Set(reqs).size, reqs.length, 'request ids are unique');
  assert.ok(reqs.every((r) => r > 0), 'request ids are nonzero');
});

test('unknown server frames are skipped; a malformed one closes the session as a protocol error, then it reconnects', async () => {
  const c = await client();
  const online = [];
  const disconnects = [];
  c.on('online', (e) => online.push([e.kind, e.user ?? null]));
  c.on('disconnect', (e) => disconnects.push([e.code, e.willReconnect, e.reason]));
  const t = FakeTransport.made[0];
  t.send(Uint8Array.of(3, 0x63, 0x01, 0x02)); // variant 99 from a newer server
  t.send({ type: 'OnlineJoin', user: 'bob' });
  await until(() => online.length === 2, 'the online events');
  assert.deepEqual(online, [['sync', null], ['join', 'bob']]);
  t.send(Uint8Array.of(2, 0x0a, 0x05)); // OnlineJoin whose string runs past the frame
  await until(() => FakeTransport.made.length === 2 && c.state === 'connected', 'the reconnection');
  assert.equal(t.closeInfo.closeCode, ErrorCode.Protocol);
  assert.equal(disconnects[0][0], ErrorCode.Protocol);
  assert.equal(disconnects[0][1], true);
  assert.match(disconnects[0][2], /control stream.*length 5 exceeds/);
});

test('notifications: duplicates dropped, ack() sends AckNotification and empties the inbox', async () => {
  const c = await client();
  const t = FakeTransport.made[0];
  t.handlers.AckNotification = (f) => t.send({ type: 'Ack', req: f.req, seq: 0 });
  const got = [];
  c.on('notification', (n) => got.push(n));
  const note = { type: 'Notification', id: 7, kind: 'mention', body: utf8('{"room":"lobby"}'), ts: 1 };
  t.send(note);
  t.send(note);
  t.send({ ...note, id: 2n ** 60n, kind: 'big' });
  await until(() => got.length === 2, 'two notifications');
  await tick(20);
  assert.deepEqual(got.map((n) => [n.id, n.kind]), [[7, 'mention'], [2n ** 60n, 'big']]);
  assert.equal(got[0].text, '{"room":"lobby"}');
  assert.equal(c.notifications.length, 2);
  await got[0].ack();
  await c.ack(2n ** 60n);
  assert.deepEqual(t.received.filter((f) => f.type === 'AckNotification').map((f) => f.id), [7, 2n ** 60n]);
  assert.deepEqual(c.notifications, []);
});

test('two tail-loss probes follow the last control write; a later write starts them over', async () => {
  FakeTransport.onCreate = welcoming('ann');
  const c = await client();
  const t = FakeTransport.made[0];
  joining(t, { handle: 4 });
  const room = await c.join('lobby');
  await until(() => t.probesSent.length >= 2, 'the probes of the Join');
  await tick(20);
  assert.equal(t.probesSent.length, 2, 'two probes per write, no more');
  t.handlers.Publish = (f) => t.send({ type: 'Ack', req: f.req, seq: 1 });
  await room.publish('hi');
  await until(() => t.probesSent.length >= 4, 'the probes of the Publish');
  await tick(20);
  assert.equal(t.probesSent.length, 4);
  assert.deepEqual(t.datagramsSent, [], 'probes are not volatile events');
});

test('a transport that cannot send datagrams gets no probes, and no error from them', async () => {
  const welcome = welcoming('ann');
  FakeTransport.onCreate = (t) => {
    t.datagrams.createWritable = () => { throw new TypeError('no datagrams here'); };
    welcome(t);
  };
  const c = await client();
  const t = FakeTransport.made[0];
  const errors = [];
  c.on('error', (e) => errors.push(e));
  joining(t, { handle: 4 });
  await c.join('lobby');
  await tick(30);
  assert.deepEqual(t.probesSent, []);
  assert.deepEqual(errors, []);
  assert.equal(c.state, 'connected');
});

test('limits are checked before sending: max_frame, volatile size; volatile uses the room handle', async () => {
  FakeTransport.onCreate = welcoming('ann', { maxFrame: 100 });
  const c = await client();
  const t = FakeTransport.made[0];
  joining(t, { handle: 9 });
  const room = await c.join('lobby');
  await assert.rejects(room.publish(new Uint8Array(200)), (e) => e.kind === 'invalid' && /max_frame of 100/.test(e.message));
  assert.ok(!t.received.some((f) => f.type === 'Publish'), 'nothing sent');
  assert.throws(() => room.sendVolatile(new Uint8Array(1025)), (e) => e.kind === 'invalid');
  assert.equal(room.sendVolatile('typing'), true);
  await until(() => t.datagramsSent.length === 1, 'the datagram');
  assert.deepEqual(t.datagramsSent[0], { type: 'Send', handle: 9, body: utf8('typing') });

  const volatile = [];
  room.on('volatile', (v) => volatile.push([v.room, v.from, v.text]));
  await tick(5);
  t.datagram({ type: 'Recv', handle: 9, from: 'bob', body: utf8('typing') });
  t.datagram({ type: 'Recv', handle: 10, from: 'eve', body: utf8('elsewhere') });
  await until(() => volatile.length === 1, 'the volatile event');
  await tick(10);
  assert.deepEqual(volatile, [['lobby', 'bob', 'typing']]);
});

test('a stream for a room this session did not join is refused and reported', async () => {
  const c = await client();
  const errors = [];
  c.on('error', (e) => errors.push(e));
  FakeTransport.made[0].openRoom('secret', 3)(message(1, 'not for you'));
  await until(() => errors.length === 1, 'the error');
  assert.equal(errors[0].kind, 'protocol');
  assert.match(errors[0].message, /"secret"/);
});

test('errors nobody listens to are logged, not swallowed', async () => {
  const c = await client();
  FakeTransport.made[0].send({ type: 'Error', req: 0, code: ErrorCode.UnknownCommand, message: 'unknown command type 42' });
  await until(() => reported.length === 1, 'the log line');
  assert.match(reported[0], /UnknownCommand: unknown command type 42/);
  assert.equal(c.state, 'connected');
});

test('no WebTransport, or an unreachable server: clear errors', async () => {
  delete globalThis.WebTransport;
  await assert.rejects(connect(URL_CHAT, { token: 't' }), (e) => e.kind === 'unsupported' && /no WebTransport/.test(e.message));
  globalThis.WebTransport = FakeTransport;
  FakeTransport.onCreate = (t) => t.refuse();
  const hash = 'ab'.repeat(32);
  await assert.rejects(connect(URL_CHAT, { token: 't', serverCertificateHashes: [hash] }), (e) => {
    assert.equal(e.kind, 'unreachable');
    assert.ok(e.message.includes(URL_CHAT));
    assert.match(e.message, /pinning certificate hash abababab…/);
    assert.match(e.message, /Opening handshake failed/);
    return true;
  });
  assert.equal(FakeTransport.made.at(-1).options.serverCertificateHashes[0].value.length, 32);
  await assert.rejects(connect(URL_CHAT, { token: 't', serverCertificateHashes: ['nope'] }), (e) => e.kind === 'invalid');
  await assert.rejects(connect('http://example.test/chat', { token: 't' }), (e) => e.kind === 'invalid');
  await assert.rejects(connect(URL_CHAT, {}), (e) => e.kind === 'invalid');
});

test('close() is final: no reconnection, a close event, rooms gone', async () => {
  const c = await client();
  joining(FakeTransport.made[0]);
  const room = await c.join('lobby');
  const events = [];
  c.on('close', (e) => events.push(['close', e.code, e.error]));
  c.on('disconnect', () => events.push(['disconnect']));
  await c.close();
  await tick(50);
  assert.deepEqual(events, [['close', 0, null]]);
  assert.equal(FakeTransport.made.length, 1);
  assert.equal(FakeTransport.made[0].closeInfo.closeCode, 0);
  assert.deepEqual(c.rooms, []);
  assert.equal(room.sendVolatile('x'), false);
  await assert.rejects(room.publish('x'), (e) => e.kind === 'disconnected');
});

test('GoAway is surfaced, then the client reconnects after the close', async () => {
  const c = await client();
  const events = [];
  c.on('goaway', (e) => events.push(['goaway', e.message]));
  c.on('disconnect', (e) => events.push(['disconnect', e.code, e.reason, e.willReconnect]));
  c.on('reconnecting', (e) => events.push(['reconnecting', e.attempt]));
  c.on('connect', (e) => events.push(['connect', e.reconnect]));
  await tick(5);
  const t = FakeTransport.made[0];
  t.send({ type: 'GoAway', message: 'server shutting down' });
  await until(() => events.length === 2, 'the goaway event');
  t.serverClose(ErrorCode.GoingAway, 'server shutting down');
  await until(() => events.length === 5, 'the reconnection');
  assert.deepEqual(events, [
    ['connect', false],
    ['goaway', 'server shutting down'],
    ['disconnect', ErrorCode.GoingAway, 'server shutting down', true],
    ['reconnecting', 1],
    ['connect', true],
  ]);
  assert.equal(FakeTransport.made.length, 2);
});
