//! Rust mirrors of the keys and values in `ebpf/halyard_xdp.c` (same names, same layout).
//!
//! aya checks key and value sizes against the object's map definitions when a map is opened,
//! so a layout drift shows up as a load error rather than as garbage counters.

use std::net::Ipv6Addr;

/// Map names in the object.
pub(crate) const MAP_SOURCES: &str = "sources";
pub(crate) const MAP_SYN_RATE: &str = "syn_rate";
pub(crate) const MAP_TOTALS: &str = "totals";
pub(crate) const MAP_CONFIG: &str = "config";
pub(crate) const MAP_ALLOW: &str = "allow";
/// Program name (the C function).
pub(crate) const PROGRAM: &str = "halyard_xdp";

/// `struct halyard_src_key`: IPv6 source, IPv4 mapped as `::ffff:a.b.c.d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SrcKey {
    pub addr: [u8; 16],
}

/// `struct halyard_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub syn: u64,
    pub packets: u64,
    pub bytes: u64,
    pub syn_dropped: u64,
}

/// `struct halyard_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProgConfig {
    pub ports: [u16; crate::config::MAX_PORTS],
    pub port_count: u32,
    pub syn_rate_limit: u32,
}

/// `struct halyard_lpm_key` without the prefix length (aya's `lpm_trie::Key` adds it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct LpmAddr {
    pub addr: [u8; 16],
}

impl SrcKey {
    pub(crate) fn ip(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.addr)
    }
}

// SAFETY (all four): `repr(C)` structs of integers and byte arrays with no padding (sizes
// asserted in the tests below), so every bit pattern is a valid value, as `Pod` requires.
unsafe impl aya::Pod for SrcKey {}
unsafe impl aya::Pod for Counters {}
unsafe impl aya::Pod for ProgConfig {}
unsafe impl aya::Pod for LpmAddr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(size_of::<SrcKey>(), 16);
        assert_eq!(size_of::<Counters>(), 32);
        assert_eq!(size_of::<ProgConfig>(), 16 * 2 + 4 + 4);
        assert_eq!(size_of::<LpmAddr>(), 16);
    }
}
