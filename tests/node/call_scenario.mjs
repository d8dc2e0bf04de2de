// Calls between JsSIP and SIP.js user agents through a SIP-over-WebSocket proxy, all UAs
// in this one Node process (each on its own WebSocket), media replaced by plain-SDP
// stand-ins (call_common.mjs): what is tested is the signalling.
//
// Usage: node call_scenario.mjs <ws-or-wss-url> <scenario>
//   e.g. node call_scenario.mjs ws://127.0.0.1:8080 jssip-to-jssip
// Users are sip:alice@localhost and sip:bob@localhost (SIP_DOMAIN overrides the domain)
// with the passwords alice-secret and bob-secret. Every UA registers first.
// Scenarios (alice calls bob unless said otherwise):
//   jssip-to-jssip  JsSIP -> JsSIP: bob answers, both confirmed, alice hangs up, both ended
//   jssip-to-sipjs  JsSIP -> SIP.js: bob answers, both established, bob (SIP.js) hangs up
//   sipjs-to-jssip  SIP.js -> JsSIP: bob answers, both established, alice (SIP.js) hangs up
//   fork            bob registered twice (two JsSIP UAs, like two tabs): both ring, bob2
//                   answers, bob1 sees the call cancelled, alice confirmed, then hangs up
//   cancel          bob rings, alice cancels: bob sees the CANCEL, alice gets 487
//   busy            bob rejects with 486: alice fails with 486 (Busy)
//   hold            after confirmed alice holds (re-INVITE a=sendonly) and unholds
//                   (a=sendrecv): bob sees both, each re-INVITE is answered 200 and ACKed
//   message         alice sends a MESSAGE to bob: bob gets the body, alice a 200
//   takes-call      only alice registers (printing "registered" on stderr), answers the
//                   first call that comes from outside (a trunk), and the caller hangs up
//
// Prints exactly one line of JSON on stdout:
//   {"ok":true,"scenario":"...","elapsedMs":420,"error":null,"checks":[{"check":"...","ok":true,...}],
//    "events":[{"t":12,"ua":"alice","name":"confirmed",...}],"wire":["12 alice > INVITE ... (1 INVITE)"]}
// Exit codes: 0 = every expectation holds; 1 = one does not (see "checks"/"error") or bad
// arguments; 2 = an awaited event did not come within the hard timeout (15 s from start;
// "error" lists what was still awaited).
// DEBUG_SIP=1 prints the SIP messages to stderr, DEBUG_CALL=1 the events and checks,
// DEBUG_JSSIP=1 / DEBUG_SIPJS=1 the libraries' logs. wss:// accepts any certificate.

import { DOMAIN, Harness, messages, sdpDirection, startJssip, startSipjs, wire } from './call_common.mjs';

const SCENARIOS = ['jssip-to-jssip', 'jssip-to-sipjs', 'sipjs-to-jssip', 'fork', 'cancel', 'busy', 'hold', 'message', 'takes-call'];

const [url, scenario] = process.argv.slice(2);
const BOB = `sip:bob@${DOMAIN}`;

const account = (label, user) => ({ label, user, password: `${user}-secret`, url });

// ---------------------------------------------------------------- wire helpers

const isRequest = (method) => (m) => !m.isResponse && m.method === method;
const isResponse = (method, status) => (m) => m.isResponse && m.method === method && m.status === status;
const recordRoutes = (m) => m.all('record-route').flatMap((v) => v.split(',')).length;
const cseqNumber = (m) => m.cseq;

/// Waits until `ua` has sent ('out') or received ('in') a message matching `pred`.
function waitWire(h, what, ua, dir, pred) {
  const found = () => wire.find((w) => w.ua === ua && w.dir === dir && pred(w.msg));
  const hit = found();
  if (hit) return Promise.resolve(hit.msg);
  h.pending.add(what);
  return new Promise((resolve) => {
    const poll = setInterval(() => {
      const w = found();
      if (w) {
        clearInterval(poll);
        h.pending.delete(what);
        resolve(w.msg);
      }
    }, 10);
  });
}

