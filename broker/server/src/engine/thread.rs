//! Per-I/O-thread state: the sessions and connections the thread owns, its inbox, offline
//! session timers (session expiry, delayed wills).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use halyard_session::{
    ClientId, Delivery, Dropped, PublishCache, SESSION_NEVER_EXPIRES, Session, Will,
};

use super::publish::{self, Outbox};
use super::wheel::{ConnTimerKey, ConnTimers};
use super::{Broker, ConnRef, Moving, Routed, SessionKey, ThreadMsg};
use crate::conn::park::{ParkedSlot, Parking};
use crate::durable::{self, Pending, QueueLedger};
use crate::metrics::{DropReason, Limit, ThreadStats};

/// How often the thread checks offline-session deadlines (session expiry, will delay).
pub const TIMER_TICK: Duration = Duration::from_millis(100);

/// Commands for one connection task, queued in its mailbox.
#[derive(Debug)]
pub enum ConnMsg {
    /// A message to deliver, with the store queue entry holding it (if stored).
    Deliver(Delivery, Option<u64>),
    /// Another connection claimed the session: disconnect with 0x8E and hand it over.
    Release,
    /// A clean start replaced the session: disconnect with 0x8E and end it.
    Discard,
    /// The session this (claiming) connection waits for.
    Handover(Box<Moving>),
    /// The claimed session ended instead: start a fresh one.
    NoSession,
    /// The broker is stopping: disconnect with 0x8B.
    Shutdown,
}

/// Most mailbox slots a working connection keeps allocated between its steps (see
/// [`ConnHandle::give_back`]); a queue grown larger by a burst is freed after it.
pub const MAILBOX_KEEP: usize = 16;

/// Tasks of one thread that wait for its shutdown without spilling the list: the accept
/// loops of the TCP, TLS, WebSocket and secure WebSocket listeners.
pub const SHUTDOWN_WAITERS: usize = 4;

/// The part of a connection the thread can reach: its mailbox, its timer and its waker.
pub struct ConnHandle {
    /// The connection's identity.
    pub me: ConnRef,
    /// (`Cell`s rather than `RefCell`s: no borrow flags in every connection's handle.)
    mailbox: Cell<VecDeque<ConnMsg>>,
    waker: Cell<Option<Waker>>,
    /// The deadline this connection has in the thread's connection timers, if any, and
    /// whether a deadline passed that the task has not yet seen, in one word (see
    /// [`TimerWord`]): 8 bytes instead of an `Option<Instant>` and a flag's 24, which puts
    /// the handle with its `Rc` counts in the 96-byte jemalloc class instead of 112.
    timer: Cell<TimerWord>,
    /// The connection's record while it is parked outside any task (see `conn::park`):
    /// its wake-ups go to the thread's [`Parking`] instead of a waker.
    pub parked: ParkedSlot,
}

impl std::fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnHandle")
            .field("me", &self.me)
            .field("mailbox", &self.len())
            .field("timer", &self.timer.get().armed())
            .field("parked", &self.parked)
            .finish()
    }
}

