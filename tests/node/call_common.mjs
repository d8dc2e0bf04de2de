// Shared by call_scenario.mjs: several SIP user agents (JsSIP and SIP.js) in one Node
// process, each on its own WebSocket, with signalling-only media stand-ins:
//   - FakeRTCPeerConnection / FakeRTCSessionDescription for JsSIP (installed as globals,
//     with `window` = globalThis, since JsSIP checks `window.RTCPeerConnection`);
//   - fakeSdhFactory, a SessionDescriptionHandler factory for SIP.js.
// Both produce a minimal plain SDP (one PCMU audio line on 127.0.0.1) and accept any
// remote SDP. An answer mirrors the offer's direction (sendonly -> recvonly, ...), so a
// hold re-INVITE is answered the way a browser would answer it.
//
// Every SIP message on every WebSocket is recorded with the label of the UA that owns
// the socket (`wire`); every library event goes to `Harness.record`, and scenarios wait
// for events with `Harness.wait`. DEBUG_SIP=1 prints the SIP messages to stderr,
// DEBUG_CALL=1 the events, DEBUG_JSSIP=1 / DEBUG_SIPJS=1 the libraries' own logs.

import WebSocket from 'ws';
import { closeAll, parseSip } from './register_common.mjs';

// JsSIP's Logger binds console.info (stdout) when each module loads, and SIP.js logs
// with console.log by default: keep stdout for the JSON line (dynamic imports below run
// after this assignment).
console.info = console.error.bind(console);
const { default: JsSIP } = await import('jssip');
const { UserAgent, Registerer, Inviter, SessionState } = await import('sip.js');

if (process.env.DEBUG_JSSIP === '1') JsSIP.debug.enable('JsSIP:*');
else JsSIP.debug.disable();

export const DOMAIN = process.env.SIP_DOMAIN || 'localhost';

export const HARD_TIMEOUT_MS = 15_000;
const T0 = Date.now();
const elapsed = () => Date.now() - T0;

// ---------------------------------------------------------------- WebSocket + wire

/// Every SIP message both ways on every socket: { t, ua, dir: 'in'|'out', text, msg }.
export const wire = [];
const sockets = new Set();
let socketLabel = 'unlabelled';

/// The label the next WebSocket(s) will carry (set before starting a UA).
export function labelNextSockets(label) {
  socketLabel = label;
}

class LabelledWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { rejectUnauthorized: false });
    const label = socketLabel;
    sockets.add(this);
    // Registered before the library's own onmessage: the tap sees a message first.
    this.on('message', (data) => tap(label, 'in', data.toString()));
    this.sipLabel = label;
  }

  send(data, ...rest) {
    tap(this.sipLabel, 'out', typeof data === 'string' ? data : data.toString());
    return super.send(data, ...rest);
  }
}
globalThis.WebSocket = LabelledWebSocket;

function tap(ua, dir, text) {
  if (process.env.DEBUG_SIP === '1') process.stderr.write(`${ua} ${dir === 'in' ? '<<<' : '>>>'}\n${text}\n`);
  const msg = parseSip(text);
  const bodyAt = text.indexOf('\r\n\r\n');
  msg.body = bodyAt < 0 ? '' : text.slice(bodyAt + 4);
  msg.firstLine = text.slice(0, text.indexOf('\r\n'));
  wire.push({ t: elapsed(), ua, dir, text, msg });
}

/// One line per SIP message, e.g. "412 bob < INVITE sip:x@y.invalid;transport=ws SIP/2.0 (1 INVITE)".
export function wireSummary() {
  return wire.map(({ t, ua, dir, msg }) => {
    const cseq = msg.all('cseq')[0] || '?';
    const first = msg.isResponse ? `${msg.status} ${msg.reason}` : msg.firstLine.replace(/ SIP\/2\.0$/, '');
    return `${t} ${ua} ${dir === 'in' ? '<' : '>'} ${first} (${cseq})`;
  });
}

/// The messages a UA got or sent matching a filter.
export function messages(ua, dir, filter = () => true) {
  return wire.filter((w) => w.ua === ua && w.dir === dir && filter(w.msg)).map((w) => w.msg);
}

function closeSockets() {
  return closeAll(sockets);
}

// ---------------------------------------------------------------- SDP stand-ins

let sdpSession = 1000;
let mediaPort = 40000;