/// Common checks on the initial INVITE as the callee got it.
function checkInviteAtCallee(h, callee) {
  const invites = messages(callee, 'in', isRequest('INVITE'));
  h.check(`${callee} got one INVITE`, invites.length === 1, invites.map((m) => m.firstLine));
  if (invites[0]) {
    h.check(`${callee}'s INVITE is record-routed`, recordRoutes(invites[0]) >= 1, invites[0].all('record-route'));
    h.check(`${callee}'s INVITE carries an SDP offer`, sdpDirection(invites[0].body) === 'sendrecv', invites[0].body);
  }
}

/// The caller's INVITE was challenged (407) and resent with credentials.
function checkCallerAuthenticated(h, caller) {
  const invites = messages(caller, 'out', isRequest('INVITE'));
  const challenged = messages(caller, 'in', isResponse('INVITE', 407));
  h.check(
    `${caller}'s INVITE answered 407, then sent with Proxy-Authorization`,
    challenged.length >= 1 && invites.some((m) => m.all('proxy-authorization').length > 0),
    invites.map((m) => `${m.firstLine} CSeq ${m.cseq} auth=${m.all('proxy-authorization').length > 0}`),
  );
}

function checkEnded(h, e, originator, detail) {
  h.check(`${e.ua} ended (${originator})`, e.originator === originator && e.cause === 'Terminated', detail ?? e);
}

// ---------------------------------------------------------------- scenarios

/// JsSIP alice calls JsSIP bob; bob answers; alice hangs up.
async function jssipToJssip(h) {
  const alice = await startJssip(h, account('alice', 'alice'));
  const bob = await startJssip(h, account('bob', 'bob'));
  const session = alice.call(BOB);
  const incoming = await h.wait('bob rings', 'bob', 'incoming');
  await h.wait('alice gets 180', 'alice', 'progress', { pred: (e) => e.status === 180, failOn: ['failed'] });
  bob.answer(incoming.session);
  await h.wait('alice confirmed', 'alice', 'confirmed', { failOn: ['failed', 'ended'] });
  await h.wait('bob confirmed (ACK arrived)', 'bob', 'confirmed', { failOn: ['failed', 'ended'] });
  session.terminate();
  const aliceEnded = await h.wait('alice ended', 'alice', 'ended', { failOn: ['failed'] });
  const bobEnded = await h.wait('bob ended', 'bob', 'ended', { failOn: ['failed'] });
  await waitWire(h, 'alice gets 200 to BYE', 'alice', 'in', isResponse('BYE', 200));

  checkCallerAuthenticated(h, 'alice');
  checkInviteAtCallee(h, 'bob');
  checkEnded(h, aliceEnded, 'local');
  checkEnded(h, bobEnded, 'remote');
  h.check('bob got the ACK', messages('bob', 'in', isRequest('ACK')).length === 1);
  h.check('bob got one BYE', messages('bob', 'in', isRequest('BYE')).length === 1);
}

/// JsSIP alice calls SIP.js bob; bob answers; bob hangs up.
async function jssipToSipjs(h) {
  const alice = await startJssip(h, account('alice', 'alice'));
  const bob = await startSipjs(h, account('bob', 'bob'));
  alice.call(BOB);
  const incoming = await h.wait('bob rings', 'bob', 'incoming');
  const invitation = incoming.session;
  await invitation.progress();
  await h.wait('alice gets 180', 'alice', 'progress', { pred: (e) => e.status === 180, failOn: ['failed'] });
  invitation.accept().catch((err) => h.record('bob', 'acceptError', { error: String(err) }));
  await h.wait('alice confirmed', 'alice', 'confirmed', { failOn: ['failed', 'ended'] });
  await h.wait('bob established', 'bob', 'established', { failOn: ['terminated'] });
  await h.wait('bob got the ACK', 'bob', 'ack', { failOn: ['terminated'] });
  bob.bye(invitation);
  const bobBye = await h.wait('bob gets 200 to BYE', 'bob', 'byeAccepted', { failOn: ['byeRejected', 'byeError'] });
  await h.wait('bob terminated', 'bob', 'terminated');
  const aliceEnded = await h.wait('alice ended', 'alice', 'ended', { failOn: ['failed'] });

  checkCallerAuthenticated(h, 'alice');
  checkInviteAtCallee(h, 'bob');
  checkEnded(h, aliceEnded, 'remote');
  h.check('bob BYE answered 200', bobBye.status === 200, bobBye);
  h.check('alice got one BYE', messages('alice', 'in', isRequest('BYE')).length === 1);
}

