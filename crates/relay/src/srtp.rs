//! SRTP and SRTCP ([RFC 3711](https://www.rfc-editor.org/rfc/rfc3711)) for a leg whose keys
//! were exchanged with SDES ([RFC 4568](https://www.rfc-editor.org/rfc/rfc4568)): the suites
//! the relay speaks, the master keys, and one direction's cryptographic context.
//!
//! A leg that the relay encrypts holds two keys ([`SrtpKeys`]):
//!
//! * `inbound`: the **party's** key, from its `a=crypto` line. The party encrypts what it sends
//!   with it, so the relay decrypts and authenticates the leg's packets with it;
//! * `outbound`: the **relay's** key for that party, the one the relay wrote into the SDP it
//!   sent to the party. The relay encrypts what it sends to the party with it.
//!
//! Each direction is one [`SrtpSession`] around an `rtc-srtp` context, which does the cipher,
//! the authentication tag, the rollover counter and the replay window (RFC 3711 §3.3.1,
//! §3.3.2) for every SSRC it sees, for SRTP and SRTCP alike. MKI is not supported (the crate has
//! none): the control plane refuses `a=crypto` lines that carry one. A key lifetime
//! (`inline:…|2^20`) is honoured by counting: once a key has protected or unprotected that
//! many packets, further packets are dropped ([`SrtpError::KeyExhausted`]) until signalling
//! brings a new key.

use std::fmt;

use rand::{CryptoRng, RngCore};

/// The largest master key + master salt of any suite (AES-256 key, 112-bit salt).
pub const MAX_MASTER_LEN: usize = 46;

/// Replay window for SRTP, in packets (libsrtp's default is 128; RFC 3711 asks for at least 64).
const SRTP_REPLAY_WINDOW: usize = 128;
/// Replay window for SRTCP, in packets.
const SRTCP_REPLAY_WINDOW: usize = 128;

/// An SRTP crypto suite, by its SDES name (RFC 4568 §6.2, RFC 6188, RFC 7714).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// `AEAD_AES_256_GCM` (RFC 7714): 256-bit key, 96-bit salt, 16-byte tag.
    AeadAes256Gcm,
    /// `AEAD_AES_128_GCM` (RFC 7714): 128-bit key, 96-bit salt, 16-byte tag.
    AeadAes128Gcm,
    /// `AES_256_CM_HMAC_SHA1_80` (RFC 6188).
    Aes256CmHmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` (RFC 6188).
    Aes256CmHmacSha1_32,
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568), the mandatory suite.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32` (RFC 4568).
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    /// Every suite the relay speaks, in rtpengine's order of preference (the order in which
    /// it writes them into an offer).
    pub const PREFERENCE: [SrtpSuite; 6] = [
        SrtpSuite::AeadAes256Gcm,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::Aes256CmHmacSha1_80,
        SrtpSuite::Aes256CmHmacSha1_32,
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    /// The SDES name, as written in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpSuite::Aes256CmHmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            SrtpSuite::Aes256CmHmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite of an SDES name (ASCII case ignored), if the relay speaks it.
    pub fn from_name(name: &str) -> Option<SrtpSuite> {
        Self::PREFERENCE
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm
            | SrtpSuite::Aes256CmHmacSha1_80
            | SrtpSuite::Aes256CmHmacSha1_32 => 32,
            SrtpSuite::AeadAes128Gcm
            | SrtpSuite::AesCm128HmacSha1_80
            | SrtpSuite::AesCm128HmacSha1_32 => 16,
        }
    }

    /// Master salt length in bytes (112 bits for AES-CM, 96 bits for AEAD).
    pub fn salt_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm | SrtpSuite::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Length of the `inline:` key material: master key followed by master salt.
    pub fn master_len(self) -> usize {
        self.key_len() + self.salt_len()
    }

    fn profile(self) -> rtc_srtp::protection_profile::ProtectionProfile {
        use rtc_srtp::protection_profile::ProtectionProfile as P;
        match self {
            SrtpSuite::AeadAes256Gcm => P::AeadAes256Gcm,
            SrtpSuite::AeadAes128Gcm => P::AeadAes128Gcm,
            SrtpSuite::Aes256CmHmacSha1_80 => P::Aes256CmHmacSha1_80,
            SrtpSuite::Aes256CmHmacSha1_32 => P::Aes256CmHmacSha1_32,
            SrtpSuite::AesCm128HmacSha1_80 => P::Aes128CmHmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32 => P::Aes128CmHmacSha1_32,
        }
    }
}

