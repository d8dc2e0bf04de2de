// Send one SIP OPTIONS through a SIP-over-WebSocket server with JsSIP in Node.
//
// Usage: node jssip_options.mjs <ws-or-wss-url> <target-uri>
//   e.g. node jssip_options.mjs ws://127.0.0.1:8080 sip:localhost
//
// Prints exactly one line of JSON on stdout:
//   {"ok":true,"status":200,"reason":"OK","allow":"...","transport":"ws"}
// Exit codes: 0 = final response 200; 1 = any other failure (non-200 final
// response, transport error, connection failure, bad arguments);
// 2 = no final response within the hard timeout (10 s).
// DEBUG_JSSIP=1 sends JsSIP's debug output to stderr.
// wss:// accepts any server certificate (tests use self-signed ones).

import WebSocket from 'ws';
import { closeAll } from './register_common.mjs';

const HARD_TIMEOUT_MS = 10_000;

// JsSIP's Logger binds console.info (stdout) as the sink of its debug output
// when each module loads. Keep stdout for the single JSON result line: route
// console.info to stderr *before* JsSIP is loaded (hence the dynamic import).
console.info = console.error.bind(console);
const { default: JsSIP } = await import('jssip');

if (process.env.DEBUG_JSSIP === '1') {
  JsSIP.debug.enable('JsSIP:*');
} else {
  JsSIP.debug.disable();
}

// JsSIP's WebSocketInterface calls `new WebSocket(url, 'sip')` on a global
// WebSocket. Use the `ws` package and keep track of every socket so the
// process can wait for a clean close before exiting. Certificate checks are
// off so wss:// works against a self-signed test certificate.
const sockets = new Set();
class NodeWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { rejectUnauthorized: false });
    sockets.add(this);
  }
}
globalThis.WebSocket = NodeWebSocket;

const [url, target] = process.argv.slice(2);
const transport = typeof url === 'string' ? (url.split(':')[0] || '').toLowerCase() : null;

let ua = null;
let finished = false;

function closeSockets() {
  return closeAll(sockets);
}

function finish(code, result) {
  if (finished) return;
  finished = true;
  clearTimeout(hardTimer);
  const line = `${JSON.stringify(result)}\n`;
  // Defer one tick so that the OPTIONS transaction's Timer K (0 ms over a
  // reliable transport) has fired: UA.stop() then disconnects at once
  // instead of waiting 2 s for pending transactions.
  setTimeout(async () => {
    if (ua) {
      try {
        ua.stop();
      } catch (err) {
        process.stderr.write(`ua.stop() failed: ${err}\n`);
      }
    }
    await closeSockets();
    process.stdout.write(line, () => process.exit(code));
  }, 0);
}

function fail(cause, extra = {}) {
  finish(1, { ok: false, cause, ...extra, transport });
}

const hardTimer = setTimeout(() => {
  process.stderr.write(
    `jssip_options: no final response within ${HARD_TIMEOUT_MS / 1000} s, giving up\n`,
  );
  finish(2, {
    ok: false,
    cause: 'timeout',
    message: `no final response within ${HARD_TIMEOUT_MS} ms`,
    transport,
  });
}, HARD_TIMEOUT_MS);

function describeResponse(response) {
  const allow = response.getHeaders('allow');
  const out = { status: response.status_code, reason: response.reason_phrase };
  if (allow.length > 0) out.allow = allow.join(', ');
  return out;
}

function main() {
  if (!url || !target || process.argv.length !== 4) {
    process.stderr.write('usage: node jssip_options.mjs <ws-or-wss-url> <target-uri>\n');
    fail('usage', { message: 'expected exactly two arguments: <ws-or-wss-url> <target-uri>' });
    return;
  }

  let socket;
  try {
    socket = new JsSIP.WebSocketInterface(url);
  } catch (err) {
    fail('bad url', { message: String(err && err.message ? err.message : err) });
    return;
  }

  ua = new JsSIP.UA({
    sockets: [socket],
    uri: 'sip:nodetest@localhost',
    register: false,
  });

  let connected = false;

  ua.on('connected', () => {
    if (connected || finished) return;
    connected = true;
    try {
      // A string without '@' would be taken by JsSIP as a user name at the
      // UA's own domain ("sip:localhost" -> "sip:localhost@localhost"): pass
      // a parsed URI so that the Request-URI is exactly the given target.
      const targetUri = JsSIP.URI.parse(target) || target;
      ua.sendOptions(targetUri, null, {
        eventHandlers: {
          succeeded: ({ response }) => {
            const res = describeResponse(response);
            if (response.status_code === 200) {
              finish(0, { ok: true, ...res, transport });
            } else {
              fail('non-200 success response', res);
            }
          },
          failed: ({ originator, response, cause }) => {
            const res = response ? describeResponse(response) : {};
            fail(cause, { originator, ...res });
          },
        },
      });
    } catch (err) {
      fail('sendOptions threw', { message: String(err && err.message ? err.message : err) });
    }
  });

  // Before a final response, losing (or never getting) the WebSocket is a
  // failure: do not sit through JsSIP's reconnect attempts until the timeout.
  ua.on('disconnected', ({ error, code, reason }) => {
    fail(connected ? 'WebSocket closed' : 'WebSocket connection failed', {
      wsError: Boolean(error),
      wsCode: code ?? null,
      wsReason: reason ? String(reason) : null,
    });
  });

  ua.start();
}

main();
