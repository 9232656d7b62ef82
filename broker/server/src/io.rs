//! I/O plumbing: choosing the compio driver (io_uring or epoll) and building the per-thread
//! SO_REUSEPORT listeners.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

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

/// Turns in a row in which [`block_on`] takes I/O readiness straight from the thread's own
/// epoll set instead of from compio's driver; the next turn goes through the driver, so
/// compio's own events (accepts, write readiness, timers, wakes from other threads) wait
/// at most this many turns.
pub const DIRECT_TURNS: u32 = 16;

/// Runs `future` to completion on `rt`, as `Runtime::block_on` does, with two changes for
/// a thread whose sockets are watched in an epoll set of its own (the epoll backend, see
/// `conn::park`), where each turn of compio's poll driver costs five system calls
/// (`timerfd_settime`, two `EPOLL_CTL_MOD`, `epoll_wait`, an eventfd `read`) plus the
/// re-arming of the nested set:
///
/// - tasks still ready after a run of the executor (a task that yielded, or more than
///   its batch) run again at once, where compio's `block_on` first polls the driver
///   without a timeout;
/// - when no task is ready, `direct` is asked first: it reads the thread's set without
///   waiting (one `epoll_wait`) and wakes the tasks with input; when it found any, their
///   tasks run without a turn of the driver. Either at most [`DIRECT_TURNS`] times in a
///   row;
/// - when nothing is ready there either, the driver is asked to wait at once: compio's
///   `block_on` first polls it without a timeout whenever a task was woken since its last
///   turn (it cannot tell a wake of a task that already ran from a new one), which is a
///   wasted turn after every burst of work. Here the wake flag is reset (`flush`) and the
///   tasks run once more, so a wake from another thread that came meanwhile is not missed
///   (it is in the executor's queue, or it writes the driver's notifier, which ends the
///   wait).
///
/// A panic leaves as from `Runtime::block_on`: the runtime (and its tasks) is dropped once
/// the unwinding is caught, then the panic goes on.
pub fn block_on<F: Future>(rt: Runtime, future: F, mut direct: impl FnMut() -> bool) -> F::Output {
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.enter(|| {
            let waker = rt.waker();
            let mut cx = std::task::Context::from_waker(&waker);
            let mut future = std::pin::pin!(future);
            let mut turns = 0;
            loop {
                if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                    rt.run();
                    return out;
                }
                let more = rt.run();
                if turns < DIRECT_TURNS && (more || direct()) {
                    turns += 1;
                    continue;
                }
                turns = 0;
                if more {
                    rt.poll_with(Some(std::time::Duration::ZERO));
                    continue;
                }
                rt.flush();
                if rt.run() {
                    rt.poll_with(Some(std::time::Duration::ZERO));
                } else {
                    rt.poll();
                }
            }
        })
    }));
    match res {
        Ok(out) => out,
        Err(payload) => {
            drop(rt);
            std::panic::resume_unwind(payload)
        }
    }
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

/// Most connections an I/O thread accepts in a row before it lets its other tasks run (the
/// connections just accepted among them); the rest of the accept queue is taken on the
/// accept task's next turn, without waiting for readiness again.
pub const ACCEPT_BURST: usize = 16;

/// One I/O thread's listening socket, accepted from with `accept4` directly.
///
/// compio's accept submits one operation per connection (an allocation, the operation's
/// state copied several times, a completion to route back: ~1.8k instructions per accept,
/// RESULTS.md session 11). Here the thread takes what the kernel's accept queue holds with
/// plain non-blocking `accept4` calls, and waits for readiness (one poll, armed only when
/// the queue is empty) only then. The accepted socket is made as compio's accept makes it:
/// close-on-exec, and non-blocking on the epoll backend (io_uring's operations do not need
/// it; the connection's direct reads and writes pass `MSG_DONTWAIT`).
pub struct Listener {
    fd: compio::driver::SharedFd<std::os::fd::OwnedFd>,
    flags: libc::c_int,
}

