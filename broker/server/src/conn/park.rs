//! Parked connections: an idle connection's state, compacted while it waits.
//!
//! A connection task alternates between two forms. While it works it holds a boxed
//! [`ConnTask`] (the full `Connection`, outbox, store and handover state, about 0.9 KB).
//! Once a step leaves it idle (nothing to write, no partial packet, nothing awaiting an
//! answer, see [`ConnTask::may_park`]) and it is not streaming (see [`Pace`]), the box is
//! freed and only a [`Parked`] record stays: the `ParkedConnection` (session, keep alive,
//! negotiated limits, will), the socket and the session's identity (the socket's reader is
//! rebuilt when the connection resumes).
//!
//! The record is parked **outside any task** when it can be ([`park`]): it moves into the
//! connection's `ConnHandle` and the task ends, so an idle connection costs no task, no
//! future, no armed poll operation and no waker. The thread's [`Parking`] waits for all its
//! parked connections at once: one epoll instance per thread holds every parked socket
//! (for input, edge-triggered, the connection id as data, see below) and is itself polled
//! for readability through the runtime (either backend); mail and keep-alive deadlines (the thread's connection timers)
//! reach it through `ThreadCtx::push_to` and the timer task. On a wake-up [`manage`] spawns
//! a fresh task that rebuilds the `ConnTask` and handles the wake-up. Registering a socket
//! reports bytes that arrived before, and parking checks for those an edge will not announce
//! again (below); mail and due timers seen at park time wake at once; so nothing is lost.
//!
//! Where that is not possible (the thread has no epoll instance, the registration failed,
//! or the reader has a receive in flight, see `read::Reader::disarm`), the record waits in
//! the task itself ([`sleep`]), exactly as a working task would (readability, mailbox, the
//! connection timer).
//!
//! Either way every behaviour (keep alive, takeover, wills, deliveries, shutdown) goes
//! through the same code; parking only changes where the state lives meanwhile.
//!
//! On the epoll backend the same set also holds every *working* connection's socket,
//! edge-triggered and for good ([`watch`]): [`manage`] flags their input on their handles
//! (`ConnHandle::mark_input`) instead of each read submitting a poll operation (which
//! compio's epoll driver turns into an `EPOLL_CTL_ADD` and an `EPOLL_CTL_DEL`). Such a
//! socket stays edge-triggered while parked ([`Registration::Edge`]): parking and resuming
//! cost no `epoll_ctl`, so a connection costs one in all (its `EPOLL_CTL_ADD` at accept).
//! Input an edge has no event for any more is checked at park time instead: a flagged
//! input the task has not read, or a last read that filled the buffer, resumes the
//! connection at once. (The kernel re-checks a socket's readiness before it reports an
//! event, so an edge whose bytes were read before the parking wakes no one.)
//!
//! On io_uring (or for an epoll socket that could not be watched) the reader polls the
//! socket itself while the connection works, and the socket is added to the set at its
//! first parking, edge-triggered, and stays there while the connection works again: its
//! later parkings cost no `epoll_ctl` (a client that subscribes after its CONNACK parks
//! twice), and an input event for the working connection only flags its handle (its read
//! clears the flag). A connection that streams ([`Pace`]) leaves the set ([`unwatch`], one
//! `EPOLL_CTL_DEL`) so that its inputs do not go through the set too, and is added again at
//! its next parking.
//!
//! Limits: one parked record per open connection of the thread (so at most
//! `limits.max_connections`); the ready list holds each parked record at most once (taken
//! out of its handle when queued); events are read in batches of [`EVENT_BATCH`], at most
//! [`EVENT_ROUNDS`] batches per wake-up. `halyard_connections_parked` counts parked
//! connections (both forms).
//!
//! TLS and WebSocket connections never park (their layers hold state of their own).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use compio::BufResult;
use compio::driver::SharedFd;
use compio::driver::op::{Interest, PollOnce};
use compio::net::TcpStream;
use compio::runtime::{Submit, submit};
use halyard_session::{ClientId, Connection, ParkedConnection};

use super::read::Reader;
use super::{ConnTask, Wake, YieldOnce};
use crate::durable::QueueLedger;
use crate::engine::publish::Outbox;
use crate::engine::thread::{ConnHandle, ThreadCtx};
use crate::engine::{Route, SessionKey};
use crate::security::SourceSlot;

