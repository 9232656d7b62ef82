//! The one error type of this crate.

use thiserror::Error;

/// Whether a string was checked as a topic name (PUBLISH, will topic) or a topic filter
/// (SUBSCRIBE, UNSUBSCRIBE). It decides the MQTT 5 reason code of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    /// A topic name: the topic a message is published to.
    Name,
    /// A topic filter: what a subscription matches, possibly with wildcards.
    Filter,
}

/// Why a topic name, topic filter or shared-subscription filter was refused.
///
/// [`TopicError::reason_code`] gives the MQTT 5 reason code the session sends
/// (0x90 Topic Name invalid, 0x8F Topic Filter invalid) and [`TopicError::spec`] the
/// normative statement broken, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    /// The name or filter is the empty string [MQTT-4.7.3-1].
    #[error("empty topic {kind:?} [MQTT-4.7.3-1]")]
    Empty {
        /// What was being checked.
        kind: TopicKind,
    },
    /// The name or filter contains U+0000 [MQTT-4.7.3-2].
    #[error("topic {kind:?} contains U+0000 [MQTT-4.7.3-2]")]
    NullCharacter {
        /// What was being checked.
        kind: TopicKind,
    },
    /// Longer (in UTF-8 bytes) than `TopicLimits::max_len`.
    #[error("topic {kind:?} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// What was being checked.
        kind: TopicKind,
        /// Its length in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// More '/'-separated levels than `TopicLimits::max_levels`.
    #[error("topic {kind:?} has more than {max} levels")]
    TooManyLevels {
        /// What was being checked.
        kind: TopicKind,
        /// The configured limit.
        max: usize,
    },
    /// A topic name contains '+' or '#' [MQTT-3.3.2-2] [MQTT-4.7.0-1].
    #[error("topic name contains a wildcard [MQTT-3.3.2-2]")]
    WildcardInName,
    /// '#' is not alone in its level or not in the last level [MQTT-4.7.1-2].
    #[error("'#' must be the whole last level of a topic filter [MQTT-4.7.1-2]")]
    MultiLevelWildcardMisplaced,
    /// '+' shares its level with other characters [MQTT-4.7.1-3].
    #[error("'+' must occupy a whole level of a topic filter [MQTT-4.7.1-3]")]
    SingleLevelWildcardMisplaced,
    /// `$share/` followed by an empty ShareName [MQTT-4.8.2-1].
    #[error("shared subscription has an empty share name [MQTT-4.8.2-1]")]
    EmptyShareName,
    /// The ShareName contains '+' or '#' [MQTT-4.8.2-2]. (A '/' ends the ShareName.)
    #[error("shared subscription share name contains a wildcard [MQTT-4.8.2-2]")]
    InvalidShareName,
    /// The ShareName is not followed by '/' and a topic filter [MQTT-4.8.2-2].
    #[error("shared subscription has no topic filter after the share name [MQTT-4.8.2-2]")]
    MissingSharedFilter,
}

impl TopicError {
    /// Whether the refused string was a topic name or a topic filter.
    pub fn kind(&self) -> TopicKind {
        match self {
            TopicError::Empty { kind }
            | TopicError::NullCharacter { kind }
            | TopicError::TooLong { kind, .. }
            | TopicError::TooManyLevels { kind, .. } => *kind,
            TopicError::WildcardInName => TopicKind::Name,
            TopicError::MultiLevelWildcardMisplaced
            | TopicError::SingleLevelWildcardMisplaced
            | TopicError::EmptyShareName
            | TopicError::InvalidShareName
            | TopicError::MissingSharedFilter => TopicKind::Filter,
        }
    }

    /// The MQTT 5 reason code for this error: 0x90 (Topic Name invalid) for a topic name,
    /// 0x8F (Topic Filter invalid) for a topic filter. A raw `u8` because this crate does
    /// not depend on the codec; wrap it in the codec's `ReasonCode`.
    pub fn reason_code(&self) -> u8 {
        match self.kind() {
            TopicKind::Name => 0x90,
            TopicKind::Filter => 0x8F,
        }
    }

    /// The normative statement this error breaks (e.g. `"MQTT-4.7.1-2"`), or `None` for a
    /// configured limit that the specification does not state.
    pub fn spec(&self) -> Option<&'static str> {
        match self {
            TopicError::Empty { .. } => Some("MQTT-4.7.3-1"),
            TopicError::NullCharacter { .. } => Some("MQTT-4.7.3-2"),
            TopicError::TooLong { .. } | TopicError::TooManyLevels { .. } => None,
            TopicError::WildcardInName => Some("MQTT-3.3.2-2"),
            TopicError::MultiLevelWildcardMisplaced => Some("MQTT-4.7.1-2"),
            TopicError::SingleLevelWildcardMisplaced => Some("MQTT-4.7.1-3"),
            TopicError::EmptyShareName => Some("MQTT-4.8.2-1"),
            TopicError::InvalidShareName | TopicError::MissingSharedFilter => Some("MQTT-4.8.2-2"),
        }
    }
}
