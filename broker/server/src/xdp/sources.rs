//! The broker's own per-source connection counts, the user-space twin of the XDP table: TCP
//! connections accepted, refused at accept, CONNECT packets received and CONNECTs accepted,
//! per source address. Set beside the XDP SYN counts they show the SYNs that never became MQTT
//! sessions (scanners, SYN floods) and the sessions that keep coming back (reconnect storms).
//!
//! Bounded like the kernel table: at most `limits.max_accounted_sources` addresses. The table
//! is split into shards, each a small mutex-protected map, so the I/O threads that accept in
//! parallel rarely meet on one lock; a shard that is full forgets its least recently active
//! eighth at once (counted in [`SourceTable::evictions`]), which keeps the cost of a new source
//! constant on average. Memory: about 80 bytes per tracked source.
//!
//! Every accepted connection is counted here (its accept, its CONNECT and, in the same call,
//! its session), so both the shard choice and the shard's map hash with `ahash` (keyed at
//! random per table, as the session registry's client ids are): SipHash, std's default, cost
//! ~190 instructions per hash, two hashes per record, a tenth of a connection's user-space
//! instructions (RESULTS.md, session 11).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Default `limits.max_accounted_sources`.
pub const DEFAULT_MAX_SOURCES: usize = 65_536;
/// Most shards: enough to keep a few I/O threads apart, few enough to scan on a scrape.
const MAX_SHARDS: usize = 16;
/// Fewest sources per shard: below `MIN_SHARD_CAPACITY * 2` sources the table has one shard.
const MIN_SHARD_CAPACITY: usize = 64;
/// A full shard forgets this fraction (1/N) of its sources at once.
const EVICT_FRACTION: usize = 8;

/// What happened on a connection from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEvent {
    /// `accept()` returned a TCP connection from it.
    Accepted,
    /// That connection was closed at once by a limit (`limits.max_connections`, the
    /// per-source limits or bans, or a TLS/WebSocket layer that could not be created).
    Refused,
    /// A well-formed CONNECT arrived on one of its connections.
    Connect,
    /// A CONNECT passed authentication and the limits and claimed its session.
    Session,
}

/// The counts of one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    /// TCP connections accepted.
    pub accepts: u64,
    /// Of those, closed at accept by a limit.
    pub refused: u64,
    /// CONNECT packets received.
    pub connects: u64,
    /// CONNECTs accepted (sessions started or resumed).
    pub sessions: u64,
}

impl SourceCounts {
    fn add(&mut self, event: SourceEvent) {
        let c = match event {
            SourceEvent::Accepted => &mut self.accepts,
            SourceEvent::Refused => &mut self.refused,
            SourceEvent::Connect => &mut self.connects,
            SourceEvent::Session => &mut self.sessions,
        };
        *c = c.saturating_add(1);
    }

    /// The ranking key: accepts, then CONNECTs, then sessions (busiest first).
    fn rank(&self) -> (u64, u64, u64) {
        (self.accepts, self.connects, self.sessions)
    }
}

/// One source and its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// The address; IPv4 clients of a dual-stack listener are shown as IPv4.
    pub source: IpAddr,
    /// Its counts.
    #[serde(flatten)]
    pub counts: SourceCounts,
}

/// Orders entries busiest first (accepts, CONNECTs, sessions), then by address.
fn busiest_first(a: &SourceEntry, b: &SourceEntry) -> std::cmp::Ordering {
    b.counts
        .rank()
        .cmp(&a.counts.rank())
        .then_with(|| a.source.cmp(&b.source))
}

#[derive(Debug)]
struct Slot {
    counts: SourceCounts,
    /// The shard's event number of the last event (recency for eviction).
    last: u64,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<IpAddr, Slot, ahash::RandomState>,
    /// Events seen by this shard: a logical clock, so nothing here reads the time.
    events: u64,
    /// Most sources this shard keeps.
    capacity: usize,
}

