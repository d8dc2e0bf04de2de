//! webtrunk: a SIP registrar and stateful proxy that lets browsers (JsSIP, SIP.js over
//! WebSocket, RFC 7118) make and take phone calls through SIP trunks.
//!
//! ```text
//! L7  app, config, main   composition, TOML config, CLI, signals
//! L6  driver, dns         async loop: inputs in, transmits out, one timer; RFC 3263
//!                         resolution of trunk hosts (NAPTR, SRV, A/AAAA) for the engine
//! L5  engine              the sans-IO whole: decides what to answer and where
//! L4  proxy               RFC 3261 §16: forking, response context, CANCEL, Record-Route
//! L3  registrar, auth,    RFC 3261 §10 bindings and the location store; digest auth;
//!     transaction         RFC 3261 §17 machines and timers
//! L2  transport           sockets: UDP, TCP, TLS, WS, WSS; framing; flows; limits
//! L1  message, clock      SIP wire format; the only reader of time and randomness
//! ```
//!
//! Arrows point down: a layer uses only the layers below it. Everything that decides is
//! synchronous and takes `now`; everything that waits lives in the driver and the
//! transport tasks.

pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dialog;
pub mod dns;
pub mod driver;
pub mod engine;
pub mod media;
pub mod message;
pub mod proxy;
pub mod registrar;
pub mod routing;
pub mod transaction;
pub mod transport;
