//! DTLS-SRTP ([RFC 5763](https://www.rfc-editor.org/rfc/rfc5763),
//! [RFC 5764](https://www.rfc-editor.org/rfc/rfc5764)) for one leg: the relay's certificate and
//! its `a=fingerprint`, the handshake with the party on the leg's RTP port, and the SRTP keys
//! exported from it (`EXTRACTOR-dtls_srtp`) for the leg's [`crate::srtp`] contexts.
//!
//! ```text
//!  party ──ClientHello──►  relay (a=setup:passive: DTLS server)     or
//!  party ◄─ClientHello───  relay (a=setup:active:  DTLS client)
//!        … handshake; the party's certificate must hash to its a=fingerprint …
//!  keying material = client key | server key | client salt | server salt   (RFC 5764 §4.2)
//!  the relay decrypts with the party's half and encrypts with its own
//! ```
//!
//! **Why `rtc-dtls`** and not the `openssl` crate over Debian's OpenSSL (str0m's choice): it is
//! sans-IO (datagrams in, datagrams and timer deadlines out, the clock passed in) like every core
//! of this project, it is pure Rust (no `unsafe` of ours: the `openssl` crate has no safe call
//! for DTLS retransmission timers, `DTLSv1_handle_timeout` would be our own FFI), it shares
//! `rtc-srtp`'s project and crypto provider (ring), and it needs no system library at build or
//! run time. It is maintained (0.21, 2026) and interoperates with OpenSSL peers (aiortc, baresip:
//! `tests/relay_dtls.rs`).
//!
//! Sans-IO: [`DtlsSession`] takes datagrams and `now`, and hands out datagrams to send
//! ([`DtlsSession::poll_transmit`]) and its next deadline ([`DtlsSession::poll_timeout`]).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use sha2::{Digest, Sha256};

use crate::srtp::{MasterKey, SrtpKey, SrtpKeys, SrtpSuite};

/// The label of RFC 5764 §4.2 for exporting SRTP keys from the handshake (RFC 5705).
const EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// The SRTP protection profiles the relay offers and accepts, in its order of preference.
const PROFILES: [SrtpProtectionProfile; 4] = [
    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
    SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32,
];

/// The key under which the one association of a session lives in its `rtc-dtls` endpoint: a
/// leg has one party, and the datagrams go to the leg's current address, whatever this says.
const ASSOCIATION: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

/// The text our certificate check returns when the party's certificate does not match.
const MISMATCH: &str = "the certificate does not match a=fingerprint";

/// A SHA-256 certificate fingerprint (RFC 8122 §5), written `sha-256 AB:CD:…` in SDP.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Parses the value of `a=fingerprint` (`sha-256 AB:CD:…`, case ignored); `None` for
    /// another hash function or malformed hex.
    pub fn parse(value: &str) -> Option<Fingerprint> {
        let (hash, hex) = value.trim().split_once(char::is_whitespace)?;
        if !hash.eq_ignore_ascii_case("sha-256") {
            return None;
        }
        let mut bytes = [0u8; 32];
        let mut parts = hex.trim().split(':');
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Fingerprint(bytes))
    }

    /// The value of `a=fingerprint`: `sha-256` and upper-case hex pairs.
    pub fn sdp_value(&self) -> String {
        format!("sha-256 {self}")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The relay's DTLS role towards a party (RFC 5763 §5, `a=setup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsRole {
    /// The relay sends the ClientHello (it wrote `a=setup:active`, or the party `passive`).
    Client,
    /// The party sends the ClientHello (the relay wrote `passive`, or the party `active`).
    Server,
}

/// What the data plane needs to run one leg's handshake: the role and whom to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtlsParams {
    /// The relay's role.
    pub role: DtlsRole,
    /// The party's certificate fingerprint, from its `a=fingerprint`; `None` until its SDP gave
    /// one (the relay's offer is not answered yet): no handshake is run meanwhile.
    pub peer: Option<Fingerprint>,
}

