//! Topic name, topic filter and shared-subscription rules (MQTT 5.0 §4.7, §4.8.2; the same
//! rules hold for 3.1.1 §4.7).

use crate::error::{TopicError, TopicKind};

/// The prefix of a shared subscription's topic filter [MQTT-4.8.2-1].
pub const SHARE_PREFIX: &str = "$share/";

/// Size limits applied to every topic name and topic filter.
///
/// Hitting a limit is a [`TopicError::TooLong`] or [`TopicError::TooManyLevels`]; the session
/// turns it into reason code 0x90 / 0x8F and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    /// Most '/'-separated levels in a name or filter ("a/b" has 2, "a//b" has 3, "/" has 2).
    /// Default 128 (EMQX's default; Mosquitto hard-codes 200). It also bounds the depth of
    /// the subscription trie and so the recursion of a match.
    pub max_levels: usize,
    /// Longest name or filter in UTF-8 bytes, `$share/{group}/` included. Default 65 535,
    /// the most an MQTT UTF-8 string can carry [MQTT-4.7.3-3], so by default only the level
    /// limit and the packet-size limit bound it.
    pub max_len: usize,
}

impl TopicLimits {
    /// Default for [`TopicLimits::max_levels`].
    pub const DEFAULT_MAX_LEVELS: usize = 128;
    /// Default for [`TopicLimits::max_len`].
    pub const DEFAULT_MAX_LEN: usize = 65_535;

    /// Checks a topic name (PUBLISH topic, will topic): non-empty [MQTT-4.7.3-1], no U+0000
    /// [MQTT-4.7.3-2], no '+' or '#' [MQTT-3.3.2-2] [MQTT-4.7.0-1], within the limits.
    ///
    /// Every PUBLISH is checked here, so it is one pass over the bytes (U+0000, wildcards
    /// and level separators together; all three are ASCII, so they never occur inside a
    /// multi-byte UTF-8 sequence), with the errors in the order of the separate checks.
    pub fn validate_topic_name(&self, name: &str) -> Result<(), TopicError> {
        let kind = TopicKind::Name;
        self.check_length(name, kind)?;
        let (mut null, mut wildcard, mut separators) = (false, false, 0usize);
        for &b in name.as_bytes() {
            match b {
                b'/' => separators += 1,
                b'+' | b'#' => wildcard = true,
                0 => null = true,
                _ => {}
            }
        }
        if null {
            return Err(TopicError::NullCharacter { kind });
        }
        if wildcard {
            return Err(TopicError::WildcardInName);
        }
        // `separators + 1` levels.
        if separators >= self.max_levels {
            return Err(TopicError::TooManyLevels {
                kind,
                max: self.max_levels,
            });
        }
        Ok(())
    }

    /// Checks a topic filter that is not a shared subscription (see
    /// [`TopicLimits::parse_shared_subscription`]): non-empty [MQTT-4.7.3-1], no U+0000
    /// [MQTT-4.7.3-2], '#' alone in the last level [MQTT-4.7.1-2], '+' alone in its level
    /// [MQTT-4.7.1-3], within the limits.
    pub fn validate_topic_filter(&self, filter: &str) -> Result<(), TopicError> {
        let kind = TopicKind::Filter;
        self.check_common(filter, kind)?;
        let levels = check_wildcards(filter)?;
        self.check_filter_size(filter.len(), levels)
    }

    /// [`TopicLimits::validate_topic_filter`], keeping the result: a filter that passed is
    /// a [`CheckedFilter`], which a [`crate::TrieBatch`] inserts without checking the MQTT
    /// rules again (the session checks every SUBSCRIBE filter; the trie's second full check
    /// was ~285 instructions per subscription, benches/RESULTS.md, session 15).
    pub fn check_topic_filter<S: AsRef<str>>(
        &self,
        filter: S,
    ) -> Result<CheckedFilter<S>, TopicError> {
        self.validate_topic_filter(filter.as_ref())?;
        Ok(CheckedFilter(filter))
    }

