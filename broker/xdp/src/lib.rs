//! halyard-xdp: loads Halyard's XDP connection-accounting program (`ebpf/halyard_xdp.c`,
//! compiled by `build.rs` and embedded), fills its configuration and allow-list maps from the
//! `[xdp]` config section, attaches it to the configured interfaces and reads its per-CPU
//! counters back as summed, bounded snapshots (totals plus the top-K sources).
//!
//! This crate owns everything that talks to the kernel's BPF interface. It must never touch
//! broker state, open sockets, spawn threads or export metrics itself: the server turns
//! [`XdpSnapshot`]s into Prometheus series and `/status`. A failure to start is an ordinary
//! [`XdpError`] (no capability, missing interface, verifier rejection, ...) that the broker logs
//! once and runs on without XDP; nothing here panics on kernel answers.
//!
//! Privileges: loading needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root).

mod config;
mod error;
mod maps;
mod snapshot;

use std::{collections::HashMap, ffi::CString, net::IpAddr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, lpm_trie::Key},
    programs::xdp::XdpLinkId,
};

pub use config::{
    DEFAULT_MAX_SOURCES, DEFAULT_TOP_K, MAX_ALLOW_PREFIXES, MAX_PORTS, MAX_SOURCES_LIMIT,
    MAX_TOP_K, XdpConfig, XdpMode,
};
pub use error::XdpError;
pub use snapshot::{AttachMode, Attachment, SourceStats, XdpCounters, XdpSnapshot, render_top};

use maps::{Counters, LpmAddr, ProgConfig, SrcKey};

/// The compiled program, built from `ebpf/halyard_xdp.c` by `build.rs`.
static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/halyard_xdp.o"));

/// The loaded and attached program. Dropping it detaches from every interface and unloads.
pub struct Xdp {
    /// Detached explicitly in `Drop`.
    links: Vec<XdpLinkId>,
    loaded: Loaded,
    attachments: Vec<Attachment>,
    top_k: usize,
}

/// The program loaded with its maps filled, not attached anywhere.
struct Loaded {
    totals: PerCpuArray<MapData, Counters>,
    sources: PerCpuHashMap<MapData, SrcKey, Counters>,
    bpf: Ebpf,
    max_sources: u32,
    verified_instructions: Option<u32>,
}

impl std::fmt::Debug for Xdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xdp")
            .field("attachments", &self.attachments)
            .field("top_k", &self.top_k)
            .field("max_sources", &self.loaded.max_sources)
            .finish_non_exhaustive()
    }
}

impl Xdp {
    /// Loads the program, writes `ports` (the broker's listener ports, at most [`MAX_PORTS`])
    /// and `cfg` into its maps and attaches it to every interface of `cfg.interfaces` in the
    /// current network namespace. With `mode = auto` driver mode is tried first and SKB mode
    /// on failure; the mode used is recorded per interface ([`Xdp::attachments`]).
    ///
    /// `cfg.enabled` is not looked at: the caller decides whether to call this.
    pub fn start(cfg: &XdpConfig, ports: &[u16]) -> Result<Xdp, XdpError> {
        cfg.validate()?;
        program_config(cfg, ports)?;
        if cfg.interfaces.is_empty() {
            return Err(XdpError::Config {
                field: "xdp.interfaces",
                message: "is empty: name the interfaces to attach to".into(),
            });
        }
        for interface in &cfg.interfaces {
            if !interface_exists(interface) {
                return Err(XdpError::InterfaceMissing {
                    interface: interface.clone(),
                });
            }
        }

        let mut loaded = Loaded::load(cfg, ports)?;
        let program = program_mut(&mut loaded.bpf)?;

        let mut links = Vec::with_capacity(cfg.interfaces.len());
        let mut attachments = Vec::with_capacity(cfg.interfaces.len());
        for interface in &cfg.interfaces {
            match attach(program, interface, cfg.mode) {
                Ok((link, mode)) => {
                    links.push(link);
                    attachments.push(Attachment {
                        interface: interface.clone(),
                        mode,
                    });
                }
                Err(err) => {
                    // Detach what is attached so far before reporting.
                    for link in links {
                        let _ = program.detach(link);
                    }
                    return Err(err);
                }
            }
        }
        Ok(Xdp {
            links,
            loaded,
            attachments,
            top_k: cfg.top_k,
        })
    }

