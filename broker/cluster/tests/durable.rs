//! Cores with durable Raft storage (`cluster.data_dir`): restarts recover the vote, the
//! log and the latest snapshot from disk. Real TCP on 127.0.0.x, every wait bounded.

#[allow(
    dead_code,
    reason = "helpers shared by several test binaries; each uses a subset"
)]
mod common;

use std::time::Duration;

use common::*;
use halyard_cluster::{NodeId, RouteOp};

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(20);

/// Snapshots every 20 entries, so restarts load a snapshot plus the log after it.
fn small_snapshots(cfg: &mut halyard_cluster::ClusterConfig) {
    cfg.snapshot_every_entries = 20;
}

#[test]
fn a_restarted_core_recovers_from_its_disk_and_catches_up() {
    let _s = serial();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cores = Cores::start_durable(3, dir.path(), small_snapshots);
    let leader = cores.wait_leader(FORM).expect("leader");
    let l = cores.nodes[leader].clone().expect("leader node");
    // 60 entries: several snapshots and purges happen on every core.
    let mut idx = 0;
    for b in 0..60 {
        let ops: Vec<RouteOp> = (0..10).map(|i| add(&format!("d/{b}/{i}"), 3)).collect();
        idx = rt.block_on(l.propose_routes(ops)).expect("commit");
    }
    let follower = (leader + 1) % 3;
    let f = cores.nodes[follower].as_ref().expect("follower");
    assert!(wait_until(SETTLE, || applied_at_least(f, idx)));
    let before = f.status();
    assert!(before.raft_durable);
    assert!(before.raft_fsyncs > 0);
    assert!(
        wait_until(SETTLE, || f.status().raft_snapshot_index.is_some()),
        "the follower took a snapshot"
    );

    cores.kill(follower);
    // Written while the follower is down.
    let idx2 = rt
        .block_on(l.propose_routes(vec![add("while/down", 4)]))
        .expect("commit");

    let f = cores.restart(follower);
    // Straight from its disk (snapshot + log), before it has heard from anyone. (The vote
    // surviving a reopen is checked by the storage unit tests.)
    let st = f.status();
    assert!(
        st.route_rows >= 600,
        "route table rebuilt from disk: {st:?}"
    );
    assert_eq!(nodes_for(f, "d/59/9"), vec![3]);
    assert!(!st.formed_group);
    assert!(
        wait_until(SETTLE, || f.status().raft_voters.len() == 3),
        "membership kept"
    );
    // Then it catches up with what it missed.
    assert!(wait_until(SETTLE, || nodes_for(f, "while/down") == vec![4]));
    assert!(applied_at_least(f, idx2));
    assert_eq!(f.status().route_rows, 601);
}

#[test]
fn all_cores_restart_from_disk_with_the_table_intact_and_commit_again() {
    let _s = serial();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cores = Cores::start_durable(3, dir.path(), small_snapshots);
    let leader = cores.wait_leader(FORM).expect("leader");
    let formed: Vec<bool> = cores.alive().map(|c| c.status().formed_group).collect();
    assert_eq!(formed, vec![true, false, false], "c1 formed the group");
    let l = cores.nodes[leader].clone().expect("leader node");
    let mut idx = 0;
    for b in 0..50 {
        let ops: Vec<RouteOp> = (0..20).map(|i| add(&format!("t/{b}/{i}/+"), 5)).collect();
        idx = rt.block_on(l.propose_routes(ops)).expect("commit");
    }
    let removed = rt
        .block_on(l.propose_routes(vec![RouteOp::Remove {
            filter: "t/0/0/+".into(),
            node: 5,
        }]))
        .expect("commit");
    for c in cores.alive() {
        assert!(wait_until(SETTLE, || applied_at_least(c, removed.max(idx))));
    }
    drop(l);
    for i in 0..3 {
        cores.kill(i);
    }

    // c2 alone: nobody to learn from, so its table can only come from its disk.
    let c2 = cores.restart(1);
    let st = c2.status();
    assert_eq!(st.route_rows, 999, "{st:?}");
    assert_eq!(nodes_for(c2, "t/49/19/x"), vec![5]);
    assert_eq!(nodes_for(c2, "t/0/0/x"), Vec::<NodeId>::new());
    // c1 comes back: it finds its own Raft state and does not form a second group.
    cores.restart(0);
    cores.restart(2);
    let leader = cores.wait_leader(FORM).expect("a leader after the restart");
    for c in cores.alive() {
        let st = c.status();
        assert!(!st.formed_group, "{} formed a group again", st.node_name);
        assert_eq!(st.raft_voters.len(), 3);
        assert_eq!(st.route_rows, 999);
    }
    let l = cores.nodes[leader].as_ref().expect("leader");
    let idx3 = rt
        .block_on(l.propose_routes(vec![add("after/restart", 6)]))
        .expect("a new write commits");
    assert!(idx3 > removed);
    for c in cores.alive() {
        assert!(wait_until(SETTLE, || nodes_for(c, "after/restart") == vec![6]));
    }
}

#[test]
fn a_data_dir_of_another_node_is_refused() {
    let _s = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let addrs = [free_addr(10)];
    let mut cfg = config(
        "c1",
        halyard_cluster::NodeRole::Core,
        addrs[0],
        &addrs,
        &["c1"],
    );
    cfg.data_dir = Some(dir.path().to_owned());
    halyard_cluster::ClusterNode::start(cfg.clone())
        .expect("c1 starts")
        .shutdown();
    cfg.node_name = "c2".into();
    cfg.initial_cores = vec!["c2".into()];
    let err = halyard_cluster::ClusterNode::start(cfg).expect_err("c2 must not use c1's file");
    assert!(
        matches!(err, halyard_cluster::ClusterError::Storage { .. }),
        "{err}"
    );
}

#[test]
fn a_rolling_restart_of_every_core_keeps_the_cluster_committing_and_streaming() {
    let _s = serial();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cores = Cores::start_durable(3, dir.path(), small_snapshots);
    cores.wait_leader(FORM).expect("leader");
    let r = replicant("r1", 45, &cores.addrs, &cores.names);
    assert!(wait_until(SETTLE, || is_normal(&r)));
    for i in 0..3 {
        cores.kill(i);
        // With one core down the other two commit, and the replicant (moved to another core
        // if it followed this one) keeps applying.
        let idx = rt
            .block_on(r.propose_routes(vec![add(&format!("roll/{i}"), r.id())]))
            .expect("commits while a core is down");
        rt.block_on(r.wait_applied(idx)).expect("replicant applies");
        let c = cores.restart(i);
        assert!(
            wait_until(SETTLE, || applied_at_least(c, idx)),
            "c{} caught up after its restart",
            i + 1
        );
    }
    for c in cores.alive() {
        for i in 0..3 {
            assert_eq!(nodes_for(c, &format!("roll/{i}")), vec![r.id()]);
        }
        assert!(!c.status().formed_group);
    }
    assert_eq!(
        r.status().bootstraps,
        1,
        "the replicant never bootstrapped again"
    );
}