impl ConnHandle {
    /// A handle for connection `me`.
    pub fn new(me: ConnRef) -> Rc<Self> {
        Rc::new(ConnHandle {
            me,
            mailbox: Cell::new(VecDeque::new()),
            waker: Cell::new(None),
            timer: Cell::new(TimerWord::default()),
            parked: ParkedSlot::default(),
        })
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Forgets the waker of a task that ended (it would keep the task's allocation alive).
    pub fn clear_waker(&self) {
        self.waker.take();
    }

    /// Whether the connection's deadline passed and the task has not yet seen it.
    pub fn timer_due(&self) -> bool {
        self.timer.get().due()
    }

    /// Whether the connection's deadline passed since the last call (and clears it).
    pub fn take_timer_due(&self) -> bool {
        let word = self.timer.get();
        self.timer.set(word.with_due(false));
        word.due()
    }

    /// The connection's socket became readable (the thread's epoll set reported it, see
    /// `conn::park::watch`): flags it for the task's next wait and wakes the task.
    pub fn mark_input(&self) {
        self.timer.set(self.timer.get().with_input(true));
        self.wake();
    }

    /// Whether input was flagged since the last call (and clears the flag).
    pub fn take_input(&self) -> bool {
        let word = self.timer.get();
        self.timer.set(word.with_input(false));
        word.input()
    }

    /// Runs `f` on the mailbox. (`Cell::take` then `Cell::set` would run the drop code of
    /// the empty queue `take` left, at each of the four or more checks of every step:
    /// ~430 instructions per subscribing connection, benches/RESULTS.md session 15.)
    fn with_mailbox<R>(&self, f: impl FnOnce(&mut VecDeque<ConnMsg>) -> R) -> R {
        let mut mailbox = self.mailbox.take();
        let result = f(&mut mailbox);
        let left = self.mailbox.replace(mailbox);
        if left.capacity() == 0 {
            // What `take` left (nothing is pushed meanwhile): an empty `VecDeque::new()`
            // owns no memory, so forgetting it skips only its drop code.
            std::mem::forget(left);
        }
        result
    }

    /// Queues a command and wakes the connection task.
    pub fn push(&self, msg: ConnMsg) {
        self.with_mailbox(|m| m.push_back(msg));
        self.wake();
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.with_mailbox(|m| m.len())
    }

    /// Whether the mailbox is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every queued command is a delivery (none needs the task to wait).
    pub fn only_deliveries(&self) -> bool {
        self.with_mailbox(|m| m.iter().all(|m| matches!(m, ConnMsg::Deliver(..))))
    }

    /// Takes every queued command.
    pub fn take_all(&self) -> VecDeque<ConnMsg> {
        self.mailbox.take()
    }

    /// Gives back the (emptied) queue of [`Self::take_all`], so that the next message
    /// pushed finds room instead of allocating a new queue: a subscriber under a stream
    /// would otherwise allocate and free one per delivery step. Kept only while the mailbox
    /// is still empty and unallocated, and only up to [`MAILBOX_KEEP`] slots; a parking
    /// connection gives it up ([`Self::release_room`]).
    pub fn give_back(&self, mut spare: VecDeque<ConnMsg>) {
        spare.clear();
        if spare.capacity() > MAILBOX_KEEP {
            return;
        }
        self.with_mailbox(|m| {
            if m.capacity() == 0 {
                std::mem::swap(m, &mut spare);
            }
        });
    }

    /// Frees the room an empty mailbox kept (see [`Self::give_back`]): an idle connection
    /// holds no queue.
    pub fn release_room(&self) {
        if self.is_empty() {
            drop(self.mailbox.take());
        }
    }

    /// Ready when the mailbox is non-empty or the connection's deadline passed (see
    /// [`Self::take_timer_due`]); otherwise the task polling is woken when that happens.
    pub fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.is_empty() && !self.timer_due() {
            // The task polls here after every step; when the waker from its last poll is
            // still here (it woke for input or by yielding), it is kept, not cloned again.
            let waker = match self.waker.take() {
                Some(w) if w.will_wake(cx.waker()) => w,
                _ => cx.waker().clone(),
            };
            self.waker.set(Some(waker));
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    }
}

/// A session the thread holds while no connection owns it.
#[derive(Debug)]
struct Offline {
    session: Session,
    /// Its store queue entries.
    ledger: QueueLedger,
    /// Protocol level of its last connection (for its store record).
    protocol_version: u8,
    client_id: ClientId,
    expires_at: Option<Instant>,
    will: Option<(Will, Instant)>,
}

/// Who holds a session on this thread.
#[derive(Debug)]
enum Local {
    /// A connection (connected, or claiming and waiting for a handover).
    Conn(u64),
    /// Nobody: the thread keeps it.
    Offline(Box<Offline>),
}

/// A connection's armed deadline (as in [`ConnTimerKey`], nanoseconds since the thread's
/// epoch, at most [`TimerWord::MAX_NANOS`], ~73 years), its "deadline passed" flag and its
/// "input arrived" flag in one word: bit 0 is the deadline flag, bit 1 the input flag (see
/// [`ConnHandle::mark_input`]), the bits above are the deadline plus one (0: none armed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TimerWord(u64);

impl TimerWord {
    /// The latest deadline a word holds.
    const MAX_NANOS: u64 = (u64::MAX >> 2) - 1;

    /// The two flag bits.
    const FLAGS: u64 = 0b11;

    /// The armed deadline, if any.
    fn armed(self) -> Option<u64> {
        (self.0 >> 2).checked_sub(1)
    }

    /// Whether the deadline passed and the task has not yet seen it.
    fn due(self) -> bool {
        self.0 & 1 == 1
    }

    /// This word with `armed` as the deadline (clamped to [`Self::MAX_NANOS`]).
    fn with_armed(self, armed: Option<u64>) -> Self {
        let deadline = armed.map_or(0, |n| n.min(Self::MAX_NANOS) + 1);
        TimerWord(deadline << 2 | (self.0 & Self::FLAGS))
    }

    /// This word with the flag set to `due`.
    fn with_due(self, due: bool) -> Self {
        TimerWord(self.0 & !1 | u64::from(due))
    }

    /// Whether input arrived that the task has not yet seen.
    fn input(self) -> bool {
        self.0 & 0b10 != 0
    }

    /// This word with the input flag set to `input`.
    fn with_input(self, input: bool) -> Self {
        TimerWord(self.0 & !0b10 | u64::from(input) << 1)
    }
}

/// What a timer deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Will,
    Expiry,
}

/// State of one I/O thread. Lives in an `Rc`: only that thread's tasks touch it.
#[derive(Debug)]
pub struct ThreadCtx {
    /// Thread number.
    pub index: usize,
    /// Shared broker state.
    pub broker: Arc<Broker>,
    conns: RefCell<HashMap<u64, Rc<ConnHandle>, ahash::RandomState>>,
    sessions: RefCell<HashMap<SessionKey, Local, ahash::RandomState>>,
    /// The read buffer every connection task of the thread reads into
    /// (`io.read_buffer_bytes`): taken for one synchronous read, then put back, so an idle
    /// connection holds no buffer.
    read_buf: RefCell<Vec<u8>>,
    /// Connections of this thread reading with their own receive buffer (io_uring, busy;
    /// at most `io.max_busy_readers`, see `conn::read`).
    pub busy_readers: Rc<Cell<usize>>,
    /// Encoded PUBLISH packets shared by the thread's connections (see [`PublishCache`]).
    pub publish_cache: RefCell<PublishCache>,
    timers: RefCell<BTreeMap<(Instant, SessionKey, TimerKind), ()>>,
    /// Connection deadlines (CONNECT, keep-alive, partial packet, handover wait) as
    /// (deadline, connection id), one live entry per connection with a deadline (see
    /// [`Self::arm_conn_timer`]; replaced ones go stale, see [`ConnTimers`]); fired by
    /// [`Self::run_timers`], so connections need no timer of their own. The deadline is
    /// kept as nanoseconds since `epoch` (see [`ConnTimerKey`]).
    conn_timers: RefCell<ConnTimers>,
    /// The origin of the connection timers' deadlines (the thread's start).
    epoch: Instant,
    /// Idle connections parked outside any task (see `conn::park`).
    pub parking: Parking,
    /// Set when the broker is stopping.
    pub shutting_down: Cell<bool>,
    /// Woken when shutdown starts: one per task waiting in [`Self::shutdown_started`] (the
    /// thread's accept loops, one per listener: at most [`SHUTDOWN_WAITERS`] kinds), a
    /// task's later wait replacing its earlier one. (A single slot lost the main accept
    /// loop's waker whenever a TLS or WebSocket accept registered after it, and the thread
    /// then never finished its shutdown.)
    shutdown_wakers: RefCell<SmallVec<[Waker; SHUTDOWN_WAITERS]>>,
    /// Deliveries handed to a connection mailbox of this thread so far (wrapping): a
    /// connection task compares it across a step to learn that it woke a subscriber's task.
    local_handoffs: Cell<u64>,
}

impl ThreadCtx {
    /// Context of thread `index`.
    pub fn new(index: usize, broker: Arc<Broker>) -> Rc<Self> {
        Rc::new(ThreadCtx {
            index,
            conns: RefCell::new(HashMap::default()),
            sessions: RefCell::new(HashMap::default()),
            read_buf: RefCell::new(vec![0; broker.config.io.read_buffer_bytes]),
            busy_readers: Rc::new(Cell::new(0)),
            publish_cache: RefCell::new(PublishCache::new()),
            timers: RefCell::new(BTreeMap::new()),
            conn_timers: RefCell::new(ConnTimers::new(TIMER_TICK)),
            epoch: Instant::now(),
            parking: Parking::new(),
            shutting_down: Cell::new(false),
            shutdown_wakers: RefCell::new(SmallVec::new()),
            local_handoffs: Cell::new(0),
            broker,
        })
    }

