//! Client authentication: anonymous on/off and the password file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::password::PasswordFile;

/// `[auth]`: who may connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether a client without a user name may connect. Default `true`.
    pub allow_anonymous: bool,
    /// Password file (`user:hash` lines, see `halyard passwd`). When set, a client that gives
    /// a user name must give that user's password. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            password_file: None,
        }
    }
}

/// The answer to a CONNECT's credentials.
///
/// The decisions match Mosquitto 2.0.11's (observed here with a password file: anonymous
/// clients per `allow_anonymous`, an unknown user or a wrong or missing password refused even
/// when anonymous clients are allowed). The codes are more precise than Mosquitto's, which
/// answers every refusal with 0x87 / 0x05: Halyard tells bad credentials (0x86 / 0x04) from
/// a refused anonymous client (0x87 / 0x05), as issue 5 asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthDecision {
    /// Accept the connection.
    Allow,
    /// The user name or password is wrong (or the user is unknown): MQTT 3.1.1 CONNACK
    /// return code 0x04, MQTT 5.0 reason code 0x86 (Bad User Name or Password).
    BadCredentials,
    /// Credentials were not wrong but this client may not connect (anonymous client while
    /// `allow_anonymous = false`): 3.1.1 return code 0x05, 5.0 reason code 0x87
    /// (Not authorized).
    NotAuthorized,
}

impl AuthDecision {
    /// The MQTT 3.1.1 CONNACK return code: 0x00, 0x04 or 0x05.
    pub fn return_code_v311(self) -> u8 {
        match self {
            AuthDecision::Allow => 0x00,
            AuthDecision::BadCredentials => 0x04,
            AuthDecision::NotAuthorized => 0x05,
        }
    }

    /// The MQTT 5.0 CONNACK reason code: 0x00, 0x86 or 0x87.
    pub fn reason_code_v5(self) -> u8 {
        match self {
            AuthDecision::Allow => 0x00,
            AuthDecision::BadCredentials => 0x86,
            AuthDecision::NotAuthorized => 0x87,
        }
    }
}

/// Checks CONNECT credentials against an [`AuthConfig`] and its password file.
///
/// Immutable once built: share it as `Arc<Authenticator>` (or in an `ArcSwap`), and on SIGHUP
/// build a fresh one with [`Authenticator::reload`] and swap it in; connections already open
/// are not re-checked.
///
/// [`Authenticator::check`] runs one PBKDF2 evaluation when a user name is given and a password
/// file is configured (about 5 ms at the default iteration count in a release build).
#[derive(Debug, Clone)]
pub struct Authenticator {
    config: AuthConfig,
    passwords: Option<PasswordFile>,
}

impl Authenticator {
    /// Builds the authenticator, reading the password file if one is configured.
    pub fn new(config: AuthConfig) -> Result<Self, AuthError> {
        let passwords = match &config.password_file {
            Some(path) => Some(PasswordFile::load(path)?),
            None => None,
        };
        Ok(Authenticator { config, passwords })
    }

    /// An authenticator over an already parsed password file (tests, embedding).
    pub fn with_passwords(allow_anonymous: bool, passwords: PasswordFile) -> Self {
        Authenticator {
            config: AuthConfig {
                allow_anonymous,
                password_file: Some(passwords.path().to_path_buf()),
            },
            passwords: Some(passwords),
        }
    }

