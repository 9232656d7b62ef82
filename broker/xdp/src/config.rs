//! The `[xdp]` configuration section and its validation.

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::XdpError;

/// Most prefixes the allow-list holds (`HALYARD_MAX_ALLOW` in `ebpf/halyard_xdp.c`).
pub const MAX_ALLOW_PREFIXES: usize = 1024;
/// Most watched ports (`HALYARD_MAX_PORTS` in `ebpf/halyard_xdp.c`).
pub const MAX_PORTS: usize = 16;
/// Largest accepted `xdp.max_sources`: 2^24 sources use about 1.6 GiB of kernel memory on a
/// 2-CPU machine, beyond that a typo is more likely than a need.
pub const MAX_SOURCES_LIMIT: u32 = 1 << 24;
/// Largest accepted `xdp.top_k`, which bounds the per-source metric series.
pub const MAX_TOP_K: usize = 1000;
/// Default `xdp.top_k`.
pub const DEFAULT_TOP_K: usize = 20;
/// Default `xdp.max_sources` (`HALYARD_MAX_SOURCES` in `ebpf/halyard_xdp.c`).
pub const DEFAULT_MAX_SOURCES: u32 = 65536;
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (SKB) mode when the driver refuses.
    #[default]
    Auto,
    /// Native (driver) mode only; fail when the driver has no XDP support.
    Driver,
    /// Generic (SKB) mode only: works on every interface, runs later in the stack.
    Skb,
}

/// The `[xdp]` section of Halyard's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpConfig {
    /// Load and attach the program at all (default false).
    pub enabled: bool,
    /// Interfaces to attach to (names such as `eth0`); required when enabled. A TOML array
    /// or one comma-separated string (the form environment overrides use).
    #[serde(deserialize_with = "string_list")]
    pub interfaces: Vec<String>,
    /// Attach mode (default `auto`).
    pub mode: XdpMode,
    /// SYNs per second allowed per source address; above it SYNs are dropped (0 = off, default).
    pub syn_rate_limit: u32,
    /// Source prefixes exempt from the SYN limit, in CIDR form (`10.0.0.0/8`, `fd00::/8`);
    /// a bare address means a single host. At most [`MAX_ALLOW_PREFIXES`]. A TOML array or
    /// one comma-separated string.
    #[serde(deserialize_with = "string_list")]
    pub allow: Vec<String>,
    /// Sources exported per scrape, busiest first (default 20, at most [`MAX_TOP_K`]).
    pub top_k: usize,
    /// Source addresses tracked in the kernel; the least recently seen is evicted beyond it
    /// (default 65536, at most [`MAX_SOURCES_LIMIT`]).
    pub max_sources: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interfaces: Vec::new(),
            mode: XdpMode::Auto,
            syn_rate_limit: 0,
            allow: Vec::new(),
            top_k: DEFAULT_TOP_K,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

/// One allow-list entry: an IPv6 (or IPv4-mapped) network and its prefix length over 128 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MappedPrefix {
    /// Network address with the host bits cleared.
    pub addr: Ipv6Addr,
    /// Prefix length in bits of the 128-bit (mapped) address.
    pub len: u32,
}

impl XdpConfig {
    /// Checks every field; the error names the offending one (`xdp.allow`, ...).
    pub fn validate(&self) -> Result<(), XdpError> {
        if self.enabled && self.interfaces.is_empty() {
            return Err(config_err(
                "xdp.interfaces",
                "is empty but xdp.enabled = true",
            ));
        }
        for name in &self.interfaces {
            if name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', '\0', ' ']) {
                return Err(config_err(
                    "xdp.interfaces",
                    format!("{name:?} is not a valid interface name"),
                ));
            }
        }
        if self.top_k == 0 || self.top_k > MAX_TOP_K {
            return Err(config_err(
                "xdp.top_k",
                format!("must be 1..={MAX_TOP_K}, got {}", self.top_k),
            ));
        }
        if self.max_sources == 0 || self.max_sources > MAX_SOURCES_LIMIT {
            return Err(config_err(
                "xdp.max_sources",
                format!("must be 1..={MAX_SOURCES_LIMIT}, got {}", self.max_sources),
            ));
        }
        self.allow_prefixes().map(|_| ())
    }

    /// Parses `allow` into IPv6-mapped prefixes.
    pub(crate) fn allow_prefixes(&self) -> Result<Vec<MappedPrefix>, XdpError> {
        if self.allow.len() > MAX_ALLOW_PREFIXES {
            return Err(config_err(
                "xdp.allow",
                format!(
                    "has {} entries, at most {MAX_ALLOW_PREFIXES} are allowed",
                    self.allow.len()
                ),
            ));
        }
        self.allow
            .iter()
            .map(|s| {
                parse_cidr(s).ok_or_else(|| {
                    config_err(
                        "xdp.allow",
                        format!("{s:?} is not an IPv4 or IPv6 prefix such as 10.0.0.0/8"),
                    )
                })
            })
            .collect()
    }
}

/// A list of strings given as an array or as one comma-separated string.
fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(String::from)
            .collect(),
        List::Many(v) => v,
    })
}

