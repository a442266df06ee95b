//! Active-active clusters (`[cluster] mode = "active-active"`): every node record-routes the
//! cluster's name, so a call's in-dialog requests reach whichever node DNS or a load balancer
//! picks. The node that owns the call acts for it; another node that receives one of its
//! requests forwards it there, statelessly (RFC 3261 §16.11): the request with our Via on
//! top and [`SOURCE_HEADER`] naming where it really came from, so the owner learns the
//! party's address (NAT) as if the party had sent it the request itself. The owner's
//! responses come back through us by our Via, and on to the party by its own.
//!
//! The driver says who owns a call ([`Proxy::handle_owned_elsewhere`], after asking the
//! store) and which addresses are the cluster's nodes ([`Proxy::set_cluster_peers`]): only a
//! request from one of those may speak for another source, and a request one of them
//! forwarded is never forwarded again (no loops when two nodes disagree about an owner).
//! Which node owns a call is remembered for [`OWNER_FOR`] (at most [`MAX_OWNERS`] calls), so a
//! call's requests cost one store lookup per that time, not one each.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anchorage_sip::{HeaderName, Message};

use crate::node::io::{Datagram, Transmit};
use crate::node::Proxy;
use crate::{via, Transport};

/// The Record-Route parameter naming the node that set a call up.
pub const NODE_PARAM: &str = "anc-node";

