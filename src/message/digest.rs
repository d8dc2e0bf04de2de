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

use compact_str::CompactString;

use super::grammar::{is_token_char, trim};

/// The Digest credentials of one Authorization or Proxy-Authorization value (RFC 3261
/// §22.4, RFC 7616 §3.4). Values are unquoted, with quoted-pair escapes removed. They are
/// CompactStrings because all but the nonce and the response fit in one (24 bytes), each
/// sparing an allocation and its free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: CompactString,
    pub realm: CompactString,
    pub nonce: CompactString,
    /// `digest-uri` exactly as received (quotes removed only): the response hashes this text,
    /// and RFC 7616 §3.4.6 compares it with the Request-URI as received.
    pub uri: CompactString,
    pub response: CompactString,
    /// As sent (`MD5`, `SHA-256`, ...); absent means MD5.
    pub algorithm: Option<CompactString>,
    pub cnonce: Option<CompactString>,
    /// `nc` read as the 8 hex digits it is (`0000000a` is 10).
    pub nc: Option<u32>,
    /// `nc` as sent: the response hashes this text, which may differ from a re-printed
    /// `{:08x}` in letter case.
    pub nc_raw: Option<CompactString>,
    /// As sent (`auth`); present only together with `cnonce` and `nc`.
    pub qop: Option<CompactString>,
    pub opaque: Option<CompactString>,
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
/// bound keeps the duplicate check among unknown names quadratic in a small number.
pub const MAX_PARAMS: usize = 32;

/// Reads the value of an Authorization or Proxy-Authorization header (`Digest k=v, k="v"`).
/// The scheme is case-insensitive; any other scheme is [`DigestError::Scheme`].
pub fn parse_credentials(value: &[u8]) -> Result<DigestCredentials, DigestError> {
    // auth-param: extensions (userhash, username*) are read past, not understood.
    let params = Params::read(value)?;
    let text = |name| params.text::<CompactString>(name);
    let (username, realm, nonce, uri) =
        (text(Name::Username)?, text(Name::Realm)?, text(Name::Nonce)?, text(Name::Uri)?);
    let (response, algorithm, cnonce) = (text(Name::Response)?, text(Name::Algorithm)?, text(Name::Cnonce)?);
    let (nc_raw, qop, opaque) = (text(Name::Nc)?, text(Name::Qop)?, text(Name::Opaque)?);
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
    // domain, charset, userhash and extensions are read past.
    let params = Params::read(value)?;
    let text = |name| params.text::<String>(name);
    let (realm, nonce, algorithm) = (text(Name::Realm)?, text(Name::Nonce)?, text(Name::Algorithm)?);
    let (qop, opaque, stale) = (text(Name::Qop)?, text(Name::Opaque)?, text(Name::Stale)?);
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

/// The parameter names either reader keeps, each with a slot in [`Params`]: a repeat of
/// one is found by its slot being taken, not by comparing it with every earlier name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Username,
    Realm,
    Nonce,
    Uri,
    Response,
    Algorithm,
    Cnonce,
    Nc,
    Qop,
    Opaque,
    Stale,
}

impl Name {
    const COUNT: usize = Self::Stale as usize + 1;

