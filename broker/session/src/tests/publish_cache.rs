//! The shared encode cache: a cached PUBLISH is byte for byte what the connection would
//! have encoded itself, with its own packet identifier; forms that differ per receiver are
//! never taken from the cache.

use std::sync::Arc;
use std::time::Duration;

use halyard_codec::{ConnectProperties, Packet, ProtocolVersion, Publish, QoS};
use smallvec::smallvec;

use super::util::{Pair, VERSIONS, connect, delivery, message};
use crate::{Delivery, PUBLISH_CACHE_SLOTS, PUBLISH_CACHE_WAYS, PublishCache, SessionConfig};

/// The single PUBLISH `pair` transmitted.
fn one_publish(pair: &mut Pair) -> Publish {
    let packets = pair.recv();
    let found: Vec<Publish> = packets
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().expect("one PUBLISH")
}

#[test]
fn cached_publish_equals_a_fresh_encoding_with_its_own_packet_id() {
    for v in VERSIONS {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let mut cache = PublishCache::new();
            let mut first = Pair::connected(v, SessionConfig::default());
            let mut second = Pair::connected(v, SessionConfig::default());
            let mut plain = Pair::connected(v, SessionConfig::default());
            // `second` has used packet id 1 already: its copy must carry 2.
            second
                .conn
                .deliver(second.now, delivery("other", QoS::AtLeastOnce));
            let _ = second.recv();
            let sent_before = second.conn.stats().publish_out;
            let mut m = message("fan/out", qos);
            m.retain = true;
            let d = Delivery {
                message: Arc::new(m),
                qos,
                retain: true,
                subscription_ids: smallvec![],
                packet_id: None,
            };
            first.conn.deliver_cached(first.now, d.clone(), &mut cache);
            second
                .conn
                .deliver_cached(second.now, d.clone(), &mut cache);
            plain.conn.deliver(plain.now, d);
            let (a, b, p) = (
                one_publish(&mut first),
                one_publish(&mut second),
                one_publish(&mut plain),
            );
            assert_eq!((cache.misses, cache.hits), (1, 1), "{v:?} {qos:?}");
            assert_eq!(a, p, "{v:?} {qos:?}");
            let expected_id = if qos == QoS::AtMostOnce { 0 } else { 2 };
            assert_eq!(b.packet_id, expected_id, "{v:?} {qos:?}");
            assert_eq!(
                Publish {
                    packet_id: p.packet_id,
                    ..b
                },
                p,
                "{v:?} {qos:?}"
            );
            let q = usize::from(qos.as_u8());
            assert_eq!(second.conn.stats().publish_out[q], sent_before[q] + 1);
        }
    }
}

#[test]
fn per_receiver_forms_are_not_cached() {
    let mut cache = PublishCache::new();
    // 5.0 with subscription identifiers.
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut d = delivery("ids", QoS::AtMostOnce);
    d.subscription_ids = smallvec![7];
    pair.conn.deliver_cached(pair.now, d.clone(), &mut cache);
    let mut other = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    d.subscription_ids = smallvec![8];
    other.conn.deliver_cached(other.now, d, &mut cache);
    assert_eq!(
        one_publish(&mut pair).properties.subscription_identifiers,
        [7]
    );
    assert_eq!(
        one_publish(&mut other).properties.subscription_identifiers,
        [8]
    );
    // 5.0 with a Message Expiry Interval (it counts down between receivers).
    let mut m = message("exp", QoS::AtMostOnce);
    m.expires_at = Some(pair.now + Duration::from_secs(60));
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtMostOnce,
        retain: false,
        subscription_ids: smallvec![],
        packet_id: None,
    };
    pair.conn.deliver_cached(pair.now, d, &mut cache);
    assert_eq!(
        one_publish(&mut pair).properties.message_expiry_interval,
        Some(60)
    );
    assert_eq!((cache.misses, cache.hits), (0, 0));
}

/// A message whose delivery holds its only reference (point to point) is encoded for its
/// receiver and not kept: no other receiver can be given it. A message still held elsewhere
/// (another receiver's copy on its way) is kept and taken by the next receiver.
#[test]
fn a_message_nothing_else_holds_is_not_cached() {
    for v in VERSIONS {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let mut cache = PublishCache::new();
            let mut pair = Pair::connected(v, SessionConfig::default());
            let only = delivery("p2p", qos);
            let message = Arc::downgrade(&only.message);
            pair.conn.deliver_cached(pair.now, only, &mut cache);
            assert_eq!(one_publish(&mut pair).topic.as_str(), "p2p");
            assert_eq!((cache.misses, cache.hits), (0, 0), "{v:?} {qos:?}");
            if qos == QoS::AtMostOnce {
                // Sent and not kept: the message is gone.
                assert!(message.upgrade().is_none(), "{v:?}");
            }
            let shared = delivery("fan", qos);
            let mut other = Pair::connected(v, SessionConfig::default());
            pair.conn
                .deliver_cached(pair.now, shared.clone(), &mut cache);
            other.conn.deliver_cached(other.now, shared, &mut cache);
            assert_eq!(one_publish(&mut pair).topic.as_str(), "fan");
            assert_eq!(one_publish(&mut other).topic.as_str(), "fan");
            assert_eq!((cache.misses, cache.hits), (1, 1), "{v:?} {qos:?}");
        }
    }
}

