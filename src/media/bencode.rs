//! Bencode, the dictionary format of the rtpengine ng protocol: byte strings
//! `<len>:<bytes>`, integers `i<n>e`, lists `l...e`, dictionaries `d...e`.
//!
//! Ours rather than a crate's because of two facts about the peer and the wire: rtpengine
//! does not sort dictionary keys (its ng protocol document says so; `bendy` rejects such
//! replies), and a reply is network input, so nesting must be bounded (the serde-based
//! crates recurse without a limit). Dictionaries keep their order; lookups are linear,
//! which suits the dozen keys of an ng message.

/// Deeper than any ng reply (a `query` reply nests about eight levels).
const MAX_DEPTH: usize = 32;

/// A bencoded value borrowing its byte strings from the buffer it was read from, or from
/// the caller when it is built for encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Bytes(&'a [u8]),
    Int(i64),
    List(Vec<Self>),
    Dict(Vec<(&'a [u8], Self)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    #[error("bencode ends early")]
    UnexpectedEnd,
    #[error("unexpected byte at {0}")]
    UnexpectedByte(usize),
    #[error("malformed integer or length at {0}")]
    BadNumber(usize),
    #[error("bencode nested too deeply")]
    TooDeep,
    #[error("bytes after the value")]
    TrailingBytes,
}

impl<'a> Value<'a> {
    pub(crate) fn str(s: &'a str) -> Self {
        Self::Bytes(s.as_bytes())
    }

    pub(crate) fn list_of_str(items: &[&'a str]) -> Self {
        Self::List(items.iter().map(|s| Self::str(s)).collect())
    }

    /// Reads exactly one value spanning all of `input`.
    pub(crate) fn decode(input: &'a [u8]) -> Result<Self, BencodeError> {
        let mut reader = Reader { input, pos: 0 };
        let value = reader.value(0)?;
        if reader.pos != input.len() {
            return Err(BencodeError::TrailingBytes);
        }
        Ok(value)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Self::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Self::List(items) => {
                out.push(b'l');
                items.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Self::Dict(entries) => {
                out.push(b'd');
                for (key, value) in entries {
                    Self::Bytes(key).encode(out);
                    value.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The value of the first `key` of a dictionary.
    pub(crate) fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Dict(entries) => entries.iter().find(|(k, _)| *k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencodeError> {
        if depth > MAX_DEPTH {
            return Err(BencodeError::TooDeep);
        }
        let start = self.pos;
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let digits = self.until(b'e')?;
                Ok(Value::Int(parse_int(digits).ok_or(BencodeError::BadNumber(start))?))
            }
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut entries = Vec::new();
                while self.peek()? != b'e' {
                    let key = self.bytes()?;
                    entries.push((key, self.value(depth + 1)?));
                }
                self.pos += 1;
                Ok(Value::Dict(entries))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?)),
            _ => Err(BencodeError::UnexpectedByte(start)),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let start = self.pos;
        if !self.peek()?.is_ascii_digit() {
            return Err(BencodeError::UnexpectedByte(start));
        }
        let digits = self.until(b':')?;
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .ok_or(BencodeError::BadNumber(start))?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.input.len()).ok_or(BencodeError::UnexpectedEnd)?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn peek(&self) -> Result<u8, BencodeError> {
        self.input.get(self.pos).copied().ok_or(BencodeError::UnexpectedEnd)
    }

    /// The bytes up to `end`, consuming `end` too.
    fn until(&mut self, end: u8) -> Result<&'a [u8], BencodeError> {
        let rest = &self.input[self.pos..];
        let at = rest.iter().position(|&c| c == end).ok_or(BencodeError::UnexpectedEnd)?;
        self.pos += at + 1;
        Ok(&rest[..at])
    }
}

fn parse_int(digits: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(digits).ok()?;
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    if unsigned.is_empty() || !unsigned.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: &Value<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode(&mut out);
        out
    }

    #[test]
    fn encodes_an_ng_request() {
        let v = Value::Dict(vec![
            (b"command", Value::str("offer")),
            (b"flags", Value::list_of_str(&["strip-extmap"])),
            (b"delete-delay", Value::Int(0)),
        ]);
        assert_eq!(encoded(&v), b"d7:command5:offer5:flagsl12:strip-extmape12:delete-delayi0ee");
    }

    #[test]
    fn decodes_unsorted_keys_as_rtpengine_sends_them() {
        let v = Value::decode(b"d6:result5:error12:error-reason15:Unknown call-ide").unwrap();
        assert_eq!(v.get("result").and_then(Value::as_bytes), Some(&b"error"[..]));
        assert_eq!(v.get("error-reason").and_then(Value::as_bytes), Some(&b"Unknown call-id"[..]));
        assert_eq!(v.get("sdp"), None);
        let nested = Value::decode(b"d4:tagsd1:ad7:createdi-17eee2:xxl0:i0eee").unwrap();
        assert_eq!(nested.get("tags").and_then(|t| t.get("a")).and_then(|a| a.get("created")), Some(&Value::Int(-17)));
        assert_eq!(encoded(&nested), b"d4:tagsd1:ad7:createdi-17eee2:xxl0:i0eee");
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: [(&[u8], BencodeError); 10] = [
            (b"", BencodeError::UnexpectedEnd),
            (b"d6:result", BencodeError::UnexpectedEnd),
            (b"5:abc", BencodeError::UnexpectedEnd),
            (b"i12", BencodeError::UnexpectedEnd),
            (b"i1x2e", BencodeError::BadNumber(0)),
            (b"i-e", BencodeError::BadNumber(0)),
            (b"99999999999999999999999:a", BencodeError::BadNumber(0)),
            (b"di1ei2ee", BencodeError::UnexpectedByte(1)),
            (b"x", BencodeError::UnexpectedByte(0)),
            (b"i1ei2e", BencodeError::TrailingBytes),
        ];
        for (input, expected) in cases {
            assert_eq!(Value::decode(input), Err(expected), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep: Vec<u8> = std::iter::repeat_n(b'l', 100_000).collect();
        assert_eq!(Value::decode(&deep), Err(BencodeError::TooDeep));
        let mut ok = vec![b'l'; MAX_DEPTH];
        ok.extend(vec![b'e'; MAX_DEPTH]);
        assert!(Value::decode(&ok).is_ok());
    }
}