/// Wake-ups for work (input or mail) in a row, each within [`PARK_GAP`] of the previous
/// one, after which a connection counts as streaming and is not parked between steps.
pub(super) const PARK_STREAK: u8 = 4;

/// Quiet time after which a streaming connection is parked (checked by the thread's
/// connection timers, so up to their 100 ms tick later).
pub(super) const PARK_GAP: Duration = Duration::from_millis(100);

/// Steps of a streaming connection after which its counters go to the thread's metrics
/// (see [`Pace::sync_due`]): each sync reads and zeroes the connection's counters and adds
/// the ones that moved to the thread's atomics, a visible share of a one-message step.
pub(super) const STATS_SYNC_STEPS: u8 = 32;

/// When a connection last woke up for work and how many such wake-ups came in a row:
/// parking between the steps of a streaming connection would rebuild its state for every
/// read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    last: Instant,
    streak: u8,
    /// Steps since the connection's counters last went to the thread's metrics.
    unsynced: u8,
}

impl Pace {
    /// A connection accepted at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Pace {
            last: now,
            streak: 0,
            unsynced: 0,
        }
    }

    /// Whether the step that just ran should add the connection's counters to the
    /// thread's metrics: always, except between the steps of a streaming connection,
    /// which syncs every [`STATS_SYNC_STEPS`] steps, at a timer wake-up (`timer`) and when
    /// it closes (`closed`). A streaming connection that falls quiet wakes for its park
    /// check ([`Self::park_check`]) and syncs then, so the metrics lag a stream by at most
    /// that many steps or `PARK_GAP` plus the timers' tick.
    pub(super) fn sync_due(&mut self, timer: bool, closed: bool) -> bool {
        if self.streaming() && !timer && !closed && self.unsynced < STATS_SYNC_STEPS {
            self.unsynced += 1;
            return false;
        }
        self.unsynced = 0;
        true
    }

    /// The task woke up at `now`; `work`: for input or mail (not for its timer).
    pub(super) fn woke(&mut self, now: Instant, work: bool) {
        if now.saturating_duration_since(self.last) >= PARK_GAP {
            self.streak = 0;
        }
        if work {
            self.streak = self.streak.saturating_add(1);
            self.last = now;
        }
    }

    /// Whether the connection is streaming (not parked between steps).
    pub(super) fn streaming(&self) -> bool {
        self.streak >= PARK_STREAK
    }

    /// When a streaming connection that stays quiet should wake up to park.
    pub(super) fn park_check(&self) -> Option<Instant> {
        self.streaming().then(|| self.last + PARK_GAP)
    }
}

/// Why the task wakes up, if it does: readability first (when `reader` is given), then the
/// mailbox or the connection's timer. Registers the task's waker with both when neither is
/// ready.
fn poll_wake(handle: &ConnHandle, reader: Option<&mut Reader>, cx: &mut Context<'_>) -> Poll<Wake> {
    if let Some(r) = reader
        && (r.poll_ready(cx).is_ready() || (r.is_edge() && handle.take_input()))
    {
        return Poll::Ready(Wake::Read);
    }
    std::task::ready!(handle.poll_ready(cx));
    Poll::Ready(if handle.take_timer_due() {
        Wake::Timer
    } else {
        Wake::Mail
    })
}

/// Waits for input (when `reader` is given), a mailbox message or `deadline`. (A plain
/// function around `poll_wake`: the task's future carries only its two references.)
pub(super) fn wait<'a>(
    ctx: &ThreadCtx,
    handle: &'a Rc<ConnHandle>,
    mut reader: Option<&'a mut Reader>,
    deadline: Option<Instant>,
) -> impl Future<Output = Wake> + 'a {
    // The thread's connection timers wake the task through its handle.
    ctx.arm_conn_timer(handle, deadline);
    std::future::poll_fn(move |cx| poll_wake(handle, reader.as_deref_mut(), cx))
}

