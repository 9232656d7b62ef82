//! [`ClusterConfig`]: every limit and timing of the cluster layer, with defaults and
//! validation that names the offending field.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ClusterError;
use crate::types::{NodeRole, node_id_for_name};

/// Configuration of one cluster node. In TOML the node identity sits in `[node]`
/// (`name`, `role`) and the rest in `[cluster]`; the server assembles both into this struct
/// (see [`ClusterConfig::apply_env`] for the environment contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `node.name`: unique name of this node (`HALYARD_NODE__NAME`).
    pub node_name: String,
    /// `node.role`: `core` or `replicant` (`HALYARD_NODE__ROLE`). Default `core`.
    pub role: NodeRole,
    /// `cluster.listen`: the cluster listener (Raft, replicant stream, writes, links).
    pub listen: SocketAddr,
    /// `cluster.advertise`: the address other nodes use to reach this one; default `listen`.
    pub advertise: Option<SocketAddr>,
    /// `cluster.seeds`: the cores' cluster listeners (`host:port`); a list, or one
    /// comma-separated string (`HALYARD_CLUSTER__SEEDS=a:1,b:2`).
    #[serde(deserialize_with = "list_or_csv")]
    pub seeds: Vec<String>,
    /// `cluster.initial_cores`: names of the cores that form the first Raft group; only the
    /// first of them ever forms it (see [`crate::ClusterNode`]).
    #[serde(deserialize_with = "list_or_csv")]
    pub initial_cores: Vec<String>,
    /// `cluster.data_dir`: where a core keeps its Raft vote, log and snapshot
    /// (`<data_dir>/raft.redb`), so a restarted core recovers them from disk. The server
    /// sets it to `store.dir` (`HALYARD_STORE__DIR`) unless configured. `None` keeps them in
    /// memory only (tests; a core restarted without its disk must be caught up by the
    /// leader, and losing a majority of cores at once loses the table). Replicants ignore it.
    pub data_dir: Option<PathBuf>,
    /// Most write requests (appends, votes, snapshot writes) group-committed in one redb
    /// transaction and fsync; a cut batch is counted in `raft_write_batch_full`. Default 256.
    pub raft_write_batch_max: usize,
    /// Most route operations in one log entry. Default 1000.
    pub route_batch_max: usize,
    /// How long a batch collects route operations before it is proposed, in ms. Default 1.
    pub route_batch_interval_ms: u64,
    /// Most route operations waiting to be batched; proposing more fails with
    /// [`ClusterError::QueueFull`] (counted). Default 100 000.
    pub route_queue_max: usize,
    /// Raft heartbeat interval in ms. Default 100.
    pub heartbeat_interval_ms: u64,
    /// Raft election timeout lower bound in ms. Default 400.
    pub election_timeout_min_ms: u64,
    /// Raft election timeout upper bound in ms. Default 800.
    pub election_timeout_max_ms: u64,
    /// Take a Raft snapshot after this many applied entries. Default 5000.
    pub snapshot_every_entries: u64,
    /// Largest frame accepted on any cluster connection, in bytes (checked before the frame
    /// is buffered). Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Snapshot bytes per frame on the replicant stream. Default 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Committed entries each core keeps in memory for replicants that resume; a replicant
    /// asking for an older index gets a snapshot. Default 20 000.
    pub stream_backlog_entries: usize,
    /// Bytes of route operations the backlog may hold (estimated; the oldest entries go
    /// first). Default 64 MiB.
    pub stream_backlog_bytes: usize,
    /// Entries queued per replicant stream before that stream is cut (the replicant then
    /// resumes from its index). Default 8192.
    pub stream_queue_max: usize,
    /// A replicant drops its stream (and resumes on another core) after this long without
    /// a frame; cores send heartbeats every `heartbeat_interval_ms`. Default 5000.
    pub stream_idle_timeout_ms: u64,
    /// Messages queued per destination node on a forwarding link. Default 10 000.
    pub link_queue_max: usize,
    /// Messages sent on one link and not yet acknowledged by the receiver; at the limit the
    /// link waits for acknowledgements (counted in `link_inflight_full`). Default 10 000.
    pub link_inflight_max: usize,
    /// How long [`crate::ClusterNode::send_acked`] waits for the acknowledgement, in ms.
    /// Default 5000.
    pub link_ack_timeout_ms: u64,
    /// Most messages per link frame. Default 256.
    pub link_batch_max: usize,
    /// Received messages queued for the server before links stop reading (back-pressure
    /// to the senders). Default 10 000.
    pub inbound_queue_max: usize,
    /// Bound on one connect attempt, in ms. Default 1000.
    pub connect_timeout_ms: u64,
    /// Pause between reconnect attempts, in ms. Default 200.
    pub reconnect_backoff_ms: u64,
    /// Bound on one forwarded write (proposal) end to end, in ms. Default 5000.
    pub write_timeout_ms: u64,
    /// Bound on the first core's wait for all `initial_cores` to answer, in ms. Default 60 000.
    pub form_timeout_ms: u64,
    /// A node the core group has not seen for this long is declared dead (a replicant: no
    /// stream on any core; a core: not answering the leader's poll): a replicant's member
    /// record and routes, a core's routes only, are removed in one committed entry
    /// (counted in `autoclean_removed`). 0 disables. Default 60 000.
    pub autoclean_grace_ms: u64,
    /// How often the leader polls the other cores for liveness, in ms. Default 1000.
    pub liveness_interval_ms: u64,
    /// Cluster-wide cap on retained messages: a retained message for a new topic is not
    /// kept beyond it (counted in `retained_over_limit` where refused before proposing,
    /// `retained_refused` where refused when applied). Every node holds all of them in
    /// memory and in every snapshot. Default 100 000.
    pub retained_max_messages: usize,
    /// Cluster-wide cap on the bytes (topic + encoded message) of retained messages, counted
    /// like `retained_max_messages`. One retained message is also bounded by a log entry
    /// (`max_frame_bytes / 4`). Default 64 MiB.
    pub retained_max_bytes: usize,
    /// Retained changes waiting to be batched; proposing more fails with
    /// [`ClusterError::QueueFull`] (counted in `retained_queue_full`). Default 10 000.
    pub retained_queue_max: usize,
    /// How often the leader removes expired retained messages, in ms. Default 1000.
    pub retained_expiry_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_name: String::new(),
            role: NodeRole::Core,
            listen: SocketAddr::from(([127, 0, 0, 1], 29901)),
            advertise: None,
            seeds: Vec::new(),
            initial_cores: Vec::new(),
            data_dir: None,
            raft_write_batch_max: 256,
            route_batch_max: 1000,
            route_batch_interval_ms: 1,
            route_queue_max: 100_000,
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_every_entries: 5000,
            max_frame_bytes: 16 << 20,
            snapshot_chunk_bytes: 1 << 20,
            stream_backlog_entries: 20_000,
            stream_backlog_bytes: 64 << 20,
            stream_queue_max: 8192,
            stream_idle_timeout_ms: 5000,
            link_queue_max: 10_000,
            link_batch_max: 256,
            link_inflight_max: 10_000,
            link_ack_timeout_ms: 5000,
            inbound_queue_max: 10_000,
            connect_timeout_ms: 1000,
            reconnect_backoff_ms: 200,
            write_timeout_ms: 5000,
            form_timeout_ms: 60_000,
            autoclean_grace_ms: 60_000,
            liveness_interval_ms: 1000,
            retained_max_messages: 100_000,
            retained_max_bytes: 64 << 20,
            retained_queue_max: 10_000,
            retained_expiry_interval_ms: 1000,
        }
    }
}

fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::Csv(s) => split_csv(&s),
    })
}

fn split_csv(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

fn bad(field: &'static str, reason: impl Into<String>) -> ClusterError {
    ClusterError::Config {
        field,
        reason: reason.into(),
    }
}

fn parse_num<T: std::str::FromStr>(field: &'static str, v: &str) -> Result<T, ClusterError> {
    v.trim()
        .parse()
        .map_err(|_| bad(field, format!("not a number: {v:?}")))
}

impl ClusterConfig {
    /// The address other nodes reach this node at.
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// Applies environment overrides: `HALYARD_NODE__NAME`, `HALYARD_NODE__ROLE`, and
    /// `HALYARD_CLUSTER__<FIELD>` for every field (upper case, e.g.
    /// `HALYARD_CLUSTER__LISTEN`, `HALYARD_CLUSTER__SEEDS=a:1,b:2`,
    /// `HALYARD_CLUSTER__INITIAL_CORES=c1,c2,c3`). Other variables are ignored; an unknown
    /// `HALYARD_CLUSTER__` key is an error naming it.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ClusterError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            if let Some(field) = k.strip_prefix("HALYARD_NODE__") {
                match field {
                    "NAME" => self.node_name = v.to_owned(),
                    "ROLE" => {
                        self.role = match v.trim() {
                            "core" => NodeRole::Core,
                            "replicant" => NodeRole::Replicant,
                            other => {
                                return Err(bad(
                                    "node.role",
                                    format!("{other:?} is not core|replicant"),
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            } else if let Some(field) = k.strip_prefix("HALYARD_CLUSTER__") {
                self.set_cluster_field(field, v)?;
            }
        }
        Ok(())
    }

    fn set_cluster_field(&mut self, field: &str, v: &str) -> Result<(), ClusterError> {
        match field {
            "LISTEN" => {
                self.listen = v
                    .trim()
                    .parse()
                    .map_err(|_| bad("cluster.listen", format!("not ip:port: {v:?}")))?;
            }
            "ADVERTISE" => {
                self.advertise = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| bad("cluster.advertise", format!("not ip:port: {v:?}")))?,
                );
            }
            "SEEDS" => self.seeds = split_csv(v),
            "INITIAL_CORES" => self.initial_cores = split_csv(v),
            "DATA_DIR" => {
                let v = v.trim();
                self.data_dir = (!v.is_empty()).then(|| PathBuf::from(v));
            }
            "RAFT_WRITE_BATCH_MAX" => {
                self.raft_write_batch_max = parse_num("cluster.raft_write_batch_max", v)?;
            }
            "ROUTE_BATCH_MAX" => self.route_batch_max = parse_num("cluster.route_batch_max", v)?,
            "ROUTE_BATCH_INTERVAL_MS" => {
                self.route_batch_interval_ms = parse_num("cluster.route_batch_interval_ms", v)?;
            }
            "ROUTE_QUEUE_MAX" => self.route_queue_max = parse_num("cluster.route_queue_max", v)?,
            "HEARTBEAT_INTERVAL_MS" => {
                self.heartbeat_interval_ms = parse_num("cluster.heartbeat_interval_ms", v)?;
            }
            "ELECTION_TIMEOUT_MIN_MS" => {
                self.election_timeout_min_ms = parse_num("cluster.election_timeout_min_ms", v)?;
            }
            "ELECTION_TIMEOUT_MAX_MS" => {
                self.election_timeout_max_ms = parse_num("cluster.election_timeout_max_ms", v)?;
            }
            "SNAPSHOT_EVERY_ENTRIES" => {
                self.snapshot_every_entries = parse_num("cluster.snapshot_every_entries", v)?;
            }
            "MAX_FRAME_BYTES" => self.max_frame_bytes = parse_num("cluster.max_frame_bytes", v)?,
            "SNAPSHOT_CHUNK_BYTES" => {
                self.snapshot_chunk_bytes = parse_num("cluster.snapshot_chunk_bytes", v)?;
            }
            "STREAM_BACKLOG_ENTRIES" => {
                self.stream_backlog_entries = parse_num("cluster.stream_backlog_entries", v)?;
            }
            "STREAM_BACKLOG_BYTES" => {
                self.stream_backlog_bytes = parse_num("cluster.stream_backlog_bytes", v)?;
            }
            "STREAM_QUEUE_MAX" => self.stream_queue_max = parse_num("cluster.stream_queue_max", v)?,
            "STREAM_IDLE_TIMEOUT_MS" => {
                self.stream_idle_timeout_ms = parse_num("cluster.stream_idle_timeout_ms", v)?;
            }
            "LINK_QUEUE_MAX" => self.link_queue_max = parse_num("cluster.link_queue_max", v)?,
            "LINK_BATCH_MAX" => self.link_batch_max = parse_num("cluster.link_batch_max", v)?,
            "LINK_INFLIGHT_MAX" => {
                self.link_inflight_max = parse_num("cluster.link_inflight_max", v)?;
            }
            "LINK_ACK_TIMEOUT_MS" => {
                self.link_ack_timeout_ms = parse_num("cluster.link_ack_timeout_ms", v)?;
            }
            "INBOUND_QUEUE_MAX" => {
                self.inbound_queue_max = parse_num("cluster.inbound_queue_max", v)?;
            }
            "CONNECT_TIMEOUT_MS" => {
                self.connect_timeout_ms = parse_num("cluster.connect_timeout_ms", v)?;
            }
            "RECONNECT_BACKOFF_MS" => {
                self.reconnect_backoff_ms = parse_num("cluster.reconnect_backoff_ms", v)?;
            }
            "WRITE_TIMEOUT_MS" => self.write_timeout_ms = parse_num("cluster.write_timeout_ms", v)?,
            "FORM_TIMEOUT_MS" => self.form_timeout_ms = parse_num("cluster.form_timeout_ms", v)?,
            "AUTOCLEAN_GRACE_MS" => {
                self.autoclean_grace_ms = parse_num("cluster.autoclean_grace_ms", v)?;
            }
            "LIVENESS_INTERVAL_MS" => {
                self.liveness_interval_ms = parse_num("cluster.liveness_interval_ms", v)?;
            }
            "RETAINED_MAX_MESSAGES" => {
                self.retained_max_messages = parse_num("cluster.retained_max_messages", v)?;
            }
            "RETAINED_MAX_BYTES" => {
                self.retained_max_bytes = parse_num("cluster.retained_max_bytes", v)?;
            }
            "RETAINED_QUEUE_MAX" => {
                self.retained_queue_max = parse_num("cluster.retained_queue_max", v)?;
            }
            "RETAINED_EXPIRY_INTERVAL_MS" => {
                self.retained_expiry_interval_ms =
                    parse_num("cluster.retained_expiry_interval_ms", v)?;
            }
            _ => {
                return Err(bad(
                    "cluster",
                    format!("unknown key HALYARD_CLUSTER__{field}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.node_name.trim().is_empty() {
            return Err(bad("node.name", "must not be empty"));
        }
        if self.seeds.is_empty() {
            return Err(bad(
                "cluster.seeds",
                "at least one core address is required",
            ));
        }
        if self.role == NodeRole::Core {
            if self.initial_cores.is_empty() {
                return Err(bad(
                    "cluster.initial_cores",
                    "a core needs the initial core names",
                ));
            }
            let mut ids = HashSet::new();
            for name in &self.initial_cores {
                if !ids.insert(node_id_for_name(name)) {
                    return Err(bad(
                        "cluster.initial_cores",
                        format!("duplicate name {name:?}"),
                    ));
                }
            }
        }
        let positive: [(&'static str, u64); 19] = [
            ("cluster.retained_queue_max", self.retained_queue_max as u64),
            (
                "cluster.retained_expiry_interval_ms",
                self.retained_expiry_interval_ms,
            ),
            ("cluster.link_inflight_max", self.link_inflight_max as u64),
            ("cluster.link_ack_timeout_ms", self.link_ack_timeout_ms),
            ("cluster.liveness_interval_ms", self.liveness_interval_ms),
            (
                "cluster.raft_write_batch_max",
                self.raft_write_batch_max as u64,
            ),
            (
                "cluster.stream_backlog_bytes",
                self.stream_backlog_bytes as u64,
            ),
            ("cluster.route_batch_max", self.route_batch_max as u64),
            ("cluster.route_queue_max", self.route_queue_max as u64),
            ("cluster.heartbeat_interval_ms", self.heartbeat_interval_ms),
            (
                "cluster.snapshot_every_entries",
                self.snapshot_every_entries,
            ),
            (
                "cluster.snapshot_chunk_bytes",
                self.snapshot_chunk_bytes as u64,
            ),
            (
                "cluster.stream_backlog_entries",
                self.stream_backlog_entries as u64,
            ),
            ("cluster.stream_queue_max", self.stream_queue_max as u64),
            ("cluster.link_queue_max", self.link_queue_max as u64),
            ("cluster.link_batch_max", self.link_batch_max as u64),
            ("cluster.inbound_queue_max", self.inbound_queue_max as u64),
            ("cluster.connect_timeout_ms", self.connect_timeout_ms),
            ("cluster.write_timeout_ms", self.write_timeout_ms),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(bad(field, "must be greater than 0"));
            }
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms {
            return Err(bad(
                "cluster.election_timeout_min_ms",
                "must be greater than cluster.heartbeat_interval_ms",
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(bad(
                "cluster.election_timeout_max_ms",
                "must be greater than cluster.election_timeout_min_ms",
            ));
        }
        if self.stream_idle_timeout_ms <= 2 * self.heartbeat_interval_ms {
            return Err(bad(
                "cluster.stream_idle_timeout_ms",
                "must be more than twice cluster.heartbeat_interval_ms",
            ));
        }
        if self.autoclean_grace_ms != 0 && self.autoclean_grace_ms <= 2 * self.liveness_interval_ms
        {
            return Err(bad(
                "cluster.autoclean_grace_ms",
                "must be 0 (off) or more than twice cluster.liveness_interval_ms",
            ));
        }
        if self.max_frame_bytes < 64 * 1024 {
            return Err(bad("cluster.max_frame_bytes", "must be at least 65536"));
        }
        if self.snapshot_chunk_bytes + 1024 > self.max_frame_bytes {
            return Err(bad(
                "cluster.snapshot_chunk_bytes",
                "must be at least 1 KiB below cluster.max_frame_bytes",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ClusterConfig {
        ClusterConfig {
            node_name: "c1".into(),
            seeds: vec!["127.0.0.1:1".into()],
            initial_cores: vec!["c1".into()],
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn defaults_need_identity() {
        assert!(matches!(
            ClusterConfig::default().validate(),
            Err(ClusterError::Config {
                field: "node.name",
                ..
            })
        ));
        valid().validate().unwrap();
    }

    #[test]
    fn env_contract_keys() {
        let mut c = ClusterConfig::default();
        c.apply_env([
            ("HALYARD_NODE__NAME", "r1"),
            ("HALYARD_NODE__ROLE", "replicant"),
            ("HALYARD_CLUSTER__LISTEN", "127.0.0.2:29901"),
            ("HALYARD_CLUSTER__SEEDS", "127.0.0.1:29901, 127.0.0.3:29901"),
            ("HALYARD_CLUSTER__INITIAL_CORES", "c1,c2,c3"),
            ("HALYARD_CLUSTER__ROUTE_BATCH_MAX", "50"),
            ("HALYARD_STORE__DIR", "/tmp/x"),
        ])
        .unwrap();
        assert_eq!(c.node_name, "r1");
        assert_eq!(c.role, NodeRole::Replicant);
        assert_eq!(c.listen, "127.0.0.2:29901".parse().unwrap());
        assert_eq!(c.seeds, vec!["127.0.0.1:29901", "127.0.0.3:29901"]);
        assert_eq!(c.initial_cores, vec!["c1", "c2", "c3"]);
        assert_eq!(c.route_batch_max, 50);
        c.validate().unwrap();
        let err = c.apply_env([("HALYARD_CLUSTER__NOPE", "1")]).unwrap_err();
        assert!(err.to_string().contains("HALYARD_CLUSTER__NOPE"), "{err}");
        let err = c.apply_env([("HALYARD_NODE__ROLE", "boss")]).unwrap_err();
        assert!(matches!(
            err,
            ClusterError::Config {
                field: "node.role",
                ..
            }
        ));
    }

    #[test]
    fn toml_accepts_lists_or_csv_and_denies_unknown_fields() {
        let c: ClusterConfig = toml::from_str(
            "node_name = \"c1\"\nrole = \"core\"\nseeds = \"a:1,b:2\"\ninitial_cores = [\"c1\", \"c2\"]\n",
        )
        .unwrap();
        assert_eq!(c.seeds, vec!["a:1", "b:2"]);
        assert_eq!(c.initial_cores, vec!["c1", "c2"]);
        assert!(toml::from_str::<ClusterConfig>("bogus = 1").is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = valid();
        c.election_timeout_max_ms = c.election_timeout_min_ms;
        assert!(matches!(
            c.validate(),
            Err(ClusterError::Config {
                field: "cluster.election_timeout_max_ms",
                ..
            })
        ));
        let mut c = valid();
        c.initial_cores = vec!["c1".into(), "c1".into()];
        assert!(matches!(
            c.validate(),
            Err(ClusterError::Config {
                field: "cluster.initial_cores",
                ..
            })
        ));
        let mut c = valid();
        c.link_queue_max = 0;
        assert!(matches!(
            c.validate(),
            Err(ClusterError::Config {
                field: "cluster.link_queue_max",
                ..
            })
        ));
    }
}
