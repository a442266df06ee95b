//! Parsing, typed views and validation of whole messages.

use anchorage_sip::{Contact, HeaderName, Host, Message, Method, ParseError, Uri};
use bytes::Bytes;

fn msg(s: &str) -> Message {
    Message::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
}

fn err(s: &str) -> ParseError {
    Message::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap_err()
}

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
v: SIP/2.0/TCP 192.0.2.5:5070;branch=z9hG4bK2, SIP/2.0/UDP [2001:db8::1];rport=5061;received=192.0.2.9\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
route: <sip:p3.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
f: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
m: <sip:alice@pc33.atlanta.example.com>\r\n\
Subject: folded\r\n  across lines\r\n\
Supported: 100rel, timer\r\n\
Content-Type: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\n";

#[test]
fn request_line_and_every_typed_view() {
    let m = msg(INVITE);
    assert!(m.is_request());
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.status(), None);
    assert_eq!(m.version(), b"SIP/2.0");
    let Uri::Sip(ruri) = m.request_uri().unwrap() else {
        panic!()
    };
    assert_eq!(ruri.user, Some(&b"bob"[..]));
    assert_eq!(ruri.host, Host::Domain("biloxi.example.com"));

    let vias: Vec<_> = m.vias().map(|v| v.unwrap()).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some("z9hG4bKnashds8"));
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[1].port, Some(5070));
    assert_eq!(vias[2].host, Host::Ipv6("2001:db8::1".parse().unwrap()));
    assert_eq!(vias[2].rport(), Some(Some(5061)));
    assert_eq!(vias[2].received(), Some("192.0.2.9"));
    assert_eq!(m.top_via().unwrap(), vias[0]);

    let routes: Vec<_> = m.routes().map(|r| r.unwrap().uri_raw).collect();
    assert_eq!(
        routes,
        [
            &b"sip:p1.example.com;lr"[..],
            b"sip:p2.example.com;lr",
            b"sip:p3.example.com;lr"
        ]
    );
    assert_eq!(m.record_routes().count(), 0);

    let from = m.from().unwrap();
    assert_eq!(from.display_name, Some(&b"\"Alice, A.\""[..]));
    assert_eq!(from.tag(), Some("1928301774"));
    let to = m.to().unwrap();
    assert_eq!(to.display_name, Some(&b"Bob"[..]));
    assert_eq!(to.tag(), None);
    assert_eq!(
        m.call_id().unwrap(),
        "a84b4c76e66710@pc33.atlanta.example.com"
    );
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (314159, Method::Invite));
    assert_eq!(m.max_forwards().unwrap(), Some(70));
    let contacts: Vec<_> = m.contacts().map(|c| c.unwrap()).collect();
    assert!(
        matches!(contacts[..], [Contact::Address(ref a)] if a.uri_raw == b"sip:alice@pc33.atlanta.example.com")
    );
    assert_eq!(m.supported().collect::<Vec<_>>(), ["100rel", "timer"]);
    assert_eq!(m.require().count(), 0);
    assert_eq!(m.content_type(), Some(&b"application/sdp"[..]));
    assert_eq!(m.content_length(), Some(4));
    assert_eq!(m.body(), b"v=0\n");

    let subject = m.header(HeaderName::Subject).unwrap();
    assert_eq!(subject.value(), b"folded\r\n  across lines");
    assert_eq!(subject.raw_line(), b"Subject: folded\r\n  across lines\r\n");
    let names: Vec<_> = m.headers().map(|h| h.name()).collect();
    assert_eq!(names[..4], [&b"Via"[..], b"v", b"Max-Forwards", b"Route"]);
    assert_eq!(m.headers_of(HeaderName::Route).count(), 2);
    assert_eq!(m.headers_named(b"ROUTE").count(), 2);
    assert_eq!(m.as_bytes(), INVITE.as_bytes());
    m.validate().unwrap();
    assert!(m.answerable());
}