    /// Takes the thread's shared read buffer (a fresh one if it is out, which only a
    /// nested read would cause). Give it back with [`Self::put_read_buf`].
    pub fn take_read_buf(&self) -> Vec<u8> {
        let buf = std::mem::take(&mut *self.read_buf.borrow_mut());
        if buf.is_empty() {
            vec![0; self.broker.config.io.read_buffer_bytes]
        } else {
            buf
        }
    }

    /// Returns the buffer [`Self::take_read_buf`] gave.
    pub fn put_read_buf(&self, buf: Vec<u8>) {
        *self.read_buf.borrow_mut() = buf;
    }

    /// This thread's counters.
    pub fn stats(&self) -> &ThreadStats {
        &self.broker.metrics.threads[self.index]
    }

    /// Registers a new connection.
    pub fn add_conn(&self, handle: Rc<ConnHandle>) {
        self.conns.borrow_mut().insert(handle.me.conn, handle);
    }

    /// Forgets a finished connection (its deadline's entry goes stale: see [`ConnTimers`]).
    pub fn remove_conn(&self, conn: u64) {
        self.conns.borrow_mut().remove(&conn);
    }

    /// Whether the connection timers' entry `key` is the deadline its connection has armed
    /// (not one replaced since, nor one of a closed connection).
    fn conn_timer_live(
        conns: &HashMap<u64, Rc<ConnHandle>, ahash::RandomState>,
        (at, conn): ConnTimerKey,
    ) -> bool {
        conns
            .get(&conn)
            .is_some_and(|h| h.timer.get().armed() == Some(at))
    }

    /// Makes sure `handle`'s task wakes by `deadline`. An earlier deadline replaces the armed
    /// one; a later one only when the armed one is due before half the time to it (see
    /// [`ConnTimers::replaces`]: the keep-alive after the CONNECT replaces the CONNECT
    /// deadline). Otherwise, lazily, the earlier entry stays (a keep-alive extended by
    /// traffic): its firing wakes the task early (a no-op `handle_timeout`), and the task
    /// then arms the later one. Fires up to [`TIMER_TICK`] late.
    pub fn arm_conn_timer(&self, handle: &ConnHandle, deadline: Option<Instant>) {
        let Some(at) = deadline else { return };
        let key = self.conn_timer_key(at, handle.me.conn);
        let word = handle.timer.get();
        let mut timers = self.conn_timers.borrow_mut();
        if word
            .armed()
            .is_some_and(|armed| !timers.replaces(armed, key.0))
        {
            return;
        }
        // Armed first: the entry it replaces (if any) is stale from now on.
        handle.timer.set(word.with_armed(Some(key.0)));
        let conns = self.conns.borrow();
        timers.insert(key, conns.len(), |k| Self::conn_timer_live(&conns, k));
    }

