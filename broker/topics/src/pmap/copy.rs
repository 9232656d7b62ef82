//! How a write copies the shared nodes on its path: [`Deep`] clones them (every copied slot
//! takes one more share of what it points to, and dropping the replaced node gives it back),
//! [`Husks`] copies their slots bitwise and settles the shares once the write is published.
//!
//! # Bitwise path copies ([`Husks`])
//! A wide level (tens of thousands of children) copies ~40 slots per write, each holding two
//! `Arc`s on cold cache lines; a clone increments both and dropping the replaced node
//! decrements both again, which was most of a subscribing connection's trie-write time. With
//! [`Husks`] the copy duplicates the slots bitwise (the duplicates are *uncounted*: the
//! replaced node, the *husk*, still owns the one share), and the husk is kept in the list
//! with its own handle. The one slot the write goes down through is counted at once
//! ([`PathCopy::descend`]), so the node below is seen as shared and copied in turn.
//! After the write, each husk is settled in one of two ways:
//! - **released** ([`Husks::release`], after the new root is published and the replaced root
//!   dropped): if the list's handle is the husk's only one, nothing else can reach it (the
//!   same condition on which a plain drop would free it), so its shares pass to the copy:
//!   its memory is freed and its duplicated slots are forgotten, not dropped;
//! - **counted** ([`Husks::settle`]: someone else still holds it, e.g. a reader's snapshot,
//!   or the batch goes on with another write, or it is dropped unpublished): every duplicated
//!   slot takes the share the clone would have taken, then the handle is dropped normally.
//!
//! # Why readers never see freed memory
//! Readers walk trees under a counted root (`arc-swap` turns a reader's borrowed guard into
//! a count before `swap` returns the old root). Every pointer in a published tree is counted
//! once the write that published it has settled its husks, and every uncounted duplicate in
//! the tree being published points at something a husk in the list still owns a share of,
//! and the list holds a handle on each husk, so the target outlives the window. A husk is
//! freed only when `Arc::try_unwrap` shows that the list's handle is the only one: no
//! published tree (no reader) reaches it, and its targets keep their shares, now the copy's.
//! Between writes of one batch every husk is counted first, so each write starts with exact
//! counts, which the `Arc::get_mut` uniqueness test (and `Arc::make_mut` elsewhere) needs.

use std::mem::forget;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{HNode, Slot};

/// Values a path copy may duplicate bitwise and count later.
///
/// # Safety
/// `clone` must return a value bitwise equal to `self` whose only effect is one more share of
/// what `self` points to (a reference count). Then a bitwise duplicate plus a forgotten
/// `clone` is a clone, and a bitwise duplicate whose original is forgotten is a move.
pub(crate) unsafe trait CountedClone: Clone {}

// SAFETY: `Arc::clone` copies the pointer and increments the strong count, nothing else.
unsafe impl<T: ?Sized> CountedClone for Arc<T> {}

/// How a write gets a node it may change.
pub(crate) trait PathCopy<K, V> {
    /// `node` to change: itself when no one else holds it, else a copy put in its place.
    /// The second value identifies the copy when its slots still need [`PathCopy::descend`].
    fn write<'a>(&mut self, node: &'a mut Arc<HNode<K, V>>)
    -> (&'a mut HNode<K, V>, Option<usize>);

    /// The write goes through `slot` (at `pos`) of a node [`PathCopy::write`] returned with
    /// `copied`: a sub-node it goes down into, or an entry whose value it takes or changes.
    fn descend(&mut self, slot: &Slot<K, V>, pos: usize, copied: Option<usize>);

    /// Makes every reference count exact (needed before a map is shrunk, which clones its
    /// entries and drops the rest).
    fn settle(&mut self);
}

/// Copies by cloning (what `Arc::make_mut` does).
pub(crate) struct Deep;

impl<K: Clone, V: Clone> PathCopy<K, V> for Deep {
    fn write<'a>(
        &mut self,
        node: &'a mut Arc<HNode<K, V>>,
    ) -> (&'a mut HNode<K, V>, Option<usize>) {
        (Arc::make_mut(node), None)
    }

    fn descend(&mut self, _: &Slot<K, V>, _: usize, _: Option<usize>) {}

    fn settle(&mut self) {}
}

/// Copies bitwise and keeps the replaced nodes (see the module documentation). Dropping it
/// counts every husk left.
///
/// One write (one path from a map's root down) at a time: [`PathCopy::settle`] before the next
/// one, whose path may run through a slot that is still an uncounted duplicate (which would
/// look unique to `Arc::get_mut` and be changed in place).
pub(crate) struct Husks<K: CountedClone, V: CountedClone> {
    /// Inline for a path through up to [`INLINE_HUSKS`] copied nodes (a write into a level of
    /// 10 000 children copies ~4): the list no longer allocates (and grows) in every write.
    list: SmallVec<[Husk<K, V>; INLINE_HUSKS]>,
}

/// Husks a write keeps without allocating (see [`Husks`]); a longer path spills to the heap.
const INLINE_HUSKS: usize = 8;

