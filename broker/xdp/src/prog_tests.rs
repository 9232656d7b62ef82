//! The program's parser and rate limit, driven with crafted frames through
//! `BPF_PROG_TEST_RUN` (no interface needed). Needs root (loads BPF).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{TestRun, TestRunOptions};

use super::*;

const PORT: u16 = 1883;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn eth(tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for tpid in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x07]); // TCI: VLAN 7
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn tcp(dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t
}

/// IPv4 header with `option_words` 4-byte option words (NOPs) and the given fragment field.
fn ipv4(src: Ipv4Addr, option_words: u8, frag_off: u16, proto: u8, payload: &[u8]) -> Vec<u8> {
    let ihl = 5 + option_words;
    let mut h = vec![0u8; usize::from(ihl) * 4];
    h[0] = 0x40 | ihl;
    let total = (h.len() + payload.len()) as u16;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[6..8].copy_from_slice(&frag_off.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&[192, 0, 2, 254]);
    for b in &mut h[20..] {
        *b = 1; // NOP option
    }
    h.extend_from_slice(payload);
    eth(&[], 0x0800, &h)
}

/// IPv6 header followed by `exts` (each: header type, bytes) then the payload of type `last`.
fn ipv6(src: Ipv6Addr, exts: &[(u8, Vec<u8>)], last: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = exts.get(i + 1).map_or(last, |(t, _)| *t);
        body.extend_from_slice(&b);
    }
    body.extend_from_slice(payload);
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    h[6] = exts.first().map_or(last, |(t, _)| *t);
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&"2001:db8::fe".parse::<Ipv6Addr>().unwrap().octets());
    h.extend_from_slice(&body);
    eth(&[], 0x86DD, &h)
}

/// Hop-by-hop / routing / destination options header of `units` extra 8-byte units.
fn opts_ext(kind: u8, units: u8) -> (u8, Vec<u8>) {
    let mut b = vec![0u8; (usize::from(units) + 1) * 8];
    b[1] = units;
    (kind, b)
}

fn frag_ext(offset_units: u16, more: bool) -> (u8, Vec<u8>) {
    let mut b = vec![0u8; 8];
    let field = (offset_units << 3) | u16::from(more);
    b[2..4].copy_from_slice(&field.to_be_bytes());
    (44, b)
}

fn run(loaded: &mut Loaded, frame: &[u8], repeat: u32) -> u32 {
    let program = program_mut(&mut loaded.bpf).unwrap();
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::new()
    };
    program.test_run(opts).unwrap().return_value
}

fn load(limit: u32, allow: &[&str]) -> Loaded {
    let cfg = XdpConfig {
        syn_rate_limit: limit,
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        max_sources: 1024,
        ..XdpConfig::default()
    };
    Loaded::load(&cfg, &[PORT, 8883]).unwrap_or_else(|e| panic!("{e}"))
}

fn counters_of(snap: &XdpSnapshot, ip: IpAddr) -> Option<XdpCounters> {
    snap.top.iter().find(|s| s.source == ip).map(|s| s.counters)
}

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)
}

