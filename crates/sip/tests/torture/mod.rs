//! The harness shared by the RFC 4475 and RFC 5118 torture tests: a table row per fixture,
//! what the RFC expects of it, and what a proxy does with it.
//!
//! Each fixture is one datagram as received, stored byte for byte in
//! `tests/fixtures/<rfc>/<name>.sip` (written by `tests/fixtures/generate.py`). A row says:
//!
//! * [`Expect::Valid`]: [`Message::parse`] and [`Message::validate`] accept it, the parsed
//!   message is the datagram byte for byte (and an unedited [`anchorage_sip::Editor`] gives the
//!   same bytes back), and the typed views the case is about return what the RFC says;
//! * [`Expect::Invalid`]: parse (or validate, which a proxy runs right after) rejects it with
//!   that reason and status, and the proxy either answers with that status or, when the
//!   request is too broken to answer, drops it;
//! * [`Expect::Semantic`]: it parses and validates, and a proxy must act on what it carries
//!   ([`ProxyAction`]); the row's check asserts the property the proxy acts on.
//!
//! What a proxy does with a datagram is what the crate documents in `lib.rs`: parse, then
//! validate; on an error, re-parse leniently and answer if [`Message::answerable`], else drop.

// Each test crate (rfc4475.rs, rfc5118.rs) uses part of this module.
#![allow(dead_code)]

use anchorage_sip::{Contact, Host, Message, NameAddr, SipUri, Uri, Via};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// What a proxy must do with a message (for later issues to drive the proxy with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyAction {
    /// Process and forward it as usual (push a Via, decrement or add Max-Forwards).
    Forward,
    /// Answer it statelessly with this status code.
    Reply(u16),
    /// Discard it without an answer.
    Drop,
}

/// Where a proxy finds the error: [`Message::parse`] or [`Message::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `Message::parse` fails.
    Parse,
    /// `Message::parse` succeeds, `Message::validate` fails.
    Validate,
}

/// What the RFC expects of a fixture, and what we assert.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Well formed: parses, validates, round-trips; the function checks the typed views.
    Valid(fn(&Message)),
    /// Rejected at `stage` with a `ParseError` whose `reason()` contains `reason` and whose
    /// `status()` is `status`; the proxy then does `action` (`Reply(status)` or `Drop`).
    Invalid {
        stage: Stage,
        reason: &'static str,
        status: u16,
        action: ProxyAction,
    },
    /// Parses and validates, but a proxy must do `action`; `check` asserts what it acts on.
    Semantic {
        action: ProxyAction,
        check: fn(&Message),
    },
}

/// One row of the table: one fixture file.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The RFC's name for the message, the fixture's file name without `.sip`.
    pub name: &'static str,
    /// The RFC section, e.g. `3.1.1.1`.
    pub section: &'static str,
    /// The section's title.
    pub title: &'static str,
    /// What the RFC expects.
    pub expect: Expect,
}