/// Parks `parked` in its task until its next wake-up; resolves to the working task again
/// and why it woke. (The fallback of [`park`].)
pub(super) fn sleep(
    parked: Box<Parked>,
    handle: Rc<ConnHandle>,
    reader: Reader,
    ctx: &Rc<ThreadCtx>,
) -> Sleep<'_> {
    ctx.arm_conn_timer(&handle, parked.conn.poll_timeout());
    handle.release_room();
    ctx.stats().parked.fetch_add(1, Relaxed);
    ctx.stats().parked_in_task.fetch_add(1, Relaxed);
    Sleep {
        parked: Some(parked),
        handle,
        reader: Some(reader),
        ctx,
    }
}

/// The future of [`sleep`]: written by hand so that the parked record is stored once (an
/// `async fn` keeps its argument and the local it moves into).
pub(super) struct Sleep<'a> {
    /// `None` once resolved.
    parked: Option<Box<Parked>>,
    handle: Rc<ConnHandle>,
    /// `None` once resolved.
    reader: Option<Reader>,
    ctx: &'a Rc<ThreadCtx>,
}

impl Future for Sleep<'_> {
    type Output = (Box<ConnTask>, Wake);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Polled again after resolving: there is nothing more to give.
        let Some(reader) = this.reader.as_mut() else {
            return Poll::Pending;
        };
        let wake = std::task::ready!(poll_wake(&this.handle, Some(reader), cx));
        match (this.parked.take(), this.reader.take()) {
            (Some(p), Some(reader)) => {
                this.ctx.stats().parked.fetch_sub(1, Relaxed);
                this.ctx.stats().parked_in_task.fetch_sub(1, Relaxed);
                let task = p.unpark(this.ctx, this.handle.clone(), Some(reader), Instant::now());
                Poll::Ready((task, wake))
            }
            _ => Poll::Pending,
        }
    }
}

impl Drop for Sleep<'_> {
    /// A parked task dropped without waking (the runtime shutting down) leaves the gauge.
    fn drop(&mut self) {
        if self.parked.is_some() {
            self.ctx.stats().parked.fetch_sub(1, Relaxed);
            self.ctx.stats().parked_in_task.fetch_sub(1, Relaxed);
        }
    }
}

/// Epoll events read per `epoll_wait` call by [`manage`].
pub const EVENT_BATCH: usize = 64;

/// `epoll_wait` calls per wake-up of [`manage`] (at most `EVENT_BATCH * EVENT_ROUNDS`
/// connections resumed for input before the task yields; the rest stay ready in epoll).
pub const EVENT_ROUNDS: usize = 16;

/// Pause of [`manage`] after polling its epoll descriptor failed.
const FAILED_POLL_PAUSE: Duration = Duration::from_millis(10);

/// A connection's parked record while it waits outside any task (in its `ConnHandle`).
#[derive(Default)]
pub struct ParkedSlot(Cell<Option<Box<Parked>>>);

impl ParkedSlot {
    fn take(&self) -> Option<Box<Parked>> {
        self.0.take()
    }

    fn put(&self, parked: Box<Parked>) {
        self.0.set(Some(parked));
    }

    /// Whether a record is parked here.
    pub fn is_parked(&self) -> bool {
        let p = self.0.take();
        let parked = p.is_some();
        self.0.set(p);
        parked
    }
}

impl std::fmt::Debug for ParkedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_parked() {
            "parked"
        } else {
            "in a task"
        })
    }
}

/// A parked record to resume, and whether its socket became readable.
type Ready = (Rc<ConnHandle>, Box<Parked>, bool);

/// The thread's connections parked outside any task, and how they are woken (see the
/// module documentation).
pub struct Parking {
    /// Every socket parked outside a task (and on epoll every watched one), registered
    /// for input with its connection id as data (see [`Registration`]). `None` when it
    /// could not be created (then connections park in their tasks).
    epoll: Option<SharedFd<OwnedFd>>,
    /// Parked records taken out of their handles by mail or a deadline, to resume. Each
    /// parked record is here at most once (bounded by the thread's connections).
    ready: RefCell<Vec<Ready>>,
    /// The waker of [`manage`], while it waits.
    waker: RefCell<Option<Waker>>,
    /// [`manage`] was spawned on this thread.
    managed: Cell<bool>,
    /// `epoll_ctl` calls made on the set (its registrations and re-arms), for tests.
    ctl_calls: Cell<u64>,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking")
            .field("epoll", &self.epoll.as_ref().map(|e| e.as_raw_fd()))
            .field("ready", &self.ready.borrow().len())
            .finish()
    }
}