/// A minimal plain SDP: one PCMU audio stream on loopback.
export function plainSdp({ id, version, port, direction }) {
  return [
    'v=0',
    `o=- ${id} ${version} IN IP4 127.0.0.1`,
    's=-',
    'c=IN IP4 127.0.0.1',
    't=0 0',
    `m=audio ${port} RTP/AVP 0`,
    'a=rtpmap:0 PCMU/8000',
    `a=${direction}`,
    '',
  ].join('\r\n');
}

/// The direction of the (first) audio stream of an SDP, 'sendrecv' when none is given.
export function sdpDirection(sdp) {
  if (typeof sdp !== 'string') return null;
  let session = null;
  let media = null;
  let inAudio = false;
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) {
      if (inAudio) break;
      inAudio = line.startsWith('m=audio');
    }
    const d = /^a=(sendrecv|sendonly|recvonly|inactive)\s*$/.exec(line);
    if (d) {
      if (inAudio) media = d[1];
      else if (!line.startsWith('m=')) session = session ?? d[1];
    }
  }
  return media || session || 'sendrecv';
}

const ANSWER_DIRECTION = { sendonly: 'recvonly', recvonly: 'sendonly', inactive: 'inactive', sendrecv: 'sendrecv' };

/// Produces offers and answers in the plain SDP above, one per endpoint (stable o= id).
class SdpEndpoint {
  constructor() {
    this.id = ++sdpSession;
    this.version = 0;
    this.port = (mediaPort += 2);
    this.remote = null;
  }

  offer() {
    return plainSdp({ id: this.id, version: ++this.version, port: this.port, direction: 'sendrecv' });
  }

  answer() {
    const direction = ANSWER_DIRECTION[sdpDirection(this.remote)] || 'sendrecv';
    return plainSdp({ id: this.id, version: ++this.version, port: this.port, direction });
  }

  /// Accepts any remote SDP; only a missing one is refused.
  setRemote(sdp) {
    if (typeof sdp !== 'string' || sdp.length === 0) throw new Error('no remote SDP');
    this.remote = sdp;
  }
}

export class FakeRTCSessionDescription {
  constructor({ type, sdp } = {}) {
    this.type = type;
    this.sdp = sdp;
  }

  toJSON() {
    return { type: this.type, sdp: this.sdp };
  }
}

/// What JsSIP's RTCSession uses of an RTCPeerConnection, without any media: ICE
/// gathering is 'complete' at once, so JsSIP sends the SDP without waiting.
export class FakeRTCPeerConnection extends EventTarget {
  constructor(config, constraints) {
    super();
    this.config = config;
    this.constraints = constraints;
    this.sdp = new SdpEndpoint();
    this.signalingState = 'stable';
    this.iceGatheringState = 'complete';
    this.iceConnectionState = 'new';
    this.connectionState = 'new';
    this.localDescription = null;
    this.remoteDescription = null;
    this.senders = [];
  }

  async createOffer() {
    return new FakeRTCSessionDescription({ type: 'offer', sdp: this.sdp.offer() });
  }

  async createAnswer() {
    if (!this.remoteDescription) throw new Error('createAnswer without a remote offer');
    return new FakeRTCSessionDescription({ type: 'answer', sdp: this.sdp.answer() });
  }

  async setLocalDescription(desc) {
    if (this.signalingState === 'closed') throw new Error('closed');
    this.localDescription = new FakeRTCSessionDescription(desc);
    this.signalingState = desc.type === 'offer' ? 'have-local-offer' : 'stable';
  }

  async setRemoteDescription(desc) {
    if (this.signalingState === 'closed') throw new Error('closed');
    this.sdp.setRemote(desc.sdp);
    this.remoteDescription = new FakeRTCSessionDescription(desc);
    this.signalingState = desc.type === 'offer' ? 'have-remote-offer' : 'stable';
    if (desc.type === 'answer' || this.localDescription) this.connected();
  }

  connected() {
    if (this.iceConnectionState === 'connected') return;
    this.iceConnectionState = 'connected';
    this.connectionState = 'connected';
  }

  addTrack(track, ...streams) {
    const sender = { track, streams, dtmf: null, replaceTrack: async (t) => void (sender.track = t) };
    this.senders.push(sender);
    return sender;
  }

  getSenders() {
    return this.senders;
  }

  getReceivers() {
    return [];
  }

  getLocalStreams() {
    return [];
  }

  getRemoteStreams() {
    return [];
  }

  close() {
    this.signalingState = 'closed';
    this.iceConnectionState = 'closed';
    this.connectionState = 'closed';
  }
}

