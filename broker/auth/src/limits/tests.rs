use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg() -> LimitsConfig {
    LimitsConfig {
        max_connections_per_source: 3,
        connect_rate_per_source: 10,
        connect_burst_per_source: 5,
        max_tracked_sources: 4,
        flap_max_connects: 3,
        flap_window_secs: 10,
        flap_ban_secs: 60,
        flap_max_tracked: 2,
        max_bans: 10,
        ..LimitsConfig::default()
    }
}

#[test]
fn config_defaults_and_keys() {
    let c: LimitsConfig = toml::from_str("").unwrap();
    assert_eq!(c, LimitsConfig::default());
    assert_eq!(c.max_connections_per_source, 1000);
    assert_eq!(
        (c.connect_rate_per_source, c.connect_burst_per_source),
        (200, 500)
    );
    assert_eq!(
        (c.flap_max_connects, c.flap_window_secs, c.flap_ban_secs),
        (30, 60, 300)
    );
    let c: LimitsConfig = toml::from_str("flap_max_connects = 0\nmax_bans = 5").unwrap();
    assert_eq!((c.flap_max_connects, c.max_bans), (0, 5));
    assert!(toml::from_str::<LimitsConfig>("max_connections = 1").is_err());
}

#[test]
fn connections_per_source_are_capped_and_released() {
    let mut l = SourceLimiter::new(&LimitsConfig {
        connect_rate_per_source: 0,
        ..cfg()
    });
    let a = ip("192.0.2.1");
    for _ in 0..3 {
        l.try_open(a, 0).unwrap();
    }
    assert_eq!(l.try_open(a, 0), Err(Refusal::SourceConnections));
    assert_eq!(
        l.try_open(ip("::ffff:192.0.2.1"), 0),
        Err(Refusal::SourceConnections)
    );
    l.try_open(ip("192.0.2.2"), 0).unwrap();
    l.close(a);
    assert_eq!(l.open_connections(a), 2);
    l.try_open(a, 0).unwrap();
    assert_eq!(l.counters().source_connections, 2);
}

#[test]
fn ipv6_sources_are_grouped_by_prefix() {
    let mut l = SourceLimiter::new(&LimitsConfig {
        connect_rate_per_source: 0,
        ..cfg()
    });
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
        l.try_open(ip(host), 0).unwrap();
    }
    assert_eq!(
        l.try_open(ip("2001:db8:1:2::77"), 0),
        Err(Refusal::SourceConnections)
    );
    l.try_open(ip("2001:db8:1:3::1"), 0).unwrap();
}

#[test]
fn the_source_table_is_bounded() {
    let mut l = SourceLimiter::new(&LimitsConfig {
        connect_rate_per_source: 0,
        ..cfg()
    });
    for i in 1..=4 {
        l.try_open(ip(&format!("10.0.0.{i}")), 0).unwrap();
    }
    assert_eq!(l.try_open(ip("10.0.0.5"), 0), Err(Refusal::SourceTableFull));
    l.try_open(ip("10.0.0.1"), 0).unwrap();
    l.close(ip("10.0.0.2"));
    l.try_open(ip("10.0.0.5"), 0).unwrap();
    assert_eq!(l.counters().source_table_full, 1);
}

#[test]
fn connect_rate_is_a_token_bucket() {
    let mut l = SourceLimiter::new(&LimitsConfig {
        max_connections_per_source: 0,
        ..cfg()
    });
    let a = ip("198.51.100.4");
    for _ in 0..5 {
        l.try_open(a, 1_000).unwrap();
    }
    assert_eq!(l.try_open(a, 1_000), Err(Refusal::SourceRate));
    // 10 per second: one token every 100 ms.
    assert_eq!(l.try_open(a, 1_099), Err(Refusal::SourceRate));
    l.try_open(a, 1_100).unwrap();
    assert_eq!(l.try_open(a, 1_100), Err(Refusal::SourceRate));
    // Refill stops at the burst size.
    for _ in 0..5 {
        l.try_open(a, 100_000).unwrap();
    }
    assert_eq!(l.try_open(a, 100_000), Err(Refusal::SourceRate));
    // Other sources have their own bucket; time going backwards takes nothing away.
    l.try_open(ip("198.51.100.5"), 0).unwrap();
    assert_eq!(l.counters().source_rate, 4);
}

