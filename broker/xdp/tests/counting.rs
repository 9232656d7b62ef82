//! XDP counts SYNs, packets and bytes per source on a veth in a network namespace.
//! Needs root (creates namespaces, loads BPF).

mod common;

use std::net::SocketAddr;

use common::{EchoServer, TestNet, connect_from, in_netns};
use halyard_xdp::{AttachMode, Xdp, XdpConfig, XdpMode, render_top};

const PORT: u16 = 18830;
const UNWATCHED_PORT: u16 = 18831;

#[test]
fn fifty_connections_are_fifty_syns_v4_and_v6() {
    let net = TestNet::new();
    let (a4, a6) = (net.v4(1), net.v6(1));
    let cfg = XdpConfig {
        enabled: true,
        interfaces: vec![net.veth_a.clone()],
        mode: XdpMode::Auto,
        ..XdpConfig::default()
    };
    let (xdp, _server) = in_netns(&net.a, || {
        let xdp = Xdp::start(&cfg, &[PORT]).unwrap_or_else(|e| panic!("{e}"));
        let server = EchoServer::start(&[
            SocketAddr::new(a4, PORT),
            SocketAddr::new(a6, PORT),
            SocketAddr::new(a4, UNWATCHED_PORT),
        ]);
        (xdp, server)
    });
    assert_eq!(xdp.attachments().len(), 1);
    assert_eq!(xdp.attachments()[0].interface, net.veth_a);
    // veth supports native XDP, so auto mode must not have fallen back.
    assert_eq!(xdp.attachments()[0].mode, AttachMode::Driver);
    eprintln!(
        "verifier processed {:?} instructions",
        xdp.verified_instructions()
    );

    let (b4, b6) = (net.v4(2), net.v6(2));
    in_netns(&net.b, || {
        let mut open = Vec::new();
        for _ in 0..50 {
            open.push(connect_from(b4, SocketAddr::new(a4, PORT)));
            open.push(connect_from(b6, SocketAddr::new(a6, PORT)));
        }
        // Not counted: another port.
        for _ in 0..5 {
            drop(connect_from(b4, SocketAddr::new(a4, UNWATCHED_PORT)));
        }
        drop(open);
    });

    let snap = xdp.snapshot();
    eprintln!("{}", render_top(&snap));
    assert_eq!(snap.read_errors, 0);
    assert_eq!(snap.totals.syn, 100);
    assert_eq!(snap.totals.syn_dropped, 0);
    assert_eq!(snap.tracked_sources, 2);
    for src in [b4, b6] {
        let s = snap
            .top
            .iter()
            .find(|s| s.source == src)
            .unwrap_or_else(|| panic!("{src} missing from {snap:?}"));
        assert_eq!(s.counters.syn, 50, "{src}");
        assert_eq!(s.counters.syn_dropped, 0, "{src}");
        // SYN + ACK of the handshake at least, and FIN/ACK on close.
        assert!(s.counters.packets >= 150, "{src}: {:?}", s.counters);
        assert!(
            s.counters.bytes >= s.counters.packets * 54,
            "{src}: {:?}",
            s.counters
        );
    }
    let table = render_top(&snap);
    assert!(table.lines().any(|l| {
        l.split_whitespace()
            .take(2)
            .eq([b4.to_string().as_str(), "50"])
    }));
    assert!(table.lines().any(|l| {
        l.split_whitespace()
            .take(2)
            .eq([b6.to_string().as_str(), "50"])
    }));

    // Detach on drop: the interface has no XDP program left.
    assert!(
        xdp_prog_shown(&net),
        "ip link shows no XDP program while attached"
    );
    drop(xdp);
    assert!(
        !xdp_prog_shown(&net),
        "XDP program still attached after drop"
    );
}

fn xdp_prog_shown(net: &TestNet) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-n", &net.a.name, "link", "show", &net.veth_a])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn top_k_bounds_the_sources_listed() {
    let net = TestNet::new();
    let a4 = net.v4(1);
    let cfg = XdpConfig {
        enabled: true,
        interfaces: vec![net.veth_a.clone()],
        mode: XdpMode::Skb,
        top_k: 1,
        ..XdpConfig::default()
    };
    let (xdp, _server) = in_netns(&net.a, || {
        let xdp = Xdp::start(&cfg, &[PORT]).unwrap_or_else(|e| panic!("{e}"));
        (xdp, EchoServer::start(&[SocketAddr::new(a4, PORT)]))
    });
    assert_eq!(xdp.attachments()[0].mode, AttachMode::Skb);
    in_netns(&net.b, || {
        for _ in 0..3 {
            drop(connect_from(net.v4(2), SocketAddr::new(a4, PORT)));
        }
        drop(connect_from(net.v4(3), SocketAddr::new(a4, PORT)));
    });
    let snap = xdp.snapshot();
    assert_eq!(snap.tracked_sources, 2);
    assert_eq!(snap.totals.syn, 4);
    assert_eq!(snap.top.len(), 1);
    assert_eq!(snap.top[0].source, net.v4(2));
    assert_eq!(snap.top[0].counters.syn, 3);
}

#[test]
fn missing_interface_is_its_own_error() {
    let net = TestNet::new();
    let cfg = XdpConfig {
        enabled: true,
        // Exists in namespace b only.
        interfaces: vec![net.veth_b.clone()],
        ..XdpConfig::default()
    };
    let err = in_netns(&net.a, || Xdp::start(&cfg, &[PORT])).unwrap_err();
    assert!(
        matches!(err, halyard_xdp::XdpError::InterfaceMissing { ref interface } if *interface == net.veth_b),
        "{err}"
    );
}

#[test]
fn auto_mode_falls_back_to_skb_where_the_driver_has_no_xdp() {
    let net = TestNet::new();
    // The loopback device has no native XDP support (no dummy driver on every kernel).
    let lo = "lo".to_owned();
    let cfg = |mode| XdpConfig {
        enabled: true,
        interfaces: vec![net.veth_a.clone(), lo.clone()],
        mode,
        ..XdpConfig::default()
    };
    let xdp = in_netns(&net.a, || Xdp::start(&cfg(XdpMode::Auto), &[PORT]))
        .unwrap_or_else(|e| panic!("{e}"));
    let modes: Vec<(&str, AttachMode)> = xdp
        .attachments()
        .iter()
        .map(|a| (a.interface.as_str(), a.mode))
        .collect();
    assert_eq!(
        modes,
        [
            (net.veth_a.as_str(), AttachMode::Driver),
            (lo.as_str(), AttachMode::Skb)
        ]
    );
    drop(xdp);

    // Driver mode only: loopback refuses, and nothing stays attached to the veth.
    let err = in_netns(&net.a, || Xdp::start(&cfg(XdpMode::Driver), &[PORT])).unwrap_err();
    assert!(
        matches!(err, halyard_xdp::XdpError::Attach { ref interface, .. } if *interface == lo),
        "{err}"
    );
    assert!(!xdp_prog_shown(&net));
}