    /// The size limits alone, for a filter of `len` bytes and `levels` levels (the part of
    /// [`TopicLimits::validate_topic_filter`] that depends on the limits).
    pub(crate) fn check_filter_size(&self, len: usize, levels: usize) -> Result<(), TopicError> {
        let kind = TopicKind::Filter;
        if len > self.max_len {
            return Err(TopicError::TooLong {
                kind,
                len,
                max: self.max_len,
            });
        }
        if levels > self.max_levels {
            return Err(TopicError::TooManyLevels {
                kind,
                max: self.max_levels,
            });
        }
        Ok(())
    }

    /// Splits a `$share/{group}/{filter}` subscription [MQTT-4.8.2-1] [MQTT-4.8.2-2].
    ///
    /// Returns `Ok(None)` for an ordinary filter (which it does not check: call
    /// [`TopicLimits::validate_topic_filter`]), `Ok(Some(_))` for a valid shared
    /// subscription whose inner filter passed [`TopicLimits::validate_topic_filter`], and an
    /// error when the group is empty or holds '+' or '#', or no filter follows it.
    pub fn parse_shared_subscription<'a>(
        &self,
        filter: &'a str,
    ) -> Result<Option<SharedFilter<'a>>, TopicError> {
        let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
            return Ok(None);
        };
        self.check_common(filter, TopicKind::Filter)?;
        let Some((group, inner)) = rest.split_once('/') else {
            if rest.is_empty() {
                return Err(TopicError::EmptyShareName);
            }
            return Err(TopicError::MissingSharedFilter);
        };
        validate_share_name(group)?;
        if inner.is_empty() {
            return Err(TopicError::MissingSharedFilter);
        }
        self.validate_topic_filter(inner)?;
        Ok(Some(SharedFilter {
            group,
            filter: inner,
        }))
    }

    fn check_common(&self, s: &str, kind: TopicKind) -> Result<(), TopicError> {
        self.check_length(s, kind)?;
        if s.bytes().any(|b| b == 0) {
            return Err(TopicError::NullCharacter { kind });
        }
        Ok(())
    }

    /// Non-empty [MQTT-4.7.3-1] and within [`Self::max_len`].
    fn check_length(&self, s: &str, kind: TopicKind) -> Result<(), TopicError> {
        if s.is_empty() {
            return Err(TopicError::Empty { kind });
        }
        if s.len() > self.max_len {
            return Err(TopicError::TooLong {
                kind,
                len: s.len(),
                max: self.max_len,
            });
        }
        Ok(())
    }
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits {
            max_levels: Self::DEFAULT_MAX_LEVELS,
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }
}

/// '#' alone and last [MQTT-4.7.1-2], '+' alone in its level [MQTT-4.7.1-3]; returns the
/// number of levels. One pass over the bytes: every SUBSCRIBE filter is checked here up to
/// twice (by the session and, when it holds messages, the retained index; the trie takes the
/// session's [`CheckedFilter`]), and `str::split` with
/// `str::contains(char)` per level took 1.8-2.1 % of the broker's samples while clients
/// connected and subscribed (0.1 % now; benches/RESULTS.md, session 9). '/', '+' and '#'
/// are ASCII, so they never occur inside a multi-byte UTF-8 sequence.
fn check_wildcards(filter: &str) -> Result<usize, TopicError> {
    let mut levels = 1;
    // Length of the current level and whether it holds a '#' / '+'.
    let (mut len, mut hash, mut plus) = (0usize, false, false);
    for &b in filter.as_bytes() {
        match b {
            b'/' => {
                check_level(len, hash, plus, false)?;
                levels += 1;
                (len, hash, plus) = (0, false, false);
                continue;
            }
            b'#' => hash = true,
            b'+' => plus = true,
            _ => {}
        }
        len += 1;
    }
    check_level(len, hash, plus, true)?;
    Ok(levels)
}

