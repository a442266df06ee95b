//! Helpers of the proxy node's scenario tests (`forwarding.rs`, `anchoring.rs`,
//! `reanchoring.rs`): a proxy on a 127.0.0.1 listener built from a TOML configuration, on a
//! wall-clock epoch with time advanced by hand; datagrams from text; relays answered by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_proxy::node::{CallRecord, CoreConfig, Datagram, Listener, Output, Proxy, Transmit};
use anchorage_proxy::routing::Router;
use anchorage_proxy::transaction::TimerConfig;
use anchorage_proxy::Transport;
use anchorage_sip::{HeaderName, Message, Method, RequestBuilder};
use bytes::Bytes;

pub use super::{ANSWER_SDP, OFFER_SDP};

/// The tests' time origin (the only wall-clock read; every later time is derived from it).
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}

/// A proxy with the `[proxy]` sections of `config` (TOML), node id `n1`, one UDP listener on
/// 127.0.0.1:5060, default timers, seed 7, started at [`epoch`].
pub fn proxy(config: &str) -> Proxy {
    proxy_with(core_config(config))
}

/// A proxy with this core configuration (from [`core_config`], changed by the test), seed 7,
/// started at [`epoch`].
pub fn proxy_with(config: CoreConfig) -> Proxy {
    Proxy::new(
        config,
        7,
        anchorage_proxy::node::Now {
            mono: epoch(),
            unix_us: 1_800_000_000_000_000,
        },
    )
}

/// The core configuration of [`proxy`].
pub fn core_config(config: &str) -> CoreConfig {
    let cfg = anchorage_config::parse(config).unwrap();
    let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    {
        CoreConfig {
            node_id: "n1".into(),
            listeners: vec![Listener {
                transport: Transport::Udp,
                local,
                advertise_host: "127.0.0.1".into(),
                advertise_port: 5060,
            }],
            timers: TimerConfig::default(),
            router: Router::new(cfg.proxy.route),
            dialog_max_age: Duration::from_secs(3600),
            relay_sets: cfg.proxy.relay_set,
            default_media: cfg.proxy.media,
            ng_client: anchorage_ng::ClientConfig::default(),
            // These scenarios jump the clock by seconds without answering health pings:
            // pings once an hour keep every relay up (the detector has its own tests).
            relay_health: anchorage_proxy::media::HealthConfig {
                interval: Duration::from_secs(3600),
                max_window: Duration::from_secs(6 * 3600),
                ..anchorage_proxy::media::HealthConfig::default()
            },
            reanchor: cfg.proxy.reanchor,
            flood: cfg.proxy.flood,
            overload: cfg.proxy.overload,
            load_timeout: Duration::from_secs(1),
            // Records after every event, so a test sees what each one changed.
            record_delay: Duration::ZERO,
            cluster_name: None,
        }
    }
}

/// Raw `text` (LF line ends, turned into CRLF) received over UDP from `from` on the proxy's
/// listener: for what no phone would build (garbage, a stray response).
pub fn datagram(text: &str, from: &str) -> Datagram {
    Datagram {
        data: Bytes::from(text.replace('\n', "\r\n")),
        source: from.parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        transport: Transport::Udp,
    }
}

/// Everything the proxy has to send now.
pub fn drain(p: &mut Proxy) -> Vec<Transmit> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

/// A phone's request, built with `anchorage_sip::RequestBuilder` (no text templates). By
/// default: call `c1`'s INVITE from alice (127.0.0.1:5070, tag `a1`) to bob at 127.0.0.1:9,
/// branch `z9hG4bK-1`, CSeq 1, Max-Forwards 70, no body; each method changes one field.
#[derive(Debug, Clone)]
pub struct Req {
    method: Method<'static>,
    ruri: String,
    sent_by: String,
    branch: String,
    from: String,
    to: String,
    call_id: String,
    cseq: u32,
    contact: Option<String>,
    routes: Vec<String>,
    headers: Vec<(String, String)>,
    sdp: Option<String>,
}

