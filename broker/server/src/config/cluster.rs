//! `[cluster]`: the server's view of the cluster section. The identity lives in `[node]`
//! (`name`, `role`); the addresses here; every tuning key of `halyard_cluster::ClusterConfig`
//! (limits and timings) passes through unchanged and is validated by that crate.
//!
//! The cluster is on when `cluster.seeds` is non-empty; with no seeds the node runs alone,
//! exactly as without the section.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::de::{string_like, string_list};
use super::{ConfigError, Role};

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// The cluster listener (`ip:port`): Raft, the replicant stream, writes and links.
    #[serde(default = "default_listen", deserialize_with = "string_like")]
    pub listen: String,
    /// The address other nodes reach this node at; empty = `listen`.
    #[serde(default, deserialize_with = "string_like")]
    pub advertise: String,
    /// The cores' cluster listeners (`host:port`); empty = no cluster.
    #[serde(default, deserialize_with = "string_list")]
    pub seeds: Vec<String>,
    /// Names of the cores that form the first Raft group (only the first ever forms it).
    #[serde(default, deserialize_with = "string_list")]
    pub initial_cores: Vec<String>,
    /// Where a core keeps its Raft log; empty = `<store.dir>/cluster`.
    #[serde(default, deserialize_with = "string_like")]
    pub data_dir: String,
    /// Whether a SUBACK waits until the new routes are committed and applied on this node.
    #[serde(default = "yes")]
    pub suback_waits_for_route: bool,
    /// Whether a CONNECT asks the other nodes for the client's session (a persistent session
    /// follows its client; Clean Start ends the copies elsewhere). Off: sessions stay on the
    /// node they were made on and a CONNECT costs no request to the other nodes.
    #[serde(default = "yes")]
    pub session_takeover: bool,
    /// Every other key: the cluster library's limits and timings, checked by it.
    #[serde(flatten)]
    pub tuning: toml::Table,
}

fn default_listen() -> String {
    "127.0.0.1:29901".into()
}

fn yes() -> bool {
    true
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: default_listen(),
            advertise: String::new(),
            seeds: Vec::new(),
            initial_cores: Vec::new(),
            data_dir: String::new(),
            suback_waits_for_route: true,
            session_takeover: true,
            tuning: toml::Table::new(),
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

impl ClusterConfig {
    /// Whether this node runs in a cluster (`cluster.seeds` is set).
    pub fn enabled(&self) -> bool {
        !self.seeds.is_empty()
    }

    /// Builds and validates the cluster library's configuration. `store_dir` is the default
    /// parent of the Raft data directory.
    pub fn to_node_config(
        &self,
        node_name: &str,
        role: Role,
        store_dir: &Path,
    ) -> Result<halyard_cluster::ClusterConfig, ConfigError> {
        let tuning = toml::Value::Table(self.tuning.clone());
        let mut c: halyard_cluster::ClusterConfig = serde_path_to_error::deserialize(tuning)
            .map_err(|e| {
                let key = format!("cluster.{}", e.path());
                let msg = e.into_inner().to_string();
                let msg = msg.split("\nin `").next().unwrap_or_default().trim();
                let msg = if msg.starts_with("unknown field") {
                    "unknown key".to_string()
                } else {
                    msg.to_string()
                };
                invalid(&key, msg)
            })?;
        // The identity and addresses are the server's keys, not tuning keys.
        for (key, given) in [
            ("node_name", c.node_name.is_empty()),
            ("role", c.role == halyard_cluster::NodeRole::Core),
            (
                "listen",
                c.listen == halyard_cluster::ClusterConfig::default().listen,
            ),
            ("seeds", c.seeds.is_empty()),
            ("initial_cores", c.initial_cores.is_empty()),
        ] {
            if !given {
                return Err(invalid(&format!("cluster.{key}"), "unknown key"));
            }
        }
        c.node_name = node_name.to_string();
        c.role = match role {
            Role::Core => halyard_cluster::NodeRole::Core,
            Role::Replicant => halyard_cluster::NodeRole::Replicant,
        };
        c.listen = self.listen.trim().parse().map_err(|_| {
            invalid(
                "cluster.listen",
                format!("expected ip:port, got {:?}", self.listen),
            )
        })?;
        c.advertise = match self.advertise.trim() {
            "" => None,
            a => Some(a.parse().map_err(|_| {
                invalid("cluster.advertise", format!("expected ip:port, got {a:?}"))
            })?),
        };
        c.seeds = self.seeds.clone();
        c.initial_cores = self.initial_cores.clone();
        c.data_dir = Some(match self.data_dir.trim() {
            "" => store_dir.join("cluster"),
            d => d.into(),
        });
        c.validate().map_err(|e| match e {
            halyard_cluster::ClusterError::Config { field, reason } => invalid(field, reason),
            other => invalid("cluster", other.to_string()),
        })?;
        Ok(c)
    }
}
