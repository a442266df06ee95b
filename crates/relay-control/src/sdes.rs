//! SDES ([RFC 4568](https://www.rfc-editor.org/rfc/rfc4568)): the `a=crypto` lines the relay
//! reads from a party and writes to it, and each stream's transport per side.
//!
//! The relay **terminates** SDES on every leg it encrypts, as rtpengine does: each party gets
//! the relay's own keys (random, one per suite, drawn once per party and stream and kept for the
//! dialog's life, so a re-offer that changes nothing writes the same SDP), and the relay learns
//! each party's key from the line it accepted. The other side of the relay may be plain RTP or
//! SDES with other keys: packets are decrypted on one leg and encrypted on the other
//! (`anchorage_relay::MediaPair::relay`).
//!
//! ```text
//!  A's SDP: a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<A's key>   → decrypts A's packets
//!  to A:    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<relay key> → encrypts A's packets
//! ```
//!
//! What is refused, with a reason naming the media section and the line: a line with an MKI
//! (`|1:4`: `rtc-srtp` has no MKI), a suite the relay does not speak, key material of the
//! wrong length or not base64, the session parameters `UNENCRYPTED_SRTP`,
//! `UNENCRYPTED_SRTCP`, `UNAUTHENTICATED_SRTP`, `FEC_ORDER`, `FEC_KEY` and a `KDR` other than 0.
//! An offer with several lines is answered with the first usable one; the request fails only
//! when none is usable. A key lifetime (`|2^20`) is honoured: see `anchorage_relay::srtp`.

use anchorage_ng::flags::Sdes;
use anchorage_ng::TransportProtocol;
use anchorage_relay::{MasterKey, SrtpKey, SrtpKeys, SrtpSuite};
use anchorage_sdp::{Crypto, MediaSection, Proto};
use rand::rngs::StdRng;

/// How the relay carries a stream towards one party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain RTP; `feedback` writes `RTP/AVPF` instead of `RTP/AVP`.
    Rtp {
        /// AVPF (RFC 4585).
        feedback: bool,
    },
    /// SRTP keyed with SDES by the relay: `RTP/SAVP` or `RTP/SAVPF`.
    Sdes {
        /// SAVPF (RFC 5124).
        feedback: bool,
    },
    /// DTLS-SRTP terminated by the relay (`crate::dtls`): `UDP/TLS/RTP/SAVP` or
    /// `UDP/TLS/RTP/SAVPF`.
    Dtls {
        /// SAVPF.
        feedback: bool,
    },
    /// Passed through as it is: DTLS-SRTP on both sides, SRTP without `a=crypto`, non-RTP
    /// media.
    Opaque,
}

impl Default for Transport {
    fn default() -> Self {
        Transport::Rtp { feedback: false }
    }
}

impl Transport {
    /// How a party's own `m=` line carries its media.
    pub fn of(section: &MediaSection) -> Transport {
        let has_crypto = section.section().has_attribute("crypto");
        match section.media().transport() {
            Proto::RtpAvp => Transport::Rtp { feedback: false },
            Proto::RtpAvpf => Transport::Rtp { feedback: true },
            Proto::RtpSavp if has_crypto => Transport::Sdes { feedback: false },
            Proto::RtpSavpf if has_crypto => Transport::Sdes { feedback: true },
            Proto::UdpTlsRtpSavp => Transport::Dtls { feedback: false },
            Proto::UdpTlsRtpSavpf => Transport::Dtls { feedback: true },
            _ => Transport::Opaque,
        }
    }

