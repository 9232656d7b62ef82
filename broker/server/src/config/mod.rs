//! Broker configuration: one struct per TOML section, the embedded default file, environment
//! overrides (`HALYARD_<SECTION>__<KEY>`) and error messages that name the offending key.

mod cluster;
mod de;
mod enums;
mod env;
pub mod reference;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cluster::ClusterConfig;
pub use de::{Addr, string_like, string_list};
pub use enums::{Backend, QueuePolicy, Role};
pub use env::apply_env_overrides;
pub use halyard_auth::{AclConfig, AuthConfig};
pub use halyard_store::StoreConfig;

/// The embedded default configuration; it documents every key (see [`reference`]).
pub const DEFAULT_TOML: &str = include_str!("../../default.toml");

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "HALYARD_";

/// Why a configuration could not be loaded. Displayed as `config error: <key>: <problem>`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config error: cannot read {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config error: {path}: {message}")]
    Syntax {
        /// The file that failed to parse.
        path: String,
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// A key is unknown or its value has the wrong form.
    #[error("config error: {key}: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `io.backend`.
        key: String,
        /// What was expected and what was found.
        message: String,
    },
}

/// The whole configuration, one field per TOML section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[node]`: identity of this node.
    pub node: NodeConfig,
    /// `[listeners.*]`: where clients connect.
    pub listeners: ListenersConfig,
    /// `[admin]`: the admin HTTP server.
    pub admin: AdminConfig,
    /// `[io]`: I/O threads and driver.
    pub io: IoConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[mqtt]`: protocol limits and features, mapped onto the session's configuration.
    pub mqtt: MqttConfig,
    /// `[limits]`: node-wide resource limits.
    pub limits: LimitsConfig,
    /// `[cluster]`: core/replicant clustering; off while `cluster.seeds` is empty.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// `[store]`: durable sessions, queues, retained messages and wills (see `halyard-store`).
    /// The embedded default file sets `enabled = false`.
    #[serde(default = "store_disabled")]
    pub store: StoreConfig,
    /// `[auth]`: anonymous access and the password file (see `halyard-auth`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[acl]`: the ACL file and the default decision (see `halyard-auth`).
    #[serde(default)]
    pub acl: AclConfig,
    /// `[xdp]`: kernel-level connection accounting (see `halyard-xdp`).
    #[serde(default)]
    pub xdp: halyard_xdp::XdpConfig,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name; empty means the host name.
    #[serde(deserialize_with = "string_like")]
    pub name: String,
    /// Cluster role.
    pub role: Role,
}

/// `[listeners]`: one optional sub-table per listener kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersConfig {
    /// `[listeners.tcp]`: plain MQTT over TCP.
    pub tcp: TcpListenerConfig,
    /// `[listeners.tls]`: MQTT over TLS (absent = no TLS listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsListenerConfig>,
    /// `[listeners.ws]`: MQTT over WebSocket (absent = no WebSocket listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<WsListenerConfig>,
    /// `[listeners.wss]`: MQTT over WebSocket over TLS (absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wss: Option<TlsListenerConfig>,
}

/// Default listen backlog of the optional listeners.
fn default_backlog() -> u32 {
    1024
}

/// `[listeners.tls]` and `[listeners.wss]`. Explicit fields rather than a flattened
/// [`halyard_transport::TlsSettings`]: serde's flatten does not work with `deny_unknown_fields`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Listen address.
    pub bind: Addr,
    /// Listen backlog per thread socket (default 1024).
    #[serde(default = "default_backlog")]
    pub backlog: u32,
    /// PEM file with the server certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the server's private key.
    pub key: PathBuf,
    /// PEM file with the CA certificates client certificates must chain to; set = mTLS
    /// (every client must present a valid certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Use the client certificate's name (CN, else first SAN) as the MQTT username.
    #[serde(default)]
    pub use_identity_as_username: bool,
}

