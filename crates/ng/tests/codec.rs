//! Codec, framing, typed conversion and flag normalisation on messages shaped like the ones
//! Kamailio's and OpenSIPS' rtpengine modules send.

use std::net::IpAddr;

use anchorage_ng::*;
use bytes::Bytes;

/// A bencode byte string.
fn s(x: &str) -> String {
    format!("{}:{}", x.len(), x)
}

const SDP: &str = "v=0\r\no=- 1545997027 1 IN IP4 198.51.100.1\r\ns=tester\r\nt=0 0\r\nm=audio 2000 RTP/AVP 0 8\r\nc=IN IP4 198.51.100.1\r\na=sendrecv\r\n";

/// An offer as Kamailio's module-parsed `rtpengine_offer("trust-address replace-origin
/// replace-session-connection ICE=remove RTP/AVP rtcp-mux-demux direction=pub direction=priv
/// codec-strip-G729 SDES-no-NULL_HMAC_SHA1_32")` puts it on the wire: keys in Kamailio's order
/// (not sorted), lists, a nested dictionary.
fn kamailio_offer() -> Vec<u8> {
    let doc = format!(
        "d{}l{}e{}{}{}{}{}l{}{}e{}l{}e{}l{}{}e{}{}{}l{}e{}d{}l{}ee{}l{}e{}{}{}l{}{}e{}{}{}{}{}{}e",
        s("supports"),
        s("load limit"),
        s("sdp"),
        s(SDP),
        s("call-id"),
        s("a84b4c76e66710@pc33.example.com"),
        s("flags"),
        s("trust-address"),
        s("port-latching"),
        s("replace"),
        s("origin"),
        s("direction"),
        s("pub"),
        s("priv"),
        s("ICE"),
        s("remove"),
        s("rtcp-mux"),
        s("demux"),
        s("codec"),
        s("strip"),
        s("G729"),
        s("SDES"),
        s("no-NULL_HMAC_SHA1_32"),
        s("transport-protocol"),
        s("RTP/AVP"),
        s("received-from"),
        s("IP4"),
        s("198.51.100.7"),
        s("from-tag"),
        s("1928301774"),
        s("command"),
        s("offer"),
        s("sip-message-type"),
        s("sip_request"),
    );
    format!("5323_1 {doc}").into_bytes()
}

fn expected_kamailio_flags() -> Flags {
    Flags {
        trust_address: true,
        port_latching: true,
        replace: Replace {
            origin: true,
            ..Replace::default()
        },
        rtcp_mux: RtcpMux {
            demux: true,
            ..RtcpMux::default()
        },
        sdes: Sdes {
            no: vec!["NULL_HMAC_SHA1_32".into()],
            ..Sdes::default()
        },
        ice: Some(Ice::Remove),
        transport_protocol: Some(TransportProtocol::RtpAvp),
        direction: vec!["pub".into(), "priv".into()],
        received_from: Some("198.51.100.7".parse().unwrap()),
        supports_load_limit: true,
        codec: Codec {
            strip: vec!["G729".into()],
            ..Codec::default()
        },
        other_keys: vec![("sip-message-type".into(), Value::text("sip_request"))],
        ..Flags::default()
    }
}

#[test]
fn kamailio_offer_with_unsorted_keys_decodes_into_typed_request() {
    let incoming = decode_request(&kamailio_offer()).unwrap();
    assert_eq!(incoming.cookie.as_bytes(), b"5323_1");
    assert_eq!(incoming.encoding, Encoding::Bencode);
    let RequestKind::Offer(oa) = &incoming.request.kind else {
        panic!("not an offer: {:?}", incoming.request.kind);
    };
    assert_eq!(oa.call_id.as_str(), "a84b4c76e66710@pc33.example.com");
    assert_eq!(oa.from_tag.as_str(), "1928301774");
    assert_eq!(oa.to_tag, None);
    assert_eq!(oa.via_branch, None);
    assert_eq!(oa.sdp, Bytes::from_static(SDP.as_bytes()));
    assert_eq!(incoming.request.flags, expected_kamailio_flags());
    // sip-message-type is informational: nothing to warn about.
    assert_eq!(incoming.request.flags.warning(), None);
}

