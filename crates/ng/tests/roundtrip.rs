//! Property: encode → decode is the identity for requests and replies, in both encodings.

use std::net::IpAddr;

use anchorage_ng::*;
use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9@._+-]{1,24}"
}

fn word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_]{1,12}"
}

/// Keys and flag words no normaliser rule recognises.
fn unknown_name() -> impl Strategy<Value = String> {
    "x-[a-z]{1,8}"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        "[ -~]{0,16}".prop_map(Value::text),
    ]
}

fn flags() -> impl Strategy<Value = Flags> {
    let booleans = vec(any::<bool>(), 22);
    let lists = (
        vec(any::<bool>(), 8),
        vec(any::<bool>(), 5),
        vec(any::<bool>(), 12),
        vec(word(), 0..3),
        vec(word(), 0..3),
    );
    let choices = (
        option::of(prop_oneof![
            Just(Ice::Remove),
            Just(Ice::Force),
            Just(Ice::Default),
            Just(Ice::ForceRelay),
            Just(Ice::Optional)
        ]),
        option::of(prop_oneof![
            Just(Dtls::Off),
            Just(Dtls::Passive),
            Just(Dtls::Active)
        ]),
        option::of(prop_oneof![
            Just(TransportProtocol::RtpAvp),
            Just(TransportProtocol::RtpAvpf),
            Just(TransportProtocol::RtpSavp),
            Just(TransportProtocol::RtpSavpf),
            Just(TransportProtocol::UdpTlsRtpSavp),
            Just(TransportProtocol::UdpTlsRtpSavpf),
            Just(TransportProtocol::Accept)
        ]),
        vec("[a-z0-9]{1,8}", 0..3),
        option::of(prop_oneof![
            Just(AddressFamily::Ip4),
            Just(AddressFamily::Ip6)
        ]),
        option::of(ip()),
        option::of(ip()),
    );
    let scalars = (
        option::of("[ -~]{0,16}"),
        option::of(0..=i64::MAX as u64),
        option::of(any::<bool>()),
        any::<bool>(),
        option::of(any::<u8>()),
        option::of(0..=i64::MAX as u64),
        vec(vec("[A-Za-z0-9]{1,8}", 0..3), 5),
        vec(unknown_name(), 0..3),
        vec((unknown_name(), scalar()), 0..3),
    );
    (booleans, lists, choices, scalars).prop_map(|(b, l, c, s)| {
        let mut f = Flags::default();
        let set = [
            &mut f.trust_address,
            &mut f.sip_source_address,
            &mut f.symmetric,
            &mut f.asymmetric,
            &mut f.strict_source,
            &mut f.media_handover,
            &mut f.port_latching,
            &mut f.no_port_latching,
            &mut f.loop_protect,
            &mut f.no_rtcp_attribute,
            &mut f.full_rtcp_attribute,
            &mut f.original_sendrecv,
            &mut f.reset,
            &mut f.fatal,
            &mut f.fast,
            &mut f.to_tag,
            &mut f.pad_crypto,
            &mut f.recrypt,
            &mut f.generate_mid,
            &mut f.discard_recording,
            &mut f.fragment,
            &mut f.debug,
        ];
        for (field, value) in set.into_iter().zip(b) {
            *field = value;
        }
        let r = &mut f.replace;
        for (field, value) in [
            &mut r.origin,
            &mut r.origin_full,
            &mut r.username,
            &mut r.session_name,
            &mut r.sdp_version,
            &mut r.zero_address,
            &mut r.force_increment_sdp_version,
            &mut r.session_connection,
        ]
        .into_iter()
        .zip(l.0)
        {
            *field = value;
        }
        let m = &mut f.rtcp_mux;
        for (field, value) in [
            &mut m.offer,
            &mut m.require,
            &mut m.demux,
            &mut m.accept,
            &mut m.reject,
        ]
        .into_iter()
        .zip(l.1)
        {
            *field = value;
        }
        let d = &mut f.sdes;
        for (field, value) in [
            &mut d.off,
            &mut d.nonew,
            &mut d.pad,
            &mut d.static_keys,
            &mut d.prefer,
            &mut d.lifetime,
            &mut d.unencrypted_srtp,
            &mut d.unencrypted_srtcp,
            &mut d.unauthenticated_srtp,
            &mut d.encrypted_srtp,
            &mut d.encrypted_srtcp,
            &mut d.authenticated_srtp,
        ]
        .into_iter()
        .zip(l.2)
        {
            *field = value;
        }
        d.no = l.3;
        d.only = l.4;
        (
            f.ice,
            f.dtls,
            f.transport_protocol,
            f.direction,
            f.address_family,
            f.received_from,
            f.media_address,
        ) = c;
        let [strip, offer, except, mask, transcode]: [Vec<String>; 5] = s.6.try_into().unwrap();
        f.codec = Codec {
            strip,
            offer,
            except,
            mask,
            transcode,
        };
        (
            f.label,
            f.delete_delay,
            f.record_call,
            f.supports_load_limit,
            f.tos,
            f.limit,
        ) = (s.0, s.1, s.2, s.3, s.4, s.5);
        f.other_flags = s.7;
        // Bencode writes keys sorted; arrival order is then key order.
        let mut other_keys = s.8;
        other_keys.sort_by(|a, b| a.0.cmp(&b.0));
        f.other_keys = other_keys;
        f
    })
}

