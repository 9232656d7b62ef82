//! Test harness: runs the `halyard` binary on free loopback ports with a chosen backend.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `halyard run` child process, stopped with SIGTERM on drop.
pub struct Broker {
    child: Option<Child>,
    /// MQTT port.
    pub port: u16,
    /// Admin HTTP port.
    pub admin_port: u16,
}

/// A loopback port that no other test of this process got (SO_REUSEPORT would let two brokers
/// share one): the integration tests' helper.
pub use halyard_tests::broker::free_port;

impl Broker {
    /// Starts a broker with `backend` ("uring" or "epoll") and 2 I/O threads, plus `extra`
    /// environment overrides; waits until it accepts connections.
    pub fn start(backend: &str, extra: &[(&str, &str)]) -> Broker {
        let port = free_port();
        let admin_port = free_port();
        let admin_port = extra
            .iter()
            .find(|(k, _)| *k == "HALYARD_ADMIN__BIND")
            .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
            .unwrap_or(admin_port);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_halyard"));
        cmd.arg("run")
            .env("HALYARD_LISTENERS__TCP__BIND", format!("127.0.0.1:{port}"))
            .env("HALYARD_ADMIN__BIND", format!("127.0.0.1:{admin_port}"))
            .env("HALYARD_IO__BACKEND", backend)
            .env("HALYARD_IO__THREADS", "2")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn halyard");
        let broker = Broker {
            child: Some(child),
            port,
            admin_port,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "broker did not start on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// GET `path` on the admin server; returns the body.
    pub fn admin_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    /// Sends SIGTERM and waits for the exit status code.
    pub fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        stop(&mut child)
    }
}

fn stop(child: &mut Child) -> Option<i32> {
    let pid = libc::pid_t::try_from(child.id()).ok()?;
    // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

/// Connects with a hand-built MQTT 5.0 CONNECT (clean start, keep alive 60 s) and reads the
/// CONNACK; panics unless it is a success.
pub fn raw_v5_connect(port: u16, client_id: &str) -> TcpStream {
    use std::io::{Read, Write};
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0];
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, u8::try_from(body.len()).unwrap()];
    packet.extend_from_slice(&body);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&packet).unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x20, "expected CONNACK");
    let mut rest = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut rest).unwrap();
    assert_eq!(rest[1], 0x00, "CONNACK reason");
    s
}

/// Reads packets until EOF and returns the reason code of the first DISCONNECT
/// (0x00 when it has no body).
pub fn read_disconnect_reason(mut s: TcpStream) -> Option<u8> {
    use std::io::Read;
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let mut i = 0;
    while i + 1 < all.len() {
        let kind = all[i];
        let len = usize::from(all[i + 1]);
        if kind == 0xE0 {
            return Some(if len == 0 { 0 } else { *all.get(i + 2)? });
        }
        i += 2 + len;
    }
    None
}