/// SIP.js alice calls JsSIP bob; bob answers; alice hangs up.
async function sipjsToJssip(h) {
  const alice = await startSipjs(h, account('alice', 'alice'));
  const bob = await startJssip(h, account('bob', 'bob'));
  const inviter = alice.call(BOB);
  const incoming = await h.wait('bob rings', 'bob', 'incoming');
  await h.wait('alice gets 180', 'alice', 'progress', { pred: (e) => e.status === 180, failOn: ['rejected', 'terminated'] });
  bob.answer(incoming.session);
  const accepted = await h.wait('alice gets 200', 'alice', 'accepted', { failOn: ['rejected', 'terminated'] });
  await h.wait('alice established', 'alice', 'established', { failOn: ['terminated'] });
  await h.wait('bob confirmed (ACK arrived)', 'bob', 'confirmed', { failOn: ['failed', 'ended'] });
  alice.bye(inviter);
  const aliceBye = await h.wait('alice gets 200 to BYE', 'alice', 'byeAccepted', { failOn: ['byeRejected', 'byeError'] });
  await h.wait('alice terminated', 'alice', 'terminated');
  const bobEnded = await h.wait('bob ended', 'bob', 'ended', { failOn: ['failed'] });

  checkCallerAuthenticated(h, 'alice');
  checkInviteAtCallee(h, 'bob');
  h.check('alice INVITE answered 200', accepted.status === 200, accepted);
  h.check('alice BYE answered 200', aliceBye.status === 200, aliceBye);
  checkEnded(h, bobEnded, 'remote');
  h.check('bob got the ACK', messages('bob', 'in', isRequest('ACK')).length === 1);
}

/// bob in two tabs: both ring, bob2 answers, bob1 is cancelled.
async function fork(h) {
  const alice = await startJssip(h, account('alice', 'alice'));
  const bob1 = await startJssip(h, account('bob1', 'bob'));
  const bob2 = await startJssip(h, account('bob2', 'bob'));
  const session = alice.call(BOB);
  await h.wait('bob1 rings', 'bob1', 'incoming');
  const ringing2 = await h.wait('bob2 rings', 'bob2', 'incoming');
  await h.wait('alice gets 180', 'alice', 'progress', { pred: (e) => e.status === 180, failOn: ['failed'] });
  bob2.answer(ringing2.session);
  await h.wait('alice confirmed', 'alice', 'confirmed', { failOn: ['failed', 'ended'] });
  await h.wait('bob2 confirmed (ACK arrived)', 'bob2', 'confirmed', { failOn: ['failed', 'ended'] });
  const cancelled = await h.wait('bob1 cancelled', 'bob1', 'failed', { failOn: ['confirmed', 'ended'] });
  session.terminate();
  const aliceEnded = await h.wait('alice ended', 'alice', 'ended', { failOn: ['failed'] });
  const bob2Ended = await h.wait('bob2 ended', 'bob2', 'ended', { failOn: ['failed'] });
  await waitWire(h, 'alice gets 200 to BYE', 'alice', 'in', isResponse('BYE', 200));
  // Let any stray message (a late 200 from bob1, a BYE to bob1) arrive before checking.
  await h.sleep(200);

  checkCallerAuthenticated(h, 'alice');
  checkInviteAtCallee(h, 'bob1');
  checkInviteAtCallee(h, 'bob2');
  h.check('bob1 failed: Canceled by remote', cancelled.originator === 'remote' && cancelled.cause === 'Canceled', cancelled);
  h.check('bob1 got a CANCEL', messages('bob1', 'in', isRequest('CANCEL')).length === 1);
  h.check('bob1 answered the INVITE 487', messages('bob1', 'out', isResponse('INVITE', 487)).length === 1);
  const oks = messages('alice', 'in', isResponse('INVITE', 200));
  h.check('alice got exactly one 200 to INVITE', oks.length === 1, oks.map((m) => m.all('to')[0]));
  h.check('bob1 got no BYE', messages('bob1', 'in', isRequest('BYE')).length === 0);
  h.check('bob2 got the ACK and the BYE',
    messages('bob2', 'in', isRequest('ACK')).length === 1 && messages('bob2', 'in', isRequest('BYE')).length === 1);
  checkEnded(h, aliceEnded, 'local');
  checkEnded(h, bob2Ended, 'remote');
}

