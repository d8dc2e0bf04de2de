// Shared by jssip_register.mjs and sipjs_register.mjs: argument parsing, a WebSocket
// class (the `ws` package) that records every SIP message on the wire, a small SIP
// response reader, and the single JSON result line.
//
// Steps (comma-separated, run in order):
//   register    a REGISTER answered 200 that lists our Contact (library reports registered)
//   refresh     another REGISTER while registered: a 200 with a higher CSeq listing our Contact
//   unregister  REGISTER with expires=0: a 200 that no longer lists our Contact
//   hold:N      keep the connection open N milliseconds
//   drop        close the WebSocket abruptly (TCP close, no close frame, no un-REGISTER)
//   wait        block until a line arrives on stdin (lets a test order two clients)
//
// After each step a line `progress {...step report...}` goes to stderr, so a test can
// tell when a client got somewhere. Nothing unregisters implicitly: at the end the
// WebSocket is closed with code 1000.

import WebSocket from 'ws';

const CLOSE_GRACE_MS = 1_000;

/// Clean close (code 1000) of every socket in `sockets`, waiting at most CLOSE_GRACE_MS
/// for the server's close before cutting the rest.
export function closeAll(sockets) {
  const open = [...sockets].filter((ws) => ws.readyState !== WebSocket.CLOSED);
  if (open.length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    let pending = open.length;
    const timer = setTimeout(() => {
      for (const ws of open) ws.terminate();
      resolve();
    }, CLOSE_GRACE_MS);
    for (const ws of open) {
      ws.once('close', () => {
        if (--pending === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
      if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      else ws.terminate();
    }
  });
}

export const HARD_TIMEOUT_MS = 15_000;

export function parseArgs(script) {
  const args = process.argv.slice(2);
  const usage = `usage: node ${script} <ws-or-wss-url> <user> <password> <steps>\n` +
    '  steps: comma list of register, refresh, unregister, hold:N (ms), drop, wait';
  if (args.length !== 4) return { error: usage };
  const [url, user, password, list] = args;
  const steps = [];
  for (const raw of list.split(',').map((s) => s.trim()).filter(Boolean)) {
    const hold = /^hold:(\d+)$/.exec(raw);
    if (hold) steps.push({ step: 'hold', ms: Number(hold[1]) });
    else if (['register', 'refresh', 'unregister', 'drop', 'wait'].includes(raw)) steps.push({ step: raw });
    else return { error: `unknown step "${raw}"\n${usage}` };
  }
  if (steps.length === 0) return { error: usage };
  const transport = (url.split(':')[0] || '').toLowerCase();
  return { url, user, password, steps, transport };
}

/// Splits a header value at top-level commas (not inside quotes or <...>).
export function splitList(value) {
  const out = [];
  let cur = '';
  let quoted = false;
  let angle = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (quoted && c === '\\') {
      cur += c + (value[++i] ?? '');
      continue;
    }
    if (c === '"') quoted = !quoted;
    else if (!quoted && c === '<') angle = true;
    else if (!quoted && c === '>') angle = false;
    if (c === ',' && !quoted && !angle) {
      if (cur.trim()) out.push(cur.trim());
      cur = '';
    } else {
      cur += c;
    }
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

const COMPACT = { m: 'contact', i: 'call-id', f: 'from', t: 'to', v: 'via', l: 'content-length', k: 'supported' };

/// Reads a SIP message as received; `null` when it is not one.
export function parseSip(text) {
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const lines = head.split('\r\n');
  const first = lines.shift() || '';
  const headers = [];
  for (const line of lines) {
    if (/^[ \t]/.test(line) && headers.length > 0) {
      headers[headers.length - 1].value += ` ${line.trim()}`;
    } else {
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      headers.push({ name: COMPACT[name] || name, value: line.slice(colon + 1).trim() });
    }
  }
  const all = (name) => headers.filter((h) => h.name === name).map((h) => h.value);
  const status = /^SIP\/2\.0 (\d{3}) ?(.*)$/.exec(first);
  const cseq = /^(\d+)\s+(\S+)/.exec(all('cseq')[0] || '');
  return {
    isResponse: Boolean(status),
    status: status ? Number(status[1]) : null,
    reason: status ? status[2] : null,
    method: cseq ? cseq[2].toUpperCase() : (first.split(' ')[0] || null),
    cseq: cseq ? Number(cseq[1]) : null,
    contacts: all('contact').flatMap(splitList),
    require: all('require').join(', ') || null,
    expires: all('expires')[0] ?? null,
    wwwAuthenticate: all('www-authenticate'),
    all,
  };
}

export function contactUri(contact) {
  const m = /<([^>]*)>/.exec(contact);
  return m ? m[1] : contact.split(';')[0].trim();
}

export function contactParam(contact, name) {
  // Parameters after the URI (outside <...>).
  const rest = contact.includes('>') ? contact.slice(contact.indexOf('>') + 1) : contact.slice(contact.indexOf(';'));
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`;\\s*${escaped}\\s*(?:=\\s*("(?:[^"\\\\]|\\\\.)*"|[^;,\\s]+))?`, 'i').exec(rest);
  if (!m) return undefined;
  return m[1] === undefined ? '' : m[1].replace(/^"|"$/g, '');
}

/// Installs a global WebSocket (what JsSIP and SIP.js construct) that accepts any
/// server certificate and reports every text message both ways to `tap`.
export function installWebSocket(tap) {
  const sockets = new Set();
  class NodeWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { rejectUnauthorized: false });
      sockets.add(this);
      // Registered before the library's own onmessage, so the tap sees a message
      // before the library acts on it.
      this.on('message', (data) => tap('in', data.toString()));
    }

    send(data, ...rest) {
      tap('out', typeof data === 'string' ? data : data.toString());
      return super.send(data, ...rest);
    }
  }
  globalThis.WebSocket = NodeWebSocket;
  return {
    sockets,
    /// Abrupt close: the TCP connection goes away without a WebSocket close frame.
    terminate() {
      let n = 0;
      for (const ws of sockets) {
        if (ws.readyState !== WebSocket.CLOSED) {
          ws.terminate();
          n++;
        }
      }
      return n;
    },
    /// Clean close (code 1000), waiting up to a second for the server's close.
    close() {
      return closeAll(sockets);
    },
  };
}

