//! Test network: two namespaces joined by a veth pair, removed on drop (even when a test
//! fails). Needs root. Addresses exist only inside the namespaces: 10.203.N.0/24 and
//! fd00:203:N::/64, where N is unique per test network.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `cmd` and panics with its stderr on failure.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (iproute2 installed? root?)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn create(name: String) -> Netns {
        run(&["ip", "netns", "add", &name]);
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also removes the veth end inside it (and so its peer).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Namespace `a` (server side, interface `veth_a`) and `b` (clients, `veth_b`).
pub struct TestNet {
    /// Unique number of this network (third octet of the IPv4 addresses).
    pub n: u32,
    pub veth_a: String,
    pub veth_b: String,
    // Field order: `b` then `a` are dropped after everything above; both always run.
    pub a: Netns,
    pub b: Netns,
}

impl TestNet {
    /// Creates both namespaces, the veth pair and the addresses:
    /// a = 10.203.N.1, fd00:203:N::1; b = 10.203.N.2 and .3, fd00:203:N::2 and ::3.
    pub fn new() -> TestNet {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) + 1;
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        // Guards first, so a failure below still deletes what exists.
        let a = Netns::create(format!("hxdp-a-{tag}"));
        let b = Netns::create(format!("hxdp-b-{tag}"));
        let net = TestNet {
            n: n % 250,
            veth_a: format!("hxa{tag}"),
            veth_b: format!("hxb{tag}"),
            a,
            b,
        };
        let (na, nb) = (net.a.name.as_str(), net.b.name.as_str());
        let (va, vb) = (net.veth_a.as_str(), net.veth_b.as_str());
        run(&[
            "ip", "link", "add", va, "netns", na, "type", "veth", "peer", "name", vb, "netns", nb,
        ]);
        let n = net.n;
        for (ns, dev, hosts) in [(na, va, &[1][..]), (nb, vb, &[2, 3][..])] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            for h in hosts {
                run(&[
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("10.203.{n}.{h}/24"),
                    "dev",
                    dev,
                ]);
                run(&[
                    "ip",
                    "-n",
                    ns,
                    "-6",
                    "addr",
                    "add",
                    &format!("fd00:203:{n}::{h}/64"),
                    "dev",
                    dev,
                    "nodad",
                ]);
            }
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        net
    }

    pub fn v4(&self, host: u8) -> IpAddr {
        format!("10.203.{}.{host}", self.n).parse().unwrap()
    }

    pub fn v6(&self, host: u8) -> IpAddr {
        format!("fd00:203:{}::{host}", self.n).parse().unwrap()
    }
}

/// Runs `f` on a new thread that has joined namespace `ns` (only that thread moves).
/// Sockets created there stay in that namespace when used from other threads.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: plain syscall on a valid fd; it changes only this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}

/// TCP listeners that accept everything and echo what they read, until dropped.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Longest an echo server runs, whatever happens to the test.
const SERVER_MAX: Duration = Duration::from_secs(120);

impl EchoServer {
    /// Listens on every address in `addrs`; must be called inside the namespace.
    pub fn start(addrs: &[SocketAddr]) -> EchoServer {
        let listeners: Vec<TcpListener> = addrs
            .iter()
            .map(|a| {
                let l = TcpListener::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}"));
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || echo_loop(&listeners, &stop2));
        EchoServer {
            stop,
            thread: Some(thread),
        }
    }
}

fn echo_loop(listeners: &[TcpListener], stop: &AtomicBool) {
    let started = Instant::now();
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < SERVER_MAX {
        for l in listeners {
            while let Ok((s, _)) = l.accept() {
                s.set_nonblocking(true).unwrap();
                conns.push(s);
            }
        }
        conns.retain_mut(|c| match c.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => c.write_all(&buf[..n]).is_ok(),
            Err(e) => e.kind() == ErrorKind::WouldBlock,
        });
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A blocking connection from `src` to `dst`; call inside the client namespace.
pub fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    let sock = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(src, 0).into())
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    sock.connect_timeout(&dst.into(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {src} -> {dst}: {e}"));
    sock.into()
}

/// Starts `count` non-blocking connects from `src` to `dst` at once, waits up to `wait` for
/// them to complete, then closes them all. Returns how many were established. Call inside the
/// client namespace.
pub fn connect_burst(src: IpAddr, dst: SocketAddr, count: usize, wait: Duration) -> usize {
    let mut socks = Vec::with_capacity(count);
    for _ in 0..count {
        let sock = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
        sock.set_nonblocking(true).unwrap();
        sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
        match sock.connect(&dst.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => panic!("connect {src} -> {dst}: {e}"),
        }
        socks.push(sock);
    }
    let deadline = Instant::now() + wait;
    let mut connected = vec![false; count];
    while Instant::now() < deadline {
        for (i, s) in socks.iter().enumerate() {
            if !connected[i] && s.peer_addr().is_ok() {
                connected[i] = true;
            }
        }
        if connected.iter().all(|c| *c) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    connected.iter().filter(|c| **c).count()
}
