//! SDP parser, every typed view, the edits and serialization: none may panic, an accepted input
//! must serialize to itself, and edited output must parse again.
#![no_main]

use anchorage_sdp::offer_answer::{compare_media, restrict_codecs};
use anchorage_sdp::{Direction, Section, Session};
use libfuzzer_sys::fuzz_target;

fn views(section: &Section) {
    let _ = section.connection();
    let _ = section.bandwidths().count();
    let _ = section.attributes().map(|a| a.value_str().is_ok()).count();
    let _ = section.direction();
    let _ = section.rtpmaps().count();
    let _ = section.fmtps().count();
    let _ = (section.ptime(), section.maxptime(), section.rtcp(), section.rtcp_mux());
    for crypto in section.cryptos().flatten() {
        let _ = crypto.keys().count();
    }
    let _ = (section.setup(), section.fingerprints().count(), section.candidates().count());
    let _ = (section.ice_ufrag(), section.ice_pwd(), section.ice_options());
    let _ = (section.label(), section.mid(), section.has_ice());
}

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = Session::parse_slice(data) else {
        return;
    };
    assert_eq!(&sdp.to_bytes()[..], data);
    let _ = (sdp.version(), sdp.origin(), sdp.name(), sdp.timing());
    views(sdp.session_level());
    for (index, media) in sdp.media().iter().enumerate() {
        views(media);
        let m = media.media();
        for format in m.formats() {
            let _ = media.codec(format);
        }
        let _ = (m.transport(), sdp.effective_connection(index), sdp.effective_direction(index));
    }

    let mut edited = sdp.clone();
    let _ = edited.set_origin("anchorage", "1", 2);
    let _ = edited.set_origin_address("203.0.113.1".parse().unwrap());
    edited.remove_ice();
    edited.session_level_mut().remove_connection();
    for media in edited.media_mut() {
        media.set_port(30000);
        media.set_connection("2001:db8::1".parse().unwrap());
        media.set_direction(Direction::SendOnly);
        media.set_rtcp(30001, None);
        media.add_static_rtpmaps();
        let _ = media.set_proto("RTP/AVP");
        media.retain_formats(|f| f != "0");
        let _ = media.set_attribute("ptime", Some("20"));
    }
    let out = edited.to_bytes();
    let again = Session::parse(out.clone()).expect("edited output parses");
    assert_eq!(again.to_bytes(), out);
    let _ = compare_media(&sdp, &again);
    let mut offer = sdp.clone();
    let _ = restrict_codecs(&mut offer, &again);
    let _ = offer.to_bytes();
});
