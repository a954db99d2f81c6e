// Turns bench/run.sh's results.jsonl into markdown tables: the headline figures per
// server with the ratios wtgate/Socket.IO, wtgate-ws/Socket.IO (wtgate over WebSocket)
// and wtgate/floor, then every step. Above the table: the machine's raw UDP floor
// (examples/udp_floor.rs, server_name "udp-floor"), and in it each server's CPU per
// delivery at (a)'s 10k deliveries/s step as a multiple of that floor.
// Socket.IO has two generators: load.js ("socketio", one Node process, the limit above
// ~100k deliveries/s) and examples/sio_load.rs ("socketio-rs"). The ratio columns divide
// (a)'s maximum and its CPU by the run that went further, the other rows by load.js's
// figure (the Rust one when load.js did not run).
//
//   node bench/summarize.mjs bench/results/DATE/results.jsonl

import { readFileSync } from 'node:fs';

const rows = readFileSync(process.argv[2], 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l));
const SERVERS = ['wtgate', 'wtgate-ws', 'socketio', 'socketio-rs', 'floor'];
const LABEL = { wtgate: 'wtgate', 'wtgate-ws': 'wtgate WebSocket', socketio: 'Socket.IO', 'socketio-rs': 'Socket.IO (Rust generator)', floor: 'floor' };
// TCP servers have no UDP receive buffer to overflow.
const tcp = (s) => s === 'socketio' || s === 'socketio-rs' || s === 'wtgate-ws';
const of = (server, scenario) => rows.filter((r) => r.server_name === server && r.scenario === scenario && r.clients);
const clean = (r) => r.latency_ms.p99 < 100 && r.lost === 0 && r.passed;
const cleanDatagram = (r) => r.latency_ms.p99 < 100 && r.expected > 0 && r.lost <= 0.01 * r.expected;
const best = (list, ok) => list.filter(ok).sort((x, y) => y.deliveries_per_sec - x.deliveries_per_sec)[0];
const step = (list, s) => list.find((r) => r.step === String(s));
// µs of CPU per 100-byte datagram sent + received on loopback, on cpu0.
const udp = rows.find((r) => r.server_name === 'udp-floor');
const udpUs = typeof udp?.us_per_packet === 'number' && udp.us_per_packet > 0 ? udp.us_per_packet : undefined;

const fmt = (v, digits = 1) => (v === undefined || v === null || Number.isNaN(v) ? '–' : typeof v === 'number' ? (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(digits)) : String(v));

// Each metric: [label, (server) → number | undefined, digits, further]; `further`: the
// ratio columns take Socket.IO's figure from the generator that went further in (a).
const metrics = [];
const add = (label, f, digits = 1, further = false) => metrics.push([label, f, digits, further]);

