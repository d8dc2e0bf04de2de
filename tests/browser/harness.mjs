// What call.mjs and trunk_call.mjs share: bundling JsSIP into a page, serving it, headless
// Chromium through playwright-core, the phones' state, and the one-JSON-line report with a
// hard time limit.
//
// Needs Debian's chromium at /usr/bin/chromium (CHROMIUM overrides) and the npm packages of
// tests/node (jssip, esbuild, playwright-core). Meant to run inside a private network
// namespace (run.sh, run_trunk.sh) so that WebRTC sees only 127.0.0.1.

import { mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nodeDir = join(here, '..', 'node');
export const require = createRequire(join(nodeDir, 'package.json'));

export const STEP_TIMEOUT_MS = 20_000;

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // Without this Chromium leaves loopback out of ICE: in a namespace where only lo exists
  // it gathers no candidate at all and stays in "gathering" (JsSIP then never sends the
  // INVITE).
  '--allow-loopback-in-peer-connection',
];

/**
 * Runs `main(harness)` under a hard time limit and prints `harness.result` as one JSON line
 * on stdout. Exit codes: 0 = `result.ok`; 1 = a check failed or `main` threw; 2 = hard
 * timeout (the browsers are closed first, bounded). `usage` is printed when an argument is
 * missing.
 */
export function runReport({ name, wsUrl, workdir, hardTimeoutMs, usage }, main) {
  const started = Date.now();
  const elapsed = () => Date.now() - started;
  const result = { ok: false, scenarios: {}, error: null, ms: 0 };
  const contexts = []; // the browsers, closed at the end or on the hard timeout
  const progress = (text) => process.stderr.write(`[${name} ${(elapsed() / 1000).toFixed(2)}s] ${text}\n`);
  const emit = (code) => {
    result.ms = elapsed();
    process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(code));
  };
  if (!wsUrl || !workdir) {
    process.stderr.write(`usage: ${usage}\n`);
    result.error = 'usage';
    emit(1);
    return;
  }
  const harness = new Harness({ wsUrl, workdir, result, contexts, progress, elapsed });
  let timedOut = false;
  const hard = setTimeout(() => {
    timedOut = true;
    result.error = result.error || `hard timeout after ${hardTimeoutMs / 1000} s`;
    progress(result.error);
    // Close the browsers (bounded) so that no Chromium outlives the run.
    Promise.race([harness.closeAll(), new Promise((r) => setTimeout(r, 3000))]).then(() => emit(2));
  }, hardTimeoutMs);
  main(harness)
    .then(() => {
      if (timedOut) return;
      clearTimeout(hard);
      emit(result.ok ? 0 : 1);
    })
    .catch((error) => {
      if (timedOut) return;
      clearTimeout(hard);
      result.error = result.error || String(error && error.stack ? error.stack : error);
      progress(`failed: ${result.error}`);
      emit(1);
    });
}

class Harness {
  constructor({ wsUrl, workdir, result, contexts, progress, elapsed }) {
    Object.assign(this, { wsUrl, workdir, result, contexts, progress, elapsed });
    this.origin = null;
    this.http = null;
  }

  /** Bundles JsSIP and page.html into `<workdir>/www` and serves them on 127.0.0.1. */
  async serve() {
    const www = join(this.workdir, 'www');
    await bundle(www);
    this.http = await serveDir(www);
    this.origin = `http://127.0.0.1:${this.http.address().port}`;
    this.progress(`serving ${www} at ${this.origin}; webtrunk at ${this.wsUrl}`);
  }

  /** One headless Chromium with a fresh profile `<workdir>/profile-<name>`. */
  async launch(name) {
    const { chromium } = require('playwright-core');
    const profile = join(this.workdir, `profile-${name}`);
    rmSync(profile, { recursive: true, force: true });
    mkdirSync(profile, { recursive: true });
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      chromiumSandbox: false,
      args: CHROMIUM_ARGS,
      timeout: STEP_TIMEOUT_MS,
    });
    this.contexts.push(context);
    await context.grantPermissions(['microphone'], { origin: this.origin });
    return context;
  }

  /** A page.html phone for `name` (password `<name>-secret`) in `context`. */
  async openPhone(context, name, role, target) {
    const page = await context.newPage();
    page.on('console', (msg) => process.stderr.write(`[${name} console.${msg.type()}] ${msg.text()}\n`));
    page.on('pageerror', (error) => process.stderr.write(`[${name} pageerror] ${error}\n`));
    const query = new URLSearchParams({ ws: this.wsUrl, user: name, password: `${name}-secret`, role });
    if (target) query.set('target', target);
    await page.goto(`${this.origin}/page.html?${query}`, { timeout: STEP_TIMEOUT_MS });
    return page;
  }

  /** Closes every browser and the HTTP server. */
  async closeAll() {
    await Promise.all(this.contexts.map((c) => c.close().catch(() => {})));
    if (this.http) this.http.close();
  }
}

export const phoneState = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.phone.state)));

/** Waits until `predicate(state)` holds for the page's phone state. */
export async function until(page, what, predicate, timeout = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const state = await phoneState(page);
    if (predicate(state)) return state;
    if (state.registrationFailed) throw new Error(`${state.user}: registration failed (${state.registrationFailed})`);
    if (Date.now() > deadline) {
      throw new Error(`${state.user}: timed out waiting for ${what}; state ${JSON.stringify(state)}`);
    }
    await sleep(100);
  }
}

/** getStats() inbound-rtp audio totals of the page's current session. */
export const inbound = (page) => page.evaluate(() => window.phone.inboundAudio());

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function bundle(www) {
  const esbuild = require('esbuild');
  mkdirSync(www, { recursive: true });
  await esbuild.build({
    entryPoints: [require.resolve('jssip/lib/JsSIP.js')],
    bundle: true,
    format: 'iife',
    globalName: 'JsSIP',
    platform: 'browser',
    target: 'chrome120',
    outfile: join(www, 'jssip.bundle.js'),
    logLevel: 'warning',
  });
  writeFileSync(join(www, 'page.html'), readFileSync(join(here, 'page.html')));
}

/** Serves page.html and the JsSIP bundle from `www` on 127.0.0.1 (a free port). */
async function serveDir(www) {
  const files = {
    '/page.html': ['text/html; charset=utf-8', readFileSync(join(www, 'page.html'))],
    '/jssip.bundle.js': ['text/javascript; charset=utf-8', readFileSync(join(www, 'jssip.bundle.js'))],
  };
  const server = createServer((req, res) => {
    const file = files[new URL(req.url, 'http://127.0.0.1').pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': file[0], 'cache-control': 'no-store' }).end(file[1]);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return server;
}