    /// The interfaces the program is attached to and how.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Instructions the verifier processed when loading (kernel 5.16+), for diagnostics.
    pub fn verified_instructions(&self) -> Option<u32> {
        self.loaded.verified_instructions
    }

    /// Reads all maps: totals summed over CPUs, the number of tracked sources and the top-K
    /// sources (by SYNs, then packets). Costs two syscalls per tracked source.
    pub fn snapshot(&self) -> XdpSnapshot {
        self.loaded.snapshot(self.top_k)
    }
}

impl Drop for Xdp {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        if let Ok(program) = program_mut(&mut self.loaded.bpf) {
            for link in links {
                if let Err(err) = program.detach(link) {
                    tracing::warn!(%err, "detaching XDP program");
                }
            }
        }
        // Anything left (links, program, maps) is closed when `loaded.bpf` drops.
    }
}

impl Loaded {
    /// Creates the maps (sized from `cfg.max_sources`), fills config and allow-list, loads
    /// the program through the verifier. Attaches nothing.
    fn load(cfg: &XdpConfig, ports: &[u16]) -> Result<Loaded, XdpError> {
        let allow = cfg.allow_prefixes()?;
        let prog_config = program_config(cfg, ports)?;
        let mut bpf = EbpfLoader::new()
            .map_max_entries(maps::MAP_SOURCES, cfg.max_sources)
            .map_max_entries(maps::MAP_SYN_RATE, cfg.max_sources)
            .load(PROGRAM_OBJECT)
            .map_err(XdpError::from_ebpf)?;

        let mut config: Array<MapData, ProgConfig> = open_map(&mut bpf, maps::MAP_CONFIG)?;
        config
            .set(0, prog_config, 0)
            .map_err(|source| map_err(maps::MAP_CONFIG, source))?;
        let mut allow_map: LpmTrie<MapData, LpmAddr, u8> = open_map(&mut bpf, maps::MAP_ALLOW)?;
        for prefix in &allow {
            let key = Key::new(
                prefix.len,
                LpmAddr {
                    addr: prefix.addr.octets(),
                },
            );
            allow_map
                .insert(&key, 1, 0)
                .map_err(|source| map_err(maps::MAP_ALLOW, source))?;
        }
        let totals = open_map(&mut bpf, maps::MAP_TOTALS)?;
        let sources = open_map(&mut bpf, maps::MAP_SOURCES)?;

        let program = program_mut(&mut bpf)?;
        program.load().map_err(XdpError::from_program_load)?;
        let verified_instructions = program
            .info()
            .ok()
            .and_then(|info| info.verified_instruction_count());
        Ok(Loaded {
            totals,
            sources,
            bpf,
            max_sources: cfg.max_sources,
            verified_instructions,
        })
    }

    fn snapshot(&self, top_k: usize) -> XdpSnapshot {
        let mut snap = XdpSnapshot::default();
        match self.totals.get(&0, 0) {
            Ok(per_cpu) => per_cpu.iter().for_each(|c| snap.totals.add(&counters(c))),
            Err(err) => {
                tracing::debug!(%err, "reading XDP totals");
                snap.read_errors += 1;
            }
        }
        // An LRU map can evict or insert while it is walked, and a walk whose current key was
        // evicted restarts from the first key: bound it and deduplicate.
        let bound = (self.max_sources as usize)
            .saturating_mul(2)
            .saturating_add(16);
        let mut seen: HashMap<SrcKey, XdpCounters> = HashMap::new();
        for item in self.sources.iter().take(bound) {
            match item {
                Ok((key, per_cpu)) => {
                    let mut sum = XdpCounters::default();
                    per_cpu.iter().for_each(|c| sum.add(&counters(c)));
                    seen.insert(key, sum);
                }
                Err(err) => {
                    tracing::debug!(%err, "reading XDP sources");
                    snap.read_errors += 1;
                }
            }
        }
        snap.tracked_sources = seen.len() as u64;
        let mut all: Vec<SourceStats> = seen
            .into_iter()
            .map(|(key, counters)| SourceStats {
                source: display_addr(&key),
                counters,
            })
            .collect();
        if all.len() > top_k {
            all.select_nth_unstable_by(top_k, snapshot::busiest_first);
            all.truncate(top_k);
        }
        all.sort_by(snapshot::busiest_first);
        snap.top = all;
        snap
    }
}

