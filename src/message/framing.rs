//! Stream framing for TCP and TLS (RFC 3261 §18.3): a message ends where its
//! Content-Length says, and a CRLFCRLF between messages is a keep-alive ping that is
//! answered with CRLF (RFC 5626 §4.4.1). The framer says "need more bytes" apart from
//! "this stream is broken": the first means read again, the second means close.

use super::grammar;
use super::header::HeaderName;

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A CRLFCRLF ping of this many bytes: consume it and send [`PONG`].
    KeepAlive(usize),
    /// Stray line ends before a start line (§7.5): consume them, answer nothing.
    Skip(usize),
    /// A whole message of this many bytes.
    Message(usize),
}

/// The RFC 5626 §4.4.1 pong.
pub const PONG: &[u8] = b"\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough bytes yet: read more and try again.
    #[error("incomplete message")]
    Incomplete,
    #[error("message larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
}

/// Looks at the front of `buf` and says what it holds. On a stream a message without
/// Content-Length is taken to have no body.
pub fn frame(buf: &[u8], max_message_size: usize) -> Result<Frame, FrameError> {
    let leading = buf.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
    if leading > 0 {
        if buf.starts_with(b"\r\n\r\n") {
            return Ok(Frame::KeepAlive(4));
        }
        if leading == buf.len() && b"\r\n\r\n".starts_with(buf) {
            // "\r", "\r\n" or "\r\n\r": maybe the start of a ping.
            return Err(FrameError::Incomplete);
        }
        return Ok(Frame::Skip(leading.clamp(1, 2)));
    }
    let Some((header_end, content_length)) = scan_head(buf)? else {
        return Err(if buf.len() >= max_message_size {
            FrameError::TooLarge { max: max_message_size }
        } else {
            FrameError::Incomplete
        });
    };
    let body_len = content_length.unwrap_or(0);
    let total = header_end.checked_add(body_len).ok_or(FrameError::ContentLength)?;
    if total > max_message_size {
        return Err(FrameError::TooLarge { max: max_message_size });
    }
    if buf.len() < total {
        return Err(FrameError::Incomplete);
    }
    Ok(Frame::Message(total))
}

/// One pass over the header section: where it ends (just past the blank line, CRLF CRLF
/// or LF LF) and its Content-Length (`Content-Length = ( "Content-Length" / "l" ) HCOLON
/// 1*DIGIT`), every occurrence of which must agree (RFC 4475 §3.3.9). `None` while the
/// blank line has not arrived.
fn scan_head(buf: &[u8]) -> Result<Option<(usize, Option<usize>)>, FrameError> {
    let mut found: Option<usize> = None;
    let Some(first_lf) = memchr::memchr(b'\n', buf) else { return Ok(None) };
    let mut start = first_lf + 1;
    loop {
        let Some(lf) = memchr::memchr(b'\n', &buf[start..]).map(|i| i + start) else { return Ok(None) };
        let line = &buf[start..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(Some((lf + 1, found)));
        }
        // Only `Content-Length` and `l` can match: skip the lookup for every other line.
        if matches!(line.first(), Some(b'C' | b'c' | b'L' | b'l'))
            && let Some((name, value_start)) = grammar::header_name_colon(line)
            && HeaderName::from_bytes(name) == HeaderName::ContentLength
        {
            let n = grammar::decimal(grammar::trim(&line[value_start..])).ok_or(FrameError::ContentLength)?;
            if found.is_some_and(|prev| prev != n) {
                return Err(FrameError::ConflictingContentLength);
            }
            found = Some(n);
        }
        start = lf + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;
    const OPTIONS: &[u8] =
        b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn whole_message_is_framed_by_content_length() {
        assert_eq!(frame(OPTIONS, MAX), Ok(Frame::Message(OPTIONS.len())));
    }

    #[test]
    fn split_reads_are_incomplete_at_every_cut() {
        for cut in 1..OPTIONS.len() {
            assert_eq!(frame(&OPTIONS[..cut], MAX), Err(FrameError::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_messages_frame_one_at_a_time() {
        let mut two = OPTIONS.to_vec();
        two.extend_from_slice(b"\r\n\r\n");
        two.extend_from_slice(OPTIONS);
        let Ok(Frame::Message(n)) = frame(&two, MAX) else { panic!() };
        assert_eq!(n, OPTIONS.len());
        assert_eq!(frame(&two[n..], MAX), Ok(Frame::KeepAlive(4)));
        assert_eq!(frame(&two[n + 4..], MAX), Ok(Frame::Message(OPTIONS.len())));
    }

    #[test]
    fn keepalives_and_stray_line_ends() {
        assert_eq!(frame(b"\r\n\r\n", MAX), Ok(Frame::KeepAlive(4)));
        assert_eq!(frame(b"\r\n", MAX), Err(FrameError::Incomplete));
        assert_eq!(frame(b"\r\n\r", MAX), Err(FrameError::Incomplete));
        assert_eq!(frame(b"\r\nOPTIONS", MAX), Ok(Frame::Skip(2)));
        assert_eq!(frame(b"\nOPTIONS", MAX), Ok(Frame::Skip(1)));
    }

    #[test]
    fn missing_content_length_means_no_body() {
        let m = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\nNEXT";
        assert_eq!(frame(m, MAX), Ok(Frame::Message(m.len() - 4)));
    }

    #[test]
    fn bad_content_length_breaks_the_stream() {
        let neg = b"OPTIONS sip:h SIP/2.0\r\nContent-Length: -5\r\n\r\n";
        assert_eq!(frame(neg, MAX), Err(FrameError::ContentLength));
        let conflict = b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 5\r\nl: 6\r\n\r\n";
        assert_eq!(frame(conflict, MAX), Err(FrameError::ConflictingContentLength));
        let compact = b"OPTIONS sip:h SIP/2.0\r\nl:2\r\n\r\nab";
        assert_eq!(frame(compact, MAX), Ok(Frame::Message(compact.len())));
        let huge = b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(frame(huge, MAX), Err(FrameError::ContentLength));
    }

    #[test]
    fn oversize_is_refused_before_it_is_buffered() {
        let big_body = b"OPTIONS sip:h SIP/2.0\r\nContent-Length: 70000\r\n\r\n";
        assert_eq!(frame(big_body, MAX), Err(FrameError::TooLarge { max: MAX }));
        let endless_headers = vec![b'a'; MAX];
        assert_eq!(frame(&endless_headers, MAX), Err(FrameError::TooLarge { max: MAX }));
    }
}