fn request() -> impl Strategy<Value = Request> {
    let offer_answer = || {
        (
            ident(),
            ident(),
            option::of(ident()),
            option::of(ident()),
            vec(any::<u8>(), 1..300),
        )
            .prop_map(|(c, f, t, b, sdp)| OfferAnswer {
                call_id: CallId(c),
                from_tag: Tag(f),
                to_tag: t.map(Tag),
                via_branch: b.map(Branch),
                sdp: Bytes::from(sdp),
            })
    };
    let kind = prop_oneof![
        Just(RequestKind::Ping),
        offer_answer().prop_map(RequestKind::Offer),
        offer_answer().prop_map(|mut oa| {
            oa.to_tag.get_or_insert_with(|| Tag("callee".into()));
            RequestKind::Answer(oa)
        }),
        (
            ident(),
            option::of(ident()),
            option::of(ident()),
            option::of(ident())
        )
            .prop_map(|(c, f, t, b)| RequestKind::Delete(Delete {
                call_id: CallId(c),
                from_tag: f.map(Tag),
                to_tag: t.map(Tag),
                via_branch: b.map(Branch),
            })),
        (ident(), option::of(ident()), option::of(ident())).prop_map(|(c, f, t)| {
            RequestKind::Query(Query {
                call_id: CallId(c),
                from_tag: f.map(Tag),
                to_tag: t.map(Tag),
            })
        }),
        Just(RequestKind::List),
        Just(RequestKind::Statistics),
        (
            prop::sample::select(Command::ALL.to_vec()).prop_filter("untyped", |c| !c.is_typed()),
            option::of(ident())
        )
            .prop_map(|(command, c)| RequestKind::Other {
                command,
                call_id: c.map(CallId),
                from_tag: None,
                to_tag: None,
            }),
    ];
    (kind, flags()).prop_map(|(kind, flags)| Request { kind, flags })
}

fn counters() -> impl Strategy<Value = Counters> {
    (
        0..=i64::MAX as u64,
        0..=i64::MAX as u64,
        0..=i64::MAX as u64,
    )
        .prop_map(|(packets, bytes, errors)| Counters {
            packets,
            bytes,
            errors,
        })
}