impl Default for Parking {
    fn default() -> Self {
        Self::new()
    }
}

impl Parking {
    /// The parking of a new I/O thread, with its epoll instance.
    pub fn new() -> Self {
        // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let epoll = if fd >= 0 {
            // SAFETY: `fd` was just created and is owned by nothing else.
            Some(SharedFd::new(unsafe { OwnedFd::from_raw_fd(fd) }))
        } else {
            tracing::warn!(error = %io::Error::last_os_error(), "no epoll instance: idle connections park in their tasks");
            None
        };
        Parking {
            epoll,
            ready: RefCell::new(Vec::new()),
            waker: RefCell::new(None),
            managed: Cell::new(false),
            ctl_calls: Cell::new(0),
        }
    }

    /// Connection `h` has mail or a due deadline: if it is parked here, it is queued to
    /// resume.
    pub fn wake(&self, h: &Rc<ConnHandle>) {
        if let Some(p) = h.parked.take() {
            self.queue((h.clone(), p, false));
        }
    }

    /// Connection `h`, just parked here, has input its edge-triggered registration will not
    /// report again (see the module documentation): it is queued to resume for input.
    fn wake_for_input(&self, h: &Rc<ConnHandle>) {
        if let Some(p) = h.parked.take() {
            self.queue((h.clone(), p, true));
        }
    }

    fn queue(&self, ready: Ready) {
        self.ready.borrow_mut().push(ready);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Puts `fd` (the socket of connection `conn`, now `reg`; working, or parking) in the set
    /// for good, edge-triggered: each arrival of input is reported once, with no re-arming,
    /// and the socket stays in the set when its connection resumes, so later parkings cost no
    /// `epoll_ctl` (see [`unwatch`] for when it leaves). No system call when it is so already.
    /// The registration it has now.
    fn watch_edge(&self, fd: i32, conn: u64, reg: Registration) -> io::Result<Registration> {
        if reg == Registration::Edge {
            return Ok(reg);
        }
        self.set_interest(fd, conn)?;
        Ok(Registration::Edge)
    }

    /// Takes `fd` out of the set (see [`unwatch`]). Not in the set (`ENOENT`) counts as
    /// done.
    fn remove(&self, fd: i32) -> io::Result<()> {
        let Some(ep) = self.epoll.as_ref() else {
            return Ok(());
        };
        self.ctl_calls.set(self.ctl_calls.get() + 1);
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a valid event for the call (ignored by `EPOLL_CTL_DEL`); both
        // descriptors are open.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        Err(err)
    }

    /// Adds `fd` to the set for input, edge-triggered, with `conn` as data; the kernel
    /// reports input already waiting. (A socket found in the set already, not expected:
    /// only [`unwatch`] takes one out, and one whose removal failed stays `Edge`, is
    /// changed instead.)
    fn set_interest(&self, fd: i32, conn: u64) -> io::Result<()> {
        let Some(ep) = self.epoll.as_ref() else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: conn,
        };
        for op in [libc::EPOLL_CTL_ADD, libc::EPOLL_CTL_MOD] {
            self.ctl_calls.set(self.ctl_calls.get() + 1);
            // SAFETY: `ev` is a valid event for the call; both descriptors are open.
            if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) } == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(err);
            }
        }
        Err(io::ErrorKind::AlreadyExists.into())
    }

    /// Between two runs of the thread's tasks, on the epoll backend (see
    /// `io::block_on`): reads up to [`EVENT_BATCH`] events of the set without waiting and
    /// handles them as [`manage`] would (working connections flagged and woken, parked ones
    /// handed to [`manage`]). True when it found any: the caller runs the woken tasks
    /// instead of asking compio's driver for events, which costs five system calls per
    /// turn (`timerfd_settime`, two `EPOLL_CTL_MOD`, `epoll_wait`, an eventfd `read`) plus
    /// the re-arming of this set's descriptor in compio's poller, where this costs one
    /// `epoll_wait`. No-op (false) while nothing was ever registered here.
    pub fn poll_direct(&self, ctx: &ThreadCtx) -> bool {
        if !self.managed.get() {
            return false;
        }
        let (found, _) = self.collect_events(ctx, 1);
        if !self.ready.borrow().is_empty()
            && let Some(w) = self.waker.borrow_mut().take()
        {
            w.wake();
        }
        found
    }

    /// Queues the parked connections whose socket became readable and flags input for the
    /// watched ones, reading at most `rounds` batches of events: whether it read any, and
    /// whether it may have left some (every batch was full).
    fn collect_events(&self, ctx: &ThreadCtx, rounds: usize) -> (bool, bool) {
        let Some(ep) = self.epoll.as_ref() else {
            return (false, false);
        };
        let mut found = false;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENT_BATCH];
        for _ in 0..rounds {
            // SAFETY: `events` is valid for `EVENT_BATCH` entries; timeout 0 never blocks.
            let n = unsafe {
                libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), EVENT_BATCH as i32, 0)
            };
            let Ok(n) = usize::try_from(n) else {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    tracing::warn!(error = %err, "epoll_wait on parked connections failed");
                    return (found, false);
                }
                continue;
            };
            found |= n > 0;
            for ev in &events[..n] {
                let conn = ev.u64;
                // Not parked: a working connection watched edge-triggered (see `watch`),
                // or an event of an earlier parking; its task reads (and finds nothing,
                // at worst).
                if let Some(h) = ctx.conn_handle(conn) {
                    match h.parked.take() {
                        Some(p) => self.ready.borrow_mut().push((h, p, true)),
                        None => h.mark_input(),
                    }
                }
            }
            if n < EVENT_BATCH {
                return (found, false);
            }
        }
        (found, true)
    }
}

