//! Transaction keys and matching: [RFC 3261 §17.1.3](https://www.rfc-editor.org/rfc/rfc3261#section-17.1.3)
//! (responses to client transactions), [§17.2.3](https://www.rfc-editor.org/rfc/rfc3261#section-17.2.3)
//! (requests to server transactions, with the RFC 2543 fallback) and
//! [§9.2](https://www.rfc-editor.org/rfc/rfc3261#section-9.2) (the INVITE a CANCEL cancels).
//!
//! Keys borrow plain field slices taken from a message by the caller; nothing here parses.
//! A key hashes to 64 bits ([`ClientKey::hash_into`], [`ServerKey::hash_into`]) and the
//! table compares the full fields on a hash hit. Comparisons follow RFC 3261 §7.3.1 and §20:
//! the branch, the sent-by host and the tags are tokens and compare ASCII case-insensitively;
//! methods (§7.1) and the Call-ID (§8.1.1.4) compare byte for byte; for the RFC 2543 fallback
//! the Request-URI and the top Via compare byte for byte (a retransmission repeats them).

use std::hash::Hasher;

/// The RFC 3261 magic cookie that starts every compliant branch (§8.1.1.7).
pub const MAGIC_COOKIE: &[u8] = b"z9hG4bK";

const INVITE: &[u8] = b"INVITE";
const ACK: &[u8] = b"ACK";

/// The fields of a request that server transaction matching needs, as the caller found
/// them in the message. Absent tags are empty slices.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFields<'a> {
    /// The method from the request line, e.g. `b"INVITE"`.
    pub method: &'a [u8],
    /// The `branch` parameter of the top Via, if present.
    pub branch: Option<&'a [u8]>,
    /// The sent-by (`host[:port]`) of the top Via.
    pub sent_by: &'a [u8],
    /// The Request-URI (RFC 2543 fallback only).
    pub request_uri: &'a [u8],
    /// The Call-ID (RFC 2543 fallback only).
    pub call_id: &'a [u8],
    /// The From tag (RFC 2543 fallback only).
    pub from_tag: &'a [u8],
    /// The To tag (RFC 2543 fallback only).
    pub to_tag: &'a [u8],
    /// The CSeq sequence number (RFC 2543 fallback only).
    pub cseq_number: u32,
    /// The whole top Via header field value (RFC 2543 fallback only).
    pub top_via: &'a [u8],
}

/// The key of a client transaction (§17.1.3): the branch of the top Via the transaction
/// sent, and the CSeq method (a CANCEL shares its INVITE's branch).
#[derive(Debug, Clone, Copy)]
pub struct ClientKey<'a> {
    branch: &'a [u8],
    method: &'a [u8],
}

impl<'a> ClientKey<'a> {
    /// The key of the transaction that sends a request with this top Via branch and method;
    /// for a response, the top Via branch and the CSeq method.
    pub fn new(branch: &'a [u8], method: &'a [u8]) -> Self {
        Self { branch, method }
    }

    /// The branch.
    pub fn branch(&self) -> &'a [u8] {
        self.branch
    }

    /// The method.
    pub fn method(&self) -> &'a [u8] {
        self.method
    }

    /// Whether two client keys match: branch case-insensitively, method exactly.
    pub fn matches(&self, other: &ClientKey<'_>) -> bool {
        self.branch.eq_ignore_ascii_case(other.branch) && self.method == other.method
    }

    /// Feeds the key to a hasher consistently with [`ClientKey::matches`].
    pub fn hash_into<H: Hasher>(&self, state: &mut H) {
        let mut words = Words::new(state);
        words.word(1);
        words.lowercase(self.branch);
        words.exact(self.method);
    }
}

/// How a server transaction is identified (§17.2.3).
#[derive(Debug, Clone, Copy)]
pub enum ServerMatch<'a> {
    /// The top Via branch starts with the magic cookie: branch and sent-by.
    Rfc3261 {
        /// The top Via branch.
        branch: &'a [u8],
        /// The top Via sent-by.
        sent_by: &'a [u8],
    },
    /// The RFC 2543 fallback: no magic cookie.
    Rfc2543 {
        /// The Request-URI.
        request_uri: &'a [u8],
        /// The Call-ID.
        call_id: &'a [u8],
        /// The From tag.
        from_tag: &'a [u8],
        /// The To tag (for an ACK: the To tag of the response it acknowledges).
        to_tag: &'a [u8],
        /// The CSeq number.
        cseq_number: u32,
        /// The top Via field value.
        top_via: &'a [u8],
    },
}

