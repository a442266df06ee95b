//! A call's transactions over UDP: the RFC 3261 §17 machines of `anchorage-transaction` (the
//! ones the proxy runs), wrapped with what the user agent keeps to act on them — the bytes to
//! retransmit, where they go, the CSeq and branch a response is matched by (§17.1.3).
//!
//! * [`ClientTx`]: the client transaction of each request the UA sends (INVITE: §17.1.1,
//!   Timers A and B; BYE and CANCEL: §17.1.2, Timers E and F). It lives until the final
//!   response; the call keeps the ACK it sent to answer retransmitted final responses.
//! * [`ServerTx`]: the final response to an INVITE, retransmitted until the ACK. For a
//!   300–699 this is the server INVITE transaction (§17.2.1, Timers G and H). For a 2xx it is
//!   not: RFC 3261 §13.3.1.4 gives the retransmission of a 2xx to the UA core (the
//!   transaction is gone, or in RFC 6026's `Accepted`, once the 2xx is sent), so that part is
//!   the UA's own code here, on the same schedule (T1 doubling up to T2, given up after
//!   64·T1).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_sip::Method;
use anchorage_transaction::{
    Action, ClientInvite, ClientNonInvite, ServerInvite, TimerConfig, Trying100,
};
use bytes::Bytes;

/// Every transport is UDP: the machines run their retransmission timers.
const RELIABLE: bool = false;

/// How long an INVITE that got a provisional response waits for its final response before
/// the UA gives up on it. The client INVITE transaction has no timer in `Proceeding`; the
/// UAC CANCELs after its answer timeout and the UAS gives up after 200 s, so this is only
/// a last guard against a call that would never end.
const INVITE_PROCEEDING_GUARD: Duration = Duration::from_secs(3600);

/// The transaction timers of a UA with these T1 and T2 (the other values are the RFC's).
pub(super) fn timer_config(t1: Duration, t2: Duration) -> TimerConfig {
    TimerConfig {
        t1,
        t2,
        ..TimerConfig::default()
    }
}

/// What a transaction asks the UA to do after an event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Todo {
    /// Send the request (client) or the final response (server) now, first time or again.
    pub(super) send: bool,
    /// Client INVITE: ACK the 300–699 final response just received (§17.1.1.3).
    pub(super) ack: bool,
    /// The transaction gave up: no final response (client), no ACK (server).
    pub(super) timed_out: bool,
}

impl Todo {
    /// Adds what `action` asks for.
    fn add(&mut self, action: Action) {
        match action {
            Action::SendRequest
            | Action::RetransmitRequest
            | Action::SendResponse(_)
            | Action::RetransmitResponse(_) => self.send = true,
            Action::SendAck => self.ack = true,
            Action::Timeout(_) => self.timed_out = true,
            _ => {}
        }
    }
}

/// A request the UA sent: what it is and where it went.
#[derive(Debug, Clone)]
pub(super) struct Request {
    /// INVITE, BYE or CANCEL.
    pub(super) method: Method<'static>,
    /// Its CSeq number.
    pub(super) cseq: u32,
    /// The branch of its Via.
    pub(super) branch: String,
    /// The request as sent.
    pub(super) data: Bytes,
    /// Where it went.
    pub(super) destination: SocketAddr,
}

#[derive(Debug)]
enum ClientMachine {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

/// A request the UA sent, on its client transaction.
#[derive(Debug)]
pub(super) struct ClientTx {
    /// The request.
    pub(super) request: Request,
    machine: ClientMachine,
    /// INVITE in `Proceeding`: when the UA gives up ([`INVITE_PROCEEDING_GUARD`]).
    give_up: Option<Instant>,
}

impl ClientTx {
    /// Starts the transaction of `request` at `now`; the returned [`Todo`] says to send it.
    pub(super) fn start(now: Instant, request: Request, timers: &TimerConfig) -> (ClientTx, Todo) {
        let machine = if request.method == Method::Invite {
            ClientMachine::Invite(ClientInvite::new(now, RELIABLE, timers))
        } else {
            ClientMachine::NonInvite(ClientNonInvite::new(now, RELIABLE, timers))
        };
        let mut tx = ClientTx {
            request,
            machine,
            give_up: None,
        };
        let todo = tx.drain();
        (tx, todo)
    }

    /// A response with `status` matched the transaction. A final response ends it for the
    /// UA (drop it after acting on the [`Todo`]).
    pub(super) fn handle_response(&mut self, now: Instant, status: u16) -> Todo {
        let result = match &mut self.machine {
            ClientMachine::Invite(m) => m.handle_response(now, status),
            ClientMachine::NonInvite(m) => m.handle_response(now, status),
        };
        if result.is_ok() && status < 200 && matches!(self.machine, ClientMachine::Invite(_)) {
            self.give_up = Some(now + INVITE_PROCEEDING_GUARD);
        }
        self.drain()
    }