/// bob rings, alice gives up before the answer.
async function cancel(h) {
  const alice = await startJssip(h, account('alice', 'alice'));
  await startJssip(h, account('bob', 'bob'));
  const session = alice.call(BOB);
  await h.wait('bob rings', 'bob', 'incoming');
  await h.wait('alice gets 180', 'alice', 'progress', { pred: (e) => e.status === 180, failOn: ['failed'] });
  session.terminate();
  const aliceFailed = await h.wait('alice failed', 'alice', 'failed', { failOn: ['confirmed'] });
  const bobFailed = await h.wait('bob sees the CANCEL', 'bob', 'failed', { failOn: ['confirmed'] });
  // The final response to the INVITE that went through (the one with credentials).
  const invite = messages('alice', 'out', isRequest('INVITE')).pop();
  const final = await waitWire(h, 'alice gets 487', 'alice', 'in',
    (m) => m.isResponse && m.method === 'INVITE' && m.cseq === invite.cseq && m.status >= 200);
  await waitWire(h, 'alice gets 200 to CANCEL', 'alice', 'in', isResponse('CANCEL', 200));

  h.check('alice failed: Canceled (local)', aliceFailed.originator === 'local' && aliceFailed.cause === 'Canceled', aliceFailed);
  h.check('alice INVITE answered 487', final.status === 487, final.firstLine);
  h.check('bob failed: Canceled by remote', bobFailed.originator === 'remote' && bobFailed.cause === 'Canceled', bobFailed);
  h.check('bob got a CANCEL', messages('bob', 'in', isRequest('CANCEL')).length === 1);
  h.check('alice got no 200 to INVITE', messages('alice', 'in', isResponse('INVITE', 200)).length === 0);
}

/// bob rejects with 486.
async function busy(h) {
  const alice = await startJssip(h, account('alice', 'alice'));
  await startJssip(h, account('bob', 'bob'));
  alice.call(BOB);
  const incoming = await h.wait('bob rings', 'bob', 'incoming');
  incoming.session.terminate({ status_code: 486 });
  const failed = await h.wait('alice failed', 'alice', 'failed', { failOn: ['confirmed'] });
  await waitWire(h, 'bob gets the ACK to 486', 'bob', 'in', isRequest('ACK'));

  h.check('alice failed: 486 Busy (remote)', failed.originator === 'remote' && failed.status === 486 && failed.cause === 'Busy', failed);
  const finals = messages('alice', 'in', (m) => m.isResponse && m.method === 'INVITE' && m.status >= 200 && m.status !== 407);
  h.check('alice got one final response, 486', finals.length === 1 && finals[0].status === 486, finals.map((m) => m.firstLine));
}

