//! Topic authorisation from a Mosquitto-style `acl_file`.
//!
//! # File syntax (Mosquitto's)
//! ```text
//! # comment (only when '#' is the first non-blank character of the line)
//! topic read public/#            # before any `user` line: rules for anonymous clients
//! user alice                     # following `topic` lines are alice's
//! topic readwrite alice/#
//! topic deny alice/secret
//! topic sensors/+/temp           # no access word: readwrite
//! pattern write devices/%c/up    # every client; %c = client id, %u = user name
//! pattern read users/%u/#
//! ```
//! The access word is `read`, `write`, `readwrite` or `deny`; everything after it (or after
//! `topic`/`pattern` when it is omitted) is the filter, spaces included. A `pattern` applies to
//! every client wherever it appears; a pattern using `%u` never matches an anonymous client,
//! and a pattern never matches when the substituted client id or user name contains `+` or
//! `#` (it could otherwise widen the rule).
//!
//! # Decision
//! The rules that apply to a client are its user's `topic` rules (or the anonymous ones) plus
//! every `pattern`. For a topic name ([`Acl::check_topic`]):
//! 1. a matching `deny` rule denies (deny overrides);
//! 2. else a matching rule that grants the access (read for delivery, write for PUBLISH)
//!    allows;
//! 3. else, if some rule matched the topic (granting the other access only), deny;
//! 4. else [`AclDefault`] decides. With `default = "deny"` this is exactly Mosquitto's
//!    behaviour; with `"allow"`, topics no rule mentions stay open.
//!
//! For a SUBSCRIBE filter ([`Acl::check_subscribe`], `$share/{group}/` stripped first) the same
//! steps run with "matches" replaced by "covers" ([`filter_covers`]: every topic the
//! subscription can match is matched by the rule's filter). So `topic read a/+` allows
//! subscribing to `a/b` and `a/+` but not `a/#`, and `topic deny a/secret` does not refuse
//! `a/#` (the broker still filters `a/secret` at delivery with [`Acl::check_topic`], as
//! Mosquitto does). The server must therefore check both: the filter on SUBSCRIBE and each
//! message's topic when delivering.
//!
//! Mosquitto 2.0.11's `acl_file` (observed here) grants every SUBSCRIBE and relies on the
//! delivery check alone; Halyard also refuses subscriptions no rule lets through, as issue 5
//! asks (0x87 / 0x80 in the SUBACK). Deliveries are decided the same way as Mosquitto's
//! (see the `deliveries_agree_with_mosquitto` test).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::matching::{filter_covers, topic_matches};

/// What to do when no ACL rule mentions a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclDefault {
    /// Allow (the default: no ACL file means no restriction).
    #[default]
    Allow,
    /// Deny (Mosquitto's behaviour once an `acl_file` is set).
    Deny,
}

/// `[acl]`: topic authorisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    /// ACL file in Mosquitto's `acl_file` syntax. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Decision when no rule mentions the topic: `"allow"` (default) or `"deny"`.
    pub default: AclDefault,
}

/// The access being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Receiving: SUBSCRIBE and the delivery of each message.
    Read,
    /// Sending: PUBLISH (and a will message's topic at CONNECT).
    Write,
}

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Grant::ReadWrite, _) | (Grant::Read, Access::Read) | (Grant::Write, Access::Write)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    grant: Grant,
    filter: String,
}

/// A parsed ACL, immutable: share it (`Arc`/`ArcSwap`) and replace it on SIGHUP with
/// [`Acl::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    config: AclConfig,
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// How a rule relates to the topic or filter being checked.
type Relation = fn(&str, &str) -> bool;

impl Acl {
    /// Builds the ACL of `config`, reading its file if one is set.
    pub fn new(config: AclConfig) -> Result<Self, AuthError> {
        let mut acl = Acl {
            config,
            anonymous: Vec::new(),
            users: HashMap::new(),
            patterns: Vec::new(),
        };
        if let Some(path) = acl.config.file.clone() {
            let text = std::fs::read_to_string(&path).map_err(|source| AuthError::Io {
                path: path.clone(),
                source,
            })?;
            acl.parse_into(&text, &path)?;
        }
        Ok(acl)
    }

    /// Parses ACL text; `path` names the file in errors.
    pub fn parse(
        text: &str,
        path: impl AsRef<Path>,
        default: AclDefault,
    ) -> Result<Self, AuthError> {
        let mut acl = Acl {
            config: AclConfig {
                file: Some(path.as_ref().to_path_buf()),
                default,
            },
            anonymous: Vec::new(),
            users: HashMap::new(),
            patterns: Vec::new(),
        };
        acl.parse_into(text, path.as_ref())?;
        Ok(acl)
    }

    /// A new ACL with the same configuration and the file read again. On error the caller
    /// keeps the old one.
    pub fn reload(&self) -> Result<Self, AuthError> {
        Self::new(self.config.clone())
    }

    /// The configuration in force.
    pub fn config(&self) -> &AclConfig {
        &self.config
    }

