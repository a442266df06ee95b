//! What the `proxy_restart*` system tests share: a platform of a real `redis-server`, two
//! `anchorage relay`s and an `anchorage proxy` writing its calls to that Redis; reading the API,
//! SIPp's messages and the stored records; a raw UDP SIP endpoint for a party's second address.
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anchorage_testkit::redis::RedisServer;
use anchorage_testkit::sipp::{SippProcess, SippRun};
use anchorage_testkit::{http, require_tool, AnchorageProxy, AnchorageRelay};

/// A SIPp scenario of `tests/sipp`.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// The `anchorage` binary under test.
pub fn bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_anchorage"))
}

/// The `n`-th (from 1) received message starting with `start`.
pub fn nth_received(p: &SippProcess, start: &str, n: usize, timeout: Duration) -> String {
    p.nth_received(start, n, timeout).unwrap_or_else(|| {
        panic!(
            "no {start} number {n} after {timeout:?}; received: {:#?}",
            p.received_so_far()
        )
    })
}

/// How many received messages start with `start`.
pub fn count_received(p: &SippProcess, start: &str) -> usize {
    p.received_so_far()
        .iter()
        .filter(|m| m.starts_with(start))
        .count()
}

/// A header's value in a message (the first one; `name` without the colon).
pub fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or("")
}

/// The CSeq header's value in a message.
pub fn cseq(message: &str) -> &str {
    header(message, "CSeq")
}

/// The CSeq number of a message.
pub fn cseq_number(message: &str) -> u32 {
    cseq(message)
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CSeq number in {message}"))
}

/// The Request-URI of a request.
pub fn request_uri(message: &str) -> &str {
    message.split(' ').nth(1).unwrap_or("")
}