impl Req {
    /// Call `c1`'s initial INVITE, without a body.
    pub fn invite() -> Req {
        Req {
            method: Method::Invite,
            ruri: "sip:bob@127.0.0.1:9".into(),
            sent_by: "127.0.0.1:5070".into(),
            branch: "z9hG4bK-1".into(),
            from: "<sip:alice@example.com>;tag=a1".into(),
            to: "<sip:bob@example.com>".into(),
            call_id: "c1".into(),
            cseq: 1,
            contact: Some("<sip:alice@127.0.0.1:5070>".into()),
            routes: Vec::new(),
            headers: Vec::new(),
            sdp: None,
        }
    }

    /// A `method` request for `ruri` with `id` as its Call-ID and in its branch
    /// (`z9hG4bK-<id>`: its own transaction); the rest as [`Req::invite`].
    pub fn new(method: Method<'static>, ruri: &str, id: &str) -> Req {
        Req {
            method,
            ruri: ruri.into(),
            branch: format!("z9hG4bK-{id}"),
            call_id: id.into(),
            ..Req::invite()
        }
    }

    /// Another method.
    pub fn method(mut self, method: Method<'static>) -> Req {
        self.method = method;
        self
    }

    /// The Via branch (with its magic cookie).
    pub fn branch(mut self, branch: &str) -> Req {
        self.branch = branch.into();
        self
    }

    /// The Via sent-by (`host:port`).
    pub fn sent_by(mut self, sent_by: &str) -> Req {
        self.sent_by = sent_by.into();
        self
    }

    /// The From header field value.
    pub fn from(mut self, from: &str) -> Req {
        self.from = from.into();
        self
    }

    /// The To header field value.
    pub fn to(mut self, to: &str) -> Req {
        self.to = to.into();
        self
    }

    /// The CSeq number (its method is the request's).
    pub fn cseq(mut self, cseq: u32) -> Req {
        self.cseq = cseq;
        self
    }

    /// The Contact (`None`: no Contact header field).
    pub fn contact(mut self, contact: Option<&str>) -> Req {
        self.contact = contact.map(str::to_string);
        self
    }

    /// Adds a Route header field value.
    pub fn route(mut self, route: &str) -> Req {
        self.routes.push(route.into());
        self
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// An `application/sdp` body.
    pub fn sdp(mut self, sdp: &str) -> Req {
        self.sdp = Some(sdp.into());
        self
    }

    /// The message.
    pub fn message(&self) -> Message {
        let via = format!("SIP/2.0/UDP {};branch={}", self.sent_by, self.branch);
        let mut b = RequestBuilder::new(self.method, &self.ruri)
            .via(&via)
            .routes(self.routes.iter().map(String::as_str))
            .from(&self.from)
            .to(&self.to)
            .call_id(&self.call_id)
            .cseq(self.cseq)
            .max_forwards(70);
        if let Some(contact) = &self.contact {
            b = b.contact(contact);
        }
        for (name, value) in &self.headers {
            b = b.header(name, value);
        }
        if let Some(sdp) = &self.sdp {
            b = b.body("application/sdp", sdp.as_bytes());
        }
        b.build().expect("a valid test request")
    }

    /// The message received over UDP from `from` on the proxy's listener.
    pub fn datagram(&self, from: &str) -> Datagram {
        Datagram {
            data: self.message().bytes(),
            source: from.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        }
    }
}

/// Hands `req` from `source` to the proxy; returns the request it forwarded (same method).
pub fn forwarded(p: &mut Proxy, req: &Req, source: &str, now: Instant) -> Transmit {
    let method = format!("{} ", req.method.as_str());
    p.handle_datagram(req.datagram(source), now);
    drain(p)
        .into_iter()
        .find(|t| t.data.starts_with(method.as_bytes()))
        .expect("the request forwarded")
}

/// Answers the next ng request, which must go to `node`, with `sdp`.
pub fn relay_at_replies(
    p: &mut Proxy,
    node: &str,
    sdp: &str,
    now: Instant,
) -> anchorage_ng::Request {
    let (to, datagram) = p.poll_ng_transmit().expect("an ng request");
    assert_eq!(to.to_string(), node);
    let incoming = anchorage_ng::decode_request(&datagram).unwrap();
    let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(sdp.to_string()));
    let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
    p.handle_ng_datagram(to, &bytes, now);
    incoming.request
}

