//! A million transactions through one table under an injected clock: every one ends,
//! the table is empty, and its memory is bounded by the peak number of live transactions.

use std::io::Write;
use std::time::{Duration, Instant};

use anchorage_proxy::transaction::{
    Action, ClientKey, RequestFields, ServerKey, TableCapacity, TimerConfig, TransactionTable,
};

/// Counts of what came out of the table.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    terminated: u64,
    sent_requests: u64,
    acks_sent: u64,
    responses_sent: u64,
    timeouts: u64,
}

fn drain(table: &mut Table, tally: &mut Tally) {
    while let Some((_, action)) = table.poll_action() {
        match action {
            Action::Terminated => tally.terminated += 1,
            Action::SendRequest => tally.sent_requests += 1,
            Action::SendAck => tally.acks_sent += 1,
            Action::SendResponse(_) => tally.responses_sent += 1,
            Action::Timeout(_) => tally.timeouts += 1,
            _ => {}
        }
    }
}

/// Runs `rounds` rounds, one per millisecond from `start`; each round creates and completes
/// four transactions (one of each kind). Returns the peak number of live transactions and
/// the largest capacities seen (hash map capacities move with tombstones, so the maximum
/// over the run is what reflects the allocation).
/// The table with fixed hash keys (see the test).
type Table = TransactionTable<FixedKeys>;
type FixedKeys = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

fn run_rounds(
    table: &mut Table,
    start: Instant,
    first_round: u64,
    rounds: u64,
    tally: &mut Tally,
) -> (usize, TableCapacity) {
    let mut peak = 0;
    let mut max = table.capacity();
    let mut branch = Vec::with_capacity(32);
    for round in first_round..first_round + rounds {
        let now = start + Duration::from_millis(round - first_round);
        table.handle_timeouts(now);
        drain(table, tally);

        // A client non-INVITE over UDP: 200 → Completed, Timer K (5 s).
        branch.clear();
        write!(branch, "z9hG4bKcn{round}").unwrap();
        let key = ClientKey::new(&branch, b"OPTIONS");
        let id = table.insert_client_non_invite(now, &key, false).unwrap();
        let found = table.lookup_client(&key).unwrap();
        assert_eq!(found, id);
        table.handle_response(now, found, 200).unwrap();

        // A proxied client INVITE over UDP: 180, 200 → Accepted, Timer M (32 s).
        branch.clear();
        write!(branch, "z9hG4bKci{round}").unwrap();
        let key = ClientKey::new(&branch, b"INVITE");
        let id = table.insert_client_invite(now, &key, false, true).unwrap();
        table.handle_response(now, id, 180).unwrap();
        table.handle_response(now, id, 200).unwrap();

        // A server non-INVITE over TCP: 200 → terminated at once.
        branch.clear();
        write!(branch, "z9hG4bKsn{round}").unwrap();
        let fields = RequestFields {
            method: b"REGISTER",
            branch: Some(&branch),
            sent_by: b"192.0.2.7:5060",
            ..RequestFields::default()
        };
        let id = table
            .insert_server_non_invite(now, &ServerKey::from_request(&fields), true)
            .unwrap();
        table.send_response(now, id, 200).unwrap();

        // A server INVITE over UDP: retransmission, 486, ACK → Confirmed, Timer I (5 s).
        branch.clear();
        write!(branch, "z9hG4bKsi{round}").unwrap();
        let invite = RequestFields {
            method: b"INVITE",
            branch: Some(&branch),
            sent_by: b"192.0.2.8:5060",
            ..RequestFields::default()
        };
        let key = ServerKey::from_request(&invite);
        let id = table.insert_server_invite(now, &key, false).unwrap();
        let again = table.lookup_server(&key).unwrap();
        table.handle_request_retransmission(now, again).unwrap();
        table.send_response(now, id, 486).unwrap();
        let ack = RequestFields {
            method: b"ACK",
            ..invite
        };
        let acked = table.lookup_server(&ServerKey::from_request(&ack)).unwrap();
        table.handle_ack(now, acked).unwrap();

        drain(table, tally);
        peak = peak.max(table.len());
        let cap = table.capacity();
        max = TableCapacity {
            slots: max.slots.max(cap.slots),
            timer_heap: max.timer_heap.max(cap.timer_heap),
            timer_positions: max.timer_positions.max(cap.timer_positions),
            client_index: max.client_index.max(cap.client_index),
            server_index: max.server_index.max(cap.server_index),
            actions: max.actions.max(cap.actions),
        };
    }
    (peak, max)
}

#[test]
fn a_million_transactions_leave_an_empty_table_and_flat_memory() {
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    // Fixed hash keys: hashbrown's growth under deletions depends on where keys land, so a
    // random seed would make the phase-to-phase comparison below vary from run to run.
    let fixed =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    let mut table = TransactionTable::with_hasher(TimerConfig::default(), fixed).unwrap();
    let mut tally = Tally::default();

    // Phase 1: 500,000 transactions over 125 s of virtual time.
    let rounds = 125_000;
    let (peak1, after_phase1) = run_rounds(&mut table, t0, 0, rounds, &mut tally);

    // Phase 2: 500,000 more, same load, continuing the clock.
    let t1 = t0 + Duration::from_millis(rounds);
    let (peak2, after_phase2) = run_rounds(&mut table, t1, rounds, rounds, &mut tally);

    // Let every remaining timer run out (Timer M is the longest: 32 s).
    let end = t1 + Duration::from_millis(rounds) + Duration::from_secs(33);
    table.handle_timeouts(end);
    drain(&mut table, &mut tally);

    assert_eq!(table.len(), 0);
    assert_eq!(table.poll_timeout(), None);
    assert_eq!(
        tally,
        Tally {
            terminated: 1_000_000,
            sent_requests: 500_000,
            acks_sent: 0,
            responses_sent: 500_000,
            timeouts: 0,
        }
    );

    // Live transactions at steady state: 32 s of client INVITEs in Accepted (Timer M),
    // 5 s of client non-INVITEs in Completed (Timer K), 5 s of server INVITEs in Confirmed
    // (Timer I), one round per millisecond: about 42,000.
    assert!((41_990..=42_010).contains(&peak1), "peak {peak1}");
    assert_eq!(peak1, peak2);
    // The second half of the load did not grow anything.
    assert!(
        after_phase2.slots <= after_phase1.slots
            && after_phase2.timer_heap <= after_phase1.timer_heap
            && after_phase2.timer_positions <= after_phase1.timer_positions
            && after_phase2.client_index <= after_phase1.client_index
            && after_phase2.server_index <= after_phase1.server_index
            && after_phase2.actions <= after_phase1.actions,
        "{after_phase1:?} then {after_phase2:?}"
    );
    // And everything is bounded by the peak, not by the million: the slab and the heap by
    // twice the peak (vector doubling), the key indexes by four times (hashbrown grows to
    // twice the buckets when more than half are in use, and keeps 1/8 free).
    assert!(
        after_phase2.slots <= 2 * peak1
            && after_phase2.timer_heap <= 2 * peak1
            && after_phase2.timer_positions <= 2 * peak1
            && after_phase2.client_index <= 4 * peak1
            && after_phase2.server_index <= 4 * peak1
            && after_phase2.actions <= 64,
        "{after_phase2:?}"
    );
}
