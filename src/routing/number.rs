//! Dialled numbers: the separators people type, the patterns rules are written in (a literal
//! prefix or an Asterisk-style `_` pattern), and E.164 rewriting (ITU-T E.164: `+`, country
//! code, national significant number).

use std::fmt;

/// What people and phones put in a number for readability (the visual separators of RFC 3966
/// §5.1.1, plus the space): removed before any matching.
const SEPARATORS: [char; 5] = [' ', '-', '.', '(', ')'];

/// Every digit allowed: the slot of `X`.
const ANY_DIGIT: u16 = 0b11_1111_1111;

/// A dialled user part without its visual separators: `"(020) 7946-0958"` → `"02079460958"`.
pub fn normalise(dialled: &str) -> String {
    dialled.chars().filter(|c| !SEPARATORS.contains(c)).collect()
}

/// Whether a normalised user part is a number we route: an optional leading `+`, then one or
/// more of `0-9`, `*`, `#`. Anything else (a user name, a stray letter) is not dialled out.
pub fn is_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty() && digits.chars().all(is_dial_char)
}

/// A national number in E.164 form for a country code: a number already starting with `+` is
/// left alone; otherwise one leading `0` (the national trunk prefix of most countries) is
/// dropped and `+` and the country code are put in front: `("07700900123", "44")` →
/// `"+447700900123"`, `("7700900123", "44")` → the same. Only one `0` goes, so a rule meant for
/// national numbers must not also match international `00…` ones (list the `00` rule first).
/// Where the trunk prefix is not `0` (NANP's `1`), strip it with the rule's `strip` first.
pub fn to_e164(national: &str, country_code: &str) -> String {
    if national.starts_with('+') {
        return national.to_owned();
    }
    let significant = national.strip_prefix('0').unwrap_or(national);
    format!("+{country_code}{significant}")
}

/// What a rule, a policy entry or a DID matches, parsed once from the config.
///
/// - A literal (`"00"`, `"+1"`, `"442079460958"`): digits, `*`, `#`, a leading `+`. In rules
///   and policies ([`Self::matches`]) it is a prefix; as a DID ([`Self::matches_whole`]) it is
///   the whole number.
/// - A pattern starting with `_`, as in Asterisk dialplans, always matching the whole number:
///   `X` any digit, `Z` 1-9, `N` 2-9, `[15-7]` one digit of a set (digits and `a-b` ranges),
///   digits, `*`, `#` and a leading `+` themselves; a final `.` one or more of anything, a final
///   `!` zero or more; `-` is ignored (`_1-NXX-NXX-XXXX`). Letters may be upper or lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPattern {
    source: String,
    kind: Kind,
}

/// Why a pattern cannot be used; its text says which pattern and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("number pattern {pattern:?}: {problem}")]
pub struct PatternError {
    pub pattern: String,
    pub problem: PatternProblem,
}

/// The fault in a pattern; positions count characters from 1, the `_` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternProblem {
    #[error("is empty (\"_.\" matches any number)")]
    Empty,
    #[error("{ch:?} at character {at} is a pattern character: start the pattern with '_'")]
    NotLiteral { ch: char, at: usize },
    #[error("unexpected {ch:?} at character {at}")]
    Unexpected { ch: char, at: usize },
    #[error("'+' at character {at}: only the first character of a number may be '+'")]
    MisplacedPlus { at: usize },
    #[error("'[' at character {at} is never closed")]
    UnclosedSet { at: usize },
    #[error("'[' at character {at} opens an empty set")]
    EmptySet { at: usize },
    #[error("the range at character {at} is not low-high digits")]
    BadRange { at: usize },
    #[error("{ch:?} at character {at} must be the last character")]
    WildcardNotLast { ch: char, at: usize },
}

impl NumberPattern {
    /// Reads a literal or a `_` pattern (see the type's documentation).
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        let fail = |problem| PatternError { pattern: source.to_owned(), problem };
        let kind = match source.strip_prefix('_') {
            Some(body) => parse_pattern(body).map_err(fail)?,
            None => {
                check_literal(source).map_err(fail)?;
                Kind::Literal(source.to_owned())
            }
        };
        Ok(Self { source: source.to_owned(), kind })
    }

    /// As a rule or policy entry: a literal is a prefix of the number, a pattern covers all of it.
    pub fn matches(&self, number: &str) -> bool {
        match &self.kind {
            Kind::Literal(literal) => number.starts_with(literal.as_str()),
            Kind::Pattern { slots, tail } => pattern_matches(slots, *tail, number),
        }
    }

    /// As a DID: a literal is the whole number, a pattern covers all of it.
    pub fn matches_whole(&self, number: &str) -> bool {
        match &self.kind {
            Kind::Literal(literal) => number == literal,
            Kind::Pattern { slots, tail } => pattern_matches(slots, *tail, number),
        }
    }

    /// Whether this was written with `_` (so it is not one fixed number).
    pub fn is_pattern(&self) -> bool {
        matches!(self.kind, Kind::Pattern { .. })
    }

    /// The fewest characters a matching number has: how many a rule may `strip` at most.
    pub fn min_len(&self) -> usize {
        match &self.kind {
            Kind::Literal(literal) => literal.chars().count(),
            Kind::Pattern { slots, tail } => slots.len() + usize::from(*tail == Tail::OneOrMore),
        }
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for NumberPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Literal(String),
    Pattern { slots: Vec<Slot>, tail: Tail },
}