/// What, source, frame, expected (SYNs, packets) or `None` when not counted.
type Case = (&'static str, IpAddr, Vec<u8>, Option<(u64, u64)>);

#[test]
fn parser_counts_exactly_the_watched_tcp_segments() {
    let mut loaded = load(0, &[]);
    let syn = tcp(PORT, SYN);
    let cases: Vec<Case> = vec![
        // (what, source, frame, expected (syn, packets) or not counted)
        (
            "plain v4 SYN",
            v4(1).into(),
            ipv4(v4(1), 0, 0, IPPROTO_TCP, &syn),
            Some((1, 1)),
        ),
        (
            "second port",
            v4(2).into(),
            ipv4(v4(2), 0, 0, IPPROTO_TCP, &tcp(8883, SYN)),
            Some((1, 1)),
        ),
        (
            "SYN+ACK is no SYN",
            v4(3).into(),
            ipv4(v4(3), 0, 0, IPPROTO_TCP, &tcp(PORT, SYN | ACK)),
            Some((0, 1)),
        ),
        (
            "v4 options",
            v4(4).into(),
            ipv4(v4(4), 10, 0, IPPROTO_TCP, &syn),
            Some((1, 1)),
        ),
        (
            "first fragment (MF)",
            v4(5).into(),
            ipv4(v4(5), 0, 0x2000, IPPROTO_TCP, &syn),
            Some((1, 1)),
        ),
        (
            "non-first fragment",
            v4(6).into(),
            ipv4(v4(6), 0, 0x2003, IPPROTO_TCP, &syn),
            None,
        ),
        (
            "unwatched port",
            v4(7).into(),
            ipv4(v4(7), 0, 0, IPPROTO_TCP, &tcp(80, SYN)),
            None,
        ),
        (
            "UDP",
            v4(8).into(),
            ipv4(v4(8), 0, 0, IPPROTO_UDP, &syn),
            None,
        ),
        (
            "truncated TCP",
            v4(9).into(),
            ipv4(v4(9), 0, 0, IPPROTO_TCP, &syn[..12]),
            None,
        ),
        (
            "ihl < 5",
            v4(10).into(),
            {
                let mut f = ipv4(v4(10), 0, 0, IPPROTO_TCP, &syn);
                f[14] = 0x44;
                f
            },
            None,
        ),
        (
            "802.1Q",
            v4(11).into(),
            {
                let inner = ipv4(v4(11), 0, 0, IPPROTO_TCP, &syn);
                eth(&[0x8100], 0x0800, &inner[14..])
            },
            Some((1, 1)),
        ),
        (
            "802.1ad + 802.1Q",
            v4(12).into(),
            {
                let inner = ipv4(v4(12), 1, 0, IPPROTO_TCP, &syn);
                eth(&[0x88A8, 0x8100], 0x0800, &inner[14..])
            },
            Some((1, 1)),
        ),
        (
            "three tags: beyond the bound",
            v4(13).into(),
            {
                let inner = ipv4(v4(13), 0, 0, IPPROTO_TCP, &syn);
                eth(&[0x88A8, 0x8100, 0x8100], 0x0800, &inner[14..])
            },
            None,
        ),
        (
            "plain v6 SYN",
            v6(1).into(),
            ipv6(v6(1), &[], IPPROTO_TCP, &syn),
            Some((1, 1)),
        ),
        (
            "v6 hop-by-hop + dest opts",
            v6(2).into(),
            ipv6(v6(2), &[opts_ext(0, 0), opts_ext(60, 2)], IPPROTO_TCP, &syn),
            Some((1, 1)),
        ),
        (
            "v6 routing + first fragment",
            v6(3).into(),
            ipv6(
                v6(3),
                &[opts_ext(43, 1), frag_ext(0, true)],
                IPPROTO_TCP,
                &syn,
            ),
            Some((1, 1)),
        ),
        (
            "v6 non-first fragment",
            v6(4).into(),
            ipv6(v6(4), &[frag_ext(185, false)], IPPROTO_TCP, &syn),
            None,
        ),
        (
            "v6 UDP",
            v6(5).into(),
            ipv6(v6(5), &[], IPPROTO_UDP, &syn),
            None,
        ),
        (
            "v6 five extension headers: beyond the bound",
            v6(6).into(),
            ipv6(
                v6(6),
                &[
                    opts_ext(0, 0),
                    opts_ext(60, 0),
                    opts_ext(60, 0),
                    opts_ext(60, 0),
                    opts_ext(60, 0),
                ],
                IPPROTO_TCP,
                &syn,
            ),
            None,
        ),
        (
            "v6 truncated extension header",
            v6(7).into(),
            {
                let mut f = ipv6(v6(7), &[opts_ext(60, 4)], IPPROTO_TCP, &syn);
                f.truncate(14 + 40 + 8);
                f
            },
            None,
        ),
        ("ARP", v4(14).into(), eth(&[], 0x0806, &[0u8; 28]), None),
        ("runt frame", v4(15).into(), vec![0u8; 14], None),
    ];
    for (what, _, frame, _) in &cases {
        assert_eq!(run(&mut loaded, frame, 1), XDP_PASS, "{what}");
    }
    let snap = loaded.snapshot(100);
    assert_eq!(snap.read_errors, 0);
    let mut want = XdpCounters::default();
    for (what, src, frame, expected) in &cases {
        let got = counters_of(&snap, *src);
        match expected {
            None => assert_eq!(got, None, "{what} was counted"),
            Some((syn, packets)) => {
                let c = got.unwrap_or_else(|| panic!("{what} not counted"));
                assert_eq!(
                    (c.syn, c.packets, c.bytes),
                    (*syn, *packets, frame.len() as u64),
                    "{what}"
                );
                assert_eq!(c.syn_dropped, 0, "{what}");
                want.add(&c);
            }
        }
    }
    assert_eq!(snap.totals, want);
    assert_eq!(
        snap.tracked_sources,
        cases.iter().filter(|c| c.3.is_some()).count() as u64
    );
}

#[test]
fn syns_over_the_limit_are_dropped_except_allow_listed() {
    let mut loaded = load(2, &["198.51.100.0/25", "2001:db8::/64"]);
    let syn = tcp(PORT, SYN);
    // 10 SYNs from one source in one test run (microseconds): the limit lets 2 through.
    let limited = Ipv4Addr::new(203, 0, 113, 9);
    assert_eq!(
        run(&mut loaded, &ipv4(limited, 0, 0, IPPROTO_TCP, &syn), 10),
        XDP_DROP
    );
    // Segments that are not SYNs are never limited.
    let ack = tcp(PORT, ACK);
    assert_eq!(
        run(&mut loaded, &ipv4(limited, 0, 0, IPPROTO_TCP, &ack), 5),
        XDP_PASS
    );
    // Allow-listed prefixes, v4 and v6.
    assert_eq!(
        run(&mut loaded, &ipv4(v4(100), 0, 0, IPPROTO_TCP, &syn), 10),
        XDP_PASS
    );
    assert_eq!(
        run(&mut loaded, &ipv6(v6(1), &[], IPPROTO_TCP, &syn), 10),
        XDP_PASS
    );
    // Just outside the v4 prefix: limited.
    assert_eq!(
        run(&mut loaded, &ipv4(v4(200), 0, 0, IPPROTO_TCP, &syn), 10),
        XDP_DROP
    );

    let snap = loaded.snapshot(100);
    let c = counters_of(&snap, limited.into()).unwrap();
    assert_eq!((c.syn, c.syn_dropped, c.packets), (10, 8, 15));
    let c = counters_of(&snap, v4(200).into()).unwrap();
    assert_eq!((c.syn, c.syn_dropped), (10, 8));
    for allowed in [IpAddr::from(v4(100)), v6(1).into()] {
        let c = counters_of(&snap, allowed).unwrap();
        assert_eq!((c.syn, c.syn_dropped), (10, 0), "{allowed}");
    }
    assert_eq!(snap.totals.syn_dropped, 16);
}

#[test]
fn verifier_accepts_with_bounded_work() {
    let loaded = load(10, &["10.0.0.0/8"]);
    let insns = loaded
        .verified_instructions
        .expect("kernel 5.16+ reports it");
    eprintln!("verifier processed {insns} instructions");
    assert!(insns > 0 && insns < 100_000, "{insns}");
}
