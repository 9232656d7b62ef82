//! The replicated state machine ([`ClusterState`]) and the lock-free route view the data
//! plane matches against ([`RouteTable`]), kept together by [`Replica`].
//!
//! Applying a command is deterministic: the same commands in the same order give the same
//! state on every core and replicant (ordered maps only, no clock, no randomness; retained
//! messages expire by an explicit [`RetainedOp::Expire`] the leader proposes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use halyard_topics::{Match, SubscriptionTrie, TopicLimits, TrieBatch};
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::types::{
    ApplyOutcome, Command, LogIndex, Member, NodeId, RetainedBatch, RetainedMessage, RetainedOp,
    RouteOp,
};

/// Version byte that opens every encoded snapshot (2: with retained messages; 1 is still
/// read).
const SNAPSHOT_VERSION: u8 = 2;

/// A retained message that changed while applying a command or installing a snapshot, in
/// the order the changes happened (see [`RetainedSink`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetainedDelta {
    /// `topic` now retains this message (new or replaced).
    Set(String, Arc<RetainedMessage>),
    /// `topic` no longer retains a message (deleted or expired).
    Removed(String),
}

/// Where a node's applied retained messages go (the server's local index). Called under the
/// replica's lock, in apply order, right after each command or snapshot: keep it short and
/// never call back into the cluster node from it.
pub trait RetainedSink: Send + Sync {
    /// Applies `changes` in order.
    fn apply(&self, changes: &[RetainedDelta]);
}

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
    /// Retained messages by topic.
    retained: BTreeMap<String, Arc<RetainedMessage>>,
    /// Sum of [`RetainedMessage::cost`] over `retained` (derived, never encoded).
    retained_bytes: u64,
    /// Index: (expiry, topic) of every retained message that expires (derived).
    expiring: BTreeSet<(u64, String)>,
}

/// The encoded form of a [`ClusterState`] before retained messages (version 1).
#[derive(Deserialize)]
struct SnapshotV1 {
    routes: Vec<(String, Vec<NodeId>)>,
    members: Vec<Member>,
}

/// The encoded form of a [`ClusterState`] (postcard after the version byte 2).
#[derive(Deserialize)]
struct SnapshotV2 {
    routes: Vec<(String, Vec<NodeId>)>,
    members: Vec<Member>,
    retained: Vec<(String, RetainedMessage)>,
}

