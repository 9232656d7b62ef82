//! In-process cluster tests: real TCP on 127.0.0.x, every wait bounded.

#[allow(
    dead_code,
    reason = "helpers shared by several test binaries; each uses a subset"
)]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use halyard_cluster::{NodeId, RouteOp, node_id_for_name};

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(20);

#[test]
fn three_cores_elect_a_leader_and_commit_batched_route_ops() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(3);
    let leader = cores.wait_leader(FORM).expect("a leader is elected");
    println!("leader: {}", cores.names[leader]);

    // 300 single-op proposals in flight at once from one follower: batched into few entries,
    // forwarded to the leader.
    let follower = (leader + 1) % 3;
    let node = cores.nodes[follower].clone().expect("follower");
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let n = node.clone();
        tasks.push(
            rt.spawn(async move { n.propose_routes(vec![add(&format!("dev/{i}/+"), 7)]).await }),
        );
    }
    let mut max_index = 0;
    for t in tasks {
        let idx = rt.block_on(t).expect("task").expect("proposal commits");
        max_index = max_index.max(idx);
    }
    let st = node.status();
    println!(
        "ops proposed {} in {} entries",
        st.route_ops_proposed, st.route_entries_proposed
    );
    assert_eq!(st.route_ops_proposed, 300);
    assert!(st.route_entries_proposed < 300, "ops were batched: {st:?}");

    for c in cores.alive() {
        assert!(
            wait_until(SETTLE, || applied_at_least(c, max_index)),
            "every core applies"
        );
        assert_eq!(c.status().route_rows, 300);
        assert_eq!(nodes_for(c, "dev/42/x"), vec![7]);
        assert_eq!(nodes_for(c, "dev/42"), Vec::<NodeId>::new());
    }
    // Members: every core joined.
    let c0 = cores.alive().next().expect("a core");
    assert!(wait_until(SETTLE, || c0.members().len() == 3));
}

#[test]
fn replicants_bootstrap_follow_and_read_their_writes() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(3);
    let leader = cores.wait_leader(FORM).expect("leader");
    let l = cores.nodes[leader].as_ref().expect("leader node");
    let before: Vec<RouteOp> = (0..500).map(|i| add(&format!("a/{i}"), 1)).collect();
    rt.block_on(l.propose_routes(before)).expect("commit");

    let r1 = replicant("r1", 30, &cores.addrs, &cores.names);
    let r2 = replicant("r2", 31, &cores.addrs, &cores.names);
    for r in [&r1, &r2] {
        assert!(
            wait_until(SETTLE, || is_normal(r)),
            "replicant reaches normal"
        );
        assert!(wait_until(SETTLE, || r.status().route_rows >= 500));
        assert_eq!(r.status().bootstraps, 1);
    }
    // Follow: new commits arrive without a new bootstrap.
    let idx = rt
        .block_on(l.propose_routes(vec![add("b/#", 2)]))
        .expect("commit");
    for r in [&r1, &r2] {
        assert!(wait_until(SETTLE, || applied_at_least(r, idx)));
        assert_eq!(nodes_for(r, "b/x/y"), vec![2]);
        assert_eq!(r.status().bootstraps, 1);
    }
    // A replicant's own write goes through a core; it waits until applied locally.
    let idx = rt
        .block_on(r1.propose_routes(vec![add("r1/only", r1.id())]))
        .expect("replicant write commits");
    rt.block_on(r1.wait_applied(idx)).expect("applied locally");
    assert_eq!(nodes_for(&r1, "r1/only"), vec![r1.id()]);
    assert!(wait_until(SETTLE, || nodes_for(&r2, "r1/only") == vec![r1.id()]));
    // Members include both replicants, with their roles.
    assert!(wait_until(SETTLE, || r2.members().len() == 5));
    let st = r2.status();
    assert_eq!(st.lag, st.committed_index - st.applied_index);
    assert!(st.upstream_core.is_some());

    // Graceful departure removes the member and every row it owns, everywhere.
    let idx = rt.block_on(r1.leave()).expect("leave commits");
    for n in [&r2, l] {
        assert!(wait_until(SETTLE, || applied_at_least(n, idx)));
        assert!(nodes_for(n, "r1/only").is_empty());
        assert!(!n.members().contains_key(&r1.id()));
        assert_eq!(n.members().len(), 4);
    }
}