/// Why DTLS could not be set up, or a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtlsError {
    /// The relay's certificate could not be made or read.
    #[error("DTLS certificate: {0}")]
    Identity(String),
    /// The party's certificate does not hash to its `a=fingerprint`.
    #[error("DTLS handshake failed: {MISMATCH}")]
    WrongFingerprint,
    /// The handshake ended with an alert, ran out of retransmissions, or negotiated no SRTP
    /// profile the relay speaks.
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
}

/// The relay's certificate and its fingerprint, made once per relay (generated at start, or
/// read from PEM) and shared by every leg.
#[derive(Clone)]
pub struct DtlsIdentity {
    certificate: Certificate,
    fingerprint: Fingerprint,
    provider: Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>,
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate (as WebRTC endpoints use).
    pub fn generate() -> Result<DtlsIdentity, DtlsError> {
        let provider = provider()?;
        let certificate =
            Certificate::generate_self_signed(vec!["anchorage".to_owned()], provider.crypto())
                .map_err(|e| DtlsError::Identity(e.to_string()))?;
        Self::with(certificate, provider)
    }

    /// A certificate and its PKCS#8 private key, both PEM, in one text (certificate first).
    pub fn from_pem(pem: &str) -> Result<DtlsIdentity, DtlsError> {
        let provider = provider()?;
        let certificate = Certificate::from_pem(pem, provider.crypto())
            .map_err(|e| DtlsError::Identity(e.to_string()))?;
        Self::with(certificate, provider)
    }

    fn with(
        certificate: Certificate,
        provider: Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>,
    ) -> Result<DtlsIdentity, DtlsError> {
        let der = certificate
            .certificate
            .first()
            .ok_or_else(|| DtlsError::Identity("no certificate in it".into()))?;
        let fingerprint = Fingerprint::of_der(der.as_ref());
        Ok(DtlsIdentity {
            certificate,
            fingerprint,
            provider,
        })
    }

    /// The fingerprint written into `a=fingerprint`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The handshake configuration for one party.
    fn config(&self, params: DtlsParams) -> Result<Arc<HandshakeConfig>, DtlsError> {
        let expected = params.peer;
        let check: rtc_dtls::config::VerifyPeerCertificateFn = Arc::new(
            move |certificates: &[Vec<u8>], _| match certificates.first() {
                Some(der) if Some(Fingerprint::of_der(der)) == expected => Ok(()),
                _ => Err(rtc_shared::error::Error::Other(MISMATCH.into())),
            },
        );
        let client = params.role == DtlsRole::Client;
        let builder = ConfigBuilder::default()
            .with_crypto_provider(self.provider.clone())
            .with_certificates(vec![self.certificate.clone()])
            .with_srtp_protection_profiles(PROFILES.to_vec())
            .with_extended_master_secret(ExtendedMasterSecretType::Request)
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            // No CA chain: the party is authenticated by its fingerprint (RFC 5763 §5).
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(check))
            // Only for SNI, which WebRTC peers ignore; named so the crate does not warn.
            .with_server_name("anchorage".into());
        builder
            .build(client, None)
            .map(Arc::new)
            .map_err(|e| DtlsError::Identity(e.to_string()))
    }
}

/// Whether a datagram starts with a ClientHello record: content type handshake (22), and
/// handshake type 1 after the 13-byte record header (RFC 6347 §4.1, §4.2.2).
fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.first() == Some(&22) && datagram.get(13) == Some(&1)
}

fn provider() -> Result<Arc<dyn rtc_dtls::crypto_provider::RTCCryptoProvider>, DtlsError> {
    rtc_dtls::crypto_provider::default_provider().map_err(|e| DtlsError::Identity(e.to_string()))
}

/// What a datagram or a timer did to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// Nothing the leg needs to act on (a handshake step, a retransmission, a record dropped).
    None,
    /// The handshake completed: the leg's SRTP keys.
    Keys(SrtpKeys),
    /// The handshake failed; the session is reset and waits for a new ClientHello (server) or
    /// new signalling (client).
    Failed(DtlsError),
}

/// Counters of a leg's DTLS, for `query` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DtlsStats {
    /// Handshakes that completed and keyed the leg.
    pub handshakes: u64,
    /// Handshakes that failed, for any reason.
    pub failures: u64,
    /// Of those, the party's certificate did not match its `a=fingerprint`.
    pub wrong_fingerprint: u64,
    /// DTLS datagrams dropped: on a leg without DTLS, or from another address than the party's.
    pub dropped: u64,
}

