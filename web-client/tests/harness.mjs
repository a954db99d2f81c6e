// Test harness for the browser tests: a real `wtgate serve --dev` process and
// headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core.
// Recipe: shared/CHROMIUM.md.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const WEB_CLIENT = fileURLToPath(new URL('../', import.meta.url));
export const BINARY = process.env.WTGATE_BIN ?? join(REPO, 'target', 'debug', 'wtgate');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** Builds target/debug/wtgate when it is missing (run-tests.sh always builds). */
export function ensureBinary() {
  if (existsSync(BINARY)) return;
  const built = spawnSync('cargo', ['build', '--bin', 'wtgate'], { cwd: REPO, stdio: 'inherit' });
  if (built.status !== 0 || !existsSync(BINARY)) {
    throw new Error(`could not build ${BINARY} (cargo exit ${built.status})`);
  }
}

/**
 * A running `wtgate serve --dev` on free ports. `stop()` it in `after`.
 */
export class WtgateServer {
  /** @type {import('node:child_process').ChildProcess} */ process;
  /** e.g. `[::1]:4433` */ webtransport = '';
  /** e.g. `http://127.0.0.1:8080/` */ demoUrl = '';
  certHash = '';
  secret = '';
  stdout = '';
  stderr = '';

  /**
   * Starts the server and waits until it printed its addresses. Its certificate
   * and data (`--data-dir`) live in a temporary directory that `stop()` removes.
   * @param {{args?: string[]}} [options] more arguments for `wtgate serve`
   */
  static async start(options = {}) {
    const server = new WtgateServer();
    server.dir = mkdtempSync(join(tmpdir(), 'wtgate-test-'));
    server.args = options.args ?? [];
    await server.#spawn({ listen: '[::1]:0', demoListen: '127.0.0.1:0', dataDir: join(server.dir, 'data') });
    return server;
  }

  /**
   * Stops the server and starts it again on the same ports with the same
   * certificate and token secret (`--dev` keeps both in its `--certs-dir`).
   * @param {{keepData?: boolean}} [options] `keepData: false` starts with an empty
   *   `--data-dir`, as on a new machine: room histories are gone
   */
  async restart({ keepData = true } = {}) {
    await this.#kill();
    const dataDir = keepData ? this.dataDir : mkdtempSync(join(this.dir, 'data-'));
    await this.#spawn({ listen: this.webtransport, demoListen: this.demoListen, dataDir });
  }

  async #spawn({ listen, demoListen, dataDir }) {
    ensureBinary();
    const server = this;
    server.dataDir = dataDir;
    server.stdout = '';
    const args = [
      'serve', '--dev',
      '--listen', listen,
      '--demo-listen', demoListen,
      '--certs-dir', join(server.dir, 'certs'),
      '--data-dir', dataDir,
      ...server.args,
    ];
    const env = { ...process.env, WTGATE_LOG: process.env.WTGATE_LOG ?? 'info,wtgate=debug' };
    delete env.WTGATE_SECRET; // --dev makes one in --certs-dir; keep the test independent of the caller's shell
    server.process = spawn(BINARY, args, { cwd: server.dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    server.process.stdout.setEncoding('utf8');
    server.process.stderr.setEncoding('utf8');
    server.process.stderr.on('data', (chunk) => { server.stderr += chunk; });

    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error('wtgate did not print its addresses within 20 s')), 20_000);
      const fail = (error) => {
        clearTimeout(timer);
        reject(new Error(`${error.message}\n--- stdout ---\n${server.stdout}\n--- stderr ---\n${server.stderr.slice(-4000)}`));
      };
      server.process.on('error', fail);
      server.process.on('exit', (code, signal) => fail(new Error(`wtgate exited early (code ${code}, signal ${signal})`)));
      server.process.stdout.on('data', (chunk) => {
        server.stdout += chunk;
        const wt = /listening on https:\/\/(\S+)/.exec(server.stdout);
        const demo = /demo page: (http:\/\/\S+)/.exec(server.stdout);
        const hash = /certificate sha-256: ([0-9a-f]{64})/.exec(server.stdout);
        const secret = /dev token secret: (\S+)/.exec(server.stdout);
        if (wt && demo && hash) {
          clearTimeout(timer);
          server.process.removeAllListeners('exit');
          server.process.removeAllListeners('error');
          server.webtransport = wt[1];
          server.demoUrl = demo[1];
          server.certHash = hash[1];
          server.secret = secret?.[1] ?? '';
          resolve();
        }
      });
    });
    server.exited = new Promise((resolve) => server.process.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** The UDP port of the WebTransport listener. */
  get port() {
    return Number(/:(\d+)$/.exec(this.webtransport)[1]);
  }

  /** The demo's `host:port`. */
  get demoListen() {
    return new URL(this.demoUrl).host;
  }

  /** Runs the same binary's CLI (e.g. `notify`) against this server's secret. */
  cli(args) {
    return spawnSync(BINARY, args, {
      cwd: this.dir,
      env: { ...process.env, WTGATE_SECRET: this.secret },
      encoding: 'utf8',
      timeout: 30_000,
    });
  }

  /** Stops the server (SIGTERM, then SIGKILL after 5 s), waits for it, removes its files. */
  async stop() {
    await this.#kill();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  async #kill() {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGTERM');
      const killer = setTimeout(() => this.process.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(killer);
    }
  }
}

/** Launches headless Chromium as CHROMIUM.md says. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (run-tests.sh does it)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE ::1',
    ],
  });
}

/**
 * A new page in its own context (its own storage: one "user"), with the page's
 * console errors, warnings and uncaught exceptions forwarded to the test output
 * and collected in `page.problems`.
 * @param {import('playwright-core').Browser} browser
 * @param {string} label shown before forwarded lines, e.g. the user's name
 */
export async function newPage(browser, label) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (message) => {
    const type = message.type();
    if (type === 'error' || type === 'warning') {
      const line = `[${label} console.${type}] ${message.text()}`;
      page.problems.push(line);
      console.log(line);
    }
  });
  page.on('pageerror', (error) => {
    const line = `[${label} uncaught] ${error.stack ?? error.message}`;
    page.problems.push(line);
    console.log(line);
  });
  page.on('requestfailed', (request) => {
    console.log(`[${label} request failed] ${request.url()}: ${request.failure()?.errorText}`);
  });
  return page;
}

/** Removes a directory made with `mkdtempSync`. */
export const removeDir = (dir) => rmSync(dir, { recursive: true, force: true });