/// After confirmed: hold (a=sendonly) and unhold (a=sendrecv) by re-INVITE.
async function hold(h) {
  const alice = await startJssip(h, account('alice', 'alice'));
  const bob = await startJssip(h, account('bob', 'bob'));
  const session = alice.call(BOB);
  const incoming = await h.wait('bob rings', 'bob', 'incoming');
  bob.answer(incoming.session);
  await h.wait('alice confirmed', 'alice', 'confirmed', { failOn: ['failed', 'ended'] });
  await h.wait('bob confirmed (ACK arrived)', 'bob', 'confirmed', { failOn: ['failed', 'ended'] });

  const reinvite = async (action, event) => {
    const before = messages('bob', 'in', isRequest('INVITE')).length;
    const done = new Promise((resolve) => {
      const started = session[action]({}, () => resolve(true));
      h.check(`alice ${action}() started`, started === true);
      if (!started) resolve(false);
    });
    await h.wait(`bob sees ${event}`, 'bob', event, { pred: (e) => e.originator === 'remote', failOn: ['ended'] });
    h.pending.add(`alice ${action} succeeds`);
    await done;
    h.pending.delete(`alice ${action} succeeds`);
    const inv = await waitWire(h, `bob gets the ${action} re-INVITE`, 'bob', 'in',
      (m) => isRequest('INVITE')(m) && messages('bob', 'in', isRequest('INVITE')).indexOf(m) >= before);
    await waitWire(h, `bob gets the ACK to the ${action} re-INVITE`, 'bob', 'in',
      (m) => isRequest('ACK')(m) && cseqNumber(m) === cseqNumber(inv));
    const ok = messages('alice', 'in', (m) => isResponse('INVITE', 200)(m) && cseqNumber(m) === cseqNumber(inv));
    return { inv, ok: ok[0] };
  };

  const held = await reinvite('hold', 'hold');
  h.check('hold re-INVITE offers a=sendonly', sdpDirection(held.inv.body) === 'sendonly', held.inv.body);
  h.check('hold re-INVITE answered 200 with a=recvonly', held.ok && sdpDirection(held.ok.body) === 'recvonly', held.ok?.body);
  h.check('alice is on local hold', session.isOnHold().local === true);
  const resumed = await reinvite('unhold', 'unhold');
  h.check('unhold re-INVITE offers a=sendrecv', sdpDirection(resumed.inv.body) === 'sendrecv', resumed.inv.body);
  h.check('unhold re-INVITE answered 200 with a=sendrecv', resumed.ok && sdpDirection(resumed.ok.body) === 'sendrecv',
    resumed.ok?.body);
  h.check('re-INVITEs not challenged', messages('alice', 'in', (m) => m.isResponse && m.status === 407 && m.method === 'INVITE')
    .every((m) => m.cseq < held.inv.cseq));

  session.terminate();
  checkEnded(h, await h.wait('alice ended', 'alice', 'ended', { failOn: ['failed'] }), 'local');
  checkEnded(h, await h.wait('bob ended', 'bob', 'ended', { failOn: ['failed'] }), 'remote');
  await waitWire(h, 'alice gets 200 to BYE', 'alice', 'in', isResponse('BYE', 200));
}

/// A MESSAGE from alice to bob.
async function message(h) {
  const alice = await startJssip(h, account('alice', 'alice'));
  await startJssip(h, account('bob', 'bob'));
  const body = 'Hello bob, this is alice.';
  alice.message(BOB, body);
  const got = await h.wait('bob gets the MESSAGE', 'bob', 'message');
  const sent = await h.wait('alice gets success', 'alice', 'messageSucceeded', { failOn: ['messageFailed'] });

  h.check('bob got the body', got.body === body, got);
  h.check('bob sees alice as the sender', got.from === `sip:alice@${DOMAIN}`, got.from);
  h.check('alice got 200', sent.status === 200, sent);
  const challenged = messages('alice', 'in', isResponse('MESSAGE', 407)).length;
  h.check('alice answered the 407 challenge', challenged === 0 ||
    messages('alice', 'out', isRequest('MESSAGE')).some((m) => m.all('proxy-authorization').length > 0));
}

/// Alice answers a call from outside (a carrier calling a DID); the carrier hangs up.
async function takesCall(h) {
  const alice = await startJssip(h, account('alice', 'alice'));
  process.stderr.write('registered\n');
  const incoming = await h.wait('alice rings', 'alice', 'incoming');
  alice.answer(incoming.session);
  await h.wait('alice confirmed (ACK arrived)', 'alice', 'confirmed', { failOn: ['failed', 'ended'] });
  const ended = await h.wait('alice ended', 'alice', 'ended', { failOn: ['failed'] });
  checkEnded(h, ended, 'remote');
  const invites = messages('alice', 'in', isRequest('INVITE'));
  h.check('alice got one INVITE, record-routed', invites.length === 1 && recordRoutes(invites[0]) >= 1,
    invites.map((m) => m.firstLine));
}

const RUN = {
  'jssip-to-jssip': jssipToJssip,
  'jssip-to-sipjs': jssipToSipjs,
  'sipjs-to-jssip': sipjsToJssip,
  fork,
  cancel,
  busy,
  hold,
  message,
  'takes-call': takesCall,
};

if (!url || !RUN[scenario] || process.argv.length !== 4) {
  process.stderr.write(`usage: node call_scenario.mjs <ws-or-wss-url> <scenario>\n  scenarios: ${SCENARIOS.join(', ')}\n`);
  process.stdout.write(`${JSON.stringify({ ok: false, scenario: scenario ?? null, error: 'usage' })}\n`, () =>
    process.exit(1));
} else {
  new Harness(scenario).run(RUN[scenario]);
}
