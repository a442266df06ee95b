//! The offer/answer helpers on the cases re-anchoring meets.

mod fixtures;

use anchorage_sdp::offer_answer::{
    compare_media, restrict_codecs, with_origin, MediaAspect, MediaChange, OriginIdentity,
    RemovedFormat,
};
use anchorage_sdp::Session;
use fixtures::{crlf, lf};

fn parse(input: Vec<u8>) -> Session {
    Session::parse_slice(&input).unwrap()
}

/// The caller's last offer: opus, G.711, G.722, telephone-event, CN; plus a video stream.
fn caller_offer() -> Session {
    parse(crlf(&[
        "v=0",
        "o=caller 100 1 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 10000 RTP/AVP 111 0 8 9 101 13",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 useinbandfec=1",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=sendrecv",
        "m=video 10002 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
    ]))
}

fn answer(audio_m: &str, audio_attrs: &[&str], video_m: &str) -> Session {
    let mut lines = vec![
        "v=0",
        "o=callee 200 1 IN IP4 198.51.100.20",
        "s=-",
        "c=IN IP4 198.51.100.20",
        "t=0 0",
        audio_m,
    ];
    lines.extend_from_slice(audio_attrs);
    lines.push(video_m);
    parse(crlf(&lines))
}

#[test]
fn restrict_to_the_agreed_codec_keeps_telephone_event_and_cn() {
    let mut offer = caller_offer();
    // The callee took PCMA and telephone-event under another payload number; rejected video.
    let answer = answer(
        "m=audio 20000 RTP/AVP 8 96",
        &["a=rtpmap:96 telephone-event/8000"],
        "m=video 0 RTP/AVP 96",
    );
    let removed = restrict_codecs(&mut offer, &answer);
    let formats = |list: &[&str]| -> Vec<RemovedFormat> {
        list.iter()
            .map(|f| RemovedFormat {
                media: 0,
                format: (*f).to_owned(),
            })
            .collect()
    };
    assert_eq!(removed, formats(&["111", "0", "9"]));
    assert_eq!(
        offer.to_bytes(),
        crlf(&[
            "v=0",
            "o=caller 100 1 IN IP4 192.0.2.10",
            "s=-",
            "c=IN IP4 192.0.2.10",
            "t=0 0",
            "m=audio 10000 RTP/AVP 8 101 13",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=sendrecv",
            "m=video 10002 RTP/AVP 96",
            "a=rtpmap:96 H264/90000",
        ])
    );
}

#[test]
fn dynamic_codecs_match_by_name_and_rate_not_number() {
    let mut offer = caller_offer();
    let answer = answer(
        "m=audio 20000 RTP/AVP 107 101",
        &[
            "a=rtpmap:107 OPUS/48000/2",
            "a=rtpmap:101 telephone-event/8000",
        ],
        "m=video 20002 RTP/AVP 97",
    );
    let removed = restrict_codecs(&mut offer, &answer);
    assert_eq!(
        removed
            .iter()
            .map(|r| r.format.as_str())
            .collect::<Vec<_>>(),
        ["0", "8", "9"]
    );
    assert_eq!(
        offer.media()[0].media().formats().collect::<Vec<_>>(),
        ["111", "101", "13"]
    );
    assert_eq!(
        offer.media()[0].fmtp("111").map(|f| f.parameters),
        Some("useinbandfec=1")
    );
    // The answer's video (H264 as 97) was not given an rtpmap, so nothing matches: unchanged.
    assert_eq!(
        offer.media()[1].media().formats().collect::<Vec<_>>(),
        ["96"]
    );
}

#[test]
fn sections_without_a_usable_answer_are_left_alone() {
    let original = caller_offer();
    // Fewer sections in the answer, and an audio answer with no codec in common.
    let mut offer = original.clone();
    let answer = parse(crlf(&[
        "v=0",
        "o=- 1 1 IN IP4 198.51.100.20",
        "s=-",
        "t=0 0",
        "m=audio 20000 RTP/AVP 18",
    ]));
    assert_eq!(restrict_codecs(&mut offer, &answer), []);
    assert_eq!(offer.to_bytes(), original.to_bytes());
    // T.38 matches by format name.
    let mut fax = parse(fixtures::t38());
    assert_eq!(restrict_codecs(&mut fax, &parse(fixtures::t38())), []);
    assert_eq!(fax.to_bytes(), fixtures::t38());
}