/// One character position of a `_` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Char(char),
    /// Bit d set: digit d fits.
    Digits(u16),
}

impl Slot {
    fn accepts(self, c: char) -> bool {
        match self {
            Self::Char(expected) => c == expected,
            Self::Digits(mask) => c.to_digit(10).is_some_and(|d| mask & (1 << d) != 0),
        }
    }
}

/// What may follow the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    Nothing,
    /// A final `.`.
    OneOrMore,
    /// A final `!`.
    ZeroOrMore,
}

/// A character of a number other than its leading `+`.
pub(super) fn is_dial_char(c: char) -> bool {
    c.is_ascii_digit() || c == '*' || c == '#'
}

fn check_literal(source: &str) -> Result<(), PatternProblem> {
    if source.is_empty() {
        return Err(PatternProblem::Empty);
    }
    for (c, at) in source.chars().zip(1..) {
        match c {
            '+' if at == 1 => {}
            '+' => return Err(PatternProblem::MisplacedPlus { at }),
            c if is_dial_char(c) => {}
            'X' | 'x' | 'Z' | 'z' | 'N' | 'n' | '[' | '.' | '!' => {
                return Err(PatternProblem::NotLiteral { ch: c, at });
            }
            ch => return Err(PatternProblem::Unexpected { ch, at }),
        }
    }
    Ok(())
}

/// Reads what follows the `_`; positions start at 2 because the `_` is character 1.
fn parse_pattern(body: &str) -> Result<Kind, PatternProblem> {
    let mut slots = Vec::new();
    let mut tail = Tail::Nothing;
    let mut chars = body.chars().zip(2..).peekable();
    while let Some((c, at)) = chars.next() {
        let slot = match c {
            'X' | 'x' => Slot::Digits(ANY_DIGIT),
            'Z' | 'z' => Slot::Digits(ANY_DIGIT & !0b1),
            'N' | 'n' => Slot::Digits(ANY_DIGIT & !0b11),
            '+' if slots.is_empty() => Slot::Char('+'),
            '+' => return Err(PatternProblem::MisplacedPlus { at }),
            c if is_dial_char(c) => Slot::Char(c),
            '-' => continue,
            '[' => Slot::Digits(parse_set(&mut chars, at)?),
            '.' | '!' => {
                if chars.peek().is_some() {
                    return Err(PatternProblem::WildcardNotLast { ch: c, at });
                }
                tail = if c == '.' { Tail::OneOrMore } else { Tail::ZeroOrMore };
                break;
            }
            ch => return Err(PatternProblem::Unexpected { ch, at }),
        };
        slots.push(slot);
    }
    if slots.is_empty() && tail == Tail::Nothing {
        return Err(PatternProblem::Empty);
    }
    Ok(Kind::Pattern { slots, tail })
}

/// Reads a `[…]` set after its `[` (at `open`) up to and including the `]`.
fn parse_set(chars: &mut impl Iterator<Item = (char, usize)>, open: usize) -> Result<u16, PatternProblem> {
    let mut mask = 0u16;
    // The digit just read, which a following '-' makes the low end of a range.
    let mut low: Option<u32> = None;
    loop {
        let Some((c, at)) = chars.next() else { return Err(PatternProblem::UnclosedSet { at: open }) };
        match c {
            ']' => break,
            '-' => {
                let Some(from) = low.take() else { return Err(PatternProblem::BadRange { at }) };
                let Some((high, _)) = chars.next() else { return Err(PatternProblem::UnclosedSet { at: open }) };
                let Some(to) = high.to_digit(10).filter(|&to| to >= from) else {
                    return Err(PatternProblem::BadRange { at });
                };
                for d in from..=to {
                    mask |= 1 << d;
                }
            }
            c => {
                let Some(d) = c.to_digit(10) else { return Err(PatternProblem::Unexpected { ch: c, at }) };
                mask |= 1 << d;
                low = Some(d);
            }
        }
    }
    if mask == 0 {
        return Err(PatternProblem::EmptySet { at: open });
    }
    Ok(mask)
}

