//! SDP (RFC 8866, formerly RFC 4566) as far as a signalling proxy must read it: which
//! media a body offers, over which transport, with which codecs and direction, and whether
//! it comes from a WebRTC endpoint. The body is never re-printed: [`inspect`] only reads,
//! and [`trim`] copies the body line by line, byte for byte, leaving out whole lines.
//! Rewriting addresses, ports and crypto is rtpengine's job (see `media`).
//!
//! Lines may end in CRLF or a bare LF (RFC 8866 §5 asks for CRLF and tells parsers to
//! accept LF). Addresses in `o=` and `c=` are kept as text, so host names pass.

use bytes::Bytes;

/// More `m=` sections than this is not a call a proxy should carry.
pub const MAX_MEDIA: usize = 32;

/// What decisions need from an SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpSummary {
    /// Some `m=` section speaks DTLS-SRTP the WebRTC way (JSEP, RFC 8829): a
    /// `UDP/TLS/RTP/SAVP[F]` or `TCP/DTLS/RTP/SAVPF` profile, or an `RTP/SAVP[F]` profile
    /// together with `a=fingerprint` or `a=ice-ufrag`.
    pub webrtc: bool,
    pub media: Vec<MediaSummary>,
    /// The body length in bytes.
    pub len: usize,
    /// `a=ice-ufrag` of the first media section, else of the session (RFC 8839 §5.4).
    /// A new value in a re-offer is an ICE restart (RFC 8839).
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`, found the same way.
    pub ice_pwd: Option<String>,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSummary {
    /// The media type: "audio", "video", "image", "application", ...
    pub kind: String,
    /// 0 means the stream is rejected or disabled (RFC 3264 §5.1, §6).
    pub port: u16,
    /// The transport profile as written: "RTP/AVP", "UDP/TLS/RTP/SAVPF", ...
    pub protocol: String,
    /// Encoding names in `m=` format order, each once: the `a=rtpmap` name, else the
    /// static payload type's name from RFC 3551 §6, else the format as written.
    pub codecs: Vec<String>,
    pub direction: Direction,
    /// The `c=` address of the section, else of the session.
    pub connection: Option<String>,
}

/// Media direction attributes (RFC 3264 §5.1, RFC 8866 §6.7). A media-level attribute
/// overrides the session-level one, which defaults to `sendrecv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// Why a body is not SDP we can act on. Each variant names the rule it broke; the text is
/// short enough to be the reason phrase of the 488 that refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP Not UTF-8")]
    NotUtf8,
    /// RFC 8866 §5: the first line is `v=0`.
    #[error("SDP Must Start With v=0")]
    NoVersion,
    /// RFC 8866 §5.2: `o=` is mandatory.
    #[error("SDP Without o= Line")]
    NoOrigin,
    #[error("SDP Without Media")]
    NoMedia,
    #[error("Too Many SDP Media")]
    TooManyMedia,
    /// A line that is not `<type>=<value>` with a one-letter type (RFC 8866 §5).
    #[error("Malformed SDP Line")]
    BadLine { line: usize },
    /// RFC 8866 §5.14: `m=<media> <port>[/<number>] <proto> <fmt> ...`.
    #[error("Malformed SDP m= Line")]
    BadMediaLine { line: usize },
    /// RFC 8866 §5.7: `c=<nettype> <addrtype> <connection-address>`.
    #[error("Malformed SDP c= Line")]
    BadConnection { line: usize },
}

