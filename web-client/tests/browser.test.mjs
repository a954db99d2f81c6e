// The library and the demo page in real headless browsers against a real
// `wtgate serve --dev`: every test runs in each engine of `ENGINES` (Chromium and
// Firefox ESR), one describe block per engine. These tests fail (never skip) when
// a browser, the binary or the server is broken.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { ENGINES, REPO, WEB_CLIENT, WtgateServer, launchBrowser, newPage } from './harness.mjs';

const WAIT = 15_000;
const ARTIFACTS = join(WEB_CLIENT, 'test-artifacts');

/** The engine of the describe block running now. @type {'chromium'|'firefox'} */
let engine;
/** @type {WtgateServer} */
let server;
/** @type {import('puppeteer-core').Browser} */
let browser;
/** Pages opened by a test, checked for console errors and closed by `closePages`. */
let pages = [];

for (const name of ENGINES) {
  describe(name, () => {
    before(async () => {
      engine = name;
      server = await WtgateServer.start();
      browser = await launchBrowser(name);
    });

    after(async () => {
      // Each step on its own, so a failing one does not leave the server running.
      await browser?.close().catch((e) => console.log(`closing ${name}: ${e.message}`));
      browser = undefined;
      await server?.stop();
      if (process.exitCode && server) console.log(`--- wtgate stderr (tail) ---\n${server.stderr.slice(-6000)}`);
      server = undefined;
    });

    // A failed test leaves its pages open: close them so their users do not show up
    // online in the next test (closePages has run already when the test passed).
    afterEach(async () => {
      const open = pages;
      pages = [];
      await Promise.all(open.map((p) => p.browserContext().close().catch(() => {})));
    });

    describe('library', libraryTests);
    describe('library over a WebSocket, and the fallback', websocketTests);
    describe('demo page', demoTests);
    describe('hidden page (background tab)', hiddenTests);
  });
}

/** The server's `wtgate_datagrams_in_total` (its `/metrics`, on the WebTransport port's TCP listener). */
async function datagramsIn(target = server) {
  const { request } = await import('node:https');
  const [, host, port] = /^\[?([^\]]+)\]?:(\d+)$/.exec(target.webtransport);
  const text = await new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path: '/metrics', rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
  const line = text.split('\n').find((l) => l.startsWith('wtgate_datagrams_in_total '));
  assert.ok(line, 'the server counts datagrams in');
  return Number(line.split(' ')[1]);
}