    /// A new authenticator with the same configuration and the password file read again.
    /// On error the caller keeps the old one (and logs the error).
    pub fn reload(&self) -> Result<Self, AuthError> {
        Self::new(self.config.clone())
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Number of users in the password file (0 without one).
    pub fn user_count(&self) -> usize {
        self.passwords.as_ref().map_or(0, PasswordFile::len)
    }

    /// Decides on a CONNECT's user name and password:
    /// - no user name: [`AuthDecision::Allow`] if `allow_anonymous`, else
    ///   [`AuthDecision::NotAuthorized`];
    /// - a user name and a password file: [`AuthDecision::Allow`] only if the user is in the
    ///   file and the password matches, else [`AuthDecision::BadCredentials`] (also for a
    ///   missing password or an unknown user, as Mosquitto does);
    /// - a user name and no password file: the name is only an identity (for the ACL):
    ///   [`AuthDecision::Allow`] if `allow_anonymous`, else [`AuthDecision::NotAuthorized`].
    pub fn check(&self, username: Option<&str>, password: Option<&[u8]>) -> AuthDecision {
        let anonymous = if self.config.allow_anonymous {
            AuthDecision::Allow
        } else {
            AuthDecision::NotAuthorized
        };
        let Some(user) = username else {
            return anonymous;
        };
        let Some(file) = &self.passwords else {
            return anonymous;
        };
        // A missing password still costs one hash, like a wrong one.
        if file.verify(user, password.unwrap_or_default()) && password.is_some() {
            AuthDecision::Allow
        } else {
            AuthDecision::BadCredentials
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::PasswordHash;

    fn file() -> PasswordFile {
        let mut f = PasswordFile::empty("/etc/halyard/passwd");
        f.set(
            "alice",
            PasswordHash::with_salt(b"wonderland", 20, vec![7; 16]),
        )
        .unwrap();
        f
    }

    #[test]
    fn defaults_keep_everyone_in() {
        let a = Authenticator::new(AuthConfig::default()).unwrap();
        assert_eq!(a.check(None, None), AuthDecision::Allow);
        assert_eq!(a.check(Some("anyone"), Some(b"x")), AuthDecision::Allow);
    }

    #[test]
    fn anonymous_can_be_refused() {
        let cfg = AuthConfig {
            allow_anonymous: false,
            password_file: None,
        };
        let a = Authenticator::new(cfg).unwrap();
        assert_eq!(a.check(None, None), AuthDecision::NotAuthorized);
        assert_eq!(a.check(Some("u"), Some(b"p")), AuthDecision::NotAuthorized);
        let a = Authenticator::with_passwords(false, file());
        assert_eq!(a.check(None, None), AuthDecision::NotAuthorized);
        assert_eq!(
            a.check(Some("alice"), Some(b"wonderland")),
            AuthDecision::Allow
        );
    }

    #[test]
    fn password_file_is_enforced_for_named_users() {
        let a = Authenticator::with_passwords(true, file());
        assert_eq!(
            a.check(Some("alice"), Some(b"wonderland")),
            AuthDecision::Allow
        );
        assert_eq!(
            a.check(Some("alice"), Some(b"Wonderland")),
            AuthDecision::BadCredentials
        );
        assert_eq!(a.check(Some("alice"), None), AuthDecision::BadCredentials);
        assert_eq!(
            a.check(Some("mallory"), Some(b"wonderland")),
            AuthDecision::BadCredentials
        );
        // Anonymous clients are still let in when allowed.
        assert_eq!(a.check(None, None), AuthDecision::Allow);
    }

    #[test]
    fn decisions_map_to_connack_codes() {
        assert_eq!(AuthDecision::Allow.return_code_v311(), 0);
        assert_eq!(AuthDecision::BadCredentials.return_code_v311(), 0x04);
        assert_eq!(AuthDecision::NotAuthorized.return_code_v311(), 0x05);
        assert_eq!(AuthDecision::BadCredentials.reason_code_v5(), 0x86);
        assert_eq!(AuthDecision::NotAuthorized.reason_code_v5(), 0x87);
    }

    #[test]
    fn config_keys_and_defaults() {
        let c: AuthConfig = toml::from_str("").unwrap();
        assert_eq!(c, AuthConfig::default());
        let c: AuthConfig =
            toml::from_str("allow_anonymous = false\npassword_file = \"/etc/pw\"").unwrap();
        assert!(!c.allow_anonymous);
        assert_eq!(
            c.password_file.as_deref(),
            Some(std::path::Path::new("/etc/pw"))
        );
        assert!(toml::from_str::<AuthConfig>("allow_anon = true").is_err());
        // `halyard config check` prints the effective configuration as TOML.
        let text = toml::to_string(&AuthConfig::default()).unwrap();
        assert_eq!(
            toml::from_str::<AuthConfig>(&text).unwrap(),
            AuthConfig::default()
        );
    }

    #[test]
    fn reload_reads_the_file_again() {
        let dir = std::env::temp_dir().join(format!("halyard-auth-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        let mut f = PasswordFile::empty(&path);
        f.set("u", PasswordHash::with_salt(b"one", 5, vec![1; 16]))
            .unwrap();
        f.save().unwrap();
        let a = Authenticator::new(AuthConfig {
            allow_anonymous: false,
            password_file: Some(path.clone()),
        })
        .unwrap();
        assert_eq!(a.check(Some("u"), Some(b"one")), AuthDecision::Allow);
        f.set("u", PasswordHash::with_salt(b"two", 5, vec![1; 16]))
            .unwrap();
        f.save().unwrap();
        assert_eq!(
            a.check(Some("u"), Some(b"two")),
            AuthDecision::BadCredentials,
            "old value unchanged"
        );
        let b = a.reload().unwrap();
        assert_eq!(b.check(Some("u"), Some(b"two")), AuthDecision::Allow);
        std::fs::write(&path, "broken line\n").unwrap();
        assert!(matches!(b.reload(), Err(AuthError::Parse { line: 1, .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
