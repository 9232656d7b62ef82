//! Abuse limits at connection time: flapping detection, per-source connection counts and a
//! per-source connect-rate limiter, and [`ConnectGuard`], which combines them with the
//! [`BanList`]. Time is a `now_ms` argument (Unix milliseconds); nothing here reads a clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ban::{Ban, BanKind, BanList, mask};

/// `[limits]` keys owned by this crate (the server's own `[limits]` keys sit beside them).
/// Each limit counts its hits in [`Counters`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections allowed from one source (see `source_ipv6_prefix`); further ones are
    /// closed at accept. 0 = no limit. Default 1000.
    pub max_connections_per_source: u32,
    /// Sustained new connections per second allowed from one source (token bucket); 0 = no
    /// limit. Default 200.
    pub connect_rate_per_source: u32,
    /// Connections one source may open at once before the rate applies (bucket size).
    /// Default 500.
    pub connect_burst_per_source: u32,
    /// IPv6 sources are grouped by this prefix length (a host usually owns a /64); 128 =
    /// every address on its own. IPv4 sources are single addresses. Default 64.
    pub source_ipv6_prefix: u8,
    /// Sources tracked by the connection counter and, separately, by the rate limiter. A new
    /// source beyond it is refused by the counter, and evicts the oldest bucket in the rate
    /// limiter. Default 65536.
    pub max_tracked_sources: usize,
    /// A client id that connects more than this many times within `flap_window_secs` is
    /// banned for `flap_ban_secs`. 0 = no flapping detection. Default 30.
    pub flap_max_connects: u32,
    /// Window of the flapping detector, seconds. Default 60.
    pub flap_window_secs: u64,
    /// How long a flapping client id is banned, seconds. Default 300.
    pub flap_ban_secs: u64,
    /// Client ids the flapping detector tracks; the oldest is forgotten beyond it.
    /// Default 65536.
    pub flap_max_tracked: usize,
    /// Bans stored (admin API and flapping); adding beyond it fails. Default 100000.
    pub max_bans: usize,
    /// After this many failed logins (bad user name or password) from one source within
    /// `auth_failure_window_secs`, further CONNECTs with a user name from it are refused
    /// until the window ends, before any password hash is computed. 0 = no limit.
    /// Default 20.
    pub auth_failures_per_source: u32,
    /// Window of `auth_failures_per_source`, seconds. Default 60.
    pub auth_failure_window_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_source: 1000,
            connect_rate_per_source: 200,
            connect_burst_per_source: 500,
            source_ipv6_prefix: 64,
            max_tracked_sources: 65_536,
            flap_max_connects: 30,
            flap_window_secs: 60,
            flap_ban_secs: 300,
            flap_max_tracked: 65_536,
            max_bans: 100_000,
            auth_failures_per_source: 20,
            auth_failure_window_secs: 60,
        }
    }
}

/// How often each limit was hit; the server exports them (e.g. as
/// `halyard_limit_hits_total{limit=NAME}` with the names of [`Counters::named`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// CONNECTs refused because a ban applied.
    pub banned: u64,
    /// Bans not stored because the ban table was full (`max_bans`).
    pub ban_table_full: u64,
    /// Client ids banned for flapping.
    pub flap_bans: u64,
    /// Client ids forgotten by the flapping detector to stay within `flap_max_tracked`.
    pub flap_evictions: u64,
    /// Connections refused by `max_connections_per_source`.
    pub source_connections: u64,
    /// Connections refused by the per-source connect rate.
    pub source_rate: u64,
    /// Connections refused because `max_tracked_sources` sources already had connections.
    pub source_table_full: u64,
    /// Rate buckets forgotten to stay within `max_tracked_sources`.
    pub rate_evictions: u64,
    /// CONNECTs refused because their source failed to log in too often.
    pub auth_failures: u64,
}

impl Counters {
    /// Each counter with a stable metric label.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("banned", self.banned),
            ("ban_table_full", self.ban_table_full),
            ("flap_bans", self.flap_bans),
            ("flap_evictions", self.flap_evictions),
            ("source_connections", self.source_connections),
            ("source_rate", self.source_rate),
            ("source_table_full", self.source_table_full),
            ("rate_evictions", self.rate_evictions),
            ("auth_failures", self.auth_failures),
        ]
    }
}

