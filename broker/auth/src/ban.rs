//! Banned clients: by client id, user name or source address (IP or CIDR), with expiry.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// What a ban applies to (the `kind` of its JSON form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanKind {
    /// A client identifier, compared exactly.
    ClientId,
    /// A user name, compared exactly.
    Username,
    /// A source address: an IP (`192.0.2.7`, `2001:db8::1`) or a CIDR block (`10.0.0.0/8`).
    Address,
}

/// One ban, as the admin API sends and lists it:
/// `{"kind": "client_id", "value": "dev-7", "until_ms": 1767225600000, "reason": "flapping"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    /// What `value` names.
    pub kind: BanKind,
    /// The client id, user name, IP or CIDR block.
    pub value: String,
    /// End of the ban in Unix milliseconds; `None` (or absent) = until removed.
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// Free text for operators (e.g. `"flapping"`).
    #[serde(default)]
    pub reason: String,
}

impl Ban {
    /// Whether the ban is still in force at `now_ms`.
    pub fn active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// An IP network: an address and a prefix length. IPv4-mapped IPv6 addresses are treated as
/// the IPv4 address they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `addr` with `prefix` leading bits (clamped to the address width).
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let addr = addr.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.min(width);
        IpNet {
            addr: mask(addr, prefix),
            prefix,
        }
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

/// `ip` with all but its first `prefix` bits cleared.
pub(crate) fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl FromStr for IpNet {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AuthError::InvalidBan(format!("{s:?} is not an IP address or CIDR block"));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or_else(bad)?,
            None => width,
        };
        Ok(IpNet::new(addr, prefix))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The ban table. Client ids and user names are looked up in hash maps; address bans are
/// scanned (there are few). Expired bans stop applying at once and are dropped by
/// [`BanList::purge_expired`] or when the table is full.
#[derive(Debug, Clone, Default)]
pub struct BanList {
    max: usize,
    client_ids: HashMap<String, Ban>,
    usernames: HashMap<String, Ban>,
    addresses: Vec<(IpNet, Ban)>,
    full_hits: u64,
    refused: u64,
}

impl BanList {
    /// An empty list holding at most `max_bans` bans.
    pub fn new(max_bans: usize) -> Self {
        BanList {
            max: max_bans,
            ..Default::default()
        }
    }

    /// Number of bans stored (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.client_ids.len() + self.usernames.len() + self.addresses.len()
    }

    /// Whether no ban is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a ban, replacing one with the same kind and value. When the table is full,
    /// expired bans are dropped first; if it is still full the ban is refused with
    /// [`AuthError::BanListFull`] (counted in [`BanList::full_hits`]).
    pub fn add(&mut self, ban: Ban, now_ms: u64) -> Result<(), AuthError> {
        if ban.value.is_empty() {
            return Err(AuthError::InvalidBan("empty value".into()));
        }
        let net = match ban.kind {
            BanKind::Address => Some(ban.value.parse::<IpNet>()?),
            _ => None,
        };
        if !self.has(&ban, net) && self.len() >= self.max {
            self.purge_expired(now_ms);
            if self.len() >= self.max {
                self.full_hits += 1;
                return Err(AuthError::BanListFull { max: self.max });
            }
        }
        match (ban.kind, net) {
            (BanKind::ClientId, _) => {
                self.client_ids.insert(ban.value.clone(), ban);
            }
            (BanKind::Username, _) => {
                self.usernames.insert(ban.value.clone(), ban);
            }
            (BanKind::Address, Some(net)) => {
                self.addresses.retain(|(n, _)| *n != net);
                self.addresses.push((net, ban));
            }
            (BanKind::Address, None) => {}
        }
        Ok(())
    }

    fn has(&self, ban: &Ban, net: Option<IpNet>) -> bool {
        match ban.kind {
            BanKind::ClientId => self.client_ids.contains_key(&ban.value),
            BanKind::Username => self.usernames.contains_key(&ban.value),
            BanKind::Address => self.addresses.iter().any(|(n, _)| Some(*n) == net),
        }
    }

