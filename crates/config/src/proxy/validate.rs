//! Checks of `[proxy]` that the types cannot make, one function per section, each error under
//! its key path (`proxy.timers.t2_ms`, `proxy.route[2].destinations[0].host`).

use super::*;

/// A SIP method token (RFC 3261 §25.1 `token`).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Whether `s` is `host` or `host:port` with a plausible host.
fn is_host_port(s: &str) -> bool {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return addr.port() != 0;
    }
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    host_ok && port_ok
}

/// Appends "must be greater than 0" under `{at}.{key}` for each `(key, value)` that is zero.
fn check_positive(at: &str, values: &[(&str, u64)], errors: &mut Vec<ConfigError>) {
    for (key, value) in values {
        if *value == 0 {
            errors.push(ConfigError::new(
                format!("{at}.{key}"),
                "must be greater than 0",
            ));
        }
    }
}

/// Appends "is more than a year" under `{at}.{key}` for each `(key, seconds)` over a year.
fn check_within_a_year(at: &str, values: &[(&str, u64)], errors: &mut Vec<ConfigError>) {
    for (key, seconds) in values {
        if *seconds > 365 * 24 * 3600 {
            errors.push(ConfigError::new(
                format!("{at}.{key}"),
                "is more than a year",
            ));
        }
    }
}

/// Appends an error under `path` when `name` is empty or an earlier `what` (relay set, rule)
/// has it already.
fn check_name<'a>(
    path: &str,
    name: &str,
    mut earlier: impl Iterator<Item = &'a str>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) {
    if name.is_empty() {
        errors.push(ConfigError::new(path, "must not be empty"));
    } else if earlier.any(|o| o == name) {
        errors.push(ConfigError::new(
            path,
            format!("{name:?} is used by an earlier {what}"),
        ));
    }
}