/** A page as `label`, on the demo origin (a secure context), with the library loaded as `window.lib`. */
async function libraryPage(label, target = server, on = browser) {
  const page = await newPage(on, label);
  pages.push(page);
  await page.goto(new URL('/cert-hash', target.demoUrl).href);
  await page.evaluate(async () => {
    window.lib = await import('/wtgate.js');
    const cert = await (await fetch('/cert-hash')).json();
    window.base = cert.url;
    // The dev server's WebSocket endpoint, on the page's own loopback listener.
    window.wsBase = `ws://${location.host}`;
    /** Options for connect() as `user`, fetching a token and the hash on every (re)connection. */
    window.options = (user, extra = {}) => ({
      token: async () => {
        const r = await fetch(`/dev-token?user=${encodeURIComponent(user)}`);
        if (!r.ok) throw new Error(`dev-token: ${r.status}`);
        return (await r.json()).token;
      },
      serverCertificateHashes: async () => [(await (await fetch('/cert-hash')).json()).hash],
      ...extra,
    });
    /** Resolves once `pred()` holds (polling), rejects after `ms` saying `what`. */
    window.until = async (pred, what, ms = 10_000) => {
      const started = Date.now();
      while (!pred()) {
        if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    /** Records every event of a client or room in `into`, as plain data. */
    window.record = (emitter, names, into) => {
      for (const name of names) {
        emitter.on(name, (e) => {
          const plain = { event: name };
          for (const key of ['room', 'from', 'kind', 'user', 'rejoin', 'recovered', 'replayed', 'attempt', 'willReconnect', 'code']) {
            if (e && e[key] !== undefined) plain[key] = typeof e[key] === 'bigint' ? String(e[key]) : e[key];
          }
          if (e?.seq !== undefined) plain.seq = Number(e.seq);
          if (e?.body !== undefined) {
            plain.text = e.text;
            if (e.body.length <= 16) plain.bytes = Array.from(e.body);
          }
          if (e?.members) plain.members = [...e.members].sort();
          if (e instanceof Error) plain.message = e.message;
          into.push(plain);
        });
      }
    };
  });
  return page;
}

/**
 * The demo page as `user`, signed in and in #lobby. `query` is added to the page's
 * URL (e.g. `?transports=websocket`); `prepare(page)` runs before it loads.
 */
async function demoPage(user, { query = '', prepare = null } = {}) {
  const page = await newPage(browser, user);
  pages.push(page);
  if (prepare) await prepare(page);
  await page.goto(new URL(query, server.demoUrl).href);
  await fill(page, '#name', user);
  await page.click('#enter');
  await page.waitForSelector('#status-chat[data-state="connected"]', { timeout: WAIT });
  await page.waitForSelector('#rooms [data-room="lobby"]', { timeout: WAIT });
  return page;
}

/** Closes the test's pages; fails if any of them logged an error it did not expect. */
async function closePages({ allow = [] } = {}) {
  const open = pages;
  pages = [];
  const problems = open.flatMap((p) => p.problems).filter((line) => !allow.some((re) => re.test(line)));
  await Promise.all(open.map((p) => p.browserContext().close()));
  assert.deepEqual(problems, [], 'console errors in the pages');
}

const texts = (page, selector) => page.$$eval(selector, (nodes) => nodes.map((n) => n.textContent.trim()));
const textContent = (page, selector) => page.$eval(selector, (node) => node.textContent);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Replaces the value of the input `selector` as a user would (focus, select all, type). */
async function fill(page, selector, value) {
  await page.locator(selector).fill(value);
}

/** Focuses `selector` and presses `key`. */
async function press(page, selector, key) {
  await page.focus(selector);
  await page.keyboard.press(key);
}

/**
 * Waits for an element matching `selector` whose text contains `text`; returns it.
 * (A DOM query in the page rather than a driver's text selector: the same in both engines.)
 */
async function waitForText(page, selector, text, timeout = WAIT) {
  const handle = await page.waitForFunction(
    (selector, text) => [...document.querySelectorAll(selector)].find((n) => n.textContent.includes(text)),
    { timeout, polling: 50 },
    selector,
    text,
  );
  return handle.asElement();
}

/** Saves a screenshot of the page's body as `test-artifacts/NAME-ENGINE.png`; returns its path. */
async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}-${engine}.png`);
  await (await page.$('body')).screenshot({ path });
  return path;
}

function libraryTests() {
  test('publish resolves with seq; members get the message, presence and volatile events', { timeout: 60_000 }, async () => {
    const page = await libraryPage('lib');
    const result = await page.evaluate(async () => {
      const { connect } = window.lib;
      const a = await connect(`${window.base}/chat`, window.options('lib-ann'));
      const b = await connect(`${window.base}/chat`, window.options('lib-ben'));
      const seen = { a: [], b: [] };
      const roomA = await a.join('lib-room');
      window.record(roomA, ['message', 'presence', 'volatile', 'join'], seen.a);
      const roomB = await b.join('lib-room');
      window.record(roomB, ['message', 'presence', 'volatile', 'join'], seen.b);
      const waitFor = (list, pred) => new Promise((resolve, reject) => {
        const started = Date.now();
        const poll = () => {
          const hit = list.find(pred);
          if (hit) return resolve(hit);
          if (Date.now() - started > 10_000) return reject(new Error(`timed out; saw ${JSON.stringify(list)}`));
          setTimeout(poll, 20);
        };
        poll();
      });
      await waitFor(seen.a, (e) => e.event === 'presence' && e.kind === 'join' && e.user === 'lib-ben');
      const seq1 = await roomA.publish('héllo');
      const seq2 = await roomB.publish(new Uint8Array([0, 1, 2, 255]));
      await waitFor(seen.b, (e) => e.event === 'message' && e.seq === seq1);
      const binary = (await waitFor(seen.a, (e) => e.event === 'message' && e.seq === seq2)).bytes;
      // Datagrams may be lost even on loopback: send a few.
      for (let i = 0; i < 5 && !seen.b.some((e) => e.event === 'volatile'); i++) {
        roomA.sendVolatile('typing');
        await new Promise((r) => setTimeout(r, 100));
      }
      await waitFor(seen.b, (e) => e.event === 'volatile');
      let tooLarge = null;
      try {
        roomA.sendVolatile(new Uint8Array(1025));
      } catch (e) {
        tooLarge = `${e.kind}: ${e.message}`;
      }
      const onlineA = a.onlineUsers.sort();
      await a.close();
      await b.close();
      return { seq1, seq2, binary, seen, tooLarge, onlineA, members: roomB.members.sort(), user: a.user, state: a.state };
    });
    assert.equal(result.seq2, result.seq1 + 1);
    assert.deepEqual(result.binary, [0, 1, 2, 255]);
    assert.equal(result.user, 'lib-ann');
    assert.equal(result.state, 'closed');
    assert.ok(result.onlineA.includes('lib-ann') && result.onlineA.includes('lib-ben'), JSON.stringify(result.onlineA));
    assert.deepEqual(result.members, ['lib-ann', 'lib-ben']);
    const b = result.seen.b;
    assert.deepEqual(b[0], { event: 'join', rejoin: false, recovered: false, seq: 0, members: ['lib-ann', 'lib-ben'] });
    const messages = b.filter((e) => e.event === 'message');
    assert.deepEqual(messages.map((m) => [m.from, m.seq, m.replayed]), [['lib-ann', result.seq1, false], ['lib-ben', result.seq2, false]]);
    assert.equal(messages[0].text, 'héllo');
    assert.ok(b.some((e) => e.event === 'volatile' && e.from === 'lib-ann' && e.text === 'typing'));
    assert.ok(!result.seen.a.some((e) => e.event === 'volatile'), 'a sender does not get its own datagrams');
    assert.match(result.tooLarge, /^invalid: a volatile body is at most 1024 bytes/);
    await closePages();
  });

  test('tail-loss probes follow each request over WebTransport; the server drops them', { timeout: 60_000 }, async () => {
    const page = await libraryPage('lib');
    const before = await datagramsIn();
    const result = await page.evaluate(async () => {
      const { connect } = window.lib;
      const a = await connect(`${window.base}/chat`, window.options('probe-ann'));
      const room = await a.join('probe-room');
      const seqs = [];
      for (const text of ['one', 'two', 'three']) seqs.push(Number(await room.publish(text)));
      await new Promise((r) => setTimeout(r, 100));
      const state = a.state;
      const transport = a.transport;
      window.probeClient = a;
      return { seqs, transport, state };
    });
    assert.equal(result.transport, 'webtransport');
    assert.deepEqual(result.seqs, [1, 2, 3]);
    // Two probes after the last write (PROTOCOL.md §10.1); earlier writes' probes
    // may be cut short by the next write. Four writes: Join and three Publishes.
    let got = 0;
    for (let i = 0; i < 50 && got < 2; i++) {
      got = (await datagramsIn()) - before;
      if (got < 2) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(got >= 2 && got <= 8, `probe datagrams the server counted: ${got}`);
    assert.equal(result.state, 'connected', 'the session is unharmed');
    await page.evaluate(() => window.probeClient.close());
    await closePages();
  });

  test('after leave() no more events arrive and publish is refused', { timeout: 60_000 }, async () => {
    const page = await libraryPage('lib');
    const result = await page.evaluate(async () => {
      const { connect } = window.lib;
      const a = await connect(`${window.base}/chat`, window.options('leave-ann'));
      const b = await connect(`${window.base}/chat`, window.options('leave-ben'));
      const roomA = await a.join('leave-room');
      const roomB = await b.join('leave-room');
      const got = [];
      roomB.on('message', (m) => got.push(m.text));
      const left = [];
      roomA.on('presence', (e) => e.kind === 'leave' && left.push(e.user));
      await roomA.publish('before');
      await window.until(() => got.includes('before'), 'the first message');
      // A join and a leave within one presence window cancel out (a churning
      // room's batch), so ann must have seen ben arrive for his leave to show.
      await window.until(() => roomA.members.includes('leave-ben'), 'the presence join');
      await roomB.leave();
      await roomA.publish('after');
      await window.until(() => left.length > 0, 'the presence leave');
      await new Promise((r) => setTimeout(r, 300));
      let refused = null;
      try {
        await roomB.publish('nope');
      } catch (e) {
        refused = e.kind;
      }
      const rooms = b.rooms.map((r) => r.name);
      await a.close();
      await b.close();
      return { got, left, refused, rooms, state: roomB.state };
    });
    assert.deepEqual(result.got, ['before']);
    assert.deepEqual(result.left, ['leave-ben']);
    assert.equal(result.refused, 'invalid');
    assert.deepEqual(result.rooms, []);
    assert.equal(result.state, 'left');
    await closePages();
  });

  test('clear errors: bad token, unknown namespace, wrong hash, nothing listening, no WebTransport', { timeout: 60_000 }, async () => {
    const page = await libraryPage('errors');
    const errors = await page.evaluate(async (hash) => {
      const { connect } = window.lib;
      const attempt = async (url, options) => {
        try {
          const client = await connect(url, options);
          await client.close();
          return { connected: true };
        } catch (e) {
          return { name: e.name, kind: e.kind, code: e.code, codeName: e.codeName, message: e.message };
        }
      };
      const good = { serverCertificateHashes: [hash] };
      const port = new URL(window.base).port;
      const out = {};
      // WebTransport alone: what it reports (the fallback has tests of its own).
      const only = { transports: ['webtransport'] };
      out.badToken = await attempt(`${window.base}/chat`, { ...good, ...only, token: 'not-a-token' });
      out.notFound = await attempt(`${window.base}/no-such-namespace`, window.options('err-ann', only));
      out.wrongHash = await attempt(`${window.base}/chat`, { ...window.options('err-ann', only), serverCertificateHashes: ['ab'.repeat(32)] });
      // A UDP port nobody listens on (the demo's TCP port, say).
      out.nobody = await attempt(`https://localhost:${location.port}/chat`, { ...window.options('err-ann', only), timeout: 5000 });
      out.badHash = await attempt(`${window.base}/chat`, { token: 'x', serverCertificateHashes: ['xyz'] });
      const saved = globalThis.WebTransport;
      globalThis.WebTransport = undefined;
      try {
        out.unsupported = await attempt(`${window.base}/chat`, { ...good, ...only, token: 'x' });
      } finally {
        globalThis.WebTransport = saved;
      }
      out.port = port;
      return out;
    }, server.certHash);

    assert.equal(errors.badToken.name, 'WtgateError');
    assert.equal(errors.badToken.kind, 'server');
    assert.equal(errors.badToken.code, 2);
    assert.equal(errors.badToken.codeName, 'Unauthorized');
    assert.match(errors.badToken.message, /Unauthorized/);

    for (const [which, url] of [['notFound', '/no-such-namespace'], ['wrongHash', '/chat'], ['nobody', '/chat']]) {
      const e = errors[which];
      assert.equal(e.kind, 'unreachable', `${which}: ${JSON.stringify(e)}`);
      assert.ok(e.message.includes(url), `${which} names the URL: ${e.message}`);
      assert.match(e.message, /certificate hash [0-9a-f]{8}…/, `${which} says which hash it pinned`);
      assert.match(e.message, /not running|blocked/, which);
      assert.match(e.message, /404/, which);
    }
    assert.match(errors.wrongHash.message, /abababab…/);
    assert.equal(errors.badHash.kind, 'invalid');
    assert.equal(errors.unsupported.kind, 'unsupported');
    assert.match(errors.unsupported.message, /no WebTransport/);
    // Chromium logs the failed handshakes on the console; expected here.
    await closePages({ allow: [/Failed to establish a connection/, /WebTransport/] });
  });

  test('reconnects by itself and recovers what was missed (since)', { timeout: 90_000 }, async () => {
    const page = await libraryPage('reconnect');
    const result = await page.evaluate(async () => {
      const { connect } = window.lib;
      const a = await connect(`${window.base}/chat`, window.options('rc-ann'));
      const b = await connect(`${window.base}/chat`, window.options('rc-ben', { reconnect: { initialDelay: 1500, maxDelay: 3000 } }));
      const client = [];
      const seen = [];
      window.record(b, ['disconnect', 'reconnecting', 'connect'], client);
      const roomA = await a.join('rc-room');
      const roomB = await b.join('rc-room');
      window.record(roomB, ['message', 'join'], seen);
      await roomA.publish('m1');
      await window.until(() => seen.some((e) => e.text === 'm1'), 'm1');
      const firstSession = String(b.sessionId);

      // Cut b's session as a network failure would (not through close()).
      const reconnecting = new Promise((resolve) => b.once('reconnecting', resolve));
      b._currentSession().transport.close({ closeCode: 0, reason: 'test: simulated outage' });
      await reconnecting;
      const stateDuring = b.state;
      let refused = null;
      try {
        await roomB.publish('while down');
      } catch (e) {
        refused = e.kind;
      }
      // Published while b is away: b must get them on rejoin, replayed.
      for (const text of ['m2', 'm3', 'm4']) await roomA.publish(text);
      await window.until(() => seen.filter((e) => e.event === 'message').length >= 4, 'the replay of m2..m4', 20_000);
      await roomA.publish('m5');
      await window.until(() => seen.some((e) => e.text === 'm5'), 'm5');
      const out = { client, seen, stateDuring, refused, firstSession, secondSession: String(b.sessionId), state: b.state, roomState: roomB.state };
      await a.close();
      await b.close();
      return out;
    });
    assert.equal(result.stateDuring, 'reconnecting');
    assert.equal(result.refused, 'disconnected');
    assert.notEqual(result.secondSession, result.firstSession);
    assert.equal(result.state, 'connected');
    assert.equal(result.roomState, 'joined');
    const events = result.client.map((e) => e.event);
    assert.deepEqual(events.slice(0, 2), ['connect', 'disconnect'], JSON.stringify(result.client));
    assert.ok(events.includes('reconnecting') && events.at(-1) === 'connect', JSON.stringify(result.client));
    const messages = result.seen.filter((e) => e.event === 'message');
    assert.deepEqual(messages.map((m) => m.text), ['m1', 'm2', 'm3', 'm4', 'm5'], 'every message exactly once, in order');
    assert.deepEqual(messages.map((m) => m.replayed), [false, true, true, true, false]);
    const joins = result.seen.filter((e) => e.event === 'join');
    assert.deepEqual(joins.map((j) => [j.rejoin, j.recovered]), [[false, false], [true, true]]);
    await closePages();
  });

  test('survives server restarts: recovers from kept history, says recovered: false when it is gone', { timeout: 120_000 }, async () => {
    // A server of its own, restarted on the same ports with the same certificate.
    const own = await WtgateServer.start();
    try {
      const page = await libraryPage('restart', own);
      await page.evaluate(async () => {
        const { connect } = window.lib;
        window.seen = [];
        window.client = [];
        window.b = await connect(`${window.base}/chat`, window.options('rs-ben', { reconnect: { initialDelay: 200, maxDelay: 1000 } }));
        window.record(window.b, ['disconnect', 'goaway', 'connect', 'close'], window.client);
        window.roomB = await window.b.join('rs-room');
        window.record(window.roomB, ['message', 'join'], window.seen);
        await window.roomB.publish('first life');
        await window.until(() => window.seen.some((e) => e.text === 'first life'), 'the first message');
      });
      const joins = () => page.evaluate(() => window.seen.filter((e) => e.event === 'join').length);
      const publish = (text) => page.evaluate(async (text) => {
        const seq = await window.roomB.publish(text);
        await window.until(() => window.seen.some((e) => e.text === text), text);
        return seq;
      }, text);

      // A graceful restart keeps room histories in --data-dir: the rejoin recovers.
      await own.restart();
      await page.waitForFunction(() => window.seen.filter((e) => e.event === 'join').length === 2, { timeout: 30_000, polling: 50 });
      assert.equal(await publish('same life'), 2, 'seq goes on');

      // Restarted without its data: the room starts a new life (epoch), seq from 1.
      await own.restart({ keepData: false });
      await page.waitForFunction(() => window.seen.filter((e) => e.event === 'join').length === 3, { timeout: 30_000, polling: 50 });
      assert.equal(await joins(), 3);
      assert.equal(await publish('new life'), 1, 'seq starts again');

      const result = await page.evaluate(async () => {
        const out = { seen: window.seen, client: window.client, lastSeq: Number(window.roomB.lastSeq) };
        await window.b.close();
        return out;
      });
      assert.deepEqual(
        result.seen.filter((e) => e.event === 'join').map((j) => [j.rejoin, j.recovered]),
        [[false, false], [true, true], [true, false]],
      );
      assert.deepEqual(
        result.seen.filter((e) => e.event === 'message').map((m) => [m.text, m.seq]),
        [['first life', 1], ['same life', 2], ['new life', 1]],
      );
      assert.equal(result.lastSeq, 1);
      // Each restart: GoAway, then the close with GoingAway (13). Now and then Chromium
      // reports the end of the session without either (the server exits right after
      // closing): the client must reconnect all the same.
      const disconnects = result.client.filter((e) => e.event === 'disconnect');
      assert.equal(disconnects.length, 2, JSON.stringify(result.client));
      for (const d of disconnects) {
        assert.equal(d.willReconnect, true);
        assert.ok(d.code === 13 || d.code === null, `closed with GoingAway: ${JSON.stringify(d)}`);
      }

      assert.equal(result.client.filter((e) => e.event === 'connect').length, 3);
      // Reconnection attempts while the server is down fail on the console: expected.
      await closePages({ allow: [/Failed to establish a connection/, /Failed to load resource/, /dev-token|cert-hash/] });
    } catch (e) {
      console.log(`--- restarted server's stderr (tail) ---\n${own.stderr.slice(-8000)}`);
      throw e;
    } finally {
      await own.stop();
    }
  });
}