    /// Removes the ban on `kind`/`value` (an address in any spelling of the same network);
    /// returns whether there was one.
    pub fn remove(&mut self, kind: BanKind, value: &str) -> bool {
        match kind {
            BanKind::ClientId => self.client_ids.remove(value).is_some(),
            BanKind::Username => self.usernames.remove(value).is_some(),
            BanKind::Address => {
                let Ok(net) = value.parse::<IpNet>() else {
                    return false;
                };
                let before = self.addresses.len();
                self.addresses.retain(|(n, _)| *n != net);
                before != self.addresses.len()
            }
        }
    }

    /// Every stored ban, client ids first, then user names, then addresses.
    pub fn list(&self) -> Vec<Ban> {
        let mut out: Vec<Ban> = self.client_ids.values().cloned().collect();
        out.sort_by(|a, b| a.value.cmp(&b.value));
        let mut users: Vec<Ban> = self.usernames.values().cloned().collect();
        users.sort_by(|a, b| a.value.cmp(&b.value));
        out.extend(users);
        out.extend(self.addresses.iter().map(|(_, b)| b.clone()));
        out
    }

    /// The ban in force at `now_ms` on this client id, user name or address, if any.
    pub fn find(
        &self,
        client_id: &str,
        username: Option<&str>,
        ip: Option<IpAddr>,
        now_ms: u64,
    ) -> Option<&Ban> {
        let active = |b: &&Ban| b.active(now_ms);
        self.client_ids
            .get(client_id)
            .filter(active)
            .or_else(|| username.and_then(|u| self.usernames.get(u)).filter(active))
            .or_else(|| {
                let ip = ip?;
                self.addresses
                    .iter()
                    .find(|(n, b)| b.active(now_ms) && n.contains(ip))
                    .map(|(_, b)| b)
            })
    }

    /// Whether a ban in force at `now_ms` applies to this client id, user name or address.
    pub fn is_banned(
        &self,
        client_id: &str,
        username: Option<&str>,
        ip: Option<IpAddr>,
        now_ms: u64,
    ) -> bool {
        self.find(client_id, username, ip, now_ms).is_some()
    }

    /// [`BanList::is_banned`], counting a hit in [`BanList::refused`].
    pub fn check(
        &mut self,
        client_id: &str,
        username: Option<&str>,
        ip: Option<IpAddr>,
        now_ms: u64,
    ) -> bool {
        let banned = self.is_banned(client_id, username, ip, now_ms);
        self.refused += u64::from(banned);
        banned
    }