    /// The transport `transport-protocol` asks for; `Ok(None)` for `accept`. `Err` names a
    /// profile the relay cannot produce: DTLS-SRTP when `dtls` is false (no certificate).
    pub fn requested(
        protocol: TransportProtocol,
        dtls: bool,
    ) -> Result<Option<Transport>, &'static str> {
        Ok(Some(match protocol {
            TransportProtocol::RtpAvp => Transport::Rtp { feedback: false },
            TransportProtocol::RtpAvpf => Transport::Rtp { feedback: true },
            TransportProtocol::RtpSavp => Transport::Sdes { feedback: false },
            TransportProtocol::RtpSavpf => Transport::Sdes { feedback: true },
            TransportProtocol::UdpTlsRtpSavp if dtls => Transport::Dtls { feedback: false },
            TransportProtocol::UdpTlsRtpSavpf if dtls => Transport::Dtls { feedback: true },
            TransportProtocol::UdpTlsRtpSavp => return Err("UDP/TLS/RTP/SAVP"),
            TransportProtocol::UdpTlsRtpSavpf => return Err("UDP/TLS/RTP/SAVPF"),
            TransportProtocol::Accept => return Ok(None),
        }))
    }

    /// The `m=` profile written for this transport (`None` for [`Transport::Opaque`]: the
    /// sender's stays).
    pub fn profile(self) -> Option<&'static str> {
        match self {
            Transport::Rtp { feedback: false } => Some("RTP/AVP"),
            Transport::Rtp { feedback: true } => Some("RTP/AVPF"),
            Transport::Sdes { feedback: false } => Some("RTP/SAVP"),
            Transport::Sdes { feedback: true } => Some("RTP/SAVPF"),
            Transport::Dtls { feedback: false } => Some("UDP/TLS/RTP/SAVP"),
            Transport::Dtls { feedback: true } => Some("UDP/TLS/RTP/SAVPF"),
            Transport::Opaque => None,
        }
    }

    /// Whether the relay encrypts this leg with SDES keys.
    pub fn is_sdes(self) -> bool {
        matches!(self, Transport::Sdes { .. })
    }

    /// Whether the relay terminates DTLS-SRTP on this leg.
    pub fn is_dtls(self) -> bool {
        matches!(self, Transport::Dtls { .. })
    }

    /// The same kind of transport with `feedback` (AVPF, SAVPF) as given.
    pub fn with_feedback(self, feedback: bool) -> Transport {
        match self {
            Transport::Rtp { .. } => Transport::Rtp { feedback },
            Transport::Sdes { .. } => Transport::Sdes { feedback },
            Transport::Dtls { .. } => Transport::Dtls { feedback },
            Transport::Opaque => Transport::Opaque,
        }
    }
}

/// One usable `a=crypto` line of a party.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoLine {
    /// The line's tag.
    pub tag: u32,
    /// Suite, key and lifetime.
    pub key: SrtpKey,
}

/// The `a=crypto` lines of a media section: each usable one, or why it is not.
pub fn read_lines(section: &MediaSection) -> Vec<Result<CryptoLine, String>> {
    section
        .section()
        .cryptos()
        .map(|crypto| match crypto {
            Ok(crypto) => line_of(&crypto),
            Err(e) => Err(format!("a=crypto is malformed ({e})")),
        })
        .collect()
}

/// One parsed `a=crypto` line, checked for what the relay can honour.
fn line_of(crypto: &Crypto<'_>) -> Result<CryptoLine, String> {
    let suite = SrtpSuite::from_name(crypto.suite).ok_or_else(|| {
        format!(
            "crypto suite {} is not supported (this relay speaks {})",
            crypto.suite,
            SrtpSuite::PREFERENCE.map(SrtpSuite::name).join(", ")
        )
    })?;
    for param in crypto.session_param_list() {
        let upper = param.to_ascii_uppercase();
        let refused = match upper.split_once('=') {
            Some(("KDR", rate)) => rate != "0",
            Some(("WSH", _)) => false,
            Some((_, _)) => true,
            None => true,
        };
        if refused {
            return Err(format!(
                "{suite} with session parameter {param} is not supported by this relay"
            ));
        }
    }
    let mut keys = crypto.keys();
    let key = keys
        .next()
        .ok_or_else(|| format!("{suite} has no key"))?
        .map_err(|e| format!("{suite}: {e}"))?;
    if keys.next().is_some() {
        return Err(format!(
            "{suite} with several keys (MKI) is not supported by this relay"
        ));
    }
    if !key.method.eq_ignore_ascii_case("inline") {
        return Err(format!(
            "{suite} key method {} is not supported (only inline)",
            key.method
        ));
    }
    if let Some(mki) = key.mki {
        return Err(format!(
            "{suite} with an MKI ({mki}) is not supported by this relay"
        ));
    }
    let lifetime = key
        .lifetime
        .map(parse_lifetime)
        .transpose()
        .map_err(|e| format!("{suite}: {e}"))?;
    let bytes = base64_decode(key.key_salt)
        .ok_or_else(|| format!("{suite}: the inline key is not base64"))?;
    let master = MasterKey::new(suite, &bytes).map_err(|e| e.to_string())?;
    Ok(CryptoLine {
        tag: crypto.tag,
        key: SrtpKey {
            suite,
            master,
            lifetime,
        },
    })
}

