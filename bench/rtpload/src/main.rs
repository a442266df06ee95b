//! rtpload: load generator for an RTP media relay driven over the ng protocol (rtpengine's).
//!
//! For each of N calls it plays both endpoints itself, with no SIP in between:
//!
//! 1. `offer` (call-id, from-tag, SDP naming side A's socket 127.0.0.2:p), then `answer`
//!    (to-tag, SDP naming side B's socket 127.0.0.3:q). The offer reply's SDP is what B would
//!    get, so B sends to the address in it; the answer reply's SDP goes to A, so A sends there.
//! 2. RTP on all 2N streams for D seconds: one 172-byte packet (12-byte RTP header + 160 bytes
//!    of payload) every 20 ms per stream, the streams spread over 1-ms sub-slots. Every stream
//!    side has its own socket (own source port), as real phones do: the relay latches on each.
//!    The payload carries the send time (CLOCK_REALTIME, ns) and the stream number; the
//!    receive time is the kernel's (SO_TIMESTAMPNS), so the delay excludes this tool's own
//!    scheduling on the receive side.
//! 3. Checks per packet: it came from the relay address advertised to the receiving side
//!    (symmetric RTP), and it belongs to the stream of the socket it reached.
//! 4. `delete` for every call.
//!
//! One thread, one epoll loop (a 1-ms timerfd paces the sends); its own CPU is reported. With
//! `--watch-pid PID` it also reads PID's CPU (utime+stime of all its threads, /proc/PID/stat),
//! the machine's busy time (/proc/stat idle) and the UDP drop counters (/proc/net/snmp) over
//! the blast, after a warm-up second.
//!
//! usage: rtpload --ng 127.0.0.1:2223 --calls N --duration SECONDS [options]
//!        rtpload --ng 127.0.0.1:2223 --ping [--timeout-ms 200]
//! Prints progress on stderr and one `RESULT key=value ...` line on stdout (also as JSON with
//! `--json FILE`). Loopback addresses only.
//!
//! With `--rtpp`, the `--ng` address speaks RTPProxy's control protocol instead (a real RTPProxy,
//! or `anchorage relay --listen-rtpp`): `U call-id A-ip A-port a<i>;1` for the offer (its
//! `PORT ADDRESS` reply is where B sends), `L call-id B-ip B-port a<i>;1 b<i>;1` for the answer
//! (where A sends), `D call-id a<i>;1` for the delete, `V` for `--ping`; no `--srtp`.
//!
//! With `--srtp`, side B is an SDES-SRTP party (RFC 4568) and side A stays plain: the offer
//! asks for `transport-protocol RTP/SAVP`, B answers the relay's `AES_CM_128_HMAC_SHA1_80`
//! line with a key of its own, B's packets are SRTP-protected before they are sent and what B
//! receives is authenticated and decrypted (with the relay's key) before it is checked, so the
//! relay decrypts one direction and encrypts the other. SRTP is done by `anchorage-relay`'s
//! `SrtpSession` (rtc-srtp, byte-identical to libsrtp); its cost is on the generator's core.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use anchorage_relay::srtp::SrtpSession;
use anchorage_relay::{MasterKey, SrtpKey, SrtpSuite};

// ---------------------------------------------------------------------------------------------
// bencode

#[derive(Debug, Clone)]
enum B {
    I(i64),
    S(Vec<u8>),
    L(Vec<B>),
    D(Vec<(Vec<u8>, B)>),
}

fn s(v: &str) -> B {
    B::S(v.as_bytes().to_vec())
}