/// Why a connection was refused by [`ConnectGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A ban applies to the client id, user name or address.
    Banned,
    /// The client id connected too often and has just been banned.
    Flapping,
    /// The source has `max_connections_per_source` connections open.
    SourceConnections,
    /// The source exceeded its connect rate.
    SourceRate,
    /// Too many distinct sources have connections open (`max_tracked_sources`).
    SourceTableFull,
    /// The source failed to log in `auth_failures_per_source` times in the window.
    AuthFailures,
}

impl Refusal {
    /// The MQTT 5.0 CONNACK reason code: 0x8A Banned, 0x97 Quota exceeded, 0x9F Connection
    /// rate exceeded, 0x89 Server busy.
    pub fn reason_code_v5(self) -> u8 {
        match self {
            Refusal::Banned | Refusal::Flapping => 0x8A,
            Refusal::SourceConnections => 0x97,
            Refusal::SourceRate | Refusal::AuthFailures => 0x9F,
            Refusal::SourceTableFull => 0x89,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code: 0x05 Not authorized for bans, 0x03 Server
    /// unavailable for the rest.
    pub fn return_code_v311(self) -> u8 {
        match self {
            Refusal::Banned | Refusal::Flapping => 0x05,
            _ => 0x03,
        }
    }
}

/// Counts hits per key in a fixed window that opens at the key's first hit; holds at most
/// `max_tracked` keys and forgets the one tracked the longest beyond that.
#[derive(Debug, Clone)]
struct WindowCounter<K> {
    window_ms: u64,
    max_tracked: usize,
    table: HashMap<K, Track>,
    order: VecDeque<K>,
    evictions: u64,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    window_start: u64,
    count: u32,
}

impl<K: std::hash::Hash + Eq + Clone> WindowCounter<K> {
    fn new(window_ms: u64, max_tracked: usize) -> Self {
        WindowCounter {
            window_ms,
            max_tracked,
            table: HashMap::new(),
            order: VecDeque::new(),
            evictions: 0,
        }
    }

    /// Counts one hit; returns the count in the current window (0 when nothing is tracked).
    fn hit(&mut self, key: &K, now_ms: u64) -> u32 {
        if self.max_tracked == 0 {
            return 0;
        }
        if !self.table.contains_key(key) {
            while self.table.len() >= self.max_tracked {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if self.table.remove(&old).is_some() {
                    self.evictions += 1;
                }
            }
            self.order.push_back(key.clone());
        }
        let track = self.table.entry(key.clone()).or_insert(Track {
            window_start: now_ms,
            count: 0,
        });
        if now_ms.saturating_sub(track.window_start) >= self.window_ms {
            *track = Track {
                window_start: now_ms,
                count: 0,
            };
        }
        track.count = track.count.saturating_add(1);
        track.count
    }

    /// The count in the window running at `now_ms`.
    fn count(&self, key: &K, now_ms: u64) -> u32 {
        match self.table.get(key) {
            Some(t) if now_ms.saturating_sub(t.window_start) < self.window_ms => t.count,
            _ => 0,
        }
    }

    /// Starts a new, empty window for `key`.
    fn reset(&mut self, key: &K, now_ms: u64) {
        if let Some(t) = self.table.get_mut(key) {
            *t = Track {
                window_start: now_ms,
                count: 0,
            };
        }
    }
}

/// Bans client ids that connect too often ("flapping").
///
/// A fixed window opens at a client id's first CONNECT; the CONNECT that brings the count
/// above `max_connects` before the window ends returns the ban's end, and the count restarts.
/// The table holds at most `max_tracked` ids; beyond, the id tracked the longest is forgotten.
#[derive(Debug, Clone)]
pub struct FlapDetector {
    max_connects: u32,
    ban_ms: u64,
    counter: WindowCounter<String>,
    bans: u64,
}

impl FlapDetector {
    /// A detector with `max_connects` per `window_ms`, banning for `ban_ms`, tracking at most
    /// `max_tracked` client ids. `max_connects == 0` disables it.
    pub fn new(max_connects: u32, window_ms: u64, ban_ms: u64, max_tracked: usize) -> Self {
        FlapDetector {
            max_connects,
            ban_ms,
            counter: WindowCounter::new(window_ms, max_tracked),
            bans: 0,
        }
    }

    /// Records a CONNECT of `client_id`; returns `Some(until_ms)` when it should be banned.
    pub fn record(&mut self, client_id: &str, now_ms: u64) -> Option<u64> {
        if self.max_connects == 0 {
            return None;
        }
        let key = client_id.to_string();
        if self.counter.hit(&key, now_ms) > self.max_connects {
            self.counter.reset(&key, now_ms);
            self.bans += 1;
            return Some(now_ms.saturating_add(self.ban_ms));
        }
        None
    }

    /// Client ids tracked now.
    pub fn tracked(&self) -> usize {
        self.counter.table.len()
    }

    /// Ids forgotten to respect the table bound.
    pub fn evictions(&self) -> u64 {
        self.counter.evictions
    }

    /// Bans decided.
    pub fn bans(&self) -> u64 {
        self.bans
    }
}

/// Per-source connection counter and connect-rate limiter (token bucket).
#[derive(Debug, Clone)]
pub struct SourceLimiter {
    max_per_source: u32,
    rate_per_sec: u32,
    burst: u32,
    ipv6_prefix: u8,
    max_tracked: usize,
    open: HashMap<IpAddr, u32>,
    buckets: HashMap<IpAddr, Bucket>,
    order: VecDeque<IpAddr>,
    counters: Counters,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a token.
    milli_tokens: u64,
    last_ms: u64,
}

impl SourceLimiter {
    /// A limiter with the per-source keys of `cfg`.
    pub fn new(cfg: &LimitsConfig) -> Self {
        SourceLimiter {
            max_per_source: cfg.max_connections_per_source,
            rate_per_sec: cfg.connect_rate_per_source,
            burst: cfg.connect_burst_per_source.max(1),
            ipv6_prefix: cfg.source_ipv6_prefix.min(128),
            max_tracked: cfg.max_tracked_sources,
            open: HashMap::new(),
            buckets: HashMap::new(),
            order: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// The key a source is counted under: the IPv4 address, or the IPv6 prefix.
    pub fn source_key(&self, ip: IpAddr) -> IpAddr {
        let ip = ip.to_canonical();
        if ip.is_ipv4() {
            ip
        } else {
            mask(ip, self.ipv6_prefix)
        }
    }

    /// Admits a new connection from `ip` or says why not. When admitted, it counts as open
    /// until [`SourceLimiter::close`] is called with the same `ip`.
    pub fn try_open(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        let key = self.source_key(ip);
        let open = self.open.get(&key).copied().unwrap_or(0);
        if self.max_per_source > 0 {
            if open >= self.max_per_source {
                self.counters.source_connections += 1;
                return Err(Refusal::SourceConnections);
            }
            if open == 0 && self.open.len() >= self.max_tracked {
                self.counters.source_table_full += 1;
                return Err(Refusal::SourceTableFull);
            }
        }
        if self.rate_per_sec > 0 && !self.take_token(key, now_ms) {
            self.counters.source_rate += 1;
            return Err(Refusal::SourceRate);
        }
        if self.max_per_source > 0 {
            *self.open.entry(key).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Records that a connection admitted by [`SourceLimiter::try_open`] closed.
    pub fn close(&mut self, ip: IpAddr) {
        let key = self.source_key(ip);
        if let Some(n) = self.open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&key);
            }
        }
    }

    /// Connections open from `ip`'s source (0 when not counted).
    pub fn open_connections(&self, ip: IpAddr) -> u32 {
        self.open.get(&self.source_key(ip)).copied().unwrap_or(0)
    }

    fn take_token(&mut self, key: IpAddr, now_ms: u64) -> bool {
        let capacity = u64::from(self.burst) * 1000;
        if !self.buckets.contains_key(&key) {
            if self.max_tracked == 0 {
                return true;
            }
            while self.buckets.len() >= self.max_tracked {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if self.buckets.remove(&old).is_some() {
                    self.counters.rate_evictions += 1;
                }
            }
            self.order.push_back(key);
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            milli_tokens: capacity,
            last_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.last_ms);
        let refill = elapsed.saturating_mul(u64::from(self.rate_per_sec));
        bucket.milli_tokens = bucket.milli_tokens.saturating_add(refill).min(capacity);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// This limiter's counters (the source fields of [`Counters`]).
    pub fn counters(&self) -> Counters {
        self.counters
    }
}

/// Everything checked before a client is let in, in one value the server keeps behind one
/// mutex: the ban list, the flapping detector and the per-source limiter.
#[derive(Debug, Clone)]
pub struct ConnectGuard {
    bans: BanList,
    flap: FlapDetector,
    sources: SourceLimiter,
    max_auth_failures: u32,
    auth_failures: WindowCounter<IpAddr>,
    auth_refused: u64,
}

impl ConnectGuard {
    /// A guard with the limits of `cfg` and an empty ban list.
    pub fn new(cfg: &LimitsConfig) -> Self {
        ConnectGuard {
            bans: BanList::new(cfg.max_bans),
            flap: FlapDetector::new(
                cfg.flap_max_connects,
                cfg.flap_window_secs.saturating_mul(1000),
                cfg.flap_ban_secs.saturating_mul(1000),
                cfg.flap_max_tracked,
            ),
            sources: SourceLimiter::new(cfg),
            max_auth_failures: cfg.auth_failures_per_source,
            auth_failures: WindowCounter::new(
                cfg.auth_failure_window_secs.saturating_mul(1000),
                cfg.max_tracked_sources,
            ),
            auth_refused: 0,
        }
    }

    /// At TCP accept: per-source connection count and connect rate. On `Err` close the
    /// socket at once (nothing has been said yet, so there is no CONNACK to send). On `Ok`,
    /// call [`ConnectGuard::on_close`] with the same address when the socket closes.
    pub fn on_accept(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        self.sources.try_open(ip, now_ms)
    }

    /// When a socket admitted by [`ConnectGuard::on_accept`] closes.
    pub fn on_close(&mut self, ip: IpAddr) {
        self.sources.close(ip);
    }

    /// At CONNECT, before authentication: bans (client id, user name, address), then the
    /// flapping detector, which bans the client id when it connects too often, then (for a
    /// CONNECT with a user name) the source's recent login failures. On `Err` answer with
    /// [`Refusal::reason_code_v5`] / [`Refusal::return_code_v311`] and close.
    pub fn on_connect(
        &mut self,
        client_id: &str,
        username: Option<&str>,
        ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if self.bans.check(client_id, username, ip, now_ms) {
            return Err(Refusal::Banned);
        }
        if let Some(ip) = ip.filter(|_| username.is_some() && self.max_auth_failures > 0) {
            let key = self.sources.source_key(ip);
            if self.auth_failures.count(&key, now_ms) >= self.max_auth_failures {
                self.auth_refused += 1;
                return Err(Refusal::AuthFailures);
            }
        }
        if client_id.is_empty() {
            return Ok(());
        }
        if let Some(until_ms) = self.flap.record(client_id, now_ms) {
            let ban = Ban {
                kind: BanKind::ClientId,
                value: client_id.to_string(),
                until_ms: Some(until_ms),
                reason: "flapping".to_string(),
            };
            // A full ban table is counted there; the connection is still refused.
            let _ = self.bans.add(ban, now_ms);
            return Err(Refusal::Flapping);
        }
        Ok(())
    }

    /// After [`crate::Authenticator::check`] answered [`crate::AuthDecision::BadCredentials`]
    /// for a client from `ip`: counts the failure towards `auth_failures_per_source`.
    pub fn on_auth_failure(&mut self, ip: IpAddr, now_ms: u64) {
        if self.max_auth_failures > 0 {
            let key = self.sources.source_key(ip);
            self.auth_failures.hit(&key, now_ms);
        }
    }

    /// The ban list (admin API: list).
    pub fn bans(&self) -> &BanList {
        &self.bans
    }

    /// The ban list (admin API: add, remove; a timer may call `purge_expired`).
    pub fn bans_mut(&mut self) -> &mut BanList {
        &mut self.bans
    }

    /// The per-source limiter (e.g. for `open_connections`).
    pub fn sources(&self) -> &SourceLimiter {
        &self.sources
    }

    /// Every counter of the guard.
    pub fn counters(&self) -> Counters {
        Counters {
            banned: self.bans.refused(),
            ban_table_full: self.bans.full_hits(),
            flap_bans: self.flap.bans(),
            flap_evictions: self.flap.evictions(),
            auth_failures: self.auth_refused,
            ..self.sources.counters()
        }
    }
}

#[cfg(test)]
mod tests;