impl TlsListenerConfig {
    /// The TLS material in the transport crate's form.
    pub fn settings(&self) -> halyard_transport::TlsSettings {
        halyard_transport::TlsSettings {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            use_identity_as_username: self.use_identity_as_username,
        }
    }
}

/// `[listeners.ws]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsListenerConfig {
    /// Listen address.
    pub bind: Addr,
    /// Listen backlog per thread socket (default 1024).
    #[serde(default = "default_backlog")]
    pub backlog: u32,
}

/// Largest `listeners.tcp.defer_accept_secs`: a silent client holds a request socket in the
/// listener's SYN queue that long before the connect timeout even starts.
pub const MAX_DEFER_ACCEPT_SECS: u32 = 60;

/// `[listeners.tcp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpListenerConfig {
    /// Listen address.
    pub bind: Addr,
    /// Listen backlog per thread socket.
    pub backlog: u32,
    /// `TCP_DEFER_ACCEPT` on the listening sockets, seconds (0 = off; default 1): a connection is
    /// accepted once its first bytes arrived, or at the latest after about this long
    /// (rounded up to the kernel's SYN-ACK retransmission schedule), after which
    /// `mqtt.connect_timeout_secs` applies as usual (see `io::set_defer_accept`).
    #[serde(default)]
    pub defer_accept_secs: u32,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address of the admin HTTP server.
    pub bind: Addr,
    /// Limit on one request's head, in bytes.
    pub max_request_bytes: usize,
    /// Seconds a client may take to send its request.
    pub request_timeout_secs: u64,
    /// Bearer token required on every admin endpoint except `/healthz` (absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `[io]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoConfig {
    /// I/O threads; 0 = one per core (see [`IoConfig::effective_threads`]).
    pub threads: usize,
    /// Driver choice.
    pub backend: Backend,
    /// Bytes read from a socket at once, into the I/O thread's shared read buffer.
    pub read_buffer_bytes: usize,
    /// io_uring: the receive buffer of a connection that streams (several reads in a row
    /// finding data), which then reads with its own receive operation instead of a poll
    /// plus `recv`.
    pub busy_read_buffer_bytes: usize,
    /// io_uring: at most this many connections per I/O thread hold a
    /// `busy_read_buffer_bytes` buffer; others stay on the poll path (counted as a limit
    /// hit). 0 = never.
    pub max_busy_readers: usize,
    /// Idle plain-TCP connections are parked: their state compacted into a small record
    /// until their next input, message or deadline (see ARCHITECTURE.md, "Parked
    /// connections"). false = every connection keeps its full state.
    pub park_idle_connections: bool,
    /// io_uring submission queue entries per thread.
    pub uring_entries: u32,
}

impl IoConfig {
    /// The number of I/O threads to start: `threads`, or the number of cores when it is 0.
    pub fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing EnvFilter directive.
    #[serde(deserialize_with = "string_like")]
    pub level: String,
}

/// `[mqtt]`: see `default.toml` for the meaning of each key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Largest keep alive granted, seconds (0 = no maximum).
    pub max_keepalive_secs: u16,
    /// Receive Maximum we announce.
    pub receive_maximum: u16,
    /// Largest packet accepted, bytes.
    pub max_packet_size: u32,
    /// Outgoing in-flight window per session.
    pub max_inflight: u16,
    /// Queue length per session.
    pub max_queued_messages: usize,
    /// Policy when the queue is full.
    pub queue_policy: QueuePolicy,
    /// Topic Alias Maximum we announce.
    pub topic_alias_max: u16,
    /// Longest client id accepted.
    pub max_client_id_len: usize,
    /// Subscriptions per session.
    pub max_subscriptions_per_client: usize,
    /// Most '/'-separated levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Longest topic name or filter, bytes.
    pub max_topic_length: usize,
    /// Seconds to wait for CONNECT.
    pub connect_timeout_secs: u64,
    /// Seconds a packet may stay half-received after CONNECT (0 = no limit).
    pub partial_packet_timeout_secs: u64,
    /// Largest session expiry interval granted, seconds.
    pub session_expiry_max_secs: u32,
    /// Retain Available.
    pub retain_available: bool,
    /// Wildcard Subscription Available.
    pub wildcard_subscriptions: bool,
    /// Shared Subscription Available.
    pub shared_subscriptions: bool,
    /// Subscription Identifiers Available.
    pub subscription_identifiers: bool,
    /// Maximum QoS accepted from publishers.
    pub maximum_qos: u8,
}