#[test]
fn large_route_batches_are_split_and_invalid_filters_refused() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(1);
    cores.wait_leader(FORM).expect("leader");
    let c = cores.nodes[0].as_ref().expect("core");
    // 16 MiB frames: one entry may carry at most 4 MiB of route ops, so ~5 MB of route ops
    // in one call are split into several entries (also by `route_batch_max` operations),
    // all committed, rather than refused.
    let big: Vec<RouteOp> = (0..5000)
        .map(|i| add(&format!("{i}/{}", "x".repeat(1000)), 1))
        .collect();
    let entries_before = c.status().route_entries_proposed;
    rt.block_on(c.propose_routes(big))
        .expect("a large proposal is split and commits");
    assert_eq!(c.status().route_rows, 5000);
    assert!(
        c.status().route_entries_proposed >= entries_before + 2,
        "5 MB of route ops went into one entry"
    );
    let err = rt
        .block_on(c.propose_routes(vec![add("a/#/b", 1)]))
        .unwrap_err();
    assert!(
        matches!(err, halyard_cluster::ClusterError::InvalidFilter(_)),
        "{err}"
    );
    // Many large proposals at once are split across entries and all commit.
    let node = cores.nodes[0].clone().expect("core");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let n = node.clone();
            let ops: Vec<RouteOp> = (0..1000)
                .map(|i| add(&format!("{t}/{i}/{}", "y".repeat(900)), 1))
                .collect();
            rt.spawn(async move { n.propose_routes(ops).await })
        })
        .collect();
    for t in tasks {
        rt.block_on(t).expect("task").expect("commit");
    }
    assert_eq!(c.status().route_rows, 13000);
    assert!(
        c.status().route_entries_proposed >= 2,
        "split into several entries"
    );
}

#[test]
fn killing_the_leader_elects_a_new_one_and_loses_no_committed_route() {
    let _s = serial();
    let rt = runtime();
    let mut cores = Cores::start(3);
    let leader = cores.wait_leader(FORM).expect("leader");
    let l = cores.nodes[leader].as_ref().expect("leader node");
    let ops: Vec<RouteOp> = (0..1000).map(|i| add(&format!("k/{i}"), 3)).collect();
    let idx = rt.block_on(l.propose_routes(ops)).expect("commit");
    let old_leader_id = l.id();

    cores.kill(leader);
    let killed = Instant::now();
    let new_leader = cores
        .wait_leader(SETTLE)
        .expect("a new leader among the survivors");
    let took = killed.elapsed();
    println!(
        "failover: new leader {} after {:?}",
        cores.names[new_leader], took
    );
    assert_ne!(
        cores.nodes[new_leader].as_ref().map(|n| n.id()),
        Some(old_leader_id)
    );

    for c in cores.alive() {
        assert!(wait_until(SETTLE, || applied_at_least(c, idx)));
        assert_eq!(nodes_for(c, "k/999"), vec![3], "committed routes survive");
        assert!(c.status().route_rows >= 1000);
    }
    // The survivors keep committing.
    let survivor = cores.alive().next().expect("survivor");
    let idx2 = rt
        .block_on(survivor.propose_routes(vec![add("after/failover", 4)]))
        .expect("commit");
    assert!(idx2 > idx);
    for c in cores.alive() {
        assert!(wait_until(SETTLE, || nodes_for(c, "after/failover") == vec![4]));
    }
}