/// Records REGISTER requests we sent and responses we got; lets steps wait on them.
export class Wire {
  constructor() {
    this.sent = []; // parsed REGISTER requests, in order
    this.responses = []; // parsed responses to REGISTER, in order
    this.waiters = new Set();
  }

  tap = (direction, text) => {
    if (process.env.DEBUG_SIP === '1') process.stderr.write(`${direction === 'in' ? '<<<' : '>>>'} ${text}\n`);
    const msg = parseSip(text);
    if (msg.method !== 'REGISTER') return;
    if (direction === 'out' && !msg.isResponse) this.sent.push(msg);
    if (direction === 'in' && msg.isResponse) {
      this.responses.push(msg);
      this.notify('response', msg);
    }
  };

  /// The highest CSeq of a REGISTER sent so far (0 before any).
  lastSentCseq() {
    return this.sent.reduce((max, m) => Math.max(max, m.cseq || 0), 0);
  }

  /// The response to REGISTER with this CSeq, the last one if several.
  response(cseq) {
    return [...this.responses].reverse().find((r) => r.cseq === cseq) || null;
  }

  /// Our own Contact as sent in the latest REGISTER.
  ourContact() {
    const last = this.sent[this.sent.length - 1];
    return last ? last.contacts[0] || null : null;
  }

  /// Whether a Contact value of a 200 is one of ours (same URI, or same instance and reg-id).
  isOurs(contact) {
    const mine = this.sent.flatMap((m) => m.contacts).filter((c) => c !== '*');
    return mine.some((c) => {
      if (contactUri(c) === contactUri(contact)) return true;
      const instance = contactParam(c, '+sip.instance');
      return instance !== undefined && instance !== '' &&
        instance === contactParam(contact, '+sip.instance') &&
        contactParam(c, 'reg-id') === contactParam(contact, 'reg-id');
    });
  }

  notify(kind, data) {
    for (const waiter of [...this.waiters]) waiter(kind, data);
  }

  /// Resolves with the first non-undefined value `check(kind, data)` returns.
  waitFor(check) {
    return new Promise((resolve) => {
      const waiter = (kind, data) => {
        const result = check(kind, data);
        if (result !== undefined) {
          this.waiters.delete(waiter);
          resolve(result);
        }
      };
      this.waiters.add(waiter);
    });
  }