impl ProxyConfig {
    /// Checks what the types cannot, appending errors under `at`: one check per section, in
    /// the order of the sections in `docs/configuration.md`.
    pub fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        self.validate_listen(at, errors);
        self.timers.validate(&format!("{at}.timers"), errors);
        self.tcp.validate(&format!("{at}.tcp"), errors);
        self.flood.validate(&format!("{at}.flood"), errors);
        self.dialog.validate(&format!("{at}.dialog"), errors);
        self.relay_health
            .validate(&format!("{at}.relay_health"), errors);
        self.validate_reanchor(at, errors);
        self.overload.validate(&format!("{at}.overload"), errors);
        self.validate_relay_sets(at, errors);
        self.validate_media(at, errors);
        self.validate_routes(at, errors);
    }

    /// `[[proxy.listen]]`: at least one, each advertised address well formed, none twice.
    fn validate_listen(&self, at: &str, errors: &mut Vec<ConfigError>) {
        if self.listen.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.listen"),
                "at least one listener is needed",
            ));
        }
        for (i, l) in self.listen.iter().enumerate() {
            if let Some(adv) = &l.advertise {
                if !is_host_port(adv) {
                    errors.push(ConfigError::new(
                        format!("{at}.listen[{i}].advertise"),
                        format!("{adv:?} is not a host or host:port"),
                    ));
                }
            }
            if self.listen[..i]
                .iter()
                .any(|o| o.transport == l.transport && o.address == l.address)
            {
                errors.push(ConfigError::new(
                    format!("{at}.listen[{i}]"),
                    format!("{} {} is listed twice", l.transport.as_str(), l.address),
                ));
            }
        }
    }

    /// `[proxy.reanchor]`: positive limits, times within a year, a fallback set that exists.
    fn validate_reanchor(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let r = &self.reanchor;
        let here = format!("{at}.reanchor");
        check_within_a_year(
            &here,
            &[
                ("invite_timeout_s", r.invite_timeout_s),
                ("give_up_s", r.give_up_s),
            ],
            errors,
        );
        check_positive(
            &here,
            &[
                ("max_in_flight", r.max_in_flight as u64),
                ("per_second", u64::from(r.per_second)),
                ("invite_timeout_s", r.invite_timeout_s),
            ],
            errors,
        );
        if let Some(set) = &r.fallback_set {
            if !self.relay_set.iter().any(|s| &s.name == set) {
                errors.push(ConfigError::new(
                    format!("{here}.fallback_set"),
                    format!("no relay set named {set:?}"),
                ));
            }
        }
    }

    /// `[[proxy.relay_set]]`: unique non-empty names, at least one node, positive weights.
    fn validate_relay_sets(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (i, set) in self.relay_set.iter().enumerate() {
            let here = format!("{at}.relay_set[{i}]");
            let earlier = self.relay_set[..i].iter().map(|o| o.name.as_str());
            check_name(
                &format!("{here}.name"),
                &set.name,
                earlier,
                "relay set",
                errors,
            );
            if set.nodes.is_empty() {
                errors.push(ConfigError::new(
                    format!("{here}.nodes"),
                    "a relay set needs at least one node",
                ));
            }
            for (j, node) in set.nodes.iter().enumerate() {
                let node_at = format!("{here}.nodes[{j}]");
                match (&node.ng, &node.rtpproxy) {
                    (Some(_), Some(_)) | (None, None) => errors.push(ConfigError::new(
                        node_at.clone(),
                        "give exactly one of `ng` and `rtpproxy`",
                    )),
                    (None, Some(socket)) => {
                        if let Err(e) = rtpproxy_socket(socket) {
                            errors.push(ConfigError::new(format!("{node_at}.rtpproxy"), e));
                        }
                    }
                    (Some(_), None) => {}
                }
                if node.weight == 0 {
                    errors.push(ConfigError::new(
                        format!("{here}.nodes[{j}].weight"),
                        "must be greater than 0",
                    ));
                }
            }
        }
    }

    /// `[proxy.media]`: the default media policy.
    fn validate_media(&self, at: &str, errors: &mut Vec<ConfigError>) {
        self.validate_policy(&self.media, &format!("{at}.media"), errors);
    }

    /// `[[proxy.route]]`: each rule (its media policy first), unique non-empty names.
    fn validate_routes(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (i, rule) in self.route.iter().enumerate() {
            if let Some(policy) = &rule.media {
                self.validate_policy(policy, &format!("{at}.route[{i}].media"), errors);
            }
            rule.validate(&format!("{at}.route[{i}]"), errors);
            let earlier = self.route[..i].iter().map(|o| o.name.as_str());
            check_name(
                &format!("{at}.route[{i}].name"),
                &rule.name,
                earlier,
                "rule",
                errors,
            );
        }
    }

    /// A media policy under `path`: its relay set exists, each leg's profile and interface
    /// are well formed.
    fn validate_policy(&self, policy: &MediaPolicy, path: &str, errors: &mut Vec<ConfigError>) {
        if let Some(set) = &policy.set {
            if !self.relay_set.iter().any(|s| &s.name == set) {
                errors.push(ConfigError::new(
                    format!("{path}.set"),
                    format!("no relay set named {set:?}"),
                ));
            }
        }
        for (leg, options) in [("caller", &policy.caller), ("callee", &policy.callee)] {
            if let Some(t) = &options.transport {
                if !MEDIA_PROFILES.contains(&t.as_str()) {
                    errors.push(ConfigError::new(
                        format!("{path}.{leg}.type"),
                        format!("{t:?} is not one of {}", MEDIA_PROFILES.join(", ")),
                    ));
                }
            }
            if let Err(e) = anchorage_rtpp::LegFlags::parse(&options.rtpproxy_flags) {
                errors.push(ConfigError::new(
                    format!("{path}.{leg}.rtpproxy_flags"),
                    e.to_string(),
                ));
            }
            if let Some(iface) = &options.iface {
                let ok = !iface.is_empty()
                    && iface
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    errors.push(ConfigError::new(
                        format!("{path}.{leg}.iface"),
                        format!("{iface:?} is not an interface name (letters, digits, - _ .)"),
                    ));
                }
            }
        }
    }
}

