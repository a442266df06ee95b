//! Eighty thousand transactions through the proxy core's public seam, under an
//! injected clock: every one completes and expires, the node ends with no transaction and no
//! timer, and what it holds follows the load (the transactions alive at once), not the total
//! ever created. This is the store production runs — the node's server and client
//! transactions (`node/transactions.rs`) and their timer queue (`node/timers.rs`) — reached
//! only through `handle_datagram`, `poll_transmit` and `handle_timeout`.

mod support;

use std::time::Duration;

use support::load::{Load, Tally};

/// One round every this long of virtual time: each round makes three requests (OPTIONS, an
/// INVITE answered 486, an INVITE answered 200 and its BYE), so four server and four client
/// transactions.
const ROUND: Duration = Duration::from_millis(10);
/// Rounds per phase: 5,000 rounds of 10 ms are 50 s, past the longest timer (32 s).
const ROUNDS: u64 = 5_000;

/// Peaks of one phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Peaks {
    servers: usize,
    clients: usize,
    timers: usize,
}

fn phase(load: &mut Load) -> Peaks {
    let mut peaks = Peaks::default();
    for _ in 0..ROUNDS {
        load.tick(ROUND);
        load.options();
        load.invite_rejected();
        load.invite_answered();
        let (servers, clients) = load.proxy.transaction_count();
        peaks.servers = peaks.servers.max(servers);
        peaks.clients = peaks.clients.max(clients);
        peaks.timers = peaks.timers.max(load.proxy.timer_queue_len());
    }
    peaks
}

#[test]
fn many_transactions_all_end_and_the_store_follows_the_load() {
    let mut load = Load::new();
    let first = phase(&mut load);
    let second = phase(&mut load);

    // Every request was answered once, each kind as the callee answered it.
    let requests = 2 * ROUNDS;
    assert_eq!(
        load.tally,
        Tally {
            // OPTIONS, INVITE and its ACK (486: the proxy's own), INVITE, ACK (end to end), BYE;
            // 200 to the OPTIONS, the INVITE and the BYE.
            requests: 6 * requests,
            trying: 2 * requests,
            ok: 3 * requests,
            busy: requests,
            other: 0,
        }
    );

    // At steady state (one round per 10 ms) the store holds what the timers keep, per the
    // RFC's numbers with T1 = 500 ms and T4 = 5 s:
    // servers: OPTIONS and BYE in Completed for Timer J (32 s), the 486's INVITE in
    // Confirmed for Timer I (5 s), the 200's INVITE in Accepted for Timer L (32 s);
    // clients: OPTIONS and BYE in Completed for Timer K (5 s), the 486's INVITE in Completed
    // for Timer D (32 s), the 200's INVITE in Accepted for Timer M (32 s).
    let per_s = 1_000 / ROUND.as_millis() as usize;
    let servers = per_s * (32 + 32 + 5 + 32);
    let clients = per_s * (5 + 5 + 32 + 32);
    let near = |got: usize, want: usize| got.abs_diff(want) <= want / 100;
    assert!(near(first.servers, servers), "{first:?}, want {servers}");
    assert!(near(first.clients, clients), "{first:?}, want {clients}");
    // The second half of the load holds no more than the first.
    assert_eq!(first.servers, second.servers, "{first:?} then {second:?}");
    assert_eq!(first.clients, second.clients, "{first:?} then {second:?}");
    assert!(second.timers <= first.timers, "{first:?} then {second:?}");
    // The timer queue follows the live transactions (a deadline re-armed leaves a stale
    // entry until popped), not the 80,000 created.
    assert!(
        first.timers <= 2 * (first.servers + first.clients),
        "{first:?}"
    );

    // Let every timer run out: the node holds nothing.
    for _ in 0..40 {
        load.tick(Duration::from_secs(1));
    }
    assert_eq!(load.proxy.transaction_count(), (0, 0));
    assert_eq!(load.proxy.dialogs().len(), 0);
    assert_eq!(load.proxy.timer_queue_len(), 0);
    assert_eq!(load.proxy.poll_timeout(), None);
}