  /// The step report for a final response to REGISTER.
  describe(step, response, extra = {}) {
    const out = { step };
    if (response) {
      out.status = response.status;
      out.reason = response.reason;
      out.cseq = response.cseq;
      const sent = this.sent.find((m) => m.cseq === response.cseq);
      out.sent = sent ? sent.contacts : [];
      // Whether the REGISTER this answers carried credentials (a 401 without them means
      // the library did not answer the challenge at all).
      out.authorized = sent ? sent.all('authorization').length > 0 : null;
      out.contacts = response.contacts;
      const ours = response.contacts.find((c) => this.isOurs(c));
      if (ours !== undefined) {
        const expires = contactParam(ours, 'expires');
        out.expires = expires === undefined || expires === '' ? null : Number(expires);
      } else {
        out.expires = null;
      }
      out.require = response.require;
      if (response.status === 401 || response.status === 407) out.challenges = response.wwwAuthenticate;
      const retryAfter = response.all('retry-after')[0];
      if (retryAfter !== undefined) out.retryAfter = retryAfter;
    }
    return { ...out, ...extra };
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/// `hold:N`: N ms with the connection open; fails if it closes meanwhile (unless dropped).
export async function hold(wire, ms, dropped) {
  let closed = false;
  wire.waitFor((kind) => (kind === 'disconnected' ? true : undefined)).then(() => {
    closed = true;
  });
  await sleep(ms);
  if (closed && !dropped()) return { ok: false, cause: 'WebSocket closed during hold' };
  return { ok: true };
}

let stdinLines = null;
/// `wait`: the next line on stdin; fails if stdin ends first.
export function waitLine() {
  if (!stdinLines) {
    stdinLines = { buffered: 0, pending: [], ended: false, text: '' };
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => {
      stdinLines.text += chunk;
      let nl;
      while ((nl = stdinLines.text.indexOf('\n')) >= 0) {
        stdinLines.text = stdinLines.text.slice(nl + 1);
        const next = stdinLines.pending.shift();
        if (next) next(true);
        else stdinLines.buffered++;
      }
    });
    process.stdin.on('end', () => {
      stdinLines.ended = true;
      for (const next of stdinLines.pending.splice(0)) next(false);
    });
  }
  return new Promise((resolve) => {
    if (stdinLines.buffered > 0) {
      stdinLines.buffered--;
      resolve({ ok: true });
    } else if (stdinLines.ended) {
      resolve({ ok: false, cause: 'stdin closed before a line' });
    } else {
      stdinLines.pending.push((got) => resolve(got ? { ok: true } : { ok: false, cause: 'stdin closed before a line' }));
    }
  });
}

/// Runs the steps with `run(step)` (each resolves to { ok, ...report }), prints one
/// JSON line and exits: 0 all steps as expected, 1 a step failed, 2 hard timeout.
export async function runSteps({ args, library, wire, sockets, start, run }) {
  let done = false;
  const report = { ok: false, library, transport: args.transport, steps: [], error: null };
  const finish = async (code) => {
    if (done) return;
    done = true;
    clearTimeout(hardTimer);
    await sockets.close();
    process.stdout.write(`${JSON.stringify(report)}\n`, () => process.exit(code));
  };
  const hardTimer = setTimeout(() => {
    report.error = `timeout: no outcome within ${HARD_TIMEOUT_MS} ms`;
    process.stderr.write(`${library}: ${report.error}\n`);
    report.wire = wire.responses.map((r) => `${r.cseq} ${r.status} ${r.reason}`);
    finish(2);
  }, HARD_TIMEOUT_MS);

  try {
    await start();
    for (const step of args.steps) {
      const name = step.step === 'hold' ? `hold:${step.ms}` : step.step;
      const result = step.step === 'wait' ? await waitLine() : await run(step);
      if (done) return;
      const { ok, step: _ignored, ...rest } = result;
      const entry = { step: name, ok, ...rest };
      report.steps.push(entry);
      process.stderr.write(`progress ${JSON.stringify(entry)}\n`);
      if (!ok) {
        report.error = `step ${name} failed${rest.cause ? `: ${rest.cause}` : ''}`;
        await finish(1);
        return;
      }
    }
    report.ok = true;
    await finish(0);
  } catch (err) {
    report.error = String(err && err.message ? err.message : err);
    await finish(1);
  }
}
