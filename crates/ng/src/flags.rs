//! THE flag normaliser: one function folds every way options reach us into one [`Flags`].
//!
//! Kamailio and OpenSIPS pass the same option in several ways (reference §1.4):
//!
//! * as a dictionary key: `"ICE": "remove"`, `"address family": "IP6"`, `"delete delay": 30`;
//! * as a word in the `flags` list: `"trust-address"`, `"SIP source address"`;
//! * as a prefixed word: `"replace-origin"`, `"rtcp-mux-demux"`, `"SDES-no-NULL_HMAC_SHA1_32"`,
//!   `"codec-strip-PCMA"`, or a transport word (`"RTP/SAVP"`, or `"SRTP"` + `"AVPF"`);
//! * in the `replace`, `rtcp-mux`, `SDES` lists;
//! * in one `rtpp-flags` string that the daemon parses: `"trust-address replace-origin
//!   ICE=remove direction=pub direction=priv codec=[strip=[all] offer=[PCMA]]"`.
//!
//! Key and word spellings are compared after [`normalise_key`]: ASCII case folded, `_` and
//! space turned into `-`. Suffixes after a prefix keep their spelling (crypto suite and codec
//! names are case-sensitive). Values that arrive as a string where a list is expected are
//! split on spaces and commas; integers may arrive as numeric strings.
//!
//! Order of application: the dictionary's keys in arrival order, then the `rtpp-flags`
//! string, so a value given in `rtpp-flags` wins. Nothing is an error: whatever we do not
//! model is kept in [`Flags::other_flags`] / [`Flags::other_keys`], whatever we cannot
//! understand in [`Flags::unsupported`], and [`Flags::unrecognised`] lists both for the
//! `warning` a server sends.

use std::net::IpAddr;

use bytes::Bytes;

use crate::value::{Dict, Value};

/// A key or flag word in comparison form: ASCII lowercase, `_` and space replaced by `-`.
/// Byte offsets are preserved (each byte maps to one byte).
pub fn normalise_key(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '_' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// All options of a request, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `trust-address`: send media to the address in the SDP (rtpengine's default).
    pub trust_address: bool,
    /// `SIP-source-address`: use `received-from` instead of the SDP address.
    pub sip_source_address: bool,
    /// `symmetric` (a no-op default in rtpengine).
    pub symmetric: bool,
    /// `asymmetric`: never move the send-to address to the learned source.
    pub asymmetric: bool,
    /// `strict-source`: drop packets from anything but the confirmed endpoint.
    pub strict_source: bool,
    /// `media-handover`: a new source re-learns the endpoint at once.
    pub media_handover: bool,
    /// `port-latching`: keep our local ports on a re-offer.
    pub port_latching: bool,
    /// `no-port-latching`: allocate new local ports on a re-offer.
    pub no_port_latching: bool,
    /// `loop-protect`: mark our SDP and pass an already-marked SDP through untouched.
    pub loop_protect: bool,
    /// `no-rtcp-attribute`: print no `a=rtcp`.
    pub no_rtcp_attribute: bool,
    /// `full-rtcp-attribute`: print `a=rtcp:<port> IN IP4 <addr>`.
    pub full_rtcp_attribute: bool,
    /// `original-sendrecv`: copy the direction attribute instead of recomputing it.
    pub original_sendrecv: bool,
    /// `reset`: forget per-participant negotiated state.
    pub reset: bool,
    /// `fatal` (delete): report "not found" as an error instead of a warning.
    pub fatal: bool,
    /// `fast` (delete): reply without statistics.
    pub fast: bool,
    /// `to-tag` (delete): honour the `to-tag` (also set by a `to-tag=` in `rtpp-flags`).
    pub to_tag: bool,
    /// `pad-crypto`: base64 SDES keys with `=` padding.
    pub pad_crypto: bool,
    /// `recrypt`: decrypt and re-encrypt SRTP even when passthrough is possible.
    pub recrypt: bool,
    /// `generate-mid`: add `a=mid`.
    pub generate_mid: bool,
    /// `discard-recording` (delete).
    pub discard_recording: bool,
    /// `fragment`: the SDP is a trickle-ICE sdpfrag (Kamailio `rtpengine_info`).
    pub fragment: bool,
    /// `debug`: verbose logging for this call.
    pub debug: bool,
    /// `reanchor` (ours; rtpengine ignores it): this `answer` replays the answerer's last SDP
    /// for a call moved to this relay, and the SDPs the relay returns go to both parties as
    /// new offers (the move's re-INVITEs). A DTLS-SRTP party is offered `a=setup:actpass`
    /// (RFC 5763 §5) and the relay's role towards it waits for the party's real answer.
    pub reanchor: bool,
    /// `replace` options (`replace: [...]` or `replace-X` words).
    pub replace: Replace,
    /// `rtcp-mux` options.
    pub rtcp_mux: RtcpMux,
    /// `SDES` options.
    pub sdes: Sdes,
    /// `ICE`.
    pub ice: Option<Ice>,
    /// `DTLS`.
    pub dtls: Option<Dtls>,
    /// `transport-protocol` (or transport words).
    pub transport_protocol: Option<TransportProtocol>,
    /// `direction`: logical interface names, sender side first.
    pub direction: Vec<String>,
    /// `address-family`: family of the addresses we put in the outgoing SDP.
    pub address_family: Option<AddressFamily>,
    /// `received-from`: the SIP source address.
    pub received_from: Option<IpAddr>,
    /// `media-address`: overrides the sender's address.
    pub media_address: Option<IpAddr>,
    /// `label`: free label for this participant.
    pub label: Option<String>,
    /// `delete-delay` in seconds (0 = delete now).
    pub delete_delay: Option<u64>,
    /// `record-call`: yes/no (the `record-call` word means yes).
    pub record_call: Option<bool>,
    /// `supports` contains `load limit`: over-limit offers get `result: load limit`.
    pub supports_load_limit: bool,
    /// `TOS` for media packets.
    pub tos: Option<u8>,
    /// `limit` (list command): how many Call-IDs to return.
    pub limit: Option<u64>,
    /// `codec` manipulations.
    pub codec: Codec,
    /// Flag words we do not model, verbatim and in arrival order. Re-encoded; reported.
    pub other_flags: Vec<String>,
    /// Dictionary keys we do not model, spelled as received, with their values. Re-encoded;
    /// reported unless informational (`sip-message-type`, `SIP code`).
    pub other_keys: Vec<(String, Value)>,
    /// Values of modelled keys we cannot understand, as `key=value` text. Reported, not
    /// re-encoded.
    pub unsupported: Vec<String>,
}

