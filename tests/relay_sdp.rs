//! Where `anchorage relay` writes `c=` lines, side by side with Debian's rtpengine (10.5, the
//! peer these tests run): both get the same offers over ng and their SDPs must put the same
//! `c=` lines at the same levels (issue #17 item 5). rtpengine 10.5 keeps each `c=` where the
//! sender wrote it, with its own address: a session-level `c=` stays at session level and
//! covers every section without one of its own, a section's own `c=` stays in the section, a
//! sender without a session-level `c=` gets one per section, a hold address stays a hold
//! address, and a rejected section inheriting the session's `c=` gets none. (rtpengine's later
//! releases print a `c=` in every section instead; the reference describes those.)

use anchorage_testkit::{ng_request, ng_sdp, AnchorageRelay};

/// The offer `sdp` from `call`'s caller, as the daemon on `port` rewrites it for the callee.
fn offer(port: u16, call: &str, sdp: &str) -> String {
    ng_sdp(&ng_request(
        port,
        &[
            ("command", "offer"),
            ("call-id", call),
            ("from-tag", "caller"),
            ("sdp", sdp),
        ],
    ))
}

/// The `m=` and `c=` lines of an SDP in order, the ports of `m=` lines that are not 0 written
/// `PORT`: where each `c=` is, and what it says.
fn layout(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("m=") || l.starts_with("c="))
        .map(|l| match l.split_once(' ') {
            Some((kind, rest)) if kind.starts_with("m=") => {
                let (port, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let port = if port == "0" { "0" } else { "PORT" };
                format!("{kind} {port} {tail}")
            }
            _ => l.to_owned(),
        })
        .collect()
}

/// The `m=` ports of an SDP, in order.
fn ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .filter_map(|m| m.split(' ').nth(1)?.parse().ok())
        .collect()
}

const HEAD: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\n";

/// Audio and video, the `c=` lines given: `session` (or none) and one per section (or none).
fn two_sections(session: Option<&str>, audio: Option<&str>, video: Option<&str>) -> String {
    let c = |ip: Option<&str>| {
        ip.map(|ip| format!("c=IN IP4 {ip}\r\n"))
            .unwrap_or_default()
    };
    format!(
        "{HEAD}{}t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n{}a=rtpmap:0 PCMU/8000\r\n\
         m=video 4002 RTP/AVP 96\r\n{}a=rtpmap:96 H264/90000\r\n",
        c(session),
        c(audio),
        c(video)
    )
}

/// Checks our relay's offer of `sdp` (in a call of its own, `name`) exactly: the session-level
/// `c=IN IP4 {c}`, none per section, and both sections with the relay's ports and `a={direction}`.
fn assert_exact_offer(ours: &AnchorageRelay, name: &str, sdp: &str, c: &str, direction: &str) {
    let call = format!("c-lines-{name}-{}", std::process::id());
    let mine = offer(ours.ng, &call, sdp);
    let [audio, video] = ports(&mine)[..] else {
        panic!("{mine}")
    };
    assert_eq!(
        mine,
        format!(
            "{HEAD}c=IN IP4 {c}\r\nt=0 0\r\n\
             m=audio {audio} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\na=rtcp:{}\r\n\
             m=video {video} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na={direction}\r\na=rtcp:{}\r\n",
            audio + 1,
            video + 1
        )
    );
}

#[test]
fn c_lines_stay_at_the_level_the_sender_wrote_them_as_debians_rtpengine_keeps_them() {
    let ours = AnchorageRelay::start(std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")), &[]);
    let (engine, engine_ng) = anchorage_testkit::media::rtpengine();
    let cases = [
        ("shared", two_sections(Some("192.0.2.10"), None, None)),
        (
            "mixed",
            two_sections(Some("192.0.2.10"), None, Some("192.0.2.99")),
        ),
        (
            "per-section",
            two_sections(None, Some("192.0.2.10"), Some("192.0.2.10")),
        ),
        ("hold", two_sections(Some("0.0.0.0"), None, None)),
        (
            "rejected",
            two_sections(Some("192.0.2.10"), None, None).replace("m=audio 4000", "m=audio 0"),
        ),
    ];
    for (name, sdp) in &cases {
        let call = format!("c-lines-{name}-{}", std::process::id());
        let theirs = offer(engine_ng, &call, sdp);
        let mine = offer(ours.ng, &call, sdp);
        assert_eq!(
            layout(&mine),
            layout(&theirs),
            "{name}: ours\n{mine}\nrtpengine's\n{theirs}"
        );
    }
    // Ours, exactly: the shared session-level c= with the relay's address, none per section.
    assert_exact_offer(&ours, "exact", &cases[0].1, "127.0.0.1", "sendrecv");
    // On hold: the zero address at session level, the direction made explicit.
    assert_exact_offer(&ours, "hold", &cases[3].1, "0.0.0.0", "sendonly");
    drop(engine);
}