/** Console lines of failed WebSocket and WebTransport attempts, expected where a test makes them fail. */
const FAILED_CONNECTIONS = [/Failed to establish a connection/, /WebTransport/, /WebSocket connection to .* failed/, /Firefox can.t establish a connection/, /Failed to load resource/];

/** A UDP socket on loopback that takes every datagram and answers none: UDP "blocked". */
async function udpBlackHole() {
  const socket = createSocket('udp4');
  await new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', resolve);
  });
  let datagrams = 0;
  socket.on('message', () => { datagrams += 1; });
  return {
    port: socket.address().port,
    get datagrams() { return datagrams; },
    close: () => new Promise((resolve) => socket.close(resolve)),
  };
}

function websocketTests() {
  test("transports: ['websocket']: publish/ack, members, presence, volatile, online; with a WebTransport client in the same room", { timeout: 60_000 }, async () => {
    const page = await libraryPage('ws');
    const result = await page.evaluate(async () => {
      const { connect } = window.lib;
      const overWebSocket = (user) => window.options(user, { transports: ['websocket'], websocketUrl: `${window.wsBase}/chat` });
      const a = await connect(`${window.base}/chat`, overWebSocket('wsl-ann'));
      const b = await connect(`${window.base}/chat`, window.options('wsl-ben'));
      const socket = a._currentSession().socket;
      const seen = { a: [], b: [] };
      const roomA = await a.join('wsl-room');
      window.record(roomA, ['message', 'presence', 'volatile', 'join'], seen.a);
      const roomB = await b.join('wsl-room');
      window.record(roomB, ['message', 'presence', 'volatile', 'join'], seen.b);
      const has = (list, pred) => () => list.some(pred);
      await window.until(has(seen.a, (e) => e.event === 'presence' && e.kind === 'join' && e.user === 'wsl-ben'), 'ben in ann\'s presence');
      const seq1 = await roomA.publish('héllo over a WebSocket');
      const seq2 = await roomB.publish(new Uint8Array([0, 1, 2, 255]));
      await window.until(has(seen.b, (e) => e.event === 'message' && e.seq === seq1), 'ann\'s message at ben');
      await window.until(has(seen.a, (e) => e.event === 'message' && e.seq === seq2), 'ben\'s message at ann');
      // Volatile both ways (datagrams on ben's side may be lost: send a few).
      for (let i = 0; i < 5 && !seen.b.some((e) => e.event === 'volatile'); i++) {
        roomA.sendVolatile('typing from ws');
        await new Promise((r) => setTimeout(r, 100));
      }
      for (let i = 0; i < 5 && !seen.a.some((e) => e.event === 'volatile'); i++) {
        roomB.sendVolatile('typing from wt');
        await new Promise((r) => setTimeout(r, 100));
      }
      await window.until(has(seen.b, (e) => e.event === 'volatile'), 'ann\'s volatile at ben');
      await window.until(has(seen.a, (e) => e.event === 'volatile'), 'ben\'s volatile at ann');
      let tooLarge = null;
      try {
        roomA.sendVolatile(new Uint8Array(1025));
      } catch (e) {
        tooLarge = `${e.kind}: ${e.message}`;
      }
      const online = await a.fetchOnline();
      await roomB.leave();
      await window.until(has(seen.a, (e) => e.event === 'presence' && e.kind === 'leave' && e.user === 'wsl-ben'), 'ben\'s leave at ann');
      const out = {
        transports: [a.transport, b.transport],
        socket: { url: socket.url, protocol: socket.protocol, isWebSocket: socket instanceof WebSocket },
        seq1, seq2, seen, tooLarge, online: online.sort(), members: roomA.members.sort(),
      };
      await a.close();
      await b.close();
      out.socketState = socket.readyState;
      return out;
    });
    assert.deepEqual(result.transports, ['websocket', 'webtransport']);
    assert.deepEqual(result.socket, { url: `ws://${server.demoListen}/chat`, protocol: 'wtgate.v1', isWebSocket: true });
    assert.equal(result.socketState, 3, 'close() closed the socket');
    assert.equal(result.seq2, result.seq1 + 1);
    const fromA = result.seen.a.filter((e) => e.event === 'message');
    const fromB = result.seen.b.filter((e) => e.event === 'message');
    assert.deepEqual(fromA.map((m) => [m.from, m.seq]), [['wsl-ann', result.seq1], ['wsl-ben', result.seq2]]);
    assert.deepEqual(fromB.map((m) => [m.from, m.seq]), [['wsl-ann', result.seq1], ['wsl-ben', result.seq2]]);
    assert.equal(fromB[0].text, 'héllo over a WebSocket');
    assert.deepEqual(fromA[1].bytes, [0, 1, 2, 255]);
    assert.ok(result.seen.b.some((e) => e.event === 'volatile' && e.from === 'wsl-ann' && e.text === 'typing from ws'));
    assert.ok(result.seen.a.some((e) => e.event === 'volatile' && e.from === 'wsl-ben' && e.text === 'typing from wt'));
    assert.ok(!result.seen.a.some((e) => e.event === 'volatile' && e.from === 'wsl-ann'), 'no echo of one\'s own volatile events');
    assert.deepEqual(result.seen.a[0], { event: 'join', rejoin: false, recovered: false, seq: 0, members: ['wsl-ann'] });
    assert.match(result.tooLarge, /^invalid: a volatile body is at most 1024 bytes/);
    assert.ok(result.online.includes('wsl-ann') && result.online.includes('wsl-ben'), JSON.stringify(result.online));
    assert.deepEqual(result.members, ['wsl-ann']);
    await closePages();
  });

  test('over a WebSocket: notifications from the CLI, ack, and the inbox of a new session', { timeout: 60_000 }, async () => {
    const page = await libraryPage('ws-notes');
    await page.evaluate(async () => {
      const { connect } = window.lib;
      window.notes = await connect(`${window.base}/notifications`, window.options('wsn-gus', { transports: ['websocket'], websocketUrl: `${window.wsBase}/notifications` }));
      window.got = [];
      window.notes.on('notification', (n) => window.got.push(n));
    });
    for (const text of ['first over ws', 'second over ws']) {
      const sent = server.cli(['notify', '--server', `https://${server.webtransport}`, '--cert-hash', server.certHash, '--user', 'wsn-gus', '--kind', 'mention', text]);
      assert.equal(sent.status, 0, `wtgate notify: ${sent.stderr}`);
    }
    const result = await page.evaluate(async () => {
      const { connect } = window.lib;
      await window.until(() => window.got.length === 2, 'two notifications');
      const transport = window.notes.transport;
      await window.got[0].ack();
      await window.notes.close();
      const again = await connect(`${window.base}/notifications`, window.options('wsn-gus', { transports: ['websocket'], websocketUrl: `${window.wsBase}/notifications` }));
      const later = [];
      again.on('notification', (n) => later.push(n.text));
      await window.until(() => later.length >= 1, 'the inbox');
      await new Promise((r) => setTimeout(r, 300));
      await again.close();
      return { transport, got: window.got.map((n) => ({ kind: n.kind, text: n.text })), later };
    });
    assert.equal(result.transport, 'websocket');
    assert.deepEqual(result.got.map((n) => [n.kind, n.text]), [['mention', 'first over ws'], ['mention', 'second over ws']]);
    assert.deepEqual(result.later, ['second over ws'], 'only what was not acknowledged');
    await closePages();
  });

  test('over a WebSocket: reconnects and recovers (since) after a dropped connection and a server restart', { timeout: 120_000 }, async () => {
    const own = await WtgateServer.start();
    try {
      const page = await libraryPage('ws-reconnect', own);
      await page.evaluate(async () => {
        const { connect } = window.lib;
        const overWebSocket = (user, extra = {}) => window.options(user, { transports: ['websocket'], websocketUrl: `${window.wsBase}/chat`, ...extra });
        window.a = await connect(`${window.base}/chat`, overWebSocket('wsr-ann'));
        window.b = await connect(`${window.base}/chat`, overWebSocket('wsr-ben', { reconnect: { initialDelay: 1000, maxDelay: 2000 } }));
        window.client = [];
        window.seen = [];
        window.record(window.b, ['disconnect', 'connect'], window.client);
        window.roomA = await window.a.join('wsr-room');
        window.roomB = await window.b.join('wsr-room');
        window.record(window.roomB, ['message', 'join'], window.seen);
        await window.roomA.publish('m1');
        await window.until(() => window.seen.some((e) => e.text === 'm1'), 'm1');
        window.firstSession = String(window.b.sessionId);
        // Drop b's connection (not through close()): a reconnection with since.
        const reconnecting = new Promise((resolve) => window.b.once('reconnecting', resolve));
        window.b._currentSession().socket.close();
        await reconnecting;
        window.stateDuring = window.b.state;
        for (const text of ['m2', 'm3']) await window.roomA.publish(text);
        await window.until(() => window.seen.filter((e) => e.event === 'join').length === 2, 'the rejoin', 20_000);
        await window.until(() => window.seen.some((e) => e.text === 'm3'), 'the replay of m2, m3');
        window.secondSession = String(window.b.sessionId);
      });
      // The server restarts (GoAway, close 4013): both reconnect; b recovers what a sent meanwhile.
      await own.restart();
      await page.waitForFunction(() => window.seen.filter((e) => e.event === 'join').length === 3 && window.a.state === 'connected', { timeout: 30_000, polling: 50 });
      const result = await page.evaluate(async () => {
        await window.roomA.publish('m4');
        await window.until(() => window.seen.some((e) => e.text === 'm4'), 'm4');
        const out = {
          stateDuring: window.stateDuring, firstSession: window.firstSession, secondSession: window.secondSession,
          client: window.client, seen: window.seen, transport: window.b.transport, roomState: window.roomB.state,
        };
        await window.a.close();
        await window.b.close();
        return out;
      });
      assert.equal(result.stateDuring, 'reconnecting');
      assert.notEqual(result.secondSession, result.firstSession, 'a new session after the dropped socket');
      assert.equal(result.transport, 'websocket');
      assert.equal(result.roomState, 'joined');
      const messages = result.seen.filter((e) => e.event === 'message');
      assert.deepEqual(messages.map((m) => m.text), ['m1', 'm2', 'm3', 'm4'], 'every message exactly once, in order');
      assert.deepEqual(messages.map((m) => m.replayed), [false, true, true, false]);
      assert.deepEqual(result.seen.filter((e) => e.event === 'join').map((j) => [j.rejoin, j.recovered]), [[false, false], [true, true], [true, true]]);
      const disconnects = result.client.filter((e) => e.event === 'disconnect');
      assert.equal(disconnects.length, 2, JSON.stringify(result.client));
      // socket.close() without a code: the close event says 1005 (no status), a lost connection.
      assert.equal(disconnects[0].code, null, `the dropped socket: ${JSON.stringify(disconnects)}`);
      assert.equal(disconnects[1].code, 13, `the restart closes with GoingAway (4013): ${JSON.stringify(disconnects[1])}`);
      assert.ok(disconnects.every((d) => d.willReconnect));
      await closePages({ allow: FAILED_CONNECTIONS });
    } catch (e) {
      console.log(`--- restarted server's stderr (tail) ---\n${own.stderr.slice(-6000)}`);
      throw e;
    } finally {
      await own.stop();
    }
  });

  test('over a WebSocket: a bad token is Unauthorized (close 4002); an unknown namespace is unreachable (404)', { timeout: 60_000 }, async () => {
    const page = await libraryPage('ws-errors');
    const errors = await page.evaluate(async () => {
      const { connect } = window.lib;
      const attempt = async (url, options) => {
        try {
          const client = await connect(url, options);
          await client.close();
          return { connected: true };
        } catch (e) {
          return { kind: e.kind, code: e.code, codeName: e.codeName, message: e.message };
        }
      };
      const ws = (ns) => ({ transports: ['websocket'], websocketUrl: `${window.wsBase}/${ns}` });
      return {
        badToken: await attempt(`${window.base}/chat`, { ...ws('chat'), token: 'not-a-token' }),
        notFound: await attempt(`${window.base}/no-such-namespace`, window.options('wse-ann', ws('no-such-namespace'))),
      };
    });
    assert.equal(errors.badToken.kind, 'server', JSON.stringify(errors.badToken));
    assert.equal(errors.badToken.code, 2);
    assert.equal(errors.badToken.codeName, 'Unauthorized');
    assert.equal(errors.notFound.kind, 'unreachable', JSON.stringify(errors.notFound));
    assert.ok(errors.notFound.message.includes(`ws://${server.demoListen}/no-such-namespace`), errors.notFound.message);
    assert.match(errors.notFound.message, /404/);
    await closePages({ allow: FAILED_CONNECTIONS });
  });

  test('falls back by itself when UDP to the WebTransport port goes unanswered: chats, gets notifications, remembers it', { timeout: 90_000 }, async () => {
    const hole = await udpBlackHole();
    try {
      const page = await libraryPage('fallback');
      const result = await page.evaluate(async (udpPort) => {
        const { connect } = window.lib;
        // Counts WebTransport attempts (the library's own constructor, wrapped).
        const Real = window.WebTransport;
        window.webTransports = 0;
        window.WebTransport = class extends Real {
          constructor(...args) {
            super(...args);
            window.webTransports += 1;
          }
        };
        // The application's code: the same connect() as ever, with the WebSocket URL
        // of the dev server; the WebTransport URL leads to UDP nobody answers.
        const blocked = `https://127.0.0.1:${udpPort}`;
        const options = (user, ns) => window.options(user, { websocketUrl: `${window.wsBase}/${ns}` });
        let started = performance.now();
        const ann = await connect(`${blocked}/chat`, options('fb-ann', 'chat'));
        const fallbackMs = Math.round(performance.now() - started);
        // Another namespace of the same server: straight to the WebSocket.
        started = performance.now();
        const notes = await connect(`${blocked}/notifications`, options('fb-ann', 'notifications'));
        const rememberedMs = Math.round(performance.now() - started);
        const got = [];
        notes.on('notification', (n) => got.push(n.text));

        // Ben is on WebTransport to the same server; they chat.
        const ben = await connect(`${window.base}/chat`, window.options('fb-ben'));
        const seenA = [];
        const seenB = [];
        const roomA = await ann.join('fb-room');
        window.record(roomA, ['message', 'join'], seenA);
        const roomB = await ben.join('fb-room');
        window.record(roomB, ['message'], seenB);
        await roomA.publish('from the fallback');
        await roomB.publish('from WebTransport');
        await window.until(() => seenA.filter((e) => e.event === 'message').length === 2 && seenB.length === 2, 'both messages on both sides');

        // A dropped connection: the reconnection goes to the WebSocket again, and recovers.
        const reconnected = new Promise((resolve) => ann.once('connect', resolve));
        ann._currentSession().socket.close();
        const again = await reconnected;
        await roomB.publish('after the reconnection');
        await window.until(() => seenA.some((e) => e.text === 'after the reconnection'), 'the message after the reconnection');
        window.fallback = { ann, notes, ben, got };
        return {
          fallbackMs, rememberedMs, webTransports: window.webTransports,
          transports: [ann.transport, notes.transport, ben.transport, again.transport],
          seenA: seenA.map((e) => e.event === 'join' ? `join ${e.rejoin} ${e.recovered}` : `${e.from}: ${e.text}`),
        };
      }, hole.port);
      console.log(`[${engine}] fallback connect: ${result.fallbackMs} ms (WebTransport to a UDP port that answers nothing, then the WebSocket); remembered: ${result.rememberedMs} ms; ${hole.datagrams} datagrams went unanswered`);
      assert.ok(hole.datagrams > 0, 'the browser did try WebTransport over UDP');
      assert.ok(result.fallbackMs < 5000, `fallback connect took ${result.fallbackMs} ms`);
      assert.ok(result.fallbackMs >= 1000, `WebTransport had its 1200 ms before the fallback (${result.fallbackMs} ms)`);
      assert.deepEqual(result.transports, ['websocket', 'websocket', 'webtransport', 'websocket']);
      assert.equal(result.webTransports, 2, 'one WebTransport attempt to the blocked server (then remembered), one to the real one');
      assert.ok(result.rememberedMs < 1000, `the remembered fallback skipped WebTransport: ${result.rememberedMs} ms`);
      assert.deepEqual(result.seenA, ['join false false', 'fb-ann: from the fallback', 'fb-ben: from WebTransport', 'join true true', 'fb-ben: after the reconnection']);

      const sent = server.cli(['notify', '--server', `https://${server.webtransport}`, '--cert-hash', server.certHash, '--user', 'fb-ann', '--kind', 'mention', 'to the fallback']);
      assert.equal(sent.status, 0, `wtgate notify: ${sent.stderr}`);
      const got = await page.evaluate(async () => {
        await window.until(() => window.fallback.got.length === 1, 'the notification');
        const { ann, notes, ben, got } = window.fallback;
        await Promise.all([ann.close(), notes.close(), ben.close()]);
        return got;
      });
      assert.deepEqual(got, ['to the fallback']);
      await closePages({ allow: FAILED_CONNECTIONS });
    } finally {
      await hole.close();
    }
  });

  test('falls back when nothing listens on the WebTransport port, and at once without WebTransport in the browser', { timeout: 60_000 }, async () => {
    const page = await libraryPage('fallback-closed');
    const result = await page.evaluate(async () => {
      const { connect } = window.lib;
      // The demo listener's port: TCP, with nothing on UDP.
      let started = performance.now();
      const a = await connect(`https://127.0.0.1:${location.port}/chat`, window.options('fbc-ann', { websocketUrl: `${window.wsBase}/chat` }));
      const closedPortMs = Math.round(performance.now() - started);
      const saved = window.WebTransport;
      window.WebTransport = undefined;
      let b;
      try {
        started = performance.now();
        b = await connect(`${window.base}/chat`, window.options('fbc-ben', { websocketUrl: `${window.wsBase}/chat` }));
      } finally {
        window.WebTransport = saved;
      }
      const missingMs = Math.round(performance.now() - started);
      const room = await a.join('fbc-room');
      const roomB = await b.join('fbc-room');
      const got = [];
      roomB.on('message', (m) => got.push(m.text));
      await room.publish('hi');
      await window.until(() => got.length === 1, 'the message');
      const out = { closedPortMs, missingMs, transports: [a.transport, b.transport], got };
      await a.close();
      await b.close();
      return out;
    });
    console.log(`[${engine}] fallback connect: ${result.closedPortMs} ms (nothing on the WebTransport UDP port); ${result.missingMs} ms (no WebTransport in the browser)`);
    assert.deepEqual(result.transports, ['websocket', 'websocket']);
    assert.deepEqual(result.got, ['hi']);
    assert.ok(result.closedPortMs < 5000, `${result.closedPortMs} ms`);
    assert.ok(result.missingMs < 1000, `no WebTransport: no waiting (${result.missingMs} ms)`);
    await closePages({ allow: FAILED_CONNECTIONS });
  });
}

