//! The ng dictionary of each command, with the flags chosen from the two legs. The table
//! and the reasons are in the `media` module documentation; the names are rtpengine
//! 10.5's (`ng_control_protocol.md` of sipwise/rtpengine), each checked against the daemon.

use bytes::Bytes;

use super::bencode::Value;
use super::{CallKey, Command, Leg, MediaError};
use crate::message::sdp::{self, Trim};

/// Lines that only a WebRTC peer reads: msid (RFC 8830), ssrc and ssrc-group (RFC 5576),
/// extmap-allow-mixed (RFC 8285 §6, moot once `strip-extmap` removed the extmaps) and
/// rtcp-rsize (RFC 5506, reduced-size RTCP, an AVPF feature a trunk on RTP/AVP does not
/// expect). rtpengine 10.5 passes them through and has no flag to drop them, so they are
/// trimmed before the body goes to rtpengine on the way to a plain-RTP leg.
pub(super) const WEBRTC_ONLY_ATTRIBUTES: &[&str] =
    &["ssrc", "ssrc-group", "msid", "msid-semantic", "extmap-allow-mixed", "rtcp-rsize"];

/// RFC 4733 events ride along with any voice codec: DTMF must survive a codec list.
const ALWAYS_KEPT: &str = "telephone-event";

/// What an ng request carries besides the fixed keys.
#[derive(Debug, PartialEq, Eq)]
struct LegFlags {
    ice: &'static str,
    dtls: Option<&'static str>,
    transport_protocol: Option<&'static str>,
    rtcp_mux: &'static [&'static str],
    sdes: &'static [&'static str],
    flags: &'static [&'static str],
}

/// Flags for an offer or an answer whose rewritten body goes to a `to` leg.
fn leg_flags(offer: bool, to: Leg) -> LegFlags {
    match (offer, to) {
        (true, Leg::PlainRtp) => LegFlags {
            ice: "remove",
            dtls: Some("off"),
            transport_protocol: Some("RTP/AVP"),
            rtcp_mux: &["demux"],
            sdes: &["off"],
            flags: &["strip-extmap", "no-rtcp-attribute"],
        },
        (false, Leg::PlainRtp) => LegFlags {
            ice: "remove",
            dtls: Some("off"),
            transport_protocol: None,
            rtcp_mux: &[],
            sdes: &["off"],
            flags: &["strip-extmap", "no-rtcp-attribute"],
        },
        (true, Leg::Browser) => LegFlags {
            ice: "force",
            dtls: None,
            transport_protocol: Some("UDP/TLS/RTP/SAVPF"),
            rtcp_mux: &["require"],
            sdes: &["off"],
            flags: &["generate-mid"],
        },
        (false, Leg::Browser) => LegFlags {
            ice: "force",
            dtls: None,
            transport_protocol: Some("UDP/TLS/RTP/SAVPF"),
            rtcp_mux: &[],
            sdes: &["off"],
            flags: &[],
        },
    }
}

/// The body rtpengine should see: toward a plain-RTP leg, without the WebRTC-only lines
/// and (in an offer with a codec list) with media that has no allowed codec disabled.
pub(super) fn body_for_rtpengine(command: &Command) -> Result<Option<Bytes>, MediaError> {
    let (sdp, to, keep) = match command {
        Command::Offer { sdp, to, codecs, .. } => (sdp, *to, codecs.as_slice()),
        Command::Answer { sdp, to, .. } => (sdp, *to, &[][..]),
        Command::Delete | Command::Query => return Ok(None),
    };
    if to == Leg::Browser {
        sdp::inspect(sdp)?;
        return Ok(Some(sdp.clone()));
    }
    let trimmed = sdp::trim(sdp, &Trim { attributes: WEBRTC_ONLY_ATTRIBUTES, keep_media_with: keep })?;
    if trimmed.enabled_media == 0 && !keep.is_empty() {
        return Err(MediaError::NoAllowedCodec);
    }
    Ok(Some(trimmed.body))
}

/// The ng dictionary, bencoded, for `command` on `call`; `sdp` is the body from
/// [`body_for_rtpengine`].
pub(super) fn encode(call: &CallKey, command: &Command, sdp: Option<&[u8]>) -> Vec<u8> {
    let name = match command {
        Command::Offer { .. } => "offer",
        Command::Answer { .. } => "answer",
        Command::Delete => "delete",
        Command::Query => "query",
    };
    let mut dict: Vec<(&[u8], Value<'_>)> = vec![
        (b"command", Value::str(name)),
        (b"call-id", Value::str(&call.call_id)),
        (b"from-tag", Value::str(&call.from_tag)),
    ];
    if let Some(to_tag) = &call.to_tag {
        dict.push((b"to-tag", Value::str(to_tag)));
    }
    if let Some(sdp) = sdp {
        dict.push((b"sdp", Value::Bytes(sdp)));
    }
    let allowed: Vec<&str>;
    match command {
        Command::Offer { to, codecs, .. } | Command::Answer { to, codecs, .. } => {
            let offer = matches!(command, Command::Offer { .. });
            let f = leg_flags(offer, *to);
            dict.push((b"ICE", Value::str(f.ice)));
            if let Some(dtls) = f.dtls {
                dict.push((b"DTLS", Value::str(dtls)));
            }
            if let Some(protocol) = f.transport_protocol {
                dict.push((b"transport-protocol", Value::str(protocol)));
            }
            if !f.rtcp_mux.is_empty() {
                dict.push((b"rtcp-mux", Value::list_of_str(f.rtcp_mux)));
            }
            dict.push((b"SDES", Value::list_of_str(f.sdes)));
            if !f.flags.is_empty() {
                dict.push((b"flags", Value::list_of_str(f.flags)));
            }
            dict.push((b"replace", Value::list_of_str(&["origin", "session-connection"])));
            // rtpengine reads codec manipulations in offers only.
            if offer && !codecs.is_empty() {
                allowed = codecs.iter().map(String::as_str).chain(std::iter::once(ALWAYS_KEPT)).collect();
                dict.push((
                    b"codec",
                    Value::Dict(vec![
                        (b"strip", Value::list_of_str(&["all"])),
                        (b"except", Value::list_of_str(&allowed)),
                    ]),
                ));
            }
        }
        // The call is over: free its ports now rather than after the daemon's default
        // 30 s, which also makes a later `query` say the call is gone.
        Command::Delete => dict.push((b"delete-delay", Value::Int(0))),
        Command::Query => {}
    }
    let mut out = Vec::with_capacity(sdp.map_or(0, <[u8]>::len) + 256);
    Value::Dict(dict).encode(&mut out);
    out
}