/// A node id as it is written in [`NODE_PARAM`] (letters, digits, `-`, `_` and `.`; any other
/// character becomes `-`).
pub fn node_param(node_id: &str) -> String {
    node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// The header a forwarding node adds: `TRANSPORT IP:PORT` of the request's real source.
pub const SOURCE_HEADER: &str = "X-Anchorage-Source";
/// The start of the Via branch of a request forwarded to its call's owner.
pub const FORWARD_BRANCH_PREFIX: &str = "z9hG4bK-anc-fwd-";
/// How long a call's owner elsewhere is remembered without asking the store again.
pub const OWNER_FOR: Duration = Duration::from_secs(2);
/// Calls whose owner elsewhere is remembered at most.
pub const MAX_OWNERS: usize = 10_000;

/// The cluster's nodes and the calls known to be owned by one of them.
#[derive(Debug, Default)]
pub(in crate::node) struct Peers {
    /// The nodes' addresses (trusted to speak for another source).
    trusted: Vec<IpAddr>,
    /// The live nodes' SIP addresses by id (as in [`NODE_PARAM`]).
    nodes: HashMap<String, SocketAddr>,
    /// Call → (its owner's SIP address, until when that is believed).
    owners: HashMap<String, (SocketAddr, Instant)>,
}

impl Peers {
    fn owner(&self, call_id: &str, now: Instant) -> Option<SocketAddr> {
        self.owners
            .get(call_id)
            .filter(|(_, until)| *until > now)
            .map(|(owner, _)| *owner)
    }

    fn remember(&mut self, call_id: &str, owner: SocketAddr, now: Instant) {
        if self.owners.len() >= MAX_OWNERS {
            self.owners.retain(|_, (_, until)| *until > now);
            if self.owners.len() >= MAX_OWNERS {
                // All fresh: forget them (each costs one lookup more at most).
                self.owners.clear();
            }
        }
        self.owners
            .insert(call_id.to_string(), (owner, now + OWNER_FOR));
    }

    /// Whether `source` is one of the cluster's nodes.
    pub(in crate::node) fn trusts(&self, source: IpAddr) -> bool {
        self.trusted.contains(&source)
    }
}

/// The real source a trusted node's [`SOURCE_HEADER`] names: address and transport.
pub(in crate::node) fn forwarded_source(msg: &Message) -> Option<(SocketAddr, Transport)> {
    let value = msg.headers_named(SOURCE_HEADER.as_bytes()).next()?;
    let text = std::str::from_utf8(value.value()).ok()?.trim();
    let (transport, address) = text.split_once(' ')?;
    let transport = match transport.to_ascii_uppercase().as_str() {
        "UDP" => Transport::Udp,
        "TCP" => Transport::Tcp,
        _ => return None,
    };
    Some((address.trim().parse().ok()?, transport))
}

/// Removes every [`SOURCE_HEADER`] of `msg` in its edit `e` (a party's own never counts).
pub(in crate::node) fn strip_source_header(msg: &Message, e: &mut anchorage_sip::Editor<'_>) {
    let found: Vec<usize> = msg
        .headers_named(SOURCE_HEADER.as_bytes())
        .map(|h| h.index())
        .collect();
    for index in found {
        e.remove_header(index);
    }
}

impl Proxy {
    /// The other live nodes of the cluster (from their heartbeats), by id with their SIP
    /// address: requests from them may carry [`SOURCE_HEADER`] and are never forwarded again;
    /// a request whose Route names one of them in [`NODE_PARAM`] goes to it.
    pub fn set_cluster_peers(&mut self, peers: Vec<(String, SocketAddr)>) {
        let mut trusted: Vec<IpAddr> = peers.iter().map(|(_, a)| a.ip()).collect();
        trusted.sort();
        trusted.dedup();
        self.peers.trusted = trusted;
        self.peers.nodes = peers
            .into_iter()
            .map(|(id, address)| (node_param(&id), address))
            .collect();
    }

    /// The calls the cluster's other nodes anchored on each relay (by name), as they
    /// published them: counted in the choice of the least loaded relay.
    pub fn set_cluster_relay_calls(&mut self, calls: &HashMap<String, u64>) {
        self.relays.set_cluster_calls(calls);
    }

    /// The calls this node anchored on each relay, by name (what it publishes for the
    /// others).
    pub fn own_relay_calls(&self) -> Vec<(String, u64)> {
        self.relays
            .nodes()
            .iter()
            .map(|n| (n.name.clone(), n.calls as u64))
            .collect()
    }

    /// Whether `d` came from another node of the cluster speaking for a party.
    pub(in crate::node) fn is_forwarded_by_peer(&self, msg: &Message, d: &Datagram) -> bool {
        self.peers.trusts(d.source.ip()) && forwarded_source(msg).is_some()
    }

    /// The owner of a call this node knows (for a while) to be another live node's.
    pub(in crate::node) fn owner_elsewhere(
        &self,
        msg: &Message,
        now: Instant,
    ) -> Option<SocketAddr> {
        if !msg.is_request() || (self.peers.owners.is_empty() && self.peers.nodes.is_empty()) {
            return None;
        }
        let call_id = msg.call_id().ok()?;
        if self.calls.holds(call_id) {
            return None;
        }
        if let Some(owner) = self.peers.owner(call_id, now) {
            return Some(owner);
        }
        // The node our Record-Route named, while it lives (after its death the store says
        // who took the call).
        let named = msg.routes().filter_map(|r| r.ok()).find_map(|route| {
            let uri = route.uri().ok()?;
            if !self.is_us(&uri) {
                return None;
            }
            let value = uri.as_sip()?.params.get(NODE_PARAM)??;
            std::str::from_utf8(value).ok().map(str::to_string)
        })?;
        if named == node_param(&self.config.node_id) {
            return None;
        }
        self.peers.nodes.get(&named).copied()
    }

    /// The store says another live node, at `owner`, owns `call_id`: the messages parked for
    /// it go there (a response, or a request another node already forwarded, is handled
    /// here from what this node has), and so do its next requests for a while.
    pub fn handle_owned_elsewhere(&mut self, call_id: &str, owner: SocketAddr, now: Instant) {
        self.peers.remember(call_id, owner, now);
        for (msg, d) in self.parking_take(call_id) {
            if msg.is_request() && !self.is_forwarded_by_peer(&msg, &d) {
                self.forward_to_owner(&msg, &d, owner);
            } else {
                self.dispatch(msg, &d, now);
            }
        }
        self.settle(now);
    }

    /// The cluster node whose address a Via names (a response for it reached this node).
    pub(in crate::node) fn peer_of_via(&self, top: &anchorage_sip::Via<'_>) -> Option<SocketAddr> {
        let destination = via::response_destination(top)?;
        let sent_by = top.host.to_string();
        let port = top.port.unwrap_or(5060);
        self.peers.nodes.values().copied().find(|node| {
            *node == destination
                || (node.port() == port
                    && node.ip().to_string() == sent_by.trim_matches(['[', ']']))
        })
    }

    /// Passes a response on, unchanged, to the cluster node its top Via names.
    pub(in crate::node) fn relay_to_peer(&mut self, resp: &Message, node: SocketAddr) {
        self.counters.forwarded_to_owner += 1;
        self.out.push_back(Transmit {
            data: resp.bytes(),
            destination: node,
            transport: Transport::Udp,
            local: None,
        });
    }

    /// Sends a party's request to its call's owner: its Via stamped with where it came from
    /// (so the owner's response finds the party), our Via on top with a branch made from the
    /// request's own (a retransmission goes the same way), Max-Forwards one down, and
    /// [`SOURCE_HEADER`] naming the party's address.
    pub(in crate::node) fn forward_to_owner(
        &mut self,
        msg: &Message,
        d: &Datagram,
        owner: SocketAddr,
    ) {
        let Some(listener) = self
            .listener_for(Transport::Udp, owner, d.local)
            .and_then(|i| self.config.listeners.get(i))
            .cloned()
        else {
            self.counters.dropped += 1;
            return;
        };
        let mut e = msg.edit();
        if let (Ok(top), Some(header)) = (msg.top_via(), msg.header(HeaderName::Via)) {
            if let Some(first) = header.values().next() {
                if let Some(stamped) = via::stamp_received(first, &top, d.source) {
                    let rest = header.value().get(first.len()..).unwrap_or_default();
                    let mut value = stamped;
                    value.extend_from_slice(rest);
                    if e.set_header_value(header.index(), &value).is_err() {
                        self.counters.dropped += 1;
                        return;
                    }
                }
            }
        }
        strip_source_header(msg, &mut e);
        match msg.max_forwards() {
            Ok(Some(0)) => {
                self.counters.dropped += 1;
                return;
            }
            Ok(Some(n)) => {
                e.set_max_forwards(n - 1);
            }
            _ => {}
        }
        let source = format!("{} {}", d.transport.via_token(), d.source);
        let branch = via::branch(msg, &owner.to_string());
        let branch = branch.replacen("z9hG4bK", FORWARD_BRANCH_PREFIX, 1);
        let our_via = format!(
            "SIP/2.0/UDP {}:{};branch={branch};nid={}",
            listener.advertise_host, listener.advertise_port, self.config.node_id
        );
        let built = e
            .add_header(SOURCE_HEADER, source.as_bytes())
            .and_then(|e| e.push_via(our_via.as_bytes()))
            .map(|e| e.finish());
        let Ok(data) = built else {
            self.counters.dropped += 1;
            return;
        };
        self.counters.forwarded_to_owner += 1;
        tracing::debug!(call_id = ?msg.call_id().ok(), %owner, "a request for another node's call: forwarded to its owner");
        self.out.push_back(Transmit {
            data,
            destination: owner,
            transport: Transport::Udp,
            local: Some(listener.local),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> Message {
        let text = format!(
            "BYE sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\n\
             From: <sip:a@x>;tag=a\r\nTo: <sip:b@y>;tag=b\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(bytes::Bytes::from(text)).unwrap()
    }

    #[test]
    fn the_source_header_is_read_only_when_well_formed() {
        let m = request("X-Anchorage-Source: TCP 198.51.100.9:40001\r\n");
        assert_eq!(
            forwarded_source(&m),
            Some(("198.51.100.9:40001".parse().unwrap(), Transport::Tcp))
        );
        let m = request("x-anchorage-source: udp [2001:db8::1]:5060\r\n");
        assert_eq!(
            forwarded_source(&m),
            Some(("[2001:db8::1]:5060".parse().unwrap(), Transport::Udp))
        );
        for bad in [
            "X-Anchorage-Source: SCTP 198.51.100.9:1\r\n",
            "X-Anchorage-Source: UDP 198.51.100.9\r\n",
            "X-Anchorage-Source: 198.51.100.9:1\r\n",
            "",
        ] {
            assert_eq!(forwarded_source(&request(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn node_ids_are_written_as_safe_uri_parameters() {
        assert_eq!(node_param("edge-1.b_2"), "edge-1.b_2");
        assert_eq!(node_param("a;lr=x y"), "a-lr-x-y");
        assert_eq!(node_param(&"n".repeat(100)).len(), 64);
    }

    #[test]
    fn owners_are_remembered_for_a_while_and_bounded() {
        #[allow(clippy::disallowed_methods)] // an arbitrary origin for the test's clock
        let now = Instant::now();
        let owner: SocketAddr = "192.0.2.5:5060".parse().unwrap();
        let mut peers = Peers::default();
        peers.remember("c1", owner, now);
        assert_eq!(peers.owner("c1", now + OWNER_FOR / 2), Some(owner));
        assert_eq!(peers.owner("c1", now + OWNER_FOR), None, "forgotten");
        for i in 0..MAX_OWNERS + 10 {
            peers.remember(&format!("c{i}"), owner, now);
        }
        assert!(peers.owners.len() <= MAX_OWNERS);
    }
}