impl fmt::Display for SrtpSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Master key material whose length does not fit the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{suite} needs {expected} bytes of master key and salt, got {got}")]
pub struct KeyLengthError {
    /// The suite.
    pub suite: SrtpSuite,
    /// What it needs.
    pub expected: usize,
    /// What was given.
    pub got: usize,
}

/// A master key followed by its master salt, as carried in `inline:` (RFC 4568 §6.1).
/// Its `Debug` form never shows the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey {
    bytes: [u8; MAX_MASTER_LEN],
    len: u8,
}

impl MasterKey {
    /// Key and salt for `suite`, checked for length.
    pub fn new(suite: SrtpSuite, key_and_salt: &[u8]) -> Result<MasterKey, KeyLengthError> {
        let expected = suite.master_len();
        if key_and_salt.len() != expected {
            return Err(KeyLengthError {
                suite,
                expected,
                got: key_and_salt.len(),
            });
        }
        let mut bytes = [0u8; MAX_MASTER_LEN];
        bytes[..expected].copy_from_slice(key_and_salt);
        Ok(MasterKey {
            bytes,
            len: expected as u8,
        })
    }

    /// Fresh key and salt for `suite` from a cryptographically secure generator.
    pub fn random<R: RngCore + CryptoRng + ?Sized>(suite: SrtpSuite, rng: &mut R) -> MasterKey {
        let len = suite.master_len();
        let mut bytes = [0u8; MAX_MASTER_LEN];
        rng.fill_bytes(&mut bytes[..len]);
        MasterKey {
            bytes,
            len: len as u8,
        }
    }

    /// Key followed by salt.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(<{} bytes>)", self.len)
    }
}

/// One SRTP key as SDES exchanges it: suite, master key and salt, and the lifetime the key's
/// owner gave it (RFC 4568 §6.1), in packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKey {
    /// The crypto suite.
    pub suite: SrtpSuite,
    /// Master key and salt.
    pub master: MasterKey,
    /// Most packets (SRTP and SRTCP together) the key may protect; `None`: the RFC 3711
    /// maximum.
    pub lifetime: Option<u64>,
}

/// The keys of a leg the relay encrypts (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SrtpKeys {
    /// The party's key: the relay decrypts what the party sends with it. `None` until the
    /// party's SDP gave one; the party's packets are dropped meanwhile.
    pub inbound: Option<SrtpKey>,
    /// The relay's key for the party: the relay encrypts what it sends to the party with it.
    /// `None`: packets towards the party are dropped.
    pub outbound: Option<SrtpKey>,
}

/// Why a packet could not be decrypted or encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The leg is encrypted but the key for this direction is not known yet.
    #[error("no SRTP key for this direction yet")]
    NoKey,
    /// The authentication tag did not verify (tampered, wrong key, or not SRTP at all).
    #[error("SRTP authentication failed")]
    Authentication,
    /// The packet index was seen before or is behind the replay window.
    #[error("SRTP packet replayed")]
    Replay,
    /// Too short, or not an RTP/RTCP packet.
    #[error("malformed SRTP packet")]
    Malformed,
    /// The key reached the lifetime its owner gave it.
    #[error("SRTP key lifetime exhausted")]
    KeyExhausted,
    /// The cryptographic context could not be built or refused to encrypt.
    #[error("SRTP context error")]
    Crypto,
}

/// Counters of a leg's encryption, for `query` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SrtpStats {
    /// Packets from the party that were authenticated and decrypted.
    pub decrypted_packets: u64,
    /// Their bytes, as received (with tags).
    pub decrypted_bytes: u64,
    /// Packets encrypted towards the party.
    pub encrypted_packets: u64,
    /// Their bytes, as sent (with tags).
    pub encrypted_bytes: u64,
    /// Packets from the party dropped because their authentication failed.
    pub auth_failures: u64,
    /// Packets from the party dropped as replays.
    pub replayed: u64,
    /// Packets dropped for any other SRTP reason: no key yet, malformed, lifetime exhausted,
    /// a context error (either direction).
    pub other_failures: u64,
}

impl SrtpStats {
    /// Counts a failure.
    pub fn record_failure(&mut self, error: SrtpError) {
        match error {
            SrtpError::Authentication => self.auth_failures += 1,
            SrtpError::Replay => self.replayed += 1,
            _ => self.other_failures += 1,
        }
    }

