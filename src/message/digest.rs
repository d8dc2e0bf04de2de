//! Digest header values (RFC 3261 §22.4 and §25.1, RFC 7616 §3.3–3.4, RFC 8760): the
//! credentials of Authorization / Proxy-Authorization and the challenge of
//! WWW-Authenticate / Proxy-Authenticate, read into owned, unquoted strings.
//!
//! Vocabulary only: nothing here hashes or verifies (that is `crate::auth`). Values are kept
//! exactly as sent, quotes and quoted-pair escapes removed, because the response is computed
//! over the text the client hashed and never over a re-printed form (rsip hashes a
//! re-serialised digest-uri and fails on `;transport=ws`).
//!
//! ```text
//! credentials     = ("Digest" LWS digest-response) / other-response
//! digest-response = dig-resp *(COMMA dig-resp)
//! challenge       = ("Digest" LWS digest-cln *(COMMA digest-cln)) / other-challenge
//! auth-param      = auth-param-name EQUAL ( token / quoted-string )
//! nc-value        = 8LHEX
//! ```
//!
//! Reading is lenient where clients differ and strict where a value is hashed: any parameter
//! may be a token or a quoted-string (RFC 7616 §3.4 lets a recipient accept either), names are
//! case-insensitive, empty list elements are skipped; a repeated parameter, an unterminated
//! quote or an `nc` that is not 8 hex digits is an error.

use std::borrow::Cow;

use super::grammar::{is_token_char, trim};

/// The Digest credentials of one Authorization or Proxy-Authorization value (RFC 3261
/// §22.4, RFC 7616 §3.4). Values are unquoted, with quoted-pair escapes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    /// `digest-uri` exactly as received (quotes removed only): the response hashes this text,
    /// and RFC 7616 §3.4.6 compares it with the Request-URI as received.
    pub uri: String,
    pub response: String,
    /// As sent (`MD5`, `SHA-256`, ...); absent means MD5.
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    /// `nc` read as the 8 hex digits it is (`0000000a` is 10).
    pub nc: Option<u32>,
    /// `nc` as sent: the response hashes this text, which may differ from a re-printed
    /// `{:08x}` in letter case.
    pub nc_raw: Option<String>,
    /// As sent (`auth`); present only together with `cnonce` and `nc`.
    pub qop: Option<String>,
    pub opaque: Option<String>,
}

/// One Digest challenge of a WWW-Authenticate or Proxy-Authenticate value (RFC 3261 §25.1
/// `challenge`, RFC 7616 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    /// As sent; absent means MD5.
    pub algorithm: Option<String>,
    /// The `qop-options` list (`"auth,auth-int"` gives two); empty when not offered.
    pub qop: Vec<String>,
    pub opaque: Option<String>,
    /// `stale=true`: the previous response was right but its nonce had expired (RFC 7616
    /// §3.3); retry with the new nonce without asking the user.
    pub stale: bool,
}