impl Timers {
    /// `[proxy.timers]` under `at`: each timer positive and within a day once multiplied by
    /// 64, T2 ≥ T1, Timer C over 3 minutes.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (key, value) in [
            ("t1_ms", self.t1_ms),
            ("t2_ms", self.t2_ms),
            ("t4_ms", self.t4_ms),
            ("timer_c_ms", self.timer_c_ms),
        ] {
            check_positive(at, &[(key, value)], errors);
            // Timer B and friends are 64 * T1: keep every timer within a day.
            if value > 86_400_000 / 64 {
                errors.push(ConfigError::new(
                    format!("{at}.{key}"),
                    format!("{value} ms is too long (at most {} ms)", 86_400_000 / 64),
                ));
            }
        }
        if self.t2_ms < self.t1_ms {
            errors.push(ConfigError::new(
                format!("{at}.t2_ms"),
                format!(
                    "{} must not be less than t1_ms ({})",
                    self.t2_ms, self.t1_ms
                ),
            ));
        }
        if self.timer_c_ms < 180_000 {
            errors.push(ConfigError::new(
                format!("{at}.timer_c_ms"),
                format!(
                    "{} is below RFC 3261's minimum of 3 minutes (180000)",
                    self.timer_c_ms
                ),
            ));
        }
    }
}

impl TcpLimits {
    /// `[proxy.tcp]` under `at`: positive connection limits, a message timeout of 1 s to an
    /// hour, room for a SIP message.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check_positive(
            at,
            &[
                ("max_connections", self.max_connections as u64),
                (
                    "max_connections_per_source",
                    self.max_connections_per_source as u64,
                ),
            ],
            errors,
        );
        if self.message_timeout_s == 0 || self.message_timeout_s > 3600 {
            errors.push(ConfigError::new(
                format!("{at}.message_timeout_s"),
                format!("{} is not 1 to 3600 seconds", self.message_timeout_s),
            ));
        }
        if self.max_message_bytes < 1024 {
            errors.push(ConfigError::new(
                format!("{at}.max_message_bytes"),
                format!(
                    "{} is too small for SIP (at least 1024)",
                    self.max_message_bytes
                ),
            ));
        }
    }
}

impl Flood {
    /// `[proxy.flood]` under `at`: when on, a block time of 1 s to a day, a burst of at
    /// least a second's worth, room for sources; no empty User-Agent to drop.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        if self.requests_per_second > 0 {
            if self.block_s == 0 || self.block_s > 86_400 {
                errors.push(ConfigError::new(
                    format!("{at}.block_s"),
                    format!("{} is not 1 to 86400 seconds", self.block_s),
                ));
            }
            if self.burst != 0 && self.burst < self.requests_per_second {
                errors.push(ConfigError::new(
                    format!("{at}.burst"),
                    format!(
                        "{} is below requests_per_second ({}): a source could never send a second's worth",
                        self.burst, self.requests_per_second
                    ),
                ));
            }
            check_positive(at, &[("max_sources", self.max_sources as u64)], errors);
        }
        for (i, ua) in self.drop_user_agents.iter().enumerate() {
            if ua.trim().is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.drop_user_agents[{i}]"),
                    "is empty: it would drop every request with a User-Agent",
                ));
            }
        }
    }
}

impl DialogConfig {
    /// `[proxy.dialog]` under `at`: a maximum age of a second to a year.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check_within_a_year(at, &[("max_age_s", self.max_age_s)], errors);
        check_positive(at, &[("max_age_s", self.max_age_s)], errors);
    }
}