#[test]
fn same_offer_in_json_decodes_to_the_same_request() {
    let json = format!(
        concat!(
            r#"5323_1 {{"supports":["load limit"],"sdp":{sdp},"call-id":"a84b4c76e66710@pc33.example.com","#,
            r#""flags":["trust-address","port-latching"],"replace":["origin"],"direction":["pub","priv"],"#,
            r#""ICE":"remove","rtcp-mux":["demux"],"codec":{{"strip":["G729"]}},"SDES":["no-NULL_HMAC_SHA1_32"],"#,
            r#""transport-protocol":"RTP/AVP","received-from":["IP4","198.51.100.7"],"from-tag":"1928301774","#,
            r#""command":"offer","sip-message-type":"sip_request"}}"#
        ),
        sdp = serde_json::to_string(SDP).unwrap()
    );
    let from_json = decode_request(json.as_bytes()).unwrap();
    let from_bencode = decode_request(&kamailio_offer()).unwrap();
    assert_eq!(from_json.encoding, Encoding::Json);
    assert_eq!(from_json.request, from_bencode.request);
}

#[test]
fn bencode_and_json_documents_decode_to_the_same_tree() {
    let (_, b) = decode_document(b"d3:fooi-42e3:barl1:a1:bd1:x1:yee1:z0:e").unwrap();
    let (_, j) = decode_document(br#"{"foo":-42,"bar":["a","b",{"x":"y"}],"z":""}"#).unwrap();
    assert_eq!(b, j);
    assert_eq!(
        b,
        vec![
            ("foo".to_string(), Value::Int(-42)),
            (
                "bar".to_string(),
                Value::List(vec![
                    Value::text("a"),
                    Value::text("b"),
                    Value::Dict(vec![("x".into(), Value::text("y"))]),
                ])
            ),
            ("z".to_string(), Value::text("")),
        ]
    );
}

#[test]
fn rtpp_flags_string_is_parsed_like_the_daemon_does() {
    // Kamailio's two-argument functions send the raw flag string as `rtpp-flags`.
    let flags = "trust-address replace-origin replace-SDP-version ICE=remove RTP/SAVP \
                 rtcp-mux-demux direction=pub direction=priv \
                 codec=[strip=[all] offer=[PCMA PCMU]] to-tag=as8a7s received-from=198.51.100.9 \
                 SDES-no-NULL_HMAC_SHA1_32 SDES-pad label=caller delete-delay=5 \
                 address-family=IP6 media-address=2001:db8::5 DTLS=off TOS=184 \
                 record-call=yes frobnicate x-custom=1";
    let doc = format!(
        "d{}{}{}{}{}{}{}{}{}{}e",
        s("command"),
        s("delete"),
        s("call-id"),
        s("c1"),
        s("from-tag"),
        s("ft"),
        s("rtpp-flags"),
        s(flags),
        s("via-branch"),
        s("z9hG4bK.1"),
    );
    let req = decode_request(format!("k_7 {doc}").as_bytes())
        .unwrap()
        .request;
    let RequestKind::Delete(del) = &req.kind else {
        panic!("not a delete: {:?}", req.kind);
    };
    assert_eq!(del.to_tag, Some(Tag::from("as8a7s")));
    let f = &req.flags;
    assert!(f.trust_address);
    assert!(f.to_tag, "a to-tag in rtpp-flags makes delete honour it");
    assert_eq!(
        del.target(f),
        DeleteTarget::Dialogue {
            from_tag: &Tag::from("ft"),
            to_tag: &Tag::from("as8a7s")
        }
    );
    assert!(f.replace.origin && f.replace.sdp_version);
    assert_eq!(f.ice, Some(Ice::Remove));
    assert_eq!(f.transport_protocol, Some(TransportProtocol::RtpSavp));
    assert!(f.rtcp_mux.demux);
    assert_eq!(f.direction, ["pub", "priv"]);
    assert_eq!(f.codec.strip, ["all"]);
    assert_eq!(f.codec.offer, ["PCMA", "PCMU"]);
    assert_eq!(f.received_from, Some("198.51.100.9".parse().unwrap()));
    assert_eq!(f.sdes.no, ["NULL_HMAC_SHA1_32"]);
    assert!(f.sdes.pad);
    assert_eq!(f.label.as_deref(), Some("caller"));
    assert_eq!(f.delete_delay, Some(5));
    assert_eq!(f.address_family, Some(AddressFamily::Ip6));
    assert_eq!(
        f.media_address,
        Some("2001:db8::5".parse::<IpAddr>().unwrap())
    );
    assert_eq!(f.dtls, Some(Dtls::Off));
    assert_eq!(f.tos, Some(184));
    assert_eq!(f.record_call, Some(true));
    assert_eq!(f.other_flags, ["frobnicate"]);
    assert_eq!(f.other_keys, [("x-custom".to_string(), Value::text("1"))]);
    assert_eq!(f.unrecognised(), ["frobnicate", "x-custom"]);
    assert_eq!(
        f.warning().as_deref(),
        Some("Ignored unrecognised flags or keys: frobnicate, x-custom")
    );
}

#[test]
fn spellings_with_space_underscore_and_case_are_equivalent() {
    // OpenSIPS style: "delete-delay" as a string, "address family", flags with spaces.
    let opensips = format!(
        "d{}{}{}{}{}l{}{}{}{}e{}{}{}{}{}l{}{}e{}{}e",
        s("command"),
        s("delete"),
        s("call-id"),
        s("c2"),
        s("flags"),
        s("SIP source address"),
        s("Strict_Source"),
        s("MEDIA-HANDOVER"),
        s("fatal"),
        s("delete delay"),
        s("0"),
        s("address family"),
        s("IP4"),
        s("received from"),
        s("IP6"),
        s("2001:db8::7"),
        s("Transport Protocol"),
        s("rtp/avpf"),
    );
    let req = decode_request(format!("99_1_1 {opensips}").as_bytes())
        .unwrap()
        .request;
    let f = &req.flags;
    assert!(f.sip_source_address && f.strict_source && f.media_handover && f.fatal);
    assert_eq!(f.delete_delay, Some(0));
    assert_eq!(f.address_family, Some(AddressFamily::Ip4));
    assert_eq!(f.received_from, Some("2001:db8::7".parse().unwrap()));
    assert_eq!(f.transport_protocol, Some(TransportProtocol::RtpAvpf));
    assert!(f.unrecognised().is_empty());
    let RequestKind::Delete(del) = &req.kind else {
        panic!("not a delete");
    };
    assert_eq!(del.target(f), DeleteTarget::Call, "no from-tag: whole call");
}

#[test]
fn values_arrive_as_strings_or_lists_and_integers_as_strings() {
    let doc = format!(
        "d{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}i30ee",
        s("command"),
        s("offer"),
        s("call-id"),
        s("c3"),
        s("from-tag"),
        s("f3"),
        s("sdp"),
        s(SDP),
        s("replace"),
        s("origin, session-name"),
        s("ICE"),
        s("force"),
        s("flags"),
        s("loop-protect no-rtcp-attribute"),
        s("rtcp-mux"),
        s("offer"),
        s("delete-delay"),
    );
    let f = decode_request(format!("c {doc}").as_bytes())
        .unwrap()
        .request
        .flags;
    assert!(f.replace.origin && f.replace.session_name);
    assert_eq!(f.ice, Some(Ice::Force));
    assert!(f.loop_protect && f.no_rtcp_attribute);
    assert!(f.rtcp_mux.offer);
    assert_eq!(f.delete_delay, Some(30));
}

#[test]
fn combinable_transport_words_build_the_profile() {
    for (words, expected) in [
        ("RTP AVP", TransportProtocol::RtpAvp),
        ("SRTP", TransportProtocol::RtpSavp),
        ("SRTP AVPF", TransportProtocol::RtpSavpf),
        ("DTLS AVPF", TransportProtocol::UdpTlsRtpSavpf),
        ("UDP/TLS/RTP/SAVP", TransportProtocol::UdpTlsRtpSavp),
    ] {
        let dict = vec![
            ("command".to_string(), Value::text("ping")),
            ("rtpp-flags".to_string(), Value::text(words)),
        ];
        let (_, flags) = normalise(&dict);
        assert_eq!(flags.transport_protocol, Some(expected), "{words}");
    }
}

#[test]
fn unknown_values_of_known_keys_are_reported_not_fatal() {
    let dict = vec![
        ("command".to_string(), Value::text("ping")),
        ("ICE".to_string(), Value::text("trickle")),
        (
            "replace".to_string(),
            Value::List(vec![Value::text("everything")]),
        ),
        ("media-address".to_string(), Value::text("not-an-ip")),
        ("sip_code".to_string(), Value::Int(200)),
    ];
    let req = Request::from_dict(&dict).unwrap();
    assert_eq!(req.kind, RequestKind::Ping);
    assert_eq!(
        req.flags.unrecognised(),
        [
            "ICE=trickle",
            "replace=everything",
            "media-address=not-an-ip"
        ]
    );
}

#[test]
fn ping_and_pong_are_byte_exact() {
    let incoming = decode_request(b"5323_1 d7:command4:pinge").unwrap();
    assert_eq!(incoming.request, Request::new(RequestKind::Ping));
    let reply = encode_reply(&incoming.cookie, &Reply::pong(), incoming.encoding);
    assert_eq!(&reply[..], b"5323_1 d6:result4:ponge");
    let json = decode_request(br#"x9 {"command":"ping"}"#).unwrap();
    assert_eq!(
        &encode_reply(&json.cookie, &Reply::pong(), json.encoding)[..],
        br#"x9 {"result":"pong"}"#
    );
}

#[test]
fn offer_reply_is_bencode_with_sorted_keys() {
    let cookie = Cookie::new("c_1").unwrap();
    let reply = Reply::ok()
        .with_sdp("v=0\r\n")
        .with_warning("Ignored unrecognised flags or keys: x");
    assert_eq!(
        &encode_reply(&cookie, &reply, Encoding::Bencode)[..],
        b"c_1 d6:result2:ok3:sdp5:v=0\r\n7:warning37:Ignored unrecognised flags or keys: xe"
    );
}

#[test]
fn query_reply_carries_counters_as_bencode_integers() {
    let mut reply = Reply::ok();
    reply.created = Some(1_700_000_000);
    reply.last_signal = Some(1_700_000_005);
    reply.totals = Some(Totals {
        rtp: Counters {
            packets: 42,
            bytes: 6720,
            errors: 0,
        },
        rtcp: Counters {
            packets: 2,
            bytes: 104,
            errors: 1,
        },
    });
    reply.tags = Some(vec![(
        "ft".to_string(),
        TagInfo {
            tag: "ft".into(),
            label: Some("caller".into()),
            created: Some(1_700_000_000),
            via_branch: None,
            other: vec![("medias".into(), Value::List(vec![]))],
        },
    )]);
    let bytes = encode_reply(&Cookie::new("q").unwrap(), &reply, Encoding::Bencode);
    assert_eq!(
        &bytes[..],
        &b"q d7:createdi1700000000e11:last signali1700000005e6:result2:ok\
4:tagsd2:ftd7:createdi1700000000e5:label6:caller6:mediasle3:tag2:ftee\
6:totalsd4:RTCPd5:bytesi104e6:errorsi1e7:packetsi2ee3:RTPd5:bytesi6720e6:errorsi0e7:packetsi42eeee"
            [..]
    );
    let (cookie, encoding, back) = decode_reply(&bytes).unwrap();
    assert_eq!(cookie.as_bytes(), b"q");
    assert_eq!(encoding, Encoding::Bencode);
    assert_eq!(back, reply);
}

#[test]
fn datagram_without_cookie_is_dropped_silently() {
    for datagram in [&b"d7:command4:pinge"[..], b" d7:command4:pinge", b""] {
        let err = decode_request(datagram).unwrap_err();
        assert_eq!(err, DecodeError::NoCookie);
        assert_eq!(err.error_reply(), None);
    }
}

#[test]
fn malformed_documents_get_rtpengine_error_replies() {
    let cases: [(&[u8], &[u8]); 8] = [
        (
            b"ab ",
            b"ab d12:error-reason25:Invalid data (no payload)6:result5:errore",
        ),
        (
            b"ab x",
            b"ab d12:error-reason22:Invalid NG data format6:result5:errore",
        ),
        (
            b"ab d7:command",
            b"ab d12:error-reason35:Could not decode bencode dictionary6:result5:errore",
        ),
        (
            b"ab {\"command\":",
            br#"ab {"result":"error","error-reason":"Failed to parse JSON document"}"#,
        ),
        (
            b"ab d3:fooi1ee",
            b"ab d12:error-reason36:Dictionary contains no key \"command\"6:result5:errore",
        ),
        (
            b"ab d7:command5:fetche",
            b"ab d12:error-reason20:Unrecognized command6:result5:errore",
        ),
        (
            b"ab d7:command5:query5:flagsl5:fatalee",
            b"ab d12:error-reason21:No call-id in message6:result5:errore",
        ),
        (
            br#"ab {"command":"answer","call-id":"c","from-tag":"f","sdp":"v=0"}"#,
            br#"ab {"result":"error","error-reason":"No to-tag in message"}"#,
        ),
    ];
    for (datagram, expected) in cases {
        let err = decode_request(datagram).unwrap_err();
        assert_eq!(
            err.error_reply().as_deref(),
            Some(expected),
            "for {:?} ({err})",
            String::from_utf8_lossy(datagram)
        );
    }
}

#[test]
fn offer_missing_keys_report_in_rtpengine_order() {
    let full = [
        ("command", "offer"),
        ("sdp", "v=0"),
        ("call-id", "c"),
        ("from-tag", "f"),
    ];
    let expected = [
        ErrorReason::NoSdpBody,
        ErrorReason::NoCallId,
        ErrorReason::NoFromTag,
    ];
    for (skip, reason) in (1..4).zip(expected) {
        let dict: Dict = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, (k, v))| (k.to_string(), Value::text(*v)))
            .collect();
        assert_eq!(Request::from_dict(&dict), Err(reason));
    }
}

