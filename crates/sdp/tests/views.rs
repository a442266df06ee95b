//! Typed views return exactly the values in the SDP.

mod fixtures;

use anchorage_sdp::{
    Bandwidth, Candidate, Connection, Crypto, Direction, FieldError, Fingerprint, Fmtp, KeyParam,
    Origin, Proto, Rtcp, Rtpmap, Session, Setup, Timing,
};

fn parse(input: Vec<u8>) -> Session {
    Session::parse_slice(&input).unwrap()
}

#[test]
fn session_level_views() {
    let sdp = parse(fixtures::g711());
    assert_eq!(sdp.version(), Ok(0));
    assert_eq!(
        sdp.origin(),
        Ok(Origin {
            username: "alice",
            session_id: "2890844526",
            session_version: 2890844526,
            network_type: "IN",
            address_type: "IP4",
            address: "192.0.2.10",
        })
    );
    assert_eq!(sdp.name(), Ok(&b"-"[..]));
    assert_eq!(sdp.timing(), Ok(Timing { start: 0, stop: 0 }));
    assert_eq!(
        sdp.session_level().connection(),
        Ok(Some(Connection {
            network_type: "IN",
            address_type: "IP4",
            address: "192.0.2.10",
            ttl: None,
            count: None,
        }))
    );
}

#[test]
fn media_line_and_codecs() {
    let sdp = parse(fixtures::g711());
    let audio = &sdp.media()[0];
    let m = audio.media();
    assert_eq!(
        (m.media(), m.port(), m.port_count(), m.proto()),
        ("audio", 49170, None, "RTP/AVP")
    );
    assert_eq!(m.transport(), Proto::RtpAvp);
    assert_eq!(m.formats().collect::<Vec<_>>(), ["0", "8", "101"]);
    assert_eq!(
        audio.rtpmap(101),
        Some(Rtpmap {
            payload_type: 101,
            encoding: "telephone-event",
            clock_rate: 8000,
            parameters: None
        })
    );
    assert_eq!(
        audio.fmtp("101"),
        Some(Fmtp {
            format: "101",
            parameters: "0-16"
        })
    );
    assert_eq!(audio.ptime(), Ok(Some(20)));
    assert_eq!(audio.maxptime(), Ok(Some(150)));
    assert_eq!(audio.direction(), Some(Direction::SendRecv));
    assert_eq!(audio.rtpmaps().count(), 3);
    // A static type without rtpmap resolves through the RFC 3551 table.
    let ipv6 = parse(fixtures::ipv6());
    assert_eq!(
        ipv6.media()[0]
            .codec("0")
            .map(|c| (c.encoding, c.clock_rate)),
        Some(("PCMU", 8000))
    );
    assert_eq!(ipv6.media()[0].rtpmap(0), None);
}

#[test]
fn sdes_crypto_bandwidth_and_rejected_video() {
    let sdp = parse(fixtures::sdes());
    assert_eq!(
        sdp.session_level().bandwidths().collect::<Vec<_>>(),
        [Ok(Bandwidth {
            kind: "AS",
            value: 84
        })]
    );
    let audio = &sdp.media()[0];
    assert_eq!(audio.media().transport(), Proto::RtpSavp);
    assert!(audio.media().transport().is_srtp());
    let cryptos: Vec<Crypto<'_>> = audio.cryptos().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        cryptos,
        [
            Crypto {
                tag: 1,
                suite: "AES_CM_128_HMAC_SHA1_80",
                key_params: "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
                session_params: "",
            },
            Crypto {
                tag: 2,
                suite: "AES_CM_128_HMAC_SHA1_32",
                key_params: "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:4",
                session_params: "UNENCRYPTED_SRTCP",
            },
        ]
    );
    assert_eq!(
        cryptos[0].keys().collect::<Vec<_>>(),
        [Ok(KeyParam {
            method: "inline",
            key_salt: "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
            lifetime: Some("2^20"),
            mki: Some("1:4"),
        })]
    );
    assert_eq!(
        cryptos[1].session_param_list().collect::<Vec<_>>(),
        ["UNENCRYPTED_SRTCP"]
    );
    // An unknown attribute is visible as such.
    let unknown = audio.attribute("silenceSupp").unwrap();
    assert_eq!(unknown.value, Some(&b"off - - - -"[..]));
    assert_eq!(
        sdp.session_level().attribute("X-nat").unwrap().value_str(),
        Ok("0")
    );
    let video = &sdp.media()[1];
    assert!(video.is_rejected());
    assert_eq!(video.media().media(), "video");
}

#[test]
fn t38_image_section() {
    let sdp = parse(fixtures::t38());
    let image = &sdp.media()[0];
    assert_eq!(
        (
            image.media().media(),
            image.media().port(),
            image.media().proto()
        ),
        ("image", 36000, "udptl")
    );
    assert_eq!(image.media().transport(), Proto::Udptl);
    assert_eq!(image.media().formats().collect::<Vec<_>>(), ["t38"]);
    assert_eq!(image.codec("t38"), None);
    assert_eq!(
        image.attribute("T38MaxBitRate").unwrap().value_str(),
        Ok("14400")
    );
}

#[test]
fn ipv6_and_hold() {
    let sdp = parse(fixtures::ipv6());
    let c = sdp.effective_connection(0).unwrap().unwrap();
    assert_eq!((c.address_type, c.address), ("IP6", "2001:db8::7"));
    assert_eq!(c.ip(), Some("2001:db8::7".parse().unwrap()));
    assert_eq!(sdp.origin().unwrap().address_type, "IP6");

    let hold = parse(fixtures::hold());
    let c = hold.effective_connection(0).unwrap().unwrap();
    assert!(c.is_unspecified());
    assert_eq!(hold.effective_direction(0), Some(Direction::SendOnly));
    assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
}

