//! [`Subscriptions`]: a session's subscriptions, kept small.

use std::ops::Index;

use crate::session::Subscription;

/// A session's subscriptions by full topic filter (with any `$share/{group}/` prefix).
///
/// A vector sorted by filter, grown by about half its length at a time: most sessions hold
/// one or a few subscriptions, and a hash map's smallest table (room for 3 entries plus its
/// control bytes) costs several times what one entry needs. A filter is a `Box<str>`, 8
/// bytes smaller than a `String`: an entry is 32 bytes (a jemalloc size class; with a
/// `String` it was 40 bytes, in the 48-byte class). Lookups are binary searches;
/// an insert or removal moves the entries after it, which is bounded by
/// [`crate::SessionConfig::max_subscriptions`] (1024 by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriptions {
    entries: Vec<(Box<str>, Subscription)>,
}

/// One entry as [`Subscriptions::iter`] gives it.
type Pair<'a> = (&'a str, &'a Subscription);

fn pair(e: &(Box<str>, Subscription)) -> Pair<'_> {
    (&e.0, &e.1)
}

impl Subscriptions {
    fn find(&self, filter: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(f, _)| (**f).cmp(filter))
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The subscription with this exact filter.
    pub fn get(&self, filter: &str) -> Option<&Subscription> {
        self.find(filter).ok().map(|i| &self.entries[i].1)
    }

    /// Whether there is a subscription with this exact filter.
    pub fn contains_key(&self, filter: &str) -> bool {
        self.find(filter).is_ok()
    }

    /// The filters, in byte order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(f, _)| &**f)
    }

    /// Owned copies of the filters, in byte order (for a caller that changes the session
    /// or the trie while it goes through them).
    pub fn filters(&self) -> Vec<String> {
        self.keys().map(String::from).collect()
    }

    /// The subscriptions with their filters, in filter byte order.
    pub fn iter(&self) -> impl Iterator<Item = Pair<'_>> {
        self.entries.iter().map(pair)
    }

    /// Adds or replaces the subscription for `filter`; the replaced one, if any.
    pub(crate) fn insert(&mut self, filter: String, sub: Subscription) -> Option<Subscription> {
        match self.find(&filter) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, sub)),
            Err(i) => {
                if self.entries.len() == self.entries.capacity() {
                    // Exactly one entry for the first (`Vec` would make room for four),
                    // then about half the length: amortised growth without much slack.
                    self.entries.reserve_exact((self.entries.len() / 2).max(1));
                }
                self.entries.insert(i, (filter.into_boxed_str(), sub));
                None
            }
        }
    }

    /// Removes the subscription for `filter`; it, if there was one. The storage goes with
    /// the last one.
    pub(crate) fn remove(&mut self, filter: &str) -> Option<Subscription> {
        let i = self.find(filter).ok()?;
        let (_, sub) = self.entries.remove(i);
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        Some(sub)
    }
}

impl Index<&str> for Subscriptions {
    type Output = Subscription;

    /// The subscription for `filter`; panics if there is none (tests and callers that
    /// just checked [`Subscriptions::contains_key`]).
    fn index(&self, filter: &str) -> &Subscription {
        match self.get(filter) {
            Some(s) => s,
            None => panic!("no subscription for {filter:?}"),
        }
    }
}

impl<'a> IntoIterator for &'a Subscriptions {
    type Item = Pair<'a>;
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Box<str>, Subscription)>,
        fn(&'a (Box<str>, Subscription)) -> Pair<'a>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(pair)
    }
}

#[cfg(test)]
mod tests {
    use halyard_codec::SubscriptionOptions;

    use super::*;

    fn sub(id: u32) -> Subscription {
        Subscription {
            options: SubscriptionOptions::default(),
            subscription_id: Some(id),
        }
    }

    #[test]
    fn behaves_as_a_map_and_stays_sorted() {
        let mut s = Subscriptions::default();
        assert_eq!(s.insert("b".into(), sub(1)), None);
        assert_eq!(s.insert("a".into(), sub(2)), None);
        assert_eq!(s.insert("c".into(), sub(3)), None);
        assert_eq!(s.insert("b".into(), sub(4)), Some(sub(1)));
        assert_eq!(s.len(), 3);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(s["b"], sub(4));
        assert!(s.contains_key("c") && !s.contains_key("d"));
        assert_eq!(s.remove("a"), Some(sub(2)));
        assert_eq!(s.remove("a"), None);
        assert_eq!(s.get("a"), None);
        assert_eq!(s.iter().count(), 2);
        s.remove("b");
        s.remove("c");
        assert!(s.is_empty());
        assert_eq!(s.entries.capacity(), 0, "storage freed with the last entry");
    }

    #[test]
    fn an_entry_is_32_bytes() {
        // A jemalloc size class: one subscription's storage is one 32-byte block.
        assert_eq!(std::mem::size_of::<(Box<str>, Subscription)>(), 32);
    }

    #[test]
    fn one_subscription_takes_one_slot() {
        let mut s = Subscriptions::default();
        s.insert("only".into(), sub(1));
        assert_eq!(s.entries.capacity(), 1);
        for i in 0..100 {
            s.insert(format!("f{i}"), sub(i));
        }
        assert_eq!(s.len(), 101);
        assert!(s.entries.capacity() <= 101 + 101 / 2);
    }
}