/// The JSON a GET of the API answers.
pub fn get(p: &AnchorageProxy, path: &str) -> serde_json::Value {
    let (status, body) = http(p.api, "GET", path, "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// `/v1/calls/{id}`.
pub fn call_view(p: &AnchorageProxy, call_id: &str) -> serde_json::Value {
    get(p, &format!("/v1/calls/{call_id}"))
}

/// The relay a call's media is anchored on, as `/v1/calls/{id}` shows it.
pub fn relay_of(p: &AnchorageProxy, call_id: &str) -> String {
    let call = call_view(p, call_id);
    call["dialogs"][0]["media"]["relay"]
        .as_str()
        .unwrap_or_else(|| panic!("{call}"))
        .to_string()
}

/// The Call-IDs of the calls the proxy holds (`/v1/calls`).
pub fn call_ids(p: &AnchorageProxy) -> Vec<String> {
    let calls = get(p, "/v1/calls");
    calls["calls"]
        .as_array()
        .unwrap_or_else(|| panic!("{calls}"))
        .iter()
        .filter_map(|c| c["call_id"].as_str().map(str::to_string))
        .collect()
}

/// The Call-ID of the one call the proxy holds.
pub fn the_call_id(p: &AnchorageProxy) -> String {
    let ids = call_ids(p);
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

/// Waits until `ready` holds.
pub fn eventually(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A proxy node `edge-1` with the Redis store, relays `relay-a` and `relay-b`.
pub struct Platform {
    /// The store.
    pub redis: RedisServer,
    /// `relay-a`, where calls are anchored first (it comes first in the set).
    pub a: AnchorageRelay,
    /// `relay-b`.
    pub b: AnchorageRelay,
    /// The proxy.
    pub p: AnchorageProxy,
    /// What the proxy processes killed so far logged.
    killed_logs: String,
}

impl Drop for Platform {
    /// A failed test shows what the proxy (before and after its restarts) logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- proxy log before its restarts:\n{}\n--- proxy log:\n{}",
                self.killed_logs,
                self.p.daemon.log()
            );
        }
    }
}

impl Platform {
    /// Starts Redis, two relays and the proxy; checks the store is up.
    pub fn start() -> Platform {
        let redis = RedisServer::start(None);
        let a = AnchorageRelay::start(bin(), &[]);
        let b = AnchorageRelay::start(bin(), &[]);
        let p = AnchorageProxy::start(
            bin(),
            &[a.ng, b.ng],
            // No relay dies in these tests: a long silence window (4 s) keeps a loaded
            // machine's scheduling stalls from looking like a dead relay (and moving calls).
            &format!(
                "\n[node]\nid = \"edge-1\"\n\n[cluster]\nstore = \"{}\"\n\n\
                 [proxy.relay_health]\ndown_after = 40\n",
                redis.url()
            ),
        );
        let health = get(&p, "/v1/health");
        assert_eq!(health["store"]["up"], true, "{health}");
        assert_eq!(health["relays_up"], 2, "{health}");
        Platform {
            redis,
            a,
            b,
            p,
            killed_logs: String::new(),
        }
    }

    /// The relays of a move of `call_id`: the one it is on (usually `relay-a`, the least
    /// loaded first; `relay-b` when a starved `relay-a` did not answer the offer in time) and
    /// the other one, as (name, relay) each.
    pub fn move_relays(&self, call_id: &str) -> [(&'static str, &AnchorageRelay); 2] {
        match relay_of(&self.p, call_id).as_str() {
            "relay-a" => [("relay-a", &self.a), ("relay-b", &self.b)],
            "relay-b" => [("relay-b", &self.b), ("relay-a", &self.a)],
            other => panic!("{call_id} on {other}"),
        }
    }

    /// Moves `call_id` to the other relay (draining the one it is on) and waits until it is
    /// there; the names of the relay it left and the one it is on now.
    pub fn move_call(&self, call_id: &str) -> (&'static str, &'static str) {
        let [(from, _), (to, _)] = self.move_relays(call_id);
        self.drain_relay(from, call_id, to);
        (from, to)
    }

    /// Drains `relay` (a move of its calls) and waits until `call_id` is on `to`.
    pub fn drain_relay(&self, relay: &str, call_id: &str, to: &str) {
        self.drain(relay);
        self.wait_relay(call_id, to);
    }

    /// Drains `relay`: its calls are moved.
    pub fn drain(&self, relay: &str) {
        let (status, body) = http(self.p.api, "POST", &format!("/v1/relays/{relay}/drain"), "");
        assert_eq!(status, 200, "{body}");
    }

    /// Gives drained `relay` new calls again (a drain outlives a restart: the store keeps it).
    pub fn undrain(&self, relay: &str) {
        let (status, body) = http(
            self.p.api,
            "POST",
            &format!("/v1/relays/{relay}/undrain"),
            "",
        );
        assert_eq!(status, 200, "{body}");
    }

    /// Waits until `call_id` is on relay `to`.
    pub fn wait_relay(&self, call_id: &str, to: &str) {
        eventually(
            Duration::from_secs(10),
            &format!("the call on {to}"),
            || relay_of(&self.p, call_id) == to,
        );
    }

    /// Waits until the store has every change (before a crash).
    pub fn store_caught_up(&self) {
        eventually(Duration::from_secs(5), "the store caught up", || {
            get(&self.p, "/v1/health")["store"]["dirty_calls"] == 0
        });
    }

    /// `kill -9` and start of the proxy; checks it loaded `calls` calls from the store.
    pub fn kill_and_restart_proxy(&mut self, calls: usize) {
        self.kill_proxy();
        self.start_proxy_again(calls);
    }

    /// `kill -9` of the proxy (keeping what it logged).
    pub fn kill_proxy(&mut self) {
        self.p.kill_9();
        self.killed_logs.push_str(&self.p.daemon.log());
    }

    /// Starts the proxy again after a `kill_9`; checks it loaded `calls` calls from the store.
    pub fn start_proxy_again(&mut self, calls: usize) {
        self.p.start_again();
        let loaded = format!("{calls} calls loaded from the store");
        assert!(
            self.p.daemon.log().contains(&loaded),
            "{}",
            self.p.daemon.log()
        );
    }

    /// Waits until neither relay holds a session of `call_id` and the proxy and the store
    /// forgot it (after its BYE).
    pub fn assert_call_gone(&self, call_id: &str) {
        eventually(Duration::from_secs(5), "the relay sessions deleted", || {
            !anchorage_testkit::ng_list(self.a.ng).contains(&call_id.to_string())
                && !anchorage_testkit::ng_list(self.b.ng).contains(&call_id.to_string())
        });
        eventually(Duration::from_secs(5), "the record deleted", || {
            let h = get(&self.p, "/v1/health");
            h["store"]["live_calls"] == 0 && h["store"]["dirty_calls"] == 0
        });
        let (status, _) = http(self.p.api, "GET", &format!("/v1/calls/{call_id}"), "");
        assert_eq!(status, 404);
        assert_eq!(
            self.redis_cli(&["EXISTS", &format!("anc:call:{{{call_id}}}")]),
            "0"
        );
    }

    /// How many call records Redis holds (`anc:call:*` keys).
    pub fn stored_calls(&self) -> usize {
        self.redis_cli(&["--scan", "--pattern", "anc:call:*"])
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    }

    /// `redis-cli` against the store: its output, trimmed.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        redis_cli(self.redis.port, args)
    }

    /// The record of `call_id` as stored in Redis (its `rec` field), and the highest CSeq
    /// numbers the proxy may have sent towards the callee and the caller: the record's
    /// reservations or the ones made apart from it (`cse`, `csr`), whichever is higher, as a
    /// restarted node reads them.
    pub fn stored(&self, call_id: &str) -> (serde_json::Value, u32, u32) {
        let key = format!("anc:call:{{{call_id}}}");
        let rec = self.redis_cli(&["HGET", &key, "rec"]);
        let record: serde_json::Value =
            serde_json::from_str(&rec).unwrap_or_else(|e| panic!("{key}: {e}: {rec:?}"));
        let number = |field: &str, in_record: &str| -> u32 {
            let apart = self.redis_cli(&["HGET", &key, field]).parse().unwrap_or(0);
            let kept = record["cseq_reserved"][in_record].as_u64().unwrap_or(0);
            apart.max(u32::try_from(kept).unwrap_or(u32::MAX))
        };
        let (to_callee, to_caller) = (number("cse", "to_callee"), number("csr", "to_caller"));
        (record, to_callee, to_caller)
    }
}

/// `redis-cli` against a Redis on 127.0.0.1:`port`: its output, trimmed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new(require_tool("redis-cli", "redis-tools"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare UDP SIP endpoint on 127.0.0.1 (a party's second address): receives requests and
/// answers them with the headers a response copies (RFC 3261 §8.2.6.2).
pub struct UdpEndpoint {
    /// Its socket.
    pub socket: UdpSocket,
}

impl UdpEndpoint {
    /// On a free port.
    pub fn bind() -> UdpEndpoint {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        UdpEndpoint { socket }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("its address")
    }

    /// The next datagram within `timeout`, as text, and its source; `None` on timeout.
    pub fn recv(&self, timeout: Duration) -> Option<(String, SocketAddr)> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("a read timeout");
        let mut buf = [0u8; 65535];
        let (n, from) = self.socket.recv_from(&mut buf).ok()?;
        Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
    }

    /// Waits up to `timeout` for a request starting with `start` (skipping anything else).
    pub fn request(&self, start: &str, timeout: Duration) -> (String, SocketAddr) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {start} at {} within {timeout:?}",
                self.addr()
            );
            if let Some((m, from)) = self.recv(left) {
                if m.starts_with(start) {
                    return (m, from);
                }
            }
        }
    }

    /// Answers `request` (received from `to`) with `status` (e.g. `"200 OK"`), no body.
    pub fn respond(&self, request: &str, to: SocketAddr, status: &str) {
        self.send_response(request, to, status, "");
    }

    /// Answers an INVITE with an SDP offer (received from `to`) with 200, `contact` as its
    /// Contact and an answer of this socket's address (PCMU, `o=callee 1 4`).
    pub fn answer_offer(&self, invite: &str, to: SocketAddr, contact: &str) {
        let addr = self.addr();
        let sdp = format!(
            "v=0\r\no=callee 1 4 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            ip = addr.ip(),
            port = addr.port() + 2,
        );
        let extra = format!(
            "Contact: <{contact}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        self.send_response(invite, to, "200 OK", &extra);
    }

    /// Sends a response to `request` copying its Via, From, To, Call-ID and CSeq, then
    /// `rest` (headers and body; `Content-Length: 0` and the blank line when empty).
    fn send_response(&self, request: &str, to: SocketAddr, status: &str, rest: &str) {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for line in request.lines().skip(1) {
            let name = line.split(':').next().unwrap_or("").trim();
            let copied = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq"]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h));
            if copied {
                out.push_str(line.trim_end());
                out.push_str("\r\n");
            }
            if line.trim().is_empty() {
                break;
            }
        }
        if rest.is_empty() {
            out.push_str("Content-Length: 0\r\n\r\n");
        } else {
            out.push_str(rest);
        }
        self.socket
            .send_to(out.as_bytes(), to)
            .expect("the response sent");
    }
}