fn pattern_matches(slots: &[Slot], tail: Tail, number: &str) -> bool {
    let mut chars = number.chars();
    for slot in slots {
        match chars.next() {
            Some(c) if slot.accepts(c) => {}
            _ => return false,
        }
    }
    let rest = chars.count();
    match tail {
        Tail::Nothing => rest == 0,
        Tail::OneOrMore => rest > 0,
        Tail::ZeroOrMore => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(source: &str) -> NumberPattern {
        NumberPattern::parse(source).unwrap()
    }

    fn problem(source: &str) -> PatternProblem {
        NumberPattern::parse(source).unwrap_err().problem
    }

    #[test]
    fn visual_separators_are_removed_before_matching() {
        assert_eq!(normalise("0044 20 7946 0958"), "00442079460958");
        assert_eq!(normalise("+1 (800) 555-0199"), "+18005550199");
        assert_eq!(normalise("020.7946.0958"), "02079460958");
    }

    #[test]
    fn a_number_is_digits_star_hash_with_an_optional_leading_plus() {
        assert!(is_number("+442079460958"));
        assert!(is_number("*21#"));
        assert!(!is_number("+"));
        assert!(!is_number(""));
        assert!(!is_number("alice"));
        assert!(!is_number("12+3"));
    }

    #[test]
    fn e164_drops_one_national_trunk_prefix_and_adds_the_country_code() {
        assert_eq!(to_e164("07700900123", "44"), "+447700900123");
        assert_eq!(to_e164("7700900123", "44"), "+447700900123");
        assert_eq!(to_e164("+33123456789", "44"), "+33123456789");
    }

    #[test]
    fn literal_is_a_prefix_for_rules_and_the_whole_number_for_dids() {
        let p = pattern("00");
        assert!(p.matches("00442079460958"));
        assert!(!p.matches("02079460958"));
        assert!(!p.matches_whole("00442079460958"));
        assert!(pattern("442079460958").matches_whole("442079460958"));
        assert!(pattern("+1").matches("+18005550199"));
    }

    #[test]
    fn x_z_n_and_sets_match_one_digit_each() {
        let nanp = pattern("_1NXXNXXXXXX");
        assert!(nanp.matches("12125550199"));
        assert!(!nanp.matches("11125550199"), "N is 2-9");
        assert!(!nanp.matches("1212555019"), "one digit short");
        assert!(!nanp.matches("121255501990"), "one digit long");
        assert!(pattern("_Z").matches("1") && !pattern("_Z").matches("0"));
        let set = pattern("_0[1-357]X");
        assert!(set.matches("012") && set.matches("032") && set.matches("072"));
        assert!(!set.matches("042") && !set.matches("062"));
    }

    #[test]
    fn final_dot_is_one_or_more_and_bang_zero_or_more() {
        assert!(pattern("_00.").matches("0044"));
        assert!(!pattern("_00.").matches("00"));
        assert!(pattern("_00!").matches("00"));
        assert!(pattern("_.").matches("*21#"));
        assert_eq!(pattern("_00.").min_len(), 3);
        assert_eq!(pattern("_00!").min_len(), 2);
    }

    #[test]
    fn dashes_in_patterns_are_ignored_and_case_does_not_matter() {
        assert!(pattern("_1-nxx-nxx-xxxx").matches("12125550199"));
        assert_eq!(pattern("_1-NXX").min_len(), 4);
    }

    #[test]
    fn bad_patterns_say_what_and_where() {
        assert_eq!(problem(""), PatternProblem::Empty);
        assert_eq!(problem("_"), PatternProblem::Empty);
        assert_eq!(problem("0X"), PatternProblem::NotLiteral { ch: 'X', at: 2 });
        assert_eq!(problem("0a"), PatternProblem::Unexpected { ch: 'a', at: 2 });
        assert_eq!(problem("1+"), PatternProblem::MisplacedPlus { at: 2 });
        assert_eq!(problem("_1N[2-"), PatternProblem::UnclosedSet { at: 4 });
        assert_eq!(problem("_1[2"), PatternProblem::UnclosedSet { at: 3 });
        assert_eq!(problem("_[]"), PatternProblem::EmptySet { at: 2 });
        assert_eq!(problem("_[5-1]"), PatternProblem::BadRange { at: 4 });
        assert_eq!(problem("_[-1]"), PatternProblem::BadRange { at: 3 });
        assert_eq!(problem("_[1a]"), PatternProblem::Unexpected { ch: 'a', at: 4 });
        assert_eq!(problem("_0.1"), PatternProblem::WildcardNotLast { ch: '.', at: 3 });
        let error = NumberPattern::parse("_1N[2-").unwrap_err().to_string();
        assert_eq!(error, "number pattern \"_1N[2-\": '[' at character 4 is never closed");
    }
}
