// Register with JsSIP in Node through a SIP-over-WebSocket registrar.
//
// Usage: node jssip_register.mjs <ws-or-wss-url> <user> <password> <steps>
//   e.g. node jssip_register.mjs ws://127.0.0.1:8080 alice alice-secret register,refresh,unregister
//   steps: register, refresh, unregister, hold:N (ms), drop, wait (see register_common.mjs).
//   The AOR is sip:<user>@localhost (SIP_DOMAIN overrides the domain).
//
// Prints exactly one line of JSON on stdout:
//   {"ok":true,"library":"jssip","transport":"ws","steps":[{"step":"register","ok":true,
//    "status":200,"reason":"OK","cseq":2,"contacts":["<sip:...>;...;expires=600"],
//    "expires":600,"require":"outbound"}, ...],"error":null}
// `contacts` are the Contact values of that final response exactly as received.
// Exit codes: 0 = every step got what it expects; 1 = a step failed (the failing step is
// the last one listed, e.g. status 401 for a wrong password) or bad arguments;
// 2 = no outcome within the hard timeout (15 s).
// DEBUG_JSSIP=1 sends JsSIP's debug output to stderr, DEBUG_SIP=1 the SIP messages.
// wss:// accepts any server certificate (tests use self-signed ones).

import { hold, installWebSocket, parseArgs, runSteps, Wire } from './register_common.mjs';

// JsSIP's Logger binds console.info (stdout) when each module loads: keep stdout for
// the JSON line by routing console.info to stderr before JsSIP is loaded.
console.info = console.error.bind(console);
const { default: JsSIP } = await import('jssip');

if (process.env.DEBUG_JSSIP === '1') JsSIP.debug.enable('JsSIP:*');
else JsSIP.debug.disable();

const args = parseArgs('jssip_register.mjs');
if (args.error) {
  process.stderr.write(`${args.error}\n`);
  process.stdout.write(`${JSON.stringify({ ok: false, library: 'jssip', steps: [], error: 'usage' })}\n`, () =>
    process.exit(1));
} else {
  const wire = new Wire();
  const sockets = installWebSocket(wire.tap);
  const domain = process.env.SIP_DOMAIN || 'localhost';
  let ua;
  let dropped = false;

  const start = () =>
    new Promise((resolve, reject) => {
      const socket = new JsSIP.WebSocketInterface(args.url);
      ua = new JsSIP.UA({
        sockets: [socket],
        uri: `sip:${args.user}@${domain}`,
        authorization_user: args.user,
        password: args.password,
        register: false,
        // No reconnection within a run: after `drop` the binding must stay gone.
        connection_recovery_min_interval: 600,
        connection_recovery_max_interval: 600,
      });
      let connected = false;
      ua.on('connected', () => {
        if (connected) return;
        connected = true;
        resolve();
      });
      ua.on('disconnected', (data) => {
        if (!connected) reject(new Error(`WebSocket connection failed (code ${data.code ?? 'none'})`));
        wire.notify('disconnected', data);
      });
      for (const event of ['registered', 'unregistered', 'registrationFailed']) {
        ua.on(event, (data) => wire.notify(event, data));
      }
      ua.start();
    });

  // The parsed wire copy of the response the library handed to an event.
  const wireResponse = (response) => (response ? wire.response(response.cseq) : null);

  function register(step) {
    if (dropped) return Promise.resolve({ ok: false, cause: 'WebSocket was dropped' });
    const before = wire.lastSentCseq();
    const wasRegistered = ua.isRegistered();
    if (step === 'refresh' && !wasRegistered) return Promise.resolve({ ok: false, cause: 'not registered' });
    const done = wire.waitFor((kind, data) => {
      if (kind === 'response' && data.cseq > before && data.status >= 200 && data.status < 300) {
        // JsSIP silently ignores a 200 that does not list our Contact: report it here.
        if (!data.contacts.some((c) => wire.isOurs(c))) {
          return { ok: false, ...wire.describe(step, data), cause: '200 without our Contact' };
        }
        // A refresh raises no event in JsSIP: the 200 itself is the answer.
        if (wasRegistered) return { ok: true, ...wire.describe(step, data) };
      }
      if (kind === 'registered') {
        return { ok: true, ...wire.describe(step, wireResponse(data.response)) };
      }
      if (kind === 'registrationFailed') {
        const r = data.response;
        return {
          ok: false,
          ...wire.describe(step, wireResponse(r)),
          ...(r && !wireResponse(r) ? { status: r.status_code, reason: r.reason_phrase } : {}),
          cause: data.cause,
        };
      }
      if (kind === 'disconnected') return { ok: false, cause: 'WebSocket closed' };
      return undefined;
    });
    ua.register();
    return done.then((result) => {
      if (result.ok && step === 'refresh' && !(result.cseq > before)) {
        return { ...result, ok: false, cause: `CSeq did not grow (${result.cseq} after ${before})` };
      }
      return result;
    });
  }

  function unregister() {
    if (dropped) return Promise.resolve({ ok: false, cause: 'WebSocket was dropped' });
    if (!ua.isRegistered()) return Promise.resolve({ ok: false, cause: 'not registered' });
    const done = wire.waitFor((kind, data) => {
      if (kind === 'unregistered') {
        const r = data.response;
        const parsed = wireResponse(r);
        if (!r) return { ok: false, cause: data.cause || 'no response' };
        const report = wire.describe('unregister', parsed);
        if (r.status_code < 200 || r.status_code >= 300) return { ok: false, ...report, cause: data.cause };
        const left = (parsed ? parsed.contacts : []).filter((c) => wire.isOurs(c));
        if (left.length > 0) return { ok: false, ...report, cause: 'our Contact is still listed' };
        return { ok: true, ...report };
      }
      if (kind === 'disconnected') return { ok: false, cause: 'WebSocket closed' };
      return undefined;
    });
    ua.unregister();
    return done;
  }

  async function drop() {
    dropped = true;
    const gone = wire.waitFor((kind) => (kind === 'disconnected' ? true : undefined));
    const n = sockets.terminate();
    if (n === 0) return { ok: false, cause: 'no open WebSocket to drop' };
    await gone;
    return { ok: true, registered: ua.isRegistered() };
  }

  runSteps({
    args,
    library: 'jssip',
    wire,
    sockets,
    start,
    run: (step) => {
      switch (step.step) {
        case 'register':
        case 'refresh':
          return register(step.step);
        case 'unregister':
          return unregister();
        case 'hold':
          return hold(wire, step.ms, () => dropped);
        case 'drop':
          return drop();
        default:
          return Promise.resolve({ ok: false, cause: `unknown step ${step.step}` });
      }
    },
  });
}
