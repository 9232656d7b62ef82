//! Multi-process cluster test of retained messages: three cores and two replicants, each a
//! real `halyard` process whose cluster listener sits on its own 127.0.0.x address, driven
//! by rumqttc clients.
//!
//! Checked: a retained message published on a core is received on subscribe on a replicant
//! and the other way round; a QoS 1 retained PUBLISH is acknowledged only once the update is
//! applied on the publishing node (a SUBSCRIBE there right after the PUBACK gets it); an
//! empty retained payload deletes it on every node; a replicant started after the publish
//! gets it from its bootstrap; a retained message with a Message Expiry Interval disappears
//! cluster-wide once expired; after every core is killed and restarted on its data
//! directory, the retained messages are still there.

use std::time::Duration;

use halyard_tests::cluster::{Cluster, FORM};
use halyard_tests::rumq::{v4, v5};
use halyard_tests::{require_halyard, wait_for};

/// Waits until every running node holds `n` retained messages in its replicated state.
fn wait_retained(cl: &Cluster, n: u64) {
    let ok = wait_for(FORM, || {
        cl.running()
            .all(|i| cl.status(i)["retained"].as_u64() == Some(n))
            .then_some(())
    });
    if ok.is_none() {
        panic!("nodes do not all hold {n} retained: {:#?}", cl.all_status());
    }
}

async fn client(c: &Cluster, node: usize, id: &str) -> v4::Client {
    v4::Client::connect(v4::opts(c.mqtt(node), id)).await.0
}