/// Reads `body` and says what it offers. Does not copy the body.
pub fn inspect(body: &[u8]) -> Result<SdpSummary, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut session = Section::default();
    let mut media: Vec<(MediaLine, Section)> = Vec::new();
    let mut seen_origin = false;

    let mut first = true;
    for (number, line) in lines(text) {
        if first {
            if line.trim_end() != "v=0" {
                return Err(SdpError::NoVersion);
            }
            first = false;
            continue;
        }
        let (kind, value) = split_line(line).ok_or(SdpError::BadLine { line: number })?;
        match kind {
            'o' => seen_origin = true,
            'm' => {
                if media.len() == MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                let m = MediaLine::parse(value).ok_or(SdpError::BadMediaLine { line: number })?;
                media.push((m, Section::default()));
            }
            _ => {}
        }
        let section = media.last_mut().map_or(&mut session, |(_, s)| s);
        match kind {
            'c' => {
                let address = connection_address(value).ok_or(SdpError::BadConnection { line: number })?;
                section.connection.get_or_insert_with(|| address.to_owned());
            }
            'a' => section.attribute(value),
            _ => {}
        }
    }
    if !seen_origin {
        return Err(if text.trim().is_empty() { SdpError::NoVersion } else { SdpError::NoOrigin });
    }
    if media.is_empty() {
        return Err(SdpError::NoMedia);
    }

    let webrtc = media.iter().any(|(m, s)| is_webrtc(&m.protocol, s.has_dtls_or_ice || session.has_dtls_or_ice));
    let ice_ufrag = media.first().and_then(|(_, s)| s.ice_ufrag.clone()).or_else(|| session.ice_ufrag.clone());
    let ice_pwd = media.first().and_then(|(_, s)| s.ice_pwd.clone()).or_else(|| session.ice_pwd.clone());
    let media = media
        .into_iter()
        .map(|(m, s)| MediaSummary {
            codecs: m.codecs(&s.rtpmap),
            kind: m.kind,
            port: m.port,
            protocol: m.protocol,
            direction: s.direction.or(session.direction).unwrap_or_default(),
            connection: s.connection.or_else(|| session.connection.clone()),
        })
        .collect();
    Ok(SdpSummary { webrtc, media, len: body.len(), ice_ufrag, ice_pwd })
}

/// What [`trim`] leaves out.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trim<'a> {
    /// Attribute names (`ssrc`, `msid`, ...) whose `a=` lines are dropped at every level.
    pub attributes: &'a [&'a str],
    /// When not empty: a media section none of whose codecs is in this list (compared
    /// case-insensitively, as media subtype names are: RFC 4855) is disabled the way
    /// RFC 3264 §8.2 removes a stream: its port becomes 0 and only its `m=`, `c=` and
    /// `a=mid` lines stay, so the answer still has one section per offered one
    /// (RFC 3264 §6) and BUNDLE tags still resolve.
    pub keep_media_with: &'a [String],
}

/// The result of [`trim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimmed {
    pub body: Bytes,
    /// Media sections that are still enabled (port not 0).
    pub enabled_media: usize,
}

/// Copies `body` without the lines `trim` names. Every kept line keeps its bytes and its
/// line ending, except the port of a disabled `m=` line. The body must pass [`inspect`].
pub fn trim(body: &[u8], trim: &Trim<'_>) -> Result<Trimmed, SdpError> {
    let summary = inspect(body)?;
    // inspect() accepted it, so it is UTF-8 and every line splits.
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let disabled: Vec<bool> = summary
        .media
        .iter()
        .map(|m| {
            !trim.keep_media_with.is_empty()
                && !m.codecs.iter().any(|c| trim.keep_media_with.iter().any(|k| k.eq_ignore_ascii_case(c)))
        })
        .collect();
    let enabled_media = summary.media.iter().zip(&disabled).filter(|(m, off)| !**off && m.port != 0).count();

    let mut out = Vec::with_capacity(body.len());
    let mut section: Option<usize> = None;
    for raw in raw_lines(text) {
        let line = raw.trim_end_matches(['\r', '\n']);
        let Some((kind, value)) = split_line(line) else {
            out.extend_from_slice(raw.as_bytes());
            continue;
        };
        if kind == 'm' {
            section = Some(section.map_or(0, |i| i + 1));
        }
        let off = section.is_some_and(|i| disabled.get(i).copied().unwrap_or(false));
        if off {
            match kind {
                'm' => {
                    out.extend_from_slice(disabled_media_line(value).as_bytes());
                    out.extend_from_slice(&raw.as_bytes()[line.len()..]);
                }
                'c' => out.extend_from_slice(raw.as_bytes()),
                'a' if attribute_name(value) == "mid" => out.extend_from_slice(raw.as_bytes()),
                _ => {}
            }
            continue;
        }
        if kind == 'a' && trim.attributes.contains(&attribute_name(value)) {
            continue;
        }
        out.extend_from_slice(raw.as_bytes());
    }
    Ok(Trimmed { body: Bytes::from(out), enabled_media })
}

/// Numbered lines (from 1) without their endings. Empty lines are skipped: the one after
/// the last CRLF is not a line, and a stray blank line is not worth refusing a call for.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i + 1, l))
}

/// Lines with their endings, for copying.
fn raw_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

fn split_line(line: &str) -> Option<(char, &str)> {
    let mut chars = line.chars();
    let kind = chars.next().filter(char::is_ascii_lowercase)?;
    let value = chars.as_str().strip_prefix('=')?;
    Some((kind, value))
}

