// Two headless Chromium browsers call each other through webtrunk with JsSIP pages.
//
// Usage: node tests/browser/call.mjs <ws-url> <workdir>
//   e.g. node tests/browser/call.mjs ws://127.0.0.1:8080 /tmp/webtrunk-browser
// Needs Debian's chromium at /usr/bin/chromium (CHROMIUM overrides) and the npm packages
// of tests/node (jssip, esbuild, playwright-core). Meant to run inside a private network
// namespace (tests/browser/run.sh) so that WebRTC sees only 127.0.0.1.
//
// Scenarios, in order:
//   call: alice (callee) and bob (caller) register; bob calls sip:alice@localhost, alice
//         answers, both sessions reach "confirmed", getStats() inbound-rtp audio
//         packetsReceived > 0 on both sides, bob hangs up (BYE) and both sessions end.
//   busy: carol rejects every call with 486; bob calls sip:carol@localhost and his session
//         fails with status 486.
// Prints exactly one line of JSON on stdout with what each scenario observed.
// Exit codes: 0 = every check held; 1 = a check failed; 2 = hard timeout (60 s).
// Progress and the pages' console go to stderr.

import { mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nodeDir = join(here, '..', 'node');
const require = createRequire(join(nodeDir, 'package.json'));

const HARD_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 20_000;
const started = Date.now();
const elapsed = () => Date.now() - started;

const result = { ok: false, scenarios: {}, error: null, ms: 0 };
const contexts = []; // the browsers, closed at the end or on the hard timeout
const emit = (code) => {
  result.ms = elapsed();
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(code));
};
const progress = (text) => process.stderr.write(`[call.mjs ${(elapsed() / 1000).toFixed(2)}s] ${text}\n`);

const [wsUrl, workdir] = process.argv.slice(2);
if (!wsUrl || !workdir) {
  process.stderr.write('usage: node tests/browser/call.mjs <ws-url> <workdir>\n');
  result.error = 'usage';
  emit(1);
} else {
  let timedOut = false;
  const hard = setTimeout(() => {
    timedOut = true;
    result.error = result.error || `hard timeout after ${HARD_TIMEOUT_MS / 1000} s`;
    progress(result.error);
    // Close the browsers (bounded) so that no Chromium outlives the run.
    const closing = Promise.all(contexts.map((c) => c.close().catch(() => {})));
    Promise.race([closing, new Promise((r) => setTimeout(r, 3000))]).then(() => emit(2));
  }, HARD_TIMEOUT_MS);
  main()
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

/** Serves page.html and the JsSIP bundle from `www` on 127.0.0.1 (a free port). */
async function serve(www) {
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

async function launch(chromium, name) {
  const profile = join(workdir, `profile-${name}`);
  rmSync(profile, { recursive: true, force: true });
  mkdirSync(profile, { recursive: true });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
    timeout: STEP_TIMEOUT_MS,
  });
  await context.grantPermissions(['microphone'], { origin: origin() });
  return context;
}

let httpOrigin = null;
const origin = () => httpOrigin;

async function openPhone(context, name, role, target) {
  const page = await context.newPage();
  page.on('console', (msg) => process.stderr.write(`[${name} console.${msg.type()}] ${msg.text()}\n`));
  page.on('pageerror', (error) => process.stderr.write(`[${name} pageerror] ${error}\n`));
  const query = new URLSearchParams({ ws: wsUrl, user: name, password: `${name}-secret`, role });
  if (target) query.set('target', target);
  await page.goto(`${origin()}/page.html?${query}`, { timeout: STEP_TIMEOUT_MS });
  return page;
}

const phoneState = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.phone.state)));

