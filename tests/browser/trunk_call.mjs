// Browser <-> plain-RTP trunk calls through webtrunk and rtpengine, with real audio.
//
// Usage: node tests/browser/trunk_call.mjs <ws-url> <workdir>
// with, in the environment (tests/browser/run_trunk.sh sets them):
//   RTPENGINE_NG        rtpengine's ng control address, e.g. 127.0.0.1:22222
//   WEBTRUNK_UDP        webtrunk's UDP SIP address the carrier calls, e.g. 127.0.0.1:5060
//   CARRIER_SIP_PORT    UDP port of the carrier SIPp this script starts (scenario `in`)
//   CARRIER_MEDIA_PORT  its RTP port (-mp; -rtp_echo reflects what arrives there)
//   TRUNK_SIPP_RC       file where run_trunk.sh writes the trunk SIPp's exit code
//   TRUNK_SIPP_ERRORS   that SIPp's -error_file (its tail goes into the report)
// Needs what call.mjs needs (harness.mjs) plus `sipp` (Debian sip-tester). Meant to run
// inside a private network namespace (run_trunk.sh).
//
// Scenarios, in order (a failing one is reported and the next still runs):
//   out: bob's browser calls sip:02079460958@localhost; route "0" sends it to the trunk, a
//        SIPp UAS (tests/sipp/trunk_media_answer.xml, -rtp_echo) that fails unless the
//        INVITE's SDP is plain RTP/AVP. The call is confirmed, getStats() inbound-rtp audio
//        packetsReceived > 0 (bob hears his own audio echoed through rtpengine), rtpengine
//        lists a call, JsSIP hold() and unhold() both succeed (re-INVITEs answered recvonly
//        and sendrecv by the trunk, and bob's answers still say so) and audio still
//        arrives after unhold; bob hangs up, the
//        trunk SIPp exits 0, and rtpengine lists no call within 2 s (webtrunk deleted it).
//   in:  a carrier SIPp UAC (tests/sipp/carrier_calls_did_media.xml, -rtp_echo) calls the
//        DID +15550100 from a trunk source with a PCMU RTP/AVP offer; alice's INVITE carries
//        a WebRTC offer (UDP/TLS/RTP/SAVPF with a=fingerprint: rtpengine bridged it), alice
//        answers, her inbound audio packetsReceived > 0, the carrier hangs up after 4 s,
//        SIPp exits 0 (it checked the 200's SDP is plain RTP), rtpengine lists no call
//        within 2 s.
// Prints exactly one line of JSON on stdout with what each scenario observed.
// Exit codes: 0 = every check held; 1 = a check failed; 2 = hard timeout (75 s).
// Progress and the pages' console go to stderr.

import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inbound, phoneState, runReport, sleep, until } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const HARD_TIMEOUT_MS = 75_000;
const OUT_NUMBER = '02079460958';
const DID = '+15550100';
/** How long the report waits for rtpengine to forget a call after it ended. */
const SESSION_GONE_MS = 2_000;

const [wsUrl, workdir] = process.argv.slice(2);
const env = process.env;
let result;
let progress;

runReport(
  {
    name: 'trunk_call.mjs',
    wsUrl,
    workdir,
    hardTimeoutMs: HARD_TIMEOUT_MS,
    usage: 'node tests/browser/trunk_call.mjs <ws-url> <workdir> (env: see the header)',
  },
  async (harness) => {
    ({ result, progress } = harness);
    for (const key of ['RTPENGINE_NG', 'WEBTRUNK_UDP', 'CARRIER_SIP_PORT', 'CARRIER_MEDIA_PORT', 'TRUNK_SIPP_RC']) {
      if (!env[key]) throw new Error(`environment variable ${key} is not set (run_trunk.sh sets it)`);
    }
    await harness.serve();
    try {
      const [aliceBrowser, bobBrowser] = await Promise.all([harness.launch('alice'), harness.launch('bob')]);
      result.browser = aliceBrowser.browser() ? aliceBrowser.browser().version() : null;
      const alice = await harness.openPhone(aliceBrowser, 'alice', 'callee');
      const bob = await harness.openPhone(bobBrowser, 'bob', 'caller', `sip:${OUT_NUMBER}@localhost`);
      await Promise.all([
        until(alice, 'registered', (s) => s.registered),
        until(bob, 'registered', (s) => s.registered),
      ]);
      result.registeredMs = harness.elapsed();
      progress('alice and bob registered');
      result.rtpengineCallsBefore = await rtpengineCalls();

      const outOk = await scenario('out', () => scenarioOut(bob));
      const inOk = await scenario('in', () => scenarioIn(alice));
      result.ok = outOk && inOk;
      if (!result.ok) result.error = result.error || `scenario failed: out ok=${outOk}, in ok=${inOk}`;
    } finally {
      await harness.closeAll();
    }
  },
);