/// `name` of `name:value` or of a flag attribute `name` (RFC 8866 §5.13).
fn attribute_name(value: &str) -> &str {
    value.split_once(':').map_or(value, |(name, _)| name).trim_end()
}

fn connection_address(value: &str) -> Option<&str> {
    let mut fields = value.split_ascii_whitespace();
    let (_net, _addr_type, address) = (fields.next()?, fields.next()?, fields.next()?);
    // A multicast TTL or count may follow after '/' (RFC 8866 §5.7); the host stays.
    address.split('/').next().filter(|a| !a.is_empty())
}

/// The `m=` line with port 0 (inspect() has checked it has media, port, proto and fmt).
fn disabled_media_line(value: &str) -> String {
    let mut fields = value.split_ascii_whitespace();
    let kind = fields.next().unwrap_or_default();
    let _port = fields.next();
    let rest: Vec<&str> = fields.collect();
    format!("m={kind} 0 {}", rest.join(" "))
}

fn is_webrtc(protocol: &str, has_dtls_or_ice: bool) -> bool {
    let p = protocol.to_ascii_uppercase();
    p.starts_with("UDP/TLS/RTP/SAVP")
        || p.starts_with("TCP/DTLS/RTP/SAVP")
        || (p.starts_with("RTP/SAVP") && has_dtls_or_ice)
}

struct MediaLine {
    kind: String,
    port: u16,
    protocol: String,
    formats: Vec<String>,
}

impl MediaLine {
    fn parse(value: &str) -> Option<Self> {
        let mut fields = value.split_ascii_whitespace();
        let kind = fields.next()?;
        let port = fields.next()?;
        let protocol = fields.next()?;
        let formats: Vec<String> = fields.map(str::to_owned).collect();
        if formats.is_empty() {
            return None;
        }
        // `<port>/<number of ports>` (RFC 8866 §5.14).
        let port = port.split('/').next()?.parse().ok()?;
        Some(Self { kind: kind.to_owned(), port, protocol: protocol.to_owned(), formats })
    }

    fn codecs(&self, rtpmap: &[(String, String)]) -> Vec<String> {
        let mut codecs: Vec<String> = Vec::with_capacity(self.formats.len());
        for format in &self.formats {
            let name = rtpmap
                .iter()
                .find(|(pt, _)| pt == format)
                .map(|(_, name)| name.as_str())
                .or_else(|| static_payload_name(format))
                .unwrap_or(format);
            if !codecs.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                codecs.push(name.to_owned());
            }
        }
        codecs
    }
}

/// RFC 3551 §6, Table 4: the static audio payload types still seen on trunks.
fn static_payload_name(format: &str) -> Option<&'static str> {
    Some(match format {
        "0" => "PCMU",
        "3" => "GSM",
        "4" => "G723",
        "8" => "PCMA",
        "9" => "G722",
        "13" => "CN",
        "18" => "G729",
        _ => return None,
    })
}

/// The attributes read at one level (session or one media section).
#[derive(Default)]
struct Section {
    connection: Option<String>,
    direction: Option<Direction>,
    /// (payload type, encoding name) from `a=rtpmap`.
    rtpmap: Vec<(String, String)>,
    ice_ufrag: Option<String>,
    ice_pwd: Option<String>,
    has_dtls_or_ice: bool,
}