#[test]
fn replicant_resumes_on_another_core_without_bootstrapping_again() {
    let _s = serial();
    let rt = runtime();
    let mut cores = Cores::start(3);
    let leader = cores.wait_leader(FORM).expect("leader");
    // Seed the replicant with a follower first so that killing its upstream leaves the
    // leader in place (the resume must not depend on an election, though it would work).
    let upstream = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let seeds = [
        cores.addrs[upstream],
        cores.addrs[other],
        cores.addrs[leader],
    ];
    let r = replicant("r1", 40, &seeds, &cores.names);
    // The replicant starts on seeds[id % 3]: wait for it to settle, then note its upstream.
    assert!(wait_until(SETTLE, || is_normal(&r)));
    let l = cores.nodes[leader].as_ref().expect("leader node");
    let idx = rt
        .block_on(l.propose_routes(vec![add("before/#", 5)]))
        .expect("commit");
    assert!(wait_until(SETTLE, || applied_at_least(&r, idx)));
    assert_eq!(r.status().bootstraps, 1);
    let first_upstream = r.status().upstream_core.expect("upstream");
    let up_pos = cores
        .addrs
        .iter()
        .position(|a| a.to_string() == first_upstream)
        .expect("known core");
    let applied_before = r.status().applied_index;
    println!("replicant on {first_upstream} at index {applied_before}; killing that core");

    cores.kill(up_pos);
    // Commits continue on the survivors (after an election if the upstream led).
    let survivor = cores.alive().next().expect("survivor");
    let ops: Vec<RouteOp> = (0..200).map(|i| add(&format!("after/{i}"), 6)).collect();
    let idx2 = rt
        .block_on(survivor.propose_routes(ops))
        .expect("commit after kill");
    assert!(
        wait_until(SETTLE, || applied_at_least(&r, idx2) && is_normal(&r)),
        "resumed"
    );
    let st = r.status();
    println!(
        "resumed on {:?}, applied {}, reconnects {}",
        st.upstream_core, st.applied_index, st.stream_reconnects
    );
    assert_ne!(st.upstream_core.as_deref(), Some(first_upstream.as_str()));
    assert_eq!(
        st.bootstraps, 1,
        "resumed from its index without a new bootstrap"
    );
    assert!(st.stream_reconnects >= 1);
    assert_eq!(nodes_for(&r, "after/199"), vec![6]);
    assert_eq!(nodes_for(&r, "before/x"), vec![5]);
}

#[test]
fn replicant_joining_after_100k_routes_reaches_normal() {
    let _s = serial();
    let rt = runtime();
    // One core keeps this test's cost down on a small machine; the stream is the same.
    let cores = Cores::start(1);
    cores.wait_leader(FORM).expect("leader");
    let c = cores.nodes[0].as_ref().expect("core");
    let mut idx = 0;
    for b in 0..100u64 {
        let ops: Vec<RouteOp> = (0..1000u64)
            .map(|i| add(&format!("fleet/{b}/{i}/#"), 100 + (i % 4)))
            .collect();
        idx = rt.block_on(c.propose_routes(ops)).expect("commit");
    }
    assert_eq!(c.status().route_rows, 100_000);
    let started = Instant::now();
    let r = replicant("late", 50, &cores.addrs, &cores.names);
    let done = wait_until(Duration::from_secs(180), || {
        is_normal(&r) && applied_at_least(&r, idx)
    });
    assert!(done, "replicant did not reach normal: {:?}", r.status());
    let st = r.status();
    println!(
        "bootstrap of {} keys took {:.3} s (normal after {:?})",
        st.bootstrap_keys,
        st.bootstrap_time_seconds,
        started.elapsed()
    );
    assert_eq!(st.bootstraps, 1);
    assert_eq!(st.bootstrap_keys, 100_000);
    assert_eq!(nodes_for(&r, "fleet/99/999/x/y"), vec![103]);
    assert_eq!(nodes_for(&r, "fleet/0/0"), vec![100]);
}