/// Parks `parked` outside any task when it can (see the module documentation): its record
/// moves into `handle` and the caller's task should end. Gives the record back when it
/// must wait in the task instead, with its `reader`.
pub(super) fn park(
    ctx: &Rc<ThreadCtx>,
    handle: &Rc<ConnHandle>,
    parked: Box<Parked>,
    mut reader: Reader,
) -> Result<(), (Box<Parked>, Reader)> {
    if !reader.disarm() {
        return Err((parked, reader));
    }
    let reg =
        match ctx
            .parking
            .watch_edge(parked.stream.as_raw_fd(), handle.me.conn, parked.registered)
        {
            Ok(reg) => reg,
            Err(e) => {
                tracing::debug!(error = %e, "cannot register a parked socket: parked in its task");
                return Err((parked, reader));
            }
        };
    // Edge-triggered: input already flagged, or left behind by a read that filled the
    // buffer, has no event to come (see the module documentation).
    let input = reg == Registration::Edge && (reader.has_more() | handle.take_input());
    let mut parked = parked;
    parked.registered = reg;
    if !ctx.parking.managed.replace(true) {
        compio::runtime::spawn(manage(ctx.clone())).detach();
    }
    ctx.arm_conn_timer(handle, parked.conn.poll_timeout());
    ctx.stats().parked.fetch_add(1, Relaxed);
    handle.clear_waker();
    handle.release_room();
    handle.parked.put(parked);
    if input {
        ctx.parking.wake_for_input(handle);
    } else if !handle.is_empty() || handle.timer_due() {
        // Mail or a deadline that came while the last step ran: resume at once.
        ctx.parking.wake(handle);
    }
    Ok(())
}

/// On the epoll backend, puts a working connection's socket in the thread's epoll set for
/// good (edge-triggered), so that `reader` learns of input from the handle's input flag
/// instead of a poll operation per read: compio's epoll driver adds a descriptor to its
/// poller for each wait and removes it after the event (an `EPOLL_CTL_ADD` and an
/// `EPOLL_CTL_DEL` per read, 14 % of the broker's CPU in a stream of single messages,
/// RESULTS.md session 7), where the thread's set costs one re-arm and one `epoll_wait` per
/// wake-up of the thread, whatever the number of sockets ready. No-op on io_uring (its poll
/// and receive operations need no registration) or without the thread's epoll instance.
/// `reg`: how the socket is in the set now (a socket watched before stays so, with no
/// system call). Returns how it is in the set afterwards.
pub(super) fn watch(
    ctx: &Rc<ThreadCtx>,
    fd: i32,
    conn: u64,
    reader: &mut Reader,
    uring: bool,
    reg: Registration,
) -> Registration {
    if uring {
        return reg;
    }
    let reg = match ctx.parking.watch_edge(fd, conn, reg) {
        Ok(reg) => reg,
        Err(e) => {
            tracing::debug!(error = %e, "cannot watch a socket in the thread's epoll set: polled per read");
            return reg;
        }
    };
    if !ctx.parking.managed.replace(true) {
        compio::runtime::spawn(manage(ctx.clone())).detach();
    }
    reader.set_edge();
    reg
}