    /// The known name `s` starts with, in any letter case (RFC 7616 §3.4), and its
    /// length; `None` if the token `s` starts with is any other (domain, userhash,
    /// extensions), or no token.
    fn at_start_of(s: &[u8]) -> Option<(Self, usize)> {
        // The first eight bytes as one word, compared at once rather than scanned for the
        // end of the token and then compared letter by letter. A name is followed by `=`
        // and a value, so eight bytes are almost always there.
        let mut head = [0; 8];
        match s.first_chunk::<8>() {
            Some(chunk) => head = *chunk,
            None => head[..s.len()].copy_from_slice(s),
        }
        // Bit 5 set in every byte: for the letters the known names are made of, that is the
        // lower-case letter, and no other token character becomes one.
        let folded = u64::from_le_bytes(head) | 0x2020_2020_2020_2020;
        let is = |name: &[u8]| {
            let (in_word, beyond) = name.split_at(name.len().min(8));
            folded & (u64::MAX >> (64 - 8 * in_word.len())) == word(in_word)
                && s.get(in_word.len()..name.len()).is_some_and(|rest| rest.eq_ignore_ascii_case(beyond))
        };
        // No known name starts another, so one candidate at most matches.
        let (name, len) = match folded as u8 {
            b'a' if is(b"algorithm") => (Self::Algorithm, 9),
            b'c' if is(b"cnonce") => (Self::Cnonce, 6),
            b'n' if is(b"nc") => (Self::Nc, 2),
            b'n' if is(b"nonce") => (Self::Nonce, 5),
            b'o' if is(b"opaque") => (Self::Opaque, 6),
            b'q' if is(b"qop") => (Self::Qop, 3),
            b'r' if is(b"realm") => (Self::Realm, 5),
            b'r' if is(b"response") => (Self::Response, 8),
            b's' if is(b"stale") => (Self::Stale, 5),
            b'u' if is(b"uri") => (Self::Uri, 3),
            b'u' if is(b"username") => (Self::Username, 8),
            _ => return None,
        };
        // `nonce` is not `noncex`.
        let token_ends = !s.get(len).is_some_and(|&c| is_token_char(c));
        token_ends.then_some((name, len))
    }
}

/// Up to eight bytes as the little-endian word [`Name::at_start_of`] compares.
const fn word(bytes: &[u8]) -> u64 {
    let mut word = 0;
    let mut i = bytes.len();
    while i > 0 {
        i -= 1;
        word = word << 8 | bytes[i] as u64;
    }
    word
}

/// Where a value lies in the input: between its quotes, or bare. Quoted-pairs are undone
/// only in the values a reader keeps, and only when there are any.
#[derive(Debug, Clone, Copy)]
struct Value {
    start: usize,
    end: usize,
    quoted_pairs: bool,
}

/// `"Digest" LWS auth-param *(COMMA auth-param)`, read: where the value of each known
/// parameter is.
#[derive(Debug)]
struct Params<'a> {
    input: &'a [u8],
    /// `input` when it is UTF-8, as it is from every client we know: a value cut from it at
    /// its ASCII delimiters is text without a check of its own.
    text: Option<&'a str>,
    values: [Option<Value>; Name::COUNT],
}

impl<'a> Params<'a> {
    /// Checks the syntax of the whole value, refusing a repeated parameter; whether the
    /// values kept are text is for [`Self::text`], so that a syntax error anywhere outranks
    /// a value that is not.
    fn read(input: &'a [u8]) -> Result<Self, DigestError> {
        let input = trim(input);
        let scheme_len = input.iter().position(|&c| !is_token_char(c)).unwrap_or(input.len());
        let (scheme, rest) = input.split_at(scheme_len);
        if !scheme.eq_ignore_ascii_case(b"Digest") {
            return Err(DigestError::Scheme);
        }
        if rest.first().is_some_and(|c| !c.is_ascii_whitespace()) {
            // `Digest,` or `Digest"`: LWS must follow the scheme.
            return Err(DigestError::Separator);
        }
        let mut values = [None; Name::COUNT];
        // Names other than the known ones; most values have none, and then this never
        // allocates.
        let mut others: Vec<&[u8]> = Vec::new();
        let mut count = 0;
        let mut rest = skip_separators(trim_lws(rest));
        while !rest.is_empty() {
            if count == MAX_PARAMS {
                return Err(DigestError::TooManyParams);
            }
            let (known, name_len) = match Name::at_start_of(rest) {
                Some((known, len)) => (Some(known), len),
                None => (None, rest.iter().position(|&c| !is_token_char(c)).unwrap_or(rest.len())),
            };
            if name_len == 0 {
                return Err(DigestError::ParamName);
            }
            let (name, after) = rest.split_at(name_len);
            let after = trim_lws(after).strip_prefix(b"=").ok_or(DigestError::ParamValue)?;
            let after = trim_lws(after);
            let start = input.len() - after.len();
            let (value, after) = match after {
                [b'"', inner @ ..] => {
                    let (len, quoted_pairs) = quoted_string(inner)?;
                    (Value { start: start + 1, end: start + 1 + len, quoted_pairs }, &inner[len + 1..])
                }
                bare => {
                    let len = bare_value(bare)?;
                    (Value { start, end: start + len, quoted_pairs: false }, &bare[len..])
                }
            };
            let repeated = match known {
                Some(known) => values[known as usize].replace(value).is_some(),
                None => {
                    let repeated = others.iter().any(|other| other.eq_ignore_ascii_case(name));
                    others.push(name);
                    repeated
                }
            };
            if repeated {
                return Err(DigestError::DuplicateParam);
            }
            count += 1;
            rest = match trim_lws(after) {
                [] => &[],
                [b',', after @ ..] => skip_separators(after),
                _ => return Err(DigestError::Separator),
            };
        }
        Ok(Self { input, text: std::str::from_utf8(input).ok(), values })
    }