/// A call between two SIPp parties through the proxy at `proxy`: the callee runs `uas` with
/// `uas_args`, the caller `uac` with `uac_args` (both one call, each with an RTP port of its own
/// as the `rtp_port` key); returned once the callee has the ACK of the INVITE's 200.
pub struct Parties {
    /// The caller (SIPp UAC).
    pub caller: SippProcess,
    /// The callee (SIPp UAS).
    pub callee: SippProcess,
    /// The caller's SIP address (where its packets come from).
    pub caller_addr: SocketAddr,
    /// The callee's SIP address.
    pub callee_addr: SocketAddr,
    _rtp: [UdpSocket; 2],
}

impl Parties {
    /// Starts both and waits for the call to be set up.
    pub fn call(
        proxy: SocketAddr,
        uac: &str,
        uac_args: &[&str],
        uas: &str,
        uas_args: &[&str],
    ) -> Parties {
        use anchorage_testkit::{free_udp_port, sipp::Sipp, LOCALHOST};
        let rtp = [
            UdpSocket::bind("127.0.0.1:0").expect("a UDP socket"),
            UdpSocket::bind("127.0.0.1:0").expect("a UDP socket"),
        ];
        let rtp_port = |i: usize| rtp[i].local_addr().expect("its address").port().to_string();
        let callee_addr = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
        let mut callee = Sipp::new("uas", &scenario(uas), callee_addr)
            .args(["-m", "1", "-key", "rtp_port", &rtp_port(1)])
            .args(uas_args)
            .spawn();
        std::thread::sleep(Duration::from_millis(300));
        let caller_addr = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
        let mut caller = Sipp::new("uac", &scenario(uac), caller_addr)
            .args(["-m", "1", "-timeout", "60s", "-timeout_error"])
            .args(["-key", "rtp_port", &rtp_port(0)])
            .args(["-rsa", &proxy.to_string()])
            .args(uac_args)
            .args([callee_addr.to_string()])
            .spawn();
        if callee
            .nth_received("ACK ", 1, Duration::from_secs(10))
            .is_none()
        {
            let (callee_received, caller_received) =
                (callee.received_so_far(), caller.received_so_far());
            panic!(
                "no call set up in 10 s; the callee received {callee_received:#?}\n\
                 the caller {caller_received:#?}\nthe callee said {}\nthe caller said {}",
                callee.finish(Duration::from_millis(10)).output,
                caller.finish(Duration::from_millis(10)).output
            );
        }
        Parties {
            caller,
            callee,
            caller_addr,
            callee_addr,
            _rtp: rtp,
        }
    }

