//! Reading a connection's socket without a buffer per idle connection.
//!
//! The default path, on either backend: the task waits for readability (a poll operation,
//! which holds no buffer), then reads once, without blocking, into its I/O thread's shared
//! read buffer and hands the bytes to the session at once. An idle connection therefore
//! costs no read buffer.
//!
//! On io_uring that costs a poll completion plus a `recv` syscall per read, where a
//! completion-based receive costs one completion. So a connection that streams (several
//! reads in a row that each found data soon after the previous one, see [`BUSY_STREAK`] and
//! [`BUSY_GAP`]) switches to a receive operation with its own buffer
//! (`io.busy_read_buffer_bytes`), submitted again after each completion. It goes back to the
//! poll path (and frees the buffer) once a receive completes after a quiet gap. A receive in
//! flight is never cancelled while the connection lives: the kernel may already have moved
//! bytes into its buffer, and cancelling would lose them. So a busy connection that falls
//! silent keeps its buffer until its next bytes (or its close); at most `io.max_busy_readers`
//! connections per thread hold such a buffer (hitting it counts
//! `halyard_limit_hits_total{limit="max_busy_readers"}` and keeps the connection on the
//! poll path). epoll always uses the poll path: there a receive operation is readiness plus
//! `recv` anyway.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use compio::BufResult;
use compio::buf::IntoInner;
use compio::driver::SharedFd;
use compio::driver::op::{Interest, PollOnce, Recv, RecvFlags};
use compio::driver::{PollFirst, ToSharedFd};
use compio::net::TcpStream;
use compio::runtime::{Submit, submit};

use crate::engine::thread::ThreadCtx;
use crate::metrics::Limit;

/// Data reads in a row, each within [`BUSY_GAP`] of the previous one, after which an
/// io_uring connection reads with its own receive operation.
pub const BUSY_STREAK: u8 = 4;

/// Longest quiet time between two reads of a busy connection; a longer one sends it back
/// to the poll path.
pub const BUSY_GAP: Duration = Duration::from_millis(50);

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadNow<'a> {
    /// These bytes arrived.
    Data(&'a [u8]),
    /// Nothing to read yet (wait for readability again).
    WouldBlock,
    /// End of stream or a socket error: no more input.
    Closed,
}

/// The receive operation of a busy connection.
type BusyOp = Recv<Vec<u8>, SharedFd<socket2::Socket>>;

/// A busy connection's receive: in flight, or completed and not yet consumed.
struct Busy {
    /// The receive in flight (it owns the buffer meanwhile).
    recv: Option<Submit<BusyOp>>,
    /// The buffer while no receive is in flight.
    buf: Vec<u8>,
    /// The result of the completed receive, until [`Reader::read`] consumes it.
    done: Option<io::Result<usize>>,
    /// Go back to the poll path once no receive is in flight.
    stop: bool,
    /// This thread's count of busy connections (decremented on drop).
    count: Rc<Cell<usize>>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.count.set(self.count.get().saturating_sub(1));
    }
}

/// The readiness poll of an idle connection.
type PollOp = PollOnce<SharedFd<socket2::Socket>>;

/// The read side of one connection's socket.
pub struct Reader {
    /// The socket (shared with its stream).
    fd: SharedFd<socket2::Socket>,
    /// The readiness poll in flight, kept armed across wake-ups. (compio's `PollFd` would
    /// also carry an unused write-readiness slot in every idle connection.)
    poll: Option<Submit<PollOp>>,
    /// The last read filled the buffer: more may be waiting, read again before polling.
    more: bool,
    /// io_uring: may switch to a receive operation when busy.
    uring: bool,
    /// Data reads in a row, each within [`BUSY_GAP`] of the previous one.
    streak: u8,
    /// When the last read found data.
    last_data: Instant,
    /// Set while the connection reads with its own receive (io_uring only).
    busy: Option<Box<Busy>>,
    /// The socket is in its thread's epoll set for good (epoll backend, see
    /// `park::watch`): readiness comes as the handle's input flag, no poll operation.
    edge: bool,
}

impl Reader {
    /// A reader for `stream` (which must outlive it); `uring`: the thread runs io_uring.
    pub fn new(stream: &TcpStream, uring: bool, now: Instant) -> io::Result<Self> {
        Ok(Reader {
            fd: stream.to_poll_fd()?.to_shared_fd(),
            poll: None,
            // The CONNECT has usually arrived with the connection: try at once.
            more: true,
            uring,
            streak: 0,
            last_data: now,
            busy: None,
            edge: false,
        })
    }

    /// The socket is now in the thread's epoll set, edge-triggered (`park::watch`): from
    /// here on the reader never submits a poll operation; the task learns of new input
    /// from its handle's input flag (`ConnHandle::take_input`).
    pub fn set_edge(&mut self) {
        self.edge = true;
        self.poll = None;
    }

    /// Whether a read of this reader has found bytes yet (meant for a connection's first
    /// reads: a connection back on the poll path after a busy period reads as fresh).
    pub fn had_data(&self) -> bool {
        self.streak > 0 || self.busy.is_some()
    }

    /// Whether the last read filled the buffer (more bytes may be waiting that no new
    /// readiness event will announce).
    pub fn has_more(&self) -> bool {
        self.more
    }

    /// Whether readiness comes through the handle (see [`Self::set_edge`]).
    pub fn is_edge(&self) -> bool {
        self.edge
    }

    /// The reader of a connection resumed from parking (see `conn::park`): `None` if the
    /// socket cannot be polled. Its first wait polls (the wake-up that resumed it reads
    /// anyway when it was for input).
    pub fn resume(stream: &TcpStream, uring: bool, now: Instant) -> Option<Self> {
        let mut r = Reader::new(stream, uring, now)
            .inspect_err(|e| tracing::debug!(error = %e, "cannot poll a resumed socket"))
            .ok()?;
        r.more = false;
        Some(r)
    }