/// Takes a streaming connection's socket out of the thread's epoll set when its reader
/// polls the socket itself (io_uring, or an epoll socket [`watch`] could not add): a
/// socket registered at a parking stays in the set while its connection works (see
/// [`Parking::watch_edge`]), where each of its inputs would also cost an event, a turn of
/// [`manage`] and a wake-up of the task for nothing. So a stream costs one
/// `EPOLL_CTL_DEL`, and its next parking adds the socket again. `reg`: how the socket is
/// in the set now; returns how it is afterwards.
pub(super) fn unwatch(
    ctx: &ThreadCtx,
    fd: i32,
    reader: Option<&Reader>,
    reg: Registration,
) -> Registration {
    if reg != Registration::Edge || reader.is_none_or(Reader::is_edge) {
        return reg;
    }
    match ctx.parking.remove(fd) {
        Ok(()) => Registration::No,
        Err(e) => {
            tracing::debug!(error = %e, "cannot take a streaming socket out of the thread's epoll set");
            reg
        }
    }
}

/// Resumes the thread's parked connections when they wake up, and flags input for working
/// connections watched by [`watch`]; runs for the thread's life (spawned by the first
/// [`park`] or [`watch`]).
async fn manage(ctx: Rc<ThreadCtx>) {
    let Some(ep) = ctx.parking.epoll.clone() else {
        return;
    };
    let mut poll: Option<Submit<PollOnce<SharedFd<OwnedFd>>>> = None;
    // compio's epoll driver removes a descriptor from its poller once no operation waits on
    // it, and adds it again for the next one; adding an epoll descriptor to an epoll set
    // makes the kernel walk the nested set for loops (`ep_loop_check`: O(parked
    // connections) per wake-up, +10 us per connection in the `conn --subscribe` benchmark).
    // A write-readiness wait that never completes (an epoll descriptor is never writable)
    // keeps ours registered, so re-arming it is a plain `EPOLL_CTL_MOD`. io_uring polls
    // without nesting and needs none.
    let uring = compio::runtime::Runtime::with_current(|r| r.driver_type().is_iouring());
    let mut anchor = (!uring).then(|| submit(PollOnce::new(ep.clone(), Interest::Writable)));
    let mut more = false;
    loop {
        if !more {
            let mut failed = false;
            std::future::poll_fn(|cx| {
                if let Some(op) = anchor.as_mut()
                    && Pin::new(op).poll(cx).is_ready()
                {
                    anchor = None;
                }
                if !ctx.parking.ready.borrow().is_empty() {
                    return Poll::Ready(());
                }
                *ctx.parking.waker.borrow_mut() = Some(cx.waker().clone());
                let op = poll
                    .get_or_insert_with(|| submit(PollOnce::new(ep.clone(), Interest::Readable)));
                let BufResult(res, _) = std::task::ready!(Pin::new(op).poll(cx));
                poll = None;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "polling the parked connections failed");
                    failed = true;
                }
                Poll::Ready(())
            })
            .await;
            if failed {
                // Not expected (the epoll descriptor is ours); never spin on it.
                compio::time::sleep(FAILED_POLL_PAUSE).await;
            }
        }
        more = ctx.parking.collect_events(&ctx, EVENT_ROUNDS).1;
        let ready = std::mem::take(&mut *ctx.parking.ready.borrow_mut());
        for (handle, parked, read) in ready {
            compio::runtime::spawn(resume(ctx.clone(), handle, parked, read)).detach();
        }
        if more {
            // Let the resumed tasks run before reading more events.
            YieldOnce(false).await;
        }
    }
}

