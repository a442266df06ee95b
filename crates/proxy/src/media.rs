//! Media relays as the proxy drives them over ng (our relay or rtpengine): relay sets, the
//! choice of a node for a new call, one retransmitting ng client per node, and the ng requests
//! built from SIP (offer, answer, delete). Sans-IO: datagrams in and out, `now` injected.
//!
//! A new call goes to the node of its set with the fewest calls per unit of weight — not a hash
//! of the Call-ID, so adding a node never moves existing calls. A node that times out or
//! answers with a capacity error is skipped for that call and the next one is tried.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use anchorage_config::proxy::{MediaPolicy, RelaySet};
use anchorage_ng::{
    normalise, CallId, Client, ClientConfig, Delete, Event, OfferAnswer, Request, RequestId,
    RequestKind, Tag, Value,
};
use bytes::Bytes;

/// One relay node.
#[derive(Debug)]
pub struct RelayNode {
    /// Its name.
    pub name: String,
    /// Its ng address.
    pub address: SocketAddr,
    /// Its share of new calls.
    pub weight: u32,
    /// Calls anchored on it by this proxy.
    pub calls: usize,
    client: Client,
}

/// Index of a node in [`Relays`].
pub type NodeId = usize;

/// The relay nodes and sets of a proxy.
#[derive(Debug, Default)]
pub struct Relays {
    nodes: Vec<RelayNode>,
    sets: HashMap<String, Vec<NodeId>>,
}

/// The ng flags of a media policy, ready to go into requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Relay set.
    pub set: String,
    /// `rtpp-flags` for the SDP sent to the caller.
    pub caller_flags: String,
    /// `rtpp-flags` for the SDP sent to the callee.
    pub callee_flags: String,
}

impl Policy {
    /// The active policy of a configured one (`None`: no anchoring).
    pub fn of(p: &MediaPolicy) -> Option<Policy> {
        if p.disabled {
            return None;
        }
        Some(Policy {
            set: p.set.clone()?,
            caller_flags: p.caller_flags.clone(),
            callee_flags: p.callee_flags.clone(),
        })
    }
}

impl Relays {
    /// The nodes of every set (a node listed in two sets is one node).
    pub fn new(sets: &[RelaySet], client: ClientConfig) -> Relays {
        let mut relays = Relays::default();
        for set in sets {
            let mut ids = Vec::new();
            for node in &set.nodes {
                let id = match relays.nodes.iter().position(|n| n.address == node.ng) {
                    Some(id) => id,
                    None => {
                        relays.nodes.push(RelayNode {
                            name: node.name.clone(),
                            address: node.ng,
                            weight: node.weight.max(1),
                            calls: 0,
                            client: Client::new(client, &format!("anc{}", relays.nodes.len())),
                        });
                        relays.nodes.len() - 1
                    }
                };
                ids.push(id);
            }
            relays.sets.insert(set.name.clone(), ids);
        }
        relays
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RelayNode] {
        &self.nodes
    }

    /// The least loaded node of `set` not in `exclude`.
    pub fn pick(&self, set: &str, exclude: &[NodeId]) -> Option<NodeId> {
        self.sets
            .get(set)?
            .iter()
            .copied()
            .filter(|id| !exclude.contains(id))
            .min_by(|a, b| {
                let load = |id: &NodeId| {
                    self.nodes
                        .get(*id)
                        .map_or(f64::MAX, |n| n.calls as f64 / f64::from(n.weight))
                };
                load(a).total_cmp(&load(b))
            })
    }