    /// The value of `name`, unescaped, in the string type a reader keeps.
    fn text<T: From<&'a str> + From<String>>(&self, name: Name) -> Result<Option<T>, DigestError> {
        let Some(value) = self.values[name as usize] else { return Ok(None) };
        let raw = self.input.get(value.start..value.end).unwrap_or_default();
        if value.quoted_pairs {
            let mut unescaped = Vec::with_capacity(raw.len());
            let mut bytes = raw.iter();
            while let Some(&c) = bytes.next() {
                // quoted_string saw to it that every backslash has a byte after it.
                unescaped.push(if c == b'\\' { bytes.next().copied().unwrap_or(c) } else { c });
            }
            return String::from_utf8(unescaped).map(|text| Some(T::from(text))).map_err(|_| DigestError::NotUtf8);
        }
        let text = self.text.and_then(|text| text.get(value.start..value.end));
        match text.or_else(|| std::str::from_utf8(raw).ok()) {
            Some(text) => Ok(Some(T::from(text))),
            None => Err(DigestError::NotUtf8),
        }
    }
}

/// The rest of a `quoted-string` (`*(qdtext / quoted-pair ) DQUOTE`) after its opening
/// quote: the length of its content, and whether that holds quoted-pairs.
fn quoted_string(inner: &[u8]) -> Result<(usize, bool), DigestError> {
    let mut quoted_pairs = false;
    let mut control = false;
    let mut at = 0;
    loop {
        // Eight bytes at a time, then one at a time to what stopped that. A nonce is 32 to
        // 64 bytes and most values are shorter: too short for a memchr call to pay.
        let (words, _) = inner.get(at..).unwrap_or_default().as_chunks::<8>();
        at += 8 * words.iter().take_while(|&&word| !needs_look(u64::from_le_bytes(word))).count();
        while inner.get(at).is_some_and(|&c| PLAIN_QUOTED[usize::from(c)]) {
            at += 1;
        }
        match inner.get(at) {
            None => return Err(DigestError::UnterminatedQuote),
            // The check waits for the closing quote: an unterminated string is that first.
            Some(b'"') if control => return Err(DigestError::ParamValue),
            Some(b'"') => return Ok((at, quoted_pairs)),
            // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F): the escaped byte may be a quote.
            Some(b'\\') => {
                let &escaped = inner.get(at + 1).ok_or(DigestError::UnterminatedQuote)?;
                control |= is_control(escaped);
                quoted_pairs = true;
                at += 2;
            }
            Some(_) => {
                control = true;
                at += 1;
            }
        }
    }
}