#[test]
fn direction_defaults_and_session_level_direction() {
    let sdp = parse(fixtures::ipv6());
    assert_eq!(sdp.media()[0].direction(), None);
    assert_eq!(sdp.effective_direction(0), Some(Direction::SendRecv));
    assert_eq!(sdp.effective_direction(1), None);
    let session_inactive = Session::parse_slice(
        b"v=0\r\na=inactive\r\nm=audio 1 RTP/AVP 0\r\nm=audio 2 RTP/AVP 0\r\na=recvonly\r\n",
    )
    .unwrap();
    assert_eq!(
        session_inactive.effective_direction(0),
        Some(Direction::Inactive)
    );
    assert_eq!(
        session_inactive.effective_direction(1),
        Some(Direction::RecvOnly)
    );
}

#[test]
fn ice_rtcp_and_identification() {
    let sdp = parse(fixtures::ice());
    assert_eq!(sdp.session_level().ice_options(), Ok(Some("trickle")));
    let audio = &sdp.media()[0];
    assert_eq!(audio.ice_ufrag(), Ok(Some("F2vR")));
    assert_eq!(audio.ice_pwd(), Ok(Some("YJ1kx0GcuuAw9eWSgJrXxg")));
    let candidates: Vec<Candidate<'_>> = audio.candidates().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        candidates[1],
        Candidate {
            foundation: "2",
            component: 1,
            transport: "UDP",
            priority: 1694498815,
            address: "203.0.113.99",
            port: 61000,
            kind: "srflx",
            extensions: "raddr 192.0.2.40 rport 10000",
        }
    );
    assert_eq!(candidates[0].extensions, "");
    assert!(audio.has_ice());
    assert_eq!(
        audio.rtcp(),
        Ok(Some(Rtcp {
            port: 10001,
            connection: None
        }))
    );
    assert!(audio.rtcp_mux());
    assert_eq!(audio.label(), Ok(Some("1")));
    assert_eq!(audio.mid(), Ok(None));
    assert_eq!(
        audio.rtpmap(111),
        Some(Rtpmap {
            payload_type: 111,
            encoding: "opus",
            clock_rate: 48000,
            parameters: Some("2")
        })
    );
}

#[test]
fn webrtc_dtls_and_rtcp_with_address() {
    let sdp = parse(fixtures::webrtc());
    let audio = &sdp.media()[0];
    assert_eq!(audio.media().transport(), Proto::UdpTlsRtpSavpf);
    assert_eq!(audio.setup(), Ok(Some(Setup::ActPass)));
    assert_eq!(
        audio.fingerprints().collect::<Vec<_>>(),
        [Ok(Fingerprint {
            hash_function: "sha-256",
            value: "FA:14:42:3B:C7:97:1B:E8:AE:0C:2E:53:CB:27:EB:AE:EE:6A:FB:04:EC:19:75:7B:AE:EE:6C:3C:E2:61:33:06",
        })]
    );
    assert_eq!(audio.mid(), Ok(Some("0")));
    let rtcp = audio.rtcp().unwrap().unwrap();
    assert_eq!(rtcp.port, 9);
    assert_eq!(rtcp.connection.map(|c| c.address), Some("0.0.0.0"));
    assert_eq!(sdp.session_level().connection(), Ok(None));
    assert_eq!(
        sdp.effective_connection(0).unwrap().map(|c| c.address),
        Some("0.0.0.0")
    );
}

#[test]
fn lf_input_views_ignore_trailing_whitespace() {
    let sdp = parse(fixtures::lf_no_final_newline());
    assert_eq!(
        sdp.session_level().connection().unwrap().map(|c| c.address),
        Some("192.0.2.31")
    );
    assert_eq!(sdp.media()[0].ptime(), Ok(Some(20)));
    assert_eq!(sdp.media()[0].direction(), Some(Direction::SendRecv));
}

#[test]
fn non_utf8_is_reported_per_field_not_per_session() {
    let sdp = parse(fixtures::latin1_mixed());
    assert_eq!(sdp.name(), Ok(&b"Caf\xe9"[..]));
    let blob = sdp.media()[0].attribute("X-blob").unwrap();
    assert_eq!(blob.value, Some(&b"\xff\xfe"[..]));
    assert_eq!(
        blob.value_str(),
        Err(FieldError::Malformed {
            field: "a= value",
            problem: "is not UTF-8",
            found: "\u{fffd}\u{fffd}".into()
        })
    );
    assert_eq!(sdp.origin().unwrap().session_version, 8);
}

#[test]
fn malformed_lines_give_named_errors() {
    let sdp = Session::parse_slice(
        b"v=0\r\nt=now\r\nc=IN IP4\r\nm=audio 1 RTP/AVP 0\r\na=ptime:x\r\na=rtpmap:0 PCMU\r\n",
    )
    .unwrap();
    assert_eq!(sdp.origin().unwrap_err().to_string(), "no o= line");
    assert_eq!(
        sdp.timing().unwrap_err().to_string(),
        "t=: needs two numbers: \"now\""
    );
    assert_eq!(
        sdp.session_level().connection().unwrap_err().to_string(),
        "c=: has no address: \"IN IP4\""
    );
    assert_eq!(
        sdp.media()[0].ptime().unwrap_err().to_string(),
        "a=ptime: is not a number: \"x\""
    );
    assert_eq!(
        sdp.media()[0]
            .rtpmaps()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string(),
        "a=rtpmap: has no clock rate: \"PCMU\""
    );
    // The malformed rtpmap does not hide the static table.
    assert_eq!(sdp.media()[0].codec("0").map(|c| c.encoding), Some("PCMU"));
}
