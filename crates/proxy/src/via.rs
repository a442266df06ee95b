//! Via handling of a proxy: the branch it puts in its own Via (RFC 3261 §16.6 step 8), loop
//! detection (§16.3 item 4), `received`/`rport` on the Via of the previous hop (§18.2.1,
//! RFC 3581) and where a response goes (§18.2.2, RFC 3581 §4).
//!
//! # The branch
//!
//! `z9hG4bK` + 16 hex digits + `.` + 16 hex digits:
//!
//! * the first part identifies the transaction: a hash of the received request's top Via
//!   (branch and sent-by) and the next hop. It is **deterministic**: a CANCEL, or the ACK of a
//!   non-2xx response, carries the top Via of its INVITE, so any node of a cluster — also one
//!   that never saw the INVITE because the node that forwarded it died — computes the same
//!   branch, and the next hop matches the CANCEL or ACK to its INVITE transaction.
//! * the second part detects loops: a hash of Request-URI, From tag, Call-ID and CSeq number as
//!   received. A request that comes back with a Via of ours carrying the same loop part has
//!   looped (482); a spiral changes the Request-URI and passes.
//!
//! The node id is not in the branch (that would break the first property); it travels as the
//! Via parameter `nid`, echoed in every response, so a node can tell which peer created a
//! transaction.

use std::net::{IpAddr, SocketAddr};

use anchorage_sip::{HeaderName, Host, Message, NameAddr, Uri, Via, BRANCH_MAGIC_COOKIE};

use crate::Transport;

/// FNV-1a, 64 bit: a stable hash (the same on every node and release), which the branch
/// needs; `std`'s hasher makes no such promise.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    /// Feeds bytes, then a separator so that ("ab","c") and ("a","bc") differ.
    pub fn feed(mut self, bytes: &[u8]) -> Fnv {
        for &b in bytes.iter().chain([0xffu8].iter()) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// The hash.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// The loop-detection hash of a received request (Request-URI, From tag, Call-ID, CSeq number).
pub fn loop_hash(request: &Message) -> u64 {
    let from_tag = request
        .from()
        .ok()
        .and_then(|f| f.tag())
        .unwrap_or_default();
    Fnv::default()
        .feed(request.request_uri_raw().unwrap_or_default())
        .feed(from_tag.as_bytes())
        .feed(request.call_id().unwrap_or_default().as_bytes())
        .feed(
            request
                .cseq()
                .map(|c| c.seq.to_be_bytes())
                .unwrap_or_default()
                .as_slice(),
        )
        .finish()
}

/// The branch this proxy puts in its Via when forwarding `request` to `next_hop`.
pub fn branch(request: &Message, next_hop: &str) -> String {
    let mut h = Fnv::default();
    match request.top_via() {
        Ok(via) => {
            h = h
                .feed(via.params.get("branch").flatten().unwrap_or_default())
                .feed(via.host.to_string().as_bytes())
                .feed(&via.port.unwrap_or(0).to_be_bytes());
        }
        Err(_) => h = h.feed(b"no-via"),
    }
    let tx = h.feed(next_hop.as_bytes()).finish();
    format!("{BRANCH_MAGIC_COOKIE}{tx:016x}.{:016x}", loop_hash(request))
}

/// The loop part of one of our branches.
fn loop_part(branch: &[u8]) -> Option<u64> {
    let rest = branch.strip_prefix(BRANCH_MAGIC_COOKIE.as_bytes())?;
    let (_, loop_hex) = std::str::from_utf8(rest).ok()?.split_once('.')?;
    u64::from_str_radix(loop_hex, 16).ok()
}

/// Whether `request` carries a Via of ours (sent-by in `ours`) with the loop part this request
/// would produce: it has been here before with the same Request-URI — a loop (§16.3 item 4).
pub fn is_loop(request: &Message, ours: &[(String, u16)]) -> bool {
    let here = loop_hash(request);
    request.vias().flatten().any(|via| {
        is_ours(ours, &via.host, via.port)
            && via.params.get("branch").flatten().and_then(loop_part) == Some(here)
    })
}

/// Whether `host` and `port` (5060 when absent) name one of `ours` (advertised host, port):
/// a name compares case-insensitively, an address as an address (`[::1]` = `[0::1]`). Runs for
/// every Via and Route a request carries, so it does not allocate.
pub fn is_ours(ours: &[(String, u16)], host: &Host<'_>, port: Option<u16>) -> bool {
    let port = port.unwrap_or(5060);
    ours.iter().any(|(name, p)| {
        *p == port
            && match host {
                Host::Domain(d) => d.eq_ignore_ascii_case(name),
                Host::Ipv4(a) => name.parse::<std::net::Ipv4Addr>().is_ok_and(|n| n == *a),
                Host::Ipv6(a) => name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|n| n == *a),
            }
    })
}

