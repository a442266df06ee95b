//! RFC 3261 §16.4–16.5: where a new request goes — its Route set (loose routing, with our own
//! entries removed), the `[[proxy.route]]` rules, or its Request-URI; RFC 3263 resolution
//! parking; the NAT rule for in-dialog requests (`behind_nat`, as Kamailio's nathelper); and
//! requests addressed to the proxy itself (OPTIONS answered 200, RFC 3261 §11.2).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anchorage_sip::{Host, Message, Method, Uri};
use bytes::Bytes;

use crate::routing::{is_private, Decision, FailoverPolicy, RequestFacts, Target, TargetHost};
use crate::via;
use crate::Transport;

use crate::node::transactions::ServerId;
use crate::node::{next_random, Proxy};

/// The methods this proxy forwards (any method is forwarded; these are the ones it knows),
/// listed in the `Allow` of its answer to an OPTIONS addressed to itself.
pub(super) const PROXIED_METHODS: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY, SUBSCRIBE, MESSAGE";

pub(super) enum RouteChoice {
    RequestUri,
    Route(Target),
    Set(Vec<Target>, FailoverPolicy),
}

impl Proxy {
    pub(super) fn on_resolved(
        &mut self,
        key: ServerId,
        result: Result<Vec<(SocketAddr, Transport)>, String>,
        now: Instant,
    ) {
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                for (addr, transport) in addrs.into_iter().rev() {
                    tx.remaining.push_front(Target {
                        host: TargetHost::Ip(addr.ip()),
                        port: addr.port(),
                        transport,
                        srv: false,
                    });
                }
            }
            Ok(_) | Err(_) => {
                if let Err(reason) = &result {
                    tracing::info!(call_id = ?tx.request.call_id().ok(), %reason, "resolution failed");
                }
                if tx.best.is_none() {
                    tx.best = Some((503, Bytes::new()));
                }
            }
        }
        self.try_next_target(key, now);
    }

    /// Routes and forwards the request of a new server transaction (called on PassRequestToTu).
    pub(super) fn route_new_request(&mut self, key: ServerId, now: Instant) {
        let Some(tx) = self.servers.get(key) else {
            return;
        };
        let req = tx.request.clone();
        let source = tx.source;
        let has_to_tag = req.to().ok().and_then(|t| t.tag()).is_some();
        // A party's own offer while the proxy moves its call's media: glare (RFC 3261 §14.2).
        if has_to_tag
            && matches!(req.method(), Some(Method::Invite | Method::Update))
            && req.call_id().is_ok_and(|c| self.move_in_progress(c))
        {
            self.respond(key, 491, "Request Pending", now);
            return;
        }
        let route = match self.next_hop_by_route(&req) {
            Some(route) => route,
            None if has_to_tag => RouteChoice::RequestUri,
            None => {
                let method = req.method().map(|m| m.as_str()).unwrap_or("");
                let uri = req.request_uri().ok();
                let sip = uri.as_ref().and_then(|u| u.as_sip());
                let domain = sip.map(|s| s.host.to_string());
                let facts = RequestFacts {
                    method,
                    user: sip.and_then(|s| s.user),
                    domain: domain.as_deref(),
                    source: source.ip(),
                };
                let rng = &mut self.rng_state;
                match self.config.router.decide(&facts, |n| next_random(rng, n)) {
                    Decision::Reply { status, reason } => {
                        self.respond(key, status, &reason, now);
                        return;
                    }
                    Decision::RequestUri => RouteChoice::RequestUri,
                    Decision::Destinations {
                        targets, failover, ..
                    } => RouteChoice::Set(targets, failover),
                }
            }
        };
        let targets = match route {
            RouteChoice::RequestUri => {
                let uri = req.request_uri().ok();
                if uri.as_ref().is_some_and(|u| self.is_us(u)) {
                    self.answer_for_ourselves(key, &req, has_to_tag, now);
                    return;
                }
                let nat = has_to_tag.then(|| self.behind_nat(&req)).flatten();
                match nat.or_else(|| uri.as_ref().and_then(Target::from_uri)) {
                    Some(t) => VecDeque::from([t]),
                    None => {
                        self.respond(key, 416, "Unsupported URI Scheme", now);
                        return;
                    }
                }
            }
            RouteChoice::Route(t) => VecDeque::from([t]),
            RouteChoice::Set(targets, failover) => {
                if let Some(tx) = self.servers.get_mut(key) {
                    tx.failover = Some(failover);
                }
                targets.into()
            }
        };
        if let Some(tx) = self.servers.get_mut(key) {
            tx.remaining = targets;
        }
        if self.start_forked_offers(key, &req, source, now)
            || self.start_offer(key, &req, source, now)
        {
            return;
        }
        self.try_next_target(key, now);
    }

    /// The next hop named by the Route set after removing our own entries, if any (§16.4,
    /// §16.6 step 6–7), with strict-route compatibility.
    pub(super) fn next_hop_by_route(&self, req: &Message) -> Option<RouteChoice> {
        let routes: Vec<_> = req.routes().filter_map(|r| r.ok()?.uri().ok()).collect();
        let first_foreign = routes.iter().find(|uri| !self.is_us(uri))?;
        Target::from_uri(first_foreign).map(RouteChoice::Route)
    }

    /// Where an in-dialog request really reaches its recipient when the recipient is behind
    /// NAT: its Request-URI (the leg's Contact) holds a private address (RFC 1918, CGNAT,
    /// link-local, IPv6 ULA) other than the address the leg's messages come from. The request
    /// then goes to that address — the NAT binding the leg keeps open — as Kamailio's nathelper
    /// does with `fix_nated_contact`. `None` when the Contact is reachable as written.
    pub(super) fn behind_nat(&self, req: &Message) -> Option<Target> {
        let uri = req.request_uri().ok()?;
        let sip = uri.as_sip()?;
        let contact_ip = match sip.host {
            Host::Ipv4(a) => IpAddr::V4(a),
            Host::Ipv6(a) => IpAddr::V6(a),
            Host::Domain(_) => return None,
        };
        if !is_private(contact_ip) {
            return None;
        }
        let call_id = req.call_id().ok()?;
        let from_tag = req.from().ok()?.tag()?;
        let to_tag = req.to().ok()?.tag()?;
        let dialog = self.calls.between(call_id, from_tag, to_tag)?;
        let leg = if dialog.id.caller_tag == to_tag {
            &dialog.caller
        } else {
            &dialog.callee
        };
        let source = leg.source?;
        if source.ip() == contact_ip {
            return None;
        }
        Some(Target {
            host: TargetHost::Ip(source.ip()),
            port: source.port(),
            transport: leg.transport.unwrap_or(Transport::Udp),
            srv: false,
        })
    }

    pub(super) fn is_us(&self, uri: &Uri<'_>) -> bool {
        via::uri_is_ours(&self.ours, uri)
    }

    /// A request addressed to this proxy itself, with nothing to route it elsewhere: forwarding
    /// it by its Request-URI would send it back here (482). An OPTIONS is a keep-alive or
    /// capability query (a trunk, an SBC, a monitor): answered 200 with what we accept
    /// (RFC 3261 §11.2). Anything else has no user here: 481 inside a dialog, 404 otherwise.
    pub(super) fn answer_for_ourselves(
        &mut self,
        key: ServerId,
        req: &Message,
        in_dialog: bool,
        now: Instant,
    ) {
        if req.method() == Some(Method::Options) {
            self.respond_with(
                key,
                200,
                "OK",
                &[("Allow", PROXIED_METHODS), ("Accept", "application/sdp")],
                now,
            );
        } else if in_dialog {
            self.respond(key, 481, "Call/Transaction Does Not Exist", now);
        } else {
            self.respond(key, 404, "Not Found", now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_private;

    #[test]
    fn private_addresses_are_the_ones_nat_hides() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "203.0.113.7",
            "100.128.0.1",
            "127.0.0.1",
            "172.32.0.1",
            "2001:db8::1",
            "::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