globalThis.window = globalThis;
globalThis.RTCPeerConnection = FakeRTCPeerConnection;
globalThis.RTCSessionDescription = FakeRTCSessionDescription;

/// A local "microphone" for JsSIP (given as mediaStream: no getUserMedia needed).
export function fakeAudioStream() {
  const track = { kind: 'audio', id: `audio-${++sdpSession}`, enabled: true, readyState: 'live', stop() {} };
  const tracks = [track];
  return {
    id: `stream-${sdpSession}`,
    getTracks: () => [...tracks],
    getAudioTracks: () => tracks.filter((t) => t.kind === 'audio'),
    getVideoTracks: () => [],
    removeTrack: (t) => {
      const i = tracks.indexOf(t);
      if (i >= 0) tracks.splice(i, 1);
    },
  };
}

/// A SessionDescriptionHandler factory for SIP.js 0.21 producing the same plain SDP.
export function fakeSdhFactory() {
  return () => {
    const endpoint = new SdpEndpoint();
    let awaitingAnswer = false; // our last description was an offer
    let remoteOffer = false; // the last remote description is an offer still to answer
    return {
      close() {},
      async getDescription() {
        if (remoteOffer) {
          remoteOffer = false;
          return { body: endpoint.answer(), contentType: 'application/sdp' };
        }
        awaitingAnswer = true;
        return { body: endpoint.offer(), contentType: 'application/sdp' };
      },
      hasDescription(contentType) {
        return contentType === 'application/sdp';
      },
      async setDescription(sdp) {
        endpoint.setRemote(sdp);
        if (awaitingAnswer) awaitingAnswer = false;
        else remoteOffer = true;
      },
      async rollbackDescription() {
        awaitingAnswer = false;
        remoteOffer = false;
      },
      sendDtmf() {
        return false;
      },
    };
  };
}

// ---------------------------------------------------------------- harness

/// Events from every UA, waits on them, expectations, and the single JSON result line.
export class Harness {
  constructor(scenario) {
    this.scenario = scenario;
    this.events = [];
    this.waiters = new Set();
    this.pending = new Set();
    this.checks = [];
    this.cleanups = [];
    this.finished = false;
    this.hardTimer = setTimeout(() => {
      this.finish(2, `timeout: no outcome within ${HARD_TIMEOUT_MS} ms; still waiting for: ${
        [...this.pending].join('; ') || 'nothing'}`);
    }, HARD_TIMEOUT_MS);
  }

  /// Records an event; `hidden` properties (sessions, ...) stay out of the JSON.
  record(ua, name, data = {}, hidden = {}) {
    const event = { t: elapsed(), ua, name, ...data };
    for (const [key, value] of Object.entries(hidden)) {
      Object.defineProperty(event, key, { value, enumerable: false });
    }
    this.events.push(event);
    if (process.env.DEBUG_CALL === '1') process.stderr.write(`event ${JSON.stringify(event)}\n`);
    for (const waiter of [...this.waiters]) waiter(event);
    return event;
  }

  /// The first event (past or future) of `ua` named `name` matching `pred`. Rejects when
  /// an event of `ua` named in `failOn` comes first (e.g. 'failed' while waiting for
  /// 'confirmed'). `what` describes the wait for the timeout report.
  wait(what, ua, name, { pred = () => true, failOn = [] } = {}) {
    const matches = (e) => e.ua === ua && e.name === name && pred(e);
    const fails = (e) => e.ua === ua && failOn.includes(e.name) && !matches(e);
    for (const e of this.events) {
      if (matches(e)) return Promise.resolve(e);
      if (fails(e)) return Promise.reject(new Error(`${what}: ${ua} got ${e.name} first ${JSON.stringify(e)}`));
    }
    this.pending.add(what);
    return new Promise((resolve, reject) => {
      const waiter = (e) => {
        if (matches(e)) {
          this.waiters.delete(waiter);
          this.pending.delete(what);
          resolve(e);
        } else if (fails(e)) {
          this.waiters.delete(waiter);
          this.pending.delete(what);
          reject(new Error(`${what}: ${ua} got ${e.name} first ${JSON.stringify(e)}`));
        }
      };
      this.waiters.add(waiter);
    });
  }

  /// An expectation; the run succeeds only when all hold.
  check(name, ok, detail) {
    const entry = { check: name, ok: Boolean(ok) };
    if (detail !== undefined) entry.detail = detail;
    this.checks.push(entry);
    if (process.env.DEBUG_CALL === '1') process.stderr.write(`check ${JSON.stringify(entry)}\n`);
    return Boolean(ok);
  }

  sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  /// Prints the JSON line and exits: 0 all checks hold, 1 some failed or an error, 2 timeout.
  async finish(code, error = null) {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.hardTimer);
    if (code === 0 && (this.checks.length === 0 || this.checks.some((c) => !c.ok))) {
      code = 1;
      error = error || `failed checks: ${this.checks.filter((c) => !c.ok).map((c) => c.check).join(', ') || 'none made'}`;
    }
    for (const cleanup of this.cleanups) {
      try {
        cleanup();
      } catch (err) {
        process.stderr.write(`cleanup: ${err}\n`);
      }
    }
    await closeSockets();
    const report = {
      ok: code === 0,
      scenario: this.scenario,
      elapsedMs: elapsed(),
      error,
      checks: this.checks,
      events: this.events,
      wire: wireSummary(),
    };
    if (code !== 0) process.stderr.write(`${this.scenario}: ${error}\n`);
    process.stdout.write(`${JSON.stringify(report)}\n`, () => process.exit(code));
  }

  /// Runs the scenario body; its own checks decide the outcome.
  async run(body) {
    try {
      await body(this);
      await this.finish(0);
    } catch (err) {
      await this.finish(1, String(err && err.stack && process.env.DEBUG_CALL === '1' ? err.stack : err?.message ?? err));
    }
  }
}

// ---------------------------------------------------------------- user agents

const describeUri = (uri) => (uri ? String(uri) : null);

/// Records every event of a JsSIP RTCSession under the UA's label.
function watchJssipSession(h, label, session) {
  const sid = session.direction === 'incoming' ? 'in' : 'out';
  session.on('progress', (e) =>
    h.record(label, 'progress', { sid, originator: e.originator, status: e.response?.status_code ?? null }));
  session.on('accepted', (e) =>
    h.record(label, 'accepted', { sid, originator: e.originator, status: e.response?.status_code ?? null }));
  session.on('confirmed', (e) => h.record(label, 'confirmed', { sid, originator: e.originator }));
  session.on('ended', (e) =>
    h.record(label, 'ended', { sid, originator: e.originator, cause: e.cause, method: e.message?.method ?? null }));
  session.on('failed', (e) =>
    h.record(label, 'failed', {
      sid,
      originator: e.originator,
      cause: e.cause,
      status: e.message?.status_code ?? null,
      method: e.message?.method ?? null,
    }));
  session.on('hold', (e) => h.record(label, 'hold', { sid, originator: e.originator }));
  session.on('unhold', (e) => h.record(label, 'unhold', { sid, originator: e.originator }));
  session.on('reinvite', (e) => h.record(label, 'reinvite', { sid, direction: sdpDirection(e.request.body) }));
  session.on('sdp', (e) => h.record(label, 'sdp', { sid, originator: e.originator, type: e.type, direction: sdpDirection(e.sdp) }));
}

/// A JsSIP UA connected and registered as `user`; `call`, `answer` and `message` helpers.
export async function startJssip(h, { label, user, password, url }) {
  labelNextSockets(label);
  const socket = new JsSIP.WebSocketInterface(url);
  const ua = new JsSIP.UA({
    sockets: [socket],
    uri: `sip:${user}@${DOMAIN}`,
    authorization_user: user,
    password,
    display_name: label,
    register: false,
    // No reconnection within a run.
    connection_recovery_min_interval: 600,
    connection_recovery_max_interval: 600,
  });
  ua.on('connected', () => h.record(label, 'connected'));
  ua.on('disconnected', (d) => h.record(label, 'disconnected', { code: d.code ?? null }));
  ua.on('registered', (d) => h.record(label, 'registered', { status: d.response.status_code }));
  ua.on('registrationFailed', (d) =>
    h.record(label, 'registrationFailed', { cause: d.cause, status: d.response?.status_code ?? null }));
  ua.on('newRTCSession', ({ originator, session, request }) => {
    watchJssipSession(h, label, session);
    if (originator === 'remote') {
      h.record(label, 'incoming', { from: describeUri(request.from.uri), callId: request.call_id }, { session });
    }
  });
  ua.on('newMessage', ({ originator, request }) => {
    if (originator !== 'remote') return;
    h.record(label, 'message', {
      from: describeUri(request.from.uri),
      contentType: request.getHeader('content-type') ?? null,
      body: request.body,
    });
  });
  h.cleanups.push(() => ua.removeAllListeners('disconnected'));
  ua.start();
  await h.wait(`${label} connected`, label, 'connected', { failOn: ['disconnected'] });
  ua.register();
  await h.wait(`${label} registered`, label, 'registered', { failOn: ['registrationFailed', 'disconnected'] });
  return {
    label,
    library: 'jssip',
    ua,
    /// Starts a call; its events are recorded with sid 'out'.
    call(target) {
      return ua.call(target, { mediaStream: fakeAudioStream(), pcConfig: { iceServers: [] } });
    },
    answer(session) {
      session.answer({ mediaStream: fakeAudioStream(), pcConfig: { iceServers: [] } });
    },
    /// Sends a MESSAGE; records 'messageSucceeded' / 'messageFailed' with the status.
    message(target, body) {
      ua.sendMessage(target, body, {
        contentType: 'text/plain',
        eventHandlers: {
          succeeded: (e) => h.record(label, 'messageSucceeded', { status: e.response?.status_code ?? null }),
          failed: (e) =>
            h.record(label, 'messageFailed', { cause: e.cause, status: e.response?.status_code ?? null }),
        },
      });
    },
  };
}

