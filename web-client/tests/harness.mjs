// Test harness for the browser tests: a real `wtgate serve --dev` process and real
// headless browsers driven by puppeteer-core: Debian's Chromium over the DevTools
// protocol, Debian's Firefox ESR over WebDriver BiDi. One driver for both, so every
// browser test is written once and runs in each engine (`ENGINES`).
// Chromium recipe: shared/CHROMIUM.md.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import puppeteer from 'puppeteer-core';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const WEB_CLIENT = fileURLToPath(new URL('../', import.meta.url));
export const BINARY = process.env.WTGATE_BIN ?? join(REPO, 'target', 'debug', 'wtgate');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const FIREFOX = process.env.FIREFOX ?? '/usr/bin/firefox-esr';

/**
 * The engines the browser tests run in: both, unless `WTGATE_BROWSERS` names a
 * subset (e.g. `chromium` while working on one). An unknown name is an error,
 * never a silent skip.
 */
export const ENGINES = (process.env.WTGATE_BROWSERS ?? 'chromium,firefox').split(',').map((e) => e.trim()).filter(Boolean);
for (const engine of ENGINES) {
  if (engine !== 'chromium' && engine !== 'firefox') throw new Error(`WTGATE_BROWSERS: unknown engine ${engine} (chromium, firefox)`);
}

/** Chromium flags (puppeteer's defaults) that switch off the throttling of hidden pages. */
const CHROMIUM_NO_THROTTLING = [
  '--disable-background-timer-throttling',
  '--disable-backgrounding-occluded-windows',
  '--disable-renderer-backgrounding',
];

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

/**
 * Launches headless `engine` (`'chromium'` or `'firefox'`).
 *
 * `throttleHidden`: Chromium keeps its normal treatment of hidden pages (timers
 * aligned to one wake-up a second). puppeteer switches that off by default, which
 * is what the other tests want (two users' pages, one of them in the background),
 * but the background-tab tests must see what a user's browser does. Firefox
 * throttles hidden pages either way.
 * @param {'chromium'|'firefox'} engine
 * @param {{throttleHidden?: boolean}} [options]
 */
export async function launchBrowser(engine, { throttleHidden = false } = {}) {
  const executablePath = engine === 'firefox' ? FIREFOX : CHROMIUM;
  if (!existsSync(executablePath)) {
    const pkg = engine === 'firefox' ? 'firefox-esr' : 'chromium';
    throw new Error(`${executablePath} is missing: apt-get install -y ${pkg} (run-tests.sh does it)`);
  }
  if (engine === 'firefox') {
    return puppeteer.launch({
      browser: 'firefox',
      executablePath,
      headless: true,
      extraPrefsFirefox: {
        // No traffic to outside hosts: no captive-portal or connectivity probes,
        // no remote settings. puppeteer's defaults cover updates and telemetry.
        'network.captive-portal-service.enabled': false,
        'network.connectivity-service.enabled': false,
        'services.settings.server': 'data:,',
      },
    });
  }
  return puppeteer.launch({
    browser: 'chrome',
    executablePath,
    headless: true,
    ignoreDefaultArgs: throttleHidden ? CHROMIUM_NO_THROTTLING : [],
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
 * A new page in its own browser context (its own storage: one "user"), with the
 * page's console errors, warnings and uncaught exceptions forwarded to the test
 * output and collected in `page.problems`. Close it with
 * `page.browserContext().close()`.
 * @param {import('puppeteer-core').Browser} browser
 * @param {string} label shown before forwarded lines, e.g. the user's name
 */
export async function newPage(browser, label) {
  const context = await browser.createBrowserContext();
  // A window of its own, as two users side by side: a tab in a shared window would
  // be hidden behind the next one, and hidden pages get throttled timers and no
  // animation frames (the background-tab tests hide pages on purpose).
  const page = await context.newPage({ type: 'window' });
  await page.setViewport({ width: 1200, height: 760 });
  page.problems = [];
  page.on('console', (message) => {
    const type = message.type();
    if (type === 'error' || type === 'warn' || type === 'warning') {
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