#[test]
fn default_cache_caches_nothing() {
    let mut cache = PublishCache::default();
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        let d = delivery("a", QoS::AtLeastOnce);
        pair.conn.deliver_cached(pair.now, d.clone(), &mut cache);
        pair.conn.deliver_cached(pair.now, d, &mut cache);
        let packets = pair.recv();
        assert_eq!(packets.len(), 2);
    }
    assert_eq!((cache.misses, cache.hits), (0, 0));
}

/// A 5.0 receiver that takes topic aliases gets its own encoding (topic and alias, then
/// alias only), never the shared bytes of the other receivers, before or after them.
#[test]
fn a_receiver_with_topic_aliases_never_gets_the_shared_bytes() {
    let mut cache = PublishCache::new();
    let mut plain = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut aliased = Pair::new(
        SessionConfig {
            max_topic_alias_out: 5,
            ..SessionConfig::default()
        },
        ProtocolVersion::V5,
    );
    let mut c = connect(ProtocolVersion::V5, "aliased");
    c.properties = ConnectProperties {
        topic_alias_maximum: Some(3),
        ..ConnectProperties::default()
    };
    aliased.establish(c, None);
    let mut after = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let d = delivery("fan/alias", qos);
        plain.conn.deliver_cached(plain.now, d.clone(), &mut cache);
        aliased
            .conn
            .deliver_cached(aliased.now, d.clone(), &mut cache);
        after.conn.deliver_cached(after.now, d, &mut cache);
        let (p, a, b) = (
            one_publish(&mut plain),
            one_publish(&mut aliased),
            one_publish(&mut after),
        );
        assert_eq!(p.properties.topic_alias, None);
        assert_eq!(
            b, p,
            "the receiver after the aliased one gets the shared form"
        );
        assert_eq!(a.properties.topic_alias, Some(1), "{qos:?}");
        let topic = if qos == QoS::AtMostOnce {
            "fan/alias"
        } else {
            ""
        };
        assert_eq!(a.topic.as_str(), topic, "{qos:?}");
    }
    // Per form: one encode and one copy; the aliased receiver encoded its own, uncounted.
    assert_eq!((cache.misses, cache.hits), (2, 2));
}

/// `n` deliveries on `burst/0..n` whose messages fill no set of `cache` beyond its ways.
/// Which set a message takes depends on its address, so the allocator decides; the
/// messages passed over stay alive in the second vector so that their addresses are not
/// handed out again.
fn burst_within_ways(cache: &PublishCache, n: usize) -> (Vec<Delivery>, Vec<Delivery>) {
    let mut per_set = vec![0usize; PUBLISH_CACHE_SLOTS / PUBLISH_CACHE_WAYS];
    let (mut burst, mut passed_over) = (Vec::new(), Vec::new());
    for _ in 0..n * 100 {
        if burst.len() == n {
            break;
        }
        let d = delivery(&format!("burst/{}", burst.len()), QoS::AtLeastOnce);
        let set = cache.set_of(&d.message).expect("a cache with slots");
        if per_set[set] < PUBLISH_CACHE_WAYS {
            per_set[set] += 1;
            burst.push(d);
        } else {
            passed_over.push(d);
        }
    }
    assert_eq!(burst.len(), n, "found {n} messages that fit their sets");
    (burst, passed_over)
}

/// A burst of messages (a subscriber's window) fanned out to several receivers one after
/// the other is encoded once per message: messages of the burst that fit their sets (at
/// most `PUBLISH_CACHE_WAYS` per set) do not evict each other.
#[test]
fn a_burst_is_encoded_once_per_message() {
    for v in VERSIONS {
        let mut cache = PublishCache::new();
        let (burst, _passed_over) = burst_within_ways(&cache, 64);
        let cfg = SessionConfig {
            max_inflight: 64,
            ..SessionConfig::default()
        };
        let mut receivers: Vec<Pair> = (0..3).map(|_| Pair::connected(v, cfg.clone())).collect();
        for r in &mut receivers {
            for d in &burst {
                r.conn.deliver_cached(r.now, d.clone(), &mut cache);
            }
            let packets = r.recv();
            assert_eq!(packets.len(), burst.len());
            for (i, p) in packets.iter().enumerate() {
                match p {
                    Packet::Publish(p) => {
                        assert_eq!(p.topic.as_str(), format!("burst/{i}"));
                        assert_eq!(usize::from(p.packet_id), i + 1);
                    }
                    other => panic!("expected PUBLISH, got {other:?}"),
                }
            }
        }
        assert_eq!((cache.misses, cache.hits), (64, 128), "{v:?}");
    }
}