/// Records the state changes of a SIP.js session (lower-case state names) and its
/// in-dialog ACK / BYE.
function watchSipjsSession(h, label, session) {
  session.stateChange.addListener((state) => h.record(label, state.toLowerCase()));
  session.delegate = {
    onAck: () => h.record(label, 'ack'),
    onBye: (bye) => {
      h.record(label, 'bye');
      bye.accept();
    },
  };
}

/// A SIP.js UA connected and registered as `user`; `call` and `bye` helpers.
export async function startSipjs(h, { label, user, password, url }) {
  labelNextSockets(label);
  const debug = process.env.DEBUG_SIPJS === '1';
  const ua = new UserAgent({
    uri: UserAgent.makeURI(`sip:${user}@${DOMAIN}`),
    displayName: label,
    transportOptions: { server: url },
    authorizationUsername: user,
    authorizationPassword: password,
    sessionDescriptionHandlerFactory: fakeSdhFactory(),
    logBuiltinEnabled: false,
    logLevel: debug ? 'debug' : 'error',
    logConnector: (level, category, _label, content) => {
      if (debug || level === 'error') process.stderr.write(`${label} sip.js ${level} ${category}: ${content}\n`);
    },
    delegate: {
      onConnect: () => h.record(label, 'connected'),
      onDisconnect: (error) => h.record(label, 'disconnected', { error: error ? String(error) : null }),
      onInvite: (invitation) => {
        watchSipjsSession(h, label, invitation);
        h.record(
          label,
          'incoming',
          { from: describeUri(invitation.remoteIdentity.uri), callId: invitation.request.callId },
          { session: invitation },
        );
      },
      onMessage: (message) => {
        h.record(label, 'message', { body: message.request.body });
        message.accept();
      },
    },
  });
  await ua.start();
  const registerer = new Registerer(ua);
  registerer
    .register({
      requestDelegate: {
        onAccept: (r) => h.record(label, 'registered', { status: r.message.statusCode }),
        onReject: (r) => h.record(label, 'registrationFailed', { status: r.message.statusCode }),
      },
    })
    .catch((err) => h.record(label, 'registrationFailed', { error: String(err) }));
  await h.wait(`${label} registered`, label, 'registered', { failOn: ['registrationFailed', 'disconnected'] });
  return {
    label,
    library: 'sipjs',
    ua,
    /// Starts a call; records 'progress' / 'accepted' / 'rejected' with the status.
    call(target) {
      const inviter = new Inviter(ua, UserAgent.makeURI(target));
      watchSipjsSession(h, label, inviter);
      inviter
        .invite({
          requestDelegate: {
            onProgress: (r) => h.record(label, 'progress', { status: r.message.statusCode }),
            onAccept: (r) => h.record(label, 'accepted', { status: r.message.statusCode }),
            onReject: (r) => h.record(label, 'rejected', { status: r.message.statusCode }),
          },
        })
        .catch((err) => h.record(label, 'inviteError', { error: String(err) }));
      return inviter;
    },
    /// Ends an established session; records 'byeAccepted' / 'byeRejected'.
    bye(session) {
      return session
        .bye({
          requestDelegate: {
            onAccept: (r) => h.record(label, 'byeAccepted', { status: r.message.statusCode }),
            onReject: (r) => h.record(label, 'byeRejected', { status: r.message.statusCode }),
          },
        })
        .catch((err) => h.record(label, 'byeError', { error: String(err) }));
    },
    SessionState,
  };
}