    /// Both SIPp runs ended with success (each scenario checks the CSeqs it got back); what
    /// the caller and the callee exchanged.
    pub fn finish(&mut self, timeout: Duration) -> (SippRun, SippRun) {
        let caller = self.caller.finish(timeout);
        caller.assert_success();
        let callee = self.callee.finish(timeout);
        callee.assert_success();
        (caller, callee)
    }
}

/// Asserts that the stored record of a call (`Platform::stored`) says what `/v1/calls/{id}`
/// (`view`) shows of its one dialog: tags, remote targets, sources, transports, last CSeqs,
/// route set, CSeq offsets, relay and set, and per leg the SDPs and the `o=` sent.
pub fn assert_record_is_view(record: &serde_json::Value, view: &serde_json::Value) {
    use serde_json::Value;
    let d = &record["dialogs"][0];
    let v = &view["dialogs"][0];
    assert_eq!(
        record["dialogs"].as_array().map(Vec::len),
        Some(1),
        "{record}"
    );
    assert_eq!(view["dialogs"].as_array().map(Vec::len), Some(1), "{view}");
    let context = format!("record {record:#}\nview {view:#}");
    assert_eq!(record["call_id"], view["call_id"], "{context}");
    assert_eq!(d["state"], v["state"], "{context}");
    assert_eq!(d["caller_tag"], v["caller"]["tag"], "{context}");
    assert_eq!(d["callee_tag"], v["callee"]["tag"], "{context}");
    for leg in ["caller", "callee"] {
        for field in ["tag", "remote_target", "source", "transport", "last_cseq"] {
            assert_eq!(d[leg][field], v[leg][field], "{leg}.{field}: {context}");
        }
    }
    assert_eq!(d["record_route"], v["record_route"], "{context}");
    assert!(
        d["record_route"].as_array().is_some_and(|r| !r.is_empty()),
        "{context}"
    );
    for field in ["to_callee", "to_caller", "own_to_callee", "own_to_caller"] {
        assert_eq!(
            d["renumber"][field], v["cseq_offsets"][field],
            "{field}: {context}"
        );
    }
    let (m, mv) = (&record["media"], &v["media"]);
    assert_eq!(m["node"], mv["relay"], "{context}");
    assert_eq!(m["set"], mv["set"], "{context}");
    for leg in ["caller", "callee"] {
        assert_eq!(
            m[leg]["received"], mv[leg]["sdp_received"],
            "{leg}: {context}"
        );
        assert_eq!(m[leg]["sent"], mv[leg]["sdp_sent"], "{leg}: {context}");
        let o = &m[leg]["origin_sent"];
        let shown = Value::Array(vec![
            o["username"].clone(),
            o["session_id"].clone(),
            o["version"].clone(),
        ]);
        assert!(!o.is_null(), "{leg}: no o= in {context}");
        assert_eq!(shown, mv[leg]["origin_sent"], "{leg} o=: {context}");
    }
}

