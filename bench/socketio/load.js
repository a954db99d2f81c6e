// The Socket.IO load generator of bench/: the workload and report of `wtgate load`
// (see src/load/), for the reference server in server.js.
//
//   node load.js --url https://127.0.0.1:4435/chat --ca cert.pem --clients 200 \
//     --rooms 1 --senders 10 --rate 500 --duration 10s --warmup 2s --json [--server-pid PID]
//
// Client i joins room i % rooms (--rooms-per-client K: rooms (i + j) % rooms, j < K,
// a sender publishing to them in turn; --group-size G: a personal room and a group
// room of G, publishing to the group — as src/load/plan.rs); clients 0..senders
// publish, message n of sender k
// due at (k + n·senders)/rate s (even in total, catch-up bounded to 50 ms). Each body
// is a 64-character string (--body) starting with `room|sender|counter|sent_us|`;
// receivers check the room, drop duplicates per sender, and record one-way latency
// (one process, one clock) in an HDR histogram. Warmup messages are left out.
// Expected deliveries = measured sent × members (publish echoes to the sender;
// `--mode datagram` uses volatile emits to the others: members − 1).
// --churn-rate R: R extra sockets per second connect, join a room, stay --churn-life
// and leave while the others chat (their connect times are reported apart).
// With --json, prints exactly one JSON object with the keys `wtgate load --json` prints.

import { readFileSync } from 'node:fs';
import { checkServerIdentity } from 'node:tls';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as hdr from 'hdr-histogram-js';
import { io } from 'socket.io-client';

const { values: a } = parseArgs({
  options: {
    url: { type: 'string', multiple: true },
    ca: { type: 'string' },
    // Check the certificate against this name instead of the URL's host (a dev
    // certificate names localhost and 127.0.0.1, not the bench's netns address).
    'tls-name': { type: 'string' },
    clients: { type: 'string', default: '100' },
    rooms: { type: 'string', default: '1' },
    'rooms-per-client': { type: 'string', default: '1' },
    'group-size': { type: 'string' },
    'churn-rate': { type: 'string', default: '0' },
    'churn-life': { type: 'string', default: '1s' },
    senders: { type: 'string' },
    rate: { type: 'string', default: '100' },
    duration: { type: 'string', default: '10s' },
    warmup: { type: 'string', default: '2s' },
    body: { type: 'string', default: '64' },
    mode: { type: 'string', default: 'stream' },
    'connect-rate': { type: 'string', default: '0' },
    'server-pid': { type: 'string', multiple: true },
    json: { type: 'boolean', default: false },
  },
});

function seconds(s) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new Error(`bad duration ${s}`);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n;
}

const urls = a.url ?? [];
const clients = Number(a.clients);
const groupSize = a['group-size'] ? Number(a['group-size']) : 0;
const perClient = groupSize ? 2 : Number(a['rooms-per-client']);
const rooms = groupSize ? clients + Math.ceil(clients / groupSize) : Number(a.rooms);
const senders = a.senders === undefined ? Math.min(10, clients) : Number(a.senders);
const churnRate = Number(a['churn-rate']);
const churnLife = seconds(a['churn-life']);
const rate = Number(a.rate);
const duration = seconds(a.duration);
const warmup = seconds(a.warmup);
const bodyLen = Number(a.body);
const datagram = a.mode === 'datagram';
const connectRate = Number(a['connect-rate']);
const pids = (a['server-pid'] ?? []).map(Number);
const ca = a.ca ? readFileSync(a.ca) : undefined;
const tlsName = a['tls-name'];
if (!urls.length || !(clients > 0) || !(rooms > 0) || (!groupSize && rooms > clients) || senders > clients
    || !(perClient >= 1 && perClient <= rooms) || !(churnRate >= 0)) {
  console.error('usage: node load.js --url URL [--ca FILE] --clients N --rooms R --senders S --rate MSGS ...');
  process.exit(2);
}
const log = (...x) => { if (!a.json) console.error(...x); };