function demoTests() {
  test('two users chat: message, presence, online list, typing indicator', { timeout: 90_000 }, async () => {
    const alice = await demoPage('alice');
    const bob = await demoPage('bob');

    await alice.waitForSelector('#members [data-user="bob"]', { timeout: WAIT });
    await bob.waitForSelector('#members [data-user="alice"]', { timeout: WAIT });
    await alice.waitForSelector('#online [data-user="bob"]', { timeout: WAIT });
    await bob.waitForSelector('#online [data-user="alice"]', { timeout: WAIT });
    const online = await texts(bob, '#online li');
    assert.ok(online.includes('alice') && online.includes('bob'), `online: ${online}`);
    assert.deepEqual(await texts(alice, '#members li'), ['alice', 'bob']);

    await fill(alice, '#composer-input', 'Hi Bob, WebTransport here!');
    await press(alice, '#composer-input', 'Enter');
    await waitForText(bob, '#messages li[data-from="alice"]', 'Hi Bob, WebTransport here!');
    await alice.waitForSelector('#messages li.mine[data-from="alice"]', { timeout: WAIT });

    // Typing: bob's keystrokes send datagrams (one a second), alice sees "bob is typing…".
    assert.equal(await textContent(alice, '#typing'), '');
    await bob.type('#composer-input', 'Hello Alice', { delay: 150 });
    await waitForText(alice, '#typing', 'bob is typing…');
    assert.doesNotMatch(await textContent(bob, '#typing'), /bob/, 'no echo of one\'s own typing');
    await press(bob, '#composer-input', 'Enter');
    await waitForText(alice, '#messages li[data-from="bob"]', 'Hello Alice');
    // The message clears the indicator.
    await alice.waitForFunction(() => document.getElementById('typing').textContent === '', { timeout: WAIT, polling: 50 });

    await fill(alice, '#composer-input', 'Datagrams carry the “typing…”, one stream per room carries messages.');
    await press(alice, '#composer-input', 'Enter');
    await waitForText(bob, '#messages li', 'one stream per room');
    // For the screenshot: bob typing his next message.
    await sleep(1000);
    await bob.type('#composer-input', 'Nice, and notifications have', { delay: 30 });
    await waitForText(alice, '#typing', 'bob is typing…');

    assert.deepEqual(await texts(bob, '#messages li .body'), [
      'Hi Bob, WebTransport here!',
      'Hello Alice',
      'Datagrams carry the “typing…”, one stream per room carries messages.',
    ]);
    const shot = await screenshot(alice, 'demo');
    // The README's picture (Chromium's): made when missing, remade on request (it
    // changes every run).
    const docsShot = join(REPO, 'docs', 'demo.png');
    if (engine === 'chromium' && (!existsSync(docsShot) || process.env.UPDATE_DEMO_PNG === '1')) {
      mkdirSync(join(REPO, 'docs'), { recursive: true });
      copyFileSync(shot, docsShot);
    }
    await screenshot(bob, 'demo-bob');
    await closePages();
  });

  test('over a WebSocket (?transports=websocket): two users chat with typing; the status says WebSocket; a notification arrives', { timeout: 90_000 }, async () => {
    const hana = await demoPage('hana', { query: '?transports=websocket' });
    const ivan = await demoPage('ivan', { query: '?transports=websocket' });
    for (const page of [hana, ivan]) {
      await page.waitForSelector('#status-chat[data-transport="websocket"]', { timeout: WAIT });
      await page.waitForSelector('#status-notifications[data-state="connected"][data-transport="websocket"]', { timeout: WAIT });
      assert.match(await textContent(page, '#status-chat'), /connected · WebSocket/);
      assert.match(await textContent(page, '#transport-note'), /one WebSocket per namespace/);
    }
    await hana.waitForSelector('#members [data-user="ivan"]', { timeout: WAIT });
    await fill(hana, '#composer-input', 'Hi Ivan, over a WebSocket');
    await press(hana, '#composer-input', 'Enter');
    await waitForText(ivan, '#messages li[data-from="hana"]', 'Hi Ivan, over a WebSocket');
    await ivan.type('#composer-input', 'Hello Hana', { delay: 150 });
    await waitForText(hana, '#typing', 'ivan is typing…');
    await press(ivan, '#composer-input', 'Enter');
    await waitForText(hana, '#messages li[data-from="ivan"]', 'Hello Hana');
    const sent = server.cli(['notify', '--server', `https://${server.webtransport}`, '--cert-hash', server.certHash, '--user', 'hana', '--kind', 'mention', 'a WebSocket notification']);
    assert.equal(sent.status, 0, `wtgate notify: ${sent.stderr}`);
    await waitForText(hana, '#notifications li', 'a WebSocket notification');
    const transports = await hana.evaluate(() => [window.demo.chat.transport, window.demo.notifications.transport]);
    assert.deepEqual(transports, ['websocket', 'websocket']);
    await screenshot(hana, 'demo-websocket');
    await closePages();
  });

  test('in a browser without WebTransport the demo falls back by itself and chats with a WebTransport user', { timeout: 90_000 }, async () => {
    const judy = await demoPage('judy', { prepare: (page) => page.evaluateOnNewDocument(() => { delete window.WebTransport; }) });
    const karl = await demoPage('karl');
    assert.equal(await judy.evaluate(() => typeof window.WebTransport), 'undefined');
    await judy.waitForSelector('#status-chat[data-transport="websocket"]', { timeout: WAIT });
    await karl.waitForSelector('#status-chat[data-transport="webtransport"]', { timeout: WAIT });
    assert.match(await textContent(karl, '#status-chat'), /connected · WebTransport/);
    await judy.waitForSelector('#members [data-user="karl"]', { timeout: WAIT });
    await fill(judy, '#composer-input', 'from the fallback');
    await press(judy, '#composer-input', 'Enter');
    await waitForText(karl, '#messages li[data-from="judy"]', 'from the fallback');
    await karl.type('#composer-input', 'from WebTransport', { delay: 150 });
    await waitForText(judy, '#typing', 'karl is typing…');
    await press(karl, '#composer-input', 'Enter');
    await waitForText(judy, '#messages li[data-from="karl"]', 'from WebTransport');
    await closePages();
  });

  test('a room the other user did not join leaks nothing to them', { timeout: 60_000 }, async () => {
    const carol = await demoPage('carol');
    const dave = await demoPage('dave');
    await fill(carol, '#room-input', 'secret');
    await carol.click('#join-room');
    await carol.waitForSelector('#rooms [data-room="secret"][aria-current="true"]', { timeout: WAIT });
    await fill(carol, '#composer-input', 'for carol only');
    await press(carol, '#composer-input', 'Enter');
    await waitForText(carol, '#messages li', 'for carol only');
    for (let i = 0; i < 3; i++) await carol.evaluate(() => window.demo.rooms.get('secret').sendVolatile('typing'));
    // And a lobby message after it, so that dave has provably received what came later.
    await carol.click('#rooms [data-room="lobby"]');
    await fill(carol, '#composer-input', 'lobby after secret');
    await press(carol, '#composer-input', 'Enter');
    await waitForText(dave, '#messages li', 'lobby after secret');
    await sleep(300);

    const daveSaw = await dave.evaluate(() => ({
      events: window.demo.events.filter((e) => e.room === 'secret' || e.text === 'for carol only'),
      errors: window.demo.errors,
      rooms: [...window.demo.rooms.keys()],
      html: ['for carol only', '#secret', 'data-room="secret"'].filter((needle) => document.body.innerHTML.includes(needle)),
    }));
    assert.deepEqual(daveSaw, { events: [], errors: [], rooms: ['lobby'], html: [] });
    await closePages();
  });

  test('reloading a page recovers the messages it missed', { timeout: 90_000 }, async () => {
    const erin = await demoPage('erin');
    const frank = await demoPage('frank');
    await fill(erin, '#composer-input', 'seen before the reload');
    await press(erin, '#composer-input', 'Enter');
    await waitForText(frank, '#messages li', 'seen before the reload');

    // Frank leaves the page; erin writes while he is away.
    await frank.goto('about:blank');
    await erin.waitForFunction(
      () => window.demo.events.some((e) => e.type === 'presence' && e.kind === 'leave' && e.user === 'frank'),
      { timeout: WAIT, polling: 50 },
    );
    for (const text of ['missed one', 'missed two']) {
      await fill(erin, '#composer-input', text);
      await press(erin, '#composer-input', 'Enter');
      await waitForText(erin, '#messages li', text);
    }

    // Back: the page rejoins with `since` from sessionStorage.
    await frank.goto(server.demoUrl);
    await waitForText(frank, '#messages li', 'missed two');
    const bodies = await texts(frank, '#messages li');
    const seen = bodies.findIndex((t) => t.includes('seen before the reload'));
    const note = bodies.findIndex((t) => t.includes('missed messages recovered'));
    const one = bodies.findIndex((t) => t.includes('missed one'));
    const two = bodies.findIndex((t) => t.includes('missed two'));
    assert.ok(seen >= 0 && seen < note && note < one && one < two, JSON.stringify(bodies));
    assert.match(bodies[note], /2 missed messages recovered/);
    assert.equal(bodies.filter((t) => t.includes('seen before the reload')).length, 1, 'no duplicate');
    assert.equal(await frank.$$eval('#messages li.replayed', (n) => n.length), 2);
    const joins = await frank.evaluate(() => window.demo.events.filter((e) => e.type === 'join'));
    assert.deepEqual(joins, [{ type: 'join', room: 'lobby', rejoin: false, recovered: true, since: true }]);
    await closePages();
  });

  test('a notification sent with the CLI appears in the panel and is gone after ack', { timeout: 60_000 }, async () => {
    const grace = await demoPage('grace');
    await grace.waitForSelector('#status-notifications[data-state="connected"]', { timeout: WAIT });
    const notify = (text) => {
      const sent = server.cli([
        'notify', '--server', `https://${server.webtransport}`, '--cert-hash', server.certHash,
        '--user', 'grace', '--kind', 'mention', text,
      ]);
      assert.equal(sent.status, 0, `wtgate notify: ${sent.stderr}`);
      return sent.stdout.trim();
    };
    notify('You were mentioned in #lobby');
    notify('Your report is ready');
    const item = await waitForText(grace, '#notifications li', 'You were mentioned in #lobby');
    await waitForText(grace, '#notifications li', 'Your report is ready');
    const id = await item.evaluate((node) => node.closest('li').dataset.id);
    assert.match(await textContent(grace, `#notifications li[data-id="${id}"] .kind`), /mention/);
    await screenshot(grace, 'demo-notifications');
    await grace.click(`#notifications li[data-id="${id}"] button.ack`);
    // Polled: puppeteer's `hidden: true` waits on animation frames, which hidden pages do not get.
    await grace.waitForFunction((id) => !document.querySelector(`#notifications li[data-id="${id}"]`), { timeout: WAIT, polling: 50 }, id);

    // The inbox is on the server: a fresh page gets what was not acknowledged, only that.
    await grace.reload();
    await waitForText(grace, '#notifications li', 'Your report is ready');
    await sleep(500);
    assert.deepEqual(await texts(grace, '#notifications li .body'), ['Your report is ready']);
    await closePages();
  });
}