#[test]
fn error_strings_are_rtpengines() {
    let wire: Vec<&str> = ErrorReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        wire,
        [
            "Invalid data (no payload)",
            "Invalid NG data format",
            "Could not decode bencode dictionary",
            "Failed to parse JSON document",
            "Dictionary contains no key \"command\"",
            "Unrecognized command",
            "No SDP body in message",
            "No call-id in message",
            "No from-tag in message",
            "No to-tag in message",
            "Unknown call-id",
            "Call-ID not found or tags didn't match",
            "Failed to parse SDP",
            "Incomplete SDP specification",
            "Invalid dialogue association",
            "Error rewriting SDP",
            "Ran out of ports",
            "Parallel session limit reached",
            "CPU usage limit exceeded",
            "Load limit exceeded",
            "Bandwidth limit exceeded",
        ]
    );
    for r in ErrorReason::ALL {
        assert_eq!(ErrorReason::from_wire(r.as_str()), Some(r));
        assert_eq!(r.to_string(), r.as_str());
    }
    assert_eq!(reason::UNKNOWN_CALL_ID, "Unknown call-id");
}

#[test]
fn load_limit_replies_follow_the_supports_key() {
    let cookie = Cookie::new("l").unwrap();
    let with = Reply::limit(ErrorReason::CpuUsageLimit, true);
    assert_eq!(
        &encode_reply(&cookie, &with, Encoding::Bencode)[..],
        b"l d7:message24:CPU usage limit exceeded6:result10:load limite"
    );
    let without = Reply::limit(ErrorReason::CpuUsageLimit, false);
    assert_eq!(
        without.outcome,
        Outcome::Error("Parallel session limit reached".into())
    );
    let ports = Reply::limit(ErrorReason::RanOutOfPorts, true);
    assert_eq!(ports.outcome, Outcome::Error("Ran out of ports".into()));
    assert!(with.is_capacity_failure() && without.is_capacity_failure());
    assert!(ports.is_capacity_failure());
    assert!(!Reply::error(ErrorReason::UnknownCallId).is_capacity_failure());
}

