//! Parked connections: an idle connection's state, compacted while it waits.
//!
//! A connection task alternates between two forms. While it works it holds a boxed
//! [`ConnTask`] (the full `Connection`, outbox, store and handover state, about 0.9 KB).
//! Once a step leaves it idle (nothing to write, no partial packet, nothing awaiting an
//! answer, see [`ConnTask::may_park`]) and it is not streaming (see [`Pace`]), the box is
//! freed and only a [`Parked`] record stays in the task's future: the `ParkedConnection`
//! (session, keep alive, negotiated limits, will), the socket and its reader, the mailbox
//! handle and the session's identity. The parked task waits exactly as the working one
//! does (readability, mailbox, the thread's connection timer for the keep-alive deadline)
//! and rebuilds the `ConnTask` on the first wake-up, which it then handles. So every
//! behaviour (keep alive, takeover, wills, deliveries, shutdown) goes through the same
//! code; parking only changes where the state lives meanwhile.
//!
//! TLS and WebSocket connections never park (their layers hold state of their own).

use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use compio::net::TcpStream;
use halyard_session::{ClientId, Connection, ParkedConnection};

use super::read::Reader;
use super::{ConnTask, Wake};
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

/// When a connection last woke up for work and how many such wake-ups came in a row:
/// parking between the steps of a streaming connection would rebuild its state for every
/// read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    last: Instant,
    streak: u8,
}

impl Pace {
    /// A connection accepted at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Pace {
            last: now,
            streak: 0,
        }
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
        && r.poll_ready(cx).is_ready()
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

/// Parks `parked` until its next wake-up; resolves to the working task again and why it
/// woke.
pub(super) fn sleep(parked: Parked, ctx: &Rc<ThreadCtx>) -> Sleep<'_> {
    ctx.arm_conn_timer(&parked.handle, parked.conn.poll_timeout());
    ctx.stats().parked.fetch_add(1, Relaxed);
    Sleep {
        parked: Some(parked),
        ctx,
    }
}

/// The future of [`sleep`]: written by hand so that the parked record is stored once (an
/// `async fn` keeps its argument and the local it moves into).
pub(super) struct Sleep<'a> {
    /// `None` once resolved.
    parked: Option<Parked>,
    ctx: &'a Rc<ThreadCtx>,
}

impl Future for Sleep<'_> {
    type Output = (Box<ConnTask>, Wake);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Polled again after resolving: there is nothing more to give.
        let Some(p) = this.parked.as_mut() else {
            return Poll::Pending;
        };
        let wake = std::task::ready!(poll_wake(&p.handle, Some(&mut p.reader), cx));
        match this.parked.take() {
            Some(p) => {
                this.ctx.stats().parked.fetch_sub(1, Relaxed);
                Poll::Ready((p.unpark(this.ctx, Instant::now()), wake))
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Sleep<'_> {
    /// A parked task dropped without waking (the runtime shutting down) leaves the gauge.
    fn drop(&mut self) {
        if self.parked.is_some() {
            self.ctx.stats().parked.fetch_sub(1, Relaxed);
        }
    }
}

/// What a parked connection keeps (see the module documentation). Everything a parked
/// `ConnTask` holds beyond this is empty or default, as [`ConnTask::may_park`] checks.
pub(super) struct Parked {
    conn: ParkedConnection,
    reader: Reader,
    stream: TcpStream,
    /// Also the connection's identity (`ConnHandle::me`).
    handle: Rc<ConnHandle>,
    key: Option<SessionKey>,
    route: Option<Arc<Route>>,
    client_id: Option<ClientId>,
    username: Option<Arc<str>>,
    slot: Option<SourceSlot>,
    ledger: Option<Box<QueueLedger>>,
    pace: Pace,
    persistent: bool,
    stored: bool,
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

    /// The parked form of this task, or the task back when it cannot park.
    pub(super) fn park(self: Box<Self>) -> Result<Parked, Box<Self>> {
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
        Ok(Parked {
            conn,
            reader,
            stream: task.stream,
            handle: task.handle,
            key: task.key,
            route: task.route,
            client_id: task.client_id,
            username: task.username,
            slot: task.slot,
            ledger: task.ledger,
            pace: task.pace,
            persistent: task.persistent,
            stored: task.stored,
        })
    }
}

impl Parked {
    /// The working task again, at `now`.
    pub(super) fn unpark(self, ctx: &Rc<ThreadCtx>, now: Instant) -> Box<ConnTask> {
        Box::new(ConnTask {
            conn: Connection::unpark(self.conn, ctx.broker.session_config.clone(), now),
            outbox: Outbox::new(ctx.broker.inboxes.len()),
            ctx: ctx.clone(),
            me: self.handle.me,
            handle: self.handle,
            stream: self.stream,
            reader: Some(self.reader),
            key: self.key,
            route: self.route,
            client_id: self.client_id,
            username: self.username,
            slot: self.slot,
            transport: None,
            accepted: true,
            awaiting: None,
            held: Vec::new(),
            orphan: None,
            closed_will: None,
            ledger: self.ledger,
            persistent: self.persistent,
            stored: self.stored,
            unsafe_output: false,
            step: Vec::new(),
            pace: self.pace,
        })
    }
}