/// One level of a filter: `len` bytes, holding a '#' / '+', the last level or not.
fn check_level(len: usize, hash: bool, plus: bool, last: bool) -> Result<(), TopicError> {
    if hash && (len != 1 || !last) {
        return Err(TopicError::MultiLevelWildcardMisplaced);
    }
    if plus && len != 1 {
        return Err(TopicError::SingleLevelWildcardMisplaced);
    }
    Ok(())
}

/// Checks the ShareName of a shared subscription: at least one character [MQTT-4.8.2-1],
/// no '/', '+' or '#' [MQTT-4.8.2-2], no U+0000 [MQTT-4.7.3-2].
pub fn validate_share_name(group: &str) -> Result<(), TopicError> {
    if group.is_empty() {
        return Err(TopicError::EmptyShareName);
    }
    if group.bytes().any(|b| matches!(b, b'/' | b'+' | b'#')) {
        return Err(TopicError::InvalidShareName);
    }
    if group.bytes().any(|b| b == 0) {
        return Err(TopicError::NullCharacter {
            kind: TopicKind::Filter,
        });
    }
    Ok(())
}

/// A topic filter that passed [`TopicLimits::check_topic_filter`] (the only way to make
/// one): non-empty, no U+0000, wildcards where [MQTT-4.7.1-2] [MQTT-4.7.1-3] allow them,
/// within the limits it was checked against. The string cannot be changed afterwards, so
/// [`crate::TrieBatch::insert_checked`] skips the rules and checks only its own size limits
/// (cheap, and the bound on its recursion). `S` is any string type whose `as_ref` always
/// returns the same string (every std string type does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckedFilter<S>(S);

impl<S: AsRef<str>> CheckedFilter<S> {
    /// The filter.
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// The filter's string.
    pub fn into_inner(self) -> S {
        self.0
    }
}

/// A parsed `$share/{group}/{filter}` subscription, borrowing from the SUBSCRIBE packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedFilter<'a> {
    /// The ShareName: non-empty, without '/', '+' or '#'.
    pub group: &'a str,
    /// The topic filter after the ShareName; valid per [`validate_topic_filter`].
    pub filter: &'a str,
}

/// [`TopicLimits::validate_topic_name`] with the default limits.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    TopicLimits::default().validate_topic_name(name)
}

/// [`TopicLimits::validate_topic_filter`] with the default limits.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    TopicLimits::default().validate_topic_filter(filter)
}