/// `replace` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replace {
    /// `origin`: our address in `o=`.
    pub origin: bool,
    /// `origin-full`: the whole `o=` frozen per receiving endpoint.
    pub origin_full: bool,
    /// `username`: `o=` username constant per receiving endpoint.
    pub username: bool,
    /// `session-name`: `s=` frozen per receiving endpoint.
    pub session_name: bool,
    /// `SDP-version`: we own the `o=` version.
    pub sdp_version: bool,
    /// `zero-address`: a real address instead of a zero (hold) address.
    pub zero_address: bool,
    /// `force-increment-sdp-ver`: always increment the `o=` version.
    pub force_increment_sdp_version: bool,
    /// `session-connection`: accepted and ignored by rtpengine since 2024.
    pub session_connection: bool,
}

/// `rtcp-mux` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcpMux {
    /// `offer`: add mux to the outgoing offer.
    pub offer: bool,
    /// `require`: no separate RTCP port even in the offer.
    pub require: bool,
    /// `demux`: do not forward the offerer's mux.
    pub demux: bool,
    /// `accept`: accept the offerer's mux.
    pub accept: bool,
    /// `reject`: reject mux.
    pub reject: bool,
}

/// `SDES` options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sdes {
    /// `off`: no SDES crypto.
    pub off: bool,
    /// `nonew`: offer no suites the offerer did not.
    pub nonew: bool,
    /// `pad`: base64 with padding.
    pub pad: bool,
    /// `static`: keep keys across re-offers.
    pub static_keys: bool,
    /// `prefer`: prefer the offerer's suites.
    pub prefer: bool,
    /// `lifetime`: add a key lifetime.
    pub lifetime: bool,
    /// `unencrypted_srtp` session parameter.
    pub unencrypted_srtp: bool,
    /// `unencrypted_srtcp` session parameter.
    pub unencrypted_srtcp: bool,
    /// `unauthenticated_srtp` session parameter.
    pub unauthenticated_srtp: bool,
    /// `encrypted_srtp` (negation).
    pub encrypted_srtp: bool,
    /// `encrypted_srtcp` (negation).
    pub encrypted_srtcp: bool,
    /// `authenticated_srtp` (negation).
    pub authenticated_srtp: bool,
    /// `no-<SUITE>`: suites not to offer.
    pub no: Vec<String>,
    /// `only-<SUITE>`: the only suites to offer.
    pub only: Vec<String>,
}

/// `ICE` handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ice {
    /// `remove`: strip all ICE attributes.
    Remove,
    /// `force`: strip, then add ours.
    Force,
    /// `default`: `force` if the input had ICE.
    Default,
    /// `force-relay`: add ourselves as a relay candidate.
    ForceRelay,
    /// `optional`: add ourselves as a low-priority candidate.
    Optional,
}

/// `DTLS` handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtls {
    /// `off` (also `no`, `disable`, `disabled`).
    Off,
    /// `passive`.
    Passive,
    /// `active`.
    Active,
}