/// [`SnapshotV2`] borrowing the state (same encoding; bodies are not copied).
#[derive(Serialize)]
struct SnapshotV2Ref<'a> {
    routes: Vec<(&'a str, Vec<NodeId>)>,
    members: Vec<&'a Member>,
    retained: Vec<(&'a str, &'a RetainedMessage)>,
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

    /// Applies `cmd`, appending every route row change to `delta` (retained changes are
    /// not reported: see [`ClusterState::apply_all`]).
    pub fn apply(&mut self, cmd: &Command, delta: &mut Vec<RouteDelta>) -> ApplyOutcome {
        self.apply_all(cmd, delta, &mut Vec::new())
    }

    /// Applies `cmd`, appending every route row change to `delta` and every retained
    /// message change to `retained`.
    pub fn apply_all(
        &mut self,
        cmd: &Command,
        delta: &mut Vec<RouteDelta>,
        retained: &mut Vec<RetainedDelta>,
    ) -> ApplyOutcome {
        let mut out = ApplyOutcome::default();
        match cmd {
            Command::Retained(batch) => self.apply_retained(batch, retained, &mut out),
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

    fn apply_retained(
        &mut self,
        batch: &RetainedBatch,
        delta: &mut Vec<RetainedDelta>,
        out: &mut ApplyOutcome,
    ) {
        for op in &batch.ops {
            match op {
                RetainedOp::Set { topic, message } => {
                    if TopicLimits::default().validate_topic_name(topic).is_err() {
                        out.rejected += 1;
                        continue;
                    }
                    let old = self.retained.get(topic.as_str()).map(|m| m.cost(topic));
                    let new = message.cost(topic);
                    let count_full =
                        old.is_none() && self.retained.len() as u64 >= batch.max_messages;
                    let bytes_after = self.retained_bytes - old.unwrap_or(0) + new;
                    let bytes_full = new > old.unwrap_or(0) && bytes_after > batch.max_bytes;
                    if count_full || bytes_full {
                        out.retained_refused += 1;
                        continue;
                    }
                    self.remove_retained(topic);
                    let m = Arc::new(message.clone());
                    if let Some(at) = m.expires_at_unix_ms {
                        self.expiring.insert((at, topic.clone()));
                    }
                    self.retained_bytes += new;
                    self.retained.insert(topic.clone(), m.clone());
                    delta.push(RetainedDelta::Set(topic.clone(), m));
                    out.changed += 1;
                }
                RetainedOp::Delete { topic } => {
                    if self.remove_retained(topic) {
                        delta.push(RetainedDelta::Removed(topic.clone()));
                        out.changed += 1;
                    }
                }
                RetainedOp::Expire { topic, at_unix_ms } => {
                    let same = self
                        .retained
                        .get(topic.as_str())
                        .is_some_and(|m| m.expires_at_unix_ms == Some(*at_unix_ms));
                    if same && self.remove_retained(topic) {
                        delta.push(RetainedDelta::Removed(topic.clone()));
                        out.changed += 1;
                    }
                }
            }
        }
    }

    fn remove_retained(&mut self, topic: &str) -> bool {
        let Some(old) = self.retained.remove(topic) else {
            return false;
        };
        self.retained_bytes -= old.cost(topic);
        if let Some(at) = old.expires_at_unix_ms {
            self.expiring.remove(&(at, topic.to_owned()));
        }
        true
    }

    /// The retained message of `topic`.
    pub fn retained(&self, topic: &str) -> Option<&Arc<RetainedMessage>> {
        self.retained.get(topic)
    }

    /// Every retained message, in topic order.
    pub fn retained_iter(&self) -> impl Iterator<Item = (&str, &Arc<RetainedMessage>)> {
        self.retained.iter().map(|(t, m)| (t.as_str(), m))
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Sum of [`RetainedMessage::cost`] over the retained messages.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// Up to `max` retained messages that expired at or before `now_unix_ms`, as the
    /// [`RetainedOp::Expire`] operations that remove them (oldest expiry first).
    pub fn expired_retained(&self, now_unix_ms: u64, max: usize) -> Vec<RetainedOp> {
        self.expiring
            .iter()
            .take_while(|(at, _)| *at <= now_unix_ms)
            .take(max)
            .map(|(at, topic)| RetainedOp::Expire {
                topic: topic.clone(),
                at_unix_ms: *at,
            })
            .collect()
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
        let snap = SnapshotV2Ref {
            routes: self
                .routes
                .iter()
                .map(|(f, nodes)| (f.as_str(), nodes.iter().copied().collect()))
                .collect(),
            members: self.members.values().collect(),
            retained: self
                .retained
                .iter()
                .map(|(t, m)| (t.as_str(), &**m))
                .collect(),
        };
        let out = vec![SNAPSHOT_VERSION];
        // Serialising plain strings, integers and vectors into a Vec cannot fail.
        match postcard::to_extend(&snap, out) {
            Ok(v) => v,
            Err(_) => unreachable!("postcard into a Vec cannot fail for SnapshotV2"),
        }
    }

    /// Decodes what [`ClusterState::snapshot`] produced.
    pub fn restore(bytes: &[u8]) -> Result<ClusterState, ClusterError> {
        let (version, body) = bytes
            .split_first()
            .ok_or_else(|| ClusterError::Decode("empty snapshot".into()))?;
        let decode = |e: postcard::Error| ClusterError::Decode(e.to_string());
        let snap: SnapshotV2 = match version {
            1 => {
                let v1: SnapshotV1 = postcard::from_bytes(body).map_err(decode)?;
                SnapshotV2 {
                    routes: v1.routes,
                    members: v1.members,
                    retained: Vec::new(),
                }
            }
            2 => postcard::from_bytes(body).map_err(decode)?,
            _ => return Err(ClusterError::Decode(format!("snapshot version {version}"))),
        };
        let mut state = ClusterState::new();
        for (topic, m) in snap.retained {
            if let Some(at) = m.expires_at_unix_ms {
                state.expiring.insert((at, topic.clone()));
            }
            state.retained_bytes += m.cost(&topic);
            state.retained.insert(topic, Arc::new(m));
        }
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
    retained_delta: Vec<RetainedDelta>,
    sink: Option<Arc<dyn RetainedSink>>,
}

impl std::fmt::Debug for dyn RetainedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetainedSink")
    }
}

impl Replica {
    /// An empty replica publishing into `routes` (which must be empty).
    pub fn new(routes: Arc<RouteTable>) -> Self {
        Replica {
            state: ClusterState::new(),
            routes,
            applied: 0,
            delta: Vec::new(),
            retained_delta: Vec::new(),
            sink: None,
        }
    }

    /// From now on, hands every retained change to `sink`; first it gets every retained
    /// message of the current state (as [`RetainedDelta::Set`]s).
    pub fn set_retained_sink(&mut self, sink: Arc<dyn RetainedSink>) {
        let all: Vec<RetainedDelta> = self
            .state
            .retained_iter()
            .map(|(t, m)| RetainedDelta::Set(t.to_owned(), m.clone()))
            .collect();
        if !all.is_empty() {
            sink.apply(&all);
        }
        self.sink = Some(sink);
    }

    fn flush_retained(&mut self) {
        if let Some(sink) = &self.sink
            && !self.retained_delta.is_empty()
        {
            sink.apply(&self.retained_delta);
        }
        self.retained_delta.clear();
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
            out = self
                .state
                .apply_all(cmd, &mut self.delta, &mut self.retained_delta);
            self.routes.apply_delta(&self.delta);
            self.flush_retained();
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
        for (t, _) in self.state.retained_iter() {
            if state.retained(t).is_none() {
                self.retained_delta
                    .push(RetainedDelta::Removed(t.to_owned()));
            }
        }
        for (t, m) in state.retained_iter() {
            if self.state.retained(t) != Some(m) {
                self.retained_delta
                    .push(RetainedDelta::Set(t.to_owned(), m.clone()));
            }
        }
        self.state = state;
        self.flush_retained();
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
                rejected: 1,
                retained_refused: 0,
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

    fn set(topic: &str, body: &[u8], expires: Option<u64>) -> RetainedOp {
        RetainedOp::Set {
            topic: topic.into(),
            message: RetainedMessage {
                expires_at_unix_ms: expires,
                body: body.to_vec(),
            },
        }
    }

    fn retained(ops: Vec<RetainedOp>, max_messages: u64, max_bytes: u64) -> Command {
        Command::Retained(RetainedBatch {
            ops,
            max_messages,
            max_bytes,
        })
    }

    /// Records what a [`Replica`] hands its sink, as the server's index would hold it.
    #[derive(Default)]
    struct Mirror(std::sync::Mutex<BTreeMap<String, Vec<u8>>>);

    impl RetainedSink for Mirror {
        fn apply(&self, changes: &[RetainedDelta]) {
            let mut m = self.0.lock().unwrap();
            for c in changes {
                match c {
                    RetainedDelta::Set(t, msg) => {
                        m.insert(t.clone(), msg.body.clone());
                    }
                    RetainedDelta::Removed(t) => {
                        m.remove(t);
                    }
                }
            }
        }
    }

    fn bodies(s: &ClusterState) -> BTreeMap<String, Vec<u8>> {
        s.retained_iter()
            .map(|(t, m)| (t.to_owned(), m.body.clone()))
            .collect()
    }

    /// [MQTT-3.3.1-5] [MQTT-3.3.1-6]: a retained message replaces the topic's previous
    /// one, an empty payload (Delete) removes it; the caps refuse new topics and growth.
    #[test]
    fn retained_set_replace_delete_and_caps() {
        let mut s = ClusterState::new();
        let mut d = Vec::new();
        let big = u64::MAX;
        let out = s.apply(
            &retained(
                vec![
                    set("a", b"1", None),
                    set("b", b"2", None),
                    set("a", b"3", None),
                ],
                big,
                big,
            ),
            &mut d,
        );
        assert_eq!(out.changed, 3);
        assert_eq!(bodies(&s).get("a").map(Vec::as_slice), Some(&b"3"[..]));
        assert_eq!(s.retained_count(), 2);
        assert_eq!(s.retained_bytes(), 4);
        // Invalid topic names (wildcards) are rejected, not stored.
        let out = s.apply(&retained(vec![set("x/+", b"1", None)], big, big), &mut d);
        assert_eq!(out.rejected, 1);
        // Count cap: a new topic is refused at 2, a replacement is not.
        let out = s.apply(
            &retained(vec![set("c", b"1", None), set("b", b"22", None)], 2, big),
            &mut d,
        );
        assert_eq!((out.changed, out.retained_refused), (1, 1));
        assert_eq!(s.retained_count(), 2);
        // Byte cap: growth beyond it is refused, shrinking is not.
        let out = s.apply(
            &retained(vec![set("b", b"222222", None), set("b", b"", None)], big, 5),
            &mut d,
        );
        assert_eq!((out.changed, out.retained_refused), (1, 1));
        assert_eq!(s.retained_bytes(), 3);
        s.apply(
            &retained(
                vec![
                    RetainedOp::Delete { topic: "a".into() },
                    RetainedOp::Delete { topic: "zz".into() },
                ],
                big,
                big,
            ),
            &mut d,
        );
        assert_eq!(bodies(&s).keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(s.retained_bytes(), 1);
    }

    #[test]
    fn expiry_removes_only_the_message_that_expired() {
        let mut s = ClusterState::new();
        let mut d = Vec::new();
        let big = u64::MAX;
        s.apply(
            &retained(
                vec![
                    set("a", b"1", Some(100)),
                    set("b", b"2", Some(300)),
                    set("c", b"3", None),
                ],
                big,
                big,
            ),
            &mut d,
        );
        assert!(s.expired_retained(99, 10).is_empty());
        let due = s.expired_retained(300, 10);
        assert_eq!(due.len(), 2);
        assert_eq!(s.expired_retained(300, 1).len(), 1, "bounded");
        // "b" was replaced after the sweep looked: its Expire leaves the new one alone.
        s.apply(
            &retained(vec![set("b", b"new", Some(900))], big, big),
            &mut d,
        );
        s.apply(&retained(due, big, big), &mut d);
        assert_eq!(
            bodies(&s).keys().collect::<Vec<_>>(),
            vec!["b", "c"],
            "a expired, b replaced"
        );
        assert_eq!(s.expired_retained(1000, 10).len(), 1);
    }

    #[test]
    fn retained_survive_snapshots_and_reach_the_sink_in_order() {
        let big = u64::MAX;
        let mut a = Replica::new(Arc::new(RouteTable::new()));
        let early = Arc::new(Mirror::default());
        a.apply(
            1,
            Some(&retained(vec![set("t/1", b"x", Some(5))], big, big)),
        );
        a.set_retained_sink(early.clone());
        assert_eq!(early.0.lock().unwrap().len(), 1, "current messages first");
        a.apply(
            2,
            Some(&retained(
                vec![
                    set("t/2", b"y", None),
                    RetainedOp::Delete {
                        topic: "t/1".into(),
                    },
                ],
                big,
                big,
            )),
        );
        assert_eq!(*early.0.lock().unwrap(), bodies(a.state()));

        let restored = ClusterState::restore(&a.state().snapshot()).unwrap();
        assert_eq!(&restored, a.state());
        assert_eq!(restored.retained_bytes(), a.state().retained_bytes());

        // A replica with other messages installs the snapshot: its sink sees the difference.
        let mut b = Replica::new(Arc::new(RouteTable::new()));
        let mirror = Arc::new(Mirror::default());
        b.set_retained_sink(mirror.clone());
        b.apply(
            1,
            Some(&retained(
                vec![set("old", b"o", None), set("t/2", b"stale", None)],
                big,
                big,
            )),
        );
        b.install(2, restored);
        assert_eq!(*mirror.0.lock().unwrap(), bodies(a.state()));
    }

    #[test]
    fn version_1_snapshots_are_still_read() {
        #[derive(Serialize)]
        struct V1 {
            routes: Vec<(String, Vec<NodeId>)>,
            members: Vec<Member>,
        }
        let v1 = V1 {
            routes: vec![("a/#".into(), vec![1, 2])],
            members: vec![member(1, 1)],
        };
        let bytes = postcard::to_extend(&v1, vec![1u8]).unwrap();
        let s = ClusterState::restore(&bytes).unwrap();
        assert_eq!(s.route_rows(), 2);
        assert_eq!(s.retained_count(), 0);
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
                } else if i % 3 == 0 {
                    let t = format!("r/{}", i % 11);
                    let op = if i % 2 == 0 {
                        set(&t, &i.to_be_bytes(), Some(i))
                    } else {
                        RetainedOp::Delete { topic: t }
                    };
                    retained(vec![op], 8, 64)
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
