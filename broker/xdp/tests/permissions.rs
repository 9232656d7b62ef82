//! Without CAP_BPF / CAP_NET_ADMIN / CAP_PERFMON, starting XDP is a clean
//! `XdpError::PermissionDenied`, not a panic. Each case runs in a child process (this same
//! test binary, selected by an environment variable) that drops its privileges first.
//! Needs root (to have privileges to drop).

use std::process::Command;

use halyard_xdp::{Xdp, XdpConfig, XdpError};

const CHILD_ENV: &str = "HALYARD_XDP_TEST_CHILD";
const MARKER: &str = "child: permission denied as expected";

/// In the child: drop privileges the given way, then try to start on `lo`.
fn child(how: &str) {
    match how {
        "nobody" => become_nobody(),
        "capdrop" => drop_bpf_capabilities(),
        other => panic!("unknown child mode {other}"),
    }
    let cfg = XdpConfig {
        enabled: true,
        interfaces: vec!["lo".into()],
        ..XdpConfig::default()
    };
    match Xdp::start(&cfg, &[1883]) {
        Err(err @ XdpError::PermissionDenied { .. }) => {
            assert!(err.to_string().contains("CAP_BPF"), "{err}");
            println!("{MARKER}: {err}");
        }
        Err(other) => panic!("expected PermissionDenied, got: {other}"),
        Ok(_) => panic!("XDP started without privileges"),
    }
}

fn become_nobody() {
    // SAFETY: plain syscalls; glibc applies set*id to every thread of the process.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
        assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
        assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
    }
}

/// Stays uid 0 but clears CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN (which also
/// grants BPF) from this thread's effective and permitted sets, as in a restricted container.
fn drop_bpf_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data words, as the ABI requires; they
    // affect only the calling thread, which is the one that calls Xdp::start below.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        for cap in [12u32, 21, 38, 39] {
            let (word, bit) = ((cap / 32) as usize, cap % 32);
            data[word].effective &= !(1 << bit);
            data[word].permitted &= !(1 << bit);
        }
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

fn run_child(test: &str, how: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, how)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(MARKER),
        "child ({how}) failed: {}\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn as_nobody_start_is_permission_denied() {
    match std::env::var(CHILD_ENV) {
        Ok(how) => child(&how),
        Err(_) => run_child("as_nobody_start_is_permission_denied", "nobody"),
    }
}

#[test]
fn without_bpf_capabilities_start_is_permission_denied() {
    match std::env::var(CHILD_ENV) {
        Ok(how) => child(&how),
        Err(_) => run_child(
            "without_bpf_capabilities_start_is_permission_denied",
            "capdrop",
        ),
    }
}
