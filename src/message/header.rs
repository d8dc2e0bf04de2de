//! Header names: the long forms we act on, their compact forms (RFC 3261 §7.3.3 and the
//! registrations since), and which of them carry comma-separated lists (§7.3.1).

macro_rules! header_names {
    ($( $variant:ident = $long:literal, compact $compact:expr, list $list:literal; )*) => {
        /// A header field name as a proxy needs to know it. Anything else is `Other` and is
        /// forwarded byte for byte.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum HeaderName {
            $( $variant, )*
            /// A name we do not act on; its spelling stays in the message bytes.
            Other,
        }

        impl HeaderName {
            /// The canonical long form, as we print it in messages we build.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $long, )*
                    Self::Other => "",
                }
            }

            /// Whether the RFC grammar of this header is `#(element)`, so one field may carry
            /// several values separated by commas and several fields may be combined.
            pub fn is_list(self) -> bool {
                match self {
                    $( Self::$variant => $list, )*
                    Self::Other => false,
                }
            }

            /// The compact (one letter) form, if the header has one.
            pub fn compact(self) -> Option<u8> {
                match self {
                    $( Self::$variant => $compact, )*
                    Self::Other => None,
                }
            }

            /// Looks a name up case-insensitively, long or compact form (`header-name`, §25.1).
            pub fn from_bytes(name: &[u8]) -> Self {
                if name.len() == 1 {
                    let c = name[0].to_ascii_lowercase();
                    $( if $compact == Some(c) { return Self::$variant; } )*
                    return Self::Other;
                }
                // Dispatch on length first: almost every lookup is decided by one
                // case-insensitive comparison.
                $(
                    if name.len() == $long.len() && name.eq_ignore_ascii_case($long.as_bytes()) {
                        return Self::$variant;
                    }
                )*
                Self::Other
            }
        }
    };
}

header_names! {
    Via = "Via", compact Some(b'v'), list true;
    From = "From", compact Some(b'f'), list false;
    To = "To", compact Some(b't'), list false;
    CallId = "Call-ID", compact Some(b'i'), list false;
    CSeq = "CSeq", compact None, list false;
    MaxForwards = "Max-Forwards", compact None, list false;
    ContentLength = "Content-Length", compact Some(b'l'), list false;
    ContentType = "Content-Type", compact Some(b'c'), list false;
    ContentEncoding = "Content-Encoding", compact Some(b'e'), list true;
    Contact = "Contact", compact Some(b'm'), list true;
    Route = "Route", compact None, list true;
    RecordRoute = "Record-Route", compact None, list true;
    Path = "Path", compact None, list true;
    Expires = "Expires", compact None, list false;
    MinExpires = "Min-Expires", compact None, list false;
    Supported = "Supported", compact Some(b'k'), list true;
    Require = "Require", compact None, list true;
    ProxyRequire = "Proxy-Require", compact None, list true;
    Unsupported = "Unsupported", compact None, list true;
    Allow = "Allow", compact None, list true;
    Accept = "Accept", compact None, list true;
    Authorization = "Authorization", compact None, list false;
    ProxyAuthorization = "Proxy-Authorization", compact None, list false;
    WwwAuthenticate = "WWW-Authenticate", compact None, list false;
    ProxyAuthenticate = "Proxy-Authenticate", compact None, list false;
    Subject = "Subject", compact Some(b's'), list false;
    Event = "Event", compact Some(b'o'), list false;
    AllowEvents = "Allow-Events", compact Some(b'u'), list true;
    ReferTo = "Refer-To", compact Some(b'r'), list false;
    ReferredBy = "Referred-By", compact Some(b'b'), list false;
    SessionExpires = "Session-Expires", compact Some(b'x'), list false;
    UserAgent = "User-Agent", compact None, list false;
    Server = "Server", compact None, list false;
    Warning = "Warning", compact None, list true;
    Reason = "Reason", compact None, list true;
    PAssertedIdentity = "P-Asserted-Identity", compact None, list true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_forms_map_to_long_names() {
        let pairs = [
            ("v", HeaderName::Via),
            ("f", HeaderName::From),
            ("t", HeaderName::To),
            ("i", HeaderName::CallId),
            ("m", HeaderName::Contact),
            ("l", HeaderName::ContentLength),
            ("c", HeaderName::ContentType),
            ("e", HeaderName::ContentEncoding),
            ("k", HeaderName::Supported),
            ("s", HeaderName::Subject),
            ("o", HeaderName::Event),
            ("u", HeaderName::AllowEvents),
            ("r", HeaderName::ReferTo),
            ("b", HeaderName::ReferredBy),
            ("x", HeaderName::SessionExpires),
            ("V", HeaderName::Via),
            ("I", HeaderName::CallId),
        ];
        for (name, expected) in pairs {
            assert_eq!(HeaderName::from_bytes(name.as_bytes()), expected, "{name}");
        }
        assert_eq!(HeaderName::from_bytes(b"z"), HeaderName::Other);
    }

    #[test]
    fn long_names_match_case_insensitively() {
        assert_eq!(HeaderName::from_bytes(b"call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"CSEQ"), HeaderName::CSeq);
        assert_eq!(HeaderName::from_bytes(b"www-authenticate"), HeaderName::WwwAuthenticate);
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Via2"), HeaderName::Other);
    }

    #[test]
    fn list_headers_are_marked() {
        assert!(HeaderName::Via.is_list());
        assert!(HeaderName::Contact.is_list());
        assert!(!HeaderName::CallId.is_list());
        assert!(!HeaderName::Authorization.is_list());
    }
}
