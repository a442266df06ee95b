//! ICE-lite connectivity checks (RFC 8445 §2.5, RFC 5389): when the relay gives a party ICE
//! credentials and host candidates (`ICE=force`), that party's agent sends STUN Binding
//! Requests to the relay's media ports before media; the relay answers each one whose
//! `USERNAME` starts with its own ufrag and whose `MESSAGE-INTEGRITY` verifies with its
//! password, with a Binding Success carrying the request's source (`XOR-MAPPED-ADDRESS`),
//! `MESSAGE-INTEGRITY` and `FINGERPRINT`. Sans-IO: bytes in, bytes out.

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// RFC 5389's magic cookie.
const MAGIC_COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554E;
const HEADER: usize = 20;

/// The ICE credentials the relay gives one party: ufrag of 8 and password of 24 characters
/// (RFC 8445 §5.3: at least 4 and 22), printable so they go into SDP as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceCredentials {
    /// `a=ice-ufrag`.
    pub ufrag: [u8; 8],
    /// `a=ice-pwd`.
    pub pwd: [u8; 24],
}

impl IceCredentials {
    /// Credentials drawn from `rng` (letters and digits).
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut pick = || CHARS[rng.random_range(0..CHARS.len())];
        let mut ufrag = [0u8; 8];
        let mut pwd = [0u8; 24];
        ufrag.iter_mut().for_each(|b| *b = pick());
        pwd.iter_mut().for_each(|b| *b = pick());
        Self { ufrag, pwd }
    }

    /// The ufrag as text.
    pub fn ufrag_str(&self) -> &str {
        std::str::from_utf8(&self.ufrag).unwrap_or("")
    }

    /// The password as text.
    pub fn pwd_str(&self) -> &str {
        std::str::from_utf8(&self.pwd).unwrap_or("")
    }
}

/// Whether a datagram is a STUN message (RFC 5389 §6; RFC 7983 demultiplexing: first byte 0–3
/// and the magic cookie).
pub fn is_stun(packet: &[u8]) -> bool {
    packet.len() >= HEADER
        && packet[0] < 4
        && u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]) == MAGIC_COOKIE
}

/// Why a STUN message gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunRefusal {
    /// Not a Binding Request, or malformed.
    NotABindingRequest,
    /// `USERNAME` missing or not ours.
    WrongUsername,
    /// `MESSAGE-INTEGRITY` missing or wrong.
    BadIntegrity,
}