fn program_config(cfg: &XdpConfig, ports: &[u16]) -> Result<ProgConfig, XdpError> {
    if ports.is_empty() || ports.len() > MAX_PORTS || ports.contains(&0) {
        return Err(XdpError::Config {
            field: "listener ports",
            message: format!("XDP watches 1..={MAX_PORTS} nonzero ports, got {ports:?}"),
        });
    }
    let mut out = ProgConfig {
        syn_rate_limit: cfg.syn_rate_limit,
        ..ProgConfig::default()
    };
    out.ports[..ports.len()].copy_from_slice(ports);
    out.port_count = ports.len() as u32;
    Ok(out)
}

fn attach(
    program: &mut aya::programs::Xdp,
    interface: &str,
    mode: XdpMode,
) -> Result<(XdpLinkId, AttachMode), XdpError> {
    let attempts = AttachMode::attempts(mode);
    let tried = match mode {
        XdpMode::Auto => "driver, then skb",
        XdpMode::Driver => "driver",
        XdpMode::Skb => "skb",
    };
    let mut last = None;
    for &attempt in attempts {
        match program.attach(interface, attempt.aya()) {
            Ok(link) => {
                tracing::info!(interface, mode = attempt.as_str(), "XDP attached");
                return Ok((link, attempt));
            }
            Err(err) => {
                let err = XdpError::from_attach(interface, tried, err);
                if matches!(
                    err,
                    XdpError::PermissionDenied { .. } | XdpError::InterfaceMissing { .. }
                ) {
                    return Err(err);
                }
                tracing::warn!(interface, mode = attempt.as_str(), %err, "XDP attach failed");
                last = Some(err);
            }
        }
    }
    Err(last.unwrap_or_else(|| XdpError::Config {
        field: "xdp.mode",
        message: "no attach mode to try".into(),
    }))
}

fn program_mut(bpf: &mut Ebpf) -> Result<&mut aya::programs::Xdp, XdpError> {
    let program = bpf
        .program_mut(maps::PROGRAM)
        .ok_or_else(|| XdpError::Load(format!("program {} missing", maps::PROGRAM).into()))?;
    program
        .try_into()
        .map_err(|err: aya::programs::ProgramError| XdpError::Load(Box::new(err)))
}

fn open_map<M>(bpf: &mut Ebpf, name: &'static str) -> Result<M, XdpError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = bpf
        .take_map(name)
        .ok_or_else(|| XdpError::Load(format!("map {name} missing from the object").into()))?;
    M::try_from(map).map_err(|source| map_err(name, source))
}

fn map_err(map: &'static str, source: aya::maps::MapError) -> XdpError {
    XdpError::Map { map, source }
}

fn counters(c: &Counters) -> XdpCounters {
    XdpCounters {
        syn: c.syn,
        packets: c.packets,
        bytes: c.bytes,
        syn_dropped: c.syn_dropped,
    }
}

/// IPv4-mapped sources are shown as IPv4.
fn display_addr(key: &SrcKey) -> IpAddr {
    let v6 = key.ip();
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn xdp_is_send_and_sync() {
        assert_send_sync::<Xdp>();
    }

    #[test]
    fn object_is_embedded() {
        assert_eq!(&PROGRAM_OBJECT[..4], b"\x7fELF");
    }

    #[test]
    fn ports_are_bounded() {
        let cfg = XdpConfig::default();
        assert!(program_config(&cfg, &[]).is_err());
        assert!(program_config(&cfg, &[0]).is_err());
        assert!(program_config(&cfg, &[1883; 17]).is_err());
        let p = program_config(&cfg, &[1883, 8883]).unwrap();
        assert_eq!((p.port_count, &p.ports[..3]), (2, &[1883, 8883, 0][..]));
    }

    #[test]
    fn missing_interface_is_reported_before_loading() {
        let cfg = XdpConfig {
            enabled: true,
            interfaces: vec!["hxnone0".into()],
            ..XdpConfig::default()
        };
        let err = Xdp::start(&cfg, &[1883]).unwrap_err();
        assert!(
            matches!(err, XdpError::InterfaceMissing { ref interface } if interface == "hxnone0")
        );
    }

    #[test]
    fn mapped_v4_shown_as_v4() {
        let key = SrcKey {
            addr: "::ffff:10.203.0.2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        };
        assert_eq!(display_addr(&key).to_string(), "10.203.0.2");
        let key = SrcKey {
            addr: "fd00:203::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        };
        assert_eq!(display_addr(&key).to_string(), "fd00:203::2");
    }
}

#[cfg(test)]
mod prog_tests;