#[test]
fn delete_targets_follow_call_delete_branch_rules() {
    let del = |from: Option<&str>, to: Option<&str>, branch: Option<&str>| Delete {
        call_id: CallId::from("c"),
        from_tag: from.map(Tag::from),
        to_tag: to.map(Tag::from),
        via_branch: branch.map(Branch::from),
    };
    let plain = Flags::default();
    let to_tag_flag = Flags {
        to_tag: true,
        ..Flags::default()
    };
    let d = del(None, Some("t"), Some("b"));
    assert_eq!(d.target(&to_tag_flag), DeleteTarget::Call);
    let d = del(Some("f"), Some("t"), None);
    assert_eq!(d.target(&plain), DeleteTarget::Participant(&Tag::from("f")));
    let d = del(Some("f"), Some("t"), Some("b"));
    assert_eq!(
        d.target(&plain),
        DeleteTarget::Branch {
            from_tag: &Tag::from("f"),
            via_branch: &Branch::from("b")
        }
    );
    assert_eq!(
        d.target(&to_tag_flag),
        DeleteTarget::Dialogue {
            from_tag: &Tag::from("f"),
            to_tag: &Tag::from("t")
        }
    );
}

#[test]
fn non_utf8_sdp_survives_bencode_and_forces_bencode_over_json() {
    let sdp = Bytes::from_static(b"v=0\r\ns=\xff\xfe\r\n");
    let request = Request::new(RequestKind::Offer(OfferAnswer {
        call_id: CallId::from("c"),
        from_tag: Tag::from("f"),
        to_tag: None,
        via_branch: None,
        sdp: sdp.clone(),
    }));
    let cookie = Cookie::new("n").unwrap();
    let datagram = encode_request(&cookie, &request, Encoding::Json);
    assert!(
        datagram.starts_with(b"n d"),
        "JSON cannot carry it: bencode"
    );
    let back = decode_request(&datagram).unwrap();
    assert_eq!(back.request, request);
}

