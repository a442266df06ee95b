//! Shared by the control-plane tests: a controller on one interface (`10.0.0.1`, advertised
//! as `203.0.113.1`, ports 30000–30999, no quarantine) driven with ng dictionaries at a fixed
//! time, and readers of its replies. Each test file uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_ng::{Dict, Outcome, Reply, Request, Value};
use anchorage_relay::{Fingerprint, Interface, PortRange, Side, StreamFlags};
use anchorage_relay_control::{Config, Controller, MediaAction, Now, PortBinder};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Binds every pair.
pub struct Binder;

impl PortBinder for Binder {
    fn bind(&mut self, _rtp: SocketAddr, _rtcp: SocketAddr) -> bool {
        true
    }

    fn bind_rtcp(&mut self, _rtcp: SocketAddr) -> bool {
        true
    }
}

/// The test relay's configuration; `dtls`: the fingerprint of its DTLS certificate, if any.
pub fn config(dtls: Option<Fingerprint>) -> Config {
    Config {
        interfaces: vec![Interface::parse(
            "10.0.0.1!203.0.113.1",
            PortRange::new(30000, 30999).unwrap(),
        )
        .unwrap()],
        port_quarantine: Duration::ZERO,
        instance: "test-relay".into(),
        dtls,
        ..Config::default()
    }
}

/// A controller, the binder it probes ports with, and its (fixed) clock.
pub struct Relay<B: PortBinder = Binder> {
    /// The controller under test.
    pub controller: Controller,
    /// The port binder.
    pub binder: B,
    /// When the controller was made, and the time of every command.
    pub t0: Instant,
}

impl Relay<Binder> {
    /// A controller over `config`, its generators seeded with `seed`, binding every pair.
    pub fn with(config: Config, seed: u64) -> Relay {
        Relay::with_binder(config, seed, Binder)
    }
}

impl<B: PortBinder> Relay<B> {
    /// A controller over `config`, its generators seeded with `seed`, probing with `binder`.
    pub fn with_binder(config: Config, seed: u64, binder: B) -> Relay<B> {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let controller =
            Controller::new(config, &mut StdRng::seed_from_u64(seed), now(t0)).unwrap();
        Relay {
            controller,
            binder,
            t0,
        }
    }

    /// One ng command; the reply and what the data plane must do.
    pub fn send(&mut self, entries: Vec<(&str, Value)>) -> (Reply, Vec<MediaAction>) {
        let dict: Dict = entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let request = Request::from_dict(&dict).unwrap();
        let handled = self
            .controller
            .handle(&request, now(self.t0), &mut self.binder);
        (handled.reply, handled.actions)
    }
}

fn now(t0: Instant) -> Now {
    Now {
        mono: t0,
        unix_us: 1_800_000_000_000_000,
    }
}

/// The SRTP keys and DTLS options the data plane was given for `side` of the first stream,
/// from `Add` or the last `Update` of that side.
pub fn leg_flags(actions: &[MediaAction], side: Side) -> StreamFlags {
    let mut found = None;
    for action in actions {
        match action {
            MediaAction::Add { pairs, .. } => found = Some(pairs[0].config(side).flags),
            MediaAction::Update {
                side: s,
                flags,
                media: 0,
                ..
            } if *s == side => found = Some(*flags),
            _ => {}
        }
    }
    found.unwrap_or_else(|| panic!("nothing for {side:?} in {actions:?}"))
}

/// An ng string.
pub fn text(s: &str) -> Value {
    Value::text(s)
}

/// Bob's `answer` (to-tag `bob`) in call `call-1` from Alice (from-tag `alice`).
pub fn answer(sdp: &str) -> Vec<(&'static str, Value)> {
    answer_from("bob", "alice", sdp)
}

/// `answerer`'s `answer` (its to-tag) in call `call-1` to an offer from `offerer` (from-tag).
pub fn answer_from(answerer: &str, offerer: &str, sdp: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("command", text("answer")),
        ("call-id", text("call-1")),
        ("from-tag", text(offerer)),
        ("to-tag", text(answerer)),
        ("sdp", text(sdp)),
    ]
}

/// The SDP of a successful reply.
pub fn sdp_of(reply: &Reply) -> String {
    assert_eq!(reply.outcome, Outcome::Ok, "{reply:?}");
    String::from_utf8(reply.sdp.clone().expect("an SDP").to_vec()).unwrap()
}

/// The `error-reason` of a refusal.
pub fn error_of(reply: &Reply) -> String {
    match &reply.outcome {
        Outcome::Error(reason) => reason.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The port of the first `m=audio` line.
pub fn audio_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("an m= port")
}