impl RelayHealth {
    /// `[proxy.relay_health]` under `at`: positive settings within a year, and a window that
    /// can hold `down_after` pings.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check_within_a_year(
            at,
            &[
                ("interval_ms", self.interval_ms / 1000),
                ("max_window_ms", self.max_window_ms / 1000),
            ],
            errors,
        );
        check_positive(
            at,
            &[
                ("interval_ms", self.interval_ms),
                ("down_after", u64::from(self.down_after)),
                ("up_after", u64::from(self.up_after)),
            ],
            errors,
        );
        let shortest = self.interval_ms.saturating_mul(u64::from(self.down_after));
        if self.max_window_ms < shortest {
            errors.push(ConfigError::new(
                format!("{at}.max_window_ms"),
                format!(
                    "{} is below down_after x interval_ms ({shortest}): the window could never be that short",
                    self.max_window_ms
                ),
            ));
        }
    }
}

impl Overload {
    /// `[proxy.overload]` under `at`: positive bounds, delays within a year.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check_within_a_year(
            at,
            &[
                ("max_queue_delay_ms", self.max_queue_delay_ms / 1000),
                ("retry_after_s", u64::from(self.retry_after_s)),
            ],
            errors,
        );
        check_positive(
            at,
            &[
                ("max_transactions", self.max_transactions as u64),
                ("max_pending_ng", self.max_pending_ng as u64),
            ],
            errors,
        );
    }
}

impl RouteRule {
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let actions = usize::from(!self.destinations.is_empty())
            + usize::from(self.forward.is_some())
            + usize::from(self.reply.is_some());
        if actions != 1 {
            errors.push(ConfigError::new(
                at,
                format!(
                    "needs exactly one of `destinations`, `forward` or `reply` (found {actions})"
                ),
            ));
        }
        for (j, m) in self.matches.methods.iter().enumerate() {
            if !is_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
                errors.push(ConfigError::new(
                    format!("{at}.match.methods[{j}]"),
                    format!("{m:?} is not an upper-case SIP method"),
                ));
            }
        }
        if let Some(domain) = &self.matches.domain {
            if domain.is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.match.domain"),
                    "must not be empty",
                ));
            }
        }
        for (j, d) in self.destinations.iter().enumerate() {
            if !is_host_port(&d.host) || d.host.contains(':') && d.host.parse::<IpAddr>().is_err() {
                errors.push(ConfigError::new(
                    format!("{at}.destinations[{j}].host"),
                    format!("{:?} is not a host name or IP address", d.host),
                ));
            }
            if d.port == 0 {
                errors.push(ConfigError::new(
                    format!("{at}.destinations[{j}].port"),
                    "must not be 0",
                ));
            }
        }
        if let Some(reply) = &self.reply {
            if !(300..=699).contains(&reply.status) {
                errors.push(ConfigError::new(
                    format!("{at}.reply.status"),
                    format!("{} is not a final SIP status (300-699)", reply.status),
                ));
            }
            if let Some(reason) = &reply.reason {
                if reason.is_empty() || reason.bytes().any(|b| b == b'\r' || b == b'\n') {
                    errors.push(ConfigError::new(
                        format!("{at}.reply.reason"),
                        "must be one non-empty line",
                    ));
                }
            }
        }
        for (j, on) in self.failover.on.iter().enumerate() {
            let ok = on == "timeout"
                || on.parse::<u16>().is_ok_and(|c| (300..=699).contains(&c))
                || (on.len() == 3
                    && on.ends_with("xx")
                    && matches!(on.as_bytes().first(), Some(b'3'..=b'6')));
            if !ok {
                errors.push(ConfigError::new(
                    format!("{at}.failover.on[{j}]"),
                    format!("{on:?} is not a status (\"503\"), a class (\"5xx\") or \"timeout\""),
                ));
            }
        }
        if self.failover.timeout_ms == 0 {
            errors.push(ConfigError::new(
                format!("{at}.failover.timeout_ms"),
                "must be greater than 0",
            ));
        }
    }
}
