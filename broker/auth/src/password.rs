//! Password hashes and the password file (`user:hash` lines, like `mosquitto_passwd`).
//!
//! # File format
//! One `user:hash` per line; blank lines and lines starting with `#` are kept as they are.
//! A user name is non-empty and holds no `:` and no control character. Hashes written by
//! Halyard have the form
//!
//! ```text
//! alice:$pbkdf2-sha512$<iterations>$<salt, base64>$<hash, base64>
//! ```
//!
//! PBKDF2-HMAC-SHA512 with a 16-byte random salt and a 64-byte output, base64 with padding
//! (RFC 4648 standard alphabet). Files written by `mosquitto_passwd` (Mosquitto 2.x) are read
//! as well, so operators can bring theirs: `$7$<iterations>$<salt>$<hash>` is the same
//! PBKDF2-HMAC-SHA512, and `$6$<salt>$<hash>` is Mosquitto 1.x's single salted SHA-512
//! (accepted for compatibility only; rewrite such entries with `halyard passwd`).
//!
//! Comparison is constant-time ([`subtle`]); checking a user who is not in the file costs the
//! same PBKDF2 run as checking a wrong password, so timing does not reveal user names.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::error::AuthError;

/// Iterations of PBKDF2-HMAC-SHA512 for new hashes.
///
/// Lower than OWASP's 210 000 on purpose: the broker verifies on every CONNECT that carries a
/// user name, so one check must stay cheap enough that a flood of CONNECTs with wrong
/// passwords cannot stall the node (10 000 iterations took 25-40 ms with OpenSSL on this
/// 2-core machine at load average 16, i.e. a few ms on an idle core). The per-source limits
/// `auth_failures_per_source` and `connect_rate_per_source` bound such floods further.
/// `halyard passwd -I N` picks another count per entry; Mosquitto's default is 101.
pub const DEFAULT_ITERATIONS: u32 = 10_000;
/// Most iterations accepted in a file, so a hostile or mistyped entry cannot stall a CONNECT.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt length of new hashes, bytes.
pub const SALT_LEN: usize = 16;
/// PBKDF2 output length of new hashes, bytes (one SHA-512 block).
pub const HASH_LEN: usize = 64;

/// Which textual form a PBKDF2 hash was read in (kept so rewriting a file keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `$pbkdf2-sha512$...` (Halyard).
    Halyard,
    /// `$7$...` (Mosquitto 2.x).
    Mosquitto,
}

/// One stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(Scheme);

#[derive(Clone, PartialEq, Eq)]
enum Scheme {
    Pbkdf2 {
        style: Style,
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512Salted {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the hash itself.
        match &self.0 {
            Scheme::Pbkdf2 { iterations, .. } => {
                write!(f, "PasswordHash(pbkdf2-sha512, {iterations} iterations)")
            }
            Scheme::Sha512Salted { .. } => write!(f, "PasswordHash(salted sha512)"),
        }
    }
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt and `iterations` rounds (at least 1).
    pub fn new(password: &[u8], iterations: u32) -> Result<Self, AuthError> {
        let mut salt = vec![0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| AuthError::Random(e.to_string()))?;
        Ok(Self::with_salt(password, iterations, salt))
    }

    /// Hashes `password` with the given salt (deterministic; for tests and known vectors).
    pub fn with_salt(password: &[u8], iterations: u32, salt: Vec<u8>) -> Self {
        let iterations = iterations.clamp(1, MAX_ITERATIONS);
        let mut hash = vec![0u8; HASH_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        PasswordHash(Scheme::Pbkdf2 {
            style: Style::Halyard,
            iterations,
            salt,
            hash,
        })
    }

    /// Parses the part after `user:`; the error message says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let decode = |what: &str, v: &str| {
            B64.decode(v)
                .map_err(|e| format!("{what} is not valid base64: {e}"))
        };
        let fields: Vec<&str> = s.split('$').collect();
        match fields.as_slice() {
            ["", id @ ("pbkdf2-sha512" | "7"), iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .map_err(|_| format!("iteration count {iterations:?} is not a number"))?;
                if !(1..=MAX_ITERATIONS).contains(&iterations) {
                    return Err(format!(
                        "iteration count {iterations} is outside 1..={MAX_ITERATIONS}"
                    ));
                }
                let salt = decode("salt", salt)?;
                let hash = decode("hash", hash)?;
                if salt.is_empty() || !(16..=HASH_LEN).contains(&hash.len()) {
                    return Err("salt must be non-empty and the hash 16 to 64 bytes".into());
                }
                let style = if *id == "7" {
                    Style::Mosquitto
                } else {
                    Style::Halyard
                };
                Ok(PasswordHash(Scheme::Pbkdf2 {
                    style,
                    iterations,
                    salt,
                    hash,
                }))
            }
            ["", "6", salt, hash] => {
                let salt = decode("salt", salt)?;
                let hash = decode("hash", hash)?;
                if hash.len() != 64 {
                    return Err("a $6$ hash must be 64 bytes".into());
                }
                Ok(PasswordHash(Scheme::Sha512Salted { salt, hash }))
            }
            _ => Err(
                "expected $pbkdf2-sha512$ITERATIONS$SALT$HASH (or Mosquitto's $7$/$6$ forms)"
                    .into(),
            ),
        }
    }

