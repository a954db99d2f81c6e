// A typed use of the library, compiled with `tsc --noEmit` (tests/typecheck.test.mjs)
// so that wtgate.d.ts stays in step with what applications write. Never run.

import { connect, ErrorCode, errorName, MAX_VOLATILE_BODY, WtgateError } from 'wtgate';
import type { Client, MessageEvent, Notification, Room, Since, Transport, U64 } from 'wtgate';

export async function chat(token: string, hash: string): Promise<U64> {
  const client: Client = await connect('https://localhost:4433/chat', {
    token: async () => token,
    serverCertificateHashes: [hash],
    reconnect: { initialDelay: 500, maxDelay: 5_000 },
    timeout: 5_000,
    transports: ['webtransport', 'websocket'],
    webtransportTimeout: 1_500,
    webtransportRetry: 60_000,
    websocketUrl: 'ws://127.0.0.1:8080/chat',
  });
  client.on('connect', (e) => console.log(e.user, e.session, e.reconnect, e.transport));
  const transport: Transport = client.transport;
  console.log(transport === 'websocket' ? client.websocketUrl : client.url);
  client.on('disconnect', (e) => console.log(e.code, e.reason, e.willReconnect, e.error?.kind));
  client.on('online', (e) => console.log(e.kind, e.user, e.users.length));
  client.on('error', (e: WtgateError) => console.error(e.kind, e.code, e.codeName));
  const off = client.on('broadcast', (b) => console.log(b.from, b.text, b.ts));
  off();

  const saved: Since | null = JSON.parse(sessionStorage.getItem('since') ?? 'null');
  const room: Room = await client.join('lobby', { since: saved });
  room.on('message', (m: MessageEvent) => console.log(m.room, m.seq, m.from, m.text, m.body.byteLength, m.replayed));
  room.on('presence', (p) => console.log(p.kind, p.user ?? '', p.members.join(',')));
  room.on('volatile', (v) => console.log(v.from, v.text));
  room.on('join', (j) => {
    if (j.since !== null && !j.recovered) console.log('reload the history from the application');
  });
  room.once('error', (e) => console.error(e.message));
  if (room.sendVolatile(new Uint8Array(MAX_VOLATILE_BODY))) console.log('sent');
  const seq: U64 = await room.publish('hello');
  await room.publish(new Uint8Array([1, 2, 3]));
  sessionStorage.setItem('since', JSON.stringify(room.position, (_, v) => (typeof v === 'bigint' ? String(v) : v)));
  console.log(room.name, room.state, room.members, room.lastSeq, room.epoch, client.onlineUsers, await client.fetchOnline());
  await room.leave();
  await client.close();
  return seq;
}

export async function inbox(token: string): Promise<void> {
  const notifications = await connect('https://example.com/notifications', { token });
  notifications.on('notification', async (n: Notification) => {
    console.log(n.id, n.kind, n.text, n.ts);
    await n.ack();
  });
  for (const n of notifications.notifications) await notifications.ack(n.id);
}

export function describe(error: unknown): string {
  if (error instanceof WtgateError) {
    if (error.kind === 'server' && error.code === ErrorCode.Unauthorized) return 'sign in again';
    return `${error.kind}: ${error.message} (${errorName(error.code ?? 0)})`;
  }
  return String(error);
}

// @ts-expect-error: a room is not constructed by applications
new (await import('wtgate')).Room();
// @ts-expect-error: the transports are 'webtransport' and 'websocket'
export const badTransport = () => connect('https://localhost:4433/chat', { token: 't', transports: ['http'] });
// @ts-expect-error: bodies are strings or bytes
export const wrong = (room: Room) => room.publish(42);