/// `transport-protocol`: the `m=` profile to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportProtocol {
    /// `RTP/AVP`.
    RtpAvp,
    /// `RTP/AVPF`.
    RtpAvpf,
    /// `RTP/SAVP`.
    RtpSavp,
    /// `RTP/SAVPF`.
    RtpSavpf,
    /// `UDP/TLS/RTP/SAVP`.
    UdpTlsRtpSavp,
    /// `UDP/TLS/RTP/SAVPF`.
    UdpTlsRtpSavpf,
    /// `accept` (answers): follow the answerer's profile.
    Accept,
}

/// `address-family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    /// `IP4`.
    Ip4,
    /// `IP6`.
    Ip6,
}

/// `codec` manipulations (the passthrough subset; transcoding actions are kept too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Codec {
    /// `strip`: codecs to remove (`all` = every codec).
    pub strip: Vec<String>,
    /// `offer`: codecs to keep offering after a strip.
    pub offer: Vec<String>,
    /// `except`: codecs exempt from `strip=all`.
    pub except: Vec<String>,
    /// `mask`: codecs hidden from the receiver but still accepted.
    pub mask: Vec<String>,
    /// `transcode`: codecs to add by transcoding.
    pub transcode: Vec<String>,
}

/// One boolean flag: its canonical wire word and where it lives.
type BoolFlag = (&'static str, fn(&mut Flags) -> &mut bool);

/// The boolean flag words, canonical spelling first (the spelling we send).
const BOOLEAN_FLAGS: &[BoolFlag] = &[
    ("trust-address", |f| &mut f.trust_address),
    ("SIP-source-address", |f| &mut f.sip_source_address),
    ("symmetric", |f| &mut f.symmetric),
    ("asymmetric", |f| &mut f.asymmetric),
    ("strict-source", |f| &mut f.strict_source),
    ("media-handover", |f| &mut f.media_handover),
    ("port-latching", |f| &mut f.port_latching),
    ("no-port-latching", |f| &mut f.no_port_latching),
    ("loop-protect", |f| &mut f.loop_protect),
    ("no-rtcp-attribute", |f| &mut f.no_rtcp_attribute),
    ("full-rtcp-attribute", |f| &mut f.full_rtcp_attribute),
    ("original-sendrecv", |f| &mut f.original_sendrecv),
    ("reset", |f| &mut f.reset),
    ("fatal", |f| &mut f.fatal),
    ("fast", |f| &mut f.fast),
    ("to-tag", |f| &mut f.to_tag),
    ("pad-crypto", |f| &mut f.pad_crypto),
    ("recrypt", |f| &mut f.recrypt),
    ("generate-mid", |f| &mut f.generate_mid),
    ("discard-recording", |f| &mut f.discard_recording),
    ("fragment", |f| &mut f.fragment),
    ("debug", |f| &mut f.debug),
    ("reanchor", |f| &mut f.reanchor),
];

type ReplaceFlag = (&'static str, fn(&mut Replace) -> &mut bool);

/// `replace` items, canonical spelling first.
const REPLACE_ITEMS: &[ReplaceFlag] = &[
    ("origin", |r| &mut r.origin),
    ("origin-full", |r| &mut r.origin_full),
    ("username", |r| &mut r.username),
    ("session-name", |r| &mut r.session_name),
    ("SDP-version", |r| &mut r.sdp_version),
    ("zero-address", |r| &mut r.zero_address),
    ("force-increment-sdp-ver", |r| {
        &mut r.force_increment_sdp_version
    }),
    ("session-connection", |r| &mut r.session_connection),
];

type MuxFlag = (&'static str, fn(&mut RtcpMux) -> &mut bool);

/// `rtcp-mux` items.
const RTCP_MUX_ITEMS: &[MuxFlag] = &[
    ("offer", |m| &mut m.offer),
    ("require", |m| &mut m.require),
    ("demux", |m| &mut m.demux),
    ("accept", |m| &mut m.accept),
    ("reject", |m| &mut m.reject),
];

type SdesFlag = (&'static str, fn(&mut Sdes) -> &mut bool);

/// `SDES` keyword items (besides `no-` and `only-`), canonical spelling first.
const SDES_ITEMS: &[SdesFlag] = &[
    ("off", |s| &mut s.off),
    ("nonew", |s| &mut s.nonew),
    ("pad", |s| &mut s.pad),
    ("static", |s| &mut s.static_keys),
    ("prefer", |s| &mut s.prefer),
    ("lifetime", |s| &mut s.lifetime),
    ("unencrypted_srtp", |s| &mut s.unencrypted_srtp),
    ("unencrypted_srtcp", |s| &mut s.unencrypted_srtcp),
    ("unauthenticated_srtp", |s| &mut s.unauthenticated_srtp),
    ("encrypted_srtp", |s| &mut s.encrypted_srtp),
    ("encrypted_srtcp", |s| &mut s.encrypted_srtcp),
    ("authenticated_srtp", |s| &mut s.authenticated_srtp),
];

/// Keys that are informational only: kept in `other_keys` but never reported.
const INFORMATIONAL_KEYS: &[&str] = &["sip-message-type", "sip-code"];

/// How deep the `rtpp-flags` bracket syntax may nest.
const MAX_RTPP_DEPTH: usize = 8;

impl Ice {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Ice::Remove => "remove",
            Ice::Force => "force",
            Ice::Default => "default",
            Ice::ForceRelay => "force-relay",
            Ice::Optional => "optional",
        }
    }
    fn parse(n: &str) -> Option<Ice> {
        Some(match n {
            "remove" => Ice::Remove,
            "force" => Ice::Force,
            "default" => Ice::Default,
            "force-relay" => Ice::ForceRelay,
            "optional" => Ice::Optional,
            _ => return None,
        })
    }
}

impl Dtls {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtls::Off => "off",
            Dtls::Passive => "passive",
            Dtls::Active => "active",
        }
    }
    fn parse(n: &str) -> Option<Dtls> {
        Some(match n {
            "off" | "no" | "disable" | "disabled" => Dtls::Off,
            "passive" => Dtls::Passive,
            "active" => Dtls::Active,
            _ => return None,
        })
    }
}

