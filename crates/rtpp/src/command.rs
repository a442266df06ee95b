//! Commands: `COOKIE COMMAND[MODIFIERS] ARGS…`, whitespace-separated, one per datagram.
//!
//! | command | arguments | what |
//! | --- | --- | --- |
//! | `V` | | base protocol version (`20040107`) |
//! | `VF` | `YYYYMMDD` | is this capability supported? `1`/`0` |
//! | `U` | `call-id addr port from-tag[;n] [to-tag[;n]] [notify-socket notify-tag]` | create or update a session from the offer; reply: the port (and address) for the other party |
//! | `L` | `call-id addr port from-tag[;n] to-tag[;n]` | the answer: fill in the other party; reply as `U`, `0` if no session |
//! | `D` | `call-id from-tag [to-tag]` | delete; `0` or `E50` |
//! | `Q` | `call-id from-tag [to-tag [counter…]]` | counters; `E50` if no session |
//! | `I` | | statistics text |
//!
//! `;n` after a tag is the *medianum*: the `m=` line's number (from 1); RTPProxy keeps one
//! session per medianum. The commands RTPProxy knows and this crate does not type (`R`,
//! `P`, `S`, `C`, `N`, `X`, `G`) parse as [`CommandKind::Other`].

use std::fmt;
use std::net::IpAddr;

use crate::error::{ParseError, ParseErrorKind};
use crate::modifier::Modifiers;

/// A party's tag with its optional medianum (`abc;2`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The SIP From/To tag.
    pub tag: String,
    /// The media stream number, from 1, if given.
    pub medianum: Option<u32>,
}

impl Tag {
    /// Reads `tag[;medianum]`.
    pub fn parse(text: &str) -> Result<Tag, ParseErrorKind> {
        let bad = || ParseErrorKind::BadTag(text.to_owned());
        let (tag, medianum) = match text.rsplit_once(';') {
            Some((tag, n)) => (tag, Some(n.parse::<u32>().map_err(|_| bad())?)),
            None => (text, None),
        };
        if tag.is_empty() {
            return Err(bad());
        }
        Ok(Tag {
            tag: tag.to_owned(),
            medianum,
        })
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.medianum {
            Some(n) => write!(f, "{};{n}", self.tag),
            None => f.write_str(&self.tag),
        }
    }
}

/// The two tags a session command names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTags {
    /// The tag of the party whose address the command carries (`U`/`L`), or the first tag
    /// (`D`/`Q`).
    pub from: Tag,
    /// The other party's tag.
    pub to: Option<Tag>,
}

impl SessionTags {
    /// The stream number: the from-tag's medianum, else the to-tag's (RTPProxy applies the
    /// medianum of one tag to both).
    pub fn medianum(&self) -> Option<u32> {
        self.from
            .medianum
            .or_else(|| self.to.as_ref().and_then(|t| t.medianum))
    }
}

/// The arguments of `U` and `L`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The Call-ID (with `;via-branch` or `;extra-id` appended when the module adds one).
    pub call_id: String,
    /// The media address of the party the command is about.
    pub address: IpAddr,
    /// Its RTP port (0: the stream is rejected or on hold).
    pub port: u16,
    /// The tags.
    pub tags: SessionTags,
    /// `U`'s timeout notification socket and tag, if given.
    pub notify: Option<(String, String)>,
}

/// What a command asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    /// `V`.
    Version,
    /// `VF <capability>`.
    VersionFeature(String),
    /// `U`: create or update from an offer.
    Update(Session),
    /// `L`: the answer.
    Lookup(Session),
    /// `D`.
    Delete {
        /// The Call-ID.
        call_id: String,
        /// The tags.
        tags: SessionTags,
    },
    /// `Q`.
    Query {
        /// The Call-ID.
        call_id: String,
        /// The tags.
        tags: SessionTags,
        /// Counter names asked for (none: the default five numbers).
        counters: Vec<String>,
    },
    /// `I`.
    Info,
    /// A command RTPProxy knows that this crate does not type.
    Other {
        /// Its letter, upper case.
        letter: char,
        /// Its arguments after the command word.
        args: Vec<String>,
    },
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The cookie the reply must start with.
    pub cookie: String,
    /// The modifier letters.
    pub modifiers: Modifiers,
    /// The command.
    pub kind: CommandKind,
}