/// The most packets a key may protect under RFC 3711 (2^48 SRTP packets).
const MAX_LIFETIME: u64 = 1 << 48;

/// A key lifetime: `2^N` or a decimal number of packets (RFC 4568 §6.1).
fn parse_lifetime(text: &str) -> Result<u64, String> {
    let value = match text.split_once('^') {
        Some(("2", exponent)) => exponent
            .parse::<u32>()
            .ok()
            .filter(|e| *e <= 48)
            .map(|e| 1u64 << e),
        Some(_) => None,
        None => text.parse::<u64>().ok(),
    };
    match value {
        Some(v) if v > 0 => Ok(v.min(MAX_LIFETIME)),
        _ => Err(format!("key lifetime {text} is not understood")),
    }
}

/// A party's SDES state on one stream.
#[derive(Debug, Clone, Default)]
pub struct SdesParty {
    /// The relay's key per suite for this party, drawn when first written.
    ours: Vec<(SrtpSuite, MasterKey)>,
    /// The lines last offered to this party: tag and suite.
    offered: Vec<(u32, SrtpSuite)>,
    /// The party's accepted line (its tag, its key).
    theirs: Option<CryptoLine>,
    /// The suite the relay encrypts with towards the party.
    sending: Option<SrtpSuite>,
    /// The relay's keys carry a lifetime (`SDES-lifetime`: `|2^31`).
    lifetime: bool,
}

/// The lifetime written with `SDES-lifetime`, as rtpengine writes it.
const OUR_LIFETIME_EXPONENT: u32 = 31;

impl SdesParty {
    /// The keys the data plane uses for this party.
    pub fn keys(&self) -> SrtpKeys {
        SrtpKeys {
            inbound: self.theirs.map(|line| line.key),
            outbound: self.sending.and_then(|suite| {
                self.our_key(suite).map(|master| SrtpKey {
                    suite,
                    master,
                    lifetime: self.lifetime.then_some(1u64 << OUR_LIFETIME_EXPONENT),
                })
            }),
        }
    }

    /// The party's accepted suite, if any.
    pub fn suite(&self) -> Option<SrtpSuite> {
        self.theirs.map(|line| line.key.suite).or(self.sending)
    }

    fn our_key(&self, suite: SrtpSuite) -> Option<MasterKey> {
        self.ours
            .iter()
            .find(|(s, _)| *s == suite)
            .map(|(_, key)| *key)
    }

    fn our_key_or_new(&mut self, suite: SrtpSuite, rng: &mut StdRng) -> MasterKey {
        if let Some(key) = self.our_key(suite) {
            return key;
        }
        let key = MasterKey::random(suite, rng);
        self.ours.push((suite, key));
        key
    }