impl Section {
    fn attribute(&mut self, value: &str) {
        let (name, rest) = value.split_once(':').unwrap_or((value, ""));
        match name.trim_end() {
            "sendrecv" => self.direction = Some(Direction::SendRecv),
            "sendonly" => self.direction = Some(Direction::SendOnly),
            "recvonly" => self.direction = Some(Direction::RecvOnly),
            "inactive" => self.direction = Some(Direction::Inactive),
            // a=rtpmap:<payload type> <encoding name>/<clock rate>[/<parameters>]
            "rtpmap" => {
                if let Some((pt, encoding)) = rest.split_once(' ')
                    && let Some(name) = encoding.trim().split('/').next().filter(|n| !n.is_empty())
                {
                    self.rtpmap.push((pt.trim().to_owned(), name.to_owned()));
                }
            }
            "ice-ufrag" => {
                self.has_dtls_or_ice = true;
                self.ice_ufrag.get_or_insert_with(|| rest.trim().to_owned());
            }
            "ice-pwd" => {
                self.ice_pwd.get_or_insert_with(|| rest.trim().to_owned());
            }
            "fingerprint" => self.has_dtls_or_ice = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROMIUM_OFFER: &[u8] = include_bytes!("../../tests/fixtures/sdp/chromium_offer.sdp");
    const CHROMIUM_ANSWER: &[u8] = include_bytes!("../../tests/fixtures/sdp/chromium_answer.sdp");
    const ASTERISK_ANSWER: &[u8] = include_bytes!("../../tests/fixtures/sdp/asterisk_answer.sdp");
    const SIPP_OFFER: &[u8] = include_bytes!("../../tests/fixtures/sdp/sipp_offer.sdp");

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn chromium_offer_is_webrtc_with_audio_and_video() {
        let s = inspect(CHROMIUM_OFFER).unwrap();
        assert!(s.webrtc);
        assert_eq!(s.len, CHROMIUM_OFFER.len());
        assert_eq!(s.ice_ufrag.as_deref(), Some("kX9c"));
        assert_eq!(s.ice_pwd.as_deref(), Some("Rz4WtV2yFqL8nJd0sPbM3hGc"));
        assert_eq!(s.media.len(), 2);
        let audio = &s.media[0];
        assert_eq!((audio.kind.as_str(), audio.port, audio.protocol.as_str()), ("audio", 50512, "UDP/TLS/RTP/SAVPF"));
        assert_eq!(audio.codecs, strings(&["opus", "red", "G722", "PCMU", "PCMA", "CN", "telephone-event"]));
        assert_eq!(audio.direction, Direction::SendRecv);
        assert_eq!(audio.connection.as_deref(), Some("127.0.0.1"));
        let video = &s.media[1];
        assert_eq!(video.kind, "video");
        assert_eq!(video.codecs, strings(&["VP8", "rtx", "VP9", "AV1", "H264", "red", "ulpfec"]));
    }

    #[test]
    fn plain_rtp_bodies_are_not_webrtc() {
        let s = inspect(ASTERISK_ANSWER).unwrap();
        assert!(!s.webrtc);
        assert_eq!(s.ice_ufrag, None);
        assert_eq!(s.media[0].protocol, "RTP/AVP");
        assert_eq!(s.media[0].codecs, strings(&["PCMU", "telephone-event"]));
        assert_eq!(s.media[0].connection.as_deref(), Some("127.0.0.1"), "session-level c= is inherited");
        assert_eq!(s.media[1].port, 0);

        let s = inspect(SIPP_OFFER).unwrap();
        assert!(!s.webrtc);
        assert_eq!(s.media[0].codecs, strings(&["PCMU", "PCMA", "telephone-event"]));

        assert!(inspect(CHROMIUM_ANSWER).unwrap().webrtc);
    }

    #[test]
    fn static_payload_types_are_named_without_rtpmap() {
        let body = b"v=0\r\no=- 1 1 IN IP4 pbx.example.com\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 18 9 8 0 101\r\n";
        let s = inspect(body).unwrap();
        assert_eq!(s.media[0].codecs, strings(&["G729", "G722", "PCMA", "PCMU", "101"]));
        assert_eq!(s.media[0].connection.as_deref(), Some("pbx.example.com"));
    }

    #[test]
    fn lf_only_bodies_read_like_crlf_ones() {
        let lf: Vec<u8> = SIPP_OFFER.iter().copied().filter(|&b| b != b'\r').collect();
        let (a, b) = (inspect(&lf).unwrap(), inspect(SIPP_OFFER).unwrap());
        assert_eq!(a.media, b.media);
        assert_eq!(a.len + 11, b.len, "one CR less per line");
    }

    #[test]
    fn session_direction_is_inherited_and_media_direction_overrides() {
        let body = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\na=sendonly\n\
                    m=audio 4000 RTP/AVP 0\nc=IN IP4 192.0.2.1\nm=audio 4002 RTP/AVP 8\na=inactive\n\
                    m=video 4004 RTP/AVP 96\na=recvonly\na=rtpmap:96 H264/90000\n";
        let s = inspect(body.as_bytes()).unwrap();
        let directions: Vec<_> = s.media.iter().map(|m| m.direction).collect();
        assert_eq!(directions, [Direction::SendOnly, Direction::Inactive, Direction::RecvOnly]);
        assert_eq!(s.media[1].connection, None);
        assert_eq!(s.media[2].codecs, strings(&["H264"]));
    }

    #[test]
    fn savp_needs_dtls_or_ice_to_count_as_webrtc() {
        let sdes = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n\
                     a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n";
        assert!(!inspect(sdes).unwrap().webrtc);
        let dtls =
            b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB\r\nm=audio 4000 RTP/SAVPF 0\r\n";
        assert!(inspect(dtls).unwrap().webrtc);
    }

    #[test]
    fn errors_name_the_rule_broken() {
        let cases: [(&[u8], SdpError); 9] = [
            (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=\xff\r\n", SdpError::NotUtf8),
            (b"", SdpError::NoVersion),
            (b"o=- 1 1 IN IP4 h\r\nv=0\r\n", SdpError::NoVersion),
            (b"v=1\r\no=- 1 1 IN IP4 h\r\n", SdpError::NoVersion),
            (b"v=0\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n", SdpError::NoOrigin),
            (b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n", SdpError::NoMedia),
            (b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 99999 RTP/AVP 0\r\n", SdpError::BadMediaLine { line: 3 }),
            (b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 4000 RTP/AVP\r\n", SdpError::BadMediaLine { line: 3 }),
            (b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\nm=audio 4000 RTP/AVP 0\r\n", SdpError::BadConnection { line: 3 }),
        ];
        for (body, expected) in cases {
            assert_eq!(inspect(body), Err(expected), "{:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(inspect(b"v=0\r\nno equals sign\r\n"), Err(SdpError::BadLine { line: 2 }));
        assert_eq!(SdpError::NoMedia.to_string(), "SDP Without Media");
        let mut many = String::from("v=0\r\no=- 1 1 IN IP4 h\r\n");
        for _ in 0..=MAX_MEDIA {
            many.push_str("m=audio 4000 RTP/AVP 0\r\n");
        }
        assert_eq!(inspect(many.as_bytes()), Err(SdpError::TooManyMedia));
    }

    #[test]
    fn trim_drops_named_attributes_and_keeps_every_other_byte() {
        let t = trim(
            CHROMIUM_OFFER,
            &Trim { attributes: &["ssrc", "ssrc-group", "msid", "msid-semantic"], ..Trim::default() },
        )
        .unwrap();
        let text = std::str::from_utf8(&t.body).unwrap();
        assert!(!text.contains("a=ssrc") && !text.contains("a=msid"));
        assert_eq!(t.enabled_media, 2);
        let original = std::str::from_utf8(CHROMIUM_OFFER).unwrap();
        let kept: String =
            original.split_inclusive("\r\n").filter(|l| !l.starts_with("a=ssrc") && !l.starts_with("a=msid")).collect();
        assert_eq!(text, kept);
    }

    #[test]
    fn trim_disables_media_without_an_allowed_codec() {
        let keep = strings(&["pcmu", "PCMA"]);
        let t = trim(CHROMIUM_OFFER, &Trim { attributes: &[], keep_media_with: &keep }).unwrap();
        assert_eq!(t.enabled_media, 1);
        let s = inspect(&t.body).unwrap();
        assert_eq!((s.media[1].kind.as_str(), s.media[1].port), ("video", 0));
        let text = std::str::from_utf8(&t.body).unwrap();
        let video = &text[text.find("m=video").unwrap()..];
        assert_eq!(
            video,
            "m=video 0 UDP/TLS/RTP/SAVPF 96 97 98 99 45 46 102 103 35 36 114 115 116\r\nc=IN IP4 127.0.0.1\r\na=mid:1\r\n"
        );
        assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"), "the audio section is untouched");

        let none = strings(&["G729"]);
        assert_eq!(trim(CHROMIUM_OFFER, &Trim { attributes: &[], keep_media_with: &none }).unwrap().enabled_media, 0);
    }

    #[test]
    fn trim_keeps_lf_line_endings() {
        let lf: Vec<u8> = CHROMIUM_OFFER.iter().copied().filter(|&b| b != b'\r').collect();
        let t = trim(&lf, &Trim { attributes: &["msid"], keep_media_with: &strings(&["opus"]) }).unwrap();
        assert!(!t.body.contains(&b'\r'));
        assert!(t.body.ends_with(b"a=mid:1\n"));
    }

    #[test]
    fn mutated_bodies_never_panic() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(8866);
        for round in 0..5_000 {
            let mut input = [CHROMIUM_OFFER, SIPP_OFFER, ASTERISK_ANSWER][round % 3].to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..input.len());
                match rng.random_range(0..3) {
                    0 => input[at] = *b"\r\n =:/ 0am".get(rng.random_range(0..10)).unwrap_or(&b'x'),
                    1 => input.truncate(at.max(1)),
                    _ => input.insert(at, rng.random()),
                }
            }
            let keep = strings(&["PCMU"]);
            let _ = inspect(&input);
            let _ = trim(&input, &Trim { attributes: &["ssrc"], keep_media_with: &keep });
        }
    }
}