/// `[limits]`: node-wide limits; each one has a counter in `halyard_limit_hits_total{limit}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open client connections on the node.
    pub max_connections: usize,
    /// Sessions (connected or offline) on the node.
    pub max_sessions: usize,
    /// Retained messages kept.
    pub max_retained_messages: usize,
    /// Batches per thread inbox.
    pub inbox_capacity: usize,
    /// Write buffer bytes per connection before deliveries wait.
    pub max_write_buffer_bytes: usize,
    /// Seconds a blocked socket write may last before the connection is closed.
    pub write_timeout_secs: u64,
    /// Open connections per source address (IPv6: per `source_ipv6_prefix`); 0 = no limit.
    pub max_connections_per_source: u32,
    /// New connections per second per source (token bucket); 0 = no limit.
    pub connect_rate_per_source: u32,
    /// Token bucket size of `connect_rate_per_source`.
    pub connect_burst_per_source: u32,
    /// Prefix length grouping IPv6 sources.
    pub source_ipv6_prefix: u8,
    /// Sources tracked by the per-source limits.
    pub max_tracked_sources: usize,
    /// Connects of one client id within `flap_window_secs` before it is banned; 0 = off.
    pub flap_max_connects: u32,
    /// Window of the flapping detector, seconds.
    pub flap_window_secs: u64,
    /// Ban length for a flapping client id, seconds.
    pub flap_ban_secs: u64,
    /// Client ids tracked by the flapping detector.
    pub flap_max_tracked: usize,
    /// Bans kept (admin API and flapping).
    pub max_bans: usize,
    /// Failed logins per source within `auth_failure_window_secs` before refusal; 0 = off.
    pub auth_failures_per_source: u32,
    /// Window of `auth_failures_per_source`, seconds.
    pub auth_failure_window_secs: u64,
    /// Source addresses whose accepts and CONNECTs the broker counts (`halyard_source_*`,
    /// beside the XDP counts); the least recently active are forgotten beyond it
    /// (`halyard_source_evictions_total`).
    pub max_accounted_sources: usize,
}

