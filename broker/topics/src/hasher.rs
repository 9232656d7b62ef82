//! The hasher of every map in this crate.

use std::hash::BuildHasher;
use std::sync::OnceLock;

/// A zero-sized `BuildHasher` for aHash with keys drawn once per process at random.
///
/// Zero-sized so that the thousands of small maps in the trie do not each store 32 bytes of
/// keys; random so that clients cannot choose topic levels that collide (the keys are an
/// immutable process-wide value, not mutable global state).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LevelHasher;

fn keys() -> &'static ahash::RandomState {
    static KEYS: OnceLock<ahash::RandomState> = OnceLock::new();
    KEYS.get_or_init(ahash::RandomState::new)
}

impl BuildHasher for LevelHasher {
    type Hasher = ahash::AHasher;

    fn build_hasher(&self) -> ahash::AHasher {
        keys().build_hasher()
    }
}
