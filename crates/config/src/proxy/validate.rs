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

/// `path` must be greater than zero.
fn positive(path: String, value: u64, errors: &mut Vec<ConfigError>) {
    if value == 0 {
        errors.push(ConfigError::new(path, "must be greater than 0"));
    }
}

/// `path`, in seconds, must not exceed a year (a typo of a few zeros would overflow a deadline).
fn at_most_a_year(path: String, seconds: u64, errors: &mut Vec<ConfigError>) {
    if seconds > 365 * 24 * 3600 {
        errors.push(ConfigError::new(path, "is more than a year"));
    }
}

impl ProxyConfig {
    /// Checks what the types cannot, appending errors under `at`.
    pub fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        self.validate_listen(at, errors);
        self.validate_timers(at, errors);
        self.validate_tcp(at, errors);
        self.validate_flood(at, errors);
        self.validate_dialog(at, errors);
        self.validate_relay_health(at, errors);
        self.validate_reanchor(at, errors);
        self.validate_overload(at, errors);
        self.validate_relay_sets(at, errors);
        self.validate_media_and_routes(at, errors);
    }

    /// `[[proxy.listen]]`.
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

    /// `[proxy.timers]`.
    fn validate_timers(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let t = &self.timers;
        for (key, value) in [
            ("t1_ms", t.t1_ms),
            ("t2_ms", t.t2_ms),
            ("t4_ms", t.t4_ms),
            ("timer_c_ms", t.timer_c_ms),
        ] {
            if value == 0 {
                errors.push(ConfigError::new(
                    format!("{at}.timers.{key}"),
                    "must be greater than 0",
                ));
            }
            // Timer B and friends are 64 * T1: keep every timer within a day.
            if value > 86_400_000 / 64 {
                errors.push(ConfigError::new(
                    format!("{at}.timers.{key}"),
                    format!("{value} ms is too long (at most {} ms)", 86_400_000 / 64),
                ));
            }
        }
        if t.t2_ms < t.t1_ms {
            errors.push(ConfigError::new(
                format!("{at}.timers.t2_ms"),
                format!("{} must not be less than t1_ms ({})", t.t2_ms, t.t1_ms),
            ));
        }
        if t.timer_c_ms < 180_000 {
            errors.push(ConfigError::new(
                format!("{at}.timers.timer_c_ms"),
                format!(
                    "{} is below RFC 3261's minimum of 3 minutes (180000)",
                    t.timer_c_ms
                ),
            ));
        }
    }

    /// `[proxy.tcp]`.
    fn validate_tcp(&self, at: &str, errors: &mut Vec<ConfigError>) {
        if self.tcp.max_connections == 0 {
            errors.push(ConfigError::new(
                format!("{at}.tcp.max_connections"),
                "must be greater than 0",
            ));
        }
        if self.tcp.max_connections_per_source == 0 {
            errors.push(ConfigError::new(
                format!("{at}.tcp.max_connections_per_source"),
                "must be greater than 0",
            ));
        }
        if self.tcp.message_timeout_s == 0 || self.tcp.message_timeout_s > 3600 {
            errors.push(ConfigError::new(
                format!("{at}.tcp.message_timeout_s"),
                format!("{} is not 1 to 3600 seconds", self.tcp.message_timeout_s),
            ));
        }
        if self.tcp.max_message_bytes < 1024 {
            errors.push(ConfigError::new(
                format!("{at}.tcp.max_message_bytes"),
                format!(
                    "{} is too small for SIP (at least 1024)",
                    self.tcp.max_message_bytes
                ),
            ));
        }
    }

    /// `[proxy.flood]`.
    fn validate_flood(&self, at: &str, errors: &mut Vec<ConfigError>) {
        if self.flood.requests_per_second > 0 {
            if self.flood.block_s == 0 || self.flood.block_s > 86_400 {
                errors.push(ConfigError::new(
                    format!("{at}.flood.block_s"),
                    format!("{} is not 1 to 86400 seconds", self.flood.block_s),
                ));
            }
            if self.flood.burst != 0 && self.flood.burst < self.flood.requests_per_second {
                errors.push(ConfigError::new(
                    format!("{at}.flood.burst"),
                    format!(
                        "{} is below requests_per_second ({}): a source could never send a second's worth",
                        self.flood.burst, self.flood.requests_per_second
                    ),
                ));
            }
            if self.flood.max_sources == 0 {
                errors.push(ConfigError::new(
                    format!("{at}.flood.max_sources"),
                    "must be greater than 0",
                ));
            }
        }
        for (i, ua) in self.flood.drop_user_agents.iter().enumerate() {
            if ua.trim().is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.flood.drop_user_agents[{i}]"),
                    "is empty: it would drop every request with a User-Agent",
                ));
            }
        }
    }

    /// `[proxy.dialog]`.
    fn validate_dialog(&self, at: &str, errors: &mut Vec<ConfigError>) {
        positive(
            format!("{at}.dialog.max_age_s"),
            self.dialog.max_age_s,
            errors,
        );
        at_most_a_year(
            format!("{at}.dialog.max_age_s"),
            self.dialog.max_age_s,
            errors,
        );
    }

    /// `[proxy.relay_health]`.
    fn validate_relay_health(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let health = &self.relay_health;
        let here = format!("{at}.relay_health");
        positive(format!("{here}.interval_ms"), health.interval_ms, errors);
        positive(
            format!("{here}.down_after"),
            u64::from(health.down_after),
            errors,
        );
        positive(
            format!("{here}.up_after"),
            u64::from(health.up_after),
            errors,
        );
        at_most_a_year(
            format!("{here}.interval_ms"),
            health.interval_ms / 1000,
            errors,
        );
        at_most_a_year(
            format!("{here}.max_window_ms"),
            health.max_window_ms / 1000,
            errors,
        );
        let shortest = health
            .interval_ms
            .saturating_mul(u64::from(health.down_after));
        if health.max_window_ms < shortest {
            errors.push(ConfigError::new(
                format!("{here}.max_window_ms"),
                format!(
                    "{} is below down_after x interval_ms ({shortest}): the window could never be that short",
                    health.max_window_ms
                ),
            ));
        }
    }

    /// `[proxy.reanchor]`.
    fn validate_reanchor(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let r = &self.reanchor;
        let here = format!("{at}.reanchor");
        positive(
            format!("{here}.max_in_flight"),
            r.max_in_flight as u64,
            errors,
        );
        positive(
            format!("{here}.per_second"),
            u64::from(r.per_second),
            errors,
        );
        positive(
            format!("{here}.invite_timeout_s"),
            r.invite_timeout_s,
            errors,
        );
        at_most_a_year(
            format!("{here}.invite_timeout_s"),
            r.invite_timeout_s,
            errors,
        );
        at_most_a_year(format!("{here}.give_up_s"), r.give_up_s, errors);
        if let Some(set) = &self.reanchor.fallback_set {
            if !self.relay_set.iter().any(|s| &s.name == set) {
                errors.push(ConfigError::new(
                    format!("{at}.reanchor.fallback_set"),
                    format!("no relay set named {set:?}"),
                ));
            }
        }
    }

    /// `[proxy.overload]`.
    fn validate_overload(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let o = &self.overload;
        let here = format!("{at}.overload");
        positive(
            format!("{here}.max_transactions"),
            o.max_transactions as u64,
            errors,
        );
        positive(
            format!("{here}.max_pending_ng"),
            o.max_pending_ng as u64,
            errors,
        );
        at_most_a_year(
            format!("{here}.max_queue_delay_ms"),
            o.max_queue_delay_ms / 1000,
            errors,
        );
        at_most_a_year(
            format!("{here}.retry_after_s"),
            u64::from(o.retry_after_s),
            errors,
        );
    }

    /// `[[proxy.relay_set]]`.
    fn validate_relay_sets(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (i, set) in self.relay_set.iter().enumerate() {
            let here = format!("{at}.relay_set[{i}]");
            if set.name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{here}.name"),
                    "must not be empty",
                ));
            } else if self.relay_set[..i].iter().any(|o| o.name == set.name) {
                errors.push(ConfigError::new(
                    format!("{here}.name"),
                    format!("{:?} is used by an earlier relay set", set.name),
                ));
            }
            if set.nodes.is_empty() {
                errors.push(ConfigError::new(
                    format!("{here}.nodes"),
                    "a relay set needs at least one node",
                ));
            }
            for (j, node) in set.nodes.iter().enumerate() {
                if node.weight == 0 {
                    errors.push(ConfigError::new(
                        format!("{here}.nodes[{j}].weight"),
                        "must be greater than 0",
                    ));
                }
            }
        }
    }

    /// `[proxy.media]` and `[[proxy.route]]` (with each rule's own media policy).
    fn validate_media_and_routes(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let check_policy = |policy: &MediaPolicy, path: String, errors: &mut Vec<ConfigError>| {
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
        };
        check_policy(&self.media, format!("{at}.media"), errors);
        for (i, rule) in self.route.iter().enumerate() {
            if let Some(policy) = &rule.media {
                check_policy(policy, format!("{at}.route[{i}].media"), errors);
            }
            rule.validate(&format!("{at}.route[{i}]"), errors);
            if rule.name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.route[{i}].name"),
                    "must not be empty",
                ));
            } else if self.route[..i].iter().any(|o| o.name == rule.name) {
                errors.push(ConfigError::new(
                    format!("{at}.route[{i}].name"),
                    format!("{:?} is used by an earlier rule", rule.name),
                ));
            }
        }
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