impl Listener {
    /// Takes over `listener` for the current runtime (`uring`: the thread's driver is
    /// io_uring). The listener is made non-blocking (an empty queue must not block the
    /// thread).
    pub fn new(listener: std::net::TcpListener, uring: bool) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        let flags = if uring {
            libc::SOCK_CLOEXEC
        } else {
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK
        };
        Ok(Listener {
            fd: compio::driver::SharedFd::new(std::os::fd::OwnedFd::from(listener)),
            flags,
        })
    }

    /// Accepts one connection if the queue holds one: `Ok(None)` when it is empty (wait
    /// with [`Self::readable`]). A connection that the peer aborted while it was queued is
    /// skipped; other errors (descriptor limits, memory) are returned.
    pub fn try_accept(&self) -> io::Result<Option<(compio::net::TcpStream, SocketAddr)>> {
        use std::os::fd::FromRawFd as _;
        let raw = self.fd.as_raw_fd();
        loop {
            // SAFETY: `try_init` hands `accept4` a zeroed storage of its full size and the
            // length to update, as accept4 expects; `raw` is the listener's descriptor,
            // open while `self.fd` lives.
            let accepted = unsafe {
                socket2::SockAddr::try_init(|storage, len| {
                    let fd = libc::accept4(raw, storage.cast(), len, self.flags);
                    if fd < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(fd)
                    }
                })
            };
            match accepted {
                Ok((fd, addr)) => {
                    // SAFETY: `fd` was just returned by accept4 and is owned by no one else.
                    let stream = unsafe { compio::net::TcpStream::from_raw_fd(fd) };
                    // A TCP listener's peers are IPv4 or IPv6 addresses.
                    let Some(peer) = addr.as_socket() else {
                        continue;
                    };
                    return Ok(Some((stream, peer)));
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(None),
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                    _ => return Err(e),
                },
            }
        }
    }

    /// Resolves once the accept queue holds a connection (or the listener failed; the
    /// next [`Self::try_accept`] reports it).
    pub async fn readable(&self) {
        let poll = compio::driver::op::PollOnce::new(
            self.fd.clone(),
            compio::driver::op::Interest::Readable,
        );
        let compio::BufResult(_, _) = compio::runtime::submit(poll).await;
    }
}

/// Least time between two warnings about failed accepts of one accept loop; the failures in
/// between are summed up in the next warning.
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// Failed accepts of one accept loop (the MQTT listeners', the admin server's), logged at
/// most once per [`ACCEPT_WARN_EVERY`]: a full descriptor table fails every retry, many
/// times a second.
pub struct AcceptFailures {
    /// The listener, for the log.
    listener: &'static str,
    /// When the last warning was logged.
    warned: Option<Instant>,
    /// Failures since then.
    since: u64,
}

impl AcceptFailures {
    /// No failure yet, on `listener` (named in the warnings).
    pub fn new(listener: &'static str) -> Self {
        AcceptFailures {
            listener,
            warned: None,
            since: 0,
        }
    }

    /// Logs `e`, or counts it for the next warning within [`ACCEPT_WARN_EVERY`] of the last.
    /// True when the process was out of descriptors (`EMFILE`, or `ENFILE` for the system's
    /// file table): the caller counts that limit.
    pub fn record(&mut self, e: &io::Error, now: Instant) -> bool {
        let out_of_files = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        if self
            .warned
            .is_some_and(|at| now.duration_since(at) < ACCEPT_WARN_EVERY)
        {
            self.since += 1;
            return out_of_files;
        }
        tracing::warn!(
            listener = self.listener,
            error = %e,
            failed_since_last_warning = self.since,
            "accept failed; connections wait in the listen queue"
        );
        self.warned = Some(now);
        self.since = 0;
        out_of_files
    }
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