    /// Number of rules: `topic` lines of all sections plus `pattern` lines (for the log line
    /// after a load or reload).
    pub fn rule_count(&self) -> usize {
        self.anonymous.len()
            + self.users.values().map(Vec::len).sum::<usize>()
            + self.patterns.len()
    }

    /// Whether every check allows (no rule at all and `default = "allow"`): the server may
    /// skip the checks entirely.
    pub fn allows_everything(&self) -> bool {
        self.config.default == AclDefault::Allow
            && self.anonymous.is_empty()
            && self.users.is_empty()
            && self.patterns.is_empty()
    }

    /// Whether the client may PUBLISH to (`Access::Write`) or receive a message on
    /// (`Access::Read`) the topic name `topic`. See the module documentation.
    pub fn check_topic(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        self.decide(client_id, username, topic, access, topic_matches)
    }

    /// Whether the client may SUBSCRIBE to `filter` (a `$share/{group}/` prefix is removed
    /// first). Deliveries on an allowed subscription must still pass
    /// [`Acl::check_topic`] with [`Access::Read`].
    pub fn check_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        let inner = match halyard_topics::parse_shared_subscription(filter) {
            Ok(Some(shared)) => shared.filter,
            _ => filter,
        };
        self.decide(client_id, username, inner, Access::Read, filter_covers)
    }

    /// [`Acl::check_topic`] for a topic name, [`Acl::check_subscribe`] for a filter with
    /// `Access::Read` when it has a wildcard or a `$share/` prefix.
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic_or_filter: &str,
        access: Access,
    ) -> bool {
        let is_filter = topic_or_filter.contains(['+', '#'])
            || topic_or_filter.starts_with(halyard_topics::SHARE_PREFIX);
        if access == Access::Read && is_filter {
            self.check_subscribe(client_id, username, topic_or_filter)
        } else {
            self.check_topic(client_id, username, topic_or_filter, access)
        }
    }

    fn decide(
        &self,
        client_id: &str,
        username: Option<&str>,
        target: &str,
        access: Access,
        relation: Relation,
    ) -> bool {
        let own: &[Rule] = match username {
            Some(u) => self.users.get(u).map_or(&[], Vec::as_slice),
            None => &self.anonymous,
        };
        let mut granted = false;
        let mut mentioned = false;
        let mut visit = |grant: Grant, filter: &str| -> bool {
            if !relation(filter, target) {
                return true;
            }
            if grant == Grant::Deny {
                return false;
            }
            mentioned = true;
            granted |= grant.allows(access);
            true
        };
        for rule in own {
            if !visit(rule.grant, &rule.filter) {
                return false;
            }
        }
        for rule in &self.patterns {
            let Some(filter) = substitute(&rule.filter, client_id, username) else {
                continue;
            };
            if !visit(rule.grant, filter.as_ref()) {
                return false;
            }
        }
        if granted {
            true
        } else if mentioned {
            false
        } else {
            self.config.default == AclDefault::Allow
        }
    }

    fn parse_into(&mut self, text: &str, path: &Path) -> Result<(), AuthError> {
        let mut user: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let err = |message: String| AuthError::Parse {
                path: path.to_path_buf(),
                line: n + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a user name".into()));
                    }
                    user = Some(rest.to_string());
                    self.users.entry(rest.to_string()).or_default();
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(err)?;
                    if keyword == "pattern" {
                        self.patterns.push(rule);
                    } else if let Some(u) = &user {
                        self.users.entry(u.clone()).or_default().push(rule);
                    } else {
                        self.anonymous.push(rule);
                    }
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword {other:?} (expected user, topic or pattern)"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Splits off the first whitespace-separated word; the rest is trimmed.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, rest.trim()),
        None => (s, ""),
    }
}

fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (word, after) = split_word(rest);
    let (grant, filter) = match word {
        "read" => (Grant::Read, after),
        "write" => (Grant::Write, after),
        "readwrite" => (Grant::ReadWrite, after),
        "deny" => (Grant::Deny, after),
        _ => (Grant::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("missing topic filter".into());
    }
    halyard_topics::validate_topic_filter(filter)
        .map_err(|e| format!("invalid topic filter {filter:?}: {e}"))?;
    Ok(Rule {
        grant,
        filter: filter.to_string(),
    })
}

/// Replaces `%c` and `%u` in a pattern (in one pass, so a substituted value is never
/// substituted again); `None` when the pattern cannot match this client (`%u` without a user
/// name, or a substituted value containing a wildcard).
fn substitute<'a>(
    pattern: &'a str,
    client_id: &str,
    username: Option<&str>,
) -> Option<Cow<'a, str>> {
    if !pattern.contains('%') {
        return Some(Cow::Borrowed(pattern));
    }
    let wild = |s: &str| s.contains(['+', '#']);
    let mut out = String::with_capacity(pattern.len() + client_id.len());
    let mut rest = pattern;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("%c") {
            if wild(client_id) {
                return None;
            }
            out.push_str(client_id);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("%u") {
            let user = username?;
            if wild(user) {
                return None;
            }
            out.push_str(user);
            rest = after;
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests;
