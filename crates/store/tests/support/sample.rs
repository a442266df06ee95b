//! One typical call: a confirmed dialog with two legs, media anchored on a relay with an SDP of
//! about 300 bytes per direction. Shared by the tests and the benchmark.

use anchorage_store::{
    CallRecord, CseqReserved, DialogRecord, DialogState, InviteDestination, LegMediaRecord,
    LegRecord, MediaRecord, MoveRecord, MoveStage, OriginRecord, RenumberRecord, Transport,
};

/// An SDP of about 300 bytes.
pub fn sdp(ip: &str, port: u16, version: u64) -> String {
    format!(
        "v=0\r\no=- 3905082365 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 9 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
         a=ptime:20\r\na=sendrecv\r\na=rtcp:{}\r\n",
        port + 1
    )
}

/// The typical call `call_id` owned by `owner`.
pub fn call(call_id: &str, owner: &str) -> CallRecord {
    let mut record = CallRecord::new(call_id, owner, 1_790_000_000_123);
    record.dialogs.push(DialogRecord {
        caller_tag: "a73kszlfl".into(),
        callee_tag: "1928301774".into(),
        state: DialogState::Confirmed,
        caller_identity: "\"Alice\" <sip:alice@example.com>;tag=a73kszlfl".into(),
        callee_identity: "<sip:bob@example.net>;tag=1928301774".into(),
        record_route: vec![
            "<sip:10.0.0.11;lr;transport=udp>".into(),
            "<sip:edge.example.net;lr>".into(),
        ],
        caller: LegRecord {
            tag: "a73kszlfl".into(),
            remote_target: Some("sip:alice@192.168.1.20:5060".into()),
            source: Some("203.0.113.7:40123".parse().unwrap()),
            transport: Some(Transport::Udp),
            local: Some("10.0.0.11:5060".parse().unwrap()),
            last_cseq: Some(102),
        },
        callee: LegRecord {
            tag: "1928301774".into(),
            remote_target: Some("sip:bob@198.51.100.9:5070;transport=tcp".into()),
            source: Some("198.51.100.9:5070".parse().unwrap()),
            transport: Some(Transport::Tcp),
            local: Some("10.0.0.11:5060".parse().unwrap()),
            last_cseq: Some(7),
        },
        renumber: RenumberRecord {
            to_callee: 1,
            to_caller: 1,
            own_to_callee: 103,
            own_to_caller: 8,
            invite_from_caller: None,
            invite_from_callee: None,
        },
        created_unix_ms: 1_790_000_000_000,
    });
    let origin = |version| OriginRecord {
        username: "-".into(),
        session_id: "3905082365".into(),
        version,
    };
    record.media = Some(MediaRecord {
        node: "relay-a".into(),
        set: "main".into(),
        caller_flags: "replace-origin".into(),
        callee_flags: "replace-origin".into(),
        caller_rtpproxy: Default::default(),
        callee_rtpproxy: Default::default(),
        rtpproxy_unfit: None,
        caller_tag: "a73kszlfl".into(),
        caller: LegMediaRecord {
            received: Some(sdp("203.0.113.7", 40000, 1)),
            sent: Some(sdp("10.0.0.21", 30000, 2)),
            origin_sent: Some(origin(2)),
        },
        callee: LegMediaRecord {
            received: Some(sdp("198.51.100.9", 50000, 1)),
            sent: Some(sdp("10.0.0.21", 30002, 2)),
            origin_sent: Some(origin(2)),
        },
        answer_in_ack: false,
        answer_in_prack: false,
    });
    record.cseq_reserved = CseqReserved {
        to_callee: 118,
        to_caller: 23,
    };
    record
}

/// The typical call with an open INVITE and a move in progress too (every optional part set).
pub fn full(call_id: &str, owner: &str) -> CallRecord {
    let mut record = call(call_id, owner);
    record.open_invite = Some(vec![InviteDestination {
        branch: "z9hG4bKanc-node1-4f2a".into(),
        destination: "[2001:db8::9]:5060".parse().unwrap(),
        transport: Transport::Udp,
    }]);
    record.moving = Some(MoveRecord {
        job: 17,
        trigger: "node-down".into(),
        old_node: "relay-a".into(),
        new_node: Some("relay-b".into()),
        stage: MoveStage::Legs,
        started_unix_ms: 1_790_000_000_500,
        sdp_for_caller: Some(sdp("10.0.0.22", 31000, 3)),
        sdp_for_callee: Some(sdp("10.0.0.22", 31002, 3)),
        // As a record written before these fields read (the fixture has none).
        sent_to_caller: false,
        sent_to_callee: false,
    });
    record
}
