// Register with SIP.js (0.21) in Node through a SIP-over-WebSocket registrar.
//
// Usage: node sipjs_register.mjs <ws-or-wss-url> <user> <password> <steps>
//   e.g. node sipjs_register.mjs ws://127.0.0.1:8080 alice alice-secret register,refresh,unregister
//   steps: register, refresh, unregister, hold:N (ms), drop, wait (see register_common.mjs).
//   The AOR is sip:<user>@localhost (SIP_DOMAIN overrides the domain). SIP.js is used
//   with its defaults: no reg-id/+sip.instance in the Contact.
//
// Prints exactly one line of JSON on stdout, the same shape as jssip_register.mjs:
//   {"ok":true,"library":"sipjs","transport":"ws","steps":[{"step":"register","ok":true,
//    "status":200,"reason":"OK","cseq":2,"contacts":[...],"expires":600,"require":null}, ...],
//    "error":null}
// Exit codes: 0 = every step got what it expects; 1 = a step failed or bad arguments;
// 2 = no outcome within the hard timeout (15 s).
// DEBUG_SIPJS=1 sends SIP.js's log to stderr, DEBUG_SIP=1 the SIP messages.
// wss:// accepts any server certificate (tests use self-signed ones).

import { hold, installWebSocket, parseArgs, runSteps, Wire } from './register_common.mjs';

const { UserAgent, Registerer, RegistererState } = await import('sip.js');

const args = parseArgs('sipjs_register.mjs');
if (args.error) {
  process.stderr.write(`${args.error}\n`);
  process.stdout.write(`${JSON.stringify({ ok: false, library: 'sipjs', steps: [], error: 'usage' })}\n`, () =>
    process.exit(1));
} else {
  const wire = new Wire();
  // SIP.js's web transport does `new WebSocket(server, "sip")` on the global.
  const sockets = installWebSocket(wire.tap);
  const domain = process.env.SIP_DOMAIN || 'localhost';
  const debug = process.env.DEBUG_SIPJS === '1';
  let ua;
  let registerer;
  let dropped = false;

  async function start() {
    const uri = UserAgent.makeURI(`sip:${args.user}@${domain}`);
    if (!uri) throw new Error(`bad AOR sip:${args.user}@${domain}`);
    ua = new UserAgent({
      uri,
      transportOptions: { server: args.url },
      authorizationUsername: args.user,
      authorizationPassword: args.password,
      // SIP.js logs with console.log (stdout) by default: keep stdout for the JSON line.
      logBuiltinEnabled: false,
      logLevel: debug ? 'debug' : 'error',
      logConnector: (level, category, label, content) => {
        if (debug || level === 'error') process.stderr.write(`sip.js ${level} ${category}: ${content}\n`);
      },
      // Only REGISTER here; a session description handler would be needed for calls.
      delegate: {
        onDisconnect: (error) => wire.notify('disconnected', error),
      },
    });
    await ua.start();
    registerer = new Registerer(ua);
    registerer.stateChange.addListener((state) => wire.notify('state', state));
  }

  // The parsed wire copy of the response SIP.js handed to a delegate.
  const wireResponse = (response) => (response ? wire.response(response.message.cseq) : null);

  function register(step) {
    if (dropped) return Promise.resolve({ ok: false, cause: 'WebSocket was dropped' });
    const before = wire.lastSentCseq();
    if (step === 'refresh' && registerer.state !== RegistererState.Registered) {
      return Promise.resolve({ ok: false, cause: 'not registered' });
    }
    const done = wire.waitFor((kind, data) => {
      if (kind === 'response' && data.cseq > before && data.status >= 200 && data.status < 300) {
        // SIP.js drops a 200 that does not list our Contact (no delegate call): report it.
        if (!data.contacts.some((c) => wire.isOurs(c))) {
          return { ok: false, ...wire.describe(step, data), cause: '200 without our Contact' };
        }
      }
      if (kind === 'accept') {
        const parsed = wireResponse(data);
        return { ok: registerer.state === RegistererState.Registered, ...wire.describe(step, parsed) };
      }
      if (kind === 'reject') {
        const m = data.message;
        return {
          ok: false,
          ...wire.describe(step, wireResponse(data)),
          status: m.statusCode,
          reason: m.reasonPhrase,
          cause: `rejected with ${m.statusCode}`,
        };
      }
      if (kind === 'disconnected') return { ok: false, cause: 'WebSocket closed' };
      return undefined;
    });
    registerer
      .register({
        requestDelegate: {
          onAccept: (response) => wire.notify('accept', response),
          onReject: (response) => wire.notify('reject', response),
        },
      })
      .catch((err) => wire.notify('disconnected', err));
    return done.then((result) => {
      if (result.ok && step === 'refresh' && !(result.cseq > before)) {
        return { ...result, ok: false, cause: `CSeq did not grow (${result.cseq} after ${before})` };
      }
      return result;
    });
  }

  function unregister() {
    if (dropped) return Promise.resolve({ ok: false, cause: 'WebSocket was dropped' });
    if (registerer.state !== RegistererState.Registered) return Promise.resolve({ ok: false, cause: 'not registered' });
    const done = wire.waitFor((kind, data) => {
      if (kind === 'accept') {
        const parsed = wireResponse(data);
        const report = wire.describe('unregister', parsed);
        const left = (parsed ? parsed.contacts : []).filter((c) => wire.isOurs(c));
        if (left.length > 0) return { ok: false, ...report, cause: 'our Contact is still listed' };
        return { ok: registerer.state === RegistererState.Unregistered, ...report };
      }
      if (kind === 'reject') {
        const m = data.message;
        return {
          ok: false,
          ...wire.describe('unregister', wireResponse(data)),
          status: m.statusCode,
          reason: m.reasonPhrase,
          cause: `rejected with ${m.statusCode}`,
        };
      }
      if (kind === 'disconnected') return { ok: false, cause: 'WebSocket closed' };
      return undefined;
    });
    registerer
      .unregister({
        requestDelegate: {
          onAccept: (response) => wire.notify('accept', response),
          onReject: (response) => wire.notify('reject', response),
        },
      })
      .catch((err) => wire.notify('disconnected', err));
    return done;
  }

  async function drop() {
    dropped = true;
    // SIP.js reconnects only when asked to (reconnectionAttempts defaults to 0).
    const gone = wire.waitFor((kind) => (kind === 'disconnected' ? true : undefined));
    const n = sockets.terminate();
    if (n === 0) return { ok: false, cause: 'no open WebSocket to drop' };
    await gone;
    return { ok: true };
  }

  runSteps({
    args,
    library: 'sipjs',
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