// --- the plan (as src/load/plan.rs) ---
const roomOf = (i, j) => (groupSize ? (j === 0 ? i : clients + Math.floor(i / groupSize)) : (i + j) % rooms);
const roomsOf = (i) => Array.from({ length: perClient }, (_, j) => roomOf(i, j));
const publishSlot = (n) => (groupSize ? 1 : n % perClient);
const sendsTo = (s, r) => s < senders && r < rooms
  && (groupSize ? r === roomOf(s, 1) : (r + rooms - (s % rooms)) % rooms < perClient);
const slotsIn = () => (groupSize ? groupSize : perClient * Math.ceil(senders / rooms));
const slotOf = (s, r) => (groupSize ? s % groupSize : Math.floor(s / rooms) * perClient + (r + rooms - (s % rooms)) % rooms);
const roomName = (r) => `load-${runId}-${r}`;
const runId = Math.floor(Math.random() * 65536).toString(16).padStart(4, '0');

// --- /proc (as src/load/procfs.rs) ---
function procSample() {
  let cpuMs = 0, rssKb = 0, peakKb = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      cpuMs += (Number(f[11]) + Number(f[12])) * 10; // USER_HZ = 100
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      rssKb += Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
      peakKb += Number(/VmHWM:\s+(\d+)/.exec(status)[1]);
    } catch {
      err(`server pid ${pid} unreadable`);
    }
  }
  return { cpuMs, rssKb, peakKb };
}

// --- shared figures ---
const errors = {};
function err(kind, n = 1) { errors[kind] = (errors[kind] ?? 0) + n; }
const histo = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600e6, numberOfSignificantValueDigits: 3, useWebAssembly: false });
const latency = histo();
const connectH = histo();
// Per room, made at the room's first delivery (2 digits: there may be thousands).
const roomLatency = new Map();
const roomHisto = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600e6, numberOfSignificantValueDigits: 2, useWebAssembly: false });
const churnH = histo();
const churnCounts = { sessions: 0, failed: 0 };
const nowUs = () => performance.now() * 1000; // µs, monotonic, no BigInt per message
const sentPerRoom = new Array(rooms).fill(0);
const members = new Array(rooms).fill(0);
let arrived = 0, measured = 0;
const counts = { delivered: 0, duplicates: 0, misrouted: 0, malformed: 0, unmeasured: 0 };
let epochUs = 0, warmupUs = 0, endUs = 0;

// A receiver's per-sender windows (highest + 32-message bitmap, as tally.rs).
function makeTally(room) {
  const n = slotsIn(room);
  return { room, next: new Float64Array(n), mask: new Uint32Array(n) };
}
function seen(t, slot, c) {
  const next = t.next[slot];
  if (c >= next) {
    const shift = c + 1 - next;
    t.mask[slot] = shift >= 32 ? 1 : ((t.mask[slot] << shift) | 1) >>> 0;
    t.next[slot] = c + 1;
    return false;
  }
  const back = next - 1 - c;
  if (back >= 32) return true;
  const bit = (1 << back) >>> 0;
  const was = (t.mask[slot] & bit) !== 0;
  t.mask[slot] = (t.mask[slot] | bit) >>> 0;
  return was;
}
// A client's tallies by room: the body names the room it was published to.
function onMessage(tallies, body) {
  arrived++;
  const now = nowUs();
  if (typeof body !== 'string') { counts.malformed++; return; }
  const i1 = body.indexOf('|'), i2 = body.indexOf('|', i1 + 1), i3 = body.indexOf('|', i2 + 1), i4 = body.indexOf('|', i3 + 1);
  const room = +body.slice(0, i1), sender = +body.slice(i1 + 1, i2), counter = +body.slice(i2 + 1, i3), sent = +body.slice(i3 + 1, i4);
  if (!sendsTo(sender, room) || Number.isNaN(counter) || Number.isNaN(sent)) { counts.malformed++; return; }
  const t = tallies.get(room);
  if (!t) { counts.misrouted++; return; }
  if (seen(t, slotOf(sender, room), counter)) { counts.duplicates++; return; }
  const rel = sent - epochUs;
  if (rel < warmupUs || rel >= endUs) { counts.unmeasured++; return; }
  counts.delivered++;
  measured++;
  const us = Math.max(1, Math.round(now - sent));
  latency.recordValue(us);
  let h = roomLatency.get(room);
  if (!h) roomLatency.set(room, (h = roomHisto()));
  h.recordValue(us);
}

