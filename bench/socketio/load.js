// The Socket.IO load generator of bench/: the workload and report of `wtgate load`
// (see src/load/), for the reference server in server.js.
//
//   node load.js --url https://127.0.0.1:4435/chat --ca cert.pem --clients 200 \
//     --rooms 1 --senders 10 --rate 500 --duration 10s --warmup 2s --json [--server-pid PID]
//
// Client i joins room i % rooms; clients 0..senders publish, message n of sender k
// due at (k + n·senders)/rate s (even in total, catch-up bounded to 50 ms). Each body
// is a 64-character string (--body) starting with `room|sender|counter|sent_us|`;
// receivers check the room, drop duplicates per sender, and record one-way latency
// (one process, one clock) in an HDR histogram. Warmup messages are left out.
// Expected deliveries = measured sent × members (publish echoes to the sender;
// `--mode datagram` uses volatile emits to the others: members − 1).
// With --json, prints exactly one JSON object with the keys `wtgate load --json` prints.

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as hdr from 'hdr-histogram-js';
import { io } from 'socket.io-client';

const { values: a } = parseArgs({
  options: {
    url: { type: 'string', multiple: true },
    ca: { type: 'string' },
    clients: { type: 'string', default: '100' },
    rooms: { type: 'string', default: '1' },
    senders: { type: 'string', default: '10' },
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
const rooms = Number(a.rooms);
const senders = Number(a.senders);
const rate = Number(a.rate);
const duration = seconds(a.duration);
const warmup = seconds(a.warmup);
const bodyLen = Number(a.body);
const datagram = a.mode === 'datagram';
const connectRate = Number(a['connect-rate']);
const pids = (a['server-pid'] ?? []).map(Number);
const ca = a.ca ? readFileSync(a.ca) : undefined;
if (!urls.length || !(clients > 0) || !(rooms > 0) || rooms > clients || senders > clients) {
  console.error('usage: node load.js --url URL [--ca FILE] --clients N --rooms R --senders S --rate MSGS ...');
  process.exit(2);
}
const log = (...x) => { if (!a.json) console.error(...x); };

// --- the plan (as src/load/plan.rs) ---
const roomOf = (i) => i % rooms;
const countBelow = (n, r) => Math.floor(n / rooms) + (r < n % rooms ? 1 : 0);
const sendersIn = (r) => countBelow(senders, r);
const slotOf = (s) => Math.floor(s / rooms);
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
const nowUs = () => performance.now() * 1000; // µs, monotonic, no BigInt per message
const sentPerRoom = new Array(rooms).fill(0);
const members = new Array(rooms).fill(0);
let arrived = 0, measured = 0;
const counts = { delivered: 0, duplicates: 0, misrouted: 0, malformed: 0, unmeasured: 0 };
let epochUs = 0, warmupUs = 0, endUs = 0;

// A receiver's per-sender windows (highest + 32-message bitmap, as tally.rs).
function makeTally(room) {
  const n = sendersIn(room);
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
function onMessage(t, body) {
  arrived++;
  const now = nowUs();
  if (typeof body !== 'string') { counts.malformed++; return; }
  const i1 = body.indexOf('|'), i2 = body.indexOf('|', i1 + 1), i3 = body.indexOf('|', i2 + 1), i4 = body.indexOf('|', i3 + 1);
  const room = +body.slice(0, i1), sender = +body.slice(i1 + 1, i2), counter = +body.slice(i2 + 1, i3), sent = +body.slice(i3 + 1, i4);
  if (!(sender < senders) || roomOf(sender) !== room || Number.isNaN(counter) || Number.isNaN(sent)) { counts.malformed++; return; }
  if (room !== t.room) { counts.misrouted++; return; }
  if (seen(t, slotOf(sender), counter)) { counts.duplicates++; return; }
  const rel = sent - epochUs;
  if (rel < warmupUs || rel >= endUs) { counts.unmeasured++; return; }
  counts.delivered++;
  measured++;
  latency.recordValue(Math.max(1, Math.round(now - sent)));
}

// --- connect ---
const sockets = new Array(clients).fill(null);
function connectOne(i) {
  return new Promise((resolve) => {
    const started = nowUs();
    const url = urls[i % urls.length];
    const s = io(url, {
      transports: ['websocket'], forceNew: true, reconnection: false, timeout: 10000,
      ca, rejectUnauthorized: !!ca,
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
      const r = roomOf(i);
      s.emit('join', roomName(r), () => {
        sockets[i] = s;
        members[r]++;
        const t = makeTally(r);
        s.on(datagram ? 'vmsg' : 'msg', (body) => onMessage(t, body));
        s.on('disconnect', (reason) => { if (!stopping) err(`disconnected: ${reason}`); });
        finish(true);
      });
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
const connected = members.reduce((x, y) => x + y, 0);
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
  const room = roomOf(k);
  const name = roomName(room);
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
      let body = `${room}|${k}|${counter}|${sentAbs}|`;
      counter++;
      body += pad.slice(0, Math.max(0, bodyLen - body.length));
      if (datagram) s.emit('volatile', name, body);
      else s.emit('publish', name, body, (r) => { if (r && r.error) err(`server: ${r.error}`); });
    }
    if (nowRel >= warmupUs && nowRel < endUs) sentPerRoom[room] += send;
    if (at(n) < endUs) setTimeout(tick, Math.max(0, (epochUs + at(n) - nowUs()) / 1000));
  };
  setTimeout(tick, Math.max(0, phaseUs / 1000));
}
if (senders > 0) for (let k = 0; k < senders; k++) startSender(k);

const sleepUntil = (us) => new Promise((r) => setTimeout(r, Math.max(0, (us - nowUs()) / 1000)));
await sleepUntil(epochUs + warmupUs);
const w0 = procSample(); const a0 = arrived;
await sleepUntil(epochUs + endUs);
const w1 = procSample(); const a1 = arrived;
const receivers = (m) => (datagram ? Math.max(0, m - 1) : m);
const expectedNow = () => sentPerRoom.reduce((sum, s, r) => sum + s * receivers(members[r]), 0);
const drainUntil = nowUs() + (datagram ? 1e6 : 5e6);
while (nowUs() < drainUntil && measured < expectedNow()) await new Promise((r) => setTimeout(r, 20));
stopping = true;
for (const s of sockets) if (s) s.close();

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
  errors,
};
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
if (a.json) {
  process.stdout.write(JSON.stringify(report) + '\n');
} else {
  const l = report.latency_ms, c = report.connect_ms;
  console.log(`clients ${clients} (${connected} connected) · rooms ${rooms} · senders ${senders} · ${rate} msg/s · ${bodyLen}-byte bodies · ${report.mode} · ${duration}s (+${warmup}s warmup)`);
  console.log(`sent ${sent} · expected ${expected} · delivered ${counts.delivered} · lost ${report.lost} · duplicated ${counts.duplicates} · misrouted ${counts.misrouted}`);
  console.log(`deliveries/s ${report.deliveries_per_sec.toFixed(0)}`);
  console.log(`latency ms   p50 ${l.p50} · p90 ${l.p90} · p99 ${l.p99} · p99.9 ${l.p999} · max ${l.max}`);
  console.log(`connect ms   p50 ${c.p50} · p99 ${c.p99} · max ${c.max} · ${report.connects_per_sec.toFixed(0)} sessions/s`);
  if (report.server) console.log(`server       ${JSON.stringify(report.server)}`);
  console.log(`errors       ${Object.keys(errors).length ? JSON.stringify(errors) : 'none'}`);
  console.log(`result       ${failures.length ? 'FAIL: ' + failures.join(', ') : 'PASS'}`);
}
process.exit(report.passed ? 0 : 1);