impl TransportProtocol {
    /// The wire value (the SDP `m=` profile).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProtocol::RtpAvp => "RTP/AVP",
            TransportProtocol::RtpAvpf => "RTP/AVPF",
            TransportProtocol::RtpSavp => "RTP/SAVP",
            TransportProtocol::RtpSavpf => "RTP/SAVPF",
            TransportProtocol::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            TransportProtocol::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
            TransportProtocol::Accept => "accept",
        }
    }
    /// The profile for a case-insensitive wire value.
    pub fn parse(s: &str) -> Option<TransportProtocol> {
        Some(match s.to_ascii_uppercase().as_str() {
            "RTP/AVP" => TransportProtocol::RtpAvp,
            "RTP/AVPF" => TransportProtocol::RtpAvpf,
            "RTP/SAVP" => TransportProtocol::RtpSavp,
            "RTP/SAVPF" => TransportProtocol::RtpSavpf,
            "UDP/TLS/RTP/SAVP" => TransportProtocol::UdpTlsRtpSavp,
            "UDP/TLS/RTP/SAVPF" => TransportProtocol::UdpTlsRtpSavpf,
            "ACCEPT" => TransportProtocol::Accept,
            _ => return None,
        })
    }
}

impl AddressFamily {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressFamily::Ip4 => "IP4",
            AddressFamily::Ip6 => "IP6",
        }
    }
    /// The family of an address.
    pub fn of(addr: IpAddr) -> AddressFamily {
        match addr {
            IpAddr::V4(_) => AddressFamily::Ip4,
            IpAddr::V6(_) => AddressFamily::Ip6,
        }
    }
    fn parse(n: &str) -> Option<AddressFamily> {
        match n {
            "ip4" | "ipv4" => Some(AddressFamily::Ip4),
            "ip6" | "ipv6" => Some(AddressFamily::Ip6),
            _ => None,
        }
    }
}

/// The call identity found while normalising (it may come from `rtpp-flags` too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `command`, raw.
    pub command: Option<Bytes>,
    /// `call-id`.
    pub call_id: Option<String>,
    /// `from-tag`.
    pub from_tag: Option<String>,
    /// `to-tag`.
    pub to_tag: Option<String>,
    /// `via-branch`.
    pub via_branch: Option<String>,
    /// `sdp`, raw bytes.
    pub sdp: Option<Bytes>,
}

/// Where a key came from: the top-level dictionary or the `rtpp-flags` string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Dict,
    RtppFlags,
}

/// Transport words seen (`RTP`, `SRTP`, `AVP`, `AVPF`, `DTLS`), combined at the end.
#[derive(Default)]
struct TransportWords {
    seen: bool,
    secure: bool,
    feedback: bool,
    dtls: bool,
}

/// Folds a request dictionary (keys, `flags`, `replace`, lists, `rtpp-flags`) into the call
/// identity and one [`Flags`].
pub fn normalise(dict: &Dict) -> (Identity, Flags) {
    let mut n = Normaliser::default();
    let mut rtpp = Vec::new();
    for (key, value) in dict {
        if normalise_key(key) == "rtpp-flags" {
            rtpp.push(value);
        } else {
            n.key(key, value, Source::Dict);
        }
    }
    for value in rtpp {
        match value {
            Value::Bytes(b) => n.rtpp_flags(&String::from_utf8_lossy(b)),
            other => n
                .flags
                .unsupported
                .push(format!("rtpp-flags=<{}>", other.kind())),
        }
    }
    n.finish()
}

#[derive(Default)]
struct Normaliser {
    identity: Identity,
    flags: Flags,
    transport: TransportWords,
}

