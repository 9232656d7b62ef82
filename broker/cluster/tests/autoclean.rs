//! Autoclean: departed and dead nodes lose their routes in one committed entry; nodes
//! cleaned while alive put their routes back. Real TCP on 127.0.0.x, every wait bounded.

#[allow(
    dead_code,
    reason = "helpers shared by several test binaries; each uses a subset"
)]
mod common;

use std::time::Duration;

use common::*;
use halyard_cluster::{ClusterConfig, ClusterNode, NodeRole};

const FORM: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(20);

/// A short grace so the tests do not wait a minute.
fn quick(cfg: &mut ClusterConfig) {
    cfg.autoclean_grace_ms = 1500;
    cfg.liveness_interval_ms = 200;
}

fn quick_replicant(name: &str, host: u8, cores: &Cores) -> ClusterNode {
    let initial: Vec<&str> = cores.names.iter().map(String::as_str).collect();
    let mut cfg = config(
        name,
        NodeRole::Replicant,
        free_addr(host),
        &cores.addrs,
        &initial,
    );
    quick(&mut cfg);
    ClusterNode::start(cfg).expect("replicant starts")
}

#[test]
fn a_replicant_gone_longer_than_the_grace_is_cleaned_and_a_live_one_is_not() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start_with(3, |_, c| quick(c));
    let leader = cores.wait_leader(FORM).expect("leader");
    let l = cores.nodes[leader].as_ref().expect("leader node");
    let gone = quick_replicant("gone", 80, &cores);
    let live = quick_replicant("live", 81, &cores);
    let (gone_id, live_id) = (gone.id(), live.id());
    for (r, f) in [(&gone, "gone/#"), (&live, "live/#")] {
        let idx = rt
            .block_on(r.propose_routes(vec![add(f, r.id())]))
            .expect("commit");
        rt.block_on(r.wait_applied(idx)).expect("applied");
    }
    assert!(wait_until(SETTLE, || l.members().len() == 5));
    assert_eq!(nodes_for(l, "gone/x"), vec![gone_id]);

    // Dies without leaving: no stream on any core from now on.
    gone.shutdown();
    assert!(
        wait_until(SETTLE, || !l.members().contains_key(&gone_id)),
        "the dead replicant's member record is removed"
    );
    for c in cores.alive().chain([&live]) {
        assert!(wait_until(SETTLE, || nodes_for(c, "gone/x").is_empty()));
    }
    // The leader that cleaned it counted it.
    let removed = cores
        .alive()
        .map(|c| c.status().autoclean_removed)
        .sum::<u64>();
    assert!(removed >= 1, "counted");
    // The live replicant, streaming all along, is kept, well past the grace.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(l.members().contains_key(&live_id));
    assert_eq!(nodes_for(l, "live/x"), vec![live_id]);
    assert_eq!(live.status().reasserts, 0, "never removed");
}

#[test]
fn a_dead_core_loses_its_routes_but_keeps_its_seat() {
    let _s = serial();
    let rt = runtime();
    let mut cores = Cores::start_with(3, |_, c| quick(c));
    let leader = cores.wait_leader(FORM).expect("leader");
    let f = (leader + 1) % 3;
    let fnode = cores.nodes[f].clone().expect("follower");
    let fid = fnode.id();
    let idx = rt
        .block_on(fnode.propose_routes(vec![add("core/own/#", fid)]))
        .expect("commit");
    rt.block_on(fnode.wait_applied(idx)).expect("applied");
    drop(fnode);
    let l = cores.nodes[leader].clone().expect("leader");
    assert!(
        wait_until(SETTLE, || l.members().contains_key(&fid)),
        "joined"
    );
    cores.kill(f);
    assert!(
        wait_until(SETTLE, || nodes_for(&l, "core/own/x").is_empty()),
        "a dead core's routes are removed"
    );
    assert!(l.members().contains_key(&fid), "its member record stays");
    assert_eq!(l.status().raft_voters.len(), 3, "and its voter seat");
    assert!(l.status().autoclean_removed >= 1);
}

#[test]
fn a_node_evicted_while_alive_puts_its_routes_back() {
    let _s = serial();
    let rt = runtime();
    let cores = Cores::start_with(1, |_, c| quick(c));
    cores.wait_leader(FORM).expect("leader");
    let core = cores.nodes[0].as_ref().expect("core");
    let r = quick_replicant("r1", 82, &cores);
    let rid = r.id();
    let ops = vec![add("mine/a", rid), add("mine/b/#", rid), add("other", 99)];
    let idx = rt.block_on(r.propose_routes(ops)).expect("commit");
    rt.block_on(r.wait_applied(idx)).expect("applied");
    let idx = rt
        .block_on(r.propose_routes(vec![halyard_cluster::RouteOp::Remove {
            filter: "mine/a".into(),
            node: rid,
        }]))
        .expect("commit");
    rt.block_on(r.wait_applied(idx)).expect("applied");
    assert!(wait_until(SETTLE, || core.members().contains_key(&rid)));

    let idx = rt.block_on(core.evict(rid)).expect("evicted");
    assert!(wait_until(SETTLE, || applied_at_least(&r, idx)));
    // It notices, joins again and re-proposes what it owns (not what it removed).
    assert!(
        wait_until(SETTLE, || core.members().contains_key(&rid)
            && nodes_for(core, "mine/b/c") == vec![rid]),
        "reasserted"
    );
    assert!(nodes_for(core, "mine/a").is_empty());
    assert_eq!(r.status().reasserts, 1);

    // A graceful leave is final.
    let idx = rt.block_on(r.leave()).expect("left");
    assert!(wait_until(SETTLE, || applied_at_least(core, idx)));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!core.members().contains_key(&rid));
    assert!(nodes_for(core, "mine/b/c").is_empty());
    assert_eq!(r.status().reasserts, 1);
}