/// The key of a server transaction (§17.2.3), built from a request with
/// [`ServerKey::from_request`].
///
/// An ACK's key carries the method INVITE so that it finds the INVITE transaction it
/// acknowledges; a CANCEL's key finds the CANCEL's own transaction, and
/// [`ServerKey::cancelled_invite`] gives the key of the INVITE it cancels (§9.2).
#[derive(Debug, Clone, Copy)]
pub struct ServerKey<'a> {
    matching: ServerMatch<'a>,
    method: &'a [u8],
    ack: bool,
}

impl<'a> ServerKey<'a> {
    /// The key that a request with these fields matches: by branch and sent-by when the
    /// branch carries the magic cookie, else by the RFC 2543 fields.
    pub fn from_request(fields: &RequestFields<'a>) -> Self {
        let ack = fields.method == ACK;
        let method = if ack { INVITE } else { fields.method };
        let matching = match fields.branch {
            Some(branch) if branch.starts_with(MAGIC_COOKIE) => ServerMatch::Rfc3261 {
                branch,
                sent_by: fields.sent_by,
            },
            _ => ServerMatch::Rfc2543 {
                request_uri: fields.request_uri,
                call_id: fields.call_id,
                from_tag: fields.from_tag,
                to_tag: fields.to_tag,
                cseq_number: fields.cseq_number,
                top_via: fields.top_via,
            },
        };
        Self {
            matching,
            method,
            ack,
        }
    }

    /// For a CANCEL's key: the key of the INVITE transaction it cancels (§9.2: same
    /// matching, method INVITE).
    pub fn cancelled_invite(&self) -> Self {
        Self {
            matching: self.matching,
            method: INVITE,
            ack: false,
        }
    }

    /// How the key matches (RFC 3261 branch or RFC 2543 fields).
    pub fn matching(&self) -> &ServerMatch<'a> {
        &self.matching
    }

    /// The method of the transaction this key finds (INVITE for an ACK).
    pub fn method(&self) -> &'a [u8] {
        self.method
    }

    /// Whether the key was built from an ACK.
    pub fn is_ack(&self) -> bool {
        self.ack
    }

    /// Whether the key matches by RFC 3261 branch (magic cookie present).
    pub fn is_rfc3261(&self) -> bool {
        matches!(self.matching, ServerMatch::Rfc3261 { .. })
    }

    /// Feeds the key to a hasher consistently with matching. The To tag is left out, so an
    /// ACK (whose To tag is the response's) hashes like its INVITE.
    pub fn hash_into<H: Hasher>(&self, state: &mut H) {
        let mut words = Words::new(state);
        match self.matching {
            ServerMatch::Rfc3261 { branch, sent_by } => {
                words.word(2);
                words.lowercase(branch);
                words.lowercase(sent_by);
            }
            ServerMatch::Rfc2543 {
                request_uri,
                call_id,
                from_tag,
                to_tag: _,
                cseq_number,
                top_via,
            } => {
                words.word(3);
                words.exact(request_uri);
                words.exact(call_id);
                words.lowercase(from_tag);
                words.word(u64::from(cseq_number));
                words.exact(top_via);
            }
        }
        words.exact(self.method);
    }

    /// Whether this key (from a received request) finds the transaction created by
    /// `created` — the key of the request that created it, never an ACK's — whose final
    /// response carried `response_to_tag` (RFC 2543 ACK matching only).
    pub fn matches(&self, created: &ServerKey<'_>, response_to_tag: Option<&[u8]>) -> bool {
        if self.method != created.method {
            return false;
        }
        match (self.matching, created.matching) {
            (
                ServerMatch::Rfc3261 { branch, sent_by },
                ServerMatch::Rfc3261 {
                    branch: b,
                    sent_by: s,
                },
            ) => branch.eq_ignore_ascii_case(b) && sent_by.eq_ignore_ascii_case(s),
            (
                ServerMatch::Rfc2543 {
                    request_uri,
                    call_id,
                    from_tag,
                    to_tag,
                    cseq_number,
                    top_via,
                },
                ServerMatch::Rfc2543 {
                    request_uri: u,
                    call_id: c,
                    from_tag: f,
                    to_tag: t,
                    cseq_number: n,
                    top_via: v,
                },
            ) => {
                // An ACK's To tag is the one the server put in its response (§17.2.3).
                let expected_to_tag = if self.ack {
                    response_to_tag.unwrap_or(t)
                } else {
                    t
                };
                request_uri == u
                    && call_id == c
                    && from_tag.eq_ignore_ascii_case(f)
                    && to_tag.eq_ignore_ascii_case(expected_to_tag)
                    && cseq_number == n
                    && top_via == v
            }
            _ => false,
        }
    }
}

