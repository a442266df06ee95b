//! The SIP transports this layer frames messages for, shared by the proxy core and the I/O
//! layer so both name a transport the same way.

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP: one message per datagram; unreliable, so retransmission timers apply.
    Udp,
    /// TCP: a byte stream framed by Content-Length; reliable.
    Tcp,
}

impl Transport {
    /// The token used in Via (`UDP`, `TCP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Whether the transport is reliable (RFC 3261 §17: no retransmissions).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}
