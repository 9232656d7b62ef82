//! halyard-topics: MQTT topic rules and the structures that match topics.
//!
//! This crate owns:
//! - the topic name, topic filter and `$share/{group}/{filter}` rules (MQTT 5.0 §4.7, §4.8.2,
//!   also 3.1.1 §4.7), with errors that carry their MQTT 5 reason code ([`TopicError`]);
//! - [`SubscriptionTrie`]: topic filter -> subscribers and shared groups, matched by topic
//!   name on the publish path **without taking any lock** (an immutable tree swapped with
//!   `arc-swap`; writers serialise on a mutex and copy the changed path);
//! - [`RetainedIndex`]: topic name -> retained value, matched by topic filter on SUBSCRIBE
//!   (behind a `RwLock`: it is not on the publish path).
//!
//! It must never: depend on any other Halyard crate (pure topic logic), do I/O, read the
//! clock, spawn threads, or panic on input from the network. Table-size limits (subscriptions
//! per client, retained messages) are the caller's, which counts them.
//!
//! # Memory
//! Each distinct level string is stored once (interned) and shared by every filter using it.
//! Measured by `tests/memory.rs` (one million filters `devices/{n}/cmd`, one subscriber each,
//! `K = u64`, `V = u8`): see the bound asserted there, about 300 bytes per filter.

mod error;
mod hasher;
mod pmap;
mod retained;
mod shared;
mod trie;
mod validate;

pub use error::{TopicError, TopicKind};
pub use retained::RetainedIndex;
pub use shared::SharedGroup;
pub use trie::{Entry, Match, SubscriptionTrie};
pub use validate::{
    SHARE_PREFIX, SharedFilter, TopicLimits, parse_shared_subscription, validate_share_name,
    validate_topic_filter, validate_topic_name,
};