struct Husk<K, V> {
    node: Arc<HNode<K, V>>,
    /// The slot the write went through, whose target the copy holds its own share of (or, for
    /// an entry, of whose value); every other slot of the copy is an uncounted duplicate.
    path: Option<usize>,
}

impl<K: CountedClone, V: CountedClone> Husks<K, V> {
    pub(crate) fn new() -> Self {
        Husks {
            list: SmallVec::new(),
        }
    }

    /// After the tree holding the copies is published and the replaced root dropped: frees the
    /// husks no one else holds, their shares passing to the copies, and counts the rest.
    pub(crate) fn release(&mut self) {
        // In path order: a husk's path slot holds the next husk, which its release lets go.
        for husk in self.list.drain(..) {
            match Arc::try_unwrap(husk.node) {
                // SAFETY: a husk (its copy is in the published tree); the only handle.
                Ok(node) => unsafe { free_husk(node, husk.path) },
                Err(node) => count_duplicates(&node, husk.path),
            }
        }
    }
}

impl<K: CountedClone, V: CountedClone> Drop for Husks<K, V> {
    fn drop(&mut self) {
        self.settle();
    }
}

impl<K: CountedClone, V: CountedClone> PathCopy<K, V> for Husks<K, V> {
    fn write<'a>(
        &mut self,
        node: &'a mut Arc<HNode<K, V>>,
    ) -> (&'a mut HNode<K, V>, Option<usize>) {
        let mut copied = None;
        if Arc::get_mut(node).is_none() {
            // SAFETY: the husk goes into the list just below (see `duplicate`).
            let slots = unsafe { duplicate(&node.slots) };
            let copy = Arc::new(HNode {
                bitmap: node.bitmap,
                slots,
            });
            // The handle `node` held moves to the list: the husk's count does not change.
            let husk = std::mem::replace(node, copy);
            self.list.push(Husk {
                node: husk,
                path: None,
            });
            copied = Some(self.list.len() - 1);
        }
        // Unique now (a fresh copy or a private node): `make_mut` clones nothing.
        (Arc::make_mut(node), copied)
    }

    fn descend(&mut self, slot: &Slot<K, V>, pos: usize, copied: Option<usize>) {
        let Some(i) = copied else {
            return;
        };
        // The copy's duplicate becomes counted: the target is now visibly shared (a sub-node
        // is then copied in turn, an entry's value may be taken or replaced).
        match slot {
            Slot::Sub(sub) => forget(sub.clone()),
            Slot::Entry(_, v) => forget(v.clone()),
        }
        self.list[i].path = Some(pos);
    }

    /// Counts every duplicated slot of every husk, then drops them (nothing is freed that a
    /// clone-based copy would not have freed).
    fn settle(&mut self) {
        for husk in self.list.drain(..) {
            count_duplicates(&husk.node, husk.path);
        }
    }
}

/// A bitwise duplicate of `slots`: both sides hold the same shares, which only one of them
/// owns, until [`Husks::settle`] or [`Husks::release`] says which.
///
/// # Safety
/// The node owning `slots` must be kept (as a husk) until then, and neither side's slots may
/// be dropped before.
unsafe fn duplicate<K: CountedClone, V: CountedClone>(slots: &[Slot<K, V>]) -> Box<[Slot<K, V>]> {
    let mut v = Vec::with_capacity(slots.len());
    // SAFETY: the new buffer has room for `slots.len()` elements and does not overlap
    // `slots`. The duplicates own nothing yet: the husk whose slots these are is kept in the
    // list until its shares are either counted for the duplicates (`count_duplicates`) or
    // given to them (`free_husk` forgets the originals), so every share is dropped once.
    unsafe {
        std::ptr::copy_nonoverlapping(slots.as_ptr(), v.as_mut_ptr(), slots.len());
        v.set_len(slots.len());
    }
    v.into_boxed_slice()
}

/// Takes for the copy the shares of every slot `node` has duplicated (all but `path`'s
/// target, which the copy counted when the write went through it).
fn count_duplicates<K: CountedClone, V: CountedClone>(node: &HNode<K, V>, path: Option<usize>) {
    for (i, slot) in node.slots.iter().enumerate() {
        let through = path == Some(i);
        match slot {
            Slot::Sub(sub) if !through => forget(sub.clone()),
            Slot::Sub(_) => {}
            Slot::Entry(k, v) => {
                forget(k.clone());
                if !through {
                    forget(v.clone());
                }
            }
        }
    }
}

