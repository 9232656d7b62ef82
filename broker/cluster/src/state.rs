//! The replicated state machine ([`ClusterState`]) and the lock-free route view the data
//! plane matches against ([`RouteTable`]), kept together by [`Replica`].
//!
//! Applying a command is deterministic: the same commands in the same order give the same
//! state on every core and replicant (ordered maps only, no clock, no randomness).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use halyard_topics::{Match, SubscriptionTrie, TopicLimits, TrieBatch};
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::types::{ApplyOutcome, Command, LogIndex, Member, NodeId, RouteOp};

/// Version byte that opens every encoded snapshot.
const SNAPSHOT_VERSION: u8 = 1;

/// A route row that appeared or disappeared while applying a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDelta {
    /// (filter, node) was added.
    Added(String, NodeId),
    /// (filter, node) was removed.
    Removed(String, NodeId),
}

/// The cluster-wide replicated state: the route table (filter -> owner nodes) and members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    routes: BTreeMap<String, BTreeSet<NodeId>>,
    /// Index: node -> the filters it owns rows for (derived, never encoded).
    by_node: BTreeMap<NodeId, BTreeSet<String>>,
    members: BTreeMap<NodeId, Member>,
}

/// The encoded form of a [`ClusterState`] (postcard after a version byte).
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    routes: Vec<(String, Vec<NodeId>)>,
    members: Vec<Member>,
}

/// Whether `filter` may be stored as a route (a valid filter or `$share/{group}/{filter}`).
pub fn valid_route_filter(filter: &str) -> bool {
    let limits = TopicLimits::default();
    match limits.parse_shared_subscription(filter) {
        Ok(Some(_)) => true,
        Ok(None) => limits.validate_topic_filter(filter).is_ok(),
        Err(_) => false,
    }
}

