//! The ng commands that end or describe calls: `delete` (at once or after `delete delay`),
//! `query` (a call's totals and per-tag `medias`, SRTP counters included), `list` and
//! `statistics`.

use std::net::SocketAddr;
use std::time::Duration;

use anchorage_ng::{
    Counters, Delete, DeleteTarget, ErrorReason, Flags, Query, Reply, TagInfo, Totals, Value,
};
use anchorage_relay::Side;

use super::{fail, Controller, Handled, Now, Refusal, MAX_DELETE_DELAY_S, SECOND_US};
use crate::session::{at, Dialog};

impl Controller {
    pub(super) fn delete(
        &mut self,
        delete: &Delete,
        flags: &Flags,
        now: Now,
    ) -> Result<Handled, Refusal> {
        let not_found = || {
            if flags.fatal {
                Err(fail(ErrorReason::CallNotFound))
            } else {
                Ok(Handled::reply(
                    Reply::ok().with_warning(anchorage_ng::reason::CALL_NOT_FOUND),
                ))
            }
        };
        let call_id = delete.call_id.as_str();
        let Some(call) = self.calls.get(call_id) else {
            return not_found();
        };
        let target = delete.target(flags);
        let chosen: Vec<usize> = call
            .dialogs
            .iter()
            .enumerate()
            .filter(|(_, d)| match target {
                DeleteTarget::Call => true,
                DeleteTarget::Dialogue { from_tag, to_tag } => d
                    .side_of(from_tag.as_str())
                    .is_some_and(|s| d.tag(s.other()) == Some(to_tag.as_str())),
                DeleteTarget::Branch {
                    from_tag,
                    via_branch,
                } => {
                    d.tag(Side::A) == Some(from_tag.as_str())
                        && d.branch.as_deref() == Some(via_branch.as_str())
                }
                DeleteTarget::Participant(tag) => d.side_of(tag.as_str()).is_some(),
            })
            .map(|(i, _)| i)
            .collect();
        if chosen.is_empty() {
            return not_found();
        }
        let mut reply = if flags.fast {
            Reply::ok()
        } else {
            self.call_report(call_id, None, None)
                .unwrap_or_else(Reply::ok)
        };
        let whole_call = chosen.len() == call.dialogs.len();
        // At most an hour: a session kept longer only holds ports (and a huge value must not
        // overflow the clock).
        let delay = flags
            .delete_delay
            .filter(|&d| d > 0)
            .map(|d| d.min(MAX_DELETE_DELAY_S));
        if let (true, Some(seconds)) = (whole_call, delay) {
            if let Some(call) = self.calls.get_mut(call_id) {
                call.delete_at = Some(now.mono + Duration::from_secs(seconds));
            }
            reply.warning = None;
            return Ok(Handled::reply(reply));
        }
        let actions = self.remove_dialogs(call_id, &chosen, now.mono);
        Ok(Handled { reply, actions })
    }

    pub(super) fn query(&self, query: &Query) -> Result<Reply, Refusal> {
        self.call_report(
            query.call_id.as_str(),
            query.from_tag.as_ref().map(|t| t.as_str()),
            query.to_tag.as_ref().map(|t| t.as_str()),
        )
        .ok_or_else(|| fail(ErrorReason::UnknownCallId))
    }