/// The numbers a node that takes a stored call back numbers above, towards (callee, caller):
/// what the dead node had reserved (it may have used any of it), and the last number each
/// party saw from the other side plus the margin for requests the record may have missed
/// (`anchorage_proxy::dialog::UNSEEN_CSEQ_MARGIN`).
pub fn floors(record: &serde_json::Value, to_callee: u32, to_caller: u32) -> (u32, u32) {
    let d = &record["dialogs"][0];
    let floor = |direction: &str, reserved: u32, sender: &str| {
        let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as u32;
        let seen = (number(&d[sender]["last_cseq"])
            + number(&d["renumber"][format!("to_{direction}")]))
        .max(number(&d["renumber"][format!("own_to_{direction}")]));
        reserved.max(seen + anchorage_proxy::dialog::UNSEEN_CSEQ_MARGIN)
    };
    (
        floor("callee", to_callee, "caller"),
        floor("caller", to_caller, "callee"),
    )
}

/// A stored record as a node takes it back (and `/v1/calls/{id}` then shows it): its own
/// numbers resume at the [`floors`] and each party's requests are shifted to stay above them.
pub fn resumed(record: &serde_json::Value, to_callee: u32, to_caller: u32) -> serde_json::Value {
    let (floor_callee, floor_caller) = floors(record, to_callee, to_caller);
    let mut out = record.clone();
    let d = &mut out["dialogs"][0];
    for (direction, reserved, sender) in [
        ("callee", floor_callee, "caller"),
        ("caller", floor_caller, "callee"),
    ] {
        let own = d["renumber"][format!("own_to_{direction}")]
            .as_u64()
            .unwrap_or(0);
        if u64::from(reserved) > own {
            let last = d[sender]["last_cseq"].as_u64().unwrap_or(0);
            let offset = d["renumber"][format!("to_{direction}")]
                .as_u64()
                .unwrap_or(0);
            d["renumber"][format!("own_to_{direction}")] = reserved.into();
            d["renumber"][format!("to_{direction}")] =
                offset.max(u64::from(reserved).saturating_sub(last)).into();
        }
    }
    out
}