impl ClusterState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `cmd`, appending every route row change to `delta`.
    pub fn apply(&mut self, cmd: &Command, delta: &mut Vec<RouteDelta>) -> ApplyOutcome {
        let mut out = ApplyOutcome::default();
        match cmd {
            Command::Routes(ops) => {
                for op in ops {
                    self.apply_route_op(op, delta, &mut out);
                }
            }
            Command::Join(member) => {
                let stale = self
                    .members
                    .get(&member.id)
                    .is_some_and(|m| m.incarnation > member.incarnation);
                if !stale {
                    self.members.insert(member.id, member.clone());
                    out.changed += 1;
                }
            }
            Command::Leave(node) => {
                if self.members.remove(node).is_some() {
                    out.changed += 1;
                }
                self.apply_route_op(&RouteOp::RemoveNode(*node), delta, &mut out);
            }
        }
        out
    }

    fn apply_route_op(
        &mut self,
        op: &RouteOp,
        delta: &mut Vec<RouteDelta>,
        out: &mut ApplyOutcome,
    ) {
        match op {
            RouteOp::Add { filter, node } => {
                if !valid_route_filter(filter) {
                    out.rejected += 1;
                    return;
                }
                if self.routes.entry(filter.clone()).or_default().insert(*node) {
                    self.by_node
                        .entry(*node)
                        .or_default()
                        .insert(filter.clone());
                    delta.push(RouteDelta::Added(filter.clone(), *node));
                    out.changed += 1;
                }
            }
            RouteOp::Remove { filter, node } => {
                if self.remove_row(filter, *node) {
                    delta.push(RouteDelta::Removed(filter.clone(), *node));
                    out.changed += 1;
                }
            }
            RouteOp::RemoveNode(node) => {
                let Some(filters) = self.by_node.remove(node) else {
                    return;
                };
                for filter in filters {
                    if let Some(nodes) = self.routes.get_mut(&filter) {
                        nodes.remove(node);
                        if nodes.is_empty() {
                            self.routes.remove(&filter);
                        }
                    }
                    delta.push(RouteDelta::Removed(filter, *node));
                    out.changed += 1;
                }
            }
        }
    }

    fn remove_row(&mut self, filter: &str, node: NodeId) -> bool {
        let Some(nodes) = self.routes.get_mut(filter) else {
            return false;
        };
        if !nodes.remove(&node) {
            return false;
        }
        if nodes.is_empty() {
            self.routes.remove(filter);
        }
        if let Some(owned) = self.by_node.get_mut(&node) {
            owned.remove(filter);
            if owned.is_empty() {
                self.by_node.remove(&node);
            }
        }
        true
    }

    /// The nodes that own at least one route row.
    pub fn owners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.by_node.keys().copied()
    }

    /// Whether `node` owns at least one route row.
    pub fn owns_routes(&self, node: NodeId) -> bool {
        self.by_node.contains_key(&node)
    }

    /// Number of route rows (filter, node).
    pub fn route_rows(&self) -> usize {
        self.by_node.values().map(BTreeSet::len).sum()
    }

    /// Number of distinct filters with at least one row.
    pub fn filters(&self) -> usize {
        self.routes.len()
    }

    /// The owner nodes of `filter`'s rows.
    pub fn route_nodes(&self, filter: &str) -> Option<&BTreeSet<NodeId>> {
        self.routes.get(filter)
    }

    /// Every route row, in filter order.
    pub fn rows(&self) -> impl Iterator<Item = (&str, NodeId)> {
        self.routes
            .iter()
            .flat_map(|(f, nodes)| nodes.iter().map(move |n| (f.as_str(), *n)))
    }

    /// The members, by id.
    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    /// The compact encoding: a version byte, then postcard.
    pub fn snapshot(&self) -> Vec<u8> {
        let snap = SnapshotV1 {
            routes: self
                .routes
                .iter()
                .map(|(f, nodes)| (f.clone(), nodes.iter().copied().collect()))
                .collect(),
            members: self.members.values().cloned().collect(),
        };
        let out = vec![SNAPSHOT_VERSION];
        // Serialising plain strings, integers and vectors into a Vec cannot fail.
        match postcard::to_extend(&snap, out) {
            Ok(v) => v,
            Err(_) => unreachable!("postcard into a Vec cannot fail for SnapshotV1"),
        }
    }

    /// Decodes what [`ClusterState::snapshot`] produced.
    pub fn restore(bytes: &[u8]) -> Result<ClusterState, ClusterError> {
        let (version, body) = bytes
            .split_first()
            .ok_or_else(|| ClusterError::Decode("empty snapshot".into()))?;
        if *version != SNAPSHOT_VERSION {
            return Err(ClusterError::Decode(format!("snapshot version {version}")));
        }
        let snap: SnapshotV1 =
            postcard::from_bytes(body).map_err(|e| ClusterError::Decode(e.to_string()))?;
        let mut state = ClusterState::new();
        for (filter, nodes) in snap.routes {
            for node in &nodes {
                state
                    .by_node
                    .entry(*node)
                    .or_default()
                    .insert(filter.clone());
            }
            if !nodes.is_empty() {
                state.routes.insert(filter, nodes.into_iter().collect());
            }
        }
        for m in snap.members {
            state.members.insert(m.id, m);
        }
        Ok(state)
    }
}

/// One destination of a published message (see [`RouteTable::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The node that gets one copy.
    pub node: NodeId,
    /// Its ordinary (non-shared) subscriptions match: deliver to each of them.
    pub ordinary: bool,
    /// The shared groups it serves for this message: deliver to one local member of each.
    pub groups: Vec<SharedPick>,
}

/// A shared group picked to be served by one node: `$share/{group}/{filter}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharedPick {
    /// The ShareName.
    pub group: String,
    /// The topic filter after the ShareName.
    pub filter: String,
}

/// The route view of the data plane: filter -> owner nodes in a lock-free trie, plus the
/// index it reflects. Shared as `Arc<RouteTable>`; matching never takes a lock.
#[derive(Debug, Default)]
pub struct RouteTable {
    trie: SubscriptionTrie<NodeId, ()>,
    applied: AtomicU64,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The trie (key = owner node), for callers that want every [`Match`].
    pub fn trie(&self) -> &SubscriptionTrie<NodeId, ()> {
        &self.trie
    }