    /// Takes the party's key from its SDP (an offer, or an answer to lines the relay wrote):
    /// the line whose tag and suite the relay offered, else the first usable line. `Err` holds
    /// why no line is usable.
    pub fn accept(
        &mut self,
        lines: &[Result<CryptoLine, String>],
        rng: &mut StdRng,
    ) -> Result<(), String> {
        let usable = || lines.iter().filter_map(|l| l.as_ref().ok());
        let answering = usable().find(|line| self.offered.contains(&(line.tag, line.key.suite)));
        let Some(line) = answering.or_else(|| usable().next()).copied() else {
            return Err(match lines.iter().find_map(|l| l.as_ref().err()) {
                Some(reason) => reason.clone(),
                None => "it has no a=crypto line".to_owned(),
            });
        };
        self.our_key_or_new(line.key.suite, rng);
        self.theirs = Some(line);
        self.sending = Some(line.key.suite);
        Ok(())
    }

    /// The party no longer uses SDES on this stream.
    pub fn clear(&mut self) {
        self.theirs = None;
        self.sending = None;
        self.offered.clear();
    }

    /// Chooses the lines to offer to this party: first the suites the other party offered
    /// (`peer`: their tags and order), then, unless `SDES-nonew`, the other suites the relay
    /// speaks in rtpengine's order with the next tags; `SDES-no-…`/`only-…` filter them.
    /// Draws the keys it lacks; until the party answers, the relay encrypts with the first.
    pub fn offer(
        &mut self,
        peer: &[CryptoLine],
        sdes: &Sdes,
        rng: &mut StdRng,
    ) -> Result<(), String> {
        let allowed = |suite: SrtpSuite| {
            let name = suite.name();
            !sdes.no.iter().any(|n| n.eq_ignore_ascii_case(name))
                && (sdes.only.is_empty() || sdes.only.iter().any(|n| n.eq_ignore_ascii_case(name)))
        };
        let mut offered: Vec<(u32, SrtpSuite)> = Vec::new();
        for line in peer {
            let suite = line.key.suite;
            if allowed(suite) && !offered.iter().any(|(_, s)| *s == suite) {
                offered.push((line.tag, suite));
            }
        }
        if !sdes.nonew || peer.is_empty() {
            let mut tag = offered.iter().map(|(t, _)| *t).max().unwrap_or(0);
            for suite in SrtpSuite::PREFERENCE {
                if allowed(suite) && !offered.iter().any(|(_, s)| *s == suite) {
                    tag += 1;
                    offered.push((tag, suite));
                }
            }
        }
        if offered.is_empty() {
            return Err("the SDES options leave no crypto suite to offer".to_owned());
        }
        for (_, suite) in &offered {
            self.our_key_or_new(*suite, rng);
        }
        self.lifetime = sdes.lifetime;
        let still_offered = self
            .sending
            .is_some_and(|s| offered.iter().any(|(_, o)| *o == s));
        if !still_offered {
            self.sending = offered.first().map(|(_, s)| *s);
        }
        self.offered = offered;
        Ok(())
    }