/// Frees a husk no one else holds: its duplicated slots' shares are now the copy's (forgotten
/// here), the path slot's target is dropped (the copy holds its own share of it).
///
/// # Safety
/// `node` is a husk whose slots were duplicated (all but `path`'s share) into a live copy.
unsafe fn free_husk<K: CountedClone, V: CountedClone>(node: HNode<K, V>, path: Option<usize>) {
    let mut slots = node.slots.into_vec();
    let through = path.map(|p| {
        // SAFETY: `p < len` (a position of this node's slots); the slot is read once and the
        // length set to 0 just below, so it is not dropped again.
        unsafe { std::ptr::read(slots.as_ptr().add(p)) }
    });
    // SAFETY: shrinking only. Every slot but `path` is a share the copy now owns (see
    // `duplicate`), so the buffer is freed without dropping them.
    unsafe { slots.set_len(0) };
    drop(slots);
    match through {
        Some(Slot::Sub(sub)) => drop(sub),
        Some(Slot::Entry(k, v)) => {
            forget(k);
            drop(v);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::PMap;
    use super::*;

    type Map = PMap<Arc<str>, Arc<u32>>;

    /// `n` keys and values, each also held by the returned vectors (strong count 1 each).
    fn keys_and_values(n: u32) -> (Vec<Arc<str>>, Vec<Arc<u32>>) {
        (0..n)
            .map(|i| (Arc::from(format!("k{i}")), Arc::new(i)))
            .unzip()
    }

    /// Every key and value is held by `holders` maps besides the vectors.
    fn assert_counts(keys: &[Arc<str>], values: &[Arc<u32>], holders: usize) {
        for (k, v) in keys.iter().zip(values) {
            assert_eq!(Arc::strong_count(k), 1 + holders, "key {k}");
            assert_eq!(Arc::strong_count(v), 1 + holders, "value of {k}");
        }
    }

    fn wide(keys: &[Arc<str>], values: &[Arc<u32>]) -> Map {
        let mut m = Map::default();
        for (k, v) in keys.iter().zip(values) {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    /// A write on a published map through `Husks`, then publication: the replaced map is
    /// dropped first and the husks released, with or without a reader still holding it.
    #[test]
    fn bitwise_copies_leave_exact_counts_whether_or_not_a_reader_holds_the_old_map() {
        for reader in [false, true] {
            let (keys, values) = keys_and_values(3_000);
            let (extra_k, extra_v): (Arc<str>, _) = (Arc::from("k3000"), Arc::new(3_000));
            let published = wide(&keys, &values);
            let mut next = published.clone();
            let mut husks = Husks::new();
            assert_eq!(
                next.insert_with(extra_k.clone(), extra_v.clone(), &mut husks),
                None
            );
            let held = reader.then(|| published.clone());
            drop(published);
            husks.release();
            assert_eq!(
                (Arc::strong_count(&extra_k), Arc::strong_count(&extra_v)),
                (2, 2)
            );
            if !reader {
                assert_counts(&keys, &values, 1);
            }
            // (With a reader, entries in sub-nodes both maps share are held once.)
            if let Some(old) = held {
                assert_eq!(old.get("k3000"), None);
                assert_eq!(old.get("k7").map(|v| **v), Some(7));
                drop(old);
                assert_counts(&keys, &values, 1);
            }
            assert_eq!(next.get("k3000").map(|v| **v), Some(3_000));
            drop(next);
            assert_counts(&keys, &values, 0);
            assert_eq!(
                (Arc::strong_count(&extra_k), Arc::strong_count(&extra_v)),
                (1, 1)
            );
        }
    }

    /// Several writes of one batch (settled in between), replacing values through `get_mut`
    /// and `insert`, splitting entries into sub-nodes; then dropped unpublished.
    #[test]
    fn settled_and_unpublished_copies_leave_exact_counts() {
        let (keys, values) = keys_and_values(5_000);
        let (more_k, more_v) = keys_and_values(6_000);
        let published = wide(&keys[..2_000], &values[..2_000]);
        let mut next = published.clone();
        let mut husks = Husks::new();
        for i in 2_000..5_000 {
            assert_eq!(
                next.insert_with(keys[i].clone(), values[i].clone(), &mut husks),
                None
            );
            husks.settle();
        }
        for i in (0..5_000).step_by(7) {
            let v = next.get_mut_with(&*keys[i], &mut husks).expect("present");
            *v = more_v[i].clone();
            husks.settle();
            let old = next.insert_with(keys[i].clone(), values[i].clone(), &mut husks);
            assert_eq!(old.as_deref(), Some(&(i as u32)));
        }
        husks.settle();
        for (i, k) in (0u32..).zip(&keys) {
            assert_eq!(next.get(&**k).map(|v| **v), Some(i));
            let want = (i < 2_000).then_some(i);
            assert_eq!(published.get(&**k).map(|v| **v), want);
        }
        for v in &more_v {
            assert_eq!(Arc::strong_count(v), 1);
        }
        // An unpublished write: dropping the husks counts for the copy, which is then dropped.
        next.insert_with(more_k[5_500].clone(), more_v[5_500].clone(), &mut husks);
        drop(husks);
        drop(next);
        assert_counts(&keys[..2_000], &values[..2_000], 1);
        assert_counts(&keys[2_000..], &values[2_000..], 0);
        drop(published);
        assert_counts(&keys, &values, 0);
        assert_counts(&more_k, &more_v, 0);
    }
}
