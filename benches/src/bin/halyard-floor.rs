//! `halyard-floor PORT`: the least any MQTT broker does per connection, as a reference for the
//! connect-rate figures of `just bench-floor` (benches/floor.sh). Not a broker: one thread,
//! loopback only, no session, no limits, no parsing beyond the fixed header.
//!
//! Per connection it makes the system calls a broker cannot avoid: `accept4` (with the peer
//! address), one `recv` that finds the CONNECT (the listener sets `TCP_DEFER_ACCEPT` and
//! `TCP_NODELAY` as Halyard's does), one `send` of the CONNACK, one `epoll_ctl` to watch the
//! socket for the rest of its life (edge-triggered); a SUBSCRIBE gets its SUBACK (granted QoS
//! 0), a PINGREQ its PINGRESP, a DISCONNECT or the end of the stream closes the socket.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{IntoRawFd, RawFd};

fn main() {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: halyard-floor PORT (listens on 127.0.0.1:PORT)");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(port) {
        eprintln!("halyard-floor: {e}");
        std::process::exit(1);
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn run(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
    listener.set_nonblocking(true)?;
    let l = listener.into_raw_fd();
    setsockopt(l, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    setsockopt(l, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1)?;
    // SAFETY: plain system calls on descriptors this process owns; every buffer passed is
    // live and of the length given.
    unsafe {
        check(libc::listen(l, 4096))?;
        let ep = check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: l as u64,
        };
        check(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, l, &mut ev))?;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as libc::c_int, -1);
            let Ok(n) = usize::try_from(n) else {
                continue; // EINTR
            };
            for e in &events[..n] {
                let fd = e.u64 as RawFd;
                if fd != l {
                    serve(fd);
                    continue;
                }
                loop {
                    let mut addr: libc::sockaddr_storage = std::mem::zeroed();
                    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    let c = libc::accept4(
                        l,
                        (&raw mut addr).cast(),
                        &mut len,
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    );
                    if c < 0 {
                        break;
                    }
                    if serve(c) {
                        let mut ce = libc::epoll_event {
                            events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
                            u64: c as u64,
                        };
                        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c, &mut ce);
                    }
                }
            }
        }
    }
}

/// Reads what `fd` holds and answers it; false once the socket is closed.
fn serve(fd: RawFd) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is live and writable for its whole length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                return true;
            }
            close(fd);
            return false;
        };
        if n == 0 {
            close(fd);
            return false;
        }
        let mut i = 0;
        while i + 2 <= n {
            let kind = buf[i] >> 4;
            let (mut len, mut shift, mut j) = (0usize, 0, i + 1);
            while j < n && shift <= 21 {
                len |= usize::from(buf[j] & 0x7f) << shift;
                shift += 7;
                j += 1;
                if buf[j - 1] & 0x80 == 0 {
                    break;
                }
            }
            let reply: &[u8] = match kind {
                1 => &[0x20, 2, 0, 0],
                8 if j + 1 < n => &[0x90, 3, buf[j], buf[j + 1], 0],
                12 => &[0xd0, 0],
                14 => {
                    close(fd);
                    return false;
                }
                _ => &[],
            };
            if !reply.is_empty() {
                // SAFETY: `reply` is live for the call.
                unsafe { libc::send(fd, reply.as_ptr().cast(), reply.len(), libc::MSG_NOSIGNAL) };
            }
            i = j + len;
        }
        if n < buf.len() {
            return true;
        }
    }
}

fn close(fd: RawFd) {
    // SAFETY: `fd` is an accepted socket this process owns and closes once.
    unsafe { libc::close(fd) };
}