    /// Fires the timers due at `now`: a retransmission, or the end of the transaction.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Todo {
        match &mut self.machine {
            ClientMachine::Invite(m) => m.handle_timeout(now),
            ClientMachine::NonInvite(m) => m.handle_timeout(now),
        }
        let mut todo = self.drain();
        if self.give_up.is_some_and(|at| at <= now) {
            todo.timed_out = true;
        }
        todo
    }

    /// When [`ClientTx::handle_timeout`] must run next.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let machine = match &self.machine {
            ClientMachine::Invite(m) => m.poll_timeout(),
            ClientMachine::NonInvite(m) => m.poll_timeout(),
        };
        earliest(machine, self.give_up)
    }

    fn drain(&mut self) -> Todo {
        let mut todo = Todo::default();
        loop {
            let action = match &mut self.machine {
                ClientMachine::Invite(m) => m.poll_action(),
                ClientMachine::NonInvite(m) => m.poll_action(),
            };
            match action {
                Some(action) => todo.add(action),
                None => return todo,
            }
        }
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// How a final response to an INVITE is retransmitted until the ACK.
#[derive(Debug)]
enum Retransmission {
    /// 300–699: the server INVITE transaction (§17.2.1).
    Transaction(ServerInvite),
    /// 2xx: the UA core (§13.3.1.4), not a transaction: T1 doubling up to T2, until 64·T1.
    UaCore {
        at: Instant,
        interval: Duration,
        t2: Duration,
        deadline: Instant,
    },
}

/// A final response to an INVITE, retransmitted until its ACK.
#[derive(Debug)]
pub(super) struct ServerTx {
    /// The CSeq of the INVITE (its ACK has the same number).
    pub(super) cseq: u32,
    /// The response as sent.
    pub(super) data: Bytes,
    /// Where it went.
    pub(super) destination: SocketAddr,
    retransmission: Retransmission,
}

impl ServerTx {
    /// The final response `data` with `status`, just sent at `now` to the INVITE with CSeq
    /// `cseq`.
    pub(super) fn sent(
        now: Instant,
        cseq: u32,
        status: u16,
        data: Bytes,
        destination: SocketAddr,
        timers: &TimerConfig,
    ) -> ServerTx {
        let retransmission = if (200..300).contains(&status) {
            Retransmission::UaCore {
                at: now + timers.t1,
                interval: timers.t1,
                t2: timers.t2,
                deadline: now + timers.timer_h(),
            }
        } else {
            // The INVITE was handed to the UA when it arrived and the response is already
            // out: the machine starts in `Proceeding`, as it would have been, and is given
            // the response (its actions now — hand the request over, send this — are done).
            let config = TimerConfig {
                trying_100: Trying100::Delayed(timers.t1),
                ..*timers
            };
            let mut m = ServerInvite::new(now, RELIABLE, &config);
            // A 300–699 in `Proceeding` is always accepted.
            let _ = m.send_response(now, status);
            while m.poll_action().is_some() {}
            Retransmission::Transaction(m)
        };
        ServerTx {
            cseq,
            data,
            destination,
            retransmission,
        }
    }

    /// Whether the response is a 2xx.
    pub(super) fn success(&self) -> bool {
        matches!(self.retransmission, Retransmission::UaCore { .. })
    }

    /// Fires the timers due at `now`: a retransmission, or no ACK in time.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Todo {
        let mut todo = Todo::default();
        match &mut self.retransmission {
            Retransmission::Transaction(m) => {
                m.handle_timeout(now);
                while let Some(action) = m.poll_action() {
                    todo.add(action);
                }
            }
            Retransmission::UaCore {
                at,
                interval,
                t2,
                deadline,
            } => {
                if *deadline <= now {
                    todo.timed_out = true;
                } else if *at <= now {
                    *interval = (*interval * 2).min(*t2);
                    *at = now + *interval;
                    todo.send = true;
                }
            }
        }
        todo
    }

    /// When [`ServerTx::handle_timeout`] must run next.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match &self.retransmission {
            Retransmission::Transaction(m) => m.poll_timeout(),
            Retransmission::UaCore { at, deadline, .. } => Some((*at).min(*deadline)),
        }
    }
}

