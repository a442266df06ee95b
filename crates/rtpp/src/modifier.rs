//! The modifier letters written right after a command's letter (`Uc0,8,101Z20 …`, `Dw …`,
//! `Qv …`, `Ib`), as a typed set. Letters are case-insensitive, as in RTPProxy; a letter
//! this crate does not know is kept as [`Modifier::Unknown`] so the relay can report it.

use std::fmt;
use std::net::IpAddr;

use crate::error::ParseErrorKind;

/// One modifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modifier {
    /// `A` (U/L): asymmetric: send to the address in the command, never learn it.
    Asymmetric,
    /// `S` (U/L): symmetric (the default): send back to where the party's packets come from.
    Symmetric,
    /// `W` (U/L/D): weak: the session survives a `D` of the other kind.
    Weak,
    /// `E` (U/L): this side of the session is on the external interface (bridge mode).
    External,
    /// `I` (U/L): this side is on the internal interface (bridge mode).
    Internal,
    /// `6` (U/L): the address in the command is IPv6.
    Ipv6,
    /// `Z<ms>` (U/L): re-packetise to this packetisation time.
    Ptime(u32),
    /// `C<pt,pt,…>` (U/L): the stream's payload types.
    Codecs(Vec<u8>),
    /// `L<addr>` (U/L): the local address to allocate on.
    LocalAddress(IpAddr),
    /// `L{label}` (U/L): the local address by its label.
    LocalLabel(String),
    /// `R<addr>` (U/L): allocate on the local address that routes to this remote address.
    RemoteAddress(IpAddr),
    /// `N` (U/L): allocate a new port even for an existing session.
    NewPort,
    /// `V` (Q): verbose counters (`name=value`).
    Verbose,
    /// `B` (I): brief statistics.
    Brief,
    /// A letter this crate does not know for this command.
    Unknown(char),
}

/// The modifiers of one command, in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modifiers(pub Vec<Modifier>);

impl Modifiers {
    /// Reads the modifiers of `command` (its upper-case letter) from `text`.
    pub fn parse(command: char, text: &str) -> Result<Modifiers, ParseErrorKind> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            let upper = c.to_ascii_uppercase();
            let modifier = match (command, upper) {
                ('U' | 'L', 'A') => Modifier::Asymmetric,
                ('U' | 'L', 'S') => Modifier::Symmetric,
                ('U' | 'L' | 'D', 'W') => Modifier::Weak,
                ('U' | 'L', 'E') => Modifier::External,
                ('U' | 'L', 'I') => Modifier::Internal,
                ('U' | 'L', '6') => Modifier::Ipv6,
                ('U' | 'L', 'N') => Modifier::NewPort,
                ('U' | 'L', 'Z') => {
                    let (ms, after) = take_ptime(rest).ok_or(ParseErrorKind::BadModifier {
                        letter: c,
                        reason: PTIME_EXPECTED,
                    })?;
                    rest = after;
                    Modifier::Ptime(ms)
                }
                ('U' | 'L', 'C') => {
                    let (list, after) = split_while(rest, |c| c.is_ascii_digit() || c == ',');
                    rest = after;
                    let bad = ParseErrorKind::BadModifier {
                        letter: c,
                        reason: "expected payload types from 0 to 127 separated by commas",
                    };
                    if list.is_empty() || out.iter().any(|m| matches!(m, Modifier::Codecs(_))) {
                        return Err(bad);
                    }
                    let mut types = Vec::new();
                    for pt in list.split(',').filter(|p| !p.is_empty()) {
                        match pt.parse::<u8>() {
                            Ok(pt) if pt < 128 => types.push(pt),
                            _ => return Err(bad),
                        }
                    }
                    if types.is_empty() {
                        return Err(bad);
                    }
                    Modifier::Codecs(types)
                }
                ('U' | 'L', 'L') if rest.starts_with('{') => {
                    let end = rest.find('}').ok_or(ParseErrorKind::BadModifier {
                        letter: c,
                        reason: "unterminated `{label}`",
                    })?;
                    let label = &rest[1..end];
                    rest = &rest[end + 1..];
                    if label.is_empty() {
                        return Err(ParseErrorKind::BadModifier {
                            letter: c,
                            reason: "empty label",
                        });
                    }
                    Modifier::LocalLabel(label.to_owned())
                }
                ('U' | 'L', 'L' | 'R') => {
                    let (address, after) =
                        take_address(rest).ok_or(ParseErrorKind::BadModifier {
                            letter: c,
                            reason: "expected an IPv4 address or a bracketed IPv6 address",
                        })?;
                    rest = after;
                    if upper == 'L' {
                        Modifier::LocalAddress(address)
                    } else {
                        Modifier::RemoteAddress(address)
                    }
                }
                ('Q', 'V') => Modifier::Verbose,
                ('I', 'B') => Modifier::Brief,
                _ => Modifier::Unknown(c),
            };
            out.push(modifier);
        }
        Ok(Modifiers(out))
    }

    /// Whether `modifier` is among them.
    pub fn contains(&self, modifier: &Modifier) -> bool {
        self.0.contains(modifier)
    }

    /// The letters this crate does not know.
    pub fn unknown(&self) -> impl Iterator<Item = char> + '_ {
        self.0.iter().filter_map(|m| match m {
            Modifier::Unknown(c) => Some(*c),
            _ => None,
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn split_while(text: &str, keep: impl Fn(char) -> bool) -> (&str, &str) {
    let end = text.find(|c: char| !keep(c)).unwrap_or(text.len());
    text.split_at(end)
}

/// What a packetisation time must be.
pub(crate) const PTIME_EXPECTED: &str = "expected a packetisation time from 1 to 999 ms";

/// A packetisation time (1 to 999 ms) at the start of `text`, and what follows.
pub(crate) fn take_ptime(text: &str) -> Option<(u32, &str)> {
    let (digits, rest) = split_while(text, |c| c.is_ascii_digit());
    let ms = digits
        .parse::<u32>()
        .ok()
        .filter(|ms| (1..1000).contains(ms))?;
    Some((ms, rest))
}

/// An IPv4 address, or an IPv6 address in brackets, at the start of `text`.
pub(crate) fn take_address(text: &str) -> Option<(IpAddr, &str)> {
    if let Some(inner) = text.strip_prefix('[') {
        let end = inner.find(']')?;
        let ip = inner[..end].parse::<std::net::Ipv6Addr>().ok()?;
        return Some((IpAddr::V6(ip), &inner[end + 1..]));
    }
    let (v4, rest) = split_while(text, |c| c.is_ascii_digit() || c == '.');
    let ip = v4.parse::<std::net::Ipv4Addr>().ok()?;
    Some((IpAddr::V4(ip), rest))
}

impl fmt::Display for Modifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Modifier::Asymmetric => f.write_str("A"),
            Modifier::Symmetric => f.write_str("S"),
            Modifier::Weak => f.write_str("W"),
            Modifier::External => f.write_str("E"),
            Modifier::Internal => f.write_str("I"),
            Modifier::Ipv6 => f.write_str("6"),
            Modifier::Ptime(ms) => write!(f, "Z{ms}"),
            Modifier::Codecs(types) => {
                f.write_str("c")?;
                for (i, pt) in types.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{pt}")?;
                }
                Ok(())
            }
            Modifier::LocalAddress(IpAddr::V4(ip)) => write!(f, "L{ip}"),
            Modifier::LocalAddress(IpAddr::V6(ip)) => write!(f, "L[{ip}]"),
            Modifier::LocalLabel(label) => write!(f, "L{{{label}}}"),
            Modifier::RemoteAddress(IpAddr::V4(ip)) => write!(f, "R{ip}"),
            Modifier::RemoteAddress(IpAddr::V6(ip)) => write!(f, "R[{ip}]"),
            Modifier::NewPort => f.write_str("N"),
            Modifier::Verbose => f.write_str("v"),
            Modifier::Brief => f.write_str("b"),
            Modifier::Unknown(c) => write!(f, "{c}"),
        }
    }
}

