//! The one error type of this crate.

use std::path::PathBuf;

use thiserror::Error;

/// Why a password file, an ACL file, a ban or a `halyard passwd` command failed.
///
/// Errors about a file name the file, and parse errors also the 1-based line, so an operator
/// can fix the file without guessing.
#[derive(Debug, Error)]
pub enum AuthError {
    /// A file could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A line of a password or ACL file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file concerned.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A user name that a password file cannot hold: empty, containing ':' or a control
    /// character.
    #[error("invalid user name {0:?}: it must be non-empty, without ':' or control characters")]
    InvalidUsername(String),
    /// `halyard passwd -D` named a user that is not in the file.
    #[error("{}: no user {user:?}", path.display())]
    UnknownUser {
        /// The password file.
        path: PathBuf,
        /// The user asked for.
        user: String,
    },
    /// The password given (or typed) is empty.
    #[error("the password is empty")]
    EmptyPassword,
    /// The two passwords typed at the prompt differ.
    #[error("the passwords do not match")]
    PasswordMismatch,
    /// The command-line options of `halyard passwd` contradict each other.
    #[error("usage: {0}")]
    Usage(String),
    /// Reading the password from the terminal or standard input failed.
    #[error("cannot read the password: {0}")]
    Terminal(std::io::Error),
    /// The operating system's random generator failed (salt generation).
    #[error("cannot generate a random salt: {0}")]
    Random(String),
    /// A ban could not be parsed (e.g. an address that is not an IP or CIDR).
    #[error("invalid ban: {0}")]
    InvalidBan(String),
    /// The ban list holds `limits.max_bans` entries already.
    #[error("the ban list is full ({max} entries)")]
    BanListFull {
        /// The configured limit.
        max: usize,
    },
}