/// Whether a SIP URI names this proxy: its host and port are one of `ours` ([`is_ours`]).
pub fn uri_is_ours(ours: &[(String, u16)], uri: &Uri<'_>) -> bool {
    uri.as_sip()
        .is_some_and(|sip| is_ours(ours, &sip.host, sip.port))
}

/// The URI of one Route or Record-Route header field value (`<sip:host:port;lr>`, with or
/// without a display name), parsed as the SIP layer parses a name-addr.
pub fn route_uri(value: &str) -> Option<Uri<'_>> {
    NameAddr::parse(value.trim().as_bytes(), HeaderName::Route)
        .ok()?
        .uri()
        .ok()
}

/// Whether one Route or Record-Route header field value names this proxy: the one answer to
/// "is this Route ours", for the Route of a request ([`uri_is_ours`] on its parsed entries)
/// and the Record-Route a dialog stored as text alike.
pub fn route_is_ours(value: &str, ours: &[(String, u16)]) -> bool {
    route_uri(value).is_some_and(|uri| uri_is_ours(ours, &uri))
}

/// The top Via value of a request as it must be forwarded: with `received` when the sent-by
/// host is not the packet's source address, and `rport` filled in when the client asked for it
/// (RFC 3581 §4). `None` when nothing needs to change.
pub fn stamp_received(via_value: &[u8], via: &Via<'_>, source: SocketAddr) -> Option<Vec<u8>> {
    let wants_rport = matches!(via.params.get("rport"), Some(None));
    let host_matches = match via.host {
        Host::Ipv4(a) => IpAddr::V4(a) == source.ip(),
        Host::Ipv6(a) => IpAddr::V6(a) == source.ip(),
        Host::Domain(_) => false,
    };
    if host_matches && !wants_rport {
        return None;
    }
    let mut out = Vec::with_capacity(via_value.len() + 40);
    // Rebuild the parameter list: drop an empty rport (replaced below) and any received we add.
    let params = via.params.as_bytes();
    let head_len = via_value.len().saturating_sub(params.len());
    out.extend_from_slice(via_value.get(..head_len).unwrap_or(via_value));
    for (name, value) in via.params.iter() {
        if (name.eq_ignore_ascii_case(b"rport") && value.is_none())
            || (!host_matches && name.eq_ignore_ascii_case(b"received"))
        {
            continue;
        }
        out.push(b';');
        out.extend_from_slice(name);
        if let Some(v) = value {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }
    if !host_matches {
        out.extend_from_slice(format!(";received={}", source.ip()).as_bytes());
    }
    if wants_rport {
        out.extend_from_slice(format!(";rport={}", source.port()).as_bytes());
    }
    Some(out)
}

/// Where a response goes by the Via it will carry on top (§18.2.2 with RFC 3581 §4): `maddr`,
/// else `received` (with `rport`, else the sent-by port), else the sent-by itself. `None` when
/// the sent-by is a host name and nothing else says where (resolution not supported here).
pub fn response_destination(via: &Via<'_>) -> Option<SocketAddr> {
    let port = via
        .params
        .get("rport")
        .flatten()
        .and_then(|p| std::str::from_utf8(p).ok()?.parse::<u16>().ok())
        .or(via.port)
        .unwrap_or(5060);
    let ip_of = |v: &[u8]| -> Option<IpAddr> {
        let s = std::str::from_utf8(v).ok()?;
        s.trim_start_matches('[').trim_end_matches(']').parse().ok()
    };
    if let Some(maddr) = via.params.get("maddr").flatten().and_then(ip_of) {
        return Some(SocketAddr::new(maddr, via.port.unwrap_or(5060)));
    }
    if let Some(received) = via.params.get("received").flatten().and_then(ip_of) {
        return Some(SocketAddr::new(received, port));
    }
    match via.host {
        Host::Ipv4(a) => Some(SocketAddr::new(IpAddr::V4(a), port)),
        Host::Ipv6(a) => Some(SocketAddr::new(IpAddr::V6(a), port)),
        Host::Domain(_) => None,
    }
}

/// The transport a Via names.
pub fn via_transport(via: &Via<'_>) -> Option<Transport> {
    if via.transport.eq_ignore_ascii_case("UDP") {
        Some(Transport::Udp)
    } else if via.transport.eq_ignore_ascii_case("TCP") {
        Some(Transport::Tcp)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(text: &str) -> Message {
        Message::parse(Bytes::from(text.replace('\n', "\r\n"))).unwrap()
    }

    const INVITE: &str = "INVITE sip:bob@192.0.2.2 SIP/2.0\n\
Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-a;rport\n\
From: <sip:alice@example.com>;tag=f1\n\
To: <sip:bob@example.com>\n\
Call-ID: call-1\n\
CSeq: 7 INVITE\n\
Content-Length: 0\n\n";

    #[test]
    fn cancel_and_non_2xx_ack_get_the_invites_branch() {
        let invite = msg(INVITE);
        let cancel = msg(&INVITE
            .replace("INVITE sip", "CANCEL sip")
            .replace("7 INVITE", "7 CANCEL"));
        let ack = msg(&INVITE
            .replace("INVITE sip", "ACK sip")
            .replace("7 INVITE", "7 ACK")
            .replace(
                "To: <sip:bob@example.com>",
                "To: <sip:bob@example.com>;tag=t9",
            ));
        let b = branch(&invite, "udp:192.0.2.2:5060");
        assert!(b.starts_with("z9hG4bK"));
        assert_eq!(b.len(), 7 + 16 + 1 + 16);
        assert_eq!(branch(&cancel, "udp:192.0.2.2:5060"), b);
        assert_eq!(branch(&ack, "udp:192.0.2.2:5060"), b);
        assert_ne!(branch(&invite, "udp:192.0.2.3:5060"), b, "another hop");
        let other_tx = msg(&INVITE.replace("branch=z9hG4bK-a", "branch=z9hG4bK-b"));
        assert_ne!(branch(&other_tx, "udp:192.0.2.2:5060"), b);
    }

    #[test]
    fn ours_compares_names_by_case_and_addresses_by_value() {
        let ours = vec![
            ("192.0.2.9".to_string(), 5060),
            ("[2001:db8::9]".to_string(), 5080),
            ("Proxy.Example.com".to_string(), 5060),
        ];
        let v4: Host<'_> = Host::Ipv4("192.0.2.9".parse().unwrap());
        assert!(is_ours(&ours, &v4, None));
        assert!(is_ours(&ours, &v4, Some(5060)));
        assert!(!is_ours(&ours, &v4, Some(5061)));
        let v6: Host<'_> = Host::Ipv6("2001:db8:0::9".parse().unwrap());
        assert!(is_ours(&ours, &v6, Some(5080)));
        assert!(!is_ours(&ours, &v6, None));
        assert!(is_ours(&ours, &Host::Domain("proxy.example.COM"), None));
        assert!(!is_ours(&ours, &Host::Domain("192.0.2.99"), None));
        assert!(!is_ours(
            &ours,
            &Host::Ipv4("192.0.2.10".parse().unwrap()),
            None
        ));
    }

    #[test]
    fn a_loop_is_detected_and_a_spiral_is_not() {
        let invite = msg(INVITE);
        let ours = vec![("192.0.2.9".to_string(), 5060)];
        let b = branch(&invite, "udp:192.0.2.2:5060");
        let looped = msg(&INVITE.replace(
            "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-a;rport\n",
            &format!(
                "Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK-x\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch={b}\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-a;rport\n"
            ),
        ));
        assert!(is_loop(&looped, &ours));
        let spiral = msg(&looped
            .as_bytes()
            .iter()
            .map(|&c| c as char)
            .collect::<String>()
            .replace("INVITE sip:bob@192.0.2.2", "INVITE sip:bob2@192.0.2.2")
            .replace("\r\n", "\n"));
        assert!(!is_loop(&spiral, &ours));
        assert!(!is_loop(&invite, &ours));
    }

    #[test]
    fn received_and_rport_are_stamped() {
        let invite = msg(INVITE);
        let via = invite.top_via().unwrap();
        let raw = invite.headers().next().unwrap().value();
        let stamped = stamp_received(raw, &via, "192.0.2.50:6000".parse().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(stamped).unwrap(),
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-a;received=192.0.2.50;rport=6000"
        );
        // Same host, rport asked: only rport is filled.
        let stamped = stamp_received(raw, &via, "192.0.2.1:6000".parse().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(stamped).unwrap(),
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-a;rport=6000"
        );
    }

    #[test]
    fn responses_follow_received_and_rport() {
        let via = |v: &'static str| Via::parse(v.as_bytes()).unwrap();
        let dest = |v| response_destination(&via(v)).unwrap().to_string();
        assert_eq!(
            dest("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1"),
            "192.0.2.1:5070"
        );
        assert_eq!(
            dest("SIP/2.0/UDP host.example.com;branch=z9hG4bK1;received=192.0.2.7;rport=4000"),
            "192.0.2.7:4000"
        );
        assert_eq!(
            dest("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;received=192.0.2.7"),
            "192.0.2.7:5060"
        );
        assert_eq!(
            dest("SIP/2.0/UDP [2001:db8::1]:5080;branch=z9hG4bK1"),
            "[2001:db8::1]:5080"
        );
        assert!(
            response_destination(&via("SIP/2.0/UDP host.example.com;branch=z9hG4bK1")).is_none()
        );
    }

    #[test]
    fn a_route_is_ours_by_host_and_port_whatever_its_spelling() {
        let ours = vec![
            ("192.0.2.10".to_string(), 5060),
            ("[2001:db8::1]".to_string(), 5070),
            ("Proxy.Example.com".to_string(), 5060),
        ];
        for value in [
            "<sip:192.0.2.10;lr>",
            " <sip:192.0.2.10:5060;lr;transport=tcp> ",
            "\"edge\" <sip:192.0.2.10:5060;lr>",
            "<sip:[2001:db8:0::1]:5070;lr>",
            "<sip:proxy.example.COM;lr>",
            "sip:192.0.2.10;lr",
        ] {
            assert!(route_is_ours(value, &ours), "{value}");
        }
        for value in [
            "<sip:192.0.2.10:5061;lr>",
            "<sip:192.0.2.11;lr>",
            "<sip:[2001:db8::1];lr>",
            "<tel:+15551234>",
            "<sip:192.0.2.10",
            "",
        ] {
            assert!(!route_is_ours(value, &ours), "{value}");
        }
        let uri = route_uri("<sip:192.0.2.10:5080;lr>").unwrap();
        assert_eq!(uri.as_sip().unwrap().port, Some(5080));
    }
}