/// A call's transactions, at most one of each kind at a time, and the last responses and
/// ACK it sent, kept to answer retransmissions.
#[derive(Debug, Default)]
pub(super) struct CallTransactions {
    /// Our INVITE (initial or re-INVITE).
    pub(super) client: Option<ClientTx>,
    /// Our BYE.
    pub(super) bye: Option<ClientTx>,
    /// Our CANCEL.
    pub(super) cancel: Option<ClientTx>,
    /// Our final response to an INVITE, until its ACK.
    pub(super) server: Option<ServerTx>,
    /// The last ACK we sent and its CSeq, for 2xx/non-2xx retransmissions.
    pub(super) ack: Option<(u32, Bytes, SocketAddr)>,
    /// The last response to an INVITE: (CSeq, response, where).
    pub(super) invite_response: Option<(u32, Bytes, SocketAddr)>,
    /// The last response to another request: (CSeq, method, response, where).
    pub(super) other_response: Option<(u32, String, Bytes, SocketAddr)>,
}

impl CallTransactions {
    /// The earliest deadline of the call's transactions.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let clients = [&self.client, &self.bye, &self.cancel];
        let client = clients
            .into_iter()
            .flatten()
            .filter_map(ClientTx::poll_timeout)
            .min();
        earliest(
            client,
            self.server.as_ref().and_then(ServerTx::poll_timeout),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn request(method: Method<'static>) -> Request {
        Request {
            method,
            cseq: 1,
            branch: "z9hG4bKtest".into(),
            data: Bytes::from_static(b"request"),
            destination: SocketAddr::from(([192, 0, 2, 1], 5060)),
        }
    }

    /// Runs `tx`'s timers until it times out; returns the sends (ms after `t0`) and when it
    /// gave up.
    fn run_client(t0: Instant, tx: &mut ClientTx) -> (Vec<u128>, u128) {
        let mut sends = Vec::new();
        while let Some(at) = tx.poll_timeout() {
            let todo = tx.handle_timeout(at);
            if todo.timed_out {
                return (sends, (at - t0).as_millis());
            }
            if todo.send {
                sends.push((at - t0).as_millis());
            }
        }
        panic!("no timeout");
    }

    #[test]
    fn an_invite_is_retransmitted_on_timer_a_and_given_up_on_timer_b() {
        let t0 = epoch();
        let timers = timer_config(Duration::from_millis(500), Duration::from_secs(4));
        let (mut tx, todo) = ClientTx::start(t0, request(Method::Invite), &timers);
        assert!(todo.send, "sent at once");
        let (sends, gave_up) = run_client(t0, &mut tx);
        assert_eq!(sends, [500, 1_500, 3_500, 7_500, 15_500, 31_500]);
        assert_eq!(gave_up, 32_000);
    }

    #[test]
    fn a_bye_is_retransmitted_on_timer_e_capped_at_t2_and_given_up_on_timer_f() {
        let t0 = epoch();
        let timers = timer_config(Duration::from_millis(500), Duration::from_secs(4));
        let (mut tx, _) = ClientTx::start(t0, request(Method::Bye), &timers);
        let (sends, gave_up) = run_client(t0, &mut tx);
        assert_eq!(
            sends,
            [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
        );
        assert_eq!(gave_up, 32_000);
    }

    #[test]
    fn a_provisional_stops_the_invite_retransmissions_until_the_guard() {
        let t0 = epoch();
        let timers = timer_config(Duration::from_millis(500), Duration::from_secs(4));
        let invite = || ClientTx::start(t0, request(Method::Invite), &timers).0;
        let mut tx = invite();
        let todo = tx.handle_response(t0, 180);
        assert_eq!(todo, Todo::default());
        let (sends, gave_up) = run_client(t0, &mut tx);
        assert!(sends.is_empty());
        assert_eq!(gave_up, INVITE_PROCEEDING_GUARD.as_millis());
        // A 486 is ACKed (§17.1.1.3); a 200 is not (the UA ACKs it end to end).
        assert!(invite().handle_response(t0, 486).ack);
        assert!(!invite().handle_response(t0, 200).ack);
    }

    #[test]
    fn final_responses_are_retransmitted_t1_doubling_to_t2_until_64_t1() {
        let t0 = epoch();
        let timers = timer_config(Duration::from_millis(500), Duration::from_secs(4));
        let to = SocketAddr::from(([192, 0, 2, 1], 5060));
        for status in [200, 486] {
            let data = Bytes::from_static(b"response");
            let mut tx = ServerTx::sent(t0, 1, status, data, to, &timers);
            assert_eq!(tx.success(), status == 200);
            let mut sends = Vec::new();
            let gave_up = loop {
                let at = tx.poll_timeout().expect("a deadline until the end");
                let todo = tx.handle_timeout(at);
                if todo.timed_out {
                    break (at - t0).as_millis();
                }
                if todo.send {
                    sends.push((at - t0).as_millis());
                }
            };
            assert_eq!(
                sends,
                [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500],
                "{status}"
            );
            assert_eq!(gave_up, 32_000, "{status}");
        }
    }
}
