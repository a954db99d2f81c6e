// Backend hooks from the browser: the library in headless Chromium against a real
// `wtgate serve --dev` whose /chat hooks point at the example backend
// (examples/backend/server.js, a real node:http process): `client.rpc()`, the
// connect hook's data, and a publish the backend refuses.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { REPO, WtgateServer, launchBrowser, newPage, removeDir } from './harness.mjs';

const HOOK_SECRET = 'browser-test-hook-secret';

/** The example backend on a free port; `port` once it listens. */
async function startBackend(dir) {
  const child = spawn('node', [join(REPO, 'examples', 'backend', 'server.js')], {
    env: { ...process.env, PORT: '0', WTGATE_HOOK_SECRET: HOOK_SECRET, DATA_FILE: join(dir, 'messages.json') },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.stdout.setEncoding('utf8');
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the example backend did not start within 10 s')), 10_000);
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on('exit', (code) => reject(new Error(`the example backend exited (${code})`)));
  });
  child.removeAllListeners('exit');
  return { child, port };
}

describe('chromium: backend hooks', () => {
  let dir;
  let backend;
  let server;
  let browser;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'wtgate-rpc-'));
    backend = await startBackend(dir);
    const config = join(dir, 'wtgate.toml');
    writeFileSync(config, [
      '[namespaces.chat.hooks]',
      `url = "http://127.0.0.1:${backend.port}/wtgate"`,
      'connect = true',
      'publish = true',
      'rpc = true',
      '[namespaces.notifications]',
      'inbox = true',
      'presence = false',
      'online = false',
      'client_publish = false',
      'datagrams = false',
      '',
    ].join('\n'));
    server = await WtgateServer.start({ args: ['--config', config, '--hook-secret', HOOK_SECRET] });
    browser = await launchBrowser('chromium');
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.stop();
    backend?.child.kill('SIGKILL');
    if (dir) removeDir(dir);
  });

  test('rpc() reaches the backend; its refusals reject with its code', { timeout: 60_000 }, async () => {
    const page = await newPage(browser, 'rpc');
    await page.goto(new URL('/cert-hash', server.demoUrl).href);
    const result = await page.evaluate(async () => {
      const { connect } = await import('/wtgate.js');
      const cert = await (await fetch('/cert-hash')).json();
      const token = async () => (await (await fetch('/dev-token?user=alice')).json()).token;
      const client = await connect(`${cert.url}/chat`, { token, serverCertificateHashes: [cert.hash] });
      const room = await client.join('lobby');
      await room.publish(JSON.stringify({ text: 'hello from chromium' }));
      let refused = null;
      try {
        await room.publish(JSON.stringify({ text: 'oh heck' }));
      } catch (e) {
        refused = { kind: e.kind, code: e.code, message: e.message };
      }
      const found = await client.rpc('history.search', { room: 'lobby', q: 'CHROMIUM' });
      const whoami = await client.rpc('whoami');
      let unknown = null;
      try {
        await client.rpc('no.such.method', {});
      } catch (e) {
        unknown = { kind: e.kind, code: e.code };
      }
      const out = { connectData: client.connectData, found, whoami, refused, unknown };
      await client.close();
      return out;
    });
    assert.deepEqual(result.connectData, { name: 'Alice Liddell' });
    assert.equal(result.found.hits.length, 1);
    assert.equal(result.found.hits[0].text, 'hello from chromium');
    assert.equal(result.found.hits[0].user, 'alice');
    assert.deepEqual(result.whoami, { user: 'alice', name: 'Alice Liddell' });
    assert.equal(result.refused.kind, 'server');
    assert.equal(result.refused.code, 4001);
    assert.match(result.refused.message, /"heck" is not allowed here/);
    assert.deepEqual(result.unknown, { kind: 'server', code: 4004 });
    assert.deepEqual(page.problems, []);
  });
});