    /// Adds another leg's counters.
    pub fn add(&mut self, other: &SrtpStats) {
        self.decrypted_packets += other.decrypted_packets;
        self.decrypted_bytes += other.decrypted_bytes;
        self.encrypted_packets += other.encrypted_packets;
        self.encrypted_bytes += other.encrypted_bytes;
        self.auth_failures += other.auth_failures;
        self.replayed += other.replayed;
        self.other_failures += other.other_failures;
    }
}

/// How the relay keys an encrypted leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// SDES (RFC 4568): keys from `a=crypto`.
    Sdes,
    /// DTLS-SRTP (RFC 5764): keys from the handshake.
    Dtls,
}

impl Keying {
    /// Both, in the order [`SrtpByKind`] keeps them.
    pub const ALL: [Keying; 2] = [Keying::Sdes, Keying::Dtls];

    /// The label written in `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Keying::Sdes => "sdes",
            Keying::Dtls => "dtls",
        }
    }
}

/// SRTP counters by the kind of leg they were counted on: its keying and its suite (`None`:
/// no key yet, e.g. a DTLS leg before its handshake). At most 2 × 7 kinds whatever the number
/// of calls, so `/metrics` can label by them without unbounded cardinality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SrtpByKind {
    stats: [[SrtpStats; 7]; 2],
}

impl SrtpByKind {
    fn slot(suite: Option<SrtpSuite>) -> usize {
        suite
            .and_then(|s| SrtpSuite::PREFERENCE.iter().position(|p| *p == s))
            .unwrap_or(SrtpSuite::PREFERENCE.len())
    }

    /// The counters of legs keyed by `keying` with `suite`.
    pub fn get_mut(&mut self, keying: Keying, suite: Option<SrtpSuite>) -> &mut SrtpStats {
        let row = match keying {
            Keying::Sdes => &mut self.stats[0],
            Keying::Dtls => &mut self.stats[1],
        };
        &mut row[Self::slot(suite).min(6)]
    }

    /// Adds another set of counters (another worker's).
    pub fn add(&mut self, other: &SrtpByKind) {
        for (mine, theirs) in self.stats.iter_mut().zip(&other.stats) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.add(t);
            }
        }
    }

    /// Every kind with its counters, suites in rtpengine's order then `None`.
    pub fn iter(&self) -> impl Iterator<Item = (Keying, Option<SrtpSuite>, &SrtpStats)> {
        let suites = SrtpSuite::PREFERENCE.map(Some).into_iter().chain([None]);
        Keying::ALL
            .into_iter()
            .zip(&self.stats)
            .flat_map(move |(keying, row)| {
                suites
                    .clone()
                    .zip(row)
                    .map(move |(suite, stats)| (keying, suite, stats))
            })
    }
}

/// One direction of SRTP with one key: the context is built at the first packet.
///
/// A clone has the same key but a context of its own, built at its first packet: rollover
/// counters and replay windows are not copied (clones are snapshots for reporting).
pub struct SrtpSession {
    key: SrtpKey,
    context: Option<rtc_srtp::context::Context>,
    used: u64,
}