/// Whether any of the eight bytes of `word` might not be [`PLAIN_QUOTED`]: a quote, a
/// backslash, DEL, or a byte below SP (HTAB among them, a false alarm the byte loop
/// settles). Bytes from 0x80 up are plain.
const fn needs_look(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    /// The high bit of a byte of `x` below `n` (at most 0x80), for the lowest such byte at
    /// least: it borrows nothing from the bytes under it, so its subtraction wraps and sets
    /// the bit, which `!x` keeps since the byte is below 0x80. Where no byte is below `n`
    /// nothing wraps, and a high bit the subtraction sets is one that `!x` clears.
    const fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * n as u64) & !x & HIGH_BITS
    }
    const fn equal(x: u64, c: u8) -> u64 {
        below(x ^ (ONES * c as u64), 1)
    }
    // `|`, not `||`: four masks cost less than three branches.
    below(word, b' ') | equal(word, b'"') | equal(word, b'\\') | equal(word, 0x7f) != 0
}

/// A control character, which no value may hold (HTAB aside), escaped or not.
const fn is_control(c: u8) -> bool {
    c.is_ascii_control() && c != b'\t'
}

/// What a quoted-string holds that needs no second look: anything but the closing quote,
/// a backslash, or a control character.
static PLAIN_QUOTED: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b != b'"' && b != b'\\' && !is_control(b);
        c += 1;
    }
    table
};

/// An unquoted value: a token, or what lenient clients send unquoted (`uri=sip:a@b`), up
/// to the next comma or whitespace. Its length.
fn bare_value(s: &[u8]) -> Result<usize, DigestError> {
    let len = s.iter().position(|&c| !c.is_ascii_graphic() || c == b',' || c == b'"').unwrap_or(s.len());
    if len == 0 {
        return Err(DigestError::ParamValue);
    }
    Ok(len)
}