/// Feeds a hasher whole 64-bit words through a small buffer, so that a key costs one or two
/// `Hasher::write` calls whatever its number of fields.
struct Words<'a, H: Hasher> {
    state: &'a mut H,
    buf: [u8; 64],
    len: usize,
}

impl<'a, H: Hasher> Words<'a, H> {
    fn new(state: &'a mut H) -> Self {
        Self {
            state,
            buf: [0; 64],
            len: 0,
        }
    }

    fn word(&mut self, w: u64) {
        if self.len + 8 > self.buf.len() {
            self.flush();
        }
        if let Some(dst) = self.buf.get_mut(self.len..self.len + 8) {
            dst.copy_from_slice(&w.to_le_bytes());
            self.len += 8;
        }
    }

    fn flush(&mut self) {
        self.state
            .write(self.buf.get(..self.len).unwrap_or_default());
        self.len = 0;
    }

    /// A field byte for byte, with its length (so field boundaries are part of the hash).
    fn exact(&mut self, bytes: &[u8]) {
        self.field(bytes, 0);
    }

    /// A field case-folded, with its length. Setting bit 0x20 of every byte maps each
    /// ASCII capital to its small letter, so fields equal ignoring ASCII case hash the same
    /// (a few other bytes fold together too, which only costs a comparison).
    fn lowercase(&mut self, bytes: &[u8]) {
        self.field(bytes, 0x2020_2020_2020_2020);
    }

    /// The length, then the bytes eight at a time (ORed with `fold`), the last word
    /// zero-padded.
    fn field(&mut self, bytes: &[u8], fold: u64) {
        self.word(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(w) | fold);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut tail = [0u8; 8];
            if let Some(dst) = tail.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            self.word(u64::from_le_bytes(tail) | fold);
        }
    }
}

impl<H: Hasher> Drop for Words<'_, H> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A key stored by the table: every field in one allocation.
#[derive(Debug)]
pub(crate) struct StoredKey {
    buf: Box<[u8]>,
    ends: [usize; 6],
    kind: StoredKind,
    cseq_number: u32,
    ack: bool,
    response_to_tag: Option<Box<[u8]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredKind {
    Client,
    Rfc3261,
    Rfc2543,
}

impl StoredKey {
    fn pack(kind: StoredKind, fields: &[&[u8]], cseq_number: u32, ack: bool) -> Self {
        let total = fields.iter().map(|f| f.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut ends = [0usize; 6];
        for (end, field) in ends.iter_mut().zip(fields) {
            buf.extend_from_slice(field);
            *end = buf.len();
        }
        Self {
            buf: buf.into_boxed_slice(),
            ends,
            kind,
            cseq_number,
            ack,
            response_to_tag: None,
        }
    }

    /// Stores a client key.
    pub(crate) fn client(key: &ClientKey<'_>) -> Self {
        Self::pack(StoredKind::Client, &[key.branch, key.method], 0, false)
    }

    /// Stores a server key.
    pub(crate) fn server(key: &ServerKey<'_>) -> Self {
        match key.matching {
            ServerMatch::Rfc3261 { branch, sent_by } => Self::pack(
                StoredKind::Rfc3261,
                &[branch, sent_by, key.method],
                0,
                key.ack,
            ),
            ServerMatch::Rfc2543 {
                request_uri,
                call_id,
                from_tag,
                to_tag,
                cseq_number,
                top_via,
            } => Self::pack(
                StoredKind::Rfc2543,
                &[request_uri, call_id, from_tag, to_tag, top_via, key.method],
                cseq_number,
                key.ack,
            ),
        }
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(prev) => self.ends.get(prev).copied().unwrap_or(0),
            None => 0,
        };
        let end = self.ends.get(i).copied().unwrap_or(0);
        self.buf.get(start..end).unwrap_or_default()
    }

    /// The stored client key, if this is one.
    pub(crate) fn as_client(&self) -> Option<ClientKey<'_>> {
        (self.kind == StoredKind::Client).then(|| ClientKey::new(self.field(0), self.field(1)))
    }