    /// The `a=crypto` values to write to this party: the one line answering its own
    /// (`answer` and a line accepted), else the lines offered.
    pub fn lines(&self, answer: bool, pad: bool) -> Vec<String> {
        let lifetime = if self.lifetime {
            format!("|2^{OUR_LIFETIME_EXPONENT}")
        } else {
            String::new()
        };
        let line = |tag: u32, suite: SrtpSuite| {
            self.our_key(suite).map(|key| {
                format!(
                    "{tag} {suite} inline:{}{lifetime}",
                    base64_encode(key.as_bytes(), pad)
                )
            })
        };
        match (answer, self.theirs) {
            (true, Some(theirs)) => line(theirs.tag, theirs.key.suite).into_iter().collect(),
            _ => self
                .offered
                .iter()
                .filter_map(|(tag, suite)| line(*tag, *suite))
                .collect(),
        }
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 §4), with `=` padding only when `pad`.
pub fn base64_encode(bytes: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                let index = ((n >> (18 - 6 * i)) & 0x3f) as usize;
                out.push(char::from(ALPHABET[index]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded or not; `None` if it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character cannot encode a byte; leftover bits must be zero.
    if bits >= 6 || acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anchorage_sdp::Session;
    use rand::SeedableRng;

    /// One `a=crypto` value, read as the relay reads it from an SDP.
    fn parse_line(value: &str) -> Result<CryptoLine, String> {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/SAVP 0\r\na=crypto:{value}\r\n"
        );
        let session = Session::parse_slice(sdp.as_bytes()).unwrap();
        read_lines(&session.media()[0]).remove(0)
    }

    #[test]
    fn base64_round_trips_with_and_without_padding() {
        for len in 0..50 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            for pad in [false, true] {
                let text = base64_encode(&bytes, pad);
                assert_eq!(base64_decode(&text), Some(bytes.clone()), "{text}");
            }
        }
        // RFC 4648 §10 vectors.
        assert_eq!(base64_encode(b"foob", true), "Zm9vYg==");
        assert_eq!(base64_encode(b"foob", false), "Zm9vYg");
        assert_eq!(base64_encode(b"fooba", true), "Zm9vYmE=");
        assert_eq!(base64_decode("Zm9vYmFy"), Some(b"foobar".to_vec()));
        assert_eq!(base64_decode("Zm9v!mFy"), None);
        assert_eq!(base64_decode("Z"), None);
    }

    #[test]
    fn key_lengths_give_rtpengines_inline_lengths() {
        // rtpengine's test placeholders: CRYPTO128 40, CRYPTO128S 38, CRYPTO256 62, CRYPTO256S 59.
        let len = |suite: SrtpSuite| base64_encode(&vec![0; suite.master_len()], false).len();
        assert_eq!(len(SrtpSuite::AesCm128HmacSha1_80), 40);
        assert_eq!(len(SrtpSuite::AeadAes128Gcm), 38);
        assert_eq!(len(SrtpSuite::Aes256CmHmacSha1_32), 62);
        assert_eq!(len(SrtpSuite::AeadAes256Gcm), 59);
    }

    #[test]
    fn lines_are_parsed_or_refused_with_a_reason() {
        let key = base64_encode(&[7u8; 30], false);
        let line = parse_line(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}")).unwrap();
        assert_eq!(line.tag, 1);
        assert_eq!(line.key.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(line.key.master.as_bytes(), &[7u8; 30]);
        assert_eq!(line.key.lifetime, None);
        let lifetime = parse_line(&format!(
            "2 AES_CM_128_HMAC_SHA1_32 inline:{key}|2^20 WSH=64"
        ))
        .unwrap();
        assert_eq!(lifetime.key.lifetime, Some(1 << 20));
        let refused = |value: String, needle: &str| {
            let reason = parse_line(&value).unwrap_err();
            assert!(reason.contains(needle), "{value}: {reason}");
        };
        refused(
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4"),
            "MKI",
        );
        refused(
            format!("1 F8_128_HMAC_SHA1_80 inline:{key}"),
            "F8_128_HMAC_SHA1_80 is not supported",
        );
        refused(
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNENCRYPTED_SRTCP"),
            "UNENCRYPTED_SRTCP",
        );
        refused(
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} KDR=2"),
            "KDR=2",
        );
        refused(
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{key}"),
            "needs 46 bytes",
        );
        refused(
            "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64".to_owned(),
            "base64",
        );
        refused(
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^60"),
            "lifetime",
        );
    }

    #[test]
    fn a_party_is_answered_with_its_first_usable_line_and_offered_every_suite() {
        let mut rng = StdRng::seed_from_u64(1);
        let key = base64_encode(&[9u8; 30], false);
        let lines = vec![
            parse_line(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4")),
            parse_line(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{key}")),
        ];
        let mut party = SdesParty::default();
        party.accept(&lines, &mut rng).unwrap();
        let keys = party.keys();
        assert_eq!(
            keys.inbound.map(|k| k.suite),
            Some(SrtpSuite::AesCm128HmacSha1_32)
        );
        let ours = keys.outbound.unwrap();
        assert_eq!(ours.suite, SrtpSuite::AesCm128HmacSha1_32);
        assert_ne!(ours.master, keys.inbound.unwrap().master);
        let answer = party.lines(true, false);
        assert_eq!(answer.len(), 1);
        assert!(answer[0].starts_with("2 AES_CM_128_HMAC_SHA1_32 inline:"));
        // Only unusable lines: the first reason.
        let mut other = SdesParty::default();
        let reason = other.accept(&lines[..1], &mut rng).unwrap_err();
        assert!(reason.contains("MKI"), "{reason}");

        let mut offered = SdesParty::default();
        offered.offer(&[], &Sdes::default(), &mut rng).unwrap();
        let lines = offered.lines(false, false);
        let suites: Vec<&str> = lines.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
        assert_eq!(suites, SrtpSuite::PREFERENCE.map(SrtpSuite::name).to_vec());
        assert!(lines[0].starts_with("1 AEAD_AES_256_GCM inline:"));
        assert_eq!(
            offered.keys().outbound.map(|k| k.suite),
            Some(SrtpSuite::AeadAes256Gcm)
        );
        // The same keys on a second offer.
        let again = offered.clone();
        offered.offer(&[], &Sdes::default(), &mut rng).unwrap();
        assert_eq!(offered.lines(false, false), again.lines(false, false));
        // The party answers tag 6: that suite, and its key for the inbound direction.
        let reply = parse_line(&format!("6 AES_CM_128_HMAC_SHA1_32 inline:{key}")).unwrap();
        offered.accept(&[Ok(reply)], &mut rng).unwrap();
        assert_eq!(offered.lines(true, false).len(), 1);
        assert_eq!(
            offered.keys().outbound.map(|k| k.suite),
            Some(SrtpSuite::AesCm128HmacSha1_32)
        );
    }

    #[test]
    fn sdes_options_filter_and_order_the_offer() {
        let mut rng = StdRng::seed_from_u64(2);
        let key = base64_encode(&[1u8; 30], false);
        let peer = [
            parse_line(&format!("5 AES_CM_128_HMAC_SHA1_32 inline:{key}")).unwrap(),
            parse_line(&format!("7 AES_CM_128_HMAC_SHA1_80 inline:{key}")).unwrap(),
        ];
        let suites = |party: &SdesParty| -> Vec<String> {
            party
                .lines(false, false)
                .iter()
                .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
                .collect()
        };
        let mut party = SdesParty::default();
        party.offer(&peer, &Sdes::default(), &mut rng).unwrap();
        assert_eq!(
            suites(&party),
            [
                "5 AES_CM_128_HMAC_SHA1_32",
                "7 AES_CM_128_HMAC_SHA1_80",
                "8 AEAD_AES_256_GCM",
                "9 AEAD_AES_128_GCM",
                "10 AES_256_CM_HMAC_SHA1_80",
                "11 AES_256_CM_HMAC_SHA1_32"
            ]
        );
        let nonew = Sdes {
            nonew: true,
            no: vec!["AES_CM_128_HMAC_SHA1_32".into()],
            ..Sdes::default()
        };
        let mut party = SdesParty::default();
        party.offer(&peer, &nonew, &mut rng).unwrap();
        assert_eq!(suites(&party), ["7 AES_CM_128_HMAC_SHA1_80"]);
        let only = Sdes {
            only: vec!["AES_CM_128_HMAC_SHA1_80".into()],
            pad: true,
            ..Sdes::default()
        };
        let mut party = SdesParty::default();
        party.offer(&[], &only, &mut rng).unwrap();
        assert_eq!(suites(&party), ["1 AES_CM_128_HMAC_SHA1_80"]);
        let none = Sdes {
            only: vec!["F8_128_HMAC_SHA1_80".into()],
            ..Sdes::default()
        };
        assert!(SdesParty::default().offer(&[], &none, &mut rng).is_err());
    }
}