/// A sent message as text.
pub fn text(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.data).into_owned()
}

/// A 200 with `sdp` from the party a request went to (the proxy's Via popped by it).
pub fn ok_to(p: &mut Proxy, request: &Transmit, to_tag: Option<&str>, sdp: &str, now: Instant) {
    let req = Message::parse(request.data.clone()).unwrap();
    let mut b = req.response(200, "OK");
    if let Some(tag) = to_tag {
        b = b.to_tag(tag);
    }
    let contact = if request.destination.port() == 9 {
        "Contact: <sip:bob@127.0.0.1:9>"
    } else {
        "Contact: <sip:alice@127.0.0.1:5070>"
    };
    let (name, value) = contact.split_once(": ").unwrap();
    let rr: Vec<String> = req
        .headers_of(HeaderName::RecordRoute)
        .map(|h| String::from_utf8_lossy(h.value()).into_owned())
        .collect();
    b = b.header(name, value);
    for r in &rr {
        b = b.header("Record-Route", r);
    }
    if !sdp.is_empty() {
        b = b.body("application/sdp", sdp.as_bytes());
    }
    let ok = b.build().unwrap();
    p.handle_datagram(
        Datagram {
            data: ok.bytes(),
            source: request.destination,
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        },
        now,
    );
}

/// A proxy with relays r1 and r2 and a confirmed call c1 anchored on r1 (caller a1 at
/// 127.0.0.1:5070, callee b1 at 127.0.0.1:9).
pub fn call_on_r1(now: Instant) -> Proxy {
    call_on_r1_with(now, OFFER_SDP, ANSWER_SDP)
}

/// [`call_on_r1`] with the caller's `offer` and the callee's `answer`.
pub fn call_on_r1_with(now: Instant, offer: &str, answer: &str) -> Proxy {
    call_on_r1_in("", now, offer, answer)
}

/// [`call_on_r1_with`] with `more` added to the proxy's configuration (after `[proxy.media]`).
pub fn call_on_r1_in(more: &str, now: Instant, offer: &str, answer: &str) -> Proxy {
    let mut p = proxy(&format!(
        "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{{ name = \"r1\", ng = \"127.0.0.1:2223\" }}, {{ name = \"r2\", ng = \"127.0.0.1:2224\" }}]\n\n[proxy.media]\nset = \"m\"\n{more}",
    ));
    p.handle_datagram(Req::invite().sdp(offer).datagram("127.0.0.1:5070"), now);
    drain(&mut p);
    let r1_offer = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1_offer, now);
    let out = drain(&mut p);
    let forwarded = out
        .iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .unwrap()
        .clone();
    ok_to(&mut p, &forwarded, Some("b1"), answer, now);
    let r1_answer = "v=0\r\no=relay 6 3 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1_answer, now);
    drain(&mut p);
    let ack = Req::invite()
        .method(Method::Ack)
        .to("<sip:bob@example.com>;tag=b1")
        .branch("z9hG4bK-ack")
        .route("<sip:127.0.0.1:5060;lr>");
    p.handle_datagram(ack.datagram("127.0.0.1:5070"), now);
    drain(&mut p);

    p
}

/// Every ng request sent now other than health pings, with its destination port.
pub fn ng_requests(p: &mut Proxy) -> Vec<(u16, anchorage_ng::Request)> {
    std::iter::from_fn(|| p.poll_ng_transmit())
        .map(|(to, d)| (to.port(), anchorage_ng::decode_request(&d).unwrap().request))
        .filter(|(_, r)| !matches!(r.kind, anchorage_ng::RequestKind::Ping))
        .collect()
}