impl Shard {
    /// Forgets the least recently active sources so one more fits; returns how many.
    fn make_room(&mut self) -> usize {
        if self.map.len() < self.capacity {
            return 0;
        }
        let n = (self.map.len() / EVICT_FRACTION).max(1);
        let mut lasts: Vec<u64> = self.map.values().map(|s| s.last).collect();
        // Every event number is distinct within a shard, so exactly `n` entries are at or
        // below the n-th smallest.
        let (_, cut, _) = lasts.select_nth_unstable(n - 1);
        let cut = *cut;
        self.map.retain(|_, s| s.last > cut);
        n
    }
}

/// The bounded per-source table; shared by every I/O thread (see the module docs).
#[derive(Debug)]
pub struct SourceTable {
    shards: Box<[Mutex<Shard>]>,
    hasher: ahash::RandomState,
    max: usize,
    evictions: AtomicU64,
}

impl SourceTable {
    /// A table keeping at most `max` sources (at least 1).
    pub fn new(max: usize) -> SourceTable {
        let max = max.max(1);
        // Shards only pay off with room in each: a small table is one shard (exact LRU-ish
        // eviction instead of collisions between tiny shards).
        let n = (max / MIN_SHARD_CAPACITY).clamp(1, MAX_SHARDS);
        let shards = (0..n)
            .map(|i| {
                Mutex::new(Shard {
                    capacity: max / n + usize::from(i < max % n),
                    ..Shard::default()
                })
            })
            .collect();
        SourceTable {
            shards,
            hasher: ahash::RandomState::new(),
            max,
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, ip: &IpAddr) -> MutexGuard<'_, Shard> {
        // `usize` from a u64 hash: truncation on 32-bit targets is fine for picking a shard.
        let i = (self.hasher.hash_one(ip) as usize) % self.shards.len();
        // Each method leaves a shard consistent between statements (plain map updates), so
        // a shard poisoned by a panicking thread is safe to keep using.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `event` for `ip` (IPv4-mapped IPv6 addresses count as their IPv4 address).
    pub fn record(&self, ip: IpAddr, event: SourceEvent) {
        self.record_each(ip, &[event]);
    }

    /// Counts each of `events` for `ip` under one lock and one lookup (a CONNECT and the
    /// session it started); like that many [`Self::record`] calls in a row.
    pub fn record_each(&self, ip: IpAddr, events: &[SourceEvent]) {
        let ip = ip.to_canonical();
        let mut shard = self.shard(&ip);
        shard.events += 1;
        let now = shard.events;
        if let Some(slot) = shard.map.get_mut(&ip) {
            events.iter().for_each(|&e| slot.counts.add(e));
            slot.last = now;
            return;
        }
        let evicted = shard.make_room();
        let mut counts = SourceCounts::default();
        events.iter().for_each(|&e| counts.add(e));
        shard.map.insert(ip, Slot { counts, last: now });
        drop(shard);
        if evicted > 0 {
            self.evictions.fetch_add(evicted as u64, Relaxed);
        }
    }

    /// The counts of `ip`, zero when it is not tracked.
    pub fn get(&self, ip: IpAddr) -> SourceCounts {
        let ip = ip.to_canonical();
        self.shard(&ip)
            .map
            .get(&ip)
            .map(|s| s.counts)
            .unwrap_or_default()
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound (`limits.max_accounted_sources`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Sources forgotten to stay within the bound, since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }

    /// The `k` busiest sources, busiest first (accepts, then CONNECTs, then sessions).
    pub fn top(&self, k: usize) -> Vec<SourceEntry> {
        if k == 0 {
            return Vec::new();
        }
        let mut out: Vec<SourceEntry> = Vec::new();
        for shard in self.shards.iter() {
            let mut part: Vec<SourceEntry> = shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map
                .iter()
                .map(|(ip, s)| SourceEntry {
                    source: *ip,
                    counts: s.counts,
                })
                .collect();
            if part.len() > k {
                part.select_nth_unstable_by(k - 1, busiest_first);
                part.truncate(k);
            }
            out.extend(part);
        }
        out.sort_unstable_by(busiest_first);
        out.truncate(k);
        out
    }

    /// `tracked`, `max`, `evictions` and the top `k`, for `/status`.
    pub fn summary(&self, k: usize) -> SourcesSummary {
        SourcesSummary {
            tracked: self.len() as u64,
            max: self.max as u64,
            evictions: self.evictions(),
            top: self.top(k),
        }
    }
}

/// The `sources` part of `/status` and `GET /xdp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesSummary {
    /// Sources tracked now.
    pub tracked: u64,
    /// The bound (`limits.max_accounted_sources`).
    pub max: u64,
    /// Sources forgotten to stay within the bound.
    pub evictions: u64,
    /// The busiest sources (at most `xdp.top_k`), busiest first.
    pub top: Vec<SourceEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn bump(t: &SourceTable, addr: &str, events: &[(SourceEvent, usize)]) {
        for &(e, n) in events {
            for _ in 0..n {
                t.record(ip(addr), e);
            }
        }
    }

    #[test]
    fn counts_each_event_per_source() {
        use SourceEvent::*;
        let t = SourceTable::new(100);
        bump(&t, "10.0.0.1", &[(Accepted, 5), (Connect, 4), (Session, 3)]);
        bump(&t, "10.0.0.2", &[(Accepted, 2), (Refused, 2)]);
        assert_eq!(
            t.get(ip("10.0.0.1")),
            SourceCounts {
                accepts: 5,
                refused: 0,
                connects: 4,
                sessions: 3
            }
        );
        assert_eq!(t.get(ip("10.0.0.2")).refused, 2);
        assert_eq!(t.get(ip("10.0.0.3")), SourceCounts::default());
        assert_eq!(t.len(), 2);
        assert_eq!(t.evictions(), 0);
    }

    #[test]
    fn one_record_of_several_events_counts_each() {
        use SourceEvent::*;
        let t = SourceTable::new(100);
        // A CONNECT that started a session, one refused, for a tracked and a new source.
        bump(&t, "10.0.0.1", &[(Accepted, 2)]);
        t.record_each(ip("10.0.0.1"), &[Connect, Session]);
        t.record_each(ip("10.0.0.1"), &[Connect]);
        t.record_each(ip("::ffff:10.0.0.2"), &[Connect, Session]);
        assert_eq!(
            t.get(ip("10.0.0.1")),
            SourceCounts {
                accepts: 2,
                refused: 0,
                connects: 2,
                sessions: 1
            }
        );
        assert_eq!(
            t.get(ip("10.0.0.2")),
            SourceCounts {
                connects: 1,
                sessions: 1,
                ..SourceCounts::default()
            }
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let t = SourceTable::new(10);
        t.record(ip("::ffff:10.0.0.7"), SourceEvent::Accepted);
        t.record(ip("10.0.0.7"), SourceEvent::Accepted);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(ip("10.0.0.7")).accepts, 2);
        assert_eq!(t.top(1)[0].source, ip("10.0.0.7"));
        // A real IPv6 address is its own source.
        t.record(ip("fd00::7"), SourceEvent::Accepted);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn never_holds_more_than_the_bound_and_counts_evictions() {
        for max in [1, 7, 16, 100, 1000] {
            let t = SourceTable::new(max);
            for i in 0..(3 * max as u32 + 50) {
                t.record(IpAddr::V4((0x0a00_0000 + i).into()), SourceEvent::Accepted);
                assert!(t.len() <= max, "max {max}: {} tracked", t.len());
            }
            assert!(t.evictions() > 0, "max {max}");
            // Every source that is not tracked any more was counted as evicted.
            let distinct = 3 * max as u64 + 50;
            assert_eq!(t.evictions() + t.len() as u64, distinct, "max {max}");
        }
    }

    #[test]
    fn eviction_forgets_the_least_recently_active() {
        // A bound of 1 is a single shard, where recency is exact.
        let t = SourceTable::new(1);
        t.record(ip("10.0.0.1"), SourceEvent::Accepted);
        t.record(ip("10.0.0.2"), SourceEvent::Accepted);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(ip("10.0.0.1")), SourceCounts::default());
        assert_eq!(t.get(ip("10.0.0.2")).accepts, 1);
        assert_eq!(t.evictions(), 1);
    }

    #[test]
    fn busy_sources_survive_a_flood_of_new_ones() {
        // The shard of a source that keeps connecting keeps it: floods of one-shot sources
        // are evicted first because they are the least recently active.
        let t = SourceTable::new(64);
        for i in 0..10_000u32 {
            t.record(ip("192.0.2.1"), SourceEvent::Accepted);
            t.record(IpAddr::V4((0x0a00_0000 + i).into()), SourceEvent::Accepted);
        }
        assert_eq!(t.get(ip("192.0.2.1")).accepts, 10_000);
        assert_eq!(t.top(1)[0].source, ip("192.0.2.1"));
        assert!(t.len() <= 64);
    }

    #[test]
    fn top_k_is_the_busiest_in_order() {
        let t = SourceTable::new(1000);
        for i in 1..=200u32 {
            let addr = IpAddr::V4((0x0a00_0000 + i).into());
            for _ in 0..i {
                t.record(addr, SourceEvent::Accepted);
            }
        }
        let top = t.top(5);
        let accepts: Vec<u64> = top.iter().map(|e| e.counts.accepts).collect();
        assert_eq!(accepts, [200, 199, 198, 197, 196]);
        assert_eq!(top[0].source, IpAddr::V4((0x0a00_0000 + 200).into()));
        assert_eq!(t.top(0), Vec::new());
        assert_eq!(t.top(5000).len(), 200);
        // Ties: more CONNECTs first, then the lower address.
        let t = SourceTable::new(10);
        bump(&t, "10.0.0.9", &[(SourceEvent::Accepted, 1)]);
        bump(&t, "10.0.0.8", &[(SourceEvent::Accepted, 1)]);
        bump(
            &t,
            "10.0.0.10",
            &[(SourceEvent::Accepted, 1), (SourceEvent::Connect, 1)],
        );
        let order: Vec<String> = t.top(3).iter().map(|e| e.source.to_string()).collect();
        assert_eq!(order, ["10.0.0.10", "10.0.0.8", "10.0.0.9"]);
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let t = std::sync::Arc::new(SourceTable::new(1000));
        let threads: Vec<_> = (0..4u32)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        t.record(
                            IpAddr::V4((0x0a00_0000 + i % 50).into()),
                            SourceEvent::Accepted,
                        );
                        t.record(IpAddr::V4((0x0b00_0000 + n).into()), SourceEvent::Connect);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let total: u64 = t.top(1000).iter().map(|e| e.counts.accepts).sum();
        assert_eq!(total, 4000);
        assert_eq!(t.get(IpAddr::V4((0x0b00_0002).into())).connects, 1000);
        assert_eq!(t.len(), 54);
    }

    #[test]
    fn summary_serialises_flat_rows() {
        let t = SourceTable::new(10);
        bump(&t, "10.0.0.1", &[(SourceEvent::Accepted, 2)]);
        let json = serde_json::to_value(t.summary(5)).unwrap();
        assert_eq!(json["tracked"], 1);
        assert_eq!(json["max"], 10);
        assert_eq!(json["evictions"], 0);
        assert_eq!(json["top"][0]["source"], "10.0.0.1");
        assert_eq!(json["top"][0]["accepts"], 2);
        let back: SourcesSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, t.summary(5));
    }
}