/// Argument counts RTPProxy accepts, the command word included.
fn arity(letter: char) -> Option<(usize, usize, &'static str)> {
    Some(match letter {
        'U' => (5, 8, "5 to 8"),
        'L' => (5, 6, "5 or 6"),
        'D' | 'R' | 'S' | 'N' => (3, 4, "3 or 4"),
        'Q' => (3, 4 + 16, "3 to 20"),
        'P' => (5, 6, "5 or 6"),
        'C' => (4, 5, "4 or 5"),
        'V' | 'I' | 'X' => (1, 1, "1"),
        'G' => (1, 64, "1 to 64"),
        _ => return None,
    })
}

impl Command {
    /// Reads one command datagram.
    pub fn parse(datagram: &[u8]) -> Result<Command, ParseError> {
        let text = std::str::from_utf8(datagram);
        let Ok(text) = text else {
            // A cookie may still be readable (the bytes before the first space).
            let cookie = datagram
                .split(|b| b.is_ascii_whitespace())
                .find(|t| !t.is_empty())
                .and_then(|t| std::str::from_utf8(t).ok())
                .map(str::to_owned);
            return Err(ParseError {
                cookie,
                kind: ParseErrorKind::NotText,
            });
        };
        let mut words = text.split_ascii_whitespace();
        let Some(cookie) = words.next() else {
            return Err(ParseError {
                cookie: None,
                kind: ParseErrorKind::NoCommand,
            });
        };
        let fail = |kind| ParseError {
            cookie: Some(cookie.to_owned()),
            kind,
        };
        let args: Vec<&str> = words.collect();
        let Some(word) = args.first() else {
            return Err(fail(ParseErrorKind::NoCommand));
        };
        if args.contains(&"&&") {
            return Err(fail(ParseErrorKind::Subcommand));
        }
        let mut chars = word.chars();
        let letter = chars.next().unwrap_or(' ').to_ascii_uppercase();
        let mut rest = chars.as_str();
        // `VF` is its own command.
        let feature = letter == 'V' && rest.starts_with(['F', 'f']);
        if feature {
            rest = &rest[1..];
        }
        let (min, max, expected) = if feature {
            (2, 2, "2")
        } else {
            arity(letter).ok_or_else(|| fail(ParseErrorKind::UnknownCommand((*word).to_owned())))?
        };
        if args.len() < min || args.len() > max || (letter == 'U' && args.len() == 7) {
            return Err(fail(ParseErrorKind::ArgumentCount {
                command: letter,
                given: args.len(),
                expected,
            }));
        }
        if matches!(letter, 'V' | 'X' | 'S') && !rest.is_empty() {
            return Err(fail(ParseErrorKind::ModifiersNotAllowed(letter)));
        }
        let modifiers = Modifiers::parse(letter, rest).map_err(fail)?;
        let arg = |i: usize| args.get(i).copied().unwrap_or("");
        let tags = |from: usize| -> Result<SessionTags, ParseError> {
            Ok(SessionTags {
                from: Tag::parse(arg(from)).map_err(fail)?,
                to: match args.get(from + 1) {
                    Some(t) => Some(Tag::parse(t).map_err(fail)?),
                    None => None,
                },
            })
        };
        let kind = match letter {
            'V' if feature => CommandKind::VersionFeature(arg(1).to_owned()),
            'V' => CommandKind::Version,
            'I' => CommandKind::Info,
            'U' | 'L' => {
                let address = arg(2)
                    .parse::<IpAddr>()
                    .map_err(|_| fail(ParseErrorKind::BadAddress(arg(2).to_owned())))?;
                let port = arg(3)
                    .parse::<u16>()
                    .map_err(|_| fail(ParseErrorKind::BadPort(arg(3).to_owned())))?;
                let session = Session {
                    call_id: arg(1).to_owned(),
                    address,
                    port,
                    tags: SessionTags {
                        from: Tag::parse(arg(4)).map_err(fail)?,
                        to: match args.get(5) {
                            Some(t) => Some(Tag::parse(t).map_err(fail)?),
                            None => None,
                        },
                    },
                    notify: (args.len() == 8).then(|| (arg(6).to_owned(), arg(7).to_owned())),
                };
                if letter == 'U' {
                    CommandKind::Update(session)
                } else {
                    CommandKind::Lookup(session)
                }
            }
            'D' => CommandKind::Delete {
                call_id: arg(1).to_owned(),
                tags: tags(2)?,
            },
            'Q' => CommandKind::Query {
                call_id: arg(1).to_owned(),
                tags: SessionTags {
                    from: Tag::parse(arg(2)).map_err(fail)?,
                    to: match args.get(3) {
                        Some(t) => Some(Tag::parse(t).map_err(fail)?),
                        None => None,
                    },
                },
                counters: args.iter().skip(4).map(|s| (*s).to_owned()).collect(),
            },
            _ => CommandKind::Other {
                letter,
                args: args.iter().skip(1).map(|s| (*s).to_owned()).collect(),
            },
        };
        Ok(Command {
            cookie: cookie.to_owned(),
            modifiers,
            kind,
        })
    }

