//! How a node finds the cores' cluster listeners. The static seed list is the only
//! implementation today; DNS, etcd or Kubernetes lookups implement the same trait.

/// A source of core addresses (`host:port` of their cluster listeners).
pub trait Discovery: Send + Sync + 'static {
    /// The current candidate core addresses; called before each (re)connect, so it may
    /// change over time. An empty answer makes the caller wait and ask again.
    fn cores(&self) -> Vec<String>;
}

/// `cluster.seeds`, as configured.
#[derive(Debug, Clone)]
pub struct StaticSeeds(pub Vec<String>);

impl Discovery for StaticSeeds {
    fn cores(&self) -> Vec<String> {
        self.0.clone()
    }
}