/** Runs one scenario; a thrown error is recorded in it and makes it fail. */
async function scenario(name, run) {
  const obs = { ok: false };
  result.scenarios[name] = obs;
  try {
    await run(obs);
  } catch (error) {
    obs.ok = false;
    obs.error = String(error && error.message ? error.message : error);
    progress(`${name}: ${obs.error}`);
  }
  return obs.ok;
}

async function scenarioOut(bob) {
  const obs = result.scenarios.out;
  const t0 = Date.now();
  progress(`out: bob calls ${OUT_NUMBER} through the trunk`);
  await bob.evaluate(() => window.phone.call());
  const b = await until(bob, 'confirmed', (s) => s.confirmed || s.failed || s.ended);
  obs.bobConfirmed = b.confirmed;
  obs.bobProgress = b.progress;
  obs.confirmedMs = Date.now() - t0;
  if (!b.confirmed) {
    obs.bobState = b;
    throw new Error(`out: bob's session did not reach confirmed (${JSON.stringify(b.failed || b.ended)})`);
  }
  progress(`out: confirmed after ${obs.confirmedMs} ms; waiting for echoed RTP`);
  obs.rtpengineCallsDuring = await rtpengineCalls();

  obs.bobPacketsReceived = (await packetsUntil(bob, (n) => n > 0, 10_000)).packetsReceived;
  obs.mediaMs = Date.now() - t0;
  // Let a little more audio flow so the count shows a stream, not a stray packet.
  await sleep(1000);
  obs.bobPacketsReceived = (await inbound(bob)).packetsReceived;
  progress(`out: bob<-${obs.bobPacketsReceived} packets; hold`);

  obs.hold = await holdStep(bob, 'hold');
  obs.unhold = await holdStep(bob, 'unhold');
  const beforeResume = (await inbound(bob)).packetsReceived;
  obs.bobPacketsAfterUnhold =
    (await packetsUntil(bob, (n) => n > beforeResume, 5_000)).packetsReceived - beforeResume;
  progress(`out: hold ${JSON.stringify(obs.hold)}, unhold ${JSON.stringify(obs.unhold)}; bob hangs up`);

  await bob.evaluate(() => window.phone.hangup());
  const be = await until(bob, 'ended', (s) => s.ended || s.failed);
  obs.bobEnded = be.ended;
  obs.bobFailed = be.failed;
  obs.bobIce = be.iceState;
  obs.rtpengineCallsAfter = await rtpengineCallsGone();
  obs.trunkSipp = await trunkSippExit(10_000);
  obs.ms = Date.now() - t0;
  obs.ok =
    obs.bobConfirmed &&
    obs.bobPacketsReceived > 0 &&
    obs.rtpengineCallsDuring.length > 0 &&
    obs.hold.ok &&
    obs.unhold.ok &&
    obs.bobPacketsAfterUnhold > 0 &&
    !!be.ended &&
    be.ended.originator === 'local' &&
    !be.failed &&
    be.errors.length === 0 &&
    obs.rtpengineCallsAfter.length === 0 &&
    obs.trunkSipp.exit === 0;
  if (!obs.ok) obs.bobState = be;
  progress(`out: ended ${JSON.stringify(be.ended)} ok=${obs.ok}`);
}

/** JsSIP hold() or unhold() on bob's session: accepted, the event fired, the re-INVITE done. */
async function holdStep(page, action) {
  const started = await page.evaluate((a) => window.phone[a](), action);
  const s = await until(
    page,
    `${action} done`,
    (st) => st.holdsDone.includes(action) || st.failed || st.ended,
    10_000,
  ).catch(async () => phoneState(page));
  const event = s.holdEvents.some((e) => e.event === action && e.originator === 'local');
  const done = s.holdsDone.includes(action);
  // The trunk answers a hold (sendonly) recvonly and an unhold sendrecv: the answer that
  // reached the browser must still say so (RFC 3264 §8.4).
  const answerDirection = s.remoteDirections[s.remoteDirections.length - 1] || null;
  const expected = action === 'hold' ? ['recvonly', 'inactive'] : ['sendrecv'];
  const ok = started && event && done && expected.includes(answerDirection) && !s.failed && !s.ended;
  return { ok, started, event, done, answerDirection, ended: s.ended };
}