/// [`TopicLimits::parse_shared_subscription`] with the default limits.
pub fn parse_shared_subscription(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    TopicLimits::default().parse_shared_subscription(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_err(s: &str) -> TopicError {
        validate_topic_name(s).unwrap_err()
    }
    fn filter_err(s: &str) -> TopicError {
        validate_topic_filter(s).unwrap_err()
    }

    #[test]
    fn names_and_filters_are_at_least_one_character() {
        // [MQTT-4.7.3-1]
        assert_eq!(
            name_err(""),
            TopicError::Empty {
                kind: TopicKind::Name
            }
        );
        assert_eq!(
            filter_err(""),
            TopicError::Empty {
                kind: TopicKind::Filter
            }
        );
        assert_eq!(name_err("").reason_code(), 0x90);
        assert_eq!(filter_err("").reason_code(), 0x8F);
        assert_eq!(name_err("").spec(), Some("MQTT-4.7.3-1"));
    }

    #[test]
    fn no_null_character() {
        // [MQTT-4.7.3-2]
        assert!(matches!(name_err("a\0b"), TopicError::NullCharacter { .. }));
        assert!(matches!(
            filter_err("a/\0"),
            TopicError::NullCharacter { .. }
        ));
        assert_eq!(filter_err("\0").reason_code(), 0x8F);
    }

    #[test]
    fn topic_names_carry_no_wildcards() {
        // [MQTT-3.3.2-2] [MQTT-4.7.0-1]
        for bad in ["+", "#", "a/+", "a/#", "a+b", "sport/tennis#"] {
            assert_eq!(name_err(bad), TopicError::WildcardInName, "{bad}");
            assert_eq!(name_err(bad).reason_code(), 0x90);
        }
        for good in ["a", "/", "a//b", "$SYS/x", "a b/ü", "/finance"] {
            validate_topic_name(good).unwrap();
        }
    }

    #[test]
    fn multi_level_wildcard_must_be_alone_and_last() {
        // [MQTT-4.7.1-2]: "sport/tennis/#" valid, "sport/tennis#" and "sport/tennis/#/ranking" not.
        for good in ["#", "sport/tennis/#", "/#", "+/#", "a//#"] {
            validate_topic_filter(good).unwrap();
        }
        for bad in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "#/",
            "##",
            "a/#b",
            "#/a",
        ] {
            assert_eq!(
                filter_err(bad),
                TopicError::MultiLevelWildcardMisplaced,
                "{bad}"
            );
            assert_eq!(filter_err(bad).reason_code(), 0x8F);
        }
    }

    #[test]
    fn single_level_wildcard_must_occupy_its_level() {
        // [MQTT-4.7.1-3]: "+", "+/tennis/#", "sport/+/player1" valid, "sport+" not.
        for good in ["+", "+/tennis/#", "sport/+/player1", "/+", "+/+", "+//+"] {
            validate_topic_filter(good).unwrap();
        }
        for bad in ["sport+", "a/+b", "++", "+a/b"] {
            assert_eq!(
                filter_err(bad),
                TopicError::SingleLevelWildcardMisplaced,
                "{bad}"
            );
        }
    }

    #[test]
    fn limits_apply_to_names_and_filters() {
        let limits = TopicLimits {
            max_levels: 3,
            max_len: 8,
        };
        limits.validate_topic_name("a/b/c").unwrap();
        limits.validate_topic_filter("a/+/#").unwrap();
        assert_eq!(
            limits.validate_topic_name("a/b/c/d"),
            Err(TopicError::TooManyLevels {
                kind: TopicKind::Name,
                max: 3
            })
        );
        assert_eq!(
            limits.validate_topic_filter("a//b/"),
            Err(TopicError::TooManyLevels {
                kind: TopicKind::Filter,
                max: 3
            })
        );
        assert_eq!(
            limits.validate_topic_name("abcdefghi"),
            Err(TopicError::TooLong {
                kind: TopicKind::Name,
                len: 9,
                max: 8
            })
        );
        assert_eq!(
            limits.validate_topic_name("abcdefghi").unwrap_err().spec(),
            None
        );
        let d = TopicLimits::default();
        assert_eq!((d.max_levels, d.max_len), (128, 65_535));
        d.validate_topic_name(&"a/".repeat(128)).unwrap_err();
        d.validate_topic_name(&format!("{}a", "a/".repeat(127)))
            .unwrap();
    }

    #[test]
    fn shared_subscription_is_split_into_group_and_filter() {
        // [MQTT-4.8.2-1] [MQTT-4.8.2-2]
        assert_eq!(
            parse_shared_subscription("$share/consumer1/sport/tennis/+"),
            Ok(Some(SharedFilter {
                group: "consumer1",
                filter: "sport/tennis/+"
            }))
        );
        assert_eq!(
            parse_shared_subscription("$share/g/#"),
            Ok(Some(SharedFilter {
                group: "g",
                filter: "#"
            }))
        );
        assert_eq!(
            parse_shared_subscription("$share/g//"),
            Ok(Some(SharedFilter {
                group: "g",
                filter: "/"
            }))
        );
        assert_eq!(parse_shared_subscription("sport/#"), Ok(None));
        assert_eq!(parse_shared_subscription("$share"), Ok(None));
        assert_eq!(parse_shared_subscription("$sharex/g/a"), Ok(None));
    }

    #[test]
    fn shared_subscription_errors() {
        // [MQTT-4.8.2-1]: the ShareName is at least one character long.
        assert_eq!(
            parse_shared_subscription("$share//a"),
            Err(TopicError::EmptyShareName)
        );
        assert_eq!(
            parse_shared_subscription("$share/"),
            Err(TopicError::EmptyShareName)
        );
        // [MQTT-4.8.2-2]: no '+' or '#' in the ShareName, which is followed by '/' and a filter.
        assert_eq!(
            parse_shared_subscription("$share/g+/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_shared_subscription("$share/#/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            parse_shared_subscription("$share/g"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            parse_shared_subscription("$share/g/"),
            Err(TopicError::MissingSharedFilter)
        );
        let e = parse_shared_subscription("$share/g/a#").unwrap_err();
        assert_eq!(e, TopicError::MultiLevelWildcardMisplaced);
        for e in [
            TopicError::EmptyShareName,
            TopicError::InvalidShareName,
            TopicError::MissingSharedFilter,
        ] {
            assert_eq!(e.reason_code(), 0x8F);
        }
        assert_eq!(
            validate_share_name("a/b"),
            Err(TopicError::InvalidShareName)
        );
    }

    /// The level-count rule of the split-based checks, as reference.
    fn check_levels(limits: &TopicLimits, s: &str, kind: TopicKind) -> Result<(), TopicError> {
        if s.split('/').nth(limits.max_levels).is_some() {
            return Err(TopicError::TooManyLevels {
                kind,
                max: limits.max_levels,
            });
        }
        Ok(())
    }

    /// The three-pass name check the one-pass `validate_topic_name` replaced, as reference.
    fn reference_name_check(limits: &TopicLimits, name: &str) -> Result<(), TopicError> {
        limits.check_common(name, TopicKind::Name)?;
        if name.bytes().any(|b| b == b'+' || b == b'#') {
            return Err(TopicError::WildcardInName);
        }
        check_levels(limits, name, TopicKind::Name)
    }

    /// The split-based rule check the one-pass [`check_wildcards`] replaced, as reference.
    fn reference_filter_check(limits: &TopicLimits, filter: &str) -> Result<(), TopicError> {
        limits.check_common(filter, TopicKind::Filter)?;
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            if level.contains('#') && (level != "#" || levels.peek().is_some()) {
                return Err(TopicError::MultiLevelWildcardMisplaced);
            }
            if level.contains('+') && level != "+" {
                return Err(TopicError::SingleLevelWildcardMisplaced);
            }
        }
        check_levels(limits, filter, TopicKind::Filter)
    }

    #[test]
    fn one_pass_checks_agree_with_the_split_based_rules() {
        // Every string of up to 7 characters from an alphabet with each separator and
        // wildcard (and a multi-byte character and U+0000), under a tight and the default
        // level limit.
        let alphabet = ["a", "/", "+", "#", "\u{e9}", "\0"];
        let tight = TopicLimits {
            max_levels: 3,
            max_len: 6,
        };
        let mut strings = vec![String::new()];
        let mut checked = 0;
        for _ in 0..7 {
            let mut longer = Vec::with_capacity(strings.len() * alphabet.len());
            for s in &strings {
                for c in alphabet {
                    let t = format!("{s}{c}");
                    for limits in [tight, TopicLimits::default()] {
                        assert_eq!(
                            limits.validate_topic_filter(&t),
                            reference_filter_check(&limits, &t),
                            "{t:?} with {limits:?}"
                        );
                        assert_eq!(
                            limits.validate_topic_name(&t),
                            reference_name_check(&limits, &t),
                            "name {t:?} with {limits:?}"
                        );
                        checked += 1;
                    }
                    longer.push(t);
                }
            }
            strings = longer;
        }
        assert!(checked > 100_000, "{checked}");
    }
}