    /// Counts a call onto (`+1`) or off (`-1`) a node.
    pub fn count_call(&mut self, node: NodeId, delta: isize) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.calls = n.calls.saturating_add_signed(delta);
        }
    }

    /// Sends `request` to `node`.
    pub fn send(&mut self, node: NodeId, request: &Request, now: Instant) -> Option<RequestId> {
        self.nodes
            .get_mut(node)
            .map(|n| n.client.send(request, now))
    }

    /// The next ng datagram to send, with its destination.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Bytes)> {
        self.nodes
            .iter_mut()
            .find_map(|n| n.client.poll_transmit(now).map(|d| (n.address, d)))
    }

    /// An ng datagram received from `source`.
    pub fn handle_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.address == source) {
            n.client.handle_datagram(datagram, now);
        }
    }

    /// The earliest retransmission or timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter_map(|n| n.client.poll_timeout())
            .min()
    }

    /// Fires retransmissions and timeouts due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for n in &mut self.nodes {
            n.client.handle_timeout(now);
        }
    }

    /// The next reply or timeout, with the node it came from.
    pub fn poll_event(&mut self) -> Option<(NodeId, Event)> {
        self.nodes
            .iter_mut()
            .enumerate()
            .find_map(|(id, n)| n.client.poll_event().map(|e| (id, e)))
    }
}

/// An `offer` (when `to_tag` is none or the SDP is a new offer in a dialog) or an `answer`.
pub fn offer_answer(
    answer: bool,
    call_id: &str,
    from_tag: &str,
    to_tag: Option<&str>,
    sdp: Bytes,
    flags: &str,
) -> Request {
    let body = OfferAnswer {
        call_id: CallId(call_id.to_string()),
        from_tag: Tag(from_tag.to_string()),
        to_tag: to_tag.map(|t| Tag(t.to_string())),
        via_branch: None,
        sdp,
    };
    Request {
        kind: if answer {
            RequestKind::Answer(body)
        } else {
            RequestKind::Offer(body)
        },
        flags: flags_of(flags),
    }
}

/// A `delete` of a whole call.
pub fn delete(call_id: &str) -> Request {
    Request {
        kind: RequestKind::Delete(Delete {
            call_id: CallId(call_id.to_string()),
            from_tag: None,
            to_tag: None,
            via_branch: None,
        }),
        flags: flags_of(""),
    }
}

/// The normalised flags of an `rtpp-flags` string.
fn flags_of(rtpp_flags: &str) -> anchorage_ng::Flags {
    let dict = if rtpp_flags.trim().is_empty() {
        Vec::new()
    } else {
        vec![("rtpp-flags".to_string(), Value::text(rtpp_flags))]
    };
    normalise(&dict).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relays() -> Relays {
        let cfg = anchorage_config::parse(
            r#"
[[proxy.relay_set]]
name = "main"
nodes = [
  { name = "a", ng = "127.0.0.1:2223" },
  { name = "b", ng = "127.0.0.1:2224", weight = 2 },
]
"#,
        )
        .unwrap();
        Relays::new(&cfg.proxy.relay_set, ClientConfig::default())
    }

    #[test]
    fn new_calls_go_to_the_least_loaded_node_by_weight() {
        let mut r = relays();
        assert_eq!(r.pick("main", &[]), Some(0));
        r.count_call(0, 1);
        assert_eq!(r.pick("main", &[]), Some(1));
        r.count_call(1, 1);
        // a: 1 call / weight 1 = 1.0; b: 1 / 2 = 0.5.
        assert_eq!(r.pick("main", &[]), Some(1));
        r.count_call(1, 1);
        assert_eq!(r.pick("main", &[]), Some(0));
        assert_eq!(r.pick("main", &[0]), Some(1));
        assert_eq!(r.pick("main", &[0, 1]), None);
        assert_eq!(r.pick("nope", &[]), None);
    }

    #[test]
    fn requests_carry_the_policy_flags() {
        let offer = offer_answer(
            false,
            "c1",
            "ft",
            None,
            Bytes::from_static(b"v=0\r\n"),
            "replace-origin ICE=remove",
        );
        let RequestKind::Offer(body) = &offer.kind else {
            panic!()
        };
        assert_eq!(body.from_tag.0, "ft");
        assert!(
            offer.flags.unrecognised().is_empty(),
            "{:?}",
            offer.flags.unrecognised()
        );
        let dict = offer.to_dict();
        assert!(dict.iter().any(|(k, _)| k == "command"));
    }
}