    /// The connection timers' entry for connection `conn` due at `at`.
    fn conn_timer_key(&self, at: Instant, conn: u64) -> ConnTimerKey {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        (
            u64::try_from(nanos)
                .unwrap_or(u64::MAX)
                .min(TimerWord::MAX_NANOS),
            conn,
        )
    }

    /// Wakes the connections whose deadline passed.
    fn fire_conn_timers(&self, now: Instant) {
        let (now, _) = self.conn_timer_key(now, 0);
        let mut due = Vec::new();
        {
            let conns = self.conns.borrow();
            self.conn_timers.borrow_mut().expire(
                now,
                |k| Self::conn_timer_live(&conns, k),
                &mut due,
            );
        }
        for conn in due {
            let handle = self.conns.borrow().get(&conn).cloned();
            if let Some(h) = handle {
                let input = h.timer.get().input();
                h.timer
                    .set(TimerWord::default().with_due(true).with_input(input));
                h.wake();
                self.parking.wake(&h);
            }
        }
    }

    /// Queues `msg` for connection `h` and wakes it, parked or not.
    fn push_to(&self, h: &Rc<ConnHandle>, msg: ConnMsg) {
        h.push(msg);
        self.parking.wake(h);
    }

    /// The handle of connection `conn` of this thread, if it is open.
    pub fn conn_handle(&self, conn: u64) -> Option<Rc<ConnHandle>> {
        self.conns.borrow().get(&conn).cloned()
    }

    /// Open connections on this thread.
    pub fn conn_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Records that connection `conn` holds session `key`.
    pub fn set_conn_session(&self, key: SessionKey, conn: u64) {
        self.sessions.borrow_mut().insert(key, Local::Conn(conn));
    }

    /// Forgets `key` if connection `conn` still holds it.
    pub fn clear_conn_session(&self, key: SessionKey, conn: u64) {
        let mut sessions = self.sessions.borrow_mut();
        if matches!(sessions.get(&key), Some(Local::Conn(c)) if *c == conn) {
            sessions.remove(&key);
        }
    }