async function scenarioIn(alice) {
  const obs = result.scenarios.in;
  const t0 = Date.now();
  progress(`in: the carrier calls ${DID}`);
  const carrier = startCarrier();
  try {
    const a = await until(alice, 'confirmed', (s) => s.confirmed || s.failed || s.ended, 15_000);
    obs.aliceIncoming = a.incoming;
    obs.aliceConfirmed = a.confirmed;
    const offer = a.incomingSdp || '';
    obs.offerProfile = (offer.match(/^m=audio \d+ (\S+)/m) || [])[1] || null;
    obs.offerHasFingerprint = /^a=fingerprint:/m.test(offer);
    obs.offerHasIce = /^a=ice-ufrag:/m.test(offer);
    obs.offerWebrtc = obs.offerProfile === 'UDP/TLS/RTP/SAVPF' && obs.offerHasFingerprint && obs.offerHasIce;
    if (!obs.offerWebrtc) obs.offer = offer;
    if (!a.confirmed) {
      obs.aliceState = a;
      throw new Error(`in: alice's session did not reach confirmed (${JSON.stringify(a.failed || a.ended)})`);
    }
    progress(`in: confirmed after ${Date.now() - t0} ms (offer ${obs.offerProfile}); waiting for echoed RTP`);
    obs.rtpengineCallsDuring = await rtpengineCalls();
    // The carrier hangs up 4 s after its ACK: packets must show up before that.
    obs.alicePacketsReceived = (await packetsUntil(alice, (n) => n > 0, 3_000)).packetsReceived;
    if (obs.alicePacketsReceived > 0) {
      // Let a little more audio flow (the BYE comes 4 s after the ACK) so the count shows a
      // stream, not a stray packet.
      await sleep(1000);
      obs.alicePacketsReceived = (await packetsUntil(alice, () => true, 0)).packetsReceived;
    }
    progress(`in: alice<-${obs.alicePacketsReceived} packets; waiting for the carrier's BYE`);
    const ae = await until(alice, 'ended', (s) => s.ended || s.failed, 15_000);
    obs.aliceEnded = ae.ended;
    obs.aliceFailed = ae.failed;
    obs.carrierSipp = await carrier.exit;
    obs.rtpengineCallsAfter = await rtpengineCallsGone();
    obs.ms = Date.now() - t0;
    obs.ok =
      obs.aliceConfirmed &&
      obs.offerWebrtc &&
      obs.alicePacketsReceived > 0 &&
      obs.rtpengineCallsDuring.length > 0 &&
      !!ae.ended &&
      ae.ended.originator === 'remote' &&
      !ae.failed &&
      ae.errors.length === 0 &&
      obs.carrierSipp.exit === 0 &&
      obs.rtpengineCallsAfter.length === 0;
    if (!obs.ok) obs.aliceState = ae;
    progress(`in: ended ${JSON.stringify(ae.ended)} ok=${obs.ok}`);
  } finally {
    carrier.stop();
    if (!obs.carrierSipp) obs.carrierSipp = await carrier.exit;
  }
}

/**
 * Polls getStats() until `test(packetsReceived)` holds or `timeout` ms pass, and returns the
 * last stats seen (the caller checks them). A closed peer connection keeps the last count.
 */
async function packetsUntil(page, test, timeout) {
  const deadline = Date.now() + timeout;
  let last = { packetsReceived: 0, bytesReceived: 0, found: false };
  for (;;) {
    try {
      last = await inbound(page);
    } catch (error) {
      last = { ...last, error: String(error) };
    }
    if (test(last.packetsReceived) || Date.now() > deadline) return last;
    await sleep(200);
  }
}

/**
 * The carrier: SIPp as UAC calling the DID, bounded by its own -timeout and killed (by PID)
 * by `stop()`. `exit` resolves to { exit, errors } once it is gone.
 */
