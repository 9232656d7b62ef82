//! The shared encode cache: a cached PUBLISH is byte for byte what the connection would
//! have encoded itself, with its own packet identifier; forms that differ per receiver are
//! never taken from the cache.

use std::sync::Arc;
use std::time::Duration;

use halyard_codec::{Packet, ProtocolVersion, Publish, QoS};
use smallvec::smallvec;

use super::util::{Pair, VERSIONS, delivery, message};
use crate::{Delivery, PublishCache, SessionConfig};

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