#[test]
fn origin_identity_and_next_version() {
    // What we last sent to the caller, and the new SDP the target relay produced for it.
    let last_sent = parse(fixtures::g711());
    let identity = OriginIdentity::of(&last_sent).unwrap();
    assert_eq!(
        identity,
        OriginIdentity {
            username: "alice".into(),
            session_id: "2890844526".into()
        }
    );
    let from_relay = parse(fixtures::hold());
    let out = with_origin(&from_relay, &identity, 2890844526 + 1).unwrap();
    assert_eq!(
        out.to_bytes(),
        crlf(&[
            "v=0",
            "o=alice 2890844526 2890844527 IN IP4 198.51.100.9",
            "s=-",
            "c=IN IP4 0.0.0.0",
            "t=0 0",
            "m=audio 49172 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000",
            "a=sendonly",
        ])
    );
    // The input is untouched.
    assert_eq!(from_relay.to_bytes(), fixtures::hold());
}

#[test]
fn version_bump_and_noise_are_not_a_media_change() {
    let before = parse(fixtures::ice());
    // baresip re-sends the same media with a new o= version, LF endings, other ICE candidates,
    // reordered attributes and extra whitespace.
    let after = parse(lf(&[
        "v=0",
        "o=- 1425 5 IN IP4 192.0.2.40",
        "s=baresip",
        "c=IN  IP4 192.0.2.40",
        "t=0 0",
        "m=audio 10000 RTP/AVP 111 0 8 101",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:111  stereo=1;sprop-stereo=1",
        "a=rtcp-mux",
        "a=rtcp:10001",
        "a=candidate:9 1 UDP 2130706431 192.0.2.40 10000 typ host",
        "a=x-unknown:1",
    ]));
    assert_eq!(compare_media(&before, &after), []);
}

#[test]
fn each_media_aspect_is_reported() {
    let before = parse(fixtures::sdes());
    let after = parse(crlf(&[
        "v=0",
        "o=- 3817283641 3817283643 IN IP4 198.51.100.7",
        "s=Talk",
        "c=IN IP4 198.51.100.8",
        "t=0 0",
        "m=audio 20002 RTP/SAVP 9 101",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:bmV3a2V5bmV3a2V5bmV3a2V5bmV3a2V5bmV3a2V5|2^20|1:4",
        "a=sendonly",
        "m=video 0 RTP/SAVP 96",
        "a=rtpmap:96 H264/90000",
        "m=image 0 udptl t38",
    ]));
    let changes = compare_media(&before, &after);
    let aspects: Vec<(usize, MediaAspect)> = changes.iter().map(|c| (c.media, c.aspect)).collect();
    assert_eq!(
        aspects,
        [
            (0, MediaAspect::Address),
            (0, MediaAspect::Port),
            (0, MediaAspect::Formats),
            (0, MediaAspect::Codecs),
            (0, MediaAspect::Crypto),
            (0, MediaAspect::Direction),
            (1, MediaAspect::Address),
            (2, MediaAspect::Added),
        ]
    );
    assert_eq!(
        changes[0],
        MediaChange {
            media: 0,
            aspect: MediaAspect::Address,
            old: "IN IP4 198.51.100.7".into(),
            new: "IN IP4 198.51.100.8".into(),
        }
    );
    assert_eq!(
        changes[1].to_string(),
        "media 0 Port: \"20000\" -> \"20002\""
    );
    assert_eq!(
        (changes[2].old.as_str(), changes[2].new.as_str()),
        ("9 0 8 101", "9 101")
    );
    assert_eq!(
        changes[3].old,
        "9 G722/8000; 0 PCMU/8000; 8 PCMA/8000; 101 telephone-event/8000 0-15"
    );
    assert_eq!(changes[5].new, "sendonly");
    assert_eq!(changes[7].new, "m=image 0 udptl t38");
    let removed = compare_media(&after, &before);
    assert_eq!(removed.last().map(|c| c.aspect), Some(MediaAspect::Removed));
}

#[test]
fn dtls_and_rtcp_changes_are_media_changes() {
    let before = parse(fixtures::webrtc());
    let text = String::from_utf8(fixtures::webrtc()).unwrap();
    let after = parse(
        text.replace("a=setup:actpass", "a=setup:active")
            .replace("a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 192.0.2.50")
            .into_bytes(),
    );
    let aspects: Vec<MediaAspect> = compare_media(&before, &after)
        .iter()
        .map(|c| c.aspect)
        .collect();
    assert_eq!(aspects, [MediaAspect::Dtls, MediaAspect::Rtcp]);
}
