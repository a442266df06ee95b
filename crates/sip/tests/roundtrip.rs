//! Property tests: parse→serialize is the identity, and each edit changes only what it edits.

use anchorage_sip::{HeaderName, Message};
use bytes::Bytes;
use proptest::prelude::*;

const NAMES: &[&str] = &[
    "Via",
    "v",
    "VIA",
    "via",
    "Route",
    "route",
    "Record-Route",
    "record-ROUTE",
    "Contact",
    "m",
    "From",
    "f",
    "To",
    "t",
    "Call-ID",
    "i",
    "CSeq",
    "Max-Forwards",
    "max-forwards",
    "X-Custom",
    "x-custom",
    "Subject",
    "s",
    "k",
    "o",
    "r",
    "x",
    "u",
    "e",
    "c",
    "Require",
    "Allow",
];
const SEPS: &[&str] = &[":", ": ", " : ", ":\t", ":   ", "\t:"];

#[derive(Debug, Clone)]
struct Line {
    name: &'static str,
    sep: &'static str,
    value: String,
    fold: Option<(usize, String)>,
}

fn line() -> impl Strategy<Value = Line> {
    (
        prop::sample::select(NAMES),
        prop::sample::select(SEPS),
        "[a-zA-Z0-9;=<>@.,\"/ :]{0,30}",
        prop::option::of((0usize..30, "[ \t]{1,3}[a-z0-9, ]{0,10}")),
    )
        .prop_map(|(name, sep, value, fold)| Line {
            name,
            sep,
            value,
            fold,
        })
}