impl fmt::Display for Modifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.0 {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kamailio_style_update_modifiers() {
        let m = Modifiers::parse('U', "AIc0,8,101Z20").unwrap();
        assert_eq!(
            m.0,
            vec![
                Modifier::Asymmetric,
                Modifier::Internal,
                Modifier::Codecs(vec![0, 8, 101]),
                Modifier::Ptime(20),
            ]
        );
        assert_eq!(m.to_string(), "AIc0,8,101Z20");
    }

    #[test]
    fn addresses_and_labels() {
        let m = Modifiers::parse('U', "L10.0.0.1R[2001:db8::1]L{pub}6").unwrap();
        assert_eq!(
            m.0,
            vec![
                Modifier::LocalAddress("10.0.0.1".parse().unwrap()),
                Modifier::RemoteAddress("2001:db8::1".parse().unwrap()),
                Modifier::LocalLabel("pub".into()),
                Modifier::Ipv6,
            ]
        );
        assert_eq!(Modifiers::parse('U', &m.to_string()).unwrap(), m);
    }

    #[test]
    fn unknown_letters_are_kept() {
        let m = Modifiers::parse('U', "aqS").unwrap();
        assert_eq!(m.unknown().collect::<Vec<_>>(), vec!['q']);
        assert!(m.contains(&Modifier::Asymmetric));
        // The same letter means something else, or nothing, for another command.
        assert_eq!(
            Modifiers::parse('Q', "va").unwrap().0,
            vec![Modifier::Verbose, Modifier::Unknown('a')]
        );
    }

    #[test]
    fn malformed_values() {
        for bad in [
            "Z", "Z0", "Z1000", "c", "c300", "c0c8", "L", "L{", "L{}", "R1.2", "L[::1",
        ] {
            assert!(
                matches!(
                    Modifiers::parse('U', bad),
                    Err(ParseErrorKind::BadModifier { .. })
                ),
                "{bad}"
            );
        }
    }
}