    /// Whether a ban in force applies to the source address `ip` alone (at accept time,
    /// before CONNECT names the client).
    pub fn is_address_banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.addresses
            .iter()
            .any(|(n, b)| b.active(now_ms) && n.contains(ip))
    }

    /// Drops the bans that ended at or before `now_ms`; returns how many.
    pub fn purge_expired(&mut self, now_ms: u64) -> usize {
        let before = self.len();
        self.client_ids.retain(|_, b| b.active(now_ms));
        self.usernames.retain(|_, b| b.active(now_ms));
        self.addresses.retain(|(_, b)| b.active(now_ms));
        before - self.len()
    }

    /// Bans refused because the table was full.
    pub fn full_hits(&self) -> u64 {
        self.full_hits
    }

    /// Connections refused through [`BanList::check`].
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(kind: BanKind, value: &str, until_ms: Option<u64>) -> Ban {
        Ban {
            kind,
            value: value.into(),
            until_ms,
            reason: String::new(),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn bans_by_each_kind_with_expiry() {
        let mut l = BanList::new(10);
        l.add(ban(BanKind::ClientId, "dev-1", None), 0).unwrap();
        l.add(ban(BanKind::Username, "eve", Some(1_000)), 0)
            .unwrap();
        l.add(ban(BanKind::Address, "10.1.0.0/16", Some(5_000)), 0)
            .unwrap();
        assert!(l.is_banned("dev-1", None, None, 0));
        assert!(!l.is_banned("dev-2", None, None, 0));
        assert!(l.is_banned("x", Some("eve"), None, 999));
        assert!(!l.is_banned("x", Some("eve"), None, 1_000), "expired");
        assert!(l.is_banned("x", None, ip("10.1.200.3"), 10));
        assert!(
            l.is_banned("x", None, ip("::ffff:10.1.200.3"), 10),
            "v4-mapped"
        );
        assert!(!l.is_banned("x", None, ip("10.2.0.1"), 10));
        assert!(!l.is_banned("x", None, ip("10.1.0.1"), 5_000));
        assert!(l.is_address_banned("10.1.0.1".parse().unwrap(), 10));
        assert!(l.check("dev-1", None, None, 0));
        assert!(!l.check("dev-2", None, None, 0));
        assert_eq!(l.refused(), 1);
        assert_eq!(l.purge_expired(5_000), 2);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn add_remove_list() {
        let mut l = BanList::new(10);
        l.add(ban(BanKind::Address, "2001:db8::/32", None), 0)
            .unwrap();
        l.add(ban(BanKind::Address, "192.0.2.7", None), 0).unwrap();
        l.add(ban(BanKind::Username, "b", None), 0).unwrap();
        l.add(ban(BanKind::ClientId, "a", None), 0).unwrap();
        // Same network in another spelling replaces, not duplicates.
        l.add(ban(BanKind::Address, "2001:db8:ffff::/32", Some(9)), 0)
            .unwrap();
        assert_eq!(l.len(), 4);
        assert!(l.is_banned("z", None, ip("2001:db8::42"), 0));
        assert!(l.is_banned("z", None, ip("192.0.2.7"), 0));
        assert!(!l.is_banned("z", None, ip("192.0.2.8"), 0));
        let kinds: Vec<BanKind> = l.list().iter().map(|b| b.kind).collect();
        assert_eq!(
            kinds,
            [
                BanKind::ClientId,
                BanKind::Username,
                BanKind::Address,
                BanKind::Address
            ]
        );
        assert!(l.remove(BanKind::Address, "2001:db8::1/32"));
        assert!(!l.remove(BanKind::Address, "2001:db8::/32"));
        assert!(l.remove(BanKind::ClientId, "a"));
        assert!(!l.remove(BanKind::Username, "nobody"));
        assert!(!l.remove(BanKind::Address, "garbage"));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn invalid_bans_are_refused() {
        let mut l = BanList::new(10);
        for v in ["10.0.0.0/33", "::/129", "host.example", "10.0.0/8", ""] {
            assert!(l.add(ban(BanKind::Address, v, None), 0).is_err(), "{v}");
        }
        assert!(l.add(ban(BanKind::ClientId, "", None), 0).is_err());
        assert!(l.is_empty());
    }

    #[test]
    fn table_is_bounded_and_expired_bans_make_room() {
        let mut l = BanList::new(2);
        l.add(ban(BanKind::ClientId, "a", Some(100)), 0).unwrap();
        l.add(ban(BanKind::ClientId, "b", None), 0).unwrap();
        assert!(matches!(
            l.add(ban(BanKind::ClientId, "c", None), 50),
            Err(AuthError::BanListFull { max: 2 })
        ));
        assert_eq!(l.full_hits(), 1);
        // Replacing an existing ban needs no room.
        l.add(ban(BanKind::ClientId, "b", Some(1_000)), 50).unwrap();
        // Once "a" has expired it is dropped to make room.
        l.add(ban(BanKind::ClientId, "c", None), 100).unwrap();
        assert_eq!(l.len(), 2);
        assert!(!l.is_banned("a", None, None, 0), "purged");
    }

    #[test]
    fn json_form_for_the_admin_api() {
        let b: Ban = serde_json::from_str(
            r#"{"kind":"address","value":"10.0.0.0/8","until_ms":1767225600000,"reason":"scan"}"#,
        )
        .unwrap();
        assert_eq!(b.kind, BanKind::Address);
        assert_eq!(b.until_ms, Some(1_767_225_600_000));
        let b: Ban = serde_json::from_str(r#"{"kind":"client_id","value":"dev"}"#).unwrap();
        assert_eq!((b.until_ms, b.reason.as_str()), (None, ""));
        let text = serde_json::to_string(&b).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"client_id","value":"dev","until_ms":null,"reason":""}"#
        );
        assert!(serde_json::from_str::<Ban>(r#"{"kind":"ip","value":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<Ban>(r#"{"kind":"username","value":"x","extra":1}"#).is_err()
        );
    }

    #[test]
    fn ip_networks() {
        let n: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(
            !n.contains("::a01:203".parse().unwrap()),
            "families do not mix"
        );
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one: IpNet = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        assert!(one.contains("::1".parse().unwrap()));
    }
}