    /// The last log index applied to this table (0 before anything).
    pub fn applied_index(&self) -> LogIndex {
        self.applied.load(Ordering::Acquire)
    }

    /// Calls `visit` once per node that has subscribers for `topic`: every node with a
    /// matching ordinary route, and for each matching shared group one member node chosen
    /// round-robin (`Some(group)` tells which group it serves). A node may be visited more
    /// than once; [`RouteTable::nodes_for_topic`] deduplicates.
    pub fn for_each_node(&self, topic: &str, mut visit: impl FnMut(NodeId, Option<&str>)) {
        self.trie.for_each_match(topic, |m| match m {
            Match::Subscriber { key, .. } => visit(*key, None),
            Match::Shared(group) => {
                if let Some((node, _)) = group.pick_round_robin() {
                    visit(*node, Some(group.name()));
                }
            }
        });
    }

    /// The dispatch plan of a message published on `topic`: one [`Dispatch`] per node that
    /// should get a copy (ascending node order, `out` cleared first), saying whether its
    /// ordinary subscriptions match and which shared groups it was picked to serve. Each
    /// matching shared group is given to exactly one node (round-robin over the nodes with
    /// members), so a group spanning nodes gets one copy per message [MQTT-4.8.2-2]: the
    /// receiving node delivers to its ordinary matching subscribers if `ordinary`, and to
    /// one local member of each group in `groups` only; it serves no other shared group
    /// for this message. The publishing node applies the same rule to its own entry.
    pub fn plan(&self, topic: &str, out: &mut Vec<Dispatch>) {
        out.clear();
        fn slot(out: &mut Vec<Dispatch>, node: NodeId) -> &mut Dispatch {
            let i = match out.iter().position(|d| d.node == node) {
                Some(i) => i,
                None => {
                    out.push(Dispatch {
                        node,
                        ordinary: false,
                        groups: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            &mut out[i]
        }
        self.trie.for_each_match(topic, |m| match m {
            Match::Subscriber { key, .. } => slot(out, *key).ordinary = true,
            Match::Shared(group) => {
                if let Some((node, _)) = group.pick_round_robin() {
                    slot(out, *node).groups.push(SharedPick {
                        group: group.name().to_owned(),
                        filter: group.filter().to_owned(),
                    });
                }
            }
        });
        out.sort_unstable_by_key(|d| d.node);
    }

    /// The distinct nodes that should get one copy of a message published on `topic`,
    /// appended to `out` (cleared first) in ascending order.
    pub fn nodes_for_topic(&self, topic: &str, out: &mut Vec<NodeId>) {
        out.clear();
        self.for_each_node(topic, |n, _| out.push(n));
        out.sort_unstable();
        out.dedup();
    }

    fn apply_delta(&self, delta: &[RouteDelta]) {
        if delta.is_empty() {
            return;
        }
        self.trie.batch(|b| {
            for d in delta {
                match d {
                    RouteDelta::Added(f, n) => insert_row(b, f, *n),
                    RouteDelta::Removed(f, n) => remove_row(b, f, *n),
                }
            }
        });
    }
}

fn insert_row(b: &mut TrieBatch<'_, NodeId, ()>, filter: &str, node: NodeId) {
    // Filters were validated by `valid_route_filter` before they entered the state, with the
    // same default limits the trie uses, so these inserts cannot fail.
    let _ = match TopicLimits::default().parse_shared_subscription(filter) {
        Ok(Some(s)) => b.insert_shared(s.group, s.filter, node, ()),
        _ => b.insert(filter, node, ()),
    };
}

fn remove_row(b: &mut TrieBatch<'_, NodeId, ()>, filter: &str, node: NodeId) {
    match TopicLimits::default().parse_shared_subscription(filter) {
        Ok(Some(s)) => b.remove_shared(s.group, s.filter, &node),
        _ => b.remove(filter, &node),
    };
}

/// A [`ClusterState`] together with its [`RouteTable`] and applied index: what cores (in
/// the Raft state machine) and replicants (in the stream client) apply commands to.
#[derive(Debug)]
pub struct Replica {
    state: ClusterState,
    routes: Arc<RouteTable>,
    applied: LogIndex,
    delta: Vec<RouteDelta>,
}

impl Replica {
    /// An empty replica publishing into `routes` (which must be empty).
    pub fn new(routes: Arc<RouteTable>) -> Self {
        Replica {
            state: ClusterState::new(),
            routes,
            applied: 0,
            delta: Vec::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The shared route table.
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    /// The last applied index.
    pub fn applied(&self) -> LogIndex {
        self.applied
    }

    /// Applies the entry at `index` (`None`: an entry without a command, e.g. a Raft
    /// membership or blank entry, which only advances the index). Entries at or below the
    /// applied index are ignored (idempotent replay).
    pub fn apply(&mut self, index: LogIndex, cmd: Option<&Command>) -> ApplyOutcome {
        if index <= self.applied && self.applied != 0 {
            return ApplyOutcome::default();
        }
        let mut out = ApplyOutcome::default();
        if let Some(cmd) = cmd {
            self.delta.clear();
            out = self.state.apply(cmd, &mut self.delta);
            self.routes.apply_delta(&self.delta);
        }
        self.applied = index;
        self.routes.applied.store(index, Ordering::Release);
        out
    }

    /// Replaces the state with `state` as of `index`; the route table changes by the
    /// difference in one atomic batch, so matches never see a half-installed snapshot.
    pub fn install(&mut self, index: LogIndex, state: ClusterState) {
        let mut delta = Vec::new();
        for (f, n) in self.state.rows() {
            if !state.route_nodes(f).is_some_and(|s| s.contains(&n)) {
                delta.push(RouteDelta::Removed(f.to_owned(), n));
            }
        }
        for (f, n) in state.rows() {
            if !self.state.route_nodes(f).is_some_and(|s| s.contains(&n)) {
                delta.push(RouteDelta::Added(f.to_owned(), n));
            }
        }
        self.routes.apply_delta(&delta);
        self.state = state;
        self.applied = index;
        self.routes.applied.store(index, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeRole;

    fn add(f: &str, n: NodeId) -> RouteOp {
        RouteOp::Add {
            filter: f.into(),
            node: n,
        }
    }

    fn member(id: NodeId, inc: u64) -> Member {
        Member {
            id,
            name: format!("n{id}"),
            role: NodeRole::Replicant,
            cluster_addr: "127.0.0.1:1".into(),
            incarnation: inc,
        }
    }

    fn nodes(t: &RouteTable, topic: &str) -> Vec<NodeId> {
        let mut v = Vec::new();
        t.nodes_for_topic(topic, &mut v);
        v
    }

    #[test]
    fn apply_updates_state_and_trie() {
        let mut r = Replica::new(Arc::new(RouteTable::new()));
        let out = r.apply(
            1,
            Some(&Command::Routes(vec![
                add("a/+", 1),
                add("a/b", 2),
                add("a/#", 1),
                add("bad/#/x", 3),
                add("$share/g/a/b", 3),
            ])),
        );
        assert_eq!(
            out,
            ApplyOutcome {
                changed: 4,
                rejected: 1
            }
        );
        assert_eq!(nodes(r.routes(), "a/b"), vec![1, 2, 3]);
        assert_eq!(nodes(r.routes(), "a/c"), vec![1]);
        assert_eq!(r.routes().applied_index(), 1);
        r.apply(2, Some(&Command::Routes(vec![RouteOp::RemoveNode(1)])));
        assert_eq!(nodes(r.routes(), "a/b"), vec![2, 3]);
        assert_eq!(nodes(r.routes(), "a/c"), Vec::<NodeId>::new());
        assert_eq!(r.state().route_rows(), 2);
        r.apply(
            3,
            Some(&Command::Routes(vec![RouteOp::Remove {
                filter: "a/b".into(),
                node: 2,
            }])),
        );
        assert_eq!(nodes(r.routes(), "a/b"), vec![3]);
    }

    /// [MQTT-4.8.2-2]: a message matching a shared group spanning three nodes goes to one
    /// node per message, spread over all of them; ordinary routes go to their node always.
    #[test]
    fn a_shared_group_across_nodes_gets_one_copy_per_message() {
        let mut r = Replica::new(Arc::new(RouteTable::new()));
        r.apply(
            1,
            Some(&Command::Routes(vec![
                add("$share/g/t/#", 1),
                add("$share/g/t/#", 2),
                add("$share/g/t/#", 3),
                add("$share/h/t/+", 3),
                add("t/+", 2),
            ])),
        );
        let mut plan = Vec::new();
        let mut served = BTreeMap::<NodeId, u32>::new();
        for _ in 0..300 {
            r.routes().plan("t/x", &mut plan);
            let g: Vec<NodeId> = plan
                .iter()
                .filter(|d| d.groups.iter().any(|p| p.group == "g" && p.filter == "t/#"))
                .map(|d| d.node)
                .collect();
            assert_eq!(g.len(), 1, "exactly one node serves group g: {plan:?}");
            *served.entry(g[0]).or_default() += 1;
            let h: Vec<&Dispatch> = plan
                .iter()
                .filter(|d| d.groups.iter().any(|p| p.group == "h"))
                .collect();
            assert_eq!(h.len(), 1);
            assert_eq!(h[0].node, 3);
            let two = plan.iter().find(|d| d.node == 2).expect("node 2 always");
            assert!(two.ordinary);
            assert!(plan.iter().all(|d| d.node == 2 || !d.ordinary));
            assert!(
                plan.windows(2).all(|w| w[0].node < w[1].node),
                "one entry per node"
            );
        }
        assert_eq!(served.values().sum::<u32>(), 300);
        assert!(
            served.values().all(|n| *n == 100),
            "round robin: {served:?}"
        );
        r.routes().plan("u", &mut plan);
        assert!(plan.is_empty());
    }

    #[test]
    fn replay_is_idempotent() {
        let mut r = Replica::new(Arc::new(RouteTable::new()));
        let cmd = Command::Routes(vec![add("x", 1)]);
        r.apply(1, Some(&cmd));
        r.apply(2, None);
        let out = r.apply(1, Some(&Command::Routes(vec![add("y", 1)])));
        assert_eq!(out, ApplyOutcome::default());
        assert_eq!(r.applied(), 2);
        assert!(r.state().route_nodes("y").is_none());
    }

    #[test]
    fn join_and_leave_members_with_incarnations() {
        let mut s = ClusterState::new();
        let mut d = Vec::new();
        s.apply(&Command::Join(member(7, 5)), &mut d);
        s.apply(&Command::Join(member(7, 4)), &mut d);
        assert_eq!(s.members()[&7].incarnation, 5, "stale join ignored");
        s.apply(&Command::Routes(vec![add("t", 7), add("u", 8)]), &mut d);
        s.apply(&Command::Leave(7), &mut d);
        assert!(s.members().is_empty());
        assert_eq!(s.rows().collect::<Vec<_>>(), vec![("u", 8)]);
    }

    #[test]
    fn snapshot_round_trip_and_install_diff() {
        let mut a = Replica::new(Arc::new(RouteTable::new()));
        a.apply(1, Some(&Command::Join(member(1, 1))));
        a.apply(
            2,
            Some(&Command::Routes(vec![
                add("a/#", 1),
                add("b", 2),
                add("$share/g/c", 2),
            ])),
        );
        let bytes = a.state().snapshot();
        let restored = ClusterState::restore(&bytes).unwrap();
        assert_eq!(&restored, a.state());

        let mut b = Replica::new(Arc::new(RouteTable::new()));
        b.apply(1, Some(&Command::Routes(vec![add("old", 9), add("b", 2)])));
        b.install(2, restored);
        assert_eq!(b.state(), a.state());
        assert_eq!(b.applied(), 2);
        assert_eq!(nodes(b.routes(), "old"), Vec::<NodeId>::new());
        assert_eq!(nodes(b.routes(), "a/x"), vec![1]);
        assert_eq!(nodes(b.routes(), "c"), vec![2]);
        assert_eq!(b.routes().trie().len(), a.routes().trie().len());
    }

    #[test]
    fn restore_rejects_garbage() {
        assert!(ClusterState::restore(&[]).is_err());
        assert!(ClusterState::restore(&[9, 1, 2]).is_err());
        assert!(ClusterState::restore(&[SNAPSHOT_VERSION, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn deterministic_apply_gives_equal_states() {
        let cmds: Vec<Command> = (0..200u64)
            .map(|i| {
                if i % 7 == 0 {
                    Command::Routes(vec![RouteOp::RemoveNode(i % 5)])
                } else {
                    Command::Routes(vec![add(&format!("t/{}/+", i % 13), i % 5)])
                }
            })
            .collect();
        let mut x = ClusterState::new();
        let mut y = ClusterState::new();
        let mut d = Vec::new();
        for c in &cmds {
            x.apply(c, &mut d);
            y.apply(c, &mut d);
        }
        assert_eq!(x.snapshot(), y.snapshot());
    }

    /// A naive MQTT filter matcher (reference for the trie-backed route view).
    fn naive_match(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let (f, t): (Vec<&str>, Vec<&str>) =
            (filter.split('/').collect(), topic.split('/').collect());
        for (i, level) in f.iter().enumerate() {
            if *level == "#" {
                return true;
            }
            match t.get(i) {
                Some(tl) if *level == "+" || level == tl => {}
                _ => return false,
            }
        }
        f.len() == t.len()
    }

    /// Seeded random walk: route ops, removals of whole nodes, and snapshot/install at
    /// random points; the trie-backed view must always agree with a naive model.
    #[test]
    fn seeded_model_check_of_apply_install_and_matching() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let levels = ["a", "b", "+", "#", "$sys"];
        let mut r = Replica::new(Arc::new(RouteTable::new()));
        let mut model: BTreeSet<(String, NodeId)> = BTreeSet::new();
        for index in 1..=400u64 {
            let mut ops = Vec::new();
            for _ in 0..=next(4) {
                let depth = 1 + next(3);
                let filter: Vec<&str> = (0..depth).map(|_| levels[next(5) as usize]).collect();
                let filter = filter.join("/");
                let node = next(4);
                match next(10) {
                    0 => {
                        model.retain(|(_, n)| *n != node);
                        ops.push(RouteOp::RemoveNode(node));
                    }
                    1..=3 => {
                        model.remove(&(filter.clone(), node));
                        ops.push(RouteOp::Remove { filter, node });
                    }
                    _ => {
                        if valid_route_filter(&filter) {
                            model.insert((filter.clone(), node));
                        }
                        ops.push(RouteOp::Add { filter, node });
                    }
                }
            }
            r.apply(index, Some(&Command::Routes(ops)));
            if next(25) == 0 {
                let mut fresh = Replica::new(Arc::new(RouteTable::new()));
                let restored = ClusterState::restore(&r.state().snapshot()).unwrap();
                fresh.install(index, restored);
                assert_eq!(fresh.state(), r.state());
                r = fresh;
            }
            let rows: BTreeSet<(String, NodeId)> =
                r.state().rows().map(|(f, n)| (f.to_owned(), n)).collect();
            assert_eq!(rows, model, "rows at index {index}");
            for topic in ["a", "a/b", "b/a/a", "$sys/a", "a/$sys", "b"] {
                let mut want: Vec<NodeId> = model
                    .iter()
                    .filter(|(f, _)| naive_match(f, topic))
                    .map(|(_, n)| *n)
                    .collect();
                want.sort_unstable();
                want.dedup();
                assert_eq!(
                    nodes(r.routes(), topic),
                    want,
                    "topic {topic} at index {index}"
                );
            }
        }
    }
}