// --- connect ---
const sockets = new Array(clients).fill(null);
let connectedCount = 0;
function connectOne(i) {
  return new Promise((resolve) => {
    const started = nowUs();
    const url = urls[i % urls.length];
    const s = io(url, {
      transports: ['websocket'], forceNew: true, reconnection: false, timeout: 10000,
      ca, rejectUnauthorized: !!ca,
      checkServerIdentity: tlsName ? (_host, cert) => checkServerIdentity(tlsName, cert) : undefined,
    });
    let done = false;
    const finish = (ok, kind) => {
      if (done) return;
      done = true;
      if (!ok) { err(kind); s.close(); resolve(); return; }
      resolve();
    };
    s.on('connect_error', (e) => finish(false, `connect: ${e.message}`));
    s.on('connect', () => {
      connectH.recordValue(Math.max(1, Math.round(nowUs() - started)));
      const mine = roomsOf(i);
      const tallies = new Map(mine.map((r) => [r, makeTally(r)]));
      s.on(datagram ? 'vmsg' : 'msg', (body) => onMessage(tallies, body));
      let acks = 0;
      for (const r of mine) {
        s.emit('join', roomName(r), () => {
          if (++acks < mine.length) return;
          sockets[i] = s;
          connectedCount++;
          for (const m of mine) members[m]++;
          s.on('disconnect', (reason) => { if (!stopping) err(`disconnected: ${reason}`); });
          finish(true);
        });
      }
    });
  });
}

let stopping = false;
const connectStart = nowUs();
const before = procSample();
{
  const inflight = new Set();
  for (let i = 0; i < clients; i++) {
    if (connectRate > 0) {
      const at = connectStart + (i / connectRate) * 1e6;
      const wait = at - nowUs();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait / 1000));
    }
    const p = connectOne(i).then(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= 256) await Promise.race(inflight);
    if (!a.json && i % 500 === 499) log(`connecting ${i + 1}/${clients}`);
  }
  await Promise.all(inflight);
}
const connectElapsed = (nowUs() - connectStart) / 1e6;
const connected = connectedCount;
const afterConnect = procSample();
log(`connected ${connected}/${clients} in ${connectElapsed.toFixed(2)} s`);

// --- send ---
epochUs = nowUs();
warmupUs = warmup * 1e6;
endUs = (warmup + duration) * 1e6;
const catchUpUs = 50_000;
const pad = 'x'.repeat(bodyLen);
function startSender(k) {
  const s = sockets[k];
  if (!s) return;
  const periodUs = (senders * 1e6) / rate;
  const phaseUs = (k * 1e6) / rate;
  const maxBurst = Math.max(1, Math.floor(catchUpUs / periodUs));
  let n = 0, counter = 0;
  const at = (m) => phaseUs + m * periodUs;
  const tick = () => {
    if (stopping) return;
    const horizon = Math.min(nowUs() - epochUs, endUs - 1);
    let due = 0;
    while (at(n) <= horizon && at(n) < endUs) { n++; due++; }
    const send = Math.min(due, maxBurst);
    if (due > send) err('send skipped: sender behind', due - send);
    const nowRel = nowUs() - epochUs;
    const sentAbs = Math.round(epochUs + nowRel);
    for (let j = 0; j < send; j++) {
      const room = roomOf(k, publishSlot(counter));
      const name = roomName(room);
      let body = `${room}|${k}|${counter}|${sentAbs}|`;
      counter++;
      body += pad.slice(0, Math.max(0, bodyLen - body.length));
      if (datagram) s.emit('volatile', name, body);
      else s.emit('publish', name, body, (r) => { if (r && r.error) err(`server: ${r.error}`); });
      if (nowRel >= warmupUs && nowRel < endUs) sentPerRoom[room]++;
    }
    if (at(n) < endUs) setTimeout(tick, Math.max(0, (epochUs + at(n) - nowUs()) / 1000));
  };
  setTimeout(tick, Math.max(0, phaseUs / 1000));
}
if (senders > 0) for (let k = 0; k < senders; k++) startSender(k);