    /// Ready when a read may find bytes; otherwise the task polling is woken when one may.
    /// The poll (or receive) operation stays armed when the task stops polling (a mailbox
    /// message or a timer won the race), so waiting again costs no new submission.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Only between receives: one in flight may already hold bytes.
        if self
            .busy
            .as_ref()
            .is_some_and(|b| b.stop && b.recv.is_none() && b.done.is_none())
        {
            self.busy = None;
        }
        if let Some(b) = self.busy.as_deref_mut() {
            if b.done.is_some() {
                return Poll::Ready(());
            }
            let fd = &self.fd;
            let recv = b.recv.get_or_insert_with(|| {
                let buf = std::mem::take(&mut b.buf);
                let mut op = Recv::new(fd.clone(), buf, RecvFlags::empty());
                // The previous receive just drained the socket: skip io_uring's first,
                // almost always empty, attempt and arm its poll at once (the receive runs
                // at once all the same when bytes are already there).
                op.poll_first();
                submit(op)
            });
            let BufResult(res, op) = std::task::ready!(Pin::new(recv).poll(cx));
            b.recv = None;
            b.buf = op.into_inner();
            b.done = Some(res);
            return Poll::Ready(());
        }
        if self.more {
            return Poll::Ready(());
        }
        if self.edge {
            return Poll::Pending;
        }
        let fd = &self.fd;
        let poll = self
            .poll
            .get_or_insert_with(|| submit(PollOnce::new(fd.clone(), Interest::Readable)));
        // An error (the socket failed) is reported by the read that follows.
        let BufResult(_, _) = std::task::ready!(Pin::new(poll).poll(cx));
        self.poll = None;
        Poll::Ready(())
    }

    /// Prepares the reader to wait outside its task (see `conn::park`): drops the armed
    /// readiness poll (it would wake the ending task). False for a busy connection: its
    /// receive in flight may hold bytes, so it stays with a task.
    pub fn disarm(&mut self) -> bool {
        if self.busy.is_some() {
            return false;
        }
        self.poll = None;
        true
    }

    /// The task woke for its timer: a busy connection quiet for longer than [`BUSY_GAP`]
    /// goes back to the poll path after its receive in flight completes (not cancelled:
    /// see the module documentation).
    pub fn on_timer(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_data) > BUSY_GAP
            && let Some(b) = self.busy.as_deref_mut()
        {
            b.stop = true;
        }
    }

    /// Reads what is there, without blocking: the completed receive of a busy connection,
    /// else a `recv` into `scratch`.
    pub fn read<'a>(
        &'a mut self,
        ctx: &ThreadCtx,
        scratch: &'a mut [u8],
        now: Instant,
    ) -> ReadNow<'a> {
        let quick = now.saturating_duration_since(self.last_data) <= BUSY_GAP;
        if self.busy.as_ref().is_some_and(|b| b.done.is_some()) {
            return self.take_received(now, quick);
        }
        let n = match self.recv_now(scratch) {
            Ok(n) => n,
            Err(other) => return other,
        };
        self.streak = if quick {
            self.streak.saturating_add(1)
        } else {
            1
        };
        self.last_data = now;
        if self.uring && self.busy.is_none() && self.streak >= BUSY_STREAK {
            self.busy = busy_for(ctx);
            self.streak = 0;
        }
        ReadNow::Data(&scratch[..n])
    }

    /// The result of a busy connection's completed receive.
    fn take_received(&mut self, now: Instant, quick: bool) -> ReadNow<'_> {
        let Some(b) = self.busy.as_deref_mut() else {
            return ReadNow::WouldBlock;
        };
        let Some(res) = b.done.take() else {
            return ReadNow::WouldBlock;
        };
        match res {
            Ok(0) => ReadNow::Closed,
            Ok(n) => {
                self.last_data = now;
                b.stop |= !quick;
                ReadNow::Data(&b.buf[..n.min(b.buf.len())])
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => ReadNow::WouldBlock,
            Err(e) => {
                tracing::debug!(error = %e, "socket receive failed");
                ReadNow::Closed
            }
        }
    }

    /// One `recv(MSG_DONTWAIT)` into `buf`: the length read, or what to report instead.
    fn recv_now(&mut self, buf: &mut [u8]) -> Result<usize, ReadNow<'static>> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call and
            // `self.fd` is the socket, open as long as this shared handle lives.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                // `n` is positive and at most `buf.len()`.
                let n = n as usize;
                self.more = n == buf.len();
                return Ok(n);
            }
            if n == 0 {
                return Err(ReadNow::Closed);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.more = false;
                    return Err(ReadNow::WouldBlock);
                }
                _ => {
                    tracing::debug!(error = %err, "socket read failed");
                    return Err(ReadNow::Closed);
                }
            }
        }
    }
}

/// A receive buffer for a connection that became busy, unless the thread's
/// `io.max_busy_readers` are taken (counted as a limit hit).
fn busy_for(ctx: &ThreadCtx) -> Option<Box<Busy>> {
    let io = &ctx.broker.config.io;
    let count = ctx.busy_readers.clone();
    if count.get() >= io.max_busy_readers {
        if io.max_busy_readers > 0 {
            ctx.stats().hit_limit(Limit::MaxBusyReaders);
        }
        return None;
    }
    count.set(count.get() + 1);
    Some(Box::new(Busy {
        recv: None,
        buf: vec![0; io.busy_read_buffer_bytes],
        done: None,
        stop: false,
        count,
    }))
}
