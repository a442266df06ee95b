//! RFC 4475, "Session Initiation Protocol (SIP) Torture Test Messages": one fixture per
//! message of the RFC (our own messages of the same shape and torture, see
//! `tests/fixtures/generate.py`), and what the RFC expects a proxy to do with each.
//!
//! Where we part from the RFC the row says so in a comment. Two kinds:
//!
//! * leniency: the RFC allows rejecting the message, we accept it (and say what the proxy
//!   must then do);
//! * drop instead of 400: the RFC asks for a `400`, but the request is broken in a header a
//!   response copies (top Via, From, To, CSeq) or in its start line, so
//!   [`Message::answerable`] is false and the proxy drops it (see `lib.rs`).

mod torture;

use anchorage_sip::{unescape, HeaderName, Host, Message, Method, Uri};
use torture::{
    assert_table_covers_dir, contacts, run_section, sip, v4, vias, Case, Expect, ProxyAction, Stage,
};

const DIR: &str = "rfc4475";

use Expect::{Invalid, Semantic, Valid};
use ProxyAction::{Drop, Forward, Reply};
use Stage::{Parse, Validate};

const CASES: &[Case] = &[
    // ---- 3.1.1 Valid messages --------------------------------------------------------
    Case {
        name: "wsinv",
        section: "3.1.1.1",
        title: "A Short Tortuous INVITE",
        expect: Valid(wsinv),
    },
    Case {
        name: "intmeth",
        section: "3.1.1.2",
        title: "Wide Range of Valid Characters",
        expect: Valid(intmeth),
    },
    Case {
        name: "esc01",
        section: "3.1.1.3",
        title: "Valid Use of the % Escaping Mechanism",
        expect: Valid(esc01),
    },
    Case {
        name: "escnull",
        section: "3.1.1.4",
        title: "Escaped Nulls in URIs",
        expect: Valid(escnull),
    },
    Case {
        name: "esc02",
        section: "3.1.1.5",
        title: "Use of % When It Is Not an Escape",
        expect: Valid(esc02),
    },
    Case {
        name: "lwsdisp",
        section: "3.1.1.6",
        title: "Message with No LWS between Display Name and <",
        expect: Valid(lwsdisp),
    },
    Case {
        name: "longreq",
        section: "3.1.1.7",
        title: "Long Values in Header Fields",
        expect: Valid(longreq),
    },
    Case {
        name: "dblreq",
        section: "3.1.1.8",
        title: "Extra Trailing Octets in a UDP Datagram",
        expect: Valid(dblreq),
    },
    Case {
        name: "semiuri",
        section: "3.1.1.9",
        title: "Semicolon-Separated Parameters in URI User Part",
        expect: Valid(semiuri),
    },
    Case {
        name: "transports",
        section: "3.1.1.10",
        title: "Varied and Unknown Transport Types",
        expect: Valid(transports),
    },
    Case {
        name: "mpart01",
        section: "3.1.1.11",
        title: "Multipart MIME Message",
        expect: Valid(mpart01),
    },
    Case {
        name: "unreason",
        section: "3.1.1.12",
        title: "Unusual Reason Phrase",
        expect: Valid(unreason),
    },
    Case {
        name: "noreason",
        section: "3.1.1.13",
        title: "Empty Reason Phrase",
        expect: Valid(noreason),
    },
    // ---- 3.1.2 Invalid messages ------------------------------------------------------
    Case {
        name: "badinv01",
        section: "3.1.2.1",
        title: "Extraneous Header Field Separators",
        // RFC: should answer 400. The only Via value is the broken one, so there is no top
        // Via to send a response to: dropped.
        expect: Invalid {
            stage: Validate,
            reason: "bad Via header: parameter name is not a token",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "clerr",
        section: "3.1.2.2",
        title: "Content Length Larger Than Message",
        expect: Invalid {
            stage: Parse,
            reason: "Content-Length 9999 exceeds datagram body of",
            status: 400,
            action: Reply(400),
        },
    },
    Case {
        name: "ncl",
        section: "3.1.2.3",
        title: "Negative Content-Length",
        expect: Invalid {
            stage: Parse,
            reason: "bad Content-Length header: -999 is not a number",
            status: 400,
            action: Reply(400),
        },
    },
    Case {
        name: "scalar02",
        section: "3.1.2.4",
        title: "Request Scalar Fields with Overlarge Values",
        // RFC: should answer 400 because of the CSeq. A response copies CSeq, and this one
        // does not parse, so the request is not answerable: dropped. (Max-Forwards 256 alone
        // would be read as 256, see `scalar02_max_forwards_above_255`.)
        expect: Invalid {
            stage: Validate,
            reason: "bad CSeq header: sequence number is not a number below 2**31",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "scalarlg",
        section: "3.1.2.5",
        title: "Response Scalar Fields with Overlarge Values",
        // RFC: discard it. Retry-After and Warning are not read by this crate; the CSeq fails.
        expect: Invalid {
            stage: Validate,
            reason: "bad CSeq header: sequence number is not a number below 2**31",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "quotbal",
        section: "3.1.2.6",
        title: "Unterminated Quoted String in Display Name",
        // RFC: should answer 400. A response copies To, which does not parse: dropped.
        expect: Invalid {
            stage: Validate,
            reason: "bad To header: unterminated display name",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "ltgtruri",
        section: "3.1.2.7",
        title: "<> Enclosing Request-URI",
        expect: Invalid {
            stage: Validate,
            reason: "bad Request-URI: no scheme",
            status: 400,
            action: Reply(400),
        },
    },
    Case {
        name: "lwsruri",
        section: "3.1.2.8",
        title: "Malformed SIP Request-URI (embedded LWS)",
        // RFC: should answer 400. The Request-Line does not split into three parts, so even
        // the lenient parse fails: dropped.
        expect: Invalid {
            stage: Parse,
            reason: "bad start line: Request-URI contains white space",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "lwsstart",
        section: "3.1.2.9",
        title: "Multiple SP Separating Request-Line Elements",
        // RFC: acceptable to reject as malformed. Rejected at the start line: dropped.
        expect: Invalid {
            stage: Parse,
            reason: "bad start line: Request-URI contains white space",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "trws",
        section: "3.1.2.10",
        title: "SP Characters at End of Request-Line",
        // RFC: acceptable to reject as malformed. The last SP separates the version, so the
        // trailing ones end up in the "Request-URI": rejected at the start line, dropped.
        expect: Invalid {
            stage: Parse,
            reason: "bad start line: Request-URI contains white space",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "escruri",
        section: "3.1.2.11",
        title: "Escaped Headers in SIP Request-URI",
        // Leniency: the URI parser accepts headers in any SIP URI (RFC 3261 §19.1.1 forbids
        // them in a Request-URI, RFC 4475 allows rejecting or ignoring them). A proxy must
        // not forward them in the Request-URI: it answers 400 (or strips them).
        expect: Semantic {
            action: Reply(400),
            check: escruri,
        },
    },
    Case {
        name: "baddate",
        section: "3.1.2.12",
        title: "Invalid Time Zone in Date Header Field",
        // Leniency: Date is not read by this crate or the proxy; RFC 4475 allows ignoring it.
        expect: Semantic {
            action: Forward,
            check: baddate,
        },
    },
    Case {
        name: "regbadct",
        section: "3.1.2.13",
        title: "Failure to Enclose name-addr URI in <>",
        // Leniency: an addr-spec Contact with `?headers` is accepted (RFC 4475 allows
        // inferring the brackets when, as here, it is unambiguous). A proxy forwards the
        // REGISTER; registrar behaviour is out of scope.
        expect: Semantic {
            action: Forward,
            check: regbadct,
        },
    },
    Case {
        name: "badaspec",
        section: "3.1.2.14",
        title: "Spaces within addr-spec",
        // Leniency: LWS inside <...> is ignored (RFC 4475: "Elements attempting to be liberal
        // may ignore the spaces"). Forwarded unchanged.
        expect: Semantic {
            action: Forward,
            check: badaspec,
        },
    },
    Case {
        name: "baddn",
        section: "3.1.2.15",
        title: "Non-token Characters in Display Name",
        // RFC: reasonable to reject with 400. A response copies From, which does not parse:
        // dropped.
        expect: Invalid {
            stage: Validate,
            reason: "bad From header: display name must be tokens or a quoted string",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "badvers",
        section: "3.1.2.16",
        title: "Unknown Protocol Version",
        expect: Invalid {
            stage: Validate,
            reason: "unsupported SIP version SIP/7.0",
            status: 505,
            action: Reply(505),
        },
    },
    Case {
        name: "mismatch01",
        section: "3.1.2.17",
        title: "Start Line and CSeq Method Mismatch",
        expect: Invalid {
            stage: Validate,
            reason: "CSeq method INVITE does not match request method OPTIONS",
            status: 400,
            action: Reply(400),
        },
    },
    Case {
        name: "mismatch02",
        section: "3.1.2.18",
        title: "Unknown Method with CSeq Method Mismatch",
        // RFC: 501 preferred (particularly at proxies), 400 acceptable. We answer 400: the
        // mismatch is found before the method is looked at.
        expect: Invalid {
            stage: Validate,
            reason: "CSeq method INVITE does not match request method FUTUREMETHOD",
            status: 400,
            action: Reply(400),
        },
    },
    Case {
        name: "bigcode",
        section: "3.1.2.19",
        title: "Overlarge Response Code",
        expect: Invalid {
            stage: Parse,
            reason: "bad start line: status code is not three digits",
            status: 400,
            action: Drop,
        },
    },
    // ---- 3.2 Transaction layer semantics ---------------------------------------------
    Case {
        name: "badbranch",
        section: "3.2.1",
        title: "Missing Transaction Identifier",
        // RFC: reject with 400 (preferably statelessly) or fall back to RFC 2543 matching.
        // A branch that is only the cookie would match every such request: 400.
        expect: Semantic {
            action: Reply(400),
            check: badbranch,
        },
    },
    // ---- 3.3 Application layer semantics ---------------------------------------------
    Case {
        name: "insuf",
        section: "3.3.1",
        title: "Missing Required Header Fields",
        // RFC: ideally answer 400. Without Call-ID, From and To a response cannot be built
        // (RFC 3261 §8.2.6.2 copies them): dropped.
        expect: Invalid {
            stage: Validate,
            reason: "missing Call-ID",
            status: 400,
            action: Drop,
        },
    },
    Case {
        name: "unkscm",
        section: "3.3.2",
        title: "Request-URI with Unknown Scheme",
        expect: Semantic {
            action: Reply(416),
            check: unkscm,
        },
    },
    Case {
        name: "novelsc",
        section: "3.3.3",
        title: "Request-URI with Known but Atypical Scheme",
        // A proxy that never routes this scheme treats it as unknown: 416.
        expect: Semantic {
            action: Reply(416),
            check: novelsc,
        },
    },
    Case {
        name: "unksm2",
        section: "3.3.4",
        title: "Unknown URI Schemes in Header Fields",
        // Proxies treat it like any other request (a registrar would answer 400).
        expect: Semantic {
            action: Forward,
            check: unksm2,
        },
    },
    Case {
        name: "bext01",
        section: "3.3.5",
        title: "Proxy-Require and Require",
        // 420 with Unsupported listing the Proxy-Require tags (Require is for the UAS).
        expect: Semantic {
            action: Reply(420),
            check: bext01,
        },
    },
    Case {
        name: "invut",
        section: "3.3.6",
        title: "Unknown Content-Type",
        // The UAS answers 415; a proxy does not look at the body type.
        expect: Semantic {
            action: Forward,
            check: invut,
        },
    },
    Case {
        name: "regaut01",
        section: "3.3.7",
        title: "Unknown Authorization Scheme",
        // A proxy forwards it with the Authorization header unchanged.
        expect: Semantic {
            action: Forward,
            check: regaut01,
        },
    },
    Case {
        name: "multi01",
        section: "3.3.8",
        title: "Multiple Values in Single Value Required Fields",
        expect: Invalid {
            stage: Validate,
            reason: "more than one Call-ID header",
            status: 400,
            action: Reply(400),
        },
    },
    Case {
        name: "mcl01",
        section: "3.3.9",
        title: "Multiple Content-Length Values",
        expect: Invalid {
            stage: Parse,
            reason: "more than one Content-Length header",
            status: 400,
            action: Reply(400),
        },
    },
    Case {
        name: "bcast",
        section: "3.3.10",
        title: "200 OK Response with Broadcast Via Header Field Value",
        // A proxy must not send the response on to 255.255.255.255: it drops it.
        expect: Semantic {
            action: Drop,
            check: bcast,
        },
    },
    Case {
        name: "zeromf",
        section: "3.3.11",
        title: "Max-Forwards of Zero",
        expect: Semantic {
            action: Reply(483),
            check: zeromf,
        },
    },
    Case {
        name: "cparam01",
        section: "3.3.12",
        title: "REGISTER with a Contact Header Parameter",
        expect: Semantic {
            action: Forward,
            check: cparam01,
        },
    },
    Case {
        name: "cparam02",
        section: "3.3.13",
        title: "REGISTER with a url-parameter",
        expect: Semantic {
            action: Forward,
            check: cparam02,
        },
    },
    Case {
        name: "regescrt",
        section: "3.3.14",
        title: "REGISTER with a URL Escaped Header",
        expect: Semantic {
            action: Forward,
            check: regescrt,
        },
    },
    Case {
        name: "sdp01",
        section: "3.3.15",
        title: "Unacceptable Accept Offering",
        // The UAS answers 406 (or a body-less answer); a proxy does not look at Accept.
        expect: Semantic {
            action: Forward,
            check: sdp01,
        },
    },
    // ---- 3.4 Backward compatibility --------------------------------------------------
    Case {
        name: "inv2543",
        section: "3.4.1",
        title: "INVITE with RFC 2543 Syntax",
        // Forwarded: the proxy adds Max-Forwards and matches the transaction the RFC 2543
        // way (no branch).
        expect: Semantic {
            action: Forward,
            check: inv2543,
        },
    },
];

#[test]
fn every_fixture_has_a_row_and_every_row_a_fixture() {
    assert_table_covers_dir(DIR, CASES);
}

#[test]
fn section_3_1_1_valid_messages() {
    assert_eq!(run_section(DIR, CASES, "3.1.1."), 13);
}

#[test]
fn section_3_1_2_invalid_messages() {
    assert_eq!(run_section(DIR, CASES, "3.1.2."), 19);
}

#[test]
fn section_3_2_transaction_layer_semantics() {
    assert_eq!(run_section(DIR, CASES, "3.2."), 1);
}

#[test]
fn section_3_3_application_layer_semantics() {
    assert_eq!(run_section(DIR, CASES, "3.3."), 15);
}

#[test]
fn section_3_4_backward_compatibility() {
    assert_eq!(run_section(DIR, CASES, "3.4."), 1);
}

#[test]
fn scalar02_max_forwards_above_255() {
    // RFC 3261 §20.22 gives Max-Forwards 0-255; RFC 4475 lets an element treat a value
    // outside it as absent. Leniency: we read any number that fits a u32.
    let m = Message::parse(torture::fixture(DIR, "scalar02")).unwrap();
    assert_eq!(m.max_forwards().unwrap(), Some(256));
}

// ---- checks of the typed views, one per case -----------------------------------------

fn wsinv(m: &Message) {
    assert_eq!(m.method(), Some(Method::Invite));
    let r = sip(m.request_uri().unwrap());
    assert_eq!(r.user, Some(&b"carol"[..]));
    assert_eq!(r.host, Host::Domain("chair.example.com"));
    assert_eq!(r.params.get("oddparam"), Some(None));
    // "TO :" and the value folded onto the next line.
    assert_eq!(m.header(HeaderName::To).unwrap().name(), b"TO");
    let to = m.to().unwrap();
    assert_eq!(to.uri_raw, b"sip:carol@chair.example.com");
    assert_eq!(to.tag(), Some("5550101x"));
    // Escaped backslash and quote in the display name, the tag two folded lines down.
    let from = m.from().unwrap();
    assert_eq!(from.display_name, Some(&br#""Dave Example \\\"""#[..]));
    assert_eq!(from.uri_raw, b"sip:dave@example.net");
    assert_eq!(from.tag(), Some("77qq1"));
    // Leading zeros.
    assert_eq!(m.max_forwards().unwrap(), Some(42));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (17, Method::Invite));
    assert_eq!(m.call_id().unwrap(), "wsinv.k2j3h4@192.0.2.21");
    // LWS around every slash, folding inside sent-protocol, a comma list in a compact v.
    let v = vias(m);
    assert_eq!(v.len(), 3);
    assert_eq!(
        (v[0].protocol, v[0].version, v[0].transport),
        ("SIP", "2.0", "UDP")
    );
    assert_eq!(v[0].host, v4("192.0.2.22"));
    assert_eq!(v[0].branch(), Some("8a7sdf6"));
    assert!(!v[0].has_magic_cookie());
    assert_eq!(v[1].transport, "TCP");
    assert_eq!(v[1].host, Host::Domain("relay.example.com"));
    assert_eq!(v[1].branch(), Some("z9hG4bKw5s1"));
    assert_eq!(v[2].transport, "UDP");
    assert_eq!(v[2].host, v4("198.51.100.7"));
    assert_eq!(v[2].branch(), Some("z9hG4bKw5s2"));
    // Empty Subject in compact form.
    let s = m.header(HeaderName::Subject).unwrap();
    assert_eq!((s.name(), s.value()), (&b"s"[..], &b""[..]));
    // Unknown headers: a folded value, and one that is not generic-param syntax.
    let h = m.headers_named(b"StrangeNewHeader").next().unwrap();
    assert_eq!(h.value(), b"first part of value\r\n second part of value");
    let h = m.headers_named(b"headerwithoddvalue").next().unwrap();
    assert_eq!(h.value(), b";;,,;;,;");
    // Unknown URI parameters with and without a value.
    let routes: Vec<_> = m.routes().map(|r| r.unwrap()).collect();
    assert_eq!(routes.len(), 1);
    let route = sip(routes[0].uri().unwrap());
    assert!(route.lr());
    assert_eq!(route.params.get("futureparam"), Some(Some(&b"x"[..])));
    assert_eq!(route.params.get("futureflag"), Some(None));
    // Quoted-pairs in a display name with no space before it, header parameters with LWS.
    let c = contacts(m);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].display_name, Some(&br#""Quoted \"\" name""#[..]));
    assert_eq!(c[0].params.get("extparam"), Some(Some(&b"extvalue"[..])));
    assert_eq!(c[0].params.get("flagparam"), Some(None));
    assert_eq!(c[0].params.get("q"), Some(Some(&b"0.5"[..])));
    assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
    assert_eq!(m.content_length(), Some(m.body().len()));
    assert!(m.body().starts_with(b"v=0\r\n"));
}

const INTMETH: &str = "~Odd!Method.9876543210_*+`%really'-";
const INTMETH_USER: &[u8] = b"2_strange.USER~(no-doubt!)&it's+so$/wild?,/;;*";

fn intmeth(m: &Message) {
    // % is not an escape in a method: this is an unknown method, spelled as written.
    assert_eq!(m.method(), Some(Method::Other(INTMETH)));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (271828, Method::Other(INTMETH)));
    let r = sip(m.request_uri().unwrap());
    assert_eq!(r.user, Some(INTMETH_USER));
    assert_eq!(
        r.password,
        Some(&b"&pw+is=2,odd!*pas$wo~rd_as.(well-so)"[..])
    );
    assert_eq!(r.host, Host::Domain("example.net"));
    assert!(r.params.is_empty());
    assert_eq!(r.headers, None);
    let v = vias(m);
    assert_eq!(v[0].branch(), Some("z9hG4bK-.!%77*_+`'~"));
    // Quoted-pairs of BEL, NUL and DEL.
    let to = m.to().unwrap();
    assert_eq!(
        to.display_name,
        Some(&b"\"ring:\\\x07 zero:\\\x00 rub:\\\x7f\""[..])
    );
    assert_eq!(sip(to.uri().unwrap()).user, Some(INTMETH_USER));
    // A display name of odd tokens; an odd parameter name with a UTF-8 quoted value.
    let from = m.from().unwrap();
    assert_eq!(from.display_name, Some(&b"tok1~` tok2'+_ tok3*%!.-"[..]));
    assert_eq!(
        from.params.get("oddParam''~+*_!.-%"),
        Some(Some("\"λειτουργεί\"".as_bytes()))
    );
    assert_eq!(from.tag(), Some("_tag~2'+`*%!-."));
    // word characters: % " <> [] {} () carry no meaning in a Call-ID.
    assert_eq!(
        m.call_id().unwrap(),
        "intmeth.abc%QZ-!.*_+'@xyz`~)(><:\\/\"][?}{"
    );
    assert_eq!(m.max_forwards().unwrap(), Some(255));
    let ext: Vec<_> = m.headers_named(b"extHeader-!.%*+_`'~").collect();
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0].id(), HeaderName::Other);
    assert_eq!(ext[0].value(), "\u{feff}テスト値".as_bytes());
}

fn esc01(m: &Message) {
    // A sips: URI escaped into the user part is a user name, not a scheme.
    let r = sip(m.request_uri().unwrap());
    assert!(!r.secure);
    assert_eq!(r.user, Some(&b"sips%3Aann%40example.org"[..]));
    assert_eq!(&*unescape(r.user.unwrap()), b"sips:ann@example.org");
    assert_eq!(r.host, Host::Domain("example.net"));
    let to = sip(m.to().unwrap().uri().unwrap());
    assert_eq!(&*unescape(to.user.unwrap()), b"ann");
    let from = m.from().unwrap();
    assert_eq!(
        &*unescape(sip(from.uri().unwrap()).user.unwrap()),
        b"I am spaced"
    );
    assert_eq!(from.tag(), Some("5151"));
    // Escaped URI parameter names and values; unescaping is done once: value%41, not valueA.
    let c = contacts(m);
    let u = sip(c[0].uri().unwrap());
    assert_eq!(&*unescape(u.user.unwrap()), b"caller");
    let params: Vec<_> = u.params.iter().collect();
    assert_eq!(
        params,
        [
            (&b"%6C%72"[..], None),
            (&b"n%61me"[..], Some(&b"v%61lue%25%34%31"[..]))
        ]
    );
    assert_eq!(&*unescape(params[0].0), b"lr");
    assert_eq!(&*unescape(params[1].0), b"name");
    assert_eq!(&*unescape(params[1].1.unwrap()), b"value%41");
    // Compact forms of Call-ID and Content-Type.
    assert_eq!(m.call_id().unwrap(), "esc01.88a7sd6f5asd-1");
    assert_eq!(m.header(HeaderName::ContentType).unwrap().name(), b"C");
    assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
}

fn escnull(m: &Message) {
    assert_eq!(m.method(), Some(Method::Register));
    // The AOR keeps its NUL: not shortened to "zero-".
    let to = sip(m.to().unwrap().uri().unwrap());
    assert_eq!(&*unescape(to.user.unwrap()), b"zero-\0-zero");
    let from = sip(m.from().unwrap().uri().unwrap());
    assert_eq!(&*unescape(from.user.unwrap()), b"zero-\0-zero");
    // Two distinct contacts.
    let users: Vec<_> = contacts(m)
        .iter()
        .map(|c| unescape(sip(c.uri().unwrap()).user.unwrap()).into_owned())
        .collect();
    assert_eq!(users, [b"\0".to_vec(), b"\0\0".to_vec()]);
    assert_eq!(m.content_length(), Some(0));
}

fn esc02(m: &Message) {
    // Not REGISTER: an unknown method spelled with %.
    assert_eq!(m.method(), Some(Method::Other("RE%47IST%45R")));
    assert_ne!(m.method(), Some(Method::Register));
    assert_eq!(m.cseq().unwrap().method, Method::Other("RE%47IST%45R"));
    assert_eq!(m.to().unwrap().display_name, Some(&b"\"%Z%45\""[..]));
    assert_eq!(m.from().unwrap().display_name, Some(&b"\"%Z%45\""[..]));
    assert_eq!(vias(m)[0].branch(), Some("z9hG4bK77%gzhost1"));
    // Two Contact values, not three: C%6Fntact is another header.
    let hosts: Vec<_> = contacts(m)
        .iter()
        .map(|c| sip(c.uri().unwrap()).host)
        .collect();
    assert_eq!(
        hosts,
        [
            Host::Domain("h1.example.org"),
            Host::Domain("h3.example.org")
        ]
    );
    let other: Vec<_> = m.headers_named(b"C%6Fntact").collect();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].id(), HeaderName::Other);
    assert_eq!(other[0].value(), b"<sip:alias2@h2.example.org>");
}

fn lwsdisp(m: &Message) {
    let from = m.from().unwrap();
    assert_eq!(from.display_name, Some(&b"frank"[..]));
    assert_eq!(from.uri_raw, b"sip:frank@example.org");
    assert_eq!(from.tag(), Some("909"));
}

fn longreq(m: &Message) {
    let to = m.to().unwrap();
    let dn = format!(
        "\"I carry a display name of {} magnitude\"",
        "hugehuge".repeat(12)
    );
    assert_eq!(to.display_name, Some(dn.as_bytes()));
    let u = sip(to.uri().unwrap());
    assert_eq!(u.port, Some(6000));
    let p1 = format!("very{}value", "long".repeat(24));
    let p2 = format!("param{}", "name".repeat(28));
    let p3 = format!("flag{}ParamWithNoValue", "long".repeat(26));
    assert_eq!(u.params.get("futureparam1"), Some(Some(p1.as_bytes())));
    assert_eq!(u.params.get(&p2), Some(Some(&b"short"[..])));
    assert_eq!(u.params.get(&p3), Some(None));
    assert_eq!(u.params.iter().count(), 3);
    let from = m.from().unwrap();
    let user = "remarkablylongcallername".repeat(5);
    assert_eq!(sip(from.uri().unwrap()).user, Some(user.as_bytes()));
    let tag = format!("{}42", "3141592653".repeat(16));
    assert_eq!(from.tag(), Some(tag.as_str()));
    let hp = format!("unknownhdrparam{}", "name".repeat(20));
    let hv = format!("hdrparamvalue{}", "value".repeat(15));
    assert_eq!(from.params.get(&hp), Some(Some(hv.as_bytes())));
    let flag = format!("valuelessparam{}", "name".repeat(10));
    assert_eq!(from.params.get(&flag), Some(None));
    let callid = format!("longreq.{}longcallid", "really".repeat(25));
    assert_eq!(m.call_id().unwrap(), callid);
    let hname = format!("Unknown-{}-Name", "Long".repeat(20));
    let h = m.headers_named(hname.as_bytes()).next().unwrap();
    assert!(h.value().starts_with(b"unknown-longlong"));
    assert!(h.value().ends_with(b"long-parameter-value"));
    // 34 Via values under every spelling of Via and v, topmost first.
    let v = vias(m);
    assert_eq!(v.len(), 34);
    for (i, via) in v[..33].iter().enumerate() {
        let host = format!("relay{}.example.net", 33 - i);
        assert_eq!(via.host, Host::Domain(&host), "Via #{i}");
        assert_eq!(via.branch(), None);
    }
    let names: Vec<_> = m.headers_of(HeaderName::Via).map(|h| h.name()).collect();
    assert_eq!(names.len(), 34);
    assert!(names.contains(&&b"vIA"[..]) && names.contains(&&b"V"[..]));
    let last = &v[33];
    assert_eq!(last.host, Host::Domain("origin.example.net"));
    assert_eq!(last.received(), Some("192.0.2.5"));
    let branch = format!("very{}branchvalue", "long".repeat(50));
    assert_eq!(last.branch(), Some(branch.as_str()));
    assert!(!last.has_magic_cookie());
    assert_eq!(
        contacts(m)[0].uri_raw.len(),
        "sip:@h5.example.net".len() + user.len()
    );
    assert_eq!(m.content_length(), Some(m.body().len()));
}

fn dblreq(m: &Message) {
    // The REGISTER alone: the INVITE-looking octets after Content-Length 0 are not part of it.
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(m.content_length(), Some(0));
    assert_eq!(m.body(), b"");
    assert!(m.as_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));
    assert!(memchr::memmem::find(m.as_bytes(), b"INVITE").is_none());
    assert_eq!(m.headers().len(), 8);
    assert_eq!(m.call_id().unwrap(), "dblreq.first.9a8s7d6f");
    assert_eq!(contacts(m)[0].uri_raw, b"sip:gina@h9.example.org");
}

fn semiuri(m: &Message) {
    // The user is "joan;par=j@example.net"; the URI has no parameters.
    let r = sip(m.request_uri().unwrap());
    assert_eq!(r.user, Some(&b"joan;par=j%40example.net"[..]));
    assert_eq!(&*unescape(r.user.unwrap()), b"joan;par=j@example.net");
    assert_eq!(r.host, Host::Domain("example.org"));
    assert!(r.params.is_empty());
    // A comma list folded over three lines.
    let accept = m.headers_named(b"Accept").next().unwrap();
    assert_eq!(accept.values().count(), 6);
    assert_eq!(accept.values().last(), Some(&b"message/sipfrag"[..]));
}

fn transports(m: &Message) {
    let v: Vec<_> = vias(m)
        .iter()
        .map(|v| (v.transport, v.host, v.has_magic_cookie()))
        .collect();
    assert_eq!(
        v,
        [
            ("UDP", Host::Domain("t1.example.org"), true),
            ("SCTP", Host::Domain("t2.example.org"), true),
            ("TLS", Host::Domain("t3.example.org"), true),
            ("UNKNOWN", Host::Domain("t4.example.org"), true),
            ("TCP", Host::Domain("t5.example.org"), true),
        ]
    );
    assert_eq!(m.call_id().unwrap(), "transports.zx9cv8bn7m");
}

fn mpart01(m: &Message) {
    assert_eq!(m.method(), Some(Method::Message));
    let via = m.top_via().unwrap();
    assert_eq!((via.host, via.port), (v4("127.0.0.1"), Some(5071)));
    assert_eq!(via.rport(), Some(None));
    let route = m.routes().next().unwrap().unwrap();
    let u = sip(route.uri().unwrap());
    assert_eq!((u.host, u.port), (v4("127.0.0.1"), Some(5081)));
    assert_eq!(
        m.content_type(),
        Some(&b"multipart/mixed;boundary=b0undary5e6f7a"[..])
    );
    // Framed by Content-Length: the binary part (NULs, non-UTF-8, a CRLF of its own) is all
    // there, and the body ends with the closing boundary.
    let body = m.body();
    assert_eq!(m.content_length(), Some(body.len()));
    assert!(body.contains(&0));
    assert!(std::str::from_utf8(body).is_err());
    assert!(body.starts_with(b"--b0undary5e6f7a\r\n"));
    assert!(body.ends_with(b"\r\n--b0undary5e6f7a--\r\n"));
    assert!(m.headers_named(b"Identity").next().is_some());
}

fn unreason(m: &Message) {
    assert_eq!(m.status(), Some(200));
    assert_eq!(
        m.reason_phrase(),
        Some("= 3**2 * 2**4 εκατόν σαράντα τέσσερα".as_bytes())
    );
    assert_eq!(m.to().unwrap().tag(), Some("4444"));
    assert_eq!(m.content_length(), Some(m.body().len()));
}

fn noreason(m: &Message) {
    assert_eq!(m.status(), Some(100));
    assert_eq!(m.reason_phrase(), Some(&b""[..]));
    assert!(m.as_bytes().starts_with(b"SIP/2.0 100 \r\n"));
}

fn escruri(m: &Message) {
    let r = sip(m.request_uri().unwrap());
    assert_eq!(r.headers, Some(&b"Route=%3Csip:example.net%3E"[..]));
    assert_eq!(&*unescape(r.headers.unwrap()), b"Route=<sip:example.net>");
    // Not turned into a header.
    assert_eq!(m.routes().count(), 0);
}

fn baddate(m: &Message) {
    let date = m.headers_named(b"Date").next().unwrap();
    assert_eq!(date.value(), b"Sat, 01 Jan 2011 09:00:00 PST");
}

fn regbadct(m: &Message) {
    let c = contacts(m);
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].uri_raw,
        b"sip:yuri@example.org?Route=%3Csip:sip.example.org%3E"
    );
    assert_eq!(
        sip(c[0].uri().unwrap()).headers,
        Some(&b"Route=%3Csip:sip.example.org%3E"[..])
    );
    assert!(c[0].params.is_empty());
}

fn badaspec(m: &Message) {
    let to = m.to().unwrap();
    assert_eq!(to.display_name, Some(&b"\"Jones, Bob\""[..]));
    assert_eq!(to.uri_raw, b"sip:bob.j@example.org");
    assert_eq!(
        m.from().unwrap().display_name,
        Some(&b"\"Smith, Alice\""[..])
    );
    // Forwarded as received: the spaces are still in the header.
    assert_eq!(
        m.header(HeaderName::To).unwrap().value(),
        b"\"Jones, Bob\" < sip:bob.j@example.org >"
    );
}

fn badbranch(m: &Message) {
    let via = m.top_via().unwrap();
    assert_eq!(via.branch(), Some("z9hG4bK"));
    // The cookie is there, the transaction identifier after it is not.
    assert!(via.has_magic_cookie());
}

fn unkscm(m: &Message) {
    assert_eq!(
        m.request_uri().unwrap(),
        Uri::Other {
            scheme: "neverHeardOfIt",
            rest: &b"entirely-opaque-content"[..]
        }
    );
    // Routing must not fall back to the To header, which is a SIP URI here.
    assert!(matches!(m.to().unwrap().uri().unwrap(), Uri::Sip(_)));
}

fn novelsc(m: &Message) {
    assert_eq!(
        m.request_uri().unwrap(),
        Uri::Other {
            scheme: "soap.beeps",
            rest: &b"//192.0.2.104:3003"[..]
        }
    );
}

fn unksm2(m: &Message) {
    assert!(matches!(
        m.to().unwrap().uri().unwrap(),
        Uri::Other {
            scheme: "isbn",
            rest: b"9780000000002"
        }
    ));
    let from = m.from().unwrap();
    assert!(matches!(
        from.uri().unwrap(),
        Uri::Other { scheme: "http", .. }
    ));
    assert_eq!(from.tag(), Some("3939"));
    assert!(matches!(
        contacts(m)[0].uri().unwrap(),
        Uri::Other {
            scheme: "name",
            rest: b"Some_Person"
        }
    ));
    assert!(matches!(m.request_uri().unwrap(), Uri::Sip(_)));
}

fn bext01(m: &Message) {
    assert_eq!(
        m.proxy_require().collect::<Vec<_>>(),
        ["noProxyKnowsThis", "norDoesAnyOtherProxy"]
    );
    assert_eq!(
        m.require().collect::<Vec<_>>(),
        ["notSupportedAnywhere", "alsoUnknownHere"]
    );
}

fn invut(m: &Message) {
    assert_eq!(m.content_type(), Some(&b"application/no-such-format"[..]));
    assert!(m.body().starts_with(b"<media>\r\n"));
    assert_eq!(m.content_length(), Some(m.body().len()));
}

fn regaut01(m: &Message) {
    let auth = m.header(HeaderName::Authorization).unwrap();
    assert_eq!(auth.value(), b"SchemeNobodyKnows opaque-blob=here");
    assert_eq!(m.content_length(), Some(0));
}

fn bcast(m: &Message) {
    assert_eq!(m.status(), Some(200));
    let v = vias(m);
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].host, v4("255.255.255.255"));
}

