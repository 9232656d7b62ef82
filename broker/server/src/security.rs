//! Authentication, authorisation and abuse limits, wired from `halyard-auth`.
//!
//! One [`Security`] per node, shared by every I/O thread and the admin server. The password
//! file and the ACL are immutable values behind [`ArcSwap`] (swapped on SIGHUP by
//! [`Security::reload`], keeping the old value when the new files do not load); bans, flapping
//! and the per-source limits live in one [`ConnectGuard`] behind a mutex that is taken only on
//! accept, close and CONNECT, never on the publish path.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use arc_swap::Guard;
use halyard_auth::{Access, Acl, AuthDecision, AuthError, Authenticator, ConnectGuard};

use crate::config::Config;

/// Why the server refused something on security grounds (`halyard_auth_denials_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// CONNECT with an unknown user or a wrong password.
    BadCredentials = 0,
    /// CONNECT not authorised (anonymous refused, or the will topic not writable).
    NotAuthorized = 1,
    /// PUBLISH to a topic the ACL does not let the client write.
    Publish = 2,
    /// SUBSCRIBE to a filter the ACL does not let the client read.
    Subscribe = 3,
    /// A delivery skipped because the subscriber may not read the topic.
    Delivery = 4,
}

impl Denial {
    /// Label values, indexed by the discriminant.
    pub const LABELS: [&'static str; 5] = [
        "bad_credentials",
        "not_authorized",
        "publish",
        "subscribe",
        "delivery",
    ];
}

/// The node's security state.
#[derive(Debug)]
pub struct Security {
    /// The password check (`[auth]`).
    pub authn: ArcSwap<Authenticator>,
    /// The topic ACL (`[acl]`).
    acl: ArcSwap<Acl>,
    /// Whether the ACL in `acl` allows everything (no `[acl]` rules: the default), kept
    /// beside it so the publish path (a write check per PUBLISH, a read check per routing)
    /// skips the `ArcSwap` load, ~2.5 % of closed-loop fan-in samples (benches/RESULTS.md,
    /// session 10). Set after each store: a check racing a reload sees the old or the new
    /// ACL, as with the load alone.
    acl_open: AtomicBool,
    guard: Mutex<ConnectGuard>,
    denials: [AtomicU64; 5],
}

/// Unix time in milliseconds, as `halyard-auth` takes it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Security {
    /// Loads the password file and the ACL named by the configuration.
    pub fn new(config: &Config) -> Result<Self, AuthError> {
        let authn = Authenticator::new(config.auth.clone())?;
        let acl = Acl::new(config.acl.clone())?;
        log_loaded(&authn, &acl);
        Ok(Security {
            authn: ArcSwap::from_pointee(authn),
            acl_open: AtomicBool::new(acl.allows_everything()),
            acl: ArcSwap::from_pointee(acl),
            guard: Mutex::new(ConnectGuard::new(&config.limits.auth_limits())),
            denials: Default::default(),
        })
    }

    /// Locks the connect guard (accept, close, CONNECT and the admin API only).
    pub fn guard(&self) -> MutexGuard<'_, ConnectGuard> {
        // Every ConnectGuard method leaves it consistent even if a caller panicked mid-way
        // (each is a bounded table update), so a poisoned lock is safe to reuse.
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the password file and the ACL (SIGHUP); a file that fails keeps the old value.
    pub fn reload(&self) {
        match self.authn.load().reload() {
            Ok(a) => self.authn.store(Arc::new(a)),
            Err(e) => {
                tracing::error!(error = %e, "password file not reloaded; keeping the old one")
            }
        }
        match self.acl.load().reload() {
            Ok(a) => {
                let open = a.allows_everything();
                self.acl.store(Arc::new(a));
                self.acl_open.store(open, Release);
            }
            Err(e) => tracing::error!(error = %e, "ACL not reloaded; keeping the old one"),
        }
        log_loaded(&self.authn.load(), &self.acl.load());
    }

    /// Counts a refusal.
    pub fn count(&self, denial: Denial) {
        self.denials[denial as usize].fetch_add(1, Relaxed);
    }

    /// Refusals by [`Denial`], indexed like [`Denial::LABELS`].
    pub fn denials(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.denials[i].load(Relaxed))
    }

    /// Whether a client may write (publish to) `topic`.
    pub fn may_write(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.restricted_acl()
            .is_none_or(|acl| acl.check_topic(client_id, username, topic, Access::Write))
    }

    /// Whether a client may read `topic` (delivery and retained messages).
    pub fn may_read(&self, client_id: &str, username: Option<&str>, topic: &str) -> bool {
        self.restricted_acl()
            .is_none_or(|acl| acl.check_topic(client_id, username, topic, Access::Read))
    }

    /// The ACL, unless it allows everything (then nothing needs checking).
    pub fn restricted_acl(&self) -> Option<Guard<Arc<Acl>>> {
        if self.acl_open.load(Acquire) {
            return None;
        }
        let acl = self.acl.load();
        (!acl.allows_everything()).then_some(acl)
    }

    /// Whether a client may subscribe to `filter` (the full filter, `$share/...` included).
    pub fn may_subscribe(&self, client_id: &str, username: Option<&str>, filter: &str) -> bool {
        self.restricted_acl()
            .is_none_or(|acl| acl.check_subscribe(client_id, username, filter))
    }

    /// Checks a CONNECT: bans, flapping and per-source limits, then the credentials (one
    /// PBKDF2 when a user name is given and a password file is set). `Err` holds the 5.0
    /// reason code (the session layer maps it for 3.1.1).
    pub fn check_connect(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
        peer: Option<IpAddr>,
    ) -> Result<(), u8> {
        let now = now_ms();
        self.guard()
            .on_connect(client_id, username, peer, now)
            .map_err(|r| r.reason_code_v5())?;
        let decision = self.authn.load().check(username, password);
        match decision {
            AuthDecision::Allow => Ok(()),
            AuthDecision::BadCredentials => {
                if let Some(ip) = peer {
                    self.guard().on_auth_failure(ip, now);
                }
                self.count(Denial::BadCredentials);
                Err(decision.reason_code_v5())
            }
            _ => {
                self.count(Denial::NotAuthorized);
                Err(decision.reason_code_v5())
            }
        }
    }
}

fn log_loaded(authn: &Authenticator, acl: &Acl) {
    tracing::info!(
        users = authn.user_count(),
        acl_rules = acl.rule_count(),
        acl_allows_everything = acl.allows_everything(),
        "auth and ACL loaded"
    );
}

/// Closes a socket's per-source slot in the connect guard when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    security: Arc<Security>,
    ip: IpAddr,
}

impl SourceSlot {
    /// Asks the guard for a slot for a socket from `ip`; `Err` names the refusal's limit.
    pub fn open(security: &Arc<Security>, ip: IpAddr) -> Result<Self, halyard_auth::Refusal> {
        security.guard().on_accept(ip, now_ms())?;
        Ok(SourceSlot {
            security: security.clone(),
            ip,
        })
    }

    /// The source address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.security.guard().on_close(self.ip);
    }
}