    /// Whether `password` hashes to this value (constant-time comparison).
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.0 {
            Scheme::Pbkdf2 {
                iterations,
                salt,
                hash,
                ..
            } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out.ct_eq(hash).into()
            }
            Scheme::Sha512Salted { salt, hash } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                h.finalize().as_slice().ct_eq(hash).into()
            }
        }
    }

    /// PBKDF2 iterations (1 for Mosquitto 1.x `$6$` hashes).
    pub fn iterations(&self) -> u32 {
        match &self.0 {
            Scheme::Pbkdf2 { iterations, .. } => *iterations,
            Scheme::Sha512Salted { .. } => 1,
        }
    }
}

impl std::fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Scheme::Pbkdf2 {
                style,
                iterations,
                salt,
                hash,
            } => {
                let id = match style {
                    Style::Halyard => "pbkdf2-sha512",
                    Style::Mosquitto => "7",
                };
                write!(
                    f,
                    "${id}${iterations}${}${}",
                    B64.encode(salt),
                    B64.encode(hash)
                )
            }
            Scheme::Sha512Salted { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
        }
    }
}

/// Checks a user name for the password file: non-empty, no ':' and no control character.
pub fn validate_username(user: &str) -> Result<(), AuthError> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        return Err(AuthError::InvalidUsername(user.to_string()));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A blank line or a comment, kept verbatim.
    Other(String),
    /// `user:hash`.
    Entry(String, PasswordHash),
}

/// A password file in memory: parse, verify, edit, save atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordFile {
    path: PathBuf,
    lines: Vec<Line>,
    index: HashMap<String, usize>,
}