/** Waits until `predicate(state)` holds for the page's phone state. */
async function until(page, what, predicate, timeout = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const state = await phoneState(page);
    if (predicate(state)) return state;
    if (state.registrationFailed) throw new Error(`${state.user}: registration failed (${state.registrationFailed})`);
    if (Date.now() > deadline) {
      throw new Error(`${state.user}: timed out waiting for ${what}; state ${JSON.stringify(state)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const inbound = (page) => page.evaluate(() => window.phone.inboundAudio());

async function scenarioCall(alice, bob) {
  const obs = { ok: false };
  result.scenarios.call = obs;
  const t0 = Date.now();
  progress('call: bob calls alice');
  await bob.evaluate(() => window.phone.call());
  const [a, b] = await Promise.all([
    until(alice, 'confirmed', (s) => s.confirmed || s.failed || s.ended),
    until(bob, 'confirmed', (s) => s.confirmed || s.failed || s.ended),
  ]);
  obs.aliceConfirmed = a.confirmed;
  obs.bobConfirmed = b.confirmed;
  obs.bobProgress = b.progress;
  obs.confirmedMs = Date.now() - t0;
  if (!a.confirmed || !b.confirmed) {
    obs.aliceState = a;
    obs.bobState = b;
    throw new Error('call: a session did not reach confirmed');
  }
  progress(`call: confirmed on both sides after ${obs.confirmedMs} ms; waiting for RTP`);

  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let ain;
  let bin;
  for (;;) {
    [ain, bin] = await Promise.all([inbound(alice), inbound(bob)]);
    obs.alicePacketsReceived = ain.packetsReceived;
    obs.bobPacketsReceived = bin.packetsReceived;
    if (ain.packetsReceived > 0 && bin.packetsReceived > 0) break;
    if (Date.now() > deadline) {
      obs.aliceState = await phoneState(alice);
      obs.bobState = await phoneState(bob);
      throw new Error('call: no inbound RTP on both sides');
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  obs.mediaMs = Date.now() - t0;
  // Let a little more audio flow so the counts show a stream, not a stray packet.
  await new Promise((r) => setTimeout(r, 1000));
  [ain, bin] = await Promise.all([inbound(alice), inbound(bob)]);
  obs.alicePacketsReceived = ain.packetsReceived;
  obs.bobPacketsReceived = bin.packetsReceived;
  obs.aliceBytesReceived = ain.bytesReceived;
  obs.bobBytesReceived = bin.bytesReceived;
  progress(`call: RTP alice<-${ain.packetsReceived} bob<-${bin.packetsReceived}; bob hangs up`);

  await bob.evaluate(() => window.phone.hangup());
  const [ae, be] = await Promise.all([
    until(alice, 'ended', (s) => s.ended || s.failed),
    until(bob, 'ended', (s) => s.ended || s.failed),
  ]);
  obs.aliceEnded = ae.ended;
  obs.bobEnded = be.ended;
  obs.aliceIce = ae.iceState;
  obs.bobIce = be.iceState;
  obs.ms = Date.now() - t0;
  obs.ok =
    obs.aliceConfirmed &&
    obs.bobConfirmed &&
    obs.alicePacketsReceived > 0 &&
    obs.bobPacketsReceived > 0 &&
    !!ae.ended &&
    ae.ended.originator === 'remote' &&
    ae.ended.cause === 'Terminated' &&
    !!be.ended &&
    be.ended.originator === 'local' &&
    !ae.failed &&
    !be.failed &&
    ae.errors.length === 0 &&
    be.errors.length === 0;
  if (!obs.ok) {
    obs.aliceState = ae;
    obs.bobState = be;
  }
  progress(`call: ended (alice ${JSON.stringify(ae.ended)}, bob ${JSON.stringify(be.ended)}) ok=${obs.ok}`);
  return obs.ok;
}

async function scenarioBusy(carol, bob) {
  const obs = { ok: false };
  result.scenarios.busy = obs;
  const t0 = Date.now();
  progress('busy: bob calls carol, who rejects with 486');
  await bob.evaluate(() => window.phone.call('sip:carol@localhost'));
  const [c, b] = await Promise.all([
    until(carol, 'failed', (s) => s.failed || s.ended || s.confirmed),
    until(bob, 'failed', (s) => s.failed || s.ended || s.confirmed),
  ]);
  obs.carolIncoming = c.incoming;
  obs.carolFailed = c.failed;
  obs.bobFailed = b.failed;
  obs.bobProgress = b.progress;
  obs.ms = Date.now() - t0;
  obs.ok =
    c.incoming === 1 &&
    !b.confirmed &&
    !!b.failed &&
    b.failed.originator === 'remote' &&
    b.failed.status === 486 &&
    b.failed.cause === 'Busy' &&
    b.errors.length === 0 &&
    c.errors.length === 0;
  if (!obs.ok) {
    obs.carolState = c;
    obs.bobState = b;
  }
  progress(`busy: bob failed ${JSON.stringify(b.failed)} ok=${obs.ok}`);
  return obs.ok;
}

async function main() {
  const www = join(workdir, 'www');
  await bundle(www);
  const http = await serve(www);
  httpOrigin = `http://127.0.0.1:${http.address().port}`;
  progress(`serving ${www} at ${httpOrigin}; webtrunk at ${wsUrl}`);

  const { chromium } = require('playwright-core');
  try {
    const [calleeBrowser, callerBrowser] = await Promise.all([launch(chromium, 'a'), launch(chromium, 'b')]);
    contexts.push(calleeBrowser, callerBrowser);
    result.browser = calleeBrowser.browser() ? calleeBrowser.browser().version() : null;
    const alice = await openPhone(calleeBrowser, 'alice', 'callee');
    const carol = await openPhone(calleeBrowser, 'carol', 'reject');
    const bob = await openPhone(callerBrowser, 'bob', 'caller', 'sip:alice@localhost');
    await Promise.all([
      until(alice, 'registered', (s) => s.registered),
      until(carol, 'registered', (s) => s.registered),
      until(bob, 'registered', (s) => s.registered),
    ]);
    result.registeredMs = elapsed();
    progress('alice, carol and bob registered');

    const callOk = await scenarioCall(alice, bob);
    const busyOk = await scenarioBusy(carol, bob);
    result.ok = callOk && busyOk;
    if (!result.ok) result.error = `scenario failed: call ok=${callOk}, busy ok=${busyOk}`;
  } finally {
    await Promise.all(contexts.map((c) => c.close().catch(() => {})));
    http.close();
  }
}