fn zeromf(m: &Message) {
    assert_eq!(m.max_forwards().unwrap(), Some(0));
}

fn cparam01(m: &Message) {
    // addr-spec form: ;mysteryparam is a Contact parameter, not a URI parameter.
    let c = contacts(m);
    assert_eq!(c[0].uri_raw, b"sip:+15550100@gw1.example.net");
    assert!(sip(c[0].uri().unwrap()).params.is_empty());
    assert_eq!(c[0].params.get("mysteryparam"), Some(None));
}

fn cparam02(m: &Message) {
    // name-addr form: ;mysteryparam is a URI parameter.
    let c = contacts(m);
    assert_eq!(c[0].uri_raw, b"sip:+15550100@gw1.example.net;mysteryparam");
    assert_eq!(
        sip(c[0].uri().unwrap()).params.get("mysteryparam"),
        Some(None)
    );
    assert!(c[0].params.is_empty());
}

fn regescrt(m: &Message) {
    assert_eq!(m.header(HeaderName::Contact).unwrap().name(), b"M");
    let u = sip(contacts(m)[0].uri().unwrap());
    assert_eq!(u.headers, Some(&b"Route=%3Csip:sip.example.org%3E"[..]));
    assert_eq!(
        &*unescape(u.headers.unwrap()),
        b"Route=<sip:sip.example.org>"
    );
    assert_eq!(m.content_length(), Some(0));
}

fn sdp01(m: &Message) {
    let accept = m.headers_named(b"Accept").next().unwrap();
    assert_eq!(accept.value(), b"text/unheard-of");
    assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
}

fn inv2543(m: &Message) {
    let via = m.top_via().unwrap();
    assert_eq!(via.branch(), None);
    assert!(!via.has_magic_cookie());
    assert_eq!(m.from().unwrap().tag(), None);
    assert_eq!(m.max_forwards().unwrap(), None);
    // No Content-Length: the body is the rest of the datagram.
    assert_eq!(m.content_length(), None);
    assert!(m.body().starts_with(b"v=0\r\n"));
    assert!(m.body().ends_with(b"m=audio 40000 RTP/AVP 0\r\n"));
    let rr = m.record_routes().next().unwrap().unwrap();
    assert_eq!(
        sip(rr.uri().unwrap()).maddr(),
        Some(&b"ss2.example.org"[..])
    );
    // addr-spec To: ;user=phone is a header parameter.
    assert_eq!(
        m.to().unwrap().params.get("user"),
        Some(Some(&b"phone"[..]))
    );
}
