//! SUBSCRIBEs that reach the broker together. Halyard writes the filters of the SUBSCRIBEs an
//! I/O thread handles in the same round into its subscription trie as one batch
//! (`broker/server/src/conn/subscribe.rs`); these tests check what a client sees: each
//! SUBACK answers its own packet (its codes in its filters' order, refusals included), and
//! each subscription is in place once its SUBACK arrived (deliveries at the granted QoS,
//! retained messages). Halyard only (the batch counters); run on both backends with
//! `HALYARD_TEST_BACKEND=uring|epoll`.

use halyard_tests::raw::{self, Packet, Publish, RawClient, Version};
use halyard_tests::{TestBroker, require_halyard};

/// Subscribers whose SUBSCRIBEs are all sent before any SUBACK is read.
const N: usize = 120;

fn version(i: usize) -> Version {
    if i % 2 == 0 {
        Version::V311
    } else {
        Version::V5
    }
}

/// The topic and QoS of a PUBLISH.
fn topic_qos(p: &Packet) -> (String, u8) {
    match p {
        Packet::Publish { topic, qos, .. } => (topic.clone(), *qos),
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

#[test]
fn subscribes_sent_together_each_get_their_own_suback_and_deliveries() {
    require_halyard();
    let b = TestBroker::start();
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "batch-pub");
    p.publish(&Publish::new("batch/retained", b"kept").qos(1, 1).retain());
    let mut subs: Vec<RawClient> = (0..N)
        .map(|i| RawClient::connected(b.mqtt_addr(), version(i), &format!("batch-sub-{i}")))
        .collect();
    // Every SUBSCRIBE first (each client's own filter at its own QoS, an invalid filter the
    // session refuses before the trie, a filter all share, the retained topic), then the
    // answers.
    for (i, s) in subs.iter_mut().enumerate() {
        let own = format!("batch/own/{i}");
        let filters = [
            (own.as_str(), (i % 2) as u8),
            ("batch/bad/#/x", 0),
            ("batch/all", 1),
            ("batch/retained", 0),
        ];
        s.send(&raw::subscribe(
            version(i),
            i as u16 + 1,
            &filters,
            &raw::Props::new(),
        ));
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let refused = if version(i) == Version::V5 {
            0x8F
        } else {
            0x80
        };
        match s.recv_until(|p| matches!(p, Packet::SubAck { .. })) {
            Packet::SubAck { pid, codes } => {
                assert_eq!(pid, i as u16 + 1, "SUBACK of subscriber {i}");
                assert_eq!(
                    codes,
                    vec![(i % 2) as u8, refused, 1, 0],
                    "SUBACK codes of subscriber {i}"
                );
            }
            _ => unreachable!("recv_until returned a SUBACK"),
        }
        // The retained message follows the SUBACK of its subscription.
        let m = s.recv_publish();
        assert_eq!(
            topic_qos(&m),
            ("batch/retained".into(), 0),
            "subscriber {i}"
        );
    }
    for i in 0..N {
        let body = format!("own-{i}");
        p.publish(&Publish::new(&format!("batch/own/{i}"), body.as_bytes()).qos(1, 2));
    }
    p.publish(&Publish::new("batch/all", b"all").qos(1, 3));
    for (i, s) in subs.iter_mut().enumerate() {
        let own = s.recv_publish();
        assert_eq!(
            topic_qos(&own),
            (format!("batch/own/{i}"), (i % 2) as u8),
            "subscriber {i}: its own topic at its granted QoS"
        );
        let Packet::Publish { payload, .. } = &own else {
            unreachable!()
        };
        assert_eq!(payload, format!("own-{i}").as_bytes());
        s.ack_publish(&own);
        let all = s.recv_publish();
        assert_eq!(topic_qos(&all), ("batch/all".into(), 1), "subscriber {i}");
        s.ack_publish(&all);
    }
    // Every filter the trie took was counted in a batch (3 per subscriber: the invalid one
    // never reaches the trie), in no more batches than filters.
    let m = b.metrics();
    let filters = m.get("halyard_subscribe_trie_filters_total").unwrap_or(0.0);
    let batches = m.get("halyard_subscribe_trie_batches_total").unwrap_or(0.0);
    assert_eq!(filters, (3 * N) as f64, "filters written");
    assert!(
        batches >= 1.0 && batches <= N as f64,
        "{batches} batches for {N} SUBSCRIBEs"
    );
}