impl Normaliser {
    fn finish(mut self) -> (Identity, Flags) {
        let t = &self.transport;
        if t.seen {
            self.flags.transport_protocol = Some(match (t.dtls, t.secure || t.dtls, t.feedback) {
                (true, _, false) => TransportProtocol::UdpTlsRtpSavp,
                (true, _, true) => TransportProtocol::UdpTlsRtpSavpf,
                (false, true, false) => TransportProtocol::RtpSavp,
                (false, true, true) => TransportProtocol::RtpSavpf,
                (false, false, false) => TransportProtocol::RtpAvp,
                (false, false, true) => TransportProtocol::RtpAvpf,
            });
        }
        (self.identity, self.flags)
    }

    /// One key with its value, from the dictionary or from `rtpp-flags`.
    fn key(&mut self, raw_key: &str, value: &Value, source: Source) {
        let key = normalise_key(raw_key);
        let f = &mut self.flags;
        match key.as_str() {
            "command" => self.identity.command = value_bytes(value),
            "call-id" => self.identity.call_id = value_string(value),
            "from-tag" => self.identity.from_tag = value_string(value),
            "to-tag" => {
                self.identity.to_tag = value_string(value);
                if source == Source::RtppFlags {
                    f.to_tag = true;
                }
            }
            "via-branch" => self.identity.via_branch = value_string(value),
            "sdp" => self.identity.sdp = value_bytes(value),
            "flags" => {
                for word in items(value) {
                    self.word(&word);
                }
            }
            "replace" => {
                for item in items(value) {
                    replace_item(f, &item);
                }
            }
            "rtcp-mux" => {
                for item in items(value) {
                    rtcp_mux_item(f, &item);
                }
            }
            "sdes" => {
                for item in items(value) {
                    sdes_item(f, &item);
                }
            }
            "ice" => {
                for item in items(value) {
                    match Ice::parse(&normalise_key(&item)) {
                        Some(ice) => f.ice = Some(ice),
                        None => f.unsupported.push(format!("ICE={item}")),
                    }
                }
            }
            "dtls" => {
                for item in items(value) {
                    match Dtls::parse(&normalise_key(&item)) {
                        Some(dtls) => f.dtls = Some(dtls),
                        None => f.unsupported.push(format!("DTLS={item}")),
                    }
                }
            }
            "transport-protocol" => match value_string(value) {
                Some(s) => match TransportProtocol::parse(s.trim()) {
                    Some(tp) => f.transport_protocol = Some(tp),
                    None => f.unsupported.push(format!("transport-protocol={s}")),
                },
                None => unsupported_kind(f, raw_key, value),
            },
            "direction" => match value {
                Value::List(_) => f.direction.extend(items(value)),
                _ => f.direction.extend(value_string(value)),
            },
            "address-family" => match value_string(value) {
                Some(s) => match AddressFamily::parse(&normalise_key(s.trim())) {
                    Some(af) => f.address_family = Some(af),
                    None => f.unsupported.push(format!("address-family={s}")),
                },
                None => unsupported_kind(f, raw_key, value),
            },
            "received-from" => {
                // ["IP4", "192.0.2.1"] from the modules, or "192.0.2.1" from rtpp-flags.
                let address = items(value).iter().find_map(|i| i.parse::<IpAddr>().ok());
                match address {
                    Some(a) => f.received_from = Some(a),
                    None => f
                        .unsupported
                        .push(format!("received-from={}", items(value).join(" "))),
                }
            }
            "media-address" => match value_string(value) {
                Some(s) => match s.trim().parse::<IpAddr>() {
                    Ok(a) => f.media_address = Some(a),
                    Err(_) => f.unsupported.push(format!("media-address={s}")),
                },
                None => unsupported_kind(f, raw_key, value),
            },
            "label" => match value_string(value) {
                Some(s) => f.label = Some(s),
                None => unsupported_kind(f, raw_key, value),
            },
            "delete-delay" => match value.as_int().and_then(|i| u64::try_from(i).ok()) {
                Some(d) => f.delete_delay = Some(d),
                None => unsupported_value(f, raw_key, value),
            },
            "record-call" => match value_string(value).map(|s| normalise_key(s.trim())) {
                Some(s) if matches!(s.as_str(), "yes" | "on" | "true" | "1") => {
                    f.record_call = Some(true)
                }
                Some(s) if matches!(s.as_str(), "no" | "off" | "false" | "0") => {
                    f.record_call = Some(false)
                }
                _ => unsupported_value(f, raw_key, value),
            },
            "supports" => {
                for item in items(value) {
                    if normalise_key(&item) == "load-limit" {
                        f.supports_load_limit = true;
                    } else {
                        f.unsupported.push(format!("supports={item}"));
                    }
                }
            }
            "tos" => match value.as_int().and_then(|i| u8::try_from(i).ok()) {
                Some(t) => f.tos = Some(t),
                None => unsupported_value(f, raw_key, value),
            },
            "limit" => match value.as_int().and_then(|i| u64::try_from(i).ok()) {
                Some(l) => f.limit = Some(l),
                None => unsupported_value(f, raw_key, value),
            },
            "codec" => match value {
                Value::Dict(actions) => {
                    for (action, list) in actions {
                        for codec in items(list) {
                            codec_item(f, action, codec);
                        }
                    }
                }
                _ => unsupported_kind(f, raw_key, value),
            },
            _ => f.other_keys.push((raw_key.to_owned(), value.clone())),
        }
    }

