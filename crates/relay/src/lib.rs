//! The media relay's data-plane logic, sans-IO: no sockets, no clock reads, RNG passed in.
//!
//! * [`interface`]: named interfaces (local address, advertised address, port range), parsed
//!   from rtpengine's `--interface [NAME/]IP[!ADVERTISED]`.
//! * [`ports`]: the shuffled even/odd port pool of an interface, with a delete-delay
//!   quarantine and exhaustion as an error.
//! * [`stream`]: one `m=` line relayed between leg A and leg B ([`MediaPair`]) and the
//!   per-packet decision [`MediaPair::on_packet`] — where a datagram that arrived on a local
//!   port goes, and from which local port.
//! * [`latch`]: endpoint learning (delayed, immediate, heuristic, off), strict source, media
//!   handover, asymmetric.
//! * [`srtp`]: SDES-keyed SRTP/SRTCP per leg (RFC 3711, RFC 4568 suites) on `rtc-srtp`:
//!   [`MediaPair::relay`] decrypts what an encrypted leg sends and encrypts what it receives.
//! * [`dtls`]: DTLS-SRTP per leg (RFC 5763/5764) on `rtc-dtls`: the relay's certificate and
//!   fingerprint, the handshake, the SRTP keys exported from it.
//! * [`demux`]: what a datagram on a media port is, by its first byte (RFC 7983): STUN, DTLS,
//!   RTP/RTCP, or something to drop.
//! * [`stats`]: packets, bytes, errors, last packet, RTP loss and jitter (RFC 3550 A.1/A.3/A.8).
//! * [`timeout`]: media timeout and offer timeout.
//!
//! Time is always an input: every function that needs it takes `now: Instant`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use anchorage_relay::{Decision, LegConfig, LocalSocket, MediaPair, SdpPeer, Side, SocketKind, StreamFlags};
//!
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now(); // the I/O layer's clock
//! let leg = |local: &str, remote: &str| LegConfig {
//!     local_rtp: local.parse().unwrap(),
//!     local_rtcp: None,
//!     remote: Some(SdpPeer::new(remote.parse().unwrap())),
//!     rtcp_mux: true,
//!     flags: StreamFlags::default(),
//! };
//! let mut pair = MediaPair::new(
//!     leg("203.0.113.1:30000", "192.0.2.10:4000"),
//!     leg("203.0.113.1:30002", "198.51.100.20:5000"),
//!     now,
//! )?;
//! let rtp = [0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1];
//! let on = LocalSocket { side: Side::A, kind: SocketKind::Rtp };
//! match pair.on_packet(on, "192.0.2.10:4000".parse().unwrap(), &rtp, now) {
//!     Decision::Forward(f) => {
//!         let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
//!         assert_eq!(f.from, addr("203.0.113.1:30002")); // the port B was given
//!         assert_eq!(f.to, addr("198.51.100.20:5000"));
//!     }
//!     Decision::Drop(reason) => panic!("{reason:?}"),
//! }
//! # Ok::<(), anchorage_relay::LegConfigError>(())
//! ```

#![warn(missing_docs)]

pub mod demux;
pub mod dtls;
pub mod interface;
pub mod latch;
pub mod packet;
pub mod ports;
pub mod srtp;
pub mod stats;
pub mod stream;
pub mod stun;
pub mod timeout;

pub use dtls::{
    DtlsError, DtlsEvent, DtlsIdentity, DtlsParams, DtlsRole, DtlsSession, DtlsState, DtlsStats,
    Fingerprint,
};
pub use interface::{Interface, InterfaceError};
pub use latch::{EndpointLearning, LearningFlags, LEARNING_WINDOW};
pub use ports::{PortError, PortPair, PortPool, PortRange};
pub use srtp::{Keying, MasterKey, SrtpByKind, SrtpError, SrtpKey, SrtpKeys, SrtpStats, SrtpSuite};
pub use stats::{RtpReception, StreamStats};
pub use stream::{
    Decision, DropReason, Forward, LegConfig, LegConfigError, LegStats, LocalSocket, MediaPair,
    Payload, Relayed, SdpPeer, Side, SocketKind, StreamFlags,
};
pub use timeout::{Expiry, Liveness, Timeouts};