/// The task of a connection resumed from [`Parking`]: rebuilds its working state and goes
/// on serving it (`read`: woken by input).
fn resume(
    ctx: Rc<ThreadCtx>,
    handle: Rc<ConnHandle>,
    mut parked: Box<Parked>,
    read: bool,
) -> impl Future<Output = ()> {
    ctx.stats().parked.fetch_sub(1, Relaxed);
    let wake = if read {
        Wake::Read
    } else if handle.take_timer_due() {
        Wake::Timer
    } else {
        Wake::Mail
    };
    let uring = compio::runtime::Runtime::with_current(|r| r.driver_type().is_iouring());
    let now = Instant::now();
    // `None` only if the socket cannot be polled: the connection then closes as at the end
    // of its input.
    let mut reader = Reader::resume(&parked.stream, uring, now);
    if let Some(r) = reader.as_mut() {
        let fd = parked.stream.as_raw_fd();
        parked.registered = watch(&ctx, fd, handle.me.conn, r, uring, parked.registered);
    }
    let mut task = parked.unpark(&ctx, handle, reader, now);
    if task.reader.is_none() {
        task.conn.socket_closed(now);
    }
    super::drive(ctx, task, Some(wake))
}

/// What a parked connection keeps (see the module documentation). Everything a parked
/// `ConnTask` holds beyond this is empty or default, as [`ConnTask::may_park`] checks.
pub struct Parked {
    conn: ParkedConnection,
    stream: TcpStream,
    key: Option<SessionKey>,
    route: Option<Arc<Route>>,
    client_id: Option<ClientId>,
    username: Option<Arc<str>>,
    slot: Option<SourceSlot>,
    ledger: Option<Box<QueueLedger>>,
    pace: Pace,
    persistent: bool,
    stored: bool,
    /// How the socket is in the thread's parking epoll set.
    registered: Registration,
}

/// How a connection's socket is in its thread's parking epoll set ([`Parking`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Registration {
    /// Not in the set.
    #[default]
    No,
    /// Edge-triggered, for good: parked or working alike (from its accept on the epoll
    /// backend, see [`watch`]; from its first parking on io_uring, until it streams, see
    /// [`unwatch`]).
    Edge,
}

impl ConnTask {
    /// Whether the connection may park after this step: parking is on, the connection is
    /// plain TCP, accepted, idle (see `Connection::can_park`), not streaming, and the task
    /// holds nothing in progress (mail, deliveries to route, a handover, a store step).
    pub(super) fn may_park(&self) -> bool {
        self.ctx.broker.config.io.park_idle_connections
            && !self.pace.streaming()
            && self.transport.is_none()
            && self.reader.is_some()
            && self.accepted
            && self.awaiting.is_none()
            && self.held.is_empty()
            && self.orphan.is_none()
            && self.closed_will.is_none()
            && !self.unsafe_output
            && self.step.is_empty()
            && self.outbox.is_empty()
            && self.handle.is_empty()
            && self.conn.can_park()
    }

    /// The parked form of this task with its handle and reader, or the task back when it
    /// cannot park.
    #[allow(
        clippy::type_complexity,
        reason = "one use, named in the documentation"
    )]
    pub(super) fn park(
        self: Box<Self>,
    ) -> Result<(Box<Parked>, Rc<ConnHandle>, Reader), Box<Self>> {
        if !self.may_park() {
            return Err(self);
        }
        let task = *self;
        let Some(reader) = task.reader else {
            return Err(Box::new(ConnTask {
                reader: None,
                ..task
            }));
        };
        let conn = match task.conn.park() {
            Ok(c) => c,
            Err(conn) => {
                return Err(Box::new(ConnTask {
                    conn,
                    reader: Some(reader),
                    ..task
                }));
            }
        };
        let parked = Box::new(Parked {
            conn,
            stream: task.stream,
            key: task.key,
            route: task.route,
            client_id: task.client_id,
            username: task.username,
            slot: task.slot,
            ledger: task.ledger,
            pace: task.pace,
            persistent: task.persistent,
            stored: task.stored,
            registered: task.registered,
        });
        Ok((parked, task.handle, reader))
    }
}

