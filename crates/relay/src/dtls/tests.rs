//! Two sessions of this module shake hands with each other over an in-memory "network".

use std::time::{Duration, Instant};

use super::*;

/// The test clock's start.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn identity() -> DtlsIdentity {
    DtlsIdentity::generate().expect("a certificate")
}

/// A session of `ours` in `role`, expecting `theirs`' certificate.
fn session(
    ours: &DtlsIdentity,
    role: DtlsRole,
    theirs: &DtlsIdentity,
    now: Instant,
) -> DtlsSession {
    let params = DtlsParams {
        role,
        peer: Some(theirs.fingerprint()),
    };
    DtlsSession::new(ours, params, now).expect("a session")
}

/// Passes datagrams both ways until neither has anything to send; returns what each saw.
fn run(a: &mut DtlsSession, b: &mut DtlsSession, now: Instant) -> (Vec<DtlsEvent>, Vec<DtlsEvent>) {
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let mut moved = false;
        while let Some(d) = a.poll_transmit() {
            moved = true;
            seen_b.push(b.handle_datagram(now, &d));
        }
        while let Some(d) = b.poll_transmit() {
            moved = true;
            seen_a.push(a.handle_datagram(now, &d));
        }
        if !moved {
            break;
        }
    }
    let keep = |v: Vec<DtlsEvent>| v.into_iter().filter(|e| *e != DtlsEvent::None).collect();
    (keep(seen_a), keep(seen_b))
}

#[test]
fn fingerprint_round_trips_through_sdp_text() {
    let fp = identity().fingerprint();
    let text = fp.sdp_value();
    assert_eq!(text.len(), "sha-256 ".len() + 95);
    assert_eq!(Fingerprint::parse(&text), Some(fp));
    assert_eq!(Fingerprint::parse(&text.to_lowercase()), Some(fp));
    assert_eq!(Fingerprint::parse("sha-1 AB:CD"), None);
    assert_eq!(Fingerprint::parse("sha-256 AB:CD"), None);
    assert_eq!(Fingerprint::parse(&format!("{text}:00")), None);
}

#[test]
fn client_and_server_export_mirrored_keys() {
    let (ca, sa) = (identity(), identity());
    let now = t0();
    let mut client = session(&ca, DtlsRole::Client, &sa, now);
    let mut server = session(&sa, DtlsRole::Server, &ca, now);
    let (at_client, at_server) = run(&mut client, &mut server, now);
    let [DtlsEvent::Keys(c)] = at_client.as_slice() else {
        panic!("client: {at_client:?}")
    };
    let [DtlsEvent::Keys(s)] = at_server.as_slice() else {
        panic!("server: {at_server:?}")
    };
    assert_eq!(c.outbound, s.inbound);
    assert_eq!(c.inbound, s.outbound);
    assert_ne!(c.inbound, c.outbound);
    assert_eq!(client.state(), DtlsState::Done);
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn a_wrong_fingerprint_fails_the_handshake_and_a_server_takes_a_new_attempt() {
    let (ca, sa, other) = (identity(), identity(), identity());
    let now = t0();
    let mut server = session(&sa, DtlsRole::Server, &other, now);
    let mut client = session(&ca, DtlsRole::Client, &sa, now);
    let (_, at_server) = run(&mut client, &mut server, now);
    assert!(
        at_server.contains(&DtlsEvent::Failed(DtlsError::WrongFingerprint)),
        "{at_server:?}"
    );
    assert_eq!(server.state(), DtlsState::Failed);
    // The party with the right certificate then succeeds on the same session.
    let mut right = session(&other, DtlsRole::Client, &sa, now);
    let (_, at_server) = run(&mut right, &mut server, now);
    assert!(
        matches!(at_server.as_slice(), [DtlsEvent::Keys(_)]),
        "{at_server:?}"
    );
}

#[test]
fn garbage_is_dropped_and_a_client_retransmits_its_hello() {
    let (ca, sa) = (identity(), identity());
    let now = t0();
    let mut client = session(&ca, DtlsRole::Client, &sa, now);
    let hello = client.poll_transmit().expect("a ClientHello");
    assert_eq!(
        crate::demux::classify(&hello),
        crate::demux::PacketKind::Dtls
    );
    assert_eq!(
        client.handle_datagram(now, &[22, 0xfe, 0xfd, 1]),
        DtlsEvent::None
    );
    assert_eq!(client.handle_datagram(now, &[23; 40]), DtlsEvent::None);
    let due = client.poll_timeout().expect("a retransmission timer");
    assert_eq!(
        client.handle_timeout(due + Duration::from_millis(1)),
        DtlsEvent::None
    );
    assert!(client.poll_transmit().is_some(), "the flight is sent again");
}