/// `tests/fixtures/<dir>`.
pub fn fixture_dir(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

/// The bytes of `tests/fixtures/<dir>/<name>.sip`.
pub fn fixture(dir: &str, name: &str) -> Bytes {
    let path = fixture_dir(dir).join(format!("{name}.sip"));
    match std::fs::read(&path) {
        Ok(b) => Bytes::from(b),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// Runs every case whose section starts with `prefix`, reporting all failures at once.
/// Returns how many cases ran.
pub fn run_section(dir: &str, cases: &[Case], prefix: &str) -> usize {
    let mut failed = Vec::new();
    let mut ran = 0;
    for case in cases.iter().filter(|c| c.section.starts_with(prefix)) {
        ran += 1;
        if catch_unwind(AssertUnwindSafe(|| run(dir, case))).is_err() {
            failed.push(format!("{} (§{} {})", case.name, case.section, case.title));
        }
    }
    assert!(failed.is_empty(), "failed: {failed:#?}");
    ran
}

/// Checks one fixture against its row.
pub fn run(dir: &str, case: &Case) {
    let input = fixture(dir, case.name);
    let name = case.name;
    match case.expect {
        Expect::Valid(check) => {
            let m = accept(name, &input);
            check(&m);
        }
        Expect::Semantic { action, check } => {
            let m = accept(name, &input);
            check(&m);
            act(name, &m, action);
        }
        Expect::Invalid {
            stage,
            reason,
            status,
            action,
        } => {
            let err = match (stage, Message::parse(input.clone())) {
                (Stage::Parse, Err(e)) => e,
                (Stage::Parse, Ok(_)) => panic!("{name}: parse accepted it"),
                (Stage::Validate, Err(e)) => panic!("{name}: parse rejected it: {e}"),
                (Stage::Validate, Ok(m)) => {
                    assert_identity(name, &m, &input);
                    match m.validate() {
                        Err(e) => e,
                        Ok(()) => panic!("{name}: validate accepted it"),
                    }
                }
            };
            assert!(
                err.reason().contains(reason),
                "{name}: reason {:?} does not contain {reason:?}",
                err.reason()
            );
            assert_eq!(err.status(), status, "{name}: status of {err}");
            let answerable = Message::parse_lenient(input)
                .ok()
                .filter(|m| m.answerable());
            match (action, answerable) {
                (ProxyAction::Reply(code), Some(req)) => {
                    assert_eq!(code, status, "{name}: the reply carries the error's status");
                    let reply = req
                        .response(err.status(), &err.reason())
                        .to_tag("t0rture")
                        .build()
                        .unwrap_or_else(|e| panic!("{name}: cannot build the reply: {e}"));
                    assert_eq!(reply.status(), Some(code), "{name}");
                    assert_eq!(
                        reply.reason_phrase(),
                        Some(err.reason().as_bytes()),
                        "{name}"
                    );
                }
                (ProxyAction::Reply(_), None) => panic!("{name}: not answerable"),
                (ProxyAction::Drop, None) => {}
                (ProxyAction::Drop, Some(_)) => panic!("{name}: answerable, but the row drops it"),
                (ProxyAction::Forward, _) => panic!("{name}: an invalid message is not forwarded"),
            }
        }
    }
}

/// Parse and validate succeed, and the message is the datagram byte for byte.
fn accept(name: &str, input: &Bytes) -> Message {
    let m = Message::parse(input.clone()).unwrap_or_else(|e| panic!("{name}: rejected: {e}"));
    assert_identity(name, &m, input);
    if let Err(e) = m.validate() {
        panic!("{name}: validate rejected it: {e}");
    }
    m
}

/// The parsed message is the datagram (RFC 3261 §18.3: octets past Content-Length are not
/// part of it), and an unedited editor writes it back unchanged.
fn assert_identity(name: &str, m: &Message, input: &[u8]) {
    let n = m.as_bytes().len();
    assert_eq!(m.as_bytes(), &input[..n], "{name}: parsed bytes");
    if n < input.len() {
        let declared = m.content_length();
        assert_eq!(
            declared,
            Some(m.body().len()),
            "{name}: bytes dropped without a Content-Length that ends the message"
        );
    }
    assert_eq!(&m.edit().finish()[..], m.as_bytes(), "{name}: serialized");
}

/// Does what the row says a proxy does, as far as this crate can: build the answer, or the
/// forwarded copy.
fn act(name: &str, m: &Message, action: ProxyAction) {
    match action {
        ProxyAction::Reply(code) => {
            assert!(m.answerable(), "{name}: not answerable");
            let reply = m
                .response(code, "Torture")
                .to_tag("t0rture")
                .build()
                .unwrap_or_else(|e| panic!("{name}: cannot build the {code}: {e}"));
            assert_eq!(reply.status(), Some(code), "{name}");
        }
        ProxyAction::Forward => {
            assert!(m.is_request(), "{name}: only requests are forwarded here");
            let hops = match m.max_forwards() {
                Ok(Some(n)) => {
                    assert!(n > 0, "{name}: Max-Forwards 0 is not forwarded");
                    n - 1
                }
                Ok(None) => 70,
                Err(e) => panic!("{name}: {e}"),
            };
            let mut edit = m.edit();
            edit.push_via(b"SIP/2.0/UDP 192.0.2.254;branch=z9hG4bKt0rture")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            edit.set_max_forwards(hops);
            let out = edit
                .finish_message()
                .unwrap_or_else(|e| panic!("{name}: forwarded copy does not parse: {e}"));
            out.validate()
                .unwrap_or_else(|e| panic!("{name}: forwarded copy does not validate: {e}"));
            assert_eq!(out.top_via().unwrap().branch(), Some("z9hG4bKt0rture"));
            assert_eq!(out.max_forwards().unwrap(), Some(hops));
            assert_eq!(out.body(), m.body(), "{name}: body forwarded unchanged");
        }
        ProxyAction::Drop => {
            assert!(!m.answerable(), "{name}: answerable, but the row drops it");
        }
    }
}

/// Every file in `tests/fixtures/<dir>` has a row and every row has a file.
pub fn assert_table_covers_dir(dir: &str, cases: &[Case]) {
    let mut files = BTreeSet::new();
    let entries = std::fs::read_dir(fixture_dir(dir))
        .unwrap_or_else(|e| panic!("{}: {e}", fixture_dir(dir).display()));
    for entry in entries {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let stem = file
            .strip_suffix(".sip")
            .unwrap_or_else(|| panic!("{dir}/{file}: fixtures end in .sip"));
        files.insert(stem.to_string());
    }
    let mut rows = BTreeSet::new();
    for c in cases {
        assert!(rows.insert(c.name.to_string()), "{} listed twice", c.name);
    }
    let unlisted: Vec<_> = files.difference(&rows).collect();
    let missing: Vec<_> = rows.difference(&files).collect();
    assert!(
        unlisted.is_empty(),
        "fixtures without an expectation: {unlisted:?}"
    );
    assert!(missing.is_empty(), "rows without a fixture: {missing:?}");
}

/// The SIP URI inside `uri`.
pub fn sip(uri: Uri<'_>) -> SipUri<'_> {
    match uri {
        Uri::Sip(u) => u,
        other => panic!("not a SIP URI: {other:?}"),
    }
}

/// Every Via value, parsed.
pub fn vias(m: &Message) -> Vec<Via<'_>> {
    m.vias().map(|v| v.unwrap()).collect()
}

/// Every Contact address (no wildcard expected).
pub fn contacts(m: &Message) -> Vec<NameAddr<'_>> {
    m.contacts()
        .map(|c| match c.unwrap() {
            Contact::Address(a) => a,
            Contact::Wildcard => panic!("unexpected Contact: *"),
        })
        .collect()
}

/// An IPv4 host.
pub fn v4(s: &str) -> Host<'static> {
    Host::Ipv4(s.parse().unwrap())
}

/// An IPv6 host (written without brackets).
pub fn v6(s: &str) -> Host<'static> {
    Host::Ipv6(s.parse().unwrap())
}
