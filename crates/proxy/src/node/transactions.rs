//! The RFC 3261 §17 transaction machines as the proxy holds them: a server transaction with
//! its §16 response context (branches, remaining targets, best response), a client transaction
//! per branch, the server transaction key (§17.2.3, with the RFC 2543 fallback), and the glue
//! that turns each machine's [`Action`]s into transaction-user work (`drain_server`,
//! `drain_client`) and its deadlines into timers (`schedule_*`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::{Message, Method};
use bytes::Bytes;

use crate::routing::{FailoverPolicy, Target};
use crate::transaction::{Action, ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite};
use crate::Transport;

use crate::node::io::Transmit;
use crate::node::slab::Id;
use crate::node::timers::TimerRef;
use crate::node::Proxy;

/// The Call-ID of an INVITE or UPDATE (the requests that carry offers a move must wait for).
pub(super) fn offer_call_id(req: &Message) -> Option<String> {
    matches!(req.method(), Some(Method::Invite | Method::Update))
        .then(|| req.call_id().ok().map(str::to_string))
        .flatten()
}

/// Server transaction key (RFC 3261 §17.2.3): the top Via's branch and sent-by, and the method
/// (ACK and CANCEL are looked up against their INVITE explicitly).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ServerKey {
    /// The top Via's branch (or the RFC 2543 fallback built from the request).
    pub(super) branch: String,
    /// The top Via's sent-by, `host:port`.
    pub(super) sent_by: String,
    /// The method.
    pub(super) method: String,
}

impl ServerKey {
    /// The key of the INVITE this ACK or CANCEL belongs to.
    pub(super) fn invite(&self) -> ServerKey {
        ServerKey {
            method: "INVITE".to_string(),
            ..self.clone()
        }
    }
}

/// A client transaction, once stored (found by its branch when a response arrives).
pub(super) type ClientId = Id<Box<ClientTx>>;

/// A server transaction with its §16 response context, once stored.
pub(super) type ServerId = Id<Box<ServerTx>>;

pub(super) enum ServerMachine {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

pub(super) struct ServerTx {
    pub(super) machine: ServerMachine,
    /// The request as received.
    pub(super) request: Message,
    pub(super) source: SocketAddr,
    pub(super) local: SocketAddr,
    pub(super) transport: Transport,
    /// Where the request really came from, when another node of the cluster forwarded it
    /// (`source` is that node): the party's address and transport, for its dialog.
    pub(super) origin: Option<(SocketAddr, Transport)>,
    /// Last response sent upstream, for retransmission.
    pub(super) last_response: Option<Bytes>,
    /// Status of the final response sent, if any.
    pub(super) final_status: Option<u16>,
    /// Client branches created for this request (one at a time when serial).
    pub(super) branches: Vec<String>,
    /// Remaining targets of the destination set.
    pub(super) remaining: VecDeque<Target>,
    pub(super) failover: Option<FailoverPolicy>,
    /// Best final response received so far (already without our Via).
    pub(super) best: Option<(u16, Bytes)>,
    /// A CANCEL was received for this INVITE.
    pub(super) cancelled: bool,
    /// A branch got a 2xx (its final response may still wait for the relay's answer).
    pub(super) succeeded: bool,
    /// Version of the scheduled wake-up (lazy deletion in the timer heap).
    pub(super) scheduled: Option<Instant>,
}

pub(super) enum ClientMachine {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

pub(super) struct ClientTx {
    pub(super) machine: ClientMachine,
    /// The request as sent.
    pub(super) request: Message,
    pub(super) destination: SocketAddr,
    pub(super) transport: Transport,
    pub(super) server: ServerId,
    pub(super) provisional_received: bool,
    /// CANCEL wanted but no provisional response yet (§9.1: wait for one).
    pub(super) cancel_pending: bool,
    /// No response at all by then: move to the next destination.
    pub(super) failover_deadline: Option<Instant>,
    /// The branch was given up (failover or cancel); only a 2xx is still forwarded.
    pub(super) abandoned: bool,
    /// A final response (or a failure standing for one) was received on this branch.
    pub(super) completed: bool,
    pub(super) scheduled: Option<Instant>,
}

pub(super) fn method_key<'a>(method: &Method<'a>) -> &'a str {
    method.as_str()
}