/// The dictionary of a `ping`.
pub(super) fn encode_ping() -> Vec<u8> {
    let mut out = Vec::new();
    Value::Dict(vec![(b"command", Value::str("ping"))]).encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROMIUM_OFFER: &[u8] = include_bytes!("../../tests/fixtures/sdp/chromium_offer.sdp");

    fn call() -> CallKey {
        CallKey { call_id: "c1".into(), from_tag: "f1".into(), to_tag: None }
    }

    fn decoded(bytes: &[u8]) -> Value<'_> {
        Value::decode(bytes).unwrap()
    }

    fn strs<'a>(v: &Value<'a>) -> Vec<&'a str> {
        match v {
            Value::List(items) => items.iter().map(|i| std::str::from_utf8(i.as_bytes().unwrap()).unwrap()).collect(),
            _ => panic!("not a list: {v:?}"),
        }
    }

    #[test]
    fn offer_toward_a_trunk_removes_webrtc_and_filters_codecs() {
        let command = Command::Offer {
            sdp: Bytes::from_static(CHROMIUM_OFFER),
            from: Leg::Browser,
            to: Leg::PlainRtp,
            codecs: vec!["PCMU".into(), "PCMA".into()],
        };
        let body = body_for_rtpengine(&command).unwrap().unwrap();
        assert!(!body.windows(6).any(|w| w == b"a=ssrc" || w == b"a=msid"));
        let bytes = encode(&call(), &command, Some(&body));
        let v = decoded(&bytes);
        assert_eq!(v.get("command").unwrap().as_bytes(), Some(&b"offer"[..]));
        assert_eq!(v.get("ICE").unwrap().as_bytes(), Some(&b"remove"[..]));
        assert_eq!(v.get("DTLS").unwrap().as_bytes(), Some(&b"off"[..]));
        assert_eq!(v.get("transport-protocol").unwrap().as_bytes(), Some(&b"RTP/AVP"[..]));
        assert_eq!(strs(v.get("rtcp-mux").unwrap()), ["demux"]);
        assert_eq!(strs(v.get("flags").unwrap()), ["strip-extmap", "no-rtcp-attribute"]);
        let codec = v.get("codec").unwrap();
        assert_eq!(strs(codec.get("strip").unwrap()), ["all"]);
        assert_eq!(strs(codec.get("except").unwrap()), ["PCMU", "PCMA", "telephone-event"]);
        assert_eq!(v.get("to-tag"), None);
        assert_eq!(v.get("sdp").unwrap().as_bytes(), Some(&body[..]));
    }

    #[test]
    fn answer_toward_a_browser_never_asks_for_dtls_passive() {
        let command = Command::Answer {
            sdp: Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"),
            from: Leg::PlainRtp,
            to: Leg::Browser,
            codecs: vec!["PCMU".into()],
        };
        let body = body_for_rtpengine(&command).unwrap();
        let key = CallKey { to_tag: Some("t1".into()), ..call() };
        let bytes = encode(&key, &command, body.as_deref());
        let v = decoded(&bytes);
        assert_eq!(v.get("DTLS"), None);
        assert_eq!(v.get("ICE").unwrap().as_bytes(), Some(&b"force"[..]));
        assert_eq!(v.get("to-tag").unwrap().as_bytes(), Some(&b"t1"[..]));
        assert_eq!(v.get("codec"), None, "codec manipulation is for offers");
    }

    #[test]
    fn an_offer_with_no_allowed_codec_never_reaches_rtpengine() {
        let command = Command::Offer {
            sdp: Bytes::from_static(CHROMIUM_OFFER),
            from: Leg::Browser,
            to: Leg::PlainRtp,
            codecs: vec!["G729".into()],
        };
        assert_eq!(body_for_rtpengine(&command), Err(MediaError::NoAllowedCodec));
        let bad =
            Command::Offer { sdp: Bytes::from_static(b"hello"), from: Leg::Browser, to: Leg::Browser, codecs: vec![] };
        assert_eq!(body_for_rtpengine(&bad), Err(MediaError::Sdp(sdp::SdpError::NoVersion)));
    }

    #[test]
    fn delete_frees_the_ports_at_once() {
        let v_bytes = encode(&call(), &Command::Delete, None);
        let v = decoded(&v_bytes);
        assert_eq!(v.get("delete-delay"), Some(&Value::Int(0)));
        assert_eq!(v.get("sdp"), None);
        assert_eq!(encode_ping(), b"d7:command4:pinge");
    }
}
