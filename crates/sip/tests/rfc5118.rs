//! RFC 5118, "Session Initiation Protocol (SIP) Torture Test Messages for Internet Protocol
//! Version 6 (IPv6)": one fixture per message of §4 (our own messages of the same shape,
//! see `tests/fixtures/generate.py`), and what the RFC expects of each.

mod torture;

use anchorage_sip::{Host, Message, Method};
use torture::{
    assert_table_covers_dir, contacts, run_section, sip, v4, v6, vias, Case, Expect, ProxyAction,
    Stage,
};

const DIR: &str = "rfc5118";

const CASES: &[Case] = &[
    Case {
        name: "ipv6-good",
        section: "4.1",
        title: "Valid SIP Message with an IPv6 Reference",
        expect: Expect::Valid(ipv6_good),
    },
    Case {
        name: "ipv6-bad",
        section: "4.2",
        title: "Invalid SIP Message with an IPv6 Reference",
        // `sip:2001:db8::20`: the host ends at the first colon, "2001" is no host.
        expect: Expect::Invalid {
            stage: Stage::Validate,
            reason: "bad Request-URI: bad host",
            status: 400,
            action: ProxyAction::Reply(400),
        },
    },
    Case {
        name: "port-ambiguous",
        section: "4.3",
        title: "Port Ambiguous in a SIP URI",
        // Well formed, but what is inside the brackets is all address: no port.
        expect: Expect::Valid(port_ambiguous),
    },
    Case {
        name: "port-unambiguous",
        section: "4.4",
        title: "Port Unambiguous in a SIP URI",
        expect: Expect::Valid(port_unambiguous),
    },
    Case {
        name: "via-received-param-with-delim",
        section: "4.5",
        title: "IPv6 Reference Delimiters in Via Header",
        // Not RFC 3261's via-received (a bare IPv6address), but it must parse.
        expect: Expect::Valid(received_with_delim),
    },
    Case {
        name: "via-received-param-no-delim",
        section: "4.5",
        title: "IPv6 Reference Delimiters in Via Header",
        expect: Expect::Valid(received_no_delim),
    },
    Case {
        name: "ipv6-in-sdp",
        section: "4.6",
        title: "SIP Request with IPv6 Addresses in SDP Body",
        expect: Expect::Valid(ipv6_in_sdp),
    },
    Case {
        name: "mult-ip-in-header",
        section: "4.7",
        title: "Multiple IP Addresses in SIP Headers",
        expect: Expect::Valid(mult_ip_in_header),
    },
    Case {
        name: "mult-ip-in-sdp",
        section: "4.8",
        title: "Multiple IP Addresses in SDP",
        expect: Expect::Valid(mult_ip_in_sdp),
    },
    Case {
        name: "ipv4-mapped-ipv6",
        section: "4.9",
        title: "IPv4-Mapped IPv6 Addresses",
        expect: Expect::Valid(ipv4_mapped_ipv6),
    },
    Case {
        name: "ipv6-bug-abnf-3-colons",
        section: "4.10",
        title: "IPv6 Reference Bug in RFC 3261 ABNF",
        // RFC 3261's ABNF allows `2001:db8:::192.0.2.1`; RFC 5118 says to tolerate it. It is
        // read as the two-colon address.
        expect: Expect::Valid(abnf_3_colons),
    },
    Case {
        name: "ipv6-correct-abnf-2-colons",
        section: "4.10",
        title: "IPv6 Reference Bug in RFC 3261 ABNF",
        expect: Expect::Valid(abnf_2_colons),
    },
];

#[test]
fn every_fixture_has_a_row_and_every_row_a_fixture() {
    assert_table_covers_dir(DIR, CASES);
}

#[test]
fn section_4_ipv6_parser_torture_tests() {
    assert_eq!(run_section(DIR, CASES, "4."), 12);
}

fn register_with_v6_contact(m: &Message) {
    assert_eq!(m.method(), Some(Method::Register));
    let via = m.top_via().unwrap();
    assert_eq!((via.host, via.port), (v6("2001:db8::a:1"), None));
    let c = contacts(m);
    assert_eq!(c[0].display_name, Some(&b"\"Amy\""[..]));
    assert_eq!(sip(c[0].uri().unwrap()).host, v6("2001:db8::1:2"));
}

fn ipv6_good(m: &Message) {
    let r = sip(m.request_uri().unwrap());
    assert_eq!((r.host, r.port), (v6("2001:db8::20"), None));
    register_with_v6_contact(m);
}

fn port_ambiguous(m: &Message) {
    let r = sip(m.request_uri().unwrap());
    assert_eq!((r.host, r.port), (v6("2001:db8::20:5070"), None));
    assert_eq!(r.host.to_string(), "[2001:db8::20:5070]");
    register_with_v6_contact(m);
}

