//! Parse arbitrary bytes as a SIP datagram, read every typed view, apply every edit and
//! serialize. Must never panic; an unedited message must serialize to its own bytes.
#![no_main]

use anchorage_sip::{HeaderName, Message, Uri};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    for m in [Message::parse(input.clone()), Message::parse_lenient(input)]
        .into_iter()
        .flatten()
    {
        exercise(&m);
    }
    let _ = Uri::parse(data);
});

fn exercise(m: &Message) {
    assert_eq!(&m.edit().finish()[..], m.as_bytes());
    let _ = (m.is_request(), m.method(), m.status(), m.reason_phrase(), m.version());
    let _ = m.request_uri();
    let _ = (m.call_id(), m.cseq(), m.from(), m.to(), m.max_forwards());
    let _ = m.top_via().map(|v| (v.branch(), v.received(), v.rport(), v.maddr(), v.ttl()));
    // The values found while parsing agree with a fresh lookup of the parameters.
    fn first_text<'a>(p: anchorage_sip::Params<'a>, name: &str) -> Option<&'a str> {
        p.get(name).flatten().and_then(|v| std::str::from_utf8(v).ok())
    }
    for v in m.vias().flatten() {
        assert_eq!(v.branch(), first_text(v.params, "branch"));
    }
    let name_addrs = [m.from(), m.to()].into_iter().chain(m.routes()).chain(m.record_routes());
    for n in name_addrs.flatten() {
        assert_eq!(n.tag(), first_text(n.params, "tag"));
        let _ = n.uri();
    }
    let _ = m.vias().count() + m.routes().count() + m.record_routes().count() + m.contacts().count();
    let _ = m.require().count() + m.proxy_require().count() + m.supported().count() + m.allow().count();
    let _ = (m.content_length(), m.content_type(), m.body().len());
    for h in m.headers() {
        let _ = (h.id(), h.name(), h.values().count());
    }
    let validated = m.validate();
    let _ = validated.as_ref().map_err(|e| e.reason());
    let _ = m.answerable();
    if validated.is_ok() {
        let _ = m.response(400, "Bad Request").to_tag("fz").build();
    }

    let mut e = m.edit();
    let _ = e.push_via(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKfuzz");
    e.pop_via().pop_route();
    let _ = e.prepend_record_route(b"<sip:192.0.2.1;lr>");
    e.set_max_forwards(69);
    let _ = e.set_cseq_number(7);
    let _ = e.set_request_uri(b"sip:x@192.0.2.2");
    if m.headers().len() > 0 {
        let _ = e.set_header_value(0, b"v");
        e.remove_header(m.headers().len() - 1);
    }
    e.remove_headers(HeaderName::Contact);
    let _ = e.add_header("X-Fuzz", b"1");
    e.set_body(Bytes::from_static(b"body"));
    if let Ok(out) = e.finish_message() {
        assert_eq!(out.body(), b"body");
    }
}
