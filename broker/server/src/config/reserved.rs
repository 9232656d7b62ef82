//! Sections reserved for later features (`[auth]` and `[acl]` are `halyard_auth`'s own
//! structs and `[store]` is `halyard_store`'s, re-exported from [`super`]). Each is accepted (so config files can already carry
//! the header) but has no keys yet: a key inside one is reported as unknown.

use serde::{Deserialize, Serialize};

/// `[cluster]`: core/replicant membership and links (not implemented yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {}