// --- churn: sockets that come and go while the others chat ---
const churning = new Set();
function churnOne(k) {
  const measured = (() => { const rel = nowUs() - epochUs; return rel >= warmupUs && rel < endUs; })();
  const started = nowUs();
  const s = io(urls[0], {
    transports: ['websocket'], forceNew: true, reconnection: false, timeout: 10000,
    ca, rejectUnauthorized: !!ca,
    checkServerIdentity: tlsName ? (_host, cert) => checkServerIdentity(tlsName, cert) : undefined,
  });
  churning.add(s);
  const leave = () => { s.close(); churning.delete(s); };
  s.on('connect_error', (e) => { if (measured) churnCounts.failed++; err(`churn connect: ${e.message}`); leave(); });
  s.on('connect', () => {
    const us = Math.max(1, Math.round(nowUs() - started));
    s.emit('join', roomName(k % rooms), () => {
      if (measured) { churnCounts.sessions++; churnH.recordValue(us); }
      setTimeout(leave, churnLife * 1000);
    });
  });
}
if (churnRate > 0) {
  let k = 0;
  const next = () => {
    if (stopping) return;
    const at = epochUs + (k / churnRate) * 1e6;
    if (at - epochUs >= endUs) return;
    setTimeout(() => { if (!stopping) { churnOne(k); k++; next(); } }, Math.max(0, (at - nowUs()) / 1000));
  };
  next();
}

const sleepUntil = (us) => new Promise((r) => setTimeout(r, Math.max(0, (us - nowUs()) / 1000)));
await sleepUntil(epochUs + warmupUs);
const w0 = procSample(); const a0 = arrived;
// The generator's own CPU over the window (user + system, µs), against wall time.
const own0 = process.cpuUsage(); const ownAt0 = performance.now();
await sleepUntil(epochUs + endUs);
const w1 = procSample(); const a1 = arrived;
const ownCpu = process.cpuUsage(own0); const ownWallMs = performance.now() - ownAt0;
const receivers = (m) => (datagram ? Math.max(0, m - 1) : m);
const expectedNow = () => sentPerRoom.reduce((sum, s, r) => sum + s * receivers(members[r]), 0);
const drainUntil = nowUs() + (datagram ? 1e6 : 5e6);
while (nowUs() < drainUntil && measured < expectedNow()) await new Promise((r) => setTimeout(r, 20));
stopping = true;
for (const s of sockets) if (s) s.close();
for (const s of churning) s.close();

