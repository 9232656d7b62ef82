//! String-valued configuration choices with error messages that list every accepted value.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a string enum that (de)serialises as one of fixed lower-case words and, on a bad
/// value, fails with `expected one of "a", "b", got "c"`.
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every accepted word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The configuration word for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }

            /// Parses a configuration word.
            pub fn parse(word: &str) -> Option<Self> {
                match word {
                    $($word => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = toml::Value::deserialize(d)?;
                let word = raw.as_str().unwrap_or_default();
                Self::parse(word).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "expected one of {}, got {}",
                        quoted_list(Self::WORDS),
                        raw
                    ))
                })
            }
        }
    };
}

/// `"a", "b", "c"` for error messages.
fn quoted_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

word_enum! {
    /// Which io driver the compio runtimes use (`io.backend`).
    Backend {
        /// io_uring when the kernel allows it, else epoll (logged).
        Auto = "auto",
        /// io_uring only: start fails when it is refused.
        Uring = "uring",
        /// epoll (readiness-based polling) only.
        Epoll = "epoll",
    }
}

word_enum! {
    /// Cluster role of this node (`node.role`).
    Role {
        /// Takes part in the replicated log and holds the cluster-wide tables.
        Core = "core",
        /// Follows a core's committed log; keeps no durable state.
        Replicant = "replicant",
    }
}

word_enum! {
    /// What a full per-session queue does with one more message (`mqtt.queue_policy`).
    QueuePolicy {
        /// Drop the arriving message.
        DropNew = "drop_new",
        /// Drop the oldest queued message to make room.
        DropOldest = "drop_oldest",
    }
}