    /// `created`, `last signal`, `totals` and `tags` of a call, restricted to the dialogs of
    /// `from` (and `to`) when given.
    fn call_report(&self, call_id: &str, from: Option<&str>, to: Option<&str>) -> Option<Reply> {
        let call = self.calls.get(call_id)?;
        let mut reply = Reply::ok();
        reply.created = Some(call.created_us / SECOND_US);
        reply.created_us = Some(call.created_us % SECOND_US);
        reply.last_signal = Some(call.last_signal);
        let mut totals = Totals::default();
        let mut tags: Vec<(String, TagInfo)> = Vec::new();
        let wanted = |d: &Dialog| {
            from.is_none_or(|f| d.side_of(f).is_some()) && to.is_none_or(|t| d.side_of(t).is_some())
        };
        let mut untagged = 0;
        for dialog in call.dialogs.iter().filter(|d| wanted(d)) {
            for pair in &dialog.snapshot {
                for side in [Side::A, Side::B] {
                    let stats = pair.stats(side);
                    add(
                        &mut totals.rtp,
                        stats.rtp.packets(),
                        stats.rtp.bytes(),
                        stats.rtp.errors(),
                    );
                    add(
                        &mut totals.rtcp,
                        stats.rtcp.packets(),
                        stats.rtcp.bytes(),
                        stats.rtcp.errors(),
                    );
                }
            }
            for side in [Side::A, Side::B] {
                let name = match dialog.tag(side) {
                    Some(tag) => tag.to_owned(),
                    None => {
                        untagged += 1;
                        format!("<untagged {untagged}>")
                    }
                };
                if tags.iter().any(|(k, _)| *k == name) {
                    continue;
                }
                let info = TagInfo {
                    tag: dialog.tag(side).unwrap_or_default().to_owned(),
                    label: dialog.labels[at(side)].clone(),
                    created: Some(dialog.created_us / SECOND_US),
                    via_branch: dialog.branch.clone(),
                    other: vec![("medias".into(), Value::List(self.medias(dialog, side)))],
                };
                tags.push((name, info));
            }
        }
        reply.totals = Some(totals);
        reply.tags = Some(tags);
        Some(reply)
    }

    /// The `medias` list of one side of a dialog: per stream, the relay's port for that side,
    /// where the relay sends to it, and what it received from it.
    fn medias(&self, dialog: &Dialog, side: Side) -> Vec<Value> {
        dialog
            .streams
            .iter()
            .enumerate()
            .map(|(index, stream)| {
                let iface = self.config.interfaces.get(stream.iface[at(side)]);
                let pair = dialog.snapshot.get(index);
                let endpoint = pair
                    .and_then(|p| p.rtp_destination(side))
                    .or(stream.peer[at(side)].map(|p| p.rtp));
                let mut entry = vec![
                    ("index".to_owned(), Value::Int(index as i64 + 1)),
                    (
                        "local port".to_owned(),
                        Value::Int(i64::from(stream.ports[at(side)].rtp)),
                    ),
                ];
                // The relay's sockets for this leg: RTP, and RTCP unless rtcp-mux made it
                // useless (RFC 5761).
                entry.push((
                    "sockets".to_owned(),
                    Value::Int(stream.sockets(side) as i64),
                ));
                if let Some(iface) = iface {
                    entry.push((
                        "local address".into(),
                        Value::text(iface.advertised.to_string()),
                    ));
                }
                if let Some(endpoint) = endpoint {
                    entry.push(("endpoint".into(), endpoint_value(endpoint)));
                }
                let transport = stream.transport[at(side)];
                let sdes = transport.is_sdes();
                let dtls = transport.is_dtls();
                if let Some(suite) = stream.sdes[at(side)].suite().filter(|_| sdes) {
                    entry.push(("crypto suite".into(), Value::text(suite.name())));
                }
                if let Some(pair) = pair {
                    let rtp = &pair.stats(side).rtp;
                    entry.push((
                        "stats".into(),
                        Value::Dict(vec![
                            ("packets".into(), Value::Int(rtp.packets() as i64)),
                            ("bytes".into(), Value::Int(rtp.bytes() as i64)),
                            ("errors".into(), Value::Int(rtp.errors() as i64)),
                        ]),
                    ));
                    if sdes || dtls {
                        entry.push(("SRTP".into(), srtp_value(&pair.stats(side).srtp)));
                    }
                    if dtls {
                        entry.push(("DTLS".into(), dtls_value(&pair.stats(side).dtls)));
                    }
                    let mut flags = vec![Value::text("RTP")];
                    if sdes {
                        flags.push(Value::text("SDES"));
                    }
                    if dtls {
                        flags.push(Value::text("DTLS"));
                    }
                    if pair.is_confirmed(side) {
                        flags.push(Value::text("confirmed"));
                    }
                    entry.push(("flags".into(), Value::List(flags)));
                }
                Value::Dict(entry)
            })
            .collect()
    }