impl DtlsStats {
    /// Counts what a datagram or timer did.
    pub fn record(&mut self, event: &DtlsEvent) {
        match event {
            DtlsEvent::None => {}
            DtlsEvent::Keys(_) => self.handshakes += 1,
            DtlsEvent::Failed(error) => {
                self.failures += 1;
                if *error == DtlsError::WrongFingerprint {
                    self.wrong_fingerprint += 1;
                }
            }
        }
    }

    /// Adds another leg's counters.
    pub fn add(&mut self, other: &DtlsStats) {
        self.handshakes += other.handshakes;
        self.failures += other.failures;
        self.wrong_fingerprint += other.wrong_fingerprint;
        self.dropped += other.dropped;
    }
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsState {
    /// Handshaking (or waiting for the party's ClientHello).
    Handshaking,
    /// Keys exported.
    Done,
    /// The last handshake failed.
    Failed,
}

/// One leg's DTLS association with its party.
pub struct DtlsSession {
    params: DtlsParams,
    config: Arc<HandshakeConfig>,
    endpoint: Endpoint,
    state: DtlsState,
    /// Datagrams of an association that was replaced (the alert of a failed handshake).
    pending: VecDeque<Vec<u8>>,
}

impl fmt::Debug for DtlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsSession")
            .field("params", &self.params)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl DtlsSession {
    /// A session with `params`; as the client it queues its ClientHello at once.
    pub fn new(
        identity: &DtlsIdentity,
        params: DtlsParams,
        now: Instant,
    ) -> Result<DtlsSession, DtlsError> {
        let config = identity.config(params)?;
        let mut session = DtlsSession {
            params,
            endpoint: Endpoint::new(ASSOCIATION, rtc_shared::TransportProtocol::UDP, None),
            config,
            state: DtlsState::Handshaking,
            pending: VecDeque::new(),
        };
        session.start(now)?;
        Ok(session)
    }

    /// A fresh association: the client sends its ClientHello, the server waits for one.
    fn start(&mut self, now: Instant) -> Result<(), DtlsError> {
        self.state = DtlsState::Handshaking;
        match self.params.role {
            DtlsRole::Client => {
                self.endpoint =
                    Endpoint::new(ASSOCIATION, rtc_shared::TransportProtocol::UDP, None);
                self.endpoint
                    .connect(now, ASSOCIATION, self.config.clone(), None)
                    .map_err(|e| DtlsError::Handshake(e.to_string()))
            }
            DtlsRole::Server => {
                self.endpoint = Endpoint::new(
                    ASSOCIATION,
                    rtc_shared::TransportProtocol::UDP,
                    Some(self.config.clone()),
                );
                Ok(())
            }
        }
    }

    /// The role and the expected fingerprint.
    pub fn params(&self) -> DtlsParams {
        self.params
    }

    /// Where the handshake is.
    pub fn state(&self) -> DtlsState {
        self.state
    }

    /// One DTLS datagram from the party (RFC 7983: first byte 20–63).
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> DtlsEvent {
        match (self.state, self.params.role) {
            // A server that failed takes the party's next ClientHello as a new attempt.
            (DtlsState::Failed, DtlsRole::Server) if is_client_hello(datagram) => {
                self.state = DtlsState::Handshaking
            }
            (DtlsState::Failed, DtlsRole::Server) => return DtlsEvent::None,
            // A client that failed waits for new signalling.
            (DtlsState::Failed, DtlsRole::Client) => return DtlsEvent::None,
            _ => {}
        }
        let result = self
            .endpoint
            .read(now, ASSOCIATION, None, BytesMut::from(datagram));
        match result {
            Ok(events) => {
                let completed = events
                    .iter()
                    .any(|e| matches!(e, EndpointEvent::HandshakeComplete));
                if completed {
                    self.completed()
                } else {
                    DtlsEvent::None
                }
            }
            // Not a DTLS record at all: dropped, the handshake goes on (RFC 6347 §4.1.2.7).
            Err(rtc_shared::error::Error::ErrInvalidPacketLength) => DtlsEvent::None,
            Err(rtc_shared::error::Error::Other(text)) if text == MISMATCH => {
                self.fail(now, DtlsError::WrongFingerprint)
            }
            Err(error) => self.fail(now, DtlsError::Handshake(error.to_string())),
        }
    }

    /// The next datagram to send to the party.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.pending
            .pop_front()
            .or_else(|| self.endpoint.poll_transmit().map(|t| t.message.to_vec()))
    }