add('(a) max deliveries/s at p99 < 100 ms, no loss', (s) => best(of(s, 'a'), clean)?.deliveries_per_sec, 0, true);
add('(a) server CPU µs/delivery at that rate', (s) => best(of(s, 'a'), clean)?.server?.cpu_us_per_delivery, 2, true);
// Strings, so the ratio columns stay empty. Over 80 % the generator, not the
// server, may be what stopped the figure (issue 15's rule).
const genCpu = (r) => (typeof r?.generator_cpu_percent === 'number' ? `${r.generator_cpu_percent.toFixed(0)} %` : undefined);
add('(a) generator CPU at that rate (over 80 %: it may be the limit)', (s) => genCpu(best(of(s, 'a'), clean)));
for (const rate of [50, 250, 500, 1000]) {
  add(`(a) ${rate * 200 / 1000}k deliveries/s: server CPU µs/delivery`, (s) => step(of(s, 'a'), rate)?.server?.cpu_us_per_delivery, 2);
  if (rate === 50) {
    // A string, so the ratio columns stay empty (they would be the µs ratios again).
    add('(a) 10k deliveries/s: µs/delivery ÷ raw UDP µs/packet', (s) => {
      const us = step(of(s, 'a'), rate)?.server?.cpu_us_per_delivery;
      return typeof us === 'number' && udpUs ? `${(us / udpUs).toFixed(1)}×` : undefined;
    });
  }
  add(`(a) ${rate * 200 / 1000}k deliveries/s: p50 / p99 ms`, (s) => {
    const r = step(of(s, 'a'), rate);
    return r ? `${r.latency_ms.p50.toFixed(1)} / ${r.latency_ms.p99.toFixed(1)}` : undefined;
  });
}
add('(b) deliveries/s (1,000 clients, 10 rooms, 2,000 msg/s)', (s) => of(s, 'b')[0]?.deliveries_per_sec, 0);
add('(b) server CPU µs/delivery', (s) => of(s, 'b')[0]?.server?.cpu_us_per_delivery, 2);
add('(b) p50 / p99 ms', (s) => {
  const r = of(s, 'b')[0];
  return r ? `${r.latency_ms.p50.toFixed(1)} / ${r.latency_ms.p99.toFixed(1)}` : undefined;
});
add('(b) lost / duplicated / misrouted', (s) => {
  const r = of(s, 'b')[0];
  return r ? `${r.lost} / ${r.duplicates} / ${r.misrouted}` : undefined;
});
add('(b) generator CPU (over 80 %: it may be the limit)', (s) => genCpu(of(s, 'b')[0]));
add('(b) server peak RSS MiB', (s) => { const r = of(s, 'b')[0]; return r?.server ? r.server.rss_kb_peak / 1024 : undefined; });
add('(c) idle sessions connected', (s) => of(s, 'c')[0]?.connected, 0);
add('(c) server RSS KiB per idle session', (s) => of(s, 'c')[0]?.server?.rss_kb_per_session, 1);
add('(c) sessions connected per second', (s) => of(s, 'c')[0]?.connects_per_sec, 0);
add('(c) server CPU µs per connect', (s) => of(s, 'c')[0]?.server?.connect_cpu_us_per_session, 0);
add('(c) server UDP receive-buffer drops while connecting', (s) => (tcp(s) ? undefined : of(s, 'c')[0]?.server_udp_drops), 0);
add('(c) connect p50 / p99 ms', (s) => {
  const r = of(s, 'c')[0];
  return r ? `${r.connect_ms.p50.toFixed(0)} / ${r.connect_ms.p99.toFixed(0)}` : undefined;
});
add('(d) datagrams: max deliveries/s at p99 < 100 ms, ≤ 1% lost', (s) => best(of(s, 'd'), cleanDatagram)?.deliveries_per_sec, 0);
add('(d) server CPU µs/delivery at that rate', (s) => best(of(s, 'd'), cleanDatagram)?.server?.cpu_us_per_delivery, 2);
add('server peak RSS MiB (all scenarios)', (s) => {
  const peaks = rows.filter((r) => r.server_name === s && r.server).map((r) => r.server.rss_kb_peak);
  return peaks.length ? Math.max(...peaks) / 1024 : undefined;
});

console.log(udp
  ? `Raw UDP floor (examples/udp_floor.rs, cpu0): ${fmt(udp.us_per_packet, 2)} µs CPU per ${udp.bytes}-byte datagram sent + received on loopback (wall ${fmt(udp.wall_us_per_packet, 2)} µs; ${udp.packets.toLocaleString('en-US')} packets).\n`
  : 'Raw UDP floor: not measured in this run.\n');

const present = SERVERS.filter((s) => rows.some((r) => r.server_name === s));
const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' && b !== 0 ? `${(a / b).toFixed(2)}×` : '–');
const header = ['metric', ...present.map((s) => LABEL[s])];
// Socket.IO's generator that went further in (a): the larger max deliveries/s.
const aMax = (s) => best(of(s, 'a'), clean)?.deliveries_per_sec ?? -1;
const sioFurther = aMax('socketio-rs') > aMax('socketio') ? 'socketio-rs' : 'socketio';
// The ratios' Socket.IO ('sio'): see the top of the file.
const sioOf = (vals, further) => (further ? vals[sioFurther] : vals.socketio ?? vals['socketio-rs']);
const has = (s) => (s === 'sio' ? present.includes('socketio') || present.includes('socketio-rs') : present.includes(s));
// [column, numerator, denominator]: ratios of servers measured in the same run.
const ratios = [
  ['wtgate/Socket.IO', 'wtgate', 'sio'],
  ['WebSocket/Socket.IO', 'wtgate-ws', 'sio'],
  ['WebSocket/wtgate', 'wtgate-ws', 'wtgate'],
  ['wtgate/floor', 'wtgate', 'floor'],
].filter(([, a, b]) => has(a) && has(b));
header.push(...ratios.map(([column]) => column));
console.log(`| ${header.join(' | ')} |`);
console.log(`|${header.map(() => '---').join('|')}|`);
for (const [label, f, digits, further] of metrics) {
  const vals = Object.fromEntries(present.map((s) => [s, f(s)]));
  vals.sio = sioOf(vals, further);
  const cells = [label, ...present.map((s) => fmt(vals[s], digits))];
  cells.push(...ratios.map(([, a, b]) => ratio(vals[a], vals[b])));
  console.log(`| ${cells.join(' | ')} |`);
}