/// Whether an ng request is a `delete`.
pub fn is_delete(r: &anchorage_ng::Request) -> bool {
    matches!(r.kind, anchorage_ng::RequestKind::Delete(_))
}

/// Starts moving every call of relay r1 (by API); returns the job.
pub fn move_r1(p: &mut Proxy, now: Instant) -> anchorage_proxy::reanchor::JobId {
    p.start_reanchor(
        anchorage_proxy::reanchor::Trigger::Api,
        Some("r1"),
        None,
        None,
        Default::default(),
        now,
    )
    .expect("a job")
}

/// r2's SDP in the tests' moves.
pub const R2_SDP: &str = "v=0\r\no=r2 77 1 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\nc=IN IP4 203.0.113.2\r\n";

/// Moves call c1 from r1 to r2 up to its re-INVITEs: the job started and r2 answering the
/// move's offer and answer.
pub fn move_c1_to_r2(p: &mut Proxy, now: Instant) {
    move_r1(p, now);
    relay_at_replies(p, "127.0.0.1:2224", R2_SDP, now);
    relay_at_replies(p, "127.0.0.1:2224", R2_SDP, now);
}

/// The move's record comes out to be saved durably, and no re-INVITE leaves before the store
/// has it; once saved, both go. Returns the saved record.
pub fn saved_then_reinvites(p: &mut Proxy, now: Instant) -> CallRecord {
    let mut durable = None;
    let mut sent = Vec::new();
    while let Some(o) = p.poll_output() {
        match o {
            Output::SaveDurable(r) => durable = Some(*r),
            Output::Sip(t) => sent.push(t),
            _ => {}
        }
    }
    assert!(
        !sent.iter().any(|t| t.data.starts_with(b"INVITE ")),
        "a re-INVITE before the move was saved"
    );
    let record = durable.expect("the move's record, to save durably");
    let m = record.moving.as_ref().expect("the move in the record");
    assert!(
        m.invites_out && m.sdp_for.iter().all(Option::is_some),
        "{m:?}"
    );
    let d = &record.dialogs[0].dialog.renumber;
    assert!(
        d.reserved_to_callee >= 18 && d.reserved_to_caller >= 17,
        "{d:?}"
    );
    p.handle_saved("c1", now);
    record
}

/// Call c1 on r1 with records kept, moved to r2 up to its re-INVITEs (saved, then sent):
/// the proxy and what it sent.
pub fn reinvites_out(now: Instant) -> (Proxy, Vec<Transmit>) {
    let mut p = call_on_r1(now);
    p.enable_call_records();
    ng_requests(&mut p);
    move_c1_to_r2(&mut p, now);
    saved_then_reinvites(&mut p, now);
    let out = drain(&mut p);
    (p, out)
}

/// Call c1 moved from r1 to r2 by a node that died right after sending the move's
/// re-INVITEs: the record it saved, and the re-INVITE it sent the callee.
pub fn died_after_reinvites() -> (CallRecord, Transmit) {
    let now = epoch();
    let mut p = call_on_r1(now);
    p.enable_call_records();
    ng_requests(&mut p);
    move_c1_to_r2(&mut p, now);
    let record = saved_then_reinvites(&mut p, now);
    let to_callee = drain(&mut p)
        .into_iter()
        .find(|t| t.data.starts_with(b"INVITE ") && t.destination.port() == 9)
        .expect("the re-INVITE to the callee");
    (record, to_callee)
}

/// The caller's in-dialog `method` of call c1 (to bob's tag b1, through our Record-Route),
/// with `cseq` and its own `branch`.
pub fn caller_in_dialog(method: Method<'static>, cseq: u32, branch: &str) -> Req {
    Req::invite()
        .method(method)
        .cseq(cseq)
        .to("<sip:bob@example.com>;tag=b1")
        .branch(branch)
        .route("<sip:127.0.0.1:5060;lr>")
}