fn reply() -> impl Strategy<Value = Reply> {
    let error = "[ -~]{0,40}".prop_map(|t| Reply::new(Outcome::Error(t)));
    let outcome = prop_oneof![
        Just(Outcome::Ok),
        Just(Outcome::Pong),
        option::of("[ -~]{0,40}").prop_map(Outcome::LoadLimit),
    ];
    let tags = vec(
        (
            ident(),
            option::of("[ -~]{0,12}"),
            option::of(any::<i64>()),
            option::of(ident()),
        ),
        0..3,
    )
    .prop_map(|entries| {
        let mut tags: Vec<(String, TagInfo)> = entries
            .into_iter()
            .map(|(tag, label, created, via_branch)| {
                (
                    tag.clone(),
                    TagInfo {
                        tag,
                        label,
                        created,
                        via_branch,
                        other: Vec::new(),
                    },
                )
            })
            .collect();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        tags
    });
    let full = (
        outcome,
        option::of("[ -~]{0,40}"),
        option::of(vec(any::<u8>(), 0..200)),
        (
            option::of(any::<i64>()),
            option::of(any::<i64>()),
            option::of(any::<i64>()),
        ),
        option::of((counters(), counters())),
        option::of(tags),
        option::of(vec(ident(), 0..4)),
        vec((unknown_name(), scalar()), 0..3),
    )
        .prop_map(
            |(
                outcome,
                warning,
                sdp,
                (created, created_us, last_signal),
                totals,
                tags,
                calls,
                other,
            )| {
                let mut other = other;
                other.sort_by(|a, b| a.0.cmp(&b.0));
                Reply {
                    outcome,
                    warning,
                    sdp: sdp.map(Bytes::from),
                    created,
                    created_us,
                    last_signal,
                    totals: totals.map(|(rtp, rtcp)| Totals { rtp, rtcp }),
                    tags,
                    calls,
                    statistics: None,
                    other,
                }
            },
        );
    prop_oneof![error, full]
}

fn encodings() -> impl Strategy<Value = Encoding> {
    prop_oneof![Just(Encoding::Bencode), Just(Encoding::Json)]
}

proptest! {
    #[test]
    fn request_encode_decode_is_identity(req in request(), enc in encodings(), cookie in "[!-~]{1,20}") {
        let cookie = Cookie::new(cookie).unwrap();
        let datagram = encode_request(&cookie, &req, enc);
        let back = decode_request(&datagram).unwrap();
        prop_assert_eq!(&back.cookie, &cookie);
        prop_assert_eq!(back.request, req);
    }

    #[test]
    fn reply_encode_decode_is_identity(reply in reply(), enc in encodings(), cookie in "[!-~]{1,20}") {
        let cookie = Cookie::new(cookie).unwrap();
        let datagram = encode_reply(&cookie, &reply, enc);
        let (back_cookie, _, back) = decode_reply(&datagram).unwrap();
        prop_assert_eq!(back_cookie, cookie);
        prop_assert_eq!(back, reply);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        let _ = decode_request(&bytes).map_err(|e| e.error_reply());
        let _ = decode_reply(&bytes);
    }
}

/// Real-looking datagrams to corrupt.
const SEEDS: [&[u8]; 4] = [
    b"5323_1 d7:command5:offer7:call-id2:c18:from-tag2:f13:sdp5:v=0\r\n5:flagsl13:trust-addresse7:replacel6:origine3:ICE6:removee",
    b"k_7 d7:command6:delete7:call-id2:c110:rtpp-flags59:to-tag=x codec=[strip=[all] offer=[PCMA]] direction=pub ICEe",
    br#"j_1 {"command":"query","call-id":"c","flags":["fatal"],"codec":{"strip":"all"},"TOS":"7"}"#,
    b"q d7:createdi1700000000e6:result2:ok6:totalsd3:RTPd7:packetsi4eeee",
];

proptest! {
    #[test]
    fn corrupted_real_datagrams_never_panic_and_reencode(
        seed in 0..SEEDS.len(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = SEEDS[seed].to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        match decode_request(&bytes) {
            Ok(incoming) => {
                let again = encode_request(&incoming.cookie, &incoming.request, incoming.encoding);
                let back = decode_request(&again).unwrap();
                prop_assert_eq!(back.request.kind, incoming.request.kind);
            }
            Err(e) => {
                let _ = e.error_reply();
            }
        }
        let _ = decode_reply(&bytes);
    }
}

#[test]
fn seeds_are_valid_before_corruption() {
    for seed in &SEEDS[..3] {
        decode_request(seed).unwrap();
    }
    decode_reply(SEEDS[3]).unwrap();
}
