//! halyard-auth: who may connect, what they may do, and who is kept out.
//!
//! This crate owns:
//! - the password file ([`PasswordFile`]: `user:$pbkdf2-sha512$...` lines, Mosquitto 2.x `$7$`
//!   lines read too) and the `halyard passwd` command ([`passwd_main`], [`PasswdArgs`]);
//! - CONNECT authentication ([`Authenticator`], `[auth]` = [`AuthConfig`]) mapped to
//!   CONNACK codes ([`AuthDecision`]);
//! - topic authorisation from a Mosquitto-style `acl_file` ([`Acl`], `[acl]` = [`AclConfig`]),
//!   for PUBLISH, SUBSCRIBE and each delivery;
//! - bans by client id, user name or address ([`BanList`]), flapping detection
//!   ([`FlapDetector`]), per-source connection and connect-rate limits ([`SourceLimiter`]),
//!   combined in [`ConnectGuard`] with the `[limits]` keys of [`LimitsConfig`] and hit
//!   counts in [`Counters`].
//!
//! It must never: open a socket, read the clock (time is a `now_ms` argument, Unix
//! milliseconds), spawn threads, keep globals, or depend on a Halyard crate other than
//! `halyard-topics`. It reads and writes only the files it is given (password and ACL
//! files). Everything that reloads ([`Authenticator::reload`], [`Acl::reload`]) returns a new
//! immutable value for the server to swap in (e.g. with `arc-swap`) on SIGHUP.

mod acl;
mod authn;
mod ban;
mod error;
mod limits;
mod matching;
mod passwd;
mod password;

pub use acl::{Access, Acl, AclConfig, AclDefault};
pub use authn::{AuthConfig, AuthDecision, Authenticator};
pub use ban::{Ban, BanKind, BanList, IpNet};
pub use error::AuthError;
pub use limits::{ConnectGuard, Counters, FlapDetector, LimitsConfig, Refusal, SourceLimiter};
pub use matching::{filter_covers, topic_matches};
pub use passwd::{PasswdArgs, passwd_main};
pub use password::{
    DEFAULT_ITERATIONS, HASH_LEN, MAX_ITERATIONS, PasswordFile, PasswordHash, SALT_LEN,
    validate_username,
};