#[test]
fn rate_buckets_are_bounded() {
    let mut l = SourceLimiter::new(&LimitsConfig {
        max_connections_per_source: 0,
        ..cfg()
    });
    for i in 0..10 {
        l.try_open(ip(&format!("10.0.1.{i}")), 0).unwrap();
    }
    assert!(l.buckets.len() <= 4);
    assert_eq!(l.counters().rate_evictions, 6);
}

#[test]
fn flapping_client_ids_get_banned() {
    let mut f = FlapDetector::new(3, 10_000, 60_000, 100);
    for t in [0, 1, 2] {
        assert_eq!(f.record("dev", t), None);
    }
    assert_eq!(f.record("dev", 3), Some(60_003));
    // A new window after the ban restarts the count.
    assert_eq!(f.record("dev", 4), None);
    // Connects spread over windows never trip it.
    let mut g = FlapDetector::new(3, 10_000, 60_000, 100);
    for i in 0..30 {
        assert_eq!(g.record("slow", i * 4_000), None, "connect {i}");
    }
    assert_eq!(
        FlapDetector::new(0, 1, 1, 1).record("x", 0),
        None,
        "disabled"
    );
    assert_eq!(f.bans(), 1);
}

#[test]
fn flap_table_is_bounded() {
    let mut f = FlapDetector::new(1, 10_000, 60_000, 2);
    f.record("a", 0);
    f.record("b", 0);
    f.record("c", 0);
    assert_eq!(f.tracked(), 2);
    assert_eq!(f.evictions(), 1);
    // "a" was forgotten, so its next connect starts a fresh count.
    assert_eq!(f.record("a", 1), None);
    assert_eq!(f.record("c", 1), Some(60_001));
}

#[test]
fn guard_checks_bans_then_flapping() {
    let mut g = ConnectGuard::new(&cfg());
    let a = Some(ip("203.0.113.9"));
    for t in 0..3 {
        g.on_connect("dev", None, a, t).unwrap();
    }
    assert_eq!(g.on_connect("dev", None, a, 3), Err(Refusal::Flapping));
    assert_eq!(g.on_connect("dev", None, a, 4), Err(Refusal::Banned));
    let bans = g.bans().list();
    assert_eq!(bans.len(), 1);
    assert_eq!(
        (bans[0].until_ms, bans[0].reason.as_str()),
        (Some(60_003), "flapping")
    );
    assert!(g.on_connect("dev", None, a, 60_003).is_ok(), "ban expired");

    g.bans_mut()
        .add(
            Ban {
                kind: BanKind::Address,
                value: "203.0.113.0/24".into(),
                until_ms: None,
                reason: String::new(),
            },
            0,
        )
        .unwrap();
    assert_eq!(
        g.on_connect("other", Some("u"), a, 70_000),
        Err(Refusal::Banned)
    );
    assert!(g.on_connect("other", Some("u"), None, 70_000).is_ok());
    let c = g.counters();
    assert_eq!((c.banned, c.flap_bans), (2, 1));
}

#[test]
fn guard_counts_accepts() {
    let mut g = ConnectGuard::new(&LimitsConfig {
        connect_rate_per_source: 0,
        ..cfg()
    });
    let a = ip("203.0.113.1");
    for _ in 0..3 {
        g.on_accept(a, 0).unwrap();
    }
    assert_eq!(g.on_accept(a, 0), Err(Refusal::SourceConnections));
    g.on_close(a);
    g.on_accept(a, 0).unwrap();
    assert_eq!(g.sources().open_connections(a), 3);
    assert_eq!(g.counters().source_connections, 1);
    let names: Vec<&str> = g.counters().named().iter().map(|(n, _)| *n).collect();
    assert!(names.contains(&"source_connections") && names.contains(&"flap_bans"));
}