    /// The stored server key, if this is one.
    pub(crate) fn as_server(&self) -> Option<ServerKey<'_>> {
        let (matching, method) = match self.kind {
            StoredKind::Client => return None,
            StoredKind::Rfc3261 => (
                ServerMatch::Rfc3261 {
                    branch: self.field(0),
                    sent_by: self.field(1),
                },
                self.field(2),
            ),
            StoredKind::Rfc2543 => (
                ServerMatch::Rfc2543 {
                    request_uri: self.field(0),
                    call_id: self.field(1),
                    from_tag: self.field(2),
                    to_tag: self.field(3),
                    cseq_number: self.cseq_number,
                    top_via: self.field(4),
                },
                self.field(5),
            ),
        };
        Some(ServerKey {
            matching,
            method,
            ack: self.ack,
        })
    }

    /// Records the To tag of the final response (RFC 2543 ACK matching).
    pub(crate) fn set_response_to_tag(&mut self, tag: &[u8]) {
        self.response_to_tag = Some(tag.into());
    }

    /// The To tag of the final response, if recorded.
    pub(crate) fn response_to_tag(&self) -> Option<&[u8]> {
        self.response_to_tag.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, RandomState};

    fn hash_server(s: &RandomState, key: &ServerKey<'_>) -> u64 {
        let mut h = s.build_hasher();
        key.hash_into(&mut h);
        h.finish()
    }

    fn hash_client(s: &RandomState, key: &ClientKey<'_>) -> u64 {
        let mut h = s.build_hasher();
        key.hash_into(&mut h);
        h.finish()
    }

    fn invite_3261() -> RequestFields<'static> {
        RequestFields {
            method: b"INVITE",
            branch: Some(b"z9hG4bK776asdhds"),
            sent_by: b"pc33.atlanta.com",
            request_uri: b"sip:bob@biloxi.com",
            call_id: b"a84b4c76e66710@pc33.atlanta.com",
            from_tag: b"1928301774",
            to_tag: b"",
            cseq_number: 314159,
            top_via: b"SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
        }
    }

    fn invite_2543() -> RequestFields<'static> {
        RequestFields {
            branch: None,
            top_via: b"SIP/2.0/UDP pc33.atlanta.com",
            ..invite_3261()
        }
    }

    fn matches(received: &RequestFields<'_>, created: &RequestFields<'_>) -> bool {
        let s = RandomState::new();
        let r = ServerKey::from_request(received);
        let c = ServerKey::from_request(created);
        let stored = StoredKey::server(&c);
        let hit = stored
            .as_server()
            .is_some_and(|k| r.matches(&k, stored.response_to_tag()));
        if hit {
            assert_eq!(hash_server(&s, &r), hash_server(&s, &c), "hash must agree");
        }
        hit
    }

    #[test]
    fn client_key_matches_branch_case_insensitively_and_method_exactly() {
        let s = RandomState::new();
        let a = ClientKey::new(b"z9hG4bKabc", b"INVITE");
        let b = ClientKey::new(b"Z9HG4BKABC", b"INVITE");
        assert!(a.matches(&b));
        assert_eq!(hash_client(&s, &a), hash_client(&s, &b));
        // A CANCEL shares the branch but not the method.
        assert!(!a.matches(&ClientKey::new(b"z9hG4bKabc", b"CANCEL")));
        assert!(!a.matches(&ClientKey::new(b"z9hG4bKabd", b"INVITE")));
        let stored = StoredKey::client(&a);
        assert!(stored.as_client().is_some_and(|k| k.matches(&a)));
        assert!(stored.as_server().is_none());
    }

    #[test]
    fn rfc3261_retransmission_matches_by_branch_and_sent_by() {
        let created = invite_3261();
        assert!(matches(&created, &created));
        // Other headers may differ; branch and sent-by decide.
        let retrans = RequestFields {
            request_uri: b"sip:other@example.com",
            sent_by: b"PC33.Atlanta.COM",
            ..created
        };
        assert!(ServerKey::from_request(&retrans).is_rfc3261());
        assert!(matches(&retrans, &created));
        let other_host = RequestFields {
            sent_by: b"pc34.atlanta.com",
            ..created
        };
        assert!(!matches(&other_host, &created));
        let other_branch = RequestFields {
            branch: Some(b"z9hG4bK776asdhdt"),
            ..created
        };
        assert!(!matches(&other_branch, &created));
    }

    #[test]
    fn ack_matches_its_invite_and_cancel_its_own_transaction() {
        let invite = invite_3261();
        let ack = RequestFields {
            method: b"ACK",
            to_tag: b"a6c85cf",
            ..invite
        };
        assert!(ServerKey::from_request(&ack).is_ack());
        assert_eq!(ServerKey::from_request(&ack).method(), b"INVITE");
        assert!(matches(&ack, &invite));

        let cancel = RequestFields {
            method: b"CANCEL",
            ..invite
        };
        // The CANCEL does not match the INVITE transaction as a retransmission...
        assert!(!matches(&cancel, &invite));
        // ...it matches its own...
        assert!(matches(&cancel, &cancel));
        // ...and finds the INVITE it cancels (§9.2).
        let target = ServerKey::from_request(&cancel).cancelled_invite();
        let stored = StoredKey::server(&ServerKey::from_request(&invite));
        assert!(stored.as_server().is_some_and(|k| target.matches(&k, None)));
    }

    #[test]
    fn branch_without_magic_cookie_falls_back_to_rfc_2543() {
        let created = RequestFields {
            branch: Some(b"776asdhds"),
            ..invite_2543()
        };
        assert!(!ServerKey::from_request(&created).is_rfc3261());
        assert!(matches(&created, &created));
    }

    #[test]
    fn rfc2543_matches_on_every_field() {
        let created = invite_2543();
        assert!(matches(&created, &created));
        let cases: [RequestFields<'_>; 6] = [
            RequestFields {
                request_uri: b"sip:bob@biloxi.org",
                ..created
            },
            RequestFields {
                call_id: b"other",
                ..created
            },
            RequestFields {
                from_tag: b"x",
                ..created
            },
            RequestFields {
                to_tag: b"x",
                ..created
            },
            RequestFields {
                cseq_number: 314160,
                ..created
            },
            RequestFields {
                top_via: b"SIP/2.0/UDP pc34.atlanta.com",
                ..created
            },
        ];
        for case in &cases {
            assert!(!matches(case, &created), "{case:?}");
        }
        // Tags are tokens: case-insensitive.
        let lower = RequestFields {
            from_tag: b"abc",
            ..created
        };
        let upper = RequestFields {
            from_tag: b"ABC",
            ..created
        };
        assert!(matches(&upper, &lower));
    }

    #[test]
    fn rfc2543_ack_matches_by_the_response_to_tag() {
        let s = RandomState::new();
        let invite = invite_2543();
        let ack = RequestFields {
            method: b"ACK",
            to_tag: b"a6c85cf",
            ..invite
        };
        let created = ServerKey::from_request(&invite);
        let mut stored = StoredKey::server(&created);
        let ack_key = ServerKey::from_request(&ack);
        assert_eq!(hash_server(&s, &ack_key), hash_server(&s, &created));
        let stored_view = |st: &StoredKey| {
            st.as_server()
                .is_some_and(|k| ack_key.matches(&k, st.response_to_tag()))
        };
        // Before the response's To tag is known, the ACK's tag must equal the INVITE's.
        assert!(!stored_view(&stored));
        stored.set_response_to_tag(b"a6c85cf");
        assert!(stored_view(&stored));
        stored.set_response_to_tag(b"other");
        assert!(!stored_view(&stored));
        // CSeq method of an ACK is ACK, but its number must match the INVITE's.
        let wrong_number = RequestFields {
            cseq_number: 1,
            ..ack
        };
        stored.set_response_to_tag(b"a6c85cf");
        let k = ServerKey::from_request(&wrong_number);
        assert!(!stored
            .as_server()
            .is_some_and(|c| k.matches(&c, stored.response_to_tag())));
    }

    #[test]
    fn rfc2543_cancel_finds_its_invite() {
        let invite = invite_2543();
        let cancel = RequestFields {
            method: b"CANCEL",
            ..invite
        };
        assert!(!matches(&cancel, &invite));
        let target = ServerKey::from_request(&cancel).cancelled_invite();
        let stored = StoredKey::server(&ServerKey::from_request(&invite));
        assert!(stored.as_server().is_some_and(|k| target.matches(&k, None)));
    }

    #[test]
    fn field_boundaries_are_hashed() {
        let s = RandomState::new();
        let a = ClientKey::new(b"z9hG4bKab", b"CINVITE");
        let b = ClientKey::new(b"z9hG4bKabC", b"INVITE");
        assert_ne!(hash_client(&s, &a), hash_client(&s, &b));
    }

    #[test]
    fn long_fields_hash_case_insensitively() {
        let s = RandomState::new();
        let lower = [b'a'; 200];
        let upper = [b'A'; 200];
        let a = ClientKey::new(&lower, b"BYE");
        let b = ClientKey::new(&upper, b"BYE");
        assert!(a.matches(&b));
        assert_eq!(hash_client(&s, &a), hash_client(&s, &b));
    }
}