fn start_line() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::sample::select(&["INVITE", "BYE", "OPTIONS", "FOO", "ack"][..]),
            prop::sample::select(
                &[
                    "sip:bob@example.com",
                    "sips:[2001:db8::1]:5061;lr",
                    "tel:+1-555",
                    "urn:x:y"
                ][..]
            ),
        )
            .prop_map(|(m, u)| format!("{m} {u} SIP/2.0")),
        (100u16..700, "[A-Za-z ]{0,12}").prop_map(|(c, r)| format!("SIP/2.0 {c} {r}")),
    ]
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    (
        start_line(),
        prop::collection::vec(line(), 0..14),
        prop::option::of(prop::sample::select(
            &["Content-Length: ", "l:", "content-length :  "][..],
        )),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(start, lines, cl, body)| {
            let mut out = start.into_bytes();
            out.extend_from_slice(b"\r\n");
            for l in lines {
                let mut v = l.value.clone();
                if let Some((at, cont)) = &l.fold {
                    let at = (*at).min(v.len());
                    v.insert_str(at, &format!("\r\n{cont}"));
                }
                out.extend_from_slice(format!("{}{}{}\r\n", l.name, l.sep, v).as_bytes());
            }
            if let Some(cl) = cl {
                out.extend_from_slice(format!("{cl}{}\r\n", body.len()).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out
        })
}

/// Offset of a sub-slice of the message buffer.
fn offset(m: &Message, part: &[u8]) -> usize {
    part.as_ptr() as usize - m.as_bytes().as_ptr() as usize
}

/// `out` equals `input` with `ins` inserted at `at`.
fn inserted(input: &[u8], out: &[u8], at: usize, ins: &[u8]) -> bool {
    out.len() == input.len() + ins.len()
        && out[..at] == input[..at]
        && &out[at..at + ins.len()] == ins
        && out[at + ins.len()..] == input[at..]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn unedited_serializes_byte_identical(input in message()) {
        let m = Message::parse(Bytes::from(input.clone())).unwrap();
        prop_assert_eq!(m.as_bytes(), &input[..]);
        prop_assert_eq!(&m.edit().finish()[..], &input[..]);
        let joined: Vec<u8> = m.headers().flat_map(|h| h.raw_line().to_vec()).collect();
        let start_end = memchr::memmem::find(&input, b"\r\n").unwrap() + 2;
        prop_assert_eq!(&joined[..], &input[start_end..start_end + joined.len()]);
    }

    #[test]
    fn push_via_inserts_one_line_above_the_top_via(input in message()) {
        let m = Message::parse(Bytes::from(input.clone())).unwrap();
        let at = m
            .header(HeaderName::Via)
            .map(|h| offset(&m, h.raw_line()))
            .unwrap_or(memchr::memmem::find(&input, b"\r\n").unwrap() + 2);
        let mut e = m.edit();
        e.push_via(b"SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKprop").unwrap();
        let out = e.finish();
        prop_assert!(inserted(&input, &out, at, b"Via: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKprop\r\n"));
        let again = Message::parse(out).unwrap();
        prop_assert_eq!(again.top_via().unwrap().branch(), Some("z9hG4bKprop"));
    }

    #[test]
    fn prepend_record_route_inserts_one_line(input in message()) {
        let m = Message::parse(Bytes::from(input.clone())).unwrap();
        let mut e = m.edit();
        e.prepend_record_route(b"<sip:203.0.113.9;lr>").unwrap();
        let out = e.finish();
        let ins = b"Record-Route: <sip:203.0.113.9;lr>\r\n";
        let at = memchr::memmem::find(&out, ins).unwrap();
        prop_assert!(inserted(&input, &out, at, ins));
        let again = Message::parse(out).unwrap();
        prop_assert_eq!(again.record_routes().next().unwrap().unwrap().uri_raw, b"sip:203.0.113.9;lr");
    }

    #[test]
    fn set_max_forwards_changes_only_its_value(input in message(), n in 0u32..100_000) {
        let m = Message::parse(Bytes::from(input.clone())).unwrap();
        let mut e = m.edit();
        e.set_max_forwards(n);
        let out = e.finish();
        let digits = n.to_string();
        match m.header(HeaderName::MaxForwards) {
            Some(h) => {
                let (s, len) = (offset(&m, h.value()), h.value().len());
                prop_assert_eq!(&out[..s], &input[..s]);
                prop_assert_eq!(&out[s..s + digits.len()], digits.as_bytes());
                prop_assert_eq!(&out[s + digits.len()..], &input[s + len..]);
            }
            None => {
                let ins = format!("Max-Forwards: {digits}\r\n");
                let at = memchr::memmem::find(&out, ins.as_bytes()).unwrap();
                prop_assert!(inserted(&input, &out, at, ins.as_bytes()));
            }
        }
        prop_assert_eq!(Message::parse(out).unwrap().max_forwards().unwrap(), Some(n));
    }

    #[test]
    fn remove_header_removes_exactly_its_lines(input in message(), pick in any::<prop::sample::Index>()) {
        let m = Message::parse(Bytes::from(input.clone())).unwrap();
        prop_assume!(m.headers().len() > 0);
        let h = m.headers().nth(pick.index(m.headers().len())).unwrap();
        let (s, len) = (offset(&m, h.raw_line()), h.raw_line().len());
        let mut e = m.edit();
        e.remove_header(h.index());
        let out = e.finish();
        let mut want = input.clone();
        want.drain(s..s + len);
        prop_assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn pop_via_removes_only_the_top_value(input in message()) {
        let m = Message::parse(Bytes::from(input.clone())).unwrap();
        let vias: Vec<Vec<u8>> = m.headers_of(HeaderName::Via).flat_map(|h| h.values().map(<[u8]>::to_vec).collect::<Vec<_>>()).collect();
        let others: Vec<Vec<u8>> = m.headers().filter(|h| h.id() != HeaderName::Via).map(|h| h.raw_line().to_vec()).collect();
        let mut e = m.edit();
        e.pop_via();
        let out = Message::parse(e.finish()).unwrap();
        let after: Vec<Vec<u8>> = out.headers_of(HeaderName::Via).flat_map(|h| h.values().map(<[u8]>::to_vec).collect::<Vec<_>>()).collect();
        prop_assert_eq!(&after[..], vias.get(1..).unwrap_or(&[]));
        let others_after: Vec<Vec<u8>> = out.headers().filter(|h| h.id() != HeaderName::Via).map(|h| h.raw_line().to_vec()).collect();
        prop_assert_eq!(others_after, others);
        prop_assert_eq!(out.body(), m.body());
    }

    #[test]
    fn set_body_updates_content_length(input in message(), body in prop::collection::vec(any::<u8>(), 0..100)) {
        let m = Message::parse(Bytes::from(input.clone())).unwrap();
        let mut e = m.edit();
        e.set_body(Bytes::from(body.clone()));
        let out = Message::parse(e.finish()).unwrap();
        prop_assert_eq!(out.body(), &body[..]);
        prop_assert_eq!(out.content_length(), Some(body.len()));
        let before: Vec<_> = m.headers().filter(|h| h.id() != HeaderName::ContentLength).map(|h| h.raw_line().to_vec()).collect();
        let after: Vec<_> = out.headers().filter(|h| h.id() != HeaderName::ContentLength).map(|h| h.raw_line().to_vec()).collect();
        prop_assert_eq!(before, after);
    }
}