    /// `Listener`: an empty queue answers `None` at once (never blocks, on either backend);
    /// readiness resolves once a connection waits; each queued connection comes out once,
    /// with its peer's address, close-on-exec, and non-blocking exactly on epoll.
    #[test]
    fn listener_takes_the_queue_and_reports_empty() {
        // `Auto`: io_uring where the kernel allows it (the flags are checked against the
        // driver the runtime got).
        for backend in [Backend::Epoll, Backend::Auto] {
            let rt = build_runtime(backend, 64).unwrap();
            let uring = rt.driver_type().is_iouring();
            let std_l = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1, 64, 0)
                .unwrap()
                .remove(0);
            let addr = std_l.local_addr().unwrap();
            rt.block_on(async move {
                let l = Listener::new(std_l, uring).unwrap();
                assert!(l.try_accept().unwrap().is_none(), "empty queue");
                let clients: Vec<std::net::TcpStream> = (0..5)
                    .map(|_| std::net::TcpStream::connect(addr).unwrap())
                    .collect();
                l.readable().await;
                let mut peers = Vec::new();
                while peers.len() < clients.len() {
                    match l.try_accept().unwrap() {
                        Some((stream, peer)) => {
                            let fl = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_GETFL) };
                            let fd = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_GETFD) };
                            assert_eq!(fl & libc::O_NONBLOCK != 0, !uring, "{backend:?}");
                            assert!(fd & libc::FD_CLOEXEC != 0, "{backend:?}");
                            peers.push(peer);
                        }
                        None => l.readable().await,
                    }
                }
                assert!(l.try_accept().unwrap().is_none(), "queue taken");
                let mut want: Vec<SocketAddr> =
                    clients.iter().map(|c| c.local_addr().unwrap()).collect();
                want.sort();
                peers.sort();
                assert_eq!(peers, want, "{backend:?}");
            });
        }
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

    /// `direct` never stops finding work: the driver still gets its turn every
    /// `DIRECT_TURNS` turns, so a compio timer (fired only by a turn of the driver) ends.
    /// Run on a thread of its own and bounded in time, so that a loop that starves the
    /// driver fails the test instead of hanging it.
    #[test]
    fn block_on_gives_the_driver_its_turn() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = build_runtime(Backend::Epoll, 64).unwrap();
            let calls = std::cell::Cell::new(0u32);
            block_on(
                rt,
                compio::time::sleep(std::time::Duration::from_millis(5)),
                || {
                    calls.set(calls.get() + 1);
                    true
                },
            );
            let _ = done.send(calls.get());
        });
        let calls = finished
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the 5 ms timer never fired: the driver got no turn");
        assert!(calls > 0, "direct was asked while nothing was ready");
    }

    /// What `direct` wakes runs without a turn of the driver; a value from another thread
    /// (a wake through the driver's notifier) arrives too.
    #[test]
    fn block_on_runs_what_direct_wakes_and_hears_other_threads() {
        let rt = build_runtime(Backend::Epoll, 64).unwrap();
        let flag = std::rc::Rc::new(std::cell::Cell::new(false));
        let waker: std::rc::Rc<std::cell::RefCell<Option<std::task::Waker>>> = Default::default();
        let (tx, rx) = flume::bounded::<u32>(1);
        let (f, w) = (flag.clone(), waker.clone());
        let got = block_on(
            rt,
            async move {
                std::future::poll_fn(|cx| {
                    if f.get() {
                        return std::task::Poll::Ready(());
                    }
                    *w.borrow_mut() = Some(cx.waker().clone());
                    std::task::Poll::Pending
                })
                .await;
                std::thread::spawn(move || tx.send(7).unwrap());
                rx.recv_async().await.unwrap()
            },
            || match waker.borrow_mut().take() {
                Some(w) => {
                    flag.set(true);
                    w.wake();
                    true
                }
                None => false,
            },
        );
        assert_eq!(got, 7);
        assert!(flag.get());
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