    /// When [`DtlsSession::handle_timeout`] is due (handshake retransmission).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            DtlsState::Handshaking => self.endpoint.poll_timeout(&ASSOCIATION),
            _ => None,
        }
    }

    /// Retransmits a flight whose answer is overdue.
    pub fn handle_timeout(&mut self, now: Instant) -> DtlsEvent {
        if self.state != DtlsState::Handshaking {
            return DtlsEvent::None;
        }
        match self.endpoint.handle_timeout(ASSOCIATION, now) {
            Ok(()) | Err(rtc_shared::error::Error::InvalidRemoteAddress(_)) => DtlsEvent::None,
            Err(error) => self.fail(now, DtlsError::Handshake(error.to_string())),
        }
    }

    fn fail(&mut self, now: Instant, error: DtlsError) -> DtlsEvent {
        // The alert the association queued still goes out after it is replaced.
        while let Some(datagram) = self.endpoint.poll_transmit() {
            self.pending.push_back(datagram.message.to_vec());
        }
        match self.params.role {
            // A server is ready for the party's next ClientHello.
            DtlsRole::Server => {
                let _ = self.start(now);
            }
            // A client does not start over by itself: new signalling brings a new attempt.
            DtlsRole::Client => {
                self.endpoint =
                    Endpoint::new(ASSOCIATION, rtc_shared::TransportProtocol::UDP, None);
            }
        }
        self.state = DtlsState::Failed;
        DtlsEvent::Failed(error)
    }

    fn completed(&mut self) -> DtlsEvent {
        match self.export() {
            Ok(keys) => {
                self.state = DtlsState::Done;
                DtlsEvent::Keys(keys)
            }
            Err(error) => {
                self.state = DtlsState::Failed;
                DtlsEvent::Failed(error)
            }
        }
    }

    /// The SRTP keys of RFC 5764 §4.2 from the completed handshake.
    fn export(&self) -> Result<SrtpKeys, DtlsError> {
        let state = self
            .endpoint
            .get_connection_state(ASSOCIATION)
            .ok_or_else(|| DtlsError::Handshake("no association".into()))?;
        let suite = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => SrtpSuite::AesCm128HmacSha1_80,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => SrtpSuite::AesCm128HmacSha1_32,
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => SrtpSuite::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => SrtpSuite::AeadAes256Gcm,
            _ => {
                return Err(DtlsError::Handshake(
                    "no SRTP protection profile was negotiated (use_srtp)".into(),
                ))
            }
        };
        let (key, salt) = (suite.key_len(), suite.salt_len());
        let material = state
            .export_keying_material(EXPORTER_LABEL, &[], 2 * (key + salt))
            .map_err(|e| DtlsError::Handshake(e.to_string()))?;
        let material: &[u8] = material.as_ref();
        let half = |offset_key: usize, offset_salt: usize| -> Result<SrtpKey, DtlsError> {
            let mut master = Vec::with_capacity(key + salt);
            master.extend_from_slice(material.get(offset_key..offset_key + key).unwrap_or(&[]));
            master.extend_from_slice(material.get(offset_salt..offset_salt + salt).unwrap_or(&[]));
            let master =
                MasterKey::new(suite, &master).map_err(|e| DtlsError::Handshake(e.to_string()))?;
            Ok(SrtpKey {
                suite,
                master,
                lifetime: None,
            })
        };
        let client = half(0, 2 * key)?;
        let server = half(key, 2 * key + salt)?;
        Ok(match self.params.role {
            DtlsRole::Client => SrtpKeys {
                inbound: Some(server),
                outbound: Some(client),
            },
            DtlsRole::Server => SrtpKeys {
                inbound: Some(client),
                outbound: Some(server),
            },
        })
    }
}

#[cfg(test)]
mod tests;