pub(super) fn server_key(req: &Message, method: &str) -> Option<ServerKey> {
    let via = req.top_via().ok()?;
    let branch = via.branch().unwrap_or("");
    let branch = if branch.starts_with(anchorage_sip::BRANCH_MAGIC_COOKIE) {
        branch.to_string()
    } else {
        // RFC 2543 fallback: no unique branch; identify by dialog fields and CSeq.
        format!(
            "2543:{}:{}:{}:{}",
            req.request_uri_raw()
                .map(String::from_utf8_lossy)
                .unwrap_or_default(),
            req.from().ok().and_then(|f| f.tag()).unwrap_or(""),
            req.call_id().ok()?,
            req.cseq().map(|c| c.seq).unwrap_or(0)
        )
    };
    let sent_by = format!("{}:{}", via.host, via.port.unwrap_or(5060));
    Some(ServerKey {
        branch,
        sent_by,
        method: method.to_string(),
    })
}

impl Proxy {
    pub(super) fn drain_server(&mut self, key: ServerId, now: Instant) {
        loop {
            let Some(tx) = self.servers.get_mut(key) else {
                return;
            };
            let action = match &mut tx.machine {
                ServerMachine::Invite(m) => m.poll_action(),
                ServerMachine::NonInvite(m) => m.poll_action(),
            };
            let Some(action) = action else {
                break;
            };
            match action {
                Action::Send100Trying => {
                    if let Ok(m) = tx.request.response(100, "Trying").build() {
                        let data = m.bytes();
                        self.send_upstream(key, data);
                    }
                }
                Action::SendResponse(_) | Action::RetransmitResponse(_) => {
                    if let Some(data) = tx.last_response.clone() {
                        self.send_upstream(key, data);
                    }
                }
                Action::PassRequestToTu => self.route_new_request(key, now),
                Action::Terminated => {
                    if let Some(tx) = self.servers.remove(key) {
                        if tx.final_status.is_none() {
                            if let Some(call_id) = offer_call_id(&tx.request) {
                                self.offer_closed(&call_id);
                            }
                        }
                    }
                    return;
                }
                _ => {}
            }
        }
        self.schedule_server(key);
    }

    pub(super) fn drain_client(&mut self, branch: &str, now: Instant) {
        loop {
            let Some(c) = self.clients.get_by_mut(branch) else {
                return;
            };
            let action = match &mut c.machine {
                ClientMachine::Invite(m) => m.poll_action(),
                ClientMachine::NonInvite(m) => m.poll_action(),
            };
            let Some(action) = action else {
                break;
            };
            let send = Transmit {
                data: c.request.bytes(),
                destination: c.destination,
                transport: c.transport,
                local: None,
            };
            match action {
                Action::SendRequest | Action::RetransmitRequest => self.out.push_back(send),
                Action::SendAck => {
                    if let Some(resp) = &self.pending_response {
                        if let Ok(ack) = c.request.ack(resp, None).map(|m| m.bytes()) {
                            self.out.push_back(Transmit { data: ack, ..send });
                        }
                    }
                }
                Action::PassResponseToTu(status) => self.on_branch_response(branch, status, now),
                Action::Timeout(_) => self.on_branch_failure(branch, 408, now),
                Action::TimerC {
                    provisional_received,
                } => {
                    if provisional_received {
                        self.cancel_branch(branch, now);
                    } else {
                        self.on_branch_failure(branch, 408, now);
                    }
                }
                Action::TransportError => self.on_branch_failure(branch, 503, now),
                Action::Terminated => {
                    self.clients.remove_by(branch);
                    return;
                }
                _ => {}
            }
        }
        self.schedule_client(branch);
    }

    pub(super) fn schedule_server(&mut self, key: ServerId) {
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        let next = match &tx.machine {
            ServerMachine::Invite(m) => m.poll_timeout(),
            ServerMachine::NonInvite(m) => m.poll_timeout(),
        };
        if let Some(at) = next {
            if tx.scheduled != Some(at) {
                tx.scheduled = Some(at);
                self.timers.push(at, TimerRef::Server(key));
            }
        }
    }

    pub(super) fn schedule_client(&mut self, branch: &str) {
        let Some(c) = self.clients.get_by_mut(branch) else {
            return;
        };
        let machine_next = match &c.machine {
            ClientMachine::Invite(m) => m.poll_timeout(),
            ClientMachine::NonInvite(m) => m.poll_timeout(),
        };
        let next = match (machine_next, c.failover_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = next {
            if c.scheduled != Some(at) {
                c.scheduled = Some(at);
                if let Some(id) = self.clients.find(branch) {
                    self.timers.push(at, TimerRef::Client(id));
                }
            }
        }
    }
}