// --- report (as src/load/report.rs) ---
const r3 = (x) => Math.round(x * 1000) / 1000;
const ms = (h, q) => (h.totalCount === 0 ? 0 : r3(h.getValueAtPercentile(q) / 1000));
const sent = sentPerRoom.reduce((x, y) => x + y, 0);
const expected = expectedNow();
if (counts.malformed) err('malformed_body', counts.malformed);
const report = {
  clients, rooms, senders, rate, duration_s: duration, warmup_s: warmup, body_bytes: bodyLen,
  mode: datagram ? 'datagram' : 'stream', connected,
  connects_per_sec: connectElapsed > 0 ? r3(connected / connectElapsed) : 0,
  sent, expected, delivered: counts.delivered, lost: Math.max(0, expected - counts.delivered),
  duplicates: counts.duplicates, misrouted: counts.misrouted,
  deliveries_per_sec: r3(counts.delivered / duration),
  latency_ms: { p50: ms(latency, 50), p90: ms(latency, 90), p99: ms(latency, 99), p999: ms(latency, 99.9), max: ms(latency, 100) },
  connect_ms: { p50: ms(connectH, 50), p99: ms(connectH, 99), max: ms(connectH, 100) },
  rooms_per_client: perClient,
  room_p99_ms: (() => {
    const p = [...roomLatency.values()].map((h) => ms(h, 99)).sort((x, y) => x - y);
    return p.length ? { rooms: p.length, min: p[0], median: p[Math.floor(p.length / 2)], max: p[p.length - 1] } : { rooms: 0, min: 0, median: 0, max: 0 };
  })(),
  errors,
  // Socket.IO has no presence: nothing to count (the key keeps the report's shape).
  presence_frames: { namespace: 0, room: 0 },
};
if (churnRate > 0) {
  report.churn = {
    rate: churnRate, life_s: churnLife, sessions: churnCounts.sessions, failed: churnCounts.failed,
    connect_ms: { p50: ms(churnH, 50), p99: ms(churnH, 99), max: ms(churnH, 100) },
  };
}
const failures = [];
if (!datagram && report.lost > 0) failures.push(`${report.lost} deliveries lost`);
if (report.duplicates) failures.push(`${report.duplicates} duplicates`);
if (report.misrouted) failures.push(`${report.misrouted} misrouted`);
if (counts.malformed) failures.push(`${counts.malformed} malformed_body`);
if (connected < clients) failures.push(`${clients - connected} of ${clients} clients did not connect`);
report.passed = failures.length === 0;
if (pids.length) {
  const cpu = w1.cpuMs - w0.cpuMs;
  const win = a1 - a0;
  report.server = {
    cpu_ms: cpu, window_deliveries: win,
    cpu_us_per_delivery: win ? r3((cpu * 1000) / win) : 0,
    connect_cpu_us_per_session: connected ? r3(((afterConnect.cpuMs - before.cpuMs) * 1000) / connected) : 0,
    rss_kb_before: before.rssKb, rss_kb_connected: w0.rssKb, rss_kb_end: w1.rssKb,
    rss_kb_peak: Math.max(w1.peakKb, afterConnect.peakKb),
    rss_kb_per_session: connected ? r3((w0.rssKb - before.rssKb) / connected) : 0,
  };
}
if (ownWallMs > 0) {
  report.generator_cpu_percent = Math.round(((ownCpu.user + ownCpu.system) / 1000 / ownWallMs) * 1000) / 10;
}
if (a.json) {
  process.stdout.write(JSON.stringify(report) + '\n');
} else {
  const l = report.latency_ms, c = report.connect_ms;
  console.log(`clients ${clients} (${connected} connected) · rooms ${rooms} · senders ${senders} · ${rate} msg/s · ${bodyLen}-byte bodies · ${report.mode} · ${duration}s (+${warmup}s warmup)`);
  console.log(`sent ${sent} · expected ${expected} · delivered ${counts.delivered} · lost ${report.lost} · duplicated ${counts.duplicates} · misrouted ${counts.misrouted}`);
  console.log(`deliveries/s ${report.deliveries_per_sec.toFixed(0)}`);
  console.log(`latency ms   p50 ${l.p50} · p90 ${l.p90} · p99 ${l.p99} · p99.9 ${l.p999} · max ${l.max}`);
  if (rooms > 1) { const r = report.room_p99_ms; console.log(`per room     p99 ms min ${r.min} · median ${r.median} · max ${r.max} over ${r.rooms} rooms (${perClient} per client)`); }
  console.log(`connect ms   p50 ${c.p50} · p99 ${c.p99} · max ${c.max} · ${report.connects_per_sec.toFixed(0)} sessions/s`);
  if (report.churn) { const ch = report.churn; console.log(`churn        ${ch.sessions} sessions (${ch.rate}/s, ${ch.life_s}s each), ${ch.failed} failed · connect ms p50 ${ch.connect_ms.p50} · p99 ${ch.connect_ms.p99} · max ${ch.connect_ms.max}`); }
  if (report.server) console.log(`server       ${JSON.stringify(report.server)}`);
  if (report.generator_cpu_percent !== undefined) console.log(`generator    ${report.generator_cpu_percent.toFixed(1)} % of a core over the measured window`);
  console.log(`errors       ${Object.keys(errors).length ? JSON.stringify(errors) : 'none'}`);
  console.log(`result       ${failures.length ? 'FAIL: ' + failures.join(', ') : 'PASS'}`);
}
process.exit(report.passed ? 0 : 1);
