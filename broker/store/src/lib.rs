//! halyard-store: the broker's durable state on one embedded redb file: persistent sessions
//! (subscriptions, in-flight QoS 1/2 state both ways), per-session offline queues, retained
//! messages and pending wills.
//!
//! What it owns: the file format, a dedicated writer thread doing **group commit** (many
//! callers' [`Batch`]es in one write transaction with `Durability::Immediate`, each caller
//! completed through a [`Commit`] handle only after the fsync), byte and message quotas,
//! expiry at load by wall-clock time, crash recovery and the operator tools ([`check`],
//! [`repair`], [`discard_corrupt`]).
//!
//! What it must never do: depend on another broker crate (it stores plain records that the
//! server maps to its own types), block a caller on disk I/O (only [`Commit::wait`] and
//! [`Store::load_all`] block, for tests, tools and start-up), acknowledge anything that is
//! not yet durable, panic on a damaged file (it returns [`StoreError::Corrupt`] naming the
//! file and the way out), or export metrics itself ([`StoreStats`] are plain counters).
//!
//! ```no_run
//! use halyard_store::{Batch, Store, StoreConfig, StoredMessage};
//! # fn main() -> Result<(), halyard_store::StoreError> {
//! let store = Store::open(&StoreConfig::with_dir("/var/lib/halyard/store"))?;
//! let state = store.load_all(1_700_000_000_000)?; // restore sessions, queues, retained
//! # let msg: StoredMessage = unimplemented!();
//! let mut batch = Batch::new();
//! batch.enqueue("client-1", &msg).set_retained(&msg);
//! let committed = store.submit(batch).wait()?; // or `.await` on any executor
//! # let _ = (state, committed);
//! # Ok(()) }
//! ```

mod admin;
mod apply;
mod batch;
mod config;
mod db;
#[cfg(test)]
mod disk_full_tests;
mod error;
mod load;
mod record;
mod stats;
mod store;
mod writer;

pub use admin::{
    CheckStatus, Counts, Discarded, Report, check, discard_corrupt, open_discarding_corrupt, repair,
};
pub use batch::{Batch, ClientRef, Commit, CommitFuture, CommitResult, Committed, Outcome};
pub use config::{STORE_FILE_NAME, StoreConfig};
pub use error::{Cause, QuotaLimit, StoreError};
pub use record::{
    DroppedAtLoad, InflightEntry, InflightStage, LoadedState, NEVER_EXPIRES, QueuedMessage,
    SessionRecord, StoredMessage, SubscriptionRecord, WillRecord,
};
pub use stats::{BATCH_SIZE_BUCKETS, COMMIT_LATENCY_BUCKETS_US, StatsSnapshot, StoreStats};
pub use store::Store;