    /// One flag word (from `flags` or a bare `rtpp-flags` token).
    fn word(&mut self, raw: &str) {
        let raw = raw.trim();
        if raw.is_empty() {
            return;
        }
        if let Some((k, v)) = raw.split_once('=') {
            self.key(k, &Value::text(v), Source::Dict);
            return;
        }
        let n = normalise_key(raw);
        let f = &mut self.flags;
        if let Some((_, field)) = BOOLEAN_FLAGS.iter().find(|(w, _)| normalise_key(w) == n) {
            *field(f) = true;
            return;
        }
        if n == "record-call" {
            f.record_call = Some(true);
            return;
        }
        if let Some(tp) = TransportProtocol::parse(raw) {
            f.transport_protocol = Some(tp);
            return;
        }
        let t = &mut self.transport;
        match n.as_str() {
            "rtp" | "avp" => {
                t.seen = true;
                return;
            }
            "srtp" => {
                t.seen = true;
                t.secure = true;
                return;
            }
            "avpf" => {
                t.seen = true;
                t.feedback = true;
                return;
            }
            "dtls" => {
                t.seen = true;
                t.dtls = true;
                return;
            }
            _ => {}
        }
        // Prefixed words: the suffix keeps its spelling (suite and codec names).
        let suffix = |prefix: &str| raw.get(prefix.len()..).filter(|_| n.starts_with(prefix));
        if let Some(item) = suffix("replace-") {
            replace_item(f, item);
        } else if let Some(item) = suffix("rtcp-mux-") {
            rtcp_mux_item(f, item);
        } else if let Some(item) = suffix("sdes-") {
            sdes_item(f, item);
        } else if let Some(rest) = suffix("codec-") {
            match rest.split_once('-') {
                Some((action, codec)) => codec_item(f, action, codec.to_owned()),
                None => f.other_flags.push(raw.to_owned()),
            }
        } else {
            f.other_flags.push(raw.to_owned());
        }
    }

    /// The daemon-parsed `rtpp-flags` string.
    fn rtpp_flags(&mut self, text: &str) {
        let mut parser = RtppParser {
            s: text.as_bytes(),
            pos: 0,
            too_deep: false,
        };
        let tokens = parser.items(0, false);
        if parser.too_deep {
            self.flags
                .unsupported
                .push("rtpp-flags nested too deeply".to_owned());
        }
        for token in tokens {
            match token {
                Token::Word(w) => self.word(&w),
                Token::Pair(k, v) => self.key(&k, &v, Source::RtppFlags),
            }
        }
    }
}

fn replace_item(f: &mut Flags, item: &str) {
    let n = normalise_key(item.trim());
    let n = if n == "force-increment-sdp-version" {
        "force-increment-sdp-ver".to_owned()
    } else {
        n
    };
    match REPLACE_ITEMS.iter().find(|(w, _)| normalise_key(w) == n) {
        Some((_, field)) => *field(&mut f.replace) = true,
        None => f.unsupported.push(format!("replace={item}")),
    }
}

fn rtcp_mux_item(f: &mut Flags, item: &str) {
    let n = normalise_key(item.trim());
    match RTCP_MUX_ITEMS.iter().find(|(w, _)| *w == n) {
        Some((_, field)) => *field(&mut f.rtcp_mux) = true,
        None => f.unsupported.push(format!("rtcp-mux={item}")),
    }
}

fn sdes_item(f: &mut Flags, item: &str) {
    let item = item.trim();
    let n = normalise_key(item);
    if let Some(suite) = item
        .get(3..)
        .filter(|_| n.starts_with("no-") && n.len() > 3)
    {
        f.sdes.no.push(suite.to_owned());
        return;
    }
    if let Some(suite) = item
        .get(5..)
        .filter(|_| n.starts_with("only-") && n.len() > 5)
    {
        f.sdes.only.push(suite.to_owned());
        return;
    }
    let n = match n.as_str() {
        "no" | "disable" | "disabled" => "off".to_owned(),
        "priority" => "prefer".to_owned(),
        _ => n,
    };
    match SDES_ITEMS.iter().find(|(w, _)| normalise_key(w) == n) {
        Some((_, field)) => *field(&mut f.sdes) = true,
        None => f.unsupported.push(format!("SDES={item}")),
    }
}