impl LimitsConfig {
    /// The abuse-limit part, as `halyard-auth` takes it.
    pub fn auth_limits(&self) -> halyard_auth::LimitsConfig {
        halyard_auth::LimitsConfig {
            max_connections_per_source: self.max_connections_per_source,
            connect_rate_per_source: self.connect_rate_per_source,
            connect_burst_per_source: self.connect_burst_per_source,
            source_ipv6_prefix: self.source_ipv6_prefix,
            max_tracked_sources: self.max_tracked_sources,
            flap_max_connects: self.flap_max_connects,
            flap_window_secs: self.flap_window_secs,
            flap_ban_secs: self.flap_ban_secs,
            flap_max_tracked: self.flap_max_tracked,
            max_bans: self.max_bans,
            auth_failures_per_source: self.auth_failures_per_source,
            auth_failure_window_secs: self.auth_failure_window_secs,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        // The embedded file is checked by the `default_file_parses` test, so parsing it
        // cannot fail in a released binary.
        parse_value(default_value()).expect("embedded default.toml is valid")
    }
}

fn default_value() -> toml::Value {
    // Same reasoning as in `Config::default`: the embedded file is valid TOML (tested).
    toml::from_str(DEFAULT_TOML).expect("embedded default.toml is valid TOML")
}

impl Config {
    /// Loads the configuration: the embedded defaults, then the file (if any) merged over them,
    /// then the `HALYARD_*` environment overrides from `env`, then validation.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value = default_value();
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
            let user: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: shown,
                message: e.to_string(),
            })?;
            merge(&mut value, user);
        }
        apply_env_overrides(&mut value, env)?;
        let config = parse_value(value)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads with the process environment.
    pub fn load_from_process(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(file, std::env::vars())
    }

    /// Checks relations between keys that serde cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        if self.mqtt.maximum_qos > 2 {
            return invalid("mqtt.maximum_qos", "expected 0, 1 or 2");
        }
        if self.mqtt.receive_maximum == 0 {
            return invalid("mqtt.receive_maximum", "expected 1 to 65535");
        }
        if self.mqtt.max_inflight == 0 {
            return invalid("mqtt.max_inflight", "expected 1 to 65535");
        }
        if !(1..=1024).contains(&self.mqtt.max_topic_levels) {
            return invalid("mqtt.max_topic_levels", "expected 1 to 1024");
        }
        if !(1..=65_535).contains(&self.mqtt.max_topic_length) {
            return invalid("mqtt.max_topic_length", "expected 1 to 65535 bytes");
        }
        if self.listeners.tcp.defer_accept_secs > MAX_DEFER_ACCEPT_SECS {
            return invalid("listeners.tcp.defer_accept_secs", "expected 0 to 60");
        }
        if self.mqtt.partial_packet_timeout_secs > 86_400 {
            return invalid("mqtt.partial_packet_timeout_secs", "expected 0 to 86400");
        }
        if self.mqtt.max_packet_size < 64 {
            return invalid("mqtt.max_packet_size", "expected at least 64 bytes");
        }
        if self.io.read_buffer_bytes < 64 {
            return invalid("io.read_buffer_bytes", "expected at least 64 bytes");
        }
        if self.io.busy_read_buffer_bytes < 64 {
            return invalid("io.busy_read_buffer_bytes", "expected at least 64 bytes");
        }
        if self.limits.inbox_capacity == 0 {
            return invalid("limits.inbox_capacity", "expected at least 1");
        }
        if self.limits.max_accounted_sources == 0 {
            return invalid("limits.max_accounted_sources", "expected at least 1");
        }
        if self.admin.max_request_bytes < 256 {
            return invalid("admin.max_request_bytes", "expected at least 256 bytes");
        }
        if self.cluster.enabled() {
            self.cluster_node_config()?;
        }
        if let Err(halyard_xdp::XdpError::Config { field, message }) = self.xdp.validate() {
            return invalid(field, &message);
        }
        if self.store.enabled
            && let Err(halyard_store::StoreError::Config { field, reason }) = self.store.validate()
        {
            return invalid(&format!("store.{field}"), &reason);
        }
        Ok(())
    }

    /// The cluster library's configuration of this node (`[node]`, `[cluster]`, and
    /// `store.dir` as the default data directory), validated; errors name the field.
    pub fn cluster_node_config(&self) -> Result<halyard_cluster::ClusterConfig, ConfigError> {
        self.cluster
            .to_node_config(&self.node_name(), self.node.role, &self.store.dir)
    }

    /// The node name: `node.name`, or the host name when empty.
    pub fn node_name(&self) -> String {
        if !self.node.name.is_empty() {
            return self.node.name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "halyard".to_string())
    }
}

/// `[store]` when a value tree lacks the section: disabled (a stateless node).
fn store_disabled() -> StoreConfig {
    StoreConfig {
        enabled: false,
        ..StoreConfig::default()
    }
}

/// Deserialises a merged value tree into [`Config`], naming the failing key on error.
fn parse_value(value: toml::Value) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner().to_string();
        // The toml deserializer appends "\nin `key`\n" to messages; the key is shown already.
        let inner = inner
            .split("\nin `")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let message = if unknown_field_name(&inner).is_some() {
            "unknown key".to_string()
        } else {
            inner
        };
        ConfigError::Invalid { key, message }
    })
}

/// Extracts `x` from serde's "unknown field `x`, expected ..." message.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

#[cfg(test)]
mod tests;