/// Subscribes a new client on `node` to `filter` and returns the retained messages it gets
/// (topic, payload), sorted, after a quiet window that would show extra copies.
async fn retained_on_subscribe(
    c: &Cluster,
    node: usize,
    id: &str,
    filter: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut s = client(c, node, id).await;
    s.subscribe(filter, v4::QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    while let Some(Ok(ev)) = s.next_event(Duration::from_millis(700)).await {
        if let v4::Event::Incoming(v4::Packet::Publish(p)) = ev {
            assert!(
                p.retain,
                "a message sent on subscribe carries RETAIN: {p:?}"
            );
            got.push((p.topic.clone(), p.payload.to_vec()));
        }
    }
    s.disconnect().await;
    got.sort();
    got
}

/// Asserts that a new subscriber to `ret/#` on each of `nodes` (node, client id) gets
/// exactly the one message left on `ret/core`.
async fn only_replaced_on(c: &Cluster, nodes: &[(usize, &str)], why: &str) {
    for &(node, id) in nodes {
        assert_eq!(
            retained_on_subscribe(c, node, id, "ret/#").await,
            vec![msg("ret/core", b"replaced")],
            "{why}, on {}",
            c.nodes[node].name
        );
    }
}

fn msg(topic: &str, payload: &[u8]) -> (String, Vec<u8>) {
    (topic.to_string(), payload.to_vec())
}

const C1: usize = 0;
const C2: usize = 1;
const C3: usize = 2;
const R1: usize = 3;
const R2: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_cluster_wide_durable_and_expire() {
    require_halyard();
    let mut cl = Cluster::new(
        "cluster-retained",
        20,
        &[
            ("c1", "core"),
            ("c2", "core"),
            ("c3", "core"),
            ("r1", "replicant"),
            ("r2", "replicant"),
        ],
    );
    for n in &mut cl.nodes {
        // Snapshots early and often, so restarts and bootstraps go through them.
        n.env
            .push(("HALYARD_CLUSTER__SNAPSHOT_EVERY_ENTRIES", "4".to_string()));
    }
    for i in [C1, C2, C3, R1] {
        cl.start(i);
    }
    cl.wait_formed(4);

    // Retained on a core, then on a replicant (QoS 1: acknowledged once applied on the
    // publishing node, so a subscriber there right after the PUBACK gets it).
    let mut pub_c = client(&cl, C1, "pub-c1").await;
    let mut pub_r = client(&cl, R1, "pub-r1").await;
    let first: [(&mut v4::Client, usize, v4::QoS, &str, &[u8]); 2] = [
        (
            &mut pub_c,
            C1,
            v4::QoS::AtLeastOnce,
            "ret/core",
            b"from-core",
        ),
        (
            &mut pub_r,
            R1,
            v4::QoS::ExactlyOnce,
            "ret/replicant",
            b"from-replicant",
        ),
    ];
    for (p, node, qos, topic, payload) in first {
        p.publish(topic, qos, true, payload).await;
        assert_eq!(
            retained_on_subscribe(&cl, node, &format!("ryw-{node}"), topic).await,
            vec![msg(topic, payload)],
            "read-your-writes on the publishing node {}",
            cl.nodes[node].name
        );
    }
    wait_retained(&cl, 2);
    let both = vec![
        msg("ret/core", b"from-core"),
        msg("ret/replicant", b"from-replicant"),
    ];
    assert_eq!(
        retained_on_subscribe(&cl, R1, "sub-r1", "ret/#").await,
        both,
        "core -> replicant"
    );
    assert_eq!(
        retained_on_subscribe(&cl, C2, "sub-c2", "ret/#").await,
        both,
        "replicant -> core"
    );

    // A newer message replaces it everywhere; an empty payload (QoS 0 here) deletes it
    // everywhere.
    pub_r
        .publish("ret/core", v4::QoS::AtLeastOnce, true, b"replaced")
        .await;
    pub_c
        .publish("ret/replicant", v4::QoS::AtMostOnce, true, b"")
        .await;
    wait_retained(&cl, 1);
    only_replaced_on(
        &cl,
        &[(C3, "del-c3"), (R1, "del-r1"), (C1, "del-c1")],
        "replaced and deleted",
    )
    .await;

    // A replicant started after the publish gets it (bootstrap snapshot).
    cl.start(R2);
    cl.wait_formed(5);
    assert_eq!(
        retained_on_subscribe(&cl, R2, "late-r2", "ret/#").await,
        vec![msg("ret/core", b"replaced")],
        "late replicant"
    );

    // Message expiry holds cluster-wide: a retained message with a 1 s expiry interval is
    // removed from every node by the leader's sweep, and no subscriber gets it after that.
    let (mut p5, _) = v5::Client::connect(v5::opts(cl.mqtt(R2), "pub-expiring")).await;
    let props = v5::PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    p5.client
        .publish_with_properties("ret/expiring", v5::QoS::AtLeastOnce, true, "soon", props)
        .await
        .expect("queue PUBLISH");
    p5.wait_publish_done(v5::QoS::AtLeastOnce).await;
    let swept = wait_for(FORM, || {
        let n: u64 = [C1, C2, C3]
            .into_iter()
            .map(|i| cl.status(i)["retained_expired"].as_u64().unwrap_or(0))
            .sum();
        (n >= 1).then_some(())
    });
    assert!(
        swept.is_some(),
        "the leader removed the expired message: {:#?}",
        cl.all_status()
    );
    wait_retained(&cl, 1);
    only_replaced_on(&cl, &[(R1, "exp-r1"), (C2, "exp-c2")], "expired").await;

    // Every core killed at once and restarted on its data directory: the retained message
    // comes back from their Raft storage (no node kept it anywhere else durable).
    for i in [C1, C2, C3] {
        cl.kill(i);
    }
    for i in [C1, C2, C3] {
        cl.start(i);
    }
    cl.wait_formed(5);
    wait_retained(&cl, 1);
    only_replaced_on(
        &cl,
        &[(C1, "back-c1"), (C3, "back-c3"), (R2, "back-r2")],
        "after the restart of every core",
    )
    .await;
    let st = cl.status(C2);
    assert_eq!(st["raft_durable"], true, "{st}");

    // The figures are on /metrics.
    let m = cl.broker(R1).http_get("/metrics").body;
    assert!(m.contains("halyard_cluster_retained "), "{m}");
    assert!(m.contains("halyard_cluster_retained_refused_total"), "{m}");
}