#[test]
fn forwarding_delivers_exactly_once_per_destination_node_in_order() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(1);
    cores.wait_leader(FORM).expect("leader");
    let core = cores.nodes[0].as_ref().expect("core");
    let a = replicant("ra", 60, &cores.addrs, &cores.names);
    let b = replicant("rb", 61, &cores.addrs, &cores.names);
    for r in [&a, &b] {
        assert!(wait_until(SETTLE, || is_normal(r)));
    }
    assert!(wait_until(SETTLE, || a.members().len() == 3));
    // b subscribes through two overlapping filters, the core through one.
    let idx = rt
        .block_on(a.propose_routes(vec![
            add("t/#", b.id()),
            add("t/+", b.id()),
            add("t/#", core.id()),
        ]))
        .expect("commit");
    rt.block_on(a.wait_applied(idx)).expect("applied");
    let dests = nodes_for(&a, "t/x");
    let mut expected = vec![b.id(), core.id()];
    expected.sort_unstable();
    assert_eq!(dests, expected, "one entry per destination node");

    let mut rx_b = b.take_inbound().expect("inbound");
    let mut rx_c = core.take_inbound().expect("inbound");
    assert!(b.take_inbound().is_none());
    const N: u32 = 2000;
    for i in 0..N {
        for d in &dests {
            rt.block_on(a.send_wait(*d, Bytes::from(i.to_be_bytes().to_vec())))
                .expect("send");
        }
    }
    for (name, rx) in [("rb", &mut rx_b), ("core", &mut rx_c)] {
        let mut got: Vec<u32> = Vec::new();
        let mut from: HashMap<NodeId, u32> = HashMap::new();
        let ok = rt.block_on(async {
            tokio::time::timeout(SETTLE, async {
                while got.len() < N as usize {
                    let Some(inbound) = rx.recv().await else {
                        break;
                    };
                    *from.entry(inbound.from).or_default() += 1;
                    let m = &inbound.message;
                    got.push(u32::from_be_bytes(m[..4].try_into().expect("4 bytes")));
                }
            })
            .await
            .is_ok()
        });
        assert!(ok, "{name} received all messages");
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "{name}: each once, in order"
        );
        assert_eq!(from.get(&a.id()), Some(&N));
        // Nothing extra arrives.
        std::thread::sleep(Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "{name}: no duplicates");
    }
    let st = a.status();
    assert_eq!(st.link_sent, u64::from(N) * 2);
    assert_eq!(st.link_lost, 0);
    assert_eq!(
        a.send(node_id_for_name("nobody"), Bytes::new())
            .unwrap_err()
            .to_string(),
        halyard_cluster::ClusterError::UnknownNode(node_id_for_name("nobody")).to_string()
    );
}

#[test]
fn full_link_queues_push_back_and_count_drops() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(1);
    cores.wait_leader(FORM).expect("leader");
    let core = cores.nodes[0].as_ref().expect("core");
    let mut cfg = config(
        "gone",
        halyard_cluster::NodeRole::Replicant,
        free_addr(70),
        &cores.addrs,
        &["c1"],
    );
    cfg.link_queue_max = 4;
    let gone = halyard_cluster::ClusterNode::start(cfg).expect("replicant");
    let gone_id = gone.id();
    assert!(wait_until(SETTLE, || core.members().contains_key(&gone_id)));
    // The node dies without leaving: its member record stays, its link cannot connect.
    gone.shutdown();
    let mut cfg = config(
        "sender",
        halyard_cluster::NodeRole::Replicant,
        free_addr(71),
        &cores.addrs,
        &["c1"],
    );
    cfg.link_queue_max = 4;
    let sender = halyard_cluster::ClusterNode::start(cfg).expect("replicant");
    assert!(wait_until(SETTLE, || sender
        .members()
        .contains_key(&gone_id)));
    let mut refused = 0;
    for i in 0..20u8 {
        if sender.send(gone_id, Bytes::from(vec![i])).is_err() {
            refused += 1;
        }
    }
    // At most the queue plus one batch in the link task's hands get through to the queue.
    assert!(refused >= 20 - 4 - 1, "refused {refused}");
    let st = sender.status();
    assert_eq!(st.link_dropped, refused);
    assert!(st.link_queue_len <= 4);
    // send_wait blocks instead of dropping: bounded here by a timeout.
    let waited = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(300),
            sender.send_wait(gone_id, Bytes::from_static(b"x")),
        )
        .await
        .is_err()
    });
    assert!(waited, "send_wait waits for queue space");
    assert!(sender.status().link_blocked >= 1);
}