/// Why a Digest header value could not be read. Each variant names the rule it broke; the
/// text is the reason phrase of the 400 that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The scheme is not `Digest` (RFC 4475 §3.3.7 `regaut01`: `NoOneKnowsThisScheme`). A
    /// registrar answers this with a new challenge, not a 400.
    #[error("Unsupported Authorization Scheme")]
    Scheme,
    /// `auth-param-name` is not a token.
    #[error("Malformed Digest Parameter Name")]
    ParamName,
    /// `EQUAL ( token / quoted-string )` is missing, empty, or holds a control character.
    #[error("Malformed Digest Parameter Value")]
    ParamValue,
    /// A `quoted-string` without its closing `"`.
    #[error("Unterminated Quoted String in Digest")]
    UnterminatedQuote,
    /// Two parameters not separated by `COMMA`.
    #[error("Missing Comma Between Digest Parameters")]
    Separator,
    /// More parameters than [`MAX_PARAMS`].
    #[error("Too Many Digest Parameters")]
    TooManyParams,
    /// A parameter given twice (names compared case-insensitively).
    #[error("Duplicate Digest Parameter")]
    DuplicateParam,
    /// A value we keep as text is not UTF-8.
    #[error("Digest Parameter Not UTF-8")]
    NotUtf8,
    #[error("Digest Without username")]
    MissingUsername,
    #[error("Digest Without realm")]
    MissingRealm,
    #[error("Digest Without nonce")]
    MissingNonce,
    #[error("Digest Without uri")]
    MissingUri,
    #[error("Digest Without response")]
    MissingResponse,
    /// `qop` given without `cnonce` (RFC 7616 §3.4: cnonce MUST be sent with qop).
    #[error("Digest qop Without cnonce")]
    MissingCnonce,
    /// `qop` given without `nc` (RFC 7616 §3.4: nc MUST be sent with qop).
    #[error("Digest qop Without nc")]
    MissingNonceCount,
    /// `nc-value = 8LHEX` (either letter case accepted).
    #[error("Malformed Digest nc")]
    NonceCount,
    /// `stale = "stale" EQUAL ( "true" / "false" )`, case-insensitive (RFC 7616 §3.3).
    #[error("Malformed Digest stale")]
    Stale,
}

impl DigestError {
    /// The reason phrase for the 400 that answers a request carrying these credentials.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Scheme => "Unsupported Authorization Scheme",
            Self::ParamName => "Malformed Digest Parameter Name",
            Self::ParamValue => "Malformed Digest Parameter Value",
            Self::UnterminatedQuote => "Unterminated Quoted String in Digest",
            Self::Separator => "Missing Comma Between Digest Parameters",
            Self::TooManyParams => "Too Many Digest Parameters",
            Self::DuplicateParam => "Duplicate Digest Parameter",
            Self::NotUtf8 => "Digest Parameter Not UTF-8",
            Self::MissingUsername => "Digest Without username",
            Self::MissingRealm => "Digest Without realm",
            Self::MissingNonce => "Digest Without nonce",
            Self::MissingUri => "Digest Without uri",
            Self::MissingResponse => "Digest Without response",
            Self::MissingCnonce => "Digest qop Without cnonce",
            Self::MissingNonceCount => "Digest qop Without nc",
            Self::NonceCount => "Malformed Digest nc",
            Self::Stale => "Malformed Digest stale",
        }
    }
}

/// More parameters than any real client sends (JsSIP sends 9, RFC 7616 defines 12); the
/// bound keeps the duplicate check quadratic in a small number.
pub const MAX_PARAMS: usize = 32;

/// Reads the value of an Authorization or Proxy-Authorization header (`Digest k=v, k="v"`).
/// The scheme is case-insensitive; any other scheme is [`DigestError::Scheme`].
pub fn parse_credentials(value: &[u8]) -> Result<DigestCredentials, DigestError> {
    let params = digest_params(value)?;
    let mut username = None;
    let mut realm = None;
    let mut nonce = None;
    let mut uri = None;
    let mut response = None;
    let mut algorithm = None;
    let mut cnonce = None;
    let mut nc_raw = None;
    let mut qop = None;
    let mut opaque = None;
    for param in &params {
        let name = param.name;
        let slot = if name.eq_ignore_ascii_case(b"username") {
            &mut username
        } else if name.eq_ignore_ascii_case(b"realm") {
            &mut realm
        } else if name.eq_ignore_ascii_case(b"nonce") {
            &mut nonce
        } else if name.eq_ignore_ascii_case(b"uri") {
            &mut uri
        } else if name.eq_ignore_ascii_case(b"response") {
            &mut response
        } else if name.eq_ignore_ascii_case(b"algorithm") {
            &mut algorithm
        } else if name.eq_ignore_ascii_case(b"cnonce") {
            &mut cnonce
        } else if name.eq_ignore_ascii_case(b"nc") {
            &mut nc_raw
        } else if name.eq_ignore_ascii_case(b"qop") {
            &mut qop
        } else if name.eq_ignore_ascii_case(b"opaque") {
            &mut opaque
        } else {
            // auth-param: extensions (userhash, username*) are read past, not understood.
            continue;
        };
        *slot = Some(text(&param.value)?);
    }
    let nc = nc_raw.as_deref().map(nonce_count).transpose()?;
    if qop.is_some() {
        if cnonce.is_none() {
            return Err(DigestError::MissingCnonce);
        }
        if nc.is_none() {
            return Err(DigestError::MissingNonceCount);
        }
    }
    Ok(DigestCredentials {
        username: username.ok_or(DigestError::MissingUsername)?,
        realm: realm.ok_or(DigestError::MissingRealm)?,
        nonce: nonce.ok_or(DigestError::MissingNonce)?,
        uri: uri.ok_or(DigestError::MissingUri)?,
        response: response.ok_or(DigestError::MissingResponse)?,
        algorithm,
        cnonce,
        nc,
        nc_raw,
        qop,
        opaque,
    })
}

