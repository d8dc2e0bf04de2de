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

import { inbound, phoneState, runReport, sleep, STEP_TIMEOUT_MS, until } from './harness.mjs';

const HARD_TIMEOUT_MS = 60_000;

const [wsUrl, workdir] = process.argv.slice(2);
let result;
let progress;
runReport(
  { name: 'call.mjs', wsUrl, workdir, hardTimeoutMs: HARD_TIMEOUT_MS, usage: 'node tests/browser/call.mjs <ws-url> <workdir>' },
  async (harness) => {
    ({ result, progress } = harness);
    await harness.serve();
    try {
      const [calleeBrowser, callerBrowser] = await Promise.all([harness.launch('a'), harness.launch('b')]);
      result.browser = calleeBrowser.browser() ? calleeBrowser.browser().version() : null;
      const alice = await harness.openPhone(calleeBrowser, 'alice', 'callee');
      const carol = await harness.openPhone(calleeBrowser, 'carol', 'reject');
      const bob = await harness.openPhone(callerBrowser, 'bob', 'caller', 'sip:alice@localhost');
      await Promise.all([
        until(alice, 'registered', (s) => s.registered),
        until(carol, 'registered', (s) => s.registered),
        until(bob, 'registered', (s) => s.registered),
      ]);
      result.registeredMs = harness.elapsed();
      progress('alice, carol and bob registered');

      const callOk = await scenarioCall(alice, bob);
      const busyOk = await scenarioBusy(carol, bob);
      result.ok = callOk && busyOk;
      if (!result.ok) result.error = `scenario failed: call ok=${callOk}, busy ok=${busyOk}`;
    } finally {
      await harness.closeAll();
    }
  },
);

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
    await sleep(200);
  }
  obs.mediaMs = Date.now() - t0;
  // Let a little more audio flow so the counts show a stream, not a stray packet.
  await sleep(1000);
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