    /// Resolves once shutdown has started.
    pub async fn shutdown_started(&self) {
        std::future::poll_fn(|cx| {
            if self.shutting_down.get() {
                return std::task::Poll::Ready(());
            }
            let mut wakers = self.shutdown_wakers.borrow_mut();
            match wakers.iter_mut().find(|w| w.will_wake(cx.waker())) {
                Some(w) => w.clone_from(cx.waker()),
                None => wakers.push(cx.waker().clone()),
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Drains the thread's inbox until every sender is gone.
    pub async fn run_inbox(self: Rc<Self>, inbox: flume::Receiver<ThreadMsg>) {
        while let Ok(msg) = inbox.recv_async().await {
            self.handle_msg(msg).await;
            // Drain what else is there without yielding per message.
            while let Ok(msg) = inbox.try_recv() {
                self.handle_msg(msg).await;
            }
        }
    }

    async fn handle_msg(&self, msg: ThreadMsg) {
        match msg {
            ThreadMsg::Deliver(batch) => self.deliver_local(batch),
            ThreadMsg::Release { key } => self.release(key).await,
            ThreadMsg::Discard { key } => self.discard(key).await,
            ThreadMsg::Handover { to, key, session } => self.handover(to, key, session).await,
            ThreadMsg::NoSession { to } => self.no_session(to),
            ThreadMsg::Shutdown => self.start_shutdown(),
        }
    }

    fn start_shutdown(&self) {
        self.shutting_down.set(true);
        for w in self.shutdown_wakers.take() {
            w.wake();
        }
        for handle in self.conns.borrow().values() {
            self.push_to(handle, ConnMsg::Shutdown);
        }
    }

    /// Deliveries handed to this thread's connection mailboxes so far (wrapping).
    pub fn local_handoffs(&self) -> u64 {
        self.local_handoffs.get()
    }

    /// Hands deliveries to local connections and offline sessions; forwards those whose
    /// session moved to another thread. `batch` holds deliveries routed on this thread or
    /// handed over by another (see [`super::hand_over`]); emptied, it is kept for the
    /// thread's next fan-out ([`publish::recycle_batch`]).
    pub fn deliver_local(&self, mut batch: Vec<Routed>) {
        // Read only for offline sessions (not for each delivery to a connection).
        let mut now = None;
        let threads = self.broker.inboxes.len();
        let mut forward = Outbox::new(threads);
        let mut touched: Vec<SessionKey> = Vec::new();
        {
            let cap = self.mailbox_cap();
            let conns = self.conns.borrow();
            let mut sessions = self.sessions.borrow_mut();
            for d in batch.drain(..) {
                let key = d.key;
                match sessions.get_mut(&key) {
                    Some(Local::Conn(id)) => match conns.get(id) {
                        Some(h) if h.len() < cap => {
                            self.push_to(h, ConnMsg::Deliver(d.delivery, d.seq));
                            self.local_handoffs
                                .set(self.local_handoffs.get().wrapping_add(1));
                        }
                        Some(_) => {
                            self.stats().drop_message(DropReason::QueueFull);
                            self.stats().hit_limit(Limit::MaxQueuedMessages);
                        }
                        None => self.stats().drop_message(DropReason::SessionGone),
                    },
                    Some(Local::Offline(off)) => {
                        let (delivery, seq) = (d.delivery, d.seq);
                        let message = delivery.message.clone();
                        let now = *now.get_or_insert_with(Instant::now);
                        match off.session.enqueue(now, delivery) {
                            Ok(()) => off.ledger.pushed_message(seq, &message),
                            Err(d) => {
                                off.ledger.consumed(seq);
                                count_drop(self.stats(), d);
                            }
                        }
                        if seq.is_some() && !touched.contains(&key) {
                            touched.push(key);
                        }
                    }
                    None => match self.broker.owner_now(&d) {
                        Some(t) if t != self.index && t < threads => {
                            let mut d = d;
                            d.redirect(t);
                            forward.push(d);
                        }
                        _ => self.stats().drop_message(DropReason::SessionGone),
                    },
                }
            }
        }
        if publish::recycle_batch(batch, &self.broker.spare_batches) {
            self.stats().hit_limit(Limit::SpareBatches);
        }
        if !touched.is_empty() {
            self.persist_offline(&touched);
        }
        for (thread, batch) in forward.drain() {
            if let Some(tx) = self.broker.inboxes.get(thread)
                && tx.try_send(ThreadMsg::Deliver(batch)).is_err()
            {
                self.stats().drop_message(DropReason::InboxFull);
            }
        }
    }

    /// Stores what changed in offline sessions `keys` (queue entries dropped by the queue
    /// policy). Nothing is transmitted for an offline session, so the results only matter
    /// for errors: a task logs them.
    fn persist_offline(&self, keys: &[SessionKey]) {
        let clock = durable::wall_clock(Instant::now());
        let mut pending: Vec<Pending> = Vec::new();
        {
            let mut sessions = self.sessions.borrow_mut();
            for key in keys {
                if let Some(Local::Offline(off)) = sessions.get_mut(key) {
                    let ch = off.session.take_changes();
                    pending.push(self.broker.durable.persist_changes(
                        ch,
                        &off.session,
                        &mut off.ledger,
                        off.protocol_version,
                        &clock,
                    ));
                }
            }
        }
        spawn_logged(pending, "offline session state not stored");
    }

    /// Mailbox limit per connection: what the session could queue plus its window.
    fn mailbox_cap(&self) -> usize {
        let m = &self.broker.config.mqtt;
        m.max_queued_messages + usize::from(m.max_inflight)
    }

    /// Releases session `key` to the registry's current claimant.
    pub async fn release(&self, key: SessionKey) {
        let local = self.sessions.borrow_mut().remove(&key);
        match local {
            Some(Local::Conn(id)) => {
                // The connection hands the session over when it has closed.
                self.sessions.borrow_mut().insert(key, Local::Conn(id));
                if let Some(h) = self.conns.borrow().get(&id) {
                    self.push_to(h, ConnMsg::Release);
                }
            }
            Some(Local::Offline(off)) => {
                let claimant = {
                    let reg = self.broker.registry();
                    reg.get(&off.client_id)
                        .filter(|e| e.key == key)
                        .and_then(|e| e.conn)
                };
                match claimant {
                    Some(to) => {
                        if off.will.is_some() {
                            // The session resumes: its delayed will is cancelled.
                            spawn_logged(
                                vec![self.broker.durable.delete_will(&off.client_id)],
                                "cancelled will not removed from the store",
                            );
                        }
                        let Offline {
                            session,
                            ledger,
                            protocol_version,
                            ..
                        } = *off;
                        let moving = Box::new(Moving {
                            session,
                            ledger,
                            protocol_version,
                        });
                        self.send_handover(to, key, moving).await;
                    }
                    None => self.end_offline(key, off),
                }
            }
            None => {}
        }
    }

    /// Sends a session to a claiming connection, on this thread or another.
    pub async fn send_handover(&self, to: ConnRef, key: SessionKey, session: Box<Moving>) {
        if to.thread == super::EXPORT_THREAD {
            self.export_done(to, Some((key, session)));
        } else if to.thread == self.index {
            Box::pin(self.handover(to, key, session)).await;
        } else {
            let msg = ThreadMsg::Handover { to, key, session };
            self.broker.send_to(to.thread, msg).await;
        }
    }

    /// Tells claiming connection `to` that the session it waits for ended.
    pub async fn send_no_session(&self, to: ConnRef) {
        if to.thread == super::EXPORT_THREAD {
            self.export_done(to, None);
        } else if to.thread == self.index {
            self.no_session(to);
        } else {
            self.broker
                .send_to(to.thread, ThreadMsg::NoSession { to })
                .await;
        }
    }

    /// A session released to another node's export `to` (or `None`: it ended): handed to
    /// the waiting export; kept offline here when that gave up waiting.
    fn export_done(&self, to: ConnRef, session: super::Exported) {
        let Some((key, moving)) = self.broker.finish_export(to.conn, session) else {
            return;
        };
        let client_id = moving.session.client_id().clone();
        {
            let mut reg = self.broker.registry();
            if let Some(e) = reg.get_mut(&client_id).filter(|e| e.key == key) {
                if e.conn == Some(to) {
                    e.conn = None;
                }
                e.route.set_thread(self.index);
            }
        }
        self.park_offline(key, moving, None, Instant::now());
    }

    /// Takes in a session another node handed over (a client reconnecting here): registers
    /// it offline on this thread with its subscriptions, so that the client's CONNECT
    /// resumes it as any offline session. `false` when the client id is registered here
    /// already (that session wins).
    pub fn adopt(&self, moving: Box<Moving>) -> bool {
        let client_id = moving.session.client_id().clone();
        let Some((key, route)) = self.broker.register_restored(&client_id, self.index) else {
            return false;
        };
        route.set_persistent(moving.session.tracks_changes());
        self.broker
            .restore_subscriptions(key, &route, &client_id, &moving.session);
        self.broker.update_subscription_gauge();
        self.park_offline(key, moving, None, Instant::now());
        true
    }

    fn no_session(&self, to: ConnRef) {
        if let Some(h) = self.conns.borrow().get(&to.conn) {
            self.push_to(h, ConnMsg::NoSession);
        }
    }

    /// A session arrives for connection `to` (on this thread).
    async fn handover(&self, to: ConnRef, key: SessionKey, session: Box<Moving>) {
        if let Some(h) = self.conns.borrow().get(&to.conn) {
            self.push_to(h, ConnMsg::Handover(session));
            return;
        }
        // The claimant is gone: forward to a newer claimant, or keep the session offline.
        let client_id = session.session.client_id().clone();
        let claimant = {
            let reg = self.broker.registry();
            match reg.get(&client_id) {
                Some(e) if e.key == key => Ok(e.conn),
                _ => Err(()),
            }
        };
        match claimant {
            Ok(Some(next)) if next != to => Box::pin(self.send_handover(next, key, session)).await,
            Ok(_) => {
                if let Some(route) = self.route_of(&client_id, key) {
                    route.set_thread(self.index);
                }
                let now = Instant::now();
                self.park_offline(key, session, None, now);
            }
            Err(()) => {
                let filters: Vec<String> = session.session.subscriptions().filters();
                self.broker
                    .remove_subscriptions(key, filters.iter().map(String::as_str));
            }
        }
    }

    fn route_of(&self, client_id: &ClientId, key: SessionKey) -> Option<Arc<super::Route>> {
        let reg = self.broker.registry();
        reg.get(client_id)
            .filter(|e| e.key == key)
            .map(|e| e.route.clone())
    }

    /// Ends session `key` because a clean start replaced it.
    async fn discard(&self, key: SessionKey) {
        let local = self.sessions.borrow_mut().remove(&key);
        match local {
            Some(Local::Conn(id)) => {
                self.sessions.borrow_mut().insert(key, Local::Conn(id));
                if let Some(h) = self.conns.borrow().get(&id) {
                    self.push_to(h, ConnMsg::Discard);
                }
            }
            Some(Local::Offline(off)) => self.end_offline(key, off),
            None => {}
        }
    }

    /// Keeps a session whose connection closed, with its expiry and delayed will.
    pub fn park_offline(
        &self,
        key: SessionKey,
        session: Box<Moving>,
        will: Option<Will>,
        now: Instant,
    ) {
        let (expires_at, will) = self.offline_deadlines(&session.session, will, now);
        self.park(key, session, expires_at, will);
    }

    /// When an offline session parked at `now` expires, and when its will fires.
    /// `mqtt.session_expiry_max_secs` caps how long the broker keeps an offline session (the
    /// session layer applies the same cap through `SessionConfig::max_session_expiry` and
    /// announces it in the 5.0 CONNACK; this `min` keeps the offline table safe regardless).
    pub fn offline_deadlines(
        &self,
        session: &halyard_session::Session,
        will: Option<Will>,
        now: Instant,
    ) -> (Option<Instant>, Option<(Will, Instant)>) {
        let expiry = session
            .expiry_interval()
            .min(self.broker.config.mqtt.session_expiry_max_secs);
        let expires_at =
            (expiry != SESSION_NEVER_EXPIRES).then(|| now + Duration::from_secs(u64::from(expiry)));
        let will = will.map(|w| {
            let delay = w.delay().min(Duration::from_secs(u64::from(expiry)));
            let at = now + delay;
            (w, at)
        });
        (expires_at, will)
    }

    /// Keeps a session offline with the given deadlines (also used for sessions restored
    /// from the store at start, whose deadlines count from before the restart).
    pub fn park(
        &self,
        key: SessionKey,
        moving: Box<Moving>,
        expires_at: Option<Instant>,
        will: Option<(Will, Instant)>,
    ) {
        let Moving {
            session,
            ledger,
            protocol_version,
        } = *moving;
        let mut timers = self.timers.borrow_mut();
        if let Some(at) = expires_at {
            timers.insert((at, key, TimerKind::Expiry), ());
        }
        if let Some((_, at)) = &will {
            timers.insert((*at, key, TimerKind::Will), ());
        }
        let client_id = session.client_id().clone();
        self.sessions.borrow_mut().insert(
            key,
            Local::Offline(Box::new(Offline {
                session,
                ledger,
                protocol_version,
                client_id,
                expires_at,
                will,
            })),
        );
    }

    /// Drops an offline session: its subscriptions go, its pending will is published now
    /// (the session ended [MQTT-3.1.3-9]).
    fn end_offline(&self, key: SessionKey, off: Box<Offline>) {
        let filters: Vec<String> = off.session.subscriptions().filters();
        self.broker
            .remove_subscriptions(key, filters.iter().map(String::as_str));
        // Its stored state goes unless a clean start replaced it (the new session is stored
        // under the same client id).
        if self.broker.durable.is_enabled() && self.broker.is_unregistered(&off.client_id) {
            spawn_logged(
                vec![self.broker.durable.delete_session(&off.client_id)],
                "ended session not removed from the store",
            );
        }
        if let Some((will, _)) = off.will {
            self.publish_will(&off.client_id, &will, true);
        }
    }

    /// Publishes a will message now (routes it like a PUBLISH from `client_id`); its QoS 1/2
    /// deliveries to persistent sessions and a RETAIN update are stored first. `stored`: the
    /// will is in the store (delayed) and is removed from it once published.
    pub fn publish_will(&self, client_id: &ClientId, will: &Will, stored: bool) {
        let now = Instant::now();
        let msg = Arc::new(will.to_message(now, Some(client_id.clone())));
        let stats = self.stats();
        if msg.retain {
            // Nobody acknowledges a will: in a cluster its retained update is not awaited.
            drop(publish::update_retained(&self.broker, stats, &msg));
        }
        let mut routed = Vec::new();
        // In a cluster, QoS 1/2 copies for other nodes are sent with back-pressure and
        // resent until acknowledged (the task waits for that before forgetting the will).
        let (_, acks) = publish::route_collect_acked(
            &self.broker,
            &msg,
            &mut routed,
            crate::cluster::Forward::Now,
        );
        let broker = self.broker.clone();
        let client_id = client_id.clone();
        // Flush from a task: the caller may hold borrows of this context.
        compio::runtime::spawn(async move {
            let durable = &broker.durable;
            if durable.is_enabled() {
                let clock = durable::wall_clock(now);
                let pending =
                    durable.persist_publish(&msg, &publish::durable_targets(&routed), &clock);
                match pending.await {
                    Ok(c) => publish::apply_seqs(&mut routed, c.seqs),
                    Err(e) => tracing::warn!(%client_id, error = %e, "will message not stored"),
                }
            }
            let mut outbox = Outbox::new(broker.inboxes.len());
            for r in routed {
                outbox.push(r);
            }
            for (thread, mut batch) in outbox.drain() {
                super::hand_over(&mut batch);
                broker.send_to(thread, ThreadMsg::Deliver(batch)).await;
            }
            if let Some(acks) = acks {
                acks.await;
            }
            if stored && durable.is_enabled() {
                let _ = durable.delete_will(&client_id).await;
            }
        })
        .detach();
    }

    /// Fires due offline-session timers; runs forever (one task per thread).
    pub async fn run_timers(self: Rc<Self>) {
        let tick = super::tick::Tick::new(TIMER_TICK);
        loop {
            tick.wait().await;
            let now = Instant::now();
            self.fire_conn_timers(now);
            self.fire_due(now);
        }
    }

    fn fire_due(&self, now: Instant) {
        loop {
            let due = {
                let mut timers = self.timers.borrow_mut();
                match timers.first_key_value() {
                    Some((&(at, key, kind), _)) if at <= now => {
                        timers.remove(&(at, key, kind));
                        Some((at, key, kind))
                    }
                    _ => None,
                }
            };
            let Some((at, key, kind)) = due else { return };
            match kind {
                TimerKind::Will => self.fire_will(key, at),
                TimerKind::Expiry => self.fire_expiry(key, at),
            }
        }
    }

    fn fire_will(&self, key: SessionKey, at: Instant) {
        let will = {
            let mut sessions = self.sessions.borrow_mut();
            match sessions.get_mut(&key) {
                Some(Local::Offline(off)) if off.will.as_ref().is_some_and(|(_, t)| *t == at) => {
                    off.will.take().map(|(w, _)| (off.client_id.clone(), w))
                }
                _ => None,
            }
        };
        if let Some((client_id, will)) = will {
            self.publish_will(&client_id, &will, true);
        }
    }

    fn fire_expiry(&self, key: SessionKey, at: Instant) {
        let off = {
            let mut sessions = self.sessions.borrow_mut();
            match sessions.get(&key) {
                Some(Local::Offline(off)) if off.expires_at == Some(at) => {}
                _ => return,
            }
            let Some(Local::Offline(off)) = sessions.remove(&key) else {
                return;
            };
            off
        };
        // Expire only if nobody is claiming the session right now.
        let mut reg = self.broker.registry();
        let claimed = match reg.get(&off.client_id) {
            Some(e) if e.key == key && e.conn.is_some() => true,
            Some(e) if e.key == key => {
                reg.remove(&off.client_id);
                false
            }
            _ => false,
        };
        let len = reg.len();
        drop(reg);
        self.broker.update_session_gauge(len);
        if claimed {
            // A Release is on its way; keep the session until it arrives.
            self.sessions.borrow_mut().insert(key, Local::Offline(off));
        } else {
            self.end_offline(key, off);
        }
    }
}

/// Awaits store writes in a detached task, logging failures (for writes whose outcome
/// changes nothing that is transmitted).
pub fn spawn_logged(pending: Vec<Pending>, what: &'static str) {
    if pending.is_empty() {
        return;
    }
    compio::runtime::spawn(async move {
        for p in pending {
            if let Err(e) = p.await {
                tracing::warn!(error = %e, "{what}");
            }
        }
    })
    .detach();
}

/// Counts a session-layer drop in the thread's metrics.
pub fn count_drop(stats: &ThreadStats, d: Dropped) {
    let reason = match d {
        Dropped::QueueFull => {
            stats
                .queue_limit_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            stats.hit_limit(Limit::MaxQueuedMessages);
            DropReason::QueueFull
        }
        Dropped::Expired => DropReason::Expired,
        Dropped::TooLarge | Dropped::Unencodable => DropReason::TooLarge,
        Dropped::OutputFull => DropReason::OutputFull,
        Dropped::Qos0Offline => DropReason::Qos0Offline,
        Dropped::NotConnected => DropReason::SessionGone,
    };
    stats.drop_message(reason);
}

#[cfg(test)]
mod tests {
    use super::{ConnHandle, ConnMsg, MAILBOX_KEEP, TimerWord};
    use crate::engine::ConnRef;
    use std::collections::VecDeque;

    /// The mailbox's checks leave it as it was; an emptied queue given back is kept (up to
    /// `MAILBOX_KEEP` slots) until the connection parks.
    #[test]
    fn the_mailbox_keeps_its_messages_and_its_room() {
        let h = ConnHandle::new(ConnRef { thread: 0, conn: 1 });
        assert!(h.is_empty() && h.only_deliveries());
        h.push(ConnMsg::Release);
        h.push(ConnMsg::Shutdown);
        assert_eq!(h.len(), 2);
        assert!(!h.only_deliveries());
        assert_eq!(h.len(), 2, "checks take nothing");
        let mut taken = h.take_all();
        assert!(h.is_empty());
        assert!(matches!(taken.pop_front(), Some(ConnMsg::Release)));
        let room = taken.capacity();
        h.give_back(taken);
        assert!(h.is_empty());
        assert_eq!(h.with_mailbox(|m| m.capacity()), room, "room kept");
        h.push(ConnMsg::Shutdown);
        h.release_room();
        assert_eq!(h.len(), 1, "a mailbox with mail keeps it");
        let mut m = h.take_all();
        m.clear();
        h.give_back(m);
        h.release_room();
        assert_eq!(h.with_mailbox(|m| m.capacity()), 0, "room freed at parking");
        h.give_back(VecDeque::with_capacity(MAILBOX_KEEP * 4));
        assert_eq!(
            h.with_mailbox(|m| m.capacity()),
            0,
            "a large queue is not kept"
        );
    }

    #[test]
    fn timer_word_keeps_the_deadline_and_the_flag_apart() {
        let none = TimerWord::default();
        assert_eq!((none.armed(), none.due()), (None, false));
        let armed = none.with_armed(Some(0));
        assert_eq!((armed.armed(), armed.due()), (Some(0), false));
        let due = armed.with_due(true);
        assert_eq!((due.armed(), due.due()), (Some(0), true));
        let later = due.with_armed(Some(5_000_000_000));
        assert_eq!((later.armed(), later.due()), (Some(5_000_000_000), true));
        let seen = later.with_due(false);
        assert_eq!((seen.armed(), seen.due()), (Some(5_000_000_000), false));
        let max = none.with_armed(Some(u64::MAX));
        assert_eq!(max.armed(), Some(TimerWord::MAX_NANOS));
        assert_eq!(max.with_armed(None), none);
        // The input flag is independent of both.
        let input = later.with_input(true);
        assert_eq!(
            (input.armed(), input.due(), input.input()),
            (Some(5_000_000_000), true, true)
        );
        let moved = input.with_armed(Some(7)).with_due(false);
        assert_eq!(
            (moved.armed(), moved.due(), moved.input()),
            (Some(7), false, true)
        );
        assert!(!moved.with_input(false).input());
        assert_eq!(moved.with_input(false).armed(), Some(7));
    }
}
