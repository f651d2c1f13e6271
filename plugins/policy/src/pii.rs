//! Personal data and secrets in text: e-mail addresses, phone numbers,
//! payment card numbers (checked with Luhn), IBANs (checked with mod 97)
//! and API-key-like strings. Each finding has a kind and a byte range, so
//! it can be counted or replaced.

use std::sync::OnceLock;

use regex::Regex;

/// What was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A payment card number.
    Card,
    /// An international bank account number.
    Iban,
    /// Something that looks like an API key or token.
    ApiKey,
}

impl Kind {
    /// Every kind, in the order findings are looked for.
    pub const ALL: [Kind; 5] = [
        Kind::ApiKey,
        Kind::Email,
        Kind::Iban,
        Kind::Card,
        Kind::Phone,
    ];

    /// Its name in a policy's `pii:` list.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::ApiKey => "api_key",
        }
    }

    /// The kind a `pii:` name stands for.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What a redaction puts in its place.
    pub fn mask(self) -> &'static str {
        match self {
            Kind::Email => "[EMAIL]",
            Kind::Phone => "[PHONE]",
            Kind::Card => "[CARD]",
            Kind::Iban => "[IBAN]",
            Kind::ApiKey => "[SECRET]",
        }
    }

    fn pattern(self) -> &'static Regex {
        static PATTERNS: OnceLock<Vec<Regex>> = OnceLock::new();
        let patterns = PATTERNS.get_or_init(|| {
            [
                r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}|\bxox[abprs]-[A-Za-z0-9-]{10,}|\bAIza[0-9A-Za-z_-]{35}",
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
                r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
                r"\b\d(?:[ -]?\d){12,18}\b",
                r"(?:\+|\b)\d(?:[ ().-]{0,2}\d){7,14}\b",
            ]
            .iter()
            .map(|p| Regex::new(p).expect("the built-in patterns compile"))
            .collect()
        });
        let index = Kind::ALL
            .iter()
            .position(|k| *k == self)
            .expect("every kind has a pattern");
        &patterns[index]
    }

    /// Whether a match is one (a checksum, a digit count).
    fn confirms(self, text: &str) -> bool {
        match self {
            Kind::Card => luhn(text),
            Kind::Iban => iban(text),
            Kind::Phone => {
                let digits = text.chars().filter(char::is_ascii_digit).count();
                (8..=15).contains(&digits)
            }
            Kind::Email | Kind::ApiKey => true,
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub kind: Kind,
    /// Where it is, in bytes.
    pub range: std::ops::Range<usize>,
}

/// Every finding of the given kinds, in text order, none overlapping (the
/// kinds earlier in [`Kind::ALL`] win: a key is not also a phone number).
pub fn find(text: &str, kinds: &[Kind]) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| kinds.contains(k)) {
        for m in kind.pattern().find_iter(text) {
            let overlaps = found
                .iter()
                .any(|f| f.range.start < m.end() && m.start() < f.range.end);
            let numeric = matches!(kind, Kind::Phone | Kind::Card);
            if !overlaps
                && kind.confirms(m.as_str())
                && !(numeric && part_of_longer_number(text, m.range()))
            {
                found.push(Finding {
                    kind,
                    range: m.range(),
                });
            }
        }
    }
    found.sort_by_key(|f| f.range.start);
    found
}

/// Whether digits go on right before or after `range` (one space or dash
/// apart): then the match is a piece of a longer number, not a number.
fn part_of_longer_number(text: &str, range: std::ops::Range<usize>) -> bool {
    let digit_near = |chars: &mut dyn Iterator<Item = char>| match chars.next() {
        Some(c) if c.is_ascii_digit() => true,
        Some(' ' | '-') => chars.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    };
    digit_near(&mut text[range.end..].chars()) || digit_near(&mut text[..range.start].chars().rev())
}

/// Compiles the detectors and runs them once over text of the shapes they
/// look for, so a pre-initialised instance holds them built and their
/// lazy automata partly filled (see `Plugin::initialize`).
pub fn warm() {
    let sample = "Write to Ada Lovelace <ada.lovelace@example.org> or call +44 20 7946 0958; \
        card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, key sk-abcdefghijklmnop1234. \
        Non-ASCII text: café, naïve, Zürich.";
    let _ = find(sample, &Kind::ALL);
}

/// `text` with every finding replaced by its kind's mask.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for finding in findings {
        out.push_str(&text[at..finding.range.start]);
        out.push_str(finding.kind.mask());
        at = finding.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// The Luhn checksum of a card number's digits.
fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ISO 13616 check of an IBAN: move the first four characters to the
/// end, letters to numbers (A = 10), and the number mod 97 is 1.
fn iban(text: &str) -> bool {
    let compact: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut remainder: u32 = 0;
    for c in rearranged {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        let digits = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * digits + value) % 97;
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        find(text, &Kind::ALL)
            .into_iter()
            .map(|f| (f.kind, &text[f.range]))
            .collect()
    }

    #[test]
    fn each_kind_is_found_and_checked() {
        let text = "Mail ada@example.org or call +44 20 7946 0958. Card 4111 1111 1111 1111, \
                    not 4111 1111 1111 1112. IBAN GB82 WEST 1234 5698 7654 32. Key sk-abcdefghijklmnop1234.";
        assert_eq!(
            kinds(text),
            [
                (Kind::Email, "ada@example.org"),
                (Kind::Phone, "+44 20 7946 0958"),
                (Kind::Card, "4111 1111 1111 1111"),
                (Kind::Iban, "GB82 WEST 1234 5698 7654 32"),
                (Kind::ApiKey, "sk-abcdefghijklmnop1234"),
            ]
        );
    }

    #[test]
    fn redaction_masks_what_was_found() {
        let text = "write to ada@example.org today";
        let findings = find(text, &[Kind::Email]);
        assert_eq!(redact(text, &findings), "write to [EMAIL] today");
        assert_eq!(find("order 12 of 2024", &Kind::ALL), []);
    }
}