/// Reads the value of a WWW-Authenticate or Proxy-Authenticate header: one Digest
/// challenge (the UAC side, toward trunks).
pub fn parse_challenge(value: &[u8]) -> Result<DigestChallenge, DigestError> {
    let params = digest_params(value)?;
    let mut realm = None;
    let mut nonce = None;
    let mut algorithm = None;
    let mut qop = None;
    let mut opaque = None;
    let mut stale = None;
    for param in &params {
        let slot = match param.name.to_ascii_lowercase().as_slice() {
            b"realm" => &mut realm,
            b"nonce" => &mut nonce,
            b"algorithm" => &mut algorithm,
            b"qop" => &mut qop,
            b"opaque" => &mut opaque,
            b"stale" => &mut stale,
            // domain, charset, userhash and extensions.
            _ => continue,
        };
        *slot = Some(text(&param.value)?);
    }
    let stale = match stale.as_deref() {
        None => false,
        Some(s) if s.eq_ignore_ascii_case("true") => true,
        Some(s) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => return Err(DigestError::Stale),
    };
    let qop = qop
        .as_deref()
        .map(|list| list.split(',').map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(DigestChallenge {
        realm: realm.ok_or(DigestError::MissingRealm)?,
        nonce: nonce.ok_or(DigestError::MissingNonce)?,
        algorithm,
        qop,
        opaque,
        stale,
    })
}

/// One `auth-param`: the name as written and the value unquoted.
#[derive(Debug)]
struct AuthParam<'a> {
    name: &'a [u8],
    value: Cow<'a, [u8]>,
}

/// `"Digest" LWS auth-param *(COMMA auth-param)`: checks the scheme and splits the
/// parameters, refusing duplicates.
fn digest_params(value: &[u8]) -> Result<Vec<AuthParam<'_>>, DigestError> {
    let value = trim(value);
    let scheme_len = value.iter().position(|&c| !is_token_char(c)).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_len);
    if !scheme.eq_ignore_ascii_case(b"Digest") {
        return Err(DigestError::Scheme);
    }
    if rest.first().is_some_and(|c| !c.is_ascii_whitespace()) {
        // `Digest,` or `Digest"`: LWS must follow the scheme.
        return Err(DigestError::Separator);
    }
    // JsSIP sends 9 parameters, SIPp 8: one allocation for all of them.
    let mut params: Vec<AuthParam<'_>> = Vec::with_capacity(12);
    let mut rest = skip_separators(trim_lws(rest));
    while !rest.is_empty() {
        if params.len() == MAX_PARAMS {
            return Err(DigestError::TooManyParams);
        }
        let name_len = rest.iter().position(|&c| !is_token_char(c)).unwrap_or(rest.len());
        if name_len == 0 {
            return Err(DigestError::ParamName);
        }
        let (name, after) = rest.split_at(name_len);
        let after = trim_lws(after).strip_prefix(b"=").ok_or(DigestError::ParamValue)?;
        let after = trim_lws(after);
        let (value, after) = if after.first() == Some(&b'"') { quoted_string(after)? } else { bare_value(after)? };
        if value.iter().any(|&c| c.is_ascii_control() && c != b'\t') {
            return Err(DigestError::ParamValue);
        }
        if params.iter().any(|p| p.name.eq_ignore_ascii_case(name)) {
            return Err(DigestError::DuplicateParam);
        }
        params.push(AuthParam { name, value });
        rest = trim_lws(after);
        if rest.is_empty() {
            break;
        }
        rest = skip_separators(rest.strip_prefix(b",").ok_or(DigestError::Separator)?);
    }
    Ok(params)
}