for (const [scenario, title] of [['a', '(a) 200 clients, 1 room, 10 senders, stream'], ['d', '(d) the same with datagrams']]) {
  const list = rows.filter((r) => r.scenario === scenario && r.clients);
  if (!list.length) continue;
  console.log(`\n${title}, every step:\n`);
  console.log('| server | msg/s | deliveries/s | p50 ms | p99 ms | max ms | lost | µs CPU/delivery | server UDP drops | errors |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of list) {
    const errs = Object.entries(r.errors ?? {}).map(([k, n]) => `${k}: ${n}`).join('; ') || '–';
    console.log(`| ${LABEL[r.server_name]} | ${r.rate} | ${fmt(r.deliveries_per_sec, 0)} | ${r.latency_ms.p50.toFixed(1)} | ${r.latency_ms.p99.toFixed(1)} | ${r.latency_ms.max.toFixed(1)} | ${r.lost} | ${fmt(r.server?.cpu_us_per_delivery, 2)} | ${tcp(r.server_name) ? '–' : fmt(r.server_udp_drops, 0)} | ${errs} |`);
  }
}
// Scenarios e–h: one row per step, both servers side by side.
const tail = (r) => `${r.latency_ms.p50.toFixed(1)} / ${r.latency_ms.p99.toFixed(1)} / ${r.latency_ms.p999.toFixed(1)}`;
const scenarios = [
  ['e', '(e) packet loss: 200 clients, 10 rooms, 20 senders, 200 msg/s (step = % dropped on each end)', (r) => `${r.step} %`],
  ['f', '(f) 200 clients in 4 of 20 rooms each, 20 senders, 400 msg/s (step = % loss)', (r) => `${r.step} %`],
  ['g', '(g) churn: 200 steady clients, 10 rooms, 500 msg/s (step = new sessions/s, each staying 2 s)', (r) => `${r.step}/s`],
  ['h', "(h) Centrifugo's shape: personal + group room of 10, 100-byte bodies, 100 senders, 2,000 msg/s", (r) => `${r.clients} clients`],
];
for (const [scenario, title, stepOf] of scenarios) {
  const list = rows.filter((r) => r.scenario === scenario && r.clients);
  if (!list.length) continue;
  console.log(`\n${title}:\n`);
  console.log('| step | server | deliveries/s | p50 / p99 / p99.9 ms | max ms | per-room p99 min / median / max ms | churn: sessions, connect p50 / p99 ms | lost | µs CPU/delivery | errors |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  const order = (r) => `${String(Number.parseFloat(r.step)).padStart(8, '0')} ${r.server_name}`;
  for (const r of [...list].sort((x, y) => (order(x) < order(y) ? -1 : 1))) {
    const rp = r.room_p99_ms;
    const room = rp && rp.rooms > 1 ? `${rp.min.toFixed(1)} / ${rp.median.toFixed(1)} / ${rp.max.toFixed(1)}` : '–';
    const churn = r.churn ? `${r.churn.sessions}, ${r.churn.connect_ms.p50.toFixed(1)} / ${r.churn.connect_ms.p99.toFixed(1)}` : '–';
    const errs = Object.entries(r.errors ?? {}).map(([k, n]) => `${k}: ${n}`).join('; ') || '–';
    console.log(`| ${stepOf(r)} | ${LABEL[r.server_name]} | ${fmt(r.deliveries_per_sec, 0)} | ${tail(r)} | ${r.latency_ms.max.toFixed(1)} | ${room} | ${churn} | ${r.lost} | ${fmt(r.server?.cpu_us_per_delivery, 2)} | ${errs} |`);
  }
}
const loads = rows.filter((r) => r.loadavg_before !== undefined).map((r) => r.loadavg_before);
if (loads.length) {
  console.log(`\n1-minute load average before each run: ${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)} (the server and generator add up to 2; more means other work shared the cores).`);
}
