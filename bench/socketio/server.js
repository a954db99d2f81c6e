// The Socket.IO 4 reference server of bench/: TLS (wss), websocket transport only,
// namespace /chat. A client emits `join` (room, ack) and `publish` (room, body, ack);
// a publish goes to every member of the room, the sender included, like wtgate's.
// `volatile` (room, body) goes to the other members with the volatile flag: the
// analogue of wtgate's datagrams (dropped when the socket is not writable).
//
//   node server.js --port 4435 --cert cert.pem --key key.pem [--host 127.0.0.1]
//
// Prints `socket.io listening on https://HOST:PORT` once it accepts connections.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { parseArgs } from 'node:util';
import { Server } from 'socket.io';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '4435' },
    host: { type: 'string', default: '127.0.0.1' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
});
if (!args.cert || !args.key) {
  console.error('usage: node server.js --port PORT --cert cert.pem --key key.pem');
  process.exit(2);
}

const https = createServer({ cert: readFileSync(args.cert), key: readFileSync(args.key) });
const io = new Server(https, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 64 * 1024,
});
const chat = io.of('/chat');
const seqs = new Map(); // room → last seq, like wtgate's per-room sequence

chat.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(room);
    if (typeof ack === 'function') ack({ seq: seqs.get(room) ?? 0 });
  });
  socket.on('publish', (room, body, ack) => {
    if (!socket.rooms.has(room)) {
      if (typeof ack === 'function') ack({ error: 'not joined' });
      return;
    }
    const seq = (seqs.get(room) ?? 0) + 1;
    seqs.set(room, seq);
    chat.to(room).emit('msg', body);
    if (typeof ack === 'function') ack({ seq });
  });
  socket.on('volatile', (room, body) => {
    if (socket.rooms.has(room)) socket.volatile.to(room).emit('vmsg', body);
  });
});

https.listen(Number(args.port), args.host, () => {
  console.log(`socket.io listening on https://${args.host}:${args.port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