/**
 * Hides `page` as a user does, with a new tab in front of it in its window. Fails
 * unless the page is hidden and its timers are throttled: the tests below measure
 * what a background tab does, and could not fail without that.
 */
async function hide(page) {
  const tab = await page.browserContext().newPage();
  await tab.goto('about:blank');
  await tab.bringToFront();
  const probe = await page.evaluate(async () => {
    const started = performance.now();
    // Three chained 50 ms timers: 150 ms in a visible page, about 3 s in a hidden
    // one (both engines let a hidden page's timers wake once a second at most).
    await new Promise((resolve) => {
      let n = 0;
      const next = () => (++n === 3 ? resolve() : setTimeout(next, 50));
      setTimeout(next, 50);
    });
    return { visibility: document.visibilityState, chained: Math.round(performance.now() - started) };
  });
  assert.equal(probe.visibility, 'hidden', 'the page is hidden behind the new tab');
  assert.ok(probe.chained >= 900, `timers are throttled in the hidden page: 3 chained 50 ms timers took ${probe.chained} ms`);
}

function hiddenTests() {
  /** A browser that treats hidden pages as users' browsers do (see launchBrowser). */
  let throttling;
  before(async () => {
    throttling = await launchBrowser(engine, { throttleHidden: true });
  });
  after(async () => {
    await throttling?.close().catch((e) => console.log(`closing ${engine}: ${e.message}`));
  });

  // With setTimeout(0) releasing them (before MessageChannel), Firefox 153 delivered
  // these 1003 ms late in a hidden page and rejoined 2977 ms after a restart (below);
  // Chromium 156 runs a setTimeout(0) at nesting level < 5 unthrottled, and was not late.
  test('the first events of a session arrive within 100 ms of the transport delivering them', { timeout: 60_000 }, async () => {
    const page = await libraryPage('hidden', server, throttling);
    await hide(page);
    const result = await page.evaluate(async () => {
      const { connect } = window.lib;
      // Two messages in the room's history, replayed to x on its join (since seq 0):
      // they arrive on the room stream before Joined and are held until `join`.
      const y = await connect(`${window.base}/chat`, window.options('bg-yan'));
      const roomY = await y.join('bg-room');
      await roomY.publish('early 1');
      await roomY.publish('early 2');
      const since = { epoch: roomY.position.epoch, seq: 0 };

      const events = [];
      const x = await connect(`${window.base}/chat`, window.options('bg-xia'));
      // The Welcome has been read: from here on, only the library's release stands
      // between the transport and the listeners.
      const connected = performance.now();
      x.on('connect', () => events.push(['connect', performance.now() - connected]));
      x.on('online', (e) => e.kind === 'sync' && events.push(['online sync', performance.now() - connected]));
      const room = await x.join('bg-room', { since });
      const joined = performance.now();
      room.on('join', (e) => events.push([`join recovered=${e.recovered}`, performance.now() - joined]));
      room.on('presence', (e) => e.kind === 'sync' && events.push(['presence sync', performance.now() - joined]));
      room.on('message', (m) => events.push([`message ${m.text} replayed=${m.replayed}`, performance.now() - joined]));
      await window.until(() => events.length === 6, 'six events', 20_000);
      await x.close();
      await y.close();
      return { events: events.map(([name, ms]) => [name, Math.round(ms)]), visibility: document.visibilityState };
    });
    console.log(`[${engine}] first events in a hidden page, ms after the transport delivered them: ${JSON.stringify(result.events)}`);
    assert.equal(result.visibility, 'hidden');
    assert.deepEqual(result.events.map(([name]) => name), [
      'connect',
      'online sync',
      'join recovered=true',
      'presence sync',
      'message early 1 replayed=true',
      'message early 2 replayed=true',
    ]);
    for (const [name, ms] of result.events) assert.ok(ms < 100, `${name} came ${ms} ms after the transport delivered it`);
    await closePages();
  });

  test('reconnects within the backoff when the server restarts', { timeout: 90_000 }, async () => {
    const own = await WtgateServer.start();
    try {
      const page = await libraryPage('hidden-restart', own, throttling);
      await hide(page);
      await page.evaluate(async () => {
        const { connect } = window.lib;
        window.log = [];
        const at = (name, extra = {}) => window.log.push({ name, at: Date.now(), ...extra });
        window.x = await connect(`${window.base}/chat`, window.options('bg-rs', { reconnect: { initialDelay: 200, maxDelay: 1000 } }));
        window.x.on('disconnect', () => at('disconnect'));
        window.x.on('reconnecting', (e) => at('reconnecting', { attempt: e.attempt, delay: e.delay }));
        window.x.on('connect', (e) => at('connect', { reconnect: e.reconnect }));
        window.room = await window.x.join('bg-rs-room');
        window.room.on('join', (e) => at('join', { rejoin: e.rejoin, recovered: e.recovered }));
      });
      const down = Date.now();
      await own.restart();
      const up = Date.now();
      await page.waitForFunction(() => window.log.some((e) => e.name === 'join' && e.rejoin), { timeout: 30_000, polling: 100 });
      const log = await page.evaluate(async () => {
        await window.x.close();
        return window.log;
      });
      const rejoined = log.find((e) => e.name === 'join' && e.rejoin).at;
      const attempts = log.filter((e) => e.name === 'reconnecting');
      console.log(`[${engine}] hidden page, server restart: down ${up - down} ms; rejoined ${rejoined - up} ms after the server was back; attempts ${JSON.stringify(attempts.map((a) => [a.attempt, a.delay, a.at - down]))}`);
      // The first join is recorded too: listeners attached after `await join()` miss nothing.
      assert.deepEqual(log.filter((e) => e.name === 'join').map((e) => [e.rejoin, e.recovered]), [[false, false], [true, true]]);
      // The longest backoff (maxDelay 1000 ms) plus one throttled wake-up (1 s) plus
      // the handshake and rejoin.
      assert.ok(rejoined - up <= 2500, `rejoined ${rejoined - up} ms after the server was back: more than the backoff allows`);
      await closePages({ allow: [/Failed to establish a connection/, /Failed to load resource/, /dev-token|cert-hash/] });
    } catch (e) {
      console.log(`--- restarted server's stderr (tail) ---\n${own.stderr.slice(-4000)}`);
      throw e;
    } finally {
      await own.stop();
    }
  });

  test('a hidden page shown again reconnects at once, not after its backoff', { timeout: 90_000 }, async () => {
    const own = await WtgateServer.start();
    try {
      const page = await libraryPage('hidden-shown', own, throttling);
      await hide(page);
      await page.evaluate(async () => {
        const { connect } = window.lib;
        window.log = [];
        const at = (name, extra = {}) => window.log.push({ name, at: Date.now(), ...extra });
        // A long backoff, as after a few failed attempts (or a timer Chrome's
        // intensive throttling lets fire once a minute).
        window.x = await connect(`${window.base}/chat`, window.options('bg-shown', { reconnect: { initialDelay: 30_000, maxDelay: 30_000 } }));
        window.x.on('reconnecting', (e) => at('reconnecting', { delay: e.delay }));
        window.x.on('connect', (e) => e.reconnect && at('connect'));
      });
      await own.restart();
      await page.waitForFunction(() => window.log.some((e) => e.name === 'reconnecting'), { timeout: 10_000, polling: 100 });
      const shown = Date.now();
      await page.bringToFront();
      await page.waitForFunction(() => window.log.some((e) => e.name === 'connect'), { timeout: 20_000, polling: 100 });
      const { log, visibility } = await page.evaluate(async () => {
        await window.x.close();
        return { log: window.log, visibility: document.visibilityState };
      });
      const backoff = log.find((e) => e.name === 'reconnecting');
      const connected = log.find((e) => e.name === 'connect').at;
      console.log(`[${engine}] hidden page shown again: reconnected ${connected - shown} ms later (backoff ${backoff.delay} ms)`);
      assert.equal(visibility, 'visible');
      assert.ok(connected - shown < 2000, `reconnected ${connected - shown} ms after the page was shown (backoff ${backoff.delay} ms)`);
      await closePages({ allow: [/Failed to establish a connection/, /Failed to load resource/, /dev-token|cert-hash/] });
    } catch (e) {
      console.log(`--- restarted server's stderr (tail) ---\n${own.stderr.slice(-4000)}`);
      throw e;
    } finally {
      await own.stop();
    }
  });
}