fn codec_item(f: &mut Flags, action: &str, codec: String) {
    let list = match normalise_key(action).as_str() {
        "strip" => &mut f.codec.strip,
        "offer" => &mut f.codec.offer,
        "except" => &mut f.codec.except,
        "mask" => &mut f.codec.mask,
        "transcode" => &mut f.codec.transcode,
        _ => {
            f.unsupported.push(format!("codec-{action}={codec}"));
            return;
        }
    };
    list.push(codec);
}

fn unsupported_kind(f: &mut Flags, key: &str, value: &Value) {
    f.unsupported.push(format!("{key}=<{}>", value.kind()));
}

fn unsupported_value(f: &mut Flags, key: &str, value: &Value) {
    match value.as_text() {
        Some(t) => f.unsupported.push(format!("{key}={t}")),
        None => unsupported_kind(f, key, value),
    }
}

/// A string value's bytes (integers as decimal text).
fn value_bytes(value: &Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b.clone()),
        Value::Int(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

/// A string value as text (identities are ASCII in SIP; other bytes decode lossily).
fn value_string(value: &Value) -> Option<String> {
    match value {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The items of a list-valued key: a list's string items, or a string split on spaces and
/// commas.
fn items(value: &Value) -> Vec<String> {
    match value {
        Value::List(list) => list.iter().filter_map(value_string).collect(),
        Value::Bytes(_) | Value::Int(_) => value_string(value)
            .map(|s| {
                s.split(|c: char| c.is_ascii_whitespace() || c == ',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        Value::Dict(_) => Vec::new(),
    }
}

/// One top-level item of an `rtpp-flags` string.
enum Token {
    Word(String),
    Pair(String, Value),
}

/// Parser for rtpengine's `rtpp-flags` syntax: space-separated `word`, `key=value` and
/// `key=[item item ...]`, where bracketed items may themselves be `k=[...]` (then the
/// brackets form a dictionary).
struct RtppParser<'a> {
    s: &'a [u8],
    pos: usize,
    too_deep: bool,
}

impl RtppParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn text(&self, from: usize) -> String {
        String::from_utf8_lossy(self.s.get(from..self.pos).unwrap_or_default()).into_owned()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Reads up to whitespace or a bracket, stopping also at `=` when `stop_at_eq`.
    fn word(&mut self, stop_at_eq: bool) -> String {
        let from = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() || c == b'[' || c == b']' || (stop_at_eq && c == b'=') {
                break;
            }
            self.pos += 1;
        }
        self.text(from)
    }

    fn items(&mut self, depth: usize, in_brackets: bool) -> Vec<Token> {
        let mut out = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None => break,
                Some(b']') => {
                    self.pos += 1;
                    if in_brackets {
                        break;
                    }
                }
                Some(b'[') => {
                    // A bracket without a key: parse it to stay in step, keep its words.
                    self.pos += 1;
                    for t in self.nested(depth) {
                        if let Token::Word(w) = t {
                            out.push(Token::Word(w));
                        }
                    }
                }
                Some(_) => {
                    let key = self.word(true);
                    if self.peek() == Some(b'=') {
                        self.pos += 1;
                        let value = if self.peek() == Some(b'[') {
                            self.pos += 1;
                            tokens_to_value(self.nested(depth))
                        } else {
                            Value::text(self.word(false))
                        };
                        out.push(Token::Pair(key, value));
                    } else {
                        out.push(Token::Word(key));
                    }
                }
            }
        }
        out
    }

    fn nested(&mut self, depth: usize) -> Vec<Token> {
        if depth + 1 >= MAX_RTPP_DEPTH {
            self.too_deep = true;
            self.pos = self.s.len();
            return Vec::new();
        }
        self.items(depth + 1, true)
    }
}

fn tokens_to_value(tokens: Vec<Token>) -> Value {
    if tokens.iter().any(|t| matches!(t, Token::Pair(..))) {
        Value::Dict(
            tokens
                .into_iter()
                .map(|t| match t {
                    Token::Pair(k, v) => (k, v),
                    Token::Word(w) => (w, Value::text("")),
                })
                .collect(),
        )
    } else {
        Value::List(
            tokens
                .into_iter()
                .filter_map(|t| match t {
                    Token::Word(w) => Some(Value::text(w)),
                    Token::Pair(..) => None,
                })
                .collect(),
        )
    }
}

impl Flags {
    /// Everything a server should warn about: unmodelled flag words, unmodelled keys (except
    /// informational ones) and values we could not understand.
    pub fn unrecognised(&self) -> Vec<String> {
        let mut out = self.other_flags.clone();
        out.extend(
            self.other_keys
                .iter()
                .filter(|(k, _)| !INFORMATIONAL_KEYS.contains(&normalise_key(k).as_str()))
                .map(|(k, _)| k.clone()),
        );
        out.extend(self.unsupported.iter().cloned());
        out
    }

    /// The `warning` text for a reply, when something was ignored.
    pub fn warning(&self) -> Option<String> {
        let unrecognised = self.unrecognised();
        if unrecognised.is_empty() {
            None
        } else {
            Some(format!(
                "Ignored unrecognised flags or keys: {}",
                unrecognised.join(", ")
            ))
        }
    }

    /// The canonical wire form of these options, as dictionary entries: booleans in `flags`,
    /// list options in their lists, the rest as keys. [`Flags::unsupported`] is not encoded.
    /// Decoding the result with [`normalise`] gives back these flags.
    pub fn to_entries(&self) -> Dict {
        let mut out: Dict = Vec::new();
        let mut words: Vec<Value> = Vec::new();
        let mut scratch = self.clone();
        for (word, field) in BOOLEAN_FLAGS {
            if *field(&mut scratch) {
                words.push(Value::text(*word));
            }
        }
        words.extend(self.other_flags.iter().map(|w| Value::text(w.as_str())));
        push_list(&mut out, "flags", words);

        let mut replace = self.replace;
        let replace_items = REPLACE_ITEMS
            .iter()
            .filter(|(_, field)| *field(&mut replace))
            .map(|(w, _)| Value::text(*w))
            .collect();
        push_list(&mut out, "replace", replace_items);

        let mut mux = self.rtcp_mux;
        let mux_items = RTCP_MUX_ITEMS
            .iter()
            .filter(|(_, field)| *field(&mut mux))
            .map(|(w, _)| Value::text(*w))
            .collect();
        push_list(&mut out, "rtcp-mux", mux_items);

        let mut sdes = self.sdes.clone();
        let mut sdes_items: Vec<Value> = SDES_ITEMS
            .iter()
            .filter(|(_, field)| *field(&mut sdes))
            .map(|(w, _)| Value::text(*w))
            .collect();
        sdes_items.extend(self.sdes.no.iter().map(|s| Value::text(format!("no-{s}"))));
        sdes_items.extend(
            self.sdes
                .only
                .iter()
                .map(|s| Value::text(format!("only-{s}"))),
        );
        push_list(&mut out, "SDES", sdes_items);

        if let Some(ice) = self.ice {
            out.push(("ICE".into(), Value::text(ice.as_str())));
        }
        if let Some(dtls) = self.dtls {
            out.push(("DTLS".into(), Value::text(dtls.as_str())));
        }
        if let Some(tp) = self.transport_protocol {
            out.push(("transport-protocol".into(), Value::text(tp.as_str())));
        }
        push_list(
            &mut out,
            "direction",
            self.direction
                .iter()
                .map(|d| Value::text(d.as_str()))
                .collect(),
        );
        if let Some(af) = self.address_family {
            out.push(("address-family".into(), Value::text(af.as_str())));
        }
        if let Some(addr) = self.received_from {
            out.push((
                "received-from".into(),
                Value::List(vec![
                    Value::text(AddressFamily::of(addr).as_str()),
                    Value::text(addr.to_string()),
                ]),
            ));
        }
        if let Some(addr) = self.media_address {
            out.push(("media-address".into(), Value::text(addr.to_string())));
        }
        if let Some(label) = &self.label {
            out.push(("label".into(), Value::text(label.as_str())));
        }
        if let Some(d) = self.delete_delay {
            out.push(("delete-delay".into(), int_value(d)));
        }
        if let Some(r) = self.record_call {
            out.push((
                "record-call".into(),
                Value::text(if r { "yes" } else { "no" }),
            ));
        }
        if self.supports_load_limit {
            out.push((
                "supports".into(),
                Value::List(vec![Value::text("load limit")]),
            ));
        }
        if let Some(t) = self.tos {
            out.push(("TOS".into(), Value::Int(i64::from(t))));
        }
        if let Some(l) = self.limit {
            out.push(("limit".into(), int_value(l)));
        }
        let codec: Dict = [
            ("strip", &self.codec.strip),
            ("offer", &self.codec.offer),
            ("except", &self.codec.except),
            ("mask", &self.codec.mask),
            ("transcode", &self.codec.transcode),
        ]
        .into_iter()
        .filter(|(_, list)| !list.is_empty())
        .map(|(action, list)| {
            (
                action.to_owned(),
                Value::List(list.iter().map(|c| Value::text(c.as_str())).collect()),
            )
        })
        .collect();
        if !codec.is_empty() {
            out.push(("codec".into(), Value::Dict(codec)));
        }
        out.extend(self.other_keys.iter().cloned());
        out
    }
}

fn push_list(out: &mut Dict, key: &str, items: Vec<Value>) {
    if !items.is_empty() {
        out.push((key.to_owned(), Value::List(items)));
    }
}

/// An unsigned count as a bencode integer, saturating at `i64::MAX` (bencode integers in
/// practice are 64-bit signed).
pub(crate) fn int_value(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}
