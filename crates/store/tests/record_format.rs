//! The record's encoding: the checked-in v1 fixture keeps reading, records round-trip, and
//! what this build cannot read is refused with a typed error.

mod support;

use anchorage_store::record::sdp_text;
use anchorage_store::{CallRecord, RecordError, RtppLegRecord};

const FIXTURE: &str = include_str!("fixtures/record_v1.json");
/// The same call anchored with RTPProxy letters per leg (fields added to v1 later).
const FIXTURE_RTPPROXY: &str = include_str!("fixtures/record_v1_rtpproxy.json");

/// The typical call with the RTPProxy letters of `record_v1_rtpproxy.json`.
fn with_letters(mut record: CallRecord) -> CallRecord {
    let media = record.media.as_mut().expect("the sample has media");
    media.caller_rtpproxy = RtppLegRecord {
        letters: "r".into(),
        ip: None,
    };
    media.callee_rtpproxy = RtppLegRecord {
        letters: "coei".into(),
        ip: Some("198.51.100.250".parse().unwrap()),
    };
    record
}

#[test]
fn the_v1_fixture_reads_as_the_typical_call_with_every_optional_part() {
    let record = CallRecord::decode(FIXTURE.as_bytes()).expect("the v1 fixture reads");
    assert_eq!(
        record,
        support::sample::full("a84b4c76e66710@pc33.example.com", "node1")
    );
}

#[test]
fn a_record_written_without_rtpproxy_letters_reads_with_none_and_is_written_without_them() {
    let record = CallRecord::decode(FIXTURE.as_bytes()).unwrap();
    let media = record.media.as_ref().unwrap();
    assert_eq!(
        (
            &media.caller_rtpproxy,
            &media.callee_rtpproxy,
            &media.rtpproxy_unfit
        ),
        (&RtppLegRecord::default(), &RtppLegRecord::default(), &None)
    );
    let text = String::from_utf8(record.encode()).unwrap();
    assert!(!text.contains("rtpproxy"), "{text}");
}

#[test]
fn the_rtpproxy_fixture_reads_with_each_legs_letters_and_address() {
    let record = CallRecord::decode(FIXTURE_RTPPROXY.as_bytes()).expect("it reads");
    assert_eq!(
        record,
        with_letters(support::sample::full(
            "a84b4c76e66710@pc33.example.com",
            "node1"
        ))
    );
    let text = String::from_utf8(record.encode()).unwrap();
    assert!(
        text.contains(r#""caller_rtpproxy":{"letters":"r"},"callee_rtpproxy":{"letters":"coei","ip":"198.51.100.250"}"#),
        "{text}"
    );
}

/// A move whose re-INVITE to the callee is known to have gone out.
fn sent_marks(mut record: CallRecord) -> CallRecord {
    if let Some(m) = record.moving.as_mut() {
        m.sent_to_callee = true;
    }
    record
}

#[test]
fn a_moves_sent_marks_are_written_only_when_set() {
    let plain = String::from_utf8(support::sample::full("c1", "n1").encode()).unwrap();
    assert!(!plain.contains("sent_to_"), "{plain}");
    let marked = String::from_utf8(sent_marks(support::sample::full("c1", "n1")).encode()).unwrap();
    assert!(marked.contains(r#""sent_to_callee":true"#), "{marked}");
    assert!(!marked.contains("sent_to_caller"), "{marked}");
}

#[test]
fn records_round_trip() {
    let mut unfit = with_letters(support::sample::call("c4", "n4"));
    if let Some(m) = unfit.media.as_mut() {
        m.rtpproxy_unfit = Some("the callee leg's type RTP/SAVP needs an ng relay".into());
    }
    for record in [
        support::sample::call("c1", "n1"),
        support::sample::full("c2", "n2"),
        CallRecord::new("c3", "n3", 5),
        with_letters(support::sample::full("c5", "n5")),
        unfit,
        sent_marks(support::sample::full("c6", "n6")),
    ] {
        let bytes = record.encode();
        assert_eq!(CallRecord::decode(&bytes).unwrap(), record);
    }
}

#[test]
fn a_newer_version_is_refused_with_a_typed_error() {
    let newer = FIXTURE.replacen("\"v\": 1,", "\"v\": 2,", 1);
    assert_ne!(newer, FIXTURE, "the fixture starts with \"v\": 1");
    match CallRecord::decode(newer.as_bytes()) {
        Err(RecordError::UnknownVersion { found: 2 }) => {}
        other => panic!("expected UnknownVersion 2, got {other:?}"),
    }
    match CallRecord::decode(br#"{"v":7,"whatever":[1,2]}"#) {
        Err(RecordError::UnknownVersion { found: 7 }) => {}
        other => panic!("expected UnknownVersion 7, got {other:?}"),
    }
    assert!(matches!(
        CallRecord::decode(b"{\"v\":1}"),
        Err(RecordError::Malformed(_))
    ));
    assert!(matches!(
        CallRecord::decode(b"not json"),
        Err(RecordError::Malformed(_))
    ));
}

#[test]
fn a_field_added_later_without_a_new_version_is_ignored() {
    let extended = FIXTURE.replacen("\"v\": 1,", "\"v\": 1, \"added_later\": {\"x\": 1},", 1);
    assert_ne!(extended, FIXTURE);
    assert!(CallRecord::decode(extended.as_bytes()).is_ok());
}

#[test]
fn a_non_utf8_sdp_is_a_typed_error() {
    let error = sdp_text(b"v=0\r\no=\xff\r\n", "caller SDP received").unwrap_err();
    assert!(matches!(
        error,
        RecordError::NotUtf8 {
            what: "caller SDP received"
        }
    ));
    assert_eq!(
        error.to_string(),
        "the caller SDP received is not UTF-8 text"
    );
    assert_eq!(sdp_text(b"v=0\r\n", "x").unwrap(), "v=0\r\n");
}