#[test]
fn repeated_login_failures_throttle_the_source() {
    let mut g = ConnectGuard::new(&LimitsConfig {
        auth_failures_per_source: 2,
        auth_failure_window_secs: 10,
        flap_max_connects: 0,
        ..cfg()
    });
    let a = ip("192.0.2.50");
    g.on_connect("c", Some("u"), Some(a), 0).unwrap();
    g.on_auth_failure(a, 0);
    g.on_connect("c", Some("u"), Some(a), 1).unwrap();
    g.on_auth_failure(a, 1);
    assert_eq!(
        g.on_connect("c", Some("u"), Some(a), 2),
        Err(Refusal::AuthFailures)
    );
    // Anonymous CONNECTs cost no hash and are not throttled; other sources are unaffected.
    g.on_connect("c", None, Some(a), 2).unwrap();
    g.on_connect("c", Some("u"), Some(ip("192.0.2.51")), 2)
        .unwrap();
    // The window ends.
    g.on_connect("c", Some("u"), Some(a), 10_000).unwrap();
    assert_eq!(g.counters().auth_failures, 1);
    assert_eq!(Refusal::AuthFailures.reason_code_v5(), 0x9F);
}

#[test]
fn refusal_codes() {
    assert_eq!(Refusal::Banned.reason_code_v5(), 0x8A);
    assert_eq!(Refusal::Flapping.reason_code_v5(), 0x8A);
    assert_eq!(Refusal::SourceRate.reason_code_v5(), 0x9F);
    assert_eq!(Refusal::SourceConnections.reason_code_v5(), 0x97);
    assert_eq!(Refusal::Banned.return_code_v311(), 0x05);
    assert_eq!(Refusal::SourceRate.return_code_v311(), 0x03);
}

proptest! {
    /// Over any sequence of attempts, a source never gets more than
    /// burst + rate * elapsed admissions, and the tables stay bounded.
    #[test]
    fn token_bucket_never_exceeds_its_budget(
        steps in prop::collection::vec((0u64..400, 0u8..6), 1..200),
    ) {
        let c = LimitsConfig { max_connections_per_source: 0, ..cfg() };
        let mut l = SourceLimiter::new(&c);
        let mut now = 0u64;
        let mut admitted = [0u64; 6];
        for (dt, src) in steps {
            now += dt;
            let a = IpAddr::from([10, 9, 0, src]);
            if l.try_open(a, now).is_ok() {
                admitted[usize::from(src)] += 1;
            }
            prop_assert!(l.buckets.len() <= c.max_tracked_sources);
        }
        // An evicted bucket comes back full, so bound by evictions too.
        let refills = 1 + l.counters().rate_evictions;
        for n in admitted {
            let budget = refills * u64::from(c.connect_burst_per_source)
                + now * u64::from(c.connect_rate_per_source) / 1000;
            prop_assert!(n <= budget, "{} admitted, budget {}", n, budget);
        }
    }

    /// The flapping detector never tracks more ids than its bound, and never bans an id
    /// that connected at most `max` times in total.
    #[test]
    fn flap_detector_is_bounded(ids in prop::collection::vec(0u8..10, 1..300)) {
        let mut f = FlapDetector::new(3, 1_000, 5_000, 4);
        let mut seen = [0u32; 10];
        for (t, id) in ids.into_iter().enumerate() {
            seen[usize::from(id)] += 1;
            let banned = f.record(&id.to_string(), t as u64).is_some();
            prop_assert!(f.tracked() <= 4);
            prop_assert!(!banned || seen[usize::from(id)] > 3);
        }
    }
}
