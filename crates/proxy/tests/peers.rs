//! Active-active clusters through the public seam: a node that does not hold a call forwards
//! its requests to the node its Record-Route names (with the party's real source), passes
//! the owner's responses back by Via, and never forwards again what another node forwarded;
//! the owner takes the party's address from a trusted node's header, never from a party's.

mod support;

use std::time::Instant;

use anchorage_proxy::node::{Proxy, Transmit, FORWARD_BRANCH_PREFIX};
use anchorage_sip::{Message, Method};

use support::scenario::*;

const OWNER: &str = "127.0.0.1:5062";

/// A node of cluster `cluster.test` without calls, knowing node `n1` at [`OWNER`].
fn other_node() -> Proxy {
    let mut config = core_config("");
    config.node_id = "n2".into();
    config.cluster_name = Some(("cluster.test".into(), 5060));
    let mut p = proxy_with(config);
    p.set_cluster_peers(vec![("n1".into(), OWNER.parse().unwrap())]);
    p
}

/// The caller's in-dialog INFO of call c1, routed through the cluster's name with `n1` in it.
fn info() -> Req {
    caller_in_dialog(Method::Info, 2, "z9hG4bK-info")
        .route("<sip:cluster.test:5060;anc-node=n1;lr>")
}

fn header<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

fn sent(p: &mut Proxy) -> Vec<Transmit> {
    drain(p)
}

#[test]
fn a_request_for_another_nodes_call_goes_to_that_node_with_its_source_and_back_by_via() {
    let now = epoch();
    let mut q = other_node();
    q.handle_datagram(info().datagram("192.0.2.9:40001"), now);
    let out = sent(&mut q);
    assert_eq!(out.len(), 1, "{out:?}");
    let forwarded = text(&out[0]);
    assert_eq!(out[0].destination.to_string(), OWNER);
    let vias = header(&forwarded, "Via");
    assert_eq!(vias.len(), 2, "{forwarded}");
    assert!(vias[0].contains(FORWARD_BRANCH_PREFIX), "{forwarded}");
    assert!(vias[1].contains("received=192.0.2.9"), "{forwarded}");
    assert_eq!(
        header(&forwarded, "X-Anchorage-Source"),
        vec!["UDP 192.0.2.9:40001"]
    );
    assert_eq!(header(&forwarded, "Max-Forwards"), vec!["69"]);
    assert_eq!(q.counters().forwarded_to_owner, 1);
    // The same request again (a retransmission) takes the same branch.
    q.handle_datagram(info().datagram("192.0.2.9:40001"), now);
    let again = text(&sent(&mut q)[0]);
    assert_eq!(header(&again, "Via")[0], vias[0]);

    // The owner's 200 comes back through us and on to the party's NAT address.
    let request = Message::parse(out[0].data.clone()).unwrap();
    let ok = request.response(200, "OK").to_tag("b1").build().unwrap();
    q.handle_datagram(
        anchorage_proxy::node::Datagram {
            data: ok.bytes(),
            source: OWNER.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: anchorage_proxy::Transport::Udp,
        },
        now,
    );
    let back = sent(&mut q);
    assert_eq!(back.len(), 1, "{back:?}");
    // (The party's Via has no rport: its sent-by port, at the address it came from.)
    assert_eq!(back[0].destination.to_string(), "192.0.2.9:5070");
    assert_eq!(header(&text(&back[0]), "Via").len(), 1);
}

#[test]
fn what_another_node_forwarded_is_never_forwarded_again_nor_a_partys_own_header_trusted() {
    let now = epoch();
    let mut q = other_node();
    // From node n1 itself, speaking for a party: handled here (routed by its Request-URI),
    // not sent back to n1.
    let from_peer = info().header("X-Anchorage-Source", "UDP 192.0.2.9:40001");
    q.handle_datagram(from_peer.datagram(OWNER), now);
    let out = sent(&mut q);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_ne!(out[0].destination.to_string(), OWNER);
    assert!(
        header(&text(&out[0]), "X-Anchorage-Source").is_empty(),
        "stripped"
    );
    assert_eq!(q.counters().forwarded_to_owner, 0);
    // A party's own header is replaced by what we saw.
    let spoofed = info().header("X-Anchorage-Source", "UDP 203.0.113.66:1");
    q.handle_datagram(spoofed.datagram("192.0.2.9:40001"), now);
    let out = text(&sent(&mut q)[0]);
    assert_eq!(
        header(&out, "X-Anchorage-Source"),
        vec!["UDP 192.0.2.9:40001"]
    );
}

#[test]
fn the_owner_learns_the_partys_address_from_a_trusted_node_only() {
    let now = epoch();
    let mut p = call_on_r1(now);
    p.enable_call_records();
    p.set_cluster_peers(vec![("n2".into(), "127.0.0.1:5064".parse().unwrap())]);
    let caller_source = |p: &Proxy| {
        p.export_call("c1")
            .and_then(|r| r.dialogs.first().and_then(|d| d.dialog.caller.source))
            .map(|s| s.to_string())
    };
    let exchange = |p: &mut Proxy, req: &Req, from: &str, now: Instant| {
        let out = forwarded(p, req, from, now);
        assert!(
            header(&text(&out), "X-Anchorage-Source").is_empty(),
            "not passed on"
        );
        ok_to(p, &out, None, ANSWER_SDP, now);
        drain(p)
    };
    // A party's own header counts for nothing: its source is where the packet came from.
    let spoofed = caller_in_dialog(Method::Info, 2, "z9hG4bK-i2")
        .header("X-Anchorage-Source", "UDP 203.0.113.66:1");
    exchange(&mut p, &spoofed, "192.0.2.9:40001", now);
    assert_eq!(caller_source(&p).as_deref(), Some("192.0.2.9:40001"));
    // Forwarded by node n2: the party's address is the header's, and the 200 goes to n2.
    let through_n2 = caller_in_dialog(Method::Info, 3, "z9hG4bK-i3")
        .header("X-Anchorage-Source", "UDP 198.51.100.7:40002");
    let mut msg = through_n2.message();
    let via = "SIP/2.0/UDP 127.0.0.1:5064;branch=z9hG4bK-anc-fwd-1;nid=n2";
    msg = msg
        .edit()
        .push_via(via.as_bytes())
        .unwrap()
        .finish_message()
        .unwrap();
    let datagram = anchorage_proxy::node::Datagram {
        data: msg.bytes(),
        source: "127.0.0.1:5064".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        transport: anchorage_proxy::Transport::Udp,
    };
    p.handle_datagram(datagram, now);
    let out = drain(&mut p);
    let onward = out
        .iter()
        .find(|t| t.data.starts_with(b"INFO "))
        .expect("forwarded");
    assert!(header(&text(onward), "X-Anchorage-Source").is_empty());
    ok_to(&mut p, onward, None, ANSWER_SDP, now);
    let answers = drain(&mut p);
    assert!(
        answers
            .iter()
            .any(|t| t.data.starts_with(b"SIP/2.0 200")
                && t.destination.to_string() == "127.0.0.1:5064"),
        "{answers:?}"
    );
    assert_eq!(caller_source(&p).as_deref(), Some("198.51.100.7:40002"));
}