    pub(super) fn list(&self, limit: Option<u64>) -> Reply {
        let limit = limit.unwrap_or(32) as usize;
        let mut calls: Vec<String> = self.calls.keys().cloned().collect();
        calls.sort();
        calls.truncate(limit);
        let mut reply = Reply::ok();
        reply.calls = Some(calls);
        reply
    }

    pub(super) fn statistics_reply(&self, now: Now) -> Reply {
        let s = &self.statistics;
        let int = |v: u64| Value::Int(v as i64);
        let sessions = self.calls.len() as u64;
        let uptime = now
            .mono
            .saturating_duration_since(self.started.mono)
            .as_secs();
        let statistics = Value::Dict(vec![
            (
                "currentstatistics".into(),
                Value::Dict(vec![
                    ("sessionsown".into(), int(sessions)),
                    ("sessionsforeign".into(), int(0)),
                    ("sessionstotal".into(), int(sessions)),
                    ("transcodedmedia".into(), int(0)),
                ]),
            ),
            (
                "totalstatistics".into(),
                Value::Dict(vec![
                    ("uptime".into(), int(uptime)),
                    ("managedsessions".into(), int(s.managed_sessions)),
                    ("rejectedsessions".into(), int(s.rejected_sessions)),
                    ("timeoutsessions".into(), int(s.timeout_sessions)),
                ]),
            ),
            (
                "controlstatistics".into(),
                Value::Dict(vec![
                    ("offercount".into(), int(s.offers)),
                    ("answercount".into(), int(s.answers)),
                    ("deletecount".into(), int(s.deletes)),
                    ("querycount".into(), int(s.queries)),
                    ("errorcount".into(), int(s.errors)),
                ]),
            ),
        ]);
        let mut reply = Reply::ok();
        reply.statistics = Some(statistics);
        reply
    }
}

fn add(counters: &mut Counters, packets: u64, bytes: u64, errors: u64) {
    counters.packets += packets;
    counters.bytes += bytes;
    counters.errors += errors;
}

/// A leg's SRTP counters in `query`.
fn srtp_value(srtp: &anchorage_relay::SrtpStats) -> Value {
    counters(&[
        ("decrypted packets", srtp.decrypted_packets),
        ("decrypted bytes", srtp.decrypted_bytes),
        ("encrypted packets", srtp.encrypted_packets),
        ("encrypted bytes", srtp.encrypted_bytes),
        ("authentication failures", srtp.auth_failures),
        ("replayed", srtp.replayed),
        ("other failures", srtp.other_failures),
    ])
}

/// A leg's DTLS counters in `query`.
fn dtls_value(dtls: &anchorage_relay::DtlsStats) -> Value {
    counters(&[
        ("handshakes", dtls.handshakes),
        ("failed handshakes", dtls.failures),
        ("wrong fingerprint", dtls.wrong_fingerprint),
        ("dropped", dtls.dropped),
    ])
}

/// A dictionary of named counters.
fn counters(entries: &[(&str, u64)]) -> Value {
    Value::Dict(
        entries
            .iter()
            .map(|(name, v)| ((*name).to_owned(), Value::Int(*v as i64)))
            .collect(),
    )
}

fn endpoint_value(endpoint: SocketAddr) -> Value {
    Value::Dict(vec![
        (
            "family".into(),
            Value::text(if endpoint.is_ipv6() { "IPv6" } else { "IPv4" }),
        ),
        ("address".into(), Value::text(endpoint.ip().to_string())),
        ("port".into(), Value::Int(i64::from(endpoint.port()))),
    ])
}