fn port_unambiguous(m: &Message) {
    let r = sip(m.request_uri().unwrap());
    assert_eq!((r.host, r.port), (v6("2001:db8::20"), Some(5070)));
    register_with_v6_contact(m);
}

fn received_with_delim(m: &Message) {
    assert_eq!(m.method(), Some(Method::Bye));
    let via = m.top_via().unwrap();
    assert_eq!(via.host, v6("2001:db8::a:1"));
    assert_eq!(via.received(), Some("[2001:db8::a:ff]"));
    assert_eq!(via.branch(), Some("z9hG4bKv6rcv1"));
}

fn received_no_delim(m: &Message) {
    assert_eq!(m.method(), Some(Method::Options));
    let via = m.top_via().unwrap();
    assert_eq!(via.host, v6("2001:db8::a:1"));
    assert_eq!(via.received(), Some("2001:db8::a:ff"));
    assert_eq!(via.branch(), Some("z9hG4bKv6rcv2"));
    assert_eq!(sip(contacts(m)[0].uri().unwrap()).host, v6("2001:db8::a:1"));
}

fn ipv6_in_sdp(m: &Message) {
    let r = sip(m.request_uri().unwrap());
    assert_eq!((r.user, r.host), (Some(&b"amy"[..]), v6("2001:db8::20")));
    assert_eq!(sip(m.to().unwrap().uri().unwrap()).host, v6("2001:db8::20"));
    assert_eq!(m.top_via().unwrap().host, v6("2001:db8::30"));
    // SDP writes IPv6 addresses without brackets.
    let body = m.body();
    assert_eq!(m.content_length(), Some(body.len()));
    assert!(memchr::memmem::find(body, b"\r\nc=IN IP6 2001:db8::30\r\n").is_some());
    assert!(memchr::memmem::find(body, b" IN IP6 2001:db8::30\r\ns=").is_some());
}

fn mult_ip_in_header(m: &Message) {
    let r = sip(m.request_uri().unwrap());
    assert_eq!(r.host, Host::Domain("h.example.net"));
    let v = vias(m);
    assert_eq!(v.len(), 3);
    assert_eq!(
        (v[0].transport, v[0].host, v[0].port),
        ("UDP", v6("2001:db8::a:1"), Some(6050))
    );
    assert_eq!(
        (v[1].transport, v[1].host, v[1].port),
        ("UDP", v4("192.0.2.1"), None)
    );
    assert_eq!(
        (v[2].transport, v[2].host, v[2].port),
        ("TCP", v6("2001:db8::a:ff"), None)
    );
    assert_eq!(v[2].received(), Some("192.0.2.201"));
}

fn mult_ip_in_sdp(m: &Message) {
    let body = m.body();
    assert_eq!(m.content_length(), Some(body.len()));
    let c_lines: Vec<_> = body
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"c="))
        .collect();
    assert_eq!(
        c_lines,
        [&b"c=IN IP4 192.0.2.1\r"[..], &b"c=IN IP6 2001:db8::1\r"[..]]
    );
}

fn ipv4_mapped_ipv6(m: &Message) {
    let v = vias(m);
    assert_eq!(
        (v[0].host, v[0].port),
        (v6("::ffff:192.0.2.10"), Some(19823))
    );
    assert_eq!((v[1].host, v[1].port), (v6("::ffff:192.0.2.2"), None));
    let c = contacts(m);
    assert_eq!(c[0].display_name, Some(&b"\"Cy desk\""[..]));
    assert_eq!(sip(c[0].uri().unwrap()).host, v6("::ffff:192.0.2.2"));
    assert!(memchr::memmem::find(m.body(), b"c=IN IP6 ::ffff:192.0.2.2\r\n").is_some());
}

fn abnf_3_colons(m: &Message) {
    let r = sip(m.request_uri().unwrap());
    assert_eq!(r.host, v6("2001:db8::192.0.2.1"));
    assert_eq!(
        sip(m.to().unwrap().uri().unwrap()).host,
        v6("2001:db8::192.0.2.1")
    );
    // Forwarded as received: the extra colon stays in the bytes.
    assert_eq!(
        m.request_uri_raw(),
        Some(&b"sip:amy@[2001:db8:::192.0.2.1]"[..])
    );
}

fn abnf_2_colons(m: &Message) {
    let r = sip(m.request_uri().unwrap());
    assert_eq!(r.host, v6("2001:db8::192.0.2.1"));
    assert_eq!(
        sip(m.to().unwrap().uri().unwrap()).host,
        v6("2001:db8::192.0.2.1")
    );
}