fn dict(kv: Vec<(&str, B)>) -> B {
    B::D(
        kv.into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

fn enc(b: &B, out: &mut Vec<u8>) {
    match b {
        B::I(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        B::S(v) => {
            out.extend_from_slice(format!("{}:", v.len()).as_bytes());
            out.extend_from_slice(v);
        }
        B::L(l) => {
            out.push(b'l');
            for x in l {
                enc(x, out);
            }
            out.push(b'e');
        }
        B::D(d) => {
            out.push(b'd');
            for (k, v) in d {
                enc(&B::S(k.clone()), out);
                enc(v, out);
            }
            out.push(b'e');
        }
    }
}

fn dec(buf: &[u8], pos: &mut usize, depth: usize) -> Result<B, String> {
    if depth > 32 {
        return Err("bencode nested too deep".into());
    }
    let c = *buf.get(*pos).ok_or("bencode truncated")?;
    match c {
        b'i' => {
            let end = buf[*pos..]
                .iter()
                .position(|&x| x == b'e')
                .ok_or("bad int")?
                + *pos;
            let v = std::str::from_utf8(&buf[*pos + 1..end])
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or("bad int")?;
            *pos = end + 1;
            Ok(B::I(v))
        }
        b'l' => {
            *pos += 1;
            let mut l = Vec::new();
            while *buf.get(*pos).ok_or("bencode truncated")? != b'e' {
                l.push(dec(buf, pos, depth + 1)?);
            }
            *pos += 1;
            Ok(B::L(l))
        }
        b'd' => {
            *pos += 1;
            let mut d = Vec::new();
            while *buf.get(*pos).ok_or("bencode truncated")? != b'e' {
                let k = match dec(buf, pos, depth + 1)? {
                    B::S(k) => k,
                    _ => return Err("dict key not a string".into()),
                };
                let v = dec(buf, pos, depth + 1)?;
                d.push((k, v));
            }
            *pos += 1;
            Ok(B::D(d))
        }
        b'0'..=b'9' => {
            let colon = buf[*pos..]
                .iter()
                .position(|&x| x == b':')
                .ok_or("bad string")?
                + *pos;
            let n: usize = std::str::from_utf8(&buf[*pos..colon])
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or("bad string length")?;
            let start = colon + 1;
            if start + n > buf.len() {
                return Err("bencode string truncated".into());
            }
            *pos = start + n;
            Ok(B::S(buf[start..start + n].to_vec()))
        }
        _ => Err(format!("bad bencode byte {c:#x}")),
    }
}

fn get_str(d: &B, key: &str) -> Option<String> {
    if let B::D(kv) = d {
        for (k, v) in kv {
            if k == key.as_bytes() {
                if let B::S(v) = v {
                    return Some(String::from_utf8_lossy(v).into_owned());
                }
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// ng client: one UDP socket, `<cookie> <bencode>`, resend the same datagram on a 1 s timeout.

struct Ng {
    sock: UdpSocket,
    prefix: String,
    seq: u64,
    retries: u64,
    timeout: Duration,
    tries: u32,
}

impl Ng {
    fn new(addr: SocketAddrV4, timeout: Duration, tries: u32) -> io::Result<Ng> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.connect(addr)?;
        Ok(Ng {
            sock,
            prefix: format!("rtpload{}", std::process::id()),
            seq: 0,
            retries: 0,
            timeout,
            tries,
        })
    }

    fn request(&mut self, msg: &B) -> Result<B, String> {
        let mut body = Vec::new();
        enc(msg, &mut body);
        let reply = self.request_raw(&body)?;
        let mut pos = 0;
        dec(&reply, &mut pos, 0)
    }

    /// An RTPProxy command (`U ...`): its reply after the cookie, or the error it answered
    /// (`E<n>`).
    fn rtpp(&mut self, command: &str) -> Result<String, String> {
        let reply = self.request_raw(command.as_bytes())?;
        let text = String::from_utf8_lossy(&reply).trim().to_string();
        match text.strip_prefix('E') {
            Some(code) if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) => {
                Err(format!("RTPProxy error {text}"))
            }
            _ => Ok(text),
        }
    }

    /// Sends `<cookie> body`, resending on the timeout; the reply after the cookie.
    fn request_raw(&mut self, body: &[u8]) -> Result<Vec<u8>, String> {
        self.seq += 1;
        let cookie = format!("{}_{}", self.prefix, self.seq);
        let mut out = cookie.clone().into_bytes();
        out.push(b' ');
        out.extend_from_slice(body);
        let mut buf = vec![0u8; 65536];
        for attempt in 0..self.tries {
            if attempt > 0 {
                self.retries += 1;
            }
            self.sock.send(&out).map_err(|e| format!("ng send: {e}"))?;
            let deadline = Instant::now() + self.timeout;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                self.sock.set_read_timeout(Some(deadline - now)).ok();
                match self.sock.recv(&mut buf) {
                    Ok(n) => {
                        let r = &buf[..n];
                        // accept only the reply to this cookie (drop stale replies)
                        if r.len() > cookie.len()
                            && r.starts_with(cookie.as_bytes())
                            && r[cookie.len()] == b' '
                        {
                            return Ok(r[cookie.len() + 1..].to_vec());
                        }
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut =>
                    {
                        break
                    }
                    // ECONNREFUSED: nothing listens (yet); wait out the timeout like a lost datagram
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                        break;
                    }
                    Err(e) => return Err(format!("ng recv: {e}")),
                }
            }
        }
        Err(format!(
            "no reply after {} tries of {:?}",
            self.tries, self.timeout
        ))
    }

    /// Sends `msg`; Ok(reply) when result is "ok" (or "pong"), else Err(result/error-reason).
    fn command(&mut self, msg: &B) -> Result<B, String> {
        let r = self.request(msg)?;
        match get_str(&r, "result").as_deref() {
            Some("ok") | Some("pong") => Ok(r),
            Some(other) => Err(format!(
                "{other}: {}",
                get_str(&r, "error-reason").unwrap_or_default()
            )),
            None => Err("reply without result".into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SDP

fn sdp_for(ip: Ipv4Addr, port: u16, sess: u64) -> String {
    format!(
        "v=0\r\no=rtpload {sess} 1 IN IP4 {ip}\r\ns=rtpload\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The SRTP suite B takes from the relay's offer.
const SDES_SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

/// B's SDES answer: `RTP/SAVP` with `a=crypto:<tag> AES_CM_128_HMAC_SHA1_80 inline:<key>`.
fn sdes_sdp_for(ip: Ipv4Addr, port: u16, sess: u64, tag: &str, key: &[u8]) -> String {
    format!(
        "v=0\r\no=rtpload {sess} 1 IN IP4 {ip}\r\ns=rtpload\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n\
         a=crypto:{tag} {SDES_SUITE} inline:{}\r\n",
        base64(key)
    )
}

/// The tag and key of the relay's `a=crypto` line for [`SDES_SUITE`] in an SDP.
fn sdes_line(sdp: &str) -> Option<(String, Vec<u8>)> {
    sdp.lines().find_map(|line| {
        let mut words = line
            .trim_end_matches('\r')
            .strip_prefix("a=crypto:")?
            .split(' ');
        let tag = words.next()?;
        if words.next()? != SDES_SUITE {
            return None;
        }
        let key = words.next()?.strip_prefix("inline:")?.split('|').next()?;
        Some((tag.to_string(), unbase64(key)?))
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 without padding, as SDES keys are written.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Base64 with or without padding.
fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        bits = bits << 6 | B64.iter().position(|b| *b == c)? as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// An SRTP session for [`SDES_SUITE`] with `key_and_salt`.
fn srtp_session(key_and_salt: &[u8]) -> Option<SrtpSession> {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let master = MasterKey::new(suite, key_and_salt).ok()?;
    Some(SrtpSession::new(SrtpKey {
        suite,
        master,
        lifetime: None,
    }))
}

/// The media address of the first audio stream: its m= port and the c= address that applies to
/// it (media level, else session level).
/// An RTPProxy `U`/`L` reply, `PORT ADDRESS`, as the address to send to.
fn rtpp_port_address(reply: &str) -> Result<SocketAddrV4, String> {
    let mut words = reply.split_whitespace();
    let port = words.next().and_then(|p| p.parse::<u16>().ok());
    let ip = words.next().and_then(|a| a.parse::<Ipv4Addr>().ok());
    match (port, ip) {
        (Some(port), Some(ip)) if port != 0 => Ok(SocketAddrV4::new(ip, port)),
        _ => Err(format!("RTPProxy reply {reply:?} is not PORT ADDRESS")),
    }
}

fn sdp_media_addr(sdp: &str) -> Option<SocketAddrV4> {
    let mut sess_c: Option<Ipv4Addr> = None;
    let mut media_c: Option<Ipv4Addr> = None;
    let mut port: Option<u16> = None;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            if port.is_some() {
                break;
            }
            let mut f = rest.split_whitespace();
            if f.next() == Some("audio") {
                port = f
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok());
            }
        } else if let Some(rest) = line.strip_prefix("c=IN IP4 ") {
            let ip = rest
                .split(['/', ' '])
                .next()
                .and_then(|a| a.trim().parse().ok());
            if port.is_some() {
                media_c = ip;
            } else {
                sess_c = ip;
            }
        }
    }
    Some(SocketAddrV4::new(media_c.or(sess_c)?, port?))
}

// ---------------------------------------------------------------------------------------------
// /proc readings

fn clk_tck() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime+stime (seconds) of a process, all its threads included.
fn proc_cpu_s(pid: i32) -> Option<f64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &st[st.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ")": state is field 3 of the stat line, so utime (14) and stime (15) are at 11 and 12
    let ut: f64 = f.get(11)?.parse().ok()?;
    let stt: f64 = f.get(12)?.parse().ok()?;
    Some((ut + stt) / clk_tck())
}

/// Idle seconds of the whole machine (idle + iowait, all CPUs).
fn machine_idle_s() -> Option<f64> {
    let st = std::fs::read_to_string("/proc/stat").ok()?;
    let l = st.lines().next()?;
    let f: Vec<f64> = l
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((f.get(3)? + f.get(4).unwrap_or(&0.0)) / clk_tck())
}

fn ncpu() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as f64
}

/// (RcvbufErrors, SndbufErrors) of UDP from /proc/net/snmp.
fn udp_buf_errors() -> (u64, u64) {
    let st = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = st.lines().filter(|l| l.starts_with("Udp:")).collect();
    if lines.len() < 2 {
        return (0, 0);
    }
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let vals: Vec<&str> = lines[1].split_whitespace().collect();
    let get = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("RcvbufErrors"), get("SndbufErrors"))
}

/// (user, system) CPU seconds of this process.
fn self_cpu_s() -> (f64, f64) {
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Receive-queue drops per local UDP/IPv4 address, from /proc/net/udp (its `drops` column).
fn udp_socket_drops() -> HashMap<SocketAddrV4, u64> {
    let st = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let mut m = HashMap::new();
    for l in st.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(local), Some(drops)) = (f.get(1), f.last()) else {
            continue;
        };
        let Some((ip, port)) = local.split_once(':') else {
            continue;
        };
        let (Ok(ip), Ok(port), Ok(drops)) = (
            u32::from_str_radix(ip, 16),
            u16::from_str_radix(port, 16),
            drops.parse::<u64>(),
        ) else {
            continue;
        };
        // the address is printed as the raw in-memory u32 (network order read as host order)
        let ip = Ipv4Addr::from(ip.to_ne_bytes());
        *m.entry(SocketAddrV4::new(ip, port)).or_insert(0) += drops;
    }
    m
}

fn realtime_ns() -> u64 {
    let mut ts: libc::timespec = unsafe { mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct Sample {
    t: Instant,
    relay: Option<f64>,
    me: (f64, f64),
    idle: Option<f64>,
}

fn sample(pid: Option<i32>) -> Sample {
    Sample {
        t: Instant::now(),
        relay: pid.and_then(proc_cpu_s),
        me: self_cpu_s(),
        idle: machine_idle_s(),
    }
}

// ---------------------------------------------------------------------------------------------
// args

struct Args {
    ng: SocketAddrV4,
    calls: usize,
    duration: f64,
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
    port_base: u16,
    ptime_ms: u64,
    payload: usize,
    drain_ms: u64,
    warmup_s: f64,
    watch_pid: Option<i32>,
    json: Option<String>,
    label: String,
    ping: bool,
    timeout_ms: u64,
    srtp: bool,
    /// The control address speaks RTPProxy's protocol, not ng.
    rtpp: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: rtpload --ng IP:PORT --calls N --duration SECONDS [--a-ip 127.0.0.2] [--b-ip 127.0.0.3]\n\
         \x20              [--port-base 50000] [--ptime-ms 20] [--payload 160] [--drain-ms 1000]\n\
         \x20              [--warmup 1] [--watch-pid PID] [--json FILE] [--label NAME] [--timeout-ms 1000]\n\
         \x20              [--srtp | --rtpp]\n\
         \x20      rtpload --ng IP:PORT --ping [--timeout-ms 200]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        ng: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2223),
        calls: 0,
        duration: 10.0,
        a_ip: Ipv4Addr::new(127, 0, 0, 2),
        b_ip: Ipv4Addr::new(127, 0, 0, 3),
        port_base: 50000,
        ptime_ms: 20,
        payload: 160,
        drain_ms: 1000,
        warmup_s: 1.0,
        watch_pid: None,
        json: None,
        label: "relay".into(),
        ping: false,
        timeout_ms: 1000,
        srtp: false,
        rtpp: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--ping" {
            a.ping = true;
            continue;
        }
        if k == "--srtp" {
            a.srtp = true;
            continue;
        }
        if k == "--rtpp" {
            a.rtpp = true;
            continue;
        }
        if k == "-h" || k == "--help" {
            usage();
        }
        let v = it.next().unwrap_or_else(|| usage());
        let bad = |what: &str| -> ! {
            eprintln!("rtpload: bad {what}: {v}");
            std::process::exit(2)
        };
        match k.as_str() {
            "--ng" => a.ng = v.parse().unwrap_or_else(|_| bad("--ng")),
            "--calls" => a.calls = v.parse().unwrap_or_else(|_| bad("--calls")),
            "--duration" => a.duration = v.parse().unwrap_or_else(|_| bad("--duration")),
            "--a-ip" => a.a_ip = v.parse().unwrap_or_else(|_| bad("--a-ip")),
            "--b-ip" => a.b_ip = v.parse().unwrap_or_else(|_| bad("--b-ip")),
            "--port-base" => a.port_base = v.parse().unwrap_or_else(|_| bad("--port-base")),
            "--ptime-ms" => a.ptime_ms = v.parse().unwrap_or_else(|_| bad("--ptime-ms")),
            "--payload" => a.payload = v.parse().unwrap_or_else(|_| bad("--payload")),
            "--drain-ms" => a.drain_ms = v.parse().unwrap_or_else(|_| bad("--drain-ms")),
            "--warmup" => a.warmup_s = v.parse().unwrap_or_else(|_| bad("--warmup")),
            "--watch-pid" => a.watch_pid = Some(v.parse().unwrap_or_else(|_| bad("--watch-pid"))),
            "--json" => a.json = Some(v),
            "--label" => a.label = v,
            "--timeout-ms" => a.timeout_ms = v.parse().unwrap_or_else(|_| bad("--timeout-ms")),
            _ => usage(),
        }
    }
    for ip in [*a.ng.ip(), a.a_ip, a.b_ip] {
        if !ip.is_loopback() {
            eprintln!("rtpload: loopback addresses only ({ip})");
            std::process::exit(2);
        }
    }
    a.warmup_s = a.warmup_s.min(a.duration / 4.0);
    if a.rtpp && a.srtp {
        eprintln!("rtpload: --srtp needs ng (RTPProxy does not do SRTP)");
        std::process::exit(2)
    }
    if !a.ping && (a.calls == 0 || a.duration <= 0.0 || a.ptime_ms == 0 || a.payload < 16) {
        usage();
    }
    a
}

// ---------------------------------------------------------------------------------------------
// sockets

fn raise_nofile() {
    let mut rl: libc::rlimit = unsafe { mem::zeroed() };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, val: i32) -> io::Result<()> {
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &val as *const i32 as *const libc::c_void,
            mem::size_of::<i32>() as u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds `ip` on the first free port from `*next` up, skipping ports in use.
fn bind_next(ip: Ipv4Addr, next: &mut u32) -> io::Result<UdpSocket> {
    while *next <= 65535 {
        let p = *next as u16;
        *next += 1;
        match UdpSocket::bind(SocketAddrV4::new(ip, p)) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "ran out of local ports",
    ))
}

struct Rx {
    len: usize,
    src: SocketAddrV4,
    kernel_ns: Option<u64>,
}

/// One recvmsg with the kernel receive timestamp. None when nothing is queued.
fn recv_ts(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Rx>> {
    let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = &mut addr as *mut _ as *mut libc::c_void;
    msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = mem::size_of_val(&cbuf) as _;
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let mut kernel_ns = None;
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                kernel_ns = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let src = SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
        u16::from_be(addr.sin_port),
    );
    Ok(Some(Rx {
        len: n as usize,
        src,
        kernel_ns,
    }))
}

fn pct(h: &[u32], total: u64, q: f64) -> Option<usize> {
    if total == 0 {
        return None;
    }
    let target = ((total as f64 * q).ceil() as u64).max(1);
    let mut acc = 0u64;
    for (i, c) in h.iter().enumerate() {
        acc += *c as u64;
        if acc >= target {
            return Some(i);
        }
    }
    Some(h.len() - 1)
}

const MAGIC: u32 = 0x524c_4f44; // "RLOD"
const TIMER: u64 = u64::MAX;
const HIST_MAX_US: usize = 1_000_000; // 1 µs buckets up to 1 s; the last bucket is ">= 1 s"

fn main() {
    let args = parse_args();
    let mut ng = Ng::new(
        args.ng,
        Duration::from_millis(args.timeout_ms),
        if args.ping { 1 } else { 4 },
    )
    .unwrap_or_else(|e| {
        eprintln!("rtpload: ng socket: {e}");
        std::process::exit(1)
    });
    if args.ping && args.rtpp {
        match ng.rtpp("V") {
            Ok(v) if v == "20040107" => std::process::exit(0),
            other => {
                eprintln!("rtpload: V to {}: {other:?}", args.ng);
                std::process::exit(1)
            }
        }
    }
    if args.ping {
        match ng.command(&dict(vec![("command", s("ping"))])) {
            Ok(_) => std::process::exit(0),
            Err(e) => {
                eprintln!("rtpload: ping {}: {e}", args.ng);
                std::process::exit(1)
            }
        }
    }
    raise_nofile();
    let n = args.calls;
    let label = &args.label;

    // ---- sockets: sock[2i] = side A of call i, sock[2i+1] = side B of call i
    let mut next_a = args.port_base as u32;
    let mut next_b = args.port_base as u32;
    let mut socks: Vec<UdpSocket> = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let a = bind_next(args.a_ip, &mut next_a);
        let b = bind_next(args.b_ip, &mut next_b);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                socks.push(a);
                socks.push(b);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!(
                    "rtpload: bind: {e} (after {} sockets; raise `ulimit -n`?)",
                    socks.len()
                );
                std::process::exit(1);
            }
        }
    }
    let local: Vec<SocketAddrV4> = socks
        .iter()
        .map(|s| match s.local_addr().unwrap() {
            SocketAddr::V4(v) => v,
            _ => unreachable!(),
        })
        .collect();

    // ---- call setup over ng. dest[2i] = where A sends (answer reply), dest[2i+1] = where B
    // sends (offer reply). Socket k receives stream k^1 and expects it from dest[k].
    let run_tag = format!("{}-{}", std::process::id(), realtime_ns() % 1_000_000_007);
    let call_id = |i: usize| format!("rtpload-{run_tag}-{i}");
    let mut dest: Vec<Option<SocketAddrV4>> = vec![None; 2 * n];
    let mut setup_failed = 0u64;
    let mut first_err: Option<String> = None;
    let t_setup = Instant::now();
    let mut consecutive_failures = 0u32; // commands without any reply, in a row
    let mut offered = vec![false; n]; // calls the relay created (to delete at the end)
                                      // With --srtp: B's sessions, by socket: srtp_out[2i+1] protects what B sends (B's key),
                                      // srtp_in[2i+1] unprotects what B receives (the relay's key). A's stay None.
    let mut srtp_out: Vec<Option<SrtpSession>> = (0..2 * n).map(|_| None).collect();
    let mut srtp_in: Vec<Option<SrtpSession>> = (0..2 * n).map(|_| None).collect();
    let protocol = if args.rtpp { "RTPProxy" } else { "ng" };
    eprintln!("[{label}] setting up {n} calls over {protocol} {}", args.ng);
    for i in 0..n {
        if consecutive_failures >= 3 {
            // the relay stopped answering: do not wait 4 s for each of the remaining calls
            setup_failed += 1;
            continue;
        }
        let (la, lb) = (local[2 * i], local[2 * i + 1]);
        let mut offer = vec![
            ("command", s("offer")),
            ("call-id", s(&call_id(i))),
            ("from-tag", s(&format!("a{i}"))),
            ("sdp", s(&sdp_for(*la.ip(), la.port(), 1000 + i as u64))),
            ("replace", B::L(vec![s("origin"), s("session-connection")])),
            ("ICE", s("remove")),
        ];
        if args.srtp {
            offer.push(("transport-protocol", s("RTP/SAVP")));
        }
        let mut relay_line = None;
        let r = if args.rtpp {
            ng.rtpp(&format!(
                "U {} {} {} a{i};1",
                call_id(i),
                la.ip(),
                la.port()
            ))
            .and_then(|reply| rtpp_port_address(&reply))
        } else {
            ng.command(&dict(offer)).and_then(|r| {
                let sdp = get_str(&r, "sdp").unwrap_or_default();
                if args.srtp {
                    relay_line = sdes_line(&sdp);
                    if relay_line.is_none() {
                        return Err(format!("offer reply without an {SDES_SUITE} a=crypto line"));
                    }
                }
                sdp_media_addr(&sdp).ok_or_else(|| "offer reply without usable SDP".to_string())
            })
        };
        let b_dst = match r {
            Ok(x) => x,
            Err(e) => {
                setup_failed += 1;
                consecutive_failures = if e.starts_with("no reply") {
                    consecutive_failures + 1
                } else {
                    0
                };
                first_err.get_or_insert(format!("offer call {i}: {e}"));
                continue;
            }
        };
        offered[i] = true;
        let b_sdp = match &relay_line {
            Some((tag, relay_key)) => {
                // B's own key: 30 bytes that differ per call.
                let b_key: Vec<u8> = (0..30u8)
                    .map(|j| j.wrapping_mul(31) ^ (i as u8) ^ ((i >> 8) as u8).rotate_left(3))
                    .collect();
                srtp_out[2 * i + 1] = srtp_session(&b_key);
                srtp_in[2 * i + 1] = srtp_session(relay_key);
                sdes_sdp_for(*lb.ip(), lb.port(), 2000 + i as u64, tag, &b_key)
            }
            None => sdp_for(*lb.ip(), lb.port(), 2000 + i as u64),
        };
        let answer = dict(vec![
            ("command", s("answer")),
            ("call-id", s(&call_id(i))),
            ("from-tag", s(&format!("a{i}"))),
            ("to-tag", s(&format!("b{i}"))),
            ("sdp", s(&b_sdp)),
            ("replace", B::L(vec![s("origin"), s("session-connection")])),
            ("ICE", s("remove")),
        ]);
        let r = if args.rtpp {
            ng.rtpp(&format!(
                "L {} {} {} a{i};1 b{i};1",
                call_id(i),
                lb.ip(),
                lb.port()
            ))
            .and_then(|reply| rtpp_port_address(&reply))
        } else {
            ng.command(&answer).and_then(|r| {
                get_str(&r, "sdp")
                    .and_then(|x| sdp_media_addr(&x))
                    .ok_or_else(|| "answer reply without usable SDP".to_string())
            })
        };
        match r {
            Ok(a_dst) => {
                dest[2 * i] = Some(a_dst);
                dest[2 * i + 1] = Some(b_dst);
                consecutive_failures = 0;
            }
            Err(e) => {
                setup_failed += 1;
                consecutive_failures = if e.starts_with("no reply") {
                    consecutive_failures + 1
                } else {
                    0
                };
                first_err.get_or_insert(format!("answer call {i}: {e}"));
            }
        }
    }
    let setup_s = t_setup.elapsed().as_secs_f64();
    eprintln!(
        "[{label}] setup: {} ok, {setup_failed} failed in {setup_s:.2} s ({} ng retransmissions){}",
        n as u64 - setup_failed,
        ng.retries,
        first_err
            .as_ref()
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    if let Some((i, _)) = dest.iter().enumerate().find(|(_, d)| d.is_some()) {
        let c = i / 2;
        eprintln!(
            "[{label}] call 0: A {} -> relay {}, B {} -> relay {}",
            local[2 * c],
            dest[2 * c].unwrap(),
            local[2 * c + 1],
            dest[2 * c + 1].unwrap()
        );
    }
    let active: Vec<usize> = (0..2 * n).filter(|&k| dest[k].is_some()).collect();

    // ---- epoll + timer
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
    let add = |fd: RawFd, data: u64| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        };
        let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert!(r == 0, "epoll_ctl: {}", io::Error::last_os_error());
    };
    for &k in &active {
        add(socks[k].as_raw_fd(), k as u64);
    }
    let tfd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    assert!(tfd >= 0, "timerfd_create: {}", io::Error::last_os_error());
    add(tfd, TIMER);
    let ms = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    let its = libc::itimerspec {
        it_interval: ms,
        it_value: ms,
    };
    let zero_its: libc::itimerspec = unsafe { mem::zeroed() };

    // ---- per-stream state (stream s is sent from socket s)
    let slots = args.ptime_ms; // 1-ms sub-slots per packet interval
    let total_slots = (args.duration * 1000.0).round() as u64;
    let mut seq: Vec<u16> = vec![0; 2 * n];
    let mut sent: Vec<u32> = vec![0; 2 * n];
    let mut recvd: Vec<u32> = vec![0; 2 * n];
    let mut last_seq: Vec<u16> = vec![0; 2 * n];
    let mut out_of_order = 0u64;
    let mut src_mismatch = 0u64;
    let mut misrouted = 0u64;
    let mut foreign = 0u64;
    let mut recv_err = 0u64;
    let mut srtp_failures = 0u64;
    let mut send_err = 0u64;
    let mut late_slots = 0u64;
    let mut no_kernel_ts = 0u64;
    let mut hist: Vec<u32> = vec![0; HIST_MAX_US + 1];
    let mut recv_total = 0u64;
    let mut pkt = vec![0u8; 12 + args.payload];
    pkt[0] = 0x80; // V=2
    pkt[1] = 0; // PT 0 (PCMU)
    pkt[20..24].copy_from_slice(&MAGIC.to_be_bytes());
    let mut rbuf = vec![0u8; 4096];
    // streams of slot j: the active streams whose index ≡ j (mod slots)
    let slot_streams: Vec<Vec<usize>> = (0..slots)
        .map(|j| {
            active
                .iter()
                .copied()
                .filter(|&k| k as u64 % slots == j)
                .collect()
        })
        .collect();

    let udp0 = udp_buf_errors();
    let drops0 = udp_socket_drops();
    eprintln!(
        "[{label}] blasting {} streams for {} s ({} pkt/s into the relay)",
        active.len(),
        args.duration,
        active.len() as u64 * 1000 / args.ptime_ms
    );
    let t0 = Instant::now();
    unsafe { libc::timerfd_settime(tfd, 0, &its, std::ptr::null_mut()) };
    let s_start = sample(args.watch_pid);
    let mut s_warm: Option<Sample> = if args.warmup_s <= 0.0 {
        Some(sample(args.watch_pid))
    } else {
        None
    };
    let mut s_end: Option<Sample> = None;
    let mut next_slot = 0u64;
    let mut send_end: Option<Instant> = None;
    let mut sent_total = 0u64;
    let mut evs: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    loop {
        let timeout_ms = match send_end {
            None => 100,
            Some(e) => {
                let left = Duration::from_millis(args.drain_ms).saturating_sub(e.elapsed());
                if left.is_zero() || recv_total >= sent_total {
                    break;
                }
                (left.as_millis() as i32).max(1)
            }
        };
        let nev = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 256, timeout_ms) };
        if nev < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("epoll_wait: {e}");
        }
        for ev in &evs[..nev as usize] {
            let k = ev.u64;
            if k == TIMER {
                let mut x = [0u8; 8];
                unsafe { libc::read(tfd, x.as_mut_ptr() as *mut libc::c_void, 8) };
                continue;
            }
            let k = k as usize;
            match recv_ts(socks[k].as_raw_fd(), &mut rbuf) {
                Ok(None) => {}
                Err(_) => recv_err += 1,
                Ok(Some(rx)) => {
                    let now_ns = match rx.kernel_ns {
                        Some(t) => t,
                        None => {
                            no_kernel_ts += 1;
                            realtime_ns()
                        }
                    };
                    let decrypted;
                    let b = match srtp_in[k].as_mut() {
                        Some(session) => match session.unprotect(&rbuf[..rx.len], false) {
                            Ok(plain) => {
                                decrypted = plain;
                                &decrypted[..]
                            }
                            Err(_) => {
                                srtp_failures += 1;
                                continue;
                            }
                        },
                        None => &rbuf[..rx.len],
                    };
                    if b.len() < 28 || u32::from_be_bytes(b[20..24].try_into().unwrap()) != MAGIC {
                        foreign += 1;
                        continue;
                    }
                    let stream = u32::from_be_bytes(b[24..28].try_into().unwrap()) as usize;
                    if stream != (k ^ 1) {
                        misrouted += 1;
                        continue;
                    }
                    if Some(rx.src) != dest[k] {
                        src_mismatch += 1;
                    }
                    let sq = u16::from_be_bytes([b[2], b[3]]);
                    if recvd[stream] > 0 && sq != last_seq[stream].wrapping_add(1) {
                        out_of_order += 1;
                    }
                    last_seq[stream] = sq;
                    recvd[stream] += 1;
                    recv_total += 1;
                    let sent_ns = u64::from_be_bytes(b[12..20].try_into().unwrap());
                    let us = (now_ns.saturating_sub(sent_ns) / 1000) as usize;
                    hist[us.min(HIST_MAX_US)] += 1;
                }
            }
        }
        if send_end.is_some() {
            continue;
        }
        // ---- sends due by now
        let now_slot = (t0.elapsed().as_nanos() / 1_000_000) as u64;
        if s_warm.is_none() && t0.elapsed().as_secs_f64() >= args.warmup_s {
            s_warm = Some(sample(args.watch_pid));
        }
        while next_slot <= now_slot && next_slot < total_slots {
            if now_slot >= next_slot + 2 {
                late_slots += 1;
            }
            let j = (next_slot % slots) as usize;
            for &st in &slot_streams[j] {
                let d = dest[st].unwrap();
                pkt[2..4].copy_from_slice(&seq[st].to_be_bytes());
                pkt[4..8].copy_from_slice(
                    &(u32::from(seq[st]).wrapping_mul(8 * args.ptime_ms as u32)).to_be_bytes(),
                );
                pkt[8..12].copy_from_slice(&(0x1000_0000u32 + st as u32).to_be_bytes());
                pkt[12..20].copy_from_slice(&realtime_ns().to_be_bytes());
                pkt[24..28].copy_from_slice(&(st as u32).to_be_bytes());
                let protected;
                let wire = match srtp_out[st].as_mut() {
                    Some(session) => match session.protect(&pkt, false) {
                        Ok(p) => {
                            protected = p;
                            &protected[..]
                        }
                        Err(_) => {
                            srtp_failures += 1;
                            seq[st] = seq[st].wrapping_add(1);
                            continue;
                        }
                    },
                    None => &pkt[..],
                };
                match socks[st].send_to(wire, d) {
                    Ok(_) => {
                        sent[st] += 1;
                        sent_total += 1;
                    }
                    Err(_) => send_err += 1,
                }
                seq[st] = seq[st].wrapping_add(1);
            }
            next_slot += 1;
        }
        if next_slot >= total_slots {
            send_end = Some(Instant::now());
            s_end = Some(sample(args.watch_pid));
            unsafe { libc::timerfd_settime(tfd, 0, &zero_its, std::ptr::null_mut()) };
        }
    }
    let send_wall = send_end
        .map(|e| e.duration_since(t0))
        .unwrap_or_default()
        .as_secs_f64();
    let udp1 = udp_buf_errors();
    let drops1 = udp_socket_drops();
    let drops_at = |addrs: &mut dyn Iterator<Item = SocketAddrV4>| -> u64 {
        addrs
            .map(|a| {
                drops1
                    .get(&a)
                    .unwrap_or(&0)
                    .saturating_sub(*drops0.get(&a).unwrap_or(&0))
            })
            .sum()
    };
    let relay_addrs: std::collections::HashSet<SocketAddrV4> =
        dest.iter().flatten().copied().collect();
    let relay_drops = drops_at(&mut relay_addrs.iter().copied());
    let rtpload_drops = drops_at(&mut active.iter().map(|&k| local[k]));
    let s_end = s_end.unwrap_or_else(|| sample(args.watch_pid));
    let s_warm = s_warm.unwrap_or_else(|| sample(args.watch_pid));
    let drained_ms = send_end.map(|e| e.elapsed().as_millis()).unwrap_or(0);
    eprintln!(
        "[{label}] blast done: {sent_total} sent, {recv_total} received ({drained_ms} ms drain)"
    );

    // ---- delete every call
    let t_del = Instant::now();
    let mut delete_failed = 0u64;
    let mut deleted = 0u64;
    for (i, _) in offered.iter().enumerate().filter(|(_, &o)| o) {
        if delete_failed >= 10 {
            continue;
        }
        let del = dict(vec![
            ("command", s("delete")),
            ("call-id", s(&call_id(i))),
            ("from-tag", s(&format!("a{i}"))),
        ]);
        let result = if args.rtpp {
            ng.rtpp(&format!("D {} a{i};1", call_id(i))).map(|_| ())
        } else {
            ng.command(&del).map(|_| ())
        };
        if let Err(e) = result {
            // after 10 failures the rest are not tried (counted as failed below)
            delete_failed += 1;
            if delete_failed == 1 {
                eprintln!("[{label}] delete call {i}: {e}");
            }
        } else {
            deleted += 1;
        }
    }
    let delete_failed = offered.iter().filter(|&&o| o).count() as u64 - deleted;
    let delete_s = t_del.elapsed().as_secs_f64();
    eprintln!("[{label}] deleted {deleted} calls in {delete_s:.2} s ({delete_failed} failed)");

    // ---- report
    let mut streams_with_loss = 0u64;
    let mut streams_zero = 0u64;
    let mut dup_or_extra = 0u64;
    let mut worst = 0f64;
    for &st in &active {
        if recvd[st] < sent[st] {
            streams_with_loss += 1;
            worst = worst.max(1.0 - recvd[st] as f64 / sent[st] as f64);
        } else if recvd[st] > sent[st] {
            dup_or_extra += (recvd[st] - sent[st]) as u64;
        }
        if recvd[st] == 0 {
            streams_zero += 1;
        }
    }
    let loss = if sent_total > 0 {
        1.0 - recv_total.min(sent_total) as f64 / sent_total as f64
    } else {
        0.0
    };
    let p = |q| {
        pct(&hist, recv_total, q)
            .map(|v| v.to_string())
            .unwrap_or("null".into())
    };
    let max_us = hist
        .iter()
        .rposition(|&c| c > 0)
        .map(|v| v.to_string())
        .unwrap_or("null".into());
    let win = s_end.t.duration_since(s_warm.t).as_secs_f64().max(1e-9);
    let cpu_pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a) / win * 100.0),
        _ => None,
    };
    let relay_cpu = cpu_pct(s_warm.relay, s_end.relay);
    let self_user = (s_end.me.0 - s_warm.me.0) / win * 100.0;
    let self_sys = (s_end.me.1 - s_warm.me.1) / win * 100.0;
    let self_cpu = self_user + self_sys;
    let busy = cpu_pct(s_warm.idle, s_end.idle).map(|idle| ncpu() * 100.0 - idle);
    let other = busy.map(|b| (b - relay_cpu.unwrap_or(0.0) - self_cpu).max(0.0));
    let _ = s_start;
    let streams = active.len();
    let f1 = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or("null".into());

    let mut kv: Vec<(&str, String)> = vec![
        ("label", format!("\"{label}\"")),
        ("calls", n.to_string()),
        ("calls_set_up", (n as u64 - setup_failed).to_string()),
        ("setup_failed", setup_failed.to_string()),
        ("setup_s", format!("{setup_s:.3}")),
        ("ng_retransmissions", ng.retries.to_string()),
        ("streams", streams.to_string()),
        ("ptime_ms", args.ptime_ms.to_string()),
        ("rtp_bytes", (12 + args.payload).to_string()),
        ("send_wall_s", format!("{send_wall:.3}")),
        ("sent", sent_total.to_string()),
        (
            "sent_pps",
            format!("{:.0}", sent_total as f64 / send_wall.max(1e-9)),
        ),
        ("send_errors", send_err.to_string()),
        ("late_slots", late_slots.to_string()),
        ("slots", total_slots.to_string()),
        ("received", recv_total.to_string()),
        ("loss_pct", format!("{:.4}", loss * 100.0)),
        ("streams_with_loss", streams_with_loss.to_string()),
        ("streams_zero_rx", streams_zero.to_string()),
        ("worst_stream_loss_pct", format!("{:.3}", worst * 100.0)),
        ("duplicates", dup_or_extra.to_string()),
        ("out_of_order", out_of_order.to_string()),
        ("src_mismatch", src_mismatch.to_string()),
        ("misrouted", misrouted.to_string()),
        ("foreign", foreign.to_string()),
        ("recv_errors", recv_err.to_string()),
        ("srtp", u8::from(args.srtp).to_string()),
        ("srtp_failures", srtp_failures.to_string()),
        ("no_kernel_ts", no_kernel_ts.to_string()),
        ("delay_p50_us", p(0.5)),
        ("delay_p99_us", p(0.99)),
        ("delay_p999_us", p(0.999)),
        ("delay_max_us", max_us),
        ("cpu_window_s", format!("{win:.2}")),
        ("relay_cpu_pct", f1(relay_cpu)),
        (
            "relay_cpu_per_1000_streams",
            f1(relay_cpu.map(|c| c * 1000.0 / streams.max(1) as f64)),
        ),
        ("rtpload_cpu_pct", format!("{self_cpu:.1}")),
        ("rtpload_user_pct", format!("{self_user:.1}")),
        ("rtpload_sys_pct", format!("{self_sys:.1}")),
        ("machine_busy_pct", f1(busy)),
        ("other_load_pct", f1(other)),
        ("udp_rcvbuf_errors", (udp1.0 - udp0.0).to_string()),
        ("udp_sndbuf_errors", (udp1.1 - udp0.1).to_string()),
        ("relay_socket_drops", relay_drops.to_string()),
        ("rtpload_socket_drops", rtpload_drops.to_string()),
        ("delete_failed", delete_failed.to_string()),
        ("delete_s", format!("{delete_s:.3}")),
    ];
    if let Some(e) = &first_err {
        kv.push((
            "first_error",
            format!("\"{}\"", e.replace(['"', '\\'], "'")),
        ));
    }
    let mut line = String::from("RESULT");
    for (k, v) in &kv {
        let v = v.trim_matches('"').replace(' ', "_");
        let _ = write!(line, " {k}={v}");
    }
    println!("{line}");
    if let Some(path) = &args.json {
        let body: Vec<String> = kv.iter().map(|(k, v)| format!("  \"{k}\": {v}")).collect();
        std::fs::write(path, format!("{{\n{}\n}}\n", body.join(",\n"))).expect("write json");
    }
    unsafe {
        libc::close(tfd);
        libc::close(ep);
    }
}