impl Clone for SrtpSession {
    fn clone(&self) -> Self {
        SrtpSession {
            key: self.key,
            context: None,
            used: self.used,
        }
    }
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpSession")
            .field("suite", &self.key.suite)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl SrtpSession {
    /// A session with `key`.
    pub fn new(key: SrtpKey) -> SrtpSession {
        SrtpSession {
            key,
            context: None,
            used: 0,
        }
    }

    /// The key.
    pub fn key(&self) -> &SrtpKey {
        &self.key
    }

    fn context(&mut self) -> Result<&mut rtc_srtp::context::Context, SrtpError> {
        if let Some(lifetime) = self.key.lifetime {
            if self.used >= lifetime {
                return Err(SrtpError::KeyExhausted);
            }
        }
        if self.context.is_none() {
            let suite = self.key.suite;
            let master = self.key.master.as_bytes();
            let (key, salt) = master.split_at(suite.key_len().min(master.len()));
            // The crate's built-in provider (ring); it is only needed to key the context.
            let provider = rtc_srtp::crypto::default_provider().map_err(|_| SrtpError::Crypto)?;
            let context = rtc_srtp::context::Context::new(
                key,
                salt,
                suite.profile(),
                Some(rtc_srtp::option::srtp_replay_protection(SRTP_REPLAY_WINDOW)),
                Some(rtc_srtp::option::srtcp_replay_protection(
                    SRTCP_REPLAY_WINDOW,
                )),
                provider.crypto(),
            )
            .map_err(|_| SrtpError::Crypto)?;
            self.context = Some(context);
        }
        self.context.as_mut().ok_or(SrtpError::Crypto)
    }

    /// Authenticates and decrypts an SRTP (`rtcp` false) or SRTCP packet.
    pub fn unprotect(&mut self, packet: &[u8], rtcp: bool) -> Result<Vec<u8>, SrtpError> {
        let mut plain = Vec::new();
        self.unprotect_into(packet, rtcp, &mut plain)?;
        Ok(plain)
    }

    /// Encrypts and authenticates an RTP (`rtcp` false) or RTCP packet.
    pub fn protect(&mut self, packet: &[u8], rtcp: bool) -> Result<Vec<u8>, SrtpError> {
        let mut secured = Vec::new();
        self.protect_into(packet, rtcp, &mut secured)?;
        Ok(secured)
    }

    /// [`SrtpSession::unprotect`] for the data plane: on success `out` holds the plain packet
    /// (whatever it held before is dropped); on failure `out` is left as it was.
    ///
    /// `rtc-srtp` writes every packet into a buffer of its own (it has no in-place API); `out`
    /// takes that buffer over rather than copying out of it, so the relay's cost per packet is
    /// the crate's one allocation and nothing more.
    pub fn unprotect_into(
        &mut self,
        packet: &[u8],
        rtcp: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        let context = self.context()?;
        let plain = if rtcp {
            context.decrypt_rtcp(packet)
        } else {
            context.decrypt_rtp(packet)
        }
        .map_err(classify)?;
        self.used += 1;
        *out = Vec::from(plain);
        Ok(())
    }

    /// [`SrtpSession::protect`] for the data plane, writing into `out` as
    /// [`SrtpSession::unprotect_into`] does.
    pub fn protect_into(
        &mut self,
        packet: &[u8],
        rtcp: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        let context = self.context()?;
        let secured = if rtcp {
            context.encrypt_rtcp(packet)
        } else {
            context.encrypt_rtp(packet)
        }
        .map_err(|error| match classify(error) {
            SrtpError::Malformed => SrtpError::Malformed,
            _ => SrtpError::Crypto,
        })?;
        self.used += 1;
        *out = Vec::from(secured);
        Ok(())
    }
}

/// What an `rtc-srtp` error means for the relay's counters.
fn classify(error: rtc_shared::error::Error) -> SrtpError {
    use rtc_shared::error::Error as E;
    match error {
        E::ErrFailedToVerifyAuthTag
        | E::RtpFailedToVerifyAuthTag
        | E::RtcpFailedToVerifyAuthTag => SrtpError::Authentication,
        E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..) => SrtpError::Replay,
        _ => SrtpError::Malformed,
    }
}

#[cfg(test)]
mod by_kind_tests {
    use super::*;

    #[test]
    fn counters_by_kind_keep_sdes_and_dtls_and_each_suite_apart_and_add_up() {
        let mut one = SrtpByKind::default();
        one.get_mut(Keying::Sdes, Some(SrtpSuite::AesCm128HmacSha1_80))
            .decrypted_packets += 2;
        one.get_mut(Keying::Dtls, None)
            .record_failure(SrtpError::NoKey);
        let mut two = SrtpByKind::default();
        two.get_mut(Keying::Sdes, Some(SrtpSuite::AesCm128HmacSha1_80))
            .decrypted_packets += 3;
        two.get_mut(Keying::Dtls, Some(SrtpSuite::AeadAes128Gcm))
            .encrypted_packets += 1;
        one.add(&two);
        let seen: Vec<_> = one
            .iter()
            .filter(|(_, _, s)| **s != SrtpStats::default())
            .map(|(k, suite, s)| (k, suite, *s))
            .collect();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(one.iter().count(), 14, "2 keyings x (6 suites + none)");
        assert_eq!(
            seen[0],
            (
                Keying::Sdes,
                Some(SrtpSuite::AesCm128HmacSha1_80),
                SrtpStats {
                    decrypted_packets: 5,
                    ..SrtpStats::default()
                }
            )
        );
        assert_eq!(
            (seen[1].0, seen[1].1, seen[1].2.encrypted_packets),
            (Keying::Dtls, Some(SrtpSuite::AeadAes128Gcm), 1)
        );
        assert_eq!(
            (seen[2].0, seen[2].1, seen[2].2.other_failures),
            (Keying::Dtls, None, 1)
        );
    }
}
