//! Test harness: runs the `halyard` binary on free loopback ports with a chosen backend.

use std::net::{TcpListener, TcpStream};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// Starts a broker with `backend` ("uring" or "epoll") and 2 I/O threads, plus `extra`
    /// environment overrides; waits until it accepts connections.
    pub fn start(backend: &str, extra: &[(&str, &str)]) -> Broker {
        let port = free_port();
        let admin_port = free_port();
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