impl Parked {
    /// The working task again, at `now`.
    pub(super) fn unpark(
        self: Box<Self>,
        ctx: &Rc<ThreadCtx>,
        handle: Rc<ConnHandle>,
        reader: Option<Reader>,
        now: Instant,
    ) -> Box<ConnTask> {
        let p = *self;
        Box::new(ConnTask {
            conn: Connection::unpark(p.conn, ctx.broker.session_config.clone(), now),
            outbox: Outbox::new(ctx.broker.inboxes.len()),
            ctx: ctx.clone(),
            me: handle.me,
            handle,
            stream: p.stream,
            reader,
            key: p.key,
            route: p.route,
            client_id: p.client_id,
            username: p.username,
            slot: p.slot,
            transport: None,
            accepted: true,
            awaiting: None,
            held: Vec::new(),
            orphan: None,
            closed_will: None,
            ledger: p.ledger,
            persistent: p.persistent,
            stored: p.stored,
            unsafe_output: false,
            step: Vec::new(),
            pace: p.pace,
            registered: p.registered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::test_sockets::pair;
    use std::io::Write;

    /// The connection ids the set reports within 10 s (at least one event).
    fn events(p: &Parking) -> Vec<u64> {
        let ep = p.epoll.as_ref().unwrap().as_raw_fd();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: `evs` is valid for 8 entries; `ep` is the set's open descriptor.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 8, 10_000) };
        let n = usize::try_from(n).expect("epoll_wait failed");
        evs[..n].iter().map(|e| e.u64).collect()
    }

    /// A socket watched edge-triggered (epoll backend) parks and resumes with no
    /// `epoll_ctl` beyond its first registration, and reports input that arrives while
    /// it is parked.
    #[test]
    fn an_edge_watched_socket_parks_and_resumes_without_epoll_ctl() {
        let p = Parking::new();
        let (mut client, accepted) = pair();
        let fd = accepted.as_raw_fd();
        let reg = p.watch_edge(fd, 7, Registration::No).unwrap();
        assert_eq!((reg, p.ctl_calls.get()), (Registration::Edge, 1));
        for _ in 0..3 {
            let parked = p.watch_edge(fd, 7, reg).unwrap();
            assert_eq!(
                parked,
                Registration::Edge,
                "stays edge-triggered while parked"
            );
            client.write_all(b"x").unwrap();
            assert_eq!(events(&p), [7], "input reaches the parked socket");
            let resumed = p.watch_edge(fd, 7, parked).unwrap();
            assert_eq!(resumed, Registration::Edge);
        }
        assert_eq!(
            p.ctl_calls.get(),
            1,
            "one epoll_ctl for the connection's life"
        );
    }

    /// A socket not watched (io_uring) is added edge-triggered at its first parking and
    /// stays so: later parkings cost no `epoll_ctl`, and input waiting at its registration
    /// or arriving while it is parked is reported. Taken out while it streams (`remove`),
    /// it reports nothing, and its next parking adds it again.
    #[test]
    fn a_socket_not_watched_is_added_at_its_first_parking_and_stays() {
        let p = Parking::new();
        let (mut client, accepted) = pair();
        let fd = accepted.as_raw_fd();
        client.write_all(b"x").unwrap();
        let mut reg = p.watch_edge(fd, 9, Registration::No).unwrap();
        assert_eq!((reg, p.ctl_calls.get()), (Registration::Edge, 1));
        assert_eq!(events(&p), [9], "waiting input reported at once");
        for _ in 0..3 {
            reg = p.watch_edge(fd, 9, reg).unwrap();
            client.write_all(b"y").unwrap();
            assert_eq!(events(&p), [9], "new input reaches the parked socket");
        }
        assert_eq!((reg, p.ctl_calls.get()), (Registration::Edge, 1));
        p.remove(fd).unwrap();
        client.write_all(b"z").unwrap();
        let ep = p.epoll.as_ref().unwrap().as_raw_fd();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: `evs` is valid for 8 entries; `ep` is the set's open descriptor.
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 8, 100) };
        assert_eq!(n, 0, "a socket taken out reports nothing");
        p.remove(fd).unwrap();
        assert_eq!(
            p.watch_edge(fd, 9, Registration::No).unwrap(),
            Registration::Edge
        );
        assert_eq!(events(&p), [9], "added again, with its waiting input");
        assert_eq!(p.ctl_calls.get(), 4);
    }
}