#[test]
fn hostile_nesting_is_rejected_without_overflowing_the_stack() {
    let mut deep = b"c d1:a".to_vec();
    deep.extend(std::iter::repeat_n(b'l', 100_000));
    let err = decode_request(&deep).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Request {
            reason: ErrorReason::BadBencode,
            ..
        }
    ));
    let mut json = b"c {\"a\":".to_vec();
    json.extend(std::iter::repeat_n(b'[', 100_000));
    assert!(decode_request(&json).is_err());
    let rtpp = format!("c d7:command4:ping10:rtpp-flags{}e", s(&"a=[".repeat(50)));
    let req = decode_request(rtpp.as_bytes()).unwrap().request;
    assert_eq!(req.flags.unsupported, ["rtpp-flags nested too deeply"]);
}

#[test]
fn other_commands_decode_with_their_identity() {
    let req = decode_request(b"c d7:command15:start recording7:call-id2:c1e")
        .unwrap()
        .request;
    assert_eq!(req.command(), Command::StartRecording);
    assert_eq!(req.call_id(), Some(&CallId::from("c1")));
    assert_eq!(
        &encode_request(&Cookie::new("c").unwrap(), &req, Encoding::Bencode)[..],
        b"c d7:call-id2:c17:command15:start recordinge"
    );
}