/// The Binding Success for a Binding Request from `source` checked against `ours`.
pub fn answer_binding_request(
    request: &[u8],
    source: SocketAddr,
    ours: &IceCredentials,
) -> Result<Vec<u8>, StunRefusal> {
    if !is_stun(request) {
        return Err(StunRefusal::NotABindingRequest);
    }
    let kind = u16::from_be_bytes([request[0], request[1]]);
    let length = usize::from(u16::from_be_bytes([request[2], request[3]]));
    if kind != BINDING_REQUEST || HEADER + length != request.len() || length % 4 != 0 {
        return Err(StunRefusal::NotABindingRequest);
    }
    let mut username: Option<&[u8]> = None;
    let mut integrity: Option<(usize, &[u8])> = None;
    let mut at = HEADER;
    while at + 4 <= request.len() {
        let attr = u16::from_be_bytes([request[at], request[at + 1]]);
        let len = usize::from(u16::from_be_bytes([request[at + 2], request[at + 3]]));
        let value = request
            .get(at + 4..at + 4 + len)
            .ok_or(StunRefusal::NotABindingRequest)?;
        match attr {
            ATTR_USERNAME => username = Some(value),
            ATTR_MESSAGE_INTEGRITY => {
                integrity = Some((at, value));
                // Only FINGERPRINT may follow MESSAGE-INTEGRITY.
            }
            _ => {}
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    let username = username.ok_or(StunRefusal::WrongUsername)?;
    let ours_prefix = [&ours.ufrag[..], b":"].concat();
    if !username.starts_with(&ours_prefix) {
        return Err(StunRefusal::WrongUsername);
    }
    let (mi_at, mi) = integrity.ok_or(StunRefusal::BadIntegrity)?;
    // The HMAC covers the message up to the attribute, with the header's length counting the
    // message up to and including MESSAGE-INTEGRITY (RFC 5389 §15.4).
    let mut covered = request
        .get(..mi_at)
        .ok_or(StunRefusal::BadIntegrity)?
        .to_vec();
    let covered_len = (mi_at + 24 - HEADER) as u16;
    covered[2..4].copy_from_slice(&covered_len.to_be_bytes());
    if hmac_sha1(&ours.pwd, &covered) != mi {
        return Err(StunRefusal::BadIntegrity);
    }
    let transaction = &request[8..20];
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(transaction);
    push_xor_mapped_address(&mut out, source, transaction);
    // MESSAGE-INTEGRITY over the response so far, length counting it.
    let len_with_mi = (out.len() + 24 - HEADER) as u16;
    out[2..4].copy_from_slice(&len_with_mi.to_be_bytes());
    let mac = hmac_sha1(&ours.pwd, &out);
    out.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
    out.extend_from_slice(&20u16.to_be_bytes());
    out.extend_from_slice(&mac);
    // FINGERPRINT over everything before it, length counting it.
    let len_with_fp = (out.len() + 8 - HEADER) as u16;
    out[2..4].copy_from_slice(&len_with_fp.to_be_bytes());
    let crc = crc32fast::hash(&out) ^ FINGERPRINT_XOR;
    out.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(out)
}

fn push_xor_mapped_address(out: &mut Vec<u8>, source: SocketAddr, transaction: &[u8]) {
    let port = source.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    match source.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            for (b, k) in ip.octets().iter().zip(cookie) {
                out.push(b ^ k);
            }
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            let key: Vec<u8> = cookie.iter().chain(transaction).copied().collect();
            for (b, k) in ip.octets().iter().zip(key) {
                out.push(b ^ k);
            }
        }
    }
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    // A key of any length is valid for HMAC.
    match Hmac::<Sha1>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// A Binding Request as an ICE agent sends it to a peer whose ufrag is `ufrag` and password
/// `pwd`: USERNAME `ufrag:peer`, PRIORITY, MESSAGE-INTEGRITY, FINGERPRINT (for tests and tools).
pub fn binding_request(ufrag: &str, pwd: &[u8], transaction: [u8; 12]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m.extend_from_slice(&transaction);
    let username = format!("{ufrag}:peer");
    m.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
    m.extend_from_slice(&(username.len() as u16).to_be_bytes());
    m.extend_from_slice(username.as_bytes());
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m.extend_from_slice(&0x0024u16.to_be_bytes()); // PRIORITY
    m.extend_from_slice(&4u16.to_be_bytes());
    m.extend_from_slice(&1_845_501_695u32.to_be_bytes());
    let len = (m.len() + 24 - HEADER) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let mac = hmac_sha1(pwd, &m);
    m.extend_from_slice(&ATTR_MESSAGE_INTEGRITY.to_be_bytes());
    m.extend_from_slice(&20u16.to_be_bytes());
    m.extend_from_slice(&mac);
    let len = (m.len() + 8 - HEADER) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&m) ^ FINGERPRINT_XOR;
    m.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    m.extend_from_slice(&4u16.to_be_bytes());
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> IceCredentials {
        IceCredentials {
            ufrag: *b"Ab3dEf6h",
            pwd: *b"0123456789abcdefghijklmn",
        }
    }

    #[test]
    fn a_valid_check_gets_a_success_with_the_source_and_both_checksums() {
        let c = creds();
        let tid = [7u8; 12];
        let req = binding_request(c.ufrag_str(), &c.pwd, tid);
        let source: SocketAddr = "192.0.2.10:4000".parse().unwrap();
        let resp = answer_binding_request(&req, source, &c).unwrap();
        assert_eq!(&resp[0..2], &BINDING_SUCCESS.to_be_bytes());
        assert_eq!(&resp[8..20], &tid);
        assert_eq!(
            usize::from(u16::from_be_bytes([resp[2], resp[3]])),
            resp.len() - HEADER
        );
        // XOR-MAPPED-ADDRESS decodes to the source.
        assert_eq!(&resp[20..22], &ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
        let port = u16::from_be_bytes([resp[26], resp[27]]) ^ 0x2112;
        let ip: Vec<u8> = resp[28..32]
            .iter()
            .zip(MAGIC_COOKIE.to_be_bytes())
            .map(|(b, k)| b ^ k)
            .collect();
        assert_eq!((ip, port), (vec![192, 0, 2, 10], 4000));
        // MESSAGE-INTEGRITY verifies with our password; FINGERPRINT with CRC-32.
        let mi_at = 32;
        assert_eq!(
            &resp[mi_at..mi_at + 2],
            &ATTR_MESSAGE_INTEGRITY.to_be_bytes()
        );
        let mut covered = resp[..mi_at].to_vec();
        covered[2..4].copy_from_slice(&((mi_at + 24 - HEADER) as u16).to_be_bytes());
        assert_eq!(hmac_sha1(&c.pwd, &covered), &resp[mi_at + 4..mi_at + 24]);
        let fp_at = mi_at + 24;
        let crc = crc32fast::hash(&resp[..fp_at]) ^ FINGERPRINT_XOR;
        assert_eq!(&resp[fp_at + 4..fp_at + 8], &crc.to_be_bytes());
    }

    #[test]
    fn checks_with_another_ufrag_or_password_are_refused() {
        let c = creds();
        let source: SocketAddr = "192.0.2.10:4000".parse().unwrap();
        let wrong_user = binding_request("Zz9zZz9z", &c.pwd, [1; 12]);
        assert_eq!(
            answer_binding_request(&wrong_user, source, &c),
            Err(StunRefusal::WrongUsername)
        );
        let wrong_pwd = binding_request(c.ufrag_str(), b"not-the-password-at-all!", [1; 12]);
        assert_eq!(
            answer_binding_request(&wrong_pwd, source, &c),
            Err(StunRefusal::BadIntegrity)
        );
        assert!(!is_stun(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(
            answer_binding_request(&[0u8; 19], source, &c),
            Err(StunRefusal::NotABindingRequest)
        );
    }
}