fn config_err(field: &'static str, message: impl Into<String>) -> XdpError {
    XdpError::Config {
        field,
        message: message.into(),
    }
}

/// Parses `addr[/len]` into a prefix over the IPv6-mapped address space.
pub(crate) fn parse_cidr(s: &str) -> Option<MappedPrefix> {
    let (addr, len) = match s.trim().split_once('/') {
        Some((a, l)) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            (a, Some(l.parse::<u32>().ok()?))
        }
        Some(_) => return None,
        None => (s.trim(), None),
    };
    let (mapped, len) = match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return None;
            }
            (v4.to_ipv6_mapped(), 96 + len)
        }
        IpAddr::V6(v6) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return None;
            }
            (v6, len)
        }
    };
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    Some(MappedPrefix {
        addr: Ipv6Addr::from(u128::from(mapped) & mask),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cfg: XdpConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, XdpConfig::default());
        assert!(!cfg.enabled);
        assert_eq!(cfg.top_k, 20);
        assert_eq!(cfg.max_sources, 65536);
        assert_eq!(cfg.mode, XdpMode::Auto);
        cfg.validate().unwrap();
    }

    #[test]
    fn full_section_parses() {
        let cfg: XdpConfig = toml::from_str(
            r#"
            enabled = true
            interfaces = ["eth0", "eth1"]
            mode = "skb"
            syn_rate_limit = 100
            allow = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
            top_k = 5
            max_sources = 1000
            "#,
        )
        .unwrap();
        assert_eq!(cfg.mode, XdpMode::Skb);
        assert_eq!(cfg.syn_rate_limit, 100);
        cfg.validate().unwrap();
        let p = cfg.allow_prefixes().unwrap();
        assert_eq!(p[0].len, 104);
        assert_eq!(p[0].addr, "::ffff:10.0.0.0".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p[1].len, 8);
        assert_eq!(p[2].len, 128);
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(toml::from_str::<XdpConfig>(&text).unwrap(), cfg);
    }

    #[test]
    fn lists_accept_a_comma_separated_string() {
        let cfg: XdpConfig =
            toml::from_str("interfaces = \"eth0, eth1\"\nallow = \"10.0.0.0/8,fd00::/8\"").unwrap();
        assert_eq!(cfg.interfaces, ["eth0", "eth1"]);
        assert_eq!(cfg.allow, ["10.0.0.0/8", "fd00::/8"]);
        assert!(toml::from_str::<XdpConfig>("interfaces = 3").is_err());
    }

    #[test]
    fn unknown_field_and_bad_mode_rejected() {
        assert!(toml::from_str::<XdpConfig>("enable = true").is_err());
        assert!(toml::from_str::<XdpConfig>("mode = \"native\"").is_err());
        assert!(toml::from_str::<XdpConfig>("mode = \"driver\"").is_ok());
    }

    #[test]
    fn invalid_allow_names_the_field() {
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "nonsense",
            "10.0.0.0/",
            "1.2.3.4/x",
            "/8",
        ] {
            let cfg = XdpConfig {
                allow: vec![bad.to_owned()],
                ..XdpConfig::default()
            };
            let err = cfg.validate().unwrap_err();
            assert!(
                matches!(
                    err,
                    XdpError::Config {
                        field: "xdp.allow",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("xdp.allow"), "{err}");
        }
    }

    #[test]
    fn host_bits_are_cleared() {
        let p = parse_cidr("10.1.2.3/16").unwrap();
        assert_eq!(p.addr, "::ffff:10.1.0.0".parse::<Ipv6Addr>().unwrap());
        let p = parse_cidr("fd00:203::1/64").unwrap();
        assert_eq!(p.addr, "fd00:203::".parse::<Ipv6Addr>().unwrap());
        let p = parse_cidr("0.0.0.0/0").unwrap();
        assert_eq!((p.addr, p.len), ("::ffff:0.0.0.0".parse().unwrap(), 96));
        let p = parse_cidr("::/0").unwrap();
        assert_eq!((p.addr, p.len), (Ipv6Addr::UNSPECIFIED, 0));
    }

    #[test]
    fn other_fields_validated() {
        let enabled_no_if = XdpConfig {
            enabled: true,
            ..XdpConfig::default()
        };
        assert!(matches!(
            enabled_no_if.validate(),
            Err(XdpError::Config {
                field: "xdp.interfaces",
                ..
            })
        ));
        let long_name = XdpConfig {
            interfaces: vec!["a-very-long-interface-name".into()],
            ..XdpConfig::default()
        };
        assert!(long_name.validate().is_err());
        let zero_top = XdpConfig {
            top_k: 0,
            ..XdpConfig::default()
        };
        assert!(matches!(
            zero_top.validate(),
            Err(XdpError::Config {
                field: "xdp.top_k",
                ..
            })
        ));
        let zero_sources = XdpConfig {
            max_sources: 0,
            ..XdpConfig::default()
        };
        assert!(matches!(
            zero_sources.validate(),
            Err(XdpError::Config {
                field: "xdp.max_sources",
                ..
            })
        ));
    }
}