/// `nc-value = 8LHEX`: exactly eight hex digits.
fn nonce_count(raw: &str) -> Result<u32, DigestError> {
    if raw.len() != 8 {
        return Err(DigestError::NonceCount);
    }
    // from_str_radix reads a leading `+` as a sign, and refuses anything else but digits.
    if raw.starts_with('+') {
        return Err(DigestError::NonceCount);
    }
    u32::from_str_radix(raw, 16).map_err(|_| DigestError::NonceCount)
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

    /// The known names are matched a word at a time, not by a scan and a comparison.
    #[test]
    fn known_names_match_in_any_letter_case_and_only_as_whole_tokens() {
        let c = creds(
            r#"Digest USERNAME="u", Realm="r", nONCE="n", URI="sip:h", RESPONSE="00", ALGORITHm=MD5, CNonce="c", NC=00000001, QoP=auth, OPAQUE="o""#,
        )
        .unwrap();
        assert_eq!((c.username.as_str(), c.realm.as_str(), c.nonce.as_str(), c.uri.as_str()), ("u", "r", "n", "sip:h"));
        assert_eq!((c.response.as_str(), c.algorithm.as_deref(), c.cnonce.as_deref()), ("00", Some("MD5"), Some("c")));
        assert_eq!((c.nc, c.qop.as_deref(), c.opaque.as_deref()), (Some(1), Some("auth"), Some("o")));
        let longer = creds(&minimal(r#", nonces="x", usernamex=1, nc2=3, algorithmic=4, realm-2=5, URIs=6"#)).unwrap();
        assert_eq!((longer.nonce.as_str(), longer.username.as_str(), longer.nc), ("n", "u", None));
        assert_eq!((longer.algorithm, longer.realm.as_str(), longer.uri.as_str()), (None, "r", "sip:h"));
        for name in
            ["username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "nc", "qop", "opaque", "stale"]
        {
            let twice = format!(r#"Digest {name}=a, realm="r", nonce="n", {}=b"#, name.to_uppercase());
            assert_eq!(creds(&twice), Err(DigestError::DuplicateParam), "{twice}");
            assert_eq!(parse_challenge(twice.as_bytes()), Err(DigestError::DuplicateParam), "{twice}");
        }
    }

    /// Fewer than eight bytes left after a name: the last parameter, with a short value.
    #[test]
    fn a_short_parameter_at_the_end_is_read_too() {
        let without_uri = r#"Digest username="u", realm="r", nonce="n", response="00""#;
        assert_eq!(creds(&format!("{without_uri}, Uri=s")).unwrap().uri, "s");
        assert_eq!(creds(&format!("{without_uri}, uri=\"\"")).unwrap().uri, "");
        assert_eq!(creds(&format!("{without_uri}, uri=a, URI=s")), Err(DigestError::DuplicateParam));
        assert_eq!(creds(&format!("{without_uri}, uri=a, urI")), Err(DigestError::ParamValue));
        assert_eq!(creds(&format!("{without_uri}, uris=s")), Err(DigestError::MissingUri));
        assert_eq!(creds(&minimal(", nc")), Err(DigestError::ParamValue));
        assert_eq!(creds(&minimal(", n=1")).unwrap().nc, None);
    }

    /// A value is text when it is UTF-8, whatever the parameters around it are.
    #[test]
    fn values_are_utf8_text_checked_one_by_one_when_the_whole_is_not() {
        let c = creds(&minimal("").replace(r#"username="u""#, r#"username="J\ür\"gen""#)).unwrap();
        assert_eq!(c.username, r#"Jür"gen"#);
        let mut input = minimal(r#", realm-2="#).into_bytes();
        input.extend_from_slice(b"\"\xff\xfe\"");
        let c = parse_credentials(&input).unwrap();
        assert_eq!((c.username.as_str(), c.realm.as_str(), c.uri.as_str()), ("u", "r", "sip:h"));
        let input = b"Digest realm=\"\xc3\xa9\", nonce=\"n\", ext=\"\xc3\"";
        assert_eq!(parse_challenge(input).unwrap().realm, "é");
        let input = b"Digest realm=\"\xc3\\\xa9\", nonce=\"n\"";
        assert_eq!(parse_challenge(input).unwrap().realm, "é", "not UTF-8 until unescaped");
    }

    /// The scan of a quoted-string goes eight bytes at a time: whatever ends a value, or
    /// needs a look, is found at every offset into a word and in the bytes after the last.
    #[test]
    fn quoted_strings_are_read_alike_at_every_length_and_offset() {
        // A quoted-string read one byte at a time, as RFC 3261 §25.1 writes it.
        fn one_at_a_time(inner: &[u8]) -> Result<(usize, bool), DigestError> {
            let (mut at, mut quoted_pairs, mut control) = (0, false, false);
            loop {
                match inner.get(at) {
                    None => return Err(DigestError::UnterminatedQuote),
                    Some(b'"') if control => return Err(DigestError::ParamValue),
                    Some(b'"') => return Ok((at, quoted_pairs)),
                    Some(b'\\') => {
                        let next = *inner.get(at + 1).ok_or(DigestError::UnterminatedQuote)?;
                        (control, quoted_pairs, at) = (control || is_control(next), true, at + 2);
                    }
                    Some(&c) => (control, at) = (control || is_control(c), at + 1),
                }
            }
        }
        let odd = [b'"', b'\\', b'\t', b' ', 0, 0x01, 0x1f, 0x7f, 0x80, 0xc3, 0xff, b'a'];
        for len in 0..40 {
            for at in 0..len {
                for first in odd {
                    for second in [b'"', b'x', b'\\'] {
                        let mut inner = vec![b'a'; len];
                        inner[at] = first;
                        if let Some(next) = inner.get_mut(at + 1) {
                            *next = second;
                        }
                        let want = one_at_a_time(&inner);
                        assert_eq!(quoted_string(&inner), want, "{inner:?}");
                        inner.push(b'"');
                        assert_eq!(quoted_string(&inner), one_at_a_time(&inner), "{inner:?}");
                    }
                }
            }
        }
        for byte in 0..=u8::MAX {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = byte;
                assert_eq!(needs_look(u64::from_le_bytes(word)), !PLAIN_QUOTED[usize::from(byte)] || byte == b'\t');
            }
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
