//! Acknowledged forwarding on node links: a message is kept by the sender until the
//! receiver's server is done with it, resent after a broken link, never handed on twice.
//! Real TCP on 127.0.0.x, every wait bounded.

#[allow(
    dead_code,
    reason = "helpers shared by several test binaries; each uses a subset"
)]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(20);

fn num(i: u32) -> Bytes {
    Bytes::from(i.to_be_bytes().to_vec())
}

#[test]
fn send_acked_resolves_only_after_the_receiver_is_done_with_the_message() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(1);
    cores.wait_leader(FORM).expect("leader");
    let a = replicant("ra", 90, &cores.addrs, &cores.names);
    let b = std::sync::Arc::new(replicant("rb", 91, &cores.addrs, &cores.names));
    assert!(wait_until(SETTLE, || a.members().contains_key(&b.id())));
    let mut rx = b.take_inbound().expect("inbound");

    let (a, bid) = (std::sync::Arc::new(a), b.id());
    let sender = a.clone();
    let acked = rt.spawn(async move { sender.send_acked(bid, num(7)).await });
    let held = rt
        .block_on(async { tokio::time::timeout(SETTLE, rx.recv()).await })
        .expect("arrives")
        .expect("open");
    assert_eq!(held.from, a.id());
    assert_eq!(held.message, num(7));
    // Handed over but not finished: the sender still holds it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !acked.is_finished(),
        "acknowledged before the receiver was done"
    );
    assert_eq!(a.status().link_inflight, 1);
    drop(held);
    rt.block_on(acked)
        .expect("task")
        .expect("acknowledged once dropped");
    assert!(wait_until(SETTLE, || a.status().link_inflight == 0));
}

#[test]
fn a_broken_link_resends_unacknowledged_messages_without_duplicates() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(1);
    cores.wait_leader(FORM).expect("leader");
    let a = replicant("ra", 92, &cores.addrs, &cores.names);
    let b = replicant("rb", 93, &cores.addrs, &cores.names);
    assert!(wait_until(SETTLE, || a.members().contains_key(&b.id())));
    let mut rx = b.take_inbound().expect("inbound");
    const N: u32 = 1000;
    for i in 0..N {
        rt.block_on(a.send_wait(b.id(), num(i))).expect("queued");
    }
    // All handed to b's server, none finished: nothing is acknowledged yet.
    assert!(wait_until(SETTLE, || b.status().link_received == u64::from(N)));
    assert_eq!(a.status().link_inflight, u64::from(N));

    // The link breaks: a resends all of them; b recognises every one as already handed on.
    a.reset_links();
    assert!(wait_until(SETTLE, || b.status().link_duplicates == u64::from(N)));
    assert_eq!(a.status().link_resent, u64::from(N));

    // b's server now delivers each exactly once, in order; that acknowledges them all.
    let mut got = Vec::new();
    rt.block_on(async {
        while got.len() < N as usize {
            let m = tokio::time::timeout(SETTLE, rx.recv())
                .await
                .expect("in time")
                .expect("open");
            got.push(u32::from_be_bytes(
                m.message[..4].try_into().expect("4 bytes"),
            ));
        }
    });
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(
        wait_until(SETTLE, || a.status().link_inflight == 0),
        "acknowledged"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.try_recv().is_err(), "no duplicate was handed on");
    // The link keeps working after the reset.
    let (a, bid) = (std::sync::Arc::new(a), b.id());
    let sender = a.clone();
    let acked = rt.spawn(async move { sender.send_acked(bid, num(N)).await });
    let last = rt
        .block_on(async { tokio::time::timeout(SETTLE, rx.recv()).await })
        .expect("arrives")
        .expect("open");
    assert_eq!(last.message, num(N));
    drop(last);
    rt.block_on(acked).expect("task").expect("acknowledged");
}

#[test]
fn the_link_to_a_node_that_left_is_closed_and_its_waiters_fail() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(1);
    cores.wait_leader(FORM).expect("leader");
    let a = std::sync::Arc::new(replicant("ra", 94, &cores.addrs, &cores.names));
    let b = replicant("rb", 95, &cores.addrs, &cores.names);
    let bid = b.id();
    assert!(wait_until(SETTLE, || a.members().contains_key(&bid)));
    let mut rx = b.take_inbound().expect("inbound");
    let sender = a.clone();
    let acked = rt.spawn(async move { sender.send_acked(bid, num(1)).await });
    // b takes it but never finishes with it, then leaves and stops.
    let held = rt
        .block_on(async { tokio::time::timeout(SETTLE, rx.recv()).await })
        .expect("arrives")
        .expect("open");
    let idx = rt.block_on(b.leave()).expect("left");
    rt.block_on(a.wait_applied(idx)).expect("a saw it leave");
    b.shutdown();
    // Finishing only now: b's links are gone, so no acknowledgement can leave.
    drop(held);
    drop(rx);
    let res = rt.block_on(acked).expect("task");
    assert!(res.is_err(), "not acknowledged: {res:?}");
    assert!(wait_until(SETTLE, || a.status().link_departed_dropped == 1));
    assert_eq!(a.status().link_inflight, 0);
    assert!(matches!(
        a.send(bid, num(2)),
        Err(halyard_cluster::ClusterError::UnknownNode(_))
    ));
}

#[test]
fn a_message_the_receiver_never_finished_is_resent_to_its_next_incarnation() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(1);
    cores.wait_leader(FORM).expect("leader");
    let a = std::sync::Arc::new(replicant("ra", 96, &cores.addrs, &cores.names));
    let initial: Vec<&str> = cores.names.iter().map(String::as_str).collect();
    let cfg = config(
        "rb",
        halyard_cluster::NodeRole::Replicant,
        free_addr(97),
        &cores.addrs,
        &initial,
    );
    let b = halyard_cluster::ClusterNode::start(cfg.clone()).expect("rb starts");
    let bid = b.id();
    assert!(wait_until(SETTLE, || a.members().contains_key(&bid)));
    let mut rx = b.take_inbound().expect("inbound");
    let sender = a.clone();
    let acked = rt.spawn(async move { sender.send_acked(bid, num(5)).await });
    let held = rt
        .block_on(async { tokio::time::timeout(SETTLE, rx.recv()).await })
        .expect("arrives")
        .expect("open");
    // b crashes before its server finished with the message (no leave: it comes back).
    b.shutdown();
    drop(held);
    let b2 = halyard_cluster::ClusterNode::start(cfg).expect("rb restarts");
    let mut rx2 = b2.take_inbound().expect("inbound");
    let again = rt
        .block_on(async { tokio::time::timeout(SETTLE, rx2.recv()).await })
        .expect("resent")
        .expect("open");
    assert_eq!(again.message, num(5));
    drop(again);
    rt.block_on(acked)
        .expect("task")
        .expect("acknowledged by the new incarnation");
    assert!(a.status().link_resent >= 1);
}