    /// The command's letter(s): `V`, `VF`, `U`, `L`, `D`, `Q`, `I`, or the other's letter.
    pub fn name(&self) -> String {
        match &self.kind {
            CommandKind::Version => "V".into(),
            CommandKind::VersionFeature(_) => "VF".into(),
            CommandKind::Update(_) => "U".into(),
            CommandKind::Lookup(_) => "L".into(),
            CommandKind::Delete { .. } => "D".into(),
            CommandKind::Query { .. } => "Q".into(),
            CommandKind::Info => "I".into(),
            CommandKind::Other { letter, .. } => letter.to_string(),
        }
    }

    /// The Call-ID the command acts on, if any.
    pub fn call_id(&self) -> Option<&str> {
        match &self.kind {
            CommandKind::Update(s) | CommandKind::Lookup(s) => Some(&s.call_id),
            CommandKind::Delete { call_id, .. } | CommandKind::Query { call_id, .. } => {
                Some(call_id)
            }
            _ => None,
        }
    }

    /// The datagram (a client's encoding; [`Command::parse`] reads it back).
    pub fn encode(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.cookie)?;
        let tags = |f: &mut fmt::Formatter<'_>, t: &SessionTags| -> fmt::Result {
            write!(f, " {}", t.from)?;
            if let Some(to) = &t.to {
                write!(f, " {to}")?;
            }
            Ok(())
        };
        match &self.kind {
            CommandKind::Version => f.write_str("V"),
            CommandKind::VersionFeature(cap) => write!(f, "VF {cap}"),
            CommandKind::Update(s) | CommandKind::Lookup(s) => {
                let letter = if matches!(self.kind, CommandKind::Update(_)) {
                    'U'
                } else {
                    'L'
                };
                write!(
                    f,
                    "{letter}{} {} {} {}",
                    self.modifiers, s.call_id, s.address, s.port
                )?;
                tags(f, &s.tags)?;
                if let Some((socket, tag)) = &s.notify {
                    write!(f, " {socket} {tag}")?;
                }
                Ok(())
            }
            CommandKind::Delete { call_id, tags: t } => {
                write!(f, "D{} {call_id}", self.modifiers)?;
                tags(f, t)
            }
            CommandKind::Query {
                call_id,
                tags: t,
                counters,
            } => {
                write!(f, "Q{} {call_id}", self.modifiers)?;
                tags(f, t)?;
                for c in counters {
                    write!(f, " {c}")?;
                }
                Ok(())
            }
            CommandKind::Info => write!(f, "I{}", self.modifiers),
            CommandKind::Other { letter, args } => {
                write!(f, "{letter}{}", self.modifiers)?;
                for a in args {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::modifier::Modifier;

    fn parse(s: &str) -> Command {
        Command::parse(s.as_bytes()).unwrap()
    }

    fn code(s: &str) -> (Option<String>, ErrorCode) {
        let e = Command::parse(s.as_bytes()).unwrap_err();
        (e.cookie.clone(), e.code())
    }

    #[test]
    fn kamailio_offer() {
        let c = parse("123_4 Uc0,8,101 abc@host;z9hG4bK1 192.0.2.10 4000 ft;1\n");
        assert_eq!(c.cookie, "123_4");
        assert_eq!(c.modifiers.0, vec![Modifier::Codecs(vec![0, 8, 101])]);
        let CommandKind::Update(s) = &c.kind else {
            panic!("{c:?}")
        };
        assert_eq!(s.call_id, "abc@host;z9hG4bK1");
        assert_eq!(s.address, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(s.port, 4000);
        assert_eq!(
            s.tags.from,
            Tag {
                tag: "ft".into(),
                medianum: Some(1)
            }
        );
        assert_eq!(s.tags.to, None);
        assert_eq!(s.tags.medianum(), Some(1));
        assert_eq!(parse(&c.to_string()), c);
    }

    #[test]
    fn answer_delete_query_version_info() {
        let c = parse("c L cid 2001:db8::5 5000 tt;2 ft;2");
        assert!(
            matches!(&c.kind, CommandKind::Lookup(s) if s.address.is_ipv6() && s.tags.to.is_some())
        );
        assert_eq!(parse(&c.to_string()), c);
        let c = parse("c D cid ft");
        assert!(matches!(&c.kind, CommandKind::Delete { tags, .. } if tags.to.is_none()));
        let c = parse("c Qv cid ft tt ttl nrelayed");
        assert!(matches!(&c.kind, CommandKind::Query { counters, .. } if counters.len() == 2));
        assert!(c.modifiers.contains(&Modifier::Verbose));
        assert_eq!(parse(&c.to_string()), c);
        assert_eq!(parse("c V").kind, CommandKind::Version);
        assert_eq!(
            parse("c VF 20050322").kind,
            CommandKind::VersionFeature("20050322".into())
        );
        assert_eq!(parse("c vf 20050322").to_string(), "c VF 20050322");
        assert_eq!(parse("c Ib").modifiers.0, vec![Modifier::Brief]);
        assert!(matches!(
            parse("c X").kind,
            CommandKind::Other { letter: 'X', .. }
        ));
        let u = parse("c U cid 1.2.3.4 0 ft tt /tmp/sock tag%20x");
        assert!(matches!(&u.kind, CommandKind::Update(s) if s.notify.is_some() && s.port == 0));
    }

    #[test]
    fn errors_carry_rtpproxys_codes() {
        assert_eq!(
            code("c FOO"),
            (Some("c".into()), ErrorCode::UNKNOWN_COMMAND)
        );
        assert_eq!(code("c U"), (Some("c".into()), ErrorCode::ARGUMENT_COUNT));
        assert_eq!(code("c"), (Some("c".into()), ErrorCode::ARGUMENT_COUNT));
        assert_eq!(code("   ").0, None);
        assert_eq!(code("c Vx").1, ErrorCode::MODIFIERS_NOT_ALLOWED);
        assert_eq!(
            code("c U cid 1.2.3.4 4000 ft && Q cid ft").1,
            ErrorCode::SUBCOMMAND
        );
        assert_eq!(code("c U cid nowhere 4000 ft").1, ErrorCode::BAD_ADDRESS);
        assert_eq!(code("c U cid 1.2.3.4 70000 ft").1, ErrorCode::BAD_ADDRESS);
        assert_eq!(code("c U cid 1.2.3.4 4000 ft;x").1, ErrorCode::BAD_ADDRESS);
        assert_eq!(code("c U cid 1.2.3.4 4000 ;1").1, ErrorCode::BAD_ADDRESS);
        assert_eq!(code("c UZ0 cid 1.2.3.4 4000 ft").1, ErrorCode::BAD_PTIME);
        assert_eq!(
            code("c U cid 1.2.3.4 4000 ft tt sock").1,
            ErrorCode::ARGUMENT_COUNT
        );
        assert_eq!(
            code("c L cid 1.2.3.4 4000 ft tt extra").1,
            ErrorCode::ARGUMENT_COUNT
        );
        let e = Command::parse(b"ck U \xff\xfe").unwrap_err();
        assert_eq!(e.cookie.as_deref(), Some("ck"));
    }
}
