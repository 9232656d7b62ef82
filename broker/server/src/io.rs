//! I/O plumbing: choosing the compio driver (io_uring or epoll) and building the per-thread
//! SO_REUSEPORT listeners.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::{Runtime, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Backend;

/// Why the I/O layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// `io.backend = "uring"` but the kernel refused io_uring.
    #[error("io.backend = \"uring\" but io_uring is unavailable: {0}")]
    UringUnavailable(io::Error),
    /// The compio runtime could not be built.
    #[error("cannot start the {backend} runtime: {source}")]
    Runtime {
        /// The backend being built.
        backend: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// The name used in metrics and `/status` for a driver.
pub fn driver_name(t: DriverType) -> &'static str {
    match t {
        DriverType::IoUring => "uring",
        _ => "epoll",
    }
}

/// Checks whether the kernel lets this process create an io_uring (seccomp filters in
/// containers often refuse it with EPERM; old kernels answer ENOSYS).
pub fn probe_io_uring() -> io::Result<()> {
    // struct io_uring_params is 120 bytes; zeroed means "no flags".
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup reads and writes exactly one io_uring_params struct at the
    // pointer, which points at 120 writable, zeroed bytes that outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the kernel just returned to us and nothing else owns.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Builds a compio runtime for `backend`: `Epoll` forces polling, `Uring` forces io_uring
/// (failing if refused), `Auto` uses io_uring when the probe succeeds and the kernel
/// supports the operations compio needs, else epoll (logged once by the caller).
pub fn build_runtime(backend: Backend, entries: u32) -> Result<Runtime, IoError> {
    match build_runtime_with(backend, entries, true) {
        // A kernel before 5.19 refuses the cooperative task-run flags: without them.
        Err(IoError::Runtime { .. }) if backend != Backend::Epoll => {
            build_runtime_with(backend, entries, false)
        }
        built => built,
    }
}

/// [`build_runtime`], with io_uring's cooperative task running (`coop`) or without.
///
/// Without `IORING_SETUP_COOP_TASKRUN` the kernel runs a completion's task work by
/// interrupting the I/O thread (a signal-style notification, an inter-processor interrupt
/// when the completion came from another CPU) for every completion; with it the work waits
/// for the thread's next system call, which an I/O thread makes all the time (its sends and
/// its wait for completions). `IORING_SETUP_TASKRUN_FLAG` tells the runtime when such work
/// is pending.
fn build_runtime_with(backend: Backend, entries: u32, coop: bool) -> Result<Runtime, IoError> {
    let mut proactor = ProactorBuilder::new();
    proactor.capacity(entries);
    proactor.coop_taskrun(coop).taskrun_flag(coop);
    match backend {
        Backend::Epoll => {
            proactor.driver_type(DriverType::Poll);
        }
        Backend::Uring => {
            probe_io_uring().map_err(IoError::UringUnavailable)?;
            proactor.driver_type(DriverType::IoUring);
        }
        Backend::Auto => {
            if probe_io_uring().is_err() {
                proactor.driver_type(DriverType::Poll);
            }
        }
    }
    let rt = RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()
        .map_err(|source| IoError::Runtime {
            backend: backend.as_str(),
            source,
        })?;
    if backend == Backend::Uring && !rt.driver_type().is_iouring() {
        return Err(IoError::UringUnavailable(io::Error::other(
            "the runtime fell back to polling",
        )));
    }
    Ok(rt)
}

/// Binds `count` listening sockets on `addr` with SO_REUSEPORT, so the kernel spreads
/// incoming connections across the I/O threads. With port 0 the first socket picks the port
/// and the others bind to the same one. `defer_accept_secs` > 0 sets `TCP_DEFER_ACCEPT` (see
/// [`set_defer_accept`]).
pub fn bind_reuseport(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
    defer_accept_secs: u32,
) -> Result<Vec<std::net::TcpListener>, IoError> {
    let mut out = Vec::with_capacity(count);
    let mut bind_addr = addr;
    for _ in 0..count {
        let sock = reuseport_socket(bind_addr, backlog, defer_accept_secs).map_err(|source| {
            IoError::Bind {
                addr: bind_addr,
                source,
            }
        })?;
        let listener: std::net::TcpListener = sock.into();
        if bind_addr.port() == 0 {
            bind_addr = listener.local_addr().map_err(|source| IoError::Bind {
                addr: bind_addr,
                source,
            })?;
        }
        out.push(listener);
    }
    Ok(out)
}

fn reuseport_socket(addr: SocketAddr, backlog: u32, defer_accept_secs: u32) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies the listener's TCP
    // state into each child), which saves a setsockopt per connection on the accept path.
    sock.set_tcp_nodelay(true)?;
    sock.set_nonblocking(true)?;
    if defer_accept_secs > 0 {
        set_defer_accept(&sock, defer_accept_secs)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(sock)
}

/// Sets `TCP_DEFER_ACCEPT` on a listening socket: the kernel completes a connection's accept
/// only once its first data (the CONNECT) has arrived, so the accepted socket's first read
/// finds it and the handshake's last ACK wakes no one.
///
/// `secs` bounds the wait: the kernel rounds it up to its SYN-ACK retransmission schedule
/// (1, 3, 7, 15, 31 ... s after the SYN); a client that completed the handshake but sent
/// nothing is accepted anyway at the end of that period (its ACK of the last retransmitted
/// SYN-ACK), and from then on `mqtt.connect_timeout_secs` runs as for any connection. So a
/// silent client is closed after at most about the rounded `secs` plus the connect timeout;
/// meanwhile it holds only the kernel's request socket in the listener's SYN queue, no broker
/// state. One whose ACK never comes is dropped by the kernel without an accept.
pub fn set_defer_accept(sock: &Socket, secs: u32) -> io::Result<()> {
    let secs = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes at the pointer, which points
    // at a live c_int for the duration of the call; the descriptor is owned by `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds a plain listener (the admin server).
pub fn bind_plain(addr: SocketAddr) -> Result<std::net::TcpListener, IoError> {
    let sock = (|| {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(128)?;
        Ok::<_, io::Error>(sock)
    })()
    .map_err(|source| IoError::Bind { addr, source })?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuseport_listeners_share_one_port() {
        let ls = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3, 16, 0).unwrap();
        let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
    }

    #[test]
    fn accepted_connections_inherit_nodelay() {
        let ls = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1, 16, 0).unwrap();
        let _client = std::net::TcpStream::connect(ls[0].local_addr().unwrap()).unwrap();
        ls[0].set_nonblocking(false).unwrap();
        let (accepted, _) = ls[0].accept().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "replies are not held back by Nagle"
        );
    }

    #[test]
    fn epoll_runtime_is_polling() {
        let rt = build_runtime(Backend::Epoll, 64).unwrap();
        assert_eq!(driver_name(rt.driver_type()), "epoll");
    }

    #[test]
    fn auto_runtime_matches_the_probe() {
        let rt = build_runtime(Backend::Auto, 64).unwrap();
        if probe_io_uring().is_err() {
            assert_eq!(driver_name(rt.driver_type()), "epoll");
        }
    }
}