/// `quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE`, starting at the opening
/// quote: the unescaped content and what follows the closing quote.
fn quoted_string(s: &[u8]) -> Result<(Cow<'_, [u8]>, &[u8]), DigestError> {
    let inner = s.get(1..).unwrap_or_default();
    let mut escaped: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < inner.len() {
        match inner[i] {
            b'"' => {
                let value = match escaped {
                    Some(v) => Cow::Owned(v),
                    None => Cow::Borrowed(&inner[..i]),
                };
                return Ok((value, &inner[i + 1..]));
            }
            b'\\' => {
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                let &next = inner.get(i + 1).ok_or(DigestError::UnterminatedQuote)?;
                escaped.get_or_insert_with(|| inner[..i].to_vec()).push(next);
                i += 2;
            }
            c => {
                if let Some(v) = escaped.as_mut() {
                    v.push(c);
                }
                i += 1;
            }
        }
    }
    Err(DigestError::UnterminatedQuote)
}

/// An unquoted value: a token, or what lenient clients send unquoted (`uri=sip:a@b`), up
/// to the next comma or whitespace.
fn bare_value(s: &[u8]) -> Result<(Cow<'_, [u8]>, &[u8]), DigestError> {
    let len = s.iter().position(|&c| !c.is_ascii_graphic() || c == b',' || c == b'"').unwrap_or(s.len());
    if len == 0 {
        return Err(DigestError::ParamValue);
    }
    Ok((Cow::Borrowed(&s[..len]), &s[len..]))
}

/// `nc-value = 8LHEX`: exactly eight hex digits.
fn nonce_count(raw: &str) -> Result<u32, DigestError> {
    if raw.len() != 8 || !raw.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(DigestError::NonceCount);
    }
    u32::from_str_radix(raw, 16).map_err(|_| DigestError::NonceCount)
}

fn text(value: &[u8]) -> Result<String, DigestError> {
    String::from_utf8(value.to_vec()).map_err(|_| DigestError::NotUtf8)
}

/// `LWS`: the value is unfolded already, so any whitespace.
fn trim_lws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(s.len());
    &s[start..]
}