#[test]
fn response_status_line() {
    let m = msg("SIP/2.0 180 Ringing: soon\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
    assert!(!m.is_request());
    assert_eq!(m.status(), Some(180));
    assert_eq!(m.reason_phrase(), Some(&b"Ringing: soon"[..]));
    assert_eq!(m.method(), None);
    assert_eq!(
        m.request_uri(),
        Err(ParseError::StartLine("a response has no Request-URI"))
    );
    m.validate().unwrap();
    assert!(!m.answerable());
}

#[test]
fn content_length_rules() {
    let e = err("OPTIONS sip:h SIP/2.0\r\nContent-Length: 400\r\n\r\nshort body");
    assert_eq!(
        e,
        ParseError::ContentLengthExceedsBody {
            declared: 400,
            available: 10
        }
    );
    assert_eq!(
        e.reason(),
        "Content-Length 400 exceeds datagram body of 10 bytes"
    );
    assert_eq!(
        err("OPTIONS sip:h SIP/2.0\r\nl: -5\r\n\r\n").reason(),
        "bad Content-Length header: -5 is not a number"
    );
    assert_eq!(
        err("OPTIONS sip:h SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab"),
        ParseError::DuplicateHeader(HeaderName::ContentLength)
    );
    // Bytes past Content-Length are discarded; without one the body is the rest (UDP).
    let m = msg("OPTIONS sip:h SIP/2.0\r\nl: 2\r\n\r\nabcdef");
    assert_eq!(m.body(), b"ab");
    assert_eq!(m.as_bytes(), b"OPTIONS sip:h SIP/2.0\r\nl: 2\r\n\r\nab");
    let m = msg("OPTIONS sip:h SIP/2.0\r\nX: y\r\n\r\nabc");
    assert_eq!((m.content_length(), m.body()), (None, &b"abc"[..]));
    // Lenient parsing keeps a request whose Content-Length lies.
    let m = Message::parse_lenient(Bytes::from_static(
        b"OPTIONS sip:h SIP/2.0\r\nl: 400\r\n\r\nab",
    ))
    .unwrap();
    assert_eq!(m.body(), b"ab");
}

#[test]
fn start_line_and_header_line_errors() {
    for (s, e) in [
        ("", ParseError::Empty),
        ("\r\n\r\n", ParseError::Empty),
        (
            "INVITE sip:h SIP/2.0\r\nVia: x\r\n",
            ParseError::NoHeaderEnd,
        ),
        (
            "INVITE sip:h SIP/2.0\nVia: x\r\n\r\n",
            ParseError::LineEnding { line: 1 },
        ),
        (
            "INVITE sip:h SIP/2.0\r\nVia: x\n\r\n",
            ParseError::LineEnding { line: 2 },
        ),
        (
            "INVITE sip:h\r\n\r\n",
            ParseError::StartLine("Request-Line is not Method SP Request-URI SP SIP-Version"),
        ),
        (
            "INVITE sip:a b SIP/2.0\r\n\r\n",
            ParseError::StartLine("Request-URI contains white space"),
        ),
        (
            "INV@TE sip:h SIP/2.0\r\n\r\n",
            ParseError::StartLine("method is not a token"),
        ),
        (
            "INVITE sip:h HTTP/1.1\r\n\r\n",
            ParseError::StartLine("version is not SIP/x.y"),
        ),
        (
            "SIP/2.0 2000 OK\r\n\r\n",
            ParseError::StartLine("status code is not three digits"),
        ),
        (
            "INVITE sip:h SIP/2.0\r\n continued\r\n\r\n",
            ParseError::HeaderLine {
                line: 2,
                what: "continuation line before the first header",
            },
        ),
        (
            "INVITE sip:h SIP/2.0\r\nVia x\r\n\r\n",
            ParseError::HeaderLine {
                line: 2,
                what: "no colon",
            },
        ),
        (
            "INVITE sip:h SIP/2.0\r\nV ia: x\r\n\r\n",
            ParseError::HeaderLine {
                line: 2,
                what: "header name is not a token",
            },
        ),
    ] {
        assert_eq!(err(s), e, "{s:?}");
    }
    // Leading CRLFs are skipped.
    let m = msg("\r\n\r\nOPTIONS sip:h SIP/2.0\r\n\r\n");
    assert_eq!(m.as_bytes(), b"OPTIONS sip:h SIP/2.0\r\n\r\n");
}

fn request(method: &str, extra: &str) -> String {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
         From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: c@h\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn validate_names_the_first_problem() {
    msg(&request("BYE", "CSeq: 2 BYE\r\n")).validate().unwrap();
    let cases = [
        (
            "BYE",
            "CSeq: 2 INVITE\r\n",
            "CSeq method INVITE does not match request method BYE",
        ),
        ("BYE", "", "missing CSeq"),
        (
            "BYE",
            "CSeq: 2 BYE\r\nCSeq: 3 BYE\r\n",
            "more than one CSeq header",
        ),
        (
            "BYE",
            "CSeq: x BYE\r\n",
            "bad CSeq header: sequence number is not a number below 2**31",
        ),
        (
            "BYE",
            "CSeq: 2 BYE\r\nMax-Forwards: ten\r\n",
            "bad Max-Forwards header: not a number",
        ),
        (
            "BYE",
            "CSeq: 2 BYE\r\nRoute: <sip:p;lr>, junk junk\r\n",
            "bad Route header: URI: empty or contains whitespace",
        ),
        (
            "BYE",
            "CSeq: 2 BYE\r\nRecord-Route: sip:[::1\r\n",
            "bad Record-Route header: URI: bad host",
        ),
        (
            "REGISTER",
            "CSeq: 2 REGISTER\r\nContact: *, <sip:a@h>\r\n",
            "bad Contact header: * must be the only Contact",
        ),
        (
            "BYE",
            "CSeq: 2 BYE\r\nProxy-Require: a b\r\n",
            "bad Proxy-Require header: element is not a token",
        ),
        (
            "BYE",
            "CSeq: 2 BYE\r\nVia: SIP/2.0/UDP\r\n",
            "bad Via header: no sent-by",
        ),
    ];
    for (method, extra, reason) in cases {
        let e = msg(&request(method, extra)).validate().unwrap_err();
        assert_eq!(e.reason(), reason, "{extra:?}");
        assert_eq!(e.status(), 400);
    }
    let m = msg(&request("BYE", "CSeq: 2 BYE\r\n").replace("Call-ID: c@h\r\n", ""));
    assert_eq!(m.validate().unwrap_err().reason(), "missing Call-ID");
    assert!(!m.answerable());
    let m = msg(&request("BYE", "CSeq: 2 BYE\r\n").replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia"));
    let e = m.validate().unwrap_err();
    assert_eq!(
        (e.status(), e.reason()),
        (505, "unsupported SIP version SIP/7.0".to_string())
    );
    assert!(m.answerable());
    // Unknown Request-URI schemes are forwarded.
    let m = msg(&request("BYE", "CSeq: 2 BYE\r\n")
        .replace("sip:bob@example.com SIP", "urn:service:sos SIP"));
    m.validate().unwrap();
    assert!(matches!(
        m.request_uri().unwrap(),
        Uri::Other { scheme: "urn", .. }
    ));
}

#[test]
fn reason_is_one_printable_line() {
    let e = ParseError::CSeqMethodMismatch {
        cseq: "A\r\nB".into(),
        method: "\u{e9}".into(),
    };
    assert_eq!(
        e.reason(),
        "CSeq method A??B does not match request method ?"
    );
    let long = ParseError::UnsupportedVersion("x".repeat(500));
    assert_eq!(long.reason().len(), 120);
}