function startCarrier() {
  const errorFile = join(workdir, 'carrier_sipp_errors.log');
  const args = [
    '-sf', join(here, '..', 'sipp', 'carrier_calls_did_media.xml'),
    '-s', DID,
    '-i', '127.0.0.1', '-p', env.CARRIER_SIP_PORT,
    '-mi', '127.0.0.1', '-mp', env.CARRIER_MEDIA_PORT, '-rtp_echo',
    '-m', '1', '-t', 'u1', '-nostdin', '-timeout', '30s',
    '-trace_err', '-error_file', errorFile,
    env.WEBTRUNK_UDP,
  ];
  const child = spawn('sipp', args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: workdir });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-2000); });
  const exit = new Promise((resolve) => {
    child.on('error', (e) => resolve({ exit: null, errors: String(e) }));
    child.on('exit', (code, signal) => {
      const errors = existsSync(errorFile) ? readFileSync(errorFile, 'utf8').slice(-1500) : '';
      resolve({ exit: code, signal, ...(code === 0 ? {} : { errors: errors || stderr }) });
    });
  });
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  };
  return { exit, stop };
}

/** The trunk SIPp's exit code, written by run_trunk.sh into TRUNK_SIPP_RC when it ends. */
async function trunkSippExit(timeout) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (existsSync(env.TRUNK_SIPP_RC)) {
      const text = readFileSync(env.TRUNK_SIPP_RC, 'utf8').trim();
      if (text !== '') {
        const exit = Number(text);
        const file = env.TRUNK_SIPP_ERRORS;
        const errors = exit !== 0 && file && existsSync(file) ? readFileSync(file, 'utf8').slice(-1500) : undefined;
        return { exit, ...(errors === undefined ? {} : { errors }) };
      }
    }
    await sleep(100);
  }
  return { exit: null, errors: `the trunk SIPp was still running ${timeout} ms after the call` };
}

/** rtpengine's call list, polled until it is empty or SESSION_GONE_MS passed. */
async function rtpengineCallsGone() {
  const deadline = Date.now() + SESSION_GONE_MS;
  for (;;) {
    const calls = await rtpengineCalls();
    if (calls.length === 0 || Date.now() > deadline) return calls;
    await sleep(100);
  }
}

let cookieCounter = 0;

/**
 * The Call-IDs rtpengine holds, from its ng `list` command (bencode over UDP, each request
 * prefixed by a cookie the reply echoes). Three tries of 1 s each, then an error.
 */
async function rtpengineCalls() {
  const [host, port] = splitHostPort(env.RTPENGINE_NG);
  const cookie = `trunkcall${process.pid}-${++cookieCounter}`;
  const request = Buffer.from(`${cookie} d7:command4:liste`);
  const socket = dgram.createSocket('udp4');
  try {
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const reply = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(null), 1000);
        socket.on('message', (msg) => {
          const text = msg.toString('latin1');
          if (text.startsWith(`${cookie} `)) {
            clearTimeout(timer);
            resolve(text.slice(cookie.length + 1));
          }
        });
        socket.send(request, port, host);
      });
      socket.removeAllListeners('message');
      if (reply === null) continue;
      const decoded = bdecode(reply);
      if (decoded.result !== 'ok') throw new Error(`rtpengine list: ${reply}`);
      return Array.isArray(decoded.calls) ? decoded.calls : [];
    }
    throw new Error(`rtpengine at ${env.RTPENGINE_NG} did not answer the ng list command`);
  } finally {
    socket.close();
  }
}

function splitHostPort(text) {
  const at = text.lastIndexOf(':');
  return [text.slice(0, at), Number(text.slice(at + 1))];
}

/** Decodes one bencoded value (dictionaries, lists, integers, byte strings as latin1). */
function bdecode(text) {
  let at = 0;
  const value = () => {
    const c = text[at];
    if (c === 'd' || c === 'l') {
      at += 1;
      const out = c === 'd' ? {} : [];
      while (text[at] !== 'e') {
        if (at >= text.length) throw new Error('bencode: unterminated container');
        if (c === 'd') {
          const key = value();
          out[key] = value();
        } else {
          out.push(value());
        }
      }
      at += 1;
      return out;
    }
    if (c === 'i') {
      const end = text.indexOf('e', at);
      if (end < 0) throw new Error('bencode: unterminated integer');
      const n = Number(text.slice(at + 1, end));
      at = end + 1;
      return n;
    }
    const colon = text.indexOf(':', at);
    const len = Number(text.slice(at, colon));
    if (colon < 0 || !Number.isInteger(len)) throw new Error(`bencode: bad string at ${at}`);
    const s = text.slice(colon + 1, colon + 1 + len);
    at = colon + 1 + len;
    return s;
  };
  return value();
}
