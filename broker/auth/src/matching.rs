//! Topic-filter matching for the ACL: filter vs topic name, and filter vs filter.

/// Whether the topic filter `filter` matches the topic name `topic`: `+` matches one level,
/// `#` the parent level and every level below [MQTT-4.7.1-2], empty levels are levels, and a
/// filter starting with a wildcard does not match a topic starting with `$` [MQTT-4.7.2-1].
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && starts_with_wildcard(filter) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every topic name matched by the subscription filter `sub` is also matched by the
/// filter `acl` (pattern-vs-pattern inclusion). `a/+` covers `a/b` and `a/+` but not `a/#`
/// or `+/b`; `a/#` covers `a`, `a/#` and `a/+/c`; `+/#` covers `#`; `#` does not cover
/// `$SYS/#`.
pub fn filter_covers(acl: &str, sub: &str) -> bool {
    if sub.starts_with('$') && starts_with_wildcard(acl) {
        return false;
    }
    // A subscription's `#` also matches its parent (the levels before it), which a rule's
    // `+/#` does not, unless that parent is no topic at all (the empty string): so `+/#`
    // covers `#`, and `/+/#` covers `/#`.
    let parent_is_empty = |depth: usize| depth == 0 || (depth == 1 && sub.starts_with('/'));
    let mut a = acl.split('/');
    let mut s = sub.split('/');
    let mut depth = 0;
    loop {
        match (a.next(), s.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some("#")) => {
                return parent_is_empty(depth) && a.next() == Some("#") && a.next().is_none();
            }
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(_), Some("+")) => return false,
            (Some(al), Some(sl)) if al == sl => {}
            (None, None) => return true,
            _ => return false,
        }
        depth += 1;
    }
}

fn starts_with_wildcard(filter: &str) -> bool {
    filter.starts_with('+') || filter.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_topics::{Match, SubscriptionTrie};
    use proptest::prelude::*;

    #[test]
    fn examples_from_the_spec() {
        // [MQTT-4.7.1-2] "sport/tennis/player1/#" matches the parent and any child.
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(topic_matches("sport/tennis/player1/#", t), "{t}");
        }
        assert!(topic_matches("sport/#", "sport"));
        // [MQTT-4.7.1-3] "+" matches exactly one level.
        assert!(topic_matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!topic_matches(
            "sport/tennis/+",
            "sport/tennis/player1/ranking"
        ));
        assert!(!topic_matches("sport/+", "sport"));
        assert!(topic_matches("sport/+", "sport/"));
        assert!(topic_matches("+/+", "/finance"));
        assert!(topic_matches("/+", "/finance"));
        assert!(!topic_matches("+", "/finance"));
        // [MQTT-4.7.2-1] wildcards at the first level do not match $-topics.
        assert!(!topic_matches("#", "$SYS/uptime"));
        assert!(!topic_matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(topic_matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(topic_matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn coverage_examples() {
        assert!(filter_covers("a/+", "a/b"));
        assert!(filter_covers("a/+", "a/+"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/+", "+/b"));
        assert!(filter_covers("a/#", "a"));
        assert!(filter_covers("a/#", "a/#"));
        assert!(filter_covers("a/#", "a/+/c"));
        assert!(!filter_covers("a/+/#", "a/#"), "a/# also matches a itself");
        assert!(filter_covers("+/#", "#"), "every topic has a first level");
        assert!(!filter_covers("+", "#"));
        assert!(
            filter_covers("/+/#", "/#"),
            "the parent of /# is the empty topic"
        );
        assert!(!filter_covers("a/+/#", "a/#"));
        assert!(filter_covers("#", "#"));
        assert!(!filter_covers("#", "$SYS/#"));
        assert!(filter_covers("$SYS/#", "$SYS/broker/+"));
        assert!(!filter_covers("a/b", "a/b/c"));
        assert!(!filter_covers("a/b/c", "a/b"));
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$s".to_string()),
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5)
            .prop_filter_map("non-empty", |v| Some(v.join("/")).filter(|t| !t.is_empty()))
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![3 => level(), 2 => Just("+".to_string())], 0..4),
            any::<bool>(),
        )
            .prop_filter_map("non-empty", |(mut v, hash)| {
                if hash {
                    v.push("#".into());
                }
                Some(v.join("/")).filter(|f| !f.is_empty())
            })
    }

    /// Every topic over the alphabet {a, b, "", $s, z} with 1 to `max` levels.
    fn all_topics(max: usize) -> Vec<String> {
        let alphabet = ["a", "b", "", "$s", "z"];
        let mut out = Vec::new();
        let mut layer = vec![String::new()];
        for depth in 1..=max {
            let mut next = Vec::new();
            for prefix in &layer {
                for l in alphabet {
                    next.push(if depth == 1 {
                        l.to_string()
                    } else {
                        format!("{prefix}/{l}")
                    });
                }
            }
            out.extend(next.iter().filter(|t| !t.is_empty()).cloned());
            layer = next;
        }
        out
    }

    proptest! {
        /// `topic_matches` agrees with halyard-topics' subscription trie (an independent
        /// implementation of the same rules).
        #[test]
        fn agrees_with_the_subscription_trie(f in filter(), t in topic()) {
            let trie: SubscriptionTrie<u8, ()> = SubscriptionTrie::default();
            trie.insert(&f, 0, ()).unwrap();
            let mut hit = false;
            trie.for_each_match(&t, |m| if let Match::Subscriber { .. } = m { hit = true });
            prop_assert_eq!(topic_matches(&f, &t), hit, "filter {:?} topic {:?}", f, t);
        }

        /// `filter_covers(acl, sub)` holds exactly when no topic is matched by `sub` but not
        /// by `acl` (checked over every topic of up to 5 levels built from the filters'
        /// literals plus a fresh one, which is enough to find a witness when there is one).
        #[test]
        fn covers_is_set_inclusion(acl in filter(), sub in filter()) {
            let witness = all_topics(5)
                .into_iter()
                .find(|t| topic_matches(&sub, t) && !topic_matches(&acl, t));
            prop_assert_eq!(filter_covers(&acl, &sub), witness.is_none(),
                "acl {:?} sub {:?} witness {:?}", acl, sub, witness);
        }
    }
}