// --- What issue 15 asks of every party after every scenario ---

/// `(number, method)` of a message's CSeq.
pub fn cseq_of(message: &str) -> (u32, String) {
    let value = cseq(message);
    let mut words = value.split_whitespace();
    let number = words
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CSeq in {message}"));
    (number, words.next().unwrap_or("").to_string())
}

/// Whether a message is a request (not a response).
pub fn is_request(message: &str) -> bool {
    !message.starts_with("SIP/2.0 ")
}

/// What the issue asks of every party after every scenario, from what it `received` and
/// `sent`: the CSeqs of the requests it received (ACKs aside) strictly increase; each INVITE
/// it answered 2xx got its ACK, and it ACKed each 2xx to an INVITE of its own.
pub fn assert_party_rules(who: &str, received: &[String], sent: &[String]) {
    let requests: Vec<(u32, String)> = received
        .iter()
        .filter(|m| is_request(m) && !m.starts_with("ACK "))
        .map(|m| cseq_of(m))
        .collect();
    assert!(
        requests.windows(2).all(|w| w[0].0 < w[1].0),
        "{who}: the CSeqs it received do not increase: {requests:?}"
    );
    let acks = |list: &[String], n: u32| {
        list.iter()
            .filter(|m| m.starts_with("ACK ") && cseq_of(m) == (n, "ACK".to_string()))
            .count()
    };
    // The 2xx it sent to INVITEs: each ACKed (retransmitted 2xx share their CSeq).
    for answered in sent
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 2") && cseq_of(m).1 == "INVITE")
    {
        let (n, _) = cseq_of(answered);
        assert!(
            acks(received, n) >= 1,
            "{who}: its 2xx to INVITE {n} got no ACK; received {received:#?}"
        );
    }
    // The 2xx it received to its INVITEs: each ACKed.
    for ok in received
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 2") && cseq_of(m).1 == "INVITE")
    {
        let (n, _) = cseq_of(ok);
        assert!(
            acks(sent, n) >= 1,
            "{who}: it did not ACK the 2xx to its INVITE {n}; sent {sent:#?}"
        );
    }
}

/// The `o=` of the SDPs a party received (each message once: a retransmission is no change)
/// keeps its username and session id, and its version goes up by one from each to the next:
/// every SDP it received here is a change (a move, a hold, an answer).
pub fn assert_origin_rules(who: &str, received: &[String]) {
    let mut seen = Vec::new();
    let mut origins: Vec<(String, String, u64)> = Vec::new();
    for m in received {
        let key = (
            m.lines().next().unwrap_or("").to_string(),
            cseq(m).to_string(),
        );
        let Some(o) = m.lines().find_map(|l| l.trim().strip_prefix("o=")) else {
            continue;
        };
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let words: Vec<&str> = o.split_whitespace().collect();
        let version = words
            .get(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{who}: no version in o={o}"));
        origins.push((words[0].to_string(), words[1].to_string(), version));
    }
    assert!(origins.len() >= 3, "{who}: {origins:?}");
    for pair in origins.windows(2) {
        let ((user, session, version), (next_user, next_session, next_version)) =
            (&pair[0], &pair[1]);
        assert!(
            user == next_user && session == next_session && *next_version == version + 1,
            "{who}: the o= lines it received: {origins:?}"
        );
    }
}