impl PasswordFile {
    /// An empty file that [`PasswordFile::save`] will write to `path`.
    pub fn empty(path: impl Into<PathBuf>) -> Self {
        PasswordFile {
            path: path.into(),
            lines: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Reads and parses `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a password file; `path` names the file in errors and in
    /// [`PasswordFile::save`]. A user listed twice is an error (which line would win is
    /// not obvious to an operator).
    pub fn parse(text: &str, path: impl Into<PathBuf>) -> Result<Self, AuthError> {
        let mut file = Self::empty(path);
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let err = |message: String| AuthError::Parse {
                path: file.path.clone(),
                line: n + 1,
                message,
            };
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                file.lines.push(Line::Other(line.to_string()));
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(err("expected user:hash".into()));
            };
            if validate_username(user).is_err() {
                return Err(err(format!("invalid user name {user:?}")));
            }
            let hash = PasswordHash::parse(hash.trim_end()).map_err(&err)?;
            if file.index.contains_key(user) {
                return Err(err(format!("user {user:?} is listed twice")));
            }
            file.index.insert(user.to_string(), file.lines.len());
            file.lines.push(Line::Entry(user.to_string(), hash));
        }
        Ok(file)
    }

    /// The file this was read from (or will be saved to).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `user` has an entry.
    pub fn contains(&self, user: &str) -> bool {
        self.index.contains_key(user)
    }

    /// The users, in file order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry(u, _) => Some(u.as_str()),
            Line::Other(_) => None,
        })
    }

    /// Whether `user` exists and `password` is theirs. An unknown user costs the same
    /// work as a known one.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.index.get(user).and_then(|&i| self.lines.get(i)) {
            Some(Line::Entry(_, hash)) => hash.verify(password),
            _ => {
                // The cost of a real check (same iteration count as the file's first entry),
                // so response time does not reveal which user names exist.
                let iterations = self
                    .lines
                    .iter()
                    .find_map(|l| match l {
                        Line::Entry(_, h) => Some(h.iterations()),
                        Line::Other(_) => None,
                    })
                    .unwrap_or(DEFAULT_ITERATIONS);
                let mut out = [0u8; HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, &[0; SALT_LEN], iterations, &mut out);
                std::hint::black_box(out);
                false
            }
        }
    }

    /// Adds `user` or replaces their hash.
    pub fn set(&mut self, user: &str, hash: PasswordHash) -> Result<(), AuthError> {
        validate_username(user)?;
        match self.index.get(user) {
            // `index` only holds positions inside `lines` (kept in step by `remove`).
            Some(&i) => self.lines[i] = Line::Entry(user.to_string(), hash),
            None => {
                self.index.insert(user.to_string(), self.lines.len());
                self.lines.push(Line::Entry(user.to_string(), hash));
            }
        }
        Ok(())
    }

    /// Removes `user`; returns whether they were present.
    pub fn remove(&mut self, user: &str) -> bool {
        let Some(i) = self.index.remove(user) else {
            return false;
        };
        self.lines.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        true
    }

    /// The file's text, one line per entry, each ending in `\n`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            // Writing into a String cannot fail.
            let _ = match line {
                Line::Other(s) => writeln!(out, "{s}"),
                Line::Entry(u, h) => writeln!(out, "{u}:{h}"),
            };
        }
        out
    }

    /// Writes the file atomically: a temporary file in the same directory, created with mode
    /// 0600, written and synced, then renamed over [`PasswordFile::path`].
    pub fn save(&self) -> Result<(), AuthError> {
        write_atomic(&self.path, self.to_text().as_bytes())
    }
}

/// Writes `data` to `path` through a 0600 temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), AuthError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| AuthError::Io { path: p, source }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "passwd".to_string());
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    // A leftover from a crashed run of this same pid is ours to replace.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut f = options.open(&tmp).map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated once with `mosquitto_passwd -c -b FILE alice secret1` (Mosquitto 2.0.11).
    const MOSQUITTO_ALICE: &str = "$7$101$OUpg2Dn2sSR6TAWt$Elfng9i2ZK/KoM+R31Ry032MhcXiSdWD/USzPUUOQdm6RC9ngzAYoz5Vho6ywfcAtax4wsGNmn3C6rcjQsYPJg==";

    #[test]
    fn hash_round_trips_and_verifies() {
        let h = PasswordHash::new(b"s3cret", 50).unwrap();
        assert!(h.verify(b"s3cret"));
        assert!(!h.verify(b"s3cret "));
        assert!(!h.verify(b""));
        let text = h.to_string();
        assert!(text.starts_with("$pbkdf2-sha512$50$"), "{text}");
        let back = PasswordHash::parse(&text).unwrap();
        assert_eq!(back, h);
        assert!(back.verify(b"s3cret"));
        assert_eq!(back.iterations(), 50);
    }

    #[test]
    fn salts_are_random() {
        let a = PasswordHash::new(b"x", 1).unwrap();
        let b = PasswordHash::new(b"x", 1).unwrap();
        assert_ne!(a.to_string(), b.to_string());
    }

    #[test]
    fn reads_mosquitto_pbkdf2_hashes() {
        let h = PasswordHash::parse(MOSQUITTO_ALICE).unwrap();
        assert!(h.verify(b"secret1"));
        assert!(!h.verify(b"secret2"));
        // Rewriting keeps Mosquitto's form, so the file stays usable by mosquitto too.
        assert_eq!(h.to_string(), MOSQUITTO_ALICE);
    }

    #[test]
    fn reads_mosquitto_salted_sha512() {
        let salt = b"saltsalt".to_vec();
        let mut d = Sha512::new();
        d.update(b"pw");
        d.update(&salt);
        let text = format!("$6${}${}", B64.encode(&salt), B64.encode(d.finalize()));
        let h = PasswordHash::parse(&text).unwrap();
        assert!(h.verify(b"pw"));
        assert!(!h.verify(b"px"));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "",
            "plain",
            "$pbkdf2-sha512$0$AAAA$AAAAAAAAAAAAAAAAAAAAAA==",
            "$pbkdf2-sha512$99999999$AAAA$AAAAAAAAAAAAAAAAAAAAAA==",
            "$pbkdf2-sha512$x$AAAA$AAAAAAAAAAAAAAAAAAAAAA==",
            "$pbkdf2-sha512$10$!!$AAAAAAAAAAAAAAAAAAAAAA==",
            "$pbkdf2-sha512$10$AAAA$AAAA",
            "$5$AAAA$AAAA",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_parse_verify_edit() {
        let alice = PasswordHash::with_salt(b"a-pw", 10, vec![1; 16]);
        let text = format!("# comment\n\nalice:{alice}\nbob:{MOSQUITTO_ALICE}\n");
        let mut f = PasswordFile::parse(&text, "/etc/pw").unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.verify("alice", b"a-pw"));
        assert!(!f.verify("alice", b"secret1"));
        assert!(f.verify("bob", b"secret1"));
        assert!(!f.verify("carol", b"a-pw"));
        assert_eq!(f.to_text(), text, "comments and order are kept");
        assert!(f.remove("alice"));
        assert!(!f.remove("alice"));
        assert!(!f.verify("alice", b"a-pw"));
        assert!(f.verify("bob", b"secret1"), "index fixed after removal");
        f.set("bob", PasswordHash::with_salt(b"new", 10, vec![2; 16]))
            .unwrap();
        assert!(f.verify("bob", b"new"));
        f.set("carol", PasswordHash::with_salt(b"c", 10, vec![3; 16]))
            .unwrap();
        assert_eq!(f.users().collect::<Vec<_>>(), ["bob", "carol"]);
        assert!(f.set("a:b", alice.clone()).is_err());
        assert!(f.set("", alice).is_err());
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let err = PasswordFile::parse("# ok\nalice:$pbkdf2-sha512$oops\n", "/etc/pw").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/pw:2: "), "{msg}");
        assert!(matches!(err, AuthError::Parse { line: 2, .. }));
        let err = PasswordFile::parse("nocolon\n", "f").unwrap_err();
        assert!(matches!(err, AuthError::Parse { line: 1, .. }));
        let h = PasswordHash::with_salt(b"x", 1, vec![1; 16]);
        let err = PasswordFile::parse(&format!("u:{h}\nu:{h}\n"), "f").unwrap_err();
        assert!(matches!(err, AuthError::Parse { line: 2, .. }), "{err}");
    }

    #[test]
    fn save_is_atomic_and_private() {
        let dir = std::env::temp_dir().join(format!("halyard-auth-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        let mut f = PasswordFile::empty(&path);
        f.set("u", PasswordHash::with_salt(b"pw", 5, vec![9; 16]))
            .unwrap();
        f.save().unwrap();
        let back = PasswordFile::load(&path).unwrap();
        assert!(back.verify("u", b"pw"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        let err = PasswordFile::load(dir.join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