#[test]
fn a_core_is_added_and_removed_through_joint_consensus() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start(3);
    let leader = cores.wait_leader(FORM).expect("leader");
    let l = cores.nodes[leader].as_ref().expect("leader node");
    rt.block_on(l.propose_routes(vec![add("before/add", 9)]))
        .expect("commit");
    // c4 knows the initial cores but is not first: it waits to be added.
    let addr = free_addr(20);
    let mut seeds = cores.addrs.clone();
    seeds.push(addr);
    let c4 = halyard_cluster::ClusterNode::start(config(
        "c4",
        halyard_cluster::NodeRole::Core,
        addr,
        &seeds,
        &["c1", "c2", "c3"],
    ))
    .expect("c4 starts");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        c4.status().raft_voters.is_empty(),
        "c4 did not form a group of its own"
    );
    rt.block_on(l.add_core(addr.to_string())).expect("c4 added");
    assert!(wait_until(SETTLE, || l.status().raft_voters.len() == 4));
    assert!(
        wait_until(SETTLE, || nodes_for(&c4, "before/add") == vec![9]),
        "c4 caught up"
    );
    assert!(wait_until(SETTLE, || c4.status().raft_voters.len() == 4));
    assert!(
        wait_until(SETTLE, || l.members().contains_key(&c4.id())),
        "c4 joined"
    );
    // A follower cannot change membership.
    let err = rt.block_on(c4.remove_core(l.id())).unwrap_err();
    assert!(
        matches!(err, halyard_cluster::ClusterError::NoLeader(_)),
        "{err}"
    );
    let idx = rt
        .block_on(c4.propose_routes(vec![add("c4/own", c4.id())]))
        .expect("c4 commits a route of its own");
    assert!(wait_until(SETTLE, || applied_at_least(l, idx)));
    assert_eq!(nodes_for(l, "c4/own"), vec![c4.id()]);
    let idx = rt.block_on(l.remove_core(c4.id())).expect("c4 removed");
    assert!(wait_until(SETTLE, || l.status().raft_voters.len() == 3));
    assert!(!l.status().raft_voters.contains(&c4.id()));
    // Its member record and its routes went with it, in one entry.
    assert!(applied_at_least(l, idx));
    assert!(!l.members().contains_key(&c4.id()));
    assert!(nodes_for(l, "c4/own").is_empty());
    // c4 does not put itself back.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!l.members().contains_key(&c4.id()));
}

#[test]
fn the_first_core_restarted_without_state_rejoins_instead_of_forming_again() {
    let _s = serial();
    let rt = runtime();
    let mut cores = Cores::start(3);
    let leader = cores.wait_leader(FORM).expect("leader");
    let formed = || {
        cores
            .alive()
            .map(|c| c.status().formed_group)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(SETTLE, || formed() == vec![true, false, false]),
        "only c1 formed the group"
    );
    let l = cores.nodes[leader].as_ref().expect("leader node");
    let idx = rt
        .block_on(l.propose_routes(vec![add("kept/#", 8)]))
        .expect("commit");
    for c in cores.alive() {
        assert!(wait_until(SETTLE, || applied_at_least(c, idx)));
    }

    // c1 stops and comes back on the same address with empty (in-memory) state.
    cores.kill(0);
    let survivors_leader = cores.wait_leader(SETTLE).expect("leader among c2, c3");
    let initial: Vec<&str> = cores.names.iter().map(String::as_str).collect();
    let cfg = config(
        "c1",
        halyard_cluster::NodeRole::Core,
        cores.addrs[0],
        &cores.addrs,
        &initial,
    );
    let c1 = halyard_cluster::ClusterNode::start(cfg).expect("c1 restarts");
    // It sees an existing group and waits; the leader brings it back up to date.
    assert!(
        wait_until(SETTLE, || nodes_for(&c1, "kept/x") == vec![8]),
        "c1 caught up"
    );
    let st = c1.status();
    assert!(!st.formed_group, "c1 did not form a second group");
    assert_eq!(st.raft_voters.len(), 3);
    let sl = cores.nodes[survivors_leader].as_ref().expect("leader");
    let idx2 = rt
        .block_on(sl.propose_routes(vec![add("after/restart", 8)]))
        .expect("commit");
    assert!(wait_until(SETTLE, || applied_at_least(&c1, idx2)));
    assert_eq!(nodes_for(&c1, "after/restart"), vec![8]);
}
