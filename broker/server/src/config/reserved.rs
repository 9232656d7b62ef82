//! Sections reserved for later features. Each is accepted (so config files can already carry
//! the header) but has no keys yet: a key inside one is reported as unknown.

use serde::{Deserialize, Serialize};

/// `[cluster]`: core/replicant membership and links (not implemented yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {}

/// `[store]`: durable sessions and retained messages (not implemented yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {}

/// `[auth]`: client authentication (not implemented yet; every client is accepted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {}

/// `[acl]`: per-topic authorisation (not implemented yet; everything is allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {}

/// `[listeners.tls]`, `[listeners.ws]`, `[listeners.wss]`: further listeners (not implemented yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservedListenerConfig {}