/// Empty list elements (`a=1,,b=2`, a leading comma) are skipped, as RFC 7230 §7 asks of
/// list recipients.
fn skip_separators(mut s: &[u8]) -> &[u8] {
    s = trim_lws(s);
    while let Some(after) = s.strip_prefix(b",") {
        s = trim_lws(after);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What JsSIP 3.x sends in a REGISTER after a 401 (qop and nc unquoted).
    const JSSIP: &str = r#"Digest algorithm=MD5, username="alice", realm="example.com", nonce="5f2a9c0e1b7d4a6f", uri="sip:example.com;transport=ws", response="0123456789abcdef0123456789abcdef", qop=auth, cnonce="rbtf6v2bdm8u", nc=00000001"#;

    fn creds(s: &str) -> Result<DigestCredentials, DigestError> {
        parse_credentials(s.as_bytes())
    }

    fn minimal(extra: &str) -> String {
        format!(r#"Digest username="u", realm="r", nonce="n", uri="sip:h", response="00"{extra}"#)
    }

    #[test]
    fn jssip_credentials_parse_with_unquoted_qop_and_nc() {
        let c = creds(JSSIP).unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.realm, "example.com");
        assert_eq!(c.nonce, "5f2a9c0e1b7d4a6f");
        assert_eq!(c.uri, "sip:example.com;transport=ws");
        assert_eq!(c.response, "0123456789abcdef0123456789abcdef");
        assert_eq!(c.algorithm.as_deref(), Some("MD5"));
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.cnonce.as_deref(), Some("rbtf6v2bdm8u"));
        assert_eq!(c.nc, Some(1));
        assert_eq!(c.nc_raw.as_deref(), Some("00000001"));
        assert_eq!(c.opaque, None);
    }

    #[test]
    fn digest_uri_is_kept_exactly_as_received() {
        let c = creds(&minimal("").replace("sip:h", "sip:Alice@Example.COM;transport=ws;lr")).unwrap();
        assert_eq!(c.uri, "sip:Alice@Example.COM;transport=ws;lr");
    }

    #[test]
    fn nonce_count_is_eight_hex_digits() {
        let nc = |v: &str| creds(&minimal(&format!(r#", qop=auth, cnonce="c", nc={v}"#)));
        assert_eq!(nc("0000000a").unwrap().nc, Some(10));
        assert_eq!(nc("ffffffff").unwrap().nc, Some(u32::MAX));
        let upper = nc("0000001A").unwrap();
        assert_eq!((upper.nc, upper.nc_raw.as_deref()), (Some(26), Some("0000001A")));
        assert_eq!(nc("\"00000002\"").unwrap().nc, Some(2), "a quoted nc is accepted");
        for bad in ["1", "0000001", "000000001", "0000000g", "+0000001", "-0000001"] {
            assert_eq!(nc(bad), Err(DigestError::NonceCount), "{bad}");
        }
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert!(creds(&minimal("").replacen("Digest", "dIGEST", 1)).is_ok());
        assert!(creds(&minimal("").replacen("Digest ", "Digest\t  ", 1)).is_ok());
    }

    /// RFC 4475 §3.3.7 (regaut01).
    #[test]
    fn unknown_scheme_regaut01_is_a_scheme_error() {
        assert_eq!(creds("NoOneKnowsThisScheme opaque-data=here"), Err(DigestError::Scheme));
        assert_eq!(creds("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="), Err(DigestError::Scheme));
        assert_eq!(creds(""), Err(DigestError::Scheme));
        assert_eq!(creds("Digestusername=\"u\""), Err(DigestError::Scheme));
        assert_eq!(creds("Digest,username=\"u\""), Err(DigestError::Separator));
    }

    #[test]
    fn quoted_pairs_are_unescaped_and_commas_inside_quotes_do_not_split() {
        let c = creds(r#"Digest username="a\"b\\c, d", realm="x,y", nonce="n", uri="sip:h", response="00""#).unwrap();
        assert_eq!(c.username, r#"a"b\c, d"#);
        assert_eq!(c.realm, "x,y");
    }

    #[test]
    fn duplicate_parameters_are_rejected() {
        assert_eq!(creds(&minimal(r#", USERNAME="v""#)), Err(DigestError::DuplicateParam));
        assert_eq!(creds(&minimal(", x=1, X=2")), Err(DigestError::DuplicateParam));
    }

    #[test]
    fn missing_required_parameters_are_named() {
        let full = minimal("");
        for (name, err) in [
            ("username", DigestError::MissingUsername),
            ("realm", DigestError::MissingRealm),
            ("nonce", DigestError::MissingNonce),
            ("uri", DigestError::MissingUri),
            ("response", DigestError::MissingResponse),
        ] {
            let without = full.replacen(&format!("{name}="), "other-param=", 1);
            assert_eq!(creds(&without), Err(err), "{without}");
        }
        assert_eq!(creds(&minimal(", qop=auth, nc=00000001")), Err(DigestError::MissingCnonce));
        assert_eq!(creds(&minimal(r#", qop=auth, cnonce="c""#)), Err(DigestError::MissingNonceCount));
    }

    #[test]
    fn malformed_syntax_is_named() {
        assert_eq!(creds(r#"Digest username="u"#), Err(DigestError::UnterminatedQuote));
        assert_eq!(creds(r#"Digest username="u\"#), Err(DigestError::UnterminatedQuote));
        assert_eq!(creds(r#"Digest username "u""#), Err(DigestError::ParamValue));
        assert_eq!(creds(r#"Digest username=, realm="r""#), Err(DigestError::ParamValue));
        assert_eq!(creds(r#"Digest username="u" realm="r""#), Err(DigestError::Separator));
        assert_eq!(creds(r#"Digest ="u""#), Err(DigestError::ParamName));
        assert_eq!(creds("Digest username=\"a\u{1}b\""), Err(DigestError::ParamValue));
        assert_eq!(parse_credentials(b"Digest username=\"\xff\""), Err(DigestError::NotUtf8));
        let many: String = (0..=MAX_PARAMS).map(|i| format!("p{i}=1, ")).collect();
        assert_eq!(creds(&format!("Digest {many}")), Err(DigestError::TooManyParams));
    }

    #[test]
    fn empty_list_elements_and_unknown_parameters_are_read_past() {
        let c = creds(&minimal(r#",, userhash=false , ext="a,b",   "#).replacen("Digest ", "Digest , ", 1)).unwrap();
        assert_eq!(c.username, "u");
        assert!(creds(&minimal(r#", opaque="""#)).unwrap().opaque.is_some_and(|o| o.is_empty()));
    }

    #[test]
    fn www_authenticate_challenge_parses_with_qop_list_and_stale() {
        let c = parse_challenge(
            br#"Digest realm="atlanta.example.com", domain="sip:ss1.example.com", qop="auth,auth-int", nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=TRUE, algorithm=SHA-256"#,
        )
        .unwrap();
        assert_eq!(c.realm, "atlanta.example.com");
        assert_eq!(c.nonce, "f84f1cec41e6cbe5aea9c8e88d359");
        assert_eq!(c.qop, vec!["auth".to_owned(), "auth-int".to_owned()]);
        assert_eq!(c.opaque.as_deref(), Some(""));
        assert_eq!(c.algorithm.as_deref(), Some("SHA-256"));
        assert!(c.stale);
        let plain = parse_challenge(br#"digest realm="r", nonce="n""#).unwrap();
        assert!(!plain.stale && plain.qop.is_empty() && plain.algorithm.is_none());
    }

    #[test]
    fn challenge_stale_is_true_or_false_and_realm_nonce_are_required() {
        assert_eq!(parse_challenge(br#"Digest realm="r", nonce="n", stale=maybe"#), Err(DigestError::Stale));
        assert_eq!(parse_challenge(br#"Digest nonce="n""#), Err(DigestError::MissingRealm));
        assert_eq!(parse_challenge(br#"Digest realm="r""#), Err(DigestError::MissingNonce));
        assert_eq!(parse_challenge(b"Basic realm=\"r\""), Err(DigestError::Scheme));
    }

    #[test]
    fn reason_is_the_display_text() {
        for e in [DigestError::Scheme, DigestError::NonceCount, DigestError::MissingNonceCount, DigestError::Stale] {
            assert_eq!(e.to_string(), e.reason());
        }
    }

    /// Mutations of a real header and random bytes give a value or an error, never a panic.
    #[test]
    fn mutated_and_random_input_never_panics() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7616);
        for _ in 0..20_000 {
            let mut input = JSSIP.as_bytes().to_vec();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..input.len().max(1)).min(input.len());
                match rng.random_range(0..3) {
                    0 if at < input.len() => input[at] = rng.random(),
                    1 => input.insert(at, *b"\"\\,= \t\r\n\0".get(rng.random_range(0..9)).unwrap_or(&b'x')),
                    _ => input.truncate(at),
                }
            }
            let _ = parse_credentials(&input);
            let _ = parse_challenge(&input);
        }
    }
}
